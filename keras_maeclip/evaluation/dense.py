"""Dense (per-patch) embeddings in the joint image-text space, and upsampling.

A CLIP-style model embeds a whole image by pooling its patch tokens and
projecting the pooled vector. A *dense* embedding instead sends every patch
token on its own through the same pooling head and projection, which gives
one unit vector per patch that can be compared with text embeddings
(grounding heatmaps, prompt-based segmentation).

Everything that runs inside the model is a functional `keras.Model` built
from the backbone's own layers (no copies, compiled by `predict` on every
backend); everything after that is NumPy.
"""

import weakref

import keras
import numpy as np
from keras import ops

from keras_maeclip.losses import l2_normalize

# One cached functional model per (backbone, normalize); weak keys so the
# cache never keeps a model alive and adds no attribute to the backbone.
_DENSE_EMBEDDERS = weakref.WeakKeyDictionary()


def _clip_backbone(model, caller):
    """The `ImageTextBackbone` of a CLIP / MAE-CLIP task, or a clear ValueError."""
    from keras_maeclip.models import ImageTextBackbone

    backbone = getattr(model, "backbone", model)
    if not isinstance(backbone, ImageTextBackbone):
        raise ValueError(
            f"{caller} needs a model with a joint image-text embedding space "
            f"(a CLIP or MAECLIP task, whose backbone is a ImageTextBackbone); got "
            f"{type(model).__name__} with a {type(backbone).__name__} backbone. "
            "MAE has no text tower and M3AE has no separate image and text "
            "projections into a shared space, so neither can score patches "
            "against text."
        )
    return backbone


def dense_embedder(model, normalize=True):
    """A functional model: preprocessed images → per-patch joint embeddings.

    Each patch token of the image encoder's output (the class token, if the
    encoder has one, is dropped) is passed through the model's own image
    pooling head as a sequence of length one, then through the image
    projection and, with `normalize`, L2 normalisation. For GAP, MAX and
    "first" pooling the head is the identity on one token; for MAP it is the
    attention-pooling head applied to one token (its probe then attends to
    that token alone, so the head reduces to the attention's value and
    output projections plus its residual MLP) — the MaskCLIP-style dense
    trick of reusing the pooling head's value path per patch.

    This is `backbone.embed_image_tokens` applied per patch, written out
    with the backbone's layers (`image_pooler`, `image_projection`) because
    `embed_image_tokens` would strip the first token of every length-one
    sequence of an encoder with a class token.

    Args:
        model: a `CLIP` or `MAECLIP` task (or its `ImageTextBackbone`).
        normalize: bool. `True` (default) returns unit vectors; `False` the
            projections before normalisation (used to check that pooling
            and dense embeddings agree).

    Returns:
        A `keras.Model` (shares the backbone's layers, built once and
        cached) mapping `(batch, S, S, C)` preprocessed images to float32
        `(batch, grid, grid, embedding_dim)`; patch `(i, j)` is grid row `i`
        (top to bottom) and column `j` (left to right).

    Example:
    >>> embedder = dense_embedder(model)            # clip_tiny_*, 32² images
    >>> embedder.predict(np.zeros((2, 32, 32, 3)), verbose=0).shape
    (2, 8, 8, 96)

    References: Zhou et al. 2022 (MaskCLIP, dense CLIP features); Weers et
    al. 2023 §5 (visual grounding with the pooling heads).
    """
    backbone = _clip_backbone(model, "dense_embedder")
    cache = _DENSE_EMBEDDERS.setdefault(backbone, {})
    key = bool(normalize)
    if key not in cache:
        encoder = backbone.image_encoder
        grid, width = encoder.grid_size, encoder.hidden_dim
        images = keras.Input(
            shape=(encoder.image_size, encoder.image_size, encoder.num_channels),
            name="images",
        )
        tokens = encoder(images)
        if encoder.use_class_token:
            tokens = tokens[:, 1:]
        # Every patch becomes its own length-one sequence: (batch·grid², 1, width).
        single = ops.reshape(tokens, (-1, 1, width))
        projected = backbone.image_projection(backbone.image_pooler(single))
        projected = l2_normalize(projected) if normalize else ops.cast(projected, "float32")
        dense = ops.reshape(projected, (-1, grid, grid, backbone.embedding_dim))
        cache[key] = keras.Model(images, dense, name="dense_embedder")
    return cache[key]


def model_pixels(model, images):
    """Raw images → the model's preprocessed inputs, as float32 NumPy.

    Square images go through `model.preprocessor` (or, without one, the
    library's `image_converter` at the encoder's size). Non-square images
    are first stretched to a square (bilinear, antialiased, with
    `keras.ops.image.resize`) so the patch grid covers the whole image rather than
    the preprocessor's centre crop; dense maps upsampled to the original
    height and width then line up with the image.

    Args:
        model: a task whose backbone has an image encoder.
        images: uint8/float array `(n, H, W, 3)` in [0, 255], or a list of
            `(H_i, W_i, 3)` arrays of any sizes.

    Returns:
        float32 array `(n, S, S, C)`.
    """
    from keras_maeclip.models import image_converter

    backbone = getattr(model, "backbone", model)
    encoder = getattr(backbone, "image_encoder", backbone)
    size = encoder.image_size
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("images is an empty list; pass at least one image.")
        images = [np.asarray(image) for image in images]
        for image in images:
            if image.ndim != 3 or image.shape[-1] != 3:
                raise ValueError(
                    "every image in the list must be (H, W, 3) RGB; got shape "
                    f"{image.shape}."
                )
        resized = [
            image if image.shape[0] == image.shape[1] else _stretch(image[None], size)[0]
            for image in images
        ]
        if len({r.shape for r in resized}) > 1:
            resized = [_stretch(r[None], size)[0] for r in resized]
        images = np.stack(resized)
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.shape[0] == 0:
        raise ValueError(
            "images must be a non-empty (n, H, W, 3) RGB array in [0, 255] (or "
            f"a list of (H, W, 3) arrays); got shape {images.shape}."
        )
    if images.shape[1] != images.shape[2]:
        images = _stretch(images, size)
    preprocessor = getattr(model, "preprocessor", None)
    if preprocessor is not None:
        pixels = preprocessor({"images": images})["images"]
    else:
        pixels = image_converter(size)(images.astype("float32"))
    return np.asarray(ops.convert_to_numpy(pixels), np.float32)


def _stretch(images, size):
    out = ops.image.resize(np.asarray(images, np.float32), (size, size), interpolation="bilinear", antialias=True)
    return np.clip(ops.convert_to_numpy(out), 0.0, 255.0).astype(np.float32)


def patch_embeddings(model, images, batch_size=256, normalize=True):
    """Unit-norm per-patch embeddings of raw images in the joint space.

    Args:
        model: a `CLIP` or `MAECLIP` task; MAE and M3AE raise a ValueError
            (no joint image-text space).
        images: uint8/float array `(n, H, W, 3)` in [0, 255], or a list of
            `(H, W, 3)` arrays; see `model_pixels` for resizing.
        batch_size: int, images per forward pass.
        normalize: bool, see `dense_embedder`.

    Returns:
        float32 array `(n, grid, grid, embedding_dim)`.

    Example:
    >>> patch_embeddings(model, np.zeros((3, 32, 32, 3), "uint8")).shape
    (3, 8, 8, 96)

    References: Zhou et al. 2022 (MaskCLIP); Weers et al. 2023 §5.
    """
    embedder = dense_embedder(model, normalize)
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}.")
    pixels = model_pixels(model, images)
    out = embedder.predict(pixels, batch_size=int(batch_size), verbose=0)
    return np.asarray(ops.convert_to_numpy(out), np.float32)


def upsample(maps, size):
    """Bilinear resize of `(n, g, g[, c])` maps to `(n, height, width[, c])`.

    `keras.ops.image.resize` (bilinear, half-pixel centres, no antialiasing,
    which only matters when shrinking) on the current backend, returned as
    NumPy. A same-size resize returns the input unchanged.

    Args:
        maps: array `(n, gh, gw)` or `(n, gh, gw, c)`.
        size: int (square output) or `(height, width)`.

    Returns:
        float32 array `(n, height, width)` or `(n, height, width, c)`.

    Example:
    >>> upsample(np.array([[[0.0, 1.0]]]), (1, 4)).round(2).tolist()
    [[[0.0, 0.25, 0.75, 1.0]]]
    """
    maps = np.asarray(maps, np.float32)
    if maps.ndim not in (3, 4):
        raise ValueError(
            f"upsample: maps must be (n, g, g) or (n, g, g, c); got shape {maps.shape}."
        )
    height, width = (size, size) if np.isscalar(size) else tuple(size)
    if int(height) < 1 or int(width) < 1:
        raise ValueError(f"upsample: size must be positive; got {size!r}.")
    squeeze = maps.ndim == 3
    x = maps[..., None] if squeeze else maps
    if x.shape[1:3] != (int(height), int(width)):
        x = ops.convert_to_numpy(
            ops.image.resize(x, (int(height), int(width)), interpolation="bilinear", antialias=False)
        )
    x = np.asarray(x, np.float32)
    return x[..., 0] if squeeze else x
