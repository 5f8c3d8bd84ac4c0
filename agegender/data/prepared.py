"""Prepared (TFDS) data: prepare it once from the raw folder, read its labels, stream its images.

The write side is :mod:`agegender.data.tfds_builders` (one TFDS builder per dataset; names in
:data:`TFDS_NAMES`). This module is the contract the rest of the project uses:

- :func:`prepare` runs the builder on a raw folder (``manual_dir``) into ``data_dir`` once;
- :func:`read_prepared` returns the labels as a :class:`~agegender.data.samples.Samples`
  without touching image bytes. Its rows are the reader's rows minus the skipped images, **in
  the reader's order** (restored from the ``order`` feature), so the split protocols give the
  same partition as on the raw folder whenever no image was skipped. ``path`` is
  ``tfds://<name>/<file>`` (not a file: images come from :func:`image_dataset`), age -1 in the
  records is NaN again, and three columns say where the rows live: ``prepared_dir``,
  ``prepared_name``, ``prepared_split``. ``skipped``, ``repaired``, ``notes`` and
  ``files_seen`` come from the report written at prepare time;
- :func:`image_dataset` streams ``(row, encoded image bytes)`` for the rows of such a frame.

Everything imports TensorFlow and TFDS lazily, inside the functions.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from agegender.data.samples import Samples, normalize_frame
from agegender.errors import DataError

__all__ = ["TFDS_NAMES", "image_dataset", "prepare", "read_prepared"]

TFDS_NAMES = {"utkface": "utk_face", "adience": "adience_faces", "celeba": "celeb_a_faces",
              "imdb_wiki": "imdb_wiki_faces"}
PREPARED_COLUMNS = ("prepared_dir", "prepared_name", "prepared_split")


def _name(source: str) -> str:
    if source not in TFDS_NAMES:
        raise DataError(f"unknown dataset {source!r}", fix=f"use one of: {', '.join(TFDS_NAMES)}")
    return TFDS_NAMES[source]


def _builder(source: str, data_dir):
    import tensorflow_datasets as tfds

    import agegender.data.tfds_builders  # noqa: F401 - registers the builders

    return tfds.builder(_name(source), data_dir=str(Path(data_dir).expanduser().resolve()))


def _prepared_builder(source: str, data_dir):
    builder = _builder(source, data_dir)
    if not builder.is_prepared():
        raise DataError(f"no prepared {builder.name} data (expected {builder.data_dir})", path=data_dir,
                        fix=f"prepare it: python -m agegender.data prepare {source} --data-dir RAW_FOLDER "
                            f"--tfds-dir {data_dir}")
    return builder


def _reports(builder) -> tuple[list, dict]:
    from agegender.data.tfds_builders import REPORT_FILE, SKIPPED_FILE

    folder = Path(builder.data_dir)
    out = []
    for name in (SKIPPED_FILE, REPORT_FILE):
        try:
            out.append(json.loads((folder / name).read_text(encoding="utf-8")))
        except (OSError, ValueError):
            out.append([] if name == SKIPPED_FILE else {})
    return out[0], out[1]


def prepare(source: str, manual_dir, data_dir) -> dict:
    """Prepare ``source`` from the raw folder ``manual_dir`` into ``data_dir`` (TFDS ``download_and_prepare``).

    Idempotent: when ``data_dir`` already holds the prepared data this reads its report and
    returns at once (``reused`` True). Returns ``name``, ``data_dir`` (the versioned folder holding
    the records, ``skipped.json`` and ``prepared.json``), ``examples``, ``skipped`` (``{file,
    reason, stage}``), ``seconds`` and ``reused``. Raises :class:`DataError` when ``manual_dir`` is
    missing or lacks the dataset's files, or when ``data_dir`` was prepared from another folder.
    """
    import tensorflow_datasets as tfds

    start = time.perf_counter()
    manual = Path(manual_dir).expanduser()
    builder = _builder(source, data_dir)
    reused = builder.is_prepared()
    if reused:
        recorded = _reports(builder)[1].get("manual_dir")
        if recorded and manual.exists() and Path(recorded) != manual.resolve():
            raise DataError(f"{builder.data_dir} was prepared from {recorded}, not {manual.resolve()}",
                            path=data_dir, fix="use another --tfds-dir, or delete that folder to prepare again")
    else:
        if not manual.is_dir():
            instructions = type(builder).MANUAL_DOWNLOAD_INSTRUCTIONS.strip().splitlines()[0]
            raise DataError(f"raw {source} folder does not exist" if not manual.exists() else
                            f"raw {source} folder is not a folder", path=manual, fix=instructions)
        config = tfds.download.DownloadConfig(manual_dir=str(manual.resolve()))
        with contextlib.redirect_stdout(sys.stderr):  # TFDS prints its progress lines to stdout
            builder.download_and_prepare(download_config=config)
    skipped, _ = _reports(builder)
    return {"name": builder.name, "data_dir": str(builder.data_dir),
            "examples": int(builder.info.splits["train"].num_examples), "skipped": skipped,
            "seconds": round(time.perf_counter() - start, 3), "reused": reused}


def _read_config():
    import tensorflow_datasets as tfds

    # sequential shards (storage order) and no in-memory auto-cache of small datasets
    return tfds.ReadConfig(interleave_cycle_length=1, try_autocache=False)


def read_prepared(source: str, data_dir, split: str = "train") -> Samples:
    """The labels of prepared ``source`` data in ``data_dir`` (image bytes are not decoded; see module doc)."""
    import tensorflow_datasets as tfds

    from agegender.data.tfds_builders import BUILDERS

    builder = _prepared_builder(source, data_dir)
    if split not in builder.info.splits:
        raise DataError(f"{builder.name} has no split {split!r} (it has {', '.join(builder.info.splits)})",
                        path=data_dir, fix="use split='train'")
    features = {k: True for k in builder.info.features if k != "image"}
    ds = builder.as_dataset(split=split, decoders=tfds.decode.PartialDecoding(features), shuffle_files=False,
                            read_config=_read_config())
    columns: dict[str, list] = {}
    for batch in ds.batch(1024).as_numpy_iterator():
        parts = {"file": batch["file"], "order": batch["order"], "age": batch["age"], "age_group": batch["age_group"],
                 "gender": batch["gender"], "race": batch["race"], "group": batch["group"],
                 **BUILDERS[source].columns(batch)}
        for key, values in parts.items():
            columns.setdefault(key, []).append(values)
    data = {k: np.concatenate(v) for k, v in columns.items()}
    if not data:
        frame = normalize_frame([])
    else:
        for key in ("file", "group"):
            data[key] = np.array([v.decode("utf-8") for v in data[key]], dtype=object)
        age = data["age"].astype("float64")
        data["age"] = np.where(age < 0, np.nan, age)
        name = builder.name
        data["path"] = np.array([f"tfds://{name}/{f}" for f in data["file"]], dtype=object)
        data["source"] = np.full(len(age), source, dtype=object)
        order = np.argsort(data.pop("order"), kind="stable")
        frame = normalize_frame(pd.DataFrame({k: v[order] for k, v in data.items()}))
        for column, values in data.items():
            if values.dtype == object:  # text stays object, as the readers give it
                frame[column] = frame[column].astype(object)
    frame["prepared_dir"] = str(Path(data_dir).expanduser().resolve())
    frame["prepared_name"] = builder.name
    frame["prepared_split"] = split
    skipped, report = _reports(builder)
    notes = list(report.get("notes", [])) + [f"read from prepared TFDS data {builder.data_dir} (split {split})"]
    return Samples(source=source, root=str(builder.data_dir), frame=frame,
                   files_seen=int(report.get("files_seen", len(frame))),
                   skipped=[{"file": s["file"], "reason": s["reason"]} for s in skipped],
                   repaired=list(report.get("repaired", [])), duplicate_rows=list(report.get("duplicate_rows", [])),
                   notes=notes)


def image_dataset(frame):
    """``tf.data.Dataset`` of ``(row int64, image bytes tf.string)`` for exactly the rows of ``frame``.

    ``frame`` comes from :func:`read_prepared` (any subset, order or concatenation of such frames);
    ``row`` is the position in ``frame.reset_index(drop=True)``. The records are streamed in
    storage order (shard by shard; not frame order), each example is looked up by ``file`` in a
    ``tf.lookup.StaticHashTable`` and dropped when absent from ``frame``; a file present in
    several rows is yielded once per row. Nothing is materialised: memory does not grow with
    the dataset. Decode ``image`` with ``tf.io.decode_image(..., channels=3,
    expand_animations=False)`` (or ``decode_jpeg`` for JPEG data).
    """
    import tensorflow as tf
    import tensorflow_datasets as tfds

    frame = frame.reset_index(drop=True)
    absent = [c for c in ("file", *PREPARED_COLUMNS) if c not in frame.columns]
    if absent:
        raise ValueError(f"image_dataset needs a frame from read_prepared; it lacks the columns {absent}")
    if frame[list(PREPARED_COLUMNS)].isna().any(axis=None):
        raise ValueError("image_dataset: some rows have no prepared_dir / prepared_name / prepared_split "
                         "(rows not from read_prepared)")
    sources = {name: src for src, name in TFDS_NAMES.items()}
    spec = (tf.TensorSpec((), tf.int64), tf.TensorSpec((), tf.string))
    pieces = []
    for (data_dir, name, split), positions in frame.groupby(list(PREPARED_COLUMNS), sort=False).indices.items():
        if name not in sources:
            raise ValueError(f"unknown prepared dataset {name!r} in column prepared_name")
        builder = _prepared_builder(sources[name], data_dir)
        files = frame["file"].to_numpy()[positions].astype(str)
        unique, inverse = np.unique(files, return_inverse=True)
        rank = np.argsort(inverse, kind="stable")
        rows = tf.constant(positions[rank].astype("int64"))
        counts = np.bincount(inverse, minlength=len(unique)).astype("int64")
        starts = tf.constant(np.concatenate([[0], np.cumsum(counts)[:-1]]).astype("int64"))
        table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(unique), tf.range(len(unique), dtype=tf.int64)), -1)
        ds = builder.as_dataset(
            split=split, shuffle_files=False, read_config=_read_config(),
            decoders=tfds.decode.PartialDecoding({"file": True, "image": True},
                                                 decoders={"image": tfds.decode.SkipDecoding()}))
        ds = ds.map(lambda ex, t=table: (t.lookup(ex["file"]), ex["image"]), num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.filter(lambda k, image: k >= 0)
        if counts.max() == 1:
            ds = ds.map(lambda k, image, r=rows: (tf.gather(r, k), image))
        else:
            tf_counts = tf.constant(counts)

            def expand(k, image, r=rows, s=starts, c=tf_counts):
                picked = r[tf.gather(s, k):tf.gather(s, k) + tf.gather(c, k)]
                return tf.data.Dataset.from_tensor_slices((picked, tf.fill(tf.shape(picked), image)))

            ds = ds.flat_map(expand)
        pieces.append(ds)
    if not pieces:
        return tf.data.Dataset.from_generator(lambda: iter(()), output_signature=spec)
    out = pieces[0]
    for piece in pieces[1:]:
        out = out.concatenate(piece)
    return out
