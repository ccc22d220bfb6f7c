"""Per-example image augmentation inside `tf.data`: random resized crop, flip, eval resize.

Everything here is TensorFlow ops, so it runs inside `tf.data.Dataset.map`
whatever the Keras backend (tf.data always runs in TensorFlow). It works on
the unbatched examples of `decoding.decode_records` (`{"image": uint8
(H, W, 3) of any size, "caption", "key", ...}`), before batching:

```python
examples = decode_records(readers.read_csv("train.csv"))
train = augment_records(examples, 224, training=True, scale=CLIP_CROP_SCALE, seed=0)
model.fit(train.map(to_model_inputs).batch(256), ...)
```

Output dtype
------------
By default images stay uint8 (`(size, size, 3)`, rounded and clipped), so
the models' preprocessor (`keras_maeclip.models.preprocessor`) does the
normalisation exactly as it does for un-augmented data; its resize is then
a no-op (the image already has the model's size). Pass `normalize=True` to
get float32 `(x / 255 - mean) / std` instead, for pipelines that feed
models without that preprocessor.

Randomness and reproducibility
------------------------------
`random_resized_crop` and `random_flip` are stateless: given the same
shape-(2,) integer `seed` tensor they give the same result. A pipeline
needs one seed per example; `augment_records` zips the examples with
`tf.data.Dataset.random(seed, rerandomize_each_iteration=True).batch(2)`
and splits each pair with `tf.random.experimental.stateless_split` into a
crop seed and a flip seed. To do the same by hand:

```python
seeds = tf.data.Dataset.random(7, rerandomize_each_iteration=True).batch(2)
crops = tf.data.Dataset.zip(examples, seeds).map(
    lambda ex, s: random_resized_crop(ex["image"], 224, seed=s))
```

(a counter, `tf.stack([base_seed, index])` after `.enumerate()`, also works
but replays the same crops every time the dataset is iterated again).
Consequences:

* The same `seed` and input order give identical images when the pipeline
  is built again, in this process or another, as long as TensorFlow's
  global seed is the same (or unset) in both: `Dataset.random` combines its
  seed with the global one, which `keras.utils.set_random_seed` sets.
* Each new pass over the dataset (a new epoch in `model.fit`, or a
  `.repeat()` after `augment_records`) draws new crops, and so does every
  new pass reproducibly.
* With `seed=None` the seeds come from an unseeded `Dataset.random`:
  different every run, unless the global seed is set.

Flip is off by default
----------------------
Captions often say "left" and "right" (the synthetic set's do: "a red
circle on the left"); a horizontal flip makes such a caption wrong, so
`augment_records` only flips when asked (`flip=True`), e.g. for image-only
MAE pretraining.

References: Szegedy et al. 2015, "Going Deeper with Convolutions" (the
Inception random-resized-crop); He et al. 2022, "Masked Autoencoders Are
Scalable Vision Learners" (crop scale (0.2, 1.0) and flip for MAE
pretraining); Weers et al. 2023, "Masked Autoencoding Does Not Help
Natural Language Supervision at Scale" (arXiv 2301.07836).
"""

import math

import numpy as np
import tensorflow as tf

from keras_maeclip.data.tfds import center_crop_resize
from keras_maeclip.models.preprocessor import IMAGENET_MEAN, IMAGENET_STD

# MAE's pretraining crop (He et al. 2022; scale (0.2, 1.0) in the authors'
# released pretraining transform, with random flips).
MAE_CROP_SCALE = (0.2, 1.0)
# The milder crop used here for image-text (CLIP / MAE-CLIP) training: text
# describes the whole image, so crops keep at least half of it. For
# comparison, open_clip's default training crop is scale (0.9, 1.0) and
# OpenAI's CLIP used only a random square crop of a resized image.
CLIP_CROP_SCALE = (0.5, 1.0)
# Aspect-ratio range (width / height) of the Inception crop, sampled
# log-uniformly.
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
MAX_ATTEMPTS = 10

_INT32_MAX = 2**31 - 1


# --------------------------------------------------------------------------
# Argument checks (Python values; raised when the pipeline is built).


def _check_size(size):
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive integer (the output side); got {size!r}.")
    return int(size)


def _check_range(name, value, upper=None):
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (low, high) of numbers; got {value!r}.") from None
    bad = not (0.0 < low <= high) or (upper is not None and high > upper) or not math.isfinite(high)
    if bad:
        limit = f" <= {upper}" if upper is not None else ""
        raise ValueError(f"{name} must satisfy 0 < low <= high{limit}; got {value!r}.")
    return low, high


def _check_stats(mean, std):
    mean = np.asarray(mean, dtype=np.float32).reshape(-1)
    std = np.asarray(std, dtype=np.float32).reshape(-1)
    if mean.size not in (1, 3) or std.size not in (1, 3):
        raise ValueError(
            f"mean and std must each hold 1 or 3 numbers (one per channel); got {mean.size} and {std.size}."
        )
    if not np.all(std > 0) or not np.all(np.isfinite(mean)) or not np.all(np.isfinite(std)):
        raise ValueError(f"std must be positive and mean, std finite; got mean={mean}, std={std}.")
    return mean, std


def _check_image(image, name="image"):
    image = tf.convert_to_tensor(image)
    if image.shape.rank is not None and image.shape.rank != 3:
        raise ValueError(
            f"{name} must be one unbatched image (H, W, C); got shape {image.shape}. Augment before "
            "batching (map over the examples, then .batch())."
        )
    if image.dtype != tf.uint8:
        raise ValueError(f"{name} must be uint8 in [0, 255]; got {image.dtype.name}.")
    return image


def _as_seed(seed):
    """A shape-(2,) int64 stateless seed; a fresh random one when `seed` is None."""
    if seed is None:
        return tf.random.uniform([2], maxval=_INT32_MAX, dtype=tf.int32)
    seed = tf.convert_to_tensor(seed)
    if not seed.dtype.is_integer or (seed.shape.rank is not None and seed.shape != (2,)):
        raise ValueError(
            f"seed must be None or a shape-(2,) integer tensor (a stateless seed); got {seed.dtype.name} "
            f"with shape {seed.shape}. Derive one per example, e.g. tf.stack([base_seed, index])."
        )
    return seed


def _to_uint8(image):
    return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


# --------------------------------------------------------------------------
# Public transforms.


def _centre_box_with_ratio(height, width, ratio):
    """The largest centred box of `height x width` whose width/height is clamped into `ratio`."""
    h = tf.cast(height, tf.float32)
    w = tf.cast(width, tf.float32)
    aspect = w / h
    crop_w = tf.where(aspect > ratio[1], tf.round(h * ratio[1]), w)
    crop_h = tf.where(aspect < ratio[0], tf.round(w / ratio[0]), h)
    crop_h = tf.cast(tf.clip_by_value(crop_h, 1.0, h), tf.int32)
    crop_w = tf.cast(tf.clip_by_value(crop_w, 1.0, w), tf.int32)
    begin = tf.stack([(height - crop_h) // 2, (width - crop_w) // 2, 0])
    size = tf.stack([crop_h, crop_w, -1])
    return begin, size


def crop_box(image_shape, scale=CLIP_CROP_SCALE, ratio=CROP_RATIO, seed=None):
    """The Inception crop box that `random_resized_crop` cuts, without cutting it.

    Samples up to `MAX_ATTEMPTS` boxes with area fraction uniform in
    `scale` and aspect ratio (width / height) log-uniform in `ratio` with
    `tf.image.stateless_sample_distorted_bounding_box`; the first that fits
    in the image is used. When none fits (tiny or very elongated images),
    falls back to the largest centred box whose aspect ratio is clamped into
    `ratio` (the whole image when its own ratio is in range).

    Args:
        image_shape: int tensor `(H, W, C)`.
        scale: pair, the range of the crop's area as a fraction of H·W.
        ratio: pair, the range of the crop's width / height.
        seed: None or shape-(2,) int tensor, a stateless seed.

    Returns:
        `(begin, size)`: int32 tensors `(top, left, 0)` and `(h, w, -1)`, as
        `tf.slice` takes them.
    """
    scale = _check_range("scale", scale, upper=1.0)
    ratio = _check_range("ratio", ratio)
    image_shape = tf.cast(image_shape, tf.int32)
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        image_shape,
        bounding_boxes=tf.zeros([1, 0, 4], tf.float32),
        seed=_as_seed(seed),
        min_object_covered=0.0,
        aspect_ratio_range=ratio,
        area_range=scale,
        max_attempts=MAX_ATTEMPTS,
        use_image_if_no_bounding_boxes=True,
    )
    # On failure the op returns the whole image. When the whole image's ratio
    # is out of range that cannot be a sampled box, so use the clamped centre box.
    height, width = image_shape[0], image_shape[1]
    whole = tf.logical_and(tf.equal(size[0], height), tf.equal(size[1], width))
    aspect = tf.cast(width, tf.float32) / tf.cast(height, tf.float32)
    out_of_range = tf.logical_or(aspect < ratio[0], aspect > ratio[1])
    centre_begin, centre_size = _centre_box_with_ratio(height, width, ratio)
    fallback = tf.logical_and(whole, out_of_range)
    return tf.where(fallback, centre_begin, begin), tf.where(fallback, centre_size, size)


def random_resized_crop(image, size, scale=CLIP_CROP_SCALE, ratio=CROP_RATIO, seed=None):
    """Inception-style random resized crop of one uint8 image.

    Cuts the box of `crop_box` (area fraction in `scale`, log-uniform
    width/height ratio in `ratio`, centred clamped-ratio fallback after
    `MAX_ATTEMPTS` failures) and resizes it to `size x size`, bilinear with
    antialiasing, rounded back to uint8.

    Args:
        image: uint8 tensor `(H, W, C)`, any H, W >= 1.
        size: int, the output side.
        scale: pair `(low, high)`, 0 < low <= high <= 1, the crop's area
            as a fraction of the image's; `MAE_CROP_SCALE` or
            `CLIP_CROP_SCALE`.
        ratio: pair `(low, high)`, 0 < low <= high, the crop's
            width / height range (default `CROP_RATIO` = (3/4, 4/3)).
        seed: None (a fresh random crop) or a shape-(2,) integer tensor,
            a stateless seed: the same seed and image give the same crop.
            See the module docstring for per-example seeds.

    Returns:
        uint8 tensor `(size, size, C)`.

    References: Szegedy et al. 2015, "Going Deeper with Convolutions";
    He et al. 2022, "Masked Autoencoders Are Scalable Vision Learners".
    """
    size = _check_size(size)
    image = _check_image(image)
    begin, box = crop_box(tf.shape(image), scale, ratio, seed)
    crop = tf.slice(image, begin, box)
    crop.set_shape([None, None, image.shape[-1]])
    resized = tf.image.resize(tf.cast(crop, tf.float32), [size, size], method="bilinear", antialias=True)
    return _to_uint8(resized)


def random_flip(image, seed=None):
    """Horizontal flip with probability 0.5.

    Off by default in `augment_records`: a flip makes captions that say
    "left" or "right" wrong.

    Args:
        image: tensor `(H, W, C)`, any dtype.
        seed: None (fresh randomness) or a shape-(2,) integer tensor, a
            stateless seed: the same seed always makes the same decision.

    Returns:
        tensor like `image`, either `image` or `image[:, ::-1]`.
    """
    image = tf.convert_to_tensor(image)
    if image.shape.rank is not None and image.shape.rank != 3:
        raise ValueError(f"image must be one unbatched image (H, W, C); got shape {image.shape}.")
    return tf.image.stateless_random_flip_left_right(image, _as_seed(seed))


def eval_resize(image, size):
    """Evaluation resize: largest centred square, resized to `size x size`.

    The same as resizing the shorter side to `size` and centre-cropping
    (aspect ratio preserved); delegates to `tfds.center_crop_resize`
    (bicubic, antialiased, rounded to uint8), the resize used by the
    evaluation loaders.

    Args:
        image: uint8 tensor `(H, W, C)`.
        size: int, the output side.

    Returns:
        uint8 tensor `(size, size, C)`.
    """
    return center_crop_resize(_check_size(size))(_check_image(image))


def _normalize(image, mean, std):
    image = tf.cast(image, tf.float32)
    return (image / 255.0 - tf.constant(mean)) / tf.constant(std)


def normalize(image, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """Pixels in [0, 255] to float32 `(x / 255 - mean) / std`, per channel.

    Args:
        image: tensor `(..., C)` of pixel values in [0, 255] (uint8 or float).
        mean: 1 or C numbers, in [0, 1] units (default ImageNet's).
        std: 1 or C positive numbers (default ImageNet's).

    Returns:
        float32 tensor, the shape of `image`.
    """
    mean, std = _check_stats(mean, std)
    return _normalize(image, mean, std)


def augment_records(
    dataset,
    size,
    training=True,
    scale=CLIP_CROP_SCALE,
    ratio=CROP_RATIO,
    flip=False,
    normalize=False,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    seed=None,
    num_parallel_calls=tf.data.AUTOTUNE,
):
    """Augment (training) or eval-resize the `"image"` of every example.

    Args:
        dataset: unbatched `tf.data.Dataset` of dicts with a uint8
            `"image"` `(H, W, C)` (e.g. from `decode_records`). Other
            entries pass through untouched.
        size: int, the output side.
        training: bool. True: `random_resized_crop` (then `random_flip`
            if `flip`). False: `eval_resize` (centre square, no randomness;
            `scale`, `ratio`, `flip` and `seed` are unused).
        scale: pair, the crop's area-fraction range (`CLIP_CROP_SCALE`,
            `MAE_CROP_SCALE`).
        ratio: pair, the crop's width / height range.
        flip: bool, random horizontal flips. Off by default because
            captions say left and right.
        normalize: bool. False (default): images stay uint8, for the
            models' preprocessor to normalise. True: float32
            `(x / 255 - mean) / std`.
        mean: channel means for `normalize=True`.
        std: channel stds for `normalize=True`.
        seed: None or a non-negative int, the seed of the per-example
            seed stream (see the module docstring): the same seed and input
            order give identical images whenever the pipeline is rebuilt
            (TensorFlow's global seed being equal); every pass over the
            dataset (epoch) gets new crops. None: not reproducible unless
            the global seed is set.
        num_parallel_calls: parallelism of the map (order is kept).

    Returns:
        `tf.data.Dataset` of the same dicts with `"image"` replaced by
        `(size, size, C)` uint8 (or float32 when `normalize`).
    """
    if not isinstance(dataset, tf.data.Dataset):
        raise ValueError(f"dataset must be a tf.data.Dataset; got {type(dataset).__name__}.")
    spec = dataset.element_spec
    if not isinstance(spec, dict) or "image" not in spec:
        raise ValueError(
            "dataset elements must be dicts with an 'image' entry (as decode_records yields); got "
            f"element_spec {spec!r}."
        )
    image_spec = spec["image"]
    if image_spec.shape.rank is not None and image_spec.shape.rank != 3:
        raise ValueError(
            f"dataset 'image' must be unbatched (H, W, C); got shape {image_spec.shape}. Call "
            "augment_records before .batch()."
        )
    if image_spec.dtype != tf.uint8:
        raise ValueError(f"dataset 'image' must be uint8; got {image_spec.dtype.name}.")
    size = _check_size(size)
    scale = _check_range("scale", scale, upper=1.0)
    ratio = _check_range("ratio", ratio)
    stats = _check_stats(mean, std) if normalize else None
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
                             or not 0 <= seed <= np.iinfo(np.int64).max):
        raise ValueError(f"seed must be None or a non-negative integer; got {seed!r}.")

    resize = center_crop_resize(size)

    def finish(example, image):
        if stats is not None:
            image = _normalize(image, *stats)
        return {**example, "image": image}

    if not training:
        return dataset.map(
            lambda ex: finish(ex, resize(ex["image"])),
            num_parallel_calls=num_parallel_calls, deterministic=True,
        )

    def augment(example, example_seed):
        crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(example_seed, num=2))
        image = random_resized_crop(example["image"], size, scale, ratio, seed=crop_seed)
        if flip:
            image = random_flip(image, seed=flip_seed)
        return finish(example, image)

    seeds = tf.data.Dataset.random(
        None if seed is None else int(seed), rerandomize_each_iteration=True
    ).batch(2, drop_remainder=True)
    return tf.data.Dataset.zip(dataset, seeds).map(
        augment, num_parallel_calls=num_parallel_calls, deterministic=True
    )
