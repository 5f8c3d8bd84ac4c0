"""Dey & Aggarwal's multi-task model: backbone -> global max pooling -> age, ethnicity and gender heads.

Paper 003, Sec. 3.4-3.5 and Fig. 1 ("Proposed Model"); reproductions/utkface_xception/README.md. Layers, in order
(every one named):

* ``image``: RGB pixels in [0, 255];
* ``preprocess`` (:class:`~agegender.models.backbones.PixelPreprocess`): ``preprocess="paper"``
  divides by 255 (Sec. 3.2: "normalized by dividing each pixel value by 255"),
  ``preprocess="backbone"`` applies the backbone's own ``keras.applications`` ``preprocess_input``
  (reproductions/utkface_xception/README.md: offered as an ablation, since the ImageNet backbones expect it);
* the backbone, a nested ``keras.Model`` named as in :data:`~agegender.models.backbones.BACKBONES`,
  whole and trainable (Sec. 3.4);
* ``global_max_pooling`` (Sec. 3.4: "A global max pooling layer is added after the base model"),
  2D on a CNN feature map, 1D over the transformer's tokens;
* three heads (Sec. 3.5), each ``{task}_dense_1`` and ``{task}_dense_2`` (Dense(128), ReLU) and the
  output layer named after the task:

  - ``age``: 1 unit, sigmoid: age / max_age (Sec. 3.2), trained with MSE;
  - ``ethnicity``: 5 units, softmax (White, Black, Asian, Indian, Others), categorical cross-entropy;
  - ``gender``: 2 units, softmax (male, female), categorical cross-entropy.

The output layers compute in float32, so losses see float32 values under mixed precision. The
model compiles to nothing here: the optimiser and losses are the reproduction's
(``reproductions.utkface_xception``).
"""

from __future__ import annotations

import keras

from agegender import heads
from agegender.models.backbones import BACKBONES, PixelPreprocess, build_backbone, get_backbone
from agegender.models.registry import register_model

__all__ = ["HEADS", "PREPROCESS", "build_multihead"]

HEADS = heads.tasks("dey_aggarwal")  # Sec. 3.5: age 1 sigmoid, ethnicity 5 softmax, gender 2 softmax
PREPROCESS = ("paper", "backbone")


def build_multihead(backbone: str = "xception", *, input_size: int = 224, weights="imagenet",
                    preprocess: str = "paper", units: int = 128, name: str | None = None,
                    **encoder_options) -> keras.Model:
    """Build the three-head model on ``backbone``.

    Args:
        backbone: a registered backbone name (``vgg19``, ``resnet50``, ``inception_v3``,
            ``xception``, ``mobilenet``, ``transformer``).
        input_size: square input side (Sec. 3.2: 224); at least the backbone's minimum.
        weights: ``"imagenet"``, ``None`` or a local ``.h5`` (see :mod:`agegender.models.backbones`).
        preprocess: ``"paper"`` (x / 255) or ``"backbone"`` (the backbone's ``preprocess_input``).
        units: width of the two hidden Dense layers of each head (Sec. 3.5: 128).
        name: model name (default ``dey_<backbone>``).
        encoder_options: passed to the transformer backbone's encoder.

    Returns:
        A functional model mapping ``(batch, input_size, input_size, 3)`` pixels in [0, 255] to
        ``{"age": (batch, 1), "ethnicity": (batch, 5), "gender": (batch, 2)}``.
    """
    spec = get_backbone(backbone)
    if preprocess not in PREPROCESS:
        raise ValueError(f"preprocess must be one of {', '.join(PREPROCESS)}, got {preprocess!r}")
    shape = (int(input_size), int(input_size), 3)
    base = build_backbone(spec.name, shape, weights, **encoder_options)

    inputs = keras.Input(shape=shape, name="image")
    mode = "unit" if preprocess == "paper" else spec.preprocess
    x = PixelPreprocess(mode, name="preprocess")(inputs)
    features = base(x)
    pool = keras.layers.GlobalMaxPooling2D if len(features.shape) == 4 else keras.layers.GlobalMaxPooling1D
    pooled = pool(name="global_max_pooling")(features)
    outputs = {}
    for task, head in HEADS.items():  # the age head's layer is the same for any max_age (it scales the target)
        h = pooled
        for i in (1, 2):
            h = keras.layers.Dense(units, activation="relu", name=f"{task}_dense_{i}")(h)
        outputs[task] = head.layer(name=task)(h)  # the declared head (agegender.heads)
    return keras.Model(inputs, outputs, name=name or f"dey_{spec.name}")


for _name, _spec in BACKBONES.items():  # dey_aggarwal/vgg19 ... dey_aggarwal/transformer
    register_model(f"dey_aggarwal/{_name}", build_multihead, heads=HEADS, defaults={"backbone": _name},
                   small={"input_size": _spec.small_size, "weights": None},
                   heavy=_name in ("inception_v3", "xception", "vgg19"),
                   description=f"Dey & Aggarwal's three-head model on {_spec.label} (Sec. 3.4-3.5)")
