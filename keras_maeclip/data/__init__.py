"""Data: the built-in synthetic set, readers of on-disk image–caption formats,
robust decoding with skip counts, augmentation, TFDV validation (TFDV itself
is imported on first use), and real evaluation sets from local TFDS data."""

from keras_maeclip.data import augment  # noqa: F401
from keras_maeclip.data import decoding  # noqa: F401
from keras_maeclip.data import readers  # noqa: F401
from keras_maeclip.data import synthetic  # noqa: F401
from keras_maeclip.data import tfds  # noqa: F401
from keras_maeclip.data import validate  # noqa: F401
