"""Visual grounding: phrase heatmaps over patches, pointing game, IoU, overlays.

A phrase is grounded by comparing its text embedding with every patch's
dense embedding (`dense.patch_embeddings`): the cosine similarity map over
the patch grid is the heatmap. Scoring (`heatmaps_from_embeddings`,
`pointing_game`, `heatmap_iou`) is pure NumPy and independent of models.

References: Weers et al. 2023 §5 (visual grounding; MAX pooling grounds
best); Zhang et al. 2018 (top-down neural attention, the pointing game).
"""

import os

import numpy as np

from keras_maeclip.evaluation.dense import _clip_backbone, patch_embeddings, upsample
from keras_maeclip.evaluation.zero_shot import embed_texts


def heatmaps_from_embeddings(patch_embeddings, text_embeddings):
    """Cosine similarity of each image's patches with that image's text.

    Args:
        patch_embeddings: array `(n, gh, gw, dim)`.
        text_embeddings: array `(n, dim)`, one per image.

    Returns:
        float32 array `(n, gh, gw)` in [-1, 1] (both sides are
        re-normalised, so unnormalised inputs are fine).

    Example:
    >>> patches = np.zeros((1, 2, 2, 3)); patches[0, 1, 0] = [0, 0, 1]
    >>> heatmaps_from_embeddings(patches, np.array([[0, 0, 2.0]]))[0].tolist()
    [[0.0, 0.0], [1.0, 0.0]]
    """
    patches = np.asarray(patch_embeddings, np.float64)
    texts = np.asarray(text_embeddings, np.float64)
    if patches.ndim != 4 or texts.ndim != 2 or len(patches) != len(texts) or (
        patches.shape[-1] != texts.shape[-1]
    ):
        raise ValueError(
            "heatmaps_from_embeddings: patch_embeddings must be (n, gh, gw, dim) "
            f"and text_embeddings (n, dim) with the same n and dim; got "
            f"{patches.shape} and {texts.shape}."
        )
    patches = patches / np.maximum(np.linalg.norm(patches, axis=-1, keepdims=True), 1e-12)
    texts = texts / np.maximum(np.linalg.norm(texts, axis=-1, keepdims=True), 1e-12)
    return np.einsum("nhwd,nd->nhw", patches, texts).astype(np.float32)


def grounding_heatmaps(model, images, phrases, batch_size=256):
    """Heatmaps of one phrase per image over the model's patch grid.

    Args:
        model: a `CLIP` or `MAECLIP` task with a preprocessor.
        images: uint8/float array `(n, H, W, 3)` in [0, 255].
        phrases: list of `n` str, phrase `i` grounded in image `i`.
        batch_size: int, images / prompts per forward pass.

    Returns:
        float32 array `(n, grid, grid)`, cosine similarities.

    References: Weers et al. 2023 §5.
    """
    _clip_backbone(model, "grounding_heatmaps")
    phrases = [str(p) for p in phrases]
    if len(phrases) != len(images):
        raise ValueError(
            f"grounding_heatmaps: {len(images)} images but {len(phrases)} phrases; "
            "pass exactly one phrase per image."
        )
    patches = patch_embeddings(model, images, batch_size)
    texts = embed_texts(model, phrases, batch_size)
    return heatmaps_from_embeddings(patches, texts)


def _heatmaps_and_masks(heatmaps, masks, caller):
    heatmaps = np.asarray(heatmaps, np.float32)
    masks = np.asarray(masks) > 0
    if heatmaps.ndim != 3 or masks.ndim != 3 or len(heatmaps) != len(masks):
        raise ValueError(
            f"{caller}: heatmaps must be (n, gh, gw) and masks (n, H, W) with the "
            f"same n; got {heatmaps.shape} and {masks.shape}."
        )
    return upsample(heatmaps, masks.shape[1:]), masks


def pointing_game(heatmaps, masks):
    """Share of heatmaps whose maximum lands inside the object's mask.

    Each heatmap is upsampled bilinearly (`dense.upsample`) to its mask's
    resolution; the hit test uses the first maximum in row-major order.
    Pairs whose mask is empty are skipped.

    Args:
        heatmaps: array `(n, gh, gw)`.
        masks: bool/0-1 array `(n, H, W)`.

    Returns:
        dict `{"hits": fraction in [0, 1] (NaN when n is 0), "n": pairs
        counted}`.

    Example:
    >>> pointing_game(np.eye(2)[None], np.eye(2)[None])
    {'hits': 1.0, 'n': 1}

    References: Zhang et al. 2018 (pointing game).
    """
    maps, masks = _heatmaps_and_masks(heatmaps, masks, "pointing_game")
    counted = masks.reshape(len(masks), -1).any(axis=1)
    peaks = maps.reshape(len(maps), -1).argmax(axis=1)
    hits = masks.reshape(len(masks), -1)[np.arange(len(masks)), peaks]
    n = int(counted.sum())
    return {"hits": float(hits[counted].mean()) if n else float("nan"), "n": n}


def heatmap_iou(heatmaps, masks, threshold=0.5):
    """Mean IoU of thresholded heatmaps with object masks.

    Each heatmap is upsampled bilinearly to its mask's resolution,
    min-max normalised to [0, 1] per image (a constant map becomes all 0)
    and pixels `>= threshold` form the predicted region. Pairs whose mask
    is empty are skipped.

    Args:
        heatmaps: array `(n, gh, gw)`.
        masks: bool/0-1 array `(n, H, W)`.
        threshold: float in [0, 1], defaults to `0.5`.

    Returns:
        float, mean IoU over the counted pairs (NaN when none).

    Example:
    >>> heatmap_iou(np.array([[[0.0, 1.0]]]), np.array([[[0, 1]]]))
    1.0
    """
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"heatmap_iou: threshold must lie in [0, 1]; got {threshold!r}.")
    maps, masks = _heatmaps_and_masks(heatmaps, masks, "heatmap_iou")
    flat = maps.reshape(len(maps), -1).astype(np.float64)
    low, high = flat.min(axis=1, keepdims=True), flat.max(axis=1, keepdims=True)
    span = high - low
    normalised = np.where(span > 0, (flat - low) / np.where(span > 0, span, 1.0), 0.0)
    predicted = normalised >= float(threshold)
    truth = masks.reshape(len(masks), -1)
    counted = truth.any(axis=1)
    if not counted.any():
        return float("nan")
    inter = (predicted & truth).sum(axis=1)
    union = (predicted | truth).sum(axis=1)
    return float((inter[counted] / union[counted]).mean())


def _decode(value):
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def grounding_examples(data):
    """Images, masks and object names of synthetic examples as NumPy.

    Args:
        data: one of
            - the output of `keras_maeclip.data.synthetic.synthetic_dataset`
              (a `tf.data.Dataset` of per-example dicts; a batched one
              works too);
            - a dict of arrays `{"image": (n, S, S, 3), "masks": (n, m, S, S),
              "object_names": (n, m) str/bytes}`;
            - a list of example dicts (e.g. from `generate_example`).

    Returns:
        `(images uint8 (n, S, S, 3), masks uint8 (n, m, S, S), names list of
        n lists of m str, "" for absent objects)`.
    """
    keys = ("image", "masks", "object_names")
    if hasattr(data, "element_spec"):  # a tf.data.Dataset
        spec = data.element_spec
        if not isinstance(spec, dict) or any(k not in spec for k in keys):
            raise ValueError(
                f"the dataset's elements must be dicts with {keys} (as "
                "synthetic_dataset yields)."
            )
        if spec["image"].shape.rank == 3:
            data = data.batch(256)
        parts = {k: [] for k in keys}
        for batch in data.as_numpy_iterator():
            for k in keys:
                parts[k].append(batch[k])
        data = {k: np.concatenate(v) for k, v in parts.items()}
    elif isinstance(data, (list, tuple)):
        if not data or not all(hasattr(ex, "keys") and all(k in ex for k in keys) for ex in data):
            raise ValueError(f"a list of examples must be non-empty dicts with {keys}.")
        data = {k: np.stack([np.asarray(ex[k]) for ex in data]) for k in keys}
    if not hasattr(data, "keys") or any(k not in data for k in keys):
        raise ValueError(
            f"expected a synthetic_dataset, a dict of arrays or a list of dicts with keys {keys}; "
            f"got {type(data).__name__}."
        )
    images = np.asarray(data["image"])
    masks = np.asarray(data["masks"])
    names = [[_decode(x) for x in row] for row in np.asarray(data["object_names"])]
    if images.ndim != 4 or masks.ndim != 4 or len(images) != len(masks) or len(names) != len(images):
        raise ValueError(
            "image must be (n, S, S, 3), masks (n, m, S, S) and object_names (n, m); got "
            f"{images.shape}, {masks.shape} and {len(names)} rows of names."
        )
    return images, masks, names


def grounding_score(model, data, threshold=0.5, batch_size=256):
    """Pointing game and heatmap IoU on the synthetic set.

    For every present object of every image the phrase is
    `f"the {object_name}."` (e.g. "the red circle."); its heatmap is scored
    against that object's mask. Patch embeddings are computed once per
    image.

    Args:
        model: a `CLIP` or `MAECLIP` task with a preprocessor.
        data: the synthetic examples, see `grounding_examples` (a
            `synthetic_dataset(n, image_size=S)`, a dict of arrays with keys
            image, masks, object_names, or a list of example dicts).
        threshold: float, `heatmap_iou`'s threshold.
        batch_size: int, images / prompts per forward pass.

    Returns:
        dict `{"pointing_game": hits in [0, 1], "grounding_iou": mean IoU,
        "pairs": number of (image, object) pairs}`.

    References: Weers et al. 2023 §5; Zhang et al. 2018.
    """
    _clip_backbone(model, "grounding_score")
    images, masks, names = grounding_examples(data)
    pairs = [(i, k) for i, row in enumerate(names) for k, name in enumerate(row) if name]
    if not pairs:
        raise ValueError("grounding_score: no example has a named object to ground.")
    image_index = np.array([i for i, _ in pairs])
    pair_masks = np.stack([masks[i, k] for i, k in pairs])
    phrases = [f"the {names[i][k]}." for i, k in pairs]
    patches = patch_embeddings(model, images, batch_size)
    texts = embed_texts(model, phrases, batch_size)
    heatmaps = heatmaps_from_embeddings(patches[image_index], texts)
    return {
        "pointing_game": pointing_game(heatmaps, pair_masks)["hits"],
        "grounding_iou": heatmap_iou(heatmaps, pair_masks, threshold),
        "pairs": len(pairs),
    }


def _heat_colours(values):
    """A red → yellow colour map of [0, 1] values, float RGB in [0, 1]."""
    values = np.clip(values, 0.0, 1.0)[..., None]
    return np.concatenate([np.ones_like(values), values, np.zeros_like(values)], axis=-1)


def overlay(image, heatmap, alpha=0.5):
    """One image with its heatmap blended on top as uint8 RGB.

    Args:
        image: array `(H, W, 3)` in [0, 255].
        heatmap: array `(gh, gw)`; upsampled bilinearly to `(H, W)` and
            min-max normalised.
        alpha: float, weight of the colour map.

    Returns:
        uint8 array `(H, W, 3)`.
    """
    image = np.asarray(image, np.float32) / 255.0
    heat = upsample(np.asarray(heatmap, np.float32)[None], image.shape[:2])[0]
    span = heat.max() - heat.min()
    heat = (heat - heat.min()) / span if span > 0 else np.zeros_like(heat)
    blended = (1.0 - alpha) * image + alpha * _heat_colours(heat)
    return np.round(np.clip(blended, 0.0, 1.0) * 255.0).astype(np.uint8)


def save_grounding_overlays(path, images, heatmaps, phrases, columns=4):
    """Write a PNG grid of images with their heatmaps and phrases.

    Each cell shows the image with its heatmap (upsampled, min-max
    normalised, red → yellow) blended at alpha 0.5, upscaled by an integer
    factor (nearest neighbour) to at least `MIN_TILE_SIZE` (96) pixels, with
    its phrase wrapped above it. Layout: `min(columns, n)` columns and
    `ceil(n / columns)` rows; width `cols · tile + (cols + 1) · TILE_GAP`,
    height `TILE_GAP + rows · (lines · LINE_HEIGHT + tile + TILE_GAP)` where
    `lines` is the most title lines any phrase needs. Needs Pillow.

    Args:
        path: str or path-like ending in `.png`; parent folders are created.
        images: uint8/float array `(n, H, W, 3)` in [0, 255].
        heatmaps: array `(n, gh, gw)`, e.g. from `grounding_heatmaps`.
        phrases: list of `n` str.
        columns: int, cells per row, defaults to `4`.

    Returns:
        str, the path written.

    References: Weers et al. 2023 §5 (grounding visualisations).
    """
    from PIL import Image, ImageDraw

    from keras_maeclip.evaluation.reconstruction import (
        LINE_HEIGHT,
        MIN_TILE_SIZE,
        TILE_GAP,
        _wrap,
    )

    path = os.fspath(path)
    if not path.lower().endswith(".png"):
        raise ValueError(f"save_grounding_overlays writes PNG; got path={path!r}. Use a '.png' name.")
    if not isinstance(columns, (int, np.integer)) or isinstance(columns, bool) or columns < 1:
        raise ValueError(f"columns must be a positive integer; got {columns!r}.")
    images = np.asarray(images)
    heatmaps = np.asarray(heatmaps, np.float32)
    phrases = [str(p) for p in phrases]
    if images.ndim != 4 or images.shape[-1] != 3 or len(images) == 0:
        raise ValueError(f"images must be a non-empty (n, H, W, 3) array; got {images.shape}.")
    if heatmaps.ndim != 3 or len(heatmaps) != len(images) or len(phrases) != len(images):
        raise ValueError(
            f"save_grounding_overlays: {len(images)} images need as many (gh, gw) heatmaps "
            f"and phrases; got heatmaps {heatmaps.shape} and {len(phrases)} phrases."
        )
    n, height, width = images.shape[:3]
    cols = min(int(columns), n)
    rows = -(-n // cols)
    scale = -(-MIN_TILE_SIZE // min(height, width))
    tile_h, tile_w = height * scale, width * scale

    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    titles = [_wrap(draw, phrase, tile_w) for phrase in phrases]
    lines = max(len(t) for t in titles)
    row_height = lines * LINE_HEIGHT + tile_h + TILE_GAP
    canvas = Image.new(
        "RGB", (cols * tile_w + (cols + 1) * TILE_GAP, TILE_GAP + rows * row_height), "white"
    )
    draw = ImageDraw.Draw(canvas)
    for index in range(n):
        r, c = divmod(index, cols)
        left = TILE_GAP + c * (tile_w + TILE_GAP)
        top = TILE_GAP + r * row_height
        for i, line in enumerate(titles[index]):
            draw.text((left, top + i * LINE_HEIGHT), line, fill="black")
        cell = overlay(images[index], heatmaps[index])
        cell = np.repeat(np.repeat(cell, scale, axis=0), scale, axis=1)
        canvas.paste(Image.fromarray(cell), (left, top + lines * LINE_HEIGHT))
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    canvas.save(path, format="PNG")
    return path
