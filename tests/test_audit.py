"""Audit and the ``python -m agegender.data`` command line, on the real files and on bad input."""

import json

import pytest

from agegender.data.__main__ import main
from agegender.data.audit import audit

KEYS = {"files_seen", "samples", "skipped", "repaired", "task_samples", "label_counts", "duplicates", "splits",
        "missing_images", "duplicate_rows", "notes"}


def test_audit_real_utkface_sample(utkface_sample):
    result = audit("utkface", utkface_sample, protocol="speziali", progress=False)
    assert KEYS <= set(result)
    assert result["files_seen"] == 5000 and result["samples"] == 5000
    assert result["task_samples"]["age+gender+race"] == 5000
    assert result["label_counts"]["gender"] == {"male": 2639, "female": 2361, "unknown": 0}
    assert result["splits"] == {"speziali": {"train": 2450, "val": 1050, "test": 1500}}
    dup = result["duplicates"]
    # the sample holds byte-identical pairs (shared/data README); each group is a pair here
    assert dup["groups"] > 0 and dup["files_in_groups"] == 2 * dup["groups"]
    assert dup["distinct_contents"] == 5000 - dup["groups"]
    assert 0 <= dup["groups_crossing_splits"] <= dup["groups"]


def test_audit_real_adience_labels_without_images(adience_folds, tmp_path, capsys):
    out = tmp_path / "audit.json"
    assert main(["audit", "adience", "--data-dir", str(adience_folds), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["files_seen"] == 19487
    assert result["missing_images"]["count"] == result["samples"] > 0
    assert sum(result["splits"]["adience_folds"].values()) == result["samples"]
    assert len(result["duplicate_rows"]) == 117
    assert "images missing" in capsys.readouterr().out


def test_audit_coral_protocol_needs_csv_dir(utkface_sample, coral_dir):
    with pytest.raises(ValueError, match="coral-csv-dir"):
        audit("utkface", utkface_sample, protocol="coral", hash_duplicates=False)
    result = audit("utkface", utkface_sample, protocol="coral", coral_csv_dir=coral_dir, hash_duplicates=False)
    assert result["splits"]["coral"]["test"] + result["split_info"]["csv_rows_without_image"]["test"] == 3287
    assert result["split_info"]["csv_rows_without_image"]["train"] + result["splits"]["coral"]["train"] \
        + result["splits"]["coral"]["val"] == 13147


@pytest.mark.parametrize("args, message", [
    (["audit", "utkface", "--data-dir", "/definitely/not/here"], "/definitely/not/here"),
    (["audit", "celeba", "--data-dir", "{empty}"], "list_attr_celeba.txt"),
    (["audit", "utkface", "--data-dir", "{empty}", "--remap-stray-ages"], "adience only"),
])
def test_cli_bad_input_is_one_line(args, message, tmp_path, capsys):
    args = [a.replace("{empty}", str(tmp_path)) for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err and "Traceback" not in err


# ---------------------------------------------------------------------------------------------- issue 21


def _utk(root, name, content):
    (root / name).write_bytes(content)
    return name


def test_usable_means_decodable_as_training_checks_it(tmp_path, capsys):
    """Empty, HTML, truncated and decompression-bomb files are skipped with the reason, never 'usable'."""
    from tests.test_hostile_inputs import _face, _forged_size, _jpeg

    good = _jpeg(_face())
    names = [_utk(tmp_path, f"{20 + i}_{i % 2}_0_2017011617452512{i}.jpg.chip.jpg", _jpeg(_face((9 * i, 80, 40))))
             for i in range(5)]
    bad = {_utk(tmp_path, "30_0_0_20170116174525001.jpg.chip.jpg", b""): "empty file",
           _utk(tmp_path, "31_0_0_20170116174525002.jpg.chip.jpg", b"<!DOCTYPE html><html></html>"): "HTML",
           _utk(tmp_path, "32_0_0_20170116174525003.jpg.chip.jpg", good[: len(good) // 2]): "truncated JPEG",
           _utk(tmp_path, "33_1_0_20170116174525004.jpg.chip.jpg", _forged_size(good, 60000, 60000)): "too large"}
    result = audit("utkface", tmp_path, progress=False)
    assert result["files_seen"] == 9 and result["samples"] == 5
    assert result["label_counts"]["gender"] == {"male": 3, "female": 2, "unknown": 0}  # the bomb (female) is out
    skipped = {s["file"]: s["reason"] for s in result["skipped"]}
    assert set(skipped) == set(bad)
    for name, words in bad.items():
        assert skipped[name].startswith("image not usable") and words in skipped[name], (name, skipped[name])
    assert sum(result["splits"]["speziali"].values()) == 5
    assert main(["audit", "utkface", "--data-dir", str(tmp_path)]) == 0
    assert "usable samples: 5" in capsys.readouterr().out


def test_duplicates_crossing_splits_and_conflicting_labels_are_reported(tmp_path, capsys):
    """Byte-identical files: groups that cross the split and groups whose labels disagree (the same bytes as
    age 103 and age 80 in the real set)."""
    from tests.test_hostile_inputs import _face, _jpeg

    for i in range(60):  # distinct faces
        _utk(tmp_path, f"{20 + i % 40}_0_0_2017011617{i:07d}.jpg.chip.jpg", _jpeg(_face((4 * i, 100, 50))))
    pairs = []
    for k in range(12):  # twelve identical pairs; the first four disagree on the age, one also on the gender
        same = _jpeg(_face((10 * k, 200, 100)))
        a = _utk(tmp_path, f"{30 + k}_1_2_2017022000{k:07d}.jpg.chip.jpg", same)
        b = _utk(tmp_path, f"{(80 if k < 4 else 30 + k)}_{0 if k == 0 else 1}_2_2017022100{k:07d}.jpg.chip.jpg", same)
        pairs.append((a, b))
    result = audit("utkface", tmp_path, protocol="random", seed=0, progress=False)
    dup = result["duplicates"]
    assert dup["groups"] == 12 and dup["files_in_groups"] == 24 and dup["distinct_contents"] == 72
    assert dup["groups_with_conflicting_labels"] == 4
    conflicting = {tuple(sorted(g["file"] for g in group)) for group in dup["conflicting_first"]}
    assert conflicting == {tuple(sorted(p)) for p in pairs[:4]}
    labels = {g["file"]: g for group in dup["conflicting_first"] for g in group}
    assert labels[pairs[0][1]] == {"file": pairs[0][1], "age": 80.0, "gender": 0, "race": 2}
    # crossing: computed here from the split the audit made, independently of its own count
    from agegender.data.splits import make_split
    from agegender.data.utkface import read_utkface

    split = make_split(read_utkface(tmp_path), "random", seed=0).frame.set_index("file")["split"]
    crossing = sum(split[a] != split[b] for a, b in pairs)
    assert crossing > 0 and dup["groups_crossing_splits"] == crossing and not dup["kept_together"]
    assert len(dup["crossing_first"]) == crossing
    assert main(["audit", "utkface", "--data-dir", str(tmp_path), "--protocol", "random"]) == 0
    out = capsys.readouterr().out
    assert f"{crossing} groups cross the splits; 4 groups with conflicting labels" in out
    assert "--keep-duplicates-together keeps each group in one split" in out
    kept = audit("utkface", tmp_path, protocol="random", seed=0, progress=False, keep_duplicates_together=True)
    assert kept["duplicates"]["groups_crossing_splits"] == 0 and kept["duplicates"]["kept_together"]
    assert kept["split_info"]["duplicates"]["groups_that_crossed"] == crossing


def test_full_utkface_duplicates_as_the_issue_found_them(shared_data):
    """The whole UTKFace: 375 groups of byte-identical files, 233 crossing the Speziali split (issue 21); the
    conflicting groups counted here from the bytes and the names, independently of the audit."""
    import collections
    import hashlib

    full = shared_data / "utkface" / "full"
    if not full.is_dir():
        pytest.skip(f"the full UTKFace is not at {full}")
    result = audit("utkface", full, protocol="speziali", seed=0, progress=False)
    dup = result["duplicates"]
    by_digest = collections.defaultdict(list)
    for path in sorted(full.iterdir()):
        by_digest[hashlib.md5(path.read_bytes()).hexdigest()].append(path.name)
    groups = [g for g in by_digest.values() if len(g) > 1]

    def labels(name):
        fields = name.split(".")[0].strip().removesuffix("jpg").split("_")
        return fields[0], fields[1], fields[2] if len(fields[2]) <= 2 else "-1"

    conflicting = sum(len({labels(n) for n in g}) > 1 for g in groups)
    assert dup["groups"] == len(groups) == 375 and dup["groups_crossing_splits"] == 233
    assert dup["groups_with_conflicting_labels"] == conflicting > 0
    ages = {n: int(n.split("_")[0]) for g in groups for n in g}
    assert any({ages[g["file"]] for g in group} == {103, 80} for group in dup["conflicting_first"])
    kept = audit("utkface", full, protocol="speziali", seed=0, progress=False, hash_duplicates=True,
                 keep_duplicates_together=True)
    assert kept["duplicates"]["groups_crossing_splits"] == 0


def test_audit_json_into_a_read_only_folder_stops_before_the_work(tmp_path, capsys, monkeypatch):
    import agegender.data.audit as audit_module
    from agegender import atomic

    def not_writable(folder, **kwargs):
        from agegender.errors import DataError

        raise DataError("output folder is not writable (permission denied)", path=folder, fix="choose another --json")

    monkeypatch.setattr(atomic, "check_writable", not_writable)
    monkeypatch.setattr(audit_module, "audit", lambda *a, **k: pytest.fail("the audit ran before the check"))
    assert main(["audit", "utkface", "--data-dir", str(tmp_path), "--json", str(tmp_path / "ro" / "a.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "not writable" in err
