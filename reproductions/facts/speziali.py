"""Speziali (paper 000): the cells that need no training, from the real UTKFace files and the built CNN.

- **Section III-A** (data): the faces used (every UTKFace file with an age and a gender), the
  70/30 train/test and 70/30 train/validation shares of the split, and the Kolmogorov-Smirnov
  p-value of the train vs validation ages. One split's p is a random draw, so it is computed for
  the splits of seeds 0-9 (ten cells, shown as mean ± std with n = 10; the note gives their range
  next to the paper's "approximately 0.38"). Split: :func:`agegender.data.splits.make_split`
  (protocol ``speziali``), the one the reproduction trains on.
- **Section III-B** (model build): input size, filters, kernel sizes, padding, strides, pooling,
  branch units and dropout read off ``build_dual_cnn("dual")`` at the paper's 128x128.
- **Settings** (learning rates, batch size, patience, lambda_age, max rotation): the values of
  :class:`reproductions.utkface_dual_cnn.SpezialiExperiment`, shown as settings.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from reproductions.facts.common import NO_DATA, cell, setting

PAPER = "speziali"
SEEDS = tuple(range(10))  # issue 16: the KS p-value's distribution over the splits of seeds 0-9


def data_facts(root: Path) -> dict:
    """Section III-A from ``<root>/utkface/full``: one experiment dict (data, config, cells, metrics)."""
    from agegender.data.provenance import data_kind, describe_data
    from agegender.data.splits import make_split
    from agegender.data.utkface import read_utkface
    from reproductions.utkface_dual_cnn import SpezialiExperiment, split_shares

    folder = root / "utkface" / "full"
    samples = read_utkface(folder)
    frame = samples.frame
    exp = SpezialiExperiment()
    splits = {seed: make_split(frame, "speziali", seed=seed, test_fraction=exp.test_fraction,
                               val_fraction=exp.val_fraction) for seed in SEEDS}
    first = splits[SEEDS[0]]
    counts = first.counts()
    used = sum(counts.values())
    shares = split_shares(counts)
    repaired = sorted({r["reason"] for r in samples.repaired})
    read_note = (f"UTKFace files with an age and a gender, of {samples.files_seen:,} files read "
                 f"({len(samples.repaired)} names repaired, {len(samples.skipped)} skipped)")
    a = "Section III-A"
    cells = [
        cell(a, "UTKFace", "images", used, "count", read_note,
             reason=f"the UTKFace folder here holds {samples.files_seen:,} files and every one has a readable age and "
                    "gender, so all are used: the paper's count is not that of this copy of the set"),
        cell(a, "train/test split", "train share", shares["train_test"][0], "percent",
             f"{counts['train'] + counts['val']:,} of {used:,} faces (seed 0)"),
        cell(a, "train/test split", "test share", shares["train_test"][1], "percent",
             f"{counts['test']:,} of {used:,} faces (seed 0)"),
        cell(a, "train/validation split", "train share", shares["train_val"][0], "percent",
             f"{counts['train']:,} of {counts['train'] + counts['val']:,} faces (seed 0)"),
        cell(a, "train/validation split", "validation share", shares["train_val"][1], "percent",
             f"{counts['val']:,} of {counts['train'] + counts['val']:,} faces (seed 0)"),
    ]
    pvalues = {seed: split.info["ks_train_val"]["p_value"] for seed, split in splits.items()}
    values = list(pvalues.values())
    spread = (f"two-sample KS test of the train vs validation ages; over the splits of seeds 0-9 p ranges "
              f"{min(values):.3f}-{max(values):.3f} (median {statistics.median(values):.3f}); each seed is one cell")
    for seed, p in pvalues.items():
        cells.append(cell(a, "Kolmogorov-Smirnov test", "p-value", p, "p-value", spread, seed=seed,
                          reason="one split's p is a random draw: only its distribution over seeds can be compared "
                                 "(range in this note)"))
    metrics = {"files_seen": samples.files_seen, "faces_used": used, "repaired_reasons": repaired,
               "split_counts_seed0": counts,
               "ks_by_seed": {str(s): {"p_value": sp.info["ks_train_val"]["p_value"],
                                       "statistic": sp.info["ks_train_val"]["statistic"]}
                              for s, sp in splits.items()}}
    data = describe_data("utkface", folder, kind=data_kind(folder, "utkface", len(frame)))
    config = {"protocol": "speziali", "seeds": list(SEEDS), "test_fraction": exp.test_fraction,
              "val_fraction": exp.val_fraction}
    return {"experiment": "speziali_utkface", "data": data, "config": config, "cells": cells, "metrics": metrics}


def model_facts() -> dict:
    """Section III-B, read off the dual-task network built at the paper's 128x128 (no weights, no data)."""
    import keras

    from agegender.models.dual_cnn import build_dual_cnn

    keras.backend.clear_session()
    model = build_dual_cnn("dual", input_size=128)
    convs = [model.get_layer(f"block{i}_conv") for i in range(1, 5)]
    pools = [model.get_layer(f"block{i}_pool") for i in range(1, 5)]
    fcs = [model.get_layer(f"{task}_fc") for task in ("gender", "age")]
    drops = [model.get_layer(f"{task}_dropout") for task in ("gender", "age")]
    height, width, channels = (int(d) for d in model.inputs[0].shape[1:])
    conv1 = convs[0]
    padding = (conv1.kernel_size[0] - 1) // 2 if conv1.padding == "same" else 0
    strides = {s for c in convs for s in c.strides}
    note = "read from build_dual_cnn('dual', 128); independent of data"
    b = "Section III-B"
    cells = [
        cell(b, "input", "height", height, "pixels", note),
        cell(b, "input", "width", width, "pixels", note),
        cell(b, "input", "channels", channels, "count", note),
        cell(b, "conv 1", "filters", conv1.filters, "count",
             note + "; filters of conv 1-4: " + ", ".join(str(c.filters) for c in convs)),
        cell(b, "conv 1", "kernel size", conv1.kernel_size[0], "pixels", note),
        cell(b, "conv 1", "padding", padding, "pixels", note + f"; padding '{conv1.padding}'",
             reason="'same' padding of a 3x3 kernel adds 1 pixel per side, which is what preserves the spatial size; "
                    "the paper's 'padding of 2 to preserve spatial dimensions' cannot with 3x3 kernels (reading "
                    "notes: same padding)"),
        cell(b, "conv", "stride", min(strides), "pixels",
             note + f"; strides of the four convolutions: {sorted(strides)}",
             reason="the convolutions do not all share one stride"),
        cell(b, "conv 2", "kernel size", convs[1].kernel_size[0], "pixels", note),
        cell(b, "max pooling", "window", pools[0].pool_size[0], "pixels", note),
        cell(b, "max pooling", "stride", pools[0].strides[0], "pixels", note),
        cell(b, "fully connected", "units", fcs[0].units, "count",
             note + "; units of the gender and age branches: " + ", ".join(str(f.units) for f in fcs)),
        cell(b, "dropout", "rate", drops[0].rate, "scalar",
             note + "; rates of the two branches: " + ", ".join(f"{d.rate:g}" for d in drops)),
    ]
    printed = "not in the catalogue: Section III-B prints 'two output neurons' (softmax) and 'a single output neuron'"
    for task in ("gender", "age"):
        head = model.get_layer(task)
        cells.append(cell(b, f"{task} output", "neurons", head.units, "count",
                          f"{note}; activation {head.activation.__name__}; {printed}"))
    metrics = {"parameters": int(model.count_params())}
    keras.backend.clear_session()
    return {"experiment": "speziali_model", "data": dict(NO_DATA), "config": {"builder": "build_dual_cnn",
                                                                            "variant": "dual", "input_size": 128},
            "cells": cells, "metrics": metrics}


def settings() -> dict:
    """The configuration cells (Sections III-A, III-B, IV-B), from ``SpezialiExperiment()``."""
    from reproductions.utkface_dual_cnn import SpezialiExperiment

    exp = SpezialiExperiment()
    src = "reproductions.utkface_dual_cnn.SpezialiExperiment"
    cells = [
        setting("Section III-A", "augmentation", "max rotation", exp.rotation_deg, "degrees", f"{src}.rotation_deg"),
        setting("Section III-B", "Multi-task CNN", "learning rate", exp.lr_dual, "scalar", f"{src}.lr_dual"),
        setting("Section III-B", "Single-task CNN gender", "learning rate", exp.lr_gender, "scalar",
                f"{src}.lr_gender"),
        setting("Section III-B", "Single-task CNN age", "learning rate", exp.lr_age, "scalar", f"{src}.lr_age"),
        setting("Section III-B", "both architectures", "batch size", exp.batch_size, "count", f"{src}.batch_size"),
        setting("Section IV-B", "early stopping", "patience", exp.patience, "epochs", f"{src}.patience"),
        setting("Section IV-B", "age loss", "lambda_age", exp.lambda_age, "scalar", f"{src}.lambda_age"),
    ]
    return {"experiment": "speziali_settings", "data": dict(NO_DATA), "config": {"source": src}, "cells": cells}


def experiments(root: Path, figures: Path, out: Path) -> list:
    """Every Speziali experiment of the facts command, as functions run one by one."""
    return [lambda: data_facts(root), model_facts, settings]
