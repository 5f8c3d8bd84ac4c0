"""IMDB-WIKI reader: the ``imdb.mat`` / ``wiki.mat`` metadata of the face crops.

Layout (Rothe, Timofte & Van Gool, https://data.vision.ee.ethz.ch/cvl/rrothe/imdb-wiki/):
``root/imdb_crop/imdb.mat`` with the crops at ``root/imdb_crop/<full_path>``, and/or
``root/wiki_crop/wiki.mat`` with ``root/wiki_crop/<full_path>``. ``root`` may also be the
``imdb_crop`` (or ``wiki_crop``) folder itself.

``scipy.io.loadmat`` gives ``mat["imdb"]`` (or ``mat["wiki"]``): a 1x1 struct array whose
element ``s = mat["imdb"][0, 0]`` has fields of shape (1, N): ``dob`` (MATLAB serial date
number, float), ``photo_taken`` (year), ``full_path`` (cell: each element a 1-element
string array such as ``['01/nm0000001_rm124825600_1899-5-10_1968.jpg']``), ``gender``
(1 male, 0 female, NaN unknown), ``name`` (cell; an empty array when unknown),
``face_location`` (cell of 1x4 arrays), ``face_score`` (-inf when no face was found),
``second_face_score`` (NaN when there is no second face), and for imdb ``celeb_names`` /
``celeb_id``.

Age convention (the usual one, as in the dataset's own code and most re-users): the birth
date is ``datetime.fromordinal(int(dob)) + timedelta(days=dob % 1) - timedelta(days=366)``
(MATLAB counts days from year 0, Python from year 1) and ``age = photo_taken - birth.year``.
The photo's month is unknown, so this is the age at some point in the photo year and can
be one year above the true age. A row is **skipped with the reason** when dob or
photo_taken is NaN/inf, when dob is outside the dates Python can represent, or when the
age is impossible (< 0 or > 120).

Mapping: ``gender`` 1 -> 0 (male), 0 -> 1 (female), NaN -> -1 (kept, masked for gender);
``group`` = ``celeb_id`` for imdb and the celebrity ``name`` for wiki (the file name when the
name is empty); extra columns ``face_score`` and ``subset`` ("imdb" / "wiki"); ``file`` =
``imdb_crop/<full_path>`` relative to ``root``; ``source`` = "imdb_wiki".

Optional filters, applied in this order after the skips: ``min_face_score`` (keep
``face_score >= min_face_score``; -inf, i.e. no face, always fails), ``single_face_only``
(drop rows with a finite ``second_face_score``), ``age_range=(lo, hi)`` (inclusive). Filtered
rows are not listed one by one (there can be 500k): each filter adds one line to ``notes``
with the count it removed.

``which``: ``"imdb"``, ``"wiki"``, ``"both"`` (concatenated, ``subset`` tells them apart) or
``"auto"``: the one that exists; when both exist, auto reads **imdb only** (the larger set,
the one the papers here use) and says so in a note; pass ``which="both"`` for both.

A .mat that is not a readable MATLAB file (an HTML error page, a truncated download, an
HDF5-based v7.3 file) raises DataError with the fix. Images are not opened or checked here
(a note says so); ``files_seen`` counts the metadata rows read.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from agegender.data.samples import MISSING, Samples, empty_frame, normalize_frame, unsafe_path
from agegender.errors import DataError, reading

__all__ = ["read_imdb_wiki", "labelled_faces"]

_SUBSETS = ("imdb", "wiki")
_MAX_AGE = 120
_FIELDS = ("dob", "photo_taken", "full_path", "gender", "name", "face_score", "second_face_score")
_FETCH = ("download {sub}_crop.tar (or {sub}_meta.tar) again from "
          "https://data.vision.ee.ethz.ch/cvl/rrothe/imdb-wiki/ and extract it so that {mat} is the original file")


def read_imdb_wiki(root, *, which: str = "auto", min_face_score=None, single_face_only: bool = False,
                   age_range=None) -> Samples:
    """Read IMDB-WIKI metadata under ``root``; ``which`` is "auto", "imdb", "wiki" or "both"."""
    if which not in ("auto", "both") + _SUBSETS:
        raise DataError(f"unknown IMDB-WIKI subset {which!r}", fix="use which='auto', 'imdb', 'wiki' or 'both'")
    if age_range is not None:
        if len(age_range) != 2 or age_range[0] > age_range[1]:
            raise DataError(f"age_range must be (low, high) with low <= high, got {age_range!r}",
                            fix="pass e.g. age_range=(1, 80)")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError("IMDB-WIKI folder does not exist", path=root,
                        fix="point root at the folder holding imdb_crop/imdb.mat and/or wiki_crop/wiki.mat")
    root = root.resolve()

    found = {sub: loc for sub in _SUBSETS if (loc := _locate(root, sub)) is not None}
    notes: list[str] = []
    if which == "auto":
        if not found:
            raise DataError("neither imdb_crop/imdb.mat nor wiki_crop/wiki.mat found", path=root,
                            fix="extract imdb_crop.tar and/or wiki_crop.tar into this folder")
        chosen = ["imdb"] if "imdb" in found else ["wiki"]
        if len(found) == 2:
            notes.append("both imdb and wiki metadata found: read imdb only (pass which='both' or which='wiki')")
    else:
        chosen = list(_SUBSETS) if which == "both" else [which]
        for sub in chosen:
            if sub not in found:
                raise DataError(f"{sub}_crop/{sub}.mat not found", path=root,
                                fix=f"extract {sub}_crop.tar into {root} (giving {root}/{sub}_crop/{sub}.mat)")

    rows, skipped, files_seen = [], [], 0
    counts = {"min_face_score": 0, "single_face_only": 0, "age_range": 0}
    for sub in chosen:
        mat_path, crop_dir = found[sub]
        fields = _load_struct(mat_path, sub)
        n = len(fields["dob"])
        files_seen += n
        prefix = "" if crop_dir == root else crop_dir.relative_to(root).as_posix() + "/"
        numeric = {}
        for name in ("dob", "photo_taken", "gender", "face_score", "second_face_score", "celeb_id"):
            if name in fields:
                try:
                    numeric[name] = np.asarray(fields[name], dtype="float64")
                except (TypeError, ValueError):
                    raise DataError(f"field '{name}' of '{sub}' is not numeric", path=mat_path,
                                    fix=_FETCH.format(sub=sub, mat=mat_path)) from None
        years = _birth_years(numeric["dob"])
        photo, gender_raw = numeric["photo_taken"], numeric["gender"]
        face, second = numeric["face_score"], numeric["second_face_score"]
        ids = numeric.get("celeb_id")
        for i in range(n):
            rel = prefix + fields["full_path"][i]
            escape = unsafe_path(fields["full_path"][i])
            if escape:
                skipped.append({"file": rel, "reason": f"image path rejected: {escape}"})
                continue
            dob, taken = float(numeric["dob"][i]), photo[i]
            if not math.isfinite(dob):
                skipped.append({"file": rel, "reason": f"dob is {dob} (no birth date)"})
                continue
            if not math.isfinite(taken):
                skipped.append({"file": rel, "reason": f"photo_taken is {taken} (no photo year)"})
                continue
            year = years[i]
            if year is None:
                skipped.append({"file": rel, "reason": f"dob {dob} is not a representable date"})
                continue
            age = int(taken) - year
            if age < 0 or age > _MAX_AGE:
                skipped.append({"file": rel, "reason": f"impossible age {age} (photo_taken {int(taken)}, born {year})"})
                continue
            if min_face_score is not None and not face[i] >= min_face_score:
                counts["min_face_score"] += 1
                continue
            if single_face_only and math.isfinite(second[i]):
                counts["single_face_only"] += 1
                continue
            if age_range is not None and not age_range[0] <= age <= age_range[1]:
                counts["age_range"] += 1
                continue
            g = gender_raw[i]
            gender = MISSING if not math.isfinite(g) else (0 if g == 1 else 1 if g == 0 else MISSING)
            if sub == "imdb" and ids is not None and math.isfinite(ids[i]):
                group = str(int(ids[i]))
            else:
                group = fields["name"][i] or rel
            rows.append({"path": str(root / rel), "file": rel, "age": float(age), "gender": gender, "race": MISSING,
                         "group": group, "source": "imdb_wiki", "face_score": float(face[i]), "subset": sub})

    if min_face_score is not None:
        notes.append(f"filter min_face_score >= {min_face_score}: {counts['min_face_score']:,} rows removed")
    if single_face_only:
        notes.append(f"filter single_face_only (finite second_face_score): {counts['single_face_only']:,} rows removed")
    if age_range is not None:
        lo, hi = age_range
        notes.append(f"filter age_range {lo}-{hi} (inclusive): {counts['age_range']:,} rows removed")
    notes.append("image files not checked (the metadata is read without opening the crops)")
    frame = normalize_frame(rows) if rows else empty_frame({"face_score": "float64", "subset": object})
    frame["face_score"] = frame["face_score"].astype("float64")
    frame["subset"] = frame["subset"].astype(object)
    return Samples(source="imdb_wiki", root=str(root), frame=frame, files_seen=files_seen, skipped=skipped,
                   notes=notes)


def _locate(root: Path, sub: str):
    """(path of <sub>.mat, folder the full_path entries are relative to) or None."""
    for crop_dir in (root / f"{sub}_crop", root):
        if (crop_dir / f"{sub}.mat").is_file():
            return crop_dir / f"{sub}.mat", crop_dir
    return None


def _load_struct(path: Path, sub: str) -> dict:
    """The struct's fields as flat arrays (strings for full_path and name)."""
    import scipy.io

    fix = _FETCH.format(sub=sub, mat=path)
    with reading(path, f"{sub}.mat"), open(path, "rb") as handle:
        head = handle.read(512)
    lowered = head.lstrip().lower()
    if lowered.startswith((b"<!doctype html", b"<html", b"<?xml")) or b"<html" in lowered:
        raise DataError("is an HTML page, not a MATLAB file (a failed download)", path=path, fix=fix)
    if head.startswith(b"\x89HDF") or b"MATLAB 7.3" in head:
        raise DataError("is a MATLAB v7.3 (HDF5) file, which scipy.io.loadmat cannot read", path=path,
                        fix=f"use the original {sub}.mat (MATLAB 5.0 format) or re-save it in MATLAB with -v7")
    if not head.startswith(b"MATLAB"):
        raise DataError("is not a MATLAB .mat file (no 'MATLAB 5.0 MAT-file' header)", path=path, fix=fix)
    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as err:  # scipy raises ValueError, zlib.error, MatReadError, ... on damaged files
        raise DataError(f"cannot be read as a MATLAB file, probably truncated ({type(err).__name__}: {err})",
                        path=path, fix=fix) from None
    if sub not in mat:
        keys = [k for k in mat if not k.startswith("__")]
        raise DataError(f"has no '{sub}' struct (variables: {', '.join(keys) or 'none'})", path=path, fix=fix)
    struct = mat[sub]
    try:
        record = struct[0, 0] if struct.ndim == 2 else struct.item()
        names = record.dtype.names or ()
    except (IndexError, AttributeError, ValueError):
        raise DataError(f"'{sub}' is not a 1x1 struct", path=path, fix=fix) from None
    absent = [f for f in _FIELDS if f not in names]
    if absent:
        raise DataError(f"'{sub}' struct lacks the fields {', '.join(absent)}", path=path, fix=fix)
    out = {}
    for field in _FIELDS + (("celeb_id",) if "celeb_id" in names else ()):
        values = np.asarray(record[field]).ravel()
        if field in ("full_path", "name"):
            values = [_as_text(v) for v in values]
        out[field] = values
    lengths = {f: len(v) for f, v in out.items()}
    if len(set(lengths.values())) != 1:
        raise DataError(f"'{sub}' fields have different lengths {lengths}", path=path, fix=fix)
    return out


def _as_text(value) -> str:
    """A cell element (a 1-element string array, an empty array, or a str) as text."""
    if isinstance(value, str):
        return value.strip()
    arr = np.asarray(value).ravel()
    return str(arr[0]).strip() if arr.size else ""


def _birth_years(dob: np.ndarray) -> list:
    """Year of each MATLAB datenum (None when not finite or not a representable date)."""
    cache: dict[int, int | None] = {}
    years = []
    for value in dob.astype("float64"):
        if not math.isfinite(value):
            years.append(None)
            continue
        day = int(value)
        if day not in cache:
            try:
                born = datetime.fromordinal(day) + timedelta(days=float(value) % 1) - timedelta(days=366)
                cache[day] = born.year
            except (ValueError, OverflowError):
                cache[day] = None
        years.append(cache[day])
    return years


def labelled_faces(frame):
    """The rows of an IMDB-WIKI frame with a known gender and a detected face; ``(rows, counts)``.

    A row without a birth date or photo year (no age) is already skipped by :func:`read_imdb_wiki`;
    this drops the rows whose ``gender`` is unknown (-1) and those where the dataset's face
    detector found no face (``face_score`` -inf, or NaN). ``counts`` gives ``{"gender_unknown",
    "no_face", "kept"}`` (a row lacking both counts once, under ``gender_unknown``). Works on the
    reader's frame and on prepared (TFDS) data, which keep both columns. Gu & Yang (paper 002,
    Sec. 5.1: "each image has age and gender labels") sample only such rows.
    """
    gender = frame["gender"].to_numpy()
    face = np.asarray(frame["face_score"], dtype="float64")
    known = gender >= 0
    found = np.isfinite(face)
    keep = known & found
    counts = {"gender_unknown": int((~known).sum()), "no_face": int((known & ~found).sum()), "kept": int(keep.sum())}
    return frame[keep].reset_index(drop=True), counts
