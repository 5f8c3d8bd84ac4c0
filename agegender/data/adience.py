"""Adience reader: the official five fold files and the aligned faces.

Layout (Eidinger, Enbar & Hassner 2014, https://talhassner.github.io/home/projects/Adience/):
``root`` holds ``fold_0_data.txt`` ... ``fold_4_data.txt`` (tab-separated, one header line:
``user_id original_image face_id age gender x y dx dy tilt_ang fiducial_yaw_angle
fiducial_score``) and the images at
``aligned/<user_id>/landmark_aligned_face.<face_id>.<original_image>``. Labels are read
without images: with ``check_images=True`` every row whose image is absent is listed in
``Samples.missing`` (the row stays in the frame), and a note says so when the whole
``aligned/`` folder is absent.

Columns: the standard ones (``age`` is NaN: Adience gives groups), ``age_group`` = index
into ``ADIENCE_AGE_GROUPS`` or -1, ``gender`` m -> 0, f -> 1, anything else (``u``, empty,
``None``) -> -1, ``group`` = ``user_id`` (the folds are subject-exclusive by user_id; a note
flags any user found in two folds), ``file`` = ``aligned/<user_id>/landmark_aligned_face.
<face_id>.<original_image>`` relative to ``root``, plus ``fold`` (0-4) and ``age_label``
(the raw age text of the fold file).

Protocol (Levi & Hassner 2015; Jørgensen; reproductions/README.md): only the 8 canonical groups count for
the age task. Stray labels (``35``, ``13``, ``(25, 23)``, ``(27, 32)``, ``(38, 42)``,
``None``, ...) get ``age_group = -1`` and are masked for age; a note counts them. A row with
neither a canonical age group nor m/f gender is skipped (reason in ``skipped``); a row with
one valid label is kept and masked for the other task.

``remap_stray_ages=True`` (opt-in, not the paper's protocol) maps stray labels to groups;
every remap is listed in ``repaired``. Rules:

- a single number -> the group containing it; otherwise the group nearest to it (distance
  to the group's interval); a tie goes to the older group;
- an interval ``(a, b)`` (ends sorted) -> the group sharing the most whole years with
  ``[a, b]``; no shared year or a tie -> stays stray;
- ``None``, empty or any other text -> stays stray.

On the labels of the real fold files this gives exactly::

    2  -> (0, 2)     3  -> (4, 6)*    13 -> (8, 12)    22 -> (15, 20)   23 -> (25, 32)
    29 -> (25, 32)   32 -> (25, 32)   34 -> (25, 32)   35 -> (38, 43)*  36 -> (38, 43)
    42 -> (38, 43)   45 -> (38, 43)   46 -> (48, 53)   55 -> (48, 53)   56 -> (48, 53)
    57 -> (60, 100)  58 -> (60, 100)
    (25, 23) -> (25, 32)   (27, 32) -> (25, 32)   (38, 42) -> (38, 43)
    (38, 48) -> (38, 43)   (8, 23) -> (15, 20)    None -> stray
    (* tie between two groups, resolved to the older one)

Duplicates: the real fold files contain exact duplicate rows (all 12 fields equal: the same
face listed twice). By default the first occurrence is kept, later ones are dropped and
listed in ``duplicate_rows`` (``file``, ``line``, ``reason``). ``keep_duplicates=True``
keeps them in the frame (still listed), which is what Levi & Hassner's lists and the
published counts do.

Counts on the real fold files (reproductions/README.md targets; they are counts *before* duplicate
removal): 19,487 rows; canonical age group 17,424; m/f gender 17,603; both 16,258
(Jørgensen says 16,228: the 30-row gap is unexplained); 718 rows have neither label.
The files hold 117 duplicate rows; after dropping them: 19,370 rows, age 17,321, gender
17,492, both 16,156. The frame then has 18,657 rows (713 of the remaining rows have
neither label); with ``keep_duplicates=True`` it has 18,769. A note states both sets of counts;
``read_adience(root, keep_duplicates=True).task_samples()`` reproduces the published ones.
``files_seen`` counts the label rows read.
"""

from __future__ import annotations

import csv
import os
import re
from collections import Counter
from pathlib import Path

import numpy as np

from agegender.data.samples import ADIENCE_AGE_GROUPS, MISSING, Samples, empty_frame, normalize_frame, unsafe_path
from agegender.errors import DataError, reading

__all__ = ["read_adience"]

_N_FOLDS = 5
_HEADER = ("user_id", "original_image", "face_id", "age", "gender", "x", "y", "dx", "dy", "tilt_ang",
           "fiducial_yaw_angle", "fiducial_score")
_INTERVAL = re.compile(r"^\(\s*(\d+)\s*,\s*(\d+)\s*\)$")
_GROUP_BOUNDS = tuple(tuple(int(v) for v in _INTERVAL.match(g).groups()) for g in ADIENCE_AGE_GROUPS)
_GENDERS = {"m": 0, "f": 1}


def read_adience(root, *, remap_stray_ages: bool = False, check_images: bool = True,
                 keep_duplicates: bool = False) -> Samples:
    """Read the five Adience fold files under ``root`` (and check the aligned images).

    ``remap_stray_ages`` maps non-canonical age labels to groups (rules in the module
    docstring); ``check_images`` lists rows whose image is absent in ``missing``;
    ``keep_duplicates`` keeps exact duplicate rows in the frame (the published counts do).
    """
    root = Path(root).expanduser()
    fold_files = [root / f"fold_{k}_data.txt" for k in range(_N_FOLDS)]
    absent = [p.name for p in fold_files if not p.is_file()]
    if absent:
        expected = ", ".join(p.name for p in fold_files)
        fix = f"point root at the Adience folder that holds {expected} and aligned/<user_id>/..."
        if (root / "folds" / fold_files[0].name).is_file():
            fix = f"the fold files are in {root / 'folds'}: pass that folder as root (images belong in its aligned/)"
        what = (f"Adience fold files not found ({', '.join(absent)})" if root.exists()
                else "Adience folder does not exist")
        raise DataError(what, path=root, fix=fix)
    root = root.resolve()

    rows, skipped, repaired, duplicates, notes = [], [], [], [], []
    seen: dict[tuple, str] = {}
    counts = {"all": Counter(), "kept": Counter()}
    stray = Counter()
    user_folds: dict[str, set] = {}
    image_keys: dict[tuple, tuple] = {}
    conflicts = 0
    files_seen = 0
    for k, fold_file in enumerate(fold_files):
        for line_no, fields in _read_fold_file(fold_file):
            files_seen += 1
            where = f"{fold_file.name}:{line_no}"
            if len(fields) != len(_HEADER):
                skipped.append({"file": where,
                                "reason": f"{len(fields)} tab-separated fields instead of {len(_HEADER)}"})
                continue
            fields = tuple(f.strip() for f in fields)
            user_id, original_image, face_id, age_text, gender_text = fields[:5]
            age_group = _canonical_group(age_text)
            remapped = age_group == MISSING and remap_stray_ages and _remap(age_text) != MISSING
            if remapped:
                age_group = _remap(age_text)
            gender = _GENDERS.get(gender_text.lower(), MISSING)
            is_dup = fields in seen
            for key in ("all",) + (() if is_dup else ("kept",)):
                counts[key]["rows"] += 1
                counts[key]["age"] += age_group >= 0
                counts[key]["gender"] += gender >= 0
                counts[key]["both"] += age_group >= 0 and gender >= 0
            if is_dup:
                duplicates.append({"file": fold_file.name, "line": line_no,
                                   "reason": f"exact duplicate of {seen[fields]}"
                                             + (" (kept)" if keep_duplicates else " (dropped)")})
                if not keep_duplicates:
                    continue
            else:
                seen[fields] = where
            image_key = (user_id, face_id, original_image)
            if image_key in image_keys and image_keys[image_key] != fields:
                conflicts += 1
            image_keys.setdefault(image_key, fields)
            if age_group < 0 and gender < 0:
                skipped.append({"file": where, "reason": f"neither a canonical age group (age {age_text!r}) "
                                                         f"nor m/f gender (gender {gender_text!r})"})
                continue
            if age_group < 0:
                stray[age_text or "(empty)"] += 1
            if remapped:
                repaired.append({"file": where, "reason": f"stray age label {age_text!r} remapped to "
                                                          f"{ADIENCE_AGE_GROUPS[age_group]}"})
            rel = f"aligned/{user_id}/landmark_aligned_face.{face_id}.{original_image}"
            escape = unsafe_path(rel)
            if escape:
                skipped.append({"file": where, "reason": f"image path rejected: {escape}"})
                continue
            user_folds.setdefault(user_id, set()).add(k)
            rows.append({"path": str(root / rel), "file": rel, "age": np.nan, "age_group": age_group,
                         "gender": gender, "race": MISSING, "group": user_id, "source": "adience", "fold": k,
                         "age_label": age_text})

    frame = normalize_frame(rows) if rows else empty_frame({"fold": "int64", "age_label": object})
    frame["fold"] = frame["fold"].astype("int64")
    frame["age_label"] = frame["age_label"].astype(object)

    a, d = counts["all"], counts["kept"]
    notes.append(f"label counts over all {a['rows']:,} rows, duplicates included (the published protocol): "
                 f"age group {a['age']:,}, m/f gender {a['gender']:,}, both {a['both']:,}")
    notes.append(f"after dropping {a['rows'] - d['rows']:,} exact duplicate rows: {d['rows']:,} rows, age group "
                 f"{d['age']:,}, m/f gender {d['gender']:,}, both {d['both']:,}"
                 + ("; duplicates were kept in the frame (keep_duplicates=True)" if keep_duplicates else ""))
    if stray:
        listing = ", ".join(f"{label} x{n}" for label, n in stray.most_common())
        notes.append(f"{sum(stray.values()):,} kept rows have a stray age label (masked for age"
                     f"{'' if not remap_stray_ages else ', no remap rule applies'}): {listing}")
    if conflicts:
        notes.append(f"{conflicts} rows name an image listed before with different fields (both kept)")
    leaking = sorted(u for u, f in user_folds.items() if len(f) > 1)
    if leaking:
        notes.append(f"{len(leaking)} user_ids occur in more than one fold (folds not subject-exclusive): "
                     f"{', '.join(leaking[:5])}{' ...' if len(leaking) > 5 else ''}")

    missing = _missing_images(root, frame, notes) if check_images else []
    if not check_images:
        notes.append("images not checked (check_images=False)")
    return Samples(source="adience", root=str(root), frame=frame, files_seen=files_seen, skipped=skipped,
                   repaired=repaired, duplicate_rows=duplicates, missing=missing, notes=notes)


def _read_fold_file(path: Path):
    """(line number, fields) for every data line; the header is checked."""
    with reading(path, "Adience fold file"), open(path, newline="", encoding="utf-8", errors="replace") as handle:
        head = handle.read(512)
        handle.seek(0)
        if head.lstrip().lower().startswith(("<!doctype html", "<html")):
            raise DataError("is an HTML page, not an Adience fold file (a failed download)", path=path,
                            fix="download the fold files again from the Adience page (faces/fold_*_data.txt)")
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None:
            raise DataError("fold file is empty", path=path, fix="download the fold files again")
        if tuple(h.strip().lower() for h in header[:5]) != _HEADER[:5]:
            raise DataError(f"unexpected header {header[:5]}", path=path,
                            fix=f"use the original Adience fold file (tab-separated header: {' '.join(_HEADER)})")
        for fields in reader:
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue
            yield reader.line_num, fields


def _canonical_group(text: str) -> int:
    match = _INTERVAL.match(text)
    if not match:
        return MISSING
    bounds = (int(match.group(1)), int(match.group(2)))
    return _GROUP_BOUNDS.index(bounds) if bounds in _GROUP_BOUNDS else MISSING


def _remap(text: str) -> int:
    """The group a stray label maps to under the documented rules, or -1."""
    if text.isdigit():
        n = int(text)
        dist = [0 if lo <= n <= hi else min(abs(n - lo), abs(n - hi)) for lo, hi in _GROUP_BOUNDS]
        best = min(dist)
        return max(i for i, d in enumerate(dist) if d == best)  # tie -> older group
    match = _INTERVAL.match(text)
    if not match:
        return MISSING
    lo, hi = sorted(int(v) for v in match.groups())
    overlap = [max(0, min(hi, ghi) - max(lo, glo) + 1) for glo, ghi in _GROUP_BOUNDS]
    best = max(overlap)
    if best == 0 or overlap.count(best) > 1:
        return MISSING
    return overlap.index(best)


def _missing_images(root: Path, frame, notes: list[str]) -> list[str]:
    aligned = root / "aligned"
    files = frame["file"].tolist()
    if not aligned.is_dir():
        notes.append(f"images missing: no aligned/ folder in {root}; the faces belong at "
                     f"{aligned}/<user_id>/landmark_aligned_face.<face_id>.<original_image> "
                     f"(all {len(files):,} rows listed in missing)")
        return list(dict.fromkeys(files))
    listing: dict[str, set] = {}
    missing = []
    for rel in files:
        _, user, name = rel.split("/", 2)
        if user not in listing:
            try:
                listing[user] = set(os.listdir(aligned / user))
            except OSError as err:
                listing[user] = set()
                if not isinstance(err, FileNotFoundError):
                    notes.append(f"folder {aligned / user} is not readable ({err.strerror or err}): its images "
                                 "count as absent")
        if name not in listing[user]:
            missing.append(rel)
    missing = list(dict.fromkeys(missing))
    if missing:
        notes.append(f"{len(missing):,} of {len(set(files)):,} images are absent under {aligned}")
    return missing
