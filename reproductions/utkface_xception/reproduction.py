"""Dey & Aggarwal on the shared runner: a protocol record, one record per backbone, the command line.

Everything around the run (strategy, seeds, precision, records, resume-or-train, tables, the flags
every reproduction shares) is :mod:`agegender.experiment`'s; this module says what is Dey &
Aggarwal's own: the split, the backbones to train, how each is trained, evaluated and drawn.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from agegender.errors import TrainingDiverged
from agegender.experiment import Options, Reproduction
from agegender.training import best_epoch as training_best_epoch
from reproductions.common import PaperReproduction
from reproductions.utkface_xception.config import (BACKBONE_ORDER, PAPER, REPRODUCTION, SMOKE_OUT, SPLIT_TABLES,
                                                   DeyExperiment, image_size, parse_weights, smoke)
from reproductions.utkface_xception.figures import draw_figures
from reproductions.utkface_xception.paper import (build_model, deviations, evaluate, experiment_config,
                                                  experiment_name, load_split, make_datasets, model_cells,
                                                  preprocessing, protocol_cells, protocol_name, record_deviations,
                                                  result_cells, table_row)


class DeyAggarwal(PaperReproduction, Reproduction):
    key, reproduction, Config, smoke_out = PAPER, REPRODUCTION, DeyExperiment, SMOKE_OUT
    title = "Dey & Aggarwal (paper 003): age, ethnicity and gender from UTKFace with six transfer-learning backbones."
    data_help = ("UTKFace folder (age_gender_race_timestamp.jpg.chip.jpg files, searched recursively); faces aged "
                 "10-65 are kept and split 9,115 : 3,907 : 5,581 (Sec. 4.1); required unless --tfds-dir is given")
    duplicates = True
    smoke_help = ("check the whole path fast: 1 epoch, each backbone's smallest input (32 px; 71 Xception, 75 "
                  "Inception v3, 64 transformer), a seeded subset of 160 faces, weights none unless --weights is "
                  "given; cells are labelled SMOKE RUN")
    batch_help = "Sec. 4.2: 16"
    fresh_help = ("start new runs; without it, rerunning the same command resumes its earlier run: backbones already "
                  "complete are read back, an interrupted one continues after its last completed epoch")

    def add_arguments(self, parser) -> None:
        default = DeyExperiment()
        parser.add_argument("--backbone", choices=(*BACKBONE_ORDER, "all"), default=default.backbone,
                            help=f"backbone under the three heads (default {default.backbone}, the paper's best): "
                                 "vgg19, resnet50, inception_v3, xception, mobilenet (keras.applications, whole and "
                                 "trainable), transformer (MobileNet feature map -> tokens -> self-attention encoder "
                                 "blocks), or all six in the paper's order (one run record each)")
        parser.add_argument("--weights", default=None, metavar="imagenet|none|PATH",
                            help="backbone initialisation: imagenet (default; Keras downloads the no-top ImageNet "
                                 "file, needs network; offline, the error names the file to copy), none (from "
                                 "scratch; the table row says so; the default with --smoke), or PATH to a local .h5: "
                                 "Keras's no-top ImageNet file of that backbone (for transformer: MobileNet's), or a "
                                 ".weights.h5 saved from the backbone; a PATH needs a single --backbone")
        parser.add_argument("--preprocess", choices=("paper", "backbone"), default=default.preprocess,
                            help="pixel scaling inside the model: paper = divide by 255 (Sec. 3.2, default); backbone "
                                 "= the backbone's own keras.applications preprocess_input (caffe for VGG19/ResNet50, "
                                 "[-1, 1] for the rest); its rows are labelled 'backbone preprocess_input' so the "
                                 "ablation of VGG19/ResNet50 at chance shows in the tables")

    def check_arguments(self, args, parser) -> None:
        super().check_arguments(args, parser)
        if args.weights is not None and parse_weights(args.weights) not in (None, "imagenet") and \
                args.backbone == "all":
            parser.error("--weights PATH fits one backbone: pass a single --backbone with it")

    def base_config(self, args) -> DeyExperiment:
        backbones = self.backbones(args)
        return dataclasses.replace(DeyExperiment(), backbone=backbones[0], preprocess=args.preprocess)

    def smoke(self, cfg: DeyExperiment) -> DeyExperiment:
        return smoke(cfg)

    def apply_flags(self, cfg: DeyExperiment, args) -> DeyExperiment:
        return dataclasses.replace(cfg, weights=parse_weights(args.weights)) if args.weights is not None else cfg

    @staticmethod
    def backbones(args) -> list[str]:
        return list(BACKBONE_ORDER) if args.backbone == "all" else [args.backbone]

    def inputs(self, args) -> dict:
        return {"data_dir": args.data_dir, "backbones": self.backbones(args)}

    def execute(self, run, exp: DeyExperiment, *, data_dir=None, backbones=None) -> dict:
        return _execute(run, exp, data_dir=data_dir, backbones=backbones)

    def report(self, result: dict) -> int:
        print()
        print(format_tables(result["cells"]))
        print()
        return super().report(result)


DEY = DeyAggarwal()


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
    options = Options(out=out, fresh=fresh, deterministic=deterministic, strategy=strategy, tfds_dir=tfds_dir,
                      data_kind=data_kind_override, verbose=verbose, log=log)
    return DEY.run(exp, options, data_dir=data_dir, backbones=backbones)


def main(argv=None) -> int:
    """``python -m reproductions.utkface_xception``; errors a user can fix are one ``error:`` line."""
    return DEY.main(argv)


def _parser():
    return DEY.parser()


def _relative_paths(files: dict, root) -> dict:
    """``files`` ({name: path}) relative to the output root ``root``, for a record (no absolute paths)."""
    root = Path(root).resolve()
    out = {}
    for key, value in files.items():
        path = Path(value).resolve()
        out[key] = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name
    return out


def _execute(run, exp: DeyExperiment, *, data_dir, backbones) -> dict:
    from agegender.data.provenance import data_kind, describe_data, relative_data_path
    from agegender.models.backbones import check_weights, get_backbone

    backbones = list(backbones or [exp.backbone])
    tfds_dir = run.options.tfds_dir
    samples, frame, split = load_split(data_dir, exp, tfds_dir)  # a DataError here stays one line, before TensorFlow
    data_root = data_dir if tfds_dir is None else samples.root
    exps = []
    for name in backbones:
        get_backbone(name)  # UnknownBackboneError lists the known names
        exps.append(dataclasses.replace(exp, backbone=name))
    for e in exps:  # fail before training anything when weights cannot be had
        size = image_size(e)
        check_weights(e.backbone, e.weights, (size, size, 3))

    kind = run.options.data_kind or data_kind(data_root, "utkface", len(frame))
    counts = split.counts()
    unusable = sum(1 for s in samples.skipped if s["reason"].startswith("image not usable"))
    run.say(f"{len(frame)} faces from {tfds_dir or data_dir} ({kind}); {len(samples.skipped)} file(s) skipped "
            f"({unusable} image(s) training cannot decode; the record's protocol run lists them); "
            f"{split.info.get('aged_10_65')} aged 10-65; split {counts} (paper {split.info.get('paper_counts')}); "
            + ("byte-identical files kept in one split "
               f"({split.info['duplicates']['groups_that_crossed']} group(s) moved, "
               f"{split.info['duplicates']['rows_moved']} file(s))" if exp.keep_duplicates_together else
               "byte-identical files split as the paper does"))
    # the paper's batch of 16 is the global batch: an uneven split over the replicas fails here, before training
    run.start(seed=exp.seed, precision=exp.precision, batch_size=exp.batch_size, flag="--batch-size",
              why="learning rate unchanged (RMSprop 1e-3)")
    # no absolute path: the folder relative to a data root, with a fingerprint of its files (provenance)
    data = {"kind": kind, **describe_data("utkface", data_root, fingerprint=tfds_dir is None),
            "images_read": len(samples.frame) + unusable, "images_used": len(frame),
            "files_skipped_by_reader": len(samples.skipped), "images_unusable": unusable,
            "names_repaired": len(samples.repaired), "aged_10_65": len(split.frame), "counts": counts,
            "paper_counts": split.info.get("paper_counts"),
            "duplicates_kept_together": bool(exp.keep_duplicates_together)}
    if tfds_dir is not None:
        data["prepared"] = relative_data_path(tfds_dir)

    protocol = run.recorder(protocol_name(exp),
                            config={**experiment_config(exp), "backbones": backbones, "precision_policy": run.precision,
                                    "deterministic": bool(run.options.deterministic), "strategy": run.strategy_info},
                            seed=exp.seed, data=data, new_run_id=f"{run.stamp}-s{exp.seed}",
                            deviations=run.deviations(record_deviations(exp)))
    run_id = protocol.run_id
    split.save_manifest(protocol.run_dir / "split.csv")
    p_cells = protocol_cells(samples, frame, split, exp)
    protocol.finish({"split": {"counts": counts, "paper_counts": split.info.get("paper_counts"),
                               "duplicates": split.info.get("duplicates")},
                     "images_skipped": samples.skipped[:1000]},
                    [dict(c) for c in p_cells])

    results, skipped, by_size = {}, [], {}
    for e in exps:
        size = image_size(e)
        if size not in by_size:
            by_size.clear()  # one cached set of datasets at a time
            by_size[size] = make_datasets(split, e, size, skipped)
        try:
            results[e.backbone] = run_backbone(e, split, by_size[size], run=run, run_id=run_id, data=data)
        except TrainingDiverged as err:  # its record is marked failed; the other backbones still run
            run.failures[e.backbone] = str(err)
            run.say(f"{table_row(e)}: {err}")
    all_cells = list(p_cells) + [c for r in results.values() for c in r["cells"]]
    return {"run_id": run_id, "kind": kind, "counts": counts, "split": split,
            "records": {"protocol": protocol.record_path, **{k: r["record"] for k, r in results.items()}},
            "metrics": {k: r["metrics"] for k, r in results.items()},
            "rows": {k: table_row(r["exp"]) for k, r in results.items()},
            "figures": {k: r["figures"] for k, r in results.items()}, "cells": all_cells,
            "pipeline_skipped": skipped, "figures_dir": run.figures_dir(run_id)}


def run_backbone(exp: DeyExperiment, split, datasets: dict, *, run, run_id: str, data: dict) -> dict:
    """Train, checkpoint, reload and evaluate one backbone; write its record and figures.

    A complete record of the same command is read back instead of trained again (``--fresh``
    trains again); an interrupted one resumes after its last completed epoch. The model is built
    and compiled under the run's ``tf.distribute`` strategy.
    """
    size = image_size(exp)
    run.clear()
    run.seed(exp.seed)  # each backbone independent of which others run
    model = build_model(exp, size, run.strategy)
    encoder = {}
    if exp.backbone == "transformer":
        layer = model.get_layer("transformer").get_layer("transformer_encoder")
        encoder = {k: layer.get_config()[k] for k in ("num_blocks", "d_model", "num_heads", "ff_dim", "dropout")}
    config = {**experiment_config(exp), "image_size": size, "row": table_row(exp), "precision_policy": run.precision,
              "optimizer": "RMSprop", "losses": {"age": "mse", "ethnicity": "categorical_crossentropy",
                                                 "gender": "categorical_crossentropy"},
              "parameters": int(model.count_params()), "deterministic": bool(run.options.deterministic),
              "strategy": run.strategy_info, **({"transformer_encoder": encoder} if encoder else {})}
    recorder = run.recorder(experiment_name(exp), config=config, seed=exp.seed, data=data, run_id=run_id,
                            preprocessing=preprocessing(exp, size, data["kind"]),
                            deviations=run.deviations(record_deviations(exp)))

    def read_back() -> dict:
        record = recorder.record
        return {"exp": exp, "record": recorder.record_path, "metrics": record["metrics"], "cells": record["cells"],
                "figures": record.get("figures", {}), "history": record["history"],
                "seconds": record["metrics"].get("training", {}).get("seconds")}

    def train() -> dict:
        split.save_manifest(recorder.run_dir / "split.csv")
        run.say(f"training {table_row(exp)}: {size}x{size}, {exp.epochs} epoch(s), batch {exp.batch_size}, "
                f"{datasets['n_train']} training faces, weights {exp.weights}, preprocess {exp.preprocess}")
        history, info = run.fit(model, datasets["train"], datasets["val"], recorder=recorder, epochs=exp.epochs,
                                monitor=exp.monitor)
        seconds = info["seconds"]  # summed over the processes of a resumed run
        best_epoch = training_best_epoch(history, exp.monitor)
        evaluated, what = run.checkpoint(recorder, model)  # Sec. 4.2: the checkpoint with the lowest validation loss
        which = (f"checkpoint of epoch {best_epoch} (best {exp.monitor})" if what == "checkpoint" else
                 "last weights (no checkpoint: the validation loss was never finite)")
        metrics = evaluate(evaluated, datasets, exp, run.say)
        metrics["training"] = {"seconds": seconds, "epochs": len(history), "best_epoch": best_epoch,
                               "evaluated_weights": which, "last_epoch": history[-1] if history else {}}
        notes = "; ".join(deviations(exp, size))
        cells = result_cells(exp, metrics, notes) + model_cells(exp, evaluated, history, notes)
        figures = draw_figures(exp, evaluated, history, metrics, datasets,
                               run.figures_dir(run_id) / experiment_name(exp))
        recorder.finish(metrics, [dict(c) for c in cells], figures=_relative_paths(figures, run.paths["root"]))
        test = metrics["test"]
        run.say(f"{table_row(exp)}: {seconds:.1f} s, {len(history)} epoch(s), best {best_epoch}; test loss "
                f"{test['loss']:.3f}, age MAE {test['age_mae']:.3f} ({test['age_mae_years']:.1f} y), ethnicity "
                f"{test['ethnicity_accuracy']:.3f}, gender {test['gender_accuracy']:.3f}")
        run.clear()
        return {"exp": exp, "record": recorder.record_path, "metrics": metrics, "cells": cells, "figures": figures,
                "history": history, "seconds": seconds}

    return run.resume_or_train(recorder, table_row(exp), train=train, read_back=read_back)


# ----------------------------------------------------------------------------------------------
# printing


TABLE_COLUMNS = (("Total loss", "Total"), ("Age loss", "Age"), ("Ethnicity loss", "Eth."), ("Gender loss", "Gen."),
                 ("Age MAE", "Age MAE"), ("Ethnicity Accuracy", "Eth. acc"), ("Gender Accuracy", "Gen. acc"),
                 ("Age MAE (years)", "MAE (y)"))


def format_tables(cells: list[dict]) -> str:
    """Tables 1-3 of this run: each reproduced row, then the paper's row for the same backbone."""
    pub = DEY.published()
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
