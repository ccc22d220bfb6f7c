"""Property-based fuzz test of the readers and the decoder (Hypothesis).

Each example is a random mix of good and broken records written as a TSV
manifest, a CSV manifest, a WebDataset tar or a TFRecord file, read back by
the public reader and decoded with a `SkipCounter`. The properties: nothing
crashes, every record is either yielded or counted (good + skipped equals
the records written, the counts by reason are exactly the expected ones,
the yielded keys are exactly the good ones), and repeated mostly bad data
stops with `TooManyBadRecordsError` after a bounded number of records
instead of hanging. Runs are derandomized (a fixed sequence of examples) so
CI is stable; `RECORDS_GENERATED` is reported at the end of the module.
"""

import csv
import io
import tarfile
import warnings

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from keras_maeclip.data import decoding, readers

MAX_PIXELS = 100  # a 16x16 image (256 pixels) is too large, the 8x8 ones are fine
MAX_MEMBER_BYTES = 2000
SETTINGS = settings(
    max_examples=6, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
RECORDS_GENERATED = {"csv": 0, "tsv": 0, "webdataset": 0, "tfrecord": 0}
OUTCOMES = {fmt: {} for fmt in RECORDS_GENERATED}  # format -> reason (or "good") -> records
STOPS = {fmt: 0 for fmt in RECORDS_GENERATED}  # repeated mostly bad runs stopped by the guard


def _png(side=8, value=0):
    buffer = io.BytesIO()
    Image.fromarray(np.full((side, side, 3), value, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg():
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), 99, np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


# image kind -> (bytes, the decoder's reason or None)
IMAGES = {
    "png": (_png(), None),
    "jpeg": (_jpeg(), None),
    "empty": (b"", "empty_file"),
    "html": (b"<html><body>404 not found</body></html>", "unknown_format"),
    "truncated": (_png(value=7)[:40], "corrupt_image"),
    "too_large": (_png(side=16), "image_too_large"),
}
# reader-level faults, per format
FAULTS = {
    "tsv": ["missing_file", "missing_caption", "extra_columns"],
    "csv": ["missing_file", "missing_caption", "malformed_row"],
    "webdataset": ["missing_image", "missing_caption", "member_too_large", "unrequested_member"],
    "tfrecord": ["missing_image", "missing_caption"],
}
TEXT = st.text(alphabet=list('abc XYZ,."\'é漢;|'), max_size=12)


@st.composite
def record_mixes(draw, fmt):
    n = draw(st.integers(1, 12))
    out = []
    for _ in range(n):
        fault = draw(st.sampled_from([None, None, None] + FAULTS[fmt]))
        image = draw(st.sampled_from(sorted(IMAGES)))
        caption_kind = draw(st.sampled_from(["text", "text", "text", "blank", "not_utf8"]))
        text = draw(TEXT)
        caption = {"text": ("a " + text).encode(), "blank": b" " * draw(st.integers(0, 2)),
                   "not_utf8": b"caf\xff" + text.encode()}[caption_kind]
        out.append({"fault": fault, "image": image, "caption": caption})
    return out, draw(st.booleans())


def _expected_reason(fmt, record):
    fault = record["fault"]
    if fault not in (None, "unrequested_member"):
        return fault
    try:
        if not record["caption"].decode("utf-8").strip():
            return "empty_caption"
    except UnicodeDecodeError:
        return "caption_not_utf8"
    return IMAGES[record["image"]][1]


def _write_manifest(root, fmt, mix):
    separator = "\t" if fmt == "tsv" else ","
    lines = [separator.join(["filepath", "title", "key"]).encode()]
    for i, record in enumerate(mix):
        name = f"img{i}.bin"
        (root / name).write_bytes(IMAGES[record["image"]][0])
        caption = record["caption"]
        if fmt == "csv":  # standard quoting, as csv.writer writes it
            buffer = io.StringIO()
            csv.writer(buffer, lineterminator="").writerow(
                [name, caption.decode("utf-8", "surrogateescape"), f"k{i}"])
            row = buffer.getvalue().encode("utf-8", "surrogateescape")
        else:
            row = b"\t".join([name.encode(), caption, f"k{i}".encode()])
        fault = record["fault"]
        if fault == "missing_file":
            row = row.replace(name.encode(), f"gone{i}.png".encode(), 1)
        elif fault == "missing_caption":
            row = name.encode()  # too short to hold the caption
        elif fault == "extra_columns":
            row += b"\tstray cell"
        elif fault == "malformed_row":
            row = f'{name},"never closed quote,k{i}'.encode()
        lines.append(row)
    (root / f"m.{fmt}").write_bytes(b"\n".join(lines) + b"\n")
    return lambda **o: readers.read_csv(str(root / f"m.{fmt}"), separator=separator, key_column="key", **o)


def _write_tar(root, mix):
    path = root / "s.tar"
    with tarfile.open(path, "w") as tar:
        for i, record in enumerate(mix):
            fault = record["fault"]
            members = []
            if fault != "missing_image":
                members.append((f"k{i}.png", IMAGES[record["image"]][0]))
            if fault == "unrequested_member":
                members.append((f"k{i}.npy", b"\0" * 5000))  # over the limit, but nobody asks for it
            if fault == "member_too_large":
                members.append((f"k{i}.txt", record["caption"] + b" " * MAX_MEMBER_BYTES))
            elif fault != "missing_caption":
                members.append((f"k{i}.txt", record["caption"]))
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return lambda **o: readers.read_webdataset(str(path), max_member_bytes=MAX_MEMBER_BYTES, **o)


def _write_tfrecord(root, mix):
    path = str(root / "r.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        for i, record in enumerate(mix):
            feature = {"key": f"k{i}".encode()}
            if record["fault"] != "missing_image":
                feature["image"] = IMAGES[record["image"]][0]
            if record["fault"] != "missing_caption":
                feature["caption"] = record["caption"]
            feature = {k: tf.train.Feature(bytes_list=tf.train.BytesList(value=[v])) for k, v in feature.items()}
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    return lambda **o: readers.read_tfrecords(path, **o)


def _check(tmp_path_factory, fmt, mix, repeat):
    root = tmp_path_factory.mktemp(fmt)
    if fmt in ("tsv", "csv"):
        read = _write_manifest(root, fmt, mix)
    elif fmt == "webdataset":
        read = _write_tar(root, mix)
    else:
        read = _write_tfrecord(root, mix)
    RECORDS_GENERATED[fmt] += len(mix)
    expected = {}
    good = set()
    for i, record in enumerate(mix):
        reason = _expected_reason(fmt, record)
        if reason is None:
            good.add(f"k{i}".encode())
        else:
            expected[reason] = expected.get(reason, 0) + 1
        seen = OUTCOMES[fmt]
        seen[reason or "good"] = seen.get(reason or "good", 0) + 1

    counter = decoding.SkipCounter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the readers warn about the faults they count
        data = decoding.decode_records(read(), counter, max_pixels=MAX_PIXELS, max_skip_fraction=1.0)
        keys = [r["key"] for r in data.take(len(mix) + 1).as_numpy_iterator()]
    assert sorted(keys) == sorted(good)  # each good record exactly once, nothing more
    assert {k: v for k, v in counter.counts().items() if v} == expected
    assert counter.total == len(mix)

    if not repeat:
        return
    n, bad = len(mix), len(mix) - len(good)
    counter = decoding.SkipCounter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = decoding.decode_records(read(repeat=True), counter, max_pixels=MAX_PIXELS, min_records_to_judge=3 * n)
        if bad > n / 2:
            with pytest.raises(tf.errors.InvalidArgumentError, match="TooManyBadRecordsError"):
                for _ in data:
                    pass
            assert counter.total < 3 * n + 200  # bounded: judged by 3 passes, plus what ran ahead
            STOPS[fmt] += 1
        elif 4 * bad <= n:
            assert len(list(data.take(2 * len(good)))) == 2 * len(good)


@pytest.mark.parametrize("fmt", ["tsv", "csv", "webdataset", "tfrecord"])
def test_fuzz_every_record_is_yielded_or_counted(tmp_path_factory, fmt):
    @SETTINGS
    @given(record_mixes(fmt))
    def run(case):
        mix, repeat = case
        _check(tmp_path_factory, fmt, mix, repeat)

    run()
    print(f"fuzz {fmt}: {RECORDS_GENERATED[fmt]} records generated, outcomes {OUTCOMES[fmt]}, "
          f"{STOPS[fmt]} repeated runs stopped")
    assert len(OUTCOMES[fmt]) >= 5  # the mixes did reach several kinds of broken records
