"""Jørgensen et al. (paper 001), Tables 1 and 2 and the counts of Sections 3.1 / 3.3, read off the Keras builds.

Used by :func:`reproductions.adience_levi.paper.model_facts`; no data, no network.
"""

from __future__ import annotations

import copy
import functools

from reproductions.adience_levi.config import EXPERIMENTS, Experiment
from reproductions.adience_levi.paper import _cell, build_model


def _counts(model) -> dict:
    import numpy as np

    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    non_trainable = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
    return {"trainable": trainable, "non_trainable": non_trainable, "total": trainable + non_trainable}


def model_facts() -> tuple[dict, list[dict]]:
    """Build every model at the paper's 227x227 (weights None, no data, no network).

    Returns ``({"models": {name: {trainable, non_trainable, total}}}, cells)`` where the cells
    are Table 1 (reduced gender model), Table 2 and the counts printed in Sections 3.1 and 3.3.
    The builds take ~10 s on 2 CPU cores, so the result is computed once per process.
    """
    return copy.deepcopy(_model_facts())


@functools.lru_cache(maxsize=1)
def _model_facts() -> tuple[dict, list[dict]]:
    import keras

    from agegender.models.levi_hassner import build_levi_hassner

    note = "counted from the Keras build at 227x227; independent of data"
    models, cells = {}, []
    for name in ("gender", "age", "multitask", "transfer"):
        keras.backend.clear_session()
        model = build_model(EXPERIMENTS[name], weights=None)
        models[name] = _counts(model)
        if name == "gender":
            cells += _table1_cells(model, EXPERIMENTS[name])
        if name == "age":
            cells.append(_cell("Section 3.1", "reduced age model", "output layer parameters",
                               model.get_layer("age").count_params(), "params", note))
        if name == "multitask":
            models["conv_part"] = _counts(keras.Model(model.input, model.get_layer("flatten").output))
        if name == "transfer":
            backbone = keras.Model(model.input, model.get_layer("flatten").input)
            cells.append(_cell("Section 3.3", "Xception", "parameters", backbone.count_params(), "params",
                               note + "; Xception(include_top=False), the base without the branches"))
        del model
    keras.backend.clear_session()
    models["levi_full"] = _counts(build_levi_hassner("gender", "full"))
    keras.backend.clear_session()
    ordered = {k: models[k] for k in ("gender", "age", "multitask", "transfer", "levi_full", "conv_part")}

    rows = {"gender": "Gender", "age": "Age", "multitask": "multi-task", "transfer": "Transfer learning",
            "conv_part": "Functional layer"}
    columns = {"trainable": "Trainable parameters", "non_trainable": "Non trainable parameters",
               "total": "Total parameters"}
    for key, row in rows.items():
        for field, column in columns.items():
            cells.append(_cell("Table 2", row, column, ordered[key][field], "params", note))
    cells.append(_cell("Section 3.1", "Baseline (Levi & Hassner)", "trainable parameters",
                       ordered["levi_full"]["trainable"], "params",
                       note + "; full width 96/256/384 filters, 512-unit FC, gender head"))
    return {"models": ordered}, cells


def _table1_cells(model, exp: Experiment) -> list[dict]:
    """Table 1 rows of the reduced gender model, read off the built layers."""
    note = "from the Keras build; independent of data"
    cells = []

    def size(row, shape, extra=""):
        n = "; ".join(x for x in (note, extra) if x)
        if len(shape) == 1:
            cells.append(_cell("Table 1", row, "Size of Output Image", shape[0], "count", n))
            return
        for column, value, unit in zip(("height", "width", "channels"), shape, ("pixels", "pixels", "count")):
            cells.append(_cell("Table 1", row, f"Size of Output Image {column}", value, unit, n))

    def out(layer):
        return tuple(int(d) for d in layer.output.shape[1:])

    size("Input image", (exp.load_size, exp.load_size, 3), "the pipeline's resize before cropping")
    size("Random cropping", tuple(int(d) for d in model.input.shape[1:]), "the model's input")
    size("Rescaling", out(model.get_layer("rescaling")))
    for i in (1, 2, 3):
        conv = model.get_layer(f"block{i}_conv")
        row = f"Convolution {i}"
        cells.append(_cell("Table 1", row, "Number of Filters", conv.filters, "count", note))
        for column, value in zip(("height", "width"), conv.kernel_size):
            cells.append(_cell("Table 1", row, f"Size of Each Filter {column}", value, "pixels", note))
        cells.append(_cell("Table 1", row, "Size of Each Filter depth", int(conv.input.shape[-1]), "count", note))
        for column, value in zip(("height", "width"), conv.strides):
            cells.append(_cell("Table 1", row, f"Stride Value {column}", value, "pixels", note))
        size(row, out(conv))
        cells.append(_cell("Table 1", row, "Parameters", conv.count_params(), "params", note))
        size(f"ReLU {i}", out(conv), "ReLU fused into the convolution layer")
        pool = model.get_layer(f"block{i}_pool")
        row = f"Max pooling {i}"
        for column, value in zip(("height", "width"), pool.pool_size):
            cells.append(_cell("Table 1", row, f"Size of Each Filter {column}", value, "pixels",
                               note + "; 3x3 window, as reproductions/README.md decides"))
        for column, value in zip(("height", "width"), pool.strides):
            cells.append(_cell("Table 1", row, f"Stride Value {column}", value, "pixels", note))
        size(row, out(pool))
        size(f"Local Response normalization {i}", out(model.get_layer(f"block{i}_lrn")))
    for i, relu in ((1, 4), (2, 5)):
        fc, drop = model.get_layer(f"gender_fc{i}"), model.get_layer(f"gender_dropout{i}")
        size(f"Fully connected {i}", out(fc))
        cells.append(_cell("Table 1", f"Fully connected {i}", "Parameters", fc.count_params(), "params", note))
        size(f"ReLU {relu}", out(fc), "ReLU fused into the dense layer")
        cells.append(_cell("Table 1", f"Dropout {i}", "Rate", drop.rate, "scalar", note))
        size(f"Dropout {i}", out(drop))
    head = model.get_layer("gender")
    size("Output fully connected", out(head))
    cells.append(_cell("Table 1", "Output fully connected", "Parameters", head.count_params(), "params", note))
    size("Sigmoid", out(head), "sigmoid fused into the output layer")
    return cells
