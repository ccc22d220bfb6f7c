"""Backend-specific code: choosing the Keras backend, and what only one backend needs.

Choosing the backend from a recipe flag (before keras is imported) and
the default when nothing names one; quieting the recipes' start-up (the
messages every run printed before its first line of output, none of which
a user can act on); reading concrete tensor values on any backend; and
PyTorch's fused AdamW update behind `keras_maeclip.optimizers.AdamW`.
"""

import contextlib
import importlib.util
import logging
import os
import re
import sys
import tempfile
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


BACKEND_PACKAGES = {"jax": ("jax", "jax"), "torch": ("torch", "torch"), "tensorflow": ("tensorflow", None)}
"""Backend -> (the module it needs, the keras-maeclip extra that installs it; None: always installed)."""


def backend_installed(name):
    """True when the package the Keras backend `name` runs on can be imported (nothing is imported)."""
    module = BACKEND_PACKAGES.get(name, (name, None))[0]
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing_backend_message(name):
    """One line for a backend whose package is not installed, naming the extra to install."""
    module, extra = BACKEND_PACKAGES.get(name, (name, None))
    install = f"pip install keras-maeclip[{extra}]" if extra else f"pip install {module}"
    return f"KERAS_BACKEND={name} needs {module}, which is not installed: {install}, or pick another backend."


def default_backend(devices=ACCELERATOR_DEVICES):
    """The backend of a recipe left to choose: the fastest installed one for the hardware.

    `ACCELERATOR_BACKEND` (JAX) with an accelerator, else `CPU_BACKEND`
    (PyTorch), when that backend's package is installed; otherwise the other
    of the two, and TensorFlow (always installed) last. Looks for device
    files and installed packages only (nothing is imported, so it can run
    before keras is).

    Args:
        devices: paths whose existence means an accelerator is attached.

    Returns:
        `"jax"`, `"torch"` or `"tensorflow"`.
    """
    first = ACCELERATOR_BACKEND if any(os.path.exists(d) for d in devices) else CPU_BACKEND
    second = CPU_BACKEND if first == ACCELERATOR_BACKEND else ACCELERATOR_BACKEND
    for name in (first, second):
        if backend_installed(name):
            return name
    return "tensorflow"


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
        SystemExit: the backend's package is not installed (one line naming
            the extra that installs it).
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
    if "keras" not in sys.modules and not backend_installed(os.environ["KERAS_BACKEND"]):
        raise SystemExit(f"error: {missing_backend_message(os.environ['KERAS_BACKEND'])}")
    quiet_startup()
    if "keras" in sys.modules:
        import keras

        return keras.config.backend()
    return os.environ["KERAS_BACKEND"]


# Lines TensorFlow >= 2.20 writes to the C-level stderr while it is imported, before
# its absl logging is initialised, so that TF_CPP_MIN_LOG_LEVEL cannot hold them back
# (tensorflow/tensorflow#100442): none says anything a user can act on.
IMPORT_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IWE]\d{4} [\d:. ]+\d+ (port\.cc|cudart_stub\.cc|cpu_feature_guard\.cc|cuda_platform\.cc)\b.*"
    r"|To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags\.)$"
)


@contextlib.contextmanager
def _without_import_noise(stream_fd=2):
    """Runs the body with the C-level `stream_fd` captured; writes back every line but `IMPORT_NOISE`."""
    try:
        sys.stderr.flush()
    except (AttributeError, ValueError):
        pass
    saved = os.dup(stream_fd)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), stream_fd)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            except (AttributeError, ValueError):
                pass
            os.dup2(saved, stream_fd)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().decode("utf-8", "replace").splitlines(keepends=True)
                    if not IMPORT_NOISE.match(line.rstrip("\n"))]  # fmt: skip
            if kept:
                os.write(stream_fd, "".join(kept).encode())


def quiet_startup():
    """Silence the start-up noise of the stack, at its source.

    - TensorFlow's C++ log below FATAL (`TF_CPP_MIN_LOG_LEVEL=3` unless
      set): oneDNN and CUDA lines printed while running. Errors of the data
      pipeline and of TF models still arrive as Python exceptions; set
      `TF_CPP_MIN_LOG_LEVEL=0` to see the C++ log again.
    - TensorFlow >= 2.20 writes its "oneDNN custom operations are on" and
      "Could not find cuda drivers" lines while it is imported, before the
      variable applies: TensorFlow is imported here with the C-level stderr
      captured, and every captured line except those (`IMPORT_NOISE`) is
      written back.
    - JAX's "Unable to initialize backend 'rocm' / 'tpu'" probes (INFO
      records, shown because absl's `app.run` logs at INFO).
    - google.api_core's FutureWarning about the Python version.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message="You are using a Python version", category=FutureWarning)
    if "tensorflow" not in sys.modules and os.environ["TF_CPP_MIN_LOG_LEVEL"] != "0":
        with _without_import_noise():
            import tensorflow  # noqa: F401


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
