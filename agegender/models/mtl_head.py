"""The three networks of Sundriyal's Tables 4.6-4.15: single-task baseline, single-task NN, proposed MTL.

Thesis Sec. 3.2 (Figure 3.2, missing from the text) and Sec. 4.4.1:

* **Single Task baseline**: "the output of the bottleneck layer (penultimate layer) of [the]
  pretrained model is directly fed into an output layer"; one model per task.
* **Single Task Neural Network**: the MTL layers of one task (shared FC layers + that task's
  layers) after the backbone, trained alone, without the loss weight layer; one per task.
* **Proposed Multi-Task Learning Network**: backbone -> shared FC layers, "each followed by
  Leaky ReLU activation unit and then Batch Normalisation" -> per task: FC -> Dropout -> Leaky
  ReLU -> FC output ("the bottom-most task specific layers do not have dropout and ReLU layers";
  "the last fully connected layer for age is 128x2" on CelebA, so the last hidden task layer has
  128 units).

The layer sizes are only in the missing figure (reproductions/mtl_weighted_loss/README.md: "choose them and
document them"):

==================  =====================================================================
shared              ``shared_fc1`` Dense(512) -> ``shared_act1`` LeakyReLU -> ``shared_bn1``
                    BatchNorm -> ``shared_fc2`` Dense(256) -> ``shared_act2`` -> ``shared_bn2``
task ``t``          ``t_fc`` Dense(128) -> ``t_dropout`` Dropout(0.5) -> ``t_act`` LeakyReLU ->
                    ``t`` Dense(out) (softmax for classes, linear for the age regression)
baseline            ``backbone`` features -> ``t`` Dense(out)
==================  =====================================================================

Framework defaults of the thesis's PyTorch 1.5 where Keras differs: LeakyReLU slope 0.01
(Keras: 0.3), Dropout 0.5 (``nn.Dropout``), BatchNorm momentum 0.1 (Keras convention 0.9) and
epsilon 1e-5. Outputs compute in float32 under mixed precision.

Outputs (``TASKS``): UTKFace ``age`` 1 linear unit on the CORAL label / 40 (Sec. 3.3.2),
``gender`` 2 classes (0 male, 1 female), ``race`` 5 classes (White, Black, Asian, Indian,
Others); CelebA ``age`` 2 classes (0 Young, 1 Old) and ``gender`` 2 classes. The backbone is
nested as one layer named ``backbone`` (see :mod:`agegender.models.face_resnets`), so Early
Freeze can freeze it by name; :func:`layer_groups` lists every layer by role.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import keras
from keras import layers

from agegender import heads
from agegender.models.loss_weighting import LossWeighting, MultiTaskLossModel
from agegender.models.registry import register_model

METHODS = ("baseline", "single", "mtl")


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """One output: ``units`` (1 = regression), its loss (``half_mse`` / ``sparse_ce``) and class names."""

    units: int
    loss: str
    classes: tuple[str, ...] = ()

    @property
    def regression(self) -> bool:
        return self.loss == "half_mse"


def _from_head(name: str, classes: tuple[str, ...] = ()) -> TaskSpec:
    """The MTL loss of a declared head (:mod:`agegender.heads`): half MSE for a regression, sparse CE else;
    ``classes`` are the names the thesis's tables print."""
    head = heads.task(name)
    return TaskSpec(head.units, "half_mse" if head.regression else "sparse_ce", classes)


TASKS = {
    "utkface": {"gender": _from_head("sundriyal/utkface/gender", ("Male", "Female")),
                "race": _from_head("sundriyal/utkface/race", ("White", "Black", "Asian", "Indian", "Others")),
                "age": _from_head("sundriyal/utkface/age")},
    "celeba": {"gender": _from_head("sundriyal/celeba/gender", ("Male", "Female")),
               "age": _from_head("sundriyal/celeba/age", ("Young", "Old"))},
}


@dataclasses.dataclass(frozen=True)
class HeadConfig:
    """The MTL layer sizes and the framework defaults (module docstring)."""

    shared_units: tuple[int, ...] = (512, 256)
    task_units: int = 128  # Sec. 3.2: "the last fully connected layer for age is 128x2"
    dropout: float = 0.5  # PyTorch nn.Dropout default; the rate is not stated
    leaky_alpha: float = 0.01  # PyTorch nn.LeakyReLU default; Keras's is 0.3
    bn_momentum: float = 0.9  # PyTorch momentum=0.1
    bn_epsilon: float = 1e-5  # PyTorch default


def build_network(backbone: keras.Model, tasks: Mapping[str, TaskSpec], method: str,
                  head: HeadConfig = HeadConfig(), name: str | None = None) -> keras.Model:
    """Backbone + the layers of ``method`` for ``tasks``; a functional model with ``{task: output}``.

    ``method``: ``baseline`` or ``single`` need exactly one task; ``mtl`` takes any number.
    The backbone's input shape is the network's.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not tasks:
        raise ValueError("no tasks")
    if method != "mtl" and len(tasks) != 1:
        raise ValueError(f"the {method} method trains one task per model, got {list(tasks)}")
    inputs = keras.Input(shape=tuple(backbone.input.shape[1:]), name="image")
    features = backbone(inputs)
    outputs = {}
    if method == "baseline":
        for task, spec in tasks.items():
            outputs[task] = _output(features, task, spec)
    else:
        x = features
        for i, units in enumerate(head.shared_units, start=1):
            x = layers.Dense(units, name=f"shared_fc{i}")(x)
            x = layers.LeakyReLU(negative_slope=head.leaky_alpha, name=f"shared_act{i}")(x)
            x = layers.BatchNormalization(momentum=head.bn_momentum, epsilon=head.bn_epsilon, name=f"shared_bn{i}")(x)
        for task, spec in tasks.items():
            h = layers.Dense(head.task_units, name=f"{task}_fc")(x)
            h = layers.Dropout(head.dropout, name=f"{task}_dropout")(h)
            h = layers.LeakyReLU(negative_slope=head.leaky_alpha, name=f"{task}_act")(h)
            outputs[task] = _output(h, task, spec)
    return keras.Model(inputs, outputs, name=name or f"{method}_{'_'.join(tasks)}")


def _output(x, task: str, spec: TaskSpec):
    activation = None if spec.regression else "softmax"
    return layers.Dense(spec.units, activation=activation, dtype="float32", name=task)(x)


def layer_groups(network: keras.Model, tasks: Sequence[str]) -> dict:
    """``{"backbone": [...], "shared": [...], "tasks": {task: [...]}}``: layer names by role.

    Shared layers are those named ``shared_*``; a task's layers are ``{task}_*`` and ``{task}``.
    Every layer with weights belongs to exactly one group (checked).
    """
    names = [layer.name for layer in network.layers]
    groups = {"backbone": [n for n in names if n == "backbone"],
              "shared": [n for n in names if n.startswith("shared_")],
              "tasks": {t: [n for n in names if n == t or n.startswith(f"{t}_")] for t in tasks}}
    grouped = set(groups["backbone"]) | set(groups["shared"]) | {n for v in groups["tasks"].values() for n in v}
    loose = [layer.name for layer in network.layers if layer.weights and layer.name not in grouped]
    if loose:
        raise ValueError(f"layers with weights outside every group: {loose}")
    return groups


def build_model(backbone: keras.Model, tasks: Mapping[str, TaskSpec], method: str, *, loss: str = "weighted",
                lam: float = 0.1, seed: int | None = None, head: HeadConfig = HeadConfig(),
                init_stddev: float = 0.5) -> MultiTaskLossModel:
    """The trainable model: :func:`build_network` wrapped with its loss.

    ``loss``: ``weighted`` (learned weights, Eq. 3.5, lambda ``lam``) or ``average``; a
    single-task model (``baseline``/``single``) always uses its one loss (weight 1, no penalty:
    "we ... do not consider the Loss Weight Layer").
    """
    if loss not in ("weighted", "average"):
        raise ValueError(f"loss must be weighted or average, got {loss!r}")
    network = build_network(backbone, tasks, method, head)
    names = tuple(tasks)
    mode = "learned" if (method == "mtl" and loss == "weighted") else "average"
    weighting = LossWeighting(names, mode=mode, lam=lam, seed=seed, init_stddev=init_stddev, name="loss_weighting")
    return MultiTaskLossModel(network, {t: tasks[t].loss for t in names}, weighting, name=f"{network.name}_model")


def build_thesis_model(backbone: str = "senet50_128", dataset: str = "utkface", method: str = "mtl", *,
                       weights: str | None = "none", input_size: int | None = None, smoke: bool = False,
                       loss: str = "weighted", lam: float = 0.1, seed: int | None = None) -> MultiTaskLossModel:
    """Sundriyal's network on a thesis backbone (:func:`agegender.models.face_resnets.choose_backbone`; default
    random weights) for ``dataset``'s tasks; ``method`` ``baseline`` / ``single`` take the first task."""
    from agegender.models.face_resnets import build_backbone, choose_backbone

    choice = choose_backbone(backbone, weights, substitute_weights=None, smoke=smoke)
    network, _ = build_backbone(choice, input_size)
    tasks = TASKS[dataset] if method == "mtl" else dict([next(iter(TASKS[dataset].items()))])
    return build_model(network, tasks, method, loss=loss, lam=lam, seed=seed)


for _backbone in ("senet50_128", "resnet50"):  # sundriyal/mtl_senet50_128, sundriyal/mtl_resnet50 (UTKFace tasks)
    register_model(f"sundriyal/mtl_{_backbone}", build_thesis_model, heads=heads.tasks("sundriyal/utkface"),
                   defaults={"backbone": _backbone, "dataset": "utkface", "method": "mtl"}, small={"input_size": 32},
                   heavy=True, description=f"Sundriyal's MTL network (Sec. 3.2-3.5) on {_backbone}, UTKFace tasks")
