"""Run records: one folder per training run, written atomically, read back by ``python -m results``.

A run folder ``<out>/<reproduction>/<experiment>/<run_id>/`` holds

- ``record.json``: reproduction, experiment, paper, config, seed, git commit, package versions,
  device, wall time, ``history`` (one entry per epoch), ``metrics`` per split, ``data`` (kind:
  ``real`` / ``sample`` / ``generated``, or ``none`` for figures read off a model build such as
  parameter counts; dataset, root, counts), and ``cells``: the paper-table
  cells this run reproduces (``{paper, table, row, column, value, unit}``), which is all the
  table generator reads;
- ``split.csv``: the split manifest (file, split, labels);
- ``history.csv``: the per-epoch history, rewritten at each epoch end;
- ``model.keras``: the best model (written by the trainer's checkpoint).

``status`` is ``running`` until :meth:`RunRecorder.finish` writes ``complete``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import time
from pathlib import Path

from agegender import atomic

DATA_KINDS = ("real", "sample", "generated", "none")  # none: a model build, no data read
DEFAULT_RUNS_DIR = Path(__file__).resolve().parents[1] / "results" / "runs"


class RunRecorder:
    """Creates a run folder and writes its record; ``finish`` marks it complete."""

    def __init__(self, reproduction: str, experiment: str, *, config: dict, seed: int, data: dict,
                 paper: str | None = None, out: str | Path | None = None, run_id: str | None = None):
        if data.get("kind") not in DATA_KINDS:
            raise ValueError(f"data['kind'] must be one of {DATA_KINDS}, got {data.get('kind')!r}")
        self.started = time.time()
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        self.run_id = run_id or f"{stamp}-s{seed}"
        self.run_dir = Path(out or DEFAULT_RUNS_DIR) / reproduction / experiment / self.run_id
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.record = {
            "schema": 1,
            "reproduction": reproduction,
            "experiment": experiment,
            "paper": paper,
            "run_id": self.run_id,
            "status": "running",
            "config": config,
            "seed": seed,
            "data": data,
            "git": git_state(),
            "versions": package_versions(),
            "device": device_facts(),
            "started_utc": stamp,
            "history": [],
            "metrics": {},
            "cells": [],
        }
        self.save()

    @property
    def record_path(self) -> Path:
        return self.run_dir / "record.json"

    @property
    def model_path(self) -> Path:
        return self.run_dir / "model.keras"

    def save(self) -> None:
        atomic.write_json(self.record_path, self.record)

    def log_epoch(self, epoch: int, logs: dict) -> None:
        """Record one epoch (replacing an earlier entry for the same epoch) and rewrite history.csv."""
        entry = {"epoch": int(epoch), **{k: float(v) for k, v in logs.items()}}
        history = [h for h in self.record["history"] if h["epoch"] != entry["epoch"]] + [entry]
        self.record["history"] = sorted(history, key=lambda h: h["epoch"])
        keys = sorted({k for h in self.record["history"] for k in h} - {"epoch"})
        lines = [",".join(["epoch", *keys])]
        lines += [",".join([str(h["epoch"]), *(repr(h[k]) if k in h else "" for k in keys)]) for h in self.record["history"]]
        atomic.write_text(self.run_dir / "history.csv", "\n".join(lines) + "\n")
        self.save()

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
        self.record["wall_time_s"] = round(time.time() - self.started, 2)
        self.record["finished_utc"] = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        self.record["status"] = "complete"
        self.save()
        return self.record_path


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
    """CPU count, platform, GPUs TensorFlow sees and the Keras dtype policy."""
    facts = {"platform": platform.platform(), "cpu_count": os.cpu_count(), "gpus": []}
    try:
        import keras
        import tensorflow as tf

        facts["gpus"] = [tf.config.experimental.get_device_details(g).get("device_name", g.name)
                         for g in tf.config.list_physical_devices("GPU")]
        facts["dtype_policy"] = keras.config.dtype_policy().name
    except Exception as err:  # device facts are informative only; never fail a run for them
        facts["error"] = f"{type(err).__name__}: {err}"
    return facts


def load_records(runs_dir: str | Path) -> tuple[list[dict], list[dict]]:
    """Every complete ``record.json`` under ``runs_dir``, and ``{file, reason}`` for each one skipped."""
    records, skipped = [], []
    for path in sorted(Path(runs_dir).rglob("record.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            skipped.append({"file": str(path), "reason": f"unreadable record ({type(err).__name__}: {err})"})
            continue
        if not isinstance(record, dict) or record.get("status") != "complete":
            status = record.get("status") if isinstance(record, dict) else type(record).__name__
            skipped.append({"file": str(path), "reason": f"run not complete (status {status!r})"})
            continue
        record["_path"] = str(path)
        records.append(record)
    return records, skipped
