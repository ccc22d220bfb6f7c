"""What every pretraining model shares: compile defaults and loss metrics."""

import keras
import keras_hub
from keras import ops

from keras_maeclip.losses import cross_replica
from keras_maeclip.models._validation import PresetConfigError, check_token_ids
from keras_maeclip.models.presets import is_directory_preset
from keras_maeclip.models.resolution import load_at_image_size
from keras_maeclip.optimizers import AdamW


# Default warm-up when `total_steps` is given and `warmup_steps` is not: a
# share of the run (MAE warms up for 40 of 800 epochs, 5 %).
DEFAULT_WARMUP_FRACTION = 0.05

# Fragments of variable paths left out of weight decay by every task, besides
# biases, norms and scalars: learned tables and tokens that are added to (or
# stand in for) inputs rather than weights of a map. See `PretrainingTask`.
NO_DECAY_PARTS = ("position", "class_token", "mask_token", "type_embedding", "probe")


def default_warmup_steps(total_steps):
    """The warm-up used when only `total_steps` is given: 5 % of it, at least 1.

    Example:
    >>> default_warmup_steps(1000)
    50
    """
    return max(1, int(round(DEFAULT_WARMUP_FRACTION * total_steps)))


def learning_rate_schedule(learning_rate, warmup_steps=None, total_steps=None):
    """Linear warm-up from 0 then cosine decay to 0 at `total_steps`.

    Args:
        learning_rate: float, the peak.
        warmup_steps: int or `None`. `None` with `total_steps` given: 5 % of
            `total_steps` (`default_warmup_steps`); `0`: no warm-up.
        total_steps: int or `None`. With `None` there is nothing to decay
            towards: constant `learning_rate` after the warm-up (if any).

    Returns:
        A `keras.optimizers.schedules.CosineDecay`, or the float itself
        (constant rate, no warm-up).

    Example:
    >>> schedule = learning_rate_schedule(1e-3, total_steps=100)
    >>> [round(float(schedule(s)), 6) for s in (0, 5, 100)]
    [0.0, 0.001, 0.0]

    References: Loshchilov & Hutter 2017 (SGDR, cosine); Goyal et al. 2017
    (warm-up); Weers et al. 2023 §4 (linear warm-up then cosine decay).
    """
    if warmup_steps is None:
        warmup_steps = default_warmup_steps(total_steps) if total_steps is not None else 0
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps={warmup_steps} must be >= 0 (0: no warm-up).")
    if total_steps is not None and total_steps <= warmup_steps:
        raise ValueError(
            f"total_steps={total_steps} must exceed warmup_steps={warmup_steps} (the linear "
            "warm-up); lower warmup_steps or raise total_steps."
        )
    if total_steps is not None:
        return keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0 if warmup_steps else learning_rate,
            decay_steps=total_steps - warmup_steps,
            alpha=0.0,
            warmup_target=learning_rate if warmup_steps else None,
            warmup_steps=warmup_steps,
        )
    if warmup_steps:
        return keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0,
            decay_steps=1,
            alpha=1.0,
            warmup_target=learning_rate,
            warmup_steps=warmup_steps,
        )
    return learning_rate


def default_optimizer(
    variables,
    learning_rate=5e-4,
    weight_decay=0.2,
    warmup_steps=None,
    total_steps=None,
    beta_1=0.9,
    beta_2=0.98,
    epsilon=1e-6,
    global_clipnorm=None,
    gradient_accumulation_steps=None,
    no_decay_parts=NO_DECAY_PARTS,
):
    """AdamW with linear warm-up then cosine decay, decay on weight matrices only.

    Weight decay is not applied to biases, normalisation parameters, the
    temperature (every variable of rank < 2), nor to variables whose path
    contains one of `no_decay_parts` (by default position tables, class and
    mask tokens, modality type embeddings and the MAP probe). The defaults
    here are CLIP's; each task's `compile()` passes its own
    (`PretrainingTask.optimizer_defaults`, `no_decay_parts`).

    Args:
        variables: the model's trainable variables (to pick the exclusions).
        learning_rate: float, peak learning rate. Defaults to `5e-4`.
        weight_decay: float, defaults to `0.2` (CLIP's).
        warmup_steps: int or `None`, linear warm-up from 0. `None`: 5 % of
            `total_steps` when that is given, else none; `0`: none.
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
        no_decay_parts: strings; a variable whose path contains one is not
            decayed. Defaults to `NO_DECAY_PARTS`.

    Returns:
        A `keras_maeclip.optimizers.AdamW` (Keras' AdamW; on PyTorch its
        update runs as one fused kernel).

    Example:
    >>> opt = default_optimizer([], learning_rate=1e-3, warmup_steps=10,
    ...                         total_steps=100)
    >>> float(opt.learning_rate)  # step 0 of the warm-up
    0.0

    References: Loshchilov & Hutter 2019 (AdamW); Radford et al. 2021 §2.5.
    """
    optimizer = AdamW(
        learning_rate=learning_rate_schedule(learning_rate, warmup_steps, total_steps),
        weight_decay=weight_decay,
        beta_1=beta_1,
        beta_2=beta_2,
        epsilon=epsilon,
        global_clipnorm=global_clipnorm,
        gradient_accumulation_steps=gradient_accumulation_steps,
    )
    optimizer.exclude_from_weight_decay(
        var_list=[v for v in variables if excluded_from_weight_decay(v, no_decay_parts)]
    )
    return optimizer


def excluded_from_weight_decay(variable, no_decay_parts=NO_DECAY_PARTS):
    """Whether weight decay skips `variable`.

    True for biases, norms and scalars (rank < 2, or named `bias`, `gamma`,
    `beta`) and for paths containing one of `no_decay_parts`.
    """
    path = variable.path
    return (
        len(variable.shape) < 2
        # Attention biases are (heads, head_dim): match biases by name.
        or variable.name in ("bias", "gamma", "beta")
        or any(part in path for part in no_decay_parts)
    )


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
    # AdamW settings of `compile()` (each task follows its reference; the
    # table "Optimiser defaults per task" in docs/design.md gives the reasons).
    optimizer_defaults = dict(
        learning_rate=5e-4, weight_decay=0.2, beta_1=0.9, beta_2=0.98, epsilon=1e-6
    )
    # Path fragments of the variables `compile()` leaves out of weight decay,
    # besides biases, norms and scalars.
    no_decay_parts = NO_DECAY_PARTS

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

    def fit(self, x=None, *args, **kwargs):
        """`keras.Model.fit`, after checking token ids given as arrays.

        Ids outside the text tower's vocabulary would index past its
        embedding table (JAX: `loss: nan`; TF / torch: an index error deep
        in the step). Arrays are checked here; a `tf.data` pipeline is not
        read ahead (a `CLIPPreprocessor` whose tokenizer fits the model only
        makes valid ids).
        """
        vocabulary_size = self._text_vocabulary_size()
        if vocabulary_size is not None and isinstance(x, dict) and "token_ids" in x:
            check_token_ids(x["token_ids"], vocabulary_size)
        return super().fit(x, *args, **kwargs)

    def _text_vocabulary_size(self):
        backbone = getattr(self, "backbone", None)
        text = getattr(backbone, "text_encoder", None) or (backbone if self.text_overrides else None)
        return getattr(text, "vocabulary_size", None)

    def compile(
        self,
        optimizer="auto",
        learning_rate=None,
        weight_decay=None,
        warmup_steps=None,
        total_steps=None,
        beta_1=None,
        beta_2=None,
        epsilon=None,
        global_clipnorm=None,
        gradient_accumulation_steps=None,
        no_decay_parts=None,
        **kwargs,
    ):
        """Configure training; `optimizer="auto"` uses `default_optimizer`.

        Every AdamW argument left at `None` takes the task's class default
        (`optimizer_defaults`, `no_decay_parts`; the table in
        docs/design.md says what each task decays and why).

        Args:
            optimizer: `"auto"` or any Keras optimizer. With `"auto"`,
                AdamW with decay exclusions and warm-up + cosine schedule
                built from the next arguments; a user optimizer is used as
                given.
            learning_rate, weight_decay, beta_1, beta_2, epsilon: AdamW's;
                `None` takes `optimizer_defaults`.
            warmup_steps: int or `None`. `None`: 5 % of `total_steps` when
                that is given (`default_warmup_steps`), else none; `0`: no
                warm-up.
            total_steps: int or `None`. Given, the rate decays along a
                cosine to 0 at this step; `None` (e.g. the constructor's
                own `compile()`): a constant rate after the warm-up.
            global_clipnorm, gradient_accumulation_steps: see
                `default_optimizer`.
            no_decay_parts: strings or `None`; variables whose path holds
                one skip weight decay (besides biases, norms, scalars).
                `None` takes the class's `no_decay_parts`.
            **kwargs: passed to `keras.Model.compile` (e.g. `jit_compile`,
                `steps_per_execution`).

        Example:
        >>> model = CLIP.from_preset("clip_tiny_gap", vocabulary_size=64)
        >>> model.compile(total_steps=1000)  # warm-up 50 steps, cosine to 0
        >>> float(model.optimizer.beta_2)
        0.98
        """
        self._auto_compile_config = None
        if optimizer == "auto":
            settings = dict(self.optimizer_defaults)
            given = dict(
                learning_rate=learning_rate, weight_decay=weight_decay,
                beta_1=beta_1, beta_2=beta_2, epsilon=epsilon,
            )
            settings.update({k: v for k, v in given.items() if v is not None})
            if warmup_steps is None and total_steps is not None:
                warmup_steps = default_warmup_steps(total_steps)
            parts = self.no_decay_parts if no_decay_parts is None else no_decay_parts
            self._auto_compile_config = dict(
                **settings,
                warmup_steps=warmup_steps,
                total_steps=total_steps,
                global_clipnorm=global_clipnorm,
                gradient_accumulation_steps=gradient_accumulation_steps,
                no_decay_parts=list(parts),
            )
            optimizer = default_optimizer(
                self.trainable_variables,
                **settings,
                warmup_steps=warmup_steps or 0,
                total_steps=total_steps,
                global_clipnorm=global_clipnorm,
                gradient_accumulation_steps=gradient_accumulation_steps,
                no_decay_parts=tuple(parts),
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
            try:
                return load_at_image_size(super().from_preset, preset, load_weights, **kwargs)
            except PresetConfigError as error:
                raise PresetConfigError(f"{preset}/task.json: {error}") from None
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
        for part in ("backbone", "preprocessor", "decoder"):
            if isinstance(config.get(part), dict):
                config[part] = _deserialize_part(cls, part, config[part])
        return super().from_config(config)

    def save_task_weights(self, filepath):
        """keras-hub's task weights (what is not in the backbone), without the optimizer.

        A preset is a model to start from: the optimizer's state (AdamW's
        two moments of every variable, about twice the model) would triple
        the files a preset publishes and is never restored into the fresh
        optimizer `from_preset` compiles (Keras warned "Skipping variable
        loading for optimizer" on every load). Training state lives in the
        recipe's backups (`keras_maeclip.training.StepBackupAndRestore`).
        """
        if not self.has_task_weights():
            raise ValueError(f"Task {self} has no weights not in the `backbone`; nothing to save.")
        keras.saving.save_weights(self, filepath, objects_to_skip=self._not_task_weights())

    def load_task_weights(self, filepath):
        """keras-hub's, skipping the optimizer (also in presets saved with one)."""
        keras.saving.load_weights(self, filepath, objects_to_skip=self._not_task_weights())

    def _not_task_weights(self):
        skip = list(self.backbone._flatten_layers())
        if getattr(self, "optimizer", None) is not None:
            skip.append(self.optimizer)
        return skip

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


def _deserialize_part(cls, part, serialized):
    """A task part from its config; a class that cannot be built is a one-line error."""
    try:
        return keras.layers.deserialize(serialized)
    except (TypeError, ValueError, AttributeError) as error:
        named = serialized.get("registered_name") or serialized.get("class_name")
        raise PresetConfigError(
            f"{cls.__name__}'s {part} names {named!r}, which cannot be built "
            f"({type(error).__name__}: {str(error).splitlines()[0][:200]}). The saved config is "
            "damaged or edited: save the preset again with save_to_preset()."
        ) from None


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
