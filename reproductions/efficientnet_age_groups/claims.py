"""Gu & Yang: the paper's stated conclusions, checked against the models run (the Claims table)."""

from __future__ import annotations

from reproductions.efficientnet_age_groups.config import GROUPS, LABEL, SOURCES, TASK_ROW, TASK_SETS
from reproductions.efficientnet_age_groups.paper import _cell

HOLDS, FAILS, NOT_RUN = "holds", "does not hold", "not run"
CLAIM_ROWS = {  # key -> (row, column) of the Claims table in gu_yang.csv
    "granularity": ("age classes 3 > 5 > 10", "Section 5.1"),
    "utkface_tasks": ("UTKFace three-task > single-task > two-task", "Section 5.2"),
    "multi_lowest": ("multi-source lowest", "Section 5.4"),
    "backbones_similar": ("EfficientNet-B4 to B7 similar", "Section 5.1"),
    "imdb_tasks_similar": ("IMDB-WIKI single-task ~ two-task", "Section 5.1"),
    "utkface_above_imdb": ("UTKFace > IMDB-WIKI", "Section 5.3"),
    "imbalance_10": ("IMDB-WIKI 10-class imbalance", "Section 5.1"),
    "imbalance_5": ("IMDB-WIKI 5-class imbalance", "Section 5.3"),
}


def _fmt(acc: float) -> str:
    return f"{acc:.3f}"


def _verdict(checks: list[tuple[bool, str]], what: str) -> tuple[str, str]:
    """``holds`` when every check holds; the evidence names the count and up to three exceptions."""
    if not checks:
        return NOT_RUN, f"no {what} run"
    bad = [text for ok, text in checks if not ok]
    good = len(checks) - len(bad)
    if not bad:
        return HOLDS, f"{good}/{len(checks)} {what}: " + "; ".join(t for _, t in checks[:3]) + (
            " ..." if len(checks) > 3 else "")
    return FAILS, f"{good}/{len(checks)} {what}; not: " + "; ".join(bad[:3]) + (" ..." if len(bad) > 3 else "")


PAPER_SAMPLE = 20_000  # Sec. 5.1: the sample the paper's "less than 1000 images" refers to


def evaluate_claims(results: list[dict], dists: dict, tolerance: float = 0.02) -> dict:
    """Each claim of the Claims table: ``{key: {"verdict", "evidence", "row", "column"}}``.

    ``results``: one dict per model with ``source``, ``backbone``, ``task_set``, ``groups`` and
    ``accuracy`` (validation age accuracy). ``dists``: ``{dataset: {groups: {label: count}}}``.
    """
    acc = {(r["source"], r["backbone"], r["task_set"], r["groups"]): float(r["accuracy"]) for r in results}
    keys = sorted(acc, key=lambda k: (SOURCES.index(k[0]), k[1], list(TASK_SETS).index(k[2]), k[3]))
    out = {}

    checks = []  # accuracy falls with finer groups, for every (source, backbone, task set) with >= 2 group counts
    for combo in dict.fromkeys(k[:3] for k in keys):
        values = [(n, acc[(*combo, n)]) for n in GROUPS if (*combo, n) in acc]
        if len(values) >= 2:
            ok = all(a > b for (_, a), (_, b) in zip(values, values[1:]))
            checks.append((ok, f"{LABEL[combo[0]]} {combo[1].upper()} {TASK_ROW[combo[2]]} "
                               + " > ".join(f"{n}: {_fmt(a)}" for n, a in values)))
    out["granularity"] = _verdict(checks, "models with two or more group counts")

    checks = []  # UTKFace: age+gender+race > age > age+gender
    for backbone, n in dict.fromkeys((k[1], k[3]) for k in keys if k[0] == "utkface"):
        trio = [acc.get(("utkface", backbone, t, n)) for t in ("age+gender+race", "age", "age+gender")]
        if None not in trio:
            checks.append((trio[0] > trio[1] > trio[2], f"{backbone.upper()} {n} groups: three {_fmt(trio[0])}, "
                                                        f"single {_fmt(trio[1])}, two {_fmt(trio[2])}"))
    out["utkface_tasks"] = _verdict(checks, "UTKFace backbone/group settings with all three task sets")

    checks = []  # multi-source below every single-source model of the same backbone and groups
    for backbone, n in dict.fromkeys((k[1], k[3]) for k in keys if k[0] == "multi"):
        multi = acc[("multi", backbone, "age+gender+race", n)]
        others = {k: v for k, v in acc.items() if k[0] != "multi" and k[1] == backbone and k[3] == n}
        if others:
            best_low = min(others, key=others.get)
            checks.append((multi < min(others.values()),
                           f"{backbone.upper()} {n} groups: multi {_fmt(multi)} vs lowest other "
                           f"{_fmt(others[best_low])} ({LABEL[best_low[0]]} {TASK_ROW[best_low[2]]})"))
    out["multi_lowest"] = _verdict(checks, "backbone/group settings with multi-source and another source")

    checks = []  # backbones similar: spread <= tolerance for every (source, task set, groups) with >= 2 backbones
    for source, task_set, n in dict.fromkeys((k[0], k[2], k[3]) for k in keys):
        values = {k[1]: v for k, v in acc.items() if (k[0], k[2], k[3]) == (source, task_set, n)}
        if len(values) >= 2:
            spread = max(values.values()) - min(values.values())
            checks.append((spread <= tolerance, f"{LABEL[source]} {TASK_ROW[task_set]} {n} groups spread "
                                                f"{_fmt(spread)}"))
    out["backbones_similar"] = _verdict(checks, f"settings with two or more backbones (spread <= {tolerance:g})")

    checks = []  # IMDB-WIKI age ~ age+gender
    for backbone, n in dict.fromkeys((k[1], k[3]) for k in keys if k[0] == "imdb_wiki"):
        a, b = acc.get(("imdb_wiki", backbone, "age", n)), acc.get(("imdb_wiki", backbone, "age+gender", n))
        if a is not None and b is not None:
            checks.append((abs(a - b) <= tolerance, f"{backbone.upper()} {n} groups: age {_fmt(a)}, "
                                                    f"age-gender {_fmt(b)}"))
    out["imdb_tasks_similar"] = _verdict(checks, f"IMDB-WIKI settings with both task sets (|diff| <= {tolerance:g})")

    checks = []  # UTKFace above IMDB-WIKI for the same backbone, task set and groups
    for backbone, task_set, n in dict.fromkeys((k[1], k[2], k[3]) for k in keys if k[0] == "utkface"):
        imdb = acc.get(("imdb_wiki", backbone, task_set, n))
        if imdb is not None:
            utk = acc[("utkface", backbone, task_set, n)]
            checks.append((utk > imdb, f"{backbone.upper()} {TASK_ROW[task_set]} {n} groups: UTKFace {_fmt(utk)}, "
                                       f"IMDB-WIKI {_fmt(imdb)}"))
    out["utkface_above_imdb"] = _verdict(checks, "settings run on both datasets")

    imdb = dists.get("imdb_wiki") or {}
    if imdb.get(10):
        total = sum(imdb[10].values())
        limit = 1000 * total / PAPER_SAMPLE  # "less than 1000 images" of the paper's 20,000, scaled to this sample
        small = {label: imdb[10][label] for label in ("1-8", "9-16", "65-72")}
        ok = all(v < limit for v in small.values())
        text = ", ".join(f"{k}: {v:,}" for k, v in small.items()) + f" (limit {limit:,.0f} of {total:,})"
        out["imbalance_10"] = (HOLDS if ok else FAILS, text)
    else:
        out["imbalance_10"] = (NOT_RUN, "IMDB-WIKI not read")
    if imdb.get(5):
        total = max(sum(imdb[5].values()), 1)
        mid, young = imdb[5]["24-39"] / total, imdb[5]["1-11"] / total
        ok = 0.4 <= mid <= 0.6 and young < 0.02
        out["imbalance_5"] = (HOLDS if ok else FAILS, f"24-39: {100 * mid:.1f}% (40-60% counts as half), "
                                                      f"1-11: {100 * young:.1f}% (below 2% counts as ~1%)")
    else:
        out["imbalance_5"] = (NOT_RUN, "IMDB-WIKI not read")
    return {key: {"verdict": verdict, "evidence": evidence, "row": CLAIM_ROWS[key][0], "column": CLAIM_ROWS[key][1]}
            for key, (verdict, evidence) in out.items()}


def claim_cells(claims: dict, note: str) -> list[dict]:
    """Claims rows: 1 = holds, 0 = does not hold (evidence in the note); a claim not run gets no cell."""
    cells = []
    for claim in claims.values():
        if claim["verdict"] == NOT_RUN:
            continue
        text = f"{claim['verdict']}: {claim['evidence']}" + (f"; {note}" if note else "")
        cells.append(_cell("Claims", claim["row"], claim["column"], 1.0 if claim["verdict"] == HOLDS else 0.0,
                           "scalar", text))
    return cells


def claims_markdown(claims: dict, study: str) -> str:
    lines = [f"# Gu & Yang: the paper's claims, checked (study {study})", "",
             "| claim | section | verdict | evidence |", "|---|---|---|---|"]
    lines += [f"| {c['row']} | {c['column']} | {c['verdict']} | {c['evidence'].replace('|', '/')} |"
              for c in claims.values()]
    return "\n".join(lines) + "\n"
