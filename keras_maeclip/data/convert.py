r"""Converts image-caption data to TFRecord shards readable by `readers.read_tfrecords`.

    python -m keras_maeclip.data.convert --input_format=csv --input=train.tsv \
        --csv_img_key=filepath --csv_caption_key=title --output_dir=/data/tfr
    python -m keras_maeclip.data.convert --input_format=webdataset \
        --input='/data/wds/*.tar' --output_dir=/data/tfr --examples_per_shard=5000
    python -m keras_maeclip.data.convert --input_format=folder --input=/data/images \
        --output_dir=/data/tfr
    python -m keras_maeclip.data.convert --input_format=synthetic --num_examples=1000 \
        --image_size=64 --output_dir=/data/tfr

Input formats: ``csv`` (CSV / TSV manifests, `readers.read_csv`),
``webdataset`` (tar shards, `readers.read_webdataset`), ``folder`` (images
with same-stem ``.txt`` captions, `readers.read_folder`) and ``synthetic``
(the built-in shapes set, images stored as PNG). Records are read in a fixed
order and every one is put through the training decoder's checks
(`decoding.decode_record`: caption UTF-8 and not empty, image a readable
JPEG/PNG/WebP/GIF/BMP of at most ``--max_pixels``; one full decode per
record, ``--nocheck_records`` to turn it off), so no record that training
would skip is written; the skipped ones are counted by reason and printed
with an example key each. The rest are written by `readers.write_tfrecords`
as ``<prefix>-00000-of-000NN.tfrecord``. An ``--output_dir`` that already
holds shards of that prefix is refused unless ``--overwrite`` (which
replaces the old set). Manifest image paths outside the manifest's folder
are refused unless ``--allow_outside_paths``.

The flags live in this module's own `flags.FlagValues` (``FLAGS``), not in
absl's global one, so importing the module never clashes with other
programs' flags; `run` parses an argv and calls `main`.
"""

from absl import app, flags

from keras_maeclip.data import _cli

FLAGS = flags.FlagValues()
flags.DEFINE_enum(
    "input_format", None, ["csv", "webdataset", "folder", "synthetic"], "What --input holds.", flag_values=FLAGS
)
flags.DEFINE_list("input", [], "Input path(s), globs allowed (comma-separated); unused for synthetic.", flag_values=FLAGS)
flags.DEFINE_string("output_dir", None, "Where to write the TFRecord shards.", flag_values=FLAGS)
flags.DEFINE_integer("examples_per_shard", 1000, "Records per shard.", flag_values=FLAGS)
flags.DEFINE_string("prefix", "shard", "Shard file name prefix.", flag_values=FLAGS)
flags.DEFINE_string("csv_img_key", "filepath", "csv: column of image paths.", flag_values=FLAGS)
flags.DEFINE_string("csv_caption_key", "title", "csv: column of captions.", flag_values=FLAGS)
flags.DEFINE_string("csv_separator", "\\t", "csv: column separator ('\\t' or 'tab' for TSV, ',' for CSV).", flag_values=FLAGS)
flags.DEFINE_string("csv_key_column", None, "csv: column of keys (default: the image path).", flag_values=FLAGS)
flags.DEFINE_string(
    "csv_quoting", "auto", "csv: 'none' (every line a row, quotes are text), 'standard' (CSV quoting) or 'auto' "
    "(none for TSV, standard otherwise).", flag_values=FLAGS,
)
flags.DEFINE_bool(
    "allow_outside_paths", False, "csv: accept image paths outside the manifest's folder.", flag_values=FLAGS
)
flags.DEFINE_bool("overwrite", False, "Replace shards of --prefix already in --output_dir.", flag_values=FLAGS)
flags.DEFINE_bool(
    "check_records", True, "Skip (and count) records the training decoder would skip.", flag_values=FLAGS
)
flags.DEFINE_integer("max_pixels", None, "Largest image (width * height) kept; default the decoder's.",
                     flag_values=FLAGS)
flags.DEFINE_list("extra_keys", [], "Extra columns (csv) or member extensions (webdataset) to store.", flag_values=FLAGS)
flags.DEFINE_integer("num_examples", 1000, "synthetic: number of examples.", flag_values=FLAGS)
flags.DEFINE_integer("image_size", 64, "synthetic: image size.", flag_values=FLAGS)
flags.DEFINE_integer("seed", 0, "synthetic: dataset seed.", flag_values=FLAGS)
flags.mark_flags_as_required(["input_format", "output_dir"], flag_values=FLAGS)

_SEPARATORS = {"\\t": "\t", "tab": "\t", "comma": ","}


def synthetic_records(num_examples, seed=0, image_size=64):
    """Yields the synthetic set as raw records (PNG image bytes).

    Args:
        num_examples: int >= 1. Number of examples.
        seed: int >= 0, default 0. Dataset seed.
        image_size: int >= 16, default 64. Image size.

    Yields:
        Dicts with bytes "image" (PNG), "caption", "key" and "error" (b"").
    """
    import tensorflow as tf

    from keras_maeclip.data import synthetic

    for i in range(num_examples):
        example = synthetic.generate_example(i, seed=seed, image_size=image_size)
        yield {
            "image": tf.io.encode_png(example["image"]).numpy(),
            "caption": example["caption"].encode(),
            "key": example["key"].encode(),
            "error": b"",
        }


def _records():
    from keras_maeclip.data import readers

    fmt, inputs, extra = FLAGS.input_format, FLAGS.input, tuple(FLAGS.extra_keys)
    if fmt == "synthetic":
        return synthetic_records(FLAGS.num_examples, FLAGS.seed, FLAGS.image_size)
    if not inputs:
        raise app.UsageError(f"--input is required for --input_format={fmt}.")
    if fmt == "csv":
        return readers.read_csv(
            inputs,
            image_key=FLAGS.csv_img_key,
            caption_key=FLAGS.csv_caption_key,
            separator=_SEPARATORS.get(FLAGS.csv_separator, FLAGS.csv_separator),
            key_column=FLAGS.csv_key_column,
            extra_keys=extra,
            quoting=FLAGS.csv_quoting,
            allow_outside_paths=FLAGS.allow_outside_paths,
        )
    if fmt == "webdataset":
        return readers.read_webdataset(inputs, extra_keys=extra)
    if extra:
        raise app.UsageError("--extra_keys is not supported for --input_format=folder.")
    return readers.read_folder(inputs)


def main(argv):
    """Converts the input named by ``FLAGS`` (already parsed) to TFRecord shards.

    Args:
        argv: leftover command-line arguments; must be only the program name.

    Returns:
        A dict with "paths" (the written shards), "written" (records
        written) and "skipped" (reason -> count).
    """
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from keras_maeclip.data import decoding, readers

    max_pixels = decoding.DEFAULT_MAX_PIXELS if FLAGS.max_pixels is None else FLAGS.max_pixels
    counting = _Counting(_records(), FLAGS.check_records, max_pixels)
    try:
        paths, skipped = readers.write_tfrecords(
            counting, FLAGS.output_dir, examples_per_shard=FLAGS.examples_per_shard, prefix=FLAGS.prefix,
            overwrite=FLAGS.overwrite,
        )
    except ValueError as e:
        if "already holds" in str(e):
            raise app.UsageError(str(e)) from None
        raise
    written = counting.count - sum(skipped.values())
    print(f"wrote {written} records to {len(paths)} shards in {FLAGS.output_dir}")
    if skipped:
        print("skipped " + ", ".join(
            f"{reason}={n} (e.g. {counting.examples.get(reason, '?')!r})" for reason, n in sorted(skipped.items())
        ))
    return {"paths": paths, "written": written, "skipped": skipped, "examples": dict(counting.examples)}


class _Counting:
    """Iterates records (a dataset or an iterable), counting them and marking the ones training would skip."""

    def __init__(self, records, check, max_pixels):
        self.records, self.check, self.max_pixels = records, check, max_pixels
        self.count, self.examples = 0, {}

    def __iter__(self):
        import tensorflow as tf

        from keras_maeclip.data import decoding

        it = self.records.as_numpy_iterator() if isinstance(self.records, tf.data.Dataset) else self.records
        for record in it:
            self.count += 1
            error = record.get("error", b"")
            error = error.encode() if isinstance(error, str) else bytes(error)
            if not error and self.check:
                _, _, reason, _ = decoding.decode_record(
                    bytes(record["image"]), bytes(record["caption"]), b"", self.max_pixels
                )
                if reason is not None:
                    record, error = dict(record, error=reason.encode()), reason.encode()
            if error:
                key = record["key"]
                self.examples.setdefault(
                    error.decode("utf-8", "replace"), key.decode("utf-8", "replace") if isinstance(key, bytes) else key
                )
            yield record


def run(argv):
    """Parses ``argv`` (program name first) into ``FLAGS`` and runs `main`.

    Args:
        argv: list of str, e.g. ``["convert", "--input_format=synthetic", ...]``.

    Returns:
        What `main` returns.
    """
    return _cli.run(FLAGS, main, argv)


def _entry(argv):
    main(argv)  # app.run would hand main's return value to sys.exit


if __name__ == "__main__":
    app.run(_entry, flags_parser=_cli.flags_parser(FLAGS, __doc__))
