"""``make gpu-kit``: one folder of at most 60 MB that trains the suite on a box with Python 3.12 and JAX (CUDA), without
TensorFlow or network access (issue 20 item 4).

``python -m agegender.gpu_kit build --data-dir ../shared/data/utkface/full --out build/gpu-kit [--quality 60]``::

    build/gpu-kit/run.sh        the one script: installs the wheels the interpreter lacks into .site/ (pip
                                --no-index --no-deps --target), then runs python -m agegender.gpu_kit run
                                under KERAS_BACKEND=jax into OUT (default out/)
    build/gpu-kit/README.md     what is inside, what the box needs, what the run writes
    build/gpu-kit/kit.json      the commit, the wheels, the pack's settings and every part's size
    build/gpu-kit/src.tar.gz    the project at HEAD (``git archive``: tracked files bar results/runs and results/figures; 0.6 MB compressed, 2.3 MB
                                as files), unpacked by run.sh into .src/
    build/gpu-kit/wheels/       Keras and the dependencies a JAX image lacks, CPython 3.12 x86-64 (WHEELS)
    build/gpu-kit/data/utkface.bundle
                                the UTKFace pack at its native 200 px (agegender.data.pack; it serves Speziali's
                                128 px and Dey & Aggarwal's 224 px alike) as one file: 23,707 files of 2.2 kB
                                would take 101 MB on a disk of 4 kB blocks and 18 MB of headers in a tar. run.sh
                                unbundles it into .data/ (:func:`unbundle`, two seconds)

The wheels: Keras and what it requires, followed recursively for CPython 3.12 on Linux, pinned to
the versions installed here (the tested ones), less what every JAX installation brings (numpy,
ml_dtypes, scipy, opt_einsum; :data:`JAX_PROVIDES`) and less h5py (4.9 MB; Keras needs it only to
save or load ``.keras`` / ``.h5`` files, which the kit's check does not), plus tqdm (the readers
use it). The suite's own heavier needs, pandas (12 MB) and Pillow with WebP (7 MB), do not fit
beside the images: the box must have them (the project's CUDA + JAX image does; ``run.sh`` checks
first and says what is missing in one line). So does any ``scipy`` a JAX install brings.

``estimate``: the FLOPs of one training step per image of each model, from XLA's cost analysis of
the compiled forward and backward pass on this CPU (a measurement of the work, not of a GPU), turned
into an estimate of the kit's full-protocol time on an H100/H200-class GPU (assumptions stated in
its output).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from agegender.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
LIMIT_BYTES = 60_000_000
JAX_PROVIDES = frozenset({"numpy", "ml-dtypes", "scipy", "opt-einsum", "jax", "jaxlib"})
LEFT_OUT = {"h5py": "Keras needs it only to save or load .keras/.h5 model files, which the kit's check does not; "
                    "its wheel is 4.9 MB"}
EXTRA = ("tqdm",)  # agegender.data.utkface's progress bar
IMAGE_NEEDS = {"numpy": "numpy", "scipy": "scipy", "pandas": "pandas", "PIL": "pillow", "jax": "jax"}
TARGET = {"python_version": "3.12", "python_full_version": "3.12.0", "sys_platform": "linux",
          "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
          "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_27_x86_64", "manylinux_2_28_x86_64")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_requirements() -> list[str]:
    """``name==version`` of every wheel the kit carries (module docstring), from this environment's metadata."""
    from importlib import metadata

    from packaging.markers import Marker
    from packaging.requirements import Requirement

    wanted, queue = {}, ["keras", *EXTRA]
    while queue:
        name = canonical(queue.pop(0))
        if name in wanted or name in JAX_PROVIDES or name in LEFT_OUT:
            continue
        wanted[name] = metadata.version(name)
        for text in metadata.requires(name) or []:
            requirement = Requirement(text)
            if requirement.marker is None or Marker(str(requirement.marker)).evaluate(TARGET):
                queue.append(requirement.name)
    return sorted(f"{name}=={version}" for name, version in wanted.items())


def _wheel_name(path: Path) -> tuple[str, str, str]:
    """(canonical name, version, tags) from a wheel file name."""
    parts = path.name[:-len(".whl")].split("-")
    return canonical(parts[0]), parts[1], "-".join(parts[2:])


def fetch_wheels(requirements: list[str], cache: Path) -> list[Path]:
    """The wheel files of ``requirements`` in ``cache``, downloaded (pip, CPython 3.12 x86-64) when absent."""
    cache.mkdir(parents=True, exist_ok=True)

    def found():
        have = {(_wheel_name(p)[0], _wheel_name(p)[1]): p for p in cache.glob("*.whl")}
        return {r: have.get((canonical(r.split("==")[0]), r.split("==")[1])) for r in requirements}

    if any(p is None for p in found().values()):
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                   "--only-binary=:all:", "--no-deps", "--python-version", "3.12", "--implementation", "cp",
                   *[f"--platform={p}" for p in PLATFORMS], "-d", str(cache),
                   *[r for r, p in found().items() if p is None]]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            raise DataError(f"pip could not download the kit's wheels ({done.stderr.strip().splitlines()[-1:]})",
                            path=cache, fix="build the kit where PyPI is reachable, or put the wheels of "
                                            f"{', '.join(requirements)} into this folder")
    missing = [r for r, p in found().items() if p is None]
    if missing:
        raise DataError(f"no wheel for {', '.join(missing)} after downloading", path=cache,
                        fix="put CPython 3.12 x86-64 wheels of them into this folder")
    return sorted(found().values())


def missing_wheels(folder) -> list[str]:
    """File names of the wheels in ``folder`` whose distribution this interpreter lacks (Keras: any other version);
    a one-line :class:`DataError` when the interpreter lacks what the kit does not carry or cannot use a wheel."""
    import importlib.util
    from importlib import metadata

    absent = [dist for module, dist in IMAGE_NEEDS.items() if importlib.util.find_spec(module) is None]
    if absent:
        raise DataError(f"this Python ({sys.executable}) lacks {', '.join(absent)}, which the kit does not carry",
                        fix="run with the CUDA + JAX image's Python (PYTHON=/path/to/python3 bash run.sh), or "
                            f"install {' '.join(absent)} there")
    from PIL import features

    if not features.check("webp"):
        raise DataError("this Python's Pillow cannot decode WebP (the pack's images)",
                        fix="use a Pillow built with libwebp (every PyPI wheel of Pillow is)")
    out = []
    here = f"cp{sys.version_info.major}{sys.version_info.minor}"
    for path in sorted(Path(folder).glob("*.whl")):
        name, version, tags = _wheel_name(path)
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed is not None and (name != "keras" or installed == version):
            continue
        if re.search(r"\bcp3\d+\b", tags) and here not in tags.split("-")[0].split("."):
            raise DataError(f"{name} is missing and the kit's wheel {path.name} is not for CPython "
                            f"{sys.version.split()[0]}", fix="run with Python 3.12: PYTHON=python3.12 bash run.sh")
        out.append(path.name)
    return out


def _tree_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# committed run records and their figures grow with every run (3 MB compressed after Speziali's first seed) and the
# box writes its own: the kit's source leaves them out
SRC_EXCLUDED = ("results/runs", "results/figures")


def build_kit(data_dir, out, *, quality: int = 60, wheels_cache=None, limit_mb: float = LIMIT_BYTES / 1e6,
              workers: int | None = None, revision: str = "HEAD", pack_dir=None) -> dict:
    """Write the kit (module docstring) into ``out`` and return its summary (also ``kit.json``).

    The pack is written to ``pack_dir`` (default ``build/packs/utkface-200-q<quality>``) and reused from there when
    it holds one of the same data and quality; the kit holds it as one bundle (:func:`bundle`). Raises a
    one-line :class:`DataError` when the kit would exceed ``limit_mb`` megabytes (10^6 bytes), naming each
    part's size and the fix (a lower ``--quality``)."""
    from agegender import atomic
    from agegender.data.pack import write_pack

    out = atomic.check_writable(out)
    wheels_cache = Path(wheels_cache) if wheels_cache else ROOT / "build" / "wheels-cache"
    commit = _git("rev-parse", revision).strip()
    src = out / "src.tar.gz"
    shutil.rmtree(out / "src", ignore_errors=True)  # an older kit's unpacked copy
    _git("archive", "--format=tar.gz", f"--prefix={commit[:12]}/", "-o", str(src.resolve()), revision, "--",
         ".", *(f":(exclude){path}" for path in SRC_EXCLUDED))
    requirements = wheel_requirements()
    wheels = out / "wheels"
    shutil.rmtree(wheels, ignore_errors=True)
    wheels.mkdir()
    for path in fetch_wheels(requirements, wheels_cache):
        shutil.copy2(path, wheels / path.name)
    pack_dir = Path(pack_dir) if pack_dir else ROOT / "build" / "packs" / f"utkface-200-q{quality}"
    manifest = write_pack("utkface", data_dir, pack_dir, size=None, quality=quality, workers=workers)
    shutil.rmtree(out / "data", ignore_errors=True)
    (out / "data").mkdir()
    bundle(pack_dir, out / "data" / "utkface.bundle")
    (out / "run.sh").write_text(RUN_SH.replace("@SRC_PREFIX@", commit[:12]))
    os.chmod(out / "run.sh", 0o755)
    (out / "README.md").write_text("")  # written below, once the sizes are known
    sizes = {"src.tar.gz": _tree_bytes(src), "wheels": _tree_bytes(wheels), "data": _tree_bytes(out / "data"),
             "run.sh": _tree_bytes(out / "run.sh")}
    summary = {"commit": commit, "wheels": sorted(p.name for p in wheels.iterdir()), "left_out": LEFT_OUT,
               "image_needs": sorted(IMAGE_NEEDS.values()), "pack": {k: manifest[k] for k in (
                   "size", "codec", "quality", "method", "images", "bytes", "reencoding", "source")},
               "bytes": sizes, "limit_bytes": int(limit_mb * 1e6)}
    (out / "README.md").write_text(kit_readme(summary))
    atomic.write_json(out / "kit.json", summary)
    runtime = [out / ".site", out / ".src", out / ".data", out / "out"]  # what run.sh writes there later
    for _ in range(3):  # kit.json holds the total it is part of: rewrite until the number stays
        total = _tree_bytes(out) - sum(_tree_bytes(p) for p in runtime if p.exists())
        if summary.get("total_bytes") == total:
            break
        summary["total_bytes"] = total
        atomic.write_json(out / "kit.json", summary)
    if summary["total_bytes"] > summary["limit_bytes"]:
        parts = ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in sizes.items())
        raise DataError(f"the kit takes {summary['total_bytes'] / 1e6:.1f} MB ({parts}), over {limit_mb:g} MB",
                        path=out, fix="lower --quality (KIT_QUALITY=... for make gpu-kit; README.md, 'GPU kit', "
                                      "gives each quality's size)")
    return summary


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as err:
        raise DataError(f"git failed ({err})", path=ROOT, fix="build the kit from a git checkout of the project") \
            from None


def add_build_arguments(parser) -> None:
    parser.add_argument("--data-dir", required=True, help="the raw UTKFace folder (e.g. ../shared/data/utkface/full)")
    parser.add_argument("--out", required=True, help="the kit folder (e.g. build/gpu-kit)")
    parser.add_argument("--quality", type=int, default=60, help="WebP quality of the pack (default 60)")
    parser.add_argument("--wheels-cache", default=None, help="where downloaded wheels are kept (default "
                        "build/wheels-cache); wheels already there are not downloaded again")
    parser.add_argument("--limit-mb", type=float, default=LIMIT_BYTES / 1e6, help="size limit in MB (default 60)")
    parser.add_argument("--workers", type=int, default=None, help="processes encoding the pack")
    parser.add_argument("--revision", default="HEAD", help="the commit whose tracked files the kit carries")
    parser.add_argument("--pack-dir", default=None, help="where the pack is written and reused (default "
                        "build/packs/utkface-200-q<quality>)")


def add_estimate_arguments(parser) -> None:
    parser.add_argument("--data", required=True, help="a UTKFace pack or folder (the split sizes come from it)")
    parser.add_argument("--models", default="all", help="comma-separated model names, or all")
    parser.add_argument("--json", dest="json_path", default=None, help="also write the numbers as JSON here")


RUN_SH = r"""#!/usr/bin/env bash
# agegender GPU kit (written by `make gpu-kit`; README.md beside this script says what is inside).
#   bash run.sh [OUT] [options of python -m agegender.gpu_kit run, e.g. --models all --epochs 10]
# Needs Linux x86-64, Python 3.12 with JAX (CUDA), numpy, scipy, pandas and Pillow; no TensorFlow, no network.
# PYTHON picks the interpreter (default python3). OUT defaults to out/ beside this script.
set -euo pipefail
KIT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="${1:-$KIT/out}"
[ $# -gt 0 ] && shift
PY="${PYTHON:-python3}"
SITE="$KIT/.site"
SRC="$KIT/.src/@SRC_PREFIX@"  # the folder src.tar.gz unpacks to
[ -d "$SRC" ] || { mkdir -p "$KIT/.src" && tar -xzf "$KIT/src.tar.gz" -C "$KIT/.src"; }
export PYTHONPATH="$SITE:$SRC${PYTHONPATH:+:$PYTHONPATH}"
export KERAS_BACKEND=jax
MISSING="$("$PY" -m agegender.gpu_kit missing "$KIT/wheels")"
if [ -n "$MISSING" ]; then
  echo "[gpu-kit] installing into $SITE: $MISSING"
  (cd "$KIT/wheels" && "$PY" -m pip install --quiet --no-index --no-deps --no-compile --disable-pip-version-check \
     --upgrade --target "$SITE" $MISSING)
fi
"$PY" - <<'EOF'
import jax, keras
print(f"[gpu-kit] keras {keras.__version__} on {keras.backend.backend()}; jax {jax.__version__}; devices {jax.devices()}")
EOF
"$PY" -m agegender.gpu_kit unbundle "$KIT/data/utkface.bundle" "$KIT/.data/utkface"
exec "$PY" -m agegender.gpu_kit run --data "$KIT/.data/utkface" --out "$OUT" "$@"
"""


def kit_readme(summary: dict) -> str:
    pack = summary["pack"]
    mb = {k: f"{v / 1e6:.1f} MB" for k, v in summary["bytes"].items()}
    return "\n".join([
        "# agegender GPU kit", "",
        f"The project at commit `{summary['commit'][:12]}`, the Keras wheels a JAX image lacks and the UTKFace faces, "
        "to train on a Linux x86-64 box with Python 3.12 and JAX (CUDA), without TensorFlow or network.", "",
        "    bash run.sh [OUT] [--models all] [--epochs N] [--precisions float32,mixed_float16]", "",
        "`run.sh` installs the wheels the interpreter lacks into `.site/` (pip `--no-index --no-deps --target`) and "
        "runs `python -m agegender.gpu_kit run` under `KERAS_BACKEND=jax` (`agegender/gpu_kit.py` in `src.tar.gz` "
        "documents it): "
        "each model trained from scratch per precision, timed in memory and fed by the numpy loader, then scored on "
        "its paper's test split. OUT (default `out/`) receives `records/*.json`, `throughput.md` / `.json` "
        "(images/s per model and precision, naming the GPU) and `results.md`.", "",
        "The box must already have: " + ", ".join(summary["image_needs"]) + " (the project's CUDA + JAX image has "
        "them); `run.sh` says in one line what is missing. Left out: " +
        "; ".join(f"{k}: {v}" for k, v in summary["left_out"].items()) + ".", "",
        "| part | size |", "|---|---|", *[f"| {k} | {v} |" for k, v in mb.items()], "",
        f"Data: {pack['images']:,} UTKFace faces at their native 200 px, WebP quality {pack['quality']} "
        "(`agegender.data.pack`), as one file (`data/utkface.bundle`, written out into `.data/` by `run.sh`). "
        f"The re-encoding costs {pack['reencoding']['mean_abs']} grey levels on average "
        f"(99th percentile {pack['reencoding']['p99_abs']}, largest {pack['reencoding']['max_abs']}) against the "
        "original JPEGs; every record says the data was re-encoded.", "",
        "Wheels: " + ", ".join(summary["wheels"]) + ".", ""])


# --------------------------------------------------------------------------------------------
# one file for many small ones

BUNDLE_MAGIC = b"AGBUNDLE1\n"


def bundle(folder, path) -> int:
    """Write every file under ``folder`` into the one file ``path``: a magic line, the gzip-compressed JSON list
    of ``[relative name, size]`` (its length as 8 bytes first), then the files' bytes one after another. Returns
    the bundle's size."""
    import gzip

    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    index = gzip.compress(json.dumps([[p.relative_to(folder).as_posix(), p.stat().st_size] for p in files]).encode(),
                          mtime=0)
    with open(path, "wb") as out:
        out.write(BUNDLE_MAGIC + len(index).to_bytes(8, "little") + index)
        for file in files:
            out.write(file.read_bytes())
    return Path(path).stat().st_size


def unbundle(path, folder) -> int:
    """The files of the bundle ``path`` written under ``folder`` (module docstring), unless a previous call
    finished there for this bundle (a stamp of its size). Returns the number of files."""
    import gzip

    path, folder = Path(path), Path(folder)
    stamp = folder / ".unbundled"
    if stamp.is_file() and stamp.read_text() == str(path.stat().st_size):
        return len(json.loads(stamp.with_name(".index.json").read_text()))
    with open(path, "rb") as source:
        if source.read(len(BUNDLE_MAGIC)) != BUNDLE_MAGIC:
            raise DataError("not a bundle written by make gpu-kit", path=path, fix="build the kit again")
        index = json.loads(gzip.decompress(source.read(int.from_bytes(source.read(8), "little"))))
        for name, size in index:
            target = folder / name
            if ".." in Path(name).parts or Path(name).is_absolute():
                raise DataError(f"a bundle entry leaves its folder ({name})", path=path, fix="build the kit again")
            target.parent.mkdir(parents=True, exist_ok=True)
            data = source.read(size)
            if len(data) != size:
                raise DataError(f"the bundle ends inside {name} (truncated copy)", path=path,
                                fix="copy the kit again")
            target.write_bytes(data)
    stamp.with_name(".index.json").write_text(json.dumps(index))
    stamp.write_text(str(path.stat().st_size))
    return len(index)


# --------------------------------------------------------------------------------------------
# estimate

H100_DENSE_FP16_TFLOPS = 989.0  # NVIDIA H100 SXM / H200 datasheet, dense FP16/BF16 tensor cores
UTILISATION = (0.1, 0.3)  # assumed share of that peak small CNNs at batch 16-64 sustain under XLA (not measured)
GPU_BOX_WORKERS = 15  # loader processes on a 16-core GPU box (the cores less one)


def train_flops(spec, size: int, batch: int = 4) -> tuple[float, float]:
    """(FLOPs of one forward + backward pass per image, seconds XLA took to compile it here) for ``spec``."""
    import time

    import jax
    import numpy as np

    from agegender.gpu_kit_models import build_model

    model = build_model(spec, size)
    x = np.zeros((batch, size, size, 3), dtype="float32")

    def loss(trainable, non_trainable, images):
        outputs, _ = model.stateless_call(trainable, non_trainable, images, training=True)
        return sum(jax.numpy.sum(o.astype("float32") ** 2) for o in jax.tree_util.tree_leaves(outputs))

    step = jax.jit(jax.grad(loss))
    started = time.perf_counter()
    compiled = step.lower([v.value for v in model.trainable_variables],
                          [v.value for v in model.non_trainable_variables], x).compile()
    seconds = time.perf_counter() - started
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"]) / batch, seconds


def estimate(data, models: str = "all", json_path=None) -> str:
    """The kit's full-protocol time on one H100/H200-class GPU: a markdown table (module docstring)."""
    import keras

    from agegender.data.utkface import read_utkface
    from agegender.gpu_kit_models import MODELS, _split

    if keras.backend.backend() != "jax":
        raise DataError("the estimate measures FLOPs with JAX", fix="run it with KERAS_BACKEND=jax")
    names = list(MODELS) if models == "all" else [m.strip() for m in models.split(",")]
    samples = read_utkface(data)
    rows = []
    for name in names:
        spec = MODELS[name]
        counts = _split(samples, spec, 0, None).counts()
        flops, compile_s = train_flops(spec, spec.input_size)
        # per epoch: training (forward + backward) and validation (forward: a third); the test pass once
        work = spec.paper_epochs * (counts["train"] * flops + counts["val"] * flops / 3) + counts["test"] * flops / 3
        images = spec.paper_epochs * (counts["train"] + counts["val"]) + counts["test"]
        compute = [work / (H100_DENSE_FP16_TFLOPS * 1e12 * u) for u in UTILISATION]
        rows.append({"model": name, "input": spec.input_size, "batch": spec.batch_size, "epochs": spec.paper_epochs,
                     "train_gflops_per_image": round(flops / 1e9, 2), "images_processed": images,
                     "gpu_seconds": [round(s, 1) for s in compute], "cpu_compile_s": round(compile_s, 1)})
    total = [round(sum(r["gpu_seconds"][i] for r in rows), 1) for i in range(2)]
    lines = ["| model | input | batch | epochs | GFLOPs/image (train step) | images processed | GPU s at 30% / 10% "
             "of 989 TFLOP/s | XLA compile s (this CPU) |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['input']} | {r['batch']} | {r['epochs']} | {r['train_gflops_per_image']} | "
              f"{r['images_processed']:,} | {r['gpu_seconds'][1]} / {r['gpu_seconds'][0]} | {r['cpu_compile_s']} |"
              for r in rows]
    lines.append(f"| total | | | | | {sum(r['images_processed'] for r in rows):,} | {total[1]} / {total[0]} | "
                 f"{round(sum(r['cpu_compile_s'] for r in rows), 1)} |")
    if json_path:
        Path(json_path).write_text(json.dumps({"rows": rows, "total_gpu_seconds": total,
                                               "peak_tflops": H100_DENSE_FP16_TFLOPS,
                                               "utilisation": UTILISATION}, indent=1))
    return "\n".join(lines)

