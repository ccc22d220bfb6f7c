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
(original / masked / reconstructed) for held-out images. With `--data`, a
share `--eval_fraction` of the records (by key hash) is held out of
training, and held-out losses, retrieval and reconstructions use those
records (zero-shot needs labels: `recipes/evaluate.py --labelled_data`). `recipes/evaluate.py`
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

from keras_maeclip.backend import fit_verbosity, select_backend

FLAGS = flags.FLAGS
flags.DEFINE_enum("model", "clip", ["clip", "maeclip", "m3ae", "mae"], "Which pretraining model.")
flags.DEFINE_string("preset", None, "Architecture preset name or preset directory (default: the model's tiny preset).")
flags.DEFINE_enum("pooling", None, ["gap", "max", "map"], "Pooling of both towers for clip/maeclip (default: the preset's).")
flags.DEFINE_string("backend", None, "Keras backend (jax|tensorflow|torch); default KERAS_BACKEND, else torch on a CPU, jax with a GPU/TPU (keras_maeclip.backend.default_backend).")
flags.DEFINE_string("data", "synthetic", "'synthetic', or files of --data_format (comma-separated paths / globs / dirs).")
flags.DEFINE_enum("data_format", "tfrecord", ["tfrecord", "csv", "webdataset", "folder"], "Format of --data files (see docs/data.md).")
flags.DEFINE_string("csv_img_key", "filepath", "csv: column of image paths.")
flags.DEFINE_string("csv_caption_key", "title", "csv: column of captions.")
flags.DEFINE_string("csv_separator", "\t", "csv: column separator ('\\t' or ',').")
flags.DEFINE_float("crop_scale_min", None, "Random-resized-crop minimum area for --data files (default 0.5; mae 0.2).")
flags.DEFINE_bool("validate_data", False, "Check the training data with TFDV first (statistics, schema, anomalies; report in <output_dir>/data_validation) and stop if it is not fit to train on.")
flags.DEFINE_string("validation_reference", None, "With --validate_data: a second split of --data_format checked against the training data's schema and for drift.")
flags.DEFINE_integer("validate_examples", 5000, "Records read by --validate_data per split.")
flags.DEFINE_bool("allow_outside_paths", False, "csv: accept image paths outside the manifest's folder (absolute paths, ../); refused by default so a manifest cannot read arbitrary files.")
flags.DEFINE_float("max_skip_fraction", 0.5, "Stop with an error once more than this share of the records read so far were bad (judged after 1000 records, or at the end of a pass); 1.0 never stops.")
flags.DEFINE_bool("strict_data", False, "Stop at the first bad record (with its key) instead of skipping and counting it.")
flags.DEFINE_integer("train_examples", 20000, "Synthetic training examples (cycled).")
flags.DEFINE_list("synthetic_sizes", None, "Object sizes of the synthetic scenes, training and held-out (small,large; default both). 'large' with --image_size=48 keeps the captioned object visible under 75 % masking in about 98 % of pairs (the run prints the share).")
flags.DEFINE_integer("max_train_records", None, "With --data: train on the first N records only, cycled in a reshuffled order (the study's data-size axis; per process under torchrun; default: all).")
flags.DEFINE_integer("eval_examples", 1000, "Held-out examples for evaluation (synthetic scenes, or records of --data).")
flags.DEFINE_float("eval_fraction", 0.05, "With --data: share of the records (by a hash of their key) held out of training; evaluation (held-out losses, retrieval, reconstructions) uses up to --eval_examples of them.")
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
flags.DEFINE_enum("loss", None, ["softmax", "sigmoid"], "clip/maeclip contrastive loss: softmax (InfoNCE, default) or sigmoid (SigLIP: learned temperature and bias, init t'=log 10, b=-10).")
flags.DEFINE_float("patch_dropout", None, "clip: FLIP patch dropout, the share of image patches dropped in training (all patches at evaluation; default 0).")
flags.DEFINE_integer("unmasked_tuning_steps", 0, "clip with --patch_dropout, or maeclip: the last N of --steps train on whole images and captions (FLIP's unmasked tuning; maeclip: contrastive loss only; the cosine schedule continues).")
flags.DEFINE_bool("lock_image", False, "clip/maeclip: freeze the image tower (LiT; open_clip --lock-image); see --lock_image_unlocked_blocks.")
flags.DEFINE_integer("lock_image_unlocked_blocks", 0, "With --lock_image: its last N transformer blocks (and final norm) keep training.")
flags.DEFINE_bool("lock_text", False, "clip/maeclip: freeze the text tower (open_clip --lock-text); see --lock_text_unlocked_blocks.")
flags.DEFINE_integer("lock_text_unlocked_blocks", 0, "With --lock_text: its last N transformer blocks (and final norm) keep training.")
flags.DEFINE_bool("lock_freeze_norms", False, "With --lock_image/--lock_text: also freeze the LayerNorms of the unlocked blocks.")
flags.DEFINE_float("image_mask_ratio", None, "Share of image patches masked (mae/m3ae/maeclip; default 0.75).")
flags.DEFINE_float("text_mask_ratio", None, "Share of caption tokens masked (maeclip default 0.15, m3ae 0.75).")
flags.DEFINE_float("image_loss_weight", None, "Weight of the pixel loss (maeclip default 0.05, m3ae 1.0).")
flags.DEFINE_float("text_loss_weight", None, "Weight of the token loss (maeclip and m3ae default 0.1).")
flags.DEFINE_enum("masking", None, ["random", "similarity"], "maeclip: how masked patches are chosen (default random).")
flags.DEFINE_float("similarity_temperature", None, "maeclip similarity masking: lower is more peaked (default 0.1).")
flags.DEFINE_enum("similarity_direction", None, ["mask_similar", "keep_similar"], "maeclip similarity masking: mask the caption-similar patches or keep them (default mask_similar).")
flags.DEFINE_enum("contrastive_view", None, ["masked", "full"], "maeclip: contrastive branch on the kept patches or a second full pass (default masked).")
flags.DEFINE_enum("contrastive_text_view", None, ["masked", "full"], "maeclip: contrastive text embedding from the masked caption or a second pass over the whole caption (default masked).")
flags.DEFINE_bool("norm_pix_loss", True, "Per-patch normalised pixel targets (MAE's norm_pix_loss).")
flags.DEFINE_integer("reconstructions", 8, "Held-out images in reconstructions.png for masked models (0: none).")
flags.DEFINE_integer("seed", 0, "Seed for data order, initialisation and held-out split.")
flags.DEFINE_enum("distribution", "auto", ["auto", "none", "data_parallel", "model_parallel"], "Multi-device training on the backend's own engine (docs/scaling.md): auto = data_parallel when there is more than one device (torch: when launched by torchrun).")
flags.DEFINE_integer("model_parallel_size", 2, "--distribution=model_parallel (JAX): devices per model replica.")
flags.DEFINE_integer("cpu_devices", None, "Split the CPU into N devices to try data parallelism without accelerators (JAX, TF; torch: torchrun --nproc_per_node=N).")
flags.DEFINE_string("tpu", None, "TensorFlow: TPU name or address for TPUStrategy ('local' on a TPU VM).")
flags.DEFINE_enum("precision", "float32", ["float32", "mixed_bfloat16"], "mixed_bfloat16: bfloat16 compute, float32 variables and losses (docs/scaling.md).")
flags.DEFINE_integer("gradient_accumulation_steps", 1, "Micro-batches of --batch_size averaged per optimizer update; --steps, --warmup_steps, --steps_per_epoch, --local_negative_steps and --checkpoint_every_steps stay in updates. Negatives come from one micro-batch.")
flags.DEFINE_integer("grad_cache_micro_batches", 1, "clip/maeclip: compute each --batch_size batch in N micro-batches (GradCache; open_clip --accum-freq): the negatives span the whole batch, the activations held are one micro-batch's; costs a second forward pass. 1: off. Not with --gradient_accumulation_steps, local negatives or data parallelism.")
flags.DEFINE_float("clipnorm", None, "Clip the global gradient norm to this value.")
flags.DEFINE_enum("remat", "none", ["none", "activations", "full"], "Rematerialise in the backward pass (keras.RematScope): activations (every backend) or full layers (torch only, not the masked models).")
flags.DEFINE_integer("checkpoint_every_steps", 100, "Back up weights, optimizer and data position every N steps in <output_dir>/backup; after a crash the same command resumes there (0: no backups). Deleted when the run completes.")
flags.DEFINE_integer("log_every_steps", 10, "TensorBoard batch-level scalars every N steps (0: per epoch only); logs in <output_dir>/tensorboard, epoch rows in <output_dir>/train_log.csv.")
flags.DEFINE_string("output_dir", None, "Where to write the preset and metrics (default runs/<preset>[_<pooling>]). One run at a time per folder (run.lock).")
flags.DEFINE_bool("fresh", False, "Delete <output_dir>/backup and start over instead of resuming it (e.g. after a refusal: the backup belongs to a run with other settings).")

# Flags that do not change what is trained: a backup resumes across them.
# Every other flag of this file is part of the run's fingerprint.
RUN_NEUTRAL_FLAGS = (
    "output_dir", "fresh", "log_every_steps", "checkpoint_every_steps", "reconstructions",
    "eval_examples", "validate_data", "validation_reference", "validate_examples",
    "distribution", "model_parallel_size", "cpu_devices", "tpu", "backend",
    # The same update in another memory budget: a run that ran out of memory
    # resumes with more micro-batches.
    "grad_cache_micro_batches",
)


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
    "loss": {"clip": "loss", "maeclip": "loss"},
    "patch_dropout": {"clip": "patch_dropout"},
    "image_mask_ratio": {"maeclip": "image_mask_ratio", "m3ae": "image_mask_ratio", "mae": "mask_ratio"},
    "text_mask_ratio": {"maeclip": "text_mask_ratio", "m3ae": "text_mask_ratio"},
    "image_loss_weight": {"maeclip": "image_loss_weight", "m3ae": "image_loss_weight"},
    "text_loss_weight": {"maeclip": "text_loss_weight", "m3ae": "text_loss_weight"},
    "masking": {"maeclip": "masking"},
    "similarity_temperature": {"maeclip": "similarity_temperature"},
    "similarity_direction": {"maeclip": "similarity_direction"},
    "contrastive_view": {"maeclip": "contrastive_view"},
    "contrastive_text_view": {"maeclip": "contrastive_text_view"},
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
    if FLAGS.patch_dropout:
        kwargs["seed"] = FLAGS.seed
    if FLAGS.unmasked_tuning_steps:
        if not FLAGS.patch_dropout and model != "maeclip":
            raise app.UsageError("--unmasked_tuning_steps ends a masked run: --model=maeclip, or --model=clip with --patch_dropout.")
        if not 0 < FLAGS.unmasked_tuning_steps < FLAGS.steps:
            raise app.UsageError(
                f"--unmasked_tuning_steps={FLAGS.unmasked_tuning_steps} must be between 0 and "
                f"--steps={FLAGS.steps} (they are the last steps of the run)."
            )
    if FLAGS.local_negative_steps:
        if model not in CONTRASTIVE_MODELS:
            raise app.UsageError(f"--local_negative_steps needs a contrastive model, not {model}.")
        kwargs.update(
            # The loss counts micro-batches (fit steps).
            local_steps=FLAGS.local_negative_steps * FLAGS.gradient_accumulation_steps,
            local_batch_size=FLAGS.local_batch_size,
        )
    return kwargs


def _check_run_flags():
    """One-line errors for flag values that would fail (or train nothing) later."""
    problems = []
    if FLAGS.image_mask_ratio is not None:
        off = FLAGS.image_loss_weight == 0 and FLAGS.model in ("maeclip", "m3ae")
        if not (0 < FLAGS.image_mask_ratio < 1 or (FLAGS.image_mask_ratio == 0 and off)):
            problems.append(
                f"--image_mask_ratio={FLAGS.image_mask_ratio} must be in (0, 1) (0 masks no patch: the "
                "image reconstruction loss is 0 at every step); e.g. --image_mask_ratio=0.75"
                + (" or --image_loss_weight=0" if FLAGS.model in ("maeclip", "m3ae") else "")
            )
    if FLAGS.text_mask_ratio is not None and not 0 <= FLAGS.text_mask_ratio <= 1:
        problems.append(f"--text_mask_ratio={FLAGS.text_mask_ratio} must be in [0, 1]; e.g. 0.15 (maeclip) or 0.75 (m3ae)")
    for name in ("steps", "steps_per_epoch", "batch_size", "train_examples"):
        if getattr(FLAGS, name) < 1:
            problems.append(f"--{name}={getattr(FLAGS, name)} must be >= 1")
    warmup = FLAGS.warmup_steps
    if isinstance(warmup, int) and (warmup < 0 or warmup >= FLAGS.steps):
        problems.append(
            f"--steps={FLAGS.steps} must exceed --warmup_steps={FLAGS.warmup_steps} (the linear warm-up); "
            "lower --warmup_steps or raise --steps"
        )
    if FLAGS.checkpoint_every_steps < 0:
        problems.append(f"--checkpoint_every_steps={FLAGS.checkpoint_every_steps} must be >= 0 (0: no backups)")
    if problems:
        raise app.UsageError("; ".join(problems) + ".")


def _run_config(setup):
    """The flags (and backend) a backup is bound to: all but RUN_NEUTRAL_FLAGS."""
    import keras

    module = FLAGS.find_module_defining_flag("model")
    names = [f.name for f in FLAGS.get_flags_for_module(module)] if module else []
    config = {name: getattr(FLAGS, name) for name in sorted(names) if name not in RUN_NEUTRAL_FLAGS}
    config["backend"] = keras.config.backend()
    return config


def _caption_error(records):
    """A one-line error for file data of which no record is usable."""
    import collections

    reasons = collections.Counter(r["error"].decode("utf-8", "replace") for r in records if r["error"])
    counts = ", ".join(f"{reason}: {n}" for reason, n in reasons.most_common()) or "no records at all"
    return SystemExit(
        f"--data={FLAGS.data} (--data_format={FLAGS.data_format}): none of the first "
        f"{len(records)} records is usable ({counts}), so there is nothing to train on. Check the "
        "paths and --data_format" + (", --csv_separator, --csv_img_key and --csv_caption_key"
                                     if FLAGS.data_format == "csv" else "") + " (docs/data.md)."
    )


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
        print(f"Learning a WordPiece vocabulary (at most {FLAGS.vocabulary_size} tokens) from "
              f"{len(corpus)} captions ...", flush=True)
        started = time.time()
        vocabulary = learn_vocabulary(corpus, FLAGS.vocabulary_size)
        print(f"Vocabulary: {len(vocabulary)} tokens in {time.time() - started:.0f} s.", flush=True)
        tokenizer = caption_tokenizer(vocabulary)
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

        records = synthetic.synthetic_dataset(FLAGS.validate_examples, seed=FLAGS.seed,
                                              image_size=_image_size(model), **_scene_options())
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
            paths[0], image_key=FLAGS.csv_img_key, caption_key=FLAGS.csv_caption_key, separator=_separator(),
            allow_outside_paths=FLAGS.allow_outside_paths,
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
        return synthetic.captions(FLAGS.train_examples, seed=FLAGS.seed, **_scene_options())
    from keras_maeclip.data import holdout

    records = holdout.split_records(_read_records(), FLAGS.eval_fraction, FLAGS.seed)[0]
    records = list(records.take(FLAGS.train_examples).as_numpy_iterator())
    captions = [r["caption"].decode("utf-8", errors="replace") for r in records if not r["error"]]
    if not any(c.strip() for c in captions):
        raise _caption_error(records)
    return captions


def _scene_options():
    """`synthetic_dataset` arguments of the --synthetic_* flags."""
    if not FLAGS.synthetic_sizes:
        return {}
    from keras_maeclip.data.synthetic import SIZES

    if not set(FLAGS.synthetic_sizes) <= set(SIZES):
        raise app.UsageError(f"--synthetic_sizes={','.join(FLAGS.synthetic_sizes)}: use {' and/or '.join(SIZES)}.")
    return {"sizes": tuple(FLAGS.synthetic_sizes)}


def _masked_view_visibility(model, image_size):
    """How often the masked view sees the captioned object (synthetic data only).

    The exact share of training scenes whose main object keeps at least one
    patch under random masking at the model's ratio
    (`keras_maeclip.evaluation.visibility`); `{}` for a model that sees
    every patch or for --data.
    """
    ratio = getattr(model, "image_mask_ratio", None) or getattr(model, "mask_ratio", None) \
        or getattr(model, "patch_dropout", 0.0)
    if FLAGS.data != "synthetic" or not ratio:
        return {}
    from keras_maeclip.evaluation.visibility import synthetic_visibility

    encoder = getattr(model.backbone, "image_encoder", model.backbone)
    share = synthetic_visibility(image_size, encoder.patch_size, ratio, seed=FLAGS.seed,
                                 examples=min(FLAGS.train_examples, 2000), **_scene_options())
    drawn = "at random" if getattr(model, "masking", "random") == "random" else \
        "at random; similarity masking draws otherwise"
    print(
        f"Masked view: the captioned object keeps a visible patch in {share['visible']:.1%} of "
        f"training scenes ({ratio:g} of {share['num_patches']} patches masked {drawn}; the object "
        f"touches {share['patches_touched']:.1f} on average).", flush=True,
    )
    return {"data/visible_object_share": share["visible"]}


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
            FLAGS.train_examples, seed=FLAGS.seed, image_size=image_size, **_scene_options()
        )
        data = setup.shard(data)
        data = data.map(lambda e: {"images": e["image"], "captions": e["caption"]}).cache()
        data = data.shuffle(10000, seed=FLAGS.seed).repeat()
        counter = None
    else:
        from keras_maeclip.data import augment, decoding, holdout

        counter = decoding.SkipCounter()
        shards = {}
        if setup.backend == "torch" and setup.num_processes > 1:
            shards = dict(num_workers=setup.num_processes, worker_index=setup.process_index)
        if FLAGS.max_train_records:
            # N distinct training records (file order), cached, reshuffled every pass.
            records = holdout.split_records(_read_records(**shards), FLAGS.eval_fraction, FLAGS.seed)[0]
            records = records.take(FLAGS.max_train_records).cache()
            records = records.shuffle(min(FLAGS.max_train_records, 10000), seed=FLAGS.seed).repeat()
        else:
            records = _read_records(shuffle_files=True, shuffle_buffer=10000, repeat=True, seed=FLAGS.seed, **shards)
            records = holdout.split_records(records, FLAGS.eval_fraction, FLAGS.seed)[0]
        data = decoding.decode_records(
            records, counter, strict=FLAGS.strict_data, data_name=FLAGS.data,
            max_skip_fraction=FLAGS.max_skip_fraction,
        )
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
        separator=_separator(), allow_outside_paths=FLAGS.allow_outside_paths, **options,
    )


_HELD_OUT_PAIRS = {}


def _held_out_records(image_size):
    """Up to --eval_examples decoded held-out records of --data (read once)."""
    if "pairs" not in _HELD_OUT_PAIRS:
        from keras_maeclip.data import decoding, holdout

        counter = decoding.SkipCounter()
        held = holdout.split_records(_read_records(), FLAGS.eval_fraction, FLAGS.seed)[1]
        _HELD_OUT_PAIRS["pairs"] = holdout.held_out_pairs(held, image_size, FLAGS.eval_examples, counter)
        _HELD_OUT_PAIRS["skips"] = counter
    return _HELD_OUT_PAIRS["pairs"]


def _held_out(synthetic, image_size, seed_offset, **kwargs):
    """One NumPy batch of held-out scenes, or of held-out records of --data."""
    if FLAGS.data != "synthetic":
        return _held_out_records(image_size)
    data = synthetic.synthetic_dataset(
        FLAGS.eval_examples, seed=FLAGS.seed + seed_offset, image_size=image_size,
        **_scene_options(), **kwargs
    )
    return next(data.batch(FLAGS.eval_examples).as_numpy_iterator())


def _held_out_losses(model, synthetic, image_size):
    """`model.evaluate` on held-out pairs: each loss term, prefixed `eval/`."""
    from keras_maeclip.evaluation.held_out import held_out_losses

    pairs = _held_out(synthetic, image_size, 3000)
    return held_out_losses(model, pairs["image"], pairs["caption"], batch_size=FLAGS.batch_size)


def _zero_shot_and_retrieval(model):
    """Zero-shot and retrieval on held-out synthetic scenes; retrieval only on --data."""
    from keras_maeclip.evaluation import suite

    if FLAGS.data != "synthetic":
        from keras_maeclip.evaluation.held_out import pair_retrieval

        pairs = _held_out_records(_image_size(model))
        return pair_retrieval(model, pairs["image"], pairs["caption"])
    config = suite.SuiteConfig(examples=FLAGS.eval_examples, seed=FLAGS.seed,
                               synthetic_sizes=FLAGS.synthetic_sizes)
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
    source = "held-out synthetic scenes" if FLAGS.data == "synthetic" else "held-out records of --data"
    title = f"{FLAGS.model} ({FLAGS.preset}{pooling}) after {FLAGS.steps} steps, {source}"
    return save_reconstruction_grid(model, inputs, path, max_images=FLAGS.reconstructions, title=title)


def _print_summary(results, model_name):
    n = FLAGS.eval_examples
    if FLAGS.data != "synthetic":
        n = int(results.get("eval/pairs", n))
        if model_name in CONTRASTIVE_MODELS:
            print(
                f"\nRetrieval on {n} held-out records of --data (chance R@1 {1 / n:.3f}): "
                f"image→text R@1 {results['retrieval/image_to_text_R@1']:.3f}, "
                f"text→image R@1 {results['retrieval/text_to_image_R@1']:.3f}"
            )
    elif model_name in CONTRASTIVE_MODELS:
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
    views = " (contrastive on whole images and captions, reconstruction on masked ones)" \
        if model_name == "maeclip" else ""
    print(f"Held-out losses on {n} scenes{views}: " + ", ".join(f"{k[5:]} {results[k]:.4f}" for k in terms))


def _fault_tolerance_callbacks(output_dir, setup, accumulation, run_config):
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
        run_config=run_config,
    )


def _check_backup(backup_dir, model, run_config):
    """Refuse, before training, a backup of another run (or a damaged one), naming the fix."""
    from keras_maeclip.training import BackupError, backup_mismatch

    try:
        differences = backup_mismatch(backup_dir, model, run_config)
    except BackupError as error:
        raise SystemExit(f"{error} With this recipe: --fresh.") from None
    if differences:
        raise SystemExit(
            f"{backup_dir} holds the backup of a run with other settings ({'; '.join(differences)}). "
            "Resume it with that run's flags, or start fresh: --fresh (deletes the backup) or "
            "another --output_dir."
        )


def _restore_after_divergence(model, callbacks, history, accumulation):
    """After a non-finite stop: the step of the last finite state put back, or `None`."""
    import math

    from keras_maeclip.training import StepBackupAndRestore, all_finite

    backup = next((c for c in callbacks if isinstance(c, StepBackupAndRestore)), None)
    losses = history.history.get("loss", [])
    diverged = (backup is not None and backup.nonfinite_step is not None) or not all_finite(model) or any(
        not math.isfinite(v) for v in losses
    )
    if not diverged:
        return False, None
    restored = backup.restore_last_finite() if backup is not None else None
    return True, None if restored is None else restored // accumulation


def _check_precision_flags():
    if FLAGS.gradient_accumulation_steps < 1:
        raise app.UsageError("--gradient_accumulation_steps must be >= 1.")
    _check_grad_cache_flags()
    if FLAGS.remat == "full" and FLAGS.model in MASKED_MODELS:
        raise app.UsageError(
            "--remat=full recomputes the forward pass, which redraws the masks of the masked "
            "models (wrong gradients); use --remat=activations."
        )


def _check_grad_cache_flags():
    k = FLAGS.grad_cache_micro_batches
    if k == 1:
        return
    if k < 1:
        raise app.UsageError(f"--grad_cache_micro_batches={k} must be >= 1 (1: off).")
    if FLAGS.model not in CONTRASTIVE_MODELS:
        raise app.UsageError(
            f"--grad_cache_micro_batches shares negatives across micro-batches: it applies to clip "
            f"and maeclip, not {FLAGS.model}; use --gradient_accumulation_steps."
        )
    if FLAGS.gradient_accumulation_steps > 1:
        raise app.UsageError(
            "--grad_cache_micro_batches and --gradient_accumulation_steps both split a batch; use "
            "one (GradCache keeps the whole --batch_size as negatives, accumulation does not)."
        )
    if FLAGS.local_negative_steps:
        raise app.UsageError("--grad_cache_micro_batches needs global negatives; drop --local_negative_steps.")
    if FLAGS.batch_size % k:
        raise app.UsageError(
            f"--batch_size={FLAGS.batch_size} must divide into --grad_cache_micro_batches={k} "
            f"equal micro-batches; e.g. --batch_size={FLAGS.batch_size // k * k or k}."
        )


def _use_grad_cache(model):
    """--grad_cache_micro_batches, on the model as fit will run it (after prepare_model)."""
    if FLAGS.grad_cache_micro_batches == 1:
        return
    from keras_maeclip.training import use_grad_cache

    try:
        use_grad_cache(model, FLAGS.grad_cache_micro_batches)
    except ValueError as error:
        raise app.UsageError(f"--grad_cache_micro_batches={FLAGS.grad_cache_micro_batches}: {error}") from None


def _check_data_flags():
    if FLAGS.max_train_records is not None and FLAGS.max_train_records < 1:
        raise app.UsageError(f"--max_train_records must be >= 1; got {FLAGS.max_train_records}.")
    if FLAGS.max_train_records and FLAGS.data == "synthetic":
        raise app.UsageError("--max_train_records limits --data files; for synthetic data use --train_examples.")
    if FLAGS.synthetic_sizes and FLAGS.data != "synthetic":
        raise app.UsageError("--synthetic_sizes shapes the synthetic scenes; it does not apply to --data files.")


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


def _configure_distribution(backend):
    """The backend's distribution engine for `--distribution` (docs/scaling.md)."""
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


def _lock_towers(model):
    """--lock_image / --lock_text, before compile (keras_maeclip.training.lock_tower)."""
    from keras_maeclip.training import lock_tower

    for tower in ("image", "text"):
        if getattr(FLAGS, f"lock_{tower}"):
            if FLAGS.model not in CONTRASTIVE_MODELS:
                raise app.UsageError(f"--lock_{tower} applies to clip and maeclip, not {FLAGS.model}.")
            frozen = lock_tower(
                model, tower, getattr(FLAGS, f"lock_{tower}_unlocked_blocks"), FLAGS.lock_freeze_norms
            )
            print(f"Locked the {tower} tower: {frozen} variables frozen.", flush=True)


def _unmasked_tuning(model, data, done, steps, setup, output_dir, history):
    """FLIP's unmasked tuning: `steps` more fit steps on whole images and captions.

    Continues the data stream after the `done` masked steps; the optimizer
    (and its cosine schedule) carries on. This short phase takes no
    step-level backups: the masked phase's backup is deleted when that phase
    completes, so a crash here restarts the run.
    """
    print(f"Unmasked tuning: {steps} steps on whole images and captions.", flush=True)
    model.set_unmasked_tuning(True)
    with setup.scope():
        tuned = model.fit(
            data.skip(done), epochs=1, steps_per_epoch=steps, shuffle=False,
            verbose=fit_verbosity(setup.is_chief),
        )
    for key, values in tuned.history.items():
        history.history.setdefault(key, []).extend(values)
    return history


def main(argv):
    del argv
    task_kwargs = _task_kwargs()  # flag errors before the slow imports
    _check_precision_flags()
    _check_run_flags()
    _check_data_flags()
    setup = _configure_distribution(select_backend(FLAGS.backend))
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
    lock = None
    if setup.is_chief:
        from keras_maeclip.training.run_lock import RunLock, RunLockedError

        try:
            lock = RunLock(output_dir, what=f"--output_dir={output_dir}").acquire()
        except RunLockedError as error:
            raise SystemExit(str(error)) from None
        if lock.took_over:
            print(f"Took over the lock of a run that died ({lock.took_over}).", flush=True)
    try:
        _train(model_cls, task_kwargs, setup, synthetic, output_dir)
    finally:
        if lock is not None:
            lock.release()


def _train(model_cls, task_kwargs, setup, synthetic, output_dir):
    import keras

    backup_dir = os.path.join(output_dir, "backup")
    if FLAGS.fresh and setup.is_chief and os.path.isdir(backup_dir):
        import shutil

        shutil.rmtree(backup_dir)
        print(f"--fresh: deleted the backup in {backup_dir}.", flush=True)
    started = time.time()

    from keras_maeclip.training import mixed_precision, remat_scope, resumed_step

    # Gradient accumulation: fit steps are micro-batches, flags count updates.
    accumulation = FLAGS.gradient_accumulation_steps
    remat = None if FLAGS.remat == "none" else FLAGS.remat
    with setup.scope(), mixed_precision(FLAGS.precision), remat_scope(remat):
        model = _build_model(model_cls, FLAGS.preset, synthetic, task_kwargs)
    _lock_towers(model)
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
        + (f"grad_cache_micro_batches={FLAGS.grad_cache_micro_batches} " if FLAGS.grad_cache_micro_batches > 1 else "")
        + f"distribution={setup.description}",
        flush=True,
    )
    visibility = _masked_view_visibility(model, image_size)

    if FLAGS.validate_data:
        _validate_data(model, synthetic, output_dir)
    if FLAGS.data != "synthetic" and setup.is_chief:
        # Read the held-out records now: too few of them stops the run before training.
        try:
            _held_out_records(image_size)
        except ValueError as error:
            raise app.UsageError(f"--eval_fraction={FLAGS.eval_fraction}: {error}") from None
    data, skips = _training_data(model, synthetic, image_size, setup)
    steps_per_epoch = min(FLAGS.steps_per_epoch, FLAGS.steps) * accumulation
    epochs = -(-FLAGS.steps * accumulation // steps_per_epoch)
    run_config = _run_config(setup)
    callbacks = _fault_tolerance_callbacks(output_dir, setup, accumulation, run_config)
    if callbacks and FLAGS.checkpoint_every_steps:
        _check_backup(backup_dir, model, run_config)
        # Data position: the batches the backup has trained on are skipped
        # (the stream is deterministic: docs/scaling.md).
        done = resumed_step(backup_dir)
        if done:
            print(f"Resuming from the backup at step {done // accumulation}: skipping {done} batches.", flush=True)
            data = data.skip(done)
    callbacks += _logging_callbacks(output_dir) if setup.is_chief else []
    if skips is not None:
        from keras_maeclip.data.decoding import SkipReport

        callbacks.append(SkipReport(skips))
    model = setup.prepare_model(model)
    _use_grad_cache(model)
    tuning = FLAGS.unmasked_tuning_steps * accumulation
    if tuning:
        # FLIP: the masked phase first, then the last steps unmasked.
        epochs = -(-(FLAGS.steps * accumulation - tuning) // steps_per_epoch)
    with setup.scope():
        history = model.fit(
            # shuffle=False: the tf.data pipeline shuffles (fit's own flag
            # does not apply to a dataset and only warns).
            data, epochs=epochs, steps_per_epoch=steps_per_epoch, shuffle=False,
            verbose=fit_verbosity(setup.is_chief), callbacks=callbacks,
        )
    if tuning:
        history = _unmasked_tuning(model, data, epochs * steps_per_epoch, tuning, setup, output_dir, history)
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
    diverged, restored_step = _restore_after_divergence(model, callbacks, history, accumulation)
    if diverged and restored_step is None:
        setup.close()
        raise SystemExit(
            "Training diverged (non-finite loss or weights) before any finite backup: no preset "
            f"written ({preset_dir} and metrics.json are left as they were). Start again with a "
            "lower --learning_rate, --clipnorm, a longer --warmup_steps or "
            "--checkpoint_every_steps > 0 (plus --fresh if a backup is refused)."
        )
    if diverged:
        print(f"Training diverged; evaluating and saving the last finite state (step {restored_step}).", flush=True)
    from keras_maeclip.training.run_outputs import finite_metrics, save_preset_atomically

    save_preset_atomically(model, preset_dir)
    results = {k: float(v[-1]) for k, v in history.history.items()}
    results.update({f"first_epoch/{k}": float(v[0]) for k, v in history.history.items()})
    results.update(_held_out_losses(model, synthetic, image_size))
    if FLAGS.data != "synthetic":
        # What evaluation ran on: the held-out records and the bad ones skipped.
        results["eval/pairs"] = len(_held_out_records(image_size)["image"])
        results.update({f"eval/skipped/{k}": v for k, v in _HELD_OUT_PAIRS["skips"].counts().items() if v})
    if FLAGS.model in CONTRASTIVE_MODELS:
        results.update(_zero_shot_and_retrieval(model))
    if FLAGS.model in MASKED_MODELS and FLAGS.reconstructions:
        _write_reconstructions(model, synthetic, image_size, os.path.join(output_dir, "reconstructions.png"))
    if skips is not None:
        results.update({f"data/skipped/{k}": v for k, v in skips.counts().items() if v})
        results["data/good_records"] = skips.good
    results.update(visibility)
    results["seconds/train"] = train_seconds
    results["seconds/total"] = time.time() - started
    if diverged:
        results["diverged"] = True
        results["preset_step"] = restored_step
    with open(os.path.join(output_dir, "metrics.json"), "w") as f:
        json.dump(finite_metrics(results), f, indent=2, sort_keys=True, allow_nan=False)

    _print_summary(results, FLAGS.model)
    print(
        f"Trained in {train_seconds:.0f} s; preset saved to {preset_dir}; "
        f"metrics in {os.path.join(output_dir, 'metrics.json')}"
    )
    setup.close()
    if diverged:
        raise SystemExit(
            f"Training diverged: the preset holds the last finite state (step {restored_step} of "
            f"{FLAGS.steps}); non-finite metrics are null in metrics.json "
            f"({finite_metrics(results).get('nonfinite_metrics')}). "
            "The backup is kept; to train again with other settings (a lower --learning_rate, "
            "--clipnorm) add --fresh."
        )


if __name__ == "__main__":
    app.run(main)
