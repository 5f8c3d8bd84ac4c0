"""The one preprocessing path from a face crop to a model input, and the spec a run record keeps of it.

A model is only usable on a new photograph when the face reaches it exactly as the training
faces did. :class:`Preprocessing` (stored as ``record["preprocessing"]`` in a run's
``record.json``) says how: the face crop geometry relative to a detector box (margin,
vertical shift, aspect, alignment), the image pipeline (resize to ``load_size``, centre crop
to ``input_size``, ``pixels * pixel_scale + pixel_offset``) and how to read each output head
(age regression / sigmoid / groups, gender sigmoid / softmax, race softmax).

The image functions are TensorFlow ops, so one implementation serves every caller:

- :func:`agegender.data.pipeline.build_dataset` (evaluation): :func:`resize_uint8` at load,
  then :func:`centre_crop` and :func:`scale_pixels` (:func:`to_model_input` does both);
- ``python -m agegender predict``: :func:`preprocess_faces` on uint8 crops of any size;
- ``python -m agegender export``: the same functions inside the serving graph
  (``resize="matmul"`` there: the same resize written as two matrix products, built from
  TensorFlow Lite builtin ops only; it equals ``tf.image.resize`` up to float rounding, i.e. at
  most 1 grey level after rounding to uint8).

The eval-time order of ``build_dataset`` is: decode to uint8 RGB -> ``tf.image.resize`` to
``load_size`` x ``load_size`` (bilinear, antialiased from a 2x downscale on: :data:`ANTIALIAS_FROM`;
the aspect ratio is not kept) -> round,
clip to 0-255, uint8 -> centre crop ``input_size`` (offset ``(load - input) // 2``) -> float32
``* pixel_scale`` (+ ``pixel_offset``). :func:`preprocess_faces` does exactly that.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from agegender.data.samples import ADIENCE_AGE_GROUPS, GENDERS, RACES
from agegender.errors import DataError

__all__ = [
    "ROLES", "FaceCrop", "Head", "Preprocessing", "FACE_PRESETS", "centre_crop", "decode_heads", "face_preset",
    "from_record", "preprocess_faces", "resize_uint8", "scale_pixels", "to_model_input", "tta_views",
]

SCHEMA = 1
ROLES = ("age", "gender", "race")  # what a head predicts; the model output may be named otherwise
AGE_KINDS = ("regression", "sigmoid", "groups")
GENDER_KINDS = ("sigmoid", "softmax")
RACE_KINDS = ("softmax",)
KINDS = {"age": AGE_KINDS, "gender": GENDER_KINDS, "race": RACE_KINDS}
ALIGNMENTS = ("none", "eyes")
PADS = ("edge", "constant")

# Adience's eight groups, each represented by its middle age (the open "(60, 100)" by 80): the
# expected value of an 8-way softmax over these is the age in years a classification head reports.
ADIENCE_GROUP_AGES = (1.0, 5.0, 10.0, 17.5, 28.5, 40.5, 50.5, 80.0)


# --------------------------------------------------------------------------------------------
# the spec


@dataclasses.dataclass(frozen=True)
class FaceCrop:
    """Where the training faces sit relative to a face detector's box (MTCNN's).

    The crop is a rectangle centred on the detector box centre, moved down by ``shift_y``
    times its height, ``side = max(box w, box h) * (1 + 2 * margin)`` wide and ``side *
    aspect`` high; with ``alignment="eyes"`` it is first rotated so the eyes are level. Pixels
    outside the photograph are filled by repeating the edge (``pad="edge"``) or black
    (``"constant"``). ``note`` says where the numbers come from (measured or estimated).
    With ``--detector none`` the whole image is the crop and none of this applies.
    """

    margin: float = 0.0
    shift_y: float = 0.0
    aspect: float = 1.0
    alignment: str = "none"
    pad: str = "edge"
    note: str = ""

    def __post_init__(self):
        if self.alignment not in ALIGNMENTS:
            raise ValueError(f"face alignment must be one of {ALIGNMENTS}, got {self.alignment!r}")
        if self.pad not in PADS:
            raise ValueError(f"face pad must be one of {PADS}, got {self.pad!r}")
        if not (self.margin > -0.5 and math.isfinite(self.margin)):
            raise ValueError(f"face margin must be a finite number above -0.5, got {self.margin!r}")
        if not (self.aspect > 0 and math.isfinite(self.aspect)):
            raise ValueError(f"face aspect must be positive, got {self.aspect!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "FaceCrop":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in dict(data).items() if k in known})


#: Face crop geometry of the training images of each dataset, relative to an MTCNN box.
#: ``utkface`` and ``synth`` were measured with :func:`agegender.predict.measure_face_crop`;
#: the others are estimates from the datasets' documentation: measure them on the real data
#: (``python -m agegender face-geometry FOLDER``) before relying on predictions from photos.
FACE_PRESETS: dict[str, FaceCrop] = {
    "utkface": FaceCrop(margin=-0.033, shift_y=0.07, alignment="eyes",
                        note="measured: MTCNN on 149 of 150 real UTKFace aligned&cropped chips (box height ~1.07x "
                             "the chip side, box centre ~7% of the side above the chip centre, eye line level to "
                             "0.8 deg)"),
    "synth": FaceCrop(margin=0.435, shift_y=-0.085, alignment="none",
                      note="measured: MTCNN on 77 of 120 agegender.data.synth UTKFace-layout faces (box side ~0.53 "
                           "of the image, below its centre)"),
    "adience": FaceCrop(margin=0.4, alignment="eyes",
                        note="estimate (unmeasured): Adience aligned faces keep wide context; measure with "
                             "python -m agegender face-geometry on the aligned folder"),
    "imdb_wiki": FaceCrop(margin=0.4, alignment="none",
                          note="estimate: IMDB-WIKI crops add 40% of the face size around its detector's box"),
    "celeba": FaceCrop(margin=0.35, shift_y=0.05, aspect=218 / 178, alignment="eyes",
                       note="estimate (unmeasured): CelebA aligned 178x218 images; measure before relying on it"),
}


@dataclasses.dataclass(frozen=True)
class Head:
    """How to read one model output.

    ``kind`` by role: age ``regression`` (``years = value / scale + offset``, the inverse of
    :class:`agegender.data.pipeline.Target`'s ``(age - offset) * scale``), ``sigmoid``
    (``years = value * max_age + offset``) or ``groups`` (a softmax over ``labels``, each group
    represented by ``values`` in years: the age is the expected value, the group the argmax);
    gender ``sigmoid`` (one unit, the probability of ``labels[1]``) or ``softmax`` (over
    ``labels``); race ``softmax`` (over ``labels``). ``output`` names the model output
    (Dey & Aggarwal's race head is called ``ethnicity``).
    """

    kind: str
    output: str
    scale: float = 1.0
    offset: float = 0.0
    max_age: float | None = None
    labels: tuple = ()
    values: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "labels", tuple(str(x) for x in self.labels))
        object.__setattr__(self, "values", tuple(float(x) for x in self.values))

    # constructors for the head types of this repository
    @classmethod
    def age_regression(cls, output: str = "age", *, scale: float = 1.0, offset: float = 0.0) -> "Head":
        return cls("regression", output, scale=float(scale), offset=float(offset))

    @classmethod
    def age_sigmoid(cls, max_age: float, output: str = "age", *, offset: float = 0.0) -> "Head":
        return cls("sigmoid", output, max_age=float(max_age), offset=float(offset))

    @classmethod
    def age_groups(cls, labels, values, output: str = "age") -> "Head":
        return cls("groups", output, labels=tuple(labels), values=tuple(values))

    @classmethod
    def adience_groups(cls, output: str = "age") -> "Head":
        return cls.age_groups(ADIENCE_AGE_GROUPS, ADIENCE_GROUP_AGES, output)

    @classmethod
    def gu_yang_groups(cls, n_groups: int, output: str = "age") -> "Head":
        """Gu & Yang's 3 / 5 / 10 groups (:mod:`agegender.data.age_groups`), each at its middle age."""
        from agegender.data.age_groups import AGE_GROUP_EDGES, age_group_labels

        edges = AGE_GROUP_EDGES[n_groups]
        return cls.age_groups(age_group_labels(n_groups), [(lo + hi - 1) / 2 for lo, hi in zip(edges, edges[1:])],
                              output)

    @classmethod
    def gender_sigmoid(cls, output: str = "gender", labels=GENDERS) -> "Head":
        return cls("sigmoid", output, labels=tuple(labels))

    @classmethod
    def gender_softmax(cls, output: str = "gender", labels=GENDERS) -> "Head":
        return cls("softmax", output, labels=tuple(labels))

    @classmethod
    def race_softmax(cls, output: str = "race", labels=RACES) -> "Head":
        return cls("softmax", output, labels=tuple(labels))

    def check(self, role: str) -> None:
        if role not in KINDS:
            raise ValueError(f"unknown head role {role!r}; use one of {ROLES}")
        if self.kind not in KINDS[role]:
            raise ValueError(f"{role} head kind must be one of {KINDS[role]}, got {self.kind!r}")
        if role == "age" and self.kind == "regression" and not self.scale:
            raise ValueError("age regression head needs a non-zero scale")
        if role == "age" and self.kind == "sigmoid" and not self.max_age:
            raise ValueError("age sigmoid head needs max_age")
        if role == "age" and self.kind == "groups" and (not self.labels or len(self.labels) != len(self.values)):
            raise ValueError("age groups head needs labels and one value (years) per label")
        if role == "gender" and len(self.labels) != 2:
            raise ValueError("gender head needs two labels (negative, positive), e.g. ('male', 'female')")
        if role == "race" and len(self.labels) < 2:
            raise ValueError("race head needs its class labels")

    @property
    def units(self) -> int:
        """Output units the head's model output must have."""
        if self.kind in ("regression",) or (self.kind == "sigmoid"):
            return 1
        return len(self.labels)

    def to_dict(self) -> dict:
        data = {"kind": self.kind, "output": self.output}
        if self.kind == "regression":
            data.update(scale=self.scale, offset=self.offset)
        elif self.kind == "sigmoid" and self.max_age is not None:
            data.update(max_age=self.max_age, offset=self.offset)
        if self.labels:
            data["labels"] = list(self.labels)
        if self.values:
            data["values"] = list(self.values)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], role: str | None = None) -> "Head":
        data = dict(data)
        kind = data.get("kind")
        output = data.get("output", role)
        defaults = {"gender": GENDERS, "race": RACES}
        labels = data.get("labels") or (defaults.get(role, ()) if kind in ("sigmoid", "softmax") and role != "age"
                                        else ())
        return cls(kind=kind, output=output, scale=float(data.get("scale", 1.0)),
                   offset=float(data.get("offset", 0.0)),
                   max_age=None if data.get("max_age") is None else float(data["max_age"]),
                   labels=tuple(labels), values=tuple(data.get("values", ())))


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """Everything needed to turn a face in a photograph into the model's input, and its outputs into labels.

    ``input_size``: the model's square input; ``load_size`` (default ``input_size``): the
    square the face crop is resized to before the centre crop; ``pixel_scale`` /
    ``pixel_offset``: ``float(pixel) * pixel_scale + pixel_offset`` (1.0 / 0 for models that
    rescale 0-255 pixels themselves, 1/255 for [0, 1]); ``face``: the crop geometry;
    ``heads``: role (``age``, ``gender``, ``race``) -> :class:`Head`.
    """

    input_size: int
    load_size: int | None = None
    crop: str = "centre"
    pixel_scale: float = 1.0 / 255.0
    pixel_offset: float = 0.0
    face: FaceCrop = dataclasses.field(default_factory=FaceCrop)
    heads: Mapping[str, Head] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "input_size", int(self.input_size))
        object.__setattr__(self, "load_size", int(self.load_size or self.input_size))
        if self.input_size < 1 or self.load_size < self.input_size:
            raise ValueError(f"need 1 <= input_size <= load_size, got {self.input_size} and {self.load_size}")
        if self.crop != "centre":
            raise ValueError(f"crop must be 'centre' (the evaluation crop of build_dataset), got {self.crop!r}")
        heads = dict(self.heads)
        if not heads:
            raise ValueError("preprocessing needs at least one head (age, gender or race)")
        for role, head in heads.items():
            head.check(role)
        object.__setattr__(self, "heads", heads)

    def to_dict(self) -> dict:
        return {"schema": SCHEMA, "input_size": self.input_size, "load_size": self.load_size, "crop": self.crop,
                "pixel_scale": self.pixel_scale, "pixel_offset": self.pixel_offset, "face": self.face.to_dict(),
                "heads": {role: head.to_dict() for role, head in self.heads.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Preprocessing":
        data = dict(data)
        if int(data.get("schema", SCHEMA)) > SCHEMA:
            raise ValueError(f"preprocessing schema {data['schema']} is newer than this agegender's ({SCHEMA}); "
                             "upgrade agegender")
        heads = {role: Head.from_dict(h, role) for role, h in dict(data.get("heads") or {}).items()}
        return cls(input_size=int(data["input_size"]), load_size=data.get("load_size"),
                   crop=data.get("crop", "centre"), pixel_scale=float(data.get("pixel_scale", 1 / 255)),
                   pixel_offset=float(data.get("pixel_offset", 0.0)),
                   face=FaceCrop.from_dict(data.get("face") or {}), heads=heads)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def face_preset(data_kind: str, dataset: str) -> FaceCrop:
    """The face crop a model trained on ``dataset`` saw: generated faces have their own geometry."""
    if data_kind == "generated":
        return FACE_PRESETS["synth"]
    if dataset not in FACE_PRESETS:
        raise ValueError(f"no face-crop preset for dataset {dataset!r}; known: {', '.join(sorted(FACE_PRESETS))}")
    return FACE_PRESETS[dataset]


def from_record(record: Mapping[str, Any] | None, record_path=None) -> Preprocessing:
    """The :class:`Preprocessing` of a run record, or a one-line :class:`DataError` naming the record and the fix."""
    fix = ("retrain with a version of agegender that stores record['preprocessing'], or add the block by hand "
           "(see agegender.preprocess.Preprocessing) or pass --preprocessing SPEC.json")
    if not isinstance(record, Mapping):
        raise DataError("run record is missing or not a JSON object", path=record_path, fix=fix)
    block = record.get("preprocessing")
    if not block:
        raise DataError("run record lacks preprocessing information (input size, pixel scaling, face crop, heads)",
                        path=record_path, fix=fix)
    try:
        return Preprocessing.from_dict(block)
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(f"run record's preprocessing block is invalid ({type(err).__name__}: {err})",
                        path=record_path, fix=fix) from None


def load_spec(path) -> Preprocessing:
    """A :class:`Preprocessing` from a JSON file (the block itself, or a whole record holding it)."""
    from agegender.errors import reading

    with reading(path, "preprocessing file"):
        text = Path(path).read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"preprocessing file is not JSON ({err})", path=path, fix="pass a JSON file") from None
    if isinstance(data, dict) and "preprocessing" in data:
        return from_record(data, path)
    return from_record({"preprocessing": data}, path)


# --------------------------------------------------------------------------------------------
# image ops (TensorFlow; images [H, W, 3] or [B, H, W, 3])


ANTIALIAS_FROM = 2.0
"""Downscale factor from which resizing antialiases. Below it, plain bilinear interpolation is within
one grey level of the antialiased result on average (UTKFace sample, 200 -> 128 px: 0.56 of 255)
and costs a tenth as much on CPU, which decides the first epoch's speed (``make bench``)."""


def resize_uint8(images, size: int, *, method: str = "tf"):
    """Resize to ``size`` x ``size`` exactly as ``build_dataset`` loads images: bilinear, rounded, uint8.

    The resize antialiases (a triangle kernel widened by the scale factor) when the larger side
    shrinks by :data:`ANTIALIAS_FROM` or more, and is plain bilinear otherwise.
    ``method="tf"`` is ``tf.image.resize`` (the pipeline's op); ``"matmul"`` computes the same
    triangle-kernel weights as dense matrices and applies them with two matrix products:
    TensorFlow Lite and ONNX builtins only, for exported graphs. The two agree to float rounding.
    """
    import tensorflow as tf

    if method not in ("tf", "matmul"):
        raise ValueError(f"resize method must be 'tf' or 'matmul', got {method!r}")
    images = tf.convert_to_tensor(images)
    shape = tf.shape(images)

    def resized():
        if method == "matmul":
            out = _resize_matmul(images, size)
        else:
            out = tf.cond(_antialias(shape[-3], shape[-2], size),
                          lambda: tf.image.resize(images, (size, size), antialias=True),
                          lambda: tf.image.resize(images, (size, size)))
        return tf.cast(tf.clip_by_value(tf.round(out), 0, 255), tf.uint8)

    if method == "matmul" or images.dtype != tf.uint8:  # exported graphs: TensorFlow Lite builtins, no cond
        return resized()
    same = tf.logical_and(tf.equal(shape[-3], size), tf.equal(shape[-2], size))
    out = tf.cond(same, lambda: tf.identity(images), resized)  # already the size: the resize is the identity
    return tf.ensure_shape(out, images.shape[:-3].concatenate([size, size]).concatenate(images.shape[-1:]))


def _antialias(height, width, size: int):
    import tensorflow as tf

    return tf.cast(tf.maximum(height, width), tf.float32) >= ANTIALIAS_FROM * size


def _resize_weights(in_size, out_size: int, antialias=True):
    """``[out_size, in_size]`` float32 weights of a triangle-kernel resize (no translation), widened
    by the scale factor when ``antialias`` (TensorFlow's ScaleAndTranslate), else bilinear."""
    import tensorflow as tf

    in_f = tf.cast(in_size, tf.float32)
    inv_scale = in_f / float(out_size)
    kernel_scale = tf.where(antialias, tf.maximum(inv_scale, 1.0), 1.0)
    centres = (tf.range(out_size, dtype=tf.float32) + 0.5) * inv_scale  # sample positions in the source
    source = tf.range(in_size, dtype=tf.float32) + 0.5
    distance = tf.abs(source[None, :] - centres[:, None]) / kernel_scale
    weights = tf.maximum(0.0, 1.0 - distance)
    return weights / tf.reduce_sum(weights, axis=1, keepdims=True)


def _resize_matmul(images, size: int):
    import tensorflow as tf

    x = tf.cast(images, tf.float32)
    single = len(x.shape) == 3
    if single:
        x = x[None]
    shape = tf.shape(x)
    antialias = _antialias(shape[1], shape[2], size)
    rows, cols = _resize_weights(shape[1], size, antialias), _resize_weights(shape[2], size, antialias)
    # rows: [B, H, W, C] -> [B, W, C, H] @ [H, size] -> back
    x = tf.transpose(x, (0, 2, 3, 1))
    x = tf.matmul(x, rows, transpose_b=True)  # [B, W, C, size]
    x = tf.transpose(x, (0, 3, 2, 1))  # [B, size, C, W]
    x = tf.matmul(x, cols, transpose_b=True)  # [B, size, C, size]
    x = tf.transpose(x, (0, 1, 3, 2))  # [B, size, size, C]
    return x[0] if single else x


def centre_crop(images, size: int):
    """The evaluation crop of ``build_dataset``: ``size`` x ``size`` at offset ``(H - size) // 2, (W - size) // 2``."""
    import tensorflow as tf

    images = tf.convert_to_tensor(images)
    h_axis = 0 if len(images.shape) == 3 else 1
    height, width = tf.shape(images)[h_axis], tf.shape(images)[h_axis + 1]
    top, left = (height - size) // 2, (width - size) // 2
    if h_axis == 0:
        return images[top:top + size, left:left + size, :]
    return images[:, top:top + size, left:left + size, :]


def scale_pixels(images, pixel_scale: float, pixel_offset: float = 0.0):
    """``float32(pixels) * pixel_scale (+ pixel_offset)``: the last step of ``build_dataset``."""
    import tensorflow as tf

    out = tf.cast(images, tf.float32) * pixel_scale
    return out + pixel_offset if pixel_offset else out


def to_model_input(loaded, spec: Preprocessing):
    """uint8 images already at ``load_size`` -> model input (centre crop, then scaling)."""
    cropped = centre_crop(loaded, spec.input_size) if spec.load_size != spec.input_size else loaded
    return scale_pixels(cropped, spec.pixel_scale, spec.pixel_offset)


def preprocess_faces(faces, spec: Preprocessing, *, resize: str = "tf"):
    """uint8 RGB face crops -> float32 model inputs ``[n, input_size, input_size, 3]``.

    ``faces``: one array ``[H, W, 3]``, a batch ``[B, H, W, 3]``, or a list of arrays of
    different sizes. Each is resized to ``load_size``, centre-cropped and scaled exactly as
    ``build_dataset`` does at evaluation.
    """
    return to_model_input(load_faces(faces, spec, resize=resize), spec)


def load_faces(faces, spec: Preprocessing, *, resize: str = "tf"):
    """uint8 RGB face crops -> uint8 ``[n, load_size, load_size, 3]`` (the pipeline's cached images)."""
    import tensorflow as tf

    if isinstance(faces, (list, tuple)):
        if not faces:
            return tf.zeros((0, spec.load_size, spec.load_size, 3), tf.uint8)
        return tf.stack([resize_uint8(_as_rgb(f), spec.load_size, method=resize) for f in faces])
    faces = _as_rgb(faces)
    if len(faces.shape) == 3:
        faces = faces[None]
    return resize_uint8(faces, spec.load_size, method=resize)


def _as_rgb(image):
    import tensorflow as tf

    image = tf.convert_to_tensor(image)
    if image.dtype != tf.uint8:
        raise TypeError(f"face crops must be uint8 RGB, got {image.dtype.name}")
    if image.shape[-1] != 3:
        raise ValueError(f"face crops must have 3 channels (RGB), got shape {tuple(image.shape)}")
    return image


def tta_views(loaded, spec: Preprocessing, *, flip: bool = True, oversample: bool = True):
    """Test-time augmentation views of uint8 images at ``load_size``: ``[n, views, S, S, 3]`` model inputs.

    With ``load_size > input_size`` and ``oversample``: Levi & Hassner's crops (centre, top-left,
    top-right, bottom-left, bottom-right, the order of :mod:`agegender.oversample`), and with
    ``flip`` the same five mirrored: 10 views. Otherwise the centre crop and, with ``flip``,
    its mirror image. View 0 is always the plain evaluation input.
    """
    import tensorflow as tf

    loaded = tf.convert_to_tensor(loaded)
    size, load = spec.input_size, spec.load_size
    if oversample and load > size:
        c = (load - size) // 2
        corners = [(c, c), (0, 0), (0, load - size), (load - size, 0), (load - size, load - size)]
        crops = [loaded[:, r:r + size, k:k + size, :] for r, k in corners]
    else:
        crops = [centre_crop(loaded, size)]
    if flip:
        crops += [tf.image.flip_left_right(crop) for crop in crops]
    views = tf.stack(crops, axis=1)
    return scale_pixels(views, spec.pixel_scale, spec.pixel_offset)


# --------------------------------------------------------------------------------------------
# head decoding (numpy)


def decode_heads(outputs: Mapping[str, np.ndarray], spec: Preprocessing) -> list[dict]:
    """Model outputs (keyed by output name, batch first) -> one dict per face.

    Keys: ``age`` (years, float), with a groups head also ``age_group`` and ``age_group_prob``;
    ``gender`` (label) and ``gender_prob`` (its probability); ``race`` and ``race_prob`` when
    the model has a race head. Probabilities and years are Python floats.
    """
    n = None
    decoded: dict[str, list] = {}
    for role in ROLES:
        head = spec.heads.get(role)
        if head is None:
            continue
        if head.output not in outputs:
            raise DataError(f"the model has no output named {head.output!r} (its outputs: "
                            f"{', '.join(sorted(outputs))})",
                            fix="correct heads.<role>.output in the record's preprocessing block")
        value = np.asarray(outputs[head.output], dtype="float64")
        value = value.reshape(len(value), -1)
        if value.shape[1] != head.units:
            raise DataError(f"model output {head.output!r} has {value.shape[1]} units but its {role} head "
                            f"({head.kind}) needs {head.units}",
                            fix="correct heads in the record's preprocessing block")
        n = len(value)
        decoded[role] = _decode(role, head, value)
    return [{k: v for role in decoded for k, v in decoded[role][i].items()} for i in range(n or 0)]


def _decode(role: str, head: Head, value: np.ndarray) -> list[dict]:
    if role == "age":
        if head.kind == "regression":
            return [{"age": float(v[0] / head.scale + head.offset)} for v in value]
        if head.kind == "sigmoid":
            return [{"age": float(v[0] * head.max_age + head.offset)} for v in value]
        probs = _normalise(value)
        years = probs @ np.asarray(head.values)
        best = probs.argmax(1)
        return [{"age": float(y), "age_group": head.labels[b], "age_group_prob": float(p[b])}
                for y, b, p in zip(years, best, probs)]
    if head.kind == "sigmoid":
        p1 = np.clip(value[:, 0], 0.0, 1.0)
        probs = np.stack([1 - p1, p1], axis=1)
    else:
        probs = _normalise(value)
    best = probs.argmax(1)
    return [{role: head.labels[b], f"{role}_prob": float(p[b])} for b, p in zip(best, probs)]


def _normalise(probs: np.ndarray) -> np.ndarray:
    """Softmax outputs, renormalised (float32 outputs and TTA averages may sum to 1 +- 1e-7)."""
    probs = np.clip(probs, 0.0, None)
    total = probs.sum(axis=1, keepdims=True)
    return np.where(total > 0, probs / np.where(total > 0, total, 1), 1.0 / probs.shape[1])
