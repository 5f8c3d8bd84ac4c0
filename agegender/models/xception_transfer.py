"""Multi-task transfer-learning model on an Xception backbone (Jørgensen et al., Section 3.3).

Paper 001, Section 3.3 and Table 2 ("Transfer learning": 31,220,873 trainable, 15,365,160
non-trainable, 46,586,033 total). The Xception network replaces the convolutional "functional
layer" of the multi-task model (Section 3.2); the last 10 layers of Xception stay trainable and
the rest are frozen; the two branches are those of the reduced model (Table 1):
Dense(128)-ReLU-Dropout-Dense(128)-ReLU-Dropout-output, gender 1 sigmoid, age 8 softmax.

Decisions (reproductions/README.md, "Checked facts"):

* **227x227 input, not 299x299.** The text says a preprocessing layer resizes to 299x299, but
  Table 2's counts are reached only with ``Xception(include_top=False)`` on 227x227 (output
  7x7x2048 -> ``Flatten`` 100,352 features); at 299x299 (10x10x2048) they are not.
* **"Last 10 layers"** are the last 10 entries of the Xception model's ``layers`` list
  (``conv2d``/``block13_pool``/``batch_normalization``/``add`` of the last residual and the
  block14 separable convolutions with their batch norms and activations). Every earlier layer
  has ``trainable = False``; this yields Table 2's trainable/non-trainable split exactly.
* **Preprocessing is part of the model**: a ``Rescaling(1/127.5, offset=-1)`` layer (what
  ``keras.applications.xception.preprocess_input`` does) maps RGB pixels in [0, 255] to
  [-1, 1], so the model takes the same [0, 255] input as the Levi & Hassner models.
* The backbone is built in the same graph (``input_tensor=``), not nested as one layer, so
  every Xception layer is a layer of the returned model (``model.get_layer("block14_sepconv2")``
  works and :mod:`agegender.models.activations` sees its convolutions).
* Frozen layers include frozen BatchNorm layers, which Keras 3 runs in inference mode.
"""

from __future__ import annotations

import os

import keras

from agegender.errors import DataError
from agegender.heads import TASKS
from agegender.models.registry import register_model

_OUTPUTS = {task: TASKS[f"jorgensen/{task}"] for task in ("gender", "age")}  # as the reduced model, Table 1
_UNITS = 128  # Section 3.3: branches "identical to the ones described in the multi-task section"


def build_xception_multitask(input_shape=(227, 227, 3), weights="imagenet", trainable_tail: int = 10,
                             dropout: float = 0.5, name: str = "xception_multitask") -> keras.Model:
    """Build Jørgensen et al.'s multi-task Xception transfer model.

    Args:
        input_shape: ``(height, width, 3)``; 227x227 reproduces Table 2 (reproductions/README.md). At least 71x71.
        weights: passed to ``keras.applications.Xception``: ``"imagenet"`` (Keras downloads
            ``xception_weights_tf_dim_ordering_tf_kernels_notop.h5``, ~80 MB, into
            ``~/.keras/models`` on first use; it needs network access, so tests use ``None``),
            ``None`` (random initialisation), or the path of a backbone weights file (that same
            ImageNet no-top ``.h5`` copied to an offline machine, or a ``.weights.h5`` saved
            from the backbone of this builder). Keras loads such a file layer by layer in
            topological order; the Rescaling layer has no weights and is skipped. To restore a
            whole trained model use ``keras.models.load_model`` (or ``model.load_weights``) instead.
        trainable_tail: number of trailing Xception layers left trainable (Section 3.3: 10).
        dropout: rate of the two dropout layers of each branch (Table 1: 0.5).
        name: model name.

    Returns:
        A functional ``keras.Model`` taking pixels in [0, 255] and returning
        ``{"gender": (batch, 1), "age": (batch, 8)}``. Branch layers are named
        ``{task}_fc1``, ``{task}_dropout1``, ``{task}_fc2``, ``{task}_dropout2``, ``{task}``.

    Raises:
        DataError: ``weights`` names a file that does not exist.
        ValueError: ``trainable_tail`` is negative.
    """
    if trainable_tail < 0:
        raise ValueError(f"trainable_tail must be >= 0, got {trainable_tail}")
    if weights not in (None, "imagenet"):
        weights = os.fspath(weights)
        if not os.path.isfile(weights):
            raise DataError("Xception weights file not found", path=weights,
                            fix='pass weights="imagenet" (needs network), None, or an existing .h5 file')

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    # keras.applications.xception.preprocess_input: x / 127.5 - 1 ("tf" mode), as a layer
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="xception_preprocess")(inputs)
    backbone = keras.applications.Xception(include_top=False, weights=weights, input_tensor=x)
    # backbone.layers starts with our Input and Rescaling layers, which hold no weights
    frozen = backbone.layers[:-trainable_tail] if trainable_tail else backbone.layers
    for layer in frozen:  # Section 3.3: "the last 10 layers ... remain trainable"
        layer.trainable = False

    features = keras.layers.Flatten(name="flatten")(backbone.output)
    outputs = {}
    for head in ("gender", "age"):
        h = features
        for i in (1, 2):
            h = keras.layers.Dense(_UNITS, activation="relu", name=f"{head}_fc{i}")(h)
            h = keras.layers.Dropout(dropout, name=f"{head}_dropout{i}")(h)
        # the declared head (agegender.heads), float32 so that losses see float32 under mixed precision
        outputs[head] = _OUTPUTS[head].layer(name=head)(h)
    return keras.Model(inputs, outputs, name=name)


register_model("jorgensen/xception_transfer", build_xception_multitask, heads=dict(_OUTPUTS),
               small={"input_shape": (71, 71, 3), "weights": None}, heavy=True,
               description="Jørgensen's multi-task Xception transfer model (Sec. 3.3)")
