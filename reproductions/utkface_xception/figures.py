"""Dey & Aggarwal's figures (Figs. 1-3, learning curves, confusion matrices), matplotlib on Agg."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from reproductions.utkface_xception.config import GENDER_LABELS, RACE_LABELS, TASK_LABELS, DeyExperiment
from reproductions.utkface_xception.paper import table_row

def _plt():
    from agegender.plots import pyplot

    return pyplot()


def _save(fig, path) -> Path:
    from agegender.plots import save_figure

    return save_figure(fig, path)


def _describe(age_years: float, ethnicity: int, gender: int) -> str:
    return f"{age_years:.0f}, {GENDER_LABELS[gender][0]}, {RACE_LABELS[ethnicity]}"


def prediction_grid(model, dataset, n: int, max_age: float) -> dict:
    """The first ``n`` test faces (0-255), their true and predicted (age years, ethnicity, gender)."""
    images, truth = [], {"age": [], "ethnicity": [], "gender": []}
    for batch, labels, _ in dataset:
        images.append(np.asarray(batch))
        for task in truth:
            truth[task].append(np.asarray(labels[task]))
        if sum(len(b) for b in images) >= n:
            break
    images = np.concatenate(images)[:n]
    truth = {k: np.concatenate(v)[:n] for k, v in truth.items()}
    out = model(images, training=False)
    return {"images": images,
            "true": [(float(a) * max_age, int(e.argmax()), int(g.argmax()))
                     for a, e, g in zip(truth["age"].ravel(), truth["ethnicity"], truth["gender"])],
            "predicted": [(float(a) * max_age, int(e.argmax()), int(g.argmax()))
                          for a, e, g in zip(np.ravel(out["age"]), np.asarray(out["ethnicity"]),
                                             np.asarray(out["gender"]))]}


def plot_predictions(grid: dict, path, title: str) -> Path:
    """Fig. 1: test faces, predicted labels above (age, gender, ethnicity) and true labels below."""
    plt = _plt()
    n = len(grid["images"])
    cols = min(5, max(n, 1))
    rows = max(1, -(-n // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.1 * cols, 2.5 * rows), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, image, pred, true in zip(axes.flat, grid["images"], grid["predicted"], grid["true"]):
        ax.set_axis_on()
        ax.imshow(np.clip(image, 0, 255).astype("uint8"))
        ax.set_xticks([])
        ax.set_yticks([])
        right = pred[1:] == true[1:]
        ax.set_title(_describe(*pred), fontsize=7, color="tab:green" if right else "tab:red")
        ax.set_xlabel(_describe(*true), fontsize=7)
    fig.suptitle(f"{title}\npredicted (above) / true (below): age, gender, ethnicity", fontsize=9)
    return _save(fig, path)


def plot_history(history: list[dict], keys: list[tuple[str, str]], path, title: str, ylabel: str) -> Path:
    """Figs. 2-3: one panel per (history key, title), training solid and validation dashed."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2), squeeze=False)
    epochs = [h["epoch"] for h in history]
    for ax, (key, label) in zip(axes[0], keys):
        ax.plot(epochs, [h.get(key, np.nan) for h in history], "-o", ms=3, label="train")
        ax.plot(epochs, [h.get(f"val_{key}", np.nan) for h in history], "--o", ms=3, label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.set_title(label, fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def draw_figures(exp: DeyExperiment, model, history: list[dict], metrics: dict, datasets: dict, folder) -> dict:
    """Figs. 1-3, every learning curve and the test confusion matrices of one backbone."""
    from agegender.plots import confusion_matrix, learning_curves

    folder = Path(folder)
    row = table_row(exp)
    paths = {"fig01_test_predictions": plot_predictions(
        prediction_grid(model, datasets["test"], exp.grid_faces, exp.max_age), folder / "fig01_test_predictions.png",
        f"{row}: test faces (cf. Fig. 1)")}
    if history:
        paths["fig02_accuracy"] = plot_history(
            history, [("ethnicity_accuracy", "ethnicity (race)"), ("gender_accuracy", "gender")],
            folder / "fig02_accuracy.png", f"{row}: training vs validation accuracy (cf. Fig. 2)", "accuracy")
        paths["fig03_age_mae"] = plot_history(
            history, [("age_mae", f"age (MAE of age / {exp.max_age:g}; x {exp.max_age:g} = years)")],
            folder / "fig03_age_mae.png", f"{row}: training vs validation age MAE (cf. Fig. 3)", "MAE (normalised)")
        paths["learning_curves"] = learning_curves(history, folder / "learning_curves.png", row)
    for task, names in TASK_LABELS.items():
        paths[f"confusion_{task}"] = confusion_matrix(metrics["test"][f"{task}_report"]["confusion_matrix"],
                                                      list(names), folder / f"confusion_{task}.png",
                                                      f"{row}: {task}, test")
    return {k: str(v) for k, v in paths.items()}
