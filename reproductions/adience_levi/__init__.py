"""Jørgensen, Ringsted & Rajagopal: reduced Levi–Hassner CNNs, multi-task and Xception transfer on Adience.

The protocol, the decisions and ambiguities that explain the code, runtime and expected figures are in
README.md beside this file, which is also this package's ``__doc__`` (``python -m pydoc
reproductions.adience_levi``).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from reproductions.common import readme_doc  # noqa: E402

__doc__ = readme_doc(__file__, __doc__)

from reproductions.adience_levi.config import (REPRODUCTION, PAPER, RESULTS, SMOKE_OUT,
    XCEPTION_NOTOP, XCEPTION_URL, Experiment, EXPERIMENTS, MODELS, smoke)  # noqa: E402,F401
from reproductions.adience_levi.paper import (build_model, model_facts, _cell,
    check_transfer_weights, load_adience, fold_split, relative, _join, _concat,
    _hold_out_users, _levi_split, _head, TARGET_KINDS, CENTRE_NOTE, OVERSAMPLED_NOTE, LOSSES,
    split_tasks, table3_row, deviations, portable_config, record_deviations, preprocessing,
    make_datasets, compile_model)  # noqa: E402,F401
from reproductions.adience_levi.figures import (_fold_figure)  # noqa: E402,F401
from reproductions.adience_levi.reproduction import (_folds, Jorgensen, JORGENSEN, parse_args,
    experiments_from_args, main, run, _execute, run_fold, evaluate_fold, write_fold_summary,
    write_model_build_record, _print_summary)  # noqa: E402,F401
import dataclasses  # noqa: E402,F401
