"""Every variable of a task has its own path.

Keras' torch backend registers a layer's variables as torch parameters in a
dict keyed by `variable.path`: two variables with one path leave one of them
out of `model.parameters()`, so `zero_grad()` (which `fit` calls each step)
never clears its gradient and it accumulates over the steps; DDP would not
average it either. The two towers once shared `transformer_layer_*` and
`final_norm` paths.
"""

import collections

import keras
import numpy as np
import pytest

from keras_maeclip.models import CLIP, M3AE, MAE, MAECLIP
from tests.tiny import TINY

TASKS = [(CLIP, "clip_tiny_map"), (MAECLIP, "maeclip_tiny_gap"), (M3AE, "m3ae_tiny"), (MAE, "mae_tiny")]


@pytest.mark.parametrize("cls, preset", TASKS, ids=[c.__name__ for c, _ in TASKS])
def test_variable_paths_are_unique(cls, preset):
    model = cls.from_preset(preset, **({} if cls is MAE else {"vocabulary_size": 64}))
    counts = collections.Counter(v.path for v in model.variables)
    assert [p for p, n in counts.items() if n > 1] == []
    if keras.config.backend() == "torch":
        parameters = {id(p) for p in model.parameters()}
        assert all(id(v.value) in parameters for v in model.variables)


@pytest.mark.skipif(keras.config.backend() != "torch", reason="checks torch .grad buffers, which only the torch backend has")
def test_torch_fit_clears_every_gradient_between_steps():
    model = CLIP.from_preset("clip_tiny_gap", vocabulary_size=64, **TINY)
    rng = np.random.default_rng(0)
    batch = {
        "images": rng.normal(size=(4, 16, 16, 3)).astype("float32"),
        "token_ids": rng.integers(1, 64, (4, 16)).astype("int32"),
        "padding_mask": np.ones((4, 16), "int32"),
    }
    model.fit(batch, epochs=1, verbose=0)
    model.zero_grad()
    leftover = [v.path for v in model.trainable_variables
                if v.value.grad is not None and bool((v.value.grad != 0).any())]
    assert leftover == []
