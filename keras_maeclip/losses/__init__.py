"""Training objectives."""

from keras_maeclip.losses.contrastive import (
    ContrastiveLoss,
    MaxValue,
    contrastive_logits,
    contrastive_loss,
    l2_normalize,
)
from keras_maeclip.losses.sigmoid import chunked_sigmoid_loss, sigmoid_loss
from keras_maeclip.losses.reconstruction import (
    patch_targets,
    pixel_reconstruction_loss,
    token_reconstruction_loss,
)

__all__ = [
    "ContrastiveLoss",
    "MaxValue",
    "chunked_sigmoid_loss",
    "contrastive_logits",
    "contrastive_loss",
    "l2_normalize",
    "patch_targets",
    "pixel_reconstruction_loss",
    "sigmoid_loss",
    "token_reconstruction_loss",
]
