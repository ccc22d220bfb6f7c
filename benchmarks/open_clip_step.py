"""open_clip's training step on the bench-small workload: the reference rows of `train_step.py`.

Runs under the optional open_clip virtual environment (plain PyTorch, no
Keras, no absl), started by `benchmarks/train_step.py --reference=open_clip`
as a subprocess with `--open_clip_python`. One process times one row and
prints one `BENCH_RESULT_JSON: {...}` line.

The model is `open_clip.CLIP` built from a config with the architecture of
`clip_bench_small`: images 128², patch 16, vision tower 384 wide × 6 layers
(head width 64, so 6 heads), average pooling over the patch tokens; text
tower vocabulary 30522 × 32 tokens, 256 wide × 6 layers × 4 heads; joint
embedding 256; `open_clip.ClipLoss`; `torch.optim.AdamW` with weight decay
on matrices only (open_clip's training script's exclusions: biases, norms,
embeddings' gains and the logit scale get none). `patch_dropout=0.75` gives
FLIP (Li et al. 2023): the vision tower encodes 16 of the 64 patches plus
the class token during training. Differences that cost no matmul FLOPs:
open_clip's vision tower has a class token (attention over 65 tokens, ours
over 64) and a pre-LayerNorm, its text tower pools at the argmax token under
a causal mask (ours: mean over real tokens). `bf16` runs the forward under
`torch.autocast(device, torch.bfloat16)`, open_clip's `--precision amp_bf16`.

Other architectures and devices (used by `benchmarks/gpu_step.py` for the
paper-size ViT-B/16 row on a GPU): the config may also hold `"vision"` and
`"text"` (dicts that override VISION / TEXT below, e.g. `image_size`,
`width`, `layers`, `context_length`), `"embed_dim"`, and `"device"`
(`"cpu"`, the default; `"cuda"`; or `"auto"`: cuda when torch sees a GPU).
On CUDA the row also reports the device name and peak GPU memory
(`torch.cuda.max_memory_allocated`). Without these keys the row is
bench-small on the CPU, as before.

Timing, as in `train_step.py`: the same fixed, seeded random batch every
step; `loss.item()` ends each step (a sync); step time is the interval
between consecutive step ends; median over the timed steps after warm-up.

Usage (normally from train_step.py):
    .venv-openclip/bin/python benchmarks/open_clip_step.py \\
        '{"steps": 20, "warmup": 3, "batch_size": 64, "patch_dropout": 0.0, "dtype": "float32"}'
"""

import contextlib
import json
import os
import statistics
import sys
import time

_RESULT_PREFIX = "BENCH_RESULT_JSON: "

VISION = dict(layers=6, width=384, head_width=64, patch_size=16, image_size=128, pool_type="avg")
TEXT = dict(context_length=32, vocab_size=30522, width=256, heads=4, layers=6)
EMBED_DIM = 256


def analytic_flops_per_sample(patch_dropout, batch_size, vision=None, text=None, embed_dim=None):
    """Training FLOPs per sample, with `keras_maeclip.training.flops`' conventions.

    Matmuls and attention only, a multiply-add = 2 FLOPs, backward = 2x
    forward: patch embedding, the vision tower over the kept patches plus
    the class token, the text tower over 32 tokens, both projections and
    the sample's row of the batch's logits. `vision`, `text`, `embed_dim`:
    the architecture (default: bench-small's VISION, TEXT, EMBED_DIM).
    """
    vision = VISION if vision is None else vision
    text = TEXT if text is None else text
    embed_dim = EMBED_DIM if embed_dim is None else embed_dim

    def dense(tokens, d_in, d_out):
        return 2 * tokens * d_in * d_out

    def tower(tokens, width, layers):
        return layers * (2 * tokens * (4 * width * width + 2 * width * 4 * width)
                         + 2 * 2 * tokens * tokens * width)

    patches = (vision["image_size"] // vision["patch_size"]) ** 2
    kept = int(patches * (1.0 - patch_dropout)) if patch_dropout else patches
    forward = (
        dense(patches, vision["patch_size"] ** 2 * 3, vision["width"])
        + tower(kept + 1, vision["width"], vision["layers"])
        + tower(text["context_length"], text["width"], text["layers"])
        + dense(1, vision["width"], embed_dim) + dense(1, text["width"], embed_dim)
        + dense(1, embed_dim, batch_size)
    )
    return 3 * forward


def _param_groups(model, weight_decay):
    """open_clip's train script's split: no decay on biases, norms, gains, logit scale."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        excluded = p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name
        (no_decay if excluded else decay).append(p)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def run(config):
    loadavg_start = os.getloadavg()
    threads = config.get("threads")
    if threads:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:threads])
    import numpy as np
    import open_clip
    import torch

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(config.get("seed", 0))
    device = config.get("device", "cpu")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device={device!r} but torch {torch.__version__} sees no CUDA GPU")
    vision = dict(VISION, **config.get("vision", {}))
    vision["patch_dropout"] = float(config.get("patch_dropout", 0.0))
    text = dict(TEXT, **config.get("text", {}))
    embed_dim = int(config.get("embed_dim", EMBED_DIM))
    model = open_clip.CLIP(
        embed_dim=embed_dim, vision_cfg=vision, text_cfg=dict(text), output_dict=True
    ).to(device)
    model.train()
    loss_fn = open_clip.ClipLoss()
    optimizer = torch.optim.AdamW(
        _param_groups(model, config.get("weight_decay", 0.1)), lr=config.get("learning_rate", 1e-4)
    )
    batch_size = int(config["batch_size"])
    rng = np.random.default_rng(config.get("seed", 0))
    size, length = vision["image_size"], text["context_length"]
    images = torch.from_numpy(rng.uniform(-1, 1, (batch_size, 3, size, size)).astype("float32"))
    texts = torch.from_numpy(rng.integers(1, text["vocab_size"], (batch_size, length)).astype("int64"))
    images, texts = images.to(device), texts.to(device)
    bf16 = config.get("dtype") == "mixed_bfloat16"
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()

    def autocast():
        if bf16:
            return torch.autocast("cuda" if cuda else "cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    warmup, steps = int(config["warmup"]), int(config["steps"])
    ends, losses = [], []
    start = time.perf_counter()
    for _ in range(warmup + steps):
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            out = model(images, texts)
            loss = loss_fn(out["image_features"], out["text_features"], out["logit_scale"])
        loss.backward()
        optimizer.step()
        losses.append(loss.item())  # sync
        ends.append(time.perf_counter())
    step_times = [ends[i] - ends[i - 1] for i in range(warmup, warmup + steps)]
    flops = analytic_flops_per_sample(vision["patch_dropout"], batch_size, vision, text, embed_dim)
    extra = {}
    if vision != dict(VISION, patch_dropout=vision["patch_dropout"]) or text != TEXT:
        extra["architecture"] = {"vision": vision, "text": text, "embed_dim": embed_dim}
    if cuda:
        extra["device_name"] = torch.cuda.get_device_name(device)
        extra["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return {
        "backend": "open_clip",
        "model": "flip" if vision["patch_dropout"] > 0 else "clip",
        "patch_dropout": vision["patch_dropout"],
        "jit_compile": False,
        "dtype": config.get("dtype", "float32"),
        "batch_size": batch_size,
        "versions": {"open_clip": open_clip.__version__, "torch": torch.__version__},
        "threads": {"torch_num_threads": torch.get_num_threads()},
        "params": int(sum(p.numel() for p in model.parameters())),
        "device": device,
        "flops_per_sample": flops,
        "first_step_s": ends[0] - start,
        "step_times_s": step_times,
        "median_step_s": statistics.median(step_times),
        "mean_step_s": statistics.fmean(step_times),
        "min_step_s": min(step_times),
        "max_step_s": max(step_times),
        "samples_per_s": batch_size / statistics.median(step_times),
        "gflops_per_s": flops * batch_size / statistics.median(step_times) / 1e9,
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "loadavg_start": loadavg_start,
        "loadavg_end": os.getloadavg(),
        **extra,
    }


def main():
    if len(sys.argv) != 2:
        raise SystemExit(f"usage: {sys.argv[0]} JSON_CONFIG")
    try:
        result = run(json.loads(sys.argv[1]))
        result["ok"] = True
    except Exception as e:  # noqa: BLE001 - reported to the parent.
        import traceback

        traceback.print_exc()
        result = {"backend": "open_clip", "ok": False, "error": f"{type(e).__name__}: {e}"}
    sys.stdout.write(_RESULT_PREFIX + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
