"""TFDS builders (agegender.data.tfds_builders), the prepared-data reading side and bench_scale."""

from __future__ import annotations

import io
import json
import time
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from agegender.data.samples import COLUMNS
from agegender.errors import DataError

SOURCES = ("utkface", "adience", "celeba", "imdb_wiki")
N = 24
HTML = b"<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></head><body></body></html>\n"


def _reader(source, raw):
    from agegender.data.audit import read_dataset
    from agegender.data.synth import CELEBA_ATTRIBUTES

    return read_dataset(source, raw, **({"attributes": CELEBA_ATTRIBUTES} if source == "celeba" else {}))


def _raw(tmp_path_factory, source) -> tuple[Path, dict]:
    """A generated folder with one truncated JPEG and one HTML page named as an image (and, for UTKFace,
    a malformed name); returns it and {file: expected stage} of what prepare must skip."""
    from agegender.data.synth import synthesize

    raw = tmp_path_factory.mktemp(f"raw_{source}")
    synthesize(source, raw, N, 3, size=32)
    files = sorted(_reader(source, raw).frame["file"])
    truncated, html = files[1], files[-2]
    data = (raw / truncated).read_bytes()
    (raw / truncated).write_bytes(data[: len(data) // 2])
    (raw / html).write_bytes(HTML)
    expected = {truncated: "image", html: "image"}
    if source == "utkface":
        (raw / "abc_1_0_20170109150557335.jpg.chip.jpg").write_bytes(data)
        expected["abc_1_0_20170109150557335.jpg.chip.jpg"] = "labels"
    return raw, expected


@pytest.fixture(scope="module", params=SOURCES)
def prepared(request, tmp_path_factory):
    """(source, raw folder, tfds data_dir, expected skips), prepared through tfds.load as a user would."""
    import tensorflow_datasets as tfds

    import agegender.data.tfds_builders  # noqa: F401 - registers the builders
    from agegender.data.prepared import TFDS_NAMES

    source = request.param
    raw, expected = _raw(tmp_path_factory, source)
    data_dir = tmp_path_factory.mktemp(f"tfds_{source}")
    config = tfds.download.DownloadConfig(manual_dir=str(raw))
    ds = tfds.load(TFDS_NAMES[source], data_dir=str(data_dir), split="train",
                   decoders={"image": tfds.decode.SkipDecoding()},
                   download_and_prepare_kwargs={"download_config": config})
    return source, raw, data_dir, expected, list(tfds.as_numpy(ds))


def test_tfds_load_prepares_reader_labels(prepared):
    source, raw, data_dir, expected, examples = prepared
    reader = _reader(source, raw).frame
    usable = reader[~reader["file"].isin(expected)].set_index("file")
    assert len(examples) == len(usable) == len(reader) - sum(s == "image" for s in expected.values())
    got = {ex["file"].decode(): ex for ex in examples}
    assert set(got) == set(usable.index)
    for rel, row in usable.iterrows():
        ex = got[rel]
        assert ex["age"] == (row["age"] if np.isfinite(row["age"]) else -1)
        for column in ("age_group", "gender", "race"):
            assert ex[column] == row[column], (rel, column)
        assert ex["group"].decode() == row["group"]
        assert (raw / rel).read_bytes() == ex["image"]  # the original bytes, not re-encoded
        if source == "adience":
            assert ex["fold"] == row["fold"] and ex["age_label"].decode() == row["age_label"]
        if source == "celeba":
            assert ex["partition"].decode() == row["partition"]
            assert all(ex["attributes"][a] == row[a] for a in ("Male", "Young", "Eyeglasses", "Smiling"))
        if source == "imdb_wiki":
            assert ex["face_score"] == pytest.approx(row["face_score"], rel=1e-6)


def test_unusable_files_are_skipped_and_listed(prepared):
    source, raw, data_dir, expected, _ = prepared
    from agegender.data.prepared import prepare

    folder = next(data_dir.glob("*/1.0.0"))
    listed = json.loads((folder / "skipped.json").read_text())
    by_file = {item["file"]: item for item in listed}
    assert set(expected) <= set(by_file)
    assert {by_file[f]["stage"] for f in expected} == set(expected.values())
    reasons = [by_file[f]["reason"] for f, stage in expected.items() if stage == "image"]
    assert any("truncated JPEG" in r for r in reasons) and any("HTML page" in r for r in reasons)
    result = prepare(source, raw, data_dir)
    assert result["reused"] and result["skipped"] == listed
    report = json.loads((folder / "prepared.json").read_text())
    assert report["manual_dir"] == str(raw.resolve()) and report["examples"] == result["examples"]


def test_read_prepared_returns_the_reader_table(prepared):
    source, raw, data_dir, expected, _ = prepared
    from agegender.data.prepared import TFDS_NAMES, read_prepared
    from agegender.data.provenance import data_kind

    samples = read_prepared(source, data_dir)
    frame = samples.frame
    assert tuple(frame.columns[: len(COLUMNS)]) == COLUMNS
    name = TFDS_NAMES[source]
    assert (frame["path"] == "tfds://" + name + "/" + frame["file"]).all()
    assert (frame["prepared_name"] == name).all() and (frame["prepared_split"] == "train").all()
    assert (frame["prepared_dir"] == str(data_dir.resolve())).all()
    reader = _reader(source, raw).frame
    if source == "celeba":
        reader = reader.drop(columns=[c for c in reader.columns if c not in frame.columns])
    reader = reader[~reader["file"].isin(expected)].reset_index(drop=True)  # same rows, same order
    shared = [c for c in reader.columns if c != "path"]
    pd.testing.assert_frame_equal(frame[shared], reader[shared], check_dtype=True, rtol=1e-6)
    assert {s["file"] for s in samples.skipped} >= set(expected)
    assert data_kind(samples.root, source, len(frame)) == "generated"


def test_image_dataset_streams_exactly_the_subset(prepared):
    source, raw, data_dir, _, _ = prepared
    import tensorflow as tf

    from agegender.data.prepared import image_dataset, read_prepared

    frame = read_prepared(source, data_dir).frame
    subset = pd.concat([frame.iloc[::3], frame.iloc[[3]]]).sample(frac=1.0, random_state=1)  # reordered, one twice
    subset = subset.set_index(np.arange(100, 100 + len(subset)))  # positions count, not labels
    ds = image_dataset(subset)
    assert ds.element_spec == (tf.TensorSpec((), tf.int64), tf.TensorSpec((), tf.string))
    got = list(ds.as_numpy_iterator())
    rows = sorted(int(r) for r, _ in got)
    assert rows == list(range(len(subset)))
    files = subset["file"].to_numpy()
    assert sum(files[r] == frame["file"].iloc[3] for r, _ in got) == 2
    for row, data in got:
        original = (raw / files[row]).read_bytes()
        assert data == original
        decoded = tf.io.decode_image(data, channels=3).numpy()
        assert np.array_equal(decoded, tf.io.decode_image(original, channels=3).numpy())
        assert decoded.shape[-1] == 3 and decoded.shape[0] >= 32


def test_image_dataset_concatenates_two_prepared_sources(tmp_path):
    from agegender.data.prepared import image_dataset, prepare, read_prepared
    from agegender.data.synth import synthesize

    frames = []
    for source in ("utkface", "imdb_wiki"):
        synthesize(source, tmp_path / source, 6, 0, size=24)
        prepare(source, tmp_path / source, tmp_path / "tfds")
        frames.append(read_prepared(source, tmp_path / "tfds").frame.iloc[:4])
    frame = pd.concat(frames)
    rows = sorted(int(r) for r, _ in image_dataset(frame).as_numpy_iterator())
    assert rows == list(range(8))


def test_prepare_is_idempotent(tmp_path):
    from agegender.data.prepared import prepare
    from agegender.data.synth import synthesize

    synthesize("utkface", tmp_path / "raw", 10, 0, size=24)
    first = prepare("utkface", tmp_path / "raw", tmp_path / "tfds")
    assert not first["reused"] and first["examples"] == 10 and first["skipped"] == []
    records = sorted(Path(first["data_dir"]).glob("*.tfrecord*"))
    stamps = [p.stat().st_mtime_ns for p in records]
    start = time.perf_counter()
    second = prepare("utkface", tmp_path / "raw", tmp_path / "tfds")
    assert time.perf_counter() - start < 2.0
    assert second["reused"] and second["examples"] == 10 and second["data_dir"] == first["data_dir"]
    assert [p.stat().st_mtime_ns for p in sorted(Path(first["data_dir"]).glob("*.tfrecord*"))] == stamps
    synthesize("utkface", tmp_path / "other", 5, 1, size=24)
    with pytest.raises(DataError, match="was prepared from"):
        prepare("utkface", tmp_path / "other", tmp_path / "tfds")


def test_spilling_writer_gives_the_same_records(tmp_path, monkeypatch):
    """With a 1-byte memory buffer TFDS spills every example to its temporary buckets: same result."""
    from tensorflow_datasets.core import shuffle

    import agegender.data.tfds_builders as builders
    from agegender.data.prepared import prepare, read_prepared
    from agegender.data.synth import synthesize

    synthesize("celeba", tmp_path / "raw", 12, 0, size=24)
    prepare("celeba", tmp_path / "raw", tmp_path / "in_memory")
    saved = shuffle.MAX_MEM_BUFFER_SIZE
    spilled = []
    add = shuffle._Bucket.add
    monkeypatch.setattr(shuffle._Bucket, "add", lambda self, key, data: spilled.append(1) or add(self, key, data))
    monkeypatch.setattr(builders, "SHUFFLE_MEMORY_BYTES", 1)
    prepare("celeba", tmp_path / "raw", tmp_path / "spilled")
    assert len(spilled) == 12 and shuffle.MAX_MEM_BUFFER_SIZE == saved
    a = read_prepared("celeba", tmp_path / "in_memory").frame.drop(columns="prepared_dir")
    b = read_prepared("celeba", tmp_path / "spilled").frame.drop(columns="prepared_dir")
    pd.testing.assert_frame_equal(a, b)


def test_missing_or_wrong_manual_dir_names_it(tmp_path):
    import tensorflow_datasets as tfds

    import agegender.data.tfds_builders  # noqa: F401
    from agegender.data.prepared import prepare

    absent = tmp_path / "no_such_folder"
    with pytest.raises(DataError, match="no_such_folder.*does not exist.*UTKFace images"):
        prepare("utkface", absent, tmp_path / "tfds")
    config = tfds.download.DownloadConfig(manual_dir=str(absent))
    with pytest.raises(DataError, match="no_such_folder.*manual_dir of adience_faces is missing.*fold_0_data"):
        tfds.load("adience_faces", data_dir=str(tmp_path / "tfds"),
                  download_and_prepare_kwargs={"download_config": config})
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / "notes.txt").write_text("not a dataset\n")
    with pytest.raises(DataError, match="wrong.*fold files not found"):
        prepare("adience", wrong, tmp_path / "tfds")
    assert not list((tmp_path / "tfds").glob("adience_faces/1.0.0/*.tfrecord*"))


def test_html_label_file_is_rejected_by_the_reader(tmp_path):
    from agegender.data.prepared import prepare
    from agegender.data.synth import synthesize

    synthesize("celeba", tmp_path / "raw", 6, 0, size=24)
    (tmp_path / "raw" / "list_attr_celeba.txt").write_bytes(HTML)
    with pytest.raises(DataError, match="list_attr_celeba.txt.*web page"):
        prepare("celeba", tmp_path / "raw", tmp_path / "tfds")


def test_read_prepared_without_data_says_how_to_prepare(tmp_path):
    from agegender.data.prepared import image_dataset, read_prepared

    with pytest.raises(DataError, match=r"empty.*no prepared celeb_a_faces.*python -m agegender.data prepare celeba"):
        read_prepared("celeba", tmp_path / "empty")
    with pytest.raises(ValueError, match="read_prepared"):
        image_dataset(pd.DataFrame({"file": ["a.jpg"]}))
    with pytest.raises(ValueError, match="not from read_prepared"):
        image_dataset(pd.DataFrame({"file": ["a.jpg"], "prepared_dir": [None], "prepared_name": [None],
                                    "prepared_split": [None]}))


def test_cli_prepare(tmp_path, capsys):
    from agegender.data.__main__ import main
    from agegender.data.synth import synthesize

    synthesize("imdb_wiki", tmp_path / "raw", 8, 0, size=24)
    assert main(["prepare", "imdb_wiki", "--data-dir", str(tmp_path / "raw"), "--tfds-dir", str(tmp_path / "out")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["name"] == "imdb_wiki_faces" and result["examples"] == 8 and result["skipped"]["count"] == 0
    assert main(["prepare", "utkface", "--data-dir", str(tmp_path / "none"), "--tfds-dir", str(tmp_path / "o")]) == 2
    assert "none" in capsys.readouterr().err


def test_measure_scale_tiny(tmp_path):
    from agegender.bench_scale import measure_scale

    with redirect_stdout(io.StringIO()):
        result = measure_scale((40, 20), source="utkface", workdir=tmp_path, size=32, progress=False)
    assert [r["n"] for r in result["rows"]] == [20, 40]
    for row in result["rows"]:
        assert row["examples"] == row["n"]
        for key in ("audit_s", "prepare_s", "first_epoch_s", "audit_ms_per_image", "prepare_ms_per_image",
                    "first_epoch_ms_per_image"):
            assert row[key] > 0, key
    for phase in ("audit", "prepare", "first_epoch"):
        entry = result["linearity"][phase]
        assert set(entry) == {"per_image_ratio_largest_vs_smallest", "intercept_s", "slope_ms_per_image",
                              "max_rel_deviation", "r2"}
        assert entry["per_image_ratio_largest_vs_smallest"] > 0
    again = measure_scale((20,), source="utkface", workdir=tmp_path, size=32, progress=False)
    assert again["rows"][0]["synth_s"] == 0.0  # the generated folder is cached


@pytest.mark.slow
def test_measure_memory_tiny(tmp_path):
    from agegender.bench_scale import measure_memory

    result = measure_memory(40, source="celeba", workdir=tmp_path, size=32, progress=False)
    for key in ("baseline_peak_mb", "prepare_peak_mb", "read_peak_mb", "decoded_mb", "resized_mb", "raw_mb",
                "prepared_mb", "label_table_mb", "prepare_s", "read_s"):
        assert result[key] > 0, key
    assert result["examples"] == result["images_read"] == 40
    assert result["image_shape"] == [39, 32, 3]
    assert result["decoded_mb"] == pytest.approx(40 * 39 * 32 * 3 / 2**20, abs=0.05)
    assert result["prepare_peak_mb"] >= result["baseline_peak_mb"] * 0.8
