"""Timings that say what load they were measured under.

A wall-clock figure taken while other processes share the CPU is wrong (the committed training
benchmark of this suite once was off by 7x). Every timing the suite writes therefore carries,
next to its wall time, the process CPU time, the 1-minute load average at start and end, and
the CPU time the *other* processes of the machine used meanwhile (from ``/proc/stat`` minus this
process's share), and is flagged ``busy`` with a warning when the machine was not idle:

- the other processes used more than a quarter of the machine's cores during the measurement, or,
  where ``/proc/stat`` cannot be read to measure that,
- the load average at the start exceeded half the cores. The 1-minute load average lags by minutes
  and counts this process's own recent work (a benchmark's previous mode, a training run that has
  just ended), so where the other processes' CPU is measured it decides alone: an idle machine
  right after a long job reads as idle, and a competing job reads as busy from its first second.

``with Stopwatch() as watch: ...`` then ``watch.result`` (a JSON-ready dict), or
``start = snapshot(); ...; measured(start, snapshot())``.
"""

from __future__ import annotations

import os
import time

BUSY_LOAD_SHARE = 0.5  # load average at start above this share of the cores: busy
BUSY_OTHERS_SHARE = 0.25  # other processes' CPU during the measurement above this share of the cores: busy


def _machine_busy_seconds() -> float | None:
    """Seconds of CPU time all processes have used since boot (``/proc/stat``), None where unknown."""
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            fields = handle.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    values = [int(v) for v in fields[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    busy = sum(values[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK")


def snapshot() -> dict:
    """The clocks and load now."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = None
    return {"wall": time.perf_counter(), "cpu": time.process_time(), "machine_busy": _machine_busy_seconds(),
            "load_1min": load}


def measured(start: dict, end: dict, *, cores: int | None = None) -> dict:
    """Wall and CPU seconds between two :func:`snapshot` s, the load seen, and the ``busy`` verdict."""
    cores = cores or os.cpu_count() or 1
    wall = max(end["wall"] - start["wall"], 1e-9)
    cpu = end["cpu"] - start["cpu"]
    out = {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "cpu_cores_used": round(cpu / wall, 2),
           "cores": cores, "load_1min_start": _round(start["load_1min"]), "load_1min_end": _round(end["load_1min"])}
    others = None
    if start["machine_busy"] is not None and end["machine_busy"] is not None:
        others = max(0.0, (end["machine_busy"] - start["machine_busy"]) - cpu) / wall
        out["other_processes_cores"] = round(others, 2)
    return judge(out)


def judge(out: dict) -> dict:
    """Set ``busy`` (and ``warning``) of a timing from its recorded fields (``cores``,
    ``other_processes_cores``, ``load_1min_start``) by the rules of the module docstring; returns ``out``."""
    cores = out["cores"]
    others, load = out.get("other_processes_cores"), out.get("load_1min_start")
    reasons = []
    if others is not None and others > BUSY_OTHERS_SHARE * cores:
        reasons.append(f"other processes used {others:.2f} of the {cores} cores meanwhile")
    if others is None and load is not None and load > BUSY_LOAD_SHARE * cores:
        reasons.append(f"load average {load:.2f} at the start (over {BUSY_LOAD_SHARE:g} x {cores} cores; the "
                       "other processes' CPU could not be measured)")
    out["busy"] = bool(reasons)
    out.pop("warning", None)
    if reasons:
        out["warning"] = "machine busy: " + "; ".join(reasons) + " — wall-clock figures are inflated; rerun idle"
    return out


def _round(value):
    return None if value is None else round(value, 2)


class Stopwatch:
    """``with Stopwatch() as w: ...``; afterwards ``w.result`` is :func:`measured` of the block."""

    def __enter__(self):
        self.start = snapshot()
        self.result: dict = {}
        return self

    def __exit__(self, *exc):
        self.result = measured(self.start, snapshot())
        return False
