"""The one registry of models and backbones and the task heads declared once (issue 19 item 4), parametrised over
what is registered: every model builds and has exactly the outputs its declared heads say (units, activation,
float32); every declared head encodes a label and decodes the model output that label asks for back to it;
every backbone of the three families is found through the one registry."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import agegender.models  # noqa: F401  (fills the registries)
from agegender import heads
from agegender.models import registry
from agegender.preprocess import Preprocessing, decode_heads

MODELS = registry.list_models()


def _marks(name: str):
    return [pytest.mark.slow] if registry.model_entry(name).heavy else []


def test_every_paper_registers_its_models():
    assert {name.split("/")[0] for name in MODELS} == {"speziali", "jorgensen", "gu_yang", "dey_aggarwal", "sundriyal"}
    assert len(MODELS) >= 20 and MODELS == sorted(MODELS)
    assert registry.list_models("dey_aggarwal/*") == [f"dey_aggarwal/{b}" for b in sorted(
        ("vgg19", "resnet50", "inception_v3", "xception", "mobilenet", "transformer"))]
    with pytest.raises(ValueError, match="unknown model 'nope'; registered: dey_aggarwal/inception_v3"):
        registry.create_model("nope")


@pytest.mark.parametrize("name", [pytest.param(n, marks=_marks(n)) for n in MODELS])
def test_each_registered_model_has_exactly_its_declared_heads(name):
    import keras

    entry = registry.model_entry(name)
    model = registry.create_model(name, small=True)
    network = getattr(model, "network", model)  # Sundriyal's loss wrapper holds the functional network
    outputs = dict(zip(network.output_names, network.outputs))
    assert set(outputs) == set(entry.heads), name
    for output, spec in entry.heads.items():
        layer = network.get_layer(output)
        assert outputs[output].shape[-1] == spec.units, (name, output)
        assert keras.activations.serialize(layer.activation) == spec.activation, (name, output)
        assert layer.dtype_policy.compute_dtype == "float32", (name, output)  # losses see float32 probabilities
    keras.backend.clear_session()


def test_a_builder_that_disagrees_with_its_heads_fails_the_check():
    """The check above can fail: a head declaring 3 units against a model built with 2."""
    import keras

    wrong = heads.classes("gender", ("a", "b", "c"))
    model = registry.create_model("speziali/gender_cnn", small=True)
    assert dict(zip(model.output_names, model.outputs))["gender"].shape[-1] != wrong.units
    keras.backend.clear_session()


# --------------------------------------------------------------------------------------------- task heads


def _label_values(spec: heads.TaskSpec) -> np.ndarray:
    if spec.regression:
        return np.array([3.0, 21.0, 39.0]) if spec.decoding == "sigmoid" else np.array([0.0, 19.0, 38.0])
    return np.arange(spec.units)[:3]


def _output_for(spec: heads.TaskSpec, encoded: np.ndarray) -> np.ndarray:
    """The model output that the encoded target asks for (a perfect prediction)."""
    if spec.encoding == "sparse":
        return np.eye(spec.units)[encoded.astype(int)]
    return encoded.reshape(len(encoded), -1)


@pytest.mark.parametrize("name", sorted(heads.TASKS))
def test_each_declared_head_decodes_the_output_its_target_asks_for(name):
    spec = heads.TASKS[name]
    values = _label_values(spec)
    frame = pd.DataFrame({spec.column: values})
    target = spec.target()
    encoded, weights = target.encode(frame[target.column].to_numpy())
    assert (weights == 1).all()
    decoded = decode_heads({spec.output: _output_for(spec, encoded)},
                           Preprocessing(input_size=8, heads={spec.task: spec.head()}))
    if spec.regression:
        offset = spec.offset if spec.decoded_offset is None else spec.decoded_offset
        years = values + (offset if spec.decoding == "regression" else 0.0)
        assert [d["age"] for d in decoded] == pytest.approx(years, abs=1e-4), name
    elif spec.decoding == "groups":
        assert [d["age_group"] for d in decoded] == [spec.labels[int(v)] for v in values], name
        assert [d["age"] for d in decoded] == pytest.approx([spec.values[int(v)] for v in values]), name
    else:
        assert [d[spec.task] for d in decoded] == [spec.labels[int(v)] for v in values], name


def test_a_head_whose_decoding_disagrees_with_its_encoding_is_caught():
    """The round trip above can fail: a head decoding the CORAL label without its 21-year offset."""
    spec = heads.TASKS["sundriyal/utkface/age"]
    wrong = heads.TaskSpec(**{**spec.__dict__, "decoded_offset": 0.0})
    encoded, _ = wrong.target().encode(np.array([19.0]))
    decoded = decode_heads({"age": encoded}, Preprocessing(input_size=8, heads={"age": wrong.head()}))
    assert decoded[0]["age"] != pytest.approx(19.0 + 21.0)
    with pytest.raises(ValueError, match="labels for"):
        heads.TaskSpec("gender", 2, "softmax", "sparse_categorical_crossentropy", ("accuracy",), "gender", "sparse",
                       "softmax", labels=("male",))


def test_the_papers_read_their_heads_from_the_declarations():
    """The pipeline targets, the predict heads and the compile losses of the reproductions are the declared ones."""
    import reproductions.adience_levi as levi
    import reproductions.utkface_dual_cnn as spz
    import reproductions.utkface_xception as dey

    assert spz._targets(("age", "gender")) == {t: heads.TASKS[f"speziali/{t}"].target() for t in ("age", "gender")}
    assert levi.LOSSES == {t: heads.TASKS[f"jorgensen/{t}"].loss for t in ("gender", "age")}
    exp = dey.DeyExperiment()
    assert dey.targets(exp)["ethnicity"] == heads.TASKS["dey_aggarwal/ethnicity"].target()
    assert dey.preprocessing(exp, 32, "generated").heads["race"] == heads.TASKS["dey_aggarwal/ethnicity"].head()


# --------------------------------------------------------------------------------------------- backbones


@pytest.mark.parametrize("name", registry.list_backbones())
def test_each_backbone_is_found_through_the_one_registry(name):
    from agegender.models import backbones, efficientnet_groups, face_resnets

    entry = registry.get_backbone(name)
    family, key = name.split("/")
    lookup = {"keras": backbones.get_backbone, "face": face_resnets.get_backbone,
              "efficientnet": efficientnet_groups.get_backbone}[family]
    assert entry.family == family and lookup(key) is entry.spec and entry.label


def test_the_three_families_are_in_the_registry():
    assert {n.split("/")[0] for n in registry.list_backbones()} == {"keras", "face", "efficientnet"}
    assert registry.list_backbones("efficientnet") == ["efficientnet/b4", "efficientnet/b5", "efficientnet/b6",
                                                       "efficientnet/b7"]
    with pytest.raises(ValueError, match="unknown backbone 'keras/nope'"):
        registry.get_backbone("keras/nope")
