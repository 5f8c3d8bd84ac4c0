"""The run lock (issue 21, item 7): one process trains a run folder at a time.

- a second process that would train the same folder stops with one line naming the first;
- the lock of a process that died (SIGKILL) is stale: the next process takes it over and says so;
- ``python -m results`` tells a run in progress from an interrupted one.

The "other process" is a real one (a small Python child that only imports ``agegender.records``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agegender.errors import DataError
from agegender.records import LOCK_FILE, RunRecorder, load_records, lock_holder

ROOT = Path(__file__).resolve().parents[1]

HOLDER = """
import sys, time
from agegender.records import RunRecorder
recorder = RunRecorder("toy", "net", config={"a": 1}, seed=0, data={"kind": "generated"}, out=sys.argv[1],
                       run_id="run1", resume=True)
print("locked", flush=True)
time.sleep(120)
"""


def _start_holder(runs: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(runs)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    line = proc.stdout.readline()
    assert line.strip() == "locked", proc.stderr.read()
    return proc


def _recorder(runs: Path) -> RunRecorder:
    return RunRecorder("toy", "net", config={"a": 1}, seed=0, data={"kind": "generated"}, out=runs, run_id="run1",
                       resume=True)


def test_a_second_process_refuses_naming_the_first(tmp_path):
    runs = tmp_path / "runs"
    proc = _start_holder(runs)
    try:
        run_dir = runs / "toy" / "net" / "run1"
        holder = json.loads((run_dir / LOCK_FILE).read_text())
        assert holder["pid"] == proc.pid  # the lock file names the process, as the kernel knows it
        assert lock_holder(run_dir)["pid"] == proc.pid
        with pytest.raises(DataError) as err:
            RunRecorder("toy", "net", config={"a": 1}, seed=0, data={"kind": "generated"}, out=runs, run_id="run1",
                        resume=True).lock.acquire(attempts=1)
        message = str(err.value)
        assert f"process {proc.pid}" in message and str(run_dir) in message and "\n" not in message
        assert " — fix: " in message and f"kill {proc.pid}" in message
        # python -m results: the run is in progress, not interrupted
        records, skipped = load_records(runs)
        assert not records and "run in progress" in skipped[0]["reason"] and str(proc.pid) in skipped[0]["reason"]
    finally:
        proc.kill()
        proc.wait()


def test_a_second_process_gets_one_error_line_from_a_command(tmp_path, capsys):
    """Through ``agegender.cli.run_main`` (every reproduction's entry point): one line, exit 2."""
    from agegender.cli import run_main

    runs = tmp_path / "runs"
    proc = _start_holder(runs)
    try:
        code = run_main(lambda argv: _recorder(runs) and 0, [])
    finally:
        proc.kill()
        proc.wait()
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and "\n" not in err and f"process {proc.pid}" in err


def test_a_stale_lock_of_a_killed_process_is_taken_over_and_said(tmp_path, capsys):
    runs = tmp_path / "runs"
    proc = _start_holder(runs)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run_dir = runs / "toy" / "net" / "run1"
    assert json.loads((run_dir / LOCK_FILE).read_text())["pid"] == proc.pid  # left behind by the dead process
    assert lock_holder(run_dir) is None  # ... but nobody holds it
    records, skipped = load_records(runs)
    assert "run interrupted" in skipped[0]["reason"] and "rerun the same command" in skipped[0]["reason"]

    recorder = _recorder(runs)
    assert recorder.resumed and recorder.lock.taken_over["pid"] == proc.pid
    err = capsys.readouterr().err
    assert f"took over the lock of process {proc.pid}" in err and "no longer runs" in err
    assert json.loads((run_dir / LOCK_FILE).read_text())["pid"] == os.getpid()
    recorder.finish({}, [{"table": "T", "row": "r", "column": "c", "value": 1.0}])
    assert not (run_dir / LOCK_FILE).exists()  # released when the run completes
    assert lock_holder(run_dir) is None


def test_the_lock_is_released_for_the_next_process_when_a_run_finishes(tmp_path):
    runs = tmp_path / "runs"
    recorder = RunRecorder("toy", "net", config={"a": 1}, seed=0, data={"kind": "generated"}, out=runs,
                           run_id="run1")
    assert (recorder.run_dir / LOCK_FILE).is_file()
    again = RunRecorder("toy", "net", config={"a": 1}, seed=0, data={"kind": "generated"}, out=runs,
                        run_id="run1", resume=True)  # the same process: shares the hold
    assert again.lock.taken_over is None
    recorder.fail("diverged")
    again.release()
    assert not (recorder.run_dir / LOCK_FILE).exists()
    child = subprocess.run([sys.executable, "-c", HOLDER.replace("time.sleep(120)", ""), str(runs)], cwd=ROOT,
                           capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert child.returncode == 0 and "locked" in child.stdout and "took over" not in child.stderr, child.stderr


def test_a_complete_run_is_read_back_without_the_lock(tmp_path):
    """Reading a finished run back (a rerun of the same command) does not lock: nothing is trained."""
    runs = tmp_path / "runs"
    first = RunRecorder("toy", "net", config={"a": 1}, seed=0, data={"kind": "generated"}, out=runs, run_id="run1")
    first.finish({}, [{"table": "T", "row": "r", "column": "c", "value": 1.0}])
    started = time.time()
    again = _recorder(runs)
    assert again.complete and again.lock is None and not (again.run_dir / LOCK_FILE).exists()
    assert time.time() - started < 5
