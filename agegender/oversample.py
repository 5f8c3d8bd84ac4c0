"""Levi & Hassner's test-time over-sampling: predictions on ten crops of each test image.

Levi & Hassner (CVPR-W 2015, Sec. 3.2, "Over-sampling"): from each 256x256 test image take
five 227x227 crops, the four corners and the centre, and the horizontal reflection of each;
the prediction is the average over the ten. Jørgensen et al. report centre-crop results only
(their Table 3); the over-sampled accuracy is the standard Adience extra.

:func:`oversampled_predictions` runs a model over a dataset of *uncropped* images (build it
with ``build_dataset(..., image_size=load_size, load_size=load_size)``) and returns one
prediction per view, so the caller gets both protocols from one pass over the data:
``predictions[task][:, 0]`` is the centre crop (identical to the evaluation crop of
:func:`agegender.data.pipeline.build_dataset`: offset ``(load - crop) // 2``), and
``predictions[task].mean(axis=1)`` is Levi's over-sampled prediction.

View order (axis 1): centre, top-left, top-right, bottom-left, bottom-right, then the same
five mirrored left-right (``flip=False`` keeps only the first five).
"""

from __future__ import annotations

import numpy as np

__all__ = ["oversampled_predictions"]


def oversampled_predictions(model, dataset, crop_size: int, *, flip: bool = True) -> tuple[dict, dict, dict]:
    """Predict every view of every image of ``dataset``.

    Args:
        model: a Keras model whose outputs are a dict keyed by task (or a single tensor,
            named by ``model.output_names[0]``) and whose input is ``crop_size`` square.
        dataset: batches of ``(images [batch, H, W, 3], {task: label}, {task: weight})`` with
            ``H, W >= crop_size`` (uncropped, e.g. 256x256), as ``build_dataset`` yields them.
        crop_size: side of the crops (227 in the paper).
        flip: also predict the mirrored crops (Levi & Hassner: yes, ten views).

    Returns:
        ``(labels, predictions, weights)``, dicts of numpy arrays keyed by task, like
        :func:`agegender.training.collect_predictions`, except that ``predictions[task]`` has
        shape ``(n, views, *output_shape)`` with ``views`` 10 (or 5 without ``flip``).

    Raises:
        ValueError: an image is smaller than ``crop_size``.
    """
    from agegender.training import predict_batch

    labels, predictions, weights = {}, {}, {}
    size = None
    for images, y, w in dataset:
        images = np.asarray(images)  # a tf.data batch or the numpy loader's: the views are numpy slices (any backend)
        height, width = int(images.shape[1]), int(images.shape[2])
        if height < crop_size or width < crop_size:
            raise ValueError(f"images of {height}x{width} are smaller than the {crop_size} crop; build the "
                             "dataset with image_size=load_size so that it yields uncropped images")
        top, left = (height - crop_size) // 2, (width - crop_size) // 2
        corners = [(top, left), (0, 0), (0, width - crop_size), (height - crop_size, 0),
                   (height - crop_size, width - crop_size)]
        crops = [images[:, r:r + crop_size, c:c + crop_size, :] for r, c in corners]
        if flip:
            crops += [crop[:, :, ::-1, :] for crop in crops]  # mirrored left-right (tf.image.flip_left_right)
        per_view: dict[str, list] = {}
        for crop in crops:  # one view at a time: ten views of a 128-batch at once would need ~10x the memory
            out = predict_batch(model, crop, pad_to=size)
            for task in y:
                per_view.setdefault(task, []).append(out[task])
        size = size or len(images)
        for task in y:
            labels.setdefault(task, []).append(np.asarray(y[task]))
            predictions.setdefault(task, []).append(np.stack(per_view[task], axis=1))
            weights.setdefault(task, []).append(np.asarray(w[task]))
    join = lambda d: {k: np.concatenate(v) for k, v in d.items()}  # noqa: E731
    return join(labels), join(predictions), join(weights)
