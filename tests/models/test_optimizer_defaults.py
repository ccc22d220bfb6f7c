"""What each task's `compile()` decays, its AdamW moments and its schedule."""

import math

import keras
import numpy as np
import pytest

from keras_maeclip.models import CLIP, M3AE, MAE, MAECLIP
from keras_maeclip.models.pretraining_task import default_warmup_steps, learning_rate_schedule

# Variables skipped by weight decay that are neither biases, norms nor
# scalars, per task, on the tiny presets (one block each, MAP pooling).
CONTRASTIVE_SKIPPED = {
    "position_embedding/embeddings",
    "image_pooler/probe",
    "text_pooler/probe",
}
DECODER_SKIPPED = {
    "decoder/image_mask_token",
    "decoder/type_embedding",
}
TEXT_DECODER_SKIPPED = {"decoder/text_mask_token", "decoder/text_positions/embeddings"}
EXPECTED_SKIPPED = {
    "clip": CONTRASTIVE_SKIPPED,
    "maeclip": CONTRASTIVE_SKIPPED | DECODER_SKIPPED | TEXT_DECODER_SKIPPED,
    "m3ae": {
        "token_embedding/embeddings",
        "text_position_embedding/embeddings",
        "type_embedding/embeddings",
    } | DECODER_SKIPPED | TEXT_DECODER_SKIPPED,
    "mae": DECODER_SKIPPED,
}
# (beta_1, beta_2, epsilon, weight_decay) of each task's reference.
EXPECTED_ADAMW = {
    "clip": (0.9, 0.98, 1e-6, 0.2),
    "maeclip": (0.9, 0.98, 1e-6, 0.2),
    "m3ae": (0.9, 0.95, 1e-8, 0.05),
    "mae": (0.9, 0.95, 1e-8, 0.05),
}
ONE_BLOCK = dict(num_layers=1)


def build(task):
    if task == "clip":
        return CLIP.from_preset("clip_tiny_map", vocabulary_size=64, image_encoder=ONE_BLOCK,
                                text_encoder=ONE_BLOCK)
    if task == "maeclip":
        return MAECLIP.from_preset("maeclip_tiny_map", vocabulary_size=64, image_encoder=ONE_BLOCK,
                                   text_encoder=ONE_BLOCK, decoder=dict(num_layers=1))
    if task == "m3ae":
        return M3AE.from_preset("m3ae_tiny", vocabulary_size=64, encoder=ONE_BLOCK,
                                decoder=dict(num_layers=1))
    return MAE.from_preset("mae_tiny", image_encoder=ONE_BLOCK, decoder=dict(num_layers=1))


def skipped_and_decayed(model):
    optimizer = model.optimizer
    paths = {v.path: v for v in model.trainable_variables}
    decayed = {p for p, v in paths.items() if optimizer._use_weight_decay(v)}
    return set(paths) - decayed, decayed, paths


@pytest.mark.parametrize("task", ["clip", "maeclip", "m3ae", "mae"])
def test_each_task_decays_exactly_its_documented_variables(task):
    model = build(task)
    skipped, decayed, paths = skipped_and_decayed(model)
    plain = {p for p, v in paths.items() if len(v.shape) < 2 or v.name in ("bias", "gamma", "beta")}
    assert plain <= skipped
    assert skipped - plain == EXPECTED_SKIPPED[task]
    # Everything decayed is a weight matrix, plus CLIP's token embeddings.
    others = {p for p in decayed if not p.endswith("/kernel")}
    assert others == ({"token_embedding/embeddings"} if task in ("clip", "maeclip") else set())
    beta_1, beta_2, epsilon, weight_decay = EXPECTED_ADAMW[task]
    opt = model.optimizer
    assert (opt.beta_1, opt.beta_2, opt.epsilon, opt.weight_decay) == pytest.approx(
        (beta_1, beta_2, epsilon, weight_decay)
    )


def test_compile_arguments_override_the_class_defaults_and_survive_saving(tmp_path):
    model = build("mae")
    model.compile(beta_2=0.999, weight_decay=0.01, no_decay_parts=("position", "patch_embedding"),
                  total_steps=40)
    assert model.optimizer.beta_2 == pytest.approx(0.999)
    assert model.optimizer.weight_decay == pytest.approx(0.01)
    skipped, _, _ = skipped_and_decayed(model)
    assert "patch_embedding/projection/kernel" in skipped
    assert "decoder/image_mask_token" not in skipped  # the class default is replaced
    config = model.get_compile_config()
    assert config["warmup_steps"] == 2 and config["beta_2"] == 0.999
    path = str(tmp_path / "mae.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert restored.optimizer.beta_2 == pytest.approx(0.999)
    assert "patch_embedding/projection/kernel" in skipped_and_decayed(restored)[0]


def numpy_schedule(step, peak, warmup, total):
    """Linear warm-up from 0 to `peak`, then cosine to 0 at `total` (or constant)."""
    if warmup and step < warmup:
        return peak * step / warmup
    if total is None:
        return peak
    progress = min(step - warmup, total - warmup) / (total - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * progress))


STEPS = [0, 1, 3, 4, 5, 10, 49, 50, 51, 75, 99, 100, 120]


@pytest.mark.parametrize(
    "kwargs,warmup,total",
    [
        (dict(total_steps=100), 5, 100),  # default: 5 % warm-up, then cosine
        (dict(total_steps=100, warmup_steps=0), 0, 100),  # explicit: none
        (dict(total_steps=100, warmup_steps=20), 20, 100),
        (dict(warmup_steps=4), 4, None),  # no total: constant after warm-up
        (dict(), 0, None),
    ],
)
def test_schedule_matches_numpy(kwargs, warmup, total):
    model = build("mae")
    model.compile(learning_rate=2e-3, **kwargs)
    lr = model.optimizer._learning_rate
    got = [float(keras.ops.convert_to_numpy(lr(s))) if callable(lr) else float(lr) for s in STEPS]
    expected = [numpy_schedule(s, 2e-3, warmup, total) for s in STEPS]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-9)


def test_default_warm_up_and_bad_values():
    assert default_warmup_steps(1000) == 50 and default_warmup_steps(10) == 1
    with pytest.raises(ValueError, match="must exceed warmup_steps"):
        learning_rate_schedule(1e-3, warmup_steps=10, total_steps=10)
    with pytest.raises(ValueError, match="must be >= 0"):
        learning_rate_schedule(1e-3, warmup_steps=-1, total_steps=10)
