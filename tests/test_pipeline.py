"""tf.data pipeline: shapes, dtypes, masks, determinism, and corrupt files skipped *and reported*."""

import numpy as np
import pytest
from PIL import Image

from agegender.data.pipeline import Augment, Target, build_dataset, check_images
from agegender.data.samples import normalize_frame


def _images(folder, n=12, size=40):
    rows = []
    for i in range(n):
        path = folder / f"{i:03d}.jpg"
        colour = (20 * i % 255, 255 - 20 * i % 255, 100)
        Image.new("RGB", (size, size + 8), colour).save(path, quality=95)
        rows.append({"path": str(path), "file": path.name, "age": float(10 + i), "gender": i % 2,
                     "race": -1 if i % 3 == 0 else i % 5, "group": str(i), "source": "test"})
    return rows


TARGETS = {"age": Target("age", "regression", scale=0.01), "gender": Target("gender", "binary"),
           "race": Target("race", "sparse")}


def test_shapes_dtypes_and_masks(tmp_path):
    frame = normalize_frame(_images(tmp_path))
    ds = build_dataset(frame, TARGETS, image_size=32, batch_size=5)
    batches = list(ds)
    assert [len(b[0]) for b in batches] == [5, 5, 2]
    images, labels, weights = batches[0]
    assert images.shape == (5, 32, 32, 3) and images.dtype.name == "float32"
    # each image is its file's one colour scaled by 1/255 (the colours of _images: (20i, 255 - 20i, 100))
    want = np.array([[20 * i % 255, 255 - 20 * i % 255, 100] for i in range(5)], dtype=np.float32) / 255
    np.testing.assert_allclose(images.numpy().mean(axis=(1, 2)), want, atol=3 / 255)
    assert labels["age"].shape == (5, 1) and labels["gender"].shape == (5, 1) and labels["race"].shape == (5,)
    np.testing.assert_allclose(labels["age"].numpy().ravel(), [0.10, 0.11, 0.12, 0.13, 0.14], atol=1e-6)
    assert weights["race"].numpy().tolist() == [0, 1, 1, 0, 1]  # race -1 is masked, not dropped
    assert labels["race"].numpy()[0] == 0  # masked labels are filled with a valid class
    # colour survives decode + resize: image 1 is (20, 235, 100)
    np.testing.assert_allclose(images.numpy()[1].mean(axis=(0, 1)) * 255, [20, 235, 100], atol=3)


def test_training_crops_and_is_deterministic_for_a_seed(tmp_path):
    frame = normalize_frame(_images(tmp_path, size=60))
    augment = Augment(flip=True, rotation_deg=10, brightness=0.1, contrast=0.1, saturation=0.1, hue=0.02)
    make = lambda seed: build_dataset(frame, TARGETS, image_size=48, load_size=56, batch_size=12,  # noqa: E731
                                      training=True, augment=augment, seed=seed)
    first, second, other = next(iter(make(7))), next(iter(make(7))), next(iter(make(8)))
    assert first[0].shape == (12, 48, 48, 3)
    np.testing.assert_array_equal(first[0].numpy(), second[0].numpy())
    np.testing.assert_array_equal(first[1]["age"].numpy(), second[1]["age"].numpy())
    assert not np.array_equal(first[0].numpy(), other[0].numpy())
    evaluation = next(iter(build_dataset(frame, TARGETS, image_size=48, load_size=56, batch_size=12)))
    assert evaluation[0].shape == (12, 48, 48, 3)


def test_pixel_scale_raw(tmp_path):
    frame = normalize_frame(_images(tmp_path, n=2))
    images = next(iter(build_dataset(frame, TARGETS, image_size=16, pixel_scale=1.0)))[0].numpy()
    assert images.max() > 200


def test_corrupt_files_are_skipped_and_reported(tmp_path):
    rows = _images(tmp_path, n=6)
    good = tmp_path / "000.jpg"
    bad = {
        "truncated.jpg": good.read_bytes()[: len(good.read_bytes()) // 2],
        "empty.jpg": b"",
        "page.jpg": b"<!DOCTYPE html><html><body>quota exceeded</body></html>",
        "random.jpg": b"\x00\x01garbage" * 20,
    }
    for name, data in bad.items():
        (tmp_path / name).write_bytes(data)
    png = tmp_path / "really_png.jpg"
    Image.new("RGB", (30, 30), (0, 0, 255)).save(png, format="PNG")
    extra = [*bad, "really_png.jpg", "absent.jpg"]
    rows += [{"path": str(tmp_path / n), "file": n, "age": 30.0, "gender": 1} for n in extra]
    report = []
    ds = build_dataset(normalize_frame(rows), TARGETS, image_size=16, batch_size=64, report=report)
    images = next(iter(ds))[0]
    assert len(images) == 7  # 6 good + the PNG named .jpg
    reasons = {item["file"].rsplit("/", 1)[-1]: item["reason"] for item in report}
    assert set(reasons) == {"truncated.jpg", "empty.jpg", "page.jpg", "random.jpg", "absent.jpg"}
    assert "truncated" in reasons["truncated.jpg"] and "0 bytes" in reasons["empty.jpg"]
    assert "HTML" in reasons["page.jpg"] and "not found" in reasons["absent.jpg"]
    assert check_images([png]).ok.tolist() == [True]


def test_all_bad_raises(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"")
    frame = normalize_frame([{"path": str(tmp_path / "a.jpg"), "file": "a.jpg", "age": 3.0}])
    with pytest.raises(ValueError, match="no usable images"):
        build_dataset(frame, TARGETS, image_size=8)


def test_unknown_target_column(tmp_path):
    frame = normalize_frame(_images(tmp_path, n=2))
    with pytest.raises(KeyError, match="Young"):
        build_dataset(frame, {"young": Target("Young", "binary")}, image_size=8)


def test_cache_goes_to_disk_when_the_decoded_images_exceed_the_budget(tmp_path, monkeypatch, capsys):
    import glob

    import pandas as pd
    from PIL import Image

    from agegender.data.pipeline import Target, build_dataset, memory_cache_budget

    for i in range(6):
        Image.new("RGB", (20, 20), (40 * i, 0, 0)).save(tmp_path / f"{i}.jpg")
    frame = pd.DataFrame({"path": sorted(str(p) for p in tmp_path.glob("*.jpg")), "age": 30.0})
    monkeypatch.setenv("AGEGENDER_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("AGEGENDER_CACHE_GB", str(6 * 16 * 16 * 3 / 2**30))  # exactly fits: memory
    assert memory_cache_budget() == 6 * 16 * 16 * 3
    small = [b[0].numpy() for b in build_dataset(frame, {"age": Target("age", "regression")}, image_size=16)]
    assert not glob.glob(str(tmp_path / "agegender-cache-*"))
    monkeypatch.setenv("AGEGENDER_CACHE_GB", str(5 * 16 * 16 * 3 / 2**30))  # one image short: disk
    ds = build_dataset(frame, {"age": Target("age", "regression")}, image_size=16)
    assert "caching on disk" in capsys.readouterr().err
    first, second = [[b[0].numpy() for b in ds] for _ in range(2)]
    assert glob.glob(str(tmp_path / "agegender-cache-*" / "images*"))  # the cache files exist on disk
    for a, b, c in zip(small, first, second):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(b, c)


@pytest.mark.parametrize("options", [{}, {"progressive": True}, {"exif": b"Exif\x00\x00" + b"\x00" * 60_000},
                                     {"subsampling": 0, "quality": 100}, {"optimize": True, "restart_marker_rows": 1}])
def test_jpeg_header_size_matches_pillow(tmp_path, options):
    from agegender.data.pipeline import _header_size

    rng = np.random.default_rng(0)
    path = tmp_path / "face.jpg"
    save = dict(options)
    restart = save.pop("restart_marker_rows", None)
    if restart:
        save["restart_marker_rows"] = restart
    Image.fromarray(rng.integers(0, 255, (37, 53, 3), dtype=np.uint8)).save(path, **save)
    head = path.read_bytes()[:65_536]
    assert _header_size("jpeg", head) == (53, 37)
    assert _header_size("jpeg", head[:100]) is None  # the frame header lies past the bytes read: Pillow decides
    assert check_images([path]).ok.tolist() == [True]


def test_augmentation_is_per_image_and_reproducible(tmp_path):
    import pandas as pd

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)
    for i in range(32):
        Image.fromarray(image).save(tmp_path / f"{i:02d}.png")
    frame = pd.DataFrame({"path": sorted(str(p) for p in tmp_path.glob("*.png")), "age": 30.0})

    def epoch(seed):
        ds = build_dataset(frame, {"age": Target("age", "regression")}, image_size=16, load_size=24, batch_size=32,
                           training=True, augment=Augment(flip=True), seed=seed, pixel_scale=1.0)
        return next(iter(ds))[0].numpy()

    a, b, c = epoch(0), epoch(0), epoch(1)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 0
    # every view is a 16-pixel crop of the one source image, some mirrored, and the views differ
    views = {tuple(v.ravel()) for v in a}
    assert len(views) > 8
    crops = {(t, l, f) for t in range(9) for l in range(9) for f in (0, 1)}
    found = set()
    for view in a:
        for t, l, f in crops:
            crop = image[t:t + 16, l:l + 16]
            if np.array_equal(view, crop[:, ::-1] if f else crop):
                found.add(f)
                break
        else:
            raise AssertionError("a training view is not a crop of the image")
    assert found == {0, 1}


@pytest.mark.parametrize("load", [12, 16])
def test_batch_ops_on_a_short_last_batch_match_a_numpy_crop_and_flip(load):
    """The per-batch crop/flip/scale (padded to the full batch for XLA) gives exactly the requested
    views, on a full batch and on a short last one."""
    import tensorflow as tf

    from agegender.data.pipeline import _batch_ops

    rng = np.random.default_rng(load)
    select, finish = _batch_ops(12, 0.5, 8)
    for count in (8, 5, 1):
        images = rng.integers(0, 255, (count, load, load, 3), dtype=np.uint8)
        top, left = rng.integers(0, load - 11, count), rng.integers(0, load - 11, count)
        flip = rng.random(count) < 0.5
        out = select(tf.constant(images), tf.constant(top, tf.int32), tf.constant(left, tf.int32), tf.constant(flip),
                     tf.constant(0.5)).numpy()
        assert out.shape == (count, 12, 12, 3) and out.dtype == np.float32
        for i in range(count):
            crop = images[i, top[i]:top[i] + 12, left[i]:left[i] + 12].astype(np.float32) * 0.5
            np.testing.assert_array_equal(out[i], crop[:, ::-1] if flip[i] else crop)
        start = (load - 12) // 2
        np.testing.assert_allclose(finish(tf.constant(images)).numpy(),
                                   images[:, start:start + 12, start:start + 12].astype(np.float32) * 0.5)


@pytest.mark.slow
def test_prepared_tfds_data_gives_the_raw_folders_batches(tmp_path):
    """build_dataset over TFDS-prepared data: the same images and labels as over the raw folder (row order
    aside: prepared records stream in storage order)."""
    from agegender.data.prepared import prepare, read_prepared
    from agegender.data.synth import synthesize
    from agegender.data.utkface import read_utkface

    synthesize("utkface", tmp_path / "raw", 30, 5, size=40)
    prepare("utkface", tmp_path / "raw", tmp_path / "tfds")
    raw = read_utkface(tmp_path / "raw").frame
    tfds_frame = read_prepared("utkface", tmp_path / "tfds").frame
    subset = tfds_frame[tfds_frame["age"] > 20].sample(frac=1.0, random_state=0)  # a split: any subset, any order
    targets = {"age": Target("age", "regression"), "gender": Target("gender", "sparse")}

    def by_age_gender(frame):
        ds = build_dataset(frame, targets, image_size=24, batch_size=7, pixel_scale=1.0)
        out = {}
        for images, labels, _ in ds:
            for image, age, gender in zip(images.numpy(), labels["age"].numpy()[:, 0], labels["gender"].numpy()):
                out.setdefault((float(age), int(gender)), []).append(image.sum())
        return {k: sorted(v) for k, v in out.items()}

    expected = by_age_gender(raw[raw["age"] > 20])
    got = by_age_gender(subset)
    assert sum(map(len, got.values())) == len(subset) == int((raw["age"] > 20).sum()) > 5
    assert got.keys() == expected.keys()
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key])


def _spearman(a, b) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


@pytest.mark.parametrize("where", ["memory", "paths", "uncached"])
def test_every_epoch_is_a_uniform_shuffle_of_a_frame_sorted_by_group(tmp_path, monkeypatch, where):
    """Issue 18 item 1: rows arrive sorted by a group column (as Adience's and CelebA's readers give them, grouped
    by user), more rows than any bounded shuffle buffer of a few thousand. Each epoch must be a fresh uniform
    permutation: the groups' mean positions in two epochs are uncorrelated (with each other and with the frame
    order), a row's positions in two epochs are uncorrelated, and the first tenth of an epoch holds rows from all
    groups alike, not the first groups. Checked for the in-memory cache, the too-large-for-memory route and
    ``cache=False``."""
    import pandas as pd

    from agegender.data.pipeline import training_order

    n, n_groups = 12_000, 200
    face = tmp_path / "face.png"
    Image.new("RGB", (8, 8), (90, 10, 200)).save(face)
    group = np.arange(n) // (n // n_groups)  # sorted: group 0 first, group 199 last
    frame = pd.DataFrame({"path": str(face), "file": [f"{g}/{i}.png" for i, g in enumerate(group)],
                          "row": np.arange(n, dtype=float), "group": group})
    if where == "paths":
        monkeypatch.setenv("AGEGENDER_CACHE_GB", "0")  # the decoded set "does not fit": decoded every epoch
    cache = where != "uncached"
    assert training_order(n * 8 * 8 * 3, cache) == ("memory" if where == "memory" else "paths")
    ds = build_dataset(frame, {"row": Target("row", "regression")}, image_size=8, batch_size=500, training=True,
                       check=False, cache=cache, seed=3)
    orders = [np.concatenate([y["row"].numpy().ravel() for _, y, _ in ds]).astype(int) for _ in range(2)]
    for order in orders:
        np.testing.assert_array_equal(np.sort(order), np.arange(n))  # each epoch: every row once
    assert not np.array_equal(orders[0], orders[1])

    size = np.bincount(group)
    mean_position = []
    for order in orders:
        position = np.empty(n)
        position[order] = np.arange(n)
        mean_position.append(np.bincount(group, weights=position) / size)
    # under independent uniform permutations each correlation below has sd 1/sqrt(199) = 0.07 (groups) or
    # 1/sqrt(11,999) = 0.009 (rows); a 4,096-row buffer over sorted rows gives about 0.9 for all of them
    assert abs(_spearman(mean_position[0], mean_position[1])) < 0.3
    for e in (0, 1):
        assert abs(_spearman(mean_position[e], np.arange(n_groups))) < 0.3
    positions = [np.argsort(order) for order in orders]
    assert abs(_spearman(positions[0], positions[1])) < 0.05
    # the first tenth of each epoch: the mean group index of a uniform draw is 99.5 with sd 57.7/sqrt(1200) = 1.7
    for order in orders:
        early = group[order[: n // 10]]
        assert abs(early.mean() - (n_groups - 1) / 2) < 6 * np.sqrt((n_groups**2 - 1) / 12 / (n // 10))
        assert len(np.unique(early)) > 0.9 * n_groups  # nearly every group is already seen


def test_the_whole_set_shuffle_keeps_references_not_copies(tmp_path):
    """The in-memory shuffle buffer of the whole set holds references to the cached images: memory does not
    double, and a cached epoch (a refill of the buffer from the cache) stays cheap."""
    import resource
    import sys
    import time

    import pandas as pd

    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    n = 2_400  # 2,400 x 128 x 128 x 3 = 118 MB decoded
    frame = pd.DataFrame({"path": [str(tmp_path / f"{i % 8}.png") for i in range(n)], "age": 30.0})
    ds = build_dataset(frame, {"age": Target("age", "regression")}, image_size=128, batch_size=200, training=True,
                       check=False, seed=0)
    def peak_mb():  # ru_maxrss: kilobytes on Linux, bytes on macOS
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)

    for _ in ds:  # the first epoch fills the cache
        pass
    after_first = peak_mb()
    start = time.perf_counter()
    for _ in range(2):
        for _ in ds:
            pass
    seconds = (time.perf_counter() - start) / 2
    grown = peak_mb() - after_first
    assert grown < 60, f"peak memory grew by {grown:.0f} MB over two cached epochs (the decoded set is 118 MB)"
    assert seconds < 5, f"a cached epoch of {n} images took {seconds:.1f} s"


def test_portable_report_names_skipped_files_without_machine_paths(tmp_path):
    """A run record holds the skipped images by their data-relative ``file`` (or, failing that, their name)."""
    from agegender.data.pipeline import portable_report

    frame = normalize_frame([{"path": str(tmp_path / "u1" / "a.jpg"), "file": "u1/a.jpg", "age": 3.0}])
    report = [{"file": str(tmp_path / "u1" / "a.jpg"), "reason": "empty file (0 bytes)"},
              {"file": str(tmp_path / "elsewhere" / "b.jpg"), "reason": "file not found"}]
    assert portable_report(report, frame) == [{"file": "u1/a.jpg", "reason": "empty file (0 bytes)"},
                                              {"file": "b.jpg", "reason": "file not found"}]


def test_portable_notes_name_the_data_folder_relatively(tmp_path, monkeypatch):
    from agegender.data.pipeline import portable_notes

    monkeypatch.setenv("AGEGENDER_DATA_ROOT", str(tmp_path))
    root = tmp_path / "celeba"
    root.mkdir()
    notes = [f"3 of 9 images are absent from {root.resolve()}/img_align_celeba", "no identity file"]
    assert portable_notes(notes, root) == ["3 of 9 images are absent from celeba/img_align_celeba", "no identity file"]
