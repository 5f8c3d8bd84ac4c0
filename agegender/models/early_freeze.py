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
  no more updates.
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
"""

from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import keras
import numpy as np

MODES = ("freeze", "stop")


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
    """

    def __init__(self, task_layers: Mapping[str, Sequence[str]], shared_layers: Sequence[str], *, patience: int = 5,
                 mode: str = "freeze", min_delta: float = 0.0, monitor: str = "val_{task}_loss",
                 restore_at_end: bool = True, stop_when_done: bool = True, log: Callable[[str], None] | None = None):
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

    def _restore(self, epoch: int, names=None) -> None:
        snap = self._snapshots[epoch]
        for name, values in snap.items():
            if name == "__weighting__":
                if names is None:
                    self.model.weighting.set_weights(values)
            elif names is None or name in names:
                self.network.get_layer(name).set_weights(values)

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
                self._restore(best)  # the whole network, at this task's best epoch
                event["restore"] = "model"
                event["frozen"] += self._freeze(self.shared_layers)
                self.shared_frozen = True
                for other in self._active:  # the model is epoch `best`'s again
                    if other != task:
                        self._best[other] = self._val_history.get(best, {}).get(other, math.inf)
                        self._best_epoch[other], self._counter[other] = best, 0
            else:
                self._restore(best, names=set(self.task_layers[task]))
                event["restore"] = "task"
        event["frozen"] += self._freeze(self.task_layers[task])
        self._gate(task)
        self._active.remove(task)
        self.converged[task] = event
        self.events.append(event)
        self.model.make_train_function(force=True)  # trace again with the new trainable set
        if self.log:
            what = (f"restored the {'whole network' if event['restore'] == 'model' else task + ' layers'} to epoch "
                    f"{best}, " if event["restore"] else "no restore, ")
            self.log(f"[early {'freeze' if self.mode == 'freeze' else 'stop'}] epoch {epoch}: {task} converged "
                     f"(best validation loss {self._best[task]:.4g} at epoch {best}); {what}froze "
                     f"{len(event['frozen'])} layers; still training: {', '.join(self._active) or 'none'}")
        return event

    def on_train_end(self, logs=None):
        if not self.restore_at_end or not self._active:
            return
        if self.mode == "freeze" and self.shared_frozen:
            for task in self._active:
                self._restore(self._best_epoch[task], names=set(self.task_layers[task]))
                self.events.append({"epoch": None, "task": task, "mode": "end", "best_epoch": self._best_epoch[task],
                                    "best_val_loss": self._best[task], "restore": "task", "frozen": []})
        elif not self.converged and self._overall_epoch in self._snapshots:
            self._restore(self._overall_epoch)
            self.events.append({"epoch": None, "task": None, "mode": "end", "best_epoch": self._overall_epoch,
                                "best_val_loss": self._overall, "restore": "model", "frozen": []})

    def summary(self) -> dict:
        """Convergence epochs, events and per-epoch log, for the run record."""
        return {"mode": self.mode, "patience": self.patience, "tasks": list(self.tasks),
                "converged": {t: {"epoch": ev["epoch"], "best_epoch": ev["best_epoch"]} for t, ev in self.converged.items()},
                "not_converged": list(self._active), "events": self.events, "epochs": self.epochs}
