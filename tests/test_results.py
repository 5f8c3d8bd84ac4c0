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
    assert cells[4] == "1.00" and cells[5] == "3" and cells[6] == "full real data"
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
    assert csv.splitlines()[0] == "row,column,published,reproduced,delta,n,data,notes"
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
    assert sorted(s["reason"].split(" (")[0] for s in skipped) == ["run not complete", "unreadable record"]
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
