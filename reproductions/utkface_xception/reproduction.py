"""Dey & Aggarwal: the run (protocol record, one record per backbone, figures, tables) and its command line."""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path

import numpy as np

from agegender.cli import add_run_arguments, run_main
from agegender.errors import TrainingDiverged
from reproductions.utkface_xception.config import (BACKBONE_ORDER, PAPER, REPRODUCTION, SMOKE_OUT, SPLIT_TABLES,
                                                   DeyExperiment, image_size, parse_weights, smoke)
from reproductions.utkface_xception.figures import draw_figures
from reproductions.utkface_xception.paper import (build_model, deviations, evaluate, experiment_config,
                                                  experiment_name, load_split, make_datasets, model_cells,
                                                  protocol_cells, protocol_name, record_deviations, result_cells,
                                                  table_row)

# ----------------------------------------------------------------------------------------------
# the run


def _out_paths(out) -> dict:
    from agegender.records import DEFAULT_RUNS_DIR

    if out is None:
        root = DEFAULT_RUNS_DIR.parent
        return {"runs": DEFAULT_RUNS_DIR, "tables": root / "tables", "readme": root / "README.md",
                "figures": root / "figures"}
    out = Path(out)
    return {"runs": out / "runs", "tables": out / "tables", "readme": out / "README.md", "figures": out / "figures"}


def _relative_paths(files: dict, root) -> dict:
    """``files`` ({name: path}) relative to the output root ``root``, for a record (no absolute paths)."""
    root = Path(root).resolve()
    out = {}
    for key, value in files.items():
        path = Path(value).resolve()
        out[key] = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name
    return out


def preprocessing(exp: DeyExperiment, size: int, data_kind: str):
    """How ``python -m agegender predict`` feeds a face to the model: 0-255 pixels (the model scales them)."""
    from agegender.preprocess import Head, Preprocessing, face_preset

    return Preprocessing(input_size=size, pixel_scale=1.0, face=face_preset(data_kind, "utkface"),
                         heads={"age": Head.age_sigmoid(exp.max_age), "gender": Head.gender_softmax(),
                                "race": Head.race_softmax("ethnicity")})


def run_backbone(exp: DeyExperiment, split, datasets: dict, *, paths: dict, run_id: str, data: dict,
                 precision: str, verbose=2, log=print, fresh: bool = False, deterministic: bool = False,
                 strategy: str = "default") -> dict:
    """Train, checkpoint, reload and evaluate one backbone; write its record and figures.

    A complete record of the same command is read back instead of trained again (``fresh``
    trains again); an interrupted one resumes after its last completed epoch. ``strategy``
    (:mod:`agegender.distribute`): the model is built and compiled under its scope.
    """
    import keras

    from agegender.distribute import make_strategy, strategy_config
    from agegender.records import RunRecorder
    from agegender.training import seed_everything, train

    size = image_size(exp)
    keras.backend.clear_session()
    seed_everything(exp.seed, deterministic)  # each backbone independent of which others run
    distribution = make_strategy(strategy)
    model = build_model(exp, size, distribution)
    encoder = {}
    if exp.backbone == "transformer":
        layer = model.get_layer("transformer").get_layer("transformer_encoder")
        encoder = {k: layer.get_config()[k] for k in ("num_blocks", "d_model", "num_heads", "ff_dim", "dropout")}
    config = {**experiment_config(exp), "image_size": size, "row": table_row(exp), "precision_policy": precision,
              "optimizer": "RMSprop", "losses": {"age": "mse", "ethnicity": "categorical_crossentropy",
                                                 "gender": "categorical_crossentropy"},
              "parameters": int(model.count_params()), "deterministic": bool(deterministic),
              "strategy": strategy_config(strategy, distribution, exp.batch_size, flag=None),
              **({"transformer_encoder": encoder} if encoder else {})}
    recorder = RunRecorder(REPRODUCTION, experiment_name(exp), config=config, seed=exp.seed, data=data, paper=PAPER,
                           out=paths["runs"], run_id=run_id, resume=not fresh,
                           preprocessing=preprocessing(exp, size, data["kind"]), deviations=record_deviations(exp))
    if recorder.complete:
        record = recorder.record
        log(f"[dey] {table_row(exp)}: complete record found ({recorder.record_path}); not trained again "
            "(--fresh trains again)")
        return {"exp": exp, "record": recorder.record_path, "metrics": record["metrics"], "cells": record["cells"],
                "figures": record.get("figures", {}), "history": record["history"],
                "seconds": record["metrics"].get("training", {}).get("seconds")}
    split.save_manifest(recorder.run_dir / "split.csv")
    log(f"[dey] training {table_row(exp)}: {size}x{size}, {exp.epochs} epoch(s), batch {exp.batch_size}, "
        f"{datasets['n_train']} training faces, weights {exp.weights}, preprocess {exp.preprocess}")
    start = time.perf_counter()
    info: dict = {}
    history = train(model, datasets["train"], datasets["val"], epochs=exp.epochs, recorder=recorder,
                    monitor=exp.monitor, verbose=verbose, info=info)
    seconds = info.get("seconds", time.perf_counter() - start)  # summed over the processes of a resumed run
    scores = [h.get(exp.monitor, math.inf) for h in history]
    finite = [s for s in scores if math.isfinite(s)]
    best_epoch = int(np.argmin([s if math.isfinite(s) else math.inf for s in scores])) + 1 if finite else None
    if recorder.model_path.is_file():  # Sec. 4.2: the checkpoint with the lowest validation loss
        evaluated = keras.saving.load_model(recorder.model_path, safe_mode=True)
        which = f"checkpoint of epoch {best_epoch} (lowest {exp.monitor})"
    else:  # no finite validation loss: no checkpoint was written
        evaluated = model
        which = "last weights (no checkpoint: the validation loss was never finite)"
    metrics = evaluate(evaluated, datasets, exp)
    metrics["training"] = {"seconds": seconds, "epochs": len(history), "best_epoch": best_epoch,
                           "evaluated_weights": which,
                           "last_epoch": history[-1] if history else {}}
    notes = "; ".join(deviations(exp, size))
    cells = result_cells(exp, metrics, notes) + model_cells(exp, evaluated, history, notes)
    figures = draw_figures(exp, evaluated, history, metrics, datasets,
                           paths["figures"] / REPRODUCTION / run_id / experiment_name(exp))
    recorder.finish(metrics, [dict(c) for c in cells], figures=_relative_paths(figures, paths["figures"].parent))
    test = metrics["test"]
    log(f"[dey] {table_row(exp)}: {seconds:.1f} s, {len(history)} epoch(s), best {best_epoch}; test loss "
        f"{test['loss']:.3f}, age MAE {test['age_mae']:.3f} ({test['age_mae_years']:.1f} y), ethnicity "
        f"{test['ethnicity_accuracy']:.3f}, gender {test['gender_accuracy']:.3f}")
    del model, evaluated
    keras.backend.clear_session()
    return {"exp": exp, "record": recorder.record_path, "metrics": metrics, "cells": cells, "figures": figures,
            "history": history, "seconds": seconds}


def run(data_dir, exp: DeyExperiment, *, backbones=None, out=None, data_kind_override: str | None = None,
        verbose=2, log=print, fresh: bool = False, deterministic: bool = False, strategy: str = "default",
        tfds_dir=None) -> dict:
    """Run the reproduction for ``backbones`` (default ``exp.backbone``); return records, metrics and cells.

    Rerunning the same command resumes it (:mod:`agegender.records`): backbones with a complete
    record are read back, an interrupted one continues after its last completed epoch; ``fresh``
    starts a new run. ``deterministic`` turns on TensorFlow's op determinism. ``strategy``:
    ``default``, ``mirrored`` or ``multiworker`` (:mod:`agegender.distribute`; the paper's batch of
    16 is the global batch, split over the replicas; RMSprop's learning rate is unchanged).
    ``tfds_dir``: read the prepared TFDS data there instead of the raw folder ``data_dir``.
    """
    import datetime as _dt

    from agegender.data.provenance import data_kind

    backbones = list(backbones or [exp.backbone])
    t0 = time.time()
    from agegender.distribute import start_early

    start_early(strategy)  # a multi-worker strategy must exist before TensorFlow runs anything
    paths = _out_paths(out)
    from agegender import atomic

    for key in ("runs", "tables", "figures"):  # a read-only output folder stops the run now, not after training
        atomic.check_writable(paths[key], flag="--out")
    atomic.check_writable(paths["readme"].parent, flag="--out")
    samples, frame, split = load_split(data_dir, exp, tfds_dir)  # a DataError here stays one line, before TensorFlow
    data_root = data_dir if tfds_dir is None else samples.root

    from agegender.distribute import make_strategy, strategy_config
    from agegender.models.backbones import check_weights, get_backbone
    from agegender.records import RunRecorder
    from agegender.training import configure_precision
    from results.tables import generate

    exps = []
    for name in backbones:
        get_backbone(name)  # UnknownBackboneError lists the known names
        exps.append(dataclasses.replace(exp, backbone=name))
    for e in exps:  # fail before training anything when weights cannot be had
        size = image_size(e)
        check_weights(e.backbone, e.weights, (size, size, 3))

    kind = data_kind_override or data_kind(data_root, "utkface", len(frame))
    counts = split.counts()
    unusable = sum(1 for s in samples.skipped if s["reason"].startswith("image not usable"))
    log(f"[dey] {len(frame)} faces from {tfds_dir or data_dir} ({kind}); {len(samples.skipped)} file(s) skipped "
        f"({unusable} image(s) training cannot decode; the record's protocol run lists them); "
        f"{split.info.get('aged_10_65')} aged 10-65; split {counts} (paper {split.info.get('paper_counts')}); "
        + ("byte-identical files kept in one split "
           f"({split.info['duplicates']['groups_that_crossed']} group(s) moved, "
           f"{split.info['duplicates']['rows_moved']} file(s))" if exp.keep_duplicates_together else
           "byte-identical files split as the paper does"))
    distribution = make_strategy(strategy)
    # the paper's batch of 16 is the global batch: an uneven split over the replicas fails here, before training
    strategy_info = strategy_config(strategy, distribution, exp.batch_size, flag=None)
    if strategy_info["replicas"] > 1:
        log(f"[dey] {strategy} strategy: {strategy_info['replicas']} replicas, global batch {exp.batch_size} = "
            f"{strategy_info['per_replica_batch']} per replica; learning rate unchanged (RMSprop 1e-3)")
    precision = configure_precision(exp.precision)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    from agegender.data.provenance import describe_data, relative_data_path

    # no absolute path: the folder relative to a data root, with a fingerprint of its files (provenance)
    data = {"kind": kind, **describe_data("utkface", data_root, fingerprint=tfds_dir is None),
            "images_read": len(samples.frame) + unusable, "images_used": len(frame),
            "files_skipped_by_reader": len(samples.skipped), "images_unusable": unusable,
            "names_repaired": len(samples.repaired), "aged_10_65": len(split.frame), "counts": counts,
            "paper_counts": split.info.get("paper_counts"),
            "duplicates_kept_together": bool(exp.keep_duplicates_together)}
    if tfds_dir is not None:
        data["prepared"] = relative_data_path(tfds_dir)

    protocol = RunRecorder(REPRODUCTION, protocol_name(exp),
                           config={**experiment_config(exp), "backbones": backbones,
                                   "deterministic": bool(deterministic), "strategy": strategy_info},
                           seed=exp.seed, data=data, paper=PAPER, out=paths["runs"], resume=not fresh,
                           new_run_id=f"{stamp}-s{exp.seed}", deviations=record_deviations(exp))
    run_id = protocol.run_id
    split.save_manifest(protocol.run_dir / "split.csv")
    p_cells = protocol_cells(samples, frame, split, exp)
    protocol.finish({"split": {"counts": counts, "paper_counts": split.info.get("paper_counts"),
                               "duplicates": split.info.get("duplicates")},
                     "images_skipped": samples.skipped[:1000]},
                    [dict(c) for c in p_cells])

    results, failed, skipped, by_size = {}, {}, [], {}
    for e in exps:
        size = image_size(e)
        if size not in by_size:
            by_size.clear()  # one cached set of datasets at a time
            by_size[size] = make_datasets(split, e, size, skipped)
        try:
            results[e.backbone] = run_backbone(e, split, by_size[size], paths=paths, run_id=run_id, data=data,
                                               precision=precision, verbose=verbose, log=log, fresh=fresh,
                                               deterministic=deterministic, strategy=strategy)
        except TrainingDiverged as err:  # its record is marked failed; the other backbones still run
            failed[e.backbone] = str(err)
            log(f"[dey] {table_row(e)}: {err}")
    summary = generate(paths["runs"], paths["tables"], paths["readme"])
    all_cells = list(p_cells) + [c for r in results.values() for c in r["cells"]]
    return {"run_id": run_id, "kind": kind, "counts": counts, "split": split,
            "records": {"protocol": protocol.record_path, **{k: r["record"] for k, r in results.items()}},
            "metrics": {k: r["metrics"] for k, r in results.items()},
            "rows": {k: table_row(r["exp"]) for k, r in results.items()}, "failed": failed,
            "figures": {k: r["figures"] for k, r in results.items()}, "cells": all_cells,
            "pipeline_skipped": skipped, "tables_dir": paths["tables"], "readme": paths["readme"],
            "figures_dir": paths["figures"] / REPRODUCTION / run_id, "tables": summary["tables"],
            "seconds": time.time() - t0}


# ----------------------------------------------------------------------------------------------
# printing


TABLE_COLUMNS = (("Total loss", "Total"), ("Age loss", "Age"), ("Ethnicity loss", "Eth."), ("Gender loss", "Gen."),
                 ("Age MAE", "Age MAE"), ("Ethnicity Accuracy", "Eth. acc"), ("Gender Accuracy", "Gen. acc"),
                 ("Age MAE (years)", "MAE (y)"))


def format_tables(cells: list[dict]) -> str:
    """Tables 1-3 of this run: each reproduced row, then the paper's row for the same backbone."""
    from results.catalogue import load_published

    pub = load_published(PAPER)
    published = {(t, r, c): v for t, r, c, v in zip(pub["table"], pub["row"], pub["column"], pub["value"])}
    ours = {(c["table"], c["row"], c["column"]): c["value"] for c in cells}
    names = {"train": "training", "val": "validation", "test": "test"}
    lines = []
    for split, table in SPLIT_TABLES.items():
        rows = list(dict.fromkeys(r for (t, r, _) in ours if t == table))
        if not rows:
            continue
        header = [f"{table} ({names[split]})", ""] + [short for _, short in TABLE_COLUMNS]
        body = []
        for row in rows:
            body.append([row, "this run"] + [f"{ours[(table, row, c)]:.3f}" if (table, row, c) in ours else ""
                                             for c, _ in TABLE_COLUMNS])
            paper_row = row.split(" (")[0]
            body.append(["", "paper"] + [str(published.get((table, paper_row, c), "")) for c, _ in TABLE_COLUMNS])
        widths = [max(len(line[i]) for line in [header] + body) for i in range(len(header))]
        lines += ["  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip() for line in [header] + body] + [""]
    return "\n".join(lines).rstrip()


# ----------------------------------------------------------------------------------------------
# command line


def _parser() -> argparse.ArgumentParser:
    default = DeyExperiment()
    parser = argparse.ArgumentParser(
        prog="python -m reproductions.utkface_xception",
        description=__doc__.split("\n\n")[0] + " Trains the multi-task model on each chosen backbone, writes one "
                    "run record per backbone, the figures, and Tables 1-3 regenerated next to the published values.",
        epilog="Decisions, runtime and expected figures: python -m pydoc reproductions.utkface_xception")
    parser.add_argument("--data-dir", default=None, metavar="DIR",
                        help="UTKFace folder (age_gender_race_timestamp.jpg.chip.jpg files, searched recursively); "
                             "faces aged 10-65 are kept and split 9,115 : 3,907 : 5,581 (Sec. 4.1); required unless "
                             "--tfds-dir is given")
    parser.add_argument("--backbone", choices=(*BACKBONE_ORDER, "all"), default=default.backbone,
                        help=f"backbone under the three heads (default {default.backbone}, the paper's best): vgg19, "
                             "resnet50, inception_v3, xception, mobilenet (keras.applications, whole and trainable), "
                             "transformer (MobileNet feature map -> tokens -> self-attention encoder blocks), or all "
                             "six in the paper's order (one run record each)")
    parser.add_argument("--weights", default=None, metavar="imagenet|none|PATH",
                        help="backbone initialisation: imagenet (default; Keras downloads the no-top ImageNet file, "
                             "needs network; offline, the error names the file to copy), none (from scratch; the "
                             "table row says so; the default with --smoke), or PATH to a local .h5: Keras's no-top "
                             "ImageNet file of that backbone (for transformer: MobileNet's), or a .weights.h5 saved "
                             "from the backbone; a PATH needs a single --backbone")
    parser.add_argument("--preprocess", choices=("paper", "backbone"), default=default.preprocess,
                        help="pixel scaling inside the model: paper = divide by 255 (Sec. 3.2, default); backbone = "
                             "the backbone's own keras.applications preprocess_input (caffe for VGG19/ResNet50, "
                             "[-1, 1] for the rest); its rows are labelled 'backbone preprocess_input' so the ablation "
                             "of VGG19/ResNet50 at chance shows in the tables")
    parser.add_argument("--smoke", action="store_true",
                        help="check the whole path fast: 1 epoch, each backbone's smallest input (32 px; 71 Xception, "
                             "75 Inception v3, 64 transformer), a seeded subset of 160 faces, weights none unless "
                             "--weights is given; writes under build/smoke/utkface_xception unless --out is given; "
                             "cells are labelled SMOKE RUN")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="output root: records in DIR/runs, tables in DIR/tables, index DIR/README.md, figures in "
                             "DIR/figures (default: results/runs, results/tables, results/README.md, results/figures; "
                             "with --smoke build/smoke/utkface_xception)")
    parser.add_argument("--seed", type=int, default=default.seed, metavar="S",
                        help=f"seed of the split, the subset, the shuffling and the initial weights (default "
                             f"{default.seed})")
    add_run_arguments(parser,
                      fresh_help="start new runs; without it, rerunning the same command resumes its earlier run: "
                                 "backbones already complete are read back, an interrupted one continues after its "
                                 "last completed epoch", duplicates=True)
    return parser


def main(argv=None) -> int:
    """The command line; errors a user can fix are one ``error:`` line (:func:`agegender.cli.run_main`)."""
    return run_main(_main, argv)


def _main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.data_dir is None and args.tfds_dir is None:
        parser.error("--data-dir is required (or --tfds-dir)")
    backbones = list(BACKBONE_ORDER) if args.backbone == "all" else [args.backbone]
    weights = parse_weights(args.weights) if args.weights is not None else None
    if weights not in (None, "imagenet") and len(backbones) > 1:
        parser.error("--weights PATH fits one backbone: pass a single --backbone with it")
    exp = dataclasses.replace(DeyExperiment(), backbone=backbones[0], seed=args.seed, preprocess=args.preprocess,
                              keep_duplicates_together=args.keep_duplicates_together)
    if args.smoke:
        exp = smoke(exp)
    if args.weights is not None:
        exp = dataclasses.replace(exp, weights=weights)
    out = args.out if args.out is not None or not args.smoke else SMOKE_OUT
    result = run(args.data_dir, exp, backbones=backbones, out=out, fresh=args.fresh,
                 deterministic=args.deterministic, strategy=args.strategy, tfds_dir=args.tfds_dir)
    print()
    print(format_tables(result["cells"]))
    print()
    print(f"[dey] tables : {result['tables_dir']} (dey_aggarwal__table-1/2/3.md, *-per-class.md, section-*.md), "
          f"index {result['readme']}")
    print(f"[dey] figures: {result['figures_dir']}")
    for key, path in result["records"].items():
        print(f"[dey] record : {path}")
    print(f"[dey] done in {result['seconds']:.0f} s")
    for backbone, message in result["failed"].items():  # diverged runs: their records say failed
        print(f"error: {backbone}: {message}", file=sys.stderr)
    return 2 if result["failed"] else 0
