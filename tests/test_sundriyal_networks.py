"""The networks of Sundriyal's reproduction: the VGGFace2 face backbones (``agegender.models.face_resnets``),
their weights loaded by layer name from Keras's HDF5 files (and refused when only positional), the backbone
registry that fails loudly and labels substitutions, missing substitute weights failing before training, and
the three networks (baseline, single-task, multi-task) with the thesis's layers (``agegender.models.mtl_head``).
The tiny backbone comes from ``tests/helpers.py``."""

from __future__ import annotations

import numpy as np
import pytest

import reproductions.mtl_weighted_loss as sun
from agegender.errors import DataError
from tests.helpers import _tiny_backbone


# ---------------------------------------------------------------------------------------------- backbones


def test_weights_load_by_name_from_h5_reproduce_the_outputs(tmp_path):
    import keras

    from agegender.models.face_resnets import build_vggface2_resnet, load_weights_by_name, save_weights_by_name

    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    keras.utils.set_random_seed(1)
    source = build_vggface2_resnet((32, 32, 3), se=True, embedding_dim=128)
    assert source.output.shape[-1] == 128
    assert source.get_layer("conv2_1_1x1_down").use_bias and not source.get_layer("conv2_1_1x1_reduce").use_bias
    expected = np.asarray(source(x, training=False))
    source.save(tmp_path / "senet.h5")  # Keras's own legacy HDF5 writer (model_weights/<layer>/...)
    save_weights_by_name(source, tmp_path / "senet_k2.h5")  # Keras 2 weights layout
    keras3_file = tmp_path / "tiny.weights.h5"
    _tiny_backbone().save_weights(keras3_file)
    keras.utils.set_random_seed(2)
    target = build_vggface2_resnet((32, 32, 3), se=True, embedding_dim=128)
    assert not np.allclose(np.asarray(target(x, training=False)), expected, atol=1e-3)
    for name in ("senet.h5", "senet_k2.h5"):
        report = load_weights_by_name(target, tmp_path / name)
        assert len(report["loaded"]) == len([l for l in target.layers if l.weights]) and not report["unused_in_file"]
        assert np.allclose(np.asarray(target(x, training=False)), expected, atol=1e-5)
        target.get_layer("feat_extract").set_weights([np.zeros((1, 1, 2048, 128), "float32")])
    with pytest.raises(DataError, match="by position"):
        load_weights_by_name(target, keras3_file)
    without = _drop_layer(tmp_path / "senet_k2.h5", "feat_extract")  # as a senet50_ft file: no 128-D layer
    with pytest.raises(DataError, match="not in the file"):
        load_weights_by_name(target, without)
    report = load_weights_by_name(target, without, optional=("feat_extract",))
    assert report["missing_optional"] == ["feat_extract"]
    with pytest.raises(DataError, match="not found"):
        load_weights_by_name(target, tmp_path / "absent.h5")
    keras.backend.clear_session()


def _drop_layer(path, layer):
    import h5py

    with h5py.File(path, "a") as f:
        del f[layer]
        f.attrs["layer_names"] = np.array([n for n in f.attrs["layer_names"] if n.decode() != layer])
    return path


def test_backbone_registry_fails_loudly_and_labels_substitutions():
    from agegender.models.face_resnets import BACKBONES, choose_backbone, get_backbone

    assert {"resnet50", "senet50_128", "resnet50_imagenet"} <= set(BACKBONES)
    with pytest.raises(ValueError, match="not built here"):
        get_backbone("lightcnn")
    with pytest.raises(ValueError, match="unknown backbone"):
        get_backbone("vgg16")
    sub = choose_backbone("senet50_128")
    assert sub.substituted and sub.used == "resnet50_imagenet" and "SE-ResNet-50-128D" in sub.note
    assert "substituted" in sub.note
    real = choose_backbone("resnet50", "/x/resnet50_ft.h5")
    assert not real.substituted and real.used == "resnet50"
    assert choose_backbone("resnet50", "none").weights is None and "random" in choose_backbone("resnet50", "none").note
    assert choose_backbone("senet50_128", smoke=True).used == "smoke_cnn"
    assert BACKBONES["resnet50"].input_size == 200  # Sec. 3.1
    assert (BACKBONES["resnet50"].feature_dim, BACKBONES["senet50_128"].feature_dim) == (2048, 128)  # Table 4.5


def test_missing_substitute_weights_fail_before_training(tmp_path):
    from agegender.models.face_resnets import choose_backbone

    choice = choose_backbone("senet50_128", substitute_weights=str(tmp_path / "absent_notop.h5"))
    assert choice.used == "resnet50_imagenet" and choice.substituted
    with pytest.raises(DataError, match="not found"):
        sun.check_backbone(choice)
    sun.check_backbone(choose_backbone("senet50_128", "none"))  # random weights: nothing to fetch


# ---------------------------------------------------------------------------------------------- networks


def test_three_networks_have_the_thesis_layers():
    import keras

    from agegender.models.mtl_head import TASKS, build_network, layer_groups

    tasks = TASKS["utkface"]
    mtl = build_network(_tiny_backbone(), tasks, "mtl")
    kinds = [(l.name, type(l).__name__) for l in mtl.layers]
    names = [n for n, _ in kinds]
    assert names.index("shared_fc1") < names.index("shared_act1") < names.index("shared_bn1")  # FC, LeakyReLU, BN
    for task in tasks:
        order = [names.index(f"{task}_fc"), names.index(f"{task}_dropout"), names.index(f"{task}_act"),
                 names.index(task)]
        assert order == sorted(order)  # FC, Dropout, LeakyReLU, output
    assert mtl.get_layer("shared_act1").negative_slope == pytest.approx(0.01)
    assert mtl.get_layer("age_fc").units == 128 and mtl.get_layer("gender_dropout").rate == 0.5
    assert {n: tuple(mtl.get_layer(n).output.shape) for n in tasks} == {"gender": (None, 2), "race": (None, 5),
                                                                        "age": (None, 1)}
    groups = layer_groups(mtl, tuple(tasks))
    assert groups["backbone"] == ["backbone"] and groups["shared"][0] == "shared_fc1"
    baseline = build_network(_tiny_backbone(), {"race": tasks["race"]}, "baseline")
    assert [l.name for l in baseline.layers if l.weights] == ["backbone", "race"]
    single = build_network(_tiny_backbone(), {"age": TASKS["celeba"]["age"]}, "single")
    assert single.output_names == ["age"] and single.get_layer("age").units == 2  # "128x2"
    with pytest.raises(ValueError):
        build_network(_tiny_backbone(), tasks, "single")
    keras.backend.clear_session()
