"""Evaluation: zero-shot classification and retrieval."""

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
    "retrieval_metrics",
    "zero_shot_accuracy",
    "zero_shot_classifier",
]
