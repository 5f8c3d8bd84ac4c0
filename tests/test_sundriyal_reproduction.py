"""Sundriyal reproduction (``python -m reproductions.mtl_weighted_loss``) as a whole: the table cells each
model fills, lined up with the published catalogue (ablation rows, barely-moved loss weights, Figures 4.7/4.8,
Sections 3.6.2 and 4.1), the command line (help, usage errors, missing data, smoke settings), ``make
reproduce-mtl`` filling its tables, and smoke runs on generated UTKFace / CelebA layouts and on the real CORAL
lists (slow), each table value checked against the run's record."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest

import reproductions.mtl_weighted_loss as sun


# ---------------------------------------------------------------------------------------------- cells


def _fake_result(method, dataset, tasks, converged=None):
    test = {}
    for task in tasks:
        if dataset == "utkface" and task == "age":
            test[task] = {"mae_years": 5.0}
        else:
            test[task] = {"accuracy": 0.9, "per_class_accuracy": [0.95, 0.6], "confusion_matrix": [[19, 1], [4, 6]]}
    return {"method": method, "metrics": {"test": test},
            "early_freeze": {"converged": converged or {t: {"epoch": 14, "best_epoch": 11} for t in tasks}}}


def test_cells_line_up_with_the_published_catalogue():
    from results.catalogue import load_published

    pub = load_published("sundriyal")
    published = set(zip(pub["table"], pub["row"], pub["column"]))
    cells = []
    for dataset, backbone, tasks in (("utkface", "senet50_128", ("gender", "race", "age")),
                                     ("celeba", "resnet50_imagenet", ("gender", "age")),
                                     ("celeba", "senet50_128", ("gender", "age"))):
        exp = dataclasses.replace(sun.SundriyalExperiment(), dataset=dataset, backbone=backbone)
        for method in ("baseline", "single"):
            for task in tasks:
                cells += sun.model_cells(exp, _fake_result(method, dataset, (task,)), "n")
        cells += sun.model_cells(exp, _fake_result("mtl", dataset, tasks), "n")
        for variant in (dict(loss="average"), dict(early_freeze=False), dict(lam=0.001), dict(lam=0.01), dict(lam=1.0)):
            cells += sun.model_cells(dataclasses.replace(exp, **variant), _fake_result("mtl", dataset, tasks), "n")
    keys = {(c["table"], c["row"], c["column"]) for c in cells}
    expected = {(t, r, c) for t, r, c in published
                if t in {"Table 4.9", "Table 4.10", "Table 4.14", "Table 4.15", "Table 5.1", "Table 5.2", "Table 5.3",
                         "Table 5.4", "Table 5.5", "Section 5.2", "Section 5.3"}
                or (t == "Table 4.16" and r.startswith("Ours"))}
    expected -= {(t, r, c) for t, r, c in published if t == "Table 4.9"}  # no UTKFace ResNet-50 run above
    assert expected <= keys, sorted(expected - keys)
    assert ("Figure 5.3", "true Old", "predicted Young") in keys
    assert ("Figure 5.4", "true Young", "predicted Old") in keys
    celeba_se = dataclasses.replace(sun.SundriyalExperiment(), dataset="celeba")
    rows = {c["row"] for c in sun.model_cells(celeba_se, _fake_result("single", "celeba", ("age",)), "n")
            if c["table"] == "Section 5.3"}
    assert rows == {"Single Task Neural Network (SE-ResNet-50-128D)"}  # Section 5.3's figures are ResNet-50's


def test_ablations_get_their_own_rows():
    exp = sun.SundriyalExperiment()
    lam = sun.model_cells(dataclasses.replace(exp, lam=0.01), _fake_result("mtl", "utkface", ("gender", "race", "age")),
                          "n")
    tables = {(c["table"], c["row"]) for c in lam}
    assert ("Table 5.5", "0.01") in tables and ("Table 4.10", "Proposed Multi-Task Learning Network") not in tables
    assert ("Table 4.10", "Proposed Multi-Task Learning Network (weighted-ef-l0.01)") in tables
    stop = sun.model_cells(dataclasses.replace(exp, early_freeze=False),
                           _fake_result("mtl", "utkface", ("gender", "race", "age"),
                                        converged={"gender": {"epoch": 14}, "race": {"epoch": 12}}), "n")
    by_key = {(c["table"], c["row"], c["column"]): c["value"] for c in stop}
    assert by_key[("Table 5.4", "Early stopping of converged task", "Age MAE")] == 5.0
    assert by_key[("Section 5.2", "without Early Freeze", "gender and race converge at")] == 14
    assert ("Section 5.2", "without Early Freeze", "age converges at") not in by_key
    assert not any(c["table"] == "Table 5.5" for c in stop)
    resnet = sun.model_cells(dataclasses.replace(exp, backbone="resnet50", loss="average"),
                             _fake_result("mtl", "utkface", ("gender", "race", "age")), "n")
    assert ("Table 5.3", "Average Loss (ResNet-50)") in {(c["table"], c["row"]) for c in resnet}


# ---------------------------------------------------------------------------------------------- command line


def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        sun.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--dataset", "--data-dir", "--coral-csv-dir", "--backbone", "--backbone-weights", "--method",
                   "--loss", "--early-freeze", "--no-early-freeze", "--lambda", "--smoke", "--out", "--seed",
                   "--epochs", "--imagenet-weights", "--data-kind", "--fresh", "--deterministic"):
        assert option in text, option
    assert "Raschka-research-group" in " ".join(text.split())


@pytest.mark.parametrize("argv", [["--dataset", "utkface", "--data-dir", "x", "--backbone", "lightcnn"],
                                  ["--dataset", "utkface", "--data-dir", "x", "--method", "dual"],
                                  ["--dataset", "celeba", "--data-dir", "x", "--coral-csv-dir", "y"],
                                  ["--dataset", "imdb", "--data-dir", "x"]])
def test_bad_options_are_usage_errors(argv):
    with pytest.raises(SystemExit) as exit_info:
        sun.main(argv)
    assert exit_info.value.code == 2


def test_missing_data_is_one_error_line(tmp_path, capsys):
    assert sun.main(["--dataset", "utkface", "--data-dir", str(tmp_path / "nowhere"), "--smoke",
                     "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "nowhere" in err and "\n" not in err
    assert sun.main(["--dataset", "celeba", "--data-dir", str(tmp_path), "--smoke", "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_smoke_mode_is_a_replace_of_the_thesis_settings():
    exp = sun.SundriyalExperiment()
    assert (exp.learning_rate, exp.weight_decay, exp.lam, exp.lr_factor, exp.age_scale) == (3e-5, 1e-5, 0.1, 0.1, 40.0)
    small = sun.smoke(exp)
    assert small.smoke and small.epochs == 2 and small.learning_rate == exp.learning_rate
    assert dataclasses.replace(small, smoke=False, epochs=exp.epochs, input_size=None, batch_size=64, max_images=None,
                               patience=5, lr_patience=2) == exp


# ---------------------------------------------------------------------------------------------- smoke runs


@pytest.fixture(scope="module")
def utk_faces(tmp_path_factory):
    from tests.helpers import generated_faces

    return generated_faces(tmp_path_factory, "utkface", 260, size=32, name="utk")


@pytest.fixture(scope="module")
def celeba_faces(tmp_path_factory):
    from tests.helpers import generated_faces

    return generated_faces(tmp_path_factory, "celeba", 240, size=32, name="celeba")


def _table(out, stem):
    return pd.read_csv(out / "tables" / f"sundriyal__{stem}.csv", dtype={"row": str, "column": str})


def movement_matches(movement, initial, final) -> bool:
    return movement["initial"] == initial and movement["final"] == final


def _reproduced(table, row, column, label="generated faces"):
    line = table[(table["row"] == row) & (table["column"] == column) & (table["data"] == label)]
    assert len(line) == 1, (row, column)
    return float(str(line["reproduced"].iloc[0]).split(" ± ")[0].replace(",", ""))  # mean ± std over runs


@pytest.mark.slow
def test_smoke_cli_on_generated_utkface(utk_faces, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    assert sun.main(["--dataset", "utkface", "--data-dir", str(utk_faces), "--method", "mtl", "--smoke",
                     "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Table 4.10" in printed and "98.47" in printed and "[sundriyal] figures:" in printed
    records = [json.loads(p.read_text()) for p in sorted((out / "runs" / "mtl_weighted_loss").glob("*/*/record.json"))]
    assert [r["experiment"] for r in records] == ["utkface-protocol-smoke",
                                                  "utkface-senet50_128-smoke-mtl-weighted-ef-l0.1"]
    for record in records:
        assert record["status"] == "complete" and record["data"]["kind"] == "generated"
        assert record["config"]["backbone"]["substituted"] and record["config"]["backbone"]["used"] == "smoke_cnn"
    mtl = records[1]
    assert [h["epoch"] for h in mtl["history"]] == [1, 2]
    assert all(sum(h[f"loss_weight_{t}"] for t in ("gender", "race", "age")) == pytest.approx(1, abs=1e-5)
               for h in mtl["history"])
    assert mtl["early_freeze"]["mode"] == "freeze" and mtl["metrics"]["training"]["weighting"] == "learned"
    heads = mtl["preprocessing"]["heads"]
    assert set(heads) == {"gender", "race", "age"} and heads["age"]["offset"] == 21
    assert heads["age"]["scale"] == pytest.approx(1 / 40) and mtl["preprocessing"]["input_size"] == 32
    assert (out / "runs" / "mtl_weighted_loss" / "utkface-protocol-smoke").glob("*/coral_like_lists/utk_train.csv")
    # each table value against the record, the accuracies recomputed from its confusion matrices (issue 18 item 8)
    test = mtl["metrics"]["test"]
    accuracy = {t: 100 * np.trace(np.asarray(test[t]["confusion_matrix"])) / np.sum(test[t]["confusion_matrix"])
                for t in ("gender", "race")}
    expected = {"Gender Accuracy": accuracy["gender"], "Race Accuracy": accuracy["race"],
                "Age MAE": test["age"]["mae_years"]}
    t410 = _table(out, "table-4-10")
    for column, value in expected.items():
        assert _reproduced(t410, "Proposed Multi-Task Learning Network", column) == pytest.approx(value, abs=0.006)
    notes = t410.loc[t410["data"] == "generated faces", "notes"]
    assert notes.str.contains("backbone substituted").all() and notes.str.contains("CORAL-like").all()
    assert _reproduced(_table(out, "table-5-4"), "Proposed Early Freeze Method", "Age MAE") == \
        pytest.approx(expected["Age MAE"], abs=0.006)
    assert _reproduced(_table(out, "table-5-3"), "Proposed weighted Loss", "Gender Accuracy") == \
        pytest.approx(expected["Gender Accuracy"], abs=0.006)
    assert _reproduced(_table(out, "table-4-16"), "Ours (MTL+SEResnet)", "Age MAE (in years)") == \
        pytest.approx(expected["Age MAE"], abs=0.006)
    assert _reproduced(_table(out, "table-5-5"), "0.1", "Race Accuracy") == pytest.approx(expected["Race Accuracy"],
                                                                                          abs=0.006)
    # issue 18 item 6: initial and final loss weights, the movement measured against the initial spread
    training = mtl["metrics"]["training"]
    initial, final = training["initial_loss_weights"], training["final_loss_weights"]
    assert set(initial) == set(final) == {"gender", "race", "age"} and sum(initial.values()) == pytest.approx(1)
    # the weights after training (Early Freeze's restores included) are about the last epoch's logged ones
    assert final == pytest.approx({t: mtl["history"][-1][f"loss_weight_{t}"] for t in final}, abs=1e-3)
    assert movement_matches(training["loss_weight_movement"], initial, final)
    movement = training["loss_weight_movement"]
    spread = max(initial.values()) - min(initial.values())
    assert movement["spread"] == pytest.approx(spread)
    assert movement["barely_moved"] == (max(abs(final[t] - initial[t]) for t in final) < spread)
    # records: the smoke settings are the deviations; no machine path anywhere
    assert mtl["deviations"]["smoke"] is True and mtl["deviations"]["backbone_used"] == "smoke_cnn (random weights)"
    for record in records:
        assert str(utk_faces) not in json.dumps(record) and str(tmp_path) not in json.dumps(record)
    t41 = _table(out, "table-4-1")
    assert sum(_reproduced(t41, r, "Total Persons") for r in sun.RACE_ROWS) == 260  # every face read
    counts = records[0]["data"]["split_counts"]
    t43 = _table(out, "table-4-3")
    assert _reproduced(t43, "Validation", "Number of examples") == counts["val"] == math.ceil(
        0.2 * (counts["train"] + counts["val"]))
    for name in ("fig4_1_age_distribution", "fig5_1_loss_vs_epoch_early_freeze"):
        assert name in mtl["figures"]
    assert any(k.startswith("loss_weights_") for k in mtl["figures"])
    assert not list((out / "runs").rglob("train_state"))  # complete: no training state left
    assert mtl["config"]["deterministic"] is False and records[0]["config"]["deterministic"] is False

    # the same command again: the complete run is read back (same folders, records untouched), tables regenerated
    paths = sorted((out / "runs" / "mtl_weighted_loss").glob("*/*/record.json"))
    before = {p: p.read_bytes() for p in paths}
    (out / "tables" / "sundriyal__table-4-10.csv").unlink()
    assert sun.main(["--dataset", "utkface", "--data-dir", str(utk_faces), "--method", "mtl", "--smoke",
                     "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "read back, not trained again" in printed and "Epoch 1/" not in printed
    assert sorted((out / "runs" / "mtl_weighted_loss").glob("*/*/record.json")) == paths
    assert all(p.read_bytes() == before[p] for p in paths)
    assert _reproduced(_table(out, "table-4-10"), "Proposed Multi-Task Learning Network", "Age MAE") == \
        pytest.approx(mtl["metrics"]["test"]["age"]["mae_years"], abs=0.006)
    # --fresh: a new run beside the first, whose model is trained again (stopped where training would start)
    class Started(Exception):
        pass

    def train_one(*args, recorder, **kwargs):
        raise Started(recorder)

    monkeypatch.setattr(sun.reproduction, "train_one", train_one)
    with pytest.raises(Started) as started:
        sun.main(["--dataset", "utkface", "--data-dir", str(utk_faces), "--method", "mtl", "--smoke", "--out", str(out),
                  "--fresh"])
    recorder = started.value.args[0]
    assert not recorder.resumed and recorder.record["status"] == "running" and recorder.record["history"] == []
    for experiment in ("utkface-protocol-smoke", "utkface-senet50_128-smoke-mtl-weighted-ef-l0.1"):
        runs = sorted((out / "runs" / "mtl_weighted_loss" / experiment).iterdir())
        assert len(runs) == 2 and recorder.run_id in [r.name for r in runs], runs
    assert all(p.read_bytes() == before[p] for p in paths)


def test_figures_5_1_and_5_2_side_by_side_from_the_other_record(tmp_path):
    exp = sun.smoke(sun.SundriyalExperiment())
    other = dataclasses.replace(exp, early_freeze=False)
    folder = tmp_path / "runs" / "mtl_weighted_loss" / sun.experiment_name(other, "mtl") / "r1"
    folder.mkdir(parents=True)
    history = [{"epoch": e, **{f"{k}{t}_loss": 1.0 / e for t in ("gender", "race", "age") for k in ("", "val_")}}
               for e in (1, 2, 3)]
    folder.joinpath("record.json").write_text(json.dumps(
        {"status": "complete", "seed": exp.seed, "history": history,
         "early_freeze": {"events": [{"epoch": 2, "task": "gender"}]}}))
    found = sun._other_variant(tmp_path / "runs", exp, sun.experiment_name(other, "mtl"))
    assert found is not None and found["history"] == history
    assert sun._other_variant(tmp_path / "runs", dataclasses.replace(exp, seed=9),
                              sun.experiment_name(other, "mtl")) is None
    pair = {"Early Freeze": (history, []), "early stopping": (found["history"], found["early_freeze"]["events"])}
    path = sun.plot_freeze_comparison(pair, ("gender", "race", "age"), tmp_path / "cmp.png")
    assert path.stat().st_size > 1000


@pytest.mark.slow
def test_smoke_run_on_generated_celeba_every_method(celeba_faces, tmp_path):
    exp = dataclasses.replace(sun.smoke(sun.SundriyalExperiment(dataset="celeba", backbone="resnet50")), epochs=1,
                              max_images=120)
    result = sun.run(celeba_faces, exp, out=tmp_path, verbose=0, log=lambda *a: None)
    assert len(result["results"]) == 5  # baseline x2, single x2, mtl
    assert sum(result["counts"].values()) == 240 and sum(result["counts_used"].values()) < 240
    t414 = _table(tmp_path, "table-4-14")
    metrics = result["metrics"]

    def from_confusion(name, task, row=None):  # accuracy (or one class's recall), recomputed from the record
        matrix = np.asarray(metrics[name]["test"][task]["confusion_matrix"], dtype=float)
        return 100 * (np.trace(matrix) / matrix.sum() if row is None else matrix[row, row] / matrix[row].sum())

    for method in sun.ROW:
        for task, column in (("gender", "Gender Accuracy"), ("age", "Age Accuracy")):
            name = sun.experiment_name(exp, method, None if method == "mtl" else task)
            assert _reproduced(t414, sun.ROW[method], column) == pytest.approx(from_confusion(name, task), abs=0.006)
    s53 = _table(tmp_path, "section-5-3")
    young = _reproduced(s53, "Single Task Neural Network", "Young accuracy")
    assert young == pytest.approx(from_confusion(sun.experiment_name(exp, "single", "age"), "age", 0), abs=0.006)
    f54 = _table(tmp_path, "figure-5-4")
    total = sum(_reproduced(f54, f"true {a}", f"predicted {b}") for a in ("Young", "Old") for b in ("Young", "Old"))
    assert total == result["counts_used"]["test"]
    t42 = _table(tmp_path, "table-4-2")
    males, females = _reproduced(t42, "Gender", "Male Count"), _reproduced(t42, "Gender", "Female Count")
    assert males + females == result["counts"]["train"]
    assert _reproduced(_table(tmp_path, "table-4-4"), "Validation", "Number of examples") == result["counts"]["val"]
    assert _reproduced(_table(tmp_path, "table-5-2"), "Proposed weighted Loss", "Age Accuracy") == pytest.approx(
        from_confusion(sun.experiment_name(exp, "mtl"), "age"), abs=0.006)
    assert _reproduced(_table(tmp_path, "figure-4-7"), "Ours (MTL+ResNet-50)", "Gender Accuracy") == pytest.approx(
        from_confusion(sun.experiment_name(exp, "mtl"), "gender"), abs=0.006)
    assert set(result["figures"]) >= {"fig5_3_confusion_single", "fig5_4_confusion_mtl",
                                      "fig5_1_loss_vs_epoch_early_freeze"}


@pytest.mark.slow
def test_coral_csv_split_on_the_real_sample(utkface_sample, coral_dir, tmp_path):
    exp = dataclasses.replace(sun.smoke(sun.SundriyalExperiment()), method="mtl", epochs=1, max_images=120)
    data = sun.load_data(utkface_sample, exp, coral_csv_dir=coral_dir, work_dir=tmp_path)
    train = pd.read_csv(coral_dir / "utk_train.csv")
    test = pd.read_csv(coral_dir / "utk_test.csv")
    names = set(data["samples"].frame["file"].map(lambda f: f.split("/")[-1]))
    n_train, n_test = int(train["file"].isin(names).sum()), int(test["file"].isin(names).sum())
    counts = data["full_counts"]
    assert counts["test"] == n_test and counts["train"] + counts["val"] == n_train
    assert counts["val"] == math.ceil(0.2 * n_train)  # 80:20, as 13,147 -> 10,517 / 2,630
    assert data["info"]["label_age_mismatches"] == 0  # CORAL label = age - 21
    frame = data["split"].frame
    assert frame["age"].between(21, 60).all()
    result = sun.run(utkface_sample, exp, coral_csv_dir=coral_dir, out=tmp_path / "out", verbose=0,
                     log=lambda *a: None)
    assert result["kind"] == "sample" and result["counts"] == counts
    t43 = _table(tmp_path / "out", "table-4-3")
    assert _reproduced(t43, "Test", "Number of examples", "real sample") == n_test
    notes = t43.loc[t43["data"] == "real sample", "notes"]
    assert not notes.str.contains("CORAL-like").any()


# ---------------------------------------------------------------------------------------------- issue 18 item 6


def _movement(initial, final):
    from agegender.models.loss_weighting import weight_movement

    return weight_movement(initial, final)


def test_weight_movement_is_measured_against_the_initial_spread():
    moved = _movement({"gender": 0.2, "race": 0.3, "age": 0.5}, {"gender": 0.21, "race": 0.28, "age": 0.51})
    assert moved["change"] == pytest.approx(0.02) and moved["spread"] == pytest.approx(0.3)
    assert moved["barely_moved"] is True
    far = _movement({"gender": 0.2, "race": 0.3, "age": 0.5}, {"gender": 0.6, "race": 0.2, "age": 0.2})
    assert far["change"] == pytest.approx(0.4) and far["barely_moved"] is False
    equal = _movement({"a": 0.5, "b": 0.5}, {"a": 0.5, "b": 0.5})
    assert equal["spread"] == 0 and equal["barely_moved"] is False
    with pytest.raises(ValueError, match="different tasks"):
        _movement({"a": 1.0}, {"b": 1.0})


def _mtl_result(dataset, tasks, movement=None, seconds=7200.0):
    result = _fake_result("mtl", dataset, tasks)
    result["metrics"]["training"] = {"seconds": seconds, "loss_weight_movement": movement}
    return result


def test_barely_moved_loss_weights_are_flagged_on_every_cell_and_tabled():
    """Every cell of an MTL model whose learned weights moved less than their initial spread says so; the initial
    and final weights per task are a table of their own; a model whose weights moved far carries no flag."""
    exp = sun.SundriyalExperiment()
    tasks = ("gender", "race", "age")
    barely = _movement({"gender": 0.2, "race": 0.3, "age": 0.5}, {"gender": 0.21, "race": 0.28, "age": 0.51})
    cells = sun.model_cells(exp, _mtl_result("utkface", tasks, barely), "base note")
    assert cells and all("LOSS WEIGHTS BARELY MOVED" in c["note"] and "base note" in c["note"] for c in cells)
    weights = {(c["row"], c["column"]): c["value"] for c in cells if c["table"] == "Loss weights (extra)"}
    row = "SE-ResNet-50-128D, utkface, weighted-ef-l0.1"
    assert weights[(row, "race initial w")] == pytest.approx(0.3) and weights[(row, "race final w")] == 0.28
    assert weights[(row, "largest change")] == pytest.approx(0.02)
    assert weights[(row, "initial spread")] == pytest.approx(0.3)
    far = _movement({"gender": 0.2, "race": 0.3, "age": 0.5}, {"gender": 0.6, "race": 0.2, "age": 0.2})
    assert not any("BARELY" in c.get("note", "") for c in sun.model_cells(exp, _mtl_result("utkface", tasks, far), ""))
    average = dataclasses.replace(exp, loss="average")  # no learned weights: no flag, no table
    cells = sun.model_cells(average, _mtl_result("utkface", tasks, None), "")
    assert not any(c["table"] == "Loss weights (extra)" or "BARELY" in c.get("note", "") for c in cells)


def test_figures_4_7_4_8_and_section_3_6_2_come_from_the_proposed_network():
    from results.catalogue import load_published

    pub = load_published("sundriyal")
    published = set(zip(pub["table"], pub["row"], pub["column"]))
    celeba = dataclasses.replace(sun.SundriyalExperiment(), dataset="celeba")
    cells = {(c["table"], c["row"], c["column"]): c for c in
             sun.model_cells(celeba, _mtl_result("celeba", ("gender", "age"), seconds=5400.0), "")}
    for key in (("Figure 4.7", "Ours (MTL+SEResnet)", "Gender Accuracy"),
                ("Figure 4.8", "Ours (MTL+SEResnet)", "Age Accuracy"),
                ("Section 3.6.2", "CelebA", "convergence time min"),
                ("Section 3.6.2", "CelebA", "convergence time max")):
        assert key in published and key in cells, key
    assert cells[("Figure 4.7", "Ours (MTL+SEResnet)", "Gender Accuracy")]["value"] == pytest.approx(90.0)
    assert cells[("Section 3.6.2", "CelebA", "convergence time max")]["value"] == pytest.approx(1.5)  # 5,400 s
    resnet = sun.model_cells(dataclasses.replace(celeba, backbone="resnet50"),
                             _mtl_result("celeba", ("gender", "age")), "")
    assert ("Figure 4.7", "Ours (MTL+ResNet-50)") in {(c["table"], c["row"]) for c in resnet}
    ablation = sun.model_cells(dataclasses.replace(celeba, loss="average"), _mtl_result("celeba", ("gender", "age")),
                               "")
    assert not any(c["table"] in ("Figure 4.7", "Section 3.6.2") for c in ablation)
    # Section 4.4.5 (CORAL-CNN's published MAE minus ours) is never computed: a published figure enters nothing
    utk = sun.model_cells(sun.SundriyalExperiment(), _mtl_result("utkface", ("gender", "race", "age")), "")
    assert not any(c["table"] == "Section 4.4.5" for c in utk)


def test_section_4_1_is_read_from_the_data(tmp_path):
    from agegender.data.samples import Samples

    frame = pd.DataFrame({"path": ["a", "b", "c"], "file": ["a", "b", "c"], "age": [3.0, 90.0, 41.0]})
    utk = sun.extra.section41_cells(sun.SundriyalExperiment(), Samples("utkface", "x", frame, 3, [], []),
                                                  None, "")
    assert {(c["row"], c["column"]): c["value"] for c in utk} == {("UTKFace", "images"): 3, ("UTKFace", "max age"): 90}
    (tmp_path / "list_attr_celeba.txt").write_text("2\nA B C Male Young\n1.jpg 1 1 1 1 -1\n2.jpg 1 1 1 -1 1\n")
    celeba = dataclasses.replace(sun.SundriyalExperiment(), dataset="celeba")
    cells = sun.extra.section41_cells(celeba, Samples("celeba", str(tmp_path), frame, 2, [], []), tmp_path, "")
    assert {(c["row"], c["column"]): c["value"] for c in cells} == {("CelebA", "images"): 2,
                                                                    ("CelebA", "attributes"): 5}


def test_make_reproduce_mtl_runs_both_backbones_and_fills_their_tables(tmp_path):
    """Issue 18 item 6: ``make reproduce-mtl`` (run with a stand-in Python that logs its arguments) runs
    SE-ResNet-50-128D *and* ResNet-50; the experiments of those commands fill every cell of Tables 4.9/4.10,
    4.14/4.15, 5.1-5.5, Sections 5.2/5.3, Figures 5.3/5.4 and the "Ours" cells of Table 4.16 and Figures 4.7/4.8."""
    import shlex
    import shutil
    import subprocess
    from pathlib import Path

    from results.catalogue import load_published

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    from tests.helpers import echo_python

    stub, log = echo_python(tmp_path)
    subprocess.run(["make", "-s", "-o", "install", "reproduce-mtl", f"PY={stub}", "DATA_DIR=/d", "CELEBA_DIR=/c"],
                   cwd=Path(sun.__file__).resolve().parents[2], check=True, capture_output=True, timeout=60)
    cells = set()
    backbones = set()
    for line in log.read_text().splitlines():
        argv = shlex.split(line)
        assert argv[:2] == ["-m", "reproductions.mtl_weighted_loss"]
        exp = sun.experiment_from_args(sun._parser().parse_args(argv[2:]))
        backbones.add((exp.dataset, exp.backbone))
        tasks = tuple(sun.tasks_of(exp.dataset))
        for method in sun.methods_of(exp):
            runs = [(tasks, "mtl")] if method == "mtl" else [((t,), method) for t in tasks]
            for run_tasks, name in runs:
                result = _mtl_result(exp.dataset, run_tasks) if name == "mtl" else _fake_result(name, exp.dataset,
                                                                                                 run_tasks)
                cells |= {(c["table"], c["row"], c["column"]) for c in sun.model_cells(exp, result, "")}
    assert backbones == {(d, b) for d in ("utkface", "celeba") for b in ("senet50_128", "resnet50")}
    pub = load_published("sundriyal")
    published = set(zip(pub["table"], pub["row"], pub["column"]))
    tables = {"Table 4.9", "Table 4.10", "Table 4.14", "Table 4.15", "Table 5.1", "Table 5.2", "Table 5.3",
              "Table 5.4", "Table 5.5", "Section 5.2", "Section 5.3", "Figure 5.3", "Figure 5.4"}
    wanted = {k for k in published if k[0] in tables or (k[0] in ("Table 4.16", "Figure 4.7", "Figure 4.8")
                                                          and k[1].startswith("Ours"))
              or k[0] == "Section 3.6.2" and k[2].startswith("convergence")}
    assert wanted <= cells, sorted(wanted - cells)
