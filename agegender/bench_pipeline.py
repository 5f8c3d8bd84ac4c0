"""The pipeline benchmark (input pipeline vs the JPEG decode limit) and machine facts; re-exported by :mod:`agegender.bench`."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"first_epoch_vs_decode_limit": 0.9, "cached_vs_decode_limit": 3.0}  # issue 9


def default_images(n: int, workdir: Path) -> tuple[Path, str]:
    """The real UTKFace sample when present (``AGEGENDER_SHARED_DATA`` or ``../shared/data``), else generated faces."""
    shared = Path(os.environ.get("AGEGENDER_SHARED_DATA", ROOT.parent / "shared" / "data"))
    sample = shared / "utkface" / "sample"
    if sample.is_dir() and any(sample.glob("*.jpg")):
        return sample, "sample"
    from agegender.data.synth import synthesize

    faces = workdir / "bench_faces"
    marker = faces / "agegender-synth.json"
    if not (marker.is_file() and json.loads(marker.read_text()).get("n") == n):
        synthesize("utkface", faces, n, 0, size=200)  # UTKFace's own 200x200
    return faces, "generated"


def _files(data_dir: Path, n: int) -> list[str]:
    files = sorted(str(p) for p in Path(data_dir).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))
    if not files:
        from agegender.errors import DataError

        raise DataError("no JPEG files to benchmark", path=data_dir, fix="point --data-dir at a folder of .jpg faces")
    return files[:n]


def _naive(files, size: int, batch: int) -> float:
    """Images/s of a PIL generator (open, convert, resize, stack), one file after another."""
    import numpy as np
    from PIL import Image

    start = time.perf_counter()
    for i in range(0, len(files), batch):
        images = []
        for path in files[i:i + batch]:
            with Image.open(path) as image:
                images.append(np.asarray(image.convert("RGB").resize((size, size)), dtype="float32") / 255.0)
        np.stack(images)
    return len(files) / (time.perf_counter() - start)


def _cpu_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _timed(run) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of ``run()``."""
    cpu, start = _cpu_seconds(), time.perf_counter()
    run()
    return time.perf_counter() - start, _cpu_seconds() - cpu


def _decode_pass(files, size: int | None = None):
    """A function timing one pass of parallel ``tf.io.decode_jpeg`` over the files' bytes, held in
    memory: (images/s, CPU µs per image). With ``size``, each image is also resized as the
    pipeline loads it."""
    import tensorflow as tf

    from agegender.preprocess import resize_uint8

    blobs = [Path(p).read_bytes() for p in files]

    def decode(blob):
        image = tf.io.decode_jpeg(blob, channels=3)
        return resize_uint8(image, size) if size else image

    ds = tf.data.Dataset.from_tensor_slices(blobs).map(decode, num_parallel_calls=tf.data.AUTOTUNE,
                                                       deterministic=False)
    ds = ds.map(lambda im: tf.shape(im)[0]).batch(256).prefetch(tf.data.AUTOTUNE)  # keep the consumer trivial

    def run():
        wall, cpu = _timed(lambda: [None for _ in ds])
        return len(files) / wall, 1e6 * cpu / len(files)

    return run


def _pipeline_passes(files, size: int, batch: int, epochs: int):
    """A function that builds a fresh :func:`build_dataset` and reads it for ``epochs`` epochs:
    [(images/s, CPU µs per image)] per epoch, the first one including the dataset's construction."""
    import pandas as pd

    from agegender.data.pipeline import Augment, Target, build_dataset

    frame = pd.DataFrame({"path": files, "file": [Path(p).name for p in files], "age": 30.0})
    targets = {"age": Target("age", "regression")}

    def dataset(rows):
        return build_dataset(rows, targets, image_size=size, batch_size=batch, training=True,
                             augment=Augment(flip=True))

    for _ in dataset(frame[:batch]):  # process start-up, not billed to the timed epoch (module docstring)
        pass

    def run():
        built = []

        def epoch():
            if not built:  # the first epoch pays for building the dataset too
                built.append(dataset(frame))
            for _ in built[0]:
                pass

        return [(len(files) / wall, 1e6 * cpu / len(files)) for wall, cpu in (_timed(epoch) for _ in range(epochs))]

    return run


def _loader_passes(files, size: int, batch: int, epochs: int, workers: int | None = None):
    """As :func:`_pipeline_passes`, for :class:`agegender.data.loader.Batches`: [images/s] per epoch."""
    import pandas as pd

    from agegender.data.loader import Batches
    from agegender.data.pipeline import Augment, Target

    frame = pd.DataFrame({"path": files, "file": [Path(p).name for p in files], "age": 30.0})

    def run():
        rates = []
        with Batches(frame, {"age": Target("age", "regression")}, image_size=size, batch_size=batch, training=True,
                     augment=Augment(flip=True), workers=workers) as batches:
            for _ in range(epochs):
                start = time.perf_counter()
                for _ in batches:
                    pass
                rates.append(len(files) / (time.perf_counter() - start))
            return rates, batches.workers

    return run


def machine_facts() -> dict:
    import keras

    facts = {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
             "keras": keras.__version__, "keras_backend": keras.backend.backend(), "gpus": gpus(),
             "load_average_1min": round(os.getloadavg()[0], 2)}
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        facts["tensorflow"] = tf.__version__
    elif keras.backend.backend() == "jax":
        import jax

        facts["jax"] = jax.__version__
    return facts


def gpus() -> list[str]:
    """The GPUs the Keras backend sees (TensorFlow, JAX or PyTorch)."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return [g.name for g in tf.config.list_physical_devices("GPU")]
    if backend == "jax":
        import jax

        return [str(d) for d in jax.devices() if d.platform == "gpu"]
    if backend == "torch":
        import torch

        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return []


def bench_pipeline(data_dir: Path | None = None, *, n: int = 3000, size: int = 128, batch: int = 64,
                   epochs: int = 3, repeats: int = 3, workdir: Path = ROOT / "build" / "bench") -> dict:
    """Run (a)-(e) on the same files; return the JSON-ready result.

    Every rate but the naive baseline is the best of ``repeats`` rounds, and every CPU time the
    least. A round is one pass of each decode limit and one fresh dataset read for ``epochs``
    epochs, in turn, so that a slow spell of a shared machine hits each measurement alike and the
    best of several rounds filters it out."""
    kind = "given"
    if data_dir is None:
        data_dir, kind = default_images(n, workdir)
    files = _files(Path(data_dir), n)
    naive = _naive(files, size, batch)
    decode_pass, decode_resize_pass = _decode_pass(files), _decode_pass(files, size)
    pipeline_pass = _pipeline_passes(files, size, batch, epochs)
    loader_pass = _loader_passes(files, size, batch, epochs)
    decodes, decode_resizes, firsts, laters, loader_rates = [], [], [], [], []
    for _ in range(repeats):  # interleaved, so that a slow spell of the machine hits every measurement alike
        decodes.append(decode_pass())
        decode_resizes.append(decode_resize_pass())
        first, *later = pipeline_pass()
        firsts.append(first)
        laters.extend(later)
        rates, loader_workers = loader_pass()
        loader_rates.append(rates)
    decode, decode_cpu = max(r for r, _ in decodes), min(c for _, c in decodes)
    decode_resize, decode_resize_cpu = max(r for r, _ in decode_resizes), min(c for _, c in decode_resizes)
    first, first_cpu = max(r for r, _ in firsts), min(c for _, c in firsts)
    cached = max(r for r, _ in laters) if laters else float("nan")
    cached_cpu = min(c for _, c in laters) if laters else float("nan")
    result = {
        "benchmark": "pipeline", "data_dir": str(data_dir), "data": kind, "images": len(files), "size": size,
        "batch_size": batch, "repeats": repeats,
        "naive_img_s": round(naive, 1), "first_epoch_img_s": round(first, 1), "cached_img_s": round(cached, 1),
        "decode_limit_img_s": round(decode, 1), "decode_resize_limit_img_s": round(decode_resize, 1),
        "first_epochs_img_s": [round(r, 1) for r, _ in firsts], "later_epochs_img_s": [round(r, 1) for r, _ in laters],
        "decode_limits_img_s": [round(r, 1) for r, _ in decodes],
        "first_epoch_vs_decode_limit": round(first / decode, 3), "cached_vs_decode_limit": round(cached / decode, 3),
        "loader_first_epoch_img_s": round(max(r[0] for r in loader_rates), 1),
        "loader_cached_img_s": round(max(x for r in loader_rates for x in r[1:]), 1) if epochs > 1 else None,
        "loader_workers": loader_workers,
        "first_epoch_vs_decode_resize_limit": round(first / decode_resize, 3),
        "cpu_us_per_img": {"decode_limit": round(decode_cpu, 1), "decode_resize_limit": round(decode_resize_cpu, 1),
                           "first_epoch": round(first_cpu, 1), "cached": round(cached_cpu, 1)},
        "cpu_time_ratios": {"decode_limit_vs_first_epoch": round(decode_cpu / first_cpu, 3),
                            "decode_limit_vs_cached": round(decode_cpu / cached_cpu, 3) if laters else None},
        "targets": TARGETS, "machine": machine_facts(),
    }
    result["targets_met"] = {k: result[k] >= v for k, v in TARGETS.items()}
    return result
