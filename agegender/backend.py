"""The Keras backend a run computes on, and what depends on it (issue 20 item 1: train on any backend).

TensorFlow is the default backend and its path is the suite's own (tf.data input, ``tf.distribute``,
``tf.config``). Under another Keras backend (``KERAS_BACKEND=jax``, ``torch``) the reproductions train
and evaluate without importing TensorFlow: :func:`agegender.data.inputs.dataset` feeds them from the
numpy loader, :func:`gpus` asks the backend for its accelerators, and what only TensorFlow can do
(``--strategy mirrored``/``multiworker``, prepared TFDS data, ``predict``/``export``) stops with one
line naming the backend and the fix (:func:`require_tensorflow`).

Nothing here imports TensorFlow unless the backend is TensorFlow.
"""

from __future__ import annotations

from agegender.errors import DataError


class BackendError(DataError):
    """A feature that needs another Keras backend: one line naming the backend and the fix."""


def name() -> str:
    """The Keras backend (``tensorflow``, ``jax``, ``torch`` ...): ``keras.backend.backend()`` once Keras is
    imported; before, what Keras will choose (``KERAS_BACKEND``, else ``backend`` in ``$KERAS_HOME/keras.json``
    or ``~/.keras/keras.json``, else ``tensorflow``), so that asking does not import Keras (and TensorFlow with
    it: a multi-worker strategy must be made before TensorFlow starts)."""
    import sys

    if "keras" in sys.modules:
        return sys.modules["keras"].backend.backend()
    import json
    import os

    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        with open(os.path.join(home, "keras.json"), encoding="utf-8") as handle:
            return str(json.load(handle).get("backend") or "tensorflow")
    except (OSError, ValueError, AttributeError):
        return "tensorflow"


def is_tensorflow() -> bool:
    return name() == "tensorflow"


def require_tensorflow(what: str, *, fix: str) -> None:
    """Raise :class:`BackendError` unless the backend is TensorFlow: ``what`` needs it, ``fix`` says what to do."""
    backend = name()
    if backend != "tensorflow":
        raise BackendError(f"{what} needs TensorFlow, but KERAS_BACKEND is {backend}", fix=fix)


def gpus() -> list[str]:
    """The names of the GPUs the backend computes on (empty on a CPU); never raises for a missing driver."""
    backend = name()
    if backend == "tensorflow":
        import tensorflow as tf

        return [tf.config.experimental.get_device_details(g).get("device_name", g.name)
                for g in tf.config.list_physical_devices("GPU")]
    if backend == "jax":
        import jax

        try:
            return [getattr(d, "device_kind", str(d)) for d in jax.devices("gpu")]
        except RuntimeError:  # no GPU backend in this jaxlib, or no device
            return []
    if backend == "torch":
        import torch

        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return []


def versions() -> dict:
    """The backend's name and the versions of its own packages (for a run record)."""
    from importlib import metadata

    backend = name()
    packages = {"tensorflow": ("tensorflow",), "jax": ("jax", "jaxlib"), "torch": ("torch",)}.get(backend, ())
    out: dict = {"name": backend}
    for package in packages:
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = None
    return out


def enable_determinism() -> str:
    """Make the backend's ops deterministic, as far as it can; returns how (for a log line).

    TensorFlow: ``tf.config.experimental.enable_op_determinism()``. JAX: XLA's deterministic GPU ops
    (``--xla_gpu_deterministic_ops=true`` in ``XLA_FLAGS``; read when JAX starts its GPU backend, so set
    before it computes anything; a CPU is deterministic already). PyTorch: ``use_deterministic_algorithms``.
    """
    backend = name()
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
        return "TensorFlow op determinism"
    if backend == "jax":
        import os

        flag = "--xla_gpu_deterministic_ops=true"
        if flag not in os.environ.get("XLA_FLAGS", ""):
            os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()
        return f"XLA_FLAGS {flag}"
    if backend == "torch":
        import torch

        torch.use_deterministic_algorithms(True)
        return "torch.use_deterministic_algorithms"
    return "none"
