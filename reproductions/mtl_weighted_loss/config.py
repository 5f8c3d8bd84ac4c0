"""Sundriyal's configuration: every setting of a run with its source, and the helpers that read it."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

REPRODUCTION = "mtl_weighted_loss"
PAPER = "sundriyal"
ROOT = Path(__file__).resolve().parents[2]
SMOKE_OUT = ROOT / "build" / "smoke" / REPRODUCTION  # keeps smoke runs out of results/
DATASETS = ("utkface", "celeba")
METHODS = ("baseline", "single", "mtl")
BACKBONE_CHOICES = ("senet50_128", "resnet50", "resnet50_imagenet")
CORAL_TRAIN, CORAL_TEST = 13_147, 3_287  # CORAL's utk_train.csv / utk_test.csv rows (reproductions/README.md)
RACE_ROWS = ("White", "Black", "Asian", "Indian", "Others")  # Table 4.1 rows = UTKFace race codes 0-4
LISTS_IN_RUN_FOLDER = "coral_like_lists/ in the protocol run folder (generated CORAL-like lists)"
ROW = {"baseline": "Single Task baseline", "single": "Single Task Neural Network",
       "mtl": "Proposed Multi-Task Learning Network"}  # Tables 4.6-4.15


@dataclasses.dataclass(frozen=True)
class SundriyalExperiment:
    """Every setting of a run, with its source; the smoke mode is ``dataclasses.replace`` of this."""

    dataset: str = "utkface"  # --dataset: UTKFace (Tables 4.6-4.10) or CelebA (4.11-4.15)
    backbone: str = "senet50_128"  # Sec. 4.4.2: SE-ResNet-50-128D gave the best results (used in Chapter 5)
    backbone_weights: str | None = None  # user .h5 of converted VGGFace2 weights; None: substitute (README.md)
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
    shared_units: tuple[int, ...] = (512, 256)  # Figure 3.2 is missing: our choice (README)
    task_units: int = 128  # Sec. 3.2: "the last fully connected layer for age is 128x2"
    dropout: float = 0.5  # Sec. 3.2 names dropout, not its rate: PyTorch's default
    leaky_alpha: float = 0.01  # Sec. 3.2 names Leaky ReLU: PyTorch's default slope
    max_images: int | None = None  # None: every image of the split; smoke runs take a seeded subset
    precision: str = "auto"  # mixed_float16 on a GPU, float32 on CPU (agegender.training.configure_precision)
    keep_duplicates_together: bool = False  # not in the thesis: byte-identical files in one part of the split
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
