"""Dey & Aggarwal (paper 003): the cells that need no training, from the real UTKFace files and the built model.

- **Section 3.1** (data): the largest age and the number of race classes in the file names.
- **Section 3.3** (EDA, data): the images read, the ages kept (10-65: the smallest and largest age
  left after the filter of Section 4.1), the mean age of all images; and the distributions the
  paper draws without numbers (gender, race, race per gender, age), as extra cells of
  ``Section 3.3`` and a figure (``results/figures/facts/dey_aggarwal_eda.png``). The paper's
  orderings ("male higher than female"; "'white' most, followed by 'Indians', the least 'others'")
  are checked in the notes.
- **Section 4.1** (data): the split of the faces aged 10-65 in the paper's proportions
  (:func:`agegender.data.splits.make_split`, protocol ``dey``, seed 0) and their total (the paper's
  three parts sum to 18,603).
- **Sections 3.2 / 3.5** (model build): the input size and the head width read off
  :func:`agegender.models.multihead.build_multihead` (Xception, the paper's best backbone, weights None).
- **Section 4.2 settings**: batch size and epochs of ``DeyExperiment``.
"""

from __future__ import annotations

from pathlib import Path

from reproductions.facts.common import NO_DATA, cell, relative_figure, save_figure, setting

PAPER = "dey_aggarwal"
RACES = ("White", "Black", "Asian", "Indian", "Others")
GENDERS = ("Male", "Female")


def _order(counts: dict) -> str:
    return " > ".join(f"{k} {v:,}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))


def data_facts(root: Path, figures: Path, out: Path) -> dict:
    """Sections 3.1, 3.3 and 4.1 from ``<root>/utkface/full``."""
    from agegender.data.provenance import data_kind, describe_data
    from agegender.data.splits import DEY_SPLIT, make_split
    from agegender.data.utkface import read_utkface
    from reproductions.utkface_xception import DeyExperiment

    exp = DeyExperiment()
    folder = root / "utkface" / "full"
    samples = read_utkface(folder)
    frame = samples.frame
    split = make_split(frame, "dey", seed=exp.seed)
    kept, counts = split.frame, split.counts()
    gender = {GENDERS[g]: int((frame["gender"] == g).sum()) for g in (0, 1)}
    race = {RACES[r]: int((frame["race"] == r).sum()) for r in range(len(RACES))}
    race_by_gender = {GENDERS[g]: {RACES[r]: int(((frame["race"] == r) & (frame["gender"] == g)).sum())
                                   for r in range(len(RACES))} for g in (0, 1)}
    no_race = int((frame["race"] < 0).sum())
    read = f"{len(frame):,} faces read from {samples.files_seen:,} UTKFace files"
    ranked = sorted(race, key=race.get, reverse=True)
    race_claim = ("holds" if ranked[0] == "White" and ranked[1] == "Indian" and ranked[-1] == "Others" else
                  f"does not hold: second is {ranked[1]}, not Indian" if ranked[1] != "Indian" else "does not hold")
    per_gender = "; ".join(f"{g}: most {max(d, key=d.get)}, least {min(d, key=d.get)}"
                           for g, d in race_by_gender.items())
    s31, s33, s41 = "Section 3.1", "Section 3.3", "Section 4.1"
    paper_total = sum(DEY_SPLIT.values())
    split_reason = (f"the real files hold {len(kept):,} faces aged 10-65, not the paper's {paper_total:,}; they are "
                    "split in the paper's proportions " + " : ".join(f"{n:,}" for n in DEY_SPLIT.values()))
    cells = [
        cell(s31, "UTKFace", "max age", frame["age"].max(), "years", read),
        cell(s31, "UTKFace", "race classes", frame.loc[frame["race"] >= 0, "race"].nunique(), "count",
             read + f"; {no_race} names lack the race field"),
        cell(s33, "UTKFace", "images", len(frame), "count", read,
             reason=f"the UTKFace folder here holds {samples.files_seen:,} files, every one readable: the paper's "
                    "EDA count is not that of this copy of the set"),
        cell(s33, "UTKFace", "kept age min", kept["age"].min(), "years", "smallest age left by the 10-65 filter"),
        cell(s33, "UTKFace", "kept age max", kept["age"].max(), "years", "largest age left by the 10-65 filter"),
        cell(s33, "UTKFace", "mean age", frame["age"].mean(), "years", read + "; before the 10-65 filter; after it: "
             f"{kept['age'].mean():.2f}"),
        cell(s41, "split", "train", counts["train"], "count", "seed 0", reason=split_reason),
        cell(s41, "split", "validation", counts["val"], "count", "seed 0", reason=split_reason),
        cell(s41, "split", "test", counts["test"], "count", "seed 0", reason=split_reason),
        cell(s41, "split", "total aged 10-65", len(kept), "count",
             f"not in the catalogue: the paper prints no total; its three parts sum to {paper_total:,}"),
    ]
    eda = "EDA distribution the paper draws without numbers"
    cells += [cell(s33, "gender distribution", g, n, "count",
                   f"{eda}; the paper: 'male is higher than female': "
                   + ("holds" if gender["Male"] > gender["Female"] else "does not hold") + f" ({_order(gender)})")
              for g, n in gender.items()]
    cells += [cell(s33, "race distribution", r, n, "count",
                   f"{eda}; the paper: 'white' most, followed by 'Indians', the least 'others': {race_claim} "
                   f"({_order(race)}); {no_race} faces without race")
              for r, n in race.items()]
    cells += [cell(s33, f"race distribution, {g}", r, n, "count",
                   f"{eda}; the paper: similar per gender, 'white' most and 'others' least: {per_gender}")
              for g, d in race_by_gender.items() for r, n in d.items()]
    path = _figure(frame, gender, race, race_by_gender, figures / "dey_aggarwal_eda.png")
    data = describe_data("utkface", folder, kind=data_kind(folder, "utkface", len(frame)))
    config = {"protocol": "dey", "seed": exp.seed, "kept_ages": [exp.min_kept_age, exp.max_kept_age]}
    metrics = {"files_seen": samples.files_seen, "faces": len(frame), "aged_10_65": len(kept), "split": counts,
               "gender": gender, "race": race, "race_by_gender": race_by_gender, "race_unknown": no_race}
    return {"experiment": "dey_aggarwal_utkface", "data": data, "config": config, "cells": cells,
            "metrics": metrics, "figures": [relative_figure(path, out)]}


def _figure(frame, gender: dict, race: dict, race_by_gender: dict, path: Path) -> Path:
    """The EDA of Section 3.3: gender, race, race per gender and the age histogram."""
    import numpy as np

    from agegender.plots import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.2))
    axes[0].bar(list(gender), list(gender.values()))
    axes[0].set_title("gender", fontsize=9)
    axes[1].bar(list(race), list(race.values()))
    axes[1].set_title("race", fontsize=9)
    x = np.arange(len(RACES))
    for offset, (g, d) in zip((-0.2, 0.2), race_by_gender.items()):
        axes[2].bar(x + offset, list(d.values()), width=0.4, label=g)
    axes[2].set_xticks(x, RACES)
    axes[2].legend(fontsize=7)
    axes[2].set_title("race per gender", fontsize=9)
    axes[3].hist(frame["age"], bins=np.arange(0.5, frame["age"].max() + 1.5, 1.0))
    axes[3].axvline(10, color="k", lw=0.8)
    axes[3].axvline(65, color="k", lw=0.8)
    axes[3].set_title("age (kept: 10-65)", fontsize=9)
    for ax in axes[:3]:
        ax.tick_params(axis="x", labelsize=7)
    fig.suptitle(f"Dey & Aggarwal Section 3.3 EDA: {len(frame):,} UTKFace faces", fontsize=9)
    return save_figure(fig, path)


def model_facts() -> dict:
    """Sections 3.2 and 3.5 read off the three-head Xception model at 224x224 (weights None, no data)."""
    import keras

    from agegender.models.multihead import build_multihead

    keras.backend.clear_session()
    model = build_multihead("xception", input_size=224, weights=None)
    units = sorted({layer.units for layer in model.layers if layer.name.endswith(("_dense_1", "_dense_2"))})
    note = "read from build_multihead('xception', 224, weights=None); independent of data"
    cells = [cell("Section 3.2", "input", "image size", int(model.inputs[0].shape[1]), "pixels", note),
             cell("Section 3.5", "heads", "dense units", units[0], "count",
                  note + f"; widths of the six hidden head layers: {units}",
                  reason="the hidden head layers do not share one width")]
    metrics = {"parameters": int(model.count_params())}
    keras.backend.clear_session()
    return {"experiment": "dey_aggarwal_model", "data": dict(NO_DATA),
            "config": {"builder": "build_multihead", "backbone": "xception", "input_size": 224},
            "cells": cells, "metrics": metrics}


def settings() -> dict:
    """Section 4.2: batch size and epochs of ``DeyExperiment``."""
    from reproductions.utkface_xception import DeyExperiment

    exp = DeyExperiment()
    src = "reproductions.utkface_xception.DeyExperiment"
    cells = [setting("Section 4.2", "training", "batch size", exp.batch_size, "count", f"{src}.batch_size"),
             setting("Section 4.2", "training", "epochs", exp.epochs, "epochs", f"{src}.epochs")]
    return {"experiment": "dey_aggarwal_settings", "data": dict(NO_DATA), "config": {"source": src}, "cells": cells}


def experiments(root: Path, figures: Path, out: Path) -> list:
    """Every Dey & Aggarwal experiment of the facts command, as functions run one by one."""
    return [lambda: data_facts(root, figures, out), model_facts, settings]
