"""A compact dataset pack: the usable images of a dataset at their load size as WebP, with labels and provenance.

``python -m agegender.data pack utkface --data-dir DIR --size N --out PACK [--quality Q]`` writes::

    PACK/agegender-pack.json   manifest: dataset, size, codec and quality, the source (describe_data: a path
                               relative to the data root and a fingerprint, never an absolute path), the
                               reader's report, every skipped file with its reason, and what the re-encoding
                               cost (grey-level difference to the original pixels)
    PACK/labels.csv.gz         the reader's sample table without ``path`` (gzip: the file names repeat in ``file``
                               and ``group``; 0.5 MB instead of 2.9 for UTKFace)
    PACK/images/<file>.webp    each usable image, decoded as the pipeline decodes it, resized to N x N
                               (:func:`agegender.data.loader.resize_uint8`, the pipeline's resize; none when
                               already N x N) and encoded as WebP at quality Q

The rows are exactly those a reproduction trains on from the raw folder: the reader's rows less the
images that fail the pipeline's file check or do not decode (:func:`agegender.cli.read_samples` drops
the same), in the reader's order, so every split protocol draws the same split from a pack as from
the raw folder. A reader given a pack (``read_utkface(PACK)``; :func:`read_pack` for any dataset)
returns the same :class:`~agegender.data.samples.Samples` with ``path`` pointing into the pack, the
pack's skipped-file report, and a note saying the images were re-encoded. :func:`pack_info` gives
the record entry saying so (codec, quality, size, source and the measured difference): a
reproduction copies it into its record's data description.

Decoding a pack's image gives the pixels the pipeline would have cached at load size N, up to the
lossy WebP encoding (chroma subsampled 4:2:0, quantised): ``reencoding`` in the manifest gives the
mean, 99th percentile and maximum absolute difference over every pixel value of every image,
measured while packing. Loading a pack at another size than N resizes the re-encoded image again.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

from agegender.errors import DataError

__all__ = ["MANIFEST", "is_pack", "pack_info", "read_pack", "write_pack"]

MANIFEST = "agegender-pack.json"
LABELS = "labels.csv.gz"
IMAGES = "images"
FORMAT = "agegender-pack"
VERSION = 2
CODEC = "webp"


def packed_name(file: str) -> str:
    """Where the image of the row named ``file`` lies under ``PACK/images``."""
    return f"{file}.{CODEC}"


def is_pack(root) -> bool:
    """True when ``root`` is a folder holding a pack manifest."""
    return (Path(root) / MANIFEST).is_file()


def _manifest(root) -> dict:
    path = Path(root) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"pack manifest is not readable JSON ({err})", path=path,
                        fix="write the pack again with python -m agegender.data pack") from None
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise DataError(f"not a version-{VERSION} agegender pack manifest", path=path,
                        fix="write the pack again with this version's python -m agegender.data pack")
    return manifest


def pack_info(samples_or_root) -> dict | None:
    """The record entry of a pack (``None`` for a raw folder): ``{"reencoded": True, codec, quality, size,
    images, bytes, source, reencoding}``. Takes a :class:`Samples` (its ``root``) or a folder."""
    root = getattr(samples_or_root, "root", samples_or_root)
    if root is None or not is_pack(root):
        return None
    manifest = _manifest(root)
    keys = ("dataset", "codec", "quality", "method", "size", "images", "bytes", "source", "reencoding")
    return {"reencoded": True, **{k: manifest[k] for k in keys if k in manifest}}


def read_pack(root, *, dataset: str | None = None):
    """The :class:`Samples` of a pack: the reader's table, ``path`` in the pack, its skipped-file report."""
    import pandas as pd

    from agegender.data.samples import Samples, normalize_frame

    root = Path(root).expanduser().resolve()
    manifest = _manifest(root)
    if dataset is not None and manifest["dataset"] != dataset:
        raise DataError(f"this is a pack of {manifest['dataset']}, not {dataset}", path=root,
                        fix=f"pass a {dataset} folder or pack")
    columns = manifest["columns"]  # name -> dtype: text stays text ("NA" is a name), numbers read "" as missing
    try:
        frame = pd.read_csv(root / LABELS, dtype={c: str for c, t in columns.items() if t == "object"},
                            keep_default_na=False, na_values={c: [""] for c, t in columns.items() if t != "object"})
    except (OSError, ValueError) as err:
        raise DataError(f"pack labels are not readable ({err})", path=root / LABELS,
                        fix="write the pack again with python -m agegender.data pack") from None
    if len(frame) != manifest["images"]:
        raise DataError(f"the pack lists {manifest['images']} images but {LABELS} has {len(frame)} rows", path=root,
                        fix="write the pack again (it was changed or not finished)")
    frame.insert(0, "path", [str(root / IMAGES / packed_name(f)) for f in frame["file"]])
    reader = manifest["reader"]
    note = (f"re-encoded pack: {manifest['images']:,} images at {manifest['size']} px as WebP quality "
            f"{manifest['quality']} (mean / p99 difference to the originals {manifest['reencoding']['mean_abs']} / "
            f"{manifest['reencoding']['p99_abs']} grey levels)")
    return Samples(source=manifest["dataset"], root=str(root), frame=normalize_frame(frame),
                   files_seen=reader["files_seen"], skipped=list(manifest["skipped"]),
                   repaired=list(reader["repaired"]), duplicate_rows=list(reader["duplicate_rows"]),
                   missing=list(reader["missing"]), notes=list(reader["notes"]) + [note])


# --------------------------------------------------------------------------------------------
# writing


def _encode(task):
    """(row, bytes written, |difference| histogram, reason): one image decoded, resized, encoded, decoded back."""
    import io

    from PIL import Image

    from agegender.data.loader import decode_rgb, resize_uint8

    row, source, target, size, quality, method = task
    try:
        pixels = decode_rgb(source)
        if size:
            pixels = resize_uint8(pixels, size)
    except Exception as err:  # noqa: BLE001 - any decoder failure: the file is skipped with its reason
        return row, 0, None, f"image not usable: it does not decode ({type(err).__name__}: {err})"[:300]
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, CODEC.upper(), quality=quality, method=method)
    data = buffer.getvalue()
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    Path(target).write_bytes(data)
    with Image.open(io.BytesIO(data)) as image:
        back = np.asarray(image.convert("RGB"))
    difference = np.abs(back.astype(np.int16) - pixels.astype(np.int16)).ravel()
    return row, len(data), np.bincount(difference, minlength=256), None


def write_pack(dataset: str, data_dir, out, *, size: int | None, quality: int = 80, method: int = 4,
               workers: int | None = None, progress: bool = True, **reader_options) -> dict:
    """Pack ``dataset`` read from ``data_dir`` into ``out`` (module docstring); returns the manifest.

    ``size``: the side every image is resized to (``None`` keeps the decoded images as they are: only for
    datasets whose images are already square and of one size). ``quality`` 0-100 and ``method`` 0-6 are
    Pillow's WebP options (``method``: encoder effort; 4 is its default). An ``out`` that already holds a pack
    of the same data and settings is kept as it is (``"reused": True``); any other pack there is replaced; a
    folder that holds anything else is refused.
    """
    from agegender.data.audit import drop_unusable_images, read_dataset
    from agegender.data.provenance import describe_data

    if not 0 <= quality <= 100:
        raise DataError(f"WebP quality must be 0-100, got {quality}", fix="pass --quality between 0 and 100")
    if size is not None and size < 1:
        raise DataError(f"size must be a positive number of pixels, got {size}", fix="pass --size N, e.g. 128")
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise DataError("the pack folder is a file", path=out, fix="name a folder for --out")
    if out.is_dir() and any(out.iterdir()) and not is_pack(out):
        raise DataError("the folder exists and is not a pack: refusing to write into it", path=out,
                        fix="name a new or empty folder for --out")
    source = describe_data(dataset, data_dir)
    settings = {"dataset": dataset, "size": size, "codec": CODEC, "quality": quality, "method": method,
                "reader_options": reader_options}
    if is_pack(out):
        try:
            old = _manifest(out)
        except DataError:  # a pack of an older format: replaced below
            old = {}
        if old and {k: old.get(k) for k in settings} == settings and old.get("source") == source:
            return {**old, "reused": True}

    samples = drop_unusable_images(read_dataset(dataset, data_dir, **reader_options), require=True)
    frame = samples.frame.reset_index(drop=True)
    if size is None:
        shapes = _sizes(frame["path"].head(64))
        if len(shapes) != 1 or next(iter(shapes))[0] != next(iter(shapes))[1]:
            raise DataError(f"the {dataset} images are not all one square size ({sorted(shapes)[:3]} ...)",
                            path=data_dir, fix="pass --size N: the load size the protocol resizes to")
    staging = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    packed = [packed_name(file) for file in frame["file"]]
    tasks = [(i, path, str(staging / IMAGES / name), size, quality, method)
             for i, (path, name) in enumerate(zip(frame["path"], packed))]
    histogram = np.zeros(256, dtype=np.int64)
    sizes = np.zeros(len(frame), dtype=np.int64)
    failed: dict[int, str] = {}
    try:
        for row, nbytes, counts, reason in _run(tasks, workers, progress, f"pack {dataset}"):
            if reason:
                failed[row] = reason
            else:
                sizes[row] = nbytes
                histogram += counts
        keep = np.array([i not in failed for i in range(len(frame))], dtype=bool)
        if not keep.any():
            raise DataError(f"none of the {len(frame):,} {dataset} images decodes", path=data_dir,
                            fix="point --data-dir at the real images")
        labels = frame.drop(columns=["path"])[keep]
        labels.to_csv(staging / LABELS, index=False, compression={"method": "gzip", "mtime": 0})
        skipped = _portable(samples.skipped, frame) + [{"file": frame["file"][i], "reason": r}
                                                       for i, r in sorted(failed.items())]
        manifest = {"format": FORMAT, "version": VERSION, **settings, "images": int(keep.sum()),
                    "columns": {c: str(t) for c, t in labels.dtypes.items()},
                    "bytes": int(sizes.sum()), "mean_bytes_per_image": round(float(sizes[keep].mean()), 1),
                    "source": source, "reencoding": _difference(histogram),
                    "reader": {"files_seen": samples.files_seen, "repaired": samples.repaired,
                               "duplicate_rows": samples.duplicate_rows, "missing": samples.missing,
                               "notes": samples.notes},
                    "skipped": skipped,
                    "written_by": "python -m agegender.data pack (agegender.data.pack)"}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True, default=str) + "\n")
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
            staging.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def _sizes(paths) -> set:
    from PIL import Image

    shapes = set()
    for path in paths:
        with Image.open(path) as image:
            shapes.add(image.size)
    return shapes


def _portable(skipped: list[dict], frame) -> list[dict]:
    """``skipped`` with each file relative to the data folder (the check names absolute paths)."""
    names = dict(zip(frame["path"].astype(str), frame["file"].astype(str)))
    return [{**item, "file": names.get(str(item["file"]), str(item["file"]))} for item in skipped]


def _difference(histogram: np.ndarray) -> dict:
    """Mean, 99th percentile and maximum of the absolute differences counted in ``histogram`` (grey levels)."""
    total = int(histogram.sum())
    if not total:
        return {"mean_abs": None, "p99_abs": None, "max_abs": None, "values": 0}
    levels = np.arange(len(histogram))
    cumulative = np.cumsum(histogram)
    return {"mean_abs": round(float((levels * histogram).sum() / total), 3),
            "p99_abs": int(np.searchsorted(cumulative, 0.99 * total)),
            "max_abs": int(levels[histogram > 0].max()), "values": total,
            "compared": "every pixel value of every packed image against the original decoded as the pipeline "
                        "decodes it and resized to the pack's size (agegender.data.loader)"}


def _run(tasks, workers, progress: bool, label: str):
    """``_encode`` over ``tasks`` in worker processes (``workers`` 0: in this process)."""
    if workers is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        workers = min(cpus, 16)
    show = progress and sys.stderr.isatty() and len(tasks) > 500

    def shown(results):
        if not show:
            return results
        from tqdm import tqdm

        return tqdm(results, total=len(tasks), desc=label, unit="image")

    if workers <= 1 or len(tasks) < 64:
        yield from shown(map(_encode, tasks))
        return
    from concurrent.futures import ProcessPoolExecutor

    from agegender.data.loader import one_thread_each, process_context

    with one_thread_each(), ProcessPoolExecutor(workers, mp_context=process_context()) as pool:
        yield from shown(pool.map(_encode, tasks, chunksize=32))
