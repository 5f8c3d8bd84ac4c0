"""Gu & Yang's multi-task age-group model: a shared EfficientNet block with age, gender and race heads.

Paper 002 (Gu & Yang; ``reproductions/efficientnet_age_groups/README.md``), Sec. 2.2-2.3 and Fig. 1: the face
image goes through a shared CNN block (EfficientNet-B4 ... B7, Tan & Le 2019) and then into one
fully connected branch per task, each with its own loss; the losses are summed (the loss and
its per-sample masking live in the reproduction, ``reproductions.efficientnet_age_groups``).

Decisions (the paper does not state them; each is named where it is set):

* **The backbone** is ``keras.applications.EfficientNetB4`` ... ``B7`` with
  ``include_top=False``, built in the same graph as the heads (``input_tensor=``), so every
  EfficientNet layer is a layer of the returned model (``model.get_layer("top_conv")`` works).
  Keras's EfficientNet rescales and normalises inside, so the model takes RGB pixels in
  [0, 255] (the input pipeline's ``pixel_scale=1.0``).
* **A branch** is what ``keras.applications`` puts on top of EfficientNet for ImageNet: global
  average pooling (shared) -> dropout at the backbone's own top rate (0.4 for B4/B5, 0.5 for
  B6/B7) -> one ``Dense`` softmax layer, here one per task (age: 3, 5 or 10 groups; gender: 2;
  race: 5). The paper's Fig. 1 ("three fully connected branches") gives no sizes.
* Outputs are computed in float32 (``dtype="float32"``) so that losses see float32
  probabilities under mixed precision.
* No ``Lambda`` layers: a saved model loads with ``keras.saving.load_model(..., safe_mode=True)``.
* **Offline ImageNet weights** (``weights=FILE`` or a folder, the route for a machine without
  network): Keras's EfficientNet adds a ``Rescaling(1/sqrt(std))`` layer after its input
  normalisation only when ``weights == "imagenet"`` (the ported TF weights expect inputs divided
  by the variance, keras-team/keras issue 49930), so a plain ``weights=FILE`` build would feed the
  ImageNet weights inputs about 2.1x too large. A file is therefore loaded through Keras's own
  ``"imagenet"`` route with the download replaced by the file (:func:`_application`): the model is
  layer for layer and output for output the ``"imagenet"`` model (``tests/test_efficientnet_age_groups.py``).

The four backbones are an explicit registry (:data:`BACKBONES`); any other name fails loudly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from pathlib import Path

from agegender.errors import DataError
from agegender.models.registry import family_lookup, register_backbone, register_model

__all__ = ["BACKBONES", "Backbone", "TASK_CLASSES", "GROUP_COUNTS", "get_backbone", "resolve_weights",
           "build_efficientnet_groups", "add_heads"]

WEIGHTS_URL = "https://storage.googleapis.com/keras-applications/{file}"


@dataclasses.dataclass(frozen=True)
class Backbone:
    """One EfficientNet of the paper's four, as ``keras.applications`` ships it."""

    key: str  # command-line name: b4 ... b7
    label: str  # as the paper's figures name it: "EfficientNet-B4"
    application: str  # keras.applications constructor
    native_size: int  # Tan & Le's input resolution for this scale (not used by default)
    top_dropout: float  # the dropout Keras puts before its ImageNet classifier for this scale

    @property
    def weights_file(self) -> str:
        """File name of the Keras ImageNet no-top weights (what ``weights="imagenet"`` downloads)."""
        return f"{self.application.lower()}_notop.h5"

    @property
    def weights_url(self) -> str:
        return WEIGHTS_URL.format(file=self.weights_file)


BACKBONES: dict[str, Backbone] = {
    "b4": Backbone("b4", "EfficientNet-B4", "EfficientNetB4", 380, 0.4),
    "b5": Backbone("b5", "EfficientNet-B5", "EfficientNetB5", 456, 0.4),
    "b6": Backbone("b6", "EfficientNet-B6", "EfficientNetB6", 528, 0.5),
    "b7": Backbone("b7", "EfficientNet-B7", "EfficientNetB7", 600, 0.5),
}
GROUP_COUNTS = (3, 5, 10)  # Sec. 2.1: three settings of age groups
TASK_CLASSES = {"gender": 2, "race": 5}  # Sec. 2.1: male/female; white, black, asian, indian, others (the heads')
MIN_INPUT = 32  # keras.applications' smallest input for EfficientNet without its top


for _key, _backbone in BACKBONES.items():  # the one registry: efficientnet/<key> (agegender.models.registry)
    register_backbone("efficientnet", _key, _backbone, _backbone.label)


def get_backbone(name: str) -> Backbone:
    """The registry entry ``efficientnet/<key>`` for ``b4`` ... ``b7`` (also accepts ``B4`` and ``EfficientNet-B4``)."""
    key = str(name).strip().lower().replace("efficientnet-", "").replace("efficientnet", "")
    spec = family_lookup("efficientnet", key)
    if spec is None:
        raise ValueError(f"unknown EfficientNet backbone {name!r}; known: {', '.join(BACKBONES)}")
    return spec


def resolve_weights(backbone: str | Backbone, weights):
    """``None``, ``"imagenet"`` or the path of an existing weights file for ``backbone``.

    ``weights`` may be ``None`` / ``"none"`` (random initialisation), ``"imagenet"`` (Keras
    downloads the no-top file into ``~/.keras/models`` on first use), a weights file (``.h5``)
    or a folder holding Keras's file for this backbone (``efficientnetb4_notop.h5`` ...), so
    that one folder serves every backbone on an offline machine. Raises a one-line
    :class:`DataError` when the file is not there.
    """
    bb = backbone if isinstance(backbone, Backbone) else get_backbone(backbone)
    if weights is None or (isinstance(weights, str) and weights.lower() == "none"):
        return None
    if isinstance(weights, str) and weights.lower() == "imagenet":
        return "imagenet"
    path = Path(os.fspath(weights)).expanduser()
    offline = (f"download {bb.weights_url} on a machine with network access and pass its path (or the folder "
               f"holding it) with --weights; --weights imagenet downloads it, --weights none trains from scratch")
    if path.is_dir():
        found = path / bb.weights_file
        if not found.is_file():
            raise DataError(f"{bb.label} weights file {bb.weights_file} not found in this folder", path=path,
                            fix=offline)
        path = found
    if not path.is_file():
        raise DataError(f"{bb.label} weights file not found", path=path, fix=offline)
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError as err:
        raise DataError(f"{bb.label} weights file is not readable ({err.strerror or err})", path=path,
                        fix="make it readable for this user") from None
    if head != b"\x89HDF\r\n\x1a\n":  # every Keras .h5 / .weights.h5 file is HDF5
        raise DataError(f"{bb.label} weights file is not an HDF5 (.h5) file", path=path, fix=offline)
    return str(path)


def build_efficientnet_groups(backbone: str = "b4", n_groups: int = 3, tasks=("age",), *, input_size: int = 224,
                              weights="imagenet", dropout: float | None = None, trainable_backbone: bool = True,
                              name: str | None = None):
    """Build the shared-EfficientNet model with an age-group head and optional gender and race heads.

    Args:
        backbone: ``b4``, ``b5``, ``b6`` or ``b7`` (:data:`BACKBONES`).
        n_groups: age groups of the age head: 3, 5 or 10 (``agegender.data.age_groups``).
        tasks: the task set, ``("age",)``, ``("age", "gender")`` or ``("age", "gender", "race")``
            (any subset holding ``age``; the order of the outputs is always age, gender, race).
        input_size: side of the square RGB input in pixels (at least 32).
        weights: ``"imagenet"``, ``None`` / ``"none"``, or a weights file or folder
            (:func:`resolve_weights`).
        dropout: rate of each branch's dropout; ``None`` takes the backbone's ImageNet top rate.
        trainable_backbone: ``False`` freezes every EfficientNet layer (feature extraction).
        name: model name (default ``efficientnet_b4_age-gender_g3`` style).

    Returns:
        A functional ``keras.Model`` taking pixels in [0, 255] (input ``image``) and returning a
        dict ``{"age": (batch, n_groups), "gender": (batch, 2), "race": (batch, 5)}`` (the tasks
        asked for) of softmax probabilities. Layers: the EfficientNet's own, then ``avg_pool``,
        ``{task}_dropout`` and the output ``{task}``.

    Raises:
        ValueError: unknown backbone, group count or task, or an input below 32 pixels.
        DataError: the weights cannot be had (a missing file, no network for ``"imagenet"``,
            or a file that does not fit this backbone), in one line naming the fix.
    """
    import keras

    bb = get_backbone(backbone)
    if n_groups not in GROUP_COUNTS:
        raise ValueError(f"n_groups must be one of {GROUP_COUNTS}, got {n_groups!r}")
    tasks = tuple(tasks)
    unknown = [t for t in tasks if t not in ("age", *TASK_CLASSES)]
    if unknown or "age" not in tasks or len(set(tasks)) != len(tasks):
        raise ValueError(f"tasks must be distinct names among age, gender, race and include age, got {tasks!r}")
    tasks = tuple(t for t in ("age", "gender", "race") if t in tasks)
    if int(input_size) < MIN_INPUT:
        raise ValueError(f"input_size must be at least {MIN_INPUT} pixels for EfficientNet, got {input_size}")
    rate = bb.top_dropout if dropout is None else float(dropout)
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {rate}")
    resolved = resolve_weights(bb, weights)

    inputs = keras.Input(shape=(int(input_size), int(input_size), 3), name="image")
    backbone_model = _application(bb, resolved, inputs)
    if not trainable_backbone:
        for layer in backbone_model.layers:
            layer.trainable = False
    return add_heads(inputs, backbone_model.output, n_groups, tasks, dropout=rate,
                     name=name or f"efficientnet_{bb.key}_{'-'.join(tasks)}_g{n_groups}")


def add_heads(inputs, features, n_groups: int, tasks, *, dropout: float, name: str):
    """The task branches on a backbone's feature map: ``avg_pool`` -> per task ``{task}_dropout`` ->
    ``{task}`` (softmax, float32). Returns ``keras.Model(inputs, {task: output})``.

    Separate from :func:`build_efficientnet_groups` so that one built backbone can carry every
    task set (the tests build each of the four backbones once).
    """
    import keras

    if n_groups not in GROUP_COUNTS:
        raise ValueError(f"n_groups must be one of {GROUP_COUNTS}, got {n_groups!r}")
    tasks = tuple(t for t in ("age", "gender", "race") if t in tuple(tasks))
    pooled = keras.layers.GlobalAveragePooling2D(name="avg_pool")(features)
    from agegender.heads import TASKS, gu_yang_groups

    outputs = {}
    for task in tasks:
        spec = gu_yang_groups(n_groups) if task == "age" else TASKS[f"gu_yang/{task}"]  # the declared heads
        h = keras.layers.Dropout(dropout, name=f"{task}_dropout")(pooled)
        outputs[task] = spec.layer(name=task)(h)
    return keras.Model(inputs, outputs, name=name)


def _application(bb: Backbone, weights, inputs):
    """``keras.applications.EfficientNetB*`` on ``inputs``; weight problems become one-line DataErrors."""
    import contextlib
    import io

    import keras

    constructor = getattr(keras.applications, bb.application)
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):  # Keras prints "Downloading data from ..."
            if weights in (None, "imagenet"):
                return constructor(include_top=False, weights=weights, input_tensor=inputs)
            with _imagenet_weights_from(weights):  # the "imagenet" architecture, this file's weights
                model = constructor(include_top=False, weights="imagenet", input_tensor=inputs)
    except Exception as err:  # the Keras download raises a bare Exception("URL fetch failure ...")
        if weights is None:
            raise
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:240]
        if weights == "imagenet":
            raise DataError(f"cannot download the ImageNet weights of {bb.label} ({reason})",
                            fix=f"on a machine with network access download {bb.weights_url}, copy it here and pass "
                                f"--weights /path/to/{bb.weights_file} (or a folder holding the efficientnetb4..b7 "
                                "_notop.h5 files, or put it in ~/.keras/models/); --weights none trains from scratch"
                            ) from None
        raise DataError(f"cannot load these weights into {bb.label} ({reason})", path=weights,
                        fix=f"pass Keras's ImageNet no-top file for this backbone, {bb.weights_file} "
                            f"({bb.weights_url})") from None
    _check_imagenet_stem(model, bb)
    return model


@contextlib.contextmanager
def _imagenet_weights_from(path):
    """While active, Keras's EfficientNet ``weights="imagenet"`` route loads ``path`` instead of downloading.

    ``keras.src.applications.efficientnet`` fetches the file with ``file_utils.get_file`` and then
    calls ``model.load_weights`` on it, exactly what ``weights=path`` does, but only the
    ``"imagenet"`` route builds the ``Rescaling(1/sqrt(std))`` stem layer the ImageNet weights
    need (module docstring). Only that module's reference to ``file_utils`` is replaced, and put
    back on exit.
    """
    from keras.src.applications import efficientnet

    original = efficientnet.file_utils

    class _LocalFile:
        exists = staticmethod(original.exists)

        @staticmethod
        def get_file(*args, **kwargs):
            return str(path)

        def __getattr__(self, name):
            return getattr(original, name)

    efficientnet.file_utils = _LocalFile()
    try:
        yield
    finally:
        efficientnet.file_utils = original


def _check_imagenet_stem(model, bb: Backbone) -> None:
    """Fail loudly if a Keras release stops building the ImageNet stem (Rescaling 1/255, Normalization,
    Rescaling 1/sqrt(std)) on the route :func:`_imagenet_weights_from` relies on."""
    import keras

    kinds = [type(layer).__name__ for layer in model.layers[:6]]
    stem = [k for k in kinds if k in ("Rescaling", "Normalization")]
    if stem != ["Rescaling", "Normalization", "Rescaling"]:
        raise RuntimeError(f"{bb.label} from a weights file: expected Keras's ImageNet stem (Rescaling, "
                           f"Normalization, Rescaling) but the build starts with {kinds} (Keras {keras.__version__}); "
                           "the offline-weights route of agegender.models.efficientnet_groups needs updating")


def _registered_heads() -> dict:
    from agegender.heads import TASKS, gu_yang_groups

    return {"age": gu_yang_groups(3), "gender": TASKS["gu_yang/gender"], "race": TASKS["gu_yang/race"]}


for _key, _backbone in BACKBONES.items():  # gu_yang/efficientnet_b4 ... gu_yang/efficientnet_b7 (3 groups, 3 tasks)
    register_model(f"gu_yang/efficientnet_{_key}", build_efficientnet_groups, heads=_registered_heads(),
                   defaults={"backbone": _key, "n_groups": 3, "tasks": ("age", "gender", "race")},
                   small={"input_size": 32, "weights": None}, heavy=True,
                   description=f"Gu & Yang's shared {_backbone.label} with age-group, gender and race heads")
