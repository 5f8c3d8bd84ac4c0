"""The training-throughput benchmark per precision mode (``bench train``); re-exported by :mod:`agegender.bench`."""

from __future__ import annotations

from pathlib import Path

from agegender.bench_pipeline import ROOT, _files, default_images, gpus, machine_facts


TRAIN_MODELS = ("levi_multitask", "dual_cnn", "xception_transfer", "efficientnet_b4", "dey_mobilenet", "dey_transformer",
                "dey_xception")
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
    "dey_xception": ("dey_aggarwal/xception", {"weights": None}, 224),
}


def _train_model(name: str, size: int | None):
    """A registered model of the suite, its declared heads (:mod:`agegender.heads`) by output name, and its input
    size."""
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
    return model, heads, size


def _label_shape(spec):
    """The random label a benchmark step feeds an output: an int (a class index below it) or a float array shape."""
    return spec.units if spec.encoding == "sparse" else (spec.units,)


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
        model, heads, size_used = _train_model(name, size)
        shapes = {task: _label_shape(spec) for task, spec in heads.items()}
        # TensorFlow compiles with XLA only when asked; JAX always does ("auto"), PyTorch only when asked
        model.compile(optimizer=keras.optimizers.Adam(1e-4), loss={task: spec.loss for task, spec in heads.items()},
                      jit_compile=True if jit else (False if backend == "tensorflow" else "auto"))
        x = rng.uniform(0, 255, (batch, size_used, size_used, 3)).astype("float32")
        y = {task: rng.integers(0, shape, batch) if isinstance(shape, int) else rng.uniform(0, 1, (batch, *shape))
             for task, shape in shapes.items()}
        timed_fit(model, _same_batch(x, y, 2), 2)  # trace and compile
        images = None
        if files:
            import pandas as pd

            from agegender.data.pipeline import Augment, build_dataset

            frame = pd.DataFrame({"path": files, "file": [Path(f).name for f in files]})
            for spec in heads.values():  # each head reads its own column the way it declares (TaskSpec.target)
                classes = {"sparse": spec.units, "onehot": spec.units, "binary": 2}.get(spec.encoding)
                frame[spec.column] = rng.integers(0, classes, len(files)) if classes else rng.uniform(0, 1, len(files))
            targets = {task: spec.target() for task, spec in heads.items()}
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


def _checked_modes(modes) -> tuple[str, ...]:
    modes = tuple(modes)
    unknown = [m for m in modes if m not in TRAIN_MODES]
    if unknown or not modes:
        raise ValueError(f"unknown precision mode(s) {', '.join(unknown) or '(none given)'}; choose among "
                         f"{', '.join(TRAIN_MODES)}")
    return modes
