"""keras-hub backbones as image / text towers (DESIGN.md §8, "Towers as an interface").

A tower gives the masked models four calls: `embed_patches(images)` and
`encode_tokens(tokens)` for images, `embed_tokens(token_ids)` and
`encode_tokens(x, padding_mask)` for text, plus the sizes the heads, the
decoder, the evaluations and the FLOP count read (`hidden_dim`, `num_heads`,
`num_layers`, `mlp_ratio`; `image_size`, `patch_size`, `num_channels`,
`grid_size`, `num_patches`, `use_class_token`; `vocabulary_size`,
`sequence_length`).
`ViTEncoder` and `TextEncoder` implement them; the two adapters here give
the same calls to a keras-hub `ViTBackbone` and `BertBackbone`, so whatever
keras-hub loads (its presets, its Hugging Face converters) becomes a tower.
The adapter owns the keras-hub backbone: its weights are the tower's and
save with the model.
"""

import keras
import keras_hub
from keras import ops


def _deserialize(backbone, expected):
    if isinstance(backbone, dict):
        backbone = keras.layers.deserialize(backbone)
    if not isinstance(backbone, expected):
        raise ValueError(
            f"Expected a keras_hub.models.{expected.__name__}; got "
            f"{type(backbone).__name__}. Load one with "
            f"keras_hub.models.{expected.__name__}.from_preset(...) or build it from config."
        )
    return backbone


@keras.saving.register_keras_serializable(package="keras_maeclip")
class HubViTTower(keras.layers.Layer):
    """A keras-hub `ViTBackbone` as an image tower with the masked-model split.

    `embed_patches` runs the backbone's patch convolution and adds its learned
    positions (the class token's row left out), so masking happens after
    positions; `encode_tokens` prepends the class token with its position
    (if the backbone has one) and runs the backbone's transformer and final
    LayerNorm. Together they compute exactly the backbone's own output.

    Args:
        backbone: a `keras_hub.models.ViTBackbone` (square, channels-last
            images), or its serialised config.
        **kwargs: base layer arguments.

    Example:
    >>> vit = keras_hub.models.ViTBackbone(
    ...     image_shape=(32, 32, 3), patch_size=8, num_layers=1, num_heads=2,
    ...     hidden_dim=16, mlp_dim=32)
    >>> tower = HubViTTower(vit)
    >>> tower.encode_tokens(tower.embed_patches(keras.ops.zeros((2, 32, 32, 3)))).shape
    (2, 17, 16)

    References: Dosovitskiy et al. 2021 (ViT); keras-hub `models/vit/`.
    """

    def __init__(self, backbone, **kwargs):
        backbone = _deserialize(backbone, keras_hub.models.ViTBackbone)
        kwargs.setdefault("dtype", backbone.dtype_policy)
        super().__init__(**kwargs)
        height, width, channels = backbone.image_shape
        patch_h, patch_w = backbone.patch_size
        if height != width or patch_h != patch_w or backbone.data_format != "channels_last":
            raise ValueError(
                "HubViTTower needs square channels-last images and patches; got "
                f"image_shape={backbone.image_shape}, patch_size={backbone.patch_size}, "
                f"data_format={backbone.data_format!r}."
            )
        self.backbone = backbone
        self.image_size = int(height)
        self.patch_size = int(patch_h)
        self.num_channels = int(channels)
        self.hidden_dim = backbone.hidden_dim
        self.num_heads = backbone.num_heads
        self.num_layers = backbone.num_layers
        self.mlp_ratio = backbone.mlp_dim / backbone.hidden_dim
        self.use_class_token = backbone.use_class_token
        self.grid_size = self.image_size // self.patch_size
        self.num_patches = self.grid_size**2
        self.built = True

    @property
    def _embedding(self):
        # Looked up, not stored: a second attribute would track the layer twice.
        return self.backbone.get_layer("vit_patching_and_embedding")

    @property
    def _encoder(self):
        return self.backbone.get_layer("vit_encoder")

    def _positions(self, dtype):
        return ops.cast(self._embedding.position_embedding.embeddings, dtype)

    def embed_patches(self, images):
        """Patch embeddings plus learned positions, `(batch, patches, width)`."""
        x = self._embedding.patch_embedding(images)
        x = ops.reshape(x, (ops.shape(x)[0], self.num_patches, self.hidden_dim))
        start = 1 if self.use_class_token else 0
        return x + self._positions(x.dtype)[None, start:]

    def encode_tokens(self, tokens, training=None):
        """Class token (with its position), transformer blocks, final norm."""
        x = tokens
        if self.use_class_token:
            token = ops.cast(self._embedding.class_token, x.dtype) + self._positions(x.dtype)[None, :1]
            x = ops.concatenate([ops.tile(token, (ops.shape(x)[0], 1, 1)), x], axis=1)
        return self._encoder(x, training=training)

    def call(self, images, training=None):
        return self.encode_tokens(self.embed_patches(images), training=training)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_patches + int(self.use_class_token), self.hidden_dim)

    def get_config(self):
        config = super().get_config()
        config.pop("dtype", None)  # the backbone's own policy
        config["backbone"] = keras.layers.serialize(self.backbone)
        return config


@keras.saving.register_keras_serializable(package="keras_maeclip")
class HubBertTower(keras.layers.Layer):
    """A keras-hub `BertBackbone` as a text tower with the masked-model split.

    `embed_tokens` sums BERT's token, position and (all-zero) segment
    embeddings and applies its embedding LayerNorm and dropout;
    `encode_tokens` runs its transformer layers with the padding mask. The
    output is BERT's `sequence_output`; pool it with the heads' `pooling=`
    (`"first"` pools `[CLS]`). BERT's own `pooled_dense` is not used and is
    set non-trainable.

    Args:
        backbone: a `keras_hub.models.BertBackbone`, or its serialised config.
        **kwargs: base layer arguments.

    Call args:
        inputs: dict with `token_ids` and `padding_mask` `(batch, length)`.

    Example:
    >>> bert = keras_hub.models.BertBackbone(
    ...     vocabulary_size=50, num_layers=1, num_heads=2, hidden_dim=16,
    ...     intermediate_dim=32, max_sequence_length=8)
    >>> ids = keras.ops.ones((2, 8), "int32")
    >>> HubBertTower(bert)({"token_ids": ids, "padding_mask": ids}).shape
    (2, 8, 16)

    References: Devlin et al. 2019 (BERT); keras-hub `models/bert/`.
    """

    def __init__(self, backbone, **kwargs):
        backbone = _deserialize(backbone, keras_hub.models.BertBackbone)
        kwargs.setdefault("dtype", backbone.dtype_policy)
        super().__init__(**kwargs)
        self.backbone = backbone
        # The tower returns `sequence_output`; BERT's [CLS] pooler is unused,
        # so it is frozen rather than left without gradients.
        backbone.pooled_dense.trainable = False
        self.vocabulary_size = backbone.vocabulary_size
        self.sequence_length = backbone.max_sequence_length
        self.hidden_dim = backbone.hidden_dim
        self.num_heads = backbone.num_heads
        self.num_layers = backbone.num_layers
        self.mlp_ratio = backbone.intermediate_dim / backbone.hidden_dim
        self.built = True

    def embed_tokens(self, token_ids):
        """Token + position + segment-0 embeddings, normalised, `(batch, length, width)`."""
        bert = self.backbone
        tokens = bert.token_embedding(token_ids)
        positions = bert.position_embedding(tokens)
        segments = bert.segment_embedding(ops.zeros_like(token_ids))
        x = bert.embeddings_layer_norm(bert.embeddings_add((tokens, positions, segments)))
        return bert.embeddings_dropout(x)

    def encode_tokens(self, x, padding_mask, training=None):
        """BERT's transformer layers, padding masked out."""
        for layer in self.backbone.transformer_layers:
            x = layer(x, padding_mask=padding_mask, training=training)
        return x

    def call(self, inputs, training=None):
        x = self.embed_tokens(inputs["token_ids"])
        return self.encode_tokens(x, inputs["padding_mask"], training=training)

    def compute_output_shape(self, input_shape):
        # Given, not traced: tracing BERT's position slice with a symbolic
        # length fails on JAX.
        return tuple(input_shape["token_ids"]) + (self.hidden_dim,)

    def get_config(self):
        config = super().get_config()
        config.pop("dtype", None)
        config["backbone"] = keras.layers.serialize(self.backbone)
        return config
