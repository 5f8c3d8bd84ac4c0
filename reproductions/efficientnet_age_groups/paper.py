"""Gu & Yang: reading each dataset and its split, the rows of one model, datasets, the model, its evaluation and
the cells it fills."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from agegender.cli import read_samples
from agegender.errors import DataError
from reproductions.efficientnet_age_groups.config import (AGE_COLUMN, LABEL, TASK_ROW, GuYangExperiment,
                                                          ModelSpec)

# ----------------------------------------------------------------------------------------------
# data


def load_dataset(dataset: str, root, exp: GuYangExperiment, tfds_dir=None) -> dict:
    """Read one dataset (from ``root``, or the prepared TFDS data in ``tfds_dir``) and apply the ``gu_yang``
    split; returns samples, split and data facts."""
    from agegender.data.provenance import data_kind
    from agegender.data.splits import make_split

    notes = []
    if dataset == "imdb_wiki":
        samples = read_samples("imdb_wiki", root, tfds_dir, which=exp.imdb_subset,
                               min_face_score=exp.imdb_min_face_score)
        frame = samples.frame
        if exp.imdb_labelled_only:  # before sampling: the 20,000 are drawn among labelled faces only
            from agegender.data.imdb_wiki import labelled_faces

            frame, dropped = labelled_faces(frame)
            notes.append(f"{dropped['gender_unknown']:,} rows without a gender and {dropped['no_face']:,} without a "
                         f"detected face (face_score -inf) dropped before sampling (Sec. 5.1: each image has age "
                         f"and gender labels); {dropped['kept']:,} remain")
        if tfds_dir is None:  # prepared data hold only rows whose image was read (their paths are tfds://...)
            present = np.fromiter((os.path.isfile(p) for p in frame["path"]), dtype=bool, count=len(frame))
            if (~present).any():
                notes.append(f"{int((~present).sum()):,} metadata rows without an image file dropped before "
                             "sampling")
            frame = frame[present].reset_index(drop=True)
    else:
        samples = read_samples("utkface", root, tfds_dir)
        frame = samples.frame
    if tfds_dir is not None:
        root = samples.root
    split = make_split(frame, "gu_yang", seed=exp.seed, n=exp.n_images, n_train=exp.n_train,
                       keep_duplicates_together=exp.keep_duplicates_together)
    counts = split.counts()
    if counts["train"] == 0 or counts["val"] == 0:
        raise DataError(f"too few {LABEL[dataset]} images aged 1-80 for a train/validation split (split sizes "
                        f"{counts})", path=root, fix=f"point --{dataset.replace('_', '-')} at the {LABEL[dataset]} "
                                                   "folder (at least ~10 usable images)")
    kind = data_kind(root, dataset, len(samples.frame))
    from agegender.data.pipeline import portable_notes
    from agegender.data.provenance import describe_data

    # named by a path relative to the data root and a fingerprint, never an absolute path (records are committed)
    described = describe_data(dataset, tfds_dir if tfds_dir is not None else root,
                              **({"prepared": True} if tfds_dir is not None else {}))
    info = {"kind": kind, **described, "images_read": len(samples.frame),
            "files_skipped_by_reader": len(samples.skipped), "images_usable": len(frame),
            "dropped_outside_1_80": split.info.get("dropped_outside_1_80"), "counts": counts,
            "notes": portable_notes(notes + list(samples.notes), samples.root)}
    return {"samples": samples, "frame": frame, "split": split, "info": info}


def distribution(split, groups: int) -> dict:
    """Images per age group in the sample (train + validation): ``{label: count}`` in group order."""
    from agegender.data.age_groups import age_group, age_group_labels

    index = age_group(split.frame["age"].to_numpy(), groups)
    return {label: int((index == i).sum()) for i, label in enumerate(age_group_labels(groups))}


def model_frame(spec: ModelSpec, data: dict):
    """The rows one model trains and validates on, with the age-group column and the masks of Sec. 5.4.

    Single source: the dataset's split, ``gu_age_group`` from the age. Multi-source: IMDB-WIKI
    rows keep age and gender (race -1), UTKFace rows keep race only (age NaN, group -1, gender -1).
    A label of -1 / NaN gets weight 0 for its task in the pipeline.
    """
    import pandas as pd

    from agegender.data.age_groups import age_group

    def prepared(dataset):
        frame = data[dataset]["split"].frame.copy()
        frame[AGE_COLUMN] = age_group(frame["age"].to_numpy(), spec.groups)
        if dataset == "imdb_wiki":
            frame["race"] = -1  # IMDB-WIKI has no race label
        return frame

    if spec.source != "multi":
        return prepared(spec.source)
    imdb, utk = prepared("imdb_wiki"), prepared("utkface")
    utk = utk.assign(age=np.nan, **{AGE_COLUMN: -1, "gender": -1})  # Sec. 5.4: UTKFace rows carry only race
    both = pd.concat([imdb, utk], ignore_index=True)
    # the pipeline shuffles each epoch uniformly anyway; the seeded interleave keeps the manifest's row order mixed
    order = np.random.default_rng(spec.groups * 1000 + 7).permutation(len(both))
    return both.iloc[order].reset_index(drop=True)


def make_datasets(frame, spec: ModelSpec, exp: GuYangExperiment, micro_batch: int, skipped: list) -> dict:
    """Train (augmented, shuffled) and validation datasets of ``(image, {task: label}, {task: weight})``."""
    from agegender.data.inputs import dataset
    from agegender.data.pipeline import Augment

    targets = {task: head.target() for task, head in heads(spec).items()}  # sparse labels, AGE_COLUMN for age
    out = {}
    for name, training in (("train", True), ("val", False)):
        part = frame[frame["split"] == name].reset_index(drop=True)
        report: list = []
        # tf.data or the numpy loader, by Keras backend; exact cardinality: without it Keras 3 adds an empty step
        # per epoch and skews the per-output losses
        out[name] = dataset(part, targets, image_size=exp.input_size, batch_size=micro_batch, training=training,
                            augment=Augment(flip=exp.flip, rotation_deg=exp.rotation_deg) if training else None,
                            seed=exp.seed, pixel_scale=1.0,  # EfficientNet rescales 0-255 itself
                            report=report)
        n = len(part) - len(report)
        skipped.extend(r for r in report if r not in skipped)
        out[f"n_{name}"] = n
    return out


# ----------------------------------------------------------------------------------------------
# model


def heads(spec: ModelSpec) -> dict:
    """The declared heads of one model (:mod:`agegender.heads`): the age-group softmax of ``spec.groups``
    groups (on :data:`AGE_COLUMN`), gender and race softmax; sparse labels."""
    from agegender.heads import TASKS, gu_yang_groups

    return {task: gu_yang_groups(spec.groups) if task == "age" else TASKS[f"gu_yang/{task}"] for task in spec.tasks}


def metric_key(tasks, task: str, metric: str = "accuracy", prefix: str = "") -> str:
    """History key of a task's metric: ``val_age_accuracy`` for several outputs, ``val_accuracy`` for one."""
    return f"{prefix}{task}_{metric}" if len(tasks) > 1 else f"{prefix}{metric}"


def compile_model(model, tasks, exp: GuYangExperiment, accumulation: int = 1):
    """Sum of the task losses, each a masked mean (weight-0 samples add nothing); Adam; accuracy per task."""
    import keras

    optimizer = keras.optimizers.Adam(exp.learning_rate,
                                      gradient_accumulation_steps=accumulation if accumulation > 1 else None)
    losses = {t: keras.losses.SparseCategoricalCrossentropy(reduction="mean_with_sample_weight", name=f"{t}_ce")
              for t in tasks}
    model.compile(optimizer=optimizer, loss=losses, loss_weights={t: 1.0 for t in tasks},  # Sec. 2.2: the sum
                  weighted_metrics={t: [keras.metrics.SparseCategoricalAccuracy(name="accuracy")] for t in tasks},
                  run_eagerly=exp.run_eagerly)
    return model


def build_model(spec: ModelSpec, exp: GuYangExperiment, accumulation: int = 1, strategy=None):
    """Build and compile one model (under ``strategy.scope()`` when a ``tf.distribute`` strategy is given)."""
    import contextlib

    from agegender.models.efficientnet_groups import build_efficientnet_groups

    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        model = build_efficientnet_groups(spec.backbone, spec.groups, spec.tasks, input_size=exp.input_size,
                                          weights=exp.weights, trainable_backbone=not exp.freeze_backbone)
        return compile_model(model, spec.tasks, exp, accumulation)


def check_weights(backbones, weights) -> None:
    """Fail before any data is read when the weights cannot be had (a missing file, no network)."""
    from agegender.models.efficientnet_groups import get_backbone, resolve_weights

    for key in backbones:
        bb = get_backbone(key)
        resolved = resolve_weights(bb, weights)
        if resolved != "imagenet":
            continue
        import contextlib
        import io

        import keras

        try:
            with contextlib.redirect_stdout(io.StringIO()):
                keras.utils.get_file(bb.weights_file, bb.weights_url, cache_subdir="models")
        except Exception as err:  # the Keras download raises a bare Exception("URL fetch failure ...")
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            raise DataError(f"cannot download the ImageNet weights of {bb.label} ({reason})",
                            fix=f"on a machine with network access download {bb.weights_url} (and the other "
                                "efficientnetb*_notop.h5 files), copy them into one folder and pass --weights FOLDER "
                                "(or put them in ~/.keras/models/); --weights none trains from scratch") from None


# ----------------------------------------------------------------------------------------------
# evaluation and cells


def evaluate(model, spec: ModelSpec, val_ds) -> dict:
    """Validation accuracy, majority-class rate and confusion matrix per task, on the rows with a label."""
    from agegender.metrics import classification_report
    from agegender.training import collect_predictions

    y, p, w = collect_predictions(model, val_ds)
    out = {}
    for task in spec.tasks:
        keep = np.asarray(w[task]).ravel() > 0
        n_classes = p[task].shape[-1]
        report = classification_report(np.asarray(y[task]).ravel()[keep], np.argmax(p[task], axis=-1)[keep],
                                       n_classes)
        out[task] = {"accuracy": report["accuracy"], "majority_baseline": report["majority_baseline"],
                     "one_off_accuracy": report["one_off_accuracy"], "macro_f1": report["macro_f1"],
                     "n": report["n"], "confusion_matrix": report["confusion_matrix"]}
    return out


def deviations(exp: GuYangExperiment, accumulation: int, micro_batch: int) -> list[str]:
    """Notes naming every setting that differs from the defaults (the paper's where it states one)."""
    default = GuYangExperiment()
    stated = {"epochs", "batch_size", "n_images", "n_train", "imdb_labelled_only"}
    notes = ["SMOKE RUN (--smoke), not a reproduction"] if exp.smoke else []
    for field in ("epochs", "batch_size", "n_images", "n_train", "input_size", "weights", "freeze_backbone",
                  "learning_rate", "flip", "rotation_deg", "imdb_subset", "imdb_min_face_score", "imdb_labelled_only"):
        ours, base = getattr(exp, field), getattr(default, field)
        if ours != base:
            if field == "weights" and ours not in (None, "imagenet"):
                ours = f"file {Path(str(ours)).name}"
            notes.append(f"{field} {ours} (paper {base})" if field in stated else
                         f"{field} {ours} (default {base}; paper: not stated)")
    if accumulation > 1:
        notes.append(f"batch {exp.batch_size} as {accumulation} x {micro_batch} with gradient accumulation")
    if exp.keep_duplicates_together:
        notes.append("byte-identical files kept in one part of each sample's split (--keep-duplicates-together; "
                     "the paper's split does not look at file contents)")
    return notes


def _cell(table, row, column, value, unit, note="") -> dict:
    return {"table": table, "row": row, "column": column, "value": float(value), "unit": unit, "note": note}


def model_cells(spec: ModelSpec, accuracy: float, exp: GuYangExperiment, note: str) -> list[dict]:
    """The Figure 4 / 6 / 7 / 9 cells one model fills (labels exactly as in gu_yang.csv)."""
    from agegender.models.efficientnet_groups import get_backbone

    label = get_backbone(spec.backbone).label
    column = f"{spec.groups} age classes"
    cells = []
    if spec.source in ("imdb_wiki", "utkface"):
        figure = "Figure 4" if spec.source == "imdb_wiki" else "Figure 6"
        cells.append(_cell(figure, f"{label} {TASK_ROW[spec.task_set]}", column, accuracy, "accuracy", note))
        if spec.task_set == "age":  # Figure 7: the single-task models (README.md)
            cells.append(_cell("Figure 7", f"{label} {LABEL[spec.source]}", column, accuracy, "accuracy", note))
    if spec.groups == 3 and spec.backbone == get_backbone(exp.figure9_backbone).key:
        cells.append(_cell("Figure 9", f"{LABEL[spec.source]} {TASK_ROW[spec.task_set]}", column, accuracy,
                           "accuracy", note))
    return cells


def data_cells(dataset: str, info: dict, dists: dict, note: str) -> list[dict]:
    """Figure 5 (IMDB-WIKI, 10 groups, counts), Figure 8 (5 groups, percent) and Sec. 5.1 / 5.2 counts."""
    cells = []
    if dataset == "imdb_wiki":
        for label, count in dists[10].items():
            cells.append(_cell("Figure 5", label, "IMDB-WIKI images", count, "count", note))
    total = max(sum(dists[5].values()), 1)
    for label, count in dists[5].items():
        cells.append(_cell("Figure 8", label, LABEL[dataset], 100.0 * count / total, "percent", note))
    section = "Section 5.1" if dataset == "imdb_wiki" else "Section 5.2"
    counts = info["counts"]
    for column, value in (("images", counts["train"] + counts["val"]), ("train", counts["train"]),
                          ("validation", counts["val"])):
        cells.append(_cell(section, LABEL[dataset], column, value, "count", note))
    return cells
