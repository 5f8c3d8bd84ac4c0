"""Sundriyal: the data and split (CORAL / CelebA), the datasets, the backbone and MTL network, training one model
with Early Freeze, and its evaluation."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agegender.cli import read_samples
from agegender.data.pipeline import portable_notes
from agegender.errors import DataError
from reproductions.mtl_weighted_loss.config import CORAL_TEST, CORAL_TRAIN, SundriyalExperiment, tasks_of

def deviations(exp: SundriyalExperiment, choice) -> list[str]:
    """Notes for every cell: the backbone actually used and every setting that is not the thesis's."""
    base = SundriyalExperiment()
    notes = []
    if exp.smoke:
        notes.append("SMOKE RUN (--smoke), not a reproduction")
    notes.append(choice.note)
    for field in ("epochs", "batch_size", "input_size", "patience", "lr_patience", "learning_rate", "max_images"):
        ours, theirs = getattr(exp, field), getattr(base, field)
        if ours != theirs:
            shown = {"max_images": "all", "input_size": "the backbone's"}.get(field) if theirs is None else theirs
            notes.append(f"{field} {ours} (default {shown})")
    if exp.keep_duplicates_together:
        notes.append("byte-identical files kept in one part of the split (--keep-duplicates-together; the thesis's "
                     "split does not look at file contents)")
    return notes


# ----------------------------------------------------------------------------------------------
# data


def load_data(data_dir, exp: SundriyalExperiment, *, coral_csv_dir=None, work_dir=None, log=print,
              tfds_dir=None) -> dict:
    """Read the dataset, apply the thesis's split, subsample for smoke runs; return frames and facts.

    ``tfds_dir``: read the prepared TFDS data there instead of the raw folder ``data_dir`` (the CORAL
    lists still come from ``coral_csv_dir``, or ``data_dir`` when it holds them).
    """
    from agegender.data.splits import make_split

    if exp.dataset == "utkface":
        samples = read_samples("utkface", data_dir, tfds_dir)
        frame = samples.frame
        csv_dir, coral_note = _coral_lists(data_dir, coral_csv_dir, frame, exp, work_dir)
        split = make_split(frame, "coral", seed=exp.seed, csv_dir=csv_dir, val_fraction=exp.val_fraction,
                           keep_duplicates_together=exp.keep_duplicates_together)
        split.frame["coral_label"] = split.frame["coral_label"].astype("float64")
        mismatch = int((split.frame["age"] - exp.age_min != split.frame["coral_label"]).sum())
        info = {"coral_csv_dir": str(csv_dir), "coral_note": coral_note, "label_age_mismatches": mismatch,
                "csv_rows_without_image": split.info.get("csv_rows_without_image")}
        if not len(split.frame):
            raise DataError("no UTKFace image of the CORAL lists was found under the data folder", path=data_dir,
                            fix="point --data-dir at the UTKFace folder the lists name (UTKFace/*.jpg.chip.jpg)")
    else:
        samples = read_samples("celeba", data_dir, tfds_dir, columns=("Young", "partition"),
                               attributes=("Male", "Young"))
        frame = samples.frame
        if samples.missing:
            frame = frame[~frame["file"].isin(set(samples.missing))].reset_index(drop=True)
        if not len(frame):
            raise DataError("none of the CelebA images listed in list_attr_celeba.txt was found", path=data_dir,
                            fix="put the aligned JPEGs in <data-dir>/img_align_celeba/")
        frame = frame.assign(age_class=1 - frame["Young"])  # 0 Young, 1 Old (Sec. 3.3.2: "Young or Old")
        split = make_split(frame, "celeba", seed=exp.seed, keep_duplicates_together=exp.keep_duplicates_together)
        split.frame = split.frame[split.frame["split"].isin(("train", "val", "test"))].reset_index(drop=True)
        info = {"images_absent": len(samples.missing), "notes": portable_notes(samples.notes, samples.root)}
    full_counts = split.counts()
    if exp.max_images is not None and exp.max_images < len(split.frame):
        split.frame = _subsample(split.frame, exp.max_images, exp.seed)
    counts = split.counts()
    if min(counts.values()) == 0:
        raise DataError(f"a split part is empty (sizes {counts})", path=data_dir,
                        fix="use a folder with more images (the split needs train, validation and test faces)")
    return {"samples": samples, "frame": frame, "split": split, "full_counts": full_counts, "counts": counts,
            "info": info}


def _subsample(frame, n: int, seed: int):
    """A seeded subset of about ``n`` rows keeping each split part's share (at least 8 rows per part)."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    parts = []
    for name in ("train", "val", "test"):
        part = frame[frame["split"] == name]
        k = min(len(part), max(8, int(round(n * len(part) / len(frame)))))
        parts.append(part.iloc[np.sort(rng.permutation(len(part))[:k])])
    return pd.concat(parts, ignore_index=True)


def _coral_lists(data_dir, coral_csv_dir, frame, exp: SundriyalExperiment, work_dir) -> tuple[Path, str]:
    """The folder of ``utk_train.csv`` / ``utk_test.csv``: the user's, or CORAL-like lists written to ``work_dir``."""
    for folder in (coral_csv_dir, data_dir):
        if folder is not None and all((Path(folder) / name).is_file() for name in ("utk_train.csv", "utk_test.csv")):
            return Path(folder), "CORAL csv split (utk_train.csv / utk_test.csv)"
    if coral_csv_dir is not None:
        raise DataError("utk_train.csv / utk_test.csv not found", path=coral_csv_dir,
                        fix="download them from github.com/Raschka-research-group/coral-cnn (datasets/) and pass "
                            "their folder as --coral-csv-dir")
    import pandas as pd

    in_range = frame[frame["age"].between(exp.age_min, exp.age_max)].sort_values("file").reset_index(drop=True)
    if len(in_range) < 4:
        raise DataError(f"only {len(in_range)} faces aged {exp.age_min}-{exp.age_max}", path=data_dir,
                        fix="pass --coral-csv-dir, or a folder with more UTKFace images")
    order = np.random.default_rng(exp.seed).permutation(len(in_range))
    n_test = int(round(len(in_range) * CORAL_TEST / (CORAL_TRAIN + CORAL_TEST)))
    folder = Path(work_dir) / "coral_like_lists"
    folder.mkdir(parents=True, exist_ok=True)
    for name, idx in (("utk_test.csv", order[:n_test]), ("utk_train.csv", order[n_test:])):
        rows = in_range.iloc[np.sort(idx)]
        names = rows["file"].map(lambda f: Path(f).name)
        pd.DataFrame({"file": names.to_numpy(), "age": (rows["age"] - exp.age_min).astype(int).to_numpy()}).to_csv(
            folder / name)
    return folder, ("CORAL lists not given: a seeded CORAL-like split of the faces aged 21-60 (13,147:3,287 train:"
                    "test, then 80:20) replaces utk_train.csv / utk_test.csv (--coral-csv-dir)")


def heads_for(dataset: str, tasks, exp: SundriyalExperiment) -> dict:
    """The declared heads (:mod:`agegender.heads`) of ``tasks``: UTKFace age = the CORAL label / 40 (Sec.
    3.3.2, decoded as label + 21 years), gender and race sparse; CelebA gender and Young / Old (``age_class``)."""
    from agegender.heads import TASKS, coral_age

    every = {t: TASKS[f"sundriyal/{dataset}/{t}"] for t in tasks_of(dataset)}
    if dataset == "utkface":
        every["age"] = coral_age(exp.age_scale, exp.age_min)
    return {t: every[t] for t in tasks}


def targets_for(dataset: str, tasks, exp: SundriyalExperiment) -> dict:
    return {t: head.target() for t, head in heads_for(dataset, tasks, exp).items()}


def make_datasets(split, exp: SundriyalExperiment, tasks, input_size: int, skipped: list) -> dict:
    """Train (shuffled), validation and test datasets with exact cardinality (Keras 3 per-task losses)."""
    from agegender.data.inputs import dataset

    out = {}
    targets = targets_for(exp.dataset, tasks, exp)
    for name, training in (("train", True), ("val", False), ("test", False)):
        frame = split.part(name)
        report: list = []
        # tf.data or the numpy loader, by Keras backend, with an exact number of batches
        out[name] = dataset(frame, targets, image_size=input_size, batch_size=exp.batch_size, training=training,
                            augment=None, seed=exp.seed, pixel_scale=1.0,  # backbones take 0-255 RGB
                            report=report)
        skipped.extend(r for r in report if r not in skipped)
        n = len(frame) - len(report)
        out[f"n_{name}"] = n
    return out


# ----------------------------------------------------------------------------------------------
# models and training


def check_backbone(choice) -> None:
    """Fail before any training when the substitute's ImageNet weights cannot be had (one-line DataError)."""
    if choice.used != "resnet50_imagenet" or choice.weights is None:
        return
    import contextlib
    import io

    import keras

    from agegender.models.face_resnets import IMAGENET_NOTOP, IMAGENET_URL, build_imagenet_resnet50

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            build_imagenet_resnet50((32, 32, 3), weights=choice.weights)
    except DataError:
        raise
    except Exception as err:  # the Keras download raises a bare Exception("URL fetch failure ...")
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise DataError(f"cannot get the ImageNet ResNet-50 weights of the substitute backbone ({reason})",
                        fix=f"pass converted face weights with --backbone-weights FILE; or download {IMAGENET_URL} "
                            f"on a machine with network and pass --imagenet-weights /path/to/{IMAGENET_NOTOP}; or "
                            "--backbone-weights none (random initial weights)") from None
    finally:
        keras.backend.clear_session()


def build_and_compile(exp: SundriyalExperiment, choice, method: str, tasks: dict, input_size: int, strategy=None):
    """Backbone + the method's layers for ``tasks``, compiled with the thesis's optimizer; (model, report).

    ``strategy``: a ``tf.distribute`` strategy whose scope the model is built and compiled under.
    """
    import contextlib

    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        return _build_and_compile(exp, choice, method, tasks, input_size)


def _build_and_compile(exp: SundriyalExperiment, choice, method: str, tasks: dict, input_size: int):
    import keras

    from agegender.models.face_resnets import build_backbone
    from agegender.models.loss_weighting import AdamL2
    from agegender.models.mtl_head import HeadConfig, build_model

    backbone, report = build_backbone(choice, input_size)
    head = HeadConfig(shared_units=tuple(exp.shared_units), task_units=exp.task_units, dropout=exp.dropout,
                      leaky_alpha=exp.leaky_alpha)
    model = build_model(backbone, tasks, method, loss=exp.loss, lam=exp.lam, seed=exp.seed, head=head,
                        init_stddev=exp.init_stddev)
    metrics = {t: [keras.metrics.MeanAbsoluteError(name="mae_scaled")] if spec.regression else
               [keras.metrics.SparseCategoricalAccuracy(name="accuracy")] for t, spec in tasks.items()}
    model.compile(optimizer=AdamL2(exp.learning_rate, l2=exp.weight_decay, beta_1=exp.beta_1, beta_2=exp.beta_2,
                                   epsilon=exp.adam_epsilon),
                  weighted_metrics=metrics)
    return model, report


def evaluate(model, datasets: dict, tasks: dict, exp: SundriyalExperiment) -> dict:
    """Per split (val, test): accuracy / per-class recall / confusion per class task, MAE (years) for age."""
    from agegender.metrics import classification_report, regression_report
    from agegender.training import collect_predictions

    out = {}
    for split in ("val", "test"):
        y, p, w = collect_predictions(model, datasets[split])
        m: dict = {}
        for task, spec in tasks.items():
            keep = np.asarray(w[task]) > 0
            if spec.regression:
                true_years = np.ravel(y[task])[keep] * exp.age_scale + exp.age_min
                pred_years = np.ravel(p[task])[keep] * exp.age_scale + exp.age_min
                r = regression_report(true_years, pred_years)
                m[task] = {"n": r["n"], "mae_years": r["mae"], "rmse_years": r["rmse"], "r2": r["r2"],
                           "mean_baseline_mae_years": r["mean_baseline_mae"]}
            else:
                labels = np.asarray(y[task])[keep]
                r = classification_report(labels, np.argmax(p[task][keep], axis=-1), spec.units)
                m[task] = {"n": r["n"], "accuracy": r["accuracy"], "per_class_accuracy": r["recall"],
                           "classes": list(spec.classes), "confusion_matrix": r["confusion_matrix"],
                           "majority_baseline": r["majority_baseline"], "macro_f1": r["macro_f1"]}
        out[split] = m
    return out


def train_one(exp: SundriyalExperiment, choice, method: str, tasks: dict, split, *, recorder, input_size: int,
              skipped: list, verbose, log, deterministic: bool = False, strategy=None) -> dict:
    """Train one model (one task for baseline / single, all for mtl); return history, metrics and events.

    An interrupted run of the same model resumes after its last completed epoch: the trainer restores
    the weights, the optimizer and the history from ``recorder.state_dir``, and the Early Freeze and
    learning-rate callbacks their counters, frozen layers and weight snapshots
    (:mod:`agegender.models.early_freeze`, "Resuming").
    """
    import keras

    from agegender.models.early_freeze import EarlyFreeze, ResumableReduceLROnPlateau
    from agegender.models.loss_weighting import weight_movement
    from agegender.models.mtl_head import layer_groups
    from agegender.training import seed_everything, train

    keras.backend.clear_session()
    seed_everything(exp.seed, deterministic)  # each model independent of which others run
    datasets = make_datasets(split, exp, tuple(tasks), input_size, skipped)
    model, backbone_report = build_and_compile(exp, choice, method, tasks, input_size, strategy)
    initial_weights = model.loss_weights()  # the seeded random start (a resumed run restores its state later)
    groups = layer_groups(model.network, tuple(tasks))
    mode = "freeze" if (exp.early_freeze or method != "mtl") else "stop"
    freezer = EarlyFreeze(groups["tasks"], groups["backbone"] + groups["shared"], patience=exp.patience, mode=mode,
                          log=log, state_dir=recorder.state_dir)
    plateau = ResumableReduceLROnPlateau(monitor="val_loss", factor=exp.lr_factor, patience=exp.lr_patience,
                                         verbose=0)
    info: dict = {}
    history = train(model, datasets["train"], datasets["val"], epochs=exp.epochs, recorder=recorder, patience=None,
                    verbose=verbose, extra_callbacks=[plateau, freezer], info=info)
    seconds = float(info["seconds"])  # summed over the processes of a resumed run
    if not info["trained"] and freezer.end_after_resume(model):  # killed between the last epoch and its end
        log(f"[sundriyal] {method}: the end-of-training restores of the interrupted run were done now")
    for entry in history:  # the trainer's history (every epoch once) has the keys the callbacks add (learning_rate)
        recorder.log_epoch(entry["epoch"], {k: v for k, v in entry.items() if k != "epoch"})
    metrics = evaluate(model, datasets, tasks, exp)
    summary = freezer.summary()
    metrics["training"] = {"seconds": seconds, "epochs": len(history), "early_freeze": summary,
                           "resumed_from_epoch": info.get("resumed_from_epoch"),
                           "initial_loss_weights": initial_weights, "final_loss_weights": model.loss_weights(),
                           "loss_weight_movement": (weight_movement(initial_weights, model.loss_weights())
                                                    if model.weighting.mode == "learned" else None),
                           "weighting": model.weighting.mode,
                           "lambda": exp.lam if model.weighting.mode == "learned" else None,
                           "n": {k: datasets[f"n_{k}"] for k in ("train", "val", "test")},
                           "evaluated_weights": "the final weights, after the Early Freeze / early stopping restores",
                           "checkpoint": "model.keras holds the epoch of lowest total validation loss "
                                         "(ModelCheckpoint), "
                                         "which can differ from the evaluated weights"}
    return {"model": model, "history": history, "metrics": metrics, "seconds": seconds, "early_freeze": summary,
            "backbone": backbone_report, "method": method, "tasks": tuple(tasks)}


def read_back(record: dict, method: str, tasks) -> dict:
    """What :func:`train_one` returns (and the cells), from the complete record of an earlier run; no model."""
    return {"history": [dict(h) for h in record.get("history", [])], "metrics": record["metrics"],
            "seconds": float(record["metrics"].get("training", {}).get("seconds") or 0.0),
            "early_freeze": record.get("early_freeze") or record["metrics"].get("training", {}).get("early_freeze", {}),
            "backbone": record.get("backbone"), "method": method, "tasks": tuple(tasks),
            "cells": [dict(c) for c in record.get("cells", [])], "read_back": True}
