r"""Evaluate a saved model: zero-shot, retrieval, linear probe, VQA, segmentation,
grounding and reconstructions, on the synthetic set or on local data.

Takes a preset directory written by `recipes/pretrain.py` (or any
`save_to_preset`), runs the evaluations that apply to its model (or those
given by `--evaluations`), writes `evaluation.json` and the PNGs
(`grounding.png`, `reconstructions.png`) to `--output_dir` and prints a
table. Real data is read from a local TFDS `--data_dir` (never downloaded);
a missing dataset stops with the directory looked in.

    python recipes/evaluate.py --preset=runs/clip_tiny_gap/preset
    python recipes/evaluate.py --preset=runs/maeclip_tiny_max/preset \
        --evaluations=linear_probe,grounding --examples=500
    python recipes/evaluate.py --preset=... --classification_dataset=cifar10 \
        --data_dir=~/tensorflow_datasets --evaluations=zero_shot,linear_probe
    python recipes/evaluate.py --preset=... --vqa_dataset=clevr --data_dir=...
    python recipes/evaluate.py --preset=... --segmentation_dir=ADEChallengeData2016

Your own labelled images (zero-shot and linear probe; docs/evaluation.md): a
CSV / TSV manifest with an image-path and a label column, or a folder per
class; class names from the labels / folder names, `--class_names` or
`--class_names_file`; prompts from `--template` (repeatable) or
`--templates_file`:

    python recipes/evaluate.py --preset=... --labelled_data=pets.csv \
        --labelled_label_key=breed --templates_file=pet_prompts.txt
    python recipes/evaluate.py --preset=... --labelled_data=photos/ \
        --template="a photo of a {}." --template="a drawing of a {}."
"""

import json
import os
import sys
import time

from absl import app, flags

from keras_maeclip.backend import fit_verbosity, select_backend

FLAGS = flags.FLAGS
flags.DEFINE_string("preset", None, "Preset directory of a trained CLIP, MAECLIP, M3AE or MAE task.")
flags.DEFINE_list("evaluations", None, "Comma-separated evaluations (default: all that apply to the model).")
flags.DEFINE_string("backend", None, "Keras backend (jax|tensorflow|torch); default KERAS_BACKEND, else torch on a CPU, jax with a GPU/TPU (keras_maeclip.backend.default_backend).")
flags.DEFINE_string("output_dir", None, "Where evaluation.json and the PNGs go (default: <preset>/../eval).")
flags.DEFINE_list("synthetic_sizes", None, "Object sizes of the held-out synthetic scenes (small,large; default both): those the model was trained on (pretrain.py --synthetic_sizes).")
flags.DEFINE_integer("examples", 1000, "Held-out images per evaluation (test split size).")
flags.DEFINE_integer("train_examples", 2000, "Training images of the linear probe and VQA.")
flags.DEFINE_integer("seed", 0, "The pretraining data seed; held-out scenes are drawn with seed + offsets.")
flags.DEFINE_string("linear_probe_attribute", "object", "Synthetic label the linear probe predicts.")
flags.DEFINE_enum("linear_probe_pooling", None, ["gap", "max", "first", "map"], "Probe pooling (default: the model's own; map trains a MAP head).")
flags.DEFINE_integer("linear_probe_epochs", 30, "Epochs of the linear-probe head.")
flags.DEFINE_integer("vqa_epochs", 10, "VQA fine-tuning epochs.")
flags.DEFINE_float("vqa_learning_rate", 1e-3, "VQA fine-tuning learning rate (AdamW).")
flags.DEFINE_float("vqa_layer_decay", None, "Layer-wise learning-rate decay of the towers in VQA fine-tuning (MAE uses 0.65-0.75; default: one rate).")
flags.DEFINE_bool("freeze_towers", False, "VQA: keep the pretrained towers frozen (default: fine-tune them, as the paper).")
flags.DEFINE_list("segmentation_attributes", ["colour", "shape"], "Synthetic attributes to segment.")
flags.DEFINE_integer("pictures", 8, "Images in grounding.png / reconstructions.png (0: none).")
flags.DEFINE_string("classification_dataset", None, "TFDS name for zero-shot and linear probe (e.g. cifar10, imagenet2012).")
flags.DEFINE_string("vqa_dataset", None, "TFDS VQA name (clevr) instead of the synthetic questions.")
flags.DEFINE_string("data_dir", None, "TFDS data_dir with the prepared datasets (nothing is downloaded).")
flags.DEFINE_string("segmentation_dir", None, "ADE20K-style folder (images/, annotations/, objectInfo150.txt).")
flags.DEFINE_string("labelled_data", None, "Your labelled images for zero_shot / linear_probe: a CSV/TSV manifest or a folder per class.")
flags.DEFINE_string("labelled_image_key", "filepath", "--labelled_data manifest: column of image paths.")
flags.DEFINE_string("labelled_label_key", "label", "--labelled_data manifest: column of labels (class names, or indices into the class names).")
flags.DEFINE_string("labelled_separator", None, "--labelled_data manifest: column separator (default: tab for .tsv, else comma; 'tab' for a tab).")
flags.DEFINE_list("class_names", None, "Class names of --labelled_data, in label-index order (default: the distinct labels or folder names, sorted).")
flags.DEFINE_string("class_names_file", None, "A file of class names, one per line, instead of --class_names.")
flags.DEFINE_multi_string("template", None, "A zero-shot prompt template with one {} for --labelled_data (repeat the flag for several).")
flags.DEFINE_string("templates_file", None, "A file of prompt templates, one per line, for --labelled_data.")
flags.DEFINE_float("test_fraction", 0.3, "--labelled_data: share of each class held out as the test part (the probe trains on the rest).")
flags.mark_flag_as_required("preset")


def _labelled_options():
    """Class names and templates of --labelled_data from the flags or files."""
    from keras_maeclip.data.labelled import read_lines
    from keras_maeclip.evaluation.labelled import DEFAULT_TEMPLATES

    if FLAGS.class_names and FLAGS.class_names_file:
        raise app.UsageError("Give --class_names or --class_names_file, not both.")
    if FLAGS.template and FLAGS.templates_file:
        raise app.UsageError("Give --template or --templates_file, not both.")
    names = read_lines(FLAGS.class_names_file) if FLAGS.class_names_file else FLAGS.class_names
    templates = read_lines(FLAGS.templates_file) if FLAGS.templates_file else FLAGS.template
    return names, list(templates or DEFAULT_TEMPLATES)


def _evaluate_labelled(model, evaluations, log):
    """zero_shot / linear_probe of `evaluations` on --labelled_data."""
    from keras_maeclip.data.labelled import load_labelled
    from keras_maeclip.evaluation import suite
    from keras_maeclip.evaluation.labelled import evaluate_labelled

    names, templates = _labelled_options()
    source = os.path.expanduser(FLAGS.labelled_data)
    csv = {}
    if not os.path.isdir(source):
        separator = FLAGS.labelled_separator
        csv = dict(image_key=FLAGS.labelled_image_key, label_key=FLAGS.labelled_label_key,
                   separator="\t" if separator in ("tab", "\\t") else separator)
    try:
        data = load_labelled(source, suite.image_size(model), class_names=names, **csv)
        name = os.path.splitext(os.path.basename(os.path.normpath(source)))[0] or "labelled"
        log(f"{FLAGS.labelled_data}: {len(data)} images, {len(data.class_names)} classes"
            + (f", skipped {data.skipped}" if data.skipped else ""))
        return evaluate_labelled(model, data, evaluations, templates, name=name,
                                 test_fraction=FLAGS.test_fraction, seed=FLAGS.seed,
                                 pooling=FLAGS.linear_probe_pooling, epochs=FLAGS.linear_probe_epochs)
    except ValueError as error:
        raise app.UsageError(f"--labelled_data={FLAGS.labelled_data}: {error}") from None


def main(argv):
    del argv
    preset = os.path.expanduser(FLAGS.preset)
    if not os.path.isfile(os.path.join(preset, "config.json")):
        raise app.UsageError(
            f"--preset={FLAGS.preset} is not a saved preset directory (no config.json "
            "there); pass the `preset` folder written by recipes/pretrain.py."
        )
    select_backend(FLAGS.backend)
    import keras

    from keras_maeclip.data.tfds import DatasetNotFoundError
    from keras_maeclip.evaluation import suite
    from keras_maeclip.models.pretraining_task import PretrainingTask

    data_dir = os.path.expanduser(FLAGS.data_dir) if FLAGS.data_dir else None
    output_dir = FLAGS.output_dir or os.path.join(os.path.dirname(os.path.normpath(preset)), "eval")
    config = suite.SuiteConfig(
        examples=FLAGS.examples,
        train_examples=FLAGS.train_examples,
        seed=FLAGS.seed,
        output_dir=output_dir,
        linear_probe_attribute=FLAGS.linear_probe_attribute,
        linear_probe_pooling=FLAGS.linear_probe_pooling,
        linear_probe_epochs=FLAGS.linear_probe_epochs,
        vqa_epochs=FLAGS.vqa_epochs,
        vqa_learning_rate=FLAGS.vqa_learning_rate,
        vqa_freeze_towers=FLAGS.freeze_towers,
        vqa_layer_decay=FLAGS.vqa_layer_decay,
        segmentation_attributes=tuple(FLAGS.segmentation_attributes),
        pictures=FLAGS.pictures,
        classification_dataset=FLAGS.classification_dataset,
        vqa_dataset=FLAGS.vqa_dataset,
        data_dir=data_dir,
        segmentation_dir=FLAGS.segmentation_dir,
        verbose=fit_verbosity(),
        synthetic_sizes=tuple(FLAGS.synthetic_sizes) if FLAGS.synthetic_sizes else None,
    )
    started = time.time()
    keras.utils.set_random_seed(FLAGS.seed)
    model = PretrainingTask.from_preset(preset)
    kind = suite.model_kind(model)
    from keras_maeclip.evaluation.labelled import LABELLED_EVALUATIONS

    default = suite.applicable(model)
    if FLAGS.labelled_data and not FLAGS.evaluations:
        default = [e for e in default if e in LABELLED_EVALUATIONS]
    try:
        evaluations = suite.check_evaluations(model, FLAGS.evaluations or default)
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    labelled = [e for e in evaluations if e in LABELLED_EVALUATIONS] if FLAGS.labelled_data else []
    print(
        f"backend={keras.config.backend()} model={kind} preset={preset} "
        f"evaluations={','.join(evaluations)}",
        flush=True,
    )
    # VQA fine-tunes the towers in place: run it last so the other
    # evaluations see the pretrained weights.
    evaluations = sorted(evaluations, key=lambda name: name == "vqa")
    log = lambda line: print(line, flush=True)  # noqa: E731
    results = _evaluate_labelled(model, labelled, log) if labelled else {}
    rest = [e for e in evaluations if e not in labelled]
    try:
        if rest:
            results.update(suite.run_suite(model, rest, config, log=log))
    except DatasetNotFoundError as error:
        sys.exit(f"evaluate.py: {error}")
    results["seconds/total"] = time.time() - started
    results["model"] = kind
    results["preset"] = preset
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, "evaluation.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=2, sort_keys=True)
    print()
    print(suite.format_table({k: v for k, v in results.items() if isinstance(v, (int, float))}))
    pictures = [p for p in ("grounding.png", "reconstructions.png") if os.path.exists(os.path.join(output_dir, p))]
    print(f"\nMetrics in {path}" + (f"; pictures: {', '.join(pictures)}" if pictures else ""))


if __name__ == "__main__":
    app.run(main)
