"""Speziali reproduction (``python -m reproductions.utkface_dual_cnn``): models, split and KS test,
heatmaps, the command line, smoke runs on generated faces and on the real sample, and learning."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ks_2samp

import reproductions.utkface_dual_cnn as spz
from agegender.data.samples import normalize_frame
from agegender.data.splits import make_split

FIGURES = ("fig01_age_histogram", "fig02_03_gender_histograms", "fig04_age_cdf", "fig07_loss_per_iteration_age",
           "fig08_loss_per_iteration_gender", "fig09_loss_per_iteration_dual", "fig10_accuracy_per_epoch_single",
           "fig11_accuracy_per_epoch_dual", "fig12_confusion_single", "fig13_confusion_dual",
           "fig14_age_first50_single", "fig15_age_first50_dual", "fig16_validation_face", "fig17_heatmaps_age",
           "fig18_heatmaps_gender", "fig19_heatmaps_dual", "gradcam", "learning_curves_age",
           "learning_curves_gender", "learning_curves_dual")
TABLES = ("time-sec", "num-of-epochs", "last-loss-value-training", "last-loss-value-validation",
          "training-metrics", "validation-metrics", "test-metrics", "fig-12", "fig-13", "section-iii-a",
          "section-iii-b", "section-iv-b")


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    """600 generated faces in the UTKFace layout, drawn at 64 px (the tests train at 16 px; faces drawn
    at 32 px learned less reliably in trials)."""
    from agegender.data.synth import synthesize

    root = tmp_path_factory.mktemp("faces")
    synthesize("utkface", root, 600, seed=0, size=64)
    return root


# ---------------------------------------------------------------------------------------------- models


@pytest.mark.parametrize("key, shapes", [("age", {"age": (None, 1)}), ("gender", {"gender": (None, 2)}),
                                         ("dual", {"age": (None, 1), "gender": (None, 2)})])
def test_networks_at_paper_size(key, shapes):
    model = spz.build_network(key, spz.SpezialiExperiment())
    assert model.inputs[0].shape[1:] == (128, 128, 3)
    assert {name: tuple(t.shape) for name, t in zip(model.output_names, model.outputs)} == shapes
    assert set(model.output_names) == set(spz.NETWORKS[key].tasks)
    lr = {"age": 0.001, "gender": 0.01, "dual": 0.01}[key]  # Sec. III-B
    assert float(model.optimizer.learning_rate) == pytest.approx(lr)
    assert model.get_layer("block1_bn").momentum == 0.9  # PyTorch's momentum=0.1


def test_dual_loss_is_ce_plus_lambda_mse():
    exp = dataclasses.replace(spz.SpezialiExperiment(), input_size=16)
    model = spz.build_network("dual", exp)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (8, 16, 16, 3)).astype("float32")
    y = {"age": rng.uniform(1, 90, (8, 1)).astype("float32"), "gender": rng.integers(0, 2, 8).astype("int32")}
    logs = model.evaluate(x, y, batch_size=8, return_dict=True, verbose=0)
    p = model.predict(x, verbose=0)
    ce = spz._gender_ce(y["gender"], p["gender"])
    mse = float(np.mean((y["age"] - p["age"]) ** 2))
    assert logs["gender_loss"] == pytest.approx(ce, rel=1e-4)
    assert logs["age_loss"] == pytest.approx(mse, rel=1e-4)
    assert logs["loss"] == pytest.approx(ce + 0.01 * mse, rel=1e-4)  # lambda_age = 0.01, Sec. IV-B


def test_iteration_logger_recovers_batch_losses():
    # 5 batches of 4, 4, 4, 4, 2 samples; Keras reports running means (loss weighted by batch size,
    # per-output losses one weight per batch)
    values = {"loss": [5.0, 3.0, 4.0, 1.0, 2.0], "age_loss": [50.0, 40.0, 30.0, 20.0, 10.0]}
    sizes = [4, 4, 4, 4, 2]
    logger = spz._iteration_logger(18, 4, ["loss", "age_loss"])
    logger.on_epoch_begin(0)
    for i in range(5):
        logs = {"loss": np.average(values["loss"][: i + 1], weights=sizes[: i + 1]),
                "age_loss": np.mean(values["age_loss"][: i + 1])}
        logger.on_train_batch_end(i, logs)
    assert [r["loss"] for r in logger.rows] == pytest.approx(values["loss"])
    assert [r["age_loss"] for r in logger.rows] == pytest.approx(values["age_loss"])
    assert [r["iteration"] for r in logger.rows] == [1, 2, 3, 4, 5]


# ---------------------------------------------------------------------------------------------- split


@pytest.mark.parametrize("a, b", [([1, 2, 3, 4, 5], [3, 4, 5, 6, 7, 8]), ([1, 1, 2, 2, 9], [2, 2, 2, 3]),
                                  (np.arange(100) % 37, np.arange(60) % 23 + 5)])
def test_ks_statistic_matches_scipy(a, b):
    assert spz.ks_statistic(a, b) == pytest.approx(ks_2samp(a, b).statistic)


def test_split_proportions_and_ks_against_scipy():
    rng = np.random.default_rng(0)
    frame = normalize_frame([{"path": f"/x/{i:05d}.jpg", "file": f"{i:05d}.jpg", "age": float(rng.integers(1, 100)),
                              "gender": int(rng.integers(0, 2)), "race": 0, "group": f"{i}", "source": "test"}
                             for i in range(1000)])
    split = make_split(frame, "speziali", seed=0)
    assert split.counts() == {"train": 490, "val": 210, "test": 300}  # 70/30, then 70/30 of the 70%
    shares = spz.split_shares(split.counts())
    assert shares["train_test"] == pytest.approx((70.0, 30.0))
    assert shares["train_val"] == pytest.approx((70.0, 30.0))
    expected = ks_2samp(split.part("train")["age"], split.part("val")["age"])
    assert split.info["ks_train_val"]["p_value"] == pytest.approx(expected.pvalue)
    assert split.info["ks_train_val"]["statistic"] == pytest.approx(spz.ks_statistic(
        split.part("train")["age"], split.part("val")["age"]))


def test_load_split_subset_is_seeded(faces):
    exp = dataclasses.replace(spz.SpezialiExperiment(), max_images=100, seed=3)
    _, frame, split = spz.load_split(faces, exp)
    _, again, _ = spz.load_split(faces, exp)
    assert len(frame) == 100 and list(frame["file"]) == list(again["file"])
    assert split.counts() == {"train": 49, "val": 21, "test": 30}


# ---------------------------------------------------------------------------------------------- heatmaps


def test_heatmaps_one_map_per_convolution(tmp_path):
    from agegender.models.activations import activation_maps, grad_cam

    exp = dataclasses.replace(spz.SpezialiExperiment(), input_size=32)
    image = np.random.default_rng(0).uniform(0, 255, (32, 32, 3)).astype("float32")
    for key in ("age", "gender", "dual"):
        model = spz.build_network(key, exp)
        maps = activation_maps(model, image)
        assert list(maps) == ["block1_conv", "block2_conv", "block3_conv", "block4_conv"]
        assert [m.shape for m in maps.values()] == [(32, 32), (16, 16), (8, 8), (4, 4)]
        assert all(0 <= m.min() and m.max() <= 1 for m in maps.values())
        for task in spz.NETWORKS[key].tasks:
            cam = grad_cam(model, image, output=task)
            assert cam.shape == (32, 32) and 0 <= cam.min() and cam.max() <= 1
    assert spz.plot_heatmaps(maps, image, tmp_path / "h.png", "t").stat().st_size > 0
    assert spz.plot_gradcam(image, {"gender, dual": cam}, tmp_path / "g.png").stat().st_size > 0


# ---------------------------------------------------------------------------------------------- command line


def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        spz.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--data-dir", "--networks", "--seed", "--smoke", "--epochs", "--out", "--data-kind"):
        assert option in text


def test_missing_data_is_one_error_line(tmp_path, capsys):
    assert spz.main(["--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "nowhere" in err and "\n" not in err and "Traceback" not in err
    (tmp_path / "empty").mkdir()
    assert spz.main(["--data-dir", str(tmp_path / "empty"), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_unknown_network_is_a_usage_error(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        spz.main(["--data-dir", str(tmp_path), "--networks", "age,race"])
    assert exit_info.value.code == 2


# ---------------------------------------------------------------------------------------------- smoke runs


def _check_outputs(out, result_dir_kind: str, n_images: int):
    records = sorted((out / "runs" / "utkface_dual_cnn").glob("*/*/record.json"))
    assert sorted(p.parent.parent.name for p in records) == ["age", "dual", "gender", "protocol"]
    for path in records:
        record = json.loads(path.read_text())
        assert record["status"] == "complete" and record["data"]["kind"] == result_dir_kind
        assert (path.parent / "split.csv").is_file()
        if record["experiment"] != "protocol":
            assert (path.parent / "model.keras").is_file() and (path.parent / "iteration_loss.csv").is_file()
            assert record["metrics"]["training"]["epochs"] == 1 and record["metrics"]["training"]["seconds"] > 0
        figures = record["figures"]
    assert set(FIGURES) <= set(figures)
    for name in FIGURES:
        assert os.path.getsize(out / figures[name]) > 1000, name  # records name figures relative to the output root
    label = {"generated": "generated faces", "sample": "real sample"}[result_dir_kind]
    for stem in TABLES:
        table = pd.read_csv(out / "tables" / f"speziali__{stem}.csv")
        # Section IV-B holds only training settings (patience, lambda_age): shown as configuration, never as data
        expected = "configuration (no data)" if stem == "section-iv-b" else label
        assert (table["data"] == expected).any(), stem
    metrics = pd.read_csv(out / "tables" / "speziali__test-metrics.csv")
    lines = metrics[metrics["data"] == label]
    for row in ("Single-task CNN", "Multi-task CNN"):
        for column in ("Age task (R2)", "Gender task (Accuracy)", "Age task (MAE, years)"):
            line = lines[(lines["row"] == row) & (lines["column"] == column)]
            assert len(line) == 1 and np.isfinite(float(line["reproduced"].iloc[0])), (row, column)
    images = pd.read_csv(out / "tables" / "speziali__section-iii-a.csv")
    assert float(images.loc[(images["row"] == "UTKFace") & (images["data"] == label), "reproduced"].iloc[0]) == n_images
    assert "speziali" in (out / "README.md").read_text()


@pytest.mark.slow
def test_smoke_run_on_generated_faces(faces, tmp_path):
    exp = dataclasses.replace(spz.smoke(spz.SpezialiExperiment()), input_size=16, max_images=200)
    result = spz.run(faces, exp, out=tmp_path, data_kind_override="generated", verbose=0, log=lambda *a: None)
    _check_outputs(tmp_path, "generated", 200)
    assert result["counts"] == {"train": 98, "val": 42, "test": 60}
    assert 0 <= result["ks"]["p_value"] <= 1
    text = spz.format_cells(result["cells"])
    assert "Time (sec)" in text and "840.61" in text and "not published" in text


@pytest.mark.slow
def test_smoke_run_on_the_real_sample(utkface_sample, tmp_path, capsys):
    subset = tmp_path / "utkface"
    subset.mkdir()
    for path in sorted(utkface_sample.glob("*.jpg"))[::25][:200]:  # ~200 faces spread over all ages
        (subset / path.name).symlink_to(path)
    out = tmp_path / "out"
    assert spz.main(["--data-dir", str(subset), "--smoke", "--seed", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Test Metrics" in printed and "not published" in printed and "[speziali] figures:" in printed
    _check_outputs(out, "sample", 200)


# ---------------------------------------------------------------------------------------------- learning


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0])  # seeds 0-3 all passed in trials; one keeps CI inside its budget
def test_dual_network_beats_chance_on_generated_faces(faces, seed):
    """Gender accuracy clearly above the majority rate and age R² > 0 on the test split.

    Tiny scale (600 faces, 16x16, 12 epochs on CPU) needs two departures from the paper, both
    hyper-parameters, not the assertion: Adam at the paper's 0.01 blows up in the first steps at
    this scale (epoch-1 losses in the thousands, then a dead gender branch), so the dual net uses
    3e-4, and batches of 32 give twice the steps per epoch. In trials (seeds 0-3) 3e-4 beat the
    majority rate by 0.13-0.25 on every seed; 1e-3 failed on one seed in four (margin 0.02).
    """
    from agegender.training import train

    import keras

    exp = dataclasses.replace(spz.SpezialiExperiment(), input_size=16, batch_size=32, lr_dual=3e-4, epochs=12,
                              seed=seed)
    _, _, split = spz.load_split(faces, exp)
    keras.utils.set_random_seed(seed)
    datasets = spz.make_datasets(split, exp, ("gender", "age"), [])
    model = spz.build_network("dual", exp)
    train(model, datasets["train"], datasets["val"], epochs=exp.epochs, patience=exp.patience, verbose=0)
    test = spz.evaluate(model, spz.NETWORKS["dual"], datasets, exp, float(split.part("train")["age"].mean()))["test"]
    assert test["gender_accuracy"] >= test["gender_majority"] + 0.08, test
    assert test["age_r2"] > 0, test
