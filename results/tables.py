"""Regenerate every results table from run records and the published-figures catalogue.

For each paper table in ``results/published/`` (and each table that only runs report, like
the demo's) this writes ``<paper>__<table>.md`` and ``.csv`` with one line per cell and data
kind:

    row | column | published | reproduced | Δ | n | data | notes

``reproduced`` is the mean ± sample std over the runs (or folds) that report the cell;
``n`` counts them; ``Δ`` is reproduced − published where both are numbers; ``data`` says
whether the runs used full real data, a real sample or generated faces (never mixed in
one line). It also writes ``results/README.md``: for every paper table, whether it has been
reproduced on real data, on a sample, on generated data, or not yet. Output depends only on
its inputs (sorted, fixed formatting), so regenerating twice gives no diff.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd

from agegender import atomic
from agegender.records import DATA_KINDS, load_records

HERE = Path(__file__).resolve().parent
COLUMNS = ["row", "column", "published", "reproduced", "delta", "n", "data", "notes"]
HEADERS = ["row", "column", "published", "reproduced", "Δ", "n", "data", "notes"]
DATA_LABEL = {"real": "full real data", "sample": "real sample", "generated": "generated faces",
              "none": "model build (no data)"}


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-")


def _natural(text: str):
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", str(text))]


def _fmt(value: float, unit: str) -> str:
    if value is None or not math.isfinite(value):
        return ""
    if unit in ("params", "count", "epochs", "pixels", "calendar-year", "degrees") and float(value).is_integer():
        return f"{int(value):,}"
    if unit in ("params", "count"):
        return f"{value:,.1f}"
    if unit in ("seconds",):
        return f"{value:.1f}"
    if unit in ("percent", "years", "epochs"):
        return f"{value:.2f}"
    return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.1f}"


def _verdict(share: float) -> str:
    """A checked claim's cells are 1 (holds) or 0 (does not hold); their mean over runs, in words."""
    if share >= 1:
        return "holds"
    if share <= 0:
        return "does not hold"
    return f"holds in {share:.0%} of runs"


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
        rows.append((cell["table"], str(cell["row"]), str(cell["column"]),
                     str(published.get((cell["table"], cell["row"], cell["column"]), "—")), text))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows)


def reproduced_cells(records: list[dict]) -> pd.DataFrame:
    """One row per (paper, table, row, column, data kind) with mean, std and n over the records."""
    rows = []
    for record in records:
        kind = (record.get("data") or {}).get("kind", "unknown")
        for cell in record.get("cells", []):
            value = cell.get("value")
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                continue
            rows.append({"paper": cell.get("paper") or record.get("paper") or record.get("reproduction"),
                         "table": cell["table"], "row": str(cell["row"]), "column": str(cell["column"]),
                         "unit": cell.get("unit", ""), "data": kind, "value": float(value),
                         "note": cell.get("note", ""), "run": record.get("_path", "")})
    if not rows:
        return pd.DataFrame(columns=["paper", "table", "row", "column", "unit", "data", "mean", "std", "n", "note"])
    frame = pd.DataFrame(rows)
    keys = ["paper", "table", "row", "column", "data"]
    grouped = frame.groupby(keys, sort=True)
    out = grouped["value"].agg(mean="mean", n="count").reset_index()
    out["std"] = grouped["value"].std(ddof=1).to_numpy()
    out["unit"] = grouped["unit"].first().to_numpy()
    out["note"] = grouped["note"].agg(lambda s: "; ".join(sorted({n for n in s if n}))).to_numpy()
    return out


def build_table(published: pd.DataFrame, reproduced: pd.DataFrame) -> pd.DataFrame:
    """Join one paper table's published cells with its reproduced cells (one line per data kind)."""
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
        rep = sorted(reps.get((row, column), []), key=lambda r: _kind_order(r["data"]))
        unit = pub["unit"] if pub else (rep[0]["unit"] if rep else "")
        pub_text = pub["value"] if pub else "—"
        pub_num = pub["value_num"] if pub else float("nan")
        pub_note = pub["note"] if pub and isinstance(pub["note"], str) else ""
        claim = pub_text == "stated"  # a conclusion the paper states: the runs say whether it holds
        if not rep:
            lines.append([row, column, pub_text, "not run" if claim else "", "", 0, "not yet", pub_note])
            continue
        for r in rep:
            if claim:
                text = _verdict(r["mean"])
            else:
                text = _fmt(r["mean"], unit)
                if r["n"] > 1 and math.isfinite(r["std"]):
                    text += f" ± {_fmt(r['std'], unit)}"
            delta = r["mean"] - pub_num if math.isfinite(pub_num) else float("nan")
            notes = "; ".join(n for n in (pub_note, r["note"]) if n)
            lines.append([row, column, pub_text, text, _fmt(delta, unit), int(r["n"]),
                          DATA_LABEL.get(r["data"], r["data"]), notes])
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
    """Write every table and the README index; return a summary (tables written, records, skipped)."""
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
    written, index = [], []
    for paper, name in tables:
        pub = published[(published["paper"] == paper) & (published["table"] == name)].reset_index(drop=True)
        rep = reproduced[(reproduced["paper"] == paper) & (reproduced["table"] == name)]
        table = build_table(pub, rep)
        stem = f"{paper}__{_slug(name)}"
        meta = PAPERS.get(paper, {})
        title = f"{meta.get('authors', paper)} — {name}" if meta else f"{paper} — {name}"
        source = (f"Paper: `{meta['file']}` ({meta.get('title', '')}); reproduction: "
                  f"`python -m reproductions.{meta.get('reproduction', '?')}`." if meta else
                  "No published figures: reproduced values only.")
        atomic.write_text(out_dir / f"{stem}.md", _markdown(title, table, source))
        with atomic.atomic_path(out_dir / f"{stem}.csv") as tmp:
            table.to_csv(tmp, index=False, lineterminator="\n")
        written.append(stem)
        kinds = set(rep["data"]) if len(rep) else set()
        status = next((DATA_LABEL[k] for k in DATA_KINDS if k in kinds), "not yet")
        index.append((paper, name, status, stem, int(len(pub)), int(rep["n"].sum()) if len(rep) else 0))
    stale = [p for p in out_dir.glob("*__*.*") if p.stem not in written and p.suffix in (".md", ".csv")]
    for path in stale:
        path.unlink()
    atomic.write_text(readme, _readme(index, skipped))
    return {"tables": written, "records": len(records), "skipped": skipped}


def _relative(path: str, base: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)


def _readme(index, skipped) -> str:
    lines = ["# Results", "",
             "Generated by `python -m results` (`make tables`) from the run records in `runs/` and the "
             "published figures in `published/`. Do not edit by hand.", "",
             "| paper | table | reproduced on | published cells | reproduced values | file |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {p} | {t} | {s} | {n_pub} | {n_rep} | [tables/{stem}.md](tables/{stem}.md) |"
              for p, t, s, stem, n_pub, n_rep in index]
    if skipped:
        lines += ["", "## Records skipped", ""] + [f"- `{s['file']}`: {s['reason']}" for s in skipped]
    return "\n".join(lines) + "\n"
