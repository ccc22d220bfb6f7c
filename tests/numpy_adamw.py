"""Keras' AdamW written out in NumPy (float64): the reference of the optimizer tests.

Keras' update: decoupled decay `w -= lr · wd · w` first, then the moments
and `w -= lr · √(1 − β₂ᵗ) / (1 − β₁ᵗ) · m / (√v + ε)` (ε outside the
bias correction), with AMSGrad's running maximum of `v` when asked.
"""

import numpy as np


def numpy_adamw(weights, grads, rates, weight_decay, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                decayed=None, amsgrad=False):
    """`grads` is a list of steps; `rates[i]` is weight i's learning rate, a
    float or a function of the 0-based step; `decayed[i]` (default all True)
    whether weight i is decayed."""
    weights = [w.astype(np.float64) for w in weights]
    decayed = decayed or [True] * len(weights)
    m = [np.zeros_like(w) for w in weights]
    v = [np.zeros_like(w) for w in weights]
    v_max = [np.zeros_like(w) for w in weights]
    for t, step_grads in enumerate(grads, start=1):
        for i, g in enumerate(step_grads):
            rate = rates[i](t - 1) if callable(rates[i]) else rates[i]
            if decayed[i]:
                weights[i] = weights[i] - weights[i] * weight_decay * rate
            m[i] = beta_1 * m[i] + (1 - beta_1) * g
            v[i] = beta_2 * v[i] + (1 - beta_2) * g * g
            v_max[i] = np.maximum(v_max[i], v[i])
            alpha = rate * np.sqrt(1 - beta_2**t) / (1 - beta_1**t)
            second = v_max[i] if amsgrad else v[i]
            weights[i] = weights[i] - alpha * m[i] / (np.sqrt(second) + epsilon)
    return weights
