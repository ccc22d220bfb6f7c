import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_maeclip.losses.contrastive as contrastive_module
import keras_maeclip.models.mae_clip as mae_clip_module
from keras_maeclip.training.precision import mixed_precision, remat_scope
from tests.backend_grad import gradients
from tests.models.test_mae_clip import make as make_maeclip
from tests.tiny import make_clip, synthetic_batch

TF = keras.config.backend() == "tensorflow"
# Tests of counters and optimizer arithmetic run eagerly, to spare JAX and
# TensorFlow a compilation per model; the others train compiled.
EAGER = keras.config.backend() != "torch"
# Keras 3.15's TensorFlow optimizers treat the sparse (tf.IndexedSlices)
# gradient of the token embedding per occurrence: a token seen n times in
# the batch adds n squared row gradients instead of the square of their sum,
# to the global norm of `global_clipnorm` and to Adam's second moment.
TF_SPARSE_BUG = "Keras TF optimizer: squares of tf.IndexedSlices gradients are not deduplicated"


def to_np(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def dtype(x):
    return keras.backend.standardize_dtype(x.dtype)


def repeated(raw, batch_size):
    """An unshuffled, repeated stream of `raw` in batches."""
    return tf.data.Dataset.from_tensor_slices(raw).batch(batch_size).repeat()


def loss_and_gradients(model, inputs):
    """The training loss of `inputs` and its gradients, outside `fit`."""
    def loss():
        return model.compute_loss(x=inputs, y_pred=model(inputs, training=True), training=False)

    return gradients(loss, model.trainable_variables)


def warmup_cosine(step, peak, warmup, total):
    """NumPy reference of `default_optimizer`'s schedule."""
    if step < warmup:
        return peak * step / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))


# --- bf16 mixed precision --------------------------------------------------


def spy(monkeypatch, module, name, seen):
    """Records the dtype of each result of `module.name` in `seen[name]`."""
    original = getattr(module, name)

    def wrapper(*args, **kwargs):
        out = original(*args, **kwargs)
        seen.setdefault(name, []).append(dtype(out))
        return out

    monkeypatch.setattr(module, name, wrapper)


@pytest.mark.parametrize("model_name", ["clip", "maeclip"])
def test_mixed_bfloat16_towers_compute_in_bf16_and_losses_in_float32(preprocessor, monkeypatch, model_name):
    with mixed_precision("mixed_bfloat16") as policy:
        model = make_clip(preprocessor) if model_name == "clip" else make_maeclip(preprocessor, seed=0)
    assert policy.name == "mixed_bfloat16"
    assert keras.config.dtype_policy().name == "float32"  # restored after the block
    assert {dtype(v) for v in model.trainable_variables} == {"float32"}

    raw = synthetic_batch(8)
    inputs = preprocessor(raw)
    backbone = model.backbone
    assert dtype(backbone.image_encoder(inputs["images"])) == "bfloat16"
    assert dtype(backbone.text_encoder({k: inputs[k] for k in ("token_ids", "padding_mask")})) == "bfloat16"

    seen = {}
    spy(monkeypatch, contrastive_module, "contrastive_logits", seen)
    spy(monkeypatch, mae_clip_module, "pixel_reconstruction_loss", seen)
    spy(monkeypatch, mae_clip_module, "token_reconstruction_loss", seen)
    loss = model.compute_loss(x=inputs, y_pred=model(inputs, training=True), training=False)
    monkeypatch.undo()
    assert dtype(loss) == "float32"
    assert seen["contrastive_logits"] == ["float32"]  # so its log-softmax too
    if model_name == "maeclip":
        assert seen["pixel_reconstruction_loss"] == seen["token_reconstruction_loss"] == ["float32"]

    model.compile(learning_rate=3e-3, weight_decay=0.0)
    history = model.fit(repeated(raw, 8), steps_per_epoch=4, epochs=2, verbose=0).history["loss"]
    assert np.isfinite(history).all()
    assert history[1] < history[0] - 0.05  # decreasing on the batch it trains on
    assert {dtype(v) for v in model.trainable_variables} == {"float32"}


def test_mixed_precision_rejects_other_policies_and_restores_on_error():
    with pytest.raises(ValueError, match="policy='mixed_float16'; use one of"):
        with mixed_precision("mixed_float16"):
            pass
    with pytest.raises(RuntimeError):
        with mixed_precision():
            raise RuntimeError
    assert keras.config.dtype_policy().name == "float32"


# --- gradient accumulation -------------------------------------------------


class WeightsAt(keras.callbacks.Callback):
    def __init__(self, batch):
        super().__init__()
        self.batch, self.weights = batch, None

    def on_train_batch_end(self, batch, logs=None):
        if batch == self.batch:
            self.weights = [to_np(v) for v in self.model.trainable_variables]


@pytest.mark.parametrize("optimizer", ["sgd", "auto"])
def test_accumulating_k_micro_batches_is_one_step_on_their_union(preprocessor, optimizer):
    # Local negatives in blocks of the micro-batch on both sides: the loss of
    # the 16-batch is then the mean of the four 4-batch losses, and so is its
    # gradient. SGD's update is linear in the gradient (a sum instead of a
    # mean would be 4x off); AdamW's first step hardly depends on the
    # gradient's scale, so "auto" checks the library's compile path only.
    k, micro = 4, 4
    raw = synthetic_batch(k * micro)

    def model(accumulate):
        keras.utils.set_random_seed(0)
        m = make_clip(preprocessor, negatives="local", local_batch_size=micro, compile=False)
        steps = k if accumulate else None
        if optimizer == "sgd":
            m.compile(optimizer=keras.optimizers.SGD(0.5, gradient_accumulation_steps=steps))
        else:
            m.compile(learning_rate=1e-3, gradient_accumulation_steps=steps)
        return m

    initial = [to_np(v) for v in model(False).trainable_variables]
    accumulated, before_update = model(True), WeightsAt(k - 2)
    accumulated.fit(repeated(raw, micro), steps_per_epoch=k, epochs=1, verbose=0,
                    callbacks=[before_update])
    whole = model(False)
    whole.fit(repeated(raw, k * micro), steps_per_epoch=1, epochs=1, verbose=0)

    for got, want in zip(before_update.weights, initial):
        np.testing.assert_array_equal(got, want)  # no update before the k-th micro-batch
    moved = max(np.abs(to_np(v) - w).max() for v, w in zip(whole.trainable_variables, initial))
    assert moved > (1e-2 if optimizer == "sgd" else 5e-4)
    # AdamW turns the rounding noise of zero gradients (attention key biases)
    # into steps of up to ~1e-5; SGD agrees to float32 rounding.
    atol = 1e-6 if optimizer == "sgd" else 2e-5
    for got, want in zip(accumulated.trainable_variables, whole.trainable_variables):
        got, want, name = to_np(got), to_np(want), got.path
        if TF and optimizer == "auto" and name == "token_embedding/embeddings":
            # The whole-batch step hits TF_SPARSE_BUG (accumulation adds dense
            # gradients): only rows of tokens repeated in the batch differ.
            counts = np.bincount(to_np(preprocessor(raw)["token_ids"]).ravel(), minlength=len(got))
            differ = np.abs(got - want).max(axis=1) > atol
            assert differ.any() and (counts[differ] > 1).all()
            got, want = got[counts <= 1], want[counts <= 1]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=atol, err_msg=name)
    assert int(to_np(accumulated.optimizer.iterations)) == int(to_np(whole.optimizer.iterations)) == 1
    assert int(to_np(accumulated.contrastive.steps_seen)) == k  # counts micro-batches


def test_under_accumulation_the_schedule_counts_micro_batches(preprocessor):
    model = make_clip(preprocessor, compile=False)
    # Eager on TensorFlow (spares a trace); compiled on JAX, where 8 eager steps cost more.
    model.compile(learning_rate=1e-3, warmup_steps=10, total_steps=100, gradient_accumulation_steps=4,
                  run_eagerly=TF)
    model.fit(repeated(synthetic_batch(4), 4), steps_per_epoch=8, epochs=1, verbose=0)
    optimizer = model.optimizer
    assert int(to_np(optimizer.iterations)) == 2  # real updates
    assert int(to_np(model.contrastive.steps_seen)) == 8  # fit steps
    lr = float(to_np(optimizer.learning_rate))
    assert lr == pytest.approx(warmup_cosine(8, 1e-3, 10, 100), rel=1e-5)  # not at step 2
    # The argument is part of the saved compile config.
    config = model.get_compile_config()
    assert config["gradient_accumulation_steps"] == 4
    clone = make_clip(preprocessor, compile=False)
    clone.compile_from_config(config)
    assert clone.optimizer.gradient_accumulation_steps == 4


def test_gradient_accumulation_arguments_are_checked(preprocessor):
    model = make_clip(preprocessor, compile=False)
    with pytest.raises(ValueError, match="gradient_accumulation_steps` must be an integer >= 2"):
        model.compile(gradient_accumulation_steps=1)
    with pytest.raises(ValueError, match="pass it to the optimizer"):
        model.compile(optimizer=keras.optimizers.SGD(), gradient_accumulation_steps=4)


# --- global-norm clipping --------------------------------------------------


@pytest.mark.xfail(TF, reason=TF_SPARSE_BUG, strict=True, raises=AssertionError)
@pytest.mark.parametrize("optimizer,lr,clipnorm", [("sgd", 1.0, 0.1), ("auto", 1e-2, 1e-4)])
def test_global_clipnorm_clips_a_huge_gradient(preprocessor, optimizer, lr, clipnorm):
    model = make_clip(preprocessor, compile=False)
    raw = synthetic_batch(8)
    inputs = preprocessor(raw)
    before = [to_np(v) for v in model.trainable_variables]
    _, grads = loss_and_gradients(model, inputs)
    norm = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads))
    assert norm > 100 * clipnorm  # huge next to the clip norm
    if optimizer == "sgd":
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=lr, global_clipnorm=clipnorm), run_eagerly=EAGER)

        def update(g):
            return -lr * g
    else:
        # The library's AdamW, first step, no decay: Adam's step hardly depends
        # on the gradient's scale, except where it is near epsilon. A clip
        # norm of 1e-4 brings most clipped entries there.
        model.compile(learning_rate=lr, weight_decay=0.0, global_clipnorm=clipnorm, run_eagerly=EAGER)
        beta_1, beta_2, eps = 0.9, 0.98, 1e-6
        alpha = lr * math.sqrt(1 - beta_2) / (1 - beta_1)  # Keras' bias correction

        def update(g):
            return -alpha * (1 - beta_1) * g / (np.sqrt((1 - beta_2) * g * g) + eps)

    expected = [update(g * (clipnorm / norm)) for g in grads]
    unclipped = [update(g) for g in grads]
    model.fit(repeated(raw, 8), steps_per_epoch=1, epochs=1, verbose=0)
    updates = [to_np(v) - w for v, w in zip(model.trainable_variables, before)]
    scale = max(np.abs(e).max() for e in expected)
    for got, want in zip(updates, expected):
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * scale)
    # ... and far from the unclipped update.
    assert max(np.abs(u - e).max() for u, e in zip(unclipped, expected)) > 0.1 * scale
    if optimizer == "sgd":
        update_norm = math.sqrt(sum(float(np.sum(u.astype(np.float64) ** 2)) for u in updates))
        assert update_norm == pytest.approx(lr * clipnorm, rel=1e-3)


# --- rematerialisation -----------------------------------------------------


def counted_activations(model):
    """Wraps every GELU of the model with a call counter."""
    calls = [0]
    for layer in model._flatten_layers():
        activation = getattr(layer, "activation", None)
        if getattr(activation, "__name__", "") == "gelu":
            def counted(x, _original=activation):
                calls[0] += 1
                return _original(x)

            counted.__name__ = "gelu"
            layer.activation = counted
    return calls


def test_remat_activations_gives_the_same_loss_gradients_and_training(preprocessor):
    def build(mode):
        keras.utils.set_random_seed(0)
        with remat_scope(mode):
            return make_clip(preprocessor, compile=False)

    plain, remat = build(None), build("activations")
    assert {l._remat_mode for l in plain._flatten_layers()} == {None}
    assert "activations" in {l._remat_mode.mode for l in remat._flatten_layers() if l._remat_mode}
    inputs = preprocessor(synthetic_batch(8))
    counts = {}
    for name, model in (("plain", plain), ("remat", remat)):
        calls = counted_activations(model)
        counts[name] = (loss_and_gradients(model, inputs), calls[0])
    (loss, grads), plain_calls = counts["plain"]
    (remat_loss, remat_grads), remat_calls = counts["remat"]
    assert remat_loss == pytest.approx(loss, rel=1e-6)
    for got, want in zip(remat_grads, grads):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    if keras.config.backend() == "jax":
        # jax.checkpoint traces the function once; its recomputation is a
        # `remat2` equation of the gradient's jaxpr.
        assert remat_calls == plain_calls
        assert "remat2[" in jaxpr_of_gradient(remat, inputs)
        assert "remat2[" not in jaxpr_of_gradient(plain, inputs)
    else:
        # The backward pass runs every GELU a second time.
        assert remat_calls == 2 * plain_calls > 0
    for model in (plain, remat):
        # SGD: Adam would turn the rounding noise of zero gradients (attention
        # key biases) into whole steps.
        model.compile(optimizer=keras.optimizers.SGD(0.1))
        model.fit(repeated(synthetic_batch(8), 8), steps_per_epoch=2, epochs=1, verbose=0)
    for got, want in zip(remat.trainable_variables, plain.trainable_variables):
        np.testing.assert_allclose(to_np(got), to_np(want), rtol=1e-5, atol=1e-6)


def jaxpr_of_gradient(model, inputs):
    import jax

    variables = model.trainable_variables

    def loss(values):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            return model.compute_loss(x=inputs, y_pred=model(inputs, training=True), training=False)

    return str(jax.make_jaxpr(jax.grad(loss))([v.value for v in variables]))


def test_remat_of_whole_layers_works_on_torch_and_is_refused_elsewhere(preprocessor):
    if keras.config.backend() != "torch":
        with pytest.raises(ValueError, match="mode='full' does not work on the"):
            remat_scope("full")
        return
    keras.utils.set_random_seed(0)
    plain = make_clip(preprocessor, compile=False)
    keras.utils.set_random_seed(0)
    with remat_scope("full"):
        remat = make_clip(preprocessor, compile=False)
    inputs = preprocessor(synthetic_batch(8))
    calls = [counted_activations(m) for m in (plain, remat)]
    (loss, grads), (remat_loss, remat_grads) = (loss_and_gradients(m, inputs) for m in (plain, remat))
    assert remat_loss == pytest.approx(loss, rel=1e-6)
    for got, want in zip(remat_grads, grads):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    assert calls[1][0] > calls[0][0] > 0  # the forward pass ran again


def test_remat_scope_rejects_unknown_modes():
    with pytest.raises(ValueError, match="mode='everything'; use one of"):
        remat_scope("everything")
