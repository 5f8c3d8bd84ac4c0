"""Gu & Yang's figures: bars of validation age accuracy (Figs. 4, 6, 7, 9) and the distributions (Figs. 5, 8)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from reproductions.efficientnet_age_groups.config import (DATASETS, GROUPS, LABEL, SOURCE_TASK_SETS, SOURCES,
                                                          TASK_ROW, GuYangExperiment)

def _plt():
    from agegender.plots import pyplot

    return pyplot()


def _save(fig, path) -> Path:
    from agegender.plots import save_figure

    return save_figure(fig, path)


def bar_figure(values: dict, rows: list[str], columns: list[str], path, title: str, ylabel: str = "validation "
               "age accuracy", baselines: dict | None = None, fmt: str = "{:.2f}", ylim=(0, 1.05)) -> Path:
    """Grouped bars: ``rows`` on the x axis, one bar colour per column; missing values leave a gap (labelled
    "not run"); ``baselines[(row, column)]`` draws a black tick (the majority-class rate)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(5.0, 0.3 * len(rows) * max(len(columns), 1) + 2), 3.8))
    width = 0.8 / max(len(columns), 1)
    x = np.arange(len(rows))
    for j, column in enumerate(columns):
        offset = (j - (len(columns) - 1) / 2) * width
        heights = [values.get((row, column), np.nan) for row in rows]
        bars = ax.bar(x + offset, np.nan_to_num(heights), width, label=column)
        for xi, h, bar in zip(x, heights, bars):
            text = "not run" if not np.isfinite(h) else fmt.format(h)
            ax.text(bar.get_x() + bar.get_width() / 2, 0 if not np.isfinite(h) else h, text, ha="center",
                    va="bottom", fontsize=6, rotation=90 if not np.isfinite(h) else 0)
            base = (baselines or {}).get((rows[xi], column))
            if base is not None and np.isfinite(h):
                ax.plot([bar.get_x(), bar.get_x() + bar.get_width()], [base, base], "k-", lw=1.2)
    if baselines:
        ax.plot([], [], "k-", lw=1.2, label="majority class")  # legend entry for the ticks
    ax.set_xticks(x, rows, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel(ylabel, fontsize=8)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, ncol=min(len(columns), 3))
    return _save(fig, path)


def study_figures(results: list[dict], dists: dict, folder: Path, exp: GuYangExperiment) -> dict[str, Path]:
    """Figs. 4, 6, 7, 9 (bars of accuracy with the majority tick) and Figs. 5, 8 (distributions)."""
    from agegender.data.age_groups import age_group_labels
    from agegender.models.efficientnet_groups import BACKBONES, get_backbone

    paths = {}
    columns = [f"{n} age classes" for n in GROUPS]
    for figure, source, name in (("Figure 4", "imdb_wiki", "fig04_imdb_wiki"), ("Figure 6", "utkface",
                                                                                  "fig06_utkface")):
        rows, values, base = [], {}, {}
        for bb in BACKBONES.values():
            for task_set in SOURCE_TASK_SETS[source]:
                rows.append(f"{bb.label} {TASK_ROW[task_set]}")
        for r in results:
            if r["source"] == source:
                key = (f"{get_backbone(r['backbone']).label} {TASK_ROW[r['task_set']]}", f"{r['groups']} age classes")
                values[key], base[key] = r["accuracy"], r.get("majority")
        if values:
            rows = [row for row in rows if any(k[0] == row for k in values)]
            paths[name] = bar_figure(values, rows, columns, folder / f"{name}.png",
                                     f"{LABEL[source]}: validation age accuracy (cf. {figure})", baselines=base)
    rows, values, base = [], {}, {}
    for bb in BACKBONES.values():
        for source in DATASETS:
            rows.append(f"{bb.label} {LABEL[source]}")
    for r in results:
        if r["source"] in DATASETS and r["task_set"] == "age":
            key = (f"{get_backbone(r['backbone']).label} {LABEL[r['source']]}", f"{r['groups']} age classes")
            values[key], base[key] = r["accuracy"], r.get("majority")
    if values:
        rows = [row for row in rows if any(k[0] == row for k in values)]
        paths["fig07_datasets"] = bar_figure(values, rows, columns, folder / "fig07_datasets.png",
                                             "Age single-task models, IMDB-WIKI vs UTKFace (cf. Figure 7)",
                                             baselines=base)
    rows = [f"{LABEL[s]} {TASK_ROW[t]}" for s in SOURCES for t in SOURCE_TASK_SETS[s]]
    fig9 = get_backbone(exp.figure9_backbone)
    values, base = {}, {}
    for r in results:
        if r["groups"] == 3 and r["backbone"] == fig9.key:
            key = (f"{LABEL[r['source']]} {TASK_ROW[r['task_set']]}", "3 age classes")
            values[key], base[key] = r["accuracy"], r.get("majority")
    if values:
        paths["fig09_sources_3_groups"] = bar_figure(values, rows, ["3 age classes"],
                                                     folder / "fig09_sources_3_groups.png",
                                                     f"3 age classes, {fig9.label}, by data source and task set "
                                                     "(cf. Figure 9)", baselines=base)
    if (dists.get("imdb_wiki") or {}).get(10):
        labels = age_group_labels(10)
        values = {(label, f"{LABEL[d]} images"): dists[d][10][label] for d in DATASETS if (dists.get(d) or {}).get(10)
                  for label in labels}
        cols = [f"{LABEL[d]} images" for d in DATASETS if (dists.get(d) or {}).get(10)]
        paths["fig05_imdb_wiki_10_groups"] = bar_figure(values, labels, cols, folder / "fig05_imdb_wiki_10_groups.png",
                                                        "Images per age class, 10 classes (cf. Figure 5)",
                                                        ylabel="images in the sample", fmt="{:,.0f}", ylim=None)
    have5 = [d for d in DATASETS if (dists.get(d) or {}).get(5)]
    if have5:
        labels = age_group_labels(5)
        values = {}
        for d in have5:
            total = max(sum(dists[d][5].values()), 1)
            values.update({(label, LABEL[d]): 100.0 * dists[d][5][label] / total for label in labels})
        paths["fig08_5_groups_distribution"] = bar_figure(values, labels, [LABEL[d] for d in have5],
                                                          folder / "fig08_5_groups_distribution.png",
                                                          "Share of images per age class, 5 classes (cf. Figure 8)",
                                                          ylabel="share of the sample (%)", fmt="{:.1f}",
                                                          ylim=None)
    return paths
