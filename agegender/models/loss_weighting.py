"""Sundriyal's learned loss weights (thesis Sec. 3.4, Eq. 3.5) and the training pieces around them.

Eq. 3.5::

    L_total = sum_i w_i * L_i + lambda * ||W||^2,   sum_i w_i = 1

"all the losses obtained are passed through a Linear Layer with no bias which acts as a 'Loss
Weight Layer' ... These weights are set randomly initially, and the network ... also learn[s]
these weights ... during backpropagation"; lambda = 0.1 after a sweep of 0.001 / 0.01 / 0.1 / 1
(Table 3.2, Sec. 5.4). The alternative of Tables 5.1-5.3 is the plain average of the losses.

Design (Keras 3):

* :class:`LossWeighting` -- a registered layer holding one trainable logit per task;
  ``w = softmax(logits)``, so the weights are positive and sum to 1 by construction (the thesis
  states the constraint, not how it is kept; a softmax keeps it exactly and lets plain gradient
  descent update the weights). ``W`` of the penalty is this weight vector, so
  ``lambda * ||W||^2 = lambda * sum_i w_i^2``: on the simplex it is smallest at equal weights and
  so counteracts the pull of ``sum_i w_i L_i`` towards putting all weight on the smallest loss.
  ``mode="average"`` fixes ``w_i = 1/t`` (no trainable weight, no penalty): the "Average Loss"
  rows; with a single task this is the plain single-task loss.
* :class:`MultiTaskLossModel` -- a ``keras.Model`` subclass wrapping the functional network
  (``model.network``) that overrides ``compute_loss`` (the Keras 3 hook that ``fit``/``evaluate``
  call; see "Customizing what happens in fit()"): it computes each task's loss from ``y``,
  ``y_pred`` and the per-task sample weights (missing labels weigh 0), passes them through the
  :class:`LossWeighting` layer and adds the layers' own losses. The weight logits are trainable
  variables of the model, so the optimizer updates them with everything else. Each epoch Keras
  logs ``{task}_loss`` (unweighted), ``loss_weight_{task}`` (``w_i`` at the end of the
  epoch's training) and ``loss_weight_penalty`` (``lambda * ||w||^2``); ``loss`` is Eq. 3.5.
  A non-trainable ``task_gate`` (one 0/1 entry per task) lets Early Freeze stop a converged
  task's loss from reaching the network (``stop_gradient``) without changing its value.
* :class:`AdamL2` -- Adam with PyTorch's weight decay (the thesis used PyTorch 1.5:
  ``Adam(weight_decay=1e-5)`` adds ``1e-5 * theta`` to each gradient before the moment
  estimates). Keras's own ``weight_decay`` argument is the decoupled AdamW form, a different
  update, so it is left unset.

Task losses (``task_losses`` values): ``"half_mse"`` is Eq. 3.2, ``0.5 (y - p)^2`` averaged over
the batch (UTKFace age on the /40 scale); ``"sparse_ce"`` is the cross-entropy of a softmax
output against an integer class (Eq. 3.1 / 3.3 / 3.4: gender, CelebA Young/Old, race).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import keras
from keras.src.losses.loss import scale_loss_for_distribution  # Keras 3's own replica scaling
from keras import ops

TASK_LOSSES = ("half_mse", "sparse_ce")
MODES = ("learned", "average")


@keras.saving.register_keras_serializable(package="agegender")
class LossWeighting(keras.layers.Layer):
    """Combine per-task losses as ``sum_i w_i L_i (+ lambda ||w||^2)``; ``w`` learned on the simplex.

    Args:
        tasks: task names, in the order of the losses passed to ``call``.
        mode: ``"learned"`` (Eq. 3.5; ``w = softmax(logits)``, logits trainable, penalty
            ``lam * sum(w**2)``) or ``"average"`` (``w = 1/t``, nothing trainable, no penalty).
        lam: lambda of Eq. 3.5 (thesis 0.1; ignored by ``"average"``).
        init_stddev: standard deviation of the random initial logits ("set randomly initially";
            0 starts from equal weights).
        seed: seed of the initial logits.
    """

    def __init__(self, tasks: Sequence[str], mode: str = "learned", lam: float = 0.1, init_stddev: float = 0.5,
                 seed: int | None = None, **kwargs):
        kwargs.setdefault("dtype", "float32")  # losses are combined in float32 under mixed precision
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if not tasks:
            raise ValueError("LossWeighting needs at least one task")
        if lam < 0:
            raise ValueError(f"lambda must be >= 0, got {lam}")
        self.tasks = tuple(str(t) for t in tasks)
        self.mode, self.lam, self.init_stddev, self.seed = mode, float(lam), float(init_stddev), seed
        initializer = (keras.initializers.RandomNormal(stddev=self.init_stddev, seed=seed)
                       if mode == "learned" and self.init_stddev > 0 else "zeros")
        self.logits = self.add_weight(shape=(len(self.tasks),), initializer=initializer, name="logits",
                                      trainable=mode == "learned")
        self.built = True

    def task_weights(self):
        """The weight vector ``w`` (positive, sums to 1), in task order."""
        if self.mode == "average":
            return ops.ones((len(self.tasks),), dtype="float32") / len(self.tasks)
        return ops.softmax(ops.cast(self.logits, "float32"))

    def penalty(self):
        """``lambda * ||w||^2`` (0 for ``"average"``)."""
        if self.mode == "average":
            return ops.zeros((), dtype="float32")
        w = self.task_weights()
        return self.lam * ops.sum(ops.square(w))

    def call(self, losses):
        """``losses``: a length-``t`` vector (task order) or a ``{task: scalar}`` dict; returns the scalar total."""
        if isinstance(losses, Mapping):
            losses = ops.stack([ops.cast(losses[t], "float32") for t in self.tasks])
        losses = ops.cast(losses, "float32")
        return ops.sum(self.task_weights() * losses) + self.penalty()

    def compute_output_shape(self, input_shape):
        return ()

    def get_config(self):
        return {**super().get_config(), "tasks": list(self.tasks), "mode": self.mode, "lam": self.lam,
                "init_stddev": self.init_stddev, "seed": self.seed}


@keras.saving.register_keras_serializable(package="agegender")
class LastValue(keras.metrics.Metric):
    """A metric whose result is the last value it was given (to log ``w_i`` once per epoch)."""

    def __init__(self, name="last_value", dtype="float32", **kwargs):
        super().__init__(name=name, dtype=dtype, **kwargs)
        # every replica holds the same value (the weights are mirrored): keep the first, do not sum
        self.value = self.add_variable(shape=(), initializer="zeros", name="value", aggregation="only_first_replica")

    def update_state(self, value, sample_weight=None):
        self.value.assign(ops.cast(value, self.dtype))

    def result(self):
        return ops.convert_to_tensor(self.value)

    def reset_state(self):
        self.value.assign(0.0)


def task_loss(kind: str, y_true, y_pred, sample_weight=None):
    """Mean loss of one task over the samples whose weight is non-zero (0 if none)."""
    y_pred = ops.cast(y_pred, "float32")
    if kind == "half_mse":  # Eq. 3.2
        y_true = ops.reshape(ops.cast(y_true, "float32"), (-1,))
        per_sample = 0.5 * ops.square(y_true - ops.reshape(y_pred, (-1,)))
    elif kind == "sparse_ce":  # Eqs. 3.1, 3.3, 3.4 (2- or 5-way softmax)
        y_true = ops.reshape(ops.cast(y_true, "int32"), (-1,))
        per_sample = keras.losses.sparse_categorical_crossentropy(y_true, y_pred)
    else:
        raise ValueError(f"unknown task loss {kind!r}; use one of {TASK_LOSSES}")
    if sample_weight is None:
        return ops.mean(per_sample)
    w = ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
    return ops.sum(per_sample * w) / ops.maximum(ops.sum(w), 1e-7)


@keras.saving.register_keras_serializable(package="agegender")
class MultiTaskLossModel(keras.Model):
    """A functional multi-task network trained on ``LossWeighting(per-task losses)``.

    Args:
        network: functional model returning ``{task: output}``.
        task_losses: ``{task: "half_mse" | "sparse_ce"}``, one per output; its order is the
            weighting's task order.
        weighting: a :class:`LossWeighting` (or its config dict) over the same tasks; default
            the plain average.

    Compile it with an optimizer and optional ``metrics={task: [...]}`` but **no** ``loss``:
    the loss is this class's ``compute_loss``.
    """

    def __init__(self, network: keras.Model, task_losses: Mapping[str, str], weighting=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(network, dict):
            network = keras.saving.deserialize_keras_object(network)
        if isinstance(weighting, dict):
            weighting = keras.saving.deserialize_keras_object(weighting)
        self.network = network
        self.task_losses = {str(t): str(k) for t, k in task_losses.items()}
        for task, kind in self.task_losses.items():
            if kind not in TASK_LOSSES:
                raise ValueError(f"task {task!r}: unknown loss {kind!r}; use one of {TASK_LOSSES}")
        self.tasks = tuple(self.task_losses)
        outputs = set(network.output_names) if getattr(network, "output_names", None) else set(self.tasks)
        if set(self.tasks) != outputs:
            raise ValueError(f"task_losses {sorted(self.tasks)} must name the network's outputs {sorted(outputs)}")
        self.weighting = weighting if weighting is not None else LossWeighting(self.tasks, mode="average")
        if tuple(self.weighting.tasks) != self.tasks:
            raise ValueError(f"weighting tasks {self.weighting.tasks} differ from the model's {self.tasks}")
        self.task_gate = self.add_weight(shape=(len(self.tasks),), initializer="ones", trainable=False,
                                         name="task_gate", dtype="float32")
        self.task_loss_trackers = [keras.metrics.Mean(name=f"{t}_loss") for t in self.tasks]
        self.weight_trackers = [LastValue(name=f"loss_weight_{t}") for t in self.tasks]
        self.penalty_tracker = LastValue(name="loss_weight_penalty")
        self.built = True

    def call(self, inputs, training=None):
        return self.network(inputs, training=training)

    def per_task_losses(self, y, y_pred, sample_weight=None) -> dict:
        """``{task: mean loss}`` (unweighted, as logged)."""
        weights = sample_weight if isinstance(sample_weight, Mapping) else {}
        return {t: task_loss(self.task_losses[t], y[t], y_pred[t], weights.get(t)) for t in self.tasks}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        losses = self.per_task_losses(y, y_pred, sample_weight)
        gated = []
        for i, task in enumerate(self.tasks):
            value = losses[task]
            self.task_loss_trackers[i].update_state(value)
            gate = self.task_gate[i]
            gated.append(gate * value + (1.0 - gate) * ops.stop_gradient(value))
        total = self.weighting(ops.stack(gated))
        w = self.weighting.task_weights()
        for i in range(len(self.tasks)):
            self.weight_trackers[i].update_state(w[i])
        self.penalty_tracker.update_state(self.weighting.penalty())
        for extra in self.losses:  # regularisers of the network's layers, if any
            total = total + ops.cast(extra, "float32")
        # as Keras does for its built-in losses: under N replicas each one's loss is divided by N, since the
        # replicas' gradients are summed (without it every gradient would be N times too large)
        return scale_loss_for_distribution(total)

    @property
    def metrics(self):
        seen, out = set(), []
        for metric in [*super().metrics, *self.task_loss_trackers, *self.weight_trackers, self.penalty_tracker]:
            if id(metric) not in seen:
                seen.add(id(metric))
                out.append(metric)
        return out

    def loss_weights(self) -> dict:
        """``{task: w_i}`` as Python floats."""
        w = keras.ops.convert_to_numpy(self.weighting.task_weights())
        return {t: float(v) for t, v in zip(self.tasks, w)}

    def get_config(self):
        return {**super().get_config(), "network": keras.saving.serialize_keras_object(self.network),
                "task_losses": dict(self.task_losses),
                "weighting": keras.saving.serialize_keras_object(self.weighting)}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        network = keras.saving.deserialize_keras_object(config.pop("network"), custom_objects=custom_objects)
        weighting = keras.saving.deserialize_keras_object(config.pop("weighting"), custom_objects=custom_objects)
        return cls(network=network, weighting=weighting, **config)


@keras.saving.register_keras_serializable(package="agegender")
class AdamL2(keras.optimizers.Adam):
    """Adam whose weight decay is PyTorch's: ``gradient + l2 * variable`` enters the moments.

    ``l2`` is PyTorch's ``weight_decay`` (thesis Table 3.2: 1e-5). Everything else is Keras's Adam.
    """

    def __init__(self, learning_rate=0.001, l2: float = 0.0, **kwargs):
        if kwargs.get("weight_decay"):
            raise ValueError("AdamL2 takes l2= (coupled, PyTorch-style); weight_decay= is Keras's decoupled form")
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.l2 = float(l2)

    def update_step(self, gradient, variable, learning_rate):
        if self.l2:
            gradient = ops.add(ops.cast(gradient, variable.dtype), ops.multiply(self.l2, variable))
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "l2": self.l2}


def weight_movement(initial: Mapping[str, float], final: Mapping[str, float]) -> dict:
    """How far the learned loss weights moved from their random start (thesis Sec. 3.4 learns them).

    ``change``: the largest ``|w_i(final) - w_i(initial)|`` over the tasks; ``spread``: the range of
    the initial weights, ``max_i w_i - min_i w_i`` (how far apart the random start put them).
    ``barely_moved``: ``change < spread``, i.e. training moved the weights less than the random
    initialisation had spread them, so the weighting is still mostly its random start (at the
    thesis's learning rate of 3e-5 the logits move ~0.1-0.3 against an initial standard deviation
    of 0.5). Tables flag such runs (``reproductions.mtl_weighted_loss``). Equal initial weights
    (spread 0) never count as barely moved.
    """
    tasks = list(initial)
    if set(tasks) != set(final):
        raise ValueError(f"initial and final loss weights name different tasks: {sorted(initial)} vs {sorted(final)}")
    change = max(abs(float(final[t]) - float(initial[t])) for t in tasks)
    spread = max(float(initial[t]) for t in tasks) - min(float(initial[t]) for t in tasks)
    return {"initial": {t: float(initial[t]) for t in tasks}, "final": {t: float(final[t]) for t in tasks},
            "change": change, "spread": spread, "barely_moved": bool(spread > 0 and change < spread)}
