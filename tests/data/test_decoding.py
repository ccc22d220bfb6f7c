"""Tests for keras_maeclip.data.decoding: robust decoding, skip counts, strict mode, SkipReport.

The fixture writes one small file per case with PIL into tmp_path, reads the
bytes back and builds the readers' raw-record dataset directly with
`from_tensor_slices`. Expected pixels come from the NumPy arrays the files
were written from (exact for lossless formats, a stated tolerance for JPEG).
"""

import io
import threading

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageFile

from keras_maeclip.data.decoding import (
    SKIP_REASONS,
    BadRecordError,
    SkipCounter,
    SkipReport,
    decode_record,
    decode_records,
    sniff_format,
)

MAX_PIXELS = 1000  # the 40x40 "bomb" (1600 pixels) is refused, every other image is smaller
LONG_CAPTION = "a very long caption " * 250  # 5,000 characters, kept

EXPECTED_SKIPS = {
    "missing_file": 1,
    "read_error": 1,
    "empty_file": 1,
    "unknown_format": 1,
    "corrupt_image": 2,
    "image_too_large": 1,
    "empty_caption": 2,
    "caption_not_utf8": 1,
}
GOOD_KEYS = {"jpeg", "png", "webp", "gif", "bmp", "gray", "rgba", "cmyk", "png16", "long_caption"}


def _save(tmp_path, name, image, **kwargs):
    path = tmp_path / name
    image.save(path, **kwargs)
    return path.read_bytes()


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    """Returns (records: dict of lists, expected: key -> expected RGB array or (array, tolerance))."""
    tmp_path = tmp_path_factory.mktemp("decoding")
    rng = np.random.default_rng(0)
    expected, rows = {}, []

    def add(key, image, caption="a photo", error=b""):
        rows.append((image, caption.encode("utf-8") if isinstance(caption, str) else caption, key, error))

    # Good, lossless: exact pixels.
    rgb = rng.integers(0, 256, (7, 10, 3), dtype=np.uint8)
    add("png", _save(tmp_path, "a.png", Image.fromarray(rgb)))
    expected["png"] = (rgb, 0)
    webp = rng.integers(0, 256, (5, 9, 3), dtype=np.uint8)
    add("webp", _save(tmp_path, "a.webp", Image.fromarray(webp), lossless=True))
    expected["webp"] = (webp, 0)
    bmp = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    add("bmp", _save(tmp_path, "a.bmp", Image.fromarray(bmp)))
    expected["bmp"] = (bmp, 0)
    palette = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [250, 250, 250]], np.uint8)
    gif = palette[rng.integers(0, 4, (8, 6))]
    add("gif", _save(tmp_path, "a.gif", Image.fromarray(gif).quantize(colors=4)))
    expected["gif"] = (gif, 0)
    # Good, lossy: a flat colour within a JPEG tolerance.
    jpeg = np.broadcast_to(np.array([200, 40, 90], np.uint8), (12, 20, 3))
    add("jpeg", _save(tmp_path, "a.jpg", Image.fromarray(np.ascontiguousarray(jpeg)), quality=95))
    expected["jpeg"] = (jpeg, 4)
    # Converted modes.
    gray = rng.integers(0, 256, (4, 6), dtype=np.uint8)
    add("gray", _save(tmp_path, "gray.png", Image.fromarray(gray, mode="L")))
    expected["gray"] = (np.repeat(gray[..., None], 3, axis=-1), 0)  # g -> (g, g, g)
    rgba = rng.integers(0, 256, (5, 5, 4), dtype=np.uint8)
    add("rgba", _save(tmp_path, "rgba.png", Image.fromarray(rgba, mode="RGBA")))
    expected["rgba"] = (rgba[..., :3], 0)  # alpha dropped, colours kept
    cmyk = Image.new("CMYK", (7, 3), (200, 50, 0, 0))
    add("cmyk", _save(tmp_path, "cmyk.jpg", cmyk, quality=95))
    expected["cmyk"] = (np.broadcast_to(np.array([55, 205, 255], np.uint8), (3, 7, 3)), 4)  # 255 - C, 255 - M, 255 - Y
    sixteen = np.array([[0, 255, 256, 1000], [40000, 65535, 12345, 300]], np.uint16)
    png16 = Image.fromarray(sixteen)
    assert png16.mode.startswith("I;16")
    add("png16", _save(tmp_path, "16.png", png16))
    expected["png16"] = (np.repeat((sixteen >> 8).astype(np.uint8)[..., None], 3, axis=-1), 1)  # v -> v >> 8
    add("long_caption", _save(tmp_path, "long.png", Image.fromarray(rgb)), caption=LONG_CAPTION)
    expected["long_caption"] = (rgb, 0)

    # Bad images.
    noise = rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)
    whole = _save(tmp_path, "noise.jpg", Image.fromarray(noise), quality=95)
    add("truncated", whole[: len(whole) // 2])
    add("bad_png_body", b"\x89PNG\r\n\x1a\n" + bytes(rng.integers(0, 256, 64, dtype=np.uint8)))
    add("garbage", b"<html>" + bytes(rng.integers(0, 256, 100, dtype=np.uint8)))
    (tmp_path / "zero.jpg").write_bytes(b"")
    add("zero_bytes", (tmp_path / "zero.jpg").read_bytes())
    add("bomb", _save(tmp_path, "bomb.png", Image.new("RGB", (40, 40), (1, 2, 3))))
    add("missing", b"", error=b"missing_file")
    add("reader_other", b"", error=b"some_new_reader_reason")
    # Bad captions (on good images).
    good_png = expected["png"][0]
    for key, caption in [("empty_cap", ""), ("blank_cap", " \t\n "), ("not_utf8", b"\xff\xfe bad")]:
        add(key, _save(tmp_path, f"{key}.png", Image.fromarray(good_png)), caption=caption)

    records = {
        "image": [r[0] for r in rows],
        "caption": [r[1] for r in rows],
        "key": [r[2].encode() for r in rows],
        "error": [r[3] for r in rows],
        "url": [f"http://example.com/{r[2]}".encode() for r in rows],  # an extra column
    }
    return records, expected


def _raw(records):
    return tf.data.Dataset.from_tensor_slices(records)


def _expected_counts():
    counts = dict.fromkeys(SKIP_REASONS, 0)
    counts.update(EXPECTED_SKIPS)
    return counts


def test_good_records_come_out_decoded_and_bad_ones_are_counted_by_reason(fixture):
    records, expected = fixture
    counter = SkipCounter()
    dataset = decode_records(_raw(records), counter=counter, max_pixels=MAX_PIXELS, deterministic=True)
    assert dataset.element_spec["image"].dtype == tf.uint8
    assert dataset.element_spec["image"].shape.as_list() == [None, None, 3]
    assert set(dataset.element_spec) == {"image", "caption", "key", "url"}
    out = {r["key"].decode(): r for r in dataset.as_numpy_iterator()}

    assert set(out) == GOOD_KEYS
    assert counter.counts() == _expected_counts()
    assert counter.good == len(GOOD_KEYS)
    assert counter.skipped == sum(EXPECTED_SKIPS.values())
    assert counter.total == len(records["key"])
    assert repr(counter) == f"SkipCounter(total={counter.total}, good={counter.good}, skipped={counter.skipped})"
    for key, (want, tolerance) in expected.items():
        image = out[key]["image"]
        assert image.dtype == np.uint8 and image.shape == want.shape, key
        np.testing.assert_allclose(image.astype(int), want.astype(int), atol=tolerance, err_msg=key)
        assert out[key]["url"] == f"http://example.com/{key}".encode()
    assert out["long_caption"]["caption"].decode() == LONG_CAPTION.strip()
    assert len(out["long_caption"]["caption"]) == 4999  # only the trailing space is stripped
    assert not ImageFile.LOAD_TRUNCATED_IMAGES  # PIL's global state is untouched


def test_captions_are_stripped_and_kept_as_utf8():
    png = _png_bytes()
    records = {"image": [png], "caption": ["  café ☕ \n".encode()], "key": [b"k"], "error": [b""]}
    (row,) = list(decode_records(_raw(records)).as_numpy_iterator())
    assert row["caption"].decode("utf-8") == "café ☕"


def test_counter_counts_every_pass_and_resets(fixture):
    records, _ = fixture
    counter = SkipCounter()
    dataset = decode_records(_raw(records), counter=counter, max_pixels=MAX_PIXELS).repeat(2)
    assert sum(1 for _ in dataset) == 2 * len(GOOD_KEYS)
    assert counter.counts() == {reason: 2 * n for reason, n in _expected_counts().items()}
    counter.reset()
    assert counter.total == 0 and counter.counts() == dict.fromkeys(SKIP_REASONS, 0)


def test_strict_mode_raises_on_the_first_bad_record_with_its_key_and_reason(fixture):
    records, _ = fixture
    keys = [k.decode() for k in records["key"]]
    order = [keys.index("png"), keys.index("truncated"), keys.index("garbage")]
    subset = {name: [values[i] for i in order] for name, values in records.items()}
    counter = SkipCounter()
    dataset = decode_records(_raw(subset), counter=counter, strict=True, num_parallel_calls=None, max_pixels=MAX_PIXELS)
    options = tf.data.Options()
    options.autotune.enabled = False  # no decode-ahead, so counting stops at the bad record
    dataset = dataset.with_options(options)
    iterator = iter(dataset)
    assert next(iterator)["key"].numpy() == b"png"
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        next(iterator)
    message = str(info.value)
    assert "BadRecordError" in message and "key=truncated" in message and "corrupt_image" in message
    assert counter.counts()["corrupt_image"] == 1 and counter.counts()["unknown_format"] == 0


def test_decode_record_reports_reasons_and_default_pixel_limit(fixture):
    records, _ = fixture
    bomb = records["image"][[k.decode() for k in records["key"]].index("bomb")]
    image, caption, reason, _ = decode_record(bomb, b"ok")
    assert reason is None and image.shape == (40, 40, 3) and caption == "ok"  # 1,600 < default limit
    assert decode_record(bomb, b"ok", max_pixels=1599)[2] == "image_too_large"
    assert decode_record(bomb, b"ok", max_pixels=1600)[2] is None
    with pytest.raises(BadRecordError):
        raise BadRecordError("is a ValueError")
    assert issubclass(BadRecordError, ValueError)


def test_sniff_format_reads_magic_bytes():
    assert sniff_format(b"\xff\xd8\xff\xe0rest") == "JPEG"
    assert sniff_format(b"\x89PNG\r\n\x1a\nrest") == "PNG"
    assert sniff_format(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "WEBP"
    assert sniff_format(b"RIFF\x00\x00\x00\x00WAVEfmt ") is None
    assert sniff_format(b"GIF89a...") == "GIF" and sniff_format(b"BM....") == "BMP"
    assert sniff_format(b"") is None and sniff_format(b"<html>") is None


def test_bad_arguments_raise_clear_value_errors():
    good = {"image": [b""], "caption": [b"x"], "key": [b"k"]}
    with pytest.raises(ValueError, match=r"lack \['key'\]"):
        decode_records(_raw({"image": [b""], "caption": [b"x"]}))
    with pytest.raises(ValueError, match="dicts"):
        decode_records(tf.data.Dataset.from_tensor_slices([b"x"]))
    with pytest.raises(ValueError, match="unbatch"):
        decode_records(_raw(good).batch(1))
    with pytest.raises(ValueError, match="max_pixels"):
        decode_records(_raw(good), max_pixels=0)
    with pytest.raises(ValueError, match="SkipCounter"):
        decode_records(_raw(good), counter={})
    with pytest.raises(ValueError, match="Unknown skip reason"):
        SkipCounter().add("nope")


def test_error_column_is_optional_and_truncation_flag_warns(monkeypatch):
    records = {"image": [_png_bytes()], "caption": [b"ok"], "key": [b"k"]}
    assert len(list(decode_records(_raw(records)))) == 1
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.warns(UserWarning, match="LOAD_TRUNCATED_IMAGES"):
        decode_records(_raw(records))


def test_counter_is_thread_safe():
    counter = SkipCounter()

    def work():
        for i in range(2000):
            counter.add(None if i % 2 else "corrupt_image")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counter.good == 4000 and counter.counts()["corrupt_image"] == 4000


@pytest.mark.filterwarnings("ignore:Your input ran out of data", "ignore:`shuffle=True` was passed")
def test_skip_report_prints_counts_after_fit(fixture, capsys):
    records, _ = fixture
    counter = SkipCounter()
    decoded = decode_records(_raw(records), counter=counter, max_pixels=MAX_PIXELS)
    train = decoded.map(lambda r: (tf.image.resize(r["image"], (8, 8)) / 255.0, tf.zeros((1,)))).batch(4)
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    report = SkipReport(counter)
    history = model.fit(train, epochs=1, verbose=0, callbacks=[report])

    skipped = sum(EXPECTED_SKIPS.values())
    line = f"skipped {skipped} of {len(records['key'])} records: " + ", ".join(
        f"{reason}={n}" for reason, n in sorted(EXPECTED_SKIPS.items())
    )
    assert line in capsys.readouterr().out.splitlines()
    assert counter.counts() == _expected_counts()
    assert report.counts == {**_expected_counts(), "good": len(GOOD_KEYS), "skipped": skipped}
    assert len(report.history) == 1
    assert history.history["skipped_records"] == [skipped]
    assert history.history["good_records"] == [len(GOOD_KEYS)]


@pytest.mark.filterwarnings("ignore:Your input ran out of data", "ignore:`shuffle=True` was passed")
def test_skip_report_every_epoch(capsys):
    counter = SkipCounter()
    records = {"image": [_png_bytes(), b""], "caption": [b"a", b"b"], "key": [b"a", b"b"], "error": [b"", b""]}
    train = decode_records(_raw(records), counter=counter).map(
        lambda r: (tf.image.resize(r["image"], (8, 8)), tf.zeros((1,)))
    )
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    report = SkipReport(counter, every_epoch=True)
    model.fit(train.batch(1), epochs=2, verbose=0, callbacks=[report])
    lines = capsys.readouterr().out.splitlines()
    assert "epoch 1: skipped 1 of 2 records: empty_file=1" in lines
    assert "epoch 2: skipped 2 of 4 records: empty_file=2" in lines
    assert lines[-1] == "skipped 2 of 4 records: empty_file=2"
    assert len(report.history) == 3
    with pytest.raises(ValueError, match="SkipCounter"):
        SkipReport(None)


def _png_bytes():
    buffer = io.BytesIO()
    Image.fromarray(np.full((3, 4, 3), 7, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()
