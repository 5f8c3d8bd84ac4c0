"""Sundriyal (paper 004): multi-task age / gender / race with learned loss weights and Early Freeze.

Paper: ``../shared/papers/004_e36f2c94204fb6ab.txt`` (H. Sundriyal, "Simultaneous Detection of
Face Attributes via Multi-Task Learning", M.Tech thesis, IIIT Delhi, 2020; PyTorch 1.5). This is
its Keras 3 reproduction. Decisions: ``shared/papers/NOTES.md``, "Sundriyal (004)". Published
figures: ``results/published/sundriyal.csv``. Building blocks:
:mod:`agegender.models.face_resnets` (backbones), :mod:`agegender.models.mtl_head` (the three
networks), :mod:`agegender.models.loss_weighting` (Eq. 3.5, the optimizer),
:mod:`agegender.models.early_freeze` (Algorithm 1).

What it runs
------------
1. The data: **UTKFace** (``--dataset utkface``) read from the file names, split by the CORAL
   csv lists (``--coral-csv-dir``, the folder of ``utk_train.csv`` / ``utk_test.csv``; the train
   list split 80:20 into train / validation, real files 10,517 / 2,630 / 3,287; ages 21-60,
   label = age - 21, target = label / 40); or **CelebA** (``--dataset celeba``), attributes
   ``Male`` and ``Young``, the official partition. The dataset tables 4.1-4.4 come from the
   readers (Table 4.1: every UTKFace file read; Table 4.2: the CelebA training partition).
2. The methods of Tables 4.6-4.15 (``--method``), each its own run record: ``baseline`` (backbone
   features -> output layer, one model per task), ``single`` (the MTL layers of one task, one
   model per task), ``mtl`` (the proposed network: all tasks, ``--loss weighted`` = learned
   weights with ``--lambda``, or ``average``; ``--early-freeze`` = Algorithm 1, or
   ``--no-early-freeze`` = early stopping of each converged task only). Adam 3e-5 with
   PyTorch-style weight decay 1e-5, learning rate / 10 when the total validation loss stops
   decreasing.
3. Test-set metrics: gender and race accuracy (%), age MAE in years (UTKFace) or Young/Old
   accuracy (CelebA), per-class accuracies and confusion matrices; training time and epochs;
   the loss weights per epoch; the Early Freeze events.
4. The tables are regenerated next to the published values and the reproduced cells printed.

Tables reproduced (``results/tables/sundriyal__*.md``)
------------------------------------------------------
* Tables 4.6-4.15 (one per backbone and dataset): the table of the requested ``--backbone``
  (``resnet50``: 4.9 / 4.14; ``senet50_128``: 4.10 / 4.15; ``resnet50_imagenet`` stands in for
  ``resnet50``). LightCNN, SphereFace and Inception-ResNet (4.6-4.8, 4.11-4.13) are not built.
* Table 4.16: the MTL age MAE ("Ours (MTL+SEResnet)"; the CE-/OR-/CORAL-CNN rows are CORAL's
  published figures, shown from the catalogue).
* Tables 5.1 / 5.2 / 5.3: ``--loss average`` vs ``weighted`` (CelebA SE-ResNet / ResNet-50,
  UTKFace SE-ResNet); Table 5.4: ``--no-early-freeze`` vs ``--early-freeze`` (UTKFace); Table 5.5:
  the ``--lambda`` sweep 0.001 / 0.01 / 0.1 / 1 (UTKFace); Section 5.2: the epochs at which the
  tasks converge; Section 5.3 and Figures 5.3 / 5.4: Young / Old accuracy and the age confusion
  matrices of the single-task network and the MTL network (CelebA).
* Tables 4.1-4.4 and Sections 4.1 / 4.2 (data), Table 3.2 and Sections 3.1, 3.3.2, 3.6.2 (settings
  read back from the configuration; Section 3.6.2's convergence time is the proposed network's
  training time in hours), Table 4.5 (feature dimension of the built backbone; a model-build
  record, data kind ``none``, not in smoke runs); Figures 4.7 / 4.8 "Ours (MTL+SEResnet)" (the
  proposed network's CelebA gender and Young/Old accuracy; the other methods' bars are not
  printed numbers). Section 4.4.5 stays empty: it is CORAL-CNN's *published* MAE minus ours, and a
  published figure never enters a computation (:mod:`reproductions.mtl_weighted_loss_extra`).
* ``Loss weights (extra)``: the learned weights ``w`` per task at the start (the seeded random
  logits) and the end of training, their largest change and the initial spread. At the thesis's
  learning rate the logits move ~0.1-0.3 against a random start of standard deviation 0.5, so
  when the weights moved less than their initial spread every cell of that model carries the note
  ``LOSS WEIGHTS BARELY MOVED``: its "learned" weighting is then mostly its random start.
* ``make reproduce-mtl`` runs both built backbones: SE-ResNet-50-128D (Tables 4.10, 4.15, 4.16,
  5.1, 5.3-5.5, Section 5.2, Figures 4.7 / 4.8) and ResNet-50 (Tables 4.9, 4.14, 5.2, Section 5.3,
  Figures 5.3 / 5.4); ``SENET_WEIGHTS`` / ``RESNET_WEIGHTS`` give each its converted weights.
* Run records carry ``deviations``: the settings unlike the thesis's configuration of that
  experiment (``--smoke``, ``--epochs`` ...) and ``backbone_used`` when the backbone was
  substituted; the tables keep such runs in rows of their own.

A run whose settings or backbone are not the thesis's for a table writes its cells to that
table with a row suffix naming the difference (e.g. ``Average Loss (ResNet-50)``), so it is never
averaged with the thesis's configuration. **Substituted backbones**: without ``--backbone-weights``
(converted VGGFace2 weights, see :mod:`agegender.models.face_resnets` for the file layout) the run
trains an ImageNet ResNet-50 (``keras.applications``) instead; every cell's note and every record
(``config.backbone``) says so, and the cells go to the requested backbone's table (the notes
column of the generated table carries the substitution). ``--smoke`` trains a two-convolution
stand-in (``smoke_cnn``), also named in every note.

Figures (PNG, ``<out>/figures/mtl_weighted_loss/<run id>/``): ``fig4_1_age_distribution``
(UTKFace), ``loss_weights_<model>`` (w per epoch), ``fig5_1_loss_vs_epoch_early_freeze`` or
``fig5_2_loss_vs_epoch_early_stopping`` (per-task training and validation loss per epoch with the
convergence / freeze epochs marked), ``fig5_1_5_2_early_freeze_vs_early_stopping`` (both, when
the other variant's record with the same dataset, backbone, loss and lambda is in the runs
folder), ``fig5_3_confusion_single`` / ``fig5_4_confusion_mtl`` (CelebA Young/Old),
``learning_curves_<model>``.

Command
-------
::

    python -m reproductions.mtl_weighted_loss --dataset utkface --data-dir ~/data/UTKFace \\
        --coral-csv-dir ~/data/coral-cnn/datasets --backbone senet50_128 --backbone-weights senet50_128.h5
    python -m reproductions.mtl_weighted_loss --dataset celeba --data-dir ~/data/celeba --method mtl --loss average
    python -m reproductions.mtl_weighted_loss --dataset utkface --data-dir DIR --smoke    # ~1.5 min on 2 CPU cores
    make reproduce-mtl DATA_DIR=... CORAL_DIR=... CELEBA_DIR=...           # both backbones, every table; see Makefile
    python -m reproductions.mtl_weighted_loss ... --fresh            # the same command resumes; --fresh starts over

Resuming
--------
Every model saves its training state at each epoch end in its run folder (``train_state/``:
weights, optimizer, history, and the Early Freeze and learning-rate-plateau state, the weight
snapshots Early Freeze restores from included; :func:`agegender.training.train`,
:mod:`agegender.models.early_freeze`). Rerunning the same command after a kill picks up the same
run (same run id, figures folder and records): models whose record is complete are read back
(metrics, cells, history and Early Freeze events from the record; nothing trained or loaded),
the interrupted one continues after its last completed epoch with its frozen layers frozen
again, and the models not started yet are trained; the record keeps ``resumed_from_epoch`` and
each epoch once, and ``metrics.training.seconds`` sums the processes. Each model's record is
completed as soon as it is evaluated. ``--fresh`` starts a new run; ``--deterministic`` turns
on TensorFlow's op determinism. Not restored: the random streams (dropout masks and shuffle
order of the resumed epochs are drawn afresh from the seed), so a resumed model continues from
the same weights but is not bit-identical to an uninterrupted one.

Several devices
---------------
``--strategy`` (:mod:`agegender.distribute`) builds the models under a ``tf.distribute`` scope. The
learned loss weighting's ``compute_loss`` (:mod:`agegender.models.loss_weighting`) divides its loss
by the number of replicas as Keras does for its own losses, so one mirrored step on two logical CPU
devices gives the single-device loss, loss weights and updated weights (``tests/test_distribute.py``).
Early Freeze, the plateau schedule and resuming were checked under ``MirroredStrategy`` by hand.
``--tfds-dir DIR`` reads the TFDS data prepared by ``python -m agegender.data prepare`` instead of
``--data-dir`` (the CORAL lists still come from ``--coral-csv-dir``).

Runtime
-------
The thesis trained on one GTX 1080 Ti: "2-3 hours to converge" on UTKFace and "6-7 hours" on
CelebA (Sec. 3.6.2), per model. Not measured here (no GPU was available when this was written):
a ResNet-50 / SE-ResNet-50 training step at 224x224 and batch 64 runs at roughly 1,500-2,500
images/s in mixed float16 on a current data-centre GPU, i.e. ~5-10 s per UTKFace epoch (10,517
images) and ~1.5-2 min per CelebA epoch (162,770), so ~5-15 min per UTKFace model and ~1 h per
CelebA model to convergence (tens of epochs), the tf.data decoding being the likely limit.
``--method all`` trains 7 models on UTKFace (3 baselines, 3 single-task networks, 1 MTL) and 5 on
CelebA; the Chapter 5 ablations add one model each. On a CPU a ResNet-50 step takes seconds
even at 32x32: use a GPU. ``--smoke`` (two-convolution stand-in, 32x32, 2 epochs, ~240 faces)
with ``--method all`` took 84 s (UTKFace, 7 models) and 85 s (CelebA, 5 models) of wall time on 2
shared CPU cores, most of it Python start-up, graph tracing and table regeneration.

Expected figures
----------------
Thesis, SE-ResNet-50-128D: UTKFace MTL gender 98.47 %, race 87.56 %, age MAE 4.68 years
(Table 4.10; CORAL-CNN 5.25); CelebA MTL gender 98.82 %, Young/Old 87.53 % (Table 4.15). With the
ImageNet substitute expect lower accuracies than with face-recognition weights (ImageNet features
are less face-specific), with the MTL network still ahead of the single-task models if the
thesis's claim holds. Smoke runs only check the path (near-chance numbers).

Protocol and decisions (thesis section; NOTES.md "Sundriyal (004)")
-------------------------------------------------------------------
* Data (Sec. 3.1, 4.2): UTKFace's aligned 200x200 chips and CelebA's aligned faces are already
  detected and cropped, so the thesis's dlib face detection is not repeated. CelebA's 178x218
  images are resized to the square input (aspect not kept). No augmentation (none is stated).
  The class imbalance the thesis points out (Sec. 4.1) is not countered (it states no method).
  Without ``--coral-csv-dir`` (and no ``utk_train.csv`` in ``--data-dir``) the CORAL lists are
  replaced by a seeded CORAL-like split of the faces aged 21-60 (13,147 : 3,287 train : test),
  written as ``utk_train.csv`` / ``utk_test.csv`` into the protocol run folder and named in every
  note; generated faces always need this (their names are not in CORAL's lists).
* Targets (Sec. 3.3): UTKFace age = CORAL label (age - 21, 0-39) / 40 (the thesis says "labeled as
  0 to 40" in Sec. 3.3.2 and "0 to 39" in Sec. 4.2; the labels are 0-39), loss 0.5 (y - p)^2 (Eq.
  3.2); MAE reported in years (|error| x 40). Gender and race: softmax cross-entropy; CelebA age:
  2-way softmax (Young / Old, "128x2"). Race in Table 4.1 by UTKFace's codes (0 White ... 4 Others).
* Networks: :mod:`agegender.models.mtl_head` (sizes chosen: shared 512 -> 256, task 128; LeakyReLU
  0.01, Dropout 0.5, BatchNorm momentum 0.9 / eps 1e-5, PyTorch's defaults). The whole backbone is
  fine-tuned (Sec. 4.3). Input 200x200 for ResNet-50 (Sec. 3.1), 224x224 for SE-ResNet-50 and the
  ImageNet substitute.
* Loss weights (Sec. 3.4): ``w = softmax(logits)``, logits random N(0, 0.5^2) at the start,
  ``L = sum w_i L_i + lambda sum w_i^2``; logged each epoch (``loss_weight_<task>``).
* Training (Table 3.2, Sec. 3.6.2): Adam lr 3e-5, betas 0.9 / 0.999, epsilon 1e-8 (PyTorch), L2
  weight decay 1e-5 added to the gradients (PyTorch's Adam); ``ReduceLROnPlateau(val_loss,
  factor 0.1)``. Not stated, chosen: batch 64, learning-rate patience 2, Early Freeze / early
  stopping patience 5 (so the learning rate drops before a task is declared converged), at most
  100 epochs (age converged "around 60 epochs", Sec. 5.2). Single-task models use the same
  callback with one task (early stopping, best weights restored). Mixed float16 on a GPU.
* Early Freeze: see :mod:`agegender.models.early_freeze` for the choices Algorithm 1 leaves open
  (what is restored, counters after a restore, one convergence per epoch). Early stopping of the
  converged task (Table 5.4) freezes that task's layers and stops its gradient, without restore.
* Metrics are computed after training with the restored weights, on un-augmented test images.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from agegender.cli import add_run_arguments, read_samples, run_main  # noqa: E402
from agegender.errors import DataError  # noqa: E402
from agegender.data.pipeline import portable_notes, portable_report  # noqa: E402
from reproductions import mtl_weighted_loss_extra as extra  # noqa: E402
from reproductions.mtl_weighted_loss_figures import (  # noqa: E402,F401 (re-exported)
    plot_age_distribution, plot_freeze_comparison, plot_loss_vs_epoch, plot_loss_weights)

REPRODUCTION = "mtl_weighted_loss"
PAPER = "sundriyal"
ROOT = Path(__file__).resolve().parents[1]
SMOKE_OUT = ROOT / "build" / "smoke" / REPRODUCTION  # keeps smoke runs out of results/
DATASETS = ("utkface", "celeba")
METHODS = ("baseline", "single", "mtl")
BACKBONE_CHOICES = ("senet50_128", "resnet50", "resnet50_imagenet")
CORAL_TRAIN, CORAL_TEST = 13_147, 3_287  # CORAL's utk_train.csv / utk_test.csv rows (NOTES.md)
RACE_ROWS = ("White", "Black", "Asian", "Indian", "Others")  # Table 4.1 rows = UTKFace race codes 0-4
LISTS_IN_RUN_FOLDER = "coral_like_lists/ in the protocol run folder (generated CORAL-like lists)"
ROW = {"baseline": "Single Task baseline", "single": "Single Task Neural Network",
       "mtl": "Proposed Multi-Task Learning Network"}  # Tables 4.6-4.15


@dataclasses.dataclass(frozen=True)
class SundriyalExperiment:
    """Every setting of a run, with its source; the smoke mode is ``dataclasses.replace`` of this."""

    dataset: str = "utkface"  # --dataset: UTKFace (Tables 4.6-4.10) or CelebA (4.11-4.15)
    backbone: str = "senet50_128"  # Sec. 4.4.2: SE-ResNet-50-128D gave the best results (used in Chapter 5)
    backbone_weights: str | None = None  # user .h5 of converted VGGFace2 weights; None: substitute (docstring)
    imagenet_weights: str | None = "imagenet"  # the substitute's weights: Keras download, a file, or None (random)
    input_size: int | None = None  # None: the backbone's (Sec. 3.1: 200x200 for the VGGFace2 ResNet-50)
    method: str = "all"  # --method: baseline | single | mtl | all (Tables 4.6-4.15 rows)
    loss: str = "weighted"  # Sec. 3.4 "Proposed Weighted Loss"; "average" for Tables 5.1-5.3
    early_freeze: bool = True  # Sec. 3.5; False: early stopping of the converged task (Table 5.4)
    lam: float = 0.1  # Table 3.2 / Sec. 5.4: lambda = 0.1 (sweep 0.001, 0.01, 0.1, 1 in Table 5.5)
    init_stddev: float = 0.5  # Sec. 3.4 "weights are set randomly initially": logits ~ N(0, 0.5^2), our choice
    learning_rate: float = 3e-5  # Table 3.2: 3x10^-5
    weight_decay: float = 1e-5  # Table 3.2: 10^-5, PyTorch Adam's L2 form (AdamL2)
    beta_1: float = 0.9  # Table 3.2
    beta_2: float = 0.999  # Table 3.2
    adam_epsilon: float = 1e-8  # PyTorch Adam default (the thesis's framework); Keras's is 1e-7
    lr_factor: float = 0.1  # Sec. 3.6.2: "divided by 10, whenever the total validation loss stops decreasing"
    lr_patience: int = 2  # not stated: our choice (below the Early Freeze patience)
    patience: int = 5  # Algorithm 1's P: not stated, our choice
    epochs: int = 100  # not stated: upper bound; age converged "around 60 epochs" (Sec. 5.2)
    batch_size: int = 64  # not stated: our choice
    age_min: int = 21  # Sec. 4.2 (CORAL): ages 21-60
    age_max: int = 60  # Sec. 4.2
    age_scale: float = 40.0  # Sec. 3.3.2: "We divided the target and predicted ages by 40"
    val_fraction: float = 0.2  # Sec. 4.2: train split "divided into train and validation split in the ratio 80:20"
    shared_units: tuple[int, ...] = (512, 256)  # Figure 3.2 is missing: our choice (NOTES.md)
    task_units: int = 128  # Sec. 3.2: "the last fully connected layer for age is 128x2"
    dropout: float = 0.5  # Sec. 3.2 names dropout, not its rate: PyTorch's default
    leaky_alpha: float = 0.01  # Sec. 3.2 names Leaky ReLU: PyTorch's default slope
    max_images: int | None = None  # None: every image of the split; smoke runs take a seeded subset
    precision: str = "auto"  # mixed_float16 on a GPU, float32 on CPU (agegender.training.configure_precision)
    seed: int = 0
    smoke: bool = False


def smoke(exp: SundriyalExperiment) -> SundriyalExperiment:
    """The ``--smoke`` experiment: same protocol, 2 epochs, 32x32 inputs, ~240 faces, patience 1."""
    return dataclasses.replace(exp, smoke=True, epochs=2, input_size=32, batch_size=16, max_images=240, patience=1,
                               lr_patience=1)


# ----------------------------------------------------------------------------------------------
# configuration helpers


def thesis_backbone(exp: SundriyalExperiment) -> str:
    """The registry key whose thesis tables this run fills (``resnet50_imagenet`` stands in for ``resnet50``)."""
    return "resnet50" if exp.backbone == "resnet50_imagenet" else exp.backbone


def backbone_label(exp: SundriyalExperiment) -> str:
    from agegender.models.face_resnets import BACKBONES

    return BACKBONES[thesis_backbone(exp)].label


def methods_of(exp: SundriyalExperiment) -> list[str]:
    return list(METHODS) if exp.method == "all" else [exp.method]


def tasks_of(dataset: str):
    from agegender.models.mtl_head import TASKS

    return TASKS[dataset]


def mtl_key(exp: SundriyalExperiment) -> str:
    """``weighted-ef-l0.1`` style name of the MTL configuration."""
    lam = f"-l{exp.lam:g}" if exp.loss == "weighted" else ""
    return f"{exp.loss}-{'ef' if exp.early_freeze else 'es'}{lam}"


def is_thesis_mtl(exp: SundriyalExperiment) -> bool:
    """The thesis's proposed configuration: learned weights, lambda 0.1, Early Freeze."""
    return exp.loss == "weighted" and exp.early_freeze and math.isclose(exp.lam, 0.1)


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
        split = make_split(frame, "coral", seed=exp.seed, csv_dir=csv_dir, val_fraction=exp.val_fraction)
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
        split = make_split(frame, "celeba", seed=exp.seed)
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


def targets_for(dataset: str, tasks, exp: SundriyalExperiment) -> dict:
    from agegender.data.pipeline import Target

    if dataset == "utkface":
        every = {"gender": Target("gender", "sparse"), "race": Target("race", "sparse"),
                 "age": Target("coral_label", "regression", scale=1.0 / exp.age_scale)}  # Sec. 3.3.2: label / 40
    else:
        every = {"gender": Target("gender", "sparse"), "age": Target("age_class", "sparse")}
    return {t: every[t] for t in tasks}


def make_datasets(split, exp: SundriyalExperiment, tasks, input_size: int, skipped: list) -> dict:
    """Train (shuffled), validation and test datasets with exact cardinality (Keras 3 per-task losses)."""
    import tensorflow as tf

    from agegender.data.pipeline import build_dataset

    out = {}
    targets = targets_for(exp.dataset, tasks, exp)
    for name, training in (("train", True), ("val", False), ("test", False)):
        frame = split.part(name)
        report: list = []
        ds = build_dataset(frame, targets, image_size=input_size, batch_size=exp.batch_size, training=training,
                           augment=None, seed=exp.seed, pixel_scale=1.0,  # backbones take 0-255 RGB
                           report=report)
        skipped.extend(r for r in report if r not in skipped)
        n = len(frame) - len(report)
        out[name] = ds.apply(tf.data.experimental.assert_cardinality(math.ceil(n / exp.batch_size)))
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


# ----------------------------------------------------------------------------------------------
# cells


def _row(label: str, exp: SundriyalExperiment, table_backbone: str | None) -> str:
    """``label`` when the run's (thesis) backbone is the table's, else ``label (backbone)``."""
    if table_backbone is None or thesis_backbone(exp) == table_backbone:
        return label
    return f"{label} ({backbone_label(exp)})"


def _metric_cells(table: str, row: str, metrics: dict, dataset: str, note: str) -> list[dict]:
    test = metrics["test"]
    cells = []
    if "gender" in test:
        cells.append((table, row, "Gender Accuracy", 100 * test["gender"]["accuracy"], "percent"))
    if "race" in test:
        cells.append((table, row, "Race Accuracy", 100 * test["race"]["accuracy"], "percent"))
    if "age" in test:
        if dataset == "utkface":
            cells.append((table, row, "Age MAE", test["age"]["mae_years"], "mae-years"))
        else:
            cells.append((table, row, "Age Accuracy", 100 * test["age"]["accuracy"], "percent"))
    return [_cell(*c, note) for c in cells]


def _cell(table, row, column, value, unit, note="") -> dict:
    cell = {"table": table, "row": row, "column": column, "value": float(value), "unit": unit}
    if note:
        cell["note"] = note
    return cell


def model_cells(exp: SundriyalExperiment, result: dict, note: str) -> list[dict]:
    """The paper cells one trained model reproduces (labels as in sundriyal.csv)."""
    from agegender.models.face_resnets import BACKBONES

    method, metrics, dataset = result["method"], result["metrics"], exp.dataset
    table = BACKBONES[thesis_backbone(exp)].tables[dataset]
    movement = (metrics.get("training") or {}).get("loss_weight_movement")
    note = "; ".join(x for x in (note, extra.weight_flag(movement)) if x)  # the flag goes on every cell
    cells = []
    if method != "mtl" or is_thesis_mtl(exp):
        cells += _metric_cells(table, ROW[method], metrics, dataset, note)
    elif method == "mtl":  # an ablation: its own row in the backbone's table
        cells += _metric_cells(table, f"{ROW['mtl']} ({mtl_key(exp)})", metrics, dataset, note)
    if method == "mtl":
        cells += _chapter5_cells(exp, result, note)
        cells += extra.loss_weight_cells(f"{backbone_label(exp)}, {dataset}, {mtl_key(exp)}", movement, note)
        if is_thesis_mtl(exp):
            cells += extra.comparison_cells(exp, metrics, backbone_label(exp), thesis_backbone(exp) == "senet50_128",
                                            note)
            seconds = (metrics.get("training") or {}).get("seconds")
            if seconds:
                cells += extra.convergence_time_cells(exp, seconds, result.get("device", "this machine"), note)
    if dataset == "celeba" and "age" in metrics["test"] and method in ("single", "mtl") and (
            method == "single" or is_thesis_mtl(exp)):
        cells += _section53_cells(exp, result, note)
    return cells


def _chapter5_cells(exp: SundriyalExperiment, result: dict, note: str) -> list[dict]:
    metrics, dataset = result["metrics"], exp.dataset
    cells = []
    lam_ok = math.isclose(exp.lam, 0.1) or exp.loss == "average"
    if dataset == "utkface":
        if is_thesis_mtl(exp):
            label = ("Ours (MTL+SEResnet)" if thesis_backbone(exp) == "senet50_128"
                     else f"Ours (MTL+{backbone_label(exp)})")
            cells.append(_cell("Table 4.16", label, "Age MAE (in years)", metrics["test"]["age"]["mae_years"],
                               "mae-years", note))
        if exp.early_freeze and lam_ok:  # Table 5.3: loss function (SE-ResNet-50 per the caption)
            label = "Average Loss" if exp.loss == "average" else "Proposed weighted Loss"
            cells += _metric_cells("Table 5.3", _row(label, exp, "senet50_128"), metrics, dataset, note)
        if exp.loss == "weighted" and math.isclose(exp.lam, 0.1):  # Table 5.4: Early Freeze or not
            label = "Proposed Early Freeze Method" if exp.early_freeze else "Early stopping of converged task"
            cells += _metric_cells("Table 5.4", _row(label, exp, "senet50_128"), metrics, dataset, note)
        if exp.loss == "weighted" and exp.early_freeze:  # Table 5.5: the lambda sweep
            cells += _metric_cells("Table 5.5", _row(f"{exp.lam:g}", exp, "senet50_128"), metrics, dataset, note)
        cells += _convergence_cells(exp, result, note)
    elif exp.early_freeze and lam_ok:  # CelebA: Table 5.1 (SE-ResNet-50) / 5.2 (ResNet-50)
        table = "Table 5.2" if thesis_backbone(exp) == "resnet50" else "Table 5.1"
        weighted = "Proposed weighted Loss" if table == "Table 5.2" else "Proposed Weighted Loss"
        label = "Average Loss" if exp.loss == "average" else weighted
        table_backbone = "resnet50" if table == "Table 5.2" else "senet50_128"
        cells += _metric_cells(table, _row(label, exp, table_backbone), metrics, exp.dataset, note)
    return cells


def _convergence_cells(exp: SundriyalExperiment, result: dict, note: str) -> list[dict]:
    """Section 5.2: the epochs at which gender / race and age converge (with or without Early Freeze)."""
    converged = result["early_freeze"]["converged"]
    row = _row("with Early Freeze" if exp.early_freeze else "without Early Freeze", exp, "senet50_128")
    if exp.loss != "weighted" or not math.isclose(exp.lam, 0.1):
        row += f" ({mtl_key(exp)})"
    cells = []
    if "gender" in converged and "race" in converged:
        cells.append(_cell("Section 5.2", row, "gender and race converge at",
                           max(converged["gender"]["epoch"], converged["race"]["epoch"]), "epochs",
                           note + "; the later of the two convergence epochs"))
    for task in ("gender", "race", "age"):
        if task in converged:
            column = "age converges at" if task == "age" else f"{task} converges at"
            cells.append(_cell("Section 5.2", row, column, converged[task]["epoch"], "epochs", note))
    return cells


def _section53_cells(exp: SundriyalExperiment, result: dict, note: str) -> list[dict]:
    """Section 5.3 and Figures 5.3 / 5.4: Young / Old accuracy and the age confusion matrix (CelebA)."""
    age = result["metrics"]["test"]["age"]
    method = result["method"]
    row = _row(ROW[method], exp, "resnet50")
    cells = [_cell("Section 5.3", row, "Age Accuracy", 100 * age["accuracy"], "percent", note),
             _cell("Section 5.3", row, "Young accuracy", 100 * age["per_class_accuracy"][0], "percent", note),
             _cell("Section 5.3", row, "Old accuracy", 100 * age["per_class_accuracy"][1], "percent", note)]
    figure = "Figure 5.3" if method == "single" else "Figure 5.4"
    matrix = age["confusion_matrix"]
    suffix = "" if thesis_backbone(exp) == "resnet50" else f" ({backbone_label(exp)})"
    for i, true in enumerate(("Young", "Old")):
        for j, pred in enumerate(("Young", "Old")):
            cells.append(_cell(figure, f"true {true}{suffix}", f"predicted {pred}", matrix[i][j], "count",
                               note + "; test-set counts"))
    return cells


def dataset_cells(data: dict, exp: SundriyalExperiment, note: str) -> list[dict]:
    """Tables 4.1-4.4 and Section 4.2 from the readers and the split."""
    frame, full = data["frame"], data["full_counts"]
    cells = []
    if exp.dataset == "utkface":
        n = len(frame)
        read_note = "; ".join(x for x in (note, f"all {n:,} faces read from the data folder") if x)
        for code, race in enumerate(RACE_ROWS):
            part = frame[frame["race"] == code]
            cells += [_cell("Table 4.1", race, "Total Persons", len(part), "count", read_note),
                      _cell("Table 4.1", race, "Male Count", int((part["gender"] == 0).sum()), "count", read_note),
                      _cell("Table 4.1", race, "Female Count", int((part["gender"] == 1).sum()), "count", read_note)]
        split_note = "; ".join(x for x in (note, data["info"]["coral_note"]) if x)
        for row, key in (("Train", "train"), ("Validation", "val"), ("Test", "test")):
            cells.append(_cell("Table 4.3", row, "Number of examples", full[key], "count", split_note))
        rows = data["split"].frame
        cells += [_cell("Section 4.2", "UTKFace (CORAL)", "age min", rows["age"].min(), "years", split_note),
                  _cell("Section 4.2", "UTKFace (CORAL)", "age max", rows["age"].max(), "years", split_note),
                  _cell("Section 4.2", "UTKFace (CORAL)", "train share of train list",
                        100 * full["train"] / max(full["train"] + full["val"], 1), "percent", split_note)]
    else:
        train = frame[frame["partition"] == "train"]
        part_note = "; ".join(x for x in (note, "official training partition") if x)
        cells += [_cell("Table 4.2", "Gender", "Male Count", int((train["gender"] == 0).sum()), "count", part_note),
                  _cell("Table 4.2", "Gender", "Female Count", int((train["gender"] == 1).sum()), "count", part_note),
                  _cell("Table 4.2", "Age", "Young Count", int((train["Young"] == 1).sum()), "count", part_note),
                  _cell("Table 4.2", "Age", "Old Count", int((train["Young"] == 0).sum()), "count", part_note)]
        for row, key in (("Train", "train"), ("Validation", "val"), ("Test", "test")):
            cells.append(_cell("Table 4.4", row, "Number of examples", full[key], "count", note))
    return cells


def settings_cells(exp: SundriyalExperiment, note: str) -> list[dict]:
    """Table 3.2 and Sections 3.1 / 3.3.2 / 3.6.2, read back from the configuration and the registry."""
    from agegender.models.face_resnets import BACKBONES

    return [_cell("Table 3.2", "Learning rate", "Value", exp.learning_rate, "scalar", note),
            _cell("Table 3.2", "Weight Decay", "Value", exp.weight_decay, "scalar", note),
            _cell("Table 3.2", "β1", "Value", exp.beta_1, "scalar", note),
            _cell("Table 3.2", "β2", "Value", exp.beta_2, "scalar", note),
            _cell("Table 3.2", "λ", "Value", exp.lam, "scalar", note),
            _cell("Section 3.1", "ResNet-50 (VGGFace2)", "input size", BACKBONES["resnet50"].input_size, "pixels",
                  note),
            _cell("Section 3.3.2", "UTKFace age", "normalisation divisor", exp.age_scale, "scalar", note),
            _cell("Section 3.6.2", "learning rate", "plateau division factor", 1 / exp.lr_factor, "scalar", note)]


def model_build_cells(keys=("resnet50", "senet50_128")) -> list[dict]:
    """Table 4.5 "Feature Dimension" of the backbones built here (no weights, no data)."""
    import keras

    from agegender.models.face_resnets import BACKBONES

    cells = []
    for key in keys:
        keras.backend.clear_session()
        spec = BACKBONES[key]
        model = spec.build((64, 64, 3))
        cells.append(_cell("Table 4.5", spec.label, "Feature Dimension", int(model.output.shape[-1]), "count",
                           "read from the Keras build; independent of data"))
    keras.backend.clear_session()
    return cells


# ----------------------------------------------------------------------------------------------
# figures


def _other_variant(runs_dir: Path, exp: SundriyalExperiment, experiment: str) -> dict | None:
    """The newest complete record of ``experiment`` (the MTL run with the other Early Freeze setting)."""
    folder = Path(runs_dir) / REPRODUCTION / experiment
    records = []
    for path in sorted(folder.glob("*/record.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if record.get("status") == "complete" and record.get("seed") == exp.seed:
            records.append(record)
    return records[-1] if records else None


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


def experiment_name(exp: SundriyalExperiment, method: str, task: str | None = None) -> str:
    base = f"{exp.dataset}-{exp.backbone}{'-smoke' if exp.smoke else ''}"
    return f"{base}-{method}-{task}" if task else f"{base}-{method}-{mtl_key(exp)}"


def preprocessing(exp: SundriyalExperiment, tasks, input_size: int, data_kind: str):
    """How ``python -m agegender predict`` feeds a face to the model: 0-255 pixels at ``input_size``."""
    from agegender.preprocess import Head, Preprocessing, face_preset

    if exp.dataset == "utkface":  # targets of make_datasets: (age - 21) / 40, sparse gender and race
        heads = {"age": Head.age_regression(scale=1.0 / exp.age_scale, offset=exp.age_min),
                 "gender": Head.gender_softmax(), "race": Head.race_softmax()}
    else:  # CelebA: 0 Young / 1 Old; the ages standing for the two classes are a rough guess
        heads = {"age": Head.age_groups(("young", "old"), (28, 55)), "gender": Head.gender_softmax()}
    return Preprocessing(input_size=input_size, pixel_scale=1.0, face=face_preset(data_kind, exp.dataset),
                         heads={t: heads[t] for t in tasks})


def run(data_dir, exp: SundriyalExperiment, *, coral_csv_dir=None, out=None, data_kind_override: str | None = None,
        verbose: int | str = 2, log=print, fresh: bool = False, deterministic: bool = False, strategy: str = "default",
        tfds_dir=None) -> dict:
    """Run the reproduction; return paths, per-model metrics and the cells written.

    Rerunning the same command (same data, settings and seed) picks up its earlier run
    (:mod:`agegender.records`): models with a complete record are read back (metrics, cells,
    history, Early Freeze events; nothing is trained or loaded), an interrupted one continues
    after its last completed epoch, and the figures and tables are drawn again. ``fresh`` starts
    a new run instead. ``deterministic`` turns on TensorFlow's op determinism
    (:func:`agegender.training.seed_everything`). ``strategy`` (:mod:`agegender.distribute`): the
    models are built under its scope. ``tfds_dir``: read the prepared TFDS data there instead of ``data_dir``.
    """
    import datetime as _dt
    import tempfile

    from agegender import atomic
    from agegender.data.provenance import data_kind
    from agegender.models.face_resnets import choose_backbone, get_backbone

    if exp.dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {exp.dataset!r}")
    if exp.method not in (*METHODS, "all"):
        raise ValueError(f"method must be one of {METHODS} or all, got {exp.method!r}")
    get_backbone(exp.backbone)  # unknown names fail here, loudly
    from agegender.distribute import start_early

    start_early(strategy)  # a multi-worker strategy must exist before TensorFlow runs anything
    paths = _out_paths(out)
    t0 = time.time()
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    protocol_name = f"{exp.dataset}-protocol{'-smoke' if exp.smoke else ''}"
    # generated CORAL-like lists go to a scratch folder first, then into the protocol run folder (whose id is
    # known once the recorder has looked for an earlier run of this command); the lists are a function of the
    # faces and the seed, so a rerun writes the same files
    with tempfile.TemporaryDirectory(prefix="sundriyal-lists-") as scratch:
        data = load_data(data_dir, exp, coral_csv_dir=coral_csv_dir, work_dir=scratch, log=log, tfds_dir=tfds_dir)
        generated_lists = None  # {file name: bytes} of generated lists
        if str(data["info"].get("coral_csv_dir", "")).startswith(scratch):
            generated_lists = {p.name: p.read_bytes() for p in Path(data["info"]["coral_csv_dir"]).glob("*.csv")}
            data["info"]["coral_csv_dir"] = LISTS_IN_RUN_FOLDER  # the same for every rerun (the fingerprint)
    choice = choose_backbone(exp.backbone, exp.backbone_weights,
                             substitute_weights=exp.imagenet_weights, smoke=exp.smoke)
    check_backbone(choice)

    import keras

    from agegender.distribute import make_strategy, strategy_config
    from agegender.plots import confusion_matrix, learning_curves
    from agegender.records import RunRecorder
    from agegender.training import configure_precision, seed_everything
    from results.tables import generate

    distribution = make_strategy(strategy)
    samples, split = data["samples"], data["split"]
    data_root = data_dir if tfds_dir is None else samples.root
    kind = data_kind_override or data_kind(data_root, exp.dataset, len(samples.frame))
    input_size = exp.input_size or choice.spec.input_size
    notes = deviations(exp, choice)
    note = "; ".join(notes)
    if exp.dataset == "utkface" and "CORAL-like" in data["info"]["coral_note"]:
        note = "; ".join([note, data["info"]["coral_note"]])
    log(f"[sundriyal] {exp.dataset}: {len(samples.frame):,} faces read from {tfds_dir or data_dir} ({kind}); split "
        f"{data['full_counts']}" + (f", using {data['counts']}" if data["counts"] != data["full_counts"] else ""))
    log(f"[sundriyal] {choice.note}; input {input_size}x{input_size}")

    seed_everything(exp.seed, deterministic)
    precision = configure_precision(exp.precision)
    config = {**dataclasses.asdict(exp), "precision_policy": precision, "input_size_used": input_size,
              "backbone": {"requested": choice.requested, "used": choice.used, "substituted": choice.substituted,
                           "weights": choice.weights, "note": choice.note},
              "coral_csv_dir": data["info"].get("coral_csv_dir"), "deterministic": bool(deterministic),
              "strategy": strategy_config(strategy, distribution, exp.batch_size, flag=None)}
    from agegender.data.provenance import describe_data

    # named by a path relative to the data root and a fingerprint, never an absolute path (records are committed)
    data_info = {"kind": kind, **describe_data(exp.dataset, tfds_dir if tfds_dir is not None else data_root,
                                               **({"prepared": True} if tfds_dir is not None else {})),
                 "images_read": len(samples.frame), "files_skipped_by_reader": len(samples.skipped),
                 "split_counts": data["full_counts"], "counts_used": data["counts"],
                 **extra.portable_config(data["info"])}
    config = extra.portable_config(config)
    run_deviations = extra.record_deviations(exp, choice, SundriyalExperiment)

    # the protocol record's run id is shared by the models' records and the figures; a rerun of the same
    # command finds it again (--fresh: a new one)
    protocol = RunRecorder(REPRODUCTION, protocol_name, config=config, seed=exp.seed, data=data_info, paper=PAPER,
                           out=paths["runs"], resume=not fresh, new_run_id=f"{stamp}-s{exp.seed}",
                           deviations=run_deviations)
    run_id = protocol.run_id
    if protocol.resumed:
        log(f"[sundriyal] picking up run {run_id} of the same command ({protocol.record['status']}); "
            "--fresh starts over")
    for file_name, content in (generated_lists or {}).items():
        with atomic.atomic_path(protocol.run_dir / "coral_like_lists" / file_name) as tmp:
            tmp.write_bytes(content)
    figures = paths["figures"] / REPRODUCTION / run_id
    if not protocol.complete:
        split.save_manifest(protocol.run_dir / "split.csv")
    p_cells = dataset_cells(data, exp, "SMOKE RUN (--smoke), not a reproduction" if exp.smoke else "")
    p_cells += extra.section41_cells(exp, samples, data_dir if tfds_dir is None else None,
                                     "SMOKE RUN (--smoke), not a reproduction" if exp.smoke else "")
    p_cells += settings_cells(exp, "read from the configuration")
    figure_paths: dict[str, Path] = {}
    if exp.dataset == "utkface":
        figure_paths["fig4_1_age_distribution"] = plot_age_distribution(samples.frame,
                                                                        figures / "fig4_1_age_distribution.png")

    all_tasks = tasks_of(exp.dataset)
    jobs = []
    for method in methods_of(exp):
        if method == "mtl":
            jobs.append((method, dict(all_tasks)))
        else:
            jobs += [(method, {t: all_tasks[t]}) for t in all_tasks]
    results, skipped, all_cells = {}, [], list(p_cells)
    for method, tasks in jobs:
        task = next(iter(tasks)) if method != "mtl" else None
        name = experiment_name(exp, method, task)
        recorder = RunRecorder(REPRODUCTION, name, config={**config, "method": method, "tasks": list(tasks)},
                               seed=exp.seed, data=data_info, paper=PAPER, out=paths["runs"], run_id=run_id,
                               resume=not fresh, preprocessing=preprocessing(exp, tuple(tasks), input_size, kind),
                               deviations=run_deviations)
        if recorder.complete:  # finished by an earlier run of this command: read back, not trained again
            log(f"[sundriyal] {name}: complete record found ({recorder.record_path}); read back, not trained again "
                "(--fresh trains again)")
            result = read_back(recorder.record, method, tasks)
        else:
            split.save_manifest(recorder.run_dir / "split.csv")
            log(f"[sundriyal] training {method} ({', '.join(tasks)}): up to {exp.epochs} epochs, "
                f"{'Early Freeze' if (exp.early_freeze or method != 'mtl') else 'early stopping of converged tasks'}, "
                f"patience {exp.patience}" + (f", {exp.loss} loss" + (f" (lambda {exp.lam:g})" if exp.loss == "weighted"
                                                                      else "") if method == "mtl" else ""))
            result = train_one(exp, choice, method, tasks, split, recorder=recorder, input_size=input_size,
                               skipped=skipped, verbose=verbose, log=log, deterministic=deterministic,
                               strategy=distribution)
            result["device"] = _device_name(recorder.record.get("device"))
        result["recorder"], result["name"] = recorder, name
        results[name] = result
        test = result["metrics"]["test"]
        parts = [f"{t} " + ("MAE %.2f y" % test[t]["mae_years"] if "mae_years" in test[t]
                            else "acc %.1f %%" % (100 * test[t]["accuracy"])) for t in tasks]
        log(f"[sundriyal] {name}: {result['seconds']:.1f} s, {len(result['history'])} epochs; test " + ", ".join(parts))

        # figures of this model (drawn again for a record read back)
        own: dict[str, Path] = {}
        label = f"{ROW[method]}, {', '.join(tasks)}"
        own[f"learning_curves_{name}"] = learning_curves(result["history"], figures / f"learning_curves_{name}.png",
                                                         label)
        if method == "mtl":
            own[f"loss_weights_{name}"] = plot_loss_weights(
                result["history"], tuple(tasks), figures / f"loss_weights_{name}.png",
                f"Loss weights per epoch ({exp.loss}{', lambda %g' % exp.lam if exp.loss == 'weighted' else ''})")
            events = result["early_freeze"]["events"]
            fig = "fig5_1_loss_vs_epoch_early_freeze" if exp.early_freeze else "fig5_2_loss_vs_epoch_early_stopping"
            own[fig] = plot_loss_vs_epoch(
                result["history"], tuple(tasks), events, figures / f"{fig}.png",
                f"Loss vs epoch, {'Early Freeze' if exp.early_freeze else 'early stopping of converged tasks'} "
                f"(cf. Fig. {'5.1' if exp.early_freeze else '5.2'})")
            other_exp = dataclasses.replace(exp, early_freeze=not exp.early_freeze)
            other = _other_variant(paths["runs"], exp, experiment_name(other_exp, "mtl"))
            if other is not None:
                ours = (result["history"], events)
                theirs = (other.get("history", []), other.get("early_freeze", {}).get("events", []))
                pair = {"Early Freeze (Fig. 5.1)": ours if exp.early_freeze else theirs,
                        "early stopping of converged tasks (Fig. 5.2)": theirs if exp.early_freeze else ours}
                own["fig5_1_5_2_early_freeze_vs_early_stopping"] = plot_freeze_comparison(
                    pair, tuple(tasks), figures / "fig5_1_5_2_early_freeze_vs_early_stopping.png")
        if exp.dataset == "celeba" and "age" in tasks and method in ("single", "mtl"):
            number = "5_3" if method == "single" else "5_4"
            own[f"fig{number}_confusion_{method}"] = confusion_matrix(
                test["age"]["confusion_matrix"], ["Young", "Old"], figures / f"fig{number}_confusion_{method}.png",
                f"Age, test set, {ROW[method]} (cf. Fig. {number.replace('_', '.')})")
        figure_paths.update(own)
        if not recorder.complete:  # each model's record is complete as soon as it is: a kill later loses nothing
            result["cells"] = model_cells(exp, result, note)
            listed = {k: extra.relative(v, paths["runs"].parent) for k, v in sorted(figure_paths.items())}
            recorder.finish(result["metrics"], [dict(c) for c in result["cells"]], figures=listed,
                            figures_dir=extra.relative(figures, paths["runs"].parent),
                            pipeline_skipped=portable_report(skipped, split.frame), backbone=result["backbone"],
                            early_freeze=result["early_freeze"])
        all_cells += result["cells"]
        result.pop("model", None)  # model.keras holds the checkpoint; free the memory before the next model
        keras.backend.clear_session()

    figure_list = {k: extra.relative(v, paths["runs"].parent) for k, v in sorted(figure_paths.items())}
    if not protocol.complete:
        protocol.finish({"split": {"counts": data["full_counts"], "counts_used": data["counts"]}},
                        [dict(c) for c in p_cells], figures=figure_list,
                        figures_dir=extra.relative(figures, paths["runs"].parent),
                        backbone=config["backbone"], pipeline_skipped=portable_report(skipped, split.frame),
                        **({"coral_like_lists": "coral_like_lists"}
                           if generated_lists is not None else {}))
    build_record = None
    if not exp.smoke:
        build = RunRecorder(REPRODUCTION, "model_build", config={"backbones": ["resnet50", "senet50_128"],
                                                                 "deterministic": bool(deterministic)},
                            seed=0, data={"kind": "none", "dataset": "none (model build)"}, paper=PAPER,
                            out=paths["runs"], run_id="keras", resume=not fresh)
        if build.complete:
            b_cells, build_record = [dict(c) for c in build.record["cells"]], build.record_path
        else:
            b_cells = model_build_cells()
            build_record = build.finish({}, [dict(c) for c in b_cells])
        all_cells += b_cells
    summary = generate(paths["runs"], paths["tables"], paths["readme"])
    records = {"protocol": protocol.record_path, **{n: r["recorder"].record_path for n, r in results.items()}}
    if build_record is not None:
        records["model_build"] = build_record
    return {"run_id": run_id, "kind": kind, "split": split, "counts": data["full_counts"],
            "counts_used": data["counts"],
            "backbone": choice, "records": records, "metrics": {n: r["metrics"] for n, r in results.items()},
            "results": results, "cells": all_cells, "figures": figure_paths, "figures_dir": figures,
            "tables_dir": paths["tables"], "readme": paths["readme"], "tables": summary["tables"],
            "read_back": sorted(n for n, r in results.items() if r.get("read_back")),
            "seconds": time.time() - t0}


def _device_name(device) -> str:
    """A short name of the device a record says it ran on (for the Section 3.6.2 note)."""
    if isinstance(device, dict):
        gpus = device.get("gpus") or []
        return ", ".join(map(str, gpus)) if gpus else f"{device.get('cpu_count', '?')} CPU cores, no GPU"
    return "this machine"


def format_cells(cells: list[dict]) -> str:
    """This run's reproduced cells next to the published values, one line each."""
    from results.tables import format_cells as side_by_side

    return side_by_side(cells, PAPER)


# ----------------------------------------------------------------------------------------------
# command line


def _parser() -> argparse.ArgumentParser:
    default = SundriyalExperiment()
    parser = argparse.ArgumentParser(
        prog="python -m reproductions.mtl_weighted_loss",
        description=__doc__.split("\n\n")[0] + " Trains the single-task and multi-task networks, writes run "
                    "records, figures and the regenerated tables next to the published values.",
        epilog="Protocol, decisions, runtime and expected figures: python -m pydoc reproductions.mtl_weighted_loss")
    parser.add_argument("--dataset", required=True, choices=DATASETS,
                        help="utkface (age regression, gender, race; CORAL split; Tables 4.6-4.10, 4.16, 5.3-5.5) or "
                             "celeba (Young/Old, gender; official partition; Tables 4.11-4.15, 5.1, 5.2)")
    parser.add_argument("--data-dir", default=None, metavar="DIR",
                        help="UTKFace folder (age_gender_race_timestamp.jpg.chip.jpg, searched recursively) or CelebA "
                             "folder (img_align_celeba/, list_attr_celeba.txt, list_eval_partition.txt); required "
                             "unless --tfds-dir is given")
    parser.add_argument("--coral-csv-dir", default=None, metavar="DIR",
                        help="UTKFace only: folder holding CORAL's utk_train.csv and utk_test.csv (github.com/"
                             "Raschka-research-group/coral-cnn, datasets/); default: --data-dir if it holds them, "
                             "else a seeded CORAL-like split of the faces aged 21-60, labelled in every table note")
    parser.add_argument("--backbone", default=default.backbone, metavar="NAME",
                        help=f"the thesis backbone whose tables this run fills: senet50_128 (SE-ResNet-50-128D, "
                             f"Tables 4.10/4.15 and Chapter 5; default), resnet50 (VGGFace2 ResNet-50, Tables "
                             f"4.9/4.14, 5.2) or resnet50_imagenet (ImageNet ResNet-50 in place of resnet50); "
                             f"lightcnn, sphereface and facenet are not built")
    parser.add_argument("--backbone-weights", default=None, metavar="FILE",
                        help="HDF5 file of converted VGGFace2 weights for --backbone, loaded by layer name "
                             "(layout: python -m pydoc agegender.models.face_resnets); without it the run trains "
                             "an ImageNet ResNet-50 instead, named as a substitution in every table note; 'none' "
                             "trains the requested architecture from random weights")
    parser.add_argument("--imagenet-weights", default="imagenet", metavar="FILE",
                        help="weights of the ImageNet ResNet-50 substitute: 'imagenet' (Keras downloads "
                             "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5; needs network), that file's "
                             "path (offline), or 'none' (random weights)")
    parser.add_argument("--method", default="all", choices=(*METHODS, "all"),
                        help="baseline (backbone features -> output layer, one model per task), single (the MTL "
                             "layers of one task, one model per task), mtl (the proposed network) or all (default)")
    parser.add_argument("--loss", default=default.loss, choices=("weighted", "average"),
                        help="MTL loss: weighted (learned weights w on the simplex + lambda ||w||^2, Eq. 3.5; "
                             "default) or average (plain mean of the task losses, Tables 5.1-5.3)")
    parser.add_argument("--early-freeze", default=default.early_freeze, action=argparse.BooleanOptionalAction,
                        help="MTL training: Early Freeze (Algorithm 1; default) or, with --no-early-freeze, early "
                             "stopping of each converged task while the shared layers keep training (Table 5.4)")
    parser.add_argument("--lambda", dest="lam", type=float, default=default.lam, metavar="L",
                        help=f"lambda of Eq. 3.5, the weight of ||w||^2 (default {default.lam:g}; Table 5.5 sweeps "
                             f"0.001, 0.01, 0.1, 1)")
    parser.add_argument("--smoke", action="store_true",
                        help="check the whole path fast: a two-convolution stand-in backbone (unless "
                             "--backbone-weights is given), 32x32 inputs, ~240 faces, 2 epochs, patience 1; writes "
                             "under build/smoke/mtl_weighted_loss unless --out is given")
    parser.add_argument("--epochs", type=int, default=None, metavar="N",
                        help=f"maximum epochs per model (default {default.epochs}; Early Freeze / early stopping "
                             f"with patience {default.patience} ends sooner; --smoke: 2)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="output root: records in DIR/runs, tables in DIR/tables, index DIR/README.md, figures "
                             "in DIR/figures (default: results/...; with --smoke build/smoke/mtl_weighted_loss)")
    parser.add_argument("--seed", type=int, default=default.seed, metavar="S",
                        help=f"seed of the split, the initial weights (loss weights included) and the shuffling "
                             f"(default {default.seed})")
    parser.add_argument("--data-kind", choices=("real", "sample", "generated"), default=None,
                        help="label the data in records and tables; default: detected (generated faces carry a "
                             "marker file; fewer than 90%% of the dataset's files count as a sample)")
    add_run_arguments(parser,
                      fresh_help="start a new run; without it, rerunning the same command resumes its earlier run: "
                                 "models already complete are read back from their records (not trained again), an "
                                 "interrupted one continues after its last completed epoch with its Early Freeze "
                                 "state (frozen layers, counters, best weights) and learning-rate schedule; the "
                                 "tables and figures are drawn again either way")
    return parser


def experiment_from_args(args) -> SundriyalExperiment:
    """The experiment a parsed command line asks for (``make reproduce-mtl`` is checked through this)."""
    from agegender.models.face_resnets import get_backbone

    weights = args.backbone_weights
    if weights and weights != "none" and get_backbone(args.backbone).kind == "imagenet":
        args.imagenet_weights, weights = weights, None
    exp = SundriyalExperiment(dataset=args.dataset, backbone=args.backbone, backbone_weights=weights,
                              imagenet_weights=None if args.imagenet_weights == "none" else args.imagenet_weights,
                              method=args.method, loss=args.loss, early_freeze=args.early_freeze, lam=args.lam,
                              seed=args.seed)
    if args.smoke:
        exp = smoke(exp)
    if args.epochs is not None:
        exp = dataclasses.replace(exp, epochs=args.epochs)
    return exp


def main(argv=None) -> int:
    """The command line; errors a user can fix are one ``error:`` line (:func:`agegender.cli.run_main`)."""
    return run_main(_main, argv)


def _main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.data_dir is None and args.tfds_dir is None:
        parser.error("--data-dir is required (or --tfds-dir)")
    from agegender.models.face_resnets import get_backbone

    try:
        spec = get_backbone(args.backbone)
    except ValueError as err:
        parser.error(f"--backbone: {err}")
    if spec.kind == "smoke":
        parser.error("--backbone: smoke_cnn is the --smoke stand-in; request a thesis backbone and pass --smoke")
    if args.epochs is not None and args.epochs < 1:
        parser.error("--epochs must be at least 1")
    if args.lam < 0:
        parser.error("--lambda must be >= 0")
    if args.coral_csv_dir and args.dataset != "utkface":
        parser.error("--coral-csv-dir applies to --dataset utkface only")
    exp = experiment_from_args(args)
    out = args.out if args.out is not None or not args.smoke else SMOKE_OUT
    result = run(args.data_dir, exp, coral_csv_dir=args.coral_csv_dir, out=out, data_kind_override=args.data_kind,
                 fresh=args.fresh, deterministic=args.deterministic, strategy=args.strategy, tfds_dir=args.tfds_dir)
    print()
    print(format_cells(result["cells"]))
    print()
    print(f"[sundriyal] tables : {result['tables_dir']} (sundriyal__*.md), index {result['readme']}")
    print(f"[sundriyal] figures: {result['figures_dir']}")
    for key, path in result["records"].items():
        print(f"[sundriyal] record : {path}")
    print(f"[sundriyal] done in {result['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
