"""Evaluation: zero-shot, retrieval, linear probe, VQA fine-tuning,
prompt-based segmentation, visual grounding and reconstruction pictures.

`keras_maeclip.evaluation.suite` runs them on the synthetic set or on local
TFDS data and is what `recipes/evaluate.py` calls.
"""

from keras_maeclip.evaluation.dense import patch_embeddings, upsample
from keras_maeclip.evaluation.grounding import (
    grounding_heatmaps,
    grounding_score,
    heatmap_iou,
    heatmaps_from_embeddings,
    pointing_game,
    save_grounding_overlays,
)
from keras_maeclip.evaluation.linear_probe import (
    feature_extractor,
    image_features,
    linear_probe,
    train_linear_probe,
)
from keras_maeclip.evaluation.reconstruction import reconstruct, save_reconstruction_grid
from keras_maeclip.evaluation.retrieval import retrieval_metrics
from keras_maeclip.evaluation.segmentation import (
    evaluate_synthetic_segmentation,
    load_segmentation_folder,
    segment,
    segmentation_metrics,
)
from keras_maeclip.evaluation.vqa import VQAFusion, build_vqa_model, fine_tune_vqa, synthetic_vqa
from keras_maeclip.evaluation.zero_shot import (
    embed_images,
    embed_texts,
    top_k_accuracy,
    zero_shot_accuracy,
    zero_shot_classifier,
)

__all__ = [
    "VQAFusion",
    "build_vqa_model",
    "embed_images",
    "embed_texts",
    "evaluate_synthetic_segmentation",
    "feature_extractor",
    "fine_tune_vqa",
    "grounding_heatmaps",
    "grounding_score",
    "heatmap_iou",
    "heatmaps_from_embeddings",
    "image_features",
    "linear_probe",
    "load_segmentation_folder",
    "patch_embeddings",
    "pointing_game",
    "reconstruct",
    "retrieval_metrics",
    "save_grounding_overlays",
    "save_reconstruction_grid",
    "segment",
    "segmentation_metrics",
    "synthetic_vqa",
    "top_k_accuracy",
    "train_linear_probe",
    "upsample",
    "zero_shot_accuracy",
    "zero_shot_classifier",
]
