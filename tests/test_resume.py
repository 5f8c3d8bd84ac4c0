"""Nothing lost: resumable training, resumable commands and deterministic runs (issue 10).

- records: a rerun of the same command finds its run folder again (fingerprint), a finished
  run is read back, a failed one is not resumed, ``--fresh`` starts a new one;
- ``train``: killed at an epoch boundary and restarted, a run without random streams ends
  exactly where the uninterrupted run ends (weights, optimizer, early stopping, checkpoint);
- the real reproduction path: ``python -m reproductions.utkface_dual_cnn`` SIGKILLed once its
  first epoch's state exists, rerun, gives a record with every epoch once and
  ``resumed_from_epoch`` set; two ``--deterministic`` runs give the same split manifests and
  first-epoch losses;
- cross-validation (``reproductions.adience_levi``) resumes at the first fold without a
  complete record.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from agegender.records import RunRecorder, find_run, fingerprint, load_records

ROOT = Path(__file__).resolve().parents[1]


def _recorder(out, **kw):
    args = dict(config={"lr": 0.1}, seed=0, data={"kind": "generated", "dataset": "toy"}, out=out)
    args.update(kw)
    return RunRecorder("toy", "net", **args)


# --------------------------------------------------------------------------------------------- records


def test_a_rerun_finds_its_run_folder_and_fresh_starts_a_new_one(tmp_path):
    first = _recorder(tmp_path, resume=True)
    first.log_epoch(1, {"loss": 1.0})
    assert not first.resumed and first.record["resumed_from_epoch"] is None
    again = _recorder(tmp_path, resume=True)
    assert again.resumed and not again.complete and again.run_dir == first.run_dir
    assert [h["epoch"] for h in again.record["history"]] == [1] and again.record["resumes"] == 1
    other = _recorder(tmp_path, resume=True, config={"lr": 0.2})  # another configuration: another run
    assert not other.resumed and other.run_dir != first.run_dir
    fresh = _recorder(tmp_path, resume=False)  # --fresh: a new folder, even within the same second
    assert fresh.run_dir != first.run_dir and fresh.run_dir.parent == first.run_dir.parent
    assert find_run(tmp_path, "toy", "net", first.fingerprint) == fresh.run_id  # the newest one
    assert first.fingerprint == fingerprint("toy", "net", {"lr": 0.1}, 0, {"kind": "generated", "dataset": "toy"})


def test_a_finished_run_is_read_back_and_rewritten_in_place(tmp_path):
    done = _recorder(tmp_path, resume=True)
    done.finish({"acc": 0.5}, [{"table": "T", "row": "r", "column": "c", "value": 0.5}])
    wall = json.loads(done.record_path.read_text())["wall_time_s"]
    again = _recorder(tmp_path, resume=True)
    assert again.complete and again.run_dir == done.run_dir and again.record["metrics"] == {"acc": 0.5}
    time.sleep(0.05)
    again.finish({"acc": 0.5}, [{"table": "T", "row": "r", "column": "c", "value": 0.5}])
    assert json.loads(again.record_path.read_text())["wall_time_s"] == wall  # times stay the first run's
    records, skipped = load_records(tmp_path)
    assert len(records) == 1 and not skipped  # never a duplicate cell


def test_a_failed_run_is_not_resumed(tmp_path):
    failed = _recorder(tmp_path, resume=True)
    failed.fail("training diverged: the loss became nan at epoch 2")
    again = _recorder(tmp_path, resume=True)
    assert not again.resumed and again.run_dir != failed.run_dir
    _, skipped = load_records(tmp_path)
    assert any(s["reason"].startswith("run failed: training diverged") for s in skipped)


# --------------------------------------------------------------------------------------------- train()


def _toy(seed=0):
    """A model and data without random streams (no dropout, no shuffle): a resumed run must end bit-identical."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(8, activation="tanh")(inputs)
    model = keras.Model(inputs, {"age": keras.layers.Dense(1, name="age")(hidden)})
    model.compile(keras.optimizers.Adam(0.05), loss={"age": "mse"})
    rng = np.random.default_rng(0)  # the data never change; ``seed`` only draws the initial weights
    x = rng.normal(size=(96, 6)).astype("float32")
    y = (x[:, :1] * 2 + rng.normal(scale=1.5, size=(96, 1))).astype("float32")  # noisy: validation stalls
    train_ds = tf.data.Dataset.from_tensor_slices((x[:64], {"age": y[:64]})).batch(16)
    val_ds = tf.data.Dataset.from_tensor_slices((x[64:], {"age": y[64:]})).batch(16)
    return model, train_ds, val_ds


@pytest.mark.slow
def test_train_resumes_weights_optimizer_early_stopping_and_checkpoint_exactly(tmp_path):
    import keras

    from agegender.training import train

    model, train_ds, val_ds = _toy()
    reference = train(model, train_ds, val_ds, epochs=40, patience=3, verbose=0)
    reference_weights = model.get_weights()
    assert 4 < len(reference) < 40  # early stopping ended it

    class Kill(keras.callbacks.Callback):  # stands in for SIGKILL at the start of epoch 4
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 3:
                raise KeyboardInterrupt

    recorder = _recorder(tmp_path, resume=True)
    model, train_ds, val_ds = _toy()
    with pytest.raises(KeyboardInterrupt):
        train(model, train_ds, val_ds, epochs=40, patience=3, verbose=0, recorder=recorder, extra_callbacks=[Kill()])
    state = json.loads((recorder.state_dir / "state.json").read_text())
    assert state["epoch"] == 3 and state["early_stopping"]["best_weights"]

    recorder = _recorder(tmp_path, resume=True)
    model, train_ds, val_ds = _toy(seed=1)  # other initial weights: everything must come from the state
    info: dict = {}
    history = train(model, train_ds, val_ds, epochs=40, patience=3, verbose=0, recorder=recorder, info=info)
    assert info["resumed_from_epoch"] == 3 and info["seconds"] > 0
    assert [h["epoch"] for h in history] == list(range(1, len(reference) + 1))
    for ours, theirs in zip(history, reference):
        assert ours["loss"] == pytest.approx(theirs["loss"], rel=1e-5)
        assert ours["val_loss"] == pytest.approx(theirs["val_loss"], rel=1e-5)
    for ours, theirs in zip(model.get_weights(), reference_weights):  # best weights restored at the end
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    record = json.loads(recorder.record_path.read_text())
    assert [h["epoch"] for h in record["history"]] == [h["epoch"] for h in history]
    assert record["resumed_from_epoch"] == 3
    best = min(h["val_loss"] for h in history)
    saved = keras.models.load_model(recorder.model_path, safe_mode=True)  # the checkpoint kept the best epoch
    np.testing.assert_allclose(saved.evaluate(val_ds, verbose=0), best, rtol=1e-4)


# --------------------------------------------------------------------------------------------- the reproduction


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    from tests.helpers import generated_faces

    return generated_faces(tmp_path_factory, "utkface", 150, size=32, name="resume_faces")


def _command(faces, out):
    return [sys.executable, "-m", "reproductions.utkface_dual_cnn", "--data-dir", str(faces), "--smoke",
            "--networks", "dual", "--epochs", "3", "--deterministic", "--out", str(out)]


def _start_and_kill_after_first_epoch(commands: list[list[str]], outs: list[Path], timeout=240):
    """Start every command at once; SIGKILL each as soon as its first epoch's training state exists."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    procs = [subprocess.Popen(c, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for c in commands]
    killed = [False] * len(procs)
    deadline = time.time() + timeout
    while not all(killed) and time.time() < deadline:
        for i, (proc, out) in enumerate(zip(procs, outs)):
            if killed[i]:
                continue
            assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()[-2000:]}"
            for state in glob.glob(str(out / "runs/utkface_dual_cnn/dual/*/train_state/state.json")):
                try:
                    if json.loads(Path(state).read_text())["epoch"] >= 1:
                        proc.send_signal(signal.SIGKILL)
                        killed[i] = True
                except (OSError, ValueError):
                    pass  # atomically written: only absent between two checks, never half-written
        time.sleep(0.01)
    for proc in procs:
        if proc.poll() is None and not all(killed):
            proc.kill()
        proc.wait()
    assert all(killed), "no training state appeared in time"


@pytest.fixture(scope="module")
def killed_runs(faces, tmp_path_factory):
    """Two identical --deterministic runs (separate output folders), each SIGKILLed after its first epoch."""
    outs = [tmp_path_factory.mktemp("run_a"), tmp_path_factory.mktemp("run_b")]
    _start_and_kill_after_first_epoch([_command(faces, out) for out in outs], outs)
    return outs


def _record(out, experiment="dual") -> tuple[Path, dict]:
    paths = sorted((out / "runs" / "utkface_dual_cnn" / experiment).glob("*/record.json"))
    assert len(paths) == 1, paths
    return paths[0], json.loads(paths[0].read_text())


@pytest.mark.slow
def test_killed_reproduction_resumes_with_every_epoch_once(faces, killed_runs):
    out = killed_runs[1]
    path, before = _record(out)
    assert before["status"] == "running" and before["history"][0]["epoch"] == 1
    done = subprocess.run(_command(faces, out), cwd=ROOT, capture_output=True, text=True, timeout=400,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[train] resuming after epoch" in done.stdout and "picking up run" in done.stdout
    again, record = _record(out)
    assert again == path  # the same run folder
    assert record["status"] == "complete"
    assert [h["epoch"] for h in record["history"]] == [1, 2, 3]  # the requested epochs, none repeated
    assert 1 <= record["resumed_from_epoch"] < 3
    assert record["metrics"]["training"]["epochs"] == 3
    assert record["metrics"]["training"]["resumed_from_epoch"] == record["resumed_from_epoch"]
    assert record["history"][0] == before["history"][0]  # the killed process's epoch 1 is kept as it was
    assert not (path.parent / "train_state").exists()  # removed once the record is complete
    rows = (path.parent / "iteration_loss.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == list(range(1, len(rows) + 1))  # per-batch losses, once each
    protocol_path, protocol = _record(out, "protocol")
    assert protocol["status"] == "complete" and protocol_path.parent.name == path.parent.name
    import csv

    with open(out / "tables" / "speziali__num-of-epochs.csv", newline="", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r["row"] == "Multi-task CNN" and r["data"] == "generated faces"]
    assert [r["reproduced"] for r in rows] == ["3"]


@pytest.mark.slow
def test_two_deterministic_runs_give_the_same_split_and_first_epoch(killed_runs):
    a, b = killed_runs
    for experiment in ("protocol", "dual"):
        split_a = _record(a, experiment)[0].parent / "split.csv"
        split_b = _record(b, experiment)[0].parent / "split.csv"
        assert split_a.read_bytes() == split_b.read_bytes()
    # the wall and CPU seconds and the load each epoch ran under (agegender.training, since 03890a9) are no result
    timing = ("epoch_seconds", "epoch_cpu_seconds", "load_1min", "other_processes_cores")
    first_a, first_b = ({k: v for k, v in _record(run)[1]["history"][0].items() if k not in timing} for run in (a, b))
    assert first_a["epoch"] == first_b["epoch"] == 1
    assert first_a == first_b  # every first-epoch loss and metric, bit for bit
    assert _record(a)[1]["config"]["deterministic"] is True


def test_fresh_and_deterministic_are_on_both_command_lines(capsys):
    from reproductions import adience_levi, utkface_dual_cnn

    for main in (utkface_dual_cnn.main, adience_levi.main):
        with pytest.raises(SystemExit):
            main(["--help"])
        text = capsys.readouterr().out
        assert "--fresh" in text and "--deterministic" in text and "resum" in text


def test_deterministic_turns_on_op_determinism_and_seeds(monkeypatch):
    import keras
    import tensorflow as tf

    from agegender.training import seed_everything

    calls = []
    monkeypatch.setattr(tf.config.experimental, "enable_op_determinism", lambda: calls.append("determinism"))
    monkeypatch.setattr(keras.utils, "set_random_seed", lambda seed: calls.append(seed))
    seed_everything(3)
    assert calls == [3]
    seed_everything(4, deterministic=True)
    assert calls == [3, 4, "determinism"]


# --------------------------------------------------------------------------------------------- cross-validation


@pytest.fixture(scope="module")
def tiny_adience(tmp_path_factory):
    """Three folds' worth of generated Adience faces (real fold-file layout, small images)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("tiny_adience")
    header = ("user_id\toriginal_image\tface_id\tage\tgender\tx\ty\tdx\tdy\ttilt_ang\tfiducial_yaw_angle\t"
              "fiducial_score\n")
    groups = ["(0, 2)", "(4, 6)", "(8, 12)", "(15, 20)", "(25, 32)", "(38, 43)", "(48, 53)", "(60, 100)"]
    rng = np.random.default_rng(0)
    for fold in range(5):
        lines = [header]
        for user in range(4):
            uid = f"u{fold}{user}"
            (root / "aligned" / uid).mkdir(parents=True)
            for face in range(5):
                name = f"img{face}.jpg"
                gender = "mf"[(user + face) % 2]
                pixels = rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / "aligned" / uid / f"landmark_aligned_face.{face}.{name}")
                lines.append(f"{uid}\t{name}\t{face}\t{groups[(user + face) % 8]}\t{gender}\t0\t0\t1\t1\t0\t0\t1\n")
        (root / f"fold_{fold}_data.txt").write_text("".join(lines))
    return root


@pytest.mark.slow
def test_cross_validation_resumes_at_the_first_fold_without_a_complete_record(tiny_adience, tmp_path, monkeypatch,
                                                                              capsys):
    """Fold 0 completes, fold 1 is killed in training: the rerun reads fold 0 back, resumes fold 1, runs fold 2."""
    import agegender.training as training
    from reproductions import adience_levi as A

    calls = []

    def fake_train(model, train_ds, val_ds, *, epochs, recorder=None, info=None, **kw):
        fold = recorder.record["config"]["fold"]
        calls.append((fold, recorder.resumed))
        if fold == 1 and len([c for c in calls if c[0] == 1]) == 1:
            raise KeyboardInterrupt  # the first process dies in fold 1
        recorder.log_epoch(1, {"loss": 1.0, "val_loss": 1.0})
        if info is not None:
            info.update(resumed_from_epoch=1 if recorder.resumed else None, seconds=0.1, trained=True)
        return [{"epoch": 1, "loss": 1.0, "val_loss": 1.0}]

    monkeypatch.setattr(training, "train", fake_train)
    monkeypatch.setattr(A.reproduction, "write_model_build_record", lambda runs_dir: None)  # Tables 1-2: not under test
    import results.tables

    monkeypatch.setattr(results.tables, "generate", lambda *a, **k: {"tables": [], "records": 0, "skipped": []})
    argv = ["--data-dir", str(tiny_adience), "--model", "gender", "--folds", "0,1,2", "--smoke", "--no-oversample",
            "--out", str(tmp_path), "--data-kind", "generated", "--verbose", "0", "--val-fraction", "0.3"]
    assert A.main(argv) == 130  # Ctrl-C: one line, exit 130, the run resumable
    assert "rerun the same command to resume" in capsys.readouterr().err
    assert calls == [(0, False), (1, False)]
    assert A.main(argv) == 0
    assert calls[2:] == [(1, True), (2, False)]  # fold 0 not trained again; fold 1 picked up; fold 2 new
    printed = capsys.readouterr().out
    assert "gender fold 0: complete record found" in printed and "resuming the interrupted run" in printed
    records = sorted((tmp_path / "runs" / "adience_levi" / "gender").glob("*/record.json"))
    assert len(records) == 3  # one per fold, the interrupted one completed in place
    assert {json.loads(p.read_text())["status"] for p in records} == {"complete"}
    assert A.main(argv) == 0  # a third run: nothing to train, the fold summary rewritten, not duplicated
    assert calls[4:] == []
    summaries = list((tmp_path / "runs" / "adience_levi" / "gender_folds").glob("*/record.json"))
    assert len(summaries) == 1
