"""Real evaluation datasets, read through tensorflow_datasets from a local data_dir.

The loaders never download: they open a dataset that `tfds build` (or
`download_and_prepare`) has already written under `data_dir` and raise
`DatasetNotFoundError` -- naming the dataset, its TFDS version/config, the
directory looked in and the command that prepares it -- when it is not there.

```python
test = load_classification("cifar10", "test", "/data/tfds", image_size=224)
arrays = to_numpy(test, max_examples=1000)   # {"image": uint8, "label": int32}
names = class_names("cifar10", "/data/tfds")  # ["airplane", "automobile", ...]
```

Registry
--------
`CLASSIFICATION_DATASETS` (zero-shot and linear-probe evaluation) holds
ImageNet-1k, CIFAR-10/100 and the VTAB-1k tasks whose label is a plain TFDS
`ClassLabel` feature; `VQA_DATASETS` holds CLEVR's question/answer pairs.
Each `DatasetSpec` names the TFDS dataset (with config), the image and label
feature keys, the TFDS split behind each role ("train", "validation",
"test") and where class names come from. ImageNet's test role is its
validation split (its test split has no labels) and its class names come
from the shipped `assets/imagenet_classes.txt`; every other dataset's come
from the prepared dataset's `ClassLabel.names` (some TFDS builders only
learn their names while preparing, so the prepared metadata is read).
EuroSAT and RESISC45 ship one split, cut 60 / 20 / 20 % into train /
validation / test as VTAB does.

Left out (their VTAB-1k label is not a plain `ClassLabel`): CLEVR count and
closest-object distance and KITTI closest-vehicle distance (derived from the
per-object annotations), dSprites location and orientation (VTAB bins the
32- and 40-way TFDS labels into 16 classes). smallNORB's azimuth and
elevation are plain labels and are included.

Images come out as uint8 `(H, W, 3)` (grayscale repeated to three
channels). With `image_size`, each image is resized the usual evaluation
way: the largest centred square is cropped and resized to `image_size`
(the same as resizing the shorter side to `image_size` and centre-cropping),
bicubic with antialiasing, rounded back to uint8.

tensorflow_datasets is imported lazily (it takes seconds) and with
`NO_GCE_CHECK=true` unless set, which skips a Google Compute Engine metadata
probe when the process has no network.

References: Zhai et al. 2019, "A Large-scale Study of Representation
Learning with the Visual Task Adaptation Benchmark" (VTAB-1k tasks and
splits); Johnson et al. 2017, "CLEVR".
"""

import dataclasses
import os
import re
import types
from importlib import resources

import keras
import numpy as np
import tensorflow as tf

from keras_maeclip import extras


class DatasetNotFoundError(FileNotFoundError):
    """A supported dataset is not prepared in the given TFDS data_dir."""


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """How one evaluation dataset is read from TFDS.

    Attributes:
        name: str, the registry name used by the loaders.
        tfds_name: str, the TFDS builder name, with `/config` if any.
        task: str, `"classification"` or `"vqa"`.
        splits: mapping role (`"train"`, `"validation"`, `"test"`) -> TFDS
            split string; roles the dataset lacks are absent.
        image_key: str, the image feature.
        label_key: str or None, the `ClassLabel` feature (classification).
        qa_key: str or None, the `Sequence({"question", "answer"})` feature
            (VQA).
        class_names_from: str, `"tfds"` (the label's `ClassLabel.names`)
            or `"imagenet_classes.txt"` (the shipped file).
        manual_download: bool, TFDS needs the raw files placed by hand
            (`--manual_dir`) before it can prepare the dataset.
        vtab: bool, one of the VTAB-1k tasks.
    """

    name: str
    tfds_name: str
    task: str
    splits: types.MappingProxyType
    image_key: str = "image"
    label_key: str = "label"
    qa_key: str = None
    class_names_from: str = "tfds"
    manual_download: bool = False
    vtab: bool = False


def _classification(name, tfds_name=None, splits=("train", None, "test"), **kwargs):
    roles = dict(zip(("train", "validation", "test"), splits))
    return DatasetSpec(
        name=name,
        tfds_name=tfds_name or name,
        task="classification",
        splits=types.MappingProxyType({k: v for k, v in roles.items() if v}),
        **kwargs,
    )


_TRAIN_VAL_TEST = ("train", "validation", "test")
_ONE_SPLIT_60_20_20 = ("train[:60%]", "train[60%:80%]", "train[80%:]")

CLASSIFICATION_DATASETS = types.MappingProxyType({spec.name: spec for spec in (
    _classification("imagenet2012", splits=("train", None, "validation"),
                    class_names_from="imagenet_classes.txt", manual_download=True),
    _classification("cifar10"),
    _classification("cifar100", vtab=True),
    _classification("caltech101", vtab=True),
    _classification("oxford_flowers102", splits=_TRAIN_VAL_TEST, vtab=True),
    _classification("oxford_iiit_pet", vtab=True),
    _classification("dtd", splits=_TRAIN_VAL_TEST, vtab=True),
    _classification("svhn_cropped", vtab=True),
    _classification("sun397", "sun397/tfds", splits=_TRAIN_VAL_TEST, vtab=True),
    _classification("patch_camelyon", splits=_TRAIN_VAL_TEST, vtab=True),
    _classification("eurosat", "eurosat/rgb", splits=_ONE_SPLIT_60_20_20, vtab=True),
    _classification("resisc45", splits=_ONE_SPLIT_60_20_20, manual_download=True, vtab=True),
    _classification("diabetic_retinopathy_detection", "diabetic_retinopathy_detection/btgraham-300",
                    splits=_TRAIN_VAL_TEST, manual_download=True, vtab=True),
    _classification("dmlab", splits=_TRAIN_VAL_TEST, vtab=True),
    _classification("smallnorb_azimuth", "smallnorb", label_key="label_azimuth", vtab=True),
    _classification("smallnorb_elevation", "smallnorb", label_key="label_elevation", vtab=True),
)})

VQA_DATASETS = types.MappingProxyType({
    # CLEVR's test questions have no answers, so its validation split is the test role.
    "clevr": DatasetSpec(
        name="clevr", tfds_name="clevr", task="vqa",
        splits=types.MappingProxyType({"train": "train", "test": "validation"}),
        label_key=None, qa_key="question_answer", class_names_from=None,
    ),
})


def supported_datasets(task=None):
    """Names of the supported datasets.

    Args:
        task: None (all), `"classification"` or `"vqa"`.

    Returns:
        tuple of str, sorted.
    """
    registries = {"classification": CLASSIFICATION_DATASETS, "vqa": VQA_DATASETS}
    if task is None:
        return tuple(sorted(set(CLASSIFICATION_DATASETS) | set(VQA_DATASETS)))
    if task not in registries:
        raise ValueError(f"task must be None, 'classification' or 'vqa'; got {task!r}.")
    return tuple(sorted(registries[task]))


def dataset_spec(name, task="classification"):
    """The registry entry of a supported dataset.

    Args:
        name: str, a name from `supported_datasets(task)`.
        task: `"classification"` or `"vqa"`.

    Returns:
        `DatasetSpec`.
    """
    registry = {"classification": CLASSIFICATION_DATASETS, "vqa": VQA_DATASETS}.get(task)
    if registry is None:
        raise ValueError(f"task must be 'classification' or 'vqa'; got {task!r}.")
    if name in registry:
        return registry[name]
    other = "vqa" if task == "classification" else "classification"
    hint = ""
    if name in supported_datasets(other):
        loader = "load_vqa" if other == "vqa" else "load_classification"
        hint = f" {name!r} is a {other} dataset: use {loader}()."
    raise ValueError(
        f"Unknown {task} dataset {name!r}. Supported: {', '.join(supported_datasets(task))}.{hint}"
    )


# --------------------------------------------------------------------------
# Shipped data files.


def _asset_lines(filename):
    text = resources.files("keras_maeclip.data").joinpath("assets", filename).read_text("utf-8")
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def _imagenet_rows():
    rows = [line.split("\t") for line in _asset_lines("imagenet_classes.txt")]
    if any(len(row) != 2 for row in rows):
        raise ValueError("assets/imagenet_classes.txt: every line must be '<synset id>\\t<name>'.")
    return rows


def imagenet_synset_ids():
    """The 1000 ImageNet-1k WordNet synset ids in label order (sorted).

    Returns:
        list of str, e.g. `"n01440764"` first; index = TFDS `imagenet2012` label.
    """
    return [synset for synset, _ in _imagenet_rows()]


def imagenet_class_names():
    """Human-readable ImageNet-1k class names in label order.

    Each is the synset's first WordNet lemma (e.g. "tench"); the six
    synsets whose first lemmas clash are disambiguated as the header of
    `assets/imagenet_classes.txt` describes (e.g. "crane (wading bird)").

    Returns:
        list of 1000 unique str.
    """
    return [name for _, name in _imagenet_rows()]


def imagenet_templates():
    """Prompt templates for zero-shot ImageNet, each with one `"{}"`.

    Returns:
        list of str, e.g. `"a photo of a {}."`.

    References: Radford et al. 2021, "Learning Transferable Visual Models
    From Natural Language Supervision", §3.1.4 (prompt ensembling).
    """
    return _asset_lines("imagenet_templates.txt")


# Zero-shot prompt templates per dataset (each with one "{}"), written for
# what the images show: objects (CIFAR, Caltech), a kind of flower or pet,
# textures, house numbers, scenes, tissue, satellite and aerial views,
# retinas, rendered 3-D scenes and toys. ImageNet has its own file.
_OBJECT_TEMPLATES = (
    "a photo of a {}.", "a blurry photo of a {}.", "a low resolution photo of a {}.",
    "a close-up photo of a {}.", "a photo of the {}.", "a picture of a small {}.",
    "a picture of a large {}.", "a cropped photo of a {}.",
)
PROMPT_TEMPLATES = types.MappingProxyType({
    "cifar10": _OBJECT_TEMPLATES,
    "cifar100": _OBJECT_TEMPLATES,
    "caltech101": ("a photo of a {}.", "a photo of the {}.", "a drawing of a {}.",
                   "a painting of the {}.", "a picture showing a {}."),
    "oxford_flowers102": ("a photo of a {}, a kind of flower.", "a close-up of {} flowers.",
                          "a picture of a {} in bloom."),
    "oxford_iiit_pet": ("a photo of a {}, a kind of pet.", "a picture of a {}, a pet animal.",
                        "my pet, a {}."),
    "dtd": ("a photo of a {} texture.", "a {} pattern.", "a close-up of a {} surface.",
            "something with a {} texture."),
    "svhn_cropped": ('a photo of the house number "{}".', 'the digit {} on a street sign.',
                     'a picture of the number {}.'),
    "sun397": ("a photo of a {}.", "a photo taken at a {}.", "a scene of a {}."),
    "patch_camelyon": ("a microscope image of {} tissue.", "a histopathology slide of {}.",
                       "a lymph node tissue patch showing {}."),
    "eurosat": ("a satellite image of {}.", "a satellite view of an area of {}.",
                "a centred satellite photo of {}."),
    "resisc45": ("an aerial image of a {}.", "a satellite photo of a {}.",
                 "remote sensing imagery of a {}."),
    "diabetic_retinopathy_detection": ("a retinal fundus photo with {}.", "an eye scan showing {}."),
    "dmlab": ("a rendered 3-D scene, {}.", "a frame of a video game: {}."),
    "smallnorb_azimuth": ("a toy photographed from azimuth {}.", "a photo of a toy at angle {}."),
    "smallnorb_elevation": ("a toy photographed from elevation {}.", "a photo of a toy at height {}."),
})


def prompt_templates(name):
    """The zero-shot prompt templates of a supported classification dataset.

    Args:
        name: a name from `supported_datasets("classification")`.

    Returns:
        list of str, each with one `"{}"` for the class name.

    Example:
    >>> prompt_templates("oxford_iiit_pet")[0]
    'a photo of a {}, a kind of pet.'
    """
    dataset_spec(name)  # a clear error for an unknown name
    if name == "imagenet2012":
        return imagenet_templates()
    return list(PROMPT_TEMPLATES[name])


# --------------------------------------------------------------------------
# Opening prepared TFDS datasets.


def _tfds():
    os.environ.setdefault("NO_GCE_CHECK", "true")
    return extras.require("tensorflow_datasets", "tfds", "Reading TFDS datasets")


def _versions_found(builder):
    """Versions of this builder (same config) prepared under its data_dir root."""
    folder = os.path.dirname(os.fspath(builder.data_path))
    if not os.path.isdir(folder):
        return []
    return sorted(
        entry for entry in os.listdir(folder)
        if re.fullmatch(r"\d+\.\d+\.\d+", entry)
        and os.path.exists(os.path.join(folder, entry, "dataset_info.json"))
    )


def _not_prepared_message(spec, builder):
    root = os.fspath(builder.data_dir_root)
    config = f", config {builder.builder_config.name!r}" if builder.builder_config else ""
    others = _versions_found(builder)
    found = (
        f" Other versions found there: {', '.join(others)}; this loader reads {builder.version}"
        " (what tensorflow-datasets builds now), so rebuild it."
        if others else ""
    )
    manual = (
        f" {spec.tfds_name} needs a manual download first: put the raw files described in"
        f" tfds.builder({spec.tfds_name!r}).MANUAL_DOWNLOAD_INSTRUCTIONS in a folder and add"
        " --manual_dir=<that folder> (Python: download_config=tfds.download.DownloadConfig("
        "manual_dir=...))."
        if spec.manual_download else ""
    )
    return (
        f"Dataset {spec.name!r} (TFDS {spec.tfds_name}, version {builder.version}{config}) is not "
        f"prepared in data_dir {root!r}: no prepared files in {os.fspath(builder.data_path)!r}."
        f"{found} These loaders never download. To fix, prepare it on a machine that has the raw "
        f"data or network access with `tfds build {spec.tfds_name} --data_dir={root}` (Python: "
        f"tfds.builder({spec.tfds_name!r}, data_dir={root!r}).download_and_prepare()) and copy "
        f"that folder here, or pass the data_dir where it is already prepared.{manual}"
    )


def _prepared_builder(spec, data_dir):
    if data_dir is not None and not isinstance(data_dir, (str, os.PathLike)):
        raise ValueError(f"data_dir must be a path (str) or None; got {type(data_dir).__name__}.")
    builder = _tfds().builder(spec.tfds_name, data_dir=None if data_dir is None else os.fspath(data_dir))
    if not builder.is_prepared():
        raise DatasetNotFoundError(_not_prepared_message(spec, builder))
    return builder


def _tfds_split(spec, split, builder):
    if split not in spec.splits:
        raise ValueError(
            f"split must be one of {sorted(spec.splits)} for {spec.name!r} (they read TFDS splits "
            f"{dict(spec.splits)}); got {split!r}."
        )
    tfds_split = spec.splits[split]
    available = set(builder.info.splits.keys())
    needed = {re.sub(r"\[.*\]$", "", part) for part in tfds_split.split("+")}
    if available and not needed <= available:
        raise ValueError(
            f"{spec.name!r} prepared in {os.fspath(builder.data_path)!r} has splits "
            f"{sorted(available)}, not {sorted(needed - available)} (needed for role {split!r}); "
            "re-prepare it with tfds build."
        )
    return tfds_split


def _check_options(image_size, max_examples):
    for name, value in (("image_size", image_size), ("max_examples", max_examples)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))
                                  or value < 1):
            raise ValueError(f"{name} must be None or a positive integer; got {value!r}.")


# --------------------------------------------------------------------------
# Images.


def center_crop_resize(image_size):
    """A function mapping one uint8 image `(H, W, C)` to `(S, S, C)` uint8.

    Crops the largest centred square and resizes it to `image_size`
    (bicubic, antialiased; rounded and clipped back to uint8) with
    `keras.layers.Resizing(crop_to_aspect_ratio=True)`; for tf.data
    pipelines (any Keras backend).

    Args:
        image_size: int, the output side S.

    Returns:
        callable `tf.Tensor -> tf.Tensor`.
    """
    _check_options(image_size, None)
    resizing = keras.layers.Resizing(
        image_size, image_size, interpolation="bicubic", crop_to_aspect_ratio=True, antialias=True
    )

    def resize(image):
        resized = resizing(tf.cast(image, "float32"))
        return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)

    return resize


def _image_pipeline(image_spec_shape, image_size):
    channels = image_spec_shape[-1]
    if channels not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels; this dataset's have {channels}.")
    resize = center_crop_resize(image_size) if image_size else None

    def prepare(image):
        image = tf.convert_to_tensor(image, tf.uint8)
        if channels == 1:
            image = tf.image.grayscale_to_rgb(image)
        return resize(image) if resize else image

    return prepare


def _as_dataset(builder, tfds_split):
    return builder.as_dataset(split=tfds_split, shuffle_files=False)


# --------------------------------------------------------------------------
# Public loaders.


def load_classification(name, split, data_dir, image_size=None, max_examples=None):
    """A prepared TFDS classification dataset as `{"image", "label"}` examples.

    Args:
        name: str, a name from `supported_datasets("classification")`.
        split: `"train"`, `"test"` or (where the dataset has one)
            `"validation"`; mapped to TFDS splits by the registry (e.g.
            ImageNet's `"test"` is its validation split).
        data_dir: str or path, the TFDS data_dir holding the prepared
            dataset; None means TFDS's default (`~/tensorflow_datasets` or
            `$TFDS_DATA_DIR`). Nothing is downloaded.
        image_size: optional int. If given, images are centre-cropped to a
            square and resized to `image_size` (see `center_crop_resize`);
            otherwise they keep their own (possibly varying) size.
        max_examples: optional int, keep only the first this many examples
            (in the TFDS order, which is fixed).

    Returns:
        `tf.data.Dataset` of `{"image": uint8 (H, W, 3), "label": int32 ()}`,
        unbatched, in a deterministic order.

    Raises:
        DatasetNotFoundError: the dataset is not prepared under `data_dir`.
        ValueError: unknown name or split, or a bad option.
    """
    spec = dataset_spec(name, "classification")
    _check_options(image_size, max_examples)
    builder = _prepared_builder(spec, data_dir)
    tfds_split = _tfds_split(spec, split, builder)
    prepare = _image_pipeline(builder.info.features[spec.image_key].shape, image_size)
    dataset = _as_dataset(builder, tfds_split)
    if max_examples:
        dataset = dataset.take(max_examples)
    return dataset.map(
        lambda ex: {"image": prepare(ex[spec.image_key]), "label": tf.cast(ex[spec.label_key], tf.int32)},
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )


def _readable(name):
    name = re.sub(r"^/[a-z]/", "", name)  # SUN397: "/a/airplane_cabin"
    name = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name)  # EuroSAT: "AnnualCrop"
    return " ".join(name.replace("/", " ").replace("_", " ").split())


def class_names(name, data_dir=None, readable=True):
    """Class names of a classification dataset, in label order.

    Args:
        name: str, a name from `supported_datasets("classification")`.
        data_dir: the TFDS data_dir with the prepared dataset (its metadata
            holds the names); not needed for `"imagenet2012"`, whose names
            are `imagenet_class_names()`.
        readable: bool. Make TFDS names prompt-friendly: underscores and
            slashes become spaces, SUN397's "/a/" prefixes go and CamelCase
            is split ("AnnualCrop" -> "Annual Crop"). Numeric names (e.g.
            the smallNORB angles, retinopathy grades) stay as they are.

    Returns:
        list of str, index = label.
    """
    spec = dataset_spec(name, "classification")
    if spec.class_names_from == "imagenet_classes.txt":
        return imagenet_class_names()
    names = list(_prepared_builder(spec, data_dir).info.features[spec.label_key].names)
    return [_readable(n) for n in names] if readable else names


def load_vqa(name, split, data_dir, image_size=None, max_examples=None):
    """A prepared TFDS VQA dataset, one `(image, question, answer)` per example.

    Each image's question/answer pairs are flattened in order, the image
    repeated for each; images without questions yield nothing.

    Args:
        name: str, a name from `supported_datasets("vqa")` (`"clevr"`).
        split: `"train"` or `"test"` (CLEVR's validation split: its test
            split has no answers).
        data_dir: str or path, the TFDS data_dir (None: TFDS's default).
        image_size: optional int, see `load_classification`.
        max_examples: optional int, keep the first this many triples.

    Returns:
        `tf.data.Dataset` of `{"image": uint8 (H, W, 3), "question":
        tf.string (), "answer": tf.string ()}`. `to_numpy` gives arrays for
        `keras_maeclip.evaluation.vqa.fine_tune_vqa`.

    Raises:
        DatasetNotFoundError: the dataset is not prepared under `data_dir`.
        ValueError: unknown name or split, or a bad option.
    """
    spec = dataset_spec(name, "vqa")
    _check_options(image_size, max_examples)
    builder = _prepared_builder(spec, data_dir)
    tfds_split = _tfds_split(spec, split, builder)
    prepare = _image_pipeline(builder.info.features[spec.image_key].shape, image_size)

    def triples(ex):
        image = prepare(ex[spec.image_key])
        qa = ex[spec.qa_key]
        pairs = tf.data.Dataset.from_tensor_slices({"question": qa["question"], "answer": qa["answer"]})
        return pairs.map(lambda pair: {"image": image, **pair})

    dataset = _as_dataset(builder, tfds_split).flat_map(triples)
    return dataset.take(max_examples) if max_examples else dataset


def to_numpy(dataset, max_examples=None):
    """Stack an unbatched dataset of dicts into NumPy arrays.

    Args:
        dataset: `tf.data.Dataset` of dicts of tensors (e.g. from
            `load_classification` or `load_vqa`).
        max_examples: optional int, read at most this many examples.

    Returns:
        dict of arrays with a leading example axis; strings decoded to
        `str` arrays (UTF-8).

    Raises:
        ValueError: images of different sizes (pass `image_size`) or an
            empty dataset.
    """
    _check_options(None, max_examples)
    if max_examples:
        dataset = dataset.take(max_examples)
    columns = {}
    for example in dataset.as_numpy_iterator():
        for key, value in example.items():
            columns.setdefault(key, []).append(value)
    if not columns:
        raise ValueError("to_numpy: the dataset is empty.")
    out = {}
    for key, values in columns.items():
        if isinstance(values[0], bytes):
            out[key] = np.array([v.decode("utf-8") for v in values])
            continue
        shapes = {np.shape(v) for v in values}
        if len(shapes) > 1:
            raise ValueError(
                f"to_numpy: {key!r} has differing shapes (e.g. {sorted(shapes)[:3]}); load the "
                "dataset with image_size=... to give every image the same size."
            )
        out[key] = np.stack(values)
    return out
