"""The checkpoint's monitored value: which direction is better, and which epoch the checkpoint kept (Keras 3
cannot tell the direction of ``val_age_mae`` and stops; ``--set monitor=val_age_mae`` needs it)."""

from __future__ import annotations

import math

import pytest

HISTORY = [{"epoch": 1, "val_loss": 2.0, "val_age_mae": 0.10, "val_gender_accuracy": 0.70},
           {"epoch": 2, "val_loss": 1.8, "val_age_mae": 0.30, "val_gender_accuracy": 0.90},
           {"epoch": 3, "val_loss": math.nan, "val_age_mae": 0.05, "val_gender_accuracy": 0.95}]


@pytest.mark.parametrize("monitor, mode, epoch", [("val_loss", "min", 2), ("val_age_mae", "min", 3),
                                                  ("val_gender_accuracy", "max", 3), ("val_gender_auc", "max", None)])
def test_the_best_epoch_follows_the_direction_of_the_monitor(monitor, mode, epoch):
    from agegender.training import best_epoch, monitor_mode

    assert monitor_mode(monitor) == mode
    assert best_epoch(HISTORY, monitor) == epoch  # epoch 3's val_loss is NaN: never kept for it


def test_keras_checkpoints_the_epoch_best_epoch_names(tmp_path):
    """Two epochs of a tiny model with ``monitor=val_age_mae`` train (Keras alone raises ValueError) and the
    checkpoint written is the epoch :func:`best_epoch` names: its saved weights predict as that epoch did."""
    import keras
    import numpy as np
    import tensorflow as tf

    from agegender.training import best_epoch, train

    class Recorder:  # what train() needs of a RunRecorder: a model path, a state folder and a callback
        model_path, state_dir = tmp_path / "model.keras", None

        @staticmethod
        def keras_callback():
            return keras.callbacks.Callback()

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 4)).astype("float32"), rng.normal(size=(64, 1)).astype("float32")
    inputs = keras.Input((4,))
    model = keras.Model(inputs, {"age": keras.layers.Dense(1, name="age")(inputs),
                                 "other": keras.layers.Dense(1, name="other")(inputs)})  # two: metrics by task
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss={"age": "mse", "other": "mse"}, metrics={"age": ["mae"]})
    data = tf.data.Dataset.from_tensor_slices((x, {"age": y, "other": y})).batch(16)
    history = train(model, data, data, epochs=3, recorder=Recorder, monitor="val_age_mae", verbose=0)
    kept = best_epoch(history, "val_age_mae")
    assert kept == 1 + int(np.argmin([h["val_age_mae"] for h in history]))
    saved = keras.saving.load_model(Recorder.model_path)
    mae = float(np.mean(np.abs(np.ravel(saved.predict(x, verbose=0)["age"]) - np.ravel(y))))
    assert mae == pytest.approx(history[kept - 1]["val_age_mae"], rel=1e-4)
