"""Gu & Yang: the run (one record per dataset and model, the study record, figures, tables) and its command line."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
import time
from pathlib import Path

from agegender.cli import add_run_arguments, run_main
from agegender.errors import DataError, TrainingDiverged
from reproductions.efficientnet_age_groups.claims import claim_cells, claims_markdown, evaluate_claims
from reproductions.efficientnet_age_groups.config import (AGE_COLUMN, DATASETS, GROUPS, LABEL, PAPER, REPRODUCTION,
                                                          SMOKE_OUT, SOURCES, TASK_ROW, TASK_SETS,
                                                          TRAINING_FIELDS_EXCLUDED, GuYangExperiment, ModelSpec,
                                                          plan, smoke)
from reproductions.efficientnet_age_groups.figures import study_figures
from reproductions.efficientnet_age_groups.paper import (_cell, build_model, check_weights, data_cells, deviations,
                                                         distribution, evaluate, load_dataset, make_datasets,
                                                         metric_key, model_cells, model_frame)

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


def training_config(exp: GuYangExperiment) -> dict:
    """The settings that determine a trained model (presentation-only fields left out); a weights file is named
    by its name and fingerprint, never by its path on this machine."""
    from agegender.data.provenance import fingerprint_files

    config = {k: v for k, v in dataclasses.asdict(exp).items() if k not in TRAINING_FIELDS_EXCLUDED}
    if exp.weights not in (None, "imagenet"):
        config["weights"] = {"file": Path(exp.weights).name, **fingerprint_files(exp.weights)}
    return config


def record_deviations(exp: GuYangExperiment, accumulation: int = 1, micro_batch: int | None = None) -> dict:
    """The settings that differ from the paper's (or, where it states none, from our documented defaults): the
    record's ``deviations``, by which the tables keep such runs in rows of their own."""
    from agegender.records import deviations_from

    out = deviations_from(exp, GuYangExperiment(), ignore=("seed", "precision", "run_eagerly",
                                                            *TRAINING_FIELDS_EXCLUDED))
    if "weights" in out and out["weights"] is not None:
        out["weights"] = "file " + Path(str(out["weights"])).name
    if accumulation > 1:  # the batch of 256 reached by accumulation: batch-norm statistics from micro-batches
        out["micro_batch_size"] = micro_batch
    return out


def study_key(exp: GuYangExperiment) -> str:
    """Models trained with the same settings form one study, whichever command trained them."""
    config = {k: v for k, v in training_config(exp).items() if k not in ("precision", "run_eagerly")}
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _combined_kind(kinds) -> str:
    kinds = set(kinds)
    for kind in ("generated", "sample", "real"):
        if kind in kinds:
            return kind
    return "none"


def collect_study(runs_dir, key: str, sources: dict) -> tuple[list[dict], dict, dict]:
    """Complete records of study ``key``: model results (newest per model), distributions and data facts.

    ``sources``: ``{dataset: fingerprint}`` of the data this command read; a record of such a dataset
    counts only when it read the same data (the same fingerprint, wherever the folder lies).
    """
    from agegender.records import load_records

    records, _ = load_records(runs_dir) if Path(runs_dir).is_dir() else ([], [])
    newest: dict = {}
    for record in records:
        if record.get("reproduction") != REPRODUCTION or (record.get("config") or {}).get("study") != key:
            continue
        data = record.get("data") or {}
        given = {d: f for d, f in (data.get("sources") or {}).items() if d in sources}
        if any(sources[d] != f for d, f in given.items()):
            continue
        stamp = str(record.get("finished_utc") or record.get("started_utc") or "")
        if stamp >= newest.get(record["experiment"], ("",))[0]:
            newest[record["experiment"]] = (stamp, record)
    results, dists, facts = [], {}, {}
    for _, record in sorted(newest.values(), key=lambda item: item[1]["experiment"]):
        metrics = record.get("metrics") or {}
        if record["experiment"].startswith("data_"):
            dataset = record["experiment"][len("data_"):]
            dists[dataset] = {int(n): d for n, d in (metrics.get("distribution") or {}).items()}
            facts[dataset] = {"kind": (record.get("data") or {}).get("kind"), "counts": metrics.get("counts")}
        elif "model" in metrics:
            results.append({**metrics["model"], "accuracy": metrics["val"]["age"]["accuracy"],
                            "majority": metrics["val"]["age"]["majority_baseline"],
                            "kind": (record.get("data") or {}).get("kind")})
    return results, dists, facts


def preprocessing(exp: GuYangExperiment, spec, data_kind: str):
    """How ``python -m agegender predict`` feeds a face to the model: 0-255 pixels (EfficientNet rescales)."""
    from agegender.preprocess import Head, Preprocessing, face_preset

    heads = {"age": Head.gu_yang_groups(spec.groups), "gender": Head.gender_softmax(), "race": Head.race_softmax()}
    dataset = "utkface" if spec.source == "utkface" else "imdb_wiki"  # multi-source: most faces are IMDB-WIKI's
    return Preprocessing(input_size=exp.input_size, pixel_scale=1.0, face=face_preset(data_kind, dataset),
                         heads={t: heads[t] for t in spec.tasks})


def run(exp: GuYangExperiment, *, imdb_wiki=None, utkface=None, sources=SOURCES, backbones=("b4", "b5", "b6", "b7"),
        groups=GROUPS, task_sets=tuple(TASK_SETS), micro_batch: int | None = None, out=None, fresh: bool = False,
        deterministic: bool = False, strategy: str = "default", tfds_dir=None,
        verbose: int | str = 2, log=print) -> dict:
    """Train every planned model (skipping complete ones), then evaluate the study; return paths and results.

    ``strategy``: ``default``, ``mirrored`` or ``multiworker`` (:mod:`agegender.distribute`): the
    batch of 256 (or ``micro_batch``) is the global batch of a step, split over the replicas; Adam's
    learning rate is unchanged. Gradient accumulation (``micro_batch`` below the batch) runs on one
    replica only. ``tfds_dir``: read both datasets from the TFDS data prepared there instead of the
    raw folders ``imdb_wiki`` / ``utkface``.
    """
    from agegender.models.efficientnet_groups import get_backbone

    t0 = time.time()
    from agegender.distribute import start_early

    start_early(strategy)  # a multi-worker strategy must exist before TensorFlow runs anything
    backbones = [get_backbone(b).key for b in backbones]
    specs = plan(sources, backbones, groups, task_sets)
    if not specs:
        raise DataError("nothing to run: no source has the chosen task sets (IMDB-WIKI: age, age+gender; UTKFace: "
                        "all three; multi: age+gender+race)", fix="choose --tasks and --source that meet")
    micro_batch = micro_batch or exp.batch_size
    if micro_batch > exp.batch_size or exp.batch_size % micro_batch:
        raise DataError(f"--batch-size {micro_batch} must divide the batch of {exp.batch_size}",
                        fix=f"pass a divisor of {exp.batch_size}, e.g. {exp.batch_size // 2} or {exp.batch_size // 4}")
    accumulation = exp.batch_size // micro_batch
    roots = {"imdb_wiki": imdb_wiki, "utkface": utkface}
    needed = sorted({d for s in specs for d in (DATASETS if s.source == "multi" else (s.source,))}, key=DATASETS.index)
    for dataset in needed:
        if roots[dataset] is None and tfds_dir is None:
            raise DataError(f"the chosen sources need {LABEL[dataset]}",
                            fix=f"pass --{dataset.replace('_', '-')} DIR (the {LABEL[dataset]} folder), or --tfds-dir "
                                "DIR (the prepared TFDS data)")
    roots = {d: r for d, r in roots.items() if d in needed}
    check_weights(backbones, exp.weights)  # fail before hours of reading when the weights cannot be had
    paths = _out_paths(out)
    dist_strategy = None
    if strategy != "default":  # settings the strategy cannot run fail before hours of reading (TensorFlow loads)
        dist_strategy = _checked_strategy(strategy, exp, micro_batch, accumulation)
    data = {d: load_dataset(d, roots[d], exp, tfds_dir) for d in needed}  # DataErrors stay one line (no TensorFlow)
    sources = {d: data[d]["info"].get("fingerprint") for d in needed}  # collect_study matches records on them

    import keras

    from agegender.data.age_groups import age_group_labels
    from agegender.distribute import strategy_config
    from agegender.plots import confusion_matrix, learning_curves
    from agegender.records import RunRecorder
    from agegender.training import configure_precision, train
    from results.tables import generate

    dist_strategy = dist_strategy or _checked_strategy(strategy, exp, micro_batch, accumulation)
    strategy_info = strategy_config(strategy, dist_strategy, micro_batch)
    if strategy_info["replicas"] > 1:
        log(f"[gu-yang] {strategy} strategy: {strategy_info['replicas']} replicas, global batch {micro_batch} = "
            f"{strategy_info['per_replica_batch']} per replica; learning rate unchanged")
    precision = configure_precision(exp.precision)
    key = study_key(exp)
    notes = deviations(exp, accumulation, micro_batch)
    note = "; ".join(notes)
    base_config = {**training_config(exp), "study": key}
    run_deviations = record_deviations(exp, accumulation, micro_batch)

    dists = {}
    for dataset in needed:
        info = data[dataset]["info"]
        split = data[dataset]["split"]
        dists[dataset] = {n: distribution(split, n) for n in GROUPS}
        log(f"[gu-yang] {LABEL[dataset]}: {info['images_usable']:,} usable of {info['images_read']:,} read "
            f"({info['kind']}); split {info['counts']}")
        described = {**{k: v for k, v in info.items() if k != "notes"}, "sources": {dataset: sources[dataset]}}
        recorder = RunRecorder(REPRODUCTION, f"data_{dataset}", config=base_config, seed=exp.seed, data=described,
                               paper=PAPER, out=paths["runs"], resume=not fresh, deviations=run_deviations)
        split.save_manifest(recorder.run_dir / "split.csv")
        recorder.finish({"distribution": {str(n): d for n, d in dists[dataset].items()}, "counts": info["counts"],
                         "notes": info["notes"]}, data_cells(dataset, info, dists[dataset], note))

    results, failures, skipped = [], [], []
    for i, spec in enumerate(specs, 1):
        datasets_used = DATASETS if spec.source == "multi" else (spec.source,)
        info = {"kind": _combined_kind(data[d]["info"]["kind"] for d in datasets_used), "dataset": spec.source,
                "sources": {d: sources[d] for d in datasets_used},
                "paths": {d: data[d]["info"]["path"] for d in datasets_used},
                "counts": {d: data[d]["info"]["counts"] for d in datasets_used}}
        config = {**base_config, "source": spec.source, "backbone": spec.backbone, "task_set": spec.task_set,
                  "groups": spec.groups, "micro_batch_size": micro_batch, "gradient_accumulation_steps": accumulation,
                  "effective_batch_size": exp.batch_size, "precision_policy": precision,
                  "deterministic": bool(deterministic), "strategy": strategy_info}
        recorder = RunRecorder(REPRODUCTION, spec.experiment, config=config, seed=exp.seed, data=info, paper=PAPER,
                               out=paths["runs"], resume=not fresh,
                               preprocessing=preprocessing(exp, spec, info["kind"]), deviations=run_deviations)
        title = f"{get_label(spec)} ({i}/{len(specs)})"
        if recorder.complete:
            metrics = recorder.record["metrics"]
            log(f"[gu-yang] {title}: complete record found ({recorder.record_path}); not trained again "
                "(--fresh trains again)")
        else:
            from agegender.training import seed_everything

            seed_everything(exp.seed, deterministic)
            frame = model_frame(spec, data)
            datasets = make_datasets(frame, spec, exp, micro_batch, skipped)
            model = build_model(spec, exp, accumulation, dist_strategy)
            log(f"[gu-yang] training {title}: {datasets['n_train']:,} train / {datasets['n_val']:,} validation "
                f"images, {exp.input_size} px, {exp.epochs} epochs, batch {exp.batch_size}"
                + (f" ({accumulation} x {micro_batch})" if accumulation > 1 else ""))
            run_info: dict = {}
            try:
                history = train(model, datasets["train"], datasets["val"], epochs=exp.epochs, recorder=recorder,
                                monitor="val_loss",  # Keras cannot tell the direction of val_age_accuracy
                                verbose=verbose, info=run_info)
            except TrainingDiverged as err:
                log(f"[gu-yang] {title}: {err}")
                failures.append({"model": spec.experiment, "reason": str(err)})
                keras.backend.clear_session()
                continue
            val = evaluate(model, spec, datasets["val"])
            best = max(history, key=lambda h: h.get(metric_key(spec.tasks, "age", prefix="val_"), -1)) if history \
                else {}
            from agegender import atomic

            with atomic.atomic_path(recorder.run_dir / "split.csv") as tmp:
                frame[["file", "split", "age", AGE_COLUMN, "gender", "race", "source"]].to_csv(tmp, index=False)
            metrics = {"model": {"source": spec.source, "backbone": spec.backbone, "task_set": spec.task_set,
                                 "groups": spec.groups},
                       "val": val, "n_train": datasets["n_train"], "n_val": datasets["n_val"],
                       "training": {"seconds": run_info.get("seconds"), "epochs": len(history),
                                    "best_epoch": best.get("epoch"),
                                    "best_val_age_accuracy": best.get(metric_key(spec.tasks, "age", prefix="val_")),
                                    "resumed_from_epoch": recorder.record.get("resumed_from_epoch"),
                                    "evaluated_weights": "last epoch"}}
            figures = {"learning_curves": str(learning_curves(history, recorder.run_dir / "learning_curves.png",
                                                               get_label(spec)))}
            figures["age_confusion"] = str(confusion_matrix(val["age"]["confusion_matrix"],
                                                            age_group_labels(spec.groups),
                                                            recorder.run_dir / "age_confusion.png",
                                                            f"Validation age groups, {get_label(spec)}"))
            from agegender.data.pipeline import portable_report

            recorder.finish(metrics, model_cells(spec, val["age"]["accuracy"], exp, note),
                            figures={k: relative(v, recorder.run_dir) for k, v in figures.items()},
                            pipeline_skipped=portable_report(skipped, frame))
            del model
            keras.backend.clear_session()
        val = metrics["val"]["age"]
        log(f"[gu-yang] {title}: validation age accuracy {val['accuracy']:.3f} (majority class "
            f"{val['majority_baseline']:.3f}, n = {val['n']:,})")
        results.append({**metrics["model"], "accuracy": val["accuracy"], "majority": val["majority_baseline"]})

    # the study: every complete model of these settings in this output folder, this command's included
    study_results, study_dists, facts = collect_study(paths["runs"], key, sources)
    claims = evaluate_claims(study_results, study_dists, exp.similar_tolerance)
    folder = paths["figures"] / REPRODUCTION / f"study-{key}"
    figure_paths = study_figures(study_results, study_dists, folder, exp)
    from agegender import atomic

    figure_paths["claims"] = atomic.write_text(folder / "claims.md", claims_markdown(claims, key))
    kinds = [r.get("kind") for r in study_results] + [f.get("kind") for f in facts.values()]
    study_cells = claim_cells(claims, note) + [
        _cell("Section 3", "training", "epochs", exp.epochs, "epochs", note),
        _cell("Section 3", "training", "batch size", exp.batch_size, "count", note)]
    if any(r["source"] == "multi" for r in study_results) and all(d in facts for d in DATASETS):
        for d in DATASETS:
            counts = facts[d]["counts"] or {}
            study_cells.append(_cell("Section 5.4", "multi-source", f"{LABEL[d]} images",
                                     counts.get("train", 0) + counts.get("val", 0), "count", note))
    study = RunRecorder(REPRODUCTION, "study", config={**base_config, "figure9_backbone": exp.figure9_backbone,
                                                       "similar_tolerance": exp.similar_tolerance},
                        seed=exp.seed, data={"kind": _combined_kind(k for k in kinds if k), "dataset": "study",
                                             "models": len(study_results)},
                        paper=PAPER, out=paths["runs"], run_id=f"study-{key}", resume=False,
                        deviations=run_deviations)
    root = paths["runs"].parent  # figure paths relative to the output folder
    study.finish({"claims": claims, "models": study_results}, study_cells,
                 figures={k: relative(v, root) for k, v in sorted(figure_paths.items())},
                 figures_dir=relative(folder, root))
    summary = generate(paths["runs"], paths["tables"], paths["readme"])
    return {"study": key, "results": results, "study_results": study_results, "claims": claims,
            "failures": failures, "figures": figure_paths, "figures_dir": folder, "tables_dir": paths["tables"],
            "readme": paths["readme"], "tables": summary["tables"], "runs_dir": paths["runs"],
            "seconds": time.time() - t0, "data": {d: data[d]["info"] for d in needed}}


def _checked_strategy(name: str, exp: GuYangExperiment, micro_batch: int, accumulation: int):
    """The ``tf.distribute`` strategy ``name``, after checking that it can run these settings (a one-line
    :class:`agegender.distribute.StrategyError` naming the flags to change otherwise)."""
    from agegender.distribute import make_strategy, per_replica_batch, require_single_replica

    dist_strategy = make_strategy(name)
    if accumulation > 1:
        require_single_replica(
            dist_strategy, f"gradient accumulation (--batch-size {micro_batch}: {accumulation} x {micro_batch} = "
                           f"{exp.batch_size})",
            why="Keras's gradient_accumulation_steps fails under MirroredStrategy (a merge_call inside a cond)",
            fix=f"leave out --batch-size: with --strategy {name} each replica gets {exp.batch_size}/replicas images "
                f"per step, which is how several GPUs fit the batch of {exp.batch_size}; or keep --batch-size with "
                "--strategy default (one device)")
    per_replica_batch(micro_batch, dist_strategy)  # the global batch must split evenly over the replicas
    return dist_strategy


def relative(path, base) -> str:
    """``path`` relative to ``base`` (POSIX form): records name their files so, never by a machine path."""
    return Path(os.path.relpath(Path(path).resolve(), Path(base).resolve())).as_posix()


def get_label(spec: ModelSpec) -> str:
    from agegender.models.efficientnet_groups import get_backbone

    return f"{get_backbone(spec.backbone).label} {TASK_ROW[spec.task_set]}, {spec.groups} age groups, " \
           f"{LABEL[spec.source]}"


# ----------------------------------------------------------------------------------------------
# command line


def _list(text: str, known, what: str, parser, convert=str) -> list:
    items = [t.strip().lower() for t in str(text).split(",") if t.strip()]
    try:
        items = [convert(t) for t in items]
    except ValueError:
        parser.error(f"--{what}: {text!r} is not a comma-separated list of {', '.join(map(str, known))}")
    bad = [t for t in items if t not in known]
    if bad or not items:
        parser.error(f"--{what}: unknown {', '.join(map(str, bad)) or '(empty)'}; choose among "
                     f"{', '.join(map(str, known))}")
    return list(dict.fromkeys(items))


def _parser() -> argparse.ArgumentParser:
    default = GuYangExperiment()
    parser = argparse.ArgumentParser(
        prog="python -m reproductions.efficientnet_age_groups",
        description=__doc__.split("\n\n")[0] + " Trains one model per (source, backbone, task set, age groups), "
                    "writes run records, bar and distribution figures, the checked claims and the regenerated "
                    "tables next to the published values.",
        epilog="Decisions, runtime and expected figures: python -m pydoc reproductions.efficientnet_age_groups")
    parser.add_argument("--imdb-wiki", metavar="DIR", default=None,
                        help="IMDB-WIKI folder holding imdb_crop/imdb.mat (or wiki_crop/wiki.mat) and the crops; "
                             "needed by --source imdb_wiki and multi")
    parser.add_argument("--utkface", metavar="DIR", default=None,
                        help="UTKFace folder (age_gender_race_timestamp.jpg.chip.jpg files, searched recursively); "
                             "needed by --source utkface and multi")
    parser.add_argument("--backbones", default="b4,b5,b6,b7", metavar="LIST",
                        help="comma-separated EfficientNets among b4, b5, b6, b7 (default all four; --smoke: b4)")
    parser.add_argument("--groups", default="3,5,10", metavar="LIST",
                        help="comma-separated age-group settings among 3 (1-26/27-52/53-80), 5 "
                             "(1-11/12-23/24-39/40-55/56-80) and 10 (1-8, 9-16, ..., 73-80); default all "
                             "(--smoke: 3)")
    parser.add_argument("--tasks", default="age,age+gender,age+gender+race", metavar="LIST",
                        help="comma-separated task sets among age, age+gender, age+gender+race (default all); each "
                             "source trains those it has labels for: IMDB-WIKI age and age+gender, UTKFace all "
                             "three, multi age+gender+race")
    parser.add_argument("--source", default="imdb_wiki,utkface,multi", metavar="SOURCE",
                        help="imdb_wiki, utkface or multi (IMDB-WIKI rows with age and gender + UTKFace rows with "
                             "race only), or a comma-separated list; default all three")
    parser.add_argument("--batch-size", type=int, default=None, metavar="N",
                        help=f"images per step; a divisor of the paper's batch of {default.batch_size}, which is then "
                             f"reached by gradient accumulation ({default.batch_size}/N steps per update; recorded "
                             "in the run record); default the full batch (--smoke: 20). Accumulation needs --strategy "
                             f"default; with several GPUs leave it out: each replica then gets {default.batch_size}"
                             "/replicas images")
    parser.add_argument("--weights", default=None, metavar="imagenet|none|PATH",
                        help="backbone initialisation: imagenet (Keras downloads efficientnetb*_notop.h5 into "
                             "~/.keras/models; needs network), none (from scratch), or offline a .h5 file (one "
                             "backbone) or a folder holding efficientnetb4_notop.h5 ... efficientnetb7_notop.h5; "
                             "default imagenet (--smoke: none)")
    parser.add_argument("--epochs", type=int, default=None, metavar="N",
                        help=f"epochs per model (default {default.epochs}, Sec. 3; --smoke: 1)")
    parser.add_argument("--input-size", type=int, default=None, metavar="PX",
                        help=f"square input side in pixels, at least 32 (default {default.input_size}, not stated "
                             "in the paper; --smoke: 32)")
    parser.add_argument("--learning-rate", type=float, default=None, metavar="LR",
                        help=f"Adam learning rate (default {default.learning_rate:g}, Keras's default; not stated)")
    parser.add_argument("--freeze-backbone", action="store_true",
                        help="train only the heads (EfficientNet as a fixed feature extractor); default: the whole "
                             "network trains")
    parser.add_argument("--smoke", action="store_true",
                        help="check the whole path fast: EfficientNet-B4 at 32 px without ImageNet weights, 50 "
                             "images per dataset (40 train / 10 validation), batch 20, 1 epoch, eager execution, "
                             "3 age groups; writes under build/smoke/efficientnet_age_groups unless --out is given")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="output root: records in DIR/runs, tables in DIR/tables, index DIR/README.md, figures "
                             "in DIR/figures (default results/...; --smoke: build/smoke/efficientnet_age_groups)")
    parser.add_argument("--seed", type=int, default=default.seed, metavar="S",
                        help=f"seed of the 20,000-image samples, the splits, the augmentation and the initial "
                             f"weights (default {default.seed})")
    add_run_arguments(parser, data_flag="--imdb-wiki / --utkface",
                      fresh_help="train again; by default models with a complete record of the same settings are "
                                 "read back and an interrupted one resumes after its last completed epoch")
    return parser


def main(argv=None) -> int:
    """The command line; errors a user can fix are one ``error:`` line (:func:`agegender.cli.run_main`)."""
    return run_main(_main, argv)


def _main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    from agegender.models.efficientnet_groups import BACKBONES

    exp = dataclasses.replace(GuYangExperiment(), seed=args.seed)
    if args.smoke:
        exp = smoke(exp)
    backbones = _list(args.backbones if not (args.smoke and args.backbones == "b4,b5,b6,b7") else "b4",
                      BACKBONES, "backbones", parser)
    groups = _list(args.groups if not (args.smoke and args.groups == "3,5,10") else "3", GROUPS, "groups", parser,
                   int)
    task_sets = _list(args.tasks, TASK_SETS, "tasks", parser)
    sources = _list(args.source, SOURCES, "source", parser)
    changes = {}
    if args.weights is not None:
        changes["weights"] = None if args.weights.lower() == "none" else (
            "imagenet" if args.weights.lower() == "imagenet" else str(Path(args.weights).expanduser().resolve()))
    for name in ("epochs", "input_size"):
        value = getattr(args, name)
        if value is not None:
            if value < (32 if name == "input_size" else 1):
                parser.error(f"--{name.replace('_', '-')} must be at least {32 if name == 'input_size' else 1}")
            changes[name] = value
    if args.learning_rate is not None:
        if not args.learning_rate > 0:
            parser.error("--learning-rate must be positive")
        changes["learning_rate"] = args.learning_rate
    if args.freeze_backbone:
        changes["freeze_backbone"] = True
    if args.batch_size is not None and args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    exp = dataclasses.replace(exp, **changes)
    out = args.out if args.out is not None or not args.smoke else SMOKE_OUT
    result = run(exp, imdb_wiki=args.imdb_wiki, utkface=args.utkface, sources=sources, backbones=backbones,
                 groups=groups, task_sets=task_sets, micro_batch=args.batch_size, out=out, fresh=args.fresh,
                 deterministic=args.deterministic, strategy=args.strategy, tfds_dir=args.tfds_dir)
    print()
    print(f"[gu-yang] claims (study {result['study']}, {len(result['study_results'])} models):")
    for claim in result["claims"].values():
        print(f"  {claim['verdict']:>13}  {claim['row']}: {claim['evidence']}")
    print(f"[gu-yang] tables : {result['tables_dir']} (gu_yang__*.md), index {result['readme']}")
    print(f"[gu-yang] figures: {result['figures_dir']}")
    print(f"[gu-yang] records: {result['runs_dir'] / REPRODUCTION}")
    for failure in result["failures"]:
        print(f"[gu-yang] FAILED {failure['model']}: {failure['reason']}", file=sys.stderr)
    print(f"[gu-yang] done in {result['seconds']:.0f} s")
    return 1 if result["failures"] else 0
