"""One entry point to each backend's own distribution engine.

`configure_distribution(kind)` sets up data (or model) parallelism for the
active Keras backend and returns a `DistributionSetup` that the training
code uses the same way on every backend:

    setup = configure_distribution("auto")
    with setup.scope():
        model = CLIP.from_preset(...)
        model.compile(...)
    model = setup.prepare_model(model)
    data = setup.shard(unbatched).batch(setup.process_batch_size(global_batch))
    with setup.scope():
        model.fit(data, ...)

| kind            | JAX                                   | TensorFlow                                   | PyTorch                      |
|-----------------|---------------------------------------|----------------------------------------------|------------------------------|
| `none`          | one device                            | default strategy                             | one process                  |
| `data_parallel` | `keras.distribution.DataParallel`     | `MirroredStrategy`, `MultiWorkerMirroredStrategy` (`TF_CONFIG`), `TPUStrategy` (`tpu=`) | DDP under `torchrun` |
| `model_parallel`| `keras.distribution.ModelParallel` (batch × model mesh, towers' big kernels sharded) | not available: error | not available: error |
| `auto`          | data_parallel with > 1 device         | TPU if asked, multi-worker if `TF_CONFIG`, mirrored with > 1 GPU / CPU device | DDP when launched by `torchrun` with > 1 process |

Nothing here is a distribution engine of its own: the engines are Keras's
(JAX), `tf.distribute` (TF) and `torch.distributed` (torch). The
contrastive loss's cross-replica part is in
`keras_maeclip.losses.cross_replica`.
"""

import contextlib
import dataclasses
import os

import keras

from keras_maeclip.losses import cross_replica

KINDS = ("auto", "none", "data_parallel", "model_parallel")

# Variable-path patterns of the transformer blocks' large kernels (both
# towers and the decoder) → how a `(batch, model)` mesh shards them:
# attention heads and the MLP's hidden units are split over "model"
# (Megatron-style column / row split). Everything else is replicated.
MODEL_PARALLEL_RULES = (
    (r".*self_attention_layer/(query|key|value)/kernel$", (None, "model", None)),
    (r".*self_attention_layer/(query|key|value)/bias$", ("model", None)),
    (r".*self_attention_layer/attention_output/kernel$", ("model", None, None)),
    (r".*feedforward_intermediate_dense/kernel$", (None, "model")),
    (r".*feedforward_intermediate_dense/bias$", ("model",)),
    (r".*feedforward_output_dense/kernel$", ("model", None)),
)


@dataclasses.dataclass
class DistributionSetup:
    """What the training code needs to know about the distribution in force.

    Attributes:
        kind: `"none"`, `"data_parallel"` or `"model_parallel"` (after
            `"auto"` is resolved).
        backend: the Keras backend.
        num_replicas: data-parallel replicas the global batch is split over.
        num_processes: processes taking part (torch: world size; JAX:
            `jax.process_count()`; TF: workers of a multi-worker strategy).
        process_index: this process's index; 0 is the chief.
        engine: the engine object: a `keras.distribution.Distribution` (JAX),
            a `tf.distribute.Strategy` (TF) or the DDP wrapper (torch, after
            `prepare_model`); `None` without distribution.
        description: one line for logs.
    """

    kind: str
    backend: str
    num_replicas: int = 1
    num_processes: int = 1
    process_index: int = 0
    engine: object = None
    description: str = "one device"
    ddp_options: dict = dataclasses.field(default_factory=dict)

    @property
    def is_chief(self):
        """Whether this process writes checkpoints, presets and reports."""
        return self.process_index == 0

    def scope(self):
        """Context to build, compile and fit the model in (TF strategy scope)."""
        if self.backend == "tensorflow" and self.engine is not None:
            return self.engine.scope()
        return contextlib.nullcontext()

    def process_batch_size(self, global_batch_size):
        """Batch each process's dataset yields for a given global batch.

        JAX and TF feed the global batch (the engine splits it over
        devices; a multi-host JAX run's data is split by Keras'
        `auto_shard_dataset`); under torch DDP each process feeds its own
        `global / world_size` rows.
        """
        divisor = self.num_replicas
        if global_batch_size % divisor:
            raise ValueError(
                f"Global batch size {global_batch_size} does not split over "
                f"{divisor} replicas ({self.description}); use a multiple of {divisor}."
            )
        if self.backend == "torch":
            return global_batch_size // self.num_processes
        return global_batch_size

    def shard(self, dataset):
        """This process's share of an unbatched `tf.data` stream.

        torch DDP: every process reads a disjoint 1/world_size of the
        records (`Dataset.shard`). JAX and TF leave the dataset whole: Keras
        (JAX multi-host) and `tf.distribute` (TF multi-worker, auto-shard
        policy) split it themselves.
        """
        if self.backend == "torch" and self.num_processes > 1:
            return dataset.shard(self.num_processes, self.process_index)
        return dataset

    def close(self):
        """Leave the engine cleanly at the end of a run (torch: the process group)."""
        if self.backend == "torch" and self.kind == "data_parallel":
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()

    def prepare_model(self, model):
        """Attach the model to the engine; returns the model to train.

        torch DDP: wraps the model in `DistributedDataParallel` (which
        broadcasts rank 0's initial weights) and routes `fit`'s training
        forward pass through it. Other engines need nothing here.
        """
        if self.backend == "torch" and self.kind == "data_parallel":
            self.engine = _attach_ddp(model, **self.ddp_options)
        return model


def configure_distribution(
    kind="auto",
    model_parallel_size=2,
    tpu=None,
    cpu_devices=None,
    find_unused_parameters=False,
):
    """Set up the backend's distribution engine for `kind`.

    Call it before building the model. JAX: sets the global
    `keras.distribution`. TF: creates the strategy (build, compile and
    fit the model under `setup.scope()`). torch: joins the process group
    that `torchrun` describes in the environment (`gloo` on CPU, `nccl` on
    GPU); call `setup.prepare_model(model)` after building the model.

    Args:
        kind: one of `"auto"`, `"none"`, `"data_parallel"`,
            `"model_parallel"`.
        model_parallel_size: int, devices per model replica for
            `"model_parallel"` (the mesh's "model" axis). Defaults to `2`.
        tpu: str or `None`. TF: a TPU name or address for `TPUStrategy`
            (`"local"` on a TPU VM).
        cpu_devices: int or `None`. TF only: split the CPU into this many
            logical devices for `MirroredStrategy` (must run before
            TensorFlow initialises its devices). For JAX set
            `XLA_FLAGS=--xla_force_host_platform_device_count=N` before
            starting Python; for torch, `torchrun --nproc_per_node=N`.
        find_unused_parameters: torch DDP's option, for models with
            trainable weights that a step does not use.

    Returns:
        A `DistributionSetup`.

    Example:
    >>> setup = configure_distribution("none")
    >>> setup.num_replicas
    1
    """
    if kind not in KINDS:
        raise ValueError(f"Unknown distribution {kind!r}; use one of {KINDS}.")
    backend = keras.config.backend()
    if backend == "jax":
        return _configure_jax(kind, model_parallel_size)
    if backend == "tensorflow":
        return _configure_tensorflow(kind, tpu, cpu_devices)
    if backend == "torch":
        setup = _configure_torch(kind)
        setup.ddp_options = {"find_unused_parameters": find_unused_parameters}
        return setup
    raise ValueError(f"Distribution is not supported on the {backend!r} backend.")


def _unavailable(kind, backend, alternative):
    return ValueError(
        f"--distribution={kind} is not available on the {backend} backend: {alternative}"
    )


# --- JAX: keras.distribution -------------------------------------------------


def _configure_jax(kind, model_parallel_size):
    import jax

    if os.environ.get("KERAS_DISTRIBUTION_JOB_ADDRESSES") and jax.process_count() == 1:
        # Multi-host: the coordinator address, process count and id come from
        # KERAS_DISTRIBUTION_* environment variables (docs/scaling.md).
        keras.distribution.initialize()
    devices = keras.distribution.list_devices()
    processes = dict(num_processes=jax.process_count(), process_index=jax.process_index())
    if kind == "auto":
        kind = "data_parallel" if len(devices) > 1 else "none"
    if kind == "none":
        keras.distribution.set_distribution(None)
        return DistributionSetup("none", "jax", description=f"one device ({devices[0]})", **processes)
    if kind == "data_parallel":
        distribution = keras.distribution.DataParallel(devices=devices)
        keras.distribution.set_distribution(distribution)
        return DistributionSetup(
            "data_parallel", "jax", num_replicas=len(devices), engine=distribution,
            description=f"keras.distribution.DataParallel over {len(devices)} devices", **processes,
        )
    size = int(model_parallel_size)
    if size < 1 or len(devices) % size:
        raise ValueError(
            f"model_parallel_size={size} must divide the {len(devices)} devices; "
            "pick a divisor (the mesh is (devices / size) replicas × size)."
        )
    mesh = keras.distribution.DeviceMesh(
        shape=(len(devices) // size, size), axis_names=("batch", "model"), devices=devices
    )
    layout_map = keras.distribution.LayoutMap(mesh)
    for pattern, axes in MODEL_PARALLEL_RULES:
        layout_map[pattern] = axes
    distribution = keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch")
    keras.distribution.set_distribution(distribution)
    return DistributionSetup(
        "model_parallel", "jax", num_replicas=len(devices) // size, engine=distribution,
        description=(
            f"keras.distribution.ModelParallel, mesh {len(devices) // size} (batch) × {size} (model)"
        ),
        **processes,
    )


# --- TensorFlow: tf.distribute ----------------------------------------------


def _configure_tensorflow(kind, tpu, cpu_devices):
    import json

    import tensorflow as tf

    if kind == "model_parallel":
        raise _unavailable(
            kind, "tensorflow",
            "tf.distribute has no Keras 3 model-parallel strategy here; use "
            "--distribution=data_parallel, or the JAX backend for model parallelism.",
        )
    if cpu_devices:
        _split_tf_cpu(tf, int(cpu_devices))
    cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    workers = sum(len(v) for k, v in cluster.items() if k in ("chief", "worker"))
    gpus = tf.config.list_logical_devices("GPU")
    cpus = tf.config.list_logical_devices("CPU")
    if kind == "auto" and not (tpu or workers > 1 or len(gpus) > 1 or len(cpus) > 1):
        kind = "none"
    if kind == "none":
        return DistributionSetup("none", "tensorflow", description="default strategy (one device)")
    if tpu:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        strategy = tf.distribute.TPUStrategy(resolver)
        description = f"TPUStrategy ({tpu})"
    elif workers > 1:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        description = f"MultiWorkerMirroredStrategy over {workers} workers"
    else:
        devices = [d.name for d in (gpus if gpus else cpus)]
        strategy = tf.distribute.MirroredStrategy(devices=devices)
        description = f"MirroredStrategy over {len(devices)} devices"
    return DistributionSetup(
        "data_parallel", "tensorflow", num_replicas=strategy.num_replicas_in_sync,
        num_processes=max(workers, 1), process_index=_tf_process_index(strategy, cluster),
        engine=strategy, description=description,
    )


def _tf_process_index(strategy, cluster):
    """0 for the chief (the `chief` task, else worker 0), then the other workers."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    task_id = int(getattr(resolver, "task_id", 0) or 0)
    if task_type in (None, "chief"):
        return 0
    return task_id + (1 if "chief" in cluster else 0)


def _split_tf_cpu(tf, count):
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if current is not None and len(current) == count:
        return
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * count
        )
    except RuntimeError as error:
        raise RuntimeError(
            f"cpu_devices={count}: TensorFlow has already initialised its devices; "
            "configure the distribution before any TensorFlow op runs."
        ) from error


# --- PyTorch: torch.distributed + DDP ---------------------------------------


def _configure_torch(kind):
    import torch
    import torch.distributed as dist

    if kind == "model_parallel":
        raise _unavailable(
            kind, "torch",
            "Keras 3 has no torch model-parallel distribution; use "
            "--distribution=data_parallel (DDP), or the JAX backend.",
        )
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if kind == "auto":
        kind = "data_parallel" if world > 1 else "none"
    if kind == "none":
        return DistributionSetup("none", "torch", description="one process")
    if world < 2 and not dist.is_initialized():
        raise ValueError(
            "--distribution=data_parallel on torch needs several processes: launch with "
            "`torchrun --nproc_per_node=N recipes/pretrain.py ...` (docs/scaling.md)."
        )
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
    world, rank = dist.get_world_size(), dist.get_rank()
    # A group of its own for the contrastive loss's gather (see cross_replica).
    cross_replica.use_torch_gather_group(dist.new_group(ranks=list(range(world))))
    return DistributionSetup(
        "data_parallel", "torch", num_replicas=world, num_processes=world, process_index=rank,
        description=f"DistributedDataParallel, {world} processes ({dist.get_backend()})",
    )


def _check_every_variable_is_a_parameter(model):
    """DDP averages the gradients of `model.parameters()` only.

    Keras' torch layers register variables as torch parameters keyed by
    `variable.path`; two variables sharing a path would leave one out (the
    library's models keep their paths unique; `tests/models/test_variable_paths.py`).
    """
    parameters = {id(p) for p in model.parameters()}
    missing = [v.path for v in model.trainable_variables if id(v.value) not in parameters]
    if missing:
        raise ValueError(
            f"{len(missing)} trainable variables are not torch parameters of the model, so DDP "
            f"would not average their gradients (e.g. {missing[:3]}): give the layers that "
            "own them distinct names so that every variable path is unique."
        )


class _DDPForward:
    """Sends a task's training forward pass through `DistributedDataParallel`."""

    def __init__(self, model, **options):
        from torch.nn.parallel import DistributedDataParallel

        self.ddp = DistributedDataParallel(model, **options)
        self.inside = False

    def __call__(self, *args, **kwargs):
        self.inside = True
        try:
            return self.ddp(*args, **kwargs)
        finally:
            self.inside = False


def _attach_ddp(model, **options):
    if not hasattr(type(model), "total_loss"):
        raise TypeError(
            f"prepare_model routes fit's forward pass through DDP for keras_maeclip "
            f"pretraining tasks; got {type(model).__name__}."
        )
    if not model.built:
        raise ValueError("Build the model (e.g. call it once) before prepare_model().")
    _check_every_variable_is_a_parameter(model)
    route = _DDPForward(model, **options)
    # Not a Keras / torch attribute: a plain reference the task's __call__ reads.
    object.__setattr__(model, "_data_parallel_forward", route)
    return route.ddp
