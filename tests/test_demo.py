"""``make demo`` end to end at a tiny scale: both reproductions write every artefact, readable."""

import dataclasses
import json

import numpy as np
import pytest


def test_demo_experiments_depart_from_the_papers_only_in_scale():
    from reproductions.demo import DemoExperiment, adience_experiment, speziali_experiment
    from reproductions.adience_levi import EXPERIMENTS
    from reproductions.utkface_dual_cnn import SpezialiExperiment

    demo = DemoExperiment()
    spz, paper = speziali_experiment(demo), SpezialiExperiment()
    changed = {f.name for f in dataclasses.fields(paper) if getattr(spz, f.name) != getattr(paper, f.name)}
    assert changed == {"input_size", "batch_size", "lr_dual", "epochs"}
    assert spz.lambda_age == 0.01 and spz.patience == 3 and spz.dropout == 0.25
    levi, paper = adience_experiment(demo), EXPERIMENTS["multitask"]
    assert levi.tasks == ("gender", "age") and levi.gamma == paper.gamma and levi.architecture == "levi_reduced"
    assert levi.max_rows_per_fold is None and levi.load_size == levi.image_size + 8


def test_beats_chance_needs_every_claim():
    from reproductions.demo import beats_chance

    good = {"dual_gender_accuracy": 0.8, "dual_gender_majority": 0.5, "dual_age_r2": 0.5,
            "levi_gender_accuracy": 0.75, "levi_gender_majority": 0.5, "levi_age_accuracy": 0.5,
            "levi_age_majority": 0.3}
    assert all(beats_chance(good).values())
    assert beats_chance({**good, "dual_age_r2": 0.05}) == {**beats_chance(good), "dual age": False}
    assert not beats_chance({**good, "levi_age_accuracy": 0.32})["multi-task age"]


@pytest.mark.slow
def test_demo_writes_records_tables_figures_and_models(tmp_path):
    import keras

    import agegender.models  # noqa: F401  (registers custom layers)
    from reproductions.demo import DemoExperiment, run_demo

    demo = dataclasses.replace(DemoExperiment(), utkface_faces=200, utkface_face_size=32, speziali_input=16,
                               speziali_epochs=1, adience_faces=200, adience_face_size=72, adience_epochs=1)
    result = run_demo(demo, tmp_path, verbose=0, log=lambda *a: None)
    dual = json.loads(result["records"]["dual"].read_text())
    levi = json.loads(result["records"]["multitask"].read_text())
    for record in (dual, levi):
        assert record["status"] == "complete" and record["data"]["kind"] == "generated"
        assert [h["epoch"] for h in record["history"]] == [1]
    assert sum(dual["data"]["counts"].values()) == 200
    assert dual["reproduction"] == "utkface_dual_cnn" and levi["reproduction"] == "adience_levi"
    m = result["metrics"]
    assert all(0 <= m[k] <= 1 for k in m if "accuracy" in k or "majority" in k or "one_off" in k)
    assert np.isfinite(m["dual_age_mae_years"]) and m["levi_age_one_off"] >= m["levi_age_accuracy"]
    speziali_table = result["tables"]["speziali"].read_text()
    assert "| Multi-task CNN |" in speziali_table and "generated" in speziali_table
    table3 = result["tables"]["jorgensen"].read_text()
    assert "Multitask Classification" in table3 and "84.0" in table3  # published value beside the reproduced one
    assert "speziali" in result["readme"].read_text() and "jorgensen" in result["readme"].read_text()
    figures = sorted(p.name for p in result["figures"]["speziali"].glob("*.png"))
    assert {"fig13_confusion_dual.png", "fig19_heatmaps_dual.png", "gradcam.png"} <= set(figures)
    assert {"age_confusion.png", "gender_confusion.png"} <= {p.name for p in result["figures"]["jorgensen"].glob("*.png")}
    for path in result["models"].values():
        model = keras.models.load_model(path, safe_mode=True)
        assert set(model.output_names) == {"age", "gender"}
    # the run folders carry what predict needs: both models predict on a face without a detector
    from agegender.predict import predict_paths

    face = next((tmp_path / "faces" / "utkface").glob("*.jpg"))
    for name, path in result["models"].items():
        record = json.loads((path.parent / "record.json").read_text())
        assert record["preprocessing"]["pixel_scale"] == 1.0, name
        summary = predict_paths(path.parent, [face], out_dir=tmp_path / f"predict_{name}", detector="none",
                                progress=False)
        assert summary["faces"] == 1 and summary["errors"] == 0, summary
        found = summary["results"][0]["faces"][0]
        assert found["gender"] in ("male", "female") and 0 <= found["gender_prob"] <= 1
        assert np.isfinite(found["age"]) and found["age"] >= 0

    # a rerun reads the complete runs back instead of training again; the numbers are the same
    again = run_demo(demo, tmp_path, verbose=0, log=lambda *a: None)
    assert again["records"] == result["records"] and again["metrics"] == result["metrics"]
    assert json.loads(result["records"]["dual"].read_text())["history"] == dual["history"]
