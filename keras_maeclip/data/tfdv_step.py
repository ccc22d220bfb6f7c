"""The TFDV step of data validation: statistics, schema, anomalies and report from feature tables.

`keras_maeclip.data.validate` measures every record in the main environment
(`record_features`: one row of sizes, lengths, formats and decode results
per record) and hands the tables to this step, as TFX hands examples to its
StatisticsGen / SchemaGen / ExampleValidator components. The step runs
wherever TensorFlow Data Validation lives:

* in-process, when ``tensorflow_data_validation`` imports beside the main
  stack (``pip install keras-maeclip[validate]``; TFDV >= 1.17 ships wheels
  for glibc >= 2.39 only);
* otherwise as its own process in a separate TFDV environment
  (``make validate-env`` builds ``.venv-validate`` with the newest TFDV that
  installs on glibc 2.36, TFDV 1.16.1 with TensorFlow 2.16, which cannot sit
  beside TensorFlow 2.21). `validate.validate_data` finds that environment
  by itself (`tfdv_python`); the tables go there as JSON, the protos come
  back as files.

This module imports nothing from keras_maeclip, nor Keras: the TFDV
environment runs it as a script (``python -P tfdv_step.py request.json``).
It needs NumPy, pandas and TFDV for the statistics, schema inference and
checks; reading and writing the protos (`load_schema`, `save_schema`,
`anomaly_list`, `summary_text`) needs only ``tensorflow-metadata``.
"""

import contextlib
import html
import io
import json
import numbers
import os
import sys
import types

DRIFT_FEATURES = ("width", "height", "caption_tokens", "oov_rate", "format")
"""Features that get a drift comparator by default (those present in the schema)."""

CATEGORICAL_FEATURES = ("format", "decode_error")
IMAGE_FEATURES = ("width", "height", "aspect", "channels")
CAPTION_FEATURES = ("caption_chars", "caption_tokens", "oov_rate")
BINARY_FEATURES = ("decode_ok", "duplicate_key", "duplicate_image")
STRING_FEATURES = ("format", "decode_error", "key")
NOT_IN_STATISTICS = ("key",)
SCHEMA_OPTIONS = ("drift_features", "drift_threshold", "categorical_drift_threshold", "max_bad_fraction")

MISSING_TFDV = (
    "TensorFlow Data Validation is not installed here: `pip install keras-maeclip[validate]` where it "
    "installs beside TensorFlow (TFDV >= 1.17, glibc >= 2.39), or run `make validate-env` to build a "
    "separate TFDV environment (.venv-validate) that data validation then uses by itself."
)
MISSING_METADATA = (
    "Reading TFDV's statistics, schema and anomalies needs tensorflow-metadata and pandas: "
    "`pip install tensorflow-metadata pandas` (or keras-maeclip[validate])."
)


def _tfdv():
    """Imports TFDV lazily (several seconds), hiding its IPython notice; one line when it is missing."""
    if "tensorflow_data_validation" not in sys.modules:
        try:
            with contextlib.redirect_stderr(io.StringIO()):
                import tensorflow_data_validation  # noqa: F401
        except ImportError as e:
            raise ImportError(MISSING_TFDV) from e
    return sys.modules["tensorflow_data_validation"]


def tfdv_importable():
    """True when TFDV imports in this process (the step then runs in-process)."""
    try:
        _tfdv()
    except ImportError:
        return False
    return True


def _protos():
    """TFDV's proto modules (tensorflow-metadata), or one line naming what to install."""
    try:
        from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2, statistics_pb2
    except ImportError as e:
        raise ImportError(MISSING_METADATA) from e
    return types.SimpleNamespace(anomalies_pb2=anomalies_pb2, schema_pb2=schema_pb2, statistics_pb2=statistics_pb2)


def statistics_from_frame(frame, stats_options=None):
    """TFDV statistics of a `record_features` table (``key`` left out), computed in memory.

    Args:
        frame: a `pandas.DataFrame` of per-record features.
        stats_options: optional `tfdv.StatsOptions`.

    Returns:
        A `DatasetFeatureStatisticsList` with one dataset.
    """
    tfdv = _tfdv()
    if len(frame) == 0:
        raise ValueError("dataset_statistics: the split has no record; check the input paths.")
    frame = frame.drop(columns=[c for c in NOT_IN_STATISTICS if c in frame.columns])
    return tfdv.generate_statistics_from_dataframe(frame, stats_options or tfdv.StatsOptions())


def _check_fraction(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
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
    for name in BINARY_FEATURES:
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
    from google.protobuf import text_format

    path = os.fspath(path)
    if os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text_format.MessageToString(schema))
    return path


def load_schema(path):
    """Reads a schema written by `save_schema` (or TFDV's ``write_schema_text``).

    Args:
        path: str or path-like.

    Returns:
        The `Schema` proto.
    """
    from google.protobuf import text_format

    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"load_schema: no schema file at {path!r}; write one with save_schema or validate_data.")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        return text_format.Parse(text, _protos().schema_pb2.Schema())
    except text_format.ParseError as e:
        raise ValueError(f"load_schema: {path!r} is not a schema in text format ({e}).") from e


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
# The whole step: tables in; statistics, schema, anomalies, report out
# --------------------------------------------------------------------------


def check_schema_options(options):
    """Checks `infer_schema`'s keyword options before any work; returns them as a dict."""
    unknown = sorted(set(options) - set(SCHEMA_OPTIONS))
    if unknown:
        raise ValueError(f"validate_data: unknown schema options {unknown}; known: {list(SCHEMA_OPTIONS)}.")
    for name in ("drift_threshold", "categorical_drift_threshold", "max_bad_fraction"):
        if name in options:
            _check_fraction(name, options[name])
    if isinstance(options.get("drift_features"), str):
        raise ValueError(
            f"drift_features must be a sequence of feature names, got the string {options['drift_features']!r}."
        )
    return dict(options)


def run_step(frames, schema=None, output_dir=None, **schema_options):
    """Statistics of each split, the schema (inferred from train unless given), anomalies, summary, report.

    Args:
        frames: dict of `record_features` tables: ``"train"`` and optionally
            ``"eval"`` (checked against the schema and for drift from train).
        schema: optional `Schema` proto to check against.
        output_dir: optional folder for ``schema.pbtxt``, ``statistics.html``
            and ``summary.txt``.
        **schema_options: `infer_schema`'s options.

    Returns:
        A dict: ``<split>_statistics``, ``<split>_anomalies`` (protos),
        ``schema``, ``anomalies`` (list of ``(split, feature, description)``),
        ``summary`` (str) and ``paths`` (dict of written files).
    """
    train_statistics = statistics_from_frame(frames["train"])
    if schema is None:
        schema = infer_schema(train_statistics, **schema_options)
    out = {"schema": schema, "train_statistics": train_statistics}
    out["train_anomalies"] = validate(train_statistics, schema)
    anomalies = [("train", f, d) for f, d in anomaly_list(out["train_anomalies"])]
    summaries = [summary_text(train_statistics, out["train_anomalies"], "train")]
    if frames.get("eval") is not None:
        out["eval_statistics"] = statistics_from_frame(frames["eval"])
        out["eval_anomalies"] = validate(out["eval_statistics"], schema, reference_statistics=train_statistics)
        anomalies += [("eval", f, d) for f, d in anomaly_list(out["eval_anomalies"])]
        summaries.append(summary_text(out["eval_statistics"], out["eval_anomalies"], "eval"))
    out["anomalies"] = anomalies
    out["summary"] = "\n\n".join(summaries) + "\n"
    paths = {}
    if output_dir is not None:
        output_dir = os.fspath(output_dir)
        os.makedirs(output_dir, exist_ok=True)
        paths["schema"] = save_schema(schema, os.path.join(output_dir, "schema.pbtxt"))
        reference = {}
        if "eval_statistics" in out:
            reference = dict(reference_statistics=out["eval_statistics"], reference_name="eval")
        paths["statistics_html"] = write_report(
            os.path.join(output_dir, "statistics.html"), train_statistics, name="train", summary=out["summary"],
            **reference,
        )  # fmt: skip
        paths["summary"] = os.path.join(output_dir, "summary.txt")
        with open(paths["summary"], "w", encoding="utf-8") as f:
            f.write(out["summary"])
    out["paths"] = paths
    return out


# --------------------------------------------------------------------------
# Across environments: tables as JSON in, protos as files out
# --------------------------------------------------------------------------

_PROTO_TYPES = {"statistics": ("statistics_pb2", "DatasetFeatureStatisticsList"),
                "anomalies": ("anomalies_pb2", "Anomalies"), "schema": ("schema_pb2", "Schema")}  # fmt: skip


def write_frame(frame, path):
    """Writes a `record_features` table as JSON columns (null = missing), readable by any pandas."""
    import numpy as np

    columns = {}
    for name in frame.columns:
        values = frame[name].tolist()
        if name in STRING_FEATURES:
            columns[name] = [None if v is None or (isinstance(v, float) and v != v) else str(v) for v in values]
        elif name in BINARY_FEATURES:
            columns[name] = [int(v) for v in values]
        else:
            columns[name] = [None if not np.isfinite(v) else float(v) for v in values]
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"columns": list(frame.columns), "values": columns}, f)


def read_frame(path):
    """Reads a table `write_frame` wrote: float columns with NaN, int 0/1 columns, str columns with None."""
    import numpy as np
    import pandas as pd

    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    frame = pd.DataFrame({name: data["values"][name] for name in data["columns"]}, columns=data["columns"])
    for name in data["columns"]:
        if name in BINARY_FEATURES:
            frame[name] = frame[name].astype(np.int64)
        elif name not in STRING_FEATURES:
            frame[name] = np.asarray([np.nan if v is None else v for v in data["values"][name]], np.float64)
        else:
            frame[name] = pd.Series(data["values"][name], dtype=object)
    return frame


def read_proto(path, kind):
    module, name = _PROTO_TYPES[kind]
    message = getattr(getattr(_protos(), module), name)()
    with open(path, "rb") as f:
        message.ParseFromString(f.read())
    return message


def _serve(request_path):
    """Runs each job of a request in this (the TFDV) environment; writes protos and result.json per job."""
    with open(request_path, encoding="utf-8") as f:
        request = json.load(f)
    for job in request:
        folder = os.path.dirname(next(iter(job["frames"].values())))
        frames = {split: read_frame(path) for split, path in job["frames"].items()}
        schema = load_schema(job["schema"]) if job.get("schema") else None
        out = run_step(frames, schema=schema, output_dir=job.get("output_dir"), **job.get("schema_options", {}))
        for key, value in out.items():
            if hasattr(value, "SerializeToString"):
                with open(os.path.join(folder, key + ".pb"), "wb") as f:
                    f.write(value.SerializeToString())
        with open(os.path.join(folder, "result.json"), "w", encoding="utf-8") as f:
            json.dump({"anomalies": out["anomalies"], "summary": out["summary"], "paths": out["paths"]}, f)


def read_result(folder):
    """What `_serve` wrote for one job, protos parsed: the dict `run_step` returns."""
    with open(os.path.join(folder, "result.json"), encoding="utf-8") as f:
        out = json.load(f)
    for name in sorted(os.listdir(folder)):
        if name.endswith(".pb"):
            key = name[: -len(".pb")]
            out[key] = read_proto(os.path.join(folder, name), key.rsplit("_", 1)[-1])
    return out


def main(argv):
    """``python -P tfdv_step.py request.json``: exit 0 done, 2 with one line on stderr for bad input."""
    if len(argv) != 2:
        sys.stderr.write("usage: python -P tfdv_step.py request.json\n")
        return 2
    try:
        _serve(argv[1])
    except ValueError as e:
        sys.stderr.write(f"ValueError: {e}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
