"""Building blocks written in `keras.ops` only (no backend imports)."""

from keras_maeclip.layers.class_token import ClassToken
from keras_maeclip.layers.patching import PatchEmbedding, patchify, unpatchify
from keras_maeclip.layers.pooling import POOLING_MODES, TokenPooling
from keras_maeclip.layers.position import (
    SinCosPositionEncoding2D,
    sincos_1d,
    sincos_2d,
)

__all__ = [
    "ClassToken",
    "PatchEmbedding",
    "POOLING_MODES",
    "SinCosPositionEncoding2D",
    "TokenPooling",
    "patchify",
    "sincos_1d",
    "sincos_2d",
    "unpatchify",
]
