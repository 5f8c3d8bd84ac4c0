"""Model builders: exact Jørgensen Table 1/2 shapes and counts, Speziali variants, LRN, save/load,
activation maps and Grad-CAM, mixed precision. All builds use ``weights=None`` (no network)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from agegender.errors import DataError
from agegender.models.activations import activation_maps, grad_cam
from agegender.models.dual_cnn import build_dual_cnn
from agegender.models.levi_hassner import build_levi_hassner
from agegender.models.lrn import LocalResponseNormalization
from agegender.models.xception_transfer import build_xception_multitask


def _counts(model):
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    non_trainable = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
    return trainable, non_trainable


def _images(shape, n=2, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, *shape)).astype("float32")


# --------------------------------------------------------------------------- Levi & Hassner

@pytest.mark.parametrize("task, width, expected", [
    ("gender", "reduced", 7_192_065),   # Table 2
    ("age", "reduced", 7_192_968),      # Table 2
    ("multitask", "reduced", 14_287_625),  # Table 2
    ("gender", "full", 115_023_873),    # Section 3.1 baseline
])
def test_levi_hassner_parameter_counts(task, width, expected):
    model = build_levi_hassner(task, width)
    assert model.count_params() == expected
    assert _counts(model) == (expected, 0)  # Table 2: no non-trainable parameters


def test_levi_hassner_functional_part_is_97408():
    model = build_levi_hassner("multitask")
    conv_part = keras.Model(model.input, model.get_layer("flatten").output)
    assert conv_part.count_params() == 97_408  # Table 2 "Functional layer"


# Table 1, reduced gender model: output shape and parameters per layer
TABLE1 = {
    "rescaling": ((227, 227, 3), 0),
    "block1_conv": ((221, 221, 24), 3_552),
    "block1_pool": ((110, 110, 24), 0),
    "block1_lrn": ((110, 110, 24), 0),
    "block2_conv": ((106, 106, 64), 38_464),
    "block2_pool": ((52, 52, 64), 0),
    "block2_lrn": ((52, 52, 64), 0),
    "block3_conv": ((50, 50, 96), 55_392),
    "block3_pool": ((24, 24, 96), 0),
    "block3_lrn": ((24, 24, 96), 0),
    "flatten": ((55_296,), 0),
    "gender_fc1": ((128,), 7_078_016),
    "gender_dropout1": ((128,), 0),
    "gender_fc2": ((128,), 16_512),
    "gender_dropout2": ((128,), 0),
    "gender": ((1,), 129),
}


def test_levi_hassner_table1_layers():
    model = build_levi_hassner("gender", "reduced")
    for name, (shape, params) in TABLE1.items():
        layer = model.get_layer(name)
        assert tuple(layer.output.shape[1:]) == shape, name
        assert layer.count_params() == params, name
    assert model.get_layer("block1_conv").strides == (1, 1)
    assert model.get_layer("block1_pool").pool_size == (3, 3)
    assert model.get_layer("block1_pool").strides == (2, 2)
    assert model.get_layer("gender_dropout1").rate == 0.5
    lrn = model.get_layer("block1_lrn")
    assert (lrn.size, lrn.alpha, lrn.beta, lrn.bias) == (5, 1e-4, 0.75, 1.0)
    age = build_levi_hassner("age", "reduced")
    assert age.get_layer("age").count_params() == 1_032  # Section 3.1: "1032 trainable parameters"


@pytest.mark.parametrize("task, expected", [
    ("gender", {"gender": (2, 1)}),
    ("age", {"age": (2, 8)}),
    ("multitask", {"gender": (2, 1), "age": (2, 8)}),
])
def test_levi_hassner_outputs(task, expected):
    model = build_levi_hassner(task)
    assert sorted(model.output_names) == sorted(expected)
    pred = model.predict(_images((227, 227, 3)), verbose=0)
    assert {k: v.shape for k, v in pred.items()} == expected
    if "gender" in pred:
        assert np.all((pred["gender"] >= 0) & (pred["gender"] <= 1))
    if "age" in pred:
        np.testing.assert_allclose(pred["age"].sum(axis=1), 1.0, rtol=1e-5)


def test_levi_hassner_rejects_unknown_names():
    with pytest.raises(ValueError, match="gender, age, multitask"):
        build_levi_hassner("race")
    with pytest.raises(ValueError, match="full, reduced"):
        build_levi_hassner("gender", width="half")


def test_multitask_trains_with_loss_weights():
    """The trainer's contract: dict losses keyed by task, gamma as loss_weights (Eq. 1)."""
    model = build_levi_hassner("multitask", input_shape=(63, 63, 3))
    gamma = 0.5
    model.compile(optimizer=keras.optimizers.Adam(1e-4),
                  loss={"gender": "binary_crossentropy", "age": "sparse_categorical_crossentropy"},
                  loss_weights={"gender": gamma, "age": 1 - gamma},
                  metrics={"gender": ["accuracy"], "age": ["accuracy"]})
    x = _images((63, 63, 3), n=4)
    y = {"gender": np.array([0, 1, 0, 1], "float32")[:, None], "age": np.array([0, 3, 7, 4])}
    history = model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"][0])


# --------------------------------------------------------------------------- LRN

def _lrn_numpy(a, size, alpha, beta, bias):
    """Caffe ACROSS_CHANNELS LRN: a / (k + alpha/n * sum of squares over n channels)^beta."""
    half = size // 2
    channels = a.shape[-1]
    out = np.empty_like(a, dtype=np.float64)
    for c in range(channels):
        lo, hi = max(0, c - half), min(channels, c + half + 1)
        sq = np.sum(a[..., lo:hi].astype(np.float64) ** 2, axis=-1)
        out[..., c] = a[..., c] / (bias + alpha / size * sq) ** beta
    return out


@pytest.mark.parametrize("size, alpha, beta, bias", [(5, 1e-4, 0.75, 1.0), (3, 0.5, 0.75, 2.0), (5, 2.0, 0.5, 1.0)])
def test_lrn_matches_numpy(size, alpha, beta, bias):
    a = np.random.default_rng(1).normal(0, 30, (2, 4, 5, 7)).astype("float32")
    layer = LocalResponseNormalization(size=size, alpha=alpha, beta=beta, bias=bias)
    got = keras.ops.convert_to_numpy(layer(a))
    np.testing.assert_allclose(got, _lrn_numpy(a, size, alpha, beta, bias), rtol=1e-5, atol=1e-6)
    assert not np.allclose(got, a)  # the values are large enough for the normalisation to act
    # the keras.ops path that JAX and PyTorch backends take
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer._call_ops(a)), got, rtol=1e-6, atol=1e-7)


def test_lrn_config_and_validation():
    layer = LocalResponseNormalization(size=5, alpha=1e-4, beta=0.75, bias=1.0, name="lrn")
    assert layer.depth_radius == 2
    clone = LocalResponseNormalization.from_config(layer.get_config())
    assert (clone.size, clone.alpha, clone.beta, clone.bias, clone.name) == (5, 1e-4, 0.75, 1.0, "lrn")
    assert keras.saving.get_registered_name(LocalResponseNormalization) == "agegender>LocalResponseNormalization"
    with pytest.raises(ValueError, match="odd"):
        LocalResponseNormalization(size=4)


# --------------------------------------------------------------------------- Xception

@pytest.fixture(scope="module")
def xception():
    return build_xception_multitask(weights=None)


def test_xception_parameter_counts(xception):
    trainable, non_trainable = _counts(xception)
    assert (trainable, non_trainable) == (31_220_873, 15_365_160)  # Table 2
    assert xception.count_params() == 46_586_033
    assert tuple(xception.get_layer("block14_sepconv2_act").output.shape[1:]) == (7, 7, 2048)  # 227 input
    assert tuple(xception.get_layer("flatten").output.shape[1:]) == (100_352,)
    assert {name: tuple(xception.get_layer(name).output.shape[1:]) for name in xception.output_names} == {
        "gender": (1,), "age": (8,)}
    assert xception.get_layer("block14_sepconv1").trainable
    assert not xception.get_layer("block13_sepconv2").trainable


def test_xception_missing_weights_file(tmp_path):
    with pytest.raises(DataError, match="fix:"):
        build_xception_multitask(weights=tmp_path / "absent.h5")


@pytest.mark.slow
def test_xception_weights_file_and_save_load(xception, tmp_path):
    backbone = keras.applications.Xception(include_top=False, weights=None, input_shape=(227, 227, 3))
    path = tmp_path / "backbone.weights.h5"
    backbone.save_weights(path)
    loaded = build_xception_multitask(weights=path)
    np.testing.assert_array_equal(loaded.get_layer("block14_sepconv2").get_weights()[0],
                                  backbone.get_layer("block14_sepconv2").get_weights()[0])
    _assert_save_load(xception, _images((227, 227, 3), n=1), tmp_path)


# --------------------------------------------------------------------------- Speziali dual CNN

@pytest.mark.parametrize("variant, total, outputs", [
    ("gender", 5_876_994, {"gender": (2, 2)}),
    ("age", 5_876_865, {"age": (2, 1)}),
    ("dual", 10_071_555, {"gender": (2, 2), "age": (2, 1)}),
])
def test_dual_cnn_variants(variant, total, outputs):
    model = build_dual_cnn(variant)
    assert model.count_params() == total  # the values in the dual_cnn docstring
    assert _counts(model)[1] == 128  # block1_bn moving mean and variance
    pred = model.predict(_images((128, 128, 3)), verbose=0)
    assert {k: v.shape for k, v in pred.items()} == outputs
    if "gender" in pred:
        np.testing.assert_allclose(pred["gender"].sum(axis=1), 1.0, rtol=1e-5)


def test_dual_cnn_layers():
    model = build_dual_cnn("dual")
    shapes = {"block1_conv": (128, 128, 64), "block1_pool": (64, 64, 64), "block2_conv": (64, 64, 128),
              "block2_pool": (32, 32, 128), "block3_pool": (16, 16, 256), "block4_pool": (8, 8, 512),
              "flatten": (32_768,), "gender_fc": (128,), "age_fc": (128,)}
    for name, shape in shapes.items():
        assert tuple(model.get_layer(name).output.shape[1:]) == shape, name
    assert [model.get_layer(f"block{i}_conv").kernel_size for i in range(1, 5)] == [(3, 3), (5, 5), (3, 3), (3, 3)]
    assert sum(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers) == 1
    assert model.get_layer("gender_dropout").rate == 0.25
    with pytest.raises(ValueError, match="age, gender, dual"):
        build_dual_cnn("race")
    with pytest.raises(ValueError, match="multiple of 16"):
        build_dual_cnn("dual", input_size=100)


# --------------------------------------------------------------------------- save / load

def _assert_save_load(model, x, tmp_path):
    before = model.predict(x, verbose=0)
    path = tmp_path / f"{model.name}.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    after = loaded.predict(x, verbose=0)
    assert sorted(after) == sorted(before)
    for key in before:
        np.testing.assert_allclose(after[key], before[key], rtol=1e-6, atol=1e-7)
    assert _counts(loaded) == _counts(model)
    return loaded


@pytest.mark.parametrize("build, shape", [
    (lambda: build_levi_hassner("multitask"), (227, 227, 3)),
    (lambda: build_levi_hassner("age"), (227, 227, 3)),
    (lambda: build_dual_cnn("dual"), (128, 128, 3)),
    (lambda: build_dual_cnn("age"), (128, 128, 3)),
], ids=["levi-multitask", "levi-age", "dual", "dual-age"])
def test_save_load_round_trip(build, shape, tmp_path):
    loaded = _assert_save_load(build(), _images(shape), tmp_path)
    if "levi" in loaded.name:
        assert isinstance(loaded.get_layer("block2_lrn"), LocalResponseNormalization)


# --------------------------------------------------------------------------- activations

@pytest.fixture(scope="module")
def seeded_models():
    keras.utils.set_random_seed(0)
    return {"dual": build_dual_cnn("dual"), "levi": build_levi_hassner("multitask")}


@pytest.mark.parametrize("which", ["dual", "levi"])
def test_activation_maps(seeded_models, which):
    model = seeded_models[which]
    image = _images(model.input.shape[1:], n=1)[0]
    maps = activation_maps(model, image)
    convs = [layer.name for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert list(maps) == convs
    for name, heat in maps.items():
        assert heat.shape == tuple(model.get_layer(name).output.shape[1:3])
        assert heat.min() == 0.0 and heat.max() == 1.0
    only = activation_maps(model, image[None], layer_names=["block2_conv"])
    np.testing.assert_allclose(only["block2_conv"], maps["block2_conv"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("which, output, class_index", [
    ("dual", "gender", None), ("dual", "gender", 1), ("dual", "age", None),
    ("levi", "gender", 0), ("levi", "gender", 1), ("levi", "age", None), ("levi", "age", 7),
])
def test_grad_cam(seeded_models, which, output, class_index):
    model = seeded_models[which]
    image = _images(model.input.shape[1:], n=1, seed=3)[0]
    cam = grad_cam(model, image, output=output, class_index=class_index)
    assert cam.shape == image.shape[:2]
    assert cam.dtype == np.float32
    assert cam.min() >= 0.0 and cam.max() == pytest.approx(1.0)
    assert cam.std() > 0  # not constant
    last = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)][-1]
    small = grad_cam(model, image, output=output, class_index=class_index, upsample=False)
    assert small.shape == tuple(last.output.shape[1:3])


def test_grad_cam_and_maps_on_xception_and_errors(seeded_models):
    model = build_xception_multitask(input_shape=(96, 96, 3), weights=None)  # small input: speed only
    image = _images((96, 96, 3), n=1)[0]
    maps = activation_maps(model, image)
    assert len(maps) == 40  # Xception: 6 Conv2D (2 stem + 4 residual) + 34 SeparableConv2D
    cam = grad_cam(model, image, output="age", layer_name="block14_sepconv2")
    assert cam.shape == (96, 96) and 0.0 <= cam.min() and cam.max() <= 1.0

    dual = seeded_models["dual"]
    good = _images((128, 128, 3), n=1)[0]
    with pytest.raises(ValueError, match="does not fit"):
        grad_cam(dual, _images((64, 64, 3), n=1)[0])
    with pytest.raises(ValueError, match="no output layer"):
        grad_cam(dual, good, output="race")
    with pytest.raises(ValueError, match="out of range"):
        grad_cam(dual, good, output="gender", class_index=2)
    with pytest.raises(ValueError, match="class_index None"):
        grad_cam(dual, good, output="age", class_index=0)
    with pytest.raises(ValueError, match="not a convolution"):
        activation_maps(dual, good, layer_names=["block1_pool"])


# --------------------------------------------------------------------------- mixed precision

def test_levi_multitask_mixed_float16_outputs_float32():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_levi_hassner("multitask")
        assert model.get_layer("block1_conv").compute_dtype == "float16"
        assert model.get_layer("block1_lrn").compute_dtype == "float16"
        assert model.count_params() == 14_287_625
        out = model(_images((227, 227, 3), n=1), training=False)
        for key in ("gender", "age"):
            assert keras.backend.standardize_dtype(out[key].dtype) == "float32", key
            assert np.all(np.isfinite(keras.ops.convert_to_numpy(out[key])))
    finally:
        keras.mixed_precision.set_global_policy("float32")
