"""How the data path scales: audit, TFDS prepare and a first epoch over n generated faces, and peak memory.

:func:`measure_scale` times, for each n, the audit of a raw folder, :func:`~agegender.data.prepared.prepare`
and one first training epoch over the prepared records as a reproduction reads them
(``read_prepared`` for the labels, then ``build_dataset``: decode, resize, cache, shuffle, crop/flip,
batch 64), then fits ``time = a + b * n`` per phase: a linear path has a small relative deviation
from the fit and a per-image cost ratio (largest n over smallest) near 1 (below 1 when the fixed
cost ``a`` still shows at the smallest n).

:func:`measure_memory` runs prepare and one epoch of reading, each in a fresh Python process, and
reports each process's peak resident memory (``getrusage(RUSAGE_SELF).ru_maxrss`` at its end) next
to a process that only imports TensorFlow and TFDS, and next to what all decoded images would
take: flat memory means the growth over the baseline stays far below that size and does not grow
with n (the epoch over the first fifth of the rows shows it). The read phases
runs with a memory-cache budget of :data:`READ_CACHE_GB`, below the data's size, as the full
CelebA would on this machine, so its decoded-image cache goes to disk.

A 16-image warm-up pass runs every phase once, untimed, so imports and TensorFlow's start-up do
not count against the smallest n. Generated folders are cached under ``workdir/raw`` (reused
when their synth marker records the same ``n``, ``size`` and seed); prepared folders are rebuilt
on every call. ``python -m agegender.bench_scale scale|memory ...`` prints the result as JSON.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["measure_memory", "measure_scale"]

DEFAULT_WORKDIR = Path("build/bench/scale")
BATCH = 64
READ_CACHE_GB = 0.25
"""Memory cache budget of the read phase: below the data's decoded size, so the 50,000 faces take the path
the full CelebA (202,599 faces, 9.3 GiB decoded at 128 px) takes on any machine with less than 37 GiB of
RAM: the decoded-image cache goes to a file on disk."""


def _say(progress: bool, text: str) -> None:
    if progress:
        print(text, file=sys.stderr, flush=True)


def _raw_folder(source: str, n: int, size: int, workdir: Path, progress: bool) -> tuple[Path, float]:
    """The generated folder for (source, n, size), made unless cached; returns it and the seconds spent."""
    from agegender.data.provenance import SYNTH_MARKER
    from agegender.data.synth import synthesize

    folder = Path(workdir) / "raw" / f"{source}-n{n}-s{size}"
    marker = folder / SYNTH_MARKER
    try:
        recorded = json.loads(marker.read_text(encoding="utf-8"))
        if recorded.get("n") == n and recorded.get("size") == size and recorded.get("seed") == 0:
            return folder, 0.0
    except (OSError, ValueError):
        pass
    if folder.exists():
        shutil.rmtree(folder)
    _say(progress, f"[bench_scale] generating {n:,} {source} faces at {size} px in {folder} ...")
    start = time.perf_counter()
    synthesize(source, folder, n, 0, size=size)
    return folder, time.perf_counter() - start


def _fresh(folder: Path) -> Path:
    if folder.exists():
        shutil.rmtree(folder)
    return folder


def _epoch(source: str, tfds_dir: Path, size: int, limit: int | None = None) -> tuple[int, float, float]:
    """(images, seconds, MB of the label table) of one training epoch as a reproduction runs it:
    the labels (:func:`read_prepared`), then :func:`~agegender.data.pipeline.build_dataset` over them
    (decode, resize to ``size``, cache, shuffle, crop/flip, batch 64). The cache follows the
    pipeline's memory budget (``AGEGENDER_CACHE_GB``), on disk past it."""
    from agegender.data.pipeline import Augment, Target, build_dataset
    from agegender.data.prepared import read_prepared

    start = time.perf_counter()
    frame = read_prepared(source, tfds_dir).frame.iloc[:limit]
    ds = build_dataset(frame, {"gender": Target("gender", "sparse")}, image_size=size, batch_size=BATCH,
                       training=True, augment=Augment(flip=True))
    images = 0
    for batch, _, weights in ds:
        images += int(weights["gender"].shape[0])
    return images, time.perf_counter() - start, frame.memory_usage(deep=True).sum() / (1 << 20)


def _linearity(ns: list[int], seconds: list[float]) -> dict:
    import numpy as np

    n, t = np.asarray(ns, float), np.asarray(seconds, float)
    per_image = t / n
    out = {"per_image_ratio_largest_vs_smallest": round(float(per_image[-1] / per_image[0]), 3)}
    if len(set(ns)) >= 2:
        b, a = np.polyfit(n, t, 1)
        residual = t - (a + b * n)
        spread = float(np.sum((t - t.mean()) ** 2))
        out.update({"intercept_s": round(float(a), 3), "slope_ms_per_image": round(float(b) * 1000, 4),
                    "max_rel_deviation": round(float(np.max(np.abs(residual) / t)), 3),
                    "r2": round(1 - float(np.sum(residual ** 2)) / spread, 4) if spread > 0 else 1.0})
    return out


def measure_scale(sizes=(1000, 5000, 20000), *, source: str = "utkface", workdir=DEFAULT_WORKDIR, size: int = 128,
                  progress: bool = True) -> dict:
    """Audit, prepare and first-epoch times for each n in ``sizes`` and a linearity check (see module doc).

    Returns ``rows`` (``n``, ``examples``, ``synth_s`` (0 when cached), ``audit_s``, ``prepare_s``,
    ``first_epoch_s``, and ``<phase>_ms_per_image``), ``linearity`` (per phase:
    ``per_image_ratio_largest_vs_smallest``, and with two or more sizes ``intercept_s``,
    ``slope_ms_per_image``, ``max_rel_deviation`` (largest ``|t - fit| / t``; the smallest n, with
    the shortest times, dominates it) and ``r2``), ``source``, ``size``, ``cpu_count``.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from agegender.data.audit import audit
    from agegender.data.prepared import prepare

    import agegender.data.tfds_builders  # noqa: F401 - import TFDS before timing

    workdir = Path(workdir)
    warm, _ = _raw_folder(source, 16, size, workdir, progress)  # first calls pay imports and TF start-up
    audit(source, warm, progress=False)
    prepare(source, warm, _fresh(workdir / "tfds" / "warmup"))
    _epoch(source, workdir / "tfds" / "warmup", size)
    rows = []
    for n in sorted(int(n) for n in sizes):
        raw, synth_s = _raw_folder(source, n, size, workdir, progress)
        tag = f"[bench_scale] {source} n={n:,}:"
        start = time.perf_counter()
        audit(source, raw, progress=progress)
        audit_s = time.perf_counter() - start
        _say(progress, f"{tag} audit {audit_s:.2f} s")
        tfds_dir = _fresh(workdir / "tfds" / f"{source}-n{n}-s{size}")
        start = time.perf_counter()
        result = prepare(source, raw, tfds_dir)
        prepare_s = time.perf_counter() - start
        _say(progress, f"{tag} prepare {prepare_s:.2f} s ({result['examples']:,} examples)")
        images, epoch_s, _ = _epoch(source, tfds_dir, size)
        _say(progress, f"{tag} first epoch {epoch_s:.2f} s ({images:,} images)")
        if images != result["examples"]:
            raise RuntimeError(f"the epoch read {images} images, prepare wrote {result['examples']}")
        row = {"n": n, "examples": result["examples"], "synth_s": round(synth_s, 3), "audit_s": round(audit_s, 3),
               "prepare_s": round(prepare_s, 3), "first_epoch_s": round(epoch_s, 3)}
        for phase, seconds in (("audit", audit_s), ("prepare", prepare_s), ("first_epoch", epoch_s)):
            row[f"{phase}_ms_per_image"] = round(1000 * seconds / n, 3)
        rows.append(row)
    ns = [r["n"] for r in rows]
    phases = ("audit", "prepare", "first_epoch")
    linearity = {phase: _linearity(ns, [r[f"{phase}_s"] for r in rows]) for phase in phases}
    return {"source": source, "size": size, "cpu_count": os.cpu_count(), "batch": BATCH, "rows": rows,
            "linearity": linearity}


def _phase(phase: str, source: str, raw: str, tfds_dir: str, size: int) -> dict:
    """Run one memory phase in this process and return its peak resident memory."""
    import resource

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    import agegender.data.prepared  # noqa: F401
    import agegender.data.tfds_builders  # noqa: F401

    start = time.perf_counter()
    out = {"phase": phase}
    if phase == "baseline":
        tf.data.Dataset.range(4).map(lambda x: x + 1).reduce(tf.constant(0, tf.int64), lambda a, b: a + b)
    elif phase == "prepare":
        out["examples"] = agegender.data.prepared.prepare(source, raw, tfds_dir)["examples"]
    elif phase in ("read", "read_fifth"):
        os.environ["AGEGENDER_CACHE_DIR"] = str(Path(tfds_dir).parent)
        limit = None
        if phase == "read_fifth":
            limit = len(agegender.data.prepared.read_prepared(source, tfds_dir).frame) // 5
        out["images"], _, out["label_table_mb"] = _epoch(source, Path(tfds_dir), size, limit)
    else:
        raise ValueError(f"unknown phase {phase!r}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out["peak_mb"] = round(peak / (1 << 20 if sys.platform == "darwin" else 1 << 10), 1)
    out["seconds"] = round(time.perf_counter() - start, 3)
    return out


def _run_phase(phase: str, source: str, raw: Path, tfds_dir: Path, size: int, progress: bool) -> dict:
    command = [sys.executable, "-m", "agegender.bench_scale", "_phase", phase, "--source", source, "--raw", str(raw),
               "--tfds-dir", str(tfds_dir), "--size", str(size)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    if phase.startswith("read"):
        env["AGEGENDER_CACHE_GB"] = str(READ_CACHE_GB)
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=None if progress else subprocess.PIPE, text=True,
                          env=env)
    if done.returncode != 0:
        raise RuntimeError(f"memory phase {phase!r} failed (exit {done.returncode}): "
                           f"{(done.stderr or '')[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    _say(progress, f"[bench_scale] memory {phase}: peak {result['peak_mb']:,.0f} MB in {result['seconds']:.1f} s")
    return result


def measure_memory(n: int = 50000, *, source: str = "celeba", workdir=DEFAULT_WORKDIR, size: int = 128,
                   progress: bool = True) -> dict:
    """Peak resident MB of prepare and of one reading epoch over ``n`` generated faces, each in a fresh process.

    Returns ``baseline_peak_mb`` (a process that only imports TensorFlow and TFDS),
    ``prepare_peak_mb``, ``read_peak_mb``, their growth over the baseline (``*_growth_mb``), the
    data sizes they compare with (``decoded_mb``: all images decoded at their stored size,
    ``n * H * W * 3`` bytes; ``resized_mb``: at ``size``; ``raw_mb``: the JPEG files;
    ``prepared_mb``: the TFRecords; ``label_table_mb``: the label frame of ``read_prepared``, which
    does grow with n), the image shape, the phase times and ``synth_s``. The prepare peak includes
    the reader building its label table (for CelebA with all 40 attributes a few KB per row).
    """
    from PIL import Image

    from agegender.data.prepared import TFDS_NAMES

    workdir = Path(workdir)
    raw, synth_s = _raw_folder(source, int(n), size, workdir, progress)
    tfds_dir = _fresh(workdir / "tfds" / f"memory-{source}-n{n}-s{size}")
    phases = {p: _run_phase(p, source, raw, tfds_dir, size, progress)
              for p in ("baseline", "prepare", "read_fifth", "read")}
    images = [p for p in raw.rglob("*") if p.suffix.lower() == ".jpg" and p.is_file()]
    with Image.open(images[0]) as first:
        width, height = first.size
    raw_bytes = sum(p.stat().st_size for p in images)
    prepared_bytes = sum(p.stat().st_size for p in (tfds_dir / TFDS_NAMES[source]).rglob("*.tfrecord*"))
    base = phases["baseline"]["peak_mb"]
    mb = 1 << 20
    return {
        "source": source, "n": int(n), "size": size, "image_shape": [height, width, 3],
        "method": "ru_maxrss of each phase's own fresh process (getrusage RUSAGE_SELF at its end)",
        "baseline_peak_mb": base, "prepare_peak_mb": phases["prepare"]["peak_mb"],
        "read_peak_mb": phases["read"]["peak_mb"],
        "prepare_growth_mb": round(phases["prepare"]["peak_mb"] - base, 1),
        "read_growth_mb": round(phases["read"]["peak_mb"] - base, 1),
        "read_fifth_images": phases["read_fifth"]["images"], "read_fifth_peak_mb": phases["read_fifth"]["peak_mb"],
        "read_fifth_growth_mb": round(phases["read_fifth"]["peak_mb"] - base, 1),
        "decoded_mb": round(n * height * width * 3 / mb, 3), "resized_mb": round(n * size * size * 3 / mb, 3),
        "raw_mb": round(raw_bytes / mb, 3), "prepared_mb": round(prepared_bytes / mb, 3),
        "label_table_mb": round(phases["read"]["label_table_mb"], 3),
        "examples": phases["prepare"]["examples"], "images_read": phases["read"]["images"],
        "prepare_s": phases["prepare"]["seconds"], "read_s": phases["read"]["seconds"], "synth_s": round(synth_s, 3),
    }


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m agegender.bench_scale", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    scale = sub.add_parser("scale", help="audit / prepare / first-epoch times for several n")
    scale.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 20000])
    memory = sub.add_parser("memory", help="peak memory of prepare and of one epoch, in fresh processes")
    memory.add_argument("--n", type=int, default=50000)
    phase = sub.add_parser("_phase")  # internal: one memory phase in this process
    phase.add_argument("phase")
    phase.add_argument("--raw", required=True)
    phase.add_argument("--tfds-dir", required=True)
    for p in (scale, memory, phase):
        p.add_argument("--source", default="celeba" if p is memory else "utkface",
                       choices=("utkface", "adience", "celeba", "imdb_wiki"))
        p.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    for p in (scale, memory):
        p.add_argument("--workdir", default=str(DEFAULT_WORKDIR), help=f"default {DEFAULT_WORKDIR}")
    args = parser.parse_args(argv)
    if args.command == "_phase":
        print(json.dumps(_phase(args.phase, args.source, args.raw, args.tfds_dir, args.size)))
        return 0
    from agegender.errors import DataError

    try:
        if args.command == "scale":
            result = measure_scale(args.sizes, source=args.source, workdir=Path(args.workdir), size=args.size)
        else:
            result = measure_memory(args.n, source=args.source, workdir=Path(args.workdir), size=args.size)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
