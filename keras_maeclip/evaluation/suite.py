"""The evaluation suite: every protocol on the synthetic set or local data.

One function per evaluation, each `fn(model, config) -> dict` of flat
metric names (`"<evaluation>/<metric>"`) to numbers, plus `run_suite` that
runs a list of them and `applicable` that says which fit a model. The
synthetic set is the default; `SuiteConfig` points zero-shot and the linear
probe at a prepared TFDS classification set, VQA at CLEVR and segmentation
at an ADE20K-style folder instead.

Held-out synthetic scenes are drawn with `seed + offset` (offsets below), so
they never coincide with pretraining examples drawn with `seed`.

Every evaluation `run_suite` runs sees the model as it was passed in, in
any order: VQA fine-tunes the towers in place (see `fine_tune_vqa`), so
`run_suite` snapshots the model's state once (`preserved_state`) and puts
it back after each evaluation, and seeds the global random generators with
`config.seed` before each one.

Which evaluation takes which model:

| evaluation     | CLIP | MAE-CLIP | M3AE | MAE |
|----------------|------|----------|------|-----|
| zero_shot      | yes  | yes      |      |     |
| retrieval      | yes  | yes      |      |     |
| linear_probe   | yes  | yes      |      | yes |
| vqa            | yes  | yes      | yes  |     |
| segmentation   | yes  | yes      |      |     |
| grounding      | yes  | yes      |      |     |
| reconstruction |      | yes      | yes  | yes |
"""

import contextlib
import dataclasses
import os

EVALUATIONS = (
    "zero_shot",
    "retrieval",
    "linear_probe",
    "vqa",
    "segmentation",
    "grounding",
    "reconstruction",
)
_APPLIES = {
    "zero_shot": ("CLIP", "MAECLIP"),
    "retrieval": ("CLIP", "MAECLIP"),
    "linear_probe": ("CLIP", "MAECLIP", "MAE"),
    "vqa": ("CLIP", "MAECLIP", "M3AE"),
    "segmentation": ("CLIP", "MAECLIP"),
    "grounding": ("CLIP", "MAECLIP"),
    "reconstruction": ("MAECLIP", "M3AE", "MAE"),
}
# Seed offsets of the held-out synthetic scenes of each evaluation.
_OFFSETS = {
    "zero_shot": 1000,
    "retrieval": 2000,
    "reconstruction": 4000,
    "probe_train": 5000,
    "probe_test": 6000,
    "vqa_train": 7000,
    "vqa_test": 8000,
    "segmentation": 9000,
    "grounding": 10000,
}
# Zero-shot tasks of the synthetic set (single-object scenes).
SYNTHETIC_ZERO_SHOT_TASKS = ("object", "colour", "shape")


@dataclasses.dataclass
class SuiteConfig:
    """Sizes, seeds and data sources of a suite run.

    Attributes:
        examples: held-out synthetic images per evaluation (test split).
        train_examples: synthetic images the linear probe and VQA train on
            (VQA gets 3 questions per image).
        seed: the pretraining data seed; held-out scenes use `seed + offset`.
        output_dir: where PNGs go (`None`: no pictures).
        linear_probe_attribute: synthetic label the probe predicts.
        linear_probe_pooling: `None` (the model's own pooling) or `"gap"`,
            `"max"`, `"first"`, `"map"` (a MAP head trained by the probe).
        linear_probe_epochs: epochs of the probe head.
        vqa_epochs, vqa_learning_rate, vqa_freeze_towers: VQA fine-tuning.
        vqa_layer_decay: float or `None`, layer-wise learning-rate decay of
            the towers in VQA fine-tuning (`fine_tune_vqa(layer_decay=)`).
        segmentation_attributes: synthetic attributes segmented.
        pictures: images in the grounding / reconstruction PNGs.
        classification_dataset: a TFDS name (`keras_maeclip.data.tfds`)
            for zero-shot and the linear probe instead of the synthetic set.
        vqa_dataset: a TFDS VQA name (`"clevr"`) instead of the synthetic QA.
        data_dir: the TFDS data_dir holding those (never downloaded).
        segmentation_dir: an ADE20K-style folder for segmentation instead
            of the synthetic masks.
        verbose: progress of the evaluations that train with `fit` (VQA
            fine-tuning): 0 silent, 1 Keras' live bar, 2 a line per epoch.
        synthetic_sizes: object sizes of the held-out synthetic scenes
            (`synthetic.generate_example(sizes=)`), `None` for both; set it
            to the training scenes' (`pretrain.py --synthetic_sizes`).
    """

    examples: int = 1000
    train_examples: int = 2000
    seed: int = 0
    output_dir: str = None
    linear_probe_attribute: str = "object"
    linear_probe_pooling: str = None
    linear_probe_epochs: int = 30
    vqa_epochs: int = 10
    vqa_learning_rate: float = 1e-3
    vqa_freeze_towers: bool = False
    vqa_layer_decay: float = None
    segmentation_attributes: tuple = ("colour", "shape")
    pictures: int = 8
    classification_dataset: str = None
    vqa_dataset: str = None
    data_dir: str = None
    segmentation_dir: str = None
    verbose: int = 0
    synthetic_sizes: tuple = None


def model_kind(model):
    """The task's class name: `"CLIP"`, `"MAECLIP"`, `"M3AE"` or `"MAE"`."""
    from keras_maeclip.models import CLIP, M3AE, MAE, MAECLIP

    for cls in (MAECLIP, CLIP, M3AE, MAE):  # MAECLIP before its parent CLIP
        if isinstance(model, cls):
            return cls.__name__
    raise ValueError(
        f"{type(model).__name__} is not a keras_maeclip task (CLIP, MAECLIP, M3AE or MAE)."
    )


def applicable(model):
    """The evaluations, in `EVALUATIONS` order, that take this model."""
    kind = model_kind(model)
    return [name for name in EVALUATIONS if kind in _APPLIES[name]]


def image_size(model):
    """The square input size of the model's image encoder."""
    backbone = model.backbone
    encoder = getattr(backbone, "image_encoder", backbone)
    return encoder.image_size


def held_out(config, offset, n, size, **scene_kwargs):
    """One NumPy batch of `n` synthetic scenes drawn with `seed + offset`."""
    from keras_maeclip.data import synthetic

    seed = config.seed + _OFFSETS[offset]
    scene_kwargs = {**scene_options(config), **scene_kwargs}
    data = synthetic.synthetic_dataset(n, seed=seed, image_size=size, **scene_kwargs)
    return next(data.batch(n).as_numpy_iterator())


def scene_options(config):
    """The synthetic scene arguments `config` sets (`{}`: the defaults)."""
    return {"sizes": tuple(config.synthetic_sizes)} if config.synthetic_sizes else {}


def _decoded(strings):
    return [s.decode() if isinstance(s, bytes) else str(s) for s in strings]


def _tfds_arrays(model, config, split, n, loader="classification"):
    """The first `n` examples of a local TFDS split, resized to the model's input."""
    from keras_maeclip.data import tfds

    load = tfds.load_classification if loader == "classification" else tfds.load_vqa
    name = config.classification_dataset if loader == "classification" else config.vqa_dataset
    data = load(name, split, config.data_dir, image_size=image_size(model), max_examples=n)
    return tfds.to_numpy(data)


# --------------------------------------------------------------------------
# One function per evaluation
# --------------------------------------------------------------------------


def zero_shot(model, config):
    """Prompt-ensembled zero-shot top-1 (and chance) per task."""
    from keras_maeclip.data import synthetic
    from keras_maeclip.evaluation import zero_shot as zs

    if config.classification_dataset:
        from keras_maeclip.data import tfds

        name = config.classification_dataset
        data = _tfds_arrays(model, config, "test", config.examples)
        images = data["image"]
        names = tfds.class_names(name, config.data_dir)
        tasks = {name: (data["label"], names, tfds.prompt_templates(name))}
    else:
        single = held_out(config, "zero_shot", config.examples, image_size(model), max_objects=1)
        images = single["image"]
        tasks = {
            task: (single[task], synthetic.CLASS_NAMES[task], synthetic.PROMPT_TEMPLATES[task])
            for task in SYNTHETIC_ZERO_SHOT_TASKS
        }
    embeddings = zs.embed_images(model, images)
    results = {}
    for task, (labels, names, templates) in tasks.items():
        classifier = zs.zero_shot_classifier(model, names, templates)
        accuracy = zs.zero_shot_accuracy(embeddings, labels, classifier, top_k=(1, 5))
        results[f"zero_shot/{task}/top1"] = accuracy["top1"]
        if len(names) > 5:
            results[f"zero_shot/{task}/top5"] = accuracy["top5"]
        results[f"zero_shot/{task}/chance"] = 1.0 / len(names)
    return results


def retrieval(model, config):
    """Image↔caption recall@1/5 on held-out synthetic scenes of 1-3 objects."""
    from keras_maeclip.evaluation import zero_shot as zs
    from keras_maeclip.evaluation.retrieval import retrieval_metrics

    scenes = held_out(config, "retrieval", config.examples, image_size(model))
    metrics = retrieval_metrics(
        zs.embed_images(model, scenes["image"]),
        zs.embed_texts(model, _decoded(scenes["caption"])),
        ks=(1, 5),
    )
    results = {f"retrieval/{k}": v for k, v in metrics.items()}
    results["retrieval/chance_R@1"] = 1.0 / config.examples
    return results


def linear_probe(model, config):
    """Top-1/top-5 of a linear head on frozen pooled image features."""
    from keras_maeclip.data import synthetic
    from keras_maeclip.evaluation.linear_probe import linear_probe as probe

    if config.classification_dataset:
        name = config.classification_dataset
        train = _tfds_arrays(model, config, "train", config.train_examples)
        test = _tfds_arrays(model, config, "test", config.examples)
        arrays = (train["image"], train["label"], test["image"], test["label"])
        num_classes = int(max(train["label"].max(), test["label"].max())) + 1
    else:
        name = config.linear_probe_attribute
        size = image_size(model)
        train = held_out(config, "probe_train", config.train_examples, size, max_objects=1)
        test = held_out(config, "probe_test", config.examples, size, max_objects=1)
        arrays = (train["image"], train[name], test["image"], test[name])
        num_classes = len(synthetic.CLASS_NAMES[name])
    metrics = probe(
        model, *arrays, num_classes=num_classes, pooling=config.linear_probe_pooling,
        epochs=config.linear_probe_epochs, seed=config.seed,
    )
    results = {f"linear_probe/{name}/{k}": v for k, v in metrics.items()}
    results[f"linear_probe/{name}/chance"] = 1.0 / num_classes
    return results


def vqa(model, config):
    """VQA fine-tuning as answer classification (Appendix D of the paper).

    Fine-tunes the towers (unless `config.vqa_freeze_towers`) inside
    `preserved_state`, so the model comes back with its pretrained weights
    and `trainable` flags.
    """
    from keras_maeclip.evaluation.vqa import fine_tune_vqa, synthetic_vqa

    if config.vqa_dataset:
        train = _tfds_arrays(model, config, "train", config.train_examples * 3, loader="vqa")
        test = _tfds_arrays(model, config, "test", config.examples * 3, loader="vqa")
        train = (train["image"], train["question"], train["answer"])
        test = (test["image"], test["question"], test["answer"])
        types = None
    else:
        size = image_size(model)
        scenes = scene_options(config)
        train = synthetic_vqa(config.train_examples, seed=config.seed + _OFFSETS["vqa_train"],
                              image_size=size, **scenes)
        *test, types = synthetic_vqa(
            config.examples, seed=config.seed + _OFFSETS["vqa_test"], image_size=size,
            with_types=True, **scenes
        )
    # fine_tune_vqa trains the shared towers in place: give them back.
    with preserved_state(model):
        metrics, _ = fine_tune_vqa(
            model,
            train,
            tuple(test),
            epochs=config.vqa_epochs,
            learning_rate=config.vqa_learning_rate,
            freeze_towers=config.vqa_freeze_towers,
            layer_decay=config.vqa_layer_decay,
            question_types=types,
            seed=config.seed,
            verbose=config.verbose,
        )
    return {f"vqa/{k}": float(v) for k, v in metrics.items()}


def segmentation(model, config):
    """Prompt-based segmentation: mean IoU and pixel accuracy."""
    from keras_maeclip.data import tfds
    from keras_maeclip.evaluation import segmentation as seg

    if config.segmentation_dir:
        data = seg.load_segmentation_folder(
            config.segmentation_dir, image_size=image_size(model), max_examples=config.examples
        )
        predictions = seg.segment(model, data["images"], data["class_names"], tfds.imagenet_templates())
        metrics = seg.segmentation_metrics(
            predictions, data["labels"], len(data["class_names"]), ignore_index=data["ignore_index"]
        )
        name = os.path.basename(os.path.normpath(config.segmentation_dir))
        return {
            f"segmentation/{name}/mean_iou": metrics["mean_iou"],
            f"segmentation/{name}/pixel_accuracy": metrics["pixel_accuracy"],
        }
    scenes = held_out(config, "segmentation", config.examples, image_size(model))
    results = {}
    for attribute in config.segmentation_attributes:
        metrics = seg.evaluate_synthetic_segmentation(model, scenes, attribute=attribute)
        results[f"segmentation/{attribute}/mean_iou"] = metrics["mean_iou"]
        results[f"segmentation/{attribute}/pixel_accuracy"] = metrics["pixel_accuracy"]
    return results


def grounding(model, config):
    """Pointing game and heatmap IoU for "the <colour> <shape>." phrases."""
    from keras_maeclip.evaluation import grounding as gr

    scenes = held_out(config, "grounding", config.examples, image_size(model))
    score = gr.grounding_score(model, scenes)
    results = {f"grounding/{k}": float(v) for k, v in score.items()}
    # Chance of the pointing game: a uniformly random peak lands on the
    # object with probability (object area) / (image area).
    masks = scenes["masks"].reshape(-1, *scenes["masks"].shape[-2:])
    present = masks.reshape(len(masks), -1).max(axis=1) > 0
    results["grounding/pointing_game_chance"] = float(masks[present].mean())
    if config.output_dir and config.pictures:
        n = min(config.pictures, len(scenes["image"]))
        names = [_decoded(row)[0] for row in scenes["object_names"][:n]]
        phrases = [f"the {name}." for name in names]
        heatmaps = gr.grounding_heatmaps(model, scenes["image"][:n], phrases)
        gr.save_grounding_overlays(os.path.join(config.output_dir, "grounding.png"), scenes["image"][:n], heatmaps, phrases)
    return results


def reconstruction(model, config):
    """Writes `reconstructions.png` (original / masked / reconstruction)."""
    from keras_maeclip.evaluation.reconstruction import save_reconstruction_grid
    from keras_maeclip.models import image_converter

    if not (config.output_dir and config.pictures):
        return {}
    size = image_size(model)
    scenes = held_out(config, "reconstruction", config.pictures, size)
    raw = {"images": scenes["image"], "captions": scenes["caption"]}
    if model.preprocessor is not None:
        inputs = model.preprocessor(raw)
    else:
        inputs = {"images": image_converter(size)(raw["images"].astype("float32"))}
    save_reconstruction_grid(
        model,
        inputs,
        os.path.join(config.output_dir, "reconstructions.png"),
        max_images=config.pictures,
        title=f"{model_kind(model)}: held-out synthetic scenes",
    )
    return {}


_FUNCTIONS = {
    "zero_shot": zero_shot,
    "retrieval": retrieval,
    "linear_probe": linear_probe,
    "vqa": vqa,
    "segmentation": segmentation,
    "grounding": grounding,
    "reconstruction": reconstruction,
}


def _layer_tree(layer):
    """`layer` and, for models, their layers recursively, parents first."""
    import keras

    yield layer
    if isinstance(layer, keras.Model):
        for child in layer.layers:
            yield from _layer_tree(child)


@contextlib.contextmanager
def preserved_state(model):
    """Puts the model back as it was when the block ends, even on an error.

    Snapshots, as host (NumPy) copies, every variable of `model.variables`
    (weights, non-trainable state such as the contrastive step counter, the
    masking seed generators' states and metric accumulators) and the
    `trainable` flag of every layer, and restores both on exit: what
    `fine_tune_vqa` changes in place (tower weights and `trainable` flags)
    is undone. Costs one host copy of the model and one assignment per
    variable; the optimizer's state is not touched (evaluations never use
    the task's optimizer).

    Args:
        model: a keras_maeclip task.

    Example:
    ```python
    with preserved_state(model):
        fine_tune_vqa(model, train, test)
    # model has its pretrained weights again
    ```
    """
    restore = _snapshot(model)
    try:
        yield model
    finally:
        restore()


def _snapshot(model):
    """A function that puts back the model's variables and `trainable` flags."""
    from keras import ops

    variables = list(model.variables)
    values = [ops.convert_to_numpy(v) for v in variables]
    flags = [(layer, layer.trainable) for layer in _layer_tree(model)]

    def restore():
        # Parents first: setting a parent's flag also sets its children's.
        for layer, trainable in flags:
            if layer.trainable != trainable:
                layer.trainable = trainable
        for variable, value in zip(variables, values):
            variable.assign(value)

    return restore


def run_suite(model, evaluations=None, config=None, log=print):
    """Runs evaluations in order and merges their metrics.

    Each evaluation sees the model as passed in, whatever the order: the
    model's state is restored after each one (`preserved_state`; VQA
    fine-tunes the towers in place), and the global random generators are
    seeded with `config.seed` (`keras.utils.set_random_seed`) before each
    one, so an evaluation's numbers do not depend on what ran before it.

    Args:
        model: a trained `CLIP`, `MAECLIP`, `M3AE` or `MAE` task.
        evaluations: names from `EVALUATIONS`; `None` for all that apply.
        config: a `SuiteConfig` (defaults if `None`).
        log: callable taking a line when each evaluation starts
            (`"<name> (i/n) ..."`) and when it ends (its time), or `None`.

    Returns:
        dict of metrics, plus `"seconds/<evaluation>"` timings.

    Raises:
        ValueError: an unknown evaluation, or one that does not take this
            model (the message lists those that do).
    """
    import time

    import keras

    config = config or SuiteConfig()
    evaluations = applicable(model) if evaluations is None else check_evaluations(model, evaluations)
    if config.output_dir:
        os.makedirs(config.output_dir, exist_ok=True)
    results = {}
    restore = _snapshot(model)
    for index, name in enumerate(evaluations, 1):
        if log:
            log(f"{name} ({index}/{len(evaluations)}) ...")
        started = time.time()
        keras.utils.set_random_seed(config.seed)
        try:
            metrics = _FUNCTIONS[name](model, config)
        finally:
            restore()
        results.update(metrics)
        results[f"seconds/{name}"] = time.time() - started
        if log:
            log(f"{name}: done in {results[f'seconds/{name}']:.0f} s")
    return results


def check_evaluations(model, evaluations):
    """The evaluations as a list, or a ValueError naming a wrong one and the right ones."""
    kind = model_kind(model)
    evaluations = list(evaluations)
    for name in evaluations:
        if name not in _FUNCTIONS:
            raise ValueError(f"Unknown evaluation {name!r}; choose from {EVALUATIONS}.")
        if kind not in _APPLIES[name]:
            raise ValueError(
                f"Evaluation {name!r} does not take a {kind} model; it takes "
                f"{', '.join(_APPLIES[name])}. For {kind} use: {', '.join(applicable(model))}."
            )
    return evaluations


def format_table(results):
    """A plain-text table of the metrics, one row per metric, grouped by evaluation."""
    rows = [(k, v) for k, v in sorted(results.items()) if not k.startswith("seconds/")]
    if not rows:
        return "(no metrics)"
    width = max(len(k) for k, _ in rows)
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  ------"]
    for key, value in rows:
        shown = f"{value:.4f}" if isinstance(value, float) and not float(value).is_integer() else f"{value:g}"
        lines.append(f"{key:<{width}}  {shown}")
    return "\n".join(lines)
