"""A learned per-modality (type) vector added to every token of a sequence."""

import numbers

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_maeclip")
class ModalityEmbedding(keras.layers.Layer):
    """Adds the learned embedding of one modality to every token.

    Holds a table of shape `(num_modalities, width)`; a call adds row
    `modality` to each token, so a joint encoder can tell image tokens from
    text tokens (BERT's segment / M3AE's type embedding). One instance is
    shared by all modalities: call it once per modality with a different
    `modality` index, and every row gets gradients from its own tokens.

    Args:
        num_modalities: int, rows of the table. Defaults to `2` (image, text).
        initializer: initializer of the table, defaults to
            `RandomNormal(stddev=0.02)` (as M3AE).
        **kwargs: base layer arguments.

    Call args:
        tokens: tensor `(batch, length, width)`.
        modality: Python int in `[0, num_modalities)`, the row to add.
            Defaults to `0`.

    Returns:
        `tokens` plus the modality's embedding, same shape.

    Example:
    >>> layer = ModalityEmbedding()
    >>> image = layer(keras.ops.zeros((2, 16, 8)), modality=0)
    >>> text = layer(keras.ops.zeros((2, 5, 8)), modality=1)
    >>> tuple(image.shape), tuple(text.shape)
    ((2, 16, 8), (2, 5, 8))

    References: Geng et al. 2022 (M3AE) §3 and `m3ae/model.py` (type
    embeddings); Devlin et al. 2019 (BERT) §3.2 (segment embeddings).
    """

    def __init__(self, num_modalities=2, initializer=None, **kwargs):
        super().__init__(**kwargs)
        if int(num_modalities) < 1:
            raise ValueError(
                f"num_modalities must be a positive integer; got {num_modalities!r}."
            )
        self.num_modalities = int(num_modalities)
        self.initializer = keras.initializers.get(
            initializer or keras.initializers.RandomNormal(stddev=0.02)
        )

    def build(self, tokens_shape):
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.num_modalities, tokens_shape[-1]),
            initializer=self.initializer,
        )
        self.built = True

    def call(self, tokens, modality=0):
        if not isinstance(modality, numbers.Integral) or not 0 <= modality < self.num_modalities:
            raise ValueError(
                f"modality must be a Python int in [0, {self.num_modalities}); "
                f"got {modality!r}."
            )
        return tokens + ops.cast(self.embeddings[int(modality)], tokens.dtype)

    def compute_output_shape(self, tokens_shape):
        return tokens_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_modalities": self.num_modalities,
                "initializer": keras.initializers.serialize(self.initializer),
            }
        )
        return config
