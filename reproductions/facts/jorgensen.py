"""Jørgensen et al. (paper 001): the cells that need no training, from the real Adience fold files and the
Keras builds.

- **Section 2.1** (data, the fold files in ``adience/folds``): labelled images after the paper's
  cleaning (rows with m/f gender *and* one of the 8 canonical age groups; exact duplicate rows
  kept, as the published protocol and Levi & Hassner's lists do: the count without them is in the
  note), the female share of those rows and the number of age classes found. **Section 2.2**: the
  number of folds, and a check that no user is in two folds. **Figure 2** (no numbers printed):
  the age x gender counts of the cleaned rows, as cells of table ``Figure 2`` and a bar chart
  (``results/figures/facts/jorgensen_figure2.png``).
- **Table 1, Table 2, Sections 3.1 and 3.3** (model builds at 227x227, no weights):
  :func:`reproductions.adience_levi.model_facts` for the layer shapes and parameter counts, and
  the Xception transfer model for the Section 3.3 counts (parameters of the base, convolution
  layers of its main path, trainable trailing layers, input size). The ``Input image`` row of
  Table 1 is the pipeline's resize (a configuration value): a setting.
- **Section 3.4 settings**: Adam, batch size, epochs, patience of
  ``reproductions.adience_levi.EXPERIMENTS``.
"""

from __future__ import annotations

from pathlib import Path

from reproductions.facts.common import NO_DATA, cell, relative_figure, save_figure, setting, share

PAPER = "jorgensen"
POOL_REASON = ("the printed 1x1 window cannot give Table 1's own output sizes (221 -> 110, 106 -> 52, 50 -> 24); "
               "a 3x3 window at stride 2, as in Levi & Hassner, does (reproductions/README.md): the builder uses 3x3")


def data_facts(root: Path, figures: Path, out: Path) -> dict:
    """Section 2.1, Section 2.2 and Figure 2 from ``<root>/adience/folds``."""
    from agegender.data.adience import read_adience
    from agegender.data.provenance import describe_data
    from agegender.data.samples import ADIENCE_AGE_GROUPS

    folder = root / "adience" / "folds"
    samples = read_adience(folder, check_images=False, keep_duplicates=True)
    frame = samples.frame
    clean = frame[(frame["age_group"] >= 0) & (frame["gender"] >= 0)]
    dedup = read_adience(folder, check_images=False).frame
    dedup_clean = dedup[(dedup["age_group"] >= 0) & (dedup["gender"] >= 0)]
    female = int((clean["gender"] == 1).sum())
    gender_rows = frame[frame["gender"] >= 0]
    users_in_two_folds = int((frame.groupby("group")["fold"].nunique() > 1).sum())
    cleaning = (f"{samples.files_seen:,} fold-file rows; rows with m/f gender and a canonical age group, "
                f"{len(samples.duplicate_rows)} exact duplicate rows kept (without them: {len(dedup_clean):,})")
    s21, s22 = "Section 2.1", "Section 2.2"
    cells = [
        cell(s21, "Adience (aligned)", "labelled images", len(clean), "count", cleaning,
             reason=f"the fold files give {len(clean):,} rows with both labels ({len(dedup_clean):,} without "
                    "duplicate rows); no reading of them found here gives the paper's count (the reading notes: the "
                    "gap is unexplained)"),
        cell(s21, "Adience (aligned)", "female share", share(female, len(clean)), "percent",
             f"{female:,} of the {len(clean):,} cleaned rows; of all {len(gender_rows):,} rows with m/f gender: "
             f"{share(int((gender_rows['gender'] == 1).sum()), len(gender_rows)):.2f}%",
             reason=f"{share(female, len(clean)):.2f}% female rounds to "
                    f"{round(share(female, len(clean)))}%; the paper's '∼53%' is an approximation"),
        cell(s21, "Adience (aligned)", "age classes", clean["age_group"].nunique(), "count",
             "distinct canonical age groups among the cleaned rows: "
             + " ".join(ADIENCE_AGE_GROUPS[i] for i in sorted(clean["age_group"].unique()))),
        cell(s22, "cross-validation", "folds", frame["fold"].nunique(), "count",
             f"fold files read; users (user_id) found in two folds: {users_in_two_folds}"),
    ]
    path = _figure2(clean, figures / "jorgensen_figure2.png")
    by = clean.groupby(["age_group", "gender"]).size()
    for group, label in enumerate(ADIENCE_AGE_GROUPS):
        for gender, name in ((1, "female"), (0, "male")):
            cells.append(cell("Figure 2", label, f"{name} images", int(by.get((group, gender), 0)), "count",
                              "cleaned rows of the fold files (Section 2.1); the paper draws these as bars, no "
                              "numbers printed"))
    metrics = {"rows": samples.files_seen, "duplicate_rows": len(samples.duplicate_rows),
               "age_group_rows": int((frame["age_group"] >= 0).sum()), "gender_rows": len(gender_rows),
               "both_labels": len(clean), "both_labels_without_duplicates": len(dedup_clean),
               "users": int(frame["group"].nunique()), "users_in_two_folds": users_in_two_folds}
    data = describe_data("adience", folder, kind="real", content="the five official fold files (labels only)")
    config = {"reader": "read_adience(check_images=False, keep_duplicates=True)", "filter": "age group and gender"}
    return {"experiment": "jorgensen_adience_folds", "data": data, "config": config, "cells": cells,
            "metrics": metrics, "figures": [relative_figure(path, out)]}


def _figure2(clean, path: Path) -> Path:
    """Figure 2: images per age group and gender of the cleaned fold-file rows."""
    import numpy as np

    from agegender.data.samples import ADIENCE_AGE_GROUPS
    from agegender.plots import pyplot

    plt = pyplot()
    by = clean.groupby(["age_group", "gender"]).size()
    x = np.arange(len(ADIENCE_AGE_GROUPS))
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for offset, (gender, name) in zip((-0.2, 0.2), ((1, "female"), (0, "male"))):
        ax.bar(x + offset, [int(by.get((g, gender), 0)) for g in range(len(x))], width=0.4, label=name)
    ax.set_xticks(x, ADIENCE_AGE_GROUPS)
    ax.set_xlabel("age group")
    ax.set_ylabel("images")
    ax.set_title(f"Jørgensen Figure 2: Adience age and gender ({len(clean):,} cleaned fold-file rows)", fontsize=9)
    ax.legend()
    return save_figure(fig, path)


def model_facts() -> dict:
    """Tables 1-2 and Sections 3.1 / 3.3 from the Keras builds (no weights, no data)."""
    import keras

    from reproductions.adience_levi import EXPERIMENTS, build_model, model_facts as levi_facts

    described, levi_cells = levi_facts()
    cells = []
    for c in levi_cells:
        c = dict(c)
        if c["table"] == "Table 1" and c["row"] == "Input image":
            continue  # the pipeline's resize: a setting (see settings())
        if c["table"] == "Table 1" and c["row"].startswith("Max pooling") and "Size of Each Filter" in c["column"]:
            c["reason"] = POOL_REASON
        cells.append(c)
    keras.backend.clear_session()
    exp = EXPERIMENTS["transfer"]
    model = build_model(exp, weights=None)
    names = [layer.name for layer in model.layers]
    base = model.layers[names.index("xception_preprocess") + 1: names.index("flatten")]
    main_convs = [layer for layer in base if isinstance(layer, (keras.layers.Conv2D, keras.layers.SeparableConv2D))
                  and layer.name.startswith("block")]
    all_convs = [layer for layer in base if isinstance(layer, (keras.layers.Conv2D, keras.layers.SeparableConv2D))]
    tail = 0
    for layer in reversed(base):
        if not layer.trainable:
            break
        tail += 1
    size = int(model.inputs[0].shape[1])
    note = "read from the Xception transfer model built at 227x227 (weights None); independent of data"
    cells += [
        cell("Section 3.3", "Xception", "convolutional layers", len(main_convs), "count",
             note + f"; Conv2D and SeparableConv2D of the main path (Chollet's count); with the "
                    f"{len(all_convs) - len(main_convs)} 1x1 shortcut convolutions: {len(all_convs)}"),
        cell("Section 3.3", "Xception", "trainable last layers", tail, "count",
             note + f"; trailing layers of the base left trainable, of {len(base)}"),
        cell("Section 3.3", "Xception", "input size", size, "pixels", note,
             reason="Table 2's parameter counts are reached only at 227x227 (7x7x2048 features); at the text's "
                    "299x299 they are not (reproductions/README.md), so the model is built at 227"),
    ]
    keras.backend.clear_session()
    return {"experiment": "jorgensen_model", "data": dict(NO_DATA),
            "config": {"builders": "reproductions.adience_levi.model_facts, build_model(transfer, weights=None)",
                       "input_shape": [227, 227, 3]},
            "cells": cells, "metrics": described}


def settings() -> dict:
    """Table 1's input image and Section 3.4, from ``reproductions.adience_levi.EXPERIMENTS``."""
    from reproductions.adience_levi import EXPERIMENTS

    exp = EXPERIMENTS["multitask"]
    src = "reproductions.adience_levi.Experiment"
    cells = [setting("Table 1", "Input image", f"Size of Output Image {c}", v, u, f"{src}.load_size (the resize)")
             for c, v, u in (("height", exp.load_size, "pixels"), ("width", exp.load_size, "pixels"),
                             ("channels", 3, "count"))]
    cells += [
        setting("Section 3.4", "training", "epochs", exp.epochs, "epochs", f"{src}.epochs"),
        setting("Section 3.4", "training", "batch size", exp.batch_size, "count", f"{src}.batch_size"),
        setting("Section 3.4", "training", "early stopping patience", exp.patience, "epochs", f"{src}.patience"),
        setting("Section 3.4", "Adam", "alpha", exp.learning_rate, "scalar", f"{src}.learning_rate"),
        setting("Section 3.4", "Adam", "beta_1", exp.beta_1, "scalar", f"{src}.beta_1"),
        setting("Section 3.4", "Adam", "beta_2", exp.beta_2, "scalar", f"{src}.beta_2"),
        setting("Section 3.4", "Adam", "epsilon", exp.epsilon, "scalar", f"{src}.epsilon"),
    ]
    return {"experiment": "jorgensen_settings", "data": dict(NO_DATA), "config": {"source": src}, "cells": cells}


def experiments(root: Path, figures: Path, out: Path) -> list:
    """Every Jørgensen experiment of the facts command, as functions run one by one."""
    return [lambda: data_facts(root, figures, out), model_facts, settings]
