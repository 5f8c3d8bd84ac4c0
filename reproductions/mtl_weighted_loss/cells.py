"""Sundriyal: the table cells of one model (Tables 4.6-4.15, Chapter 5), of the data and of the settings."""

from __future__ import annotations

import math

from reproductions.mtl_weighted_loss import extra
from reproductions.mtl_weighted_loss.config import (RACE_ROWS, ROW, SundriyalExperiment, backbone_label,
                                                    is_thesis_mtl, mtl_key, thesis_backbone)

def _row(label: str, exp: SundriyalExperiment, table_backbone: str | None) -> str:
    """``label`` when the run's (thesis) backbone is the table's, else ``label (backbone)``."""
    if table_backbone is None or thesis_backbone(exp) == table_backbone:
        return label
    return f"{label} ({backbone_label(exp)})"


def _metric_cells(table: str, row: str, metrics: dict, dataset: str, note: str) -> list[dict]:
    test = metrics["test"]
    cells = []
    if "gender" in test:
        cells.append((table, row, "Gender Accuracy", 100 * test["gender"]["accuracy"], "percent"))
    if "race" in test:
        cells.append((table, row, "Race Accuracy", 100 * test["race"]["accuracy"], "percent"))
    if "age" in test:
        if dataset == "utkface":
            cells.append((table, row, "Age MAE", test["age"]["mae_years"], "mae-years"))
        else:
            cells.append((table, row, "Age Accuracy", 100 * test["age"]["accuracy"], "percent"))
    return [_cell(*c, note) for c in cells]


def _cell(table, row, column, value, unit, note="") -> dict:
    cell = {"table": table, "row": row, "column": column, "value": float(value), "unit": unit}
    if note:
        cell["note"] = note
    return cell


def model_cells(exp: SundriyalExperiment, result: dict, note: str) -> list[dict]:
    """The paper cells one trained model reproduces (labels as in sundriyal.csv)."""
    from agegender.models.face_resnets import BACKBONES

    method, metrics, dataset = result["method"], result["metrics"], exp.dataset
    table = BACKBONES[thesis_backbone(exp)].tables[dataset]
    movement = (metrics.get("training") or {}).get("loss_weight_movement")
    note = "; ".join(x for x in (note, extra.weight_flag(movement)) if x)  # the flag goes on every cell
    cells = []
    if method != "mtl" or is_thesis_mtl(exp):
        cells += _metric_cells(table, ROW[method], metrics, dataset, note)
    elif method == "mtl":  # an ablation: its own row in the backbone's table
        cells += _metric_cells(table, f"{ROW['mtl']} ({mtl_key(exp)})", metrics, dataset, note)
    if method == "mtl":
        cells += _chapter5_cells(exp, result, note)
        cells += extra.loss_weight_cells(f"{backbone_label(exp)}, {dataset}, {mtl_key(exp)}", movement, note)
        if is_thesis_mtl(exp):
            cells += extra.comparison_cells(exp, metrics, backbone_label(exp), thesis_backbone(exp) == "senet50_128",
                                            note)
            seconds = (metrics.get("training") or {}).get("seconds")
            if seconds:
                cells += extra.convergence_time_cells(exp, seconds, result.get("device", "this machine"), note)
    if dataset == "celeba" and "age" in metrics["test"] and method in ("single", "mtl") and (
            method == "single" or is_thesis_mtl(exp)):
        cells += _section53_cells(exp, result, note)
    return cells


def _chapter5_cells(exp: SundriyalExperiment, result: dict, note: str) -> list[dict]:
    metrics, dataset = result["metrics"], exp.dataset
    cells = []
    lam_ok = math.isclose(exp.lam, 0.1) or exp.loss == "average"
    if dataset == "utkface":
        if is_thesis_mtl(exp):
            label = ("Ours (MTL+SEResnet)" if thesis_backbone(exp) == "senet50_128"
                     else f"Ours (MTL+{backbone_label(exp)})")
            cells.append(_cell("Table 4.16", label, "Age MAE (in years)", metrics["test"]["age"]["mae_years"],
                               "mae-years", note))
        if exp.early_freeze and lam_ok:  # Table 5.3: loss function (SE-ResNet-50 per the caption)
            label = "Average Loss" if exp.loss == "average" else "Proposed weighted Loss"
            cells += _metric_cells("Table 5.3", _row(label, exp, "senet50_128"), metrics, dataset, note)
        if exp.loss == "weighted" and math.isclose(exp.lam, 0.1):  # Table 5.4: Early Freeze or not
            label = "Proposed Early Freeze Method" if exp.early_freeze else "Early stopping of converged task"
            cells += _metric_cells("Table 5.4", _row(label, exp, "senet50_128"), metrics, dataset, note)
        if exp.loss == "weighted" and exp.early_freeze:  # Table 5.5: the lambda sweep
            cells += _metric_cells("Table 5.5", _row(f"{exp.lam:g}", exp, "senet50_128"), metrics, dataset, note)
        cells += _convergence_cells(exp, result, note)
    elif exp.early_freeze and lam_ok:  # CelebA: Table 5.1 (SE-ResNet-50) / 5.2 (ResNet-50)
        table = "Table 5.2" if thesis_backbone(exp) == "resnet50" else "Table 5.1"
        weighted = "Proposed weighted Loss" if table == "Table 5.2" else "Proposed Weighted Loss"
        label = "Average Loss" if exp.loss == "average" else weighted
        table_backbone = "resnet50" if table == "Table 5.2" else "senet50_128"
        cells += _metric_cells(table, _row(label, exp, table_backbone), metrics, exp.dataset, note)
    return cells


def _convergence_cells(exp: SundriyalExperiment, result: dict, note: str) -> list[dict]:
    """Section 5.2: the epochs at which gender / race and age converge (with or without Early Freeze)."""
    converged = result["early_freeze"]["converged"]
    row = _row("with Early Freeze" if exp.early_freeze else "without Early Freeze", exp, "senet50_128")
    if exp.loss != "weighted" or not math.isclose(exp.lam, 0.1):
        row += f" ({mtl_key(exp)})"
    cells = []
    if "gender" in converged and "race" in converged:
        cells.append(_cell("Section 5.2", row, "gender and race converge at",
                           max(converged["gender"]["epoch"], converged["race"]["epoch"]), "epochs",
                           note + "; the later of the two convergence epochs"))
    for task in ("gender", "race", "age"):
        if task in converged:
            column = "age converges at" if task == "age" else f"{task} converges at"
            cells.append(_cell("Section 5.2", row, column, converged[task]["epoch"], "epochs", note))
    return cells


def _section53_cells(exp: SundriyalExperiment, result: dict, note: str) -> list[dict]:
    """Section 5.3 and Figures 5.3 / 5.4: Young / Old accuracy and the age confusion matrix (CelebA)."""
    age = result["metrics"]["test"]["age"]
    method = result["method"]
    row = _row(ROW[method], exp, "resnet50")
    cells = [_cell("Section 5.3", row, "Age Accuracy", 100 * age["accuracy"], "percent", note),
             _cell("Section 5.3", row, "Young accuracy", 100 * age["per_class_accuracy"][0], "percent", note),
             _cell("Section 5.3", row, "Old accuracy", 100 * age["per_class_accuracy"][1], "percent", note)]
    figure = "Figure 5.3" if method == "single" else "Figure 5.4"
    matrix = age["confusion_matrix"]
    suffix = "" if thesis_backbone(exp) == "resnet50" else f" ({backbone_label(exp)})"
    for i, true in enumerate(("Young", "Old")):
        for j, pred in enumerate(("Young", "Old")):
            cells.append(_cell(figure, f"true {true}{suffix}", f"predicted {pred}", matrix[i][j], "count",
                               note + "; test-set counts"))
    return cells


def dataset_cells(data: dict, exp: SundriyalExperiment, note: str) -> list[dict]:
    """Tables 4.1-4.4 and Section 4.2 from the readers and the split."""
    frame, full = data["frame"], data["full_counts"]
    cells = []
    if exp.dataset == "utkface":
        n = len(frame)
        read_note = "; ".join(x for x in (note, f"all {n:,} faces read from the data folder") if x)
        for code, race in enumerate(RACE_ROWS):
            part = frame[frame["race"] == code]
            cells += [_cell("Table 4.1", race, "Total Persons", len(part), "count", read_note),
                      _cell("Table 4.1", race, "Male Count", int((part["gender"] == 0).sum()), "count", read_note),
                      _cell("Table 4.1", race, "Female Count", int((part["gender"] == 1).sum()), "count", read_note)]
        split_note = "; ".join(x for x in (note, data["info"]["coral_note"]) if x)
        for row, key in (("Train", "train"), ("Validation", "val"), ("Test", "test")):
            cells.append(_cell("Table 4.3", row, "Number of examples", full[key], "count", split_note))
        rows = data["split"].frame
        cells += [_cell("Section 4.2", "UTKFace (CORAL)", "age min", rows["age"].min(), "years", split_note),
                  _cell("Section 4.2", "UTKFace (CORAL)", "age max", rows["age"].max(), "years", split_note),
                  _cell("Section 4.2", "UTKFace (CORAL)", "train share of train list",
                        100 * full["train"] / max(full["train"] + full["val"], 1), "percent", split_note)]
    else:
        train = frame[frame["partition"] == "train"]
        part_note = "; ".join(x for x in (note, "official training partition") if x)
        cells += [_cell("Table 4.2", "Gender", "Male Count", int((train["gender"] == 0).sum()), "count", part_note),
                  _cell("Table 4.2", "Gender", "Female Count", int((train["gender"] == 1).sum()), "count", part_note),
                  _cell("Table 4.2", "Age", "Young Count", int((train["Young"] == 1).sum()), "count", part_note),
                  _cell("Table 4.2", "Age", "Old Count", int((train["Young"] == 0).sum()), "count", part_note)]
        for row, key in (("Train", "train"), ("Validation", "val"), ("Test", "test")):
            cells.append(_cell("Table 4.4", row, "Number of examples", full[key], "count", note))
    return cells


def settings_cells(exp: SundriyalExperiment, note: str) -> list[dict]:
    """Table 3.2 and Sections 3.1 / 3.3.2 / 3.6.2, read back from the configuration and the registry."""
    from agegender.models.face_resnets import BACKBONES

    return [_cell("Table 3.2", "Learning rate", "Value", exp.learning_rate, "scalar", note),
            _cell("Table 3.2", "Weight Decay", "Value", exp.weight_decay, "scalar", note),
            _cell("Table 3.2", "β1", "Value", exp.beta_1, "scalar", note),
            _cell("Table 3.2", "β2", "Value", exp.beta_2, "scalar", note),
            _cell("Table 3.2", "λ", "Value", exp.lam, "scalar", note),
            _cell("Section 3.1", "ResNet-50 (VGGFace2)", "input size", BACKBONES["resnet50"].input_size, "pixels",
                  note),
            _cell("Section 3.3.2", "UTKFace age", "normalisation divisor", exp.age_scale, "scalar", note),
            _cell("Section 3.6.2", "learning rate", "plateau division factor", 1 / exp.lr_factor, "scalar", note)]


def model_build_cells(keys=("resnet50", "senet50_128")) -> list[dict]:
    """Table 4.5 "Feature Dimension" of the backbones built here (no weights, no data)."""
    import keras

    from agegender.models.face_resnets import BACKBONES

    cells = []
    for key in keys:
        keras.backend.clear_session()
        spec = BACKBONES[key]
        model = spec.build((64, 64, 3))
        cells.append(_cell("Table 4.5", spec.label, "Feature Dimension", int(model.output.shape[-1]), "count",
                           "read from the Keras build; independent of data"))
    keras.backend.clear_session()
    return cells
