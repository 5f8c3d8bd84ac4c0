"""Sundriyal (thesis 004): the cells that need no training, from the real UTKFace, CORAL and CelebA files and
the backbone builds.

- **Table 4.1** (race x gender counts) and **Section 4.1** (UTKFace images, max age): the race and
  gender fields of every file name of ``utkface/full`` (each file once).
- **Table 4.3** and **Section 4.2** (CORAL protocol): ``utkface/coral/utk_{train,test}.csv`` matched
  to the files, train split 80:20 (:func:`agegender.data.splits.make_split`, protocol ``coral``, seed 0).
- **Table 4.4** and **Section 4.1** (CelebA): the official partition file (202,599 rows) and the
  attribute names of ``list_attr_celeba.txt``.
- **Table 4.2** (Male / Young counts of the training partition): the attribute file here is
  truncated (its header says 202,599 rows; 20,000 follow, 000001-020000). The thesis's cells count
  the whole training partition and cannot be made; the counts over the rows present are given in
  extra columns (``Male Count (rows present)`` ...) so the truncation is visible.
- **Table 4.5** (feature dimension) from the ResNet-50 and SE-ResNet-50-128D builds
  (:func:`reproductions.mtl_weighted_loss.model_build_cells`); LightCNN, SphereFace and
  Inception-ResNet are not built here. **Section 3.2**: "the last fully connected layer for age is
  128x2" on CelebA, read off the MTL head (not in the catalogue).
- **Settings**: Table 3.2 and Sections 3.1, 3.3.2, 3.6.2 from ``SundriyalExperiment`` and the backbone
  registry.
"""

from __future__ import annotations

from pathlib import Path

from reproductions.facts.common import NO_DATA, cell, setting, share

PAPER = "sundriyal"
RACES = ("White", "Black", "Asian", "Indian", "Others")  # Table 4.1 rows = UTKFace race codes 0-4


def utkface_facts(root: Path) -> dict:
    """Table 4.1, Table 4.3, Sections 4.1 and 4.2 from ``<root>/utkface/full`` and ``<root>/utkface/coral``."""
    from agegender.data.provenance import data_kind, describe_data
    from agegender.data.splits import make_split
    from agegender.data.utkface import read_utkface
    from reproductions.mtl_weighted_loss import SundriyalExperiment

    exp = SundriyalExperiment()
    folder, coral = root / "utkface" / "full", root / "utkface" / "coral"
    samples = read_utkface(folder)
    frame = samples.frame
    no_race = frame.loc[frame["race"] < 0]
    labelled = int((frame["race"] >= 0).sum())
    no_race_text = ", ".join(f"{f} ({'female' if g == 1 else 'male'})"
                             for f, g in zip(no_race["file"], no_race["gender"]))
    count_note = (f"race and gender fields of the {samples.files_seen:,} UTKFace file names, each file once; "
                  f"{labelled:,} carry a race, {len(no_race)} do not ({no_race_text}) and are in no row")
    reason_41 = (f"every file of this copy of UTKFace is counted once; its {labelled:,} race-labelled files cannot "
                 "give the thesis's counts, whose race totals sum to 23,715 (the catalogue's note): the thesis's copy "
                 "held other or more files")
    cells = []
    for code, race in enumerate(RACES):
        part = frame[frame["race"] == code]
        for column, value in (("Total Persons", len(part)), ("Male Count", int((part["gender"] == 0).sum())),
                              ("Female Count", int((part["gender"] == 1).sum()))):
            cells.append(cell("Table 4.1", race, column, value, "count", count_note, reason=reason_41))
    cells += [
        cell("Section 4.1", "UTKFace", "images", len(frame), "count",
             f"{len(frame):,} readable faces of {samples.files_seen:,} files",
             reason="the thesis says 'around 20,000' images; the full set here has this many"),
        cell("Section 4.1", "UTKFace", "max age", frame["age"].max(), "years", "largest age in the file names"),
    ]
    split = make_split(frame, "coral", seed=exp.seed, csv_dir=coral, val_fraction=exp.val_fraction)
    counts = split.counts()
    missing = split.info["csv_rows_without_image"]
    coral_note = (f"CORAL lists matched to the files: {sum(missing.values())} list rows without an image; train list "
                  f"split {100 * (1 - exp.val_fraction):.0f}:{100 * exp.val_fraction:.0f} (seed {exp.seed})")
    for row, key in (("Train", "train"), ("Validation", "val"), ("Test", "test")):
        cells.append(cell("Table 4.3", row, "Number of examples", counts[key], "count", coral_note))
    rows = split.frame
    label_mismatch = int((rows["age"] - exp.age_min != rows["coral_label"]).sum())
    cells += [
        cell("Section 4.2", "UTKFace (CORAL)", "age min", rows["age"].min(), "years",
             f"ages of the CORAL rows (file names); rows whose CORAL label is not age - {exp.age_min}: "
             f"{label_mismatch}"),
        cell("Section 4.2", "UTKFace (CORAL)", "age max", rows["age"].max(), "years", "ages of the CORAL rows"),
        cell("Section 4.2", "UTKFace (CORAL)", "train share of train list",
             share(counts["train"], counts["train"] + counts["val"]), "percent", coral_note),
    ]
    data = describe_data("utkface", folder, kind=data_kind(folder, "utkface", len(frame)),
                         coral=describe_data("utkface_coral", coral))
    config = {"protocol": "coral", "seed": exp.seed, "val_fraction": exp.val_fraction}
    metrics = {"files_seen": samples.files_seen, "race_labelled": labelled, "race_missing": list(no_race["file"]),
               "coral_split": counts, "coral_rows_without_image": missing, "coral_label_mismatches": label_mismatch}
    return {"experiment": "sundriyal_utkface", "data": data, "config": config, "cells": cells, "metrics": metrics}


def _partition_counts(path: Path) -> tuple[int, dict]:
    """Rows of ``list_eval_partition.txt`` and images per partition (0 train, 1 validation, 2 test)."""
    counts = {"0": 0, "1": 0, "2": 0}
    rows = 0
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            fields = line.split()
            if len(fields) != 2:
                continue
            rows += 1
            counts[fields[1]] = counts.get(fields[1], 0) + 1
    return rows, counts


def celeba_facts(root: Path) -> dict:
    """Table 4.4, Section 4.1 (CelebA) and the rows of Table 4.2 the truncated attribute file allows."""
    from agegender.data.celeba import read_celeba
    from agegender.data.provenance import describe_data

    folder = root / "celeba"
    rows, parts = _partition_counts(folder / "list_eval_partition.txt")
    samples = read_celeba(folder, attributes=("Male", "Young"))
    frame = samples.frame
    with open(folder / "list_attr_celeba.txt", encoding="utf-8") as handle:
        header_count = handle.readline().strip()
        names = handle.readline().split()
    part_note = f"rows of the official list_eval_partition.txt ({rows:,} rows)"
    cells = [cell("Table 4.4", row, "Number of examples", parts[key], "count", part_note,
                  reason="the official partition file gives this count (reproductions/README.md); the thesis's "
                         "figure is not that of the official partition")
             for row, key in (("Train", "0"), ("Validation", "1"), ("Test", "2"))]
    cells += [cell("Section 4.1", "CelebA", "images", rows, "count", part_note),
              cell("Section 4.1", "CelebA", "attributes", len(names), "count",
                   "attribute names on line 2 of list_attr_celeba.txt")]
    train = frame[frame["partition"] == "train"]
    n_train = parts["0"]
    present = (f"counts over the {len(train):,} training rows present in the truncated attribute file (its header "
               f"says {header_count} rows, {samples.files_seen:,} follow) of the partition's {n_train:,}: not "
               "the thesis's counts, which need the whole training partition")
    for row, column, value in (("Gender", "Male Count", int((train["gender"] == 0).sum())),
                               ("Gender", "Female Count", int((train["gender"] == 1).sum())),
                               ("Age", "Young Count", int((train["Young"] == 1).sum())),
                               ("Age", "Old Count", int((train["Young"] == 0).sum()))):
        cells.append(cell("Table 4.2", row, f"{column} (rows present)", value, "count", present))
    data = describe_data("celeba", folder, kind="real",
                         content="list_eval_partition.txt (complete) and list_attr_celeba.txt (truncated); no images")
    metrics = {"partition_rows": rows, "partition": parts, "attribute_rows": samples.files_seen,
               "attribute_header_count": header_count, "attribute_train_rows": len(train),
               "notes": [n for n in samples.notes if "images" not in n.lower()]}
    return {"experiment": "sundriyal_celeba", "data": data, "config": {"partition": "official"},
            "cells": cells, "metrics": metrics}


def model_facts() -> dict:
    """Table 4.5 (ResNet-50, SE-ResNet-50-128D) and Section 3.2's CelebA age layer, from Keras builds."""
    import keras

    from agegender.models.face_resnets import build_smoke_cnn
    from agegender.models.mtl_head import TASKS, HeadConfig, build_network
    from reproductions.mtl_weighted_loss import model_build_cells

    cells = model_build_cells(("resnet50", "senet50_128"))
    keras.backend.clear_session()
    network = build_network(build_smoke_cnn((32, 32, 3)), TASKS["celeba"], "mtl", HeadConfig())
    inputs, outputs = (int(d) for d in network.get_layer("age").kernel.shape)
    note = ("read from the MTL head (build_network, method mtl, CelebA tasks) on a stand-in backbone; not in the "
            "catalogue: Section 3.2 prints 'the last fully connected layer for age is 128x2'")
    cells += [cell("Section 3.2", "CelebA age output layer", "inputs", inputs, "count", note),
              cell("Section 3.2", "CelebA age output layer", "outputs", outputs, "count", note)]
    keras.backend.clear_session()
    return {"experiment": "sundriyal_model", "data": dict(NO_DATA),
            "config": {"builders": "reproductions.mtl_weighted_loss.model_build_cells, mtl_head.build_network"},
            "cells": cells}


def settings() -> dict:
    """Table 3.2 and Sections 3.1 / 3.3.2 / 3.6.2: ``SundriyalExperiment`` and the backbone registry."""
    from agegender.models.face_resnets import BACKBONES
    from reproductions.mtl_weighted_loss import SundriyalExperiment

    exp = SundriyalExperiment()
    src = "reproductions.mtl_weighted_loss.SundriyalExperiment"
    cells = [
        setting("Table 3.2", "Learning rate", "Value", exp.learning_rate, "scalar", f"{src}.learning_rate"),
        setting("Table 3.2", "Weight Decay", "Value", exp.weight_decay, "scalar", f"{src}.weight_decay"),
        setting("Table 3.2", "β1", "Value", exp.beta_1, "scalar", f"{src}.beta_1"),
        setting("Table 3.2", "β2", "Value", exp.beta_2, "scalar", f"{src}.beta_2"),
        setting("Table 3.2", "λ", "Value", exp.lam, "scalar", f"{src}.lam"),
        setting("Section 3.1", "ResNet-50 (VGGFace2)", "input size", BACKBONES["resnet50"].input_size, "pixels",
                "agegender.models.face_resnets.BACKBONES['resnet50'].input_size"),
        setting("Section 3.3.2", "UTKFace age", "normalisation divisor", exp.age_scale, "scalar", f"{src}.age_scale"),
        setting("Section 3.6.2", "learning rate", "plateau division factor", 1 / exp.lr_factor, "scalar",
                f"1 / {src}.lr_factor"),
    ]
    return {"experiment": "sundriyal_settings", "data": dict(NO_DATA), "config": {"source": src}, "cells": cells}


def experiments(root: Path, figures: Path, out: Path) -> list:
    """Every Sundriyal experiment of the facts command, as functions run one by one."""
    return [lambda: utkface_facts(root), lambda: celeba_facts(root), model_facts, settings]
