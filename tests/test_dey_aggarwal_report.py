"""results/dey_aggarwal.md: from-scratch runs per backbone beside the paper's pretrained Table 3, from hand-made
records laid out as ``python -m reproductions.utkface_xception`` writes them (a ``--smoke --backbone mobilenet
--weights none`` record was the model: folder, keys, history fields)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

PUBLISHED = "results/published/dey_aggarwal.csv"
SCRATCH = {"precision": "mixed_bfloat16", "weights": None}  # --precision mixed_bfloat16 --weights none
ROWS = {"mobilenet": "MobileNet", "transformer": "Transformer", "xception": "Xception"}


def _published(column, row):
    with open(PUBLISHED, newline="", encoding="utf-8") as handle:
        return next(float(r["value"]) for r in csv.DictReader(handle)
                    if (r["table"], r["row"], r["column"]) == ("Table 3", row, column))


def _record(runs, backbone, seed, *, age_mae, gender, ethnicity, loss=2.0, weights=None, deviations=None,
            kind="real", history=None, seconds=500.0, wall=520.0, train=9000, gender_majority=0.52,
            ethnicity_majority=0.42):
    experiment = backbone + ("-scratch" if weights is None else "")
    run_id = f"20261204T0000{seed:02d}Z-s{seed}"
    folder = runs / "utkface_xception" / experiment / run_id
    folder.mkdir(parents=True)
    history = history or [{"epoch": 1, "loss": 2.5, "val_loss": 2.4, "epoch_seconds": 250.0, "load_1min": 3.0},
                          {"epoch": 2, "loss": 2.0, "val_loss": 2.2, "epoch_seconds": 250.0, "load_1min": 3.0}]
    row = ROWS[backbone] + (" (from scratch)" if weights is None else "")
    record = {
        "status": "complete", "experiment": experiment, "paper": "dey_aggarwal", "reproduction": "utkface_xception",
        "run_id": run_id, "seed": seed, "wall_time_s": wall,
        "deviations": dict(SCRATCH if deviations is None else deviations),
        "config": {"backbone": backbone, "weights": weights, "precision": "mixed_bfloat16",
                   "precision_policy": "mixed_bfloat16", "row": row, "batch_size": 16, "epochs": 10},
        "data": {"kind": kind, "dataset": "utkface", "path": "utkface/full" if kind == "real" else "faces",
                 "counts": {"train": train, "val": 3900, "test": 5600}},
        "device": {"cpu_count": 2, "gpus": []}, "git": {"commit": "abcdef0123"}, "history": history,
        "metrics": {"training": {"seconds": seconds, "epochs": len(history), "best_epoch": 2},
                    "test": {"age_mae": age_mae, "age_mae_years": age_mae * 65, "gender_accuracy": gender,
                             "ethnicity_accuracy": ethnicity, "loss": loss,
                             "gender_report": {"majority_baseline": gender_majority},
                             "ethnicity_report": {"majority_baseline": ethnicity_majority}}},
        "cells": []}
    (folder / "record.json").write_text(json.dumps(record))
    protocol = runs / "utkface_xception" / "protocol" / run_id  # the protocol record beside it is never a backbone
    if not protocol.exists():
        protocol.mkdir(parents=True)
        (protocol / "record.json").write_text(json.dumps({"status": "complete", "experiment": "protocol",
                                                          "config": {"weights": None}, "deviations": SCRATCH}))
    return record


MOBILENET = [(0.130, 0.80, 0.60, 1.60), (0.126, 0.84, 0.64, 1.50), (0.128, 0.82, 0.66, 1.55)]  # age, gender, eth, loss
TRANSFORMER = [(0.140, 0.70, 0.55, 1.90), (0.150, 0.72, 0.50, 2.00)]


@pytest.fixture()
def runs(tmp_path):
    runs = tmp_path / "runs"
    for seed, (age, gender, eth, loss) in enumerate(MOBILENET):
        _record(runs, "mobilenet", seed, age_mae=age, gender=gender, ethnicity=eth, loss=loss)
    for seed, (age, gender, eth, loss) in enumerate(TRANSFORMER):
        _record(runs, "transformer", seed, age_mae=age, gender=gender, ethnicity=eth, loss=loss)
    return runs


def _section(text, heading):
    return text.split(heading, 1)[1].split("\n## ", 1)[0]


def test_no_run_yet_names_each_backbone_and_its_command(tmp_path):
    from results.dey_aggarwal import report

    text = report(tmp_path / "none", PUBLISHED)
    assert "No ImageNet weights exist offline here, so the paper's transfer setting" in text
    for backbone, row in ROWS.items():
        command = ("python -m reproductions.utkface_xception --data-dir ../shared/data/utkface/full "
                   f"--weights none --seed 0 --backbone {backbone}")
        assert f"| {row} | not run yet | 0 | `{command}` |" in text
    assert "| the transformer on MobileNet beats plain MobileNet: gender accuracy | not run yet |" in text
    assert "| Xception gives the best evaluation metrics (Sec. 4.3, 5) | not run yet |" in text


def test_means_stds_and_the_published_figure_beside(runs):
    from results.dey_aggarwal import report

    text = report(runs, PUBLISHED)
    section = _section(text, "## Configuration: precision=mixed_bfloat16; weights=None — full real data "
                             "`utkface/full`")
    for column, (name, index) in {"Gender Accuracy": ("gender accuracy", 1),
                                  "Ethnicity Accuracy": ("ethnicity accuracy", 2)}.items():
        values = np.array([m[index] for m in MOBILENET])
        published = _published(column, "MobileNet")
        mean, std = values.mean(), values.std(ddof=1)
        assert (f"| {name} | MobileNet | 3 | {mean:.3f} ± {std:.3f} | " in section), (name, section)
        line = section.split(f"| {name} | MobileNet |")[1].split("\n")[0]
        assert line.endswith(f"| {published:.2f} | {mean - published:+.3f} | learned |"), line
    ages = np.array([m[0] for m in TRANSFORMER])
    line = section.split("| age MAE (age / 65; years) | Transformer |")[1].split("\n")[0]
    assert line.startswith(f" 2 | {ages.mean():.3f} ± {ages.std(ddof=1):.3f} ({ages.mean() * 65:.2f} ± "
                           f"{(ages * 65).std(ddof=1):.2f} years) | – | ")
    published = _published("Age MAE", "Transformer")
    assert line.endswith(f"| {published:.2f} | {ages.mean() - published:+.3f} | – |"), line  # no split.csv: not judged
    assert "| gender accuracy | MobileNet | 3 | 0.820 ± 0.020 | 0.520 ± 0.000 | 0.94 | -0.120 |" in section


def test_claims_hold_and_do_not_hold(runs, tmp_path):
    from results.dey_aggarwal import report

    text = report(runs, PUBLISHED)
    # MobileNet beats the transformer on every task: the transformer claim does not hold, with the numbers
    gender = np.array([m[1] for m in TRANSFORMER]).mean() - np.array([m[1] for m in MOBILENET]).mean()
    assert ("| the transformer on MobileNet beats plain MobileNet: gender accuracy | does not hold | Transformer "
            f"0.710 ± 0.014 (n=2) vs MobileNet 0.820 ± 0.020 (n=3); difference {gender:+.3f}; the paper (pretrained) "
            "prints Transformer 0.53 vs MobileNet 0.94 |") in text
    assert "| the transformer on MobileNet beats plain MobileNet: age MAE | does not hold |" in text
    assert "| Xception gives the best evaluation metrics (Sec. 4.3, 5) | not run yet | no run of Xception" in text

    better = tmp_path / "better"  # a transformer better on every task: holds; Xception present and worst
    for seed in (0, 1):
        _record(better, "mobilenet", seed, age_mae=0.13 + seed / 100, gender=0.80, ethnicity=0.60, loss=1.5)
        _record(better, "transformer", seed, age_mae=0.11 + seed / 100, gender=0.85, ethnicity=0.70, loss=1.2)
        _record(better, "xception", seed, age_mae=0.15, gender=0.75, ethnicity=0.55, loss=1.8)
    text = report(better, PUBLISHED)
    for task in ("age MAE", "gender accuracy", "ethnicity accuracy"):
        assert f"| the transformer on MobileNet beats plain MobileNet: {task} | holds |" in text
    spread = 2 * np.std([0.13, 0.14], ddof=1)  # 0.014 < 0.020: a difference beyond 2 std, stated plainly
    assert spread < 0.02
    assert ("| the transformer on MobileNet beats plain MobileNet: age MAE | holds | Transformer 0.115 ± 0.007 (n=2) "
            "vs MobileNet 0.135 ± 0.007 (n=2); difference -0.020; the paper (pretrained) prints Transformer 0.46 vs "
            "MobileNet 0.11 |") in text
    assert "| Xception gives the best evaluation metrics (Sec. 4.3, 5) | does not hold | age MAE: best Transformer" \
        in text
    assert "| MobileNet's total test loss is below Xception's (Sec. 4.3) | holds | MobileNet 1.500 ± 0.000 (n=2) vs " \
           "Xception 1.800 ± 0.000 (n=2); difference -0.300 |" in text

    best = tmp_path / "xception_best"  # Xception best on every task and lowest in loss
    _record(best, "mobilenet", 0, age_mae=0.13, gender=0.80, ethnicity=0.60, loss=1.5)
    _record(best, "xception", 0, age_mae=0.12, gender=0.85, ethnicity=0.65, loss=1.4)
    text = report(best, PUBLISHED)
    assert ("| Xception gives the best evaluation metrics (Sec. 4.3, 5) | holds | age MAE: best Xception (Xception "
            "0.120, MobileNet 0.130); gender accuracy: best Xception (") in text
    assert "| MobileNet's total test loss is below Xception's (Sec. 4.3) | does not hold | MobileNet 1.500 (n=1) vs " \
           "Xception 1.400 (n=1); difference +0.100 |" in text
    assert "| the transformer on MobileNet beats plain MobileNet: age MAE | not run yet | no run of Transformer in " \
           "this configuration;" in text


def test_a_difference_within_two_std_is_said_so(tmp_path):
    from results.dey_aggarwal import report

    runs = tmp_path / "runs"
    for seed, gender in enumerate((0.70, 0.90)):
        _record(runs, "mobilenet", seed, age_mae=0.13, gender=gender, ethnicity=0.6)
        _record(runs, "transformer", seed, age_mae=0.13, gender=gender + 0.02, ethnicity=0.6)
    text = report(runs, PUBLISHED)
    spread = 2 * np.std([0.72, 0.92], ddof=1)
    assert (f"| the transformer on MobileNet beats plain MobileNet: gender accuracy | holds | Transformer 0.820 ± "
            f"0.141 (n=2) vs MobileNet 0.800 ± 0.141 (n=2); difference +0.020, within 2 std of the runs "
            f"({spread:.3f});") in text


def test_pretrained_and_other_configurations_never_average_with_from_scratch(runs):
    from results.dey_aggarwal import report

    _record(runs, "mobilenet", 7, age_mae=0.11, gender=0.99, ethnicity=0.99, weights="imagenet",
            deviations={"precision": "mixed_bfloat16"})
    _record(runs, "mobilenet", 8, age_mae=0.5, gender=0.10, ethnicity=0.10,
            deviations={"epochs": 1, "input_size": None, "max_images": 160, "smoke": True, "weights": None},
            kind="generated")
    text = report(runs, PUBLISHED)
    main = _section(text, "## Configuration: precision=mixed_bfloat16; weights=None — full real data")
    assert "| gender accuracy | MobileNet | 3 | 0.820 ± 0.020 |" in main  # neither the pretrained nor the smoke run
    smoke = _section(text, "## Configuration: epochs=1; input_size=None; max_images=160; smoke=True; weights=None — "
                           "generated faces `faces`")
    assert "| gender accuracy | MobileNet | 1 | 0.100 |" in smoke
    assert "1 pretrained run(s) found (MobileNet 20261204T000007Z-s7)" in text
    assert "| MobileNet | 3 (seeds 0, 1, 2) | 1 |" in text  # the smoke run counts among the other from-scratch runs


def test_run_facts_from_the_history(tmp_path):
    from results.dey_aggarwal import report

    runs = tmp_path / "runs"
    history = [{"epoch": 1, "val_loss": 2.0, "epoch_seconds": 100.0, "load_1min": 2.5},
               {"epoch": 2, "val_loss": 1.5, "epoch_seconds": 120.0, "load_1min": 3.5},
               {"epoch": 3, "val_loss": float("nan"), "epoch_seconds": 110.0, "load_1min": 4.0},
               {"epoch": 4, "val_loss": 1.7, "epoch_seconds": 130.0, "load_1min": 2.0}]
    _record(runs, "mobilenet", 0, age_mae=0.13, gender=0.8, ethnicity=0.6, history=history, seconds=470.0,
            wall=512.0, train=9100)
    text = report(runs, PUBLISHED)
    per_epoch = np.mean([h["epoch_seconds"] for h in history])
    load = np.mean([h["load_1min"] for h in history])
    assert (f"| MobileNet | 20261204T000000Z-s0 | 0 | 4 | 2 | 470 | 512 | {per_epoch:.1f} | {9100 / per_epoch:.1f} | "
            f"{load:.2f} |") in text
    old = tmp_path / "old"  # an older record without epoch_seconds / load_1min: images/s from the training time
    _record(old, "mobilenet", 0, age_mae=0.13, gender=0.8, ethnicity=0.6, seconds=400.0, train=9000,
            history=[{"epoch": 1, "val_loss": 2.0}, {"epoch": 2, "val_loss": 2.5}])
    assert f"| MobileNet | 20261204T000000Z-s0 | 0 | 2 | 1 | 400 | 520 | – | {9000 * 2 / 400:.1f} | – |" in report(
        old, PUBLISHED)


def test_python_m_results_writes_the_page(tmp_path, runs):
    from results.__main__ import main

    assert main(["--runs", str(runs), "--out", str(tmp_path / "t"), "--readme", str(tmp_path / "R.md")]) == 0
    page = (tmp_path / "dey_aggarwal.md").read_text()
    assert page.startswith("# Dey & Aggarwal reproduced from scratch") and "| gender accuracy | MobileNet | 3 |" in page
    assert (tmp_path / "speziali.md").exists()


@pytest.mark.slow
def test_a_real_smoke_record_is_read(tmp_path):
    """The record the reproduction really writes (--smoke, mobilenet, weights none on generated faces) gives a
    section of its own with the record's own test metrics."""
    from agegender.data.synth import synthesize
    from reproductions.utkface_xception import main as reproduce
    from results.dey_aggarwal import report

    synthesize("utkface", tmp_path / "faces", 200, seed=0, size=64)
    assert reproduce(["--data-dir", str(tmp_path / "faces"), "--smoke", "--backbone", "mobilenet", "--weights", "none",
                      "--out", str(tmp_path / "out")]) == 0
    record = json.loads(next((tmp_path / "out" / "runs").glob("utkface_xception/mobilenet-scratch/*/record.json"))
                        .read_text())
    text = report(tmp_path / "out" / "runs", PUBLISHED)
    test = record["metrics"]["test"]
    assert ("## Configuration: epochs=1; input_size=None; max_images=160; smoke=True; weights=None — generated "
            "faces") in text
    assert f"| gender accuracy | MobileNet | 1 | {test['gender_accuracy']:.3f} | " \
           f"{test['gender_report']['majority_baseline']:.3f} | 0.94 |" in text
    assert (f"| age MAE (age / 65; years) | MobileNet | 1 | {test['age_mae']:.3f} ({test['age_mae_years']:.2f} "
            "years) |") in text


def _bench(folder, backbone, rows, busy=False):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"train_dey_{backbone}.json").write_text(json.dumps(
        {"benchmark": "train", "model": f"dey_{backbone}", "busy": busy, "rows": rows}))


def test_what_a_run_takes_is_scaled_by_the_measured_runs(runs, tmp_path):
    """Issue 22 item 2: the benchmark's images/s per mode, the paper's 10 epochs at that rate, scaled by the real
    runs' measured s/epoch over their own backbone's benchmarked steps; the fastest idle mode decides for Xception."""
    from results.dey_aggarwal import report

    bench = tmp_path / "bench"
    _bench(bench, "mobilenet", [{"mode": "mixed_bfloat16", "img_s": 50.0, "pipeline_img_s": 45.0, "busy": False}])
    _bench(bench, "xception", [{"mode": "float32", "img_s": 8.0, "pipeline_img_s": 7.5, "busy": False},
                               {"mode": "mixed_bfloat16", "img_s": 16.0, "pipeline_img_s": 15.0, "busy": False},
                               {"mode": "mixed_bfloat16+xla", "img_s": 40.0, "pipeline_img_s": 30.0, "busy": True}])
    text = report(runs, PUBLISHED, bench)
    section = _section(text, "## What a from-scratch run takes on this machine")
    ratio = 250.0 / (9000 / 45.0)  # the fixture's runs: 250 s per epoch, 9,000 training faces
    steps = 10 * 9000 / 7.5 / 3600
    assert f"| Xception | float32 | 7.5 | no | {steps:.2f} | {steps * ratio:.2f} |" in section
    assert f"| Xception | mixed_bfloat16+xla | 30.0 | yes |" in section
    assert "| Transformer | not measured |" in section
    assert f"mean ratio of measured seconds per epoch to benchmarked training steps over the real runs (MobileNet " \
           f"{ratio:.2f})" in section
    bf16 = 10 * 9000 / 15.0 / 3600 * ratio  # 2.08 h: the busy XLA row, faster on paper, is not chosen
    assert f"the fastest measured mode is mixed_bfloat16, about {bf16:.1f} h" in section and "so it runs here" in section
    assert "precision pilot" in section

    _bench(bench, "xception", [{"mode": "float32", "img_s": 8.0, "pipeline_img_s": 7.5, "busy": False}])
    section = _section(report(runs, PUBLISHED, bench), "## What a from-scratch run takes on this machine")
    assert f"about {steps * ratio:.1f} h for the paper's 10 epochs: over the three hours" in section
    assert "precision pilot" not in section
    assert "No Dey & Aggarwal training benchmark yet" in report(runs, PUBLISHED, tmp_path / "none")


def test_the_age_mae_of_a_constant_guess_comes_from_the_run_split(runs):
    """Beside the age MAE: always answering the training split's mean age, from the run's split.csv (the age
    task's analogue of the majority share); a run without split.csv shows none."""
    from results.dey_aggarwal import report

    folder = next((runs / "utkface_xception" / "mobilenet-scratch").glob("*-s0"))
    rows = ["file,split,age,gender,race", "a.jpg,train,20,0,0", "b.jpg,train,40,1,1", "c.jpg,val,99,0,0",
            "d.jpg,test,10,0,0", "e.jpg,test,50,1,2"]
    (folder / "split.csv").write_text("\n".join(rows) + "\n")
    guess = (abs(10 - 30) + abs(50 - 30)) / 2  # train mean 30; the validation row plays no part
    text = report(runs, PUBLISHED)
    assert f"| {guess / 65:.3f} ({guess:.2f} years; the training mean age) |" in text  # one of 3 MobileNet runs
    transformer = [line for line in text.splitlines() if line.startswith("| age MAE") and "Transformer" in line]
    assert transformer and " | – | " in transformer[0]


def test_a_task_no_better_than_a_constant_guess_is_flagged(tmp_path):
    """Issue 22 item 5: a head that answers one class for every face (its confusion matrix has one non-empty
    column), an accuracy within 0.02 of the majority share, or an age MAE not below the training mean age's is
    flagged in the test table; with several runs, how many."""
    from results.dey_aggarwal import report

    runs = tmp_path / "runs"
    spread = [[40, 10], [12, 38]]
    one_class = [[50, 0, 0], [30, 0, 0], [20, 0, 0]]
    _record(runs, "mobilenet", 0, age_mae=0.10, gender=0.78, ethnicity=0.60)
    _record(runs, "mobilenet", 1, age_mae=0.10, gender=0.78, ethnicity=0.60)
    _record(runs, "transformer", 0, age_mae=0.20, gender=0.53, ethnicity=0.50)
    for backbone, seed, gender, ethnicity in (("mobilenet", 0, spread, [[30, 10, 10], [5, 20, 5], [5, 5, 10]]),
                                              ("mobilenet", 1, [[50, 0], [50, 0]], [[30, 10, 10], [5, 20, 5], [5, 5, 10]]),
                                              ("transformer", 0, spread, one_class)):
        path = next((runs / "utkface_xception" / f"{backbone}-scratch").glob(f"*-s{seed}")) / "record.json"
        record = json.loads(path.read_text())
        test = record["metrics"]["test"]
        test["gender_report"]["confusion_matrix"], test["ethnicity_report"]["confusion_matrix"] = gender, ethnicity
        path.write_text(json.dumps(record))
        rows = ["file,split,age,gender,race", "a.jpg,train,20,0,0", "b.jpg,train,40,1,1", "d.jpg,test,10,0,0",
                "e.jpg,test,50,1,2"]  # the training mean age 30 misses every test face by 20 years: MAE 20 / 65
        (path.parent / "split.csv").write_text("\n".join(rows) + "\n")
    cells = {tuple(c.strip() for c in line.split("|")[1:3]): line.split("|")[-2].strip()
             for line in report(runs, PUBLISHED).splitlines() if line.startswith(("| age MAE", "| gender", "| eth"))}
    assert cells[("age MAE (age / 65; years)", "MobileNet")] == "learned"  # 0.10 < 20 / 65 = 0.308
    assert cells[("age MAE (age / 65; years)", "Transformer")] == "learned"  # 0.20 < 0.308
    assert cells[("gender accuracy", "MobileNet")] == "**1 of 2 runs**: one gender predicted for every test face"
    assert cells[("ethnicity accuracy", "MobileNet")] == "learned"
    assert cells[("gender accuracy", "Transformer")] == "**gender accuracy 0.530 vs majority share 0.520**"  # < 0.52 + 0.02
    assert cells[("ethnicity accuracy", "Transformer")] == "**one ethnicity predicted for every test face**"

    path = next((runs / "utkface_xception" / "transformer-scratch").glob("*-s0")) / "record.json"
    record = json.loads(path.read_text())
    record["metrics"]["test"]["age_mae"] = 21 / 65  # worse than the mean age's 20 years
    path.write_text(json.dumps(record))
    text = report(runs, PUBLISHED)
    assert [line for line in text.splitlines() if line.startswith("| age MAE") and "Transformer" in line][0] \
        .endswith("| **no better than the mean age** |")


# every committed full-data run and what it is found to have learned; a new run needs its line here
COMMITTED = {("transformer", 0): {"ethnicity", "age"}, ("mobilenet", 0): set(), ("mobilenet", 1): {"age"},
             ("mobilenet", 2): set()}


def _committed_runs():
    folders = sorted(Path("results/runs/utkface_xception").glob("*-scratch/*-s*"))
    return [pytest.param(f, id=f"{f.parent.name}/{f.name}") for f in folders] or \
        [pytest.param(None, marks=pytest.mark.skip("no committed from-scratch run"))]


@pytest.mark.parametrize("folder", _committed_runs())
def test_the_committed_runs_are_judged_from_their_own_predictions(folder):
    """Issue 22 item 5 on the real runs (full UTKFace, committed records): the transformer that did not train
    answers one ethnicity for every test face and misses ages by more than the training mean age does, and is
    flagged for both; MobileNet seeds 0 and 2 are flagged for nothing; MobileNet seed 1 for age (its kept epoch, see
    the next test). The expectations are computed here from the record's confusion matrices and the run's split.csv,
    not taken from the report."""
    import pandas as pd

    from results.dey_aggarwal import at_chance

    record = json.loads((folder / "record.json").read_text())
    key = (record["config"]["backbone"], record["seed"])
    assert key in COMMITTED, f"{folder}: a newly committed run; write what it learned into COMMITTED"
    stalled = COMMITTED[key]
    test = record["metrics"]["test"]
    split = pd.read_csv(folder / "split.csv")
    ages = split[split.split == "test"].age
    guess = float(np.mean(np.abs(ages - split[split.split == "train"].age.mean()))) / 65
    independent = set()
    for task in ("ethnicity", "gender"):
        matrix = np.asarray(test[f"{task}_report"]["confusion_matrix"])
        majority = matrix.sum(axis=1).max() / matrix.sum()
        if (matrix.sum(axis=0) > 0).sum() == 1 or test[f"{task}_accuracy"] <= majority + 0.02:
            independent.add(task)
    if test["age_mae"] >= guess:
        independent.add("age")
    assert independent == stalled, (independent, test["age_mae"], guess)
    flagged = {task for task in ("age", "ethnicity", "gender") if at_chance(task, test, guess)}
    assert flagged == stalled


def test_mobilenet_seed_1_kept_the_epoch_of_its_worst_late_age():
    """Why MobileNet seed 1 did not learn age although seed 0 did (issue 22 item 5): the paper's rule keeps the
    epoch of lowest *total* validation loss, of which the age MSE is under 5 % at every epoch; seed 1's lowest
    total falls on epoch 9, where its validation age MAE (0.167) is worse than answering the training mean age,
    though at epoch 5 it was 0.146. Computed from the run's history.csv and split.csv; the report's table says the
    same (:func:`results.dey_aggarwal.kept_age`)."""
    import pandas as pd

    from results.dey_aggarwal import kept_age, load_runs

    folders = sorted(Path("results/runs/utkface_xception/mobilenet-scratch").glob("*-s1"))
    if not folders:
        pytest.skip("no committed MobileNet seed-1 run")
    history, split = pd.read_csv(folders[0] / "history.csv"), pd.read_csv(folders[0] / "split.csv")
    val = split[split.split == "val"].age
    guess = float(np.mean(np.abs(val - split[split.split == "train"].age.mean()))) / 65
    kept = history.loc[history.val_loss.idxmin()]
    assert (history.val_age_loss / history.val_loss).max() < 0.05
    assert kept.epoch == 9 and kept.val_age_mae > guess > history.val_age_mae.min() + 0.015
    record = next(r for r in load_runs("results/runs")[0] if r["_run"] == folders[0].name)
    age = kept_age(record)
    assert (age["kept_epoch"], age["lowest_epoch"]) == (9, int(history.loc[history.val_age_mae.idxmin()].epoch))
    assert age["kept"] == pytest.approx(kept.val_age_mae) and age["guess"] == pytest.approx(guess)


def test_mobilenet_seed_2_kept_an_epoch_poor_for_gender():
    """The checkpoint rule trades heads (issue 22 item 5): MobileNet seed 2's lowest total validation loss is epoch
    9, its best ethnicity epoch, where its validation gender accuracy had dropped to 0.840 from 0.900 at epoch 5;
    its test gender accuracy (0.836) is the lowest of the three seeds. Computed from history.csv; the report's table
    says the same (:func:`results.dey_aggarwal.kept_task`)."""
    import pandas as pd

    from results.dey_aggarwal import kept_task, load_runs

    folders = sorted(Path("results/runs/utkface_xception/mobilenet-scratch").glob("*-s2"))
    if not folders:
        pytest.skip("no committed MobileNet seed-2 run")
    history = pd.read_csv(folders[0] / "history.csv")
    kept = history.loc[history.val_loss.idxmin()]
    best_gender = history.loc[history.val_gender_accuracy.idxmax()]
    assert kept.epoch == 9 == history.loc[history.val_ethnicity_accuracy.idxmax()].epoch
    assert best_gender.val_gender_accuracy - kept.val_gender_accuracy > 0.05
    record = next(r for r in load_runs("results/runs")[0] if r["_run"] == folders[0].name)
    gender = kept_task(record, "val_gender_accuracy")
    assert (gender["kept_epoch"], gender["best_epoch"]) == (9, int(best_gender.epoch))
    assert gender["kept"] == pytest.approx(kept.val_gender_accuracy)
    assert gender["best"] == pytest.approx(best_gender.val_gender_accuracy)
    others = [json.loads(p.read_text())["metrics"]["test"]["gender_accuracy"]
              for p in Path("results/runs/utkface_xception/mobilenet-scratch").glob("*-s[01]/record.json")]
    assert json.loads((folders[0] / "record.json").read_text())["metrics"]["test"]["gender_accuracy"] < min(others)


def test_kept_age_reads_the_checkpoint_rule_from_the_history(tmp_path):
    """The age task at the kept epoch: lowest total validation loss picks epoch 2, whose age MAE 0.30 is above the
    validation mean-age guess (train mean 30: |10 - 30| and |40 - 30| average 15 years, 0.231), while epoch 1 had
    0.10; the age loss is 0.02 / 2.0 and 0.09 / 1.8 of the totals."""
    from results.dey_aggarwal import kept_age, load_runs, report

    runs = tmp_path / "runs"
    history = [{"epoch": 1, "loss": 2.5, "val_loss": 2.0, "val_age_mae": 0.10, "val_age_loss": 0.02},
               {"epoch": 2, "loss": 2.0, "val_loss": 1.8, "val_age_mae": 0.30, "val_age_loss": 0.09},
               {"epoch": 3, "loss": 1.9, "val_loss": 1.9, "val_age_mae": 0.20, "val_age_loss": 0.05}]
    _record(runs, "mobilenet", 0, age_mae=0.1, gender=0.8, ethnicity=0.6, history=history)
    folder = next((runs / "utkface_xception" / "mobilenet-scratch").glob("*-s0"))
    (folder / "split.csv").write_text("file,split,age\na,train,20\nb,train,40\nc,val,10\nd,val,40\ne,test,5\n")
    line = next(line for line in report(runs, PUBLISHED).splitlines() if line.startswith("| MobileNet | 2026") and
                "(epoch" in line)
    assert line == f"| MobileNet | {folder.name} | 2 | **0.300** | 0.100 (epoch 1) | {15 / 65:.3f} | 1–5 % |"
    record = load_runs(runs)[0][0]
    age = kept_age(record)
    assert age["share"] == pytest.approx((0.01, 0.05))
    record["config"]["monitor"] = "val_age_mae"  # --set monitor=val_age_mae: the checkpoint follows age alone
    assert kept_age(record)["kept_epoch"] == 1 and kept_age(record)["kept"] == 0.10


def test_kept_task_finds_what_the_total_loss_cost_each_head(tmp_path):
    """Lowest total validation loss is epoch 2: gender 0.70 there against 0.90 at epoch 1 (lost -0.200),
    ethnicity 0.60 there, its best; an accuracy is best at its highest, an MAE at its lowest."""
    from results.dey_aggarwal import kept_task, load_runs, report

    runs = tmp_path / "runs"
    history = [{"epoch": 1, "val_loss": 2.0, "val_gender_accuracy": 0.90, "val_ethnicity_accuracy": 0.50,
                "val_age_mae": 0.2},
               {"epoch": 2, "val_loss": 1.8, "val_gender_accuracy": 0.70, "val_ethnicity_accuracy": 0.60,
                "val_age_mae": 0.3},
               {"epoch": 3, "val_loss": 1.9, "val_gender_accuracy": 0.80, "val_ethnicity_accuracy": 0.55,
                "val_age_mae": 0.1}]
    _record(runs, "mobilenet", 0, age_mae=0.1, gender=0.8, ethnicity=0.6, history=history)
    record = load_runs(runs)[0][0]
    assert kept_task(record, "val_gender_accuracy") == {"kept_epoch": 2, "kept": 0.70, "best": 0.90,
                                                        "best_epoch": 1}
    assert kept_task(record, "val_age_mae")["best_epoch"] == 3
    assert kept_task(record, "val_missing") is None
    folder = next((runs / "utkface_xception" / "mobilenet-scratch").glob("*-s0"))
    assert f"| MobileNet | {folder.name} | 2 | 0.700 | 0.900 (epoch 1) | -0.200 | 0.600 | 0.600 (epoch 2) | +0.000 |" \
        in report(runs, PUBLISHED).splitlines()
