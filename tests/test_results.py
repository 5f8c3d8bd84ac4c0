"""Run records -> tables round trip: values, mean ± std over runs, determinism, bad records skipped."""

import json

import pytest

from agegender.records import RunRecorder, load_records
from results.tables import generate


def _run(out, seed, value, kind="real", experiment="multitask"):
    recorder = RunRecorder("adience_levi", experiment, paper="jorgensen", out=out, seed=seed,
                           config={"lr": 1e-4}, data={"kind": kind, "dataset": "adience"}, run_id=f"fold{seed}")
    recorder.log_epoch(1, {"loss": 1.0, "val_loss": 1.2})
    recorder.log_epoch(2, {"loss": 0.8, "val_loss": 1.1})
    recorder.log_epoch(2, {"loss": 0.7, "val_loss": 1.0})  # a resumed epoch replaces, never duplicates
    recorder.finish({"test": {"gender_accuracy": value / 100}},
                    [{"table": "Table 3", "row": "Multitask Classification", "column": "Gender accuracy",
                      "value": value, "unit": "percent"},
                     {"table": "Extra", "row": "Multitask", "column": "one-off age accuracy", "value": 0.9,
                      "unit": "accuracy", "paper": "jorgensen"}])
    return recorder


def test_record_contents(tmp_path):
    recorder = _run(tmp_path, 0, 84.0)
    record = json.loads(recorder.record_path.read_text())
    assert record["status"] == "complete"
    assert [h["epoch"] for h in record["history"]] == [1, 2] and record["history"][1]["loss"] == 0.7
    assert {"tensorflow", "keras", "python"} <= set(record["versions"])
    assert record["git"]["commit"] and record["wall_time_s"] >= 0 and record["data"]["kind"] == "real"
    assert (recorder.run_dir / "history.csv").read_text().splitlines()[0] == "epoch,loss,val_loss"
    with pytest.raises(ValueError, match="kind"):
        RunRecorder("x", "y", config={}, seed=0, data={"kind": "made up"}, out=tmp_path)


def test_tables_from_records_round_trip(tmp_path):
    runs, tables = tmp_path / "runs", tmp_path / "tables"
    for fold, value in enumerate([84.0, 86.0, 85.0]):
        _run(runs, fold, value)
    _run(runs, 9, 60.0, kind="generated", experiment="smoke")
    summary = generate(runs, tables, tmp_path / "README.md")
    assert summary["records"] == 4 and not summary["skipped"]
    text = (tables / "jorgensen__table-3.md").read_text()
    line = next(l for l in text.splitlines() if "Multitask Classification | Gender accuracy |" in l and "real" in l)
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[2] == "84.0"               # published, from results/published/jorgensen.csv
    assert cells[3] == "85.00 ± 1.00"       # mean ± sample std over the three folds
    # 84.0 is 1 std from the mean of the three folds: differs at the printed precision, within their spread
    assert cells[4] == "1.00" and cells[5] == "differs (within 2 std of the runs)" and cells[6] == "3"
    assert cells[7] == "full real data"
    assert cells[8] == "paper"              # the records carry empty deviations: the paper's configuration
    generated = next(l for l in text.splitlines() if "Multitask Classification | Gender accuracy |" in l
                     and "generated" in l)
    assert "60.00" in generated and "| 1 |" in generated
    assert "| Baseline | Gender accuracy | 86.8 |" in text and "not yet" in text
    extra = (tables / "jorgensen__extra.md").read_text()
    assert "| Multitask | one-off age accuracy | — | 0.9000 ± 0.0000 |" in extra
    index = (tmp_path / "README.md").read_text()
    assert "| jorgensen | Table 3 | full real data |" in index
    assert "| speziali |" in index and "not yet" in index
    csv = (tables / "jorgensen__table-3.csv").read_text()
    assert csv.splitlines()[0] == "row,column,published,reproduced,delta,status,n,data,configuration,notes"
    before = {p.name: p.read_bytes() for p in tables.iterdir()}
    generate(runs, tables, tmp_path / "README.md")
    assert before == {p.name: p.read_bytes() for p in tables.iterdir()}


def test_corrupt_and_unfinished_records_are_skipped(tmp_path):
    runs = tmp_path / "runs"
    _run(runs, 0, 84.0)
    broken = runs / "adience_levi" / "multitask" / "broken"
    broken.mkdir(parents=True)
    (broken / "record.json").write_text('{"status": "compl')
    RunRecorder("adience_levi", "multitask", config={}, seed=1, data={"kind": "real"}, out=runs, run_id="running")
    records, skipped = load_records(runs)
    assert len(records) == 1
    reasons = sorted(s["reason"].split(" (")[0] for s in skipped)
    assert reasons[0] in ("run in progress", "run interrupted") and reasons[1] == "unreadable record"
    summary = generate(runs, tmp_path / "tables", tmp_path / "README.md")
    assert len(summary["skipped"]) == 2
    assert "Records skipped" in (tmp_path / "README.md").read_text()


def test_cli_regenerates(tmp_path, capsys):
    from results.__main__ import main

    _run(tmp_path / "runs", 0, 84.0)
    assert main(["--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "t"), "--readme",
                 str(tmp_path / "R.md")]) == 0
    assert "from 1 run records" in capsys.readouterr().out


def test_stated_claims_read_as_words():
    import pandas as pd

    from results.tables import build_table

    published = pd.DataFrame([{"row": "3 > 5 > 10", "column": "Section 5.1", "value": "stated", "value_num": float("nan"),
                               "unit": "accuracy", "note": ""},
                              {"row": "multi-source lowest", "column": "Section 5.4", "value": "stated",
                               "value_num": float("nan"), "unit": "accuracy", "note": ""}])
    reproduced = pd.DataFrame([{"row": "3 > 5 > 10", "column": "Section 5.1", "unit": "accuracy", "data": "generated",
                                "mean": 0.5, "std": 0.7, "n": 2, "note": ""}])
    table = build_table(published, reproduced).set_index("row")
    assert table.loc["3 > 5 > 10", "reproduced"] == "holds in 50% of runs"
    assert table.loc["multi-source lowest", "reproduced"] == "not run"
    one = build_table(published.iloc[:1], reproduced.assign(mean=1.0, n=1)).iloc[0]
    assert one["reproduced"] == "holds" and one["delta"] == ""


def _smoke_record(out, epochs, value, *, run_id):
    """A Speziali smoke run's record whose deviations come from the real experiment dataclass."""
    import dataclasses

    from agegender.records import deviations_from
    from reproductions.utkface_dual_cnn import SpezialiExperiment, smoke

    exp = dataclasses.replace(smoke(SpezialiExperiment()), epochs=epochs)
    recorder = RunRecorder("utkface_dual_cnn", "dual", paper="speziali", out=out, seed=0, run_id=run_id,
                           config=dataclasses.asdict(exp), data={"kind": "generated", "dataset": "utkface"},
                           deviations=deviations_from(exp, SpezialiExperiment()))
    recorder.finish({}, [{"table": "Num. of epochs", "row": "Multi-task CNN", "column": "Age task", "value": value,
                          "unit": "epochs"}])
    return recorder


def test_runs_differing_only_in_epochs_get_two_lines(tmp_path):
    """Issue 18 item 5: runs with other settings never average into one line; each is labelled."""
    runs = tmp_path / "runs"
    _smoke_record(runs, 1, 1.0, run_id="e1")
    _smoke_record(runs, 2, 2.0, run_id="e2")
    _smoke_record(runs, 2, 2.0, run_id="e2-again")  # same settings: averages with e2
    generate(runs, tmp_path / "tables", tmp_path / "README.md")
    import pandas as pd

    table = pd.read_csv(tmp_path / "tables" / "speziali__num-of-epochs.csv", dtype=str, keep_default_na=False)
    lines = table[(table["row"] == "Multi-task CNN") & (table["column"] == "Age task")]
    assert len(lines) == 2
    by_config = dict(zip(lines["configuration"], zip(lines["reproduced"], lines["n"])))
    one, two = sorted(by_config)
    assert "epochs=1" in one.split("; ") and one.replace("epochs=1", "epochs=2") == two  # labelled, differ in epochs
    assert "input_size=32" in one.split("; ")  # the other smoke deviations are named too
    assert by_config[one] == ("1", "1") and by_config[two] == ("2 ± 0", "2")
    assert (lines["published"] == "9").all() and set(lines["data"]) == {"generated faces"}


def test_paper_configuration_missing_deviations_and_settings(tmp_path):
    """Empty deviations: 'paper'; a record without the key: 'not recorded' (never averaged with the paper's);
    a setting cell: shown, status 'setting', no Δ, never counted as reproduced in the README summary."""
    from agegender import atomic

    runs = tmp_path / "runs"
    paper = RunRecorder("facts", "x", paper="speziali", out=runs, seed=0, run_id="a", config={},
                        data={"kind": "real", "dataset": "utkface"})
    paper.finish({}, [{"table": "Section III-A", "row": "UTKFace", "column": "images", "value": 23_707.0,
                       "unit": "count"},
                      {"table": "Section III-A", "row": "train/test split", "column": "train share",
                       "value": 70.004, "unit": "percent"},
                      {"table": "Section IV-B", "row": "early stopping", "column": "patience", "value": 3.0,
                       "unit": "epochs", "setting": True}])
    old = RunRecorder("facts", "y", paper="speziali", out=runs, seed=0, run_id="b", config={},
                      data={"kind": "real", "dataset": "utkface"})
    old.finish({}, [{"table": "Section III-A", "row": "UTKFace", "column": "images", "value": 100.0, "unit": "count"}])
    record = json.loads(old.record_path.read_text())
    del record["deviations"]  # a record written before records carried deviations
    atomic.write_json(old.record_path, record)
    summary = generate(runs, tmp_path / "tables", tmp_path / "README.md")
    import pandas as pd

    table = pd.read_csv(tmp_path / "tables" / "speziali__section-iii-a.csv", dtype=str, keep_default_na=False)
    images = table[table["column"] == "images"].set_index("configuration")
    assert images.loc["paper", "reproduced"] == "23,707" and images.loc["paper", "status"] == "differs"
    assert images.loc["paper", "delta"] == "-1"
    assert images.loc["not recorded", "reproduced"] == "100" and images.loc["not recorded", "n"] == "1"
    share = table[table["column"] == "train share"].iloc[0]
    assert share["status"] == "exact" and share["reproduced"] == "70.00"  # 70.004 is 70 at the printed precision
    patience = pd.read_csv(tmp_path / "tables" / "speziali__section-iv-b.csv", dtype=str,
                           keep_default_na=False).set_index("column").loc["patience"]
    assert (patience["status"], patience["delta"], patience["data"]) == ("setting", "", "configuration (no data)")
    stats = summary["papers"]["speziali"]
    assert (stats["reproduced"], stats["exact"], stats["differs"], stats["settings"]) == (2, 1, 1, 1)
    assert stats["published"] == stats["reproduced"] + stats["settings"] + stats["training"] + stats["not_here"] \
        + stats["cited"]
    readme = (tmp_path / "README.md").read_text()
    assert readme.splitlines()[6].startswith("| Speziali (speziali) | 61 | 2 | 1 | 1 | 0 | 1 |")


def test_compare_at_the_printed_precision():
    from results.catalogue import compare

    assert compare(7_192_065, "7 192 065") == "exact" and compare(7_192_066, "7 192 065") == "differs"
    assert compare(23_707, "23,708") == "differs" and compare(16_258, "16228") == "differs"
    assert compare(0.384, "0.38") == "exact" and compare(0.386, "0.38") == "differs"
    assert compare(52.49, "53") == "differs" and compare(52.5, "53") == "exact"
    assert compare(33.3, "33") == "exact" and compare(1e-4, "0.0001") == "exact" and compare(1e-7, "1e-7") == "exact"
    assert compare(5.0, "figure only") is None and compare(1.0, "stated") is None


def test_unreproduced_cells_are_classified():
    from results.catalogue import classify_unreproduced

    assert classify_unreproduced("sundriyal", "Table 4.16", "OR-CNN", "Age MAE (in years)")[0] == "cited"
    assert classify_unreproduced("sundriyal", "Table 4.16", "Ours (MTL+SEResnet)", "Age MAE (in years)")[0] == \
        "training"
    assert classify_unreproduced("jorgensen", "Table 3", "Baseline", "Gender accuracy")[0] == "cited"
    assert classify_unreproduced("jorgensen", "Table 3", "Multitask Classification", "Gender accuracy")[0] == \
        "training"
    bucket, why = classify_unreproduced("sundriyal", "Table 4.2", "Gender", "Male Count")
    assert bucket == "not here" and "truncated" in why


def test_precision_runs_keep_their_own_lines_but_count_at_the_papers_configuration(tmp_path):
    """A run at the paper's settings computed in bfloat16 is labelled 'paper (precision=...)', never averaged with
    a float32 run, and counted as reproduced at the paper's configuration; a spread of three runs that holds the
    printed value within 2 std is said so."""
    import pandas as pd

    runs = tmp_path / "runs"
    for i, (value, deviations) in enumerate([(8.0, {}), (9.0, {"precision": "mixed_bfloat16"}),
                                             (11.0, {"precision": "mixed_bfloat16"}),
                                             (13.0, {"precision": "mixed_bfloat16"})]):
        recorder = RunRecorder("utkface_dual_cnn", "age", paper="speziali", out=runs, seed=i, run_id=f"r{i}",
                               config={}, data={"kind": "real", "dataset": "utkface"}, deviations=deviations)
        recorder.finish({}, [{"table": "Num. of epochs", "row": "Single-task CNN", "column": "Age task",
                              "value": value, "unit": "epochs"}])
    summary = generate(runs, tmp_path / "tables", tmp_path / "README.md")
    table = pd.read_csv(tmp_path / "tables" / "speziali__num-of-epochs.csv", dtype=str, keep_default_na=False)
    lines = table[(table["row"] == "Single-task CNN") & (table["column"] == "Age task")].set_index("configuration")
    assert lines.loc["paper", "reproduced"] == "8" and lines.loc["paper", "status"] == "exact"
    bf16 = lines.loc["paper (precision=mixed_bfloat16)"]
    # mean 11, std 2 over three runs: the printed 8 is 1.5 std away
    assert (bf16["reproduced"], bf16["n"], bf16["status"]) == ("11 ± 2", "3", "differs (within 2 std of the runs)")
    assert summary["papers"]["speziali"]["reproduced"] == 1  # one published cell, reproduced


def test_smoke_records_the_command_did_not_read_are_named(tmp_path):
    """Issue 21 item 9: smoke runs write under build/smoke; `python -m results` says so and how to table them."""
    from results.__main__ import smoke_hint

    assert smoke_hint(None, 0, cwd=tmp_path) is None  # no build/smoke at all
    run = tmp_path / "build" / "smoke" / "utkface_xception" / "runs" / "utkface_xception" / "protocol" / "r1"
    run.mkdir(parents=True)
    assert smoke_hint(None, 0, cwd=tmp_path) is None  # a folder without records
    (run / "record.json").write_text("{}")
    none_found = smoke_hint(None, 0, cwd=tmp_path)
    assert none_found.startswith("note: no run record") and "1 smoke-run record(s)" in none_found
    assert "python -m results --runs " in none_found and "--smoke writes there" in none_found
    assert "are not in these tables" in smoke_hint(None, 12, cwd=tmp_path)
    assert smoke_hint(str(tmp_path / "build" / "smoke"), 1, cwd=tmp_path) is None  # it read them
