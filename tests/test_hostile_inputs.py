"""Hostile inputs (issue 10): one case each, and each ends one of two ways.

- the sample is skipped and reported (file and reason) while training goes on; or
- the run stops at once with a one-line ``DataError`` naming the file and the fix.

Never a traceback from inside TensorFlow. Command-line cases run a reproduction's ``main()``
and check the exit code and the single ``error:`` line on stderr.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from agegender.data.adience import read_adience
from agegender.data.celeba import read_celeba
from agegender.data.imdb_wiki import read_imdb_wiki
from agegender.data.pipeline import MAX_PIXELS, Target, build_dataset, check_images
from agegender.data.samples import normalize_frame
from agegender.data.utkface import read_utkface
from agegender.errors import DataError
from reproductions import adience_levi, utkface_dual_cnn
from tests.test_reader_celeba_imdb import IMDB_ROWS, _celeba_root, _datenum, _write_mat
from tests.test_readers import UTK_BAD, UTK_GOOD

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _face(colour=(200, 60, 30), size=40) -> Image.Image:
    return Image.new("RGB", (size, size), colour)


def _jpeg(image: Image.Image, **kw) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95, **kw)
    return buffer.getvalue()


def _png16_rgb(path: Path, value: int, size=20) -> None:
    """An RGB PNG with 16 bits per channel (Pillow cannot write one)."""
    row = b"\x00" + struct.pack(">H", value) * 3 * size

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(row * size)) + chunk(b"IEND", b""))


def _forged_size(jpeg: bytes, width: int, height: int) -> bytes:
    """The same JPEG with its frame header claiming ``width`` x ``height`` (a decompression bomb)."""
    data = bytearray(jpeg)
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 7] = height.to_bytes(2, "big")
    data[sof + 7:sof + 9] = width.to_bytes(2, "big")
    return bytes(data)


def _corrupt_png(image: Image.Image) -> bytes:
    """A PNG whose header and IEND chunk are intact but whose compressed pixel data is damaged."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    idat = data.index(b"IDAT") + 4
    data[idat + 2:idat + 12] = b"\xff" * 10
    return bytes(data)


# --------------------------------------------------------------------------------------------- image files

@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """Good faces plus one file of every hostile kind; returns (folder, {name: expected outcome})."""
    folder = tmp_path_factory.mktemp("hostile_images")
    good = _jpeg(_face())
    for i in range(6):
        (folder / f"good{i}.jpg").write_bytes(_jpeg(_face((30 * i, 100, 200 - 20 * i))))
    cases = {}
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 2])
    cases["truncated.jpg"] = "truncated JPEG"
    (folder / "empty.jpg").write_bytes(b"")
    cases["empty.jpg"] = "0 bytes"
    _face((0, 0, 255)).save(folder / "png_named.jpg", format="PNG")
    cases["png_named.jpg"] = None  # kept: TensorFlow reads the content, not the name
    _face().convert("L").save(folder / "grayscale.jpg", quality=95)
    cases["grayscale.jpg"] = None
    _face((0, 128, 255)).convert("CMYK").save(folder / "cmyk.jpg", quality=95)
    cases["cmyk.jpg"] = None
    Image.fromarray(np.full((20, 20), 40000, dtype=np.uint16)).save(folder / "gray16.png")
    cases["gray16.png"] = None
    _png16_rgb(folder / "rgb16.png", 65535)
    cases["rgb16.png"] = None
    _face((10, 200, 10), size=3000).save(folder / "large.jpg", quality=80)  # 9 megapixels: decoded and resized
    cases["large.jpg"] = None
    (folder / "bomb.jpg").write_bytes(_forged_size(good, 60000, 60000))  # 3.6 gigapixels by its header
    cases["bomb.jpg"] = "too large"
    (folder / "page.jpg").write_text("<!DOCTYPE html><html><body>Quota exceeded</body></html>")
    cases["page.jpg"] = "HTML"
    (folder / "data_corrupt.png").write_bytes(_corrupt_png(_face()))  # passes the file check, fails to decode
    cases["data_corrupt.png"] = "TensorFlow cannot decode"
    return folder, cases


def test_each_hostile_image_is_skipped_with_its_reason_or_decoded(image_folder):
    folder, cases = image_folder
    checked = check_images([folder / name for name in cases])
    reasons = {Path(s["file"]).name: s["reason"] for s in checked.skipped}
    for name, expected in cases.items():
        if expected is None or name == "data_corrupt.png":
            assert name not in reasons, (name, reasons.get(name))
        else:
            assert expected in reasons[name], (name, reasons[name])
    assert f"limit {MAX_PIXELS:,}" in reasons["bomb.jpg"]


def test_decoded_formats_become_8_bit_rgb(image_folder):
    folder, _ = image_folder
    names = ["png_named.jpg", "grayscale.jpg", "cmyk.jpg", "gray16.png", "rgb16.png", "large.jpg"]
    frame = normalize_frame([{"path": str(folder / n), "file": n, "age": 30.0} for n in names])
    images = next(iter(build_dataset(frame, {"age": Target("age", "regression")}, image_size=16, batch_size=16,
                                     pixel_scale=1.0)))[0].numpy()
    assert images.shape == (6, 16, 16, 3)
    means = dict(zip(names, images.mean(axis=(1, 2))))
    np.testing.assert_allclose(means["png_named.jpg"], [0, 0, 255], atol=2)
    assert np.ptp(means["grayscale.jpg"]) < 1  # grey replicated to three channels
    assert means["cmyk.jpg"][2] > 200 and means["cmyk.jpg"][0] < 60  # CMYK converted, not read as garbage
    np.testing.assert_allclose(means["gray16.png"], 40000 / 257, atol=2)  # 16 bit scaled to 8 bit
    np.testing.assert_allclose(means["rgb16.png"], 255, atol=1)
    np.testing.assert_allclose(means["large.jpg"], [10, 200, 10], atol=4)


@pytest.mark.slow
def test_training_goes_on_and_every_bad_file_is_reported(image_folder, capfd):
    import keras

    folder, cases = image_folder
    names = [f"good{i}.jpg" for i in range(6)] + list(cases) + ["absent.jpg"]
    frame = normalize_frame([{"path": str(folder / n), "file": n, "age": 20.0 + i, "gender": i % 2}
                             for i, n in enumerate(names)])
    report: list = []
    ds = build_dataset(frame, {"gender": Target("gender", "binary")}, image_size=16, batch_size=8, training=True,
                       report=report)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
    model = keras.Model(inputs, {"gender": keras.layers.Dense(1, activation="sigmoid", name="gender")(x)})
    model.compile("adam", loss={"gender": "binary_crossentropy"})
    history = model.fit(ds, epochs=2, verbose=0, shuffle=False)
    assert len(history.history["loss"]) == 2 and np.isfinite(history.history["loss"]).all()
    reasons = {Path(r["file"]).name: r["reason"] for r in report}
    expected = {n for n, e in cases.items() if e} | {"absent.jpg"}
    assert set(reasons) == expected, reasons
    assert "not found" in reasons["absent.jpg"]
    assert "TensorFlow cannot decode" in reasons["data_corrupt.png"]
    err = capfd.readouterr().err
    assert "data_corrupt.png" in err and "Traceback" not in err


def test_unreadable_image_file_is_skipped(tmp_path, monkeypatch):
    """chmod 000 on an image (simulated when running as root, who may read anything)."""
    path = tmp_path / "locked.jpg"
    path.write_bytes(_jpeg(_face()))
    if IS_ROOT:
        import builtins

        import agegender.data.images as images  # where the file check lives (agegender.data.pipeline re-exports it)

        real_open = builtins.open

        def guarded(file, *a, **k):
            if str(file) == str(path):
                raise PermissionError(13, "Permission denied", str(file))
            return real_open(file, *a, **k)

        monkeypatch.setattr(images, "open", guarded, raising=False)
    else:
        path.chmod(0)
    try:
        assert check_images([path]).skipped == [{"file": str(path), "reason": "permission denied"}]
    finally:
        path.chmod(0o644)


# --------------------------------------------------------------------------------------------- label files


def test_utkface_names_with_every_known_defect(tmp_path):
    data = _jpeg(_face())
    for name in list(UTK_GOOD) + list(UTK_BAD):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    samples = read_utkface(tmp_path)
    assert len(samples) == len(UTK_GOOD)
    assert {s["file"]: s["reason"] for s in samples.skipped} == UTK_BAD  # each skipped with its reason
    assert {r["file"] for r in samples.repaired} == {k for k, v in UTK_GOOD.items() if v[3]}


HEADER = ("user_id\toriginal_image\tface_id\tage\tgender\tx\ty\tdx\tdy\ttilt_ang\tfiducial_yaw_angle\t"
          "fiducial_score\n")


def test_adience_rows_with_missing_fields_or_unknown_labels(tmp_path):
    lines = {
        "ok": "u1\ta.jpg\t1\t(25, 32)\tf\t1\t2\t3\t4\t0\t0\t50\n",
        "missing fields": "u1\tb.jpg\t2\t(25, 32)\n",
        "empty fields": "\t\t\t\t\t\t\t\t\t\t\t\n",
        "unknown labels": "u1\tc.jpg\t3\t(99, 120)\tx\t1\t2\t3\t4\t0\t0\t50\n",
        "unknown gender only": "u1\td.jpg\t4\t(0, 2)\t?\t1\t2\t3\t4\t0\t0\t50\n",
        "escaping path": "..\t../../etc/passwd\t5\t(0, 2)\tm\t1\t2\t3\t4\t0\t0\t50\n",
    }
    (tmp_path / "fold_0_data.txt").write_text(HEADER + "".join(lines.values()))
    for k in range(1, 5):
        (tmp_path / f"fold_{k}_data.txt").write_text(HEADER + f"u{k + 1}\tz.jpg\t9\t(8, 12)\tm\t1\t2\t3\t4\t0\t0\t50\n")
    samples = read_adience(tmp_path, check_images=False)
    skipped = {s["file"]: s["reason"] for s in samples.skipped}
    assert skipped["fold_0_data.txt:3"] == "4 tab-separated fields instead of 12"
    assert "neither a canonical age group" in skipped["fold_0_data.txt:4"]
    assert "age '(99, 120)'" in skipped["fold_0_data.txt:5"] and "gender 'x'" in skipped["fold_0_data.txt:5"]
    assert "leaves the data folder" in skipped["fold_0_data.txt:7"]
    kept = samples.frame.set_index("file")
    assert kept.loc["aligned/u1/landmark_aligned_face.4.d.jpg", "gender"] == -1  # one label kept, the other masked
    assert len(samples) == 2 + 4


def test_celeba_label_file_that_is_an_html_page(tmp_path):
    root = _celeba_root(tmp_path, _jpeg(_face()))
    (root / "list_attr_celeba.txt").write_text("<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded"
                                               "</title></head><body>Too many users</body></html>")
    with pytest.raises(DataError) as err:
        read_celeba(root)
    message = str(err.value)
    assert "\n" not in message and "list_attr_celeba.txt" in message and "fix: download" in message


def test_imdb_wiki_mat_with_nan_and_inf(tmp_path):
    rows = list(IMDB_ROWS) + [
        ("10/nm0000010_rm1_1970-6-1_2000.jpg", _datenum(1970, 6, 1), np.inf, 1.0, 4.0, np.nan),     # inf year
        ("11/nm0000011_rm1_1970-6-1_2000.jpg", _datenum(1970, 6, 1), 2000, np.inf, np.nan, np.inf),  # inf gender
        ("../../../etc/passwd", _datenum(1970, 6, 1), 2000, 1.0, 4.0, np.nan),                       # escaping path
    ]
    _write_mat(tmp_path / "imdb_crop" / "imdb.mat", "imdb", rows)
    mat = scipy.io.loadmat(str(tmp_path / "imdb_crop" / "imdb.mat"))
    ids = mat["imdb"][0, 0]["celeb_id"].astype("float64")
    ids[0, 1] = np.nan  # an id that is NaN too
    mat["imdb"][0, 0]["celeb_id"] = ids
    scipy.io.savemat(str(tmp_path / "imdb_crop" / "imdb.mat"), {"imdb": mat["imdb"]})
    samples = read_imdb_wiki(tmp_path, min_face_score=0.0)
    reasons = {s["file"].split("/")[1] if s["file"].count("/") > 1 else s["file"]: s["reason"] for s in samples.skipped}
    assert reasons["02"] == "dob is nan (no birth date)" and reasons["03"] == "dob is inf (no birth date)"
    assert reasons["10"] == "photo_taken is inf (no photo year)"
    assert any("leaves the data folder" in r for r in reasons.values())
    frame = samples.frame.set_index("file")
    assert "imdb_crop/11/nm0000011_rm1_1970-6-1_2000.jpg" not in frame.index  # NaN face score < 0.0 filter
    assert frame["age"].notna().all() and np.isfinite(frame["age"]).all()
    assert set(frame["gender"]) <= {-1, 0, 1}


# --------------------------------------------------------------------------------------------- command lines


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert " — fix: " in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("kind", ["missing", "empty", "a file", "wrong dataset"])
def test_empty_or_wrong_data_dir(kind, tmp_path, capsys):
    data = tmp_path / "data"
    if kind == "empty":
        data.mkdir()
    elif kind == "a file":
        data.write_text("not a folder")
    elif kind == "wrong dataset":
        data.mkdir()
        (data / "fold_0_data.txt").write_text(HEADER)  # Adience labels where UTKFace names belong, and back
        (data / "readme.txt").write_text("x")
    out = str(tmp_path / "out")
    assert utkface_dual_cnn.main(["--data-dir", str(data), "--smoke", "--out", out]) == 2
    assert str(data) in _one_error_line(capsys)
    assert adience_levi.main(["--data-dir", str(data), "--model", "gender", "--smoke", "--out", out]) == 2
    assert "fold_1_data.txt" in _one_error_line(capsys)
    assert not (tmp_path / "out").exists()  # stopped before writing anything


def test_unreadable_data_dir(tmp_path, capsys, monkeypatch):
    """chmod 000 on the data folder (simulated when running as root, who may read anything)."""
    data = tmp_path / "faces"
    data.mkdir()
    (data / "25_0_1_20170116174525125.jpg.chip.jpg").write_bytes(_jpeg(_face()))
    if IS_ROOT:
        real_scandir = os.scandir

        def scandir(path="."):
            if Path(path) == data.resolve():
                raise PermissionError(13, "Permission denied", str(path))
            return real_scandir(path)

        monkeypatch.setattr(os, "scandir", scandir)
    else:
        data.chmod(0)
    try:
        assert utkface_dual_cnn.main(["--data-dir", str(data), "--smoke", "--out", str(tmp_path / "out")]) == 2
        line = _one_error_line(capsys)
        assert "not readable (permission denied)" in line and "chmod" in line
    finally:
        data.chmod(0o755)


def test_unreadable_subfolder_is_reported_and_the_rest_is_read(tmp_path, monkeypatch):
    for sub in ("part1", "part2"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / f"2{sub[-1]}_0_1_20170116174525125.jpg.chip.jpg").write_bytes(_jpeg(_face()))
    locked = (tmp_path / "part2").resolve()
    if IS_ROOT:
        real_scandir = os.scandir
        monkeypatch.setattr(os, "scandir", lambda path=".": (_ for _ in ()).throw(
            PermissionError(13, "Permission denied", str(path))) if Path(path) == locked else real_scandir(path))
    else:
        locked.chmod(0)
    try:
        samples = read_utkface(tmp_path)
    finally:
        locked.chmod(0o755)
    assert list(samples.frame["file"]) == ["part1/21_0_1_20170116174525125.jpg.chip.jpg"]
    assert {"file": "part2/", "reason": "folder not readable (permission denied): its images were not read"} \
        in samples.skipped


def test_unreadable_label_file_is_one_data_error(tmp_path, monkeypatch):
    for k in range(5):
        (tmp_path / f"fold_{k}_data.txt").write_text(HEADER)
    locked = tmp_path / "fold_2_data.txt"
    if IS_ROOT:
        import builtins

        real_open = builtins.open
        monkeypatch.setattr(builtins, "open", lambda file, *a, **k: (_ for _ in ()).throw(
            PermissionError(13, "Permission denied", str(file))) if str(file) == str(locked.resolve())
            else real_open(file, *a, **k))
    else:
        locked.chmod(0)
    try:
        with pytest.raises(DataError) as err:
            read_adience(tmp_path)
    finally:
        locked.chmod(0o644)
    message = str(err.value)
    assert "fold_2_data.txt" in message and "permission denied" in message and "fix:" in message


# --------------------------------------------------------------------------------------------- issue 21

NOT_UTF8 = "25_0_1_2017\udcff\udcfe0116174525125.jpg.chip.jpg"  # the bytes 0xff 0xfe, as the OS hands them over


def _utk_folder_with_a_bad_name(root: Path) -> Path:
    from agegender.data.synth import synthesize

    synthesize("utkface", root, 30, seed=0, size=40)
    (root / NOT_UTF8).write_bytes(next(root.glob("*.jpg")).read_bytes())
    (root / "sub\udcff").mkdir()
    (root / "sub\udcff" / "30_1_0_20170116174525125.jpg.chip.jpg").write_bytes(_jpeg(_face()))
    assert os.fsencode(str(root / NOT_UTF8)).endswith(b"2017\xff\xfe0116174525125.jpg.chip.jpg")
    return root


def test_a_file_name_that_is_not_utf8_is_skipped_and_shown_escaped(tmp_path):
    root = _utk_folder_with_a_bad_name(tmp_path / "faces")
    samples = read_utkface(root)
    assert len(samples.frame) == 30 and samples.files_seen == 31  # 30 faces and the bad name (not the marker)
    bad = {s["file"]: s["reason"] for s in samples.skipped}
    assert "25_0_1_2017\\xff\\xfe0116174525125.jpg.chip.jpg" in bad and "not valid UTF-8" in \
        bad["25_0_1_2017\\xff\\xfe0116174525125.jpg.chip.jpg"]
    assert "sub\\xff/" in bad  # a folder name too: its files are not read, it is reported
    for item in samples.skipped:
        item["file"].encode("utf-8")  # every name reported can be written anywhere
    assert all(not any("\udc80" <= c <= "\udcff" for c in p) for p in samples.frame["path"])


def test_a_name_that_is_not_utf8_does_not_sink_the_audit_or_training(tmp_path, capsys):
    from agegender.cli import read_samples
    from agegender.data.__main__ import main
    from agegender.data.splits import make_split

    root = _utk_folder_with_a_bad_name(tmp_path / "faces")
    assert main(["audit", "utkface", "--data-dir", str(root), "--json", str(tmp_path / "audit.json")]) == 0
    out = capsys.readouterr().out
    assert "25_0_1_2017\\xff\\xfe0116174525125.jpg.chip.jpg" in out and "not valid UTF-8" in out
    import json

    report = json.loads((tmp_path / "audit.json").read_text(encoding="utf-8"))
    assert report["samples"] == 30
    assert any(s["file"] == "25_0_1_2017\\xff\\xfe0116174525125.jpg.chip.jpg" for s in report["skipped"])
    # the training path: read, split, manifest, one batch of the pipeline
    samples = read_samples("utkface", root)
    split = make_split(samples, "speziali", seed=0)
    split.save_manifest(tmp_path / "split.csv")
    assert len((tmp_path / "split.csv").read_text(encoding="utf-8").splitlines()) == 31
    ds = build_dataset(split.part("train"), {"age": Target("age", "regression")}, image_size=32, batch_size=4)
    images, labels, weights = next(iter(ds))
    assert images.shape == (4, 32, 32, 3)


def test_read_samples_drops_images_training_cannot_use_and_refuses_an_all_bad_folder(tmp_path):
    from agegender.cli import read_samples

    good = _jpeg(_face())
    names = [f"{20 + i}_0_1_2017011617452512{i}.jpg.chip.jpg" for i in range(6)]
    for name in names[:3]:
        (tmp_path / name).write_bytes(good)
    (tmp_path / names[3]).write_bytes(b"")
    (tmp_path / names[4]).write_text("<!DOCTYPE html><html>Quota exceeded</html>")
    (tmp_path / names[5]).write_bytes(good[: len(good) // 2])
    samples = read_samples("utkface", tmp_path)
    assert sorted(samples.frame["file"]) == names[:3]
    reasons = {s["file"]: s["reason"] for s in samples.skipped}
    assert set(reasons) == set(names[3:]) and all(r.startswith("image not usable: ") for r in reasons.values())
    expected = {s["file"].rsplit("/", 1)[-1]: s["reason"] for s in check_images(tmp_path / n for n in names).skipped}
    assert {f: r.removeprefix("image not usable: ") for f, r in reasons.items()} == expected  # training's own check
    for name in names[:3]:
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(DataError) as err:
        read_samples("utkface", tmp_path)
    message = str(err.value)
    assert "none of the 6 images is usable" in message and str(tmp_path) in message and " — fix: " in message
