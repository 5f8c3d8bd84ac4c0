"""Where a run's data came from, for its record and the tables.

Kind: ``real``, ``sample`` or ``generated`` (:func:`data_kind`). ``generated``: the root holds
the marker ``agegender-synth.json`` that ``agegender.data.synth`` writes. ``sample``: real
files, but fewer than ``sample_below`` of the full dataset's (e.g. the 5,000-face UTKFace sample
of the ~23,700). ``real`` otherwise.

Name (:func:`describe_data`): a committed run record must compare between machines, so it never
holds an absolute path. The data is named by its dataset, a path relative to a *data root* and a
**fingerprint** (file count, bytes and a SHA-256 over the sorted relative names and sizes of the
files). Two users with the same UTKFace folder get the same fingerprint wherever it lies on
their disks. The data root is ``$AGEGENDER_DATA_ROOT`` when set, else ``$AGEGENDER_SHARED_DATA``
or ``../shared/data`` next to the project when the data lies there, else the folder holding the
dataset folder (its name alone is then recorded).
"""

from __future__ import annotations

import hashlib
import os
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


PROJECT_ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


def data_roots() -> list[Path]:
    """The folders a dataset path is named relative to, most specific first."""
    roots = []
    if os.environ.get("AGEGENDER_DATA_ROOT"):
        roots.append(Path(os.environ["AGEGENDER_DATA_ROOT"]))
    if os.environ.get("AGEGENDER_SHARED_DATA"):
        roots.append(Path(os.environ["AGEGENDER_SHARED_DATA"]))
    roots.append(SHARED_DATA)
    return roots


def relative_data_path(path) -> str:
    """``path`` relative to the first data root that holds it, else its own name (never absolute)."""
    path = Path(path).resolve()
    for root in data_roots():
        try:
            return path.relative_to(root.resolve()).as_posix() or "."
        except (ValueError, OSError):
            continue
    return path.name


def fingerprint_files(path) -> dict:
    """``{files, bytes, sha256}`` over every regular file under ``path`` (a folder or one file).

    The hash covers each file's path relative to ``path`` and its size, sorted, so it names the
    same data on any machine and changes when a file is added, removed, renamed or resized. Names
    the OS gives as undecodable bytes are hashed as bytes.
    """
    path = Path(path)
    entries = []
    if path.is_file():
        entries.append((os.fsencode(path.name), path.stat().st_size))
    else:
        base = os.fsencode(str(path))
        for folder, dirs, files in os.walk(base):
            dirs.sort()
            for name in files:
                full = os.path.join(folder, name)
                try:
                    st = os.stat(full)
                except OSError:
                    continue
                if not os.path.isfile(full):
                    continue
                entries.append((os.path.relpath(full, base), st.st_size))
    entries.sort()
    digest = hashlib.sha256()
    for name, size in entries:
        digest.update(name + b"\0" + str(size).encode() + b"\n")
    return {"files": len(entries), "bytes": int(sum(s for _, s in entries)), "sha256": digest.hexdigest()[:16]}


def describe_data(dataset: str, path, *, fingerprint: bool = True, **extra) -> dict:
    """The machine-independent description of a dataset folder (or label file) for a run record."""
    info = {"dataset": dataset, "path": relative_data_path(path)}
    if fingerprint and Path(path).exists():
        info["fingerprint"] = fingerprint_files(path)
    info.update(extra)
    return info
