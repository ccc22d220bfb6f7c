"""Choosing which image patches and text tokens a masked model hides.

All functions keep static shapes (a fixed number of kept patches per image;
text masks as a boolean map), so they trace and JIT-compile on every
backend. Randomness comes from `keras.random` with a seed or a
`keras.random.SeedGenerator`.
"""

import keras
from keras import ops


def num_kept(length, mask_ratio):
    """Patches kept out of `length` at `mask_ratio`: `round(L * (1 - r))`, ≥ 1.

    Example:
    >>> num_kept(64, 0.75)
    16
    """
    if not 0.0 <= float(mask_ratio) < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1); got {mask_ratio}.")
    return max(1, int(round(length * (1.0 - float(mask_ratio)))))


def mask_by_scores(tokens, scores, keep):
    """Keep, per row, the `keep` tokens with the lowest scores.

    Args:
        tokens: `(batch, length, width)`.
        scores: `(batch, length)`; lower = kept first.
        keep: int, tokens kept per row.

    Returns:
        dict with `kept` `(batch, keep, width)` (in score order),
        `mask` `(batch, length)` float, 1 = masked, in the original order,
        `ids_keep` `(batch, keep)` original positions of the kept tokens, and
        `ids_restore` `(batch, length)`: the position of each original token
        in `concat([kept, masked])`, so `take_along_axis(that, ids_restore)`
        puts tokens back in the original order.

    Example:
    >>> tokens = keras.ops.reshape(keras.ops.arange(6.0), (1, 3, 2))
    >>> out = mask_by_scores(tokens, keras.ops.array([[0.9, 0.1, 0.5]]), 1)
    >>> keras.ops.convert_to_numpy(out["mask"]).tolist()
    [[1.0, 0.0, 1.0]]
    """
    length = tokens.shape[1]
    ids_shuffle = ops.argsort(scores, axis=1)
    ids_restore = ops.argsort(ids_shuffle, axis=1)
    ids_keep = ids_shuffle[:, :keep]
    index = ops.broadcast_to(
        ops.expand_dims(ids_keep, -1), (ops.shape(tokens)[0], keep, tokens.shape[-1])
    )
    kept = ops.take_along_axis(tokens, index, axis=1)
    # 0 for the first `keep` in shuffled order, 1 after; then back in order.
    shuffled_mask = ops.cast(ops.arange(length) >= keep, tokens.dtype)
    shuffled_mask = ops.broadcast_to(shuffled_mask[None], ops.shape(scores))
    mask = ops.take_along_axis(shuffled_mask, ids_restore, axis=1)
    return {"kept": kept, "mask": mask, "ids_keep": ids_keep, "ids_restore": ids_restore}


def random_masking(tokens, mask_ratio, seed=None):
    """MAE's per-sample random masking: uniform noise → argsort → keep first.

    Args:
        tokens: `(batch, length, width)`.
        mask_ratio: float in [0, 1), share of tokens masked.
        seed: int, `keras.random.SeedGenerator` or `None`.

    Returns:
        The dict of `mask_by_scores` with `round(L * (1 - r))` kept tokens.

    Example:
    >>> out = random_masking(keras.ops.ones((2, 16, 8)), 0.75, seed=0)
    >>> out["kept"].shape
    (2, 4, 8)

    References: MAE `models_mae.py` (`random_masking`).
    """
    keep = num_kept(tokens.shape[1], mask_ratio)
    noise = keras.random.uniform(ops.shape(tokens)[:2], seed=seed)
    return mask_by_scores(tokens, noise, keep)


SIMILARITY_DIRECTIONS = ("mask_similar", "keep_similar")


def similarity_masking(
    tokens,
    patch_embeddings,
    text_embeddings,
    mask_ratio,
    temperature=0.1,
    seed=None,
    direction="mask_similar",
):
    """Choose the masked patches by their similarity to the caption.

    The library's reading of the paper's similarity masking (Appendix F).
    Each patch gets the weight `softmax(cos(patch, caption) / temperature)`
    and patches are drawn without replacement with those probabilities
    (Gumbel-top-k sampling on the same perturbed scores in both
    directions):

    - `direction="mask_similar"` (default): the `L - keep` *masked* patches
      are the draws, so the caption-relevant content is hidden and
      reconstructed; the kept (encoded) patches are the least similar.
    - `direction="keep_similar"`: the `keep` *kept* patches are the draws,
      so the encoder sees the caption-relevant content and the least
      similar patches are masked.

    Similarities are computed under stop-gradient. A small `temperature`
    makes the choice peaked (as it tends to 0: the most similar patches
    are masked, resp. kept); a large one, or equal similarities, reduces it
    to random masking.

    Args:
        tokens: `(batch, length, width)`, the tokens to mask.
        patch_embeddings: `(batch, length, dim)`, one embedding per patch in
            the space of `text_embeddings`.
        text_embeddings: `(batch, dim)`, the paired captions.
        mask_ratio: float in [0, 1).
        temperature: float > 0, defaults to `0.1`.
        seed: int, `keras.random.SeedGenerator` or `None`.
        direction: `"mask_similar"` or `"keep_similar"`, defaults to
            `"mask_similar"`.

    Returns:
        The dict of `mask_by_scores`, plus `similarity` `(batch, length)`.

    Example:
    >>> out = similarity_masking(keras.ops.ones((2, 16, 8)),
    ...     keras.random.normal((2, 16, 4)), keras.random.normal((2, 4)), 0.75,
    ...     direction="keep_similar")
    >>> out["mask"].shape
    (2, 16)

    References: Weers et al. 2023, Appendix F; Kool et al. 2019 (Gumbel-top-k).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0; got {temperature}.")
    if direction not in SIMILARITY_DIRECTIONS:
        raise ValueError(
            f"Unknown similarity direction={direction!r}; use one of {SIMILARITY_DIRECTIONS}."
        )
    keep = num_kept(tokens.shape[1], mask_ratio)
    patches = ops.stop_gradient(ops.cast(patch_embeddings, "float32"))
    texts = ops.stop_gradient(ops.cast(text_embeddings, "float32"))
    patches = patches / ops.maximum(ops.norm(patches, axis=-1, keepdims=True), 1e-12)
    texts = texts / ops.maximum(ops.norm(texts, axis=-1, keepdims=True), 1e-12)
    similarity = ops.einsum("bld,bd->bl", patches, texts)
    uniform = keras.random.uniform(ops.shape(similarity), minval=1e-6, maxval=1.0 - 1e-6, seed=seed)
    gumbel = -ops.log(-ops.log(uniform))
    perturbed = similarity / temperature + gumbel
    # Gumbel-top-k: the highest perturbed log-weights are the draws.
    # mask_by_scores keeps the lowest scores: with "mask_similar" the draws
    # sort last (masked); with "keep_similar" they sort first (kept).
    scores = perturbed if direction == "mask_similar" else -perturbed
    out = mask_by_scores(tokens, scores, keep)
    out["similarity"] = similarity
    return out


def text_masking(token_ids, padding_mask, mask_ratio, mask_token_id, special_token_ids=(), seed=None):
    """Replace a share of the real, non-special tokens with `[MASK]`.

    Per caption, `round(ratio * n)` of its `n` eligible tokens (inside the
    padding mask and not special) are chosen uniformly at random. Shapes stay
    static: the result is a boolean map, not a gathered subset.

    Args:
        token_ids: int `(batch, length)`.
        padding_mask: `(batch, length)`, 1 on real tokens.
        mask_ratio: float in [0, 1].
        mask_token_id: int, id of `[MASK]`.
        special_token_ids: ids never masked (e.g. `[CLS]`, `[SEP]`).
        seed: int, `keras.random.SeedGenerator` or `None`.

    Returns:
        dict with `token_ids` (masked input), `mask` (bool, 1 = masked) and
        `targets` (the original ids).

    Example:
    >>> ids = keras.ops.array([[2, 10, 11, 12, 3, 0]])
    >>> out = text_masking(ids, ids != 0, 0.5, 4, special_token_ids=(2, 3), seed=1)
    >>> int(keras.ops.sum(keras.ops.cast(out["mask"], "int32")))
    2

    References: Devlin et al. 2019 (BERT) §3.1; M3AE `model.py`.
    """
    if not 0.0 <= float(mask_ratio) <= 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1]; got {mask_ratio}.")
    eligible = ops.cast(padding_mask, "bool")
    for special in special_token_ids:
        eligible = ops.logical_and(eligible, ops.not_equal(token_ids, special))
    count = ops.sum(ops.cast(eligible, "float32"), axis=1)
    to_mask = ops.round(count * float(mask_ratio))
    noise = keras.random.uniform(ops.shape(token_ids), seed=seed)
    noise = ops.where(eligible, noise, 2.0)  # ineligible positions rank last
    rank = ops.cast(ops.argsort(ops.argsort(noise, axis=1), axis=1), "float32")
    mask = ops.logical_and(eligible, rank < to_mask[:, None])
    masked_ids = ops.where(mask, ops.cast(mask_token_id, token_ids.dtype), token_ids)
    return {"token_ids": masked_ids, "mask": mask, "targets": token_ids}
