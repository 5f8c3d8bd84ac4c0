"""Split protocols: exact sizes, determinism, subject exclusivity, the CORAL counts, manifests."""

import numpy as np
import pandas as pd
import pytest

from agegender.data.age_groups import age_group, age_group_labels
from agegender.data.samples import normalize_frame
from agegender.data.splits import PROTOCOLS, make_split


def _frame(n, seed=0, ages=(1, 100)):
    rng = np.random.default_rng(seed)
    return normalize_frame([{"path": f"/x/{i:05d}.jpg", "file": f"{i:05d}.jpg", "age": float(rng.integers(*ages)),
                             "gender": int(rng.integers(0, 2)), "race": int(rng.integers(0, 5)),
                             "group": f"u{i // 3}", "source": "test"} for i in range(n)])


def test_speziali_sizes_determinism_and_ks():
    frame = _frame(1000)
    split = make_split(frame, "speziali", seed=3)
    assert split.counts() == {"train": 490, "val": 210, "test": 300}
    again = make_split(frame.sample(frac=1, random_state=1), "speziali", seed=3)  # input order must not matter
    assert list(split.frame["file"]) == list(again.frame["file"])
    other = make_split(frame, "speziali", seed=4)
    assert list(split.frame["file"]) != list(other.frame["file"])
    ks = split.info["ks_train_val"]
    assert 0 < ks["p_value"] <= 1 and 0 <= ks["statistic"] < 0.2


def test_speziali_drops_rows_without_age_or_gender():
    frame = _frame(100)
    frame.loc[:9, "gender"] = -1
    frame.loc[10:14, "age"] = np.nan
    split = make_split(frame, "speziali")
    assert sum(split.counts().values()) == 85
    assert split.info["dropped_without_age_and_gender"] == 15


def test_adience_folds_subject_exclusive_and_joint_filter():
    frame = _frame(500)
    frame["fold"] = frame["group"].map(lambda g: int(g[1:]) % 5)
    frame["age_group"] = frame.index % 8
    frame.loc[::7, "gender"] = -1
    joint = make_split(frame, "adience_folds", test_fold=2)
    gender_only = make_split(frame, "adience_folds", test_fold=2, tasks=("gender",))
    assert sum(joint.counts().values()) == int((frame["gender"] >= 0).sum())
    assert sum(gender_only.counts().values()) == int((frame["gender"] >= 0).sum())
    assert joint.info["users_in_test_and_train"] == 0
    assert set(joint.part("test")["fold"]) == {2}
    with_val = make_split(frame, "adience_folds", test_fold=0, val_fold=1)
    assert set(with_val.part("val")["fold"]) == {1}
    with pytest.raises(ValueError):
        make_split(frame, "adience_folds", test_fold=5)


def test_gu_yang_twenty_thousand_split_and_age_range():
    frame = _frame(25_000, ages=(0, 100))
    split = make_split(frame, "gu_yang", seed=1)
    assert split.counts() == {"train": 16_000, "val": 4_000, "test": 0}
    assert split.frame["age"].between(1, 80).all()
    small = make_split(_frame(1000, ages=(1, 80)), "gu_yang")
    assert small.counts() == {"train": 800, "val": 200, "test": 0}


def test_dey_keeps_10_to_65_in_paper_proportions():
    frame = _frame(18_603 * 2, ages=(1, 100))
    split = make_split(frame, "dey")
    counts = split.counts()
    assert split.frame["age"].between(10, 65).all()
    n = sum(counts.values())
    assert n == int(frame["age"].between(10, 65).sum())
    assert abs(counts["train"] / n - 9_115 / 18_603) < 1e-3
    assert abs(counts["test"] / n - 5_581 / 18_603) < 1e-3


def test_coral_counts_on_real_csv_files(coral_dir):
    names = pd.concat([pd.read_csv(coral_dir / "utk_train.csv"), pd.read_csv(coral_dir / "utk_test.csv")])["file"]
    frame = normalize_frame([{"path": f"/utk/{f}", "file": f, "age": float(f.split("_")[0]), "gender": 0}
                             for f in names])
    split = make_split(frame, "coral", csv_dir=coral_dir, seed=0)
    assert split.counts() == {"train": 10_517, "val": 2_630, "test": 3_287}  # Sundriyal Table 4.3
    assert split.frame["age"].between(21, 60).all()
    assert (split.frame["coral_label"] == split.frame["age"] - 21).all()


def test_coral_against_the_real_sample(coral_dir, utkface_sample):
    from agegender.data.utkface import read_utkface

    split = make_split(read_utkface(utkface_sample), "coral", csv_dir=coral_dir)
    counts = split.counts()
    found = sum(counts.values())
    assert 0 < found < 5_000
    assert found + sum(split.info["csv_rows_without_image"].values()) == 13_147 + 3_287
    assert counts["val"] == int(np.ceil((counts["train"] + counts["val"]) * 0.2))


def test_coral_missing_csv_names_the_fix(tmp_path):
    from agegender.errors import DataError

    with pytest.raises(DataError, match="utk_train.csv"):
        make_split(_frame(10), "coral", csv_dir=tmp_path)


def test_random_and_manifest(tmp_path):
    split = make_split(_frame(101), "random", seed=0, fractions=(0.8, 0.1, 0.1))
    assert split.counts() == {"train": 81, "val": 10, "test": 10}
    path = split.save_manifest(tmp_path / "split.csv")
    manifest = pd.read_csv(path)
    assert list(manifest.columns[:2]) == ["file", "split"]
    assert len(manifest) == 101 and manifest["file"].is_unique


def test_unknown_protocol_fails_loudly():
    with pytest.raises(ValueError, match="known: "):
        make_split(_frame(5), "nope")
    assert set(PROTOCOLS) == {"speziali", "adience_folds", "gu_yang", "dey", "coral", "celeba", "random"}


@pytest.mark.parametrize("n_groups, boundaries", [
    (3, [(1, 0), (26, 0), (27, 1), (52, 1), (53, 2), (80, 2)]),
    (5, [(1, 0), (11, 0), (12, 1), (23, 1), (24, 2), (39, 2), (40, 3), (55, 3), (56, 4), (80, 4)]),
    (10, [(1, 0), (8, 0), (9, 1), (16, 1), (72, 8), (73, 9), (80, 9)]),
])
def test_gu_yang_age_groups_at_every_boundary(n_groups, boundaries):
    ages, expected = zip(*boundaries)
    assert age_group(np.array(ages), n_groups).tolist() == list(expected)
    assert age_group(np.array([0, 81, np.nan, -3]), n_groups).tolist() == [-1] * 4
    assert len(age_group_labels(n_groups)) == n_groups
    every = age_group(np.arange(1, 81), n_groups)
    assert (np.diff(every) >= 0).all() and set(every) == set(range(n_groups))
