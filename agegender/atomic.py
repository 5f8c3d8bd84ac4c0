"""Atomic file writes: write beside the target, fsync, then rename, so a reader never sees half a file.

Files written here get the mode an ordinary ``open(path, "w")`` would give (``0o666`` less the
process umask), not the ``0o600`` of a bare :func:`tempfile.mkstemp`; folders made with
:func:`make_temp_dir` get ``0o777`` less the umask. :func:`check_writable` turns an output folder
that cannot be written into one :class:`~agegender.errors.DataError` line before any work is done.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
from pathlib import Path

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask (read by setting it and putting it back, under a lock)."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a new file gets from ``open(path, "w")``: ``0o666`` less the umask."""
    return 0o666 & ~current_umask()


def folder_mode() -> int:
    """The mode a new folder gets from ``os.mkdir``: ``0o777`` less the umask."""
    return 0o777 & ~current_umask()


def make_temp_dir(parent, prefix: str) -> Path:
    """A new empty folder beside the final one (``tempfile.mkdtemp``), with the umask's mode, not ``0o700``."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(folder, folder_mode())
    return folder


def check_writable(folder, *, flag: str = "--out", what: str = "output folder") -> Path:
    """Create ``folder`` if needed and prove a file can be made in it; else one-line :class:`DataError`.

    Called by the commands before their work starts, so a read-only output folder stops them at
    once (and not after an hour of training or a full audit).
    """
    from agegender.errors import DataError

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".agegender-write-test.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except FileExistsError:
        raise DataError(f"{what} is a file, not a folder", path=folder,
                        fix=f"choose another {flag}, or move the file away") from None
    except NotADirectoryError:
        raise DataError(f"{what} lies under a file, not a folder", path=folder, fix=f"choose another {flag}") from None
    except OSError as err:
        reason = "permission denied" if isinstance(err, PermissionError) else (err.strerror or str(err)).lower()
        raise DataError(f"{what} is not writable ({reason})", path=folder,
                        fix=f"choose another {flag}, or make the folder writable for this user (chmod u+w, a "
                            "read-write mount)") from None
    return folder


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path in the target's folder; on success it replaces ``path`` in one rename.

    The file ends with the umask's mode (``0o666 & ~umask``), as if written with ``open``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, file_mode())
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path, data) -> Path:
    """Write ``data`` as stable, indented JSON (sorted keys, trailing newline) atomically."""
    text = json.dumps(_finite(data), indent=2, sort_keys=True, default=_jsonable, allow_nan=False)
    return write_text(path, text + "\n")


def _finite(value):
    """NaN and infinities become null: JSON has no spelling for them."""
    import math

    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _jsonable(value):
    import numpy as np

    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
