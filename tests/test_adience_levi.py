"""Jørgensen (Adience) reproduction: ``python -m reproductions.adience_levi``.

The models themselves (exact Table 1 shapes and Table 2 counts, LRN against numpy, ``.keras``
round trips) are tested in ``tests/test_models.py``; here: the command line, the validation
split, over-sampling, the offline-weights and data errors, and a smoke run on a generated
Adience tree built from the real fold files that writes one record per fold and the tables.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from reproductions import adience_levi as A

ROOT = Path(__file__).resolve().parents[1]

# Jørgensen Table 2 and Section 3.1 (the full-size baseline)
EXPECTED_COUNTS = {
    "gender": {"trainable": 7_192_065, "non_trainable": 0, "total": 7_192_065},
    "age": {"trainable": 7_192_968, "non_trainable": 0, "total": 7_192_968},
    "multitask": {"trainable": 14_287_625, "non_trainable": 0, "total": 14_287_625},
    "transfer": {"trainable": 31_220_873, "non_trainable": 15_365_160, "total": 46_586_033},
    "levi_full": {"trainable": 115_023_873, "non_trainable": 0, "total": 115_023_873},
    "conv_part": {"trainable": 97_408, "non_trainable": 0, "total": 97_408},
}


def _table(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _line(rows, row, column, data):
    hits = [r for r in rows if r["row"] == row and r["column"] == column and r["data"] == data]
    assert len(hits) == 1, (row, column, data, hits)
    return hits[0]


# --------------------------------------------------------------------------- no data needed

def test_describe_prints_parameter_counts_as_json(capsys):
    assert A.main(["--describe"]) == 0
    assert json.loads(capsys.readouterr().out) == {"models": EXPECTED_COUNTS}


def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        A.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--data-dir", "--model", "--folds", "--gamma", "--weights", "--smoke", "--out", "--describe",
                   "--protocol", "--levi-splits", "--validation", "--val-fraction", "--epochs", "--batch-size",
                   "--seed", "--no-oversample", "--data-kind", "--precision", "--verbose"):
        assert option in text


def test_experiment_configs_follow_the_paper_and_overrides_are_replacements():
    exp = A.EXPERIMENTS["multitask"]
    assert (exp.learning_rate, exp.batch_size, exp.epochs, exp.patience, exp.gamma) == (1e-4, 128, 100, 10, 0.5)
    assert (exp.image_size, exp.load_size, exp.flip) == (227, 256, False)  # Sec. 3.4: random crops only
    assert A.EXPERIMENTS["transfer"].weights == "imagenet"
    small = A.smoke(exp)
    assert (small.epochs, small.image_size, small.load_size, small.smoke) == (2, 64, 72, True)
    assert A.smoke(A.EXPERIMENTS["transfer"]).image_size == 71  # Xception's minimum
    args = A.parse_args(["--data-dir", "x", "--gamma", "0.3", "--weights", "none", "--epochs", "7"])
    chosen = {e.name: e for e in A.experiments_from_args(args)}
    assert chosen["multitask"].gamma == 0.3 and chosen["gender"].epochs == 7
    assert A.table3_row(chosen["multitask"]) == "Multitask Classification (γ = 0.3)"
    assert A.table3_row(chosen["gender"]) == "Gender Classification"
    assert A.table3_row(chosen["transfer"]).startswith("Transfer Classification (no ImageNet weights")
    assert any("epochs 7 (paper 100)" in n for n in A.deviations(chosen["age"], "folds"))
    assert A.table3_row(A.EXPERIMENTS["transfer"]) == "Transfer Classification"


def _frame(users_per_fold=6, images_per_user=5):
    rows = []
    for fold in range(5):
        for u in range(users_per_fold):
            for i in range(images_per_user):
                rows.append({"path": f"/x/{fold}_{u}_{i}.jpg", "file": f"aligned/u{fold}_{u}/{i}.jpg", "age": np.nan,
                             "age_group": (u + i) % 8, "gender": (u + fold) % 2, "race": -1,
                             "group": f"u{fold}_{u}", "source": "adience", "fold": fold})
    return pd.DataFrame(rows)


def test_validation_users_are_held_out_subject_exclusively():
    exp = A.EXPERIMENTS["multitask"]
    split = A.fold_split(_frame(), exp, 2)
    counts = split.counts()
    assert counts["test"] == 30 and counts["train"] + counts["val"] == 120
    assert 12 <= counts["val"] <= 20  # whole users until >= 10% of the training images
    groups = {part: set(split.part(part)["group"]) for part in ("train", "val", "test")}
    assert not groups["train"] & groups["val"] and not groups["test"] & (groups["train"] | groups["val"])
    assert set(split.part("test")["fold"]) == {2}
    again = A.fold_split(_frame(), exp, 2)
    assert groups["val"] == set(again.part("val")["group"])  # seeded


def test_validation_test_reuses_the_test_fold():
    exp = A.dataclasses.replace(A.EXPERIMENTS["gender"], validation="test")
    split = A.fold_split(_frame(), exp, 4)
    assert split.counts() == {"train": 120, "val": 30, "test": 30}
    assert list(split.part("val")["file"]) == list(split.part("test")["file"])


def test_oversampled_predictions_views_are_centre_corners_and_mirrors():
    import keras
    import tensorflow as tf

    from agegender.oversample import oversampled_predictions

    # the model outputs the top-left pixel (channel 0) of its 3x3 input
    inputs = keras.Input((3, 3, 3))
    dense = keras.layers.Dense(1, use_bias=False, name="gender")
    model = keras.Model(inputs, {"gender": dense(keras.layers.Flatten()(inputs))})
    kernel = np.zeros((27, 1), "float32")
    kernel[0] = 1
    dense.set_weights([kernel])
    image = np.repeat(np.arange(25, dtype="float32").reshape(5, 5, 1), 3, axis=-1)
    ds = tf.data.Dataset.from_tensor_slices((image[None], {"gender": np.ones((1, 1), "float32")},
                                             {"gender": np.ones(1, "float32")})).batch(1)
    labels, views, weights = oversampled_predictions(model, ds, 3)
    grid = np.arange(25).reshape(5, 5)
    # centre (offset 1), corners; mirrored crops start at the crop's top-right pixel
    expected = [grid[1, 1], grid[0, 0], grid[0, 2], grid[2, 0], grid[2, 2],
                grid[1, 3], grid[0, 2], grid[0, 4], grid[2, 2], grid[2, 4]]
    assert views["gender"].shape == (1, 10, 1)
    np.testing.assert_allclose(views["gender"][0, :, 0], expected)
    assert labels["gender"].shape == (1, 1) and weights["gender"].tolist() == [1.0]


# --------------------------------------------------------------------------- errors

@pytest.mark.parametrize("weights", ["imagenet", "missing-file"])
def test_unavailable_transfer_weights_fail_with_one_line(weights, tmp_path, monkeypatch, capsys):
    from keras.src.utils import file_utils

    def offline(*args, **kwargs):  # what Keras raises without network
        raise Exception(f"URL fetch failure on {A.XCEPTION_URL}: None -- [Errno -2] Name or service not known")

    monkeypatch.setattr(file_utils, "get_file", offline)
    value = "imagenet" if weights == "imagenet" else str(tmp_path / "nope.h5")
    rc = A.main(["--data-dir", str(tmp_path), "--model", "transfer", "--folds", "0", "--weights", value,
                 "--out", str(tmp_path / "out")])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert "--weights" in err[0] and A.XCEPTION_NOTOP in err[0] and "none" in err[0]
    assert not (tmp_path / "out").exists()  # failed before anything was written


def test_empty_data_dir_prints_one_error_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "reproductions.adience_levi", "--data-dir", str(tmp_path),
                             "--model", "multitask"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and "fold_0_data.txt" in lines[0]
    assert "Traceback" not in result.stderr


def test_fold_files_without_images_is_a_data_error(adience_folds, tmp_path, capsys):
    rc = A.main(["--data-dir", str(adience_folds), "--model", "gender", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and "aligned" in err and len(err.strip().splitlines()) == 1


# --------------------------------------------------------------------------- smoke run

@pytest.fixture(scope="session")
def generated_adience(adience_folds, tmp_path_factory) -> Path:
    """300 rows of the real fold files (60 per fold), each image drawn from its row's labels (72x72)."""
    from agegender.data.synth import synthesize

    root = tmp_path_factory.mktemp("adience_generated")
    synthesize("adience", root, 300, 0, size=72, adience_folds_dir=adience_folds)
    return root


@pytest.mark.slow
def test_smoke_multitask_two_folds_writes_records_and_tables(generated_adience, tmp_path, capsys):
    out = tmp_path / "out"
    rc = A.main(["--data-dir", str(generated_adience), "--model", "multitask", "--folds", "0,1", "--smoke",
                 "--out", str(out), "--data-kind", "generated", "--verbose", "0"])
    printed = capsys.readouterr().out
    assert rc == 0
    assert "Multitask Classification" in printed and "[84.0 ± 1.4]" in printed

    records = sorted((out / "runs" / "adience_levi" / "multitask").glob("*/record.json"))
    assert len(records) == 2  # one per fold
    folds = set()
    for path in records:
        record = json.loads(path.read_text())
        assert record["status"] == "complete" and record["paper"] == "jorgensen"
        assert record["data"]["kind"] == "generated" and record["config"]["smoke"] is True
        # issue 18: the smoke settings are deviations (own table rows); no machine path in a committed record
        assert record["deviations"] == {"image_size": 64, "load_size": 72, "batch_size": 32, "epochs": 2,
                                        "max_rows_per_fold": 200, "smoke": True}
        text = json.dumps(record)
        assert str(generated_adience) not in text and str(tmp_path) not in text
        assert record["data"]["path"] == generated_adience.name and record["data"]["fingerprint"]["files"] > 300
        assert record["plots"]["learning_curves"] == "learning_curves.png"
        folds.add(record["data"]["test_fold"])
        columns = {c["column"] for c in record["cells"] if c["table"] == "Table 3"}
        assert columns == {"Gender accuracy", "Age accuracy", "Avg training epochs"}
        assert all("SMOKE RUN" in c["note"] for c in record["cells"])
        assert 1 <= record["metrics"]["epochs_run"] <= 2 and len(record["history"]) == record["metrics"]["epochs_run"]
        assert np.asarray(record["metrics"]["test"]["age"]["confusion_matrix"]).shape == (8, 8)
        for name in ("learning_curves.png", "gender_confusion.png", "age_confusion.png", "model.keras", "split.csv"):
            assert (path.parent / name).is_file(), name
        split = pd.read_csv(path.parent / "split.csv")
        groups = {part: set(split.loc[split.split == part, "group"]) for part in ("train", "val", "test")}
        assert not groups["test"] & (groups["train"] | groups["val"]) and not groups["train"] & groups["val"]
        assert ((split["age_group"] >= 0) & (split["gender"] >= 0)).all()  # multi-task: both labels
    assert folds == {0, 1}
    assert (out / "figures" / "jorgensen_figure6_multitask.png").is_file()

    table3 = _table(out / "tables" / "jorgensen__table-3.csv")
    for column in ("Gender accuracy", "Age accuracy", "Avg training epochs"):
        line = _line(table3, "Multitask Classification", column, "generated faces")
        assert line["n"] == "2" and line["reproduced"]
    assert _line(table3, "Multitask Classification", "Gender accuracy", "generated faces")["published"] == "84.0"
    assert _line(table3, "Multitask Classification", "Gender accuracy std", "generated faces")["n"] == "1"
    assert _line(table3, "Baseline", "Gender accuracy", "not yet")["published"] == "86.8"
    extra = _table(out / "tables" / "jorgensen__table-3-extra.csv")
    assert _line(extra, "Multitask Classification", "Age one-off accuracy", "generated faces")["n"] == "2"

    table2 = _table(out / "tables" / "jorgensen__table-2.csv")
    assert len(table2) == 15 and all(line["delta"] == "0" for line in table2)  # every count exact
    table1 = _table(out / "tables" / "jorgensen__table-1.csv")
    assert _line(table1, "Fully connected 1", "Parameters", "model build (no data)")["delta"] == "0"


def test_levi_protocol_reads_levi_lists_and_joins_both_labels(generated_adience, shared_data):
    splits_dir = shared_data / "adience" / "levi_splits"
    if not splits_dir.is_dir():
        pytest.skip(f"Levi & Hassner lists not found at {splits_dir}")
    frame, _ = A.load_adience(generated_adience, A.EXPERIMENTS["multitask"], data_kind="generated")
    split = A.fold_split(frame, A.EXPERIMENTS["multitask"], 0, protocol="levi", levi_splits=splits_dir,
                         data_dir=generated_adience)
    counts = split.counts()
    assert all(counts[part] > 0 for part in ("train", "val", "test")), counts
    assert ((split.frame["age_group"] >= 0) & (split.frame["gender"] >= 0)).all()
    test_files = set(split.part("test")["file"])
    assert test_files <= set(frame.loc[frame["fold"] == 0, "file"])  # Levi's test list of fold 0 is fold 0


# --------------------------------------------------------------------------- issue 18: the joint set, Eq. 1, notes

CANONICAL_AGES = {"(0, 2)", "(4, 6)", "(8, 12)", "(15, 20)", "(25, 32)", "(38, 43)", "(48, 53)", "(60, 100)"}


def _raw_fold_counts(folds_dir: Path) -> dict:
    """Per fold, rows of the raw fold files (every line, duplicates included) valid for gender, age and both,
    counted straight from the tab-separated text (independent of the reader)."""
    counts = {}
    for k in range(5):
        with open(folds_dir / f"fold_{k}_data.txt", encoding="utf-8") as handle:
            lines = [line.rstrip("\n").split("\t") for line in handle][1:]
        gender = [f[4] in ("m", "f") for f in lines]
        age = [f[3] in CANONICAL_AGES for f in lines]
        counts[k] = {"gender": sum(gender), "age": sum(age), "both": sum(g and a for g, a in zip(gender, age))}
    return counts


def test_every_model_trains_and_tests_on_the_joint_set_by_default(adience_folds):
    """Issue 18 item 2: Sec. 2.1 removes rows outside the gender *and* age label sets and uses that one set for
    every model; the single-task models must not train on their own per-task filters unless asked
    (``row_filter="task"``), and such runs get their own Table 3 row and a deviation in their record."""
    from agegender.data.adience import read_adience

    raw = _raw_fold_counts(adience_folds)
    assert sum(c["both"] for c in raw.values()) == 16_258  # the paper prints 16,228 (docstring: the gap)
    assert (sum(c["gender"] for c in raw.values()), sum(c["age"] for c in raw.values())) == (17_603, 17_424)
    frame = read_adience(adience_folds, keep_duplicates=True, check_images=False).frame
    for name in A.MODELS:
        exp = A.EXPERIMENTS[name]
        assert exp.row_filter == "joint" and A.table3_row(exp) == exp.row and A.record_deviations(exp, "folds") == {}
        for fold in (0, 3):
            counts = A.fold_split(frame, exp, fold).counts()
            assert counts["test"] == raw[fold]["both"], (name, fold)
            assert counts["train"] + counts["val"] == sum(c["both"] for k, c in raw.items() if k != fold)
    for name, task in (("gender", "gender"), ("age", "age")):
        exp = A.dataclasses.replace(A.EXPERIMENTS[name], row_filter="task")
        counts = A.fold_split(frame, exp, 1).counts()
        assert counts["test"] == raw[1][task] > raw[1]["both"]
        assert A.table3_row(exp) == f"{A.EXPERIMENTS[name].row} (per-task rows)"
        assert A.record_deviations(exp, "folds") == {"row_filter": "task"}
        assert any("--row-filter task" in note for note in A.deviations(exp, "folds"))
    # two-task models need both labels either way: the option changes nothing for them
    both = A.dataclasses.replace(A.EXPERIMENTS["multitask"], row_filter="task")
    assert A.fold_split(frame, both, 1).counts()["test"] == raw[1]["both"]
    args = A.parse_args(["--data-dir", "x", "--row-filter", "task"])
    assert {e.row_filter for e in A.experiments_from_args(args)} == {"task"}
    assert {e.row_filter for e in A.experiments_from_args(A.parse_args(["--data-dir", "x"]))} == {"joint"}


@pytest.mark.parametrize("gamma", [0.5, 0.3, 0.0])
def test_eq1_loss_is_the_gamma_weighted_sum_of_the_batch_mean_cross_entropies(gamma):
    """Issue 18 item 8: Eq. 1, ``L = gamma * L_gender + (1 - gamma) * L_age``, checked against numpy on a fixed
    batch (binary cross-entropy of the sigmoid output, categorical cross-entropy of the 8-way softmax)."""
    import keras

    keras.utils.set_random_seed(0)
    x_in = keras.Input((6,))
    model = keras.Model(x_in, {"gender": keras.layers.Dense(1, activation="sigmoid", name="gender")(x_in),
                               "age": keras.layers.Dense(8, activation="softmax", name="age")(x_in)})
    exp = A.dataclasses.replace(A.EXPERIMENTS["multitask"], gamma=gamma)
    A.compile_model(model, exp)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(10, 6)).astype("float32")
    y_gender = rng.integers(0, 2, (10, 1)).astype("float32")
    y_age = rng.integers(0, 8, 10)
    ones = {"gender": np.ones(10, "float32"), "age": np.ones(10, "float32")}  # the pipeline's weights (joint set)
    got = model.evaluate(x, {"gender": y_gender, "age": y_age}, sample_weight=ones, batch_size=10, verbose=0,
                         return_dict=True)["loss"]
    out = model.predict(x, verbose=0)
    p = out["gender"].astype("float64")[:, 0]
    bce = -np.mean(y_gender[:, 0] * np.log(p) + (1 - y_gender[:, 0]) * np.log(1 - p))
    ce = -np.mean(np.log(out["age"].astype("float64")[np.arange(10), y_age]))
    assert got == pytest.approx(gamma * bce + (1 - gamma) * ce, rel=1e-5)
    assert abs(bce - ce) > 0.05  # the two losses differ, so a swapped gamma would show


def test_table3_notes_say_the_baseline_is_over_sampled_and_how_the_test_crop_is_chosen():
    """Issue 18 item 7: the Baseline* row is Levi & Hassner's over-sampled result; the notes point Table 3's
    centre-crop cells to the over-sampled column and the docstring names the test-time crop."""
    assert "over-sampled" in A.CENTRE_NOTE and "Baseline*" in A.CENTRE_NOTE and "centre 227x227" in A.CENTRE_NOTE
    assert "Baseline*" in A.OVERSAMPLED_NOTE
    doc = " ".join(A.__doc__.split())
    assert "Test-time crop" in doc and "Levi & Hassner's over-sampled result" in doc
    assert "16,258" in doc and "16,156" in doc and "16,228" in doc
