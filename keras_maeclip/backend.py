"""Choosing the Keras backend from a recipe flag, before keras is imported."""

import os
import sys


def select_backend(name=None):
    """Sets `KERAS_BACKEND` to `name` (when given) and quiets TF's C++ logs.

    Must run before the first import of keras or tensorflow, which read the
    variable once.

    Args:
        name: `"jax"`, `"tensorflow"`, `"torch"` or `None` (keep
            `KERAS_BACKEND` / Keras' default).

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
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
