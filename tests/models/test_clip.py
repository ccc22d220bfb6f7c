import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_maeclip.models import CLIP, ImageTextBackbone, list_presets
from tests.losses.test_contrastive import numpy_info_nce
from tests.tiny import make_clip, raw_batch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def to_np(x):
    return keras.ops.convert_to_numpy(x)


def outputs(model, inputs):
    return {k: to_np(v) for k, v in model(inputs).items()}


def test_fit_decreases_loss_and_reports_every_metric(preprocessor):
    model = make_clip(preprocessor)
    model.compile(learning_rate=3e-3, weight_decay=0.0)
    data = tf.data.Dataset.from_tensors(raw_batch(8)).repeat()
    history = model.fit(data, steps_per_epoch=10, epochs=2, verbose=0).history
    assert set(history) == {
        "loss",
        "contrastive_loss",
        "logit_scale",
        "uses_local_negatives",
        "image_to_text_accuracy",
        "text_to_image_accuracy",
    }
    assert history["loss"][-1] < history["loss"][0] - 0.1
    # Both trackers are reset every epoch, so they agree in every epoch.
    for epoch in (0, 1):
        assert history["loss"][epoch] == pytest.approx(history["contrastive_loss"][epoch], rel=1e-5)
    assert 0.0 <= history["image_to_text_accuracy"][-1] <= 1.0
    assert history["logit_scale"][0] == pytest.approx(1 / 0.07, rel=0.05)


def test_local_negatives_train_and_use_per_block_negatives(preprocessor):
    model = make_clip(preprocessor, negatives="local", local_batch_size=4)
    inputs = preprocessor(raw_batch(8))
    y_pred = model(inputs)
    img, txt = (to_np(y_pred[k]) for k in ("image_embeddings", "text_embeddings"))
    expected = numpy_info_nce(img, txt, 1 / 0.07, block=4)[0]
    assert float(model.compute_loss(y_pred=y_pred)) == pytest.approx(expected, rel=1e-4)
    data = tf.data.Dataset.from_tensors(raw_batch(8)).repeat()
    history = model.fit(data, steps_per_epoch=2, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0])


def test_local_to_global_schedule_follows_the_optimizer_steps_under_fit(preprocessor):
    model = make_clip(preprocessor, local_batch_size=4, local_steps=3)
    data = tf.data.Dataset.from_tensors(raw_batch(8)).repeat()
    history = model.fit(data, steps_per_epoch=2, epochs=3, verbose=0).history
    # Steps 0-2 local, 3-5 global: per-epoch shares 1, 1/2, 0.
    assert history["uses_local_negatives"] == pytest.approx([1.0, 0.5, 0.0])
    steps = int(to_np(model.contrastive.steps_seen))
    assert steps == int(to_np(model.optimizer.iterations)) == 6
    inputs = preprocessor(raw_batch(8))
    y_pred = model(inputs)
    img, txt = (to_np(y_pred[k]) for k in ("image_embeddings", "text_embeddings"))
    scale = float(to_np(model.contrastive.logit_scale))
    expected = numpy_info_nce(img, txt, scale, block=8)[0]
    assert float(model.compute_loss(y_pred=y_pred, training=False)) == pytest.approx(expected, rel=1e-4)


def test_compile_defaults_exclude_the_right_variables_from_decay(preprocessor):
    model = make_clip(preprocessor)
    optimizer = model.optimizer
    assert isinstance(optimizer, keras.optimizers.AdamW)
    decayed = {v.path for v in model.trainable_variables if optimizer._use_weight_decay(v)}
    skipped = {v.path for v in model.trainable_variables} - decayed
    assert any("log_logit_scale" in p for p in skipped)
    assert any("position_embedding" in p for p in skipped)
    assert any(p.endswith("bias") for p in skipped)
    assert any(p.endswith("gamma") for p in skipped)
    assert all(not p.endswith(("bias", "gamma", "beta")) for p in decayed)
    assert any("projection/kernel" in p for p in decayed)
    assert any("token_embedding" in p for p in decayed)


def test_warmup_then_cosine_schedule(preprocessor):
    model = make_clip(preprocessor, compile=False)
    model.compile(learning_rate=1e-3, warmup_steps=10, total_steps=110)
    schedule = model.optimizer._learning_rate
    assert float(schedule(0)) == pytest.approx(0.0)
    assert float(schedule(5)) == pytest.approx(5e-4, rel=1e-5)
    assert float(schedule(10)) == pytest.approx(1e-3, rel=1e-5)
    assert float(schedule(60)) == pytest.approx(5e-4, rel=1e-4)
    assert float(schedule(110)) == pytest.approx(0.0, abs=1e-8)
    with pytest.raises(ValueError, match="do not pass loss="):
        model.compile(loss="mse")


@pytest.mark.parametrize("preset", ["clip_tiny_gap", "clip_tiny_max", "clip_tiny_map"])
def test_keras_save_and_load_reproduce_outputs(preprocessor, preset, tmp_path):
    model = make_clip(preprocessor, preset=preset)
    inputs = preprocessor(raw_batch(4))
    path = str(tmp_path / "clip.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    before, after = outputs(model, inputs), outputs(restored, inputs)
    for key in before:
        np.testing.assert_array_equal(after[key], before[key])
    assert restored.backbone.image_pooling == preset.split("_")[-1]


def test_preset_save_and_load_reproduce_outputs_and_vocabulary(preprocessor, tmp_path):
    model = make_clip(preprocessor, preset="clip_tiny_max", negatives="local", local_batch_size=2)
    model.contrastive.log_logit_scale.assign(2.5)
    model.save_to_preset(str(tmp_path))
    assert os.path.exists(tmp_path / "assets" / "tokenizer" / "vocabulary.txt")
    restored = CLIP.from_preset(str(tmp_path))
    assert restored.preprocessor.tokenizer.get_vocabulary() == preprocessor.tokenizer.get_vocabulary()
    assert float(restored.contrastive.log_logit_scale) == pytest.approx(2.5)
    assert restored.contrastive.local_batch_size == 2
    raw = raw_batch(4, seed=5)
    before = outputs(model, preprocessor(raw))
    after = outputs(restored, restored.preprocessor(raw))
    for key in before:
        np.testing.assert_array_equal(after[key], before[key])
    backbone = ImageTextBackbone.from_preset(str(tmp_path))
    np.testing.assert_array_equal(
        to_np(backbone(preprocessor(raw))["text_embeddings"]), before["text_embeddings"]
    )


def test_weights_from_another_backend_load_with_equal_outputs(preprocessor, tmp_path):
    others = {"jax": "tensorflow", "tensorflow": "torch", "torch": "jax"}
    source = others[keras.config.backend()]
    env = dict(os.environ, KERAS_BACKEND=source, PYTHONPATH=REPO)
    subprocess.run(
        [sys.executable, "-m", "tests.models.cross_backend_worker", str(tmp_path)],
        cwd=REPO, env=env, check=True, capture_output=True, timeout=300,
    )
    saved = np.load(tmp_path / "outputs.npz")
    assert str(saved["backend"]) == source
    inputs = preprocessor(raw_batch(4, seed=3))
    model = make_clip(preprocessor, preset="clip_tiny_map")
    model.load_weights(str(tmp_path / "model.weights.h5"))
    from_preset = CLIP.from_preset(str(tmp_path / "preset"))
    for restored in (model, from_preset):
        got = outputs(restored, inputs)
        for key in ("image_embeddings", "text_embeddings"):
            np.testing.assert_allclose(got[key], saved[key], atol=1e-5, rtol=0)


def test_config_round_trips(preprocessor):
    model = make_clip(preprocessor, preset="clip_tiny_map", negatives="local", local_batch_size=4)
    for obj in (model, model.backbone, model.backbone.image_encoder, model.backbone.text_encoder, model.preprocessor):
        clone = type(obj).from_config(obj.get_config())
        assert clone.get_config() == obj.get_config(), type(obj).__name__


def test_bfloat16_mixed_precision_forward(preprocessor):
    keras.config.set_dtype_policy("mixed_bfloat16")
    model = make_clip(preprocessor, preset="clip_tiny_map")
    assert model.backbone.image_encoder.transformer_layers[0].compute_dtype == "bfloat16"
    out = model(preprocessor(raw_batch(4)))
    loss = model.compute_loss(y_pred=out)
    for value in list(out.values()) + [loss]:
        assert keras.backend.standardize_dtype(value.dtype) == "float32"
        assert np.all(np.isfinite(to_np(value)))
    np.testing.assert_allclose(np.linalg.norm(to_np(out["image_embeddings"]), axis=1), 1.0, atol=1e-3)


def test_presets_are_registered_and_unknown_names_list_them():
    names = list_presets()
    for pooling in ("gap", "max", "map"):
        assert f"clip_vit_b16_{pooling}" in names and f"clip_tiny_{pooling}" in names
    assert {n for n in names if n.startswith("clip_")} <= set(CLIP.presets)
    with pytest.raises(ValueError, match="Unknown preset 'clip_huge'. Available presets: clip_bench_small"):
        CLIP.from_preset("clip_huge")


def test_paper_size_preset_config():
    from keras_maeclip.models import preset_config

    config = preset_config("clip_vit_b16_map")
    assert config["image_encoder"] == dict(image_size=224, patch_size=16, hidden_dim=768, num_layers=12, num_heads=12)
    assert config["text_encoder"]["hidden_dim"] == 512 and config["text_encoder"]["num_layers"] == 12
    assert config["embedding_dim"] == 512 and config["image_pooling"] == "map"


def test_bad_images_raise_one_line_errors(preprocessor):
    model = make_clip(preprocessor)
    good = preprocessor(raw_batch(2))
    for images, message in [
        (np.zeros((16, 16, 3), "float32"), "rank 4"),
        (np.zeros((2, 32, 32, 3), "float32"), r"shape \(batch, 16, 16, 3\); got \(2, 32, 32, 3\)"),
        (np.zeros((2, 16, 16, 1), "float32"), r"got \(2, 16, 16, 1\)"),
    ]:
        with pytest.raises(ValueError, match=message) as info:
            model({**good, "images": images})
        assert "\n" not in str(info.value).strip().split("\n\n")[0]
