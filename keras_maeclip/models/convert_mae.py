"""MAE's pretrained ViT encoders (`mae_pretrain_vit_*.pth`, timm layout) as a `ViTEncoder`.

MAE (facebookresearch/mae) publishes its pretrained encoders as PyTorch
state dicts in timm's ViT layout: `patch_embed.proj`, `cls_token`, a fixed
2-D sin-cos `pos_embed` (stored, never trained), pre-norm `blocks.i` with a
fused `attn.qkv`, and a final `norm`. That is exactly `ViTEncoder` with
`use_class_token=True` (the class token carries no position; MAE's row 0
of `pos_embed` is zeros), so the conversion is a renaming plus transposes:

| MAE / timm | `ViTEncoder` |
|---|---|
| `patch_embed.proj.weight` `(D, C, p, p)` | `patch_embedding/projection/kernel` `(p, p, C, D)` |
| `cls_token` `(1, 1, D)` | `class_token/token` |
| `pos_embed` `(1, 1 + N, D)` | checked equal to the fixed table, not stored |
| `blocks.i.norm1`, `norm2` | `self_attention_layer_norm`, `feedforward_layer_norm` |
| `blocks.i.attn.qkv.weight` `(3D, D)` | `query` / `key` / `value` kernels `(D, H, D/H)` |
| `blocks.i.attn.proj` | `attention_output` kernel `(H, D/H, D)` |
| `blocks.i.mlp.fc1`, `fc2` | `feedforward_intermediate_dense`, `feedforward_output_dense` |
| `norm` | `final_norm` |

Decoder keys (`decoder_*`, `mask_token`) are reported and left out: the
encoder is what MAE-CLIP and CLIP start from. Inputs must be normalised
as MAE's were (ImageNet mean and std; see docs/pretrained.md).
"""

import re

import numpy as np

from keras_maeclip.models.vit_encoder import ViTEncoder

__all__ = ["load_mae_weights", "read_torch_state_dict", "vit_encoder_from_mae"]

# MAE's ViT sizes: width → heads (ViT-B/16, L/16, H/14). The head count is
# not in a fused-qkv state dict.
MAE_HEADS = {768: 12, 1024: 16, 1280: 16}
_BLOCK = re.compile(r"^blocks\.(\d+)\.")
_DECODER = ("decoder_", "mask_token")


def read_torch_state_dict(path):
    """A PyTorch checkpoint's state dict as float32 NumPy arrays (CPU, weights only).

    Accepts MAE's `{"model": state_dict}` files and bare state dicts; uses
    `torch.load(..., weights_only=True)`, so no pickled code runs.

    Args:
        path: str, a `.pth` / `.pt` file.

    Returns:
        dict, parameter name → `np.ndarray`.
    """
    import torch  # the pinned stack's; only this reader needs it

    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(checkpoint, dict) and "model" in checkpoint and isinstance(checkpoint["model"], dict):
        checkpoint = checkpoint["model"]
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path}: expected a state dict (name → tensor), got {type(checkpoint).__name__}.")
    return {name: value.detach().float().numpy() for name, value in checkpoint.items()
            if hasattr(value, "detach")}


def _require(state, name, shape=None):
    if name not in state:
        raise ValueError(f"MAE state dict: no {name!r}; is this a timm-layout ViT encoder (mae_pretrain_vit_*)?")
    value = np.asarray(state[name], dtype="float32")
    if shape is not None and value.shape != tuple(shape):
        raise ValueError(f"MAE state dict: {name!r} has shape {value.shape}, expected {tuple(shape)}.")
    return value


def _architecture(state):
    kernel = _require(state, "patch_embed.proj.weight")
    width, channels, patch_size, _ = kernel.shape
    blocks = {int(m.group(1)) for m in map(_BLOCK.match, state) if m}
    if blocks != set(range(len(blocks))) or not blocks:
        raise ValueError(f"MAE state dict: blocks {sorted(blocks)[:5]}… are not 0..L-1.")
    positions = _require(state, "pos_embed")
    grid = int(round((positions.shape[1] - 1) ** 0.5))
    if positions.shape != (1, 1 + grid * grid, width):
        raise ValueError(f"MAE state dict: pos_embed {positions.shape} is not (1, 1 + grid², {width}).")
    mlp = _require(state, "blocks.0.mlp.fc1.weight").shape[0]
    return dict(width=width, channels=channels, patch_size=patch_size, num_layers=len(blocks),
                grid=grid, mlp_ratio=mlp / width)


def vit_encoder_from_mae(state_dict, image_size=None, num_heads=None, **kwargs):
    """A `ViTEncoder` holding an MAE-pretrained encoder.

    Args:
        state_dict: dict name → array (`read_torch_state_dict(path)`), MAE's
            timm layout.
        image_size: int or `None` (the checkpoint's, e.g. 224). Any multiple
            of the patch size: the positions are the fixed sin-cos table of
            the new grid (MAE's positions are that table, never trained).
        num_heads: int or `None`: MAE's for the width (768 → 12, 1024 → 16,
            1280 → 16); needed for other widths.
        **kwargs: further `ViTEncoder` arguments (`dtype`, `name`, ...).

    Returns:
        A built `ViTEncoder` with `use_class_token=True` and the weights loaded.

    Example:
    >>> state = read_torch_state_dict("mae_pretrain_vit_base.pth")  # doctest: +SKIP
    >>> encoder = vit_encoder_from_mae(state)                       # doctest: +SKIP
    >>> backbone = ImageTextBackbone(encoder, text_encoder, embedding_dim=512)  # doctest: +SKIP
    """
    arch = _architecture(state_dict)
    width = arch["width"]
    if num_heads is None:
        if width not in MAE_HEADS:
            raise ValueError(f"num_heads: width {width} is not one of MAE's ({MAE_HEADS}); pass num_heads.")
        num_heads = MAE_HEADS[width]
    encoder = ViTEncoder(
        image_size=image_size or arch["grid"] * arch["patch_size"],
        patch_size=arch["patch_size"], hidden_dim=width, num_layers=arch["num_layers"],
        num_heads=num_heads, mlp_ratio=arch["mlp_ratio"], num_channels=arch["channels"],
        use_class_token=True, **kwargs,
    )
    load_mae_weights(encoder, state_dict)
    return encoder


def _assign(variable, value, name):
    if tuple(variable.shape) != value.shape:
        raise ValueError(f"MAE {name}: shape {value.shape} does not fit {variable.path} {tuple(variable.shape)}.")
    variable.assign(value.astype(variable.dtype))


def _by_suffix(layer):
    return {"/".join(v.path.split("/")[-2:]): v for v in layer.weights}


def load_mae_weights(encoder, state_dict, position_atol=1e-5):
    """Load MAE's timm-layout encoder weights into a `ViTEncoder` (in place).

    The encoder must have the checkpoint's width, depth, patch size and a
    class token. `pos_embed` is not loaded but checked: it must be the
    fixed sin-cos table of the checkpoint's grid (within `position_atol`)
    with a zero class-token row, or the checkpoint is not MAE's fixed
    encoding and loading it here would silently change the model.

    Args:
        encoder: a `ViTEncoder`.
        state_dict: dict name → array.
        position_atol: float, tolerance of the `pos_embed` check.

    Returns:
        dict with `loaded` (names used) and `ignored` (decoder and other
        names left out), so a caller can see nothing was dropped silently.
    """
    from keras import ops

    from keras_maeclip.layers.position import sincos_2d

    arch = _architecture(state_dict)
    width = arch["width"]
    if not encoder.use_class_token:
        raise ValueError("load_mae_weights: MAE's encoder has a class token; build the ViTEncoder with use_class_token=True.")
    mismatch = {k: (getattr(encoder, a), arch[k]) for k, a in
                (("width", "hidden_dim"), ("num_layers", "num_layers"), ("patch_size", "patch_size"),
                 ("channels", "num_channels")) if getattr(encoder, a) != arch[k]}
    if mismatch:
        raise ValueError(f"load_mae_weights: the encoder and the checkpoint differ in {mismatch} (encoder, checkpoint).")
    heads = encoder.num_heads
    head_dim = width // heads
    positions = _require(state_dict, "pos_embed")[0]
    table = ops.convert_to_numpy(sincos_2d(width, arch["grid"]))
    if not (np.allclose(positions[0], 0.0, atol=position_atol)
            and np.allclose(positions[1:], table, atol=position_atol)):
        raise ValueError(
            "load_mae_weights: pos_embed is not the fixed 2-D sin-cos table of a "
            f"{arch['grid']}×{arch['grid']} grid (max difference "
            f"{float(np.max(np.abs(positions[1:] - table))):.3g}); learned positions are not MAE's encoder."
        )
    used = {"pos_embed"}

    def take(name, shape=None):
        used.add(name)
        return _require(state_dict, name, shape)

    patch = _by_suffix(encoder.patch_embedding)
    _assign(patch["projection/kernel"], take("patch_embed.proj.weight").transpose(2, 3, 1, 0), "patch_embed.proj.weight")
    _assign(patch["projection/bias"], take("patch_embed.proj.bias", (width,)), "patch_embed.proj.bias")
    _assign(encoder.class_token.weights[0], take("cls_token", (1, 1, width)), "cls_token")
    for i, block in enumerate(encoder.transformer_layers):
        prefix = f"blocks.{i}."
        weights = _by_suffix(block)
        qkv = take(prefix + "attn.qkv.weight", (3 * width, width))
        qkv_bias = take(prefix + "attn.qkv.bias", (3 * width,))
        for j, part in enumerate(("query", "key", "value")):
            rows = slice(j * width, (j + 1) * width)
            _assign(weights[f"{part}/kernel"], qkv[rows].T.reshape(width, heads, head_dim), prefix + "attn.qkv")
            _assign(weights[f"{part}/bias"], qkv_bias[rows].reshape(heads, head_dim), prefix + "attn.qkv")
        out = take(prefix + "attn.proj.weight", (width, width))
        _assign(weights["attention_output/kernel"], out.T.reshape(heads, head_dim, width), prefix + "attn.proj")
        _assign(weights["attention_output/bias"], take(prefix + "attn.proj.bias"), prefix + "attn.proj")
        for norm, ours in (("norm1", "self_attention_layer_norm"), ("norm2", "feedforward_layer_norm")):
            _assign(weights[f"{ours}/gamma"], take(prefix + norm + ".weight"), prefix + norm)
            _assign(weights[f"{ours}/beta"], take(prefix + norm + ".bias"), prefix + norm)
        for fc, ours in (("fc1", "feedforward_intermediate_dense"), ("fc2", "feedforward_output_dense")):
            _assign(weights[f"{ours}/kernel"], take(f"{prefix}mlp.{fc}.weight").T, f"{prefix}mlp.{fc}")
            _assign(weights[f"{ours}/bias"], take(f"{prefix}mlp.{fc}.bias"), f"{prefix}mlp.{fc}")
    final = _by_suffix(encoder.final_norm)
    _assign(final["final_norm/gamma"], take("norm.weight", (width,)), "norm.weight")
    _assign(final["final_norm/beta"], take("norm.bias", (width,)), "norm.bias")
    ignored = sorted(set(state_dict) - used)
    unknown = [name for name in ignored if not name.startswith(_DECODER)]
    if unknown:
        raise ValueError(
            f"load_mae_weights: {len(unknown)} encoder parameter(s) this converter does not "
            f"know, e.g. {unknown[:3]} (a fine-tuned checkpoint's head or fc_norm?); pass "
            "the pretrain checkpoint, or drop them from the dict on purpose."
        )
    return {"loaded": sorted(used), "ignored": ignored}
