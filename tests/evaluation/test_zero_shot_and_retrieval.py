import numpy as np
import pytest
import tensorflow as tf

from keras_maeclip.evaluation import (
    embed_images,
    embed_texts,
    retrieval_metrics,
    zero_shot_accuracy,
    zero_shot_classifier,
)
from tests.tiny import CAPTIONS, make_clip, raw_batch


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force_recall(sim, k):
    """Per query, is the pair among the k highest scores (by explicit sort)?"""
    hits = []
    for i, row in enumerate(sim):
        order = sorted(range(len(row)), key=lambda j: (-row[j], j != i))
        hits.append(i in order[:k])
    return float(np.mean(hits))


def test_retrieval_matches_brute_force():
    rng = np.random.default_rng(0)
    images = unit(rng.normal(size=(30, 8)))
    texts = unit(images + 0.8 * rng.normal(size=(30, 8)))
    got = retrieval_metrics(images, texts, ks=(1, 5, 10))
    sim = images @ texts.T
    for k in (1, 5, 10):
        assert got[f"image_to_text_R@{k}"] == pytest.approx(brute_force_recall(sim, k))
        assert got[f"text_to_image_R@{k}"] == pytest.approx(brute_force_recall(sim.T, k))
    assert 0.0 < got["image_to_text_R@1"] < got["image_to_text_R@10"] <= 1.0


def test_retrieval_perfect_and_shape_errors():
    z = np.eye(5)
    assert retrieval_metrics(z, z, ks=(1,)) == {"image_to_text_R@1": 1.0, "text_to_image_R@1": 1.0}
    with pytest.raises(ValueError, match="same shape"):
        retrieval_metrics(np.eye(3), np.eye(4))


def test_zero_shot_accuracy_topk():
    classifier = np.eye(4)
    embeddings = unit(np.array([[1, 0.5, 0, 0], [0, 1, 0, 0], [0.2, 0, 0, 1], [0, 0, 1, 0.9]], float))
    labels = np.array([1, 1, 3, 2])
    out = zero_shot_accuracy(embeddings, labels, classifier, top_k=(1, 2, 10))
    # Row 0 (label 1) ranks class 0 first and class 1 second; the others hit.
    assert out == {"top1": 0.75, "top2": 1.0, "top10": 1.0}
    with pytest.raises(ValueError, match="4 rows of scores but 3 labels"):
        zero_shot_accuracy(embeddings, labels[:3], classifier)


def test_classifier_averages_prompt_embeddings(preprocessor):
    model = make_clip(preprocessor)
    names, templates = ["circle", "square", "cross"], ["a {}.", "a red {}."]
    classifier = zero_shot_classifier(model, names, templates)
    assert classifier.shape == (3, 16)
    np.testing.assert_allclose(np.linalg.norm(classifier, axis=1), 1.0, atol=1e-5)
    prompts = embed_texts(model, ["a square.", "a red square."])
    np.testing.assert_allclose(classifier[1], unit(prompts.mean(0, keepdims=True))[0], atol=1e-5)
    raw = raw_batch(5)["images"]
    images = embed_images(model, raw, batch_size=2)
    assert images.shape == (5, 16)
    from_dataset = embed_images(model, tf.data.Dataset.from_tensor_slices(raw).batch(2))
    np.testing.assert_allclose(from_dataset, images, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(images, axis=1), 1.0, atol=1e-5)
    scores = zero_shot_accuracy(images, np.zeros(5, int), classifier, top_k=(1,))
    assert 0.0 <= scores["top1"] <= 1.0


def test_classifier_rejects_bad_arguments(preprocessor):
    model = make_clip(preprocessor)
    with pytest.raises(ValueError, match="class_names is empty"):
        zero_shot_classifier(model, [], ["a {}."])
    with pytest.raises(ValueError, match="each containing"):
        zero_shot_classifier(model, ["circle"], ["a photo"])
    model.preprocessor = None
    with pytest.raises(ValueError, match="needs model.preprocessor"):
        embed_texts(model, CAPTIONS[:2])
