"""Dey & Aggarwal (paper 003): age, ethnicity and gender from UTKFace with six transfer-learning backbones.

Paper: ``../shared/papers/003_5bef84f3e3da6d65.txt`` (S. Dey, K. Aggarwal, "Ethnicity, Age and
Gender Recognition using Multi-Task Learning", Northeastern University). Decisions:
``shared/papers/NOTES.md``, "Dey & Aggarwal (003)". Published figures:
``results/published/dey_aggarwal.csv``. GitHub issue 5.

What it runs
------------
1. ``read_utkface(--data-dir)``; the Dey split (Sec. 4.1, ``make_split(frame, "dey")``): ages
   10-65 kept, then a seeded split in the paper's proportions 9,115 / 3,907 / 5,581 (of 18,603).
   The real file names give a different 10-65 count; Section 4.1's table shows both.
2. Per backbone (``--backbone``; ``all`` runs the six in the paper's order), one run record: the
   multi-task model of :mod:`agegender.models.multihead` (backbone from the registry
   :mod:`agegender.models.backbones`, whole and trainable -> global max pooling -> three heads
   Dense(128)-Dense(128) -> ``age`` 1 sigmoid on age / max_age with MSE, ``ethnicity`` 5 softmax
   and ``gender`` 2 softmax with categorical cross-entropy), RMSprop, batch 16, 10 epochs, a
   checkpoint on the validation loss (Sec. 4.2), 224x224 inputs with pixels / 255 (Sec. 3.2).
3. The checkpointed (lowest validation loss) model is reloaded with
   ``keras.saving.load_model(..., safe_mode=True)`` and evaluated, without augmentation, on the
   training, validation and test parts: Tables 1, 2 and 3.
4. The tables are regenerated next to the published values and this run's Tables 1-3 are printed
   beside the paper's.

Tables reproduced (``results/tables/dey_aggarwal__*.md``)
---------------------------------------------------------
* ``Table 1`` / ``Table 2`` / ``Table 3`` (training / validation / test): ``Total loss``, ``Age
  loss``, ``Ethnicity loss``, ``Gender loss``, ``Age MAE`` (MAE of age / max_age, as the paper
  reports it), ``Ethnicity Accuracy``, ``Gender Accuracy``; extra columns ``Age MAE (years)``
  and the majority-class accuracies (the chance level the paper's VGG19 / ResNet50 /
  Transformer rows sit at).
* ``Table 1 (per class)`` / ``Table 2 (per class)`` / ``Table 3 (per class)``: precision, recall
  and F1 of every ethnicity and gender class, and their macro F1: the metrics the abstract
  promises and the tables lack.
* ``Section 3.1`` (max age, race classes), ``Section 3.2`` (input size, read from the built
  model), ``Section 3.3`` (images, kept ages, mean age), ``Section 3.5`` (head units, read from
  the model), ``Section 4.1`` (split counts, and the 10-65 total), ``Section 4.2`` (batch size,
  epochs run).

Rows are the paper's (``VGG19``, ``ResNet50``, ``Inception v3``, ``Xception``, ``MobileNet``,
``Transformer``) for the paper's setting. A run that departs from it gets a row of its own so it
is never averaged with the paper's setting and the ablation shows: ``VGG19 (from scratch)``
(``--weights none``), ``VGG19 (backbone preprocess_input)`` (``--preprocess backbone``), both,
``(weights <file>)`` for a weights file that is not Keras's ImageNet file, or ``(duplicates in one
split)`` for ``--keep-duplicates-together`` (each group of byte-identical files, 375 in the real
UTKFace, whole in one split; its Section 4.1 rows are ``split (duplicates in one split)``). Every
other departure (``--smoke``, the input size, a subset of the images) is named in each cell's note.
Each record's ``deviations`` holds the experiment fields that differ from the paper's setting of its
backbone, and its ``data`` names the folder relative to the data root with a fingerprint of its
files (:func:`agegender.data.provenance.describe_data`), never by an absolute path.

Images that training cannot decode (empty, HTML, truncated, too large) are dropped when the data
is read (:func:`agegender.cli.read_samples`), before the split: ``images_used``, ``split.csv``
and the console count what is trained on, and the protocol record lists each skipped file with
its reason (``metrics.images_skipped``). While a backbone trains, its run folder holds
``run.lock``: the same command started again meanwhile stops with one line naming the process.

Figures (PNG, ``<out>/figures/utkface_xception/<run id>/<experiment>/``): ``fig01_test_predictions``
(a grid of test faces, predicted labels above and true labels below, like Fig. 1),
``fig02_accuracy`` (ethnicity and gender accuracy per epoch, training vs validation, like Fig. 2),
``fig03_age_mae`` (age MAE per epoch, like Fig. 3), ``learning_curves`` (every logged metric) and
the test confusion matrices ``confusion_ethnicity`` / ``confusion_gender``.

Command
-------
::

    python -m reproductions.utkface_xception --data-dir ~/data/UTKFace                 # Xception
    python -m reproductions.utkface_xception --data-dir DIR --backbone all             # Tables 1-3
    python -m reproductions.utkface_xception --data-dir DIR --backbone vgg19 --preprocess backbone
    python -m reproductions.utkface_xception --data-dir DIR --weights FILE.h5          # offline ImageNet (*)
    python -m reproductions.utkface_xception --data-dir DIR --smoke --backbone all     # path check, CPU
    python -m reproductions.utkface_xception --data-dir DIR --keep-duplicates-together # no duplicate leaks
    make reproduce-utkface-transfer DATA_DIR=~/data/UTKFace                            # all six backbones

(*) ``--weights imagenet`` (the default) needs Keras's download of each backbone's no-top file
(``xception_weights_tf_dim_ordering_tf_kernels_notop.h5`` for Xception); offline the run stops
before training anything with a one-line error naming the file, its URL and ``--weights PATH``.
``--weights none`` trains from scratch (row label "from scratch").

Several GPUs: ``--strategy mirrored`` (every GPU of the machine) or ``multiworker`` (several
machines, ``TF_CONFIG``) builds and trains each model under ``tf.distribute``
(:mod:`agegender.distribute`). The paper's batch of 16 stays the global batch (8 per replica on
two GPUs; a replica count that does not divide 16 is an error) and RMSprop's learning rate is
kept; the backbones' batch normalisation then uses each replica's share of the batch for its
statistics. ``--tfds-dir DIR`` reads the TFDS data prepared by ``python -m agegender.data
prepare`` instead of ``--data-dir``.

Runtime and expected figures
----------------------------
Full run (the real 23,708 UTKFace files keep about 19,000 faces aged 10-65, split ~49/21/30%):
10 epochs of about 580 steps of 16 images at 224x224 per backbone. On a current data-centre GPU
(mixed float16, chosen automatically) expect minutes per backbone (not measured on the full data
when this was written: the machines used had no GPU). On CPU a full run is impractical.
``--smoke --backbone all`` (1 epoch, each backbone's smallest input: 32 px, 71 px Xception, 75 px
Inception v3, 64 px transformer; 160 faces; weights none) used 390 s of CPU time (10.7 min wall
on 2 cores shared with other jobs); most of it is TensorFlow tracing the six training graphs.
``--smoke --backbone mobilenet`` takes under a minute.

Published (Table 3, test): Xception loss 1.78, age MAE 0.11, ethnicity accuracy 0.81, gender
accuracy 0.94; MobileNet 1.55 / 0.11 / 0.79 / 0.94; Inception v3 2.22 / 0.14 / 0.59 / 0.76; VGG19,
ResNet50 and the Transformer at chance (ethnicity 0.40-0.41, gender 0.52-0.53). The paper's
"Total loss" is larger than the sum of its three task losses as printed; ours is the sum (loss
weights 1). On the full real data expect Xception and MobileNet well above the majority rates
(ethnicity ~0.42, gender ~0.52) and an age MAE near 0.11 (~7 years); whether VGG19 / ResNet50
leave chance with ``--preprocess backbone`` is the question the ablation rows answer.

Choices not fixed by the paper (each named where it is set)
-----------------------------------------------------------
* **max_age = 65.** Sec. 3.2 divides age "by the maximum age value in the dataset"; after the
  10-65 filter of Sec. 4.1 that is 65. The published figures fit 65 and not 116: a model at chance
  (VGG19) has age MSE 0.03 and MAE 0.15, i.e. an RMSE of 11 and an MAE of 10 years at 65 (about the
  spread of ages 10-65), but an MAE of 17 years at 116, worse than predicting the mean (~0.09).
  ``Age MAE (years)`` = normalised MAE x 65.
* **RMSprop at Keras's defaults** (learning rate 1e-3, rho 0.9): the paper names the optimiser only.
* **Evaluation with the checkpoint.** Sec. 4.2 keeps the checkpoint with the lowest validation
  loss; Tables 1-3 here are that model evaluated on each part (no dropout, no augmentation),
  computed from its predictions: MSE of age / 65, cross-entropy with Keras's clipping (1e-7), the
  total their sum. The last epoch's running training metrics are kept in the record too.
* **No augmentation** (the paper names none); the training part is reshuffled each epoch.
* **Ethnicity labels**: the three UTKFace names without a race field are masked for the ethnicity
  loss and metrics only.
* **Transformer sizes** (the paper gives none): 2 encoder blocks, d_model 256, 4 heads,
  feed-forward 512, dropout 0.1 on MobileNet's 7x7 map (49 tokens); recorded in the run config.
* **Pixel preprocessing inside the model** (a serializable layer): the pipeline passes 0-255
  pixels; ``--preprocess paper`` divides by 255 (identical to the paper's generator),
  ``--preprocess backbone`` applies ``preprocess_input`` (caffe: VGG19, ResNet50; tf: the rest).
* The tf.data datasets are given their exact cardinality (Keras 3 per-output losses, see
  ``reproductions.utkface_dual_cnn``).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from agegender.cli import add_run_arguments, run_main  # noqa: E402
from agegender.errors import DataError  # noqa: E402

try:  # raised by agegender.training.train when the loss becomes NaN / infinite (a DataError)
    from agegender.errors import TrainingDiverged  # noqa: E402
except ImportError:  # an agegender without it: nothing to catch
    TrainingDiverged = ()

REPRODUCTION = "utkface_xception"
PAPER = "dey_aggarwal"
BACKBONE_ORDER = ("vgg19", "resnet50", "inception_v3", "xception", "mobilenet", "transformer")  # Tables 1-3 order
SPLIT_TABLES = {"train": "Table 1", "val": "Table 2", "test": "Table 3"}  # Sec. 4.3
RACE_LABELS = ("White", "Black", "Asian", "Indian", "Others")  # Sec. 3.1: race 0-4
GENDER_LABELS = ("Male", "Female")  # Sec. 3.1: gender 0 male / 1 female
TASK_LABELS = {"ethnicity": RACE_LABELS, "gender": GENDER_LABELS}
SMOKE_OUT = Path(__file__).resolve().parents[1] / "build" / "smoke" / REPRODUCTION  # keeps smoke runs out of results/
DUPLICATES_VARIANT = "duplicates in one split"  # row label part of --keep-duplicates-together
DUPLICATES_NOTE = ("byte-identical files kept in one split (--keep-duplicates-together; the paper's split does not "
                   "look at file contents)")
PAPER_DUPLICATES_NOTE = ("the paper's split: byte-identical files (the same photo under two names) may fall in "
                         "different parts; --keep-duplicates-together keeps them in one")


@dataclasses.dataclass(frozen=True)
class DeyExperiment:
    """The paper's settings for one backbone; ``--smoke`` is ``dataclasses.replace`` of this (:func:`smoke`)."""

    backbone: str = "xception"  # Sec. 4.3/5: the best model; --backbone picks another (all: the six)
    input_size: int | None = 224  # Sec. 3.2: "resized to (224x224)"; None: each backbone's small_size (smoke)
    preprocess: str = "paper"  # Sec. 3.2: "dividing each pixel value by 255"; "backbone": preprocess_input (NOTES.md)
    weights: str | None = "imagenet"  # Sec. 3.4.1-3.4.5: "initialized with pretrained weights of 'ImageNet'"
    head_units: int = 128  # Sec. 3.5: "two dense layers with 128 hidden units each"
    max_age: float = 65.0  # Sec. 3.2: age / "maximum age value in the dataset", 65 after Sec. 4.1's filter (docstring)
    min_kept_age: int = 10  # Sec. 4.1: ages outside 10-65 removed (make_split "dey")
    max_kept_age: int = 65  # Sec. 4.1
    learning_rate: float = 1e-3  # Sec. 4.2 names RMSprop only: Keras's default learning rate
    rho: float = 0.9  # Keras's RMSprop default
    batch_size: int = 16  # Sec. 4.2: "batch size was set to be 16"
    epochs: int = 10  # Sec. 4.2: "trained for 10 epochs"
    monitor: str = "val_loss"  # Sec. 4.2: "model checkpoint was used where we monitored the validation loss"
    max_images: int | None = None  # None: every usable image; the smoke mode takes a seeded subset
    grid_faces: int = 15  # Fig. 1: a grid of test faces (3 x 5 here; the count is not in the text)
    precision: str = "auto"  # mixed_float16 on a GPU, float32 on CPU (agegender.training.configure_precision)
    # not in the paper (issue 21): each group of byte-identical files (375 in the real UTKFace) whole in one split;
    # False is the paper's split, which does not look at file contents (--keep-duplicates-together)
    keep_duplicates_together: bool = False
    seed: int = 0
    smoke: bool = False


def smoke(exp: DeyExperiment) -> DeyExperiment:
    """The ``--smoke`` experiment: 1 epoch, each backbone's smallest input, 160 faces, no ImageNet download."""
    return dataclasses.replace(exp, epochs=1, input_size=None, max_images=160, weights=None, smoke=True)


def image_size(exp: DeyExperiment) -> int:
    """Input side of ``exp``: its ``input_size``, or the backbone's ``small_size`` when None (smoke)."""
    from agegender.models.backbones import get_backbone

    return int(exp.input_size) if exp.input_size else get_backbone(exp.backbone).small_size


def parse_weights(text: str | None):
    """Command-line ``--weights``: ``imagenet`` | ``none`` (-> None) | a path (``~`` expanded)."""
    if text is None or text.lower() == "none":
        return None
    if text.lower() == "imagenet":
        return "imagenet"
    return os.path.expanduser(text)


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


def targets(exp: DeyExperiment) -> dict:
    """The three model outputs' labels (Sec. 3.2: age / max_age; one-hot race and gender)."""
    from agegender.data.pipeline import Target

    return {"age": Target("age", "regression", scale=1.0 / exp.max_age),
            "ethnicity": Target("race", "onehot", num_classes=len(RACE_LABELS)),
            "gender": Target("gender", "onehot", num_classes=len(GENDER_LABELS))}


def make_datasets(split, exp: DeyExperiment, size: int, skipped: list) -> dict:
    """Train (shuffled), validation, test, and the unshuffled training part for Table 1; pixels 0-255."""
    import tensorflow as tf

    from agegender.data.pipeline import build_dataset

    out = {}
    for name, part, training in (("train", "train", True), ("val", "val", False), ("test", "test", False),
                                 ("train_eval", "train", False)):
        frame = split.part(part)
        report: list = []
        ds = build_dataset(frame, targets(exp), image_size=size, batch_size=exp.batch_size, training=training,
                           augment=None, seed=exp.seed, pixel_scale=1.0,  # the model preprocesses 0-255 pixels
                           report=report)
        n = len(frame) - len(report)
        if name != "train_eval":
            skipped.extend(r for r in report if r not in skipped)
        # exact cardinality: see the module docstring (Keras 3 per-output losses)
        out[name] = ds.apply(tf.data.experimental.assert_cardinality(math.ceil(n / exp.batch_size)))
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
        loss={"age": "mse", "ethnicity": "categorical_crossentropy",  # Sec. 4.2
              "gender": "categorical_crossentropy"},
        weighted_metrics={"age": [keras.metrics.MeanAbsoluteError(name="mae")],  # Sec. 4.2: MAE, accuracy
                          "ethnicity": [keras.metrics.CategoricalAccuracy(name="accuracy")],
                          "gender": [keras.metrics.CategoricalAccuracy(name="accuracy")]})
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


def evaluate(model, datasets: dict, exp: DeyExperiment) -> dict:
    """Tables 1-3 metrics of ``model`` on the training, validation and test parts."""
    from agegender.training import collect_predictions

    out = {}
    for split, key in (("train", "train_eval"), ("val", "val"), ("test", "test")):
        out[split] = split_metrics(*collect_predictions(model, datasets[key]), max_age=exp.max_age)
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
              "; ".join(n for n in (split_note, "the paper: 18,603 (NOTES.md: the real files give a different count)")
                        if n)),
    ]


# ----------------------------------------------------------------------------------------------
# figures (matplotlib, Agg)


def _plt():
    from agegender.plots import pyplot

    return pyplot()


def _save(fig, path) -> Path:
    from agegender.plots import save_figure

    return save_figure(fig, path)


def _describe(age_years: float, ethnicity: int, gender: int) -> str:
    return f"{age_years:.0f}, {GENDER_LABELS[gender][0]}, {RACE_LABELS[ethnicity]}"


def prediction_grid(model, dataset, n: int, max_age: float) -> dict:
    """The first ``n`` test faces (0-255), their true and predicted (age years, ethnicity, gender)."""
    images, truth = [], {"age": [], "ethnicity": [], "gender": []}
    for batch, labels, _ in dataset:
        images.append(np.asarray(batch))
        for task in truth:
            truth[task].append(np.asarray(labels[task]))
        if sum(len(b) for b in images) >= n:
            break
    images = np.concatenate(images)[:n]
    truth = {k: np.concatenate(v)[:n] for k, v in truth.items()}
    out = model(images, training=False)
    return {"images": images,
            "true": [(float(a) * max_age, int(e.argmax()), int(g.argmax()))
                     for a, e, g in zip(truth["age"].ravel(), truth["ethnicity"], truth["gender"])],
            "predicted": [(float(a) * max_age, int(e.argmax()), int(g.argmax()))
                          for a, e, g in zip(np.ravel(out["age"]), np.asarray(out["ethnicity"]),
                                             np.asarray(out["gender"]))]}


def plot_predictions(grid: dict, path, title: str) -> Path:
    """Fig. 1: test faces, predicted labels above (age, gender, ethnicity) and true labels below."""
    plt = _plt()
    n = len(grid["images"])
    cols = min(5, max(n, 1))
    rows = max(1, -(-n // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.1 * cols, 2.5 * rows), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, image, pred, true in zip(axes.flat, grid["images"], grid["predicted"], grid["true"]):
        ax.set_axis_on()
        ax.imshow(np.clip(image, 0, 255).astype("uint8"))
        ax.set_xticks([])
        ax.set_yticks([])
        right = pred[1:] == true[1:]
        ax.set_title(_describe(*pred), fontsize=7, color="tab:green" if right else "tab:red")
        ax.set_xlabel(_describe(*true), fontsize=7)
    fig.suptitle(f"{title}\npredicted (above) / true (below): age, gender, ethnicity", fontsize=9)
    return _save(fig, path)


def plot_history(history: list[dict], keys: list[tuple[str, str]], path, title: str, ylabel: str) -> Path:
    """Figs. 2-3: one panel per (history key, title), training solid and validation dashed."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2), squeeze=False)
    epochs = [h["epoch"] for h in history]
    for ax, (key, label) in zip(axes[0], keys):
        ax.plot(epochs, [h.get(key, np.nan) for h in history], "-o", ms=3, label="train")
        ax.plot(epochs, [h.get(f"val_{key}", np.nan) for h in history], "--o", ms=3, label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.set_title(label, fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def draw_figures(exp: DeyExperiment, model, history: list[dict], metrics: dict, datasets: dict, folder) -> dict:
    """Figs. 1-3, every learning curve and the test confusion matrices of one backbone."""
    from agegender.plots import confusion_matrix, learning_curves

    folder = Path(folder)
    row = table_row(exp)
    paths = {"fig01_test_predictions": plot_predictions(
        prediction_grid(model, datasets["test"], exp.grid_faces, exp.max_age), folder / "fig01_test_predictions.png",
        f"{row}: test faces (cf. Fig. 1)")}
    if history:
        paths["fig02_accuracy"] = plot_history(
            history, [("ethnicity_accuracy", "ethnicity (race)"), ("gender_accuracy", "gender")],
            folder / "fig02_accuracy.png", f"{row}: training vs validation accuracy (cf. Fig. 2)", "accuracy")
        paths["fig03_age_mae"] = plot_history(
            history, [("age_mae", f"age (MAE of age / {exp.max_age:g}; x {exp.max_age:g} = years)")],
            folder / "fig03_age_mae.png", f"{row}: training vs validation age MAE (cf. Fig. 3)", "MAE (normalised)")
        paths["learning_curves"] = learning_curves(history, folder / "learning_curves.png", row)
    for task, names in TASK_LABELS.items():
        paths[f"confusion_{task}"] = confusion_matrix(metrics["test"][f"{task}_report"]["confusion_matrix"],
                                                      list(names), folder / f"confusion_{task}.png",
                                                      f"{row}: {task}, test")
    return {k: str(v) for k, v in paths.items()}


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


def _relative_paths(files: dict, root) -> dict:
    """``files`` ({name: path}) relative to the output root ``root``, for a record (no absolute paths)."""
    root = Path(root).resolve()
    out = {}
    for key, value in files.items():
        path = Path(value).resolve()
        out[key] = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name
    return out


def preprocessing(exp: DeyExperiment, size: int, data_kind: str):
    """How ``python -m agegender predict`` feeds a face to the model: 0-255 pixels (the model scales them)."""
    from agegender.preprocess import Head, Preprocessing, face_preset

    return Preprocessing(input_size=size, pixel_scale=1.0, face=face_preset(data_kind, "utkface"),
                         heads={"age": Head.age_sigmoid(exp.max_age), "gender": Head.gender_softmax(),
                                "race": Head.race_softmax("ethnicity")})


def run_backbone(exp: DeyExperiment, split, datasets: dict, *, paths: dict, run_id: str, data: dict,
                 precision: str, verbose=2, log=print, fresh: bool = False, deterministic: bool = False,
                 strategy: str = "default") -> dict:
    """Train, checkpoint, reload and evaluate one backbone; write its record and figures.

    A complete record of the same command is read back instead of trained again (``fresh``
    trains again); an interrupted one resumes after its last completed epoch. ``strategy``
    (:mod:`agegender.distribute`): the model is built and compiled under its scope.
    """
    import keras

    from agegender.distribute import make_strategy, strategy_config
    from agegender.records import RunRecorder
    from agegender.training import seed_everything, train

    size = image_size(exp)
    keras.backend.clear_session()
    seed_everything(exp.seed, deterministic)  # each backbone independent of which others run
    distribution = make_strategy(strategy)
    model = build_model(exp, size, distribution)
    encoder = {}
    if exp.backbone == "transformer":
        layer = model.get_layer("transformer").get_layer("transformer_encoder")
        encoder = {k: layer.get_config()[k] for k in ("num_blocks", "d_model", "num_heads", "ff_dim", "dropout")}
    config = {**experiment_config(exp), "image_size": size, "row": table_row(exp), "precision_policy": precision,
              "optimizer": "RMSprop", "losses": {"age": "mse", "ethnicity": "categorical_crossentropy",
                                                 "gender": "categorical_crossentropy"},
              "parameters": int(model.count_params()), "deterministic": bool(deterministic),
              "strategy": strategy_config(strategy, distribution, exp.batch_size, flag=None),
              **({"transformer_encoder": encoder} if encoder else {})}
    recorder = RunRecorder(REPRODUCTION, experiment_name(exp), config=config, seed=exp.seed, data=data, paper=PAPER,
                           out=paths["runs"], run_id=run_id, resume=not fresh,
                           preprocessing=preprocessing(exp, size, data["kind"]), deviations=record_deviations(exp))
    if recorder.complete:
        record = recorder.record
        log(f"[dey] {table_row(exp)}: complete record found ({recorder.record_path}); not trained again "
            "(--fresh trains again)")
        return {"exp": exp, "record": recorder.record_path, "metrics": record["metrics"], "cells": record["cells"],
                "figures": record.get("figures", {}), "history": record["history"],
                "seconds": record["metrics"].get("training", {}).get("seconds")}
    split.save_manifest(recorder.run_dir / "split.csv")
    log(f"[dey] training {table_row(exp)}: {size}x{size}, {exp.epochs} epoch(s), batch {exp.batch_size}, "
        f"{datasets['n_train']} training faces, weights {exp.weights}, preprocess {exp.preprocess}")
    start = time.perf_counter()
    info: dict = {}
    history = train(model, datasets["train"], datasets["val"], epochs=exp.epochs, recorder=recorder,
                    monitor=exp.monitor, verbose=verbose, info=info)
    seconds = info.get("seconds", time.perf_counter() - start)  # summed over the processes of a resumed run
    scores = [h.get(exp.monitor, math.inf) for h in history]
    finite = [s for s in scores if math.isfinite(s)]
    best_epoch = int(np.argmin([s if math.isfinite(s) else math.inf for s in scores])) + 1 if finite else None
    if recorder.model_path.is_file():  # Sec. 4.2: the checkpoint with the lowest validation loss
        evaluated = keras.saving.load_model(recorder.model_path, safe_mode=True)
        which = f"checkpoint of epoch {best_epoch} (lowest {exp.monitor})"
    else:  # no finite validation loss: no checkpoint was written
        evaluated = model
        which = "last weights (no checkpoint: the validation loss was never finite)"
    metrics = evaluate(evaluated, datasets, exp)
    metrics["training"] = {"seconds": seconds, "epochs": len(history), "best_epoch": best_epoch,
                           "evaluated_weights": which,
                           "last_epoch": history[-1] if history else {}}
    notes = "; ".join(deviations(exp, size))
    cells = result_cells(exp, metrics, notes) + model_cells(exp, evaluated, history, notes)
    figures = draw_figures(exp, evaluated, history, metrics, datasets,
                           paths["figures"] / REPRODUCTION / run_id / experiment_name(exp))
    recorder.finish(metrics, [dict(c) for c in cells], figures=_relative_paths(figures, paths["figures"].parent))
    test = metrics["test"]
    log(f"[dey] {table_row(exp)}: {seconds:.1f} s, {len(history)} epoch(s), best {best_epoch}; test loss "
        f"{test['loss']:.3f}, age MAE {test['age_mae']:.3f} ({test['age_mae_years']:.1f} y), ethnicity "
        f"{test['ethnicity_accuracy']:.3f}, gender {test['gender_accuracy']:.3f}")
    del model, evaluated
    keras.backend.clear_session()
    return {"exp": exp, "record": recorder.record_path, "metrics": metrics, "cells": cells, "figures": figures,
            "history": history, "seconds": seconds}


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
    import datetime as _dt

    from agegender.data.provenance import data_kind

    backbones = list(backbones or [exp.backbone])
    t0 = time.time()
    from agegender.distribute import start_early

    start_early(strategy)  # a multi-worker strategy must exist before TensorFlow runs anything
    paths = _out_paths(out)
    from agegender import atomic

    for key in ("runs", "tables", "figures"):  # a read-only output folder stops the run now, not after training
        atomic.check_writable(paths[key], flag="--out")
    atomic.check_writable(paths["readme"].parent, flag="--out")
    samples, frame, split = load_split(data_dir, exp, tfds_dir)  # a DataError here stays one line, before TensorFlow
    data_root = data_dir if tfds_dir is None else samples.root

    from agegender.distribute import make_strategy, strategy_config
    from agegender.models.backbones import check_weights, get_backbone
    from agegender.records import RunRecorder
    from agegender.training import configure_precision
    from results.tables import generate

    exps = []
    for name in backbones:
        get_backbone(name)  # UnknownBackboneError lists the known names
        exps.append(dataclasses.replace(exp, backbone=name))
    for e in exps:  # fail before training anything when weights cannot be had
        size = image_size(e)
        check_weights(e.backbone, e.weights, (size, size, 3))

    kind = data_kind_override or data_kind(data_root, "utkface", len(frame))
    counts = split.counts()
    unusable = sum(1 for s in samples.skipped if s["reason"].startswith("image not usable"))
    log(f"[dey] {len(frame)} faces from {tfds_dir or data_dir} ({kind}); {len(samples.skipped)} file(s) skipped "
        f"({unusable} image(s) training cannot decode; the record's protocol run lists them); "
        f"{split.info.get('aged_10_65')} aged 10-65; split {counts} (paper {split.info.get('paper_counts')}); "
        + ("byte-identical files kept in one split "
           f"({split.info['duplicates']['groups_that_crossed']} group(s) moved, "
           f"{split.info['duplicates']['rows_moved']} file(s))" if exp.keep_duplicates_together else
           "byte-identical files split as the paper does"))
    distribution = make_strategy(strategy)
    # the paper's batch of 16 is the global batch: an uneven split over the replicas fails here, before training
    strategy_info = strategy_config(strategy, distribution, exp.batch_size, flag=None)
    if strategy_info["replicas"] > 1:
        log(f"[dey] {strategy} strategy: {strategy_info['replicas']} replicas, global batch {exp.batch_size} = "
            f"{strategy_info['per_replica_batch']} per replica; learning rate unchanged (RMSprop 1e-3)")
    precision = configure_precision(exp.precision)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    from agegender.data.provenance import describe_data, relative_data_path

    # no absolute path: the folder relative to a data root, with a fingerprint of its files (provenance)
    data = {"kind": kind, **describe_data("utkface", data_root, fingerprint=tfds_dir is None),
            "images_read": len(samples.frame) + unusable, "images_used": len(frame),
            "files_skipped_by_reader": len(samples.skipped), "images_unusable": unusable,
            "names_repaired": len(samples.repaired), "aged_10_65": len(split.frame), "counts": counts,
            "paper_counts": split.info.get("paper_counts"),
            "duplicates_kept_together": bool(exp.keep_duplicates_together)}
    if tfds_dir is not None:
        data["prepared"] = relative_data_path(tfds_dir)

    protocol = RunRecorder(REPRODUCTION, protocol_name(exp),
                           config={**experiment_config(exp), "backbones": backbones,
                                   "deterministic": bool(deterministic), "strategy": strategy_info},
                           seed=exp.seed, data=data, paper=PAPER, out=paths["runs"], resume=not fresh,
                           new_run_id=f"{stamp}-s{exp.seed}", deviations=record_deviations(exp))
    run_id = protocol.run_id
    split.save_manifest(protocol.run_dir / "split.csv")
    p_cells = protocol_cells(samples, frame, split, exp)
    protocol.finish({"split": {"counts": counts, "paper_counts": split.info.get("paper_counts"),
                               "duplicates": split.info.get("duplicates")},
                     "images_skipped": samples.skipped[:1000]},
                    [dict(c) for c in p_cells])

    results, failed, skipped, by_size = {}, {}, [], {}
    for e in exps:
        size = image_size(e)
        if size not in by_size:
            by_size.clear()  # one cached set of datasets at a time
            by_size[size] = make_datasets(split, e, size, skipped)
        try:
            results[e.backbone] = run_backbone(e, split, by_size[size], paths=paths, run_id=run_id, data=data,
                                               precision=precision, verbose=verbose, log=log, fresh=fresh,
                                               deterministic=deterministic, strategy=strategy)
        except TrainingDiverged as err:  # its record is marked failed; the other backbones still run
            failed[e.backbone] = str(err)
            log(f"[dey] {table_row(e)}: {err}")
    summary = generate(paths["runs"], paths["tables"], paths["readme"])
    all_cells = list(p_cells) + [c for r in results.values() for c in r["cells"]]
    return {"run_id": run_id, "kind": kind, "counts": counts, "split": split,
            "records": {"protocol": protocol.record_path, **{k: r["record"] for k, r in results.items()}},
            "metrics": {k: r["metrics"] for k, r in results.items()},
            "rows": {k: table_row(r["exp"]) for k, r in results.items()}, "failed": failed,
            "figures": {k: r["figures"] for k, r in results.items()}, "cells": all_cells,
            "pipeline_skipped": skipped, "tables_dir": paths["tables"], "readme": paths["readme"],
            "figures_dir": paths["figures"] / REPRODUCTION / run_id, "tables": summary["tables"],
            "seconds": time.time() - t0}


# ----------------------------------------------------------------------------------------------
# printing


TABLE_COLUMNS = (("Total loss", "Total"), ("Age loss", "Age"), ("Ethnicity loss", "Eth."), ("Gender loss", "Gen."),
                 ("Age MAE", "Age MAE"), ("Ethnicity Accuracy", "Eth. acc"), ("Gender Accuracy", "Gen. acc"),
                 ("Age MAE (years)", "MAE (y)"))


def format_tables(cells: list[dict]) -> str:
    """Tables 1-3 of this run: each reproduced row, then the paper's row for the same backbone."""
    from results.catalogue import load_published

    pub = load_published(PAPER)
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


# ----------------------------------------------------------------------------------------------
# command line


def _parser() -> argparse.ArgumentParser:
    default = DeyExperiment()
    parser = argparse.ArgumentParser(
        prog="python -m reproductions.utkface_xception",
        description=__doc__.split("\n\n")[0] + " Trains the multi-task model on each chosen backbone, writes one "
                    "run record per backbone, the figures, and Tables 1-3 regenerated next to the published values.",
        epilog="Decisions, runtime and expected figures: python -m pydoc reproductions.utkface_xception")
    parser.add_argument("--data-dir", default=None, metavar="DIR",
                        help="UTKFace folder (age_gender_race_timestamp.jpg.chip.jpg files, searched recursively); "
                             "faces aged 10-65 are kept and split 9,115 : 3,907 : 5,581 (Sec. 4.1); required unless "
                             "--tfds-dir is given")
    parser.add_argument("--backbone", choices=(*BACKBONE_ORDER, "all"), default=default.backbone,
                        help=f"backbone under the three heads (default {default.backbone}, the paper's best): vgg19, "
                             "resnet50, inception_v3, xception, mobilenet (keras.applications, whole and trainable), "
                             "transformer (MobileNet feature map -> tokens -> self-attention encoder blocks), or all "
                             "six in the paper's order (one run record each)")
    parser.add_argument("--weights", default=None, metavar="imagenet|none|PATH",
                        help="backbone initialisation: imagenet (default; Keras downloads the no-top ImageNet file, "
                             "needs network; offline, the error names the file to copy), none (from scratch; the "
                             "table row says so; the default with --smoke), or PATH to a local .h5: Keras's no-top "
                             "ImageNet file of that backbone (for transformer: MobileNet's), or a .weights.h5 saved "
                             "from the backbone; a PATH needs a single --backbone")
    parser.add_argument("--preprocess", choices=("paper", "backbone"), default=default.preprocess,
                        help="pixel scaling inside the model: paper = divide by 255 (Sec. 3.2, default); backbone = "
                             "the backbone's own keras.applications preprocess_input (caffe for VGG19/ResNet50, "
                             "[-1, 1] for the rest); its rows are labelled 'backbone preprocess_input' so the ablation "
                             "of VGG19/ResNet50 at chance shows in the tables")
    parser.add_argument("--smoke", action="store_true",
                        help="check the whole path fast: 1 epoch, each backbone's smallest input (32 px; 71 Xception, "
                             "75 Inception v3, 64 transformer), a seeded subset of 160 faces, weights none unless "
                             "--weights is given; writes under build/smoke/utkface_xception unless --out is given; "
                             "cells are labelled SMOKE RUN")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="output root: records in DIR/runs, tables in DIR/tables, index DIR/README.md, figures in "
                             "DIR/figures (default: results/runs, results/tables, results/README.md, results/figures; "
                             "with --smoke build/smoke/utkface_xception)")
    parser.add_argument("--seed", type=int, default=default.seed, metavar="S",
                        help=f"seed of the split, the subset, the shuffling and the initial weights (default "
                             f"{default.seed})")
    add_run_arguments(parser,
                      fresh_help="start new runs; without it, rerunning the same command resumes its earlier run: "
                                 "backbones already complete are read back, an interrupted one continues after its "
                                 "last completed epoch", duplicates=True)
    return parser


def main(argv=None) -> int:
    """The command line; errors a user can fix are one ``error:`` line (:func:`agegender.cli.run_main`)."""
    return run_main(_main, argv)


def _main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.data_dir is None and args.tfds_dir is None:
        parser.error("--data-dir is required (or --tfds-dir)")
    backbones = list(BACKBONE_ORDER) if args.backbone == "all" else [args.backbone]
    weights = parse_weights(args.weights) if args.weights is not None else None
    if weights not in (None, "imagenet") and len(backbones) > 1:
        parser.error("--weights PATH fits one backbone: pass a single --backbone with it")
    exp = dataclasses.replace(DeyExperiment(), backbone=backbones[0], seed=args.seed, preprocess=args.preprocess,
                              keep_duplicates_together=args.keep_duplicates_together)
    if args.smoke:
        exp = smoke(exp)
    if args.weights is not None:
        exp = dataclasses.replace(exp, weights=weights)
    out = args.out if args.out is not None or not args.smoke else SMOKE_OUT
    result = run(args.data_dir, exp, backbones=backbones, out=out, fresh=args.fresh,
                 deterministic=args.deterministic, strategy=args.strategy, tfds_dir=args.tfds_dir)
    print()
    print(format_tables(result["cells"]))
    print()
    print(f"[dey] tables : {result['tables_dir']} (dey_aggarwal__table-1/2/3.md, *-per-class.md, section-*.md), "
          f"index {result['readme']}")
    print(f"[dey] figures: {result['figures_dir']}")
    for key, path in result["records"].items():
        print(f"[dey] record : {path}")
    print(f"[dey] done in {result['seconds']:.0f} s")
    for backbone, message in result["failed"].items():  # diverged runs: their records say failed
        print(f"error: {backbone}: {message}", file=sys.stderr)
    return 2 if result["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
