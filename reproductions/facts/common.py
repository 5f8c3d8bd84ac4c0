"""What every paper module of :mod:`reproductions.facts` shares: cells, the exact/differs judgement,
idempotent run records and figures.

A module computes its cells from the real data or a model build **without** the published
numbers; :func:`judge` then compares each cell with the catalogue (``results/published``) at the
printed precision and, where they differ, puts the module's reason (or "reason unknown") in the
cell's note. :func:`write_record` writes one run record per (paper, source) under a fixed run id
and leaves an existing record untouched when its cells, metrics and figures are unchanged, so
rerunning the command changes nothing in git.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from agegender import atomic

REPRODUCTION = "facts"
RUN_ID = "facts"  # one fixed run id per experiment: a rerun rewrites (or keeps) the same folder
NO_DATA = {"kind": "none", "dataset": "none: read from a Keras build or a configuration; no data is read"}


def cell(table: str, row: str, column: str, value, unit: str, note: str = "", *, reason: str = "",
         **extra) -> dict:
    """One reproduced cell. ``reason``: why it may differ from the paper, added to the note only if it does."""
    out = {"table": table, "row": row, "column": column, "value": float(value), "unit": unit}
    if note:
        out["note"] = note
    if reason:
        out["reason"] = reason
    out.update(extra)
    return out


def setting(table: str, row: str, column: str, value, unit: str, source: str) -> dict:
    """A cell that echoes a configuration constant (issue 16, item 3): shown, never counted as reproduced."""
    return {"table": table, "row": row, "column": column, "value": float(value), "unit": unit, "setting": True,
            "note": f"setting: {source}, not computed"}


def judge(paper: str, cells: list[dict]) -> list[dict]:
    """Give each reproduced cell its ``status`` against the published catalogue (after it was computed).

    ``exact``: equal at the printed precision; ``differs``: the note starts with ``differs:`` and the
    cell's ``reason`` (or "reason unknown"); ``no printed value``: the paper prints no number there
    (figure only, blank, or a cell the catalogue lacks); ``holds`` / ``does not hold`` for a stated
    claim (value 1 / 0; its note gives the evidence). Settings get ``setting``.
    """
    from results.catalogue import MARKERS, compare, load_published

    pub = load_published(paper)
    printed = {(t, r, c): v for t, r, c, v in zip(pub["table"], pub["row"], pub["column"], pub["value"])}
    out = []
    for original in cells:
        c = dict(original)
        reason = c.pop("reason", "")
        text = printed.get((c["table"], c["row"], c["column"]))
        if c.get("setting"):
            c["status"] = "setting"
        elif text == "stated":
            c["status"] = "holds" if c["value"] >= 1 else "does not hold"
        elif text is None or text in MARKERS:
            c["status"] = "no printed value"
        else:
            c["status"] = compare(c["value"], text)
        if c["status"] == "differs":  # a claim's note already states its verdict and evidence
            c["note"] = "; ".join(x for x in (f"differs: {reason or 'reason unknown'}", c.get("note", "")) if x)
        c["paper"] = paper
        out.append(c)
    return out


def _normal(value):
    """``value`` as it reads back from a record (JSON round trip), for comparing old and new content."""
    return json.loads(json.dumps(atomic._finite(value), sort_keys=True, default=atomic._jsonable))


def write_record(out, experiment: str, *, paper: str, data: dict, config: dict, cells: list[dict],
                 metrics: dict | None = None, figures: list[str] | None = None) -> tuple[Path, bool]:
    """Write (or keep) the run record ``<out>/facts/<experiment>/facts/record.json``; returns (path, written).

    The record is left as it is when an earlier one of the same command (same fingerprint: experiment,
    config and data, the data named by its fingerprint) is complete and holds the same cells, metrics
    and figures: nothing changes, not even its time stamps or git commit. Otherwise a fresh record
    is written in the same folder. ``cells`` are judged (:func:`judge`) first.
    """
    from agegender.records import RunRecorder

    cells = judge(paper, cells)
    metrics = metrics or {}
    figures = list(figures or [])
    new = _normal({"cells": cells, "metrics": metrics, "figures": figures})
    common = dict(paper=paper, config=config, seed=0, data=data, out=out, run_id=RUN_ID)
    recorder = RunRecorder(REPRODUCTION, experiment, resume=True, **common)
    if recorder.resumed and recorder.complete:
        old = _normal({k: recorder.record.get(k, [] if k != "metrics" else {}) for k in ("cells", "metrics",
                                                                                          "figures")})
        if old == new:
            return recorder.record_path, False
    if recorder.resumed:  # the same command gave other results (the code changed): a new record
        recorder = RunRecorder(REPRODUCTION, experiment, resume=False, **common)
    return recorder.finish(metrics, cells, figures=figures), True


def relative_figure(path: Path, out: Path) -> str:
    """A figure's path relative to the folder holding the runs folder (``results/``); never absolute."""
    base = Path(out).resolve().parent
    try:
        return Path(path).resolve().relative_to(base).as_posix()
    except ValueError:
        return Path(path).name


def save_figure(fig, path) -> Path:
    """Write a PNG without the matplotlib version in its metadata, so equal figures are equal bytes."""
    from agegender.plots import pyplot

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png", metadata={"Software": None})
    pyplot().close(fig)
    return path


def share(part: int, whole: int) -> float:
    """``part`` as a percentage of ``whole`` (NaN for an empty whole)."""
    return 100.0 * part / whole if whole else math.nan
