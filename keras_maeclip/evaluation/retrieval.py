"""Image↔text retrieval recall@K from paired embeddings (NumPy)."""

import numpy as np


def retrieval_metrics(image_embeddings, text_embeddings, ks=(1, 5, 10)):
    """Recall@K for image→text and text→image retrieval.

    Item `i` of each array is a pair; a query's recall@K is 1 when its pair
    ranks among the K most similar candidates (ties resolved against the
    query, i.e. a tie with the pair counts as ranking above it).

    Args:
        image_embeddings: array `(n, dim)`, L2-normalised.
        text_embeddings: array `(n, dim)`, L2-normalised.
        ks: iterable of int, defaults to `(1, 5, 10)`.

    Returns:
        dict with `image_to_text_R@K` and `text_to_image_R@K` in [0, 1].

    Example:
    >>> z = np.eye(4)
    >>> retrieval_metrics(z, z, ks=(1,))["image_to_text_R@1"]
    1.0

    References: Radford et al. 2021 §3.1.4 (zero-shot retrieval).
    """
    images = np.asarray(image_embeddings, dtype=np.float64)
    texts = np.asarray(text_embeddings, dtype=np.float64)
    if images.ndim != 2 or images.shape != texts.shape or len(images) == 0:
        raise ValueError(
            "retrieval_metrics needs two non-empty (n, dim) arrays of the "
            f"same shape; got {images.shape} and {texts.shape}."
        )
    similarity = images @ texts.T
    positives = np.diag(similarity)
    # Rank of the pair = number of candidates scoring at least as high, minus 1.
    image_rank = (similarity >= positives[:, None]).sum(axis=1) - 1
    text_rank = (similarity >= positives[None, :]).sum(axis=0) - 1
    out = {}
    for k in ks:
        out[f"image_to_text_R@{k}"] = float(np.mean(image_rank < k))
        out[f"text_to_image_R@{k}"] = float(np.mean(text_rank < k))
    return out
