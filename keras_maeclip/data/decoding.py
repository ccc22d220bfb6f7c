"""Robust decoding of raw image-caption records, counting what is skipped and why.

Web-scale image-text data always holds some records that cannot be used: a
file that vanished, a zero-byte download, an HTML error page saved as
``.jpg``, a truncated JPEG, a decompression bomb, an empty or mis-encoded
caption. `decode_records` turns the readers' raw records into clean
``{"image": uint8 (H, W, 3), "caption": str}`` examples, drops the bad ones
and counts each drop under one reason of `SKIP_REASONS` in a `SkipCounter`;
`SkipReport` prints those counts at the end of ``model.fit``.

```python
counter = SkipCounter()
examples = decode_records(readers.read_csv("train.csv"), counter=counter)
model.fit(examples.map(preprocess).batch(256), callbacks=[SkipReport(counter)])
# skipped 7 of 120 records: corrupt_image=2, empty_caption=1, missing_file=4
```

Input contract
--------------
A `tf.data.Dataset` of dicts with scalar `tf.string` entries ``"image"``
(encoded bytes, ``b""`` when the reader could not read them), ``"caption"``
(raw bytes, not yet checked to be UTF-8), ``"key"`` and ``"error"`` (``b""``
for a good read, else a reason the reader detected, e.g. ``b"missing_file"``;
may be left out, meaning ``b""``) plus any extra columns, which are passed
through unchanged. ``"error"`` itself is dropped from the output.

Checks, in order (a record is counted under the first one it fails)
-------------------------------------------------------------------
1. A reader-reported ``error``: counted under that reason when it is in
   `SKIP_REASONS`, else under ``read_error``.
2. Caption: ``caption_not_utf8`` when the bytes are not valid UTF-8,
   ``empty_caption`` when it is empty or only whitespace. Captions are
   checked before images so that no time is spent decoding an image whose
   record is dropped anyway. Over-long captions are kept (the tokenizer
   truncates them); kept captions are stripped of surrounding whitespace.
3. Image bytes: ``empty_file`` (0 bytes), ``unknown_format`` (the magic
   bytes are not JPEG, PNG, WebP, GIF or BMP).
4. Image header: ``corrupt_image`` when PIL cannot parse it,
   ``image_too_large`` when ``width * height > max_pixels``. The size is read
   from the header, before any pixel is decoded, so a decompression bomb
   costs nothing. PIL's own bomb check (``PIL.Image.MAX_IMAGE_PIXELS``,
   which errors above twice that limit) still applies when ``max_pixels`` is
   set higher; such images are also counted as ``image_too_large``.
5. Pixel decoding: ``corrupt_image`` when the decoder fails, truncated files
   included. This relies on ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` being
   False (PIL's default); this module never changes it, and
   `decode_records` warns when it finds it set to True, because PIL then
   pads truncated images with grey instead of failing.

Conversions (not skips)
-----------------------
Every kept image comes out RGB uint8. Grayscale (``L``, ``1``) is repeated
to three channels; palette (``P``) images are expanded through their
palette; ``CMYK`` uses PIL's conversion; alpha (``RGBA``, ``LA``, ``P`` with
transparency) is DROPPED, keeping the stored colour of every pixel -- the
same as ``tf.io.decode_image(..., channels=3)`` and the ``convert("RGB")``
used by common CLIP data loaders -- rather than compositing onto a
background. 16-bit grayscale PNG (PIL modes ``I;16*`` and ``I``) is scaled
to 8 bits as ``v >> 8`` (``floor(v / 256)``). Animated GIF/WebP give their
first frame. EXIF orientation is not applied (as in ``tf.io.decode_jpeg``).

Counting, parallelism and strict mode
-------------------------------------
Decoding runs in a `tf.py_function` with PIL, so it holds the GIL while it
runs; parallel map calls overlap I/O and C-level decoding only partly (no
throughput was measured). Because decoding runs in Python, the counter is
updated on the Python side and works with every Keras backend (tf.data
always runs in TensorFlow), and a dataset made by `decode_records` cannot
be serialised (tf.data service, saved datasets). With ``strict=True`` the
first bad record raises `BadRecordError`; see `decode_records` for how it
surfaces.
"""

import io
import threading
import warnings

import keras
import numpy as np
import tensorflow as tf
from PIL import Image, ImageFile

__all__ = [
    "SKIP_REASONS",
    "DEFAULT_MAX_PIXELS",
    "BadRecordError",
    "SkipCounter",
    "SkipReport",
    "decode_record",
    "decode_records",
    "sniff_format",
]

SKIP_REASONS = (
    "missing_file",
    "missing_image",
    "missing_caption",
    "unreadable_shard",
    "read_error",
    "empty_file",
    "unknown_format",
    "corrupt_image",
    "image_too_large",
    "empty_caption",
    "caption_not_utf8",
)
"""Every reason a record can be skipped for.

``missing_file``, ``missing_image`` (a record or WebDataset sample without
an image), ``missing_caption`` and ``unreadable_shard`` (a tar shard that
could not be read to its end) are reported by the readers (see
`keras_maeclip.data.readers`); ``read_error`` counts any other
reader-reported reason. The rest are found here.
"""

DEFAULT_MAX_PIXELS = 89_478_485
"""PIL's decompression-bomb warning limit (``Image.MAX_IMAGE_PIXELS``)."""

_OK = 0
_CODES = {reason: code for code, reason in enumerate(SKIP_REASONS, start=1)}

# Magic-byte prefixes -> PIL format name.
_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
)
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


class BadRecordError(ValueError):
    """A record that `decode_records(..., strict=True)` could not use."""


class SkipCounter:
    """Thread-safe counts of decoded records, good and skipped by reason.

    Records are counted when tf.data decodes them, which is not exactly when
    the model consumes them: ``prefetch`` and parallel ``map`` decode a few
    batches ahead, so after a truncated run (``steps_per_epoch``, early
    stopping) the counts can include records the model never saw. A
    ``repeat()``-ed dataset is decoded, and counted, once per pass; call
    `reset` between passes to count one pass.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._good = 0
        self._skipped = dict.fromkeys(SKIP_REASONS, 0)

    def add(self, reason=None):
        """Counts one record: good when `reason` is None, else skipped for `reason`.

        Args:
            reason: None or one of `SKIP_REASONS`.
        """
        if reason is not None and reason not in self._skipped:
            raise ValueError(f"Unknown skip reason {reason!r}; use one of {SKIP_REASONS}.")
        with self._lock:
            if reason is None:
                self._good += 1
            else:
                self._skipped[reason] += 1

    def counts(self):
        """Returns a dict of skip counts by reason, every reason of `SKIP_REASONS` included."""
        with self._lock:
            return dict(self._skipped)

    @property
    def good(self):
        """Records decoded successfully."""
        with self._lock:
            return self._good

    @property
    def skipped(self):
        """Records skipped, all reasons together."""
        with self._lock:
            return sum(self._skipped.values())

    @property
    def total(self):
        """Records seen: good plus skipped."""
        with self._lock:
            return self._good + sum(self._skipped.values())

    def reset(self):
        """Sets every count back to zero."""
        with self._lock:
            self._good = 0
            self._skipped = dict.fromkeys(SKIP_REASONS, 0)

    def summary(self):
        """Returns one line, e.g. ``"skipped 3 of 10 records: corrupt_image=2, empty_caption=1"``."""
        with self._lock:
            skipped = {reason: n for reason, n in self._skipped.items() if n}
            total = self._good + sum(skipped.values())
        line = f"skipped {sum(skipped.values())} of {total} records"
        if skipped:
            line += ": " + ", ".join(f"{reason}={n}" for reason, n in sorted(skipped.items()))
        return line

    def __repr__(self):
        with self._lock:
            skipped = sum(self._skipped.values())
            return f"SkipCounter(total={self._good + skipped}, good={self._good}, skipped={skipped})"


def sniff_format(data):
    """Returns the PIL format name of encoded image bytes from their magic bytes.

    Args:
        data: the encoded image, bytes.

    Returns:
        One of ``"JPEG"``, ``"PNG"``, ``"WEBP"``, ``"GIF"``, ``"BMP"``, or None
        when the bytes start like none of them.
    """
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    for signature, name in _SIGNATURES:
        if data.startswith(signature):
            return name
    return None


def _to_rgb(img):
    """Converts an opened PIL image to an RGB uint8 array (see the module docstring)."""
    if img.mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(img).astype(np.int64)
        gray = (np.clip(values, 0, 65535) >> 8).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # avoids PIL's warning for palette transparency
    if img.mode != "RGB":
        img = img.convert("RGB")  # drops alpha; L/1 repeated; CMYK and YCbCr via PIL
    return np.asarray(img, dtype=np.uint8)


def decode_record(image, caption, error=b"", max_pixels=DEFAULT_MAX_PIXELS):
    """Decodes one raw record in plain Python.

    Args:
        image: encoded image bytes.
        caption: raw caption bytes.
        error: the reader-reported reason, ``b""`` for a good read.
        max_pixels: the largest ``width * height`` accepted.

    Returns:
        ``(image, caption, reason, detail)``: for a good record an RGB uint8
        array of shape ``(H, W, 3)``, the stripped caption as ``str``, and
        ``reason=None``; for a bad one ``(None, None, reason, detail)`` with
        ``reason`` in `SKIP_REASONS` and ``detail`` a short explanation.
    """
    if error:
        reason = error.decode("utf-8", "replace")
        if reason not in _CODES:
            return None, None, "read_error", f"reader error {reason!r}"
        return None, None, reason, "reported by the reader"
    try:
        text = caption.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, None, "caption_not_utf8", str(e)
    text = text.strip()
    if not text:
        return None, None, "empty_caption", f"caption {caption[:40]!r}"
    if not image:
        return None, None, "empty_file", "0 bytes"
    fmt = sniff_format(image)
    if fmt is None:
        return None, None, "unknown_format", f"starts with {image[:12]!r}"
    try:
        img = Image.open(io.BytesIO(image), formats=[fmt])
    except Image.DecompressionBombError as e:
        return None, None, "image_too_large", str(e)
    except Exception as e:  # PIL raises many types for bad headers
        return None, None, "corrupt_image", f"{fmt} header: {type(e).__name__}: {e}"
    with img:
        width, height = img.size
        if width * height > max_pixels:
            return None, None, "image_too_large", f"{width}x{height} > max_pixels={max_pixels}"
        try:
            img.load()
            pixels = _to_rgb(img)
        except Exception as e:
            return None, None, "corrupt_image", f"{fmt} decode: {type(e).__name__}: {e}"
    if pixels.ndim != 3 or pixels.shape[-1] != 3 or 0 in pixels.shape:
        return None, None, "corrupt_image", f"decoded to shape {pixels.shape}"
    return pixels, text, None, ""


def _check_dataset(dataset):
    spec = getattr(dataset, "element_spec", None)
    if not isinstance(spec, dict):
        raise ValueError(
            "decode_records expects a tf.data.Dataset of dicts with 'image', 'caption', 'key' "
            f"(and optionally 'error') string entries, as the readers yield; got element_spec {spec!r}."
        )
    missing = [name for name in ("image", "caption", "key") if name not in spec]
    if missing:
        raise ValueError(
            f"decode_records: the dataset's records lack {missing}; found {sorted(spec)}. "
            "Rename the columns to 'image', 'caption' and 'key' (see keras_maeclip.data.readers)."
        )
    for name in ("image", "caption", "key", "error"):
        if name in spec and (spec[name].dtype != tf.string or spec[name].shape.rank not in (0, None)):
            raise ValueError(
                f"decode_records: record entry {name!r} must be a scalar tf.string, got {spec[name]!r}. "
                "Decode records one at a time (unbatch first)."
            )


def decode_records(
    dataset,
    counter=None,
    strict=False,
    num_parallel_calls=tf.data.AUTOTUNE,
    deterministic=None,
    max_pixels=DEFAULT_MAX_PIXELS,
):
    """Decodes raw image-caption records, dropping and counting the bad ones.

    Args:
        dataset: a `tf.data.Dataset` of raw records (see the module
            docstring): scalar `tf.string` ``"image"``, ``"caption"``,
            ``"key"``, optional ``"error"``, plus extra columns.
        counter: a `SkipCounter` to count good and skipped records in, or None.
        strict: when True the first bad record raises `BadRecordError` instead
            of being skipped (it is still counted first). The error is raised
            inside a `tf.py_function`, so iterating the dataset (or
            ``model.fit``) raises it as a TensorFlow error --
            `tf.errors.InvalidArgumentError` in TF 2.16, since
            `BadRecordError` is a ValueError -- whose message contains
            ``BadRecordError: bad record key=<key>: <reason> (<detail>)``.
        num_parallel_calls: parallelism of the decoding map; None decodes one
            record at a time (tf.data's autotuning may still prefetch ahead
            unless ``options.autotune.enabled`` is False).
        deterministic: passed to `tf.data.Dataset.map`; None follows the
            dataset's options.
        max_pixels: records whose image has more than this many pixels
            (``width * height``, read from the header) are skipped as
            ``image_too_large``.

    Returns:
        A `tf.data.Dataset` of ``{"image": uint8 (H, W, 3), "caption":
        tf.string (valid UTF-8, stripped), "key": tf.string, **extras}``.

    Raises:
        ValueError: when the records do not follow the contract, `counter` is
            not a `SkipCounter` or `max_pixels` is not a positive integer.
    """
    _check_dataset(dataset)
    if counter is not None and not isinstance(counter, SkipCounter):
        raise ValueError(f"counter must be a SkipCounter or None, got {type(counter).__name__}.")
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer)) or max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive integer, got {max_pixels!r}.")
    max_pixels = int(max_pixels)
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        warnings.warn(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True, so truncated images will be padded instead of "
            "skipped as corrupt_image; set it back to False to detect them.",
            stacklevel=2,
        )

    def decode(image, caption, key, error):
        pixels, text, reason, detail = decode_record(image.numpy(), caption.numpy(), error.numpy(), max_pixels)
        if counter is not None:
            counter.add(reason)
        if reason is None:
            return pixels, np.int32(_OK), text.encode("utf-8")
        if strict:
            name = key.numpy().decode("utf-8", "replace")
            raise BadRecordError(f"bad record key={name}: {reason} ({detail})")
        return np.zeros((0, 0, 3), np.uint8), np.int32(_CODES[reason]), b""

    def decode_map(record):
        extras = {name: value for name, value in record.items() if name not in ("image", "caption", "key", "error")}
        error = record.get("error", tf.constant(b""))
        image, reason, caption = tf.py_function(
            decode, [record["image"], record["caption"], record["key"], error], Tout=[tf.uint8, tf.int32, tf.string]
        )
        return {"image": image, "caption": caption, "key": record["key"], "reason": reason, **extras}

    def finish(record):
        record = dict(record)
        record.pop("reason")
        record["image"] = tf.ensure_shape(record["image"], (None, None, 3))
        record["caption"] = tf.ensure_shape(record["caption"], ())
        return record

    decoded = dataset.map(decode_map, num_parallel_calls=num_parallel_calls, deterministic=deterministic)
    return decoded.filter(lambda record: tf.equal(record["reason"], _OK)).map(finish)


class SkipReport(keras.callbacks.Callback):
    """Prints how many records were skipped, and why, when training ends.

    Prints one line such as ``skipped 7 of 120 records: corrupt_image=2,
    empty_caption=1, missing_file=4`` at ``on_train_end`` (and after every
    epoch with ``every_epoch=True``). Counts accumulate over the whole fit,
    every epoch's pass included (see `SkipCounter` about decode-ahead).

    ``model.fit`` draws a first batch from a separate iterator to build the
    model before ``on_train_begin``; with prefetching that decodes (and
    counts) a few batches -- on a tiny dataset, all of it -- which the epoch
    iterator then decodes again. With ``reset_on_train_begin=True`` (the
    default) the counter is reset at ``on_train_begin`` so those records,
    and anything decoded before ``fit``, are left out. A counter shared with
    the validation data counts its records too; give it its own counter.
    After every epoch the callback adds ``"skipped_records"`` and
    ``"good_records"`` to the epoch logs, so they show in the `History`; each
    report's per-reason counts (with ``"good"`` and ``"skipped"`` totals) are
    appended to ``self.history`` and the last is ``self.counts``.

    Args:
        counter: the `SkipCounter` given to `decode_records`.
        every_epoch: also print after every epoch.
        reset_on_train_begin: reset the counter when training begins.
    """

    def __init__(self, counter, every_epoch=False, reset_on_train_begin=True):
        super().__init__()
        if not isinstance(counter, SkipCounter):
            raise ValueError(f"SkipReport needs the SkipCounter given to decode_records, got {type(counter).__name__}.")
        self.counter = counter
        self.every_epoch = every_epoch
        self.reset_on_train_begin = reset_on_train_begin
        self.history = []
        self.counts = None

    def _snapshot(self):
        counts = self.counter.counts()
        counts["good"] = self.counter.good
        counts["skipped"] = sum(counts[reason] for reason in SKIP_REASONS)
        self.counts = counts
        self.history.append(counts)
        return counts

    def on_train_begin(self, logs=None):
        if self.reset_on_train_begin:
            self.counter.reset()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["skipped_records"] = self.counter.skipped
            logs["good_records"] = self.counter.good
        if self.every_epoch:
            self._snapshot()
            print(f"epoch {epoch + 1}: {self.counter.summary()}")

    def on_train_end(self, logs=None):
        self._snapshot()
        print(self.counter.summary())
