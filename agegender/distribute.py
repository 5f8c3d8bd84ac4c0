"""Training on several devices with ``tf.distribute``: the ``--strategy`` of every reproduction.

``make_strategy(name)`` returns the strategy a reproduction builds and compiles its models
under (``with strategy.scope(): ...``); Keras 3's ``model.fit`` then splits every batch across
the replicas, runs the forward and backward pass on each, all-reduces the gradients and
applies one update to the mirrored weights.

Strategies
----------
``default``
    ``tf.distribute.get_strategy()``: no distribution, one device (TensorFlow's choice: the
    first GPU if there is one, else the CPU). What the reproductions always did. Under a Keras
    backend other than TensorFlow (``KERAS_BACKEND=jax``) it is the only choice: no strategy
    (None), the backend's first device; ``mirrored`` and ``multiworker`` are then one line
    (:class:`StrategyError`), since ``tf.distribute`` is TensorFlow's.
``mirrored``
    ``tf.distribute.MirroredStrategy`` over every visible GPU of this machine (select them
    with ``CUDA_VISIBLE_DEVICES=0,1 ...``); on a machine without a GPU, over every logical CPU
    device (normally one: a single replica; tests split the CPU into two logical devices to
    check the arithmetic).
``multiworker``
    ``tf.distribute.MultiWorkerMirroredStrategy``: the same synchronous data parallelism
    across several machines (every GPU of every worker is a replica). Each worker runs the
    **same command** with its own ``TF_CONFIG`` environment variable, a JSON object naming every
    worker and this process's place among them, e.g. on the first of two machines::

        export TF_CONFIG='{"cluster": {"worker": ["host1:12345", "host2:12345"]},
                           "task": {"type": "worker", "index": 0}}'
        python -m reproductions.utkface_dual_cnn --data-dir DIR --strategy multiworker --out OUT0

    and on the second the same ``cluster`` with ``"index": 1`` (and its own ``--out``). Worker 0
    is the chief; its output folder holds the result (the other workers write the same records
    and tables, which should be thrown away: give each worker its own ``--out`` so that they do
    not overwrite each other's files). Every worker must see the same data at the same path,
    since each reads the whole list and takes its share. Without ``TF_CONFIG`` the strategy
    runs as a single worker (like ``mirrored``). ``TF_CONFIG`` is read when the strategy is
    created, first thing in a run (:func:`start_early`). **With Keras 3.15 several workers do
    not work** (see the end of this docstring): the run stops at once, with the reason.

Batch size and learning rate
----------------------------
The batch size a reproduction states (the paper's, or ``--batch-size``) is the **global**
batch: the number of images per optimizer update, whatever the number of replicas. Each
replica gets ``global batch / replicas`` images per step (:func:`per_replica_batch`); a
global batch that the replicas do not divide is an error naming the flag to change, never a
silent change of the batch. The per-replica losses are averages over the replica's images,
scaled by ``1 / replicas`` and summed, so one mirrored step computes the same loss and the
same update as one single-device step on the same global batch (up to float rounding; tested
with two logical CPU devices in ``tests/test_distribute.py``). Two exceptions, both because
statistics are computed per replica: batch normalisation normalises each replica's share of
the batch with that share's mean and variance (Keras's default ``synchronized=False``), and a
masked per-task mean (``mean_with_sample_weight``, missing labels weighing 0) is the mean of
the replicas' masked means, equal to the global one only when each replica holds the same
number of labelled images. The last, smaller batch of an epoch is likewise split unevenly.

The **learning rate is the paper's**, unchanged: it was tuned for the paper's (global)
batch, and the global batch does not change with the number of replicas, so there is nothing
to rescale (no "linear scaling rule"). A user who changes the batch size changes the setting
the learning rate was tuned for; the table notes say so.

The run records name the strategy, the number of replicas and the per-replica batch
(``config["strategy"]``, :func:`strategy_config`); like every config entry they are part of
the fingerprint, so a run is resumed only under the strategy and replica count it started with.

What a strategy does not support here raises :class:`StrategyError` (a one-line
:class:`~agegender.errors.DataError`, exit status 2), naming the flags to change:

- gradient accumulation (``keras.optimizers.Optimizer(gradient_accumulation_steps=...)``
  fails under ``MirroredStrategy``; :func:`require_single_replica`);
- a loss computed outside Keras's losses that is not divided by the replica count (the
  Sundriyal reproduction's learned loss weighting);
- **several workers with this Keras**: Keras 3's ``fit`` (3.15 at least) fails in multi-worker
  mode when it reduces the scalar loss (tensorflow/tensorflow#72388), so ``multiworker`` with a
  ``TF_CONFIG`` of two or more workers stops at once with that message (checked with two local
  CPU workers); without ``TF_CONFIG`` it runs as one worker. The check passes by itself once
  Keras reduces scalars correctly.

Keras's ``fit`` also learns input shapes by averaging the first distributed batch over the
replicas, which fails when a split smaller than one global batch is split unevenly (49 images
on 2 replicas); :func:`agegender.training.train` takes the first replica's share instead.
"""

from __future__ import annotations

import json
import os

from agegender.errors import DataError

STRATEGIES = ("default", "mirrored", "multiworker")
STRATEGY_HELP = ("how to spread training over devices (tf.distribute): default = one device (the first GPU, else "
                 "the CPU); mirrored = every visible GPU of this machine (CUDA_VISIBLE_DEVICES selects them), or "
                 "every logical CPU without a GPU; multiworker = several machines, each running the same command "
                 "with its own TF_CONFIG (python -m pydoc agegender.distribute). The batch size stays the paper's "
                 "global batch (images per update): each of the N replicas gets batch/N images per step, which "
                 "must divide evenly; the learning rate stays the paper's, with no scaling (it was tuned for that "
                 "global batch). Default: default")
_CACHE: dict = {}


class StrategyError(DataError):
    """A setting that the chosen ``--strategy`` cannot run: one line naming the flags to change."""


def make_strategy(name: str):
    """The ``tf.distribute`` strategy called ``name`` (``default``, ``mirrored``, ``multiworker``).

    See the module docstring for what each does. A strategy is created once per process and
    returned again on later calls (``MultiWorkerMirroredStrategy`` may only be created once).
    Raises ``ValueError`` listing the choices for an unknown name, :class:`StrategyError` for a
    malformed ``TF_CONFIG`` or a multi-worker strategy created too late.
    """
    key = str(name).strip().lower()
    if key not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    if not _tensorflow_backend():
        return _no_tf_distribute(key)
    if key in _CACHE:
        return _CACHE[key]
    if key == "multiworker":
        _check_tf_config()  # before TensorFlow loads: a malformed TF_CONFIG is one line
    import tensorflow as tf

    if key == "default":
        strategy = tf.distribute.get_strategy()
    elif key == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        strategy = tf.distribute.MirroredStrategy(devices=[d.name for d in devices])
    else:
        try:
            strategy = tf.distribute.MultiWorkerMirroredStrategy()
        except RuntimeError as err:  # "Collective ops must be configured at program startup"
            raise StrategyError(f"cannot start the multi-worker strategy ({str(err).splitlines()[0]})",
                                fix="create it before TensorFlow runs anything (start_early('multiworker') first "
                                    "in the process), and check TF_CONFIG") from None
        _check_keras_multi_worker(strategy)
    _CACHE[key] = strategy
    return strategy


def _tensorflow_backend() -> bool:
    from agegender.backend import is_tensorflow

    return is_tensorflow()


def _no_tf_distribute(key: str):
    """Under a Keras backend other than TensorFlow: ``default`` is no strategy at all (None: one device, the
    backend's first), the others are one line (``tf.distribute`` is TensorFlow's)."""
    if key == "default":
        return None
    from agegender.backend import name

    raise StrategyError(f"--strategy {key} is tf.distribute, which needs TensorFlow, but KERAS_BACKEND is {name()}",
                        fix="use --strategy default (one device) under this backend, or KERAS_BACKEND=tensorflow")


def start_early(name: str) -> None:
    """Create the ``multiworker`` strategy now (a no-op for the others).

    ``MultiWorkerMirroredStrategy`` configures TensorFlow's collective ops, which must happen before
    TensorFlow runs any operation; a reproduction calls this first, before it checks weights or
    builds anything, and :func:`make_strategy` returns the same strategy later.
    """
    if str(name).strip().lower() == "multiworker":
        make_strategy("multiworker")  # under another backend than TensorFlow: the one-line StrategyError


def _check_keras_multi_worker(strategy) -> None:
    """Refuse several workers when Keras's ``fit`` cannot reduce its metrics across them.

    Keras 3 (up to 3.15 at least; tensorflow/tensorflow#72388) reduces the per-replica step outputs
    of ``fit`` in multi-worker mode with ``strategy.reduce("MEAN", value, axis=0)``, which fails on
    the scalar loss and metrics ("Invalid reduction dimension 0 for input with 0 dimensions"). The
    same reduction is tried here on a scalar, so the run stops at once with the fix instead of
    after the data are read; once Keras reduces scalars correctly the check passes (every worker
    runs it, so the collective it then performs is matched).
    """
    in_multi_worker = getattr(strategy.extended, "_in_multi_worker_mode", lambda: False)()
    if not in_multi_worker:
        return  # one worker (no TF_CONFIG): the local devices, as mirrored
    try:
        from keras.src.backend.tensorflow.trainer import reduce_per_replica
    except ImportError:  # another Keras layout: nothing to check against
        return
    import tensorflow as tf

    try:
        reduce_per_replica(strategy.run(lambda: tf.constant(1.0)), strategy, reduction="auto")
    except (ValueError, tf.errors.InvalidArgumentError):
        import keras

        raise StrategyError(f"Keras {keras.__version__}'s model.fit cannot run MultiWorkerMirroredStrategy across "
                            "several workers (it reduces the scalar loss along axis 0; tensorflow/tensorflow#72388)",
                            fix="use --strategy mirrored on one machine with several GPUs, or a Keras release that "
                                "fixes multi-worker fit") from None


def _check_tf_config() -> None:
    text = os.environ.get("TF_CONFIG")
    if not text:
        return  # a single worker: MultiWorkerMirroredStrategy over this machine's devices
    fix = ("set TF_CONFIG to a JSON object such as {\"cluster\": {\"worker\": [\"host1:12345\", \"host2:12345\"]}, "
           "\"task\": {\"type\": \"worker\", \"index\": 0}} (index = this worker's place in the list)")
    try:
        config = json.loads(text)
    except ValueError as err:
        raise StrategyError(f"TF_CONFIG is not valid JSON ({err})", fix=fix) from None
    if not isinstance(config, dict):
        raise StrategyError("TF_CONFIG must be a JSON object", fix=fix)
    workers = (config.get("cluster") or {}).get("worker")
    task = config.get("task") or {}
    if not isinstance(workers, list) or not workers:
        raise StrategyError("TF_CONFIG has no cluster.worker list", fix=fix)
    index = task.get("index")
    if task.get("type") not in ("worker", "chief") or not isinstance(index, int) or not 0 <= index < len(workers):
        raise StrategyError(f"TF_CONFIG task {task!r} is not one of the {len(workers)} workers", fix=fix)


def replicas(strategy) -> int:
    """Replicas that share each batch (1 for ``default``, and for no strategy: None, a backend other than
    TensorFlow)."""
    return 1 if strategy is None else int(strategy.num_replicas_in_sync)


def per_replica_batch(global_batch: int, strategy, *, flag: str | None = "--batch-size") -> int:
    """Images each replica gets per step: ``global_batch / replicas``, which must be a whole number.

    ``strategy`` is a strategy or a replica count. ``flag`` names the option that sets the global
    batch in the error message (None: the reproduction has none).
    """
    n = strategy if isinstance(strategy, int) else replicas(strategy)
    global_batch = int(global_batch)
    if n < 1 or global_batch < 1:
        raise ValueError(f"need a positive batch and replica count, got batch {global_batch}, {n} replicas")
    if global_batch % n:
        lower, upper = global_batch - global_batch % n, global_batch - global_batch % n + n
        fixes = [f"pass {flag} {lower or upper} or {upper} (a multiple of {n})"] if flag else []
        fixes.append(f"make the number of devices divide {global_batch} (CUDA_VISIBLE_DEVICES), or --strategy default")
        raise StrategyError(f"the global batch of {global_batch} images cannot be split evenly over {n} replicas "
                            f"(the batch size is the global batch; each replica gets batch/{n})",
                            fix="; or ".join(fixes))
    return global_batch // n


def strategy_config(name: str, strategy, global_batch: int, *, flag: str | None = "--batch-size") -> dict:
    """``{"name", "replicas", "per_replica_batch"}`` for the run record's config (checks divisibility)."""
    return {"name": str(name), "replicas": replicas(strategy),
            "per_replica_batch": per_replica_batch(global_batch, strategy, flag=flag)}


def require_single_replica(strategy, what: str, *, fix: str, why: str | None = None) -> None:
    """Raise :class:`StrategyError` when ``strategy`` has more than one replica: ``what`` cannot run then
    (``why`` says why, ``fix`` which flags to change)."""
    n = replicas(strategy)
    if n > 1:
        raise StrategyError(f"{what} cannot run with {n} replicas (tf.distribute)" + (f": {why}" if why else ""),
                            fix=fix)
