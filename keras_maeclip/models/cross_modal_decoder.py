"""M3AE-style decoder that reconstructs masked patches and masked tokens."""

import keras
import keras_hub
from keras import ops

from keras_maeclip.layers.masking import gather_tokens
from keras_maeclip.layers.position import SinCosPositionEncoding2D
from keras_maeclip.models._blocks import pre_ln_blocks
from keras_maeclip.models._validation import check_divisible, check_positive


@keras.saving.register_keras_serializable(package="keras_maeclip")
class CrossModalDecoder(keras.layers.Layer):
    """Decodes encoded image (and text) tokens into pixels (and token logits).

    Image path: the kept image tokens are projected to the decoder width, a
    learned image mask token fills the masked positions, `ids_restore` puts
    the sequence back in patch order, and the fixed 2-D sin-cos encoding
    plus a learned type embedding are added. Text path (optional): text
    tokens are projected, a learned text mask token replaces the masked
    positions, learned 1-D positions and the text type embedding are added.
    Pre-LN transformer blocks run over the concatenated image and text
    sequence (text padding masked out), then a final LayerNorm and two
    heads: `patch_size² · channels` pixel values per patch and vocabulary
    logits per token. Without text inputs it is MAE's image-only decoder.

    Args:
        num_patches: int. Patches per image (a square grid).
        patch_size: int. Side of a patch (for the pixel head's width).
        hidden_dim: int. Decoder width, divisible by `num_heads` and 4.
        num_layers: int. Transformer blocks.
        num_heads: int. Attention heads.
        vocabulary_size: int or `None`. Size of the token head; `None` for an
            image-only decoder.
        sequence_length: int or `None`. Longest text sequence.
        mlp_ratio: float, defaults to `4.0`.
        num_channels: int, defaults to `3`.
        layer_norm_epsilon: float, defaults to `1e-6`.
        **kwargs: base layer arguments.

    Call args:
        image_tokens: `(batch, kept, image_width)` encoded kept patches (no
            class token).
        ids_restore: `(batch, num_patches)` from the masking function.
        text_tokens: optional `(batch, length, text_width)` encoded tokens.
        text_mask: optional bool `(batch, length)`, true where masked.
        padding_mask: optional `(batch, length)`, 1 on real tokens.
        text_positions: optional int `(batch, slots)`: score only these
            text positions (e.g. `text_masking`'s `positions`, the masked
            ones). The token head is the decoder's largest matmul
            (`vocabulary_size` wide); a masked-token loss needs only the
            masked positions. `None` scores every position.

    Returns:
        dict with `pixels` `(batch, num_patches, p²·C)` and, with text,
        `token_logits` (float32): `(batch, length, vocabulary_size)`, or
        `(batch, slots, vocabulary_size)` at `text_positions` when given.

    Example:
    >>> decoder = CrossModalDecoder(num_patches=16, patch_size=4, hidden_dim=32,
    ...                             num_layers=1, num_heads=2)
    >>> out = decoder(keras.ops.ones((2, 4, 24)),
    ...               keras.ops.tile(keras.ops.arange(16)[None], (2, 1)))
    >>> out["pixels"].shape
    (2, 16, 48)

    References: Geng et al. 2022 (M3AE) and `m3ae/model.py`; He et al. 2022
    (MAE) decoder; Weers et al. 2023 §3.
    """

    def __init__(
        self,
        num_patches,
        patch_size,
        hidden_dim,
        num_layers,
        num_heads,
        vocabulary_size=None,
        sequence_length=None,
        mlp_ratio=4.0,
        num_channels=3,
        layer_norm_epsilon=1e-6,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive(num_patches=num_patches, patch_size=patch_size, hidden_dim=hidden_dim,
                       num_layers=num_layers, num_heads=num_heads)
        check_divisible("hidden_dim", hidden_dim, "num_heads", num_heads)
        check_divisible("hidden_dim", hidden_dim, "the sin-cos encoding's", 4)
        grid = int(round(num_patches**0.5))
        if grid * grid != num_patches:
            raise ValueError(f"num_patches={num_patches} must be a square grid.")
        if (vocabulary_size is None) != (sequence_length is None):
            raise ValueError(
                "Give both vocabulary_size and sequence_length for a text head, "
                "or neither for an image-only decoder."
            )
        self.num_patches = num_patches
        self.patch_size = patch_size
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.vocabulary_size = vocabulary_size
        self.sequence_length = sequence_length
        self.mlp_ratio = mlp_ratio
        self.num_channels = num_channels
        self.layer_norm_epsilon = layer_norm_epsilon
        self.grid_size = grid
        self.has_text = vocabulary_size is not None

        dense = dict(dtype=self.dtype_policy)
        self.image_projection = keras.layers.Dense(hidden_dim, name="image_projection", **dense)
        self.position_encoding = SinCosPositionEncoding2D(grid, name="position_encoding", **dense)
        self.blocks = pre_ln_blocks(
            num_layers, hidden_dim, num_heads, mlp_ratio, 0.0, layer_norm_epsilon,
            self.dtype_policy, prefix="block",
        )
        self.final_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, name="final_norm", **dense
        )
        self.pixel_head = keras.layers.Dense(
            patch_size * patch_size * num_channels, name="pixel_head", **dense
        )
        if self.has_text:
            self.text_projection = keras.layers.Dense(hidden_dim, name="text_projection", **dense)
            self.text_positions = keras_hub.layers.PositionEmbedding(
                sequence_length, name="text_positions", **dense
            )
            self.token_head = keras.layers.Dense(vocabulary_size, name="token_head", **dense)

    def build(self, image_tokens_shape, ids_restore_shape=None, text_tokens_shape=None,
              text_mask_shape=None, padding_mask_shape=None, text_positions_shape=None):
        init = keras.initializers.RandomNormal(stddev=0.02)
        self.image_mask_token = self.add_weight(
            name="image_mask_token", shape=(1, 1, self.hidden_dim), initializer=init)
        self.type_embedding = self.add_weight(
            name="type_embedding", shape=(2, self.hidden_dim), initializer=init)
        self.image_projection.build(image_tokens_shape)
        width = self.hidden_dim
        self.position_encoding.build((None, self.num_patches, width))
        for block in self.blocks:
            block.build((None, None, width))
        self.final_norm.build((None, None, width))
        self.pixel_head.build((None, None, width))
        if self.has_text:
            self.text_mask_token = self.add_weight(
                name="text_mask_token", shape=(1, 1, width), initializer=init)
            text_width = (text_tokens_shape or image_tokens_shape)[-1]
            self.text_projection.build((None, None, text_width))
            self.text_positions.build((None, self.sequence_length, width))
            self.token_head.build((None, None, width))
        self.built = True

    def assemble_image_tokens(self, image_tokens, ids_restore):
        """Projected kept tokens + mask tokens, in patch order, with positions."""
        x = self.image_projection(image_tokens)
        kept = x.shape[1]
        ids_restore = ops.cast(ids_restore, "int32")
        # Patch l holds kept token ids_restore[l] when that is < kept, else the
        # mask token. The scatter back into patch order is a one-hot matmul
        # (see `gather_tokens`): a gather's backward is slow on XLA CPU.
        select = ops.one_hot(ids_restore, self.num_patches, dtype=x.dtype)[:, :, :kept]
        x = ops.einsum("blk,bkw->blw", select, x)
        masked = ops.cast(ids_restore >= kept, x.dtype)[:, :, None]
        x = x + masked * ops.cast(self.image_mask_token, x.dtype)
        return self.position_encoding(x) + ops.cast(self.type_embedding[0], x.dtype)

    def call(self, image_tokens, ids_restore, text_tokens=None, text_mask=None, padding_mask=None,
             text_positions=None):
        x = self.assemble_image_tokens(image_tokens, ids_restore)
        batch = ops.shape(x)[0]
        sequence, mask = x, None
        if text_tokens is not None:
            if not self.has_text:
                raise ValueError("This decoder has no text head (vocabulary_size=None).")
            t = self.text_projection(text_tokens)
            if text_mask is not None:
                token = ops.cast(self.text_mask_token, t.dtype)
                t = ops.where(ops.cast(text_mask, "bool")[:, :, None], token, t)
            t = t + self.text_positions(t) + ops.cast(self.type_embedding[1], t.dtype)
            sequence = ops.concatenate([x, t], axis=1)
            if padding_mask is not None:
                image_ones = ops.ones((batch, self.num_patches), "int32")
                mask = ops.concatenate([image_ones, ops.cast(padding_mask, "int32")], axis=1)
        for block in self.blocks:
            sequence = block(sequence, padding_mask=mask)
        sequence = self.final_norm(sequence)
        out = {"pixels": ops.cast(self.pixel_head(sequence[:, : self.num_patches]), "float32")}
        if text_tokens is not None:
            text_out = sequence[:, self.num_patches :]
            if text_positions is not None:
                text_out = gather_tokens(text_out, text_positions)
            out["token_logits"] = ops.cast(self.token_head(text_out), "float32")
        return out

    def get_config(self):
        config = super().get_config()
        config.update({
            "num_patches": self.num_patches,
            "patch_size": self.patch_size,
            "hidden_dim": self.hidden_dim,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "vocabulary_size": self.vocabulary_size,
            "sequence_length": self.sequence_length,
            "mlp_ratio": self.mlp_ratio,
            "num_channels": self.num_channels,
            "layer_norm_epsilon": self.layer_norm_epsilon,
        })
        return config
