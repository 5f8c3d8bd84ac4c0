"""Speziali (paper 000): one dual-task CNN vs two single-task CNNs for age and gender on UTKFace.

The protocol, the decisions and ambiguities that explain the code, runtime and expected figures are in
README.md beside this file, which is also this package's ``__doc__`` (``python -m pydoc
reproductions.utkface_dual_cnn``).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from reproductions.common import readme_doc  # noqa: E402

__doc__ = readme_doc(__file__, __doc__)

from reproductions.utkface_dual_cnn.config import (REPRODUCTION, PAPER, GENDER_LABELS,
    SMOKE_OUT, SpezialiExperiment, smoke, Network, NETWORKS)  # noqa: E402,F401
from reproductions.utkface_dual_cnn.paper import (load_split, ks_statistic, split_shares,
    _heads, _targets, make_datasets, merge_skipped, build_network, _build_network,
    preprocessing, _iteration_logger, _gender_ce, evaluate, network_cells, protocol_cells,
    SETTINGS)  # noqa: E402,F401
from reproductions.utkface_dual_cnn.figures import (_plt, _save, plot_split,
    plot_iteration_loss, plot_epoch_metrics, _metric, plot_first_n, plot_face, plot_heatmaps,
    plot_gradcam)  # noqa: E402,F401
from reproductions.utkface_dual_cnn.reproduction import (_relative, run_deviations, Speziali,
    SPEZIALI, run, main, _parser, _execute, _Network, _log_metrics, _figures,
    _validation_image, _read_iterations, _write_iterations, format_cells)  # noqa: E402,F401
