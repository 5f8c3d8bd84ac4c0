"""What kind of data a run used, for its record and the tables: ``real``, ``sample`` or ``generated``.

``generated``: the root holds the marker ``agegender-synth.json`` that ``agegender.data.synth``
writes. ``sample``: real files, but fewer than ``sample_below`` of the full dataset's (e.g. the
5,000-face UTKFace sample of the ~23,700). ``real`` otherwise.
"""

from __future__ import annotations

from pathlib import Path

SYNTH_MARKER = "agegender-synth.json"
FULL_SIZES = {"utkface": 23_708, "adience": 19_487, "celeba": 202_599, "imdb_wiki": 460_723}


def data_kind(root, dataset: str, n_files: int, *, sample_below: float = 0.9) -> str:
    """``generated`` if ``root`` (or a parent up to two levels) carries the synth marker, else
    ``sample`` when ``n_files`` is under ``sample_below`` of the dataset's full size, else ``real``."""
    root = Path(root).resolve()
    for folder in (root, *list(root.parents)[:2]):
        if (folder / SYNTH_MARKER).is_file():
            return "generated"
    full = FULL_SIZES.get(dataset)
    if full and n_files < sample_below * full:
        return "sample"
    return "real"
