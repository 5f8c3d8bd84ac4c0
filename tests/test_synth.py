"""Generated faces (``agegender.data.synth``): drawing, the four native layouts, determinism,
round trips through the readers, the real-Adience-metadata option, and learnability."""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agegender.data.samples import ADIENCE_AGE_GROUPS
from agegender.data.synth import CELEBA_ATTRIBUTES, LAYOUTS, draw_face, synthesize
from agegender.errors import DataError

ADIENCE_HEADER = ("user_id\toriginal_image\tface_id\tage\tgender\tx\ty\tdx\tdy\ttilt_ang\t"
                  "fiducial_yaw_angle\tfiducial_score")
UTK_NAME = re.compile(r"^(\d+)_([01])_([0-4])_(\d{17})\.jpg\.chip\.jpg$")
IMDB_PATH = re.compile(r"^(\d\d)/nm(\d{7})_rm(\d+)_(\d{4})-(\d{1,2})-(\d{1,2})_(\d{4})\.jpg$")


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _size(path: Path) -> tuple[int, int]:
    with Image.open(path) as img:
        return img.size


# ------------------------------------------------------------------------------------- drawing


def test_draw_face_shape_dtype_and_determinism():
    a = draw_face(30, 0, 2, np.random.default_rng(5), size=48)
    b = draw_face(30, 0, 2, np.random.default_rng(5), size=48)
    c = draw_face(30, 0, 2, np.random.default_rng(6), size=48)
    assert a.shape == (48, 48, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert draw_face(0.5, 1, 4, np.random.default_rng(0)).shape == (128, 128, 3)
    assert a.std() > 10  # not a flat image


@pytest.mark.parametrize("age,gender,race", [(30, 2, 0), (30, -1, 0), (30, 0, 5), (-1, 0, 0), (float("nan"), 0, 0)])
def test_draw_face_rejects_bad_labels(age, gender, race):
    with pytest.raises(ValueError):
        draw_face(age, gender, race, np.random.default_rng(0), size=32)


def test_draw_face_cues_follow_labels():
    """Mean skin/hair statistics move with the labels in the intended direction."""
    def mean_face(age, gender, race, k=24):
        return np.mean([draw_face(age, gender, race, np.random.default_rng(1000 + i), 48)[12:40, 14:34].mean()
                        for i in range(k)])

    assert mean_face(30, 0, 0) > mean_face(30, 0, 1) + 30  # white skin lighter than black skin
    old = np.stack([draw_face(85, 0, 2, np.random.default_rng(i), 48) for i in range(24)])
    young = np.stack([draw_face(25, 0, 2, np.random.default_rng(i), 48) for i in range(24)])
    hair = (slice(2, 10), slice(16, 32))  # top of the head: black hair greys
    assert old[:, hair[0], hair[1]].mean() > young[:, hair[0], hair[1]].mean() + 15


# ------------------------------------------------------------------------------------- layouts


def test_unknown_layout_names_the_valid_ones(tmp_path):
    with pytest.raises(DataError) as err:
        synthesize("fgnet", tmp_path, 5)
    for name in LAYOUTS:
        assert name in str(err.value)
    with pytest.raises(DataError):
        synthesize("utkface", tmp_path, 0)
    with pytest.raises(DataError):
        synthesize("celeba", tmp_path, 5, adience_folds_dir=tmp_path)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path, layout):
    synthesize(layout, tmp_path / "a", 12, seed=3, size=32)
    synthesize(layout, tmp_path / "b", 12, seed=3, size=32)
    synthesize(layout, tmp_path / "c", 12, seed=4, size=32)
    a, b, c = (_files(tmp_path / k) for k in "abc")
    assert a == b
    assert "agegender-synth.json" in a
    images_a = {k: v for k, v in a.items() if k.endswith(".jpg")}
    images_c = {k: v for k, v in c.items() if k.endswith(".jpg")}
    assert len(images_a) >= 12 and sorted(images_a.values()) != sorted(images_c.values())


def test_utkface_layout(tmp_path):
    summary = synthesize("utkface", tmp_path, 300, seed=1, size=40)
    names = sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".jpg")
    assert len(names) == 300 == summary["n"]
    parsed = [UTK_NAME.match(n) for n in names]
    assert all(parsed), [n for n, m in zip(names, parsed) if not m][:3]
    ages = np.array([int(m.group(1)) for m in parsed])
    stamps = [m.group(4) for m in parsed]
    assert len(set(stamps)) == 300 and all(s.startswith("2017") for s in stamps)
    assert ages.min() >= 1 and ages.max() <= 100
    assert 0.35 < np.mean((ages >= 20) & (ages <= 40)) < 0.8 and (ages < 10).any() and (ages > 60).any()
    assert {int(m.group(2)) for m in parsed} == {0, 1} and {int(m.group(3)) for m in parsed} == set(range(5))
    assert _size(tmp_path / names[0]) == (40, 40)
    assert sum(summary["counts"]["gender"].values()) == 300
    synthesize("utkface", tmp_path / "default", 1)
    assert _size(next((tmp_path / "default").glob("*.jpg"))) == (200, 200)


def _read_adience_folds(root: Path) -> list[list[list[str]]]:
    folds = []
    for k in range(5):
        lines = (root / f"fold_{k}_data.txt").read_text(encoding="utf-8").splitlines()
        assert lines[0] == ADIENCE_HEADER
        folds.append([line.split("\t") for line in lines[1:]])
    return folds


def test_adience_layout(tmp_path):
    summary = synthesize("adience", tmp_path, 150, seed=2, size=36)
    folds = _read_adience_folds(tmp_path)
    rows = [r for f in folds for r in f]
    assert len(rows) == 150 == summary["n"] and all(len(r) == 12 for r in rows)
    assert all(len(f) > 0 for f in folds)
    users_per_fold = [{r[0] for r in f} for f in folds]
    for i in range(5):
        for j in range(i + 1, 5):
            assert not users_per_fold[i] & users_per_fold[j]
    per_user = {}
    for r in rows:
        per_user[r[0]] = per_user.get(r[0], 0) + 1
        assert re.fullmatch(r"\d+@N0\d", r[0]) and re.fullmatch(r"\d+_[0-9a-f]{10}_o\.jpg", r[1])
        assert r[3] in ADIENCE_AGE_GROUPS and r[4] in ("m", "f") and r[2].isdigit()
        assert all(re.fullmatch(r"-?\d+", v) for v in r[5:])
        image = tmp_path / "aligned" / r[0] / f"landmark_aligned_face.{r[2]}.{r[1]}"
        assert image.is_file()
    assert np.mean(list(per_user.values())) >= 3
    assert {r[3] for r in rows} >= set(ADIENCE_AGE_GROUPS[:6])
    assert _size(image) == (36, 36)


def test_celeba_layout(tmp_path):
    synthesize("celeba", tmp_path, 200, seed=0, size=50)
    attr = (tmp_path / "list_attr_celeba.txt").read_text(encoding="utf-8").splitlines()
    assert attr[0] == "200" and tuple(attr[1].split()) == CELEBA_ATTRIBUTES and len(CELEBA_ATTRIBUTES) == 40
    rows = [line.split() for line in attr[2:]]
    assert [r[0] for r in rows] == [f"{i:06d}.jpg" for i in range(1, 201)]
    values = np.array([[int(v) for v in r[1:]] for r in rows])
    assert values.shape == (200, 40) and set(np.unique(values)) == {-1, 1}
    assert re.search(r"\.jpg -1  1|\.jpg  1 -1| -1  1 -1", "\n".join(attr[2:]))  # space-aligned like the real file
    male = values[:, CELEBA_ATTRIBUTES.index("Male")]
    assert 0.2 < np.mean(male == 1) < 0.7
    part = [line.split() for line in (tmp_path / "list_eval_partition.txt").read_text().splitlines()]
    labels = [int(p[1]) for p in part]
    assert [p[0] for p in part] == [r[0] for r in rows] and labels == sorted(labels)
    assert abs(labels.count(0) / 200 - 162770 / 202599) < 0.02 and labels.count(1) > 0 and labels.count(2) > 0
    ident = dict(line.split() for line in (tmp_path / "identity_CelebA.txt").read_text().splitlines())
    assert len(ident) == 200 and len(set(ident.values())) < 100
    by_part = [{ident[p[0]] for p in part if int(p[1]) == k} for k in range(3)]
    assert not (by_part[0] & by_part[1] or by_part[0] & by_part[2] or by_part[1] & by_part[2])
    img = tmp_path / "img_align_celeba" / "000001.jpg"
    assert _size(img) == (50, 61)
    synthesize("celeba", tmp_path / "default", 1)
    assert _size(tmp_path / "default" / "img_align_celeba" / "000001.jpg") == (178, 218)


def test_imdb_wiki_layout_and_mat_nesting(tmp_path):
    import scipy.io

    synthesize("imdb_wiki", tmp_path, 250, seed=0, size=32)
    crop = tmp_path / "imdb_crop"
    mat = scipy.io.loadmat(str(crop / "imdb.mat"))
    s = mat["imdb"][0, 0]
    dob, taken = s["dob"][0], s["photo_taken"][0]
    assert dob.shape == taken.shape == (250,) and dob.dtype.kind == "f"
    gender, score, second = s["gender"][0], s["face_score"][0], s["second_face_score"][0]
    assert set(np.unique(gender[~np.isnan(gender)])) <= {0.0, 1.0} and np.isnan(gender).any()
    assert np.isneginf(score).any() and np.isfinite(score).mean() > 0.9
    assert np.isnan(second).mean() > 0.6
    assert s["face_location"][0][0].shape == (1, 4)
    assert isinstance(s["name"][0][0][0], str) and len(s["celeb_id"][0]) == 250
    for i in range(250):
        rel = s["full_path"][0][i][0]
        m = IMDB_PATH.match(rel)
        assert m, rel
        assert int(m.group(1)) == int(m.group(2)) % 100
        born = datetime.fromordinal(int(dob[i])) + timedelta(days=dob[i] % 1) - timedelta(days=366)
        assert (born.year, born.month, born.day) == tuple(int(m.group(k)) for k in (4, 5, 6))
        assert int(m.group(7)) == int(taken[i])
        assert born.month < 7  # so every usual age formula agrees
        assert (crop / rel).is_file()
    ages = taken - np.array([int(s["full_path"][0][i][0].split("_")[2][:4]) for i in range(250)])
    assert ages.min() >= 1 and ages.max() <= 100
    assert _size(crop / s["full_path"][0][0][0]) == (32, 32)


# ------------------------------------------------------------------------------------- readers


def test_round_trip_utkface(tmp_path):
    from agegender.data.utkface import read_utkface

    summary = synthesize("utkface", tmp_path, 40, seed=0, size=32)
    samples = read_utkface(tmp_path)
    assert len(samples) == 40
    f = samples.frame
    assert (f["gender"] == 1).sum() == summary["counts"]["gender"]["female"]
    assert (f["race"] == 2).sum() == summary["counts"]["race"]["asian"]
    for _, row in f.iterrows():
        age, gender, race = Path(row["file"]).name.split("_")[:3]
        assert (row["age"], row["gender"], row["race"]) == (float(age), int(gender), int(race))


def test_round_trip_adience(tmp_path):
    from agegender.data.adience import read_adience

    synthesize("adience", tmp_path, 60, seed=0, size=32)
    samples = read_adience(tmp_path)
    assert len(samples) == 60 and not samples.missing and not samples.skipped
    f = samples.frame
    assert (f["age_group"] >= 0).all() and f["gender"].isin([0, 1]).all()
    assert f.groupby("group")["fold"].nunique().max() == 1


def test_round_trip_celeba(tmp_path):
    from agegender.data.celeba import read_celeba

    summary = synthesize("celeba", tmp_path, 40, seed=0, size=32)
    samples = read_celeba(tmp_path)
    assert len(samples) == 40 and not samples.missing
    f = samples.frame
    assert (f["gender"] == 0).sum() == summary["counts"]["gender"]["male"]
    assert set(f["partition"]) == {"train", "val", "test"}


def test_round_trip_imdb_wiki(tmp_path):
    from agegender.data.imdb_wiki import read_imdb_wiki

    summary = synthesize("imdb_wiki", tmp_path, 40, seed=0, size=32)
    samples = read_imdb_wiki(tmp_path)
    assert len(samples) == 40
    f = samples.frame
    names = [Path(p).name.split("_") for p in f["file"]]
    from_names = [int(parts[3][:4]) - int(parts[2][:4]) for parts in names]
    assert f["age"].tolist() == [float(a) for a in from_names]
    assert f["age"].min() == summary["counts"]["age"]["min"] and f["age"].max() == summary["counts"]["age"]["max"]


def test_generated_data_is_marked(tmp_path):
    from agegender.data.provenance import data_kind

    synthesize("utkface", tmp_path, 3, seed=0, size=32)
    assert data_kind(tmp_path, "utkface", 3) == "generated"


# ------------------------------------------------------------------------------------- real Adience metadata


def test_adience_real_fold_rows(tmp_path, adience_folds):
    summary = synthesize("adience", tmp_path, 200, seed=0, size=32, adience_folds_dir=adience_folds)
    assert summary["n"] == 200 and summary["counts"]["folds"] == [40] * 5
    for k in range(5):
        real = (adience_folds / f"fold_{k}_data.txt").read_text(encoding="utf-8").splitlines()
        ours = (tmp_path / f"fold_{k}_data.txt").read_text(encoding="utf-8").splitlines()
        assert ours[0] == real[0] and ours[1:] == real[1:41]
        for line in ours[1:]:
            r = line.split("\t")
            assert (tmp_path / "aligned" / r[0] / f"landmark_aligned_face.{r[2]}.{r[1]}").is_file()
    from agegender.data.adience import read_adience

    samples = read_adience(tmp_path, keep_duplicates=True)
    assert samples.files_seen == 200 and not samples.missing
    again = tmp_path / "again"
    synthesize("adience", again, 200, seed=0, size=32, adience_folds_dir=adience_folds)
    assert _files(again) == {k: v for k, v in _files(tmp_path).items() if not k.startswith("again/")}


def test_adience_real_folds_missing_file(tmp_path):
    with pytest.raises(DataError, match="fold_0_data.txt"):
        synthesize("adience", tmp_path / "out", 10, adience_folds_dir=tmp_path)


# ------------------------------------------------------------------------------------- learnability


def _learnability(seed: int = 0, n: int = 1500, n_test: int = 300, size: int = 64, epochs: int = 10) -> dict:
    """Draw faces with uniform labels (ages 1-100), train a small 3-head CNN on CPU, score the held-out part."""
    start = time.time()
    import keras

    rng = np.random.default_rng(seed)
    ages = np.round(rng.uniform(1, 100, n))
    genders = rng.integers(0, 2, n)
    races = rng.integers(0, 5, n)
    x = np.stack([draw_face(float(a), int(g), int(r), np.random.default_rng([seed, i]), size)
                  for i, (a, g, r) in enumerate(zip(ages, genders, races))])
    drawn = time.time()

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 3))
    h = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    for filters in (16, 32, 64, 96):
        h = keras.layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu")(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dropout(0.3)(h)
    h = keras.layers.Dense(64, activation="relu")(h)
    outputs = {"gender": keras.layers.Dense(1, activation="sigmoid", name="gender")(h),
               "age": keras.layers.Dense(1, name="age")(h),
               "race": keras.layers.Dense(5, activation="softmax", name="race")(h)}
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(2e-3),
                  loss={"gender": "binary_crossentropy", "age": "mse", "race": "sparse_categorical_crossentropy"},
                  loss_weights={"gender": 2.0, "age": 20.0, "race": 1.0})
    train, test = slice(0, n - n_test), slice(n - n_test, n)
    targets = {"gender": genders.astype("float32"), "age": (ages / 100).astype("float32"), "race": races}
    model.fit(x[train], {k: v[train] for k, v in targets.items()}, epochs=epochs, batch_size=32, verbose=0)
    pred = model.predict(x[test], batch_size=256, verbose=0)
    return {
        "gender_accuracy": float(np.mean((pred["gender"][:, 0] > 0.5) == genders[test])),
        "race_accuracy": float(np.mean(pred["race"].argmax(-1) == races[test])),
        "age_mae": float(np.mean(np.abs(pred["age"][:, 0] * 100 - ages[test]))),
        "age_mae_mean_baseline": float(np.mean(np.abs(ages[train].mean() - ages[test]))),
        "draw_seconds": drawn - start,
        "seconds": time.time() - start,
    }


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_faces_are_learnable_beyond_chance_within_a_minute():
    result = _learnability(seed=0)
    print(result)
    assert result["gender_accuracy"] >= 0.80, result
    assert result["race_accuracy"] >= 0.60, result
    assert result["age_mae"] <= 0.6 * result["age_mae_mean_baseline"], result
    assert result["seconds"] < 60, result


def test_draw_face_reports_the_head_box():
    from agegender.data.synth import draw_face

    rng = np.random.default_rng(3)
    for age, size in ((4, 64), (35, 120), (80, 200)):
        image, (x, y, w, h) = draw_face(age, 0, 1, rng, size=size, return_box=True)
        assert image.shape == (size, size, 3)
        assert 0 <= x < size / 2 < x + w <= size and 0 <= y < size / 2 < y + h <= size * 1.05
        assert 0.25 * size < w < 0.8 * size and 0.3 * size < h < 0.9 * size
