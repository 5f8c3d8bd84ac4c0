"""``tests/conftest.py`` gives each pytest-xdist worker its share of the cores (the suite's 2-core CI time
depends on it: 1,106 s without, 733 s with)."""

from __future__ import annotations

import os

import pytest

VARIABLES = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS", "XLA_FLAGS")


@pytest.mark.parametrize("cores, workers, threads", [(2, 2, "1"), (8, 2, "4"), (16, 3, "5"), (2, 1, None),
                                                     (4, None, None)])
def test_each_worker_gets_cores_over_workers_threads(monkeypatch, cores, workers, threads):
    from tests.conftest import _share_the_cores

    for name in VARIABLES + ("PYTEST_XDIST_WORKER_COUNT",):
        monkeypatch.delenv(name, raising=False)  # restored after the test, whatever _share_the_cores sets
    if workers is not None:
        monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", str(workers))
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    _share_the_cores()
    assert [os.environ.get(name) for name in VARIABLES[:3]] == [threads] * 3
    assert ("XLA_FLAGS" in os.environ) == (threads == "1")  # JAX's CPU backend has no thread-count variable


def test_a_thread_count_already_set_is_kept(monkeypatch):
    from tests.conftest import _share_the_cores

    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "3")
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    _share_the_cores()
    assert os.environ["TF_NUM_INTRAOP_THREADS"] == "3" and os.environ["OMP_NUM_THREADS"] == "1"
