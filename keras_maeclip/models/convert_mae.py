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

The block mapping is timm's (`keras_maeclip/models/convert_timm.py`, which
also converts timm ViTs with learned positions). Decoder keys
(`decoder_*`, `mask_token`) are reported and left out: the
encoder is what MAE-CLIP and CLIP start from. Inputs must be normalised
as MAE's were (ImageNet mean and std; see docs/pretrained.md).
"""

import numpy as np

from keras_maeclip.models.convert_timm import (
    architecture, check_fits, heads_for, load_vit_layout, loading_report, read_torch_state_dict, taker,
)

__all__ = ["load_mae_weights", "read_torch_state_dict", "vit_encoder_from_mae"]

# MAE's ViT sizes: width → heads (ViT-B/16, L/16, H/14). The head count is
# not in a fused-qkv state dict.
MAE_HEADS = {768: 12, 1024: 16, 1280: 16}
_DECODER = ("decoder_", "mask_token")


def _architecture(state):
    arch = architecture(state, source="MAE")
    if not (arch["class_token"] and arch["class_position"]):
        raise ValueError(
            "MAE state dict: expected a cls_token and a pos_embed of (1, 1 + grid², width); "
            "is this mae_pretrain_vit_*?"
        )
    return arch


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
    from keras_maeclip.models.vit_encoder import ViTEncoder

    arch = _architecture(state_dict)
    width = arch["width"]
    num_heads = heads_for(width, num_heads, MAE_HEADS, "MAE's")
    encoder = ViTEncoder(
        image_size=image_size or arch["grid"] * arch["patch_size"],
        patch_size=arch["patch_size"], hidden_dim=width, num_layers=arch["num_layers"],
        num_heads=num_heads, mlp_ratio=arch["mlp_ratio"], num_channels=arch["channels"],
        use_class_token=True, **kwargs,
    )
    load_mae_weights(encoder, state_dict)
    return encoder


def load_mae_weights(encoder, state_dict, position_atol=1e-5):
    """Load MAE's timm-layout encoder weights into a `ViTEncoder` (in place).

    The encoder must have the checkpoint's width, depth, patch size and a
    class token. `pos_embed` is not loaded but checked: it must be the
    fixed sin-cos table of the checkpoint's grid (within `position_atol`)
    with a zero class-token row, or the checkpoint is not MAE's fixed
    encoding and loading it here would silently change the model
    (`keras_maeclip.models.convert_timm` loads learned positions).

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
    if not encoder.use_class_token:
        raise ValueError("load_mae_weights: MAE's encoder has a class token; build the ViTEncoder with use_class_token=True.")
    check_fits(encoder, arch, "MAE")
    if encoder.position_embedding != "sincos":
        raise ValueError("load_mae_weights: MAE's positions are the fixed sin-cos table; build the ViTEncoder with position_embedding='sincos'.")
    take, used = taker(state_dict, "MAE")
    positions = take("pos_embed")[0]
    table = ops.convert_to_numpy(sincos_2d(arch["width"], arch["grid"]))
    if not (np.allclose(positions[0], 0.0, atol=position_atol)
            and np.allclose(positions[1:], table, atol=position_atol)):
        raise ValueError(
            "load_mae_weights: pos_embed is not the fixed 2-D sin-cos table of a "
            f"{arch['grid']}×{arch['grid']} grid (max difference "
            f"{float(np.max(np.abs(positions[1:] - table))):.3g}); learned positions are not MAE's "
            "encoder (vit_encoder_from_timm loads those)."
        )
    load_vit_layout(encoder, take, take("cls_token", (1, 1, arch["width"])))
    return loading_report(state_dict, used, _DECODER, lambda n, names: (
        f"load_mae_weights: {n} encoder parameter(s) this converter does not know, e.g. {names} "
        "(a fine-tuned checkpoint's head or fc_norm?); pass the pretrain checkpoint, or drop "
        "them from the dict on purpose."))
