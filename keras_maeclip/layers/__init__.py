"""Building blocks written in `keras.ops` only (no backend imports)."""

from keras_maeclip.layers.activations import quick_gelu
from keras_maeclip.layers.class_token import ClassToken
from keras_maeclip.layers.masking import (
    SIMILARITY_DIRECTIONS,
    gather_tokens,
    mask_by_scores,
    num_kept,
    num_text_slots,
    random_masking,
    similarity_masking,
    text_masking,
)
from keras_maeclip.layers.modality_embedding import ModalityEmbedding
from keras_maeclip.layers.patching import (
    FlattenedKernelInitializer,
    PatchEmbedding,
    patchify,
    unpatchify,
)
from keras_maeclip.layers.pooling import POOLING_MODES, TokenPooling
from keras_maeclip.layers.position import (
    SinCosPositionEncoding2D,
    sincos_1d,
    sincos_2d,
)

__all__ = [
    "quick_gelu",
    "ClassToken",
    "FlattenedKernelInitializer",
    "ModalityEmbedding",
    "PatchEmbedding",
    "POOLING_MODES",
    "SIMILARITY_DIRECTIONS",
    "SinCosPositionEncoding2D",
    "TokenPooling",
    "gather_tokens",
    "mask_by_scores",
    "num_kept",
    "num_text_slots",
    "patchify",
    "random_masking",
    "sincos_1d",
    "similarity_masking",
    "sincos_2d",
    "text_masking",
    "unpatchify",
]
