"""FLIP's patch dropout for plain CLIP, and the unmasked tuning switch."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_maeclip.layers import random_masking
from keras_maeclip.models import CLIP, MAECLIP
from tests.models.test_mae_clip import SMALL
from tests.tiny import make_clip, raw_batch


def to_np(x):
    return keras.ops.convert_to_numpy(x)


def spy_on_first_block(model, monkeypatch):
    """Token counts that reach the image tower's first transformer block."""
    seen = []
    block = model.backbone.image_encoder.transformer_layers[0]
    original = block.call
    monkeypatch.setattr(block, "call", lambda x, *a, **kw: seen.append(x.shape[1]) or original(x, *a, **kw))
    return seen


def test_training_encodes_the_kept_patches_and_inference_all(preprocessor, monkeypatch):
    model = make_clip(preprocessor, patch_dropout=0.75, seed=3)  # 16 patches → 4 kept
    seen = spy_on_first_block(model, monkeypatch)
    inputs = preprocessor(raw_batch(4))
    model(inputs, training=True)
    assert seen == [4]
    seen.clear()
    model(inputs, training=False)
    model.backbone.encode_images(inputs["images"])
    assert seen == [16, 16]


def test_training_pass_equals_manual_masking_and_inference_the_backbone(preprocessor):
    model = make_clip(preprocessor, patch_dropout=0.5, seed=7)
    inputs = preprocessor(raw_batch(4))
    got = {k: to_np(v) for k, v in model(inputs, training=True).items()}
    # Reference: the same seed, masking by hand, then the tower's two halves.
    backbone = model.backbone
    encoder = backbone.image_encoder
    kept = random_masking(encoder.embed_patches(inputs["images"]), 0.5, keras.random.SeedGenerator(7))["kept"]
    assert kept.shape[1] == 8
    expected = to_np(backbone.embed_image_tokens(encoder.encode_tokens(kept)))
    np.testing.assert_allclose(got["image_embeddings"], expected, rtol=1e-5, atol=1e-6)
    full = {k: to_np(v) for k, v in backbone(inputs).items()}
    np.testing.assert_allclose(got["text_embeddings"], full["text_embeddings"], rtol=1e-5, atol=1e-6)
    # Dropping patches changes the image embedding; inference does not drop.
    assert np.abs(got["image_embeddings"] - full["image_embeddings"]).max() > 1e-3
    np.testing.assert_array_equal(to_np(model(inputs)["image_embeddings"]), full["image_embeddings"])


def test_fit_then_unmasked_tuning_retraces_with_every_patch(preprocessor, monkeypatch):
    model = make_clip(preprocessor, patch_dropout=0.5, seed=1)
    model.compile(learning_rate=1e-3)
    seen = spy_on_first_block(model, monkeypatch)
    data = tf.data.Dataset.from_tensors(raw_batch(8)).repeat()
    first = model.fit(data, steps_per_epoch=2, epochs=1, verbose=0).history
    assert seen and set(seen) == {8}
    seen.clear()
    model.set_patch_dropout(0.0)
    second = model.fit(data, steps_per_epoch=2, epochs=1, verbose=0).history
    assert seen and set(seen) == {16}
    assert np.isfinite(first["loss"][0]) and np.isfinite(second["loss"][0])


def test_config_round_trip_and_errors(preprocessor, tmp_path):
    model = make_clip(preprocessor, patch_dropout=0.5, seed=2)
    model.save_to_preset(str(tmp_path))
    restored = CLIP.from_preset(str(tmp_path))
    assert (restored.patch_dropout, restored.seed) == (0.5, 2)
    assert restored.get_config() == model.get_config()
    with pytest.raises(ValueError, match="patch_dropout=1.0"):
        make_clip(preprocessor, patch_dropout=1.0)
    plain = make_clip(preprocessor)
    assert plain.seed_generator is None
    with pytest.raises(ValueError, match="built with patch_dropout=0"):
        plain.set_patch_dropout(0.5)
    with pytest.raises(ValueError, match="image_mask_ratio instead of patch_dropout"):
        MAECLIP.from_preset("maeclip_tiny_gap", preprocessor=preprocessor, patch_dropout=0.5, **SMALL)
