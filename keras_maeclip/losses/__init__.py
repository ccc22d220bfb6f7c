"""Training objectives."""

from keras_maeclip.losses.contrastive import (
    ContrastiveLoss,
    MaxValue,
    contrastive_logits,
    contrastive_loss,
    l2_normalize,
)

__all__ = [
    "ContrastiveLoss",
    "MaxValue",
    "contrastive_logits",
    "contrastive_loss",
    "l2_normalize",
]
