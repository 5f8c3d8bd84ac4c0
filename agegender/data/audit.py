"""Dataset audit: what a reader found in a folder, what it skipped or repaired, and how a protocol splits it.

``audit(dataset, data_dir, ...)`` returns a JSON-ready dict with these keys (README documents them):

- ``dataset``, ``data_dir``, ``files_seen``, ``samples``;
- ``skipped`` / ``repaired``: lists of ``{file, reason}``;
- ``missing_images``: label rows whose image file is absent (count and the first 20);
- ``duplicate_rows``: label rows repeated in the label files (Adience);
- ``task_samples``: usable samples per task and task combination (``"age+gender"``);
- ``label_counts``: ``{task: {label: n}}``;
- ``duplicates``: byte-identical image files by content hash: ``distinct_contents``, ``groups``,
  ``files_in_groups``, ``groups_crossing_splits`` (under ``protocol``, as split with or without
  ``keep_duplicates_together``), ``crossing_first`` (the first such groups, each file with its
  split), ``groups_with_conflicting_labels`` and ``conflicting_first`` (groups whose files carry
  different labels, each file with its labels) and ``first_groups``;
- ``splits``: ``{protocol: {split: n}}`` (Adience: per-fold counts);
- ``notes``: the reader's remarks.

"Usable" means what training can use: every image present is checked as the training pipeline
checks it (:func:`drop_unusable_images`: empty, HTML, truncated, unparsable header, too large),
and one that fails is listed in ``skipped`` with the reason, not counted in ``samples``.
"""

from __future__ import annotations

import dataclasses
import importlib
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


def drop_unusable_images(samples: Samples, *, require: bool = False) -> Samples:
    """``samples`` less the rows whose image fails the training pipeline's file check.

    Every image present (rows in ``samples.missing`` are left as they are) goes through
    :func:`agegender.data.images.check_images`, the check ``build_dataset`` applies: an empty
    file, an HTML page or another non-image, a truncated JPEG / PNG, a header that does not parse,
    a decompression bomb. A row that fails leaves the frame and is listed in ``skipped`` with the
    reason, and a note counts them. ``require``: when rows had images and none is usable, raise a
    one-line :class:`DataError` (training would have nothing to train on).
    """
    from agegender.data.images import check_images
    from agegender.errors import DataError

    frame = samples.frame
    missing = set(samples.missing)
    present = ~(frame["file"].isin(missing) | frame["path"].isin(missing))
    if not present.any():
        return samples
    checked = check_images(list(dict.fromkeys(frame.loc[present, "path"])))
    bad = {item["file"]: item["reason"] for item in checked.skipped}
    drop = present & frame["path"].isin(bad)
    if require and drop.sum() == present.sum():
        reasons: dict[str, int] = {}
        for reason in bad.values():
            reasons[reason] = reasons.get(reason, 0) + 1
        summary = ", ".join(f"{n} × {reason}" for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1])[:3])
        example = frame.loc[drop, "file"].iloc[0]
        raise DataError(f"none of the {int(present.sum()):,} images is usable ({summary}; e.g. {example})",
                        path=samples.root,
                        fix="point the data folder at the real images (check that the download finished and was "
                            "unpacked; `python -m agegender.data audit ...` lists every file with its reason)")
    if not drop.any():
        return samples
    skipped = list(samples.skipped) + [{"file": file, "reason": f"image not usable: {bad[path]}"}
                                       for file, path in frame.loc[drop, ["file", "path"]].itertuples(index=False)]
    notes = list(samples.notes) + [f"{int(drop.sum()):,} image(s) fail the file check training applies (empty, not "
                                   "an image, truncated, too large ...): skipped, listed with the reason"]
    return dataclasses.replace(samples, frame=frame[~drop].reset_index(drop=True), skipped=skipped, notes=notes)


def audit(dataset: str, data_dir, *, protocol: str | None = None, coral_csv_dir=None, seed: int = 0,
          hash_duplicates: bool = True, samples: Samples | None = None, progress: bool = True,
          keep_duplicates_together: bool = False, check_images: bool = True, **options) -> dict:
    """Read ``data_dir`` with the dataset's reader and describe everything found (see module doc).

    ``check_images``: check every image as training does (:func:`drop_unusable_images`); the
    unusable ones are skipped, not samples. ``keep_duplicates_together``: report the split as
    :func:`~agegender.data.splits.make_split` makes it with that option.
    """
    from agegender.data.splits import make_split

    samples = samples if samples is not None else read_dataset(dataset, data_dir, **options)
    if check_images:
        samples = drop_unusable_images(samples)
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
        if keep_duplicates_together:
            result["notes"].append("--keep-duplicates-together does not change the fold counts reported here (the "
                                   "folds are the fold files'); make_split applies it to each fold's train/test split")
    else:
        kwargs = {"csv_dir": coral_csv_dir} if protocol == "coral" else {}
        if protocol == "coral" and coral_csv_dir is None:
            raise ValueError("protocol 'coral' needs --coral-csv-dir (the folder with utk_train.csv and utk_test.csv)")
        split = make_split(samples, protocol, seed=seed, keep_duplicates_together=keep_duplicates_together, **kwargs)
        result["splits"] = {protocol: split.counts()}
        result["split_info"] = {k: v for k, v in split.info.items() if k != "counts"}
        split_of = dict(zip(split.frame["path"], split.frame["split"]))
    if hash_duplicates:
        missing = set(samples.missing)
        present = frame.loc[~frame["file"].isin(missing) & ~frame["path"].isin(missing), "path"]
        paths = [p for p in dict.fromkeys(present) if Path(p).is_file()]
        result["duplicates"] = _duplicates(paths, split_of, progress, _labels_by_path(frame))
        result["duplicates"]["kept_together"] = bool(keep_duplicates_together and protocol != "adience_folds")
    return result


def _labels_by_path(frame) -> dict:
    """``{path: {file, age, age_group, gender, race}}`` (the first row of each path; absent labels left out)."""
    out = {}
    for row in frame.drop_duplicates("path").itertuples(index=False):
        labels = {"file": row.file}
        if row.age == row.age:  # not NaN
            labels["age"] = float(row.age)
        for key in ("age_group", "gender", "race"):
            if getattr(row, key) >= 0:
                labels[key] = int(getattr(row, key))
        out[row.path] = labels
    return out


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


def _duplicates(paths: list[str], split_of: dict, progress: bool, labels: dict | None = None) -> dict:
    """Group byte-identical files by SHA-1 of their content; groups crossing splits and with conflicting labels."""
    from agegender.data.splits import content_hashes

    by_digest: dict[str, list[str]] = {}
    for path, digest in content_hashes(paths, progress=progress).items():
        if digest is not None:
            by_digest.setdefault(digest, []).append(path)
    groups = [sorted(g) for g in by_digest.values() if len(g) > 1]
    groups.sort()
    labels = labels or {}
    crossing = [g for g in groups if len({split_of.get(p) for p in g} - {None}) > 1]  # in 2+ splits (a leak)

    def label_of(path):
        return tuple(sorted((k, v) for k, v in labels.get(path, {}).items() if k != "file"))

    conflicting = [g for g in groups if len({label_of(p) for p in g}) > 1]
    return {
        "distinct_contents": len(by_digest),
        "groups": len(groups),
        "files_in_groups": int(sum(len(g) for g in groups)),
        "groups_crossing_splits": len(crossing),
        "crossing_first": [[{"file": labels.get(p, {}).get("file", Path(p).name), "split": split_of.get(p)}
                            for p in g] for g in crossing[:20]],
        "groups_with_conflicting_labels": len(conflicting),
        "conflicting_first": [[labels.get(p, {"file": Path(p).name}) for p in g] for g in conflicting[:20]],
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
        how = " (split with --keep-duplicates-together)" if dup.get("kept_together") else ""
        lines.append(f"  byte-identical files: {dup['groups']:,} groups holding {dup['files_in_groups']:,} files "
                     f"({dup['distinct_contents']:,} distinct contents); {dup['groups_crossing_splits']:,} groups "
                     f"cross the splits{how}; {dup.get('groups_with_conflicting_labels', 0):,} groups with "
                     "conflicting labels")
        for group in dup.get("crossing_first", [])[:3]:
            lines.append("    crossing: " + ", ".join(f"{g['file']} ({g['split'] or 'in no split'})" for g in group))
        for group in dup.get("conflicting_first", [])[:3]:
            lines.append("    conflicting labels: " + ", ".join(
                f"{g['file']} (" + ", ".join(f"{k} {v:g}" for k, v in g.items() if k != "file") + ")" for g in group))
        if dup["groups_crossing_splits"] and not dup.get("kept_together"):
            lines.append("    (--keep-duplicates-together keeps each group in one split)")
    mismatch = result.get("split_info", {}).get("csv_age_label_mismatch")
    if mismatch and mismatch.get("count"):
        lines.append(f"  CORAL rows whose label is not the file name's age - 21: {mismatch['count']:,} "
                     f"(e.g. {mismatch['first'][0]})")
    lines += [f"  note: {n}" for n in result["notes"]]
    return "\n".join(lines)
