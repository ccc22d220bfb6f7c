"""A learned token prepended to a sequence (ViT's class token)."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_maeclip")
class ClassToken(keras.layers.Layer):
    """Prepends one learned token to every sequence of the batch.

    Args:
        initializer: initializer of the token, defaults to
            `RandomNormal(stddev=0.02)` (as MAE).
        **kwargs: base layer arguments.

    Call args:
        tokens: tensor `(batch, length, width)`.

    Returns:
        Tensor `(batch, length + 1, width)`.

    Example:
    >>> ClassToken()(keras.ops.zeros((2, 4, 8))).shape
    (2, 5, 8)

    References: Dosovitskiy et al. 2021 (ViT) §3.1.
    """

    def __init__(self, initializer=None, **kwargs):
        super().__init__(**kwargs)
        self.initializer = keras.initializers.get(
            initializer or keras.initializers.RandomNormal(stddev=0.02)
        )

    def build(self, input_shape):
        self.token = self.add_weight(
            name="token", shape=(1, 1, input_shape[-1]), initializer=self.initializer
        )
        self.built = True

    def call(self, tokens):
        batch = ops.shape(tokens)[0]
        token = ops.broadcast_to(
            ops.cast(self.token, tokens.dtype), (batch, 1, tokens.shape[-1])
        )
        return ops.concatenate([token, tokens], axis=1)

    def compute_output_shape(self, input_shape):
        length = None if input_shape[1] is None else input_shape[1] + 1
        return (input_shape[0], length, input_shape[2])

    def get_config(self):
        config = super().get_config()
        config["initializer"] = keras.initializers.serialize(self.initializer)
        return config
