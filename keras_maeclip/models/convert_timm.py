"""timm ViT checkpoints (learned positions) as a `ViTEncoder`, and the timm layout MAE shares.

timm's `VisionTransformer` state dict: `patch_embed.proj`, an optional
`cls_token`, a learned `pos_embed`, pre-norm `blocks.i` with a fused
`attn.qkv`, a final `norm` and a classifier `head`. That is `ViTEncoder`
with `position_embedding="learned"`:

| timm | `ViTEncoder` |
|---|---|
| `patch_embed.proj.weight` `(D, C, p, p)` | `patch_embedding/projection/kernel` `(p, p, C, D)` |
| `pos_embed` `(1, [1 +] N, D)`, patch rows | `position_embedding/embeddings` `(N, D)` |
| `cls_token` `(1, 1, D)` + `pos_embed` row 0 | `class_token/token` (the class position is a constant: folded in) |
| `blocks.i.norm1`, `norm2` | `self_attention_layer_norm`, `feedforward_layer_norm` |
| `blocks.i.attn.qkv.weight` `(3D, D)` | `query` / `key` / `value` kernels `(D, H, D/H)` |
| `blocks.i.attn.proj` | `attention_output` kernel `(H, D/H, D)` |
| `blocks.i.mlp.fc1`, `fc2` | `feedforward_intermediate_dense`, `feedforward_output_dense` |
| `norm_pre` (CLIP-style towers) | `pre_norm` (`ViTEncoder(pre_norm=True)`) |
| `norm` | `final_norm` |

The classifier (`head.*`) is reported and left out: the tower is what CLIP
and MAE-CLIP start from. What `ViTEncoder` cannot compute is refused by
name rather than dropped: `fc_norm` (average-pooled models), register
tokens, layer scale. timm's CLIP-style ViTs use QuickGELU for OpenAI weights
and LayerNorm epsilon 1e-5: pass `activation="quick_gelu"`,
`layer_norm_epsilon=1e-5` (the state dict does not say). Weights
are read from local files only, never unpickled
(`read_torch_state_dict`: `torch.load(weights_only=True)`; a safetensors
file can be passed as `safetensors.numpy.load_file(path)`).
"""

import re

import numpy as np

__all__ = ["TIMM_HEADS", "load_timm_weights", "read_torch_state_dict", "vit_encoder_from_timm"]

# timm's ViT sizes: width → heads (Ti, S, B, L, H). The head count is not
# in a fused-qkv state dict.
TIMM_HEADS = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16}
_BLOCK = re.compile(r"^blocks\.(\d+)\.")
_HEAD = ("head.",)


def read_torch_state_dict(path):
    """A PyTorch checkpoint's state dict as float32 NumPy arrays (CPU, weights only).

    Accepts `{"model": state_dict}` files (MAE's) and bare state dicts
    (timm's); uses `torch.load(..., weights_only=True)`, so no pickled code
    runs.

    Args:
        path: str, a `.pth` / `.pt` / `.bin` file.

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


def require(state, name, shape=None, source="timm"):
    """`state[name]` as float32, or an error naming the key (and the shape expected)."""
    if name not in state:
        raise ValueError(f"{source} state dict: no {name!r}; is this a timm-layout ViT encoder?")
    value = np.asarray(state[name], dtype="float32")
    if shape is not None and value.shape != tuple(shape):
        raise ValueError(f"{source} state dict: {name!r} has shape {value.shape}, expected {tuple(shape)}.")
    return value


def architecture(state, source="timm"):
    """Width, channels, patch size, depth, MLP ratio, class token and grid of a timm-layout dict."""
    kernel = require(state, "patch_embed.proj.weight", source=source)
    width, channels, patch_size, _ = kernel.shape
    blocks = {int(m.group(1)) for m in map(_BLOCK.match, state) if m}
    if blocks != set(range(len(blocks))) or not blocks:
        raise ValueError(f"{source} state dict: blocks {sorted(blocks)[:5]}… are not 0..L-1.")
    class_token = "cls_token" in state
    positions = require(state, "pos_embed", source=source)
    prefix = positions.shape[1] - int(round((positions.shape[1] - 1) ** 0.5)) ** 2 if class_token else 0
    grid = int(round((positions.shape[1] - prefix) ** 0.5))
    if prefix not in (0, 1) or positions.shape != (1, prefix + grid * grid, width):
        raise ValueError(
            f"{source} state dict: pos_embed {positions.shape} is not (1, [1 +] grid², {width})."
        )
    mlp = require(state, "blocks.0.mlp.fc1.weight", source=source).shape[0]
    return dict(width=width, channels=channels, patch_size=patch_size, num_layers=len(blocks),
                grid=grid, mlp_ratio=mlp / width, class_token=class_token, class_position=prefix == 1,
                pre_norm="norm_pre.weight" in state)


def heads_for(width, num_heads, known, source):
    """`num_heads`, else the known count for the width (a fused qkv does not store it)."""
    if num_heads is not None:
        return num_heads
    if width not in known:
        raise ValueError(f"num_heads: width {width} is not one of {source} ({known}); pass num_heads.")
    return known[width]


def check_fits(encoder, arch, source):
    """A clear error when the encoder's shape is not the checkpoint's."""
    mismatch = {k: (getattr(encoder, a), arch[k]) for k, a in
                (("width", "hidden_dim"), ("num_layers", "num_layers"), ("patch_size", "patch_size"),
                 ("channels", "num_channels"), ("class_token", "use_class_token"),
                 ("pre_norm", "use_pre_norm"))
                if getattr(encoder, a) != arch[k]}
    if mismatch:
        raise ValueError(
            f"load_{source.lower()}_weights: the encoder and the checkpoint differ in {mismatch} "
            "(encoder, checkpoint)."
        )


def _assign(variable, value, name):
    if tuple(variable.shape) != value.shape:
        raise ValueError(f"{name}: shape {value.shape} does not fit {variable.path} {tuple(variable.shape)}.")
    variable.assign(value.astype(variable.dtype))


def _by_suffix(layer):
    return {"/".join(v.path.split("/")[-2:]): v for v in layer.weights}


def load_vit_layout(encoder, take, class_token=None):
    """Patch embedding, blocks and final norm of a timm-layout dict into `encoder`.

    Args:
        encoder: a `ViTEncoder` of the checkpoint's shape.
        take: callable `(name, shape=None) -> array` that records the name.
        class_token: `(1, 1, D)` array for the class token (position
            folded in), or `None` when the encoder has none.
    """
    width, heads = encoder.hidden_dim, encoder.num_heads
    head_dim = width // heads
    patch = _by_suffix(encoder.patch_embedding)
    _assign(patch["projection/kernel"], take("patch_embed.proj.weight").transpose(2, 3, 1, 0), "patch_embed.proj.weight")
    _assign(patch["projection/bias"], take("patch_embed.proj.bias", (width,)), "patch_embed.proj.bias")
    if class_token is not None:
        _assign(encoder.class_token.weights[0], class_token, "cls_token")
    if encoder.pre_norm is not None:
        norm = _by_suffix(encoder.pre_norm)
        _assign(norm["pre_norm/gamma"], take("norm_pre.weight", (width,)), "norm_pre.weight")
        _assign(norm["pre_norm/beta"], take("norm_pre.bias", (width,)), "norm_pre.bias")
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


def taker(state, source):
    """`(take, used)`: a `take(name, shape=None)` for `load_vit_layout` and the names it took."""
    used = set()

    def take(name, shape=None):
        used.add(name)
        return require(state, name, shape, source)

    return take, used


def vit_encoder_from_timm(state_dict, image_size=None, num_heads=None, **kwargs):
    """A `ViTEncoder` holding a timm ViT (learned positions).

    Args:
        state_dict: dict name → array (`read_torch_state_dict(path)`, or
            `safetensors.numpy.load_file(path)`), timm's `VisionTransformer`
            layout (`vit_*_patch*`, `deit_*`, ...).
        image_size: int or `None` (the checkpoint's). Another multiple of
            the patch size resamples the patch positions bicubically (timm's
            `resample_abs_pos_embed`; the class position kept).
        num_heads: int or `None`: timm's for the width (192 → 3, 384 → 6,
            768 → 12, 1024 → 16, 1280 → 16); needed for other widths.
        **kwargs: further `ViTEncoder` arguments: `activation=`,
            `layer_norm_epsilon=` where the checkpoint differs from timm's
            defaults (GELU, 1e-6), `dtype`, `name`.

    Returns:
        A built `ViTEncoder` (`position_embedding="learned"`, a class token
        and `pre_norm` when the checkpoint has them) with the weights loaded.

    Example:
    >>> state = read_torch_state_dict("vit_small_patch16_224.bin")  # doctest: +SKIP
    >>> encoder = vit_encoder_from_timm(state, image_size=128)     # doctest: +SKIP
    """
    from keras_maeclip.models.vit_encoder import ViTEncoder

    arch = architecture(state_dict)
    native = arch["grid"] * arch["patch_size"]
    encoder = ViTEncoder(
        image_size=native, patch_size=arch["patch_size"], hidden_dim=arch["width"],
        num_layers=arch["num_layers"], num_heads=heads_for(arch["width"], num_heads, TIMM_HEADS, "timm's ViTs"),
        mlp_ratio=arch["mlp_ratio"], num_channels=arch["channels"], use_class_token=arch["class_token"],
        position_embedding="learned", pre_norm=arch["pre_norm"], **kwargs,
    )
    load_timm_weights(encoder, state_dict)
    if image_size and image_size != native:
        from keras_maeclip.models.resolution import with_image_size

        encoder = with_image_size(encoder, image_size)
    return encoder


def load_timm_weights(encoder, state_dict):
    """Load a timm ViT's weights into a `ViTEncoder` with learned positions (in place).

    Args:
        encoder: a `ViTEncoder(position_embedding="learned")` of the
            checkpoint's width, depth, patch size, grid and class token.
        state_dict: dict name → array.

    Returns:
        dict with `loaded` (names used) and `ignored` (the classifier
        head), so a caller can see nothing was dropped silently.

    Raises:
        ValueError: a shape that does not fit, or a parameter the encoder
            cannot compute (named: `fc_norm`, `reg_token`, ...).
    """
    arch = architecture(state_dict)
    check_fits(encoder, arch, "timm")
    if encoder.position_embedding != "learned":
        raise ValueError(
            "load_timm_weights: timm's positions are learned; build the ViTEncoder with "
            "position_embedding='learned' (vit_encoder_from_timm does)."
        )
    if encoder.grid_size != arch["grid"]:
        raise ValueError(
            f"load_timm_weights: the encoder's grid is {encoder.grid_size}², the checkpoint's "
            f"{arch['grid']}²; load at the checkpoint's image_size, then change it "
            "(vit_encoder_from_timm(..., image_size=) does)."
        )
    if "patch_embed.proj.bias" not in state_dict:  # CLIP-style towers' patch conv has no bias
        width = arch["width"]
        state_dict = dict(state_dict, **{"patch_embed.proj.bias": np.zeros(width, "float32")})
    take, used = taker(state_dict, "timm")
    positions = take("pos_embed")[0]
    lead = 1 if arch["class_position"] else 0
    class_token = None
    if arch["class_token"]:
        class_token = take("cls_token", (1, 1, encoder.hidden_dim))
        if lead:
            class_token = class_token + positions[None, :1]  # a constant: one token
    load_vit_layout(encoder, take, class_token)
    _assign(encoder.position_encoding.weights[0], positions[lead:], "pos_embed")
    return loading_report(state_dict, used, _HEAD, lambda n, names: (
        f"load_timm_weights: {n} parameter(s) this encoder cannot compute, e.g. {names} (fc_norm, "
        "register tokens and layer scale are not ViTEncoder options yet); this checkpoint would "
        "load wrong, so it is refused."))


def loading_report(state_dict, used, left_out, refusal):
    """`{"loaded", "ignored"}` names, or a ValueError for names neither used nor `left_out` prefixes.

    Args:
        state_dict: the converted dict.
        used: the names the loader took.
        left_out: tuple of prefixes that are known and deliberately not
            loaded (a classifier head, MAE's decoder).
        refusal: callable `(count, first names) -> message` for the error.
    """
    ignored = sorted(set(state_dict) - used)
    unknown = [name for name in ignored if not name.startswith(left_out)]
    if unknown:
        raise ValueError(refusal(len(unknown), unknown[:3]))
    return {"loaded": sorted(used), "ignored": ignored}
