"""What the per-paper comparison pages (``results/speziali.md``, ``results/dey_aggarwal.md``) share: the published
figures read as strings, numbers parsed from them, mean ± sample std over seeds, and the line that names a group of
runs (data, device, precision, runs and their commits)."""

from __future__ import annotations

import csv
import math

import numpy as np


def published_figures(paper_csv) -> dict:
    """{(table, row, column): printed text} of one paper's ``results/published/<paper>.csv``."""
    with open(paper_csv, newline="", encoding="utf-8") as handle:
        return {(r["table"], r["row"], r["column"]): r["value"] for r in csv.DictReader(handle)}


def number(text):
    """A printed figure as a float (thousands commas allowed), or None when it is not a number."""
    try:
        return float(str(text).replace(",", ""))
    except ValueError:
        return None


def mean_std(values) -> tuple[float, float, int]:
    """(mean, sample std, n) over the finite values; std is NaN for one value, both NaN for none."""
    values = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not values:
        return math.nan, math.nan, 0
    return float(np.mean(values)), (float(np.std(values, ddof=1)) if len(values) > 1 else math.nan), len(values)


def fmt_values(values, digits=3) -> str:
    """``mean ± std`` (``mean`` for one run, ``–`` for none)."""
    mean, std, n = mean_std(values)
    if n == 0:
        return "–"
    text = f"{mean:.{digits}f}"
    return text + (f" ± {std:.{digits}f}" if n > 1 else "")


def commit(record) -> str:
    """The short commit a run was made at (``?`` when the record does not say)."""
    return str((record.get("git") or {}).get("commit", "?"))[:7]


def group_line(records, run_name=lambda record: record["_run"]) -> str:
    """``Data: ... Device: ...; precision ... Runs: ...`` of one group of runs, read off its first record."""
    first = records[0]
    data, device = first.get("data") or {}, first.get("device") or {}
    counts = data.get("counts") or {}
    where = ", ".join(device.get("gpus") or []) or f"CPU, {device.get('cpu_count', '?')} cores"
    runs = ", ".join(sorted({f"{run_name(r)} (commit {commit(r)})" for r in records}))
    return (f"Data: {data.get('kind')} `{data.get('path', data.get('dataset'))}` ({counts.get('train', 0):,} train / "
            f"{counts.get('val', 0):,} validation / {counts.get('test', 0):,} test faces). Device: {where}; precision "
            f"{(first.get('config') or {}).get('precision_policy')}. Runs: {runs}.")


CHANCE_MARGIN = 0.02  # a test accuracy within 2 points of the majority share is chance


def classifier_at_chance(task: str, confusion, accuracy, majority) -> str:
    """Why one classification head's test predictions are no better than a constant ('' when they are): one
    class predicted for every face (the confusion matrix has a single non-empty column), or an accuracy within
    :data:`CHANCE_MARGIN` of the majority share."""
    if confusion is not None and sum(1 for column in zip(*confusion) if sum(column) > 0) <= 1:
        return f"one {task} predicted for every test face"
    if accuracy is not None and majority is not None and accuracy < majority + CHANCE_MARGIN:
        return f"{task} accuracy {accuracy:.3f} vs majority share {majority:.3f}"
    return ""
