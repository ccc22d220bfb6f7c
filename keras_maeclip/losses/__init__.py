"""Training objectives."""

from keras_maeclip.losses.contrastive import (
    ContrastiveLoss,
    MaxValue,
    contrastive_logits,
    contrastive_loss,
    l2_normalize,
)
from keras_maeclip.losses.reconstruction import (
    patch_targets,
    pixel_reconstruction_loss,
    token_reconstruction_loss,
)

__all__ = [
    "ContrastiveLoss",
    "MaxValue",
    "contrastive_logits",
    "contrastive_loss",
    "l2_normalize",
    "patch_targets",
    "pixel_reconstruction_loss",
    "token_reconstruction_loss",
]
