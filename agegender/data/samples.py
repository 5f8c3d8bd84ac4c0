"""The sample table every reader returns, and the label vocabularies shared by all datasets.

A reader returns a :class:`Samples`: a pandas frame with one row per usable image and the
report of what was skipped or repaired on the way. Columns (always present):

==========  ======  =================================================================
path        str     absolute path of the image (it may not exist: see ``Samples.missing``)
file        str     path relative to the dataset root, as the native label files name it
age         float   age in years; NaN when unknown (Adience gives only groups)
age_group   int     Adience 8-group index (``ADIENCE_AGE_GROUPS``); -1 when not applicable
gender      int     0 male, 1 female; -1 unknown
race        int     UTKFace order (``RACES``); -1 unknown
group       str     subject / user / identity id used for subject-exclusive splits
source      str     dataset name: utkface, adience, celeba, imdb_wiki
==========  ======  =================================================================

Readers may add columns (``fold`` for Adience, CelebA attributes by name, ``face_score``
for IMDB-WIKI, ``partition`` where the dataset ships an official split).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd

MISSING = -1
GENDERS = ("male", "female")
RACES = ("white", "black", "asian", "indian", "others")
ADIENCE_AGE_GROUPS = ("(0, 2)", "(4, 6)", "(8, 12)", "(15, 20)", "(25, 32)", "(38, 43)", "(48, 53)", "(60, 100)")
COLUMNS = ("path", "file", "age", "age_group", "gender", "race", "group", "source")
DTYPES = {"path": object, "file": object, "age": "float64", "age_group": "int64", "gender": "int64",
          "race": "int64", "group": object, "source": object}


def empty_frame(extra: dict[str, Any] | None = None) -> pd.DataFrame:
    """An empty sample frame with the standard columns (and ``extra`` name -> dtype)."""
    dtypes = dict(DTYPES, **(extra or {}))
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in dtypes.items()})


def normalize_frame(rows: list[dict] | pd.DataFrame) -> pd.DataFrame:
    """Build a frame from row dicts, fill absent standard columns with 'missing', fix dtypes."""
    frame = pd.DataFrame(rows) if not isinstance(rows, pd.DataFrame) else rows.copy()
    if frame.empty and not len(frame.columns):
        return empty_frame()
    defaults = {"age": np.nan, "age_group": MISSING, "gender": MISSING, "race": MISSING, "group": "", "file": ""}
    for column in COLUMNS:
        if column not in frame.columns:
            frame[column] = defaults.get(column, "")
    for column in ("age_group", "gender", "race"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").fillna(MISSING).astype("int64")
    frame["age"] = pd.to_numeric(frame["age"], errors="coerce").astype("float64")
    for column in ("path", "file", "group", "source"):
        frame[column] = frame[column].astype(str).astype(object)
    ordered = list(COLUMNS) + [c for c in frame.columns if c not in COLUMNS]
    return frame[ordered].reset_index(drop=True)


@dataclasses.dataclass
class Samples:
    """What a reader returns: the usable samples and an account of everything else.

    ``skipped`` and ``repaired`` are lists of ``{"file": ..., "reason": ...}``; ``duplicate_rows``
    lists label rows that occur more than once (Adience); ``missing`` lists label rows whose image
    file is absent (reading labels works without images; the audit says so); ``notes`` are
    free-text remarks the audit prints.
    """

    source: str
    root: str
    frame: pd.DataFrame
    files_seen: int
    skipped: list[dict] = dataclasses.field(default_factory=list)
    repaired: list[dict] = dataclasses.field(default_factory=list)
    duplicate_rows: list[dict] = dataclasses.field(default_factory=list)
    missing: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)

    def __len__(self) -> int:
        return len(self.frame)

    def task_samples(self, tasks=("age", "gender", "race")) -> dict[str, int]:
        """Usable samples per task and per task combination ("age+gender", ...)."""
        import itertools

        has = {t: self.has_label(t) for t in tasks}
        counts: dict[str, int] = {}
        for k in range(1, len(tasks) + 1):
            for combo in itertools.combinations(tasks, k):
                mask = np.logical_and.reduce([has[t] for t in combo])
                counts["+".join(combo)] = int(mask.sum())
        return counts

    def has_label(self, task: str) -> np.ndarray:
        """Boolean mask of rows that carry a label for ``task`` (age counts years or an Adience group)."""
        f = self.frame
        if task == "age":
            return (f["age"].notna() | (f["age_group"] >= 0)).to_numpy()
        if task in ("gender", "race", "age_group"):
            return (f[task] >= 0).to_numpy()
        if task in f.columns:
            return f[task].notna().to_numpy()
        raise KeyError(f"unknown task {task!r}; known: age, gender, race, age_group or a column of the frame")


def unsafe_path(rel: str) -> str | None:
    """Why ``rel``, a path read from a label or split file, must not be joined to the data folder (or None).

    Such a path is only ever used *below* the dataset root: an absolute path (``/etc/passwd``,
    ``C:\\...``), a ``..`` component or a NUL byte would reach outside it, so the row is
    skipped with this reason instead.
    """
    import re
    from pathlib import PurePosixPath

    text = str(rel)
    if not text.strip():
        return "empty path"
    if "\x00" in text:
        return f"path {text!r} contains a NUL byte"
    posix = text.replace("\\", "/")
    if posix.startswith("/") or re.match(r"^[A-Za-z]:", posix) or text.startswith("~"):
        return f"absolute path {text!r} (paths must stay inside the data folder)"
    if ".." in PurePosixPath(posix).parts:
        return f"path {text!r} leaves the data folder ('..')"
    return None


def undecodable(name: str) -> bool:
    """True when ``name`` (a file name as ``os`` returns it) is not valid UTF-8 on disk.

    Python hands such names over with each bad byte as a lone surrogate (``surrogateescape``);
    they cannot be written to a UTF-8 CSV, JSON or console, nor given to TensorFlow.
    """
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def escaped_name(name) -> str:
    """A file name (str or bytes) shown with its undecodable bytes escaped: ``25_0_1_2017\\xff\\xfe....jpg``."""
    import os

    raw = name if isinstance(name, bytes) else os.fsencode(name)
    return raw.decode("utf-8", "backslashreplace")


UNDECODABLE_REASON = ("file name is not valid UTF-8 (shown with its bad bytes escaped): it cannot be read as a label "
                      "or written to a record; rename the file")
