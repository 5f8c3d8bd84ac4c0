"""The GPU kit's entry point: train the suite's models on any Keras backend, without TensorFlow.

``make gpu-kit`` (:mod:`agegender.gpu_kit_build`) writes one folder with the project, the Keras wheels a
JAX image lacks and the UTKFace pack; its ``run.sh`` installs the missing wheels into a private
folder and calls, under ``KERAS_BACKEND=jax``::

    python -m agegender.gpu_kit run --data PACK --out OUT [--models speziali_dual,dey_mobilenet]
                                   [--precisions float32,mixed_float16] [--epochs 3]

For each model and precision (a Keras dtype policy): the model is built from scratch (no ImageNet
weights offline) and compiled with its paper's optimiser and losses; then

* **in memory**: ``train_on_batch`` on one batch of real faces, ``--steps`` times after two warm-up
  steps: the images/s of the model alone;
* **fit**: ``--epochs`` epochs of the paper's split (Speziali: 70/30 then 70/30; Dey & Aggarwal: ages
  10-65, 49/21/30 %) fed by :class:`agegender.data.loader.Batches` (the paper's augmentation, a uniform
  shuffle per epoch, worker processes): images/s of each epoch's training part (the first epoch
  includes compilation);
* **test**: the test split's age MAE, gender (and race) accuracy, computed here from the predictions,
  next to the baselines of predicting the training set's median age and majority classes; ``beyond
  chance`` says whether every task beats its baseline.

Writes ``OUT/records/<model>__<precision>.json`` (backend, devices, versions, data with its re-encoding,
split counts, settings, timings, metrics), ``OUT/throughput.{json,md}`` and ``OUT/results.md``. This is
a backend-neutral throughput and short-training check, not a reproduction: the reproductions
(``reproductions/``) run their papers' full protocols and become backend-neutral separately (issue
19/20). ``--models all`` names all nine networks the kit can train: Speziali's three
(``speziali_dual``, ``speziali_gender``, ``speziali_age``) and Dey & Aggarwal's six backbones
(``dey_vgg19``, ``dey_resnet50``, ``dey_inception_v3``, ``dey_xception``, ``dey_mobilenet``,
``dey_transformer``).

``python -m agegender.gpu_kit missing WHEELS_DIR`` prints the kit's wheels this interpreter lacks (what
``run.sh`` installs) and ``unbundle BUNDLE FOLDER`` writes out the kit's data; ``build`` and ``estimate``
are :mod:`agegender.gpu_kit_build`'s.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

from agegender.gpu_kit_models import (DEFAULT_MODELS, DEY_MAX_AGE, MODELS, PRECISIONS, KitModel,  # noqa: F401
                                      _augment, _split, _targets, build_model)

__all__ = ["MODELS", "DEFAULT_MODELS", "run_check", "main"]


def _same_batch(batch, steps: int):
    """A :class:`keras.utils.PyDataset` serving ``batch`` ``steps`` times (an epoch of the model alone)."""
    import keras

    class SameBatch(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=1, use_multiprocessing=False)

        def __len__(self):
            return steps

        def __getitem__(self, index):
            return batch

    return SameBatch()


class _Timer:
    """Wall seconds of each epoch's training part: from the epoch's start until its last step has finished (the
    validation that follows is not counted)."""

    def __init__(self):
        import keras

        timer = self

        class Callback(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                timer.start, timer.validation = time.perf_counter(), 0.0

            def on_test_begin(self, logs=None):
                # the steps run asynchronously (JAX): reading a weight the last step wrote waits for them to finish
                keras.ops.convert_to_numpy(self.model.trainable_variables[-1].value)
                timer.test_start = time.perf_counter()

            def on_test_end(self, logs=None):
                timer.validation += time.perf_counter() - timer.test_start

            def on_epoch_end(self, epoch, logs=None):
                timer.epochs.append(round(time.perf_counter() - timer.start - timer.validation, 3))

        self.epochs: list[float] = []
        self.callback = Callback()


def _metrics(spec: KitModel, outputs: dict, frame, train) -> dict:
    """Test metrics from the predictions, and the baselines of constant predictions from the training set."""
    import numpy as np

    out: dict = {}
    if "age" in spec.tasks:
        scale = DEY_MAX_AGE if spec.paper == "dey" else 1.0
        predicted = np.asarray(outputs["age"], dtype="float64").reshape(-1) * scale
        truth = frame["age"].to_numpy(dtype="float64")
        out["age_mae_years"] = round(float(np.mean(np.abs(predicted - truth))), 3)
        out["baseline_age_mae_years"] = round(float(np.mean(np.abs(np.median(train["age"]) - truth))), 3)
    for task, column in (("gender", "gender"), ("ethnicity", "race")):
        if task not in spec.tasks:
            continue
        truth = frame[column].to_numpy()
        known = truth >= 0
        predicted = np.argmax(np.asarray(outputs[task]), axis=-1)
        majority = train[column][train[column] >= 0].mode().iloc[0]
        out[f"{task}_accuracy"] = round(float(np.mean(predicted[known] == truth[known])), 4)
        out[f"baseline_{task}_accuracy"] = round(float(np.mean(truth[known] == majority)), 4)
    beats = [out["age_mae_years"] < out["baseline_age_mae_years"]] if "age_mae_years" in out else []
    beats += [out[f"{t}_accuracy"] > out[f"baseline_{t}_accuracy"] for t in ("gender", "ethnicity")
              if f"{t}_accuracy" in out]
    out["beyond_chance"] = bool(all(beats))
    return out


def run_check(data, out, *, models=DEFAULT_MODELS, precisions=("float32", "mixed_float16"), epochs: int = 3,
              steps: int = 20, seed: int = 0, max_images: int | None = None, input_size: int | None = None,
              batch_size: int | None = None, workers: int | None = None) -> list[dict]:
    """Train and time each of ``models`` at each of ``precisions`` on the UTKFace folder or pack ``data``; write
    the records and tables into ``out`` (module docstring) and return the records."""
    import keras

    from agegender import atomic
    from agegender.bench import machine_facts
    from agegender.data.audit import drop_unusable_images
    from agegender.data.loader import Batches, wrap
    from agegender.data.pack import pack_info
    from agegender.data.provenance import describe_data
    from agegender.data.utkface import read_utkface

    out = atomic.check_writable(out)
    samples = drop_unusable_images(read_utkface(data), require=True)
    data_entry = pack_info(samples) or describe_data("utkface", data)
    machine = machine_facts()
    records = []
    for name in models:
        spec = MODELS[name]
        split = _split(samples, spec, seed, max_images)
        size, batch = input_size or spec.input_size, batch_size or spec.batch_size
        targets = _targets(spec)
        parts = {p: split.part(p) for p in ("train", "val", "test")}
        common = dict(image_size=size, batch_size=batch, pixel_scale=1.0, seed=seed, workers=workers)
        for precision in precisions:
            keras.config.set_dtype_policy(precision)
            keras.utils.set_random_seed(seed)
            started = time.perf_counter()
            with Batches(parts["train"], targets, training=True, augment=_augment(spec), **common) as train, \
                    Batches(parts["val"], targets, **common) as val, Batches(parts["test"], targets, **common) as test:
                model = build_model(spec, size)
                timer = _Timer()
                history = model.fit(wrap(train), validation_data=wrap(val), epochs=epochs, shuffle=False, verbose=0,
                                    callbacks=[timer.callback])
                outputs = model.predict(wrap(test), verbose=0)
                workers_used = train.workers
                train.epoch = 0
                one = train[0]  # a full batch of real, augmented faces
            # the model alone: its compiled training step on one batch again and again (after the check: no effect on
            # the results above); fit returns Python floats, so the timing ends when the device is done
            memory = _same_batch(one, steps)
            model.fit(_same_batch(one, 1), epochs=1, shuffle=False, verbose=0)  # warm: compiled above, unless resized
            tick = time.perf_counter()
            loss = model.fit(memory, epochs=1, shuffle=False, verbose=0).history["loss"][-1]
            memory_rate = steps * len(one[0]) / (time.perf_counter() - tick)
            rates = [round(train.num_samples / s, 1) for s in timer.epochs]
            record = {
                "kind": "gpu-kit check (not a reproduction)", "model": name, "paper": spec.paper,
                "variant": spec.variant, "precision": precision, "backend": keras.backend.backend(),
                "machine": machine, "data": data_entry, "split": {p: len(f) for p, f in parts.items()},
                "protocol": spec.protocol, "input_size": size, "batch_size": batch, "epochs": epochs,
                "paper_epochs": spec.paper_epochs, "weights": "from scratch (no ImageNet weights offline)",
                "augmentation": dataclasses.asdict(_augment(spec)) if _augment(spec) else None,
                "throughput": {"in_memory_img_s": round(memory_rate, 1), "fit_img_s_per_epoch": rates,
                               "fit_img_s": max(rates[1:] or rates), "loader_workers": workers_used,
                               "first_epoch_includes_compilation": True},
                "last_in_memory_loss": round(float(loss), 5),
                "history": {k: [round(float(v), 5) for v in vs] for k, vs in history.history.items()},
                "test": _metrics(spec, outputs, parts["test"], parts["train"]), "seed": seed,
                "wall_s": round(time.perf_counter() - started, 1),
                "deviations": _deviations(spec, epochs, size, batch, max_images, data_entry)}
            atomic.write_json(out / "records" / f"{name}__{precision}.json", record)
            records.append(record)
            print(f"[gpu-kit] {name} {precision}: {record['throughput']['in_memory_img_s']} img/s in memory, "
                  f"{record['throughput']['fit_img_s']} img/s fit; test {record['test']}", flush=True)
    keras.config.set_dtype_policy("float32")
    write_tables(records, out)
    return records


def _deviations(spec: KitModel, epochs: int, size: int, batch: int, max_images, data_entry) -> list[str]:
    notes = [f"{epochs} epoch(s) without early stopping (paper: {spec.paper_epochs})",
             "from scratch: no ImageNet weights offline" if spec.paper == "dey" else
             "the paper's early stopping (patience 3) is not run"]
    if size != spec.input_size:
        notes.append(f"input {size} px (paper: {spec.input_size})")
    if batch != spec.batch_size:
        notes.append(f"batch {batch} (paper: {spec.batch_size})")
    if max_images:
        notes.append(f"a seeded subset of {max_images} faces")
    if data_entry.get("reencoded"):
        notes.append(f"images re-encoded as WebP q{data_entry['quality']} at {data_entry['size'] or 'native'} px "
                     f"(mean / p99 difference {data_entry['reencoding']['mean_abs']} / "
                     f"{data_entry['reencoding']['p99_abs']} grey levels)")
    return notes


def write_tables(records: list[dict], out) -> None:
    """``throughput.json``, ``throughput.md`` and ``results.md`` from the records."""
    from agegender import atomic

    out = Path(out)
    device = lambda r: ", ".join(r["machine"]["gpus"]) or f"CPU ({r['machine']['cpu_count']} cores)"  # noqa: E731
    rows = [{"model": r["model"], "precision": r["precision"], "input": r["input_size"], "batch": r["batch_size"],
             **{k: r["throughput"][k] for k in ("in_memory_img_s", "fit_img_s", "loader_workers")},
             "backend": r["backend"], "device": device(r)} for r in records]
    atomic.write_json(out / "throughput.json", rows)
    lines = ["# Throughput (images/s)", "", "Written by `python -m agegender.gpu_kit run`. In memory: `train_on_batch` "
             "on one batch, repeated; fit: training epochs fed by `agegender.data.loader` (best epoch after the "
             "first, which compiles). Models from scratch.", "",
             "| model | precision | input | batch | in memory | fit (loader) | loader workers | backend | device |",
             "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['precision']} | {r['input']} | {r['batch']} | {r['in_memory_img_s']} | "
              f"{r['fit_img_s']} | {r['loader_workers']} | {r['backend']} | {r['device']} |" for r in rows]
    atomic.write_text(out / "throughput.md", "\n".join(lines) + "\n")
    lines = ["# Short-training check (test split)", "", "Not a reproduction: a few epochs from scratch on the "
             "paper's split; baselines predict the training set's median age and majority classes.", "",
             "| model | precision | epochs | train / val / test | age MAE (baseline) | gender acc. (baseline) | "
             "race acc. (baseline) | beyond chance | data | deviations |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        t = r["test"]
        cell = lambda k: f"{t[k]} ({t['baseline_' + k]})" if k in t else "-"  # noqa: E731
        data = "re-encoded pack" if r["data"].get("reencoded") else "raw files"
        lines.append(f"| {r['model']} | {r['precision']} | {r['epochs']} | {r['split']['train']} / {r['split']['val']}"
                     f" / {r['split']['test']} | {cell('age_mae_years')} | {cell('gender_accuracy')} | "
                     f"{cell('ethnicity_accuracy')} | {'yes' if t['beyond_chance'] else 'no'} | {data} | "
                     f"{'; '.join(r['deviations'])} |")
    atomic.write_text(out / "results.md", "\n".join(lines) + "\n")


def _names(text: str) -> tuple[str, ...]:
    names = tuple(MODELS) if text == "all" else tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in MODELS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown model(s) {', '.join(unknown) or '(none)'}; choose among "
                                          f"{', '.join(MODELS)} or all")
    return names


def _precisions(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names or any(n not in PRECISIONS for n in names):
        raise argparse.ArgumentTypeError(f"precisions are among {', '.join(PRECISIONS)}, got {text!r}")
    return names


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agegender.gpu_kit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="train and time the kit's models on a UTKFace pack or folder (any Keras backend)")
    r.add_argument("--data", required=True, help="a UTKFace pack (python -m agegender.data pack) or raw folder")
    r.add_argument("--out", required=True, help="folder for records/, throughput.{json,md}, results.md")
    r.add_argument("--models", type=_names, default=DEFAULT_MODELS,
                   help=f"comma-separated, or all (default {','.join(DEFAULT_MODELS)}; known: {', '.join(MODELS)})")
    r.add_argument("--precisions", type=_precisions, default=("float32", "mixed_float16"),
                   help="Keras dtype policies, comma-separated (default float32,mixed_float16)")
    r.add_argument("--epochs", type=int, default=3, help="training epochs per model and precision (default 3)")
    r.add_argument("--steps", type=int, default=20, help="timed in-memory steps (default 20)")
    r.add_argument("--max-images", type=int, default=None, help="a seeded subset of the faces (default: all)")
    r.add_argument("--input-size", type=int, default=None, help="override every model's input side (quick checks)")
    r.add_argument("--batch-size", type=int, default=None, help="override every model's batch size")
    r.add_argument("--workers", type=int, default=None, help="loader processes (default: the cores less one)")
    r.add_argument("--seed", type=int, default=0)
    m = sub.add_parser("missing", help="print the kit's wheel files this interpreter lacks (run.sh installs them)")
    m.add_argument("wheels", help="the kit's wheels folder")
    u = sub.add_parser("unbundle", help="write the files of a kit's data bundle into a folder (run.sh does)")
    u.add_argument("bundle", help="the .bundle file")
    u.add_argument("folder", help="where its files go")
    b = sub.add_parser("build", help="write the kit folder (make gpu-kit; agegender.gpu_kit_build)")
    e = sub.add_parser("estimate", help="FLOPs per image of each model (XLA cost analysis on this CPU) and the "
                       "kit's full-protocol time on an H100/H200-class GPU (an estimate)")
    from agegender.gpu_kit_build import add_build_arguments, add_estimate_arguments

    add_build_arguments(b)
    add_estimate_arguments(e)
    args = parser.parse_args(argv)
    from agegender.errors import DataError

    try:
        if args.command == "missing":
            from agegender.gpu_kit_build import missing_wheels

            print(" ".join(missing_wheels(args.wheels)))
            return 0
        if args.command == "unbundle":
            from agegender.gpu_kit_build import unbundle

            print(f"[gpu-kit] {unbundle(args.bundle, args.folder):,} files in {args.folder}")
            return 0
        if args.command == "build":
            from agegender.gpu_kit_build import build_kit

            summary = build_kit(**{k: v for k, v in vars(args).items() if k != "command"})
            print(json.dumps(summary, indent=2, default=str))
            return 0
        if args.command == "estimate":
            from agegender.gpu_kit_build import estimate

            print(estimate(**{k: v for k, v in vars(args).items() if k != "command"}))
            return 0
        os.environ.setdefault("KERAS_BACKEND", "jax")
        run_check(args.data, args.out, models=args.models, precisions=args.precisions, epochs=args.epochs,
                  steps=args.steps, seed=args.seed, max_images=args.max_images, input_size=args.input_size,
                  batch_size=args.batch_size, workers=args.workers)
        print(f"[gpu-kit] {args.out}: records/, throughput.md, results.md")
        return 0
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
