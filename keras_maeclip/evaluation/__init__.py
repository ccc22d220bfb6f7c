"""Evaluation: zero-shot, linear probe, retrieval, reconstruction pictures."""

from keras_maeclip.evaluation.linear_probe import (
    feature_extractor,
    image_features,
    linear_probe,
    train_linear_probe,
)
from keras_maeclip.evaluation.reconstruction import reconstruct, save_reconstruction_grid
from keras_maeclip.evaluation.retrieval import retrieval_metrics
from keras_maeclip.evaluation.zero_shot import (
    embed_images,
    embed_texts,
    top_k_accuracy,
    zero_shot_accuracy,
    zero_shot_classifier,
)

__all__ = [
    "embed_images",
    "embed_texts",
    "feature_extractor",
    "image_features",
    "linear_probe",
    "reconstruct",
    "retrieval_metrics",
    "save_reconstruction_grid",
    "top_k_accuracy",
    "train_linear_probe",
    "zero_shot_accuracy",
    "zero_shot_classifier",
]
