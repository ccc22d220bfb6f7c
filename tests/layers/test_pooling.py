import keras
import numpy as np
import pytest

from keras_maeclip.layers import ClassToken, TokenPooling

RNG = np.random.default_rng(0)
TOKENS = RNG.normal(size=(3, 5, 8)).astype("float32")
MASK = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], "int32")


def to_np(x):
    return keras.ops.convert_to_numpy(x)


def test_gap_and_max_without_mask():
    np.testing.assert_allclose(to_np(TokenPooling("gap")(TOKENS)), TOKENS.mean(1), atol=1e-6)
    np.testing.assert_allclose(to_np(TokenPooling("max")(TOKENS)), TOKENS.max(1), atol=1e-6)
    np.testing.assert_allclose(to_np(TokenPooling("first")(TOKENS)), TOKENS[:, 0], atol=0)


def test_padding_never_enters_a_mean_or_wins_a_max():
    # Padded positions hold huge values: they would dominate if not masked.
    tokens = np.where(MASK[:, :, None] == 1, TOKENS, 1e4).astype("float32")
    expected_mean = np.stack([TOKENS[i, MASK[i] == 1].mean(0) for i in range(3)])
    expected_max = np.stack([TOKENS[i, MASK[i] == 1].max(0) for i in range(3)])
    gap = to_np(TokenPooling("gap")(tokens, padding_mask=MASK))
    mx = to_np(TokenPooling("max")(tokens, padding_mask=MASK))
    np.testing.assert_allclose(gap, expected_mean, atol=1e-5)
    np.testing.assert_allclose(mx, expected_max, atol=1e-6)


def test_map_ignores_padded_tokens_and_matches_formula():
    layer = TokenPooling("map", num_heads=2, mlp_ratio=2.0)
    out = to_np(layer(TOKENS, padding_mask=MASK))
    changed = TOKENS.copy()
    changed[MASK == 0] = 123.0
    np.testing.assert_allclose(to_np(layer(changed, padding_mask=MASK)), out, atol=1e-5)
    assert out.shape == (3, 8)
    # Without a mask, the probe attends over every token: reference in NumPy.
    att = layer.attention
    q = np.einsum("bd,dhk->bhk", to_np(layer.probe)[:, 0], to_np(att.query_dense.kernel)) + to_np(att.query_dense.bias)
    k = np.einsum("btd,dhk->bthk", TOKENS, to_np(att.key_dense.kernel)) + to_np(att.key_dense.bias)
    v = np.einsum("btd,dhk->bthk", TOKENS, to_np(att.value_dense.kernel)) + to_np(att.value_dense.bias)
    logits = np.einsum("hk,bthk->bht", q[0], k) / np.sqrt(k.shape[-1])
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    ctx = np.einsum("bht,bthk->bhk", weights, v)
    x = np.einsum("bhk,hkd->bd", ctx, to_np(att.output_dense.kernel)) + to_np(att.output_dense.bias)
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    y = (x - mu) / np.sqrt(var + 1e-6) * to_np(layer.norm.gamma) + to_np(layer.norm.beta)
    h = y @ to_np(layer.mlp_in.kernel) + to_np(layer.mlp_in.bias)
    h = to_np(keras.activations.gelu(h))
    expected = x + h @ to_np(layer.mlp_out.kernel) + to_np(layer.mlp_out.bias)
    np.testing.assert_allclose(to_np(layer(TOKENS)), expected, atol=1e-4)


@pytest.mark.parametrize("mode", ["map", "gap", "max", "first"])
def test_config_round_trip(mode):
    layer = TokenPooling(mode, num_heads=4, mlp_ratio=2.0)
    clone = TokenPooling.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


def test_bad_arguments():
    with pytest.raises(ValueError, match="Unknown pooling='avg'"):
        TokenPooling("avg")
    with pytest.raises(ValueError, match="not divisible by num_heads=3"):
        TokenPooling("map", num_heads=3)(TOKENS)


def test_class_token_is_prepended():
    layer = ClassToken()
    out = to_np(layer(TOKENS))
    assert out.shape == (3, 6, 8)
    np.testing.assert_array_equal(out[:, 1:], TOKENS)
    np.testing.assert_array_equal(out[0, 0], out[2, 0])
    assert ClassToken.from_config(layer.get_config()).get_config() == layer.get_config()
