"""Speziali (paper 000): one dual-task CNN vs two single-task CNNs for age and gender on UTKFace.

Paper: ``../shared/papers/000_e4db9ea1b3cff842.txt`` (P. Speziali, "A Comparative Analysis:
Dual-Task CNN vs. Single-Task CNNs for Gender and Age Prediction in Facial Images"); the
original is PyTorch, this is its Keras 3 reproduction. Decisions: ``shared/papers/NOTES.md``,
"Speziali (000)". Published figures: ``results/published/speziali.csv``.

What it runs
------------
1. ``read_utkface(--data-dir)``; the Speziali split (Sec. III-A): 70/30 train/test, then the
   70% part 70/30 train/validation; the Kolmogorov-Smirnov test on the train vs validation
   ages (paper: p ~= 0.38); the split manifest and the Fig. 1-4 histograms / CDFs.
2. Up to three networks (``--networks``), each its own run record: the single-task age
   regressor (``age``), the single-task gender classifier (``gender``) and the dual-task
   network (``dual``), all ``agegender.models.dual_cnn.build_dual_cnn`` (Sec. III-B). Adam at
   the paper's per-network learning rates, batch 64, early stopping with patience 3 on the
   validation loss (best weights restored), augmentation (flip, rotation <= 10 degrees,
   brightness / contrast / saturation / hue jitter) on the training part only.
3. Per network: training time (s) and epochs; the last training and validation loss; age R²,
   age MAE (years) and gender accuracy on train / validation / test (evaluated without
   augmentation, with the restored best weights); test confusion matrices (Figs. 12, 13).
4. The tables are regenerated next to the published values and the reproduced cells of
   this run are printed.

Tables reproduced (``results/tables/speziali__*.md``): ``Time (sec)``, ``Num. of epochs``,
``Last loss value (training)``, ``Last loss value (validation)``, ``Training Metrics``,
``Validation Metrics``, ``Test Metrics`` (the paper printed these three blank: "not
published"; an extra column ``Age task (MAE, years)``), ``Fig. 12`` / ``Fig. 13`` (the test
confusion matrices as counts), ``Section III-A`` (images, split shares, KS p-value, max
rotation) and ``Section III-B`` / ``Section IV-B`` (hyper-parameters, read back from the
built model and the configuration, so a deviation such as the smoke input size shows).

Figures (PNG, in ``<out>/figures/utkface_dual_cnn/<run id>/``): ``fig01_age_histogram``,
``fig02_03_gender_histograms``, ``fig04_age_cdf``, ``fig07_loss_per_iteration_age``,
``fig08_loss_per_iteration_gender``, ``fig09_loss_per_iteration_dual``,
``fig10_accuracy_per_epoch_single``, ``fig11_accuracy_per_epoch_dual``,
``fig12_confusion_single``, ``fig13_confusion_dual``, ``fig14_age_first50_single``,
``fig15_age_first50_dual``, ``fig16_validation_face``, ``fig17_heatmaps_age``,
``fig18_heatmaps_gender``, ``fig19_heatmaps_dual``, ``gradcam`` (Grad-CAM of the gender and
age outputs, single vs dual) and ``learning_curves_<network>``. Figures of a network that was
not trained are left out.

Command
-------
::

    python -m reproductions.utkface_dual_cnn --data-dir ~/data/UTKFace
    python -m reproductions.utkface_dual_cnn --data-dir DIR --networks dual --seed 1 --out build/speziali
    python -m reproductions.utkface_dual_cnn --data-dir DIR --smoke        # 1 epoch, 32 px, 240 faces
    make reproduce-utkface-dual DATA_DIR=~/data/UTKFace

Killed? Run the same command again: it resumes (networks already complete are reloaded from
their ``model.keras``, the interrupted one continues after its last completed epoch; the
record keeps ``resumed_from_epoch``). ``--fresh`` starts over; ``--deterministic`` turns on
TensorFlow's op determinism (same seed, same device: same split and losses).

Several GPUs: ``--strategy mirrored`` (every GPU of the machine) or ``multiworker`` (several
machines, ``TF_CONFIG``) builds and trains each network under ``tf.distribute``
(:mod:`agegender.distribute`). The paper's batch of 64 stays the global batch (32 per replica on
two GPUs; a replica count that does not divide 64 is an error) and the learning rates stay the
paper's; the batch normalisation of ``block1_bn`` then uses each replica's share of the batch for
its statistics. ``--tfds-dir DIR`` reads the TFDS data prepared by ``python -m agegender.data
prepare`` instead of ``--data-dir``.

Runtime (full UTKFace: the paper's 23,708 faces split 11,617 / 4,979 / 7,112; 128x128; ~9
epochs per network): the paper took 640-840 s per network on an RTX 3070 (Sec. IV-B); a current
data-centre GPU (mixed float16, chosen automatically) should take a few minutes per network,
about 10-20 minutes for all three (not measured here: no GPU was available when this was
written). On CPU the 5x5, 128-filter second convolution dominates: a training step at 128 px
took 0.33 s per image on 2 (shared) cores, so one epoch of one network takes about an hour and
a full run of the three about a day; use a GPU. ``--smoke`` takes about 50-60 s on 2 CPU cores.

At smoke scale (2 steps per epoch) Adam at the paper's 0.01 blows up in the first steps (the
dual net's first-epoch age MSE reaches ~1e8 and its gender branch collapses to one class);
Adam's first step moves every weight by the learning rate, and the Dense(128) layer reads
32,768 features at 128 px. Whether the full run recovers within its ~180 steps per epoch, as
the paper's apparently did, has not been checked here.

Expected figures: the paper's Time / epochs / last-loss tables (``Time (sec)``: 840.61,
747.39, 640.34 s; 8, 10, 9 epochs; last losses 0.5999 / 0.0027 / 1.2228 (train) and
1.3413 / 0.0041 / 1.4058 (validation)); the metric tables were printed blank, so there is no
published R² or accuracy to match. The paper's claims: gender accuracy similar for single and
dual nets; age R² better for the dual net. On the full real data expect a gender accuracy
clearly above the majority rate (about 0.52) and a positive age R²; the smoke mode only checks
the path.

Choices not fixed by the paper (each named where it is set):

* **Age target in years, unscaled**, MSE loss: the paper scales the age loss by lambda_age =
  0.01 "to equalise the magnitudes" with the cross-entropy, which only makes sense for an MSE in
  years² (hundreds). The same 0.01 also multiplies the **single-task** age loss: Adam's updates
  do not change with a constant loss factor (up to its epsilon), so this changes only the
  printed loss, and the paper's single-task age losses (0.5999 train, 1.3413 validation) are
  only plausible as 0.01 x MSE (RMSE 7.7 / 11.6 years; unscaled they would mean an RMSE under
  1.2 years).
* **The paper's framework defaults** where Keras differs: Adam epsilon 1e-8; batch-norm
  momentum 0.9 (PyTorch ``momentum=0.1``; Keras's default 0.99 leaves the moving statistics
  near their initial values for the first few hundred steps, which wrecks small runs) and
  epsilon 1e-5.
* Colour-jitter magnitudes (not stated): brightness +-0.2, contrast and saturation x[0.8, 1.2],
  hue +-0.05.
* "Last loss value": the training loss is Keras's mean over the last epoch (with dropout and
  augmentation) and the validation loss that epoch's; the dual net's value is the summed loss
  CE + 0.01 x MSE in the ``Age task`` column (where the paper prints its single value), with
  its two parts as extra columns. The metrics are computed with the best weights (early
  stopping restores them), from predictions on un-augmented images.
* Loss per iteration (Figs. 7-9) is recovered from Keras's running epoch mean at each batch
  end (the total loss weights batches by their size, the per-output parts weight each batch
  once, as Keras 3 does).
* The tf.data datasets are given their exact cardinality: with an unknown cardinality (the
  shared pipeline's ``ignore_errors``) Keras 3.15 adds an empty step at each epoch end that
  deflates the per-output losses (``age_loss``, ``gender_loss``) it reports.
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
from agegender.config import apply_overrides  # noqa: E402
from agegender.errors import DataError  # noqa: E402
from agegender.records import deviations_from  # noqa: E402
from agegender.training import PRECISION_HELP, PRECISIONS  # noqa: E402

REPRODUCTION = "utkface_dual_cnn"
PAPER = "speziali"
GENDER_LABELS = ("Male", "Female")  # UTKFace gender 0 male / 1 female
SMOKE_OUT = Path(__file__).resolve().parents[1] / "build" / "smoke" / REPRODUCTION  # keeps 1-epoch runs out of results/


@dataclasses.dataclass(frozen=True)
class SpezialiExperiment:
    """The paper's hyper-parameters; the smoke mode is ``dataclasses.replace`` of this."""

    input_size: int = 128  # Sec. III-B: "dimensions 128 x 128 x 3"
    batch_size: int = 64  # Sec. III-B.2: "In both architectures, the batch size is 64"
    dropout: float = 0.25  # Sec. III-B.1: "dropout layer (set at 0.25)"
    lr_dual: float = 0.01  # Sec. III-B.1: "Adam optimizer with a learning rate set to 0.01"
    lr_gender: float = 0.01  # Sec. III-B.2: "0.01 for the classification network"
    lr_age: float = 0.001  # Sec. III-B.2: "0.001 for the regression network"
    adam_epsilon: float = 1e-8  # PyTorch Adam default (the paper's framework); Keras's is 1e-7
    bn_momentum: float = 0.9  # PyTorch BatchNorm2d momentum=0.1 (Keras convention 1 - 0.1); module docstring
    bn_epsilon: float = 1e-5  # PyTorch BatchNorm2d default
    lambda_age: float = 0.01  # Sec. IV-B: "multiplying it by a factor lambda_age = 0.01"
    scale_single_age_loss: bool = True  # lambda_age on the single-task age loss too: module docstring
    patience: int = 3  # Sec. IV-B: "patience value set to 3", monitoring the validation loss
    epochs: int = 50  # upper bound, not stated; early stopping ended at 8-10 epochs (Sec. IV-B)
    test_fraction: float = 0.3  # Sec. III-A: 70% train / 30% test
    val_fraction: float = 0.3  # Sec. III-A: the training set split again 70% / 30%
    flip: bool = True  # Sec. III-A: "horizontally mirrored images"
    rotation_deg: float = 10.0  # Sec. III-A: "random rotations of up to 10 degrees"
    brightness: float = 0.2  # Sec. III-A names the jitter, not its size: our choice (additive, [0, 1] scale)
    contrast: float = 0.2  # our choice: factor in [0.8, 1.2]
    saturation: float = 0.2  # our choice: factor in [0.8, 1.2]
    hue: float = 0.05  # our choice: hue shift of at most 0.05 of the colour circle
    max_images: int | None = None  # None: every usable image; the smoke mode takes a seeded subset
    keep_duplicates_together: bool = False  # the paper's split ignores byte-identical files (issue 21): not ours to fix
    first_n: int = 50  # Figs. 14-15: "the first 50 observations of the set"
    heatmap_index: int = 0  # Figs. 16-19: which validation face (in split order)
    precision: str = "auto"  # mixed_float16 on a GPU, float32 on CPU (agegender.training.configure_precision)
    seed: int = 0


def smoke(exp: SpezialiExperiment) -> SpezialiExperiment:
    """The ``--smoke`` experiment: the same protocol at 1 epoch, 32x32 inputs and 240 faces."""
    return dataclasses.replace(exp, epochs=1, input_size=32, max_images=240)


@dataclasses.dataclass(frozen=True)
class Network:
    """One of the three networks the paper compares, and where its numbers go in the tables."""

    key: str  # --networks name
    variant: str  # build_dual_cnn variant
    tasks: tuple[str, ...]
    row: str  # published row
    column: str  # published column for time / epochs / last loss (the '*' convention for the dual net)
    lr_field: str  # SpezialiExperiment field holding its learning rate
    title: str


NETWORKS = {
    "age": Network("age", "age", ("age",), "Single-task CNN", "Age task", "lr_age", "single-task age CNN"),
    "gender": Network("gender", "gender", ("gender",), "Single-task CNN", "Gender task", "lr_gender",
                      "single-task gender CNN"),
    "dual": Network("dual", "dual", ("gender", "age"), "Multi-task CNN", "Age task", "lr_dual", "dual-task CNN"),
}


# ----------------------------------------------------------------------------------------------
# data


def load_split(data_dir, exp: SpezialiExperiment, tfds_dir=None):
    """Read UTKFace under ``data_dir`` (or the prepared TFDS data in ``tfds_dir``) and apply the Speziali
    split; returns (samples, frame used, split)."""
    from agegender.cli import read_samples
    from agegender.data.splits import make_split

    samples = read_samples("utkface", data_dir, tfds_dir)
    frame = samples.frame
    if exp.max_images is not None and exp.max_images < len(frame):
        frame = frame.sample(n=exp.max_images, random_state=exp.seed).sort_values("file").reset_index(drop=True)
    split = make_split(frame, "speziali", seed=exp.seed, test_fraction=exp.test_fraction,
                       val_fraction=exp.val_fraction, keep_duplicates_together=exp.keep_duplicates_together)
    counts = split.counts()
    if min(counts.values()) == 0:
        raise DataError(f"too few usable faces for a train/validation/test split (split sizes {counts})",
                        path=data_dir if tfds_dir is None else tfds_dir,
                        fix="point --data-dir at a folder with more UTKFace images (at least ~10)")
    return samples, frame, split


def ks_statistic(a, b) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the two empirical CDFs."""
    a, b = np.sort(np.asarray(a, dtype="float64")), np.sort(np.asarray(b, dtype="float64"))
    grid = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, grid, side="right") / len(a)
    cdf_b = np.searchsorted(b, grid, side="right") / len(b)
    return float(np.max(np.abs(cdf_a - cdf_b)))


def split_shares(counts: dict) -> dict:
    """The paper's two shares (Sec. III-A) from split counts, in percent."""
    total = sum(counts.values())
    trainval = counts["train"] + counts["val"]
    return {"train_test": (100.0 * trainval / total, 100.0 * counts["test"] / total),
            "train_val": (100.0 * counts["train"] / trainval, 100.0 * counts["val"] / trainval)}


def _targets(tasks):
    from agegender.data.pipeline import Target

    every = {"age": Target("age", "regression"),  # years, unscaled (module docstring)
             "gender": Target("gender", "sparse")}  # 0 male / 1 female, for the 2-way softmax
    return {task: every[task] for task in tasks}


def make_datasets(split, exp: SpezialiExperiment, tasks, skipped: list) -> dict:
    """Train (augmented, shuffled), validation and test datasets, plus un-augmented train for metrics.

    ``skipped`` receives one list per dataset of ``{file, reason}`` for the files left out (see
    :func:`merge_skipped`); a file that fails to decode is added to its list during the first pass.
    """
    import tensorflow as tf

    from agegender.data.pipeline import Augment, build_dataset

    augment = Augment(flip=exp.flip, rotation_deg=exp.rotation_deg, brightness=exp.brightness,
                      contrast=exp.contrast, saturation=exp.saturation, hue=exp.hue)
    targets = _targets(tasks)
    out = {}
    for name, part, training in (("train", "train", True), ("val", "val", False), ("test", "test", False),
                                 ("train_eval", "train", False)):
        frame = split.part(part)
        report: list = []
        ds = build_dataset(frame, targets, image_size=exp.input_size, batch_size=exp.batch_size,
                           training=training, augment=augment if training else None, seed=exp.seed,
                           pixel_scale=1.0,  # the model rescales 0-255 itself
                           report=report)
        n = len(frame) - len(report)
        if name != "train_eval":
            skipped.append(report)  # merged after training: files that fail to decode are reported then
        # exact cardinality: see the module docstring (Keras 3 per-output losses)
        out[name] = ds.apply(tf.data.experimental.assert_cardinality(math.ceil(n / exp.batch_size)))
        out[f"n_{name}"] = n
    return out


def merge_skipped(reports: list) -> list[dict]:
    """The ``{file, reason}`` entries of every dataset's report, each once."""
    merged: list[dict] = []
    for report in reports:
        for item in (report if isinstance(report, list) else [report]):
            if item not in merged:
                merged.append(item)
    return merged


# ----------------------------------------------------------------------------------------------
# models


def build_network(network: Network | str, exp: SpezialiExperiment, strategy=None):
    """Build and compile one network with the paper's optimiser, losses and lambda_age.

    ``strategy``: a ``tf.distribute`` strategy (:func:`agegender.distribute.make_strategy`) whose
    scope the model is built and compiled under; None: the current one.
    """
    import contextlib

    network = NETWORKS[network] if isinstance(network, str) else network
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        return _build_network(network, exp)


def _build_network(network: Network, exp: SpezialiExperiment):
    import keras

    from agegender.models.dual_cnn import build_dual_cnn

    model = build_dual_cnn(network.variant, input_size=exp.input_size, dropout=exp.dropout)
    bn = model.get_layer("block1_bn")
    bn.momentum, bn.epsilon = exp.bn_momentum, exp.bn_epsilon  # PyTorch defaults (module docstring)
    losses = {"age": "mse", "gender": "sparse_categorical_crossentropy"}
    age_weight = exp.lambda_age if (network.key == "dual" or exp.scale_single_age_loss) else 1.0
    weights = {"age": age_weight, "gender": 1.0}
    metrics = {"age": [keras.metrics.MeanAbsoluteError(name="mae"), keras.metrics.R2Score(name="r2")],
               "gender": [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]}
    model.compile(optimizer=keras.optimizers.Adam(getattr(exp, network.lr_field), epsilon=exp.adam_epsilon),
                  loss={t: losses[t] for t in network.tasks},
                  loss_weights={t: weights[t] for t in network.tasks},
                  weighted_metrics={t: metrics[t] for t in network.tasks})
    return model


def preprocessing(network: Network, exp: SpezialiExperiment, data_kind: str):
    """How ``python -m agegender predict`` feeds a face to ``network``: 0-255 pixels at ``input_size``."""
    from agegender.preprocess import Head, Preprocessing, face_preset

    heads = {"age": Head.age_regression(), "gender": Head.gender_softmax()}  # years; 2-way softmax (_targets)
    return Preprocessing(input_size=exp.input_size, pixel_scale=1.0, face=face_preset(data_kind, "utkface"),
                         heads={t: heads[t] for t in network.tasks})


def _iteration_logger(n_train: int, batch_size: int, keys):
    """Keras callback turning the running epoch means at each batch end into per-batch losses."""
    import keras

    class IterationLoss(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.rows: list[dict] = []
            self.iteration = 0

        def get_resume_state(self) -> dict:  # saved with the training state at each epoch end
            return {"rows": self.rows, "iteration": self.iteration}

        def set_resume_state(self, state: dict) -> None:
            self.rows, self.iteration = list(state["rows"]), int(state["iteration"])

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch, self.seen, self.batches = epoch + 1, 0, 0
            self.totals = {k: 0.0 for k in keys}
            self.rows = [r for r in self.rows if r["epoch"] <= epoch]  # a resumed run redoes the epochs after
            self.iteration = len(self.rows)

        def on_train_batch_end(self, batch, logs=None):
            logs = logs or {}
            size = max(1, min(batch_size, n_train - self.seen))
            seen, batches = self.seen + size, self.batches + 1
            self.iteration += 1
            row = {"iteration": self.iteration, "epoch": self.epoch}
            for key in keys:
                if key not in logs:
                    continue
                # the total loss is a Mean weighted by batch size; per-output losses weight each batch once
                weight, cumulative = (size, seen) if key == "loss" else (1, batches)
                total = float(logs[key]) * cumulative
                row[key] = (total - self.totals[key]) / weight
                self.totals[key] = total
            self.seen, self.batches = seen, batches
            self.rows.append(row)

    return IterationLoss()


# ----------------------------------------------------------------------------------------------
# evaluation


def _gender_ce(labels, probabilities) -> float:
    p = np.clip(np.asarray(probabilities, dtype="float64"), 1e-7, 1 - 1e-7)  # Keras's clipping
    return float(np.mean(-np.log(p[np.arange(len(labels)), np.asarray(labels, dtype=int)])))


def evaluate(model, network: Network, datasets: dict, exp: SpezialiExperiment, train_age_mean: float) -> dict:
    """Per split: losses, age R² / MAE / RMSE, gender accuracy and confusion matrix; raw predictions kept."""
    from agegender.metrics import classification_report, regression_report
    from agegender.training import collect_predictions

    out = {}
    age_weight = exp.lambda_age if (network.key == "dual" or exp.scale_single_age_loss) else 1.0
    for split, key in (("train", "train_eval"), ("val", "val"), ("test", "test")):
        y, p, _ = collect_predictions(model, datasets[key])
        m: dict = {"n": int(len(next(iter(y.values()))))}
        loss = 0.0
        if "age" in network.tasks:
            age = regression_report(y["age"], p["age"], train_mean=train_age_mean)
            mse = float(np.mean((np.ravel(y["age"]) - np.ravel(p["age"])) ** 2))
            m.update(age_r2=age["r2"], age_mae_years=age["mae"], age_rmse_years=age["rmse"],
                     age_baseline_mae_years=age["mean_baseline_mae"], age_mse=mse)
            loss += age_weight * mse
        if "gender" in network.tasks:
            gender = classification_report(y["gender"], np.argmax(p["gender"], axis=-1), 2)
            ce = _gender_ce(y["gender"], p["gender"])
            m.update(gender_accuracy=gender["accuracy"], gender_majority=gender["majority_baseline"],
                     gender_confusion=gender["confusion_matrix"], gender_ce=ce, gender_f1=gender["f1"])
            loss += ce
        m["loss"] = loss
        out[split] = m
        out[f"_{split}_predictions"] = (y, p)
    return out


def network_cells(network: Network, history: list[dict], seconds: float, metrics: dict,
                  exp: SpezialiExperiment) -> list[dict]:
    """The paper-table cells one trained network reproduces (labels as in speziali.csv)."""
    last = history[-1] if history else {}
    row, col = network.row, network.column
    cells = [
        {"table": "Time (sec)", "row": row, "column": col, "value": seconds, "unit": "seconds"},
        {"table": "Num. of epochs", "row": row, "column": col, "value": len(history), "unit": "epochs"},
    ]
    for table, key in (("Last loss value (training)", "loss"), ("Last loss value (validation)", "val_loss")):
        if key in last:
            cells.append({"table": table, "row": row, "column": col, "value": last[key], "unit": "loss"})
        if network.key == "dual":
            prefix = "" if key == "loss" else "val_"
            if f"{prefix}age_loss" in last:
                cells.append({"table": table, "row": row, "column": "Age task (lambda_age x MSE part)",
                              "value": exp.lambda_age * last[f"{prefix}age_loss"], "unit": "loss"})
            if f"{prefix}gender_loss" in last:
                cells.append({"table": table, "row": row, "column": "Gender task (CE part)",
                              "value": last[f"{prefix}gender_loss"], "unit": "loss"})
    for table, split in (("Training Metrics", "train"), ("Validation Metrics", "val"), ("Test Metrics", "test")):
        m = metrics[split]
        if "age" in network.tasks:
            cells.append({"table": table, "row": row, "column": "Age task (R2)", "value": m["age_r2"], "unit": "r2"})
            cells.append({"table": table, "row": row, "column": "Age task (MAE, years)",
                          "value": m["age_mae_years"], "unit": "mae-years"})
        if "gender" in network.tasks:
            cells.append({"table": table, "row": row, "column": "Gender task (Accuracy)",
                          "value": m["gender_accuracy"], "unit": "accuracy"})
    if "gender" in network.tasks:
        figure = "Fig. 13" if network.key == "dual" else "Fig. 12"
        matrix = metrics["test"]["gender_confusion"]
        for i, true in enumerate(GENDER_LABELS):
            for j, pred in enumerate(GENDER_LABELS):
                cells.append({"table": figure, "row": f"true {true}", "column": f"predicted {pred}",
                              "value": int(matrix[i][j]), "unit": "count"})
    return cells


def protocol_cells(split, n_images: int, exp: SpezialiExperiment, model) -> list[dict]:
    """Section III-A (data, split, KS), III-B and IV-B (hyper-parameters read from the model) cells."""
    shares = split_shares(split.counts())
    ks = split.info.get("ks_train_val", {})
    a, b, c = "Section III-A", "Section III-B", "Section IV-B"
    conv1, conv2 = model.get_layer("block1_conv"), model.get_layer("block2_conv")
    pool, fc, drop = model.get_layer("block1_pool"), model.get_layer("gender_fc"), model.get_layer("gender_dropout")
    height, width, channels = model.inputs[0].shape[1:]
    padding = (conv1.kernel_size[0] - 1) // 2 if conv1.padding == "same" else 0
    cells = [
        (a, "UTKFace", "images", n_images, "count"),
        (a, "train/test split", "train share", shares["train_test"][0], "percent"),
        (a, "train/test split", "test share", shares["train_test"][1], "percent"),
        (a, "train/validation split", "train share", shares["train_val"][0], "percent"),
        (a, "train/validation split", "validation share", shares["train_val"][1], "percent"),
        (a, "augmentation", "max rotation", exp.rotation_deg, "degrees"),
        (b, "input", "height", height, "pixels"),
        (b, "input", "width", width, "pixels"),
        (b, "input", "channels", channels, "count"),
        (b, "conv 1", "filters", conv1.filters, "count"),
        (b, "conv 1", "kernel size", conv1.kernel_size[0], "pixels"),
        (b, "conv 1", "padding", padding, "pixels"),
        (b, "conv", "stride", conv1.strides[0], "pixels"),
        (b, "conv 2", "kernel size", conv2.kernel_size[0], "pixels"),
        (b, "max pooling", "window", pool.pool_size[0], "pixels"),
        (b, "max pooling", "stride", pool.strides[0], "pixels"),
        (b, "fully connected", "units", fc.units, "count"),
        (b, "dropout", "rate", drop.rate, "scalar"),
        (b, "Multi-task CNN", "learning rate", exp.lr_dual, "scalar"),
        (b, "Single-task CNN gender", "learning rate", exp.lr_gender, "scalar"),
        (b, "Single-task CNN age", "learning rate", exp.lr_age, "scalar"),
        (b, "both architectures", "batch size", exp.batch_size, "count"),
        (c, "early stopping", "patience", exp.patience, "epochs"),
        (c, "age loss", "lambda_age", exp.lambda_age, "scalar"),
    ]
    if "p_value" in ks:
        cells.append((a, "Kolmogorov-Smirnov test", "p-value", ks["p_value"], "p-value"))
    out = [{"table": t, "row": r, "column": col, "value": float(v), "unit": u} for t, r, col, v, u in cells]
    for cell in out:
        if (cell["table"], cell["row"], cell["column"]) in SETTINGS:
            cell["setting"] = True  # echoes a configuration constant: shown, never counted as reproduced
    return out


# cells that only echo a training setting of SpezialiExperiment (not computed from data or read off the model)
SETTINGS = {("Section III-A", "augmentation", "max rotation"),
            ("Section III-B", "Multi-task CNN", "learning rate"),
            ("Section III-B", "Single-task CNN gender", "learning rate"),
            ("Section III-B", "Single-task CNN age", "learning rate"),
            ("Section III-B", "both architectures", "batch size"),
            ("Section IV-B", "early stopping", "patience"),
            ("Section IV-B", "age loss", "lambda_age")}


# ----------------------------------------------------------------------------------------------
# figures (matplotlib, Agg)


def _plt():
    from agegender.plots import pyplot

    return pyplot()


def _save(fig, path) -> Path:
    from agegender.plots import save_figure

    return save_figure(fig, path)


def plot_split(split, folder) -> dict[str, Path]:
    """Figs. 1-4: age histograms, gender histograms per split, train vs validation age CDFs with the KS gap."""
    plt = _plt()
    parts = {name: split.part(name) for name in ("train", "val", "test")}
    paths = {}
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ages = np.concatenate([p["age"].to_numpy() for p in parts.values()])
    bins = np.arange(0, max(float(ages.max()), 1.0) + 6, 5)
    for name, part in parts.items():
        ax.hist(part["age"], bins=bins, histtype="step", lw=1.5, label=f"{name} (n={len(part)})")
    ax.set_xlabel("age (years)")
    ax.set_ylabel("faces")
    ax.set_title("Age distribution per split (cf. Fig. 1)", fontsize=9)
    ax.legend(fontsize=7)
    paths["fig01_age_histogram"] = _save(fig, Path(folder) / "fig01_age_histogram.png")

    fig, axes = plt.subplots(1, 2, figsize=(7, 3))
    trainval = np.concatenate([parts["train"]["gender"], parts["val"]["gender"]])
    counts = [int((trainval == g).sum()) for g in (0, 1)]
    axes[0].bar(GENDER_LABELS, counts, color=["tab:blue", "tab:orange"])
    axes[0].set_title("70% training set (cf. Fig. 2)", fontsize=9)
    width = 0.38
    for k, name in enumerate(("train", "val")):
        g = parts[name]["gender"].to_numpy()
        share = [float((g == v).mean()) if len(g) else 0.0 for v in (0, 1)]
        axes[1].bar(np.arange(2) + (k - 0.5) * width, share, width, label=name)
    axes[1].set_xticks(range(2), GENDER_LABELS)
    axes[1].set_ylabel("share")
    axes[1].set_title("new training vs validation set (cf. Fig. 3)", fontsize=9)
    axes[1].legend(fontsize=7)
    paths["fig02_03_gender_histograms"] = _save(fig, Path(folder) / "fig02_03_gender_histograms.png")

    fig, ax = plt.subplots(figsize=(5, 3.2))
    a, b = np.sort(parts["train"]["age"].to_numpy(float)), np.sort(parts["val"]["age"].to_numpy(float))
    for values, name in ((a, "train"), (b, "validation")):
        ax.step(values, np.arange(1, len(values) + 1) / len(values), where="post", label=name)
    ks = split.info.get("ks_train_val", {})
    title = "Age CDF, new training vs validation set (cf. Fig. 4)"
    if ks:
        title += f"\nKS statistic {ks['statistic']:.3f}, p = {ks['p_value']:.3f} (paper: p ~ 0.38)"
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("age (years)")
    ax.set_ylabel("cumulative share")
    ax.legend(fontsize=7)
    paths["fig04_age_cdf"] = _save(fig, Path(folder) / "fig04_age_cdf.png")
    return paths


def plot_iteration_loss(rows: list[dict], path, title: str) -> Path:
    """Figs. 7-9: the training loss at every iteration (batch), with the dual net's two parts."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    it = [r["iteration"] for r in rows]
    ax.plot(it, [r.get("loss", np.nan) for r in rows], lw=1, label="loss")
    if any("age_loss" in r for r in rows):
        ax.plot(it, [r.get("gender_loss", np.nan) for r in rows], lw=0.8, label="gender CE")
        ax.plot(it, [0.01 * r.get("age_loss", np.nan) if "age_loss" in r else np.nan for r in rows], lw=0.8,
                label="0.01 x age MSE")
        ax.legend(fontsize=7)
    values = np.array([r.get("loss", np.nan) for r in rows], dtype=float)
    if np.isfinite(values).any() and np.nanmax(values) > 50 * max(np.nanmedian(values), 1e-9):
        ax.set_yscale("log")  # a first-epoch spike would flatten the rest
    ax.set_xlabel("iteration")
    ax.set_ylabel("training loss")
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


def plot_epoch_metrics(histories: dict, path, title: str) -> Path:
    """Figs. 10-11: gender accuracy and age R² per epoch, training (solid) and validation (dashed)."""
    plt = _plt()
    panels = [(task, key) for task, key in (("gender", "accuracy"), ("age", "r2"))
              if any(_metric(h, task, key) for h in histories.values())]
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(4 * max(len(panels), 1), 3.2), squeeze=False)
    for ax, (task, key) in zip(axes[0], panels):
        for label, history in histories.items():
            name = _metric(history, task, key)
            if not name:
                continue
            epochs = [h["epoch"] for h in history]
            ax.plot(epochs, [h.get(name, np.nan) for h in history], "-o", ms=3, label=f"{label} train")
            ax.plot(epochs, [h.get(f"val_{name}", np.nan) for h in history], "--o", ms=3, label=f"{label} validation")
        ax.set_xlabel("epoch")
        ax.set_title(f"{task} {'accuracy' if key == 'accuracy' else 'R²'}", fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def _metric(history: list[dict], task: str, key: str) -> str | None:
    """The history key of a metric: ``gender_accuracy`` in a two-output model, ``accuracy`` in a one-output one."""
    names = {k for h in history for k in h}
    for name in (f"{task}_{key}", key):
        if name in names:
            return name
    return None


def plot_first_n(true_age, predicted_age, n: int, path, title: str) -> Path:
    """Figs. 14-15: predicted and true age for the first ``n`` test faces."""
    plt = _plt()
    true_age, predicted_age = np.ravel(true_age)[:n], np.ravel(predicted_age)[:n]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    x = np.arange(1, len(true_age) + 1)
    ax.plot(x, true_age, "-o", ms=3, label="true age")
    ax.plot(x, predicted_age, "-s", ms=3, label="predicted age")
    ax.set_xlabel(f"test face (first {len(true_age)})")
    ax.set_ylabel("age (years)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_face(image, path, title: str) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(2.6, 2.8))
    ax.imshow(np.clip(np.asarray(image), 0, 255).astype("uint8"))
    ax.set_axis_off()
    ax.set_title(title, fontsize=8)
    return _save(fig, path)


def plot_heatmaps(maps: dict, image, path, title: str) -> Path:
    """Figs. 17-19: the face and the mean activation map of every convolution layer."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(maps) + 1, figsize=(2.2 * (len(maps) + 1), 2.6))
    axes[0].imshow(np.clip(np.asarray(image), 0, 255).astype("uint8"))
    axes[0].set_title("input", fontsize=8)
    for ax, (name, heat) in zip(axes[1:], maps.items()):
        ax.imshow(heat, cmap="jet", vmin=0, vmax=1)
        ax.set_title(f"{name} {heat.shape[0]}x{heat.shape[1]}", fontsize=8)
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def plot_gradcam(image, cams: dict, path) -> Path:
    """Grad-CAM overlays: one panel per (network, output)."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(cams) + 1, figsize=(2.3 * (len(cams) + 1), 2.7))
    face = np.clip(np.asarray(image), 0, 255).astype("uint8")
    axes[0].imshow(face)
    axes[0].set_title("validation face", fontsize=8)
    for ax, (label, cam) in zip(axes[1:], cams.items()):
        ax.imshow(face)
        ax.imshow(cam, cmap="jet", alpha=0.45, vmin=0, vmax=1)
        ax.set_title(label, fontsize=8)
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle("Grad-CAM at the last convolution (block4_conv)", fontsize=9)
    return _save(fig, path)


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


if __name__ == "__main__":
    sys.exit(main())
