"""Dey & Aggarwal reproduction (``python -m reproductions.utkface_xception``): the backbone registry, the
multi-head model, weights files, preprocessing, losses, the command line, and a smoke run on generated faces."""

from __future__ import annotations

import dataclasses
import json
import os

import keras
import numpy as np
import pandas as pd
import pytest

import reproductions.utkface_xception as dey
from agegender.errors import DataError
from agegender.models.backbones import (BACKBONES, PixelPreprocess, UnknownBackboneError, backbone_preprocessing,
                                        build_backbone, get_backbone)
from agegender.models.multihead import build_multihead

SIX = ("vgg19", "resnet50", "inception_v3", "xception", "mobilenet", "transformer")
SHAPES = {"age": (None, 1), "ethnicity": (None, 5), "gender": (None, 2)}


@pytest.fixture(autouse=True)
def _fresh_session():
    keras.backend.clear_session()
    yield
    keras.backend.clear_session()


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    """200 generated faces in the UTKFace layout (64 px; the smoke run reads them at 32-64 px)."""
    from agegender.data.synth import synthesize

    root = tmp_path_factory.mktemp("faces")
    synthesize("utkface", root, 200, seed=0, size=64)
    return root


def _pixels(size: int, n: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


# ---------------------------------------------------------------------------------------------- registry


def test_registry_holds_the_papers_six_backbones_with_its_row_labels():
    from results.catalogue import load_published

    assert tuple(BACKBONES) == SIX == dey.BACKBONE_ORDER
    published = load_published("dey_aggarwal")
    rows = list(dict.fromkeys(published.loc[published["table"] == "Table 1", "row"]))
    assert [BACKBONES[name].label for name in SIX] == rows  # cells line up with the catalogue
    assert {name: spec.min_size for name, spec in BACKBONES.items()} == {
        "vgg19": 32, "resnet50": 32, "inception_v3": 75, "xception": 71, "mobilenet": 32, "transformer": 32}
    assert all(spec.imagenet_url.endswith("/" + spec.imagenet_file) for spec in BACKBONES.values())


def test_unknown_backbone_fails_loudly(capsys):
    for call in (lambda: get_backbone("vgg16"), lambda: build_backbone("vgg16", weights=None),
                 lambda: build_multihead("vgg16", weights=None), lambda: backbone_preprocessing("vgg16")):
        with pytest.raises(UnknownBackboneError, match="known backbones: vgg19, resnet50, inception_v3, xception, "
                                                       "mobilenet, transformer"):
            call()
    with pytest.raises(SystemExit) as exit_info:
        dey.main(["--data-dir", ".", "--backbone", "vgg16"])
    assert exit_info.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_too_small_input_is_refused():
    with pytest.raises(ValueError, match="at least 75x75"):
        build_backbone("inception_v3", (64, 64, 3), weights=None)


@pytest.mark.parametrize("name", SIX)
def test_backbone_model_builds_and_survives_keras_round_trip(name, tmp_path):
    spec = BACKBONES[name]
    size = spec.small_size
    model = build_multihead(name, input_size=size, weights=None)
    assert sorted(model.output_names) == ["age", "ethnicity", "gender"]
    assert {k: tuple(t.shape) for k, t in zip(model.output_names, model.outputs)} == SHAPES
    backbone = model.get_layer(name)
    assert isinstance(backbone, keras.Model) and backbone.trainable and backbone.trainable_weights
    assert model.get_layer("preprocess").mode == "unit"  # Sec. 3.2: pixels / 255
    assert model.get_layer("global_max_pooling").__class__.__name__ == (
        "GlobalMaxPooling1D" if name == "transformer" else "GlobalMaxPooling2D")
    for task, (units, activation) in {"age": (1, "sigmoid"), "ethnicity": (5, "softmax"),
                                      "gender": (2, "softmax")}.items():
        assert [model.get_layer(f"{task}_dense_{i}").units for i in (1, 2)] == [128, 128]
        assert model.get_layer(task).units == units and model.get_layer(task).activation.__name__ == activation
    assert not [layer.name for layer in _all_layers(model) if isinstance(layer, keras.layers.Lambda)]

    x = _pixels(size)
    out = {k: np.asarray(v) for k, v in model(x, training=False).items()}
    assert out["age"].shape == (2, 1) and np.all((out["age"] > 0) & (out["age"] < 1))
    for task, n in (("ethnicity", 5), ("gender", 2)):
        assert out[task].shape == (2, n) and np.allclose(out[task].sum(-1), 1, atol=1e-5)

    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    again = loaded(x, training=False)
    for task in SHAPES:
        np.testing.assert_allclose(np.asarray(again[task]), out[task], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name, module", [("vgg19", "vgg19"), ("resnet50", "resnet50"),
                                          ("inception_v3", "inception_v3"), ("xception", "xception"),
                                          ("mobilenet", "mobilenet"), ("transformer", "mobilenet")])
def test_preprocess_layer_is_the_backbones_preprocess_input(name, module):
    x = _pixels(8, n=3, seed=1)
    expected = getattr(keras.applications, module).preprocess_input(x.copy())
    layer = backbone_preprocessing(name)
    np.testing.assert_allclose(np.asarray(layer(x)), expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(np.asarray(PixelPreprocess("unit")(x)), x / 255.0, rtol=1e-6)
    assert PixelPreprocess.from_config(layer.get_config()).mode == BACKBONES[name].preprocess
    with pytest.raises(ValueError, match="unknown preprocessing mode"):
        PixelPreprocess("torch")


def test_backbone_preprocess_option_puts_preprocess_input_in_the_model():
    model = build_multihead("vgg19", input_size=32, weights=None, preprocess="backbone")
    assert model.get_layer("preprocess").mode == "caffe"
    with pytest.raises(ValueError, match="preprocess must be one of paper, backbone"):
        build_multihead("vgg19", input_size=32, weights=None, preprocess="imagenet")


# ---------------------------------------------------------------------------------------------- weights


def _outputs(model, x):
    return np.asarray(model(x, training=False))


@pytest.mark.parametrize("name, fmt", [("vgg19", "weights.h5"), ("mobilenet", "legacy"),
                                       ("transformer", "weights.h5")])
def test_local_h5_saved_from_a_fresh_backbone_reproduces_its_outputs(name, fmt, tmp_path):
    """``.weights.h5`` (Keras 3) and legacy ``.h5`` (the format of Keras's ImageNet files) both load."""
    size = BACKBONES[name].small_size
    x = _pixels(size, seed=2) / 127.5 - 1
    keras.utils.set_random_seed(1)
    source = build_backbone(name, (size, size, 3), weights=None)
    path = tmp_path / ("backbone.weights.h5" if fmt == "weights.h5" else "backbone.h5")
    if fmt == "weights.h5":
        source.save_weights(path)
    else:
        source.save(path)  # legacy HDF5, topological order like the ImageNet no-top files
    expected = _outputs(source, x)
    keras.utils.set_random_seed(2)
    loaded = build_backbone(name, (size, size, 3), weights=str(path))
    keras.utils.set_random_seed(3)
    fresh = build_backbone(name, (size, size, 3), weights=None)
    scale = float(np.abs(expected).max())  # random VGG19 features are ~1e-4: compare relative to their size
    assert scale > 0
    np.testing.assert_allclose(_outputs(loaded, x), expected, rtol=1e-5, atol=1e-5 * scale)
    assert np.abs(_outputs(fresh, x) - expected).max() > 0.05 * scale  # other weights differ: the check can fail
    if name == "mobilenet":  # the multi-head builder passes the file on
        model = build_multihead(name, input_size=size, weights=str(path))
        for a, b in zip(model.get_layer(name).get_weights(), source.get_weights()):
            np.testing.assert_array_equal(a, b)


def test_transformer_takes_mobilenets_legacy_imagenet_style_file(tmp_path):
    mobilenet = keras.applications.MobileNet(include_top=False, weights=None, input_shape=(64, 64, 3))
    mobilenet.save(tmp_path / "mobilenet_1_0_224_tf_no_top.h5")
    model = build_backbone("transformer", (64, 64, 3), weights=str(tmp_path / "mobilenet_1_0_224_tf_no_top.h5"))
    part = model.get_layer("mobilenet")
    assert len(part.get_weights()) == len(mobilenet.get_weights())
    for a, b in zip(part.get_weights(), mobilenet.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert model.get_layer("transformer_encoder").get_config()["num_blocks"] == 2


@pytest.mark.filterwarnings("ignore:Skipping nested container")
def test_bad_weights_are_one_line_errors(tmp_path):
    with pytest.raises(DataError, match="weights file not found") as info:
        build_backbone("xception", (71, 71, 3), weights=str(tmp_path / "missing.h5"))
    assert "\n" not in str(info.value)
    wrong = tmp_path / "wrong.weights.h5"
    keras.applications.MobileNet(include_top=False, weights=None, input_shape=(32, 32, 3)).save_weights(wrong)
    with pytest.raises(DataError, match="cannot load these weights into VGG19") as info:
        build_backbone("vgg19", (32, 32, 3), weights=str(wrong))
    assert "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5" in str(info.value) and "\n" not in str(info.value)


def test_offline_imagenet_says_how_to_pass_a_local_h5(monkeypatch, faces, tmp_path, capsys):
    from keras.src.utils import file_utils

    def offline(fname, origin=None, **kwargs):
        raise Exception(f"URL fetch failure on {origin}: None -- [Errno -2] Name or service not known")

    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(DataError) as info:
        build_backbone("xception", (71, 71, 3), weights="imagenet")
    text = str(info.value)
    assert "\n" not in text and "URL fetch failure" in text
    assert "--weights /path/to/xception_weights_tf_dim_ordering_tf_kernels_notop.h5" in text
    assert BACKBONES["xception"].imagenet_url in text and "--weights none" in text
    # the command line stops before training, with that one line
    assert dey.main(["--data-dir", str(faces), "--backbone", "mobilenet", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "mobilenet_1_0_224_tf_no_top.h5" in err
    assert not (tmp_path / "runs" / "utkface_xception" / "mobilenet").exists()


# ---------------------------------------------------------------------------------------------- losses, labels


def test_split_metrics_match_keras_losses():
    exp = dataclasses.replace(dey.DeyExperiment(), backbone="mobilenet", weights=None, input_size=32)
    model = dey.build_model(exp)
    assert isinstance(model.optimizer, keras.optimizers.RMSprop)
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-3)
    rng = np.random.default_rng(0)
    x = _pixels(32, n=16, seed=4)
    y = {"age": rng.uniform(10, 65, (16, 1)).astype("float32") / 65,
         "ethnicity": np.eye(5, dtype="float32")[rng.integers(0, 5, 16)],
         "gender": np.eye(2, dtype="float32")[rng.integers(0, 2, 16)]}
    logs = model.evaluate(x, y, batch_size=16, return_dict=True, verbose=0)
    p = {k: np.asarray(v) for k, v in model(x, training=False).items()}
    m = dey.split_metrics(y, p, {k: np.ones(16, "float32") for k in y}, max_age=65.0)
    for key in ("age_loss", "ethnicity_loss", "gender_loss"):
        assert m[key] == pytest.approx(logs[key], rel=1e-4), key
    assert m["loss"] == pytest.approx(logs["loss"], rel=1e-4)  # total = sum (loss weights 1)
    assert m["age_mae"] == pytest.approx(logs["age_mae"], rel=1e-4)
    assert m["age_mae_years"] == pytest.approx(65 * m["age_mae"])
    assert m["ethnicity_accuracy"] == pytest.approx(logs["ethnicity_accuracy"])
    assert len(m["ethnicity_report"]["f1"]) == 5 and len(m["gender_report"]["precision"]) == 2


def test_masked_race_is_left_out_of_ethnicity_metrics():
    y = {"age": np.full((3, 1), 0.5, "float32"), "ethnicity": np.eye(5, dtype="float32")[[0, 1, 0]],
         "gender": np.eye(2, dtype="float32")[[0, 1, 1]]}
    p = {"age": np.array([[0.5], [0.6], [0.4]], "float32"), "ethnicity": np.eye(5, dtype="float32")[[0, 1, 3]],
         "gender": np.eye(2, dtype="float32")[[0, 1, 0]]}
    w = {"age": np.ones(3), "ethnicity": np.array([1.0, 1.0, 0.0]), "gender": np.ones(3)}
    m = dey.split_metrics(y, p, w, max_age=65.0)
    assert m["ethnicity_accuracy"] == 1.0 and m["ethnicity_report"]["n"] == 2
    assert m["gender_accuracy"] == pytest.approx(2 / 3)
    assert m["age_mae"] == pytest.approx(0.2 / 3, rel=1e-5)


def test_rows_name_every_departure_from_the_paper(tmp_path):
    paper = dey.DeyExperiment()
    assert dey.table_row(paper) == "Xception" and dey.experiment_name(paper) == "xception"
    assert dey.deviations(paper, 224) == []
    scratch = dataclasses.replace(paper, backbone="vgg19", weights=None, preprocess="backbone")
    assert dey.table_row(scratch) == "VGG19 (from scratch, backbone preprocess_input)"
    assert dey.experiment_name(scratch) == "vgg19-scratch-preprocess_input"
    file = dataclasses.replace(paper, weights=str(tmp_path / "xception_weights_tf_dim_ordering_tf_kernels_notop.h5"))
    assert dey.table_row(file) == "Xception"  # Keras's ImageNet file is the paper's setting
    other = dataclasses.replace(paper, weights=str(tmp_path / "mine.weights.h5"))
    assert dey.table_row(other) == "Xception (weights mine.weights.h5)"
    small = dey.smoke(paper)
    assert small.epochs == 1 and small.weights is None and dey.image_size(small) == 71
    assert dey.image_size(dataclasses.replace(small, backbone="transformer")) == 64
    notes = dey.deviations(small, 71)
    assert notes[0].startswith("SMOKE RUN") and "input 71x71 (paper 224x224)" in notes


# ---------------------------------------------------------------------------------------------- command line


def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        dey.main(["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for option in ("--data-dir", "--backbone", "--weights", "--preprocess", "--smoke", "--out", "--seed",
                   "imagenet", "from scratch", "preprocess_input", "all", "--keep-duplicates-together",
                   "byte-identical"):
        assert option in text, option


def test_command_line_maps_to_the_experiment(monkeypatch, tmp_path):
    seen = {}

    def fake_run(data_dir, exp, *, backbones, out, **kwargs):
        seen.update(exp=exp, backbones=backbones, out=out)
        raise DataError("stop here")

    monkeypatch.setattr(dey.DEY, "run", lambda exp, options, *, data_dir, backbones:  # the runner's entry
                        fake_run(data_dir, exp, backbones=backbones, out=options.out))
    assert dey.main(["--data-dir", "x", "--smoke", "--backbone", "all"]) == 2
    assert seen["backbones"] == list(SIX) and seen["exp"].weights is None and seen["exp"].epochs == 1
    assert str(seen["out"]).endswith(os.path.join("build", "smoke", "utkface_xception"))
    assert dey.main(["--data-dir", "x", "--weights", "none", "--preprocess", "backbone", "--seed", "3"]) == 2
    assert seen["backbones"] == ["xception"] and seen["exp"].weights is None and seen["exp"].seed == 3
    assert seen["exp"].preprocess == "backbone" and seen["exp"].epochs == 10 and seen["out"] is None
    assert dey.main(["--data-dir", "x", "--smoke", "--weights", "imagenet", "--out", str(tmp_path)]) == 2
    assert seen["exp"].weights == "imagenet" and seen["out"] == str(tmp_path)
    with pytest.raises(SystemExit):
        dey.main(["--data-dir", "x", "--backbone", "all", "--weights", str(tmp_path / "a.h5")])


def test_a_diverged_backbone_is_reported_and_the_others_still_run(monkeypatch, faces, tmp_path, capsys):
    if not isinstance(dey.TrainingDiverged, type):
        pytest.skip("this agegender has no TrainingDiverged")
    tried = []

    def diverge(exp, *args, **kwargs):
        tried.append(exp.backbone)
        raise dey.TrainingDiverged("training diverged: the loss became nan at epoch 1 (batch 2)")

    monkeypatch.setattr(dey.reproduction, "run_backbone", diverge)
    code = dey.main(["--data-dir", str(faces), "--smoke", "--backbone", "all", "--out", str(tmp_path)])
    assert code == 2 and tried == list(SIX)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 6 and all(line.startswith("error: ") and "diverged" in line for line in err)
    assert (tmp_path / "tables" / "dey_aggarwal__section-4-1.csv").is_file()  # the protocol record still counts


def test_missing_data_is_one_error_line(tmp_path, capsys):
    assert dey.main(["--data-dir", str(tmp_path / "nowhere"), "--smoke", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "nowhere" in err and "\n" not in err and "Traceback" not in err


def _absolute_paths(value, where="record") -> list[str]:
    """Every string in a record that is an absolute path (or holds one)."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _absolute_paths(v, f"{where}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _absolute_paths(v, f"{where}[{i}]")]
    if isinstance(value, str) and (value.startswith("/") or "/tmp/" in value or os.sep + "work" + os.sep in value):
        return [f"{where} = {value}"]
    return []


def test_keep_duplicates_together_is_wired_into_the_split_the_records_and_the_tables(faces, tmp_path, monkeypatch,
                                                                                    capsys):
    """Issue 21: --keep-duplicates-together reaches make_split, the run's own rows and folders, the record's
    deviations; the data is described without absolute paths; images training cannot decode are out of the
    split, split.csv and the counts."""
    import hashlib
    import shutil

    data = tmp_path / "faces"
    shutil.copytree(faces, data)
    kept = sorted(p for p in data.glob("*.jpg") if 10 <= int(p.name.split("_")[0]) <= 65)
    for i, source in enumerate(kept[:30]):  # 30 byte-identical copies under other names (other labels)
        shutil.copy(source, data / f"{20 + i}_{i % 2}_{i % 5}_2017030100{i:07d}.jpg.chip.jpg")
    (data / "40_0_0_20170301999999991.jpg.chip.jpg").write_bytes(b"")  # unusable images
    (data / "41_1_1_20170301999999992.jpg.chip.jpg").write_text("<!DOCTYPE html><html></html>")
    trained = []
    monkeypatch.setattr(dey.reproduction, "run_backbone", lambda exp, split, datasets, **kw: trained.append((exp, split)) or
                        {"exp": exp, "record": None, "metrics": {}, "cells": [], "figures": {}})
    monkeypatch.setattr(dey.reproduction, "make_datasets", lambda *a, **k: {})
    assert dey.main(["--data-dir", str(data), "--smoke", "--keep-duplicates-together", "--out",
                     str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    (exp, split), = trained
    assert exp.keep_duplicates_together and dey.table_row(exp) == "Xception (from scratch, duplicates in one split)"
    assert dey.experiment_name(exp) == "xception-scratch-duplicates_together"
    digests = split.frame["path"].map(lambda p: hashlib.sha256(open(p, "rb").read()).hexdigest())
    assert split.frame.groupby(digests)["split"].nunique().max() == 1  # no group in two splits
    assert split.info["duplicates"]["kept_together"] and split.info["duplicates"]["groups"] > 0
    records = {p.parent.parent.name: json.loads(p.read_text())
               for p in (tmp_path / "o" / "runs" / "utkface_xception").glob("*/*/record.json")}
    record = records["protocol-duplicates_together"]
    assert record["deviations"]["keep_duplicates_together"] is True and record["deviations"]["smoke"] is True
    assert record["config"]["keep_duplicates_together"] is True
    assert record["metrics"]["split"]["duplicates"]["kept_together"] is True
    assert record["data"]["path"] == "faces" and record["data"]["fingerprint"]["files"] == len(list(data.iterdir()))
    assert _absolute_paths(record) == []
    # what is counted is what is trained on: the two unusable files are out everywhere and listed once
    manifest = pd.read_csv(next((tmp_path / "o" / "runs" / "utkface_xception").glob("protocol-*/*/split.csv")))
    assert len(manifest) == len(split.frame) == record["data"]["aged_10_65"] == sum(record["data"]["counts"].values())
    assert not manifest["file"].str.startswith(("40_0_0_20170301999999991", "41_1_1_20170301999999992")).any()
    assert record["data"]["images_unusable"] == 2 and record["data"]["images_read"] == 200 + 30 + 2
    assert record["data"]["images_used"] == 160  # the smoke run's seeded subset, drawn from the usable images
    skipped = {s["file"] for s in record["metrics"]["images_skipped"]}
    assert {"40_0_0_20170301999999991.jpg.chip.jpg", "41_1_1_20170301999999992.jpg.chip.jpg"} <= skipped
    assert "2 image(s) training cannot decode" in out and "byte-identical files kept in one split" in out
    split_table = pd.read_csv(tmp_path / "o" / "tables" / "dey_aggarwal__section-4-1.csv")
    ours = split_table[split_table["row"] == "split (duplicates in one split)"]
    assert len(ours) == 4 and ours["notes"].str.contains("kept in one split").all()
    # the paper's split, run with the same data: its own folder, its row and the note that says what it did
    assert dey.main(["--data-dir", str(data), "--smoke", "--out", str(tmp_path / "o")]) == 0
    records = {p.parent.parent.name: json.loads(p.read_text())
               for p in (tmp_path / "o" / "runs" / "utkface_xception").glob("*/*/record.json")}
    assert "keep_duplicates_together" not in records["protocol"]["deviations"]
    assert records["protocol"]["metrics"]["split"]["duplicates"] == {"kept_together": False}
    split_table = pd.read_csv(tmp_path / "o" / "tables" / "dey_aggarwal__section-4-1.csv")
    paper_rows = split_table[split_table["row"] == "split"]
    assert len(paper_rows) == 4 and paper_rows["notes"].str.contains("may fall in different parts").all()


def test_a_read_only_output_folder_stops_the_run_before_reading_data(tmp_path, monkeypatch, capsys):
    from agegender import atomic

    real = atomic.check_writable

    def refuse(folder, **kwargs):
        if str(folder).startswith(str(tmp_path / "ro")):
            raise DataError("output folder is not writable (permission denied)", path=folder,
                            fix="choose another --out")
        return real(folder, **kwargs)

    monkeypatch.setattr(atomic, "check_writable", refuse)
    monkeypatch.setattr(dey.reproduction, "load_split", lambda *a, **k: pytest.fail("data read before the output was checked"))
    assert dey.main(["--data-dir", str(tmp_path), "--smoke", "--out", str(tmp_path / "ro")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "not writable" in err and "\n" not in err


# ---------------------------------------------------------------------------------------------- smoke run


@pytest.mark.slow
def test_smoke_run_on_generated_faces_writes_tables_and_figures(faces, tmp_path):
    exp = dey.smoke(dey.DeyExperiment())
    # the transformer: MobileNet plus the custom encoder layers through fit, checkpoint and safe_mode reload
    result = dey.run(faces, exp, backbones=["transformer"], out=tmp_path, verbose=0, log=lambda *a: None)
    counts = result["counts"]
    assert sum(counts.values()) == len(result["split"].frame) and min(counts.values()) > 0
    assert result["split"].frame["age"].between(10, 65).all()

    records = sorted((tmp_path / "runs" / "utkface_xception").glob("*/*/record.json"))
    assert sorted(p.parent.parent.name for p in records) == ["protocol", "transformer-scratch"]
    for path in records:
        record = json.loads(path.read_text())
        assert record["status"] == "complete" and record["data"]["kind"] == "generated"
        if record["experiment"] != "protocol":
            assert record["metrics"]["training"]["epochs"] == 1
            assert record["config"]["weights"] is None and record["config"]["preprocess"] == "paper"
            assert record["config"]["image_size"] == 64 and record["config"]["transformer_encoder"]["num_blocks"] == 2
            model = keras.saving.load_model(path.parent / "model.keras", safe_mode=True)  # the checkpoint
            assert sorted(model.output_names) == ["age", "ethnicity", "gender"]
            for name in ("fig01_test_predictions", "fig02_accuracy", "fig03_age_mae", "learning_curves",
                         "confusion_ethnicity", "confusion_gender"):
                assert not os.path.isabs(record["figures"][name])  # relative to --out: no machine path
                assert os.path.getsize(tmp_path / record["figures"][name]) > 1000, name
            assert record["deviations"] == {"epochs": 1, "input_size": None, "max_images": 160, "weights": None,
                                            "smoke": True}
        assert _absolute_paths(record) == [], path

    rows = ("Transformer (from scratch)",)
    for table in ("table-1", "table-2", "table-3"):
        frame = pd.read_csv(tmp_path / "tables" / f"dey_aggarwal__{table}.csv")
        ours = frame[frame["data"] == "generated faces"]
        assert set(ours["row"]) == set(rows), table
        for row in rows:
            line = ours[ours["row"] == row].set_index("column")["reproduced"].astype(float)
            assert len(line) == 10 and np.isfinite(line).all(), (table, row)
            assert line["Total loss"] == pytest.approx(
                line["Age loss"] + line["Ethnicity loss"] + line["Gender loss"], abs=2e-4)
            for column in ("Ethnicity Accuracy", "Gender Accuracy", "Age MAE"):
                assert 0 <= line[column] <= 1, column
            assert line["Age MAE (years)"] == pytest.approx(65 * line["Age MAE"], abs=0.01)
        assert ours["notes"].str.contains("SMOKE RUN").all()
        per_class = pd.read_csv(tmp_path / "tables" / f"dey_aggarwal__{table}-per-class.csv")
        assert per_class.groupby("row").size().to_dict() == {rows[0]: 23}  # 5 x 3 + 1 ethnicity, 2 x 3 + 1 gender
        assert per_class["reproduced"].astype(float).between(0, 1).all()
    split = pd.read_csv(tmp_path / "tables" / "dey_aggarwal__section-4-1.csv").set_index("column")
    assert [int(split.loc[c, "reproduced"]) for c in ("train", "validation", "test")] == [
        counts["train"], counts["val"], counts["test"]]
    assert str(split.loc["train", "published"]) == "9115"
    text = dey.format_tables(result["cells"])
    assert "Table 3 (test)" in text and "Transformer (from scratch)  this run" in text and "3.39" in text
