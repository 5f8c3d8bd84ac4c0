"""Data named without machine paths: relative path and fingerprint (agegender.data.provenance)."""

from __future__ import annotations

import hashlib
import os
import shutil

from agegender.data.provenance import describe_data, fingerprint_files, relative_data_path


def _write(folder, files):
    for name, data in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def test_fingerprint_equals_an_independent_hash_and_moves_with_the_folder(tmp_path):
    files = {"a/1.jpg": b"xx", "b.jpg": b"yyyy", "a/0.jpg": b""}
    _write(tmp_path / "one" / "utk", files)
    expected = hashlib.sha256()
    for name in sorted(files):  # relative names and sizes, sorted by name
        expected.update(name.encode() + b"\0" + str(len(files[name])).encode() + b"\n")
    got = fingerprint_files(tmp_path / "one" / "utk")
    assert got == {"files": 3, "bytes": 6, "sha256": expected.hexdigest()[:16]}
    shutil.copytree(tmp_path / "one" / "utk", tmp_path / "elsewhere" / "deeper" / "utk")
    assert fingerprint_files(tmp_path / "elsewhere" / "deeper" / "utk") == got


def test_fingerprint_changes_with_a_renamed_or_resized_file(tmp_path):
    _write(tmp_path, {"x.jpg": b"abc", "y.jpg": b"d"})
    before = fingerprint_files(tmp_path)
    (tmp_path / "y.jpg").write_bytes(b"de")
    resized = fingerprint_files(tmp_path)
    os.rename(tmp_path / "x.jpg", tmp_path / "z.jpg")
    renamed = fingerprint_files(tmp_path)
    assert len({before["sha256"], resized["sha256"], renamed["sha256"]}) == 3


def test_undecodable_names_are_hashed_not_fatal(tmp_path):
    name = os.fsencode(str(tmp_path)) + b"/bad\xff\xfe.jpg"
    with open(name, "wb") as handle:
        handle.write(b"q")
    assert fingerprint_files(tmp_path)["files"] == 1


def test_description_holds_no_absolute_path(tmp_path, monkeypatch):
    _write(tmp_path / "root" / "utkface" / "full", {"1_0_0_1.jpg.chip.jpg": b"z"})
    monkeypatch.setenv("AGEGENDER_DATA_ROOT", str(tmp_path / "root"))
    info = describe_data("utkface", tmp_path / "root" / "utkface" / "full")
    assert info["path"] == "utkface/full"
    assert info["fingerprint"]["files"] == 1
    outside = tmp_path / "other" / "UTKFace"
    outside.mkdir(parents=True)
    assert relative_data_path(outside) == "UTKFace"
    assert str(tmp_path) not in repr(describe_data("utkface", outside))


def test_deviations_name_the_fields_that_differ_from_the_paper(tmp_path):
    import dataclasses

    from agegender.records import RunRecorder, deviations_from

    @dataclasses.dataclass(frozen=True)
    class Paper:
        lr: float = 0.01
        epochs: int = 50
        seed: int = 0

    run = dataclasses.replace(Paper(), lr=0.001, seed=2)
    assert deviations_from(Paper(), Paper()) == {}
    assert deviations_from(run, Paper()) == {"lr": 0.001}  # the seed is a repetition, not a deviation
    recorder = RunRecorder("r", "e", config={"lr": 0.001}, seed=2, data={"kind": "generated"}, out=tmp_path,
                           deviations=deviations_from(run, Paper()))
    assert recorder.record["deviations"] == {"lr": 0.001}
