"""tf.data input pipeline shared by every reader and reproduction.

``build_dataset(frame, targets, ...)`` turns a sample table (any reader's ``Samples.frame``,
or a protocol's split part) into batches of ``(images, labels, sample_weights)`` where labels
and weights are dicts keyed by task (the model's output names). A sample whose label for a
task is missing gets weight 0 for that task, so multi-source data (IMDB-WIKI rows without
race, UTKFace rows without gender) trains in one model.

Order of work: check files (a corrupt image is skipped and reported, never silently
dropped) -> parallel read + decode + resize to ``load_size`` (uint8) -> cache -> shuffle ->
augment (random crop, flip, small rotation, colour jitter; all stateless and seeded, so an
epoch is reproducible) or centre crop at evaluation -> scale -> batch -> prefetch.

Hostile files. :func:`check_images` skips, with the file and the reason, what it can see
without decoding: a missing, unreadable or empty file, an HTML page or any non-image
signature, a truncated JPEG (no end-of-image marker) or PNG (no ``IEND`` chunk), a header that
does not parse, and an image over :data:`MAX_PIXELS` (a decompression bomb: decoding it
would need gigabytes). What TensorFlow decodes itself: grayscale, palette, RGBA, CMYK JPEG,
16-bit PNG (all become 8-bit RGB), a PNG or WebP named ``.jpg`` (the content decides). A file
that passes the check but still fails to decode (corrupt data after a valid header) is dropped
by the pipeline, which then pads the epoch with a blank sample of weight 0, so the declared
size holds and training goes on; when that happens the pipeline finds the files (one decode
pass in Python), appends them to ``report`` and prints one warning line.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import warnings
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from agegender.data.samples import Samples

MAGIC = {b"\xff\xd8\xff": "jpeg", b"\x89PNG\r\n\x1a\n": "png", b"GIF8": "gif", b"BM": "bmp"}
MAX_PIXELS = 89_478_485  # Pillow's decompression-bomb limit; an RGB decode of this size takes 268 MB


@dataclasses.dataclass(frozen=True)
class Target:
    """How one model output's label is read from the sample table.

    ``kind``: ``regression`` (float ``(value - offset) * scale``, shape [1]), ``binary`` (0/1 float,
    shape [1]), ``sparse``
    (integer class), ``onehot`` (``num_classes`` floats). Rows where ``column`` is NaN or
    negative are masked (weight 0) for this output.
    """

    column: str
    kind: str = "sparse"
    num_classes: int | None = None
    scale: float = 1.0
    offset: float = 0.0

    def encode(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        values = np.asarray(values, dtype="float64")
        present = np.isfinite(values) & (values >= 0)
        filled = np.where(present, values, 0.0)
        if self.kind == "regression":
            return ((filled - self.offset) * self.scale).astype("float32")[:, None], present.astype("float32")
        if self.kind == "binary":
            return filled.astype("float32")[:, None], present.astype("float32")
        if self.kind == "sparse":
            return filled.astype("int32"), present.astype("float32")
        if self.kind == "onehot":
            return np.eye(self.num_classes, dtype="float32")[filled.astype(int)], present.astype("float32")
        raise ValueError(f"unknown target kind {self.kind!r}; use regression, binary, sparse or onehot")


@dataclasses.dataclass(frozen=True)
class Augment:
    """Training-time augmentation (each paper states its own; see the reproduction configs)."""

    flip: bool = True
    rotation_deg: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0


@dataclasses.dataclass
class CheckedFiles:
    ok: np.ndarray
    skipped: list[dict]


def check_images(paths, *, workers: int | None = None) -> CheckedFiles:
    """Cheap structural check of every file, done before TensorFlow sees it.

    Reads the first bytes (a known image signature) and, for JPEG, the last 4 KiB (an
    end-of-image marker: a truncated download has none). Returns the mask of usable files
    and ``{file, reason}`` for each skipped one.
    """
    from concurrent.futures import ThreadPoolExecutor

    paths = [str(p) for p in paths]
    with ThreadPoolExecutor(max_workers=workers or min(16, (os.cpu_count() or 2) * 4)) as pool:
        reasons = list(pool.map(_image_problem, paths))
    ok = np.array([r is None for r in reasons], dtype=bool)
    return CheckedFiles(ok, [{"file": p, "reason": r} for p, r in zip(paths, reasons) if r is not None])


def _image_problem(path: str) -> str | None:
    try:
        if os.path.isdir(path):
            return "a folder, not an image file"
        size = os.path.getsize(path)
        if size == 0:
            return "empty file (0 bytes)"
        with open(path, "rb") as handle:
            head = handle.read(16)
            kind = next((k for magic, k in MAGIC.items() if head.startswith(magic)), None)
            if kind is None and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
                kind = "webp"
            if kind is None:
                snippet = head.lstrip()[:15].lower()
                return "an HTML page, not an image" if snippet.startswith((b"<!doctype", b"<html")) else \
                    "not a JPEG/PNG/GIF/BMP/WebP image (unknown file signature)"
            if kind in ("jpeg", "png"):
                handle.seek(max(0, size - 4096))
                tail = handle.read()
                if kind == "jpeg" and b"\xff\xd9" not in tail:
                    return "truncated JPEG (no end-of-image marker)"
                if kind == "png" and b"IEND" not in tail[-64:]:
                    return "truncated PNG (no IEND chunk)"
            handle.seek(0)
            return _header_problem(handle)
    except FileNotFoundError:
        return "file not found"
    except PermissionError:
        return "permission denied"
    except OSError as err:
        return f"unreadable ({err.strerror or err})"


def _header_problem(handle) -> str | None:
    """Parse the image header with Pillow (no pixel decoding): dimensions within :data:`MAX_PIXELS`."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DecompressionBombWarning: judged below
            with Image.open(handle) as image:
                width, height = image.size
    except Image.DecompressionBombError as err:
        import re

        pixels = re.search(r"\((\d+) pixels\)", str(err))
        count = f"{int(pixels.group(1)):,} pixels" if pixels else "too many pixels"
        return (f"image too large to decode safely ({count}, limit {MAX_PIXELS:,}): a decompression bomb or a "
                "broken header")
    except Exception as err:  # noqa: BLE001 - any parser failure means TensorFlow cannot use the file either
        return f"image header does not parse ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
    if width < 1 or height < 1:
        return f"image has no pixels ({width}x{height})"
    if width * height > MAX_PIXELS:
        return (f"image too large to decode safely ({width}x{height} = {width * height:,} pixels, limit "
                f"{MAX_PIXELS:,}): a decompression bomb or a broken header")
    return None


def build_dataset(samples: Samples | pd.DataFrame, targets: Mapping[str, Target], *, image_size: int,
                  load_size: int | None = None, batch_size: int = 64, training: bool = False,
                  augment: Augment | None = None, cache: bool | str = True, seed: int = 0,
                  pixel_scale: float = 1 / 255, drop_remainder: bool = False, check: bool = True,
                  report: list | None = None):
    """Batches of ``(image float32 [size, size, 3], {task: label}, {task: weight})``.

    ``load_size`` (default ``image_size``) is the square the decoded image is resized to and
    cached at; when larger than ``image_size``, training takes random crops and evaluation
    the centre crop (Levi & Hassner: 256 -> 227). ``pixel_scale`` multiplies the uint8
    pixels (1/255 gives [0, 1]; 1.0 keeps 0-255 for ``keras.applications`` preprocessing).
    ``cache``: True caches in memory, a path caches on disk, False not at all. Files that fail
    :func:`check_images` are dropped and appended to ``report`` (a list of ``{file, reason}``).
    """
    import tensorflow as tf

    from agegender.preprocess import centre_crop, resize_uint8, scale_pixels  # shared with predict / export

    frame = samples.frame if isinstance(samples, Samples) else samples
    frame = frame.reset_index(drop=True)
    if check and len(frame):
        checked = check_images(frame["path"])
        if report is not None:
            report.extend(checked.skipped)
        frame = frame[checked.ok].reset_index(drop=True)
    if not len(frame):
        raise ValueError("no usable images to build a dataset from (all rows were missing or corrupt)")
    load_size = load_size or image_size
    labels, weights = {}, {}
    for name, target in targets.items():
        if target.column not in frame:
            raise KeyError(f"target {name!r} reads column {target.column!r}, which the samples lack")
        labels[name], weights[name] = target.encode(frame[target.column].to_numpy())

    def load(path, label, weight):
        data = tf.io.read_file(path)
        image = tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8)
        return resize_uint8(image, load_size), label, weight

    options = tf.data.Options()
    options.deterministic = True
    paths = frame["path"].astype(str).to_numpy()
    ds = tf.data.Dataset.from_tensor_slices((paths, labels, weights))
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.ignore_errors(log_warning=False)  # second line of defence: check_images already reported bad files
    # A file that decodes in no way is replaced by a blank sample of weight 0 (found and reported once),
    # so the size below always holds: a known size lets Keras end epochs without an empty extra step,
    # which would skew per-task losses, and a short epoch would stop training.
    ds = ds.concatenate(_padding(ds.element_spec, paths, report)).take(len(frame))
    ds = ds.apply(tf.data.experimental.assert_cardinality(len(frame)))
    if cache:
        ds = ds.cache("" if cache is True else str(cache))
    if training:
        ds = ds.shuffle(min(len(frame), 4096), seed=seed, reshuffle_each_iteration=True)
        seeds = tf.data.Dataset.random(seed=seed).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds)).map(
            lambda element, s: _augment(*element, s, image_size, augment or Augment(flip=False)),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    elif load_size != image_size:
        ds = ds.map(lambda im, y, w: (centre_crop(im, image_size), y, w), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.map(lambda im, y, w: (scale_pixels(im, pixel_scale), y, w), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)
    return ds.with_options(options)


def _padding(spec, paths, report: list | None):
    """Blank weight-0 samples that stand in for files TensorFlow failed to decode; the first one
    finds those files (a decode pass over ``paths`` in Python), reports them and warns once."""
    import tensorflow as tf

    done = []

    def find_undecodable(_):
        if not done:
            done.append(True)
            bad = []
            for path in paths:
                try:
                    data = tf.io.read_file(path)
                    tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8)
                except (tf.errors.OpError, ValueError) as err:
                    message = _tf_message(err)
                    bad.append({"file": str(path), "reason": f"TensorFlow cannot decode it ({message})"})
            if report is not None:
                report.extend(bad)
            names = "; ".join(f"{b['file']} ({b['reason']})" for b in bad[:3]) + (" ..." if len(bad) > 3 else "")
            print(f"warning: {len(bad)} image(s) passed the file check but failed to decode; skipped, each replaced "
                  f"by a blank sample of weight 0: {names}", file=sys.stderr, flush=True)
        return 0

    def blank(i):
        token = tf.py_function(find_undecodable, [i], tf.int32)
        with tf.control_dependencies([token]):
            return tf.nest.map_structure(lambda s: tf.zeros([d if d is not None else 1 for d in s.shape], s.dtype),
                                         spec)

    return tf.data.Dataset.range(len(paths)).map(blank)


def _tf_message(err) -> str:
    """The first line of a TensorFlow error without its ``{{function_node ...}}`` and ``[Op:...]`` parts."""
    import re

    text = str(getattr(err, "message", err)).strip()
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", text.splitlines()[0] if text else "")
    return re.sub(r"\s*\[Op:.*$", "", text)[:160] or type(err).__name__


def _augment(image, label, weight, seed, size, augment: Augment):
    import tensorflow as tf

    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=7)
    if image.shape[0] != size:
        image = tf.image.stateless_random_crop(image, (size, size, 3), seed=seeds[0])
    image = tf.cast(image, tf.float32) / 255.0
    if augment.flip:
        image = tf.image.stateless_random_flip_left_right(image, seed=seeds[1])
    if augment.rotation_deg:
        limit = augment.rotation_deg * math.pi / 180
        angle = tf.random.stateless_uniform((), seeds[2], -limit, limit)
        image = _rotate(image, angle)
    if augment.brightness:
        image = tf.image.stateless_random_brightness(image, augment.brightness, seed=seeds[3])
    if augment.contrast:
        image = tf.image.stateless_random_contrast(image, 1 - augment.contrast, 1 + augment.contrast, seed=seeds[4])
    if augment.saturation:
        image = tf.image.stateless_random_saturation(image, 1 - augment.saturation, 1 + augment.saturation,
                                                     seed=seeds[5])
    if augment.hue:
        image = tf.image.stateless_random_hue(image, augment.hue, seed=seeds[6])
    image = tf.clip_by_value(image * 255.0, 0, 255)
    return image, label, weight


def _rotate(image, angle):
    """Rotate about the centre, filling with the nearest edge pixels."""
    import tensorflow as tf

    height, width = tf.cast(tf.shape(image)[0], tf.float32), tf.cast(tf.shape(image)[1], tf.float32)
    cos, sin = tf.cos(angle), tf.sin(angle)
    x0 = (width - 1) / 2 - (cos * (width - 1) / 2 - sin * (height - 1) / 2)
    y0 = (height - 1) / 2 - (sin * (width - 1) / 2 + cos * (height - 1) / 2)
    transform = tf.stack([cos, -sin, x0, sin, cos, y0, 0.0, 0.0])[None]
    rotated = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=transform, output_shape=tf.shape(image)[:2],
        fill_value=0.0, interpolation="BILINEAR", fill_mode="NEAREST")
    return rotated[0]

