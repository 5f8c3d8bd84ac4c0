"""The Levi & Hassner CNN at full and reduced width, single- and multi-task (Jørgensen et al.).

Paper 001 (Jørgensen et al., "Gender and Age Classification using Multi-task Learning with
Convolutional Neural Networks"): Section 3.1 and Table 1 (reduced architecture), Section 3.2
(multi-task: shared convolutional "functional layer", two identical fully connected branches),
Table 2 (parameter counts). The baseline is Levi & Hassner (CVPR-W 2015), the paper's [1].

Architecture (``width="reduced"``, Table 1; ``"full"`` has 4x the filters and units)::

    image 227x227x3 -> Rescaling(1/255)
    block1: Conv 7x7, 24 (96), stride 1, valid, ReLU  -> 221x221   MaxPool 3x3/2 -> 110x110   LRN
    block2: Conv 5x5, 64 (256), stride 1, valid, ReLU -> 106x106   MaxPool 3x3/2 -> 52x52     LRN
    block3: Conv 3x3, 96 (384), stride 1, valid, ReLU -> 50x50     MaxPool 3x3/2 -> 24x24     LRN
    flatten (55,296) -> per task: Dense 128 (512) ReLU, Dropout 0.5, Dense 128 (512) ReLU,
    Dropout 0.5 -> gender Dense(1, sigmoid) / age Dense(8, softmax)

Decisions (reproductions/README.md, "Checked facts"):

* **conv1 stride 1 at both widths.** Table 1 gives stride 1x1 and 227 -> 221 for the reduced
  model, and the full-size baseline count in Section 3.1 (115,023,873) is also only reached with
  conv1 at stride 1 (Levi & Hassner's own conv1 has stride 4; that network has far fewer
  parameters). Valid padding everywhere, as in Table 1.
* **Pooling 3x3 / stride 2**, not Table 1's "1x1": only 3x3/2 gives Table 1's sizes
  221 -> 110, 106 -> 52, 50 -> 24 (it is Levi & Hassner's pooling).
* **LRN after each of the three pools**, as Table 1 lists it (Levi & Hassner normalise after
  the first two only; LRN has no weights, so the counts do not tell them apart). Settings:
  size 5, alpha 1e-4 (Caffe convention), beta 0.75, bias 1: see :mod:`agegender.models.lrn`.
* **Rescaling is part of the model** (Table 1 lists it as a layer): the model takes RGB pixel
  values in [0, 255] and divides by 255. The random 227 crop of 256x256 images (train) and the
  centre crop (test) belong to the input pipeline.
* The multi-task loss ``L = gamma * L_gender + (1 - gamma) * L_age`` (Eq. 1) is not in the
  model: the trainer passes ``loss_weights={"gender": gamma, "age": 1 - gamma}``.
* Outputs are a dict keyed by task (``{"gender": ...}``, ``{"age": ...}`` or both), so losses
  and metrics are dicts keyed by task. Output layers compute in float32 under mixed precision.

Parameter counts (Keras 3, reproduced exactly; Table 2 and Section 3.1):

================================  ===========
reduced, ``task="gender"``          7,192,065
reduced, ``task="age"``             7,192,968
reduced, ``task="multitask"``      14,287,625
convolutional part (reduced)           97,408
full, ``task="gender"`` (baseline) 115,023,873
================================  ===========
"""

from __future__ import annotations

import keras

from agegender.heads import TASKS
from agegender.models.registry import register_model
from agegender.models.lrn import LocalResponseNormalization

_TASKS = ("gender", "age", "multitask")
# (conv1, conv2, conv3 filters, FC units): Levi & Hassner's full size, and one quarter of it
# for Jørgensen's reduced model (Section 3.1: "only one-fourth of the filters ... and of the
# hidden neurons").
_WIDTHS = {"full": (96, 256, 384, 512), "reduced": (24, 64, 96, 128)}
_KERNELS = (7, 5, 3)  # Table 1: 7x7, 5x5, 3x3
_OUTPUTS = {task: TASKS[f"jorgensen/{task}"] for task in ("gender", "age")}  # Table 1: 1 sigmoid; 8 Adience groups


def build_levi_hassner(task: str = "multitask", width: str = "reduced", input_shape=(227, 227, 3),
                       dropout: float = 0.5, name: str | None = None) -> keras.Model:
    """Build the (reduced) Levi & Hassner network of Jørgensen et al., Table 1.

    Args:
        task: ``"gender"`` (one branch, ``gender``: 1 sigmoid unit, P(female) with the data
            module's coding 0 male / 1 female), ``"age"`` (one branch, ``age``: 8-way softmax over
            the Adience groups) or ``"multitask"`` (shared convolutional part, both branches).
        width: ``"reduced"`` (Table 1: 24/64/96 filters, 128-unit FC) or ``"full"``
            (Levi & Hassner's 96/256/384 filters and 512-unit FC).
        input_shape: ``(height, width, 3)``; 227x227 as in Table 1 (random crop of 256x256).
        dropout: rate of both dropout layers of each branch (Table 1: 0.5).
        name: model name; default ``levi_hassner_<width>_<task>``.

    Returns:
        A functional ``keras.Model`` taking pixels in [0, 255] and returning a dict of outputs
        keyed by task. Layers are named ``block{1,2,3}_{conv,pool,lrn}``, ``flatten``,
        ``{task}_fc1``, ``{task}_dropout1``, ``{task}_fc2``, ``{task}_dropout2`` and ``{task}``.

    Raises:
        ValueError: unknown ``task`` or ``width``.
    """
    if task not in _TASKS:
        raise ValueError(f"unknown task {task!r}; valid tasks: {', '.join(_TASKS)}")
    if width not in _WIDTHS:
        raise ValueError(f"unknown width {width!r}; valid widths: {', '.join(_WIDTHS)}")
    *filters, units = _WIDTHS[width]

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = keras.layers.Rescaling(1.0 / 255.0, name="rescaling")(inputs)  # Table 1 "Rescaling"
    for block, (n_filters, kernel) in enumerate(zip(filters, _KERNELS), start=1):
        # stride 1, valid padding: Table 1 (and reproductions/README.md for the full-size count)
        x = keras.layers.Conv2D(n_filters, kernel, strides=1, padding="valid", activation="relu",
                                name=f"block{block}_conv")(x)
        # 3x3 / 2 (reproductions/README.md: Table 1's "1x1" cannot give 221 -> 110)
        x = keras.layers.MaxPooling2D(pool_size=3, strides=2, padding="valid", name=f"block{block}_pool")(x)
        # Levi & Hassner LRN settings (reproductions/README.md): size 5, alpha 1e-4, beta 0.75
        x = LocalResponseNormalization(size=5, alpha=1e-4, beta=0.75, bias=1.0, name=f"block{block}_lrn")(x)
    features = keras.layers.Flatten(name="flatten")(x)

    heads = ("gender", "age") if task == "multitask" else (task,)
    outputs = {}
    for head in heads:
        h = features
        for i in (1, 2):
            h = keras.layers.Dense(units, activation="relu", name=f"{head}_fc{i}")(h)
            h = keras.layers.Dropout(dropout, name=f"{head}_dropout{i}")(h)
        # the declared head (agegender.heads), float32 so that losses see float32 under mixed precision
        outputs[head] = _OUTPUTS[head].layer(name=head)(h)
    return keras.Model(inputs, outputs, name=name or f"levi_hassner_{width}_{task}")


for _task in _TASKS:  # jorgensen/levi_gender, jorgensen/levi_age, jorgensen/levi_multitask (the reduced model)
    register_model(f"jorgensen/levi_{_task}", build_levi_hassner,
                   heads={t: _OUTPUTS[t] for t in (("gender", "age") if _task == "multitask" else (_task,))},
                   defaults={"task": _task, "width": "reduced"}, small={"input_shape": (64, 64, 3)},
                   description=f"Jørgensen's reduced Levi & Hassner CNN (Table 1), {_task}")
register_model("jorgensen/levi_hassner_full", build_levi_hassner, heads=dict(_OUTPUTS),
               defaults={"task": "multitask", "width": "full"}, small={"input_shape": (64, 64, 3)},
               description="Levi & Hassner's full-size multi-task CNN (the baseline count of Jørgensen Sec. 3.1)")
