"""Speziali on the shared runner: a protocol record and one record per network, the figures, the command line.

Everything around the run (strategy, seeds, precision, records, resume-or-train, tables, the flags
every reproduction shares) is :mod:`agegender.experiment`'s; this module says what is Speziali's
own: the split and the three networks, how each is trained and evaluated, its cells and figures.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from agegender.experiment import Options, Reproduction
from agegender.records import deviations_from
from agegender.training import best_epoch
from reproductions.common import PaperReproduction
from reproductions.utkface_dual_cnn.config import (GENDER_LABELS, NETWORKS, PAPER, REPRODUCTION, SMOKE_OUT,
                                                   SpezialiExperiment, smoke)
from reproductions.utkface_dual_cnn.figures import (plot_epoch_metrics, plot_face, plot_first_n, plot_gradcam,
                                                    plot_heatmaps, plot_iteration_loss, plot_split)
from reproductions.utkface_dual_cnn.paper import (_iteration_logger, build_network, evaluate, load_split,
                                                  make_datasets, merge_skipped, network_cells, preprocessing,
                                                  protocol_cells, split_shares)


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


class Speziali(PaperReproduction, Reproduction):
    key, reproduction, Config, smoke_out = PAPER, REPRODUCTION, SpezialiExperiment, SMOKE_OUT
    title = "Speziali (paper 000): one dual-task CNN vs two single-task CNNs for age and gender on UTKFace."
    data_help = ("UTKFace folder (age_gender_race_timestamp.jpg.chip.jpg files, searched recursively); required "
                 "unless --tfds-dir is given")
    duplicates = True
    smoke_help = "check the whole path fast: 1 epoch, 32x32 inputs, a seeded subset of 240 faces"
    batch_help = "Sec. III-B.2: 64 in both architectures"
    fresh_help = ("start a new run; by default rerunning the same command (same data, options and seed) resumes its "
                  "earlier run: networks already complete are reloaded, an interrupted one continues after its last "
                  "completed epoch")

    def add_arguments(self, parser) -> None:
        parser.add_argument("--networks", default="age,gender,dual", metavar="LIST",
                            help="comma-separated networks to train: age (single-task regressor), gender (single-task "
                                 "classifier), dual (two branches); default all three")

    def check_arguments(self, args, parser) -> None:
        super().check_arguments(args, parser)
        networks = [n.strip() for n in args.networks.split(",") if n.strip()]
        bad = [n for n in networks if n not in NETWORKS]
        if bad or not networks:
            parser.error(f"--networks: unknown {', '.join(bad) or '(empty)'}; choose among {', '.join(NETWORKS)}")

    def smoke(self, cfg: SpezialiExperiment) -> SpezialiExperiment:
        return smoke(cfg)

    def inputs(self, args) -> dict:
        return {"data_dir": args.data_dir, "networks": [n.strip() for n in args.networks.split(",") if n.strip()]}

    def execute(self, run, exp: SpezialiExperiment, *, data_dir=None, networks=("age", "gender", "dual")) -> dict:
        return _execute(run, exp, data_dir=data_dir, networks=networks)

    def report(self, result: dict) -> int:
        print()
        print(self.side_by_side(result["cells"]))
        print()
        return super().report(result)


SPEZIALI = Speziali()


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
    options = Options(out=out, fresh=fresh, deterministic=deterministic, strategy=strategy, tfds_dir=tfds_dir,
                      data_kind=data_kind_override, verbose=verbose, log=log)
    return SPEZIALI.run(exp, options, data_dir=data_dir, networks=networks)


def main(argv=None) -> int:
    """``python -m reproductions.utkface_dual_cnn``; errors a user can fix are one ``error:`` line."""
    return SPEZIALI.main(argv)


def _parser():
    return SPEZIALI.parser()


def _execute(run, exp: SpezialiExperiment, *, data_dir, networks) -> dict:
    import keras

    from agegender.data.provenance import data_kind, describe_data, relative_data_path

    unknown = [n for n in networks if n not in NETWORKS]
    if unknown or not networks:
        raise ValueError(f"unknown networks {unknown}; choose among {', '.join(NETWORKS)}")
    networks = [n for n in NETWORKS if n in networks]  # canonical order: age, gender, dual
    tfds_dir, paths = run.options.tfds_dir, run.paths
    samples, frame, split = load_split(data_dir, exp, tfds_dir)  # before TensorFlow loads: a DataError stays one line
    data_root = data_dir if tfds_dir is None else samples.root
    kind = run.options.data_kind or data_kind(data_root, "utkface", len(frame))
    counts = split.counts()
    ks = split.info.get("ks_train_val", {})
    run.say(f"{len(frame)} faces from {tfds_dir or data_dir} ({kind}); split {counts}; "
            f"KS train vs validation ages: D = {ks.get('statistic', float('nan')):.3f}, "
            f"p = {ks.get('p_value', float('nan')):.3f} (paper: p ~= 0.38)")

    # the paper's batch of 64 is the global batch: each replica gets 64 / replicas; learning rates the paper's
    run.start(seed=exp.seed, precision=exp.precision, batch_size=exp.batch_size, flag="--batch-size",
              why="learning rates unchanged (the paper's)")
    config = {**dataclasses.asdict(exp), "precision_policy": run.precision, "networks": list(networks),
              "deterministic": bool(run.options.deterministic), "strategy": run.strategy_info}
    deviations = run.deviations(run_deviations(exp, run.precision))
    if deviations:
        run.say(f"deviations from the paper's configuration (own table rows): {deviations}")
    # named by dataset, path relative to the data root and a fingerprint: no path of this machine
    data = {"kind": kind, **describe_data("utkface", data_root),
            "images_read": len(samples.frame), "images_used": len(frame),
            "files_skipped_by_reader": len(samples.skipped), "names_repaired": len(samples.repaired),
            "counts": counts}
    if tfds_dir is not None:
        data["prepared"] = relative_data_path(tfds_dir)

    # protocol record: the split, the KS test and the hyper-parameters read back from a built model. Its run
    # id is shared by the networks' records and the figures; a rerun of the same command picks it up again.
    protocol = run.recorder("protocol", config=config, seed=exp.seed, data=data, new_run_id=f"{run.stamp}-s{exp.seed}",
                            deviations=deviations)
    run_id = protocol.run_id
    if protocol.resumed:
        run.say(f"picking up run {run_id} of the same command ({protocol.record['status']}); --fresh starts over")
    figures = run.figures_dir(run_id)
    figure_paths: dict[str, Path] = dict(plot_split(split, figures))
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
        model = build_network(network, exp, run.strategy)
        recorder = run.recorder(network.key, config=config, seed=exp.seed, data=data, run_id=run_id,
                                preprocessing=preprocessing(network, exp, kind), deviations=deviations)
        split.save_manifest(recorder.run_dir / "split.csv")
        keys = ["loss"] + ([f"{t}_loss" for t in network.tasks] if len(network.tasks) > 1 else [])
        iterations = _iteration_logger(datasets["n_train"], exp.batch_size, keys)
        job = _Network(run, exp, network, model, datasets, recorder, iterations, train_age_mean)
        results[key] = run.resume_or_train(recorder, network.title, train=job.train, read_back=job.read_back)
        if not results[key].get("from_record") or results[key]["model"] is not None:
            _log_metrics(run, network, results[key])
    skipped = merge_skipped(skipped)  # every dataset has been read once: decode failures are in the reports

    figure_paths.update(_figures(results, exp, figures))
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
    return {"run_id": run_id, "kind": kind, "split": split, "counts": counts, "ks": ks,
            "records": {"protocol": protocol.record_path, **{k: r["recorder"].record_path for k, r in results.items()}},
            "metrics": {k: r["metrics"] for k, r in results.items()}, "cells": all_cells,
            "figures": figure_paths, "figures_dir": figures}


@dataclasses.dataclass
class _Network:
    """One network of the run: trained, or read back from its complete record."""

    run: object
    exp: SpezialiExperiment
    network: object
    model: object
    datasets: dict
    recorder: object
    iterations: object
    train_age_mean: float

    def train(self) -> dict:
        exp, network = self.exp, self.network
        self.run.say(f"training the {network.title} (lr {getattr(exp, network.lr_field)}, "
                     f"{exp.input_size}x{exp.input_size}, up to {exp.epochs} epochs, patience {exp.patience})")
        history, info = self.run.fit(self.model, self.datasets["train"], self.datasets["val"], recorder=self.recorder,
                                     epochs=exp.epochs, patience=exp.patience, extra_callbacks=[self.iterations])
        return self._evaluated(history, info["seconds"])  # seconds summed over the processes of a resumed run

    def read_back(self) -> dict:
        record, recorder = self.recorder.record, self.recorder
        seconds = float(record["metrics"]["training"]["seconds"])
        if not recorder.model_path.is_file():
            # a committed record on a fresh clone (models are not committed): read back, never retrained
            self.run.say(f"{self.network.title}: no model.keras beside the record; its numbers are read back "
                         "(figures that need the model are left out)")
            return {"network": self.network, "model": None, "history": record["history"], "seconds": seconds,
                    "metrics": record["metrics"], "predictions": None, "recorder": recorder,
                    "iterations": _read_iterations(recorder.run_dir / "iteration_loss.csv"),
                    "datasets": self.datasets, "from_record": True}
        self.model.load_weights(str(recorder.model_path))  # evaluated again: the figures need the predictions
        self.iterations.rows = _read_iterations(recorder.run_dir / "iteration_loss.csv")
        return self._evaluated([dict(h) for h in record["history"]], seconds)

    def _evaluated(self, history: list[dict], seconds: float) -> dict:
        exp = self.exp
        metrics = evaluate(self.model, self.network, self.datasets, exp, self.train_age_mean, self.run.say)
        predictions = {s: metrics.pop(f"_{s}_predictions") for s in ("train", "val", "test")}
        metrics["training"] = {"seconds": seconds, "epochs": len(history), "best_epoch": best_epoch(history),
                               "last_train_loss": history[-1].get("loss") if history else None,
                               "last_val_loss": history[-1].get("val_loss") if history else None,
                               "stopped_early": len(history) < exp.epochs,
                               "resumed_from_epoch": self.recorder.record.get("resumed_from_epoch"),
                               "evaluated_weights": "best epoch (lowest validation loss)"}
        _write_iterations(self.iterations.rows, self.recorder.run_dir / "iteration_loss.csv")
        return {"network": self.network, "model": self.model, "history": history, "seconds": seconds,
                "metrics": metrics, "predictions": predictions, "recorder": self.recorder,
                "iterations": self.iterations.rows, "datasets": self.datasets}


def _log_metrics(run, network, res: dict) -> None:
    line = f"{network.title}: {res['seconds']:.1f} s, {len(res['history'])} epochs"
    for split_name in ("train", "val", "test"):
        m = res["metrics"][split_name]
        parts = []
        if "age_r2" in m:
            parts.append(f"R² {m['age_r2']:.3f}, MAE {m['age_mae_years']:.1f} y")
        if "gender_accuracy" in m:
            parts.append(f"accuracy {m['gender_accuracy']:.3f}")
        line += f"; {split_name} " + ", ".join(parts)
    run.say(line)


def _figures(results: dict, exp: SpezialiExperiment, figures: Path) -> dict[str, Path]:
    """Figures per network and across networks (Figs. 7-19, Grad-CAM, learning curves)."""
    from agegender.models.activations import activation_maps, grad_cam
    from agegender.plots import confusion_matrix, learning_curves

    out: dict[str, Path] = {}
    first = next(iter(results.values()))["datasets"]
    image = _validation_image(first["val"], exp.heatmap_index)
    out["fig16_validation_face"] = plot_face(image, figures / "fig16_validation_face.png",
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
        out[name] = plot_iteration_loss(res["iterations"], figures / f"{name}.png", title)
        name = f"fig{heat_fig}_heatmaps_{key}"
        out[name] = plot_heatmaps(activation_maps(model, image), image, figures / f"{name}.png",
                                  f"Mean activation per convolution, {network.title} (cf. Fig. {heat_fig})")
        out[f"learning_curves_{key}"] = learning_curves(res["history"], figures / f"learning_curves_{key}.png",
                                                        network.title)
        for task in network.tasks:
            cams[f"{task}, {'dual' if key == 'dual' else 'single'}"] = grad_cam(model, image, output=task)
    if cams:
        out["gradcam"] = plot_gradcam(image, dict(sorted(cams.items())), figures / "gradcam.png")
    singles = {NETWORKS[k].title: results[k]["history"] for k in ("age", "gender") if k in results}
    if singles:
        out["fig10_accuracy_per_epoch_single"] = plot_epoch_metrics(
            singles, figures / "fig10_accuracy_per_epoch_single.png", "Single-task CNNs (cf. Fig. 10)")
    if "dual" in results:
        out["fig11_accuracy_per_epoch_dual"] = plot_epoch_metrics(
            {"dual": results["dual"]["history"]}, figures / "fig11_accuracy_per_epoch_dual.png",
            "Multi-task CNN (cf. Fig. 11)")
    for key, number, label in (("gender", "12", "single"), ("dual", "13", "dual")):
        if key in results:
            matrix = results[key]["metrics"]["test"]["gender_confusion"]
            out[f"fig{number}_confusion_{label}"] = confusion_matrix(
                matrix, list(GENDER_LABELS), figures / f"fig{number}_confusion_{label}.png",
                f"Gender, test set, {NETWORKS[key].title} (cf. Fig. {number})")
    for key, number, label in (("age", "14", "single"), ("dual", "15", "dual")):
        if key in results and results[key]["predictions"] is not None:
            y, p = results[key]["predictions"]["test"]
            out[f"fig{number}_age_first{exp.first_n}_{label}"] = plot_first_n(
                y["age"], p["age"], exp.first_n, figures / f"fig{number}_age_first{exp.first_n}_{label}.png",
                f"Predicted vs true age, first {exp.first_n} test faces, {NETWORKS[key].title} (cf. Fig. {number})")
    return out


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
    return SPEZIALI.side_by_side(cells)
