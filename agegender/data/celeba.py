"""CelebA reader: the 40 binary attributes, the official partition and the identities.

Layout (Liu et al. 2015, https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html, folders
``Img/`` and ``Anno/``, ``Eval/``), gathered in one ``root``:

- ``img_align_celeba/000001.jpg`` ... (the aligned & cropped JPEGs; the Kaggle copy nests
  them in ``img_align_celeba/img_align_celeba/``, which is accepted with a note);
- ``list_attr_celeba.txt``: line 1 the row count (202599), line 2 the 40 attribute names,
  then ``000001.jpg v1 ... v40`` separated by runs of spaces of varying length, values
  ``1`` / ``-1``;
- ``list_eval_partition.txt``: ``000001.jpg 0|1|2`` (train / val / test; official sizes
  162,770 / 19,867 / 19,962);
- optionally ``identity_CelebA.txt``: ``000001.jpg 2880`` -> ``group``; without it
  ``group`` is the file name (a note says the split cannot then be identity-exclusive).

Protocol (Sundriyal, reproductions/mtl_weighted_loss/README.md): the ``Male`` and ``Young`` attributes with the official
partition. Each requested attribute (any of the 40, matched by name, case-insensitively)
becomes a 0/1 int column named as the attribute (1 -> 1, -1 -> 0); ``gender`` always comes
from ``Male`` (1 -> 0 male, -1 -> 1 female); ``partition`` is train/val/test; ``age`` is
NaN (CelebA has no ages). ``file`` is ``img_align_celeba/<name>`` relative to ``root``.

Checks and decisions:

- a label file that is an HTML page (a failed Google Drive download: it starts with
  ``<!DOCTYPE html`` / ``<html`` or mentions "Google Drive" or "quota") -> DataError with
  the way to fetch the real file;
- a count on line 1 that differs from the number of rows -> a **note**, not an error (a
  deliberate subset keeps the original count; a truncated download also shows up as
  missing partition rows and images);
- a row with the wrong number of fields or a value other than 1/-1 -> skipped with the
  reason; a file listed twice -> the first row kept, later ones in ``duplicate_rows``;
- a file absent from the partition list -> ``partition`` "" and a note; absent from the
  identity list -> ``group`` = file name and a note;
- images: files the image folder lacks go to ``missing`` (rows stay in the frame); when
  the folder is absent, every row is in ``missing`` and a note says where the images belong.

``files_seen`` counts the attribute rows read.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from agegender.data.samples import MISSING, Samples, empty_frame, normalize_frame, unsafe_path
from agegender.errors import DataError, reading

__all__ = ["read_celeba"]

ATTRIBUTES = (  # the 40 attributes of list_attr_celeba.txt, in the file's column order
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips",
    "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin",
    "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open",
    "Mustache", "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline",
    "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat",
    "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)

_ATTR_FILE = "list_attr_celeba.txt"
_PARTITION_FILE = "list_eval_partition.txt"
_IDENTITY_FILE = "identity_CelebA.txt"
_IMAGE_DIR = "img_align_celeba"
_PARTITIONS = {"0": "train", "1": "val", "2": "test"}
_FETCH = ("download the original file again from the CelebA page (Anno/ or Eval/ folder on Google Drive or "
          "Baidu; if Drive says the download quota is exceeded, retry later or use 'Add shortcut to Drive' and "
          "download from your own Drive), or use tensorflow_datasets' celeb_a")


def read_celeba(root, *, attributes=("Male", "Young")) -> Samples:
    """Read CelebA labels under ``root``; ``attributes`` are attribute names (any of the 40)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError("CelebA folder does not exist", path=root,
                        fix=f"point root at the folder holding {_IMAGE_DIR}/, {_ATTR_FILE} and {_PARTITION_FILE}")
    root = root.resolve()
    for name in (_ATTR_FILE, _PARTITION_FILE):
        if not (root / name).is_file():
            csv_hint = (f" (found {Path(name).stem}.csv: the Kaggle CSV copy is not read; use the original .txt "
                        "files)") if (root / f"{Path(name).stem}.csv").is_file() else ""
            raise DataError(f"CelebA label file {name} not found{csv_hint}", path=root,
                            fix=f"put {_ATTR_FILE}, {_PARTITION_FILE} (and optionally {_IDENTITY_FILE}) in {root}")
    if isinstance(attributes, str):
        attributes = (attributes,)

    notes: list[str] = []
    names, count, lines = _read_attr_file(root / _ATTR_FILE)
    by_lower = {n.lower(): i for i, n in enumerate(names)}
    wanted = []
    for attr in attributes:
        if str(attr).lower() not in by_lower:
            raise DataError(f"unknown CelebA attribute {attr!r}", path=root / _ATTR_FILE,
                            fix=f"use any of: {', '.join(names)}")
        wanted.append(names[by_lower[str(attr).lower()]])
    male = by_lower.get("male")
    if male is None:
        notes.append(f"{_ATTR_FILE} has no Male attribute: gender is unknown (-1) for every row")

    partition = _read_pairs(root / _PARTITION_FILE)
    identity = _read_pairs(root / _IDENTITY_FILE) if (root / _IDENTITY_FILE).is_file() else None
    if identity is None:
        notes.append(f"no {_IDENTITY_FILE}: group = file name (splits cannot be identity-exclusive)")
    image_dir, listing = _image_listing(root, notes)

    # columns, not row dicts: a dict per row with 40 attributes took ~4 KB, 800 MB for the full CelebA
    columns: dict[str, list] = {"path": [], "file": [], "gender": [], "group": [], "partition": []}
    attribute_values = np.zeros((len(lines), len(wanted)), dtype="int8")
    skipped, duplicates, missing = [], [], []
    first: dict[str, int] = {}
    no_partition = no_identity = 0
    n_fields = len(names) + 1
    for line_no, line in tqdm(lines, desc="CelebA attributes", unit="row", leave=False,
                              disable=None if len(lines) > 10_000 else True):
        fields = line.split()
        where = f"{_ATTR_FILE}:{line_no}"
        if len(fields) != n_fields:
            skipped.append({"file": where, "reason": f"{len(fields)} fields instead of {n_fields} (file + "
                                                     f"{len(names)} attributes)"})
            continue
        name, values = fields[0], fields[1:]
        bad = [v for v in values if v not in ("1", "-1")]
        if bad:
            skipped.append({"file": where, "reason": f"{name}: attribute value {bad[0]!r} is not 1 or -1"})
            continue
        if name in first:
            duplicates.append({"file": _ATTR_FILE, "line": line_no, "reason": f"{name} listed before on line "
                                                                              f"{first[name]} (dropped)"})
            continue
        first[name] = line_no
        escape = unsafe_path(name) or ("image name contains a folder" if "/" in name or "\\" in name else None)
        if escape:
            skipped.append({"file": where, "reason": f"image path rejected: {escape}"})
            continue
        rel = f"{image_dir}/{name}"
        part = _PARTITIONS.get(partition.get(name, ""), "")
        no_partition += part == ""
        group = identity.get(name) if identity is not None else name
        if group is None:
            group, no_identity = name, no_identity + 1
        gender = MISSING if male is None else (0 if values[male] == "1" else 1)
        for column, value in (("path", str(root / rel)), ("file", rel), ("gender", gender), ("group", group),
                              ("partition", part)):
            columns[column].append(value)
        attribute_values[len(columns["file"]) - 1] = [values[by_lower[a.lower()]] == "1" for a in wanted]
        if listing is None or name not in listing:
            missing.append(rel)

    if count is not None and count != len(lines):
        notes.append(f"{_ATTR_FILE}: line 1 says {count:,} rows but the file has {len(lines):,} "
                     "(a subset, or a truncated download)")
    if no_partition:
        notes.append(f"{no_partition:,} rows have no official partition in {_PARTITION_FILE} (partition '')")
    if no_identity:
        notes.append(f"{no_identity:,} rows have no identity in {_IDENTITY_FILE} (group = file name)")
    kept = len(columns["file"])
    if missing and listing is not None:
        notes.append(f"{len(missing):,} of {kept:,} images are absent from {root / image_dir}")
    if kept:
        table = pd.DataFrame(columns)
        table["race"], table["source"] = MISSING, "celeba"
        for i, attr in enumerate(wanted):
            table[attr] = attribute_values[:kept, i].astype("int64")
        frame = normalize_frame(table)
    else:
        frame = empty_frame({"partition": object, **{a: "int64" for a in wanted}})
    frame["partition"] = frame["partition"].astype(object)
    for attr in wanted:
        frame[attr] = frame[attr].astype("int64")
    return Samples(source="celeba", root=str(root), frame=frame, files_seen=len(lines), skipped=skipped,
                   duplicate_rows=duplicates, missing=missing, notes=notes)


def _check_not_html(path: Path, text_head: str) -> None:
    head = text_head.lstrip("\ufeff \t\r\n").lower()
    if head.startswith(("<!doctype html", "<html")) or "google drive" in head or "quota" in head:
        raise DataError("is a web page (HTML or a Google Drive message), not a CelebA label file: the download "
                        "failed, typically on Drive's 'quota exceeded' or virus-scan page", path=path, fix=_FETCH)


def _read_text(path: Path) -> list[str]:
    with reading(path, "CelebA label file"), open(path, encoding="utf-8", errors="replace") as handle:
        text = handle.read()
    _check_not_html(path, text[:4096])
    if not text.strip():
        raise DataError("label file is empty", path=path, fix=_FETCH)
    return text.splitlines()


def _read_attr_file(path: Path):
    """(attribute names, count or None, [(line number, text)] of the data rows)."""
    lines = _read_text(path)
    first = lines[0].split()
    if len(first) == 1 and first[0].isdigit():
        count, names_line, start = int(first[0]), 1, 2
    else:
        count, names_line, start = None, 0, 1
    if len(lines) <= names_line:
        raise DataError("has no attribute-name line", path=path, fix=_FETCH)
    names = lines[names_line].split()
    if not names or any(n.isdigit() or n.lower().endswith(".jpg") for n in names):
        raise DataError(f"line {names_line + 1} should list the 40 attribute names, got {lines[names_line][:60]!r}",
                        path=path, fix=_FETCH)
    rows = [(i + 1, lines[i]) for i in range(start, len(lines)) if lines[i].strip()]
    return names, count, rows


def _read_pairs(path: Path) -> dict[str, str]:
    """``file value`` lines -> {file: value}; a first line that is a bare count is ignored."""
    pairs: dict[str, str] = {}
    for line in _read_text(path):
        fields = line.split()
        if len(fields) >= 2:
            pairs.setdefault(fields[0], fields[1])
    return pairs


def _image_listing(root: Path, notes: list[str]) -> tuple[str, set | None]:
    image_dir = root / _IMAGE_DIR
    nested = image_dir / _IMAGE_DIR
    if nested.is_dir():
        notes.append(f"images read from the nested {_IMAGE_DIR}/{_IMAGE_DIR}/ (Kaggle layout)")
        with reading(nested, "CelebA image folder"):
            return f"{_IMAGE_DIR}/{_IMAGE_DIR}", set(os.listdir(nested))
    if image_dir.is_dir():
        with reading(image_dir, "CelebA image folder"):
            return _IMAGE_DIR, set(os.listdir(image_dir))
    notes.append(f"images missing: no {_IMAGE_DIR}/ folder in {root}; the aligned JPEGs belong at "
                 f"{image_dir}/000001.jpg ...; labels were read without images (every row is in missing)")
    return _IMAGE_DIR, None
