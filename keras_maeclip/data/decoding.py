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
   ``image_too_large`` when ``width * height > max_pixels`` (default
   `DEFAULT_MAX_PIXELS`, 4096 x 4096). The size is read
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
to 8 bits as ``v >> 8`` (``floor(v / 256)``), a block of rows at a time in
its own dtype (never through int64). Animated GIF/WebP give their
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
    "DEFAULT_MAX_SKIP_FRACTION",
    "DEFAULT_MIN_RECORDS_TO_JUDGE",
    "BadRecordError",
    "TooManyBadRecordsError",
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
    "member_too_large",
    "malformed_row",
    "extra_columns",
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
an image), ``missing_caption``, ``unreadable_shard`` (a tar shard that
could not be read to its end), ``member_too_large`` (a WebDataset sample
with a member over the reader's ``max_member_bytes``), ``malformed_row`` (a
CSV row whose quoting cannot be parsed) and ``extra_columns`` (a manifest
row with more cells than its header) are reported by the readers (see
`keras_maeclip.data.readers`); ``read_error`` counts any other
reader-reported reason. The rest are found here.
"""

DEFAULT_MAX_PIXELS = 4096 * 4096
"""16,777,216 pixels (4096 x 4096), the default largest image decoded.

Decoding one image holds PIL's pixels (up to 4 bytes a pixel), the RGB
uint8 result (3) and the copies made on the way: the peak resident memory
of one decode, measured with ``ru_maxrss`` on 4096 x 4096 PNGs, was about
10 bytes a pixel for RGB, 14 for RGBA and 7 for 16-bit gray, so 120 to
235 MB for an image of this size, and about 1 GB for four such decodes at
once. Larger images are skipped as ``image_too_large`` from their header,
before any pixel is decoded; pass ``max_pixels`` to `decode_records` to
accept them.
"""

DEFAULT_MAX_SKIP_FRACTION = 0.5
"""Default largest fraction of skipped records before `decode_records` stops the run."""

DEFAULT_MIN_RECORDS_TO_JUDGE = 1000
"""Default number of records `decode_records` decodes before it judges the skip fraction."""

_FIXES = {
    "missing_file": "the image paths do not exist (relative paths resolve against the manifest's folder)",
    "missing_image": "the samples have no jpg/jpeg/png/webp member",
    "missing_caption": "the records have no caption (check caption_key / the txt or json members)",
    "unreadable_shard": "the shards are truncated or not tar files",
    "member_too_large": "tar members are larger than max_member_bytes",
    "malformed_row": "the manifest's quoting cannot be parsed (check separator= and quoting=)",
    "extra_columns": "manifest rows have more cells than the header (a separator inside a caption? check "
    "separator= and quoting=)",
    "read_error": "the reader reported errors",
    "empty_file": "the image files are empty",
    "unknown_format": "the image bytes are not JPEG/PNG/WebP/GIF/BMP (wrong column, or HTML error pages?)",
    "corrupt_image": "the images are truncated or corrupt",
    "image_too_large": "the images are larger than max_pixels (pass a larger max_pixels to decode them)",
    "empty_caption": "the captions are empty (check caption_key)",
    "caption_not_utf8": "the captions are not UTF-8",
}

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


class TooManyBadRecordsError(BadRecordError):
    """Raised by `decode_records` when more than ``max_skip_fraction`` of the records are bad."""


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


_ROWS_PER_BLOCK = 256


def _sixteen_bit_to_rgb(img):
    """16-bit grayscale (``I;16*``, ``I``) to RGB uint8 as ``v >> 8``, clipped to [0, 65535].

    Converts a block of rows at a time, in the image's own dtype (uint16 or
    int32), straight into the uint8 output: besides PIL's pixels and the
    output, memory stays at a few bytes a pixel of one block.
    """
    values = np.asarray(img)  # uint16 (I;16*) or int32 (I); read-only view of PIL's bytes
    height, width = values.shape[:2]
    out = np.empty((height, width, 3), np.uint8)
    for start in range(0, height, _ROWS_PER_BLOCK):
        block = values[start:start + _ROWS_PER_BLOCK]
        if block.dtype.kind == "i":
            block = np.clip(block, 0, 65535)
        out[start:start + _ROWS_PER_BLOCK] = (block >> 8).astype(np.uint8)[..., None]
    return out


def _to_rgb(img):
    """Converts an opened PIL image to an RGB uint8 array (see the module docstring)."""
    if img.mode in _SIXTEEN_BIT_MODES:
        return _sixteen_bit_to_rgb(img)
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
    max_skip_fraction=DEFAULT_MAX_SKIP_FRACTION,
    min_records_to_judge=DEFAULT_MIN_RECORDS_TO_JUDGE,
    data_name=None,
):
    """Decodes raw image-caption records, dropping and counting the bad ones.

    Bad data stops the run instead of starving it: the readers repeat
    BEFORE this filter, so on data whose every record is bad ``fit`` would
    otherwise wait forever for a first batch. Once ``min_records_to_judge``
    records have been decoded, and at the end of every pass over finite
    data whatever its size, `TooManyBadRecordsError` is raised as soon as
    more than ``max_skip_fraction`` of the records decoded so far (by this
    dataset, every iterator together) were skipped. Its message names the
    data (``data_name``), the counts by reason with an example key each, and
    what to fix. So wholly bad repeated data stops after
    ``min_records_to_judge`` records.

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
            ``image_too_large``. Default `DEFAULT_MAX_PIXELS` (4096 x 4096,
            about 170 MB at the peak of one decode).
        max_skip_fraction: float in [0, 1], default 0.5. The largest
            fraction of skipped records tolerated; 1.0 never stops.
        min_records_to_judge: int >= 1, default 1000. Records decoded before
            the fraction is judged (the end of a finite pass is judged
            whatever its size).
        data_name: str or None. How the error names the data (e.g. the
            ``--data`` path); None says "the data".

    Returns:
        A `tf.data.Dataset` of ``{"image": uint8 (H, W, 3), "caption":
        tf.string (valid UTF-8, stripped), "key": tf.string, **extras}``.

    Raises:
        ValueError: when the records do not follow the contract, `counter` is
            not a `SkipCounter` or `max_pixels` is not a positive integer.

    Iterating the result raises (inside ``fit`` too) a TensorFlow error
    whose message holds ``TooManyBadRecordsError: ...`` when the data is
    mostly bad (see above), e.g. ``1000 of the first 1000 records decoded of
    'train.tsv' were skipped (more than max_skip_fraction=0.5): missing_file=1000 (e.g.
    'a.png': the image paths do not exist ...)``.

    Example:

    ```python
    import tensorflow as tf
    from keras_maeclip.data import decoding
    raw = tf.data.Dataset.from_tensors(
        {"image": tf.io.encode_png(tf.zeros((4, 4, 3), tf.uint8)), "caption": "a black square",
         "key": "k0", "error": ""})
    counter = decoding.SkipCounter()
    (example,) = decoding.decode_records(raw, counter).as_numpy_iterator()
    example["image"].shape  # (4, 4, 3)
    ```
    """
    _check_dataset(dataset)
    if counter is not None and not isinstance(counter, SkipCounter):
        raise ValueError(f"counter must be a SkipCounter or None, got {type(counter).__name__}.")
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer)) or max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive integer, got {max_pixels!r}.")
    max_pixels = int(max_pixels)
    if (
        isinstance(max_skip_fraction, bool)
        or not isinstance(max_skip_fraction, (int, float, np.integer, np.floating))
        or not 0 <= max_skip_fraction <= 1
    ):
        raise ValueError(f"max_skip_fraction must be a number in [0, 1], got {max_skip_fraction!r}.")
    if (
        isinstance(min_records_to_judge, bool)
        or not isinstance(min_records_to_judge, (int, np.integer))
        or min_records_to_judge < 1
    ):
        raise ValueError(f"min_records_to_judge must be a positive integer, got {min_records_to_judge!r}.")
    guard = _SkipGuard(float(max_skip_fraction), int(min_records_to_judge), data_name)
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
        guard.add(reason, key)
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
    decoded = decoded.filter(lambda record: tf.equal(record["reason"], _OK)).map(finish)

    # Judged once more when a finite pass ends (the concatenated dataset only
    # starts once every record above is decoded); it yields nothing.
    def end_of_pass(_):
        ok = tf.py_function(lambda: guard.judge(end_of_pass=True), [], Tout=tf.bool)
        placeholder = tf.nest.map_structure(
            lambda spec: tf.zeros([d if d is not None else 0 for d in spec.shape], spec.dtype), decoded.element_spec
        )
        return placeholder, ok

    check = tf.data.Dataset.range(1).map(end_of_pass).filter(lambda _, ok: tf.logical_not(ok)).map(lambda r, _: r)
    return decoded.concatenate(check)


class _SkipGuard:
    """The run's own counts for `decode_records`' max_skip_fraction check."""

    def __init__(self, max_fraction, min_records, data_name):
        self._lock = threading.Lock()
        self.max_fraction, self.min_records, self.data_name = max_fraction, min_records, data_name
        self.good, self.skipped, self.examples = 0, {}, {}

    def add(self, reason, key):
        with self._lock:
            if reason is None:
                self.good += 1
            else:
                self.skipped[reason] = self.skipped.get(reason, 0) + 1
                if reason not in self.examples:
                    self.examples[reason] = key.numpy().decode("utf-8", "replace")
        self.judge()

    def judge(self, end_of_pass=False):
        """Raises `TooManyBadRecordsError` when too many records were skipped; else returns True."""
        with self._lock:
            skipped = sum(self.skipped.values())
            total = self.good + skipped
            if total == 0 or (total < self.min_records and not end_of_pass):
                return True
            if skipped <= self.max_fraction * total:
                return True
            counts = dict(self.skipped)
            examples = dict(self.examples)
        name = repr(self.data_name) if self.data_name else "the data"
        when = f"all {total} records (a whole pass)" if end_of_pass else f"the first {total} records decoded"
        reasons = "; ".join(
            f"{reason}={n} (e.g. key {examples[reason]!r}: {_FIXES.get(reason, 'see SKIP_REASONS')})"
            for reason, n in sorted(counts.items(), key=lambda item: -item[1])
        )
        raise TooManyBadRecordsError(
            f"decode_records: {skipped} of {when} of {name} were skipped, more than "
            f"max_skip_fraction={self.max_fraction:g}: {reasons}. Fix the data (python -m "
            "keras_maeclip.data.validate lists what is wrong), or pass a larger max_skip_fraction "
            "(1.0 never stops) to decode_records."
        )


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
