"""``--strategy`` (``agegender.distribute``) and the shared command line (``agegender.cli``).

Logical CPU devices must be configured before TensorFlow initialises, so every check that needs
two replicas runs in a subprocess that splits the CPU into two logical devices first
(``TWO_CPUS``). The one-step check trains the Levi-Hassner multi-task CNN of the suite (no batch
normalisation, dropout off: per-replica statistics and masks legitimately differ) on one fixed
global batch under ``MirroredStrategy`` and under the default strategy and compares the loss and
the updated weights.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from agegender import cli, distribute
from agegender.data.samples import Samples
from agegender.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
MODULES = ("adience_levi", "utkface_dual_cnn", "utkface_xception", "efficientnet_age_groups", "mtl_weighted_loss")
TWO_CPUS = """
import os, sys, json
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf
_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(_cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
"""


def _python(code: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run([sys.executable, "-c", TWO_CPUS + textwrap.dedent(code), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _json_line(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads([line for line in result.stdout.splitlines() if line.startswith("{")][-1])


# ------------------------------------------------------------------------------------------ two replicas

ONE_STEP = """
import keras
import numpy as np
from agegender.distribute import StrategyError, make_strategy, replicas
from reproductions import adience_levi as A

exp = A.dataclasses.replace(A.EXPERIMENTS["multitask"], image_size=64, dropout=0.0)
rng = np.random.default_rng(0)
x = rng.uniform(0, 255, (6, 64, 64, 3)).astype("float32")  # one global batch of 6: 3 per replica
y = {"gender": rng.integers(0, 2, (6, 1)).astype("float32"), "age": rng.integers(0, 8, (6,)).astype("int64")}

def step(name):
    strategy = make_strategy(name)
    keras.utils.set_random_seed(0)
    with strategy.scope():  # as run_fold builds and compiles it
        model = A.build_model(exp)
        model.compile(optimizer=keras.optimizers.Adam(exp.learning_rate, beta_1=exp.beta_1, beta_2=exp.beta_2,
                                                      epsilon=exp.epsilon),
                      loss={t: A.LOSSES[t] for t in exp.tasks},
                      loss_weights={"gender": exp.gamma, "age": 1.0 - exp.gamma})
    before = [np.array(w) for w in model.trainable_weights]
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(6)
    logs = model.fit(data, epochs=1, verbose=0, shuffle=False).history
    after = [np.array(w) for w in model.trainable_weights]
    return {k: v[0] for k, v in logs.items()}, before, after

single, b1, a1 = step("default")
mirrored, b2, a2 = step("mirrored")
out = {"replicas": replicas(make_strategy("mirrored")), "single": single, "mirrored": mirrored,
       "same_start": max(float(np.max(np.abs(p - q))) for p, q in zip(b1, b2)),
       "weight_diff": max(float(np.max(np.abs(p - q))) for p, q in zip(a1, a2)),
       "weight_rel_diff": max(float(np.max(np.abs(p - q) / (np.abs(p) + 1e-3))) for p, q in zip(a1, a2)),
       "update": max(float(np.max(np.abs(p - q))) for p, q in zip(a1, b1))}

# gradient accumulation: Keras cannot run it under MirroredStrategy (why efficientnet refuses it)
with make_strategy("mirrored").scope():
    small = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    small.compile(optimizer=keras.optimizers.SGD(0.1, gradient_accumulation_steps=2), loss="mse")
try:
    small.fit(np.ones((8, 4), "float32"), np.ones((8, 1), "float32"), batch_size=4, verbose=0)
    out["accumulation"] = "ran"
except Exception as err:
    out["accumulation"] = type(err).__name__

# the learned loss weighting (Sundriyal): one mirrored step equals one single-device step
from agegender.models.loss_weighting import LossWeighting, MultiTaskLossModel

def mtl_step(name):
    keras.utils.set_random_seed(0)
    with make_strategy(name).scope():
        inputs = keras.Input((8,))
        hidden = keras.layers.Dense(6, activation="relu", name="hidden")(inputs)
        net = keras.Model(inputs, {"age": keras.layers.Dense(1, name="age")(hidden),
                                   "gender": keras.layers.Dense(2, activation="softmax", name="gender")(hidden)})
        model = MultiTaskLossModel(net, {"age": "half_mse", "gender": "sparse_ce"},
                                   LossWeighting(("age", "gender"), mode="learned", lam=0.1, seed=0))
        model.compile(optimizer=keras.optimizers.Adam(1e-2))
    features = rng_mtl.normal(size=(6, 8)).astype("float32")
    labels = {"age": rng_mtl.normal(size=(6, 1)).astype("float32"), "gender": rng_mtl.integers(0, 2, (6,))}
    logs = model.fit(tf.data.Dataset.from_tensor_slices((features, labels)).batch(6), epochs=1, verbose=0,
                     shuffle=False).history
    return {k: float(v[0]) for k, v in logs.items()}, [np.array(w) for w in model.trainable_weights]

rng_mtl = np.random.default_rng(1)
mtl_single, mtl_w1 = mtl_step("default")
rng_mtl = np.random.default_rng(1)
mtl_mirrored, mtl_w2 = mtl_step("mirrored")
out["mtl_single"], out["mtl_mirrored"] = mtl_single, mtl_mirrored
out["mtl_weight_diff"] = max(float(np.max(np.abs(p - q))) for p, q in zip(mtl_w1, mtl_w2))

from reproductions import efficientnet_age_groups as G
for key, call in (("efficientnet", lambda: G._checked_strategy("mirrored", G.GuYangExperiment(), 64, 4)),
                  ("efficientnet_no_accumulation", lambda: G._checked_strategy("mirrored", G.GuYangExperiment(), 256, 1))):
    try:
        call()
        out[key] = None
    except StrategyError as err:
        out[key] = str(err)
# the trainer under MirroredStrategy: a resumed state is loaded (optimizer built under the scope), a first batch
# split unevenly (5 images: 3 + 2) trains, and a NaN loss stops the run
import pathlib, tempfile
from agegender.errors import TrainingDiverged
from agegender.training import train

def tiny(lr=0.01):
    with make_strategy("mirrored").scope():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        model.compile(optimizer=keras.optimizers.Adam(lr), loss="mse")
    return model

state = pathlib.Path(tempfile.mkdtemp())
data = tf.data.Dataset.from_tensor_slices((np.ones((5, 4), "float32"), np.ones((5, 1), "float32"))).batch(8)
info = {}
train(tiny(), data, data, epochs=1, state_dir=state, verbose=0, info=info)
saved = json.loads((state / "state.json").read_text())
saved["finished"] = False  # as if killed after epoch 1
(state / "state.json").write_text(json.dumps(saved))
history = train(tiny(), data, data, epochs=2, state_dir=state, verbose=0, info=info)
out["resume"] = {"resumed_from_epoch": info["resumed_from_epoch"], "epochs": [h["epoch"] for h in history]}
try:
    train(tiny(1e30), data.map(lambda a, b: (a, b * 1e30)), None, epochs=2, verbose=0)
    out["nan_guard"] = None
except TrainingDiverged as err:
    out["nan_guard"] = str(err)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def two_replicas() -> dict:
    return _json_line(_python(ONE_STEP))


@pytest.mark.slow
def test_mirrored_step_equals_single_device_step(two_replicas):
    r = two_replicas
    assert r["replicas"] == 2
    assert r["same_start"] == 0.0  # the same initial weights under both strategies
    for key in ("loss", "gender_loss", "age_loss"):
        single, mirrored = r["single"][key], r["mirrored"][key]
        assert abs(mirrored - single) <= 1e-5 * abs(single), (key, single, mirrored)
    assert r["update"] > 5e-5  # the step moved the weights (Adam, learning rate 1e-4) ...
    # ... the same way under both strategies: measured 9e-8 at most (under 0.1% of the step), 7e-6 relative
    assert r["weight_diff"] < 1e-6 and r["weight_rel_diff"] < 1e-4


@pytest.mark.slow
def test_trainer_resumes_and_guards_under_mirrored(two_replicas):
    assert two_replicas["resume"] == {"resumed_from_epoch": 1, "epochs": [1, 2]}
    assert two_replicas["nan_guard"] and "training diverged" in two_replicas["nan_guard"]


@pytest.mark.slow
def test_settings_a_mirrored_strategy_cannot_run_fail_with_the_flags_to_change(two_replicas):
    r = two_replicas
    assert r["accumulation"] != "ran"  # Keras's gradient accumulation fails under MirroredStrategy ...
    assert "--batch-size" in r["efficientnet"] and "--strategy default" in r["efficientnet"]  # ... so it is refused
    assert r["efficientnet_no_accumulation"] is None


@pytest.mark.slow
def test_learned_loss_weighting_step_is_the_same_under_mirrored(two_replicas):
    r = two_replicas
    single, mirrored = r["mtl_single"], r["mtl_mirrored"]
    for key in ("loss", "age_loss", "gender_loss", "loss_weight_age", "loss_weight_gender"):
        assert abs(mirrored[key] - single[key]) <= 1e-5 * abs(single[key]), (key, single[key], mirrored[key])
    assert abs(single["loss_weight_age"] + single["loss_weight_gender"] - 1) < 1e-5  # the simplex, not summed twice
    assert r["mtl_weight_diff"] < 1e-6


@pytest.mark.slow
def test_smoke_run_under_mirrored_records_the_strategy(tmp_path):
    from agegender.data.synth import synthesize

    synthesize("utkface", tmp_path / "faces", 100, seed=0, size=32)
    out = tmp_path / "out"
    result = _python("""
        from reproductions import utkface_dual_cnn as spz
        sys.exit(spz.main(sys.argv[1:]))
        """, "--data-dir", str(tmp_path / "faces"), "--smoke", "--networks", "dual", "--strategy", "mirrored",
                     "--out", str(out), "--data-kind", "generated")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "mirrored strategy: 2 replicas, global batch 64 = 32 per replica" in result.stdout
    records = sorted((out / "runs" / "utkface_dual_cnn").glob("*/*/record.json"))
    assert sorted(p.parent.parent.name for p in records) == ["dual", "protocol"]
    for path in records:
        record = json.loads(path.read_text())
        assert record["status"] == "complete"
        assert record["config"]["strategy"] == {"name": "mirrored", "replicas": 2, "per_replica_batch": 32}
    dual = json.loads(records[0].read_text())
    assert dual["history"] and np.isfinite(dual["history"][0]["val_loss"])


# ------------------------------------------------------------------------------------------ no TensorFlow needed


def test_per_replica_batch_is_the_global_batch_split_evenly():
    assert distribute.per_replica_batch(6, 2) == 3
    assert distribute.per_replica_batch(128, 1) == 128
    with pytest.raises(distribute.StrategyError) as info:
        distribute.per_replica_batch(5, 2)
    message = str(info.value)
    assert "5" in message and "2 replicas" in message and "--batch-size 4 or 6" in message and "\n" not in message
    with pytest.raises(distribute.StrategyError) as info:
        distribute.per_replica_batch(5, 2, flag=None)  # a reproduction without --batch-size
    assert "--batch-size" not in str(info.value) and "--strategy default" in str(info.value)
    assert isinstance(info.value, DataError)  # printed as one error line, exit status 2


def test_unknown_strategy_lists_the_choices():
    with pytest.raises(ValueError, match="default, mirrored, multiworker"):
        distribute.make_strategy("horovod")


def test_malformed_tf_config_is_one_error_line(monkeypatch):
    distribute._CACHE.pop("multiworker", None)
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(distribute.StrategyError, match="TF_CONFIG is not valid JSON"):
        distribute.make_strategy("multiworker")
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:1"]},
                                                "task": {"type": "worker", "index": 2}}))
    with pytest.raises(distribute.StrategyError, match="not one of the 2 workers"):
        distribute.make_strategy("multiworker")


def _argv(module: str) -> list[str]:
    return {"mtl_weighted_loss": ["--dataset", "utkface"]}.get(module, [])


def _parse(module: str, argv: list[str]):
    mod = importlib.import_module(f"reproductions.{module}")
    return mod.parse_args(argv) if hasattr(mod, "parse_args") else mod._parser().parse_args(argv)


@pytest.mark.parametrize("module", MODULES)
def test_every_reproduction_takes_the_run_options(module, capsys):
    args = _parse(module, _argv(module) + ["--tfds-dir", "prepared", "--strategy", "mirrored", "--fresh",
                                           "--deterministic"])
    assert (args.strategy, args.fresh, args.deterministic, args.tfds_dir) == ("mirrored", True, True, "prepared")
    args = _parse(module, _argv(module) + ["--data-dir" if module != "efficientnet_age_groups" else "--utkface", "d"])
    assert (args.strategy, args.fresh, args.deterministic, args.tfds_dir) == ("default", False, False, None)
    with pytest.raises(SystemExit) as info:
        _parse(module, _argv(module) + ["--data-dir", "d", "--strategy", "horovod"])
    assert info.value.code == 2
    capsys.readouterr()
    with pytest.raises(SystemExit):
        _parse(module, ["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for option in ("--fresh", "--deterministic", "--strategy {default,mirrored,multiworker}", "--tfds-dir DIR"):
        assert option in text, option
    assert "global batch" in text and "learning rate stays the paper's" in text
    assert "python -m agegender.data prepare" in text


# ------------------------------------------------------------------------------------------ --tfds-dir routing


@pytest.fixture
def fake_prepared(monkeypatch, tmp_path):
    """A stand-in ``agegender.data.prepared`` whose ``read_prepared`` reads generated raw data and logs calls."""
    import types

    from agegender.data.audit import read_dataset
    from agegender.data.synth import synthesize

    roots, calls = {}, []

    def read_prepared(source, data_dir, split="train"):
        calls.append((source, str(data_dir), split))
        if source not in roots:
            roots[source] = tmp_path / f"raw_{source}"
            synthesize(source, roots[source], 60, seed=0, size=32)
        return read_dataset(source, roots[source])

    module = types.ModuleType("agegender.data.prepared")
    module.read_prepared = read_prepared
    monkeypatch.setitem(sys.modules, "agegender.data.prepared", module)
    return calls


def test_read_samples_routes_to_the_prepared_data(fake_prepared, tmp_path):
    samples = cli.read_samples("utkface", None, tmp_path / "tfds")
    assert isinstance(samples, Samples) and len(samples.frame) == 60
    assert fake_prepared == [("utkface", str(tmp_path / "tfds"), "train")]
    with pytest.raises(DataError, match="lack the column.*fold"):
        cli.read_samples("utkface", None, tmp_path / "tfds", columns=("fold",))
    raw = cli.read_samples("utkface", Path(samples.root))  # no --tfds-dir: the raw reader on --data-dir
    assert len(raw.frame) == 60 and len(fake_prepared) == 2
    with pytest.raises(DataError, match="--data-dir DIR.*--tfds-dir DIR"):
        cli.read_samples("utkface", None, None)


def test_read_samples_without_the_prepared_module_is_one_error_line(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "agegender.data.prepared", None)  # import fails as if the file were absent
    with pytest.raises(DataError, match="cannot read prepared TFDS data"):
        cli.read_samples("utkface", None, tmp_path)


def test_every_reproduction_reads_through_tfds_dir(fake_prepared, tmp_path):
    from agegender.data.provenance import relative_data_path

    from reproductions import adience_levi as A
    from reproductions import efficientnet_age_groups as G
    from reproductions import mtl_weighted_loss as S
    from reproductions import utkface_dual_cnn as D
    from reproductions import utkface_xception as X

    tfds = tmp_path / "tfds"
    _, frame, split = D.load_split(None, D.smoke(D.SpezialiExperiment()), tfds)
    assert len(frame) == 60 and min(split.counts().values()) > 0
    _, frame, _ = X.load_split(None, X.smoke(X.DeyExperiment()), tfds)
    assert len(frame) > 0
    frame, info = A.load_adience(None, A.smoke(A.EXPERIMENTS["multitask"]), tfds_dir=tfds)
    assert len(frame) > 0 and info["prepared"] is True and info["path"] == relative_data_path(tfds)
    data = G.load_dataset("utkface", None, G.smoke(G.GuYangExperiment()), tfds)
    assert data["info"]["prepared"] is True and data["info"]["path"] == relative_data_path(tfds)
    assert data["info"]["counts"]["train"] > 0
    exp = S.smoke(S.SundriyalExperiment(dataset="utkface"))
    work = tmp_path / "work"
    work.mkdir()
    data = S.load_data(None, exp, work_dir=work, tfds_dir=tfds, log=lambda *a: None)
    assert min(data["counts"].values()) > 0
    assert [c[0] for c in fake_prepared] == ["utkface", "utkface", "adience", "utkface", "utkface"]
    assert {c[1] for c in fake_prepared} == {str(tfds)}


# ------------------------------------------------------------------------------------------ clean exits


def test_run_main_turns_user_errors_into_one_line(capsys):
    def fails(error):
        def main(argv):
            raise error
        return main

    assert cli.run_main(fails(DataError("bad labels", path="x.csv", fix="fix them"))) == 2
    assert capsys.readouterr().err == "error: x.csv: bad labels — fix: fix them\n"
    assert cli.run_main(fails(PermissionError(13, "Permission denied", "/out"))) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: /out: Permission denied") and err.count("\n") == 1
    assert cli.run_main(fails(KeyboardInterrupt())) == 130
    assert "rerun the same command to resume" in capsys.readouterr().err
    assert cli.run_main(lambda argv: 0 if argv == ["x"] else 1, ["x"]) == 0
    with pytest.raises(ValueError):  # a bug keeps its traceback
        cli.run_main(fails(ValueError("bug")))

