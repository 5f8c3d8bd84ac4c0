"""Issue 20 item 1, the training logic under ``KERAS_BACKEND=jax`` with TensorFlow made unimportable
(``tests/without_tensorflow.py``): one JAX process on 48 generated faces checks that the learned loss
weighting is Eq. 3.5 and learns, Early Freeze follows Algorithm 1, training resumes exactly, Early Freeze
resumes with its layers frozen again, and the NaN guard stops and restores, as their TensorFlow tests require
(all slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap


import pytest

from tests.helpers import BLOCKER, REPO, _env

pytest.importorskip("jax")


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

    # 2. Early Freeze, Algorithm 1, on scripted validation losses (tests/test_early_freeze.py's script)
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
    # layers stay unchanged and race goes back to its epoch-3 weights (tests/test_early_freeze.py)
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
    """As tests/test_early_freeze.py under TensorFlow: gender converges at epoch 6 (best 3, patience 3) and
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
