"""Every broken kind of record, stored in each on-disk format, read and decoded.

The records are `test_decoding`'s fixture (one per good, converted and broken
case). Each format stores them its own way, so reader-level failures differ:
a CSV row can name a missing file, a WebDataset sample can lack its image,
a TFRecord cannot hold either (the writer refuses records with an error).
"""

import csv
import io
import tarfile

import numpy as np
import pytest
import tensorflow as tf

from keras_maeclip.data import decoding, readers
from tests.data.test_decoding import EXPECTED_SKIPS, GOOD_KEYS, MAX_PIXELS, fixture  # noqa: F401 (fixture)

CONTENT_SKIPS = {k: v for k, v in EXPECTED_SKIPS.items() if k not in ("missing_file", "read_error")}


def _rows(records):
    """(key, image bytes, caption bytes) of the records with content (no reader error)."""
    return [
        (key.decode(), image, caption)
        for image, caption, key, error in zip(records["image"], records["caption"], records["key"], records["error"])
        if not error
    ]


def _write(fmt, records, root):
    rows = _rows(records)
    if fmt == "tfrecord":
        data = tf.data.Dataset.from_tensor_slices(
            {"image": [r[1] for r in rows], "caption": [r[2] for r in rows], "key": [r[0] for r in rows],
             "error": [b""] * len(rows)}
        )
        paths, skipped = readers.write_tfrecords(data, root / "tfr", examples_per_shard=7)
        assert not skipped
        return readers.read_tfrecords(paths), CONTENT_SKIPS
    if fmt == "csv":
        (root / "csv").mkdir()
        with open(root / "csv" / "m.csv", "w", encoding="utf-8", errors="surrogateescape", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["filepath", "title", "key"])
            for key, image, caption in rows:
                (root / "csv" / f"{key}.bin").write_bytes(image)
                writer.writerow([f"{key}.bin", caption.decode("utf-8", errors="surrogateescape"), key])
            writer.writerow(["not_there.png", "a photo", "missing"])
        return readers.read_csv(str(root / "csv" / "m.csv"), separator=",", key_column="key"), {
            **CONTENT_SKIPS, "missing_file": 1,
        }
    path = root / "shard.tar"
    with tarfile.open(path, "w") as tar:
        # A sample's members are consecutive in the tar (the WebDataset convention).
        members = [m for k, image, c in rows for m in ((f"{k}.png", image), (f"{k}.txt", c))]
        members.append(("missing.txt", b"a photo"))  # a sample without its image
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return readers.read_webdataset([str(path)]), {**CONTENT_SKIPS, "missing_image": 1}


@pytest.mark.parametrize("fmt", ["tfrecord", "csv", "webdataset"])
def test_every_broken_kind_is_skipped_and_counted_in_every_format(fixture, tmp_path, fmt):  # noqa: F811
    records, expected = fixture
    raw, expected_skips = _write(fmt, records, tmp_path)
    counter = decoding.SkipCounter()
    out = list(decoding.decode_records(raw, counter, max_pixels=MAX_PIXELS, max_skip_fraction=1.0).as_numpy_iterator())
    assert {r["key"].decode() for r in out} == GOOD_KEYS
    assert {k: v for k, v in counter.counts().items() if v} == expected_skips
    assert counter.good == len(GOOD_KEYS)
    for r in out:  # the same pixels whatever the container
        pixels, tolerance = expected[r["key"].decode()]
        assert np.abs(r["image"].astype(int) - pixels.astype(int)).max() <= tolerance


def test_strict_mode_names_the_first_bad_record_read_from_a_file(fixture, tmp_path):  # noqa: F811
    records, _ = fixture
    raw, _ = _write("csv", records, tmp_path)
    options = tf.data.Options()
    options.autotune.enabled = False
    data = decoding.decode_records(raw, strict=True, num_parallel_calls=None, max_pixels=MAX_PIXELS)
    with pytest.raises(tf.errors.InvalidArgumentError, match="key=truncated.*corrupt_image"):
        for _ in data.with_options(options):
            pass
