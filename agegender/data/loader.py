"""Batches without TensorFlow: :func:`agegender.data.pipeline.build_dataset`'s semantics in numpy and Pillow.

For machines that have a Keras backend (JAX, PyTorch) but no TensorFlow. Nothing on this module's
import path imports TensorFlow (``tests/test_loader.py`` blocks it); Keras is imported only by
:func:`keras_dataset`, so the backend is whatever ``KERAS_BACKEND`` names.

Same as ``build_dataset`` (module docstring there), with the same arguments:

* **targets and weights**: :class:`~agegender.data.pipeline.Target` encodes each task's label; a
  missing label gives weight 0 for that task;
* **file check**: :func:`~agegender.data.pipeline.check_images` skips what it can see without
  decoding and appends ``{file, reason}`` to ``report``; a file that passes the check but does not
  decode becomes a blank sample of weight 0 in its place (the epoch keeps its size), is reported
  once and warned about once;
* **decode and resize**: Pillow decodes to 8-bit RGB (grayscale, palette, RGBA, 16-bit PNG and
  WebP as TensorFlow's ``decode_image`` gives them); :func:`resize_uint8` is
  :func:`agegender.preprocess.resize_uint8` written in numpy (the same triangle-kernel weights,
  antialiased from :data:`~agegender.preprocess.ANTIALIAS_FROM`, rounded to uint8): evaluation
  inputs equal the tf.data path's within one grey level (``tests/test_loader.py``, real faces);
* **evaluation**: the centre crop of ``load_size`` to ``image_size``, then ``* pixel_scale``; an
  augmentation passed outside training is ignored;
* **training**: every epoch is a uniform random permutation of the whole set, drawn from
  ``(seed, epoch)``; each image gets a random crop (when ``load_size > image_size``), a flip, a
  rotation about its centre (bilinear, edges repeated) and colour jitter (brightness, contrast,
  saturation, hue through HSV) exactly as ``_augment_batch`` computes them. The random draws come
  from numpy (``(seed, epoch, batch)``), not TensorFlow's stateless generator, so an epoch is
  reproducible but not the same draw as the tf.data path's.

Parallelism: batches are prepared ``prefetch`` ahead in ``workers`` processes (``forkserver``
start method: safe under JAX's threads). Decoded images are cached, as in the tf.data path, in a
memory-mapped file (``/dev/shm`` when it has room, else the temporary folder) that the workers
share; later epochs only crop, flip and jitter. ``cache=False``, or a decoded set larger than
:func:`~agegender.data.pipeline.memory_cache_budget`, decodes every epoch instead.

Keras: ``model.fit(keras_dataset(...), shuffle=False)`` (the loader shuffles itself; Keras's
``shuffle=True`` would reorder a :class:`keras.utils.PyDataset`'s batches with Python's unseeded
``random``, and defeats the prefetch).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import math
import os
import sys
import tempfile
import weakref
from pathlib import Path
from typing import Mapping

import numpy as np

from agegender.data.pipeline import Augment, Target, check_images, memory_cache_budget
from agegender.data.samples import Samples
from agegender.preprocess import ANTIALIAS_FROM

__all__ = ["Batches", "augment_batch", "decode_rgb", "keras_dataset", "resize_uint8", "rgb_to_hsv", "hsv_to_rgb",
           "rotate"]


# --------------------------------------------------------------------------------------------
# image ops (numpy)


@functools.lru_cache(maxsize=64)
def _weights(in_size: int, out_size: int, antialias: bool) -> np.ndarray:
    """``[out_size, in_size]`` float32 weights of :func:`agegender.preprocess._resize_weights` (TensorFlow's
    ScaleAndTranslate triangle kernel, widened by the scale factor when ``antialias``)."""
    inv_scale = np.float32(in_size) / np.float32(out_size)
    kernel_scale = max(inv_scale, np.float32(1.0)) if antialias else np.float32(1.0)
    centres = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * inv_scale
    source = np.arange(in_size, dtype=np.float32) + np.float32(0.5)
    weights = np.maximum(np.float32(0.0), np.float32(1.0) - np.abs(source[None, :] - centres[:, None]) / kernel_scale)
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def resize_uint8(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 ``[H, W, 3]`` -> uint8 ``[size, size, 3]`` as :func:`agegender.preprocess.resize_uint8` resizes:
    bilinear, antialiased when the larger side shrinks by ``ANTIALIAS_FROM`` or more, rounded half to even."""
    height, width = image.shape[:2]
    if height == size and width == size:
        return image
    antialias = max(height, width) >= ANTIALIAS_FROM * size
    rows, cols = _weights(height, size, antialias), _weights(width, size, antialias)
    x = image.astype(np.float32).reshape(height, width * 3)
    x = (rows @ x).reshape(size, width, 3)  # [size, W, 3]
    x = np.matmul(x.transpose(0, 2, 1), cols.T).transpose(0, 2, 1)  # [size, size, 3]
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def decode_rgb(path) -> np.ndarray:
    """8-bit RGB pixels of an image file, as ``tf.io.decode_image(channels=3, expand_animations=False)`` gives
    them: the first frame, alpha dropped, grayscale and palette expanded, 16 bits cut to their high byte.

    JPEG: TensorFlow decodes with libjpeg's fast integer DCT, Pillow with the accurate one (up to 4 grey
    levels apart on UTKFace); ``simplejpeg`` with ``fastdct=True`` gives TensorFlow's pixels exactly, so it
    decodes JPEGs when installed (and Pillow when it is not, or cannot: CMYK)."""
    from PIL import Image

    with open(path, "rb") as handle:
        data = handle.read()
    if data[:3] == b"\xff\xd8\xff" and _simplejpeg() is not None:
        try:
            return _simplejpeg().decode_jpeg(data, colorspace="RGB", fastdct=True, fastupsample=False)
        except ValueError:
            pass  # CMYK, or a JPEG libjpeg-turbo refuses: Pillow decides below
    import io

    with Image.open(io.BytesIO(data)) as image:  # opened at its first frame
        if image.mode.startswith("I;16"):
            grey = (np.asarray(image, dtype=np.uint32) >> 8).astype(np.uint8)
            return np.repeat(grey[:, :, None], 3, axis=2)
        return np.asarray(image.convert("RGB"))  # RGBA and LA: alpha dropped, not composited (as TensorFlow)


@functools.lru_cache(maxsize=1)
def _simplejpeg():
    try:
        import simplejpeg
    except ImportError:
        return None
    return simplejpeg


def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """``tf.image.rgb_to_hsv`` in numpy (float32 in [0, 1], last axis RGB), in TensorFlow's order of operations."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    value = np.maximum(np.maximum(r, g), b)
    spread = value - np.minimum(np.minimum(r, g), b)
    out = np.empty(rgb.shape, dtype=np.float32)
    np.divide(spread, value, out=out[..., 1], where=value > 0)
    out[..., 1][value <= 0] = 0.0
    norm = np.zeros_like(spread)
    np.divide(np.float32(1.0), np.float32(6.0) * spread, out=norm, where=spread > 0)
    hue = np.where(r == value, norm * (g - b),
                   np.where(g == value, norm * (b - r) + np.float32(2.0 / 6.0), norm * (r - g) + np.float32(4.0 / 6.0)))
    hue[spread <= 0] = 0.0
    hue[hue < 0] += np.float32(1.0)
    out[..., 0], out[..., 2] = hue, value
    return out


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """``tf.image.hsv_to_rgb`` in numpy: each channel ``v - v s clip(min(k, 4 - k), 0, 1)`` with ``k = (n + 6 h) mod
    6`` (n = 5, 3, 1 for red, green, blue), TensorFlow's six hue sectors in three passes."""
    hue, saturation, value = hsv[..., 0] * np.float32(6.0), hsv[..., 1], hsv[..., 2]
    chroma = value * saturation
    out = np.empty(hsv.shape, dtype=np.float32)
    for channel, n in enumerate((5.0, 3.0, 1.0)):
        k = np.mod(hue + np.float32(n), np.float32(6.0))
        out[..., channel] = value - chroma * np.clip(np.minimum(k, np.float32(4.0) - k), 0.0, 1.0)
    return out


def rotate(images: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """Each float image of ``[B, H, W, C]`` rotated about its centre by its angle (radians), bilinear, the
    nearest edge pixel outside: ``ImageProjectiveTransformV3`` as ``pipeline._rotate`` calls it."""
    count, height, width, channels = images.shape
    cos, sin = np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)
    x0 = (width - 1) / 2 - (cos * (width - 1) / 2 - sin * (height - 1) / 2)
    y0 = (height - 1) / 2 - (sin * (width - 1) / 2 + cos * (height - 1) / 2)
    ys, xs = np.meshgrid(np.arange(height, dtype=np.float32), np.arange(width, dtype=np.float32), indexing="ij")
    src_x = cos[:, None, None] * xs - sin[:, None, None] * ys + x0[:, None, None]
    src_y = sin[:, None, None] * xs + cos[:, None, None] * ys + y0[:, None, None]
    src_x, src_y = np.clip(src_x, 0, width - 1), np.clip(src_y, 0, height - 1)  # fill mode "nearest"
    left, top = np.floor(src_x), np.floor(src_y)
    fx, fy = (src_x - left)[..., None], (src_y - top)[..., None]
    left, top = left.astype(np.intp), top.astype(np.intp)
    step_x = (left < width - 1).astype(np.intp)  # the right neighbour, or the edge pixel itself
    step_y = (top < height - 1).astype(np.intp) * width
    flat = images.reshape(count * height * width, channels)
    base = np.arange(count, dtype=np.intp)[:, None, None] * (height * width) + top * width + left
    upper = flat.take(base, axis=0)
    upper += fx * (flat.take(base + step_x, axis=0) - upper)
    lower = flat.take(base + step_y, axis=0)
    lower += fx * (flat.take(base + step_y + step_x, axis=0) - lower)
    upper += fy * (lower - upper)
    return upper.astype(np.float32, copy=False)


def augment_batch(images: np.ndarray, rng: np.random.Generator, size: int, augment: Augment,
                  pixel_scale: float) -> np.ndarray:
    """uint8 ``[B, load, load, 3]`` -> float32 ``[B, size, size, 3]``: ``pipeline._augment_batch`` in numpy (random
    crop, flip, rotation, brightness, contrast, saturation and hue, then ``* pixel_scale``)."""
    count, load = images.shape[0], images.shape[1]
    top = rng.integers(0, load - size + 1, count) if load != size else np.zeros(count, int)
    left = rng.integers(0, load - size + 1, count) if load != size else np.zeros(count, int)
    flip = rng.random(count) < 0.5 if augment.flip else np.zeros(count, bool)
    rows = top[:, None] + np.arange(size)[None, :]
    cols = left[:, None] + np.arange(size)[None, :]
    cols = np.where(flip[:, None], cols[:, ::-1], cols)
    cropped = images[np.arange(count)[:, None, None], rows[:, :, None], cols[:, None, :]]
    colour = bool(augment.rotation_deg or augment.brightness or augment.contrast or augment.saturation or augment.hue)
    out = cropped.astype(np.float32) * np.float32(1 / 255 if colour else pixel_scale)
    if not colour:
        return out

    def uniform(low, high):
        return rng.uniform(low, high, count).astype(np.float32)

    if augment.rotation_deg:
        limit = augment.rotation_deg * math.pi / 180
        out = rotate(out, uniform(-limit, limit))
    if augment.brightness:
        out = out + uniform(-augment.brightness, augment.brightness)[:, None, None, None]
    if augment.contrast:
        factor = uniform(1 - augment.contrast, 1 + augment.contrast)[:, None, None, None]
        mean = out.mean(axis=(1, 2), keepdims=True)
        out = (out - mean) * factor + mean
    if augment.saturation or augment.hue:
        hsv = rgb_to_hsv(np.clip(out, 0.0, 1.0))
        if augment.hue:
            hsv[..., 0] = np.mod(hsv[..., 0] + uniform(-augment.hue, augment.hue)[:, None, None], 1.0)
        if augment.saturation:
            factor = uniform(1 - augment.saturation, 1 + augment.saturation)[:, None, None]
            hsv[..., 1] = np.clip(hsv[..., 1] * factor, 0.0, 1.0)
        out = hsv_to_rgb(hsv)
    return (np.clip(out * 255.0, 0, 255) * np.float32(pixel_scale)).astype(np.float32)


def centre_batch(images: np.ndarray, size: int, pixel_scale: float) -> np.ndarray:
    """The evaluation input: the centre ``size`` square (offset ``(load - size) // 2``), float32 ``* pixel_scale``."""
    load = images.shape[1]
    start = (load - size) // 2
    return images[:, start:start + size, start:start + size].astype(np.float32) * np.float32(pixel_scale)


# --------------------------------------------------------------------------------------------
# the work of one batch (in a worker process or in-process)

_STATE: dict = {}


def _open_state(spec: dict) -> dict:
    state = dict(spec)
    if spec.get("cache_file"):
        n, load = len(spec["paths"]), spec["load_size"]
        state["cache"] = np.memmap(spec["cache_file"], dtype=np.uint8, mode="r+", shape=(n, load, load, 3))
        state["done"] = np.memmap(spec["cache_file"] + ".done", dtype=np.uint8, mode="r+", shape=(n,))
    return state


def _init_worker(spec: dict) -> None:
    _STATE.clear()
    _STATE.update(_open_state(spec))


def _load_one(state: dict, index: int) -> tuple[np.ndarray | None, str | None]:
    cache = state.get("cache")
    if cache is not None and state["done"][index] == 1:
        return cache[index], None
    if cache is not None and state["done"][index] == 2:
        return None, None  # failed before, reported then
    try:
        image = resize_uint8(decode_rgb(state["paths"][index]), state["load_size"])
    except Exception as err:  # noqa: BLE001 - any decoder failure: the sample is blanked and reported
        if cache is not None:
            state["done"][index] = 2
        return None, f"Pillow cannot decode it ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
    if cache is not None:
        cache[index] = image
        state["done"][index] = 1
    return image, None


def _make_batch(state: dict, epoch: int, number: int, indices: np.ndarray):
    """(images float32, kept mask, failures [(index, reason)]) of the rows ``indices``."""
    load = state["load_size"]
    images = np.zeros((len(indices), load, load, 3), dtype=np.uint8)
    kept = np.ones(len(indices), dtype=bool)
    failures = []
    for slot, index in enumerate(indices):
        image, reason = _load_one(state, int(index))
        if image is None:
            kept[slot] = False
            if reason:
                failures.append((int(index), reason))
        else:
            images[slot] = image
    if state["training"]:
        rng = np.random.default_rng([state["seed"], epoch, number])
        out = augment_batch(images, rng, state["image_size"], state["augment"], state["pixel_scale"])
    else:
        out = centre_batch(images, state["image_size"], state["pixel_scale"])
    if not kept.all():
        out[~kept] = 0.0  # a blank sample of weight 0, as the tf.data path pads
    return out, kept, failures


def _worker_batch(epoch: int, number: int, indices: np.ndarray):
    return _make_batch(_STATE, epoch, number, indices)


# --------------------------------------------------------------------------------------------
# the batches


class Batches:
    """``build_dataset``'s batches ``(images, {task: label}, {task: weight})`` from numpy and Pillow.

    Arguments as :func:`agegender.data.pipeline.build_dataset`, plus ``workers`` (processes preparing
    batches; 0 prepares them in this process; default: the usable cores less one, at most 16) and
    ``prefetch`` (batches prepared ahead, default twice the workers). ``batches[i]`` is batch ``i``
    of the current epoch; :meth:`on_epoch_end` moves to the next epoch (a fresh permutation when
    training); iterating yields one epoch and then moves on. :meth:`order` gives an epoch's rows.
    ``close()`` (or a ``with`` block) stops the workers and removes the cache file.
    """

    def __init__(self, samples: Samples, targets: Mapping[str, Target], *, image_size: int,
                 load_size: int | None = None, batch_size: int = 64, training: bool = False,
                 augment: Augment | None = None, cache: bool = True, seed: int = 0, pixel_scale: float = 1 / 255,
                 drop_remainder: bool = False, check: bool = True, report: list | None = None,
                 workers: int | None = None, prefetch: int | None = None):
        frame = samples.frame if isinstance(samples, Samples) else samples
        frame = frame.reset_index(drop=True)
        if "prepared_name" in frame.columns and len(frame) and frame["prepared_name"].notna().all():
            raise ValueError("prepared TFDS data needs TensorFlow to read; without it read the raw folder or a pack "
                             "(python -m agegender.data pack)")
        self.report = report if report is not None else []
        if check and len(frame):
            checked = check_images(frame["path"])
            self.report.extend(checked.skipped)
            frame = frame[checked.ok].reset_index(drop=True)
        if not len(frame):
            raise ValueError("no usable images to build a dataset from (all rows were missing or corrupt)")
        self.frame = frame
        self.image_size, self.load_size = int(image_size), int(load_size or image_size)
        if self.load_size < self.image_size:
            raise ValueError(f"load_size {self.load_size} is smaller than image_size {self.image_size}")
        self.batch_size, self.training, self.seed = int(batch_size), bool(training), int(seed)
        self.drop_remainder = drop_remainder
        self.labels, self.weights = {}, {}
        for name, target in targets.items():
            if target.column not in frame:
                raise KeyError(f"target {name!r} reads column {target.column!r}, which the samples lack")
            self.labels[name], self.weights[name] = target.encode(frame[target.column].to_numpy())
        n = len(frame)
        if drop_remainder and n < self.batch_size:
            raise ValueError(f"{n} images make no full batch of {self.batch_size} (drop_remainder=True)")
        self.epoch = 0
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self.workers = max(0, int(workers)) if workers is not None else min(16, max(1, cpus - 1))
        self.prefetch = int(prefetch) if prefetch is not None else max(2, 2 * self.workers)
        self._spec = {"paths": frame["path"].astype(str).to_numpy(), "load_size": self.load_size,
                      "image_size": self.image_size, "training": self.training, "seed": self.seed,
                      "augment": (augment or Augment(flip=False)) if training else None,
                      "pixel_scale": float(pixel_scale), "cache_file": None}
        nbytes = n * self.load_size * self.load_size * 3
        if cache is True and nbytes <= memory_cache_budget():
            self._spec["cache_file"] = _cache_file(n, nbytes)
        elif cache and cache is not True:
            raise ValueError("the numpy loader caches in memory or not at all: pass cache=True or False")
        self._state = None
        self._pool = None
        self._pending: dict = {}
        self._orders: dict = {}
        self._warned = False
        self._finalizer = weakref.finalize(self, _cleanup, None, self._spec["cache_file"])

    # -- sizes and order
    def __len__(self) -> int:
        n = len(self.frame)
        return n // self.batch_size if self.drop_remainder else math.ceil(n / self.batch_size)

    @property
    def num_samples(self) -> int:
        return len(self.frame)

    def order(self, epoch: int) -> np.ndarray:
        """The rows of ``epoch`` in the order they are served: a uniform permutation drawn from ``(seed, epoch)``
        when training, the frame's order otherwise."""
        n = len(self.frame)
        if not self.training:
            return np.arange(n)
        return np.random.default_rng([self.seed, int(epoch), 0x5EED]).permutation(n)

    def _indices(self, epoch: int, number: int) -> np.ndarray:
        if epoch not in self._orders:
            if len(self._orders) > 3:
                self._orders.pop(min(self._orders))
            self._orders[epoch] = self.order(epoch)
        return self._orders[epoch][number * self.batch_size:(number + 1) * self.batch_size]

    # -- batches
    def __getitem__(self, number: int):
        if not 0 <= number < len(self):
            raise IndexError(f"batch {number} of {len(self)}")
        epoch = self.epoch
        if self.workers == 0:
            if self._state is None:
                self._state = _open_state(self._spec)
            with one_blas_thread():
                images, kept, failures = _make_batch(self._state, epoch, number, self._indices(epoch, number))
        else:
            self._submit(epoch, number)
            images, kept, failures = _result(self._pending.pop((epoch, number)))
            for ahead in range(1, self.prefetch + 1):  # keep the workers busy, across the epoch's end too
                e, b = divmod(number + ahead, len(self))
                self._submit(epoch + e, b)
        return self._assemble(epoch, number, images, kept, failures)

    def _submit(self, epoch: int, number: int) -> None:
        if (epoch, number) in self._pending:
            return
        if self._pool is None:
            self._pool = _start_pool(self.workers, self._spec)
            self._finalizer.detach()
            self._finalizer = weakref.finalize(self, _cleanup, self._pool, self._spec["cache_file"])
        self._pending[(epoch, number)] = self._pool.submit(_worker_batch, epoch, number, self._indices(epoch, number))

    def _assemble(self, epoch, number, images, kept, failures):
        indices = self._indices(epoch, number)
        labels = {k: v[indices] for k, v in self.labels.items()}
        weights = {k: v[indices] * kept.astype(np.float32) for k, v in self.weights.items()}
        if failures:
            paths = self._spec["paths"]
            bad = [{"file": str(paths[i]), "reason": reason} for i, reason in failures]
            known = {r["file"] for r in self.report}  # once per file: two workers may both have tried it, and
            for b in bad:  # Pillow's message names an object address, so the two reasons differ
                if b["file"] not in known:
                    known.add(b["file"])
                    self.report.append(b)
            if not self._warned:
                self._warned = True
                names = "; ".join(f"{b['file']} ({b['reason']})" for b in bad[:3])
                print(f"warning: image(s) passed the file check but failed to decode; each replaced by a blank sample "
                      f"of weight 0: {names}", file=sys.stderr, flush=True)
        return images, labels, weights

    def on_epoch_end(self) -> None:
        """Move to the next epoch (Keras calls this after each epoch)."""
        self.epoch += 1
        stale = [key for key in self._pending if key[0] < self.epoch]
        for key in stale:
            self._pending.pop(key).cancel()

    def __iter__(self):
        for number in range(len(self)):
            yield self[number]
        self.on_epoch_end()

    # -- lifetime
    def close(self) -> None:
        self._pending.clear()
        self._pool = None
        self._finalizer()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __getstate__(self):
        raise TypeError("Batches hold a process pool; give a worker the rows, not the loader")


def _cleanup(pool, cache_file) -> None:
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)
    if cache_file:
        for path in (cache_file, cache_file + ".done"):
            try:
                os.unlink(path)
            except OSError:
                pass


THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
                    "NUMEXPR_NUM_THREADS")


@contextlib.contextmanager
def one_thread_each():
    """Worker processes started inside this block (and the forkserver, if it starts here) run numpy's BLAS on one
    thread: a pool of processes each spinning a BLAS thread per core was five times slower on 2 busy cores."""
    saved = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    os.environ.update({name: "1" for name in THREAD_VARIABLES})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def one_blas_thread():
    """A block in which numpy's BLAS runs on one thread, for batches prepared in this process (``workers=0``):
    OpenBLAS's threads beside the training framework's made each 200 -> 48 px resize take 8 ms instead of 0.5 on
    2 busy cores. Environment variables cannot do it once numpy is loaded; threadpoolctl sets the library's count.
    The controller is made anew each time (0.3 ms): one kept from an earlier batch missed a BLAS loaded since."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController().limit(limits=1, user_api="blas")


def process_context():
    """The ``forkserver`` start method (a fork of a process running JAX's threads can deadlock), with this
    module preloaded so that workers start in a fraction of a second."""
    import multiprocessing

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["agegender.data.loader"])
    return context


def _start_pool(workers: int, spec: dict):
    from concurrent.futures import ProcessPoolExecutor

    with one_thread_each():  # the first worker (and the forkserver) start inside the block
        pool = ProcessPoolExecutor(workers, mp_context=process_context(), initializer=_init_worker, initargs=(spec,))
        _result(pool.submit(int))
    return pool


def _result(future):
    """A worker's result; a worker that died (or never started) is one clear error instead of a hang."""
    from concurrent.futures.process import BrokenProcessPool

    try:
        return future.result()
    except BrokenProcessPool as err:
        raise RuntimeError(f"the loader's worker processes stopped ({err}). A script that uses workers must keep its "
                           "top-level code under `if __name__ == '__main__':` (each worker imports the main module); "
                           "workers=0 prepares batches in this process") from None


def _cache_file(count: int, image_bytes: int) -> str:
    """A fresh zero-filled file of ``image_bytes`` for the decoded images and one of ``count`` bytes beside it
    (``.done``: 0 not yet decoded, 1 decoded, 2 failed), in ``/dev/shm`` when it has room for them with 1 GiB to
    spare, else in the temporary folder; removed when the loader closes or the process exits."""
    folder = None
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        stat = os.statvfs(shm)
        if stat.f_bavail * stat.f_frsize > image_bytes + count + 2**30:
            folder = str(shm)
    handle, path = tempfile.mkstemp(prefix="agegender-loader-", dir=folder)
    os.close(handle)
    atexit.register(_cleanup, None, path)
    for name, size in ((path, image_bytes), (path + ".done", count)):
        with open(name, "wb") as f:
            f.truncate(size)
    return path


def keras_dataset(samples, targets, **options):
    """A :class:`keras.utils.PyDataset` of :class:`Batches` (same arguments): ``model.fit(ds, shuffle=False)``."""
    return wrap(Batches(samples, targets, **options))


def wrap(batches: Batches):
    """``batches`` as a :class:`keras.utils.PyDataset` (Keras is imported here, on the backend it is set to)."""
    return _keras_class()(batches)


@functools.lru_cache(maxsize=1)
def _keras_class():
    import keras

    class KerasBatches(keras.utils.PyDataset):
        """Keras's view of :class:`Batches`: its batches one after another, its epochs moved on by Keras."""

        def __init__(self, batches: Batches):
            super().__init__(workers=1, use_multiprocessing=False)  # the batches bring their own workers
            self.batches = batches

        def __len__(self):
            return len(self.batches)

        def __getitem__(self, number):
            return self.batches[number]

        def on_epoch_end(self):
            self.batches.on_epoch_end()

    return KerasBatches
