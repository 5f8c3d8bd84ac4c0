"""The experiment runner: everything a reproduction does around its own model, data and tables.

A reproduction (a package ``reproductions/<module>/``) is a subclass of :class:`Reproduction`
that supplies only what is its own: its key and configuration dataclass, its own command-line
flags, the jobs (networks, folds, backbones, models ...), how to build a job's model and datasets,
how to evaluate it, its table cells and its figures (:meth:`Reproduction.execute`). The runner
owns the rest, the same way for all five:

=====================  =====================================================================
command line           :func:`agegender.cli.build_parser` (one parser, the same flags everywhere)
                       and :meth:`Reproduction.main` (usage errors, one-line user errors)
configuration          :meth:`Reproduction.configure`: ``--seed``, ``--smoke``, the paper's flags,
                       ``--epochs``, ``--batch-size``, ``--precision``, ``--keep-duplicates-together``,
                       then every ``--set field=value`` (:func:`agegender.config.apply_overrides`)
output                 :class:`Run`: ``<out>/runs``, ``tables``, ``figures``, ``README.md``, checked
                       writable before any data is read
strategy               ``start_early`` before TensorFlow runs anything; :meth:`Run.start` makes the
                       ``tf.distribute`` strategy with the configuration's global batch
seeding                :meth:`Run.start` and :meth:`Run.seed` (per job), ``--deterministic``
precision              :meth:`Run.start` sets the dtype policy; :meth:`Run.deviations` records a
                       policy other than float32 (every paper's own) as a deviation
run record             :meth:`Run.recorder` (:class:`agegender.records.RunRecorder` with the
                       paper's names, the output folder and resume)
resume-or-train        :meth:`Run.resume_or_train`: a complete record is read back, never trained
                       again; an interrupted one continues after its last completed epoch; a
                       diverged job can be left failed while the others run
training, evaluation   :meth:`Run.fit` (:func:`agegender.training.train`), :meth:`Run.predict`,
                       :meth:`Run.checkpoint` (the best epoch's model, loaded safely)
finishing, tables      :meth:`Run.finish` (the application's :meth:`Reproduction.tables`), the
                       closing lines (tables, figures, records, time)
=====================  =====================================================================

The library does not know the applications: a reproduction hands the table generator in through
:meth:`Reproduction.tables` (``reproductions.common``); nothing here imports ``reproductions`` or
``results``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as _dt
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

from agegender.errors import TrainingDiverged


@dataclasses.dataclass(frozen=True)
class Options:
    """How a reproduction runs, as opposed to what it computes (the configuration dataclass).

    ``out``: the output root (None: the repository's ``results/``); ``fresh``: never resume;
    ``deterministic``: TensorFlow op determinism; ``strategy``: ``default`` / ``mirrored`` /
    ``multiworker``; ``tfds_dir``: read prepared TFDS data instead of the raw folder;
    ``data_kind``: label the data instead of detecting it; ``verbose``: Keras ``fit`` verbosity;
    ``log``: where progress lines go.
    """

    out: str | Path | None = None
    fresh: bool = False
    deterministic: bool = False
    strategy: str = "default"
    tfds_dir: str | Path | None = None
    data_kind: str | None = None
    verbose: int | str = 2
    log: Callable = print


def output_paths(out) -> dict:
    """``root``, ``runs``, ``tables``, ``readme`` and ``figures`` under ``out`` (None: the repository's results/)."""
    from agegender.records import DEFAULT_RUNS_DIR

    root = DEFAULT_RUNS_DIR.parent if out is None else Path(out)
    return {"root": root, "runs": root / "runs", "tables": root / "tables", "readme": root / "README.md",
            "figures": root / "figures"}


def relative(path, base) -> str:
    """``path`` relative to ``base`` (POSIX form): records name their files so, never by a machine path."""
    return Path(os.path.relpath(Path(path).resolve(), Path(base).resolve())).as_posix()


def utc_stamp() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


class Run:
    """One invocation of a reproduction: the services every paper's :meth:`Reproduction.execute` uses.

    Made by :meth:`Reproduction.run`: the ``tf.distribute`` strategy is started early (a
    multi-worker strategy must exist before TensorFlow runs anything) and the output folders are
    proved writable, all before the paper reads its data.
    """

    def __init__(self, paper: "Reproduction", options: Options):
        from agegender import atomic
        from agegender.distribute import start_early

        self.paper, self.options, self.log = paper, options, options.log
        self.t0 = time.time()
        self.stamp = utc_stamp()
        start_early(options.strategy)
        self.paths = output_paths(options.out)
        # a read-only output folder stops the run now, not after training; the folders the check made are removed
        # again, so a run that stops at its data (a one-line DataError) leaves nothing behind
        made: list[Path] = []
        for folder in (self.paths["runs"], self.paths["tables"], self.paths["figures"], self.paths["readme"].parent):
            made += [p for p in (folder, *folder.parents) if not p.exists()]
            atomic.check_writable(folder, flag="--out")
        for folder in sorted(set(made), key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                folder.rmdir()
        self.strategy = None
        self.strategy_info: dict | None = None
        self.precision: str | None = None
        self.failures: dict[str, str] = {}

    # ------------------------------------------------------------------ strategy, seeds, precision

    def start(self, *, seed: int, precision: str, batch_size: int, flag: str | None = None, strategy=None,
              why: str = "learning rate unchanged (the paper's)") -> "Run":
        """After the data are read: the strategy (``batch_size`` is the global batch, split evenly over the
        replicas; ``flag`` names the option that changes it in an error), the seeds and the dtype policy."""
        from agegender.distribute import make_strategy, strategy_config
        from agegender.training import configure_precision, seed_everything

        self.strategy = strategy if strategy is not None else make_strategy(self.options.strategy)
        self.strategy_info = strategy_config(self.options.strategy, self.strategy, batch_size, flag=flag)
        if self.strategy_info["replicas"] > 1:
            self.say(f"{self.options.strategy} strategy: {self.strategy_info['replicas']} replicas, global batch "
                     f"{batch_size} = {self.strategy_info['per_replica_batch']} per replica; {why}")
        seed_everything(seed, self.options.deterministic)
        self.precision = configure_precision(precision)
        return self

    def seed(self, seed: int) -> None:
        """Seed Python, NumPy and TensorFlow for one job (each job independent of which others run)."""
        from agegender.training import seed_everything

        seed_everything(seed, self.options.deterministic)

    def scope(self):
        """The strategy's scope to build and compile a model under (a no-op without a strategy)."""
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    def deviations(self, base: dict) -> dict:
        """``base`` (the fields that differ from the paper's configuration) with the dtype policy actually
        used when it is not float32, every paper's own precision; a requested policy is never itself one."""
        out = {k: v for k, v in (base or {}).items() if k != "precision"}
        if self.precision is not None and self.precision != "float32":
            out["precision"] = self.precision
        return out

    # ------------------------------------------------------------------ records, resume, training

    def recorder(self, experiment: str, *, config: dict, data: dict, seed: int, run_id: str | None = None,
                 new_run_id: str | None = None, preprocessing=None, deviations: dict | None = None,
                 resume: bool | None = None):
        """The run record of ``experiment``: a rerun of the same command picks up its earlier run (unless
        ``--fresh``; ``resume`` overrides), otherwise a new run (``new_run_id``, default a timestamped id)."""
        from agegender.records import RunRecorder

        return RunRecorder(self.paper.reproduction, experiment, config=config, seed=seed, data=data,
                           paper=self.paper.key, out=self.paths["runs"], run_id=run_id,
                           resume=(not self.options.fresh) if resume is None else resume, new_run_id=new_run_id,
                           preprocessing=preprocessing, deviations=deviations)

    def resume_or_train(self, recorder, title: str, *, train: Callable[[], Any], read_back: Callable[[], Any],
                        keep_going: bool = False, key: str | None = None):
        """``read_back()`` when ``recorder`` holds a complete record of the same command (nothing is trained
        again), else ``train()`` (a picked-up interrupted run continues after its last completed epoch).

        ``keep_going``: a job whose loss diverges (:class:`agegender.errors.TrainingDiverged`; its record
        is marked failed) is logged and noted in :attr:`failures` under ``key`` (default ``title``) and
        None is returned, so the other jobs still run; otherwise the error ends the command (one line).
        """
        if recorder.complete:
            self.say(f"{title}: complete record found ({recorder.record_path}); read back, not trained again "
                     "(--fresh trains again)")
            return read_back()
        if recorder.resumed:
            self.say(f"{title}: resuming the interrupted run {recorder.run_dir}")
        try:
            return train()
        except TrainingDiverged as err:
            if not keep_going:
                raise
            self.failures[key or title] = str(err)
            self.say(f"{title}: {err}")
            self.clear()
            return None

    def fit(self, model, train_ds, val_ds, *, recorder, epochs: int, **kwargs) -> tuple[list[dict], dict]:
        """:func:`agegender.training.train` with the run's verbosity: ``(history, info)``; ``info`` holds the
        training seconds (summed over the processes of a resumed run) and ``resumed_from_epoch``."""
        from agegender import training

        info: dict = {}
        history = training.train(model, train_ds, val_ds, epochs=epochs, recorder=recorder,
                                 verbose=self.options.verbose, info=info, **kwargs)
        return history, info

    @staticmethod
    def predict(model, dataset) -> tuple[dict, dict, dict]:
        """``(labels, predictions, weights)`` per output over ``dataset``
        (:func:`agegender.training.collect_predictions`)."""
        from agegender.training import collect_predictions

        return collect_predictions(model, dataset)

    @staticmethod
    def checkpoint(recorder, model):
        """The best epoch's model (``model.keras``, loaded with ``safe_mode=True``) and what it is; ``model``
        itself when no checkpoint was written (the validation loss was never finite)."""
        if recorder.model_path.is_file():
            import keras

            return keras.saving.load_model(recorder.model_path, safe_mode=True), "checkpoint"
        return model, "last weights"

    @staticmethod
    def clear() -> None:
        """Free the models of a finished job (Keras session)."""
        import keras

        keras.backend.clear_session()

    # ------------------------------------------------------------------ output

    def say(self, text: str) -> None:
        """One progress line, prefixed with the paper's key: ``[speziali] ...``."""
        self.log(f"[{self.paper.key}] {text}")

    def relative(self, path, base=None) -> str:
        """``path`` relative to ``base`` (default the output root), for a record."""
        return relative(path, self.paths["root"] if base is None else base)

    def figures_dir(self, name: str) -> Path:
        """``<out>/figures/<reproduction>/<name>``: the figures of one run id (or study)."""
        return self.paths["figures"] / self.paper.reproduction / name

    def finish(self, result: dict) -> dict:
        """Regenerate the tables (the application's :meth:`Reproduction.tables`) and complete ``result``
        with the output paths, the tables written and the seconds taken."""
        summary = self.paper.tables(self.paths) or {"tables": []}
        result.setdefault("tables_dir", self.paths["tables"])
        result.setdefault("readme", self.paths["readme"])
        result.setdefault("runs_dir", self.paths["runs"])
        result.setdefault("tables", summary.get("tables", []))
        result.setdefault("failed", dict(self.failures))
        result["seconds"] = time.time() - self.t0
        return result


class Reproduction:
    """A paper's reproduction as the runner sees it; each ``reproductions/<module>/`` subclasses it once.

    Class attributes: ``key`` (the catalogue key: tables, logs, ``make reproduce PAPER=<key>``),
    ``reproduction`` (its package under ``reproductions/`` and its record folder under ``runs/``,
    kept so committed records are read back), ``title``, ``Config`` (the frozen dataclass of its
    settings), ``smoke_out`` (where ``--smoke`` writes without ``--out``), ``data_help`` (the help
    of ``--data-dir``; None: the paper declares its own data flags in :meth:`add_arguments` and
    names them in ``data_flags``), ``duplicates`` (the protocol allows ``--keep-duplicates-together``),
    ``smoke_help``, ``fresh_help``, ``batch_help``.
    """

    key: str = ""
    reproduction: str = ""
    title: str = ""
    Config: type = type(None)
    smoke_out: Path | None = None
    data_help: str | None = "the dataset folder; required unless --tfds-dir is given"
    data_flags: str = "--data-dir"
    duplicates: bool = False
    smoke_help: str = "check the whole path fast at a tiny scale"
    fresh_help: str | None = None
    batch_help: str = ""
    epilog: str | None = None

    # ------------------------------------------------------------------ command line

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """The paper's own flags (its variant: networks, models, backbones, folds ...)."""

    def check_arguments(self, args, parser: argparse.ArgumentParser) -> None:
        """Usage errors of the parsed flags (``parser.error``); by default a data folder is required."""
        if self.data_help is not None and getattr(args, "data_dir", None) is None and \
                getattr(args, "tfds_dir", None) is None:
            parser.error("--data-dir is required (or --tfds-dir)")
        for flag in ("epochs", "batch_size"):
            value = getattr(args, flag, None)
            if value is not None and value < 1:
                parser.error(f"--{flag.replace('_', '-')} must be at least 1")

    def default(self):
        """The paper's configuration (the defaults ``--help`` shows and ``--set`` fields come from)."""
        return self.Config()

    def base_config(self, args):
        """The experiment the paper's flags select, before ``--smoke`` (default: the paper's configuration)."""
        return self.default()

    def smoke(self, cfg):
        """The ``--smoke`` configuration (``dataclasses.replace`` of ``cfg``)."""
        return cfg

    def apply_flags(self, cfg, args):
        """The paper's flags that change a setting after ``--smoke`` (weights, ``--gamma`` ...)."""
        return cfg

    def common(self, cfg, args):
        """The flags every reproduction shares, applied to one configuration: ``--epochs``, ``--batch-size``,
        ``--precision``, ``--keep-duplicates-together``, then each ``--set field=value``."""
        from agegender.config import apply_overrides

        fields = {f.name for f in dataclasses.fields(cfg)}
        changes = {}
        for flag in ("epochs", "batch_size", "precision"):
            value = getattr(args, flag, None)
            if value is not None and flag in fields:
                changes[flag] = value
        if getattr(args, "keep_duplicates_together", False):
            changes["keep_duplicates_together"] = True
        if changes:
            cfg = dataclasses.replace(cfg, **changes)
        return apply_overrides(cfg, getattr(args, "set", None))

    def configure(self, args):
        """The configuration a parsed command line asks for: the paper's selection, the seed, ``--smoke``, the
        paper's setting flags, then the shared ones (:meth:`common`)."""
        cfg = dataclasses.replace(self.base_config(args), seed=args.seed)
        if args.smoke:
            cfg = self.smoke(cfg)
        return self.common(self.apply_flags(cfg, args), args)

    def inputs(self, args) -> dict:
        """What :meth:`execute` needs besides the configuration: data folders, the jobs to run."""
        return {"data_dir": getattr(args, "data_dir", None)}

    def options(self, args) -> Options:
        if getattr(args, "tfds_dir", None) is not None:
            from agegender.backend import require_tensorflow

            require_tensorflow("--tfds-dir (prepared TFDS data)",
                               fix="pass the raw folder with --data-dir instead, or run under KERAS_BACKEND=tensorflow")
        out = args.out if args.out is not None or not args.smoke else self.smoke_out
        return Options(out=out, fresh=args.fresh, deterministic=args.deterministic, strategy=args.strategy,
                       tfds_dir=args.tfds_dir, data_kind=getattr(args, "data_kind", None),
                       verbose=getattr(args, "verbose", 2))

    def parser(self) -> argparse.ArgumentParser:
        from agegender.cli import build_parser

        return build_parser(self)

    def main(self, argv=None) -> int:
        """The command line; errors a user can fix are one ``error:`` line (:func:`agegender.cli.run_main`)."""
        from agegender.cli import run_main

        return run_main(self._main, argv)

    def _main(self, argv=None) -> int:
        parser = self.parser()
        args = parser.parse_args(argv)
        self.check_arguments(args, parser)
        early = self.before_run(args)
        if early is not None:
            return early
        result = self.run(self.configure(args), self.options(args), **self.inputs(args))
        return self.report(result)

    def before_run(self, args) -> int | None:
        """An exit status to stop with before anything runs (e.g. a ``--describe`` that only prints), or None."""
        return None

    # ------------------------------------------------------------------ the run

    def run(self, cfg, options: Options | None = None, **inputs) -> dict:
        """Run the reproduction of ``cfg`` (:meth:`execute`), regenerate the tables, return the result."""
        from agegender.distribute import start_early

        options = options or Options()
        start_early(options.strategy)  # a multi-worker strategy must exist before TensorFlow runs anything
        self.check(cfg, options, **inputs)
        run = Run(self, options)
        return run.finish(self.execute(run, cfg, **inputs))

    def check(self, cfg, options: Options, **inputs) -> None:
        """Fail before anything is written (a one-line :class:`~agegender.errors.DataError`), e.g. when
        weights cannot be had; by default nothing to check."""

    def execute(self, run: Run, cfg, **inputs) -> dict:
        """The paper's own part: read the data, plan and run its jobs through ``run``, write its records.

        Returns a dict for :meth:`report`; ``records`` ({name: record path}), ``figures_dir`` and
        ``cells`` are printed when present."""
        raise NotImplementedError

    def tables(self, paths: dict) -> dict | None:
        """Regenerate the tables from ``paths["runs"]`` (the application's table generator); None here."""
        return None

    def report(self, result: dict) -> int:
        """Print what the run wrote and return the exit status (2 when a job diverged)."""
        key = self.key
        print(f"[{key}] tables : {result['tables_dir']} ({key}__*.md), index {result['readme']}")
        if result.get("figures_dir") is not None:
            print(f"[{key}] figures: {result['figures_dir']}")
        for path in (result.get("records") or {}).values():
            print(f"[{key}] record : {path}")
        print(f"[{key}] done in {result['seconds']:.0f} s")
        for name, message in (result.get("failed") or {}).items():  # diverged jobs: their records say failed
            print(f"error: {name}: {message}", file=sys.stderr)
        return 2 if result.get("failed") else 0
