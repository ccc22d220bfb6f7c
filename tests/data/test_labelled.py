"""Labelled images (CSV / TSV manifest, folder per class) and the held-out split."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_maeclip.data import holdout, labelled

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def png(colour, size=12):
    buffer = io.BytesIO()
    Image.fromarray(np.full((size, size + 4, 3), colour, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_folders(root, per_class=3):
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            (root / name / f"{i}.png").write_bytes(png(colour))
    (root / "red" / "broken.png").write_bytes(b"not a png")
    (root / "red" / "notes.txt").write_text("ignored: not an image")
    return root


def write_manifest(root, separator=","):
    root.mkdir()
    rows = [f"path{separator}colour"]
    for i, (name, colour) in enumerate(list(COLOURS.items()) * 2):
        (root / f"{i}.png").write_bytes(png(colour))
        rows.append(f"{i}.png{separator}{name}")
    noise = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="PNG")
    (root / "bad.png").write_bytes(buffer.getvalue()[:1500])  # truncated
    rows += [f"bad.png{separator}red", f"0.png{separator}purple", f"1.png{separator}", f"gone.png{separator}red"]
    suffix = "tsv" if separator == "\t" else "csv"
    (root / f"labels.{suffix}").write_text("\n".join(rows) + "\n")
    return root / f"labels.{suffix}"


def test_folder_per_class_reads_decodes_resizes_and_counts_bad_files(tmp_path):
    data = labelled.load_labelled(write_folders(tmp_path / "photos"), image_size=8)
    assert data.class_names == ["blue", "green", "red"]
    assert data.images.shape == (9, 8, 8, 3) and data.images.dtype == np.uint8
    assert data.skipped == {"unknown_format": 1}  # "not a png"
    for image, label in zip(data.images, data.labels):
        np.testing.assert_allclose(image.reshape(-1, 3).mean(0), COLOURS[data.class_names[label]], atol=2)
    # Given class names choose and order the folders.
    only = labelled.read_class_folders(tmp_path / "photos", 8, class_names=["red", "blue"])
    assert only.class_names == ["red", "blue"] and sorted(set(only.labels)) == [0, 1]
    with pytest.raises(ValueError, match="no sub-folder for classes"):
        labelled.read_class_folders(tmp_path / "photos", 8, class_names=["cyan"])


@pytest.mark.parametrize("separator", [",", "\t"])
def test_manifest_labels_by_name_or_index_and_skips_bad_rows_with_counts(tmp_path, separator):
    manifest = write_manifest(tmp_path / "m", separator)
    data = labelled.load_labelled(manifest, 8, image_key="path", label_key="colour")
    assert data.class_names == ["blue", "green", "purple", "red"]  # labels seen, sorted
    assert data.skipped == {"corrupt_image": 1, "empty_caption": 1, "missing_file": 1}
    named = labelled.load_labelled(manifest, 8, class_names=list(COLOURS), image_key="path", label_key="colour")
    assert named.class_names == ["red", "green", "blue"]
    assert named.skipped == {"corrupt_image": 1, "empty_caption": 1, "missing_file": 1, "unknown_label": 1}
    expected = {f"{i}.png".encode(): i % 3 for i in range(6)}
    assert dict(zip(named.keys, named.labels.tolist())) == expected
    train, test = named.split(test_fraction=0.5, seed=0)
    assert len(train) + len(test) == 6 and set(train.keys).isdisjoint(test.keys)
    assert sorted(test.labels.tolist()) == [0, 1, 2]  # one of each class's two images


def test_integer_labels_need_class_names_and_files_give_them(tmp_path):
    root = tmp_path / "ints"
    root.mkdir()
    (root / "0.png").write_bytes(png(COLOURS["red"]))
    (root / "1.png").write_bytes(png(COLOURS["blue"]))
    (root / "labels.csv").write_text("filepath,label\n0.png,0\n1.png,1\n")
    with pytest.raises(ValueError, match="give the class names"):
        labelled.load_labelled(root / "labels.csv", 8)
    (tmp_path / "names.txt").write_text("# colours\nred\n\nblue\n")
    names = labelled.read_lines(tmp_path / "names.txt")
    data = labelled.load_labelled(root / "labels.csv", 8, class_names=names)
    assert names == ["red", "blue"] and data.labels.tolist() == [0, 1]


def raw(n):
    return tf.data.Dataset.from_tensor_slices({
        "image": [png(COLOURS["red"])] * n, "caption": [f"caption {i}" for i in range(n)],
        "key": [f"img/{i}.png" for i in range(n)], "error": [""] * n,
    })


def test_held_out_split_is_disjoint_complete_and_independent_of_order():
    records = raw(400)
    train, held = holdout.split_records(records, 0.1, seed=0)
    train_keys = {r["key"] for r in train.as_numpy_iterator()}
    held_keys = {r["key"] for r in held.as_numpy_iterator()}
    assert train_keys.isdisjoint(held_keys) and len(train_keys | held_keys) == 400
    assert 20 <= len(held_keys) <= 60  # ~10 %
    shuffled = holdout.split_records(records.shuffle(400, seed=3).repeat(2), 0.1, seed=0)[1]
    assert {r["key"] for r in shuffled.as_numpy_iterator()} == held_keys
    other = {r["key"] for r in holdout.split_records(records, 0.1, seed=1)[1].as_numpy_iterator()}
    assert other != held_keys
    pairs = holdout.held_out_pairs(held, image_size=8, max_examples=5)
    assert pairs["image"].shape == (5, 8, 8, 3) and set(pairs["key"]) <= held_keys
    with pytest.raises(ValueError, match="eval_fraction must be"):
        holdout.split_records(records, 1.0)
    with pytest.raises(ValueError, match="No good held-out record"):
        holdout.held_out_pairs(records.take(0), 8, 5)
