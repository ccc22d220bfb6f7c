"""Gradients of a scalar function of Keras variables, on the active backend.

Test-only glue: the library itself never needs per-backend gradient code
(training goes through `fit`), but the loss tests check gradients directly.
"""

import keras
import numpy as np


def gradients(fn, variables):
    """Returns `(value, [grad per variable])` as NumPy, for `fn()` a scalar."""
    backend = keras.config.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            value = fn()
        grads = tape.gradient(value, [v.value for v in variables])
        # Gathers (embeddings) give IndexedSlices: densify for NumPy.
        grads = [tf.convert_to_tensor(g) for g in grads]
    elif backend == "torch":
        import torch

        for v in variables:
            v.value.grad = None
        value = fn()
        grads = torch.autograd.grad(value, [v.value for v in variables])
    elif backend == "jax":
        import jax

        def pure(values):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return fn()

        value, grads = jax.value_and_grad(pure)([v.value for v in variables])
    else:
        raise NotImplementedError(backend)
    to_np = keras.ops.convert_to_numpy
    return float(to_np(value)), [np.asarray(to_np(g)) for g in grads]
