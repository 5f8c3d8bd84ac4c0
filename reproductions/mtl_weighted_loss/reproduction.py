"""Sundriyal on the shared runner: a protocol record, one record per model (method x task), the model-build record,
the figures, the command line.

Everything around the run (strategy, seeds, precision, records, resume-or-train, tables, the flags
every reproduction shares) is :mod:`agegender.experiment`'s; this module says what is Sundriyal's
own: the split (CORAL / CelebA), the backbone choice, the methods and tasks to train, their cells
and figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from agegender.data.pipeline import portable_report
from agegender.experiment import Options, Reproduction
from reproductions.common import PaperReproduction
from reproductions.mtl_weighted_loss import extra
from reproductions.mtl_weighted_loss.cells import dataset_cells, model_build_cells, model_cells, settings_cells
from reproductions.mtl_weighted_loss.config import (DATASETS, LISTS_IN_RUN_FOLDER, METHODS, PAPER, REPRODUCTION, ROW,
                                                    SMOKE_OUT, SundriyalExperiment, methods_of, mtl_key, smoke,
                                                    tasks_of)
from reproductions.mtl_weighted_loss.figures import (plot_age_distribution, plot_freeze_comparison,
                                                     plot_loss_vs_epoch, plot_loss_weights)
from reproductions.mtl_weighted_loss.paper import (check_backbone, deviations, heads_for, load_data, read_back,
                                                   train_one)


class Sundriyal(PaperReproduction, Reproduction):
    key, reproduction, Config, smoke_out = PAPER, REPRODUCTION, SundriyalExperiment, SMOKE_OUT
    title = ("Sundriyal (thesis 004): multi-task age / gender / race with learned loss weights and Early Freeze; "
             "trains the single-task and multi-task networks.")
    epilog = "Protocol, decisions, runtime and expected figures: python -m pydoc reproductions.mtl_weighted_loss"
    data_help = ("UTKFace folder (age_gender_race_timestamp.jpg.chip.jpg, searched recursively) or CelebA folder "
                 "(img_align_celeba/, list_attr_celeba.txt, list_eval_partition.txt); required unless --tfds-dir is "
                 "given")
    duplicates = True
    smoke_help = ("check the whole path fast: a two-convolution stand-in backbone (unless --backbone-weights is "
                  "given), 32x32 inputs, ~240 faces, 2 epochs, patience 1")
    batch_help = "not stated in the thesis: our choice"
    fresh_help = ("start a new run; without it, rerunning the same command resumes its earlier run: models already "
                  "complete are read back from their records (not trained again), an interrupted one continues after "
                  "its last completed epoch with its Early Freeze state (frozen layers, counters, best weights) and "
                  "learning-rate schedule; the tables and figures are drawn again either way")

    def add_arguments(self, parser) -> None:
        default = SundriyalExperiment()
        parser.add_argument("--dataset", required=True, choices=DATASETS,
                            help="utkface (age regression, gender, race; CORAL split; Tables 4.6-4.10, 4.16, 5.3-5.5) "
                                 "or celeba (Young/Old, gender; official partition; Tables 4.11-4.15, 5.1, 5.2)")
        parser.add_argument("--coral-csv-dir", default=None, metavar="DIR",
                            help="UTKFace only: folder holding CORAL's utk_train.csv and utk_test.csv (github.com/"
                                 "Raschka-research-group/coral-cnn, datasets/); default: --data-dir if it holds them, "
                                 "else a seeded CORAL-like split of the faces aged 21-60, labelled in every table note")
        parser.add_argument("--backbone", default=default.backbone, metavar="NAME",
                            help="the thesis backbone whose tables this run fills: senet50_128 (SE-ResNet-50-128D, "
                                 "Tables 4.10/4.15 and Chapter 5; default), resnet50 (VGGFace2 ResNet-50, Tables "
                                 "4.9/4.14, 5.2) or resnet50_imagenet (ImageNet ResNet-50 in place of resnet50); "
                                 "lightcnn, sphereface and facenet are not built")
        parser.add_argument("--backbone-weights", default=None, metavar="FILE",
                            help="HDF5 file of converted VGGFace2 weights for --backbone, loaded by layer name "
                                 "(layout: python -m pydoc agegender.models.face_resnets); without it the run trains "
                                 "an ImageNet ResNet-50 instead, named as a substitution in every table note; 'none' "
                                 "trains the requested architecture from random weights")
        parser.add_argument("--imagenet-weights", default="imagenet", metavar="FILE",
                            help="weights of the ImageNet ResNet-50 substitute: 'imagenet' (Keras downloads "
                                 "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5; needs network), that file's "
                                 "path (offline), or 'none' (random weights)")
        parser.add_argument("--method", default="all", choices=(*METHODS, "all"),
                            help="baseline (backbone features -> output layer, one model per task), single (the MTL "
                                 "layers of one task, one model per task), mtl (the proposed network) or all "
                                 "(default)")
        parser.add_argument("--loss", default=default.loss, choices=("weighted", "average"),
                            help="MTL loss: weighted (learned weights w on the simplex + lambda ||w||^2, Eq. 3.5; "
                                 "default) or average (plain mean of the task losses, Tables 5.1-5.3)")
        parser.add_argument("--early-freeze", default=default.early_freeze, action=argparse.BooleanOptionalAction,
                            help="MTL training: Early Freeze (Algorithm 1; default) or, with --no-early-freeze, early "
                                 "stopping of each converged task while the shared layers keep training (Table 5.4)")
        parser.add_argument("--lambda", dest="lam", type=float, default=default.lam, metavar="L",
                            help=f"lambda of Eq. 3.5, the weight of ||w||^2 (default {default.lam:g}; Table 5.5 sweeps "
                                 f"0.001, 0.01, 0.1, 1)")

    def check_arguments(self, args, parser) -> None:
        from agegender.models.face_resnets import get_backbone

        super().check_arguments(args, parser)
        try:
            spec = get_backbone(args.backbone)
        except ValueError as err:
            parser.error(f"--backbone: {err}")
        if spec.kind == "smoke":
            parser.error("--backbone: smoke_cnn is the --smoke stand-in; request a thesis backbone and pass --smoke")
        if args.lam < 0:
            parser.error("--lambda must be >= 0")
        if args.coral_csv_dir and args.dataset != "utkface":
            parser.error("--coral-csv-dir applies to --dataset utkface only")

    def base_config(self, args) -> SundriyalExperiment:
        from agegender.models.face_resnets import get_backbone

        weights = args.backbone_weights
        if weights and weights != "none" and get_backbone(args.backbone).kind == "imagenet":
            args.imagenet_weights, weights = weights, None
        return SundriyalExperiment(dataset=args.dataset, backbone=args.backbone, backbone_weights=weights,
                                   imagenet_weights=None if args.imagenet_weights == "none" else args.imagenet_weights,
                                   method=args.method, loss=args.loss, early_freeze=args.early_freeze, lam=args.lam)

    def smoke(self, cfg: SundriyalExperiment) -> SundriyalExperiment:
        return smoke(cfg)

    def inputs(self, args) -> dict:
        return {"data_dir": args.data_dir, "coral_csv_dir": args.coral_csv_dir}

    def execute(self, run, exp: SundriyalExperiment, *, data_dir=None, coral_csv_dir=None) -> dict:
        return _execute(run, exp, data_dir=data_dir, coral_csv_dir=coral_csv_dir)

    def report(self, result: dict) -> int:
        print()
        print(self.side_by_side(result["cells"]))
        print()
        return super().report(result)


SUNDRIYAL = Sundriyal()


def run(data_dir, exp: SundriyalExperiment, *, coral_csv_dir=None, out=None, data_kind_override: str | None = None,
        verbose: int | str = 2, log=print, fresh: bool = False, deterministic: bool = False, strategy: str = "default",
        tfds_dir=None) -> dict:
    """Run the reproduction; return paths, per-model metrics and the cells written.

    Rerunning the same command (same data, settings and seed) picks up its earlier run
    (:mod:`agegender.records`): models with a complete record are read back (metrics, cells,
    history, Early Freeze events; nothing is trained or loaded), an interrupted one continues
    after its last completed epoch, and the figures and tables are drawn again. ``fresh`` starts
    a new run instead. ``deterministic`` turns on TensorFlow's op determinism
    (:func:`agegender.training.seed_everything`). ``strategy`` (:mod:`agegender.distribute`): the
    models are built under its scope. ``tfds_dir``: read the prepared TFDS data there instead of ``data_dir``.
    """
    options = Options(out=out, fresh=fresh, deterministic=deterministic, strategy=strategy, tfds_dir=tfds_dir,
                      data_kind=data_kind_override, verbose=verbose, log=log)
    return SUNDRIYAL.run(exp, options, data_dir=data_dir, coral_csv_dir=coral_csv_dir)


def main(argv=None) -> int:
    """``python -m reproductions.mtl_weighted_loss``; errors a user can fix are one ``error:`` line."""
    return SUNDRIYAL.main(argv)


def _parser():
    return SUNDRIYAL.parser()


def experiment_from_args(args) -> SundriyalExperiment:
    """The experiment a parsed command line asks for (``make reproduce-mtl`` is checked through this)."""
    return SUNDRIYAL.configure(args)


def _other_variant(runs_dir: Path, exp: SundriyalExperiment, experiment: str) -> dict | None:
    """The newest complete record of ``experiment`` (the MTL run with the other Early Freeze setting)."""
    folder = Path(runs_dir) / REPRODUCTION / experiment
    records = []
    for path in sorted(folder.glob("*/record.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if record.get("status") == "complete" and record.get("seed") == exp.seed:
            records.append(record)
    return records[-1] if records else None


def experiment_name(exp: SundriyalExperiment, method: str, task: str | None = None) -> str:
    base = f"{exp.dataset}-{exp.backbone}{'-smoke' if exp.smoke else ''}"
    return f"{base}-{method}-{task}" if task else f"{base}-{method}-{mtl_key(exp)}"


def preprocessing(exp: SundriyalExperiment, tasks, input_size: int, data_kind: str):
    """How ``python -m agegender predict`` feeds a face to the model: 0-255 pixels at ``input_size``."""
    from agegender.preprocess import Preprocessing, face_preset

    # the declared heads: UTKFace (age - 21) / 40, sparse gender and race; CelebA 0 Young / 1 Old, whose ages
    # standing for the two classes are a rough guess
    return Preprocessing(input_size=input_size, pixel_scale=1.0, face=face_preset(data_kind, exp.dataset),
                         heads={t: head.head() for t, head in heads_for(exp.dataset, tasks, exp).items()})


def _execute(run, exp: SundriyalExperiment, *, data_dir, coral_csv_dir) -> dict:
    import tempfile

    from agegender import atomic
    from agegender.data.provenance import data_kind, describe_data
    from agegender.models.face_resnets import choose_backbone, get_backbone

    if exp.dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {exp.dataset!r}")
    if exp.method not in (*METHODS, "all"):
        raise ValueError(f"method must be one of {METHODS} or all, got {exp.method!r}")
    get_backbone(exp.backbone)  # unknown names fail here, loudly
    tfds_dir, paths = run.options.tfds_dir, run.paths
    protocol_name = f"{exp.dataset}-protocol{'-smoke' if exp.smoke else ''}"
    # generated CORAL-like lists go to a scratch folder first, then into the protocol run folder (whose id is
    # known once the recorder has looked for an earlier run of this command); the lists are a function of the
    # faces and the seed, so a rerun writes the same files
    with tempfile.TemporaryDirectory(prefix="sundriyal-lists-") as scratch:
        data = load_data(data_dir, exp, coral_csv_dir=coral_csv_dir, work_dir=scratch, log=run.log,
                         tfds_dir=tfds_dir)
        generated_lists = None  # {file name: bytes} of generated lists
        if str(data["info"].get("coral_csv_dir", "")).startswith(scratch):
            generated_lists = {p.name: p.read_bytes() for p in Path(data["info"]["coral_csv_dir"]).glob("*.csv")}
            data["info"]["coral_csv_dir"] = LISTS_IN_RUN_FOLDER  # the same for every rerun (the fingerprint)
    choice = choose_backbone(exp.backbone, exp.backbone_weights, substitute_weights=exp.imagenet_weights,
                             smoke=exp.smoke)
    check_backbone(choice)

    samples, split = data["samples"], data["split"]
    data_root = data_dir if tfds_dir is None else samples.root
    kind = run.options.data_kind or data_kind(data_root, exp.dataset, len(samples.frame))
    input_size = exp.input_size or choice.spec.input_size
    note = "; ".join(deviations(exp, choice))
    if exp.dataset == "utkface" and "CORAL-like" in data["info"]["coral_note"]:
        note = "; ".join([note, data["info"]["coral_note"]])
    run.say(f"{exp.dataset}: {len(samples.frame):,} faces read from {tfds_dir or data_dir} ({kind}); split "
            f"{data['full_counts']}" + (f", using {data['counts']}" if data["counts"] != data["full_counts"] else ""))
    run.say(f"{choice.note}; input {input_size}x{input_size}")

    run.start(seed=exp.seed, precision=exp.precision, batch_size=exp.batch_size, flag="--batch-size")
    config = {**dataclasses.asdict(exp), "precision_policy": run.precision, "input_size_used": input_size,
              "backbone": {"requested": choice.requested, "used": choice.used, "substituted": choice.substituted,
                           "weights": choice.weights, "note": choice.note},
              "coral_csv_dir": data["info"].get("coral_csv_dir"), "deterministic": bool(run.options.deterministic),
              "strategy": run.strategy_info}
    # named by a path relative to the data root and a fingerprint, never an absolute path (records are committed)
    data_info = {"kind": kind, **describe_data(exp.dataset, tfds_dir if tfds_dir is not None else data_root,
                                               **({"prepared": True} if tfds_dir is not None else {})),
                 "images_read": len(samples.frame), "files_skipped_by_reader": len(samples.skipped),
                 "split_counts": data["full_counts"], "counts_used": data["counts"],
                 **extra.portable_config(data["info"])}
    config = extra.portable_config(config)
    run_deviations = run.deviations(extra.record_deviations(exp, choice, SundriyalExperiment))

    # the protocol record's run id is shared by the models' records and the figures; a rerun of the same
    # command finds it again (--fresh: a new one)
    protocol = run.recorder(protocol_name, config=config, seed=exp.seed, data=data_info,
                            new_run_id=f"{run.stamp}-s{exp.seed}", deviations=run_deviations)
    run_id = protocol.run_id
    if protocol.resumed:
        run.say(f"picking up run {run_id} of the same command ({protocol.record['status']}); --fresh starts over")
    for file_name, content in (generated_lists or {}).items():
        with atomic.atomic_path(protocol.run_dir / "coral_like_lists" / file_name) as tmp:
            tmp.write_bytes(content)
    figures = run.figures_dir(run_id)
    if not protocol.complete:
        split.save_manifest(protocol.run_dir / "split.csv")
    smoke_note = "SMOKE RUN (--smoke), not a reproduction" if exp.smoke else ""
    p_cells = dataset_cells(data, exp, smoke_note)
    p_cells += extra.section41_cells(exp, samples, data_dir if tfds_dir is None else None, smoke_note)
    p_cells += settings_cells(exp, "read from the configuration")
    figure_paths: dict[str, Path] = {}
    if exp.dataset == "utkface":
        figure_paths["fig4_1_age_distribution"] = plot_age_distribution(samples.frame,
                                                                        figures / "fig4_1_age_distribution.png")

    all_tasks = tasks_of(exp.dataset)
    jobs = []
    for method in methods_of(exp):
        if method == "mtl":
            jobs.append((method, dict(all_tasks)))
        else:
            jobs += [(method, {t: all_tasks[t]}) for t in all_tasks]
    results, skipped, all_cells = {}, [], list(p_cells)
    for method, tasks in jobs:
        task = next(iter(tasks)) if method != "mtl" else None
        name = experiment_name(exp, method, task)
        recorder = run.recorder(name, config={**config, "method": method, "tasks": list(tasks)}, seed=exp.seed,
                                data=data_info, run_id=run_id,
                                preprocessing=preprocessing(exp, tuple(tasks), input_size, kind),
                                deviations=run_deviations)

        def train(method=method, tasks=tasks, recorder=recorder) -> dict:
            split.save_manifest(recorder.run_dir / "split.csv")
            freeze = "Early Freeze" if (exp.early_freeze or method != "mtl") else "early stopping of converged tasks"
            loss = (f", {exp.loss} loss" + (f" (lambda {exp.lam:g})" if exp.loss == "weighted" else "")
                    if method == "mtl" else "")
            run.say(f"training {method} ({', '.join(tasks)}): up to {exp.epochs} epochs, {freeze}, patience "
                    f"{exp.patience}{loss}")
            result = train_one(exp, choice, method, tasks, split, recorder=recorder, input_size=input_size,
                               skipped=skipped, verbose=run.options.verbose, log=run.log,
                               deterministic=run.options.deterministic, strategy=run.strategy)
            result["device"] = _device_name(recorder.record.get("device"))
            return result

        result = run.resume_or_train(recorder, name, train=train,
                                     read_back=lambda: read_back(recorder.record, method, tasks))
        result["recorder"], result["name"] = recorder, name
        results[name] = result
        test = result["metrics"]["test"]
        parts = [f"{t} " + ("MAE %.2f y" % test[t]["mae_years"] if "mae_years" in test[t]
                            else "acc %.1f %%" % (100 * test[t]["accuracy"])) for t in tasks]
        run.say(f"{name}: {result['seconds']:.1f} s, {len(result['history'])} epochs; test " + ", ".join(parts))
        figure_paths.update(_model_figures(run, exp, method, tasks, name, result, figures))
        if not recorder.complete:  # each model's record is complete as soon as it is: a kill later loses nothing
            result["cells"] = model_cells(exp, result, note)
            listed = {k: extra.relative(v, paths["root"]) for k, v in sorted(figure_paths.items())}
            recorder.finish(result["metrics"], [dict(c) for c in result["cells"]], figures=listed,
                            figures_dir=extra.relative(figures, paths["root"]),
                            pipeline_skipped=portable_report(skipped, split.frame), backbone=result["backbone"],
                            early_freeze=result["early_freeze"])
        all_cells += result["cells"]
        result.pop("model", None)  # model.keras holds the checkpoint; free the memory before the next model
        run.clear()

    figure_list = {k: extra.relative(v, paths["root"]) for k, v in sorted(figure_paths.items())}
    if not protocol.complete:
        protocol.finish({"split": {"counts": data["full_counts"], "counts_used": data["counts"]}},
                        [dict(c) for c in p_cells], figures=figure_list,
                        figures_dir=extra.relative(figures, paths["root"]),
                        backbone=config["backbone"], pipeline_skipped=portable_report(skipped, split.frame),
                        **({"coral_like_lists": "coral_like_lists"} if generated_lists is not None else {}))
    build_record = None
    if not exp.smoke:
        build = run.recorder("model_build", config={"backbones": ["resnet50", "senet50_128"],
                                                    "deterministic": bool(run.options.deterministic)},
                             seed=0, data={"kind": "none", "dataset": "none (model build)"}, run_id="keras")
        if build.complete:
            b_cells, build_record = [dict(c) for c in build.record["cells"]], build.record_path
        else:
            b_cells = model_build_cells()
            build_record = build.finish({}, [dict(c) for c in b_cells])
        all_cells += b_cells
    records = {"protocol": protocol.record_path, **{n: r["recorder"].record_path for n, r in results.items()}}
    if build_record is not None:
        records["model_build"] = build_record
    return {"run_id": run_id, "kind": kind, "split": split, "counts": data["full_counts"],
            "counts_used": data["counts"], "backbone": choice, "records": records,
            "metrics": {n: r["metrics"] for n, r in results.items()}, "results": results, "cells": all_cells,
            "figures": figure_paths, "figures_dir": figures,
            "read_back": sorted(n for n, r in results.items() if r.get("read_back"))}


def _model_figures(run, exp: SundriyalExperiment, method: str, tasks: dict, name: str, result: dict,
                   figures: Path) -> dict[str, Path]:
    """The figures of one model (drawn again for a record read back)."""
    from agegender.plots import confusion_matrix, learning_curves

    own: dict[str, Path] = {}
    label = f"{ROW[method]}, {', '.join(tasks)}"
    own[f"learning_curves_{name}"] = learning_curves(result["history"], figures / f"learning_curves_{name}.png", label)
    if method == "mtl":
        own[f"loss_weights_{name}"] = plot_loss_weights(
            result["history"], tuple(tasks), figures / f"loss_weights_{name}.png",
            f"Loss weights per epoch ({exp.loss}{', lambda %g' % exp.lam if exp.loss == 'weighted' else ''})")
        events = result["early_freeze"]["events"]
        fig = "fig5_1_loss_vs_epoch_early_freeze" if exp.early_freeze else "fig5_2_loss_vs_epoch_early_stopping"
        own[fig] = plot_loss_vs_epoch(
            result["history"], tuple(tasks), events, figures / f"{fig}.png",
            f"Loss vs epoch, {'Early Freeze' if exp.early_freeze else 'early stopping of converged tasks'} "
            f"(cf. Fig. {'5.1' if exp.early_freeze else '5.2'})")
        other_exp = dataclasses.replace(exp, early_freeze=not exp.early_freeze)
        other = _other_variant(run.paths["runs"], exp, experiment_name(other_exp, "mtl"))
        if other is not None:
            ours = (result["history"], events)
            theirs = (other.get("history", []), other.get("early_freeze", {}).get("events", []))
            pair = {"Early Freeze (Fig. 5.1)": ours if exp.early_freeze else theirs,
                    "early stopping of converged tasks (Fig. 5.2)": theirs if exp.early_freeze else ours}
            own["fig5_1_5_2_early_freeze_vs_early_stopping"] = plot_freeze_comparison(
                pair, tuple(tasks), figures / "fig5_1_5_2_early_freeze_vs_early_stopping.png")
    if exp.dataset == "celeba" and "age" in tasks and method in ("single", "mtl"):
        number = "5_3" if method == "single" else "5_4"
        test = result["metrics"]["test"]
        own[f"fig{number}_confusion_{method}"] = confusion_matrix(
            test["age"]["confusion_matrix"], ["Young", "Old"], figures / f"fig{number}_confusion_{method}.png",
            f"Age, test set, {ROW[method]} (cf. Fig. {number.replace('_', '.')})")
    return own


def _device_name(device) -> str:
    """A short name of the device a record says it ran on (for the Section 3.6.2 note)."""
    if isinstance(device, dict):
        gpus = device.get("gpus") or []
        return ", ".join(map(str, gpus)) if gpus else f"{device.get('cpu_count', '?')} CPU cores, no GPU"
    return "this machine"


def format_cells(cells: list[dict]) -> str:
    """This run's reproduced cells next to the published values, one line each."""
    return SUNDRIYAL.side_by_side(cells)
