"""GradCache: one step with micro-batches equals one step on the whole batch.

References (each the same training without the feature, through `fit`):

* CLIP (no randomness in the step): Keras' own step on the whole batch.
* MAE-CLIP (masks drawn per forward pass): Keras' own step on a model
  whose `call` runs the micro-batches one after the other and
  concatenates them (the same masks, the whole batch in one backward).

Plain SGD with rate 1, so each weight moves by exactly its gradient
(AdamW's first step is ±rate whatever the gradient's size and would hide
a wrong scale). Tolerance: atol 2e-5 on the moved weights (float32 sums
over differently split batches; the weights are O(1) and the gradients
O(1e-2..1)), 1e-5 on the logged losses.
"""

import keras
import numpy as np
import pytest
from keras import ops

from keras_maeclip.models import MAE, MAECLIP
from keras_maeclip.training import grad_cache_micro_batches, use_grad_cache
from tests.tiny import TINY, make_clip, raw_batch

SMALL_DECODER = dict(TINY, decoder=dict(hidden_dim=16, num_layers=1, num_heads=2))


def to_np(x):
    return keras.ops.convert_to_numpy(x)


def twins(build):
    """Two models with the same weights, seed states and counters, SGD(1.0)."""
    first, second = build(), build()
    second.set_weights(first.get_weights())
    for model in (first, second):
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=1.0))
    return first, second


def one_step(model, batch):
    history = model.fit(batch, batch_size=len(batch["captions"]), epochs=1, verbose=0, shuffle=False)
    return {k: v[-1] for k, v in history.history.items()}


def assert_same_step(model, reference, logs, reference_logs):
    for v, r in zip(model.weights, reference.weights):
        np.testing.assert_allclose(to_np(v), to_np(r), atol=2e-5, rtol=0, err_msg=v.path)
    for name in ("loss", "contrastive_loss", "logit_scale"):
        np.testing.assert_allclose(logs[name], reference_logs[name], atol=1e-5, err_msg=name)


@pytest.mark.parametrize("micro_batches", [2, 4])
def test_clip_step_equals_the_whole_batch_step(preprocessor, micro_batches):
    cached, reference = twins(lambda: make_clip(preprocessor))
    start = [to_np(v) for v in cached.trainable_variables]
    use_grad_cache(cached, micro_batches)
    batch = raw_batch(8)
    logs, reference_logs = one_step(cached, batch), one_step(reference, batch)
    assert_same_step(cached, reference, logs, reference_logs)
    # The step did move every weight (the comparison is not between two
    # untouched models), the temperature included: its gradient, the
    # same in every pass, is counted once.
    scale = cached.contrastive.trainable_variables[0]
    index = [id(v) for v in cached.trainable_variables].index(id(scale))
    assert abs(float(to_np(scale)) - float(start[index])) > 1e-3
    assert all(not np.array_equal(to_np(v), s) for v, s in zip(cached.trainable_variables, start))


def test_clip_step_differs_from_averaging_micro_batches(preprocessor):
    """Keras' accumulation (each micro-batch its own negatives) is another step."""
    cached, averaged = twins(lambda: make_clip(preprocessor))
    use_grad_cache(cached, 2)
    averaged.compile(optimizer=keras.optimizers.SGD(learning_rate=1.0, gradient_accumulation_steps=2))
    batch = raw_batch(8)
    one_step(cached, batch)
    averaged.fit(batch, batch_size=4, epochs=1, verbose=0, shuffle=False)
    gaps = [np.abs(to_np(v) - to_np(r)).max() for v, r in zip(cached.trainable_variables, averaged.trainable_variables)]
    assert max(gaps) > 1e-3


def chunked_call(model, micro_batches):
    """`model.call` on micro-batches one after the other, outputs concatenated."""
    call = model.call

    def chunked(inputs, training=False):
        parts = [call(keras.tree.map_structure(lambda t, j=j: ops.split(t, micro_batches, axis=0)[j], inputs),
                      training=training)
                 for j in range(micro_batches)]
        return keras.tree.map_structure(lambda *p: ops.concatenate(p, axis=0), *parts)

    model.call = chunked
    return model


@pytest.mark.parametrize("view", ["masked", "full"])
def test_maeclip_step_equals_the_concatenated_micro_batches(preprocessor, view):
    def build():
        return MAECLIP.from_preset("maeclip_tiny_max", preprocessor=preprocessor, seed=3,
                                   contrastive_view=view, **SMALL_DECODER)

    cached, reference = twins(build)
    use_grad_cache(cached, 2)
    chunked_call(reference, 2)
    batch = raw_batch(8)
    logs, reference_logs = one_step(cached, batch), one_step(reference, batch)
    assert_same_step(cached, reference, logs, reference_logs)
    for name in ("image_reconstruction_loss", "text_reconstruction_loss"):
        np.testing.assert_allclose(logs[name], reference_logs[name], atol=1e-5, err_msg=name)
    # The masks drawn in the second pass were the first pass's: the seed
    # state ends where the reference's (two draws) does.
    np.testing.assert_array_equal(to_np(cached.seed_generator.state), to_np(reference.seed_generator.state))


def test_switching_off_and_errors(preprocessor):
    model = make_clip(preprocessor)
    use_grad_cache(model, 2)
    assert grad_cache_micro_batches(model) == 2 and "train_step" in model.__dict__
    use_grad_cache(model, 1)
    assert grad_cache_micro_batches(model) == 1 and "train_step" not in model.__dict__
    use_grad_cache(model, 2)
    # JAX / torch: a ValueError before tracing; TF (batch size unknown in
    # the graph): the same message from the step's runtime check.
    with pytest.raises(Exception, match="divisible by 4"):
        use_grad_cache(model, 4)
        model.fit(raw_batch(6), batch_size=6, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="micro_batches=0"):
        use_grad_cache(model, 0)
    with pytest.raises(ValueError, match="local negatives"):
        use_grad_cache(make_clip(preprocessor, negatives="local", local_batch_size=4), 2)
    mae = MAE.from_preset("mae_tiny", image_size=16, image_encoder=TINY["image_encoder"])
    with pytest.raises(ValueError, match="no contrastive loss.*gradient_accumulation_steps"):
        use_grad_cache(mae, 2)
