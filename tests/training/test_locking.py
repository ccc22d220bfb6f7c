"""Locked towers (LiT), partially unlocked towers and LoRA through `fit`.

Reference: the variables a lock freezes keep their exact initial values
after training while every other variable moves; the frozen set is checked
against the tower's own layer structure.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_maeclip.training import lock_tower, tower_of
from tests.tiny import TINY, make_clip, raw_batch

TWO_BLOCKS = dict(image_encoder=dict(TINY["image_encoder"], num_layers=2),
                  text_encoder=dict(TINY["text_encoder"], num_layers=2))


def to_np(x):
    return keras.ops.convert_to_numpy(x)


def train(model, steps=2):
    model.compile(learning_rate=1e-2, weight_decay=0.0)
    data = tf.data.Dataset.from_tensors(raw_batch(8)).repeat()
    model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)


def changed(model, before):
    return {v.path: not np.array_equal(to_np(v), before[v.path]) for v in model.weights}


@pytest.mark.parametrize("tower,unlocked,freeze_norms", [("image", 0, False), ("image", 1, True), ("text", 1, False)])
def test_locked_variables_stay_and_the_rest_trains(preprocessor, tower, unlocked, freeze_norms):
    model = make_clip(preprocessor, **TWO_BLOCKS)
    encoder = tower_of(model, tower)
    trainable_before = {id(v) for v in model.trainable_weights}
    frozen = lock_tower(model, tower, unlocked_blocks=unlocked, freeze_norms=freeze_norms)
    # Expected from the structure: the last `unlocked` blocks and the final
    # norm train (minus their norms with freeze_norms), all else freezes.
    training = [*encoder.transformer_layers[2 - unlocked:], encoder.final_norm] if unlocked else []
    expect_trainable = {
        id(v) for layer in training for v in layer.trainable_weights
        if not (freeze_norms and v.name in ("gamma", "beta") and "norm" in v.path)
    }
    tower_ids = {id(v) for v in encoder.weights} & trainable_before
    assert frozen == len(tower_ids - expect_trainable) > 0
    before = {v.path: to_np(v).copy() for v in model.weights}
    train(model)
    moved = changed(model, before)
    for v in model.weights:
        if id(v) not in trainable_before:
            continue
        should_move = id(v) not in tower_ids or id(v) in expect_trainable
        assert moved[v.path] == should_move, v.path
    other = tower_of(model, "text" if tower == "image" else "image")
    assert all(moved[v.path] for v in other.trainable_weights if "bias" not in v.path)


def test_bad_arguments(preprocessor):
    model = make_clip(preprocessor)
    with pytest.raises(ValueError, match="unlocked_blocks=3: the image tower has 1 blocks"):
        lock_tower(model, "image", unlocked_blocks=3)
    with pytest.raises(ValueError, match="tower='audio'"):
        lock_tower(model, "audio")
    with pytest.raises(ValueError, match="needs a CLIP-style model"):
        lock_tower(keras.Sequential([keras.layers.Dense(2)]))


def test_keras_hub_lora_on_the_image_tower_trains_only_the_adapters(preprocessor):
    model = make_clip(preprocessor)
    inputs = preprocessor(raw_batch(4))
    reference = to_np(model.backbone(inputs)["image_embeddings"])
    encoder = model.backbone.image_encoder
    encoder.enable_lora(rank=2)
    # LoRA's B starts at zero: the outputs are unchanged.
    np.testing.assert_allclose(to_np(model.backbone(inputs)["image_embeddings"]), reference, atol=1e-6)
    # keras-hub freezes the tower but the query / value layers' LoRA
    # factors and their biases.
    trainable = encoder.trainable_weights
    lora = [v for v in trainable if "lora" in v.path]
    assert len(lora) == 4  # A and B of query and value, one block
    assert all("lora" in v.path or (v.name == "bias" and v.path.split("/")[-2] in ("query", "value"))
               for v in trainable)
    before = {v.path: to_np(v).copy() for v in model.weights}
    train(model)
    moved = changed(model, before)
    allowed = {id(v) for v in trainable}
    assert not any(moved[v.path] for v in encoder.weights if id(v) not in allowed)
    assert all(moved[v.path] for v in lora if "lora_kernel_b" in v.path)
    assert all(moved[v.path] for v in model.backbone.text_encoder.trainable_weights if "bias" not in v.path)
