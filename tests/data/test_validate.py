"""Tests for keras_maeclip.data.validate (TFDV statistics, schema, anomalies, drift, report, CLI).

Data runs in tf.data and NumPy/PIL whatever the Keras backend. One
module-scoped fixture builds the raw-record splits and computes their
features and statistics once (TFDV's import is the slow part):

* ``train``: 20 synthetic 16² scenes stored as PNG (encoded with PIL), with
  record 5 repeating record 4's key, record 7 repeating record 6's image
  bytes, and record 9's PNG cut to half its bytes (header readable, pixels
  not: ``corrupt_image``).
* ``clean``: 20 other scenes of the same distribution (indices 100-119).
* ``big``: the clean scenes drawn at 24² (size drift).
* ``jpeg``: the clean scenes, the first 10 stored as JPEG (new format; the
  L-infinity distance of the format frequencies to train is exactly 0.5).
* ``no_caption``: the clean scenes with the caption absent (reader error
  ``missing_caption``).
Expected values come from the scenes themselves (Python string lengths,
PIL) and a regular-expression word count, not from the module.
"""

import io
import math
import re

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_maeclip.data import readers, synthetic
from keras_maeclip.data import validate as V
from keras_maeclip.models import caption_tokenizer

N, SIZE = 20, 16
# Two 20-example samples of one distribution differ by an approximate Jensen-Shannon
# divergence of about 0.25 (caption_tokens) and 0.31 (oov_rate) here, above the default
# 0.1 meant for large splits; disjoint image sizes measure 1.0.
DRIFT = 0.5
DUP_KEY, DUP_IMAGE, CORRUPT = 5, 7, 9
# A whole-word vocabulary: every other word becomes one [UNK] token.
WORDS = ["a", "and", "the", "red", "blue", "green", "circle", "square", "cross", "triangle", ",", "."]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS


def encode(pixels, fmt="PNG"):
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def scenes(start, size=SIZE):
    return [synthetic.generate_example(i, image_size=size) for i in range(start, start + N)]


def to_dataset(images, captions, keys, errors=None):
    errors = errors or [b""] * len(images)
    return tf.data.Dataset.from_tensor_slices(
        {"image": images, "caption": captions, "key": keys, "error": errors}
    )


def split_records(examples, formats=None, drop_captions=False):
    formats = formats or ["PNG"] * len(examples)
    images = [encode(ex["image"], fmt) for ex, fmt in zip(examples, formats)]
    captions = [b"" if drop_captions else ex["caption"].encode() for ex in examples]
    keys = [ex["key"].encode() for ex in examples]
    errors = [b"missing_caption" if drop_captions else b""] * len(examples)
    return to_dataset(images, captions, keys, errors)


def train_records(examples):
    images = [encode(ex["image"]) for ex in examples]
    keys = [ex["key"].encode() for ex in examples]
    keys[DUP_KEY] = keys[DUP_KEY - 1]
    images[DUP_IMAGE] = images[DUP_IMAGE - 1]
    images[CORRUPT] = images[CORRUPT][: len(images[CORRUPT]) // 2]
    return to_dataset(images, [ex["caption"].encode() for ex in examples], keys)


@pytest.fixture(scope="module")
def data():
    tokenizer = caption_tokenizer(VOCAB)
    train_examples, clean_examples = scenes(0), scenes(100)
    splits = {
        "train": train_records(train_examples),
        "clean": split_records(clean_examples),
        "big": split_records(scenes(100, size=24)),
        "jpeg": split_records(clean_examples, ["JPEG"] * 10 + ["PNG"] * 10),
        "no_caption": split_records(clean_examples, drop_captions=True),
    }
    features = {name: V.record_features(ds, tokenizer) for name, ds in splits.items()}
    stats = {name: V.dataset_statistics(frame) for name, frame in features.items()}
    schema = V.infer_schema(stats["train"], drift_threshold=DRIFT)
    return dict(
        tokenizer=tokenizer, train_examples=train_examples, splits=splits,
        features=features, stats=stats, schema=schema,
    )  # fmt: skip


def drift(anomalies, feature):
    for info in anomalies.drift_skew_info:
        if list(info.path.step) == [feature]:
            return info.drift_measurements[0].value
    raise AssertionError(f"no drift measured for {feature}")


# --------------------------------------------------------------------------
# record_features
# --------------------------------------------------------------------------


def test_record_features_exact_values(data):
    frame, examples = data["features"]["train"], data["train_examples"]
    assert len(frame) == N
    np.testing.assert_array_equal(frame["caption_chars"], [len(ex["caption"].strip()) for ex in examples])
    assert set(frame["width"]) == {SIZE} and set(frame["height"]) == {SIZE}  # truncated PNG: header still read
    assert set(frame["aspect"]) == {1.0} and set(frame["channels"]) == {3.0}
    assert frame["format"].value_counts().to_dict() == {"PNG": N}
    expected_errors = [""] * N
    expected_errors[CORRUPT] = "corrupt_image"
    assert frame["decode_error"].tolist() == expected_errors
    assert frame["decode_ok"].tolist() == [int(i != CORRUPT) for i in range(N)]
    assert frame["duplicate_key"].tolist() == [int(i == DUP_KEY) for i in range(N)]
    assert frame["duplicate_image"].tolist() == [int(i == DUP_IMAGE) for i in range(N)]
    assert frame["key"][DUP_KEY] == frame["key"][DUP_KEY - 1] == examples[DUP_KEY - 1]["key"]


def test_oov_rate_matches_word_count(data):
    frame, vocab = data["features"]["train"], set(WORDS)
    for row, ex in zip(frame.itertuples(), data["train_examples"]):
        words = re.findall(r"\w+|[^\w\s]", ex["caption"].lower())
        unknown = sum(word not in vocab for word in words)
        assert row.caption_tokens == len(words)
        np.testing.assert_allclose(row.oov_rate, unknown / len(words), rtol=0, atol=1e-12)
    assert 0 < frame["oov_rate"].mean() < 1  # the tiny vocabulary misses some words, not all


def test_missing_and_corrupt_values_are_nan(data):
    no_caption = data["features"]["no_caption"]
    assert no_caption[["caption_chars", "caption_tokens", "oov_rate"]].isna().all().all()
    assert set(no_caption["decode_error"]) == {"missing_caption"}
    garbage = to_dataset([b"", b"<html>not an image", b"\x89PNG\r\n\x1a\nbroken"], [b"x"] * 3, [b"a", b"b", b"c"])
    frame = V.record_features(garbage)
    assert frame["format"].tolist()[1:] == ["UNKNOWN", "PNG"] and frame["format"].isna().tolist()[0]
    assert frame["width"].isna().all() and frame["channels"].isna().all()
    assert frame["decode_error"].tolist() == ["empty_file", "unknown_format", "corrupt_image"]
    assert frame["duplicate_image"].tolist() == [0, 0, 0]
    assert "caption_tokens" not in frame.columns


def test_record_features_bad_input_and_max_examples(data):
    with pytest.raises(ValueError, match="tf.data.Dataset"):
        V.record_features([{"image": b""}])
    with pytest.raises(ValueError, match="'caption'"):
        V.record_features(tf.data.Dataset.from_tensor_slices({"image": [b""], "key": [b"k"]}))
    with pytest.raises(ValueError, match="infinite"):
        V.record_features(data["splits"]["clean"].repeat())
    assert len(V.record_features(data["splits"]["clean"].repeat(), max_examples=3)) == 3


# --------------------------------------------------------------------------
# Statistics, schema, validation
# --------------------------------------------------------------------------


def test_statistics_counts_and_means(data):
    stats, frame = data["stats"]["train"], data["features"]["train"]
    dataset, features = V._stats_by_name(stats)
    assert dataset.num_examples == N
    assert "key" not in features
    assert {"caption_chars", "caption_tokens", "oov_rate", "width", "format", "decode_error"} <= set(features)
    np.testing.assert_allclose(features["caption_chars"].num_stats.mean, frame["caption_chars"].mean(), rtol=1e-9)
    assert features["caption_chars"].num_stats.max == frame["caption_chars"].max()
    assert features["duplicate_key"].num_stats.mean * N == pytest.approx(1.0)
    assert V._top_values(features, "decode_error") == {"": N - 1, "corrupt_image": 1}
    missing = V._stats_by_name(data["stats"]["no_caption"])[1]["caption_chars"].num_stats.common_stats.num_missing
    assert missing == N


def test_train_fits_its_schema_and_clean_eval_passes(data):
    schema, stats = data["schema"], data["stats"]
    assert V.anomaly_list(V.validate(stats["train"], schema)) == []
    anomalies = V.validate(stats["clean"], schema, reference_statistics=stats["train"])
    assert V.anomaly_list(anomalies) == []
    assert drift(anomalies, "width") == 0.0 and drift(anomalies, "format") == 0.0
    assert 0 < drift(anomalies, "caption_tokens") < DRIFT and 0 < drift(anomalies, "oov_rate") < DRIFT


def test_size_drift_is_reported(data):
    stats = data["stats"]
    anomalies = V.validate(stats["big"], data["schema"], reference_statistics=stats["train"])
    names = dict(V.anomaly_list(anomalies))
    assert set(names) == {"width", "height"}
    assert "Jensen-Shannon" in names["width"]
    assert drift(anomalies, "width") == pytest.approx(1.0)  # disjoint supports
    # Without the reference the sizes alone are no anomaly (no domain on sizes).
    assert V.anomaly_list(V.validate(stats["big"], data["schema"])) == []


def test_new_format_and_missing_captions_are_reported(data):
    stats, schema = data["stats"], data["schema"]
    anomalies = V.validate(stats["jpeg"], schema, reference_statistics=stats["train"])
    names = dict(V.anomaly_list(anomalies))
    assert list(names) == ["format"]
    assert "Unexpected string values" in names["format"] and "Linfty" in names["format"]
    assert drift(anomalies, "format") == pytest.approx(0.5)  # PNG: 1.0 -> 0.5, JPEG: 0 -> 0.5
    names = dict(V.anomaly_list(V.validate(stats["no_caption"], schema, reference_statistics=stats["train"])))
    assert {"caption_chars", "caption_tokens", "oov_rate", "decode_error"} <= set(names)
    assert names["caption_chars"] == "Column dropped"  # TFDV's words for a feature absent everywhere
    assert names["decode_error"] == "Unexpected string values"  # 100 % missing_caption > 10 %


def test_schema_thresholds_and_round_trip(data, tmp_path):
    schema = data["schema"]
    feature = {f.name: f for f in V.infer_schema(data["stats"]["train"]).feature}  # defaults
    assert feature["width"].drift_comparator.jensen_shannon_divergence.threshold == pytest.approx(0.1)
    assert feature["format"].drift_comparator.infinity_norm.threshold == pytest.approx(0.1)
    assert feature["decode_error"].distribution_constraints.min_domain_mass == pytest.approx(0.9)
    assert feature["width"].presence.min_fraction == pytest.approx(0.9)
    # 1 of 20 train records is corrupt (5 %): above a 2 % limit the train split itself is anomalous.
    strict = V.infer_schema(data["stats"]["train"], max_bad_fraction=0.02)
    assert [name for name, _ in V.anomaly_list(V.validate(data["stats"]["train"], strict))] == ["decode_error"]
    # A looser drift threshold accepts the half-JPEG split's L-infinity distance of 0.5 ...
    loose = V.infer_schema(data["stats"]["train"], categorical_drift_threshold=0.6)
    names = dict(V.anomaly_list(V.validate(data["stats"]["jpeg"], loose, data["stats"]["train"])))
    assert "Linfty" not in names["format"]
    # From a split without failures TFDV alone would infer a bool domain for decode_error.
    ok_schema = V.infer_schema(data["stats"]["clean"])
    assert V.anomaly_list(V.validate(data["stats"]["train"], ok_schema)) == []  # 5 % failures
    assert "decode_error" in dict(V.anomaly_list(V.validate(data["stats"]["no_caption"], ok_schema)))
    # Captions missing from 1 of 20 records (5 %) pass the 90 % presence limit, from 5 (25 %) do not.
    for missing, expected in ((1, []), (5, ["caption_chars"])):
        frame = data["features"]["clean"].copy()
        frame.loc[: missing - 1, "caption_chars"] = np.nan
        found = V.anomaly_list(V.validate(V.dataset_statistics(frame), schema))
        assert [name for name, _ in found] == expected, found
    path = V.save_schema(schema, tmp_path / "s" / "schema.pbtxt")
    assert V.load_schema(path) == schema
    with pytest.raises(ValueError, match="max_bad_fraction"):
        V.infer_schema(data["stats"]["train"], max_bad_fraction=1.5)
    with pytest.raises(ValueError, match="no schema file"):
        V.load_schema(tmp_path / "absent.pbtxt")


# --------------------------------------------------------------------------
# Report, validate_data, CLI
# --------------------------------------------------------------------------


def test_report_and_summary(data, tmp_path):
    stats = data["stats"]
    anomalies = V.validate(stats["train"], data["schema"])
    text = V.summary_text(stats["train"], anomalies, "train")
    for fragment in ("== train ==", f"examples: {N}", "decode failures: 1 (corrupt_image=1)",
                     "duplicate keys: 1, duplicate images: 1", f"formats: PNG={N}", "width 16-16",
                     "anomalies: none"):  # fmt: skip
        assert fragment in text, (fragment, text)
    frame = data["features"]["train"]
    assert f"caption characters: mean {frame['caption_chars'].mean():.1f}" in text
    path = V.write_report(tmp_path / "r" / "stats.html", stats["train"], stats["big"], summary=text)
    page = open(path, encoding="utf-8").read()
    assert page.startswith("<!DOCTYPE html>") and "</html>" in page and "facets" in page.lower()
    assert "examples: 20" in page and len(page) > 1000


def test_validate_data_writes_outputs(data, tmp_path):
    result = V.validate_data(
        data["splits"]["train"], data["splits"]["big"], tokenizer=data["tokenizer"], output_dir=tmp_path,
        drift_threshold=DRIFT,
    )
    assert not result.ok
    assert sorted((s, f) for s, f, _ in result.anomalies) == [("eval", "height"), ("eval", "width")]
    assert result.schema == data["schema"]
    for key in ("schema", "statistics_html", "summary"):
        assert open(result.paths[key], encoding="utf-8").read()
    assert "== eval ==" in open(result.paths["summary"], encoding="utf-8").read()
    clean = V.validate_data(data["splits"]["clean"], max_examples=10)
    assert clean.ok and clean.eval_statistics is None and clean.paths == {} and len(clean.train_features) == 10


def test_cli_end_to_end(data, tmp_path):
    train_paths, _ = readers.write_tfrecords(data["splits"]["train"], tmp_path / "train", examples_per_shard=8)
    eval_paths, _ = readers.write_tfrecords(data["splits"]["big"], tmp_path / "eval")
    vocabulary = tmp_path / "vocab.txt"
    vocabulary.write_text("\n".join(VOCAB) + "\n")
    out = tmp_path / "out"
    argv = ["validate", "--input_format=tfrecord", f"--input={tmp_path / 'train'}",
            f"--eval_input={tmp_path / 'eval'}", f"--vocabulary={vocabulary}", f"--output_dir={out}",
            f"--drift_threshold={DRIFT}"]  # fmt: skip
    result = V.run(argv)
    assert len(train_paths) == 3 and len(eval_paths) == 1
    assert len(result.train_features) == N and "oov_rate" in result.train_features.columns
    assert {f for _, f, _ in result.anomalies} == {"width", "height"}
    assert (out / "schema.pbtxt").exists() and (out / "statistics.html").exists()
    assert "duplicate keys: 1" in (out / "summary.txt").read_text()
    with pytest.raises(SystemExit) as exit_info:  # flags still parsed from run()
        V._entry(["validate"])
    assert exit_info.value.code == 1
    V.run(argv[:3] + [f"--output_dir={tmp_path / 'out2'}"])  # train only: fits its own schema
    with pytest.raises(SystemExit) as exit_info:
        V._entry(["validate"])
    assert exit_info.value.code == 0
    assert math.isfinite(result.train_features["caption_tokens"].mean())
