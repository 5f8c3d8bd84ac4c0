"""The one command line of the reproductions: the same flags mean the same thing everywhere.

- :func:`build_parser` builds a reproduction's parser once: its data folder (``--data-dir``,
  or the paper's own data flags), its own variant flags, then the shared ones of
  :func:`add_experiment_arguments` (``--seed``, ``--smoke``, ``--out``, ``--epochs``,
  ``--batch-size`` = images per update, ``--precision``, ``--data-kind``, ``--verbose``,
  ``--set field=value`` for any field of the paper's configuration dataclass) and
  :func:`add_run_arguments`.
- :func:`add_run_arguments` adds ``--fresh``, ``--deterministic``, ``--strategy``,
  ``--tfds-dir`` and, where the paper's split protocol allows it, ``--keep-duplicates-together``.
- :func:`read_samples` reads a dataset either from its raw folder (the readers of
  :mod:`agegender.data`) or, with ``--tfds-dir``, from the TFDS data that
  ``python -m agegender.data prepare ...`` wrote (:mod:`agegender.data.prepared`).
- :func:`run_main` runs a reproduction's main function
  and turns the errors a user can fix into one line on stderr and an exit status: a
  :class:`~agegender.errors.DataError` (bad or missing data, a diverged loss, a setting the
  ``--strategy`` cannot run) or an ``OSError`` -> ``error: ...``, status 2; Ctrl-C -> a line
  saying that rerunning the same command resumes the run, status 130. Anything else is a bug
  and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys

from agegender.distribute import STRATEGIES, STRATEGY_HELP
from agegender.errors import DataError

EXIT_DATA_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C
FRESH_HELP = ("start new runs; by default rerunning the same command (same data, options and seed) resumes it: "
              "models with a complete record are read back, an interrupted one continues after its last completed "
              "epoch")
DETERMINISTIC_HELP = ("TensorFlow op determinism with the fixed --seed: two runs with the same seed on the same "
                      "device give the same samples, splits and losses (slower on a GPU)")
PREPARE_COMMAND = "python -m agegender.data prepare ..."
KEEP_DUPLICATES_HELP = ("keep byte-identical image files in one split: the real UTKFace holds 375 groups of identical "
                        "files (the same photo saved under several names, some with different labels), and a "
                        "random split puts most of those groups partly in training and partly in validation or "
                        "test. With this flag each group goes whole to the split most of its files fall in (a tie: "
                        "the split of its first file in the protocol's seeded order); counts then differ slightly "
                        "from the paper's. Default: the paper's split, which does not look at file contents. The "
                        "record says which was used (config and split info) and runs with the flag get rows of "
                        "their own in the tables")


def add_run_arguments(parser: argparse.ArgumentParser, *, fresh_help: str | None = None, data_flag: str = "--data-dir",
                      tfds: bool = True, duplicates: bool = False) -> argparse.ArgumentParser:
    """Add ``--fresh``, ``--deterministic``, ``--strategy``, (``tfds``) ``--tfds-dir`` and (``duplicates``)
    ``--keep-duplicates-together`` to ``parser``.

    ``fresh_help`` replaces the generic help text (a reproduction says what "a run" is for it:
    folds, networks, backbones ...); ``data_flag`` names the raw-data
    option(s) that ``--tfds-dir`` replaces. ``duplicates``: the reproduction passes
    ``args.keep_duplicates_together`` to :func:`agegender.data.splits.make_split` (and into its
    experiment, so such runs get their own records and rows); a reproduction that does not
    leaves it off, so the flag is never accepted and ignored. Returns the parser.
    """
    parser.add_argument("--fresh", action="store_true", help=fresh_help or FRESH_HELP)
    parser.add_argument("--deterministic", action="store_true", help=DETERMINISTIC_HELP)
    parser.add_argument("--strategy", choices=STRATEGIES, default="default", help=STRATEGY_HELP)
    if tfds:
        parser.add_argument("--tfds-dir", default=None, metavar="DIR",
                            help=f"read the dataset from TFDS data prepared by `{PREPARE_COMMAND}` instead of the raw "
                                 f"folder in {data_flag} (the TFDS data_dir given to prepare)")
    if duplicates:
        parser.add_argument("--keep-duplicates-together", action="store_true", help=KEEP_DUPLICATES_HELP)
    return parser


def build_parser(paper) -> argparse.ArgumentParser:
    """The parser of ``python -m reproductions.<module>`` for ``paper`` (an :class:`agegender.experiment.Reproduction`):
    ``--data-dir`` (unless the paper declares its own data flags), the paper's own flags, the shared experiment
    flags (:func:`add_experiment_arguments`) and the run flags (:func:`add_run_arguments`)."""
    parser = argparse.ArgumentParser(
        prog=f"python -m reproductions.{paper.reproduction}", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=f"{paper.title} Writes run records, figures and the tables regenerated next to the published "
                    f"values (results/tables/{paper.key}__*.md).",
        epilog=paper.epilog or ("Decisions, runtime and expected figures: python -m pydoc "
                                f"reproductions.{paper.reproduction}"))
    if paper.data_help is not None:
        parser.add_argument("--data-dir", default=None, metavar="DIR", help=paper.data_help)
    paper.add_arguments(parser)
    add_experiment_arguments(parser, paper.default(), smoke_help=paper.smoke_help, batch_help=paper.batch_help,
                             smoke_out=paper.smoke_out)
    add_run_arguments(parser, fresh_help=paper.fresh_help, data_flag=paper.data_flags, duplicates=paper.duplicates)
    return parser


def add_experiment_arguments(parser: argparse.ArgumentParser, default, *, smoke_help: str = "",
                             batch_help: str = "", smoke_out=None) -> argparse.ArgumentParser:
    """``--seed``, ``--smoke``, ``--out``, ``--epochs``, ``--batch-size``, ``--precision``, ``--data-kind``,
    ``--verbose`` and ``--set`` for a configuration dataclass like ``default`` (the paper's settings)."""
    import dataclasses

    from agegender.training import PRECISION_HELP, PRECISIONS

    fields = [f.name for f in dataclasses.fields(default)]
    parser.add_argument("--seed", type=int, default=getattr(default, "seed", 0), metavar="S",
                        help=f"seed of the split, the shuffling, the augmentation and the initial weights (default "
                             f"{getattr(default, 'seed', 0)}); each seed is a repetition, never a deviation")
    where = f"; writes under {_shown(smoke_out)} unless --out is given" if smoke_out is not None else ""
    parser.add_argument("--smoke", action="store_true",
                        help=f"{smoke_help or 'check the whole path fast at a tiny scale'}{where}; its records carry "
                             "the smoke settings as deviations (rows of their own)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="output root: records in DIR/runs, tables in DIR/tables, index DIR/README.md, figures in "
                             "DIR/figures (default: the repository's results/" + (", or the --smoke folder" if
                                                                                  smoke_out is not None else "") + ")")
    if "epochs" in fields:
        parser.add_argument("--epochs", type=int, default=None, metavar="N",
                            help=f"maximum epochs (default {default.epochs}, the paper's or our stated choice; "
                                 "another value is recorded as a deviation)")
    if "batch_size" in fields:
        parser.add_argument("--batch-size", type=int, default=None, metavar="N",
                            help=f"images per update, the global batch (default {default.batch_size}"
                                 f"{'; ' + batch_help if batch_help else ''}); with --strategy mirrored/multiworker "
                                 "each replica gets batch/replicas images; another value is recorded as a deviation")
    if "precision" in fields:
        parser.add_argument("--precision", choices=PRECISIONS, default=None,
                            help=f"Keras dtype policy (default {default.precision}: {PRECISION_HELP}); the policy "
                                 "used is in each record's config, and one other than float32 (every paper's own) is "
                                 "recorded as a deviation")
    parser.add_argument("--data-kind", choices=("real", "sample", "generated"), default=None,
                        help="label the data in records and tables; default: detected (generated faces carry a "
                             "marker file; fewer than 90%% of the dataset's files count as a sample)")
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=2,
                        help="Keras fit verbosity: 0 silent, 1 progress bar, 2 one line per epoch (default)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override any field of the paper's configuration (repeatable), e.g. --set "
                             f"{_example(default)}; the run is recorded as deviating from the paper and gets its own "
                             "table rows. Fields: " + ", ".join(fields))
    return parser


def _shown(path) -> str:
    from pathlib import Path

    path = Path(path)
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def _example(default) -> str:
    import dataclasses

    floats = [f.name for f in dataclasses.fields(default) if isinstance(getattr(default, f.name), float)]
    rates = [name for name in floats if name.startswith("lr") or "learning_rate" in name]
    for name in rates + floats:
        return f"{name}={getattr(default, name) * 0.1:g}"
    return "seed=1"


def read_samples(source: str, data_dir=None, tfds_dir=None, *, columns=(), **reader_options):
    """The :class:`~agegender.data.samples.Samples` of ``source`` (utkface, adience, celeba, imdb_wiki).

    Without ``tfds_dir``: the raw reader on ``data_dir`` with ``reader_options`` (e.g.
    ``keep_duplicates=True`` for Adience); then every image present is checked as training checks
    it (:func:`agegender.data.audit.drop_unusable_images`: empty, HTML, truncated, too large ...),
    and the unusable ones leave the frame for ``skipped``, so that the split, ``split.csv`` and the
    counts in the record hold what is trained on; a folder without one usable image is a one-line
    :class:`DataError`. Rows whose image is absent (``Samples.missing``) stay, as the readers
    leave them, for the caller. With ``tfds_dir``: the prepared data,
    ``agegender.data.prepared.read_prepared(source, tfds_dir)``; the reader options then do not
    apply (they were fixed when the data were prepared). ``columns``: extra columns the caller
    needs (``fold``, CelebA attributes ...); prepared data without them is a one-line
    :class:`DataError`.
    """
    if tfds_dir is None:
        if data_dir is None:
            raise DataError(f"no {source} data given",
                            fix=f"pass the raw dataset folder (--data-dir DIR) or the prepared TFDS data (--tfds-dir "
                                f"DIR, from `{PREPARE_COMMAND}`)")
        from agegender.data.audit import drop_unusable_images, read_dataset

        return drop_unusable_images(read_dataset(source, data_dir, **reader_options), require=True)
    try:
        from agegender.data.prepared import read_prepared
    except ModuleNotFoundError as err:
        if err.name not in ("agegender.data.prepared",):
            raise
        raise DataError("this installation cannot read prepared TFDS data (agegender.data.prepared is absent)",
                        path=tfds_dir, fix="read the raw folder with --data-dir instead") from None
    samples = read_prepared(source, tfds_dir)
    missing = [c for c in columns if c not in samples.frame.columns]
    if missing:
        raise DataError(f"the prepared {source} data lack the column(s) {', '.join(missing)} this reproduction needs",
                        path=tfds_dir, fix=f"prepare it again with `{PREPARE_COMMAND}`, or read the raw folder "
                                           "(--data-dir)")
    return samples


def run_main(fn, argv=None) -> int:
    """``fn(argv)`` with the user-fixable errors turned into one line and an exit status (module docstring)."""
    try:
        return fn(argv)
    except DataError as err:  # includes TrainingDiverged and distribute.StrategyError
        print(f"error: {err}", file=sys.stderr)
        return EXIT_DATA_ERROR
    except OSError as err:  # a file or folder the readers did not foresee (permissions, disk full ...)
        print(f"error: {os_error_line(err)}", file=sys.stderr)
        return EXIT_DATA_ERROR
    except KeyboardInterrupt:
        print("\ninterrupted: rerun the same command to resume (runs with a complete record are read back, the "
              "interrupted one continues after its last completed epoch; --fresh starts over)", file=sys.stderr)
        return EXIT_INTERRUPTED


def os_error_line(err: OSError) -> str:
    """``<file>: <what> — fix: <how>`` for an ``OSError`` no reader foresaw (one line, no traceback)."""
    import errno

    where = f"{err.filename}: " if getattr(err, "filename", None) else ""
    what = (err.strerror or str(err) or type(err).__name__).splitlines()[0]
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = ("make it writable (an output) or readable (an input) for this user, or choose another output folder "
               "(--out)")
    elif err.errno == errno.ENOSPC:
        fix = "free disk space, or choose an output folder on another disk (--out)"
    else:
        fix = "check that the path exists, is readable (and the output folder writable) and the disk has space"
    return f"{where}{what} — fix: {fix}"
