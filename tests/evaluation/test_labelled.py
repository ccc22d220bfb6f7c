"""Zero-shot and linear probe on user-labelled images (evaluate_labelled)."""

import numpy as np
import pytest

from keras_maeclip.data import synthetic
from keras_maeclip.data.labelled import LabelledImages
from keras_maeclip.evaluation import embed_images, embed_texts
from keras_maeclip.evaluation.labelled import evaluate_labelled
from tests.tiny import make_clip


def colour_images(n=24, size=16):
    scenes = next(synthetic.synthetic_dataset(n, seed=5, image_size=size, max_objects=1)
                  .batch(n).as_numpy_iterator())
    return LabelledImages(scenes["image"], scenes["colour"].astype("int32"),
                          list(synthetic.CLASS_NAMES["colour"]),
                          np.array([str(i).encode() for i in range(n)]), {"corrupt_image": 2})


def test_zero_shot_matches_a_numpy_prompt_ensemble_and_the_probe_reports(preprocessor):
    model = make_clip(preprocessor)
    data = colour_images()
    templates = ["a photo of a {} shape.", "something {}."]
    results = evaluate_labelled(model, data, templates=templates, name="colours", test_fraction=0.5,
                                seed=0, epochs=2)
    _, test = data.split(0.5, 0)
    # NumPy reference: mean of unit prompt embeddings per class, re-normalised, argmax of cosine.
    prompts = embed_texts(model, [t.format(c) for c in data.class_names for t in templates])
    prompts /= np.linalg.norm(prompts, axis=-1, keepdims=True)
    classes = prompts.reshape(len(data.class_names), len(templates), -1).mean(1)
    classes /= np.linalg.norm(classes, axis=-1, keepdims=True)
    predicted = np.argmax(embed_images(model, test.images) @ classes.T, axis=-1)
    assert results["zero_shot/colours/top1"] == pytest.approx(np.mean(predicted == test.labels), abs=1e-6)
    assert results["zero_shot/colours/chance"] == 1 / 6 and "zero_shot/colours/top5" in results
    assert 0.0 <= results["linear_probe/colours/top1"] <= 1.0
    assert results["labelled/colours/test_images"] == len(test) and 6 <= len(test) <= 18
    assert results["labelled/colours/skipped/corrupt_image"] == 2
    with pytest.raises(ValueError, match="exactly one"):
        evaluate_labelled(model, data, templates=["no slot"])
    with pytest.raises(ValueError, match="supports"):
        evaluate_labelled(model, data, evaluations=("vqa",))
