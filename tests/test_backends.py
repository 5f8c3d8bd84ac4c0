"""Issue 20 item 1: the suite trains on any Keras backend. The blocker (``tests/without_tensorflow.py``) makes
TensorFlow unimportable; every reproduction's smoke run finishes under ``KERAS_BACKEND=jax`` without
TensorFlow and writes complete records that name the backend (slow); a model saved under TensorFlow loads
under JAX and predicts the same, and one trained and saved under JAX loads under TensorFlow and predicts the
same (slow); the LRN layer and Grad-CAM agree across backends (each against an independent reference: numpy
for LRN, TensorFlow's ``GradientTape`` for Grad-CAM); what needs TensorFlow stops with one error line under
JAX. Early Freeze, resuming, the NaN guard and the loss weighting under JAX: ``tests/test_jax_training_logic.py``;
real faces under JAX: ``tests/test_jax_real_faces.py``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path


import numpy as np
import pytest

from tests.helpers import BLOCKER, REPO, _env

pytest.importorskip("jax")


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
