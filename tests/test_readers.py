"""Dataset readers on the real label files (../shared/data) and on handmade layouts.

UTKFace, Adience (fold files) and Levi & Hassner's lists here; CelebA and IMDB-WIKI in
``test_reader_celeba_imdb.py``.
"""

from __future__ import annotations

import io
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from agegender.data.adience import read_adience
from agegender.data.adience_levi import read_levi_splits
from agegender.data.samples import ADIENCE_AGE_GROUPS
from agegender.data.utkface import read_utkface
from agegender.errors import DataError


@pytest.fixture(scope="module")
def jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (120, 80, 40)).save(buffer, format="JPEG")
    return buffer.getvalue()


def _touch(path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


# ----------------------------------------------------------------------------- UTKFace


def test_utkface_real_sample_parses_every_name(utkface_sample):
    s = read_utkface(utkface_sample)
    assert s.files_seen == 5000
    assert len(s) == 5000
    assert s.skipped == [] and s.repaired == [] and s.notes == []
    f = s.frame
    assert dict(Counter(f["gender"])) == {0: 2639, 1: 2361}
    assert dict(Counter(f["race"])) == {0: 2154, 1: 966, 2: 730, 3: 819, 4: 331}
    assert f["age"].min() == 1 and f["age"].max() == 116
    assert f["age"].sum() == 166723
    assert f["group"].is_unique
    assert set(f["source"]) == {"utkface"}
    row = f[f["file"] == "100_1_0_20170110183726390.jpg.chip.jpg"].iloc[0]
    assert (row["age"], row["gender"], row["race"], row["group"]) == (100.0, 1, 0, "100_1_0_20170110183726390")
    assert row["path"] == str(utkface_sample.resolve() / row["file"])
    assert s.task_samples() == {"age": 5000, "gender": 5000, "race": 5000, "age+gender": 5000, "age+race": 5000,
                                "gender+race": 5000, "age+gender+race": 5000}


UTK_GOOD = {  # name -> (age, gender, race, repair reasons)
    "25_0_1_20170116174525125.jpg.chip.jpg": (25, 0, 1, []),
    "39_1_20170116174525125.jpg.chip.jpg": (39, 1, -1, ["race field missing (race set to unknown, -1)"]),
    "24_0_1_20170116220224657 .jpg.chip.jpg": (24, 0, 1, ["space before '.jpg' in the name (ignored)"]),
    "55_0_0_20170116232725357jpg.chip.jpg": (55, 0, 0, ["missing dot before 'jpg' in the name (read as '.jpg')"]),
    "1_0_2_2016111019530998.jpg.chip.jpg": (1, 0, 2, ["timestamp has 16 digits instead of 17"]),
    "116_1_3_201701091505573351.jpg.chip.jpg": (116, 1, 3, ["timestamp has 18 digits instead of 17"]),
    "sub/40_1_4_20170116174525125.jpg.chip.jpg": (40, 1, 4, []),
}
UTK_BAD = {  # name -> skip reason
    "abc_0_0_20170116174525125.jpg.chip.jpg": "age field 'abc' is not a whole number",
    "30_2_0_20170116174525125.jpg.chip.jpg": "gender field '2' is not 0 (male) or 1 (female)",
    "30_0_7_20170116174525125.jpg.chip.jpg": "race field '7' is not 0-4",
    "0_0_0_20170116174525125.jpg.chip.jpg": "age 0 outside 1-120 (non-positive)",
    "150_0_0_20170116174525125.jpg.chip.jpg": "age 150 outside 1-120",
    "30.jpg.chip.jpg": "name has no age_gender fields",
    "notes.txt": "not a .jpg image (.txt)",
    ".DS_Store": "hidden file '.DS_Store', not an image",
    "._25_0_1_20170116174525125.jpg.chip.jpg": "macOS resource-fork file, not an image",
}


def test_utkface_handmade_defects(tmp_path, jpeg_bytes):
    for name in list(UTK_GOOD) + list(UTK_BAD):
        _touch(tmp_path / name, jpeg_bytes)
    s = read_utkface(tmp_path)
    assert s.files_seen == len(UTK_GOOD) + len(UTK_BAD)
    assert len(s) == len(UTK_GOOD)
    got = {r["file"]: (int(r["age"]), r["gender"], r["race"]) for _, r in s.frame.iterrows()}
    assert got == {k: v[:3] for k, v in UTK_GOOD.items()}
    repaired = {}
    for item in s.repaired:
        repaired.setdefault(item["file"], []).append(item["reason"])
    assert repaired == {k: v[3] for k, v in UTK_GOOD.items() if v[3]}
    assert {item["file"]: item["reason"] for item in s.skipped} == UTK_BAD
    groups = dict(zip(s.frame["file"], s.frame["group"]))
    assert groups["24_0_1_20170116220224657 .jpg.chip.jpg"] == "24_0_1_20170116220224657"
    assert groups["sub/40_1_4_20170116174525125.jpg.chip.jpg"] == "40_1_4_20170116174525125"
    assert s.has_label("race").sum() == len(UTK_GOOD) - 1


def test_utkface_in_the_wild_layout(tmp_path, jpeg_bytes):
    _touch(tmp_path / "part1" / "20_1_0_20170116174525125.jpg", jpeg_bytes)
    _touch(tmp_path / "part2" / "33_0_3_20170116174525125.jpg", jpeg_bytes)
    _touch(tmp_path / "part3" / "61_1_20170109150557335.jpg", jpeg_bytes)
    _touch(tmp_path / "part3" / "landmark_list_part3.txt", b"x")
    s = read_utkface(tmp_path)
    assert sorted(s.frame["file"]) == ["part1/20_1_0_20170116174525125.jpg", "part2/33_0_3_20170116174525125.jpg",
                                       "part3/61_1_20170109150557335.jpg"]
    assert list(s.frame.sort_values("file")["race"]) == [0, 3, -1]
    assert s.skipped == [{"file": "part3/landmark_list_part3.txt", "reason": "not a .jpg image (.txt)"}]
    # the same folder read as aligned & cropped: nothing usable, every image skipped with the reason
    s = read_utkface(tmp_path, layout="aligned")
    assert len(s) == 0 and len(s.skipped) == 4
    assert sum("in-the-wild name" in item["reason"] for item in s.skipped) == 3
    assert s.notes == ["no usable aligned UTKFace names among 4 files"]


def test_utkface_auto_picks_the_larger_layout(tmp_path, jpeg_bytes):
    _touch(tmp_path / "UTKFace" / "25_0_1_20170116174525125.jpg.chip.jpg", jpeg_bytes)
    _touch(tmp_path / "UTKFace" / "26_1_2_20170116174525125.jpg.chip.jpg", jpeg_bytes)
    _touch(tmp_path / "part1" / "20_1_0_20170116174525125.jpg", jpeg_bytes)
    s = read_utkface(tmp_path)
    assert len(s) == 2 and len(s.skipped) == 1
    assert s.notes[0].startswith("both layouts found (2 aligned & cropped names, 1 in-the-wild names)")
    s = read_utkface(tmp_path, layout="wild")
    assert list(s.frame["file"]) == ["part1/20_1_0_20170116174525125.jpg"]


def test_utkface_errors(tmp_path, jpeg_bytes):
    with pytest.raises(DataError, match="does not exist") as err:
        read_utkface(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(err.value) and "age_gender_race_timestamp.jpg.chip.jpg" in str(err.value)
    with pytest.raises(DataError, match="no files found"):
        read_utkface(tmp_path)
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="none of the 1 files is a UTKFace image name"):
        read_utkface(tmp_path)
    with pytest.raises(DataError, match="unknown UTKFace layout"):
        read_utkface(tmp_path, layout="cropped")


# ----------------------------------------------------------------------------- Adience (real fold files)


def test_adience_real_counts_before_and_after_duplicates(adience_folds):
    kept = read_adience(adience_folds, keep_duplicates=True)
    assert kept.files_seen == 19487
    assert len(kept.duplicate_rows) == 117
    # reproductions/README.md counts (and the published protocol) include the duplicate rows
    assert kept.task_samples(("age", "gender")) == {"age": 17424, "gender": 17603, "age+gender": 16258}
    assert len(kept.skipped) == 718 and len(kept) == 19487 - 718
    assert kept.notes[0] == ("label counts over all 19,487 rows, duplicates included (the published protocol): "
                             "age group 17,424, m/f gender 17,603, both 16,258")

    s = read_adience(adience_folds)
    assert s.files_seen == 19487
    assert len(s.duplicate_rows) == 117
    assert s.duplicate_rows[0] == {"file": "fold_0_data.txt", "line": 1921,
                                   "reason": "exact duplicate of fold_0_data.txt:1920 (dropped)"}
    assert s.task_samples(("age", "gender")) == {"age": 17321, "gender": 17492, "age+gender": 16156}
    assert len(s.skipped) == 713 and len(s) == 18657
    assert s.notes[1] == ("after dropping 117 exact duplicate rows: 19,370 rows, age group 17,321, m/f gender "
                          "17,492, both 16,156")
    f = s.frame
    assert not f.duplicated(["file", "age_label", "gender"]).any()
    assert f.groupby("group")["fold"].nunique().max() == 1  # folds are subject-exclusive
    assert not any("more than one fold" in n for n in s.notes)
    assert dict(Counter(f["fold"])) == {0: 4432, 1: 3705, 2: 3354, 3: 3415, 4: 3751}
    assert f["age"].isna().all() and (f["race"] == -1).all()
    assert ((f["age_group"] >= 0) | (f["gender"] >= 0)).all()
    stray = f[f["age_label"] == "35"]
    assert len(stray) == 293 and (stray["age_group"] == -1).all()
    assert f["age_group"].max() == 7 and set(f["gender"]) == {-1, 0, 1}
    # no images next to the fold files: every row is missing and the note says where they belong
    assert len(s.missing) == len(set(f["file"]))
    assert any(n.startswith("images missing: no aligned/ folder") for n in s.notes)
    assert read_adience(adience_folds, check_images=False).missing == []


def test_adience_real_remap_stray_ages(adience_folds):
    s = read_adience(adience_folds, remap_stray_ages=True)
    assert s.task_samples(("age", "gender")) == {"age": 18622, "gender": 17492, "age+gender": 17452}
    assert len(s.repaired) == 18622 - 17321
    reasons = Counter(r["reason"] for r in s.repaired)
    assert reasons["stray age label '35' remapped to (38, 43)"] == 293
    assert reasons["stray age label '3' remapped to (4, 6)"] == 18
    assert reasons["stray age label '(27, 32)' remapped to (25, 32)"] == 77
    assert reasons["stray age label '(38, 42)' remapped to (38, 43)"] == 46
    assert reasons["stray age label '(8, 23)' remapped to (15, 20)"] == 1
    f = s.frame
    assert set(f.loc[f["age_label"] == "None", "age_group"]) == {-1}
    expected = {"2": 0, "3": 1, "13": 2, "22": 3, "23": 4, "29": 4, "32": 4, "34": 4, "35": 5, "36": 5, "42": 5,
                "45": 5, "46": 6, "55": 6, "56": 6, "57": 7, "58": 7, "(25, 23)": 4, "(27, 32)": 4, "(38, 42)": 5,
                "(38, 48)": 5, "(8, 23)": 3}
    for label, group in expected.items():
        assert set(f.loc[f["age_label"] == label, "age_group"]) == {group}, label


# ----------------------------------------------------------------------------- Adience (handmade, with images)

HEADER = "user_id\toriginal_image\tface_id\tage\tgender\tx\ty\tdx\tdy\ttilt_ang\tfiducial_yaw_angle\tfiducial_score\n"


def _fold_line(user, image, face, age, gender):
    return f"{user}\t{image}\t{face}\t{age}\t{gender}\t1\t2\t3\t4\t0\t0\t50\n"


def _adience_root(tmp_path, jpeg_bytes):
    folds = {
        0: [("u0", "a.jpg", 1, "(25, 32)", "f"), ("u0", "a.jpg", 1, "(25, 32)", "f"),  # exact duplicate
            ("u0", "b.jpg", 2, "35", "m"), ("u0", "c.jpg", 3, "None", "u")],           # stray age; no label at all
        1: [("u1", "d.jpg", 4, "(0, 2)", ""), ("u1", "e.jpg", 5, "(38, 42)", "f")],
        2: [("u2", "f.jpg", 6, "(60, 100)", "m")],
        3: [("u3", "g.jpg", 7, "(8, 12)", "f")],
        4: [("u4", "h.jpg", 8, "13", "m\tEXTRA")],                                        # 13 fields
    }
    for k, rows in folds.items():
        text = HEADER + "".join(_fold_line(*r) for r in rows)
        (tmp_path / f"fold_{k}_data.txt").write_text(text)
    for user, image, face in (("u0", "a.jpg", 1), ("u0", "b.jpg", 2), ("u1", "d.jpg", 4), ("u2", "f.jpg", 6)):
        _touch(tmp_path / "aligned" / user / f"landmark_aligned_face.{face}.{image}", jpeg_bytes)
    return tmp_path


def test_adience_handmade(tmp_path, jpeg_bytes):
    root = _adience_root(tmp_path, jpeg_bytes)
    s = read_adience(root)
    assert s.files_seen == 9
    f = s.frame
    assert list(f["file"]) == ["aligned/u0/landmark_aligned_face.1.a.jpg", "aligned/u0/landmark_aligned_face.2.b.jpg",
                               "aligned/u1/landmark_aligned_face.4.d.jpg", "aligned/u1/landmark_aligned_face.5.e.jpg",
                               "aligned/u2/landmark_aligned_face.6.f.jpg", "aligned/u3/landmark_aligned_face.7.g.jpg"]
    assert list(f["age_group"]) == [4, -1, 0, -1, 7, 2]
    assert list(f["gender"]) == [1, 0, -1, 1, 0, 1]
    assert list(f["fold"]) == [0, 0, 1, 1, 2, 3]
    assert list(f["group"]) == ["u0", "u0", "u1", "u1", "u2", "u3"]
    assert f["path"][0] == str(root.resolve() / "aligned/u0/landmark_aligned_face.1.a.jpg")
    assert s.duplicate_rows == [{"file": "fold_0_data.txt", "line": 3,
                                 "reason": "exact duplicate of fold_0_data.txt:2 (dropped)"}]
    assert s.skipped == [
        {"file": "fold_0_data.txt:5",
         "reason": "neither a canonical age group (age 'None') nor m/f gender (gender 'u')"},
        {"file": "fold_4_data.txt:2", "reason": "13 tab-separated fields instead of 12"},
    ]
    assert s.missing == ["aligned/u1/landmark_aligned_face.5.e.jpg", "aligned/u3/landmark_aligned_face.7.g.jpg"]
    assert "2 of 6 images are absent under" in s.notes[-1]
    assert s.notes[2] == "2 kept rows have a stray age label (masked for age): 35 x1, (38, 42) x1"

    r = read_adience(root, remap_stray_ages=True, keep_duplicates=True)
    assert list(r.frame["age_group"]) == [4, 4, 5, 0, 5, 7, 2]
    assert r.repaired == [{"file": "fold_0_data.txt:4", "reason": "stray age label '35' remapped to (38, 43)"},
                          {"file": "fold_1_data.txt:3", "reason": "stray age label '(38, 42)' remapped to (38, 43)"}]
    assert r.duplicate_rows[0]["reason"].endswith("(kept)")


def test_adience_errors(tmp_path):
    with pytest.raises(DataError) as err:
        read_adience(tmp_path)
    message = str(err.value)
    assert str(tmp_path) in message and "fold_0_data.txt" in message and "fold_4_data.txt" in message
    (tmp_path / "folds").mkdir()
    (tmp_path / "folds" / "fold_0_data.txt").write_text(HEADER)
    with pytest.raises(DataError, match="the fold files are in"):
        read_adience(tmp_path)
    for k in range(5):
        (tmp_path / f"fold_{k}_data.txt").write_text("<!DOCTYPE html><html>quota</html>")
    with pytest.raises(DataError, match="HTML page"):
        read_adience(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        read_adience(tmp_path / "nope")


# ----------------------------------------------------------------------------- Levi & Hassner lists


@pytest.fixture(scope="module")
def levi_dir(shared_data):
    path = shared_data / "adience" / "levi_splits"
    if not path.is_dir():
        pytest.skip(f"Levi & Hassner lists not found at {path}")
    return path


def test_levi_real_label_meanings_and_counts(levi_dir, adience_folds):
    ref = read_adience(adience_folds, keep_duplicates=True, check_images=False).frame
    ref = ref.drop_duplicates("file").set_index("file")
    totals = {"age": 17423, "gender": 17602}  # one row fewer than the fold files' 17,424 / 17,603
    for fold in range(5):
        for task in ("age", "gender"):
            splits = read_levi_splits(levi_dir, fold=fold, task=task)
            assert set(splits) == {"train", "val", "test"}
            assert sum(len(s) for s in splits.values()) == totals[task], (fold, task)
            for name, s in splits.items():
                assert s.skipped == []
                f = s.frame
                assert set(f["partition"]) == {name}
                joined = ref.loc[f["file"]]  # every listed image is a row of the fold files
                if task == "age":
                    # Levi's age label 0-7 is the index into ADIENCE_AGE_GROUPS
                    assert (f["age_group"].to_numpy() == joined["age_group"].to_numpy()).all()
                    assert (f["gender"] == -1).all()
                else:
                    # Levi's gender 0 = m, 1 = f, our encoding
                    assert (f["gender"].to_numpy() == joined["gender"].to_numpy()).all()
                    assert (f["age_group"] == -1).all()
                if name == "test":
                    assert set(joined["fold"]) == {fold}
                else:
                    assert fold not in set(joined["fold"])
            # subject-exclusive test split
            assert not set(splits["test"].frame["group"]) & set(splits["train"].frame["group"])
    s = read_levi_splits(levi_dir, fold=0, task="age")
    assert (len(s["train"]), len(s["val"]), len(s["test"])) == (11823, 1284, 4316)
    assert len(s["test"].duplicate_rows) == 11 and len(s["train"].duplicate_rows) == 73
    assert s["val"].notes[-1].startswith("19 images of the val list also occur in the train list")
    assert dict(Counter(s["test"].frame["age_group"])) == {0: 960, 1: 495, 2: 213, 3: 155, 4: 1580, 5: 555,
                                                           6: 219, 7: 139}
    g = read_levi_splits(levi_dir, fold=0, task="gender")
    assert dict(Counter(g["test"].frame["gender"])) == {0: 2049, 1: 1958}


def test_levi_handmade(tmp_path, jpeg_bytes):
    (tmp_path / "adience").mkdir()
    root = _adience_root(tmp_path / "adience", jpeg_bytes)
    d = tmp_path / "splits" / "test_fold_is_2"
    d.mkdir(parents=True)
    (d / "age_train.txt").write_text("u0/landmark_aligned_face.1.a.jpg 4\nu0/landmark_aligned_face.1.a.jpg 4\n"
                                     "u1/landmark_aligned_face.4.d.jpg 0\n")
    (d / "age_val.txt").write_text("u0/landmark_aligned_face.2.b.jpg 9\nbroken line here\n"
                                   "u1/landmark_aligned_face.5.e.jpg 5\n")
    (d / "age_test.txt").write_text("u2/landmark_aligned_face.6.f.jpg 7\n\n")
    splits = read_levi_splits(tmp_path / "splits", root, fold=2, task="age")
    assert {k: len(v) for k, v in splits.items()} == {"train": 3, "val": 1, "test": 1}
    assert list(splits["train"].frame["age_group"]) == [4, 4, 0]
    assert splits["train"].duplicate_rows == [{"file": "age_train.txt", "line": 2,
                                               "reason": "same image as line 1 (kept, as in Levi's lists)"}]
    assert splits["val"].skipped == [{"file": "age_val.txt:1", "reason": "age label '9' is not 0-7"},
                                     {"file": "age_val.txt:2", "reason": "3 fields instead of 2 (path label)"}]
    assert splits["val"].missing == ["aligned/u1/landmark_aligned_face.5.e.jpg"]
    assert splits["train"].missing == []
    assert splits["test"].frame["path"][0] == str(root.resolve() / "aligned/u2/landmark_aligned_face.6.f.jpg")
    assert splits["test"].frame["group"][0] == "u2"
    with pytest.raises(DataError, match="gender_train.txt"):
        read_levi_splits(tmp_path / "splits", fold=2, task="gender")
    with pytest.raises(DataError, match="fold must be 0-4"):
        read_levi_splits(tmp_path / "splits", fold=5, task="age")
    with pytest.raises(DataError, match="unknown Levi & Hassner task"):
        read_levi_splits(tmp_path / "splits", fold=0, task="race")
    assert ADIENCE_AGE_GROUPS[7] == "(60, 100)"
    assert np.isnan(splits["test"].frame["age"][0])
