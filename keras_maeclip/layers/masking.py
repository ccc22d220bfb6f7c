"""Choosing which image patches and text tokens a masked model hides.

All functions keep static shapes (a fixed number of kept patches per image;
text masks as a boolean map), so they trace and JIT-compile on every
backend. Randomness comes from `keras.random` with a seed or a
`keras.random.SeedGenerator`.
"""

import math

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


def gather_tokens(tokens, indices):
    """`tokens[b, indices[b, i]]` for each row, as a one-hot matmul.

    Equal to `take_along_axis` along axis 1, but written as
    `one_hot(indices) @ tokens`: its backward is another small matmul where
    a gather's is a scatter-add, which XLA on CPU runs an order of magnitude
    slower at these shapes (and eager PyTorch somewhat slower). The product
    is exact: each output sums one token times 1 and zeros.

    Args:
        tokens: `(batch, length, width)`.
        indices: int `(batch, n)`, each in `[0, length)`.

    Returns:
        `(batch, n, width)` in `tokens`' dtype.

    Example:
    >>> tokens = keras.ops.reshape(keras.ops.arange(6.0), (1, 3, 2))
    >>> keras.ops.convert_to_numpy(gather_tokens(tokens, keras.ops.array([[2, 0]]))).tolist()
    [[[4.0, 5.0], [0.0, 1.0]]]
    """
    select = ops.one_hot(ops.cast(indices, "int32"), tokens.shape[1], dtype=tokens.dtype)
    return ops.einsum("bnl,blw->bnw", select, tokens)


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
    ids_shuffle = ops.argsort(scores, axis=1)
    ids_restore = ops.argsort(ids_shuffle, axis=1)
    ids_keep = ids_shuffle[:, :keep]
    kept = gather_tokens(tokens, ids_keep)
    # A token is masked when its place in the shuffled order is past `keep`.
    mask = ops.cast(ids_restore >= keep, tokens.dtype)
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


def num_text_slots(length, mask_ratio):
    """Static upper bound on the tokens `text_masking` masks in a row of `length`.

    `text_masking` masks `round(ratio · n)` of a row's `n ≤ length` eligible
    tokens, a count known only at run time; `ceil(ratio · length)` (at most
    `length`, at least 1 so that shapes never go empty) bounds it, so the
    masked positions fit a fixed number of slots.

    Example:
    >>> num_text_slots(32, 0.15)
    5
    """
    if not 0.0 <= float(mask_ratio) <= 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1]; got {mask_ratio}.")
    return max(1, min(int(length), int(math.ceil(int(length) * float(mask_ratio)))))


def text_masking(token_ids, padding_mask, mask_ratio, mask_token_id, special_token_ids=(), seed=None):
    """Replace a share of the real, non-special tokens with `[MASK]`.

    Per caption, `round(ratio * n)` of its `n` eligible tokens (inside the
    padding mask and not special) are chosen uniformly at random. Shapes stay
    static: the result is a boolean map, plus the masked positions gathered
    into `num_text_slots(length, ratio)` slots per row with a validity
    weight, so a token head can score only the masked positions.

    Args:
        token_ids: int `(batch, length)`.
        padding_mask: `(batch, length)`, 1 on real tokens.
        mask_ratio: float in [0, 1].
        mask_token_id: int, id of `[MASK]`.
        special_token_ids: ids never masked (e.g. `[CLS]`, `[SEP]`).
        seed: int, `keras.random.SeedGenerator` or `None`.

    Returns:
        dict with `token_ids` (masked input), `mask` (bool, 1 = masked),
        `targets` (the original ids), and per slot: `positions` int32
        `(batch, slots)` (a masked position, in random order; slots past the
        row's count hold unmasked positions), `slot_targets` `(batch, slots)`
        (the original ids there) and `slot_weights` float32 `(batch, slots)`
        (1 on slots holding a masked token, else 0).

    Example:
    >>> ids = keras.ops.array([[2, 10, 11, 12, 3, 0]])
    >>> out = text_masking(ids, ids != 0, 0.5, 4, special_token_ids=(2, 3), seed=1)
    >>> int(keras.ops.sum(keras.ops.cast(out["mask"], "int32")))
    2
    >>> out["positions"].shape  # ceil(0.5 * 6) slots
    (1, 3)

    References: Devlin et al. 2019 (BERT) §3.1; M3AE `model.py`.
    """
    if not 0.0 <= float(mask_ratio) <= 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1]; got {mask_ratio}.")
    length = token_ids.shape[1]
    slots = num_text_slots(length, mask_ratio)
    eligible = ops.cast(padding_mask, "bool")
    for special in special_token_ids:
        eligible = ops.logical_and(eligible, ops.not_equal(token_ids, special))
    count = ops.sum(ops.cast(eligible, "float32"), axis=1)
    to_mask = ops.round(count * float(mask_ratio))
    noise = keras.random.uniform(ops.shape(token_ids), seed=seed)
    noise = ops.where(eligible, noise, 2.0)  # ineligible positions rank last
    # The `slots` lowest-noise positions, in noise order: the first `to_mask`
    # of them are the masked ones (ineligible ones rank after all eligible).
    _, positions = ops.top_k(-noise, k=slots, sorted=True)
    positions = ops.cast(positions, "int32")
    slot_weights = ops.cast(
        ops.arange(slots, dtype="float32")[None, :] < to_mask[:, None], "float32"
    )
    # The bool map by scattering the valid slots (a one-hot sum: no second sort).
    hits = ops.one_hot(positions, length, dtype="float32") * slot_weights[:, :, None]
    mask = ops.logical_and(eligible, ops.sum(hits, axis=1) > 0.5)
    masked_ids = ops.where(mask, ops.cast(mask_token_id, token_ids.dtype), token_ids)
    slot_targets = ops.take_along_axis(token_ids, ops.cast(positions, token_ids.dtype), axis=1)
    return {"token_ids": masked_ids, "mask": mask, "targets": token_ids,
            "positions": positions, "slot_targets": slot_targets, "slot_weights": slot_weights}
