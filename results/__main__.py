"""``python -m results``: regenerate results/tables/*.md|csv and results/README.md from run records."""

from __future__ import annotations

import argparse
import sys

from agegender.errors import DataError


def _reports(args) -> None:
    """The per-paper comparisons written next to the tables (``results/speziali.md``, ``results/dey_aggarwal.md``)."""
    from pathlib import Path

    from results.dey_aggarwal import write_report as write_dey_aggarwal
    from results.speziali import write_report

    here = Path(__file__).resolve().parent
    runs = Path(args.runs) if args.runs else here / "runs"
    published = Path(args.published) if args.published else here / "published"
    out = (Path(args.readme).parent if args.readme else here) / "speziali.md"
    write_report(runs, published / "speziali.csv", out)
    write_dey_aggarwal(runs, published / "dey_aggarwal.csv", out.parent / "dey_aggarwal.md")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m results",
        description="Regenerate every results table from run records (record.json) and the published "
                    "figures catalogue (results/published/*.csv). Deterministic: running it twice gives no diff.")
    parser.add_argument("--runs", default=None, help="folder searched recursively for record.json (default: results/runs)")
    parser.add_argument("--out", default=None, help="folder for the generated .md/.csv tables (default: results/tables)")
    parser.add_argument("--readme", default=None, help="index file to write (default: results/README.md)")
    parser.add_argument("--published", default=None, help="published-figures folder (default: results/published)")
    args = parser.parse_args(argv)
    from results.tables import generate

    try:
        summary = generate(args.runs, args.out, args.readme, args.published)
        _reports(args)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a read-only --out / --readme folder, a full disk ...
        from agegender.cli import os_error_line

        print(f"error: {os_error_line(err)}", file=sys.stderr)
        return 2
    for item in summary["skipped"]:
        print(f"skipped {item['file']}: {item['reason']}", file=sys.stderr)
    print(f"{len(summary['tables'])} tables from {summary['records']} run records "
          f"({len(summary['skipped'])} skipped)")
    hint = smoke_hint(args.runs, summary["records"])
    if hint:
        print(hint)
    return 0


def smoke_hint(runs, found: int, cwd=None) -> str | None:
    """A note when smoke runs exist that this command did not read: ``--smoke`` writes under
    ``build/smoke/<reproduction>/`` (not results/runs) unless given ``--out``; None when there are none."""
    from pathlib import Path

    smoke = Path(cwd or ".") / "build" / "smoke"
    if not smoke.is_dir():
        return None
    runs_dir = Path(runs).resolve() if runs else None
    if runs_dir is not None and (runs_dir == smoke.resolve() or smoke.resolve() in runs_dir.parents):
        return None
    records = sum(1 for _ in smoke.glob("*/runs/**/record.json"))
    if not records:
        return None
    command = f"python -m results --runs {smoke} --out {smoke}/tables --readme {smoke}/README.md"
    if not found:
        return (f"note: no run record where this looked, but {records} smoke-run record(s) are under {smoke} "
                f"(--smoke writes there); their tables: {command}")
    return f"note: the {records} smoke-run record(s) under {smoke} are not in these tables (--smoke writes there); {command}"


if __name__ == "__main__":
    sys.exit(main())
