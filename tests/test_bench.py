"""The benchmark measures what issue 9 names, on the same files, and reports it in a stable table."""

import json

import pytest


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory):
    from agegender.data.synth import synthesize

    root = tmp_path_factory.mktemp("bench_faces")
    synthesize("utkface", root, 48, 0, size=64)
    return root


def test_pipeline_benchmark_reports_the_four_rates(jpegs, tmp_path):
    from agegender.bench import main

    out = tmp_path / "pipeline.json"
    assert main(["pipeline", "--data-dir", str(jpegs), "--n", "40", "--size", "32", "--batch-size", "16",
                 "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["images"] == 40 and result["size"] == 32 and result["data"] == "given"
    for key in ("naive_img_s", "first_epoch_img_s", "cached_img_s", "decode_limit_img_s"):
        assert result[key] > 0, key
    assert len(result["later_epochs_img_s"]) == 2
    assert result["first_epoch_vs_decode_limit"] == pytest.approx(
        result["first_epoch_img_s"] / result["decode_limit_img_s"], rel=0.01)
    assert set(result["targets_met"]) == {"first_epoch_vs_decode_limit", "cached_vs_decode_limit"}
    assert result["machine"]["cpu_count"] >= 1


def test_train_benchmark_on_cpu_is_float32_only_and_says_so(jpegs, tmp_path):
    import tensorflow as tf

    from agegender.bench import bench_train, markdown

    result = bench_train("dual_cnn", batch=4, steps=2, size=16, data_dir=jpegs)
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU is visible: all three modes run")
    assert [r["mode"] for r in result["rows"]] == ["float32"] and "no GPU" in result["note"]
    row = result["rows"][0]
    assert row["img_s"] > 0 and row["pipeline_img_s"] > 0
    assert row["input_bound"] == (row["pipeline_img_s"] < 0.9 * row["img_s"])
    table = markdown([result])
    assert "| dual_cnn | 16 | 4 | float32 |" in table


def test_unknown_model_and_empty_folder_fail_clearly(tmp_path, capsys):
    from agegender.bench import bench_train, main

    with pytest.raises(ValueError, match="levi_multitask"):
        bench_train("alexnet")
    assert main(["pipeline", "--data-dir", str(tmp_path)]) == 2
    assert "no JPEG files" in capsys.readouterr().err


def test_predict_latency_is_reported(tmp_path):
    pytest.importorskip("skimage")
    from agegender.bench import main, markdown

    out = tmp_path / "predict.json"
    assert main(["predict", "--repeats", "2", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["benchmark"] == "predict" and result["faces_found"] == 1
    assert 0 < result["detect_ms"]["median"] <= result["total_ms"]["p90"] * 1.5
    assert "| tiny random CNN (64 px) | scikit-image astronaut 512x512 | 1 |" in markdown([result])
