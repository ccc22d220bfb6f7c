"""Can the masked view see what the caption names?

Under MAE-style random masking a model's image tower sees only the kept
patches. When the object a caption names lies wholly in masked patches,
the pair teaches the masked contrastive view nothing about that object.
`object_visibility` says, for objects given as pixel masks, how often that
happens: for each object it counts the patches the object touches, `k` of
the grid's `N`, and computes the exact probability that at least one of
them is kept when `N - round(N · mask_ratio)` patches are kept uniformly at
random (`random_masking`'s draw):

    P(visible) = 1 - C(N - k, kept) / C(N, kept)

No sampling, so the figure is the same on every backend and every run.
Users with segmentation masks of their own data (or boxes drawn as masks)
can check their setting the same way.

References: He et al. 2022 (MAE, random masking); Li et al. 2023 (FLIP).
"""

import math

import numpy as np

__all__ = ["patches_touched", "object_visibility", "synthetic_visibility"]


def patches_touched(masks, patch_size):
    """How many patches of the grid each object mask touches.

    Args:
        masks: array `(n, H, W)` (or `(H, W)`), nonzero on the object.
            `H` and `W` must be multiples of `patch_size`.
        patch_size: int, the side of a square patch in pixels.

    Returns:
        int array `(n,)`: patches holding at least one object pixel.

    Example:
    >>> m = np.zeros((1, 8, 8)); m[0, 3:5, 3:5] = 1  # a 2x2 square across 4 patches
    >>> patches_touched(m, 4).tolist()
    [4]
    """
    masks = np.asarray(masks)
    if masks.ndim == 2:
        masks = masks[None]
    if masks.ndim != 3:
        raise ValueError(f"masks must be (n, H, W); got shape {masks.shape}.")
    n, height, width = masks.shape
    if height % patch_size or width % patch_size:
        raise ValueError(
            f"masks of {height}x{width} pixels do not split into {patch_size}-pixel patches; "
            "pass masks at the model's input size."
        )
    grid = masks.reshape(n, height // patch_size, patch_size, width // patch_size, patch_size)
    return (grid != 0).any(axis=(2, 4)).sum(axis=(1, 2))


def _p_all_masked(touched, num_patches, kept):
    """C(N - k, kept) / C(N, kept) for each k (exact, in log space)."""
    out = np.zeros(len(touched))
    for i, k in enumerate(touched):
        if num_patches - k < kept:
            continue  # some kept patch must hit the object
        log_p = (math.lgamma(num_patches - k + 1) - math.lgamma(num_patches - k - kept + 1)
                 - math.lgamma(num_patches + 1) + math.lgamma(num_patches - kept + 1))
        out[i] = math.exp(log_p)
    return out


def object_visibility(masks, patch_size, mask_ratio=0.75):
    """Share of objects that keep at least one visible patch under random masking.

    Args:
        masks: array `(n, H, W)`, one object per row (empty rows are left
            out: absent objects).
        patch_size: int, the model's patch side in pixels.
        mask_ratio: float in `[0, 1)`, the share of patches masked
            (`image_mask_ratio`, or CLIP's `patch_dropout`).

    Returns:
        dict with `visible` (mean probability that an object keeps at least
        one patch: the expected share of training pairs whose object the
        masked view sees), `invisible` (`1 - visible`), `patches_touched`
        (mean patches per object), `num_patches` and `objects` (counted).

    Example:
    >>> m = np.zeros((1, 8, 8)); m[0, :4, :4] = 1  # one of 4 patches
    >>> object_visibility(m, 4, mask_ratio=0.75)["visible"]  # 1 of 4 kept
    0.25
    """
    if not 0.0 <= float(mask_ratio) < 1.0:
        raise ValueError(f"mask_ratio={mask_ratio} must be in [0, 1).")
    masks = np.asarray(masks)
    touched = patches_touched(masks, patch_size)
    touched = touched[touched > 0]
    if not len(touched):
        raise ValueError("object_visibility: every mask is empty; pass the objects' masks.")
    num_patches = (masks.shape[-2] // patch_size) * (masks.shape[-1] // patch_size)
    # random_masking keeps round(N · (1 - ratio)) patches, at least 1.
    kept = max(1, int(round(num_patches * (1.0 - float(mask_ratio)))))
    visible = 1.0 - _p_all_masked(touched, num_patches, kept)
    return {
        "visible": float(visible.mean()),
        "invisible": float(1.0 - visible.mean()),
        "patches_touched": float(touched.mean()),
        "num_patches": int(num_patches),
        "objects": int(len(touched)),
    }


def synthetic_visibility(image_size, patch_size, mask_ratio=0.75, examples=2000, seed=0,
                         **scene_kwargs):
    """`object_visibility` of the captioned (main) object of synthetic scenes.

    Args:
        image_size: int, the scenes' (and model's) input size.
        patch_size: int, the model's patch side.
        mask_ratio: float, the share of patches masked.
        examples: int, scenes drawn (`generate_example(i, seed, ...)`).
        seed: int, the scenes' seed (the training data's, to describe it).
        **scene_kwargs: further `generate_example` arguments
            (`max_objects`, `sizes`).

    Returns:
        `object_visibility`'s dict for the scenes' object 0 (the one every
        caption names first, whose attributes are the labels).
    """
    from keras_maeclip.data import synthetic

    masks = np.stack([
        synthetic.generate_example(i, seed=seed, image_size=image_size, **scene_kwargs)["masks"][0]
        for i in range(examples)
    ])
    return object_visibility(masks, patch_size, mask_ratio)
