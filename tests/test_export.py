"""``python -m agegender export`` (issues 8 and 21): SavedModel and TFLite exports predict as the Keras model,
ONNX is optional, and an export never removes what it did not create (the working directory, the run's own
folders, an existing path without ``--overwrite``, a folder that is not an earlier export), swaps an earlier
export in only once the new one is written, and checks itself against the Keras model. Tiny random-weight
models and fake run folders (``tests/helpers.py``; ``run_dir`` in ``tests/conftest.py``) stand in for trained
runs (no training)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from agegender.errors import DataError
from agegender.preprocess import Head, decode_heads
from tests.helpers import _spec, _tiny_model, _write_run


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
# issue 21: export never removes what it did not create and checks itself


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
