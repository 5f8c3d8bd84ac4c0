"""Gu & Yang on the shared runner: one record per dataset and per model of the plan, the study record (claims,
Figures 4-9), the command line.

Everything around the run (strategy, seeds, precision, records, resume-or-train, tables, the flags
every reproduction shares) is :mod:`agegender.experiment`'s; this module says what is Gu & Yang's
own: the plan of models, how each is trained and evaluated, the study that combines them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from agegender.errors import DataError
from agegender.experiment import Options, Reproduction, relative
from reproductions.common import PaperReproduction
from reproductions.efficientnet_age_groups.claims import claim_cells, claims_markdown, evaluate_claims
from reproductions.efficientnet_age_groups.config import (AGE_COLUMN, DATASETS, GROUPS, LABEL, PAPER, REPRODUCTION,
                                                          SMOKE_OUT, SOURCES, TASK_ROW, TASK_SETS,
                                                          TRAINING_FIELDS_EXCLUDED, GuYangExperiment, ModelSpec,
                                                          plan, smoke)
from reproductions.efficientnet_age_groups.figures import study_figures
from reproductions.efficientnet_age_groups.paper import (_cell, build_model, check_weights, data_cells, deviations,
                                                         distribution, evaluate, heads, load_dataset, make_datasets,
                                                         metric_key, model_cells, model_frame)


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


class GuYang(PaperReproduction, Reproduction):
    key, reproduction, Config, smoke_out = PAPER, REPRODUCTION, GuYangExperiment, SMOKE_OUT
    title = ("Gu & Yang (paper 002): EfficientNet B4-B7, age granularity (3/5/10 groups), task sets and multi-source "
             "data; one model per (source, backbone, task set, age groups), the bar and distribution figures and the "
             "paper's claims checked.")
    data_help = None  # two datasets: --imdb-wiki and --utkface
    data_flags = "--imdb-wiki / --utkface"
    smoke_help = ("check the whole path fast: EfficientNet-B4 at 32 px without ImageNet weights, 50 images per dataset "
                  "(40 train / 10 validation), batch 20, 1 epoch, eager execution, 3 age groups")
    batch_help = ("Sec. 3: 256; a GPU that cannot hold it reaches it by gradient accumulation with "
                  "--micro-batch-size")
    fresh_help = ("train again; by default models with a complete record of the same settings are read back and an "
                  "interrupted one resumes after its last completed epoch")
    duplicates = True

    def add_arguments(self, parser) -> None:
        default = GuYangExperiment()
        parser.add_argument("--imdb-wiki", metavar="DIR", default=None,
                            help="IMDB-WIKI folder holding imdb_crop/imdb.mat (or wiki_crop/wiki.mat) and the crops; "
                                 "needed by --source imdb_wiki and multi")
        parser.add_argument("--utkface", metavar="DIR", default=None,
                            help="UTKFace folder (age_gender_race_timestamp.jpg.chip.jpg files, searched "
                                 "recursively); needed by --source utkface and multi")
        parser.add_argument("--backbones", default="b4,b5,b6,b7", metavar="LIST",
                            help="comma-separated EfficientNets among b4, b5, b6, b7 (default all four; --smoke: b4)")
        parser.add_argument("--groups", default="3,5,10", metavar="LIST",
                            help="comma-separated age-group settings among 3 (1-26/27-52/53-80), 5 "
                                 "(1-11/12-23/24-39/40-55/56-80) and 10 (1-8, 9-16, ..., 73-80); default all "
                                 "(--smoke: 3)")
        parser.add_argument("--tasks", default="age,age+gender,age+gender+race", metavar="LIST",
                            help="comma-separated task sets among age, age+gender, age+gender+race (default all); "
                                 "each source trains those it has labels for: IMDB-WIKI age and age+gender, UTKFace "
                                 "all three, multi age+gender+race")
        parser.add_argument("--source", default="imdb_wiki,utkface,multi", metavar="SOURCE",
                            help="imdb_wiki, utkface or multi (IMDB-WIKI rows with age and gender + UTKFace rows with "
                                 "race only), or a comma-separated list; default all three")
        parser.add_argument("--micro-batch-size", type=int, default=None, metavar="N",
                            help=f"images per step when the batch (--batch-size, default {default.batch_size}) does "
                                 "not fit: a divisor of it, which is then reached by gradient accumulation (batch/N "
                                 "steps per update; recorded in the run record and as a deviation); needs --strategy "
                                 "default; with several GPUs leave it out: each replica then gets batch/replicas "
                                 "images")
        parser.add_argument("--weights", default=None, metavar="imagenet|none|PATH",
                            help="backbone initialisation: imagenet (Keras downloads efficientnetb*_notop.h5 into "
                                 "~/.keras/models; needs network), none (from scratch), or offline a .h5 file (one "
                                 "backbone) or a folder holding efficientnetb4_notop.h5 ... efficientnetb7_notop.h5; "
                                 "default imagenet (--smoke: none)")
        parser.add_argument("--input-size", type=int, default=None, metavar="PX",
                            help=f"square input side in pixels, at least 32 (default {default.input_size}, not stated "
                                 "in the paper; --smoke: 32)")
        parser.add_argument("--learning-rate", type=float, default=None, metavar="LR",
                            help=f"Adam learning rate (default {default.learning_rate:g}, Keras's default; not "
                                 "stated)")
        parser.add_argument("--freeze-backbone", action="store_true",
                            help="train only the heads (EfficientNet as a fixed feature extractor); default: the "
                                 "whole network trains")

    def check_arguments(self, args, parser) -> None:
        from agegender.models.efficientnet_groups import BACKBONES

        super().check_arguments(args, parser)
        args.backbones = _list(args.backbones if not (args.smoke and args.backbones == "b4,b5,b6,b7") else "b4",
                               BACKBONES, "backbones", parser)
        args.groups = _list(args.groups if not (args.smoke and args.groups == "3,5,10") else "3", GROUPS, "groups",
                            parser, int)
        args.tasks = _list(args.tasks, TASK_SETS, "tasks", parser)
        args.source = _list(args.source, SOURCES, "source", parser)
        if args.input_size is not None and args.input_size < 32:
            parser.error("--input-size must be at least 32")
        if args.learning_rate is not None and not args.learning_rate > 0:
            parser.error("--learning-rate must be positive")
        if args.micro_batch_size is not None and args.micro_batch_size < 1:
            parser.error("--micro-batch-size must be at least 1")

    def smoke(self, cfg: GuYangExperiment) -> GuYangExperiment:
        return smoke(cfg)

    def apply_flags(self, cfg: GuYangExperiment, args) -> GuYangExperiment:
        changes = {}
        if args.weights is not None:
            changes["weights"] = None if args.weights.lower() == "none" else (
                "imagenet" if args.weights.lower() == "imagenet" else str(Path(args.weights).expanduser().resolve()))
        if args.input_size is not None:
            changes["input_size"] = args.input_size
        if args.learning_rate is not None:
            changes["learning_rate"] = args.learning_rate
        if args.freeze_backbone:
            changes["freeze_backbone"] = True
        return dataclasses.replace(cfg, **changes)

    def inputs(self, args) -> dict:
        return {"imdb_wiki": args.imdb_wiki, "utkface": args.utkface, "sources": args.source,
                "backbones": args.backbones, "groups": args.groups, "task_sets": args.tasks,
                "micro_batch": args.micro_batch_size}

    def check(self, exp: GuYangExperiment, options, *, imdb_wiki=None, utkface=None, sources=SOURCES, backbones=("b4",),
              groups=GROUPS, task_sets=tuple(TASK_SETS), micro_batch=None) -> None:
        """What fails before hours of reading: no model to train, a micro batch that does not divide the batch,
        a dataset the sources need and were not given, weights that cannot be had."""
        from agegender.models.efficientnet_groups import get_backbone

        backbones = [get_backbone(b).key for b in backbones]
        if not plan(sources, backbones, groups, task_sets):
            raise DataError("nothing to run: no source has the chosen task sets (IMDB-WIKI: age, age+gender; "
                            "UTKFace: all three; multi: age+gender+race)", fix="choose --tasks and --source that meet")
        micro = micro_batch or exp.batch_size
        if micro > exp.batch_size or exp.batch_size % micro:
            raise DataError(f"--micro-batch-size {micro} must divide the batch of {exp.batch_size}",
                            fix=f"pass a divisor of {exp.batch_size}, e.g. {exp.batch_size // 2} or "
                                f"{exp.batch_size // 4}")
        roots = {"imdb_wiki": imdb_wiki, "utkface": utkface}
        for dataset in _needed(plan(sources, backbones, groups, task_sets)):
            if roots[dataset] is None and options.tfds_dir is None:
                raise DataError(f"the chosen sources need {LABEL[dataset]}",
                                fix=f"pass --{dataset.replace('_', '-')} DIR (the {LABEL[dataset]} folder), or "
                                    "--tfds-dir DIR (the prepared TFDS data)")
        check_weights(backbones, exp.weights)  # fail before hours of reading when the weights cannot be had

    def execute(self, run, exp: GuYangExperiment, **inputs) -> dict:
        return _execute(run, exp, **inputs)

    def report(self, result: dict) -> int:
        print()
        print(f"[{PAPER}] claims (study {result['study']}, {len(result['study_results'])} models):")
        for claim in result["claims"].values():
            print(f"  {claim['verdict']:>13}  {claim['row']}: {claim['evidence']}")
        return super().report(result)


GU_YANG = GuYang()


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
    options = Options(out=out, fresh=fresh, deterministic=deterministic, strategy=strategy, tfds_dir=tfds_dir,
                      verbose=verbose, log=log)
    return GU_YANG.run(exp, options, imdb_wiki=imdb_wiki, utkface=utkface, sources=sources, backbones=backbones,
                       groups=groups, task_sets=task_sets, micro_batch=micro_batch)


def main(argv=None) -> int:
    """``python -m reproductions.efficientnet_age_groups``; errors a user can fix are one ``error:`` line."""
    return GU_YANG.main(argv)


def _parser():
    return GU_YANG.parser()


def _needed(specs) -> list[str]:
    return sorted({d for s in specs for d in (DATASETS if s.source == "multi" else (s.source,))}, key=DATASETS.index)


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
    from agegender.preprocess import Preprocessing, face_preset

    dataset = "utkface" if spec.source == "utkface" else "imdb_wiki"  # multi-source: most faces are IMDB-WIKI's
    return Preprocessing(input_size=exp.input_size, pixel_scale=1.0, face=face_preset(data_kind, dataset),
                         heads={t: head.head() for t, head in heads(spec).items()})


def _execute(run, exp: GuYangExperiment, *, imdb_wiki=None, utkface=None, sources=SOURCES,
             backbones=("b4", "b5", "b6", "b7"), groups=GROUPS, task_sets=tuple(TASK_SETS),
             micro_batch: int | None = None) -> dict:
    from agegender.models.efficientnet_groups import get_backbone

    backbones = [get_backbone(b).key for b in backbones]
    specs = plan(sources, backbones, groups, task_sets)
    micro_batch = micro_batch or exp.batch_size
    accumulation = exp.batch_size // micro_batch
    tfds_dir, strategy = run.options.tfds_dir, run.options.strategy
    roots = {"imdb_wiki": imdb_wiki, "utkface": utkface}
    needed = _needed(specs)
    dist_strategy = None
    if strategy != "default":  # settings the strategy cannot run fail before hours of reading (TensorFlow loads)
        dist_strategy = _checked_strategy(strategy, exp, micro_batch, accumulation)
    data = {d: load_dataset(d, roots[d], exp, tfds_dir) for d in needed}  # DataErrors stay one line (no TensorFlow)
    if run.options.data_kind:  # --data-kind labels both datasets
        for d in needed:
            data[d]["info"]["kind"] = run.options.data_kind
    sources = {d: data[d]["info"].get("fingerprint") for d in needed}  # collect_study matches records on them

    dist_strategy = dist_strategy or _checked_strategy(strategy, exp, micro_batch, accumulation)
    run.start(seed=exp.seed, precision=exp.precision, batch_size=micro_batch, strategy=dist_strategy,
              flag="--micro-batch-size" if accumulation > 1 else "--batch-size", why="learning rate unchanged")
    key = study_key(exp)
    note = "; ".join(deviations(exp, accumulation, micro_batch))
    base_config = {**training_config(exp), "study": key}
    run_deviations = run.deviations(record_deviations(exp, accumulation, micro_batch))

    dists = {}
    for dataset in needed:
        info = data[dataset]["info"]
        split = data[dataset]["split"]
        dists[dataset] = {n: distribution(split, n) for n in GROUPS}
        run.say(f"{LABEL[dataset]}: {info['images_usable']:,} usable of {info['images_read']:,} read "
                f"({info['kind']}); split {info['counts']}")
        described = {**{k: v for k, v in info.items() if k != "notes"}, "sources": {dataset: sources[dataset]}}
        recorder = run.recorder(f"data_{dataset}", config={**base_config, "precision_policy": run.precision},
                                seed=exp.seed, data=described,
                                deviations=run_deviations)
        split.save_manifest(recorder.run_dir / "split.csv")
        recorder.finish({"distribution": {str(n): d for n, d in dists[dataset].items()}, "counts": info["counts"],
                         "notes": info["notes"]}, data_cells(dataset, info, dists[dataset], note))

    results, skipped = [], []
    for i, spec in enumerate(specs, 1):
        datasets_used = DATASETS if spec.source == "multi" else (spec.source,)
        info = {"kind": _combined_kind(data[d]["info"]["kind"] for d in datasets_used), "dataset": spec.source,
                "sources": {d: sources[d] for d in datasets_used},
                "paths": {d: data[d]["info"]["path"] for d in datasets_used},
                "counts": {d: data[d]["info"]["counts"] for d in datasets_used}}
        config = {**base_config, "source": spec.source, "backbone": spec.backbone, "task_set": spec.task_set,
                  "groups": spec.groups, "micro_batch_size": micro_batch, "gradient_accumulation_steps": accumulation,
                  "effective_batch_size": exp.batch_size, "precision_policy": run.precision,
                  "deterministic": bool(run.options.deterministic), "strategy": run.strategy_info}
        recorder = run.recorder(spec.experiment, config=config, seed=exp.seed, data=info,
                                preprocessing=preprocessing(exp, spec, info["kind"]), deviations=run_deviations)
        title = f"{get_label(spec)} ({i}/{len(specs)})"
        metrics = run.resume_or_train(
            recorder, title, keep_going=True, key=spec.experiment, read_back=lambda: recorder.record["metrics"],
            train=lambda: train_model(run, spec, exp, data, micro_batch, accumulation, recorder, skipped, note))
        if metrics is None:  # diverged: its record says failed; the study goes on without it
            continue
        val = metrics["val"]["age"]
        run.say(f"{title}: validation age accuracy {val['accuracy']:.3f} (majority class "
                f"{val['majority_baseline']:.3f}, n = {val['n']:,})")
        results.append({**metrics["model"], "accuracy": val["accuracy"], "majority": val["majority_baseline"]})

    study = write_study(run, exp, key, sources, base_config, run_deviations, note)
    return {"study": key, "results": results, "failures": [{"model": k, "reason": v} for k, v in run.failures.items()],
            "data": {d: data[d]["info"] for d in needed}, "runs_dir": run.paths["runs"], **study}


def train_model(run, spec: ModelSpec, exp: GuYangExperiment, data: dict, micro_batch: int, accumulation: int,
                recorder, skipped: list, note: str) -> dict:
    """Train one model of the plan, evaluate it on its validation rows, write its record; its metrics."""
    from agegender import atomic
    from agegender.data.age_groups import age_group_labels
    from agegender.data.pipeline import portable_report
    from agegender.plots import confusion_matrix, learning_curves
    from agegender.training import best_epoch

    run.seed(exp.seed)
    frame = model_frame(spec, data)
    datasets = make_datasets(frame, spec, exp, micro_batch, skipped)
    model = build_model(spec, exp, accumulation, run.strategy)
    run.say(f"training {get_label(spec)}: {datasets['n_train']:,} train / {datasets['n_val']:,} validation images, "
            f"{exp.input_size} px, {exp.epochs} epochs, batch {exp.batch_size}"
            + (f" ({accumulation} x {micro_batch})" if accumulation > 1 else ""))
    monitor = metric_key(spec.tasks, "age", prefix="val_")  # the paper's figure of merit (Figures 4-9)
    history, run_info = run.fit(model, datasets["train"], datasets["val"], recorder=recorder, epochs=exp.epochs,
                                monitor=monitor)
    val = evaluate(model, spec, datasets["val"])
    best_at = best_epoch(history, monitor)
    best = next((h for h in history if h.get("epoch") == best_at), {})
    with atomic.atomic_path(recorder.run_dir / "split.csv") as tmp:
        frame[["file", "split", "age", AGE_COLUMN, "gender", "race", "source"]].to_csv(tmp, index=False)
    metrics = {"model": {"source": spec.source, "backbone": spec.backbone, "task_set": spec.task_set,
                         "groups": spec.groups},
               "val": val, "n_train": datasets["n_train"], "n_val": datasets["n_val"],
               "training": {"seconds": run_info.get("seconds"), "epochs": len(history), "best_epoch": best.get("epoch"),
                            "best_val_age_accuracy": best.get(monitor),
                            "resumed_from_epoch": recorder.record.get("resumed_from_epoch"),
                            "evaluated_weights": "last epoch", "checkpoint": f"best {monitor}"}}
    figures = {"learning_curves": str(learning_curves(history, recorder.run_dir / "learning_curves.png",
                                                       get_label(spec)))}
    figures["age_confusion"] = str(confusion_matrix(val["age"]["confusion_matrix"], age_group_labels(spec.groups),
                                                    recorder.run_dir / "age_confusion.png",
                                                    f"Validation age groups, {get_label(spec)}"))
    recorder.finish(metrics, model_cells(spec, val["age"]["accuracy"], exp, note),
                    figures={k: relative(v, recorder.run_dir) for k, v in figures.items()},
                    pipeline_skipped=portable_report(skipped, frame))
    del model
    run.clear()
    return metrics


def write_study(run, exp: GuYangExperiment, key: str, sources: dict, base_config: dict, run_deviations: dict,
                note: str) -> dict:
    """The study: every complete model of these settings in this output folder, this command's included; its
    claims, Figures 4-9 and the ``study`` record."""
    from agegender import atomic

    study_results, study_dists, facts = collect_study(run.paths["runs"], key, sources)
    claims = evaluate_claims(study_results, study_dists, exp.similar_tolerance)
    folder = run.figures_dir(f"study-{key}")
    figure_paths = study_figures(study_results, study_dists, folder, exp)
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
    study = run.recorder("study", config={**base_config, "figure9_backbone": exp.figure9_backbone,
                                          "similar_tolerance": exp.similar_tolerance,
                                          "precision_policy": run.precision},
                         seed=exp.seed, data={"kind": _combined_kind(k for k in kinds if k), "dataset": "study",
                                              "models": len(study_results)},
                         run_id=f"study-{key}", resume=False, deviations=run_deviations)
    root = run.paths["root"]  # figure paths relative to the output folder
    study.finish({"claims": claims, "models": study_results}, study_cells,
                 figures={k: relative(v, root) for k, v in sorted(figure_paths.items())},
                 figures_dir=relative(folder, root))
    return {"study_results": study_results, "claims": claims, "figures": figure_paths, "figures_dir": folder,
            "records": {"study": study.record_path}}


def _checked_strategy(name: str, exp: GuYangExperiment, micro_batch: int, accumulation: int):
    """The ``tf.distribute`` strategy ``name``, after checking that it can run these settings (a one-line
    :class:`agegender.distribute.StrategyError` naming the flags to change otherwise)."""
    from agegender.distribute import make_strategy, per_replica_batch, require_single_replica

    dist_strategy = make_strategy(name)
    if accumulation > 1:
        require_single_replica(
            dist_strategy, f"gradient accumulation (--micro-batch-size {micro_batch}: {accumulation} x {micro_batch} "
                           f"= {exp.batch_size})",
            why="Keras's gradient_accumulation_steps fails under MirroredStrategy (a merge_call inside a cond)",
            fix=f"leave out --micro-batch-size: with --strategy {name} each replica gets --batch-size/replicas = "
                f"{exp.batch_size}/replicas images per step, which is how several GPUs fit the batch of "
                f"{exp.batch_size}; or keep --micro-batch-size with --strategy default (one device)")
    per_replica_batch(micro_batch, dist_strategy)  # the global batch must split evenly over the replicas
    return dist_strategy


def get_label(spec: ModelSpec) -> str:
    from agegender.models.efficientnet_groups import get_backbone

    return f"{get_backbone(spec.backbone).label} {TASK_ROW[spec.task_set]}, {spec.groups} age groups, " \
           f"{LABEL[spec.source]}"
