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

import contextlib
import dataclasses
import hashlib
import html
import io
import math
import os
import sys

import numpy as np
from absl import app, flags

from keras_maeclip.data import _cli

from keras_maeclip.data import decoding

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

DRIFT_FEATURES = ("width", "height", "caption_tokens", "oov_rate", "format")
"""Features that get a drift comparator by default (those present in the schema)."""

CATEGORICAL_FEATURES = ("format", "decode_error")
IMAGE_FEATURES = ("width", "height", "aspect", "channels")
CAPTION_FEATURES = ("caption_chars", "caption_tokens", "oov_rate")
_BINARY_FEATURES = ("decode_ok", "duplicate_key", "duplicate_image")
_NOT_IN_STATISTICS = ("key",)


def _tfdv():
    """Imports TFDV lazily (several seconds), hiding its IPython notice."""
    if "tensorflow_data_validation" not in sys.modules:
        with contextlib.redirect_stderr(io.StringIO()):
            import tensorflow_data_validation  # noqa: F401
    return sys.modules["tensorflow_data_validation"]


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
    for name in _BINARY_FEATURES:
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
    """Computes TFDV statistics of the per-record features of a split.

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

    tfdv = _tfdv()
    frame = dataset if isinstance(dataset, pd.DataFrame) else record_features(dataset, tokenizer, max_examples)
    if len(frame) == 0:
        raise ValueError("dataset_statistics: the split has no record; check the input paths.")
    frame = frame.drop(columns=[c for c in _NOT_IN_STATISTICS if c in frame.columns])
    return tfdv.generate_statistics_from_dataframe(frame, stats_options or tfdv.StatsOptions())


def _check_fraction(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}.")
    if not 0 <= value <= 1:
        raise ValueError(f"{name} must be in [0, 1], got {value}.")
    return float(value)


def _feature_names(schema):
    return [feature.name for feature in schema.feature]


def infer_schema(
    statistics,
    drift_features=DRIFT_FEATURES,
    drift_threshold=0.1,
    categorical_drift_threshold=0.1,
    max_bad_fraction=0.1,
):
    """Infers the schema of the train split's statistics and sets domains, limits and drift comparators.

    See the module docstring ("Schema and checks") for what is changed from
    TFDV's own inference.

    Args:
        statistics: the train split's `DatasetFeatureStatisticsList`
            (`dataset_statistics`).
        drift_features: names of features to compare between splits;
            numeric ones get a Jensen-Shannon divergence comparator, the
            categorical ``format`` / ``decode_error`` an L-infinity one. Names
            absent from the statistics are ignored.
        drift_threshold: float in [0, 1], default 0.1. Largest accepted
            approximate Jensen-Shannon divergence of a numeric feature.
        categorical_drift_threshold: float in [0, 1], default 0.1. Largest
            accepted L-infinity distance between category frequencies.
        max_bad_fraction: float in [0, 1], default 0.1. Largest accepted share
            of records that would be skipped by the decoder, or that lack a
            readable image header / caption.

    Returns:
        A `tensorflow_metadata` `Schema` proto.
    """
    tfdv = _tfdv()
    drift_threshold = _check_fraction("drift_threshold", drift_threshold)
    categorical_drift_threshold = _check_fraction("categorical_drift_threshold", categorical_drift_threshold)
    max_bad_fraction = _check_fraction("max_bad_fraction", max_bad_fraction)
    if isinstance(drift_features, str):
        raise ValueError(f"drift_features must be a sequence of feature names, got the string {drift_features!r}.")
    schema = tfdv.infer_schema(statistics, infer_feature_shape=False)
    names = _feature_names(schema)
    for name in IMAGE_FEATURES + CAPTION_FEATURES:
        if name in names:
            presence = tfdv.get_feature(schema, name).presence
            presence.min_fraction = 1.0 - max_bad_fraction
            presence.min_count = 1
    if "decode_error" in names:
        # Inference may give a global string domain, or a bool domain when no record failed.
        feature = tfdv.get_feature(schema, "decode_error")
        if feature.WhichOneof("domain_info") == "domain":
            kept = [d for d in schema.string_domain if d.name != feature.domain]
            del schema.string_domain[:]
            schema.string_domain.extend(kept)
        feature.string_domain.CopyFrom(type(feature.string_domain)(value=[""]))
        feature.distribution_constraints.min_domain_mass = 1.0 - max_bad_fraction
    if "oov_rate" in names:
        feature = tfdv.get_feature(schema, "oov_rate")
        feature.float_domain.min, feature.float_domain.max = 0.0, 1.0
    for name in _BINARY_FEATURES:
        if name in names:
            feature = tfdv.get_feature(schema, name)
            feature.int_domain.min, feature.int_domain.max = 0, 1
    for name in drift_features:
        if name not in names:
            continue
        comparator = tfdv.get_feature(schema, name).drift_comparator
        if name in CATEGORICAL_FEATURES:
            comparator.infinity_norm.threshold = categorical_drift_threshold
        else:
            comparator.jensen_shannon_divergence.threshold = drift_threshold
    return schema


def save_schema(schema, path):
    """Writes a schema as text (``schema.pbtxt``), creating the folder.

    Args:
        schema: a `Schema` proto.
        path: str or path-like.

    Returns:
        The path, str.
    """
    path = os.fspath(path)
    if os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    _tfdv().write_schema_text(schema, path)
    return path


def load_schema(path):
    """Reads a schema written by `save_schema`.

    Args:
        path: str or path-like.

    Returns:
        The `Schema` proto.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"load_schema: no schema file at {path!r}; write one with save_schema or validate_data.")
    return _tfdv().load_schema_text(path)


# --------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------


def validate(statistics, schema, reference_statistics=None):
    """Checks statistics against a schema, and for drift against reference statistics.

    Args:
        statistics: the `DatasetFeatureStatisticsList` to check.
        schema: the `Schema` (from `infer_schema` on the train split).
        reference_statistics: optional statistics to compare with through the
            schema's drift comparators (the train split's, when checking eval).

    Returns:
        A TFDV `Anomalies` proto; its ``anomaly_info`` is empty when the data
        fits. ``drift_skew_info`` holds the measured drift per compared feature.
    """
    return _tfdv().validate_statistics(statistics, schema, previous_statistics=reference_statistics)


def anomaly_list(anomalies):
    """Lists the anomalies as ``(feature, description)`` pairs, sorted by feature.

    Args:
        anomalies: an `Anomalies` proto from `validate`.

    Returns:
        A list of ``(feature name, short description)`` tuples of str; the
        description joins the short descriptions of the feature's reasons
        with "; ". A dataset-level anomaly is named ``"[dataset]"``. Empty
        when there is no anomaly.
    """
    items = []
    for name, info in sorted(anomalies.anomaly_info.items()):
        reasons = "; ".join(reason.short_description for reason in info.reason) or info.short_description
        items.append((name, reasons))
    if anomalies.HasField("dataset_anomaly_info"):
        info = anomalies.dataset_anomaly_info
        reasons = "; ".join(reason.short_description for reason in info.reason) or info.short_description
        items.append(("[dataset]", reasons))
    return items


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


def _stats_by_name(statistics):
    if len(statistics.datasets) != 1:
        raise ValueError(f"Expected statistics of one dataset (one slice), got {len(statistics.datasets)}.")
    dataset = statistics.datasets[0]
    return dataset, {".".join(f.path.step) or f.name: f for f in dataset.features}


def _numeric(features, name):
    feature = features.get(name)
    if feature is None or not feature.HasField("num_stats"):
        return None
    stats = feature.num_stats
    count = stats.common_stats.num_non_missing
    return {"count": count, "missing": stats.common_stats.num_missing, "mean": stats.mean, "min": stats.min,
            "max": stats.max, "sum": stats.mean * count}  # fmt: skip


def _top_values(features, name):
    feature = features.get(name)
    if feature is None or not feature.HasField("string_stats"):
        return {}
    return {value.value: int(round(value.frequency)) for value in feature.string_stats.top_values}


def summary_text(statistics, anomalies=None, name=None):
    """A plain-text summary of a split's statistics and anomalies.

    Args:
        statistics: the split's `DatasetFeatureStatisticsList`.
        anomalies: optional `Anomalies` proto of the split.
        name: optional split name for the title line.

    Returns:
        str: example count, decode failures by reason, duplicates, caption
        length (characters, tokens) mean / max, mean OOV rate, image width /
        height / aspect / channels ranges, format counts, and the anomalies.
    """
    dataset, features = _stats_by_name(statistics)
    total = int(dataset.num_examples)
    lines = [f"== {name} ==" if name else "== statistics ==", f"examples: {total}"]
    failures = {reason: n for reason, n in _top_values(features, "decode_error").items() if reason}
    failed = sum(failures.values())
    line = f"decodable: {total - failed}, decode failures: {failed}"
    if failures:
        line += " (" + ", ".join(f"{reason}={n}" for reason, n in sorted(failures.items())) + ")"
    lines.append(line)
    dup_key, dup_image = _numeric(features, "duplicate_key"), _numeric(features, "duplicate_image")
    if dup_key and dup_image:
        lines.append(f"duplicate keys: {int(round(dup_key['sum']))}, duplicate images: {int(round(dup_image['sum']))}")
    for label, feature in (("caption characters", "caption_chars"), ("caption tokens", "caption_tokens")):
        stats = _numeric(features, feature)
        if stats:
            lines.append(f"{label}: mean {stats['mean']:.1f}, max {stats['max']:g}, missing {int(stats['missing'])}")
    oov = _numeric(features, "oov_rate")
    if oov:
        lines.append(f"OOV rate: mean {oov['mean']:.4f}, max {oov['max']:.4f}")
    sizes = []
    for feature in IMAGE_FEATURES:
        stats = _numeric(features, feature)
        if stats and stats["count"]:
            sizes.append(f"{feature} {stats['min']:g}-{stats['max']:g}")
    if sizes:
        missing = _numeric(features, "width")["missing"] if _numeric(features, "width") else 0
        lines.append("image " + ", ".join(sizes) + f" (no readable header: {int(missing)})")
    formats = _top_values(features, "format")
    if formats:
        lines.append("formats: " + ", ".join(f"{fmt}={n}" for fmt, n in sorted(formats.items())))
    if anomalies is not None:
        items = anomaly_list(anomalies)
        lines.append(f"anomalies: {len(items) or 'none'}")
        lines.extend(f"  {feature}: {description}" for feature, description in items)
    return "\n".join(lines)


def write_report(path_html, statistics, reference_statistics=None, name="statistics",
                 reference_name="reference", summary=None):  # fmt: skip
    """Writes TFDV's statistics view (Facets Overview) as a standalone HTML page.

    The Facets view is TFDV's `get_statistics_html` snippet; it loads the
    Facets web components from the internet when opened, so offline the page
    shows only the plain-text ``summary`` (when given) above it.

    Args:
        path_html: str or path-like; the folder is created.
        statistics: the `DatasetFeatureStatisticsList` to show.
        reference_statistics: optional statistics shown side by side.
        name: str, the label of `statistics` in the view.
        reference_name: str, the label of `reference_statistics`.
        summary: optional plain text (e.g. `summary_text`) shown above.

    Returns:
        The path, str.
    """
    from tensorflow_data_validation.utils import display_util

    _tfdv()
    view = display_util.get_statistics_html(
        statistics, reference_statistics, lhs_name=name, rhs_name=reference_name
    )
    title = html.escape(f"Data validation: {name}" + (f" vs {reference_name}" if reference_statistics else ""))
    parts = ["<!DOCTYPE html>", "<html>", "<head>", '<meta charset="utf-8">', f"<title>{title}</title>", "</head>",
             "<body>", f"<h1>{title}</h1>"]  # fmt: skip
    if summary:
        parts.append(f"<pre>{html.escape(summary)}</pre>")
    parts += [view, "</body>", "</html>", ""]
    path_html = os.fspath(path_html)
    if os.path.dirname(path_html):
        os.makedirs(os.path.dirname(path_html), exist_ok=True)
    with open(path_html, "w", encoding="utf-8") as f:
        f.write("\n".join(parts))
    return path_html


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
    train_features = record_features(train_records, tokenizer, max_examples)
    train_statistics = dataset_statistics(train_features)
    if schema is None:
        schema = infer_schema(train_statistics, **schema_options)
    train_anomalies = validate(train_statistics, schema)
    result = ValidationResult(train_features, train_statistics, schema, train_anomalies)
    result.anomalies = [("train", f, d) for f, d in anomaly_list(train_anomalies)]
    summaries = [summary_text(train_statistics, train_anomalies, "train")]
    if eval_records is not None:
        result.eval_features = record_features(eval_records, tokenizer, max_examples)
        result.eval_statistics = dataset_statistics(result.eval_features)
        result.eval_anomalies = validate(result.eval_statistics, schema, reference_statistics=train_statistics)
        result.anomalies += [("eval", f, d) for f, d in anomaly_list(result.eval_anomalies)]
        summaries.append(summary_text(result.eval_statistics, result.eval_anomalies, "eval"))
    result.summary = "\n\n".join(summaries) + "\n"
    if output_dir is not None:
        output_dir = os.fspath(output_dir)
        os.makedirs(output_dir, exist_ok=True)
        paths = {"schema": save_schema(schema, os.path.join(output_dir, "schema.pbtxt"))}
        if eval_records is not None:
            paths["statistics_html"] = write_report(
                os.path.join(output_dir, "statistics.html"), train_statistics, result.eval_statistics,
                name="train", reference_name="eval", summary=result.summary,
            )  # fmt: skip
        else:
            paths["statistics_html"] = write_report(
                os.path.join(output_dir, "statistics.html"), train_statistics, name="train", summary=result.summary
            )
        paths["summary"] = os.path.join(output_dir, "summary.txt")
        with open(paths["summary"], "w", encoding="utf-8") as f:
            f.write(result.summary)
        result.paths = paths
    return result


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
