"""``python -m reproductions <key> [options]``: the reproduction of a paper by its catalogue key.

``python -m reproductions speziali --data-dir DIR`` is ``python -m reproductions.utkface_dual_cnn --data-dir DIR``;
``python -m reproductions`` alone lists the keys.
"""

from __future__ import annotations

import importlib
import sys

from reproductions import papers


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    PAPERS = papers()
    if not argv or argv[0] in ("-h", "--help", "--list"):
        print("usage: python -m reproductions KEY [options]   (python -m reproductions KEY --help for the options)")
        for key, package in PAPERS.items():
            print(f"  {key:<13} python -m reproductions.{package}")
        return 0 if argv else 2
    key, rest = argv[0], argv[1:]
    if key not in PAPERS:
        print(f"error: unknown paper {key!r} — fix: choose one of {', '.join(PAPERS)}", file=sys.stderr)
        return 2
    return importlib.import_module(f"reproductions.{PAPERS[key]}").main(rest)


if __name__ == "__main__":
    sys.exit(main())
