import sys

import keras
import numpy as np
import pytest
from PIL import Image, ImageDraw

from keras_maeclip.data import synthetic
from keras_maeclip.evaluation import reconstruct, save_reconstruction_grid
from keras_maeclip.evaluation.reconstruction import visible_patch_statistics
from keras_maeclip.layers import patchify
from keras_maeclip.losses.reconstruction import patch_targets
from keras_maeclip.models import MAE
from keras_maeclip.models.preprocessor import IMAGENET_MEAN, IMAGENET_STD, image_converter

MEAN = np.array(IMAGENET_MEAN, np.float32)
STD = np.array(IMAGENET_STD, np.float32)
P = 4  # patch side of the fake model; 16² images → a 4 × 4 grid of patches


def to_np(x):
    return keras.ops.convert_to_numpy(x)


class FakeMaskedModel:
    """Stands in for MAE / M3AE / MAECLIP: returns given pixels and mask."""

    def __init__(self, pixels, mask, norm_pix_loss=False, patch_size=P, drop=None):
        self.pixels, self.mask = pixels, mask
        self.norm_pix_loss, self.patch_size, self.drop = norm_pix_loss, patch_size, drop
        self.calls = []

    def __call__(self, inputs, training=True):
        self.calls.append(training)
        out = {"pixels": keras.ops.convert_to_tensor(self.pixels), "image_mask": self.mask}
        out.pop(self.drop, None)
        return out


def random_mask(batch, num_patches, num_masked, seed=0):
    rng = np.random.default_rng(seed)
    mask = np.zeros((batch, num_patches), np.float32)
    for row, n in zip(mask, np.broadcast_to(num_masked, (batch,))):
        row[rng.permutation(num_patches)[:n]] = 1.0
    return mask


def pixel_mask(mask, image_size, p=P):
    """Per-pixel flags from per-patch flags, patches numbered row by row."""
    grid = image_size // p
    out = np.zeros((len(mask), image_size, image_size), bool)
    for b, k in zip(*np.nonzero(mask)):
        r, c = divmod(k, grid)
        out[b, r * p:(r + 1) * p, c * p:(c + 1) * p] = True
    return out


def normalise(x01):
    return ((x01 - MEAN) / STD).astype(np.float32)


def test_true_raw_patches_reconstruct_the_original():
    x01 = np.random.default_rng(0).uniform(0.02, 0.98, (3, 16, 16, 3)).astype(np.float32)
    images = normalise(x01)
    mask = random_mask(3, 16, 12)
    model = FakeMaskedModel(to_np(patchify(images, P)), mask, norm_pix_loss=False)
    out = reconstruct(model, {"images": images})

    assert model.calls == [False]
    for key in ("original", "masked", "reconstruction", "pasted"):
        assert out[key].shape == (3, 16, 16, 3) and out[key].dtype == np.float32
    # float32 normalise → un-normalise round trip: agree to 1e-5.
    np.testing.assert_allclose(out["original"], x01, atol=1e-5)
    np.testing.assert_allclose(out["reconstruction"], out["original"], atol=1e-5)
    np.testing.assert_allclose(out["pasted"], out["original"], atol=1e-5)
    np.testing.assert_array_equal(out["image_mask"], mask)
    grey = pixel_mask(mask, 16)
    assert np.all(out["masked"][grey] == 0.5)
    np.testing.assert_array_equal(out["masked"][~grey], out["original"][~grey])
    assert grey.sum() == 3 * 12 * P * P


def test_norm_pix_uses_visible_patch_statistics_when_they_are_exact():
    # Every patch of an image = a + b·z with z standardised (mean 0, unbiased
    # std 1), so the visible patches' statistics are the masked ones' too.
    rng = np.random.default_rng(1)
    z = rng.normal(size=(2, 16, P * P * 3))
    z = (z - z.mean(-1, keepdims=True)) / z.std(-1, ddof=1, keepdims=True)
    a, b = np.array([-0.2, 0.1])[:, None, None], np.array([0.2, 0.3])[:, None, None]
    patches = (a + b * z).reshape(2, 4, 4, P, P, 3).transpose(0, 1, 3, 2, 4, 5)
    images = patches.reshape(2, 16, 16, 3).astype(np.float32)
    np.testing.assert_allclose(to_np(patchify(images, P)), a + b * z, atol=1e-6)

    mask = random_mask(2, 16, 12, seed=2)
    targets = to_np(patch_targets(images, P, norm_pix_loss=True))
    model = FakeMaskedModel(targets, mask, norm_pix_loss=True)
    out = reconstruct(model, {"images": images})
    expected = images * STD + MEAN
    assert 0.0 < expected.min() and expected.max() < 1.0  # no clipping involved
    np.testing.assert_allclose(out["original"], expected, atol=1e-5)
    np.testing.assert_allclose(out["reconstruction"], expected, atol=1e-5)
    np.testing.assert_allclose(out["pasted"], expected, atol=1e-5)


def reference_reconstruction(images, pixels, mask, p=P, eps=1e-6):
    """Loop-by-loop NumPy statement of the documented un-normalisation."""
    batch, size, _, channels = images.shape
    grid = size // p
    recon = np.zeros(images.shape)
    pasted = np.zeros(images.shape)
    for i in range(batch):
        crops = [images[i, r * p:(r + 1) * p, c * p:(c + 1) * p].astype(np.float64)
                 for r in range(grid) for c in range(grid)]
        visible = [crop for k, crop in enumerate(crops) if not mask[i, k]]
        if visible:
            m = np.mean([v.mean() for v in visible])
            s = np.mean([np.sqrt(v.std(ddof=1) ** 2 + eps) for v in visible])
        else:
            m, s = 0.0, 1.0
        for k, crop in enumerate(crops):
            r, c = divmod(k, grid)
            pred = pixels[i, k].reshape(p, p, channels) * s + m
            recon[i, r * p:(r + 1) * p, c * p:(c + 1) * p] = pred
            pasted[i, r * p:(r + 1) * p, c * p:(c + 1) * p] = pred if mask[i, k] else crop
    show = lambda x: np.clip(x * STD + MEAN, 0.0, 1.0)  # noqa: E731
    return show(recon), show(pasted)


def test_norm_pix_matches_numpy_reference_on_random_data():
    rng = np.random.default_rng(3)
    images = (rng.normal(size=(4, 16, 16, 3)) * rng.uniform(0.2, 1.0, (4, 1, 1, 1))).astype(np.float32)
    pixels = rng.normal(size=(4, 16, P * P * 3)).astype(np.float32)
    mask = random_mask(4, 16, [12, 8, 15, 16], seed=4)  # the last has no visible patch
    out = reconstruct(FakeMaskedModel(pixels, mask, norm_pix_loss=True), {"images": images})
    recon, pasted = reference_reconstruction(images, pixels, mask)
    np.testing.assert_allclose(out["reconstruction"], recon, atol=1e-5)
    np.testing.assert_allclose(out["pasted"], pasted, atol=1e-5)
    assert 0.05 < np.mean((recon > 0) & (recon < 1))  # not all clipped

    m, s = visible_patch_statistics(to_np(patchify(images, P)), mask > 0)
    assert (m[3], s[3]) == (0.0, 1.0)
    visible = to_np(patchify(images, P))[0][mask[0] == 0].astype(np.float64)
    assert m[0] == pytest.approx(visible.mean())  # equal-size patches
    assert s[0] == pytest.approx(np.sqrt(visible.var(axis=1, ddof=1) + 1e-6).mean())


def tiny_mae_images(n=5, size=16):
    raw = next(synthetic.synthetic_dataset(n, seed=0, image_size=size).batch(n).as_numpy_iterator())["image"]
    return to_np(image_converter(size)(raw.astype("float32")))


def test_tiny_mae_end_to_end(tmp_path, monkeypatch):
    model = MAE.from_preset(
        "mae_tiny", image_size=16, seed=0,
        image_encoder=dict(patch_size=4, hidden_dim=32, num_layers=1, num_heads=2),
        decoder=dict(hidden_dim=16, num_layers=1, num_heads=2),
    )
    images = tiny_mae_images()
    out = reconstruct(model, {"images": images})
    for key in ("original", "masked", "reconstruction", "pasted"):
        assert out[key].shape == (5, 16, 16, 3)
        assert np.isfinite(out[key]).all() and out[key].min() >= 0.0 and out[key].max() <= 1.0
    np.testing.assert_array_equal(out["image_mask"].sum(1), [12] * 5)
    visible = ~pixel_mask(out["image_mask"], 16)
    np.testing.assert_array_equal(out["pasted"][visible], out["original"][visible])

    drawn = []
    draw_text = ImageDraw.ImageDraw.text
    monkeypatch.setattr(ImageDraw.ImageDraw, "text",
                        lambda self, xy, text, *a, **k: drawn.append(text) or draw_text(self, xy, text, *a, **k))
    path = tmp_path / "sub" / "grid.png"
    assert save_reconstruction_grid(model, {"images": images}, path, max_images=3, title="tiny MAE") == str(path)

    with Image.open(path) as png:
        assert png.format == "PNG" and png.mode == "RGB"
        grid = np.asarray(png)
    # 16² tiles are upscaled ×6 to 96 px; 4 px gaps around and between them.
    # Height: gap + title line + 2 header lines + 3 rows + 3 caption lines
    # (norm_pix_loss is on) + gap; one text line is 14 px.
    assert grid.shape == (4 + 14 + 28 + 3 * (96 + 4) + 3 * 14 + 4, 4 * 96 + 5 * 4, 3)
    top = 4 + 14 + 28
    first = np.round(np.clip(images[0] * STD + MEAN, 0, 1) * 255).repeat(6, 0).repeat(6, 1)
    assert np.abs(grid[top:top + 96, 4:100].astype(int) - first).max() <= 1
    assert grid[4:top].min() < 128 and grid[-46:].min() < 128  # text drawn
    text = " ".join(drawn)
    assert "tiny MAE" in text and "reconstruction" in text and "+ visible" in text
    assert "mask ratio seen: 0.75 (36 of 48 patches, 3 images)" in text
    assert "mean" in text and "visible patches" in text and "approximation" in text


def test_grid_upscales_small_images_and_captions_raw_pixels(tmp_path):
    x01 = np.random.default_rng(5).uniform(size=(2, 32, 32, 3)).astype(np.float32)
    images = normalise(x01)
    model = FakeMaskedModel(to_np(patchify(images, 8)), random_mask(2, 16, 8), patch_size=8)
    path = save_reconstruction_grid(model, {"images": images, "extra": np.zeros((2, 5))}, str(tmp_path / "g.png"))
    with Image.open(path) as png:
        # 32² → ×3 = 96 px; no title, 2 header lines, 2 rows, 2 caption lines.
        assert png.size == (4 * 96 + 5 * 4, 4 + 28 + 2 * 100 + 2 * 14 + 4)


def test_errors(tmp_path, monkeypatch):
    images = normalise(np.full((2, 16, 16, 3), 0.5, np.float32))
    mask = random_mask(2, 16, 12)
    pixels = to_np(patchify(images, P))
    model = FakeMaskedModel(pixels, mask)
    with pytest.raises(ValueError, match="'images' key"):
        reconstruct(model, {"pixels": images})
    with pytest.raises(ValueError, match="'images' key"):
        reconstruct(model, images)
    with pytest.raises(ValueError, match="'images' key"):
        save_reconstruction_grid(model, {"image": images}, tmp_path / "x.png")
    for key in ("pixels", "image_mask"):
        broken = FakeMaskedModel(pixels, mask, drop=key)
        with pytest.raises(ValueError, match=f"FakeMaskedModel's outputs have no '{key}'"):
            reconstruct(broken, {"images": images})
    with pytest.raises(ValueError, match=r"expected \(2, 16, 48\)"):
        reconstruct(FakeMaskedModel(pixels[:, :, :12], mask), {"images": images})
    with pytest.raises(ValueError, match="not divisible by the model's patch_size=3"):
        reconstruct(FakeMaskedModel(pixels, mask, patch_size=3), {"images": images})
    with pytest.raises(ValueError, match="ending in '.png'"):
        save_reconstruction_grid(model, {"images": images}, tmp_path / "x.jpg")
    with pytest.raises(ValueError, match="max_images"):
        save_reconstruction_grid(model, {"images": images}, tmp_path / "x.png", max_images=0)
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(ImportError, match="pip install pillow"):
        save_reconstruction_grid(model, {"images": images}, tmp_path / "x.png")
