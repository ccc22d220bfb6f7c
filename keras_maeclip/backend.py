"""Backend-specific code: choosing the Keras backend, and what only one backend needs.

Choosing the backend from a recipe flag (before keras is imported) and
the default when nothing names one; quieting the recipes' start-up (the
messages every run printed before its first line of output, none of which
a user can act on); reading concrete tensor values on any backend; and
PyTorch's fused AdamW update behind `keras_maeclip.optimizers.AdamW`.
"""

import logging
import os
import sys
import warnings


# The backend a recipe runs on when neither its --backend flag nor
# KERAS_BACKEND names one: the fastest on the hardware at hand.
# On a CPU that is eager PyTorch: every run of benchmarks/train_step.py on
# the reference machine had it ahead of TensorFlow (XLA) and JAX (XLA) —
# docs/benchmarks.md. With a GPU or TPU: JAX (TPUs run only JAX and
# TensorFlow; on GPUs no backend comparison has run yet, see
# benchmarks/gpu_check.sh).
CPU_BACKEND = "torch"
ACCELERATOR_BACKEND = "jax"
# Device files of an NVIDIA GPU, a TPU and an AMD GPU (ROCm).
ACCELERATOR_DEVICES = ("/dev/nvidia0", "/dev/accel0", "/dev/kfd")


def default_backend(devices=ACCELERATOR_DEVICES):
    """The backend of a recipe left to choose: `"jax"` with an accelerator, else `"torch"`.

    Looks for accelerator device files only (nothing is imported, so it
    can run before keras is).

    Args:
        devices: paths whose existence means an accelerator is attached.

    Returns:
        `ACCELERATOR_BACKEND` if one of `devices` exists, else `CPU_BACKEND`.
    """
    return ACCELERATOR_BACKEND if any(os.path.exists(d) for d in devices) else CPU_BACKEND


def select_backend(name=None):
    """Sets `KERAS_BACKEND` (from `name`, else the environment, else `default_backend()`).

    Also quiets TF's C++ logs. Must run before the first import of keras
    or tensorflow, which read the variable once. With neither `name` nor
    `KERAS_BACKEND` (or an empty one), the recipes run on
    `default_backend()` — eager PyTorch on a CPU, the fastest there —
    rather than on whatever Keras would pick, so that a recipe started as
    `python recipes/...` and one started by `make train` train on the same
    backend.

    Args:
        name: `"jax"`, `"tensorflow"`, `"torch"` or `None` (keep
            `KERAS_BACKEND`, or `default_backend()` when it is unset).

    Returns:
        str, the backend keras will load.

    Raises:
        RuntimeError: keras is already imported, so the choice would be
            ignored.
    """
    if name:
        if "keras" in sys.modules:
            raise RuntimeError(
                f"The backend ({name}) must be chosen before keras is imported; "
                "set KERAS_BACKEND in the environment instead."
            )
        os.environ["KERAS_BACKEND"] = name
    elif "keras" not in sys.modules and not os.environ.get("KERAS_BACKEND"):
        os.environ["KERAS_BACKEND"] = default_backend()
    quiet_startup()
    if "keras" in sys.modules:
        import keras

        return keras.config.backend()
    return os.environ["KERAS_BACKEND"]


def quiet_startup():
    """Silence the start-up noise of the pinned stack, at its source.

    - TensorFlow's C++ log below FATAL (`TF_CPP_MIN_LOG_LEVEL=3` unless
      set): the "Unable to register cuDNN/cuFFT/cuBLAS factory" and
      "oneDNN supports DT_INT64 only on platforms with AVX-512" lines that
      TF 2.16 prints on every CPU machine. Errors of the data pipeline and
      of TF models still arrive as Python exceptions; set
      `TF_CPP_MIN_LOG_LEVEL=0` to see the C++ log again.
    - JAX's "Unable to initialize backend 'rocm' / 'tpu'" probes (INFO
      records, shown because absl's `app.run` logs at INFO).
    - google.api_core's FutureWarning about the Python version (3.11 is
      this project's pinned interpreter).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message="You are using a Python version", category=FutureWarning)


def fit_verbosity(is_chief=True, stream=None):
    """`verbose=` for `fit`: Keras' live progress bar on a terminal, one line per epoch in a log.

    Args:
        is_chief: bool; other processes of a multi-process run print nothing.
        stream: where the output goes (default `sys.stdout`).

    Returns:
        0 (not the chief), 1 (a terminal: the live bar) or 2 (a file or
        pipe: one line per epoch, no carriage-return redraws).
    """
    if not is_chief:
        return 0
    stream = sys.stdout if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return 1 if isatty is not None and isatty() else 2


def concrete_values(tensor):
    """The values of `tensor` as NumPy when it is not symbolic or traced, else `None`."""
    import numpy as np

    if isinstance(tensor, np.ndarray):
        return tensor
    module = type(tensor).__module__
    try:
        if module.startswith("jax"):
            import jax

            if isinstance(tensor, jax.core.Tracer):
                return None
            return np.asarray(tensor)
        if module.startswith("tensorflow"):
            import tensorflow as tf

            if not tf.executing_eagerly() or not hasattr(tensor, "numpy"):
                return None
            return tensor.numpy()
        if module.startswith("torch"):
            import torch

            if torch.compiler.is_compiling():
                return None
            return tensor.detach().cpu().numpy()
    except Exception:  # noqa: BLE001 - any tensor that cannot be read is not checked
        return None
    return None


def torch_fused_adamw(
    params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, step, learning_rate,
    beta_1, beta_2, weight_decay, epsilon,
):
    """One AdamW update of torch tensors, in place, by PyTorch's fused kernel.

    Keras' AdamW semantics (`keras_maeclip.optimizers.AdamW` calls this on
    the torch backend): decoupled decay `p -= lr · wd · p` first, then
    `p -= lr · √(1 − β₂ᵗ) / (1 − β₁ᵗ) · m / (√v + ε)`. PyTorch puts ε
    inside the bias correction (`√(v / (1 − β₂ᵗ)) + ε`), so it is given
    `ε / √(1 − β₂ᵗ)`, which makes the two updates equal. One pass over each
    tensor (`torch.optim.adamw.adamw(fused=True)`, PyTorch's public
    functional AdamW) instead of the ten elementwise passes of the
    `_foreach` update.

    Args:
        params, grads, exp_avgs, exp_avg_sqs: lists of torch tensors of one
            dtype and device, updated in place (not `grads`).
        max_exp_avg_sqs: list (AMSGrad's running maxima) or empty.
        step: int, the 1-based step `t` of this update.
        learning_rate: float or 0-d tensor.
        beta_1, beta_2, weight_decay, epsilon: floats.
    """
    import torch
    from torch.optim.adamw import adamw

    if not params:
        return
    correction = 1.0 - float(beta_2) ** step
    steps = [torch.full((), float(step - 1), dtype=torch.float32, device=p.device) for p in params]
    if isinstance(learning_rate, torch.Tensor):
        learning_rate = learning_rate.to(dtype=torch.float32)
        if learning_rate.device.type == "cpu":
            learning_rate = float(learning_rate)
    with torch.no_grad():
        adamw(
            params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps,
            fused=True, amsgrad=bool(max_exp_avg_sqs), beta1=float(beta_1),
            beta2=float(beta_2), lr=learning_rate, weight_decay=float(weight_decay),
            eps=float(epsilon) / correction**0.5, maximize=False,
        )
