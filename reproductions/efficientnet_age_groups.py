"""Gu & Yang (paper 002): EfficientNet B4-B7, age granularity (3/5/10 groups), task sets and multi-source data.

Paper: ``../shared/papers/002_c95946df6a3a37d2.txt`` (X. Gu, X. Yang, "Multi-Task Learning Based
Age Detection for Image"; TensorFlow 2.4 on a Colab P100). Decisions: ``shared/papers/NOTES.md``,
"Gu & Yang (002)". Published figures: ``results/published/gu_yang.csv`` -- the paper prints no
number for any result, only bar charts, so every accuracy cell's published value is
"figure only" and the paper's stated conclusions are checked as claims.

What it runs
------------
1. The datasets the chosen sources need: IMDB-WIKI (``read_imdb_wiki``; rows without a known
   gender or a detected face, i.e. ``face_score`` -inf, are dropped first, since Sec. 5.1 says
   "each image has age and gender labels" (``imdb_labelled_only``; on the real ``wiki.mat`` 43,426
   of 60,830 rows with an age remain); then rows whose image file is absent, each with a count)
   and/or UTKFace (``read_utkface``). Per dataset the
   ``gu_yang`` split (``agegender.data.splits``): ages 1-80, a seeded 20,000-image sample split
   16,000 train / 4,000 validation (Sec. 5.1, 5.2; a smaller dataset keeps 80/20). One ``data_*``
   record per dataset: the Fig. 5 (10 groups, IMDB-WIKI, counts) and Fig. 8 (5 groups, shares)
   distributions and the Sec. 5.1 / 5.2 counts.
2. One model per (source, backbone, task set, age groups), each its own run record
   (``agegender.models.efficientnet_groups``): a shared EfficientNet (ImageNet weights by
   default) with an age-group softmax head (3, 5 or 10 groups, ``agegender.data.age_groups``)
   and, by task set, a gender (2) and a race (5) head. Sources: ``imdb_wiki`` (task sets age,
   age+gender: IMDB-WIKI has no race), ``utkface`` (all three) and ``multi`` (age+gender+race:
   the 16,000 + 16,000 training rows of both samples, IMDB-WIKI rows carrying only age and
   gender, UTKFace rows only race, Sec. 5.4). Loss: the sum of the task losses, each a sparse
   categorical cross-entropy averaged over the samples that carry that task's label (a missing
   label has weight 0: it adds nothing to that task's loss or gradient). 40 epochs, batch 256
   (Sec. 3), Adam, mixed precision on a GPU.
3. Per model: the validation accuracy of the age task after the last epoch (for ``multi``: on
   the IMDB-WIKI validation rows, the only ones with an age), its majority-class rate, the best
   epoch's accuracy, gender / race accuracy, the age confusion matrix, learning curves.
4. The study (every complete model record of the same settings in the output folder, so that
   sources run by separate commands are combined): the claims, Figs. 4, 6, 7, 9 as bar plots
   and Figs. 5, 8 as distribution plots, and a ``study`` record with the ``Claims`` and
   ``Section 3`` / ``Section 5.4`` cells. The tables are regenerated next to the published values.

Tables reproduced (``results/tables/gu_yang__*.md``): ``Figure 4`` (IMDB-WIKI: backbone x
{age, age-gender} x {3, 5, 10} age classes), ``Figure 6`` (UTKFace: backbone x {age, age-gender,
age-gender-race} x groups), ``Figure 7`` (backbone x dataset x groups, from the age single-task
models), ``Figure 9`` (3 age classes: IMDB-WIKI age / age-gender, UTKFace age / age-gender /
age-gender-race, multi-source age-gender-race, all with ``figure9_backbone``, B4), ``Figure 5``,
``Figure 8``, ``Claims`` (1 = holds, 0 = does not hold, the evidence in the notes; a claim whose
models were not run gets no value: the table says "not yet" and ``claims.md`` says "not run"),
``Section 3`` (epochs, batch size), ``Section 5.1`` / ``5.2`` / ``5.4`` (image counts).

Figures (PNG, ``<out>/figures/efficientnet_age_groups/study-<key>/``): ``fig04_imdb_wiki``,
``fig05_imdb_wiki_10_groups``, ``fig06_utkface``, ``fig07_datasets``,
``fig08_5_groups_distribution``, ``fig09_sources_3_groups`` (bars of validation age accuracy,
laid out as the published table: rows on the x axis, age classes as bar colours, the
majority-class rate as a black tick), and ``claims.md``; per model ``learning_curves.png`` and
``age_confusion.png`` in its run folder.

Command
-------
::

    python -m reproductions.efficientnet_age_groups --imdb-wiki ~/data/imdb-wiki --utkface ~/data/UTKFace
    python -m reproductions.efficientnet_age_groups --utkface DIR --source utkface --backbones b4 --groups 3
    python -m reproductions.efficientnet_age_groups --imdb-wiki DIR --utkface DIR --batch-size 64   # 4 x 64 = 256
    python -m reproductions.efficientnet_age_groups --imdb-wiki DIR --utkface DIR --smoke
    make reproduce-gu-yang IMDB_WIKI=~/data/imdb-wiki UTKFACE=~/data/UTKFace

``--source`` also takes a comma-separated list (default: all three). Killed? Run the same
command again: complete models are read back from their records, the interrupted one resumes
after its last completed epoch; ``--fresh`` starts over.

Several GPUs: ``--strategy mirrored`` (every GPU of the machine) or ``multiworker`` (several
machines, ``TF_CONFIG``) builds and trains each model under ``tf.distribute``
(:mod:`agegender.distribute`): the batch of 256 stays the global batch of each update (64 per
replica on four GPUs, which is how B6/B7 fit without accumulation), Adam's learning rate is kept,
and EfficientNet's batch normalisation uses each replica's share of the batch for its statistics.
Gradient accumulation (``--batch-size`` below 256) runs with ``--strategy default`` only (Keras's
accumulation cannot run under ``MirroredStrategy``; the error says so). ``--tfds-dir DIR`` reads
both datasets from the TFDS data prepared by ``python -m agegender.data prepare`` instead of
``--imdb-wiki`` / ``--utkface``.

Runtime
-------
The full study is 72 models (IMDB-WIKI 24, UTKFace 36, multi-source 12) of 40 epochs over
16,000 (multi-source 32,000) images at 224 px. Not measured on a GPU (none was available when
this was written); EfficientNet-B7 at 224 px is roughly 10x the FLOPs of B4, so expect minutes
per epoch for B7 on one current data-centre GPU with mixed precision and the whole study to take
days; run sources and backbones as separate commands (the study is combined from the records).
If B6/B7 at batch 256 do not fit in GPU memory, pass ``--batch-size 128`` or ``64`` (gradient
accumulation to 256; batch-norm statistics then come from the smaller batches). On 2 CPU cores
building one EfficientNet-B4 takes ~10 s and tracing its training step several minutes, so the
smoke mode runs eagerly: ``--smoke`` (B4 at 32 px, 50 images per dataset, 1 epoch, no ImageNet
weights) takes about 40-60 s per model on 2 shared cores, about 5 minutes for its 6 models (all
sources and task sets at 3 groups).

Expected figures: none printed. The paper's statements (table ``Claims``): accuracy falls from
3 to 5 to 10 age groups for every model; B4-B7 perform alike; on IMDB-WIKI age and age-gender
alike; on UTKFace age-gender-race > age > age-gender; UTKFace above IMDB-WIKI; multi-source the
lowest (Fig. 9); IMDB-WIKI has < 1,000 images in 1-8, 9-16 and 65-72, half its images in 24-39
and ~1% in 1-11. Chance alone makes accuracy fall with more groups: compare each bar with its
majority-class tick. The smoke mode only checks the path: its claims mean nothing.

Decisions (the paper does not state these; each is named where it is set)
-------------------------------------------------------------------------
* Input 224x224 (ImageNet's usual size; B4-B7's native 380-600 px at batch 256 would not fit a
  P100), whole network trainable (Sec. 2.2: the shared block "learns shared features";
  ``--freeze-backbone`` offers feature extraction), ImageNet weights (Keras's default for
  ``keras.applications``; ``--weights none`` trains from scratch), Adam at Keras's default 1e-3,
  each branch = global average pooling -> dropout at the backbone's top rate -> Dense softmax
  (:mod:`agegender.models.efficientnet_groups`).
* "Standard data augmentation" (Sec. 2.1): horizontal flip and rotation up to 10 degrees.
* The reported accuracy is the validation accuracy after the 40th epoch (no early stopping is
  mentioned); the best epoch's value is kept in the record, and ``model.keras`` is the epoch with
  the lowest validation loss (the trainer's checkpoint).
* Per-task loss = mean over the samples that carry the label (Keras's
  ``reduction="mean_with_sample_weight"``); with gradient accumulation each micro-batch's mean
  is averaged, which equals the 256-batch mean only when labels are spread evenly.
* Figure 7 (which task set is not stated) is filled from the age single-task models; Figure 9
  (backbone not stated) from ``figure9_backbone`` (B4).
* Multi-source: the same per-dataset samples and splits as the single-source runs (so UTKFace
  rows are chosen among ages 1-80 although their age is not used); validation accuracy of age on
  the IMDB-WIKI validation rows.
* Claims: "similar" means a spread of at most ``similar_tolerance`` (0.02) in accuracy;
  "< 1,000 images" is scaled to the sample size (1,000 of 20,000); "half of the data in 24-39"
  means a share of 40-60 %, "only 1 % in 1-11" a share below 2 %. A claim holds when it holds
  for every comparable set of models run (the notes give the count and the exceptions).
* Any setting other than the defaults (``--smoke``, ``--epochs``, ``--weights none`` ...) is
  named in every cell's note.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from agegender.cli import add_run_arguments, read_samples, run_main  # noqa: E402
from agegender.errors import DataError, TrainingDiverged  # noqa: E402

REPRODUCTION = "efficientnet_age_groups"
PAPER = "gu_yang"
SMOKE_OUT = Path(__file__).resolve().parents[1] / "build" / "smoke" / REPRODUCTION  # keeps 1-epoch runs out of results/
SOURCES = ("imdb_wiki", "utkface", "multi")
DATASETS = ("imdb_wiki", "utkface")
TASK_SETS = {"age": ("age",), "age+gender": ("age", "gender"), "age+gender+race": ("age", "gender", "race")}
SOURCE_TASK_SETS = {"imdb_wiki": ("age", "age+gender"),  # Sec. 5.1: IMDB-WIKI has age and gender labels
                    "utkface": ("age", "age+gender", "age+gender+race"),  # Sec. 5.2: all three
                    "multi": ("age+gender+race",)}  # Sec. 5.4
TASK_ROW = {"age": "age", "age+gender": "age-gender", "age+gender+race": "age-gender-race"}  # as in gu_yang.csv
LABEL = {"imdb_wiki": "IMDB-WIKI", "utkface": "UTKFace", "multi": "multi-source"}
GROUPS = (3, 5, 10)
AGE_COLUMN = "gu_age_group"  # the Gu & Yang group of the row's age (-1: none / masked)
TRAINING_FIELDS_EXCLUDED = ("figure9_backbone", "similar_tolerance")  # presentation only: never retrain for them


@dataclasses.dataclass(frozen=True)
class GuYangExperiment:
    """The study's settings; the smoke mode is ``dataclasses.replace`` of this (:func:`smoke`)."""

    epochs: int = 40  # Sec. 3: "Each model is trained 40 epochs"
    batch_size: int = 256  # Sec. 3: "with batch size of 256" (the effective batch; see --batch-size)
    n_images: int = 20_000  # Sec. 5.1 / 5.2 / 5.4: 20,000 images per dataset
    n_train: int = 16_000  # Sec. 5.1 / 5.2: 16,000 train / 4,000 validation
    input_size: int = 224  # not stated: ImageNet's usual size (module docstring)
    weights: str | None = "imagenet"  # not stated: keras.applications' default
    freeze_backbone: bool = False  # not stated: Sec. 2.2 "the model learns shared features" in the CNN block
    learning_rate: float = 1e-3  # not stated: Keras's Adam default
    flip: bool = True  # Sec. 2.1 "standard data augmentation": our reading, horizontal flip ...
    rotation_deg: float = 10.0  # ... and rotations up to 10 degrees
    imdb_subset: str = "auto"  # read_imdb_wiki(which=): imdb_crop when present (the paper names no subset)
    imdb_min_face_score: float | None = None  # no face-score threshold: the paper states none
    imdb_labelled_only: bool = True  # Sec. 5.1 "each image has age and gender labels": known gender, a detected face
    figure9_backbone: str = "b4"  # Fig. 9 names no backbone: our choice, the smallest
    similar_tolerance: float = 0.02  # "similar performance" (Sec. 5.1): spread <= 2 accuracy points, our choice
    precision: str = "auto"  # mixed_float16 on a GPU, float32 on CPU (agegender.training.configure_precision)
    run_eagerly: bool = False  # graph mode; the smoke mode runs eagerly (tracing EfficientNet takes minutes on CPU)
    smoke: bool = False
    seed: int = 0


def smoke(exp: GuYangExperiment) -> GuYangExperiment:
    """The ``--smoke`` experiment: B4 path at 32 px, no ImageNet weights, 50 images per dataset, 1 epoch."""
    return dataclasses.replace(exp, epochs=1, input_size=32, weights=None, n_images=50, n_train=40, batch_size=20,
                               run_eagerly=True, smoke=True)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One model of the study: where it trains, on which backbone, which heads, how many age groups."""

    source: str
    backbone: str
    task_set: str
    groups: int

    @property
    def tasks(self) -> tuple[str, ...]:
        return TASK_SETS[self.task_set]

    @property
    def experiment(self) -> str:
        """Run-record experiment name, e.g. ``utkface_b4_age-gender_g3``."""
        return f"{self.source}_{self.backbone}_{TASK_ROW[self.task_set]}_g{self.groups}"


def plan(sources, backbones, groups, task_sets) -> list[ModelSpec]:
    """Every model to train, in the paper's order (Sec. 3: IMDB-WIKI, UTKFace, multi-source)."""
    out = []
    for source in SOURCES:
        if source not in sources:
            continue
        for backbone in backbones:
            for task_set in SOURCE_TASK_SETS[source]:
                if task_set not in task_sets:
                    continue
                for n in GROUPS:
                    if n in groups:
                        out.append(ModelSpec(source, backbone, task_set, n))
    return out


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
    split = make_split(frame, "gu_yang", seed=exp.seed, n=exp.n_images, n_train=exp.n_train)
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
    import tensorflow as tf

    from agegender.data.pipeline import Augment, Target, build_dataset

    columns = {"age": AGE_COLUMN, "gender": "gender", "race": "race"}
    targets = {task: Target(columns[task], "sparse") for task in spec.tasks}
    out = {}
    for name, training in (("train", True), ("val", False)):
        part = frame[frame["split"] == name].reset_index(drop=True)
        report: list = []
        ds = build_dataset(part, targets, image_size=exp.input_size, batch_size=micro_batch, training=training,
                           augment=Augment(flip=exp.flip, rotation_deg=exp.rotation_deg) if training else None,
                           seed=exp.seed, pixel_scale=1.0,  # EfficientNet rescales 0-255 itself
                           report=report)
        n = len(part) - len(report)
        skipped.extend(r for r in report if r not in skipped)
        # exact cardinality: without it Keras 3 adds an empty step per epoch and skews the per-output losses
        out[name] = ds.apply(tf.data.experimental.assert_cardinality(math.ceil(n / micro_batch)))
        out[f"n_{name}"] = n
    return out


# ----------------------------------------------------------------------------------------------
# model


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
        if spec.task_set == "age":  # Figure 7: the single-task models (module docstring)
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


# ----------------------------------------------------------------------------------------------
# claims


HOLDS, FAILS, NOT_RUN = "holds", "does not hold", "not run"
CLAIM_ROWS = {  # key -> (row, column) of the Claims table in gu_yang.csv
    "granularity": ("age classes 3 > 5 > 10", "Section 5.1"),
    "utkface_tasks": ("UTKFace three-task > single-task > two-task", "Section 5.2"),
    "multi_lowest": ("multi-source lowest", "Section 5.4"),
    "backbones_similar": ("EfficientNet-B4 to B7 similar", "Section 5.1"),
    "imdb_tasks_similar": ("IMDB-WIKI single-task ~ two-task", "Section 5.1"),
    "utkface_above_imdb": ("UTKFace > IMDB-WIKI", "Section 5.3"),
    "imbalance_10": ("IMDB-WIKI 10-class imbalance", "Section 5.1"),
    "imbalance_5": ("IMDB-WIKI 5-class imbalance", "Section 5.3"),
}


def _fmt(acc: float) -> str:
    return f"{acc:.3f}"


def _verdict(checks: list[tuple[bool, str]], what: str) -> tuple[str, str]:
    """``holds`` when every check holds; the evidence names the count and up to three exceptions."""
    if not checks:
        return NOT_RUN, f"no {what} run"
    bad = [text for ok, text in checks if not ok]
    good = len(checks) - len(bad)
    if not bad:
        return HOLDS, f"{good}/{len(checks)} {what}: " + "; ".join(t for _, t in checks[:3]) + (
            " ..." if len(checks) > 3 else "")
    return FAILS, f"{good}/{len(checks)} {what}; not: " + "; ".join(bad[:3]) + (" ..." if len(bad) > 3 else "")


PAPER_SAMPLE = 20_000  # Sec. 5.1: the sample the paper's "less than 1000 images" refers to


def evaluate_claims(results: list[dict], dists: dict, tolerance: float = 0.02) -> dict:
    """Each claim of the Claims table: ``{key: {"verdict", "evidence", "row", "column"}}``.

    ``results``: one dict per model with ``source``, ``backbone``, ``task_set``, ``groups`` and
    ``accuracy`` (validation age accuracy). ``dists``: ``{dataset: {groups: {label: count}}}``.
    """
    acc = {(r["source"], r["backbone"], r["task_set"], r["groups"]): float(r["accuracy"]) for r in results}
    keys = sorted(acc, key=lambda k: (SOURCES.index(k[0]), k[1], list(TASK_SETS).index(k[2]), k[3]))
    out = {}

    checks = []  # accuracy falls with finer groups, for every (source, backbone, task set) with >= 2 group counts
    for combo in dict.fromkeys(k[:3] for k in keys):
        values = [(n, acc[(*combo, n)]) for n in GROUPS if (*combo, n) in acc]
        if len(values) >= 2:
            ok = all(a > b for (_, a), (_, b) in zip(values, values[1:]))
            checks.append((ok, f"{LABEL[combo[0]]} {combo[1].upper()} {TASK_ROW[combo[2]]} "
                               + " > ".join(f"{n}: {_fmt(a)}" for n, a in values)))
    out["granularity"] = _verdict(checks, "models with two or more group counts")

    checks = []  # UTKFace: age+gender+race > age > age+gender
    for backbone, n in dict.fromkeys((k[1], k[3]) for k in keys if k[0] == "utkface"):
        trio = [acc.get(("utkface", backbone, t, n)) for t in ("age+gender+race", "age", "age+gender")]
        if None not in trio:
            checks.append((trio[0] > trio[1] > trio[2], f"{backbone.upper()} {n} groups: three {_fmt(trio[0])}, "
                                                        f"single {_fmt(trio[1])}, two {_fmt(trio[2])}"))
    out["utkface_tasks"] = _verdict(checks, "UTKFace backbone/group settings with all three task sets")

    checks = []  # multi-source below every single-source model of the same backbone and groups
    for backbone, n in dict.fromkeys((k[1], k[3]) for k in keys if k[0] == "multi"):
        multi = acc[("multi", backbone, "age+gender+race", n)]
        others = {k: v for k, v in acc.items() if k[0] != "multi" and k[1] == backbone and k[3] == n}
        if others:
            best_low = min(others, key=others.get)
            checks.append((multi < min(others.values()),
                           f"{backbone.upper()} {n} groups: multi {_fmt(multi)} vs lowest other "
                           f"{_fmt(others[best_low])} ({LABEL[best_low[0]]} {TASK_ROW[best_low[2]]})"))
    out["multi_lowest"] = _verdict(checks, "backbone/group settings with multi-source and another source")

    checks = []  # backbones similar: spread <= tolerance for every (source, task set, groups) with >= 2 backbones
    for source, task_set, n in dict.fromkeys((k[0], k[2], k[3]) for k in keys):
        values = {k[1]: v for k, v in acc.items() if (k[0], k[2], k[3]) == (source, task_set, n)}
        if len(values) >= 2:
            spread = max(values.values()) - min(values.values())
            checks.append((spread <= tolerance, f"{LABEL[source]} {TASK_ROW[task_set]} {n} groups spread "
                                                f"{_fmt(spread)}"))
    out["backbones_similar"] = _verdict(checks, f"settings with two or more backbones (spread <= {tolerance:g})")

    checks = []  # IMDB-WIKI age ~ age+gender
    for backbone, n in dict.fromkeys((k[1], k[3]) for k in keys if k[0] == "imdb_wiki"):
        a, b = acc.get(("imdb_wiki", backbone, "age", n)), acc.get(("imdb_wiki", backbone, "age+gender", n))
        if a is not None and b is not None:
            checks.append((abs(a - b) <= tolerance, f"{backbone.upper()} {n} groups: age {_fmt(a)}, "
                                                    f"age-gender {_fmt(b)}"))
    out["imdb_tasks_similar"] = _verdict(checks, f"IMDB-WIKI settings with both task sets (|diff| <= {tolerance:g})")

    checks = []  # UTKFace above IMDB-WIKI for the same backbone, task set and groups
    for backbone, task_set, n in dict.fromkeys((k[1], k[2], k[3]) for k in keys if k[0] == "utkface"):
        imdb = acc.get(("imdb_wiki", backbone, task_set, n))
        if imdb is not None:
            utk = acc[("utkface", backbone, task_set, n)]
            checks.append((utk > imdb, f"{backbone.upper()} {TASK_ROW[task_set]} {n} groups: UTKFace {_fmt(utk)}, "
                                       f"IMDB-WIKI {_fmt(imdb)}"))
    out["utkface_above_imdb"] = _verdict(checks, "settings run on both datasets")

    imdb = dists.get("imdb_wiki") or {}
    if imdb.get(10):
        total = sum(imdb[10].values())
        limit = 1000 * total / PAPER_SAMPLE  # "less than 1000 images" of the paper's 20,000, scaled to this sample
        small = {label: imdb[10][label] for label in ("1-8", "9-16", "65-72")}
        ok = all(v < limit for v in small.values())
        text = ", ".join(f"{k}: {v:,}" for k, v in small.items()) + f" (limit {limit:,.0f} of {total:,})"
        out["imbalance_10"] = (HOLDS if ok else FAILS, text)
    else:
        out["imbalance_10"] = (NOT_RUN, "IMDB-WIKI not read")
    if imdb.get(5):
        total = max(sum(imdb[5].values()), 1)
        mid, young = imdb[5]["24-39"] / total, imdb[5]["1-11"] / total
        ok = 0.4 <= mid <= 0.6 and young < 0.02
        out["imbalance_5"] = (HOLDS if ok else FAILS, f"24-39: {100 * mid:.1f}% (40-60% counts as half), "
                                                      f"1-11: {100 * young:.1f}% (below 2% counts as ~1%)")
    else:
        out["imbalance_5"] = (NOT_RUN, "IMDB-WIKI not read")
    return {key: {"verdict": verdict, "evidence": evidence, "row": CLAIM_ROWS[key][0], "column": CLAIM_ROWS[key][1]}
            for key, (verdict, evidence) in out.items()}


def claim_cells(claims: dict, note: str) -> list[dict]:
    """Claims rows: 1 = holds, 0 = does not hold (evidence in the note); a claim not run gets no cell."""
    cells = []
    for claim in claims.values():
        if claim["verdict"] == NOT_RUN:
            continue
        text = f"{claim['verdict']}: {claim['evidence']}" + (f"; {note}" if note else "")
        cells.append(_cell("Claims", claim["row"], claim["column"], 1.0 if claim["verdict"] == HOLDS else 0.0,
                           "scalar", text))
    return cells


def claims_markdown(claims: dict, study: str) -> str:
    lines = [f"# Gu & Yang: the paper's claims, checked (study {study})", "",
             "| claim | section | verdict | evidence |", "|---|---|---|---|"]
    lines += [f"| {c['row']} | {c['column']} | {c['verdict']} | {c['evidence'].replace('|', '/')} |"
              for c in claims.values()]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------
# figures


def _plt():
    from agegender.plots import pyplot

    return pyplot()


def _save(fig, path) -> Path:
    from agegender.plots import save_figure

    return save_figure(fig, path)


def bar_figure(values: dict, rows: list[str], columns: list[str], path, title: str, ylabel: str = "validation "
               "age accuracy", baselines: dict | None = None, fmt: str = "{:.2f}", ylim=(0, 1.05)) -> Path:
    """Grouped bars: ``rows`` on the x axis, one bar colour per column; missing values leave a gap (labelled
    "not run"); ``baselines[(row, column)]`` draws a black tick (the majority-class rate)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(5.0, 0.3 * len(rows) * max(len(columns), 1) + 2), 3.8))
    width = 0.8 / max(len(columns), 1)
    x = np.arange(len(rows))
    for j, column in enumerate(columns):
        offset = (j - (len(columns) - 1) / 2) * width
        heights = [values.get((row, column), np.nan) for row in rows]
        bars = ax.bar(x + offset, np.nan_to_num(heights), width, label=column)
        for xi, h, bar in zip(x, heights, bars):
            text = "not run" if not np.isfinite(h) else fmt.format(h)
            ax.text(bar.get_x() + bar.get_width() / 2, 0 if not np.isfinite(h) else h, text, ha="center",
                    va="bottom", fontsize=6, rotation=90 if not np.isfinite(h) else 0)
            base = (baselines or {}).get((rows[xi], column))
            if base is not None and np.isfinite(h):
                ax.plot([bar.get_x(), bar.get_x() + bar.get_width()], [base, base], "k-", lw=1.2)
    if baselines:
        ax.plot([], [], "k-", lw=1.2, label="majority class")  # legend entry for the ticks
    ax.set_xticks(x, rows, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel(ylabel, fontsize=8)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, ncol=min(len(columns), 3))
    return _save(fig, path)


def study_figures(results: list[dict], dists: dict, folder: Path, exp: GuYangExperiment) -> dict[str, Path]:
    """Figs. 4, 6, 7, 9 (bars of accuracy with the majority tick) and Figs. 5, 8 (distributions)."""
    from agegender.data.age_groups import age_group_labels
    from agegender.models.efficientnet_groups import BACKBONES, get_backbone

    paths = {}
    columns = [f"{n} age classes" for n in GROUPS]
    for figure, source, name in (("Figure 4", "imdb_wiki", "fig04_imdb_wiki"), ("Figure 6", "utkface",
                                                                                  "fig06_utkface")):
        rows, values, base = [], {}, {}
        for bb in BACKBONES.values():
            for task_set in SOURCE_TASK_SETS[source]:
                rows.append(f"{bb.label} {TASK_ROW[task_set]}")
        for r in results:
            if r["source"] == source:
                key = (f"{get_backbone(r['backbone']).label} {TASK_ROW[r['task_set']]}", f"{r['groups']} age classes")
                values[key], base[key] = r["accuracy"], r.get("majority")
        if values:
            rows = [row for row in rows if any(k[0] == row for k in values)]
            paths[name] = bar_figure(values, rows, columns, folder / f"{name}.png",
                                     f"{LABEL[source]}: validation age accuracy (cf. {figure})", baselines=base)
    rows, values, base = [], {}, {}
    for bb in BACKBONES.values():
        for source in DATASETS:
            rows.append(f"{bb.label} {LABEL[source]}")
    for r in results:
        if r["source"] in DATASETS and r["task_set"] == "age":
            key = (f"{get_backbone(r['backbone']).label} {LABEL[r['source']]}", f"{r['groups']} age classes")
            values[key], base[key] = r["accuracy"], r.get("majority")
    if values:
        rows = [row for row in rows if any(k[0] == row for k in values)]
        paths["fig07_datasets"] = bar_figure(values, rows, columns, folder / "fig07_datasets.png",
                                             "Age single-task models, IMDB-WIKI vs UTKFace (cf. Figure 7)",
                                             baselines=base)
    rows = [f"{LABEL[s]} {TASK_ROW[t]}" for s in SOURCES for t in SOURCE_TASK_SETS[s]]
    fig9 = get_backbone(exp.figure9_backbone)
    values, base = {}, {}
    for r in results:
        if r["groups"] == 3 and r["backbone"] == fig9.key:
            key = (f"{LABEL[r['source']]} {TASK_ROW[r['task_set']]}", "3 age classes")
            values[key], base[key] = r["accuracy"], r.get("majority")
    if values:
        paths["fig09_sources_3_groups"] = bar_figure(values, rows, ["3 age classes"],
                                                     folder / "fig09_sources_3_groups.png",
                                                     f"3 age classes, {fig9.label}, by data source and task set "
                                                     "(cf. Figure 9)", baselines=base)
    if (dists.get("imdb_wiki") or {}).get(10):
        labels = age_group_labels(10)
        values = {(label, f"{LABEL[d]} images"): dists[d][10][label] for d in DATASETS if (dists.get(d) or {}).get(10)
                  for label in labels}
        cols = [f"{LABEL[d]} images" for d in DATASETS if (dists.get(d) or {}).get(10)]
        paths["fig05_imdb_wiki_10_groups"] = bar_figure(values, labels, cols, folder / "fig05_imdb_wiki_10_groups.png",
                                                        "Images per age class, 10 classes (cf. Figure 5)",
                                                        ylabel="images in the sample", fmt="{:,.0f}", ylim=None)
    have5 = [d for d in DATASETS if (dists.get(d) or {}).get(5)]
    if have5:
        labels = age_group_labels(5)
        values = {}
        for d in have5:
            total = max(sum(dists[d][5].values()), 1)
            values.update({(label, LABEL[d]): 100.0 * dists[d][5][label] / total for label in labels})
        paths["fig08_5_groups_distribution"] = bar_figure(values, labels, [LABEL[d] for d in have5],
                                                          folder / "fig08_5_groups_distribution.png",
                                                          "Share of images per age class, 5 classes (cf. Figure 8)",
                                                          ylabel="share of the sample (%)", fmt="{:.1f}",
                                                          ylim=None)
    return paths


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


if __name__ == "__main__":
    sys.exit(main())
