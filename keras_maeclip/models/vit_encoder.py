"""The image tower: a pre-LN Vision Transformer that outputs its tokens."""

import keras
import keras_hub

from keras_maeclip.layers import ClassToken, PatchEmbedding, SinCosPositionEncoding2D
from keras_maeclip.layers.activations import ACTIVATIONS
from keras_maeclip.models._blocks import pre_ln_blocks
from keras_maeclip.models._validation import check_divisible, check_positive


@keras.saving.register_keras_serializable(package="keras_maeclip")
class ViTEncoder(keras_hub.models.Backbone):
    """Vision Transformer image encoder, fixed 2-D sin-cos or learned positions.

    Images are cut into `patch_size`² patches, linearly projected, given
    positions (the fixed 2-D sin-cos encoding, or a learned table for
    converted timm / open_clip towers), optionally prefixed with a learned
    class token, and passed through pre-LayerNorm transformer blocks and a
    final LayerNorm. The output is the whole token sequence.

    The two halves of the forward pass are public so that a masked model can
    drop patches in between (positions are added *before* masking, so kept
    patches keep their positions):

    ```python
    tokens = encoder.embed_patches(images)     # (batch, num_patches, width)
    kept = ...                                  # any subset of the patches
    out = encoder.encode_tokens(kept)           # (batch, [1 +] kept, width)
    ```

    Args:
        image_size: int. Side of the square input images.
        patch_size: int. Side of the square patches; divides `image_size`.
        hidden_dim: int. Token width; divisible by `num_heads` and by 4.
        num_layers: int. Number of transformer blocks.
        num_heads: int. Attention heads per block.
        mlp_ratio: float. MLP hidden width relative to `hidden_dim`.
            Defaults to `4.0`.
        num_channels: int. Image channels, defaults to `3`.
        use_class_token: bool. Prepend a learned class token. Defaults to
            `False` (the paper pools with MAP/GAP/MAX). The class token is
            added after the positions and has none of its own (a learned
            class position is a constant: converters fold it into the
            token).
        position_embedding: `"sincos"` (default: fixed, computed from the
            grid, never saved; width divisible by 4) or `"learned"` (a
            trained `(num_patches, hidden_dim)` table,
            `keras_hub.layers.PositionEmbedding`; resampled bicubically on
            a resolution change).
        pre_norm: bool. A LayerNorm on the tokens (class token included)
            before the first block: open_clip's `ln_pre`, timm's `norm_pre`.
            Defaults to `False`.
        activation: `"gelu"` (exact, the default) or `"quick_gelu"`
            (`x·sigmoid(1.702x)`, OpenAI CLIP towers) in the MLPs.
        dropout: float. Dropout inside the blocks, defaults to `0.0`.
        layer_norm_epsilon: float, defaults to `1e-6`.
        dtype: dtype policy of the layers (e.g. `"mixed_bfloat16"`).
        **kwargs: `keras_hub.models.Backbone` arguments (`name`, ...).

    Example:
    >>> encoder = ViTEncoder(image_size=32, patch_size=8, hidden_dim=32,
    ...                      num_layers=2, num_heads=4)
    >>> encoder(keras.ops.zeros((2, 32, 32, 3))).shape
    (2, 16, 32)

    References: Dosovitskiy et al. 2021 (ViT); Weers et al. 2023 §3 (image
    encoder); MAE `models_mae.py`.
    """

    def __init__(
        self,
        image_size,
        patch_size,
        hidden_dim,
        num_layers,
        num_heads,
        mlp_ratio=4.0,
        num_channels=3,
        use_class_token=False,
        dropout=0.0,
        layer_norm_epsilon=1e-6,
        position_embedding="sincos",
        pre_norm=False,
        activation="gelu",
        dtype=None,
        **kwargs,
    ):
        check_positive(
            image_size=image_size,
            patch_size=patch_size,
            hidden_dim=hidden_dim,
            num_layers=num_layers,
            num_heads=num_heads,
            num_channels=num_channels,
        )
        check_divisible("image_size", image_size, "patch_size", patch_size)
        check_divisible("hidden_dim", hidden_dim, "num_heads", num_heads)
        if position_embedding not in ("sincos", "learned"):
            raise ValueError(
                f"position_embedding={position_embedding!r}: use 'sincos' (fixed) or 'learned'."
            )
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation={activation!r}: use one of {sorted(ACTIVATIONS)}.")
        if position_embedding == "sincos":
            check_divisible("hidden_dim", hidden_dim, "the sin-cos encoding's", 4)
        grid = image_size // patch_size

        # === Layers ===
        self.patch_embedding = PatchEmbedding(
            patch_size, hidden_dim, dtype=dtype, name="patch_embedding"
        )
        if position_embedding == "sincos":
            self.position_encoding = SinCosPositionEncoding2D(
                grid, dtype=dtype, name="position_encoding"
            )
        else:
            # timm / open_clip initialise learned positions with std 0.02.
            self.position_encoding = keras_hub.layers.PositionEmbedding(
                grid * grid, initializer=keras.initializers.TruncatedNormal(stddev=0.02),
                dtype=dtype, name="position_embedding",
            )
        self.class_token = (
            ClassToken(dtype=dtype, name="class_token") if use_class_token else None
        )
        self.pre_norm = (
            keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, dtype=dtype, name="pre_norm")
            if pre_norm else None
        )
        self.transformer_layers = pre_ln_blocks(
            num_layers, hidden_dim, num_heads, mlp_ratio, dropout, layer_norm_epsilon, dtype,
            activation=activation,
        )
        self.final_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=dtype, name="final_norm"
        )

        # === Functional model ===
        images = keras.Input(
            shape=(image_size, image_size, num_channels), name="images"
        )
        tokens = self.encode_tokens(self.embed_patches(images))
        super().__init__(inputs=images, outputs=tokens, dtype=dtype, **kwargs)

        # === Config ===
        self.image_size = image_size
        self.patch_size = patch_size
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.mlp_ratio = mlp_ratio
        self.num_channels = num_channels
        self.use_class_token = use_class_token
        self.dropout = dropout
        self.layer_norm_epsilon = layer_norm_epsilon
        self.position_embedding = position_embedding
        self.use_pre_norm = pre_norm
        self.activation = activation
        self.grid_size = grid
        self.num_patches = grid * grid

    def embed_patches(self, images):
        """Patch embeddings plus position encoding, `(batch, patches, width)`."""
        patches = self.patch_embedding(images)
        if isinstance(self.position_encoding, SinCosPositionEncoding2D):
            return self.position_encoding(patches)  # adds the fixed table
        return patches + self.position_encoding(patches)  # the learned table

    def encode_tokens(self, tokens, training=None):
        """Class token (if any), the pre-norm (if any), transformer blocks and the final norm."""
        x = tokens
        if self.class_token is not None:
            x = self.class_token(x)
        if self.pre_norm is not None:
            x = self.pre_norm(x)
        for layer in self.transformer_layers:
            x = layer(x, training=training)
        return self.final_norm(x)

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        """Load a saved encoder; `image_size=` loads it at another resolution.

        Learned positions are resampled (bicubic), sin-cos ones recomputed
        (`keras_maeclip.models.resolution.with_image_size`).
        """
        from keras_maeclip.models.resolution import load_at_image_size

        return load_at_image_size(super().from_preset, preset, load_weights, **kwargs)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "image_size": self.image_size,
                "patch_size": self.patch_size,
                "hidden_dim": self.hidden_dim,
                "num_layers": self.num_layers,
                "num_heads": self.num_heads,
                "mlp_ratio": self.mlp_ratio,
                "num_channels": self.num_channels,
                "use_class_token": self.use_class_token,
                "dropout": self.dropout,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "position_embedding": self.position_embedding,
                "pre_norm": self.use_pre_norm,
                "activation": self.activation,
            }
        )
        return config
