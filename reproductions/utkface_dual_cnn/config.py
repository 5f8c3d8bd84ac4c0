"""Speziali's configuration: the paper's hyper-parameters (each with its source) and the three networks."""

from __future__ import annotations

import dataclasses
from pathlib import Path

REPRODUCTION = "utkface_dual_cnn"
PAPER = "speziali"
GENDER_LABELS = ("Male", "Female")  # UTKFace gender 0 male / 1 female
SMOKE_OUT = Path(__file__).resolve().parents[2] / "build" / "smoke" / REPRODUCTION  # keeps 1-epoch runs out of results/


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
    bn_momentum: float = 0.9  # PyTorch BatchNorm2d momentum=0.1 (Keras convention 1 - 0.1); README.md
    bn_epsilon: float = 1e-5  # PyTorch BatchNorm2d default
    lambda_age: float = 0.01  # Sec. IV-B: "multiplying it by a factor lambda_age = 0.01"
    scale_single_age_loss: bool = True  # lambda_age on the single-task age loss too: README.md
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
