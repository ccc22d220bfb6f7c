"""Paper-size CLIP / MAE-CLIP training steps on one GPU, per backend, beside open_clip.

The Python side of `benchmarks/gpu_check.sh` (issue 12, item 7). Runs on a
machine with one NVIDIA GPU and no TensorFlow (the device machine: Python
3.12, torch 2.11 + CUDA 13, jax 0.11 + CUDA 13 plugins, numpy 2.x; Keras,
keras-hub and open_clip are installed from carried wheels by gpu_check.sh),
and, with small settings, on a CPU for a smoke test. It never needs a GPU
unless `--require_gpu` is given.

What it measures
----------------
One training step of the paper-size presets (random init):
`clip_vit_b16_gap` (ViT-B/16 image tower at 224², 768 wide × 12 layers × 12
heads; text tower 30522-token vocabulary × 64 tokens, 512 wide × 12 layers
× 8 heads; embed 512; GAP pooling) and `maeclip_vit_b16_gap` (the same
towers plus the cross-modal decoder 512 wide × 8 blocks × 16 heads; image
mask 0.75, text mask 0.15, one pass, random masking: the class defaults),
batch 256, `keras.config.set_dtype_policy("mixed_bfloat16")`, the default
`compile()` optimizer (AdamW with decay exclusions), on each Keras backend:
JAX with `jit_compile=True` (XLA), PyTorch eager by default
(`--torch_compile`: `jit_compile=True`, i.e. torch.compile). TensorFlow is
timed only where it is installed; on the device machine it is not (its
wheel alone is several hundred MiB, beyond the 64 MiB the tool carries), so
its row prints "skipped" and why. Plus open_clip's CLIP with the same
widths, depths, heads, vocabulary, context length, embed and batch (vision
pooling "avg", as GAP) under `torch.autocast(bfloat16)`, through
`benchmarks/open_clip_step.py` (its `vision` / `text` / `device` config).

How the step is driven (no TensorFlow needed)
---------------------------------------------
keras-hub's `Task.fit` (our `CLIP.fit` → `PipelineModel.fit`) turns every
input into a `tf.data` pipeline, so this script does not call it: each
worker calls `keras.Model.fit(model, batches(), steps_per_epoch=warmup +
steps, epochs=1)` — the same backend trainer (`JAXTrainer.fit`,
`TorchTrainer.fit`, ...) that `Task.fit` ends in, with the same
`train_step`, loss and optimizer, minus the tf.data wrapping and the
token-id check of `PretrainingTask.fit`. `batches()` is a Python generator
that yields the same `(batch,)` every step; Keras' generator adapter feeds it
to the JAX trainer as arrays and to the torch trainer through a
`DataLoader(batch_size=None)`, with no tf.data on either. With
`--input=device` (default) the fixed, seeded random batch is put on the
accelerator once, so the step time excludes the host-to-device copy
(`--input=host`: NumPy arrays every step, copied each step).

TensorFlow itself: keras-hub (0.31, 0.32) imports `tensorflow` at import time
(e.g. `keras_hub/src/models/qwen3_5/qwen3_5_image_converter.py`, line 3:
`import tensorflow as tf`, reached from `import keras_hub`), and so does
`keras_maeclip/models/preprocessor.py` (line 9), which
`keras_maeclip.models` and `keras_maeclip.models.clip` import. Neither
uses TensorFlow on the training-step path. Where TensorFlow is missing (or
with `--block_tensorflow`, which simulates that on a machine that has it),
a worker for JAX or torch first puts a stand-in module into
`sys.modules["tensorflow"]` (`install_tensorflow_standin`): `tf.X.Y` is a
placeholder class that any call fails on loudly ("TensorFlow is not
installed ..."), `isinstance(x, tf.X)` is False, `tf.Module` is absent
(keras-hub then falls back to `object`), `tf.executing_eagerly()` is True;
`tensorflow_text` is blocked, and Keras is told TensorFlow is unavailable
(`keras.src.utils.module_utils.tensorflow._available = False`). Any use of
TensorFlow on the timed path therefore fails the row with that message
rather than being hidden. The attributes looked up on the stand-in are
listed in the row's JSON (`tf_standin_lookups`).

Timing
------
A Keras callback converts each step's loss to a Python float in
`on_train_batch_end` (`.item()`, which waits for the step's device work)
and stamps `time.perf_counter()`; step time is the interval between
consecutive step ends, so it includes Keras' per-step overhead. The warm-up
steps (`--warmup`, the first includes tracing and compilation) are
excluded; reported: median step over `--steps` timed steps, samples/s =
batch / median, achieved TFLOP/s = `analytic_flops_per_sample(model,
batch) · batch / median` (`keras_maeclip.training.flops`: matmuls and
attention, backward = 2 × forward; open_clip's row counts the same way in
open_clip_step.py), peak accelerator memory (JAX: the device's
`memory_stats()["peak_bytes_in_use"]`; torch: `max_memory_allocated`),
first-step time and the process's wall time.

Each row runs in its own subprocess (`KERAS_BACKEND` must be set before
Keras is imported; each backend holds the GPU for itself only while its
row runs; rows other than JAX's get `JAX_PLATFORMS=cpu`, since Keras
imports jax on every backend), with a timeout: `min(--row_timeout, time left of --budget_s)`;
a row is skipped when under `--min_row_s` of the budget is left. A row that
fails or times out prints its error and the others still run. Output: a
header, one table, then one JSON line per row (prefix `GPU_STEP_JSON: `),
on stdout and, with `--output_dir` (default: `$OUT` when set),
`gpu_step.txt` (header + table) and `gpu_step.jsonl` there.

How to run
----------
    bash benchmarks/gpu_check.sh                     # the device check (≤ 8 min)
    python benchmarks/gpu_step.py --require_gpu      # the same, without the wheel install
    # CPU smoke test: tiny presets, float32, TensorFlow blocked
    python benchmarks/gpu_step.py --block_tensorflow --backends=jax,torch \\
        --clip_preset=clip_tiny_gap --maeclip_preset=maeclip_tiny_gap \\
        --batch_size=2 --warmup=1 --steps=1 --dtype=float32
"""

import importlib.machinery
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time

from absl import app
from absl import flags

from machine import machine_facts  # benchmarks/machine.py: this script's folder is on sys.path
from workload import make_batch, run_and_report  # benchmarks/workload.py

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_BACKENDS = ("jax", "torch", "tensorflow")
_MODELS = ("clip", "maeclip")
_RESULT_PREFIX = "GPU_STEP_RESULT: "  # worker → parent
_JSON_PREFIX = "GPU_STEP_JSON: "  # parent's output lines

# open_clip architectures matching our CLIP presets (open_clip_step.py's
# `vision` / `text` / `embed_dim` config). Vision pooling "avg" = our GAP.
_OPEN_CLIP_ARCHS = {
    "clip_vit_b16_gap": {
        "vision": dict(image_size=224, patch_size=16, width=768, layers=12, head_width=64,
                       pool_type="avg"),
        "text": dict(context_length=64, vocab_size=30522, width=512, heads=8, layers=12),
        "embed_dim": 512,
    },
    "clip_tiny_gap": {
        "vision": dict(image_size=32, patch_size=4, width=96, layers=3, head_width=24,
                       pool_type="avg"),
        "text": dict(context_length=16, vocab_size=1000, width=96, heads=4, layers=2),
        "embed_dim": 96,
    },
    "clip_bench_small": {},  # open_clip_step.py's defaults
}

FLAGS = flags.FLAGS
flags.DEFINE_list("backends", list(_BACKENDS),
                  "Keras backends, in order (tensorflow: skipped where it is not installed).")
flags.DEFINE_list("models", list(_MODELS), "Models per backend: clip, maeclip.")
flags.DEFINE_string("clip_preset", "clip_vit_b16_gap", "CLIP preset.")
flags.DEFINE_string("maeclip_preset", "maeclip_vit_b16_gap", "MAE-CLIP preset.")
flags.DEFINE_bool("open_clip", True, "Also time open_clip's CLIP with --clip_preset's sizes.")
flags.DEFINE_string(
    "open_clip_python", None,
    "Python that has open_clip. Default: .venv-openclip/bin/python in the repository "
    "root if it exists, else this Python (the device machine: wheels on PYTHONPATH).")
flags.DEFINE_integer("batch_size", 256, "Batch size.", lower_bound=1)
flags.DEFINE_integer("warmup", 3, "Untimed warm-up steps (the first compiles).", lower_bound=1)
flags.DEFINE_integer("steps", 10, "Timed steps.", lower_bound=1)
flags.DEFINE_enum("dtype", "mixed_bfloat16", ["mixed_bfloat16", "float32"],
                  "Keras dtype policy (open_clip: bf16 autocast or none).")
flags.DEFINE_bool("torch_compile", False, "jit_compile=True (torch.compile) on torch; default eager.")
flags.DEFINE_enum("input", "device", ["device", "host"],
                  "device: the batch is put on the accelerator once; host: NumPy every step.")
flags.DEFINE_bool("require_gpu", False, "Fail a row that does not run on a GPU.")
flags.DEFINE_bool("block_tensorflow", False,
                  "Act as if TensorFlow were not installed (the CPU smoke test of the GPU path).")
flags.DEFINE_integer("row_timeout", 150, "Seconds at most per row.", lower_bound=1)
flags.DEFINE_integer("budget_s", 420, "Seconds for all rows together.", lower_bound=1)
flags.DEFINE_integer("min_row_s", 30, "Skip a row when less than this is left of the budget.")
flags.DEFINE_string("order", "open_clip,torch,jax,tensorflow",
                    "Order in which rows run (the table keeps backends' order): slow-to-compile "
                    "JAX after torch so that a slow compile cannot starve the others.")
flags.DEFINE_integer("seed", 0, "Seed for the batch and the initialisation.")
flags.DEFINE_string("output_dir", None, "Where to write gpu_step.txt / .jsonl (default: $OUT).")
flags.DEFINE_bool("worker", False, "Internal: run one row in this process.")
flags.DEFINE_enum("backend", None, list(_BACKENDS), "Internal: the worker's backend.")
flags.DEFINE_enum("model", "clip", list(_MODELS), "Internal: the worker's model.")


# --------------------------------------------------------------------------
# A stand-in for a missing TensorFlow.
# --------------------------------------------------------------------------

_STANDIN_LOOKUPS = []


class _Placeholder(type):
    """`tf.a.b` on the stand-in: a class; calling it raises, attributes nest."""

    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _placeholder(f"{cls._tf_path}.{name}")

    def __call__(cls, *args, **kwargs):
        raise RuntimeError(
            f"{cls._tf_path}(...) was called, but TensorFlow is not installed here: "
            "benchmarks/gpu_step.py put a stand-in module in its place (see its docstring)")


def _placeholder(path):
    return _Placeholder(path.rsplit(".", 1)[-1], (), {"_tf_path": path})


def install_tensorflow_standin():
    """Put a stand-in `tensorflow` into `sys.modules` (before Keras is imported).

    Only what is touched at import time works: `tf.executing_eagerly()` is
    True (Keras' `in_tf_graph`), `tf.Module` is absent (keras-hub falls back
    to `object`), every other `tf.X...` is a placeholder class: `isinstance`
    is False, a call raises RuntimeError naming it.
    """
    import types

    class _StandIn(types.ModuleType):
        def __getattr__(self, name):
            if name.startswith("__") or name == "Module":
                raise AttributeError(f"module 'tensorflow' (stand-in) has no attribute {name!r}")
            _STANDIN_LOOKUPS.append(name)
            return _placeholder(f"tf.{name}")

    module = _StandIn("tensorflow", "Stand-in for a missing TensorFlow (benchmarks/gpu_step.py).")
    module.__version__ = "0+standin"
    # A spec without an origin: importlib.util.find_spec("tensorflow") works
    # (torch._dynamo's skip list calls it) and points at no files.
    module.__spec__ = importlib.machinery.ModuleSpec("tensorflow", None)
    module.executing_eagerly = lambda: True
    sys.modules["tensorflow"] = module
    for name in ("tensorflow_text", "tensorflow_datasets", "tf_keras"):
        sys.modules[name] = None  # `import` raises ImportError, as when not installed


# --------------------------------------------------------------------------
# Worker: one Keras backend and model, in its own process.
# --------------------------------------------------------------------------


def _device_facts(backend):
    """(device description, on a GPU?) of the backend's default device."""
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        return f"{device.platform}: {device.device_kind}", jax.default_backend() == "gpu"
    if backend == "torch":
        import torch
        from keras.src.backend.torch.core import get_device

        device = str(get_device())
        if device.startswith("cuda"):
            return f"{device}: {torch.cuda.get_device_name(device)}", True
        return device, False
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return (f"GPU: {gpus[0].name}" if gpus else "CPU"), bool(gpus)


def _reset_peak_memory(backend):
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()


def _peak_memory_gib(backend):
    """Peak accelerator memory of this process, GiB; None where not reported."""
    try:
        if backend == "jax":
            import jax

            stats = jax.devices()[0].memory_stats() or {}
            peak = stats.get("peak_bytes_in_use")
            return None if peak is None else peak / 2**30
        if backend == "torch":
            import torch

            return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
        import tensorflow as tf

        if tf.config.list_physical_devices("GPU"):
            return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**30
    except Exception:  # noqa: BLE001 - a missing figure, not a failed row.
        return None
    return None


def _versions():
    import importlib.metadata

    out = {}
    for name in ("keras", "keras-hub", "jax", "jaxlib", "jax-cuda13-plugin", "torch",
                 "tensorflow", "numpy", "ml-dtypes", "optree"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def run_worker(backend):
    model_name = FLAGS.model
    preset = FLAGS.maeclip_preset if model_name == "maeclip" else FLAGS.clip_preset
    jit = True if backend != "torch" else FLAGS.torch_compile
    result = {"backend": backend, "model": model_name, "preset": preset, "jit_compile": jit,
              "dtype": FLAGS.dtype, "batch_size": FLAGS.batch_size, "warmup": FLAGS.warmup,
              "steps": FLAGS.steps, "input": FLAGS.input}
    tf_missing = importlib.util.find_spec("tensorflow") is None
    if backend == "tensorflow" and (tf_missing or FLAGS.block_tensorflow):
        raise RuntimeError("TensorFlow is not installed (or --block_tensorflow)")
    standin = backend != "tensorflow" and (tf_missing or FLAGS.block_tensorflow)
    if standin:
        install_tensorflow_standin()
    result["tensorflow"] = "stand-in (not installed or blocked)" if standin else "real"

    t0 = time.perf_counter()
    import keras

    if standin:
        try:
            from keras.src.utils import module_utils

            module_utils.tensorflow._available = False  # Keras: "TensorFlow is not installed"
        except (ImportError, AttributeError):
            pass
    import numpy as np

    try:  # the installed library (gpu_check.sh installs its wheel), else this checkout
        import keras_maeclip  # noqa: F401
    except ImportError:
        sys.path.insert(0, _REPO)
    from keras_maeclip.models import CLIP, MAECLIP
    from keras_maeclip.training.flops import analytic_flops_per_sample

    assert keras.backend.backend() == backend, keras.backend.backend()
    result["import_s"] = time.perf_counter() - t0
    result["versions"] = _versions()
    result["device"], on_gpu = _device_facts(backend)
    if FLAGS.require_gpu and not on_gpu:
        raise RuntimeError(f"--require_gpu, but {backend} runs on {result['device']}")

    t0 = time.perf_counter()
    keras.utils.set_random_seed(FLAGS.seed)
    keras.config.set_dtype_policy(FLAGS.dtype)
    if model_name == "maeclip":
        model = MAECLIP.from_preset(preset, seed=FLAGS.seed, compile=False)
    else:
        model = CLIP.from_preset(preset, compile=False)
    if model.preprocessor is not None:
        raise ValueError(f"Preset {preset!r} has a preprocessor; expected none.")
    model.compile(jit_compile=jit, steps_per_execution=1)
    result["build_s"] = time.perf_counter() - t0
    result["params"] = int(model.count_params())
    result["flops_per_sample"] = analytic_flops_per_sample(model, FLAGS.batch_size)
    backbone = model.backbone
    img, txt = backbone.image_encoder, backbone.text_encoder
    result["architecture"] = {
        "image": {k: getattr(img, k, None) for k in
                  ("image_size", "patch_size", "hidden_dim", "num_layers", "num_heads")},
        "text": {k: getattr(txt, k, None) for k in
                 ("vocabulary_size", "sequence_length", "hidden_dim", "num_layers", "num_heads")},
        "embedding_dim": getattr(backbone, "embedding_dim", None),
    }

    batch = make_batch(FLAGS.batch_size, img.image_size, txt.sequence_length,
                       txt.vocabulary_size, FLAGS.seed)
    if FLAGS.input == "device" and backend != "tensorflow":
        batch = {k: keras.ops.convert_to_tensor(v) for k, v in batch.items()}

    def batches():
        while True:
            yield (batch,)

    def to_float(x):
        return float(x.item() if hasattr(x, "item") else np.asarray(x))

    class StepTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.end, self.losses = [], []

        def on_train_batch_end(self, step, logs=None):
            self.losses.append(to_float(logs["loss"]))  # waits for the step's device work
            self.end.append(time.perf_counter())

    timer = StepTimer()
    total = FLAGS.warmup + FLAGS.steps
    _reset_peak_memory(backend)
    t_fit = time.perf_counter()
    # Not model.fit: keras-hub's Task.fit would wrap the data in tf.data.
    keras.Model.fit(model, batches(), steps_per_epoch=total, epochs=1, verbose=0,
                    callbacks=[timer])
    result["fit_s"] = time.perf_counter() - t_fit
    if len(timer.end) != total:
        raise RuntimeError(f"Recorded {len(timer.end)} steps, expected {total}.")
    steps = [timer.end[i] - timer.end[i - 1] for i in range(FLAGS.warmup, total)]
    median = statistics.median(steps)
    result.update({
        "first_step_s": timer.end[0] - t_fit,
        "step_times_s": steps,
        "median_step_s": median,
        "min_step_s": min(steps),
        "max_step_s": max(steps),
        "samples_per_s": FLAGS.batch_size / median,
        "tflops_per_s": result["flops_per_sample"] * FLAGS.batch_size / median / 1e12,
        "peak_accelerator_memory_gib": _peak_memory_gib(backend),
        "loss_first": timer.losses[0],
        "loss_last": timer.losses[-1],
    })
    if not all(np.isfinite(timer.losses)):
        result["warning"] = "non-finite loss"
    if standin:
        result["tf_standin_lookups"] = sorted(set(_STANDIN_LOOKUPS))
    return result


def worker_main(backend):
    if os.environ.get("KERAS_BACKEND") != backend:
        raise SystemExit(f"KERAS_BACKEND={os.environ.get('KERAS_BACKEND')!r}, expected {backend!r}")
    return run_and_report(lambda: run_worker(backend), _RESULT_PREFIX, backend=backend, model=FLAGS.model)


# --------------------------------------------------------------------------
# Parent: one subprocess per row, a table, JSON lines.
# --------------------------------------------------------------------------


def _open_clip_python():
    if FLAGS.open_clip_python:
        return FLAGS.open_clip_python
    venv = os.path.join(_REPO, ".venv-openclip", "bin", "python")
    return venv if os.path.exists(venv) else sys.executable


def _row_command(backend, model):
    """(argv, env) of one row's subprocess."""
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONUNBUFFERED"] = "1"
    if backend != "jax":
        # Keras imports jax on every backend (keras/src/callbacks/orbax_checkpoint.py);
        # keep it off the GPU so that it can never take memory from the row's framework.
        env["JAX_PLATFORMS"] = "cpu"
    if backend == "open_clip":
        config = {"steps": FLAGS.steps, "warmup": FLAGS.warmup, "batch_size": FLAGS.batch_size,
                  "dtype": FLAGS.dtype, "seed": FLAGS.seed, "patch_dropout": 0.0,
                  "device": "cuda" if FLAGS.require_gpu else "auto",
                  **_OPEN_CLIP_ARCHS[FLAGS.clip_preset]}
        python = _open_clip_python()
        if python != sys.executable:
            env.pop("PYTHONPATH", None)  # a separate venv must not see this one's packages
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "open_clip_step.py")
        return [python, script, json.dumps(config)], env
    env["KERAS_BACKEND"] = backend
    argv = [sys.executable, os.path.abspath(__file__), "--worker", f"--backend={backend}",
            f"--model={model}"]
    for name in ("clip_preset", "maeclip_preset", "batch_size", "warmup", "steps", "dtype",
                 "torch_compile", "input", "require_gpu", "block_tensorflow", "seed"):
        argv.append(f"--{name}={getattr(FLAGS, name)}")
    return argv, env


def run_row(backend, model, timeout):
    argv, env = _row_command(backend, model)
    start = time.perf_counter()
    try:
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout,
                              cwd=_REPO)
    except subprocess.TimeoutExpired as e:
        tail = (e.stderr or b"")
        tail = tail.decode(errors="replace") if isinstance(tail, bytes) else tail
        return {"backend": backend, "model": model, "ok": False,
                "error": f"timed out after {timeout:.0f} s", "stderr_tail": tail[-3000:],
                "wall_s": time.perf_counter() - start}
    except OSError as e:  # e.g. the open_clip Python does not exist
        return {"backend": backend, "model": model, "ok": False,
                "error": f"{type(e).__name__}: {e}", "wall_s": time.perf_counter() - start}
    result = None
    prefix = _RESULT_PREFIX if backend != "open_clip" else "BENCH_RESULT_JSON: "
    for line in proc.stdout.splitlines():
        if line.startswith(prefix):
            result = json.loads(line[len(prefix):])
    if result is None:
        tail = (proc.stderr or "").strip().splitlines()[-1:] or ["(no stderr)"]
        result = {"backend": backend, "model": model, "ok": False,
                  "error": f"worker exited with code {proc.returncode}: {tail[0]}"}
    result.setdefault("model", model)
    if not result.get("ok"):
        result["stderr_tail"] = "\n".join((proc.stderr or "").splitlines()[-25:])
        if backend == "open_clip" and "No module named 'open_clip'" in result.get("error", ""):
            result["error"] += (
                f" (open_clip is not installed for {argv[0]}: on the device machine "
                "gpu_check.sh installs it from .gpu_wheels/; here create .venv-openclip, "
                "docs/benchmarks.md, or pass --open_clip_python)")
    if backend == "open_clip" and result.get("ok"):
        result["tflops_per_s"] = result["gflops_per_s"] / 1e3
        result["peak_accelerator_memory_gib"] = result.get("peak_gpu_memory_gib")
        result["jit_compile"] = False
        result["preset"] = f"open_clip.CLIP sized as {FLAGS.clip_preset}"
    result["wall_s"] = time.perf_counter() - start
    return result


def _label(backend, model):
    name = {"clip": "CLIP", "maeclip": "MAE-CLIP"}[model]
    how = {"jax": "JAX (XLA)", "tensorflow": "TensorFlow (XLA)", "open_clip": "open_clip (eager)",
           "torch": "torch (torch.compile)" if FLAGS.torch_compile else "torch (eager)"}[backend]
    return name, how


def _table(rows):
    header = ["model", "backend", "median step (s)", "samples/s", "TFLOP/s", "peak mem (GiB)",
              "first step (s)", "min / max (s)", "params (M)", "GFLOP/sample"]
    lines = []
    for r in rows:
        name, how = _label(r["backend"], r["model"])
        if r.get("ok"):
            mem = r.get("peak_accelerator_memory_gib")
            lines.append([name, how, f"{r['median_step_s']:.4f}", f"{r['samples_per_s']:.1f}",
                          f"{r['tflops_per_s']:.3g}", "-" if mem is None else f"{mem:.1f}",
                          f"{r['first_step_s']:.1f}",
                          f"{r['min_step_s']:.4f} / {r['max_step_s']:.4f}",
                          f"{r['params'] / 1e6:.1f}", f"{r['flops_per_sample'] / 1e9:.1f}"])
        else:
            status = "skipped (below)" if r.get("skipped") else "FAILED (below)"
            lines.append([name, how, status] + ["-"] * (len(header) - 3))
    widths = [max(len(h), *(len(l[i]) for l in lines)) for i, h in enumerate(header)]
    fmt = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
    return "\n".join([fmt(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
                     + [fmt(l) for l in lines])


def _nvidia_smi():
    try:
        proc = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
             "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
        return proc.stdout.strip() or proc.stderr.strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"(nvidia-smi: {type(e).__name__}: {e})"


def parent_main():
    for b in FLAGS.backends:
        if b not in _BACKENDS:
            raise app.UsageError(f"Unknown backend {b!r}; choose from {_BACKENDS}.")
    for m in FLAGS.models:
        if m not in _MODELS:
            raise app.UsageError(f"Unknown model {m!r}; choose from {_MODELS}.")
    t_start = time.perf_counter()
    out_dir = FLAGS.output_dir if FLAGS.output_dir is not None else os.environ.get("OUT")
    facts = machine_facts()
    header = [
        "# Paper-size CLIP / MAE-CLIP train step on one accelerator (benchmarks/gpu_step.py)",
        f"date:      {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        f"gpu:       {_nvidia_smi()}",
        f"platform:  {facts['platform']}; cpu {facts['cpu_model']} × {facts['cpu_count']}; "
        f"RAM {facts['mem_total_gib']} GiB; python {facts['python']}",
        "versions:  " + ", ".join(f"{k} {v}" for k, v in facts["versions"].items()),
        f"workload:  {FLAGS.clip_preset} / {FLAGS.maeclip_preset}, batch {FLAGS.batch_size}, "
        f"dtype {FLAGS.dtype}, {FLAGS.warmup} warm-up + {FLAGS.steps} timed steps, "
        f"input {FLAGS.input}, torch {'torch.compile' if FLAGS.torch_compile else 'eager'}, "
        f"JAX XLA; driven by keras.Model.fit on a generator (no tf.data)",
        f"budget:    {FLAGS.budget_s} s for all rows, {FLAGS.row_timeout} s per row",
    ]
    print("\n".join(header), flush=True)

    rows = {}
    jobs = [(b, m) for b in FLAGS.backends for m in FLAGS.models]
    if FLAGS.open_clip:
        jobs.append(("open_clip", "clip"))
    rank = {name: i for i, name in enumerate(FLAGS.order.split(","))}
    deadline = time.perf_counter() + FLAGS.budget_s
    for backend, model in sorted(jobs, key=lambda j: rank.get(j[0], len(rank))):
        name, how = _label(backend, model)
        skip = None
        if backend == "tensorflow" and (FLAGS.block_tensorflow
                                        or importlib.util.find_spec("tensorflow") is None):
            skip = ("TensorFlow is not installed here (the GPU image has none and its wheel "
                    "is far beyond the 64 MiB the device tool carries)"
                    if not FLAGS.block_tensorflow else "--block_tensorflow")
        elif backend == "open_clip" and FLAGS.clip_preset not in _OPEN_CLIP_ARCHS:
            skip = f"no open_clip architecture for {FLAGS.clip_preset!r} in gpu_step.py"
        left = deadline - time.perf_counter()
        if skip is None and left < FLAGS.min_row_s:
            skip = f"out of time budget ({left:.0f} s left of --budget_s={FLAGS.budget_s})"
        if skip:
            rows[(backend, model)] = {"backend": backend, "model": model, "ok": False,
                                      "skipped": True, "error": skip}
            print(f"[gpu_step] {name} on {how}: skipped: {skip}", flush=True)
            continue
        timeout = min(FLAGS.row_timeout, left)
        print(f"[gpu_step] {name} on {how}: running (timeout {timeout:.0f} s) ...", flush=True)
        r = run_row(backend, model, timeout)
        rows[(backend, model)] = r
        status = "ok" if r.get("ok") else f"FAILED: {r.get('error')}"
        print(f"[gpu_step] {name} on {how}: {status} ({r['wall_s']:.0f} s)", flush=True)
        if not r.get("ok") and r.get("stderr_tail"):
            print("    " + r["stderr_tail"].replace("\n", "\n    "), flush=True)

    ordered = [rows[j] for j in jobs]
    table = _table(ordered)
    notes = []
    for r in ordered:
        name, how = _label(r["backend"], r["model"])
        if r.get("ok"):
            device = r.get("device_name") or r.get("device")
            notes.append(f"{name} on {how}: device {device}; loss "
                         f"{r['loss_first']:.3f} -> {r['loss_last']:.3f}; wall {r['wall_s']:.0f} s"
                         + (f"; {r['warning']}" if r.get("warning") else ""))
        else:
            notes.append(f"{name} on {how}: {'skipped' if r.get('skipped') else 'FAILED'}: "
                         f"{r.get('error', '?')}")
    notes.append(f"total wall {time.perf_counter() - t_start:.0f} s")
    print()
    print(table)
    print()
    print("\n".join(notes))
    json_lines = [json.dumps({k: v for k, v in r.items() if k != "stderr_tail"}) for r in ordered]
    print()
    for line in json_lines:
        print(_JSON_PREFIX + line)
    sys.stdout.flush()
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "gpu_step.txt"), "w") as f:
            f.write("\n".join(header) + "\n\n" + table + "\n\n" + "\n".join(notes) + "\n")
        with open(os.path.join(out_dir, "gpu_step.jsonl"), "w") as f:
            f.write("\n".join(json_lines) + "\n")
    return 0 if all(r.get("ok") or r.get("skipped") for r in ordered) else 1


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if FLAGS.worker:
        if FLAGS.backend is None:
            raise app.UsageError("--worker needs --backend.")
        return worker_main(FLAGS.backend)
    return parent_main()


if __name__ == "__main__":
    app.run(main)
