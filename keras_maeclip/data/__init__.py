"""Data: the built-in synthetic set and real evaluation sets from local TFDS data."""

from keras_maeclip.data import synthetic  # noqa: F401
from keras_maeclip.data import tfds  # noqa: F401
