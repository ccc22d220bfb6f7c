"""Tests for keras_maeclip.data.tfds: offline TFDS loaders and shipped data files.

No test downloads anything. "Prepared" datasets are faked by writing the
builder's own metadata (dataset_info.json, features.json) into a tmp
data_dir and mocking the examples with `tfds.testing.mock_data`.
"""

import os

os.environ.setdefault("NO_GCE_CHECK", "true")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402
from PIL import Image  # noqa: E402

from keras_maeclip.data.tfds import (  # noqa: E402
    CLASSIFICATION_DATASETS,
    VQA_DATASETS,
    DatasetNotFoundError,
    center_crop_resize,
    class_names,
    imagenet_class_names,
    imagenet_synset_ids,
    imagenet_templates,
    load_classification,
    load_vqa,
    supported_datasets,
    to_numpy,
)

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def fake_prepare(tfds_name, data_dir, label_names=None):
    """Writes a builder's metadata where `tfds build` would put it.

    Some builders (CIFAR) only learn their class names from the raw files
    while preparing; `label_names` sets them as that step does.
    """
    builder = tfds.builder(tfds_name, data_dir=str(data_dir))
    if label_names:
        builder.info.features["label"].names = label_names
    os.makedirs(builder.data_dir)
    builder.info.write_to_directory(builder.data_dir)
    return builder.data_dir


# ---------------------------------------------------------------- missing data


def test_missing_dataset_raises_naming_dataset_version_directory_and_fix(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        load_classification("cifar10", "test", tmp_path)
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    for part in ("'cifar10'", "3.0.2", str(tmp_path), os.path.join(str(tmp_path), "cifar10", "3.0.2"),
                 f"tfds build cifar10 --data_dir={tmp_path}", "download_and_prepare"):
        assert part in message, part
    assert not os.listdir(tmp_path)  # nothing downloaded or created

    with pytest.raises(DatasetNotFoundError, match=r"eurosat/rgb.*config 'rgb'"):
        load_classification("eurosat", "train", tmp_path)
    with pytest.raises(DatasetNotFoundError, match="manual_dir"):
        load_classification("imagenet2012", "test", tmp_path)
    with pytest.raises(DatasetNotFoundError, match="'clevr'"):
        load_vqa("clevr", "train", tmp_path)
    with pytest.raises(DatasetNotFoundError, match="cifar100"):
        class_names("cifar100", tmp_path)


def test_missing_dataset_reports_other_prepared_versions(tmp_path):
    old = tmp_path / "cifar10" / "3.0.1"
    old.mkdir(parents=True)
    (old / "dataset_info.json").write_text("{}")
    with pytest.raises(DatasetNotFoundError, match=r"Other versions found there: 3\.0\.1"):
        load_classification("cifar10", "train", tmp_path)


def test_unknown_names_splits_and_options_are_value_errors(tmp_path):
    with pytest.raises(ValueError, match=r"Unknown classification dataset 'mnist'.*cifar10.*imagenet2012"):
        load_classification("mnist", "test", tmp_path)
    with pytest.raises(ValueError, match=r"'clevr' is a vqa dataset: use load_vqa"):
        load_classification("clevr", "test", tmp_path)
    with pytest.raises(ValueError, match=r"Unknown vqa dataset 'cifar10'.*clevr.*use load_classification"):
        load_vqa("cifar10", "test", tmp_path)
    with pytest.raises(ValueError, match="image_size"):
        load_classification("cifar10", "test", tmp_path, image_size=0)
    with pytest.raises(ValueError, match="max_examples"):
        load_classification("cifar10", "test", tmp_path, max_examples=2.5)
    fake_prepare("cifar10", tmp_path)
    with tfds.testing.mock_data(num_examples=2, data_dir=str(tmp_path)):
        with pytest.raises(ValueError, match=r"split must be one of \['test', 'train'\]"):
            load_classification("cifar10", "validation", tmp_path)


# ---------------------------------------------------------------- registry


def test_registry_keys_match_the_tfds_features(tmp_path):
    assert set(supported_datasets()) == set(CLASSIFICATION_DATASETS) | set(VQA_DATASETS)
    assert supported_datasets("vqa") == ("clevr",)
    for spec in CLASSIFICATION_DATASETS.values():
        features = tfds.builder(spec.tfds_name, data_dir=str(tmp_path)).info.features
        assert isinstance(features[spec.image_key], tfds.features.Image), spec.name
        assert isinstance(features[spec.label_key], tfds.features.ClassLabel), spec.name
        assert {"train", "test"} <= set(spec.splits), spec.name
    qa = tfds.builder("clevr", data_dir=str(tmp_path)).info.features[VQA_DATASETS["clevr"].qa_key]
    assert isinstance(qa, tfds.features.Sequence)
    assert set(qa.feature.keys()) == {"question", "answer"}
    assert CLASSIFICATION_DATASETS["imagenet2012"].splits["test"] == "validation"


# ---------------------------------------------------------------- classification


def test_cifar10_from_a_prepared_data_dir(tmp_path):
    fake_prepare("cifar10", tmp_path, label_names=CIFAR10_NAMES)
    with tfds.testing.mock_data(num_examples=7, data_dir=str(tmp_path)):
        raw = to_numpy(tfds.builder("cifar10", data_dir=str(tmp_path)).as_dataset(split="test"))
        full = to_numpy(load_classification("cifar10", "test", tmp_path, image_size=32))
        small = to_numpy(load_classification("cifar10", "test", tmp_path, image_size=16, max_examples=5))
        native = load_classification("cifar10", "train", tmp_path)
        names = class_names("cifar10", tmp_path)

    assert set(full) == set(small) == {"image", "label"}
    assert full["image"].dtype == np.uint8 and full["label"].dtype == np.int32
    assert full["image"].shape == (7, 32, 32, 3)
    np.testing.assert_array_equal(full["image"], raw["image"])  # same-size resize is the identity
    np.testing.assert_array_equal(full["label"], raw["label"])
    assert small["image"].shape == (5, 16, 16, 3)
    np.testing.assert_array_equal(small["label"], raw["label"][:5])
    assert ((0 <= full["label"]) & (full["label"] < 10)).all()
    assert native.element_spec["image"].shape == (32, 32, 3)
    assert names == CIFAR10_NAMES


def test_grayscale_images_become_three_equal_channels(tmp_path):
    fake_prepare("smallnorb", tmp_path)
    with tfds.testing.mock_data(num_examples=3, data_dir=str(tmp_path)):
        raw = to_numpy(tfds.builder("smallnorb", data_dir=str(tmp_path)).as_dataset(split="test"))
        out = to_numpy(load_classification("smallnorb_elevation", "test", tmp_path))
        names = class_names("smallnorb_azimuth", tmp_path)
    assert raw["image"].shape == (3, 96, 96, 1) and out["image"].shape == (3, 96, 96, 3)
    for c in range(3):
        np.testing.assert_array_equal(out["image"][..., c], raw["image"][..., 0])
    np.testing.assert_array_equal(out["label"], raw["label_elevation"])
    assert len(names) == 18


def test_class_names_come_from_the_prepared_metadata_and_are_made_readable(tmp_path):
    fake_prepare("sun397/tfds", tmp_path)
    fake_prepare("eurosat/rgb", tmp_path)
    assert class_names("sun397", tmp_path, readable=False)[:2] == ["/a/abbey", "/a/airplane_cabin"]
    sun = class_names("sun397", tmp_path)
    assert len(sun) == 397 and sun[:2] == ["abbey", "airplane cabin"]
    assert "bakery shop" in sun
    assert class_names("eurosat", tmp_path)[:3] == ["Annual Crop", "Forest", "Herbaceous Vegetation"]


def test_center_crop_resize_crops_the_middle_and_matches_pil_bicubic():
    bands = np.zeros((8, 16, 3), np.uint8)
    bands[:, :4], bands[:, 4:12], bands[:, 12:] = 10, 200, 50
    assert (center_crop_resize(8)(tf.constant(bands)).numpy() == 200).all()  # only the middle band
    tall = np.transpose(bands, (1, 0, 2))
    assert (center_crop_resize(4)(tf.constant(tall)).numpy() == 200).all()
    constant = np.full((30, 20, 3), 77, np.uint8)
    assert (center_crop_resize(7)(tf.constant(constant)).numpy() == 77).all()
    # Independent reference: PIL's bicubic on the centre square (crop offset (53 - 37) // 2 = 8).
    image = np.random.default_rng(0).integers(0, 256, (37, 53, 3)).astype(np.uint8)
    out = center_crop_resize(16)(tf.constant(image)).numpy()
    reference = np.asarray(Image.fromarray(image[:, 8:45]).resize((16, 16), Image.BICUBIC))
    assert out.dtype == np.uint8 and out.shape == (16, 16, 3)
    diff = np.abs(out.astype(int) - reference.astype(int))
    assert diff.max() <= 2 and diff.mean() < 0.5  # the two bicubic kernels differ by rounding


def test_to_numpy_rejects_ragged_images():
    ragged = tf.data.Dataset.from_generator(
        lambda: iter([np.zeros((4, 4, 3), np.uint8), np.zeros((5, 4, 3), np.uint8)]),
        output_signature=tf.TensorSpec((None, None, 3), tf.uint8),
    ).map(lambda image: {"image": image})
    with pytest.raises(ValueError, match="image_size"):
        to_numpy(ragged)


# ---------------------------------------------------------------- VQA

QA = [  # per image: (question, answer) pairs; the middle image has none
    [("how many cubes are there?", "2"), ("is the sphere red?", "yes")],
    [],
    [("what colour is the cylinder?", "blue"), ("are there more cubes than spheres?", "no"),
     ("what material is the big cube?", "metal")],
]


def fake_clevr(self, split, **kwargs):
    """Three CLEVR-like examples (images of pixels 0, 1, 2, heights 6, 7, 8) with QA's pairs."""
    def examples():
        for i, pairs in enumerate(QA):
            yield {
                "image": np.full((6 + i, 8, 3), i, np.uint8),
                "question_answer": {"question": np.array([q for q, _ in pairs], dtype=object),
                                    "answer": np.array([a for _, a in pairs], dtype=object)},
            }

    return tf.data.Dataset.from_generator(examples, output_signature={
        "image": tf.TensorSpec((None, 8, 3), tf.uint8),
        "question_answer": {"question": tf.TensorSpec((None,), tf.string),
                            "answer": tf.TensorSpec((None,), tf.string)},
    })


def test_clevr_vqa_flattens_question_answer_pairs(tmp_path):
    fake_prepare("clevr", tmp_path)
    with tfds.testing.mock_data(data_dir=str(tmp_path), as_dataset_fn=fake_clevr):
        out = to_numpy(load_vqa("clevr", "test", tmp_path, image_size=4))
        first = to_numpy(load_vqa("clevr", "train", tmp_path, max_examples=4, image_size=4))
        native = load_vqa("clevr", "train", tmp_path)
    pairs = [(i, q, a) for i, qa in enumerate(QA) for q, a in qa]
    assert set(out) == {"image", "question", "answer"}
    assert len(out["question"]) == sum(len(qa) for qa in QA) == 5
    assert out["question"].tolist() == [q for _, q, _ in pairs]  # decoded str, in order
    assert out["answer"].tolist() == [a for _, _, a in pairs]
    assert out["image"].shape == (5, 4, 4, 3) and out["image"].dtype == np.uint8
    np.testing.assert_array_equal(out["image"][:, 0, 0, 0], [i for i, _, _ in pairs])
    assert first["question"].tolist() == out["question"].tolist()[:4]
    assert native.element_spec["image"].shape.as_list() == [None, 8, 3]


# ---------------------------------------------------------------- shipped files


def test_imagenet_classes_file_matches_tfds_label_order(tmp_path):
    ids, names = imagenet_synset_ids(), imagenet_class_names()
    assert len(ids) == len(names) == 1000
    assert ids == sorted(ids) and len(set(ids)) == 1000
    assert ids == tfds.builder("imagenet2012", data_dir=str(tmp_path)).info.features["label"].names
    assert len({n.lower() for n in names}) == 1000  # duplicated lemmas disambiguated
    assert all(n and n == n.strip() and "\t" not in n for n in names)
    assert (names[0], names[1], names[2]) == ("tench", "goldfish", "great white shark")
    assert (names[134], names[517]) == ("crane (wading bird)", "crane (lifting device)")
    assert class_names("imagenet2012") == names
    path = os.path.join(os.path.dirname(__file__), "../../keras_maeclip/data/assets/imagenet_classes.txt")
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert lines[0].startswith("#") and "WordNet" in lines[0] + lines[1] + lines[2]
    assert len([line for line in lines if not line.startswith("#")]) == 1000


def test_templates_have_exactly_one_placeholder():
    templates = imagenet_templates()
    assert 10 <= len(templates) <= 20 and len(set(templates)) == len(templates)
    for template in templates:
        assert template.count("{}") == 1 and "{" not in template.replace("{}", ""), template
        assert "\t" not in template and not template.startswith("#")
    assert templates[0].format("tench") == "a photo of a tench."


def test_every_classification_dataset_has_its_own_prompt_templates():
    from keras_maeclip.data.tfds import imagenet_templates, prompt_templates, supported_datasets

    for name in supported_datasets("classification"):
        templates = prompt_templates(name)
        assert templates and all(t.count("{}") == 1 for t in templates), name
    assert prompt_templates("imagenet2012") == imagenet_templates()
    assert prompt_templates("oxford_flowers102") != prompt_templates("eurosat")
    assert any("flower" in t for t in prompt_templates("oxford_flowers102"))
    with pytest.raises(ValueError, match="Unknown classification dataset"):
        prompt_templates("mnist_typo")
