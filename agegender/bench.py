"""Measured speed: the input pipeline against its decode limit, and training throughput per precision.

``python -m agegender.bench pipeline`` times four ways of turning the same JPEG files into
batches of ``size`` x ``size`` images, in one process, on the same files:

(a) ``naive_img_s``: a Python generator opening each file with PIL and resizing it, as the
    Keras ``Sequence`` of paper 003 (Dey & Aggarwal) does;
(b) ``first_epoch_img_s``: :func:`agegender.data.pipeline.build_dataset`'s first epoch (file
    check, read, decode, resize, cache, shuffle, augmentation, batch, prefetch), the dataset
    construction included;
(c) ``cached_img_s``: a later epoch of the same dataset (decoded images come from the cache);
(d) ``decode_limit_img_s``: parallel ``tf.io.decode_jpeg`` of the files' bytes already in memory,
    nothing else: the ceiling for any pipeline that has to decode every JPEG once;
(e) ``decode_resize_limit_img_s``: the same plus the resize to ``size`` (the pipeline's own
    :func:`agegender.preprocess.resize_uint8`), the ceiling for a first epoch that must also resize;
(f) ``loader_first_epoch_img_s`` / ``loader_cached_img_s``: the same epochs from
    :class:`agegender.data.loader.Batches`, the numpy + Pillow loader for machines without TensorFlow
    (``loader_workers`` processes; their CPU time is not in this process's, so no CPU figure).

Targets on a 2-core CPU (issue 9): first epoch >= 0.9 x the decode limit; cached epochs >= 3 x
the decode limit. The JSON says whether each holds. Each rate is the best of ``--repeats`` runs
(rounds of one pass of each decode limit and one fresh dataset, in turn), since a single run on a
shared machine can land in a slow spell. Wall-clock rates move with whatever else runs on the machine, so each measurement also
reports the process CPU time per image (``cpu_us_per_img``), which moves much less, and the
ratios of those CPU times (``cpu_time_ratios``). Before the timed first epoch, one small dataset is
built and read once so that process-wide start-up (TensorFlow's XLA service, tf.data threads) is
not billed to it; the timed epoch still pays its own tracing and compilation.

``scale`` and ``memory`` run :mod:`agegender.bench_scale` (cost growth with the number of images,
peak memory of TFDS preparation and reading).

``python -m agegender.bench train --model NAME`` times training steps (images/s, ms per step,
CPU ms per image) of a model of the suite per precision mode: a Keras dtype policy, ``+xla`` for
``jit_compile=True`` (default float32, ``mixed_float16`` and ``mixed_float16+xla`` on a GPU;
float32 alone on a CPU, where ``--modes float32,float32+xla,mixed_bfloat16`` compares the CPU
options).

Every benchmark records the load it was measured under (:mod:`agegender.timing`: load average at
start and end, process CPU time, the other processes' CPU share) and warns, in its output and its
JSON (``busy``, ``warning``), when the machine was not idle: a wall-clock rate measured under load
is wrong.

    python -m agegender.bench pipeline                      # UTKFace sample if present, else generated faces
    python -m agegender.bench pipeline --data-dir DIR --n 3000 --size 128 --json out.json
    python -m agegender.bench train --model dual_cnn --steps 20
    python -m agegender.bench train --model dual_cnn --batch-size 64 --modes float32,float32+xla,mixed_bfloat16 --repeats 3
    python -m agegender.bench predict [--model RUN_DIR]         # batch-1 CPU latency of detection + prediction
    python -m agegender.bench scale [--sizes 1000 5000 20000]   # audit / TFDS prepare / first epoch vs n
    python -m agegender.bench memory [--n 50000]                # peak memory of prepare and reading (CelebA)
    make bench; make bench-scale                            # into results/bench/ (JSON and README.md)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
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


TRAIN_MODELS = ("levi_multitask", "dual_cnn", "xception_transfer", "efficientnet_b4", "dey_mobilenet", "dey_transformer")
# precision policy, optionally "+xla" (jit_compile=True); issue 9 (GPU) and issue 17 (CPU: AVX-512 BF16 / AMX)
TRAIN_MODES = ("float32", "float32+xla", "mixed_bfloat16", "mixed_bfloat16+xla", "mixed_float16",
               "mixed_float16+xla")
GPU_MODES = ("float32", "mixed_float16", "mixed_float16+xla")
CPU_MODES = ("float32",)


def mode_policy(mode: str) -> tuple[str, bool]:
    """(Keras dtype policy, jit_compile) of a benchmark mode such as ``mixed_bfloat16+xla``."""
    policy, _, xla = mode.partition("+")
    return policy, xla == "xla"


# the benchmark's short names -> (registered model, arguments, default input side); agegender.models.registry
_TRAIN_ENTRIES = {
    "levi_multitask": ("jorgensen/levi_multitask", {}, 227),
    "dual_cnn": ("speziali/dual_cnn", {}, 128),
    "xception_transfer": ("jorgensen/xception_transfer", {"weights": None}, 227),
    "efficientnet_b4": ("gu_yang/efficientnet_b4", {"weights": None, "n_groups": 10, "tasks": ("age",)}, 224),
    "dey_mobilenet": ("dey_aggarwal/mobilenet", {"weights": None}, 224),
    "dey_transformer": ("dey_aggarwal/transformer", {"weights": None}, 224),
}


def _train_model(name: str, size: int | None):
    """A registered model of the suite, its loss dict and input size, and the label shape of each output (an int:
    that many classes; a tuple: a float array), all read off its declared heads (:mod:`agegender.heads`)."""
    if name not in _TRAIN_ENTRIES:
        raise ValueError(f"unknown model {name!r}; choose among {', '.join(TRAIN_MODELS)}")
    from agegender.heads import gu_yang_groups
    from agegender.models.registry import create_model, model_entry

    registered, options, default = _TRAIN_ENTRIES[name]
    size = size or default
    shape = {"input_shape": (size, size, 3)} if registered.startswith("jorgensen/") else {"input_size": size}
    model = create_model(registered, **options, **shape)
    heads = dict(model_entry(registered).heads)
    if "n_groups" in options:  # the age head of the groups asked for
        heads = {"age": gu_yang_groups(options["n_groups"])}
    heads = {task: spec for task, spec in heads.items() if task in model.output_names}
    return model, {task: spec.loss for task, spec in heads.items()}, size, \
        {task: spec.units if spec.encoding == "sparse" else (spec.units,) for task, spec in heads.items()}


def bench_train(name: str, *, batch: int = 32, steps: int = 10, size: int | None = None,
                modes: tuple[str, ...] | None = None, data_dir: Path | None = None, pipeline: bool = True,
                repeats: int = 1, workdir: Path = ROOT / "build" / "bench") -> dict:
    """Images/s and ms per step of ``name`` for each precision mode.

    Modes (:data:`TRAIN_MODES`): a Keras dtype policy, ``+xla`` for ``jit_compile=True``. Default:
    float32, mixed_float16 and mixed_float16 + XLA on a GPU; float32 alone on a CPU (name the others
    with ``modes``: on a CPU with AVX-512 BF16 / AMX, ``mixed_bfloat16`` is a real option, while
    float16 is emulated and slow). Every model is built first, then each mode is timed in ``repeats``
    interleaved rounds (a slow spell of a shared machine hits every mode alike) and its best round
    kept. Each row gives the process CPU time per image and the load it saw
    (:mod:`agegender.timing`); the result is flagged ``busy`` with a ``warning`` when the machine was
    not idle, since wall-clock rates are then inflated.

    Each mode is timed with ``model.fit`` on one batch held in memory (the model's own speed) and,
    with ``pipeline``, on :func:`~agegender.data.pipeline.build_dataset` batches of real images
    (``data_dir``, default as for the pipeline benchmark; cached after a warm-up pass, augmented
    every step). ``input_bound`` says whether the pipeline held training below 90 % of the in-memory
    speed. On a CPU the two share the same cores, so there it measures contention.

    Under another Keras backend (``KERAS_BACKEND=jax`` or ``torch``, for a machine whose GPU has
    no TensorFlow) the same models are timed from memory only (the pipeline is tf.data); on JAX
    every mode is XLA-compiled, so the ``+xla`` modes are not run by default.
    """
    import keras
    import numpy as np

    from agegender.timing import measured, snapshot

    backend = keras.backend.backend()
    gpu = bool(gpus())
    on_gpu = GPU_MODES if backend == "tensorflow" else tuple(m for m in GPU_MODES if "+" not in m)
    modes = _checked_modes(modes or (on_gpu if gpu else CPU_MODES))
    pipeline = pipeline and backend == "tensorflow"
    files = []
    if pipeline:
        n_images = max(4 * batch, 64)
        folder = data_dir or default_images(max(n_images, 200), workdir)[0]
        files = _files(Path(folder), n_images)

    def timed_fit(model, dataset, count):
        start = snapshot()
        model.fit(dataset, steps_per_epoch=count, epochs=1, verbose=0, shuffle=False)
        return measured(start, snapshot())

    whole = snapshot()
    rng = np.random.default_rng(0)
    built = []
    for mode in modes:  # build and compile every mode first; each keeps the policy it was built under
        policy, jit = mode_policy(mode)
        keras.mixed_precision.set_global_policy(policy)
        model, losses, size_used, shapes = _train_model(name, size)
        # TensorFlow compiles with XLA only when asked; JAX always does ("auto"), PyTorch only when asked
        model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=losses,
                      jit_compile=True if jit else (False if backend == "tensorflow" else "auto"))
        x = rng.uniform(0, 255, (batch, size_used, size_used, 3)).astype("float32")
        y = {task: rng.integers(0, shape, batch) if isinstance(shape, int) else rng.uniform(0, 1, (batch, *shape))
             for task, shape in shapes.items()}
        timed_fit(model, _same_batch(x, y, 2), 2)  # trace and compile
        images = None
        if files:
            import pandas as pd

            from agegender.data.pipeline import Augment, Target, build_dataset

            frame = pd.DataFrame({"path": files, "file": [Path(f).name for f in files]})
            targets = {}
            for task, shape in shapes.items():
                frame[task] = rng.integers(0, shape, len(files)) if isinstance(shape, int) else \
                    rng.uniform(0, 1, len(files))
                targets[task] = Target(task, "sparse" if isinstance(shape, int) else "regression")
            images = build_dataset(frame, targets, image_size=size_used, batch_size=batch, training=True,
                                   augment=Augment(flip=True), pixel_scale=1.0, drop_remainder=True)
            images = images.map(lambda im, lab, w: (im, lab)).repeat()
            timed_fit(model, images, len(files) // batch)  # fills the cache
        built.append((mode, model, x, y, images))
    keras.mixed_precision.set_global_policy("float32")

    rounds: dict[str, list] = {mode: [] for mode in modes}
    for _ in range(max(1, repeats)):
        for mode, model, x, y, images in built:
            memory = timed_fit(model, _same_batch(x, y, steps), steps)
            piped = timed_fit(model, images, steps) if images is not None else None
            rounds[mode].append((memory, piped))
    rows = []
    for mode in modes:
        memory, piped = min(rounds[mode], key=lambda r: r[0]["wall_s"])
        seconds = memory["wall_s"] / steps
        row = {"mode": mode, "ms_per_step": round(1000 * seconds, 1), "img_s": round(batch / seconds, 1),
               "cpu_ms_per_img": round(1000 * memory["cpu_s"] / (steps * batch), 2),
               "rounds_img_s": [round(batch * steps / r[0]["wall_s"], 1) for r in rounds[mode]],
               "busy": memory["busy"], "other_processes_cores": memory.get("other_processes_cores")}
        if piped is not None:
            seconds = piped["wall_s"] / steps
            row.update(pipeline_ms_per_step=round(1000 * seconds, 1), pipeline_img_s=round(batch / seconds, 1))
            row["input_bound"] = row["pipeline_img_s"] < 0.9 * row["img_s"]
        rows.append(row)
    timing = measured(whole, snapshot())
    result = {"benchmark": "train", "model": name, "batch_size": batch, "steps": steps, "repeats": max(1, repeats),
              "input_size": size_used, "rows": rows, "machine": machine_facts(), "timing": timing,
              "busy": timing["busy"] or any(r["busy"] for r in rows)}
    if result["busy"]:
        result["warning"] = timing.get("warning") or ("machine busy during a timed mode (other processes used "
                                                      "CPU): wall-clock figures are inflated; rerun idle")
    if not gpu:
        emulated = [m for m in modes if mode_policy(m)[0] == "mixed_float16"]
        result["note"] = ("no GPU visible: float32 only (mixed float16 and XLA are GPU measurements)"
                          if modes == CPU_MODES else
                          "no GPU visible: CPU figures" + (f"; {', '.join(emulated)} emulated on the CPU, so these "
                                                           "check the code path only" if emulated else ""))
    if backend != "tensorflow":
        result["note"] = ". ".join(filter(None, [result.get("note"), (
            f"Keras backend {backend}, not TensorFlow: the models alone, timed from memory (the input pipeline is "
            "tf.data)" + ("; every mode is XLA-compiled by JAX" if backend == "jax" else ""))]))
    if "float32" in modes and len(modes) > 1:
        base = rows[modes.index("float32")]["img_s"]
        result["speedup_vs_float32"] = {r["mode"]: round(r["img_s"] / base, 2) for r in rows}
    return result


def _same_batch(x, y, count: int):
    """``count`` steps of the one batch ``(x, y)``: a repeated tf.data tensor under TensorFlow, a
    :class:`keras.utils.PyDataset` under the other backends."""
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.data.Dataset.from_tensors((x, y)).repeat()

    class SameBatch(keras.utils.PyDataset):
        def __len__(self):
            return count

        def __getitem__(self, index):
            return x, y

    return SameBatch()


def precision_pilot(run_roots) -> dict:
    """Issue 17: the same protocol at two precisions and several seeds, from the run records under ``run_roots``
    (each a reproduction's ``--out`` folder). Per network, seed and precision: the loss per epoch, the test
    metrics and the training time; then the spread between seeds at one precision and between precisions at
    one seed, so that a precision change can be judged against run-to-run noise."""
    import glob

    rows = []
    for root in run_roots:
        for path in sorted(glob.glob(str(Path(root) / "runs" / "*" / "*" / "*" / "record.json"))):
            record = json.loads(Path(path).read_text(encoding="utf-8"))
            if record.get("status") != "complete" or not record.get("history"):
                continue
            history, test = record["history"], record["metrics"].get("test", {})
            rows.append({"network": record["experiment"], "seed": record["seed"],
                         "precision": record["config"].get("precision_policy"),
                         "loss": [round(h["loss"], 4) for h in history],
                         "val_loss": [round(h["val_loss"], 4) for h in history],
                         "test": {k: round(v, 4) for k, v in test.items() if k in ("age_r2", "age_mae_years",
                                                                                    "gender_accuracy")},
                         "seconds": round(record["metrics"]["training"]["seconds"], 1),
                         "cpu_seconds": round(sum(h.get("epoch_cpu_seconds", 0.0) for h in history), 1),
                         "data": record["data"].get("path"), "train_faces": record["data"]["counts"]["train"],
                         "commit": record.get("git", {}).get("commit", "")[:7]})
    keyed = {(r["network"], r["seed"], r["precision"]): r for r in rows}
    spreads = []
    for network in sorted({r["network"] for r in rows}):
        seeds = sorted({r["seed"] for r in rows if r["network"] == network})
        precisions = sorted({r["precision"] for r in rows if r["network"] == network})
        for metric in ("loss", "val_loss", *sorted({k for r in rows for k in r["test"]})):
            def value(r):
                return r[metric][-1] if metric in ("loss", "val_loss") else r["test"].get(metric)
            across_seeds = [abs(value(keyed[(network, a, p)]) - value(keyed[(network, b, p)]))
                            for p in precisions for i, a in enumerate(seeds) for b in seeds[i + 1:]
                            if (network, a, p) in keyed and (network, b, p) in keyed
                            and value(keyed[(network, a, p)]) is not None]
            across_precisions = [abs(value(keyed[(network, s_, precisions[0])]) - value(keyed[(network, s_, q)]))
                                 for s_ in seeds for q in precisions[1:]
                                 if (network, s_, precisions[0]) in keyed and (network, s_, q) in keyed
                                 and value(keyed[(network, s_, q)]) is not None]
            if across_seeds and across_precisions:
                spreads.append({"network": network, "metric": metric, "max_between_seeds": round(max(across_seeds), 4),
                                "max_between_precisions": round(max(across_precisions), 4)})
    return {"benchmark": "precision_pilot", "rows": rows, "spreads": spreads}


def _pilot_markdown(r: dict) -> list[str]:
    lines = ["## Precision pilot (same protocol, same seeds, float32 vs bfloat16)", "",
             "| network | seed | precision | training loss per epoch | validation loss per epoch | test | training s "
             "| CPU s | data |", "|---|---|---|---|---|---|---|---|---|"]
    for row in sorted(r["rows"], key=lambda x: (x["network"], x["seed"], x["precision"])):
        test = ", ".join(f"{k} {v}" for k, v in sorted(row["test"].items()))
        lines.append(f"| {row['network']} | {row['seed']} | {row['precision']} | {' → '.join(map(str, row['loss']))} | "
                     f"{' → '.join(map(str, row['val_loss']))} | {test} | {row['seconds']} | {row['cpu_seconds']} | "
                     f"{row['data']} ({row['train_faces']:,} train) |")
    lines += ["", "Largest difference of the last-epoch value between two seeds at one precision, and between the two "
                  "precisions at one seed (within: the precision changes it no more than a change of seed does):", "",
              "| network | metric | between seeds | between precisions | within run-to-run noise |", "|---|---|---|---|---|"]
    lines += [f"| {s['network']} | {s['metric']} | {s['max_between_seeds']} | {s['max_between_precisions']} | "
              f"{'yes' if s['max_between_precisions'] <= s['max_between_seeds'] else '**no**'} |" for s in r["spreads"]]
    return lines + [""]


def markdown(results: list[dict]) -> str:
    """One markdown table per benchmark kind, in a stable order (for ``results/bench/README.md``)."""
    lines = ["# Benchmarks", "", "Generated by `make bench` (`python -m agegender.bench`); numbers are measured, "
             "on the machine each row names.", ""]
    pipes = [r for r in results if r["benchmark"] == "pipeline"]
    if pipes:
        lines += ["## Input pipeline (images/s)", "",
                  "| data | images | size | naive PIL | first epoch | cached epoch | decode limit | decode + resize "
                  "limit | first/limit (target ≥ 0.9) | cached/limit (target ≥ 3) | first/(decode + resize) | CPUs | "
                  "load |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in pipes:
            m = r["machine"]
            lines.append(f"| {r['data']} | {r['images']} | {r['size']} | {r['naive_img_s']} | {r['first_epoch_img_s']} "
                         f"| {r['cached_img_s']} | {r['decode_limit_img_s']} | {r.get('decode_resize_limit_img_s', '-')} "
                         f"| {r['first_epoch_vs_decode_limit']} | {r['cached_vs_decode_limit']} "
                         f"| {r.get('first_epoch_vs_decode_resize_limit', '-')} | {m['cpu_count']} "
                         f"| {m.get('load_average_1min', '-')} |")
        lines += ["", "Rates are the best of the runs the JSON lists (`repeats`).", ""]
        loaders = [r for r in pipes if "loader_first_epoch_img_s" in r]
        if loaders:
            lines += ["Without TensorFlow: `agegender.data.loader.Batches` (numpy + Pillow, worker processes), the same "
                      "files, epochs and augmentation (images/s):", "",
                      "| data | images | size | workers | first epoch | cached epoch | tf.data first | tf.data cached |",
                      "|---|---|---|---|---|---|---|---|"]
            lines += [f"| {r['data']} | {r['images']} | {r['size']} | {r['loader_workers']} | "
                      f"{r['loader_first_epoch_img_s']} | {r['loader_cached_img_s']} | {r['first_epoch_img_s']} | "
                      f"{r['cached_img_s']} |" for r in loaders]
            lines.append("")
        lines += [
                  "CPU time per image (µs, all threads; less sensitive to other load than the rates above), and the "
                  "targets' ratios in CPU time:", "",
                  "| data | images | size | decode limit | decode + resize limit | first epoch | cached epoch | "
                  "limit/first (CPU) | limit/cached (CPU) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in pipes:
            c = r.get("cpu_us_per_img")
            ratios = r.get("cpu_time_ratios", {})
            if c:
                lines.append(f"| {r['data']} | {r['images']} | {r['size']} | {c['decode_limit']} | "
                             f"{c['decode_resize_limit']} | {c['first_epoch']} | {c['cached']} | "
                             f"{ratios.get('decode_limit_vs_first_epoch', '-')} | "
                             f"{ratios.get('decode_limit_vs_cached', '-')} |")
        lines.append("")
    scales = [r for r in results if r["benchmark"] == "scale"]
    for r in scales:
        lines += [f"## Cost growth ({r['source']} layout, generated faces, {r['size']} px)", "",
                  "| images | audit (s) | TFDS prepare (s) | first epoch from TFDS (s) | audit ms/img | prepare ms/img "
                  "| epoch ms/img |", "|---|---|---|---|---|---|---|"]
        for row in r["rows"]:
            lines.append(f"| {row['n']:,} | {row['audit_s']} | {row['prepare_s']} | {row['first_epoch_s']} | "
                         f"{row['audit_ms_per_image']} | {row['prepare_ms_per_image']} | "
                         f"{row['first_epoch_ms_per_image']} |")
        lines += ["", "Linear fit `time = a + b·n` per phase:", "",
                  "| phase | a (s) | b (ms/img) | R² | per-image cost, largest n / smallest n |", "|---|---|---|---|---|"]
        for phase, fit in r["linearity"].items():
            lines.append(f"| {phase} | {fit.get('intercept_s', '-')} | {fit.get('slope_ms_per_image', '-')} | "
                         f"{fit.get('r2', '-')} | {fit['per_image_ratio_largest_vs_smallest']} |")
        lines.append("")
    memories = [r for r in results if r["benchmark"] == "memory"]
    for r in memories:
        lines += [f"## Peak memory, {r['n']:,} generated {r['source']} faces ({r['image_shape'][1]}x"
                  f"{r['image_shape'][0]} JPEG, read at {r['size']} px)", "",
                  "| process | peak RSS (MB) | over the baseline (MB) | seconds |", "|---|---|---|---|",
                  f"| import TensorFlow + TFDS only | {r['baseline_peak_mb']} | 0 | - |",
                  f"| TFDS prepare | {r['prepare_peak_mb']} | {r['prepare_growth_mb']} | {r['prepare_s']} |",
                  *([f"| one training epoch over the first {r['read_fifth_images']:,} rows | {r['read_fifth_peak_mb']} "
                     f"| {r['read_fifth_growth_mb']} | - |"] if "read_fifth_peak_mb" in r else []),
                  f"| one training epoch from TFDS, all {r['n']:,} | {r['read_peak_mb']} | {r['read_growth_mb']} | "
                  f"{r['read_s']} |", "",
                  f"For scale: all images decoded {r['decoded_mb']:.0f} MB, resized to {r['size']} px "
                  f"{r['resized_mb']:.0f} MB, JPEG files {r['raw_mb']:.0f} MB, TFRecords {r['prepared_mb']:.0f} MB, "
                  f"label table {r['label_table_mb']:.0f} MB.", ""]
    predicts = [r for r in results if r["benchmark"] == "predict"]
    if predicts:
        lines += ["## Predict, batch 1 on CPU (ms, median / p90)", "",
                  "| model | image | faces | detection | crop + preprocess + model | total | CPUs |",
                  "|---|---|---|---|---|---|---|"]
        for r in predicts:
            ms = {k: f"{r[k]['median']} / {r[k]['p90']}" for k in ("detect_ms", "predict_ms", "total_ms")}
            lines.append(f"| {r['model']} | {r['image']} | {r['faces_found']} | {ms['detect_ms']} | "
                         f"{ms['predict_ms']} | {ms['total_ms']} | {r['cpu_count']} |")
        lines.append("")
    for r in (r for r in results if r["benchmark"] == "precision_pilot"):
        lines += _pilot_markdown(r)
    trains = [r for r in results if r["benchmark"] == "train"]
    if trains:
        lines += ["## Training steps", "", "In memory: one batch fed again and again (the model's own speed); "
                  "pipeline: `build_dataset` batches of real images, augmented every step.", "",
                  "| model | input | batch | mode | ms/step in memory | images/s in memory | CPU ms/image | images/s "
                  "from the pipeline | input-bound | device | load at start / end | busy |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in trains:
            device = ", ".join(r["machine"]["gpus"]) or f"CPU ({r['machine']['cpu_count']} cores)"
            timing = r.get("timing") or {}
            load = (f"{timing.get('load_1min_start')} / {timing.get('load_1min_end')}" if timing else
                    f"- / {r['machine'].get('load_average_1min', '-')}")
            for row in r["rows"]:
                bound = {True: "yes", False: "no"}.get(row.get("input_bound"), "-")
                busy = {True: "**yes**", False: "no"}.get(row.get("busy", r.get("busy")), "not measured")
                lines.append(f"| {r['model']} | {r['input_size']} | {r['batch_size']} | {row['mode']} | "
                             f"{row['ms_per_step']} | {row['img_s']} | {row.get('cpu_ms_per_img', '-')} | "
                             f"{row.get('pipeline_img_s', '-')} | {bound} | {device} | {load} | {busy} |")
        lines += ["", "busy: other processes used over a quarter of the cores during the timed steps (where that "
                      "cannot be measured: the load average at the start exceeded half of them; `agegender.timing`); "
                      "such wall-clock rates are inflated. \"not measured\": a figure from before the load was "
                      "recorded.", ""]
    return "\n".join(lines)


def _checked_modes(modes) -> tuple[str, ...]:
    modes = tuple(modes)
    unknown = [m for m in modes if m not in TRAIN_MODES]
    if unknown or not modes:
        raise ValueError(f"unknown precision mode(s) {', '.join(unknown) or '(none given)'}; choose among "
                         f"{', '.join(TRAIN_MODES)}")
    return modes


def _modes(text: str) -> tuple[str, ...]:
    try:
        return _checked_modes(m.strip() for m in text.split(",") if m.strip())
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agegender.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pipeline", help="input pipeline vs the JPEG decode limit")
    p.add_argument("--data-dir", type=Path, help="folder of JPEG faces (default: the real UTKFace sample in "
                   "../shared/data when present, else generated faces)")
    p.add_argument("--n", type=int, default=3000, help="number of images (default 3000)")
    p.add_argument("--size", type=int, default=128, help="output side in pixels (default 128)")
    p.add_argument("--batch-size", type=int, default=64, help="batch size (default 64)")
    p.add_argument("--epochs", type=int, default=3, help="epochs over the files; the first is uncached (default 3)")
    p.add_argument("--repeats", type=int, default=3, help="fresh datasets, each read for --epochs epochs; the report "
                   "gives the best first and best later epoch (default 3)")
    p.add_argument("--json", type=Path, help="write the result as JSON here")
    t = sub.add_parser("train", help="training throughput per precision mode")
    t.add_argument("--model", default="dual_cnn", choices=TRAIN_MODELS, help="which model (default dual_cnn)")
    t.add_argument("--batch-size", type=int, default=32, help="batch size (default 32)")
    t.add_argument("--steps", type=int, default=10, help="timed steps after two warm-up steps (default 10)")
    t.add_argument("--size", type=int, help="input side (default: the paper's size for the model)")
    t.add_argument("--data-dir", type=Path, help="JPEG faces for the pipeline-fed run (default as for pipeline)")
    t.add_argument("--no-pipeline", action="store_true", help="time the in-memory batch only")
    t.add_argument("--repeats", type=int, default=1, help="interleaved rounds over the modes; each mode's best round is "
                   "reported (default 1)")
    t.add_argument("--modes", type=_modes, metavar="MODE[,MODE...]",
                   help=f"precision modes to time, among {', '.join(TRAIN_MODES)} (a Keras dtype policy, +xla for "
                        "jit_compile; default: float32, mixed_float16 and mixed_float16+xla on a GPU, float32 alone on "
                        "a CPU; on a CPU with AVX-512 BF16 try float32,float32+xla,mixed_bfloat16; float16 is "
                        "emulated on a CPU, so naming it there only checks the GPU path)")
    t.add_argument("--json", type=Path, help="write the result as JSON here")
    q = sub.add_parser("predict", help="batch-1 CPU latency of MTCNN detection plus prediction on one photograph")
    q.add_argument("--model", help="run folder or .keras file (default: a small random CNN; detection dominates)")
    q.add_argument("--repeats", type=int, default=10, help="timed repetitions after two warm-up ones (default 10)")
    q.add_argument("--json", type=Path, help="write the result as JSON here")
    c = sub.add_parser("scale", help="audit, TFDS prepare and first-epoch time for 1k, 5k, 20k generated faces")
    c.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 20000], help="numbers of faces "
                   "(default 1000 5000 20000)")
    c.add_argument("--source", default="utkface", choices=("utkface", "adience", "celeba", "imdb_wiki"),
                   help="generated dataset layout (default utkface)")
    c.add_argument("--json", type=Path, help="write the result as JSON here")
    m = sub.add_parser("memory", help="peak memory of TFDS prepare and of one training epoch over generated "
                       "CelebA faces, each in a fresh process")
    m.add_argument("--n", type=int, default=50000, help="number of faces (default 50000)")
    m.add_argument("--source", default="celeba", choices=("utkface", "adience", "celeba", "imdb_wiki"),
                   help="generated dataset layout (default celeba)")
    m.add_argument("--json", type=Path, help="write the result as JSON here")
    o = sub.add_parser("pilot", help="compare runs of one protocol at two precisions and several seeds (issue 17)")
    o.add_argument("roots", nargs="+", type=Path, help="the --out folders of the runs (each holds runs/)")
    o.add_argument("--json", type=Path, help="write the result as JSON here")
    r = sub.add_parser("report", help="write a markdown table from benchmark JSON files")
    r.add_argument("files", nargs="+", type=Path, help="JSON files written by pipeline/train")
    r.add_argument("--out", type=Path, required=True, help="markdown file to write")
    args = parser.parse_args(argv)

    from agegender import atomic
    from agegender.errors import DataError

    from agegender.timing import measured, snapshot

    started = snapshot()
    try:
        if args.command == "report":
            results = [json.loads(f.read_text()) for f in sorted(args.files)]
            atomic.write_text(args.out, markdown(results))
            print(f"[bench] {args.out}")
            return 0
        if args.command == "pipeline":
            result = bench_pipeline(args.data_dir, n=args.n, size=args.size, batch=args.batch_size, epochs=args.epochs,
                                    repeats=args.repeats)
            print(f"[bench] {result['images']} {result['data']} images at {result['size']} px (images/s): "
                  f"naive PIL {result['naive_img_s']}, first epoch {result['first_epoch_img_s']}, cached "
                  f"{result['cached_img_s']}, decode limit {result['decode_limit_img_s']}; first/limit "
                  f"{result['first_epoch_vs_decode_limit']} (target 0.9), cached/limit "
                  f"{result['cached_vs_decode_limit']} (target 3); numpy loader ({result['loader_workers']} workers) "
                  f"first epoch {result['loader_first_epoch_img_s']}, cached {result['loader_cached_img_s']}")
        elif args.command == "pilot":
            result = precision_pilot(args.roots)
            for s in result["spreads"]:
                print(f"[bench] {s['network']} {s['metric']}: between seeds {s['max_between_seeds']}, between "
                      f"precisions {s['max_between_precisions']}")
        elif args.command == "scale":
            from agegender.bench_scale import measure_scale

            result = {"benchmark": "scale", **measure_scale(args.sizes, source=args.source),
                      "machine": machine_facts()}
            for row in result["rows"]:
                print(f"[bench] n={row['n']:,}: audit {row['audit_s']} s, prepare {row['prepare_s']} s, first epoch "
                      f"{row['first_epoch_s']} s")
        elif args.command == "memory":
            from agegender.bench_scale import measure_memory

            result = {"benchmark": "memory", **measure_memory(args.n, source=args.source), "machine": machine_facts()}
            print(f"[bench] {result['n']:,} {result['source']} faces: peak memory preparing {result['prepare_peak_mb']} "
                  f"MB, reading {result['read_peak_mb']} MB (a process importing TensorFlow only: "
                  f"{result['baseline_peak_mb']} MB); all images decoded would take {result['decoded_mb']:.0f} MB")
        elif args.command == "predict":
            from agegender.bench_predict import measure_latency

            result = {"benchmark": "predict", **measure_latency(args.model, repeats=args.repeats)}
            print(f"[bench] predict on {result['image']} ({result['faces_found']} face): detection "
                  f"{result['detect_ms']['median']} ms, crop + preprocess + model {result['predict_ms']['median']} ms, "
                  f"total {result['total_ms']['median']} ms (medians, batch 1, CPU)")
        else:
            result = bench_train(args.model, batch=args.batch_size, steps=args.steps, size=args.size,
                                 data_dir=args.data_dir, pipeline=not args.no_pipeline, modes=args.modes,
                                 repeats=args.repeats)
            for row in result["rows"]:
                piped = (f"; from the pipeline {row['pipeline_img_s']} images/s (input-bound: "
                         f"{'yes' if row['input_bound'] else 'no'})" if "pipeline_img_s" in row else "")
                print(f"[bench] {args.model} {row['mode']}: {row['ms_per_step']} ms/step, {row['img_s']} images/s in "
                      f"memory, {row['cpu_ms_per_img']} CPU ms/image{piped}")
            if "note" in result:
                print(f"[bench] {result['note']}")
            if result.get("warning"):
                print(f"[bench] WARNING: {result['warning']}", file=sys.stderr)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if "timing" not in result and args.command != "pilot":  # every measurement says the load it saw (agegender.timing)
        result["timing"] = measured(started, snapshot())
        result["busy"] = result["timing"]["busy"]
        if result["busy"]:
            result["warning"] = result["timing"]["warning"]
            print(f"[bench] WARNING: {result['warning']}", file=sys.stderr)
    if args.json:
        atomic.write_json(args.json, result)
        print(f"[bench] {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
