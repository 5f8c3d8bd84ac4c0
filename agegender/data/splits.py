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

Byte-identical files. Real datasets hold the same photo under several names (UTKFace: 375
groups of identical files), sometimes with different labels. The papers' protocols do not look
at file contents, so such a group may fall partly in training and partly in validation or test,
and that is the default here (the paper's behaviour). ``keep_duplicates_together=True`` (every
protocol; the ``--keep-duplicates-together`` flag) hashes the files of the kept rows and moves
each group whole into the split most of its files fall in (a tie: the split of its first file in
the protocol's seeded order). ``info["duplicates"]`` says which was done: ``kept_together`` and,
when kept together, ``groups``, ``groups_that_crossed`` and ``rows_moved``.

CORAL split files are checked row by row: a path that leaves the data folder, an age label that
is not a whole number of 0 or more, a file listed twice, or a file in both ``utk_train.csv`` and
``utk_test.csv`` (test images leaking into training) is a one-line :class:`DataError` naming the
file, the line and the fix. Rows whose label disagrees with the age in the file name (label =
age - 21) are counted in ``info["csv_age_label_mismatch"]``.
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


def make_split(samples: Samples | pd.DataFrame, protocol: str, *, seed: int = 0,
               keep_duplicates_together: bool = False, **options) -> Split:
    """Apply ``protocol`` (see the module table) to a reader's samples.

    ``keep_duplicates_together``: byte-identical files end in one split (module docstring); the
    default is the paper's protocol, which splits rows without looking at their contents.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown split protocol {protocol!r}; known: {', '.join(sorted(PROTOCOLS))}")
    frame = samples.frame if isinstance(samples, Samples) else samples
    frame = frame.sort_values("file", kind="stable").reset_index(drop=True)
    split = PROTOCOLS[protocol](frame, np.random.default_rng(seed), **options)
    if keep_duplicates_together:
        split.info["duplicates"] = _keep_duplicates_together(split)
        if "ks_train_val" in split.info:  # the parts changed: the test is of the split as made
            split.info["ks_train_val"] = _ks(split.frame)
    else:
        split.info["duplicates"] = {"kept_together": False}
    split.info.setdefault("seed", seed)
    split.info["counts"] = split.counts()
    return split


def file_digest(path) -> str | None:
    """SHA-1 of a file's bytes (None when it cannot be read)."""
    import hashlib

    digest = hashlib.sha1()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def content_hashes(paths, *, progress: bool = False) -> dict[str, str | None]:
    """``{path: SHA-1 of its bytes, or None}`` for every distinct path (read in 8 threads)."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    unique = list(dict.fromkeys(str(p) for p in paths))
    with ThreadPoolExecutor(max_workers=8) as pool:
        digests = list(tqdm(pool.map(file_digest, unique), total=len(unique), desc="hashing", unit="file",
                            disable=True if not progress or len(unique) < 2000 else None, leave=False))
    return dict(zip(unique, digests))


def duplicate_groups(frame: pd.DataFrame, *, progress: bool = False) -> list[list[int]]:
    """Row indices (in frame order) of each group of rows whose files are byte-identical (2+ rows)."""
    digests = frame["path"].astype(str).map(content_hashes(frame["path"], progress=progress))
    known = digests[digests.notna()]
    repeated = known[known.duplicated(keep=False)]
    groups: dict[str, list[int]] = {}
    for index, digest in repeated.items():
        groups.setdefault(digest, []).append(index)
    return list(groups.values())


def _keep_duplicates_together(split: Split) -> dict:
    """Move each group of byte-identical files whole into one split; what was done, for ``info``."""
    frame = split.frame.reset_index(drop=True)
    crossed, moved = 0, 0
    groups = duplicate_groups(frame)
    for rows in groups:
        parts = frame.loc[rows, "split"]
        if parts.nunique() == 1:
            continue
        crossed += 1
        counts = parts.value_counts()
        most = set(counts[counts == counts.max()].index)
        target = next(p for p in parts if p in most)  # a tie: the split of the first file in protocol order
        moved += int((parts != target).sum())
        frame.loc[rows, "split"] = target
    split.frame = frame
    return {"kept_together": True, "groups": len(groups), "groups_that_crossed": crossed, "rows_moved": moved}


def _ks(out: pd.DataFrame) -> dict | None:
    from scipy.stats import ks_2samp

    train_ages, val_ages = out.loc[out.split == "train", "age"], out.loc[out.split == "val", "age"]
    if not (len(train_ages) and len(val_ages)):
        return None
    ks = ks_2samp(train_ages, val_ages)
    return {"statistic": float(ks.statistic), "p_value": float(ks.pvalue)}


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
    usable = _shuffled(frame[frame["age"].notna() & (frame["gender"] >= 0)], rng)
    n_test = int(round(len(usable) * test_fraction))
    n_trainval = len(usable) - n_test
    n_val = int(round(n_trainval * val_fraction))
    out = _assign(usable, {"test": n_test, "val": n_val, "train": n_trainval - n_val})
    info = {"dropped_without_age_and_gender": int(len(frame) - len(usable))}
    ks = _ks(out)
    if ks is not None:
        info["ks_train_val"] = ks
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


def _coral_rows(path: Path) -> pd.DataFrame:
    """A CORAL csv checked row by row (module docstring); the first bad row is a one-line DataError."""
    table = _read_coral_csv(path)
    table["file"] = table["file"].astype(str)
    fix_row = f"correct or delete that row of {path.name} (CORAL's own files need no change: download them again)"

    def stop(row: int, what: str, more: int = 0):
        others = f" ({more} more such row(s))" if more else ""
        raise DataError(f"line {row + 2}: {what}{others}", path=path, fix=fix_row)

    # a split file names images, never paths: anything with a folder part (../../etc/passwd) stops the run
    bad = table["file"].map(lambda f: unsafe_path(f) or ("not a plain file name (it has a folder part)"
                                                         if "/" in f or "\\" in f else None))
    if bad.notna().any():
        rows = bad[bad.notna()]
        stop(rows.index[0], f"entry {table.at[rows.index[0], 'file']!r} rejected: {rows.iloc[0]} (a CORAL split file "
                            "names image files of the data folder, never paths)", len(rows) - 1)
    ages = pd.to_numeric(table["age"], errors="coerce")
    wrong = ages.isna() | (ages < 0) | (ages != ages.round())
    if wrong.any():
        first = wrong[wrong].index[0]
        stop(first, f"age label {table.at[first, 'age']!r} of {table.at[first, 'file']!r} is not a whole number of 0 "
                    "or more (CORAL's label is the age minus 21)", int(wrong.sum()) - 1)
    table["age"] = ages.astype("int64")
    repeated = table["file"].duplicated()
    if repeated.any():
        first = repeated[repeated].index[0]
        stop(first, f"{table.at[first, 'file']!r} is listed twice", int(repeated.sum()) - 1)
    return table


def _coral(frame, rng, *, csv_dir, val_fraction: float = 0.2) -> Split:
    from agegender.data.provenance import relative_data_path

    csv_dir = Path(csv_dir)
    by_name = frame.assign(_name=frame["file"].map(lambda f: Path(f).name)).drop_duplicates("_name").set_index("_name")
    tables = {name: _coral_rows(csv_dir / csv) for name, csv in (("train", "utk_train.csv"), ("test", "utk_test.csv"))}
    shared = sorted(set(tables["train"]["file"]) & set(tables["test"]["file"]))
    if shared:
        raise DataError(f"{len(shared):,} image(s) are in both utk_train.csv and utk_test.csv (e.g. {shared[0]!r}): "
                        "test images would leak into training", path=csv_dir,
                        fix="use CORAL's original utk_train.csv / utk_test.csv (they share no image), or delete the "
                            "shared rows from one of the two files")
    parts, missing, mismatch = [], {}, {"count": 0, "first": []}
    for name, csv in (("train", "utk_train.csv"), ("test", "utk_test.csv")):
        table = tables[name]
        found = table["file"].isin(by_name.index)
        missing[name] = int((~found).sum())
        rows = by_name.loc[table.loc[found, "file"]].reset_index(drop=True)
        rows["coral_label"] = table.loc[found, "age"].to_numpy()
        off = rows["age"].notna() & (rows["age"] - 21 != rows["coral_label"])
        mismatch["count"] += int(off.sum())
        mismatch["first"] += [f"{csv}: {f} (label {int(v)}, file-name age {a:g})" for f, v, a in
                              rows.loc[off, ["file", "coral_label", "age"]].itertuples(index=False)][:10]
        if name == "train":
            rows = _shuffled(rows, rng)
            n_val = int(np.ceil(len(rows) * val_fraction))  # ceil as sklearn: 13,147 -> 10,517 / 2,630
            rows["split"] = ["val"] * n_val + ["train"] * (len(rows) - n_val)
        else:
            rows["split"] = "test"
        parts.append(rows)
    out = pd.concat(parts, ignore_index=True)
    mismatch["first"] = mismatch["first"][:10]
    info = {"csv_dir": relative_data_path(csv_dir), "csv_rows_without_image": missing,
            "csv_age_label_mismatch": mismatch}
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
