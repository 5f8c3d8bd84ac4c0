"""The dataset pack (issue 20 item 3) on a few hundred real UTKFace files: the reader accepts it like the raw folder
(same rows, same split), the skipped-file report and provenance travel with it, its images are the pipeline's at
the load size up to the measured re-encoding cost, and records can say the data was re-encoded."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agegender.data.pack import MANIFEST, is_pack, pack_info, read_pack, write_pack
from agegender.errors import DataError

N = 300


@pytest.fixture(scope="module")
def raw(utkface_sample, tmp_path_factory) -> Path:
    """300 real faces (links to the sample), one empty file with a UTKFace name and a stray text file."""
    folder = tmp_path_factory.mktemp("raw_utkface")
    for path in sorted(utkface_sample.glob("*.jpg"))[:N]:
        os.symlink(path, folder / path.name)
    (folder / "30_1_0_20170117000000000.jpg.chip.jpg").write_bytes(b"")
    (folder / "readme.txt").write_text("not an image")
    return folder


@pytest.fixture(scope="module")
def pack(raw, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("packs") / "utkface-64"
    manifest = write_pack("utkface", raw, out, size=64, quality=80, workers=0)
    return out, manifest


def test_the_reader_reads_a_pack_like_the_raw_folder(raw, pack):
    from agegender.cli import read_samples
    from agegender.data.splits import make_split
    from agegender.data.utkface import read_utkface

    out, manifest = pack
    original = read_samples("utkface", raw)
    packed = read_utkface(out)
    assert is_pack(out) and not is_pack(raw)
    assert manifest["images"] == len(packed.frame) == len(original.frame) == N
    columns = [c for c in original.frame.columns if c != "path"]
    assert packed.frame[columns].equals(original.frame[columns])
    assert all(Path(p).is_file() and Path(p).parent.parent == out.resolve() for p in packed.frame["path"])
    for protocol in ("speziali", "dey"):
        a, b = make_split(original.frame, protocol, seed=0), make_split(packed.frame, protocol, seed=0)
        for part in ("train", "val", "test"):
            assert list(a.part(part)["file"]) == list(b.part(part)["file"]), (protocol, part)
    # the skipped-file report: the reader's (the text file) and the image check's (the empty file), named relatively
    reasons = {item["file"]: item["reason"] for item in packed.skipped}
    assert set(reasons) == {"readme.txt", "30_1_0_20170117000000000.jpg.chip.jpg"}
    assert "empty" in reasons["30_1_0_20170117000000000.jpg.chip.jpg"]
    assert packed.files_seen == original.files_seen == N + 2
    assert any("re-encoded pack" in note for note in packed.notes)


def test_provenance_and_the_record_entry_say_it_was_re_encoded(raw, pack):
    out, manifest = pack
    info = pack_info(read_pack(out))
    assert info["reencoded"] is True and info["codec"] == "webp" and info["quality"] == 80 and info["size"] == 64
    assert info["source"]["fingerprint"]["files"] == N + 2  # the raw folder's files, links followed
    assert not info["source"]["path"].startswith("/") and str(raw) not in json.dumps(manifest)
    assert pack_info(raw) is None
    assert len(list((out / "images").iterdir())) == N


def test_images_are_the_pipelines_up_to_the_measured_re_encoding_cost(raw, pack):
    from agegender.data.loader import decode_rgb, resize_uint8
    from agegender.data.utkface import read_utkface

    out, manifest = pack
    frame = read_utkface(out).frame
    histogram = np.zeros(256, dtype=np.int64)
    for file, packed in zip(frame["file"], frame["path"]):
        want = resize_uint8(decode_rgb(raw / file), 64)  # what the pipeline caches at load size 64
        with Image.open(packed) as image:
            got = np.asarray(image.convert("RGB"))
        assert got.shape == (64, 64, 3)
        histogram += np.bincount(np.abs(got.astype(int) - want.astype(int)).ravel(), minlength=256)
    levels = np.arange(256)
    mean = (levels * histogram).sum() / histogram.sum()
    p99 = int(np.searchsorted(np.cumsum(histogram), 0.99 * histogram.sum()))
    assert manifest["reencoding"]["mean_abs"] == pytest.approx(mean, abs=1e-3)
    assert manifest["reencoding"]["p99_abs"] == p99 and manifest["reencoding"]["values"] == histogram.sum()
    assert 0 < mean < 6 and p99 < 25  # WebP q80 at 64 px: a few grey levels


def test_both_pipelines_read_a_pack_and_agree(pack):
    pytest.importorskip("tensorflow")
    from agegender.data.loader import Batches
    from agegender.data.pipeline import Target, build_dataset
    from agegender.data.utkface import read_utkface

    frame = read_utkface(pack[0]).frame.head(24)
    targets = {"age": Target("age", "regression")}
    tf_images = np.concatenate([b[0].numpy() for b in build_dataset(frame, targets, image_size=64, batch_size=12,
                                                                      pixel_scale=1.0)])
    with Batches(frame, targets, image_size=64, batch_size=12, pixel_scale=1.0, workers=0) as batches:
        ours = np.concatenate([b[0] for b in batches])
    assert np.abs(ours - tf_images).max() <= 1.0


def test_a_second_pack_is_reused_and_other_folders_are_refused(raw, pack, tmp_path):
    out, manifest = pack
    again = write_pack("utkface", raw, out, size=64, quality=80, workers=0)
    assert again.get("reused") is True and again["bytes"] == manifest["bytes"]
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="not a pack"):
        write_pack("utkface", raw, busy, size=64, workers=0)
    assert (busy / "keep.txt").read_text() == "mine"
    with pytest.raises(DataError, match="quality"):
        write_pack("utkface", raw, tmp_path / "q", size=64, quality=101)


def test_the_command_line_packs_at_native_size(utkface_sample, tmp_path, capsys):
    from agegender.data.__main__ import main

    folder = tmp_path / "raw"
    folder.mkdir()
    for path in sorted(utkface_sample.glob("*.jpg"))[:12]:
        os.symlink(path, folder / path.name)
    out = tmp_path / "pack"
    assert main(["pack", "utkface", "--data-dir", str(folder), "--size", "native", "--out", str(out),
                 "--quality", "60"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == 12 and summary["size"] is None and summary["quality"] == 60
    assert summary["bytes"] == sum(p.stat().st_size for p in (out / "images").iterdir())
    with Image.open(next((out / "images").iterdir())) as image:
        assert image.format == "WEBP" and image.size == (200, 200)
    assert json.loads((out / MANIFEST).read_text())["size"] is None
    assert main(["pack", "utkface", "--data-dir", str(folder), "--size", "big", "--out", str(tmp_path / "x")]) == 2
    assert "fix:" in capsys.readouterr().err
