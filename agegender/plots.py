"""Figures every reproduction draws: learning curves, confusion matrices, predicted-vs-true age.

All functions write a PNG (matplotlib, Agg backend) and return its path.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display needed), for reproductions' own figures."""
    return plt


def save_figure(fig, path) -> Path:
    """Lay out, write ``fig`` as a PNG at ``path`` (folders created), close it; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def learning_curves(history: list[dict], path, title: str = "") -> Path:
    """One panel per metric family (loss, accuracy, mae...): train solid, validation dashed."""
    keys = sorted({k for h in history for k in h} - {"epoch", "learning_rate"})
    families = sorted({k.removeprefix("val_") for k in keys})
    cols = min(4, max(len(families), 1))
    rows = -(-max(len(families), 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.8 * rows), squeeze=False)
    for ax in axes.flat[len(families):]:
        ax.axis("off")
    epochs = [h["epoch"] for h in history]
    for ax, family in zip(axes.flat, families):
        for key, style in ((family, "-"), (f"val_{family}", "--")):
            if key in keys:
                ax.plot(epochs, [h.get(key, np.nan) for h in history], style, marker="o", ms=3, label=key)
        ax.set_title(family, fontsize=9)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def confusion_matrix(matrix, labels, path, title: str = "") -> Path:
    import textwrap

    matrix = np.asarray(matrix)
    title = "\n".join(textwrap.wrap(title, 30))  # a small matrix's title would be cut at the figure's edges
    fig, ax = plt.subplots(figsize=(max(2.6, 1.2 + 0.55 * len(labels)), 1.3 + 0.5 * len(labels) + 0.15 * title.count("\n")))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=7,
                color="white" if v > matrix.max() / 2 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    return save_figure(fig, path)


def age_scatter(true_age, predicted_age, path, title: str = "") -> Path:
    true_age, predicted_age = np.asarray(true_age).ravel(), np.asarray(predicted_age).ravel()
    fig, ax = plt.subplots(figsize=(3.6, 3.4))
    ax.scatter(true_age, predicted_age, s=6, alpha=0.5)
    lim = [0, max(float(np.max(true_age, initial=1)), float(np.max(predicted_age, initial=1))) * 1.05]
    ax.plot(lim, lim, "k--", lw=0.8)
    ax.set_xlim(lim)
    ax.set_ylim(lim)
    ax.set_xlabel("true age (years)")
    ax.set_ylabel("predicted age (years)")
    ax.set_title(title, fontsize=9)
    return save_figure(fig, path)
