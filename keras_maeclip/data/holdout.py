"""A deterministic held-out split of raw records, and its examples as NumPy.

Records (any reader's, see `keras_maeclip.data.readers`) are split by a hash
of their key, so the split does not depend on file order, shuffling,
sharding or repetition: a record is held out in every pass or in none, and
`split_records(..)[0]` never yields a record of `split_records(..)[1]`.

```python
train, held_out = split_records(read_csv("pairs.tsv"), eval_fraction=0.05)
pairs = held_out_pairs(held_out, image_size=224, max_examples=1000)
# {"image": uint8 (n, 224, 224, 3), "caption": bytes (n,), "key": bytes (n,)}
```

A record with an empty key is placed by its caption instead.

References: open_clip `--val-data` (a held-out manifest of the same kind as
the training one); Radford et al. 2021 §3.1.4 (retrieval on held-out pairs).
"""

import numpy as np
import tensorflow as tf

from keras_maeclip.data import augment, decoding

__all__ = ["held_out_pairs", "is_held_out", "split_records"]

_BUCKETS = 1_000_000


def _check_fraction(eval_fraction):
    if isinstance(eval_fraction, bool) or not isinstance(eval_fraction, (int, float)) or not (
        0.0 < eval_fraction < 1.0
    ):
        raise ValueError(
            f"eval_fraction must be a number in (0, 1), the held-out share of the records; "
            f"got {eval_fraction!r}."
        )


def is_held_out(record, eval_fraction, seed=0):
    """Whether a raw record falls in the held-out share (a `tf.bool` scalar).

    Args:
        record: a raw record dict with `"key"` and `"caption"` (`tf.string`).
        eval_fraction: float in (0, 1).
        seed: int, salts the hash: other seeds give other splits.

    Example:
    >>> bool(is_held_out({"key": tf.constant("a"), "caption": tf.constant("x")}, 0.999))
    True
    """
    _check_fraction(eval_fraction)
    key = tf.where(tf.strings.length(record["key"]) > 0, record["key"], record["caption"])
    bucket = tf.strings.to_hash_bucket_fast(tf.strings.join([str(int(seed)), ":", key]), _BUCKETS)
    return bucket < int(round(eval_fraction * _BUCKETS))


def split_records(records, eval_fraction, seed=0):
    """`(training, held_out)` datasets of the same raw records, split by key.

    Args:
        records: a `tf.data.Dataset` of raw records (any reader's).
        eval_fraction: float in (0, 1), the expected held-out share.
        seed: int, salts the hash.

    Returns:
        Two datasets, each the records of one side, in the input order
        (with the input's shuffling and repetition).

    Example:
    >>> records = tf.data.Dataset.from_tensor_slices(
    ...     {"key": [str(i) for i in range(100)], "caption": ["c"] * 100})
    >>> train, held = split_records(records, 0.2)
    >>> len(list(train)) + len(list(held))
    100
    """
    _check_fraction(eval_fraction)
    training = records.filter(lambda r: tf.logical_not(is_held_out(r, eval_fraction, seed)))
    held_out = records.filter(lambda r: is_held_out(r, eval_fraction, seed))
    return training, held_out


def held_out_pairs(records, image_size, max_examples, counter=None):
    """Decode, centre-crop and resize up to `max_examples` records into NumPy.

    Bad records are skipped and counted in `counter` (a `SkipCounter`), as
    for training (`decode_records`).

    Args:
        records: a finite `tf.data.Dataset` of raw records (e.g. the second
            output of `split_records` on a non-repeating reader).
        image_size: int, the output side (the model's input size).
        max_examples: int >= 1.
        counter: `SkipCounter` or `None`.

    Returns:
        dict of NumPy arrays: `"image"` uint8 `(n, image_size, image_size,
        3)`, `"caption"` and `"key"` bytes `(n,)`.

    Raises:
        ValueError: when no good record is held out (the message says how
            to hold out more).
    """
    if isinstance(max_examples, bool) or not isinstance(max_examples, (int, np.integer)) or max_examples < 1:
        raise ValueError(f"max_examples must be an int >= 1; got {max_examples!r}.")
    data = decoding.decode_records(records, counter)
    data = augment.augment_records(data, image_size, training=False)
    data = data.map(lambda e: {"image": e["image"], "caption": e["caption"], "key": e["key"]})
    batches = list(data.take(int(max_examples)).batch(256).as_numpy_iterator())
    if not batches:
        raise ValueError(
            "No good held-out record: the data is too small for the held-out share, or every "
            "held-out record is bad. Raise eval_fraction (recipe: --eval_fraction) or add data."
        )
    return {k: np.concatenate([b[k] for b in batches]) for k in ("image", "caption", "key")}
