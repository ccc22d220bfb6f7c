import keras
import numpy as np
import pytest

from tests.backend_grad import gradients

from keras_maeclip.layers import random_masking, sincos_2d, text_masking
from keras_maeclip.losses import token_reconstruction_loss
from keras_maeclip.models.cross_modal_decoder import CrossModalDecoder


def to_np(x):
    return keras.ops.convert_to_numpy(x)


def decoder(**kwargs):
    args = dict(num_patches=16, patch_size=4, hidden_dim=16, num_layers=1, num_heads=2,
                vocabulary_size=30, sequence_length=8)
    args.update(kwargs)
    return CrossModalDecoder(**args)


TOKENS = np.random.default_rng(0).normal(size=(2, 16, 12)).astype("float32")
TEXT = np.random.default_rng(1).normal(size=(2, 8, 10)).astype("float32")
PADDING = np.array([[1] * 5 + [0] * 3, [1] * 8], "int32")


def test_shapes_and_masked_positions_receive_the_mask_token():
    masked = random_masking(TOKENS, 0.75, seed=0)
    layer = decoder()
    out = layer(masked["kept"], masked["ids_restore"], TEXT, PADDING == 0, PADDING)
    assert out["pixels"].shape == (2, 16, 48) and out["token_logits"].shape == (2, 8, 30)
    # Masked positions hold the learned token, kept ones their own
    # projection, each at its original position (plus sin-cos and type).
    assembled = to_np(layer.assemble_image_tokens(masked["kept"], masked["ids_restore"]))
    offset = to_np(sincos_2d(16, 4))[None] + to_np(layer.type_embedding)[0]
    content = assembled - offset
    mask = to_np(masked["mask"]).astype(bool)
    token = to_np(layer.image_mask_token)[0, 0]
    np.testing.assert_allclose(content[mask], np.broadcast_to(token, (mask.sum(), 16)), atol=1e-5)
    projected = to_np(layer.image_projection(masked["kept"]))
    ids_keep = to_np(masked["ids_keep"])
    for b in range(2):
        np.testing.assert_allclose(content[b, ids_keep[b]], projected[b], atol=1e-5)


def test_text_padding_does_not_change_image_outputs():
    layer = decoder()
    ids = np.tile(np.arange(16)[None], (2, 1))
    a = to_np(layer(TOKENS[:, :4], ids, TEXT, None, PADDING)["pixels"])
    junk = TEXT.copy()
    junk[PADDING == 0] = 50.0
    b = to_np(layer(TOKENS[:, :4], ids, junk, None, PADDING)["pixels"])
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_image_only_decoder_and_errors():
    layer = decoder(vocabulary_size=None, sequence_length=None)
    ids = np.tile(np.arange(16)[None], (2, 1))
    assert set(layer(TOKENS[:, :4], ids)) == {"pixels"}
    with pytest.raises(ValueError, match="no text head"):
        layer(TOKENS[:, :4], ids, TEXT)
    with pytest.raises(ValueError, match="Give both vocabulary_size and sequence_length"):
        decoder(sequence_length=None)
    with pytest.raises(ValueError, match="square grid"):
        decoder(num_patches=12)


def test_config_round_trip():
    layer = decoder()
    clone = CrossModalDecoder.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


def test_masked_position_head_matches_the_full_head_in_loss_and_gradients():
    # The token head run only at the masked slots must give the loss (and
    # every decoder gradient) of the full head restricted to masked tokens.
    layer = decoder()
    ids = np.random.default_rng(2).integers(5, 30, (2, 8)).astype("int32") * PADDING
    text = text_masking(ids, PADDING, 0.5, 1, seed=3)
    masked = random_masking(TOKENS, 0.75, seed=0)
    args = (masked["kept"], masked["ids_restore"], TEXT, text["mask"], PADDING)
    full = to_np(layer(*args)["token_logits"])
    slots = to_np(layer(*args, text_positions=text["positions"])["token_logits"])
    positions = to_np(text["positions"])
    assert slots.shape == (2, 4, 30)  # ceil(0.5 * 8) slots
    np.testing.assert_allclose(slots, np.take_along_axis(full, positions[..., None], 1), atol=1e-5)

    def full_loss():
        logits = layer(*args)["token_logits"]
        return token_reconstruction_loss(ids, logits, text["mask"])

    def slot_loss():
        logits = layer(*args, text_positions=text["positions"])["token_logits"]
        return token_reconstruction_loss(text["slot_targets"], logits, text["slot_weights"])

    # Everything but the pixel head feeds the token logits.
    variables = [v for v in layer.trainable_variables if "pixel_head" not in v.path]
    value_full, grads_full = gradients(full_loss, variables)
    value_slot, grads_slot = gradients(slot_loss, variables)
    # NumPy reference of the loss from the full logits on the masked tokens.
    mask = to_np(text["mask"]).astype(bool)
    log_probs = full - np.log(np.exp(full - full.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
        - full.max(-1, keepdims=True)
    nll = -np.take_along_axis(log_probs, ids[..., None], -1)[..., 0]
    assert value_slot == pytest.approx(nll[mask].mean(), rel=1e-5)
    assert value_slot == pytest.approx(value_full, rel=1e-6)
    for v, a, b in zip(variables, grads_full, grads_slot):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6, err_msg=v.path)
    assert any(np.abs(g).max() > 0 for g in grads_slot)
