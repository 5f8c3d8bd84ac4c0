"""A network that collapses to constant outputs on real faces is caught (issue 17: the generated faces of
the smoke tests never showed the collapse that real UTKFace faces did)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest


def test_collapse_check_on_constructed_outputs():
    from agegender.metrics import collapse_check

    rng = np.random.default_rng(0)
    ages = rng.uniform(1, 90, 500)
    gender = (rng.uniform(size=500) < 0.48).astype(int)
    assert collapse_check(age_true=ages, age_pred=np.full(500, 33.0) + rng.normal(0, 0.1, 500))
    assert collapse_check(age_true=ages, age_pred=ages + rng.normal(0, 8, 500)) == []
    constant = np.tile([0.6, 0.4], (500, 1))
    assert "one class" in collapse_check(gender_true=gender, gender_prob=constant)[0]
    noisy = np.stack([1 - gender, gender], axis=1).astype(float)
    flip = rng.uniform(size=500) < 0.5  # half the answers random: accuracy ~0.75
    noisy[flip] = rng.dirichlet([1, 1], flip.sum())
    assert collapse_check(gender_true=gender, gender_prob=noisy) == []
    coin = rng.dirichlet([1, 1], 500)  # a coin: accuracy at the majority share
    assert "majority" in collapse_check(gender_true=gender, gender_prob=coin)[0]


@pytest.mark.slow
@pytest.mark.parametrize("network", ["gender", "age"])
def test_speziali_networks_learn_on_real_faces(utkface_sample, network):
    """The single-task networks at the paper's learning rates (gender 0.01, age 0.001), 160 steps of 32
    real faces at 64 px: neither may collapse, and each must beat its trivial baseline on held-out faces."""
    import keras

    import reproductions.utkface_dual_cnn as spz
    from agegender.metrics import collapse_check
    from agegender.training import collect_predictions

    exp = dataclasses.replace(spz.SpezialiExperiment(), input_size=64, batch_size=32, max_images=2400,
                              precision="float32")
    _, _, split = spz.load_split(utkface_sample, exp)
    keras.utils.set_random_seed(0)
    data = spz.make_datasets(split, exp, spz.NETWORKS[network].tasks, [])
    model = spz.build_network(network, exp)
    model.fit(data["train"].repeat(), steps_per_epoch=160, epochs=1, verbose=0)
    y, p, _ = collect_predictions(model, data["val"])
    if network == "gender":
        reasons = collapse_check(gender_true=y["gender"], gender_prob=p["gender"])
        accuracy = float(np.mean(np.argmax(p["gender"], -1) == y["gender"]))
        majority = max(np.mean(y["gender"]), 1 - np.mean(y["gender"]))
        assert not reasons and accuracy > majority + 0.05, (reasons, accuracy, majority)
    else:
        reasons = collapse_check(age_true=y["age"], age_pred=p["age"])
        truth, pred = np.ravel(y["age"]), np.ravel(p["age"])
        mae, baseline = np.mean(np.abs(truth - pred)), np.mean(np.abs(truth - split.part("train")["age"].mean()))
        assert not reasons and mae < 0.95 * baseline, (reasons, mae, baseline)
