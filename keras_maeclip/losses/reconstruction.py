"""Reconstruction losses of the masked models: pixels and tokens."""

import keras
from keras import ops

from keras_maeclip.layers.patching import patchify


def patch_targets(images, patch_size, norm_pix_loss=True, epsilon=1e-6):
    """Per-patch pixel targets, optionally normalised per patch.

    With `norm_pix_loss`, each patch's pixels are standardised by the patch's
    own mean and (unbiased, as `torch.var` in MAE) variance.

    Args:
        images: `(batch, H, W, C)`.
        patch_size: int.
        norm_pix_loss: bool, defaults to `True`.
        epsilon: float added to the variance, defaults to `1e-6`.

    Returns:
        float32 `(batch, num_patches, patch_size**2 * C)`.

    Example:
    >>> patch_targets(keras.random.normal((2, 8, 8, 3)), 4).shape
    (2, 4, 48)

    References: MAE `models_mae.py` (`forward_loss`, `norm_pix_loss`).
    """
    target = ops.cast(patchify(images, patch_size), "float32")
    if not norm_pix_loss:
        return target
    n = target.shape[-1]
    mean = ops.mean(target, axis=-1, keepdims=True)
    var = ops.sum(ops.square(target - mean), axis=-1, keepdims=True) / (n - 1)
    return (target - mean) / ops.sqrt(var + epsilon)


def pixel_reconstruction_loss(images, predictions, mask, patch_size, norm_pix_loss=True):
    """Mean squared error on masked patches only.

    Args:
        images: `(batch, H, W, C)`, the model's (normalised) input images.
        predictions: `(batch, num_patches, patch_size**2 * C)` pixel
            predictions in `patchify` order.
        mask: `(batch, num_patches)`, 1 = masked (the loss is averaged over
            these patches only).
        patch_size: int.
        norm_pix_loss: bool, predict per-patch normalised pixels. Defaults to
            `True`.

    Returns:
        float32 scalar.

    Example:
    >>> x = keras.random.normal((2, 8, 8, 3))
    >>> float(pixel_reconstruction_loss(x, patch_targets(x, 4),
    ...                                 keras.ops.ones((2, 4)), 4))
    0.0

    References: MAE `models_mae.py` (`forward_loss`).
    """
    target = patch_targets(images, patch_size, norm_pix_loss)
    per_patch = ops.mean(ops.square(ops.cast(predictions, "float32") - target), axis=-1)
    mask = ops.cast(mask, "float32")
    return ops.sum(per_patch * mask) / ops.maximum(ops.sum(mask), 1.0)


TEXT_LOSS_REDUCTIONS = ("tokens", "captions")


def token_reconstruction_loss(targets, logits, mask, reduction="tokens"):
    """Cross-entropy over masked tokens only.

    Args:
        targets: int `(batch, length)`, the original token ids.
        logits: `(batch, length, vocabulary_size)`.
        mask: `(batch, length)`, true on masked (real, non-special) tokens.
        reduction: `"tokens"` (default): the mean over every masked token
            of the batch, so long captions weigh more (BERT's). `"captions"`:
            each caption's mean over its masked tokens, then the mean over
            captions, a caption without masked tokens counting 0
            (m3ae_public's `cross_entropy_loss_and_accuracy`).

    Returns:
        float32 scalar: mean cross-entropy over masked tokens (0 when none).

    Example:
    >>> logits = keras.ops.one_hot(keras.ops.array([[1, 2]]), 3) * 100.0
    >>> round(float(token_reconstruction_loss(keras.ops.array([[1, 2]]),
    ...                                       logits, keras.ops.ones((1, 2)))), 4)
    0.0

    References: Devlin et al. 2019 (BERT) §3.1; M3AE `model.py`.
    """
    per_token = keras.losses.sparse_categorical_crossentropy(
        targets, ops.cast(logits, "float32"), from_logits=True
    )
    mask = ops.cast(mask, "float32")
    if reduction == "captions":
        per_caption = ops.sum(per_token * mask, axis=-1) / ops.maximum(ops.sum(mask, axis=-1), 1.0)
        return ops.mean(per_caption)
    if reduction != "tokens":
        raise ValueError(f"Unknown reduction={reduction!r}; use one of {TEXT_LOSS_REDUCTIONS}.")
    return ops.sum(per_token * mask) / ops.maximum(ops.sum(mask), 1.0)
