import keras
import numpy as np
import pytest

from keras_maeclip.layers import PatchEmbedding, patchify, unpatchify


def numpy_patchify(images, p):
    """MAE's patchify (NCHW einsum 'nchpwq->nhwpqc'), rewritten for NHWC."""
    n, h, w, c = images.shape
    x = images.reshape(n, h // p, p, w // p, p, c)
    x = np.einsum("nhpwqc->nhwpqc", x)
    return x.reshape(n, (h // p) * (w // p), p * p * c)


def test_patchify_matches_numpy_reference():
    images = np.random.default_rng(0).normal(size=(2, 12, 8, 3)).astype("float32")
    got = keras.ops.convert_to_numpy(patchify(images, 4))
    np.testing.assert_array_equal(got, numpy_patchify(images, 4))
    # Patch 1 (row 0, column 1) starts at pixel (0, 4); channels vary fastest.
    np.testing.assert_array_equal(got[0, 1, :3], images[0, 0, 4])
    np.testing.assert_array_equal(got[0, 1, 3:6], images[0, 0, 5])


def test_unpatchify_inverts_patchify():
    images = np.random.default_rng(1).normal(size=(3, 16, 8, 3)).astype("float32")
    back = unpatchify(patchify(images, 4), 4, grid_size=(4, 2))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(back), images)


def test_patchify_rejects_indivisible_size():
    with pytest.raises(ValueError, match="not divisible by patch_size=5"):
        patchify(np.zeros((1, 12, 12, 3), "float32"), 5)


def test_unpatchify_rejects_wrong_grid():
    with pytest.raises(ValueError, match="needs 9"):
        unpatchify(np.zeros((1, 4, 48), "float32"), 4, grid_size=3)


def test_patch_embedding_is_a_linear_map_of_patchify():
    images = np.random.default_rng(2).normal(size=(2, 16, 16, 3)).astype("float32")
    layer = PatchEmbedding(patch_size=4, hidden_dim=8)
    out = keras.ops.convert_to_numpy(layer(images))
    kernel = keras.ops.convert_to_numpy(layer.projection.kernel)  # (p, p, c, d)
    bias = keras.ops.convert_to_numpy(layer.projection.bias)
    expected = numpy_patchify(images, 4) @ kernel.reshape(-1, 8) + bias
    assert out.shape == (2, 16, 8)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_patch_embedding_config_round_trip():
    layer = PatchEmbedding(patch_size=4, hidden_dim=8, use_bias=False, name="pe")
    clone = PatchEmbedding.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert clone.patch_size == 4 and clone.use_bias is False


def _uniform_glorot_variance(fan_in, fan_out):
    # U(-a, a) with a = sqrt(6 / (fan_in + fan_out)) has variance a² / 3.
    return 2.0 / (fan_in + fan_out)


@pytest.mark.parametrize("patch_size, channels, hidden, tolerance", [(8, 3, 96, 0.04), (4, 3, 32, 0.15)])
def test_patch_embedding_is_initialised_like_mae(patch_size, channels, hidden, tolerance):
    # MAE: xavier_uniform on the flattened (p·p·c → hidden) weight, so
    # fan_in = p·p·c and fan_out = hidden (not p·p·hidden, Conv2D's fans).
    # The sample variance of n uniform draws has relative standard
    # deviation sqrt(0.8 / n): 0.7 % for n = 18432, 2.3 % for n = 1536;
    # the tolerances are about 6 of those. Conv2D's own glorot would be
    # 22× (resp. 7×) smaller.
    keras.utils.set_random_seed(3)
    layer = PatchEmbedding(patch_size=patch_size, hidden_dim=hidden)
    layer.build((None, 4 * patch_size, 4 * patch_size, channels))
    kernel = keras.ops.convert_to_numpy(layer.projection.kernel).astype("float64")
    fan_in = patch_size * patch_size * channels
    expected = _uniform_glorot_variance(fan_in, hidden)
    assert kernel.var() == pytest.approx(expected, rel=tolerance)
    assert abs(kernel.mean()) < 4 * np.sqrt(expected / kernel.size)
    assert np.abs(kernel).max() <= np.sqrt(3 * expected) + 1e-7
    # The initializer is serialised with the layer and rebuilt from it.
    clone = PatchEmbedding.from_config(layer.get_config())
    clone.build((None, 4 * patch_size, 4 * patch_size, channels))
    assert keras.ops.convert_to_numpy(clone.projection.kernel).var() == pytest.approx(expected, rel=tolerance)


def test_vit_encoder_patch_embedding_uses_the_flattened_fans():
    from keras_maeclip.models import ViTEncoder

    keras.utils.set_random_seed(4)
    encoder = ViTEncoder(image_size=32, patch_size=8, hidden_dim=96, num_layers=1, num_heads=2)
    kernel = keras.ops.convert_to_numpy(encoder.patch_embedding.projection.kernel)
    assert kernel.var() == pytest.approx(_uniform_glorot_variance(8 * 8 * 3, 96), rel=0.04)
