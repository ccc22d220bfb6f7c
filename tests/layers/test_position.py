import keras
import numpy as np
import pytest

from keras_maeclip.layers import SinCosPositionEncoding2D, sincos_2d


# An independent NumPy port of MAE's util/pos_embed.py
# (get_2d_sincos_pos_embed without class token), written from its formulas.
def mae_1d(embed_dim, pos):
    omega = np.arange(embed_dim // 2, dtype=np.float64) / (embed_dim / 2.0)
    omega = 1.0 / 10000**omega
    out = np.einsum("m,d->md", pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def mae_2d(embed_dim, grid_size):
    grid_h = np.arange(grid_size, dtype=np.float32)
    grid_w = np.arange(grid_size, dtype=np.float32)
    grid = np.stack(np.meshgrid(grid_w, grid_h), axis=0)  # w first, as MAE
    grid = grid.reshape([2, 1, grid_size, grid_size])
    emb_h = mae_1d(embed_dim // 2, grid[0])
    emb_w = mae_1d(embed_dim // 2, grid[1])
    return np.concatenate([emb_h, emb_w], axis=1)


@pytest.mark.parametrize("embed_dim,grid", [(16, 4), (64, 7), (768, 14)])
def test_sincos_matches_mae_reference(embed_dim, grid):
    got = keras.ops.convert_to_numpy(sincos_2d(embed_dim, grid))
    np.testing.assert_allclose(got, mae_2d(embed_dim, grid), atol=1e-6, rtol=0)


def test_layer_adds_fixed_encoding_and_is_not_trainable():
    layer = SinCosPositionEncoding2D(grid_size=4)
    tokens = np.ones((2, 16, 32), "float32")
    out = keras.ops.convert_to_numpy(layer(tokens))
    np.testing.assert_allclose(out - 1.0, np.broadcast_to(mae_2d(32, 4), (2, 16, 32)), atol=1e-6)
    assert layer.trainable_weights == []
    clone = SinCosPositionEncoding2D.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


def test_width_must_be_divisible_by_four():
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_2d(18, 3)
