"""The text tower: a BERT-style pre-LN transformer over WordPiece ids."""

import keras
import keras_hub

from keras_maeclip.models._blocks import pre_ln_blocks
from keras_maeclip.models._validation import check_divisible, check_positive


@keras.saving.register_keras_serializable(package="keras_maeclip")
class TextEncoder(keras_hub.models.Backbone):
    """BERT-style text encoder: token embedding + learned 1-D positions.

    Token ids are embedded, a trainable 1-D position embedding is added, and
    pre-LayerNorm transformer blocks run with the padding mask (padded
    positions are never attended to), followed by a final LayerNorm. The
    output is the whole token sequence.

    As for `ViTEncoder`, the forward pass is split so a masked model can
    replace tokens between the halves: `embed_tokens(token_ids)` then
    `encode_tokens(x, padding_mask)`.

    Args:
        vocabulary_size: int. Size of the WordPiece vocabulary.
        sequence_length: int. Longest sequence the position table covers.
        hidden_dim: int. Token width; divisible by `num_heads`.
        num_layers: int. Number of transformer blocks.
        num_heads: int. Attention heads per block.
        mlp_ratio: float. MLP hidden width relative to `hidden_dim`.
            Defaults to `4.0`.
        dropout: float. Dropout inside the blocks, defaults to `0.0`.
        layer_norm_epsilon: float, defaults to `1e-6`.
        dtype: dtype policy of the layers.
        **kwargs: `keras_hub.models.Backbone` arguments (`name`, ...).

    Example:
    >>> encoder = TextEncoder(vocabulary_size=100, sequence_length=8,
    ...                       hidden_dim=32, num_layers=2, num_heads=4)
    >>> ids = keras.ops.ones((2, 8), dtype="int32")
    >>> encoder({"token_ids": ids, "padding_mask": ids}).shape
    (2, 8, 32)

    References: Devlin et al. 2019 (BERT); Weers et al. 2023 §3 (text
    encoder).
    """

    def __init__(
        self,
        vocabulary_size,
        sequence_length,
        hidden_dim,
        num_layers,
        num_heads,
        mlp_ratio=4.0,
        dropout=0.0,
        layer_norm_epsilon=1e-6,
        dtype=None,
        **kwargs,
    ):
        check_positive(
            vocabulary_size=vocabulary_size,
            sequence_length=sequence_length,
            hidden_dim=hidden_dim,
            num_layers=num_layers,
            num_heads=num_heads,
        )
        check_divisible("hidden_dim", hidden_dim, "num_heads", num_heads)

        # === Layers ===
        self.token_embedding = keras.layers.Embedding(
            vocabulary_size,
            hidden_dim,
            embeddings_initializer=keras.initializers.RandomNormal(stddev=0.02),
            dtype=dtype,
            name="token_embedding",
        )
        self.position_embedding = keras_hub.layers.PositionEmbedding(
            sequence_length,
            initializer=keras.initializers.RandomNormal(stddev=0.01),
            dtype=dtype,
            name="position_embedding",
        )
        # Names distinct from the image tower's, so that every variable of a
        # two-tower model has its own path (Keras' torch backend registers
        # variables as torch parameters by path).
        self.transformer_layers = pre_ln_blocks(
            num_layers, hidden_dim, num_heads, mlp_ratio, dropout, layer_norm_epsilon, dtype,
            prefix="text_transformer_layer",
        )
        self.final_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=dtype, name="text_final_norm"
        )

        # === Functional model ===
        token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
        padding_mask = keras.Input(
            shape=(None,), dtype="int32", name="padding_mask"
        )
        x = self.encode_tokens(self.embed_tokens(token_ids), padding_mask)
        super().__init__(
            inputs={"token_ids": token_ids, "padding_mask": padding_mask},
            outputs=x,
            dtype=dtype,
            **kwargs,
        )

        # === Config ===
        self.vocabulary_size = vocabulary_size
        self.sequence_length = sequence_length
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.mlp_ratio = mlp_ratio
        self.dropout = dropout
        self.layer_norm_epsilon = layer_norm_epsilon

    def embed_tokens(self, token_ids):
        """Token embeddings plus learned positions, `(batch, length, width)`."""
        x = self.token_embedding(token_ids)
        return x + self.position_embedding(x)

    def encode_tokens(self, x, padding_mask, training=None):
        """Transformer blocks (padding masked out) and the final norm."""
        for layer in self.transformer_layers:
            x = layer(x, padding_mask=padding_mask, training=training)
        return self.final_norm(x)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocabulary_size": self.vocabulary_size,
                "sequence_length": self.sequence_length,
                "hidden_dim": self.hidden_dim,
                "num_layers": self.num_layers,
                "num_heads": self.num_heads,
                "mlp_ratio": self.mlp_ratio,
                "dropout": self.dropout,
                "layer_norm_epsilon": self.layer_norm_epsilon,
            }
        )
        return config
