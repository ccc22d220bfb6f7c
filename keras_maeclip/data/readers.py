"""tf.data readers of raw image-caption records: TFRecord, CSV/TSV, folders, WebDataset.

Every reader returns a `tf.data.Dataset` of RAW records, left for
`keras_maeclip.data.decoding` to decode, check and count:

```python
records = read_webdataset("/data/shards/*.tar", shuffle_files=True,
                          shuffle_buffer=10_000, repeat=True, seed=0,
                          num_workers=8, worker_index=rank)
```

Record contract
---------------
Each element is a dict of scalar `tf.string` tensors:

* ``"image"``: the encoded image bytes as stored (JPEG, PNG, ...), ``b""``
  when they could not be read.
* ``"caption"``: the caption bytes as stored. They are NOT checked to be
  UTF-8 here; an empty caption is passed on as ``b""`` (the decoder counts
  it), only an absent one is an error.
* ``"key"``: an identifier of the example (see each reader).
* ``"error"``: ``b""`` for a good read, else the reason: ``b"missing_file"``
  (a manifest row whose image file does not exist or whose path is empty),
  ``b"missing_image"`` (a record or WebDataset sample without an image),
  ``b"missing_caption"`` (a record, sample, row or image without a caption;
  ``missing_image`` wins when both are absent) or ``b"unreadable_shard"``
  (a tar shard that cannot be read to its end; one such record is yielded
  where the failure happened).
* one entry per name in ``extra_keys`` (``b""`` where absent).

Readers never drop a record: a bad one is yielded with its ``error`` set.
`write_tfrecords` converts any reader's output into TFRecord shards that
`read_tfrecords` reads back as the same records (``convert.py`` is its CLI).

Pipeline options (shared by every reader, see `ReadOptions`)
------------------------------------------------------------
A reader lists its source files (TFRecord shards, tar shards, manifests,
folders), keeps this worker's share, optionally shuffles the file order,
interleaves ``cycle_length`` files in parallel (``tf.data.AUTOTUNE``
threads), optionally shuffles records in a buffer, repeats, reads lazily
loaded bytes (CSV and folder images) and prefetches. Worker sharding
(``num_workers`` / ``worker_index``) splits by FILE when there are at least
``num_workers`` files (worker ``i`` reads files ``i, i + k, i + 2k, ...`` of
the sorted list), else by RECORD (every worker reads every file in the same
deterministic order and keeps records ``i, i + k, ...``); either way the k
workers partition the records exactly. Under `tf.distribute`, passing a
reader's dataset to ``strategy.experimental_distribute_dataset`` with
`tf.data.experimental.AutoShardPolicy` ``FILE`` or ``DATA`` (set through
``tf.data.Options().experimental_distribute.auto_shard_policy``) can be used
instead of ``num_workers`` / ``worker_index``; keep ``num_workers=1`` then.

References: Schuhmann et al. 2022, "LAION-5B" (img2dataset WebDataset
shards); Ilharco et al. 2021, open_clip (CSV manifests with image-path and
caption columns).
"""

import csv
import dataclasses
import io
import json
import os
import posixpath
import re
import tarfile
import uuid
import warnings

import numpy as np
import tensorflow as tf

__all__ = [
    "CONTRACT_KEYS",
    "DEFAULT_MAX_MEMBER_BYTES",
    "IMAGE_EXTENSIONS",
    "ReadOptions",
    "read_tfrecords",
    "read_csv",
    "read_folder",
    "read_webdataset",
    "write_tfrecords",
]

CONTRACT_KEYS = ("image", "caption", "key", "error")
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")  # WebDataset / folder image members
_TFRECORD_SUFFIXES = (".tfrecord", ".tfrecords", ".tfrec")
_MAX_DEFAULT_CYCLE = 16

MISSING_FILE = b"missing_file"
MISSING_IMAGE = b"missing_image"
MISSING_CAPTION = b"missing_caption"
UNREADABLE_SHARD = b"unreadable_shard"
MEMBER_TOO_LARGE = b"member_too_large"
MALFORMED_ROW = b"malformed_row"
EXTRA_COLUMNS = b"extra_columns"
QUOTING = ("auto", "none", "standard")


# --------------------------------------------------------------------------
# Shared pipeline
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ReadOptions:
    """Pipeline options shared by every reader (passed as keyword arguments).

    Attributes:
        shuffle_files: bool, default False. Shuffle the file order (again at
            every repetition).
        shuffle_buffer: int >= 0, default 0. Records in the shuffle buffer;
            0 keeps the interleaved order.
        repeat: bool, default False. Repeat forever.
        seed: int or None, default None. Seed of both shuffles (the record
            shuffle uses ``seed + 1``). The same seed gives the same order
            in deterministic mode.
        deterministic: bool, default True. Fixed output order: interleave and
            map run with ``deterministic=True``, and unseeded shuffles are
            turned off (with a warning), so the same call twice gives the
            same order. False lets parallel reads return records as soon as
            they are ready (faster, order not reproducible).
        cycle_length: int >= 1 or None, default None. Files read at once;
            None means ``min(number of files, 16)``: a fixed number, not
            ``tf.data.AUTOTUNE``, so the interleaved order (and by-record
            sharding) does not depend on the machine's CPU count. The reads
            themselves run on ``tf.data.AUTOTUNE`` threads.
        num_workers: int >= 1, default 1. Number of data-parallel workers.
        worker_index: int in [0, num_workers), default 0. This worker.
    """

    shuffle_files: bool = False
    shuffle_buffer: int = 0
    repeat: bool = False
    seed: int | None = None
    deterministic: bool = True
    cycle_length: int | None = None
    num_workers: int = 1
    worker_index: int = 0

    def __post_init__(self):
        for name in ("shuffle_files", "repeat", "deterministic"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}.")
        _check_int("shuffle_buffer", self.shuffle_buffer, 0)
        _check_int("num_workers", self.num_workers, 1)
        _check_int("worker_index", self.worker_index, 0, self.num_workers - 1)
        if self.seed is not None:
            _check_int("seed", self.seed, 0)
        if self.cycle_length is not None:
            _check_int("cycle_length", self.cycle_length, 1)


def _check_int(name, value, low, high=None):
    valid = f">= {low}" if high is None else f"in [{low}, {high}]"
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer {valid}, got {value!r}.")
    if value < low or (high is not None and value > high):
        raise ValueError(f"{name} must be an integer {valid}, got {value}.")
    return int(value)


def _read_options(reader, options):
    names = [f.name for f in dataclasses.fields(ReadOptions)]
    unknown = sorted(set(options) - set(names))
    if unknown:
        raise ValueError(f"{reader} got unknown options {unknown}; valid ones are {names}.")
    return ReadOptions(**options)


def _pipeline(sources, open_source, opts, load=None):
    """Builds the shared sharded / shuffled / interleaved / repeated pipeline.

    Args:
        sources: non-empty list of str or int. The files (or file indices),
            in their canonical (sorted) order.
        open_source: function of a scalar tensor (one source) returning a
            `tf.data.Dataset` of that source's records, in a fixed order.
        opts: `ReadOptions`.
        load: optional function of one record, applied (in parallel) after
            sharding and shuffling, to read what was left lazy.

    Returns:
        The prefetched `tf.data.Dataset`.
    """
    k, index = opts.num_workers, opts.worker_index
    by_file = len(sources) >= k
    may_shuffle = opts.seed is not None or not opts.deterministic
    if opts.deterministic and opts.seed is None and (opts.shuffle_files or opts.shuffle_buffer):
        warnings.warn(
            "deterministic=True without a seed: shuffle_files / shuffle_buffer are ignored. "
            "Pass seed=... to shuffle reproducibly, or deterministic=False.",
            stacklevel=3,
        )
    if not by_file and opts.shuffle_files and opts.seed is None and k > 1:
        raise ValueError(
            f"With fewer files ({len(sources)}) than num_workers ({k}) records are split by "
            "record, so every worker must see the files in the same order: pass seed=... "
            "(the same on every worker) or shuffle_files=False."
        )
    if by_file:
        sources = sources[index::k]
    files = tf.data.Dataset.from_tensor_slices(sources)
    if opts.shuffle_files and may_shuffle and len(sources) > 1:
        files = files.shuffle(len(sources), seed=opts.seed, reshuffle_each_iteration=True)
    cycle = opts.cycle_length or min(len(sources), _MAX_DEFAULT_CYCLE)
    dataset = files.interleave(
        open_source,
        cycle_length=cycle,
        block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE,
        # Record sharding needs the same order on every worker.
        deterministic=opts.deterministic or not by_file,
    )
    if not by_file:
        dataset = dataset.shard(k, index)
    if opts.shuffle_buffer and may_shuffle:
        seed = None if opts.seed is None else opts.seed + 1
        dataset = dataset.shuffle(opts.shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if opts.repeat:
        dataset = dataset.repeat()
    if load is not None:
        dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=opts.deterministic)
    options = tf.data.Options()
    options.deterministic = opts.deterministic
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)


def _list_files(paths, suffixes, what):
    """Resolves a glob, a directory, a file, or a list of them to sorted files."""
    items = [paths] if isinstance(paths, (str, bytes, os.PathLike)) else list(paths)
    if not items:
        raise ValueError(f"{what}: got an empty list of paths.")
    found = []
    for item in items:
        path = os.fsdecode(item)
        if tf.io.gfile.isdir(path):
            matches = [
                os.path.join(path, name)
                for name in tf.io.gfile.listdir(path)
                if name.lower().endswith(suffixes) and not tf.io.gfile.isdir(os.path.join(path, name))
            ]
        elif any(c in path for c in "*?["):
            matches = tf.io.gfile.glob(path)
        elif tf.io.gfile.exists(path):
            matches = [path]
        else:
            raise ValueError(f"{what}: {path!r} does not exist; pass an existing file, directory or glob.")
        if not matches:
            raise ValueError(
                f"{what}: {path!r} matched no files (a directory is searched for names ending "
                f"in {', '.join(suffixes)})."
            )
        found.extend(sorted(matches))
    return list(dict.fromkeys(found))  # sorted per item, duplicates dropped


def _check_extra_keys(extra_keys):
    if isinstance(extra_keys, str):
        extra_keys = (extra_keys,)
    extra_keys = tuple(extra_keys)
    clash = [name for name in extra_keys if name in CONTRACT_KEYS or name.startswith("_")]
    if clash:
        raise ValueError(
            f"extra_keys may not name {clash}: {CONTRACT_KEYS} are always present and names "
            "starting with '_' are reserved."
        )
    return extra_keys


def _to_bytes(text):
    return text.encode("utf-8", "surrogateescape") if isinstance(text, str) else bytes(text)


# --------------------------------------------------------------------------
# TFRecord
# --------------------------------------------------------------------------


def read_tfrecords(paths, extra_keys=(), **options):
    """Reads `tf.train.Example` TFRecord shards as raw records.

    Features read: ``image`` and ``caption`` (bytes), ``key`` (bytes) and
    each name of ``extra_keys`` (a scalar bytes feature); other features
    are ignored, so the files of `keras_maeclip.data.synthetic.write_tfrecords`
    (PNG ``image``, ``caption``, ``key``) and of `write_tfrecords` read alike.

    Args:
        paths: a file, a directory (its files ending in .tfrecord,
            .tfrecords or .tfrec), a glob, or a list of them. Files are
            sorted (per list item).
        extra_keys: sequence of str, default (). Extra bytes features to
            pass through, ``b""`` in records that lack them.
        **options: the pipeline options of `ReadOptions` (shuffle_files,
            shuffle_buffer, repeat, seed, deterministic, cycle_length,
            num_workers, worker_index).

    Returns:
        A `tf.data.Dataset` of the record contract (module docstring).
        ``key`` is the stored key, or ``"<file name>:<record index>"`` when
        the record has none. ``error`` is ``missing_image`` /
        ``missing_caption`` when that feature is absent.
    """
    opts = _read_options("read_tfrecords", options)
    extra_keys = _check_extra_keys(extra_keys)
    files = _list_files(paths, _TFRECORD_SUFFIXES, "read_tfrecords")
    features = {name: tf.io.VarLenFeature(tf.string) for name in ("image", "caption", "key") + extra_keys}

    def open_file(path):
        name = tf.strings.regex_replace(path, r"^.*[/\\]", "")
        records = tf.data.TFRecordDataset(path).enumerate()
        return records.map(lambda i, r: {"_record": r, "_file": name, "_index": i})

    def first(values):
        present = tf.size(values) > 0
        return tf.cond(present, lambda: values[0], lambda: tf.constant(b"")), present

    def parse(element):
        parsed = tf.io.parse_single_example(element["_record"], features)
        image, has_image = first(parsed["image"].values)
        caption, has_caption = first(parsed["caption"].values)
        key, has_key = first(parsed["key"].values)
        fallback = tf.strings.join([element["_file"], tf.strings.as_string(element["_index"])], ":")
        out = {
            "image": image,
            "caption": caption,
            "key": tf.where(has_key, key, fallback),
            "error": tf.where(
                has_image, tf.where(has_caption, b"", MISSING_CAPTION), MISSING_IMAGE
            ),
        }
        for name in extra_keys:
            out[name] = first(parsed[name].values)[0]
        return out

    return _pipeline(files, open_file, opts, load=parse)


# --------------------------------------------------------------------------
# Tables: CSV / TSV manifests and image folders
# --------------------------------------------------------------------------


def _path_exists(path):
    return tf.io.gfile.exists(path) if "://" in path else os.path.isfile(path)


def _table_dataset(tables, opts, extra_keys):
    """Shared reader of row tables built in Python (one table per source).

    Each table is a dict of equal-length lists of bytes with the contract
    keys except "image", plus "_image_path" (b"" where no file is read) and
    optionally "_caption_path" (a caption file read lazily; b"" for none).
    """
    columns = list(tables[0])
    bounds = np.cumsum([0] + [len(t["key"]) for t in tables]).astype(np.int64)
    merged = {
        name: tf.constant([v for t in tables for v in t[name]] or [b""], tf.string)
        for name in columns
    }
    starts, ends = tf.constant(bounds[:-1]), tf.constant(bounds[1:])

    def open_table(i):
        rows = tf.data.Dataset.range(starts[i], ends[i])
        return rows.map(lambda j: {name: column[j] for name, column in merged.items()})

    def read_if(path):
        return tf.cond(tf.strings.length(path) > 0, lambda: tf.io.read_file(path), lambda: tf.constant(b""))

    def load(row):
        out = {
            "image": read_if(row["_image_path"]),
            "caption": read_if(row["_caption_path"]) if "_caption_path" in row else row["caption"],
            "key": row["key"],
            "error": row["error"],
        }
        out.update({name: row[name] for name in extra_keys})
        return out

    return _pipeline(list(range(len(tables))), open_table, opts, load=load)


class _Lines:
    """Hands a csv.reader the physical lines from `start` on, counting how many it took."""

    def __init__(self, lines, start):
        self.lines, self.next, self.used = lines, start, 0

    def __iter__(self):
        return self

    def __next__(self):
        if self.next >= len(self.lines):
            raise StopIteration
        line = self.lines[self.next]
        self.next += 1
        self.used += 1
        return line + "\n"


def _manifest_rows(text, separator, quoted):
    """Yields ``(line number, cells or None, problem)`` for every non-empty row of a manifest.

    Without quoting every physical line is a row split at `separator`;
    quote characters are ordinary text. With quoting, lines holding no
    ``"`` are split the same way, and the others are parsed by the strict
    `csv` reader (so a quoted cell may span lines). A row the reader
    refuses (bad quoting, a quoted cell over csv's field size limit), or a
    quoted row spanning lines that ends with a cell count other than the
    header's (an unbalanced quote that swallowed the rows after it), gives
    ``cells=None``; reading goes on at the next physical line, so the rows
    after it are not lost.
    """
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    width, i = None, 0
    while i < len(lines):
        number, line = i + 1, lines[i]
        if line.endswith("\r"):
            line = line[:-1]
        if not quoted or '"' not in line:
            i += 1
            if line:
                cells = line.split(separator)
                width = len(cells) if width is None else width
                yield number, cells, None
            continue
        feeder = _Lines(lines, i)
        try:
            cells = next(csv.reader(feeder, delimiter=separator, strict=True))
            problem = None
            if feeder.used > 1 and width is not None and len(cells) != width:
                problem = f"a quote opened here spans {feeder.used} lines and leaves {len(cells)} cells"
        except csv.Error as e:
            cells, problem = None, str(e)
        except StopIteration:  # pragma: no cover - the line is not empty
            cells, problem = None, "no row"
        if problem is not None:
            i += 1
            yield number, None, problem
            continue
        i += feeder.used
        width = len(cells) if width is None else width
        yield number, cells, None


def _inside(path, folder):
    """Whether `path` (already joined to the manifest folder) lies under `folder`, lexically."""
    if "://" in path or "://" in folder:
        scheme, _, rest = path.partition("://")
        path = scheme + "://" + posixpath.normpath(rest)
        return folder != "" and path.startswith(folder.rstrip("/") + "/")
    path, folder = os.path.abspath(path), os.path.abspath(folder or ".")
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _read_manifest(manifest, image_key, caption_key, separator, key_column, extra_keys, quoted, allow_outside):
    """Parses one manifest into a table (see `_table_dataset`)."""
    with tf.io.gfile.GFile(manifest, "rb") as f:
        text = f.read().decode("utf-8", "surrogateescape")
    if text.startswith("\ufeff"):
        text = text[1:]
    rows = _manifest_rows(text, separator, quoted)
    number, header, problem = next(rows, (None, None, None))
    if header is None:
        what = f"its header row (line {number}) cannot be parsed: {problem}" if problem else "it is empty"
        raise ValueError(f"read_csv: manifest {manifest!r}: {what}; it needs a header row.")
    wanted = {"image_key": image_key, "caption_key": caption_key}
    if key_column is not None:
        wanted["key_column"] = key_column
    wanted.update({f"extra_keys[{i}]": name for i, name in enumerate(extra_keys)})
    missing = {arg: name for arg, name in wanted.items() if name not in header}
    if missing:
        hint = " (is the separator right?)" if len(header) == 1 else ""
        raise ValueError(
            f"read_csv: manifest {manifest!r} has no column "
            + ", ".join(f"{name!r} ({arg})" for arg, name in missing.items())
            + f"; its header (separator {separator!r}) has columns {header}{hint}. "
            "Pass the right column names or separator."
        )
    column = {name: header.index(name) for name in wanted.values()}
    caption_last = column[caption_key] == len(header) - 1
    folder = os.path.dirname(manifest)
    base = os.path.basename(manifest)
    table = {name: [] for name in ("_image_path", "caption", "key", "error") + extra_keys}
    outside = []

    def cell(row, name):
        i = column[name]
        return row[i] if i < len(row) else None

    def add_bad(number, error):
        table["_image_path"].append(b"")
        table["caption"].append(b"")
        table["key"].append(_to_bytes(f"{base}:{number}"))
        table["error"].append(error)
        for name in extra_keys:
            table[name].append(b"")

    problems = []
    for number, row, problem in rows:
        if row is None:
            problems.append(f"line {number}: {problem}")
            add_bad(number, MALFORMED_ROW)
            continue
        if len(row) > len(header):
            if not any(row[len(header):]):
                row = row[: len(header)]  # trailing separators
            elif caption_last:  # the separator is inside the caption: give it back its text
                row = row[: len(header) - 1] + [separator.join(row[len(header) - 1:])]
            else:
                problems.append(f"line {number}: {len(row)} cells, the header has {len(header)}")
                add_bad(number, EXTRA_COLUMNS)
                continue
        rel = cell(row, image_key) or ""
        path = rel if (os.path.isabs(rel) or "://" in rel) else os.path.join(folder, rel)
        if rel and "://" not in path:
            path = os.path.normpath(path)
        if rel and not allow_outside and not _inside(path, folder):
            outside.append(f"line {number}: {rel!r}")
            add_bad(number, MISSING_FILE)
            continue
        exists = bool(rel) and _path_exists(path)
        caption = cell(row, caption_key)
        if key_column is not None:
            key = cell(row, key_column) or ""
        else:
            key = os.path.relpath(path, folder) if rel and "://" not in rel else rel
        error = MISSING_FILE if not exists else (MISSING_CAPTION if caption is None else b"")
        table["_image_path"].append(_to_bytes(path) if exists else b"")
        table["caption"].append(_to_bytes(caption or ""))
        table["key"].append(_to_bytes(key))
        table["error"].append(error)
        for name in extra_keys:
            table[name].append(_to_bytes(cell(row, name) or ""))
    if outside:
        raise ValueError(
            f"read_csv: manifest {manifest!r} names {len(outside)} image path(s) outside its folder "
            f"{os.path.abspath(folder or '.')!r} ({'; '.join(outside[:3])}{'; ...' if len(outside) > 3 else ''}). "
            "Such paths are refused so that a manifest cannot copy any file of the machine into the data; "
            "move the manifest above the images, or pass allow_outside_paths=True "
            "(pretrain / convert / validate: --allow_outside_paths) if you trust it."
        )
    if problems:
        warnings.warn(
            f"read_csv: manifest {manifest!r} has {len(problems)} row(s) that cannot be parsed "
            f"(yielded as malformed_row / extra_columns records): {'; '.join(problems[:3])}"
            f"{'; ...' if len(problems) > 3 else ''}. Check separator= and quoting=.",
            stacklevel=3,
        )
    return table


def read_csv(
    manifest,
    image_key="filepath",
    caption_key="title",
    separator="\t",
    key_column=None,
    extra_keys=(),
    quoting="auto",
    allow_outside_paths=False,
    **options,
):
    """Reads CSV / TSV manifests of image paths and captions as raw records.

    Like open_clip's ``--csv-img-key`` / ``--csv-caption-key`` /
    ``--csv-separator``. The manifest (UTF-8, with a header row; other bytes
    are passed through unchanged) is parsed in Python when the dataset is
    built, and every image path is checked to exist then; images are read
    lazily by tf.data (``tf.io.read_file``) after sharding and shuffling, so
    a worker reads only its own images. The whole manifest is held in memory
    as string tensors. Several manifests are several files for sharding.

    No row is lost silently: a row that cannot be parsed is yielded as a
    record with ``error=b"malformed_row"`` (bad quoting, or a quoted cell
    over Python's csv field size limit) or ``b"extra_columns"`` (more
    non-empty cells than the header, from a separator inside an unquoted
    cell, when the caption is not the last column), keyed
    ``"<manifest name>:<line>"``, and a warning names the first such lines.
    When the caption IS the last column, the cells past it are its own text
    split at the separator and are joined back (``a.png,red, round`` has
    caption ``"red, round"``); empty trailing cells are ignored. With quoting, an unbalanced ``"`` spoils only its own
    row. Captions of any length are kept when unquoted.

    Image paths must lie inside the manifest's folder (checked lexically:
    ``..`` and absolute paths elsewhere are refused; symbolic links inside
    the folder are followed), so that a manifest cannot pull an arbitrary
    file of the machine into the data; otherwise a `ValueError` counts and
    names them, unless ``allow_outside_paths=True``.

    Args:
        manifest: a manifest file, a directory (its .csv / .tsv files), a
            glob, or a list of them.
        image_key: str, default "filepath". Column of image paths; relative
            paths resolve against the manifest's folder.
        caption_key: str, default "title". Column of captions.
        separator: one-character str, default "\\t" (TSV); "," for CSV.
        key_column: str or None, default None. Column of keys; None uses the
            image path relative to the manifest's folder (as given when it
            is absolute outside that folder, or a URL).
        extra_keys: sequence of str, default (). Columns to pass through.
        quoting: "auto" (default), "none" or "standard". "none" reads every
            line as one row and ``"`` as an ordinary character, as TSV files
            are usually written (open_clip's, img2dataset's); "standard"
            reads CSV quoting (``"a, b"``, ``""`` for a quote, cells over
            several lines). "auto" is "none" for a tab separator and
            "standard" otherwise.
        allow_outside_paths: bool, default False. Accept image paths outside
            the manifest's folder (absolute paths, ``..``, URLs elsewhere).
        **options: the pipeline options of `ReadOptions`.

    Returns:
        A `tf.data.Dataset` of the record contract (module docstring), one
        record per non-empty line (per row, for quoted rows over several
        lines), in file order. ``error`` is
        ``missing_file`` (with ``image=b""``) when the path is empty or the
        file does not exist, ``missing_caption`` when the row is too short to
        hold the caption column. An empty caption cell is passed on as
        ``b""`` without an error.

    Raises:
        ValueError: when a manifest's header lacks a named column (the
            message lists the columns found), when it names image paths
            outside its folder (see above), or on a bad argument.

    Example:

    ```python
    records = read_csv("/data/cc3m/train.tsv", image_key="filepath", caption_key="title")
    ```
    """
    opts = _read_options("read_csv", options)
    extra_keys = _check_extra_keys(extra_keys)
    if not isinstance(separator, str) or len(separator) != 1:
        raise ValueError(f"read_csv: separator must be one character such as '\\t' or ',', got {separator!r}.")
    for name, value in (("image_key", image_key), ("caption_key", caption_key)):
        if not isinstance(value, str) or not value:
            raise ValueError(f"read_csv: {name} must be a non-empty column name, got {value!r}.")
    if quoting not in QUOTING:
        raise ValueError(f"read_csv: quoting must be one of {QUOTING}, got {quoting!r}.")
    if not isinstance(allow_outside_paths, (bool, np.bool_)):
        raise ValueError(f"read_csv: allow_outside_paths must be a bool, got {allow_outside_paths!r}.")
    quoted = quoting == "standard" or (quoting == "auto" and separator != "\t")
    files = _list_files(manifest, (".csv", ".tsv"), "read_csv")
    tables = [
        _read_manifest(f, image_key, caption_key, separator, key_column, extra_keys, quoted, allow_outside_paths)
        for f in files
    ]
    return _table_dataset(tables, opts, extra_keys)


def _folder_table(directory):
    table = {name: [] for name in ("_image_path", "_caption_path", "caption", "key", "error")}
    for root, dirs, names in tf.io.gfile.walk(directory):
        dirs.sort()
        names = set(names)
        for name in sorted(names):
            stem, dot, ext = name.rpartition(".")
            if not dot or not stem or ext.lower() not in IMAGE_EXTENSIONS:
                continue
            text = stem + ".txt"
            has_caption = text in names
            path = os.path.join(root, name)
            table["_image_path"].append(_to_bytes(path))
            table["_caption_path"].append(_to_bytes(os.path.join(root, text)) if has_caption else b"")
            table["caption"].append(b"")
            table["key"].append(_to_bytes(os.path.relpath(path, directory)))
            table["error"].append(b"" if has_caption else MISSING_CAPTION)
    return table


def read_folder(directories, **options):
    """Reads folders of images with same-stem ``.txt`` captions as raw records.

    Every file under a directory (recursively, sorted) ending in .jpg,
    .jpeg, .png or .webp (any case) is an image; its caption is the file
    with the same name up to the last dot plus ``.txt`` (``a/cat.png`` ->
    ``a/cat.txt``). Files are listed when the dataset is built and read
    lazily by tf.data; each directory is one file for sharding.

    Args:
        directories: a directory or a list of directories.
        **options: the pipeline options of `ReadOptions`.

    Returns:
        A `tf.data.Dataset` of the record contract (module docstring); ``key``
        is the image path relative to its directory; ``error`` is
        ``missing_caption`` for an image without a ``.txt`` file.
    """
    opts = _read_options("read_folder", options)
    items = [directories] if isinstance(directories, (str, bytes, os.PathLike)) else list(directories)
    items = [os.fsdecode(d) for d in items]
    bad = [d for d in items if not tf.io.gfile.isdir(d)]
    if not items or bad:
        raise ValueError(f"read_folder: directories must name existing directories, got {bad or items!r}.")
    tables = [_folder_table(d) for d in items]
    if not any(t["key"] for t in tables):
        raise ValueError(f"read_folder: found no {'/'.join(IMAGE_EXTENSIONS)} images under {items!r}.")
    return _table_dataset(tables, opts, ())


# --------------------------------------------------------------------------
# WebDataset
# --------------------------------------------------------------------------


def _sample_record(key, members, extra_keys):
    """One WebDataset sample (extension -> bytes) as a contract record."""
    image = next((members[ext] for ext in IMAGE_EXTENSIONS if ext in members), None)
    caption = members.get("txt")
    if caption is None and "json" in members:
        try:
            value = json.loads(members["json"]).get("caption")
        except (ValueError, AttributeError):
            value = None
        if isinstance(value, str):
            caption = value.encode("utf-8", "surrogatepass")
        elif isinstance(value, bytes):
            caption = value
    error = MISSING_IMAGE if image is None else (MISSING_CAPTION if caption is None else b"")
    record = {
        "image": image or b"",
        "caption": caption or b"",
        "key": _to_bytes(key),
        "error": error,
    }
    record.update({name: members.get(name, b"") for name in extra_keys})
    return record


def _ended_cleanly(tar, fileobj):
    """Whether a tar stopped on its end-of-archive (all-zero) block.

    ``tarfile`` silently ends iteration when a shard is cut at or inside a
    member header, or inside a member's data it was not asked to read; then
    the 512 bytes where the next header should be are missing, short, or
    not zero.
    """
    fileobj.seek(tar.offset)
    block = fileobj.read(tarfile.BLOCKSIZE)
    return len(block) == tarfile.BLOCKSIZE and not block.strip(b"\0")


def _open_binary(path):
    return tf.io.gfile.GFile(path, "rb") if "://" in path else open(path, "rb")


def _tar_samples(path, extra_keys, max_member_bytes):
    """Reads one tar shard and yields its samples as contract records.

    The shard is opened for random access (``"r:*"``): members no key asks
    for are passed over with a seek, never read, and so are asked-for
    members larger than `max_member_bytes` (their sample is flagged
    ``member_too_large``).
    """
    path = os.fsdecode(path)
    wanted = set(IMAGE_EXTENSIONS) | {"txt", "json"} | {name.lower() for name in extra_keys}
    key, members, too_large = None, {}, []

    def flush():
        record = _sample_record(key, members, extra_keys)
        if too_large:
            record["error"] = MEMBER_TOO_LARGE
        return record

    try:
        with _open_binary(path) as f, tarfile.open(fileobj=f, mode="r:*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                folder, base = posixpath.split(member.name)
                stem, dot, ext = base.partition(".")
                if not dot or not stem:
                    continue  # no extension, or a hidden file: not part of a sample
                name = posixpath.join(folder, stem)
                if name != key:
                    if key is not None:
                        yield flush()
                    key, members, too_large = name, {}, []
                ext = ext.lower()
                if ext not in wanted:
                    continue
                if member.size > max_member_bytes:
                    too_large.append(ext)
                    warnings.warn(
                        f"read_webdataset: {path!r} member {member.name!r} has {member.size} bytes, more than "
                        f"max_member_bytes={max_member_bytes}; its sample is skipped as member_too_large.",
                        stacklevel=2,
                    )
                    continue
                members[ext] = tar.extractfile(member).read()
            if not _ended_cleanly(tar, tar.fileobj):
                raise EOFError("the archive ends without its end-of-archive block")
    except (tarfile.TarError, OSError, EOFError, tf.errors.OpError) as e:
        record = _sample_record(key or path, members, extra_keys)
        record["error"] = UNREADABLE_SHARD
        warnings.warn(f"read_webdataset: cannot read {path!r} to its end ({e}).", stacklevel=2)
        yield record
        return
    if key is not None:
        yield flush()


DEFAULT_MAX_MEMBER_BYTES = 64 * 2**20
"""64 MiB: the largest tar member `read_webdataset` reads (a PNG of 4096 x 4096 RGB is at most 48 MiB)."""


def read_webdataset(shards, extra_keys=(), max_member_bytes=DEFAULT_MAX_MEMBER_BYTES, **options):
    """Reads WebDataset tar shards as raw records, without unpacking them.

    A sample is a run of consecutive tar members sharing a key: the member
    name up to the FIRST dot of its base name (``a/x.seg.png`` has key
    ``a/x`` and extension ``seg.png``), the WebDataset convention. Its
    image is the ``jpg``, ``jpeg``, ``png`` or ``webp`` member (first in that
    order), its caption the ``txt`` member or else the "caption" field of
    the ``json`` member. Each shard is read by Python's ``tarfile``
    (``"r:*"``, any compression) inside `tf.data.Dataset.from_generator`, one
    generator per shard, and shards are interleaved. Only the members a
    sample needs (image, ``txt``, ``json`` and ``extra_keys``) are read;
    the others are passed over with a seek (a compressed shard still
    decompresses them, in small blocks), so a shard with a huge unrelated
    member costs no memory. With record sharding (fewer shards than
    workers) every worker reads every shard.

    Args:
        shards: a tar file, a directory (its .tar / .tar.gz / .tgz files), a
            glob, or a list of them.
        extra_keys: sequence of str, default (). Member extensions (e.g.
            "json", "cls") whose raw bytes are passed through.
        max_member_bytes: int >= 1, default `DEFAULT_MAX_MEMBER_BYTES` (64
            MiB). A needed member larger than this is not read: its sample
            is yielded with ``error=b"member_too_large"`` and a warning
            names the member.
        **options: the pipeline options of `ReadOptions`.

    Returns:
        A `tf.data.Dataset` of the record contract (module docstring); ``key``
        is the sample key; ``error`` is ``missing_image`` /
        ``missing_caption`` for incomplete samples and ``unreadable_shard``
        (plus a warning) for the last, possibly partial, sample of a shard
        that is truncated or corrupt (a shard cut exactly at a member header
        counts too: it lacks the end-of-archive block), ``member_too_large``
        for a sample with a member over ``max_member_bytes``.

    Example:

    ```python
    records = read_webdataset("/data/wds/*.tar", shuffle_files=True, seed=0, repeat=True)
    ```
    """
    opts = _read_options("read_webdataset", options)
    extra_keys = _check_extra_keys(extra_keys)
    max_member_bytes = _check_int("max_member_bytes", max_member_bytes, 1)
    files = _list_files(shards, (".tar", ".tar.gz", ".tgz"), "read_webdataset")
    signature = {name: tf.TensorSpec((), tf.string) for name in CONTRACT_KEYS + extra_keys}

    def open_shard(path):
        # from_generator hands the generator a numpy bytes path.
        return tf.data.Dataset.from_generator(
            lambda p: _tar_samples(p, extra_keys, max_member_bytes), args=(path,), output_signature=signature
        )

    return _pipeline(files, open_shard, opts)


# --------------------------------------------------------------------------
# Writer
# --------------------------------------------------------------------------


def _bytes_value(name, value):
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value)
    if isinstance(value, tf.Tensor) and value.dtype == tf.string and value.shape.rank == 0:
        return value.numpy()
    raise ValueError(
        f"write_tfrecords stores scalar string fields only; field {name!r} is {type(value).__name__} "
        f"{getattr(value, 'shape', '')}. Encode images to PNG/JPEG bytes and drop other fields first."
    )


def _shard_pattern(prefix):
    return re.compile(rf"^{re.escape(prefix)}-\d{{5}}-of-(\d{{5}})\.tfrecord$")


def _existing_shards(output_dir, prefix):
    pattern = _shard_pattern(prefix)
    if not tf.io.gfile.isdir(output_dir):
        return []
    return sorted(name for name in tf.io.gfile.listdir(output_dir) if pattern.match(name))


def write_tfrecords(records, output_dir, examples_per_shard=1000, prefix="shard", overwrite=False):
    """Writes the good records of a reader to TFRecord shards of `tf.train.Example`.

    Every string field of a record except ``error`` is stored as a bytes
    feature under its own name (``image``, ``caption``, ``key`` and the
    extra columns), so `read_tfrecords` reads the shards back as the same
    records. Records whose ``error`` is not ``b""`` are skipped and counted.
    Shards are written one after the other to hidden temporary names unique
    to this call (``.<prefix>-00000.tfrecord.tmp-<pid>-<random>``) and
    renamed (atomically on a local disk) to
    ``<prefix>-00000-of-000NN.tfrecord`` once their number NN is known (one
    pass over the data); on an error the temporaries are removed.

    A folder that already holds ``<prefix>-*-of-*.tfrecord`` shards is
    refused: writing a second set beside them (of another shard count) would
    make the folder read as both sets. With ``overwrite=True`` the old set is
    replaced: the new shards are renamed into place, then every old shard of
    that prefix that is not one of them is deleted.

    Args:
        records: a `tf.data.Dataset` or an iterable of dicts with scalar
            string (bytes or str) fields "image", "caption", "key", optional
            "error", plus extra string fields. Must be finite.
        output_dir: str or path-like. Created if missing.
        examples_per_shard: int >= 1, default 1000. Records per shard (the
            last shard holds the rest).
        prefix: str, default "shard". File name prefix.
        overwrite: bool, default False. Replace shards of this prefix that
            are already in `output_dir`.

    Returns:
        A tuple ``(paths, skipped)``: the shard paths in order, and a dict
        from error reason (str) to the number of records skipped for it.
        No shard is written when no record is good.

    Raises:
        ValueError: when `output_dir` already holds shards of this prefix and
            `overwrite` is False, or on a bad record or argument.

    Example:

    ```python
    paths, skipped = write_tfrecords(read_csv("train.tsv"), "/data/tfr", examples_per_shard=5000)
    ```
    """
    examples_per_shard = _check_int("examples_per_shard", examples_per_shard, 1)
    if not isinstance(prefix, str) or not prefix or "/" in prefix:
        raise ValueError(f"write_tfrecords: prefix must be a non-empty file name prefix, got {prefix!r}.")
    output_dir = os.fspath(output_dir)
    old = _existing_shards(output_dir, prefix)
    if old and not overwrite:
        counts = sorted({_shard_pattern(prefix).match(name).group(1) for name in old})
        raise ValueError(
            f"write_tfrecords: {output_dir!r} already holds {len(old)} shard(s) named "
            f"{prefix}-*-of-{'/'.join(counts)}.tfrecord (e.g. {old[0]!r}); writing another set beside them "
            "would make the folder read as both. Pass overwrite=True (convert: --overwrite) to replace "
            "them, or choose another output_dir or prefix."
        )
    if isinstance(records, tf.data.Dataset):
        if records.cardinality() == tf.data.INFINITE_CARDINALITY:
            raise ValueError("write_tfrecords: records is infinite (repeat=True?); pass a finite dataset.")
        records = records.as_numpy_iterator()
    tf.io.gfile.makedirs(output_dir)
    token = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
    temporary, skipped = [], {}
    writer, in_shard = None, 0
    try:
        for record in records:
            missing = [name for name in ("image", "caption", "key") if name not in record]
            if missing:
                raise ValueError(f"write_tfrecords: a record lacks {missing}; it has {sorted(record)}.")
            error = _bytes_value("error", record.get("error", b""))
            if error:
                reason = error.decode("utf-8", "replace")
                skipped[reason] = skipped.get(reason, 0) + 1
                continue
            feature = {
                name: tf.train.Feature(bytes_list=tf.train.BytesList(value=[_bytes_value(name, value)]))
                for name, value in record.items()
                if name != "error"
            }
            if writer is None or in_shard == examples_per_shard:
                if writer is not None:
                    writer.close()
                name = f".{prefix}-{len(temporary):05d}.tfrecord.tmp-{token}"
                temporary.append(os.path.join(output_dir, name))
                writer, in_shard = tf.io.TFRecordWriter(temporary[-1]), 0
            example = tf.train.Example(features=tf.train.Features(feature=feature))
            writer.write(example.SerializeToString())
            in_shard += 1
        if writer is not None:
            writer.close()
            writer = None
    except BaseException:
        if writer is not None:
            writer.close()
        for path in temporary:
            if tf.io.gfile.exists(path):
                tf.io.gfile.remove(path)
        raise
    paths = []
    for i, path in enumerate(temporary):
        final = os.path.join(output_dir, f"{prefix}-{i:05d}-of-{len(temporary):05d}.tfrecord")
        tf.io.gfile.rename(path, final, overwrite=True)
        paths.append(final)
    kept = {os.path.basename(p) for p in paths}
    for name in old:
        if name not in kept:
            tf.io.gfile.remove(os.path.join(output_dir, name))
    return paths, skipped
