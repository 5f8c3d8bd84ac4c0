"""Run a module as ``python -m`` would, with TensorFlow made unimportable (issue 20 item 1).

``python tests/without_tensorflow.py <module> [args ...]``: any ``import tensorflow`` (or of a
submodule) raises ImportError, so a run that finishes proves the path it took never needed
TensorFlow. Set ``KERAS_BACKEND`` (``jax``) in the environment before calling.
"""

from __future__ import annotations

import importlib.abc
import runpy
import sys


class _BlockTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname == "tensorflow" or fullname.startswith("tensorflow.") or fullname.startswith("tensorflow_"):
            raise ImportError(f"{fullname} is blocked: this run must not need TensorFlow")
        return None


def main() -> None:
    sys.meta_path.insert(0, _BlockTensorFlow())
    module, sys.argv = sys.argv[1], sys.argv[1:]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
