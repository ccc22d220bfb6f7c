"""Precision and memory: bf16 mixed precision and rematerialisation scopes.

Both act on the models built inside them, through Keras' own mechanisms
(`keras.config.set_dtype_policy`, `keras.RematScope`):

```python
with mixed_precision("mixed_bfloat16"), remat_scope("activations"):
    model = MAECLIP.from_preset("maeclip_base_max", preprocessor=preprocessor)
model.compile(gradient_accumulation_steps=4, global_clipnorm=1.0)
```

The other two memory / stability options are arguments of
`PretrainingTask.compile`: `gradient_accumulation_steps` (Keras' optimizer
option) and `global_clipnorm`.

Mixed precision (`"mixed_bfloat16"`): variables stay float32, layers compute
in bfloat16 (tower and decoder matmuls, attention including its softmax,
which Keras' `MultiHeadAttention` runs in the compute dtype; LayerNorm
statistics are float32 inside Keras). Everything the loss is made of is
float32: the embeddings are L2-normalised in float32, `ContrastiveLoss` is a
float32 layer (logits, log-softmax, learned temperature), the decoder casts
its pixel and token heads' outputs to float32, and the pixel MSE and token
cross-entropy cast again. The optimizer updates float32 variables. bfloat16
has float32's exponent range, so no loss scaling is needed (Keras adds a
`LossScaleOptimizer` only for `"mixed_float16"`, which is not offered here).

Rematerialisation: a layer built inside `keras.RematScope` recomputes its
forward pass in the backward pass instead of storing its activations.
Keras 3.15 wraps the call with `jax.checkpoint` (JAX),
`tf.recompute_grad` (TensorFlow) or `torch.utils.checkpoint` (PyTorch);
what works with these models (checked by the tests):

* `"activations"` wraps only the activation functions (the MLP's GELU):
  works on all three backends, gives the same loss and gradients; it
  saves only the activation's own intermediates, so little memory.
* `"full"`, `"larger_than"`, `"list_of_layers"` wrap whole layer calls.
  On JAX the wrapped call gets `training=` as a traced array and the
  transformer blocks fail ("Exception encountered when calling
  TransformerEncoder.call()"); on TensorFlow, `fit`'s graph mode fails
  ("The custom_gradient decorator currently supports keywords arguments
  only when eager execution is enabled.") and eager gradients are wrong.
  `remat_scope` refuses them there. On PyTorch they work for CLIP (same
  gradients), but NOT for the masked models (MAE, M3AE, MAE-CLIP): their
  masks come from a `keras.random.SeedGenerator` whose state has moved on
  when the backward pass recomputes the forward, so the recomputed masks
  differ and the gradients are wrong.
"""

import contextlib

import keras

__all__ = ["POLICIES", "REMAT_MODES", "mixed_precision", "remat_scope"]

POLICIES = ("float32", "mixed_bfloat16")
REMAT_MODES = (None, "activations", "full", "larger_than", "list_of_layers")
# Modes that wrap whole layer calls; only PyTorch runs them correctly (see above).
_LAYER_MODES = ("full", "larger_than", "list_of_layers")


@contextlib.contextmanager
def mixed_precision(policy="mixed_bfloat16"):
    """Set Keras' global dtype policy for the models built inside; restore it after.

    Args:
        policy: `"mixed_bfloat16"` (float32 variables, bfloat16 compute) or
            `"float32"`. Defaults to `"mixed_bfloat16"`.

    Yields:
        The `keras.DTypePolicy` in force inside the block.

    Example:
    >>> with mixed_precision() as policy:
    ...     layer = keras.layers.Dense(2)
    >>> policy.name, layer.compute_dtype, layer.variable_dtype
    ('mixed_bfloat16', 'bfloat16', 'float32')
    >>> keras.config.dtype_policy().name
    'float32'
    """
    if policy not in POLICIES:
        raise ValueError(
            f"policy={policy!r}; use one of {POLICIES}. (Keras' other policies can be set "
            "with keras.config.set_dtype_policy; float16 needs loss scaling and is not "
            "tested with these models.)"
        )
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield keras.config.dtype_policy()
    finally:
        keras.config.set_dtype_policy(previous)


def remat_scope(mode, output_size_threshold=1024, layer_names=None):
    """A `keras.RematScope` for the models built inside, or a null context for `None`.

    Args:
        mode: `None` (no rematerialisation), `"activations"` (every
            backend), or, on PyTorch only, `"full"`, `"larger_than"` or
            `"list_of_layers"` (not for the masked models: see the module
            docstring).
        output_size_threshold: int, for `"larger_than"`: layers whose output
            has more elements are rematerialised. Defaults to `1024`.
        layer_names: list of layer names, for `"list_of_layers"`.

    Returns:
        A context manager.

    Example:
    >>> with remat_scope("activations"):
    ...     layer = keras.layers.Dense(2, activation="gelu")
    >>> layer._remat_mode.mode
    'activations'
    """
    if mode not in REMAT_MODES:
        raise ValueError(f"mode={mode!r}; use one of {REMAT_MODES}.")
    if mode is None:
        return contextlib.nullcontext()
    backend = keras.config.backend()
    if mode in _LAYER_MODES and backend != "torch":
        raise ValueError(
            f"remat mode={mode!r} does not work on the {backend} backend with Keras "
            f"{keras.version()}: it wraps whole layer calls, which fails for the transformer "
            "blocks there. Use mode='activations' (all backends) or the torch backend."
        )
    return keras.RematScope(mode=mode, output_size_threshold=output_size_threshold, layer_names=layer_names)
