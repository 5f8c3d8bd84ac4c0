"""UTKFace reader: labels come from the file names.

Layout (https://susanqq.github.io/UTKFace/): every image is named
``[age]_[gender]_[race]_[date&time].jpg`` with age an integer (0-116 in the dataset
description; the smallest age in the real files is 1), gender 0 male / 1 female, race
0 white / 1 black / 2 asian / 3 indian / 4 others, and date&time a 17-digit
``yyyymmddHHMMSSFFF`` timestamp. Two layouts ship:

- **aligned & cropped** (``UTKFace.tar.gz``, the 200x200 faces every paper here uses):
  ``age_gender_race_timestamp.jpg.chip.jpg``, all in one folder (``UTKFace/``, or the
  ``crop_part1/`` subset);
- **in-the-wild** (``part1/``, ``part2/``, ``part3/``): ``age_gender_race_timestamp.jpg``.

``root`` is searched recursively, so it may be the folder holding the images or any parent
of it. ``layout="auto"`` picks the layout with more image names under ``root``; files of the
other layout are skipped with the reason (and a note says so). ``__MACOSX`` folders are
ignored.

Name defects of the full set, handled as decided in ``reproductions/README.md`` ("parse by
leading fields, keep a file whose age and gender parse, mark a missing race as unknown,
report every such case"):

- three names lack the race field (``39_1_20170116174525125.jpg.chip.jpg``): kept with
  race -1 (masked for the race task), listed in ``repaired``;
- a space before ``.jpg`` (``..._20170116220224657 .jpg.chip.jpg``) and a missing dot before
  ``jpg`` (``..._20170116232725357jpg.chip.jpg``): the name is read as intended, listed in
  ``repaired``;
- 16- or 18-digit timestamps (any length other than 17), a missing timestamp, or fields
  after the timestamp: accepted, listed in ``repaired`` (the timestamp is not a label);
- an age or gender that does not parse, a gender other than 0/1, an age outside 1-120, a
  race field other than 0-4: skipped with the reason;
- files that are not ``.jpg`` images (``.txt`` landmark lists, ``.DS_Store``, macOS ``._``
  resource forks): skipped with the reason;
- a file or folder name that is not valid UTF-8 (the OS gives its bytes): skipped and listed
  with its bad bytes escaped (``25_0_1_2017\\xff\\xfe...``), never fatal; the rest of the
  folder is read.

The byte-identical duplicate files of the full set are not detected here (that needs
hashing the images); they appear as distinct rows.

UTKFace has no identity ids, so ``group`` is the file name without its ``.jpg`` /
``.jpg.chip.jpg`` suffix: every image is its own group. ``file`` is the path relative to
``root`` (just the name for a flat folder); ``source`` is ``"utkface"``.

A pack (``python -m agegender.data pack utkface ...``, :mod:`agegender.data.pack`) is read from its
manifest and label table instead: the same rows, ``path`` pointing to the re-encoded images.
"""

from __future__ import annotations

import os
from pathlib import Path

from tqdm import tqdm

from agegender.data.provenance import SYNTH_MARKER
from agegender.data.samples import MISSING, RACES, UNDECODABLE_REASON, Samples, escaped_name, normalize_frame, \
    undecodable
from agegender.errors import DataError

__all__ = ["read_utkface"]

_LAYOUTS = ("auto", "aligned", "wild")
_CHIP = ".chip.jpg"
_MIN_AGE, _MAX_AGE = 1, 120
_EXPECTED = ("UTKFace images named age_gender_race_timestamp.jpg.chip.jpg (aligned & cropped, "
             "e.g. the extracted UTKFace/ folder) or age_gender_race_timestamp.jpg (in-the-wild "
             "part1/part2/part3 folders)")


def read_utkface(root, *, layout: str = "auto") -> Samples:
    """Read UTKFace labels from the file names under ``root`` (searched recursively).

    ``layout`` is ``"aligned"`` (``*.jpg.chip.jpg``), ``"wild"`` (``*.jpg``) or ``"auto"``.
    Raises :class:`DataError` when ``root`` does not exist, is not a folder or holds no
    UTKFace image names.
    """
    if layout not in _LAYOUTS:
        raise DataError(f"unknown UTKFace layout {layout!r}", fix=f"use one of {', '.join(_LAYOUTS)}")
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError("UTKFace folder does not exist", path=root, fix=f"point it at a folder of {_EXPECTED}")
    if not root.is_dir():
        raise DataError("UTKFace root is not a folder", path=root, fix=f"point it at a folder of {_EXPECTED}")
    root = root.resolve()
    from agegender.data.pack import is_pack, read_pack

    if is_pack(root):  # written by python -m agegender.data pack: the same rows, images re-encoded (agegender.data.pack)
        return read_pack(root, dataset="utkface")

    files, notes, unreadable = _list_files(root)
    if not files and unreadable and not any(u["reason"] == UNDECODABLE_REASON for u in unreadable):
        where = unreadable[0]["file"].rstrip("/")
        reason = unreadable[0]["reason"].split("(", 1)[1].split(")", 1)[0]  # "permission denied", ...
        raise DataError(f"UTKFace folder is not readable ({reason})", path=root if where == "." else root / where,
                        fix="make it readable for this user (chmod u+rx on the folder), or copy the data somewhere "
                            "readable")
    if not files and unreadable:  # only names that are not UTF-8
        raise DataError(f"no file name in the UTKFace folder is valid UTF-8 (e.g. {unreadable[0]['file']})", path=root,
                        fix="rename the files to their UTKFace names (age_gender_race_timestamp.jpg.chip.jpg)")
    if not files:
        raise DataError("no files found in the UTKFace folder", path=root, fix=f"point it at a folder of {_EXPECTED}")
    n_chip = sum(1 for f in files if _is_chip(f))
    n_wild = sum(1 for f in files if _is_jpg(f) and not _is_chip(f) and not _is_junk(f))
    if n_chip == 0 and n_wild == 0:
        raise DataError(f"none of the {len(files)} files is a UTKFace image name", path=root,
                        fix=f"point it at a folder of {_EXPECTED}")
    if layout == "auto":
        layout = "aligned" if n_chip >= n_wild else "wild"
        if n_chip and n_wild:
            notes.append(f"both layouts found ({n_chip} aligned & cropped names, {n_wild} in-the-wild names): "
                         f"read the {layout} layout; pass layout= to choose the other")

    rows, skipped, repaired = [], list(unreadable), []
    quiet = True if len(files) <= 10_000 else None  # None: tqdm shows a bar only on a terminal
    for rel in tqdm(files, desc="UTKFace names", unit="file", leave=False, disable=quiet):
        name = rel.rsplit("/", 1)[-1]
        parsed = _parse(name, layout)
        if isinstance(parsed, str):
            skipped.append({"file": rel, "reason": parsed})
            continue
        core, age, gender, race, fixes = parsed
        for reason in fixes:
            repaired.append({"file": rel, "reason": reason})
        rows.append({"path": str(root / rel), "file": rel, "age": float(age), "gender": gender, "race": race,
                     "group": core, "source": "utkface"})
    if not rows:
        notes.append(f"no usable {layout} UTKFace names among {len(files)} files")
    not_utf8 = sum(1 for u in unreadable if u["reason"] == UNDECODABLE_REASON)
    return Samples(source="utkface", root=str(root), frame=normalize_frame(rows), files_seen=len(files) + not_utf8,
                   skipped=skipped, repaired=repaired, notes=notes)


def _list_files(root: Path) -> tuple[list[str], list[str], list[dict]]:
    """All files under root as sorted posix paths relative to root (__MACOSX folders left out), notes,
    and ``{file, reason}`` for each folder that could not be listed."""
    files, notes, unreadable = [], [], []

    def failed(err: OSError) -> None:
        where = Path(err.filename or root)
        rel = where.relative_to(root).as_posix() if where != root and where.is_relative_to(root) else "."
        reason = "permission denied" if isinstance(err, PermissionError) else (err.strerror or str(err))
        unreadable.append({"file": rel + "/", "reason": f"folder not readable ({reason}): its images were not read"})
        if rel != ".":
            notes.append(f"folder {rel}/ is not readable ({reason}): its images were not read")

    for dirpath, dirnames, filenames in os.walk(root, onerror=failed):
        if "__MACOSX" in dirnames:
            dirnames.remove("__MACOSX")
            notes.append(f"ignored the macOS metadata folder {Path(dirpath, '__MACOSX')}")
        rel_dir = Path(dirpath).relative_to(root)
        for name in [d for d in dirnames if undecodable(d)]:  # names the OS gives as undecodable bytes
            dirnames.remove(name)
            unreadable.append({"file": escaped_name((rel_dir / name).as_posix()) + "/",
                               "reason": f"folder {UNDECODABLE_REASON}; its images were not read"})
        dirnames.sort()
        for name in filenames:
            if undecodable(name):
                unreadable.append({"file": escaped_name((rel_dir / name).as_posix()), "reason": UNDECODABLE_REASON})
                continue
            if name == SYNTH_MARKER and rel_dir == Path("."):
                notes.append(f"generated faces ({SYNTH_MARKER} marker present)")
                continue
            files.append((rel_dir / name).as_posix())
    files.sort()
    return files, notes, unreadable


def _is_jpg(name: str) -> bool:
    return name.lower().endswith("jpg")


def _is_chip(name: str) -> bool:
    return name.lower().endswith(_CHIP)


def _is_junk(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return base.startswith("._") or base.startswith(".")


def _parse(name: str, layout: str):
    """(core, age, gender, race, [repair reasons]) or a skip reason (str)."""
    lower = name.lower()
    if name.startswith("._"):
        return "macOS resource-fork file, not an image"
    if name.startswith("."):
        return f"hidden file {name!r}, not an image"
    if not lower.endswith("jpg"):
        suffix = Path(name).suffix or "(no extension)"
        return f"not a .jpg image ({suffix})"
    fixes: list[str] = []
    if lower.endswith(_CHIP):
        if layout != "aligned":
            return "aligned & cropped name (.jpg.chip.jpg) while reading the in-the-wild layout"
        base = name[: -len(_CHIP)]
        if base.lower().endswith(".jpg"):
            core = base[:-4]
        elif base.lower().endswith("jpg"):
            core = base[:-3]
            fixes.append("missing dot before 'jpg' in the name (read as '.jpg')")
        else:
            core = base
            fixes.append("no '.jpg' before '.chip.jpg' in the name")
    else:
        if layout != "wild":
            return "in-the-wild name (.jpg without .chip.jpg) while reading the aligned & cropped layout"
        if lower.endswith(".jpg"):
            core = name[:-4]
        else:
            core = name[:-3]
            fixes.append("missing dot before 'jpg' in the name (read as '.jpg')")
    if core != core.rstrip():
        core = core.rstrip()
        fixes.append("space before '.jpg' in the name (ignored)")

    fields = core.split("_")
    if len(fields) < 2:
        return "name has no age_gender fields"
    age_s, gender_s = fields[0].strip(), fields[1].strip()
    if not age_s.isdigit():
        return f"age field {fields[0]!r} is not a whole number"
    age = int(age_s)
    if not _MIN_AGE <= age <= _MAX_AGE:
        return f"age {age} outside {_MIN_AGE}-{_MAX_AGE}" + (" (non-positive)" if age <= 0 else "")
    if gender_s not in ("0", "1"):
        return f"gender field {fields[1]!r} is not 0 (male) or 1 (female)"
    gender = int(gender_s)

    rest = fields[2:]
    race = MISSING
    timestamp = None
    if rest and len(rest[0]) <= 2:  # a race field (one digit) rather than a timestamp
        race_s = rest.pop(0).strip()
        if not race_s.isdigit() or not 0 <= int(race_s) < len(RACES):
            return f"race field {race_s!r} is not 0-{len(RACES) - 1}"
        race = int(race_s)
    else:
        fixes.append("race field missing (race set to unknown, -1)")
    if rest:
        timestamp = rest.pop(0)
    if timestamp is None:
        fixes.append("timestamp field missing")
    elif not timestamp.isdigit():
        fixes.append(f"timestamp {timestamp!r} is not all digits")
    elif len(timestamp) != 17:
        fixes.append(f"timestamp has {len(timestamp)} digits instead of 17")
    if rest:
        fixes.append(f"extra fields after the timestamp ignored: {'_'.join(rest)!r}")
    return core, age, gender, race, fixes
