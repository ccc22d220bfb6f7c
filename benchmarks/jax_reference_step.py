"""A pure-JAX CLIP training step on the bench-small workload: a reference row of `train_step.py`.

What it is for: the JAX row of `train_step.py` times our Keras `CLIP` under
XLA. This script times the same model, loss and optimiser written directly
in JAX (`jax`, `jax.numpy`, `jax.nn`, `jax.lax` only: no Keras, no flax, no
optax), one `jax.jit` around the whole step with its state donated. The gap
between the two rows is what the Keras path adds (its trainer, tf.data
feeding, metrics, variable handling); the gap between this row and eager
PyTorch belongs to XLA:CPU's code for these shapes.

The architecture is `CLIP.from_preset("clip_bench_small")` layer for layer
(keras_maeclip/models/presets.py, vit_encoder.py, text_encoder.py,
clip_backbone.py, keras-hub's `TransformerEncoder`):

- image tower: 128² images, a stride-16 16×16 convolution to 384 channels
  (our `PatchEmbedding`, `lax.conv_general_dilated` in NHWC as Keras' JAX
  backend runs it), plus the fixed 2-D sin-cos table (MAE's layout, not a
  parameter); no class token, no pre-norm; 6 pre-LN blocks; final LayerNorm;
- text tower: a 30522 × 256 token table (`jnp.take`), plus a learned
  32 × 256 position table; 6 pre-LN blocks under the padding mask; final
  LayerNorm;
- each block (keras-hub `TransformerEncoder(normalize_first=True)`):
  `x + MHA(LN(x))`, then `x + W2·gelu(W1·LN(x) + b1) + b2`; MLP ratio 4;
  exact (erf) GELU, Keras' `"gelu"`; LayerNorm ε = 1e-6 in Keras' form
  `x·inv + (β − mean·inv)`, `inv = γ·rsqrt(var + ε)`; attention as Keras'
  `MultiHeadAttention`: q, k, v kernels `(width, heads, 64)` with `(heads,
  64)` biases (`einsum("abc,cde->abde")`), `jax.nn.dot_product_attention(...,
  scale=1/8, implementation="xla")` with the text padding mask as a
  `(batch, 1, 1, length)` boolean mask (what Keras' JAX backend calls on
  CPU), output kernel `(heads, 64, width)` plus bias; dropout 0;
- heads: GAP (image: mean of the 64 patch tokens; text: mean over the real
  tokens, padding excluded), bias-free projections 384 → 256 and 256 → 256,
  L2 normalisation `x·rsqrt(max(|x|², 1e-12))`;
- loss: symmetric InfoNCE with global negatives, `logit_scale =
  exp(log_logit_scale)`, log-scale initialised to ln(1/0.07) and clamped to
  ln(100) after every update (our `MaxValue` constraint);
- optimiser: Keras' AdamW as `CLIP.compile()` builds it: lr 5e-4 (constant:
  no schedule without `total_steps`), β = (0.9, 0.98), ε = 1e-6, weight
  decay 0.2. Per step, first the decoupled decay `w -= lr·wd·w` on the
  decayed variables, then `m += (g − m)(1 − β1)`, `v += (g² − v)(1 − β2)`,
  `w -= m·lr·sqrt(1 − β2^t)/(1 − β1^t) / (sqrt(v) + ε)`, t = step + 1.
  Decayed: every variable of rank ≥ 2 not named bias / gamma / beta and
  whose path holds no "position" (`excluded_from_weight_decay`): all
  kernels and the token table; not decayed: biases (also the `(heads, 64)`
  attention biases), norms, the position table, the log-scale.
- initialisation (distributions as Keras draws them, values differ):
  Glorot-uniform kernels with the fans of the matrix each kernel flattens
  to (the patch kernel as 768 → 384, attention kernels as width → width),
  token table N(0, 0.02), position table N(0, 0.01), zero biases, unit
  gains.

Trainable parameters: 23,667,585. Keras' `count_params()` reports one more,
23,667,586: `ContrastiveLoss.steps_seen`, a non-trainable int step counter
(the optimiser's step count plays its part here).

What the reference leaves out, all off the matmul path: Keras' per-step
metrics (six running means, the in-batch top-1 accuracies), the
`steps_seen` counter, tf.data feeding (the batch here is put on the device
once and reused; `"feed": "host"` passes the NumPy arrays every step
instead, as Keras' trainer converts each tf.data batch) and Keras' trainer
loop and callbacks. float32 only.

FLOPs per sample: counted here with the conventions of
`keras_maeclip.training.flops` (matmuls and attention, backward = 2 ×
forward), without importing it (it imports Keras): 5,229,281,280 for
bench-small at batch 64, the same figure as our CLIP row.

The batch is `make_batch` of `workload.py` (as train_step.py's rows: the same
seed gives the same arrays as our rows'). Timing as in `train_step.py`:
`float(loss)` ends each step (a sync, JAX dispatches asynchronously); step
time is the interval between consecutive step ends; the first step
includes tracing and XLA compilation; median over the timed steps after
the warm-up. `XLA_FLAGS` in the environment applies (the row reports it).

Usage (normally from `train_step.py --reference=jax`):
    .venv/bin/python benchmarks/jax_reference_step.py \\
        '{"steps": 20, "warmup": 3, "batch_size": 64, "dtype": "float32", "seed": 0}'
Optional config keys: "threads" (pin to that many CPUs), "image_size"
(another resolution, as train_step.py's --image_size), "remat"
("activations": the GELU recomputed in the backward pass), "attention"
("jax_nn", the default, as Keras calls it, or "einsum": the same
einsum-softmax-einsum written out, "heads_first": q, k, v transposed to
(batch, heads, tokens, 64) before the two batched matmuls), "feed"
("device", default, or "host"), "learning_rate", "weight_decay".
"""

import json
import math
import os
import statistics
import sys
import time

_RESULT_PREFIX = "BENCH_RESULT_JSON: "

# clip_bench_small (keras_maeclip/models/presets.py: _VIT_BENCH, _TEXT_BENCH).
VISION = dict(image_size=128, patch_size=16, channels=3, width=384, layers=6, heads=6)
TEXT = dict(vocab_size=30522, context_length=32, width=256, layers=6, heads=4)
EMBED_DIM = 256
MLP_RATIO = 4.0
LAYER_NORM_EPSILON = 1e-6
INIT_LOG_LOGIT_SCALE = math.log(1 / 0.07)
MAX_LOG_LOGIT_SCALE = math.log(100.0)
# PretrainingTask.optimizer_defaults (CLIP's compile()).
OPTIMIZER = dict(learning_rate=5e-4, weight_decay=0.2, beta_1=0.9, beta_2=0.98, epsilon=1e-6)
# pretraining_task.NO_DECAY_PARTS and excluded_from_weight_decay's names.
NO_DECAY_PARTS = ("position", "class_token", "mask_token", "type_embedding", "probe")
NO_DECAY_NAMES = ("bias", "gamma", "beta")


def analytic_flops_per_sample(batch_size):
    """Training FLOPs per sample with `keras_maeclip.training.flops`' conventions (CLIP, GAP)."""

    def dense(tokens, d_in, d_out):
        return 2 * tokens * d_in * d_out

    def tower(tokens, width, layers):
        mlp = int(round(width * MLP_RATIO))
        return layers * (2 * tokens * (4 * width * width + 2 * width * mlp)
                         + 2 * 2 * tokens * tokens * width)

    p = VISION["patch_size"]
    patches = (VISION["image_size"] // p) ** 2
    forward = (
        dense(patches, p * p * VISION["channels"], VISION["width"])
        + tower(patches, VISION["width"], VISION["layers"])
        + tower(TEXT["context_length"], TEXT["width"], TEXT["layers"])
        + dense(1, VISION["width"], EMBED_DIM) + dense(1, TEXT["width"], EMBED_DIM)
        + dense(1, EMBED_DIM, batch_size)
    )
    return 3 * forward


# --------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------


def _glorot(key, shape, fan_in, fan_out):
    import jax

    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return jax.random.uniform(key, shape, "float32", -limit, limit)


def _block_params(key, width, heads):
    import jax
    import jax.numpy as jnp

    hidden = int(round(width * MLP_RATIO))
    head_dim = width // heads
    k = jax.random.split(key, 6)
    ln = lambda: {"gamma": jnp.ones((width,)), "beta": jnp.zeros((width,))}
    qkv = lambda kk: {"kernel": _glorot(kk, (width, heads, head_dim), width, width),
                      "bias": jnp.zeros((heads, head_dim))}
    return {
        "self_attention_layer_norm": ln(),
        "query": qkv(k[0]),
        "key": qkv(k[1]),
        "value": qkv(k[2]),
        "attention_output": {"kernel": _glorot(k[3], (heads, head_dim, width), width, width),
                             "bias": jnp.zeros((width,))},
        "feedforward_layer_norm": ln(),
        "feedforward_intermediate_dense": {"kernel": _glorot(k[4], (width, hidden), width, hidden),
                                           "bias": jnp.zeros((hidden,))},
        "feedforward_output_dense": {"kernel": _glorot(k[5], (hidden, width), hidden, width),
                                     "bias": jnp.zeros((width,))},
    }


def init_params(seed):
    import jax
    import jax.numpy as jnp

    key = jax.random.PRNGKey(seed)
    kv, kt, kp = jax.random.split(key, 3)
    vw, tw, p, c = VISION["width"], TEXT["width"], VISION["patch_size"], VISION["channels"]
    kv = jax.random.split(kv, VISION["layers"] + 1)
    kt = jax.random.split(kt, TEXT["layers"] + 2)
    kp = jax.random.split(kp, 2)
    vision = {
        "patch_embedding": {
            # Drawn as the (p·p·c, width) matrix it flattens to (FlattenedKernelInitializer).
            "kernel": _glorot(kv[0], (p * p * c, vw), p * p * c, vw).reshape(p, p, c, vw),
            "bias": jnp.zeros((vw,)),
        },
        "blocks": [_block_params(kv[i + 1], vw, VISION["heads"]) for i in range(VISION["layers"])],
        "final_norm": {"gamma": jnp.ones((vw,)), "beta": jnp.zeros((vw,))},
    }
    text = {
        "token_embedding": {
            "embeddings": 0.02 * jax.random.normal(kt[0], (TEXT["vocab_size"], tw), "float32")},
        "position_embedding": {
            "embeddings": 0.01 * jax.random.normal(kt[1], (TEXT["context_length"], tw), "float32")},
        "blocks": [_block_params(kt[i + 2], tw, TEXT["heads"]) for i in range(TEXT["layers"])],
        "final_norm": {"gamma": jnp.ones((tw,)), "beta": jnp.zeros((tw,))},
    }
    return {
        "vision": vision,
        "text": text,
        "image_projection": {"kernel": _glorot(kp[0], (vw, EMBED_DIM), vw, EMBED_DIM)},
        "text_projection": {"kernel": _glorot(kp[1], (tw, EMBED_DIM), tw, EMBED_DIM)},
        "contrastive": {"log_logit_scale": jnp.asarray(INIT_LOG_LOGIT_SCALE, "float32")},
    }


def decay_mask(params):
    """True where AdamW decays: `excluded_from_weight_decay`'s rule on this tree's paths."""
    import jax

    def decayed(path, leaf):
        names = [str(getattr(k, "key", getattr(k, "idx", k))) for k in path]
        return not (
            leaf.ndim < 2
            or names[-1] in NO_DECAY_NAMES
            or any(part in "/".join(names) for part in NO_DECAY_PARTS)
        )

    return jax.tree_util.tree_map_with_path(decayed, params)


def sincos_2d(width, grid):
    """MAE's 2-D sin-cos table, `(grid², width)`, as `keras_maeclip.layers.position`."""
    import numpy as np

    def one_d(dim, positions):
        half = dim // 2
        omega = np.exp(np.arange(half, dtype="float32") * np.float32(-math.log(10000.0) / half))
        angles = positions.astype("float32")[:, None] * omega[None, :]
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=-1)

    rows = np.repeat(np.arange(grid, dtype="float32"), grid)
    cols = np.tile(np.arange(grid, dtype="float32"), grid)
    return np.concatenate([one_d(width // 2, cols), one_d(width // 2, rows)], -1).astype("float32")


# --------------------------------------------------------------------------
# Forward pass and loss
# --------------------------------------------------------------------------


def _layer_norm(x, p):
    import jax.numpy as jnp
    from jax import lax

    mean = jnp.mean(x, axis=-1, keepdims=True)
    variance = jnp.var(x, axis=-1, keepdims=True)
    inv = lax.rsqrt(variance + LAYER_NORM_EPSILON) * p["gamma"]
    return x * inv + (p["beta"] - mean * inv)


def _attention(q, k, v, mask, implementation):
    """q, k, v `(batch, tokens, heads, head_dim)`; mask `(batch, 1, 1, tokens)` bool or None."""
    import jax
    import jax.numpy as jnp

    scale = 1.0 / math.sqrt(q.shape[-1])
    if implementation == "jax_nn":
        return jax.nn.dot_product_attention(q, k, v, mask=mask, scale=scale, implementation="xla")
    big_negative = -0.7 * jnp.finfo(q.dtype).max
    if implementation == "einsum":
        logits = jnp.einsum("BTNH,BSNH->BNTS", q, k) * scale
        if mask is not None:
            logits = jnp.where(mask, logits, big_negative)
        return jnp.einsum("BNTS,BSNH->BTNH", jax.nn.softmax(logits, axis=-1), v)
    if implementation == "heads_first":
        q, k, v = (jnp.transpose(t, (0, 2, 1, 3)) for t in (q, k, v))
        logits = jnp.matmul(q, jnp.swapaxes(k, -1, -2)) * scale
        if mask is not None:
            logits = jnp.where(mask, logits, big_negative)
        out = jnp.matmul(jax.nn.softmax(logits, axis=-1), v)
        return jnp.transpose(out, (0, 2, 1, 3))
    raise ValueError(f"attention={implementation!r}: use jax_nn, einsum or heads_first.")


def _gelu(x):
    import jax

    return jax.nn.gelu(x, approximate=False)  # Keras' "gelu": exact (erf)


# `"remat": "activations"` (train_step.py --remat=activations): the GELU is
# recomputed in the backward pass, as Keras' RematScope("activations") does.
REMAT = {"activations": False}


def _block(x, p, mask, attention):
    """keras-hub TransformerEncoder, normalize_first=True, dropout 0."""
    import jax
    import jax.numpy as jnp

    residual = x
    h = _layer_norm(x, p["self_attention_layer_norm"])
    q = jnp.einsum("abc,cde->abde", h, p["query"]["kernel"]) + p["query"]["bias"]
    k = jnp.einsum("abc,cde->abde", h, p["key"]["kernel"]) + p["key"]["bias"]
    v = jnp.einsum("abc,cde->abde", h, p["value"]["kernel"]) + p["value"]["bias"]
    o = _attention(q, k, v, mask, attention)
    o = jnp.einsum("abcd,cde->abe", o, p["attention_output"]["kernel"]) + p["attention_output"]["bias"]
    x = o + residual
    residual = x
    h = _layer_norm(x, p["feedforward_layer_norm"])
    dense_in, dense_out = p["feedforward_intermediate_dense"], p["feedforward_output_dense"]
    h = jnp.matmul(h, dense_in["kernel"]) + dense_in["bias"]
    h = jax.checkpoint(_gelu)(h) if REMAT["activations"] else _gelu(h)
    h = jnp.matmul(h, dense_out["kernel"]) + dense_out["bias"]
    return h + residual


def _l2_normalize(x):
    import jax.numpy as jnp
    from jax import lax

    return x * lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), 1e-12))


def encode_images(params, images, position_table, attention):
    import jax.numpy as jnp
    from jax import lax

    p = params["vision"]
    s = VISION["patch_size"]
    x = lax.conv_general_dilated(
        images, p["patch_embedding"]["kernel"], window_strides=(s, s), padding="VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    ) + p["patch_embedding"]["bias"]
    x = jnp.reshape(x, (-1, x.shape[1] * x.shape[2], VISION["width"]))
    x = x + position_table[None]
    for block in p["blocks"]:
        x = _block(x, block, None, attention)
    x = _layer_norm(x, p["final_norm"])
    pooled = jnp.mean(x, axis=1)  # GAP over the 64 patch tokens
    return _l2_normalize(jnp.matmul(pooled, params["image_projection"]["kernel"]))


def encode_text(params, token_ids, padding_mask, attention):
    import jax.numpy as jnp

    p = params["text"]
    x = jnp.take(p["token_embedding"]["embeddings"], token_ids, axis=0)
    x = x + p["position_embedding"]["embeddings"][None, : token_ids.shape[1]]
    mask = padding_mask.astype(bool)[:, None, None, :]  # keys only, as keras-hub + MHA
    for block in p["blocks"]:
        x = _block(x, block, mask, attention)
    x = _layer_norm(x, p["final_norm"])
    weights = padding_mask.astype(x.dtype)[:, :, None]  # GAP over the real tokens
    pooled = jnp.sum(x * weights, axis=1) / jnp.maximum(jnp.sum(weights, axis=1), 1.0)
    return _l2_normalize(jnp.matmul(pooled, params["text_projection"]["kernel"]))


def clip_loss(params, batch, position_table, attention):
    import jax
    import jax.numpy as jnp

    image = encode_images(params, batch["images"], position_table, attention)
    text = encode_text(params, batch["token_ids"], batch["padding_mask"], attention)
    scale = jnp.exp(params["contrastive"]["log_logit_scale"])
    logits = scale * jnp.einsum("nid,njd->nij", image[None], text[None])
    image_loss = -jnp.mean(jnp.diagonal(jax.nn.log_softmax(logits, axis=-1), axis1=-2, axis2=-1))
    text_loss = -jnp.mean(jnp.diagonal(jax.nn.log_softmax(logits, axis=-2), axis1=-2, axis2=-1))
    return 0.5 * (image_loss + text_loss)


# --------------------------------------------------------------------------
# AdamW (Keras 3 semantics) and the step
# --------------------------------------------------------------------------


def init_optimizer(params):
    import jax
    import jax.numpy as jnp

    zeros = lambda t: jax.tree_util.tree_map(jnp.zeros_like, t)
    return {"m": zeros(params), "v": zeros(params), "iterations": jnp.zeros((), "int32")}


def adamw_update(params, grads, state, decay, lr, wd, beta_1, beta_2, epsilon):
    """Keras' AdamW: decoupled decay first, then Adam with its bias-corrected step size."""
    import jax
    import jax.numpy as jnp

    t = (state["iterations"] + 1).astype("float32")
    alpha = lr * jnp.sqrt(1 - jnp.power(beta_2, t)) / (1 - jnp.power(beta_1, t))

    def one(w, g, m, v, decayed):
        if decayed:
            w = w - w * wd * lr
        m = m + (g - m) * (1 - beta_1)
        v = v + (jnp.square(g) - v) * (1 - beta_2)
        return w - (m * alpha) / (jnp.sqrt(v) + epsilon), m, v

    treedef = jax.tree_util.tree_structure(params)
    out = [one(*leaves) for leaves in zip(*(jax.tree_util.tree_leaves(t) for t in (
        params, grads, state["m"], state["v"], decay)))]
    new_params, m, v = (jax.tree_util.tree_unflatten(treedef, [o[i] for o in out]) for i in range(3))
    # The MaxValue constraint on the log-scale, after the update.
    new_params["contrastive"]["log_logit_scale"] = jnp.minimum(
        new_params["contrastive"]["log_logit_scale"], MAX_LOG_LOGIT_SCALE)
    return new_params, {"m": m, "v": v, "iterations": state["iterations"] + 1}


def make_train_step(decay, position_table, attention, lr, wd):
    import jax

    def train_step(params, opt_state, batch):
        loss, grads = jax.value_and_grad(clip_loss)(params, batch, position_table, attention)
        params, opt_state = adamw_update(
            params, grads, opt_state, decay, lr, wd,
            OPTIMIZER["beta_1"], OPTIMIZER["beta_2"], OPTIMIZER["epsilon"])
        return params, opt_state, loss

    return jax.jit(train_step, donate_argnums=(0, 1))


# --------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------


def run(config):
    loadavg_start = os.getloadavg()
    threads = config.get("threads")
    if threads:  # XLA:CPU sizes its thread pool from the CPU affinity.
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:threads])
    dtype = config.get("dtype", "float32")
    if dtype != "float32":
        raise ValueError(f"dtype={dtype!r}: the pure-JAX reference runs float32 only.")
    attention = config.get("attention", "jax_nn")
    # train_step.py's --image_size (the grid and the sin-cos table follow) and --remat.
    VISION["image_size"] = int(config.get("image_size") or VISION["image_size"])
    if VISION["image_size"] % VISION["patch_size"]:
        raise ValueError(f"image_size={VISION['image_size']} is not a multiple of the patch size 16.")
    remat = config.get("remat") or "none"
    if remat not in ("none", "activations"):
        raise ValueError(f"remat={remat!r}: the reference knows 'none' and 'activations'.")
    REMAT["activations"] = remat == "activations"
    feed = config.get("feed", "device")
    if feed not in ("device", "host"):
        raise ValueError(f"feed={feed!r}: use 'device' or 'host'.")
    t_import = time.perf_counter()
    import jax
    import jax.numpy as jnp
    import jaxlib
    import numpy as np

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from workload import make_batch  # the batch of our rows (NumPy only)

    import_s = time.perf_counter() - t_import
    batch_size = int(config["batch_size"])
    seed = int(config.get("seed", 0))
    t_build = time.perf_counter()
    params = init_params(seed)
    decay = decay_mask(params)
    n_params = int(sum(x.size for x in jax.tree_util.tree_leaves(params)))
    n_decayed = int(sum(x.size for x, d in zip(jax.tree_util.tree_leaves(params),
                                                jax.tree_util.tree_leaves(decay)) if d))
    opt_state = init_optimizer(params)
    grid = VISION["image_size"] // VISION["patch_size"]
    position_table = jnp.asarray(sincos_2d(VISION["width"], grid))
    step = make_train_step(
        decay, position_table, attention,
        float(config.get("learning_rate", OPTIMIZER["learning_rate"])),
        float(config.get("weight_decay", OPTIMIZER["weight_decay"])),
    )
    host_batch = make_batch(batch_size, VISION["image_size"], TEXT["context_length"],
                            TEXT["vocab_size"], seed)
    batch = host_batch if feed == "host" else jax.device_put(host_batch)
    jax.block_until_ready((params, opt_state, batch))
    build_s = time.perf_counter() - t_build

    warmup, steps = int(config["warmup"]), int(config["steps"])
    ends, losses = [], []
    start = time.perf_counter()
    for _ in range(warmup + steps):
        params, opt_state, loss = step(params, opt_state, batch)
        losses.append(float(loss))  # waits for the step
        ends.append(time.perf_counter())
    step_times = [ends[i] - ends[i - 1] for i in range(warmup, warmup + steps)]
    median = statistics.median(step_times)
    flops = analytic_flops_per_sample(batch_size)
    if "keras" in sys.modules:
        raise RuntimeError("keras was imported into the pure-JAX reference process.")
    result = {
        "backend": "jax (no Keras)",
        "model": "clip",
        "jit_compile": True,
        "input": "workload.make_batch's batch, " + (
            "put on the device once" if feed == "device" else "NumPy arrays passed every step"),
        "dtype": dtype,
        "batch_size": batch_size,
        "warmup": warmup,
        "steps": steps,
        "attention": attention,
        "feed": feed,
        "image_size": VISION["image_size"],
        "num_patches": (VISION["image_size"] // VISION["patch_size"]) ** 2,
        "remat": remat,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "versions": {"jax": jax.__version__, "jaxlib": jaxlib.__version__},
        "affinity": sorted(os.sched_getaffinity(0)),
        "threads": {},
        "params": n_params,
        "params_decayed": n_decayed,
        "flops_per_sample": flops,
        "import_s": import_s,
        "build_s": build_s,
        "first_step_s": ends[0] - start,
        "warmup_step_s": [ends[0] - start] + [ends[i] - ends[i - 1] for i in range(1, warmup)],
        "step_times_s": step_times,
        "median_step_s": median,
        "mean_step_s": statistics.fmean(step_times),
        "min_step_s": min(step_times),
        "max_step_s": max(step_times),
        "samples_per_s": batch_size / median,
        "gflops_per_s": flops * batch_size / median / 1e9,
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "losses": losses,
        "loadavg_start": loadavg_start,
        "loadavg_end": os.getloadavg(),
    }
    if not all(np.isfinite(losses)):
        result["warning"] = "non-finite loss"
    try:
        import resource

        result["max_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    except ImportError:
        pass
    return result


def main():
    if len(sys.argv) != 2:
        raise SystemExit(f"usage: {sys.argv[0]} JSON_CONFIG")
    if os.environ.get("KERAS_BACKEND"):
        # Harmless (Keras is never imported), but the parent unsets it: say so if not.
        sys.stderr.write("[jax_reference_step] note: KERAS_BACKEND is set; Keras is not used here.\n")
    try:
        result = run(json.loads(sys.argv[1]))
        result["ok"] = True
    except Exception as e:  # noqa: BLE001 - reported to the parent.
        import traceback

        traceback.print_exc()
        result = {"backend": "jax (no Keras)", "model": "clip", "ok": False,
                  "error": f"{type(e).__name__}: {e}"}
    sys.stdout.write(_RESULT_PREFIX + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
