import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_maeclip.data import synthetic
from keras_maeclip.models import MAE, list_presets
from keras_maeclip.models.preprocessor import image_converter

SMALL = dict(image_size=16, image_encoder=dict(patch_size=4, hidden_dim=32, num_layers=1, num_heads=2),
             decoder=dict(hidden_dim=16, num_layers=1, num_heads=2))


def to_np(x):
    return keras.ops.convert_to_numpy(x)


def images(n=8, size=16, seed=0):
    raw = next(synthetic.synthetic_dataset(n, seed=seed, image_size=size).batch(n).as_numpy_iterator())["image"]
    return to_np(image_converter(size)(raw.astype("float32")))


def test_encoder_sees_only_the_kept_patches(monkeypatch):
    model = MAE.from_preset("mae_tiny", mask_ratio=0.75, seed=0, **SMALL)
    seen = []
    original = model.backbone.encode_tokens
    monkeypatch.setattr(model.backbone, "encode_tokens", lambda x, **kw: seen.append(x.shape) or original(x, **kw))
    out = model({"images": images(2)})
    assert seen == [(2, 4, 32)]  # 16 patches, 75 % masked
    assert out["pixels"].shape == (2, 16, 48)
    np.testing.assert_array_equal(to_np(out["image_mask"]).sum(1), [12, 12])


def test_fit_decreases_the_reconstruction_loss():
    model = MAE.from_preset("mae_tiny", seed=1, **SMALL)
    model.compile(learning_rate=3e-3, weight_decay=0.0)
    data = tf.data.Dataset.from_tensor_slices({"images": images(32)}).batch(16).repeat()
    state = to_np(model.seed_generator.state).copy()
    history = model.fit(data, steps_per_epoch=8, epochs=3, verbose=0).history
    # The masking seed advances inside the compiled step: new masks each step.
    assert not np.array_equal(to_np(model.seed_generator.state), state)
    assert set(history) == {"loss", "image_reconstruction_loss"}
    assert history["loss"][-1] < history["loss"][0] - 0.05
    for epoch in range(3):
        assert history["loss"][epoch] == pytest.approx(history["image_reconstruction_loss"][epoch], rel=1e-5)


def test_preset_round_trip_and_config(tmp_path):
    model = MAE.from_preset("mae_tiny", mask_ratio=0.5, norm_pix_loss=False, seed=3, **SMALL)
    model.save_to_preset(str(tmp_path))
    restored = MAE.from_preset(str(tmp_path))
    assert restored.mask_ratio == 0.5 and restored.norm_pix_loss is False
    x = images(2)
    tokens = to_np(model.backbone.embed_patches(x))
    for a, b in zip(model.decoder.weights, restored.decoder.weights):
        np.testing.assert_array_equal(to_np(a), to_np(b))
    np.testing.assert_array_equal(to_np(restored.backbone.encode_tokens(tokens)), to_np(model.backbone.encode_tokens(tokens)))
    clone = MAE.from_config(model.get_config())
    assert clone.get_config() == model.get_config()


def test_presets_and_errors():
    assert {"mae_tiny", "mae_vit_b16"} <= set(list_presets())
    assert {"mae_tiny", "mae_vit_b16"} <= set(MAE.presets)
    with pytest.raises(ValueError, match="is a CLIP preset"):
        MAE.from_preset("clip_tiny_gap")
    with pytest.raises(ValueError, match="Unknown overrides for 'mae_tiny'"):
        MAE.from_preset("mae_tiny", embedding_dim=3)
    model = MAE.from_preset("mae_tiny", **SMALL)
    with pytest.raises(ValueError, match=r"shape \(batch, 16, 16, 3\)"):
        model({"images": np.zeros((1, 32, 32, 3), "float32")})


def test_evaluate_weights_terms_by_batch_size_like_the_total():
    # 40 examples in batches of 16: a partial last batch of 8.
    model = MAE.from_preset("mae_tiny", seed=4, **SMALL)
    data = tf.data.Dataset.from_tensor_slices({"images": images(40)}).batch(16)
    result = model.evaluate(data, verbose=0, return_dict=True)
    assert result["loss"] == pytest.approx(result["image_reconstruction_loss"], rel=1e-5)
