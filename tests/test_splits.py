"""Split protocols: exact sizes, determinism, subject exclusivity, the CORAL counts, manifests."""

from pathlib import Path

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


# ---------------------------------------------------------------------------------------------- duplicates (issue 21)


def _files_with_duplicates(root, n=240, groups=40, seed=0):
    """``n`` rows with real files under ``root``: ``groups`` pairs of byte-identical files (labels may differ),
    the rest distinct. Columns for every protocol: fold (by user), partition, ages 21-60."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        content = f"face {i // 2 if i < 2 * groups else 10_000 + i}".encode()  # pairs first, then distinct
        name = f"{21 + int(rng.integers(0, 40))}_{int(rng.integers(0, 2))}_0_2017{i:013d}.jpg.chip.jpg"
        (root / name).write_bytes(content)
        rows.append({"path": str(root / name), "file": name, "age": float(name.split("_")[0]),
                     "age_group": i % 8, "gender": int(name.split("_")[1]), "race": 0, "group": f"u{i}",
                     "source": "test", "fold": i % 5, "partition": ("train", "val", "test")[i % 3]})
    return normalize_frame(rows)


def _groups_by_content(frame):
    """Independent of the code under test: rows grouped by hashlib.sha256 of the file bytes."""
    import hashlib

    digests = frame["path"].map(lambda p: hashlib.sha256(open(p, "rb").read()).hexdigest())
    return [idx for idx in frame.groupby(digests).groups.values() if len(idx) > 1]


def _coral_csvs(frame, folder):
    folder.mkdir(exist_ok=True)
    cut = len(frame) * 3 // 4
    for name, part in (("utk_train.csv", frame.iloc[:cut]), ("utk_test.csv", frame.iloc[cut:])):
        pd.DataFrame({"file": part["file"], "age": (part["age"] - 21).astype(int)}).to_csv(folder / name)
    return folder


@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
def test_every_protocol_can_keep_byte_identical_files_in_one_split(protocol, tmp_path):
    (tmp_path / "faces").mkdir()
    frame = _files_with_duplicates(tmp_path / "faces")
    options = {"csv_dir": _coral_csvs(frame, tmp_path / "coral")} if protocol == "coral" else {}
    if protocol == "gu_yang":
        options = {"n": 200, "n_train": 150}

    def crossing(split):
        return [g for g in _groups_by_content(split.frame) if split.frame.loc[g, "split"].nunique() > 1]

    paper = make_split(frame, protocol, seed=1, **options)
    assert paper.info["duplicates"] == {"kept_together": False}  # the paper's split, and the record says so
    assert crossing(paper), "the fixture must make the paper's split leak for this test to mean anything"
    kept = make_split(frame, protocol, seed=1, keep_duplicates_together=True, **options)
    assert crossing(kept) == []
    assert set(kept.frame["file"]) == set(paper.frame["file"])  # the same rows, only their parts change
    moved = (kept.frame.set_index("file")["split"] != paper.frame.set_index("file")["split"]).sum()
    info = kept.info["duplicates"]
    assert info["kept_together"] and info["groups"] == len(_groups_by_content(paper.frame))
    assert info["groups_that_crossed"] == len(crossing(paper)) and info["rows_moved"] == moved
    assert kept.info["counts"] == kept.counts()
    again = make_split(frame.sample(frac=1, random_state=2), protocol, seed=1, keep_duplicates_together=True, **options)
    assert list(again.frame["split"]) == list(kept.frame["split"])  # deterministic for a seed


def test_a_group_goes_to_the_split_most_of_it_is_in(tmp_path):
    """Three identical files, two in train and one in test -> all three in train; a tie takes the first file's."""
    from agegender.data.splits import Split, _keep_duplicates_together

    for name, content in (("a", b"x"), ("b", b"x"), ("c", b"x"), ("d", b"y"), ("e", b"y"), ("f", b"z")):
        (tmp_path / name).write_bytes(content)
    frame = normalize_frame([{"path": str(tmp_path / n), "file": n, "age": 30.0} for n in "abcdef"])
    frame["split"] = ["train", "test", "train", "val", "test", "test"]
    split = Split("random", frame)
    info = _keep_duplicates_together(split)
    assert list(split.frame["split"]) == ["train", "train", "train", "val", "val", "test"]
    assert info == {"kept_together": True, "groups": 2, "groups_that_crossed": 2, "rows_moved": 2}


# ---------------------------------------------------------------------------------------------- CORAL csv checks


def _coral_folder(tmp_path, train_rows, test_rows):
    (tmp_path / "utk_train.csv").write_text(",file,age\n" + "".join(f"{i},{f},{a}\n" for i, (f, a) in
                                                                    enumerate(train_rows)))
    (tmp_path / "utk_test.csv").write_text(",file,age\n" + "".join(f"{i},{f},{a}\n" for i, (f, a) in
                                                                   enumerate(test_rows)))
    return tmp_path


def _names(ages):
    return [(f"{a}_0_0_2017011617452{i:04d}.jpg.chip.jpg", a - 21) for i, a in enumerate(ages)]


@pytest.mark.parametrize("case, train_extra, test_extra, words", [
    ("traversal", [("../../../../etc/passwd", 3)], [], ("utk_train.csv", "line 42", "leaves the data folder")),
    ("absolute", [], [("/etc/shadow", 3)], ("utk_test.csv", "line 12", "absolute path")),
    ("not a number", [("30_0_0_20170116174525999.jpg.chip.jpg", "abc")], [],
     ("utk_train.csv", "line 42", "'abc'", "not a whole number")),
    ("negative", [], [("30_0_0_20170116174525999.jpg.chip.jpg", -4)], ("utk_test.csv", "line 12", "-4")),
    ("twice", [], [("TEST0", None)], ("utk_test.csv", "line 12", "listed twice")),
])
def test_coral_csv_problems_are_one_line_errors(case, train_extra, test_extra, words, tmp_path):
    from agegender.errors import DataError

    train, test = _names(range(21, 61)), _names(range(30, 40))
    test = [(f.replace("2017011617452", "2017011699999"), a) for f, a in test]
    test_extra = [test[0] if f == "TEST0" else (f, a) for f, a in test_extra]
    folder = _coral_folder(tmp_path, train + train_extra, test + test_extra)
    frame = normalize_frame([{"path": str(tmp_path / f), "file": f, "age": float(f.split("_")[0])}
                             for f, _ in train + test])
    with pytest.raises(DataError) as err:
        make_split(frame, "coral", csv_dir=folder)
    message = str(err.value)
    assert "\n" not in message and " — fix: " in message, message
    for word in words:
        assert word in message, (word, message)


def test_coral_train_and_test_sharing_images_is_refused(tmp_path):
    from agegender.errors import DataError

    train, test = _names(range(21, 61)), _names(range(21, 61))[:5]  # five test rows are training rows
    folder = _coral_folder(tmp_path, train, [(f.replace("_0_0_", "_1_0_"), a) for f, a in _names(range(30, 40))] + test)
    frame = normalize_frame([{"path": str(tmp_path / f), "file": f, "age": float(f.split("_")[0])} for f, _ in train])
    with pytest.raises(DataError) as err:
        make_split(frame, "coral", csv_dir=folder)
    assert "5 image(s) are in both utk_train.csv and utk_test.csv" in str(err.value) and "leak" in str(err.value)


def test_coral_labels_that_disagree_with_the_file_name_are_counted(tmp_path):
    train = _names(range(21, 61))
    train[3] = (train[3][0], train[3][1] + 7)
    folder = _coral_folder(tmp_path, train, [(f.replace("_0_0_", "_1_0_"), a) for f, a in _names(range(30, 40))])
    frame = normalize_frame([{"path": str(tmp_path / f), "file": f, "age": float(f.split("_")[0])} for f, _ in train])
    info = make_split(frame, "coral", csv_dir=folder).info
    assert info["csv_age_label_mismatch"]["count"] == 1 and train[3][0] in info["csv_age_label_mismatch"]["first"][0]
    assert not Path(info["csv_dir"]).is_absolute()  # names no machine path
