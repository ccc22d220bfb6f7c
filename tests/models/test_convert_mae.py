"""MAE's timm-layout encoder checkpoints → `ViTEncoder`, against a NumPy ViT forward.

The reference is a NumPy timm ViT forward (`tests/models/timm_reference.py`,
written from timm's and MAE's code paths, independently of the library)
with MAE's `get_2d_sincos_pos_embed` table, written here.
Tolerance: 1e-4 absolute and relative on float32 outputs of order 1.
"""

import keras
import numpy as np
import pytest

from keras_maeclip.models.convert_mae import load_mae_weights, read_torch_state_dict, vit_encoder_from_mae
from tests.models.timm_reference import numpy_vit, random_vit_state

WIDTH, HEADS, LAYERS, PATCH, SIZE, CHANNELS = 32, 2, 2, 4, 16, 3


def mae_sincos_positions(width, grid):
    """MAE's get_2d_sincos_pos_embed with cls_token=True: `(1 + grid², width)`."""
    def one_axis(dim, positions):
        omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
        angles = np.outer(positions.reshape(-1), omega)
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

    columns, rows = np.meshgrid(np.arange(grid, dtype=np.float64), np.arange(grid, dtype=np.float64))
    table = np.concatenate([one_axis(width // 2, columns), one_axis(width // 2, rows)], axis=1)
    return np.concatenate([np.zeros((1, width)), table], axis=0)


def random_mae_state(seed=0, decoder=True):
    grid = SIZE // PATCH
    state = random_vit_state(WIDTH, HEADS, LAYERS, PATCH, SIZE, CHANNELS, seed=seed,
                             positions=mae_sincos_positions(WIDTH, grid)[None].astype("float32"))
    if decoder:
        rng = np.random.default_rng(seed + 1)
        state.update({"mask_token": rng.normal(size=(1, 1, 16)).astype("float32"),
                      "decoder_embed.weight": rng.normal(size=(16, WIDTH)).astype("float32")})
    return state


def numpy_mae_encoder(state, images):
    """MAE's forward_encoder without masking (mask_ratio 0): timm's forward, NHWC images."""
    return numpy_vit(state, images, PATCH, HEADS)


def test_converted_encoder_computes_maes_forward():
    state = random_mae_state()
    encoder = vit_encoder_from_mae(state, num_heads=HEADS)
    assert (encoder.image_size, encoder.num_layers, encoder.use_class_token) == (SIZE, LAYERS, True)
    images = np.random.default_rng(1).normal(size=(2, SIZE, SIZE, CHANNELS)).astype("float32")
    ours = keras.ops.convert_to_numpy(encoder(images))
    np.testing.assert_allclose(ours, numpy_mae_encoder(state, images), rtol=1e-4, atol=1e-4)


def test_decoder_keys_are_reported_and_other_surprises_refused():
    state = random_mae_state()
    encoder = vit_encoder_from_mae(state, num_heads=HEADS)
    report = load_mae_weights(encoder, state)
    assert report["ignored"] == ["decoder_embed.weight", "mask_token"]
    assert "blocks.1.mlp.fc2.bias" in report["loaded"]
    with pytest.raises(ValueError, match="fc_norm"):
        load_mae_weights(encoder, dict(state, **{"fc_norm.weight": np.ones(WIDTH, "float32")}))
    learned = dict(state, pos_embed=state["pos_embed"] + 0.01)
    with pytest.raises(ValueError, match="not the fixed 2-D sin-cos table of a 4×4 grid"):
        load_mae_weights(encoder, learned)
    with pytest.raises(ValueError, match="pass num_heads"):
        vit_encoder_from_mae(state)  # width 32 is not one of MAE's sizes
    missing = {k: v for k, v in state.items() if k != "blocks.0.attn.proj.bias"}
    with pytest.raises(ValueError, match="no 'blocks.0.attn.proj.bias'"):
        vit_encoder_from_mae(missing, num_heads=HEADS)


def test_torch_checkpoint_file_and_another_resolution(tmp_path):
    import torch

    state = random_mae_state(decoder=False)
    path = tmp_path / "mae_pretrain_vit_tiny.pth"
    torch.save({"model": {k: torch.from_numpy(v) for k, v in state.items()}}, path)
    read = read_torch_state_dict(str(path))
    assert sorted(read) == sorted(state)
    # 24² images: a 6×6 grid with its own fixed table, the same weights.
    encoder = vit_encoder_from_mae(read, image_size=24, num_heads=HEADS)
    images = np.random.default_rng(2).normal(size=(1, 24, 24, CHANNELS)).astype("float32")
    wider = dict(state, pos_embed=mae_sincos_positions(WIDTH, 6)[None].astype("float32"))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(encoder(images)),
                               numpy_mae_encoder(wider, images), rtol=1e-4, atol=1e-4)
