"""Sundriyal (thesis 004): learned loss weights and Early Freeze for multi-task face attributes.

The protocol, the decisions and ambiguities that explain the code, runtime and expected figures are in
README.md beside this file, which is also this package's ``__doc__`` (``python -m pydoc
reproductions.mtl_weighted_loss``).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from reproductions.common import readme_doc  # noqa: E402

__doc__ = readme_doc(__file__, __doc__)

from reproductions.mtl_weighted_loss.config import (REPRODUCTION, PAPER, ROOT, SMOKE_OUT,
    DATASETS, METHODS, BACKBONE_CHOICES, CORAL_TRAIN, CORAL_TEST, RACE_ROWS,
    LISTS_IN_RUN_FOLDER, ROW, SundriyalExperiment, smoke, thesis_backbone, backbone_label,
    methods_of, tasks_of, mtl_key, is_thesis_mtl)  # noqa: E402,F401
from reproductions.mtl_weighted_loss.paper import (deviations, load_data, _subsample,
    _coral_lists, heads_for, targets_for, make_datasets, check_backbone, build_and_compile,
    _build_and_compile, evaluate, train_one, read_back)  # noqa: E402,F401
from reproductions.mtl_weighted_loss.cells import (_row, _metric_cells, _cell, model_cells,
    _chapter5_cells, _convergence_cells, _section53_cells, dataset_cells, settings_cells,
    model_build_cells)  # noqa: E402,F401
from reproductions.mtl_weighted_loss.figures import (_plt, _save, plot_loss_weights,
    _loss_panel, plot_loss_vs_epoch, plot_freeze_comparison, plot_age_distribution)  # noqa: E402,F401
from reproductions.mtl_weighted_loss.reproduction import (Sundriyal, SUNDRIYAL, run, main,
    _parser, experiment_from_args, _other_variant, experiment_name, preprocessing, _execute,
    _model_figures, _device_name, format_cells)  # noqa: E402,F401
from reproductions.mtl_weighted_loss import extra  # noqa: E402,F401
