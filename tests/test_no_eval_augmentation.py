"""Validation and test images are never augmented (issue 18 item 8), in the three reproductions that augment or
crop: Jørgensen (random 227 crops of 256 in training), Gu & Yang (flips and rotations in training) and Sundriyal
(no augmentation at all).

The faces are random-noise PNGs (lossless, at the size the pipeline loads, so no resize happens): every
validation or test image must equal, pixel for pixel, the file's pixels (or their centre crop, computed here
with numpy), while the training images of the same files must differ from them, so the check can see an
augmentation when there is one.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from agegender.data.splits import Split


def _faces(folder, n: int, size: int) -> tuple[pd.DataFrame, dict]:
    rng = np.random.default_rng(0)
    rows, pixels = [], {}
    for i in range(n):
        image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        path = folder / f"face{i:02d}.png"
        Image.fromarray(image).save(path)
        pixels[str(path)] = image
        rows.append({"path": str(path), "file": path.name, "age": 30.0 + i, "gender": i % 2, "race": i % 5,
                     "group": f"u{i}", "source": "test", "split": ("train", "val", "test")[i % 3]})
    return pd.DataFrame(rows), pixels


def _images(ds) -> np.ndarray:
    return np.concatenate([batch[0].numpy() for batch in ds])


def _check(ds, part: pd.DataFrame, pixels: dict, crop: int | None = None):
    """Every image of ``ds`` (in the order of ``part``) equals its file's pixels, or their centre ``crop``."""
    images = _images(ds)
    assert len(images) == len(part)
    for image, path in zip(images, part["path"]):
        want = pixels[path].astype(np.float32)
        if crop is not None:
            start = (want.shape[0] - crop) // 2
            want = want[start:start + crop, start:start + crop]
        np.testing.assert_array_equal(image, want)


def _augmented_somewhere(ds, part: pd.DataFrame, pixels: dict, crop: int | None = None) -> bool:
    """True when some training image differs from its file's (centre-cropped) pixels; training order is shuffled,
    so each image is compared with every file's."""
    images = _images(ds)
    references = []
    for path in part["path"]:
        want = pixels[path].astype(np.float32)
        if crop is not None:
            start = (want.shape[0] - crop) // 2
            want = want[start:start + crop, start:start + crop]
        references.append(want)
    return any(not any(np.array_equal(image, ref) for ref in references) for image in images)


def test_jorgensen_validation_gets_the_centre_crop_and_test_the_whole_image(tmp_path):
    from reproductions import adience_levi as A

    frame, pixels = _faces(tmp_path, 18, 32)
    frame = frame.assign(age_group=frame.index % 8, fold=0)
    split = Split("test", frame)
    exp = dataclasses.replace(A.EXPERIMENTS["multitask"], image_size=24, load_size=32, batch_size=4)
    train, val, test = A.make_datasets(exp, split, seed=0, bad_files=[])
    _check(val, split.part("val"), pixels, crop=24)  # the paper's centre crop
    _check(test, split.part("test"), pixels)  # the 256-equivalent whole image: the 10-crop views come from it
    for _ in range(2):  # and again: a second pass is the same
        _check(val, split.part("val"), pixels, crop=24)
    assert _augmented_somewhere(train, split.part("train"), pixels, crop=24)  # random crops in training


def test_gu_yang_validation_is_never_flipped_or_rotated(tmp_path):
    import reproductions.efficientnet_age_groups as gy

    frame, pixels = _faces(tmp_path, 18, 32)
    frame[gy.AGE_COLUMN] = frame.index % 3
    spec = gy.ModelSpec("utkface", "b4", "age+gender+race", 3)
    exp = dataclasses.replace(gy.GuYangExperiment(), input_size=32)
    assert exp.flip and exp.rotation_deg  # training does augment
    datasets = gy.make_datasets(frame, spec, exp, micro_batch=4, skipped=[])
    val = frame[frame["split"] == "val"].reset_index(drop=True)
    _check(datasets["val"], val, pixels)
    train = frame[frame["split"] == "train"].reset_index(drop=True)
    assert _augmented_somewhere(datasets["train"], train, pixels)


def test_sundriyal_validation_and_test_are_the_images_themselves(tmp_path):
    import reproductions.mtl_weighted_loss as sun

    frame, pixels = _faces(tmp_path, 18, 32)
    frame["coral_label"] = frame["age"] - 21.0
    split = Split("coral", frame)
    exp = dataclasses.replace(sun.SundriyalExperiment(), batch_size=4)
    datasets = sun.make_datasets(split, exp, ("gender", "race", "age"), 32, [])
    _check(datasets["val"], split.part("val"), pixels)
    _check(datasets["test"], split.part("test"), pixels)


@pytest.mark.parametrize("size, load", [(24, 32), (32, 32)])
def test_the_pipeline_ignores_an_augmentation_outside_training(tmp_path, size, load):
    """``build_dataset(training=False)`` with every augmentation switched on still gives the plain centre crop."""
    from agegender.data.pipeline import Augment, Target, build_dataset

    frame, pixels = _faces(tmp_path, 6, load)
    everything = Augment(flip=True, rotation_deg=30, brightness=0.5, contrast=0.5, saturation=0.5, hue=0.2)
    ds = build_dataset(frame, {"age": Target("age", "regression")}, image_size=size, load_size=load, batch_size=4,
                       training=False, augment=everything, pixel_scale=1.0)
    _check(ds, frame, pixels, crop=size if size != load else None)
