"""One runner, one command line, one name per paper (issue 19 items 1, 3 and 6), for the five reproductions.

- each package holds one :class:`agegender.experiment.Reproduction` whose key is the catalogue's and whose record
  folder is its package; ``python -m reproductions <key>`` and ``make reproduce PAPER=<key>`` reach it;
- the shared flags exist in every reproduction with one meaning (``--batch-size`` = images per update, the same
  ``--precision`` choices, ``--set``, ``--keep-duplicates-together`` ...), and a ``--set`` override or a precision
  other than float32 is recorded as a deviation.
"""

from __future__ import annotations

import importlib
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from agegender.experiment import Options, Reproduction, Run
from agegender.training import PRECISIONS
from reproductions import papers
from results.catalogue import PAPERS

ROOT = Path(__file__).resolve().parents[1]
SHARED = ("--out", "--seed", "--smoke", "--epochs", "--batch-size", "--precision", "--set", "--data-kind", "--verbose",
          "--fresh", "--deterministic", "--strategy", "--tfds-dir", "--keep-duplicates-together")
REQUIRED = {"sundriyal": ["--dataset", "utkface"]}  # a paper's own required flag
DATA = {"gu_yang": ["--utkface", "d"]}


def _paper(key: str) -> Reproduction:
    module = importlib.import_module(f"reproductions.{papers()[key]}")
    found = {id(v): v for v in vars(module).values() if isinstance(v, Reproduction)}
    assert len(found) == 1, key
    return next(iter(found.values()))


def _args(key: str, *extra: str):
    paper = _paper(key)
    parser = paper.parser()
    args = parser.parse_args([*REQUIRED.get(key, []), *DATA.get(key, ["--data-dir", "d"]), *extra])
    paper.check_arguments(args, parser)
    return paper, args


def test_one_name_per_paper():
    assert set(papers()) == set(PAPERS) == {"speziali", "jorgensen", "gu_yang", "dey_aggarwal", "sundriyal"}
    for key, package in papers().items():
        paper = _paper(key)
        assert (paper.key, paper.reproduction) == (key, package)
        assert importlib.import_module(f"reproductions.{package}.config").PAPER == key
        assert (ROOT / "reproductions" / package / "README.md").is_file()


@pytest.mark.parametrize("key", sorted(PAPERS))
def test_every_reproduction_takes_the_shared_flags_with_one_meaning(key, capsys):
    paper = _paper(key)
    parser = paper.parser()
    flags = {flag: action for action in parser._actions for flag in action.option_strings}
    assert set(SHARED) <= set(flags), set(SHARED) - set(flags)
    assert tuple(flags["--precision"].choices) == PRECISIONS
    assert "images per update" in flags["--batch-size"].help
    assert flags["--set"].default == [] and "deviating" in flags["--set"].help
    _, args = _args(key, "--batch-size", "8", "--precision", "mixed_bfloat16", "--keep-duplicates-together",
                    "--epochs", "3", "--seed", "4")
    configs = paper.configure(args)
    for cfg in configs if isinstance(configs, list) else [configs]:
        assert (cfg.batch_size, cfg.precision, cfg.keep_duplicates_together, cfg.epochs, cfg.seed) == \
            (8, "mixed_bfloat16", True, 3, 4)


# the function each paper's records take their deviations from, on one configuration
DEVIATIONS = {
    "speziali": lambda m, cfg: m.run_deviations(cfg, "float32"),
    "jorgensen": lambda m, cfg: m.record_deviations(cfg, "folds"),
    "gu_yang": lambda m, cfg: m.record_deviations(cfg),
    "dey_aggarwal": lambda m, cfg: m.record_deviations(cfg),
    "sundriyal": lambda m, cfg: m.extra.record_deviations(cfg, _thesis_choice(cfg), m.SundriyalExperiment),
}
OVERRIDE = {"speziali": ("lr_dual", 0.001), "jorgensen": ("learning_rate", 0.001), "gu_yang": ("learning_rate", 0.01),
            "dey_aggarwal": ("learning_rate", 0.01), "sundriyal": ("learning_rate", 0.001)}


def _thesis_choice(cfg):
    from agegender.models.face_resnets import BackboneChoice

    return BackboneChoice(cfg.backbone, cfg.backbone, "weights.h5", False, "the thesis's backbone")


@pytest.mark.parametrize("key", sorted(PAPERS))
def test_a_set_override_is_recorded_as_a_deviation(key):
    module = importlib.import_module(f"reproductions.{papers()[key]}")
    field, value = OVERRIDE[key]
    paper, plain = _args(key)
    paper, changed = _args(key, "--set", f"{field}={value}")
    base, override = paper.configure(plain), paper.configure(changed)
    base, override = (base[0], override[0]) if isinstance(base, list) else (base, override)
    assert getattr(override, field) == value != getattr(base, field)
    assert field not in DEVIATIONS[key](module, base)
    assert DEVIATIONS[key](module, override)[field] == value


def test_the_precision_used_is_a_deviation_unless_float32(tmp_path):
    run = Run(_paper("speziali"), Options(out=tmp_path / "out"))
    run.precision = "float32"
    assert run.deviations({"epochs": 1, "precision": "auto"}) == {"epochs": 1}  # a requested policy is not one
    run.precision = "mixed_bfloat16"
    assert run.deviations({"epochs": 1}) == {"epochs": 1, "precision": "mixed_bfloat16"}
    assert not (tmp_path / "out").exists()  # checked writable, nothing left behind before data are read


def test_python_m_reproductions_runs_a_paper_by_its_key(capsys):
    from reproductions.__main__ import main

    with pytest.raises(SystemExit) as exit_:
        main(["jorgensen", "--help"])
    assert exit_.value.code == 0 and "python -m reproductions.adience_levi" in capsys.readouterr().out
    assert main(["nope"]) == 2 and "choose one of speziali" in capsys.readouterr().err
    assert main([]) == 2
    listing = capsys.readouterr().out
    assert all(f"{key} " in listing for key in PAPERS)


def test_make_reproduce_paper_runs_the_papers_own_target(tmp_path):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    from tests.helpers import echo_python

    stub, log = echo_python(tmp_path)
    # the sub-make of the paper's target runs its install prerequisite: a stamp of its own and no Python keep the
    # project's .venv untouched
    safe = [f"PY={stub}", "PYTHON=true", f"STAMP={tmp_path / 'stamp'}"]
    for key, package in papers().items():
        log.write_text("")
        subprocess.run(["make", "-s", "reproduce", f"PAPER={key}", *safe, "DATA_DIR=/d", "IMDB_WIKI=/i", "UTKFACE=/u",
                        "ARGS=--smoke --seed 3"], cwd=ROOT, check=True, capture_output=True, timeout=60)
        calls = [shlex.split(line) for line in log.read_text().splitlines() if "-m" in line]
        calls = [c for c in calls if c[:2] == ["-m", f"reproductions.{package}"]]
        assert calls and all("--smoke" in c and c[c.index("--seed") + 1] == "3" for c in calls), (key, calls)
    bad = subprocess.run(["make", "-s", "reproduce", "PAPER=nope", *safe], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode != 0 and "PAPER=<key>" in bad.stdout + bad.stderr


def test_the_runner_reads_back_resumes_or_trains_and_keeps_going_after_a_divergence(tmp_path):
    """Run.resume_or_train, which every reproduction's jobs go through."""
    import types

    from agegender.errors import TrainingDiverged

    lines: list[str] = []
    run = Run(_paper("gu_yang"), Options(out=tmp_path / "out", log=lines.append))
    complete = types.SimpleNamespace(complete=True, resumed=True, record_path="r.json", run_dir="run")
    running = types.SimpleNamespace(complete=False, resumed=True, record_path="r.json", run_dir="run")
    new = types.SimpleNamespace(complete=False, resumed=False, record_path="r.json", run_dir="run")
    never = lambda: pytest.fail("trained a complete run")  # noqa: E731

    assert run.resume_or_train(complete, "a", train=never, read_back=lambda: "read") == "read"
    assert "[gu_yang] a: complete record found (r.json); read back, not trained again" in lines[-1]
    assert run.resume_or_train(running, "b", train=lambda: "trained", read_back=never) == "trained"
    assert lines[-1] == "[gu_yang] b: resuming the interrupted run run"

    def diverge():
        raise TrainingDiverged("training diverged: the loss became nan at epoch 1")

    assert run.resume_or_train(new, "c", train=diverge, read_back=never, keep_going=True, key="m") is None
    assert run.failures == {"m": "training diverged: the loss became nan at epoch 1"}
    with pytest.raises(TrainingDiverged):
        run.resume_or_train(new, "d", train=diverge, read_back=never)
