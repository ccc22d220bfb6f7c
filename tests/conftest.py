"""Test configuration shared by the whole suite.

The backend is chosen by ``KERAS_BACKEND`` (the Makefile and CI set it); it
must be set before keras or tensorflow is first imported, so this file sets a
default before anything else is imported.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _reset_keras_state():
    """Give each test the same seed and default dtype policy."""
    keras.utils.set_random_seed(1337)
    keras.config.set_dtype_policy("float32")
    yield
    keras.config.set_dtype_policy("float32")
