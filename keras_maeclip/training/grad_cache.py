"""Accumulation that enlarges the negative set: GradCache for the contrastive tasks.

Keras' `gradient_accumulation_steps` averages the gradients of several
`fit` steps, so the contrastive loss of each micro-batch only sees that
micro-batch's negatives. `use_grad_cache(model, micro_batches=k)` gives
instead the gradient of ONE step on the whole batch (all its pairs as
negatives) while the towers' activations are held for one micro-batch
(`batch / k` examples) at a time (Gao et al. 2021, "Scaling deep contrastive
learning batch size under memory limited setup"; open_clip's
`--accum-freq`). Each `fit` step takes the full batch and:

1. runs the model on each of its `k` contiguous micro-batches without
   gradients and keeps the outputs (`y_pred`: embeddings, and for MAE-CLIP
   its reconstructions); the state of the non-trainable variables (seed
   generators, counters) before each micro-batch is kept too;
2. for each micro-batch in turn: puts back that state (the same masks are
   drawn again), runs it with gradients, puts its fresh outputs in place
   of its cached ones, computes the task's own loss on the concatenated
   outputs of the whole batch, and adds this loss's gradient; only the
   fresh micro-batch carries gradient into the towers;
3. applies the summed gradient once. The variables the loss holds itself
   (temperature, SigLIP bias: `model.contrastive`) get the same direct
   gradient in each of the `k` passes, so theirs is divided by `k`.

The result equals one step on the concatenated micro-batches, each drawn
as its own forward pass (for CLIP without patch dropout: exactly the step
on the full batch). Cost: two forward passes and one backward pass per
micro-batch, plus the (small) loss `k` times. Every loss term of these
tasks is a mean over the whole batch, so MAE-CLIP's reconstruction terms
come out right as well.

This is the one place with backend-specific training code (the step needs
a backward pass per micro-batch): `_jax_train_step`,
`_tensorflow_train_step`, `_torch_train_step`, each following the Keras
3.15 trainer's own `train_step` (they update its `loss` tracker,
`_loss_tracker`, as that step does). It runs on one device (one replica); the
data-parallel engines are refused with a message.
"""

import types

import keras
from keras import ops
from keras import tree

__all__ = ["grad_cache_micro_batches", "use_grad_cache"]


def use_grad_cache(model, micro_batches):
    """Train `model` with GradCache: negatives over the whole batch, memory of `batch / micro_batches`.

    Call after `compile()` (or before; the setting stays until called again).
    The batches given to `fit` must divide into `micro_batches` equal
    parts. `micro_batches=1` switches back to Keras' own step.

    Args:
        model: a compiled contrastive task (`CLIP`, `MAECLIP`): it has a
            `contrastive` loss layer with global negatives.
        micro_batches: int >= 1.

    Returns:
        The model.

    Example:
    >>> model = CLIP.from_preset("clip_tiny_gap", vocabulary_size=64)
    >>> use_grad_cache(model, micro_batches=2)  # doctest: +ELLIPSIS
    <CLIP ...>
    >>> grad_cache_micro_batches(model)
    2
    """
    if isinstance(micro_batches, bool) or not isinstance(micro_batches, int) or micro_batches < 1:
        raise ValueError(
            f"micro_batches={micro_batches!r}: use an int >= 1 (the number of micro-batches "
            "a batch is split into; 1 switches GradCache off)."
        )
    contrastive = getattr(model, "contrastive", None)
    if contrastive is None:
        raise ValueError(
            f"GradCache needs a contrastive task (CLIP, MAECLIP); {type(model).__name__} has "
            "no contrastive loss, so its micro-batches do not share negatives: use "
            "compile(gradient_accumulation_steps=...) instead."
        )
    if micro_batches > 1:
        if contrastive.negatives != "global" or contrastive.local_steps:
            raise ValueError(
                f"GradCache enlarges the set of global negatives; this model uses local "
                f"negatives (negatives={contrastive.negatives!r}, local_steps="
                f"{contrastive.local_steps}). Build it with negatives='global' and no local_steps."
            )
        _check_one_replica(model)
    model._grad_cache_micro_batches = micro_batches
    if micro_batches == 1:
        model.__dict__.pop("train_step", None)
    else:
        step = {
            "jax": _jax_train_step,
            "tensorflow": _tensorflow_train_step,
            "torch": _torch_train_step,
        }[keras.config.backend()]
        # An instance attribute: Keras' fit builds its train function from
        # `self.train_step`, so the model's class keeps its own step.
        object.__setattr__(model, "train_step", types.MethodType(step, model))
    if getattr(model, "optimizer", None) is not None and getattr(model, "train_function", None) is not None:
        model.make_train_function(force=True)
    return model


def grad_cache_micro_batches(model):
    """The GradCache micro-batch count of `model` (1: Keras' own step)."""
    return getattr(model, "_grad_cache_micro_batches", 1)


def _check_one_replica(model):
    backend = keras.config.backend()
    if backend == "jax" and keras.distribution.distribution() is not None:
        raise ValueError(
            "GradCache runs on one device: a keras.distribution is set "
            f"({type(keras.distribution.distribution()).__name__}). Unset it, or use "
            "gradient_accumulation_steps with data parallelism."
        )
    if backend == "tensorflow":
        import tensorflow as tf

        if tf.distribute.get_strategy().num_replicas_in_sync > 1:
            raise ValueError(
                "GradCache runs on one replica: a tf.distribute strategy with "
                f"{tf.distribute.get_strategy().num_replicas_in_sync} replicas is in scope."
            )
    if backend == "torch" and model.__dict__.get("_data_parallel_forward") is not None:
        raise ValueError("GradCache runs in one process: this model is wrapped for torch DDP.")


def _split(x, micro_batches):
    """`micro_batches` contiguous equal parts of every batch-major tensor of `x`."""
    leaves = [t for t in tree.flatten(x) if t is not None]
    size = leaves[0].shape[0]
    message = (
        f"GradCache splits each batch into {micro_batches} equal micro-batches; got a batch "
        f"of {size}. Use a batch size divisible by {micro_batches} (and drop_remainder=True "
        "in tf.data)."
    )
    if size is not None and size % micro_batches:
        raise ValueError(message)
    if size is None and keras.config.backend() == "tensorflow":
        # A graph whose batch size is known only when it runs: check then.
        import tensorflow as tf

        check = tf.debugging.assert_equal(tf.shape(leaves[0])[0] % micro_batches, 0, message=message)
        with tf.control_dependencies([check]):
            x = tree.map_structure(tf.identity, x)
    return [tree.map_structure(lambda t, j=j: ops.split(t, micro_batches, axis=0)[j], x)
            for j in range(micro_batches)]


def _step_inputs(model, data):
    """`x, y, sample_weight`, the micro-batches of `x`, and the call's kwargs."""
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    kwargs = {"training": True} if model._call_has_training_arg else {}
    return x, y, sample_weight, _split(x, model._grad_cache_micro_batches), kwargs


def _with_fresh(cached, fresh, j):
    """The whole batch's outputs: micro-batch `j`'s fresh ones, the others' cached."""
    parts = cached[:j] + [fresh] + cached[j + 1:]
    return tree.map_structure(lambda *p: ops.concatenate(p, axis=0), *parts)


def _batch_size(x):
    return ops.shape(next(t for t in tree.flatten(x) if t is not None))[0]


def _direct_indices(model):
    """Positions in `trainable_variables` of the loss layer's own variables."""
    own = {id(v) for v in model.contrastive.trainable_variables}
    return {i for i, v in enumerate(model.trainable_variables) if id(v) in own}


def _combine(total, grads):
    if total is None:
        return list(grads)
    return [g if t is None else t if g is None else t + g for t, g in zip(total, grads)]


def _scale_direct(model, grads):
    k = model._grad_cache_micro_batches
    direct = _direct_indices(model)
    return [g / k if (i in direct and g is not None) else g for i, g in enumerate(grads)]


def _jax_train_step(self, state, data):
    import jax

    trainable, non_trainable, optimizer_variables, metrics_variables = state
    x, y, sample_weight, chunks, kwargs = _step_inputs(self, data)

    states, cached = [], []
    current = non_trainable
    for chunk in chunks:
        states.append(current)
        y_pred, current = self.stateless_call(trainable, current, chunk, **kwargs)
        cached.append(jax.lax.stop_gradient(y_pred))

    grads = None
    for j, chunk in enumerate(chunks):
        def loss_of(trainable_values, j=j, chunk=chunk):
            fresh, after = self.stateless_call(trainable_values, states[j], chunk, **kwargs)
            y_all = _with_fresh(cached, fresh, j)
            loss, (_, after, metrics) = self.stateless_compute_loss(
                trainable_values, after, metrics_variables, x=x, y=y, y_pred=y_all,
                sample_weight=sample_weight, training=True,
            )
            return loss, (after, metrics, y_all)

        (loss, (current, new_metrics, y_all)), g = jax.value_and_grad(loss_of, has_aux=True)(trainable)
        grads = _combine(grads, g)
    grads = _scale_direct(self, grads)
    trainable, optimizer_variables = self.optimizer.stateless_apply(optimizer_variables, grads, trainable)
    # Each pass updated the task's loss trackers from the step's starting
    # values with the same whole-batch loss: keep one update (the last).
    # `_update_metrics_variables` is the Keras 3.15 JAX trainer's own
    # (Keras' `loss` tracker and compiled metrics), as its `train_step` uses it.
    logs, new_metrics = self._update_metrics_variables(new_metrics, loss, x, y, y_all, sample_weight)
    return logs, (trainable, current, optimizer_variables, new_metrics)


def _restore(variables, values):
    for variable, value in zip(variables, values):
        variable.assign(value)


def _tensorflow_train_step(self, data):
    import tensorflow as tf

    x, y, sample_weight, chunks, kwargs = _step_inputs(self, data)
    state_variables = self.non_trainable_variables

    states, cached = [], []
    for chunk in chunks:
        states.append([tf.identity(v.value) for v in state_variables])
        cached.append(tree.map_structure(tf.stop_gradient, self(chunk, **kwargs)))

    trainable = self.trainable_variables
    # Each pass's loss updates the task's trackers: start every pass from
    # the step's values, so that the step counts once.
    metrics = self.metrics_variables
    metric_values = [tf.identity(v.value) for v in metrics]
    grads = None
    for j, chunk in enumerate(chunks):
        _restore(state_variables, states[j])
        _restore(metrics, metric_values)
        with tf.GradientTape() as tape:
            y_all = _with_fresh(cached, self(chunk, **kwargs), j)
            loss = self.compute_loss(x=x, y=y, y_pred=y_all, sample_weight=sample_weight, training=True)
        # Embedding tables get IndexedSlices: add them as dense tensors.
        grads = _combine(grads, [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g
                                 for g in tape.gradient(loss, trainable)])
    self._loss_tracker.update_state(loss, sample_weight=_batch_size(x))
    self.optimizer.apply_gradients(zip(_scale_direct(self, grads), trainable))
    return self.compute_metrics(x, y, y_all, sample_weight=sample_weight)


def _torch_train_step(self, data):
    import torch

    x, y, sample_weight, chunks, kwargs = _step_inputs(self, data)
    state_variables = self.non_trainable_variables

    states, cached = [], []
    with torch.no_grad():
        for chunk in chunks:
            states.append([v.value.detach().clone() for v in state_variables])
            cached.append(self(chunk, **kwargs))

    # Each pass's loss updates the task's trackers: start every pass from
    # the step's values, so that the step counts once.
    metrics = self.metrics_variables
    metric_values = [v.value.detach().clone() for v in metrics]
    self.zero_grad()
    for j, chunk in enumerate(chunks):
        with torch.no_grad():
            _restore(state_variables, states[j])
            _restore(metrics, metric_values)
        y_all = _with_fresh(cached, self(chunk, **kwargs), j)
        loss = self.compute_loss(x=x, y=y, y_pred=y_all, sample_weight=sample_weight, training=True)
        # backward() adds into each variable's .grad: the sum over passes.
        loss.backward()
    self._loss_tracker.update_state(loss, sample_weight=_batch_size(x))
    trainable = self.trainable_variables[:]
    grads = _scale_direct(self, [v.value.grad for v in trainable])
    with torch.no_grad():
        self.optimizer.apply(grads, trainable)
    return self.compute_metrics(x, y, y_all, sample_weight=sample_weight)
