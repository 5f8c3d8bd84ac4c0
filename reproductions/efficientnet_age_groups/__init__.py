"""Gu & Yang (paper 002): EfficientNet B4-B7, age granularity (3/5/10 groups), task sets and multi-source data.

The protocol, the decisions and ambiguities that explain the code, runtime and expected figures are in
README.md beside this file, which is also this package's ``__doc__`` (``python -m pydoc
reproductions.efficientnet_age_groups``).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from reproductions.common import readme_doc  # noqa: E402

__doc__ = readme_doc(__file__, __doc__)

from reproductions.efficientnet_age_groups.config import (REPRODUCTION, PAPER, SMOKE_OUT,
    SOURCES, DATASETS, TASK_SETS, SOURCE_TASK_SETS, TASK_ROW, LABEL, GROUPS, AGE_COLUMN,
    TRAINING_FIELDS_EXCLUDED, GuYangExperiment, smoke, ModelSpec, plan)  # noqa: E402,F401
from reproductions.efficientnet_age_groups.paper import (load_dataset, distribution,
    model_frame, make_datasets, heads, metric_key, compile_model, build_model, check_weights,
    evaluate, deviations, _cell, model_cells, data_cells)  # noqa: E402,F401
from reproductions.efficientnet_age_groups.claims import (HOLDS, FAILS, NOT_RUN, CLAIM_ROWS,
    _fmt, _verdict, PAPER_SAMPLE, evaluate_claims, claim_cells, claims_markdown)  # noqa: E402,F401
from reproductions.efficientnet_age_groups.figures import (_plt, _save, bar_figure,
    study_figures)  # noqa: E402,F401
from reproductions.efficientnet_age_groups.reproduction import (_list, GuYang, GU_YANG, run,
    main, _parser, _needed, training_config, record_deviations, study_key, _combined_kind,
    collect_study, preprocessing, _execute, train_model, write_study, _checked_strategy,
    get_label)  # noqa: E402,F401
