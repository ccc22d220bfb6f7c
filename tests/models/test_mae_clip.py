import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_maeclip.models import CLIP, MAECLIP, list_presets
from keras_maeclip.models.preprocessor import text_mask_ids
from tests.losses.test_contrastive import numpy_info_nce
from tests.tiny import TINY, raw_batch, synthetic_batch

# The tiny towers of tests/tiny.py plus a one-block decoder.
SMALL = dict(TINY, decoder=dict(hidden_dim=16, num_layers=1, num_heads=2))


def to_np(x):
    return keras.ops.convert_to_numpy(x)


def make(preprocessor, preset="maeclip_tiny_max", **kwargs):
    return MAECLIP.from_preset(preset, preprocessor=preprocessor, **{**SMALL, **kwargs})


def spy_on_image_encoder(model, monkeypatch):
    seen = []
    encoder = model.backbone.image_encoder
    original = encoder.encode_tokens
    monkeypatch.setattr(encoder, "encode_tokens", lambda x, **kw: seen.append(tuple(x.shape)) or original(x, **kw))
    return seen


def test_masked_view_encodes_only_the_kept_patches(preprocessor, monkeypatch):
    model = make(preprocessor, seed=0)
    seen = spy_on_image_encoder(model, monkeypatch)
    out = model(preprocessor(raw_batch(4)), training=True)
    assert seen == [(4, 4, 32)]  # 16 patches, 75 % masked: one pass over 4
    assert out["pixels"].shape == (4, 16, 48)
    # The token head scores ceil(0.15 * 12) = 2 slots per caption, not all 12.
    assert out["masked_token_logits"].shape == (4, 2, model.backbone.text_encoder.vocabulary_size)
    assert "token_logits" not in out
    assert out["image_embeddings"].shape == out["text_embeddings"].shape == (4, 16)
    np.testing.assert_array_equal(to_np(out["image_mask"]).sum(1), [12] * 4)


def test_full_view_adds_an_unmasked_pass_for_the_contrastive_embedding(preprocessor, monkeypatch):
    model = make(preprocessor, contrastive_view="full", text_mask_ratio=0.0, seed=0)
    inputs = preprocessor(raw_batch(4))
    seen = spy_on_image_encoder(model, monkeypatch)
    out = model(inputs, training=True)
    assert seen == [(4, 16, 32), (4, 4, 32)]
    monkeypatch.undo()
    # Unmasked text and the full image: exactly CLIP's embeddings.
    reference = model.backbone(inputs)
    for key in ("image_embeddings", "text_embeddings"):
        np.testing.assert_allclose(to_np(out[key]), to_np(reference[key]), atol=1e-5)


def test_evaluation_embeds_whole_images_and_captions(preprocessor, monkeypatch):
    # Issue 25: at training=False (evaluate, predict, every evaluation) the
    # contrastive embeddings are the full view's, whatever the training views;
    # the reconstruction outputs stay masked.
    model = make(preprocessor, text_mask_ratio=0.5, seed=0)
    inputs = preprocessor(raw_batch(4))
    seen = spy_on_image_encoder(model, monkeypatch)
    out = model(inputs)
    assert seen == [(4, 16, 32), (4, 4, 32)]  # the full pass, then the masked one
    monkeypatch.undo()
    reference = model.backbone(inputs)
    for key in ("image_embeddings", "text_embeddings"):
        np.testing.assert_allclose(to_np(out[key]), to_np(reference[key]), atol=1e-5)
    np.testing.assert_array_equal(to_np(out["image_mask"]).sum(1), [12] * 4)
    assert to_np(out["text_mask"]).sum() > 0
    predicted = model.predict(raw_batch(4), batch_size=4, verbose=0)
    for key in ("image_embeddings", "text_embeddings"):
        np.testing.assert_allclose(predicted[key], to_np(reference[key]), atol=1e-5)


def test_held_out_contrastive_loss_is_clips_on_the_same_weights(preprocessor):
    # model.evaluate: MAE-CLIP's contrastive term equals CLIP's on the same
    # towers (full views); the reconstruction terms are still reported.
    model = make(preprocessor, text_mask_ratio=0.5, seed=1)
    clip = CLIP(model.backbone, preprocessor=preprocessor)
    data = raw_batch(8)
    maeclip_logs = model.evaluate(data, batch_size=8, verbose=0, return_dict=True)
    clip_logs = clip.evaluate(data, batch_size=8, verbose=0, return_dict=True)
    assert maeclip_logs["contrastive_loss"] == pytest.approx(clip_logs["contrastive_loss"], rel=1e-5)
    assert maeclip_logs["image_reconstruction_loss"] > 0 and maeclip_logs["text_reconstruction_loss"] > 0


@pytest.mark.parametrize("text_view", ["masked", "full"])
def test_contrastive_text_view(preprocessor, text_view):
    # "full": the contrastive text embedding is CLIP's (whole caption) while
    # the decoder still reads the masked caption; "masked": the masked one.
    model = make(preprocessor, text_mask_ratio=0.5, contrastive_text_view=text_view, seed=2)
    inputs = preprocessor(raw_batch(8))
    out = model(inputs, training=True)
    whole = to_np(model.backbone(inputs)["text_embeddings"])
    assert to_np(out["text_mask"]).sum() > 0
    if text_view == "full":
        np.testing.assert_allclose(to_np(out["text_embeddings"]), whole, atol=1e-5)
    else:
        assert np.abs(to_np(out["text_embeddings"]) - whole).max() > 1e-3
    assert MAECLIP.from_config(model.get_config()).contrastive_text_view == text_view
    with pytest.raises(ValueError, match="contrastive_text_view"):
        make(preprocessor, contrastive_text_view="whole")


def test_unmasked_tuning_trains_the_last_steps_on_whole_inputs(preprocessor, monkeypatch):
    # Issue 25: the last N steps see every patch and the whole caption and
    # train the contrastive loss alone. Eager steps, so each step's inputs
    # to the towers can be recorded.
    model = make(preprocessor, text_mask_ratio=0.5, seed=3)
    model.compile(learning_rate=1e-3, run_eagerly=True)
    image_lengths, caption_has_mask = [], []
    encoder, text = model.backbone.image_encoder, model.backbone.text_encoder
    encode, embed = encoder.encode_tokens, text.embed_tokens
    monkeypatch.setattr(encoder, "encode_tokens",
                        lambda x, **kw: image_lengths.append(int(x.shape[1])) or encode(x, **kw))
    monkeypatch.setattr(text, "embed_tokens", lambda ids, **kw: caption_has_mask.append(
        bool((to_np(ids) == model.mask_token_id).any())) or embed(ids, **kw))
    data = tf.data.Dataset.from_tensors(raw_batch(8)).repeat()
    masked = model.fit(data, steps_per_epoch=3, epochs=1, verbose=0).history
    assert image_lengths == [4] * 3 and caption_has_mask == [True] * 3
    image_lengths.clear(), caption_has_mask.clear()
    model.set_unmasked_tuning(True)
    tuned = model.fit(data, steps_per_epoch=2, epochs=1, verbose=0).history
    assert image_lengths == [16] * 2 and caption_has_mask == [False] * 2
    assert int(to_np(model.optimizer.iterations)) == 5
    # The contrastive loss alone: the total is that term.
    assert tuned["loss"][0] == pytest.approx(tuned["contrastive_loss"][0], rel=1e-5)
    assert masked["loss"][0] > masked["contrastive_loss"][0]
    model.set_unmasked_tuning(False)
    image_lengths.clear()
    model.fit(data, steps_per_epoch=1, epochs=1, verbose=0)
    assert image_lengths == [4]


def test_text_masking_spares_padding_and_special_tokens(preprocessor):
    model = make(preprocessor, text_mask_ratio=0.5, seed=1)
    inputs = preprocessor(raw_batch(8))
    out = model(inputs)
    mask = to_np(out["text_mask"]).astype(bool)
    ids = to_np(inputs["token_ids"])
    _, special = text_mask_ids(preprocessor.tokenizer)
    assert mask.any()
    assert not (mask & ~to_np(inputs["padding_mask"]).astype(bool)).any()
    assert not (mask & np.isin(ids, special)).any()
    np.testing.assert_array_equal(to_np(out["text_targets"]), ids)
    eligible = to_np(inputs["padding_mask"]).astype(bool) & ~np.isin(ids, special)
    np.testing.assert_array_equal(mask.sum(1), np.round(eligible.sum(1) * 0.5))


def test_loss_is_the_weighted_sum_of_numpy_terms(preprocessor):
    model = make(preprocessor, image_loss_weight=0.3, text_loss_weight=0.7, text_mask_ratio=0.5,
                 norm_pix_loss=False, seed=2)
    inputs = preprocessor(raw_batch(8))
    y_pred = model(inputs)
    loss = float(model.compute_loss(x=inputs, y_pred=y_pred, training=False))
    img, txt = (to_np(y_pred[k]) for k in ("image_embeddings", "text_embeddings"))
    contrastive = numpy_info_nce(img, txt, 1 / 0.07, block=8)[0]
    # Pixel MSE over masked patches (no per-patch normalisation).
    images = to_np(inputs["images"])
    patches = images.reshape(8, 4, 4, 4, 4, 3).transpose(0, 1, 3, 2, 4, 5).reshape(8, 16, 48)
    per_patch = ((to_np(y_pred["pixels"]) - patches) ** 2).mean(-1)
    image_mask = to_np(y_pred["image_mask"])
    image = (per_patch * image_mask).sum() / image_mask.sum()
    # Cross-entropy over masked tokens.
    # Cross-entropy over masked tokens: the slots hold exactly the masked
    # positions (valid ones), with the original ids as targets.
    logits = to_np(y_pred["masked_token_logits"]).astype("float64")
    log_probs = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) - logits.max(-1, keepdims=True)
    positions = to_np(y_pred["masked_token_positions"])
    valid = to_np(y_pred["masked_token_weights"]).astype(bool)
    text_mask = to_np(y_pred["text_mask"]).astype(bool)
    targets = np.take_along_axis(to_np(y_pred["text_targets"]), positions, 1)
    np.testing.assert_array_equal(to_np(y_pred["masked_token_targets"])[valid], targets[valid])
    for b in range(8):
        assert sorted(positions[b][valid[b]]) == list(np.flatnonzero(text_mask[b]))
    nll = -np.take_along_axis(log_probs, targets[..., None], -1)[..., 0]
    text = nll[valid].mean()
    assert loss == pytest.approx(contrastive + 0.3 * image + 0.7 * text, rel=1e-4)


def test_fit_lowers_contrastive_and_both_reconstruction_losses(preprocessor):
    # One block of 16 = the whole batch: local and global losses coincide, so
    # the schedule can switch mid-run without changing what is measured.
    model = make(preprocessor, text_mask_ratio=0.5, local_batch_size=16, local_steps=15, seed=3)
    model.compile(learning_rate=3e-3, weight_decay=0.0)
    data = tf.data.Dataset.from_tensors(synthetic_batch(16)).repeat()
    history = model.fit(data, steps_per_epoch=15, epochs=2, verbose=0).history
    assert set(history) == {
        "loss", "contrastive_loss", "image_reconstruction_loss", "text_reconstruction_loss",
        "logit_scale", "uses_local_negatives", "image_to_text_accuracy", "text_to_image_accuracy",
    }
    for term in ("contrastive_loss", "image_reconstruction_loss", "text_reconstruction_loss"):
        assert history[term][1] < history[term][0], (term, history[term])
    # Epoch means are linear: the total is the weighted sum of the terms.
    for epoch in (0, 1):
        expected = (history["contrastive_loss"][epoch] + 0.05 * history["image_reconstruction_loss"][epoch]
                    + 0.1 * history["text_reconstruction_loss"][epoch])
        assert history["loss"][epoch] == pytest.approx(expected, rel=1e-5)
    # The local→global schedule reaches the contrastive term under fit.
    assert history["uses_local_negatives"] == pytest.approx([1.0, 0.0])
    assert int(to_np(model.contrastive.steps_seen)) == int(to_np(model.optimizer.iterations)) == 30


# Temperature 1e-6: the Gumbel noise (within [-2.7, 13.9]) moves a score by
# at most 1.7e-5 in cosine units, so the draw is the top-k up to that slack.
_SLACK = 3e-5


@pytest.mark.parametrize(
    "preset, view, overrides",
    [
        ("maeclip_tiny_map", "masked", {}),
        ("maeclip_tiny_map", "full", {}),
        ("maeclip_tiny_gap", "full",
         {"image_pooling": "first", "image_encoder": dict(TINY["image_encoder"], use_class_token=True)}),
        ("maeclip_tiny_gap", "masked", {}),
        ("maeclip_tiny_max", "full", {}),
    ],
)
def test_similarity_masking_scores_patches_as_the_dense_embeddings(preprocessor, preset, view, overrides):
    from keras_maeclip.evaluation.dense import dense_embedder

    model = make(preprocessor, preset=preset, masking="similarity", similarity_temperature=1e-6,
                 contrastive_view=view, text_mask_ratio=0.0, seed=4, **overrides)
    inputs = preprocessor(raw_batch(4))
    # NumPy reference: cosine of each patch's dense (grounding) embedding
    # with the unmasked caption's embedding.
    dense = np.asarray(dense_embedder(model).predict(inputs["images"], verbose=0), np.float64)
    dense = dense.reshape(4, -1, dense.shape[-1])
    dense /= np.linalg.norm(dense, axis=-1, keepdims=True)
    text = np.asarray(to_np(model.backbone(inputs)["text_embeddings"]), np.float64)
    text /= np.linalg.norm(text, axis=-1, keepdims=True)
    similarity = np.einsum("bld,bd->bl", dense, text)
    for direction in ("mask_similar", "keep_similar"):
        model.similarity_direction = direction
        mask = to_np(model(inputs, training=True)["image_mask"]).astype(bool)
        np.testing.assert_array_equal(mask.sum(1), [12] * 4)
        chosen, rest = (mask, ~mask) if direction == "mask_similar" else (~mask, mask)
        for row in range(4):
            lowest_chosen = similarity[row][chosen[row]].min()
            highest_rest = similarity[row][rest[row]].max()
            assert lowest_chosen >= highest_rest - _SLACK, (direction, row, lowest_chosen, highest_rest)


def test_preset_round_trip_restores_weights_and_task_arguments(preprocessor, tmp_path):
    model = make(preprocessor, contrastive_view="full", masking="similarity", image_mask_ratio=0.5,
                 text_loss_weight=0.2, similarity_direction="keep_similar", seed=6)
    model.save_to_preset(str(tmp_path))
    restored = MAECLIP.from_preset(str(tmp_path))
    for key in ("contrastive_view", "masking", "similarity_direction", "image_mask_ratio",
                "text_loss_weight", "mask_token_id", "special_token_ids"):
        assert getattr(restored, key) == getattr(model, key), key
    for a, b in zip(model.weights, restored.weights):
        np.testing.assert_array_equal(to_np(a), to_np(b), err_msg=a.path)
    inputs = preprocessor(raw_batch(4))
    np.testing.assert_array_equal(
        to_np(restored.backbone(inputs)["image_embeddings"]), to_np(model.backbone(inputs)["image_embeddings"])
    )
    clone = MAECLIP.from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    # A trained MAE-CLIP is a CLIP: the evaluation code takes either.
    assert isinstance(restored, CLIP)


def test_presets_and_errors(preprocessor):
    names = {f"maeclip_{size}_{p}" for size in ("tiny", "vit_b16") for p in ("gap", "max", "map")}
    assert names | {"maeclip_bench_small"} <= set(list_presets())
    assert make(preprocessor, preset="maeclip_tiny_map").backbone.image_pooling == "map"
    with pytest.raises(ValueError, match="has no cross-modal decoder"):
        MAECLIP.from_preset("clip_tiny_gap")
    with pytest.raises(ValueError, match="is an MAE-CLIP preset"):
        CLIP.from_preset("maeclip_tiny_gap")
    with pytest.raises(ValueError, match="contrastive_view"):
        make(preprocessor, contrastive_view="both")
    with pytest.raises(ValueError, match="masking"):
        make(preprocessor, masking="block")
    with pytest.raises(ValueError, match="similarity_direction='similar'.*mask_similar"):
        make(preprocessor, masking="similarity", similarity_direction="similar")
    other = make(preprocessor, image_size=32)
    with pytest.raises(ValueError, match="decoder does not match"):
        MAECLIP(backbone=make(preprocessor).backbone, decoder=other.decoder)
    with pytest.raises(ValueError, match=r"shape \(batch, 16, 16, 3\)"):
        make(preprocessor)(dict(preprocessor(raw_batch(2)), images=np.zeros((2, 8, 8, 3), "float32")))


def test_decoder_tokens_and_type_embeddings_skip_weight_decay(preprocessor):
    model = make(preprocessor)
    decayed = {v.path for v in model.trainable_variables if model.optimizer._use_weight_decay(v)}
    skipped = {v.path for v in model.trainable_variables} - decayed
    for name in ("image_mask_token", "text_mask_token", "type_embedding"):
        assert any(name in p for p in skipped), name
    assert any("decoder/token_head/kernel" in p for p in decayed)


def test_keras_file_round_trip_keeps_the_optimizer_state(preprocessor, tmp_path):
    model = make(preprocessor, seed=7)
    model.fit(tf.data.Dataset.from_tensors(raw_batch(8)).repeat(), steps_per_epoch=2, epochs=1, verbose=0)
    path = str(tmp_path / "maeclip.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert int(to_np(restored.optimizer.iterations)) == 2
    for a, b in zip(model.optimizer.variables, restored.optimizer.variables):
        np.testing.assert_array_equal(to_np(a), to_np(b), err_msg=a.path)
    assert restored.masking == model.masking and restored.decoder.vocabulary_size == model.decoder.vocabulary_size


def test_trained_preset_holds_no_optimizer_state_and_loads_without_skipping(preprocessor, tmp_path):
    import os
    import warnings

    import h5py

    model = make(preprocessor, seed=2)
    model.fit(raw_batch(8), batch_size=8, epochs=1, verbose=0)  # builds AdamW: its moments exist
    assert len(model.optimizer.variables) > 100
    model.save_to_preset(str(tmp_path))
    with h5py.File(os.path.join(tmp_path, "task.weights.h5")) as f:
        names = []
        f.visit(names.append)
    assert names and not any("optimizer" in n for n in names), names[:10]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        restored = MAECLIP.from_preset(str(tmp_path))
    assert not [w for w in caught if "Skipping variable loading" in str(w.message)]
    for a, b in zip(model.weights, restored.weights):
        np.testing.assert_array_equal(to_np(a), to_np(b), err_msg=a.path)
