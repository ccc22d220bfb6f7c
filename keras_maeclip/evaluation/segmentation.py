"""Prompt-based (zero-shot) semantic segmentation and its metrics.

Every patch's dense embedding (`dense.patch_embeddings`) is scored against a
zero-shot classifier (class names × prompt templates, averaged); the score
maps are upsampled bilinearly to the image resolution and the argmax is the
label map. Metrics come from one confusion matrix accumulated over the whole
set. Also: label maps of the synthetic set and a loader for ADE20K-style
folders.

References: Zhou et al. 2017 (ADE20K, scene parsing); Weers et al. 2023
Appendix (segmentation with several prompts per class); Zhou et al. 2022
(MaskCLIP).
"""

import csv
import os

import numpy as np

from keras_maeclip.evaluation.dense import _clip_backbone, patch_embeddings, upsample
from keras_maeclip.evaluation.zero_shot import _normalize, embed_texts, zero_shot_classifier

# Label of "other / unlabelled" pixels returned by `load_segmentation_folder`.
IGNORE_INDEX = -1
# Background prompts used by `evaluate_synthetic_segmentation` (the synthetic
# scenes are dark, slightly noisy backgrounds).
SYNTHETIC_BACKGROUND_PROMPTS = (
    "a dark background.",
    "an empty black picture.",
    "a dark picture with nothing.",
)
SYNTHETIC_ATTRIBUTES = ("colour", "shape", "object")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


# --------------------------------------------------------------------------
# Scoring (pure NumPy)
# --------------------------------------------------------------------------


def class_scores(patch_embeddings, class_embeddings):
    """Cosine similarity of every patch with every class embedding.

    Args:
        patch_embeddings: array `(n, gh, gw, dim)`.
        class_embeddings: array `(num_classes, dim)`.

    Returns:
        float32 array `(n, gh, gw, num_classes)` (both sides re-normalised).
    """
    patches = np.asarray(patch_embeddings, np.float64)
    classes = np.asarray(class_embeddings, np.float64)
    if patches.ndim != 4 or classes.ndim != 2 or patches.shape[-1] != classes.shape[-1]:
        raise ValueError(
            "class_scores: patch_embeddings must be (n, gh, gw, dim) and "
            f"class_embeddings (num_classes, dim); got {patches.shape} and {classes.shape}."
        )
    return np.einsum("nhwd,kd->nhwk", _normalize(patches), _normalize(classes)).astype(np.float32)


def segment_from_embeddings(patch_embeddings, class_embeddings, sizes):
    """Label maps from patch and class embeddings.

    Scores (`class_scores`) are upsampled bilinearly (`dense.upsample`) to
    each image's resolution before the argmax (ties: lowest class index).

    Args:
        patch_embeddings: array `(n, gh, gw, dim)`.
        class_embeddings: array `(num_classes, dim)`.
        sizes: int or `(height, width)` for every image, or a list of `n`
            `(height, width)` pairs.

    Returns:
        int32 array `(n, height, width)`, or a list of `(H_i, W_i)` arrays
        when `sizes` is a list.

    Example:
    >>> classes = np.eye(2)
    >>> patches = classes[np.array([[[0, 1], [1, 1]]])]   # (1, 2, 2, 2)
    >>> segment_from_embeddings(patches, classes, 2)[0].tolist()
    [[0, 1], [1, 1]]
    """
    scores = class_scores(patch_embeddings, class_embeddings)
    if isinstance(sizes, list):
        if len(sizes) != len(scores):
            raise ValueError(f"{len(scores)} score maps but {len(sizes)} sizes.")
        return [
            upsample(s[None], size)[0].argmax(axis=-1).astype(np.int32)
            for s, size in zip(scores, sizes)
        ]
    out = [upsample(s[None], sizes)[0].argmax(axis=-1).astype(np.int32) for s in scores]
    return np.stack(out)


def segmentation_classifier(model, class_names, templates, background_prompts=None, batch_size=256):
    """Class embeddings for `segment`, background first when prompts are given.

    Args:
        model: a `CLIP` or `MAECLIP` task with a preprocessor.
        class_names: list of str.
        templates: list of str with one `"{}"` each.
        background_prompts: optional list of full prompt strings; their
            embeddings are averaged and re-normalised into class 0.
        batch_size: int, prompts per forward pass.

    Returns:
        float32 array `(K, dim)`, or `(K + 1, dim)` with background as row 0.
    """
    classifier = zero_shot_classifier(model, class_names, templates, batch_size)
    if background_prompts is None:
        return classifier
    prompts = [str(p) for p in background_prompts]
    if not prompts:
        raise ValueError(
            "background_prompts is empty; pass None for no background class or a "
            "list of full prompts such as ['a dark background.']."
        )
    background = _normalize(_normalize(embed_texts(model, prompts, batch_size)).mean(axis=0))
    return np.concatenate([background[None], classifier]).astype(np.float32)


def segment(model, images, class_names, templates, background_prompts=None, batch_size=256):
    """Zero-shot label maps of raw images from prompt-scored patch embeddings.

    Args:
        model: a `CLIP` or `MAECLIP` task with a preprocessor.
        images: uint8/float array `(n, H, W, 3)` in [0, 255], or a list of
            `(H_i, W_i, 3)` arrays (non-square images are stretched to the
            model's square input, see `dense.model_pixels`).
        class_names: list of K str.
        templates: list of str with one `"{}"` each; a class scores with the
            average of its prompts' embeddings (re-normalised).
        background_prompts: optional list of full prompts. With them class 0
            is background and the given classes are `1..K`; without, the
            classes are `0..K-1`.
        batch_size: int, images / prompts per forward pass.

    Returns:
        int32 array `(n, H, W)` (a list of `(H_i, W_i)` arrays for a list
        of images), at each image's own resolution.

    References: Weers et al. 2023 Appendix (several prompts per class);
    Zhou et al. 2022 (MaskCLIP).
    """
    _clip_backbone(model, "segment")
    classifier = segmentation_classifier(model, class_names, templates, background_prompts, batch_size)
    patches = patch_embeddings(model, images, batch_size)
    if isinstance(images, (list, tuple)):
        sizes = [tuple(np.shape(image)[:2]) for image in images]
    else:
        sizes = tuple(np.shape(images)[1:3])
    return segment_from_embeddings(patches, classifier, sizes)


# --------------------------------------------------------------------------
# Metrics (pure NumPy)
# --------------------------------------------------------------------------


def confusion_matrix(predictions, labels, num_classes, ignore_index=None):
    """`(num_classes, num_classes)` int64 counts, rows = label, cols = prediction.

    Args:
        predictions, labels: int arrays of the same shape, or lists of such
            arrays (pairs may differ in size).
        num_classes: int.
        ignore_index: optional label value whose pixels are left out.
    """
    if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer; got {num_classes!r}.")
    pairs = (
        list(zip(predictions, labels))
        if isinstance(predictions, (list, tuple)) or isinstance(labels, (list, tuple))
        else [(predictions, labels)]
    )
    if isinstance(predictions, (list, tuple)) and len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predictions but {len(labels)} label maps.")
    k = int(num_classes)
    counts = np.zeros(k * k, np.int64)
    for pred, label in pairs:
        pred, label = np.asarray(pred), np.asarray(label)
        if pred.shape != label.shape:
            raise ValueError(
                f"predictions {pred.shape} and labels {label.shape} must have the same shape."
            )
        pred, label = pred.reshape(-1).astype(np.int64), label.reshape(-1).astype(np.int64)
        if ignore_index is not None:
            keep = label != ignore_index
            pred, label = pred[keep], label[keep]
        for name, values in (("labels", label), ("predictions", pred)):
            if values.size and (values.min() < 0 or values.max() >= k):
                raise ValueError(
                    f"{name} must lie in [0, {k}) (num_classes={k}) outside "
                    f"ignore_index={ignore_index!r}; found {values.min()}..{values.max()}."
                )
        counts += np.bincount(label * k + pred, minlength=k * k)
    return counts.reshape(k, k)


def segmentation_metrics(predictions, labels, num_classes, ignore_index=None):
    """Mean IoU and pixel accuracy over a whole set.

    One confusion matrix is accumulated over all pixels of all images;
    class IoU = TP / (TP + FP + FN); the mean is over classes whose union
    is non-empty.

    Args:
        predictions: int array `(n, H, W)` (or any shape), or a list of
            label maps that may differ in size.
        labels: the same structure and shapes as `predictions`.
        num_classes: int.
        ignore_index: optional label value excluded from every count.

    Returns:
        dict `{"mean_iou": float, "pixel_accuracy": float, "per_class_iou":
        float64 array (num_classes,), NaN for classes absent from both}`.

    Example:
    >>> m = segmentation_metrics(np.array([0, 1, 1]), np.array([0, 1, 0]), 2)
    >>> round(m["mean_iou"], 3), round(m["pixel_accuracy"], 3)
    (0.5, 0.667)

    References: Zhou et al. 2017 (ADE20K benchmark metrics).
    """
    confusion = confusion_matrix(predictions, labels, num_classes, ignore_index).astype(np.float64)
    tp = np.diag(confusion)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - tp
    per_class = np.full(len(tp), np.nan)
    present = union > 0
    per_class[present] = tp[present] / union[present]
    total = confusion.sum()
    return {
        "mean_iou": float(per_class[present].mean()) if present.any() else float("nan"),
        "pixel_accuracy": float(tp.sum() / total) if total else float("nan"),
        "per_class_iou": per_class,
    }


# --------------------------------------------------------------------------
# The synthetic set
# --------------------------------------------------------------------------


def synthetic_label_maps(masks, labels_per_object):
    """Per-object masks → label maps, 0 = background, object k → class + 1.

    Args:
        masks: 0/1 array `(n, m, S, S)` (or `(m, S, S)` for one image).
        labels_per_object: int array `(n, m)` (or `(m,)`); a negative label
            marks an absent object, whose mask is ignored. Objects do not
            overlap on the synthetic set; otherwise the later object wins.

    Returns:
        int32 array `(n, S, S)` (or `(S, S)`).

    Example:
    >>> masks = np.zeros((2, 2, 2)); masks[0, 0, 0] = 1; masks[1, 1, 1] = 1
    >>> synthetic_label_maps(masks, [3, 0]).tolist()
    [[4, 0], [0, 1]]
    """
    masks = np.asarray(masks) > 0
    labels = np.asarray(labels_per_object, np.int64)
    single = masks.ndim == 3
    if single:
        masks, labels = masks[None], labels[None]
    if masks.ndim != 4 or labels.shape != masks.shape[:2]:
        raise ValueError(
            "synthetic_label_maps: masks must be (n, m, S, S) and labels_per_object "
            f"(n, m); got {masks.shape} and {labels.shape}."
        )
    out = np.zeros((masks.shape[0],) + masks.shape[2:], np.int32)
    for k in range(masks.shape[1]):
        present = (labels[:, k] >= 0)[:, None, None] & masks[:, k]
        out = np.where(present, (labels[:, k] + 1)[:, None, None].astype(np.int32), out)
    return out[0] if single else out


def _object_class(name, attribute):
    from keras_maeclip.data.synthetic import CLASS_NAMES

    if not name:
        return -1
    colour, shape = name.split(" ")
    value = {"colour": colour, "shape": shape, "object": name}[attribute]
    return CLASS_NAMES[attribute].index(value)


def evaluate_synthetic_segmentation(model, dataset, attribute="colour", templates=None,
                                    background_prompts=SYNTHETIC_BACKGROUND_PROMPTS,
                                    batch_size=256):
    """Zero-shot segmentation of the synthetic set by one object attribute.

    Classes are `CLASS_NAMES[attribute]` plus background (class 0, scored
    by `background_prompts`); each object's class comes from its
    `object_names` entry ("<colour> <shape>"), which names every present
    object (the example's labels only describe object 0).

    Args:
        model: a `CLIP` or `MAECLIP` task with a preprocessor.
        dataset: synthetic examples, as for `grounding.grounding_examples`
            (a `synthetic_dataset(...)`, a dict of arrays with keys image,
            masks, object_names, or a list of example dicts).
        attribute: `"colour"`, `"shape"` or `"object"`.
        templates: prompt templates; defaults to
            `PROMPT_TEMPLATES[attribute]`.
        background_prompts: list of full prompts for the background class.
        batch_size: int, images / prompts per forward pass.

    Returns:
        `segmentation_metrics` dict over `len(CLASS_NAMES[attribute]) + 1`
        classes (background included in the mean IoU).

    References: Weers et al. 2023 Appendix.
    """
    from keras_maeclip.data.synthetic import CLASS_NAMES, PROMPT_TEMPLATES
    from keras_maeclip.evaluation.grounding import grounding_examples

    if attribute not in SYNTHETIC_ATTRIBUTES:
        raise ValueError(
            f"Unknown attribute={attribute!r}; segmentation on the synthetic set "
            f"supports {SYNTHETIC_ATTRIBUTES} (attributes that every object name carries)."
        )
    _clip_backbone(model, "evaluate_synthetic_segmentation")
    images, masks, names = grounding_examples(dataset)
    labels = np.array([[_object_class(n, attribute) for n in row] for row in names])
    truth = synthetic_label_maps(masks, labels)
    class_names = list(CLASS_NAMES[attribute])
    templates = list(PROMPT_TEMPLATES[attribute] if templates is None else templates)
    predictions = segment(model, images, class_names, templates, list(background_prompts), batch_size)
    return segmentation_metrics(predictions, truth, len(class_names) + 1)


# --------------------------------------------------------------------------
# ADE20K-style folders
# --------------------------------------------------------------------------


_LAYOUT = (
    "the ADEChallengeData2016 layout: root/images/<split>/*.jpg, "
    "root/annotations/<split>/<same stem>.png (0 = other, 1..K classes) and "
    "root/objectInfo150.txt or .csv (a Name column), or class_names_file= "
    "with one name per line"
)


def _first_name(name):
    for separator in (";", ","):
        name = name.split(separator)[0]
    return name.strip()


def read_class_names(path):
    """Class names from an objectInfo150-style table or a one-per-line file.

    A file whose first line has a `Name` column (tab or comma separated) is
    a table: rows are ordered by their `Idx` column when there is one, and
    each name is its first synonym (before `;` or `,`). Any other file
    holds one name per line (blank lines skipped).

    Args:
        path: str or path-like.

    Returns:
        list of str.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"class names file {path!r} does not exist; expected {_LAYOUT}.")
    with open(path, newline="", encoding="utf-8") as f:
        text = f.read()
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"class names file {path!r} is empty.")
    delimiter = "\t" if "\t" in lines[0] else ","
    header = [h.strip().lower() for h in next(csv.reader([lines[0]], delimiter=delimiter))]
    if "name" not in header:
        return [line.strip() for line in lines]
    rows = list(csv.reader(lines[1:], delimiter=delimiter))
    name_col = header.index("name")
    if "idx" in header:
        idx_col = header.index("idx")
        rows.sort(key=lambda row: int(row[idx_col]))
    names = [_first_name(row[name_col]) for row in rows if len(row) > name_col]
    if not names:
        raise ValueError(f"class names file {path!r} has a Name column but no rows.")
    return names


def _resolve_class_names(root, class_names_file):
    if class_names_file is not None:
        return read_class_names(class_names_file)
    candidates = [os.path.join(root, f"objectInfo150.{ext}") for ext in ("txt", "csv")]
    for candidate in candidates:
        if os.path.isfile(candidate):
            return read_class_names(candidate)
    raise ValueError(
        f"load_segmentation_folder: no class names file; looked for {candidates}. "
        f"Expected {_LAYOUT}."
    )


def load_segmentation_folder(root, split="validation", image_size=None, max_examples=None,
                             class_names_file=None):
    """Images, label maps and class names of an ADE20K-style local folder.

    Label 0 ("other") becomes `IGNORE_INDEX` (-1) and labels `1..K` become
    `0..K-1`, so predictions of `segment(model, images, class_names, ...)`
    (no background class) compare directly.

    Args:
        root: folder with the ADEChallengeData2016 layout:
            `root/images/<split>/*.jpg` (or .jpeg/.png),
            `root/annotations/<split>/<same stem>.png` and
            `root/objectInfo150.txt` or `.csv` (tab/comma separated, a
            `Name` column; the first synonym before `;` or `,` is used).
        split: str, defaults to `"validation"` (ADE20K also has
            `"training"`).
        image_size: optional int or `(height, width)`; images are resized
            bilinearly and labels with nearest neighbour (aspect ratio not
            kept). `None` keeps each image's own size.
        max_examples: optional int, the first N images in sorted order.
        class_names_file: optional path to a file with one class name per
            line (or an objectInfo-style table), instead of objectInfo150.

    Returns:
        dict with `"images"` (uint8 `(n, h, w, 3)` with `image_size`, else a
        list of `(H_i, W_i, 3)` arrays), `"labels"` (int32 maps of the same
        layout, `-1` = ignore), `"class_names"` (list of K str) and
        `"ignore_index"` (-1).

    References: Zhou et al. 2017 (ADE20K, ADEChallengeData2016).
    """
    from PIL import Image

    root = os.fspath(root)
    if not os.path.isdir(root):
        raise ValueError(f"load_segmentation_folder: root {root!r} is not a folder; expected {_LAYOUT}.")
    image_dir = os.path.join(root, "images", split)
    label_dir = os.path.join(root, "annotations", split)
    for folder in (image_dir, label_dir):
        if not os.path.isdir(folder):
            raise ValueError(
                f"load_segmentation_folder: split {split!r} has no folder {folder!r}; "
                f"expected {_LAYOUT}."
            )
    class_names = _resolve_class_names(root, class_names_file)
    files = sorted(f for f in os.listdir(image_dir) if f.lower().endswith(_IMAGE_SUFFIXES))
    if not files:
        raise ValueError(f"load_segmentation_folder: no .jpg/.png images in {image_dir!r}.")
    if max_examples is not None:
        if not isinstance(max_examples, (int, np.integer)) or max_examples < 1:
            raise ValueError(f"max_examples must be a positive integer or None; got {max_examples!r}.")
        files = files[: int(max_examples)]
    if image_size is not None:
        height, width = (image_size, image_size) if np.isscalar(image_size) else tuple(image_size)
    images, labels = [], []
    for name in files:
        label_path = os.path.join(label_dir, os.path.splitext(name)[0] + ".png")
        if not os.path.isfile(label_path):
            raise ValueError(
                f"load_segmentation_folder: image {name!r} has no annotation {label_path!r}."
            )
        image = Image.open(os.path.join(image_dir, name)).convert("RGB")
        label = Image.open(label_path)
        if label.mode not in ("L", "P", "I", "I;16"):
            raise ValueError(
                f"annotation {label_path!r} has mode {label.mode}; expected a single-channel "
                "PNG of class indices."
            )
        if image.size != label.size:
            raise ValueError(
                f"image {name!r} is {image.size} but its annotation is {label.size} (width, height)."
            )
        if image_size is not None:
            image = image.resize((int(width), int(height)), Image.BILINEAR)
            label = label.resize((int(width), int(height)), Image.NEAREST)
        raw = np.asarray(label).astype(np.int64)
        if raw.max() > len(class_names):
            raise ValueError(
                f"annotation {label_path!r} holds label {raw.max()} but only "
                f"{len(class_names)} class names were found."
            )
        images.append(np.asarray(image, np.uint8))
        labels.append(np.where(raw == 0, IGNORE_INDEX, raw - 1).astype(np.int32))
    if image_size is not None:
        images, labels = np.stack(images), np.stack(labels)
    return {
        "images": images,
        "labels": labels,
        "class_names": class_names,
        "ignore_index": IGNORE_INDEX,
    }
