"""Contrastive losses with global or local negatives: InfoNCE (CLIP) or sigmoid (SigLIP)."""

import math

import keras
from keras import ops

from keras_maeclip.losses import cross_replica
from keras_maeclip.losses.sigmoid import NEGATIVES, chunked_sigmoid_loss, sigmoid_loss

LOSSES = ("softmax", "sigmoid")
# SigLIP's initial temperature and bias (Zhai et al. 2023 §3.2): t' = log 10, b = -10.
SIGLIP_INIT_LOGIT_SCALE = math.log(10.0)
SIGLIP_INIT_LOGIT_BIAS = -10.0


def l2_normalize(x, axis=-1, epsilon=1e-12):
    """`x / ||x||` along `axis`, computed in float32."""
    x = ops.cast(x, "float32")
    return x * ops.rsqrt(ops.maximum(ops.sum(x * x, axis=axis, keepdims=True), epsilon))


def _blocks(x, block_size):
    batch = x.shape[0]
    if batch is not None and batch % block_size:
        raise ValueError(
            f"local negatives: batch size {batch} is not a multiple of "
            f"local_batch_size={block_size}; use a batch that is (the "
            "per-replica batch times the number of replicas)."
        )
    return ops.reshape(x, (-1, block_size, x.shape[-1]))


def contrastive_logits(image_embeddings, text_embeddings, logit_scale, block_size=None):
    """Scaled image→text similarity logits, per block of the batch.

    Args:
        image_embeddings: `(batch, dim)` L2-normalised image embeddings.
        text_embeddings: `(batch, dim)` L2-normalised text embeddings; row
            `i` is the caption of image `i`.
        logit_scale: scalar, the multiplier (not its log).
        block_size: int or `None`. `None` compares every pair in the batch
            (global negatives); an int compares pairs only inside
            consecutive blocks of that many rows (local negatives).

    Returns:
        `(num_blocks, block, block)` float32 logits; entry `[n, i, j]` scores
        image `i` against text `j` of block `n`.
    """
    image_embeddings = ops.cast(image_embeddings, "float32")
    text_embeddings = ops.cast(text_embeddings, "float32")
    if block_size is None:
        image_embeddings = image_embeddings[None]
        text_embeddings = text_embeddings[None]
    else:
        image_embeddings = _blocks(image_embeddings, block_size)
        text_embeddings = _blocks(text_embeddings, block_size)
    similarity = ops.einsum("nid,njd->nij", image_embeddings, text_embeddings)
    return ops.cast(logit_scale, "float32") * similarity


def contrastive_loss(
    image_embeddings,
    text_embeddings,
    logit_scale,
    negatives="global",
    local_batch_size=None,
):
    """Symmetric InfoNCE loss between paired image and text embeddings.

    The mean of the image→text and text→image cross-entropies, where the
    positive of row `i` is column `i` and the negatives are the other
    columns of the batch (`"global"`) or of its block of `local_batch_size`
    consecutive rows (`"local"`, i.e. each replica's own batch).

    Args:
        image_embeddings: `(batch, dim)`, L2-normalised.
        text_embeddings: `(batch, dim)`, L2-normalised.
        logit_scale: scalar multiplier, `exp` of the learned log-scale.
        negatives: `"global"` or `"local"`. Defaults to `"global"`.
        local_batch_size: int. Block size for `"local"`.

    Returns:
        A dict of float32 scalars: `loss`, `image_to_text_accuracy`,
        `text_to_image_accuracy` (in-batch top-1, over the same blocks).

    Example:
    >>> z = l2_normalize(keras.random.normal((8, 4)))
    >>> out = contrastive_loss(z, z, 10.0, negatives="local", local_batch_size=4)
    >>> sorted(out)
    ['image_to_text_accuracy', 'loss', 'text_to_image_accuracy']

    References: Radford et al. 2021 (CLIP), Fig. 3; Weers et al. 2023 §3
    (local then global negatives); open_clip `loss.py`.
    """
    if negatives not in NEGATIVES:
        raise ValueError(f"negatives={negatives!r}; use one of {NEGATIVES}.")
    block = None
    if negatives == "local":
        if local_batch_size is None or int(local_batch_size) < 1:
            raise ValueError(
                "negatives='local' needs a positive local_batch_size (the "
                f"per-replica batch); got {local_batch_size!r}."
            )
        block = int(local_batch_size)
    logits = contrastive_logits(image_embeddings, text_embeddings, logit_scale, block)
    image_log_probs = ops.log_softmax(logits, axis=-1)
    text_log_probs = ops.log_softmax(logits, axis=-2)
    image_loss = -ops.mean(ops.diagonal(image_log_probs, axis1=-2, axis2=-1))
    text_loss = -ops.mean(ops.diagonal(text_log_probs, axis1=-2, axis2=-1))
    # Top-1 is right when the paired logit is the largest of its row/column
    # (written without arange so it also traces with an unknown batch size).
    positives = ops.diagonal(logits, axis1=-2, axis2=-1)
    i2t = ops.cast(positives >= ops.max(logits, axis=-1), "float32")
    t2i = ops.cast(positives >= ops.max(logits, axis=-2), "float32")
    return {
        "loss": 0.5 * (image_loss + text_loss),
        "image_to_text_accuracy": ops.mean(i2t),
        "text_to_image_accuracy": ops.mean(t2i),
    }


@keras.saving.register_keras_serializable(package="keras_maeclip")
class MaxValue(keras.constraints.Constraint):
    """Clamps a variable from above after each optimizer update.

    Args:
        max_value: float. The largest value the variable may take.

    Example:
    >>> float(MaxValue(1.0)(keras.ops.array(3.0)))
    1.0
    """

    def __init__(self, max_value):
        self.max_value = float(max_value)

    def __call__(self, w):
        return ops.minimum(w, ops.cast(self.max_value, w.dtype))

    def get_config(self):
        return {"max_value": self.max_value}


@keras.saving.register_keras_serializable(package="keras_maeclip")
class ContrastiveLoss(keras.layers.Layer):
    """InfoNCE or SigLIP's sigmoid loss, with a learnable temperature.

    `loss="softmax"` (default) is CLIP's symmetric InfoNCE; `"sigmoid"` is
    SigLIP's pairwise sigmoid loss (`keras_maeclip.losses.sigmoid_loss`).
    The temperature is one trainable scalar, `log_logit_scale`, initialised
    to `ln(1/0.07)` (softmax) or `ln 10` (sigmoid, SigLIP's `t'`) and
    clamped to `ln(100)` by a `MaxValue` constraint that the optimizer
    applies after every update (no hand-written clipping step). The sigmoid
    loss adds a trainable bias, `logit_bias`, initialised to `-10`.

    Under data parallelism the sigmoid loss's global form pairs each
    replica's images with every replica's texts one replica-chunk at a
    time (big_vision's ring of chunks): TF and torch replicas gather the
    embeddings (`batch × dim`) and loop over the other replicas' chunks;
    JAX loops over the per-replica chunks of the global batch. The full
    global logits matrix is never formed, and the loss and gradients equal
    the single-device loss on the concatenated batch.

    Under data parallelism (`keras_maeclip.training.distribution`),
    `"global"` negatives span the whole global batch on every engine: the
    loss and gradients equal the single-device ones on the concatenated
    batch (JAX sees global arrays; TF and torch replicas gather the
    embeddings with gradients, see `keras_maeclip.losses.cross_replica`).
    `"local"` negatives come from each replica's own rows, or from blocks of
    `local_batch_size` when given (on one device, blocks simulate replicas).

    With `local_steps=N`, the first `N` training steps use local negatives
    and later ones global negatives (the
    paper's schedule, N = 10,000). The switch happens inside the traced step:
    both losses are computed and one is selected by comparing a step counter
    with `N` (no retracing, no Python branch). The counter, `steps_seen`, is
    a non-trainable variable incremented by each training call; it equals
    the optimizer's iteration count under `fit` (a test checks it) and is
    saved with the weights. It is kept here rather than read from
    `optimizer.iterations` because JAX's stateless train step does not hand
    the optimizer's traced state to `compute_loss`.

    Args:
        negatives: `"global"` or `"local"`. Defaults to `"global"`.
        loss: `"softmax"` (InfoNCE) or `"sigmoid"` (SigLIP). Defaults to
            `"softmax"`.
        local_batch_size: int or `None`. Block size for `"local"` and for
            the local phase of `local_steps`; `None` means a replica's own
            batch (the whole batch on one device).
        local_steps: int or `None`. Training steps with local negatives
            before switching to global ones; needs `negatives="global"`.
        init_logit_scale: float or `None`. Initial value of the log-scale;
            `None` (default) is `ln(1 / 0.07)` for softmax, `ln 10` for
            sigmoid.
        max_logit_scale: float. Clamp on the log-scale, defaults to
            `ln(100)`.
        init_logit_bias: float. Initial bias of the sigmoid loss, defaults
            to `-10` (unused by softmax).
        **kwargs: base layer arguments.

    Call args:
        image_embeddings, text_embeddings: `(batch, dim)`, L2-normalised.

    Returns:
        The dict of `contrastive_loss` plus `logit_scale` (the multiplier),
        `uses_local_negatives` (1.0 while negatives are local) and, for the
        sigmoid loss, `logit_bias`.

    Example:
    >>> layer = ContrastiveLoss()
    >>> z = l2_normalize(keras.random.normal((4, 8)))
    >>> round(float(layer(z, z)["logit_scale"]), 3)
    14.286

    References: Radford et al. 2021 (CLIP) §2.5; Weers et al. 2023 §3;
    Zhai et al. 2023 (SigLIP) §3; big_vision's chunked sigmoid loss.
    """

    def __init__(
        self,
        negatives="global",
        local_batch_size=None,
        local_steps=None,
        init_logit_scale=None,
        max_logit_scale=math.log(100.0),
        loss="softmax",
        init_logit_bias=SIGLIP_INIT_LOGIT_BIAS,
        **kwargs,
    ):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if negatives not in NEGATIVES:
            raise ValueError(f"negatives={negatives!r}; use one of {NEGATIVES}.")
        if loss not in LOSSES:
            raise ValueError(f"loss={loss!r}; use one of {LOSSES}.")
        if init_logit_scale is None:
            init_logit_scale = SIGLIP_INIT_LOGIT_SCALE if loss == "sigmoid" else math.log(1 / 0.07)
        if local_steps is not None and negatives != "global":
            raise ValueError(
                "local_steps switches from local to global negatives: use it with "
                f"negatives='global'; got negatives={negatives!r}."
            )
        self.negatives = negatives
        self.local_batch_size = local_batch_size
        self.local_steps = local_steps
        self.init_logit_scale = float(init_logit_scale)
        self.max_logit_scale = float(max_logit_scale)
        self.loss = loss
        self.init_logit_bias = float(init_logit_bias)

    def build(self, *args, **kwargs):
        self.log_logit_scale = self.add_weight(
            name="log_logit_scale",
            shape=(),
            initializer=keras.initializers.Constant(self.init_logit_scale),
            constraint=MaxValue(self.max_logit_scale),
            dtype="float32",
        )
        if self.loss == "sigmoid":
            self.logit_bias = self.add_weight(
                name="logit_bias",
                shape=(),
                initializer=keras.initializers.Constant(self.init_logit_bias),
                dtype="float32",
            )
        # Every replica counts the same steps; under tf.distribute the
        # first replica's count is kept.
        self.steps_seen = self.add_weight(
            name="steps_seen", shape=(), initializer="zeros", dtype="int32",
            trainable=False, aggregation="only_first_replica",
        )
        self.built = True

    @property
    def logit_scale(self):
        return ops.exp(ops.cast(self.log_logit_scale, "float32"))

    def call(self, image_embeddings, text_embeddings, training=False):
        scale = self.logit_scale
        if self.negatives == "global" and self.local_steps is None:
            out = self._global_loss(image_embeddings, text_embeddings, scale, training)
            out["uses_local_negatives"] = ops.zeros((), "float32")
        elif self.negatives == "local":
            out = self._local_loss(image_embeddings, text_embeddings, scale)
            out["uses_local_negatives"] = ops.ones((), "float32")
        else:
            local = self._local_loss(image_embeddings, text_embeddings, scale)
            glob = self._global_loss(image_embeddings, text_embeddings, scale, training)
            use_local = ops.less(self.steps_seen, self.local_steps)
            out = {key: ops.where(use_local, local[key], glob[key]) for key in local}
            out["uses_local_negatives"] = ops.cast(use_local, "float32")
        if training:
            self.steps_seen.assign(self.steps_seen + 1)
        out["logit_scale"] = scale
        if self.loss == "sigmoid":
            out["logit_bias"] = ops.cast(self.logit_bias, "float32")
        return out

    def _pair_loss(self, image_embeddings, text_embeddings, scale, negatives, block=None, chunks=1):
        if self.loss == "sigmoid":
            return sigmoid_loss(
                image_embeddings, text_embeddings, scale, self.logit_bias,
                negatives, block, num_chunks=chunks,
            )
        return contrastive_loss(image_embeddings, text_embeddings, scale, negatives, block)

    def _global_loss(self, image_embeddings, text_embeddings, scale, training):
        """Negatives from the whole global batch, gathered from every replica."""
        if self.loss == "sigmoid":
            if cross_replica.batch_is_global():
                # JAX (or one device): one chunk of texts per replica.
                return self._pair_loss(
                    image_embeddings, text_embeddings, scale, "global",
                    chunks=cross_replica.num_replicas(),
                )
            # A TF / torch replica: its images against every replica's
            # texts, chunk by chunk; its share of the global sum, divided
            # by its own rows (see cross_replica's module docstring).
            return chunked_sigmoid_loss(
                image_embeddings,
                text_embeddings,
                cross_replica.gather_chunks(text_embeddings, training),
                cross_replica.gather_chunks(image_embeddings, training),
                scale,
                self.logit_bias,
            )
        return contrastive_loss(
            cross_replica.gather_batch(image_embeddings, training),
            cross_replica.gather_batch(text_embeddings, training),
            scale,
            "global",
        )

    def _local_loss(self, image_embeddings, text_embeddings, scale):
        """Negatives from blocks of `local_batch_size`, by default a replica's own rows."""
        block = self.local_batch_size
        if block is None and cross_replica.batch_is_global():
            # JAX (or one device): the global batch, in per-replica blocks.
            block = cross_replica.replica_batch_size(image_embeddings.shape[0])
        if block is None:
            # A TF / torch replica's slice is its own block.
            return self._pair_loss(image_embeddings, text_embeddings, scale, "global")
        return self._pair_loss(image_embeddings, text_embeddings, scale, "local", block)

    def compute_output_spec(self, image_embeddings, text_embeddings):
        scalar = keras.KerasTensor((), dtype="float32")
        names = (
            "loss",
            "image_to_text_accuracy",
            "text_to_image_accuracy",
            "logit_scale",
            "uses_local_negatives",
        ) + (("logit_bias",) if self.loss == "sigmoid" else ())
        return {name: scalar for name in names}

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "negatives": self.negatives,
                "local_batch_size": self.local_batch_size,
                "local_steps": self.local_steps,
                "init_logit_scale": self.init_logit_scale,
                "max_logit_scale": self.max_logit_scale,
                "loss": self.loss,
                "init_logit_bias": self.init_logit_bias,
            }
        )
        return config
