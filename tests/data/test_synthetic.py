"""Tests for keras_maeclip.data.synthetic (independent of the Keras backend)."""

import ast
import doctest
import os
import re

import numpy as np
import pytest
import tensorflow as tf

from keras_maeclip.data import synthetic
from keras_maeclip.data.synthetic import (
    CLASS_NAMES,
    COLOUR_RGB,
    COLOURS,
    NUM_QA,
    POSITIONS,
    PROMPT_TEMPLATES,
    SHAPES,
    SIZES,
    captions,
    generate_example,
    read_tfrecords,
    synthetic_dataset,
    write_tfrecords,
)

LABELS = ("shape", "colour", "size", "position", "count", "object")
KEYS = ("image", "caption", "key", *LABELS, "questions", "answers", "masks", "object_names")
BACKGROUND_MAX = 60  # background is dark (<= 45 by construction)
JITTER = 15


def _to_numpy(element):
    """Converts a dataset element to generate_example's Python/NumPy types."""
    out = {}
    for name, value in element.items():
        value = value.numpy()
        if name in ("caption", "key"):
            value = value.decode()
        elif name in ("questions", "answers", "object_names"):
            value = [v.decode() for v in value]
        out[name] = value
    return out


def _assert_examples_equal(a, b):
    assert set(a) == set(b) == set(KEYS)
    for name in KEYS:
        if isinstance(a[name], np.ndarray):
            assert a[name].dtype == b[name].dtype, name
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
        else:
            assert a[name] == b[name], name


def _cell_of(mask):
    """(row, col) of the 3x3 cell holding the mask's centroid, plus a flag
    telling whether every pixel of the mask lies in that cell."""
    size = mask.shape[0]
    edges = [k * size // 3 for k in range(4)]
    ys, xs = np.nonzero(mask)
    cy, cx = ys.mean() + 0.5, xs.mean() + 0.5
    row = int(np.searchsorted(edges, cy, side="right") - 1)
    col = int(np.searchsorted(edges, cx, side="right") - 1)
    inside = (
        ys.min() >= edges[row] and ys.max() < edges[row + 1]
        and xs.min() >= edges[col] and xs.max() < edges[col + 1]
    )
    return row, col, inside


def _examples(sizes=(16, 33, 64), n=40, max_objects=3):
    for size in sizes:
        for i in range(n):
            yield generate_example(i, seed=7, image_size=size, max_objects=max_objects)


# ---------------------------------------------------------------------------


def test_module_imports_only_numpy_and_tensorflow():
    tree = ast.parse(open(synthetic.__file__).read())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module.split(".")[0])
    assert imported <= {"numpy", "tensorflow", "os"}, imported


def test_docstring_examples_run():
    result = doctest.testmod(synthetic, verbose=False)
    assert result.attempted >= 5
    assert result.failed == 0


def test_same_seed_and_index_give_the_same_example():
    a = generate_example(5, seed=3)
    b = generate_example(5, seed=3)
    _assert_examples_equal(a, b)
    assert a["key"] == "synthetic-3-00000005"
    assert not np.array_equal(a["image"], generate_example(5, seed=4)["image"])
    assert not np.array_equal(a["image"], generate_example(6, seed=3)["image"])


def test_dataset_element_i_equals_generate_example():
    # 70 elements span more than one internal generator chunk.
    ds = synthetic_dataset(70, seed=2, image_size=33, min_objects=2, max_objects=4)
    elements = list(ds)
    assert len(elements) == 70
    for i in (0, 1, 63, 64, 69):
        expected = generate_example(i, seed=2, image_size=33, min_objects=2, max_objects=4)
        _assert_examples_equal(_to_numpy(elements[i]), expected)


@pytest.mark.parametrize("size", [16, 33, 64, 100])
def test_shapes_and_dtypes(size):
    ex = generate_example(0, image_size=size, max_objects=4)
    assert ex["image"].shape == (size, size, 3) and ex["image"].dtype == np.uint8
    assert ex["masks"].shape == (4, size, size) and ex["masks"].dtype == np.uint8
    assert len(ex["object_names"]) == 4
    assert len(ex["questions"]) == len(ex["answers"]) == NUM_QA
    for name in LABELS:
        assert ex[name].dtype == np.int32 and ex[name].shape == ()
    spec = synthetic_dataset(2, image_size=size, max_objects=4).element_spec
    assert spec["image"].shape == (size, size, 3) and spec["image"].dtype == tf.uint8
    assert spec["masks"].shape == (4, size, size) and spec["masks"].dtype == tf.uint8
    assert spec["questions"].shape == (NUM_QA,) and spec["answers"].shape == (NUM_QA,)
    assert spec["object_names"].shape == (4,)
    assert spec["caption"].shape == () and spec["caption"].dtype == tf.string
    for name in LABELS:
        assert spec[name].dtype == tf.int32 and spec[name].shape == ()
    for value in spec.values():
        assert value.shape.is_fully_defined()


def test_masks_match_pixels_and_counts():
    for ex in _examples(max_objects=9):
        masks, image = ex["masks"].astype(bool), ex["image"]
        assert masks.sum(axis=0).max() <= 1, "masks overlap"
        present = masks.reshape(len(masks), -1).any(axis=1)
        assert present.sum() == ex["count"]
        assert present[: ex["count"]].all()  # objects come first
        for k, name in enumerate(ex["object_names"]):
            if not present[k]:
                assert name == ""
                continue
            colour, _ = name.split(" ")
            pixels = image[masks[k]].astype(int)
            assert (pixels == pixels[0]).all(), "objects are flat-coloured"
            assert np.abs(pixels[0] - np.array(COLOUR_RGB[colour])).max() <= JITTER
        outside = image[~masks.any(axis=0)]
        assert outside.max() <= BACKGROUND_MAX


def test_masks_lie_in_the_named_cell():
    positions_seen = set()
    for ex in _examples(max_objects=9):
        row, col, inside = _cell_of(ex["masks"][0])
        assert inside
        assert POSITIONS[3 * row + col] == POSITIONS[ex["position"]]
        positions_seen.add(int(ex["position"]))
        # Distinct cells for all objects.
        cells = {_cell_of(m)[:2] for m in ex["masks"][: ex["count"]]}
        assert len(cells) == ex["count"]
    assert positions_seen == set(range(9))


def test_left_right_top_bottom_semantics():
    size = 60
    for i in range(60):
        ex = generate_example(i, seed=11, image_size=size)
        ys, xs = np.nonzero(ex["masks"][0])
        name = POSITIONS[ex["position"]]
        if "left" in name:
            assert xs.mean() < size / 3
        if "right" in name:
            assert xs.mean() > 2 * size / 3
        if "top" in name:
            assert ys.mean() < size / 3
        if "bottom" in name:
            assert ys.mean() > 2 * size / 3
        if name == "center":
            assert size / 3 < xs.mean() < 2 * size / 3 and size / 3 < ys.mean() < 2 * size / 3


_POSITION_RE = "|".join(sorted(POSITIONS, key=len, reverse=True))
_PLACE_END = r"(?: corner)?(?=[.,]| and | on a dark)"  # what may follow a place


def test_caption_positions_are_true():
    checked = 0
    for ex in _examples(sizes=(33, 64), n=60, max_objects=5):
        # Every place phrase uses a canonical position name.
        for place in re.findall(rf"(?:at|on|in) the ([a-z ]+?){_PLACE_END}", ex["caption"]):
            assert place in POSITIONS, ex["caption"]
        for k, name in enumerate(ex["object_names"][: ex["count"]]):
            match = re.search(
                rf"{name}(?: is)? (?:at|on|in) the ({_POSITION_RE}){_PLACE_END}",
                ex["caption"],
            )
            if match:
                row, col, _ = _cell_of(ex["masks"][k])
                assert match.group(1) == POSITIONS[3 * row + col], ex["caption"]
                checked += 1
    assert checked > 50


def test_captions_mention_every_object():
    noun = re.compile(rf"\b({'|'.join(COLOURS)}) ({'|'.join(SHAPES)})\b")
    for ex in _examples(max_objects=5):
        caption = ex["caption"]
        assert caption == caption.lower() and caption.isascii()
        names = [n for n in ex["object_names"] if n]
        for name in names:
            assert name in caption
        assert [" ".join(m) for m in noun.findall(caption)] == names  # in order
        assert caption.startswith(("a", "an", "the", "there", "this")) or caption.split()[0] in (
            CLASS_NAMES["count"]
        )


def test_caption_variety_and_captions_function():
    texts = captions(300, seed=5)
    assert texts == [generate_example(i, seed=5)["caption"] for i in range(300)]
    forms = {
        "a picture of": lambda t: t.startswith("a picture of "),
        "an image with": lambda t: t.startswith("an image with "),
        "there are": lambda t: t.startswith("there "),
        "n objects.": lambda t: re.match(r"^[a-z]+ objects?\. the ", t) is not None,
        "a dark background with": lambda t: t.startswith("a dark background with "),
        "on a dark background": lambda t: t.endswith(" on a dark background."),
        "a drawing of": lambda t: t.startswith("a drawing of "),
        "this picture shows": lambda t: t.startswith("this picture shows "),
    }
    seen = {name for name, test in forms.items() if any(test(t) for t in texts)}
    assert len(seen) >= 6, seen
    assert len(set(texts)) > 250


def _size_from_mask(mask):
    size = mask.shape[0]
    ys, xs = np.nonzero(mask)
    extent = max(xs.max() - xs.min(), ys.max() - ys.min()) + 1
    return "large" if extent > 0.65 * (size // 3) else "small"


def test_qa_answers_agree_with_labels():
    for ex in _examples(sizes=(64,), n=150, max_objects=4):
        colour, shape = COLOURS[ex["colour"]], SHAPES[ex["shape"]]
        assert ex["questions"][1] == "how many shapes are there?"
        assert ex["answers"] == [
            colour,
            CLASS_NAMES["count"][ex["count"] - 1],
            POSITIONS[ex["position"]],
        ]
        assert ex["questions"][2] == f"where is the {colour} {shape}?"
        assert ex["object_names"][0] == f"{colour} {shape}"
        # Question 1 names exactly one object.
        described = re.fullmatch(r"what colour is the (.+)\?", ex["questions"][0]).group(1)
        names = ex["object_names"][: ex["count"]]
        same_shape = [k for k, n in enumerate(names) if n.endswith(" " + shape)]
        if described == shape:
            assert same_shape == [0]
        elif described.endswith(" " + shape):
            size = described.split(" ")[0]
            assert size == SIZES[ex["size"]]
            assert [k for k in same_shape if _size_from_mask(ex["masks"][k]) == size] == [0]
        else:
            assert described.startswith(shape + " ") and len(same_shape) > 1


def test_object_label_and_class_names():
    assert CLASS_NAMES["shape"] == SHAPES and CLASS_NAMES["colour"] == COLOURS
    assert CLASS_NAMES["size"] == SIZES and CLASS_NAMES["position"] == POSITIONS
    assert CLASS_NAMES["count"][:3] == ("one", "two", "three") and len(CLASS_NAMES["count"]) == 9
    assert len(CLASS_NAMES["object"]) == len(COLOURS) * len(SHAPES)
    assert len(POSITIONS) == 9
    for ex in _examples(sizes=(32,), n=60):
        assert ex["object"] == ex["colour"] * 4 + ex["shape"]
        name = f"{COLOURS[ex['colour']]} {SHAPES[ex['shape']]}"
        assert CLASS_NAMES["object"][ex["object"]] == name
        assert 1 <= ex["count"] <= 3


def test_prompt_templates():
    assert set(PROMPT_TEMPLATES) == set(CLASS_NAMES)
    for kind, templates in PROMPT_TEMPLATES.items():
        assert len(templates) >= 3, kind
        for template in templates:
            assert template.count("{}") == 1, template
            prompt = template.format(CLASS_NAMES[kind][0])
            assert prompt == prompt.lower() and prompt.isascii()


def test_tfrecord_round_trip(tmp_path):
    n, size = 11, 24
    paths = write_tfrecords(tmp_path, n, num_shards=2, seed=4, image_size=size, max_objects=4)
    assert [os.path.basename(p) for p in paths] == [
        "synthetic-00000-of-00002.tfrecord",
        "synthetic-00001-of-00002.tfrecord",
    ]
    expected = list(synthetic_dataset(n, seed=4, image_size=size, max_objects=4))
    for source in (paths, str(tmp_path), os.path.join(str(tmp_path), "*.tfrecord")):
        ds = read_tfrecords(source)
        spec = synthetic_dataset(1, image_size=size, max_objects=4).element_spec
        assert ds.element_spec == spec
        got = list(ds)
        assert len(got) == n
        for a, b in zip(got, expected):
            _assert_examples_equal(_to_numpy(a), _to_numpy(b))
    keys = [_to_numpy(e)["key"] for e in got]
    assert sorted(keys) == sorted(f"synthetic-4-{i:08d}" for i in range(n))
    # Each shard holds part of the examples.
    per_shard = [sum(1 for _ in tf.data.TFRecordDataset(p)) for p in paths]
    assert per_shard == [5, 6]


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: generate_example(0, image_size=15), "image_size"),
        (lambda: generate_example(0, min_objects=0), "min_objects"),
        (lambda: generate_example(0, max_objects=10), "max_objects"),
        (lambda: generate_example(0, min_objects=3, max_objects=2), "max_objects"),
        (lambda: generate_example(-1), "index"),
        (lambda: generate_example(0, seed=-1), "seed"),
        (lambda: generate_example(0, image_size=32.0), "image_size"),
        (lambda: synthetic_dataset(0), "num_examples"),
        (lambda: synthetic_dataset(5, image_size=8), "image_size"),
        (lambda: captions(0), "num_examples"),
        (lambda: captions(3, max_objects=12), "max_objects"),
        (lambda: captions(3, colour="red"), "colour"),
        (lambda: write_tfrecords("/tmp/unused", 0), "num_examples"),
        (lambda: write_tfrecords("/tmp/unused", 3, num_shards=0), "num_shards"),
        (lambda: write_tfrecords("/tmp/unused", 3, num_shards=4), "num_shards"),
        (lambda: read_tfrecords("/nonexistent/dir/*.tfrecord"), "paths"),
        (lambda: read_tfrecords(["/nonexistent/file.tfrecord"]), "paths"),
    ],
)
def test_bad_arguments_raise_value_error(call, name):
    with pytest.raises(ValueError, match=name) as info:
        call()
    assert "\n" not in str(info.value)
