"""The preprocessing behind ``python -m agegender predict`` (``agegender.preprocess``, issue 8): one function equal
to the evaluation pipeline (resizing, test-time-augmentation views), the preprocessing spec and its record,
decoding every kind of head, cropping (padding, aspect, eye alignment) and reading images with their EXIF
orientation. The spec comes from ``tests/helpers.py``, the ``astronaut_png`` photograph from
``tests/conftest.py``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from agegender.errors import DataError
from agegender.preprocess import (ADIENCE_GROUP_AGES, FaceCrop, Head, Preprocessing, decode_heads, from_record,
                                  preprocess_faces, resize_uint8, to_model_input, tta_views)
from tests.helpers import _spec


# --------------------------------------------------------------------------------------------
# preprocessing: one function, equal to the evaluation pipeline


@pytest.mark.parametrize("image_size,load_size,pixel_scale,fmt,shape", [
    (227, 256, 1.0, "png", None),        # Levi & Hassner: 256 -> centre 227, raw pixels
    (64, 64, 1 / 255, "jpg", (150, 200)),  # no crop, [0, 1] pixels, a non-square JPEG
])
def test_preprocess_matches_build_dataset(tmp_path, astronaut_png, image_size, load_size, pixel_scale, fmt, shape):
    import pandas as pd
    import skimage.data
    from PIL import Image

    from agegender.data.pipeline import Target, build_dataset
    from agegender.predict import read_image

    image = skimage.data.astronaut()
    if shape is not None:
        image = np.asarray(Image.fromarray(image).resize(shape[::-1]))
    path = tmp_path / f"face.{fmt}"
    Image.fromarray(image).save(path)
    frame = pd.DataFrame({"path": [str(path)], "age": [30.0]})
    ds = build_dataset(frame, {"age": Target("age", "regression")}, image_size=image_size, load_size=load_size,
                       pixel_scale=pixel_scale, batch_size=1, cache=False)
    expected = next(iter(ds))[0].numpy()
    spec = _spec(input_size=image_size, load_size=load_size, pixel_scale=pixel_scale)
    got = preprocess_faces(read_image(path), spec).numpy()
    assert got.shape == expected.shape == (1, image_size, image_size, 3)
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_matmul_resize_equals_tf_resize():
    import tensorflow as tf

    rng = np.random.default_rng(0)
    for height, width, size in [(512, 512, 227), (37, 211, 64), (13, 13, 227), (200, 200, 200), (300, 451, 128),
                                (200, 200, 128), (150, 250, 160), (255, 90, 128)]:  # the last three: bilinear
        image = tf.constant(rng.integers(0, 256, (height, width, 3)).astype(np.uint8))
        a = resize_uint8(image, size).numpy().astype(int)
        b = resize_uint8(image, size, method="matmul").numpy().astype(int)
        assert np.abs(a - b).max() <= 1 and (a != b).mean() < 1e-3


def test_resize_antialiases_from_a_factor_of_two():
    import tensorflow as tf

    from agegender.preprocess import ANTIALIAS_FROM

    rng = np.random.default_rng(2)
    for height, width, size in [(200, 200, 128), (255, 90, 128), (256, 256, 128), (816, 816, 227), (64, 64, 128)]:
        image = tf.constant(rng.integers(0, 256, (height, width, 3)).astype(np.uint8))
        antialias = max(height, width) >= ANTIALIAS_FROM * size
        reference = tf.image.resize(image, (size, size), antialias=antialias)
        expected = tf.cast(tf.clip_by_value(tf.round(reference), 0, 255), tf.uint8).numpy()
        np.testing.assert_array_equal(resize_uint8(image, size).numpy(), expected)
        other = tf.image.resize(image, (size, size), antialias=not antialias)
        if size < max(height, width):  # a downscale: the two kernels differ, so the test can tell them apart
            assert np.abs(tf.round(other).numpy() - expected).max() > 0


def test_tta_views_order_and_count():
    spec = _spec(input_size=32, load_size=40)
    loaded = np.random.default_rng(1).integers(0, 256, (2, 40, 40, 3)).astype(np.uint8)
    views = tta_views(loaded, spec).numpy()
    assert views.shape == (2, 10, 32, 32, 3)
    np.testing.assert_array_equal(views[:, 0], to_model_input(loaded, spec).numpy())  # view 0: the eval input
    np.testing.assert_array_equal(views[:, 5], views[:, 0][:, :, ::-1])  # view 5: its mirror
    np.testing.assert_array_equal(views[:, 1], loaded[:, :32, :32].astype("float32"))  # top-left
    flat = tta_views(loaded[:, 4:36, 4:36], _spec(input_size=32, load_size=32)).numpy()
    assert flat.shape == (2, 2, 32, 32, 3)  # no larger image to crop from: the face and its mirror


# --------------------------------------------------------------------------------------------
# the spec and the record


def test_spec_round_trip_and_validation():
    spec = _spec(heads={"age": Head.adience_groups(), "gender": Head.gender_softmax(),
                        "race": Head.race_softmax("ethnicity")})
    data = json.loads(json.dumps(spec.to_dict()))
    assert Preprocessing.from_dict(data) == spec
    assert data["heads"]["race"]["output"] == "ethnicity" and data["face"]["alignment"] == "eyes"
    assert Preprocessing.from_dict({"input_size": 64, "heads": {"age": {"kind": "regression"}}}).load_size == 64
    with pytest.raises(ValueError, match="gender head kind"):
        _spec(heads={"gender": Head("regression", "gender")})
    with pytest.raises(ValueError, match="load_size"):
        _spec(input_size=64, load_size=32)
    with pytest.raises(ValueError, match="alignment"):
        FaceCrop(alignment="sideways")
    with pytest.raises(ValueError, match="one value"):
        _spec(heads={"age": Head("groups", "age", labels=("a", "b"), values=(1.0,))})


def test_record_without_preprocessing_is_one_line_error(tmp_path):
    with pytest.raises(DataError) as err:
        from_record({"status": "complete"}, tmp_path / "record.json")
    message = str(err.value)
    assert "\n" not in message and "record.json" in message and "lacks preprocessing" in message
    assert "fix:" in message


def test_gu_yang_groups_values():
    head = Head.gu_yang_groups(3)
    assert head.labels == ("1-26", "27-52", "53-80") and head.values == (13.5, 39.5, 66.5)
    assert len(Head.gu_yang_groups(10).labels) == 10


# --------------------------------------------------------------------------------------------
# head decoding, every kind


def test_decode_regression_sigmoid_and_groups():
    spec = _spec(heads={"age": Head.age_regression(scale=1 / 40, offset=21)})  # Sundriyal: (age - 21) / 40
    assert decode_heads({"age": np.array([[0.5], [0.0]])}, spec) == [{"age": 41.0}, {"age": 21.0}]
    spec = _spec(heads={"age": Head.age_sigmoid(65)})  # Dey: sigmoid of age / 65
    assert decode_heads({"age": np.array([[0.4]])}, spec)[0]["age"] == pytest.approx(26.0)
    spec = _spec(heads={"age": Head.adience_groups()})
    probs = np.zeros((2, 8))
    probs[0, 4] = 1.0
    probs[1, [2, 3]] = 0.5
    out = decode_heads({"age": probs}, spec)
    assert out[0] == {"age": 28.5, "age_group": "(25, 32)", "age_group_prob": 1.0}
    assert out[1]["age"] == pytest.approx((ADIENCE_GROUP_AGES[2] + ADIENCE_GROUP_AGES[3]) / 2)
    assert out[1]["age_group"] in ("(8, 12)", "(15, 20)") and out[1]["age_group_prob"] == pytest.approx(0.5)
    spec = _spec(heads={"age": Head.gu_yang_groups(3)})
    out = decode_heads({"age": np.array([[0.1, 0.2, 0.7]])}, spec)[0]
    assert out["age_group"] == "53-80" and out["age"] == pytest.approx(0.1 * 13.5 + 0.2 * 39.5 + 0.7 * 66.5)


def test_decode_gender_and_race():
    spec = _spec(heads={"gender": Head.gender_sigmoid(), "race": Head.race_softmax("ethnicity")})
    out = decode_heads({"gender": np.array([[0.9], [0.2]]),
                        "ethnicity": np.array([[0.1, 0.6, 0.1, 0.1, 0.1], [0.7, 0.1, 0.1, 0.05, 0.05]])}, spec)
    assert out[0] == {"gender": "female", "gender_prob": pytest.approx(0.9), "race": "black",
                      "race_prob": pytest.approx(0.6)}
    assert out[1]["gender"] == "male" and out[1]["gender_prob"] == pytest.approx(0.8) and out[1]["race"] == "white"
    spec = _spec(heads={"gender": Head.gender_softmax()})
    assert decode_heads({"gender": np.array([[0.3, 0.7]])}, spec)[0] == {"gender": "female",
                                                                          "gender_prob": pytest.approx(0.7)}
    with pytest.raises(DataError, match="no output named 'race'"):
        decode_heads({"gender": np.array([[0.3, 0.7]])}, _spec(heads={"race": Head.race_softmax()}))
    with pytest.raises(DataError, match="needs 2"):
        decode_heads({"gender": np.array([[0.3, 0.3, 0.4]])}, spec)


# --------------------------------------------------------------------------------------------
# cropping


def test_crop_face_axis_aligned_padding_and_alignment():
    from agegender.predict import Detection, crop_face

    image = np.arange(100 * 120 * 3, dtype=np.uint32).reshape(100, 120, 3).astype(np.uint8)
    det = Detection((30.0, 20.0, 40.0, 40.0), 1.0, None)
    np.testing.assert_array_equal(crop_face(image, det, FaceCrop()), image[20:60, 30:70])
    wide = crop_face(image, det, FaceCrop(margin=1.0))  # 120x120 around (50, 40): x -10..110, y -20..100
    assert wide.shape == (120, 120, 3)
    np.testing.assert_array_equal(wide[20:, 10:], image[:, :110])
    np.testing.assert_array_equal(wide[:20, 10:], np.repeat(image[:1, :110], 20, axis=0))  # edge padding
    black = crop_face(image, det, FaceCrop(margin=1.0, pad="constant"))
    assert black[:20].max() == 0 and black[:, :10].max() == 0
    tall = crop_face(image, det, FaceCrop(aspect=1.5))
    assert tall.shape == (60, 40, 3)
    assert crop_face(image, det, FaceCrop(), whole_image=True) is image

    # two dark "eyes" on a line tilted by 20 degrees: the aligned crop has them level
    canvas = np.full((200, 200, 3), 255, np.uint8)
    import cv2

    angle = np.radians(20)
    centre = np.array([100.0, 100.0])
    left, right = centre + 30 * np.array([-np.cos(angle), -np.sin(angle)]), centre + 30 * np.array(
        [np.cos(angle), np.sin(angle)])
    for point in (left, right):
        cv2.circle(canvas, tuple(int(round(v)) for v in point), 5, (0, 0, 0), -1)
    det = Detection((60.0, 60.0, 80.0, 80.0), 1.0, {"left_eye": tuple(left), "right_eye": tuple(right)})
    crop = crop_face(canvas, det, FaceCrop(alignment="eyes"))
    dark = np.argwhere(crop[..., 0] < 100)
    left_half, right_half = dark[dark[:, 1] < 40], dark[dark[:, 1] >= 40]
    assert abs(left_half[:, 0].mean() - right_half[:, 0].mean()) < 1.5  # same row
    assert abs(left_half[:, 0].mean() - 40) < 2  # on the centre row


def test_read_image_applies_exif_orientation(tmp_path):
    from PIL import Image, ImageOps

    from agegender.predict import read_image

    pixels = np.random.default_rng(5).integers(0, 256, (20, 30, 3)).astype(np.uint8)
    for orientation in range(1, 9):
        image = Image.fromarray(pixels)
        exif = image.getexif()
        exif[0x0112] = orientation
        path = tmp_path / f"o{orientation}.png"
        image.save(path, exif=exif)
        with Image.open(path) as handle:
            expected = np.asarray(ImageOps.exif_transpose(handle).convert("RGB"))
        np.testing.assert_array_equal(read_image(path), expected)
