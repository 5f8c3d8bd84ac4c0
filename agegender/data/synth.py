"""Procedural faces: the embedded default dataset, written in each real dataset's native layout.

Users without the real datasets (and CI, and ``make demo``) train on these faces; the real
readers read them unchanged because every layout reproduces the real file names, label files
and folder structure.

Generative model
----------------
A face is an *identity* (fixed look of one person) rendered at an *age* with per-image
nuisance. The labels drive these cues, all with random jitter so no single one decides:

- race -> skin tone (lightness and hue: white pinkish-light, asian yellowish-light, indian
  brown, black dark brown, others intermediate), hair colour palette (blond/red/brown only
  for white; black or dark brown otherwise), hair texture (tight curls for black), eye shape
  (narrower for asian), nose width (wider for black), iris colour (light only for white);
- gender -> hair style (long for most women and girls, short for most men and boys, with
  exceptions), jaw (wider and squarer for men), neck and shoulder width, brow thickness,
  eyeliner, lip colour (lipstick on many adult women), hair clips and earrings for some
  women, beard, goatee, moustache or stubble for some adult men;
- age, continuously over 0-100 years -> head proportions (children: rounder and smaller
  head, features lower on the face, larger eyes, small nose and mouth; adults: the face
  widens slowly), skin (children lighter and pinker, desaturating from the teens on), hair
  greying (individual onset around 30, fully grey some 30 years later), receding hairline
  and baldness for some men, wrinkles (forehead, crow's feet, nasolabial folds, eye bags,
  from about 20 on, deepening with age), cheek shading, narrowing eyes and thinning lips,
  age spots, reading glasses more often when older.

Nuisance: background colour and texture (flat, blotchy or striped), clothing colour, head
position, scale and rotation, lighting gradient, brightness, contrast and colour cast,
blur, pixel noise, glasses, smile.

Layouts written by :func:`synthesize`
-------------------------------------
``utkface``
    ``<out>/<age>_<gender>_<race>_<timestamp>.jpg.chip.jpg`` (200x200), ages 1-100 skewed
    toward 20-40 with a bump of babies, 17-digit unique timestamps like the real ones.
``adience``
    ``<out>/fold_{0..4}_data.txt`` (the real header, tab-separated) and images at
    ``<out>/aligned/<user_id>/landmark_aligned_face.<face_id>.<original_image>`` (256x256).
    Users (Flickr ids) own several images of one to three persons (``face_id``) and belong to
    one fold only; ages are the 8 canonical group strings, gender ``m``/``f``. With
    ``adience_folds_dir`` the real fold files' rows are copied verbatim instead (all of them,
    or, when ``n`` is smaller, ``n`` rows taken round-robin from the start of each fold so
    all five folds keep rows) and one image is drawn per distinct image path from that row's
    labels; stray ages such as ``(38, 48)`` or ``35`` are drawn inside the stated range, and
    ``None``/unknown gender get a plausible random value.
``celeba``
    ``<out>/img_align_celeba/000001.jpg ...`` (178x218), ``list_attr_celeba.txt`` (count, the
    40 names, rows of space-aligned 1/-1), ``list_eval_partition.txt`` (contiguous blocks in
    the official 162770/19867/19962 proportions, identity-disjoint) and
    ``identity_CelebA.txt`` (several images per identity). ``Male``, ``Young`` (age < 40),
    ``Eyeglasses``, ``Smiling``, ``Gray_Hair``, ``Bald``, beards, hair colours, lipstick and
    earrings follow the drawn face; the other attributes are random.
``imdb_wiki``
    ``<out>/imdb_crop/<NN>/nm<id>_rm<id>_<Y-M-D>_<year>.jpg`` (256x256) and
    ``<out>/imdb_crop/imdb.mat`` with the real MATLAB struct nesting (``dob`` as datenums,
    ``photo_taken``, ``full_path``, ``gender`` 1 male / 0 female / some NaN, ``face_score``
    with a few ``-inf``, ``second_face_score`` mostly NaN, ``name``, ``celeb_id``,
    ``face_location``; ``celeb_names``). Birthdays fall in January-June so that the common
    age formulas (``photo_taken - birth year``, with or without the mid-year correction)
    all give the drawn age.

Every layout also gets ``<out>/agegender-synth.json`` (the summary, without absolute paths), the
marker by which ``agegender.data.provenance`` recognises generated data. Everything is
seeded: the same arguments give byte-identical files.
"""

from __future__ import annotations

import datetime as _dt
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from agegender.data.celeba import ATTRIBUTES as CELEBA_ATTRIBUTES  # the real file's 40 columns
from agegender.data.samples import ADIENCE_AGE_GROUPS, GENDERS, RACES
from agegender.data.synth_faces import (  # noqa: F401
    _CLIP_TINTS, _GREY, _HAIR, _HAIR_NAMES, _HAIR_P, _IRIS, _SKIN, _background, _byte, _head_outline, _identity,
    _mix, _render, _rgb, draw_face)
from agegender.errors import DataError

__all__ = ["CELEBA_ATTRIBUTES", "LAYOUTS", "draw_face", "synthesize"]

LAYOUTS = ("utkface", "adience", "celeba", "imdb_wiki")

_LAYOUT_ID = {name: i + 1 for i, name in enumerate(LAYOUTS)}
_DEFAULT_SIZE = {"utkface": 200, "adience": 256, "celeba": 178, "imdb_wiki": 256}

_CELEBA_PRIOR = {
    "Arched_Eyebrows": 0.27, "Attractive": 0.51, "Big_Lips": 0.24, "Big_Nose": 0.23, "Blurry": 0.05,
    "Bushy_Eyebrows": 0.14, "Chubby": 0.06, "Double_Chin": 0.05, "High_Cheekbones": 0.45,
    "Narrow_Eyes": 0.12, "Oval_Face": 0.28, "Pointy_Nose": 0.28, "Straight_Hair": 0.21, "Wavy_Hair": 0.32,
    "Wearing_Hat": 0.05, "Wearing_Necklace": 0.12, "Wearing_Necktie": 0.07,
}
_ADIENCE_HEADER = ("user_id\toriginal_image\tface_id\tage\tgender\tx\ty\tdx\tdy\ttilt_ang\t"
                   "fiducial_yaw_angle\tfiducial_score")
_ADIENCE_GROUP_P = np.array((0.14, 0.12, 0.12, 0.09, 0.28, 0.13, 0.06, 0.06))
_ADIENCE_GROUP_AGES = ((0.3, 2.5), (4, 6.9), (8, 12.9), (15, 20.9), (25, 32.9), (38, 43.9), (48, 53.9), (60, 90))
_FIRST = ("James", "Mary", "John", "Anna", "Robert", "Linda", "Michael", "Sofia", "David", "Grace", "Ken", "Mei",
          "Raj", "Priya", "Omar", "Lena", "Carlos", "Ines", "Kwame", "Ama", "Yuki", "Hiro", "Ivan", "Olga")
_LAST = ("Smith", "Garcia", "Chen", "Patel", "Okafor", "Muller", "Rossi", "Kim", "Nguyen", "Silva", "Khan",
         "Novak", "Brown", "Tanaka", "Haddad", "Jensen", "Lopez", "Singh", "Mensah", "Ivanova")


# --------------------------------------------------------------------------------------------
# layouts


def _rng(seed, layout, *key):
    return np.random.default_rng([int(seed), _LAYOUT_ID[layout], *[int(k) for k in key]])


def _crc(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


def _save(image: np.ndarray, path: Path, quality: int = 90) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, format="JPEG", quality=quality)


def _progress(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=None if total > 500 else True)


def _realistic_age(rng) -> int:
    k = rng.choice(4, p=[0.1, 0.08, 0.6, 0.22])
    if k == 0:
        age = rng.integers(1, 5)
    elif k == 1:
        age = rng.integers(5, 16)
    elif k == 2:
        age = rng.normal(30, 8)
    else:
        age = 16 + rng.triangular(0, 0, 84)
    return int(np.clip(round(float(age)), 1, 100))


def _counts(genders, races, extra=None) -> dict:
    g = np.asarray(genders)
    r = np.asarray(races)
    out = {"gender": {name: int((g == i).sum()) for i, name in enumerate(GENDERS)},
           "race": {name: int((r == i).sum()) for i, name in enumerate(RACES)}}
    out.update(extra or {})
    return out


def _age_stats(ages) -> dict:
    a = np.asarray(ages, float)
    return {"min": round(float(a.min()), 2), "max": round(float(a.max()), 2), "mean": round(float(a.mean()), 2)} \
        if len(a) else {}


def _synth_utkface(root: Path, n: int, seed: int, size: int) -> dict:
    rng = _rng(seed, "utkface")
    start = _dt.datetime(2017, 1, 9)
    seen: set[str] = set()
    ages, genders, races = [], [], []
    with _progress(n, "utkface") as bar:
        for i in range(n):
            age = _realistic_age(rng)
            gender = int(rng.random() < 0.48)
            race = int(rng.choice(5, p=[0.42, 0.19, 0.15, 0.17, 0.07]))
            while True:
                t = start + _dt.timedelta(milliseconds=int(rng.integers(0, 12 * 86400 * 1000)))
                stamp = t.strftime("%Y%m%d%H%M%S") + f"{t.microsecond // 1000:03d}"
                if stamp not in seen:
                    seen.add(stamp)
                    break
            image = draw_face(age, gender, race, _rng(seed, "utkface", 0, i), size)
            _save(image, root / f"{age}_{gender}_{race}_{stamp}.jpg.chip.jpg")
            ages.append(age), genders.append(gender), races.append(race)
            bar.update()
    return {"n": n, "images": str(root), "label_files": [],
            "counts": _counts(genders, races, {"age": _age_stats(ages)})}


def _adience_age(label: str, rng) -> float:
    text = label.strip()
    if text in ADIENCE_AGE_GROUPS:
        lo, hi = _ADIENCE_GROUP_AGES[ADIENCE_AGE_GROUPS.index(text)]
        return float(rng.uniform(lo, hi))
    nums = [float(x) for x in text.replace("(", " ").replace(")", " ").replace(",", " ").split()
            if x.replace(".", "", 1).isdigit()]
    if len(nums) >= 2:
        lo, hi = sorted(nums[:2])
        return float(rng.uniform(lo, hi + 0.9))
    if len(nums) == 1:
        return float(nums[0] + rng.uniform(0, 0.9))
    lo, hi = _ADIENCE_GROUP_AGES[rng.choice(8, p=_ADIENCE_GROUP_P)]
    return float(rng.uniform(lo, hi))


def _adience_race(rng) -> int:
    return int(rng.choice(5, p=[0.72, 0.07, 0.1, 0.04, 0.07]))


def _write_adience_image(root, seed, user, face_id, original, age, gender, race, size):
    ident = _identity(gender, race, _rng(seed, "adience", 1, _crc(f"{user}/{face_id}")))
    path = root / "aligned" / user / f"landmark_aligned_face.{face_id}.{original}"
    image, _ = _render(ident, age, _rng(seed, "adience", 0, _crc(str(path.relative_to(root)))), size, size)
    _save(image, path)


def _synth_adience(root: Path, n: int, seed: int, size: int) -> dict:
    rng = _rng(seed, "adience")
    folds: list[list[str]] = [[] for _ in range(5)]
    fold_sizes = np.zeros(5, int)
    users: set[str] = set()
    genders, races, groups = [], [], []
    jobs = []
    while len(jobs) < n:
        while True:
            user = f"{rng.integers(10_000_000, 130_000_000)}@N0{rng.integers(0, 8)}"
            if user not in users:
                users.add(user)
                break
        fold = int(np.argmin(fold_sizes))
        persons = []
        for face_id in range(1, int(rng.integers(1, 4)) + 1):
            persons.append((face_id, int(rng.choice(8, p=_ADIENCE_GROUP_P)), int(rng.random() < 0.53),
                            _adience_race(rng)))
        n_images = min(int(rng.integers(3, 13)), n - len(jobs))
        rows = []
        photo = None
        for k in range(n_images):
            face_id, group, gender, race = persons[int(rng.integers(len(persons)))]
            if photo is None or rng.random() > 0.1:
                photo = f"{rng.integers(10**9, 2 * 10**10)}_{rng.integers(16**9, 16**10):010x}_o.jpg"
            elif any(r[0] == photo and r[1] == face_id for r in rows):
                photo = f"{rng.integers(10**9, 2 * 10**10)}_{rng.integers(16**9, 16**10):010x}_o.jpg"
            dx = int(rng.integers(200, 1400))
            values = [user, photo, str(face_id), ADIENCE_AGE_GROUPS[group], "mf"[gender],
                      str(int(rng.integers(0, 2000))), str(int(rng.integers(0, 1500))), str(dx),
                      str(dx + int(rng.integers(-2, 3))), str(int(rng.integers(-180, 181))),
                      str(int(rng.choice([-60, -45, -30, -15, 0, 15, 30, 45, 60]))), str(int(rng.integers(0, 200)))]
            rows.append((photo, face_id, "\t".join(values)))
            age = float(rng.uniform(*_ADIENCE_GROUP_AGES[group]))
            jobs.append((user, face_id, photo, age, gender, race))
            genders.append(gender), races.append(race), groups.append(group)
        folds[fold].extend(r[2] for r in rows)
        fold_sizes[fold] += len(rows)
    label_files = []
    for k, rows in enumerate(folds):
        path = root / f"fold_{k}_data.txt"
        path.write_text("\n".join([_ADIENCE_HEADER, *rows]) + "\n", encoding="utf-8")
        label_files.append(str(path))
    with _progress(len(jobs), "adience") as bar:
        for user, face_id, photo, age, gender, race in jobs:
            _write_adience_image(root, seed, user, face_id, photo, age, gender, race, size)
            bar.update()
    return {"n": len(jobs), "images": str(root / "aligned"), "label_files": label_files,
            "counts": _counts(genders, races, {
                "age_group": {g: int((np.asarray(groups) == i).sum()) for i, g in enumerate(ADIENCE_AGE_GROUPS)},
                "folds": [int(s) for s in fold_sizes], "users": len(users)})}


def _synth_adience_real(root: Path, n: int | None, seed: int, size: int, folds_dir) -> dict:
    folds_dir = Path(folds_dir)
    texts = []
    for k in range(5):
        path = folds_dir / f"fold_{k}_data.txt"
        if not path.is_file():
            raise DataError("Adience fold file not found", path=path,
                            fix="point --adience-folds at the folder holding fold_0_data.txt ... fold_4_data.txt")
        texts.append(path.read_text(encoding="utf-8", errors="replace").splitlines())
    headers = [lines[0] if lines else _ADIENCE_HEADER for lines in texts]
    bodies = [[line for line in lines[1:] if line.strip()] for lines in texts]
    total = sum(len(b) for b in bodies)
    if n is None or n >= total:
        chosen = bodies
    else:
        take = [0] * 5
        k = 0
        while sum(take) < n:
            if take[k] < len(bodies[k]):
                take[k] += 1
            k = (k + 1) % 5
        chosen = [b[:t] for b, t in zip(bodies, take)]
    label_files = []
    for k in range(5):
        path = root / f"fold_{k}_data.txt"
        path.write_text("\n".join([headers[k], *chosen[k]]) + "\n", encoding="utf-8")
        label_files.append(str(path))
    done: set[tuple] = set()
    genders, races, skipped = [], [], 0
    rows = [row for fold in chosen for row in fold]
    with _progress(len(rows), "adience") as bar:
        for row in rows:
            bar.update()
            cols = row.split("\t")
            if len(cols) < 5 or not cols[0].strip() or not cols[1].strip() or not cols[2].strip():
                skipped += 1
                continue
            user, original, face_id = cols[0].strip(), cols[1].strip(), cols[2].strip()
            key = (user, face_id, original)
            if key in done:
                continue
            done.add(key)
            prng = _rng(seed, "adience", 2, _crc(f"{user}/{face_id}"))
            g = cols[4].strip().lower()
            gender = 0 if g == "m" else 1 if g == "f" else int(prng.random() < 0.5)
            race = _adience_race(prng)
            age = _adience_age(cols[3], _rng(seed, "adience", 3, _crc("/".join(key))))
            _write_adience_image(root, seed, user, face_id, original, age, gender, race, size)
            genders.append(gender), races.append(race)
    return {"n": len(rows), "images": str(root / "aligned"), "label_files": label_files,
            "counts": _counts(genders, races, {"folds": [len(c) for c in chosen], "images_drawn": len(done),
                                               "rows_without_image": skipped, "source_folds": str(folds_dir)})}


def _celeba_attributes(traits: dict, rng) -> list[int]:
    hair = traits["hair"]
    greyish = traits["grey"] > 0.5
    fixed = {
        "Male": traits["gender"] == 0, "Young": traits["age"] < 40, "Eyeglasses": traits["glasses"],
        "Smiling": traits["smile"], "Mouth_Slightly_Open": traits["teeth"], "Gray_Hair": greyish,
        "Bald": traits["bald"] >= 0.75, "Receding_Hairline": 0.3 <= traits["bald"] < 0.75,
        "Black_Hair": hair in ("black", "dark_brown") and not greyish and traits["bald"] < 0.75,
        "Blond_Hair": hair == "blond" and not greyish, "Brown_Hair": hair in ("brown", "light_brown", "red")
        and not greyish, "No_Beard": traits["beard"] == "none", "Goatee": traits["beard"] == "goatee",
        "Mustache": traits["beard"] in ("mustache", "full", "goatee"), "5_o_Clock_Shadow": traits["beard"] == "stubble",
        "Sideburns": traits["beard"] == "full", "Wearing_Lipstick": traits["lipstick"],
        "Heavy_Makeup": traits["lipstick"] and rng.random() < 0.7, "Wearing_Earrings": traits["earrings"],
        "Bags_Under_Eyes": traits["bags"], "Pale_Skin": traits["pale"], "Bangs": traits["fringe"],
        "Rosy_Cheeks": traits["gender"] == 1 and rng.random() < 0.12,
    }
    out = []
    for name in CELEBA_ATTRIBUTES:
        value = fixed[name] if name in fixed else rng.random() < _CELEBA_PRIOR.get(name, 0.1)
        out.append(1 if value else -1)
    return out


def _synth_celeba(root: Path, n: int, seed: int, size: int) -> dict:
    rng = _rng(seed, "celeba")
    width, height = size, int(round(size * 218 / 178))
    n_train = int(round(n * 162770 / 202599))
    n_val = int(round(n * 19867 / 202599))
    if n >= 3:
        n_train, n_val = max(1, min(n_train, n - 2)), max(1, n_val)
    parts = [(0, n_train), (1, n_val), (2, n - n_train - n_val)]
    people = []  # (partition, identity index) per image
    n_ids = 0
    for part, count in parts:
        block = []
        while len(block) < count:
            k = min(int(rng.integers(1, 9)), count - len(block))
            block.extend([n_ids] * k)
            n_ids += 1
        block = [block[i] for i in rng.permutation(len(block))]
        people.extend((part, ident) for ident in block)
    ids = rng.choice(np.arange(1, max(10177, n_ids) + 1), size=n_ids, replace=False)
    persons = []
    for i in range(n_ids):
        prng = _rng(seed, "celeba", 1, i)
        gender = int(prng.random() < 0.58)
        race = int(prng.choice(5, p=[0.75, 0.08, 0.08, 0.03, 0.06]))
        persons.append((_identity(gender, race, prng), float(np.clip(prng.normal(33, 11), 16, 80))))
    attr_rows, part_rows, id_rows = [], [], []
    genders, races, ages = [], [], []
    img_dir = root / "img_align_celeba"
    with _progress(n, "celeba") as bar:
        for i, (part, person) in enumerate(people):
            irng = _rng(seed, "celeba", 0, i)
            ident, base_age = persons[person]
            age = float(np.clip(base_age + irng.normal(0, 3), 14, 90))
            image, traits = _render(ident, age, irng, width, height)
            name = f"{i + 1:06d}.jpg"
            _save(image, img_dir / name)
            attr_rows.append(name + "".join(f" {v:2d}" for v in _celeba_attributes(traits, irng)))
            part_rows.append(f"{name} {part}")
            id_rows.append(f"{name} {int(ids[person])}")
            genders.append(ident["gender"]), races.append(ident["race"]), ages.append(age)
            bar.update()
    files = {"list_attr_celeba.txt": [str(n), " ".join(CELEBA_ATTRIBUTES) + " ", *attr_rows],
             "list_eval_partition.txt": part_rows, "identity_CelebA.txt": id_rows}
    for fname, lines in files.items():
        (root / fname).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"n": n, "images": str(img_dir), "label_files": [str(root / f) for f in files],
            "counts": _counts(genders, races, {"age": _age_stats(ages), "identities": n_ids,
                                               "partition": {str(p): c for p, c in parts}})}


def _deterministic_mat(path: Path, payload: dict) -> None:
    import io

    import scipy.io

    buffer = io.BytesIO()
    scipy.io.savemat(buffer, payload, do_compression=False, oned_as="row")
    data = bytearray(buffer.getvalue())
    header = b"MATLAB 5.0 MAT-file, written by agegender.data.synth"
    data[:116] = header.ljust(116, b" ")
    path.write_bytes(bytes(data))


def _synth_imdb_wiki(root: Path, n: int, seed: int, size: int) -> dict:
    rng = _rng(seed, "imdb_wiki")
    crop = root / "imdb_crop"
    crop.mkdir(parents=True, exist_ok=True)
    celebs, nm_used = [], set()
    plan = []
    while len(plan) < n:
        while True:
            nm = int(rng.integers(1, 5_000_000))
            if nm not in nm_used:
                nm_used.add(nm)
                break
        cid = len(celebs)
        prng = _rng(seed, "imdb_wiki", 1, cid)
        gender = int(prng.random() < 0.45)
        race = int(prng.choice(5, p=[0.7, 0.1, 0.08, 0.05, 0.07]))
        year = int(prng.integers(1925, 1996))
        dob = _dt.date(year, int(prng.integers(1, 7)), int(prng.integers(1, 29)))
        name = f"{_FIRST[int(prng.integers(len(_FIRST)))]} {_LAST[int(prng.integers(len(_LAST)))]}"
        celebs.append((nm, dob, name, _identity(gender, race, prng)))
        hi = min(90, 2015 - year)
        lo = min(hi, 5)
        for _ in range(min(int(rng.integers(1, 11)), n - len(plan))):
            plan.append((cid, int(rng.integers(lo, hi + 1))))
    dobs, taken, paths, genders_f, scores, second, names, celeb_ids, locs = ([] for _ in range(9))
    genders, races, ages = [], [], []
    used_paths: set[str] = set()
    with _progress(n, "imdb_wiki") as bar:
        for i, (cid, age) in enumerate(plan):
            nm, dob, name, ident = celebs[cid]
            while True:
                rel = f"{nm % 100:02d}/nm{nm:07d}_rm{int(rng.integers(10**6, 4 * 10**9))}_" \
                      f"{dob.year}-{dob.month}-{dob.day}_{dob.year + age}.jpg"
                if rel not in used_paths:
                    used_paths.add(rel)
                    break
            image, _ = _render(ident, float(age) + 0.5, _rng(seed, "imdb_wiki", 0, i), size, size)
            _save(image, crop / rel)
            dobs.append(float(dob.toordinal() + 366))
            taken.append(float(dob.year + age))
            paths.append(np.array([rel]))
            genders_f.append(np.nan if rng.random() < 0.02 else (1.0 if ident["gender"] == 0 else 0.0))
            scores.append(-np.inf if rng.random() < 0.03 else float(rng.normal(3.0, 1.2)))
            second.append(float(rng.uniform(0.5, 3.0)) if rng.random() < 0.15 else np.nan)
            names.append(np.array([name]))
            celeb_ids.append(float(cid + 1))
            x1, y1 = rng.uniform(20, 400, 2)
            side = rng.uniform(80, 600)
            locs.append(np.array([[x1, y1, x1 + side, y1 + side]]))
            genders.append(ident["gender"]), races.append(ident["race"]), ages.append(age)
            bar.update()

    def cell(items):
        arr = np.empty((1, len(items)), dtype=object)
        for k, item in enumerate(items):
            arr[0, k] = item
        return arr

    struct = {
        "dob": np.array([dobs]), "photo_taken": np.array([taken]), "full_path": cell(paths),
        "gender": np.array([genders_f]), "name": cell(names), "face_location": cell(locs),
        "face_score": np.array([scores]), "second_face_score": np.array([second]),
        "celeb_names": cell([np.array([c[2]]) for c in celebs]), "celeb_id": np.array([celeb_ids]),
    }
    mat = crop / "imdb.mat"
    _deterministic_mat(mat, {"imdb": struct})
    return {"n": n, "images": str(crop), "label_files": [str(mat)],
            "counts": _counts(genders, races, {"age": _age_stats(ages), "celebrities": len(celebs),
                                               "gender_nan": int(np.isnan(genders_f).sum()),
                                               "face_score_inf": int(np.isinf(scores).sum())})}


def synthesize(layout: str, out_dir, n: int | None, seed: int = 0, *, size: int | None = None,
               adience_folds_dir=None) -> dict:
    """Write ``n`` generated faces in the native layout of a real dataset and return a summary.

    ``layout`` is one of ``LAYOUTS``; ``size`` is the image side (for ``celeba`` the width,
    the height keeping 218/178); ``adience_folds_dir`` (Adience only) copies real fold files'
    rows instead of drawing labels, and then ``n`` may be ``None`` for all rows. The summary
    holds ``layout``, ``root``, ``n`` (rows written), ``images``, ``label_files``, ``seed``,
    ``size`` and ``counts`` (labels per class, ages, folds or partitions).
    """
    if layout not in LAYOUTS:
        raise DataError(f"unknown layout {layout!r}", fix=f"use one of: {', '.join(LAYOUTS)}")
    if adience_folds_dir is not None and layout != "adience":
        raise DataError("adience_folds_dir only applies to the adience layout",
                        fix="drop --adience-folds or use --layout adience")
    if n is None and adience_folds_dir is None:
        raise DataError("the number of faces is missing", fix="pass n (--n) as a positive integer")
    if n is not None and (int(n) != n or n < 1):
        raise DataError(f"the number of faces must be a positive integer, got {n!r}", fix="pass --n 1 or more")
    size = int(size or _DEFAULT_SIZE[layout])
    if size < 16:
        raise DataError(f"image size {size} is too small", fix="pass --size 16 or more")
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    if layout == "utkface":
        summary = _synth_utkface(root, int(n), seed, size)
    elif layout == "adience" and adience_folds_dir is not None:
        summary = _synth_adience_real(root, None if n is None else int(n), seed, size, adience_folds_dir)
    elif layout == "adience":
        summary = _synth_adience(root, int(n), seed, size)
    elif layout == "celeba":
        summary = _synth_celeba(root, int(n), seed, size)
    else:
        summary = _synth_imdb_wiki(root, int(n), seed, size)
    summary = {"layout": layout, "root": str(root), "seed": int(seed), "size": size, **summary}
    _write_marker(root, summary)
    return summary


def _write_marker(root: Path, summary: dict) -> None:
    import json

    from agegender.data.provenance import SYNTH_MARKER

    def rel(p):
        return Path(p).relative_to(root).as_posix() if Path(p) != root else "."

    marker = {"generator": "agegender.data.synth", **{k: v for k, v in summary.items() if k != "root"},
              "images": rel(summary["images"]), "label_files": [rel(p) for p in summary["label_files"]]}
    (root / SYNTH_MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n", encoding="utf-8")
