"""``python -m reproductions.facts``: write the run records of every cell that needs no training (issue 16).

See :mod:`reproductions.facts` for what is computed and the conventions.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections import Counter
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[2]
PAPERS = ("speziali", "jorgensen", "gu_yang", "dey_aggarwal", "sundriyal")


def _parser() -> argparse.ArgumentParser:
    from agegender.data.provenance import SHARED_DATA

    parser = argparse.ArgumentParser(
        prog="python -m reproductions.facts",
        description="Compute every published cell that needs no training from the real data and the model "
                    "builders, write them as run records (results/runs/facts/) and regenerate the tables. "
                    "Rerunning changes nothing.")
    parser.add_argument("--data-root", default=str(SHARED_DATA),
                        help="folder holding utkface/full, utkface/coral, adience/folds, imdb_wiki/wiki_crop and "
                             "celeba/ (default: ../shared/data beside the project); records name data relative to it")
    parser.add_argument("--out", default=str(ROOT / "results" / "runs"), help="runs folder (default: results/runs)")
    parser.add_argument("--figures", default=None,
                        help="folder for the figures (default: <out>/../figures/facts)")
    parser.add_argument("--papers", default=",".join(PAPERS), help=f"comma-separated subset of {', '.join(PAPERS)}")
    parser.add_argument("--no-tables", action="store_true", help="do not regenerate results/tables and README.md")
    return parser


def run(args) -> int:
    from agegender.errors import DataError
    from agegender.records import read_record
    from reproductions.facts.common import write_record

    root = Path(args.data_root).expanduser().resolve()
    papers = [p.strip() for p in args.papers.split(",") if p.strip()]
    unknown = sorted(set(papers) - set(PAPERS))
    if unknown:
        print(f"error: unknown paper(s) {', '.join(unknown)}; choose among {', '.join(PAPERS)}", file=sys.stderr)
        return 2
    if not root.is_dir():
        print(f"error: data root {root} not found (pass --data-root: the folder holding utkface/, adience/, "
              "imdb_wiki/ and celeba/)", file=sys.stderr)
        return 2
    os.environ["AGEGENDER_DATA_ROOT"] = str(root)  # records name the data relative to this root
    out = Path(args.out).resolve()
    figures = Path(args.figures).resolve() if args.figures else out.parent / "figures" / "facts"
    totals: dict[str, Counter] = {}
    failed = []
    for paper in papers:
        module = importlib.import_module(f"reproductions.facts.{paper}")
        for compute in module.experiments(root, figures, out):
            try:
                exp = compute()
            except (DataError, OSError) as err:  # a dataset absent from the data root: the others still run
                failed.append(paper)
                print(f"skipped part of {paper}: {err}", file=sys.stderr)
                continue
            path, written = write_record(out, exp["experiment"], paper=paper, data=exp["data"], config=exp["config"],
                                         cells=exp["cells"], metrics=exp.get("metrics"), figures=exp.get("figures"))
            statuses = Counter(c.get("status") for c in read_record(path)["cells"])
            totals.setdefault(paper, Counter()).update(statuses)
            shown = path.relative_to(out.parent) if out.parent in path.parents else path
            print(f"{'wrote    ' if written else 'unchanged'} {shown}  "
                  f"({', '.join(f'{k} {v}' for k, v in sorted(statuses.items()))})")
    for paper, counts in totals.items():
        print(f"{paper}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + " (cells, seeds counted apart)")
    if not args.no_tables:
        from results.tables import generate

        summary = generate(out, out.parent / "tables", out.parent / "README.md")
        print(f"{len(summary['tables'])} tables regenerated from {summary['records']} run records")
    if failed:
        print(f"error: some data was not found under {root} (skipped parts of: {', '.join(sorted(set(failed)))})",
              file=sys.stderr)
        return 1
    return 0


def main(argv=None) -> int:
    return run(_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
