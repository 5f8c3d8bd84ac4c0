"""Shared fixtures. Real files come from ``../shared/data`` (or ``$AGEGENDER_SHARED_DATA``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

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
