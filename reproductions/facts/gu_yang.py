"""Gu & Yang (paper 002): the data counts that UTKFace and the WIKI label file give, without training.

- **Section 5.1** (IMDB-WIKI): "There are total 20,000 images, and each image has age and gender
  labels ... 16,000 ... for training and 4,000 ... for validation". The label file here is the WIKI
  half (``imdb_wiki/wiki_crop/wiki.mat``; the IMDB half is absent): the rows the paper could
  use are those aged 1-80 (Section 2.1's range) with a known gender and a detected face (finite
  ``face_score``: no image without a face is a face crop); the seeded ``gu_yang`` split
  (:func:`agegender.data.splits.make_split`) draws the 20,000 / 16,000 / 4,000 sample from them.
  The counts show that the data hold such a sample (the eligible rows are in the note); the
  sizes themselves are the protocol's.
- **Section 5.2** (UTKFace): the same on ``utkface/full``, rows aged 1-80 with gender and race
  ("each image has age, gender and race labels").
- **Section 5.4** (multi-source): the two 20,000-image samples.
- **Figure 5** (10 age groups, IMDB-WIKI) and **Figure 8** (5 age groups, both datasets): the
  group counts / shares of the samples (the paper draws them, no numbers printed), and the two
  data claims of the ``Claims`` table they support (classes 1-8, 9-16, 65-72 under 1,000 images;
  half of the data in 24-39 and ~1% in the youngest class), judged by
  :func:`reproductions.efficientnet_age_groups.evaluate_claims` on the data alone.
- **Section 3 settings**: epochs and batch size of ``GuYangExperiment``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from reproductions.facts.common import NO_DATA, cell, relative_figure, save_figure, setting

PAPER = "gu_yang"
LABEL = {"imdb_wiki": "IMDB-WIKI", "utkface": "UTKFace"}


def _sample(frame, exp):
    from agegender.data.splits import make_split

    return make_split(frame, "gu_yang", seed=exp.seed, n=exp.n_images, n_train=exp.n_train)


def dataset_facts(dataset: str, root: Path, figures: Path, out: Path) -> dict:
    """Sections 5.1 / 5.2 / 5.4 and Figures 5 / 8 of one dataset (``imdb_wiki`` or ``utkface``)."""
    from agegender.data.provenance import describe_data
    from reproductions.efficientnet_age_groups import (GuYangExperiment, claim_cells, distribution,
                                                       evaluate_claims)

    exp = GuYangExperiment()
    if dataset == "imdb_wiki":
        from agegender.data.imdb_wiki import read_imdb_wiki

        folder = root / "imdb_wiki" / "wiki_crop" / "wiki.mat"
        samples = read_imdb_wiki(root / "imdb_wiki", which="wiki")
        frame = samples.frame
        steps = [("aged 1-80", frame["age"].between(1, 80)), ("with a known gender", frame["gender"] >= 0),
                 ("with a detected face (finite face_score)", np.isfinite(frame["face_score"]))]
        section, source = "Section 5.1", "the WIKI half of IMDB-WIKI (wiki.mat; the IMDB half is not here)"
    else:
        from agegender.data.utkface import read_utkface

        folder = root / "utkface" / "full"
        samples = read_utkface(folder)
        frame = samples.frame
        steps = [("aged 1-80", frame["age"].between(1, 80)), ("with a known gender", frame["gender"] >= 0),
                 ("with a known race", frame["race"] >= 0)]
        section, source = "Section 5.2", "the full UTKFace set"
    keep = np.ones(len(frame), dtype=bool)
    funnel = [f"{len(frame):,} readable rows"]
    for text, mask in steps:
        keep &= np.asarray(mask)
        funnel.append(f"{int(keep.sum()):,} {text}")
    eligible = frame[keep].reset_index(drop=True)
    split = _sample(eligible, exp)
    counts = split.counts()
    note = (f"seeded sample (seed {exp.seed}) of {source}: " + ", ".join(funnel)
            + f"; the sizes are the protocol's ({exp.n_images:,} / {exp.n_train:,}), drawn from the eligible rows")
    label = LABEL[dataset]
    cells = [cell(section, label, "images", counts["train"] + counts["val"], "count", note),
             cell(section, label, "train", counts["train"], "count", note),
             cell(section, label, "validation", counts["val"], "count", note),
             cell("Section 5.4", "multi-source", f"{label} images", counts["train"] + counts["val"], "count",
                  note + ("; the multi-source model uses only their age and gender labels" if dataset == "imdb_wiki"
                          else "; the multi-source model uses only their race label"))]
    dists = {n: distribution(split, n) for n in (5, 10)}
    sample_note = f"the {counts['train'] + counts['val']:,}-image sample of {source}; drawn as bars in the paper"
    if dataset == "imdb_wiki":
        for group, count in dists[10].items():
            cells.append(cell("Figure 5", group, "IMDB-WIKI images", count, "count", sample_note))
    total = max(sum(dists[5].values()), 1)
    for group, count in dists[5].items():
        cells.append(cell("Figure 8", group, label, 100.0 * count / total, "percent",
                          sample_note + f"; {count:,} images"))
    claims = {}
    if dataset == "imdb_wiki":
        claims = {k: v for k, v in evaluate_claims([], {"imdb_wiki": dists}).items() if k.startswith("imbalance")}
        cells += claim_cells(claims, f"on {source}")  # the note says the verdict and its evidence
    paths = [_figure(dataset, dists, figures / f"gu_yang_{dataset}_age_groups.png")]
    data = describe_data(dataset, folder, kind="real",
                         content="labels only (wiki.mat)" if dataset == "imdb_wiki" else "images")
    config = {"protocol": "gu_yang", "seed": exp.seed, "n": exp.n_images, "n_train": exp.n_train,
              "eligible": [text for text, _ in steps]}
    metrics = {"readable_rows": len(frame), "eligible_rows": len(eligible), "sample": counts,
               "groups": {str(n): d for n, d in dists.items()},
               "claims": {k: {"verdict": v["verdict"], "evidence": v["evidence"]} for k, v in claims.items()}}
    return {"experiment": f"gu_yang_{dataset}", "data": data, "config": config, "cells": cells,
            "metrics": metrics, "figures": [relative_figure(p, out) for p in paths]}


def _figure(dataset: str, dists: dict, path: Path) -> Path:
    """Figures 5 / 8 of one dataset: images per age group of the sample, 10 and 5 groups."""
    from agegender.plots import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, n in zip(axes, (10, 5)):
        labels = list(dists[n])
        ax.bar(range(len(labels)), [dists[n][k] for k in labels])
        ax.set_xticks(range(len(labels)), labels, rotation=45, fontsize=7)
        ax.set_title(f"{n} age groups", fontsize=9)
        ax.set_ylabel("images")
    fig.suptitle(f"Gu & Yang Figures 5 / 8: {LABEL[dataset]} sample by age group", fontsize=9)
    return save_figure(fig, path)


def settings() -> dict:
    """Section 3: epochs and batch size of ``GuYangExperiment``."""
    from reproductions.efficientnet_age_groups import GuYangExperiment

    exp = GuYangExperiment()
    src = "reproductions.efficientnet_age_groups.GuYangExperiment"
    cells = [setting("Section 3", "training", "epochs", exp.epochs, "epochs", f"{src}.epochs"),
             setting("Section 3", "training", "batch size", exp.batch_size, "count", f"{src}.batch_size")]
    return {"experiment": "gu_yang_settings", "data": dict(NO_DATA), "config": {"source": src}, "cells": cells}


def experiments(root: Path, figures: Path, out: Path) -> list:
    """Every Gu & Yang experiment of the facts command, as functions run one by one."""
    return [lambda: dataset_facts("imdb_wiki", root, figures, out),
            lambda: dataset_facts("utkface", root, figures, out), settings]
