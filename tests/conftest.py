"""Test configuration shared by the whole suite.

The backend is chosen by ``KERAS_BACKEND`` (the Makefile and CI set it); it
must be set before keras or tensorflow is first imported, so this file sets a
default before anything else is imported.
"""

import os

if not os.environ.get("KERAS_BACKEND"):
    os.environ["KERAS_BACKEND"] = "jax"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402

from keras_maeclip.models import (  # noqa: E402
    ImageTextPreprocessor,
    caption_tokenizer,
    image_converter,
    learn_vocabulary,
)
from tests.tiny import CAPTIONS  # noqa: E402


@pytest.fixture(autouse=True)
def _reset_keras_state():
    """Give each test the same seed and default dtype policy."""
    keras.utils.set_random_seed(1337)
    keras.config.set_dtype_policy("float32")
    yield
    keras.config.set_dtype_policy("float32")


@pytest.fixture(scope="session")
def vocabulary():
    return learn_vocabulary(CAPTIONS, 200)


@pytest.fixture
def preprocessor(vocabulary):
    """The tiny models' preprocessor: 16² images, 12 tokens."""
    return ImageTextPreprocessor(caption_tokenizer(vocabulary), image_converter(16), sequence_length=12)
