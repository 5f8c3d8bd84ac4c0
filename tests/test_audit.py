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
