r"""Pretrain a model of the paper and report zero-shot accuracy.

Trains on the built-in synthetic image–caption set unless `--data` points at
TFRecords written by `keras_maeclip.data.synthetic.write_tfrecords`, then:
saves a keras-hub preset (config, weights, tokenizer vocabulary) and a JSON
of final metrics under `--output_dir`, and prints zero-shot accuracy on
held-out synthetic images with chance level beside it, plus retrieval
recall.

    KERAS_BACKEND=jax python recipes/pretrain.py            # tiny CLIP, ~5 min
    python recipes/pretrain.py --backend=torch --preset=clip_tiny_max \
        --steps=500 --output_dir=runs/clip_max

Variants beyond CLIP (MAE, M3AE, MAE-CLIP) come with the masked-modelling
work; `--model` lists what this version has.
"""

import json
import os
import sys
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_enum("model", "clip", ["clip"], "Which pretraining model.")
flags.DEFINE_string("preset", "clip_tiny_gap", "Architecture preset name or preset directory.")
flags.DEFINE_string("backend", None, "Keras backend (jax|tensorflow|torch); default KERAS_BACKEND.")
flags.DEFINE_string("data", "synthetic", "'synthetic', or a TFRecord file/dir/glob from synthetic.write_tfrecords.")
flags.DEFINE_integer("train_examples", 20000, "Synthetic training examples (cycled).")
flags.DEFINE_integer("eval_examples", 1000, "Held-out synthetic examples for evaluation.")
flags.DEFINE_integer("image_size", None, "Override the preset's image size.")
flags.DEFINE_integer("steps", 600, "Optimizer steps.")
flags.DEFINE_integer("steps_per_epoch", 100, "Steps between log lines.")
flags.DEFINE_integer("batch_size", 128, "Global batch size.")
flags.DEFINE_float("learning_rate", 1e-3, "Peak learning rate.")
flags.DEFINE_float("weight_decay", 0.1, "AdamW weight decay (matrices only).")
flags.DEFINE_integer("warmup_steps", 50, "Linear warm-up steps before cosine decay.")
flags.DEFINE_integer("vocabulary_size", 1000, "Upper bound on the learned WordPiece vocabulary.")
flags.DEFINE_integer("sequence_length", None, "Override the preset's caption length.")
flags.DEFINE_integer("local_negative_steps", 0, "Steps with local contrastive negatives before global ones (0: global throughout).")
flags.DEFINE_integer("local_batch_size", None, "Block size of local negatives (default: batch_size // 2 when local steps are asked for).")
flags.DEFINE_integer("seed", 0, "Seed for data order, initialisation and held-out split.")
flags.DEFINE_string("output_dir", None, "Where to write the preset and metrics (default runs/<preset>).")


def _set_backend():
    if FLAGS.backend:
        if "keras" in sys.modules:
            raise RuntimeError("--backend must be applied before keras is imported.")
        os.environ["KERAS_BACKEND"] = FLAGS.backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _training_data(synthetic, image_size):
    import tensorflow as tf

    if FLAGS.data == "synthetic":
        data = synthetic.synthetic_dataset(
            FLAGS.train_examples, seed=FLAGS.seed, image_size=image_size
        )
    else:
        data = synthetic.read_tfrecords(FLAGS.data)
    data = data.map(lambda e: {"images": e["image"], "captions": e["caption"]})
    return (
        data.cache()
        .shuffle(10000, seed=FLAGS.seed)
        .repeat()
        .batch(FLAGS.batch_size, drop_remainder=True)
        .prefetch(tf.data.AUTOTUNE)
    )


def _evaluate(model, synthetic, image_size):
    from keras_maeclip import evaluation

    results = {}
    # Zero-shot on single-object scenes, where each image has one true class.
    single = list(
        synthetic.synthetic_dataset(
            FLAGS.eval_examples, seed=FLAGS.seed + 1000, image_size=image_size,
            max_objects=1,
        ).batch(FLAGS.eval_examples).as_numpy_iterator()
    )[0]
    image_embeddings = evaluation.embed_images(model, single["image"])
    for task in ("object", "colour", "shape"):
        names = synthetic.CLASS_NAMES[task]
        classifier = evaluation.zero_shot_classifier(
            model, names, synthetic.PROMPT_TEMPLATES[task]
        )
        accuracy = evaluation.zero_shot_accuracy(
            image_embeddings, single[task], classifier, top_k=(1,)
        )["top1"]
        results[f"zero_shot/{task}/top1"] = accuracy
        results[f"zero_shot/{task}/chance"] = 1.0 / len(names)
    # Retrieval on held-out scenes of 1-3 objects with their own captions.
    scenes = list(
        synthetic.synthetic_dataset(
            FLAGS.eval_examples, seed=FLAGS.seed + 2000, image_size=image_size
        ).batch(FLAGS.eval_examples).as_numpy_iterator()
    )[0]
    retrieval = evaluation.retrieval_metrics(
        evaluation.embed_images(model, scenes["image"]),
        evaluation.embed_texts(model, [c.decode() for c in scenes["caption"]]),
        ks=(1, 5),
    )
    results.update({f"retrieval/{k}": v for k, v in retrieval.items()})
    results["retrieval/chance_R@1"] = 1.0 / FLAGS.eval_examples
    return results


def main(argv):
    del argv
    _set_backend()
    import keras

    from keras_maeclip.data import synthetic
    from keras_maeclip.models import (
        CLIP,
        CLIPPreprocessor,
        caption_tokenizer,
        image_converter,
        learn_vocabulary,
        preset_config,
    )

    keras.utils.set_random_seed(FLAGS.seed)
    output_dir = FLAGS.output_dir or os.path.join("runs", os.path.basename(FLAGS.preset.rstrip("/")))
    os.makedirs(output_dir, exist_ok=True)
    started = time.time()

    if os.path.isdir(FLAGS.preset):
        model = CLIP.from_preset(FLAGS.preset)
        image_size = model.backbone.image_encoder.image_size
    else:
        config = preset_config(FLAGS.preset)
        image_size = FLAGS.image_size or config["image_encoder"]["image_size"]
        sequence_length = FLAGS.sequence_length or config["text_encoder"]["sequence_length"]
        corpus = synthetic.captions(FLAGS.train_examples, seed=FLAGS.seed)
        tokenizer = caption_tokenizer(learn_vocabulary(corpus, FLAGS.vocabulary_size))
        preprocessor = CLIPPreprocessor(
            tokenizer, image_converter(image_size), sequence_length=sequence_length
        )
        schedule = {}
        if FLAGS.local_negative_steps:
            schedule = dict(
                local_steps=FLAGS.local_negative_steps,
                local_batch_size=FLAGS.local_batch_size or FLAGS.batch_size // 2,
            )
        model = CLIP.from_preset(
            FLAGS.preset, preprocessor=preprocessor, image_size=image_size, **schedule
        )
    model.compile(
        learning_rate=FLAGS.learning_rate,
        weight_decay=FLAGS.weight_decay,
        warmup_steps=FLAGS.warmup_steps,
        total_steps=FLAGS.steps,
    )
    print(
        f"backend={keras.config.backend()} preset={FLAGS.preset} "
        f"params={model.count_params():,} image_size={image_size} "
        f"batch={FLAGS.batch_size} steps={FLAGS.steps}",
        flush=True,
    )

    data = _training_data(synthetic, image_size)
    steps_per_epoch = min(FLAGS.steps_per_epoch, FLAGS.steps)
    epochs = -(-FLAGS.steps // steps_per_epoch)
    history = model.fit(data, epochs=epochs, steps_per_epoch=steps_per_epoch, verbose=2)
    train_seconds = time.time() - started

    preset_dir = os.path.join(output_dir, "preset")
    model.save_to_preset(preset_dir)
    results = {k: float(v[-1]) for k, v in history.history.items()}
    results.update(_evaluate(model, synthetic, image_size))
    results["seconds/train"] = train_seconds
    results["seconds/total"] = time.time() - started
    with open(os.path.join(output_dir, "metrics.json"), "w") as f:
        json.dump(results, f, indent=2, sort_keys=True)

    n = FLAGS.eval_examples
    print(f"\nZero-shot top-1 on {n} held-out single-object synthetic images:")
    print(f"  {'task':<8} {'classes':>7} {'top-1':>7} {'chance':>7}")
    for task in ("object", "colour", "shape"):
        classes = len(synthetic.CLASS_NAMES[task])
        print(
            f"  {task:<8} {classes:>7} {results[f'zero_shot/{task}/top1']:>7.3f} "
            f"{results[f'zero_shot/{task}/chance']:>7.3f}"
        )
    print(
        f"Retrieval on {n} held-out scenes (chance R@1 {1 / n:.3f}): "
        f"image→text R@1 {results['retrieval/image_to_text_R@1']:.3f}, "
        f"text→image R@1 {results['retrieval/text_to_image_R@1']:.3f}"
    )
    print(
        f"Trained in {train_seconds:.0f} s; preset saved to {preset_dir}; "
        f"metrics in {os.path.join(output_dir, 'metrics.json')}"
    )


if __name__ == "__main__":
    app.run(main)
