"""``python -m agegender predict`` / ``export`` (issue 8): detection, cropping, preprocessing, decoding, outputs.

Tiny random-weight models built here and fake run folders stand in for trained runs (no
training). MTCNN is loaded once per module.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from agegender.errors import DataError
from agegender.preprocess import (ADIENCE_GROUP_AGES, FACE_PRESETS, FaceCrop, Head, Preprocessing, decode_heads,
                                  from_record, preprocess_faces, resize_uint8, to_model_input, tta_views)

ASTRONAUT_FACE = (180, 64, 265, 171)  # x0, y0, x1, y1 of the face in skimage's 512x512 astronaut


# --------------------------------------------------------------------------------------------
# fixtures


def _tiny_model(size=32, *, race_name="race", gender_units=1):
    import keras

    inputs = keras.Input((size, size, 3), name="image")
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = {"age": keras.layers.Dense(1, name="age")(x),
               "gender": keras.layers.Dense(gender_units, activation="sigmoid" if gender_units == 1 else "softmax",
                                            name="gender")(x),
               race_name: keras.layers.Dense(5, activation="softmax", name=race_name)(x)}
    return keras.Model(inputs, outputs)


def _spec(**changes):
    base = dict(input_size=32, load_size=40, pixel_scale=1.0, face=FACE_PRESETS["utkface"],
                heads={"age": Head.age_regression(scale=0.1, offset=30), "gender": Head.gender_sigmoid(),
                       "race": Head.race_softmax()})
    base.update(changes)
    return Preprocessing(**base)


def _write_run(folder: Path, model, spec: Preprocessing | None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "model.keras")
    record = {"schema": 1, "reproduction": "test", "experiment": "tiny", "status": "complete"}
    if spec is not None:
        record["preprocessing"] = spec.to_dict()
    (folder / "record.json").write_text(json.dumps(record), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def detector():
    from agegender.predict import MTCNNDetector

    return MTCNNDetector()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return _write_run(tmp_path_factory.mktemp("runs") / "tiny" / "run1", _tiny_model(), _spec())


@pytest.fixture(scope="module")
def astronaut_png(tmp_path_factory):
    import skimage.data
    from PIL import Image

    path = tmp_path_factory.mktemp("photos") / "astronaut.png"
    Image.fromarray(skimage.data.astronaut()).save(path)
    return path


def _iou(a, b):
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    return inter / (aw * ah + bw * bh - inter)


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


# --------------------------------------------------------------------------------------------
# detection on a real photograph and on drawn faces


def test_astronaut_face_found_annotated_png_and_json(tmp_path, run_dir, astronaut_png, detector):
    from PIL import Image

    from agegender.predict import predict_paths

    summary = predict_paths(run_dir, [astronaut_png], out_dir=tmp_path / "out", csv_path=tmp_path / "p.csv",
                            detector=detector, progress=False)
    entries = json.loads((tmp_path / "out" / "predictions.json").read_text())["results"]
    assert summary["faces"] == 1 and len(entries) == 1
    face = entries[0]["faces"][0]
    x, y, w, h = face["box"]
    x0, y0, x1, y1 = ASTRONAUT_FACE
    assert _iou((x, y, w, h), (x0, y0, x1 - x0, y1 - y0)) > 0.7
    assert x0 - 10 <= x and x + w <= x1 + 10 and y0 - 10 <= y and y + h <= y1 + 10
    assert face["det_score"] > 0.95
    assert set(face) == {"box", "det_score", "age", "gender", "gender_prob", "race", "race_prob"}
    assert face["gender"] in ("male", "female") and 0.5 <= face["gender_prob"] <= 1
    assert face["race"] in ("white", "black", "asian", "indian", "others")
    png = Path(entries[0]["annotated"])
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as annotated:
        assert annotated.size == (512, 512)
    rows = (tmp_path / "p.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[0].startswith("input,frame,time_s,face,x,y,w,h")


def test_synthetic_canvas_every_face_found(tmp_path, detector):
    """Eight generated faces pasted on a canvas: each one is found, its box overlapping the drawn head (IoU > 0.5).

    Drawn faces are not photographs: at thresholds 0.5/0.5/0.5 MTCNN finds about 80% of them
    (39 of 48 over seeds 0-5), so this uses a fixed seed whose eight faces it finds; what is
    tested is the detection-to-box path, not MTCNN's recall on cartoons.
    """
    from agegender.data.synth import draw_face

    low = copy.copy(detector)
    low.thresholds = (0.5, 0.5, 0.5)
    size, gap = 120, 40
    rng = np.random.default_rng(4)
    specs = [(float(rng.uniform(22, 60)), k % 2, k % 5) for k in range(8)]
    canvas = np.full((2 * size + 3 * gap, 4 * size + 5 * gap, 3), 128, np.uint8)
    expected = []
    for k, (age, gender, race) in enumerate(specs):
        y, x = gap + (k // 4) * (size + gap), gap + (k % 4) * (size + gap)
        canvas[y:y + size, x:x + size], (hx, hy, hw, hh) = draw_face(age, gender, race, rng, size=size,
                                                                      return_box=True)
        expected.append((x + hx, y + hy, hw, hh))
    found = low.detect(canvas)
    assert len(found) == 8
    for box in expected:
        best = max(_iou(box, d.box) for d in found)
        assert best > 0.5, (box, [d.box for d in found])


def test_min_face(detector):
    import skimage.data

    from agegender.predict import MTCNNDetector

    image = skimage.data.astronaut()
    big = copy.copy(detector)
    big.min_face = 60  # mtcnn 1.0 itself fails with min_face_size=40 on this image
    assert len(big.detect(image)) == 1
    big.min_face = 150
    assert big.detect(image) == []
    assert detector.detect(image[:15, :15]) == []  # too small for any face: no crash
    with pytest.raises(DataError, match="min-face"):
        MTCNNDetector(min_face=2)


# --------------------------------------------------------------------------------------------
# prediction: batching, TTA, detector none, video


def test_detector_none_batches_and_tta(tmp_path, run_dir):
    from agegender.predict import Predictor, load_run, predict_paths

    model, spec, _, _ = load_run(run_dir)
    rng = np.random.default_rng(2)
    crops = [rng.integers(0, 256, (s, s, 3)).astype(np.uint8) for s in (40, 57, 200, 33, 120)]
    plain = Predictor(model, spec, batch_size=2).raw(crops)
    whole = {k: np.asarray(v) for k, v in model(preprocess_faces(crops, spec), training=False).items()}
    for name in plain:
        np.testing.assert_allclose(plain[name], whole[name].reshape(len(crops), -1), atol=1e-5)
    tta = Predictor(model, spec, tta=True, batch_size=3)
    assert tta.tta_mode == "flip+10crop"
    views = tta_views(np.stack([resize_uint8(c, 40).numpy() for c in crops]), spec)
    flat = views.numpy().reshape(-1, 32, 32, 3)
    manual = {k: np.asarray(v).reshape(len(crops), 10, -1).mean(1) for k, v in model(flat, training=False).items()}
    for name, value in tta.raw(crops).items():
        np.testing.assert_allclose(value, manual[name], atol=1e-5)

    from PIL import Image

    folder = tmp_path / "faces"
    folder.mkdir()
    for i, crop in enumerate(crops[:3]):
        Image.fromarray(crop).save(folder / f"face{i}.png")
    summary = predict_paths(run_dir, [folder], out_dir=tmp_path / "out", detector="none", batch_size=2,
                            progress=False)
    assert summary["faces"] == 3 and summary["detector"] == "none"
    entry = summary["results"][0]
    assert entry["faces"][0]["box"] == [0, 0, 40, 40] and entry["faces"][0]["det_score"] == 1.0
    expected = decode_heads({k: v[:1] for k, v in plain.items()}, spec)[0]
    assert entry["faces"][0]["age"] == pytest.approx(expected["age"], abs=0.01)


def test_video_every_n_frames(tmp_path, run_dir):
    import cv2

    from agegender.predict import predict_paths

    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(7):
        writer.write(np.full((48, 64, 3), 30 * i, np.uint8))
    writer.release()
    summary = predict_paths(run_dir, [path], out_dir=tmp_path / "out", detector="none", every=3, progress=False)
    frames = [e["frame"] for e in summary["results"]]
    assert frames == [0, 3, 6]
    assert summary["results"][1]["time_s"] == pytest.approx(0.3)
    assert sorted(p.name for p in (tmp_path / "out" / "clip").iterdir()) == [
        "frame_000000.png", "frame_000003.png", "frame_000006.png"]


# --------------------------------------------------------------------------------------------
# errors: one line each, the run goes on


def test_per_input_errors_and_no_face(tmp_path, run_dir, astronaut_png, detector):
    from agegender.predict import predict_paths

    garbage = tmp_path / "broken.jpg"
    garbage.write_bytes(b"\x00\x01 definitely not an image" * 10)
    html = tmp_path / "page.png"
    html.write_text("<!DOCTYPE html><html><body>404</body></html>")
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"not a video at all" * 20)
    from PIL import Image

    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((120, 160, 3), 90, np.uint8)).save(blank)
    lines = []
    summary = predict_paths(run_dir, [garbage, html, video, blank, tmp_path / "missing.jpg", astronaut_png],
                            out_dir=tmp_path / "out", detector=detector, progress=False, log=lines.append)
    by_input = {Path(e["input"]).name: e for e in summary["results"]}
    assert "unreadable image" in by_input["broken.jpg"]["error"] and "file signature" in by_input["broken.jpg"]["error"]
    assert "HTML page" in by_input["page.png"]["error"]
    assert "video will not open" in by_input["clip.mp4"]["error"]
    assert "file not found" in by_input["missing.jpg"]["error"]
    assert by_input["blank.png"]["faces"] == [] and "no face found" in by_input["blank.png"]["note"]
    assert len(by_input["astronaut.png"]["faces"]) == 1  # the run went on
    assert summary["errors"] == 4 and summary["no_face"] == 1
    assert all("\n" not in line for line in lines) and len(lines) == 5
    assert any(line.startswith("note: ") and "blank.png" in line for line in lines)


def test_cli_errors_and_help(tmp_path, capsys, astronaut_png):
    from agegender.__main__ import _parser, main

    bare = _write_run(tmp_path / "old_run", _tiny_model(), None)
    assert main(["predict", "--model", str(bare), str(astronaut_png), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "record.json" in err and "preprocessing" in err
    # a bare MODEL.keras finds record.json next to it; a spec file fixes an old record
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(_spec().to_json())
    assert main(["predict", "--model", str(bare / "model.keras"), str(astronaut_png), "--out", str(tmp_path / "o"),
                 "--detector", "none", "--preprocessing", str(spec_file), "--quiet"]) == 0
    assert main(["export", str(tmp_path / "nowhere")]) == 2
    assert "model not found" in capsys.readouterr().err

    sub = _parser()._subparsers._group_actions[0].choices
    text = sub["predict"].format_help()
    for option in ("--model", "--out", "--json", "--csv", "--detector", "--min-face", "--tta", "--batch-size",
                   "--every", "--det-thresholds", "--preprocessing"):
        assert option in text
    assert "--format" in sub["export"].format_help() and "--out" in sub["export"].format_help()


def test_model_spec_mismatch(tmp_path):
    from agegender.predict import load_run

    run = _write_run(tmp_path / "run", _tiny_model(), _spec(input_size=64, load_size=64))
    with pytest.raises(DataError, match="model input is 32x32"):
        load_run(run)
    run = _write_run(tmp_path / "run2", _tiny_model(race_name="ethnicity"), _spec())
    with pytest.raises(DataError, match="output 'race'"):
        load_run(run)


# --------------------------------------------------------------------------------------------
# export round trip


def test_export_savedmodel_and_tflite_match_keras(tmp_path):
    import tensorflow as tf

    from agegender.export import export_model, load_tflite
    from agegender.predict import Predictor

    spec = _spec(heads={"age": Head.adience_groups(), "gender": Head.gender_softmax(),
                        "race": Head.race_softmax("ethnicity")})
    import keras

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(keras.layers.Rescaling(1 / 255.0)(inputs))
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, {"age": keras.layers.Dense(8, activation="softmax", name="age")(x),
                                 "gender": keras.layers.Dense(2, activation="softmax", name="gender")(x),
                                 "ethnicity": keras.layers.Dense(5, activation="softmax", name="ethnicity")(x)})
    run = _write_run(tmp_path / "run", model, spec)
    saved = export_model(run, "savedmodel", tmp_path / "sm")
    lite = export_model(run, "tflite", tmp_path / "m.tflite")
    assert lite["ops"] == "builtins"
    sidecar = json.loads(Path(lite["sidecar"]).read_text())
    assert sidecar["labels"]["race"][0] == "white" and sidecar["preprocessing"]["input_size"] == 32

    rng = np.random.default_rng(3)
    serve = tf.saved_model.load(saved["path"]).signatures["serving_default"]
    run_lite = load_tflite(lite["path"])
    for shape in ((3, 71, 71, 3), (1, 150, 120, 3)):
        crops = rng.integers(0, 256, shape).astype(np.uint8)
        expected = Predictor(model, spec).raw(list(crops))
        decoded = decode_heads(expected, spec)
        for outputs, atol in ((serve(images=tf.constant(crops)), 1e-5), (run_lite(crops), 2e-3)):
            outputs = {k: np.asarray(v) for k, v in outputs.items()}
            for name in ("age", "gender", "ethnicity"):
                np.testing.assert_allclose(outputs[f"raw_{name}"], expected[name], atol=atol)
            np.testing.assert_allclose(outputs["age_years"], [d["age"] for d in decoded], atol=100 * atol)
            assert [spec.heads["gender"].labels[i] for i in outputs["gender"]] == [d["gender"] for d in decoded]


def test_export_onnx_optional(tmp_path, run_dir):
    from agegender.export import export_model

    try:
        import tf2onnx  # noqa: F401
    except ImportError:
        with pytest.raises(DataError, match="tf2onnx"):
            export_model(run_dir, "onnx", tmp_path / "m.onnx")
        return
    result = export_model(run_dir, "onnx", tmp_path / "m.onnx")
    assert Path(result["path"]).is_file()


# --------------------------------------------------------------------------------------------
# latency and geometry


def test_bench_latency_dict():
    from agegender.bench_predict import measure_latency

    result = measure_latency(repeats=1, warmup=0)
    assert result["faces_found"] == 1 and result["device"] == "CPU"
    assert result["total_ms"]["median"] >= result["detect_ms"]["median"] > 0


def test_utkface_geometry_measured_and_preset_recovers_chips(utkface_sample, detector):
    """On real UTKFace chips: the measured geometry is the preset's, and re-cropping a chip pasted into a
    larger photo with the preset gives back (nearly) the chip's own square."""
    from agegender.predict import crop_face, measure_face_crop, read_image

    files = sorted(utkface_sample.glob("*.jpg"))
    result = measure_face_crop(files, detector=detector, limit=16)
    face, preset = result["face"], FACE_PRESETS["utkface"]
    assert result["measured"] >= 14 and face["alignment"] == "eyes"
    assert abs(face["margin"] - preset.margin) < 0.04 and abs(face["shift_y"] - preset.shift_y) < 0.04
    ious = []
    for path in files[::len(files) // 6][:6]:
        chip = read_image(path)
        canvas = np.zeros((2 * chip.shape[0], 2 * chip.shape[1], 3), np.uint8)
        top, left = chip.shape[0] // 2, chip.shape[1] // 3
        canvas[top:top + chip.shape[0], left:left + chip.shape[1]] = chip
        found = detector.detect(canvas)
        assert found, path
        best = max(found, key=lambda d: d.score)
        x, y, w, h = best.box
        side = max(w, h) * (1 + 2 * preset.margin)
        crop_box = (x + w / 2 - side / 2, y + h / 2 + preset.shift_y * side - side / 2, side, side)
        ious.append(_iou(crop_box, (left, top, chip.shape[1], chip.shape[0])))
        assert crop_face(canvas, best, preset).shape[:2] == (round(side), round(side))
    assert min(ious) > 0.6 and np.mean(ious) > 0.75, ious  # chips vary: some faces sit off-centre


# --------------------------------------------------------------------------------------------
# issue 21: predict names its model; export never removes what it did not create and checks itself


def test_predict_output_names_the_run_and_warns_for_a_smoke_model(tmp_path, astronaut_png, capsys):
    from agegender.__main__ import main

    run = _write_run(tmp_path / "runs" / "utkface_xception" / "xception-scratch" / "20260101T000000Z-s0",
                     _tiny_model(), _spec())
    record = json.loads((run / "record.json").read_text())
    record.update(reproduction="utkface_xception", experiment="xception-scratch", run_id=run.name,
                  config={"smoke": True}, data={"kind": "generated"})
    (run / "record.json").write_text(json.dumps(record))
    code = main(["predict", str(astronaut_png), "--model", str(run), "--detector", "none", "--out",
                 str(tmp_path / "out"), "--csv", str(tmp_path / "p.csv"), "--quiet", "--no-annotate"])
    out, err = capsys.readouterr()
    assert code == 0
    document = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert document["model"]["run"] == str(run) and document["model"]["run_id"] == run.name
    assert document["model"]["experiment"] == "xception-scratch" and document["model"]["smoke"] is True
    assert any("SMOKE RUN" in w for w in document["warnings"]) and any("generated" in w for w in document["warnings"])
    assert len(document["results"]) == 1 and document["results"][0]["faces"]
    assert "warning: the model is a SMOKE RUN" in err and f"utkface_xception/xception-scratch/{run.name}" in err
    assert f"model: {run / 'model.keras'}" in out and "[SMOKE RUN]" in out
    import csv

    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert rows and all(row["model"] == str(run) for row in rows)


def test_predict_of_a_real_run_has_no_warning(tmp_path, run_dir, astronaut_png, capsys):
    from agegender.predict import predict_paths

    summary = predict_paths(run_dir, [astronaut_png], out_dir=tmp_path / "out", detector="none", progress=False,
                            annotate_images=False)
    document = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert summary["warnings"] == [] and document["warnings"] == [] and document["model"]["smoke"] is False
    assert "warning" not in capsys.readouterr().err


def test_predict_skips_a_file_name_that_is_not_utf8(tmp_path, run_dir, astronaut_png):
    import shutil

    from agegender.predict import predict_paths

    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(astronaut_png, folder / "good.png")
    shutil.copy(astronaut_png, folder / "bad\udcff\udcfe.png")  # the bytes 0xff 0xfe in the name, as os gives them
    summary = predict_paths(run_dir, [folder], out_dir=tmp_path / "out", csv_path=tmp_path / "p.csv",
                            detector="none", progress=False)
    assert summary["entries"] == 2 and summary["faces"] == 1 and summary["errors"] == 1
    bad = next(e for e in summary["results"] if e.get("error"))
    assert bad["input"].endswith("bad\\xff\\xfe.png") and "not valid UTF-8" in bad["error"]
    json.loads((tmp_path / "out" / "predictions.json").read_text(encoding="utf-8"))
    assert "bad\\xff\\xfe.png" in (tmp_path / "p.csv").read_text(encoding="utf-8")


@pytest.fixture()
def tiny_run(tmp_path):
    return _write_run(tmp_path / "runs" / "r1", _tiny_model(), _spec())


@pytest.mark.parametrize("where", [".", "..", "run", "runs", "model"])
def test_export_refuses_the_working_directory_and_folders_holding_the_run(where, tiny_run, tmp_path, monkeypatch,
                                                                         capsys):
    from agegender.__main__ import main

    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    (work / "notes.txt").write_text("keep me")
    monkeypatch.chdir(work)
    target = {".": ".", "..": "..", "run": str(tiny_run), "runs": str(tiny_run.parent),
              "model": str(tiny_run / "model.keras")}[where]
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    assert main(["export", str(tiny_run), "--out", target, "--overwrite"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and " — fix: " in err and "would replace it" in err
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before  # nothing removed, nothing left behind
    assert (work / "notes.txt").read_text() == "keep me"


def test_export_refuses_an_existing_path_unless_overwrite_then_swaps(tiny_run, tmp_path, capsys):
    from agegender.__main__ import main
    from agegender.export import export_model

    report = tmp_path / "report.pdf"
    report.write_bytes(b"%PDF-1.4 precious")
    folder = tmp_path / "results"
    (folder / "deep").mkdir(parents=True)
    (folder / "deep" / "table.md").write_text("precious")
    for target in (report, folder):
        assert main(["export", str(tiny_run), "--out", str(target)]) == 2
        err = capsys.readouterr().err.strip()
        assert "non-empty" in err and "--overwrite" in err and "\n" not in err
    assert report.read_bytes() == b"%PDF-1.4 precious" and (folder / "deep" / "table.md").read_text() == "precious"
    # a folder that is not an earlier export is never replaced, even with --overwrite
    assert main(["export", str(tiny_run), "--out", str(folder), "--overwrite"]) == 2
    assert "not an earlier SavedModel export" in capsys.readouterr().err
    assert (folder / "deep" / "table.md").read_text() == "precious"
    # an earlier export is replaced with --overwrite: written beside, swapped in, the old one removed last
    first = export_model(tiny_run, "savedmodel", tmp_path / "sm", check=False)
    (Path(first["path"]) / "marker").write_text("old")
    with pytest.raises(DataError, match="--overwrite"):
        export_model(tiny_run, "savedmodel", tmp_path / "sm", check=False)
    assert (tmp_path / "sm" / "marker").is_file()
    second = export_model(tiny_run, "savedmodel", tmp_path / "sm", overwrite=True, check=False)
    assert second["replaced"] == [str(tmp_path / "sm")] and not (tmp_path / "sm" / "marker").exists()
    assert (tmp_path / "sm" / "saved_model.pb").is_file() and (tmp_path / "sm" / "agegender.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.pdf", "results", "runs", "sm"]  # no temporaries


def test_an_export_that_fails_half_way_leaves_the_old_artefact(tiny_run, tmp_path, monkeypatch):
    import agegender.export as export

    export.export_model(tiny_run, "savedmodel", tmp_path / "sm", check=False)
    before = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "sm").rglob("*") if p.is_file()}

    def broken(*args, **kwargs):
        raise RuntimeError("disk full half-way")

    monkeypatch.setattr(export, "_write_savedmodel", broken)
    with pytest.raises(RuntimeError):
        export.export_model(tiny_run, "savedmodel", tmp_path / "sm", overwrite=True, check=False)
    after = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "sm").rglob("*") if p.is_file()}
    assert after == before and sorted(p.name for p in tmp_path.iterdir()) == ["runs", "sm"]


def test_export_check_reports_the_largest_difference_from_the_keras_model(tiny_run, tmp_path):
    import os

    import keras

    from agegender.data.synth import draw_face
    from agegender.export import check_export, export_model
    from agegender.predict import Predictor

    old = os.umask(0o022)
    try:
        saved = export_model(tiny_run, "savedmodel", tmp_path / "sm")
    finally:
        os.umask(old)
    check = saved["check"]
    assert check["checked"] and check["within_tolerance"] and check["max_abs_difference"] < 1e-4
    assert set(check["per_output"]) == {"raw_age", "raw_gender", "raw_race"}
    assert json.loads((tmp_path / "sm" / "agegender.json").read_text())["check"] == check
    modes = {oct(p.stat().st_mode & 0o777) for p in (tmp_path / "sm").rglob("*") if p.is_file()}
    assert modes == {"0o644"}  # the umask's mode, not TensorFlow's 0600
    # a different model against the same artefact: the check must report the true difference
    spec = _spec()
    other = _tiny_model()
    other.set_weights([w + 0.05 for w in keras.saving.load_model(tiny_run / "model.keras").get_weights()])
    result = check_export(other, spec, "savedmodel", tmp_path / "sm")
    rng = np.random.default_rng(0)
    faces = [draw_face(float(a), g, r, rng, size=s) for s, (a, g, r) in
             zip((200, 200, 200, 200, 97, 97, 97, 97), ((4, 0, 0), (23, 1, 1), (37, 0, 2), (52, 1, 3), (61, 0, 4),
                                                         (75, 1, 0), (18, 0, 1), (45, 1, 2)))]
    original = keras.saving.load_model(tiny_run / "model.keras")
    a, b = Predictor(original, spec).raw(faces), Predictor(other, spec).raw(faces)
    expected = max(float(np.max(np.abs(a[k] - b[k]))) for k in a)
    assert expected > 1e-3 and result["max_abs_difference"] == pytest.approx(expected, rel=1e-3, abs=1e-5)
    assert not result["within_tolerance"]
