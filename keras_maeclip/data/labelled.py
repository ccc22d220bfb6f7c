"""Your labelled images for zero-shot and linear-probe evaluation.

Two layouts, both read through the library's robust readers and decoder
(bad files are skipped and counted by reason, never silently dropped):

* a CSV / TSV manifest with an image-path column and a label column
  (`read_labelled_csv`; labels are class names, or integer indices into
  `class_names`), read by `readers.read_csv` with the label as its
  "caption";
* a folder per class (`read_class_folders`): `root/<class name>/*.jpg|png|…`,
  the class names being the sub-folder names (sorted) unless given.

```python
data = load_labelled("pets.csv", image_size=224, label_key="breed")
data.images.shape, data.labels[:3], data.class_names[:2], data.skipped
train, test = data.split(test_fraction=0.3, seed=0)
```

Class names and prompt templates can come from text files, one per line
(`read_lines`); a template holds one `{}` for the class name.

References: torchvision `ImageFolder` (a folder per class); open_clip's
CSV manifests (`--csv-img-key`); Radford et al. 2021 §3.1.4 (prompt
templates).
"""

import dataclasses
import os

import numpy as np
import tensorflow as tf

from keras_maeclip.data import augment, decoding, readers

__all__ = [
    "LabelledImages",
    "load_labelled",
    "read_class_folders",
    "read_labelled_csv",
    "read_lines",
]

UNKNOWN_LABEL = "unknown_label"


@dataclasses.dataclass
class LabelledImages:
    """Decoded, resized labelled images in NumPy.

    Attributes:
        images: uint8 `(n, size, size, 3)`, centre-cropped and resized.
        labels: int32 `(n,)`, indices into `class_names`.
        class_names: list of str.
        keys: bytes `(n,)`, each image's key (path relative to the source).
        skipped: dict reason -> count of records left out (bad images,
            empty or unknown labels).
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: list
    keys: np.ndarray
    skipped: dict

    def __len__(self):
        return len(self.labels)

    def split(self, test_fraction=0.3, seed=0):
        """`(train, test)`: a seeded random split, stratified per class.

        Each class with at least two images puts `round(test_fraction · n)`
        of them (at least one, at most n − 1) in the test part.
        """
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1); got {test_fraction!r}.")
        rng = np.random.default_rng(seed)
        test = np.zeros(len(self.labels), bool)
        for label in np.unique(self.labels):
            rows = rng.permutation(np.flatnonzero(self.labels == label))
            if len(rows) < 2:
                continue
            count = min(max(1, int(round(test_fraction * len(rows)))), len(rows) - 1)
            test[rows[:count]] = True
        if not test.any() or test.all():
            raise ValueError(
                f"Cannot split {len(self.labels)} images into train and test: give at least two "
                "images of some class."
            )
        return self._subset(~test), self._subset(test)

    def _subset(self, rows):
        return LabelledImages(self.images[rows], self.labels[rows], self.class_names,
                              self.keys[rows], dict(self.skipped))


def read_lines(path):
    """Non-empty, stripped lines of a UTF-8 text file (lines starting `#` are comments)."""
    with open(os.path.expanduser(path), encoding="utf-8") as f:
        lines = [line.strip() for line in f]
    lines = [line for line in lines if line and not line.startswith("#")]
    if not lines:
        raise ValueError(f"{path} holds no lines (one entry per line expected).")
    return lines


def _label_index(labels, class_names):
    """Class index per label string (-1: unknown), and the class names."""
    if class_names is None:
        unique = sorted(set(labels))
        if unique and all(s.lstrip("-").isdigit() for s in unique):
            raise ValueError(
                "The labels are integers: give the class names (a file or flag, one name per "
                "index) so that zero-shot prompts can name them."
            )
        class_names = unique
    class_names = [str(c) for c in class_names]
    if len(set(class_names)) != len(class_names):
        raise ValueError("class_names must be unique.")
    index = {name: i for i, name in enumerate(class_names)}
    out = []
    for label in labels:
        if label in index:
            out.append(index[label])
        elif label.lstrip("-").isdigit() and 0 <= int(label) < len(class_names):
            out.append(int(label))
        else:
            out.append(-1)
    return np.asarray(out, np.int32), class_names


def _collect(records, image_size, class_names, max_examples):
    counter = decoding.SkipCounter()
    data = decoding.decode_records(records, counter)
    data = augment.augment_records(data, image_size, training=False)
    data = data.map(lambda e: {"image": e["image"], "label": e["caption"], "key": e["key"]})
    if max_examples is not None:
        data = data.take(int(max_examples))
    batches = list(data.batch(256).as_numpy_iterator())
    skipped = {k: v for k, v in counter.counts().items() if v}
    if not batches:
        raise ValueError(f"No readable labelled image (skipped: {skipped or 'none'}).")
    images = np.concatenate([b["image"] for b in batches])
    keys = np.concatenate([b["key"] for b in batches])
    labels = [s.decode("utf-8") for b in batches for s in b["label"]]
    index, class_names = _label_index(labels, class_names)
    known = index >= 0
    if (~known).any():
        skipped[UNKNOWN_LABEL] = int((~known).sum())
    if not known.any():
        raise ValueError(f"No label matches the class names {class_names[:10]}...")
    return LabelledImages(images[known], index[known], class_names, keys[known], skipped)


def read_labelled_csv(manifest, image_size, image_key="filepath", label_key="label",
                      separator=None, class_names=None, max_examples=None):
    """Labelled images from a CSV / TSV manifest.

    Args:
        manifest: path of the manifest (header row; paths relative to it).
        image_size: int, output side (centre crop + resize).
        image_key: column of image paths, default `"filepath"`.
        label_key: column of labels, default `"label"`: class names, or
            integer indices into `class_names`.
        separator: one character; `None`: tab for `.tsv`, else comma.
        class_names: list of str or `None` (the sorted distinct labels).
        max_examples: int or `None`, read at most this many good images.

    Returns:
        `LabelledImages`; rows with an empty or unknown label or a bad image
        are counted in `skipped`.
    """
    if separator is None:
        separator = "\t" if str(manifest).lower().endswith(".tsv") else ","
    records = readers.read_csv(manifest, image_key=image_key, caption_key=label_key, separator=separator)
    return _collect(records, image_size, class_names, max_examples)


def read_class_folders(root, image_size, class_names=None, max_examples=None):
    """Labelled images from `root/<class>/<image>` (a folder per class).

    Args:
        root: directory whose sub-directories are the classes.
        image_size: int.
        class_names: list of str or `None`. `None`: the sub-folder names,
            sorted. Given: the sub-folders read, in this order (a name
            without a folder is an error).
        max_examples: int or `None`.

    Returns:
        `LabelledImages` (keys are paths relative to `root`).
    """
    root = os.path.expanduser(os.fspath(root))
    if not tf.io.gfile.isdir(root):
        raise ValueError(f"{root} is not a directory (expected one sub-folder per class).")
    folders = sorted(d.rstrip("/") for d in tf.io.gfile.listdir(root) if tf.io.gfile.isdir(os.path.join(root, d)))
    names = list(folders) if class_names is None else [str(c) for c in class_names]
    missing = [n for n in names if n not in folders]
    if missing or not names:
        raise ValueError(
            f"{root}: no sub-folder for classes {missing or names}; found {folders} (one sub-folder "
            "per class, named as the class)."
        )
    paths, labels, keys = [], [], []
    for name in names:
        for dirpath, dirs, files in tf.io.gfile.walk(os.path.join(root, name)):
            dirs.sort()
            for file in sorted(files):
                if file.rpartition(".")[2].lower() in readers.IMAGE_EXTENSIONS:
                    path = os.path.join(dirpath, file)
                    paths.append(path)
                    labels.append(name)
                    keys.append(os.path.relpath(path, root))
    if not paths:
        raise ValueError(f"{root}: found no {'/'.join(readers.IMAGE_EXTENSIONS)} images in the class folders.")
    records = tf.data.Dataset.from_tensor_slices(
        {"path": paths, "caption": labels, "key": keys}
    ).map(lambda r: {"image": tf.io.read_file(r["path"]), "caption": r["caption"],
                     "key": r["key"], "error": tf.constant(b"")})
    return _collect(records, image_size, names, max_examples)


def load_labelled(source, image_size, class_names=None, max_examples=None, **csv_options):
    """`read_class_folders` for a directory, `read_labelled_csv` for a file.

    Args:
        source: a directory (a folder per class) or a `.csv` / `.tsv` file.
        image_size, class_names, max_examples: as the readers.
        **csv_options: `image_key`, `label_key`, `separator` (manifests only).
    """
    source = os.path.expanduser(os.fspath(source))
    if os.path.isdir(source):
        if csv_options:
            raise ValueError(f"{source} is a folder per class; {sorted(csv_options)} apply to manifests.")
        return read_class_folders(source, image_size, class_names, max_examples)
    if not os.path.isfile(source):
        raise ValueError(f"{source} does not exist (give a CSV/TSV manifest or a folder per class).")
    return read_labelled_csv(source, image_size, class_names=class_names, max_examples=max_examples,
                             **csv_options)
