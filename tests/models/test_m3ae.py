import keras
import numpy as np
import pytest

from keras_maeclip.data import synthetic
from keras_maeclip.models import MAE, M3AE, M3AEBackbone, list_presets
from keras_maeclip.layers import num_text_slots
from keras_maeclip.models.preprocessor import MASK_TOKEN, text_mask_ids
from tests.backend_grad import gradients

# 16² images, patch 4 (16 patches), a 32-wide 1-layer shared encoder and a
# 16-wide 1-block decoder; the preprocessor fixture gives the vocabulary and
# 12 tokens.
SMALL = dict(image_size=16, encoder=dict(patch_size=4, hidden_dim=32, num_layers=1, num_heads=2),
             decoder=dict(hidden_dim=16, num_layers=1, num_heads=2))


def to_np(x):
    return keras.ops.convert_to_numpy(x)


def make_m3ae(preprocessor, **kwargs):
    return M3AE.from_preset("m3ae_tiny", preprocessor=preprocessor, **{**SMALL, **kwargs})


def raw_pairs(n, seed=0):
    """The synthetic set as raw `{"images", "captions"}` pairs (16² images)."""
    return synthetic.synthetic_dataset(n, seed=seed, image_size=16).map(
        lambda ex: {"images": ex["image"], "captions": ex["caption"]}
    )


def batch(preprocessor, n=8, seed=0):
    raw = next(raw_pairs(n, seed).batch(n).as_numpy_iterator())
    return {k: to_np(v) for k, v in preprocessor(raw).items()}


def test_shared_encoder_sees_kept_patches_plus_the_whole_caption(preprocessor, monkeypatch):
    model = make_m3ae(preprocessor, image_mask_ratio=0.75, seed=0)
    seen = []
    original = model.backbone.encode_tokens

    def spy(image_tokens, text_tokens, padding_mask=None, **kwargs):
        seen.append((tuple(image_tokens.shape), tuple(text_tokens.shape)))
        return original(image_tokens, text_tokens, padding_mask, **kwargs)

    monkeypatch.setattr(model.backbone, "encode_tokens", spy)
    out = model(batch(preprocessor, 8))
    # 16 patches, 75 % masked: 4 kept patches + 12 text tokens = 16 positions.
    assert seen == [((8, 4, 32), (8, 12, 32))]
    vocabulary = preprocessor.tokenizer.vocabulary_size()
    assert out["pixels"].shape == (8, 16, 48)
    # The token head scores only ceil(ratio * 12) slots per caption.
    slots = num_text_slots(12, model.text_mask_ratio)
    assert slots < 12
    assert out["masked_token_logits"].shape == (8, slots, vocabulary)
    assert set(out) == {"pixels", "image_mask", "masked_token_logits", "masked_token_positions",
                        "masked_token_targets", "masked_token_weights", "text_mask",
                        "text_targets"}


def test_masks_skip_padding_and_special_tokens_and_count_exactly(preprocessor, monkeypatch):
    model = make_m3ae(preprocessor, image_mask_ratio=0.75, text_mask_ratio=0.5, seed=1)
    mask_id, special = text_mask_ids(preprocessor.tokenizer)
    assert model.mask_token_id == mask_id == preprocessor.tokenizer.token_to_id(MASK_TOKEN)
    assert model.special_token_ids == special
    inputs = batch(preprocessor, 8)
    # The synthetic captions fill all 12 tokens: shorten some, as padding would.
    lengths = np.array([3, 5, 7, 12, 4, 9, 12, 6])
    padding = np.arange(12)[None] < lengths[:, None]
    inputs["padding_mask"] = padding
    inputs["token_ids"] = np.where(padding, inputs["token_ids"], 0).astype("int32")
    encoded_ids = []
    original = model.backbone.embed_tokens
    monkeypatch.setattr(
        model.backbone, "embed_tokens", lambda ids: encoded_ids.append(to_np(ids)) or original(ids)
    )
    out = {k: to_np(v) for k, v in model(inputs).items()}
    ids = inputs["token_ids"]
    text_mask, image_mask = out["text_mask"], out["image_mask"]
    assert text_mask.dtype == bool and image_mask.dtype == np.float32
    eligible = padding & ~np.isin(ids, special)
    assert not (text_mask & ~eligible).any()
    np.testing.assert_array_equal(text_mask.sum(1), np.round(eligible.sum(1) * 0.5))
    np.testing.assert_array_equal(image_mask.sum(1), np.full(8, 12.0))
    np.testing.assert_array_equal(out["text_targets"], ids)
    # The encoder sees [MASK] at the masked positions and the caption elsewhere.
    np.testing.assert_array_equal(encoded_ids[0], np.where(text_mask, mask_id, ids))


def test_without_a_preprocessor_the_mask_ids_follow_learn_vocabulary():
    model = M3AE.from_preset("m3ae_tiny", vocabulary_size=50, **SMALL)
    assert (model.mask_token_id, model.special_token_ids) == text_mask_ids()


def type_embedding(backbone):
    (variable,) = [w for w in backbone.trainable_weights if "type_embedding" in w.path]
    return variable


def test_fit_on_synthetic_pairs_lowers_both_reconstruction_losses(preprocessor):
    model = make_m3ae(preprocessor, seed=2)
    model.compile(learning_rate=3e-3, weight_decay=0.0)
    data = raw_pairs(32).batch(8).cache().repeat()
    types = to_np(type_embedding(model.backbone)).copy()
    history = model.fit(data, steps_per_epoch=8, epochs=3, verbose=0).history
    # With weight decay off only gradients move the type embedding: both rows train.
    moved = np.abs(to_np(type_embedding(model.backbone)) - types).sum(1)
    assert moved[0] > 0 and moved[1] > 0
    assert set(history) == {"loss", "image_reconstruction_loss", "text_reconstruction_loss"}
    image, text = history["image_reconstruction_loss"], history["text_reconstruction_loss"]
    assert image[-1] < image[0] - 0.1
    assert text[-1] < text[0] - 0.3
    # Every batch has 8 pairs, so the epoch means are linear in the terms:
    # loss = 1.0 · image + 0.1 · text, up to float32 rounding (rel 1e-5).
    assert (model.image_loss_weight, model.text_loss_weight) == (1.0, 0.1)
    for epoch in range(3):
        assert history["loss"][epoch] == pytest.approx(image[epoch] + 0.1 * text[epoch], rel=1e-5)


def test_type_embedding_gets_gradients_through_the_functional_graph(preprocessor):
    model = make_m3ae(preprocessor, seed=4)
    inputs = batch(preprocessor, 8)
    variable = type_embedding(model.backbone)
    assert tuple(variable.shape) == (2, 32)
    rng = np.random.default_rng(0)
    image_weights = keras.ops.convert_to_tensor(rng.normal(size=(8, 16, 32)).astype("float32"))
    text_weights = keras.ops.convert_to_tensor(rng.normal(size=(8, 12, 32)).astype("float32"))

    def loss():  # a random projection: a plain sum of LayerNorm outputs has no gradient
        out = model.backbone(inputs)
        return keras.ops.sum(out["image_tokens"] * image_weights) + keras.ops.sum(
            out["text_tokens"] * text_weights)

    _, (grad,) = gradients(loss, [variable])
    assert np.all(np.isfinite(grad))
    assert np.abs(grad[0]).sum() > 0 and np.abs(grad[1]).sum() > 0


def test_preset_round_trip_and_config(preprocessor, tmp_path):
    model = make_m3ae(
        preprocessor, image_mask_ratio=0.5, text_mask_ratio=0.25, image_loss_weight=0.5,
        text_loss_weight=0.2, norm_pix_loss=False, seed=3,
    )
    model.save_to_preset(str(tmp_path))
    restored = M3AE.from_preset(str(tmp_path))
    assert isinstance(restored.backbone, M3AEBackbone)
    for key in ("image_mask_ratio", "text_mask_ratio", "image_loss_weight", "text_loss_weight",
                "norm_pix_loss", "mask_token_id", "special_token_ids", "seed"):
        assert getattr(restored, key) == getattr(model, key), key
    vocabulary = preprocessor.tokenizer.get_vocabulary()
    assert restored.preprocessor.tokenizer.get_vocabulary() == vocabulary
    before = {w.path: to_np(w) for w in model.trainable_weights}
    after = {w.path: to_np(w) for w in restored.trainable_weights}
    assert before.keys() == after.keys() and any("decoder" in p for p in before)
    for path in before:
        np.testing.assert_array_equal(after[path], before[path], err_msg=path)
    inputs = batch(preprocessor, 2)
    expected, got = model.backbone(inputs), restored.backbone(inputs)
    for key in ("image_tokens", "text_tokens"):
        np.testing.assert_allclose(to_np(got[key]), to_np(expected[key]), atol=1e-6)
    clone = M3AE.from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    backbone = M3AEBackbone.from_config(model.backbone.get_config())
    assert backbone.get_config() == model.backbone.get_config()


def test_presets_and_errors(preprocessor):
    assert {"m3ae_tiny", "m3ae_vit_b16"} <= set(list_presets())
    assert {"m3ae_tiny", "m3ae_vit_b16"} <= set(M3AE.presets)
    with pytest.raises(ValueError, match="Unknown preset 'nope'"):
        M3AE.from_preset("nope")
    with pytest.raises(ValueError, match="is a CLIP preset"):
        M3AE.from_preset("clip_tiny_gap")
    with pytest.raises(ValueError, match="is an M3AE preset"):
        MAE.from_preset("m3ae_tiny")
    with pytest.raises(ValueError, match="Unknown overrides for 'm3ae_tiny'"):
        M3AE.from_preset("m3ae_tiny", embedding_dim=3)
    with pytest.raises(ValueError, match="must be divisible by num_heads"):
        M3AE.from_preset("m3ae_tiny", encoder=dict(hidden_dim=30))
    model = make_m3ae(preprocessor)
    inputs = batch(preprocessor, 1)
    with pytest.raises(ValueError, match=r"shape \(batch, 16, 16, 3\)"):
        model({**inputs, "images": np.zeros((1, 32, 32, 3), "float32")})
    with pytest.raises(ValueError, match="M3AE expects a dict"):
        model({"images": inputs["images"]})


def numpy_sincos_1d(dim, length):
    """m3ae_public's `get_1d_sincos_pos_embed` in NumPy."""
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2))
    angles = np.arange(length, dtype=np.float64)[:, None] * omega[None]
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def test_m3ae_public_options_sincos_text_positions_and_per_caption_loss(preprocessor, tmp_path):
    model = make_m3ae(preprocessor, encoder=dict(SMALL["encoder"], text_positions="sincos"),
                      text_loss_reduction="captions", norm_pix_loss=False, seed=0)
    backbone = model.backbone
    assert backbone.text_positions == "sincos"
    assert not any("position" in w.path for w in backbone.trainable_weights)
    ids = batch(preprocessor, 2)["token_ids"]
    table = to_np(backbone.token_embedding.embeddings)
    expected = table[ids] + numpy_sincos_1d(32, ids.shape[1])[None] + to_np(type_embedding(backbone))[1]
    np.testing.assert_allclose(to_np(backbone.embed_tokens(ids)), expected, atol=1e-5)
    # The per-caption reduction is what compute_loss uses.
    inputs = batch(preprocessor, 4)
    out = model(inputs)
    from keras_maeclip.losses import pixel_reconstruction_loss, token_reconstruction_loss

    text = token_reconstruction_loss(out["masked_token_targets"], out["masked_token_logits"],
                                     out["masked_token_weights"], reduction="captions")
    image = pixel_reconstruction_loss(inputs["images"], out["pixels"], out["image_mask"], 4, False)
    total = float(model.compute_loss(x=inputs, y_pred=out, training=False))
    assert total == pytest.approx(float(image) + 0.1 * float(text), rel=1e-5)
    model.save_to_preset(str(tmp_path))
    restored = M3AE.from_preset(str(tmp_path))
    assert restored.text_loss_reduction == "captions" and restored.backbone.text_positions == "sincos"
    with pytest.raises(ValueError, match="text_positions"):
        make_m3ae(preprocessor, encoder=dict(SMALL["encoder"], text_positions="rope"))
    with pytest.raises(ValueError, match="text_loss_reduction"):
        make_m3ae(preprocessor, text_loss_reduction="sum")
