r"""Dataset validation with TensorFlow Data Validation: statistics, schema, anomalies, drift.

Turns raw image-caption records (the contract of `keras_maeclip.data.readers`)
into one row of cheap per-record measurements, computes TFDV statistics over
them, infers a schema from the training split, and checks splits against it:

```python
result = validate_data(readers.read_tfrecords("train/"), readers.read_tfrecords("eval/"),
                       tokenizer=caption_tokenizer("vocab.txt"), output_dir="/tmp/validation")
print(result.summary)          # counts, caption lengths, OOV, sizes, formats, failures
print(result.anomalies)        # [("eval", "width", "High approximate Jensen-Shannon ..."), ...]
```

    python -m keras_maeclip.data.validate --input_format=tfrecord --input=train/ \
        --eval_input=eval/ --vocabulary=vocab.txt --output_dir=/tmp/validation

The CLI prints the summary and the anomalies, writes ``schema.pbtxt``,
``statistics.html`` and ``summary.txt`` to ``--output_dir`` and exits with
status 1 when there is any anomaly.

Per-record features (`record_features`)
---------------------------------------
``caption_chars`` (characters of the UTF-8 caption, invalid bytes replaced,
surrounding whitespace stripped, as the decoder keeps it), ``caption_tokens``
and ``oov_rate`` (with a tokenizer: the share of ``[UNK]`` among the caption's
tokens; missing for a caption of no token), ``width``, ``height``, ``aspect``
(width / height), ``channels`` (bands of the stored image: 1 grayscale or
palette, 2 grayscale + alpha, 3 RGB, 4 RGBA / CMYK), ``format`` (from the
magic bytes: JPEG, PNG, WEBP, GIF, BMP, or UNKNOWN), ``decode_ok`` (1/0) and
``decode_error`` (the `keras_maeclip.data.decoding.SKIP_REASONS` reason the
decoder would skip the record for, ``""`` when it decodes), ``key``,
``duplicate_key`` and ``duplicate_image`` (1 for the second and later
records with the same key / the same image bytes by SHA-1, so their sums
count the redundant records).

Numeric features are float columns, NaN where the value is MISSING (TFDV
counts NaN as missing): the image features when the header cannot be read
(empty, unknown or corrupt header), the caption features when the reader
reported an error and the caption is empty (an absent caption). ``format`` is
missing when the image bytes are empty. ``key`` is kept in the DataFrame but
left out of the statistics (unique strings only bloat them).

Cost: the image header is read with PIL (no pixels decoded) for the sizes,
and every record is also fully decoded once with
`keras_maeclip.data.decoding.decode_record` to find the same failures the
training pipeline would skip: about one image decode per record (a few ms
for a web-sized JPEG) in a single Python thread. Use ``max_examples`` to
validate a prefix of a large set. TFDV statistics are computed in memory
from the DataFrame (no Beam pipeline): tens of milliseconds for thousands
of rows; importing TFDV takes several seconds, so it is imported lazily.

Where TFDV runs
---------------
Statistics, schema, anomalies and the report are the TFDV step,
`keras_maeclip.data.tfdv_step`: in this process when TFDV imports here
(``pip install keras-maeclip[validate]``, glibc >= 2.39), else in the
separate TFDV environment that ``make validate-env`` builds
(``.venv-validate``; ``$KERAS_MAECLIP_TFDV_PYTHON`` names another), one
process per `validate_data` call. Outputs, flags and errors are the same.

Schema and checks (`infer_schema`, `validate`)
----------------------------------------------
The schema is TFDV's inferred schema of the TRAIN split with these changes:

* No fixed feature shape, so a missing value is judged by ``presence``.
* ``presence.min_fraction = 1 - max_bad_fraction`` for the image and caption
  features: more than that share of records without a readable header /
  caption is an anomaly.
* ``decode_error``: its domain is only ``""`` (decodes) with
  ``distribution_constraints.min_domain_mass = 1 - max_bad_fraction``: the
  split is anomalous when more than ``max_bad_fraction`` of its records
  would be skipped (whatever the reasons); fewer failures are accepted and
  only reported in the summary. So the train split, checked against its own
  schema, fails when its own failure rate is above the threshold.
* ``format``: the formats seen in train; any other format is an anomaly.
* ``oov_rate`` in [0, 1], ``duplicate_*`` and ``decode_ok`` in {0, 1}.
* Drift comparators (checked only against reference statistics, i.e. the
  eval split against train): approximate Jensen-Shannon divergence on the
  numeric `DRIFT_FEATURES` (``drift_threshold``) and L-infinity distance on
  the categorical ones (``categorical_drift_threshold``). TFDV's L-infinity
  comparator ignores numeric features, hence Jensen-Shannon for sizes and
  token counts. Both measures are noisy on small splits (about 0.05-0.2
  between two 20-example samples of one distribution); the defaults are
  meant for thousands of examples.

References: Breck et al. 2019, "Data Validation for Machine Learning"
(MLSys); Caveness et al. 2020, "TensorFlow Data Validation: Data Analysis
and Validation in Continuous ML Pipelines" (SIGMOD).
"""

import dataclasses
import functools
import hashlib
import io
import json
import math
import os
import subprocess
import sys
import tempfile

import numpy as np
from absl import app, flags

from keras_maeclip.data import _cli

from keras_maeclip.data import decoding, tfdv_step

__all__ = [
    "DRIFT_FEATURES",
    "ValidationResult",
    "record_features",
    "dataset_statistics",
    "infer_schema",
    "save_schema",
    "load_schema",
    "validate",
    "anomaly_list",
    "write_report",
    "summary_text",
    "validate_data",
]

DRIFT_FEATURES = tfdv_step.DRIFT_FEATURES
IMAGE_FEATURES = tfdv_step.IMAGE_FEATURES
TFDV_PYTHON_ENV = "KERAS_MAECLIP_TFDV_PYTHON"
"""Environment variable: the Python of a separate TFDV environment (default: the checkout's .venv-validate)."""

# The TFDV step's functions, in-process (they need TFDV; the proto readers need only tensorflow-metadata).
infer_schema = tfdv_step.infer_schema
save_schema = tfdv_step.save_schema
load_schema = tfdv_step.load_schema
validate = tfdv_step.validate
anomaly_list = tfdv_step.anomaly_list
summary_text = tfdv_step.summary_text
write_report = tfdv_step.write_report


# --------------------------------------------------------------------------
# Per-record features
# --------------------------------------------------------------------------


def _check_records(dataset, what):
    import tensorflow as tf

    if not isinstance(dataset, tf.data.Dataset):
        raise ValueError(
            f"{what} must be a tf.data.Dataset of raw records from keras_maeclip.data.readers "
            f"(read_tfrecords, read_csv, ...), got {type(dataset).__name__}."
        )
    spec = dataset.element_spec
    if not isinstance(spec, dict) or any(name not in spec for name in ("image", "caption", "key")):
        found = sorted(spec) if isinstance(spec, dict) else spec
        raise ValueError(
            f"{what}: records must be dicts with 'image', 'caption' and 'key' (and optionally 'error') "
            f"scalar tf.string entries, as the readers yield; got {found!r}."
        )
    for name in ("image", "caption", "key", "error"):
        if name in spec and (spec[name].dtype != tf.string or spec[name].shape.rank not in (0, None)):
            raise ValueError(
                f"{what}: record entry {name!r} must be a scalar tf.string (unbatch first), got {spec[name]!r}."
            )


def _check_max_examples(max_examples):
    if max_examples is None:
        return None
    if isinstance(max_examples, bool) or not isinstance(max_examples, (int, np.integer)) or max_examples < 1:
        raise ValueError(f"max_examples must be a positive integer or None, got {max_examples!r}.")
    return int(max_examples)


def _unk_id(tokenizer):
    if not (callable(tokenizer) and hasattr(tokenizer, "token_to_id")):
        raise ValueError(
            "tokenizer must be a keras-hub tokenizer such as keras_maeclip.models.caption_tokenizer(vocabulary), "
            f"got {type(tokenizer).__name__}."
        )
    try:
        unk = tokenizer.token_to_id("[UNK]")
    except Exception as e:  # keras-hub raises KeyError / ValueError for unknown tokens
        raise ValueError(f"tokenizer: its vocabulary has no '[UNK]' token ({e}); use caption_tokenizer.") from e
    return int(unk)


def _token_counts(tokenizer, texts, batch_size=1024):
    """Returns (number of tokens, number of [UNK] tokens) per text, as int arrays."""
    unk = _unk_id(tokenizer)
    lengths, unknown = [], []
    for start in range(0, len(texts), batch_size):
        out = tokenizer(list(texts[start : start + batch_size]))
        if hasattr(out, "to_list"):  # tf.RaggedTensor on the TensorFlow backend
            out = out.to_list()
        for ids in out:
            ids = np.asarray(ids, dtype=np.int64).reshape(-1)
            lengths.append(ids.size)
            unknown.append(int(np.sum(ids == unk)))
    return np.asarray(lengths, np.int64), np.asarray(unknown, np.int64)


def _image_header(data):
    """Returns (format or None, width, height, channels) from the header; NaN when unreadable."""
    from PIL import Image

    if not data:
        return None, math.nan, math.nan, math.nan
    fmt = decoding.sniff_format(data)
    if fmt is None:
        return "UNKNOWN", math.nan, math.nan, math.nan
    try:
        with Image.open(io.BytesIO(data), formats=[fmt]) as img:
            (width, height), bands = img.size, len(img.getbands())
    except Exception:  # bad headers raise many types, bombs included
        return fmt, math.nan, math.nan, math.nan
    return fmt, float(width), float(height), float(bands)


def record_features(dataset, tokenizer=None, max_examples=None):
    """Measures every raw record: caption length, tokens, image size, format, decodability, duplicates.

    See the module docstring for the columns and what they cost.

    Args:
        dataset: a finite `tf.data.Dataset` of raw records (scalar `tf.string`
            "image", "caption", "key", optional "error"), e.g. from
            `keras_maeclip.data.readers.read_tfrecords`.
        tokenizer: optional keras-hub tokenizer with an ``[UNK]`` token (e.g.
            `keras_maeclip.models.caption_tokenizer(vocabulary)`); adds the
            ``caption_tokens`` and ``oov_rate`` columns.
        max_examples: optional positive int; only the first records are read.

    Returns:
        A `pandas.DataFrame`, one row per record in order, with the columns
        ``caption_chars``, [``caption_tokens``, ``oov_rate``,] ``width``,
        ``height``, ``aspect``, ``channels`` (float, NaN = missing),
        ``format``, ``decode_error``, ``key`` (str), ``decode_ok``,
        ``duplicate_key``, ``duplicate_image`` (int 0/1).

    Raises:
        ValueError: for a dataset that is not of raw records, an infinite one
            without ``max_examples``, or a tokenizer without ``[UNK]``.
    """
    import pandas as pd
    import tensorflow as tf

    _check_records(dataset, "record_features: dataset")
    max_examples = _check_max_examples(max_examples)
    if tokenizer is not None:
        _unk_id(tokenizer)  # fail before reading anything
    if max_examples is not None:
        dataset = dataset.take(max_examples)
    elif dataset.cardinality() == tf.data.INFINITE_CARDINALITY:
        raise ValueError(
            "record_features: dataset is infinite (repeat=True?); pass max_examples=... or a finite dataset."
        )

    rows, seen_keys, seen_images = [], set(), set()
    for record in dataset.as_numpy_iterator():
        image, caption, key = record["image"], record["caption"], record["key"]
        error = record.get("error", b"")
        text = caption.decode("utf-8", "replace").strip()
        caption_missing = bool(error) and not caption
        fmt, width, height, channels = _image_header(image)
        _, _, reason, _ = decoding.decode_record(image, caption, error)
        digest = hashlib.sha1(image).digest() if image else None
        rows.append(
            {
                "caption_chars": math.nan if caption_missing else float(len(text)),
                "text": None if caption_missing else text,
                "width": width,
                "height": height,
                "aspect": width / height if height else math.nan,
                "channels": channels,
                "format": fmt,
                "decode_ok": int(reason is None),
                "decode_error": reason or "",
                "key": key.decode("utf-8", "replace"),
                "duplicate_key": int(key in seen_keys),
                "duplicate_image": int(digest is not None and digest in seen_images),
            }
        )
        seen_keys.add(key)
        if digest is not None:
            seen_images.add(digest)

    columns = ["caption_chars", "width", "height", "aspect", "channels", "format", "decode_ok", "decode_error",
               "key", "duplicate_key", "duplicate_image"]  # fmt: skip
    frame = pd.DataFrame(rows, columns=columns + ["text"])
    for name in ("caption_chars",) + IMAGE_FEATURES:
        frame[name] = frame[name].astype(np.float64)
    for name in tfdv_step.BINARY_FEATURES:
        frame[name] = frame[name].astype(np.int64)
    if tokenizer is not None:
        present = frame["text"].notna().to_numpy()
        tokens = np.full(len(frame), math.nan)
        oov = np.full(len(frame), math.nan)
        if present.any():
            lengths, unknown = _token_counts(tokenizer, frame["text"][present].tolist())
            tokens[present] = lengths
            with np.errstate(divide="ignore", invalid="ignore"):
                oov[present] = np.where(lengths > 0, unknown / np.maximum(lengths, 1), math.nan)
        frame.insert(1, "caption_tokens", tokens)
        frame.insert(2, "oov_rate", oov)
    return frame.drop(columns="text")


# --------------------------------------------------------------------------
# Statistics and schema
# --------------------------------------------------------------------------


def dataset_statistics(dataset, tokenizer=None, max_examples=None, stats_options=None):
    """Computes TFDV statistics of the per-record features of a split (in-process TFDV).

    Args:
        dataset: a `tf.data.Dataset` of raw records (see `record_features`),
            or a DataFrame `record_features` returned (then `tokenizer` and
            `max_examples` are not used).
        tokenizer: optional tokenizer, see `record_features`.
        max_examples: optional positive int, see `record_features`.
        stats_options: optional `tfdv.StatsOptions`.

    Returns:
        A `DatasetFeatureStatisticsList` with one dataset; ``key`` is left out.
        Computed in memory by `tfdv.generate_statistics_from_dataframe`.
    """
    import pandas as pd

    frame = dataset if isinstance(dataset, pd.DataFrame) else record_features(dataset, tokenizer, max_examples)
    return tfdv_step.statistics_from_frame(frame, stats_options)


# --------------------------------------------------------------------------
# Whole-dataset validation
# --------------------------------------------------------------------------


@dataclasses.dataclass
class ValidationResult:
    """What `validate_data` found.

    Attributes:
        train_features, eval_features: the `record_features` DataFrames
            (``eval_features`` None without an eval split).
        train_statistics, eval_statistics: TFDV statistics.
        schema: the schema the splits were checked against.
        train_anomalies, eval_anomalies: TFDV `Anomalies` protos.
        anomalies: list of ``(split, feature, description)`` tuples, both
            splits together; empty when the data fits.
        summary: the plain-text summary of both splits.
        paths: dict of written files (``"schema"``, ``"statistics_html"``,
            ``"summary"``); empty without ``output_dir``.
    """

    train_features: object
    train_statistics: object
    schema: object
    train_anomalies: object
    eval_features: object = None
    eval_statistics: object = None
    eval_anomalies: object = None
    anomalies: list = dataclasses.field(default_factory=list)
    summary: str = ""
    paths: dict = dataclasses.field(default_factory=dict)

    @property
    def ok(self):
        """True when no anomaly was found."""
        return not self.anomalies


def validate_data(
    train_records,
    eval_records=None,
    tokenizer=None,
    output_dir=None,
    max_examples=None,
    schema=None,
    **schema_options,
):
    """Validates a train split (and an eval split against it) and writes the report.

    The schema is inferred from the train split (`infer_schema`) unless one
    is given; the train split is checked against it (too many decode
    failures, bad domains), the eval split too, plus drift from train to
    eval through the schema's comparators.

    Args:
        train_records: `tf.data.Dataset` of raw records of the train split.
        eval_records: optional `tf.data.Dataset` of raw records of the eval split.
        tokenizer: optional keras-hub tokenizer for token counts and OOV rate.
        output_dir: optional folder; ``schema.pbtxt``, ``statistics.html``
            and ``summary.txt`` are written there.
        max_examples: optional positive int; records read per split.
        schema: optional `Schema` to check against instead of inferring one.
        **schema_options: passed to `infer_schema` (``drift_threshold``,
            ``categorical_drift_threshold``, ``max_bad_fraction``,
            ``drift_features``).

    Returns:
        A `ValidationResult`.
    """
    if schema is not None and schema_options:
        raise ValueError(f"validate_data: schema_options {sorted(schema_options)} apply only when no schema is given.")
    schema_options = tfdv_step.check_schema_options(schema_options)
    run = _steps_runner()  # before reading: a missing TFDV is one line, not minutes later
    frames = {"train": record_features(train_records, tokenizer, max_examples)}
    if eval_records is not None:
        frames["eval"] = record_features(eval_records, tokenizer, max_examples)
    (out,) = run([dict(frames=frames, schema=schema, output_dir=output_dir, schema_options=schema_options)])
    return ValidationResult(
        train_features=frames["train"], train_statistics=out["train_statistics"], schema=out["schema"],
        train_anomalies=out["train_anomalies"], eval_features=frames.get("eval"),
        eval_statistics=out.get("eval_statistics"), eval_anomalies=out.get("eval_anomalies"),
        anomalies=[tuple(item) for item in out["anomalies"]], summary=out["summary"], paths=out["paths"],
    )  # fmt: skip


def tfdv_python():
    """The Python of the separate TFDV environment, or None.

    ``$KERAS_MAECLIP_TFDV_PYTHON`` when set, else ``.venv-validate/bin/python``
    beside this package's checkout (what ``make validate-env`` builds).
    """
    explicit = os.environ.get(TFDV_PYTHON_ENV)
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise ValueError(f"${TFDV_PYTHON_ENV}={explicit!r} is not an executable Python; unset it or fix the path.")
        return explicit
    checkout = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    candidate = os.path.join(checkout, ".venv-validate", "bin", "python")
    return candidate if os.access(candidate, os.X_OK) else None


def _steps_runner():
    """Runs a list of TFDV steps (`tfdv_step.run_step` keyword dicts): in-process when TFDV imports here,
    else in one process of the TFDV environment."""
    if os.environ.get(TFDV_PYTHON_ENV) is None and tfdv_step.tfdv_importable():
        return lambda jobs: [
            tfdv_step.run_step(job["frames"], schema=job.get("schema"), output_dir=job.get("output_dir"),
                               **job.get("schema_options", {}))
            for job in jobs
        ]  # fmt: skip
    python = tfdv_python()
    if python is None:
        raise ImportError(tfdv_step.MISSING_TFDV)
    tfdv_step._protos().schema_pb2  # the protos come back here: fail now if they cannot be read
    return functools.partial(_run_steps_in, python)


def _run_steps_in(python, jobs):
    """`tfdv_step.run_step` for each job in another Python: tables as JSON in, protos and JSON out."""
    with tempfile.TemporaryDirectory(prefix="tfdv_step_") as work:
        request = []
        for index, job in enumerate(jobs):
            folder = os.path.join(work, str(index))
            os.makedirs(folder)
            output_dir = job.get("output_dir")
            entry = {"frames": {}, "schema": None, "schema_options": job.get("schema_options", {}),
                     "output_dir": None if output_dir is None else os.path.abspath(os.fspath(output_dir))}  # fmt: skip
            for split, frame in job["frames"].items():
                if frame is not None:
                    entry["frames"][split] = os.path.join(folder, f"{split}_features.json")
                    tfdv_step.write_frame(frame, entry["frames"][split])
            if job.get("schema") is not None:
                entry["schema"] = save_schema(job["schema"], os.path.join(folder, "given_schema.pbtxt"))
            request.append(entry)
        with open(os.path.join(work, "request.json"), "w", encoding="utf-8") as f:
            json.dump(request, f)
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONWARNINGS="ignore")
        env.pop("PYTHONPATH", None)
        command = [python, "-P", tfdv_step.__file__, os.path.join(work, "request.json")]
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode == 2:
            lines = done.stderr.strip().splitlines() or ["(no message)"]
            raise ValueError(lines[-1].removeprefix("ValueError: "))
        if done.returncode != 0:
            tail = "\n".join(done.stderr.strip().splitlines()[-20:])
            raise RuntimeError(f"The TFDV step failed in {python} (exit {done.returncode}):\n{tail}")
        return [tfdv_step.read_result(os.path.join(work, str(index))) for index in range(len(jobs))]


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------

FLAGS = flags.FlagValues()
flags.DEFINE_enum(
    "input_format", None, ["tfrecord", "csv", "webdataset", "folder"], "What --input holds.", flag_values=FLAGS
)
flags.DEFINE_list("input", [], "Train split path(s), globs allowed (comma-separated).", flag_values=FLAGS)
flags.DEFINE_list("eval_input", [], "Optional eval split path(s), same format.", flag_values=FLAGS)
flags.DEFINE_string("vocabulary", None, "Optional WordPiece vocabulary file (token counts, OOV rate).", flag_values=FLAGS)
flags.DEFINE_string("output_dir", None, "Where to write schema.pbtxt, statistics.html, summary.txt.", flag_values=FLAGS)
flags.DEFINE_string("schema", None, "Optional schema.pbtxt to check against instead of inferring one.", flag_values=FLAGS)
flags.DEFINE_integer("max_examples", None, "Records read per split (default: all).", flag_values=FLAGS)
flags.DEFINE_float("drift_threshold", 0.1, "Jensen-Shannon threshold of numeric drift.", flag_values=FLAGS)
flags.DEFINE_float("categorical_drift_threshold", 0.1, "L-infinity threshold of format drift.", flag_values=FLAGS)
flags.DEFINE_float("max_bad_fraction", 0.1, "Largest accepted share of undecodable records.", flag_values=FLAGS)
flags.DEFINE_string("csv_img_key", "filepath", "csv: column of image paths.", flag_values=FLAGS)
flags.DEFINE_string("csv_caption_key", "title", "csv: column of captions.", flag_values=FLAGS)
flags.DEFINE_string("csv_separator", "\\t", "csv: column separator ('\\t' or 'tab' for TSV, ',' for CSV).", flag_values=FLAGS)
flags.DEFINE_bool(
    "allow_outside_paths", False, "csv: accept image paths outside the manifest's folder.", flag_values=FLAGS
)
flags.mark_flags_as_required(["input_format", "output_dir"], flag_values=FLAGS)

_SEPARATORS = {"\\t": "\t", "tab": "\t", "comma": ","}


def _read(paths):
    from keras_maeclip.data import readers

    fmt = FLAGS.input_format
    if fmt == "tfrecord":
        return readers.read_tfrecords(paths)
    if fmt == "csv":
        return readers.read_csv(
            paths,
            image_key=FLAGS.csv_img_key,
            caption_key=FLAGS.csv_caption_key,
            separator=_SEPARATORS.get(FLAGS.csv_separator, FLAGS.csv_separator),
            allow_outside_paths=FLAGS.allow_outside_paths,
        )
    if fmt == "webdataset":
        return readers.read_webdataset(paths)
    return readers.read_folder(paths)


def main(argv):
    """Validates the splits named by ``FLAGS`` (already parsed), prints the summary and anomalies.

    Args:
        argv: leftover command-line arguments; must be only the program name.

    Returns:
        The `ValidationResult`.
    """
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not FLAGS.input:
        raise app.UsageError("--input is required: the train split's files.")
    tokenizer = None
    if FLAGS.vocabulary:
        from keras_maeclip.models import caption_tokenizer

        tokenizer = caption_tokenizer(FLAGS.vocabulary)
    options = {}
    schema = load_schema(FLAGS.schema) if FLAGS.schema else None
    if schema is None:
        options = dict(
            drift_threshold=FLAGS.drift_threshold,
            categorical_drift_threshold=FLAGS.categorical_drift_threshold,
            max_bad_fraction=FLAGS.max_bad_fraction,
        )
    result = validate_data(
        _read(FLAGS.input),
        _read(FLAGS.eval_input) if FLAGS.eval_input else None,
        tokenizer=tokenizer,
        output_dir=FLAGS.output_dir,
        max_examples=FLAGS.max_examples,
        schema=schema,
        **options,
    )
    print(result.summary)
    if result.anomalies:
        print(f"{len(result.anomalies)} anomalies:")
        for split, feature, description in result.anomalies:
            print(f"  {split}/{feature}: {description}")
    else:
        print("no anomalies")
    print("wrote " + ", ".join(result.paths[k] for k in ("schema", "statistics_html", "summary")))
    return result


def run(argv):
    """Parses ``argv`` (program name first) into ``FLAGS`` and runs `main`.

    Args:
        argv: list of str, e.g. ``["validate", "--input_format=tfrecord", ...]``.

    Returns:
        What `main` returns.
    """
    return _cli.run(FLAGS, main, argv)


def _entry(argv):
    result = main(argv)
    sys.exit(1 if result.anomalies else 0)


if __name__ == "__main__":
    app.run(_entry, flags_parser=_cli.flags_parser(FLAGS, __doc__))
