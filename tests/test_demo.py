"""``make demo`` end to end at a tiny scale: every artefact of the path is written and readable."""

import dataclasses
import json

import numpy as np
import pytest


@pytest.mark.slow
def test_demo_writes_record_table_plots_and_model(tmp_path):
    import keras

    import agegender.models  # noqa: F401  (registers custom layers)
    from agegender.demo import DemoExperiment, run_demo

    exp = dataclasses.replace(DemoExperiment(), n_faces=300, face_size=64, image_size=32, epochs=2, batch_size=32)
    result = run_demo(exp, tmp_path, verbose=0)
    record = json.loads(result["record"].read_text())
    assert record["status"] == "complete" and record["data"]["kind"] == "generated"
    assert [h["epoch"] for h in record["history"]] == [1, 2]
    assert sum(record["data"]["counts"].values()) == 300
    metrics = result["metrics"]
    assert 0 <= metrics["gender_accuracy"] <= 1 and np.isfinite(metrics["age_mae_years"])
    table = result["table"].read_text()
    assert "| small CNN | test gender accuracy |" in table and "generated faces" in table
    assert all(p.is_file() and p.stat().st_size > 1000 for p in result["plots"].values())
    model = keras.models.load_model(result["model"], safe_mode=True)
    assert set(model.output_names) == {"age", "gender", "race"}
