"""Zero-shot classification: class names × prompt templates → text classifier."""

import keras
import numpy as np


def _normalize(x, axis=-1):
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


def zero_shot_classifier(model, class_names, templates, batch_size=256):
    """Class embeddings: each class's prompts encoded, averaged, re-normalised.

    Args:
        model: a trained `CLIP` (or any task with a `preprocessor` and a
            backbone exposing `text_embedder()`).
        class_names: list of str.
        templates: list of str with one `"{}"` each, e.g. `"a photo of a {}."`.
        batch_size: int, prompts encoded per batch.

    Returns:
        float32 array `(num_classes, dim)`, unit rows.

    Example:
    >>> clf = zero_shot_classifier(model, ["circle", "square"], ["a {}."])
    >>> clf.shape  # (classes, model.backbone.embedding_dim)
    (2, 96)

    References: Radford et al. 2021 §3.1.4 (prompt ensembling); open_clip
    `zero_shot_classifier.py`.
    """
    class_names, templates = list(class_names), list(templates)
    if not class_names:
        raise ValueError("zero_shot_classifier: class_names is empty.")
    if not templates or any("{}" not in t for t in templates):
        raise ValueError(
            "zero_shot_classifier: templates must be a non-empty list of "
            f"strings each containing '{{}}'; got {templates!r}."
        )
    prompts = [t.format(name) for name in class_names for t in templates]
    embeddings = embed_texts(model, prompts, batch_size).reshape(
        len(class_names), len(templates), -1
    )
    return _normalize(_normalize(embeddings).mean(axis=1)).astype(np.float32)


def zero_shot_accuracy(image_embeddings, labels, classifier, top_k=(1, 5)):
    """Top-K accuracy of nearest class embeddings.

    Args:
        image_embeddings: array `(n, dim)`, unit rows.
        labels: int array `(n,)` of class indices.
        classifier: array `(num_classes, dim)` from `zero_shot_classifier`.
        top_k: iterable of int; K larger than the number of classes is
            clipped to it.

    Returns:
        dict `{"top1": ..., "top5": ...}` in [0, 1].

    Example:
    >>> zero_shot_accuracy(np.eye(3), np.arange(3), np.eye(3), (1,))
    {'top1': 1.0}
    """
    scores = np.asarray(image_embeddings, np.float64) @ np.asarray(classifier, np.float64).T
    return top_k_accuracy(scores, labels, top_k)


def top_k_accuracy(scores, labels, top_k=(1, 5)):
    """Share of rows whose label is among the K highest scores.

    Args:
        scores: array `(n, num_classes)`.
        labels: int array `(n,)`.
        top_k: iterable of int; K above the class count is clipped to it.

    Returns:
        dict `{"top1": ..., ...}` in [0, 1].

    Example:
    >>> top_k_accuracy(np.array([[0.1, 0.9], [0.8, 0.2]]), [1, 1], (1, 2))
    {'top1': 0.5, 'top2': 1.0}
    """
    scores = np.asarray(scores)
    labels = np.asarray(labels).reshape(-1)
    if len(labels) != len(scores) or len(labels) == 0:
        raise ValueError(f"{len(scores)} rows of scores but {len(labels)} labels.")
    order = np.argsort(-scores, axis=1)
    out = {}
    for k in top_k:
        hits = (order[:, : min(k, scores.shape[1])] == labels[:, None]).any(axis=1)
        out[f"top{k}"] = float(hits.mean())
    return out


def embed_images(model, images, batch_size=256):
    """Unit-norm image embeddings of raw images through the model's preprocessor.

    Args:
        model: a `CLIP` with a preprocessor.
        images: uint8/float array `(n, H, W, 3)`, or a `tf.data.Dataset` of
            such batches (the preprocessor is then mapped over it).
        batch_size: int, images per forward pass for an array.

    Returns:
        float32 array `(n, dim)`.
    """
    if model.preprocessor is None:
        raise ValueError("embed_images needs model.preprocessor to resize/normalise.")
    embedder = model.backbone.image_embedder()
    if hasattr(images, "map"):  # a tf.data.Dataset of image batches
        data = images.map(lambda x: model.preprocessor({"images": x})["images"])
        out = embedder.predict(data, verbose=0)
    else:
        pixels = model.preprocessor({"images": np.asarray(images)})["images"]
        out = embedder.predict(keras.ops.convert_to_numpy(pixels), batch_size=batch_size, verbose=0)
    return np.asarray(out, np.float32)


def embed_texts(model, captions, batch_size=256):
    """Unit-norm text embeddings of caption strings (NumPy array `(n, dim)`)."""
    if model.preprocessor is None:
        raise ValueError("embed_texts needs model.preprocessor (its tokenizer).")
    tokens = model.preprocessor({"captions": np.asarray(captions)})
    return np.asarray(
        model.backbone.text_embedder().predict(
            {"token_ids": tokens["token_ids"], "padding_mask": tokens["padding_mask"]},
            batch_size=batch_size,
            verbose=0,
        ),
        np.float32,
    )
