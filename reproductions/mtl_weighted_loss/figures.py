"""Sundriyal (paper 004): the figures of :mod:`reproductions.mtl_weighted_loss` (loss weights per epoch, Figures
4.1, 5.1 and 5.2)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    from agegender.plots import pyplot

    return pyplot()


def _save(fig, path) -> Path:
    from agegender.plots import save_figure

    return save_figure(fig, path)


def plot_loss_weights(history: list[dict], tasks, path, title: str) -> Path:
    """w_i per epoch (the learned loss weights, Sec. 3.4)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    epochs = [h["epoch"] for h in history]
    for task in tasks:
        ax.plot(epochs, [h.get(f"loss_weight_{task}", np.nan) for h in history], "-o", ms=3, label=f"w_{task}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss weight")
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, path)


def _loss_panel(ax, history: list[dict], tasks, events: list[dict], title: str):
    epochs = [h["epoch"] for h in history]
    for k, task in enumerate(tasks):
        color = f"C{k}"
        ax.plot(epochs, [h.get(f"{task}_loss", np.nan) for h in history], "-", color=color, lw=1.2,
                label=f"{task} train")
        ax.plot(epochs, [h.get(f"val_{task}_loss", np.nan) for h in history], "--", color=color, lw=1.2,
                label=f"{task} validation")
    for event in events:
        if event.get("epoch"):
            ax.axvline(event["epoch"], color="k", lw=0.7, ls=":")
            ax.text(event["epoch"], ax.get_ylim()[1], f" {event['task']}", fontsize=6, va="top")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=6)


def plot_loss_vs_epoch(history: list[dict], tasks, events: list[dict], path, title: str) -> Path:
    """Figures 5.1 / 5.2: per-task training and validation loss per epoch; dotted lines at convergences."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    _loss_panel(ax, history, tasks, events, title)
    return _save(fig, path)


def plot_freeze_comparison(runs: dict, tasks, path) -> Path:
    """Figures 5.1 and 5.2 side by side: Early Freeze vs early stopping of the converged task."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
    for ax, (label, (history, events)) in zip(axes, runs.items()):
        _loss_panel(ax, history, tasks, events, label)
    return _save(fig, path)


def plot_age_distribution(frame, path) -> Path:
    """Figure 4.1: UTKFace age distribution per gender."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    bins = np.arange(0, max(float(frame["age"].max()), 1.0) + 6, 5)
    for code, label in ((0, "Male"), (1, "Female")):
        ax.hist(frame.loc[frame["gender"] == code, "age"], bins=bins, histtype="step", lw=1.5, label=label)
    ax.set_xlabel("age (years)")
    ax.set_ylabel("faces")
    ax.set_title("UTKFace age distribution per gender (cf. Fig. 4.1)", fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, path)
