"""Issue 20 item 1: the suite trains on any Keras backend. Every reproduction's smoke run finishes under
``KERAS_BACKEND=jax`` with TensorFlow made unimportable (``tests/without_tensorflow.py``) and writes
complete records that name the backend; a model saved under TensorFlow loads under JAX and predicts the
same, and one trained and saved under JAX loads under TensorFlow and predicts the same; the LRN layer and
Grad-CAM agree across backends (each against an independent reference: numpy for LRN, TensorFlow's
``GradientTape`` for Grad-CAM). Under JAX without TensorFlow, Speziali's dual CNN, Jørgensen's Levi–Hassner
CNN and Dey & Aggarwal's MobileNet beat chance on held-out real UTKFace faces (slow), and Early Freeze,
resuming, the NaN guard and the learned loss weighting behave as their TensorFlow tests require."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
BLOCKER = REPO / "tests" / "without_tensorflow.py"

pytest.importorskip("jax")


def _env(**extra) -> dict:
    env = {**os.environ, "KERAS_BACKEND": "jax", "AGEGENDER_LOADER_WORKERS": "0", "CUDA_VISIBLE_DEVICES": "",
           "JAX_PLATFORMS": "cpu", "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.update(extra)
    return env


def _run_without_tensorflow(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BLOCKER), *args], cwd=cwd, env=_env(), capture_output=True,
                          text=True, timeout=timeout)


def test_the_blocker_blocks_tensorflow(tmp_path):
    script = tmp_path / "probe.py"
    script.write_text("import tensorflow\n")
    done = subprocess.run([sys.executable, str(BLOCKER), "probe"], cwd=tmp_path, env=_env(PYTHONPATH=str(tmp_path)),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "tensorflow is blocked" in done.stderr


# ------------------------------------------------------------------------------------ five smoke runs

def _smokes(data: dict[str, Path], out: Path) -> dict[str, list[str]]:
    return {
        "utkface_dual_cnn": ["reproductions.utkface_dual_cnn", "--data-dir", str(data["utk64"]), "--smoke",
                             "--networks", "dual", "--data-kind", "generated", "--out", str(out)],
        "adience_levi": ["reproductions.adience_levi", "--data-dir", str(data["adience"]), "--model", "multitask",
                         "--folds", "0", "--smoke", "--data-kind", "generated", "--verbose", "0", "--out", str(out)],
        "efficientnet_age_groups": ["reproductions.efficientnet_age_groups", "--imdb-wiki", str(data["imdb"]),
                                    "--utkface", str(data["utk40"]), "--source", "multi", "--smoke",
                                    "--freeze-backbone", "--out", str(out)],
        "mtl_weighted_loss": ["reproductions.mtl_weighted_loss", "--dataset", "utkface", "--data-dir",
                              str(data["utk32"]), "--method", "mtl", "--smoke", "--out", str(out)],
        "utkface_xception": ["reproductions.utkface_xception", "--data-dir", str(data["utk64"]), "--smoke",
                             "--backbone", "mobilenet", "--weights", "none", "--out", str(out)],
    }


@pytest.fixture(scope="module")
def generated(tmp_path_factory, adience_folds):
    from agegender.data.synth import synthesize

    root = tmp_path_factory.mktemp("backend_faces")
    data = {"utk64": root / "utk64", "utk40": root / "utk40", "utk32": root / "utk32", "imdb": root / "imdb",
            "adience": root / "adience"}
    synthesize("utkface", data["utk64"], 160, seed=0, size=64)
    synthesize("utkface", data["utk40"], 60, seed=0, size=40)
    synthesize("utkface", data["utk32"], 260, seed=0, size=32)
    synthesize("imdb_wiki", data["imdb"], 60, seed=0, size=40)
    synthesize("adience", data["adience"], 300, 0, size=72, adience_folds_dir=adience_folds)
    return data


@pytest.mark.slow
@pytest.mark.parametrize("reproduction", ["utkface_dual_cnn", "adience_levi", "efficientnet_age_groups",
                                          "mtl_weighted_loss", "utkface_xception"])
def test_smoke_run_under_jax_without_tensorflow(reproduction, generated, tmp_path):
    out = tmp_path / "out"
    done = _run_without_tensorflow(_smokes(generated, out)[reproduction], cwd=REPO)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in (out / "runs" / reproduction).glob("*/*/record.json")]
    trained = [r for r in records if r.get("history")]  # one entry per epoch trained
    assert records and trained, f"no trained record under {out}"
    for record in records:
        assert record["status"] == "complete"
        assert record["backend"] == "jax" and record["device"]["backend"]["name"] == "jax"
        assert record["device"]["backend"]["jax"]  # the version is recorded
    for record in trained:
        assert all(np.isfinite(float(epoch["loss"])) for epoch in record["history"]), record["experiment"]


# ------------------------------------------------------------------------- cross-backend numerics

_JAX_SIDE = textwrap.dedent("""
    import json, sys
    import numpy as np
    import keras
    import agegender.models  # registers the custom layers
    from agegender.models.activations import grad_cam
    from agegender.models.lrn import LocalResponseNormalization

    folder = sys.argv[1]
    inputs = np.load(folder + "/inputs.npz")
    out = {"backend": keras.backend.backend()}
    for name in ("dual", "levi"):
        model = keras.saving.load_model(f"{folder}/{name}.keras", safe_mode=True)
        pred = model.predict_on_batch(inputs[name])
        pred = pred if isinstance(pred, dict) else {model.output_names[0]: pred}
        np.savez(f"{folder}/{name}_jax_pred.npz", **{k: np.asarray(v, dtype="float32") for k, v in pred.items()})
        np.save(f"{folder}/{name}_jax_cam.npy", grad_cam(model, inputs[name][0], output="gender"))
    layer = LocalResponseNormalization(size=5, alpha=2.0, beta=0.75, bias=1.0)
    np.save(folder + "/lrn_jax.npy", keras.ops.convert_to_numpy(layer(inputs["lrn"])))
    print(json.dumps(out))
""")


def _lrn_numpy(a, size, alpha, beta, bias):
    """Caffe ACROSS_CHANNELS LRN in float64 (the reference; same formula as tests/test_models.py)."""
    half = size // 2
    out = np.empty_like(a, dtype=np.float64)
    for c in range(a.shape[-1]):
        lo, hi = max(0, c - half), min(a.shape[-1], c + half + 1)
        out[..., c] = a[..., c] / (bias + alpha / size * np.sum(a[..., lo:hi].astype(np.float64) ** 2, axis=-1)) ** beta
    return out


def test_a_tensorflow_model_loads_and_agrees_under_jax(tmp_path):
    """Saved under TensorFlow (this process), loaded with safe_mode under JAX without TensorFlow: the same
    predictions; Grad-CAM from JAX's gradient of the cut model equals TensorFlow's GradientTape map; the LRN
    layer under JAX equals the numpy formula."""
    import keras

    from agegender.models.activations import grad_cam
    from agegender.models.dual_cnn import build_dual_cnn
    from agegender.models.levi_hassner import build_levi_hassner

    assert keras.backend.backend() == "tensorflow"
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    models = {"dual": build_dual_cnn("dual"), "levi": build_levi_hassner("multitask")}
    inputs = {name: rng.uniform(0, 255, (2, *m.input.shape[1:])).astype("float32") for name, m in models.items()}
    inputs["lrn"] = rng.normal(0, 30, (2, 4, 5, 9)).astype("float32")
    np.savez(tmp_path / "inputs.npz", **inputs)
    tf_pred, tf_cam = {}, {}
    for name, model in models.items():
        model.save(tmp_path / f"{name}.keras")
        pred = model(inputs[name], training=False)
        tf_pred[name] = {k: np.asarray(v, dtype="float32") for k, v in pred.items()}
        tf_cam[name] = grad_cam(model, inputs[name][0], output="gender")

    script = tmp_path / "jax_side.py"
    script.write_text(_JAX_SIDE)
    done = subprocess.run([sys.executable, str(BLOCKER), "jax_side", str(tmp_path)], cwd=tmp_path,
                          env=_env(PYTHONPATH=os.pathsep.join([str(tmp_path), str(REPO)])), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["backend"] == "jax"
    for name in models:
        jax_pred = dict(np.load(tmp_path / f"{name}_jax_pred.npz"))
        assert set(jax_pred) == set(tf_pred[name])
        for task, values in tf_pred[name].items():
            np.testing.assert_allclose(jax_pred[task], values, rtol=1e-4, atol=1e-4, err_msg=f"{name} {task}")
        jax_cam = np.load(tmp_path / f"{name}_jax_cam.npy")
        assert jax_cam.shape == tf_cam[name].shape and tf_cam[name].std() > 0
        np.testing.assert_allclose(jax_cam, tf_cam[name], atol=2e-3, err_msg=f"{name} Grad-CAM")
    lrn = np.load(tmp_path / "lrn_jax.npy")
    reference = _lrn_numpy(inputs["lrn"], 5, 2.0, 0.75, 1.0)
    np.testing.assert_allclose(lrn, reference, rtol=1e-5, atol=1e-6)
    assert not np.allclose(lrn, inputs["lrn"], rtol=0.1)  # the normalisation acts at these values


# ------------------------------------------------------------------------ what needs TensorFlow says so

@pytest.mark.parametrize("args, needle", [
    (["-m", "agegender", "export", "x.keras", "--format", "savedmodel", "--out", "y"], "agegender export"),
    (["-m", "reproductions.utkface_xception", "--tfds-dir", "prepared", "--smoke", "--weights", "none"], "--tfds-dir"),
])
def test_tensorflow_only_features_stop_with_one_line(args, needle, tmp_path):
    done = subprocess.run([sys.executable, str(BLOCKER), *args[1:]], cwd=tmp_path, env=_env(), capture_output=True,
                          text=True, timeout=300)
    lines = [line for line in done.stderr.splitlines() + done.stdout.splitlines() if line.startswith("error:")]
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(lines) == 1 and needle in lines[0] and "KERAS_BACKEND is jax" in lines[0] and "fix:" in lines[0]
    assert "Traceback" not in done.stderr


# ------------------------------------------------------------------- JAX -> TensorFlow: a JAX-trained model

_JAX_TRAINS_AND_SAVES = textwrap.dedent("""
    import dataclasses, json, sys
    import numpy as np
    import keras
    import reproductions.utkface_dual_cnn as spz
    from agegender.models.loss_weighting import AdamL2
    from agegender.models.mtl_head import TASKS, HeadConfig, build_model as build_mtl
    from reproductions.adience_levi.config import EXPERIMENTS
    from reproductions.adience_levi.paper import build_model as build_levi, compile_model

    folder = sys.argv[1]
    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    n = 16  # 4 steps of 4
    pixels = lambda size: rng.uniform(0, 255, (n, size, size, 3)).astype("float32")  # noqa: E731
    # compiled as the reproductions compile them: Speziali's dual CNN (Adam, lambda_age) at 32 px; Jorgensen's
    # Levi-Hassner multi-task CNN (LRN, Eq. 1) at 48 px; Sundriyal's MTL network with the learned loss weighting
    # layer (MultiTaskLossModel, LossWeighting, AdamL2) on a small backbone
    dual = spz.build_network("dual", dataclasses.replace(spz.SpezialiExperiment(), input_size=32, lr_dual=0.001))
    exp = dataclasses.replace(EXPERIMENTS["multitask"], image_size=48, load_size=56, learning_rate=1e-3)
    levi = compile_model(build_levi(exp), exp)
    image = keras.Input((16, 16, 3), name="image")
    features = keras.layers.GlobalAveragePooling2D(name="gap")(
        keras.layers.Conv2D(4, 3, strides=2, name="c1")(keras.layers.Rescaling(1 / 255.0, name="rescale")(image)))
    mtl = build_mtl(keras.Model(image, features, name="backbone"), TASKS["utkface"], "mtl", lam=0.3, seed=1,
                    head=HeadConfig(shared_units=(8,), task_units=4))
    mtl.compile(optimizer=AdamL2(0.05, l2=1e-5))
    data = {
        "dual": (pixels(32), {"gender": rng.integers(0, 2, n).astype("int32"),
                              "age": rng.uniform(1, 90, (n, 1)).astype("float32")}),
        "levi": (pixels(48), {"gender": rng.integers(0, 2, (n, 1)).astype("float32"),
                              "age": rng.integers(0, 8, n).astype("int32")}),
        "mtl": (pixels(16), {"gender": rng.integers(0, 2, n).astype("int32"),
                             "race": rng.integers(0, 5, n).astype("int32"),
                             "age": rng.uniform(0, 1, (n, 1)).astype("float32")}),
    }
    out = {"backend": keras.backend.backend(), "moved": {}, "iterations": {}}
    probes = {}
    for name, model in {"dual": dual, "levi": levi, "mtl": mtl}.items():
        x, y = data[name]
        probes[name] = x[:4]
        before = model.predict_on_batch(x[:4])
        model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
        after = model.predict_on_batch(x[:4])
        out["moved"][name] = {k: float(np.max(np.abs(np.asarray(after[k]) - np.asarray(before[k])))) for k in after}
        out["iterations"][name] = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
        model.save(f"{folder}/{name}.keras")
        np.savez(f"{folder}/{name}_jax_pred.npz", **{k: np.asarray(v, dtype="float32") for k, v in after.items()})
    np.savez(folder + "/inputs.npz", **probes)
    out["loss_weights"] = mtl.loss_weights()
    out["bn_moving_mean"] = float(np.abs(np.asarray(dual.get_layer("block1_bn").moving_mean)).max())
    print(json.dumps(out))
""")


@pytest.mark.slow
def test_a_jax_trained_model_loads_and_agrees_under_tensorflow(tmp_path):
    """Built, compiled and trained 4 steps under JAX without TensorFlow, saved as .keras; loaded here under
    TensorFlow with safe_mode: the same predictions, the optimizer's step count, and the custom pieces
    (LRN, the learned loss weighting, AdamL2) come back."""
    import keras

    from agegender.models.loss_weighting import AdamL2, MultiTaskLossModel
    from agegender.models.lrn import LocalResponseNormalization

    assert keras.backend.backend() == "tensorflow"
    script = tmp_path / "jax_trains.py"
    script.write_text(_JAX_TRAINS_AND_SAVES)
    done = subprocess.run([sys.executable, str(BLOCKER), "jax_trains", str(tmp_path)], cwd=tmp_path,
                          env=_env(PYTHONPATH=os.pathsep.join([str(tmp_path), str(REPO)])), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    jax_side = json.loads(done.stdout.strip().splitlines()[-1])
    assert jax_side["backend"] == "jax"
    # the 4 steps moved every output far beyond the tolerance below, and the batch norm's moving mean off its 0
    for name, moved in jax_side["moved"].items():
        assert min(moved.values()) > 1e-3, (name, moved)
    assert jax_side["bn_moving_mean"] > 1e-3
    inputs = np.load(tmp_path / "inputs.npz")
    for name in ("dual", "levi", "mtl"):
        model = keras.saving.load_model(tmp_path / f"{name}.keras", safe_mode=True)
        assert int(model.optimizer.iterations.numpy()) == 4, name  # 16 samples, batches of 4, one epoch
        pred = {k: np.asarray(v, dtype="float32") for k, v in model(inputs[name], training=False).items()}
        jax_pred = dict(np.load(tmp_path / f"{name}_jax_pred.npz"))
        assert set(pred) == set(jax_pred), name
        for task, values in jax_pred.items():
            np.testing.assert_allclose(pred[task], values, rtol=1e-4, atol=1e-4, err_msg=f"{name} {task}")
        if name == "levi":
            assert {type(model.get_layer(f"block{i}_lrn")) for i in (1, 2, 3)} == {LocalResponseNormalization}
        if name == "mtl":
            assert isinstance(model, MultiTaskLossModel) and model.weighting.lam == pytest.approx(0.3)
            assert isinstance(model.optimizer, AdamL2) and model.optimizer.l2 == pytest.approx(1e-5)
            assert model.loss_weights() == pytest.approx(jax_side["loss_weights"], rel=1e-6)
            assert sum(model.loss_weights().values()) == pytest.approx(1.0, abs=1e-6)
    keras.backend.clear_session()


# ------------------------------------------ Early Freeze, resume, NaN guard, loss weighting under JAX

_JAX_TRAINING_LOGIC = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import numpy as np
    import keras
    from agegender.cli import read_samples
    from agegender.data.inputs import dataset
    from agegender.errors import TrainingDiverged
    from agegender.models.early_freeze import EarlyFreeze, ResumableReduceLROnPlateau
    from agegender.models.loss_weighting import AdamL2
    from agegender.models.mtl_head import TASKS, HeadConfig, build_model, layer_groups
    from agegender.training import train
    from reproductions.mtl_weighted_loss.config import SundriyalExperiment
    from reproductions.mtl_weighted_loss.paper import targets_for

    faces, work = sys.argv[1], Path(sys.argv[2])
    NAMES = ("gender", "race", "age")
    frame = read_samples("utkface", faces).frame.copy()
    frame["coral_label"] = frame["age"].clip(21, 60) - 21  # Sundriyal's age label (CORAL, ages 21-60) for every row
    # the numpy loader without a random stream (training=False: the same batches in the same order every epoch),
    # so that a resumed run can end exactly where an uninterrupted one does (as tests/test_resume.py's toy data)
    data = dataset(frame, targets_for("utkface", NAMES, SundriyalExperiment()), image_size=16, batch_size=16,
                   training=False, pixel_scale=1.0)
    out = {"backend": keras.backend.backend(), "batches": len(data)}


    def backbone():
        image = keras.Input((16, 16, 3), name="image")
        x = keras.layers.Conv2D(4, 3, strides=2, name="c1")(keras.layers.Rescaling(1 / 255.0, name="rescale")(image))
        return keras.Model(image, keras.layers.GlobalAveragePooling2D(name="gap")(x), name="backbone")


    def mtl(seed=0, lam=0.1, dropout=0.5, lr=1e-2):
        # Sundriyal's MTL network (shared layers, task layers, learned loss weights, AdamL2) on a small backbone
        keras.utils.set_random_seed(seed)
        model = build_model(backbone(), TASKS["utkface"], "mtl", lam=lam, seed=seed + 1,
                            head=HeadConfig(shared_units=(8,), task_units=4, dropout=dropout))
        model.compile(optimizer=AdamL2(lr, l2=1e-5))
        return model


    def weights(model):
        return {l.name: [np.array(v) for v in l.get_weights()] for l in model.network.layers if l.weights}


    def same(a, b, names):
        return all(np.array_equal(x, y) for n in names if n in a for x, y in zip(a[n], b[n]))


    def changed(a, b, names):
        return any(not np.array_equal(x, y) for n in names if n in a for x, y in zip(a[n], b[n]))


    class Probe(keras.callbacks.Callback):  # the network's weights at the start (0) and the end of each epoch
        def __init__(self):
            super().__init__()
            self.weights = {}

        def on_train_begin(self, logs=None):
            self.weights[0] = weights(self.model)

        def on_epoch_end(self, epoch, logs=None):
            self.weights[epoch + 1] = weights(self.model)


    class Script(keras.callbacks.Callback):  # replaces the validation losses by scripted ones
        def __init__(self, script):
            super().__init__()
            self.script = script

        def on_epoch_end(self, epoch, logs=None):
            logs.update({f"val_{t}_loss": v[epoch] for t, v in self.script.items()})


    class Interrupt(Exception):
        pass


    class Kill(keras.callbacks.Callback):  # stands in for a kill at the start of epoch `at` (0-based)
        def __init__(self, at):
            super().__init__()
            self.at = at

        def on_epoch_begin(self, epoch, logs=None):
            if epoch == self.at:
                raise Interrupt


    # 1. the learned loss weighting: the logged loss is Eq. 3.5 computed in numpy; the weights learn
    model = mtl(lam=0.3)
    x, y, w = data[0]
    logs = model.evaluate(x, y, batch_size=len(x), return_dict=True, verbose=0)
    p = {k: np.asarray(v, dtype="float64") for k, v in model.predict_on_batch(x).items()}
    rows = np.arange(len(x))
    losses = {t: float(np.mean(-np.log(p[t][rows, np.asarray(y[t]).astype(int)]))) for t in ("gender", "race")}
    losses["age"] = float(np.mean(0.5 * (np.asarray(y["age"], dtype="float64") - p["age"]) ** 2))  # Eq. 3.2
    logits = np.asarray(model.weighting.logits, dtype="float64")
    softmax = dict(zip(model.weighting.tasks, np.exp(logits) / np.exp(logits).sum()))
    penalty = 0.3 * sum(v * v for v in softmax.values())
    before = model.loss_weights()
    history = model.fit(data, epochs=2, verbose=0, shuffle=False).history
    out["weighting"] = {"logs": {k: float(v) for k, v in logs.items()}, "losses": losses, "softmax": softmax,
                        "expected_loss": sum(softmax[t] * losses[t] for t in NAMES) + penalty, "penalty": penalty,
                        "model_weights": before, "after": model.loss_weights(),
                        "min_sample_weight": min(float(np.min(v)) for v in w.values()),
                        "logged": {t: history[f"loss_weight_{t}"] for t in NAMES}}

    # 2. Early Freeze, Algorithm 1, on scripted validation losses (tests/test_mtl_weighted_loss.py's script)
    script = {"gender": [5, 4, 3, 3.5, 3.6, 3.7, 3, 3, 3, 3, 3, 3, 3],
              "race": [5, 4, 3, 2, 2.5, 2.6, 2.7, 2.8, 2, 2, 2, 2, 2],
              "age": [5, 4, 3, 2, 1, 0.5, 0.4, 0.3, 0.2, 0.1, 0.1, 0.1, 0.1]}
    model = mtl()
    groups = layer_groups(model.network, NAMES)
    shared, task = groups["backbone"] + groups["shared"], groups["tasks"]
    every = shared + [n for names in task.values() for n in names]
    freezer = EarlyFreeze(task, shared, patience=3, mode="freeze")
    before, after = Probe(), Probe()
    model.fit(data, validation_data=data, epochs=12, callbacks=[Script(script), before, freezer, after], verbose=0,
              shuffle=False)
    b, a, final = before.weights, after.weights, weights(model)
    out["early_freeze"] = {
        "events": [[e["task"], e["epoch"], e["best_epoch"], e["restore"]] for e in freezer.events],
        "first_frozen": sorted(freezer.events[0]["frozen"]), "shared_and_gender": sorted(shared + task["gender"]),
        "not_trainable": sorted(n for n in every if not model.network.get_layer(n).trainable),
        "restored_to_epoch_3": same(a[6], b[3], every), "moved_epochs_4_to_6": changed(b[6], b[3], every),
        "frozen_unchanged_7_to_11": same(b[11], a[6], shared + task["gender"]),
        "race_trained_7_to_11": changed(b[11], a[6], task["race"]),
        "age_trained_7_to_11": changed(b[11], a[6], task["age"]),
        "race_back_to_9": same(a[12], b[9], task["race"]), "age_kept_at_12": same(a[12], b[12], task["age"]),
        "age_back_to_10_at_end": same(final, b[10], task["age"]), "task_gate": np.asarray(model.task_gate).tolist(),
        "epochs": [e["epoch"] for e in freezer.epochs],
        "trainable_params": [e["trainable_params"] for e in freezer.epochs]}

    # 3. resume: killed at the start of epoch 2 (epoch 1's state saved), resumed in a model of other initial
    # weights, ends where the uninterrupted run ends (no dropout, no shuffle: nothing random)
    def run(seed, state_dir=None, extra=(), info=None):
        model = mtl(seed=seed, dropout=0.0)
        start = weights(model)
        try:
            history = train(model, data, data, epochs=3, patience=2, verbose=0, state_dir=state_dir,
                            extra_callbacks=list(extra), info=info)
        except Interrupt:
            history = None
        return model, start, history

    reference, ref_start, ref_history = run(0)
    _, _, killed = run(0, work / "resume", [Kill(1)])
    saved = json.loads((work / "resume" / "state.json").read_text())
    info = {}
    resumed, start, history = run(7, work / "resume", info=info)
    out["resume"] = {
        "killed_returned": killed is not None, "saved_epoch": saved["epoch"], "info": info,
        "start_differs": changed(start, ref_start, list(ref_start)),
        "epochs": [h["epoch"] for h in history], "reference_epochs": [h["epoch"] for h in ref_history],
        "loss": [[h["loss"], r["loss"]] for h, r in zip(history, ref_history)],
        "val_loss": [[h["val_loss"], r["val_loss"]] for h, r in zip(history, ref_history)],
        "max_weight_difference": max(float(np.max(np.abs(np.asarray(p) - np.asarray(q))))
                                     for p, q in zip(resumed.get_weights(), reference.get_weights())),
        "iterations": [int(keras.ops.convert_to_numpy(m.optimizer.iterations)) for m in (resumed, reference)]}

    # 4. Early Freeze resumed by train(): killed after epoch 3 (gender frozen at 2); in a new model the frozen
    # layers stay unchanged and race goes back to its epoch-3 weights (tests/test_mtl_weighted_loss.py)
    scripted = {"gender": [1, 2, 2, 2, 2], "race": [5, 4, 3, 3.5, 3.6], "age": [5, 4, 3, 2, 1]}

    def attempt(extra):
        model = mtl(lr=1e-3)
        groups = layer_groups(model.network, NAMES)
        freezer = EarlyFreeze(groups["tasks"], groups["backbone"] + groups["shared"], patience=1,
                              state_dir=work / "freeze")
        probe, info = Probe(), {}
        callbacks = [Script(scripted), ResumableReduceLROnPlateau(monitor="val_loss", patience=2), freezer, probe,
                     *extra]
        try:
            train(model, data, data, epochs=5, state_dir=work / "freeze", extra_callbacks=callbacks, verbose=0,
                  info=info)
        except Interrupt:
            pass
        return model, groups, freezer, probe, info

    _, _, f1, p1, _ = attempt([Kill(3)])
    model, groups, freezer, probe, info = attempt([])
    fixed = groups["backbone"] + groups["shared"] + groups["tasks"]["gender"]
    race, age = groups["tasks"]["race"], groups["tasks"]["age"]
    out["freeze_resume"] = {
        "first_events": [[e["task"], e["epoch"], e["best_epoch"]] for e in f1.events], "info": info,
        "restored": same(probe.weights[0], p1.weights[3], fixed + race),
        "frozen_again": same(probe.weights[4], p1.weights[3], fixed),
        "age_trained": changed(probe.weights[4], p1.weights[3], age),
        "events": [[e["task"], e["epoch"], e["best_epoch"], e["restore"]] for e in freezer.events],
        "race_snapshot_kept": same(weights(model), p1.weights[3], race),
        "epochs": [e["epoch"] for e in freezer.epochs]}


    # 5. the NaN guard: the learning rate jumps to 1e30 at the start of epoch 2, the loss becomes inf / NaN
    class Blow(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            began.append(epoch + 1)
            if epoch == 1:
                self.model.optimizer.learning_rate.assign(1e30)


    began, probe = [], Probe()
    model = mtl(dropout=0.0)
    try:
        train(model, data, data, epochs=4, verbose=0, state_dir=work / "nan", extra_callbacks=[Blow(), probe])
        message = None
    except TrainingDiverged as err:
        message = str(err)
    final = weights(model)
    out["nan_guard"] = {
        "message": message, "began": began,
        "saved_epoch": json.loads((work / "nan" / "state.json").read_text())["epoch"],
        "blown_up": not all(np.all(np.isfinite(v)) for vs in probe.weights.get(2, {}).values() for v in vs),
        "back_to_epoch_1": same(final, probe.weights[1], list(final)) and changed(final, probe.weights[0], list(final)),
        "finite": all(np.all(np.isfinite(v)) for vs in final.values() for v in vs)}
    print(json.dumps(out))
""")


@pytest.fixture(scope="module")
def training_logic_under_jax(tmp_path_factory) -> dict:
    """One JAX process without TensorFlow runs the checks of ``_JAX_TRAINING_LOGIC`` on 48 generated faces."""
    from agegender.data.synth import synthesize

    root = tmp_path_factory.mktemp("jax_training_logic")
    synthesize("utkface", root / "faces", 48, seed=0, size=16)
    (root / "jax_training_logic.py").write_text(_JAX_TRAINING_LOGIC)
    (root / "work").mkdir()
    done = subprocess.run([sys.executable, str(BLOCKER), "jax_training_logic", str(root / "faces"), str(root / "work")],
                          cwd=root, env=_env(PYTHONPATH=os.pathsep.join([str(root), str(REPO)])), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["backend"] == "jax" and out["batches"] == 3
    return out


@pytest.mark.slow
def test_loss_weighting_is_eq_3_5_and_learns_under_jax(training_logic_under_jax):
    r = training_logic_under_jax["weighting"]
    assert r["min_sample_weight"] == 1.0  # every face of the batch labelled for every task
    for task, value in r["losses"].items():  # Eq. 3.2 / cross-entropy from the predictions, in numpy
        assert r["logs"][f"{task}_loss"] == pytest.approx(value, rel=1e-4), task
    assert r["model_weights"] == pytest.approx(r["softmax"], rel=1e-6)  # w = softmax(logits)
    assert r["logs"]["loss"] == pytest.approx(r["expected_loss"], rel=1e-4)  # sum w_i L_i + lambda sum w_i^2
    assert r["logs"]["loss_weight_penalty"] == pytest.approx(r["penalty"], rel=1e-5)
    assert max(abs(r["after"][t] - r["model_weights"][t]) for t in r["after"]) > 1e-4  # the weights learn
    assert sum(r["after"].values()) == pytest.approx(1.0, abs=1e-6)
    assert all(len(v) == 2 for v in r["logged"].values())
    assert sum(v[-1] for v in r["logged"].values()) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.slow
def test_early_freeze_follows_algorithm_1_under_jax(training_logic_under_jax):
    """As tests/test_mtl_weighted_loss.py under TensorFlow: gender converges at epoch 6 (best 3, patience 3) and
    the whole network goes back to epoch 3; race at 12 (best 9), only its layers; age at the epoch limit."""
    r = training_logic_under_jax["early_freeze"]
    assert r["events"] == [["gender", 6, 3, "model"], ["race", 12, 9, "task"], ["age", None, 10, "task"]]
    assert r["first_frozen"] == r["shared_and_gender"]
    assert r["restored_to_epoch_3"] and r["moved_epochs_4_to_6"]
    assert r["frozen_unchanged_7_to_11"]  # the rebuilt JAX train step leaves the frozen layers alone
    assert r["race_trained_7_to_11"] and r["age_trained_7_to_11"]
    assert r["race_back_to_9"] and r["age_kept_at_12"] and r["age_back_to_10_at_end"]
    assert r["task_gate"] == [0.0, 0.0, 1.0]
    assert r["epochs"] == list(range(1, 13))
    assert r["trainable_params"][5] < r["trainable_params"][4]


@pytest.mark.slow
def test_training_resumes_exactly_under_jax(training_logic_under_jax):
    r = training_logic_under_jax["resume"]
    assert not r["killed_returned"] and r["saved_epoch"] == 1
    assert r["info"]["resumed_from_epoch"] == 1 and r["info"]["trained"]
    assert r["start_differs"]  # everything the resumed run ends with came from the saved state
    assert r["epochs"] == r["reference_epochs"] == [1, 2, 3]
    for ours, theirs in r["loss"] + r["val_loss"]:
        assert ours == pytest.approx(theirs, rel=1e-5)
    assert r["max_weight_difference"] < 1e-5
    assert r["iterations"] == [9, 9]  # 3 epochs of 3 batches, epoch 1's steps restored with the optimizer


@pytest.mark.slow
def test_early_freeze_resumes_with_layers_frozen_again_under_jax(training_logic_under_jax):
    r = training_logic_under_jax["freeze_resume"]
    assert r["first_events"] == [["gender", 2, 1]]
    assert r["info"]["resumed_from_epoch"] == 3 and r["info"]["trained"]
    assert r["restored"] and r["frozen_again"] and r["age_trained"]
    assert r["events"] == [["gender", 2, 1, "model"], ["race", 4, 3, "task"], ["age", None, 5, "task"]]
    assert r["race_snapshot_kept"]  # the epoch-3 snapshot survived the interruption
    assert r["epochs"] == [1, 2, 3, 4, 5]


@pytest.mark.slow
def test_nan_guard_stops_and_restores_under_jax(training_logic_under_jax):
    r = training_logic_under_jax["nan_guard"]
    assert r["message"] and r["message"].startswith("training diverged: the loss became")
    assert "at epoch 2" in r["message"] and "back at the end of epoch 1" in r["message"]
    assert r["began"] == [1, 2]  # stopped within epoch 2
    assert r["saved_epoch"] == 1  # a diverged state is never saved
    assert r["blown_up"]  # the weights had become non-finite ...
    assert r["back_to_epoch_1"] and r["finite"]  # ... and are epoch 1's again



# ------------------------------------------------------------- real faces: three reproductions learn under JAX

_JAX_LEARNS = textwrap.dedent(r"""
    import dataclasses, json, sys, time
    import numpy as np
    import keras
    from agegender.metrics import collapse_check
    from agegender.training import collect_predictions, configure_precision

    faces = sys.argv[1]
    configure_precision("float32")
    out = {"backend": keras.backend.backend()}


    def held_out(model, ds, train_age=None, onehot=False):
        # labels and predictions on held-out faces, the collapse check, and the chance levels they must beat
        y, p, _ = collect_predictions(model, ds)
        truth = np.argmax(y["gender"], -1) if onehot else np.ravel(y["gender"]).astype(int)
        prob = np.asarray(p["gender"])
        pred = np.argmax(prob, -1) if prob.shape[-1] > 1 else (np.ravel(prob) > 0.5).astype(int)
        r = {"n": int(len(truth)), "accuracy": float(np.mean(pred == truth)),
             "majority": float(max(np.mean(truth), 1 - np.mean(truth)))}
        if "age" in p and train_age is not None:
            age, age_pred = np.ravel(y["age"]), np.ravel(p["age"])
            r["mae"], r["mean_mae"] = float(np.mean(np.abs(age - age_pred))), float(np.mean(np.abs(age - train_age)))
            r["reasons"] = collapse_check(age_true=age, age_pred=age_pred, gender_true=truth, gender_prob=prob)
        else:
            r["reasons"] = collapse_check(gender_true=truth, gender_prob=prob)
        return r


    def timed(name, run):
        wall, cpu = time.time(), time.process_time()
        out[name] = run()
        out[name].update(wall_s=round(time.time() - wall, 1), cpu_s=round(time.process_time() - cpu, 1))
        print(name, json.dumps(out[name]), file=sys.stderr, flush=True)


    def speziali():
        # Speziali's dual-task CNN at lr 0.001 (the paper's 0.01 collapses on real faces), 32 px, batches of 16
        import reproductions.utkface_dual_cnn as spz

        exp = dataclasses.replace(spz.SpezialiExperiment(), input_size=32, batch_size=16, max_images=3000,
                                  precision="float32", lr_dual=0.001)
        _, _, split = spz.load_split(faces, exp)
        keras.utils.set_random_seed(0)
        data = spz.make_datasets(split, exp, spz.NETWORKS["dual"].tasks, [])
        model = spz.build_network("dual", exp)
        history = model.fit(data["train"], epochs=3, verbose=0, shuffle=False).history
        return {"steps": 3 * len(data["train"]), "loss": history["loss"],
                **held_out(model, data["val"], train_age=split.part("train")["age"].mean())}


    def levi():
        # Jorgensen's reduced Levi-Hassner CNN (LRN), gender, on the Speziali split of the same faces: 40 px crops
        # of 48 px, batches of 16, lr 1e-3 (the paper's 1e-4 is still at chance after 3 epochs here)
        import reproductions.utkface_dual_cnn as spz
        from reproductions.adience_levi.config import EXPERIMENTS
        from reproductions.adience_levi.paper import build_model, compile_model, make_datasets

        _, _, split = spz.load_split(faces, dataclasses.replace(spz.SpezialiExperiment(), max_images=3000))
        exp = dataclasses.replace(EXPERIMENTS["gender"], image_size=40, load_size=48, batch_size=16,
                                  learning_rate=1e-3, oversample=False)
        keras.utils.set_random_seed(0)
        train_ds, val_ds, _ = make_datasets(exp, split, 0, [])
        model = compile_model(build_model(exp), exp)
        history = model.fit(train_ds, epochs=5, verbose=0, shuffle=False).history
        return {"steps": 5 * len(train_ds), "loss": history["loss"], **held_out(model, val_ds)}


    def dey():
        # Dey & Aggarwal's MobileNet multi-head model from scratch as the reproduction builds it, 32 px; as in
        # tests/test_collapse.py: constant held-out outputs until the BatchNorm moving statistics catch up, so the
        # moving statistics are then set from 256 training faces (the weights untouched) and the model judged again
        from reproductions.utkface_xception.config import DeyExperiment
        from reproductions.utkface_xception.paper import build_model, load_split, make_datasets

        exp = dataclasses.replace(DeyExperiment(), backbone="mobilenet", weights=None, input_size=32, max_images=2400,
                                  precision="float32")
        _, _, split = load_split(faces, exp)
        keras.utils.set_random_seed(0)
        data = make_datasets(split, exp, 32, [])
        model = build_model(exp, 32)
        history = model.fit(data["train"], epochs=3, verbose=0, shuffle=False).history
        train_age = split.part("train")["age"].mean() / exp.max_age
        raw = held_out(model, data["val"], train_age=train_age, onehot=True)
        norms = [layer for layer in model.get_layer("mobilenet").layers
                 if isinstance(layer, keras.layers.BatchNormalization)]
        before = [np.asarray(layer.moving_variance).copy() for layer in norms]
        sample = np.concatenate([np.asarray(data["train_eval"][i][0]) for i in range(16)])  # 256 training faces
        for layer in norms:
            layer.momentum = 0.0  # the next pass in training mode sets the moving statistics to this batch's
        model(sample, training=True)
        ratio = {layer.name: float(np.median(b / np.asarray(layer.moving_variance))) for layer, b in zip(norms, before)}
        return {"steps": 3 * len(data["train"]), "train_gender_accuracy": history["gender_accuracy"][-1], "raw": raw,
                "depthwise_ratios": {k: v for k, v in ratio.items() if k.startswith("conv_dw_")},
                "shrink": float(np.prod(np.sqrt(list(ratio.values())))),
                "recalibrated": held_out(model, data["val"], train_age=train_age, onehot=True)}


    for name in (sys.argv[2].split(",") if len(sys.argv) > 2 else ("speziali", "levi", "dey")):
        timed(name, {"speziali": speziali, "levi": levi, "dey": dey}[name])
    print(json.dumps(out))
""")


@pytest.fixture(scope="module")
def real_faces_under_jax(utkface_sample, tmp_path_factory) -> dict:
    """One JAX process without TensorFlow trains the three models of ``_JAX_LEARNS`` on real UTKFace faces."""
    root = tmp_path_factory.mktemp("jax_learns")
    (root / "jax_learns.py").write_text(_JAX_LEARNS)
    # one BLAS thread: the numpy loader resizes in this process (workers 0), and OpenBLAS's threads beside
    # XLA's made each 200 -> 48 px resize take 8 ms instead of 0.5 on 2 busy cores
    done = subprocess.run([sys.executable, str(BLOCKER), "jax_learns", str(utkface_sample)], cwd=root,
                          env=_env(PYTHONPATH=os.pathsep.join([str(root), str(REPO)]), OPENBLAS_NUM_THREADS="1"),
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["backend"] == "jax"
    return out


@pytest.mark.slow
def test_speziali_dual_cnn_learns_real_faces_under_jax(real_faces_under_jax):
    """276 steps of 16 real faces at 32 px (3,000 faces, the Speziali split), lr 0.001: neither output collapsed,
    gender beats the majority share and age the train-mean MAE on the 630 held-out faces."""
    r = real_faces_under_jax["speziali"]
    assert not r["reasons"], r
    assert r["accuracy"] > r["majority"] + 0.04, r
    assert r["mae"] < r["mean_mae"], r


@pytest.mark.slow
def test_levi_hassner_cnn_learns_gender_from_real_faces_under_jax(real_faces_under_jax):
    """Jørgensen's reduced Levi–Hassner CNN (with its LRN layers), gender, lr 1e-3, 460 steps of 16 real faces
    (40 px crops of 48 px) on the same split as Speziali's."""
    r = real_faces_under_jax["levi"]
    assert not r["reasons"], r
    assert r["accuracy"] > r["majority"] + 0.04, r


@pytest.mark.slow
def test_dey_mobilenet_learns_under_jax_once_batchnorm_statistics_catch_up(real_faces_under_jax):
    """As tests/test_collapse.py finds under TensorFlow: after 177 steps from scratch MobileNet's held-out outputs are
    constant (the BatchNorm moving variances are still far above the true ones), while training-mode accuracy has
    risen; with the moving statistics of 256 training faces the same weights beat both chance levels."""
    r = real_faces_under_jax["dey"]
    assert r["train_gender_accuracy"] > 0.6, r["train_gender_accuracy"]  # training mode (batch statistics) learns
    raw = r["raw"]
    assert any("age predictions nearly constant" in reason for reason in raw["reasons"]), raw
    assert any(reason.startswith("gender:") or "gender probabilities" in reason for reason in raw["reasons"]), raw
    assert raw["accuracy"] == pytest.approx(raw["majority"]), raw
    assert len(r["depthwise_ratios"]) == 13 and min(r["depthwise_ratios"].values()) > 2, r["depthwise_ratios"]
    assert r["shrink"] > 1e4, r["shrink"]
    fixed = r["recalibrated"]
    assert not fixed["reasons"], fixed
    assert fixed["accuracy"] > fixed["majority"] + 0.04, fixed
    assert fixed["mae"] < fixed["mean_mae"], fixed
