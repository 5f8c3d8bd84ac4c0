"""Jørgensen's Figures 4-7: the learning curves of every fold in one figure."""

from __future__ import annotations

import math
from pathlib import Path

from reproductions.adience_levi.config import Experiment


def _fold_figure(exp: Experiment, results: list[dict], path: Path) -> Path:
    """Learning curves of every fold in one figure, like the paper's Figures 4-7."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in ("loss", *(f"{t}_accuracy" for t in exp.tasks))
            if any(k in h for r in results for h in r["history"])]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.4 * len(keys), 3.0), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for i, r in enumerate(results):
            epochs = [h["epoch"] for h in r["history"]]
            color = f"C{i}"
            ax.plot(epochs, [h.get(key, math.nan) for h in r["history"]], "-", color=color, label=f"fold {r['fold']}")
            ax.plot(epochs, [h.get(f"val_{key}", math.nan) for h in r["history"]], "--", color=color)
        ax.set_title(f"{key} (train —, validation --)", fontsize=8)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    fig.suptitle(f"Jørgensen Figure {exp.figure}: {exp.row}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
