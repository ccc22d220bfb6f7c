"""Held-out image–caption pairs: each loss term and retrieval recall.

What `recipes/pretrain.py --data=...` reports on the share of the user's
records held out of training (`keras_maeclip.data.holdout`): the task's
loss terms through `model.evaluate` and, for the contrastive models,
image↔caption recall@K among the held-out pairs.

References: Radford et al. 2021 §3.1.4 (retrieval); open_clip
`open_clip_train/train.py` `evaluate` (validation loss and retrieval on
`--val-data`).
"""

import numpy as np

from keras_maeclip.evaluation.retrieval import retrieval_metrics
from keras_maeclip.evaluation.zero_shot import embed_images, embed_texts

__all__ = ["held_out_losses", "pair_retrieval"]


def _captions(captions):
    return [c.decode("utf-8") if isinstance(c, bytes) else str(c) for c in captions]


def _contrastive(model):
    backbone = getattr(model, "backbone", None)
    return hasattr(backbone, "image_embedder") and hasattr(backbone, "text_embedder")


def held_out_losses(model, images, captions=None, batch_size=128):
    """`model.evaluate` on raw pairs: every reported term, prefixed `eval/`.

    Args:
        model: a pretraining task. With a preprocessor it takes raw
            `{"images", "captions"}`; without one (MAE) the images are
            normalised with the library's image converter.
        images: uint8 array `(n, H, W, 3)` at the model's input size.
        captions: strings or bytes `(n,)`; needed with a preprocessor.
        batch_size: int.

    Returns:
        dict `{"eval/<metric>": float}`.

    Example:
    >>> held_out_losses(model, pairs["image"], pairs["caption"])  # doctest: +SKIP
    {'eval/loss': 3.1, 'eval/contrastive_loss': 3.1, ...}
    """
    images = np.asarray(images)
    if model.preprocessor is not None:
        if captions is None:
            raise ValueError(f"{type(model).__name__} has a preprocessor: pass the captions too.")
        data = {"images": images, "captions": np.asarray(_captions(captions))}
    else:
        from keras_maeclip.models import image_converter

        size = model.backbone.image_size
        data = {"images": np.asarray(image_converter(size)(images.astype("float32")))}
    # keras-hub's Task.evaluate puts arrays through tf.data (and the preprocessor) itself.
    results = model.evaluate(data, batch_size=min(batch_size, len(images)), verbose=0, return_dict=True)
    return {f"eval/{k}": float(v) for k, v in results.items()}


def pair_retrieval(model, images, captions, ks=(1, 5)):
    """Image→caption and caption→image recall@K among `n` held-out pairs.

    Args:
        model: a contrastive task (`CLIP`, `MAECLIP`) with a preprocessor.
        images: uint8 array `(n, H, W, 3)`.
        captions: strings or bytes `(n,)`, `captions[i]` pairs `images[i]`.
        ks: recall cut-offs.

    Returns:
        dict `{"retrieval/image_to_text_R@K", "retrieval/text_to_image_R@K",
        "retrieval/chance_R@1", "retrieval/pairs"}`.
    """
    if not _contrastive(model):
        raise ValueError(f"Retrieval needs a contrastive model (CLIP, MAECLIP); got {type(model).__name__}.")
    if len(images) != len(captions) or len(images) == 0:
        raise ValueError(f"Need as many captions as images (> 0); got {len(images)} and {len(captions)}.")
    metrics = retrieval_metrics(
        embed_images(model, np.asarray(images)), embed_texts(model, _captions(captions)), ks=ks
    )
    results = {f"retrieval/{k}": v for k, v in metrics.items()}
    results["retrieval/chance_R@1"] = 1.0 / len(images)
    results["retrieval/pairs"] = len(images)
    return results
