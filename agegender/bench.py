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
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from agegender.bench_pipeline import (  # noqa: E402,F401
    ROOT, TARGETS, _cpu_seconds, _decode_pass, _files, _loader_passes, _naive, _pipeline_passes, _timed,
    bench_pipeline, default_images, gpus, machine_facts)
from agegender.bench_train import (  # noqa: E402,F401
    _TRAIN_ENTRIES, CPU_MODES, GPU_MODES, TRAIN_MODELS, TRAIN_MODES, _checked_modes, _same_batch, _train_model,
    bench_train, mode_policy)


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
