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

Shuffling (training only). Every epoch is a uniform random permutation of the whole training
set, drawn afresh each epoch from ``seed``, whatever order the frame arrives in (the Adience
and CelebA readers give rows sorted by file name, i.e. grouped by user; a bounded shuffle
buffer would replay nearly the same user order every epoch). How, by where the decoded images
live (:func:`training_order` names the mode):

* ``memory`` (the default whenever the decoded set fits :func:`memory_cache_budget`): cache,
  then a shuffle buffer as large as the set. The buffer holds references to the cached tensors,
  not copies (TensorFlow tensors share their buffers), so memory does not grow; refilling it
  from the cache costs well under a second per epoch (``tests/test_pipeline.py`` measures it).
  In the first epoch the first batch waits until every image is decoded (the decoding itself
  runs at full speed; only its overlap with the first epoch's training is lost).
* ``paths`` (the decoded set would not fit in memory, or ``cache=False``/a cache file path):
  the file paths (or, for prepared TFDS data, the encoded image bytes) are permuted before
  decoding, and the training images are decoded every epoch instead of cached: a disk cache can
  only be replayed in its stored order, and holding a whole-set buffer of decoded images would
  put the set back in memory. Validation and test data keep the cache (their order never
  matters).

Hostile files. :func:`check_images` (:mod:`agegender.data.images`, re-exported here) skips, with the file
and the reason, what it can see without decoding: a missing, unreadable or empty file, an HTML page or any non-image
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
import functools
import math
import os
import sys
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from agegender.data.images import (MAGIC, MAX_PIXELS, CheckedFiles,  # noqa: F401 (re-exported)
                                   _header_size, check_images)
from agegender.data.samples import Samples


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
    ``cache``: True caches the decoded images in memory when they fit :func:`memory_cache_budget`
    and otherwise in a temporary file on disk (removed at exit; CelebA-scale data never sits
    decoded in RAM), a path caches on disk there, False not at all. ``training``: every epoch is
    a uniform shuffle of the whole set (module docstring, "Shuffling"); a training set that is
    not cached in memory is decoded every epoch, in a permuted order. Files that fail
    :func:`check_images` are dropped and appended to ``report`` (a list of ``{file, reason}``).
    """
    import tensorflow as tf

    from agegender.preprocess import centre_crop, resize_uint8, scale_pixels  # shared with predict / export

    frame = samples.frame if isinstance(samples, Samples) else samples
    frame = frame.reset_index(drop=True)
    prepared = "prepared_name" in frame.columns and len(frame) and frame["prepared_name"].notna().all()
    if check and len(frame) and not prepared:  # prepared data was checked when it was prepared
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
    # Parallel maps run one call per core (AUTOTUNE's default when tuning is off). With tf.data's
    # tuner on, epochs of the same cached dataset alternated between about 1.0 and 1.65 busy cores
    # on a 2-core CPU; without it every epoch stayed near 1.65 (``make bench``; session note).
    options.autotune.enabled = False
    paths = frame["path"].astype(str).to_numpy()
    mode = training_order(len(frame) * load_size * load_size * 3, cache) if training else None
    if mode == "paths" and cache is True:
        print(f"[pipeline] the {len(frame):,} decoded training images exceed the memory cache budget "
              f"({memory_cache_budget() / 2**30:.1f} GiB; AGEGENDER_CACHE_GB changes it): they are decoded every epoch "
              "in a fresh random order (a disk cache could only be replayed in one order)", file=sys.stderr, flush=True)
    # a uniform permutation per epoch (module docstring, "Shuffling"); reshuffled each iteration from ``seed``
    reshuffle = functools.partial(_shuffle_all, n=len(frame), seed=seed)
    if prepared:
        # TFDS records stream in storage order; labels follow each image by its row in the frame
        from agegender.data.prepared import image_dataset

        label_table = tf.nest.map_structure(tf.constant, (labels, weights))

        def load_prepared(row, data):
            image = tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8)
            label, weight = tf.nest.map_structure(lambda t: tf.gather(t, row), label_table)
            return resize_uint8(image, load_size), label, weight

        ds = image_dataset(frame)
        if mode == "paths":  # the encoded bytes (a fraction of the decoded size), permuted before decoding
            ds = reshuffle(ds)
        ds = ds.map(load_prepared, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    else:
        ds = tf.data.Dataset.from_tensor_slices((paths, labels, weights))
        if mode == "paths":
            ds = reshuffle(ds)
        ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.ignore_errors(log_warning=False)  # second line of defence: check_images already reported bad files
    # A file that decodes in no way is replaced by a blank sample of weight 0 (found and reported once),
    # so the size below always holds: a known size lets Keras end epochs without an empty extra step,
    # which would skew per-task losses, and a short epoch would stop training.
    ds = ds.concatenate(_padding(ds.element_spec, [] if prepared else paths, report, len(frame)))
    ds = ds.take(len(frame))
    ds = ds.apply(tf.data.experimental.assert_cardinality(len(frame)))
    if mode == "memory":
        ds = reshuffle(ds.cache(""))  # the buffer holds references to the cached images (module docstring)
    elif cache and not training:
        ds = ds.cache(_cache_file(len(frame) * load_size * load_size * 3) if cache is True else str(cache))
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    # Crop, flip and scaling work on whole batches, compiled with XLA: one fused pass per batch
    # rather than a chain of per-image kernels keeps the cached epochs fast (``make bench``).
    select, finish = _batch_ops(image_size, pixel_scale, batch_size)
    if training:
        seeds = tf.data.Dataset.random(seed=seed).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds)).map(
            lambda batch, s: _augment_batch(*batch, s, image_size, augment or Augment(flip=False), pixel_scale,
                                            select),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    else:
        ds = ds.map(lambda images, y, w: (finish(images), y, w), num_parallel_calls=tf.data.AUTOTUNE,
                    deterministic=True)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    return ds.with_options(options)


def portable_report(report: list[dict], frame) -> list[dict]:
    """``report`` (``{file, reason}`` of skipped images, ``file`` an absolute path) with each file named by the
    frame's ``file`` column (relative to its data folder) instead: what a committed run record may hold."""
    names = dict(zip(frame["path"].astype(str), frame["file"].astype(str)))
    return [{**item, "file": names.get(str(item["file"]), Path(str(item["file"])).name)} for item in report]


def portable_notes(notes, root) -> list[str]:
    """A reader's notes with the absolute data folder ``root`` (e.g. "images are absent from /home/...") written
    as its data-relative name (:func:`agegender.data.provenance.relative_data_path`)."""
    from agegender.data.provenance import relative_data_path

    if root is None:
        return [str(n) for n in notes]
    full = str(Path(root).resolve())
    return [str(n).replace(full, relative_data_path(root)) for n in notes]


def training_order(nbytes: int, cache: bool | str = True) -> str:
    """How a training dataset of ``nbytes`` decoded bytes gets its uniform per-epoch shuffle.

    ``memory``: cached in memory, then shuffled with a buffer of the whole set (``cache=True`` and
    ``nbytes`` within :func:`memory_cache_budget`). ``paths``: the rows are permuted before decoding
    and the images decoded every epoch (``cache=False``, a cache file path, or too large for memory).
    """
    return "memory" if cache is True and nbytes <= memory_cache_budget() else "paths"


def _shuffle_all(ds, *, n: int, seed: int):
    """``ds`` in a fresh uniform random order each epoch: a shuffle buffer of all ``n`` elements."""
    return ds.shuffle(max(int(n), 1), seed=seed, reshuffle_each_iteration=True)


def memory_cache_budget() -> int:
    """Bytes of decoded images ``build_dataset`` keeps in memory: ``AGEGENDER_CACHE_GB`` when set,
    else a quarter of the physical memory."""
    if os.environ.get("AGEGENDER_CACHE_GB"):
        return int(float(os.environ["AGEGENDER_CACHE_GB"]) * 2**30)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4


def _cache_file(nbytes: int) -> str:
    """``""`` (tf.data's in-memory cache) when ``nbytes`` fits the budget, else a fresh file in a
    temporary folder that is removed when the process ends."""
    if nbytes <= memory_cache_budget():
        return ""
    import atexit
    import shutil
    import tempfile

    folder = tempfile.mkdtemp(prefix="agegender-cache-", dir=os.environ.get("AGEGENDER_CACHE_DIR"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    print(f"[pipeline] the decoded images ({nbytes / 2**30:.1f} GiB) exceed the memory cache budget "
          f"({memory_cache_budget() / 2**30:.1f} GiB; set AGEGENDER_CACHE_GB to change it): caching on disk in "
          f"{folder} (AGEGENDER_CACHE_DIR picks the folder)", file=sys.stderr, flush=True)
    return os.path.join(folder, "images")


def _padding(spec, paths, report: list | None, rows: int):
    """Up to ``rows`` blank weight-0 samples that stand in for files TensorFlow failed to decode; the
    first one finds those files (a decode pass over ``paths`` in Python; none for prepared data),
    reports them and warns once."""
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
            if not len(paths):
                print("warning: some rows of the prepared (TFDS) data gave no decodable image; each replaced by a "
                      "blank sample of weight 0 (prepare the data again if its source files changed)",
                      file=sys.stderr, flush=True)
                return 0
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

    return tf.data.Dataset.range(rows).map(blank)


def _tf_message(err) -> str:
    """The first line of a TensorFlow error without its ``{{function_node ...}}`` and ``[Op:...]`` parts."""
    import re

    text = str(getattr(err, "message", err)).strip()
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", text.splitlines()[0] if text else "")
    return re.sub(r"\s*\[Op:.*$", "", text)[:160] or type(err).__name__


def _augment_batch(images, label, weight, seed, size, augment: Augment, pixel_scale: float, select):
    """Random crop, flip, rotation and colour jitter drawn per image from the stateless ``seed``
    (one seed per batch, so an epoch is reproducible), then scaling by ``pixel_scale``.

    The draws happen here; ``select`` (crop and flip as one gather, then the cast, usually
    XLA-compiled: see :func:`_batch_ops`) applies them."""
    import tensorflow as tf

    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=8)
    count = tf.shape(images)[0]
    load = images.shape[1]

    def uniform(i, low, high, dtype=tf.float32):
        return tf.random.stateless_uniform((count,), seeds[i], low, high, dtype=dtype)

    top = uniform(0, 0, load - size + 1, tf.int32) if load != size else tf.zeros((count,), tf.int32)
    left = uniform(1, 0, load - size + 1, tf.int32) if load != size else tf.zeros((count,), tf.int32)
    flip = uniform(2, 0.0, 1.0) < 0.5 if augment.flip else tf.zeros((count,), tf.bool)
    colour = bool(augment.rotation_deg or augment.brightness or augment.contrast or augment.saturation or augment.hue)
    images = select(images, top, left, flip, tf.constant(1 / 255 if colour else pixel_scale, tf.float32))
    if not colour:
        return images, label, weight
    if augment.rotation_deg:
        limit = augment.rotation_deg * math.pi / 180
        images = _rotate(images, uniform(3, -limit, limit))
    if augment.brightness:
        images = images + uniform(4, -augment.brightness, augment.brightness)[:, None, None, None]
    if augment.contrast:
        factor = uniform(5, 1 - augment.contrast, 1 + augment.contrast)[:, None, None, None]
        mean = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
        images = (images - mean) * factor + mean
    if augment.saturation or augment.hue:
        hsv = tf.image.rgb_to_hsv(tf.clip_by_value(images, 0.0, 1.0))
        hue, saturation, value = tf.unstack(hsv, axis=-1)
        if augment.hue:
            hue = tf.math.floormod(hue + uniform(6, -augment.hue, augment.hue)[:, None, None], 1.0)
        if augment.saturation:
            factor = uniform(7, 1 - augment.saturation, 1 + augment.saturation)[:, None, None]
            saturation = tf.clip_by_value(saturation * factor, 0.0, 1.0)
        images = tf.image.hsv_to_rgb(tf.stack([hue, saturation, value], axis=-1))
    images = tf.clip_by_value(images * 255.0, 0, 255)
    return images * pixel_scale, label, weight


@functools.lru_cache(maxsize=None)
def _batch_ops(size: int, pixel_scale: float, batch_size: int):
    """The per-batch pixel work of both modes, compiled with XLA unless ``AGEGENDER_PIPELINE_XLA=0``.

    ``select(images, top, left, flip, scale)``: each image's ``size`` square at ``(top, left)``,
    mirrored where ``flip``, as float32 times ``scale``: one gather of whole pixels (or, without a
    crop, a mirror) and the cast, which XLA fuses into a single pass (about three times faster than
    separate kernels on CPU). ``finish(images)``: the evaluation centre crop and scaling
    (:func:`centre_crop`, :func:`scale_pixels`, as predict and export apply them).

    XLA compiles once per input shape, so a short last batch is padded to ``batch_size`` and the
    result cut back: one compilation per process serves every batch (a second one for the short
    batch stalled the first epoch for 0.3-1 s on a 2-core CPU). Shared by every dataset of the same
    size, scale and batch size in the process.
    """
    import tensorflow as tf

    from agegender.preprocess import centre_crop, scale_pixels

    def select(images, top, left, flip, scale):
        count, load = tf.shape(images)[0], images.shape[1]
        offsets = tf.range(size)
        if load == size:
            images = tf.where(flip[:, None, None, None], tf.reverse(images, [2]), images)
        else:
            columns = tf.where(flip[:, None], left[:, None] + (size - 1) - offsets, left[:, None] + offsets)
            pixels = (top[:, None, None] + offsets[None, :, None]) * load + columns[:, None, :]
            images = tf.gather(tf.reshape(images, [count, load * load, 3]), tf.reshape(pixels, [count, size * size]),
                               axis=1, batch_dims=1)
            images = tf.reshape(images, [count, size, size, 3])
        return tf.cast(images, tf.float32) * scale

    def finish(images):
        images = centre_crop(images, size) if images.shape[1] != size else images
        return scale_pixels(images, pixel_scale)

    xla = os.environ.get("AGEGENDER_PIPELINE_XLA", "1") != "0"
    compiled_select, compiled_finish = tf.function(select, jit_compile=xla), tf.function(finish, jit_compile=xla)

    def full_batches(op):
        def run(*tensors):
            count = tf.shape(tensors[0])[0]

            def padded():
                grown = [tf.pad(t, [[0, batch_size - count]] + [[0, 0]] * (t.shape.rank - 1)) if t.shape.rank else t
                         for t in tensors]
                return op(*grown)[:count]

            if not xla:
                return op(*tensors)
            return tf.cond(count < batch_size, padded, lambda: op(*tensors))

        return run

    return full_batches(compiled_select), full_batches(compiled_finish)


def _rotate(images, angles):
    """Rotate each image of a batch about its centre by its angle, filling with the nearest edge pixels."""
    import tensorflow as tf

    height, width = tf.cast(tf.shape(images)[1], tf.float32), tf.cast(tf.shape(images)[2], tf.float32)
    cos, sin = tf.cos(angles), tf.sin(angles)
    x0 = (width - 1) / 2 - (cos * (width - 1) / 2 - sin * (height - 1) / 2)
    y0 = (height - 1) / 2 - (sin * (width - 1) / 2 + cos * (height - 1) / 2)
    zeros = tf.zeros_like(cos)
    transforms = tf.stack([cos, -sin, x0, sin, cos, y0, zeros, zeros], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=tf.shape(images)[1:3],
        fill_value=0.0, interpolation="BILINEAR", fill_mode="NEAREST")
