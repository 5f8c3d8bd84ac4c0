"""Dey & Aggarwal: how a run is labelled, the data and split, the model, its evaluation and the table cells."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from agegender.errors import DataError
from reproductions.utkface_xception.config import (DUPLICATES_NOTE, DUPLICATES_VARIANT, GENDER_LABELS,
                                                   PAPER_DUPLICATES_NOTE, RACE_LABELS, SPLIT_TABLES, TASK_LABELS,
                                                   DeyExperiment, image_size)

# ----------------------------------------------------------------------------------------------
# labels of a run


def variant(exp: DeyExperiment) -> list[str]:
    """How the run departs from the paper's model, in words (empty for the paper's setting)."""
    from agegender.models.backbones import get_backbone

    parts = []
    if exp.weights is None:
        parts.append("from scratch")
    elif exp.weights != "imagenet" and Path(exp.weights).name != get_backbone(exp.backbone).imagenet_file:
        parts.append(f"weights {Path(exp.weights).name}")
    if exp.preprocess == "backbone":
        parts.append("backbone preprocess_input")
    if exp.keep_duplicates_together:
        parts.append(DUPLICATES_VARIANT)
    return parts


def table_row(exp: DeyExperiment) -> str:
    """Row label in Tables 1-3: the paper's, with the variant in brackets (``VGG19 (from scratch)``)."""
    from agegender.models.backbones import get_backbone

    label = get_backbone(exp.backbone).label
    parts = variant(exp)
    return f"{label} ({', '.join(parts)})" if parts else label


def experiment_name(exp: DeyExperiment) -> str:
    """Run-folder name: the backbone, plus ``-scratch`` / ``-file`` / ``-preprocess_input`` for variants."""
    name = exp.backbone
    if exp.weights is None:
        name += "-scratch"
    elif any(p.startswith("weights ") for p in variant(exp)):
        name += "-file"
    if exp.preprocess == "backbone":
        name += "-preprocess_input"
    if exp.keep_duplicates_together:
        name += "-duplicates_together"
    return name


def protocol_name(exp: DeyExperiment) -> str:
    """Run-folder name of the protocol record: ``protocol``, ``protocol-duplicates_together`` with the option."""
    return "protocol-duplicates_together" if exp.keep_duplicates_together else "protocol"


def paper_setting(exp: DeyExperiment) -> DeyExperiment:
    """The paper's experiment for ``exp``'s backbone: what ``record["deviations"]`` is measured against."""
    return dataclasses.replace(DeyExperiment(), backbone=exp.backbone)


def record_deviations(exp: DeyExperiment) -> dict:
    """``record["deviations"]``: the fields of ``exp`` that differ from the paper's setting of its backbone
    (a weights file by its name only: records hold no absolute paths)."""
    from agegender.records import deviations_from

    out = deviations_from(exp, paper_setting(exp))
    if "weights" in out and out["weights"] not in (None, "imagenet"):
        out["weights"] = Path(out["weights"]).name
    return out


def experiment_config(exp: DeyExperiment) -> dict:
    """``dataclasses.asdict(exp)`` for a record: a weights file named by its name and a hash of its bytes
    (the same file anywhere on any machine gives the same config), never by its absolute path."""
    config = dataclasses.asdict(exp)
    if exp.weights not in (None, "imagenet"):
        from agegender.data.splits import file_digest

        config["weights"] = Path(exp.weights).name
        config["weights_sha1"] = file_digest(exp.weights)
    return config


def deviations(exp: DeyExperiment, size: int) -> list[str]:
    """Notes naming every setting that is not the paper's (they go into every cell's note)."""
    from agegender.models.backbones import get_backbone

    paper = DeyExperiment()
    spec = get_backbone(exp.backbone)
    notes = []
    if exp.smoke:
        notes.append("SMOKE RUN (--smoke), not a reproduction")
    if size != paper.input_size:
        notes.append(f"input {size}x{size} (paper 224x224)")
    for field in ("epochs", "batch_size", "learning_rate", "head_units", "max_age"):
        ours, theirs = getattr(exp, field), getattr(paper, field)
        if ours != theirs:
            notes.append(f"{field} {ours} (paper {theirs})")
    if exp.max_images is not None:
        notes.append(f"a seeded subset of {exp.max_images} images")
    if exp.weights is None:
        notes.append("backbone trained from scratch (--weights none), not ImageNet transfer")
    elif exp.weights != "imagenet":
        notes.append(f"backbone weights from the file {Path(exp.weights).name}")
    if exp.preprocess == "backbone":
        notes.append(f"pixels through {spec.label}'s preprocess_input (mode {spec.preprocess}), not the paper's /255")
    if exp.keep_duplicates_together:
        notes.append(DUPLICATES_NOTE)
    return notes


# ----------------------------------------------------------------------------------------------
# data


def load_split(data_dir, exp: DeyExperiment, tfds_dir=None):
    """Read UTKFace under ``data_dir`` (or the prepared TFDS data in ``tfds_dir``) and apply the Dey split;
    returns (samples, frame used, split)."""
    from agegender.cli import read_samples
    from agegender.data.splits import make_split

    samples = read_samples("utkface", data_dir, tfds_dir)
    frame = samples.frame
    if exp.max_images is not None and exp.max_images < len(frame):
        frame = frame.sample(n=exp.max_images, random_state=exp.seed).sort_values("file").reset_index(drop=True)
    split = make_split(frame, "dey", seed=exp.seed, keep_duplicates_together=exp.keep_duplicates_together)
    counts = split.counts()
    if min(counts.values()) == 0:
        raise DataError(f"too few faces aged {exp.min_kept_age}-{exp.max_kept_age} for a train/validation/test "
                        f"split (split sizes {counts})", path=data_dir if tfds_dir is None else tfds_dir,
                        fix="point --data-dir at a folder with more UTKFace images (at least ~10 aged 10-65)")
    return samples, frame, split


def heads(exp: DeyExperiment) -> dict:
    """The three declared heads (:mod:`agegender.heads`), by output: age / ``max_age`` through a sigmoid with
    MSE (Sec. 3.2), ethnicity and gender softmax on one-hot labels with categorical cross-entropy (Sec. 3.5, 4.2)."""
    from agegender.heads import TASKS, age_sigmoid

    out = {"age": age_sigmoid(exp.max_age), "ethnicity": TASKS["dey_aggarwal/ethnicity"],
           "gender": TASKS["dey_aggarwal/gender"]}
    assert (out["ethnicity"].units, out["gender"].units) == (len(RACE_LABELS), len(GENDER_LABELS))
    return out


def targets(exp: DeyExperiment) -> dict:
    """The three model outputs' labels (Sec. 3.2: age / max_age; one-hot race and gender)."""
    return {output: spec.target() for output, spec in heads(exp).items()}


def make_datasets(split, exp: DeyExperiment, size: int, skipped: list) -> dict:
    """Train (shuffled), validation, test, and the unshuffled training part for Table 1; pixels 0-255."""
    from agegender.data.inputs import dataset

    out = {}
    for name, part, training in (("train", "train", True), ("val", "val", False), ("test", "test", False),
                                 ("train_eval", "train", False)):
        frame = split.part(part)
        report: list = []
        # tf.data or the numpy loader, by Keras backend; exact cardinality: see README.md (Keras 3 per-output losses)
        out[name] = dataset(frame, targets(exp), image_size=size, batch_size=exp.batch_size, training=training,
                            augment=None, seed=exp.seed, pixel_scale=1.0,  # the model preprocesses 0-255 pixels
                            report=report)
        n = len(frame) - len(report)
        if name != "train_eval":
            skipped.extend(r for r in report if r not in skipped)
        out[f"n_{name}"] = n
    return out


# ----------------------------------------------------------------------------------------------
# model


def build_model(exp: DeyExperiment, size: int | None = None, strategy=None):
    """Build and compile the multi-task model of ``exp`` (Sec. 3.4-3.5, 4.2).

    ``strategy``: a ``tf.distribute`` strategy whose scope the model is built and compiled under.
    """
    import contextlib

    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        return _build_model(exp, size)


def _build_model(exp: DeyExperiment, size: int | None):
    import keras

    from agegender.models.multihead import build_multihead

    model = build_multihead(exp.backbone, input_size=size or image_size(exp), weights=exp.weights,
                            preprocess=exp.preprocess, units=exp.head_units)
    model.compile(
        optimizer=keras.optimizers.RMSprop(learning_rate=exp.learning_rate, rho=exp.rho),  # Sec. 4.2
        loss={output: spec.keras_loss() for output, spec in heads(exp).items()},  # Sec. 4.2
        weighted_metrics={output: spec.keras_metrics() for output, spec in heads(exp).items()})  # MAE, accuracy
    return model


# ----------------------------------------------------------------------------------------------
# evaluation


def cross_entropy(onehot, probabilities) -> float:
    """Mean categorical cross-entropy as Keras computes it (probabilities clipped to [1e-7, 1 - 1e-7])."""
    p = np.asarray(probabilities, dtype="float64")
    p = np.clip(p / p.sum(axis=-1, keepdims=True), 1e-7, 1 - 1e-7)
    return float(np.mean(-np.sum(np.asarray(onehot, dtype="float64") * np.log(p), axis=-1))) if len(p) else float("nan")


def split_metrics(labels: dict, predictions: dict, weights: dict, max_age: float) -> dict:
    """Losses, age MAE (normalised and years), accuracies and per-class reports of one part."""
    from agegender.metrics import classification_report

    out: dict = {"n": int(len(labels["age"]))}
    keep = np.asarray(weights["age"]) > 0
    truth, pred = np.ravel(labels["age"])[keep].astype("float64"), np.ravel(predictions["age"])[keep].astype("float64")
    out["age_loss"] = float(np.mean((truth - pred) ** 2))
    out["age_mae"] = float(np.mean(np.abs(truth - pred)))
    out["age_mae_years"] = out["age_mae"] * max_age
    out["age_rmse_years"] = float(np.sqrt(out["age_loss"])) * max_age
    for task, names in TASK_LABELS.items():
        keep = np.asarray(weights[task]) > 0
        onehot, prob = np.asarray(labels[task])[keep], np.asarray(predictions[task])[keep]
        report = classification_report(onehot.argmax(-1), prob.argmax(-1), len(names))
        out[f"{task}_loss"] = cross_entropy(onehot, prob)
        out[f"{task}_accuracy"] = report["accuracy"]
        out[f"{task}_report"] = report
    out["loss"] = out["age_loss"] + out["ethnicity_loss"] + out["gender_loss"]  # loss weights 1
    return out


def evaluate(model, datasets: dict, exp: DeyExperiment, say=None) -> dict:
    """Tables 1-3 metrics of ``model`` on the training, validation and test parts; ``say`` hears the progress."""
    from agegender.training import collect_predictions

    out = {}
    for split, key in (("train", "train_eval"), ("val", "val"), ("test", "test")):
        progress = (lambda text, split=split: say(f"evaluating the {split} split: {text}")) if say else None
        out[split] = split_metrics(*collect_predictions(model, datasets[key], progress), max_age=exp.max_age)
    return out


def _cell(table, row, column, value, unit, note="") -> dict:
    cell = {"table": table, "row": row, "column": column, "value": float(value), "unit": unit}
    if note:
        cell["note"] = note
    return cell


def result_cells(exp: DeyExperiment, metrics: dict, notes: str) -> list[dict]:
    """Tables 1-3 and their per-class companions for one trained model (labels as in dey_aggarwal.csv)."""
    row = table_row(exp)
    cells = []
    for split, table in SPLIT_TABLES.items():
        m = metrics[split]
        for column, key, unit in (("Total loss", "loss", "loss"), ("Age loss", "age_loss", "loss"),
                                  ("Ethnicity loss", "ethnicity_loss", "loss"), ("Gender loss", "gender_loss", "loss"),
                                  ("Age MAE", "age_mae", "mae-normalised"),
                                  ("Ethnicity Accuracy", "ethnicity_accuracy", "accuracy"),
                                  ("Gender Accuracy", "gender_accuracy", "accuracy"),
                                  ("Age MAE (years)", "age_mae_years", "mae-years")):
            cells.append(_cell(table, row, column, m[key], unit, notes))
        for task in TASK_LABELS:
            cells.append(_cell(table, row, f"{task.capitalize()} majority-class accuracy",
                               m[f"{task}_report"]["majority_baseline"], "accuracy", notes))
        extra = f"{table} (per class)"
        for task, names in TASK_LABELS.items():
            report = m[f"{task}_report"]
            for i, name in enumerate(names):
                for metric in ("precision", "recall", "f1"):
                    label = "F1" if metric == "f1" else metric
                    cells.append(_cell(extra, row, f"{task.capitalize()} {name} {label}", report[metric][i],
                                       "scalar", notes))
            cells.append(_cell(extra, row, f"{task.capitalize()} macro F1", report["macro_f1"], "scalar", notes))
    return cells


def model_cells(exp: DeyExperiment, model, history: list[dict], notes: str) -> list[dict]:
    """Sections 3.2, 3.5 and 4.2, read from the built model and the training that ran."""
    from agegender.models.backbones import get_backbone

    size = int(model.inputs[0].shape[1])
    row = "input" if exp.input_size else f"input, {get_backbone(exp.backbone).label}"
    return [_cell("Section 3.2", row, "image size", size, "pixels", notes),
            _cell("Section 3.5", "heads", "dense units", model.get_layer("age_dense_1").units, "count", notes),
            _cell("Section 4.2", "training", "batch size", exp.batch_size, "count", notes),
            _cell("Section 4.2", "training", "epochs", len(history), "epochs", notes)]


def protocol_cells(samples, frame, split, exp: DeyExperiment) -> list[dict]:
    """Sections 3.1, 3.3 and 4.1 from the data read and the split."""
    note = f"a seeded subset of {len(frame)} of {len(samples.frame)} images" if len(frame) < len(samples.frame) else ""
    if exp.smoke:
        note = "; ".join(n for n in ("SMOKE RUN (--smoke), not a reproduction", note) if n)
    kept = split.frame
    counts = split.counts()
    races = frame.loc[frame["race"] >= 0, "race"]
    if exp.keep_duplicates_together:  # other split counts: rows of their own, never averaged with the paper's split
        note = "; ".join(n for n in (note, DUPLICATES_NOTE) if n)
    split_row = f"split ({DUPLICATES_VARIANT})" if exp.keep_duplicates_together else "split"
    split_note = note if exp.keep_duplicates_together else "; ".join(n for n in (note, PAPER_DUPLICATES_NOTE) if n)
    return [
        _cell("Section 3.1", "UTKFace", "max age", frame["age"].max(), "years", note),
        _cell("Section 3.1", "UTKFace", "race classes", races.nunique(), "count", note),
        _cell("Section 3.3", "UTKFace", "images", len(frame), "count", note),
        _cell("Section 3.3", "UTKFace", "kept age min", kept["age"].min(), "years", note),
        _cell("Section 3.3", "UTKFace", "kept age max", kept["age"].max(), "years", note),
        _cell("Section 3.3", "UTKFace", "mean age", frame["age"].mean(), "years",
              "; ".join(n for n in (note, "over every image read, before the 10-65 filter") if n)),
        _cell("Section 4.1", split_row, "train", counts["train"], "count", split_note),
        _cell("Section 4.1", split_row, "validation", counts["val"], "count", split_note),
        _cell("Section 4.1", split_row, "test", counts["test"], "count", split_note),
        _cell("Section 4.1", split_row, "total aged 10-65", len(kept), "count",
              "; ".join(n for n in (split_note, "the paper: 18,603 (README.md: the real files give a different count)")
                        if n)),
    ]


def preprocessing(exp: DeyExperiment, size: int, data_kind: str):
    """How ``python -m agegender predict`` feeds a face to the model: 0-255 pixels (the model scales them)."""
    from agegender.preprocess import Preprocessing, face_preset

    by_role = {spec.task: spec.head() for spec in heads(exp).values()}  # the race head's output is "ethnicity"
    return Preprocessing(input_size=size, pixel_scale=1.0, face=face_preset(data_kind, "utkface"),
                         heads={role: by_role[role] for role in ("age", "gender", "race")})
