"""Speziali's dual-task CNN and its two single-task counterparts (paper 000, Section III-B).

Paper 000 (Speziali, "A Comparative Analysis: Dual-Task CNN vs. Single-Task CNNs for Gender and
Age Prediction in Facial Images"), Section III-B.1 (multi-task architecture, Fig. 5) and
III-B.2 (single-task architecture, Fig. 6)::

    INPUT 128x128x3 -> [CONV -> (BATCHNORM, block 1 only) -> RELU -> POOL] x 4
    -> FLATTEN -> per task: FC 128 -> DROPOUT 0.25 -> RELU -> FC out

=======  ======  =======  ==========  ===========================  ============
block    kernel  filters  batch norm  max pooling                  output (128)
=======  ======  =======  ==========  ===========================  ============
block1   3x3     64       yes         2x2, stride 2                64x64x64
block2   5x5     128      no          2x2, stride 2                32x32x128
block3   3x3     256      no          2x2, stride 2                16x16x256
block4   3x3     512      no          2x2, stride 2                8x8x512
=======  ======  =======  ==========  ===========================  ============

Decisions (reproductions/utkface_dual_cnn/README.md, and the paper's own words):

* **Same padding, stride 1** for every convolution. The paper says "a padding of 2 to
  preserve spatial dimensions" with a 3x3 kernel, which does not preserve them (it adds 2
  pixels); "same" is what "preserve" asks for.
* **Kernels 3, 5, 3, 3**: the paper names only the second as 5x5 ("the number of filters in
  the second convolutional layer (5 instead of 3)" is read as the kernel size,
  reproductions/utkface_dual_cnn/README.md).
  Filters 64, doubled per block: 64, 128, 256, 512.
* **Batch norm after the first convolution only** ("This is the only occurrence of batch
  normalization in the network"), although the block diagram writes BATCHNORM in every block.
* **Pooling: max 2x2, stride 2 after every block** ("a window size of 2 x 2 and a stride of
  2 ... the size of the produced map is halved"), so 128 -> 8; then **Flatten** ("The output of
  the last pooling layer is flattened"): 8*8*512 = 32,768 features. No global pooling.
* **Branch: Dense(128) -> Dropout(0.25) -> ReLU -> output**, the text's order (the figure's
  "FC -> BATCHNORM -> RELU -> FC" is contradicted by the text and reproductions/utkface_dual_cnn/README.md).
* Outputs: ``gender`` = Dense(2, softmax) (two classes, cross-entropy), ``age`` = Dense(1,
  linear) regression on years (MSE; the trainer applies lambda_age = 0.01). Both compute in
  float32 under mixed precision. Outputs are a dict keyed by task.
* Convolutions and dense layers keep their biases (PyTorch ``nn.Conv2d``/``nn.Linear``
  default, the paper's framework).
* **Pixels**: the model takes RGB values in [0, 255] and rescales by 1/255 (PyTorch's
  ``ToTensor``), the same input contract as the other builders of this package.

Parameter counts at 128x128 (computed with this builder; the paper does not publish them):

=============  ==========  =============  ==========
variant        total       non-trainable  trainable
=============  ==========  =============  ==========
``"gender"``    5,876,994            128   5,876,866
``"age"``       5,876,865            128   5,876,737
``"dual"``     10,071,555            128  10,071,427
=============  ==========  =============  ==========

(convolutional part 1,682,304, of which 128 are the batch-norm moving statistics; each
Dense(128) on the 32,768 flattened features holds 4,194,432.)
"""

from __future__ import annotations

import keras

from agegender.heads import TASKS
from agegender.models.registry import register_model

_VARIANTS = {"age": ("age",), "gender": ("gender",), "dual": ("gender", "age")}
_KERNELS = (3, 5, 3, 3)  # reproductions/utkface_dual_cnn/README.md: only the second is named 5x5 in the text
_FILTERS = (64, 128, 256, 512)  # "64 filters", "doubled in each subsequent convolutional layer"
_OUTPUTS = {task: TASKS[f"speziali/{task}"] for task in ("gender", "age")}  # 2-neuron softmax; 1 linear neuron


def build_dual_cnn(variant: str = "dual", input_size: int = 128, dropout: float = 0.25,
                   name: str | None = None) -> keras.Model:
    """Build Speziali's CNN: the dual-task network or one of the two single-task networks.

    Args:
        variant: ``"dual"`` (shared convolutions, ``gender`` and ``age`` branches), ``"gender"``
            (single-task classifier) or ``"age"`` (single-task regressor).
        input_size: side of the square RGB input (paper: 128). Must be a multiple of 16.
        dropout: dropout rate in each branch (paper: 0.25).
        name: model name; default ``speziali_<variant>``.

    Returns:
        A functional ``keras.Model`` taking pixels in [0, 255] and returning a dict keyed by task:
        ``gender`` (batch, 2) softmax probabilities, ``age`` (batch, 1) years. Layers are named
        ``block{1..4}_conv``, ``block1_bn``, ``block{1..4}_relu``, ``block{1..4}_pool``,
        ``flatten``, ``{task}_fc``, ``{task}_dropout``, ``{task}_relu`` and ``{task}``.

    Raises:
        ValueError: unknown ``variant`` or an ``input_size`` that is not a positive multiple of 16.
    """
    if variant not in _VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; valid variants: {', '.join(_VARIANTS)}")
    if input_size <= 0 or input_size % 16:
        raise ValueError(f"input_size must be a positive multiple of 16 (four 2x2 poolings), got {input_size}")

    inputs = keras.Input(shape=(input_size, input_size, 3), name="image")
    x = keras.layers.Rescaling(1.0 / 255.0, name="rescaling")(inputs)  # ToTensor-like [0, 1]
    for block, (n_filters, kernel) in enumerate(zip(_FILTERS, _KERNELS), start=1):
        # stride 1, "same" padding (reproductions/utkface_dual_cnn/README.md: "padding of 2 ... preserve" read as same)
        x = keras.layers.Conv2D(n_filters, kernel, strides=1, padding="same", name=f"block{block}_conv")(x)
        if block == 1:  # "the only occurrence of batch normalization in the network"
            x = keras.layers.BatchNormalization(name="block1_bn")(x)
        x = keras.layers.ReLU(name=f"block{block}_relu")(x)
        x = keras.layers.MaxPooling2D(pool_size=2, strides=2, name=f"block{block}_pool")(x)  # "2x2, stride 2"
    features = keras.layers.Flatten(name="flatten")(x)

    outputs = {}
    for head in _VARIANTS[variant]:
        h = keras.layers.Dense(128, name=f"{head}_fc")(features)  # "128 neurons"
        h = keras.layers.Dropout(dropout, name=f"{head}_dropout")(h)  # "dropout layer (set at 0.25)"
        h = keras.layers.ReLU(name=f"{head}_relu")(h)
        outputs[head] = _OUTPUTS[head].layer(name=head)(h)  # the declared head (agegender.heads)
    return keras.Model(inputs, outputs, name=name or f"speziali_{variant}")


for _variant, _tasks in _VARIANTS.items():  # speziali/dual_cnn, speziali/age_cnn, speziali/gender_cnn
    register_model(f"speziali/{_variant}_cnn", build_dual_cnn, heads={t: _OUTPUTS[t] for t in _tasks},
                   defaults={"variant": _variant}, small={"input_size": 32},
                   description=f"Speziali's {_variant} CNN (Sec. III-B): four convolutions, {' and '.join(_tasks)} "
                               "branch(es)")
