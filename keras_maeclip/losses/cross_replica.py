"""Backend-specific glue the contrastive loss needs under data parallelism.

The loss itself is written in `keras.ops`; what differs between the
engines is only how a replica sees the other replicas' rows of the batch:

- **JAX** (`keras.distribution`): the train step is one program over
  global arrays sharded along the batch, so the loss already sees the whole
  global batch. Nothing is gathered; a replica's own rows are the
  consecutive block of `batch / num_replicas` rows on its device.
- **TensorFlow** (`tf.distribute`): the train step runs once per replica on
  the replica's slice. Global negatives gather the embeddings with the
  replica context's `all_gather`, whose gradient sums the incoming
  gradients over replicas and hands each replica its slice. Keras expects
  a replica's loss divided by the number of replicas (it sums the
  replicas' gradients and multiplies the logged loss back).
- **PyTorch** (DistributedDataParallel): each process runs the step on its
  slice. Global negatives gather with an all-gather that keeps gradients
  (its backward all-reduces the gradient and keeps this process's rows), on
  a process group of its own so that its collectives never interleave with
  DDP's gradient all-reduces; DDP averages the processes' gradients, so the
  loss is not rescaled.

With every replica computing the same global InfoNCE loss `L` from the
gathered embeddings, the gradient that reaches a replica's parameters
through its own rows is `N · ∂L/∂z_own` (TF/torch gather backward sums the
N identical replicas' contributions). TF divides each replica's loss by N
and sums over replicas; torch's DDP averages: both give exactly `∂L/∂θ` of
the single-device loss on the concatenated batch.

The sigmoid (SigLIP) loss is a sum over pairs, so a replica computes only
its own images' share `ℓ_r = (Σ_{i own, j all} softplus(z_ij) − Σ_{i own}
z_ii) / n_own` (big_vision's per-device loss) from the gathered texts, one
replica chunk at a time (`gather_chunks`). The global loss is the mean of
the `ℓ_r`; the gathers' backward hands each replica the other replicas'
gradients for its texts, and TF's 1/N scaling and sum, or DDP's average,
give again exactly `∂L/∂θ` of one device on the concatenated batch.
"""

import keras


def _tf_replica_context():
    """The TF replica context of a multi-replica step, else `None`."""
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync <= 1:
        return None
    return context


def _torch_world_size():
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size()


def _jax_batch_replicas():
    distribution = keras.distribution.distribution()
    if distribution is None:
        return 1
    mesh = distribution.device_mesh
    return int(mesh.shape[mesh.axis_names.index(distribution.batch_dim_name)])


def num_replicas():
    """Data-parallel replicas the current training step is split over.

    JAX: the size of the batch axis of the active `keras.distribution`;
    TensorFlow: `num_replicas_in_sync` inside a replica context; PyTorch:
    the process group's world size. 1 when nothing is distributed.
    """
    backend = keras.config.backend()
    if backend == "jax":
        return _jax_batch_replicas()
    if backend == "tensorflow":
        context = _tf_replica_context()
        return 1 if context is None else int(context.num_replicas_in_sync)
    if backend == "torch":
        return _torch_world_size()
    return 1


def batch_is_global():
    """True when the loss sees the global batch (JAX), False for a replica's slice."""
    return keras.config.backend() == "jax" or num_replicas() == 1


def replica_batch_size(batch_size):
    """Rows of a global `batch_size` (JAX, or one device) that one replica holds."""
    replicas = num_replicas()
    if batch_size is not None and batch_size % replicas:
        raise ValueError(
            f"The global batch of {batch_size} does not split evenly over "
            f"{replicas} data-parallel replicas; use a batch size that is a "
            f"multiple of {replicas}."
        )
    return None if batch_size is None else batch_size // replicas


def gather_batch(x, training=True):
    """Concatenate every replica's `x` along axis 0, keeping gradients.

    Identity when the loss already sees the global batch (JAX, or a single
    replica). Rows come in replica order, so row `i` of a replica's slice is
    row `replica * per_replica + i` of the result.

    Under torch only training steps gather: DDP wraps training only, and
    evaluation (`model.evaluate`, the recipes' held-out losses) runs on one
    process, which would wait forever for the others at a collective.
    `tf.distribute` runs evaluation on every replica, so TF gathers then too.
    """
    if batch_is_global():
        return x
    backend = keras.config.backend()
    if backend == "tensorflow":
        return _tf_replica_context().all_gather(x, axis=0)
    if backend == "torch":
        return _torch_gather(x) if training else x
    raise NotImplementedError(f"No cross-replica gather for backend {backend!r}.")


def gather_chunks(x, training=True):
    """Every replica's `x`, as a list of per-replica chunks in replica order.

    `gather_batch` split back into its replicas' parts, for losses that run
    over the other replicas' rows one chunk at a time (the sigmoid loss).
    One chunk (`x` itself) when nothing is gathered.
    """
    gathered = gather_batch(x, training)
    if gathered is x:
        return [x]
    replicas = num_replicas()
    parts = keras.ops.reshape(gathered, (replicas, -1) + tuple(x.shape[1:]))
    return [parts[k] for k in range(replicas)]


def scale_loss_for_replicas(loss):
    """A replica's share of the loss, as the engine's gradient reduction expects.

    TensorFlow sums the replicas' gradients, so each replica's loss is
    divided by the number of replicas (Keras multiplies the logged loss
    back). JAX computes one global loss; torch DDP averages the processes'
    gradients: both take the loss as it is.
    """
    if keras.config.backend() == "tensorflow":
        context = _tf_replica_context()
        if context is not None:
            return loss / context.num_replicas_in_sync
    return loss


# --- torch -------------------------------------------------------------------

_TORCH_GROUP = {}


def use_torch_gather_group(group):
    """The process group the torch gather uses (set by `configure_distribution`).

    It must not be DDP's group: DDP all-reduces gradient buckets
    asynchronously while autograd runs the gather's backward, and two
    collectives issued in different orders on one group would exchange the
    wrong tensors between processes.
    """
    _TORCH_GROUP["gather"] = group


def _torch_all_gather_function():
    """The autograd all-gather, defined once (torch is imported lazily)."""
    if "function" not in _TORCH_GROUP:
        import torch
        import torch.distributed as dist

        class AllGather(torch.autograd.Function):
            @staticmethod
            def forward(ctx, rows, group):
                parts = [torch.empty_like(rows) for _ in range(dist.get_world_size(group))]
                dist.all_gather(parts, rows.contiguous(), group=group)
                ctx.group, ctx.rank, ctx.rows = group, dist.get_rank(group), rows.shape[0]
                return torch.cat(parts, dim=0)

            @staticmethod
            def backward(ctx, grad):
                # Every process's loss depends on every row: sum their
                # gradients and keep this process's rows.
                grad = grad.contiguous()
                dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
                return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows], None

        _TORCH_GROUP["function"] = AllGather
    return _TORCH_GROUP["function"]


def _torch_gather(x):
    group = _TORCH_GROUP.get("gather")
    if group is None:
        raise RuntimeError(
            "Global negatives under torch.distributed need a gather process group; "
            "set up the run with keras_maeclip.training.configure_distribution()."
        )
    return _torch_all_gather_function().apply(x, group)
