"""Transformer encoder on a CNN feature map (Dey & Aggarwal, Section 3.4.6), as serializable layers.

Paper 003 (Dey & Aggarwal; ``reproductions/utkface_xception/README.md``), Sec. 3.4.6: "we defined two classes,
first class had the self-attention and feed forward layers and in the second class we had the
encoder. We used MobileNet as the base model before using transformer. So, the input was passed
to MobileNet and the output of the MobileNet was passed to transformer." reproductions/utkface_xception/README.md:
MobileNet feature map -> tokens -> encoder blocks (self-attention + feed-forward) -> global max
pooling -> heads.

The two classes here:

* :class:`TransformerBlock`: one post-norm encoder layer of Vaswani et al. (2017):
  ``x = LayerNorm(x + Dropout(MultiHeadSelfAttention(x)))``, then
  ``x = LayerNorm(x + Dropout(Dense(d_model)(Dense(ff_dim, relu)(x))))``.
* :class:`TransformerEncoder`: turns a feature map ``(batch, H, W, C)`` (or a token sequence
  ``(batch, N, C)``) into ``H * W`` tokens, projects them to ``d_model`` with a Dense layer, adds a
  learned position embedding, and applies ``num_blocks`` :class:`TransformerBlock` s. Its output
  is the token sequence ``(batch, N, d_model)``; the multi-head model pools it with global max
  pooling.

The paper gives no sizes; ours (the defaults, recorded in every run's config) are 2 blocks,
``d_model`` 256, 4 heads, feed-forward 512, dropout 0.1: a small encoder on the 7x7 = 49
tokens of MobileNet at 224x224.

Both layers are registered with ``@keras.saving.register_keras_serializable(package="agegender")``
and build every sub-layer in ``build``, so a model holding them round-trips through ``.keras``
files with ``keras.saving.load_model(path, safe_mode=True)`` (no Lambda layers).
"""

from __future__ import annotations

import keras
from keras import ops

__all__ = ["TransformerBlock", "TransformerEncoder", "DEFAULTS"]

DEFAULTS = {"num_blocks": 2, "d_model": 256, "num_heads": 4, "ff_dim": 512, "dropout": 0.1}  # our choice


@keras.saving.register_keras_serializable(package="agegender")
class TransformerBlock(keras.layers.Layer):
    """Self-attention + feed-forward, each with a residual connection and layer normalisation."""

    def __init__(self, d_model: int = 256, num_heads: int = 4, ff_dim: int = 512, dropout: float = 0.1,
                 **kwargs):
        super().__init__(**kwargs)
        if d_model % num_heads:
            raise ValueError(f"d_model ({d_model}) must be a multiple of num_heads ({num_heads})")
        self.d_model, self.num_heads = int(d_model), int(num_heads)
        self.ff_dim, self.dropout = int(ff_dim), float(dropout)
        policy = self.dtype_policy
        self.attention = keras.layers.MultiHeadAttention(
            num_heads=self.num_heads, key_dim=self.d_model // self.num_heads, dropout=self.dropout, dtype=policy,
            name="self_attention")
        self.attention_dropout = keras.layers.Dropout(self.dropout, dtype=policy, name="attention_dropout")
        self.attention_norm = keras.layers.LayerNormalization(epsilon=1e-6, dtype=policy, name="attention_norm")
        self.ff_hidden = keras.layers.Dense(self.ff_dim, activation="relu", dtype=policy, name="ff_hidden")
        self.ff_out = keras.layers.Dense(self.d_model, dtype=policy, name="ff_out")
        self.ff_dropout = keras.layers.Dropout(self.dropout, dtype=policy, name="ff_dropout")
        self.ff_norm = keras.layers.LayerNormalization(epsilon=1e-6, dtype=policy, name="ff_norm")

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        if input_shape[-1] != self.d_model:
            raise ValueError(f"TransformerBlock expects {self.d_model} features per token, got shape {input_shape}")
        self.attention.build(input_shape, input_shape)
        self.attention_norm.build(input_shape)
        self.ff_hidden.build(input_shape)
        self.ff_out.build(input_shape[:-1] + (self.ff_dim,))
        self.ff_norm.build(input_shape)
        super().build(input_shape)

    def call(self, inputs, training=None):
        attended = self.attention(inputs, inputs, training=training)
        x = self.attention_norm(inputs + self.attention_dropout(attended, training=training))
        ff = self.ff_out(self.ff_hidden(x))
        return self.ff_norm(x + self.ff_dropout(ff, training=training))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "d_model": self.d_model, "num_heads": self.num_heads, "ff_dim": self.ff_dim,
                "dropout": self.dropout}


@keras.saving.register_keras_serializable(package="agegender")
class TransformerEncoder(keras.layers.Layer):
    """Feature map -> tokens -> projection + learned position embedding -> ``num_blocks`` encoder blocks."""

    def __init__(self, num_blocks: int = 2, d_model: int = 256, num_heads: int = 4, ff_dim: int = 512,
                 dropout: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be at least 1, got {num_blocks}")
        self.num_blocks, self.d_model = int(num_blocks), int(d_model)
        self.num_heads, self.ff_dim, self.dropout = int(num_heads), int(ff_dim), float(dropout)
        policy = self.dtype_policy
        self.projection = keras.layers.Dense(self.d_model, dtype=policy, name="token_projection")
        self.blocks = [TransformerBlock(self.d_model, self.num_heads, self.ff_dim, self.dropout, dtype=policy,
                                        name=f"block_{i + 1}") for i in range(self.num_blocks)]
        self.position_embedding = None

    @staticmethod
    def _tokens_shape(input_shape) -> tuple:
        input_shape = tuple(input_shape)
        if len(input_shape) == 4:
            if input_shape[1] is None or input_shape[2] is None:
                raise ValueError(f"TransformerEncoder needs a fixed spatial size, got {input_shape}")
            return (input_shape[0], input_shape[1] * input_shape[2], input_shape[3])
        if len(input_shape) == 3 and input_shape[1] is not None:
            return input_shape
        raise ValueError(f"TransformerEncoder takes (batch, H, W, C) or (batch, N, C) with fixed sizes, "
                         f"got {input_shape}")

    def build(self, input_shape):
        tokens = self._tokens_shape(input_shape)
        self.projection.build(tokens)
        self.position_embedding = self.add_weight(
            shape=(tokens[1], self.d_model), initializer=keras.initializers.RandomNormal(stddev=0.02),
            name="position_embedding")
        for block in self.blocks:
            block.build(tokens[:-1] + (self.d_model,))
        super().build(input_shape)

    def call(self, inputs, training=None):
        shape = self._tokens_shape(inputs.shape)
        x = ops.reshape(inputs, (-1, shape[1], shape[2]))
        x = self.projection(x)
        x = x + ops.cast(self.position_embedding, x.dtype)[None]
        for block in self.blocks:
            x = block(x, training=training)
        return x

    def compute_output_shape(self, input_shape):
        tokens = self._tokens_shape(input_shape)
        return (tokens[0], tokens[1], self.d_model)

    def get_config(self):
        return {**super().get_config(), "num_blocks": self.num_blocks, "d_model": self.d_model,
                "num_heads": self.num_heads, "ff_dim": self.ff_dim, "dropout": self.dropout}
