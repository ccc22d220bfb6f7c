import math

import keras
import numpy as np
import pytest
from PIL import Image

from keras_maeclip.data import synthetic
from keras_maeclip.evaluation.dense import dense_embedder, patch_embeddings, upsample
from keras_maeclip.evaluation.grounding import (
    grounding_heatmaps,
    grounding_score,
    heatmap_iou,
    heatmaps_from_embeddings,
    overlay,
    pointing_game,
    save_grounding_overlays,
)
from keras_maeclip.evaluation.reconstruction import LINE_HEIGHT, TILE_GAP
from keras_maeclip.evaluation.zero_shot import embed_images
from keras_maeclip.models import M3AE, MAE
from tests.models.test_mae import SMALL as MAE_SMALL
from tests.models.test_mae_clip import make as make_maeclip
from tests.tiny import TINY, make_clip, synthetic_batch

GRID = 4  # 16² images, patch 4


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def weights(layer):
    """`{path suffix: NumPy value}` of a layer's weights, e.g. 'value/kernel'."""
    return {"/".join(w.path.split("/")[-2:]): keras.ops.convert_to_numpy(w) for w in layer.weights}


def tokens_and_pixels(model, images):
    pixels = model.preprocessor({"images": images})["images"]
    tokens = model.backbone.image_encoder(pixels)
    return keras.ops.convert_to_numpy(tokens).astype(np.float64)


# --- upsampling ---------------------------------------------------------------


def _numpy_bilinear(x, out_size, axis):
    """Independent reference: linear interpolation along one axis, half-pixel centres."""
    in_size = x.shape[axis]
    coords = np.clip((np.arange(out_size) + 0.5) * in_size / out_size - 0.5, 0, in_size - 1)
    low = np.floor(coords).astype(int)
    high = np.minimum(low + 1, in_size - 1)
    shape = [1] * x.ndim
    shape[axis] = out_size
    frac = (coords - low).reshape(shape)
    return np.take(x, low, axis=axis) * (1 - frac) + np.take(x, high, axis=axis) * frac


def test_upsample_matches_a_numpy_bilinear_reference_and_is_identity_at_same_size():
    maps = np.random.default_rng(0).normal(size=(2, 4, 4, 3)).astype("float32")
    reference = _numpy_bilinear(_numpy_bilinear(maps, 16, axis=1), 12, axis=2)
    np.testing.assert_allclose(upsample(maps, (16, 12)), reference, atol=1e-5)
    np.testing.assert_allclose(upsample(maps[..., 0], (16, 12)), reference[..., 0], atol=1e-5)
    np.testing.assert_array_equal(upsample(maps, 4), maps)
    # Half-pixel centres, clamped edges: [0, 1] → [0, .25, .75, 1].
    np.testing.assert_allclose(upsample(np.array([[[0.0, 1.0]]]), (1, 4))[0, 0], [0, 0.25, 0.75, 1])


# --- pointing game and IoU on constructed inputs ------------------------------


def test_pointing_game_hits_the_mask_under_the_peak():
    heat = np.zeros((1, GRID, GRID), "float32")
    heat[0, 2, 1] = 1.0  # peak at patch row 2, column 1 → pixels [8:12, 4:8]
    on_peak = np.zeros((1, 16, 16), "uint8")
    on_peak[0, 8:12, 4:8] = 1
    elsewhere = np.zeros((1, 16, 16), "uint8")
    elsewhere[0, 0:4, 12:16] = 1
    assert pointing_game(heat, on_peak) == {"hits": 1.0, "n": 1}
    assert pointing_game(heat, elsewhere) == {"hits": 0.0, "n": 1}
    # Empty masks are not counted; a flat heatmap points at its first pixel.
    both = pointing_game(np.concatenate([heat, np.zeros_like(heat), heat]),
                         np.concatenate([on_peak, np.eye(16, dtype="uint8")[None], 0 * on_peak]))
    assert both == {"hits": 1.0, "n": 2}


def test_heatmap_iou_hand_computed():
    # Bilinear ×2 of [[0, 1], [0, 1]] has columns [0, .25, .75, 1]: ≥ 0.5 is the right half.
    heat = np.array([[[0.0, 1.0], [0.0, 1.0]]] * 2)
    right_half = np.zeros((2, 4, 4), "uint8")
    right_half[:, :, 2:] = 1
    last_column = np.zeros((2, 4, 4), "uint8")
    last_column[:, :, 3] = 1
    assert heatmap_iou(heat, right_half) == pytest.approx(1.0)
    assert heatmap_iou(heat, last_column) == pytest.approx(0.5)  # 4 of 8 pixels
    # Same size, min-max (v - 1) / 8 ≥ 0.5 ⇔ v ≥ 5: 5 pixels; the mask is the bottom row.
    values = np.arange(1.0, 10.0).reshape(1, 3, 3)
    bottom = np.zeros((1, 3, 3), "uint8")
    bottom[0, 2] = 1
    assert heatmap_iou(values, bottom) == pytest.approx(3 / 5)
    assert heatmap_iou(values, bottom, threshold=0.875) == pytest.approx(2 / 3)  # v ≥ 8: {8, 9} of {7, 8, 9}
    with pytest.raises(ValueError, match="threshold must lie in"):
        heatmap_iou(values, bottom, threshold=2)


def test_heatmaps_from_embeddings_find_the_patch_equal_to_the_text():
    rng = np.random.default_rng(1)
    patches = unit(rng.normal(size=(2, GRID, GRID, 8)))
    texts = unit(rng.normal(size=(2, 8)))
    patches[0, 1, 3] = 2.0 * texts[0]  # scale must not matter (cosine)
    patches[1, 3, 0] = texts[1]
    heat = heatmaps_from_embeddings(patches, texts)
    reference = np.array([[[patches[n, i, j] @ texts[n] / np.linalg.norm(patches[n, i, j])
                            for j in range(GRID)] for i in range(GRID)] for n in range(2)])
    np.testing.assert_allclose(heat, reference, atol=1e-6)
    assert [np.unravel_index(h.argmax(), h.shape) for h in heat] == [(1, 3), (3, 0)]
    np.testing.assert_allclose(heat.max(axis=(1, 2)), 1.0, atol=1e-6)
    masks = np.zeros((2, 16, 16), "uint8")
    masks[0, 4:8, 12:16] = 1
    masks[1, 12:16, 0:4] = 1
    assert pointing_game(heat, masks) == {"hits": 1.0, "n": 2}


# --- dense embeddings of real (tiny, random) models ---------------------------


@pytest.mark.parametrize("preset, class_token", [("clip_tiny_gap", False), ("clip_tiny_max", True)])
def test_dense_embeddings_are_projected_patch_tokens(preprocessor, preset, class_token):
    encoder = dict(TINY["image_encoder"], use_class_token=class_token)
    model = make_clip(preprocessor, preset=preset, image_encoder=encoder)
    images = synthetic_batch(3, seed=2)["images"]
    dense = patch_embeddings(model, images)
    raw = patch_embeddings(model, images, normalize=False)
    assert dense.shape == raw.shape == (3, GRID, GRID, 16) and dense.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(dense, axis=-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(dense, unit(raw.astype(np.float64)), atol=1e-5)

    # NumPy reference: GAP/MAX of one token is the token; patch (i, j) is token i·grid + j.
    tokens = tokens_and_pixels(model, images)
    if class_token:
        assert tokens.shape[1] == GRID * GRID + 1
        tokens = tokens[:, 1:]
    kernel = weights(model.backbone.image_projection)["image_projection/kernel"].astype(np.float64)
    expected = (tokens @ kernel).reshape(3, GRID, GRID, -1)
    np.testing.assert_allclose(raw, expected, rtol=1e-5, atol=1e-5)
    if preset == "clip_tiny_gap":
        # Mean of per-patch projections = projection of the pooled tokens,
        # and re-normalised it is the model's own image embedding.
        pooled = model.backbone.image_projection(model.backbone.image_pooler(
            model.backbone.image_encoder(preprocessor({"images": images})["images"])[:, int(class_token):]))
        pooled = keras.ops.convert_to_numpy(pooled)
        np.testing.assert_allclose(raw.mean(axis=(1, 2)), pooled, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(unit(raw.mean(axis=(1, 2))), embed_images(model, images), atol=1e-5)


def _gelu(x):
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def test_map_dense_embeddings_match_a_numpy_single_token_attention_head(preprocessor):
    # With one key the attention weights are 1: the head is value → output
    # projection, then the residual MLP; the probe drops out.
    model = make_clip(preprocessor, preset="clip_tiny_map")
    images = synthetic_batch(2, seed=3)["images"]
    raw = patch_embeddings(model, images, normalize=False)
    w = weights(model.backbone.image_pooler)
    x = tokens_and_pixels(model, images)
    v = np.einsum("ntd,dhk->nthk", x, w["value/kernel"]) + w["value/bias"]
    a = np.einsum("nthk,hkd->ntd", v, w["attention_output/kernel"]) + w["attention_output/bias"]
    mean, var = a.mean(-1, keepdims=True), a.var(-1, keepdims=True)
    normed = (a - mean) / np.sqrt(var + 1e-6) * w["norm/gamma"] + w["norm/beta"]
    hidden = _gelu(normed @ w["mlp_in/kernel"] + w["mlp_in/bias"])
    pooled = a + hidden @ w["mlp_out/kernel"] + w["mlp_out/bias"]
    kernel = weights(model.backbone.image_projection)["image_projection/kernel"]
    expected = (pooled @ kernel).reshape(2, GRID, GRID, -1)
    np.testing.assert_allclose(raw, expected, rtol=1e-4, atol=1e-5)
    # The cached functional model is reused.
    assert dense_embedder(model) is dense_embedder(model)


def test_maeclip_has_dense_embeddings(preprocessor):
    model = make_maeclip(preprocessor, preset="maeclip_tiny_map")
    dense = patch_embeddings(model, synthetic_batch(2, seed=4)["images"])
    assert dense.shape == (2, GRID, GRID, 16)
    np.testing.assert_allclose(np.linalg.norm(dense, axis=-1), 1.0, atol=1e-5)


def test_models_without_a_joint_space_raise(preprocessor):
    images = np.zeros((1, 16, 16, 3), "uint8")
    mae = MAE.from_preset("mae_tiny", **MAE_SMALL)
    m3ae = M3AE.from_preset("m3ae_tiny", preprocessor=preprocessor, image_size=16,
                            encoder=dict(patch_size=4, hidden_dim=32, num_layers=1, num_heads=2),
                            decoder=dict(hidden_dim=16, num_layers=1, num_heads=2))
    with pytest.raises(ValueError, match="joint image-text embedding space.*MAE"):
        patch_embeddings(mae, images)
    with pytest.raises(ValueError, match="joint image-text embedding space.*M3AE"):
        grounding_heatmaps(m3ae, images, ["the red circle."])
    with pytest.raises(ValueError, match="joint image-text"):
        grounding_score(m3ae, synthetic.synthetic_dataset(1, image_size=16))


# --- end to end on the synthetic set ------------------------------------------


def test_grounding_score_end_to_end(preprocessor):
    model = make_clip(preprocessor, preset="clip_tiny_max")
    dataset = synthetic.synthetic_dataset(8, image_size=16)
    examples = [synthetic.generate_example(i, image_size=16) for i in range(8)]
    pairs = sum(bool(name) for ex in examples for name in ex["object_names"])
    score = grounding_score(model, dataset)
    assert set(score) == {"pointing_game", "grounding_iou", "pairs"}
    assert score["pairs"] == pairs
    assert 0.0 <= score["pointing_game"] <= 1.0 and 0.0 <= score["grounding_iou"] <= 1.0
    # The same examples as a list of dicts give the same numbers.
    again = grounding_score(model, examples)
    assert again["pairs"] == pairs
    assert again["pointing_game"] == pytest.approx(score["pointing_game"])
    assert again["grounding_iou"] == pytest.approx(score["grounding_iou"], abs=1e-6)
    heat = grounding_heatmaps(model, np.stack([ex["image"] for ex in examples[:2]]),
                              ["the red circle.", "the blue square."])
    assert heat.shape == (2, GRID, GRID) and np.all(np.abs(heat) <= 1.0 + 1e-6)


def test_save_grounding_overlays_writes_a_grid(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, 16, 16, 3)).astype("uint8")
    heat = rng.normal(size=(8, GRID, GRID))
    path = save_grounding_overlays(tmp_path / "sub" / "grid.png", images, heat,
                                   ["the red circle."] * 8, columns=3)
    assert path.endswith("grid.png") and (tmp_path / "sub" / "grid.png").stat().st_size > 0
    picture = Image.open(path)
    tile = 96  # 16 px × 6
    assert picture.size[0] == 3 * tile + 4 * TILE_GAP  # 3 columns
    rows, rest = divmod(picture.size[1] - TILE_GAP, 3)  # ceil(8 / 3) = 3 rows
    assert rest == 0 and rows >= tile + TILE_GAP + LINE_HEIGHT
    # Alpha 0.5 over a black image: the peak is yellow (255, 255, 0)/2, the minimum red.
    peak = np.zeros((2, 2))
    peak[0, 0] = 1.0
    cell = overlay(np.zeros((2, 2, 3)), peak)
    assert cell[0, 0].tolist() == [128, 128, 0] and cell[1, 1].tolist() == [128, 0, 0]
    with pytest.raises(ValueError, match="as many"):
        save_grounding_overlays(tmp_path / "x.png", images, heat[:3], ["a"] * 8)
