"""open_clip ViT image towers as a `ViTEncoder` plus the image projection.

open_clip's `VisionTransformer` (`visual.*` of a CLIP state dict) is timm's
layout under other names, with three differences that are `ViTEncoder`
options: `ln_pre` after the class token and positions (`pre_norm=True`),
LayerNorm epsilon 1e-5, and QuickGELU for the OpenAI weights and the
`*-quickgelu` models (`activation="quick_gelu"`; the state dict does not
say which, so the caller does). The patch convolution has no bias (ours is
set to zero). Token pooling (`pool_type="tok"`, open_clip's default for
ViTs) is `ImageTextBackbone(image_pooling="first")` on the class token after
`ln_post` (our `final_norm`); `proj` is the bias-free `image_projection`.

| open_clip `visual.` | timm layout (then `convert_timm`) |
|---|---|
| `conv1.weight` | `patch_embed.proj.weight` (bias zero) |
| `class_embedding` `(D,)` | `cls_token` `(1, 1, D)` |
| `positional_embedding` `(1 + N, D)` | `pos_embed` `(1, 1 + N, D)` |
| `ln_pre` | `norm_pre` |
| `transformer.resblocks.i.ln_1`, `ln_2` | `blocks.i.norm1`, `norm2` |
| `….attn.in_proj_weight` / `_bias` (q, k, v stacked) | `blocks.i.attn.qkv` |
| `….attn.out_proj` | `blocks.i.attn.proj` |
| `….mlp.c_fc`, `c_proj` | `blocks.i.mlp.fc1`, `fc2` |
| `ln_post` | `norm` |
| `proj` `(D, E)` | returned: the `image_projection` kernel |

Refused by name: attention pooling (`attn_pool`, CoCa), layer scale
(`ls_1`, `ls_2`). The text tower (causal attention, end-of-text pooling) is
not converted: pair the image tower with a keras-hub BERT (`HubBertTower`)
or our `TextEncoder` and train the text side.
"""

import re

import numpy as np

from keras_maeclip.models.convert_timm import vit_encoder_from_timm

__all__ = ["image_tower_from_open_clip", "load_open_clip_projection"]

_BLOCK_NAMES = (
    ("ln_1.", "norm1."), ("ln_2.", "norm2."), ("attn.in_proj_weight", "attn.qkv.weight"),
    ("attn.in_proj_bias", "attn.qkv.bias"), ("attn.out_proj.", "attn.proj."),
    ("mlp.c_fc.", "mlp.fc1."), ("mlp.c_proj.", "mlp.fc2."),
)
_TOP_NAMES = {"conv1.weight": "patch_embed.proj.weight", "ln_pre.weight": "norm_pre.weight",
              "ln_pre.bias": "norm_pre.bias", "ln_post.weight": "norm.weight", "ln_post.bias": "norm.bias"}
_BLOCK = re.compile(r"^transformer\.resblocks\.(\d+)\.(.*)$")
# open_clip's ViT head widths are 64, except H/14 (80) and bigG/14 (104).
_HEADS = {1280: 16, 1664: 16}


def _visual(state_dict):
    """The `visual.` entries (prefix stripped) of a whole CLIP state dict, or the dict itself."""
    if any(name.startswith("visual.") for name in state_dict):
        return {name[len("visual."):]: value for name, value in state_dict.items()
                if name.startswith("visual.")}
    return dict(state_dict)


def _to_timm(visual):
    """open_clip visual names → timm layout; `(timm_state, projection, unknown names)`."""
    timm, unknown = {}, []
    projection = None
    for name, value in visual.items():
        value = np.asarray(value, dtype="float32")
        block = _BLOCK.match(name)
        if name in _TOP_NAMES:
            timm[_TOP_NAMES[name]] = value
        elif name == "class_embedding":
            timm["cls_token"] = value.reshape(1, 1, -1)
        elif name == "positional_embedding":
            timm["pos_embed"] = value[None]
        elif name == "proj":
            projection = value
        elif block:
            rest = block.group(2)
            for theirs, ours in _BLOCK_NAMES:
                if rest.startswith(theirs):
                    timm[f"blocks.{block.group(1)}.{ours}{rest[len(theirs):]}"] = value
                    break
            else:
                unknown.append(name)
        else:
            unknown.append(name)
    # conv1 has no bias: load_timm_weights gives a bias-free patch conv a zero one.
    return timm, projection, unknown


def image_tower_from_open_clip(state_dict, image_size=None, num_heads=None, quick_gelu=False, **kwargs):
    """An open_clip ViT image tower as `(ViTEncoder, projection kernel)`.

    Args:
        state_dict: dict name → array: a whole open_clip CLIP state dict
            (`visual.*` is taken, the rest left) or the visual tower's alone;
            e.g. `read_torch_state_dict("open_clip_pytorch_model.bin")` or
            `safetensors.numpy.load_file(path)`.
        image_size: int or `None` (the checkpoint's); another multiple of
            the patch size resamples the learned positions (bicubic).
        num_heads: int or `None`: open_clip's for the width (width / 64;
            16 for 1280 and 1664).
        quick_gelu: bool. `True` for OpenAI's weights and the `*-quickgelu`
            models (`x·sigmoid(1.702x)`); `False` (exact GELU) otherwise.
        **kwargs: further `ViTEncoder` arguments (`dtype`, `name`).

    Returns:
        `(encoder, projection)`: a `ViTEncoder` (learned positions, class
        token, `pre_norm`, epsilon 1e-5) and the `(D, E)` array of `proj`
        (`None` when the dict has none) for `load_open_clip_projection`.

    Raises:
        ValueError: parameters the encoder cannot compute (`attn_pool`,
            layer scale), named.

    Example:
    >>> state = read_torch_state_dict("open_clip_pytorch_model.bin")  # doctest: +SKIP
    >>> encoder, projection = image_tower_from_open_clip(state)        # doctest: +SKIP
    >>> backbone = ImageTextBackbone(encoder, text_tower, embedding_dim=projection.shape[1],
    ...                              image_pooling="first")           # doctest: +SKIP
    >>> load_open_clip_projection(backbone, projection)                # doctest: +SKIP
    """
    timm, projection, unknown = _to_timm(_visual(state_dict))
    if "patch_embed.proj.weight" not in timm:
        raise ValueError("image_tower_from_open_clip: no visual.conv1.weight; is this an open_clip ViT state dict?")
    if unknown:
        raise ValueError(
            f"image_tower_from_open_clip: {len(unknown)} visual parameter(s) this tower cannot "
            f"compute, e.g. {unknown[:3]} (attention pooling and layer scale are not ViTEncoder "
            "options); this checkpoint would load wrong, so it is refused."
        )
    width = timm["patch_embed.proj.weight"].shape[0]
    if num_heads is None:
        if width not in _HEADS and width % 64:
            raise ValueError(f"num_heads: width {width} is not one of open_clip's ViTs; pass num_heads.")
        num_heads = _HEADS.get(width, width // 64)
    encoder = vit_encoder_from_timm(
        timm, image_size=image_size, num_heads=num_heads, layer_norm_epsilon=1e-5,
        activation="quick_gelu" if quick_gelu else "gelu", **kwargs,
    )
    return encoder, projection


def load_open_clip_projection(backbone, projection):
    """Put open_clip's `proj` into an `ImageTextBackbone`'s image projection (in place).

    The backbone's `image_encoder` is the converted tower and its
    `image_pooling` should be `"first"` (open_clip's token pooling) for the
    embeddings to be open_clip's.
    """
    kernel = backbone.image_projection.kernel
    projection = np.asarray(projection, dtype="float32")
    if tuple(kernel.shape) != projection.shape:
        raise ValueError(
            f"load_open_clip_projection: proj {projection.shape} does not fit the backbone's "
            f"image projection {tuple(kernel.shape)}; build it with embedding_dim={projection.shape[-1]}."
        )
    if backbone.image_pooling != "first":
        raise ValueError(
            f"load_open_clip_projection: image_pooling={backbone.image_pooling!r}; open_clip pools "
            "the class token (image_pooling='first')."
        )
    kernel.assign(projection)
