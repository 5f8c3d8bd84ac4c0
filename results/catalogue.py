"""The published-figures catalogue: every number the five papers print, as data.

One CSV per paper in ``results/published/`` (``speziali.csv``, ``jorgensen.csv``,
``gu_yang.csv``, ``dey_aggarwal.csv``, ``sundriyal.csv``) is the single place the
papers' published figures live; generated tables join reproduced numbers to them on
``(paper, table, row, column)``.

File format
-----------
UTF-8 CSV with the header, exactly::

    paper,table,row,column,value,unit,note

``paper``
    the file's key (the file name without ``.csv``); see :data:`PAPERS`.
``table``
    the paper's own name for where the number is printed: ``Table 4.6``, ``Figure 4``.
    Numbers printed in running text use the section they appear in (``Section 3.4``,
    ``Section III-A``). Speziali's tables are unnumbered: they are named by their
    top-left header cell (``Time (sec)``, ``Num. of epochs``, ``Test Metrics`` ...).
    Gu & Yang's stated conclusions are table ``Claims``.
``row``, ``column``
    the labels as printed, whitespace normalised. Repeated layer rows are numbered
    (``Convolution 1``); compound cells are split into components with a suffix
    (``7 × 7 × 3`` becomes ``Size of Each Filter height/width/depth``; ``84.8 ± 1.1``
    becomes ``Gender accuracy`` and ``Gender accuracy std``); a printed range
    ``45-90`` becomes two columns ending ``min`` and ``max``.
``value``
    the number as printed, ``%`` stripped (thousands separators ``,`` or a space are
    kept, e.g. ``7 192 065``; powers of ten are written ``3e-5`` with the printed
    form in ``note``), or one of three markers:

    - ``not published``: a cell the paper leaves blank, ``-`` or ``*``;
    - ``figure only``: a result shown only in a figure, with no number printed;
    - ``stated``: a qualitative claim (table ``Claims``), quoted in ``note``.
``unit``
    one of :data:`UNITS`:

    =================  ==========================================================
    ``accuracy``       fraction 0-1
    ``percent``        0-100 (accuracies printed in %, shares, percentage points)
    ``mae-years``      mean absolute error of age, in years
    ``mae-normalised`` mean absolute error of age / max age (Dey & Aggarwal)
    ``r2``             coefficient of determination
    ``loss``           a loss value as printed
    ``p-value``        a test's p-value
    ``years``          an age or age bound
    ``calendar-year``  a publication year
    ``seconds``, ``minutes``, ``hours``   durations
    ``epochs``         an epoch count (training length, patience, convergence)
    ``params``         a parameter count
    ``count``          any other count: images, classes, filters, units, channels
    ``pixels``         an image, kernel, window or stride size
    ``degrees``        an angle (augmentation rotation)
    ``scalar``         a dimensionless hyperparameter (learning rate, rate, weight)
    =================  ==========================================================
``note``
    what the reader needs: printed forms, errata, reproductions/*/README.md decisions, uncertain
    reconstructions. Empty otherwise.
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import pandas as pd

from agegender.errors import DataError

__all__ = ["COVERAGE", "HEADER", "MARKERS", "PAPERS", "UNITS", "classify_unreproduced", "compare", "load_published",
           "printed_tolerance"]

HEADER = ("paper", "table", "row", "column", "value", "unit", "note")
MARKERS = ("not published", "figure only", "stated")
UNITS = frozenset({
    "accuracy", "percent", "mae-years", "mae-normalised", "r2", "loss", "p-value",
    "years", "calendar-year", "seconds", "minutes", "hours", "epochs", "params",
    "count", "pixels", "degrees", "scalar",
})

PAPERS: dict[str, dict[str, str]] = {
    "speziali": {
        "file": "000_e4db9ea1b3cff842.txt",
        "title": "A Comparative Analysis: Dual-Task CNN vs. Single-Task CNNs for Gender "
                 "and Age Prediction in Facial Images",
        "authors": "Paolo Speziali",
        "reproduction": "utkface_dual_cnn",
    },
    "jorgensen": {
        "file": "001_7c2710ba0c71b2bf.txt",
        "title": "Gender and Age Classification using Multi-task Learning with "
                 "Convolutional Neural Networks",
        "authors": "Kasper Jørgensen, Mads Ringsted, Tejas Rajagopal",
        "reproduction": "adience_levi",
    },
    "gu_yang": {
        "file": "002_c95946df6a3a37d2.txt",
        "title": "Multi-Task Learning Based Age Detection for Image",
        "authors": "Xinli Gu, Xi Yang",
        "reproduction": "efficientnet_age_groups",
    },
    "dey_aggarwal": {
        "file": "003_5bef84f3e3da6d65.txt",
        "title": "Ethnicity, Age and Gender Recognition using Multi-Task Learning",
        "authors": "Soumyo Dey, Kartik Aggarwal",
        "reproduction": "utkface_xception",
    },
    "sundriyal": {
        "file": "004_e36f2c94204fb6ab.txt",
        "title": "Simultaneous Detection of Face Attributes via Multi-Task Learning",
        "authors": "Himanshu Sundriyal",
        "reproduction": "mtl_weighted_loss",
    },
}

_DEFAULT_ROOT = Path(__file__).resolve().parent / "published"
_GROUPED = re.compile(r"[+-]?\d{1,3}(?:(?P<sep>[, \u00a0\u2009\u202f])\d{3})(?:(?P=sep)\d{3})*(?:\.\d+)?")
_PLAIN = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def _parse_value(text: str) -> float | None:
    """The float a printed number stands for; NaN for a marker; None if unparseable."""
    if text in MARKERS:
        return math.nan
    if _PLAIN.fullmatch(text):
        return float(text)
    if _GROUPED.fullmatch(text):
        return float(re.sub(r"[, \u00a0\u2009\u202f]", "", text))
    return None


def _read_file(key: str, path: Path) -> list[dict]:
    fix_header = "the first line must be exactly: " + ",".join(HEADER)
    if not path.is_file():
        raise DataError("published-figures file not found", path=path,
                        fix=f"restore results/published/{key}.csv from version control")
    records: list[dict] = []
    seen: dict[tuple[str, str, str, str], int] = {}
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != HEADER:
            raise DataError(f"line 1: bad header {header!r}", path=path, fix=fix_header)
        for fields in reader:
            line = reader.line_num
            if not fields or all(not f.strip() for f in fields):
                continue
            if len(fields) != len(HEADER):
                raise DataError(f"line {line}: {len(fields)} fields, expected {len(HEADER)}", path=path,
                                fix="quote any field that contains a comma")
            rec = dict(zip(HEADER, (" ".join(f.split()) for f in fields)))
            rec["note"] = fields[6].strip()
            for name in ("paper", "table", "row", "column", "value", "unit"):
                if not rec[name]:
                    raise DataError(f"line {line}: empty {name!r}", path=path,
                                    fix=f"fill in {name}; use 'not published' for a blank cell")
            if rec["paper"] != key:
                raise DataError(f"line {line}: paper {rec['paper']!r} does not match the file's key {key!r}",
                                path=path, fix=f"set the paper column to {key!r}")
            if rec["unit"] not in UNITS:
                raise DataError(f"line {line}: unknown unit {rec['unit']!r}", path=path,
                                fix="use one of " + ", ".join(sorted(UNITS)))
            num = _parse_value(rec["value"])
            if num is None:
                raise DataError(f"line {line}: value {rec['value']!r} is not a number", path=path,
                                fix="write a number (thousands separators allowed) or one of: "
                                    + ", ".join(repr(m) for m in MARKERS))
            if math.isinf(num):
                raise DataError(f"line {line}: value {rec['value']!r} is not finite", path=path)
            k = (rec["paper"], rec["table"], rec["row"], rec["column"])
            if k in seen:
                raise DataError(f"line {line}: duplicate key {k!r} (first on line {seen[k]})", path=path,
                                fix="give each (table, row, column) one line")
            seen[k] = line
            rec["value_num"] = num
            records.append(rec)
    return records


def load_published(paper: str | None = None, root: str | Path | None = None) -> pd.DataFrame:
    """The published figures of one paper (a :data:`PAPERS` key) or, with ``None``, all five.

    Reads ``<root>/<key>.csv`` (default root: ``results/published`` beside this module)
    and validates it as described in the module docstring. Returns columns
    ``paper, table, row, column, value, value_num, unit, note`` in file order; ``value``
    is the printed string, ``value_num`` its float (NaN for the three markers).

    Raises :class:`agegender.errors.DataError` naming the file and line for any
    violation, and for an unknown ``paper`` key.
    """
    base = _DEFAULT_ROOT if root is None else Path(root)
    if paper is None:
        keys = list(PAPERS)
    elif paper in PAPERS:
        keys = [paper]
    else:
        raise DataError(f"unknown paper {paper!r}", path=base,
                        fix="use one of " + ", ".join(PAPERS))
    records: list[dict] = []
    for key in keys:
        records.extend(_read_file(key, base / f"{key}.csv"))
    columns = ["paper", "table", "row", "column", "value", "value_num", "unit", "note"]
    frame = pd.DataFrame.from_records(records, columns=columns)
    frame["value_num"] = frame["value_num"].astype(float)
    for name in ("paper", "table", "row", "column", "value", "unit", "note"):
        frame[name] = frame[name].astype(str)
    return frame


# ---------------------------------------------------------------------------------------------
# comparing a reproduced value with the printed one, and what a cell needs when not reproduced


def printed_tolerance(text: str) -> float | None:
    """Half a unit of the last printed digit of ``text`` (``0.38`` -> 0.005, ``23,708`` -> 0.5,
    ``1e-7`` -> 5e-8); None for a marker or an unparseable value."""
    from decimal import Decimal, InvalidOperation

    if text in MARKERS or _parse_value(text) is None:
        return None
    plain = re.sub(r"[, \u00a0\u2009\u202f]", "", text) if _GROUPED.fullmatch(text) else text
    try:
        exponent = Decimal(plain).as_tuple().exponent
    except InvalidOperation:
        return None
    return 0.5 * 10.0 ** int(exponent)


def compare(value: float, printed: str) -> str | None:
    """``"exact"`` when ``value`` equals the printed number at its printed precision, else ``"differs"``.

    A printed integer (a count, a parameter total) must be matched exactly; a printed decimal
    within half a unit of its last digit (``0.38`` matches 0.375 ... 0.385). The reproduced value
    is computed first, without the printed number; this only judges it. None for a marker
    (``not published``, ``figure only``, ``stated``): there is no printed number to compare.
    """
    tolerance = printed_tolerance(printed)
    if tolerance is None or value is None or not math.isfinite(float(value)):
        return None
    target = _parse_value(printed)
    return "exact" if abs(float(value) - target) <= tolerance * (1 + 1e-9) else "differs"


#: What a published cell needs when no run reproduces it (README summary). ``training``: the
#: sentence saying whether the paper's training can run on this machine (``training_here``);
#: ``rules``: ``(bucket, table, row, column, why)`` with fnmatch patterns, first match wins.
#: Buckets: ``cited`` (another work's figure, nothing to reproduce), ``not here`` (cannot be
#: computed on this machine, or at all), ``training`` (needs a training run). A cell no rule
#: matches needs a training run.
COVERAGE: dict[str, dict] = {
    "speziali": {
        "training_here": True,
        "training": "training runs here: the real UTKFace images are in ../shared/data (hours per seed on 2 CPU "
                    "cores in bfloat16, measured in results/speziali.md; minutes on a GPU)",
        "rules": [],
    },
    "jorgensen": {
        "training_here": False,
        "training": "no Adience images here (only the fold files and Levi & Hassner's lists), no ImageNet "
                    "Xception weights offline",
        "rules": [
            ("cited", "Table 3", "Baseline", "*", "Levi & Hassner's own results [1]"),
            ("cited", "Section 5.1", "Baseline (Levi & Hassner)", "*", "Levi & Hassner's training time [1]"),
            ("not here", "Table 1", "Max pooling *", "Number of Filters",
             "a pooling layer has no filters: the printed 1 has nothing in a model to be read from"),
        ],
    },
    "gu_yang": {
        "training_here": False,
        "training": "no IMDB-WIKI images here (only the WIKI label file), no ImageNet EfficientNet weights "
                    "offline",
        "rules": [],
    },
    "dey_aggarwal": {
        "training_here": False,
        "training": "the paper's backbones start from ImageNet weights, which are not offline here (the UTKFace "
                    "images are: a from-scratch run is possible but is not the paper's setting)",
        "rules": [],
    },
    "sundriyal": {
        "training_here": False,
        "training": "no VGGFace2 / LightCNN / SphereFace / FaceNet weights offline, no CelebA images here",
        "rules": [
            ("cited", "Table 2.1", "*", "*", "publication years of related work"),
            ("cited", "Table 2.2", "*", "*", "publication years of related work"),
            ("cited", "Section 4.4.4", "*", "*", "Mao et al.'s result [12]"),
            ("training", "*", "Ours*", "*", ""),  # the thesis's own model in the comparisons below
            ("cited", "Table 4.16", "*", "*", "results of other methods, from CORAL [1]"),
            ("cited", "Figure 4.7", "*", "*", "results of other methods"),
            ("cited", "Figure 4.8", "*", "*", "results of other methods"),
            ("not here", "Table 4.2", "*", "*",
             "the CelebA attribute file here is truncated (20,000 of 202,599 rows): the training-partition "
             "counts cannot be made"),
            ("not here", "Table 4.5", "*", "*",
             "LightCNN, SphereFace and Inception-ResNet are not implemented here (no Keras build or weights)"),
        ],
    },
}


def classify_unreproduced(paper: str, table: str, row: str, column: str) -> tuple[str, str]:
    """``(bucket, why)`` for a published cell no run reproduces: ``cited``, ``not here`` or ``training``.

    ``training`` cells are runnable here when :data:`COVERAGE` says so for the paper; the caller
    reads ``COVERAGE[paper]["training_here"]``.
    """
    from fnmatch import fnmatchcase

    meta = COVERAGE.get(paper, {"rules": [], "training": ""})
    for bucket, t, r, c, why in meta["rules"]:
        if fnmatchcase(table, t) and fnmatchcase(row, r) and fnmatchcase(column, c):
            return bucket, why or meta.get("training", "")
    return "training", meta.get("training", "")
