"""Regenerate every results table from run records and the published-figures catalogue.

For each paper table in ``results/published/`` (and each table that only runs report, like
the demo's) this writes ``<paper>__<table>.md`` and ``.csv`` with one line per cell, data kind
and run configuration:

    row | column | published | reproduced | Δ | status | n | data | configuration | notes

``reproduced`` is the mean ± sample std over the runs (or folds, or seeds) that report the
cell; ``n`` counts them; ``Δ`` is reproduced − published where both are numbers.

``status`` (:func:`line_status`):

- ``exact`` / ``differs``: the reproduced value against the printed number at its printed
  precision (:func:`results.catalogue.compare`: a printed integer must match exactly, a printed
  decimal within half a unit of its last digit); a differing cell's reason is in its notes;
- ``setting``: the cell echoes a configuration constant (a learning rate, a batch size: the
  record's cell carries ``"setting": true``); shown for reference, never given a Δ and never
  counted as reproduced;
- ``holds`` / ``does not hold``: a claim the paper states (value ``stated``);
- ``no printed value``: the paper prints no number (``figure only``, ``not published``).

``data`` says whether the runs used full real data, a real sample, generated faces or only a
model build (never mixed in one line). ``configuration`` keeps runs with different settings
apart (issue 18): it is ``paper`` for a record whose ``deviations`` (the experiment fields that
differ from the paper's configuration, :func:`agegender.records.deviations_from`) are empty,
the deviations themselves (``epochs=1; input_size=32``) otherwise, and ``not recorded`` for a
record written before records carried ``deviations``: such a run cannot be shown to use the
paper's settings, so it never averages with one that does.

It also writes ``results/README.md``: first one line per paper (cells published; reproduced
on real data or from a model build, exact and differing; settings; cells that need training;
cells not runnable here and why; figures cited from other work), counted from the lines at the
paper's configuration on full real data or a model build; then, for every paper table, whether
it has been reproduced on real data, on a sample, on generated data, or not yet. Output depends
only on its inputs (sorted, fixed formatting), so regenerating twice gives no diff.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd

from agegender import atomic
from agegender.records import DATA_KINDS, load_records

HERE = Path(__file__).resolve().parent
COLUMNS = ["row", "column", "published", "reproduced", "delta", "status", "n", "data", "configuration", "notes"]
HEADERS = ["row", "column", "published", "reproduced", "Δ", "status", "n", "data", "configuration", "notes"]
DATA_LABEL = {"real": "full real data", "sample": "real sample", "generated": "generated faces",
              "none": "model build (no data)"}
SETTING_LABEL = "configuration (no data)"  # the data column of a setting line
PAPER_CONFIG = "paper"  # configuration label of a run at the paper's settings (empty deviations)
# deviations that say how the paper's configuration was computed, not a change of it: such a run is labelled
# "paper (precision=mixed_bfloat16)", kept in its own lines, and counted at the paper's configuration
NUMERICS = ("precision",)
NOT_RECORDED = "not recorded"  # a record without the 'deviations' key
COUNTED_KINDS = ("real", "none")  # data kinds whose lines count as reproduced in the README summary


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-")


def _natural(text: str):
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", str(text))]


def _fmt(value: float, unit: str) -> str:
    if value is None or not math.isfinite(value):
        return ""
    text = _fmt_signed(float(value), unit)
    return text[1:] if re.fullmatch(r"-0[.0]*", text) else text  # never print -0.00


def _fmt_signed(value: float, unit: str) -> str:
    if unit in ("params", "count", "epochs", "pixels", "calendar-year", "degrees") and float(value).is_integer():
        return f"{int(value):,}"
    if unit in ("params", "count"):
        return f"{value:,.1f}"
    if unit in ("seconds",):
        return f"{value:.1f}"
    if unit in ("percent", "years", "epochs"):
        return f"{value:.2f}"
    if unit in ("scalar", "p-value"):
        return f"{value:.4g}"
    return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.1f}"


def _verdict(share: float) -> str:
    """A checked claim's cells are 1 (holds) or 0 (does not hold); their mean over runs, in words."""
    if share >= 1:
        return "holds"
    if share <= 0:
        return "does not hold"
    return f"holds in {share:.0%} of runs"


def _plain(value) -> str:
    """A deviation's value as short text (``0.001``, ``32``, ``None``, ``(3, 5)``)."""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(_plain(v) for v in value) + ")"
    return str(value)


def configuration_label(record: dict) -> str:
    """``paper`` for empty ``deviations``; ``key=value; ...`` (sorted) for deviations; ``not recorded``
    for a record without the key (written before records carried it)."""
    deviations = record.get("deviations")
    if deviations is None:
        return NOT_RECORDED
    if not isinstance(deviations, dict) or not deviations:
        return PAPER_CONFIG if not deviations else f"deviations={deviations!r}"
    text = "; ".join(f"{key}={_plain(deviations[key])}" for key in sorted(deviations))
    if set(deviations) <= set(NUMERICS):
        return f"{PAPER_CONFIG} ({text})"
    return text


def is_paper_config(label: str) -> bool:
    """The paper's configuration, computed at any numerical precision (:data:`NUMERICS`)."""
    return label == PAPER_CONFIG or str(label).startswith(f"{PAPER_CONFIG} (")


def _config_order(label: str):
    return (0 if label == PAPER_CONFIG else 1 if is_paper_config(label) else 3 if label == NOT_RECORDED else 2,
            label)


def format_cells(cells: list[dict], paper: str) -> str:
    """One run's reproduced cells next to ``paper``'s published values, one aligned line each (for a console)."""
    from results.catalogue import load_published

    pub = load_published(paper)
    published = {(t, r, c): v for t, r, c, v in zip(pub["table"], pub["row"], pub["column"], pub["value"])}
    order = {key: i for i, key in enumerate(published)}
    tables: dict = {}
    for i, (table, _, _) in enumerate(published):
        tables.setdefault(table, i)
    rows = [("table", "row", "column", "published", "this run")]
    for cell in sorted(cells, key=lambda c: (tables.get(c["table"], len(order)),
                                             order.get((c["table"], c["row"], c["column"]), len(order)),
                                             c["table"], str(c["row"]), str(c["column"]))):
        value, unit = cell["value"], cell.get("unit")
        text = f"{value:,.0f}" if unit in ("count", "epochs", "pixels") else (
            f"{value:.2f}" if unit in ("seconds", "percent", "mae-years", "years") else f"{value:.4g}")
        if cell.get("setting"):
            text += " (setting)"
        rows.append((cell["table"], str(cell["row"]), str(cell["column"]),
                     str(published.get((cell["table"], cell["row"], cell["column"]), "—")), text))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows)


REPRODUCED_COLUMNS = ["paper", "table", "row", "column", "unit", "data", "configuration", "setting", "mean", "std",
                      "n", "note"]


def reproduced_cells(records: list[dict]) -> pd.DataFrame:
    """One row per (paper, table, row, column, data kind, configuration, setting) with mean, std and n.

    ``configuration``: :func:`configuration_label` of the record, so runs with other settings never
    average with the paper's (issue 18). ``setting``: the cell echoes a configuration constant.
    """
    rows = []
    for record in records:
        kind = (record.get("data") or {}).get("kind", "unknown")
        config = configuration_label(record)
        for cell in record.get("cells", []):
            value = cell.get("value")
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                continue
            rows.append({"paper": cell.get("paper") or record.get("paper") or record.get("reproduction"),
                         "table": cell["table"], "row": str(cell["row"]), "column": str(cell["column"]),
                         "unit": cell.get("unit", ""), "data": kind, "configuration": config,
                         "setting": bool(cell.get("setting", False)), "value": float(value),
                         "note": cell.get("note", ""), "run": record.get("_path", "")})
    if not rows:
        return pd.DataFrame(columns=REPRODUCED_COLUMNS)
    frame = pd.DataFrame(rows)
    keys = ["paper", "table", "row", "column", "data", "configuration", "setting"]
    grouped = frame.groupby(keys, sort=True)
    out = grouped["value"].agg(mean="mean", n="count").reset_index()
    out["std"] = grouped["value"].std(ddof=1).to_numpy()
    out["unit"] = grouped["unit"].first().to_numpy()
    out["note"] = grouped["note"].agg(lambda s: "; ".join(sorted({n for n in s if n}))).to_numpy()
    return out[REPRODUCED_COLUMNS]


def line_status(published_text: str, mean: float, *, setting: bool = False, std: float = float("nan"),
                n: int = 1) -> str:
    """The ``status`` of one table line (module docstring). A line over three or more runs whose mean
    differs but lies within two standard deviations of the printed value is ``differs (within 2 std of
    the runs)``: the paper's figure is one draw the runs' spread allows."""
    from results.catalogue import MARKERS, _parse_value, compare

    if setting:
        return "setting"
    if published_text == "stated":
        return "holds" if mean >= 1 else "does not hold"
    if published_text in MARKERS or published_text == "—":
        return "no printed value"
    status = compare(mean, published_text) or "no printed value"
    if status == "differs" and n >= 3 and math.isfinite(std) and abs(mean - _parse_value(published_text)) <= 2 * std:
        return "differs (within 2 std of the runs)"
    return status


def build_table(published: pd.DataFrame, reproduced: pd.DataFrame) -> pd.DataFrame:
    """Join one paper table's published cells with its reproduced cells (one line per data kind and
    configuration)."""
    pub_rows = published.to_dict("records")
    rep_rows = reproduced.to_dict("records")
    first_pub: dict = {}  # (row, column) -> the catalogue's first line for it (its order is the table's)
    for i, line in enumerate(pub_rows):
        first_pub.setdefault((line["row"], line["column"]), i)
    reps: dict = {}
    for line in rep_rows:
        reps.setdefault((line["row"], line["column"]), []).append(line)
    keys = sorted(set(first_pub) | set(reps),
                  key=lambda k: (first_pub.get(k, len(pub_rows)), _natural(k[0]), _natural(k[1])))
    lines = []
    for row, column in keys:
        pub = pub_rows[first_pub[(row, column)]] if (row, column) in first_pub else None
        rep = sorted(reps.get((row, column), []),
                     key=lambda r: (_kind_order(r["data"]), _config_order(r.get("configuration", PAPER_CONFIG)),
                                    bool(r.get("setting", False))))
        unit = pub["unit"] if pub else (rep[0]["unit"] if rep else "")
        pub_text = pub["value"] if pub else "—"
        pub_num = pub["value_num"] if pub else float("nan")
        pub_note = pub["note"] if pub and isinstance(pub["note"], str) else ""
        claim = pub_text == "stated"  # a conclusion the paper states: the runs say whether it holds
        if not rep:
            lines.append([row, column, pub_text, "not run" if claim else "", "", "", 0, "not yet", "", pub_note])
            continue
        for r in rep:
            setting = bool(r.get("setting", False))
            if claim:
                text = _verdict(r["mean"])
            else:
                text = _fmt(r["mean"], unit)
                if r["n"] > 1 and math.isfinite(r["std"]):
                    text += f" ± {_fmt(r['std'], unit)}"
            delta = r["mean"] - pub_num if math.isfinite(pub_num) and not setting else float("nan")
            notes = "; ".join(n for n in (pub_note, r["note"]) if n)
            lines.append([row, column, pub_text, text, _fmt(delta, unit),
                          line_status(pub_text, r["mean"], setting=setting, std=r["std"], n=int(r["n"])),
                          int(r["n"]), SETTING_LABEL if setting else DATA_LABEL.get(r["data"], r["data"]),
                          r.get("configuration", PAPER_CONFIG), notes])
    return pd.DataFrame(lines, columns=COLUMNS)


def _kind_order(kind: str) -> int:
    return DATA_KINDS.index(kind) if kind in DATA_KINDS else len(DATA_KINDS)


def _markdown(title: str, table: pd.DataFrame, source: str) -> str:
    def cell(value) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = [f"# {title}", "", source, "", "| " + " | ".join(HEADERS) + " |",
             "|" + "|".join(["---"] * len(HEADERS)) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def generate(runs_dir=None, out_dir=None, readme=None, published_root=None) -> dict:
    """Write every table and the README index; return a summary (tables written, records, skipped, papers)."""
    from results.catalogue import PAPERS, load_published

    runs_dir = Path(runs_dir or HERE / "runs")
    out_dir = Path(out_dir or HERE / "tables")
    readme = Path(readme or HERE / "README.md")
    records, skipped = load_records(runs_dir) if runs_dir.exists() else ([], [])
    skipped = [{**s, "file": _relative(s["file"], runs_dir.parent)} for s in skipped]
    published = load_published(root=published_root)
    reproduced = reproduced_cells(records)
    out_dir.mkdir(parents=True, exist_ok=True)
    tables = sorted({(p, t) for p, t in zip(published["paper"], published["table"])}
                    | {(p, t) for p, t in zip(reproduced["paper"], reproduced["table"])},
                    key=lambda k: (k[0], _natural(k[1])))
    written, index, built = [], [], {}
    for paper, name in tables:
        pub = published[(published["paper"] == paper) & (published["table"] == name)].reset_index(drop=True)
        rep = reproduced[(reproduced["paper"] == paper) & (reproduced["table"] == name)]
        table = build_table(pub, rep)
        built[(paper, name)] = table
        stem = f"{paper}__{_slug(name)}"
        meta = PAPERS.get(paper, {})
        title = f"{meta.get('authors', paper)} — {name}" if meta else f"{paper} — {name}"
        source = (f"Paper: `{meta['file']}` ({meta.get('title', '')}); reproduction: "
                  f"`python -m reproductions.{meta.get('reproduction', '?')}` (training) and "
                  f"`python -m reproductions.facts` (cells that need no training)." if meta else
                  "No published figures: reproduced values only.")
        atomic.write_text(out_dir / f"{stem}.md", _markdown(title, table, source))
        with atomic.atomic_path(out_dir / f"{stem}.csv") as tmp:
            table.to_csv(tmp, index=False, lineterminator="\n")
        written.append(stem)
        index.append((paper, name, _table_status(rep), stem, int(len(pub)),
                      *_exact_differ(table)))
    stale = [p for p in out_dir.glob("*__*.*") if p.stem not in written and p.suffix in (".md", ".csv")]
    for path in stale:
        path.unlink()
    papers = summarise(published, built)
    atomic.write_text(readme, _readme(papers, index, skipped))
    return {"tables": written, "records": len(records), "skipped": skipped, "papers": papers}


def _table_status(rep: pd.DataFrame) -> str:
    """Where a table's reproduced values come from: the best data kind at the paper's configuration."""
    if not len(rep):
        return "not yet"
    values = rep[~rep["setting"].astype(bool)] if "setting" in rep else rep
    if not len(values):
        return "settings only"
    paper = values[values["configuration"].map(is_paper_config)]
    kinds = set(paper["data"])
    status = next((DATA_LABEL[k] for k in DATA_KINDS if k in kinds), None)
    if status:
        return status
    kinds = set(values["data"])
    return next(DATA_LABEL[k] for k in DATA_KINDS if k in kinds) + " (other settings only)" if kinds & set(
        DATA_KINDS) else "not yet"


def _exact_differ(table: pd.DataFrame) -> tuple[int, int]:
    counted = table[table["data"].isin([DATA_LABEL[k] for k in COUNTED_KINDS])
                    & table["configuration"].map(is_paper_config)]
    return (int(counted["status"].isin(("exact", "holds")).sum()),
            int((counted["status"].str.startswith("differs") | (counted["status"] == "does not hold")).sum()))


def summarise(published: pd.DataFrame, tables: dict) -> dict:
    """Per paper: how many published cells are reproduced (exact / differ / no printed number), settings,
    need training (runnable here), not runnable here (with why), cited from other work.

    A published cell counts as reproduced when a line at the paper's configuration on full real data
    or a model build reports it; as a setting when such a line is a setting (settings win: a config
    echo is never a reproduction). Other cells are classified by :func:`results.catalogue.classify_unreproduced`.
    """
    from results.catalogue import COVERAGE, PAPERS, classify_unreproduced

    counted_labels = {DATA_LABEL[k] for k in COUNTED_KINDS} | {SETTING_LABEL}
    out = {}
    for paper in PAPERS:
        stats = {"published": 0, "reproduced": 0, "exact": 0, "differs": 0, "unprinted": 0, "settings": 0,
                 "training": 0, "not_here": 0, "cited": 0, "why": []}
        pub = published[published["paper"] == paper]
        for line in pub.itertuples(index=False):
            stats["published"] += 1
            table = tables.get((paper, line.table))
            status = []
            if table is not None:
                mine = table[(table["row"] == line.row) & (table["column"] == line.column)
                             & table["data"].isin(counted_labels) & table["configuration"].map(is_paper_config)]
                status = list(mine["status"])
            if "setting" in status:
                stats["settings"] += 1
            elif status:
                stats["reproduced"] += 1
                best = status[0]
                if best in ("exact", "holds"):
                    stats["exact"] += 1
                elif best.startswith("differs") or best == "does not hold":
                    stats["differs"] += 1
                else:
                    stats["unprinted"] += 1
            else:
                bucket, why = classify_unreproduced(paper, line.table, line.row, line.column)
                if bucket == "cited":
                    stats["cited"] += 1
                elif bucket == "training" and COVERAGE.get(paper, {}).get("training_here"):
                    stats["training"] += 1
                else:
                    stats["not_here"] += 1
                    if why and why not in stats["why"]:
                        stats["why"].append(why)
        out[paper] = stats
    return out


def _relative(path: str, base: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)


def _short(authors: str) -> str:
    """``Speziali``, ``Gu & Yang``, ``Jørgensen et al.`` from the catalogue's author list."""
    names = [a.strip().split()[-1] for a in authors.split(",") if a.strip()]
    return names[0] if len(names) == 1 else " & ".join(names) if len(names) == 2 else f"{names[0]} et al."


def _readme(papers: dict, index, skipped) -> str:
    from results.catalogue import COVERAGE, PAPERS

    lines = ["# Results", "",
             "Generated by `python -m results` (`make tables`) from the run records in `runs/` and the "
             "published figures in `published/`. Do not edit by hand. The cells that need no training are "
             "computed from the real data and the model builds by `python -m reproductions.facts` "
             "(`make facts`).", "",
             "| paper | published cells | reproduced (real data or model build) | exact | differ | no printed "
             "value | settings | need training (runnable here) | not runnable here | cited from other work | "
             "why not runnable here |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for paper, s in papers.items():
        why = "; ".join(s["why"])
        here = COVERAGE.get(paper, {})
        if s["training"] and here.get("training_here"):
            why = "; ".join(w for w in (why, here.get("training", "")) if w)
        lines.append(f"| {_short(PAPERS[paper]['authors'])} ({paper}) | {s['published']} | {s['reproduced']} | "
                     f"{s['exact']} | {s['differs']} | {s['unprinted']} | {s['settings']} | {s['training']} | "
                     f"{s['not_here']} | {s['cited']} | {why} |")
    lines += ["",
              "Counted per published cell, from the table lines at the paper's configuration (`configuration` = "
              "`paper`) on full real data or a model build. *exact*: equal at the printed precision (a printed "
              "integer exactly; a printed decimal within half a unit of its last digit), or a stated claim that "
              "holds; *differ*: not equal (the reason is in the cell's notes); *no printed value*: the paper "
              "shows the cell only in a figure or leaves it blank; *settings*: cells that echo a configuration "
              "constant (learning rate, batch size ...): shown, never counted as reproduced; *need training "
              "(runnable here)*: a training run on this machine would fill them; *not runnable here*: training "
              "or data this machine lacks (why: last column); *cited*: another work's figures.", "",
              "| paper | table | reproduced on | published cells | exact | differ | file |",
              "|---|---|---|---|---|---|---|"]
    lines += [f"| {p} | {t} | {s} | {n_pub} | {n_exact} | {n_diff} | [tables/{stem}.md](tables/{stem}.md) |"
              for p, t, s, stem, n_pub, n_exact, n_diff in index]
    if skipped:
        lines += ["", "## Records skipped", ""] + [f"- `{s['file']}`: {s['reason']}" for s in skipped]
    return "\n".join(lines) + "\n"
