"""Change the image size of a built or trained model, carrying its weights over.

Fixed 2-D sin-cos tables are computed from the config (never saved), so they
simply follow the new patch grid. Learned position tables (a keras-hub
`ViTBackbone` tower's) are resampled bicubically on the patch grid, the class
token's row kept as it is. Decoders follow the new grid; the preprocessor's
image converter resizes to the new size.

This is weight surgery done once, outside any model graph, in NumPy.
"""

import numpy as np

import keras


def cubic_resize_matrix(size_in, size_out, a=-0.75):
    """`(size_out, size_in)` matrix of 1-D bicubic interpolation.

    Half-pixel centres (`align_corners=False`), Keys' cubic kernel with
    `a = -0.75` and edge samples clamped: the convention of
    `torch.nn.functional.interpolate(mode="bicubic")`, used by timm and
    open_clip to resample position embeddings.

    Example:
    >>> cubic_resize_matrix(4, 4).round(6).tolist() == np.eye(4).tolist()
    True
    """

    def kernel(x):
        x = np.abs(x)
        return np.where(
            x <= 1, ((a + 2) * x - (a + 3)) * x * x + 1,
            np.where(x < 2, (((x - 5) * x + 8) * x - 4) * a, 0.0),
        )

    matrix = np.zeros((size_out, size_in), np.float64)
    scale = size_in / size_out
    for i in range(size_out):
        source = (i + 0.5) * scale - 0.5
        base = int(np.floor(source))
        t = source - base
        for k in range(-1, 3):
            matrix[i, min(max(base + k, 0), size_in - 1)] += kernel(t - k)
    return matrix


def resample_positions(table, new_grid, num_prefix_tokens=0):
    """Resample a learned `(prefix + g·g, width)` position table to a new grid.

    Args:
        table: array `(num_prefix_tokens + grid², width)` or with a leading 1;
            patches row by row after the prefix (class) tokens.
        new_grid: int, the new grid side.
        num_prefix_tokens: int, rows kept unchanged at the front (1 for a
            class token).

    Returns:
        NumPy array `(num_prefix_tokens + new_grid², width)` (leading 1 kept).

    References: timm `layers/pos_embed.py` (`resample_abs_pos_embed`).
    """
    table = np.asarray(table)
    lead = table.ndim == 3
    rows = table[0] if lead else table
    prefix, patches = rows[:num_prefix_tokens], rows[num_prefix_tokens:]
    grid = int(round(patches.shape[0] ** 0.5))
    if grid * grid != patches.shape[0]:
        raise ValueError(
            f"A position table of {patches.shape[0]} patch rows is not a square grid "
            f"(num_prefix_tokens={num_prefix_tokens})."
        )
    grid_rows = patches.reshape(grid, grid, -1).astype(np.float64)
    m = cubic_resize_matrix(grid, new_grid)
    resized = np.einsum("ih,hwc,jw->ijc", m, grid_rows, m).reshape(new_grid * new_grid, -1)
    out = np.concatenate([prefix.astype(np.float64), resized], axis=0).astype(table.dtype)
    return out[None] if lead else out


def _resize_config(node, image_size):
    """Rewrite every image size / patch grid in a serialised object tree."""
    if isinstance(node, list):
        return [_resize_config(item, image_size) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _resize_config(value, image_size) for key, value in node.items()}
    config = node.get("config")
    if not isinstance(config, dict) or "class_name" not in node:
        return node
    patch = _sequence(config.get("patch_size"))
    patch = patch[0] if patch else config.get("patch_size")
    if isinstance(config.get("image_size"), int) and patch:
        _check_grid(node["class_name"], image_size, patch)
        config["image_size"] = image_size
    elif _sequence(config.get("image_size")):  # ImageConverter: (height, width)
        config["image_size"] = [image_size, image_size]
    shape = _sequence(config.get("image_shape"))
    if shape and patch:  # keras-hub ViTBackbone: (height, width, channels)
        _check_grid(node["class_name"], image_size, patch)
        config["image_shape"] = [image_size, image_size] + list(shape[2:])
    if "num_patches" in config and patch:  # CrossModalDecoder
        _check_grid(node["class_name"], image_size, patch)
        config["num_patches"] = (image_size // patch) ** 2
    return node


def _sequence(value):
    """A list from a list, tuple or Keras-serialised tuple; else `None`."""
    if isinstance(value, dict) and value.get("class_name") == "__tuple__":
        value = value["config"]["value"]
    return list(value) if isinstance(value, (list, tuple)) else None


def _check_grid(owner, image_size, patch_size):
    if image_size % patch_size:
        raise ValueError(
            f"image_size={image_size} is not a multiple of {owner}'s patch_size="
            f"{patch_size}; pick a multiple of {patch_size}."
        )


def with_image_size(model, image_size):
    """A copy of `model` for `image_size`² images, with the trained weights.

    Works on any task or backbone of this library (CLIP, MAE-CLIP, MAE, M3AE,
    their backbones and towers, keras-hub ViT towers): every image size in
    the config follows (towers, decoders' patch grids, the preprocessor's
    image converter), fixed sin-cos tables are recomputed for the new grid,
    and learned position tables are resampled bicubically with the class
    token's row kept (`resample_positions`). Every other weight is copied.
    The copy is compiled with the defaults, as after `from_preset`.

    Args:
        model: a built model.
        image_size: int, the new image side; a multiple of the patch size.

    Returns:
        A new model of the same class.

    Example:
    >>> from keras_maeclip.models import ViTEncoder
    >>> vit = ViTEncoder(image_size=32, patch_size=8, hidden_dim=32,
    ...                  num_layers=1, num_heads=4)
    >>> with_image_size(vit, 64).num_patches
    64

    References: Touvron et al. 2019 (FixRes); timm `resample_abs_pos_embed`;
    open_clip `resize_pos_embed`.
    """
    image_size = int(image_size)
    if image_size <= 0:
        raise ValueError(f"image_size must be positive; got {image_size}.")
    config = _resize_config(keras.saving.serialize_keras_object(model), image_size)
    new = keras.saving.deserialize_keras_object(config)
    old_vars, new_vars = model.weights, new.weights
    if len(old_vars) != len(new_vars):
        raise ValueError(
            f"{type(model).__name__} at image_size={image_size} has {len(new_vars)} "
            f"weights, the original {len(old_vars)}; cannot carry them over."
        )
    for old, fresh in zip(old_vars, new_vars):
        if old.name != fresh.name:
            raise ValueError(f"Weight order differs: {old.path} vs {fresh.path}.")
        value = keras.ops.convert_to_numpy(old)
        if tuple(old.shape) != tuple(fresh.shape):
            value = _resample_like(old, value, tuple(fresh.shape))
        fresh.assign(value)
    # A tokenizer's vocabulary is an asset, not config: share the loaded one.
    old_pre, new_pre = getattr(model, "preprocessor", None), getattr(new, "preprocessor", None)
    if getattr(old_pre, "tokenizer", None) is not None and new_pre is not None:
        new_pre.tokenizer = old_pre.tokenizer
    return new


def load_at_image_size(load, preset, load_weights=True, **kwargs):
    """`load(preset, load_weights, **kwargs)`, then `with_image_size` for an `image_size=` kwarg.

    A saved preset loads at its own size first (its weights fit), then
    moves to the asked size. The `from_preset` of every saved model of this
    library goes through here.

    Args:
        load: a keras-hub `from_preset` (bound, e.g. `super().from_preset`).
        preset: str, a preset directory or handle.
        load_weights: bool.
        **kwargs: the loader's arguments, plus `image_size=` (optional).
    """
    image_size = kwargs.pop("image_size", None)
    model = load(preset, load_weights=load_weights, **kwargs)
    return with_image_size(model, image_size) if image_size else model


def _resample_like(variable, value, shape):
    """A learned position table resampled to `shape`, or a clear error."""
    rows_old = value.shape[-2] if value.ndim >= 2 else None
    rows_new = shape[-2] if len(shape) >= 2 else None
    if rows_old is not None and value.shape[-1] == shape[-1] and value.ndim == len(shape):
        for prefix in (0, 1):
            old_grid = (rows_old - prefix) ** 0.5
            new_grid = (rows_new - prefix) ** 0.5
            if old_grid.is_integer() and new_grid.is_integer() and rows_old > prefix:
                return resample_positions(value, int(new_grid), prefix)
    raise ValueError(
        f"Weight {variable.path} has shape {tuple(value.shape)} but {shape} at the new "
        "image size, and is not a square grid of positions."
    )
