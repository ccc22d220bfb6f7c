"""`keras_maeclip.optimizers.AdamW`: Keras' AdamW, PyTorch's fused update on torch.

References: the NumPy AdamW of tests/numpy_adamw.py (Keras' update in
float64) and Keras' own `keras.optimizers.AdamW` run on the same
gradients. Tolerances: rtol 1e-5 / atol 1e-6 against NumPy over four
float32 steps (each step moves a weight by about the learning rate, 1e-2,
so rounding stays near 1e-7); 1e-6 absolute against Keras' AdamW, which
differs only in float32 operation order.
"""

import keras
import numpy as np
import pytest

import keras_maeclip.optimizers as optimizers_module
from keras_maeclip.optimizers import AdamW
from tests.numpy_adamw import numpy_adamw
from tests.tiny import make_clip

SHAPES = [(5, 7), (7,), (3, 4, 2), (6, 3)]
LR, WD, BETA_2, EPS = 1e-2, 0.2, 0.98, 1e-6


def to_np(x):
    return keras.ops.convert_to_numpy(x)


def schedule():
    """Warm-up over 2 steps to LR, then cosine over 8."""
    return keras.optimizers.schedules.CosineDecay(0.0, 8, warmup_target=LR, warmup_steps=2)


def problem(steps=4):
    rng = np.random.default_rng(0)
    initial = [rng.normal(size=s).astype("float32") for s in SHAPES]
    grads = [[rng.normal(size=s).astype("float32") for s in SHAPES] for _ in range(steps)]
    return initial, grads


def run(optimizer, initial, grads, excluded=(1, 3)):
    variables = [keras.Variable(w, name=f"w{i}") for i, w in enumerate(initial)]
    optimizer.exclude_from_weight_decay(var_list=[variables[i] for i in excluded])
    for step in grads:
        optimizer.apply([keras.ops.convert_to_tensor(g) for g in step], variables)
    return [to_np(v) for v in variables], optimizer


@pytest.fixture
def fused_calls(monkeypatch):
    """Records the variables of every fused-kernel call (torch's path)."""
    calls = []
    real = optimizers_module.torch_fused_adamw

    def recording(params, *args):
        calls.append(len(params))
        return real(params, *args)

    monkeypatch.setattr(optimizers_module, "torch_fused_adamw", recording)
    return calls


@pytest.mark.parametrize("amsgrad", [False, True])
def test_equals_numpy_adamw_with_schedule_exclusions_and_amsgrad(amsgrad, fused_calls):
    initial, grads = problem()
    got, _ = run(AdamW(schedule(), weight_decay=WD, beta_2=BETA_2, epsilon=EPS, amsgrad=amsgrad),
                 initial, grads)
    rate = lambda step: float(schedule()(step))  # noqa: E731
    want = numpy_adamw(initial, grads, [rate] * len(SHAPES), WD, beta_2=BETA_2, epsilon=EPS,
                       decayed=[True, False, True, False], amsgrad=amsgrad)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    if keras.config.backend() == "torch":
        # Two fused calls per step (decayed / not decayed), every variable in one.
        assert fused_calls == [2, 2] * len(grads)
    else:
        assert fused_calls == []  # Keras' own update on JAX and TensorFlow


@pytest.mark.parametrize("options", [
    dict(global_clipnorm=0.5),
    dict(gradient_accumulation_steps=2),
    dict(weight_decay=0.0),
])
def test_equals_keras_adamw_state_included(options):
    initial, grads = problem(steps=6)
    kwargs = dict(learning_rate=schedule(), beta_2=BETA_2, epsilon=EPS)
    kwargs.setdefault("weight_decay", WD)
    kwargs.update(options)
    got, ours = run(AdamW(**kwargs), initial, grads)
    want, keras_adamw = run(keras.optimizers.AdamW(**kwargs), initial, grads)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-6)
    # The same optimizer state (moments, iterations), so checkpoints carry over.
    names = lambda optimizer: [v.path.split("/", 1)[1] for v in optimizer.variables]  # noqa: E731
    assert names(ours) == names(keras_adamw)
    for a, b in zip(ours.variables, keras_adamw.variables):
        np.testing.assert_allclose(to_np(a), to_np(b), atol=1e-6)


def test_variables_the_kernel_does_not_take_use_keras_update(monkeypatch, fused_calls):
    monkeypatch.setattr(optimizers_module, "_FUSED_DTYPES", ())
    initial, grads = problem()
    got, _ = run(AdamW(LR, weight_decay=WD, beta_2=BETA_2, epsilon=EPS), initial, grads)
    want = numpy_adamw(initial, grads, [LR] * len(SHAPES), WD, beta_2=BETA_2, epsilon=EPS,
                       decayed=[True, False, True, False])
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    assert fused_calls == []


def test_default_compile_uses_it_and_it_round_trips(preprocessor):
    model = make_clip(preprocessor)
    assert type(model.optimizer) is AdamW
    revived = keras.optimizers.deserialize(keras.optimizers.serialize(model.optimizer))
    assert type(revived) is AdamW
    assert revived.weight_decay == model.optimizer.weight_decay
