"""The published-figures catalogue (results/catalogue.py, results/published/*.csv)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from agegender.errors import DataError
from results.catalogue import HEADER, MARKERS, PAPERS, UNITS, load_published

PAPERS_DIR = Path(__file__).resolve().parents[2] / "shared" / "papers"


@pytest.fixture(scope="module")
def published():
    return load_published()


def one(df, paper, table, row, column):
    hit = df[(df.paper == paper) & (df.table == table) & (df.row == row) & (df.column == column)]
    assert len(hit) == 1, (paper, table, row, column)
    return hit.iloc[0]


def test_every_paper_loads_with_rows(published):
    assert list(published.columns) == ["paper", "table", "row", "column", "value", "value_num", "unit", "note"]
    assert set(published.paper) == set(PAPERS)
    for key in PAPERS:
        part = load_published(key)
        assert len(part) > 50, key
        assert set(part.paper) == {key}
    assert len(published) == sum(len(load_published(k)) for k in PAPERS)


def test_papers_constant():
    assert {k: v["reproduction"] for k, v in PAPERS.items()} == {
        "speziali": "utkface_dual_cnn",
        "jorgensen": "adience_levi",
        "gu_yang": "efficientnet_age_groups",
        "dey_aggarwal": "utkface_xception",
        "sundriyal": "mtl_weighted_loss",
    }
    for key, meta in PAPERS.items():
        assert set(meta) == {"file", "title", "authors", "reproduction"}
        if PAPERS_DIR.is_dir():
            text = (PAPERS_DIR / meta["file"]).read_text(encoding="utf-8")
            assert meta["authors"].split(",")[0].split()[-1] in text, key


def test_markers_parse_to_nan_and_numbers_parse(published):
    marked = published[published.value.isin(MARKERS)]
    assert len(marked) > 0 and marked.value_num.isna().all()
    numeric = published[~published.value.isin(MARKERS)]
    assert numeric.value_num.notna().all()
    assert published.unit.isin(UNITS).all()
    assert not published.duplicated(["paper", "table", "row", "column"]).any()


def test_jorgensen_parameter_counts(published):
    row = one(published, "jorgensen", "Table 2", "multi-task", "Total parameters")
    assert row.value_num == 14_287_625 and row.unit == "params"
    assert one(published, "jorgensen", "Table 2", "Gender", "Trainable parameters").value_num == 7_192_065
    assert one(published, "jorgensen", "Table 2", "Age", "Trainable parameters").value_num == 7_192_968
    assert one(published, "jorgensen", "Table 2", "Functional layer", "Total parameters").value_num == 97_408
    tl = one(published, "jorgensen", "Table 2", "Transfer learning", "Non trainable parameters")
    assert tl.value_num == 15_365_160
    assert one(published, "jorgensen", "Section 3.1", "Baseline (Levi & Hassner)",
               "trainable parameters").value_num == 115_023_873
    t1 = published[(published.paper == "jorgensen") & (published.table == "Table 1")
                   & (published.column == "Parameters")]
    conv = t1[t1.row.str.startswith("Convolution")].value_num.sum()
    assert conv == 97_408
    assert t1.value_num.sum() == 7_192_065


def test_jorgensen_results_and_sample_count(published):
    row = one(published, "jorgensen", "Table 3", "Transfer Classification", "Gender accuracy")
    assert row.value == "89.3" and row.unit == "percent"
    assert one(published, "jorgensen", "Table 3", "Multitask Classification", "Age accuracy std").value_num == 4.9
    assert one(published, "jorgensen", "Table 3", "Multitask Classification", "Avg training epochs").value == "26.0"
    assert math.isnan(one(published, "jorgensen", "Table 3", "Age Classification", "Gender accuracy").value_num)
    n = one(published, "jorgensen", "Section 2.1", "Adience (aligned)", "labelled images")
    assert n.value_num == 16228 and "16,258" in n.note


def test_speziali(published):
    ks = one(published, "speziali", "Section III-A", "Kolmogorov-Smirnov test", "p-value")
    assert ks.value_num == 0.38 and ks.unit == "p-value"
    assert one(published, "speziali", "Time (sec)", "Single-task CNN", "Age task").value_num == 840.61
    assert one(published, "speziali", "Num. of epochs", "Multi-task CNN", "Age task").value_num == 9
    assert one(published, "speziali", "Last loss value (validation)", "Single-task CNN",
               "Gender task").value == "0.0041"
    for table in ("Training Metrics", "Validation Metrics", "Test Metrics"):
        cells = published[(published.paper == "speziali") & (published.table == table)]
        assert len(cells) == 4 and (cells.value == "not published").all()
        assert set(cells.unit) == {"r2", "accuracy"}


def test_gu_yang_is_figures_and_claims(published):
    g = published[published.paper == "gu_yang"]
    numeric = g[g.value_num.notna()]
    assert numeric.table.str.startswith("Section").all()
    assert set(numeric.unit) <= {"count", "epochs"}
    for fig, n in (("Figure 4", 24), ("Figure 6", 36), ("Figure 7", 24), ("Figure 9", 6)):
        cells = g[g.table == fig]
        assert len(cells) == n and (cells.value == "figure only").all(), fig
    assert set(g[g.table == "Figure 4"].column) == {"3 age classes", "5 age classes", "10 age classes"}
    claims = g[g.table == "Claims"]
    assert (claims.value == "stated").all()
    assert {"age classes 3 > 5 > 10", "UTKFace three-task > single-task > two-task",
            "multi-source lowest"} <= set(claims.row)
    assert one(published, "gu_yang", "Section 5.1", "IMDB-WIKI", "train").value_num == 16000


def test_dey_aggarwal(published):
    d = published[published.paper == "dey_aggarwal"]
    for table in ("Table 1", "Table 2", "Table 3"):
        assert len(d[d.table == table]) == 6 * 7
    x = one(published, "dey_aggarwal", "Table 3", "Xception", "Gender Accuracy")
    assert x.value_num == 0.94 and x.unit == "accuracy"
    assert one(published, "dey_aggarwal", "Table 3", "Xception", "Age MAE").unit == "mae-normalised"
    split = [one(published, "dey_aggarwal", "Section 4.1", "split", c).value_num
             for c in ("train", "validation", "test")]
    assert split == [9115, 3907, 5581]


def test_sundriyal(published):
    s = published[published.paper == "sundriyal"]
    tables = set(s.table)
    assert {f"Table 4.{i}" for i in range(1, 17)} <= tables
    assert {f"Table 5.{i}" for i in range(1, 6)} <= tables
    assert one(published, "sundriyal", "Table 4.10", "Proposed Multi-Task Learning Network",
               "Age MAE").value_num == 4.68
    test = one(published, "sundriyal", "Table 4.4", "Test", "Number of examples")
    assert test.value_num == 19963 and "19,962" in test.note
    assert one(published, "sundriyal", "Table 4.3", "Train", "Number of examples").value_num == 10517
    t41 = s[s.table == "Table 4.1"].pivot(index="row", columns="column", values="value_num")
    assert (t41["Male Count"] + t41["Female Count"] == t41["Total Persons"]).all()
    t42 = s[s.table == "Table 4.2"]
    assert t42[t42.row == "Gender"].value_num.sum() == t42[t42.row == "Age"].value_num.sum() == 162770
    lam = one(published, "sundriyal", "Table 3.2", "Learning rate", "Value")
    assert lam.value_num == pytest.approx(3e-5)


# Malformed files: each must raise DataError naming the file (and the line).

GOOD = "speziali,Time (sec),Single-task CNN,Age task,840.61,seconds,\n"


def write(tmp_path, text, key="speziali"):
    path = tmp_path / f"{key}.csv"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("body, needle", [
    ("paper,table,row,col,value,unit,note\n" + GOOD, "header"),
    (",".join(HEADER) + "\n" + GOOD.replace("seconds", "furlongs"), "unit"),
    (",".join(HEADER) + "\n" + GOOD + GOOD, "duplicate"),
    (",".join(HEADER) + "\n" + GOOD.replace("840.61", "about 840"), "not a number"),
    (",".join(HEADER) + "\n" + GOOD.replace("840.61", "84O.61"), "not a number"),
    (",".join(HEADER) + "\n" + GOOD.replace("speziali,", "jorgensen,", 1), "key"),
    (",".join(HEADER) + "\n" + GOOD.replace(",seconds,", ",,"), "unit"),
    (",".join(HEADER) + "\n" + "speziali,Time (sec),Single-task CNN,Age task,1,2,seconds,\n", "fields"),
])
def test_malformed_csv_raises(tmp_path, body, needle):
    path = write(tmp_path, body)
    with pytest.raises(DataError) as info:
        load_published("speziali", root=tmp_path)
    message = str(info.value)
    assert str(path) in message and needle in message
    if needle != "header":
        assert "line 2" in message or "line 3" in message


def test_well_formed_minimal_csv(tmp_path):
    write(tmp_path, ",".join(HEADER) + "\n" + GOOD
          + 'speziali,Table X,r,c,"7,192,065",params,\n'
          + "speziali,Table X,r,d,7 192 065,params,\n"
          + "speziali,Table X,r,e,3e-5,scalar,\n"
          + "speziali,Table X,r,f,figure only,count,\n")
    df = load_published("speziali", root=tmp_path)
    assert list(df.value_num[:5].fillna(-1)) == [840.61, 7192065, 7192065, 3e-5, -1]


def test_missing_file_and_unknown_paper(tmp_path):
    with pytest.raises(DataError, match="speziali.csv"):
        load_published("speziali", root=tmp_path)
    with pytest.raises(DataError, match="unknown paper"):
        load_published("nobody")
