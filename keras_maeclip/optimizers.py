"""AdamW for the pretraining tasks: Keras' AdamW, one fused update on PyTorch."""

import keras

from keras_maeclip.backend import torch_fused_adamw

__all__ = ["AdamW"]

# Variable dtypes PyTorch's fused AdamW kernel takes.
_FUSED_DTYPES = ("float32", "float16", "bfloat16", "float64")


@keras.saving.register_keras_serializable(package="keras_maeclip")
class AdamW(keras.optimizers.AdamW):
    """Keras' AdamW whose update on the torch backend is PyTorch's fused kernel.

    Same arguments, variables, state and update as
    `keras.optimizers.AdamW` on every backend (tested against NumPy and
    against Keras' AdamW). On JAX and TensorFlow it *is* Keras' AdamW (XLA
    fuses the update itself). On PyTorch, Keras runs the update as about
    ten `torch._foreach_*` passes over every variable, each writing a new
    tensor; for the 30522 × 256 token tables that was about 50 ms a table
    per step on a 2-core CPU. This class hands each update to
    `torch.optim.adamw.adamw(fused=True)`: one pass per tensor, weight
    decay folded in (`keras_maeclip.backend.torch_fused_adamw` maps Keras'
    ε placement onto PyTorch's). Variables of a dtype the kernel does not
    take fall back to Keras' own update.

    Everything around the update is Keras': gradient clipping, loss
    scaling, gradient accumulation, EMA, `exclude_from_weight_decay`,
    learning-rate schedules, AMSGrad, saving and loading.

    Args:
        **kwargs: `keras.optimizers.AdamW`'s.

    Example:
    >>> optimizer = AdamW(learning_rate=1e-3, weight_decay=0.2)
    >>> variable = keras.Variable([1.0, 2.0])
    >>> optimizer.apply([keras.ops.ones((2,))], [variable])

    References: Loshchilov & Hutter 2019 (AdamW); PyTorch `torch.optim.AdamW`
    (`fused=True`).
    """

    def _fused(self):
        return keras.config.backend() == "torch"

    def _apply_weight_decay(self, variables):
        # Keras calls this right before `_backend_update_step` with the same
        # variables; on torch the fused update applies the decay itself.
        if not self._fused():
            super()._apply_weight_decay(variables)

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        if not self._fused():
            return super()._backend_update_step(grads, trainable_variables, learning_rate)
        groups, rest = {}, []
        for grad, variable in zip(grads, trainable_variables):
            if variable.dtype not in _FUSED_DTYPES or grad.dtype != variable.value.dtype:
                rest.append((grad, variable))
                continue
            decay = bool(self.weight_decay) and self._use_weight_decay(variable)
            key = (decay, str(variable.value.device), variable.dtype)
            groups.setdefault(key, []).append((grad, variable))
        step = int(self.iterations) + 1
        for (decay, _, _), pairs in groups.items():
            variables = [v for _, v in pairs]
            indices = [self._get_variable_index(v) for v in variables]
            torch_fused_adamw(
                [v.value for v in variables],
                [g for g, _ in pairs],
                [self._momentums[i].value for i in indices],
                [self._velocities[i].value for i in indices],
                [self._velocity_hats[i].value for i in indices] if self.amsgrad else [],
                step,
                learning_rate,
                self.beta_1,
                self.beta_2,
                self.weight_decay if decay else 0.0,
                self.epsilon,
            )
        if rest:
            grads, variables = [g for g, _ in rest], [v for _, v in rest]
            super()._apply_weight_decay(variables)
            super()._backend_update_step(grads, variables, learning_rate)
