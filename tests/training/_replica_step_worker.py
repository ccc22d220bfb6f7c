"""One training step, single-device vs data-parallel, on the active backend.

Run by `test_data_parallel.py` in a subprocess (the engines must be set up
before the backend initialises its devices):

    JAX:   XLA_FLAGS=--xla_force_host_platform_device_count=4 python _replica_step_worker.py OUT 4
    TF:    python _replica_step_worker.py OUT 2          (2 logical CPU devices, MirroredStrategy)
    torch: torchrun --nproc_per_node=2 _replica_step_worker.py OUT 2   (gloo)

For each case a reference CLIP is trained on one device on the whole global
batch, and a copy with the same initial weights is trained with
`configure_distribution("data_parallel")`. Plain SGD makes the weight change
of one step `-lr · gradient`. Each process writes `OUT/rank<r>.npz`.

Cases (reference ↔ distributed):
- `global`: global negatives ↔ global negatives (gathered across replicas).
- `local`: local negatives in blocks of the per-replica batch ↔ local
  negatives with no block size (each replica's own rows).
- `schedule`: 2 steps with `local_steps=1`, blocks of the per-replica batch
  ↔ the same schedule with no block size.
- `sigmoid`: SigLIP's loss, global negatives ↔ the same (each replica's
  images against every replica's texts, chunk by chunk).
- `sigmoid_local`: SigLIP's loss in per-replica blocks ↔ each replica's rows.
- `model_parallel` (JAX only): the `global` case under
  `configure_distribution("model_parallel")` on a 2 × 2 mesh.
- `maeclip`: a tiny MAE-CLIP trains 2 distributed steps (smoke; no reference).
"""

import os
import sys

import numpy as np

GLOBAL_BATCH = 8
LEARNING_RATE = 0.5
SEQUENCE_LENGTH = 12
VOCABULARY = 64


def batch(n=GLOBAL_BATCH, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, SEQUENCE_LENGTH + 1, n)
    padding = (np.arange(SEQUENCE_LENGTH)[None] < lengths[:, None]).astype("int32")
    return {
        "images": rng.normal(size=(n, 16, 16, 3)).astype("float32"),
        "token_ids": (rng.integers(1, VOCABULARY, (n, SEQUENCE_LENGTH)) * padding).astype("int32"),
        "padding_mask": padding,
    }


def build(model_cls, preset, **task_kwargs):
    import keras

    from tests.tiny import TINY

    keras.utils.set_random_seed(0)
    sizes = dict(TINY)
    sizes["text_encoder"] = dict(
        TINY["text_encoder"], vocabulary_size=VOCABULARY, sequence_length=SEQUENCE_LENGTH
    )
    model = model_cls.from_preset(preset, compile=False, **sizes, **task_kwargs)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=LEARNING_RATE))
    return model


def train(model, rows, steps):
    import tensorflow as tf

    data = tf.data.Dataset.from_tensors(rows).repeat()
    history = model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
    return {k: float(v[-1]) for k, v in history.history.items()}


def weights(model):
    import keras

    return [keras.ops.convert_to_numpy(v) for v in model.trainable_weights]


def main(out_dir, replicas):
    import keras

    from keras_maeclip.models import CLIP, MAECLIP
    from keras_maeclip.training.distribution import configure_distribution

    backend = keras.config.backend()
    setup = None
    if backend == "tensorflow":
        # Logical CPU devices must exist before TensorFlow runs an op.
        setup = configure_distribution("data_parallel", cpu_devices=replicas)
    global_rows = batch()
    per_replica = GLOBAL_BATCH // replicas
    cases = {
        "global": ({}, {}, 1),
        "local": (
            dict(negatives="local", local_batch_size=per_replica),
            dict(negatives="local"),
            1,
        ),
        "schedule": (
            dict(local_steps=1, local_batch_size=per_replica),
            dict(local_steps=1),
            2,
        ),
        "sigmoid": (dict(loss="sigmoid"), dict(loss="sigmoid"), 1),
        "sigmoid_local": (
            dict(loss="sigmoid", negatives="local", local_batch_size=per_replica),
            dict(loss="sigmoid", negatives="local"),
            1,
        ),
    }
    results = {}
    references = {}
    for name, (reference_kwargs, _, steps) in cases.items():
        model = build(CLIP, "clip_tiny_gap", **reference_kwargs)
        initial = [w.copy() for w in weights(model)]
        logs = train(model, global_rows, steps)
        references[name] = initial
        results[f"{name}/reference/loss"] = logs["loss"]
        results[f"{name}/reference/contrastive_loss"] = logs["contrastive_loss"]
        for i, (before, after) in enumerate(zip(initial, weights(model))):
            results[f"{name}/reference/delta/{i}"] = after - before

    if setup is None:
        setup = configure_distribution("data_parallel")
    assert setup.num_replicas == replicas, (setup.num_replicas, replicas)
    rank = setup.process_index
    if backend == "torch":
        rows = {k: v[rank * per_replica:(rank + 1) * per_replica] for k, v in global_rows.items()}
    else:
        rows = global_rows
    for name, (_, distributed_kwargs, steps) in cases.items():
        with setup.scope():
            model = build(CLIP, "clip_tiny_gap", **distributed_kwargs)
            model.set_weights(
                _with_trainable(model, references[name])
            )
        model = setup.prepare_model(model)
        with setup.scope():
            logs = train(model, rows, steps)
        results[f"{name}/distributed/loss"] = logs["loss"]
        results[f"{name}/distributed/contrastive_loss"] = logs["contrastive_loss"]
        for i, (before, after) in enumerate(zip(references[name], weights(model))):
            results[f"{name}/distributed/delta/{i}"] = after - before

    if backend == "jax":
        # Model parallelism: a (replicas / 2) × 2 mesh, heads and MLP units
        # of every block split over the "model" axis.
        parallel = configure_distribution("model_parallel", model_parallel_size=2)
        model = build(CLIP, "clip_tiny_gap")
        model.set_weights(_with_trainable(model, references["global"]))
        logs = train(model, rows, 1)
        results["model_parallel/distributed/loss"] = logs["loss"]
        for i, (before, after) in enumerate(zip(references["global"], weights(model))):
            results[f"model_parallel/distributed/delta/{i}"] = after - before
        results["model_parallel/shardings"] = [
            # Padded to the rank: jax >= 0.5 prints P(...) and may drop trailing Nones.
            f"{v.path} {tuple(v.value.sharding.spec) + (None,) * (len(v.shape) - len(v.value.sharding.spec))}"
            for v in model.trainable_weights
        ]
        results["model_parallel/description"] = parallel.description
        setup = configure_distribution("data_parallel")

    with setup.scope():
        model = build(MAECLIP, "maeclip_tiny_gap", seed=1)
    model = setup.prepare_model(model)
    with setup.scope():
        logs = train(model, rows, 2)
    results["maeclip/distributed/loss"] = logs["loss"]
    for i, w in enumerate(weights(model)):
        results[f"maeclip/distributed/weight/{i}"] = w
    results["description"] = setup.description
    results["num_replicas"] = setup.num_replicas
    os.makedirs(out_dir, exist_ok=True)
    np.savez(os.path.join(out_dir, f"rank{rank}.npz"), **results)
    print(f"rank {rank}: {setup.description}: done", flush=True)


def _with_trainable(model, trainable_values):
    """All of `model`'s weights, with the trainable ones replaced by `trainable_values`."""
    import keras

    by_id = {id(v): value for v, value in zip(model.trainable_weights, trainable_values)}
    return [by_id.get(id(v), keras.ops.convert_to_numpy(v)) for v in model.weights]


if __name__ == "__main__":
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
    main(sys.argv[1], int(sys.argv[2]))
