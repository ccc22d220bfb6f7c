"""CLIP and MAE-CLIP training-step throughput on "bench-small", per backend.

What it measures
----------------
Training throughput (samples/s) of `keras_maeclip.models.CLIP` built from the
named preset `clip_bench_small` (random init): images 128², patch 16, vision
tower 384 wide × 6 layers × 6 heads, text tower vocabulary 30522 × 32 tokens,
256 wide × 6 layers × 4 heads, joint embedding 256, GAP pooling, batch 64,
float32, the default `compile()` optimizer (AdamW with decay exclusions);
and of `keras_maeclip.models.MAECLIP` from `maeclip_bench_small`: the same
towers plus a cross-modal decoder 256 wide × 4 blocks × 8 heads, image mask
0.75 (the image tower sees 16 of 64 patches), text mask 0.15, one pass
(`contrastive_view="masked"`), random masking, loss weights 0.05 / 0.1.
The parent prints the MAE-CLIP / CLIP median step-time ratio per backend;
the two models of a backend run back to back.

Each backend (JAX, TensorFlow, PyTorch) runs in its own subprocess, because
`KERAS_BACKEND` must be set before Keras is imported. The child trains with
`model.fit(..., steps_per_epoch=warmup + steps, epochs=1, verbose=0)` and
`steps_per_execution=1`, always on the same fixed, seeded random batch held
in memory (no input pipeline, no augmentation, no tokenizer), fed as
`tf.data.Dataset.from_tensors(batch).repeat()` on every backend: keras-hub's
`Task.fit` turns any input into a tf.data pipeline (map + prefetch) anyway
and does not accept Python generators.
A Keras callback stamps `time.perf_counter()` at the end of every train
step after converting the step's loss to a Python float, which waits for the
step's computation (JAX dispatches asynchronously). Step time is the interval
between consecutive step ends (so it includes Keras' per-step overhead and
fetching the batch); the warm-up steps, which include tracing and XLA /
graph compilation, are excluded. Reported: median step time over the timed
steps, samples/s = batch size / median, min / max step time, and the first
step's time (trace + compile + one step). Also an analytic count of model
FLOPs per training sample (matmuls and attention only, backward = 2×
forward), from which the achieved GFLOP/s follows.

By default `jit_compile=True` on JAX and TensorFlow (XLA) and eager on
PyTorch, since `torch.compile` takes very long to compile on CPU; pass
`--torch_compile` to try `jit_compile=True` on PyTorch.

With `--reference=open_clip` the same invocation also times open_clip's
CLIP on the identical workload (and, with maeclip among the models, open_clip
FLIP: patch dropout 0.75) through `benchmarks/open_clip_step.py`, run by the
optional open_clip environment's Python (`--open_clip_python`, default
`.venv-openclip/bin/python`; created by the two commands in
docs/benchmarks.md). All rows run `--rounds` times (default 2), interleaved
A B A B in separate processes; a row's median pools its rounds' timed
steps. The table then adds each row's step time over open_clip CLIP's, and
(`--measure_peak`, on by default with a reference) each row's share of this
machine's fp32 / bf16 matmul peak measured by `benchmarks/matmul_peak.py`
at the start of the run.

With `--reference=jax` (alone or in a list: `--reference=open_clip,jax`)
the run adds the row "jax (no Keras)": the same CLIP training step (model,
InfoNCE loss, AdamW with Keras' semantics and decay exclusions, the same
fixed batch) written in pure JAX, one `jax.jit` with donated state, by
`benchmarks/jax_reference_step.py` under this Python with `KERAS_BACKEND`
unset (float32, `--preset=clip_bench_small` only). The table then adds each
row's step time over that row's: our JAX row's ratio is what the Keras path
adds on top of XLA; the reference's own time against eager PyTorch is
XLA:CPU's share. `XLA_FLAGS` set for the run applies to every JAX row.

How to run
----------
    python benchmarks/train_step.py                       # all backends, both models
    python benchmarks/train_step.py --reference=open_clip # + open_clip CLIP and FLIP, A B A B
    python benchmarks/train_step.py --backends=jax,torch --models=clip --reference=jax  # + pure-JAX CLIP
    python benchmarks/train_step.py --models=clip --reference=open_clip,jax  # both references
    python benchmarks/train_step.py --models=clip         # CLIP only
    python benchmarks/train_step.py --models=clip,flip --reference=open_clip  # FLIP, ours and open_clip's
    python benchmarks/train_step.py --models=clip,clip_gradcache --batch_size=128  # GradCache cost, max RSS
    python benchmarks/train_step.py --backends=jax --steps=50
    python benchmarks/train_step.py --dtype=mixed_bfloat16 --output_json=r.json
    python benchmarks/train_step.py --backends=torch --image_size=224 --remat=activations
    python benchmarks/train_step.py --steps=3 --warmup=1 --batch_size=8  # smoke

The parent prints a header (machine, library versions, workload, settings),
then a table with one row per backend, then each row as a JSON line
(`--output_json` also writes them all to a file). A backend that fails shows
"FAILED" in its row and its error under the table; the others still run.

How long it takes
-----------------
On the 2-core reference machine (Intel Xeon, 2 vCPUs, 23 GiB), an idle run
of the default settings (3 backends, 3 warm-up + 20 timed steps, batch 64,
fp32) took about 7.7 minutes: JAX 125 s (first step 26 s), TensorFlow 241 s
(first step 101 s: XLA compilation through TensorFlow is slow) and eager
PyTorch 93 s. Steps are seconds long and the figures are sensitive to
anything else running: check the min step time and the load average printed
per backend. Figures: docs/benchmarks.md.

Memory, per worker: `max_rss_gib` is the process' peak RSS (framework,
weights, batch, and all `fit` added, including XLA's compiled program on JAX
/ TensorFlow); `rss_before_fit_gib` the RSS just before `fit`;
`rss_growth_gib` = max - before; `peak_rss_timed_gib` the peak over the timed
steps only (the peak is reset after the warm-up through /proc/self/clear_refs,
so it excludes compilation). benchmarks/scaling.py sweeps batch, resolution
(`--image_size`), mask ratio and `--remat` with this worker.
"""

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

_BACKENDS = ("jax", "tensorflow", "torch")
# flip: CLIP with patch dropout (--flip_patch_dropout); clip_gradcache: CLIP
# trained through use_grad_cache with --grad_cache_micro_batches.
_MODELS = ("clip", "maeclip", "flip", "clip_gradcache")
_RESULT_PREFIX = "BENCH_RESULT_JSON: "
_INPUT_METHOD = (
    "tf.data.Dataset.from_tensors(batch).repeat() on every backend "
    "(keras-hub Task.fit maps it and prefetches)"
)

FLAGS = flags.FLAGS
flags.DEFINE_list("backends", list(_BACKENDS), "Backends to run, in order.")
flags.DEFINE_integer("steps", 20, "Timed training steps (after warm-up).", lower_bound=1)
flags.DEFINE_integer(
    "warmup", 3, "Untimed warm-up steps; the first includes compilation.", lower_bound=1
)
flags.DEFINE_integer("batch_size", 64, "Global batch size.", lower_bound=1)
flags.DEFINE_list(
    "models", ["clip", "maeclip"],
    "Models to time on each backend: clip, maeclip, flip (CLIP with --flip_patch_dropout), "
    "clip_gradcache (CLIP with GradCache: the batch in --grad_cache_micro_batches parts).",
)
flags.DEFINE_string("preset", "clip_bench_small", "CLIP architecture preset name.")
flags.DEFINE_string("maeclip_preset", "maeclip_bench_small", "MAE-CLIP architecture preset name.")
flags.DEFINE_float("mask_ratio", 0.75, "MAE-CLIP image mask ratio.")
flags.DEFINE_integer(
    "image_size", None,
    "Optional image resolution override (from_preset(image_size=...)); default: the "
    "preset's (128 for bench-small). Patch 16: 64 -> 16 patches, 128 -> 64, 224 -> 196.",
    lower_bound=1,
)
flags.DEFINE_enum(
    "remat", "none", ["none", "activations"],
    "Build the model inside keras_maeclip.training.remat_scope(...) as recipes/pretrain.py "
    "does: activations recomputes the activation functions (MLP GELU) in the backward pass.",
)
flags.DEFINE_enum(
    "jit",
    "auto",
    ["auto", "true", "false"],
    "jit_compile for model.compile(). auto: True on JAX and TensorFlow; on "
    "PyTorch the value of --torch_compile. true / false: forced on every "
    "backend (true on PyTorch means torch.compile).",
)
flags.DEFINE_bool(
    "torch_compile", False, "With --jit=auto, use jit_compile=True (torch.compile) on PyTorch."
)
flags.DEFINE_enum(
    "dtype", "float32", ["float32", "mixed_bfloat16"], "Global Keras dtype policy."
)
flags.DEFINE_integer(
    "threads",
    None,
    "Optional: pin each worker to this many CPUs (sched_setaffinity) and set "
    "the backend's intra-op thread count. Default: leave as is.",
    lower_bound=1,
)
flags.DEFINE_integer("seed", 0, "Seed for the batch and the initialisation.")
flags.DEFINE_string("output_json", None, "Optional path: write all results as JSON.")
flags.DEFINE_integer(
    "timeout", 3600, "Seconds before a worker subprocess is killed.", lower_bound=1
)
_REFERENCES = ("open_clip", "jax")
# The pure-JAX reference row's backend label (benchmarks/jax_reference_step.py).
_JAX_REFERENCE = "jax (no Keras)"
flags.DEFINE_list(
    "reference", ["none"],
    "Comma-separated reference rows, timed in the same run, alternating rows "
    "A B A B over --rounds: open_clip: open_clip's CLIP on the identical workload "
    "(and, when maeclip is among --models, open_clip FLIP: patch dropout 0.75), "
    "and each row's step time relative to open_clip's CLIP; needs "
    "--open_clip_python. jax: the same CLIP step written in pure JAX (no Keras; "
    "benchmarks/jax_reference_step.py, this Python, float32 only), row "
    f"'{_JAX_REFERENCE}', and each row's step time relative to it. "
    "none: no reference.",
)
flags.DEFINE_string(
    "open_clip_python",
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                 ".venv-openclip", "bin", "python"),
    "Python of the optional open_clip environment (docs/benchmarks.md: two "
    "commands). Default: .venv-openclip/bin/python in the repository root.",
)
flags.DEFINE_float("flip_patch_dropout", 0.75, "Patch dropout of the FLIP rows (ours and open_clip's).")
flags.DEFINE_integer(
    "grad_cache_micro_batches", 4, "Micro-batches per batch of the clip_gradcache rows.", lower_bound=2
)
flags.DEFINE_integer(
    "rounds", None,
    "Times each row runs, rows interleaved (A B A B ...); a row's median pools "
    "the timed steps of all its rounds. Default: 2 with --reference, else 1.",
    lower_bound=1,
)
flags.DEFINE_bool(
    "measure_peak", None,
    "Measure this machine's fp32 and bf16 matmul peak (benchmarks/matmul_peak.py) "
    "and print each row's share of it. Default: on with --reference.",
)
flags.DEFINE_string(
    "profile_dir", None,
    "Optional: profile the timed steps with the backend's own profiler and write "
    "the trace under PROFILE_DIR/<model>_<backend> (jax.profiler.trace, "
    "tf.profiler.experimental, torch.profiler; TensorBoard's profile plugin reads "
    "the first two). On torch the worker also writes the top ops by self CPU time "
    "to ops.txt there. Profiling slows the steps: do not compare those timings.",
)
flags.DEFINE_bool("worker", False, "Internal: run one backend in this process.")
flags.DEFINE_enum("backend", None, list(_BACKENDS), "Internal: the worker's backend.")
flags.DEFINE_enum("model", "clip", list(_MODELS), "Internal: the worker's model.")


# --------------------------------------------------------------------------
# Worker: one backend, in its own process.
# --------------------------------------------------------------------------


def _jit_for(backend):
    if FLAGS.jit == "true":
        return True
    if FLAGS.jit == "false":
        return False
    return FLAGS.torch_compile if backend == "torch" else True


def _pin_threads(n):
    """Restrict this process to n CPUs before any backend starts its pools."""
    cpus = sorted(os.sched_getaffinity(0))[:n]
    os.sched_setaffinity(0, cpus)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)


def _backend_threads(backend, n):
    """Apply (if n) and report the backend's intra-op thread setting."""
    if backend == "torch":
        import torch

        if n:
            torch.set_num_threads(n)
        return {"torch_num_threads": torch.get_num_threads(),
                "torch_num_interop_threads": torch.get_num_interop_threads()}
    if backend == "tensorflow":
        import tensorflow as tf

        if n:
            tf.config.threading.set_intra_op_parallelism_threads(n)
        return {"tf_intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
                "tf_inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads()}
    return {}  # XLA:CPU sizes its pool from the CPU affinity.


def _make_profiler(backend, out_dir, warmup):
    """A callback that starts the backend's profiler at the first timed step and
    stops it when `fit` ends (keras is imported here: the worker sets the backend)."""
    import keras

    class Profiler(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == warmup:
                self._start()

        def on_train_end(self, logs=None):
            self._stop()

        def _start(self):
            if backend == "jax":
                import jax

                jax.profiler.start_trace(out_dir)
            elif backend == "tensorflow":
                import tensorflow as tf

                tf.profiler.experimental.start(out_dir)
            else:
                import torch

                self._prof = torch.profiler.profile(
                    activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True)
                self._prof.__enter__()
            self._running = True

        def _stop(self):
            if not getattr(self, "_running", False):
                return
            if backend == "jax":
                import jax

                jax.profiler.stop_trace()
            elif backend == "tensorflow":
                import tensorflow as tf

                tf.profiler.experimental.stop()
            else:
                self._prof.__exit__(None, None, None)
                self._prof.export_chrome_trace(os.path.join(out_dir, "trace.json"))
                table = self._prof.key_averages(group_by_input_shape=True).table(
                    sort_by="self_cpu_time_total", row_limit=40)
                with open(os.path.join(out_dir, "ops.txt"), "w") as f:
                    f.write(table)
            self._running = False

    return Profiler()


def _status_gib(field):
    """A memory field of /proc/self/status (VmRSS: current RSS, VmHWM: peak RSS) in GiB.

    Falls back to psutil's current RSS for VmRSS; None where neither is available."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 2**20  # kB
    except OSError:
        pass
    if field == "VmRSS":
        try:
            import psutil

            return psutil.Process().memory_info().rss / 2**30
        except ImportError:
            pass
    return None


def _reset_peak_rss():
    """Reset this process' peak RSS (VmHWM, and with it ru_maxrss) to the current RSS.

    Linux >= 4.0 (`echo 5 > /proc/self/clear_refs`). True on success."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def run_worker(backend):
    """Build, compile and time the model; return a result dict."""
    if FLAGS.threads:
        _pin_threads(FLAGS.threads)
    preset = FLAGS.maeclip_preset if FLAGS.model == "maeclip" else FLAGS.preset
    result = {
        "backend": backend,
        "model": FLAGS.model,
        "jit_compile": _jit_for(backend),
        "input": _INPUT_METHOD,
        "dtype": FLAGS.dtype,
        "batch_size": FLAGS.batch_size,
        "warmup": FLAGS.warmup,
        "steps": FLAGS.steps,
        "preset": preset,
        "affinity": sorted(os.sched_getaffinity(0)),
        "loadavg_start": os.getloadavg(),
    }
    t_import = time.perf_counter()
    import keras
    import numpy as np

    from keras_maeclip.models import CLIP, MAECLIP
    from keras_maeclip.training import remat_scope
    from keras_maeclip.training.flops import analytic_flops_per_sample

    assert keras.backend.backend() == backend, keras.backend.backend()
    result["threads"] = _backend_threads(backend, FLAGS.threads)
    result["import_s"] = time.perf_counter() - t_import

    keras.utils.set_random_seed(FLAGS.seed)
    keras.config.set_dtype_policy(FLAGS.dtype)
    t_build = time.perf_counter()
    # --image_size overrides the preset's resolution; --remat: the model is
    # built inside remat_scope, as recipes/pretrain.py does (the scope acts on
    # the layers created inside it).
    overrides = {"image_size": FLAGS.image_size} if FLAGS.image_size else {}
    remat = None if FLAGS.remat == "none" else FLAGS.remat
    result["remat"] = FLAGS.remat
    with remat_scope(remat):
        if FLAGS.model == "maeclip":
            model = MAECLIP.from_preset(
                preset, image_mask_ratio=FLAGS.mask_ratio, seed=FLAGS.seed, compile=False,
                **overrides,
            )
            result["image_mask_ratio"] = FLAGS.mask_ratio
        elif FLAGS.model == "flip":
            model = CLIP.from_preset(
                preset, patch_dropout=FLAGS.flip_patch_dropout, seed=FLAGS.seed, compile=False,
                **overrides,
            )
            result["patch_dropout"] = FLAGS.flip_patch_dropout
        else:
            model = CLIP.from_preset(preset, compile=False, **overrides)
    if model.preprocessor is not None:
        raise ValueError(f"Preset {preset!r} has a preprocessor; expected none.")
    model.compile(jit_compile=result["jit_compile"], steps_per_execution=1)
    if FLAGS.model == "clip_gradcache":
        from keras_maeclip.training import use_grad_cache

        use_grad_cache(model, FLAGS.grad_cache_micro_batches)
        result["grad_cache_micro_batches"] = FLAGS.grad_cache_micro_batches
    result["build_s"] = time.perf_counter() - t_build
    result["params"] = int(model.count_params())
    result["flops_per_sample"] = analytic_flops_per_sample(model, FLAGS.batch_size)

    img, txt = model.backbone.image_encoder, model.backbone.text_encoder
    result["image_size"] = int(img.image_size)
    result["num_patches"] = int(img.num_patches)
    batch = make_batch(
        FLAGS.batch_size, img.image_size, txt.sequence_length, txt.vocabulary_size, FLAGS.seed
    )
    # keras-hub's Task.fit converts any input to a tf.data pipeline (and
    # rejects Python generators), so the batch goes through tf.data on every
    # backend, as it does in real training.
    import tensorflow as tf

    data = tf.data.Dataset.from_tensors(batch).repeat()

    class StepTimer(keras.callbacks.Callback):
        """Stamps each step's end once its loss has been computed."""

        def __init__(self):
            super().__init__()
            self.begin = []
            self.end = []
            self.losses = []

        def on_train_batch_begin(self, batch, logs=None):
            self.begin.append(time.perf_counter())

        def on_train_batch_end(self, batch, logs=None):
            # float() blocks until the step's computation is done.
            self.losses.append(float(np.asarray(logs["loss"])))
            self.end.append(time.perf_counter())
            if len(self.end) == FLAGS.warmup:
                # End of the warm-up (compilation, optimizer state created):
                # keep the peak so far, then restart the peak so that the
                # timed steps' own peak can be read at the end.
                self.rss_after_warmup = _status_gib("VmRSS")
                self.peak_before_timed = _status_gib("VmHWM")
                self.peak_reset = _reset_peak_rss()

    timer = StepTimer()
    total = FLAGS.warmup + FLAGS.steps
    callbacks = [timer]
    if FLAGS.profile_dir:
        out_dir = os.path.join(FLAGS.profile_dir, f"{FLAGS.model}_{backend}")
        os.makedirs(out_dir, exist_ok=True)
        callbacks.append(_make_profiler(backend, out_dir, FLAGS.warmup))
        result["profile_dir"] = out_dir
    # Current RSS before training: the framework, the model's weights, the
    # batch; max_rss_gib - rss_before_fit_gib is what training added
    # (compilation on JAX / TensorFlow, activations, gradients, optimizer state).
    result["rss_before_fit_gib"] = _status_gib("VmRSS")
    t_fit = time.perf_counter()
    model.fit(data, steps_per_epoch=total, epochs=1, verbose=0, callbacks=callbacks)
    result["fit_s"] = time.perf_counter() - t_fit
    if len(timer.end) != total:
        raise RuntimeError(f"Recorded {len(timer.end)} steps, expected {total}.")

    step_times = [timer.end[i] - timer.end[i - 1] for i in range(FLAGS.warmup, total)]
    median = statistics.median(step_times)
    result.update(
        {
            "first_step_s": timer.end[0] - t_fit,
            "warmup_step_s": [timer.end[0] - t_fit]
            + [timer.end[i] - timer.end[i - 1] for i in range(1, FLAGS.warmup)],
            "step_times_s": step_times,
            "median_step_s": median,
            "mean_step_s": statistics.fmean(step_times),
            "min_step_s": min(step_times),
            "max_step_s": max(step_times),
            "samples_per_s": FLAGS.batch_size / median,
            "gflops_per_s": result["flops_per_sample"] * FLAGS.batch_size / median / 1e9,
            "loss_first": timer.losses[0],
            "loss_last": timer.losses[-1],
            "loadavg_end": os.getloadavg(),
        }
    )
    if not all(np.isfinite(timer.losses)):
        result["warning"] = "non-finite loss"
    try:
        import resource

        result["max_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    except ImportError:
        pass
    # Peak RSS over the timed steps only (the peak was reset after the warm-up,
    # so it excludes compilation); max_rss_gib stays the whole process' peak.
    result["rss_after_warmup_gib"] = getattr(timer, "rss_after_warmup", None)
    if getattr(timer, "peak_reset", False):
        result["peak_rss_timed_gib"] = _status_gib("VmHWM")
        before = getattr(timer, "peak_before_timed", None)
        if before is not None and "max_rss_gib" in result:
            result["max_rss_gib"] = max(result["max_rss_gib"], before)
    else:
        result["peak_rss_timed_gib"] = None
    if result.get("max_rss_gib") is not None and result["rss_before_fit_gib"] is not None:
        result["rss_growth_gib"] = result["max_rss_gib"] - result["rss_before_fit_gib"]
    return result


def worker_main(backend):
    if os.environ.get("KERAS_BACKEND") != backend:
        raise SystemExit(f"KERAS_BACKEND={os.environ.get('KERAS_BACKEND')!r}, expected {backend!r}")
    return run_and_report(lambda: run_worker(backend), _RESULT_PREFIX, backend=backend)


# --------------------------------------------------------------------------
# Parent: spawn one worker per backend, collect, print.
# --------------------------------------------------------------------------


def _worker_command(backend, model):
    args = [
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        f"--backend={backend}",
        f"--model={model}",
        f"--maeclip_preset={FLAGS.maeclip_preset}",
        f"--mask_ratio={FLAGS.mask_ratio}",
        f"--flip_patch_dropout={FLAGS.flip_patch_dropout}",
        f"--grad_cache_micro_batches={FLAGS.grad_cache_micro_batches}",
        f"--steps={FLAGS.steps}",
        f"--warmup={FLAGS.warmup}",
        f"--batch_size={FLAGS.batch_size}",
        f"--preset={FLAGS.preset}",
        f"--jit={FLAGS.jit}",
        f"--torch_compile={FLAGS.torch_compile}",
        f"--dtype={FLAGS.dtype}",
        f"--seed={FLAGS.seed}",
    ]
    if FLAGS.profile_dir:
        args.append(f"--profile_dir={os.path.abspath(FLAGS.profile_dir)}")
    if FLAGS.threads:
        args.append(f"--threads={FLAGS.threads}")
    if FLAGS.image_size:
        args.append(f"--image_size={FLAGS.image_size}")
    if FLAGS.remat != "none":
        args.append(f"--remat={FLAGS.remat}")
    return args


def _open_clip_command(model):
    config = {
        "steps": FLAGS.steps, "warmup": FLAGS.warmup, "batch_size": FLAGS.batch_size,
        "dtype": FLAGS.dtype, "seed": FLAGS.seed, "threads": FLAGS.threads,
        "patch_dropout": FLAGS.flip_patch_dropout if model == "flip" else 0.0,
    }
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "open_clip_step.py")
    return [FLAGS.open_clip_python, script, json.dumps(config)]


def _jax_reference_command():
    """The pure-JAX CLIP step (benchmarks/jax_reference_step.py), run by this Python."""
    config = {
        "steps": FLAGS.steps, "warmup": FLAGS.warmup, "batch_size": FLAGS.batch_size,
        "dtype": FLAGS.dtype, "seed": FLAGS.seed, "threads": FLAGS.threads,
    }
    if getattr(FLAGS, "image_size", None):
        config["image_size"] = FLAGS.image_size
    if getattr(FLAGS, "remat", "none") != "none":
        config["remat"] = FLAGS.remat
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "jax_reference_step.py")
    return [sys.executable, script, json.dumps(config)]


def _references():
    """--reference as a list of names ("none" alone: no reference); unknown names are an error."""
    names = [n.strip() for n in FLAGS.reference if n.strip()]
    if names in ([], ["none"]):
        return []
    unknown = [n for n in names if n not in _REFERENCES]
    if unknown:
        raise app.UsageError(
            f"Unknown --reference {unknown}; use 'none' or a comma-separated list of {_REFERENCES}.")
    return list(dict.fromkeys(names))


def run_backend(backend, model):
    env = dict(os.environ, KERAS_BACKEND=backend)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    start = time.perf_counter()
    if backend == "open_clip":
        command = _open_clip_command(model)
        env.pop("PYTHONPATH", None)  # the open_clip venv must not see the shared one
    elif backend == _JAX_REFERENCE:
        command = _jax_reference_command()
        env.pop("KERAS_BACKEND")  # pure JAX: Keras is never imported there
    else:
        command = _worker_command(backend, model)
    try:
        proc = subprocess.run(
            command,
            env=env,
            capture_output=True,
            text=True,
            timeout=FLAGS.timeout,
        )
    except subprocess.TimeoutExpired:
        return {"backend": backend, "model": model, "ok": False,
                "error": f"timed out after {FLAGS.timeout} s",
                "wall_s": time.perf_counter() - start}
    wall = time.perf_counter() - start
    result = None
    for line in proc.stdout.splitlines():
        if line.startswith(_RESULT_PREFIX):
            result = json.loads(line[len(_RESULT_PREFIX):])
    if result is None:
        tail = (proc.stderr or "").strip().splitlines()[-1:] or ["(no stderr)"]
        result = {"backend": backend, "model": model, "ok": False,
                  "error": f"worker exited with code {proc.returncode}: {tail[0]}"}
    if not result.get("ok"):
        sys.stderr.write(f"--- {model} on {backend}: worker stderr (tail) ---\n")
        sys.stderr.write("\n".join((proc.stderr or "").splitlines()[-30:]) + "\n")
    result["wall_s"] = wall
    return result


_LABELS = {"clip": "CLIP", "maeclip": "MAE-CLIP", "flip": "FLIP", "clip_gradcache": "CLIP GradCache"}


def _merge_rounds(results):
    """One row from a job's rounds: timed steps pooled, median over all of them."""
    ok = [r for r in results if r.get("ok")]
    if not ok:
        return dict(results[-1])
    row = dict(ok[0])
    steps = [t for r in ok for t in r["step_times_s"]]
    median = statistics.median(steps)
    row.update({
        "rounds": len(results),
        "rounds_ok": len(ok),
        "round_medians_s": [r["median_step_s"] for r in ok],
        "step_times_s": steps,
        "median_step_s": median,
        "mean_step_s": statistics.fmean(steps),
        "min_step_s": min(steps),
        "max_step_s": max(steps),
        "samples_per_s": row["batch_size"] / median,
        "gflops_per_s": row["flops_per_sample"] * row["batch_size"] / median / 1e9,
        "loss_last": ok[-1]["loss_last"],
        "loadavg_end": ok[-1].get("loadavg_end"),
        "wall_s": sum(r.get("wall_s", 0.0) for r in results),
    })
    return row


def _reference_row(rows, backend="open_clip"):
    """The reference's CLIP row (open_clip's, or the pure-JAX one), if it ran."""
    for r in rows:
        if r.get("ok") and r["backend"] == backend and r["model"] == "clip":
            return r
    return None


def _peak_for(peak, dtype):
    if not peak:
        return None
    return peak["bfloat16_gflops"] if dtype == "mixed_bfloat16" else peak["float32_gflops"]


def _fmt_table(rows, peak=None):
    reference = _reference_row(rows)
    jax_reference = _reference_row(rows, _JAX_REFERENCE)
    header = ["model", "backend", "jit", "median step (s)", "samples/s", "min / max (s)",
              "compile/first step (s)", "GFLOP/s"]
    if peak:
        header.append("% of peak")
    if reference:
        header.append("step / open_clip CLIP")
    if jax_reference:
        header.append("step / pure-JAX CLIP")
    lines = []
    for r in rows:
        label = _LABELS.get(r["model"], r["model"])
        if r.get("ok"):
            line = [
                label,
                r["backend"],
                str(r["jit_compile"]),
                f"{r['median_step_s']:.3f}",
                f"{r['samples_per_s']:.1f}",
                f"{r['min_step_s']:.3f} / {r['max_step_s']:.3f}",
                f"{r['first_step_s']:.1f}",
                f"{r['gflops_per_s']:.1f}",
            ]
            if peak:
                line.append(f"{100 * r['gflops_per_s'] / _peak_for(peak, r['dtype']):.0f} %")
            if reference:
                line.append(f"{r['median_step_s'] / reference['median_step_s']:.2f}")
            if jax_reference:
                line.append(f"{r['median_step_s'] / jax_reference['median_step_s']:.2f}")
        else:
            line = [label, r["backend"], str(r.get("jit_compile", "-")), "FAILED (see below)"]
            line += ["-"] * (len(header) - len(line))
        lines.append(line)
    widths = [max(len(h), *(len(l[i]) for l in lines)) for i, h in enumerate(header)]
    fmt = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
    out = [fmt(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [fmt(l) for l in lines]
    return "\n".join(out)


def _ratios(rows):
    """Each other row's median step time over CLIP's on the same backend, keyed "model@backend"."""
    by_key = {(r["backend"], r["model"]): r for r in rows if r.get("ok")}
    out = {}
    for (backend, model), r in by_key.items():
        if model != "clip" and (backend, "clip") in by_key:
            out[f"{model}@{backend}"] = r["median_step_s"] / by_key[(backend, "clip")]["median_step_s"]
    return out


def measure_peak():
    """Run benchmarks/matmul_peak.py in a subprocess; its dict, or None on failure."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "matmul_peak.py")
    args = [sys.executable, script]
    if FLAGS.threads:
        args.append(f"--threads={FLAGS.threads}")
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        sys.stderr.write("[train_step] matmul peak timed out\n")
        return None
    for line in proc.stdout.splitlines():
        if line.startswith("MATMUL_PEAK_JSON: "):
            return json.loads(line[len("MATMUL_PEAK_JSON: "):])
    sys.stderr.write(f"[train_step] matmul peak failed: {proc.stderr[-2000:]}\n")
    return None


def parent_main():
    unknown = [b for b in FLAGS.backends if b not in _BACKENDS]
    if unknown:
        raise app.UsageError(f"Unknown backends {unknown}; choose from {_BACKENDS}.")
    facts = machine_facts()
    v = facts["versions"]
    unknown = [m for m in FLAGS.models if m not in _MODELS]
    if unknown:
        raise app.UsageError(f"Unknown models {unknown}; choose from {_MODELS}.")
    _references()  # an unknown --reference name fails before anything runs
    print("# CLIP / MAE-CLIP train-step benchmark (keras_maeclip)")
    print(f"date:      {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(f"platform:  {facts['platform']}")
    print(f"cpu:       {facts['cpu_model']}; os.cpu_count()={facts['cpu_count']}; "
          f"sched_getaffinity={facts['sched_getaffinity']}; RAM {facts['mem_total_gib']} GiB")
    print(f"load avg:  {os.getloadavg()}")
    print(f"python:    {facts['python']}")
    print("versions:  " + ", ".join(f"{k} {val}" for k, val in v.items()))
    print(f"workload:  preset {FLAGS.preset!r} (bench-small: image 128², patch 16, vision "
          f"384×6 layers×6 heads, text vocab 30522 × 32 tokens, 256×6 layers×4 heads, "
          f"embed 256, GAP pooling), default compile() AdamW; MAE-CLIP: preset "
          f"{FLAGS.maeclip_preset!r} (the same towers + cross-modal decoder 256×4 blocks×8 "
          f"heads), image mask {FLAGS.mask_ratio}, text mask 0.15, one pass "
          f"(contrastive_view='masked'), random masking")
    print(f"settings:  batch {FLAGS.batch_size}, dtype {FLAGS.dtype}, warm-up {FLAGS.warmup} "
          f"+ timed {FLAGS.steps} steps, steps_per_execution=1, jit={FLAGS.jit}"
          f"{' (torch_compile)' if FLAGS.torch_compile else ''}, "
          f"threads={FLAGS.threads or 'default'}, seed {FLAGS.seed}, "
          f"image size {FLAGS.image_size or 'preset default'}, remat {FLAGS.remat}")
    print(f"input:     one fixed seeded random batch from memory, reused every step: "
          f"{_INPUT_METHOD}")
    print("timing:    interval between consecutive step ends (float(loss) in "
          "on_train_batch_end forces a sync); median over timed steps; samples/s = "
          "batch / median; first step = fit() start to end of step 1 (trace+compile)")
    sys.stdout.flush()

    jobs = [(backend, model) for backend in FLAGS.backends for model in FLAGS.models]
    references = _references()
    if "open_clip" in references:
        if FLAGS.preset != "clip_bench_small" or FLAGS.maeclip_preset != "maeclip_bench_small":
            raise app.UsageError(
                "--reference=open_clip builds open_clip's bench-small architecture; keep "
                "--preset=clip_bench_small and --maeclip_preset=maeclip_bench_small.")
        if not os.path.exists(FLAGS.open_clip_python):
            raise app.UsageError(
                f"--open_clip_python={FLAGS.open_clip_python} does not exist. Create the "
                "optional environment (docs/benchmarks.md): python3.11 -m venv .venv-openclip "
                "&& .venv-openclip/bin/pip install torch==2.14.1 torchvision==0.29.1 "
                "open_clip_torch==3.3.0")
        jobs.append(("open_clip", "clip"))
        if "maeclip" in FLAGS.models or "flip" in FLAGS.models:
            jobs.append(("open_clip", "flip"))
    if "jax" in references:
        if FLAGS.preset != "clip_bench_small":
            raise app.UsageError(
                "--reference=jax builds the bench-small CLIP in pure JAX; keep "
                "--preset=clip_bench_small.")
        if FLAGS.dtype != "float32":
            raise app.UsageError(
                f"--reference=jax runs float32 only; got --dtype={FLAGS.dtype}.")
        jobs.append((_JAX_REFERENCE, "clip"))
    rounds = FLAGS.rounds or (2 if references else 1)
    want_peak = FLAGS.measure_peak if FLAGS.measure_peak is not None else bool(references)
    peak = None
    if want_peak:
        sys.stderr.write("[train_step] measuring the matmul peak ...\n")
        peak = measure_peak()
    print(f"rounds:    {rounds} (rows interleaved: " + " ".join(
        f"{_LABELS.get(m, m)}@{b}" for b, m in jobs) + (" ..." if rounds > 1 else "") + ")")
    if peak:
        sides = "/".join(str(n) for n in peak.get("sizes", [peak["size"]]))
        print(f"peak:      matmul {sides}² best of {peak['repeats']} each (torch "
              f"{peak['torch']}, {peak['torch_num_threads']} threads): fp32 "
              f"{peak['float32_gflops']:.1f} GFLOP/s, bf16 {peak['bfloat16_gflops']:.1f} GFLOP/s; "
              f"CPU flags {peak.get('cpu_flags')}")
    sys.stdout.flush()

    results = {job: [] for job in jobs}
    # Rows interleaved, round after round (A B A B), so all see the same machine state.
    for round_index in range(rounds):
        for backend, model in jobs:
            sys.stderr.write(f"[train_step] round {round_index + 1}/{rounds}: {model} on "
                             f"{backend} ...\n")
            sys.stderr.flush()
            r = run_backend(backend, model)
            sys.stderr.write(f"[train_step] {model} on {backend}: "
                             f"{'ok' if r.get('ok') else 'FAILED'} in {r['wall_s']:.0f} s\n")
            sys.stderr.flush()
            r.setdefault("backend", backend)
            r.setdefault("model", model)
            results[(backend, model)].append(r)
    rows = [_merge_rounds(results[job]) for job in jobs]

    print()
    print(_fmt_table(rows, peak))
    ratios = _ratios(rows)
    if ratios:
        print()
        print("median step time / CLIP's on the same backend: "
              + ", ".join(f"{key} {x:.2f}" for key, x in ratios.items()))
        flops = {(r["backend"], r["model"]): r["flops_per_sample"] for r in rows if r.get("ok")}
        analytic = [f"{m}@{b} {flops[(b, m)] / flops[(b, 'clip')]:.2f}"
                    for (b, m) in flops if m != "clip" and (b, "clip") in flops]
        if analytic:
            print("analytic FLOP ratio (same pairs): " + ", ".join(analytic))
    print()
    for r in rows:
        if r.get("ok"):
            print(f"{r['model']} on {r['backend']}: params {r['params']:,}, "
                  f"{r['flops_per_sample'] / 1e9:.2f} GFLOP/sample (analytic), "
                  f"mean step {r['mean_step_s']:.3f} s, loss {r['loss_first']:.3f} -> "
                  f"{r['loss_last']:.3f}, max RSS {r.get('max_rss_gib', 0):.1f} GiB, "
                  f"threads {r.get('threads') or 'XLA default'}, "
                  f"round medians {[round(x, 3) for x in r.get('round_medians_s', [])]}, "
                  f"load avg {r['loadavg_start'][0]:.2f} -> {r['loadavg_end'][0]:.2f}, "
                  f"worker wall {r['wall_s']:.0f} s")
        else:
            print(f"{r['model']} on {r['backend']}: FAILED: {r.get('error', '?')}")
    print()
    for r in rows:
        print(json.dumps({k: v for k, v in r.items() if k != "step_times_s"}))
    if FLAGS.output_json:
        with open(FLAGS.output_json, "w") as f:
            json.dump({"machine": facts, "flags": {
                "backends": FLAGS.backends, "steps": FLAGS.steps, "warmup": FLAGS.warmup,
                "batch_size": FLAGS.batch_size, "preset": FLAGS.preset, "jit": FLAGS.jit,
                "models": FLAGS.models, "maeclip_preset": FLAGS.maeclip_preset,
                "mask_ratio": FLAGS.mask_ratio, "flip_patch_dropout": FLAGS.flip_patch_dropout,
                "grad_cache_micro_batches": FLAGS.grad_cache_micro_batches,
                "torch_compile": FLAGS.torch_compile, "dtype": FLAGS.dtype,
                "threads": FLAGS.threads, "seed": FLAGS.seed, "reference": references,
                "rounds": rounds,
            }, "matmul_peak": peak, "results": rows, "step_time_over_clip": ratios},
                f, indent=2)
    return 0 if all(r.get("ok") for r in rows) else 1


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
