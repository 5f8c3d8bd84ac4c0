"""Jørgensen: the models, the Adience folds and validation hold-out, the run labels, datasets and compile step."""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

from agegender.cli import read_samples
from agegender.errors import DataError
from reproductions.adience_levi.config import EXPERIMENTS, XCEPTION_NOTOP, XCEPTION_URL, Experiment

# ----------------------------------------------------------------------------- models

def build_model(exp: Experiment, *, weights="config"):
    """The Keras model of ``exp`` at ``exp.image_size`` (``weights`` overrides ``exp.weights``)."""
    shape = (exp.image_size, exp.image_size, 3)
    if exp.architecture == "xception":
        from agegender.models.xception_transfer import build_xception_multitask

        return build_xception_multitask(input_shape=shape, weights=exp.weights if weights == "config" else weights,
                                        trainable_tail=exp.trainable_tail, dropout=exp.dropout)
    from agegender.models.levi_hassner import build_levi_hassner

    task = exp.tasks[0] if len(exp.tasks) == 1 else "multitask"
    return build_levi_hassner(task, "reduced", input_shape=shape, dropout=exp.dropout)


def model_facts() -> tuple[dict, list[dict]]:
    """Every model built at the paper's 227x227: ``({"models": counts}, Table 1/2 and Sec. 3.1/3.3 cells)``
    (:mod:`reproductions.adience_levi.builds`; computed once per process)."""
    from reproductions.adience_levi.builds import model_facts as facts

    return facts()


def _cell(table, row, column, value, unit, note="") -> dict:
    cell = {"table": table, "row": row, "column": column, "value": float(value), "unit": unit}
    if note:
        cell["note"] = note
    return cell



def check_transfer_weights(weights) -> None:
    """Fail early, with a one-line :class:`DataError`, when the Xception weights cannot be had.

    ``"imagenet"`` goes through the Keras download (cached in ``~/.keras/models``); a path
    must exist and load into Xception. Runs before any data is read or model trained.
    """
    if weights is None:
        return
    if weights != "imagenet" and not Path(weights).is_file():
        raise DataError("Xception weights file not found", path=weights,
                        fix=f"pass the path of {XCEPTION_NOTOP} (downloaded from {XCEPTION_URL}), "
                            "--weights imagenet (needs network) or --weights none")
    import contextlib
    import io

    import keras

    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):  # Keras prints "Downloading data from ..."
            keras.applications.Xception(include_top=False, weights=weights, input_shape=(71, 71, 3))
    except Exception as err:  # the Keras download raises a bare Exception("URL fetch failure ...")
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:240]
        if weights == "imagenet":
            raise DataError(f"cannot download the ImageNet weights of Xception ({reason})",
                            fix=f"on a machine with network access download {XCEPTION_URL}, copy it here and "
                                f"pass --weights /path/to/{XCEPTION_NOTOP} (or put it in ~/.keras/models/); "
                                "--weights none trains from scratch") from None
        raise DataError(f"cannot load these weights into Xception ({reason})", path=weights,
                        fix=f"pass Keras's ImageNet no-top file {XCEPTION_NOTOP} ({XCEPTION_URL})") from None
    finally:
        keras.backend.clear_session()


# ----------------------------------------------------------------------------- data

def load_adience(data_dir, exp: Experiment, *, data_kind: str | None = None, tfds_dir=None) -> tuple:
    """Read the fold files (duplicates kept), drop rows without an image; return (frame, data info).

    ``tfds_dir``: read the prepared TFDS data there (``python -m agegender.data prepare``) instead of
    the raw folder ``data_dir``.
    """
    import numpy as np
    import pandas as pd

    from agegender.data.provenance import data_kind as infer_kind

    samples = read_samples("adience", data_dir, tfds_dir, columns=("fold",), keep_duplicates=True)
    frame = samples.frame
    missing = set(samples.missing)
    if missing:
        frame = frame[~frame["file"].isin(missing)].reset_index(drop=True)
        if not len(frame):
            raise DataError(f"none of the {len(samples.frame):,} labelled rows has its image",
                            path=Path(samples.root) / "aligned",
                            fix="put the Adience aligned faces at <data-dir>/aligned/<user_id>/"
                                "landmark_aligned_face.<face_id>.<original_image>")
        print(f"[adience_levi] warning: {len(missing):,} images are absent under {samples.root}/aligned; "
              f"their rows are left out ({len(frame):,} rows remain)", file=sys.stderr)
    n_files = samples.files_seen
    if exp.max_rows_per_fold:
        rng = np.random.default_rng(exp.seed)
        parts = [part.iloc[np.sort(rng.permutation(len(part))[:exp.max_rows_per_fold])]
                 for _, part in frame.groupby("fold", sort=True)]
        frame = pd.concat(parts, ignore_index=True)
        n_files = min(n_files, len(frame))
    kind = data_kind or infer_kind(samples.root, "adience", n_files)
    from agegender.data.pipeline import portable_notes
    from agegender.data.provenance import describe_data

    # named by a path relative to the data root and a fingerprint, never an absolute path (records are committed)
    described = describe_data("adience (aligned faces, official fold files, duplicates kept)",
                              tfds_dir if tfds_dir is not None else samples.root, **({"prepared": True} if tfds_dir
                                                                                    is not None else {}))
    info = {"kind": kind, **described, "rows_read": samples.files_seen, "rows_used": int(len(frame)),
            "images_absent": len(missing), "notes": portable_notes(samples.notes, samples.root)}
    return frame, info


def fold_split(frame, exp: Experiment, fold: int, *, protocol: str = "folds", levi_splits=None,
               data_dir=None):
    """The train/val/test split of ``fold`` for ``exp`` (validation drawn as ``exp.validation``)."""
    from agegender.data.splits import make_split

    if protocol == "levi":
        split = _levi_split(exp, fold, levi_splits, data_dir)
        if exp.max_rows_per_fold:  # smoke: only the images of the sampled fold-file rows
            split.frame = split.frame[split.frame["file"].isin(set(frame["file"]))].reset_index(drop=True)
    else:
        split = make_split(frame, "adience_folds", test_fold=fold, tasks=split_tasks(exp), seed=exp.seed,
                           keep_duplicates_together=exp.keep_duplicates_together)
        if exp.validation == "test":
            test = split.frame[split.frame["split"] == "test"].assign(split="val")
            split.frame = _concat(split.frame, test)
            split.info["validation"] = "the test fold (optimistic: early stopping sees the test data)"
        else:
            _hold_out_users(split, exp.val_fraction, exp.seed + fold)
    split.info["counts"] = split.counts()
    for part in ("train", "val", "test"):
        if not split.counts()[part]:
            raise DataError(f"fold {fold} has no {part} rows for the {exp.name} model", path=data_dir,
                            fix="check the fold files, or use more rows (smoke runs sample 200 per fold)")
    return split


def relative(path, base) -> str:
    """``path`` relative to ``base`` (POSIX form): records name their files so, never by a machine path."""
    return Path(os.path.relpath(Path(path).resolve(), Path(base).resolve())).as_posix()


def _join(*notes: str) -> str:
    return "; ".join(n for n in notes if n)


def _concat(*frames):
    import pandas as pd

    return pd.concat(frames, ignore_index=True)


def _hold_out_users(split, fraction: float, seed: int) -> None:
    """Move whole training users to ``val`` until they hold ``fraction`` of the training images."""
    import numpy as np

    frame = split.frame
    train = frame[frame["split"] == "train"]
    sizes = train.groupby("group", sort=True).size()
    if len(sizes) < 2:
        raise DataError(f"cannot hold out validation users: the training folds have {len(sizes)} user(s)",
                        fix="pass --validation test, or use data with more users per fold")
    target = fraction * len(train)
    chosen, total = [], 0
    for i in np.random.default_rng(seed).permutation(len(sizes)):
        if total >= target or len(chosen) == len(sizes) - 1:
            break
        if chosen and total + sizes.iloc[i] > 1.5 * target:
            continue  # skip a user that would overshoot by far; the first one is always taken
        chosen.append(sizes.index[i])
        total += int(sizes.iloc[i])
    frame.loc[(frame["split"] == "train") & frame["group"].isin(chosen), "split"] = "val"
    split.info["validation"] = (f"{len(chosen)} of {len(sizes)} training users held out "
                                f"({total} of {len(train)} images, target {fraction:.0%}); subject-exclusive")
    split.info["val_users"] = sorted(map(str, chosen))


def _levi_split(exp: Experiment, fold: int, levi_splits, data_dir):
    """Levi & Hassner's per-fold lists; for the joint set (or two tasks) the gender lists joined with the age
    labels, so that every model of the default configuration sees the same images."""
    from agegender.data.adience_levi import read_levi_splits
    from agegender.data.splits import Split

    if levi_splits is None:
        raise DataError("--protocol levi needs --levi-splits", fix="pass --levi-splits DIR (test_fold_is_0 ... 4)")
    needed = split_tasks(exp)
    lists = {task: read_levi_splits(levi_splits, data_dir, fold=fold, task=task) for task in needed}
    frames, absent = [], set()
    first = needed[0]
    for part in ("train", "val", "test"):
        frame = lists[first][part].frame.assign(split=part)
        absent |= set(lists[first][part].missing)
        if len(needed) == 2:
            ages = lists["age"][part].frame.drop_duplicates("file").set_index("file")["age_group"]
            frame["age_group"] = frame["file"].map(ages).fillna(-1).astype("int64")
            frame = frame[frame["age_group"] >= 0]
        frames.append(frame)
    frame = _concat(*frames)
    frame = frame[~frame["file"].isin(absent)].reset_index(drop=True)
    split = Split("levi", frame, {"test_fold": fold, "validation": "Levi & Hassner's val list",
                                  "images_absent": len(absent), "tasks": list(needed)})
    if not len(frame):
        raise DataError("no listed image was found", path=Path(data_dir) / "aligned",
                        fix="pass --data-dir the folder holding aligned/")
    split.info["users_in_test_and_train"] = len(
        set(frame.loc[frame.split == "test", "group"]) & set(frame.loc[frame.split != "test", "group"]))
    return split


# ----------------------------------------------------------------------------- training

def _head(task: str):
    """The declared head of ``task`` (:mod:`agegender.heads`): gender one sigmoid unit, binary CE; age the
    8 Adience groups, sparse CE (Table 1, Sec. 3.4)."""
    from agegender.heads import TASKS

    return TASKS[f"jorgensen/{task}"]


TARGET_KINDS = {t: (_head(t).column, _head(t).encoding) for t in ("gender", "age")}  # as the heads declare them
CENTRE_NOTE = ("test view: the centre 227x227 crop (our choice, the paper names none); Table 3's Baseline* row is "
               "Levi & Hassner's over-sampled (10-crop) result: compare it with 'over-sampled (10 crops)' in "
               "Table 3 (extra)")
OVERSAMPLED_NOTE = ("centre + 4 corner crops and their mirrors, averaged: Levi & Hassner's over-sampling, the test "
                    "behind Table 3's Baseline* row (like for like with it)")
LOSSES = {t: _head(t).keras_loss() for t in ("gender", "age")}  # Sec. 3.4, as the heads declare them


def split_tasks(exp: Experiment) -> tuple[str, ...]:
    """The labels a row must carry to be used: both (Sec. 2.1's joint set, the default) or the model's own."""
    return ("gender", "age") if exp.row_filter == "joint" else exp.tasks


def table3_row(exp: Experiment) -> str:
    """Table 3 row label; variants that are not the paper's model get a row of their own."""
    row = exp.row
    if split_tasks(exp) != split_tasks(EXPERIMENTS[exp.name]):
        row += " (per-task rows)"
    if exp.architecture == "xception" and exp.weights is None:
        row += " (no ImageNet weights, from scratch)"
    if len(exp.tasks) == 2 and exp.gamma != EXPERIMENTS[exp.name].gamma:
        row += f" (γ = {exp.gamma:g})"
    if exp.keep_duplicates_together:
        row += " (duplicates in one split)"
    return row


def deviations(exp: Experiment, protocol: str) -> list[str]:
    """Notes naming every setting of ``exp`` that is not the paper's."""
    paper = EXPERIMENTS[exp.name]
    notes = []
    if exp.smoke:
        notes.append("SMOKE RUN (--smoke), not a reproduction")
    for field in ("epochs", "batch_size", "image_size", "load_size", "patience", "learning_rate", "flip", "dropout",
                  "monitor", "trainable_tail", "max_rows_per_fold"):
        ours, theirs = getattr(exp, field), getattr(paper, field)
        if ours != theirs:
            notes.append(f"{field} {ours} (paper {'all' if theirs is None else theirs})")
    if exp.architecture == "xception" and exp.weights not in (None, "imagenet"):
        notes.append(f"ImageNet weights from the file {Path(exp.weights).name}")
    if exp.architecture == "xception" and exp.weights is None:
        notes.append("Xception trained from scratch (--weights none), not the paper's ImageNet transfer")
    if split_tasks(exp) != split_tasks(paper):
        notes.append(f"rows with a valid {' and '.join(exp.tasks)} label only (--row-filter task; the paper uses the "
                     "set with both labels for every model)")
    if exp.keep_duplicates_together:
        notes.append("byte-identical files kept in one part of each fold's split (--keep-duplicates-together; the "
                     "paper's folds do not look at file contents)")
    if protocol == "levi":
        notes.append("Levi & Hassner's per-fold lists (val list for early stopping)")
    elif exp.validation == "test":
        notes.append("early stopping on the test fold (--validation test, optimistic)")
    else:
        notes.append(f"early stopping on {exp.val_fraction:.0%} of the training folds' users (subject-exclusive)")
    return notes


def portable_config(exp: Experiment) -> dict:
    """``exp`` as a dict for the record, a weights file named by its name and fingerprint, not its path."""
    from agegender.data.provenance import fingerprint_files

    config = dataclasses.asdict(exp)
    if exp.weights not in (None, "imagenet"):
        config["weights"] = {"file": Path(exp.weights).name, **fingerprint_files(exp.weights)}
    return config


def record_deviations(exp: Experiment, protocol: str) -> dict:
    """The settings of a run that differ from the paper's (the record's ``deviations``: tables give such runs
    their own rows). Left out: the seed (a repetition), ``oversample`` (an extra column only) and
    ``deterministic`` (op determinism changes no setting)."""
    from agegender.records import deviations_from

    out = deviations_from(exp, EXPERIMENTS[exp.name], ignore=("seed", "oversample", "deterministic"))
    if protocol != "folds":
        out["protocol"] = protocol
    if "weights" in out and out["weights"] is not None:
        out["weights"] = "file " + Path(str(out["weights"])).name  # a file's name, never a machine path
    return out


def preprocessing(exp: Experiment, data_kind: str):
    """How ``python -m agegender predict`` feeds a face to this model: 0-255 pixels, centre crop of ``load_size``."""
    from agegender.preprocess import Preprocessing, face_preset

    return Preprocessing(input_size=exp.image_size, load_size=exp.load_size, pixel_scale=1.0,
                         face=face_preset(data_kind, "adience"), heads={t: _head(t).head() for t in exp.tasks})


def make_datasets(exp: Experiment, split, seed: int, bad_files: list) -> tuple:
    """(train, val, test) datasets: random 227 crops of the 256 image for training only (Sec. 3.4); validation
    gets the centre crop, test the whole 256 image (its centre view is the centre crop, its ten views Levi &
    Hassner's over-sampling). Validation and test are never augmented (``training=False``)."""
    from agegender.data.inputs import dataset  # tf.data or the numpy loader, by Keras backend
    from agegender.data.pipeline import Augment

    targets = {task: _head(task).target() for task in exp.tasks}
    common = dict(batch_size=exp.batch_size, seed=seed, pixel_scale=1.0, report=bad_files)
    train_ds = dataset(split.part("train"), targets, image_size=exp.image_size, load_size=exp.load_size,
                       training=True, augment=Augment(flip=exp.flip), **common)
    val_ds = dataset(split.part("val"), targets, image_size=exp.image_size, load_size=exp.load_size,
                     training=False, **common)
    test_size = exp.load_size if exp.oversample else exp.image_size
    test_ds = dataset(split.part("test"), targets, image_size=test_size, load_size=exp.load_size,
                      training=False, cache=False, **common)
    return train_ds, val_ds, test_ds


def compile_model(model, exp: Experiment):
    """Adam as Sec. 3.4 states it; per-task cross-entropies; for two tasks Eq. 1,
    ``L = gamma * L_gender + (1 - gamma) * L_age``, each ``L`` the batch mean."""
    import keras

    two = len(exp.tasks) == 2
    model.compile(
        optimizer=keras.optimizers.Adam(exp.learning_rate, beta_1=exp.beta_1, beta_2=exp.beta_2, epsilon=exp.epsilon),
        loss={task: LOSSES[task] for task in exp.tasks},
        loss_weights={"gender": exp.gamma, "age": 1.0 - exp.gamma} if two else None,  # Eq. 1
        weighted_metrics={task: _head(task).keras_metrics() for task in exp.tasks})
    return model
