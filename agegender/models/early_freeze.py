"""Early Freeze (Sundriyal, thesis Sec. 3.5, Algorithm 1) as a Keras callback, for any number of tasks.

Algorithm 1, at the end of every epoch, for i = 1..K in task order::

    if val_loss[i] > minimum_val_loss[i]: Counter[i] += 1
    else:                                 minimum_val_loss[i] = val_loss[i]
    if Counter[i] >= P:
        freeze the shared layers of the MTL model and the layers of task i
        restore the model parameters to the state when Counter[i] = 0
        break

and the text: "we stop the training of that task and freeze the parameters of the pretrained
model and the shared layers ... and revert the model state to [the] earlier epoch when that task
performed best. Then we start the training of the remaining tasks on the task-specific layers
only".

:class:`EarlyFreeze` implements this with the choices the algorithm leaves open:

* **Counter reset.** ``Counter[i]`` counts epochs since task ``i``'s last improvement
  (reset to 0 when its validation loss reaches a new minimum: line 8 implies it, since line 11
  refers to "the state when Counter[i] = 0"). ``min_delta`` (default 0) is the improvement
  needed.
* **One task per epoch** (the ``break``): when several tasks reach the patience in the same
  epoch, the first in task order converges; the others are looked at again next epoch.
* **What is restored.** At the first convergence the backbone and shared layers are still
  training, so the *whole* network (and the loss weights) goes back to the epoch of that
  task's best validation loss; the other tasks' minima, counters and best states are then reset
  to that epoch (the model *is* that epoch's model again). At later convergences the backbone
  and shared layers are already frozen, so only the converged task's own layers go back to
  their best epoch: the other tasks keep what they learnt meanwhile, and the restored layers
  match the frozen shared part they were trained with.
* **What is frozen.** ``trainable = False`` on the backbone and shared layers (once) and on the
  converged task's layers; frozen batch-norm layers then run in inference mode (Keras 3), so
  their moving statistics stop changing too. The converged task's entry of the model's
  ``task_gate`` (:class:`~agegender.models.loss_weighting.MultiTaskLossModel`) is set to 0,
  which stops its loss from sending gradients into the network; the loss weights keep learning.
  The training function is rebuilt (``make_train_function(force=True)``) so the next batch uses
  the new set of trainable weights. The optimizer is kept (no recompilation): its learning rate
  (as lowered by ``ReduceLROnPlateau``) and its moments carry on; frozen variables simply get
  no more updates. Under JAX the optimizer is given a ``stateless_apply`` that updates the
  model's trainable subset (:func:`updates_a_subset`): Keras's JAX trainer hands it only the
  trainable variables, which its own ``stateless_apply`` refuses for an optimizer built on more
  (``ValueError: ... the optimizer was built with N variables`` at the first step after a freeze).
* **End.** When every task has converged, training stops. When the epoch limit comes first,
  each task still training has its own layers restored to its best epoch if the shared part is
  frozen; if no task ever converged, the whole network goes back to the epoch with the lowest
  sum of the per-task validation losses (as Keras's ``EarlyStopping(restore_best_weights=True)``).

``mode="stop"`` is the comparison of Table 5.4 / Figure 5.2, "early stopping of [the] converged
task": a converged task's layers are frozen and its loss gated, but nothing is restored and the
backbone and shared layers keep training for the other tasks (so the converged task's
validation loss can rise again, as in Figure 5.2).

Every convergence is recorded in :attr:`EarlyFreeze.events` and every epoch in
:attr:`EarlyFreeze.epochs` (validation losses, counters, learning rate, trainable parameter count).
A one-task model with this callback is early stopping with best-weights restore.

Resuming
--------
:func:`agegender.training.train` saves the state of every extra callback that has
``get_resume_state()`` / ``set_resume_state(state)`` at each epoch end and hands it back before
``fit`` continues after a kill. :class:`EarlyFreeze` returns (JSON): per-task best validation
losses, best epochs and counters, the tasks still training, the per-epoch validation losses, the
overall best, whether the shared part is frozen, the names of every layer it froze, and its
events and per-epoch log. The weight snapshots it restores from (the whole network at the
epochs it may go back to) are arrays: with ``state_dir`` (the run's ``train_state/`` folder,
:attr:`agegender.records.RunRecorder.state_dir`) they are written once each, atomically, as
``state_dir/.early_freeze/snapshot-<epoch>.npz`` (the state names them; the hidden folder is
left alone by the trainer's clean-up and removed with ``train_state/`` when the run completes),
and those no committed state names any more are deleted. A resumed callback, at
``on_train_begin`` (after ``train`` has loaded the model and optimizer weights), reloads the
snapshots, sets ``trainable = False`` on the layers it had frozen again, re-applies the task
gate and rebuilds the training function, so the resumed epochs train exactly the layers the
interrupted ones did. The flags are set there, not in ``set_resume_state``: the trainer builds
the optimizer and loads the saved weights before ``fit``, and the optimizer must be built on the
same variables as in the interrupted process (every layer trainable, as when it was first
built), or its saved slots would not match. Without ``state_dir`` the snapshots are lost on
resume: a restore that needs one is skipped (its event says ``"restore_lost": true``) and a
warning is printed.

Two kill windows of a few milliseconds are not fully covered: killed after the last epoch's
state was saved but before ``on_train_end``, the resumed trainer has no epoch to fit, so
:meth:`EarlyFreeze.end_after_resume` must be called to do the end-of-training restores (the
Sundriyal reproduction does); killed after every task converged but before the trainer marked
the state finished, the resumed ``fit`` runs one more epoch (only the loss weights still train)
before the callback stops it again.

:class:`ResumableReduceLROnPlateau` is Keras's ``ReduceLROnPlateau`` with the same hooks (its
wait and cooldown counters and best value; the learning rate itself is an optimizer variable,
restored with the weights, and set again from the state for good measure).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Callable, Mapping, Sequence

import keras
import numpy as np

from agegender import atomic

MODES = ("freeze", "stop")
SNAPSHOT_DIR = ".early_freeze"  # inside the training-state folder (a leading dot: the trainer leaves it alone)
STATE_VERSION = 1


def _num(value):
    """A float for JSON (inf / NaN as None)."""
    return float(value) if value is not None and math.isfinite(float(value)) else None


def _inf(value):
    return math.inf if value is None else float(value)


def _write_snapshot(path: Path, snap: dict) -> None:
    """``{layer name: [arrays]}`` as one ``.npz`` (names, counts, a0, a1, ...), written atomically."""
    names = list(snap)
    arrays = [a for name in names for a in snap[name]]
    with atomic.atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, names=np.array(names, dtype=str), counts=np.array([len(snap[n]) for n in names], "int64"),
                 **{f"a{i}": np.asarray(a) for i, a in enumerate(arrays)})


def _read_snapshot(path: Path) -> dict:
    snap, k = {}, 0
    with np.load(path, allow_pickle=False) as data:
        for name, count in zip(data["names"].tolist(), data["counts"].tolist()):
            snap[str(name)] = [data[f"a{k + j}"] for j in range(int(count))]
            k += int(count)
    return snap


def updates_a_subset(model) -> None:
    """Under JAX, let ``model``'s optimizer update only the variables that are trainable now (a no-op on
    other backends, and when done before).

    Keras's JAX trainer calls ``optimizer.stateless_apply(optimizer_values, grads, trainable_values)`` with
    the values of ``model.trainable_variables``, and Keras's ``stateless_apply`` accepts only the full list
    the optimizer was built with, so a model whose layers were frozen during ``fit`` fails at its next step.
    TensorFlow's and PyTorch's trainers call ``optimizer.apply(grads, variables)``, which updates any subset
    of the built variables. This gives the optimizer (the inner one of a ``LossScaleOptimizer``) a
    ``stateless_apply`` that does that ``apply`` for a subset: the trainable variables are updated with their
    own moments, the step count and learning rate go on, and the frozen variables and their moments are left
    as they are, as on TensorFlow. The optimizer keeps every variable it was built with, so a training state
    saved after a freeze loads into an optimizer built before it (module docstring, "Resuming").
    """
    if keras.backend.backend() != "jax":
        return
    optimizer = getattr(model, "optimizer", None)
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    if inner is None or getattr(inner, "_updates_a_subset", False):
        return
    full = inner.stateless_apply

    def stateless_apply(optimizer_variables, grads, trainable_variables):
        if len(trainable_variables) == len(inner._trainable_variables):
            return full(optimizer_variables, grads, trainable_variables)
        variables = list(model.trainable_variables)  # the JAX trainer's state holds these, in this order
        if len(variables) != len(trainable_variables):
            raise ValueError(f"{type(inner).__name__}: {len(trainable_variables)} trainable values for "
                             f"{len(variables)} trainable variables of {model.name}")
        mapping = list(zip(variables, trainable_variables)) + list(zip(inner.variables, optimizer_variables))
        with keras.StatelessScope(state_mapping=mapping) as scope:
            inner.apply(grads, variables)
        return ([scope.get_current_value(v) for v in variables],
                [scope.get_current_value(v) for v in inner.variables])

    inner.stateless_apply = stateless_apply
    inner._updates_a_subset = True


class EarlyFreeze(keras.callbacks.Callback):
    """Per-task patience on ``val_{task}_loss``; freeze and restore as in Algorithm 1 (module docstring).

    Args:
        task_layers: ``{task: [layer names]}`` in task order (Algorithm 1's loop order).
        shared_layers: names of the backbone and shared layers, frozen at the first convergence.
        patience: P of Algorithm 1 (epochs without a new minimum).
        mode: ``"freeze"`` (Early Freeze) or ``"stop"`` (early stopping of the converged task only).
        min_delta: a new minimum must be lower by more than this.
        monitor: log key template of a task's validation loss.
        restore_at_end: restore best states at the end of training (module docstring, "End").
        stop_when_done: stop training once every task has converged.
        log: called with a one-line message at each convergence (e.g. ``print``).
        state_dir: the run's training-state folder, where the weight snapshots are kept for a resume
            (module docstring, "Resuming"); None: they live in memory only.
    """

    def __init__(self, task_layers: Mapping[str, Sequence[str]], shared_layers: Sequence[str], *, patience: int = 5,
                 mode: str = "freeze", min_delta: float = 0.0, monitor: str = "val_{task}_loss",
                 restore_at_end: bool = True, stop_when_done: bool = True, log: Callable[[str], None] | None = None,
                 state_dir=None):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        if not task_layers:
            raise ValueError("no tasks")
        self.task_layers = {str(t): list(names) for t, names in task_layers.items()}
        self.tasks = tuple(self.task_layers)
        self.shared_layers = list(shared_layers)
        self.patience, self.mode, self.min_delta, self.monitor = int(patience), mode, float(min_delta), monitor
        self.restore_at_end, self.stop_when_done, self.log = restore_at_end, stop_when_done, log
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self._resume: dict | None = None  # a state from set_resume_state, applied to the model at on_train_begin
        self._written: set[str] = set()  # snapshot files known complete (written here, or named by a committed state)
        self._saved_refs: set[str] = set()  # snapshot files named by the last state handed out
        self.ended = False  # on_train_end has run (saved with the state: a resume knows whether it still must)

    # ------------------------------------------------------------------ helpers

    @property
    def network(self):
        return getattr(self.model, "network", self.model)

    def _layer(self, name):
        try:
            return self.network.get_layer(name)
        except ValueError:
            return self.model.get_layer(name)

    def _snapshot(self) -> dict:
        snap = {layer.name: [np.array(w) for w in layer.get_weights()] for layer in self.network.layers if layer.weights}
        weighting = getattr(self.model, "weighting", None)
        if weighting is not None:
            snap["__weighting__"] = [np.array(w) for w in weighting.get_weights()]
        return snap

    def _restore(self, epoch: int, names=None) -> bool:
        """Put back the snapshot of ``epoch`` (``names``: only those layers); False when it was lost."""
        snap = self._snapshots.get(epoch)
        if snap is None:
            print(f"[early freeze] warning: the weights of epoch {epoch} were lost in a resume (no state_dir); "
                  "not restored", file=sys.stderr)
            return False
        for name, values in snap.items():
            if name == "__weighting__":
                if names is None:
                    self.model.weighting.set_weights(values)
            elif names is None or name in names:
                self.network.get_layer(name).set_weights(values)
        return True

    def _freeze(self, names) -> list[str]:
        frozen = []
        for name in names:
            layer = self._layer(name)
            if layer.trainable:
                layer.trainable = False
                frozen.append(name)
        return frozen

    def _gate(self, task: str) -> None:
        gate = getattr(self.model, "task_gate", None)
        if gate is not None and task in getattr(self.model, "tasks", ()):
            values = np.array(keras.ops.convert_to_numpy(gate))
            values[list(self.model.tasks).index(task)] = 0.0
            gate.assign(values)

    def _prune(self) -> None:
        keep = {self._best_epoch[t] for t in self._active}
        if not self.shared_frozen:
            keep.add(self._overall_epoch)
        for epoch in list(self._snapshots):
            if epoch not in keep:
                del self._snapshots[epoch]

    def _trainable_count(self) -> int:
        return int(sum(np.prod(w.shape) for w in self.model.trainable_weights))

    # ------------------------------------------------------------------ callback

    def on_train_begin(self, logs=None):
        missing = [n for names in [*self.task_layers.values(), self.shared_layers] for n in names
                   if not self._has_layer(n)]
        if missing:
            raise ValueError(f"EarlyFreeze: the model has no layers named {missing}")
        if self._resume is not None:
            self._resume_model()
            return
        self._active = list(self.tasks)
        self._best = {t: math.inf for t in self.tasks}
        self._best_epoch = {t: 0 for t in self.tasks}
        self._counter = {t: 0 for t in self.tasks}
        self._val_history: dict[int, dict[str, float]] = {}
        self._snapshots: dict[int, dict] = {0: self._snapshot()}
        self._overall, self._overall_epoch = math.inf, 0
        self.shared_frozen = False
        self.events: list[dict] = []
        self.epochs: list[dict] = []
        self.converged: dict[str, dict] = {}
        self._written, self._saved_refs = set(), set()  # a fresh start: no snapshot file is trusted
        self.ended = False  # on_train_end has run

    def _has_layer(self, name) -> bool:
        try:
            self._layer(name)
            return True
        except ValueError:
            return False

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        e = int(epoch) + 1  # epochs numbered from 1, as in the run records
        values = {}
        for task in self.tasks:
            key = self.monitor.format(task=task)
            if key not in logs:
                raise KeyError(f"EarlyFreeze monitors {key!r}, which the epoch logs lack (keys: {sorted(logs)}); "
                               "pass validation data and a model that logs per-task losses")
            values[task] = float(logs[key])
        self._val_history[e] = values
        improved = False
        for task in self._active:
            if values[task] < self._best[task] - self.min_delta:
                self._best[task], self._best_epoch[task], self._counter[task] = values[task], e, 0
                improved = True
            else:
                self._counter[task] += 1
        if not self.shared_frozen and sum(values.values()) < self._overall:
            self._overall, self._overall_epoch = sum(values.values()), e
            improved = True
        if improved:
            self._snapshots[e] = self._snapshot()
        event = None
        for task in list(self._active):  # Algorithm 1: the first task at the patience converges; break
            if self._counter[task] >= self.patience:
                event = self._converge(task, e)
                break
        self._prune()
        lr = getattr(getattr(self.model, "optimizer", None), "learning_rate", None)
        self.epochs.append({"epoch": e, **{f"val_{t}_loss": values[t] for t in self.tasks},
                            **{f"counter_{t}": self._counter[t] for t in self.tasks},
                            "active": list(self._active), "shared_frozen": self.shared_frozen,
                            "learning_rate": float(keras.ops.convert_to_numpy(lr)) if lr is not None else None,
                            "trainable_params": self._trainable_count(),
                            "event": event["task"] if event else None})
        if not self._active and self.stop_when_done:
            self.model.stop_training = True

    def _converge(self, task: str, epoch: int) -> dict:
        best = self._best_epoch[task]
        event = {"epoch": epoch, "task": task, "mode": self.mode, "best_epoch": best,
                 "best_val_loss": self._best[task], "restore": None, "frozen": []}
        if self.mode == "freeze":
            if not self.shared_frozen:
                # the whole network, at this task's best epoch
                event["restore"] = "model" if self._restore(best) else None
                if event["restore"] is None:
                    event["restore_lost"] = True
                event["frozen"] += self._freeze(self.shared_layers)
                self.shared_frozen = True
                for other in self._active:  # the model is epoch `best`'s again
                    if other != task:
                        self._best[other] = self._val_history.get(best, {}).get(other, math.inf)
                        self._best_epoch[other], self._counter[other] = best, 0
            else:
                event["restore"] = "task" if self._restore(best, names=set(self.task_layers[task])) else None
                if event["restore"] is None:
                    event["restore_lost"] = True
        event["frozen"] += self._freeze(self.task_layers[task])
        self._gate(task)
        self._active.remove(task)
        self.converged[task] = event
        self.events.append(event)
        updates_a_subset(self.model)  # under JAX (see there)
        self.model.make_train_function(force=True)  # trace again with the new trainable set
        if self.log:
            what = (f"restored the {'whole network' if event['restore'] == 'model' else task + ' layers'} to epoch "
                    f"{best}, " if event["restore"] else "no restore, ")
            self.log(f"[early {'freeze' if self.mode == 'freeze' else 'stop'}] epoch {epoch}: {task} converged "
                     f"(best validation loss {self._best[task]:.4g} at epoch {best}); {what}froze "
                     f"{len(event['frozen'])} layers; still training: {', '.join(self._active) or 'none'}")
        return event

    def on_train_end(self, logs=None):
        self.ended = True
        if not self.restore_at_end or not self._active:
            return
        if self.mode == "freeze" and self.shared_frozen:
            for task in self._active:
                done = self._restore(self._best_epoch[task], names=set(self.task_layers[task]))
                self.events.append({"epoch": None, "task": task, "mode": "end", "best_epoch": self._best_epoch[task],
                                    "best_val_loss": self._best[task], "restore": "task" if done else None,
                                    "frozen": [], **({} if done else {"restore_lost": True})})
        elif not self.converged:
            done = self._restore(self._overall_epoch)
            self.events.append({"epoch": None, "task": None, "mode": "end", "best_epoch": self._overall_epoch,
                                "best_val_loss": self._overall, "restore": "model" if done else None, "frozen": [],
                                **({} if done else {"restore_lost": True})})

    # ------------------------------------------------------------------ resume (agegender.training hooks)

    def frozen_layers(self) -> list[str]:
        """Every layer this callback has set to ``trainable = False``, in the order it froze them."""
        return [name for event in getattr(self, "events", []) for name in event.get("frozen", [])]

    def get_resume_state(self) -> dict:
        """The callback's state as JSON (module docstring, "Resuming"); writes the weight snapshots to files."""
        return {"version": STATE_VERSION, "tasks": list(self.tasks), "mode": self.mode, "patience": self.patience,
                "active": list(self._active), "best": {t: _num(v) for t, v in self._best.items()},
                "best_epoch": {t: int(v) for t, v in self._best_epoch.items()},
                "counter": {t: int(v) for t, v in self._counter.items()},
                "val_history": {str(e): dict(v) for e, v in self._val_history.items()},
                "overall": _num(self._overall), "overall_epoch": int(self._overall_epoch),
                "shared_frozen": bool(self.shared_frozen), "frozen_layers": self.frozen_layers(),
                "events": self.events, "epochs": self.epochs, "converged": self.converged,
                "ended": bool(getattr(self, "ended", False)), "snapshots": self._save_snapshots()}

    def set_resume_state(self, state: dict) -> None:
        """Take back a state of :meth:`get_resume_state`. The counters, events and log are set at once (so
        :meth:`summary` works even when no training follows); freezing and snapshots are applied to the
        model at the next ``on_train_begin``."""
        if int(state.get("version", 0)) != STATE_VERSION or list(state.get("tasks", [])) != list(self.tasks):
            raise ValueError(f"EarlyFreeze: a saved state for tasks {state.get('tasks')} (version "
                             f"{state.get('version')}) cannot resume a callback for tasks {list(self.tasks)}")
        self._active = [t for t in state["active"]]
        self._best = {t: _inf(state["best"].get(t)) for t in self.tasks}
        self._best_epoch = {t: int(state["best_epoch"][t]) for t in self.tasks}
        self._counter = {t: int(state["counter"][t]) for t in self.tasks}
        self._val_history = {int(e): {t: _inf(v) for t, v in values.items()}
                             for e, values in state["val_history"].items()}
        self._overall, self._overall_epoch = _inf(state["overall"]), int(state["overall_epoch"])
        self.shared_frozen = bool(state["shared_frozen"])
        self.events = [dict(e) for e in state["events"]]
        self.epochs = [dict(e) for e in state["epochs"]]
        self.converged = {t: dict(e) for t, e in state["converged"].items()}
        self.ended = bool(state.get("ended", False))
        self._snapshots = {}
        self._resume = dict(state)
        self._written = set((state.get("snapshots") or {}).values())  # committed with that state: complete
        self._saved_refs = set(self._written)

    def end_after_resume(self, model) -> bool:
        """Run the end of training an interrupted process missed: when a resumed trainer had no epoch left to
        fit (killed after the last epoch's state was saved, before ``on_train_end``), apply the resumed state
        and do the end-of-training restores. True when it did; False when there was nothing to do."""
        if self._resume is None or self.ended:
            return False
        self.set_model(model)
        self.on_train_begin()
        self.on_train_end()
        return True

    def _resume_model(self) -> None:
        """Apply a resumed state to the model: snapshots back in memory, layers frozen again, gates closed."""
        state, self._resume = self._resume, None
        refs = state.get("snapshots")
        folder = self.state_dir / SNAPSHOT_DIR if self.state_dir is not None else None
        lost = []
        for epoch, name in (refs or {}).items():
            path = folder / name if folder is not None else None
            if path is not None and path.is_file():
                self._snapshots[int(epoch)] = _read_snapshot(path)
            else:
                lost.append(int(epoch))
        if refs is None or lost:
            print(f"[early freeze] warning: resumed without the weight snapshots of epochs "
                  f"{lost if refs is not None else 'before the resume'} (no state_dir); restores to those epochs "
                  "will be skipped", file=sys.stderr)
        frozen = self._freeze(state.get("frozen_layers", []))
        for task in self.converged:
            self._gate(task)
        if frozen:
            updates_a_subset(self.model)  # under JAX (see there)
            self.model.make_train_function(force=True)  # fit built it before on_train_begin, with every layer
        if self.log:
            self.log(f"[early {'freeze' if self.mode == 'freeze' else 'stop'}] resumed after epoch "
                     f"{self.epochs[-1]['epoch'] if self.epochs else 0}: {len(frozen)} layers frozen again; still "
                     f"training: {', '.join(self._active) or 'none'}")

    def _save_snapshots(self) -> dict | None:
        """Write the snapshots not on disk yet; delete those neither this state nor the last one names."""
        if self.state_dir is None:
            return None
        folder = self.state_dir / SNAPSHOT_DIR
        folder.mkdir(parents=True, exist_ok=True)
        refs = {}
        for epoch, snap in sorted(self._snapshots.items()):
            name = f"snapshot-{epoch:04d}.npz"
            if name not in self._written:  # an epoch's snapshot never changes once taken
                _write_snapshot(folder / name, snap)
                self._written.add(name)
            refs[str(epoch)] = name
        keep = set(refs.values()) | self._saved_refs  # the last state handed out is the committed one
        for path in folder.glob("snapshot-*.npz"):
            if path.name not in keep:
                path.unlink(missing_ok=True)
                self._written.discard(path.name)
        self._saved_refs = set(refs.values())
        return refs

    def summary(self) -> dict:
        """Convergence epochs, events and per-epoch log, for the run record."""
        return {"mode": self.mode, "patience": self.patience, "tasks": list(self.tasks),
                "converged": {t: {"epoch": ev["epoch"], "best_epoch": ev["best_epoch"]} for t, ev in self.converged.items()},
                "not_converged": list(self._active), "events": self.events, "epochs": self.epochs}


class ResumableReduceLROnPlateau(keras.callbacks.ReduceLROnPlateau):
    """Keras's ``ReduceLROnPlateau`` whose state survives a resume (:func:`agegender.training.train` hooks).

    Keras resets ``wait``, ``cooldown_counter`` and ``best`` at ``on_train_begin``; a resumed run
    would then wait ``patience`` epochs afresh before lowering the learning rate. This subclass
    saves them (and the learning rate) and puts them back after that reset.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._resume: dict | None = None

    def get_resume_state(self) -> dict:
        lr = keras.ops.convert_to_numpy(self.model.optimizer.learning_rate) if self.model is not None else None
        return {"wait": int(self.wait), "cooldown_counter": int(self.cooldown_counter),
                "best": None if self.best is None else _num(self.best),
                "learning_rate": None if lr is None else float(lr)}

    def set_resume_state(self, state: dict) -> None:
        self._resume = dict(state)

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        state, self._resume = self._resume, None
        if state:
            self.wait, self.cooldown_counter = int(state["wait"]), int(state["cooldown_counter"])
            self.best = None if state.get("best") is None else float(state["best"])
            if state.get("learning_rate") is not None:
                self.model.optimizer.learning_rate = float(state["learning_rate"])
