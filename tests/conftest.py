"""Shared fixtures. Real files come from ``../shared/data`` (or ``$AGEGENDER_SHARED_DATA``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def _share_the_cores() -> None:
    """Under ``pytest -n N`` the workers share the cores: give each worker, and the TensorFlow or JAX subprocesses
    its tests start, ``cores // N`` compute threads. With the default one pool per process sized to all cores, two
    workers on 2 cores ran their thread pools against each other: 258 s of wall for three test files, 201 s with
    one thread each (2026-12-05, idle machine). Variables already set are left alone."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    threads = max(1, (os.cpu_count() or 1) // workers)
    if workers < 2 or threads >= (os.cpu_count() or 1):
        return
    for name in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS"):
        os.environ.setdefault(name, str(threads))
    if threads == 1:
        os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")


_share_the_cores()

# Modules whose tests take minutes (a shared fixture that trains on real faces, JAX subprocesses, EfficientNet
# smoke runs) go first, so that ``pytest -n 2`` starts them early and no worker is left alone with one at the
# end; the 2.5-minute fixture of the first keeps its three tests together in the first chunk a worker gets.
FIRST = ("test_jax_real_faces.py", "test_backends.py", "test_collapse.py", "test_efficientnet_age_groups.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(FIRST)))  # stable: the rest keep their order

ROOT = Path(__file__).resolve().parents[1]


def _shared_data() -> Path:
    return Path(os.environ.get("AGEGENDER_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real-data folder; tests that need it skip with the reason when it is absent."""
    path = _shared_data()
    if not path.is_dir():
        pytest.skip(f"real data not found at {path} (set AGEGENDER_SHARED_DATA to the shared/data folder)")
    return path


@pytest.fixture(scope="session")
def utkface_sample(shared_data) -> Path:
    path = shared_data / "utkface" / "sample"
    if not path.is_dir():
        pytest.skip(f"UTKFace sample not found at {path}")
    return path


@pytest.fixture(scope="session")
def utkface_full(shared_data) -> Path:
    """The whole real UTKFace set (23,707 files); tests skip with the reason when it is absent."""
    path = shared_data / "utkface" / "full"
    if not path.is_dir():
        pytest.skip(f"full UTKFace set not found at {path}")
    return path


@pytest.fixture(scope="session")
def adience_folds(shared_data) -> Path:
    path = shared_data / "adience" / "folds"
    if not path.is_dir():
        pytest.skip(f"Adience fold files not found at {path}")
    return path


@pytest.fixture(scope="session")
def coral_dir(shared_data) -> Path:
    path = shared_data / "utkface" / "coral"
    if not path.is_dir():
        pytest.skip(f"CORAL csv files not found at {path}")
    return path


# the predict and export tests' fake run folder (a tiny random-weight model) and real photograph, made once per module
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from tests.helpers import _spec, _tiny_model, _write_run

    return _write_run(tmp_path_factory.mktemp("runs") / "tiny" / "run1", _tiny_model(), _spec())


@pytest.fixture(scope="module")
def astronaut_png(tmp_path_factory):
    import skimage.data
    from PIL import Image

    path = tmp_path_factory.mktemp("photos") / "astronaut.png"
    Image.fromarray(skimage.data.astronaut()).save(path)
    return path
