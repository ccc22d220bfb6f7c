import keras
import numpy as np
import pytest

from keras_maeclip.layers import (
    gather_tokens,
    mask_by_scores,
    num_kept,
    num_text_slots,
    random_masking,
    similarity_masking,
    text_masking,
)


def to_np(x):
    return keras.ops.convert_to_numpy(x)


TOKENS = np.random.default_rng(0).normal(size=(3, 16, 4)).astype("float32")


@pytest.mark.parametrize("ratio,keep", [(0.75, 4), (0.5, 8), (0.0, 16), (0.9, 2)])
def test_random_masking_keeps_exactly_the_stated_count(ratio, keep):
    assert num_kept(16, ratio) == keep
    out = random_masking(TOKENS, ratio, seed=3)
    assert out["kept"].shape == (3, keep, 4)
    mask = to_np(out["mask"])
    np.testing.assert_array_equal(mask.sum(1), [16 - keep] * 3)
    # Kept tokens are the rows of the original at the unmasked positions.
    ids_keep = to_np(out["ids_keep"])
    for b in range(3):
        assert set(ids_keep[b]) == set(np.flatnonzero(mask[b] == 0))
        np.testing.assert_array_equal(to_np(out["kept"])[b], TOKENS[b, ids_keep[b]])


def test_restore_indices_invert_the_shuffle():
    out = random_masking(TOKENS, 0.75, seed=5)
    ids_restore = to_np(out["ids_restore"])
    kept = to_np(out["kept"])
    mask_token = np.full((3, 12, 4), 99.0, "float32")
    full = np.concatenate([kept, mask_token], axis=1)
    restored = np.take_along_axis(full, ids_restore[..., None], axis=1)
    mask = to_np(out["mask"])[..., None]
    np.testing.assert_array_equal(np.where(mask == 0, restored, 0), np.where(mask == 0, TOKENS, 0))
    np.testing.assert_array_equal(restored[np.broadcast_to(mask == 1, restored.shape)], 99.0)


def test_random_masking_is_seeded_and_varies_with_a_generator():
    a = to_np(random_masking(TOKENS, 0.5, seed=1)["mask"])
    b = to_np(random_masking(TOKENS, 0.5, seed=1)["mask"])
    np.testing.assert_array_equal(a, b)
    generator = keras.random.SeedGenerator(0)
    c = to_np(random_masking(TOKENS, 0.5, seed=generator)["mask"])
    d = to_np(random_masking(TOKENS, 0.5, seed=generator)["mask"])
    assert not np.array_equal(c, d)


def test_mask_by_scores_keeps_lowest_scores():
    scores = np.array([[0.9, 0.1, 0.5, 0.3]], "float32")
    out = mask_by_scores(TOKENS[:1, :4], scores, 2)
    np.testing.assert_array_equal(to_np(out["mask"]), [[1, 0, 1, 0]])
    np.testing.assert_array_equal(to_np(out["ids_keep"]), [[1, 3]])


def _masking_frequency(similar_scale, temperature, trials=200):
    """How often each of 16 patches is masked; patch 0..3 are caption-like."""
    rng = np.random.default_rng(0)
    text = rng.normal(size=(1, 8)).astype("float32")
    patches = rng.normal(size=(1, 16, 8)).astype("float32")
    patches[:, :4] += similar_scale * text[:, None]
    batch = np.repeat(patches, trials, 0)
    out = similarity_masking(
        np.repeat(TOKENS[:1], trials, 0), batch, np.repeat(text, trials, 0), 0.75,
        temperature=temperature, seed=11,
    )
    return to_np(out["mask"]).mean(0)


def test_similarity_masking_prefers_caption_like_patches():
    freq = _masking_frequency(similar_scale=3.0, temperature=0.1)
    # 12 of 16 patches are masked (75 %); the 4 similar ones almost always.
    assert freq[:4].mean() > 0.95
    assert freq[:4].mean() > freq[4:].mean() + 0.2
    np.testing.assert_allclose(freq.sum(), 12.0)


def test_similarity_masking_is_uniform_on_flat_scores():
    trials = 400
    flat = np.ones((trials, 16, 8), "float32")
    text = np.ones((trials, 8), "float32")
    out = similarity_masking(np.repeat(TOKENS[:1], trials, 0), flat, text, 0.75, seed=2)
    freq = to_np(out["mask"]).mean(0)
    # Binomial(400, 0.75) per patch: 4 standard deviations ≈ 0.087.
    np.testing.assert_allclose(freq, 0.75, atol=0.087)
    np.testing.assert_allclose(to_np(out["similarity"]), 1.0, atol=1e-5)


@pytest.mark.parametrize("direction", ["mask_similar", "keep_similar"])
def test_similarity_direction_near_zero_temperature_is_top_k(direction):
    # Well-separated similarities (a permutation of 16 levels 0.1 apart):
    # at temperature 1e-4 the Gumbel noise cannot reorder them.
    rng = np.random.default_rng(5)
    batch, length, keep = 6, 16, 4
    text = np.zeros((batch, 2), "float32")
    text[:, 0] = 1.0
    levels = np.stack([rng.permutation(length) for _ in range(batch)]) * 0.1 - 0.75
    angles = np.arccos(np.clip(levels, -1, 1))
    patches = np.stack([np.cos(angles), np.sin(angles)], -1).astype("float32")
    out = similarity_masking(TOKENS[:1].repeat(batch, 0), patches, text, 0.75,
                             temperature=1e-4, seed=7, direction=direction)
    similarity = np.einsum("bld,bd->bl", patches, text)
    np.testing.assert_allclose(to_np(out["similarity"]), similarity, atol=1e-6)
    order = np.argsort(-similarity, axis=1)  # most similar first
    expected = np.ones((batch, length))
    if direction == "mask_similar":  # the 12 most similar are masked
        expected[np.arange(batch)[:, None], order[:, length - keep:]] = 0.0
    else:  # the 4 most similar are kept
        expected[np.arange(batch)[:, None], order[:, :keep]] = 0.0
    np.testing.assert_array_equal(to_np(out["mask"]), expected)
    np.testing.assert_array_equal(np.sort(to_np(out["ids_keep"]), 1), np.sort(np.where(expected == 0)[1].reshape(batch, keep), 1))


def test_keep_similar_keeps_caption_like_patches_statistically():
    rng = np.random.default_rng(0)
    trials = 200
    text = rng.normal(size=(1, 8)).astype("float32")
    patches = rng.normal(size=(1, 16, 8)).astype("float32")
    patches[:, :4] += 3.0 * text[:, None]
    out = similarity_masking(
        np.repeat(TOKENS[:1], trials, 0), np.repeat(patches, trials, 0), np.repeat(text, trials, 0),
        0.75, temperature=0.1, seed=11, direction="keep_similar",
    )
    freq = to_np(out["mask"]).mean(0)
    # 4 of 16 are kept: mostly the 4 caption-like patches (masked in 7 %
    # of the trials with this draw), the others nearly always masked.
    assert freq[:4].mean() < 0.15
    assert freq[4:].mean() > 0.95
    np.testing.assert_allclose(freq.sum(), 12.0)


def test_similarity_masking_rejects_bad_temperature():
    with pytest.raises(ValueError, match="temperature must be > 0"):
        similarity_masking(TOKENS, TOKENS, TOKENS[:, 0], 0.5, temperature=0.0)
    with pytest.raises(ValueError, match="direction='both'.*keep_similar"):
        similarity_masking(TOKENS, TOKENS, TOKENS[:, 0], 0.5, direction="both")
    with pytest.raises(ValueError, match=r"mask_ratio must be in \[0, 1\)"):
        random_masking(TOKENS, 1.0)


def test_text_masking_never_touches_padding_or_special_tokens():
    cls, sep, mask_id = 2, 3, 4
    ids = np.array(
        [[cls, 10, 11, 12, 13, 14, 15, 16, 17, sep, 0, 0],
         [cls, 20, 21, sep, 0, 0, 0, 0, 0, 0, 0, 0],
         [cls, sep, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]],
        "int32",
    )
    padding = (ids != 0).astype("int32")
    for seed in range(5):
        out = text_masking(ids, padding, 0.5, mask_id, special_token_ids=(cls, sep), seed=seed)
        mask = to_np(out["mask"]).astype(bool)
        np.testing.assert_array_equal(mask.sum(1), [4, 1, 0])  # round(0.5 * n)
        assert not mask[ids == 0].any() and not mask[ids == cls].any() and not mask[ids == sep].any()
        masked_ids = to_np(out["token_ids"])
        np.testing.assert_array_equal(masked_ids[mask], mask_id)
        np.testing.assert_array_equal(masked_ids[~mask], ids[~mask])
        np.testing.assert_array_equal(to_np(out["targets"]), ids)


def test_text_masking_slots_hold_exactly_the_masked_positions():
    cls, sep, mask_id = 2, 3, 4
    rng = np.random.default_rng(0)
    lengths = np.array([12, 4, 2, 9, 12, 7])
    ids = rng.integers(10, 50, (6, 12)).astype("int32")
    ids[:, 0] = cls
    ids[np.arange(6), lengths - 1] = sep
    ids[np.arange(12)[None] >= lengths[:, None]] = 0
    padding = (ids != 0).astype("int32")
    for ratio in (0.15, 0.5, 1.0):
        slots = num_text_slots(12, ratio)
        for seed in range(3):
            out = text_masking(ids, padding, ratio, mask_id, special_token_ids=(cls, sep), seed=seed)
            mask = to_np(out["mask"]).astype(bool)
            positions, weights = to_np(out["positions"]), to_np(out["slot_weights"])
            assert positions.shape == weights.shape == (6, slots)
            assert set(np.unique(weights)) <= {0.0, 1.0}
            for b in range(6):
                valid = positions[b][weights[b] == 1]
                # Each masked position once, and nothing else.
                assert sorted(valid) == list(np.flatnonzero(mask[b])), (ratio, seed, b)
            np.testing.assert_array_equal(
                to_np(out["slot_targets"]), np.take_along_axis(ids, positions, 1))


def test_num_text_slots_bounds_every_row_count():
    for length in (1, 7, 12, 32, 77):
        for ratio in (0.0, 0.1, 0.15, 0.25, 0.5, 0.75, 0.999, 1.0):
            slots = num_text_slots(length, ratio)
            counts = np.round(np.arange(length + 1, dtype="float32") * np.float32(ratio))
            assert 1 <= slots <= length and counts.max() <= slots, (length, ratio)
    assert num_text_slots(32, 0.15) == 5
    with pytest.raises(ValueError, match=r"mask_ratio must be in \[0, 1\]"):
        num_text_slots(12, 1.5)


def test_gather_tokens_equals_numpy_take_along_axis_with_its_gradient():
    from tests.backend_grad import gradients

    rng = np.random.default_rng(4)
    indices = np.stack([rng.permutation(16)[:5] for _ in range(3)]).astype("int32")
    weights = rng.normal(size=(3, 5, 4)).astype("float32")
    variable = keras.Variable(TOKENS)
    out = to_np(gather_tokens(TOKENS, indices))
    np.testing.assert_array_equal(out, np.take_along_axis(TOKENS, indices[..., None], 1))
    _, (grad,) = gradients(
        lambda: keras.ops.sum(keras.ops.multiply(
            gather_tokens(variable, indices), keras.ops.convert_to_tensor(weights))),
        [variable])
    expected = np.zeros_like(TOKENS)
    for b in range(3):
        expected[b, indices[b]] += weights[b]
    np.testing.assert_allclose(grad, expected, atol=1e-6)
