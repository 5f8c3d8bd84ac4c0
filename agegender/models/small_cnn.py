"""A small multi-task CNN: the stand-in model of ``make demo`` and of the pipeline tests.

Not from any paper. Four conv blocks (16-32-64-96 filters, BatchNorm, ReLU, 2x2 pooling),
global average pooling, then one Dense(64) branch per task. Heads: ``age`` linear
regression, ``gender`` 1 sigmoid, ``race`` 5 softmax; each head is optional.
"""

from __future__ import annotations

import keras
from keras import layers

HEADS = {"age": (1, None), "gender": (1, "sigmoid"), "race": (5, "softmax")}


def build_small_cnn(input_size: int = 64, tasks=("age", "gender", "race"), width: int = 16) -> keras.Model:
    unknown = set(tasks) - set(HEADS)
    if unknown:
        raise ValueError(f"unknown task(s) {sorted(unknown)}; known: {sorted(HEADS)}")
    inputs = keras.Input((input_size, input_size, 3), name="image")
    x = inputs
    for i, filters in enumerate((width, 2 * width, 4 * width, 6 * width), start=1):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"block{i}_conv")(x)
        x = layers.BatchNormalization(momentum=0.9, name=f"block{i}_bn")(x)  # few steps per epoch at demo scale
        x = layers.ReLU(name=f"block{i}_relu")(x)
        x = layers.MaxPooling2D(2, name=f"block{i}_pool")(x)
    features = layers.GlobalAveragePooling2D(name="features")(x)
    outputs = {}
    for task in tasks:
        units, activation = HEADS[task]
        h = layers.Dense(64, activation="relu", name=f"{task}_fc")(features)
        h = layers.Dropout(0.2, name=f"{task}_dropout")(h)
        outputs[task] = layers.Dense(units, activation=activation, dtype="float32", name=task)(h)
    return keras.Model(inputs, outputs, name="small_cnn")
