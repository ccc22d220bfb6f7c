"""Pooling a token sequence into one vector: MAP, GAP, MAX or first token."""

import keras
from keras import ops

POOLING_MODES = ("map", "gap", "max", "first")


def _check_mode(pooling):
    if pooling not in POOLING_MODES:
        raise ValueError(
            f"Unknown pooling={pooling!r}; use one of {POOLING_MODES}."
        )


@keras.saving.register_keras_serializable(package="keras_maeclip")
class TokenPooling(keras.layers.Layer):
    """Pools `(batch, length, width)` tokens into `(batch, width)`.

    One layer behind one `pooling=` switch:

    - `"gap"`: mean over tokens;
    - `"max"`: per-channel maximum over tokens;
    - `"first"`: the first token (a class token or `[CLS]`);
    - `"map"`: multi-head attention pooling — a learned probe attends over
      the tokens, then a residual MLP (`x + MLP(LayerNorm(x))`), as
      big_vision's `MAPHead`.

    With a `padding_mask` (1 = real token) padded positions never enter a
    mean, never win a max and are never attended to.

    Args:
        pooling: str, one of `"map"`, `"gap"`, `"max"`, `"first"`. Defaults
            to `"gap"`.
        num_heads: int. Attention heads of the MAP head; ignored otherwise.
            Defaults to `8`.
        mlp_ratio: float. Hidden width of the MAP head's MLP relative to the
            token width. Defaults to `4.0`.
        layer_norm_epsilon: float, defaults to `1e-6`.
        **kwargs: base layer arguments.

    Call args:
        tokens: tensor `(batch, length, width)`.
        padding_mask: optional bool/int tensor `(batch, length)`.

    Example:
    >>> x = keras.random.normal((2, 5, 16))
    >>> mask = keras.ops.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    >>> TokenPooling("max")(x, padding_mask=mask).shape
    (2, 16)
    >>> TokenPooling("map", num_heads=4)(x, padding_mask=mask).shape
    (2, 16)

    References: Weers et al. 2023 §3 (MAP/GAP/MAX pooling); big_vision
    `models/vit.py` (`MAPHead`); Lee et al. 2019 (Set Transformer, PMA).
    """

    def __init__(
        self,
        pooling="gap",
        num_heads=8,
        mlp_ratio=4.0,
        layer_norm_epsilon=1e-6,
        **kwargs,
    ):
        super().__init__(**kwargs)
        _check_mode(pooling)
        self.pooling = pooling
        self.num_heads = int(num_heads)
        self.mlp_ratio = float(mlp_ratio)
        self.layer_norm_epsilon = layer_norm_epsilon

    def build(self, tokens_shape, padding_mask_shape=None):
        width = int(tokens_shape[-1])
        if self.pooling == "map":
            if width % self.num_heads:
                raise ValueError(
                    f"MAP pooling: token width {width} is not divisible by "
                    f"num_heads={self.num_heads}."
                )
            self.probe = self.add_weight(
                name="probe",
                shape=(1, 1, width),
                initializer="glorot_uniform",
            )
            self.attention = keras.layers.MultiHeadAttention(
                num_heads=self.num_heads,
                key_dim=width // self.num_heads,
                dtype=self.dtype_policy,
                name="attention",
            )
            self.attention.build((None, 1, width), (None, None, width))
            self.norm = keras.layers.LayerNormalization(
                epsilon=self.layer_norm_epsilon,
                dtype=self.dtype_policy,
                name="norm",
            )
            self.norm.build((None, 1, width))
            hidden = int(round(width * self.mlp_ratio))
            self.mlp_in = keras.layers.Dense(
                hidden, activation="gelu", dtype=self.dtype_policy, name="mlp_in"
            )
            self.mlp_in.build((None, 1, width))
            self.mlp_out = keras.layers.Dense(
                width, dtype=self.dtype_policy, name="mlp_out"
            )
            self.mlp_out.build((None, 1, hidden))
        self.built = True

    def call(self, tokens, padding_mask=None):
        if self.pooling == "first":
            return tokens[:, 0]
        mask = None
        if padding_mask is not None:
            mask = ops.cast(padding_mask, "bool")
        if self.pooling == "gap":
            if mask is None:
                return ops.mean(tokens, axis=1)
            weights = ops.cast(mask, tokens.dtype)[:, :, None]
            total = ops.sum(tokens * weights, axis=1)
            count = ops.maximum(ops.sum(weights, axis=1), 1.0)
            return total / count
        if self.pooling == "max":
            if mask is None:
                return ops.max(tokens, axis=1)
            # A large finite negative (not -inf) keeps an all-padding row
            # finite instead of producing -inf.
            filled = ops.where(
                mask[:, :, None], ops.cast(tokens, "float32"), -3.0e38
            )
            return ops.cast(ops.max(filled, axis=1), tokens.dtype)
        # MAP: a learned probe attends over the tokens, then a residual MLP.
        batch = ops.shape(tokens)[0]
        probe = ops.broadcast_to(
            ops.cast(self.probe, tokens.dtype), (batch, 1, tokens.shape[-1])
        )
        attention_mask = None if mask is None else mask[:, None, :]
        x = self.attention(
            query=probe, value=tokens, key=tokens, attention_mask=attention_mask
        )
        x = x + self.mlp_out(self.mlp_in(self.norm(x)))
        return x[:, 0]

    def compute_output_shape(self, tokens_shape, padding_mask_shape=None):
        return (tokens_shape[0], tokens_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "pooling": self.pooling,
                "num_heads": self.num_heads,
                "mlp_ratio": self.mlp_ratio,
                "layer_norm_epsilon": self.layer_norm_epsilon,
            }
        )
        return config
