"""Face-recognition backbones of Sundriyal's thesis (paper 004, Sec. 4.3, Table 4.5), built in Keras 3.

The thesis feeds faces to networks pretrained for face recognition, removes their last layer
and fine-tunes them together with the multi-task layers. Keras ships none of them, so the
two ResNet-family ones are built here and their weights are loaded by layer name from a file
the user supplies; the thesis's other three (LightCNN, SphereFace, Inception-ResNet/FaceNet)
are not built (the registry says so when asked for them).

==================  ==========================  =========  =======  =====================================
registry key        thesis name (Table 4.5)     features   input    weights
==================  ==========================  =========  =======  =====================================
``resnet50``        ResNet-50 (MS-Celeb-1M,     2048       200x200  user ``.h5`` (VGGFace2 ``resnet50_ft``
                    fine-tuned on VGGFace2)                          converted to Keras), Tables 4.9/4.14
``senet50_128``     SE-ResNet-50-128D           128        224x224  user ``.h5`` (VGGFace2 ``senet50_128``
                    (same training)                                  converted), Tables 4.10/4.15
``resnet50_imagenet``  (not in the thesis)      2048       224x224  ``keras.applications.ResNet50``
                                                                     ImageNet weights: the substitute
``smoke_cnn``       (not in the thesis)         16         32x32    none: two convolutions, the stand-in
                                                                     of ``--smoke`` runs (tracing and
                                                                     training a ResNet-50 on a CPU takes
                                                                     minutes even at 32x32)
==================  ==========================  =========  =======  =====================================

Input sizes: Sec. 3.1 gives 200x200 for the VGGFace2 ResNet-50 ("face images are rescaled to
200x200"); the others use their training size (VGGFace2 crops: 224x224; Keras ResNet50: 224x224).
All three end in global average pooling, so any input of at least 32x32 works (smoke runs use
small inputs).

Architecture (VGGFace2 Caffe models, as converted to PyTorch by the VGGFace2 authors and to
Keras by ``keras-vggface``): a ResNet-50 v1 whose stride-2 blocks put the stride on the first
1x1 convolution ("Caffe style"), convolutions without biases, every convolution followed by
batch normalisation (epsilon 1e-5, the converted models' value). The SE variant adds a
squeeze-and-excitation branch to every block: global average pooling, 1x1 convolution to
channels/16 with bias and ReLU, 1x1 convolution back with bias and sigmoid, channel-wise
product before the residual addition. ``senet50_128`` then reduces the pooled 2048 features
with a bias-free 1x1 convolution ``feat_extract`` to 128 (the "128D" of the name). The first
convolution pads 3 on every side (``ZeroPadding2D(3)`` + valid 7x7/2, as Caffe), the first max
pooling is 3x3/2 with Caffe's ceil mode (``same`` in Keras gives the same output size and
values). Preprocessing is a layer of the model: RGB pixels in [0, 255] are turned to BGR and the
training mean is subtracted (VGGFace2: B 91.4953, G 103.8827, R 131.0912; Keras's ImageNet
ResNet50: 103.939, 116.779, 123.68), so every backbone takes the same 0-255 RGB input.

Layer names (a ``/`` of the Caffe names becomes ``_``; Keras 3 forbids ``/`` in names)::

    conv1_7x7_s2, conv1_7x7_s2_bn                       stem
    conv{s}_{b}_1x1_reduce, conv{s}_{b}_1x1_reduce_bn   s = 2..5, b = 1..(3, 4, 6, 3)
    conv{s}_{b}_3x3, conv{s}_{b}_3x3_bn
    conv{s}_{b}_1x1_increase, conv{s}_{b}_1x1_increase_bn
    conv{s}_1_1x1_proj, conv{s}_1_1x1_proj_bn           first block of each stage
    conv{s}_{b}_1x1_down, conv{s}_{b}_1x1_up            SE branch (SE-ResNet only; with biases)
    feat_extract                                        128-D reduction (senet50_128 only)

Weight files (:func:`load_weights_by_name`) -- any of these HDF5 layouts:

1. **Keras 2 / tf.keras weights file** (``model.save_weights("x.h5")`` before Keras 3; e.g.
   ``keras-vggface``'s ``rcmalli_vggface_tf_notop_resnet50.h5`` and
   ``rcmalli_vggface_tf_notop_senet50.h5``): the root attribute ``layer_names`` lists the
   layers; group ``/<layer name>`` has the attribute ``weight_names`` (e.g.
   ``conv1/7x7_s2/bn/gamma:0``) and one dataset per name, read in that order.
2. **Keras legacy full-model HDF5** (``model.save("x.h5")``): the same under ``/model_weights``.

:func:`save_weights_by_name` writes layout 1 (a converter builds the Keras model, sets the
converted arrays and saves them with it). A Keras 3 ``.weights.h5`` file (``save_weights``) keys
weights by position and class name, not by layer name, and is refused with that explanation.

Names are compared after replacing ``/`` by ``_`` (so ``conv1/7x7_s2/bn`` finds
``conv1_7x7_s2_bn``). Within a layer, weights are matched by their last name component
(``kernel``, ``bias``, ``gamma``, ``beta``, ``moving_mean``, ``moving_variance``) when the file
names them, else by order. Arrays must already be in Keras layout: convolution kernels
``(height, width, in, out)`` (channels-last; a PyTorch ``(out, in, h, w)`` tensor needs
``transpose(2, 3, 1, 0)``), batch norm as gamma, beta, moving mean, moving variance. A shape
that differs, or a weighted layer of the model that the file lacks (other than the ones passed
as ``optional``, e.g. ``feat_extract`` when a ``senet50`` file without the 128-D layer is used),
raises :class:`~agegender.errors.DataError`; layers in the file that the model lacks (a
classifier ``classifier``) are listed in the report and ignored.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Callable

import keras
import numpy as np
from keras import layers, ops

from agegender.errors import DataError
from agegender.models.registry import family_lookup, register_backbone

VGGFACE2_MEAN_BGR = (91.4953, 103.8827, 131.0912)  # VGGFace2 models (ox-vgg/vgg_face2), BGR order
IMAGENET_MEAN_BGR = (103.939, 116.779, 123.68)  # keras.applications.resnet50.preprocess_input ("caffe")
RESNET50_STAGES = ((2, 3, (64, 64, 256)), (3, 4, (128, 128, 512)), (4, 6, (256, 256, 1024)), (5, 3, (512, 512, 2048)))
IMAGENET_NOTOP = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
IMAGENET_URL = f"https://storage.googleapis.com/tensorflow/keras-applications/resnet/{IMAGENET_NOTOP}"


@keras.saving.register_keras_serializable(package="agegender")
class CaffePreprocess(layers.Layer):
    """RGB pixels in [0, 255] -> BGR minus the per-channel training mean (Caffe models' input)."""

    def __init__(self, mean_bgr=VGGFACE2_MEAN_BGR, **kwargs):
        super().__init__(**kwargs)
        self.mean_bgr = tuple(float(m) for m in mean_bgr)

    def call(self, inputs):
        bgr = ops.flip(ops.cast(inputs, self.compute_dtype), axis=-1)
        return bgr - ops.convert_to_tensor(self.mean_bgr, dtype=self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mean_bgr": list(self.mean_bgr)}


def _conv_bn(x, filters, kernel, name, *, strides=1, padding="valid", bn_epsilon, bn_momentum):
    x = layers.Conv2D(filters, kernel, strides=strides, padding=padding, use_bias=False, name=name)(x)
    return layers.BatchNormalization(epsilon=bn_epsilon, momentum=bn_momentum, name=f"{name}_bn")(x)


def _bottleneck(x, filters, stage: int, block: int, *, strides: int, se: bool, bn_epsilon: float,
                bn_momentum: float):
    """One Caffe-style bottleneck (stride on the first 1x1), with the SE branch when ``se``."""
    f1, f2, f3 = filters
    p = f"conv{stage}_{block}"
    bn = dict(bn_epsilon=bn_epsilon, bn_momentum=bn_momentum)
    y = _conv_bn(x, f1, 1, f"{p}_1x1_reduce", strides=strides, **bn)
    y = layers.ReLU(name=f"{p}_1x1_reduce_relu")(y)
    y = _conv_bn(y, f2, 3, f"{p}_3x3", padding="same", **bn)
    y = layers.ReLU(name=f"{p}_3x3_relu")(y)
    y = _conv_bn(y, f3, 1, f"{p}_1x1_increase", **bn)
    if se:
        s = layers.GlobalAveragePooling2D(keepdims=True, name=f"{p}_global_pool")(y)
        s = layers.Conv2D(f3 // 16, 1, activation="relu", name=f"{p}_1x1_down")(s)
        s = layers.Conv2D(f3, 1, activation="sigmoid", name=f"{p}_1x1_up")(s)
        y = layers.Multiply(name=f"{p}_scale")([y, s])
    shortcut = _conv_bn(x, f3, 1, f"{p}_1x1_proj", strides=strides, **bn) if block == 1 else x
    y = layers.Add(name=f"{p}_add")([y, shortcut])
    return layers.ReLU(name=f"{p}_relu")(y)


def build_vggface2_resnet(input_shape=(224, 224, 3), *, se: bool = False, embedding_dim: int | None = None,
                          bn_epsilon: float = 1e-5, bn_momentum: float = 0.9, name: str | None = None,
                          stages=RESNET50_STAGES) -> keras.Model:
    """The VGGFace2 ResNet-50 (``se=False``) or SE-ResNet-50 (``se=True``), without the classifier.

    Args:
        input_shape: ``(height, width, 3)``, RGB pixels in [0, 255]; at least 32x32.
        se: add the squeeze-and-excitation branches (SE-ResNet-50).
        embedding_dim: when set, a bias-free 1x1 convolution ``feat_extract`` reduces the pooled
            2048 features to this size (``senet50_128``: 128); else the 2048 pooled features.
        bn_epsilon, bn_momentum: batch normalisation (converted models: 1e-5; PyTorch momentum
            0.1 is Keras's 0.9).
        name: model name (default ``vggface2_senet50[_128d]`` / ``vggface2_resnet50``).
        stages: ``(stage, blocks, (f1, f2, f3))`` per stage; the default is ResNet-50's
            (3, 4, 6, 3 blocks).

    Returns:
        A functional model ``image -> features`` of shape ``(batch, 2048 or embedding_dim)``,
        with the layer names of the module docstring. Weights are randomly initialised; load
        converted ones with :func:`load_weights_by_name`.
    """
    if min(input_shape[:2]) < 32:
        raise ValueError(f"input must be at least 32x32, got {input_shape}")
    if name is None:
        name = ("vggface2_senet50" if se else "vggface2_resnet50") + (f"_{embedding_dim}d" if embedding_dim else "")
    bn = dict(bn_epsilon=bn_epsilon, bn_momentum=bn_momentum)
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = CaffePreprocess(VGGFACE2_MEAN_BGR, name="preprocess")(inputs)
    x = layers.ZeroPadding2D(3, name="conv1_pad")(x)
    x = _conv_bn(x, 64, 7, "conv1_7x7_s2", strides=2, **bn)
    x = layers.ReLU(name="conv1_relu_7x7_s2")(x)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool1_3x3_s2")(x)  # Caffe ceil mode
    for stage, blocks, filters in stages:
        for block in range(1, blocks + 1):
            strides = 2 if block == 1 and stage > 2 else 1
            x = _bottleneck(x, filters, stage, block, strides=strides, se=se, **bn)
    if embedding_dim:
        x = layers.GlobalAveragePooling2D(keepdims=True, name="pool5_7x7_s1")(x)
        x = layers.Conv2D(embedding_dim, 1, use_bias=False, name="feat_extract")(x)
        x = layers.Flatten(name="features")(x)
    else:
        x = layers.GlobalAveragePooling2D(name="features")(x)
    return keras.Model(inputs, x, name=name)


def build_smoke_cnn(input_shape=(32, 32, 3), *, name: str = "smoke_cnn") -> keras.Model:
    """Two 3x3/2 convolutions (8, 16 filters) with batch norm and ReLU, then global average pooling.

    Not a thesis backbone: the stand-in that lets ``--smoke`` runs and tests train in seconds.
    """
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = layers.Rescaling(1 / 255.0, name="rescale")(inputs)
    for i, filters in enumerate((8, 16), start=1):
        x = layers.Conv2D(filters, 3, strides=2, padding="same", use_bias=False, name=f"smoke_conv{i}")(x)
        x = layers.BatchNormalization(momentum=0.9, name=f"smoke_bn{i}")(x)
        x = layers.ReLU(name=f"smoke_relu{i}")(x)
    x = layers.GlobalAveragePooling2D(name="features")(x)
    return keras.Model(inputs, x, name=name)


def build_imagenet_resnet50(input_shape=(224, 224, 3), *, weights: str | None = "imagenet",
                            name: str = "imagenet_resnet50") -> keras.Model:
    """``keras.applications.ResNet50`` (no top, global average pooling) with its Caffe preprocessing inside.

    ``weights``: ``"imagenet"`` (Keras downloads ``IMAGENET_NOTOP``, ~94 MB, to ``~/.keras/models``;
    needs network), ``None`` (random initialisation) or the path of that file.
    """
    if weights not in (None, "imagenet") and not Path(weights).is_file():
        raise DataError("ResNet50 ImageNet weights file not found", path=weights,
                        fix=f"pass the path of {IMAGENET_NOTOP} ({IMAGENET_URL}), or 'imagenet' to download it")
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = CaffePreprocess(IMAGENET_MEAN_BGR, name="preprocess")(inputs)
    base = keras.applications.ResNet50(include_top=False, weights=weights, input_tensor=x, pooling="avg")
    return keras.Model(inputs, base.output, name=name)


# ------------------------------------------------------------------------------------------ weights


def _normalise(name: str) -> str:
    name = name.decode() if isinstance(name, bytes) else str(name)
    return name.split(":")[0].replace("/", "_")


def _read_h5_layers(path: Path) -> dict[str, list[tuple[str, np.ndarray]]]:
    """{normalised layer name: [(weight name or index, array), ...]} from any of the three layouts."""
    import h5py

    out: dict[str, list[tuple[str, np.ndarray]]] = {}
    with h5py.File(path, "r") as f:
        root = f["model_weights"] if "layer_names" not in f.attrs and "model_weights" in f else f
        if "layer_names" in root.attrs:  # Keras 2 / legacy layout
            for layer in root.attrs["layer_names"]:
                layer = layer.decode() if isinstance(layer, bytes) else str(layer)
                group = root[layer]
                names = [n.decode() if isinstance(n, bytes) else str(n) for n in group.attrs.get("weight_names", [])]
                if names:
                    out[_normalise(layer)] = [(n, np.asarray(group[n])) for n in names]
            return out
        if "layers" in root and "vars" in root:  # Keras 3 .weights.h5: positional, not by name
            raise DataError("is a Keras 3 .weights.h5 file, which stores weights by position and class name, not by "
                            "layer name", path=path,
                            fix="load it with model.load_weights() into the same architecture, or re-save the "
                                "model with agegender.models.face_resnets.save_weights_by_name (or "
                                "model.save('x.h5'))")
    raise DataError("not a Keras weights file (no 'layer_names' attribute, 'model_weights' or 'layers' group)",
                    path=path, fix="save the converted weights with Keras (module docstring of "
                                   "agegender.models.face_resnets: 'Weight files')")


def save_weights_by_name(model: keras.Model, path) -> Path:
    """Write ``model``'s weights in the Keras 2 HDF5 weights layout (layout 1 of the module docstring).

    Nested models are flattened: every layer that holds weights is one group named after it.
    """
    import h5py

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    targets = _weighted_layers(model)
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([n.encode() for n in targets])
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = keras.__version__.encode()
        for name, layer in targets.items():
            group = f.create_group(name)
            names = [f"{name}/{v.name.split('/')[-1]}" for v in layer.weights]
            group.attrs["weight_names"] = np.array([n.encode() for n in names])
            for n, v in zip(names, layer.weights):
                group.create_dataset(n, data=np.asarray(v))
    return path


def _weighted_layers(model) -> dict[str, keras.layers.Layer]:
    found = {}

    def visit(layer):
        sub = getattr(layer, "layers", None)
        if sub and isinstance(layer, keras.Model):
            for child in sub:
                visit(child)
        elif layer.weights:
            found[layer.name] = layer

    for layer in model.layers:
        visit(layer)
    return found


def load_weights_by_name(model: keras.Model, path, *, optional=()) -> dict:
    """Load the weights of every layer of ``model`` from the HDF5 file ``path``, matching layers by name.

    See the module docstring for the accepted layouts. ``optional``: layer names that may be
    absent from the file (they keep their initial weights). Returns ``{"loaded": [...],
    "missing_optional": [...], "unused_in_file": [...]}``.

    Raises:
        DataError: the file does not exist or is not a Keras weights file; a weighted layer of
            the model (not in ``optional``) is absent from the file; an array's shape differs.
    """
    path = Path(os.fspath(path)).expanduser()
    if not path.is_file():
        raise DataError("weights file not found", path=path,
                        fix="pass the .h5 file of converted face-recognition weights (see --help)")
    stored = _read_h5_layers(path)
    targets = _weighted_layers(model)
    missing = [n for n in targets if n not in stored and n not in optional]
    if missing:
        raise DataError(f"{len(missing)} layers of {model.name} are not in the file (first: "
                        f"{', '.join(missing[:5])}); the file has {len(stored)} weighted layers "
                        f"(first: {', '.join(list(stored)[:3])})", path=path,
                        fix="use a file converted for this architecture with the layer names listed in "
                            "agegender.models.face_resnets")
    loaded = []
    for name, layer in targets.items():
        if name not in stored:
            continue
        arrays = stored[name]
        by_suffix = {n.split(":")[0].split("/")[-1]: a for n, a in arrays}
        values = []
        for i, variable in enumerate(layer.weights):
            key = variable.name.split("/")[-1]
            value = by_suffix.get(key) if len(by_suffix) == len(arrays) and key in by_suffix else (
                arrays[i][1] if i < len(arrays) else None)
            if value is None or tuple(value.shape) != tuple(variable.shape):
                got = None if value is None else tuple(value.shape)
                raise DataError(f"layer {name}: weight {key} has shape {got} in the file, the model needs "
                                f"{tuple(variable.shape)}", path=path,
                                fix="convert the weights to Keras layout (kernels (h, w, in, out), batch norm "
                                    "gamma/beta/moving_mean/moving_variance)")
            values.append(value)
        if len(arrays) != len(layer.weights):
            raise DataError(f"layer {name}: the file has {len(arrays)} arrays, the model {len(layer.weights)}",
                            path=path, fix="check that the file was converted for this architecture")
        layer.set_weights(values)
        loaded.append(name)
    return {"loaded": loaded, "missing_optional": [n for n in targets if n not in stored],
            "unused_in_file": sorted(n for n in stored if n not in targets)}


# ------------------------------------------------------------------------------------------ registry


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """One backbone of the registry: how to build it and where the thesis reports it."""

    key: str
    label: str  # the thesis's name (Table 4.5 and the table captions)
    feature_dim: int  # Table 4.5 "Feature Dimension"
    input_size: int  # default square input
    kind: str  # "face" (user .h5 of converted face-recognition weights), "imagenet" or "smoke"
    build: Callable[..., keras.Model]
    tables: dict  # dataset -> the thesis table of this backbone (Tables 4.6-4.15)
    optional_layers: tuple = ()
    pretraining: str = ""


BACKBONES: dict[str, BackboneSpec] = {
    "resnet50": BackboneSpec(
        "resnet50", "ResNet-50", 2048, 200, "face",
        lambda shape, name="vggface2_resnet50": build_vggface2_resnet(shape, se=False, name=name),
        {"utkface": "Table 4.9", "celeba": "Table 4.14"},
        pretraining="MS-Celeb-1M, fine-tuned on VGGFace2 (VGGFace2 resnet50_ft)"),
    "senet50_128": BackboneSpec(
        "senet50_128", "SE-ResNet-50-128D", 128, 224, "face",
        lambda shape, name="vggface2_senet50_128d": build_vggface2_resnet(shape, se=True, embedding_dim=128,
                                                                           name=name),
        {"utkface": "Table 4.10", "celeba": "Table 4.15"}, optional_layers=("feat_extract",),
        pretraining="MS-Celeb-1M, fine-tuned on VGGFace2 (VGGFace2 senet50_128)"),
    "resnet50_imagenet": BackboneSpec(
        "resnet50_imagenet", "ResNet-50 (ImageNet)", 2048, 224, "imagenet",
        lambda shape, name="imagenet_resnet50", weights=None: build_imagenet_resnet50(shape, weights=weights,
                                                                                       name=name),
        {}, pretraining="ImageNet (keras.applications)"),
    "smoke_cnn": BackboneSpec(
        "smoke_cnn", "smoke CNN (2 convolutions)", 16, 32, "smoke",
        lambda shape, name="smoke_cnn": build_smoke_cnn(shape, name=name),
        {}, pretraining="none (random initialisation; the stand-in of --smoke runs)"),
}
THESIS_ONLY = {"lightcnn": ("LightCNN", "Tables 4.6 / 4.11"), "sphereface": ("Sphereface", "Tables 4.7 / 4.12"),
               "facenet": ("Inception-ResNet (FaceNet)", "Tables 4.8 / 4.13"),
               "inception_resnet": ("Inception-ResNet (FaceNet)", "Tables 4.8 / 4.13")}


for _key, _spec in BACKBONES.items():  # the one registry: face/<key> (agegender.models.registry)
    register_backbone("face", _key, _spec, _spec.label)


def get_backbone(key: str) -> BackboneSpec:
    """The registry entry ``face/<key>``; a ValueError naming the choices for anything else."""
    spec = family_lookup("face", key) if isinstance(key, str) else None
    if spec is not None:
        return spec
    if key in THESIS_ONLY:
        label, tables = THESIS_ONLY[key]
        raise ValueError(f"backbone {key!r} ({label}, thesis {tables}) is not built here: Keras has no "
                         f"implementation or weights of it; choose among {', '.join(BACKBONES)}")
    raise ValueError(f"unknown backbone {key!r}; choose among {', '.join(BACKBONES)}")


@dataclasses.dataclass(frozen=True)
class BackboneChoice:
    """What a run asked for and what it used; ``note`` is put on every table cell and record."""

    requested: str  # registry key the thesis table belongs to
    used: str  # registry key actually built
    weights: str | None  # path, "imagenet" or None (random initialisation)
    substituted: bool
    note: str

    @property
    def spec(self) -> BackboneSpec:
        return BACKBONES[self.used]


def choose_backbone(requested: str, weights: str | None = None, *, substitute_weights: str | None = "imagenet",
                    smoke: bool = False) -> BackboneChoice:
    """Decide which backbone runs for ``requested`` (a registry key) given the user's weights.

    - a face backbone with a weights file: itself, no substitution;
    - a face backbone without one: ``resnet50_imagenet`` with ``substitute_weights``
      (``"imagenet"``, a path to ``IMAGENET_NOTOP``, or ``None`` = random initialisation),
      labelled as a substitution;
    - ``weights == "none"``: the requested architecture with random weights, labelled;
    - ``resnet50_imagenet``: itself with ``weights`` (default ``substitute_weights``); it stands in for
      the thesis's VGGFace2 ResNet-50 in the tables, labelled;
    - ``smoke=True`` and no weights file: ``smoke_cnn``, labelled (smoke runs only).
    """
    spec = get_backbone(requested)
    thesis = f"the thesis's {spec.label} ({spec.pretraining})"
    if spec.kind == "smoke":
        raise ValueError(f"{requested!r} is the smoke-test stand-in; request a thesis backbone and pass smoke=True")
    if smoke and (not weights or weights == "none"):
        return BackboneChoice(requested, "smoke_cnn", None, True,
                              f"backbone substituted: {BACKBONES['smoke_cnn'].label}, random weights (--smoke) in "
                              f"place of {thesis}")
    if weights == "none":
        return BackboneChoice(requested, requested, None, True,
                              f"backbone: {spec.label} architecture with random initial weights (no pretraining) in "
                              f"place of {thesis}")
    if spec.kind == "imagenet":
        w = weights or substitute_weights
        what = ("ImageNet ResNet-50 (keras.applications)" + ("" if w in (None, "imagenet") else f", weights {Path(w).name}")
                if w else "ResNet-50 (keras.applications) with random initial weights")
        return BackboneChoice(requested, requested, w, True,
                              f"backbone: {what} in place of the thesis's VGGFace2 ResNet-50")
    if weights:
        return BackboneChoice(requested, requested, weights, False,
                              f"backbone: {spec.label}, weights {Path(weights).name}")
    sub = "ImageNet ResNet-50 (keras.applications)" if substitute_weights else \
        "ResNet-50 (keras.applications) with random initial weights"
    return BackboneChoice(requested, "resnet50_imagenet", substitute_weights, True,
                          f"backbone substituted: {sub} in place of {thesis}; no face-recognition weights were given "
                          f"(--backbone-weights)")


def build_backbone(choice: BackboneChoice, input_size: int | None = None) -> tuple[keras.Model, dict]:
    """Build the backbone of ``choice`` and load its weights; return (model, report).

    The model is named ``backbone``: the MTL layers nest it under that name and Early Freeze
    freezes it by that name.
    """
    spec = choice.spec
    size = input_size or spec.input_size
    shape = (size, size, 3)
    report: dict = {"requested": choice.requested, "used": choice.used, "substituted": choice.substituted,
                    "note": choice.note, "input_size": size}
    if spec.kind == "imagenet":
        model = spec.build(shape, name="backbone", weights=choice.weights)
        report["weights"] = choice.weights or "random initialisation"
    else:
        model = spec.build(shape, name="backbone")
        if choice.weights:
            report.update(load_weights_by_name(model, choice.weights, optional=spec.optional_layers))
            report["weights"] = str(choice.weights)
        else:
            report["weights"] = "random initialisation"
    report["feature_dim"] = int(model.output.shape[-1])
    return model, report
