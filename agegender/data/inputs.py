"""The one place a reproduction's input path is chosen, by Keras backend (issue 20 item 1).

:func:`dataset` takes :func:`agegender.data.pipeline.build_dataset`'s arguments and returns the batches
``(images, {task: label}, {task: weight})`` of one split with an exact number of batches:

* Keras backend **TensorFlow** (the default): the tf.data pipeline, ``build_dataset``, with its
  cardinality asserted (``ceil(rows / batch)``; without it Keras 3 adds an empty step per epoch and
  skews the per-output losses); unchanged from what the reproductions did before;
* any **other backend** (``KERAS_BACKEND=jax``, ``torch``): the numpy loader,
  :func:`agegender.data.loader.keras_dataset`, a ``keras.utils.PyDataset`` with the same semantics
  (the same crop, resize, pixel scaling and augmentation, a uniform shuffle per epoch, files that
  fail the check skipped and reported, batches prepared in worker processes). TensorFlow is not
  imported. ``AGEGENDER_LOADER_WORKERS`` sets the worker processes of each dataset (default: the
  usable cores less one; 0 prepares batches in the training process).

Either is iterated the same way (``for images, labels, weights in ds``) and given to ``model.fit``
(``shuffle=False``: both shuffle themselves) and :func:`agegender.training.collect_predictions`.
"""

from __future__ import annotations

import math
import os

__all__ = ["dataset", "uses_tf_data"]


def uses_tf_data() -> bool:
    """True when the datasets are tf.data's (the Keras backend is TensorFlow), False for the numpy loader."""
    from agegender.backend import is_tensorflow

    return is_tensorflow()


def dataset(samples, targets, *, batch_size: int = 64, drop_remainder: bool = False, report: list | None = None,
            **options):
    """One split's batches on this backend's input path (module docstring); ``build_dataset``'s arguments.

    ``report`` receives ``{file, reason}`` for each file left out (the same list may collect several
    datasets' reports)."""
    report = report if report is not None else []
    frame = getattr(samples, "frame", samples)
    before = len(report)
    if uses_tf_data():
        import tensorflow as tf

        from agegender.data.pipeline import build_dataset

        ds = build_dataset(samples, targets, batch_size=batch_size, drop_remainder=drop_remainder, report=report,
                           **options)
        rows = len(frame) - (len(report) - before)
        batches = rows // batch_size if drop_remainder else math.ceil(rows / batch_size)
        return ds.apply(tf.data.experimental.assert_cardinality(batches))
    from agegender.data.loader import keras_dataset

    workers = os.environ.get("AGEGENDER_LOADER_WORKERS")
    return keras_dataset(samples, targets, batch_size=batch_size, drop_remainder=drop_remainder, report=report,
                         workers=int(workers) if workers not in (None, "") else None, **options)
