"""Sundriyal (paper 004): the cells and record parts beyond the per-method tables.

Beyond the per-method cells of :mod:`reproductions.mtl_weighted_loss.cells` (the run calls everything here):

* **Learned loss weights, initial and final** (thesis Sec. 3.4): every MTL record keeps ``w`` at
  the start (the seeded random logits) and at the end of training
  (:func:`agegender.models.loss_weighting.weight_movement`), table ``Loss weights (extra)`` shows
  both per task, and when the weights moved less than the spread of their random start, every
  cell of that model carries the flag :func:`weight_flag` in its note: at the thesis's learning
  rate the weighting then is mostly its random initialisation, not something learned.
* **Figures 4.7 / 4.8 "Ours"** (CelebA gender / Young-Old accuracy of the proposed MTL network):
  the thesis's bars of the other methods are not printed numbers and are not reproduced.
* **Section 4.1** (dataset facts read from the data) and **Section 3.6.2** (the time the proposed
  MTL network took to converge, in hours, on the machine of the run).
* **Section 4.4.5 is left empty on purpose**: its number is CORAL-CNN's published MAE minus ours;
  a published figure never enters a computation here, and CORAL-CNN is not trained by this
  repository, so no run allows it (Table 4.16 shows our MAE next to CORAL's published one).
* The record's ``deviations`` (:func:`record_deviations`) and the machine-independent naming of
  files (:func:`relative`; skipped images: :func:`agegender.data.pipeline.portable_report`).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

LOSS_WEIGHTS_TABLE = "Loss weights (extra)"
THESIS_LAMBDAS = (0.001, 0.01, 0.1, 1.0)  # Sec. 5.4 / Table 5.5: the sweep the thesis ran


def _cell(table, row, column, value, unit, note="") -> dict:
    cell = {"table": table, "row": row, "column": column, "value": float(value), "unit": unit}
    if note:
        cell["note"] = note
    return cell


# ----------------------------------------------------------------------------------------------- loss weights


def weight_flag(movement: dict | None) -> str:
    """The note every cell of a model gets when its learned loss weights barely moved ("" otherwise)."""
    if not movement or not movement.get("barely_moved"):
        return ""
    start = ", ".join(f"{t} {w:.3f}" for t, w in movement["initial"].items())
    end = ", ".join(f"{t} {w:.3f}" for t, w in movement["final"].items())
    return (f"LOSS WEIGHTS BARELY MOVED: largest change {movement['change']:.3f} < initial spread "
            f"{movement['spread']:.3f} (w from {start} to {end}); the weighting is mostly its random start")


def loss_weight_cells(row: str, movement: dict | None, note: str) -> list[dict]:
    """``Loss weights (extra)``: initial and final ``w`` per task, the largest change and the initial spread."""
    if not movement:
        return []
    cells = []
    for task in movement["initial"]:
        cells.append(_cell(LOSS_WEIGHTS_TABLE, row, f"{task} initial w", movement["initial"][task], "scalar", note))
        cells.append(_cell(LOSS_WEIGHTS_TABLE, row, f"{task} final w", movement["final"][task], "scalar", note))
    cells.append(_cell(LOSS_WEIGHTS_TABLE, row, "largest change", movement["change"], "scalar", note))
    cells.append(_cell(LOSS_WEIGHTS_TABLE, row, "initial spread", movement["spread"], "scalar", note))
    return cells


# ----------------------------------------------------------------------------------------------- other cells


def comparison_cells(exp, metrics: dict, label: str, is_senet: bool, note: str) -> list[dict]:
    """Figures 4.7 / 4.8 "Ours (MTL+SEResnet)": the proposed MTL network's CelebA test accuracies (gender,
    Young/Old). Another backbone gets its own row (``Ours (MTL+ResNet-50)``)."""
    if exp.dataset != "celeba":
        return []
    row = "Ours (MTL+SEResnet)" if is_senet else f"Ours (MTL+{label})"
    test = metrics["test"]
    cells = []
    if "gender" in test:
        cells.append(_cell("Figure 4.7", row, "Gender Accuracy", 100 * test["gender"]["accuracy"], "percent", note))
    if "age" in test:
        cells.append(_cell("Figure 4.8", row, "Age Accuracy", 100 * test["age"]["accuracy"], "percent", note))
    return cells


def convergence_time_cells(exp, seconds: float, device: str, note: str) -> list[dict]:
    """Section 3.6.2: how long the proposed MTL network took to converge (the thesis: 2-3 hours on UTKFace, 6-7 on
    CelebA, one GTX 1080 Ti). One run gives one duration, so min and max are both that run's hours."""
    row = "UTKFace" if exp.dataset == "utkface" else "CelebA"
    text = "; ".join(x for x in (note, f"one run's training time until Early Freeze ended it, on {device}") if x)
    hours = float(seconds) / 3600.0
    return [_cell("Section 3.6.2", row, "convergence time min", hours, "hours", text),
            _cell("Section 3.6.2", row, "convergence time max", hours, "hours", text)]


def section41_cells(exp, samples, data_dir, note: str) -> list[dict]:
    """Section 4.1 from the data read: UTKFace faces and their largest age; CelebA attribute rows and the number
    of attributes its label file names (raw data only: prepared data keep two of them)."""
    frame = samples.frame
    if exp.dataset == "utkface":
        return [_cell("Section 4.1", "UTKFace", "images", len(frame), "count", note),
                _cell("Section 4.1", "UTKFace", "max age", float(frame["age"].max()), "years", note)]
    cells = [_cell("Section 4.1", "CelebA", "images", samples.files_seen, "count",
                   "; ".join(x for x in (note, "rows of list_attr_celeba.txt read") if x))]
    attr_file = Path(data_dir) / "list_attr_celeba.txt" if data_dir is not None else None
    if attr_file is not None and attr_file.is_file():
        with open(attr_file, encoding="utf-8", errors="replace") as handle:
            handle.readline()
            names = handle.readline().split()
        cells.append(_cell("Section 4.1", "CelebA", "attributes", len(names), "count",
                           "; ".join(x for x in (note, "attribute names in list_attr_celeba.txt") if x)))
    return cells


# ----------------------------------------------------------------------------------------------- records


def thesis_configuration(exp, experiment_class):
    """The thesis's own configuration of the experiment ``exp`` runs: its dataset, backbone, method and ablation
    (average loss, early stopping, a lambda of the Table 5.5 sweep are experiments of the thesis), every other
    setting as the thesis (or, where it states none, our documented default) has it."""
    lam = exp.lam if any(math.isclose(exp.lam, v) for v in THESIS_LAMBDAS) else experiment_class().lam
    return experiment_class(dataset=exp.dataset, backbone=exp.backbone, method=exp.method, loss=exp.loss,
                            early_freeze=exp.early_freeze, lam=lam)


def record_deviations(exp, choice, experiment_class) -> dict:
    """The record's ``deviations``: fields of ``exp`` unlike the thesis's configuration of the same experiment, and
    ``backbone_used`` when the thesis backbone was substituted (ImageNet ResNet-50, random weights, the smoke
    stand-in). The tables keep such runs in rows of their own."""
    from agegender.records import deviations_from

    ignore = ("seed", "method", "precision", "backbone_weights", "imagenet_weights")
    out = deviations_from(exp, thesis_configuration(exp, experiment_class), ignore=ignore)
    if choice.substituted:  # also the requested architecture without its face-recognition weights
        out["backbone_used"] = choice.used + ("" if choice.weights else " (random weights)")
    return out


def relative(path, base) -> str:
    """``path`` relative to ``base`` (POSIX form): records name their files so, never by a machine path."""
    return Path(os.path.relpath(Path(path).resolve(), Path(base).resolve())).as_posix()


def portable_config(config: dict) -> dict:
    """The record's configuration with weight files named by file name and fingerprint, not their path."""
    from agegender.data.provenance import fingerprint_files, relative_data_path

    out = dict(config)
    for key in ("backbone_weights", "imagenet_weights"):
        value = out.get(key)
        if value not in (None, "imagenet", "none") and Path(str(value)).exists():
            out[key] = {"file": Path(str(value)).name, **fingerprint_files(value)}
    backbone = out.get("backbone")
    if isinstance(backbone, dict) and backbone.get("weights") not in (None, "imagenet"):
        weights = str(backbone["weights"])
        out["backbone"] = {**backbone, "weights": Path(weights).name,
                           "note": str(backbone.get("note", "")).replace(weights, Path(weights).name)}
    if out.get("coral_csv_dir") and os.path.isabs(str(out["coral_csv_dir"])):
        out["coral_csv_dir"] = relative_data_path(out["coral_csv_dir"])
    return out

