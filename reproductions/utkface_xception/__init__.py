"""Dey & Aggarwal (paper 003): age, ethnicity and gender from UTKFace with six transfer-learning backbones.

The protocol, the decisions and ambiguities that explain the code, runtime and expected figures are in
README.md beside this file, which is also this package's ``__doc__`` (``python -m pydoc
reproductions.utkface_xception``).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from reproductions.common import readme_doc  # noqa: E402

__doc__ = readme_doc(__file__, __doc__)

from reproductions.utkface_xception.config import (REPRODUCTION, PAPER, BACKBONE_ORDER,
    SPLIT_TABLES, RACE_LABELS, GENDER_LABELS, TASK_LABELS, SMOKE_OUT, DUPLICATES_VARIANT,
    DUPLICATES_NOTE, PAPER_DUPLICATES_NOTE, DeyExperiment, smoke, image_size, parse_weights)  # noqa: E402,F401
from reproductions.utkface_xception.paper import (variant, table_row, experiment_name,
    protocol_name, paper_setting, record_deviations, experiment_config, deviations, load_split,
    heads, targets, make_datasets, build_model, _build_model, cross_entropy, split_metrics,
    evaluate, _cell, result_cells, model_cells, protocol_cells, preprocessing)  # noqa: E402,F401
from reproductions.utkface_xception.figures import (_plt, _save, _describe, prediction_grid,
    plot_predictions, plot_history, draw_figures)  # noqa: E402,F401
from reproductions.utkface_xception.reproduction import (DeyAggarwal, DEY, run, main, _parser,
    _relative_paths, _execute, run_backbone, TABLE_COLUMNS, format_tables)  # noqa: E402,F401
from agegender.errors import TrainingDiverged  # noqa: E402,F401
