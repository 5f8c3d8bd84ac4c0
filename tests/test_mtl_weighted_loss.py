"""Sundriyal reproduction (``python -m reproductions.mtl_weighted_loss``): learned loss weights, Early
Freeze, the face backbones and weight loading by name, the three networks, the table cells, the
command line, and smoke runs on generated UTKFace / CelebA layouts and on the real CORAL lists."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest

import reproductions.mtl_weighted_loss as sun
from agegender.errors import DataError


def _tiny_backbone(size=16):
    import keras

    inputs = keras.Input((size, size, 3), name="image")
    x = keras.layers.Rescaling(1 / 255.0, name="rescale")(inputs)
    x = keras.layers.Conv2D(4, 3, strides=2, name="c1")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, x, name="backbone")


def _batch(n=32, size=16, seed=0, tasks=("gender", "race", "age")):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, (n, size, size, 3)).astype("float32")
    every = {"gender": rng.integers(0, 2, n).astype("int32"), "race": rng.integers(0, 5, n).astype("int32"),
             "age": rng.uniform(0, 1, (n, 1)).astype("float32")}
    return x, {t: every[t] for t in tasks}


def _utk_model(lam=0.1, seed=1, loss="weighted", method="mtl"):
    import keras

    from agegender.models.mtl_head import TASKS, HeadConfig, build_model

    keras.utils.set_random_seed(0)
    tasks = TASKS["utkface"] if method == "mtl" else {"gender": TASKS["utkface"]["gender"]}
    return build_model(_tiny_backbone(), tasks, method, loss=loss, lam=lam, seed=seed,
                       head=HeadConfig(shared_units=(8,), task_units=4))


# ---------------------------------------------------------------------------------------------- loss weights


def test_weights_stay_a_simplex_and_receive_gradients():
    import keras
    import tensorflow as tf

    from agegender.models.loss_weighting import LossWeighting

    layer = LossWeighting(("gender", "race", "age"), lam=0.1, seed=3)
    w0 = keras.ops.convert_to_numpy(layer.task_weights())
    assert np.all(w0 > 0) and w0.sum() == pytest.approx(1.0, abs=1e-6)
    assert len(set(np.round(w0, 4))) == 3  # "set randomly initially"
    assert [v.name for v in layer.trainable_weights] == ["logits"]
    losses = tf.constant([0.7, 1.6, 0.05])
    optimizer = keras.optimizers.SGD(0.5)
    for _ in range(25):
        with tf.GradientTape() as tape:
            total = layer(losses)
        grads = tape.gradient(total, layer.trainable_weights)
        assert np.abs(grads[0].numpy()).sum() > 0
        optimizer.apply_gradients(zip(grads, layer.trainable_weights))
        w = keras.ops.convert_to_numpy(layer.task_weights())
        assert np.all(w > 0) and w.sum() == pytest.approx(1.0, abs=1e-6)
    assert np.argmax(w) == 2 and w[2] > w0[2]  # weight moves to the smallest loss; lambda keeps the others > 0
    average = LossWeighting(("gender", "age"), mode="average")
    assert not average.trainable_weights
    assert keras.ops.convert_to_numpy(average.task_weights()).tolist() == [0.5, 0.5]
    assert float(average(tf.constant([1.0, 3.0]))) == pytest.approx(2.0)  # plain mean, no penalty


def test_lambda_term_is_in_the_loss():
    import tensorflow as tf

    from agegender.models.loss_weighting import LossWeighting

    losses = tf.constant([0.5, 1.5, 0.2])
    a = LossWeighting(("gender", "race", "age"), lam=0.0, seed=7)
    b = LossWeighting(("gender", "race", "age"), lam=0.7, seed=7)
    w = b.task_weights().numpy()
    assert float(a(losses)) == pytest.approx(float(np.dot(w, losses.numpy())), rel=1e-6)
    assert float(b(losses)) - float(a(losses)) == pytest.approx(0.7 * float(np.sum(w ** 2)), rel=1e-5)
    as_dict = {t: tf.constant(v) for t, v in zip(("age", "gender", "race"), (0.2, 0.5, 1.5))}  # any key order
    assert float(b(losses)) == pytest.approx(float(b(as_dict)), rel=1e-6)


def test_model_loss_is_eq_3_5_weights_are_logged_learned_and_saved(tmp_path):
    import keras

    from agegender.models.loss_weighting import AdamL2, MultiTaskLossModel

    model = _utk_model(lam=0.3)
    model.compile(optimizer=AdamL2(0.05, l2=1e-5))
    x, y = _batch()
    logs = model.evaluate(x, y, batch_size=32, return_dict=True, verbose=0)
    p = model.predict(x, verbose=0)
    w = model.loss_weights()
    ce = {t: float(np.mean(-np.log(p[t][np.arange(32), y[t]]))) for t in ("gender", "race")}
    half_mse = float(np.mean(0.5 * (y["age"] - p["age"]) ** 2))  # Eq. 3.2
    for task, value in {**ce, "age": half_mse}.items():
        assert logs[f"{task}_loss"] == pytest.approx(value, rel=1e-4)
    # Eq. 3.5 from numpy alone: w = softmax(the layer's logits), the task losses computed above
    logits = np.asarray(model.weighting.logits.numpy(), dtype="float64")
    w_np = dict(zip(model.weighting.tasks, np.exp(logits) / np.exp(logits).sum()))
    assert w == pytest.approx(w_np, rel=1e-6)
    losses = {**ce, "age": half_mse}
    expected = sum(w_np[t] * losses[t] for t in w_np) + 0.3 * sum(v * v for v in w_np.values())
    assert logs["loss"] == pytest.approx(expected, rel=1e-4)
    assert logs["loss_weight_penalty"] == pytest.approx(0.3 * sum(v * v for v in w_np.values()), rel=1e-5)
    before = dict(w)
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0).history
    for task in w:
        assert len(history[f"loss_weight_{task}"]) == 2
    assert sum(history[f"loss_weight_{t}"][-1] for t in w) == pytest.approx(1.0, abs=1e-5)
    after = model.loss_weights()
    assert max(abs(after[t] - before[t]) for t in w) > 1e-4  # the weights learn
    assert "logits" in [v.name for v in model.trainable_weights]
    # registered and serializable: a saved model comes back with its weights, lambda and optimizer
    model.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras")
    assert isinstance(again, MultiTaskLossModel) and again.weighting.lam == pytest.approx(0.3)
    assert again.loss_weights() == pytest.approx(after)
    assert np.allclose(again.predict(x, verbose=0)["age"], model.predict(x, verbose=0)["age"], atol=1e-6)
    assert again.optimizer.l2 == pytest.approx(1e-5)
    keras.backend.clear_session()


def test_adam_l2_is_pytorch_weight_decay():
    import keras

    from agegender.models.loss_weighting import AdamL2

    theta = np.array([1.0, -2.0, 0.5], dtype="float32")
    grad = np.array([0.1, 0.2, -0.3], dtype="float32")
    ours, ref = keras.Variable(theta), keras.Variable(theta)
    AdamL2(0.01, l2=0.5).apply_gradients([(keras.ops.convert_to_tensor(grad), ours)])
    keras.optimizers.Adam(0.01).apply_gradients([(keras.ops.convert_to_tensor(grad + 0.5 * theta), ref)])
    assert np.allclose(ours.numpy(), ref.numpy(), atol=1e-7)
    with pytest.raises(ValueError):
        AdamL2(0.01, weight_decay=0.1)


# ---------------------------------------------------------------------------------------------- Early Freeze


def _scripted_fit(mode, script, epochs, patience=3):
    import keras
    import tensorflow as tf

    from agegender.models.early_freeze import EarlyFreeze
    from agegender.models.loss_weighting import AdamL2
    from agegender.models.mtl_head import layer_groups

    model = _utk_model()
    model.compile(optimizer=AdamL2(1e-2))
    x, y = _batch()
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)

    class Script(keras.callbacks.Callback):  # replaces the validation losses by the scripted ones
        def on_epoch_end(self, epoch, logs=None):
            for task, values in script.items():
                logs[f"val_{task}_loss"] = values[epoch]

    class Probe(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.weights = {}

        def on_epoch_end(self, epoch, logs=None):
            net = self.model.network
            self.weights[epoch + 1] = {l.name: [np.array(v) for v in l.get_weights()] for l in net.layers if l.weights}

    groups = layer_groups(model.network, ("gender", "race", "age"))
    freezer = EarlyFreeze(groups["tasks"], groups["backbone"] + groups["shared"], patience=patience, mode=mode)
    before, after = Probe(), Probe()
    model.fit(ds, validation_data=ds, epochs=epochs, callbacks=[Script(), before, freezer, after], verbose=0,
              shuffle=False)
    return model, groups, freezer, before.weights, after.weights


def _same(a, b, names):
    return all(np.array_equal(x, y) for n in names if n in a for x, y in zip(a[n], b[n]))


def _changed(a, b, names):
    return any(not np.array_equal(x, y) for n in names if n in a for x, y in zip(a[n], b[n]))


SCRIPT = {"gender": [5, 4, 3, 3.5, 3.6, 3.7, 3, 3, 3, 3, 3, 3, 3],
          "race": [5, 4, 3, 2, 2.5, 2.6, 2.7, 2.8, 2, 2, 2, 2, 2],
          "age": [5, 4, 3, 2, 1, 0.5, 0.4, 0.3, 0.2, 0.1, 0.1, 0.1, 0.1]}


def test_early_freeze_follows_algorithm_1_on_scripted_losses():
    model, groups, freezer, before, after = _scripted_fit("freeze", SCRIPT, epochs=12)
    shared = groups["backbone"] + groups["shared"]
    task = groups["tasks"]
    # gender: best at epoch 3, patience 3 -> converges at epoch 6; first convergence -> whole network restored
    first = freezer.events[0]
    assert (first["task"], first["epoch"], first["best_epoch"], first["restore"]) == ("gender", 6, 3, "model")
    assert sorted(first["frozen"]) == sorted(shared + task["gender"])
    for name in shared + task["gender"]:
        assert not model.network.get_layer(name).trainable, name
    every = [n for names in [shared, *task.values()] for n in names]
    assert _same(after[6], before[3], every)  # restored: the state of epoch 3, every layer
    assert _changed(before[6], before[3], every)
    # epochs 7-11: backbone, shared and gender layers frozen; race and age keep training
    assert _same(before[11], after[6], shared + task["gender"])
    assert _changed(before[11], after[6], task["race"]) and _changed(before[11], after[6], task["age"])
    # race: counters were reset to epoch 3 (val 3); new minima 2.7 (7), 2 (9); converges at 12; only its layers
    second = freezer.events[1]
    assert (second["task"], second["epoch"], second["best_epoch"], second["restore"]) == ("race", 12, 9, "task")
    assert sorted(second["frozen"]) == sorted(task["race"])
    assert _same(after[12], before[9], task["race"])
    assert _same(after[12], before[12], task["age"])  # the still-training age layers are not reverted
    assert all(model.network.get_layer(n).trainable for n in task["age"])
    assert np.asarray(model.task_gate).tolist() == [0.0, 0.0, 1.0]  # converged losses no longer reach the network
    # the epoch limit came before age converged: its own layers go back to its best epoch (10)
    assert freezer.events[-1]["task"] == "age" and freezer.events[-1]["best_epoch"] == 10
    final = {l.name: l.get_weights() for l in model.network.layers if l.weights}
    assert _same(final, before[10], task["age"])
    assert [e["epoch"] for e in freezer.epochs] == list(range(1, 13))
    assert freezer.epochs[5]["trainable_params"] < freezer.epochs[4]["trainable_params"]


def test_early_freeze_stops_when_every_task_converged():
    """Driven without fit: the callback alone on scripted epoch logs (no training needed)."""
    from agegender.models.early_freeze import EarlyFreeze
    from agegender.models.loss_weighting import AdamL2
    from agegender.models.mtl_head import layer_groups

    model = _utk_model()
    model.compile(optimizer=AdamL2(1e-3))
    groups = layer_groups(model.network, ("gender", "race", "age"))
    freezer = EarlyFreeze(groups["tasks"], groups["backbone"] + groups["shared"], patience=2)
    freezer.set_model(model)
    freezer.on_train_begin()
    script = {"gender": [3, 4, 4, 4, 4, 4], "race": [3, 2, 3, 3, 3, 3], "age": [3, 2, 1, 2, 2, 2]}
    for epoch in range(6):
        assert not model.stop_training
        freezer.on_epoch_end(epoch, {f"val_{t}_loss": v[epoch] for t, v in script.items()})
    # gender at 3 (best 1; the others reset to epoch 1); race at 5 (no new minimum below 3); age at 6
    assert [(e["task"], e["epoch"], e["best_epoch"], e["restore"]) for e in freezer.events] == [
        ("gender", 3, 1, "model"), ("race", 5, 1, "task"), ("age", 6, 4, "task")]
    assert model.stop_training
    assert [v.name for v in model.trainable_weights] == ["logits"]  # only the loss weights are left
    with pytest.raises(KeyError, match="val_race_loss"):
        freezer.on_epoch_end(6, {"val_gender_loss": 1.0})


def test_early_stopping_of_converged_task_keeps_training_the_shared_layers():
    script = {"gender": [1, 2, 2, 2, 2], "race": [5, 4, 3, 2, 1], "age": [5, 4, 3, 2, 1]}
    model, groups, freezer, before, after = _scripted_fit("stop", script, epochs=5)
    shared = groups["backbone"] + groups["shared"]
    event = freezer.events[0]
    assert (event["task"], event["epoch"], event["restore"]) == ("gender", 4, None)
    assert sorted(event["frozen"]) == sorted(groups["tasks"]["gender"])
    assert _same(after[4], before[4], shared + groups["tasks"]["gender"])  # nothing restored
    assert _changed(before[5], after[4], shared)  # shared layers keep learning for race and age
    assert _same(before[5], after[4], groups["tasks"]["gender"])
    assert all(model.network.get_layer(n).trainable for n in shared)


# ---------------------------------------------------------------------------------------------- resume


def _freezer_for(model, state_dir, patience=2):
    from agegender.models.early_freeze import EarlyFreeze
    from agegender.models.mtl_head import layer_groups

    groups = layer_groups(model.network, ("gender", "race", "age"))
    freezer = EarlyFreeze(groups["tasks"], groups["backbone"] + groups["shared"], patience=patience,
                          state_dir=state_dir)
    freezer.set_model(model)
    return freezer


def _compiled_utk_model():
    from agegender.models.loss_weighting import AdamL2

    model = _utk_model()
    model.compile(optimizer=AdamL2(1e-3))
    return model


def test_early_freeze_state_round_trip(tmp_path):
    """Freeze at epoch 3, save the state (JSON) and snapshots; a new callback on a fresh model takes it back."""
    from agegender.models.early_freeze import SNAPSHOT_DIR, ResumableReduceLROnPlateau

    script = {"gender": [3, 4, 4, 4, 4, 4], "race": [3, 2, 3, 3, 3, 3], "age": [3, 2, 1, 2, 2, 2]}
    logs = lambda e: {f"val_{t}_loss": v[e] for t, v in script.items()}  # noqa: E731
    model = _compiled_utk_model()
    freezer = _freezer_for(model, tmp_path)
    freezer.on_train_begin()
    for epoch in range(4):  # gender converges at epoch 3 (whole network back to epoch 1, shared part frozen)
        freezer.on_epoch_end(epoch, logs(epoch))
    state = json.loads(json.dumps(freezer.get_resume_state()))  # what the trainer writes and reads
    assert state["frozen_layers"] == freezer.frozen_layers() and "gender" not in state["active"]
    files = sorted(p.name for p in (tmp_path / SNAPSHOT_DIR).iterdir())
    assert files == sorted(state["snapshots"].values()) and files  # the best states the restores need

    again = _compiled_utk_model()  # a new process: fresh model, every layer trainable, gates open
    assert all(again.network.get_layer(n).trainable for n in state["frozen_layers"])
    resumed = _freezer_for(again, tmp_path)
    resumed.set_resume_state(state)
    assert resumed.summary() == json.loads(json.dumps(freezer.summary()))  # usable before any training
    resumed.on_train_begin()  # after the trainer has loaded the weights: freezing applied again
    frozen = lambda m: sorted(l.name for l in m.network.layers if not l.trainable)  # noqa: E731
    assert frozen(again) == frozen(model) == sorted(state["frozen_layers"])
    assert [v.name for v in again.trainable_weights] == [v.name for v in model.trainable_weights]
    assert np.asarray(again.task_gate).tolist() == [0.0, 1.0, 1.0]
    for attr in ("_active", "_best", "_best_epoch", "_counter", "_val_history", "_overall_epoch", "shared_frozen",
                 "converged"):
        assert getattr(resumed, attr) == getattr(freezer, attr), attr
    assert sorted(resumed._snapshots) == sorted(freezer._snapshots)
    for epoch, snap in freezer._snapshots.items():
        assert all(np.array_equal(a, b) for name in snap for a, b in zip(snap[name], resumed._snapshots[epoch][name]))
    for cb in (freezer, resumed):  # both go on the same way: race converges at epoch 5, age at 6
        for epoch in (4, 5):
            cb.on_epoch_end(epoch, logs(epoch))
    assert [(e["task"], e["epoch"], e["best_epoch"]) for e in resumed.events] == [
        (e["task"], e["epoch"], e["best_epoch"]) for e in freezer.events] == [
        ("gender", 3, 1), ("race", 5, 1), ("age", 6, 4)]
    resumed.get_resume_state()  # snapshots no state names any more are deleted
    assert sorted(p.name for p in (tmp_path / SNAPSHOT_DIR).glob("*.npz")) <= sorted(
        set(state["snapshots"].values()) | {f"snapshot-{e:04d}.npz" for e in resumed._snapshots})
    # killed after the last epoch's state, before on_train_end: the end-of-training restores are done on resume
    late = _freezer_for(again, tmp_path)
    late.set_resume_state(state)
    assert late.end_after_resume(again) and [e["mode"] for e in late.events[-2:]] == ["end", "end"]
    assert not late.end_after_resume(again)
    done = _freezer_for(again, tmp_path)
    done.set_resume_state({**state, "ended": True})  # a finished state: nothing left to do
    assert not done.end_after_resume(again)

    plateau = ResumableReduceLROnPlateau(monitor="val_loss", factor=0.1, patience=3)
    plateau.set_model(model)
    plateau.on_train_begin()
    for epoch, value in enumerate((1.0, 0.5, 0.7, 0.8)):
        plateau.on_epoch_end(epoch, {"val_loss": value})
    saved = json.loads(json.dumps(plateau.get_resume_state()))
    assert (saved["wait"], saved["best"]) == (2, 0.5)
    other = ResumableReduceLROnPlateau(monitor="val_loss", factor=0.1, patience=3)
    other.set_model(again)
    other.set_resume_state(saved)
    other.on_train_begin()  # Keras resets the counters here; the saved ones come back after
    assert (other.wait, other.best) == (2, 0.5)
    other.on_epoch_end(4, {"val_loss": 0.9})  # the third epoch without improvement lowers the rate, as uninterrupted
    assert float(np.asarray(again.optimizer.learning_rate)) == pytest.approx(1e-4)
    import keras

    keras.backend.clear_session()


@pytest.mark.slow
def test_training_resumes_with_layers_frozen_again_and_best_weights_kept(tmp_path):
    """train() interrupted after epoch 3 (gender frozen at 2), resumed in a new model: the frozen layers stay
    unchanged, race goes back to its epoch-3 weights (a snapshot taken before the interruption)."""
    import keras
    import tensorflow as tf

    from agegender.models.early_freeze import ResumableReduceLROnPlateau
    from agegender.models.mtl_head import layer_groups
    from agegender.training import train

    script = {"gender": [1, 2, 2, 2, 2], "race": [5, 4, 3, 3.5, 3.6], "age": [5, 4, 3, 2, 1]}
    x, y = _batch()
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)

    class Script(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs.update({f"val_{t}_loss": v[epoch] for t, v in script.items()})

    class Interrupt(Exception):
        pass

    class Kill(keras.callbacks.Callback):  # dies at the start of epoch 4, after epoch 3's state was saved
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 3:
                raise Interrupt

    class Probe(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.weights = {}

        def on_train_begin(self, logs=None):
            self.on_epoch_end(-1)

        def on_epoch_end(self, epoch, logs=None):
            self.weights[epoch + 1] = {l.name: [np.array(v) for v in l.get_weights()]
                                       for l in self.model.network.layers if l.weights}

    def attempt(epochs, extra):
        model = _compiled_utk_model()
        freezer = _freezer_for(model, tmp_path, patience=1)
        probe = Probe()
        info = {}
        callbacks = [Script(), ResumableReduceLROnPlateau(monitor="val_loss", patience=2), freezer, probe, *extra]
        try:
            train(model, ds, ds, epochs=epochs, state_dir=tmp_path, extra_callbacks=callbacks, verbose=0, info=info)
        except Interrupt:
            pass
        return model, freezer, probe, info

    first, f1, p1, _ = attempt(5, [Kill()])
    assert [(e["task"], e["epoch"], e["best_epoch"]) for e in f1.events] == [("gender", 2, 1)]
    model, freezer, probe, info = attempt(5, [])
    assert info["resumed_from_epoch"] == 3 and info["trained"]
    groups = layer_groups(model.network, ("gender", "race", "age"))
    fixed = groups["backbone"] + groups["shared"] + groups["tasks"]["gender"]
    assert _same(probe.weights[0], p1.weights[3], fixed + groups["tasks"]["race"])  # weights restored
    assert _same(probe.weights[4], p1.weights[3], fixed)  # frozen again: epoch 4 left them alone
    assert _changed(probe.weights[4], p1.weights[3], groups["tasks"]["age"])
    assert [(e["task"], e["epoch"], e["best_epoch"], e["restore"]) for e in freezer.events] == [
        ("gender", 2, 1, "model"), ("race", 4, 3, "task"), ("age", None, 5, "task")]  # age: at the epoch limit
    final = {l.name: l.get_weights() for l in model.network.layers if l.weights}
    assert _same(final, p1.weights[3], groups["tasks"]["race"])  # the epoch-3 snapshot survived the interruption
    assert [e["epoch"] for e in freezer.epochs] == [1, 2, 3, 4, 5]
    keras.backend.clear_session()


# ---------------------------------------------------------------------------------------------- backbones


def test_weights_load_by_name_from_h5_reproduce_the_outputs(tmp_path):
    import keras

    from agegender.models.face_resnets import build_vggface2_resnet, load_weights_by_name, save_weights_by_name

    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    keras.utils.set_random_seed(1)
    source = build_vggface2_resnet((32, 32, 3), se=True, embedding_dim=128)
    assert source.output.shape[-1] == 128
    assert source.get_layer("conv2_1_1x1_down").use_bias and not source.get_layer("conv2_1_1x1_reduce").use_bias
    expected = np.asarray(source(x, training=False))
    source.save(tmp_path / "senet.h5")  # Keras's own legacy HDF5 writer (model_weights/<layer>/...)
    save_weights_by_name(source, tmp_path / "senet_k2.h5")  # Keras 2 weights layout
    keras3_file = tmp_path / "tiny.weights.h5"
    _tiny_backbone().save_weights(keras3_file)
    keras.utils.set_random_seed(2)
    target = build_vggface2_resnet((32, 32, 3), se=True, embedding_dim=128)
    assert not np.allclose(np.asarray(target(x, training=False)), expected, atol=1e-3)
    for name in ("senet.h5", "senet_k2.h5"):
        report = load_weights_by_name(target, tmp_path / name)
        assert len(report["loaded"]) == len([l for l in target.layers if l.weights]) and not report["unused_in_file"]
        assert np.allclose(np.asarray(target(x, training=False)), expected, atol=1e-5)
        target.get_layer("feat_extract").set_weights([np.zeros((1, 1, 2048, 128), "float32")])
    with pytest.raises(DataError, match="by position"):
        load_weights_by_name(target, keras3_file)
    without = _drop_layer(tmp_path / "senet_k2.h5", "feat_extract")  # as a senet50_ft file: no 128-D layer
    with pytest.raises(DataError, match="not in the file"):
        load_weights_by_name(target, without)
    report = load_weights_by_name(target, without, optional=("feat_extract",))
    assert report["missing_optional"] == ["feat_extract"]
    with pytest.raises(DataError, match="not found"):
        load_weights_by_name(target, tmp_path / "absent.h5")
    keras.backend.clear_session()


def _drop_layer(path, layer):
    import h5py

    with h5py.File(path, "a") as f:
        del f[layer]
        f.attrs["layer_names"] = np.array([n for n in f.attrs["layer_names"] if n.decode() != layer])
    return path


def test_backbone_registry_fails_loudly_and_labels_substitutions():
    from agegender.models.face_resnets import BACKBONES, choose_backbone, get_backbone

    assert {"resnet50", "senet50_128", "resnet50_imagenet"} <= set(BACKBONES)
    with pytest.raises(ValueError, match="not built here"):
        get_backbone("lightcnn")
    with pytest.raises(ValueError, match="unknown backbone"):
        get_backbone("vgg16")
    sub = choose_backbone("senet50_128")
    assert sub.substituted and sub.used == "resnet50_imagenet" and "SE-ResNet-50-128D" in sub.note
    assert "substituted" in sub.note
    real = choose_backbone("resnet50", "/x/resnet50_ft.h5")
    assert not real.substituted and real.used == "resnet50"
    assert choose_backbone("resnet50", "none").weights is None and "random" in choose_backbone("resnet50", "none").note
    assert choose_backbone("senet50_128", smoke=True).used == "smoke_cnn"
    assert BACKBONES["resnet50"].input_size == 200  # Sec. 3.1
    assert (BACKBONES["resnet50"].feature_dim, BACKBONES["senet50_128"].feature_dim) == (2048, 128)  # Table 4.5


def test_missing_substitute_weights_fail_before_training(tmp_path):
    from agegender.models.face_resnets import choose_backbone

    choice = choose_backbone("senet50_128", substitute_weights=str(tmp_path / "absent_notop.h5"))
    assert choice.used == "resnet50_imagenet" and choice.substituted
    with pytest.raises(DataError, match="not found"):
        sun.check_backbone(choice)
    sun.check_backbone(choose_backbone("senet50_128", "none"))  # random weights: nothing to fetch


# ---------------------------------------------------------------------------------------------- networks


def test_three_networks_have_the_thesis_layers():
    import keras

    from agegender.models.mtl_head import TASKS, build_network, layer_groups

    tasks = TASKS["utkface"]
    mtl = build_network(_tiny_backbone(), tasks, "mtl")
    kinds = [(l.name, type(l).__name__) for l in mtl.layers]
    names = [n for n, _ in kinds]
    assert names.index("shared_fc1") < names.index("shared_act1") < names.index("shared_bn1")  # FC, LeakyReLU, BN
    for task in tasks:
        order = [names.index(f"{task}_fc"), names.index(f"{task}_dropout"), names.index(f"{task}_act"),
                 names.index(task)]
        assert order == sorted(order)  # FC, Dropout, LeakyReLU, output
    assert mtl.get_layer("shared_act1").negative_slope == pytest.approx(0.01)
    assert mtl.get_layer("age_fc").units == 128 and mtl.get_layer("gender_dropout").rate == 0.5
    assert {n: tuple(mtl.get_layer(n).output.shape) for n in tasks} == {"gender": (None, 2), "race": (None, 5),
                                                                        "age": (None, 1)}
    groups = layer_groups(mtl, tuple(tasks))
    assert groups["backbone"] == ["backbone"] and groups["shared"][0] == "shared_fc1"
    baseline = build_network(_tiny_backbone(), {"race": tasks["race"]}, "baseline")
    assert [l.name for l in baseline.layers if l.weights] == ["backbone", "race"]
    single = build_network(_tiny_backbone(), {"age": TASKS["celeba"]["age"]}, "single")
    assert single.output_names == ["age"] and single.get_layer("age").units == 2  # "128x2"
    with pytest.raises(ValueError):
        build_network(_tiny_backbone(), tasks, "single")
    keras.backend.clear_session()


# ---------------------------------------------------------------------------------------------- cells


def _fake_result(method, dataset, tasks, converged=None):
    test = {}
    for task in tasks:
        if dataset == "utkface" and task == "age":
            test[task] = {"mae_years": 5.0}
        else:
            test[task] = {"accuracy": 0.9, "per_class_accuracy": [0.95, 0.6], "confusion_matrix": [[19, 1], [4, 6]]}
    return {"method": method, "metrics": {"test": test},
            "early_freeze": {"converged": converged or {t: {"epoch": 14, "best_epoch": 11} for t in tasks}}}


def test_cells_line_up_with_the_published_catalogue():
    from results.catalogue import load_published

    pub = load_published("sundriyal")
    published = set(zip(pub["table"], pub["row"], pub["column"]))
    cells = []
    for dataset, backbone, tasks in (("utkface", "senet50_128", ("gender", "race", "age")),
                                     ("celeba", "resnet50_imagenet", ("gender", "age")),
                                     ("celeba", "senet50_128", ("gender", "age"))):
        exp = dataclasses.replace(sun.SundriyalExperiment(), dataset=dataset, backbone=backbone)
        for method in ("baseline", "single"):
            for task in tasks:
                cells += sun.model_cells(exp, _fake_result(method, dataset, (task,)), "n")
        cells += sun.model_cells(exp, _fake_result("mtl", dataset, tasks), "n")
        for variant in (dict(loss="average"), dict(early_freeze=False), dict(lam=0.001), dict(lam=0.01), dict(lam=1.0)):
            cells += sun.model_cells(dataclasses.replace(exp, **variant), _fake_result("mtl", dataset, tasks), "n")
    keys = {(c["table"], c["row"], c["column"]) for c in cells}
    expected = {(t, r, c) for t, r, c in published
                if t in {"Table 4.9", "Table 4.10", "Table 4.14", "Table 4.15", "Table 5.1", "Table 5.2", "Table 5.3",
                         "Table 5.4", "Table 5.5", "Section 5.2", "Section 5.3"}
                or (t == "Table 4.16" and r.startswith("Ours"))}
    expected -= {(t, r, c) for t, r, c in published if t == "Table 4.9"}  # no UTKFace ResNet-50 run above
    assert expected <= keys, sorted(expected - keys)
    assert ("Figure 5.3", "true Old", "predicted Young") in keys
    assert ("Figure 5.4", "true Young", "predicted Old") in keys
    celeba_se = dataclasses.replace(sun.SundriyalExperiment(), dataset="celeba")
    rows = {c["row"] for c in sun.model_cells(celeba_se, _fake_result("single", "celeba", ("age",)), "n")
            if c["table"] == "Section 5.3"}
    assert rows == {"Single Task Neural Network (SE-ResNet-50-128D)"}  # Section 5.3's figures are ResNet-50's


def test_ablations_get_their_own_rows():
    exp = sun.SundriyalExperiment()
    lam = sun.model_cells(dataclasses.replace(exp, lam=0.01), _fake_result("mtl", "utkface", ("gender", "race", "age")),
                          "n")
    tables = {(c["table"], c["row"]) for c in lam}
    assert ("Table 5.5", "0.01") in tables and ("Table 4.10", "Proposed Multi-Task Learning Network") not in tables
    assert ("Table 4.10", "Proposed Multi-Task Learning Network (weighted-ef-l0.01)") in tables
    stop = sun.model_cells(dataclasses.replace(exp, early_freeze=False),
                           _fake_result("mtl", "utkface", ("gender", "race", "age"),
                                        converged={"gender": {"epoch": 14}, "race": {"epoch": 12}}), "n")
    by_key = {(c["table"], c["row"], c["column"]): c["value"] for c in stop}
    assert by_key[("Table 5.4", "Early stopping of converged task", "Age MAE")] == 5.0
    assert by_key[("Section 5.2", "without Early Freeze", "gender and race converge at")] == 14
    assert ("Section 5.2", "without Early Freeze", "age converges at") not in by_key
    assert not any(c["table"] == "Table 5.5" for c in stop)
    resnet = sun.model_cells(dataclasses.replace(exp, backbone="resnet50", loss="average"),
                             _fake_result("mtl", "utkface", ("gender", "race", "age")), "n")
    assert ("Table 5.3", "Average Loss (ResNet-50)") in {(c["table"], c["row"]) for c in resnet}


# ---------------------------------------------------------------------------------------------- command line


def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        sun.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--dataset", "--data-dir", "--coral-csv-dir", "--backbone", "--backbone-weights", "--method",
                   "--loss", "--early-freeze", "--no-early-freeze", "--lambda", "--smoke", "--out", "--seed",
                   "--epochs", "--imagenet-weights", "--data-kind", "--fresh", "--deterministic"):
        assert option in text, option
    assert "Raschka-research-group" in " ".join(text.split())


@pytest.mark.parametrize("argv", [["--dataset", "utkface", "--data-dir", "x", "--backbone", "lightcnn"],
                                  ["--dataset", "utkface", "--data-dir", "x", "--method", "dual"],
                                  ["--dataset", "celeba", "--data-dir", "x", "--coral-csv-dir", "y"],
                                  ["--dataset", "imdb", "--data-dir", "x"]])
def test_bad_options_are_usage_errors(argv):
    with pytest.raises(SystemExit) as exit_info:
        sun.main(argv)
    assert exit_info.value.code == 2


def test_missing_data_is_one_error_line(tmp_path, capsys):
    assert sun.main(["--dataset", "utkface", "--data-dir", str(tmp_path / "nowhere"), "--smoke",
                     "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "nowhere" in err and "\n" not in err
    assert sun.main(["--dataset", "celeba", "--data-dir", str(tmp_path), "--smoke", "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_smoke_mode_is_a_replace_of_the_thesis_settings():
    exp = sun.SundriyalExperiment()
    assert (exp.learning_rate, exp.weight_decay, exp.lam, exp.lr_factor, exp.age_scale) == (3e-5, 1e-5, 0.1, 0.1, 40.0)
    small = sun.smoke(exp)
    assert small.smoke and small.epochs == 2 and small.learning_rate == exp.learning_rate
    assert dataclasses.replace(small, smoke=False, epochs=exp.epochs, input_size=None, batch_size=64, max_images=None,
                               patience=5, lr_patience=2) == exp


# ---------------------------------------------------------------------------------------------- smoke runs


@pytest.fixture(scope="module")
def utk_faces(tmp_path_factory):
    from agegender.data.synth import synthesize

    root = tmp_path_factory.mktemp("utk")
    synthesize("utkface", root, 260, seed=0, size=32)
    return root


@pytest.fixture(scope="module")
def celeba_faces(tmp_path_factory):
    from agegender.data.synth import synthesize

    root = tmp_path_factory.mktemp("celeba")
    synthesize("celeba", root, 240, seed=0, size=32)
    return root


def _table(out, stem):
    return pd.read_csv(out / "tables" / f"sundriyal__{stem}.csv", dtype={"row": str, "column": str})


def movement_matches(movement, initial, final) -> bool:
    return movement["initial"] == initial and movement["final"] == final


def _reproduced(table, row, column, label="generated faces"):
    line = table[(table["row"] == row) & (table["column"] == column) & (table["data"] == label)]
    assert len(line) == 1, (row, column)
    return float(str(line["reproduced"].iloc[0]).split(" ± ")[0].replace(",", ""))  # mean ± std over runs


@pytest.mark.slow
def test_smoke_cli_on_generated_utkface(utk_faces, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    assert sun.main(["--dataset", "utkface", "--data-dir", str(utk_faces), "--method", "mtl", "--smoke",
                     "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Table 4.10" in printed and "98.47" in printed and "[sundriyal] figures:" in printed
    records = [json.loads(p.read_text()) for p in sorted((out / "runs" / "mtl_weighted_loss").glob("*/*/record.json"))]
    assert [r["experiment"] for r in records] == ["utkface-protocol-smoke",
                                                  "utkface-senet50_128-smoke-mtl-weighted-ef-l0.1"]
    for record in records:
        assert record["status"] == "complete" and record["data"]["kind"] == "generated"
        assert record["config"]["backbone"]["substituted"] and record["config"]["backbone"]["used"] == "smoke_cnn"
    mtl = records[1]
    assert [h["epoch"] for h in mtl["history"]] == [1, 2]
    assert all(sum(h[f"loss_weight_{t}"] for t in ("gender", "race", "age")) == pytest.approx(1, abs=1e-5)
               for h in mtl["history"])
    assert mtl["early_freeze"]["mode"] == "freeze" and mtl["metrics"]["training"]["weighting"] == "learned"
    heads = mtl["preprocessing"]["heads"]
    assert set(heads) == {"gender", "race", "age"} and heads["age"]["offset"] == 21
    assert heads["age"]["scale"] == pytest.approx(1 / 40) and mtl["preprocessing"]["input_size"] == 32
    assert (out / "runs" / "mtl_weighted_loss" / "utkface-protocol-smoke").glob("*/coral_like_lists/utk_train.csv")
    # each table value against the record, the accuracies recomputed from its confusion matrices (issue 18 item 8)
    test = mtl["metrics"]["test"]
    accuracy = {t: 100 * np.trace(np.asarray(test[t]["confusion_matrix"])) / np.sum(test[t]["confusion_matrix"])
                for t in ("gender", "race")}
    expected = {"Gender Accuracy": accuracy["gender"], "Race Accuracy": accuracy["race"],
                "Age MAE": test["age"]["mae_years"]}
    t410 = _table(out, "table-4-10")
    for column, value in expected.items():
        assert _reproduced(t410, "Proposed Multi-Task Learning Network", column) == pytest.approx(value, abs=0.006)
    notes = t410.loc[t410["data"] == "generated faces", "notes"]
    assert notes.str.contains("backbone substituted").all() and notes.str.contains("CORAL-like").all()
    assert _reproduced(_table(out, "table-5-4"), "Proposed Early Freeze Method", "Age MAE") == \
        pytest.approx(expected["Age MAE"], abs=0.006)
    assert _reproduced(_table(out, "table-5-3"), "Proposed weighted Loss", "Gender Accuracy") == \
        pytest.approx(expected["Gender Accuracy"], abs=0.006)
    assert _reproduced(_table(out, "table-4-16"), "Ours (MTL+SEResnet)", "Age MAE (in years)") == \
        pytest.approx(expected["Age MAE"], abs=0.006)
    assert _reproduced(_table(out, "table-5-5"), "0.1", "Race Accuracy") == pytest.approx(expected["Race Accuracy"],
                                                                                          abs=0.006)
    # issue 18 item 6: initial and final loss weights, the movement measured against the initial spread
    training = mtl["metrics"]["training"]
    initial, final = training["initial_loss_weights"], training["final_loss_weights"]
    assert set(initial) == set(final) == {"gender", "race", "age"} and sum(initial.values()) == pytest.approx(1)
    # the weights after training (Early Freeze's restores included) are about the last epoch's logged ones
    assert final == pytest.approx({t: mtl["history"][-1][f"loss_weight_{t}"] for t in final}, abs=1e-3)
    assert movement_matches(training["loss_weight_movement"], initial, final)
    movement = training["loss_weight_movement"]
    spread = max(initial.values()) - min(initial.values())
    assert movement["spread"] == pytest.approx(spread)
    assert movement["barely_moved"] == (max(abs(final[t] - initial[t]) for t in final) < spread)
    # records: the smoke settings are the deviations; no machine path anywhere
    assert mtl["deviations"]["smoke"] is True and mtl["deviations"]["backbone_used"] == "smoke_cnn (random weights)"
    for record in records:
        assert str(utk_faces) not in json.dumps(record) and str(tmp_path) not in json.dumps(record)
    t41 = _table(out, "table-4-1")
    assert sum(_reproduced(t41, r, "Total Persons") for r in sun.RACE_ROWS) == 260  # every face read
    counts = records[0]["data"]["split_counts"]
    t43 = _table(out, "table-4-3")
    assert _reproduced(t43, "Validation", "Number of examples") == counts["val"] == math.ceil(
        0.2 * (counts["train"] + counts["val"]))
    for name in ("fig4_1_age_distribution", "fig5_1_loss_vs_epoch_early_freeze"):
        assert name in mtl["figures"]
    assert any(k.startswith("loss_weights_") for k in mtl["figures"])
    assert not list((out / "runs").rglob("train_state"))  # complete: no training state left
    assert mtl["config"]["deterministic"] is False and records[0]["config"]["deterministic"] is False

    # the same command again: the complete run is read back (same folders, records untouched), tables regenerated
    paths = sorted((out / "runs" / "mtl_weighted_loss").glob("*/*/record.json"))
    before = {p: p.read_bytes() for p in paths}
    (out / "tables" / "sundriyal__table-4-10.csv").unlink()
    assert sun.main(["--dataset", "utkface", "--data-dir", str(utk_faces), "--method", "mtl", "--smoke",
                     "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "read back, not trained again" in printed and "Epoch 1/" not in printed
    assert sorted((out / "runs" / "mtl_weighted_loss").glob("*/*/record.json")) == paths
    assert all(p.read_bytes() == before[p] for p in paths)
    assert _reproduced(_table(out, "table-4-10"), "Proposed Multi-Task Learning Network", "Age MAE") == \
        pytest.approx(mtl["metrics"]["test"]["age"]["mae_years"], abs=0.006)
    # --fresh: a new run beside the first, whose model is trained again (stopped where training would start)
    class Started(Exception):
        pass

    def train_one(*args, recorder, **kwargs):
        raise Started(recorder)

    monkeypatch.setattr(sun.reproduction, "train_one", train_one)
    with pytest.raises(Started) as started:
        sun.main(["--dataset", "utkface", "--data-dir", str(utk_faces), "--method", "mtl", "--smoke", "--out", str(out),
                  "--fresh"])
    recorder = started.value.args[0]
    assert not recorder.resumed and recorder.record["status"] == "running" and recorder.record["history"] == []
    for experiment in ("utkface-protocol-smoke", "utkface-senet50_128-smoke-mtl-weighted-ef-l0.1"):
        runs = sorted((out / "runs" / "mtl_weighted_loss" / experiment).iterdir())
        assert len(runs) == 2 and recorder.run_id in [r.name for r in runs], runs
    assert all(p.read_bytes() == before[p] for p in paths)


def test_figures_5_1_and_5_2_side_by_side_from_the_other_record(tmp_path):
    exp = sun.smoke(sun.SundriyalExperiment())
    other = dataclasses.replace(exp, early_freeze=False)
    folder = tmp_path / "runs" / "mtl_weighted_loss" / sun.experiment_name(other, "mtl") / "r1"
    folder.mkdir(parents=True)
    history = [{"epoch": e, **{f"{k}{t}_loss": 1.0 / e for t in ("gender", "race", "age") for k in ("", "val_")}}
               for e in (1, 2, 3)]
    folder.joinpath("record.json").write_text(json.dumps(
        {"status": "complete", "seed": exp.seed, "history": history,
         "early_freeze": {"events": [{"epoch": 2, "task": "gender"}]}}))
    found = sun._other_variant(tmp_path / "runs", exp, sun.experiment_name(other, "mtl"))
    assert found is not None and found["history"] == history
    assert sun._other_variant(tmp_path / "runs", dataclasses.replace(exp, seed=9),
                              sun.experiment_name(other, "mtl")) is None
    pair = {"Early Freeze": (history, []), "early stopping": (found["history"], found["early_freeze"]["events"])}
    path = sun.plot_freeze_comparison(pair, ("gender", "race", "age"), tmp_path / "cmp.png")
    assert path.stat().st_size > 1000


@pytest.mark.slow
def test_smoke_run_on_generated_celeba_every_method(celeba_faces, tmp_path):
    exp = dataclasses.replace(sun.smoke(sun.SundriyalExperiment(dataset="celeba", backbone="resnet50")), epochs=1,
                              max_images=120)
    result = sun.run(celeba_faces, exp, out=tmp_path, verbose=0, log=lambda *a: None)
    assert len(result["results"]) == 5  # baseline x2, single x2, mtl
    assert sum(result["counts"].values()) == 240 and sum(result["counts_used"].values()) < 240
    t414 = _table(tmp_path, "table-4-14")
    metrics = result["metrics"]

    def from_confusion(name, task, row=None):  # accuracy (or one class's recall), recomputed from the record
        matrix = np.asarray(metrics[name]["test"][task]["confusion_matrix"], dtype=float)
        return 100 * (np.trace(matrix) / matrix.sum() if row is None else matrix[row, row] / matrix[row].sum())

    for method in sun.ROW:
        for task, column in (("gender", "Gender Accuracy"), ("age", "Age Accuracy")):
            name = sun.experiment_name(exp, method, None if method == "mtl" else task)
            assert _reproduced(t414, sun.ROW[method], column) == pytest.approx(from_confusion(name, task), abs=0.006)
    s53 = _table(tmp_path, "section-5-3")
    young = _reproduced(s53, "Single Task Neural Network", "Young accuracy")
    assert young == pytest.approx(from_confusion(sun.experiment_name(exp, "single", "age"), "age", 0), abs=0.006)
    f54 = _table(tmp_path, "figure-5-4")
    total = sum(_reproduced(f54, f"true {a}", f"predicted {b}") for a in ("Young", "Old") for b in ("Young", "Old"))
    assert total == result["counts_used"]["test"]
    t42 = _table(tmp_path, "table-4-2")
    males, females = _reproduced(t42, "Gender", "Male Count"), _reproduced(t42, "Gender", "Female Count")
    assert males + females == result["counts"]["train"]
    assert _reproduced(_table(tmp_path, "table-4-4"), "Validation", "Number of examples") == result["counts"]["val"]
    assert _reproduced(_table(tmp_path, "table-5-2"), "Proposed weighted Loss", "Age Accuracy") == pytest.approx(
        from_confusion(sun.experiment_name(exp, "mtl"), "age"), abs=0.006)
    assert _reproduced(_table(tmp_path, "figure-4-7"), "Ours (MTL+ResNet-50)", "Gender Accuracy") == pytest.approx(
        from_confusion(sun.experiment_name(exp, "mtl"), "gender"), abs=0.006)
    assert set(result["figures"]) >= {"fig5_3_confusion_single", "fig5_4_confusion_mtl",
                                      "fig5_1_loss_vs_epoch_early_freeze"}


@pytest.mark.slow
def test_coral_csv_split_on_the_real_sample(utkface_sample, coral_dir, tmp_path):
    exp = dataclasses.replace(sun.smoke(sun.SundriyalExperiment()), method="mtl", epochs=1, max_images=120)
    data = sun.load_data(utkface_sample, exp, coral_csv_dir=coral_dir, work_dir=tmp_path)
    train = pd.read_csv(coral_dir / "utk_train.csv")
    test = pd.read_csv(coral_dir / "utk_test.csv")
    names = set(data["samples"].frame["file"].map(lambda f: f.split("/")[-1]))
    n_train, n_test = int(train["file"].isin(names).sum()), int(test["file"].isin(names).sum())
    counts = data["full_counts"]
    assert counts["test"] == n_test and counts["train"] + counts["val"] == n_train
    assert counts["val"] == math.ceil(0.2 * n_train)  # 80:20, as 13,147 -> 10,517 / 2,630
    assert data["info"]["label_age_mismatches"] == 0  # CORAL label = age - 21
    frame = data["split"].frame
    assert frame["age"].between(21, 60).all()
    result = sun.run(utkface_sample, exp, coral_csv_dir=coral_dir, out=tmp_path / "out", verbose=0,
                     log=lambda *a: None)
    assert result["kind"] == "sample" and result["counts"] == counts
    t43 = _table(tmp_path / "out", "table-4-3")
    assert _reproduced(t43, "Test", "Number of examples", "real sample") == n_test
    notes = t43.loc[t43["data"] == "real sample", "notes"]
    assert not notes.str.contains("CORAL-like").any()


# ---------------------------------------------------------------------------------------------- issue 18 item 6


def _movement(initial, final):
    from agegender.models.loss_weighting import weight_movement

    return weight_movement(initial, final)


def test_weight_movement_is_measured_against_the_initial_spread():
    moved = _movement({"gender": 0.2, "race": 0.3, "age": 0.5}, {"gender": 0.21, "race": 0.28, "age": 0.51})
    assert moved["change"] == pytest.approx(0.02) and moved["spread"] == pytest.approx(0.3)
    assert moved["barely_moved"] is True
    far = _movement({"gender": 0.2, "race": 0.3, "age": 0.5}, {"gender": 0.6, "race": 0.2, "age": 0.2})
    assert far["change"] == pytest.approx(0.4) and far["barely_moved"] is False
    equal = _movement({"a": 0.5, "b": 0.5}, {"a": 0.5, "b": 0.5})
    assert equal["spread"] == 0 and equal["barely_moved"] is False
    with pytest.raises(ValueError, match="different tasks"):
        _movement({"a": 1.0}, {"b": 1.0})


def _mtl_result(dataset, tasks, movement=None, seconds=7200.0):
    result = _fake_result("mtl", dataset, tasks)
    result["metrics"]["training"] = {"seconds": seconds, "loss_weight_movement": movement}
    return result


def test_barely_moved_loss_weights_are_flagged_on_every_cell_and_tabled():
    """Every cell of an MTL model whose learned weights moved less than their initial spread says so; the initial
    and final weights per task are a table of their own; a model whose weights moved far carries no flag."""
    exp = sun.SundriyalExperiment()
    tasks = ("gender", "race", "age")
    barely = _movement({"gender": 0.2, "race": 0.3, "age": 0.5}, {"gender": 0.21, "race": 0.28, "age": 0.51})
    cells = sun.model_cells(exp, _mtl_result("utkface", tasks, barely), "base note")
    assert cells and all("LOSS WEIGHTS BARELY MOVED" in c["note"] and "base note" in c["note"] for c in cells)
    weights = {(c["row"], c["column"]): c["value"] for c in cells if c["table"] == "Loss weights (extra)"}
    row = "SE-ResNet-50-128D, utkface, weighted-ef-l0.1"
    assert weights[(row, "race initial w")] == pytest.approx(0.3) and weights[(row, "race final w")] == 0.28
    assert weights[(row, "largest change")] == pytest.approx(0.02)
    assert weights[(row, "initial spread")] == pytest.approx(0.3)
    far = _movement({"gender": 0.2, "race": 0.3, "age": 0.5}, {"gender": 0.6, "race": 0.2, "age": 0.2})
    assert not any("BARELY" in c.get("note", "") for c in sun.model_cells(exp, _mtl_result("utkface", tasks, far), ""))
    average = dataclasses.replace(exp, loss="average")  # no learned weights: no flag, no table
    cells = sun.model_cells(average, _mtl_result("utkface", tasks, None), "")
    assert not any(c["table"] == "Loss weights (extra)" or "BARELY" in c.get("note", "") for c in cells)


def test_figures_4_7_4_8_and_section_3_6_2_come_from_the_proposed_network():
    from results.catalogue import load_published

    pub = load_published("sundriyal")
    published = set(zip(pub["table"], pub["row"], pub["column"]))
    celeba = dataclasses.replace(sun.SundriyalExperiment(), dataset="celeba")
    cells = {(c["table"], c["row"], c["column"]): c for c in
             sun.model_cells(celeba, _mtl_result("celeba", ("gender", "age"), seconds=5400.0), "")}
    for key in (("Figure 4.7", "Ours (MTL+SEResnet)", "Gender Accuracy"),
                ("Figure 4.8", "Ours (MTL+SEResnet)", "Age Accuracy"),
                ("Section 3.6.2", "CelebA", "convergence time min"),
                ("Section 3.6.2", "CelebA", "convergence time max")):
        assert key in published and key in cells, key
    assert cells[("Figure 4.7", "Ours (MTL+SEResnet)", "Gender Accuracy")]["value"] == pytest.approx(90.0)
    assert cells[("Section 3.6.2", "CelebA", "convergence time max")]["value"] == pytest.approx(1.5)  # 5,400 s
    resnet = sun.model_cells(dataclasses.replace(celeba, backbone="resnet50"),
                             _mtl_result("celeba", ("gender", "age")), "")
    assert ("Figure 4.7", "Ours (MTL+ResNet-50)") in {(c["table"], c["row"]) for c in resnet}
    ablation = sun.model_cells(dataclasses.replace(celeba, loss="average"), _mtl_result("celeba", ("gender", "age")),
                               "")
    assert not any(c["table"] in ("Figure 4.7", "Section 3.6.2") for c in ablation)
    # Section 4.4.5 (CORAL-CNN's published MAE minus ours) is never computed: a published figure enters nothing
    utk = sun.model_cells(sun.SundriyalExperiment(), _mtl_result("utkface", ("gender", "race", "age")), "")
    assert not any(c["table"] == "Section 4.4.5" for c in utk)


def test_section_4_1_is_read_from_the_data(tmp_path):
    from agegender.data.samples import Samples

    frame = pd.DataFrame({"path": ["a", "b", "c"], "file": ["a", "b", "c"], "age": [3.0, 90.0, 41.0]})
    utk = sun.extra.section41_cells(sun.SundriyalExperiment(), Samples("utkface", "x", frame, 3, [], []),
                                                  None, "")
    assert {(c["row"], c["column"]): c["value"] for c in utk} == {("UTKFace", "images"): 3, ("UTKFace", "max age"): 90}
    (tmp_path / "list_attr_celeba.txt").write_text("2\nA B C Male Young\n1.jpg 1 1 1 1 -1\n2.jpg 1 1 1 -1 1\n")
    celeba = dataclasses.replace(sun.SundriyalExperiment(), dataset="celeba")
    cells = sun.extra.section41_cells(celeba, Samples("celeba", str(tmp_path), frame, 2, [], []), tmp_path, "")
    assert {(c["row"], c["column"]): c["value"] for c in cells} == {("CelebA", "images"): 2,
                                                                    ("CelebA", "attributes"): 5}


def test_make_reproduce_mtl_runs_both_backbones_and_fills_their_tables(tmp_path):
    """Issue 18 item 6: ``make reproduce-mtl`` (run with a stand-in Python that logs its arguments) runs
    SE-ResNet-50-128D *and* ResNet-50; the experiments of those commands fill every cell of Tables 4.9/4.10,
    4.14/4.15, 5.1-5.5, Sections 5.2/5.3, Figures 5.3/5.4 and the "Ours" cells of Table 4.16 and Figures 4.7/4.8."""
    import shlex
    import shutil
    import subprocess
    from pathlib import Path

    from results.catalogue import load_published

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    log = tmp_path / "calls.log"
    stub = tmp_path / "python"
    stub.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    stub.chmod(0o755)
    subprocess.run(["make", "-s", "-o", "install", "reproduce-mtl", f"PY={stub}", "DATA_DIR=/d", "CELEBA_DIR=/c"],
                   cwd=Path(sun.__file__).resolve().parents[2], check=True, capture_output=True, timeout=60)
    cells = set()
    backbones = set()
    for line in log.read_text().splitlines():
        argv = shlex.split(line)
        assert argv[:2] == ["-m", "reproductions.mtl_weighted_loss"]
        exp = sun.experiment_from_args(sun._parser().parse_args(argv[2:]))
        backbones.add((exp.dataset, exp.backbone))
        tasks = tuple(sun.tasks_of(exp.dataset))
        for method in sun.methods_of(exp):
            runs = [(tasks, "mtl")] if method == "mtl" else [((t,), method) for t in tasks]
            for run_tasks, name in runs:
                result = _mtl_result(exp.dataset, run_tasks) if name == "mtl" else _fake_result(name, exp.dataset,
                                                                                                 run_tasks)
                cells |= {(c["table"], c["row"], c["column"]) for c in sun.model_cells(exp, result, "")}
    assert backbones == {(d, b) for d in ("utkface", "celeba") for b in ("senet50_128", "resnet50")}
    pub = load_published("sundriyal")
    published = set(zip(pub["table"], pub["row"], pub["column"]))
    tables = {"Table 4.9", "Table 4.10", "Table 4.14", "Table 4.15", "Table 5.1", "Table 5.2", "Table 5.3",
              "Table 5.4", "Table 5.5", "Section 5.2", "Section 5.3", "Figure 5.3", "Figure 5.4"}
    wanted = {k for k in published if k[0] in tables or (k[0] in ("Table 4.16", "Figure 4.7", "Figure 4.8")
                                                          and k[1].startswith("Ours"))
              or k[0] == "Section 3.6.2" and k[2].startswith("convergence")}
    assert wanted <= cells, sorted(wanted - cells)
