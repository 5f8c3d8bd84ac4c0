"""Annotated PNGs, the CSV and JSON tables of predictions and the model description; re-exported by :mod:`agegender.predict`."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np


# --------------------------------------------------------------------------------------------
# annotation and tables


_COLOURS = {"female": (235, 90, 140), "male": (60, 140, 235)}


def face_label(face: dict) -> str:
    parts = []
    if "gender" in face:
        parts.append(f"{face['gender']} {face['gender_prob']:.0%}")
    if "age" in face:
        age = f"{face['age']:.0f} y"
        if "age_group" in face:
            age += f" [{face['age_group']}]"
        parts.append(age)
    if "race" in face:
        parts.append(f"{face['race']} {face['race_prob']:.0%}")
    return ", ".join(parts)


def annotate(image: np.ndarray, faces: list[dict], path: Path) -> Path:
    """Write ``image`` with a box and a label per face as PNG (atomically)."""
    from PIL import Image, ImageDraw, ImageFont

    canvas = Image.fromarray(image).convert("RGB")
    draw = ImageDraw.Draw(canvas)
    size = max(11, min(32, int(round(max(canvas.size) / 45))))
    try:
        font = ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType sizes
        font = ImageFont.load_default()
    width = max(2, size // 6)
    if not faces:
        draw.text((4, 4), "no face found", fill=(255, 60, 60), font=font, stroke_width=2, stroke_fill=(0, 0, 0))
    for face in faces:
        x, y, w, h = face["box"]
        colour = _COLOURS.get(str(face.get("gender", "")).lower(), (250, 200, 40))
        draw.rectangle([x, y, x + w, y + h], outline=colour, width=width)
        text = face_label(face)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tw, th = right - left, bottom - top
        ty = y - th - 2 * width if y - th - 2 * width >= 0 else min(canvas.size[1] - th - 2, y + h + width)
        draw.rectangle([x, ty, x + tw + 2 * width, ty + th + 2 * width], fill=colour)
        draw.text((x + width - left, ty + width - top), text, fill=(0, 0, 0), font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, format="PNG")
    return path


CSV_FIELDS = ("input", "frame", "time_s", "face", "x", "y", "w", "h", "det_score", "age", "age_group",
              "age_group_prob", "gender", "gender_prob", "race", "race_prob", "error", "note", "model")


def write_csv(entries: list[dict], path, model: str = "") -> Path:
    """One row per face; an input without faces gets one row with its error or note; ``model`` names the
    model (run) that predicted, in every row."""
    import io

    from agegender import atomic

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for entry in entries:
        base = {"input": entry["input"], "frame": entry.get("frame", ""), "time_s": entry.get("time_s", ""),
                "model": model}
        if not entry.get("faces"):
            writer.writerow({**base, "error": entry.get("error", ""), "note": "" if entry.get("error") else
                             "no face found"})
            continue
        for i, face in enumerate(entry["faces"]):
            x, y, w, h = face["box"]
            writer.writerow({**base, "face": i, "x": x, "y": y, "w": w, "h": h,
                             **{k: v for k, v in face.items() if k != "box"}})
    atomic.write_text(Path(path), buffer.getvalue())
    return Path(path)


def write_json(entries: list[dict], path, model: dict | None = None, warnings: list[str] | None = None) -> Path:
    """``{"model": {...}, "warnings": [...], "results": [one entry per input or frame]}``."""
    from agegender import atomic

    document = {"model": model or {}, "warnings": list(warnings or []), "results": entries}
    atomic.write_text(Path(path), json.dumps(document, indent=1) + "\n")
    return Path(path)


def describe_model(model_path, record_path) -> tuple[dict, list[str]]:
    """What made the predictions (model file, run, reproduction, experiment, data kind) and the warnings
    its record calls for: a ``--smoke`` run, generated training data, a run that did not finish."""
    from agegender.records import read_record

    if model_path is None:
        return {"model": "<in-memory model>"}, []
    info: dict = {"model": str(model_path)}
    record = read_record(record_path) if record_path is not None and Path(record_path).is_file() else None
    if record is None:
        return info, [f"{model_path}: no run record beside the model: which run made it is unknown"]
    info.update({"run": str(Path(record_path).parent), "reproduction": record.get("reproduction"),
                 "experiment": record.get("experiment"), "run_id": record.get("run_id"),
                 "paper": record.get("paper"), "status": record.get("status"),
                 "data_kind": (record.get("data") or {}).get("kind")})
    config, deviations = record.get("config") or {}, record.get("deviations") or {}
    notes = " ".join(str(c.get("note", "")) for c in record.get("cells") or [] if isinstance(c, dict))
    smoke = bool(config.get("smoke") or deviations.get("smoke") or "SMOKE RUN" in notes
                 or "smoke" in str(record.get("experiment", "")).lower())
    info["smoke"] = smoke
    warnings = []
    where = f"{info['reproduction']}/{info['experiment']}/{info['run_id']}"
    if smoke:
        warnings.append(f"the model is a SMOKE RUN ({where}): a path check trained for an epoch or two on a few "
                        "small images; its predictions mean nothing")
    if info["data_kind"] == "generated":
        warnings.append(f"the model was trained on generated faces ({where}): its predictions on photographs mean "
                        "nothing")
    if record.get("status") not in (None, "complete"):
        warnings.append(f"the run did not finish (status {record.get('status')!r}, {where}): the model is its best "
                        "checkpoint so far")
    return info, warnings
