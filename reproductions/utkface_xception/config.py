"""Dey & Aggarwal's configuration: the paper's settings for one backbone, each with its source."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

REPRODUCTION = "utkface_xception"
PAPER = "dey_aggarwal"
BACKBONE_ORDER = ("vgg19", "resnet50", "inception_v3", "xception", "mobilenet", "transformer")  # Tables 1-3 order
SPLIT_TABLES = {"train": "Table 1", "val": "Table 2", "test": "Table 3"}  # Sec. 4.3
RACE_LABELS = ("White", "Black", "Asian", "Indian", "Others")  # Sec. 3.1: race 0-4
GENDER_LABELS = ("Male", "Female")  # Sec. 3.1: gender 0 male / 1 female
TASK_LABELS = {"ethnicity": RACE_LABELS, "gender": GENDER_LABELS}
SMOKE_OUT = Path(__file__).resolve().parents[2] / "build" / "smoke" / REPRODUCTION  # keeps smoke runs out of results/
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
    preprocess: str = "paper"  # Sec. 3.2: "dividing each pixel value by 255"; "backbone": preprocess_input (README)
    weights: str | None = "imagenet"  # Sec. 3.4.1-3.4.5: "initialized with pretrained weights of 'ImageNet'"
    head_units: int = 128  # Sec. 3.5: "two dense layers with 128 hidden units each"
    max_age: float = 65.0  # Sec. 3.2: age / "maximum age value in the dataset", 65 after Sec. 4.1's filter (README)
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
