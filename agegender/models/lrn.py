"""Local response normalisation across channels, as used by Levi & Hassner (2015).

Jørgensen et al. (paper 001, Table 1) place a "Local Response" normalisation layer after each
max-pooling layer of the reduced Levi & Hassner network, without giving its settings; reproductions/README.md
fixes them to Levi & Hassner's: size 5 (depth radius 2), alpha 1e-4, beta 0.75, bias (k) 1.0.

Alpha convention. Levi & Hassner trained in Caffe, whose LRN layer computes::

    b[c] = a[c] / (k + (alpha / n) * sum_{c' = c - n//2}^{c + n//2} a[c']**2) ** beta

with ``n = local_size`` (the sum is over the ``n`` channels centred on ``c``, zero-padded at the
edges). ``tf.nn.local_response_normalization`` computes the same expression *without* the
``/ n``. This layer follows **Caffe**: ``alpha`` is the value written in Levi & Hassner's
``deploy.prototxt`` (1e-4) and the layer passes ``alpha / size`` to TensorFlow, so the
published numbers reproduce the published network. (A Keras re-implementation that passed
1e-4 straight to TensorFlow would normalise five times more strongly; with activations of the
usual magnitude both are close to the identity, and the parameter count is unaffected.)

On a Keras backend other than TensorFlow (JAX, PyTorch) the same expression is computed with
``keras.ops`` (a sum of shifted squares over the zero-padded channel axis); the two agree to
float32 rounding (tested).
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="agegender")
class LocalResponseNormalization(keras.layers.Layer):
    """Cross-channel LRN for channels-last 4-D tensors ``(batch, height, width, channels)``.

    Args:
        size: number of channels in the window (Caffe ``local_size``); odd, >= 1. Levi & Hassner: 5.
        alpha: Caffe-convention scale (divided by ``size`` before use, see the module docstring).
            Levi & Hassner: 1e-4.
        beta: exponent. Levi & Hassner: 0.75.
        bias: additive constant ``k``. Levi & Hassner (Caffe default): 1.0.

    The computation runs in float32 whatever the dtype policy (float16 squares overflow and
    lose precision) and the result is cast back to the layer's compute dtype, so the layer
    works under ``mixed_float16``. It has no weights.
    """

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, bias: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        size = int(size)
        if size < 1 or size % 2 == 0:
            raise ValueError(f"LocalResponseNormalization: size must be a positive odd integer, got {size}")
        self.size = size
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.bias = float(bias)

    @property
    def depth_radius(self) -> int:
        """TensorFlow's half-width: ``size = 2 * depth_radius + 1``."""
        return (self.size - 1) // 2

    def call(self, inputs):
        if keras.backend.backend() != "tensorflow":
            return self._call_ops(inputs)
        import tensorflow as tf

        x = tf.cast(inputs, tf.float32)
        y = tf.nn.local_response_normalization(
            x,
            depth_radius=self.depth_radius,
            bias=self.bias,
            alpha=self.alpha / self.size,  # Caffe convention -> TensorFlow convention
            beta=self.beta,
        )
        return tf.cast(y, self.compute_dtype)

    def _call_ops(self, inputs):
        """The Caffe expression with ``keras.ops`` only (any backend)."""
        x = ops.cast(inputs, "float32")
        channels, radius = x.shape[-1], self.depth_radius
        squares = ops.pad(ops.square(x), [[0, 0], [0, 0], [0, 0], [radius, radius]])
        window = squares[..., 0:channels]
        for offset in range(1, self.size):
            window = window + squares[..., offset:offset + channels]
        y = x / ops.power(self.bias + (self.alpha / self.size) * window, self.beta)
        return ops.cast(y, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"size": self.size, "alpha": self.alpha, "beta": self.beta, "bias": self.bias})
        return config
