"""Check that `jax_reference_step.py` computes our CLIP's training step.

Builds `CLIP.from_preset("clip_bench_small")` on the JAX backend, copies
its weights into the pure-JAX reference's parameter tree (every trainable
value, shapes checked), checks that both decay the same variables, then
compares on `train_step.py`'s batch:

- the loss of the reference's forward (each attention variant) against
  the loss of Keras' first `train_on_batch` (computed before its update);
- the weights after one step of each (Keras' AdamW against the reference's
  hand-written one), in units of the learning rate (a first Adam step
  moves each weight by about lr);
- with `--steps=N`, the losses of N steps of each from the same weights
  (they drift apart only by float rounding).

Not a benchmark (it imports Keras). About a minute on 2 cores.

    .venv/bin/python benchmarks/jax_reference_parity.py [--steps=10]
"""

import os
import re
import sys

os.environ["KERAS_BACKEND"] = "jax"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

import jax_reference_step as ref  # noqa: E402
from workload import make_batch  # noqa: E402

_HEADS = {
    "patch_embedding/projection": ("vision", "patch_embedding"),
    "final_norm": ("vision", "final_norm"),
    "text_final_norm": ("text", "final_norm"),
    "token_embedding": ("text", "token_embedding"),
    "position_embedding": ("text", "position_embedding"),
    "image_projection": ("image_projection",),
    "text_projection": ("text_projection",),
    "contrastive": ("contrastive",),
}


def slot(path):
    """The reference tree's keys of a Keras variable path."""
    m = re.match(r"(text_)?transformer_layer_(\d+)/(.*)", path)
    if m:
        rest = m.group(3).split("/")
        if rest[0] == "self_attention_layer" and len(rest) == 3:
            rest = rest[1:]  # query / key / value / attention_output
        return ("text" if m.group(1) else "vision", "blocks", int(m.group(2)), *rest)
    head, name = path.rsplit("/", 1)
    return (*_HEADS[head], name)


def get(tree, keys):
    for k in keys:
        tree = tree[k]
    return tree


def put(tree, keys, value):
    parent = get(tree, keys[:-1])
    if parent[keys[-1]].shape != value.shape:
        raise ValueError(f"{keys}: reference {parent[keys[-1]].shape}, Keras {value.shape}")
    parent[keys[-1]] = value


def main():
    from keras_maeclip.models import CLIP

    steps = 1
    for arg in sys.argv[1:]:
        if not arg.startswith("--steps="):
            raise SystemExit(f"usage: {sys.argv[0]} [--steps=N]")
        steps = max(1, int(arg.split("=", 1)[1]))

    keras.utils.set_random_seed(0)
    model = CLIP.from_preset("clip_bench_small", compile=False)
    model.compile(jit_compile=True, steps_per_execution=1)
    params = ref.init_params(0)
    decay = ref.decay_mask(params)
    copied = 0
    for v in model.trainable_variables:
        keys = slot(v.path)
        put(params, keys, jax.numpy.asarray(v.numpy()))
        if get(decay, keys) != model.optimizer._use_weight_decay(v):
            raise AssertionError(f"{v.path}: weight decay differs")
        copied += v.numpy().size
    total = sum(x.size for x in jax.tree_util.tree_leaves(params))
    print(f"params: Keras count_params {model.count_params():,} (trainable "
          f"{sum(v.numpy().size for v in model.trainable_variables):,}); reference {total:,}; "
          f"copied {copied:,}; decay masks agree")
    if copied != total:
        raise AssertionError("not every reference parameter was copied")

    host_batch = make_batch(64, 128, 32, 30522, 0)
    batch = jax.device_put(host_batch)
    table = jax.numpy.asarray(ref.sincos_2d(384, 8))
    ours = np.asarray(model.backbone.image_encoder.position_encoding.encoding)
    print(f"sin-cos table: max |ours - reference| {np.abs(ours - np.asarray(table)).max():.2e}")
    loss_fn = jax.jit(ref.clip_loss, static_argnums=3)
    for attention in ("jax_nn", "einsum", "heads_first"):
        print(f"reference loss ({attention}): {float(loss_fn(params, batch, table, attention)):.6f}")
    logs = model.train_on_batch(host_batch, return_dict=True)
    print(f"Keras loss (train_on_batch): {float(logs['loss']):.6f}")

    step = ref.make_train_step(decay, table, "jax_nn", ref.OPTIMIZER["learning_rate"],
                               ref.OPTIMIZER["weight_decay"])
    updated, state, loss = step(params, ref.init_optimizer(params), batch)
    worst, where = 0.0, None
    for v in model.trainable_variables:
        d = np.abs(v.numpy() - np.asarray(get(updated, slot(v.path)))).max()
        d /= ref.OPTIMIZER["learning_rate"]
        if d > worst:
            worst, where = d, v.path
    print(f"reference step loss {float(loss):.6f}; after one step max |Keras - reference| = "
          f"{worst:.4f} lr (at {where})")
    if steps > 1:
        keras_losses, ref_losses = [float(logs["loss"])], [float(loss)]
        for _i in range(steps - 1):
            keras_losses.append(float(model.train_on_batch(host_batch, return_dict=True)["loss"]))
            updated, state, loss = step(updated, state, batch)
            ref_losses.append(float(loss))
        print("losses, Keras:     " + " ".join(f"{x:.4f}" for x in keras_losses))
        print("losses, reference: " + " ".join(f"{x:.4f}" for x in ref_losses))


if __name__ == "__main__":
    main()
