"""CelebA and IMDB-WIKI readers on handmade layouts in the real formats (no real files ship)."""

from __future__ import annotations

import io
from datetime import date

import numpy as np
import pytest
import scipy.io
from PIL import Image

from agegender.data.celeba import read_celeba
from agegender.data.imdb_wiki import read_imdb_wiki
from agegender.errors import DataError

CELEBA_ATTRS = ("5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
                "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair "
                "Heavy_Makeup High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face "
                "Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair "
                "Wearing_Earrings Wearing_Hat Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young").split()
MALE, SMILING, YOUNG = CELEBA_ATTRS.index("Male"), CELEBA_ATTRS.index("Smiling"), CELEBA_ATTRS.index("Young")


@pytest.fixture(scope="module")
def jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (40, 80, 120)).save(buffer, format="JPEG")
    return buffer.getvalue()


def _attr_row(name: str, male: int, young: int, smiling: int) -> str:
    values = [-1] * 40
    values[MALE], values[YOUNG], values[SMILING] = male, young, smiling
    # the real file pads with runs of spaces: two before a positive value, one before a negative one
    return name + "".join(("  1" if v == 1 else " -1") for v in values) + "\n"


def _celeba_root(root, jpeg_bytes, *, count=6, identity=True):
    rows = [_attr_row("000001.jpg", -1, 1, 1), _attr_row("000002.jpg", 1, 1, -1), _attr_row("000003.jpg", 1, -1, 1),
            "000004.jpg  1 -1  1\n",                                    # too few fields
            _attr_row("000005.jpg", -1, -1, -1).replace(" -1", " 0", 1),  # a value that is not 1/-1
            _attr_row("000002.jpg", -1, -1, -1)]                        # listed twice
    (root / "list_attr_celeba.txt").write_text(f"{count}\n" + " ".join(CELEBA_ATTRS) + " \n" + "".join(rows))
    (root / "list_eval_partition.txt").write_text("000001.jpg 0\n000002.jpg 1\n000004.jpg 2\n000005.jpg 2\n")
    if identity:
        (root / "identity_CelebA.txt").write_text("000001.jpg 2880\n000002.jpg 2937\n")
    images = root / "img_align_celeba"
    images.mkdir()
    for name in ("000001.jpg", "000003.jpg"):
        (images / name).write_bytes(jpeg_bytes)
    return root


def test_celeba_handmade(tmp_path, jpeg_bytes):
    root = _celeba_root(tmp_path, jpeg_bytes)
    s = read_celeba(root, attributes=("Male", "Young", "smiling"))
    f = s.frame
    assert s.files_seen == 6 and len(s) == 3
    assert list(f["file"]) == [f"img_align_celeba/00000{i}.jpg" for i in (1, 2, 3)]
    assert list(f["Male"]) == [0, 1, 1]
    assert list(f["Young"]) == [1, 1, 0]
    assert list(f["Smiling"]) == [1, 0, 1]
    assert list(f["gender"]) == [1, 0, 0]  # Male 1 -> 0 male, -1 -> 1 female
    assert list(f["partition"]) == ["train", "val", ""]
    assert list(f["group"]) == ["2880", "2937", "000003.jpg"]
    assert f["age"].isna().all() and (f["race"] == -1).all() and set(f["source"]) == {"celeba"}
    assert str(f["Male"].dtype) == "int64"
    assert f["path"][0] == str(root.resolve() / "img_align_celeba" / "000001.jpg")
    assert s.skipped == [
        {"file": "list_attr_celeba.txt:6", "reason": "4 fields instead of 41 (file + 40 attributes)"},
        {"file": "list_attr_celeba.txt:7", "reason": "000005.jpg: attribute value '0' is not 1 or -1"},
    ]
    assert s.duplicate_rows == [{"file": "list_attr_celeba.txt", "line": 8,
                                 "reason": "000002.jpg listed before on line 4 (dropped)"}]
    assert s.missing == ["img_align_celeba/000002.jpg"]
    assert "1 rows have no official partition in list_eval_partition.txt (partition '')" in s.notes
    assert "1 rows have no identity in identity_CelebA.txt (group = file name)" in s.notes
    assert not any("line 1 says" in n for n in s.notes)  # 6 rows, count 6


def test_celeba_count_mismatch_no_identity_no_images(tmp_path, jpeg_bytes):
    root = _celeba_root(tmp_path, jpeg_bytes, count=202599, identity=False)
    for p in (root / "img_align_celeba").iterdir():
        p.unlink()
    (root / "img_align_celeba").rmdir()
    s = read_celeba(root)
    assert list(s.frame.columns[-3:]) == ["partition", "Male", "Young"]
    assert list(s.frame["group"]) == ["000001.jpg", "000002.jpg", "000003.jpg"]
    assert "list_attr_celeba.txt: line 1 says 202,599 rows but the file has 6 (a subset, or a truncated download)" \
        in s.notes
    assert any(n.startswith("no identity_CelebA.txt") for n in s.notes)
    assert any(n.startswith("images missing: no img_align_celeba/ folder") for n in s.notes)
    assert len(s.missing) == 3


def test_celeba_errors(tmp_path, jpeg_bytes):
    with pytest.raises(DataError, match="does not exist"):
        read_celeba(tmp_path / "nope")
    with pytest.raises(DataError, match="list_attr_celeba.txt not found"):
        read_celeba(tmp_path)
    root = _celeba_root(tmp_path, jpeg_bytes)
    with pytest.raises(DataError) as err:
        read_celeba(root, attributes=("Male", "Age"))
    assert "unknown CelebA attribute 'Age'" in str(err.value) and "Wearing_Necktie" in str(err.value)
    (root / "list_attr_celeba.txt").write_text("<!DOCTYPE html><html><head><title>Google Drive - Virus scan "
                                               "warning</title></head></html>")
    with pytest.raises(DataError, match="not a CelebA label file: the download failed") as err:
        read_celeba(root)
    assert "list_attr_celeba.txt" in str(err.value) and "fix: download the original file again" in str(err.value)
    (root / "list_attr_celeba.txt").write_text("Sorry, you can't view or download this file at this time. Too many "
                                               "users have viewed or downloaded this file recently "
                                               "(Google Drive quota exceeded).")
    with pytest.raises(DataError, match="web page"):
        read_celeba(root)


# ----------------------------------------------------------------------------- IMDB-WIKI


def _datenum(y: int, m: int, d: int, frac: float = 0.0) -> float:
    """MATLAB datenum of a date (days from year 0)."""
    return date(y, m, d).toordinal() + 366 + frac


def _cell(items):
    cell = np.empty((1, len(items)), dtype=object)
    for i, item in enumerate(items):
        cell[0, i] = item
    return cell


IMDB_ROWS = [  # full_path, dob, photo_taken, gender, face_score, second_face_score
    ("01/nm0000001_rm124825600_1899-5-10_1968.jpg", _datenum(1899, 5, 10), 1968, 1.0, 1.5, np.nan),
    ("02/nm0000002_rm1_1980-1-1_2000.jpg", np.nan, 2000, 0.0, 2.0, np.nan),              # NaN dob
    ("03/nm0000003_rm1_1980-1-1_2000.jpg", np.inf, 2000, 0.0, 2.0, np.nan),              # inf dob
    ("04/nm0000004_rm1_1980-12-31_2000.jpg", _datenum(1980, 12, 31, 0.75), 2000, np.nan, 3.0, np.nan),  # NaN gender
    ("05/nm0000005_rm1_2010-1-1_2000.jpg", _datenum(2010, 1, 1), 2000, 1.0, 3.0, np.nan),  # age -10
    ("06/nm0000006_rm1_1970-6-1_2000.jpg", _datenum(1970, 6, 1), 2000, 0.0, -np.inf, np.nan),  # no face
    ("07/nm0000007_rm1_1970-6-1_2000.jpg", _datenum(1970, 6, 1), 2000, 0.0, 4.0, 1.2),   # second face
    ("08/nm0000008_rm1_1910-6-1_2000.jpg", _datenum(1910, 6, 1), 2000, 1.0, 4.0, np.nan),  # age 90
    ("09/nm0000009_rm1_1970-6-1_2000.jpg", _datenum(1970, 6, 1), np.nan, 1.0, 4.0, np.nan),  # no photo year
]


def _write_mat(path, key, rows, *, celeb_id=True, names=None):
    n = len(rows)
    struct = {
        "dob": np.array([[r[1] for r in rows]]),
        "photo_taken": np.array([[r[2] for r in rows]], dtype=float),
        "full_path": _cell([r[0] for r in rows]),
        "gender": np.array([[r[3] for r in rows]]),
        "name": _cell(names if names is not None else [f"Person {i}" for i in range(n)]),
        "face_location": _cell([np.array([[1.0, 2.0, 30.0, 40.0]]) for _ in rows]),
        "face_score": np.array([[r[4] for r in rows]]),
        "second_face_score": np.array([[r[5] for r in rows]]),
    }
    if celeb_id:
        struct["celeb_names"] = _cell([f"Person {i}" for i in range(n)])
        struct["celeb_id"] = np.array([[10 + i for i in range(n)]])
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), {key: struct}, do_compression=True)


def test_imdb_handmade_nesting_and_skips(tmp_path):
    _write_mat(tmp_path / "imdb_crop" / "imdb.mat", "imdb", IMDB_ROWS)
    loaded = scipy.io.loadmat(str(tmp_path / "imdb_crop" / "imdb.mat"))["imdb"][0, 0]
    assert loaded["full_path"][0][0][0] == IMDB_ROWS[0][0]  # the real nesting
    s = read_imdb_wiki(tmp_path)
    assert s.files_seen == 9
    f = s.frame
    assert list(f["file"]) == ["imdb_crop/" + IMDB_ROWS[i][0] for i in (0, 3, 5, 6, 7)]
    assert list(f["age"]) == [69.0, 20.0, 30.0, 30.0, 90.0]
    assert list(f["gender"]) == [0, -1, 1, 1, 0]
    assert list(f["group"]) == ["10", "13", "15", "16", "17"]
    assert f["face_score"].tolist()[:3] == [1.5, 3.0, -np.inf]
    assert set(f["subset"]) == {"imdb"} and set(f["source"]) == {"imdb_wiki"}
    assert f["path"][0] == str(tmp_path.resolve() / "imdb_crop" / IMDB_ROWS[0][0])
    assert [(x["file"].split("/")[1], x["reason"]) for x in s.skipped] == [
        ("02", "dob is nan (no birth date)"),
        ("03", "dob is inf (no birth date)"),
        ("05", "impossible age -10 (photo_taken 2000, born 2010)"),
        ("09", "photo_taken is nan (no photo year)"),
    ]
    assert s.notes == ["image files not checked (the metadata is read without opening the crops)"]


def test_imdb_filters_are_counted_in_notes(tmp_path):
    _write_mat(tmp_path / "imdb_crop" / "imdb.mat", "imdb", IMDB_ROWS)
    s = read_imdb_wiki(tmp_path, min_face_score=1.0, single_face_only=True, age_range=(1, 80))
    assert list(s.frame["group"]) == ["10", "13"]
    assert len(s.skipped) == 4
    assert s.notes[:3] == ["filter min_face_score >= 1.0: 1 rows removed",
                           "filter single_face_only (finite second_face_score): 1 rows removed",
                           "filter age_range 1-80 (inclusive): 1 rows removed"]
    s = read_imdb_wiki(tmp_path / "imdb_crop", min_face_score=2.0)  # root = the crop folder itself
    assert list(s.frame["file"]) == [IMDB_ROWS[i][0] for i in (3, 6, 7)]
    assert s.notes[0] == "filter min_face_score >= 2.0: 2 rows removed"


def test_wiki_and_both(tmp_path):
    _write_mat(tmp_path / "imdb_crop" / "imdb.mat", "imdb", IMDB_ROWS[:1])
    wiki_rows = [("17/10000217_1981-05-05_2009.jpg", _datenum(1981, 5, 5, 0.5), 2009, 1.0, 4.2, np.nan),
                 ("48/10000548_1925-04-04_1964.jpg", _datenum(1925, 4, 4), 1964, 0.0, 3.1, np.nan)]
    _write_mat(tmp_path / "wiki_crop" / "wiki.mat", "wiki", wiki_rows, celeb_id=False,
               names=["Sami Jauhojärvi", np.array([], dtype="<U1")])
    s = read_imdb_wiki(tmp_path)
    assert len(s) == 1 and s.notes[0].startswith("both imdb and wiki metadata found: read imdb only")
    w = read_imdb_wiki(tmp_path, which="wiki")
    assert list(w.frame["age"]) == [28.0, 39.0]
    assert list(w.frame["gender"]) == [0, 1]
    assert list(w.frame["group"]) == ["Sami Jauhojärvi", "wiki_crop/48/10000548_1925-04-04_1964.jpg"]
    b = read_imdb_wiki(tmp_path, which="both")
    assert list(b.frame["subset"]) == ["imdb", "wiki", "wiki"] and b.files_seen == 3


def test_imdb_wiki_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_imdb_wiki(tmp_path / "nope")
    with pytest.raises(DataError, match="neither imdb_crop/imdb.mat nor wiki_crop/wiki.mat"):
        read_imdb_wiki(tmp_path)
    mat = tmp_path / "imdb_crop" / "imdb.mat"
    _write_mat(mat, "imdb", IMDB_ROWS)
    with pytest.raises(DataError, match="wiki_crop/wiki.mat not found"):
        read_imdb_wiki(tmp_path, which="wiki")
    good = mat.read_bytes()
    mat.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="cannot be read as a MATLAB file, probably truncated") as err:
        read_imdb_wiki(tmp_path)
    assert str(mat) in str(err.value) and "imdb_crop.tar" in str(err.value)
    mat.write_text("<!DOCTYPE html>\n<html><body>503 Service Unavailable</body></html>")
    with pytest.raises(DataError, match="HTML page, not a MATLAB file"):
        read_imdb_wiki(tmp_path)
    mat.write_bytes(b"\x00\x01garbage" * 20)
    with pytest.raises(DataError, match="not a MATLAB .mat file"):
        read_imdb_wiki(tmp_path)
    scipy.io.savemat(str(mat), {"other": np.zeros((1, 2))})
    with pytest.raises(DataError, match="has no 'imdb' struct"):
        read_imdb_wiki(tmp_path)
    with pytest.raises(DataError, match="unknown IMDB-WIKI subset"):
        read_imdb_wiki(tmp_path, which="all")


def test_matlab_datenum_convention():
    # the dataset's own example: 1899-5-10 is born in 1899 whatever the day fraction
    from agegender.data.imdb_wiki import _birth_years

    years = _birth_years(np.array([_datenum(1899, 5, 10), _datenum(1980, 12, 31, 0.99), np.nan, -5.0, 1e12]))
    assert years == [1899, 1980, None, None, None]


def test_empty_results_keep_their_columns(tmp_path):
    (tmp_path / "list_attr_celeba.txt").write_text("1\n" + " ".join(CELEBA_ATTRS) + "\n000001.jpg 1 1\n")
    (tmp_path / "list_eval_partition.txt").write_text("000001.jpg 0\n")
    s = read_celeba(tmp_path, attributes=("Young",))
    assert len(s) == 0 and len(s.skipped) == 1
    assert list(s.frame.columns[-2:]) == ["partition", "Young"]
    _write_mat(tmp_path / "wiki_crop" / "wiki.mat", "wiki", IMDB_ROWS[1:3], celeb_id=False)
    w = read_imdb_wiki(tmp_path)
    assert len(w) == 0 and len(w.skipped) == 2 and list(w.frame.columns[-2:]) == ["face_score", "subset"]


def test_labelled_faces_keeps_known_gender_and_a_detected_face():
    """Gu & Yang's IMDB-WIKI sample (issue 18 item 4): rows without a gender (-1) or without a detected face
    (face_score -inf or NaN) are dropped and counted, a row lacking both once, under gender_unknown."""
    import numpy as np
    import pandas as pd

    from agegender.data.imdb_wiki import labelled_faces

    frame = pd.DataFrame({"file": list("abcdef"), "gender": [0, 1, -1, 0, -1, 1],
                          "face_score": [3.2, -np.inf, 1.0, np.nan, -np.inf, 0.5]})
    kept, counts = labelled_faces(frame)
    assert list(kept["file"]) == ["a", "f"]
    assert counts == {"gender_unknown": 2, "no_face": 2, "kept": 2}
