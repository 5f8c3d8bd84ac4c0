"""Early Freeze (``agegender.models.early_freeze``), Algorithm 1 of Sundriyal's thesis: on scripted validation
losses the first converged task restores the whole network and freezes the shared layers with its own, later
ones only their own layers; training stops once every task converged; the early-stopping variant keeps
training the shared layers. Resuming: the callback's state (and ResumableReduceLROnPlateau's) survives a JSON
round trip and a fresh model, and ``train()`` interrupted and resumed keeps the frozen layers and the best
weights (slow). The small model and batch come from ``tests/helpers.py``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.helpers import _batch, _utk_model


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
