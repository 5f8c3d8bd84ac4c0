"""Registry of the six backbones Dey & Aggarwal compare (paper 003, Sec. 3.4), and their pixel preprocessing.

``BACKBONES`` maps a name to a :class:`BackboneSpec`; it is the only list of backbones, and
:func:`get_backbone` fails loudly (naming every known backbone) on anything else:

==============  ==============  ======================================================  =========
name            paper row       build                                                   min input
==============  ==============  ======================================================  =========
vgg19           VGG19           ``keras.applications.VGG19(include_top=False)``         32
resnet50        ResNet50        ``keras.applications.ResNet50(include_top=False)``      32
inception_v3    Inception v3    ``keras.applications.InceptionV3(include_top=False)``   75
xception        Xception        ``keras.applications.Xception(include_top=False)``      71
mobilenet       MobileNet       ``keras.applications.MobileNet(include_top=False)``     32
transformer     Transformer     MobileNet feature map -> :class:`TransformerEncoder`    32
==============  ==============  ======================================================  =========

Smoke runs and tests use ``BackboneSpec.small_size``: the minimum, except 64 for the transformer
(at 32 pixels MobileNet leaves a single token, and self-attention over one token is trivial).

Every backbone is trainable (Sec. 3.4.1-3.4.5: "it was made trainable"), is a ``keras.Model``
named as in the registry, and returns a feature map ``(batch, H, W, C)`` (the transformer: a
token sequence ``(batch, N, d_model)``) for the multi-head model to pool
(:mod:`agegender.models.multihead`).

Weights (``weights=``)
----------------------
* ``"imagenet"``: Keras downloads the no-top ImageNet file (``BackboneSpec.imagenet_file`` from
  ``imagenet_url``) into ``~/.keras/models`` on first use. Offline (or with a broken cache) the
  failure becomes a one-line :class:`~agegender.errors.DataError` saying which file to copy
  and how to pass it. For ``transformer`` the MobileNet part gets ImageNet weights and the
  encoder starts random (the paper: "We used MobileNet as the base model").
* ``None`` (or ``"none"``): random initialisation, training from scratch.
* a path to a local ``.h5`` file, dispatched on its suffix as Keras does:

  - ``*.weights.h5`` (Keras 3 format, what ``backbone.save_weights`` writes): the weights of the
    whole backbone as built here (for ``transformer``: MobileNet and encoder);
  - any other ``*.h5`` / ``*.hdf5`` (the legacy format of Keras's ImageNet files, or a legacy
    ``backbone.save("x.h5")``): loaded by the ``keras.applications`` constructor, layer by layer
    in topological order; for ``transformer`` into its MobileNet part (so Keras's MobileNet
    ImageNet no-top file works offline).

  A file that does not exist or does not fit raises a one-line ``DataError``.

Preprocessing
-------------
:class:`PixelPreprocess` is a registered, serializable layer (no ``Lambda``), so models load with
``keras.saving.load_model(path, safe_mode=True)``. Its modes are those of
``keras.applications.imagenet_utils.preprocess_input`` for RGB pixels in [0, 255]: ``"caffe"``
(VGG19, ResNet50: RGB -> BGR, minus the ImageNet BGR means), ``"tf"`` (Inception v3, Xception,
MobileNet: ``x / 127.5 - 1``), plus the paper's own ``"unit"`` (``x / 255``, Sec. 3.2).
:func:`backbone_preprocessing` returns the backbone's own ``preprocess_input`` as such a layer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
from pathlib import Path
from typing import Callable

import keras
from keras import ops

from agegender.errors import DataError
from agegender.models.registry import family_lookup, register_backbone
from agegender.models.transformer import DEFAULTS as TRANSFORMER_DEFAULTS
from agegender.models.transformer import TransformerEncoder

__all__ = ["BACKBONES", "BackboneSpec", "PixelPreprocess", "UnknownBackboneError", "backbone_preprocessing",
           "build_backbone", "check_weights", "get_backbone", "normalise_weights"]

KERAS_APPLICATIONS = "https://storage.googleapis.com/tensorflow/keras-applications/"
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)  # keras.applications.imagenet_utils, mode "caffe"


class UnknownBackboneError(ValueError):
    """A backbone name that is not in :data:`BACKBONES`."""


@keras.saving.register_keras_serializable(package="agegender")
class PixelPreprocess(keras.layers.Layer):
    """RGB pixels in [0, 255] -> a backbone's input scale, inside the model.

    ``mode``: ``"unit"`` (x / 255, Dey & Aggarwal Sec. 3.2), ``"tf"`` (x / 127.5 - 1) or ``"caffe"``
    (RGB -> BGR, then minus the ImageNet means 103.939 / 116.779 / 123.68), the latter two exactly
    as ``keras.applications.<backbone>.preprocess_input`` does it.
    """

    MODES = ("unit", "tf", "caffe")

    def __init__(self, mode: str = "unit", **kwargs):
        super().__init__(**kwargs)
        if mode not in self.MODES:
            raise ValueError(f"unknown preprocessing mode {mode!r}; use one of {', '.join(self.MODES)}")
        self.mode = mode

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        if self.mode == "unit":
            return x / 255.0
        if self.mode == "tf":
            return x / 127.5 - 1.0
        x = ops.flip(x, axis=-1)  # RGB -> BGR
        return x - ops.cast(ops.convert_to_tensor(CAFFE_BGR_MEAN), x.dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """One registered backbone: how to build it and what the paper calls it."""

    name: str  # registry key, also the name of the built keras.Model
    label: str  # the paper's row label in Tables 1-3
    constructor: Callable  # keras.applications constructor of the (base) network
    preprocess: str  # the backbone's own preprocess_input mode (PixelPreprocess)
    min_size: int  # smallest square input keras.applications accepts
    imagenet_file: str  # Keras's no-top ImageNet weights file (224x224 for MobileNet)
    imagenet_dir: str  # its folder under KERAS_APPLICATIONS
    encoder: bool = False  # True: a TransformerEncoder on top of the constructor's feature map
    small: int = 0  # input side for smoke runs and tests (0: min_size)

    @property
    def small_size(self) -> int:
        """The input side smoke runs and tests use: ``min_size``, or 64 for the transformer (2x2 = 4 tokens)."""
        return self.small or self.min_size

    @property
    def imagenet_url(self) -> str:
        return f"{KERAS_APPLICATIONS}{self.imagenet_dir}/{self.imagenet_file}"

    @property
    def base_name(self) -> str:
        """Name of the keras.applications network (the backbone itself, or the transformer's MobileNet)."""
        return "mobilenet" if self.encoder else self.name


def _notop(stem: str) -> str:
    return f"{stem}_weights_tf_dim_ordering_tf_kernels_notop.h5"


A = keras.applications
BACKBONES: dict[str, BackboneSpec] = {
    "vgg19": BackboneSpec("vgg19", "VGG19", A.VGG19, "caffe", 32, _notop("vgg19"), "vgg19"),
    "resnet50": BackboneSpec("resnet50", "ResNet50", A.ResNet50, "caffe", 32, _notop("resnet50"), "resnet"),
    "inception_v3": BackboneSpec("inception_v3", "Inception v3", A.InceptionV3, "tf", 75, _notop("inception_v3"),
                                 "inception_v3"),
    "xception": BackboneSpec("xception", "Xception", A.Xception, "tf", 71, _notop("xception"), "xception"),
    "mobilenet": BackboneSpec("mobilenet", "MobileNet", A.MobileNet, "tf", 32, "mobilenet_1_0_224_tf_no_top.h5",
                              "mobilenet"),
    "transformer": BackboneSpec("transformer", "Transformer", A.MobileNet, "tf", 32,
                                "mobilenet_1_0_224_tf_no_top.h5", "mobilenet", encoder=True, small=64),
}
del A
for _name, _spec in BACKBONES.items():  # the one registry: keras/<name> (agegender.models.registry)
    register_backbone("keras", _name, _spec, _spec.label)


def get_backbone(name: str) -> BackboneSpec:
    """The registered backbone ``keras/<name>``; :class:`UnknownBackboneError` listing the known names otherwise."""
    spec = family_lookup("keras", name) if isinstance(name, str) else None
    if spec is None:
        raise UnknownBackboneError(f"unknown backbone {name!r}; known backbones: {', '.join(BACKBONES)}")
    return spec


def backbone_preprocessing(name: str, **kwargs) -> PixelPreprocess:
    """The backbone's own ``keras.applications`` ``preprocess_input`` as a serializable layer."""
    spec = get_backbone(name)
    return PixelPreprocess(spec.preprocess, **{"name": f"{spec.name}_preprocess_input", **kwargs})


def normalise_weights(weights):
    """``"imagenet"`` -> ``"imagenet"``; ``None`` / ``"none"`` -> ``None``; anything else -> an existing file path."""
    if weights is None or (isinstance(weights, str) and weights.lower() == "none"):
        return None
    if isinstance(weights, str) and weights.lower() == "imagenet":
        return "imagenet"
    path = Path(os.path.expanduser(os.fspath(weights)))
    if not path.is_file():
        raise DataError("backbone weights file not found", path=path,
                        fix="pass imagenet (Keras download), none (from scratch) or the path of an existing .h5 file")
    if not path.name.endswith((".h5", ".hdf5")):
        raise DataError("backbone weights must be an HDF5 file (.h5, .weights.h5 or .hdf5)", path=path,
                        fix="pass Keras's no-top ImageNet .h5 file or a .weights.h5 saved from the backbone")
    return str(path)


def _check_size(spec: BackboneSpec, input_shape) -> tuple:
    input_shape = tuple(int(d) for d in input_shape)
    if len(input_shape) != 3 or input_shape[-1] != 3:
        raise ValueError(f"{spec.name}: input_shape must be (height, width, 3), got {input_shape}")
    if min(input_shape[:2]) < spec.min_size:
        raise ValueError(f"{spec.name} needs inputs of at least {spec.min_size}x{spec.min_size} pixels, "
                         f"got {input_shape[0]}x{input_shape[1]}")
    return input_shape


def build_backbone(name: str, input_shape=(224, 224, 3), weights="imagenet", **encoder_options) -> keras.Model:
    """Build the registered backbone ``name`` (trainable, without the ImageNet classifier).

    Args:
        name: a key of :data:`BACKBONES`.
        input_shape: ``(height, width, 3)``, at least ``BackboneSpec.min_size`` on each side.
        weights: ``"imagenet"``, ``None`` / ``"none"``, or a local ``.h5`` path (module docstring).
        encoder_options: ``transformer`` only: ``num_blocks``, ``d_model``, ``num_heads``,
            ``ff_dim``, ``dropout`` of the :class:`TransformerEncoder` (defaults
            ``agegender.models.transformer.DEFAULTS``).

    Returns:
        A ``keras.Model`` named ``name`` that maps the (preprocessed) image to a feature map or,
        for ``transformer``, to tokens.

    Raises:
        UnknownBackboneError: ``name`` is not registered.
        ValueError: a too small ``input_shape``, or encoder options for a CNN backbone.
        DataError: the weights cannot be had or do not fit (one line, with the fix).
    """
    spec = get_backbone(name)
    input_shape = _check_size(spec, input_shape)
    if encoder_options and not spec.encoder:
        raise ValueError(f"{name} takes no encoder options, got {sorted(encoder_options)}")
    weights = normalise_weights(weights)
    whole_file = weights not in (None, "imagenet") and weights.endswith(".weights.h5") and spec.encoder
    base_weights = None if whole_file else weights
    try:
        captured = io.StringIO()
        with contextlib.redirect_stdout(captured):  # Keras prints "Downloading data from ..."
            base = spec.constructor(include_top=False, weights=base_weights, input_shape=input_shape,
                                    name=spec.base_name)
        if not spec.encoder:
            model = base
        else:
            inputs = keras.Input(shape=input_shape, name="transformer_input")
            options = {**TRANSFORMER_DEFAULTS, **encoder_options}
            tokens = TransformerEncoder(**options, name="transformer_encoder")(base(inputs))
            model = keras.Model(inputs, tokens, name=spec.name)
        if whole_file:
            model.load_weights(weights)
    except DataError:
        raise
    except Exception as err:  # Keras's download raises a bare Exception("URL fetch failure ...")
        raise weights_error(spec, weights, err) from None
    model.trainable = True  # Sec. 3.4: the whole backbone is fine-tuned
    return model


def weights_error(spec: BackboneSpec, weights, err: Exception) -> DataError:
    """A one-line DataError for a failed weights download or load, naming the fix."""
    reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:240]
    what = "the MobileNet part of the transformer" if spec.encoder else spec.label
    if weights == "imagenet":
        return DataError(f"cannot get the ImageNet weights of {what} ({reason})",
                         fix=f"on a machine with network access download {spec.imagenet_url}, copy it here and pass "
                             f"--weights /path/to/{spec.imagenet_file} (or put it in ~/.keras/models/); "
                             "--weights none trains from scratch")
    return DataError(f"cannot load these weights into {what} ({reason})", path=weights,
                     fix=f"pass Keras's no-top ImageNet file {spec.imagenet_file} ({spec.imagenet_url}) or a "
                         f".weights.h5 saved from build_backbone({spec.name!r}).save_weights")


def check_weights(name: str, weights, input_shape=None) -> None:
    """Fail early (one-line DataError) when ``weights`` cannot be had for ``name``.

    Builds the backbone once with those weights (default input: the backbone's minimum; pass the
    run's ``input_shape`` when a ``.weights.h5`` of the whole transformer backbone is given, whose
    position embedding depends on it), then clears the Keras session. ``None`` needs no check.
    """
    spec = get_backbone(name)
    weights = normalise_weights(weights)
    if weights is None:
        return
    try:
        build_backbone(name, input_shape or (spec.min_size, spec.min_size, 3), weights)
    finally:
        keras.backend.clear_session()
