"""A NumPy forward of timm's `VisionTransformer` (and MAE's encoder, its special case).

Written from timm's code paths (`PatchEmbed`, `_pos_embed`, `Block`),
independently of the library: a stride-p convolution with a `(D, C, p, p)`
kernel; positions added to the patches, the class token (when there is one)
prepended with `pos_embed` row 0 added when the table has a class row
(timm's default) or with no position (`no_embed_class`); pre-norm blocks
with a fused qkv projection split into heads, exact (erf) GELU, LayerNorm
epsilon 1e-6; the final norm. Float64 throughout.
"""

import math

import numpy as np


def layer_norm(x, gamma, beta, eps=1e-6):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def gelu(x):
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def quick_gelu(x):
    return x / (1.0 + np.exp(-1.702 * x))


def attention(h, qkv_weight, qkv_bias, out_weight, out_bias, heads):
    """Multi-head self-attention with a fused (q; k; v) row-stacked projection, torch Linear layout."""
    batch, _, width = h.shape
    head_dim = width // heads
    qkv = (h @ qkv_weight.T + qkv_bias).reshape(batch, -1, 3, heads, head_dim)
    q, k, v = (qkv[:, :, j].transpose(0, 2, 1, 3) for j in range(3))
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(head_dim)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return (weights @ v).transpose(0, 2, 1, 3).reshape(batch, -1, width) @ out_weight.T + out_bias


def patch_embed(images, kernel, patch):
    """A stride-p convolution with a torch `(D, C, p, p)` kernel on NHWC images, no bias."""
    batch, size, _, channels = images.shape
    grid = size // patch
    patches = images.reshape(batch, grid, patch, grid, patch, channels).astype(np.float64)
    # (D, C, p, p) kernel against (row-in-patch i, column j, channel c).
    return np.einsum("bgihjc,dcij->bghd", patches, kernel).reshape(batch, grid * grid, kernel.shape[0])


def random_vit_state(width, heads, layers, patch, size, channels, seed=0, class_token=True,
                     class_position=True, positions=None, pre_norm=False):
    """A random timm-layout state dict; `positions` overrides `pos_embed` (else random)."""
    rng = np.random.default_rng(seed)

    def normal(*shape, scale=0.2):
        return (rng.normal(size=shape) * scale).astype("float32")

    grid = size // patch
    rows = grid * grid + (1 if class_token and class_position else 0)
    state = {
        "pos_embed": normal(1, rows, width) if positions is None else positions,
        "patch_embed.proj.weight": normal(width, channels, patch, patch),
        "patch_embed.proj.bias": normal(width),
        "norm.weight": 1 + normal(width),
        "norm.bias": normal(width),
    }
    if class_token:
        state["cls_token"] = normal(1, 1, width)
    if pre_norm:
        state.update({"norm_pre.weight": 1 + normal(width), "norm_pre.bias": normal(width)})
    for i in range(layers):
        b = f"blocks.{i}."
        state.update({
            b + "norm1.weight": 1 + normal(width), b + "norm1.bias": normal(width),
            b + "attn.qkv.weight": normal(3 * width, width), b + "attn.qkv.bias": normal(3 * width),
            b + "attn.proj.weight": normal(width, width), b + "attn.proj.bias": normal(width),
            b + "norm2.weight": 1 + normal(width), b + "norm2.bias": normal(width),
            b + "mlp.fc1.weight": normal(4 * width, width), b + "mlp.fc1.bias": normal(4 * width),
            b + "mlp.fc2.weight": normal(width, 4 * width), b + "mlp.fc2.bias": normal(width),
        })
    return state


def numpy_vit(state, images, patch, heads, act=gelu, eps=1e-6):
    """timm's `forward_features` on NHWC images: `(batch, [1 +] patches, width)`."""
    s = {k: v.astype(np.float64) for k, v in state.items()}
    batch, size = images.shape[:2]
    width = s["patch_embed.proj.weight"].shape[0]
    grid = size // patch
    # CLIP-style towers' patch convolution has no bias.
    x = patch_embed(images, s["patch_embed.proj.weight"], patch) + s.get("patch_embed.proj.bias", 0.0)
    table = s["pos_embed"]
    lead = table.shape[1] - grid * grid
    x = x + table[:, lead:]
    if "cls_token" in s:
        cls = s["cls_token"] + (table[:, :1] if lead else 0.0)
        x = np.concatenate([np.broadcast_to(cls, (batch, 1, width)), x], axis=1)
    if "norm_pre.weight" in s:
        x = layer_norm(x, s["norm_pre.weight"], s["norm_pre.bias"], eps)
    layers = len({k.split(".")[1] for k in s if k.startswith("blocks.")})
    for i in range(layers):
        b = f"blocks.{i}."
        h = layer_norm(x, s[b + "norm1.weight"], s[b + "norm1.bias"], eps)
        x = x + attention(h, s[b + "attn.qkv.weight"], s[b + "attn.qkv.bias"],
                          s[b + "attn.proj.weight"], s[b + "attn.proj.bias"], heads)
        h = layer_norm(x, s[b + "norm2.weight"], s[b + "norm2.bias"], eps)
        h = act(h @ s[b + "mlp.fc1.weight"].T + s[b + "mlp.fc1.bias"])
        x = x + h @ s[b + "mlp.fc2.weight"].T + s[b + "mlp.fc2.bias"]
    return layer_norm(x, s["norm.weight"], s["norm.bias"], eps)


def numpy_open_clip_image(state, images, patch, heads, act=gelu):
    """open_clip's `VisionTransformer.forward` (token pooling), from its own names: `(batch, E)`."""
    s = {k: v.astype(np.float64) for k, v in state.items()}
    batch = images.shape[0]
    x = patch_embed(images, s["conv1.weight"], patch)  # conv1 has no bias
    cls = np.broadcast_to(s["class_embedding"], (batch, 1, x.shape[-1]))
    x = np.concatenate([cls, x], axis=1) + s["positional_embedding"]
    x = layer_norm(x, s["ln_pre.weight"], s["ln_pre.bias"], 1e-5)
    layers = len({k.split(".")[2] for k in s if k.startswith("transformer.resblocks.")})
    for i in range(layers):
        b = f"transformer.resblocks.{i}."
        h = layer_norm(x, s[b + "ln_1.weight"], s[b + "ln_1.bias"], 1e-5)
        x = x + attention(h, s[b + "attn.in_proj_weight"], s[b + "attn.in_proj_bias"],
                          s[b + "attn.out_proj.weight"], s[b + "attn.out_proj.bias"], heads)
        h = layer_norm(x, s[b + "ln_2.weight"], s[b + "ln_2.bias"], 1e-5)
        h = act(h @ s[b + "mlp.c_fc.weight"].T + s[b + "mlp.c_fc.bias"])
        x = x + h @ s[b + "mlp.c_proj.weight"].T + s[b + "mlp.c_proj.bias"]
    pooled = layer_norm(x, s["ln_post.weight"], s["ln_post.bias"], 1e-5)[:, 0]
    return pooled @ s["proj"]
