"""The numpy + Pillow loader (issue 20 item 2): the tf.data path's evaluation inputs within one grey level on real
faces, its rotation and HSV jitter, a uniform shuffle per epoch, augmentation in training only, worker processes,
undecodable files, and an import path free of TensorFlow."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from agegender.data.loader import Batches, decode_rgb, hsv_to_rgb, resize_uint8, rgb_to_hsv, rotate
from agegender.data.pipeline import Augment, Target

ROOT = Path(__file__).resolve().parents[1]
AGE = {"age": Target("age", "regression")}

# a finder that refuses TensorFlow, put first in sys.meta_path of a fresh interpreter
BLOCK_TENSORFLOW = textwrap.dedent("""
    import importlib.abc, sys
    class _NoTensorFlow(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "tensorflow" or name.startswith("tensorflow."):
                raise ImportError(f"{name} is blocked in this test")
    sys.meta_path.insert(0, _NoTensorFlow())
""")


def _pngs(folder: Path, n: int, size=(30, 26)) -> pd.DataFrame:
    """Lossless images whose pixels are known: each a different gradient, left and right unlike."""
    rows = []
    for i in range(n):
        x = np.arange(size[0])[None, :, None]
        y = np.arange(size[1])[:, None, None]
        pixels = ((x * (3 + i) + y * 7 + np.array([0, 60, 120]) + 11 * i) % 256).astype(np.uint8)
        path = folder / f"{i:03d}.png"
        Image.fromarray(pixels).save(path)
        rows.append({"path": str(path), "file": path.name, "age": float(i), "gender": i % 2})
    return pd.DataFrame(rows)


def _real(folder: Path, n: int) -> pd.DataFrame:
    files = sorted(folder.glob("*.jpg"))[:n]
    return pd.DataFrame({"path": [str(f) for f in files], "file": [f.name for f in files], "age": 30.0})


@pytest.mark.parametrize("size,load", [(128, None), (224, None), (48, 56)])
def test_evaluation_inputs_equal_the_tf_path_within_one_grey_level(utkface_sample, size, load):
    from agegender.data.pipeline import build_dataset

    frame = _real(utkface_sample, 40)
    tf_images = np.concatenate([b[0].numpy() for b in build_dataset(frame, AGE, image_size=size, load_size=load,
                                                                      batch_size=16, pixel_scale=1.0)])
    with Batches(frame, AGE, image_size=size, load_size=load, batch_size=16, pixel_scale=1.0, workers=0) as batches:
        ours = np.concatenate([b[0] for b in batches])
    assert ours.shape == tf_images.shape == (40, size, size, 3)
    difference = np.abs(ours - tf_images)
    assert difference.max() <= 1.0
    assert (difference > 0).mean() < 0.01  # nearly all equal: the same decode (fast DCT) and resize weights


def test_resize_agrees_with_pillows_triangle_filter():
    """Pillow's BILINEAR is the same triangle kernel, widened by the scale factor when shrinking (TensorFlow's
    antialiased resize), computed in fixed point: within one grey level when upscaling and shrinking 2x or more."""
    rng = np.random.default_rng(0)
    for shape, size in (((8, 8, 3), 16), ((64, 64, 3), 16), ((200, 200, 3), 64)):
        image = rng.integers(0, 256, shape).astype(np.uint8)
        pillow = np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR)).astype(int)
        assert np.abs(resize_uint8(image, size).astype(int) - pillow).max() <= 1
    image = rng.integers(0, 256, (30, 30, 3)).astype(np.uint8)
    assert resize_uint8(image, 30) is image  # the identity at the same size


def test_rotation_and_colour_space_match_tensorflow(utkface_sample):
    tf = pytest.importorskip("tensorflow")
    from agegender.data.pipeline import _rotate

    faces = np.stack([resize_uint8(decode_rgb(p), 48) for p in _real(utkface_sample, 4)["path"]]) / np.float32(255)
    faces = faces.astype(np.float32)
    angles = np.array([-0.17, -0.05, 0.08, 0.17], dtype=np.float32)
    np.testing.assert_allclose(rotate(faces, angles), _rotate(tf.constant(faces), tf.constant(angles)).numpy(),
                               atol=1e-5)
    np.testing.assert_allclose(rgb_to_hsv(faces), tf.image.rgb_to_hsv(faces).numpy(), atol=1e-6)
    hsv = np.random.default_rng(1).random((2, 20, 20, 3)).astype(np.float32)
    np.testing.assert_allclose(hsv_to_rgb(hsv), tf.image.hsv_to_rgb(hsv).numpy(), atol=1e-6)


def test_shuffle_is_a_uniform_permutation_per_epoch(tmp_path):
    from scipy.stats import chisquare

    frame = _pngs(tmp_path, 4)
    batches = Batches(frame, AGE, image_size=16, batch_size=4, training=True, seed=3, workers=0, cache=False)
    epochs = 4800
    orders = [tuple(batches.order(e)) for e in range(epochs)]
    assert all(sorted(o) == [0, 1, 2, 3] for o in orders)
    counts = pd.Series(orders).value_counts()
    assert len(counts) == 24  # every one of the 4! orders occurs
    assert chisquare(counts.to_numpy()).pvalue > 1e-4  # ... equally often (200 each expected)
    assert orders[:5] == [tuple(Batches(frame, AGE, image_size=16, batch_size=4, training=True, seed=3, workers=0,
                                        cache=False).order(e)) for e in range(5)]
    # the batches follow the order, each row once per epoch, and the next epoch brings the next order
    for epoch in range(3):
        served = np.concatenate([labels["age"].ravel() for _, labels, _ in batches]).astype(int)
        np.testing.assert_array_equal(served, batches.order(epoch))
    evaluation = Batches(frame, AGE, image_size=16, batch_size=3, workers=0)
    assert [b[1]["age"].ravel().tolist() for b in evaluation] == [[0, 1, 2], [3]]


def test_batches_prepared_in_this_process_run_blas_on_one_thread(tmp_path, monkeypatch):
    """workers=0: numpy's BLAS is limited to one thread while a batch is made (OpenBLAS's threads beside the
    training framework's slowed the resize ~16x on 2 busy cores), and given its threads back after."""
    from threadpoolctl import threadpool_info, threadpool_limits

    import agegender.data.loader as loader

    def blas_threads():
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    seen = []
    make = loader._make_batch

    def spy(*args):
        seen.append(blas_threads())
        return make(*args)

    monkeypatch.setattr(loader, "_make_batch", spy)
    with threadpool_limits(limits=2, user_api="blas"):  # the test workers run BLAS on one thread (conftest.py)
        before = blas_threads()
        if not before or max(before) < 2:
            pytest.skip("numpy's BLAS cannot run two threads here (a BLAS threadpoolctl cannot see)")
        batches = Batches(_pngs(tmp_path, 4), AGE, image_size=16, batch_size=2, workers=0)
        assert len(list(batches)) == 2
        assert seen == [[1] * len(before)] * 2 and blas_threads() == before


def test_augmentation_is_applied_in_training_only(tmp_path):
    frame = _pngs(tmp_path, 6)
    pixels = [resize_uint8(np.asarray(Image.open(p)), 24) for p in frame["path"]]
    centre = np.stack([p[2:22, 2:22] for p in pixels]).astype(np.float32)
    augment = Augment(flip=True)
    evaluation = next(iter(Batches(frame, AGE, image_size=20, load_size=24, batch_size=6, pixel_scale=1.0,
                                   workers=0)))[0]
    np.testing.assert_array_equal(evaluation, centre)
    ignored = next(iter(Batches(frame, AGE, image_size=20, load_size=24, batch_size=6, pixel_scale=1.0, workers=0,
                                augment=Augment(flip=True, rotation_deg=20, brightness=0.3))))[0]
    np.testing.assert_array_equal(ignored, centre)  # an augmentation outside training is ignored
    training = Batches(frame, AGE, image_size=20, load_size=24, batch_size=6, pixel_scale=1.0, workers=0,
                       training=True, augment=augment, seed=1)
    flipped = moved = 0
    for _ in range(4):
        images, labels, _ = training[0]
        for image, row in zip(images, labels["age"].ravel().astype(int)):
            windows = {(t, l, f) for t in range(5) for l in range(5) for f in (False, True)
                       if np.array_equal(image, (pixels[row][t:t + 20, l:l + 20, :][:, ::-1] if f else
                                                 pixels[row][t:t + 20, l:l + 20]))}
            assert windows, "a training image is a crop of its loaded image, mirrored or not"
            flipped += any(f for _, _, f in windows)
            moved += all((t, l) != (2, 2) for t, l, _ in windows)
        training.on_epoch_end()
    assert 0 < flipped < 24 and moved > 0
    jitter = Augment(flip=False, rotation_deg=10, brightness=0.2, contrast=0.2, saturation=0.2, hue=0.05)
    jittered = Batches(frame, AGE, image_size=24, batch_size=6, pixel_scale=1.0, workers=0, training=True,
                       augment=jitter)[0][0]
    assert jittered.min() >= 0 and jittered.max() <= 255 and not np.allclose(jittered, np.stack(pixels))


def test_workers_give_the_same_batches_and_blank_an_undecodable_file(tmp_path):
    frame = _pngs(tmp_path, 10)
    broken = tmp_path / "broken.png"  # a valid PNG header and end, nothing decodable between
    good = Path(frame["path"][0]).read_bytes()
    broken.write_bytes(good[:40] + b"\x00" * 50 + good[-12:])
    frame.loc[3, "path"] = str(broken)
    options = dict(image_size=16, load_size=20, batch_size=4, training=True, augment=Augment(flip=True), seed=5)
    local_report, pooled_report = [], []
    local = Batches(frame, AGE, workers=0, report=local_report, **options)
    expected = [list(local) for _ in range(2)]
    with Batches(frame, AGE, workers=2, report=pooled_report, **options) as pooled:
        got = [list(pooled) for _ in range(2)]
    for epoch_a, epoch_b in zip(expected, got):
        for (xa, ya, wa), (xb, yb, wb) in zip(epoch_a, epoch_b):
            np.testing.assert_array_equal(xa, xb)
            np.testing.assert_array_equal(ya["age"], yb["age"])
            np.testing.assert_array_equal(wa["age"], wb["age"])
    rows = np.concatenate([y["age"].ravel() for _, y, _ in got[0]]).astype(int)
    weights = np.concatenate([w["age"] for _, _, w in got[0]])
    images = np.concatenate([x for x, _, _ in got[0]])
    assert weights[rows == 3].tolist() == [0.0] and (weights[rows != 3] == 1).all()
    assert not images[rows == 3].any()
    assert [r["file"] for r in pooled_report] == [str(broken)] == [r["file"] for r in local_report]
    assert "cannot decode" in pooled_report[0]["reason"]


def test_the_loader_imports_and_serves_batches_with_tensorflow_blocked(tmp_path):
    frame = _pngs(tmp_path, 5)
    frame.to_csv(tmp_path / "rows.csv", index=False)
    script = BLOCK_TENSORFLOW + textwrap.dedent(f"""
        import pandas as pd
        from agegender.data.loader import Batches
        from agegender.data.pipeline import Augment, Target
        frame = pd.read_csv({str(tmp_path / "rows.csv")!r})
        batches = Batches(frame, {{"age": Target("age", "regression")}}, image_size=16, batch_size=4, training=True,
                          augment=Augment(flip=True, rotation_deg=5, hue=0.02), workers=0)
        shapes = [images.shape for images, labels, weights in batches]
        assert shapes == [(4, 16, 16, 3), (1, 16, 16, 3)], shapes
        assert not [m for m in sys.modules if m.split(".")[0] == "tensorflow"]
        print("ok")
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok"


def test_the_pipeline_benchmark_times_the_loader(tmp_path):
    from agegender.bench import _loader_passes, markdown

    frame = _pngs(tmp_path, 12)
    rates, workers = _loader_passes(list(frame["path"]), 16, 4, 2, workers=0)()
    assert len(rates) == 2 and min(rates) > 0 and workers == 0
    row = {"benchmark": "pipeline", "data": "given", "images": 12, "size": 16, "naive_img_s": 1, "first_epoch_img_s": 2,
           "cached_img_s": 3, "decode_limit_img_s": 4, "first_epoch_vs_decode_limit": 0.5,
           "cached_vs_decode_limit": 0.75, "machine": {"cpu_count": 2}, "loader_first_epoch_img_s": round(rates[0], 1),
           "loader_cached_img_s": round(rates[1], 1), "loader_workers": 0}
    table = markdown([row])
    assert f"| given | 12 | 16 | 0 | {round(rates[0], 1)} | {round(rates[1], 1)} | 2 | 3 |" in table


def test_workers_that_cannot_start_are_an_error_not_a_hang(tmp_path):
    frame = _pngs(tmp_path, 4)
    batches = Batches(frame, AGE, image_size=16, batch_size=2, workers=1)
    os.unlink(batches._spec["cache_file"])  # each worker opens the shared cache at start: now it cannot
    with pytest.raises(RuntimeError, match="worker processes stopped"):
        batches[0]
    batches.close()
