"""The procedural face renderer (identity, drawing, ``draw_face``); re-exported by :mod:`agegender.data.synth`."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from agegender.data.samples import RACES

_SKIN = np.array([(240, 192, 174), (100, 62, 42), (228, 196, 136), (162, 106, 72), (200, 150, 106)], float)
_HAIR = {  # name -> rgb
    "black": (22, 20, 20), "dark_brown": (58, 40, 30), "brown": (104, 70, 44),
    "light_brown": (150, 110, 70), "blond": (218, 186, 122), "red": (158, 72, 36),
}
_HAIR_NAMES = tuple(_HAIR)
_HAIR_P = np.array([  # per race, over _HAIR_NAMES
    (0.14, 0.28, 0.24, 0.12, 0.16, 0.06),
    (0.86, 0.14, 0.0, 0.0, 0.0, 0.0),
    (0.90, 0.10, 0.0, 0.0, 0.0, 0.0),
    (0.84, 0.16, 0.0, 0.0, 0.0, 0.0),
    (0.45, 0.40, 0.15, 0.0, 0.0, 0.0),
])
_IRIS = ((60, 40, 25), (40, 28, 20), (70, 110, 160), (80, 120, 80), (110, 90, 60))
_GREY = np.array((208, 208, 212), float)
_CLIP_TINTS = ((1, 0.3, 0.5), (0.4, 0.6, 1), (1, 0.85, 0.2))


# --------------------------------------------------------------------------------------------
# drawing


def _mix(c1, c2, t):
    return tuple(np.asarray(c1, float) * (1 - t) + np.asarray(c2, float) * t)


def _byte(v) -> int:
    return int(min(255.0, max(0.0, float(v) + 0.5)))


def _rgb(c, alpha=None):
    c = tuple(_byte(v) for v in c)
    return c if alpha is None else c + (_byte(alpha),)


def _identity(gender: int, race: int, rng: np.random.Generator) -> dict:
    """The fixed look of one person (everything that does not change with age or photo)."""
    male = gender == 0
    skin = _SKIN[race] * rng.uniform(0.94, 1.06) + rng.normal(0, 4, 3)
    hair_name = _HAIR_NAMES[rng.choice(len(_HAIR_NAMES), p=_HAIR_P[race])]
    hair = np.asarray(_HAIR[hair_name], float) + rng.normal(0, 8, 3)
    if male:
        style = rng.choice(["short", "medium", "long"], p=[0.9, 0.07, 0.03])
    else:
        style = rng.choice(["long", "bob", "short"], p=[0.84, 0.1, 0.06])
        if race == 1 and style == "long" and rng.random() < 0.5:
            style = "afro"
    if race == 0:
        iris = _IRIS[rng.choice(5, p=[0.3, 0.15, 0.3, 0.15, 0.1])]
    else:
        iris = _IRIS[rng.choice([0, 1, 4], p=[0.45, 0.45, 0.1])]
    return {
        "gender": int(gender), "race": int(race), "skin": skin, "hair_name": hair_name, "hair": hair,
        "style": str(style), "iris": iris,
        "aspect": rng.normal(0.8 if male else 0.76, 0.02),
        "jaw": rng.normal(3.2 if male else 2.05, 0.2),
        "brow": rng.normal(1.3 if male else 0.5, 0.1),
        "eye_open": rng.normal(0.42 if race == 2 else 0.62, 0.04),
        "nose_w": rng.normal({1: 0.25, 3: 0.2}.get(race, 0.17), 0.015),
        "mouth_w": rng.normal(0.3 if male else 0.28, 0.02),
        "grey_onset": rng.normal(30, 4),
        "wrinkle": rng.uniform(0.8, 1.2),
        "bald_onset": rng.normal(38, 8) if (male and rng.random() < 0.4) else 1e9,
        "beard": str(rng.choice(["none", "stubble", "full", "goatee", "mustache"],
                                p=[0.5, 0.2, 0.15, 0.08, 0.07])) if male else "none",
        "lipstick": (not male) and rng.random() < 0.75,
        "earrings": (not male) and rng.random() < 0.35,
        "fringe": rng.random() < (0.35 if not male else 0.15),
        "clip": (not male) and rng.random() < 0.35,
        "clip_side": int(rng.choice([-1, 1])),
        "clip_color": rng.uniform(60, 255, 3) * np.array(_CLIP_TINTS[rng.integers(3)]),
        "glasses_p": rng.random(),
    }


def _background(rng, w, h, small):
    out_size = (w, h)
    w, h = max(8, int(w / small)), max(8, int(h / small))
    kind = rng.choice(3, p=[0.35, 0.4, 0.25])
    base = rng.uniform(20, 235, 3)
    if kind == 0:
        img = np.broadcast_to(base, (h, w, 3)).astype(float)
    elif kind == 1:
        g = rng.integers(3, 7)
        grid = np.clip(base + rng.normal(0, 40, (g, g, 3)), 0, 255).astype(np.uint8)
        img = np.asarray(Image.fromarray(grid).resize((w, h), Image.BILINEAR), float)
    else:
        period = rng.uniform(0.05, 0.25) * w
        theta = rng.uniform(0, np.pi)
        yy, xx = np.mgrid[0:h, 0:w]
        s = np.sin((xx * np.cos(theta) + yy * np.sin(theta)) * 2 * np.pi / period)
        other = rng.uniform(20, 235, 3)
        img = base + (other - base) * (0.5 + 0.5 * s[..., None]) * rng.uniform(0.3, 0.8)
    yy, xx = np.mgrid[0:h, 0:w]
    ang = rng.uniform(0, 2 * np.pi)
    grad = 1 + rng.uniform(0, 0.3) * ((xx / w - 0.5) * np.cos(ang) + (yy / h - 0.5) * np.sin(ang))
    small_img = Image.fromarray(np.clip(img * grad[..., None], 0, 255).astype(np.uint8))
    return small_img.resize(out_size, Image.BILINEAR)


def _head_outline(cx, cy, a, b, jaw, n=48):
    pts = []
    for t in np.linspace(0, 2 * np.pi, n, endpoint=False):
        c, s = np.cos(t), np.sin(t)
        if s > 0:
            e = 2.0 / jaw
            x = a * np.sign(c) * abs(c) ** e * (1 - 0.12 * s ** 2)
            y = b * abs(s) ** (2.0 / max(2.0, jaw * 0.8))
        else:
            x, y = a * c, b * s
        pts.append((cx + x, cy + y))
    return pts


def _render(ident: dict, age: float, rng: np.random.Generator, width: int, height: int):
    """Draw ``ident`` at ``age``: returns (uint8 HxWx3 image, dict of visible traits)."""
    age = float(np.clip(age, 0.0, 110.0))
    male = ident["gender"] == 0
    child = float(np.clip((16.0 - age) / 15.0, 0.0, 1.0))
    adult = 1.0 - child
    oldness = float(np.clip((age - 18.0) / 52.0, 0.0, 1.3))

    ss = max(1, math.ceil(64 / min(width, height)))
    margin = 0.12
    W, H = int(round(width * ss * (1 + 2 * margin))), int(round(height * ss * (1 + 2 * margin)))
    u = min(width, height) * ss
    img = _background(rng, W, H, ss)
    d = ImageDraw.Draw(img, "RGBA")

    cx = W / 2 + rng.normal(0, 0.035) * u
    cy = H / 2 + rng.normal(0.02, 0.03) * u
    scale = rng.uniform(0.95, 1.05) * (0.74 + 0.26 * adult) * (1 + 0.08 * min(oldness, 1.0))
    b = 0.33 * u * scale
    a = b * (ident["aspect"] + 0.13 * child + 0.08 * min(oldness, 1.0))
    jaw = ident["jaw"] * (1 - 0.6 * child) + 2.0 * 0.6 * child

    skin = np.asarray(ident["skin"], float)
    skin = np.asarray(_mix(skin, (255, 214, 198), 0.22 * child))
    lum = skin.mean()
    fade = float(np.clip((age - 12.0) / 70.0, 0, 1))
    skin = lum + (skin - lum) * (1 - 0.45 * fade) + 10 * fade
    shade = skin * 0.78
    dark = skin * 0.6

    grey = float(np.clip((age - ident["grey_onset"]) / 30.0, 0, 1))
    hair = np.asarray(_mix(ident["hair"], _GREY, grey))
    bald = float(np.clip((age - ident["bald_onset"]) / 25.0, 0, 1))
    style = ident["style"]
    if age < 2.5:
        style = "baby"
    elif age < 10 and style in ("long", "afro") and rng.random() < 0.3:
        style = "bob"

    # clothing and shoulders
    cloth = rng.uniform(15, 240, 3)
    sw = a * ((2.9 if male else 2.3) * adult + 2.2 * child)
    d.ellipse([cx - sw, cy + b * 1.35, cx + sw, cy + b * 3.6], fill=_rgb(cloth))
    # long hair behind the head
    if style == "long":
        length = b * rng.uniform(1.2, 1.7)
        d.rounded_rectangle([cx - a * 1.28, cy - b * 0.95, cx + a * 1.28, cy + length], radius=a * 0.6,
                            fill=_rgb(hair * 0.9))
    elif style == "afro":
        d.ellipse([cx - a * 1.55, cy - b * 1.35, cx + a * 1.55, cy + b * 0.75], fill=_rgb(hair))
    elif style == "bob":
        d.rounded_rectangle([cx - a * 1.18, cy - b * 0.95, cx + a * 1.18, cy + b * 0.7], radius=a * 0.5,
                            fill=_rgb(hair * 0.9))
    elif style == "medium":
        d.rounded_rectangle([cx - a * 1.1, cy - b * 0.95, cx + a * 1.1, cy + b * 0.35], radius=a * 0.5,
                            fill=_rgb(hair * 0.9))
    # neck and ears
    neck_w = a * ((0.6 if male else 0.42) * adult + 0.45 * child)
    d.rectangle([cx - neck_w, cy + b * 0.5, cx + neck_w, cy + b * 1.7], fill=_rgb(shade))
    ey = cy + b * (0.02 + 0.17 * child)
    for side in (-1, 1):
        ex0 = cx + side * a * 0.97
        d.ellipse([ex0 - a * 0.13, ey - b * 0.12, ex0 + a * 0.13, ey + b * 0.2], fill=_rgb(skin * 0.92))
        if ident["earrings"] and age > 12:
            d.ellipse([ex0 - a * 0.04, ey + b * 0.2, ex0 + a * 0.04, ey + b * 0.28], fill=(230, 200, 90))
    # head
    outline = _head_outline(cx, cy, a, b, jaw)
    d.polygon(outline, fill=_rgb(skin))
    # hair cap on top with hairline (receding with baldness)
    hair_y = cy - b * (0.5 - 0.06 * child) - b * 0.35 * bald
    if style != "baby":
        cap = Image.new("L", (W, H), 0)
        cd = ImageDraw.Draw(cap)
        top_extra = 0.12 if ident["race"] == 1 or style == "afro" else 0.06
        if bald < 0.75:
            cd.ellipse([cx - a * 1.08, cy - b * (1.0 + top_extra), cx + a * 1.08, cy + b * 0.6], fill=255)
            cd.rectangle([0, hair_y, W, H], fill=0)
            if bald < 0.3 and ident["fringe"]:
                cd.ellipse([cx - a * 0.95, hair_y - b * 0.2, cx + a * 0.3, hair_y + b * 0.22], fill=255)
        # sides above the ears
        for side in (-1, 1):
            sx = cx + side * a * 0.93
            cd.ellipse([sx - a * 0.16, cy - b * 0.6, sx + a * 0.16, ey - b * 0.02], fill=255)
        img.paste(Image.new("RGB", (W, H), _rgb(hair)), (0, 0), cap)
        d = ImageDraw.Draw(img, "RGBA")
        n_strands = int(12 + 10 * (1 - bald))
        for _ in range(n_strands):
            t = rng.uniform(-0.9, 0.9)
            x0 = cx + t * a
            y0 = cy - b * np.sqrt(max(0.0, 1 - t * t)) * rng.uniform(0.85, 1.0)
            col = hair * rng.uniform(0.6, 1.35)
            if ident["race"] == 1:
                r = u * 0.008
                d.ellipse([x0 - r, y0 - r + b * 0.1, x0 + r, y0 + r + b * 0.1], fill=_rgb(col, 200))
            else:
                d.line([x0, y0, x0 + t * a * 0.25, y0 + b * 0.25], fill=_rgb(col, 150), width=max(1, int(u * 0.006)))
    else:
        d.ellipse([cx - a * 0.8, cy - b * 1.0, cx + a * 0.8, cy - b * 0.5], fill=_rgb(hair, 70))
    if ident["clip"] and age >= 2 and bald < 0.5:
        x, y, r = cx + ident["clip_side"] * a * 0.6, cy - b * 0.62, a * 0.2
        d.polygon([(x - r, y - r * 0.7), (x, y), (x - r, y + r * 0.7)], fill=_rgb(ident["clip_color"]))
        d.polygon([(x + r, y - r * 0.7), (x, y), (x + r, y + r * 0.7)], fill=_rgb(ident["clip_color"]))

    # eyes
    ex = a * (0.4 + 0.02 * child)
    er = a * (0.17 + 0.09 * child)
    ev = er * (ident["eye_open"] + 0.12 * child) * (1 - 0.3 * min(oldness, 1.0))
    for side in (-1, 1):
        x = cx + side * ex
        d.ellipse([x - er, ey - ev, x + er, ey + ev], fill=(242, 240, 236))
        ir = ev * (0.9 + 0.1 * child)
        d.ellipse([x - ir, ey - ir, x + ir, ey + ir], fill=_rgb(ident["iris"]))
        pr = ir * 0.45
        d.ellipse([x - pr, ey - pr, x + pr, ey + pr], fill=(10, 10, 12))
        lid = 0.016 if (not male and age >= 13) else 0.008
        d.arc([x - er, ey - ev, x + er, ey + ev], 180, 360, fill=_rgb(dark * 0.7 if male else dark * 0.3),
              width=max(1, int(u * lid)))
        # brows
        by = ey - ev - b * (0.1 + 0.03 * adult)
        bt = max(1, int(u * 0.012 * ident["brow"] * (0.6 + 0.4 * adult)))
        bcol = _mix(hair * 0.8, dark * 0.5, 0.35)
        d.line([x - er * 1.1, by + b * 0.02, x, by - b * 0.015, x + er * 1.1, by + b * 0.02],
               fill=_rgb(bcol), width=bt, joint="curve")
    # nose
    ny = cy + b * (0.32 + 0.1 * child)
    nw = a * ident["nose_w"] * (0.7 + 0.3 * adult) * (1 + 0.1 * oldness)
    lw = max(1, int(u * 0.007))
    d.line([cx + nw * 0.3, ey + b * 0.05, cx + nw * 0.5, ny - b * 0.05], fill=_rgb(shade, 160), width=lw)
    d.arc([cx - nw, ny - b * 0.07, cx + nw, ny + b * 0.05], 0, 180, fill=_rgb(dark), width=lw)
    for side in (-1, 1):
        x = cx + side * nw * 0.55
        d.ellipse([x - nw * 0.22, ny - b * 0.015, x + nw * 0.22, ny + b * 0.025], fill=_rgb(dark * 0.8))
    # mouth
    my = cy + b * (0.6 + 0.06 * child)
    mw = a * ident["mouth_w"] * (0.75 + 0.25 * adult)
    lipstick = ident["lipstick"] and age >= 15
    lip = np.array((178, 48, 70)) * rng.uniform(0.85, 1.1) if lipstick else np.asarray(
        _mix(skin * (0.82, 0.58, 0.58), (200, 90, 100), 0.3 if not male else 0.0))
    smile = rng.random() < 0.45
    lh = b * (0.05 if male else 0.065) * (1 - 0.3 * min(oldness, 1.0))
    # beard
    beard = ident["beard"] if age >= 17 else "none"
    bc = hair * 0.9
    if beard == "stubble":
        m = int(u * 0.6)
        t, rr = rng.uniform(0.1, np.pi - 0.1, m), rng.uniform(0.75, 1.0, m)
        xs, ys = cx + a * 0.95 * rr * np.cos(t), cy + b * (0.35 + 0.6 * rr * np.sin(t))
        r, col = u * 0.004, _rgb(bc, 130)
        for x, y in zip(xs.tolist(), ys.tolist()):
            d.ellipse([x - r, y - r, x + r, y + r], fill=col)
    elif beard in ("full", "goatee"):
        if beard == "full":
            pts = [p for p in outline if p[1] > ny - b * 0.05]
            pts = sorted(pts, key=lambda p: np.arctan2(p[1] - cy, p[0] - cx))
            d.polygon(pts + [(cx - mw * 1.2, ny + b * 0.06), (cx + mw * 1.2, ny + b * 0.06)], fill=_rgb(bc, 235))
        else:
            d.ellipse([cx - mw * 0.55, my + lh * 1.3, cx + mw * 0.55, cy + b * 0.98], fill=_rgb(bc, 235))
    if smile:
        d.chord([cx - mw, my - lh * 1.2, cx + mw, my + lh * 2.2], 0, 180, fill=_rgb(lip))
        teeth = rng.random() < 0.6
        if teeth:
            d.chord([cx - mw * 0.8, my - lh * 0.6, cx + mw * 0.8, my + lh * 1.2], 0, 180, fill=(235, 232, 225))
    else:
        teeth = False
        d.ellipse([cx - mw, my - lh, cx + mw, my + lh * 1.1], fill=_rgb(lip))
        d.line([cx - mw, my, cx + mw, my], fill=_rgb(lip * 0.6), width=lw)
    if beard in ("full", "goatee", "mustache"):
        d.chord([cx - mw * 1.1, my - lh * 3.2, cx + mw * 1.1, my - lh * 0.4], 180, 360, fill=_rgb(bc, 240))
    if oldness > 0.1:
        for side in (-1, 1):
            x = cx + side * a * 0.55
            d.ellipse([x - a * 0.3, ny - b * 0.05, x + a * 0.3, my + b * 0.3], fill=_rgb(dark, 70 * min(oldness, 1.0)))
    # blush
    if (not male and rng.random() < 0.5) or child > 0.5:
        for side in (-1, 1):
            x = cx + side * a * 0.5
            d.ellipse([x - a * 0.15, ny - b * 0.08, x + a * 0.15, ny + b * 0.08], fill=(230, 90, 100, 45))

    # ageing: wrinkles, bags, spots
    w = oldness * ident["wrinkle"]
    if w > 0.05:
        alpha = 40 + 170 * min(w, 1.0)
        wc = _rgb(dark * 0.75, alpha)
        ww = max(1, int(u * 0.015))
        for k in range(int(round(1 + 4 * min(w, 1.0)))):
            y = max(hair_y, cy - b * 0.62) + b * 0.06 + k * b * 0.06
            if y < ey - ev - b * 0.12:
                d.arc([cx - a * 0.55, y, cx + a * 0.55, y + b * 0.15], 200, 340, fill=wc, width=ww)
        for side in (-1, 1):
            d.arc([cx + side * nw * 1.1 - (a * 0.35 if side > 0 else 0), ny - b * 0.05,
                   cx + side * nw * 1.1 + (a * 0.35 if side < 0 else 0), my + b * 0.25],
                  90 if side > 0 else 0, 180 if side > 0 else 90, fill=wc, width=ww)
            if w > 0.5:
                d.arc([cx + side * mw * 0.2 - a * 0.3, my + lh * 2, cx + side * mw * 0.2 + a * 0.3, cy + b * 0.95],
                      200 if side < 0 else 300, 240 if side < 0 else 340, fill=wc, width=ww)
            if w > 0.3:
                x = cx + side * (ex + er * 1.1)
                for k in (-1, 0, 1):
                    d.line([x, ey + k * ev * 0.5, x + side * er * 0.45, ey + k * ev * 1.2], fill=wc, width=ww)
                d.arc([cx + side * ex - er * 0.8, ey + ev * 0.6, cx + side * ex + er * 0.8, ey + ev * 2.2],
                      20, 160, fill=wc, width=ww)
        if w > 0.6:
            for _ in range(int(16 * (w - 0.5))):
                x, y = cx + rng.uniform(-0.7, 0.7) * a, cy + rng.uniform(-0.6, 0.5) * b
                r = u * rng.uniform(0.006, 0.012)
                d.ellipse([x - r, y - r, x + r, y + r], fill=_rgb(dark * 0.9, 90))
    # glasses
    glasses = ident["glasses_p"] < 0.05 + 0.3 * float(np.clip((age - 40) / 40, 0, 1)) and age > 8
    if glasses:
        gw = max(1, int(u * 0.01))
        gcol = _rgb(rng.uniform(0, 90, 3))
        for side in (-1, 1):
            x = cx + side * ex
            d.rounded_rectangle([x - er * 1.35, ey - er * 0.9, x + er * 1.35, ey + er * 0.9], radius=er * 0.4,
                                outline=gcol, width=gw)
        d.line([cx - ex + er * 1.35, ey, cx + ex - er * 1.35, ey], fill=gcol, width=gw)

    # pose, framing, camera
    w0, h0 = int(round(W / ss)), int(round(H / ss))
    if ss > 1:
        img = img.resize((w0, h0), Image.LANCZOS)
    img = img.rotate(float(np.clip(rng.normal(0, 6), -14, 14)), resample=Image.BILINEAR,
                     center=(cx * w0 / W, cy * h0 / H))
    mx, my_ = (w0 - width) // 2, (h0 - height) // 2
    img = img.crop((mx, my_, mx + width, my_ + height))
    blur = rng.uniform(0, 0.9) * width / 128
    if blur > 0.25:
        img = img.filter(ImageFilter.GaussianBlur(blur))
    arr = np.asarray(img, np.float32)
    yy, xx = np.mgrid[0:height, 0:width]
    ang = rng.uniform(0, 2 * np.pi)
    light = 1 + rng.uniform(0, 0.4) * ((xx / width - 0.5) * np.cos(ang) + (yy / height - 0.5) * np.sin(ang))
    gain = rng.uniform(0.85, 1.12) * rng.normal(1, 0.02, 3)
    contrast = rng.uniform(0.85, 1.15)
    arr = (arr - 128) * contrast + 128
    arr = arr * light[..., None].astype(np.float32) * gain.astype(np.float32)
    arr += rng.normal(0, rng.uniform(1, 6), arr.shape).astype(np.float32)
    out = np.clip(arr + 0.5, 0, 255).astype(np.uint8)

    traits = {
        "age": age, "gender": ident["gender"], "race": ident["race"], "hair": ident["hair_name"],
        "grey": grey, "bald": bald, "beard": beard, "lipstick": lipstick, "earrings": ident["earrings"] and age > 12,
        "glasses": bool(glasses), "smile": bool(smile), "teeth": bool(teeth), "bags": w > 0.3, "style": style,
        "fringe": bool(ident["fringe"] and bald < 0.3 and style != "baby"),
        "pale": ident["race"] == 0 and float(np.mean(ident["skin"])) > 205,
        # the head's box before the small in-plane rotation, in output pixels: [x, y, w, h]
        "head_box": [float((cx - a) / ss - mx), float((cy - b) / ss - my_), float(2 * a / ss), float(2 * b / ss)],
    }
    return out, traits


def draw_face(age: float, gender: int, race: int, rng: np.random.Generator, size: int = 128,
              return_box: bool = False):
    """One procedural face (uint8, ``size`` x ``size`` x 3) for the labels; see the module docstring.

    With ``return_box`` also the head's box ``[x, y, w, h]`` in pixels (for face-detection tests).
    """
    if gender not in (0, 1):
        raise ValueError(f"gender must be 0 (male) or 1 (female), got {gender!r}")
    if race not in range(len(RACES)):
        raise ValueError(f"race must be 0-{len(RACES) - 1} ({', '.join(RACES)}), got {race!r}")
    if not np.isfinite(age) or age < 0:
        raise ValueError(f"age must be a non-negative number of years, got {age!r}")
    image, traits = _render(_identity(int(gender), int(race), rng), float(age), rng, int(size), int(size))
    return (image, traits["head_box"]) if return_box else image
