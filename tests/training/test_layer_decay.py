"""Layer-wise learning-rate decay: the scales, the optimizer against NumPy AdamW, and `fit`.

References: an independent NumPy AdamW (Keras' update: bias-corrected
step size, epsilon outside the square root, decoupled decay `w -= lr · wd
· w` before the step) run with each variable's own rate `lr · scale`;
tolerance 1e-6 relative (float32). Through `fit`: Adam's first step is
linear in the rate, so each variable moves by its scale times what one
plain AdamW step moves it from the same weights (rtol 1e-4, atol 6e-8:
a change read as the difference of two float32 weights of magnitude up
to ~1 carries their rounding, one ulp ≈ 6e-8).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_maeclip.models import MAE
from keras_maeclip.optimizers import AdamW
from keras_maeclip.training import LayerDecayAdamW, layer_decay_scales, tower_of
from tests.numpy_adamw import numpy_adamw
from tests.tiny import TINY, make_clip, raw_batch

TWO_BLOCKS = dict(image_encoder=dict(TINY["image_encoder"], num_layers=2),
                  text_encoder=dict(TINY["text_encoder"], num_layers=2))


def to_np(x):
    return keras.ops.convert_to_numpy(x)


def test_scales_follow_each_towers_blocks(preprocessor):
    model = make_clip(preprocessor, **TWO_BLOCKS)
    scales = layer_decay_scales(model, 0.5)
    for tower in ("image", "text"):
        encoder = tower_of(model, tower)
        blocks = encoder.transformer_layers
        for i, block in enumerate(blocks):  # 0.25 then 0.5
            assert {scales[v.path] for v in block.weights} == {0.5 ** (2 - i)}
        assert {scales[v.path] for v in encoder.final_norm.weights} == {1.0}
        in_blocks = {id(v) for layer in [*blocks, encoder.final_norm] for v in layer.weights}
        embeddings = [v for v in encoder.weights if id(v) not in in_blocks]
        assert embeddings and {scales[v.path] for v in embeddings} == {0.125}
    outside = [v for v in model.weights if v.path not in scales]
    assert any("projection" in v.path for v in outside)  # heads keep the full rate
    assert len(scales) == sum(len(tower_of(model, t).weights) for t in ("image", "text"))
    # One encoder (MAE): its blocks; the decoder is outside.
    mae = MAE.from_preset("mae_tiny", image_size=16, image_encoder=TINY["image_encoder"])
    assert sorted(set(layer_decay_scales(mae, 0.5).values())) == [0.25, 0.5, 1.0]
    with pytest.raises(ValueError, match=r"decay=0.0 must be in \(0, 1\]"):
        layer_decay_scales(model, 0.0)


def test_updates_equal_numpy_adamw_at_each_variables_own_rate():
    rng = np.random.default_rng(0)
    initial = [rng.normal(size=(3, 4)).astype("float32") for _ in range(3)]
    variables = [keras.Variable(w, name=n) for w, n in zip(initial, ("early", "late", "frozen"))]
    lr, wd = 0.01, 0.1
    optimizer = LayerDecayAdamW(lr, weight_decay=wd, lr_scales={"early": 0.25, "frozen": 0.0})
    steps = [[rng.normal(size=(3, 4)).astype("float32") for _ in variables] for _ in range(3)]
    for step in steps:
        optimizer.apply_gradients(zip([keras.ops.convert_to_tensor(g) for g in step], variables))
    expected = numpy_adamw(initial, steps, [lr * 0.25, lr, 0.0], wd)
    for variable, want in zip(variables, expected):
        np.testing.assert_allclose(to_np(variable), want, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(to_np(variables[2]), initial[2])  # scale 0: untouched
    # All scales 1: exactly its base, the library's AdamW (Keras' update; on
    # torch PyTorch's fused kernel, which tests/training/test_adamw.py checks).
    plain, scaled = (keras.Variable(initial[0]) for _ in range(2))
    AdamW(lr, weight_decay=wd).apply_gradients([(keras.ops.convert_to_tensor(steps[0][0]), plain)])
    LayerDecayAdamW(lr, weight_decay=wd).apply_gradients([(keras.ops.convert_to_tensor(steps[0][0]), scaled)])
    np.testing.assert_array_equal(to_np(plain), to_np(scaled))


def test_config_round_trip_and_unknown_paths_are_refused():
    optimizer = LayerDecayAdamW(0.01, weight_decay=0.05, lr_scales={"a": 0.5})
    again = LayerDecayAdamW.from_config(optimizer.get_config())
    assert again.lr_scales == {"a": 0.5} and float(again.weight_decay) == 0.05
    revived = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert isinstance(revived, LayerDecayAdamW) and revived.lr_scales == {"a": 0.5}
    with pytest.raises(ValueError, match="does not train, e.g. \\['typo'\\]"):
        LayerDecayAdamW(lr_scales={"typo": 0.5}).build([keras.Variable(np.zeros(2), name="a")])
    with pytest.raises(ValueError, match="scales must be ≥ 0"):
        LayerDecayAdamW(lr_scales={"a": -1.0})


def _first_step(preprocessor, optimizer_for):
    """Every trainable variable's change in one `fit` step, from the same initial weights."""
    keras.utils.set_random_seed(7)
    model = make_clip(preprocessor, **TWO_BLOCKS)
    model.compile(optimizer=optimizer_for(model))
    before = {v.path: to_np(v).copy() for v in model.trainable_variables}
    model.fit(tf.data.Dataset.from_tensors(raw_batch(8)).repeat(), steps_per_epoch=1, epochs=1, verbose=0)
    return {v.path: to_np(v) - before[v.path] for v in model.trainable_variables}, model


def test_fit_moves_each_variable_by_its_scaled_rate(preprocessor):
    # Adam's first step is linear in the rate, so with decay the change of
    # each variable is its scale times the change one AdamW step makes.
    lr = 1e-3
    plain, _ = _first_step(preprocessor, lambda m: keras.optimizers.AdamW(lr, weight_decay=0.0))
    decayed, model = _first_step(preprocessor, lambda m: LayerDecayAdamW(
        lr, weight_decay=0.0, lr_scales=layer_decay_scales(m, 0.5)))
    scales = layer_decay_scales(model, 0.5)
    assert set(decayed) == set(plain)
    for path, delta in decayed.items():
        scale = scales.get(path, 1.0)
        np.testing.assert_allclose(delta, scale * plain[path], rtol=1e-4, atol=6e-8, err_msg=path)
    moved = {scales.get(p, 1.0) for p, d in decayed.items() if np.abs(d).max() > 0}
    assert moved == {0.125, 0.25, 0.5, 1.0}
