"""Training loop shared by the reproductions: precision policy, callbacks, records, predictions.

``train`` wraps ``model.fit`` with what every paper states or a serious run needs: early
stopping that restores the best weights, a best-model ``.keras`` checkpoint in the run folder,
a stop on a NaN loss, and the per-epoch history written to the run record as it goes.
"""

from __future__ import annotations

import numpy as np


def configure_precision(policy: str = "auto") -> str:
    """Set the Keras dtype policy: ``auto`` is ``mixed_float16`` when a GPU is visible, else ``float32``.

    Keras wraps the optimizer in a ``LossScaleOptimizer`` under ``mixed_float16``, so loss
    scaling stays on whenever float16 is used.
    """
    import keras
    import tensorflow as tf

    if policy == "auto":
        policy = "mixed_float16" if tf.config.list_physical_devices("GPU") else "float32"
    if policy not in ("float32", "mixed_float16", "mixed_bfloat16"):
        raise ValueError(f"precision must be auto, float32, mixed_float16 or mixed_bfloat16, got {policy!r}")
    keras.mixed_precision.set_global_policy(policy)
    return policy


def train(model, train_ds, val_ds, *, epochs: int, recorder=None, patience: int | None = None,
          monitor: str = "val_loss", verbose: int | str = "auto", extra_callbacks=()) -> list[dict]:
    """Fit ``model`` (already compiled) and return the per-epoch history as a list of dicts."""
    import keras

    callbacks = [keras.callbacks.TerminateOnNaN()]
    if patience is not None:
        callbacks.append(keras.callbacks.EarlyStopping(monitor=monitor, patience=patience,
                                                       restore_best_weights=True))
    if recorder is not None:
        callbacks.append(keras.callbacks.ModelCheckpoint(str(recorder.model_path), monitor=monitor,
                                                         save_best_only=True))
        callbacks.append(recorder.keras_callback())
    callbacks.extend(extra_callbacks)
    fit = model.fit(train_ds, validation_data=val_ds, epochs=epochs, callbacks=callbacks, verbose=verbose,
                    shuffle=False)  # the tf.data pipeline shuffles; Keras would only warn
    history = fit.history
    n = len(next(iter(history.values()), []))
    return [{"epoch": i + 1, **{k: float(v[i]) for k, v in history.items()}} for i in range(n)]


def collect_predictions(model, dataset) -> tuple[dict, dict, dict]:
    """Run ``model`` over ``dataset``; return (labels, predictions, weights), each a dict of arrays by task."""
    labels, predictions, weights = {}, {}, {}
    for images, y, w in dataset:
        out = model(images, training=False)
        out = out if isinstance(out, dict) else {model.output_names[0]: out}
        for task in y:
            labels.setdefault(task, []).append(np.asarray(y[task]))
            predictions.setdefault(task, []).append(np.asarray(out[task], dtype="float32"))
            weights.setdefault(task, []).append(np.asarray(w[task]))
    join = lambda d: {k: np.concatenate(v) for k, v in d.items()}  # noqa: E731
    return join(labels), join(predictions), join(weights)
