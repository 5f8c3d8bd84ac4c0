"""Per-layer mean activation maps (Speziali, Figs. 16-19) and Grad-CAM, as numpy arrays.

Paper 000 (Speziali), Section IV-C: "the corresponding mean attention heatmaps for each
convolutional layer in the neural network" for one validation image (Fig. 16), for the age and
gender single-task networks (Figs. 17, 18) and the dual-task network (Fig. 19). The paper does
not define the maps further; here a layer's map is the **mean over channels of that
convolution layer's output** for the image, min-max normalised to [0, 1] (what a forward hook
on each ``nn.Conv2d`` gives in the paper's PyTorch). In :func:`agegender.models.dual_cnn.build_dual_cnn`
the convolutions are linear (batch norm and ReLU are separate layers), so these are
pre-activation maps; in the Levi & Hassner models the ReLU is fused into the convolution.

:func:`grad_cam` adds Grad-CAM (Selvaraju et al., 2017) for a named output on a convolution
layer (default: the last one): channel weights are the spatially averaged gradients of the
chosen score, the map is ``ReLU(sum_k w_k A_k)``, upsampled to the input size and normalised.

Both work on any Keras backend: under TensorFlow the gradient comes from ``tf.GradientTape``
through the whole model; under JAX (or PyTorch) the model is cut at the convolution layer into a
lower part (input to feature map) and an upper part (feature map to the output), and the gradient
of the upper part at the feature map comes from ``jax.grad`` (``torch.autograd``); the upsampling is
``keras.ops.image.resize`` (bilinear, half-pixel centres, as ``tf.image.resize``). Both give the same
map up to float rounding (``tests/test_backends.py``).

Both work on any flat functional model of :mod:`agegender.models` (convolutions are found by
type: ``Conv2D``, ``SeparableConv2D``, ``DepthwiseConv2D``; in the Xception model that is every
one of its convolutions). The image is given as the model expects it: one ``(H, W, 3)`` (or
``(1, H, W, 3)``) array of pixels in [0, 255]. Plotting is left to the caller.
"""

from __future__ import annotations

import keras
import numpy as np

_CONV_TYPES = (keras.layers.Conv2D, keras.layers.SeparableConv2D, keras.layers.DepthwiseConv2D)


def activation_maps(model: keras.Model, image, layer_names=None) -> dict[str, np.ndarray]:
    """Mean activation heatmap of each convolution layer for one image.

    Args:
        model: a functional model (any builder of :mod:`agegender.models`).
        image: ``(H, W, C)`` or ``(1, H, W, C)`` array, in the model's input range ([0, 255]).
        layer_names: convolution layers to return, in that order; default all convolution
            layers of the model in graph order.

    Returns:
        ``{layer name: (h, w) float32 array}``, each the channel mean of that layer's output,
        min-max scaled to [0, 1] (an all-constant map is returned as zeros), at the layer's
        own resolution.

    Raises:
        ValueError: the model has no convolution layer, a name is not a layer of the model, or
            the image shape does not fit the model's input.
    """
    layers = _select_conv_layers(model, layer_names)
    probe = keras.Model(_model_input(model), [layer.output for layer in layers])
    outputs = probe(_as_batch(model, image), training=False)
    if not isinstance(outputs, (list, tuple)):
        outputs = [outputs]
    maps = {}
    for layer, out in zip(layers, outputs):
        mean = np.mean(np.asarray(keras.ops.convert_to_numpy(out), dtype=np.float64)[0], axis=-1)
        maps[layer.name] = _unit_range(mean)
    return maps


def grad_cam(model: keras.Model, image, output: str = "gender", class_index: int | None = None,
             layer_name: str | None = None, upsample: bool = True) -> np.ndarray:
    """Grad-CAM heatmap of one output of ``model`` for one image.

    Args:
        model: a functional model with an output layer named ``output``.
        image: ``(H, W, C)`` or ``(1, H, W, C)`` array, in the model's input range ([0, 255]).
        output: output (layer) name, ``"gender"``, ``"age"`` or ``"race"``.
        class_index: the class whose score is explained. Multi-unit (softmax) outputs: default
            the predicted class (argmax); the score is that class's probability. One sigmoid
            unit (Jørgensen's gender): class 1 is ``p``, class 0 is ``1 - p``, default the
            predicted class. One linear unit (Speziali's age regression): the predicted value
            itself; ``class_index`` must be None.
        layer_name: convolution layer to explain at; default the last convolution layer.
        upsample: resize the map bilinearly to the input's height and width (default); if
            False, keep the convolution layer's resolution.

    Returns:
        ``(H, W)`` (or the layer's ``(h, w)``) float32 array in [0, 1]; zeros where no location
        carries positive evidence for the score.

    Raises:
        ValueError: unknown output or layer, a layer that is not a convolution, a class index
            out of range (for a linear unit only ``None`` is accepted), or a bad image shape.
    """
    names = {layer.name for layer in model.layers}
    if output not in names:
        raise ValueError(f"model {model.name!r} has no output layer {output!r}")
    conv = _select_conv_layers(model, None if layer_name is None else [layer_name])[-1]
    head = model.get_layer(output)
    x = _as_batch(model, image)
    if keras.backend.backend() == "tensorflow":
        fmap, grads = _tf_gradient(model, conv, head, x, class_index)
    else:
        fmap, grads = _split_gradient(model, conv, head, x, class_index)
    weights = np.mean(grads[0], axis=(0, 1))  # alpha_k: mean over h, w
    cam = np.maximum(np.sum(fmap[0] * weights, axis=-1), 0.0).astype(np.float32)
    if upsample:
        height, width = x.shape[1], x.shape[2]
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            cam = tf.image.resize(cam[None, :, :, None], (height, width), method="bilinear")[0, :, :, 0].numpy()
        else:
            cam = keras.ops.convert_to_numpy(keras.ops.image.resize(cam[None, :, :, None], (height, width),
                                                                     interpolation="bilinear"))[0, :, :, 0]
    cam = np.asarray(cam, dtype=np.float64)
    if cam.max() <= 0:
        return np.zeros(cam.shape, dtype=np.float32)
    return (cam / cam.max()).clip(0.0, 1.0).astype(np.float32)


def _tf_gradient(model, conv, head, x, class_index):
    """(feature map, gradient of the score at it) as float32 numpy, from one ``tf.GradientTape`` over the model."""
    import tensorflow as tf

    probe = keras.Model(_model_input(model), [conv.output, head.output])
    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(x)  # record every op, also through frozen (non-watched) layers
        fmap, pred = probe(x, training=False)
        pred = tf.cast(pred, tf.float32)
        score = _pick(pred, *_choice(pred.numpy(), head, class_index))
    grads = tape.gradient(score, fmap)
    if grads is None:
        raise ValueError(f"output {head.name!r} does not depend on layer {conv.name!r}")
    return np.asarray(tf.cast(fmap, tf.float32).numpy()), np.asarray(tf.cast(grads, tf.float32).numpy())


def _split_gradient(model, conv, head, x, class_index):
    """(feature map, gradient of the score at it) on a backend other than TensorFlow: the model cut at ``conv``
    (the lower part gives the map, the upper part the output), differentiated by the backend (JAX, PyTorch)."""
    lower = keras.Model(_model_input(model), conv.output)
    try:
        upper = keras.Model(conv.output, head.output)
    except ValueError as err:  # the output needs more than this layer's map (another path from the input)
        raise ValueError(f"output {head.name!r} does not depend on layer {conv.name!r} alone ({err})") from None
    fmap = keras.ops.convert_to_numpy(lower(x, training=False)).astype(np.float32)
    pred = keras.ops.convert_to_numpy(keras.ops.cast(upper(fmap, training=False), "float32"))
    index, kind = _choice(pred, head, class_index)

    def score(feature_map):
        return _pick(keras.ops.cast(upper(feature_map, training=False), "float32"), index, kind)

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        grads = jax.jit(jax.grad(score))(fmap)  # one compilation, not one per op
    elif backend == "torch":
        import torch

        leaf = torch.tensor(fmap, requires_grad=True)
        score(leaf).backward()
        grads = leaf.grad
    else:
        raise ValueError(f"Grad-CAM has no gradient for the Keras backend {backend!r} (tensorflow, jax or torch)")
    return fmap, np.asarray(keras.ops.convert_to_numpy(grads), dtype=np.float32)


def _choice(pred: np.ndarray, head, class_index) -> tuple[int, str]:
    """Which score Grad-CAM explains (see grad_cam), from the concrete prediction ``pred`` ``[1, units]``:
    ``(index, kind)``, kind ``softmax`` (the class's output), ``sigmoid`` or ``linear``."""
    pred = np.asarray(pred, dtype=np.float32)
    units = pred.shape[-1]
    if units > 1:
        index = int(np.argmax(pred[0])) if class_index is None else int(class_index)
        if not 0 <= index < units:
            raise ValueError(f"class_index {class_index} out of range for output {head.name!r} with {units} units")
        return index, "softmax"
    activation = getattr(getattr(head, "activation", None), "__name__", "")
    if activation == "sigmoid":
        index = int(float(pred[0, 0]) >= 0.5) if class_index is None else int(class_index)
        if index not in (0, 1):
            raise ValueError(f"class_index must be 0 or 1 for the sigmoid output {head.name!r}, got {class_index}")
        return index, "sigmoid"
    if class_index is not None:
        raise ValueError(f"output {head.name!r} is a single {activation or 'linear'} unit: leave class_index None")
    return 0, "linear"


def _pick(pred, index: int, kind: str):
    """The scalar score of a prediction tensor (any backend): the class's output, ``p`` or ``1 - p``, the value."""
    if kind == "sigmoid":
        return pred[0, 0] if index == 1 else 1.0 - pred[0, 0]
    return pred[0, index]


def _select_conv_layers(model, layer_names):
    if layer_names is None:
        layers = [layer for layer in model.layers if isinstance(layer, _CONV_TYPES)]
        if not layers:
            raise ValueError(f"model {model.name!r} has no convolution layer")
        return layers
    by_name = {layer.name: layer for layer in model.layers}
    layers = []
    for name in layer_names:
        if name not in by_name:
            raise ValueError(f"model {model.name!r} has no layer {name!r}")
        if not isinstance(by_name[name], _CONV_TYPES):
            raise ValueError(f"layer {name!r} is a {type(by_name[name]).__name__}, not a convolution")
        layers.append(by_name[name])
    return layers


def _model_input(model):
    if len(model.inputs) != 1:
        raise ValueError(f"model {model.name!r} has {len(model.inputs)} inputs; one image input is expected")
    return model.inputs[0]


def _as_batch(model, image) -> np.ndarray:
    array = np.asarray(image, dtype=np.float32)
    if array.ndim == 3:
        array = array[None]
    expected = tuple(model.inputs[0].shape[1:])
    if array.ndim != 4 or array.shape[0] != 1 or any(e is not None and e != a for e, a in zip(expected, array.shape[1:])):
        raise ValueError(f"image of shape {np.shape(image)} does not fit model input {(None, *expected)}; "
                         "pass one (H, W, C) image")
    return array


def _unit_range(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    if high - low <= 0 or not np.isfinite(high - low):
        return np.zeros(values.shape, dtype=np.float32)
    return ((values - low) / (high - low)).astype(np.float32)
