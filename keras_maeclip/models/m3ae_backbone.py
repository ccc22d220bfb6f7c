"""M3AE's encoder: one pre-LN transformer over image patches and text tokens."""

import keras
import keras_hub
from keras import ops

from keras_maeclip.layers import ModalityEmbedding, PatchEmbedding, SinCosPositionEncoding2D, sincos_1d
from keras_maeclip.models._blocks import pre_ln_blocks
from keras_maeclip.models._validation import check_divisible, check_positive
from keras_maeclip.models._preset_listing import named_presets

IMAGE_MODALITY = 0
TEXT_MODALITY = 1
TEXT_POSITIONS = ("learned", "sincos")


@keras.saving.register_keras_serializable(package="keras_maeclip")
class M3AEBackbone(keras_hub.models.Backbone):
    """Shared multimodal encoder: image patches and text tokens in one sequence.

    Images are cut into `patch_size`² patches, linearly projected and given
    the fixed 2-D sin-cos position encoding (as `ViTEncoder`); token ids are
    embedded and given a trainable 1-D position embedding (as
    `TextEncoder`; `text_positions="sincos"` gives m3ae_public's fixed 1-D
    sin-cos encoding instead). A learned type (modality) embedding — row 0 for image
    tokens, row 1 for text tokens — is added to each, the two sequences are
    concatenated (image first) and ONE stack of pre-LayerNorm transformer
    blocks plus a final LayerNorm runs over them; text padding is never
    attended to. The output is split back into image and text tokens.

    The forward pass is public in halves, so a masked model can drop image
    patches and replace text tokens between them (positions and type are
    added *before* masking):

    ```python
    image_tokens = backbone.embed_patches(images)   # (batch, patches, width)
    text_tokens = backbone.embed_tokens(token_ids)  # (batch, length, width)
    kept = ...                                      # any subset of the patches
    image_out, text_out = backbone.encode_tokens(kept, text_tokens, padding_mask)
    ```

    Called as a model, it encodes all patches:
    `{"images", "token_ids", "padding_mask"}` →
    `{"image_tokens": (batch, patches, width), "text_tokens": (batch, length, width)}`.

    Args:
        image_size: int. Side of the square input images.
        patch_size: int. Side of the square patches; divides `image_size`.
        vocabulary_size: int. Size of the WordPiece vocabulary.
        sequence_length: int. Longest text sequence the position table covers.
        hidden_dim: int. Token width; divisible by `num_heads` and by 4.
        num_layers: int. Number of shared transformer blocks.
        num_heads: int. Attention heads per block.
        mlp_ratio: float. MLP hidden width relative to `hidden_dim`.
            Defaults to `4.0`.
        num_channels: int. Image channels, defaults to `3`.
        dropout: float. Dropout inside the blocks, defaults to `0.0`.
        layer_norm_epsilon: float, defaults to `1e-6`.
        text_positions: `"learned"` (default: a trainable table, as the
            paper's BERT-style text tower) or `"sincos"` (fixed 1-D sin-cos,
            as m3ae_public; no position variables).
        dtype: dtype policy of the layers (e.g. `"mixed_bfloat16"`).
        **kwargs: `keras_hub.models.Backbone` arguments (`name`, ...).

    Example:
    >>> backbone = M3AEBackbone(image_size=32, patch_size=8, vocabulary_size=100,
    ...                         sequence_length=8, hidden_dim=32, num_layers=2,
    ...                         num_heads=4)
    >>> ids = keras.ops.ones((2, 8), dtype="int32")
    >>> out = backbone({"images": keras.ops.zeros((2, 32, 32, 3)),
    ...                 "token_ids": ids, "padding_mask": ids})
    >>> tuple(out["image_tokens"].shape), tuple(out["text_tokens"].shape)
    ((2, 16, 32), (2, 8, 32))

    References: Geng et al. 2022 (M3AE) §3 and `m3ae/model.py`
    (`forward_representation`, type embeddings); Weers et al. 2023 §3.
    """

    presets = named_presets("M3AE_PRESETS")

    def __init__(
        self,
        image_size,
        patch_size,
        vocabulary_size,
        sequence_length,
        hidden_dim,
        num_layers,
        num_heads,
        mlp_ratio=4.0,
        num_channels=3,
        dropout=0.0,
        layer_norm_epsilon=1e-6,
        text_positions="learned",
        dtype=None,
        **kwargs,
    ):
        if text_positions not in TEXT_POSITIONS:
            raise ValueError(
                f"Unknown text_positions={text_positions!r}; use one of {TEXT_POSITIONS}."
            )
        check_positive(
            image_size=image_size,
            patch_size=patch_size,
            vocabulary_size=vocabulary_size,
            sequence_length=sequence_length,
            hidden_dim=hidden_dim,
            num_layers=num_layers,
            num_heads=num_heads,
            num_channels=num_channels,
        )
        check_divisible("image_size", image_size, "patch_size", patch_size)
        check_divisible("hidden_dim", hidden_dim, "num_heads", num_heads)
        check_divisible("hidden_dim", hidden_dim, "the sin-cos encoding's", 4)
        grid = image_size // patch_size

        # === Layers ===
        self.patch_embedding = PatchEmbedding(
            patch_size, hidden_dim, dtype=dtype, name="patch_embedding"
        )
        self.position_encoding = SinCosPositionEncoding2D(
            grid, dtype=dtype, name="position_encoding"
        )
        self.token_embedding = keras.layers.Embedding(
            vocabulary_size,
            hidden_dim,
            embeddings_initializer=keras.initializers.RandomNormal(stddev=0.02),
            dtype=dtype,
            name="token_embedding",
        )
        self.text_position_embedding = None
        if text_positions == "learned":
            self.text_position_embedding = keras_hub.layers.PositionEmbedding(
                sequence_length,
                initializer=keras.initializers.RandomNormal(stddev=0.01),
                dtype=dtype,
                name="text_position_embedding",
            )
        self.text_positions = text_positions
        self.type_embedding = ModalityEmbedding(
            num_modalities=2, dtype=dtype, name="type_embedding"
        )
        self.transformer_layers = pre_ln_blocks(
            num_layers, hidden_dim, num_heads, mlp_ratio, dropout, layer_norm_epsilon, dtype
        )
        self.final_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=dtype, name="final_norm"
        )

        # === Functional model ===
        images = keras.Input(
            shape=(image_size, image_size, num_channels), name="images"
        )
        token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
        padding_mask = keras.Input(
            shape=(None,), dtype="int32", name="padding_mask"
        )
        image_tokens, text_tokens = self.encode_tokens(
            self.embed_patches(images), self.embed_tokens(token_ids), padding_mask
        )
        super().__init__(
            inputs={
                "images": images,
                "token_ids": token_ids,
                "padding_mask": padding_mask,
            },
            outputs={"image_tokens": image_tokens, "text_tokens": text_tokens},
            dtype=dtype,
            **kwargs,
        )

        # === Config ===
        self.image_size = image_size
        self.patch_size = patch_size
        self.vocabulary_size = vocabulary_size
        self.sequence_length = sequence_length
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.mlp_ratio = mlp_ratio
        self.num_channels = num_channels
        self.dropout = dropout
        self.layer_norm_epsilon = layer_norm_epsilon
        self.grid_size = grid
        self.num_patches = grid * grid

    def embed_patches(self, images):
        """Patch embeddings + 2-D sin-cos positions + image type, `(batch, patches, width)`."""
        x = self.position_encoding(self.patch_embedding(images))
        return self.type_embedding(x, modality=IMAGE_MODALITY)

    def embed_tokens(self, token_ids):
        """Token embeddings + learned positions + text type, `(batch, length, width)`."""
        x = self.token_embedding(token_ids)
        if self.text_position_embedding is not None:
            x = x + self.text_position_embedding(x)
        else:
            # Positions 0..length-1 from the ids (the length may be dynamic).
            positions = ops.cumsum(ops.ones_like(token_ids[0], dtype="float32")) - 1.0
            x = x + ops.expand_dims(ops.cast(sincos_1d(x.shape[-1], positions), x.dtype), 0)
        return self.type_embedding(x, modality=TEXT_MODALITY)

    def encode_tokens(self, image_tokens, text_tokens, padding_mask=None, training=None):
        """Shared blocks and final norm over `[image; text]`, split back.

        Args:
            image_tokens: `(batch, n, width)` from `embed_patches`, all of
                them or any kept subset (`n` must be static).
            text_tokens: `(batch, length, width)` from `embed_tokens`.
            padding_mask: optional `(batch, length)`, 1 on real tokens;
                image tokens are always attended to.
            training: bool or `None`, for dropout.

        Returns:
            `(encoded_image_tokens, encoded_text_tokens)`, the input shapes.
        """
        num_image = image_tokens.shape[1]
        if num_image is None:
            raise ValueError(
                "encode_tokens needs a static number of image tokens; got "
                f"image_tokens of shape {image_tokens.shape}."
            )
        x = ops.concatenate([image_tokens, text_tokens], axis=1)
        mask = None
        if padding_mask is not None:
            image_ones = ops.ones_like(image_tokens[:, :, 0], dtype="int32")
            mask = ops.concatenate(
                [image_ones, ops.cast(padding_mask, "int32")], axis=1
            )
        for layer in self.transformer_layers:
            x = layer(x, padding_mask=mask, training=training)
        x = self.final_norm(x)
        return x[:, :num_image], x[:, num_image:]

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "image_size": self.image_size,
                "patch_size": self.patch_size,
                "vocabulary_size": self.vocabulary_size,
                "sequence_length": self.sequence_length,
                "hidden_dim": self.hidden_dim,
                "num_layers": self.num_layers,
                "num_heads": self.num_heads,
                "mlp_ratio": self.mlp_ratio,
                "num_channels": self.num_channels,
                "dropout": self.dropout,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "text_positions": self.text_positions,
            }
        )
        return config

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        """Build from a named M3AE preset or load a preset directory.

        Args:
            preset: an `m3ae_*` name from `keras_maeclip.models.list_presets()`
                (randomly initialised: no pretrained weights ship with the
                library) or a directory written by `save_to_preset`.
            load_weights: bool. For a directory, whether to load its weights.
            **kwargs: architecture overrides for a named preset (see
                `keras_maeclip.models.presets.build_m3ae_parts`; a
                `decoder=` override is checked by `M3AE.from_preset` only),
                or keras-hub loader arguments for a directory, plus
                `image_size=` to load it at another resolution.

        Example:
        >>> M3AEBackbone.from_preset("m3ae_tiny", vocabulary_size=64).num_patches
        64
        """
        from keras_maeclip.models.presets import _m3ae_config, is_directory_preset

        if is_directory_preset(preset):
            from keras_maeclip.models.resolution import load_at_image_size

            return load_at_image_size(super().from_preset, preset, load_weights, **kwargs)
        kwargs.pop("decoder", None)
        name = kwargs.pop("name", "m3ae_backbone")
        config, _, dtype = _m3ae_config(preset, kwargs)
        return cls(**config, dtype=dtype, name=name)
