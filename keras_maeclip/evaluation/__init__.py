"""Evaluation: zero-shot classification, retrieval, reconstruction pictures."""

from keras_maeclip.evaluation.reconstruction import reconstruct, save_reconstruction_grid
from keras_maeclip.evaluation.retrieval import retrieval_metrics
from keras_maeclip.evaluation.zero_shot import (
    embed_images,
    embed_texts,
    zero_shot_accuracy,
    zero_shot_classifier,
)

__all__ = [
    "embed_images",
    "embed_texts",
    "reconstruct",
    "retrieval_metrics",
    "save_reconstruction_grid",
    "zero_shot_accuracy",
    "zero_shot_classifier",
]
