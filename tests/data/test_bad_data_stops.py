"""Mostly or wholly bad data stops the run with an error instead of hanging.

The readers repeat before `decode_records` filters, so before the
``max_skip_fraction`` guard a manifest whose every row was bad made ``fit``
wait forever for its first batch.
"""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_maeclip.data import decoding, readers
from tests.tiny import make_clip


def _png(value=0, size=8):
    buffer = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _manifest(root, good, bad):
    """A TSV manifest of `good` PNG rows and `bad` rows naming a text file."""
    (root / "notes.txt").write_text("not an image")
    lines = ["filepath\ttitle"]
    for i in range(good):
        (root / f"g{i}.png").write_bytes(_png(i))
        lines.append(f"g{i}.png\ta photo {i}")
    lines += [f"notes.txt\ta note {i}" for i in range(bad)]
    (root / "m.tsv").write_text("\n".join(lines) + "\n")
    return str(root / "m.tsv")


def _drain(dataset):
    return sum(1 for _ in dataset)


def test_wholly_bad_repeated_manifest_stops_after_a_bounded_number_of_records(tmp_path):
    manifest = _manifest(tmp_path, good=0, bad=5)
    counter = decoding.SkipCounter()
    records = readers.read_csv(manifest, repeat=True)
    data = decoding.decode_records(records, counter, min_records_to_judge=40, data_name=manifest)
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        _drain(data)
    message = str(info.value)
    assert "TooManyBadRecordsError" in message and repr(manifest) in message
    assert "unknown_format=" in message and "max_skip_fraction=0.5" in message
    assert "notes.txt" in message  # an example key
    assert 40 <= counter.total < 40 + 200  # bounded: the judge point plus what runs ahead in parallel


def test_default_limits_stop_wholly_bad_repeated_tfrecords(tmp_path):
    path = str(tmp_path / "x.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:  # records without a caption
        feature = {"image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[_png()]))}
        writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    counter = decoding.SkipCounter()
    data = decoding.decode_records(readers.read_tfrecords(path, repeat=True), counter)
    with pytest.raises(tf.errors.InvalidArgumentError, match="missing_caption=.*the data"):
        _drain(data)
    assert decoding.DEFAULT_MIN_RECORDS_TO_JUDGE <= counter.total < decoding.DEFAULT_MIN_RECORDS_TO_JUDGE + 500


def test_mostly_bad_finite_data_stops_at_the_end_of_the_pass(tmp_path):
    manifest = _manifest(tmp_path, good=3, bad=7)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"7 of all 10 records \(a whole pass\)"):
        _drain(decoding.decode_records(readers.read_csv(manifest)))
    # Tolerated: below the fraction, or with the guard turned off.
    assert _drain(decoding.decode_records(readers.read_csv(manifest), max_skip_fraction=0.75)) == 3
    assert _drain(decoding.decode_records(readers.read_csv(manifest), max_skip_fraction=1.0)) == 3
    with pytest.raises(ValueError, match="max_skip_fraction"):
        decoding.decode_records(readers.read_csv(manifest), max_skip_fraction=1.5)
    with pytest.raises(ValueError, match="min_records_to_judge"):
        decoding.decode_records(readers.read_csv(manifest), min_records_to_judge=0)


def test_partly_bad_repeated_data_trains(tmp_path):
    manifest = _manifest(tmp_path, good=6, bad=2)
    data = decoding.decode_records(readers.read_csv(manifest, repeat=True), min_records_to_judge=10)
    assert _drain(data.take(30)) == 30


def test_fit_on_wholly_bad_data_raises_instead_of_hanging(preprocessor, tmp_path):
    records = readers.read_csv(_manifest(tmp_path, good=0, bad=4), repeat=True)
    data = (
        decoding.decode_records(records, min_records_to_judge=20, data_name="my-data")
        .map(lambda r: {"images": tf.image.resize(r["image"], (16, 16)), "captions": r["caption"]})
        .batch(2)
    )
    model = make_clip(preprocessor)
    model.compile(learning_rate=1e-3, warmup_steps=1, total_steps=4)
    with pytest.raises(Exception, match="TooManyBadRecordsError.*'my-data'"):
        model.fit(data, epochs=1, steps_per_epoch=2, verbose=0)
