"""Loading presets at another image size: sin-cos recomputed, learned positions resampled."""

import os

import keras
import numpy as np
import pytest

from keras_maeclip.models import M3AE, MAE, MAECLIP, CLIP, PretrainingTask, ViTEncoder
from keras_maeclip.models.resolution import (
    cubic_resize_matrix, resample_positions, with_image_size,
)
from tests.layers.test_position import mae_2d

LEGACY = os.path.join(os.path.dirname(__file__), "legacy_presets")


def to_np(x):
    return keras.ops.convert_to_numpy(x)


def test_vit_preset_loads_at_another_image_size(tmp_path):
    # Failed before the sin-cos table stopped being a saved weight.
    vit = ViTEncoder(image_size=16, patch_size=4, hidden_dim=16, num_layers=1, num_heads=2)
    vit.save_to_preset(str(tmp_path))
    big = ViTEncoder.from_preset(str(tmp_path), image_size=32)
    assert big.num_patches == 64 and len(big.weights) == len(vit.weights)
    for a, b in zip(vit.weights, big.weights):
        np.testing.assert_array_equal(to_np(a), to_np(b))
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    positions = to_np(big.embed_patches(x)) - to_np(big.patch_embedding(x))
    np.testing.assert_allclose(positions, np.broadcast_to(mae_2d(16, 8), (2, 64, 16)), atol=1e-5)
    # A preset written when the table was a weight loads too, at any size.
    old = ViTEncoder.from_preset(os.path.join(LEGACY, "vit"), image_size=32)
    assert old(x).shape == (2, 64, 16)


def test_bicubic_resampling_matches_torch_interpolate():
    import torch

    rng = np.random.default_rng(1)
    table = rng.normal(size=(1 + 16, 8)).astype("float32")  # class token + 4x4 grid
    for new_grid in (7, 2):
        out = resample_positions(table, new_grid, num_prefix_tokens=1)
        grid = torch.from_numpy(table[1:].reshape(1, 4, 4, 8)).permute(0, 3, 1, 2).double()
        ref = torch.nn.functional.interpolate(
            grid, size=(new_grid, new_grid), mode="bicubic", align_corners=False)
        ref = ref.permute(0, 2, 3, 1).reshape(new_grid * new_grid, 8).numpy()
        np.testing.assert_array_equal(out[0], table[0])  # class token kept
        np.testing.assert_allclose(out[1:], ref, atol=1e-5)
    np.testing.assert_allclose(cubic_resize_matrix(5, 5), np.eye(5), atol=1e-12)


def test_same_size_copy_is_exact_and_bad_size_is_named():
    model = CLIP.from_preset(os.path.join(LEGACY, "clip"))
    copy = with_image_size(model, 16)
    x = np.load(os.path.join(LEGACY, "expected.npz"))
    inputs = {k: x[f"input_{k}"] for k in ("images", "token_ids", "padding_mask")}
    for key in ("image_embeddings", "text_embeddings"):
        np.testing.assert_array_equal(to_np(model(inputs)[key]), to_np(copy(inputs)[key]))
    with pytest.raises(ValueError, match="image_size=18 is not a multiple of .*patch_size=4"):
        with_image_size(model, 18)


def test_clip_and_maeclip_presets_load_at_another_size():
    model = CLIP.from_preset(os.path.join(LEGACY, "clip"), image_size=32)
    assert model.backbone.image_encoder.num_patches == 64
    raw = {"images": np.zeros((2, 40, 40, 3), "uint8"), "captions": ["a red circle", "a cross"]}
    batch = model.preprocessor(raw)
    assert tuple(batch["images"].shape) == (2, 32, 32, 3)  # the converter follows
    assert model(batch)["image_embeddings"].shape == (2, 8)
    masked = PretrainingTask.from_preset(os.path.join(LEGACY, "maeclip"), image_size=24)
    assert type(masked) is MAECLIP and masked.decoder.num_patches == 36
    out = masked({"images": np.zeros((2, 24, 24, 3), "float32"),
                  "token_ids": np.ones((2, 8), "int32"), "padding_mask": np.ones((2, 8), "int32")})
    assert out["pixels"].shape == (2, 36, 48)


def test_mae_and_m3ae_presets_load_at_another_size(tmp_path):
    small = dict(image_size=16, decoder=dict(hidden_dim=16, num_layers=1, num_heads=2))
    mae = MAE.from_preset("mae_tiny", image_encoder=dict(patch_size=4, hidden_dim=16,
                                                          num_layers=1, num_heads=2), **small)
    mae.save_to_preset(str(tmp_path / "mae"))
    big = MAE.from_preset(str(tmp_path / "mae"), image_size=32)
    assert big.decoder.num_patches == 64
    assert big({"images": np.zeros((1, 32, 32, 3), "float32")})["pixels"].shape == (1, 64, 48)
    m3ae = M3AE.from_preset("m3ae_tiny", vocabulary_size=50, sequence_length=8,
                            encoder=dict(patch_size=4, hidden_dim=16, num_layers=1, num_heads=2),
                            **small)
    m3ae.save_to_preset(str(tmp_path / "m3ae"))
    big = M3AE.from_preset(str(tmp_path / "m3ae"), image_size=32)
    assert big.backbone.num_patches == 64 and big.decoder.num_patches == 64
