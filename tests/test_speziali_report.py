"""results/speziali.md: throughput, loss readings and claims computed from hand-made records."""

from __future__ import annotations

import json

import pytest


ONE_EPOCH = [{"epoch": 1, "loss": 0.9, "val_loss": 1.0, "gender_loss": 0.3, "age_loss": 60.0, "val_gender_loss": 0.3,
              "val_age_loss": 70.0}]


def _record(tmp, network, seed, *, history, test, seconds=100.0, epochs=None, deviations=None, train=1000):
    folder = tmp / "runs" / "utkface_dual_cnn" / network / f"run-s{seed}"
    folder.mkdir(parents=True)
    record = {"status": "complete", "experiment": network, "seed": seed, "deviations": deviations or {},
              "config": {"lambda_age": 0.01, "scale_single_age_loss": True, "precision_policy": "float32"},
              "data": {"kind": "real", "path": "utkface/full", "counts": {"train": train, "val": 400, "test": 600}},
              "device": {"cpu_count": 2, "gpus": []}, "git": {"commit": "abcdef0"},
              "history": history, "metrics": {"training": {"seconds": seconds, "epochs": epochs or len(history)},
                                              "test": test}}
    (folder / "record.json").write_text(json.dumps(record))


@pytest.fixture()
def runs(tmp_path):
    age_hist = [{"epoch": 1, "loss": 0.9, "val_loss": 1.5}, {"epoch": 2, "loss": 0.7, "val_loss": 1.3}]
    gender_hist = [{"epoch": 1, "loss": 0.25, "val_loss": 0.3}]
    dual_hist = [{"epoch": 1, "loss": 1.1, "val_loss": 1.4, "gender_loss": 0.3, "age_loss": 80.0,
                  "val_gender_loss": 0.35, "val_age_loss": 105.0}]
    for seed, (acc_g, acc_d, r2_a, r2_d) in enumerate([(0.88, 0.87, 0.60, 0.55), (0.86, 0.85, 0.62, 0.57)]):
        _record(tmp_path, "age", seed, history=age_hist, test={"age_r2": r2_a, "age_mae_years": 6.0}, seconds=200.0)
        _record(tmp_path, "gender", seed, history=gender_hist, test={"gender_accuracy": acc_g}, seconds=100.0)
        _record(tmp_path, "dual", seed, history=dual_hist, test={"gender_accuracy": acc_d, "age_r2": r2_d},
                seconds=250.0)
    return tmp_path / "runs"


def test_readings_follow_their_definitions():
    from results.speziali import readings

    age = {"experiment": "age", "config": {"lambda_age": 0.01}, "history": [{"loss": 0.7, "val_loss": 1.3}]}
    dual = {"experiment": "dual", "config": {"lambda_age": 0.01},
            "history": [{"loss": 1.1, "gender_loss": 0.3, "age_loss": 80.0, "val_loss": 1.4, "val_gender_loss": 0.35,
                         "val_age_loss": 105.0}]}
    r = readings(age)["training"]
    assert r["R1"] == 0.7 and r["R2"] == pytest.approx(70.0 / 64) and r["R2λ"] == pytest.approx(0.7 / 64)
    d = readings(dual)["validation"]
    assert d["R1"] == 1.4 and d["R2"] == pytest.approx((0.35 + 105.0) / 64) and d["R2λ"] == pytest.approx(1.4 / 64)


def test_report_throughput_means_and_claims(runs):
    from results.speziali import report

    text = report(runs, "results/published/speziali.csv")
    assert "## Configuration: paper\n" in text
    # images/s = 1000 training faces x 2 epochs / 200 s = 10.0; the paper's = 11,617 x 8 / 840.61 = 110.6
    assert "| single-task age | 0, 1 | 2.0 ± 0.0 (8) | 200 ± 0 (840.61) | 10.0 ± 0.0 (111) |" in text
    assert "| dual-task | 0, 1 | 1.0 ± 0.0 (9) | 250 ± 0 (640.34) | 4.0 ± 0.0 (163) |" in text
    assert "0.870 ± 0.014" in text  # gender accuracy of the single-task net over the two seeds
    # dual 250 s < 200 + 100 s; accuracy within 0.02; R2 lower for the dual net
    assert "| gender accuracy similar in both architectures | holds |" in text
    assert "| age R² better for the dual-task network | does not hold | dual 0.560 vs single 0.610 |" in text
    assert "| the dual-task network takes less total time than the two single-task ones | holds |" in text


def test_deviating_runs_get_their_own_section(runs, tmp_path):
    from results.speziali import report

    _record(tmp_path, "dual", 5, history=[{"epoch": 1, "loss": 1.0, "val_loss": 1.2, "gender_loss": 0.3,
                                           "age_loss": 70.0, "val_gender_loss": 0.3, "val_age_loss": 90.0}],
            test={"gender_accuracy": 0.8, "age_r2": 0.5}, deviations={"lr_dual": 0.001})
    text = report(runs, "results/published/speziali.csv")
    assert "## Configuration: lr_dual=0.001" in text
    section = text.split("## Configuration: lr_dual=0.001")[1]
    assert "| dual-task | 5 |" in section and "single-task" not in section.split("###")[0]


def test_networks_at_chance_make_claims_untestable_and_the_trainable_runs_answer_them(tmp_path):
    """The paper's learning rates collapse the gender and dual networks (one class for every face, R² ≈ 0):
    their claims are 'not testable' there; the runs that change only that network's rate answer them."""
    from results.speziali import at_chance, report

    one_class = {"gender_accuracy": 0.52, "gender_majority": 0.52, "gender_confusion": [[52, 0], [48, 0]]}
    hist = [{"epoch": 1, "loss": 0.69, "val_loss": 0.69, "gender_loss": 0.69, "age_loss": 400.0,
             "val_gender_loss": 0.69, "val_age_loss": 410.0}]
    _record(tmp_path, "age", 0, history=hist, test={"age_r2": 0.78, "age_mae_years": 6.9}, seconds=4000.0)
    _record(tmp_path, "gender", 0, history=hist, test=one_class, seconds=1500.0)
    _record(tmp_path, "dual", 0, history=hist, test={**one_class, "age_r2": -0.0001}, seconds=1200.0)
    _record(tmp_path, "dual", 1, history=hist, deviations={"lr_dual": 0.001}, seconds=3000.0,
            test={"gender_accuracy": 0.87, "gender_majority": 0.52, "gender_confusion": [[45, 7], [6, 42]],
                  "age_r2": 0.74})
    _record(tmp_path, "gender", 2, history=hist, deviations={"lr_gender": 0.001}, seconds=2000.0,
            test={"gender_accuracy": 0.88, "gender_majority": 0.52, "gender_confusion": [[46, 6], [6, 42]]})
    assert at_chance("gender", one_class) == ["one gender predicted for every test face"]
    assert at_chance("dual", {"gender_accuracy": 0.53, "gender_majority": 0.52, "age_r2": 0.5}) == \
        ["gender accuracy 0.530 vs majority share 0.520"]
    assert at_chance("age", {"age_r2": 0.78}) == []

    text = report(tmp_path / "runs", "results/published/speziali.csv")
    paper = text.split("## Configuration: paper\n")[1].split("## Configuration:")[0]
    assert "| single-task gender | 0 |" in paper and "**at chance**: one gender predicted for every test face" in paper
    assert "**at chance**: one gender predicted for every test face; age R² -0.000" in paper  # the dual net
    assert "| gender accuracy similar in both architectures | not testable | single-task gender and dual-task at " \
           "chance" in paper
    assert "| age R² better for the dual-task network | not testable | dual-task at chance" in paper
    trainable = text.split("## The claims with networks that train")[1]
    assert "- single-task age: paper (" in trainable and "- dual-task: lr_dual=0.001 (" in trainable
    assert "- single-task gender: lr_gender=0.001 (" in trainable
    # 0.87 - 0.88 = -0.01: within the 0.02 of 'similar'; R² 0.74 < 0.78; 3000 s < 4000 + 2000 s
    assert "| gender accuracy similar in both architectures | holds | dual − single = -0.010" in trainable
    assert "| age R² better for the dual-task network | does not hold | dual 0.740 vs single 0.780; one run on a " \
           "side: seed noise not known yet |" in trainable
    assert "| the dual-task network takes less total time than the two single-task ones | holds | dual 3000 s vs " \
           "singles 6000 s |" in trainable
    # the loss readings are scored on the networks that learned only: here the age network (0.69 both splits)
    import math

    assert "| single-task gender (at chance: not scored) | training | 0.0027 |" in paper
    r1 = (abs(math.log(0.69 / 0.5999)) + abs(math.log(0.69 / 1.3413))) / 2
    r2 = (abs(math.log(0.69 / 0.01 / 64 / 0.5999)) + abs(math.log(0.69 / 0.01 / 64 / 1.3413))) / 2
    assert f"R1 {r1:.2f}, R2 {r2:.2f}," in paper
    assert "single-task gender:" not in paper.split("Best reading per network:")[1].split("\n")[0]


@pytest.mark.parametrize("age_losses, verdict", [
    # lambda x MSE = the printed 0.5999 / 1.3413 (R1); gender CE = 64 x the printed 0.0027 / 0.0041 (R2)
    ((0.5999, 1.3413), "**The closest reading differs by network** (single-task age: R1; single-task gender: R2 = R2λ)"),
    # MSE / 64 = the printed values: lambda x MSE = 0.01 x 64 x printed (R2 for both networks)
    ((0.01 * 64 * 0.5999, 0.01 * 64 * 1.3413), "**R2** is the closest reading for every network that learned"),
])
def test_printed_losses_are_read_network_by_network_across_configurations(tmp_path, age_losses, verdict):
    """Issue 17 item 5: which reading of the printed last losses each learned network supports, gathered over
    the configurations (the gender network learns only at its own deviation), and whether one reading fits all."""
    from results.speziali import report

    learned = {"gender_accuracy": 0.88, "gender_majority": 0.52, "gender_confusion": [[46, 6], [6, 42]]}
    _record(tmp_path, "age", 0, history=[{"epoch": 1, "loss": age_losses[0], "val_loss": age_losses[1]}],
            test={"age_r2": 0.78, "age_mae_years": 6.9})
    _record(tmp_path, "gender", 0, history=[{"epoch": 1, "loss": 0.69, "val_loss": 0.69}],  # at chance: not read
            test={"gender_accuracy": 0.52, "gender_majority": 0.52, "gender_confusion": [[52, 0], [48, 0]]})
    _record(tmp_path, "gender", 1, history=[{"epoch": 1, "loss": 64 * 0.0027, "val_loss": 64 * 0.0041}],
            deviations={"lr_gender": 0.001}, test=learned)
    text = report(tmp_path / "runs", "results/published/speziali.csv")
    section = text.split("## The printed losses across configurations")[1]
    rows = [line for line in section.splitlines() if line.startswith("| single-task")]
    assert len(rows) == 2 and "| paper |" in rows[0] and "| lr_gender=0.001 |" in rows[1]  # the chance run is not read
    assert "| **R2 = R2λ** | R1 4.16, R2 0.00, R2λ 0.00 |" in rows[1]  # log(64) = 4.16
    assert verdict in section
    assert "Not read, having learned in no run yet: dual-task." in section


def test_a_claim_difference_within_two_std_of_the_seeds_is_said_so(tmp_path):
    """Age R² 0.60 / 0.64 (single) vs 0.61 / 0.62 (dual): the dual mean is 0.005 lower, inside 2 std of the
    single network's seeds (2 x 0.0283 = 0.057): the seeds cannot tell which is better, and the verdict says so
    instead of reading the means."""
    from results.speziali import report

    for seed, (single, dual) in enumerate([(0.60, 0.61), (0.64, 0.62)]):
        _record(tmp_path, "age", seed, history=ONE_EPOCH, test={"age_r2": single, "age_mae_years": 6.0})
        _record(tmp_path, "dual", seed, history=ONE_EPOCH, test={"gender_accuracy": 0.85, "age_r2": dual})
    text = report(tmp_path / "runs", "results/published/speziali.csv")
    assert "| age R² better for the dual-task network | within seed noise | dual 0.615 vs single 0.620, within 2 std " \
           "of the runs (0.057) |" in text


def test_gender_similarity_uses_the_spread_of_the_side_with_seeds(tmp_path):
    """Gender accuracy 0.80 (single, one seed) vs 0.80 / 0.86 (dual): the dual side's std is 0.0424, so 'similar'
    means within 2 x 0.0424 = 0.085 (wider than the 0.02 floor), and a +0.030 difference holds. A side with one run
    adds no spread of its own."""
    from results.speziali import report

    _record(tmp_path, "gender", 0, history=ONE_EPOCH, test={"gender_accuracy": 0.80})
    for seed, acc in enumerate([0.80, 0.86]):
        _record(tmp_path, "dual", seed, history=ONE_EPOCH, test={"gender_accuracy": acc, "age_r2": 0.6})
    text = report(tmp_path / "runs", "results/published/speziali.csv")
    assert "| gender accuracy similar in both architectures | holds | dual − single = +0.030 (similar: within " \
           "0.085) |" in text


def test_the_similar_threshold_is_explained_only_where_the_gender_claim_is_made(runs, tmp_path):
    """The report says what 'similar' means (2 points of accuracy, or 2 std of the runs) under a claims table
    that holds the gender claim, and not under one that compares only the age networks."""
    from results.speziali import report

    legend = "similar: the two mean test accuracies differ by at most the larger of 0.02"
    assert legend in report(runs, "results/published/speziali.csv")
    for seed, r2 in enumerate([0.60, 0.64]):
        _record(tmp_path / "age-only", "age", seed, history=ONE_EPOCH, test={"age_r2": r2, "age_mae_years": 6.0})
        _record(tmp_path / "age-only", "dual", seed, history=ONE_EPOCH, test={"gender_accuracy": 0.85, "age_r2": r2})
    age_only = report(tmp_path / "age-only" / "runs", "results/published/speziali.csv")
    assert "| age R² better for the dual-task network |" in age_only and legend not in age_only
