"""Fixed 2-D sine-cosine position encoding for image patches."""

import math

import keras
from keras import ops


def sincos_1d(embed_dim, positions):
    """1-D sine-cosine encoding of a vector of positions.

    Args:
        embed_dim: int. Even output width.
        positions: tensor `(n,)` of float positions.

    Returns:
        Tensor `(n, embed_dim)`: `[sin(pos * w_k)..., cos(pos * w_k)...]` with
        `w_k = 10000 ** (-k / (embed_dim / 2))`.

    Example:
    >>> sincos_1d(8, keras.ops.arange(5, dtype="float32")).shape
    (5, 8)
    """
    if embed_dim % 2:
        raise ValueError(f"sincos_1d needs an even embed_dim; got {embed_dim}.")
    half = embed_dim // 2
    omega = ops.exp(
        ops.arange(half, dtype="float32") * (-math.log(10000.0) / half)
    )
    angles = ops.cast(positions, "float32")[:, None] * omega[None, :]
    return ops.concatenate([ops.sin(angles), ops.cos(angles)], axis=-1)


def sincos_2d(embed_dim, grid_size):
    """2-D sine-cosine encoding for a grid of patches, listed row by row.

    Half of the channels encode the column index and half the row index,
    in the layout of MAE's `get_2d_sincos_pos_embed` (column half first).

    Args:
        embed_dim: int. Output width, divisible by 4.
        grid_size: int or `(grid_h, grid_w)`.

    Returns:
        Float32 tensor `(grid_h * grid_w, embed_dim)`.

    Example:
    >>> sincos_2d(16, 4).shape
    (16, 16)

    References: MAE `util/pos_embed.py`; Chen et al. 2021 (MoCo v3).
    """
    if embed_dim % 4:
        raise ValueError(
            "The 2-D sin-cos position encoding needs a width divisible by 4; "
            f"got {embed_dim}."
        )
    if isinstance(grid_size, (tuple, list)):
        gh, gw = int(grid_size[0]), int(grid_size[1])
    else:
        gh = gw = int(grid_size)
    rows = ops.repeat(ops.arange(gh, dtype="float32"), gw)
    cols = ops.tile(ops.arange(gw, dtype="float32"), [gh])
    return ops.concatenate(
        [sincos_1d(embed_dim // 2, cols), sincos_1d(embed_dim // 2, rows)],
        axis=-1,
    )


@keras.saving.register_keras_serializable(package="keras_maeclip")
class SinCosPositionEncoding2D(keras.layers.Layer):
    """Adds a fixed (non-trainable) 2-D sin-cos encoding to patch tokens.

    The table is a constant computed from `grid_size` and the token width,
    not a saved weight: a model reloads at another image size with the table
    of the new grid. Weights files that still hold the table (saved before
    this change) load; the stored table is ignored.

    Args:
        grid_size: int or `(grid_h, grid_w)`. Patch grid of the tokens.
        **kwargs: base layer arguments.

    Call args:
        tokens: tensor `(batch, grid_h * grid_w, width)`, patches row by row;
            `width` must be divisible by 4.

    Returns:
        `tokens` plus the encoding, same shape.

    Example:
    >>> layer = SinCosPositionEncoding2D(grid_size=4)
    >>> layer(keras.ops.zeros((2, 16, 32))).shape
    (2, 16, 32)

    References: MAE `util/pos_embed.py`.
    """

    def __init__(self, grid_size, **kwargs):
        super().__init__(**kwargs)
        if isinstance(grid_size, (tuple, list)):
            grid_size = tuple(int(g) for g in grid_size)
        self.grid_size = grid_size

    def build(self, input_shape):
        # A constant computed from the config, not a variable: it is never
        # saved, so a preset loads at another grid size (resolution change).
        self._table = ops.convert_to_numpy(sincos_2d(input_shape[-1], self.grid_size))
        self.built = True

    @property
    def encoding(self):
        """The `(patches, width)` float32 table (after `build`)."""
        return self._table

    def call(self, tokens):
        return tokens + ops.cast(ops.convert_to_tensor(self._table), tokens.dtype)[None]

    def load_own_variables(self, store):
        # Presets saved before the table became a constant hold it as one
        # weight ("encoding"); it is recomputed from the config, so skip it.
        if len(store.keys()) > 1:
            raise ValueError(
                f"Layer '{self.name}' holds no weights (its sin-cos table is computed "
                f"from the config) but the file has {len(store.keys())} for it."
            )

    def get_config(self):
        config = super().get_config()
        config.update({"grid_size": self.grid_size})
        return config
