"""Jørgensen's configuration: the four models of the paper with every setting that drives training (sources in
comments)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

REPRODUCTION = "adience_levi"
PAPER = "jorgensen"
RESULTS = Path(__file__).resolve().parents[2] / "results"
SMOKE_OUT = Path("build") / "adience_levi_smoke"
XCEPTION_NOTOP = "xception_weights_tf_dim_ordering_tf_kernels_notop.h5"
XCEPTION_URL = f"https://storage.googleapis.com/tensorflow/keras-applications/xception/{XCEPTION_NOTOP}"


@dataclasses.dataclass(frozen=True)
class Experiment:
    """One model of the paper with every setting that drives its training (sources in comments)."""

    name: str                            # gender | age | multitask | transfer
    row: str                             # Table 3 row label, as printed
    figure: int                          # the paper's learning-curve figure (Sec. 4)
    tasks: tuple[str, ...]               # model outputs; also the row filter of the split
    architecture: str = "levi_reduced"   # Table 1 (levi_reduced) or Sec. 3.3 (xception)
    weights: str | None = None           # xception only: "imagenet" (Sec. 3.3), None, or a file
    trainable_tail: int = 10             # Sec. 3.3: the last 10 Xception layers stay trainable
    image_size: int = 227                # Table 1: random 227x227 crop
    load_size: int = 256                 # Table 1: 256x256 input image
    flip: bool = False                   # Sec. 3.4: "only random cropping"
    dropout: float = 0.5                 # Table 1: both dropout layers, rate 0.5
    batch_size: int = 128                # Sec. 3.4
    epochs: int = 100                    # Sec. 3.4: "trained for 100 epochs" (at most; early stopping)
    patience: int = 10                   # Sec. 3.4: early stopping, patience 10
    monitor: str = "val_loss"            # not stated: Keras EarlyStopping's default
    learning_rate: float = 1e-4          # Sec. 3.4 alpha = 0.0001 (README: not Keras's 1e-3)
    beta_1: float = 0.9                  # Sec. 3.4
    beta_2: float = 0.999                # Sec. 3.4
    epsilon: float = 1e-7                # Sec. 3.4: 10^-7
    gamma: float = 0.5                   # Eq. 1 weight of L_gender; no value in the paper (README: 0.5)
    validation: str = "users"            # not in the paper: see README.md
    val_fraction: float = 0.1            # share of training images held out (validation="users")
    oversample: bool = True              # Levi & Hassner's 10-crop test (extra table only)
    row_filter: str = "joint"            # Sec. 2.1: one cleaned set (m/f and a canonical age group) for all models;
                                         # "task": the rows valid for the model's own tasks (its own Table 3 rows)
    max_rows_per_fold: int | None = None  # None = every row (the paper); smoke runs sample a few
    seed: int = 0
    smoke: bool = False
    deterministic: bool = False          # --deterministic: TensorFlow op determinism (same seed, same numbers)
    precision: str = "auto"              # Keras dtype policy (mixed_float16 on a GPU); the paper's is float32
    keep_duplicates_together: bool = False  # not in the paper: byte-identical files in one part of each fold's split


EXPERIMENTS = {
    "gender": Experiment("gender", "Gender Classification", 4, ("gender",)),
    "age": Experiment("age", "Age Classification", 5, ("age",)),
    "multitask": Experiment("multitask", "Multitask Classification", 6, ("gender", "age")),
    "transfer": Experiment("transfer", "Transfer Classification", 7, ("gender", "age"),
                           architecture="xception", weights="imagenet"),
}
MODELS = tuple(EXPERIMENTS)


def smoke(exp: Experiment) -> Experiment:
    """The same experiment at smoke scale: 2 epochs of small images on at most 200 rows per fold."""
    small = 71 if exp.architecture == "xception" else 64  # Xception accepts no less than 71x71
    return dataclasses.replace(exp, smoke=True, epochs=2, image_size=small, load_size=small + 8, batch_size=32,
                               max_rows_per_fold=200)
