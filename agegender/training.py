"""Training loop shared by the reproductions: precision policy, callbacks, records, predictions.

``train`` wraps ``model.fit`` with what every paper states or a serious run needs: early
stopping that restores the best weights, a best-model ``.keras`` checkpoint in the run folder,
a stop on a NaN or infinite loss (:class:`agegender.errors.TrainingDiverged`, the last good
checkpoint kept), the per-epoch history written to the run record as it goes, and a resumable
training state saved at every epoch end.

Resuming
--------
With a recorder (or ``state_dir``), ``train`` keeps ``<run folder>/train_state/`` up to date
at each epoch end, atomically (weights file first, then ``state.json`` naming it, which is the
commit point): model and optimizer weights, the early-stopping state (wait, best value, best
epoch and best weights), the checkpoint's best value, the history so far, the training seconds
and the state of any extra callback that has ``get_resume_state()`` / ``set_resume_state()``.
If that folder holds a state when ``train`` starts, it is restored and ``fit`` continues with
``initial_epoch`` = the last completed epoch; the record gets ``resumed_from_epoch`` and its
history keeps each epoch exactly once. A state marked finished (killed after training, before
the record was completed) is restored without training. ``RunRecorder.finish`` removes the
folder. Pair it with ``RunRecorder(..., resume=True)``, which finds the run folder of the same
command again (:mod:`agegender.records`).

Distributed training: a model built and compiled under a ``tf.distribute`` strategy's scope
(:mod:`agegender.distribute`) trains here unchanged; the training state is restored under the
same scope, and the NaN guard sees the loss reduced over the replicas. A state saved under one
strategy loads under another (the weights are the same variables), but a reproduction resumes
only a run of the same configuration, strategy included.

What a resume does not restore: the random streams. Dropout masks, the shuffle order and the
augmentation of the resumed epochs are drawn afresh from the seeds (as for a first epoch), so a
resumed run continues from the same weights and optimizer state but is not bit-identical to an
uninterrupted one.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from agegender import atomic
from agegender.errors import TrainingDiverged

STATE_FILE = "state.json"


PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
PRECISION_HELP = "mixed_float16 when a GPU is visible, else float32"


def configure_precision(policy: str = "auto") -> str:
    """Set the Keras dtype policy: ``auto`` is ``mixed_float16`` when a GPU is visible, else ``float32``.

    Keras wraps the optimizer in a ``LossScaleOptimizer`` under ``mixed_float16``, so loss
    scaling stays on whenever float16 is used. ``mixed_bfloat16`` (float32 variables, bfloat16
    compute) needs no loss scaling; on a CPU with AVX-512 BF16 / AMX it is the fast option.
    """
    import keras

    from agegender.backend import gpus

    if policy == "auto":
        policy = "mixed_float16" if gpus() else "float32"
    if policy not in PRECISIONS[1:]:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {policy!r}")
    keras.mixed_precision.set_global_policy(policy)
    return policy


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and the backend (``keras.utils.set_random_seed``: TensorFlow's or PyTorch's generator
    when present, Keras's own seed generator under JAX); ``deterministic`` also makes the backend's ops
    deterministic (TensorFlow's op determinism, ``tf.config.experimental.enable_op_determinism``; under JAX,
    XLA's deterministic GPU ops: :func:`agegender.backend.enable_determinism`), so two runs on the same device
    with the same seed give the same numbers (slower on a GPU)."""
    import keras

    keras.utils.set_random_seed(seed)
    if deterministic:
        from agegender.backend import enable_determinism

        enable_determinism()


def ensure_loss_scaling(model) -> None:
    """Raise unless a model that computes in float16 has a ``LossScaleOptimizer`` (float16 gradients
    underflow to zero without loss scaling). Keras adds it at ``compile`` under ``mixed_float16``."""
    import keras

    layers = model._flatten_layers(include_self=True) if hasattr(model, "_flatten_layers") else [model, *model.layers]
    float16 = [layer.name for layer in layers if getattr(layer, "compute_dtype", None) == "float16"]
    if float16 and not isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer):
        raise RuntimeError(f"layers {float16[:3]} compute in float16 but the optimizer "
                           f"{type(model.optimizer).__name__} has no loss scaling; compile the model under the "
                           "mixed_float16 policy (Keras then wraps the optimizer in a LossScaleOptimizer)")


def monitor_mode(monitor: str) -> str:
    """``"max"`` for a monitored value that rises as the model gets better (accuracy, AUC, precision, recall, F1),
    else ``"min"`` (losses, MAE): Keras 3 infers it only for losses and stops on ``val_age_mae``."""
    name = monitor.lower()
    return "max" if any(word in name for word in ("acc", "auc", "precision", "recall", "f1")) else "min"


def best_epoch(history: list[dict], monitor: str = "val_loss") -> int | None:
    """The epoch (1-based, as ``history`` numbers them) whose finite ``monitor`` is best (:func:`monitor_mode`): the
    one the checkpoint kept; None when no epoch has a finite value."""
    sign = -1.0 if monitor_mode(monitor) == "max" else 1.0
    scores = [(sign * h[monitor], h.get("epoch", i + 1)) for i, h in enumerate(history)
              if isinstance(h.get(monitor), (int, float)) and math.isfinite(h[monitor])]
    return int(min(scores, key=lambda se: se[0])[1]) if scores else None


def train(model, train_ds, val_ds, *, epochs: int, recorder=None, patience: int | None = None,
          monitor: str = "val_loss", verbose: int | str = "auto", extra_callbacks=(), state_dir=None,
          info: dict | None = None) -> list[dict]:
    """Fit ``model`` (already compiled); return the history (every epoch, once) as a list of dicts.

    ``state_dir`` (default: ``recorder.state_dir`` when a recorder is given, else no state) is
    where the resumable state lives (module docstring). ``info``, when given, is filled with
    ``resumed_from_epoch`` (None for a fresh start), ``seconds`` (training time summed over every
    process of a resumed run) and ``trained`` (False when a finished state was only restored).
    A NaN or infinite training loss stops the run: the model gets the weights of the last good
    epoch back, the record is marked failed and :class:`TrainingDiverged` is raised.
    """
    import keras

    ensure_loss_scaling(model)
    if state_dir is None and recorder is not None:
        state_dir = recorder.state_dir
    guard = _callback_classes()["NaNGuard"]()
    callbacks = [_callback_classes()["EpochTiming"](), guard]  # first: later callbacks see its keys
    early = checkpoint = None
    if patience is not None:
        early = keras.callbacks.EarlyStopping(monitor=monitor, mode=monitor_mode(monitor), patience=patience,
                                              restore_best_weights=True)
        callbacks.append(early)
    if recorder is not None:
        checkpoint = keras.callbacks.ModelCheckpoint(str(recorder.model_path), monitor=monitor,
                                                     mode=monitor_mode(monitor), save_best_only=True)
        callbacks.append(checkpoint)
    callbacks.extend(extra_callbacks)
    if recorder is not None:  # after the extra callbacks: keys they add to the logs (learning_rate) are recorded
        callbacks.append(recorder.keras_callback())
    state = _callback_classes()["TrainingState"](state_dir, guard=guard, early_stopping=early, checkpoint=checkpoint,
                                                 others=list(extra_callbacks))
    callbacks.append(state)  # last: it saves what the others have updated at each epoch end

    with strategy_scope(model):  # the optimizer's slots are built under the model's strategy
        restored = state.restore(model)
    resumed_from = restored["epoch"] if restored else None
    if restored:
        print(f"[train] resuming after epoch {resumed_from} of {epochs} from {state_dir}"
              + (" (training had finished)" if restored.get("finished") else ""), flush=True)
        if recorder is not None:
            recorder.record["resumed_from_epoch"] = resumed_from
            recorder.truncate_history(resumed_from)
            for entry in state.history:  # the state's history is the truth (one entry per epoch)
                recorder.log_epoch(entry["epoch"], {k: v for k, v in entry.items() if k != "epoch"})
    trained = not (restored and restored.get("finished")) and (resumed_from or 0) < epochs
    if trained:
        with _shapes_from_first_replica(model):
            model.fit(train_ds, validation_data=val_ds, epochs=epochs, initial_epoch=resumed_from or 0,
                      callbacks=callbacks, verbose=verbose,
                      shuffle=False)  # the input pipeline shuffles (tf.data or the numpy loader)
    if info is not None:
        info.update(resumed_from_epoch=resumed_from, seconds=state.seconds_total(), trained=trained)
    if guard.diverged:
        epoch, batch, value = guard.diverged
        with strategy_scope(model):
            good = state.restore_last_good(model)
        kept = [str(p) for p in ((recorder.model_path if recorder else None),
                                 (Path(state_dir) if state_dir and good else None)) if p and Path(p).exists()]
        message = (f"training diverged: the loss became {value} at epoch {epoch} (batch {batch + 1}); stopped, "
                   + (f"the model is back at the end of epoch {good}" if good else "no epoch had completed")
                   + (f"; last good checkpoint kept: {', '.join(kept)}" if kept else ""))
        if recorder is not None:
            recorder.fail(message)
        raise TrainingDiverged(message, fix="lower the learning rate, or look for NaN/inf labels or inputs; the "
                                            "same command then starts a new run (a failed run is not resumed)")
    return [dict(h) for h in state.history]


def strategy_scope(model):
    """The ``tf.distribute`` scope of the strategy ``model`` was built under (a no-op context without one).

    A model built under ``strategy.scope()`` (:func:`agegender.distribute.make_strategy`) has
    mirrored variables; optimizer variables created for it later (building the optimizer to
    load a saved training state) must be created under the same scope.
    """
    import contextlib

    strategy = getattr(model, "_distribute_strategy", None)
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def _shapes_from_first_replica(model):
    """Context manager: let ``fit`` start on a first batch that the replicas split unevenly.

    Under a strategy with several replicas Keras 3 (TensorFlow backend, ``_maybe_symbolic_build``)
    learns the input shapes from the first distributed batch of ``fit`` and of each validation pass
    by averaging it over the replicas (``strategy.reduce("MEAN", batch)``). When a split is smaller
    than one global batch and the replicas do not divide it (49 images on 2 replicas: 25 + 24), the
    shares differ in shape and ``fit`` fails in ``AddN``. Only the shapes are needed, so for the
    duration of ``fit`` this takes the first replica's share instead (an attribute of this model
    instance, removed afterwards). Nothing changes for one replica, or where Keras lacks these
    internals (it then behaves as Keras does).
    """
    import contextlib

    strategy = getattr(model, "_distribute_strategy", None)
    if (strategy is None or strategy.num_replicas_in_sync < 2 or not hasattr(model, "_maybe_symbolic_build")
            or not hasattr(model, "_symbolic_build")):
        return contextlib.nullcontext()

    import tensorflow as tf
    from keras import tree

    def first_share(value):
        return strategy.experimental_local_results(value)[0] if isinstance(value, tf.distribute.DistributedValues) \
            else value

    def maybe_symbolic_build(iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, it in iterator:
                data_batch = tree.map_structure(first_share, next(it))
                break
        with strategy.scope():
            model._symbolic_build(data_batch=data_batch)

    @contextlib.contextmanager
    def patched():
        object.__setattr__(model, "_maybe_symbolic_build", maybe_symbolic_build)
        try:
            yield
        finally:
            model.__dict__.pop("_maybe_symbolic_build", None)

    return patched()


def _finite(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return True  # not a number: nothing to check


_CLASSES: dict = {}


def _callback_classes() -> dict:
    """The Keras callbacks of this module (defined on first use, so importing it does not load Keras)."""
    if _CLASSES:
        return _CLASSES
    import keras

    class NaNGuard(keras.callbacks.Callback):
        """Stops training at the first batch whose loss is NaN or infinite, and remembers where."""

        def __init__(self):
            super().__init__()
            self.diverged = None
            self.epoch = 0

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch + 1

        def on_train_batch_end(self, batch, logs=None):
            loss = (logs or {}).get("loss")
            if loss is not None and not _finite(loss) and self.diverged is None:
                self.diverged = (self.epoch, batch, float(loss))
                self.model.stop_training = True

    class EpochTiming(keras.callbacks.Callback):
        """Adds each epoch's wall and CPU seconds and the load it ran under to the logs (and so to the
        history and the run record): ``epoch_seconds``, ``epoch_cpu_seconds``, ``load_1min`` and
        ``other_processes_cores`` (:mod:`agegender.timing`; training and validation together)."""

        def on_epoch_begin(self, epoch, logs=None):
            from agegender.timing import snapshot

            self.start = snapshot()

        def on_epoch_end(self, epoch, logs=None):
            from agegender.timing import measured, snapshot

            if logs is None or not hasattr(self, "start"):
                return
            timing = measured(self.start, snapshot())
            logs["epoch_seconds"] = timing["wall_s"]
            logs["epoch_cpu_seconds"] = timing["cpu_s"]
            if timing["load_1min_end"] is not None:
                logs["load_1min"] = timing["load_1min_end"]
            if timing.get("other_processes_cores") is not None:
                logs["other_processes_cores"] = timing["other_processes_cores"]

    class TrainingState(keras.callbacks.Callback):
        """Saves and restores the resumable training state (module docstring)."""

        def __init__(self, state_dir, *, guard, early_stopping=None, checkpoint=None, others=()):
            super().__init__()
            self.dir = Path(state_dir) if state_dir else None
            self.guard, self.early, self.checkpoint = guard, early_stopping, checkpoint
            self.others = [cb for cb in others if hasattr(cb, "get_resume_state") and hasattr(cb, "set_resume_state")]
            self.history: list[dict] = []
            self.saved: dict | None = None  # the last state written or read
            self.seconds_before = 0.0
            self.fit_started = None
            self.best_written = None

        # ---- reading back
        def read(self) -> dict | None:
            if self.dir is None or not (self.dir / STATE_FILE).is_file():
                return None
            import json

            try:
                state = json.loads((self.dir / STATE_FILE).read_text(encoding="utf-8"))
                if not (self.dir / state["weights"]).is_file():
                    raise FileNotFoundError(state["weights"])
                return state
            except (OSError, ValueError, KeyError, TypeError) as err:  # written atomically: should not happen
                print(f"[train] warning: ignoring an unreadable training state in {self.dir} "
                      f"({type(err).__name__}: {err}); starting afresh", file=sys.stderr)
                return None

        def restore(self, model) -> dict | None:
            state = self.read()
            if state is None:
                return None
            if model.optimizer is not None and not model.optimizer.built:
                model.optimizer.build(model.trainable_variables)  # optimizer variables exist before loading
            model.load_weights(str(self.dir / state["weights"]))
            self.history = [dict(h) for h in state.get("history", [])]
            self.seconds_before = float(state.get("seconds") or 0.0)
            self.best_written = (state.get("early_stopping") or {}).get("best_weights")
            for cb in self.others:
                saved = (state.get("callbacks") or {}).get(type(cb).__name__)
                if saved is not None:
                    cb.set_resume_state(saved)
            self.saved = state
            return state

        def restore_last_good(self, model) -> int | None:
            """Put the weights of the last saved epoch back into ``model``; return that epoch (None: none)."""
            if self.saved is None or self.dir is None:
                return None
            model.load_weights(str(self.dir / self.saved["weights"]))
            return int(self.saved["epoch"])

        def seconds_total(self) -> float:
            now = time.time() - self.fit_started if self.fit_started else 0.0
            return self.seconds_before + now

        # ---- Keras hooks
        def on_train_begin(self, logs=None):
            self.fit_started = time.time()
            state = self.saved
            if not state:
                return
            es = state.get("early_stopping")
            if self.early is not None and es:  # after EarlyStopping.on_train_begin has reset it
                self.early.wait = int(es["wait"])
                self.early.best = es["best"]
                self.early.best_epoch = int(es["best_epoch"])
                if es.get("best_weights"):
                    with np.load(self.dir / es["best_weights"], allow_pickle=False) as arrays:
                        self.early.best_weights = [arrays[f"arr_{i}"] for i in range(len(arrays.files))]
            if self.checkpoint is not None and state.get("checkpoint_best") is not None:
                self.checkpoint.best = float(state["checkpoint_best"])

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            if self.guard.diverged is not None or not all(_finite(v) for k, v in logs.items() if "loss" in k
                                                          and not k.startswith("val_")):
                return  # never save a diverged state: the last good one stays
            entry = {"epoch": epoch + 1, **{k: float(v) for k, v in logs.items()}}
            self.history = [h for h in self.history if h["epoch"] < entry["epoch"]] + [entry]
            self._save(epoch + 1, finished=False)

        def on_train_end(self, logs=None):
            if self.guard.diverged is None and self.history:
                self._save(self.history[-1]["epoch"], finished=True)

        def _save(self, epoch: int, *, finished: bool) -> None:
            if self.dir is None:
                return
            self.dir.mkdir(parents=True, exist_ok=True)
            weights = f"{'final' if finished else 'epoch'}-{epoch:04d}.weights.h5"
            _save_weights(self.model, self.dir / weights)
            state = {"epoch": epoch, "finished": finished, "weights": weights, "history": self.history,
                     "seconds": self.seconds_total(), "checkpoint_best": None, "early_stopping": None,
                     "callbacks": {type(cb).__name__: cb.get_resume_state() for cb in self.others}}
            if self.checkpoint is not None and _finite(self.checkpoint.best):
                state["checkpoint_best"] = float(self.checkpoint.best)
            es = self.early
            if es is not None:
                best_file = None
                if es.best_weights is not None:
                    best_file = f"best-{es.best_epoch + 1:04d}.npz"
                    if self.best_written != best_file:  # written by this process (or committed before)
                        with atomic.atomic_path(self.dir / best_file) as tmp, open(tmp, "wb") as handle:
                            np.savez(handle, *es.best_weights)
                        self.best_written = best_file
                best = None if es.best is None or not _finite(es.best) else float(es.best)
                state["early_stopping"] = {"wait": int(es.wait), "best": best, "best_epoch": int(es.best_epoch),
                                           "best_weights": best_file}
            atomic.write_json(self.dir / STATE_FILE, state)  # the commit point
            keep = {STATE_FILE, weights, (state["early_stopping"] or {}).get("best_weights")}
            for path in self.dir.iterdir():
                if path.name not in keep and not path.name.startswith("."):
                    path.unlink(missing_ok=True)
            self.saved = state

    _CLASSES.update(NaNGuard=NaNGuard, TrainingState=TrainingState, EpochTiming=EpochTiming)
    return _CLASSES


def _save_weights(model, path: Path) -> None:
    """``model.save_weights`` (model and optimizer variables) to a temporary name, fsync, rename."""
    tmp = path.with_name(f".{os.getpid()}-{path.name}")  # keeps the .weights.h5 suffix Keras requires
    try:
        model.save_weights(str(tmp), overwrite=True)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def predict_batch(model, images, pad_to: int | None = None) -> dict:
    """``{output name: float32 array}`` of ``model`` on one batch, in inference mode.

    TensorFlow: ``model(images, training=False)``, eagerly. Other backends (JAX, PyTorch): the model's compiled
    predict step (``predict_on_batch``); a batch shorter than ``pad_to`` rows is padded with zeros to it and the
    outputs cut back, so that one compilation serves every batch of a dataset (an eager JAX call compiles each op
    for each new shape; inference mode keeps the rows independent, batch normalisation included)."""
    from agegender.backend import is_tensorflow

    if is_tensorflow():
        out = model(images, training=False)
        out = out if isinstance(out, dict) else {model.output_names[0]: out}
        return {k: np.asarray(v, dtype="float32") for k, v in out.items()}
    images = np.asarray(images)
    rows = len(images)
    if pad_to is not None and rows < pad_to:
        images = np.concatenate([images, np.zeros((pad_to - rows, *images.shape[1:]), dtype=images.dtype)])
    out = model.predict_on_batch(images)
    out = out if isinstance(out, dict) else {model.output_names[0]: out}
    return {k: np.asarray(v, dtype="float32")[:rows] for k, v in out.items()}


def layer_outputs(model, images, names, training: bool = True) -> dict:
    """The outputs of ``model``'s layers ``names`` for ``images``, as numpy arrays by name; ``training`` True
    runs BatchNormalization on the batch's own statistics, as during training. The model's variables are left
    as they were (a training-mode pass would move the BatchNormalization moving statistics)."""
    import keras

    probe = keras.Model(model.inputs, [model.get_layer(name).output for name in names])
    state = [np.array(variable) for variable in model.non_trainable_variables]
    outputs = probe(images, training=training)
    for variable, value in zip(model.non_trainable_variables, state):
        variable.assign(value)
    return {name: np.asarray(out) for name, out in zip(names, outputs if len(names) > 1 else [outputs])}


def _batches(dataset) -> int | None:
    """How many batches ``dataset`` yields (a ``tf.data.Dataset`` of known cardinality or anything with a length)."""
    if hasattr(dataset, "cardinality"):
        n = int(dataset.cardinality())
        return n if n >= 0 else None
    try:
        return len(dataset)
    except TypeError:
        return None


def collect_predictions(model, dataset, progress=None, every_s: float = 60.0) -> tuple[dict, dict, dict]:
    """Run ``model`` over ``dataset``; return (labels, predictions, weights), each a dict of arrays by task
    (:func:`predict_batch` on each batch). ``progress``, a callable taking one line, hears how far it got every
    ``every_s`` seconds and how long it took (evaluating 20,000 faces at 224 px takes minutes on a CPU)."""
    labels, predictions, weights = {}, {}, {}
    size, faces, total = None, 0, _batches(dataset) if progress else None
    start = last = time.monotonic()
    for done, (images, y, w) in enumerate(dataset, 1):
        out = predict_batch(model, images, pad_to=size)
        size = size or len(images)
        faces += len(images)
        for task in y:
            labels.setdefault(task, []).append(np.asarray(y[task]))
            predictions.setdefault(task, []).append(out[task])
            weights.setdefault(task, []).append(np.asarray(w[task]))
        if progress and time.monotonic() - last >= every_s:
            last = time.monotonic()
            progress(f"batch {done}{f' of {total}' if total else ''}, {faces / (last - start):.1f} faces/s")
    if progress:
        progress(f"{faces} faces in {time.monotonic() - start:.0f} s")
    join = lambda d: {k: np.concatenate(v) for k, v in d.items()}  # noqa: E731
    return join(labels), join(predictions), join(weights)
