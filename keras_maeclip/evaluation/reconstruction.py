"""Pictures of what a masked model reconstructs: arrays and a PNG grid.

Works with any masked model that follows the library's contract (`MAE`, and
`M3AE` / `MAECLIP` with the same interface): `model(inputs, training=False)`
on a dict of preprocessed inputs returns `"pixels"` `(batch, num_patches,
p²·C)` and `"image_mask"` `(batch, num_patches)`, 1 = masked; the model has
`patch_size` and `norm_pix_loss` attributes. This is evaluation code: the
model's outputs are turned into NumPy arrays and everything else is NumPy.
"""

import os

import keras
import numpy as np

from keras_maeclip.models.preprocessor import IMAGENET_MEAN, IMAGENET_STD

# Added to the per-patch variance, as in `losses.reconstruction.patch_targets`.
NORM_PIX_EPSILON = 1e-6
# Value, in [0, 1] display space, painted over masked patches.
MASK_GREY = 0.5
# Tiles are upscaled by an integer factor (nearest neighbour) to at least
# this many pixels per side, so 16² or 32² images stay readable.
MIN_TILE_SIZE = 96
# Grid geometry, in output pixels: gap around and between tiles, and the
# height of one line of text (PIL's default font is about 11 px tall).
TILE_GAP = 4
LINE_HEIGHT = 14
# Column labels, two lines each so every label fits a 96-px tile.
COLUMN_LABELS = (
    ("original", ""),
    ("masked", ""),
    ("reconstruction", ""),
    ("reconstruction", "+ visible"),
)
OUTPUT_KEYS = ("pixels", "image_mask")


def reconstruct(model, inputs, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """Run a masked model and return displayable images in [0, 1].

    The model predicts every patch's pixels. With `model.norm_pix_loss` on,
    those predictions are per-patch normalised (the training target is each
    patch standardised by its own mean and unbiased standard deviation), and
    a masked patch's own statistics are hidden from the model. To display
    them, each image's predictions are un-normalised with the statistics of
    that image's VISIBLE patches: `prediction * s + m`, where `m` is the mean
    over visible patches of their per-patch means and `s` the mean over
    visible patches of their per-patch standard deviations
    `sqrt(var + 1e-6)` (unbiased variance over the patch's p²·C values, as in
    `patch_targets`). This is an approximation: a masked patch's true
    brightness and contrast may differ from its visible neighbours'. An image
    with no visible patch gets `m = 0`, `s = 1` (the dataset statistics, in
    the normalised space). Statistics are computed on the model's inputs
    (the ImageNet-normalised images), where the targets live; afterwards the
    ImageNet normalisation is undone and values are clipped to [0, 1].

    Args:
        model: a masked model (`MAE`, `M3AE`, `MAECLIP`) whose call returns
            `"pixels"` and `"image_mask"`, with `patch_size` and
            `norm_pix_loss` attributes.
        inputs: dict of preprocessed model inputs; `"images"` is
            `(batch, S, S, 3)`, normalised as `(pixel / 255 - mean) / std`.
            Other keys (e.g. `"token_ids"`) are passed to the model as-is.
        mean: per-channel mean of [0, 1] pixels used by the preprocessor,
            defaults to `IMAGENET_MEAN`.
        std: per-channel standard deviation, defaults to `IMAGENET_STD`.

    Returns:
        dict of float32 NumPy arrays: `original`, `masked` (masked patches
        painted grey, 0.5), `reconstruction` (the prediction for every
        patch) and `pasted` (visible patches from the original, masked
        patches from the prediction, as MAE's visualisation), each
        `(batch, S, S, 3)` in [0, 1]; and `image_mask` `(batch, num_patches)`,
        1.0 = masked.

    Example:
    >>> model = MAE.from_preset("mae_tiny")
    >>> out = reconstruct(model, {"images": np.zeros((2, 32, 32, 3), "float32")})
    >>> out["pasted"].shape, out["image_mask"].shape
    ((2, 32, 32, 3), (2, 64))

    References: He et al. 2022 (MAE) Fig. 2-3 and `demo/mae_visualize.ipynb`.
    """
    images = _check_inputs(inputs)
    patch_size = _model_attribute(model, "patch_size")
    norm_pix_loss = bool(_model_attribute(model, "norm_pix_loss"))
    size, channels = images.shape[1], images.shape[3]
    if size % int(patch_size):
        raise ValueError(
            f"reconstruct: image size {size} is not divisible by the model's "
            f"patch_size={patch_size}; preprocess the images to the model's "
            "image size."
        )
    mean, std = _channel_statistics(mean, std, channels)
    pixels, mask = _model_outputs(model, inputs, images.shape, int(patch_size))

    patches = _patchify(images, patch_size)
    if norm_pix_loss:
        patch_mean, patch_std = visible_patch_statistics(patches, mask)
        pixels = pixels * patch_std[:, None, None] + patch_mean[:, None, None]
    pasted = np.where(mask[..., None], pixels, patches)

    def to_display(p):
        x = _unpatchify(p, patch_size, size, channels)
        return np.clip(x * std + mean, 0.0, 1.0).astype(np.float32)

    original = to_display(patches)
    flags = np.broadcast_to(mask[..., None], patches.shape)
    covered = _unpatchify(flags, patch_size, size, channels)
    masked = np.where(covered, np.float32(MASK_GREY), original)
    return {
        "original": original,
        "masked": masked,
        "reconstruction": to_display(pixels),
        "pasted": to_display(pasted),
        "image_mask": mask.astype(np.float32),
    }


def visible_patch_statistics(patches, mask, epsilon=NORM_PIX_EPSILON):
    """Per image, the average mean and standard deviation of visible patches.

    Args:
        patches: float array `(batch, num_patches, p²·C)` of the model's
            (normalised) input pixels, in `patchify` order.
        mask: bool array `(batch, num_patches)`, True = masked.
        epsilon: float added to each patch's variance, defaults to `1e-6`.

    Returns:
        Two float64 arrays `(batch,)`: the mean over visible patches of each
        patch's mean, and the mean over visible patches of each patch's
        `sqrt(unbiased variance + epsilon)`. Images with no visible patch
        get 0 and 1.

    Example:
    >>> p = np.stack([np.zeros(4), np.arange(4.0)])[None]  # 1 image, 2 patches
    >>> m, s = visible_patch_statistics(p, np.array([[False, True]]))
    >>> float(m[0]), round(float(s[0]), 4)
    (0.0, 0.001)
    """
    patches = np.asarray(patches, np.float64)
    visible = ~np.asarray(mask, bool)
    per_mean = patches.mean(axis=-1)
    var = ((patches - per_mean[..., None]) ** 2).sum(axis=-1) / (patches.shape[-1] - 1)
    per_std = np.sqrt(var + epsilon)
    count = visible.sum(axis=-1)
    safe = np.maximum(count, 1)
    mean = np.where(count > 0, (per_mean * visible).sum(axis=-1) / safe, 0.0)
    std = np.where(count > 0, (per_std * visible).sum(axis=-1) / safe, 1.0)
    return mean, std


def save_reconstruction_grid(
    model,
    inputs,
    path,
    max_images=8,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    title=None,
):
    """Write a PNG grid: original | masked | reconstruction | + visible.

    One row per image (the first `max_images` of the batch). Tiles are
    upscaled by an integer factor with nearest neighbour to at least
    `MIN_TILE_SIZE` (96) pixels. A header names the columns; a caption at
    the bottom gives the mask ratio seen and, with `norm_pix_loss`, says
    that masked patches were un-normalised with the visible patches' mean
    and std (an approximation, see `reconstruct`). An optional `title` goes
    on top. Needs Pillow.

    Args:
        model: a masked model, as for `reconstruct`.
        inputs: dict of preprocessed model inputs with `"images"`.
        path: str or path-like ending in `.png`; parent folders are created.
        max_images: int, rows drawn, defaults to `8`.
        mean: per-channel mean of the preprocessing, defaults to
            `IMAGENET_MEAN`.
        std: per-channel standard deviation, defaults to `IMAGENET_STD`.
        title: optional str printed above the grid.

    Returns:
        str, the path written.

    Example:
    >>> model = MAE.from_preset("mae_tiny")
    >>> save_reconstruction_grid(
    ...     model, {"images": np.zeros((2, 32, 32, 3), "float32")}, "grid.png")
    'grid.png'

    References: He et al. 2022 (MAE) Fig. 2-3.
    """
    try:
        from PIL import Image, ImageDraw
    except ImportError as error:
        raise ImportError(
            "save_reconstruction_grid draws with Pillow, which is not "
            "installed; install it with `pip install pillow`."
        ) from error
    path = os.fspath(path)
    if not path.lower().endswith(".png"):
        raise ValueError(
            f"save_reconstruction_grid writes PNG; got path={path!r}. Use a "
            "file name ending in '.png'."
        )
    is_int = isinstance(max_images, (int, np.integer)) and not isinstance(max_images, bool)
    if not is_int or max_images < 1:
        raise ValueError(f"max_images must be a positive integer; got {max_images!r}.")

    _check_inputs(inputs)
    out = reconstruct(model, _first_rows(inputs, int(max_images)), mean, std)
    columns = [out["original"], out["masked"], out["reconstruction"], out["pasted"]]
    rows, size = columns[0].shape[0], columns[0].shape[1]
    scale = -(-MIN_TILE_SIZE // size)  # ceil
    tile = size * scale
    width = len(columns) * tile + (len(columns) + 1) * TILE_GAP

    canvas = Image.new("RGB", (width, 1), "white")
    draw = ImageDraw.Draw(canvas)
    text_width = width - 2 * TILE_GAP
    title_lines = _wrap(draw, title, text_width) if title else []
    caption_lines = []
    for line in _caption(out["image_mask"], bool(model.norm_pix_loss)):
        caption_lines += _wrap(draw, line, text_width)

    header_top = TILE_GAP + len(title_lines) * LINE_HEIGHT
    tiles_top = header_top + len(COLUMN_LABELS[0]) * LINE_HEIGHT
    caption_top = tiles_top + rows * (tile + TILE_GAP)
    height = caption_top + len(caption_lines) * LINE_HEIGHT + TILE_GAP

    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(title_lines):
        draw.text((TILE_GAP, TILE_GAP + i * LINE_HEIGHT), line, fill="black")
    for c, labels in enumerate(COLUMN_LABELS):
        left = TILE_GAP + c * (tile + TILE_GAP)
        for i, label in enumerate(labels):
            x = left + max(0, (tile - draw.textlength(label)) // 2)
            draw.text((x, header_top + i * LINE_HEIGHT), label, fill="black")
    for r in range(rows):
        top = tiles_top + r * (tile + TILE_GAP)
        for c, images in enumerate(columns):
            left = TILE_GAP + c * (tile + TILE_GAP)
            canvas.paste(Image.fromarray(_to_uint8(images[r], scale)), (left, top))
    for i, line in enumerate(caption_lines):
        draw.text((TILE_GAP, caption_top + i * LINE_HEIGHT), line, fill="black")

    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    canvas.save(path, format="PNG")
    return path


def _patchify(images, patch_size):
    """NumPy twin of `layers.patchify` (same MAE patch order).

    Args:
        images: array `(batch, H, W, C)`.
        patch_size: int, divides H and W.

    Returns:
        float64 array `(batch, (H/p)·(W/p), p²·C)`.

    Example:
    >>> _patchify(np.zeros((2, 8, 8, 3)), 4).shape
    (2, 4, 48)
    """
    x = np.asarray(images, np.float64)
    b, h, w, c = x.shape
    p = int(patch_size)
    x = x.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


def _unpatchify(patches, patch_size, image_size, channels=3):
    """NumPy twin of `layers.unpatchify` for square images.

    Args:
        patches: array `(batch, num_patches, p²·C)` in `patchify` order.
        patch_size: int.
        image_size: int, side of the square image.
        channels: int, defaults to `3`.

    Returns:
        array `(batch, image_size, image_size, channels)`.

    Example:
    >>> x = np.random.rand(1, 8, 8, 3)
    >>> bool(np.all(_unpatchify(_patchify(x, 4), 4, 8) == x))
    True
    """
    p, g = int(patch_size), int(image_size) // int(patch_size)
    x = np.asarray(patches).reshape(-1, g, g, p, p, channels).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, g * p, g * p, channels)


def _check_inputs(inputs):
    """The `"images"` of `inputs` as float32 NumPy, after checking them."""
    if not hasattr(inputs, "keys") or "images" not in inputs:
        found = sorted(inputs.keys()) if hasattr(inputs, "keys") else type(inputs).__name__
        raise ValueError(
            "inputs must be a dict of preprocessed model inputs with an "
            f"'images' key; got {found}. Pass e.g. {{'images': x}}."
        )
    images = np.asarray(keras.ops.convert_to_numpy(inputs["images"]), np.float32)
    if images.ndim != 4 or images.shape[1] != images.shape[2] or images.shape[0] == 0:
        raise ValueError(
            "inputs['images'] must be a non-empty batch of square images "
            f"(batch, S, S, 3); got shape {images.shape}."
        )
    return images


def _model_attribute(model, name):
    if getattr(model, name, None) is None:
        raise ValueError(
            f"{type(model).__name__} has no '{name}' attribute; reconstruct "
            "needs a masked model (MAE, M3AE, MAECLIP)."
        )
    return getattr(model, name)


def _channel_statistics(mean, std, channels):
    mean = np.asarray(mean, np.float32).reshape(-1)
    std = np.asarray(std, np.float32).reshape(-1)
    if mean.size not in (1, channels) or std.size not in (1, channels) or np.any(std <= 0):
        raise ValueError(
            f"mean and std must have 1 or {channels} entries (std positive) "
            f"to match the images' channels; got mean={mean.tolist()}, "
            f"std={std.tolist()}."
        )
    return mean, std


def _model_outputs(model, inputs, image_shape, patch_size):
    """`(pixels float64, mask bool)` from one forward pass, shape-checked."""
    name = type(model).__name__
    outputs = model(inputs, training=False)
    if not hasattr(outputs, "keys"):
        raise ValueError(
            f"{name} returned {type(outputs).__name__}, not a dict; "
            f"reconstruct needs a masked model whose outputs hold {OUTPUT_KEYS}."
        )
    for key in OUTPUT_KEYS:
        if key not in outputs:
            raise ValueError(
                f"{name}'s outputs have no '{key}' (got {sorted(outputs.keys())}); "
                "reconstruct needs a masked model returning 'pixels' and "
                "'image_mask' (MAE, M3AE, MAECLIP)."
            )
    pixels = np.asarray(keras.ops.convert_to_numpy(outputs["pixels"]), np.float64)
    mask = np.asarray(keras.ops.convert_to_numpy(outputs["image_mask"])) > 0.5
    batch, size, _, channels = image_shape
    num_patches = (size // patch_size) ** 2
    expected = (batch, num_patches, patch_size * patch_size * channels)
    if pixels.shape != expected or mask.shape != expected[:2]:
        raise ValueError(
            f"{name}'s outputs have pixels {pixels.shape} and image_mask "
            f"{mask.shape}; for images {tuple(image_shape)} and patch_size="
            f"{patch_size} expected {expected} and {expected[:2]}."
        )
    return pixels, mask


def _first_rows(inputs, n):
    """`inputs` with every batch-sized value cut to its first `n` rows."""
    batch = np.shape(keras.ops.convert_to_numpy(inputs["images"]))[0]
    out = {}
    for key, value in inputs.items():
        shape = getattr(value, "shape", None)
        if shape is not None and len(shape) >= 1 and shape[0] == batch:
            value = np.asarray(keras.ops.convert_to_numpy(value))[:n]
        out[key] = value
    return out


def _caption(mask, norm_pix_loss):
    """Caption lines: the mask ratio seen and how predictions were shown."""
    mask = np.asarray(mask) > 0.5
    lines = [
        f"mask ratio seen: {mask.mean():.2f} ({int(mask.sum())} of "
        f"{mask.size} patches, {mask.shape[0]} images)"
    ]
    if norm_pix_loss:
        lines += [
            "norm_pix_loss: masked patches un-normalised with the mean",
            "and std of the visible patches of each image (approximation)",
        ]
    else:
        lines.append("norm_pix_loss off: predicted pixels shown as they are")
    return lines


def _wrap(draw, text, width):
    """Split `text` into lines no wider than `width` pixels in `draw`'s font."""
    lines = []
    for paragraph in str(text).splitlines() or [""]:
        words, line = paragraph.split(" "), ""
        for word in words:
            candidate = f"{line} {word}" if line else word
            if line and draw.textlength(candidate) > width:
                lines.append(line)
                line = word
            else:
                line = candidate
        lines.append(line)
    return lines


def _to_uint8(image, scale):
    """[0, 1] float `(S, S, 3)` → uint8, upscaled `scale`× (nearest neighbour)."""
    pixels = np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
    return np.repeat(np.repeat(pixels, scale, axis=0), scale, axis=1)
