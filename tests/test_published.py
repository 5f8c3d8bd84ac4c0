"""The published-figures catalogue (results/catalogue.py, results/published/*.csv), checked against the papers.

Every number of the catalogue is looked for in the paper's own text (``../shared/papers``), next to its row and
column labels (``tests/paper_locate.py``), so that a transcription error fails here instead of being repeated. The
cells that cannot be found that way are listed explicitly below, each with its reason.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agegender.errors import DataError
from results.catalogue import HEADER, MARKERS, PAPERS, UNITS, load_published

PAPERS_DIR = (Path(os.environ["AGEGENDER_SHARED_DATA"]).parent / "papers" if os.environ.get("AGEGENDER_SHARED_DATA")
              else Path(__file__).resolve().parents[2] / "shared" / "papers")


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


def test_catalogue_relations_that_the_papers_state(published):
    """Sums the papers themselves imply (independent of any one printed number): Jørgensen's Table 1 parameters
    add up to the gender model's total and its convolutions to the functional layer of Table 2; Sundriyal's
    Table 4.1 male + female = total per race, and Table 4.2's gender and age counts both cover the 162,770
    training images of Table 4.4."""
    def value(paper, table, row, column):
        return one(published, paper, table, row, column).value_num

    t1 = published[(published.paper == "jorgensen") & (published.table == "Table 1")
                   & (published.column == "Parameters")]
    assert t1.value_num.sum() == value("jorgensen", "Table 2", "Gender", "Total parameters")
    assert t1[t1.row.str.startswith("Convolution")].value_num.sum() == value("jorgensen", "Table 2", "Functional layer",
                                                                             "Total parameters")
    for row in ("Gender", "Age", "multi-task", "Transfer learning", "Functional layer"):
        assert value("jorgensen", "Table 2", row, "Trainable parameters") + value(
            "jorgensen", "Table 2", row, "Non trainable parameters") == value("jorgensen", "Table 2", row,
                                                                             "Total parameters")
    s = published[published.paper == "sundriyal"]
    t41 = s[s.table == "Table 4.1"].pivot(index="row", columns="column", values="value_num")
    assert (t41["Male Count"] + t41["Female Count"] == t41["Total Persons"]).all()
    t42 = s[s.table == "Table 4.2"]
    train = value("sundriyal", "Table 4.4", "Train", "Number of examples")
    assert t42[t42.row == "Gender"].value_num.sum() == t42[t42.row == "Age"].value_num.sum() == train
    assert "16,258" in one(published, "jorgensen", "Section 2.1", "Adience (aligned)", "labelled images").note
    assert "19,962" in one(published, "sundriyal", "Table 4.4", "Test", "Number of examples").note


def test_marker_structure(published):
    """What the markers stand for: Gu & Yang print no result number (figures and claims only), Speziali's metric
    tables are blank, Dey & Aggarwal's three tables are 6 models x 7 columns."""
    g = published[published.paper == "gu_yang"]
    numeric = g[g.value_num.notna()]
    assert numeric.table.str.startswith("Section").all() and set(numeric.unit) <= {"count", "epochs"}
    for fig, n in (("Figure 4", 24), ("Figure 6", 36), ("Figure 7", 24), ("Figure 9", 6)):
        cells = g[g.table == fig]
        assert len(cells) == n and (cells.value == "figure only").all(), fig
    assert (g[g.table == "Claims"].value == "stated").all()
    for table in ("Training Metrics", "Validation Metrics", "Test Metrics"):
        cells = published[(published.paper == "speziali") & (published.table == table)]
        assert len(cells) == 4 and (cells.value == "not published").all()
    d = published[published.paper == "dey_aggarwal"]
    for table in ("Table 1", "Table 2", "Table 3"):
        assert len(d[d.table == table]) == 6 * 7


# ------------------------------------------------------------------------------------------------------------------
# Every catalogue value against the paper's own text (issue 18 item 8). How a cell is found: tests/paper_locate.py.
# Table cells must be found at their row and column ("cell"); numbers of running text next to a word of their labels
# ("text"). The lists below are the exceptions, each with the reason; a cell on no list that cannot be found, or is
# found with another number, fails, and so does a listed cell that the locator finds after all.

# found on their row line only: the number sits in a label field, not under a column header
ROW_ONLY = {
    ("jorgensen", "Table 1", "Dropout 1", "Rate"): "printed 'Rate = 0.5' in the layer-name field",
    ("jorgensen", "Table 1", "Dropout 2", "Rate"): "printed 'Rate = 0.5' in the layer-name field",
}
# implied by the text but never printed as a number: checked by recomputing them from the text (below)
DERIVED = {
    ("jorgensen", "Section 2.1", "Adience (aligned)", "age classes"): "the age label set lists 8 ranges",
    ("dey_aggarwal", "Section 3.1", "UTKFace", "race classes"): "'race' is an integer from 0 to 4",
}
# cannot be located in the text at all (none at present; keep the reason when adding one)
UNLOCATED: dict = {}


def _derive(key, text: str) -> float:
    import re

    if key == ("jorgensen", "Section 2.1", "Adience (aligned)", "age classes"):
        labels = re.search(r"age: \{(.*?)\}\. ", text).group(1)
        return float(len(re.findall(r"\(\d+, \d+\)", labels)))
    if key == ("dey_aggarwal", "Section 3.1", "UTKFace", "race classes"):
        low, high = re.search(r"'race' is an integer from (\d+) to (\d+)", text).groups()
        return float(int(high) - int(low) + 1)
    raise KeyError(key)


@pytest.fixture(scope="module")
def papers():
    if not PAPERS_DIR.is_dir():
        pytest.skip(f"the papers are not at {PAPERS_DIR}")
    from tests.paper_locate import Paper

    return {key: Paper(PAPERS_DIR / meta["file"]) for key, meta in PAPERS.items()}


def _cells(published, paper):
    return [r for r in published[published.paper == paper].itertuples()]


@pytest.mark.parametrize("paper", list(PAPERS))
def test_every_number_is_printed_next_to_its_row_and_column_labels(published, papers, paper):
    from tests.paper_locate import locate

    failures = []
    for r in _cells(published, paper):
        key = (r.paper, r.table, r.row, r.column)
        if r.value in ("figure only", "stated") or key in DERIVED or key in UNLOCATED or key in ROW_ONLY:
            continue
        level, detail = locate(papers[paper], r.table, r.row, r.column,
                               None if r.value == "not published" else r.value_num, r.value)
        want = "text" if r.table.startswith("Section") else "cell"
        if level != want:
            failures.append(f"{key} = {r.value}: {level} ({detail})")
    assert not failures, "\n".join(failures)


def test_the_listed_exceptions_are_still_exceptions(published, papers):
    """Keeps the lists honest: a row-only cell is found on its row (not at a column), an unlocated one nowhere,
    and a derived one is recomputed from the text."""
    from tests.paper_locate import locate

    for key in ROW_ONLY:
        r = one(published, *key)
        assert locate(papers[key[0]], key[1], key[2], key[3], r.value_num)[0] == "row", key
    for key in UNLOCATED:
        r = one(published, *key)
        assert locate(papers[key[0]], key[1], key[2], key[3], r.value_num)[0] is None, key
    for key in DERIVED:
        assert _derive(key, papers[key[0]].text) == one(published, *key).value_num, key


def test_markers_match_the_text(published, papers):
    """``figure only``: the paper has that figure; ``stated``: every quote in the note is the paper's own words;
    ``not published``: the table prints '-', '*' or nothing there (checked with the numbers above)."""
    import re

    def norm(text):
        return re.sub(r"\s+", " ", text).lower()

    for r in published[published.value.isin(["figure only", "stated"])].itertuples():
        text = norm(papers[r.paper].text)
        if r.value == "figure only":
            number = r.table.split()[-1]
            assert re.search(rf"(figure|fig\.)\s*{re.escape(number)}\b", text), (r.paper, r.table)
        else:
            quotes = re.findall(r"'([^']{8,})'", r.note)
            assert quotes and all(norm(q) in text for q in quotes), (r.paper, r.row, r.note)


@pytest.mark.parametrize("paper, table, row, column, wrong", [
    ("jorgensen", "Table 3", "Transfer Classification", "Gender accuracy", 89.4),
    ("jorgensen", "Table 3", "Multitask Classification", "Age accuracy std", 4.8),
    ("jorgensen", "Table 1", "Convolution 2", "Size of Each Filter depth", 64),
    ("dey_aggarwal", "Table 2", "Xception", "Ethnicity Accuracy", 0.80),
    ("sundriyal", "Table 4.10", "Proposed Multi-Task Learning Network", "Age MAE", 4.86),
    ("speziali", "Time (sec)", "Single-task CNN", "Age task", 840.16),
])
def test_a_mistyped_value_is_caught(papers, paper, table, row, column, wrong):
    """The check can fail: a catalogue value one digit off is a mismatch at its table cell."""
    from tests.paper_locate import locate

    assert locate(papers[paper], table, row, column, wrong)[0] == "mismatch"


@pytest.mark.parametrize("paper, table, row, column, wrong", [
    ("jorgensen", "Section 2.1", "Adience (aligned)", "labelled images", 16258),
    ("gu_yang", "Section 3", "training", "batch size", 128),
    ("sundriyal", "Section 5.3", "Single Task Neural Network", "Old accuracy", 57.73),
])
def test_a_value_not_printed_in_its_section_is_not_found(papers, paper, table, row, column, wrong):
    from tests.paper_locate import locate

    assert locate(papers[paper], table, row, column, wrong)[0] is None


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
