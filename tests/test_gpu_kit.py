"""The GPU kit (issue 20 item 4): its entry point trains and times the models under KERAS_BACKEND=jax in a process
where TensorFlow cannot be imported; the kit folder holds the project, the wheels and the pack within its size
limit; run.sh installs only what the interpreter lacks, offline, and runs the check."""

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

from agegender.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
BLOCK_TENSORFLOW = textwrap.dedent("""
    import importlib.abc, sys
    class _NoTensorFlow(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "tensorflow" or name.startswith("tensorflow."):
                raise ImportError(f"{name} is blocked in this test")
    sys.meta_path.insert(0, _NoTensorFlow())
""")
QUICK = ["--input-size", "16", "--epochs", "2", "--steps", "1", "--workers", "1", "--batch-size", "16"]


@pytest.fixture(scope="module")
def pack(tmp_path_factory) -> Path:
    """120 generated UTKFace-layout faces of 48 px, packed at their native size."""
    pytest.importorskip("jax")
    from agegender.data.pack import write_pack
    from agegender.data.synth import synthesize

    root = tmp_path_factory.mktemp("kit_data")
    synthesize("utkface", root / "faces", 120, 0, size=48)
    write_pack("utkface", root / "faces", root / "pack", size=None, quality=80, workers=0)
    return root / "pack"


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "PYTHONPATH")}
    return {**env, "KERAS_BACKEND": "jax", "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu", **extra}


def test_the_kit_trains_under_jax_with_tensorflow_blocked(pack, tmp_path):
    out = tmp_path / "out"
    script = BLOCK_TENSORFLOW + textwrap.dedent(f"""
        import json, runpy
        sys.argv = ["gpu_kit", "run", "--data", {str(pack)!r}, "--out", {str(out)!r}, "--models", "speziali_dual",
                    "--precisions", "float32", *{QUICK!r}]
        try:
            runpy.run_module("agegender.gpu_kit", run_name="__main__")
        except SystemExit as done:
            assert not done.code, done.code
        assert not [m for m in sys.modules if m.split(".")[0] == "tensorflow"]
        from agegender.gpu_kit import MODELS
        from agegender.gpu_kit_build import train_flops
        flops, _ = train_flops(MODELS["speziali_dual"], 16)
        print(json.dumps({{"flops": flops}}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=_env(), cwd=tmp_path,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((out / "records" / "speziali_dual__float32.json").read_text())
    assert record["backend"] == "jax" and record["precision"] == "float32" and record["input_size"] == 16
    assert record["data"]["reencoded"] is True and record["data"]["quality"] == 80
    assert record["throughput"]["in_memory_img_s"] > 0 and len(record["throughput"]["fit_img_s_per_epoch"]) == 2
    assert len(record["history"]["loss"]) == 2 and all(np.isfinite(record["history"]["loss"]))
    # the split and the baseline, recomputed here from the pack
    from agegender.data.splits import make_split
    from agegender.data.utkface import read_utkface

    split = make_split(read_utkface(pack).frame, "speziali", seed=0)
    assert record["split"] == {p: len(split.part(p)) for p in ("train", "val", "test")}
    baseline = np.mean(np.abs(np.median(split.part("train")["age"]) - split.part("test")["age"]))
    assert record["test"]["baseline_age_mae_years"] == pytest.approx(baseline, abs=1e-3)
    assert 0 <= record["test"]["gender_accuracy"] <= 1
    table = (out / "throughput.md").read_text()
    assert f"| speziali_dual | float32 | 16 | 16 | {record['throughput']['in_memory_img_s']} |" in table
    assert "re-encoded pack" in (out / "results.md").read_text()
    # XLA's FLOPs of a training step against the convolutions counted by hand: forward 2 k^2 c_in c_out per output
    # pixel; backward up to twice that (XLA counted 2.5 times the forward work in all on this network)
    side, forward, channels = 16, 0, 3
    for filters, kernel in zip((64, 128, 256, 512), (3, 5, 3, 3)):
        forward += 2 * kernel * kernel * channels * filters * side * side
        channels, side = filters, side // 2
    flops = json.loads(done.stdout.strip().splitlines()[-1])["flops"]
    assert 2 * forward < flops < 3.5 * forward


def test_the_wheel_list_is_keras_and_what_a_jax_image_lacks():
    from importlib import metadata

    from agegender.gpu_kit_build import wheel_requirements

    wheels = dict(r.split("==") for r in wheel_requirements())
    assert {"keras", "namex", "optree", "rich", "markdown-it-py", "mdurl", "pygments", "absl-py", "packaging",
            "typing-extensions", "tqdm"} == set(wheels)
    assert all(wheels[name] == metadata.version(name) for name in wheels)  # the versions tested here


def _wheel(folder: Path, name: str, version: str, tag: str = "py3-none-any") -> Path:
    """A minimal wheel holding one module ``name`` with ``VALUE = 42``."""
    path = folder / f"{name}-{version}-{tag}.whl"
    info = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{name}.py", "VALUE = 42\n")
        archive.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        archive.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                          f"Tag: {tag}\n")
        archive.writestr(f"{info}/RECORD", "")
    return path


def test_missing_wheels_are_installed_offline_into_a_private_folder(tmp_path):
    from agegender.gpu_kit_build import missing_wheels

    wheels = tmp_path / "wheels"
    wheels.mkdir()
    from importlib import metadata

    _wheel(wheels, "keras", metadata.version("keras"))  # installed here at that version: not installed again
    _wheel(wheels, "agegender_kit_probe", "1.0")
    assert missing_wheels(wheels) == ["agegender_kit_probe-1.0-py3-none-any.whl"]
    site = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--target",
                           str(site), "agegender_kit_probe-1.0-py3-none-any.whl"], cwd=wheels, capture_output=True,
                          text=True, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    assert done.returncode == 0, done.stderr
    probe = subprocess.run([sys.executable, "-c", "import agegender_kit_probe as p; print(p.VALUE)"],
                           env={**os.environ, "PYTHONPATH": str(site)}, capture_output=True, text=True)
    assert probe.stdout.strip() == "42"
    _wheel(wheels, "agegender_binary_probe", "1.0", "cp39-cp39-manylinux2014_x86_64")
    with pytest.raises(DataError, match="not for CPython"):
        missing_wheels(wheels)


def _fake_wheel_cache(folder: Path) -> Path:
    from agegender.gpu_kit_build import wheel_requirements

    folder.mkdir()
    for requirement in wheel_requirements():
        name, version = requirement.split("==")
        _wheel(folder, name.replace("-", "_"), version)
    return folder


def test_the_kit_folder_holds_the_project_wheels_and_pack_within_the_limit(tmp_path):
    from agegender.data.synth import synthesize
    from agegender.gpu_kit_build import build_kit

    synthesize("utkface", tmp_path / "faces", 40, 1, size=200)
    cache = _fake_wheel_cache(tmp_path / "cache")
    kit = tmp_path / "kit"
    summary = build_kit(tmp_path / "faces", kit, quality=60, wheels_cache=cache, workers=0, pack_dir=tmp_path / "pack")
    names = subprocess.run(["tar", "-tzf", str(kit / "src.tar.gz")], capture_output=True, text=True).stdout.split()
    tracked = subprocess.run(["git", "-C", str(ROOT), "ls-tree", "-r", "--name-only", "HEAD"], capture_output=True,
                             text=True).stdout.split()
    tracked = [t for t in tracked if not t.startswith(("results/runs/", "results/figures/"))]  # records: the box's own
    assert "results/published/speziali.csv" in tracked and "agegender/gpu_kit.py" in tracked
    prefix = summary["commit"][:12] + "/"
    assert sorted(n[len(prefix):] for n in names if not n.endswith("/")) == sorted(tracked)
    assert sorted(p.name for p in (kit / "wheels").iterdir()) == summary["wheels"] == sorted(p.name for p in
                                                                                             cache.iterdir())
    from agegender.gpu_kit_build import unbundle

    assert sorted(p.name for p in kit.iterdir()) == ["README.md", "data", "kit.json", "run.sh", "src.tar.gz", "wheels"]
    assert unbundle(kit / "data" / "utkface.bundle", tmp_path / "out") == 42  # 40 images, labels, manifest
    packed = sorted(p.relative_to(tmp_path / "pack") for p in (tmp_path / "pack").rglob("*") if p.is_file())
    assert packed == sorted(p.relative_to(tmp_path / "out") for p in (tmp_path / "out").rglob("*")
                            if p.is_file() and not p.name.startswith("."))
    assert all((tmp_path / "pack" / p).read_bytes() == (tmp_path / "out" / p).read_bytes() for p in packed)
    assert json.loads((tmp_path / "out" / "agegender-pack.json").read_text())["images"] == 40
    on_disk = sum(p.stat().st_size for p in kit.rglob("*") if p.is_file())
    assert summary["total_bytes"] == on_disk <= 60_000_000
    assert json.loads((kit / "kit.json").read_text())["total_bytes"] == on_disk
    assert os.access(kit / "run.sh", os.X_OK) and f".src/{prefix}".rstrip("/") in (kit / "run.sh").read_text()
    assert subprocess.run(["bash", "-n", str(kit / "run.sh")]).returncode == 0
    assert "WebP quality 60" in (kit / "README.md").read_text()
    with pytest.raises(DataError, match="over 0.5 MB"):
        build_kit(tmp_path / "faces", kit, quality=60, wheels_cache=cache, workers=0, limit_mb=0.5,
                  pack_dir=tmp_path / "pack")


@pytest.mark.slow
def test_run_sh_runs_the_check_without_tensorflow(tmp_path):
    """The kit's own script end to end: nothing to install here (this interpreter has Keras), Speziali's CNN at both
    precisions, TensorFlow blocked in every process through a sitecustomize on PYTHONPATH."""
    pytest.importorskip("jax")
    from agegender.data.synth import synthesize
    from agegender.gpu_kit_build import build_kit

    synthesize("utkface", tmp_path / "faces", 100, 2, size=200)
    kit = tmp_path / "kit"
    build_kit(tmp_path / "faces", kit, quality=60, wheels_cache=_fake_wheel_cache(tmp_path / "cache"), workers=0,
              pack_dir=tmp_path / "pack")
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(BLOCK_TENSORFLOW)
    out = tmp_path / "out"
    env = {**_env(), "PYTHONPATH": str(blocker), "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(kit / "run.sh"), str(out), "--max-images", "100", "--models", "speziali_dual",
                           *QUICK], env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "keras" in done.stdout and "on jax" in done.stdout
    rows = json.loads((out / "throughput.json").read_text())
    assert {(r["model"], r["precision"]) for r in rows} == {("speziali_dual", "float32"),
                                                             ("speziali_dual", "mixed_float16")}
    assert all(r["backend"] == "jax" and r["in_memory_img_s"] > 0 for r in rows)
    assert not (kit / ".site").exists() or not any((kit / ".site").iterdir())
