"""Choosing the Keras backend from a recipe flag, before keras is imported."""

import os
import sys


DEFAULT_BACKEND = "jax"


def select_backend(name=None):
    """Sets `KERAS_BACKEND` (from `name`, else the environment, else JAX) and quiets TF's C++ logs.

    Must run before the first import of keras or tensorflow, which read the
    variable once. With neither `name` nor `KERAS_BACKEND`, the recipes run
    on JAX, the README's default (`make train`), rather than on whatever
    Keras would pick, so that a recipe started as `python recipes/...` and
    one started by `make` train on the same backend.

    Args:
        name: `"jax"`, `"tensorflow"`, `"torch"` or `None` (keep
            `KERAS_BACKEND`, or JAX when it is unset).

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
    elif "keras" not in sys.modules:
        os.environ.setdefault("KERAS_BACKEND", DEFAULT_BACKEND)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "keras" in sys.modules:
        import keras

        return keras.config.backend()
    return os.environ["KERAS_BACKEND"]


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
