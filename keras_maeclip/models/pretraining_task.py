"""What every pretraining model shares: compile defaults and loss metrics."""

import keras
import keras_hub
from keras import ops

from keras_maeclip.losses import cross_replica
from keras_maeclip.models.presets import is_directory_preset
from keras_maeclip.models.resolution import with_image_size


def default_optimizer(
    variables,
    learning_rate=5e-4,
    weight_decay=0.2,
    warmup_steps=0,
    total_steps=None,
    beta_1=0.9,
    beta_2=0.98,
    epsilon=1e-6,
    global_clipnorm=None,
    gradient_accumulation_steps=None,
):
    """AdamW with linear warm-up then cosine decay, decay on matrices only.

    Weight decay is not applied to biases, normalisation parameters, the
    temperature (every variable of rank < 2), position embeddings, class and
    mask tokens or modality type embeddings.

    Args:
        variables: the model's trainable variables (to pick the exclusions).
        learning_rate: float, peak learning rate. Defaults to `5e-4`.
        weight_decay: float, defaults to `0.2` (CLIP's).
        warmup_steps: int, linear warm-up from 0. Defaults to `0`.
        total_steps: int or `None`. With a value, cosine decay to 0 at
            `total_steps`; with `None`, constant after the warm-up.
        beta_1, beta_2, epsilon: AdamW moments, defaults `0.9, 0.98, 1e-6`
            (CLIP's).
        global_clipnorm: float or `None`, clip the global gradient norm.
        gradient_accumulation_steps: int >= 2 or `None`. Average the
            gradients of this many training steps (micro-batches) and
            update once (Keras' optimizer option). The schedule still
            counts micro-batches: `warmup_steps` and `total_steps` are in
            `fit` steps, as are `ContrastiveLoss.steps_seen` and
            `local_steps`; `optimizer.iterations` counts updates. The
            contrastive loss sees one micro-batch at a time: accumulation
            does not enlarge its batch of negatives.

    Returns:
        A `keras.optimizers.AdamW`.

    Example:
    >>> opt = default_optimizer([], learning_rate=1e-3, warmup_steps=10,
    ...                         total_steps=100)
    >>> float(opt.learning_rate)  # step 0 of the warm-up
    0.0

    References: Loshchilov & Hutter 2019 (AdamW); Radford et al. 2021 §2.5.
    """
    if total_steps is not None and total_steps <= warmup_steps:
        raise ValueError(
            f"total_steps={total_steps} must exceed warmup_steps={warmup_steps}."
        )
    if total_steps is not None:
        schedule = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0 if warmup_steps else learning_rate,
            decay_steps=total_steps - warmup_steps,
            alpha=0.0,
            warmup_target=learning_rate if warmup_steps else None,
            warmup_steps=warmup_steps,
        )
    elif warmup_steps:
        schedule = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0,
            decay_steps=1,
            alpha=1.0,
            warmup_target=learning_rate,
            warmup_steps=warmup_steps,
        )
    else:
        schedule = learning_rate
    optimizer = keras.optimizers.AdamW(
        learning_rate=schedule,
        weight_decay=weight_decay,
        beta_1=beta_1,
        beta_2=beta_2,
        epsilon=epsilon,
        global_clipnorm=global_clipnorm,
        gradient_accumulation_steps=gradient_accumulation_steps,
    )
    optimizer.exclude_from_weight_decay(
        var_list=[v for v in variables if excluded_from_weight_decay(v)]
    )
    return optimizer


def excluded_from_weight_decay(variable):
    """Biases, norms, scalars, position tables, class / mask tokens, type embeddings."""
    path = variable.path
    return (
        len(variable.shape) < 2
        # Attention biases are (heads, head_dim): match biases by name.
        or variable.name in ("bias", "gamma", "beta")
        or any(part in path for part in _NO_DECAY_PARTS)
    )


# Learned tokens and tables added to inputs, not weights of a map: as MAE and
# M3AE, they are left out of weight decay.
_NO_DECAY_PARTS = ("position", "class_token", "mask_token", "type_embedding")


class PretrainingTask(keras_hub.models.Task):
    """Base of the pretraining models: `compile()` defaults and loss metrics.

    A subclass's `decoder` attribute (the masked models') is serialised
    with the task's config. Subclasses compute their loss terms in
    `compute_loss` and report each
    through `track(name, value, batch_size)`, which keeps one `keras.metrics.Mean` per
    term, so every term shows in `fit`'s logs on every backend.

    Args:
        metric_names: names of the metrics that `compute_loss` reports.
        **kwargs: `keras_hub.models.Task` arguments.
    """

    # Constructor arguments that `from_preset` passes to the task; the other
    # keyword arguments override the named architecture.
    task_keys = ("preprocessor", "compile", "name")
    # The preset override group holding the text tower's sizes, if any.
    text_overrides = None

    def __init__(self, metric_names=(), **kwargs):
        super().__init__(compile=False, **kwargs)
        # Keras tracks metrics held in a dict attribute: fit resets and logs them.
        self._trackers = {name: keras.metrics.Mean(name=name) for name in metric_names}

    def __call__(self, *args, **kwargs):
        # Under torch DistributedDataParallel the training forward pass goes
        # through the DDP wrapper, whose backward hooks average the
        # processes' gradients; the wrapper calls back into this method.
        # Set by `keras_maeclip.training.distribution` (torch only).
        route = self.__dict__.get("_data_parallel_forward")
        if route is not None and kwargs.get("training") and not route.inside:
            return route(*args, **kwargs)
        return super().__call__(*args, **kwargs)

    def track(self, name, value, batch_size):
        """Update the running mean of a reported metric.

        Weighted by `batch_size`, as Keras weights its `loss` tracker, so a
        term and the total average alike over a partial last batch.
        """
        self._trackers[name].update_state(
            ops.cast(value, "float32"), sample_weight=ops.cast(batch_size, "float32")
        )

    def regularization_loss(self):
        """Sum of the losses added by layers (`self.losses`), as float32."""
        total = ops.zeros((), "float32")
        for loss in self.losses:
            total = total + ops.cast(loss, "float32")
        return total

    def total_loss(self, loss):
        """`loss` plus `regularization_loss()`, as one replica's share.

        What `compute_loss` returns. Under `tf.distribute` each replica's
        loss is divided by the number of replicas, as Keras expects (it sums
        the replicas' gradients and multiplies the logged loss back); on
        JAX and torch the loss is returned as it is (see
        `keras_maeclip.losses.cross_replica`).
        """
        return cross_replica.scale_loss_for_replicas(loss + self.regularization_loss())

    def compile(
        self,
        optimizer="auto",
        learning_rate=5e-4,
        weight_decay=0.2,
        warmup_steps=0,
        total_steps=None,
        global_clipnorm=None,
        gradient_accumulation_steps=None,
        **kwargs,
    ):
        """Configure training; `optimizer="auto"` uses `default_optimizer`.

        Args:
            optimizer: `"auto"` or any Keras optimizer. With `"auto"`,
                AdamW with decay exclusions and warm-up + cosine schedule
                built from the next arguments; a user optimizer is used as
                given.
            learning_rate, weight_decay, warmup_steps, total_steps,
            global_clipnorm, gradient_accumulation_steps: see
            `default_optimizer`.
            **kwargs: passed to `keras.Model.compile` (e.g. `jit_compile`,
                `steps_per_execution`).
        """
        self._auto_compile_config = None
        if optimizer == "auto":
            self._auto_compile_config = dict(
                learning_rate=learning_rate,
                weight_decay=weight_decay,
                warmup_steps=warmup_steps,
                total_steps=total_steps,
                global_clipnorm=global_clipnorm,
                gradient_accumulation_steps=gradient_accumulation_steps,
            )
            optimizer = default_optimizer(
                self.trainable_variables,
                learning_rate=learning_rate,
                weight_decay=weight_decay,
                warmup_steps=warmup_steps,
                total_steps=total_steps,
                global_clipnorm=global_clipnorm,
                gradient_accumulation_steps=gradient_accumulation_steps,
            )
        elif gradient_accumulation_steps is not None:
            raise ValueError(
                "gradient_accumulation_steps applies to optimizer='auto'; with your own "
                "optimizer pass it to the optimizer (e.g. keras.optimizers.AdamW(..., "
                f"gradient_accumulation_steps={gradient_accumulation_steps}))."
            )
        if kwargs.get("loss") is not None:
            raise ValueError(
                f"{type(self).__name__} computes its own loss; do not pass "
                "loss= to compile()."
            )
        kwargs.pop("loss", None)
        super().compile(optimizer=optimizer, **kwargs)

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        """Build from a named architecture preset or load a preset directory.

        Args:
            preset: a name from `keras_maeclip.models.list_presets()` (an
                architecture, randomly initialised: no pretrained weights ship
                with the library) or a directory written by
                `save_to_preset()` (config, weights, tokenizer vocabulary).
            load_weights: bool. For a directory, load the saved weights.
            **kwargs: for a name, the task's arguments (`task_keys`, incl.
                `preprocessor`) and architecture overrides (e.g.
                `image_size=`, `decoder={...}`); with a preprocessor that
                has a tokenizer, the text tower's vocabulary and sequence
                length follow it unless given. For a directory, keras-hub
                loader arguments, and `image_size=` to load at another
                resolution (`keras_maeclip.models.resolution.with_image_size`).

        Example:
        >>> CLIP.from_preset("nope")
        Traceback (most recent call last):
        ValueError: Unknown preset 'nope'. Available presets: ...
        """
        if is_directory_preset(preset):
            if cls is PretrainingTask:
                # Called on the base class: load whichever task was saved.
                # (keras-hub would pick the first subclass sharing the
                # backbone class, e.g. MAECLIP for a saved CLIP.)
                return _saved_task_class(preset).from_preset(preset, load_weights=load_weights, **kwargs)
            image_size = kwargs.pop("image_size", None)
            task = super().from_preset(preset, load_weights=load_weights, **kwargs)
            return with_image_size(task, image_size) if image_size else task
        task_kwargs = {k: kwargs.pop(k) for k in cls.task_keys if k in kwargs}
        preprocessor = task_kwargs.get("preprocessor")
        if cls.text_overrides is not None and preprocessor is not None:
            given = kwargs.get(cls.text_overrides) or {}
            sizes = {
                "vocabulary_size": preprocessor.tokenizer.vocabulary_size(),
                "sequence_length": preprocessor.sequence_length,
            }
            for key, value in sizes.items():
                if key not in given:
                    kwargs.setdefault(key, value)
        return cls(**cls.build_parts(preset, **kwargs), **task_kwargs)

    @classmethod
    def build_parts(cls, preset, **overrides):
        """The randomly initialised layers of a named preset, as constructor kwargs."""
        raise NotImplementedError(f"{cls.__name__} does not build named presets.")

    def get_config(self):
        config = super().get_config()
        if getattr(self, "decoder", None) is not None:
            config["decoder"] = keras.layers.serialize(self.decoder)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("decoder"), dict):
            config["decoder"] = keras.layers.deserialize(config["decoder"])
        return super().from_config(config)

    def get_compile_config(self):
        """With the default optimizer, the arguments that rebuild it on load."""
        if getattr(self, "_auto_compile_config", None) is not None:
            return {"optimizer": "auto", **self._auto_compile_config}
        return super().get_compile_config()

    def compile_from_config(self, config):
        if config.get("optimizer") == "auto":
            self.compile(**config)
            # Build the optimizer now, as Keras does, so that a saved
            # optimizer state loads instead of being skipped.
            if self.built:
                self.optimizer.build(self.trainable_variables)
        else:
            super().compile_from_config(config)


def _saved_task_class(preset):
    """The registered task class named in a preset directory's task.json."""
    import json
    import os

    path = os.path.join(preset, "task.json")
    if not os.path.isfile(path):
        raise ValueError(
            f"{preset} has no task.json: it holds a backbone only. Load it with "
            "the task class (e.g. CLIP.from_preset), or save it with "
            "task.save_to_preset()."
        )
    with open(path) as f:
        name = json.load(f).get("registered_name")
    task_cls = keras.saving.get_registered_object(name)
    if task_cls is None or not (isinstance(task_cls, type) and issubclass(task_cls, PretrainingTask)):
        raise ValueError(f"{path} names {name!r}, which is not a keras_maeclip pretraining task.")
    return task_cls
