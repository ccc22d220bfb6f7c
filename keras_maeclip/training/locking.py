"""Locked and partially trained towers (LiT, open_clip's `--lock-image`).

Locking sets the `trainable` flag of a tower's layers and variables, which
is Keras' own mechanism: `fit` then neither differentiates nor updates
them, on every backend. Lock before `compile()` (the optimizer builds its
slots for the trainable variables it is compiled with); to change the
locks of a compiled model, compile it again. Locks only ever freeze
(variables that were not trainable stay so): build the model again to
train a locked part.
"""

TOWERS = ("image", "text")


def _backbone(model):
    backbone = getattr(model, "backbone", model)
    if not hasattr(backbone, "image_encoder") or not hasattr(backbone, "text_encoder"):
        raise ValueError(
            f"lock_tower needs a CLIP-style model or backbone with image_encoder and "
            f"text_encoder (CLIP, MAECLIP, ImageTextBackbone); got {type(model).__name__}."
        )
    return backbone


def tower_of(model, tower):
    """The `"image"` or `"text"` encoder of a CLIP-style model or backbone."""
    if tower not in TOWERS:
        raise ValueError(f"tower={tower!r}; use one of {TOWERS}.")
    backbone = _backbone(model)
    return backbone.image_encoder if tower == "image" else backbone.text_encoder


def lock_tower(model, tower="image", unlocked_blocks=0, freeze_norms=False):
    """Freeze a tower, or all of it but its last `unlocked_blocks` blocks.

    The tower's embeddings (patch or token embedding, positions, class
    token) and its first `num_layers - unlocked_blocks` transformer blocks
    stop training; with `unlocked_blocks > 0` the last blocks and the final
    LayerNorm keep training (open_clip's `--lock-image-unlocked-groups`,
    counted in blocks). The pooling head and projection outside the tower
    are not locked: as in LiT, the frozen tower's features are still
    mapped into the joint space by a trained projection.

    Args:
        model: a `CLIP`, `MAECLIP` or `ImageTextBackbone`.
        tower: `"image"` (LiT, `--lock-image`) or `"text"` (`--lock-text`).
        unlocked_blocks: int, the last blocks left trainable. Defaults to
            `0` (the whole tower is locked).
        freeze_norms: bool. Also freeze the LayerNorms of the unlocked
            blocks and the final norm. Defaults to `False`.

    Returns:
        The number of variables now frozen in the tower.

    Example:
    >>> from keras_maeclip.models import CLIP
    >>> model = CLIP.from_preset("clip_tiny_gap", vocabulary_size=64)
    >>> frozen = lock_tower(model, "image", unlocked_blocks=1)
    >>> model.compile()  # compile after locking

    References: Zhai et al. 2022 (LiT); open_clip `--lock-image`,
    `--lock-image-unlocked-groups`, `--lock-text`.
    """
    encoder = tower_of(model, tower)
    unlocked_blocks = int(unlocked_blocks)
    if unlocked_blocks == 0:
        frozen = 0
        for variable in encoder.trainable_weights:
            variable.trainable = False
            frozen += 1
        return frozen
    blocks = list(getattr(encoder, "transformer_layers", None) or [])
    if not blocks or not hasattr(encoder, "final_norm"):
        raise ValueError(
            f"unlocked_blocks={unlocked_blocks}: the {tower} tower "
            f"({type(encoder).__name__}) does not expose transformer_layers and "
            "final_norm (ViTEncoder / TextEncoder do); lock a keras-hub tower whole "
            "with unlocked_blocks=0."
        )
    if not 0 <= unlocked_blocks <= len(blocks):
        raise ValueError(
            f"unlocked_blocks={unlocked_blocks}: the {tower} tower has {len(blocks)} "
            f"blocks; use 0 (lock all) to {len(blocks)} (lock only the embeddings)."
        )
    unlocked = blocks[len(blocks) - unlocked_blocks:] if unlocked_blocks else []
    if unlocked:
        unlocked.append(encoder.final_norm)
    unlocked_ids = {id(v) for layer in unlocked for v in layer.weights}
    frozen = 0
    for variable in encoder.trainable_weights:
        if id(variable) not in unlocked_ids or (freeze_norms and _is_norm(variable)):
            variable.trainable = False
            frozen += 1
    return frozen


def _is_norm(variable):
    """A LayerNorm's scale or offset (keras names them gamma / beta)."""
    return "norm" in variable.path.rsplit("/", 2)[-2] and variable.name in ("gamma", "beta")
