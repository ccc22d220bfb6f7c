"""MAE's timm-layout encoder checkpoints → `ViTEncoder`, against a NumPy ViT forward.

The reference is written here from MAE's code paths (timm `PatchEmbed`,
`Block`, `get_2d_sincos_pos_embed`), independently of the library: a
stride-p convolution with a `(D, C, p, p)` kernel, the class token
prepended after the positions are added, pre-norm blocks with a fused qkv
projection split into heads, exact (erf) GELU, LayerNorm epsilon 1e-6.
Tolerance: 1e-4 absolute and relative on float32 outputs of order 1.
"""

import math

import keras
import numpy as np
import pytest

from keras_maeclip.models.convert_mae import load_mae_weights, read_torch_state_dict, vit_encoder_from_mae

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
    rng = np.random.default_rng(seed)

    def normal(*shape, scale=0.2):
        return (rng.normal(size=shape) * scale).astype("float32")

    grid = SIZE // PATCH
    state = {
        "cls_token": normal(1, 1, WIDTH),
        "pos_embed": mae_sincos_positions(WIDTH, grid)[None].astype("float32"),
        "patch_embed.proj.weight": normal(WIDTH, CHANNELS, PATCH, PATCH),
        "patch_embed.proj.bias": normal(WIDTH),
        "norm.weight": 1 + normal(WIDTH),
        "norm.bias": normal(WIDTH),
    }
    for i in range(LAYERS):
        b = f"blocks.{i}."
        state.update({
            b + "norm1.weight": 1 + normal(WIDTH), b + "norm1.bias": normal(WIDTH),
            b + "attn.qkv.weight": normal(3 * WIDTH, WIDTH), b + "attn.qkv.bias": normal(3 * WIDTH),
            b + "attn.proj.weight": normal(WIDTH, WIDTH), b + "attn.proj.bias": normal(WIDTH),
            b + "norm2.weight": 1 + normal(WIDTH), b + "norm2.bias": normal(WIDTH),
            b + "mlp.fc1.weight": normal(4 * WIDTH, WIDTH), b + "mlp.fc1.bias": normal(4 * WIDTH),
            b + "mlp.fc2.weight": normal(WIDTH, 4 * WIDTH), b + "mlp.fc2.bias": normal(WIDTH),
        })
    if decoder:
        state.update({"mask_token": normal(1, 1, 16), "decoder_embed.weight": normal(16, WIDTH)})
    return state


def layer_norm(x, gamma, beta, eps=1e-6):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def gelu(x):
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def numpy_mae_encoder(state, images):
    """MAE's forward_encoder without masking (mask_ratio 0), NHWC images."""
    s = {k: v.astype(np.float64) for k, v in state.items()}
    batch, size = images.shape[0], images.shape[1]
    grid = size // PATCH
    patches = images.reshape(batch, grid, PATCH, grid, PATCH, CHANNELS).astype(np.float64)
    # (D, C, p, p) kernel against (row-in-patch i, column j, channel c).
    x = np.einsum("bgihjc,dcij->bghd", patches, s["patch_embed.proj.weight"]).reshape(batch, grid * grid, WIDTH)
    x = x + s["patch_embed.proj.bias"] + s["pos_embed"][:, 1:]
    cls = np.broadcast_to(s["cls_token"] + s["pos_embed"][:, :1], (batch, 1, WIDTH))
    x = np.concatenate([cls, x], axis=1)
    head_dim = WIDTH // HEADS
    for i in range(LAYERS):
        b = f"blocks.{i}."
        h = layer_norm(x, s[b + "norm1.weight"], s[b + "norm1.bias"])
        qkv = (h @ s[b + "attn.qkv.weight"].T + s[b + "attn.qkv.bias"]).reshape(batch, -1, 3, HEADS, head_dim)
        q, k, v = (qkv[:, :, j].transpose(0, 2, 1, 3) for j in range(3))
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(head_dim)
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        attended = (weights @ v).transpose(0, 2, 1, 3).reshape(batch, -1, WIDTH)
        x = x + attended @ s[b + "attn.proj.weight"].T + s[b + "attn.proj.bias"]
        h = layer_norm(x, s[b + "norm2.weight"], s[b + "norm2.bias"])
        h = gelu(h @ s[b + "mlp.fc1.weight"].T + s[b + "mlp.fc1.bias"])
        x = x + h @ s[b + "mlp.fc2.weight"].T + s[b + "mlp.fc2.bias"]
    return layer_norm(x, s["norm.weight"], s["norm.bias"])


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
