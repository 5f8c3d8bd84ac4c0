"""Run records: one folder per training run, written atomically, read back by ``python -m results``.

A run folder ``<out>/<reproduction>/<experiment>/<run_id>/`` holds

- ``record.json``: reproduction, experiment, paper, config, seed, git commit, package versions,
  device, ``backend`` (the Keras backend it trained on: ``tensorflow``, ``jax`` ...), wall time,
  ``history`` (one entry per epoch), ``metrics`` per split, ``data`` (kind:
  ``real`` / ``sample`` / ``generated``, or ``none`` for figures read off a model build such as
  parameter counts; dataset, root, counts), and ``cells``: the paper-table
  cells this run reproduces (``{paper, table, row, column, value, unit}``), which is all the
  table generator reads; ``preprocessing``: how a face becomes the model's input and its outputs
  become labels (:class:`agegender.preprocess.Preprocessing`), which ``python -m agegender
  predict`` and ``export`` need;
- ``split.csv``: the split manifest (file, split, labels);
- ``history.csv``: the per-epoch history, rewritten at each epoch end;
- ``model.keras``: the best model (written by the trainer's checkpoint);
- ``train_state/``: the training state at the last completed epoch (weights and optimizer,
  early-stopping and checkpoint state, history), written by :func:`agegender.training.train`
  and removed when the run completes.

- ``run.lock``: present while a process trains the run (below).

``status`` is ``running`` until :meth:`RunRecorder.finish` writes ``complete`` (or
:meth:`RunRecorder.fail` writes ``failed``, with the reason). Every file is written atomically
(temporary file, then rename), so a reader never sees half a record.

Resuming
--------
``RunRecorder(..., resume=True)`` picks up the run of an earlier, identical command instead
of starting a new one. Identical means the same **fingerprint**: a hash of reproduction,
experiment, config, seed and data description (see :func:`fingerprint`; settings that do not
change the result, such as ``--fresh`` or the output folder, must stay out of ``config``).

- Without ``run_id``, the newest run folder of that experiment with the same fingerprint and
  status ``running`` or ``complete`` is reused (:func:`find_run`); none: a new timestamped
  run id. With ``run_id``, that folder is reused when its record has the same fingerprint.
- A reused ``running`` record keeps its history; :func:`agegender.training.train` then
  restores ``train_state/`` and continues after the last completed epoch, and writes
  ``resumed_from_epoch`` into the record.
- A reused ``complete`` record (:attr:`RunRecorder.complete` is true) means there is nothing
  to train: the caller reads the record (and ``model.keras``) instead. Finishing it again
  rewrites it in place, so rerunning a finished command never duplicates a table cell.
- A ``failed`` record (a diverged loss) is never reused: the same command starts afresh.
- ``resume=False`` (a command's ``--fresh``) always starts a new run.

Run lock
--------
While a process trains a run, it holds ``run.lock`` in the run folder (an exclusive ``flock`` on
the file, which names the process: pid, host, start time and command). A second process that
would train the same folder (the same command with the same ``--out``) stops with one line naming
the first process. The kernel drops the lock when its process dies, however it dies, so the lock
of a killed run (``kill -9``, a power cut) is stale: the next process takes it over and says so.
The lock is released (the file removed) when the run finishes or fails, or the process exits.
:func:`lock_holder` says whether a ``running`` record is being trained now or was interrupted.

A reproduction that writes several records per command (networks, folds) shares one run id
between them by looking up the first with :func:`find_run` and passing ``run_id=`` to the
others; cross-validation gets "resume at the first fold without a complete record" for free,
since every complete fold record is found and skipped.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from agegender import atomic

DATA_KINDS = ("real", "sample", "generated", "none")  # none: a model build, no data read
LOCK_FILE = "run.lock"  # inside a run folder while a process trains it (RunLock)
DEFAULT_RUNS_DIR = Path(__file__).resolve().parents[1] / "results" / "runs"
STATE_DIR = "train_state"  # inside a run folder: the resumable training state
RESUMABLE = ("running", "complete")  # statuses a rerun of the same command picks up


def fingerprint(reproduction: str, experiment: str, config: dict, seed: int, data: dict) -> str:
    """Stable hash of what determines a run's result: equal for a rerun of the same command."""
    payload = {"reproduction": reproduction, "experiment": experiment, "config": config, "seed": seed,
               "data": data}
    text = json.dumps(atomic._finite(payload), sort_keys=True, default=atomic._jsonable)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def read_record(path) -> dict | None:
    """A ``record.json`` as a dict, or None when it is absent, unreadable or not a JSON object."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None


def find_run(runs_dir, reproduction: str, experiment: str, fingerprint_: str,
             statuses=RESUMABLE) -> str | None:
    """Run id of the newest run of ``experiment`` with fingerprint ``fingerprint_`` and a status in ``statuses``."""
    folder = Path(runs_dir or DEFAULT_RUNS_DIR) / reproduction / experiment
    if not folder.is_dir():
        return None
    found = []
    for path in folder.glob("*/record.json"):
        record = read_record(path)
        if record and record.get("fingerprint") == fingerprint_ and record.get("status") in statuses:
            found.append((str(record.get("started_utc", "")), path.parent.name))
    return max(found)[1] if found else None


class RunRecorder:
    """Creates a run folder and writes its record; ``finish`` marks it complete.

    ``run_id``: use this folder name (an earlier record there is overwritten unless ``resume``
    picks it up). ``resume``: pick up the run of the same command (module docstring).
    ``new_run_id``: the folder name for a new run when ``run_id`` is not given (default
    ``<UTC timestamp>-s<seed>``; a suffix ``-2``, ``-3`` ... keeps it unique).
    """

    def __init__(self, reproduction: str, experiment: str, *, config: dict, seed: int, data: dict,
                 paper: str | None = None, out: str | Path | None = None, run_id: str | None = None,
                 resume: bool = False, new_run_id: str | None = None, preprocessing=None,
                 deviations: dict | None = None):
        if data.get("kind") not in DATA_KINDS:
            raise ValueError(f"data['kind'] must be one of {DATA_KINDS}, got {data.get('kind')!r}")
        self.started = time.time()
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        runs_dir = Path(out or DEFAULT_RUNS_DIR)
        self.fingerprint = fingerprint(reproduction, experiment, config, seed, data)
        if resume and run_id is None:
            run_id = find_run(runs_dir, reproduction, experiment, self.fingerprint)
        if run_id is None:  # a new run: ``new_run_id`` or a timestamped id, never one that exists already
            base = new_run_id or f"{stamp}-s{seed}"
            run_id, n = base, 1
            while (runs_dir / reproduction / experiment / run_id).exists():
                n += 1
                run_id = f"{base}-{n}"
        self.run_id = run_id
        self.run_dir = runs_dir / reproduction / experiment / self.run_id
        earlier = read_record(self.record_path) if resume else None
        self.lock = None
        if not (resume and earlier and earlier.get("fingerprint") == self.fingerprint
                and earlier.get("status") == "complete"):  # a run to train (a complete one is only read back)
            self.lock = RunLock(self.run_dir)
            self.lock.acquire()
            if resume:
                earlier = read_record(self.record_path)  # as it is now that this process holds the lock
        #: True when an earlier record of the same command was picked up (``resume=True``)
        self.resumed = bool(earlier and earlier.get("fingerprint") == self.fingerprint
                            and earlier.get("status") in RESUMABLE)
        if preprocessing is not None and hasattr(preprocessing, "to_dict"):
            preprocessing = preprocessing.to_dict()  # an agegender.preprocess.Preprocessing
        if self.resumed:
            self.record = earlier
            if preprocessing is not None and not earlier.get("preprocessing"):
                self.record["preprocessing"] = preprocessing
                self.save()
            self._active_before = float(earlier.get("active_s") or 0.0)
            self._clock = earlier["status"] == "running"  # a complete run's times stay as they were
            if self._clock:
                self.record["resumes"] = int(earlier.get("resumes") or 0) + 1
                self.save()
            return
        # a new run (or a folder reused with another configuration): no stale training state
        shutil.rmtree(self.state_dir, ignore_errors=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._active_before, self._clock = 0.0, True
        self.record = {
            "schema": 1,
            "reproduction": reproduction,
            "experiment": experiment,
            "paper": paper,
            "run_id": self.run_id,
            "fingerprint": self.fingerprint,
            "status": "running",
            "config": config,
            "seed": seed,
            "data": data,
            "git": git_state(),
            "versions": package_versions(),
            "device": (device := device_facts()),
            "backend": (device.get("backend") or {}).get("name"),  # the Keras backend it trained on
            "started_utc": stamp,
            "resumed_from_epoch": None,
            "preprocessing": preprocessing,
            "deviations": dict(deviations or {}),
            "history": [],
            "metrics": {},
            "cells": [],
        }
        self.save()

    @property
    def complete(self) -> bool:
        """True when this is an earlier run of the same command that already finished."""
        return self.record.get("status") == "complete"

    @property
    def state_dir(self) -> Path:
        """Where :func:`agegender.training.train` keeps the resumable training state."""
        return self.run_dir / STATE_DIR

    @property
    def record_path(self) -> Path:
        return self.run_dir / "record.json"

    @property
    def model_path(self) -> Path:
        return self.run_dir / "model.keras"

    def save(self) -> None:
        if self._clock:  # seconds this run has been active, summed over the processes of a resumed run
            self.record["active_s"] = round(self._active_before + time.time() - self.started, 2)
        atomic.write_json(self.record_path, self.record)

    def truncate_history(self, last_epoch: int) -> None:
        """Drop history entries after ``last_epoch`` (a resumed run redoes those epochs)."""
        self.record["history"] = [h for h in self.record["history"] if h["epoch"] <= last_epoch]
        self._write_history()

    def log_epoch(self, epoch: int, logs: dict) -> None:
        """Record one epoch (replacing an earlier entry for the same epoch) and rewrite history.csv."""
        entry = {"epoch": int(epoch), **{k: float(v) for k, v in logs.items()}}
        history = [h for h in self.record["history"] if h["epoch"] != entry["epoch"]] + [entry]
        self.record["history"] = sorted(history, key=lambda h: h["epoch"])
        self._write_history()

    def _write_history(self) -> None:
        keys = sorted({k for h in self.record["history"] for k in h} - {"epoch"})
        lines = [",".join(["epoch", *keys])]
        lines += [",".join([str(h["epoch"]), *(repr(h[k]) if k in h else "" for k in keys)]) for h in self.record["history"]]
        atomic.write_text(self.run_dir / "history.csv", "\n".join(lines) + "\n")
        self.save()

    def fail(self, reason: str) -> Path:
        """Mark the run ``failed`` with ``reason`` (tables skip it; the same command starts afresh)."""
        self.record["status"] = "failed"
        self.record["failure"] = reason
        self.record["finished_utc"] = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        self.save()
        self.release()
        return self.record_path

    def release(self) -> None:
        """Give up the run lock (done by :meth:`finish`, :meth:`fail` and at process exit)."""
        if self.lock is not None:
            self.lock.release()

    def keras_callback(self):
        """A Keras callback that calls :meth:`log_epoch` at each epoch end (epochs numbered from 1)."""
        import keras

        recorder = self

        class _History(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                recorder.log_epoch(epoch + 1, logs or {})

        return _History()

    def finish(self, metrics: dict, cells: list[dict], **extra) -> Path:
        """Write the final metrics and reproduced cells; mark the run complete."""
        for cell in cells:
            missing = {"table", "row", "column", "value"} - set(cell)
            if missing:
                raise ValueError(f"cell {cell} lacks {sorted(missing)}")
            cell.setdefault("paper", self.record["paper"])
            cell.setdefault("unit", "")
        self.record.update(extra)
        self.record["metrics"] = metrics
        self.record["cells"] = cells
        if self._clock:
            self.record["wall_time_s"] = round(self._active_before + time.time() - self.started, 2)
            self.record["finished_utc"] = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        self.record["status"] = "complete"
        self.save()
        shutil.rmtree(self.state_dir, ignore_errors=True)  # the record is complete: nothing left to resume
        self.release()
        return self.record_path


class RunLock:
    """The ``run.lock`` of a run folder (module docstring, "Run lock"): an exclusive ``flock``.

    :meth:`acquire` raises a one-line :class:`~agegender.errors.DataError` naming the process that
    holds it; a lock file left by a dead process is taken over (``taken_over`` holds what it said,
    and a note is printed). Re-entrant within a process: a second ``RunLock`` on the same folder
    shares the first one's hold.
    """

    _held: dict = {}  # resolved lock path -> [fd, count], the locks this process holds

    def __init__(self, run_dir, *, log=None):
        self.path = Path(run_dir) / LOCK_FILE
        self.taken_over: dict | None = None
        self._key: str | None = None
        self._log = log or (lambda line: print(line, file=sys.stderr, flush=True))

    def acquire(self, *, attempts: int = 10, wait_s: float = 0.2) -> "RunLock":
        import fcntl

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            from agegender.errors import DataError

            reason = "permission denied" if isinstance(err, PermissionError) else (err.strerror or str(err))
            raise DataError(f"the run folder cannot be created ({reason})", path=self.path.parent,
                            fix="choose another --out, or make the output folder writable for this user") from None
        key = str(self.path.parent.resolve() / LOCK_FILE)
        if key in RunLock._held:  # this process holds it already
            RunLock._held[key][1] += 1
            self._key = key
            return self
        for attempt in range(attempts):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, atomic.file_mode())
            except OSError as err:
                from agegender.errors import DataError

                reason = "permission denied" if isinstance(err, PermissionError) else (err.strerror or str(err))
                raise DataError(f"the run folder cannot be written ({reason})", path=self.path.parent,
                                fix="choose another --out, or make the output folder writable for this user") \
                    from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_lock(fd)
                os.close(fd)
                if attempt + 1 < attempts:  # a probe (lock_holder) holds it for an instant: look again
                    time.sleep(wait_s)
                    continue
                from agegender.errors import DataError

                raise DataError(f"the run folder is being trained by another process ({_describe_holder(holder)})",
                                path=self.path.parent,
                                fix=f"wait for it to finish, or stop it (kill {holder.get('pid', 'PID')}); to train "
                                    "another copy at the same time, pass --fresh or another --out") from None
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if not same:  # the holder removed the file as we waited: lock the new one
                os.close(fd)
                continue
            earlier = _read_lock(fd)
            if earlier.get("pid") and earlier.get("pid") != os.getpid():
                self.taken_over = earlier
                self._log(f"note: {self.path.parent}: took over the lock of process {earlier['pid']}"
                          f"{' on ' + earlier['host'] if earlier.get('host') else ''}, which no longer runs "
                          "(an interrupted run); this process trains it now")
            info = {"pid": os.getpid(), "host": platform.node(),
                    "started_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ"),
                    "command": " ".join([os.path.basename(sys.argv[0] or "python"), *sys.argv[1:]])[:300]}
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode("utf-8"), 0)
            RunLock._held[key] = [fd, 1]
            self._key = key
            _release_at_exit()
            return self
        from agegender.errors import DataError

        raise DataError("the run lock keeps changing hands", path=self.path.parent,
                        fix="another process is starting the same run; wait for it, or pass --fresh")

    def release(self) -> None:
        """Drop this hold; the last one removes ``run.lock`` and unlocks it."""
        key, self._key = self._key, None
        if key is None or key not in RunLock._held:
            return
        entry = RunLock._held[key]
        entry[1] -= 1
        if entry[1] > 0:
            return
        del RunLock._held[key]
        _unlock(key, entry[0])


def _unlock(key: str, fd: int) -> None:
    import contextlib
    import fcntl

    with contextlib.suppress(OSError):
        if os.path.samestat(os.fstat(fd), os.stat(key)):
            os.unlink(key)  # removed while still held: a waiter then locks a fresh file
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_UN)
    with contextlib.suppress(OSError):
        os.close(fd)


_AT_EXIT: list = []


def _release_at_exit() -> None:
    if _AT_EXIT:
        return
    import atexit

    def release_all():
        for key, (fd, _) in list(RunLock._held.items()):
            RunLock._held.pop(key, None)
            _unlock(key, fd)

    atexit.register(release_all)
    _AT_EXIT.append(release_all)


def _read_lock(fd: int) -> dict:
    try:
        data = json.loads(os.pread(fd, 4096, 0).decode("utf-8", "replace") or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _describe_holder(holder: dict) -> str:
    if not holder.get("pid"):
        return "a process that has not written its name yet"
    where = f" on {holder['host']}" if holder.get("host") and holder["host"] != platform.node() else ""
    since = f", since {holder['started_utc']}" if holder.get("started_utc") else ""
    command = f": {holder['command']}" if holder.get("command") else ""
    return f"process {holder['pid']}{where}{since}{command}"


def lock_holder(run_dir) -> dict | None:
    """Who trains ``run_dir`` now: the lock file's ``{pid, host, started_utc, command}``, or None when no
    live process holds its lock (never started, finished, or interrupted)."""
    import fcntl

    path = Path(run_dir) / LOCK_FILE
    key = str(path.parent.resolve() / LOCK_FILE) if path.parent.exists() else None
    if key in RunLock._held:
        return _read_lock(RunLock._held[key][0])
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_lock(fd) or {"pid": None}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def deviations_from(config, paper_config, *, ignore=("seed",)) -> dict:
    """The fields of a frozen experiment dataclass ``config`` that differ from the paper's ``paper_config``.

    A run record keeps them under ``deviations`` (empty for the paper's own configuration); the
    tables give a run with deviations its own row, labelled with them, so it never averages with
    runs at the paper's settings. ``ignore``: fields that vary between repetitions of the same
    experiment (the seed) or do not change the result.
    """
    import dataclasses

    out = {}
    for field in dataclasses.fields(paper_config):
        if field.name in ignore:
            continue
        mine, paper = getattr(config, field.name), getattr(paper_config, field.name)
        if mine != paper:
            out[field.name] = mine
    return out


def git_state() -> dict:
    """Commit and dirty flag of the checkout the package runs from ('unknown' outside git)."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}
    return {"commit": commit or "unknown", "dirty": bool(dirty)}


def package_versions() -> dict:
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for name in ("agegender", "tensorflow", "keras", "numpy", "pandas", "scipy"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def device_facts() -> dict:
    """CPU count, platform, the Keras backend (its name and package versions), the GPUs it computes on and the
    Keras dtype policy."""
    facts = {"platform": platform.platform(), "cpu_count": os.cpu_count(), "gpus": []}
    try:
        import keras

        from agegender import backend

        facts["backend"] = backend.versions()
        facts["gpus"] = backend.gpus()
        facts["dtype_policy"] = keras.config.dtype_policy().name
    except Exception as err:  # device facts are informative only; never fail a run for them
        facts["error"] = f"{type(err).__name__}: {err}"
    return facts


def load_records(runs_dir: str | Path) -> tuple[list[dict], list[dict]]:
    """Every complete ``record.json`` under ``runs_dir``, and ``{file, reason}`` for each one skipped.

    Skipped (never read half-way, never fatal): a record that does not parse (cut short, or
    edited), one whose status is not ``complete`` (running, interrupted, failed), one with
    malformed cells, and a run folder ``<reproduction>/<experiment>/<run_id>/`` that holds
    files but no ``record.json`` (deleted, or lost). Temporary files of atomic writes
    (``.record.json.*.tmp``) are never read.
    """
    records, skipped = [], []
    runs_dir = Path(runs_dir)
    for folder in sorted(runs_dir.glob("*/*/*/")):
        if folder.is_dir() and not (folder / "record.json").exists() and \
                any(p.is_file() and not p.name.startswith(".") and p.name != LOCK_FILE for p in folder.iterdir()):
            skipped.append({"file": str(folder / "record.json"),
                            "reason": "record missing (the run folder has files but no record.json)"})
    for path in sorted(runs_dir.rglob("record.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            skipped.append({"file": str(path), "reason": f"unreadable record ({type(err).__name__}: {err})"})
            continue
        if not isinstance(record, dict) or record.get("status") != "complete":
            status = record.get("status") if isinstance(record, dict) else type(record).__name__
            reason = f"run not complete (status {status!r})"
            if status == "running":
                holder = lock_holder(path.parent)
                reason = (f"run in progress ({_describe_holder(holder)} holds its lock)" if holder else
                          "run interrupted (status 'running' but no process holds its lock): rerun the same command "
                          "to resume it")
            if status == "failed" and record.get("failure"):
                reason = f"run failed: {record['failure']}"
            skipped.append({"file": str(path), "reason": reason})
            continue
        cells = record.get("cells", [])
        if not isinstance(cells, list) or not all(isinstance(c, dict) and {"table", "row", "column", "value"} <= set(c)
                                                  for c in cells):
            skipped.append({"file": str(path), "reason": "malformed record (cells must be objects with table, row, "
                                                         "column and value)"})
            continue
        record["_path"] = str(path)
        records.append(record)
    return records, skipped
