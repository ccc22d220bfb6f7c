import keras
import numpy as np
import pytest

from keras_maeclip.losses import (
    patch_targets,
    pixel_reconstruction_loss,
    token_reconstruction_loss,
)
from tests.backend_grad import gradients
from tests.layers.test_patching import numpy_patchify

RNG = np.random.default_rng(0)
IMAGES = RNG.normal(size=(2, 8, 8, 3)).astype("float32")
PRED = RNG.normal(size=(2, 4, 48)).astype("float32")
MASK = np.array([[1, 0, 1, 0], [0, 0, 0, 1]], "float32")


def numpy_pixel_loss(images, pred, mask, p, norm):
    """MAE's forward_loss in NumPy (unbiased per-patch variance, as torch.var)."""
    target = numpy_patchify(images.astype(np.float64), p)
    if norm:
        mean = target.mean(-1, keepdims=True)
        var = target.var(-1, keepdims=True, ddof=1)
        target = (target - mean) / (var + 1e-6) ** 0.5
    loss = ((pred - target) ** 2).mean(-1)
    return (loss * mask).sum() / mask.sum()


@pytest.mark.parametrize("norm", [True, False])
def test_pixel_loss_matches_numpy_reference_on_masked_patches_only(norm):
    got = float(pixel_reconstruction_loss(IMAGES, PRED, MASK, 4, norm_pix_loss=norm))
    assert got == pytest.approx(numpy_pixel_loss(IMAGES, PRED, MASK, 4, norm), rel=1e-5)
    # Changing predictions of visible patches changes nothing.
    other = PRED.copy()
    other[MASK == 0] += 5.0
    assert float(pixel_reconstruction_loss(IMAGES, other, MASK, 4, norm)) == pytest.approx(got, rel=1e-6)


def test_normalised_targets_have_zero_mean_unit_unbiased_variance():
    t = keras.ops.convert_to_numpy(patch_targets(IMAGES, 4))
    np.testing.assert_allclose(t.mean(-1), 0.0, atol=1e-5)
    np.testing.assert_allclose(t.var(-1, ddof=1), 1.0, atol=1e-3)


def test_token_loss_matches_numpy_reference_and_ignores_unmasked():
    targets = np.array([[2, 5, 7, 0], [1, 1, 3, 0]], "int32")
    logits = RNG.normal(size=(2, 4, 9)).astype("float32")
    mask = np.array([[0, 1, 1, 0], [1, 0, 0, 0]], bool)
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    ce = -np.take_along_axis(log_p, targets[..., None], -1)[..., 0]
    expected = ce[mask].mean()
    assert float(token_reconstruction_loss(targets, logits, mask)) == pytest.approx(expected, rel=1e-5)
    assert float(token_reconstruction_loss(targets, logits, np.zeros_like(mask))) == 0.0


def test_gradients_reach_only_masked_predictions():
    pred = keras.Variable(PRED)
    value, (grad,) = gradients(lambda: pixel_reconstruction_loss(IMAGES, pred, MASK, 4), [pred])
    assert np.isfinite(value)
    assert np.all(grad[MASK == 0] == 0) and np.all(np.abs(grad[MASK == 1]).sum(-1) > 0)


def test_per_caption_token_loss_matches_m3aes_reduction():
    # m3ae_public: each caption's mean over its masked tokens, then the mean
    # over captions (a caption with no masked token counts 0).
    targets = np.array([[2, 5, 7, 0], [1, 1, 3, 0], [4, 4, 4, 4]], "int32")
    logits = RNG.normal(size=(3, 4, 9)).astype("float32")
    mask = np.array([[0, 1, 1, 1], [1, 0, 0, 0], [0, 0, 0, 0]], bool)
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    ce = -np.take_along_axis(log_p, targets[..., None], -1)[..., 0]
    per_caption = [ce[0, 1:].mean(), ce[1, 0], 0.0]
    got = float(token_reconstruction_loss(targets, logits, mask, reduction="captions"))
    assert got == pytest.approx(np.mean(per_caption), rel=1e-5)
    # The token mean weighs the 3-token caption 3:1 instead.
    assert float(token_reconstruction_loss(targets, logits, mask)) == pytest.approx(ce[mask].mean(), rel=1e-5)
    with pytest.raises(ValueError, match="reduction"):
        token_reconstruction_loss(targets, logits, mask, reduction="sum")
