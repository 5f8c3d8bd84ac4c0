"""Every split protocol the five papers use, deterministic for a given seed.

``make_split(samples, protocol, seed=..., **options)`` returns a :class:`Split`: the rows the
protocol keeps, each with a ``split`` column (train / val / test), plus ``info`` (counts, the
Kolmogorov-Smirnov test where the paper runs one, rows the protocol could not find). Each
run saves ``Split.save_manifest`` (file, split) beside its record so the split can be checked
and repeated.

==============  ===================================================================================
protocol        what it implements
==============  ===================================================================================
speziali        Speziali (000) Sec. III: 70/30 train/test, then 70/30 train/validation; KS test on
                the ages of train vs validation (paper: p ~= 0.38). Needs age and gender.
adience_folds   Jørgensen (001) Sec. 2.2 / Levi & Hassner: subject-exclusive folds from the fold
                files; ``test_fold`` is the test set, the other four train (``val_fold`` optionally
                held out as validation). ``tasks`` filters rows: ("age", "gender") keeps only rows
                with both labels (the multi-task "joint" filter).
gu_yang         Gu & Yang (002) Sec. 4: ages 1-80, a seeded sample of ``n`` (20,000) split
                ``n_train`` / rest (16,000 / 4,000); smaller datasets keep the 80/20 proportion.
dey             Dey & Aggarwal (003) Sec. 4: ages 10-65, split 9,115 / 3,907 / 5,581 of 18,603 in
                proportion (train / val / test).
coral           Sundriyal (004) Table 4.3 / CORAL: ``utk_train.csv`` and ``utk_test.csv`` from
                ``csv_dir``; train is split 80:20 into train/val (real files: 10,517 / 2,630 /
                3,287). Ages 21-60.
celeba          the official ``list_eval_partition.txt`` partition (``partition`` column).
random          seeded random split with ``fractions`` (train, val, test), default 0.8/0.1/0.1;
                used for IMDB-WIKI.
==============  ===================================================================================
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from agegender import atomic
from agegender.data.samples import Samples, unsafe_path
from agegender.errors import DataError, reading

SPLITS = ("train", "val", "test")


@dataclasses.dataclass
class Split:
    """The rows a protocol keeps, with a ``split`` column, and what the protocol reports."""

    protocol: str
    frame: pd.DataFrame
    info: dict = dataclasses.field(default_factory=dict)

    def part(self, name: str) -> pd.DataFrame:
        if name not in SPLITS:
            raise KeyError(f"split must be one of {SPLITS}, got {name!r}")
        return self.frame[self.frame["split"] == name].reset_index(drop=True)

    def counts(self) -> dict[str, int]:
        return {name: int((self.frame["split"] == name).sum()) for name in SPLITS}

    def save_manifest(self, path) -> Path:
        """Write ``file,split`` (and the labels used) as CSV, atomically."""
        columns = [c for c in ("file", "split", "age", "age_group", "gender", "race", "group") if c in self.frame]
        with atomic.atomic_path(path) as tmp:
            self.frame[columns].to_csv(tmp, index=False)
        return Path(path)


def make_split(samples: Samples | pd.DataFrame, protocol: str, *, seed: int = 0, **options) -> Split:
    """Apply ``protocol`` (see the module table) to a reader's samples."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown split protocol {protocol!r}; known: {', '.join(sorted(PROTOCOLS))}")
    frame = samples.frame if isinstance(samples, Samples) else samples
    frame = frame.sort_values("file", kind="stable").reset_index(drop=True)
    split = PROTOCOLS[protocol](frame, np.random.default_rng(seed), **options)
    split.info.setdefault("seed", seed)
    split.info["counts"] = split.counts()
    return split


def _shuffled(frame: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    return frame.iloc[rng.permutation(len(frame))].reset_index(drop=True)


def _assign(frame: pd.DataFrame, sizes: dict[str, int]) -> pd.DataFrame:
    labels = np.concatenate([[name] * n for name, n in sizes.items()]) if sizes else np.array([])
    out = frame.iloc[: len(labels)].copy()
    out["split"] = labels
    return out


def _proportional(n: int, fractions: tuple[float, ...]) -> list[int]:
    """Split n into len(fractions) whole parts, largest remainders first, summing to n."""
    raw = np.asarray(fractions, dtype="float64") / np.sum(fractions) * n
    sizes = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - sizes), kind="stable")[: n - sizes.sum()]:
        sizes[i] += 1
    return sizes.tolist()


def _speziali(frame, rng, *, test_fraction: float = 0.3, val_fraction: float = 0.3) -> Split:
    from scipy.stats import ks_2samp

    usable = _shuffled(frame[frame["age"].notna() & (frame["gender"] >= 0)], rng)
    n_test = int(round(len(usable) * test_fraction))
    n_trainval = len(usable) - n_test
    n_val = int(round(n_trainval * val_fraction))
    out = _assign(usable, {"test": n_test, "val": n_val, "train": n_trainval - n_val})
    train_ages, val_ages = out.loc[out.split == "train", "age"], out.loc[out.split == "val", "age"]
    info = {"dropped_without_age_and_gender": int(len(frame) - len(usable))}
    if len(train_ages) and len(val_ages):
        ks = ks_2samp(train_ages, val_ages)
        info["ks_train_val"] = {"statistic": float(ks.statistic), "p_value": float(ks.pvalue)}
    return Split("speziali", out, info)


def _adience_folds(frame, rng, *, test_fold: int = 0, val_fold: int | None = None,
                   tasks: tuple[str, ...] = ("age", "gender")) -> Split:
    if "fold" not in frame:
        raise DataError("the samples have no 'fold' column", fix="read them with agegender.data.adience.read_adience")
    if test_fold not in range(5) or (val_fold is not None and (val_fold not in range(5) or val_fold == test_fold)):
        raise ValueError(f"test_fold must be 0-4 and val_fold another fold or None, got {test_fold}, {val_fold}")
    keep = np.ones(len(frame), dtype=bool)
    for task in tasks:
        keep &= (frame["age_group"] >= 0).to_numpy() if task == "age" else (frame[task] >= 0).to_numpy()
    out = frame[keep].copy()
    out["split"] = np.where(out["fold"] == test_fold, "test", np.where(out["fold"] == val_fold, "val", "train"))
    shared = set(out.loc[out.split == "test", "group"]) & set(out.loc[out.split != "test", "group"])
    info = {"test_fold": test_fold, "val_fold": val_fold, "tasks": list(tasks),
            "users_in_test_and_train": len(shared), "dropped_by_task_filter": int((~keep).sum())}
    return Split("adience_folds", out.reset_index(drop=True), info)


def _gu_yang(frame, rng, *, n: int = 20_000, n_train: int = 16_000) -> Split:
    in_range = frame[frame["age"].between(1, 80)]
    usable = _shuffled(in_range, rng)
    take = min(n, len(usable))
    train = n_train if take == n else int(round(take * n_train / n))
    out = _assign(usable.iloc[:take], {"train": train, "val": take - train})
    info = {"dropped_outside_1_80": int(len(frame) - len(in_range)), "requested": n, "available": len(usable)}
    return Split("gu_yang", out, info)


DEY_SPLIT = {"train": 9_115, "val": 3_907, "test": 5_581}  # Dey & Aggarwal Sec. 4: 18,603 images aged 10-65


def _dey(frame, rng) -> Split:
    usable = _shuffled(frame[frame["age"].between(10, 65)], rng)
    sizes = _proportional(len(usable), tuple(DEY_SPLIT.values()))
    out = _assign(usable, dict(zip(DEY_SPLIT, sizes)))
    return Split("dey", out, {"paper_counts": dict(DEY_SPLIT), "aged_10_65": len(usable)})


def _read_coral_csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError("CORAL split file not found", path=path,
                        fix="pass the folder holding utk_train.csv and utk_test.csv (README: 'CORAL split')")
    try:
        with reading(path, "CORAL split file"):
            table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(f"not a CSV file ({err.__class__.__name__})", path=path,
                        fix="download the CORAL csv again; it has columns ',file,age'") from None
    if not {"file", "age"} <= set(table.columns):
        raise DataError(f"expected columns 'file' and 'age', found {list(table.columns)}", path=path,
                        fix="use the CORAL utk_train.csv / utk_test.csv files")
    return table


def _coral(frame, rng, *, csv_dir, val_fraction: float = 0.2) -> Split:
    csv_dir = Path(csv_dir)
    by_name = frame.assign(_name=frame["file"].map(lambda f: Path(f).name)).drop_duplicates("_name").set_index("_name")
    parts, missing, rejected = [], {}, []
    for name, csv in (("train", "utk_train.csv"), ("test", "utk_test.csv")):
        table = _read_coral_csv(csv_dir / csv)
        table["file"] = table["file"].astype(str)
        # a split file names images, never paths: anything with a folder part (../../etc/passwd) is rejected
        bad = table["file"].map(lambda f: unsafe_path(f) or ("not a plain file name" if "/" in f or "\\" in f
                                                             else None))
        for row, reason in bad[bad.notna()].items():
            rejected.append({"file": f"{csv}:{row + 2}",
                             "reason": f"entry {table.at[row, 'file']!r} rejected: {reason}"})
        table = table[bad.isna()].reset_index(drop=True)
        found = table["file"].isin(by_name.index)
        missing[name] = int((~found).sum())
        rows = by_name.loc[table.loc[found, "file"]].reset_index(drop=True)
        rows["coral_label"] = table.loc[found, "age"].to_numpy()
        if name == "train":
            rows = _shuffled(rows, rng)
            n_val = int(np.ceil(len(rows) * val_fraction))  # ceil as sklearn: 13,147 -> 10,517 / 2,630
            rows["split"] = ["val"] * n_val + ["train"] * (len(rows) - n_val)
        else:
            rows["split"] = "test"
        parts.append(rows)
    out = pd.concat(parts, ignore_index=True)
    info = {"csv_dir": str(csv_dir), "csv_rows_without_image": missing, "csv_rows_rejected": rejected}
    return Split("coral", out, info)


def _celeba(frame, rng) -> Split:
    if "partition" not in frame:
        raise DataError("the samples have no 'partition' column", fix="read them with agegender.data.celeba.read_celeba")
    out = frame.copy()
    out["split"] = out["partition"]
    return Split("celeba", out.reset_index(drop=True), {})


def _random(frame, rng, *, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> Split:
    usable = _shuffled(frame, rng)
    out = _assign(usable, dict(zip(SPLITS, _proportional(len(usable), fractions))))
    return Split("random", out, {"fractions": list(fractions)})


PROTOCOLS: dict[str, Callable[..., Split]] = {
    "speziali": _speziali,
    "adience_folds": _adience_folds,
    "gu_yang": _gu_yang,
    "dey": _dey,
    "coral": _coral,
    "celeba": _celeba,
    "random": _random,
}
