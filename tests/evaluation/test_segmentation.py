import numpy as np
import pytest
from PIL import Image

from keras_maeclip.data import synthetic
from keras_maeclip.evaluation import segmentation
from keras_maeclip.evaluation.segmentation import (
    IGNORE_INDEX,
    evaluate_synthetic_segmentation,
    load_segmentation_folder,
    segment,
    segment_from_embeddings,
    segmentation_classifier,
    segmentation_metrics,
    synthetic_label_maps,
)
from keras_maeclip.evaluation.zero_shot import embed_texts, zero_shot_classifier
from keras_maeclip.models import MAE
from tests.models.test_mae import SMALL as MAE_SMALL
from tests.tiny import make_clip, synthetic_batch

GRID = 4  # 16² images, patch 4


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def direct_iou(pred, label, k):
    """Per-class IoU by explicit counting (NaN when the class is absent from both)."""
    out = []
    for c in range(k):
        inter = np.sum((pred == c) & (label == c))
        union = np.sum((pred == c) | (label == c))
        out.append(inter / union if union else np.nan)
    return np.array(out)


# --- metrics --------------------------------------------------------------------


def test_perfect_prediction_scores_one():
    labels = np.random.default_rng(0).integers(0, 3, (2, 8, 8))
    out = segmentation_metrics(labels, labels, num_classes=5)
    assert out["mean_iou"] == 1.0 and out["pixel_accuracy"] == 1.0
    np.testing.assert_array_equal(out["per_class_iou"][:3], 1.0)
    assert np.isnan(out["per_class_iou"][3:]).all()  # absent classes leave the mean


def test_hand_computed_confusion():
    labels = np.array([0, 0, 1, 1, 2, 2])
    preds = np.array([0, 1, 1, 1, 2, 0])
    out = segmentation_metrics(preds, labels, 3)
    np.testing.assert_allclose(out["per_class_iou"], [1 / 3, 2 / 3, 1 / 2])
    np.testing.assert_allclose(out["per_class_iou"], direct_iou(preds, labels, 3))
    assert out["mean_iou"] == pytest.approx(0.5) and out["pixel_accuracy"] == pytest.approx(4 / 6)
    # Accumulated over the whole set: a list of differently sized maps equals the concatenation.
    rng = np.random.default_rng(1)
    p = [rng.integers(0, 4, (5, 7)), rng.integers(0, 4, (3, 2))]
    t = [rng.integers(0, 4, (5, 7)), rng.integers(0, 4, (3, 2))]
    flat_p = np.concatenate([x.ravel() for x in p])
    flat_t = np.concatenate([x.ravel() for x in t])
    out = segmentation_metrics(p, t, 4)
    np.testing.assert_allclose(out["per_class_iou"], direct_iou(flat_p, flat_t, 4))
    assert out["pixel_accuracy"] == pytest.approx(np.mean(flat_p == flat_t))
    assert out["mean_iou"] == pytest.approx(np.nanmean(direct_iou(flat_p, flat_t, 4)))


def test_ignore_index_is_excluded():
    labels = np.array([[0, 1, 255], [255, 1, 0]])
    preds = np.array([[0, 1, 1], [2, 0, 0]])  # ignored pixels predicted 1 and 2
    out = segmentation_metrics(preds, labels, 3, ignore_index=255)
    keep = labels != 255
    np.testing.assert_allclose(out["per_class_iou"][:2], direct_iou(preds[keep], labels[keep], 2))
    assert np.isnan(out["per_class_iou"][2])  # class 2 only predicted on ignored pixels
    assert out["pixel_accuracy"] == pytest.approx(3 / 4)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        segmentation_metrics(preds, labels, 3)  # 255 counted without ignore_index
    with pytest.raises(ValueError, match="same shape"):
        segmentation_metrics(preds[:1], labels, 3)


def test_uniform_random_predictions_score_chance():
    # Balanced labels, uniform predictions over K classes: IoU_c = (1/K²) /
    # (2/K − 1/K²) = 1/(2K − 1); accuracy 1/K. 200k pixels: std ≈ 1e-3, tolerance 0.01.
    k, n = 4, 200_000
    rng = np.random.default_rng(0)
    labels = rng.permutation(np.repeat(np.arange(k), n // k))
    preds = rng.integers(0, k, n)
    out = segmentation_metrics(preds, labels, k)
    assert out["mean_iou"] == pytest.approx(1 / (2 * k - 1), abs=0.01)
    assert out["pixel_accuracy"] == pytest.approx(1 / k, abs=0.01)


# --- scoring from embeddings ----------------------------------------------------


def test_patches_equal_to_class_embeddings_segment_perfectly():
    rng = np.random.default_rng(2)
    classes = unit(rng.normal(size=(5, 16)))
    # Any layout at the patch resolution.
    layout = rng.integers(0, 5, (3, GRID, GRID))
    pred = segment_from_embeddings(classes[layout], classes, GRID)
    assert segmentation_metrics(pred, layout, 5)["mean_iou"] == 1.0
    # Upsampled ×4 (bilinear logits): rectangular regions keep exact patch borders.
    quadrants = np.repeat(np.repeat(np.array([[[0, 1], [2, 3]]]), 2, axis=1), 2, axis=2)
    pred = segment_from_embeddings(2.0 * np.eye(4)[quadrants], np.eye(4), 16)
    truth = np.repeat(np.repeat(quadrants, 4, axis=1), 4, axis=2)
    assert pred.shape == (1, 16, 16) and pred.dtype == np.int32
    assert segmentation_metrics(pred, truth, 4)["mean_iou"] == 1.0
    # A list of sizes gives one map per image at its own size.
    maps = segment_from_embeddings(classes[layout[:2]], classes, [(8, 12), (4, 4)])
    assert [m.shape for m in maps] == [(8, 12), (4, 4)]


def test_segment_uses_background_then_classes(preprocessor, monkeypatch):
    model = make_clip(preprocessor)
    names, templates = ["red", "blue"], ["a {} shape.", "a {} object."]
    background = ["a dark background.", "an empty black picture."]
    classifier = segmentation_classifier(model, names, templates, background)
    # Row 0: the averaged, re-normalised background prompts; rows 1..K: zero-shot classes.
    np.testing.assert_allclose(classifier[0], unit(unit(embed_texts(model, background)).mean(0)), atol=1e-6)
    np.testing.assert_allclose(classifier[1:], zero_shot_classifier(model, names, templates), atol=1e-6)
    # Patches set to class rows; images at the grid's size, so no interpolation
    # (a random tower's class embeddings are nearly parallel, so bilinear
    # borders would be decided by tiny cosine differences).
    layout = np.random.default_rng(3).integers(0, 3, (2, GRID, GRID))
    monkeypatch.setattr(segmentation, "patch_embeddings", lambda *a, **k: classifier[layout])
    pred = segment(model, np.zeros((2, GRID, GRID, 3), "uint8"), names, templates, background)
    np.testing.assert_array_equal(pred, layout)
    assert segmentation_metrics(pred, layout, 3)["mean_iou"] == 1.0


def test_segment_end_to_end_on_a_tiny_clip(preprocessor):
    model = make_clip(preprocessor, preset="clip_tiny_map")
    images = synthetic_batch(4, seed=5)["images"]
    names = list(synthetic.COLOURS)
    pred = segment(model, images, names, ["a {} shape."], ["a dark background."])
    assert pred.shape == (4, 16, 16) and pred.dtype == np.int32
    assert pred.min() >= 0 and pred.max() <= len(names)
    no_background = segment(model, images, names, ["a {} shape."])
    assert no_background.max() < len(names)
    # Images of other sizes are labelled at their own resolution.
    odd = segment(model, [images[0][:, :12], np.zeros((24, 24, 3), "uint8")], names, ["a {}."])
    assert [m.shape for m in odd] == [(16, 12), (24, 24)]
    with pytest.raises(ValueError, match="joint image-text"):
        segment(MAE.from_preset("mae_tiny", **MAE_SMALL), images, names, ["a {}."])


# --- the synthetic set ----------------------------------------------------------


def test_synthetic_label_maps_follow_the_main_objects_labels():
    examples = [synthetic.generate_example(i, image_size=16) for i in range(6)]
    masks = np.stack([ex["masks"] for ex in examples])
    colours = [[synthetic.COLOURS.index(n.split()[0]) if n else -1 for n in ex["object_names"]]
               for ex in examples]
    maps = synthetic_label_maps(masks, colours)
    assert maps.shape == (6, 16, 16)
    for ex, m in zip(examples, maps):
        main = ex["masks"][0] > 0
        assert np.all(m[main] == ex["colour"] + 1)  # object 0's colour label
        assert np.all(m[~ex["masks"].any(axis=0)] == 0)  # background


def test_evaluate_synthetic_segmentation_end_to_end(preprocessor):
    model = make_clip(preprocessor)
    dataset = synthetic.synthetic_dataset(8, image_size=16)
    for attribute, classes in (("colour", 6), ("shape", 4)):
        out = evaluate_synthetic_segmentation(model, dataset, attribute)
        assert 0.0 <= out["mean_iou"] <= 1.0 and 0.0 <= out["pixel_accuracy"] <= 1.0
        assert out["per_class_iou"].shape == (classes + 1,)
    with pytest.raises(ValueError, match="Unknown attribute='size'"):
        evaluate_synthetic_segmentation(model, dataset, "size")


# --- ADE20K-style folders -------------------------------------------------------


def write_fixture(root, info="objectInfo150.txt"):
    """3 images (two sizes), labels 0 = other, 1 = wall, 2 = floor."""
    rng = np.random.default_rng(0)
    (root / "images" / "validation").mkdir(parents=True)
    (root / "annotations" / "validation").mkdir(parents=True)
    labels = {}
    for stem, (h, w) in (("a", (12, 16)), ("b", (16, 16)), ("c", (10, 14))):
        image = rng.integers(0, 256, (h, w, 3)).astype("uint8")
        label = rng.integers(0, 3, (h, w)).astype("uint8")
        Image.fromarray(image).save(root / "images" / "validation" / f"{stem}.jpg")
        Image.fromarray(label).save(root / "annotations" / "validation" / f"{stem}.png")
        labels[stem] = label
    if info.endswith(".txt"):
        (root / info).write_text("Idx\tRatio\tTrain\tVal\tName\n2\t0.1\t10\t1\tfloor, flooring\n"
                                 "1\t0.2\t20\t2\twall;brick wall\n")
    elif info.endswith(".csv"):
        (root / info).write_text('Idx,Ratio,Train,Val,Name\n1,0.2,20,2,wall;brick\n2,0.1,10,1,"floor,flooring"\n')
    return labels


def test_load_segmentation_folder(tmp_path):
    labels = write_fixture(tmp_path)
    data = load_segmentation_folder(tmp_path)
    assert data["class_names"] == ["wall", "floor"] and data["ignore_index"] == IGNORE_INDEX == -1
    assert len(data["images"]) == len(data["labels"]) == 3
    assert [x.shape for x in data["images"]] == [(12, 16, 3), (16, 16, 3), (10, 14, 3)]
    for stem, got in zip("abc", data["labels"]):
        raw = labels[stem].astype(int)
        np.testing.assert_array_equal(got, np.where(raw == 0, -1, raw - 1))  # 0 → ignore, k → k-1
    resized = load_segmentation_folder(tmp_path, image_size=8, max_examples=2)
    assert resized["images"].shape == (2, 8, 8, 3) and resized["images"].dtype == np.uint8
    assert resized["labels"].shape == (2, 8, 8) and set(np.unique(resized["labels"])) <= {-1, 0, 1}
    # An explicit names file overrides objectInfo150.
    (tmp_path / "names.txt").write_text("wall\nfloor\n")
    assert load_segmentation_folder(tmp_path, class_names_file=tmp_path / "names.txt")["class_names"] == [
        "wall", "floor"]


def test_load_segmentation_folder_csv_names_and_errors(tmp_path):
    write_fixture(tmp_path / "csv", info="objectInfo150.csv")
    assert load_segmentation_folder(tmp_path / "csv")["class_names"] == ["wall", "floor"]
    missing = tmp_path / "nowhere"
    with pytest.raises(ValueError, match=f"root '{missing}' is not a folder.*images/<split>"):
        load_segmentation_folder(missing)
    with pytest.raises(ValueError, match=str(tmp_path / "csv" / "images" / "training")):
        load_segmentation_folder(tmp_path / "csv", split="training")
    write_fixture(tmp_path / "bare", info="none")
    with pytest.raises(ValueError, match="objectInfo150.txt"):
        load_segmentation_folder(tmp_path / "bare")
    with pytest.raises(ValueError, match="names.txt' does not exist"):
        load_segmentation_folder(tmp_path / "bare", class_names_file=tmp_path / "names.txt")


def test_random_features_score_near_chance_on_synthetic_masks():
    """Random patch and class embeddings: predictions independent of the labels.

    For independent predictions the expected IoU of class k is
    p_k q_k / (p_k + q_k - p_k q_k) (p: label shares, q: prediction shares);
    the measured mean IoU must sit there (0.01 absolute: predictions come in
    upsampled blobs, so pixels are not independent).
    """
    data = next(synthetic.synthetic_dataset(200, seed=3, image_size=32).batch(200).as_numpy_iterator())
    colours = [[synthetic.COLOURS.index(n.decode().split()[0]) if n else -1 for n in row] for row in data["object_names"]]
    labels = synthetic_label_maps(data["masks"], colours)
    rng = np.random.default_rng(0)
    patches = unit(rng.normal(size=(200, 8, 8, 16)))
    classes = unit(rng.normal(size=(7, 16)))
    predictions = segment_from_embeddings(patches, classes, 32)
    metrics = segmentation_metrics(predictions, labels, 7)
    p = np.bincount(labels.ravel(), minlength=7) / labels.size
    q = np.bincount(predictions.ravel(), minlength=7) / predictions.size
    expected = np.mean(p * q / (p + q - p * q))
    assert metrics["mean_iou"] == pytest.approx(expected, abs=0.01)  # measured 0.0342 vs 0.0339
    assert metrics["pixel_accuracy"] == pytest.approx(np.sum(p * q), abs=0.02)  # 0.1750 vs 0.1755
    assert metrics["mean_iou"] < 0.1
