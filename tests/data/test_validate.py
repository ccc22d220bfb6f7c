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
import pandas as pd
import pytest
import tensorflow as tf
from PIL import Image

from keras_maeclip.data import readers, synthetic
from keras_maeclip.data import tfdv_step
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


def steps_or_skip():
    try:
        return V._steps_runner()
    except ImportError as e:  # CI builds the TFDV environment (make test depends on make validate-env)
        pytest.skip(str(e))


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
    return dict(tokenizer=tokenizer, train_examples=train_examples, splits=splits, features=features)


@pytest.fixture(scope="module")
def steps(data, tmp_path_factory):
    """Every TFDV step the checks below need, in two batches (one process each outside TFDV's environment)."""
    run, f = steps_or_skip(), data["features"]
    report_dir = tmp_path_factory.mktemp("report")
    first = {
        "clean": dict(frames={"train": f["train"], "eval": f["clean"]}, schema_options={"drift_threshold": DRIFT}),
        "big": dict(frames={"train": f["train"], "eval": f["big"]}, schema_options={"drift_threshold": DRIFT},
                    output_dir=report_dir),
        "jpeg": dict(frames={"train": f["train"], "eval": f["jpeg"]}, schema_options={"drift_threshold": DRIFT}),
        "no_caption": dict(frames={"train": f["train"], "eval": f["no_caption"]},
                           schema_options={"drift_threshold": DRIFT}),
        "defaults": dict(frames={"train": f["train"]}),
        "strict": dict(frames={"train": f["train"]}, schema_options={"max_bad_fraction": 0.02}),
        "loose": dict(frames={"train": f["train"], "eval": f["jpeg"]},
                      schema_options={"categorical_drift_threshold": 0.6}),
        "clean_schema": dict(frames={"train": f["clean"]}),
    }  # fmt: skip
    out = dict(zip(first, run(list(first.values()))))
    schema, ok_schema = out["clean"]["schema"], out["clean_schema"]["schema"]
    second = {
        "big_alone": dict(frames={"train": f["big"]}, schema=schema),
        "train_vs_ok": dict(frames={"train": f["train"]}, schema=ok_schema),
        "no_caption_vs_ok": dict(frames={"train": f["no_caption"]}, schema=ok_schema),
    }
    for missing in (1, 5):  # captions missing from 1 of 20 records (5 %) and from 5 (25 %)
        frame = f["clean"].copy()
        frame.loc[: missing - 1, "caption_chars"] = np.nan
        second[f"missing_{missing}"] = dict(frames={"train": frame}, schema=schema)
    out.update(zip(second, run(list(second.values()))))
    out["report_dir"] = report_dir
    return out


def names(out, split="eval"):
    return dict(V.anomaly_list(out[f"{split}_anomalies"]))


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
# Statistics, schema, validation (the TFDV step, in-process or in TFDV's environment)
# --------------------------------------------------------------------------


def test_statistics_counts_and_means(data, steps):
    stats, frame = steps["clean"]["train_statistics"], data["features"]["train"]
    dataset, features = tfdv_step._stats_by_name(stats)
    assert dataset.num_examples == N
    assert "key" not in features
    assert {"caption_chars", "caption_tokens", "oov_rate", "width", "format", "decode_error"} <= set(features)
    np.testing.assert_allclose(features["caption_chars"].num_stats.mean, frame["caption_chars"].mean(), rtol=1e-9)
    assert features["caption_chars"].num_stats.max == frame["caption_chars"].max()
    assert features["duplicate_key"].num_stats.mean * N == pytest.approx(1.0)
    assert tfdv_step._top_values(features, "decode_error") == {"": N - 1, "corrupt_image": 1}
    no_caption = tfdv_step._stats_by_name(steps["no_caption"]["eval_statistics"])[1]
    assert no_caption["caption_chars"].num_stats.common_stats.num_missing == N


def test_train_fits_its_schema_and_clean_eval_passes(steps):
    out = steps["clean"]
    assert names(out, "train") == {} and names(out) == {} and out["anomalies"] == []
    anomalies = out["eval_anomalies"]
    assert drift(anomalies, "width") == 0.0 and drift(anomalies, "format") == 0.0
    assert 0 < drift(anomalies, "caption_tokens") < DRIFT and 0 < drift(anomalies, "oov_rate") < DRIFT


def test_size_drift_is_reported(steps):
    found = names(steps["big"])
    assert set(found) == {"width", "height"}
    assert "Jensen-Shannon" in found["width"]
    assert drift(steps["big"]["eval_anomalies"], "width") == pytest.approx(1.0)  # disjoint supports
    # Without the reference the sizes alone are no anomaly (no domain on sizes).
    assert names(steps["big_alone"], "train") == {}


def test_new_format_and_missing_captions_are_reported(steps):
    found = names(steps["jpeg"])
    assert list(found) == ["format"]
    assert "Unexpected string values" in found["format"] and "Linfty" in found["format"]
    assert drift(steps["jpeg"]["eval_anomalies"], "format") == pytest.approx(0.5)  # PNG: 1.0 -> 0.5, JPEG: 0 -> 0.5
    found = names(steps["no_caption"])
    assert {"caption_chars", "caption_tokens", "oov_rate", "decode_error"} <= set(found)
    assert found["caption_chars"] == "Column dropped"  # TFDV's words for a feature absent everywhere
    assert found["decode_error"] == "Unexpected string values"  # 100 % missing_caption > 10 %


def test_schema_thresholds_and_round_trip(data, steps, tmp_path):
    feature = {f.name: f for f in steps["defaults"]["schema"].feature}
    assert feature["width"].drift_comparator.jensen_shannon_divergence.threshold == pytest.approx(0.1)
    assert feature["format"].drift_comparator.infinity_norm.threshold == pytest.approx(0.1)
    assert feature["decode_error"].distribution_constraints.min_domain_mass == pytest.approx(0.9)
    assert feature["width"].presence.min_fraction == pytest.approx(0.9)
    drifting = {f.name: f for f in steps["clean"]["schema"].feature}
    assert drifting["width"].drift_comparator.jensen_shannon_divergence.threshold == pytest.approx(DRIFT)
    # 1 of 20 train records is corrupt (5 %): above a 2 % limit the train split itself is anomalous.
    assert list(names(steps["strict"], "train")) == ["decode_error"]
    # A looser drift threshold accepts the half-JPEG split's L-infinity distance of 0.5 ...
    assert "Linfty" not in names(steps["loose"])["format"]
    # From a split without failures TFDV alone would infer a bool domain for decode_error.
    assert names(steps["train_vs_ok"], "train") == {}  # 5 % failures
    assert "decode_error" in names(steps["no_caption_vs_ok"], "train")
    # Captions missing from 1 of 20 records (5 %) pass the 90 % presence limit, from 5 (25 %) do not.
    assert names(steps["missing_1"], "train") == {}
    assert list(names(steps["missing_5"], "train")) == ["caption_chars"]
    schema = steps["clean"]["schema"]
    path = V.save_schema(schema, tmp_path / "s" / "schema.pbtxt")
    assert V.load_schema(path) == schema
    with pytest.raises(ValueError, match="max_bad_fraction"):
        V.validate_data(data["splits"]["clean"], max_bad_fraction=1.5)
    with pytest.raises(ValueError, match="unknown schema options"):
        V.validate_data(data["splits"]["clean"], drift_treshold=0.2)
    with pytest.raises(ValueError, match="no schema file"):
        V.load_schema(tmp_path / "absent.pbtxt")
    (tmp_path / "bad.pbtxt").write_text("feature { nme: 'x' }")
    with pytest.raises(ValueError, match="not a schema"):
        V.load_schema(tmp_path / "bad.pbtxt")


def test_report_and_summary(data, steps):
    out = steps["clean"]
    text = V.summary_text(out["train_statistics"], out["train_anomalies"], "train")
    for fragment in ("== train ==", f"examples: {N}", "decode failures: 1 (corrupt_image=1)",
                     "duplicate keys: 1, duplicate images: 1", f"formats: PNG={N}", "width 16-16",
                     "anomalies: none"):  # fmt: skip
        assert fragment in text, (fragment, text)
    assert out["summary"].startswith(text)
    frame = data["features"]["train"]
    assert f"caption characters: mean {frame['caption_chars'].mean():.1f}" in text
    report = steps["report_dir"]
    assert steps["big"]["paths"]["statistics_html"] == str(report / "statistics.html")
    page = (report / "statistics.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "</html>" in page and "facets" in page.lower()
    assert "examples: 20" in page and len(page) > 1000
    assert V.load_schema(report / "schema.pbtxt") == steps["big"]["schema"]
    assert (report / "summary.txt").read_text(encoding="utf-8") == steps["big"]["summary"]


def test_step_errors_come_back_as_one_line(data):
    run = steps_or_skip()
    empty = data["features"]["train"].iloc[:0]
    with pytest.raises(ValueError, match=r"^dataset_statistics: the split has no record; check the input paths\.$"):
        run([dict(frames={"train": empty})])


def test_missing_tfdv_names_both_ways(monkeypatch):
    monkeypatch.delenv(V.TFDV_PYTHON_ENV, raising=False)
    monkeypatch.setattr(tfdv_step, "tfdv_importable", lambda: False)
    monkeypatch.setattr(V, "tfdv_python", lambda: None)
    with pytest.raises(ImportError) as info:
        V.validate_data(tf.data.Dataset.from_tensor_slices({"image": [b""], "caption": [b"x"], "key": [b"k"]}))
    message = str(info.value)
    assert "\n" not in message
    assert "pip install keras-maeclip[validate]" in message and "make validate-env" in message
    monkeypatch.undo()
    monkeypatch.setenv(V.TFDV_PYTHON_ENV, "/nonexistent/python")
    with pytest.raises(ValueError, match="KERAS_MAECLIP_TFDV_PYTHON.*not an executable Python"):
        V.tfdv_python()


def test_feature_tables_cross_environments_unchanged(data, tmp_path):
    frame = data["features"]["train"].copy()
    frame.loc[2, "format"] = None
    frame.loc[3, "width"] = np.nan
    tfdv_step.write_frame(frame, tmp_path / "t.json")
    back = tfdv_step.read_frame(tmp_path / "t.json")
    assert list(back.columns) == list(frame.columns)
    for name in frame.columns:
        a, b = frame[name].tolist(), back[name].tolist()
        same = [(x == y) or (pd.isna(x) and pd.isna(y)) for x, y in zip(a, b)]
        assert all(same), name
    assert back["format"].isna().tolist()[2] and not back["format"].isna().tolist()[1]
    assert back["decode_error"].tolist()[0] == ""  # an empty string is a value, not missing


def test_validate_data_writes_outputs(data, steps, tmp_path):
    result = V.validate_data(
        data["splits"]["train"], data["splits"]["big"], tokenizer=data["tokenizer"], output_dir=tmp_path,
        drift_threshold=DRIFT,
    )
    assert not result.ok
    assert sorted((s, f) for s, f, _ in result.anomalies) == [("eval", "height"), ("eval", "width")]
    assert result.schema == steps["big"]["schema"]
    assert result.train_statistics.datasets[0].num_examples == N
    for key in ("schema", "statistics_html", "summary"):
        assert open(result.paths[key], encoding="utf-8").read()
    assert "== eval ==" in open(result.paths["summary"], encoding="utf-8").read()
    clean = V.validate_data(data["splits"]["clean"], max_examples=10)
    assert clean.ok and clean.eval_statistics is None and clean.paths == {} and len(clean.train_features) == 10


def test_cli_end_to_end(data, tmp_path):
    steps_or_skip()
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
