"""The GPU kit (``agegender.gpu_kit_models``) may not import ``reproductions/`` (tests/test_layering.py), so it
writes the papers' optimiser settings a second time; this checks that each kit network compiles exactly as its
reproduction compiles it at the paper's setting (optimiser, rate, epsilon, rho, loss weights, BatchNorm)."""

from __future__ import annotations

import dataclasses

import pytest

from agegender.gpu_kit_models import MODELS, build_model


def _reproduction_model(name):
    spec = MODELS[name]
    if spec.paper == "speziali":
        import reproductions.utkface_dual_cnn as spz

        exp = dataclasses.replace(spz.SpezialiExperiment(), input_size=64, precision="float32")
        return spz.build_network(spec.variant, exp), 64
    from reproductions.utkface_xception.config import DeyExperiment
    from reproductions.utkface_xception.paper import build_model as build_dey

    size = 64 if spec.variant == "transformer" else 32
    exp = dataclasses.replace(DeyExperiment(), backbone=spec.variant, weights=None, input_size=size)
    return build_dey(exp, size), size


def _layers(model):
    for layer in model.layers:  # nested backbones (Dey's MobileNet) too
        yield layer
        if hasattr(layer, "layers"):
            yield from _layers(layer)


def _settings(model) -> dict:
    config = model.get_compile_config()
    optimizer = {k: v for k, v in config["optimizer"]["config"].items() if k != "name"}
    norms = {layer.name: (layer.momentum, layer.epsilon) for layer in _layers(model)
             if layer.__class__.__name__ == "BatchNormalization"}
    return {"optimizer": (config["optimizer"]["class_name"], optimizer), "loss_weights": config.get("loss_weights"),
            "loss": config.get("loss"), "norms": norms}


@pytest.mark.parametrize("name", ["speziali_dual", "speziali_gender", "speziali_age", "dey_mobilenet",
                                  "dey_transformer"])
def test_kit_networks_compile_as_their_reproductions(name):
    import keras

    from agegender.training import configure_precision

    configure_precision("float32")
    expected, size = _reproduction_model(name)
    keras.backend.clear_session()
    assert _settings(build_model(MODELS[name], size)) == _settings(expected)
