"""Jørgensen on the shared runner: one record per fold and model, the fold summaries (Table 3's ± columns), the
model-build record (Tables 1-2), the command line.

Everything around the run (strategy, seeds, precision, records, resume-or-train, tables, the flags
every reproduction shares) is :mod:`agegender.experiment`'s; this module says what is Jørgensen's
own: the four models, the folds, how a fold is trained and evaluated, its cells and figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
from pathlib import Path

from agegender.experiment import Options, Reproduction
from reproductions.common import PaperReproduction
from reproductions.adience_levi.config import (EXPERIMENTS, MODELS, PAPER, REPRODUCTION, SMOKE_OUT, XCEPTION_NOTOP,
                                               Experiment, smoke)
from reproductions.adience_levi.figures import _fold_figure
from reproductions.adience_levi.paper import (CENTRE_NOTE, OVERSAMPLED_NOTE, _cell, _join, build_model,
                                              check_transfer_weights, compile_model, deviations, fold_split,
                                              load_adience, make_datasets, model_facts, portable_config,
                                              preprocessing, record_deviations, relative, table3_row)


def _folds(text: str) -> list[int]:
    try:
        folds = [int(f) for f in text.split(",") if f.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"folds must be comma-separated integers 0-4, got {text!r}") from None
    if not folds or any(f not in range(5) for f in folds) or len(set(folds)) != len(folds):
        raise argparse.ArgumentTypeError(f"folds must be distinct integers 0-4, got {text!r}")
    return folds


class Jorgensen(PaperReproduction, Reproduction):
    key, reproduction, Config, smoke_out = PAPER, REPRODUCTION, Experiment, SMOKE_OUT
    title = ("Jørgensen, Ringsted & Rajagopal (paper 001), Adience: 5-fold cross-validation of the reduced "
             "Levi-Hassner gender and age CNNs, the multi-task CNN and the multi-task Xception transfer model; one run "
             "record per fold and model, Tables 1-3 (see README.md).")
    epilog = ("examples:\n"
              "  python -m reproductions.adience_levi --describe\n"
              "  python -m reproductions.adience_levi --data-dir ../shared/data/adience --model multitask --folds 0,1\n"
              f"  python -m reproductions.adience_levi --data-dir DIR --model transfer --weights ~/Downloads/"
              f"{XCEPTION_NOTOP}\n"
              "  python -m reproductions.adience_levi --data-dir build/synth_adience --smoke --data-kind generated\n"
              "Decisions, runtime and expected figures: python -m pydoc reproductions.adience_levi")
    data_help = ("Adience folder: fold_0_data.txt ... fold_4_data.txt and aligned/ (required unless --describe or "
                 "--tfds-dir)")
    duplicates = True
    smoke_help = ("tiny run to check the whole path: 2 epochs, 64x64 crops of 72x72 images (71/79 for Xception), "
                  "batch 32, at most 200 rows per fold; cells are labelled SMOKE RUN")
    batch_help = "Sec. 3.4: 128"
    fresh_help = ("start new runs; by default rerunning the same command (same data, options and seed) resumes it: "
                  "folds with a complete record are read back, an interrupted fold continues after its last "
                  "completed epoch")

    def default(self) -> Experiment:
        return EXPERIMENTS["multitask"]

    def add_arguments(self, parser) -> None:
        parser.add_argument("--model", choices=(*MODELS, "all"), default="all",
                            help="which model(s) to train: gender, age, multitask, transfer (Xception) or all "
                                 "(default all, in that order)")
        parser.add_argument("--folds", type=_folds, default=[0, 1, 2, 3, 4],
                            help="comma-separated test folds to run (default 0,1,2,3,4); each trains on the others; "
                                 "fold k uses seed + k")
        parser.add_argument("--gamma", type=float, default=None,
                            help="weight of the gender loss in L = gamma*L_gender + (1-gamma)*L_age for the two-task "
                                 "models (default 0.5; another value gets its own Table 3 row)")
        parser.add_argument("--weights", default=None,
                            help="Xception weights for --model transfer/all: imagenet (default; Keras download, "
                                 f"needs network), none (from scratch, labelled so), or PATH to {XCEPTION_NOTOP}")
        parser.add_argument("--describe", action="store_true",
                            help="print the parameter counts of every model as JSON and exit (no data, no network)")
        parser.add_argument("--protocol", choices=("folds", "levi"), default="folds",
                            help="folds: the official fold files, validation drawn as --validation (default); levi: "
                                 "Levi & Hassner's per-fold train/val/test lists (needs --levi-splits)")
        parser.add_argument("--levi-splits", default=None,
                            help="folder with test_fold_is_0 ... test_fold_is_4 (Levi & Hassner's lists), for "
                                 "--protocol levi")
        parser.add_argument("--row-filter", choices=("joint", "task"), default="joint",
                            help="rows every model uses: joint = rows with m/f gender and a canonical age group, the "
                                 "one cleaned set of Sec. 2.1 (default); task = the rows valid for the model's own "
                                 "task (Levi & Hassner's per-task sets; single-task runs then get their own Table 3 "
                                 "rows)")
        parser.add_argument("--validation", choices=("users", "test"), default="users",
                            help="early-stopping set with --protocol folds: users = a subject-exclusive hold-out of "
                                 "the training folds' users (default); test = the test fold itself (optimistic)")
        parser.add_argument("--val-fraction", type=float, default=None,
                            help="share of the training images whose users are held out (default 0.1)")
        parser.add_argument("--no-oversample", action="store_true",
                            help="evaluate the centre crop only (the paper's Table 3), without Levi & Hassner's "
                                 "10-crop over-sampled accuracy of 'Table 3 (extra)'")

    def check_arguments(self, args, parser) -> None:
        if not args.describe and not args.data_dir and not args.tfds_dir:
            parser.error("--data-dir is required (or pass --tfds-dir, or --describe)")
        if args.protocol == "levi" and not args.describe and not args.data_dir:
            parser.error("--protocol levi needs --data-dir (the folder holding aligned/, whose images the lists name)")
        if args.protocol == "levi" and args.keep_duplicates_together:
            parser.error("--keep-duplicates-together applies to --protocol folds (Levi & Hassner's lists are fixed)")
        if args.gamma is not None and not 0.0 <= args.gamma <= 1.0:
            parser.error(f"--gamma must be within 0-1, got {args.gamma}")
        if args.val_fraction is not None and not 0.0 < args.val_fraction < 1.0:
            parser.error(f"--val-fraction must be within (0, 1), got {args.val_fraction}")
        if args.epochs is not None and args.epochs < 1 or args.batch_size is not None and args.batch_size < 1:
            parser.error("--epochs and --batch-size must be positive")

    def before_run(self, args) -> int | None:
        if args.describe:
            described, _ = model_facts()
            print(json.dumps(described, indent=2))
            return 0
        return None

    def smoke(self, cfg: Experiment) -> Experiment:
        return smoke(cfg)

    def configure(self, args) -> list[Experiment]:
        """The selected experiments with the command line's changes (never a second copy of a config)."""
        names = MODELS if args.model == "all" else (args.model,)
        chosen = []
        for name in names:
            exp = EXPERIMENTS[name]
            if args.smoke:
                exp = smoke(exp)
            changes = {"seed": args.seed, "validation": args.validation, "oversample": not args.no_oversample,
                       "deterministic": bool(getattr(args, "deterministic", False)),
                       "row_filter": getattr(args, "row_filter", "joint")}
            for field, value in (("gamma", args.gamma), ("val_fraction", args.val_fraction)):
                if value is not None:
                    changes[field] = value
            if exp.architecture == "xception" and args.weights is not None:
                changes["weights"] = None if args.weights.lower() == "none" else (
                    "imagenet" if args.weights.lower() == "imagenet" else os.path.expanduser(args.weights))
            chosen.append(self.common(dataclasses.replace(exp, **changes), args))
        return chosen

    def inputs(self, args) -> dict:
        return {"data_dir": args.data_dir, "folds": args.folds, "protocol": args.protocol,
                "levi_splits": args.levi_splits}

    def check(self, exps, options, **inputs) -> None:
        for exp in exps:  # fail before reading data, training or writing anything
            if exp.architecture == "xception":
                check_transfer_weights(exp.weights)

    def execute(self, run, exps, *, data_dir=None, folds=(0, 1, 2, 3, 4), protocol="folds", levi_splits=None,
                build_record=True) -> dict:
        return _execute(run, list(exps), data_dir=data_dir, folds=list(folds), protocol=protocol,
                        levi_splits=levi_splits, build_record=build_record)

    def report(self, result: dict) -> int:
        _print_summary(result["summaries"], result["kind"], len(result["folds"]))
        return super().report(result)


JORGENSEN = Jorgensen()


def parse_args(argv=None) -> argparse.Namespace:
    """The parsed command line (usage errors exit with status 2)."""
    parser = JORGENSEN.parser()
    args = parser.parse_args(argv)
    JORGENSEN.check_arguments(args, parser)
    return args


def experiments_from_args(args) -> list[Experiment]:
    """The selected experiments with the command line's overrides (never a second copy of a config)."""
    return JORGENSEN.configure(args)


def main(argv=None) -> int:
    """``python -m reproductions.adience_levi``; errors a user can fix are one ``error:`` line."""
    return JORGENSEN.main(argv)


def run(exps, *, data_dir=None, folds=(0, 1, 2, 3, 4), protocol: str = "folds", levi_splits=None, out=None,
        data_kind_override: str | None = None, verbose=2, log=print, fresh: bool = False, deterministic: bool = False,
        strategy: str = "default", tfds_dir=None, build_record: bool = True) -> dict:
    """Cross-validate each experiment of ``exps`` (or one) over ``folds``; return records, summaries, paths.

    A rerun of the same command resumes it: folds with a complete record are read back, an interrupted fold
    continues after its last completed epoch (``fresh`` starts over). ``build_record``: also write the Tables 1-2
    record from the Keras builds.
    """
    options = Options(out=out, fresh=fresh, deterministic=deterministic, strategy=strategy, tfds_dir=tfds_dir,
                      data_kind=data_kind_override, verbose=verbose, log=log)
    exps = [exps] if isinstance(exps, Experiment) else list(exps)
    return JORGENSEN.run(exps, options, data_dir=data_dir, folds=folds, protocol=protocol, levi_splits=levi_splits,
                         build_record=build_record)


def _execute(run, exps: list[Experiment], *, data_dir, folds, protocol, levi_splits, build_record) -> dict:
    from agegender.distribute import make_strategy, per_replica_batch

    runs_dir, figures_dir = run.paths["runs"], run.paths["figures"]
    frame, data_info = load_adience(data_dir, exps[0], data_kind=run.options.data_kind,
                                    tfds_dir=run.options.tfds_dir)
    if protocol == "levi":
        data_info["dataset"] = "adience (aligned faces, Levi & Hassner's per-fold lists)"
    run.say(f"{data_info['rows_used']:,} labelled rows from {run.options.tfds_dir or data_dir} (data kind: "
            f"{data_info['kind']}); models {', '.join(e.name for e in exps)}; folds {','.join(map(str, folds))}; "
            f"output {run.paths['root']}")
    strategy = make_strategy(run.options.strategy)
    for exp in exps:  # an uneven split of the global batch fails before any training
        per_replica_batch(exp.batch_size, strategy)
    run.start(seed=exps[0].seed, precision=exps[0].precision, batch_size=exps[0].batch_size, flag="--batch-size",
              strategy=strategy, why="learning rate unchanged (the paper's)")
    if build_record:
        write_model_build_record(runs_dir)
    records, summaries, by_model = {}, {}, {}
    for exp in exps:
        results = []
        for fold in folds:
            split = fold_split(frame, exp, fold, protocol=protocol, levi_splits=levi_splits, data_dir=data_dir)
            counts = split.counts()
            run.say(f"{exp.name} fold {fold}: train {counts['train']:,}, val {counts['val']:,}, test "
                    f"{counts['test']:,} ({split.info.get('validation', '')})")
            result = run_fold(exp, fold, split, run=run, data_info=data_info,
                              run_id=f"{run.stamp}-fold{fold}-s{exp.seed}", protocol=protocol)
            m = result["metrics"]
            scores = ", ".join(f"{t} {100 * m['test'][t]['accuracy']:.1f}%" + (
                f" (over-sampled {100 * m['test'][t + '_oversampled']['accuracy']:.1f}%)" if exp.oversample else "")
                for t in exp.tasks)
            if "age" in exp.tasks:
                scores += f", age one-off {100 * m['test']['age']['one_off_accuracy']:.1f}%"
            run.say(f"{exp.name} fold {fold}: {scores}; {m['epochs_run']} epochs (best {m['best_epoch']}), "
                    f"{m['train_seconds'] / max(m['epochs_run'], 1):.1f} s/epoch")
            records[f"{exp.name} fold {fold}"] = result["record"]
            results.append(result)
        by_model[exp.name] = results
        summaries[exp.name] = (exp, write_fold_summary(exp, results, run=run, data_info=data_info))
    return {"records": records, "summaries": summaries, "results": by_model, "kind": data_info["kind"],
            "folds": folds, "figures_dir": figures_dir}


def run_fold(exp: Experiment, fold: int, split, *, run, data_info: dict, run_id: str, protocol: str) -> dict:
    """Train and evaluate ``exp`` on one fold; write its record, curves and confusion matrices.

    A rerun of the same command reads a complete record back without training and resumes an interrupted
    one after its last completed epoch (``run_id`` names a new run). The model is built and compiled under
    the run's strategy; ``exp.batch_size`` is the global batch, split over the replicas; the learning rate
    is the paper's.
    """
    config = {**portable_config(exp), "fold": fold, "protocol": protocol, "precision": run.precision,
              "strategy": run.strategy_info}
    data = {**data_info, "protocol": protocol, "test_fold": fold, "counts": split.counts(),
            "split_info": {k: v for k, v in split.info.items() if k != "counts"}}
    recorder = run.recorder(exp.name, config=config, seed=exp.seed, data=data, new_run_id=run_id,
                            preprocessing=preprocessing(exp, data_info["kind"]),
                            deviations=run.deviations(record_deviations(exp, protocol)))
    row, notes = table3_row(exp), "; ".join(deviations(exp, protocol))

    def read_back() -> dict:  # cross-validation resumes at the first fold without a complete record
        record = recorder.record
        return {"fold": fold, "history": record["history"], "record": recorder.record_path,
                "metrics": record["metrics"], "cells": record["cells"], "row": row, "notes": notes,
                "deviations": record.get("deviations", {})}

    def train() -> dict:
        run.clear()
        run.seed(exp.seed + fold)
        bad_files: list = []
        train_ds, val_ds, test_ds = make_datasets(exp, split, exp.seed + fold, bad_files)
        with run.scope():
            model = compile_model(build_model(exp), exp)
        split.save_manifest(recorder.run_dir / "split.csv")
        history, info = run.fit(model, train_ds, val_ds, recorder=recorder, epochs=exp.epochs,
                                patience=exp.patience, monitor=exp.monitor)
        metrics, cells, plots = evaluate_fold(exp, fold, model, test_ds, history, info, recorder, split, bad_files,
                                              row, notes)
        recorder.finish(metrics, cells, plots={k: relative(v, recorder.run_dir) for k, v in plots.items()})
        run.clear()
        return {"fold": fold, "history": history, "record": recorder.record_path, "metrics": metrics,
                "cells": cells, "row": row, "notes": notes, "deviations": recorder.record.get("deviations", {})}

    return run.resume_or_train(recorder, f"{exp.name} fold {fold}", train=train, read_back=read_back)


def evaluate_fold(exp: Experiment, fold: int, model, test_ds, history: list[dict], info: dict, recorder, split,
                  bad_files: list, row: str, notes: str) -> tuple[dict, list[dict], dict]:
    """Table 3 (centre crop) and Table 3 (extra) (over-sampled, one-off, majority class) of one trained fold:
    ``(metrics, cells, plots)``."""
    import numpy as np

    from agegender.data.pipeline import portable_report
    from agegender.metrics import classification_report
    from agegender.oversample import oversampled_predictions
    from agegender.plots import confusion_matrix, learning_curves
    from agegender.training import collect_predictions

    train_seconds = info["seconds"]  # summed over the processes of a resumed run
    epochs_run = len(history)
    scores = [h.get(exp.monitor, math.inf) for h in history]
    best_epoch = int(np.nanargmin(scores)) + 1 if history and not all(math.isinf(s) for s in scores) else epochs_run
    if exp.oversample:
        labels, views, weights = oversampled_predictions(model, test_ds, exp.image_size, flip=True)
    else:  # one view: the centre crop
        labels, views, weights = collect_predictions(model, test_ds)
        views = {task: v[:, None] for task, v in views.items()}
    metrics = {"test": {}, "epochs_run": epochs_run, "best_epoch": best_epoch, "train_seconds": train_seconds,
               "resumed_from_epoch": info["resumed_from_epoch"], "images_skipped": portable_report(bad_files,
                                                                                                    split.frame)}
    cells = [_cell("Table 3", row, "Avg training epochs", epochs_run, "epochs", notes)]
    extra = "Table 3 (extra)"
    plots = {"learning_curves": learning_curves(history, recorder.run_dir / "learning_curves.png",
                                                f"Jørgensen Fig. {exp.figure}: {exp.name}, fold {fold}")}
    for task in exp.tasks:
        keep = weights[task] > 0
        truth = labels[task][keep].reshape(-1).astype(int)  # one label per image (gender arrives as [n, 1])
        p = views[task][keep]
        if task == "gender":
            centre, over, classes = (p[:, 0, 0] > 0.5).astype(int), (p[..., 0].mean(1) > 0.5).astype(int), 2
            names = ["male", "female"]
        else:
            from agegender.data.samples import ADIENCE_AGE_GROUPS

            centre, over, classes = p[:, 0].argmax(-1), p.mean(1).argmax(-1), 8
            names = list(ADIENCE_AGE_GROUPS)
        report = classification_report(truth, centre, classes)
        report_over = classification_report(truth, over, classes)
        metrics["test"][task] = report
        label = task.capitalize()
        cells.append(_cell("Table 3", row, f"{label} accuracy", 100 * report["accuracy"], "percent",
                           _join(notes, CENTRE_NOTE)))
        if exp.oversample:
            metrics["test"][f"{task}_oversampled"] = report_over
            cells.append(_cell(extra, row, f"{label} accuracy, over-sampled (10 crops)",
                               100 * report_over["accuracy"], "percent", _join(notes, OVERSAMPLED_NOTE)))
        cells.append(_cell(extra, row, f"{label} majority-class accuracy", 100 * report["majority_baseline"],
                           "percent", notes))
        if task == "age":
            cells.append(_cell(extra, row, "Age one-off accuracy", 100 * report["one_off_accuracy"], "percent", notes))
            if exp.oversample:
                cells.append(_cell(extra, row, "Age one-off accuracy, over-sampled (10 crops)",
                                   100 * report_over["one_off_accuracy"], "percent", notes))
        plots[f"{task}_confusion"] = confusion_matrix(
            report["confusion_matrix"], names, recorder.run_dir / f"{task}_confusion.png",
            f"{exp.name}, fold {fold}: {task} (centre crop)")
    cells.append(_cell(extra, row, "Best epoch", best_epoch, "epochs", notes))
    cells.append(_cell(extra, row, "Seconds per epoch", train_seconds / max(epochs_run, 1), "seconds", notes))
    cells.append(_cell(extra, row, "Test images", len(labels[exp.tasks[0]]), "count", notes))
    return metrics, cells, plots


def write_fold_summary(exp: Experiment, results: list[dict], *, run, data_info: dict) -> dict:
    """Across the folds of one invocation: the ± columns of Table 3 (as a record) and Figure 4-7."""
    import numpy as np

    summary = {}
    folds = [r["fold"] for r in results]
    for task in exp.tasks:
        values = [100 * r["metrics"]["test"][task]["accuracy"] for r in results]
        summary[task] = (float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else float("nan"))
    summary["epochs"] = float(np.mean([r["metrics"]["epochs_run"] for r in results]))
    figures_dir = run.paths["figures"]
    figure = _fold_figure(exp, results, figures_dir / f"jorgensen_figure{exp.figure}_{exp.name}.png")
    summary["figure"] = relative(figure, figures_dir.parent)  # relative to the output folder
    if len(results) > 1:
        note = "; ".join([f"sample std over folds {','.join(map(str, folds))} of one invocation "
                          f"({len(folds)} folds)", results[0]["notes"]])
        cells = [_cell("Table 3", results[0]["row"], f"{task.capitalize()} accuracy std", summary[task][1],
                       "percent", note) for task in exp.tasks]
        recorder = run.recorder(f"{exp.name}_folds", config={**portable_config(exp), "folds": folds,
                                                             "precision": run.precision}, seed=exp.seed,
                                data={**data_info, "folds": folds}, new_run_id=f"{run.stamp}-s{exp.seed}",
                                deviations=results[0].get("deviations", {}))  # a rerun rewrites it
        recorder.finish({"fold_records": [relative(r["record"], run.paths["runs"]) for r in results],
                         "summary": summary}, cells)
    return summary


def write_model_build_record(runs_dir: Path, facts=None) -> Path:
    """Tables 1 and 2 (and the Sec. 3.1/3.3 counts) from the Keras builds, as one record."""
    from agegender.records import RunRecorder

    described, cells = facts or model_facts()
    recorder = RunRecorder(REPRODUCTION, "model_build", paper=PAPER, out=runs_dir, run_id="keras-227", seed=0,
                           config={"input_shape": [227, 227, 3], "weights": None},
                           data={"kind": "none", "dataset": "none: parameter counts and layer shapes of the Keras "
                                                            "builds; no images are read"})
    return recorder.finish(described, cells)


def _print_summary(summaries: dict, kind: str, n_folds: int) -> None:
    published = JORGENSEN.published()
    published = published[published["table"] == "Table 3"]

    def paper(row, column):
        hit = published[(published["row"] == row) & (published["column"] == column)]
        return str(hit["value"].iloc[0]) if len(hit) else "-"

    print(f"[{PAPER}] Table 3 ({kind} data, {n_folds} fold(s)); paper in brackets:")
    for exp, summary in summaries.values():
        parts = []
        for task in ("gender", "age"):
            label = f"{task.capitalize()} accuracy"
            if task in exp.tasks:
                mean, std = summary[task]
                text = f"{mean:.1f}" + ("" if math.isnan(std) else f" ± {std:.1f}")
                parts.append(f"{task} {text} % [{paper(exp.row, label)} ± {paper(exp.row, label + ' std')}]")
        parts.append(f"epochs {summary['epochs']:.1f} [{paper(exp.row, 'Avg training epochs')}]")
        print(f"  {table3_row(exp):<28} " + "; ".join(parts))
