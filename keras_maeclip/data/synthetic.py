"""Procedurally drawn image-caption dataset of coloured shapes.

Used to pretrain tiny CLIP models on CPU in minutes and to evaluate zero-shot
classification, retrieval, visual question answering and visual grounding.
Everything is deterministic: example ``i`` of seed ``s`` is drawn from
``np.random.default_rng([s, i])`` alone, so it is the same whatever else is
generated and whatever the batch or shard layout.

Scenes
------
An image of ``image_size`` x ``image_size`` pixels is a dark, slightly noisy
background split into a 3 x 3 grid of cells. Cell edges are at
``k * image_size // 3`` for ``k = 0..3`` (row 0 is the top, column 0 the left;
image x grows to the right). A scene holds ``min_objects..max_objects``
objects, each in its own cell, so objects never overlap. The ``(colour,
shape)`` pairs of one scene are distinct, so "the <colour> <shape>" always
names exactly one object (used by question 3 and by ``object_names`` for
grounding). Each object has a shape (``SHAPES``), a flat colour (``COLOUR_RGB``
plus a per-object jitter of at most 15 per channel), a size (``SIZES``: about
45 % or 85 % of the cell, in whole pixels, at least 3 and 4 pixels) and a
random whole-pixel offset that keeps it inside its cell (with a 1-pixel margin
once cells are 8 pixels or wider, so neighbours never touch). Shapes are
mirror-symmetric: a filled circle, a filled square, a triangle pointing up
and a plus-shaped cross whose arms are a third of its width. They are easy to
tell apart from about 5 pixels across (small objects at ``image_size=32``);
at ``image_size < 24`` small objects are only 3-4 pixels and a small circle
can look like a small square or cross. Object 0 is the "main" object: it is
mentioned first in the caption and its attributes are the example's labels.

Labels
------
``shape``, ``colour``, ``size`` and ``position`` are indices into ``SHAPES``,
``COLOURS``, ``SIZES`` and ``POSITIONS``; ``object`` is
``colour * len(SHAPES) + shape`` (an index into ``CLASS_NAMES["object"]``).
``count`` is the number of objects itself (``1..max_objects``), so its class
name is ``CLASS_NAMES["count"][count - 1]`` (note the ``- 1``).

Questions
---------
Every example has ``NUM_QA = 3`` question/answer pairs, always in this order:

1. "what colour is the <shape>?" -> colour name. If another object has the
   same shape, the main object is named "the <size> <shape>" when its size
   differs from every other object of that shape, otherwise
   "the <shape> <position phrase>" (e.g. "the circle on the left"), which is
   always unique.
2. "how many shapes are there?" -> count word ("one", "two", ...).
3. "where is the <colour> <shape>?" -> position name of the main object.

TFRecords
---------
``write_tfrecords`` stores one ``tf.train.Example`` per example: "image" is a
PNG (RGB), "masks" a single-channel PNG of shape
``(image_size, image_size * max_objects)`` holding mask ``k`` in columns
``[k * image_size, (k + 1) * image_size)`` with values 0/1; strings are bytes
(UTF-8), labels int64, plus int64 "image_size" and "max_objects".
"""

import os

import numpy as np
import tensorflow as tf

__all__ = [
    "SHAPES",
    "COLOURS",
    "COLOUR_RGB",
    "SIZES",
    "POSITIONS",
    "NUM_QA",
    "CLASS_NAMES",
    "PROMPT_TEMPLATES",
    "generate_example",
    "synthetic_dataset",
    "captions",
    "write_tfrecords",
    "read_tfrecords",
]

SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")
SIZES = ("small", "large")
POSITIONS = (
    "top left",
    "top",
    "top right",
    "left",
    "center",
    "right",
    "bottom left",
    "bottom",
    "bottom right",
)
NUM_QA = 3

# Nominal RGB of each colour; an object's colour is this plus a jitter in
# [-15, 15] per channel. Every colour has a channel >= 190, far above the
# background (<= 45), and any two colours differ by >= 80 in some channel.
COLOUR_RGB = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 90, 230),
    "yellow": (230, 220, 40),
    "purple": (150, 60, 200),
    "orange": (240, 140, 30),
}

_COUNT_WORDS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_MAX_OBJECTS = 9
_JITTER = 15
_SIZE_FRACTION = (0.45, 0.85)  # of the cell's shorter side
_SIZE_MIN_PIXELS = (3, 4)
_MIN_IMAGE_SIZE = 16

CLASS_NAMES = {
    "shape": SHAPES,
    "colour": COLOURS,
    "size": SIZES,
    "position": POSITIONS,
    "count": _COUNT_WORDS,
    "object": tuple(f"{c} {s}" for c in COLOURS for s in SHAPES),
}

PROMPT_TEMPLATES = {
    "shape": ("a {} shape.", "a picture of a {}.", "a drawing of a {}.", "a {}."),
    "colour": ("a {} object.", "a {} shape.", "a picture of a {} shape.", "something {}."),
    "size": ("a {} shape.", "a {} object.", "a picture of a {} shape."),
    "position": (
        "a shape at the {}.",
        "an object at the {}.",
        "a picture with a shape at the {}.",
    ),
    "count": ("{} shapes.", "a picture of {} shapes.", "there are {} objects."),
    "object": ("a {}.", "a picture of a {}.", "a {} shape.", "a drawing of a {}."),
}

# How captions and questions place an object; the first phrase is canonical.
_POSITION_PHRASES = {
    "top left": ("at the top left", "in the top left corner"),
    "top": ("at the top",),
    "top right": ("at the top right", "in the top right corner"),
    "left": ("on the left",),
    "center": ("in the center",),
    "right": ("on the right",),
    "bottom left": ("at the bottom left", "in the bottom left corner"),
    "bottom": ("at the bottom",),
    "bottom right": ("at the bottom right", "in the bottom right corner"),
}

_NUM_TEMPLATES = 9


# --------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------


def _check_int(name, value, low, high=None):
    """Returns ``value`` as an int or raises a one-line ValueError."""
    valid = f">= {low}" if high is None else f"in [{low}, {high}]"
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer {valid}, got {value!r}.")
    value = int(value)
    if value < low or (high is not None and value > high):
        raise ValueError(f"{name} must be an integer {valid}, got {value}.")
    return value


def _check_sizes(sizes):
    """The object sizes a scene may draw, as indices into ``SIZES``."""
    names = (sizes,) if isinstance(sizes, str) else tuple(sizes or ())
    unknown = [n for n in names if n not in SIZES]
    if not names or unknown:
        raise ValueError(
            f"sizes={sizes!r}: use a non-empty subset of {SIZES} (e.g. ('large',) for objects "
            "that stay visible under heavy patch masking)."
        )
    return tuple(sorted({SIZES.index(n) for n in names}))


def _check_scene_args(seed, image_size, min_objects, max_objects):
    seed = _check_int("seed", seed, 0)
    image_size = _check_int("image_size", image_size, _MIN_IMAGE_SIZE)
    min_objects = _check_int("min_objects", min_objects, 1, _MAX_OBJECTS)
    max_objects = _check_int("max_objects", max_objects, min_objects, _MAX_OBJECTS)
    return seed, image_size, min_objects, max_objects


# --------------------------------------------------------------------------
# Scene sampling and text
# --------------------------------------------------------------------------


def _article(word):
    return "an" if word[0] in "aeiou" else "a"


def _join(phrases):
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _sample_scene(rng, min_objects, max_objects, sizes=(0, 1)):
    """Draws everything but the pixels (independent of the image size).

    ``sizes`` are the allowed indices into ``SIZES``; with all of them the
    draws are those of the scenes before the option existed.
    """
    count = int(rng.integers(min_objects, max_objects + 1))
    cells = rng.choice(len(POSITIONS), size=count, replace=False)
    classes = rng.choice(len(COLOURS) * len(SHAPES), size=count, replace=False)
    sizes = np.asarray(sizes)[rng.integers(0, len(sizes), size=count)]
    jitter = rng.integers(-_JITTER, _JITTER + 1, size=(count, 3))
    offsets = rng.random((count, 2))
    objects = []
    for k in range(count):
        objects.append(
            {
                "shape": int(classes[k] % len(SHAPES)),
                "colour": int(classes[k] // len(SHAPES)),
                "size": int(sizes[k]),
                "position": int(cells[k]),
                "jitter": jitter[k],
                "offset": offsets[k],
            }
        )
    return objects


def _noun(obj, with_size=False):
    words = [COLOURS[obj["colour"]], SHAPES[obj["shape"]]]
    if with_size:
        words.insert(0, SIZES[obj["size"]])
    return " ".join(words)


def _position_phrase(rng, obj):
    phrases = _POSITION_PHRASES[POSITIONS[obj["position"]]]
    return phrases[int(rng.integers(len(phrases)))]


def _make_caption(rng, objects):
    """A lowercase caption mentioning every object, main object first."""
    count = len(objects)
    template = int(rng.integers(_NUM_TEMPLATES))
    with_size = rng.random(count) < 0.4
    with_position = rng.random(count) < 0.5
    count_word = _COUNT_WORDS[count - 1]

    if template == 4:
        # "two objects. the red square is at the bottom right. ..."
        noun = "object" if count == 1 else "objects"
        sentences = [f"{count_word} {noun}."]
        for obj, size_flag in zip(objects, with_size):
            sentences.append(
                f"the {_noun(obj, size_flag)} is {_position_phrase(rng, obj)}."
            )
        return " ".join(sentences)

    phrases = []
    for obj, size_flag, position_flag in zip(objects, with_size, with_position):
        noun = _noun(obj, size_flag)
        phrase = f"{_article(noun)} {noun}"
        if position_flag:
            phrase += " " + _position_phrase(rng, obj)
        phrases.append(phrase)
    listed = _join(phrases)

    if template == 0:
        return f"{listed}."
    if template == 1:
        return f"a picture of {listed}."
    if template == 2:
        return f"an image with {listed}."
    if template == 3:
        if count == 1:
            return f"there is one shape: {listed}."
        return f"there are {count_word} shapes: {listed}."
    if template == 5:
        return f"a dark background with {listed}."
    if template == 6:
        return f"{listed} on a dark background."
    if template == 7:
        return f"a drawing of {listed}."
    return f"this picture shows {listed}."


def _make_qa(objects):
    """The NUM_QA (question, answer) pairs; see the module docstring."""
    main = objects[0]
    shape = SHAPES[main["shape"]]
    same_shape = [o for o in objects[1:] if o["shape"] == main["shape"]]
    if not same_shape:
        described = shape
    elif all(o["size"] != main["size"] for o in same_shape):
        described = f"{SIZES[main['size']]} {shape}"
    else:
        described = f"{shape} {_POSITION_PHRASES[POSITIONS[main['position']]][0]}"
    questions = [
        f"what colour is the {described}?",
        "how many shapes are there?",
        f"where is the {_noun(main)}?",
    ]
    answers = [
        COLOURS[main["colour"]],
        _COUNT_WORDS[len(objects) - 1],
        POSITIONS[main["position"]],
    ]
    return questions, answers


# --------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------


def _cell_edges(image_size):
    return [k * image_size // 3 for k in range(4)]


def _object_box(obj, edges):
    """Integer bounding box (left, top, diameter) of an object in pixels.

    The diameter is a whole number of pixels and the box starts on a pixel
    edge, so every shape is drawn mirror-symmetric. When the cell is at least
    8 pixels wide a 1-pixel margin is kept inside it, so objects in
    neighbouring cells never touch.
    """
    row, col = divmod(obj["position"], 3)
    x0, x1 = edges[col], edges[col + 1]
    y0, y1 = edges[row], edges[row + 1]
    cell = min(x1 - x0, y1 - y0)
    margin = 1 if cell >= 8 else 0
    room = cell - 2 * margin
    wanted = int(np.floor(_SIZE_FRACTION[obj["size"]] * cell + 0.5))
    diameter = min(max(wanted, _SIZE_MIN_PIXELS[obj["size"]]), room)
    left = x0 + margin + int(obj["offset"][0] * (x1 - x0 - 2 * margin - diameter + 1))
    top = y0 + margin + int(obj["offset"][1] * (y1 - y0 - 2 * margin - diameter + 1))
    return left, top, diameter


def _object_mask(obj, image_size, edges, xs, ys):
    """Boolean (S, S) mask of one object, tested at pixel centres."""
    left, top, diameter = _object_box(obj, edges)
    r = diameter / 2.0
    cx = left + r
    cy = top + r
    dx = xs - cx  # (1, S)
    dy = ys - cy  # (S, 1)
    shape = SHAPES[obj["shape"]]
    if shape == "circle":
        mask = dx * dx + dy * dy <= r * r
    elif shape == "square":
        mask = (np.abs(dx) <= r) & (np.abs(dy) <= r)
    elif shape == "triangle":  # apex up, base along the bottom
        mask = (dy <= r) & (np.abs(dx) <= (dy + r) / 2.0)
    else:  # plus-shaped cross, arms a third of the extent wide
        w = r / 3.0
        inside = (np.abs(dx) <= r) & (np.abs(dy) <= r)
        mask = inside & ((np.abs(dx) <= w) | (np.abs(dy) <= w))
    mask = np.broadcast_to(mask, (image_size, image_size)).copy()
    if not mask.any():  # tiny images: keep at least the centre pixel
        mask[int(cy), int(cx)] = True
    return mask


def _render(rng, objects, image_size, max_objects):
    s = image_size
    # Dark background: a per-image base colour plus per-pixel noise, <= 45.
    base = rng.integers(0, 30, size=3, dtype=np.uint8)
    image = rng.integers(0, 16, size=(s, s, 3), dtype=np.uint8)
    image += base
    masks = np.zeros((max_objects, s, s), dtype=np.uint8)
    centres = np.arange(s, dtype=np.float64) + 0.5
    xs, ys = centres[None, :], centres[:, None]
    edges = _cell_edges(s)
    for k, obj in enumerate(objects):
        mask = _object_mask(obj, s, edges, xs, ys)
        rgb = np.asarray(COLOUR_RGB[COLOURS[obj["colour"]]]) + obj["jitter"]
        image[mask] = np.clip(rgb, 0, 255).astype(np.uint8)
        masks[k] = mask
    return image, masks


# --------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------


def _example_rng(seed, index):
    return np.random.default_rng([seed, index])


def generate_example(index, seed=0, image_size=64, min_objects=1, max_objects=3, sizes=SIZES):
    """Draws one synthetic image-caption example with NumPy.

    Args:
        index: int >= 0. Example number; with ``seed`` it alone determines
            the example (``np.random.default_rng([seed, index])``).
        seed: int >= 0, default 0. Dataset seed.
        image_size: int >= 16, default 64. Image height and width in pixels.
        min_objects: int in [1, 9], default 1. Fewest objects per image.
        max_objects: int in [min_objects, 9], default 3. Most objects per
            image; also the length of ``masks`` and ``object_names``.
        sizes: the object sizes drawn, a non-empty subset of ``SIZES``
            (default both). ``("large",)`` makes every object about 85 % of
            its cell, so that it keeps a visible patch under heavy random
            masking (``keras_maeclip.evaluation.visibility``; docs/data.md
            gives the shares per image and patch size).

    Returns:
        A dict of NumPy values: "image" uint8 ``(S, S, 3)``; "caption" str;
        "key" str ``f"synthetic-{seed}-{index:08d}"``; "shape", "colour",
        "size", "position", "count", "object" int32 scalars (labels of the
        main object, see the module docstring); "questions", "answers" lists
        of ``NUM_QA`` str; "masks" uint8 ``(max_objects, S, S)`` of 0/1, one
        per object, zeros for absent objects; "object_names" list of
        ``max_objects`` str ("<colour> <shape>", "" for absent objects).

    Example:
        >>> ex = generate_example(0, seed=1, image_size=32)
        >>> ex["image"].shape, ex["masks"].shape
        ((32, 32, 3), (3, 32, 32))
        >>> ex["object_names"][0] in ex["caption"]
        True
    """
    index = _check_int("index", index, 0)
    seed, image_size, min_objects, max_objects = _check_scene_args(
        seed, image_size, min_objects, max_objects
    )
    rng = _example_rng(seed, index)
    objects = _sample_scene(rng, min_objects, max_objects, _check_sizes(sizes))
    caption = _make_caption(rng, objects)
    questions, answers = _make_qa(objects)
    image, masks = _render(rng, objects, image_size, max_objects)
    main = objects[0]
    names = [_noun(o) for o in objects] + [""] * (max_objects - len(objects))
    return {
        "image": image,
        "caption": caption,
        "key": f"synthetic-{seed}-{index:08d}",
        "shape": np.int32(main["shape"]),
        "colour": np.int32(main["colour"]),
        "size": np.int32(main["size"]),
        "position": np.int32(main["position"]),
        "count": np.int32(len(objects)),
        "object": np.int32(main["colour"] * len(SHAPES) + main["shape"]),
        "questions": questions,
        "answers": answers,
        "masks": masks,
        "object_names": names,
    }


_CHUNK = 64  # examples per from_generator step in synthetic_dataset
_LABEL_KEYS = ("shape", "colour", "size", "position", "count", "object")
_STRING_LIST_KEYS = ("questions", "answers", "object_names")


def _output_signature(image_size, max_objects):
    s = image_size
    signature = {
        "image": tf.TensorSpec((s, s, 3), tf.uint8),
        "caption": tf.TensorSpec((), tf.string),
        "key": tf.TensorSpec((), tf.string),
    }
    for name in _LABEL_KEYS:
        signature[name] = tf.TensorSpec((), tf.int32)
    signature["questions"] = tf.TensorSpec((NUM_QA,), tf.string)
    signature["answers"] = tf.TensorSpec((NUM_QA,), tf.string)
    signature["masks"] = tf.TensorSpec((max_objects, s, s), tf.uint8)
    signature["object_names"] = tf.TensorSpec((max_objects,), tf.string)
    return signature


def _to_tf_structure(example):
    out = dict(example)
    out["caption"] = example["caption"].encode()
    out["key"] = example["key"].encode()
    for name in _STRING_LIST_KEYS:
        out[name] = np.array([t.encode() for t in example[name]], dtype=object)
    return out


def synthetic_dataset(num_examples, seed=0, image_size=64, min_objects=1, max_objects=3,
                      sizes=SIZES):
    """Builds a ``tf.data.Dataset`` of synthetic examples, generated lazily.

    Args:
        num_examples: int >= 1. Number of elements.
        seed: int >= 0, default 0. Dataset seed.
        image_size: int >= 16, default 64. Image height and width in pixels.
        min_objects: int in [1, 9], default 1. Fewest objects per image.
        max_objects: int in [min_objects, 9], default 3. Most objects.
        sizes: the object sizes drawn (``generate_example``), default both.

    Returns:
        A ``tf.data.Dataset`` whose element ``i`` equals
        ``generate_example(i, seed, image_size, min_objects, max_objects)``
        as tensors: "image" uint8 ``(S, S, 3)``, "caption" and "key"
        tf.string scalars, the six int32 label scalars, "questions" and
        "answers" tf.string ``(NUM_QA,)``, "masks" uint8
        ``(max_objects, S, S)``, "object_names" tf.string ``(max_objects,)``.
        All static shapes are fully known.

    Example:
        >>> ds = synthetic_dataset(4, image_size=32)
        >>> batch = next(iter(ds.batch(4)))
        >>> tuple(batch["image"].shape), tuple(batch["questions"].shape)
        ((4, 32, 32, 3), (4, 3))
    """
    num_examples = _check_int("num_examples", num_examples, 1)
    seed, image_size, min_objects, max_objects = _check_scene_args(
        seed, image_size, min_objects, max_objects
    )
    _check_sizes(sizes)

    def generator():
        # Yields stacked chunks: far less per-element overhead than single
        # examples through from_generator; unbatched below.
        for start in range(0, num_examples, _CHUNK):
            chunk = [
                _to_tf_structure(
                    generate_example(i, seed, image_size, min_objects, max_objects, sizes)
                )
                for i in range(start, min(start + _CHUNK, num_examples))
            ]
            yield {name: np.stack([ex[name] for ex in chunk]) for name in chunk[0]}

    signature = {
        name: tf.TensorSpec((None,) + tuple(spec.shape), spec.dtype)
        for name, spec in _output_signature(image_size, max_objects).items()
    }
    dataset = tf.data.Dataset.from_generator(generator, output_signature=signature)
    dataset = dataset.unbatch()
    return dataset.apply(tf.data.experimental.assert_cardinality(num_examples))


def captions(num_examples, seed=0, **kwargs):
    """Returns just the captions of the first ``num_examples`` examples.

    Much faster than generating the examples: no pixels are drawn. The
    captions equal ``generate_example(i, seed, **kwargs)["caption"]``.

    Args:
        num_examples: int >= 1. Number of captions.
        seed: int >= 0, default 0. Dataset seed.
        **kwargs: ``image_size`` (int >= 16, default 64; validated but it
            does not change captions), ``min_objects`` (default 1) and
            ``max_objects`` (default 3) and ``sizes``, as for
            ``generate_example``.

    Returns:
        A list of ``num_examples`` lowercase ASCII strings.

    Example:
        >>> texts = captions(3, seed=0)
        >>> len(texts), all(t == t.lower() for t in texts)
        (3, True)
    """
    unknown = set(kwargs) - {"image_size", "min_objects", "max_objects", "sizes"}
    if unknown:
        raise ValueError(
            f"captions got unexpected keyword arguments {sorted(unknown)}; "
            "valid ones are image_size, min_objects, max_objects, sizes."
        )
    sizes = _check_sizes(kwargs.get("sizes", SIZES))
    num_examples = _check_int("num_examples", num_examples, 1)
    seed, _, min_objects, max_objects = _check_scene_args(
        seed,
        kwargs.get("image_size", 64),
        kwargs.get("min_objects", 1),
        kwargs.get("max_objects", 3),
    )
    texts = []
    for i in range(num_examples):
        rng = _example_rng(seed, i)
        texts.append(_make_caption(rng, _sample_scene(rng, min_objects, max_objects, sizes)))
    return texts


def _bytes_feature(values):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def _int_feature(values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def _serialize(example, image_size, max_objects):
    s = image_size
    # (M, S, S) -> (S, M, S) -> (S, M * S, 1): mask k in columns [k*S, (k+1)*S).
    masks = np.transpose(example["masks"], (1, 0, 2)).reshape(s, max_objects * s, 1)
    feature = {
        "image": _bytes_feature([tf.io.encode_png(example["image"]).numpy()]),
        "masks": _bytes_feature([tf.io.encode_png(masks).numpy()]),
        "caption": _bytes_feature([example["caption"].encode()]),
        "key": _bytes_feature([example["key"].encode()]),
        "image_size": _int_feature([s]),
        "max_objects": _int_feature([max_objects]),
    }
    for name in _LABEL_KEYS:
        feature[name] = _int_feature([int(example[name])])
    for name in _STRING_LIST_KEYS:
        feature[name] = _bytes_feature([t.encode() for t in example[name]])
    proto = tf.train.Example(features=tf.train.Features(feature=feature))
    return proto.SerializeToString()


def write_tfrecords(
    directory, num_examples, num_shards=1, seed=0, image_size=64, min_objects=1, max_objects=3
):
    """Writes synthetic examples to sharded TFRecord files of ``tf.train.Example``.

    Shard ``k`` holds a contiguous block of examples (shard 0 the first), so
    reading the shards in order gives the examples in index order. The record
    layout is described in the module docstring ("image" and "masks" are PNG).

    Args:
        directory: str or path-like. Output folder, created if missing.
        num_examples: int >= 1. Number of examples to write.
        num_shards: int in [1, num_examples], default 1. Number of files.
        seed: int >= 0, default 0. Dataset seed.
        image_size: int >= 16, default 64. Image height and width in pixels.
        min_objects: int in [1, 9], default 1. Fewest objects per image.
        max_objects: int in [min_objects, 9], default 3. Most objects.

    Returns:
        The list of written paths, ``<directory>/synthetic-00000-of-00004.tfrecord``
        and so on, in shard order.

    Example:
        >>> import tempfile
        >>> paths = write_tfrecords(tempfile.mkdtemp(), 4, num_shards=2, image_size=16)
        >>> [os.path.basename(p) for p in paths]
        ['synthetic-00000-of-00002.tfrecord', 'synthetic-00001-of-00002.tfrecord']
    """
    num_examples = _check_int("num_examples", num_examples, 1)
    num_shards = _check_int("num_shards", num_shards, 1, num_examples)
    seed, image_size, min_objects, max_objects = _check_scene_args(
        seed, image_size, min_objects, max_objects
    )
    directory = os.fspath(directory)
    tf.io.gfile.makedirs(directory)
    bounds = [k * num_examples // num_shards for k in range(num_shards + 1)]
    paths = []
    for shard in range(num_shards):
        path = os.path.join(directory, f"synthetic-{shard:05d}-of-{num_shards:05d}.tfrecord")
        with tf.io.TFRecordWriter(path) as writer:
            for i in range(bounds[shard], bounds[shard + 1]):
                example = generate_example(i, seed, image_size, min_objects, max_objects)
                writer.write(_serialize(example, image_size, max_objects))
        paths.append(path)
    return paths


def _resolve_paths(paths):
    if isinstance(paths, (str, os.PathLike)):
        path = os.fspath(paths)
        if tf.io.gfile.isdir(path):
            found = sorted(tf.io.gfile.glob(os.path.join(path, "synthetic-*.tfrecord")))
        elif any(c in path for c in "*?["):
            found = sorted(tf.io.gfile.glob(path))
        else:
            found = [path]
    else:
        found = [os.fspath(p) for p in paths]
    if not found:
        raise ValueError(f"paths matched no TFRecord files, got {paths!r}.")
    missing = [p for p in found if not tf.io.gfile.exists(p)]
    if missing:
        raise ValueError(f"paths names files that do not exist: {missing[:3]!r}.")
    return found


def read_tfrecords(paths):
    """Reads files from ``write_tfrecords`` back into the ``synthetic_dataset`` structure.

    ``image_size`` and ``max_objects`` are read from the first record of the
    first file; every record must share them (checked while reading). Files
    are read in the given order (a directory or glob is sorted), so the
    shards of one ``write_tfrecords`` call come back in index order.

    Args:
        paths: str, path-like, or a sequence of them. A file, a directory
            (all ``synthetic-*.tfrecord`` in it), a glob pattern, or a list
            of files.

    Returns:
        A ``tf.data.Dataset`` with exactly the element structure, dtypes and
        static shapes of ``synthetic_dataset`` (decoded uint8 image and masks,
        int32 labels, tf.string texts).

    Example:
        >>> import tempfile
        >>> directory = tempfile.mkdtemp()
        >>> _ = write_tfrecords(directory, 2, image_size=16)
        >>> ds = read_tfrecords(directory)
        >>> ex = next(iter(ds))
        >>> tuple(ex["image"].shape), tuple(ex["masks"].shape)
        ((16, 16, 3), (3, 16, 16))
    """
    files = _resolve_paths(paths)
    first = next(iter(tf.data.TFRecordDataset(files[:1]).take(1)), None)
    if first is None:
        raise ValueError(f"paths hold no records, got {paths!r}.")
    header = tf.train.Example.FromString(first.numpy()).features.feature
    image_size = int(header["image_size"].int64_list.value[0])
    max_objects = int(header["max_objects"].int64_list.value[0])

    features = {
        "image": tf.io.FixedLenFeature([], tf.string),
        "masks": tf.io.FixedLenFeature([], tf.string),
        "caption": tf.io.FixedLenFeature([], tf.string),
        "key": tf.io.FixedLenFeature([], tf.string),
        "image_size": tf.io.FixedLenFeature([], tf.int64),
        "max_objects": tf.io.FixedLenFeature([], tf.int64),
        "questions": tf.io.FixedLenFeature([NUM_QA], tf.string),
        "answers": tf.io.FixedLenFeature([NUM_QA], tf.string),
        "object_names": tf.io.FixedLenFeature([max_objects], tf.string),
    }
    for name in _LABEL_KEYS:
        features[name] = tf.io.FixedLenFeature([], tf.int64)
    s = image_size

    def parse(record):
        ex = tf.io.parse_single_example(record, features)
        checks = [
            tf.debugging.assert_equal(
                ex["image_size"], tf.constant(s, tf.int64),
                message="records in one read_tfrecords call must share image_size",
            ),
            tf.debugging.assert_equal(
                ex["max_objects"], tf.constant(max_objects, tf.int64),
                message="records in one read_tfrecords call must share max_objects",
            ),
        ]
        with tf.control_dependencies(checks):
            image = tf.io.decode_png(ex["image"], channels=3)
        image = tf.ensure_shape(image, (s, s, 3))
        masks = tf.io.decode_png(ex["masks"], channels=1)
        masks = tf.reshape(masks, (s, max_objects, s))
        masks = tf.transpose(masks, (1, 0, 2))
        out = {"image": image, "caption": ex["caption"], "key": ex["key"]}
        for name in _LABEL_KEYS:
            out[name] = tf.cast(ex[name], tf.int32)
        out["questions"] = ex["questions"]
        out["answers"] = ex["answers"]
        out["masks"] = masks
        out["object_names"] = ex["object_names"]
        return out

    return tf.data.TFRecordDataset(files).map(parse, num_parallel_calls=tf.data.AUTOTUNE)
