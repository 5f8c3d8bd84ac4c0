"""Speziali: the run (protocol record, one record per network, figures, tables) and its command line."""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np

from agegender.cli import add_run_arguments, run_main
from agegender.config import apply_overrides
from agegender.records import deviations_from
from agegender.training import PRECISION_HELP, PRECISIONS
from reproductions.utkface_dual_cnn.config import (GENDER_LABELS, NETWORKS, PAPER, REPRODUCTION, SMOKE_OUT,
                                                   SpezialiExperiment,
                                                   smoke)
from reproductions.utkface_dual_cnn.figures import (plot_epoch_metrics, plot_face,
                                                    plot_first_n, plot_gradcam, plot_heatmaps, plot_iteration_loss,
                                                    plot_split)
from reproductions.utkface_dual_cnn.paper import (_iteration_logger, build_network, evaluate, load_split,
                                                  make_datasets, merge_skipped, network_cells, preprocessing,
                                                  protocol_cells, split_shares)

# ----------------------------------------------------------------------------------------------
# the run


def _out_paths(out) -> dict:
    from agegender.records import DEFAULT_RUNS_DIR

    root = DEFAULT_RUNS_DIR.parent if out is None else Path(out)
    return {"root": root, "runs": root / "runs", "tables": root / "tables", "readme": root / "README.md",
            "figures": root / "figures"}


def _relative(path, base) -> str:
    """``path`` relative to ``base`` (records name files this way, never by a path of this machine)."""
    try:
        return Path(path).resolve().relative_to(Path(base).resolve()).as_posix()
    except ValueError:
        return Path(path).name


def run_deviations(exp: SpezialiExperiment, precision: str) -> dict:
    """What this run changes from the paper's configuration (its own table rows): the experiment fields
    that differ from :class:`SpezialiExperiment` (``--smoke``, ``--set``, ``--epochs``) and any precision
    other than the paper's float32 (PyTorch's default), by the policy actually used."""
    out = deviations_from(exp, SpezialiExperiment(), ignore=("seed", "precision", "heatmap_index", "first_n"))
    if precision != "float32":
        out["precision"] = precision
    return out


def run(data_dir, exp: SpezialiExperiment, *, networks=("age", "gender", "dual"), out=None,
        data_kind_override: str | None = None, verbose: int | str = 2, log=print, fresh: bool = False,
        deterministic: bool = False, strategy: str = "default", tfds_dir=None) -> dict:
    """Run the reproduction; return paths, per-network metrics and the cells written.

    A rerun of the same command (same data, configuration and seed) picks up its earlier run
    (:mod:`agegender.records`): networks with a complete record are reloaded from their
    ``model.keras`` instead of trained, an interrupted one resumes after its last completed
    epoch. ``fresh`` starts a new run instead. ``deterministic`` turns on TensorFlow's op
    determinism (:func:`agegender.training.seed_everything`). ``strategy``: ``default``,
    ``mirrored`` or ``multiworker`` (:mod:`agegender.distribute`; the batch of 64 is the global
    batch, split over the replicas; the learning rates are the paper's). ``tfds_dir``: read the
    prepared TFDS data there instead of the raw folder ``data_dir``.
    """
    import datetime as _dt

    from agegender.data.provenance import data_kind, describe_data, relative_data_path

    unknown = [n for n in networks if n not in NETWORKS]
    if unknown or not networks:
        raise ValueError(f"unknown networks {unknown}; choose among {', '.join(NETWORKS)}")
    networks = [n for n in NETWORKS if n in networks]  # canonical order: age, gender, dual
    paths = _out_paths(out)
    t0 = time.time()
    from agegender.distribute import start_early

    start_early(strategy)  # a multi-worker strategy must exist before TensorFlow runs anything
    samples, frame, split = load_split(data_dir, exp, tfds_dir)  # before TensorFlow loads: a DataError stays one line
    data_root = data_dir if tfds_dir is None else samples.root

    import keras

    from agegender.distribute import make_strategy, strategy_config

    from agegender.models.activations import activation_maps, grad_cam
    from agegender.plots import confusion_matrix, learning_curves
    from agegender.records import RunRecorder
    from agegender.training import configure_precision, seed_everything, train
    from results.tables import generate

    kind = data_kind_override or data_kind(data_root, "utkface", len(frame))
    counts = split.counts()
    ks = split.info.get("ks_train_val", {})
    log(f"[speziali] {len(frame)} faces from {tfds_dir or data_dir} ({kind}); split {counts}; "
        f"KS train vs validation ages: D = {ks.get('statistic', float('nan')):.3f}, "
        f"p = {ks.get('p_value', float('nan')):.3f} (paper: p ~= 0.38)")

    distribution = make_strategy(strategy)
    # the paper's batch of 64 is the global batch: each replica gets 64 / replicas (no --batch-size flag here)
    strategy_info = strategy_config(strategy, distribution, exp.batch_size, flag=None)
    seed_everything(exp.seed, deterministic)
    precision = configure_precision(exp.precision)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    config = {**dataclasses.asdict(exp), "precision_policy": precision, "networks": list(networks),
              "deterministic": bool(deterministic), "strategy": strategy_info}
    deviations = run_deviations(exp, precision)
    if deviations:
        log(f"[speziali] deviations from the paper's configuration (own table rows): {deviations}")
    # named by dataset, path relative to the data root and a fingerprint: no path of this machine
    data = {"kind": kind, **describe_data("utkface", data_root),
            "images_read": len(samples.frame), "images_used": len(frame),
            "files_skipped_by_reader": len(samples.skipped), "names_repaired": len(samples.repaired),
            "counts": counts}
    if tfds_dir is not None:
        data["prepared"] = relative_data_path(tfds_dir)
    if strategy_info["replicas"] > 1:
        log(f"[speziali] {strategy} strategy: {strategy_info['replicas']} replicas, global batch {exp.batch_size} = "
            f"{strategy_info['per_replica_batch']} per replica; learning rates unchanged (the paper's)")

    # protocol record: the split, the KS test and the hyper-parameters read back from a built model. Its run
    # id is shared by the networks' records and the figures; a rerun of the same command picks it up again.
    protocol = RunRecorder(REPRODUCTION, "protocol", config=config, seed=exp.seed, data=data, paper=PAPER,
                           out=paths["runs"], resume=not fresh, new_run_id=f"{stamp}-s{exp.seed}",
                           deviations=deviations)
    run_id = protocol.run_id
    if protocol.resumed:
        log(f"[speziali] picking up run {run_id} of the same command ({protocol.record['status']}); "
            "--fresh starts over")
    figures = paths["figures"] / REPRODUCTION / run_id
    figure_paths: dict[str, Path] = {}
    figure_paths.update(plot_split(split, figures))
    keras.utils.set_random_seed(exp.seed)
    probe = build_network("dual", exp)
    split.save_manifest(protocol.run_dir / "split.csv")
    p_cells = protocol_cells(split, len(frame), exp, probe)
    del probe
    train_age_mean = float(split.part("train")["age"].mean())

    results: dict[str, dict] = {}
    skipped: list = []
    for key in networks:
        network = NETWORKS[key]
        keras.utils.set_random_seed(exp.seed)  # each network independent of which others run
        datasets = make_datasets(split, exp, network.tasks, skipped)
        model = build_network(network, exp, distribution)
        recorder = RunRecorder(REPRODUCTION, network.key, config=config, seed=exp.seed, data=data, paper=PAPER,
                               out=paths["runs"], run_id=run_id, resume=not fresh,
                               preprocessing=preprocessing(network, exp, kind), deviations=deviations)
        split.save_manifest(recorder.run_dir / "split.csv")
        keys = ["loss"] + ([f"{t}_loss" for t in network.tasks] if len(network.tasks) > 1 else [])
        iterations = _iteration_logger(datasets["n_train"], exp.batch_size, keys)
        if recorder.complete and not recorder.model_path.is_file():
            # a committed record on a fresh clone (models are not committed): read back, never retrained
            log(f"[speziali] {network.title}: complete record found ({_relative(recorder.record_path, paths['root'])})"
                " without its model.keras; reading its numbers back (figures that need the model are left out; "
                "--fresh trains again)")
            results[key] = {"network": network, "model": None, "history": recorder.record["history"],
                            "seconds": float(recorder.record["metrics"]["training"]["seconds"]),
                            "metrics": recorder.record["metrics"], "predictions": None, "recorder": recorder,
                            "iterations": _read_iterations(recorder.run_dir / "iteration_loss.csv"),
                            "datasets": datasets, "from_record": True}
            continue
        if recorder.complete:  # finished by an earlier run of this command: reload, do not train again
            log(f"[speziali] {network.title}: complete record found ({recorder.record_path}); loading its model "
                "instead of training (--fresh trains again)")
            model.load_weights(str(recorder.model_path))
            history = [dict(h) for h in recorder.record["history"]]
            seconds = float(recorder.record["metrics"]["training"]["seconds"])
            iterations.rows = _read_iterations(recorder.run_dir / "iteration_loss.csv")
        else:
            log(f"[speziali] training the {network.title} (lr {getattr(exp, network.lr_field)}, "
                f"{exp.input_size}x{exp.input_size}, up to {exp.epochs} epochs, patience {exp.patience})")
            info: dict = {}
            history = train(model, datasets["train"], datasets["val"], epochs=exp.epochs, recorder=recorder,
                            patience=exp.patience, verbose=verbose, extra_callbacks=[iterations], info=info)
            seconds = info["seconds"]  # summed over the processes of a resumed run
        metrics = evaluate(model, network, datasets, exp, train_age_mean)
        predictions = {s: metrics.pop(f"_{s}_predictions") for s in ("train", "val", "test")}
        best = min(history, key=lambda h: h.get("val_loss", np.inf)) if history else {}
        metrics["training"] = {"seconds": seconds, "epochs": len(history), "best_epoch": best.get("epoch"),
                               "last_train_loss": history[-1].get("loss") if history else None,
                               "last_val_loss": history[-1].get("val_loss") if history else None,
                               "stopped_early": len(history) < exp.epochs,
                               "resumed_from_epoch": recorder.record.get("resumed_from_epoch"),
                               "evaluated_weights": "best epoch (lowest validation loss)"}
        _write_iterations(iterations.rows, recorder.run_dir / "iteration_loss.csv")
        results[key] = {"network": network, "model": model, "history": history, "seconds": seconds,
                        "metrics": metrics, "predictions": predictions, "recorder": recorder,
                        "iterations": iterations.rows, "datasets": datasets}
        line = f"[speziali] {network.title}: {seconds:.1f} s, {len(history)} epochs"
        for split_name in ("train", "val", "test"):
            m = metrics[split_name]
            parts = []
            if "age_r2" in m:
                parts.append(f"R² {m['age_r2']:.3f}, MAE {m['age_mae_years']:.1f} y")
            if "gender_accuracy" in m:
                parts.append(f"accuracy {m['gender_accuracy']:.3f}")
            line += f"; {split_name} " + ", ".join(parts)
        log(line)
    skipped = merge_skipped(skipped)  # every dataset has been read once: decode failures are in the reports

    # figures per network and across networks
    first = results[networks[0]]["datasets"]
    image = _validation_image(first["val"], exp.heatmap_index)
    figure_paths["fig16_validation_face"] = plot_face(image, figures / "fig16_validation_face.png",
                                                      "validation face (cf. Fig. 16)")
    fig_numbers = {"age": ("07", "17"), "gender": ("08", "18"), "dual": ("09", "19")}
    cams = {}
    for key, res in results.items():
        network, model = res["network"], res["model"]
        loss_fig, heat_fig = fig_numbers[key]
        if model is None:  # read back from a record without its model
            continue
        name = f"fig{loss_fig}_loss_per_iteration_{key}"
        title = f"Training loss per iteration, {network.title} (cf. Fig. {int(loss_fig)})"
        figure_paths[name] = plot_iteration_loss(res["iterations"], figures / f"{name}.png", title)
        name = f"fig{heat_fig}_heatmaps_{key}"
        figure_paths[name] = plot_heatmaps(activation_maps(model, image), image, figures / f"{name}.png",
                                           f"Mean activation per convolution, {network.title} (cf. Fig. {heat_fig})")
        figure_paths[f"learning_curves_{key}"] = learning_curves(res["history"], figures / f"learning_curves_{key}.png",
                                                                 network.title)
        for task in network.tasks:
            cams[f"{task}, {'dual' if key == 'dual' else 'single'}"] = grad_cam(model, image, output=task)
    if cams:
        figure_paths["gradcam"] = plot_gradcam(image, dict(sorted(cams.items())), figures / "gradcam.png")
    singles = {NETWORKS[k].title: results[k]["history"] for k in ("age", "gender") if k in results}
    if singles:
        figure_paths["fig10_accuracy_per_epoch_single"] = plot_epoch_metrics(
            singles, figures / "fig10_accuracy_per_epoch_single.png", "Single-task CNNs (cf. Fig. 10)")
    if "dual" in results:
        figure_paths["fig11_accuracy_per_epoch_dual"] = plot_epoch_metrics(
            {"dual": results["dual"]["history"]}, figures / "fig11_accuracy_per_epoch_dual.png",
            "Multi-task CNN (cf. Fig. 11)")
    for key, number, label in (("gender", "12", "single"), ("dual", "13", "dual")):
        if key in results:
            matrix = results[key]["metrics"]["test"]["gender_confusion"]
            figure_paths[f"fig{number}_confusion_{label}"] = confusion_matrix(
                matrix, list(GENDER_LABELS), figures / f"fig{number}_confusion_{label}.png",
                f"Gender, test set, {NETWORKS[key].title} (cf. Fig. {number})")
    for key, number, label in (("age", "14", "single"), ("dual", "15", "dual")):
        if key in results and results[key]["predictions"] is not None:
            y, p = results[key]["predictions"]["test"]
            figure_paths[f"fig{number}_age_first{exp.first_n}_{label}"] = plot_first_n(
                y["age"], p["age"], exp.first_n, figures / f"fig{number}_age_first{exp.first_n}_{label}.png",
                f"Predicted vs true age, first {exp.first_n} test faces, {NETWORKS[key].title} (cf. Fig. {number})")
    figure_list = {k: _relative(v, paths["root"]) for k, v in sorted(figure_paths.items())}
    skipped = [{**item, "file": _relative(item["file"], data_root)} if "file" in item else item for item in skipped]

    # records
    all_cells = list(p_cells)
    protocol.finish({"split": {"counts": counts, "shares_percent": split_shares(counts), "ks_train_val": ks,
                               "train_age_mean": train_age_mean, "duplicates": split.info.get("duplicates")}},
                    [dict(c) for c in p_cells], figures=figure_list, figures_dir=_relative(figures, paths["root"]),
                    pipeline_skipped=skipped)
    for key, res in results.items():
        cells = network_cells(res["network"], res["history"], res["seconds"], res["metrics"], exp)
        all_cells += cells
        if res.get("from_record"):
            continue  # its record stays as it was finished
        res["recorder"].finish(res["metrics"], [dict(c) for c in cells], figures=figure_list,
                               figures_dir=_relative(figures, paths["root"]), pipeline_skipped=skipped,
                               iteration_loss="iteration_loss.csv")
    summary = generate(paths["runs"], paths["tables"], paths["readme"])
    return {"run_id": run_id, "kind": kind, "split": split, "counts": counts, "ks": ks,
            "records": {"protocol": protocol.record_path, **{k: r["recorder"].record_path for k, r in results.items()}},
            "metrics": {k: r["metrics"] for k, r in results.items()}, "cells": all_cells,
            "figures": figure_paths, "figures_dir": figures, "tables_dir": paths["tables"],
            "readme": paths["readme"], "tables": summary["tables"], "seconds": time.time() - t0}


def _validation_image(dataset, index: int):
    seen = 0
    for images, _, _ in dataset:
        images = np.asarray(images)
        if index < seen + len(images):
            return images[index - seen]
        seen += len(images)
    raise ValueError(f"heatmap_index {index} is beyond the validation set ({seen} faces)")


def _read_iterations(path) -> list[dict]:
    """The rows :func:`_write_iterations` wrote (empty when the file is absent)."""
    import csv

    if not Path(path).is_file():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        return [{k: (int(v) if k in ("iteration", "epoch") else float(v)) for k, v in row.items() if v != ""}
                for row in csv.DictReader(handle)]


def _write_iterations(rows: list[dict], path) -> Path:
    from agegender import atomic

    keys = [k for k in ("iteration", "epoch", "loss", "gender_loss", "age_loss") if any(k in r for r in rows)]
    lines = [",".join(keys)] + [",".join(repr(r[k]) if k in r else "" for k in keys) for r in rows]
    atomic.write_text(path, "\n".join(lines) + "\n")
    return Path(path)


def format_cells(cells: list[dict]) -> str:
    """This run's reproduced cells next to the published values, one line each."""
    from results.tables import format_cells as side_by_side

    return side_by_side(cells, PAPER)


# ----------------------------------------------------------------------------------------------
# command line


def _parser() -> argparse.ArgumentParser:
    default = SpezialiExperiment()
    parser = argparse.ArgumentParser(
        prog="python -m reproductions.utkface_dual_cnn",
        description=__doc__.split("\n\n")[0] + " Trains the networks, writes run records, figures and "
                    "the regenerated tables next to the published values.",
        epilog="Decisions, runtime and expected figures: python -m pydoc reproductions.utkface_dual_cnn")
    parser.add_argument("--data-dir", default=None, metavar="DIR",
                        help="UTKFace folder (age_gender_race_timestamp.jpg.chip.jpg files, searched recursively); "
                             "required unless --tfds-dir is given")
    parser.add_argument("--networks", default="age,gender,dual", metavar="LIST",
                        help="comma-separated networks to train: age (single-task regressor), gender (single-task "
                             "classifier), dual (two branches); default all three")
    parser.add_argument("--seed", type=int, default=default.seed, metavar="S",
                        help=f"seed of the split, the augmentation and the initial weights (default {default.seed})")
    parser.add_argument("--smoke", action="store_true",
                        help="check the whole path fast: 1 epoch, 32x32 inputs, a seeded subset of 240 faces; "
                             "writes under build/smoke/utkface_dual_cnn (in the repository) unless --out is given")
    parser.add_argument("--epochs", type=int, default=None, metavar="N",
                        help=f"maximum epochs per network (default {default.epochs}; early stopping with patience "
                             f"{default.patience} usually stops far earlier; with --smoke default 1)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="output root: records in DIR/runs, tables in DIR/tables, index DIR/README.md, figures "
                             "in DIR/figures (default: results/runs, results/tables, results/README.md, "
                             "results/figures)")
    parser.add_argument("--data-kind", choices=("real", "sample", "generated"), default=None,
                        help="label the data in records and tables; default: detected (generated faces carry a "
                             "marker file, fewer than 90%% of the 23,708 UTKFace files count as a sample)")
    parser.add_argument("--precision", choices=PRECISIONS, default=None,
                        help=f"Keras dtype policy (default {default.precision}: {PRECISION_HELP}); a precision other "
                             "than float32 (the paper's PyTorch default) is recorded as a deviation")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a field of the experiment (repeatable), e.g. --set lr_dual=0.001; the run is "
                             "recorded as deviating from the paper and gets its own table rows. Fields: "
                             + ", ".join(f.name for f in dataclasses.fields(SpezialiExperiment)))
    add_run_arguments(parser, duplicates=True,
                      fresh_help="start a new run; by default rerunning the same command (same data, options and "
                                 "seed) resumes its earlier run: networks already complete are reloaded, an "
                                 "interrupted one continues after its last completed epoch")
    return parser


def main(argv=None) -> int:
    """The command line; errors a user can fix are one ``error:`` line (:func:`agegender.cli.run_main`)."""
    return run_main(_main, argv)


def _main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.data_dir is None and args.tfds_dir is None:
        parser.error("--data-dir is required (or --tfds-dir)")
    networks = [n.strip() for n in args.networks.split(",") if n.strip()]
    bad = [n for n in networks if n not in NETWORKS]
    if bad or not networks:
        parser.error(f"--networks: unknown {', '.join(bad) or '(empty)'}; choose among {', '.join(NETWORKS)}")
    if args.epochs is not None and args.epochs < 1:
        parser.error("--epochs must be at least 1")
    exp = dataclasses.replace(SpezialiExperiment(), seed=args.seed)
    if args.smoke:
        exp = smoke(exp)
    if args.epochs is not None:
        exp = dataclasses.replace(exp, epochs=args.epochs)
    if args.precision is not None:
        exp = dataclasses.replace(exp, precision=args.precision)
    if args.keep_duplicates_together:
        exp = dataclasses.replace(exp, keep_duplicates_together=True)
    exp = apply_overrides(exp, args.set)
    out = args.out if args.out is not None or not args.smoke else SMOKE_OUT
    result = run(args.data_dir, exp, networks=networks, out=out, data_kind_override=args.data_kind,
                 fresh=args.fresh, deterministic=args.deterministic, strategy=args.strategy, tfds_dir=args.tfds_dir)
    print()
    print(format_cells(result["cells"]))
    print()
    print(f"[speziali] tables : {result['tables_dir']} (speziali__*.md), index {result['readme']}")
    print(f"[speziali] figures: {result['figures_dir']}")
    for key, path in result["records"].items():
        print(f"[speziali] record : {path}")
    print(f"[speziali] done in {result['seconds']:.0f} s")
    return 0
