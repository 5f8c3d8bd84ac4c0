"""The committed facts records (issue 16) against independent computations on the real data.

Each test recomputes a few cells with plain Python straight from the files in ``../shared/data``
(file names, csv rows, text lines: no code of the package under test) and compares them with
the records ``python -m reproductions.facts`` committed under ``results/runs/facts``. They skip
with the reason when the real data is absent; they fail when the committed records were made
from other data (the data fingerprint differs) or disagree with the files.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RECORDS = ROOT / "results" / "runs" / "facts"


def _record(experiment: str) -> dict:
    path = RECORDS / experiment / "facts" / "record.json"
    assert path.is_file(), f"{path} missing: run `make facts` and commit results/runs/facts"
    return json.loads(path.read_text(encoding="utf-8"))


def _cells(record: dict) -> dict:
    out: dict = {}
    for c in record["cells"]:
        out.setdefault((c["table"], c["row"], c["column"]), []).append(c["value"])
    return {k: v[0] if len(v) == 1 else v for k, v in out.items()}


def _same_data(record: dict, folder: Path) -> None:
    from agegender.data.provenance import fingerprint_files

    if record["data"]["fingerprint"] != fingerprint_files(folder):
        pytest.fail(f"the committed record {record['experiment']} was made from other data than {folder}: "
                    "rerun `make facts`")


def _utkface_labels(folder: Path) -> list[tuple[int, int, int | None]]:
    """(age, gender, race or None) of every file name, parsed here by its leading fields."""
    out = []
    for name in os.listdir(folder):
        fields = name.split("_")
        race = int(fields[2]) if len(fields) > 3 and fields[2].isdigit() and len(fields[2]) == 1 else None
        out.append((int(fields[0]), int(fields[1]), race))
    return out


def test_table_4_1_race_by_gender_from_file_names(utkface_full):
    record = _record("sundriyal_utkface")
    _same_data(record, utkface_full)
    cells = _cells(record)
    labels = _utkface_labels(utkface_full)
    counts = Counter((race, gender) for _, gender, race in labels)
    for code, race in enumerate(("White", "Black", "Asian", "Indian", "Others")):
        male, female = counts[(code, 0)], counts[(code, 1)]
        assert cells[("Table 4.1", race, "Male Count")] == male
        assert cells[("Table 4.1", race, "Female Count")] == female
        assert cells[("Table 4.1", race, "Total Persons")] == male + female
    assert cells[("Section 4.1", "UTKFace", "images")] == len(labels)
    assert cells[("Section 4.1", "UTKFace", "max age")] == max(a for a, _, _ in labels)
    # the differing White total is reported with its reason, not tuned away
    white = next(c for c in record["cells"] if (c["table"], c["row"], c["column"]) == ("Table 4.1", "White",
                                                                                          "Total Persons"))
    assert white["status"] in ("exact", "differs")
    if white["status"] == "differs":
        assert white["note"].startswith("differs: ") and "reason unknown" not in white["note"]


def test_speziali_and_dey_counts_from_file_names(utkface_full):
    labels = _utkface_labels(utkface_full)
    speziali = _record("speziali_utkface")
    _same_data(speziali, utkface_full)
    assert _cells(speziali)[("Section III-A", "UTKFace", "images")] == len(labels)  # every name has age and gender
    shares = _cells(speziali)
    assert shares[("Section III-A", "train/test split", "test share")] == pytest.approx(
        100 * round(0.3 * len(labels)) / len(labels))
    p_values = shares[("Section III-A", "Kolmogorov-Smirnov test", "p-value")]
    assert len(p_values) == 10 and len(set(p_values)) == 10 and all(0 < p <= 1 for p in p_values)

    dey = _cells(_record("dey_aggarwal_utkface"))
    kept = [a for a, _, _ in labels if 10 <= a <= 65]
    assert dey[("Section 4.1", "split", "total aged 10-65")] == len(kept)
    assert sum(dey[("Section 4.1", "split", part)] for part in ("train", "validation", "test")) == len(kept)
    assert dey[("Section 3.3", "UTKFace", "mean age")] == pytest.approx(sum(a for a, _, _ in labels) / len(labels))
    assert dey[("Section 3.3", "UTKFace", "kept age min")] == min(kept)
    assert dey[("Section 3.1", "UTKFace", "race classes")] == len({r for _, _, r in labels if r is not None})
    white = sum(1 for _, _, r in labels if r == 0)
    assert dey[("Section 3.3", "race distribution", "White")] == white


def test_coral_split_sizes_from_the_lists(utkface_full, coral_dir):
    record = _record("sundriyal_utkface")
    names = set(os.listdir(utkface_full))
    with open(coral_dir / "utk_train.csv", newline="") as handle:
        train = [row["file"] for row in csv.DictReader(handle) if row["file"] in names]
    with open(coral_dir / "utk_test.csv", newline="") as handle:
        test = [row["file"] for row in csv.DictReader(handle) if row["file"] in names]
    val = math.ceil(0.2 * len(train))  # 80:20 of the train list (Sec. 4.2)
    cells = _cells(record)
    assert cells[("Table 4.3", "Train", "Number of examples")] == len(train) - val
    assert cells[("Table 4.3", "Validation", "Number of examples")] == val
    assert cells[("Table 4.3", "Test", "Number of examples")] == len(test)
    ages = [int(n.split("_")[0]) for n in train + test]
    assert cells[("Section 4.2", "UTKFace (CORAL)", "age min")] == min(ages)
    assert cells[("Section 4.2", "UTKFace (CORAL)", "age max")] == max(ages)


def test_celeba_partition_and_attributes_from_the_text_files(shared_data):
    folder = shared_data / "celeba"
    if not (folder / "list_eval_partition.txt").is_file():
        pytest.skip(f"CelebA label files not found in {folder}")
    parts = Counter(line.split()[1] for line in (folder / "list_eval_partition.txt").read_text().splitlines()
                    if line.strip())
    record = _record("sundriyal_celeba")
    _same_data(record, folder)
    cells = _cells(record)
    for row, key in (("Train", "0"), ("Validation", "1"), ("Test", "2")):
        assert cells[("Table 4.4", row, "Number of examples")] == parts[key]
    assert cells[("Section 4.1", "CelebA", "images")] == sum(parts.values())
    lines = (folder / "list_attr_celeba.txt").read_text().splitlines()
    names = lines[1].split()
    assert cells[("Section 4.1", "CelebA", "attributes")] == len(names)
    male = names.index("Male") + 1
    train = {line.split()[0] for line in (folder / "list_eval_partition.txt").read_text().splitlines()
             if line.strip().endswith(" 0")}
    rows = [line.split() for line in lines[2:] if line.strip() and line.split()[0] in train]
    assert cells[("Table 4.2", "Gender", "Male Count (rows present)")] == sum(r[male] == "1" for r in rows)
    assert ("Table 4.2", "Gender", "Male Count") not in cells  # the truncated file cannot give the thesis's cell


def test_adience_cleaning_from_the_fold_files(adience_folds):
    groups = {"(0, 2)", "(4, 6)", "(8, 12)", "(15, 20)", "(25, 32)", "(38, 43)", "(48, 53)", "(60, 100)"}
    rows = []
    for k in range(5):
        with open(adience_folds / f"fold_{k}_data.txt", newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle, delimiter="\t")
            next(reader)
            rows += [(k, r[0], r[3].strip(), r[4].strip()) for r in reader if len(r) >= 5]
    clean = [r for r in rows if r[2] in groups and r[3] in ("m", "f")]
    record = _record("jorgensen_adience_folds")
    _same_data(record, adience_folds)
    cells = _cells(record)
    assert cells[("Section 2.1", "Adience (aligned)", "labelled images")] == len(clean)
    assert cells[("Section 2.1", "Adience (aligned)", "female share")] == pytest.approx(
        100 * sum(r[3] == "f" for r in clean) / len(clean))
    assert cells[("Section 2.1", "Adience (aligned)", "age classes")] == len({r[2] for r in clean})
    assert cells[("Section 2.2", "cross-validation", "folds")] == len({r[0] for r in rows})
    assert cells[("Figure 2", "(25, 32)", "female images")] == sum(r[2] == "(25, 32)" and r[3] == "f" for r in clean)


def test_reduced_gender_model_parameters_by_hand():
    """Table 2's gender count from Table 1's layer shapes, by hand, against the committed build record."""
    conv = [(7, 3, 24), (5, 24, 64), (3, 64, 96)]  # kernel, input channels, filters
    params = sum((k * k * c + 1) * f for k, c, f in conv)
    flat = 24 * 24 * 96  # the last LRN's output
    params += (flat + 1) * 128 + (128 + 1) * 128 + (128 + 1) * 1
    cells = _cells(_record("jorgensen_model"))
    assert cells[("Table 2", "Gender", "Total parameters")] == params
    assert cells[("Table 2", "Functional layer", "Total parameters")] == sum((k * k * c + 1) * f for k, c, f in conv)


def test_records_hold_no_absolute_path_and_every_cell_a_status():
    assert RECORDS.is_dir(), "results/runs/facts missing: run `make facts`"
    records = sorted(RECORDS.glob("*/facts/record.json"))
    assert len(records) >= 15
    absolute = re.compile(r'"(/|[A-Za-z]:\\\\|~/)')
    for path in records:
        text = path.read_text(encoding="utf-8")
        assert not absolute.search(text), f"{path} holds an absolute path"
        record = json.loads(text)
        assert record["status"] == "complete" and record["deviations"] == {}
        assert record["data"]["kind"] in ("real", "none")
        if record["data"]["kind"] == "real":
            assert not Path(record["data"]["path"]).is_absolute() and record["data"]["fingerprint"]["files"] > 0
        for figure in record.get("figures", []):
            assert not Path(figure).is_absolute() and (ROOT / "results" / figure).is_file()
        for c in record["cells"]:
            assert c["status"] in ("exact", "differs", "setting", "no printed value", "holds", "does not hold")
            assert c["status"] != "setting" or c.get("setting") is True
            if c["status"] == "differs":
                assert c["note"].startswith("differs: ") and "reason unknown" not in c["note"], c


def test_write_record_is_idempotent(tmp_path):
    from reproductions.facts.common import cell, setting, write_record

    cells = [cell("Section III-A", "UTKFace", "images", 23_708, "count", "toy"),
             cell("Section III-A", "train/test split", "train share", 69.0, "percent", reason="toy reason"),
             setting("Section IV-B", "early stopping", "patience", 3, "epochs", "toy")]
    args = dict(paper="speziali", data={"kind": "real", "dataset": "toy"}, config={"a": 1})
    path, written = write_record(tmp_path, "toy", cells=cells, **args)
    first = path.read_bytes()
    record = json.loads(first)
    assert written and [c["status"] for c in record["cells"]] == ["exact", "differs", "setting"]
    assert record["cells"][1]["note"].startswith("differs: toy reason")
    again, written = write_record(tmp_path, "toy", cells=cells, **args)
    assert again == path and not written and path.read_bytes() == first
    changed = [dict(cells[0], value=23_707.0)] + cells[1:]
    _, written = write_record(tmp_path, "toy", cells=changed, **args)
    assert written and json.loads(path.read_text())["cells"][0]["status"] == "differs"


def test_command_runs_what_the_data_root_allows(tmp_path, capsys):
    """A data root without UTKFace: the model build and settings records are still written, the command says
    what it skipped and exits 1; no record names an absolute path."""
    from reproductions.facts.__main__ import main

    (tmp_path / "data").mkdir()
    code = main(["--data-root", str(tmp_path / "data"), "--out", str(tmp_path / "runs"), "--papers", "speziali",
                 "--no-tables"])
    assert code == 1 and "skipped part of speziali" in capsys.readouterr().err
    written = sorted(p.parent.parent.name for p in (tmp_path / "runs").rglob("record.json"))
    assert written == ["speziali_model", "speziali_settings"]
    for path in (tmp_path / "runs").rglob("record.json"):
        assert str(tmp_path) not in path.read_text()
