"""Zero-shot and linear-probe evaluation on your own labelled images.

`evaluate_labelled` takes a `keras_maeclip.data.labelled.LabelledImages`
(a CSV / TSV manifest or a folder per class), splits it per class into a
probe-training and a test part (seeded) and reports, on the test part,
prompt-ensembled zero-shot accuracy (contrastive models) and the accuracy
of a linear head trained on the frozen features of the training part
(CLIP, MAE-CLIP, MAE), each with chance beside it. `recipes/evaluate.py
--labelled_data=...` calls it.

References: Radford et al. 2021 §3.1.4 (zero-shot, prompt ensembling) and
§3.2 (linear probes); He et al. 2022 §4 (MAE's linear probing).
"""

import numpy as np

from keras_maeclip.evaluation.linear_probe import linear_probe
from keras_maeclip.evaluation.zero_shot import embed_images, zero_shot_accuracy, zero_shot_classifier

__all__ = ["DEFAULT_TEMPLATES", "LABELLED_EVALUATIONS", "evaluate_labelled"]

# Prompts for images of unknown kind (give your own for a domain).
DEFAULT_TEMPLATES = ("a photo of a {}.", "a picture of a {}.", "an image of the {}.")
LABELLED_EVALUATIONS = ("zero_shot", "linear_probe")


def _check_templates(templates):
    templates = list(templates)
    bad = [t for t in templates if not isinstance(t, str) or t.count("{}") != 1]
    if not templates or bad:
        raise ValueError(
            f"Prompt templates must each hold exactly one '{{}}' for the class name; got {bad or templates!r}."
        )
    return templates


def evaluate_labelled(model, data, evaluations=LABELLED_EVALUATIONS, templates=DEFAULT_TEMPLATES,
                      name="labelled", test_fraction=0.3, seed=0, pooling=None, epochs=30):
    """Zero-shot and linear-probe metrics on labelled images.

    Args:
        model: a `CLIP` / `MAECLIP` (both evaluations) or `MAE` (linear
            probe only) task with a preprocessor where zero-shot needs one.
        data: `LabelledImages` at the model's input size.
        evaluations: a subset of `("zero_shot", "linear_probe")`.
        templates: prompt templates, each with one `"{}"`.
        name: the metric prefix's dataset part.
        test_fraction: share of each class in the test part.
        seed: seeds the split and the probe head.
        pooling: the probe's pooling (see `feature_extractor`).
        epochs: epochs of the probe head.

    Returns:
        dict: `zero_shot/<name>/top1` (`top5` with more than five classes),
        `.../chance`, `linear_probe/<name>/top1`, ..., and
        `labelled/<name>/{train_images,test_images,classes}` plus
        `labelled/<name>/skipped/<reason>`.

    Example:
    >>> data = load_labelled("pets/", image_size=32)  # doctest: +SKIP
    >>> evaluate_labelled(model, data, templates=["a photo of a {}, a pet."])  # doctest: +SKIP
    """
    unknown = sorted(set(evaluations) - set(LABELLED_EVALUATIONS))
    if unknown:
        raise ValueError(f"Labelled data supports {LABELLED_EVALUATIONS}; not {unknown}.")
    templates = _check_templates(templates)
    train, test = data.split(test_fraction, seed)
    classes = len(data.class_names)
    results = {
        f"labelled/{name}/classes": classes,
        f"labelled/{name}/train_images": len(train),
        f"labelled/{name}/test_images": len(test),
        **{f"labelled/{name}/skipped/{k}": v for k, v in data.skipped.items()},
    }
    if "zero_shot" in evaluations:
        classifier = zero_shot_classifier(model, data.class_names, templates)
        accuracy = zero_shot_accuracy(embed_images(model, test.images), test.labels, classifier)
        results[f"zero_shot/{name}/top1"] = accuracy["top1"]
        if classes > 5:
            results[f"zero_shot/{name}/top5"] = accuracy["top5"]
        results[f"zero_shot/{name}/chance"] = 1.0 / classes
    if "linear_probe" in evaluations:
        metrics = linear_probe(
            model, train.images, train.labels, test.images, test.labels, num_classes=classes,
            pooling=pooling, epochs=epochs, seed=seed,
            top_k=(1, 5) if classes > 5 else (1,),
        )
        results.update({f"linear_probe/{name}/{k}": v for k, v in metrics.items()})
        results[f"linear_probe/{name}/chance"] = 1.0 / classes
    return {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in results.items()}
