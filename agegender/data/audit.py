"""Dataset audit: what a reader found in a folder, what it skipped or repaired, and how a protocol splits it.

``audit(dataset, data_dir, ...)`` returns a JSON-ready dict with these keys (README documents them):

- ``dataset``, ``data_dir``, ``files_seen``, ``samples``;
- ``skipped`` / ``repaired``: lists of ``{file, reason}``;
- ``missing_images``: label rows whose image file is absent (count and the first 20);
- ``duplicate_rows``: label rows repeated in the label files (Adience);
- ``task_samples``: usable samples per task and task combination (``"age+gender"``);
- ``label_counts``: ``{task: {label: n}}``;
- ``duplicates``: byte-identical image files by content hash: ``distinct_contents``, ``groups``,
  ``files_in_groups``, ``groups_crossing_splits`` (under ``protocol``) and the first groups;
- ``splits``: ``{protocol: {split: n}}`` (Adience: per-fold counts);
- ``notes``: the reader's remarks.
"""

from __future__ import annotations

import hashlib
import importlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from agegender.data.samples import ADIENCE_AGE_GROUPS, GENDERS, RACES, Samples

READERS = {
    "utkface": ("agegender.data.utkface", "read_utkface"),
    "adience": ("agegender.data.adience", "read_adience"),
    "celeba": ("agegender.data.celeba", "read_celeba"),
    "imdb_wiki": ("agegender.data.imdb_wiki", "read_imdb_wiki"),
}
DEFAULT_PROTOCOL = {"utkface": "speziali", "adience": "adience_folds", "celeba": "celeba", "imdb_wiki": "random"}


def read_dataset(dataset: str, data_dir, **options) -> Samples:
    """Dispatch to the reader of ``dataset`` (utkface, adience, celeba, imdb_wiki)."""
    if dataset not in READERS:
        raise ValueError(f"unknown dataset {dataset!r}; known: {', '.join(READERS)}")
    module, name = READERS[dataset]
    return getattr(importlib.import_module(module), name)(data_dir, **options)


def audit(dataset: str, data_dir, *, protocol: str | None = None, coral_csv_dir=None, seed: int = 0,
          hash_duplicates: bool = True, samples: Samples | None = None, progress: bool = True, **options) -> dict:
    """Read ``data_dir`` with the dataset's reader and describe everything found (see module doc)."""
    from agegender.data.splits import make_split

    samples = samples if samples is not None else read_dataset(dataset, data_dir, **options)
    frame = samples.frame
    protocol = protocol or DEFAULT_PROTOCOL[dataset]
    tasks = ("age", "gender", "race") if dataset != "celeba" else ("gender",)
    result = {
        "dataset": dataset,
        "data_dir": str(data_dir),
        "files_seen": samples.files_seen,
        "samples": len(frame),
        "skipped": samples.skipped,
        "repaired": samples.repaired,
        "missing_images": {"count": len(samples.missing), "first": list(samples.missing[:20])},
        "duplicate_rows": samples.duplicate_rows,
        "task_samples": samples.task_samples(tasks),
        "label_counts": _label_counts(frame),
        "notes": list(samples.notes),
    }
    split_of = {}
    if protocol == "adience_folds":
        result["splits"] = {protocol: {f"fold_{k}": int((frame["fold"] == k).sum()) for k in range(5)}}
        split_of = dict(zip(frame["path"], "fold_" + frame["fold"].astype(str)))
    else:
        kwargs = {"csv_dir": coral_csv_dir} if protocol == "coral" else {}
        if protocol == "coral" and coral_csv_dir is None:
            raise ValueError("protocol 'coral' needs --coral-csv-dir (the folder with utk_train.csv and utk_test.csv)")
        split = make_split(samples, protocol, seed=seed, **kwargs)
        result["splits"] = {protocol: split.counts()}
        result["split_info"] = {k: v for k, v in split.info.items() if k != "counts"}
        split_of = dict(zip(split.frame["path"], split.frame["split"]))
    if hash_duplicates:
        missing = set(samples.missing)
        present = frame.loc[~frame["file"].isin(missing) & ~frame["path"].isin(missing), "path"]
        paths = [p for p in dict.fromkeys(present) if Path(p).is_file()]
        result["duplicates"] = _duplicates(paths, split_of, progress)
    return result


def _label_counts(frame) -> dict:
    counts = {}
    if frame["age"].notna().any():
        ages = frame.loc[frame["age"].notna(), "age"].astype(int).value_counts().sort_index()
        counts["age"] = {str(k): int(v) for k, v in ages.items()}
    if (frame["age_group"] >= 0).any():
        groups = frame["age_group"].value_counts()
        counts["age_group"] = {(ADIENCE_AGE_GROUPS[k] if k >= 0 else "unknown"): int(groups.get(k, 0))
                               for k in [*range(len(ADIENCE_AGE_GROUPS)), -1] if groups.get(k, 0)}
    for task, names in (("gender", GENDERS), ("race", RACES)):
        values = frame[task].value_counts()
        entry = {name: int(values.get(i, 0)) for i, name in enumerate(names)}
        entry["unknown"] = int(values.get(-1, 0))
        if sum(entry.values()) and entry["unknown"] < len(frame):
            counts[task] = entry
    return counts


def _hash(path: str) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _duplicates(paths: list[str], split_of: dict, progress: bool) -> dict:
    """Group byte-identical files by SHA-1 of their content."""
    from tqdm.auto import tqdm

    with ThreadPoolExecutor(max_workers=8) as pool:
        digests = list(tqdm(pool.map(_hash, paths), total=len(paths), desc="hashing", unit="file",
                            disable=True if not progress or len(paths) < 2000 else None, leave=False))
    by_digest: dict[str, list[str]] = {}
    for path, digest in zip(paths, digests):
        by_digest.setdefault(digest, []).append(path)
    groups = [sorted(g) for g in by_digest.values() if len(g) > 1]
    groups.sort()
    crossing = [g for g in groups if len({split_of.get(p) for p in g}) > 1]
    return {
        "distinct_contents": len(by_digest),
        "groups": len(groups),
        "files_in_groups": int(sum(len(g) for g in groups)),
        "groups_crossing_splits": len(crossing),
        "first_groups": [[Path(p).name for p in g] for g in groups[:10]],
    }


def format_report(result: dict) -> str:
    """The human-readable audit printed by ``python -m agegender.data audit``."""
    lines = [f"Audit of {result['dataset']} at {result['data_dir']}",
             f"  files seen: {result['files_seen']:,}    usable samples: {result['samples']:,}"]
    for key in ("skipped", "repaired"):
        items = result[key]
        lines.append(f"  {key}: {len(items):,}")
        reasons: dict[str, int] = {}
        for item in items:
            reasons[item["reason"]] = reasons.get(item["reason"], 0) + 1
        for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1])[:8]:
            example = next(i["file"] for i in items if i["reason"] == reason)
            lines.append(f"    {n:>6,} × {reason}  (e.g. {example})")
    if result["missing_images"]["count"]:
        lines.append(f"  images missing for {result['missing_images']['count']:,} label rows "
                     f"(e.g. {result['missing_images']['first'][0]})")
    if result["duplicate_rows"]:
        lines.append(f"  duplicate label rows: {len(result['duplicate_rows']):,}")
    lines.append("  usable samples per task: " + ", ".join(f"{k} {v:,}" for k, v in result["task_samples"].items()))
    for task, counts in result["label_counts"].items():
        if task == "age":
            ages = np.repeat([int(k) for k in counts], list(counts.values()))
            lines.append(f"  age: {len(ages):,} labelled, {ages.min()}-{ages.max()} years, median {np.median(ages):.0f}")
        else:
            lines.append(f"  {task}: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    for protocol, counts in result["splits"].items():
        lines.append(f"  split '{protocol}': " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    ks = result.get("split_info", {}).get("ks_train_val")
    if ks:
        lines.append(f"  KS test train vs validation ages: D = {ks['statistic']:.4f}, p = {ks['p_value']:.3f}")
    dup = result.get("duplicates")
    if dup:
        lines.append(f"  byte-identical files: {dup['groups']:,} groups holding {dup['files_in_groups']:,} files "
                     f"({dup['distinct_contents']:,} distinct contents); {dup['groups_crossing_splits']:,} groups "
                     f"cross the splits")
    lines += [f"  note: {n}" for n in result["notes"]]
    return "\n".join(lines)
