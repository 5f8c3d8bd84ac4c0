"""Age-group binning of Gu & Yang (paper 002, Sec. 3) exactly as reproductions/efficientnet_age_groups/README.md
fixes it.

3 groups: 1-26 / 27-52 / 53-80; 5 groups: 1-11 / 12-23 / 24-39 / 40-55 / 56-80;
10 groups: eight-year bins 1-8, 9-16, ..., 73-80. Ages outside 1-80 have no group (-1).
"""

from __future__ import annotations

import numpy as np

AGE_GROUP_EDGES = {
    3: (1, 27, 53, 81),
    5: (1, 12, 24, 40, 56, 81),
    10: tuple(range(1, 82, 8)),
}


def age_group(age, n_groups: int) -> np.ndarray:
    """Group index (0-based) for each age in years; -1 outside 1-80 or for NaN.

    Ages are floored to whole years first (a 26.9-year-old is in the 1-26 group).
    """
    if n_groups not in AGE_GROUP_EDGES:
        raise ValueError(f"n_groups must be one of {sorted(AGE_GROUP_EDGES)}, got {n_groups!r}")
    edges = np.asarray(AGE_GROUP_EDGES[n_groups])
    years = np.floor(np.asarray(age, dtype="float64"))
    valid = np.isfinite(years) & (years >= 1) & (years <= 80)
    groups = np.searchsorted(edges, np.where(valid, years, 1), side="right") - 1
    return np.where(valid, groups, -1).astype("int64")


def age_group_labels(n_groups: int) -> list[str]:
    """Human-readable ranges, e.g. ``['1-26', '27-52', '53-80']``."""
    edges = AGE_GROUP_EDGES[n_groups]
    return [f"{lo}-{hi - 1}" for lo, hi in zip(edges[:-1], edges[1:])]
