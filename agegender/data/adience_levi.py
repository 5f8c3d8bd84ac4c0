"""Levi & Hassner's per-fold Adience lists (the alternative protocol to the fold files).

Layout (the lists published with Levi & Hassner, "Age and Gender Classification using
Convolutional Neural Networks", CVPR-W 2015, https://github.com/GilLevi/AgeGenderDeepLearning,
folder ``Folds/train_val_txt_files_per_fold``): ``splits_dir/test_fold_is_{k}/`` holds
``age_train.txt``, ``age_val.txt``, ``age_test.txt``, ``gender_train.txt``,
``gender_val.txt``, ``gender_test.txt``; each line is
``<user_id>/landmark_aligned_face.<face_id>.<original_image> <label>``, the image living at
``adience_root/aligned/<that path>``.

Label meanings, checked by joining every list with the official fold files (the test in
``tests/test_readers.py`` asserts it on the real files):

- age: 0-7 is the index into ``ADIENCE_AGE_GROUPS`` in its order, (0, 2) ... (60, 100), so
  it is our ``age_group`` as is; only rows with a canonical group are listed;
- gender: 0 = ``m``, 1 = ``f``, which is our encoding (0 male, 1 female) as is.

Per task the lists hold only the rows with a valid label, so the other label is -1 (masked).
Facts of the real lists (reproductions/README.md; asserted in the tests): for every fold, train + val +
test holds 17,423 age rows and 17,602 gender rows, one fewer than the fold files' 17,424 /
17,603 (a different training row is absent in each fold); the exact duplicate rows of the
fold files are kept, so some images are listed twice, and a few duplicated faces sit in
both train and val. The test list of fold k is exactly fold k; train and val come from the
other four folds. Duplicates are kept (this is Levi's protocol), listed in
``duplicate_rows`` and counted in ``notes``, and a note counts images shared by train and val.

Columns: the standard ones plus ``partition`` (train/val/test). ``group`` = user_id;
``file`` = ``aligned/<line path>`` (as in :func:`agegender.data.adience.read_adience`, so
the two join on ``file``). Without ``adience_root`` the paths are ``aligned/...`` relative
and images are not checked; with it, absent images go to ``missing``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from agegender.data.samples import ADIENCE_AGE_GROUPS, MISSING, Samples, empty_frame, normalize_frame, unsafe_path
from agegender.errors import DataError, reading

__all__ = ["read_levi_splits"]

_SPLITS = ("train", "val", "test")
_TASKS = {"age": len(ADIENCE_AGE_GROUPS), "gender": 2}
_N_FOLDS = 5


def read_levi_splits(splits_dir, adience_root=None, *, fold: int, task: str) -> dict[str, Samples]:
    """Read ``test_fold_is_{fold}/{task}_{train,val,test}.txt``; keys "train", "val", "test".

    ``task`` is ``"age"`` (label -> ``age_group``) or ``"gender"`` (label -> ``gender``).
    """
    if task not in _TASKS:
        raise DataError(f"unknown Levi & Hassner task {task!r}", fix="use task='age' or task='gender'")
    if not isinstance(fold, (int, np.integer)) or not 0 <= int(fold) < _N_FOLDS:
        raise DataError(f"fold must be 0-{_N_FOLDS - 1}, got {fold!r}", fix=f"pass fold=0 ... fold={_N_FOLDS - 1}")
    fold = int(fold)
    splits_dir = Path(splits_dir).expanduser()
    fold_dir = splits_dir / f"test_fold_is_{fold}"
    lists = {s: fold_dir / f"{task}_{s}.txt" for s in _SPLITS}
    absent = [p.name for p in lists.values() if not p.is_file()]
    if absent:
        raise DataError(f"Levi & Hassner list files not found ({', '.join(absent)})", path=fold_dir,
                        fix=f"point splits_dir at the folder holding test_fold_is_0 ... test_fold_is_4, each with "
                            f"{task}_train.txt, {task}_val.txt, {task}_test.txt "
                            "(AgeGenderDeepLearning/Folds/train_val_txt_files_per_fold)")
    aligned = None
    if adience_root is not None:
        aligned = Path(adience_root).expanduser().resolve() / "aligned"
    listing: dict[str, set] = {}

    result: dict[str, Samples] = {}
    for split, list_file in lists.items():
        rows, skipped, duplicates, missing, notes = [], [], [], [], []
        first_line: dict[str, int] = {}
        files_seen = 0
        with reading(list_file, "Levi & Hassner list"), open(list_file, encoding="utf-8", errors="replace") as handle:
            for line_no, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                files_seen += 1
                if line_no == 1 and line.lstrip().lower().startswith(("<!doctype html", "<html")):
                    raise DataError("is an HTML page, not a Levi & Hassner list (a failed download)", path=list_file,
                                    fix="download the list files again from the AgeGenderDeepLearning repository")
                where = f"{list_file.name}:{line_no}"
                parts = line.split()
                if len(parts) != 2:
                    skipped.append({"file": where, "reason": f"{len(parts)} fields instead of 2 (path label)"})
                    continue
                rel_line, label_text = parts
                if not label_text.isdigit() or int(label_text) >= _TASKS[task]:
                    skipped.append({"file": where, "reason": f"{task} label {label_text!r} is not "
                                                             f"0-{_TASKS[task] - 1}"})
                    continue
                escape = unsafe_path(rel_line)
                if escape:
                    skipped.append({"file": where, "reason": f"image path rejected: {escape}"})
                    continue
                user_id = rel_line.split("/", 1)[0]
                if "/" not in rel_line or not user_id:
                    skipped.append({"file": where, "reason": f"path {rel_line!r} is not <user_id>/<image>"})
                    continue
                rel = f"aligned/{rel_line}"
                if rel in first_line:
                    duplicates.append({"file": list_file.name, "line": line_no,
                                       "reason": f"same image as line {first_line[rel]} (kept, as in Levi's lists)"})
                else:
                    first_line[rel] = line_no
                label = int(label_text)
                if aligned is not None:
                    path = str(aligned / rel_line)
                    if user_id not in listing:
                        try:
                            listing[user_id] = set(os.listdir(aligned / user_id))
                        except OSError:
                            listing[user_id] = set()
                    if rel_line.split("/", 1)[1] not in listing[user_id]:
                        missing.append(rel)
                else:
                    path = rel
                rows.append({"path": path, "file": rel, "age": np.nan,
                             "age_group": label if task == "age" else MISSING,
                             "gender": label if task == "gender" else MISSING,
                             "race": MISSING, "group": user_id, "source": "adience", "partition": split})
        frame = normalize_frame(rows) if rows else empty_frame({"partition": object})
        frame["partition"] = frame["partition"].astype(object)
        if duplicates:
            notes.append(f"{len(duplicates)} lines repeat an image listed earlier in {list_file.name} "
                         "(the fold files' exact duplicates; kept as Levi & Hassner did)")
        if aligned is None:
            notes.append("no adience_root given: paths are relative (aligned/...), images not checked")
        elif not aligned.is_dir():
            notes.append(f"images missing: no aligned/ folder at {aligned}; the faces belong at "
                         f"{aligned}/<user_id>/landmark_aligned_face.<face_id>.<original_image>")
        missing = list(dict.fromkeys(missing))
        result[split] = Samples(source="adience", root=str(fold_dir), frame=frame, files_seen=files_seen,
                                skipped=skipped, duplicate_rows=duplicates, missing=missing, notes=notes)

    shared = set(result["train"].frame["file"]) & set(result["val"].frame["file"])
    if shared:
        result["val"].notes.append(f"{len(shared)} images of the val list also occur in the train list "
                                   "(duplicate rows of the fold files split across them)")
    seen_users = set(result["train"].frame["group"]) | set(result["val"].frame["group"])
    leak = set(result["test"].frame["group"]) & seen_users
    if leak:
        result["test"].notes.append(f"{len(leak)} user_ids of the test list also occur in train/val")
    return result
