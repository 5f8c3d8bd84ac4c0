"""Gu & Yang's configuration: the study's settings (each with its source), the sources, task sets and age groups,
and the plan of models."""

from __future__ import annotations

import dataclasses
from pathlib import Path

REPRODUCTION = "efficientnet_age_groups"
PAPER = "gu_yang"
SMOKE_OUT = Path(__file__).resolve().parents[2] / "build" / "smoke" / REPRODUCTION  # keeps 1-epoch runs out of results/
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
    input_size: int = 224  # not stated: ImageNet's usual size (README.md)
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
    keep_duplicates_together: bool = False  # not in the paper: byte-identical files in one part of each sample's split
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
