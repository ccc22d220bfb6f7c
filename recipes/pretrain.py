r"""Pretrain a model of the paper on image–caption data and evaluate it.

One entry point for every variant: `--model=clip|maeclip|m3ae|mae`, with
`--pooling=gap|max|map` for the contrastive models. Trains on the built-in
synthetic image–caption set unless `--data` points at your files
(`--data_format=tfrecord|csv|webdataset|folder`, see docs/data.md: bad
records are skipped and counted by reason, printed at the end and stored in
metrics.json, or stop the run with `--strict_data`; training images get a
random resized crop), then saves a keras-hub preset
(config, weights, tokenizer vocabulary) and a JSON of final metrics under
`--output_dir`. Contrastive models (CLIP, MAE-CLIP) also report zero-shot
accuracy on held-out synthetic images with chance beside it, and retrieval
recall; masked models (MAE, M3AE, MAE-CLIP) also write `reconstructions.png`
(original / masked / reconstructed) for held-out images. `recipes/evaluate.py`
runs the whole evaluation suite on the saved preset.

    KERAS_BACKEND=jax python recipes/pretrain.py            # tiny CLIP, 4–6 min
    python recipes/pretrain.py --model=maeclip --pooling=max --steps=300
    python recipes/pretrain.py --model=maeclip --masking=similarity \
        --contrastive_view=full --local_negative_steps=100
    python recipes/pretrain.py --model=m3ae --backend=torch
    python recipes/pretrain.py --model=mae --image_mask_ratio=0.75
    python recipes/pretrain.py --data='/data/wds/*.tar' --data_format=webdataset
    python recipes/pretrain.py --data=train.csv --data_format=csv --csv_separator=,

Several devices (docs/scaling.md): `--distribution=auto` (the default) uses
every device the backend sees (JAX `keras.distribution`, TF
`tf.distribute`); torch runs one process per device under torchrun:

    KERAS_BACKEND=jax python recipes/pretrain.py --cpu_devices=4   # try it on a CPU
    KERAS_BACKEND=jax python recipes/pretrain.py --distribution=model_parallel
    KERAS_BACKEND=torch torchrun --nproc_per_node=8 recipes/pretrain.py
"""

import json
import os
import time

from absl import app, flags

from keras_maeclip.backend import select_backend

FLAGS = flags.FLAGS
flags.DEFINE_enum("model", "clip", ["clip", "maeclip", "m3ae", "mae"], "Which pretraining model.")
flags.DEFINE_string("preset", None, "Architecture preset name or preset directory (default: the model's tiny preset).")
flags.DEFINE_enum("pooling", None, ["gap", "max", "map"], "Pooling of both towers for clip/maeclip (default: the preset's).")
flags.DEFINE_string("backend", None, "Keras backend (jax|tensorflow|torch); default KERAS_BACKEND.")
flags.DEFINE_string("data", "synthetic", "'synthetic', or files of --data_format (comma-separated paths / globs / dirs).")
flags.DEFINE_enum("data_format", "tfrecord", ["tfrecord", "csv", "webdataset", "folder"], "Format of --data files (see docs/data.md).")
flags.DEFINE_string("csv_img_key", "filepath", "csv: column of image paths.")
flags.DEFINE_string("csv_caption_key", "title", "csv: column of captions.")
flags.DEFINE_string("csv_separator", "\t", "csv: column separator ('\\t' or ',').")
flags.DEFINE_float("crop_scale_min", None, "Random-resized-crop minimum area for --data files (default 0.5; mae 0.2).")
flags.DEFINE_bool("validate_data", False, "Check the training data with TFDV first (statistics, schema, anomalies; report in <output_dir>/data_validation) and stop if it is not fit to train on.")
flags.DEFINE_string("validation_reference", None, "With --validate_data: a second split of --data_format checked against the training data's schema and for drift.")
flags.DEFINE_integer("validate_examples", 5000, "Records read by --validate_data per split.")
flags.DEFINE_bool("strict_data", False, "Stop at the first bad record (with its key) instead of skipping and counting it.")
flags.DEFINE_integer("train_examples", 20000, "Synthetic training examples (cycled).")
flags.DEFINE_integer("max_train_records", None, "With --data: train on the first N records only, cycled in a reshuffled order (the study's data-size axis; per process under torchrun; default: all).")
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
flags.DEFINE_integer("local_batch_size", None, "Block size of local negatives (default: each replica's batch; on one device batch_size // 2).")
flags.DEFINE_float("image_mask_ratio", None, "Share of image patches masked (mae/m3ae/maeclip; default 0.75).")
flags.DEFINE_float("text_mask_ratio", None, "Share of caption tokens masked (maeclip default 0.15, m3ae 0.75).")
flags.DEFINE_float("image_loss_weight", None, "Weight of the pixel loss (maeclip default 0.05, m3ae 1.0).")
flags.DEFINE_float("text_loss_weight", None, "Weight of the token loss (maeclip and m3ae default 0.1).")
flags.DEFINE_enum("masking", None, ["random", "similarity"], "maeclip: how masked patches are chosen (default random).")
flags.DEFINE_float("similarity_temperature", None, "maeclip similarity masking: lower is more peaked (default 0.1).")
flags.DEFINE_enum("contrastive_view", None, ["masked", "full"], "maeclip: contrastive branch on the kept patches or a second full pass (default masked).")
flags.DEFINE_bool("norm_pix_loss", True, "Per-patch normalised pixel targets (MAE's norm_pix_loss).")
flags.DEFINE_integer("reconstructions", 8, "Held-out images in reconstructions.png for masked models (0: none).")
flags.DEFINE_integer("seed", 0, "Seed for data order, initialisation and held-out split.")
flags.DEFINE_enum("distribution", "auto", ["auto", "none", "data_parallel", "model_parallel"], "Multi-device training on the backend's own engine (docs/scaling.md): auto = data_parallel when there is more than one device (torch: when launched by torchrun).")
flags.DEFINE_integer("model_parallel_size", 2, "--distribution=model_parallel (JAX): devices per model replica.")
flags.DEFINE_integer("cpu_devices", None, "Split the CPU into N devices to try data parallelism without accelerators (JAX, TF; torch: torchrun --nproc_per_node=N).")
flags.DEFINE_string("tpu", None, "TensorFlow: TPU name or address for TPUStrategy ('local' on a TPU VM).")
flags.DEFINE_enum("precision", "float32", ["float32", "mixed_bfloat16"], "mixed_bfloat16: bfloat16 compute, float32 variables and losses (docs/scaling.md).")
flags.DEFINE_integer("gradient_accumulation_steps", 1, "Micro-batches of --batch_size averaged per optimizer update; --steps, --warmup_steps, --steps_per_epoch, --local_negative_steps and --checkpoint_every_steps stay in updates. Negatives come from one micro-batch.")
flags.DEFINE_float("clipnorm", None, "Clip the global gradient norm to this value.")
flags.DEFINE_enum("remat", "none", ["none", "activations", "full"], "Rematerialise in the backward pass (keras.RematScope): activations (every backend) or full layers (torch only, not the masked models).")
flags.DEFINE_integer("checkpoint_every_steps", 100, "Back up weights, optimizer and data position every N steps in <output_dir>/backup; after a crash the same command resumes there (0: no backups). Deleted when the run completes.")
flags.DEFINE_integer("log_every_steps", 10, "TensorBoard batch-level scalars every N steps (0: per epoch only); logs in <output_dir>/tensorboard, epoch rows in <output_dir>/train_log.csv.")
flags.DEFINE_string("output_dir", None, "Where to write the preset and metrics (default runs/<preset>[_<pooling>]).")


DEFAULT_PRESETS = {
    "clip": "clip_tiny_gap",
    "maeclip": "maeclip_tiny_gap",
    "m3ae": "m3ae_tiny",
    "mae": "mae_tiny",
}
CONTRASTIVE_MODELS = ("clip", "maeclip")
MASKED_MODELS = ("maeclip", "m3ae", "mae")
# Flag → task argument, for the models that take it.
TASK_FLAGS = {
    "image_mask_ratio": {"maeclip": "image_mask_ratio", "m3ae": "image_mask_ratio", "mae": "mask_ratio"},
    "text_mask_ratio": {"maeclip": "text_mask_ratio", "m3ae": "text_mask_ratio"},
    "image_loss_weight": {"maeclip": "image_loss_weight", "m3ae": "image_loss_weight"},
    "text_loss_weight": {"maeclip": "text_loss_weight", "m3ae": "text_loss_weight"},
    "masking": {"maeclip": "masking"},
    "similarity_temperature": {"maeclip": "similarity_temperature"},
    "contrastive_view": {"maeclip": "contrastive_view"},
}


def _task_kwargs():
    """The set flags as task arguments of `--model`; a flag it lacks is an error."""
    model = FLAGS.model
    kwargs = {}
    for flag, targets in TASK_FLAGS.items():
        value = getattr(FLAGS, flag)
        if value is None:
            continue
        if model not in targets:
            raise app.UsageError(
                f"--{flag} does not apply to --model={model}; it applies to "
                f"{', '.join(sorted(targets))}."
            )
        kwargs[targets[model]] = value
    if FLAGS.pooling and model not in CONTRASTIVE_MODELS:
        raise app.UsageError(f"--pooling applies to clip and maeclip, not {model}.")
    if model in MASKED_MODELS:
        kwargs.update(norm_pix_loss=FLAGS.norm_pix_loss, seed=FLAGS.seed)
    if FLAGS.local_negative_steps:
        if model not in CONTRASTIVE_MODELS:
            raise app.UsageError(f"--local_negative_steps needs a contrastive model, not {model}.")
        kwargs.update(
            # The loss counts micro-batches (fit steps).
            local_steps=FLAGS.local_negative_steps * FLAGS.gradient_accumulation_steps,
            local_batch_size=FLAGS.local_batch_size,
        )
    return kwargs


def _build_model(model_cls, preset, synthetic, task_kwargs):
    """A named preset sized to the flags with a fresh vocabulary, or a saved preset."""
    from keras_maeclip.models import (
        ImageTextPreprocessor,
        caption_tokenizer,
        image_converter,
        learn_vocabulary,
        preset_sizes,
    )

    if os.path.isdir(preset):
        # A saved preset keeps its architecture and task settings.
        fixed = [f for f in ("pooling", "image_size", "sequence_length", *TASK_FLAGS) if getattr(FLAGS, f)]
        fixed += ["local_negative_steps"] if FLAGS.local_negative_steps else []
        if fixed:
            raise app.UsageError(
                f"--{', --'.join(fixed)} change a named preset; {preset} is a saved one, "
                "whose settings are kept. Drop the flags or start from a preset name."
            )
        return model_cls.from_preset(preset)
    overrides = {}
    if FLAGS.pooling:
        overrides.update(image_pooling=FLAGS.pooling, text_pooling=FLAGS.pooling)
    image_size, sequence_length = preset_sizes(preset)
    image_size = FLAGS.image_size or image_size
    overrides["image_size"] = image_size
    if sequence_length is not None:
        corpus = _caption_corpus(synthetic)
        tokenizer = caption_tokenizer(learn_vocabulary(corpus, FLAGS.vocabulary_size))
        overrides["preprocessor"] = ImageTextPreprocessor(
            tokenizer, image_converter(image_size),
            sequence_length=FLAGS.sequence_length or sequence_length,
        )
    return model_cls.from_preset(preset, **overrides, **task_kwargs)


def _validate_data(model, synthetic, output_dir):
    """TFDV statistics / schema / anomalies of the training data; stops on anomalies."""
    from keras_maeclip.data import validate

    if FLAGS.data == "synthetic":
        import tensorflow as tf

        records = synthetic.synthetic_dataset(FLAGS.validate_examples, seed=FLAGS.seed, image_size=_image_size(model))
        records = records.map(
            lambda e: {"image": tf.io.encode_png(e["image"]), "caption": e["caption"], "key": e["key"], "error": ""}
        )
    else:
        records = _read_records()
    reference = None
    if FLAGS.validation_reference:
        from keras_maeclip.data import readers

        read = {"tfrecord": readers.read_tfrecords, "webdataset": readers.read_webdataset,
                "folder": readers.read_folder}.get(FLAGS.data_format)
        paths = FLAGS.validation_reference.split(",")
        reference = read(paths) if read else readers.read_csv(
            paths[0], image_key=FLAGS.csv_img_key, caption_key=FLAGS.csv_caption_key, separator=_separator()
        )
    tokenizer = model.preprocessor.tokenizer if model.preprocessor is not None else None
    result = validate.validate_data(
        records, reference, tokenizer=tokenizer, output_dir=os.path.join(output_dir, "data_validation"),
        max_examples=FLAGS.validate_examples,
    )
    print(result.summary, flush=True)
    if result.anomalies:
        lines = "\n".join(f"  {split}/{feature}: {what}" for split, feature, what in result.anomalies)
        raise SystemExit(
            f"--validate_data: the data is not fit to train on ({len(result.anomalies)} anomalies; report in "
            f"{result.paths.get('statistics_html')}):\n{lines}"
        )
    print(f"--validate_data: no anomalies; report in {result.paths.get('statistics_html')}", flush=True)


def _separator():
    return "\t" if FLAGS.csv_separator in ("\\t", "tab") else FLAGS.csv_separator


def _caption_corpus(synthetic):
    """The captions the WordPiece vocabulary is learned from (`--train_examples` of them)."""
    if FLAGS.data == "synthetic":
        return synthetic.captions(FLAGS.train_examples, seed=FLAGS.seed)
    records = _read_records().take(FLAGS.train_examples)
    return [
        r["caption"].decode("utf-8", errors="replace")
        for r in records.as_numpy_iterator()
        if not r["error"]
    ]


def _image_size(model):
    backbone = model.backbone
    encoder = getattr(backbone, "image_encoder", backbone)
    return encoder.image_size


def _as_inputs(model, data, image_size):
    """Map a batched `{"images", "captions"}` dataset to what `fit` takes.

    Models with a preprocessor take the raw batch (keras-hub maps it); MAE
    takes `{"images"}` normalised here.
    """
    if model.preprocessor is not None:
        return data
    from keras_maeclip.models import image_converter

    converter = image_converter(image_size)
    return data.map(lambda b: {"images": converter(b["images"])})


def _training_data(model, synthetic, image_size, setup):
    """Batched `{"images", "captions"}` for `fit`, and the skip counter of file data.

    Under torch DDP each process reads its own share of the data and
    batches `batch_size / processes` of it; JAX and TF batch the global
    batch and their engines split it.
    """
    import tensorflow as tf

    if FLAGS.data == "synthetic":
        data = synthetic.synthetic_dataset(
            FLAGS.train_examples, seed=FLAGS.seed, image_size=image_size
        )
        data = setup.shard(data)
        data = data.map(lambda e: {"images": e["image"], "captions": e["caption"]}).cache()
        data = data.shuffle(10000, seed=FLAGS.seed).repeat()
        counter = None
    else:
        from keras_maeclip.data import augment, decoding

        counter = decoding.SkipCounter()
        shards = {}
        if setup.backend == "torch" and setup.num_processes > 1:
            shards = dict(num_workers=setup.num_processes, worker_index=setup.process_index)
        if FLAGS.max_train_records:
            # N distinct records (file order), cached, reshuffled every pass.
            records = _read_records(**shards).take(FLAGS.max_train_records).cache()
            records = records.shuffle(min(FLAGS.max_train_records, 10000), seed=FLAGS.seed).repeat()
        else:
            records = _read_records(shuffle_files=True, shuffle_buffer=10000, repeat=True, seed=FLAGS.seed, **shards)
        data = decoding.decode_records(records, counter, strict=FLAGS.strict_data)
        default_scale = augment.MAE_CROP_SCALE if FLAGS.model == "mae" else augment.CLIP_CROP_SCALE
        scale = (FLAGS.crop_scale_min, 1.0) if FLAGS.crop_scale_min else default_scale
        data = augment.augment_records(data, image_size, training=True, scale=scale, seed=FLAGS.seed)
        data = data.map(lambda e: {"images": e["image"], "captions": e["caption"]})
    data = data.batch(setup.process_batch_size(FLAGS.batch_size), drop_remainder=True)
    return _as_inputs(model, data, image_size).prefetch(tf.data.AUTOTUNE), counter


def _read_records(**options):
    """Raw records of `--data` in `--data_format` (keras_maeclip.data.readers)."""
    from keras_maeclip.data import readers

    paths = FLAGS.data.split(",")
    if FLAGS.data_format == "tfrecord":
        return readers.read_tfrecords(paths, **options)
    if FLAGS.data_format == "webdataset":
        return readers.read_webdataset(paths, **options)
    if FLAGS.data_format == "folder":
        return readers.read_folder(paths, **options)
    if len(paths) != 1:
        raise app.UsageError(f"--data_format=csv takes one manifest; got {len(paths)} paths.")
    return readers.read_csv(
        paths[0], image_key=FLAGS.csv_img_key, caption_key=FLAGS.csv_caption_key,
        separator=_separator(), **options,
    )


def _held_out(synthetic, image_size, seed_offset, **kwargs):
    """One NumPy batch of held-out synthetic scenes."""
    data = synthetic.synthetic_dataset(
        FLAGS.eval_examples, seed=FLAGS.seed + seed_offset, image_size=image_size, **kwargs
    )
    return next(data.batch(FLAGS.eval_examples).as_numpy_iterator())


def _held_out_losses(model, synthetic, image_size):
    """`model.evaluate` on held-out scenes: each loss term, prefixed `eval/`."""
    import tensorflow as tf

    scenes = _held_out(synthetic, image_size, 3000)
    data = tf.data.Dataset.from_tensor_slices(
        {"images": scenes["image"], "captions": scenes["caption"]}
    ).batch(min(FLAGS.batch_size, FLAGS.eval_examples))
    results = model.evaluate(_as_inputs(model, data, image_size), verbose=0, return_dict=True)
    return {f"eval/{k}": float(v) for k, v in results.items()}


def _zero_shot_and_retrieval(model):
    """The evaluation suite's zero-shot and retrieval on held-out synthetic scenes."""
    from keras_maeclip.evaluation import suite

    config = suite.SuiteConfig(examples=FLAGS.eval_examples, seed=FLAGS.seed)
    return {**suite.zero_shot(model, config), **suite.retrieval(model, config)}


def _write_reconstructions(model, synthetic, image_size, path):
    from keras_maeclip.evaluation import save_reconstruction_grid
    from keras_maeclip.models import image_converter

    scenes = _held_out(synthetic, image_size, 4000)
    raw = {
        "images": scenes["image"][: FLAGS.reconstructions],
        "captions": scenes["caption"][: FLAGS.reconstructions],
    }
    if model.preprocessor is not None:
        inputs = model.preprocessor(raw)
    else:
        inputs = {"images": image_converter(image_size)(raw["images"].astype("float32"))}
    pooling = f", {FLAGS.pooling} pooling" if FLAGS.pooling else ""
    title = f"{FLAGS.model} ({FLAGS.preset}{pooling}) after {FLAGS.steps} steps, held-out synthetic scenes"
    return save_reconstruction_grid(model, inputs, path, max_images=FLAGS.reconstructions, title=title)


def _print_summary(results, model_name):
    n = FLAGS.eval_examples
    if model_name in CONTRASTIVE_MODELS:
        print(f"\nZero-shot top-1 on {n} held-out single-object synthetic images:")
        print(f"  {'task':<8} {'classes':>7} {'top-1':>7} {'chance':>7}")
        for task in ("object", "colour", "shape"):
            classes = round(1 / results[f"zero_shot/{task}/chance"])
            print(
                f"  {task:<8} {classes:>7} {results[f'zero_shot/{task}/top1']:>7.3f} "
                f"{results[f'zero_shot/{task}/chance']:>7.3f}"
            )
        print(
            f"Retrieval on {n} held-out scenes (chance R@1 {1 / n:.3f}): "
            f"image→text R@1 {results['retrieval/image_to_text_R@1']:.3f}, "
            f"text→image R@1 {results['retrieval/text_to_image_R@1']:.3f}"
        )
    terms = sorted(k for k in results if k.startswith("eval/") and k.endswith("loss"))
    print(f"Held-out losses on {n} scenes: " + ", ".join(f"{k[5:]} {results[k]:.4f}" for k in terms))


def _fault_tolerance_callbacks(output_dir, setup, accumulation):
    """Step-level backup + exact resume, and a NaN stop that keeps the last good backup."""
    import keras

    from keras_maeclip.training import fault_tolerance_callbacks

    if not FLAGS.checkpoint_every_steps:
        return [keras.callbacks.TerminateOnNaN()]
    return fault_tolerance_callbacks(
        os.path.join(output_dir, "backup"),
        save_every_steps=FLAGS.checkpoint_every_steps * accumulation,
        # One process writes the shared backup; the others only restore it.
        write=setup.is_chief,
    )


def _check_precision_flags():
    if FLAGS.gradient_accumulation_steps < 1:
        raise app.UsageError("--gradient_accumulation_steps must be >= 1.")
    if FLAGS.remat == "full" and FLAGS.model in MASKED_MODELS:
        raise app.UsageError(
            "--remat=full recomputes the forward pass, which redraws the masks of the masked "
            "models (wrong gradients); use --remat=activations."
        )


def _check_data_flags():
    if FLAGS.max_train_records is not None and FLAGS.max_train_records < 1:
        raise app.UsageError(f"--max_train_records must be >= 1; got {FLAGS.max_train_records}.")
    if FLAGS.max_train_records and FLAGS.data == "synthetic":
        raise app.UsageError("--max_train_records limits --data files; for synthetic data use --train_examples.")


def _logging_callbacks(output_dir):
    """Throughput (samples/s, per device, step time, ETA, TFLOP/s) then its loggers."""
    import keras

    from keras_maeclip.training import Throughput

    return [
        Throughput(global_batch_size=FLAGS.batch_size),
        keras.callbacks.CSVLogger(os.path.join(output_dir, "train_log.csv"), append=True),
        keras.callbacks.TensorBoard(
            os.path.join(output_dir, "tensorboard"),
            update_freq=FLAGS.log_every_steps or "epoch",
            write_graph=False,
        ),
    ]


def _configure_distribution():
    """The backend's distribution engine for `--distribution` (docs/scaling.md)."""
    backend = os.environ["KERAS_BACKEND"]
    if FLAGS.cpu_devices and backend == "torch":
        raise app.UsageError("--cpu_devices: on torch start N processes with torchrun --nproc_per_node=N.")
    if FLAGS.cpu_devices and backend == "jax":
        # Read when JAX starts its CPU backend, i.e. before the first device query.
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={FLAGS.cpu_devices}"
        ).strip()
    from keras_maeclip.training.distribution import configure_distribution

    return configure_distribution(
        FLAGS.distribution,
        model_parallel_size=FLAGS.model_parallel_size,
        tpu=FLAGS.tpu,
        cpu_devices=FLAGS.cpu_devices if backend == "tensorflow" else None,
    )


def main(argv):
    del argv
    task_kwargs = _task_kwargs()  # flag errors before the slow imports
    _check_precision_flags()
    _check_data_flags()
    select_backend(FLAGS.backend)
    setup = _configure_distribution()
    import keras

    from keras_maeclip.data import synthetic
    from keras_maeclip.models import CLIP, M3AE, MAE, MAECLIP

    if "local_steps" in task_kwargs and task_kwargs["local_batch_size"] is None and setup.num_replicas == 1:
        # One device: blocks of half the batch stand in for two replicas.
        task_kwargs["local_batch_size"] = FLAGS.batch_size // 2

    model_cls = {"clip": CLIP, "maeclip": MAECLIP, "m3ae": M3AE, "mae": MAE}[FLAGS.model]
    FLAGS.preset = FLAGS.preset or DEFAULT_PRESETS[FLAGS.model]
    keras.utils.set_random_seed(FLAGS.seed)
    preset_name = os.path.basename(FLAGS.preset.rstrip("/"))
    run_name = preset_name + (f"_{FLAGS.pooling}" if FLAGS.pooling else "")
    output_dir = FLAGS.output_dir or os.path.join("runs", run_name)
    os.makedirs(output_dir, exist_ok=True)
    started = time.time()

    from keras_maeclip.training import mixed_precision, remat_scope, resumed_step

    # Gradient accumulation: fit steps are micro-batches, flags count updates.
    accumulation = FLAGS.gradient_accumulation_steps
    remat = None if FLAGS.remat == "none" else FLAGS.remat
    with setup.scope(), mixed_precision(FLAGS.precision), remat_scope(remat):
        model = _build_model(model_cls, FLAGS.preset, synthetic, task_kwargs)
    with setup.scope():
        model.compile(
            learning_rate=FLAGS.learning_rate,
            weight_decay=FLAGS.weight_decay,
            warmup_steps=FLAGS.warmup_steps * accumulation,
            total_steps=FLAGS.steps * accumulation,
            global_clipnorm=FLAGS.clipnorm,
            gradient_accumulation_steps=accumulation if accumulation > 1 else None,
        )
    image_size = _image_size(model)
    print(
        f"backend={keras.config.backend()} model={FLAGS.model} preset={FLAGS.preset} "
        f"params={model.count_params():,} image_size={image_size} "
        f"batch={FLAGS.batch_size}x{accumulation} steps={FLAGS.steps} precision={FLAGS.precision} "
        f"distribution={setup.description}",
        flush=True,
    )

    if FLAGS.validate_data:
        _validate_data(model, synthetic, output_dir)
    data, skips = _training_data(model, synthetic, image_size, setup)
    steps_per_epoch = min(FLAGS.steps_per_epoch, FLAGS.steps) * accumulation
    epochs = -(-FLAGS.steps * accumulation // steps_per_epoch)
    callbacks = _fault_tolerance_callbacks(output_dir, setup, accumulation)
    if callbacks and FLAGS.checkpoint_every_steps:
        # Data position: the batches the backup has trained on are skipped
        # (the stream is deterministic: docs/scaling.md).
        done = resumed_step(os.path.join(output_dir, "backup"))
        if done:
            print(f"Resuming from the backup at step {done // accumulation}: skipping {done} batches.", flush=True)
            data = data.skip(done)
    callbacks += _logging_callbacks(output_dir) if setup.is_chief else []
    if skips is not None:
        from keras_maeclip.data.decoding import SkipReport

        callbacks.append(SkipReport(skips))
    model = setup.prepare_model(model)
    with setup.scope():
        history = model.fit(
            data, epochs=epochs, steps_per_epoch=steps_per_epoch,
            verbose=2 if setup.is_chief else 0, callbacks=callbacks,
        )
    train_seconds = time.time() - started
    if not setup.is_chief:
        # The chief process saves and evaluates.
        setup.close()
        return
    if setup.backend == "jax":
        # Evaluate on the trained (replicated) weights without batch sharding:
        # held-out sets need not split over the devices.
        keras.distribution.set_distribution(None)

    preset_dir = os.path.join(output_dir, "preset")
    model.save_to_preset(preset_dir)
    results = {k: float(v[-1]) for k, v in history.history.items()}
    results.update({f"first_epoch/{k}": float(v[0]) for k, v in history.history.items()})
    results.update(_held_out_losses(model, synthetic, image_size))
    if FLAGS.model in CONTRASTIVE_MODELS:
        results.update(_zero_shot_and_retrieval(model))
    if FLAGS.model in MASKED_MODELS and FLAGS.reconstructions:
        _write_reconstructions(model, synthetic, image_size, os.path.join(output_dir, "reconstructions.png"))
    if skips is not None:
        results.update({f"data/skipped/{k}": v for k, v in skips.counts().items() if v})
        results["data/good_records"] = skips.good
    results["seconds/train"] = train_seconds
    results["seconds/total"] = time.time() - started
    with open(os.path.join(output_dir, "metrics.json"), "w") as f:
        json.dump(results, f, indent=2, sort_keys=True)

    _print_summary(results, FLAGS.model)
    print(
        f"Trained in {train_seconds:.0f} s; preset saved to {preset_dir}; "
        f"metrics in {os.path.join(output_dir, 'metrics.json')}"
    )
    setup.close()


if __name__ == "__main__":
    app.run(main)
