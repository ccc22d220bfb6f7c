import keras
import numpy as np
import pytest

from keras_maeclip.models import TextEncoder, ViTEncoder


def to_np(x):
    return keras.ops.convert_to_numpy(x)


def small_vit(**kwargs):
    args = dict(image_size=16, patch_size=4, hidden_dim=16, num_layers=2, num_heads=2)
    args.update(kwargs)
    return ViTEncoder(**args)


def test_vit_outputs_token_sequence_with_optional_class_token():
    images = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype("float32")
    assert small_vit()(images).shape == (2, 16, 16)
    assert small_vit(use_class_token=True)(images).shape == (2, 17, 16)


def test_vit_encodes_a_subset_of_patches_with_their_positions():
    encoder = small_vit()
    images = np.random.default_rng(1).normal(size=(2, 16, 16, 3)).astype("float32")
    tokens = to_np(encoder.embed_patches(images))
    keep = np.array([0, 5, 10, 15])
    subset = to_np(encoder.encode_tokens(tokens[:, keep]))
    assert subset.shape == (2, 4, 16)
    # The full pass is the same two halves.
    np.testing.assert_allclose(to_np(encoder(images)), to_np(encoder.encode_tokens(tokens)), atol=1e-5)
    # Kept tokens carry their own positions: shuffling the kept set permutes
    # the outputs the same way (no position is re-assigned after masking).
    perm = np.array([2, 0, 3, 1])
    shuffled = to_np(encoder.encode_tokens(tokens[:, keep[perm]]))
    np.testing.assert_allclose(shuffled, subset[:, perm], atol=1e-5)


def test_vit_uses_pre_ln_blocks_and_final_norm():
    encoder = small_vit()
    assert all(layer.normalize_first for layer in encoder.transformer_layers)
    out = to_np(encoder(np.ones((1, 16, 16, 3), "float32")))
    # Final LayerNorm with its initial gamma=1, beta=0: zero mean, unit var.
    np.testing.assert_allclose(out.mean(-1), 0.0, atol=1e-4)
    np.testing.assert_allclose(out.var(-1), 1.0, atol=1e-2)


def test_text_padding_does_not_change_real_positions():
    encoder = TextEncoder(vocabulary_size=50, sequence_length=8, hidden_dim=16, num_layers=2, num_heads=2)
    ids = np.array([[2, 7, 9, 3, 0, 0, 0, 0]], "int32")
    mask = (ids != 0).astype("int32")
    other = ids.copy()
    other[0, 4:] = [11, 12, 13, 14]  # different junk under the padding
    a = to_np(encoder({"token_ids": ids, "padding_mask": mask}))
    b = to_np(encoder({"token_ids": other, "padding_mask": mask}))
    np.testing.assert_allclose(a[:, :4], b[:, :4], atol=1e-5)
    assert encoder.position_embedding.trainable


@pytest.mark.parametrize(
    "cls,kwargs",
    [
        (ViTEncoder, dict(image_size=16, patch_size=4, hidden_dim=16, num_layers=1, num_heads=2, use_class_token=True)),
        (TextEncoder, dict(vocabulary_size=30, sequence_length=8, hidden_dim=16, num_layers=1, num_heads=2)),
    ],
)
def test_config_round_trip(cls, kwargs):
    encoder = cls(**kwargs)
    clone = cls.from_config(encoder.get_config())
    assert clone.get_config() == encoder.get_config()
    assert clone.count_params() == encoder.count_params()


def test_inconsistent_configs_raise_clear_errors():
    with pytest.raises(ValueError, match="hidden_dim=30 must be divisible by num_heads=4"):
        small_vit(hidden_dim=30, num_heads=4)
    with pytest.raises(ValueError, match="image_size=30 must be divisible by patch_size=4"):
        small_vit(image_size=30)
    with pytest.raises(ValueError, match="hidden_dim=30 must be divisible by num_heads=4"):
        TextEncoder(vocabulary_size=10, sequence_length=4, hidden_dim=30, num_layers=1, num_heads=4)
    with pytest.raises(ValueError, match="num_layers must be a positive integer"):
        small_vit(num_layers=0)
