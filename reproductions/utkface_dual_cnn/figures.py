"""Speziali's figures (Figs. 1-4, 7-19, Grad-CAM), drawn with matplotlib on the Agg backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from reproductions.utkface_dual_cnn.config import GENDER_LABELS

def _plt():
    from agegender.plots import pyplot

    return pyplot()


def _save(fig, path) -> Path:
    from agegender.plots import save_figure

    return save_figure(fig, path)


def plot_split(split, folder) -> dict[str, Path]:
    """Figs. 1-4: age histograms, gender histograms per split, train vs validation age CDFs with the KS gap."""
    plt = _plt()
    parts = {name: split.part(name) for name in ("train", "val", "test")}
    paths = {}
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ages = np.concatenate([p["age"].to_numpy() for p in parts.values()])
    bins = np.arange(0, max(float(ages.max()), 1.0) + 6, 5)
    for name, part in parts.items():
        ax.hist(part["age"], bins=bins, histtype="step", lw=1.5, label=f"{name} (n={len(part)})")
    ax.set_xlabel("age (years)")
    ax.set_ylabel("faces")
    ax.set_title("Age distribution per split (cf. Fig. 1)", fontsize=9)
    ax.legend(fontsize=7)
    paths["fig01_age_histogram"] = _save(fig, Path(folder) / "fig01_age_histogram.png")

    fig, axes = plt.subplots(1, 2, figsize=(7, 3))
    trainval = np.concatenate([parts["train"]["gender"], parts["val"]["gender"]])
    counts = [int((trainval == g).sum()) for g in (0, 1)]
    axes[0].bar(GENDER_LABELS, counts, color=["tab:blue", "tab:orange"])
    axes[0].set_title("70% training set (cf. Fig. 2)", fontsize=9)
    width = 0.38
    for k, name in enumerate(("train", "val")):
        g = parts[name]["gender"].to_numpy()
        share = [float((g == v).mean()) if len(g) else 0.0 for v in (0, 1)]
        axes[1].bar(np.arange(2) + (k - 0.5) * width, share, width, label=name)
    axes[1].set_xticks(range(2), GENDER_LABELS)
    axes[1].set_ylabel("share")
    axes[1].set_title("new training vs validation set (cf. Fig. 3)", fontsize=9)
    axes[1].legend(fontsize=7)
    paths["fig02_03_gender_histograms"] = _save(fig, Path(folder) / "fig02_03_gender_histograms.png")

    fig, ax = plt.subplots(figsize=(5, 3.2))
    a, b = np.sort(parts["train"]["age"].to_numpy(float)), np.sort(parts["val"]["age"].to_numpy(float))
    for values, name in ((a, "train"), (b, "validation")):
        ax.step(values, np.arange(1, len(values) + 1) / len(values), where="post", label=name)
    ks = split.info.get("ks_train_val", {})
    title = "Age CDF, new training vs validation set (cf. Fig. 4)"
    if ks:
        title += f"\nKS statistic {ks['statistic']:.3f}, p = {ks['p_value']:.3f} (paper: p ~ 0.38)"
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("age (years)")
    ax.set_ylabel("cumulative share")
    ax.legend(fontsize=7)
    paths["fig04_age_cdf"] = _save(fig, Path(folder) / "fig04_age_cdf.png")
    return paths


def plot_iteration_loss(rows: list[dict], path, title: str) -> Path:
    """Figs. 7-9: the training loss at every iteration (batch), with the dual net's two parts."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    it = [r["iteration"] for r in rows]
    ax.plot(it, [r.get("loss", np.nan) for r in rows], lw=1, label="loss")
    if any("age_loss" in r for r in rows):
        ax.plot(it, [r.get("gender_loss", np.nan) for r in rows], lw=0.8, label="gender CE")
        ax.plot(it, [0.01 * r.get("age_loss", np.nan) if "age_loss" in r else np.nan for r in rows], lw=0.8,
                label="0.01 x age MSE")
        ax.legend(fontsize=7)
    values = np.array([r.get("loss", np.nan) for r in rows], dtype=float)
    if np.isfinite(values).any() and np.nanmax(values) > 50 * max(np.nanmedian(values), 1e-9):
        ax.set_yscale("log")  # a first-epoch spike would flatten the rest
    ax.set_xlabel("iteration")
    ax.set_ylabel("training loss")
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


def plot_epoch_metrics(histories: dict, path, title: str) -> Path:
    """Figs. 10-11: gender accuracy and age R² per epoch, training (solid) and validation (dashed)."""
    plt = _plt()
    panels = [(task, key) for task, key in (("gender", "accuracy"), ("age", "r2"))
              if any(_metric(h, task, key) for h in histories.values())]
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(4 * max(len(panels), 1), 3.2), squeeze=False)
    for ax, (task, key) in zip(axes[0], panels):
        for label, history in histories.items():
            name = _metric(history, task, key)
            if not name:
                continue
            epochs = [h["epoch"] for h in history]
            ax.plot(epochs, [h.get(name, np.nan) for h in history], "-o", ms=3, label=f"{label} train")
            ax.plot(epochs, [h.get(f"val_{name}", np.nan) for h in history], "--o", ms=3, label=f"{label} validation")
        ax.set_xlabel("epoch")
        ax.set_title(f"{task} {'accuracy' if key == 'accuracy' else 'R²'}", fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def _metric(history: list[dict], task: str, key: str) -> str | None:
    """The history key of a metric: ``gender_accuracy`` in a two-output model, ``accuracy`` in a one-output one."""
    names = {k for h in history for k in h}
    for name in (f"{task}_{key}", key):
        if name in names:
            return name
    return None


def plot_first_n(true_age, predicted_age, n: int, path, title: str) -> Path:
    """Figs. 14-15: predicted and true age for the first ``n`` test faces."""
    plt = _plt()
    true_age, predicted_age = np.ravel(true_age)[:n], np.ravel(predicted_age)[:n]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    x = np.arange(1, len(true_age) + 1)
    ax.plot(x, true_age, "-o", ms=3, label="true age")
    ax.plot(x, predicted_age, "-s", ms=3, label="predicted age")
    ax.set_xlabel(f"test face (first {len(true_age)})")
    ax.set_ylabel("age (years)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_face(image, path, title: str) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(2.6, 2.8))
    ax.imshow(np.clip(np.asarray(image), 0, 255).astype("uint8"))
    ax.set_axis_off()
    ax.set_title(title, fontsize=8)
    return _save(fig, path)


def plot_heatmaps(maps: dict, image, path, title: str) -> Path:
    """Figs. 17-19: the face and the mean activation map of every convolution layer."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(maps) + 1, figsize=(2.2 * (len(maps) + 1), 2.6))
    axes[0].imshow(np.clip(np.asarray(image), 0, 255).astype("uint8"))
    axes[0].set_title("input", fontsize=8)
    for ax, (name, heat) in zip(axes[1:], maps.items()):
        ax.imshow(heat, cmap="jet", vmin=0, vmax=1)
        ax.set_title(f"{name} {heat.shape[0]}x{heat.shape[1]}", fontsize=8)
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def plot_gradcam(image, cams: dict, path) -> Path:
    """Grad-CAM overlays: one panel per (network, output)."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(cams) + 1, figsize=(2.3 * (len(cams) + 1), 2.7))
    face = np.clip(np.asarray(image), 0, 255).astype("uint8")
    axes[0].imshow(face)
    axes[0].set_title("validation face", fontsize=8)
    for ax, (label, cam) in zip(axes[1:], cams.items()):
        ax.imshow(face)
        ax.imshow(cam, cmap="jet", alpha=0.45, vmin=0, vmax=1)
        ax.set_title(label, fontsize=8)
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle("Grad-CAM at the last convolution (block4_conv)", fontsize=9)
    return _save(fig, path)
