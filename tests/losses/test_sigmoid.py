"""SigLIP's sigmoid loss against a NumPy reference written from the paper.

The reference is SigLIP's Algorithm 1 as it stands (labels `2·I − 1`,
`-Σ log σ(labels · logits) / n`) in float64; the library computes the
softplus form in chunks. Tolerance: relative 1e-5 (float32 sums).
"""

import math

import keras
import numpy as np
import pytest

from keras_maeclip.losses import ContrastiveLoss, l2_normalize, sigmoid_loss
from tests.backend_grad import gradients


def unit(rows, dim, seed):
    x = np.random.default_rng(seed).normal(size=(rows, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype("float32")


def numpy_sigmoid_loss(img, txt, t, b, block):
    """Mean over blocks of Algorithm 1's loss."""
    losses, i2t, t2i = [], [], []
    for start in range(0, len(img), block):
        x = img[start:start + block].astype(np.float64)
        y = txt[start:start + block].astype(np.float64)
        logits = t * x @ y.T + b
        labels = 2 * np.eye(len(x)) - 1
        log_sigmoid = -np.log1p(np.exp(-labels * logits))
        losses.append(-log_sigmoid.sum() / len(x))
        i2t.append(logits.argmax(1) == np.arange(len(x)))
        t2i.append(logits.argmax(0) == np.arange(len(x)))
    return np.mean(losses), np.concatenate(i2t).mean(), np.concatenate(t2i).mean()


def pairs(n=12, dim=6):
    img, txt = unit(n, dim, 0), unit(n, dim, 1)
    txt[: n // 2] = 0.2 * txt[: n // 2] + img[: n // 2]
    return img, (txt / np.linalg.norm(txt, axis=1, keepdims=True)).astype("float32")


@pytest.mark.parametrize(
    "negatives,block,chunks",
    [("global", 12, 1), ("global", 12, 3), ("global", 12, 4), ("local", 4, 1), ("local", 3, 1)],
)
def test_matches_numpy_reference(negatives, block, chunks):
    img, txt = pairs()
    out = sigmoid_loss(img, txt, 7.0, -3.0, negatives, block, num_chunks=chunks)
    loss, i2t, t2i = numpy_sigmoid_loss(img, txt, 7.0, -3.0, block)
    assert float(out["loss"]) == pytest.approx(loss, rel=1e-5)
    assert float(out["image_to_text_accuracy"]) == pytest.approx(i2t)
    assert float(out["text_to_image_accuracy"]) == pytest.approx(t2i)
    assert 0.3 < i2t < 1.0  # the accuracies are not trivially 0 or 1


def test_local_blocks_differ_from_global():
    img, txt = pairs()
    glob = float(sigmoid_loss(img, txt, 7.0, -3.0)["loss"])
    assert float(sigmoid_loss(img, txt, 7.0, -3.0, "local", 4)["loss"]) != pytest.approx(glob, rel=1e-3)


def test_layer_initialises_as_siglip_and_gradients_match_reference():
    layer = ContrastiveLoss(loss="sigmoid")
    layer.build()
    assert float(layer.log_logit_scale) == pytest.approx(math.log(10.0))
    assert float(layer.logit_bias) == pytest.approx(-10.0)
    emb = keras.Variable(np.random.default_rng(4).normal(size=(8, 5)).astype("float32"))
    txt = unit(8, 5, 5)

    def fn():
        return layer(l2_normalize(emb), txt)["loss"]

    value, (g_emb, g_scale, g_bias) = gradients(
        fn, [emb, layer.log_logit_scale, layer.logit_bias]
    )
    e = keras.ops.convert_to_numpy(emb)
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    assert value == pytest.approx(numpy_sigmoid_loss(e, txt, 10.0, -10.0, 8)[0], rel=1e-5)
    # Analytic reference: dL/dz_ij = (σ(z_ij) − [i = j]) / n.
    z = 10.0 * e.astype(np.float64) @ txt.T - 10.0
    dz = (1 / (1 + np.exp(-z)) - np.eye(8)) / 8
    assert float(g_bias) == pytest.approx(dz.sum(), rel=1e-4)
    assert float(g_scale) == pytest.approx((dz * (z + 10.0)).sum(), rel=1e-4)
    assert np.all(np.isfinite(g_emb))


def test_layer_reports_bias_and_config_round_trips():
    layer = ContrastiveLoss(loss="sigmoid", init_logit_bias=-5.0, negatives="local", local_batch_size=2)
    out = layer(unit(4, 3, 0), unit(4, 3, 1))
    assert float(out["logit_bias"]) == pytest.approx(-5.0)
    assert float(out["logit_scale"]) == pytest.approx(10.0, rel=1e-6)
    clone = ContrastiveLoss.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert clone.loss == "sigmoid"
    with pytest.raises(ValueError, match="loss='hinge'"):
        ContrastiveLoss(loss="hinge")
    softmax = ContrastiveLoss()
    softmax.build()
    assert not hasattr(softmax, "logit_bias")
    assert softmax.init_logit_scale == pytest.approx(math.log(1 / 0.07))


def test_chunks_must_split_the_batch():
    img = unit(6, 4, 0)
    with pytest.raises(ValueError, match="does not split into 4 equal chunks"):
        sigmoid_loss(img, img, 1.0, 0.0, num_chunks=4)
    with pytest.raises(ValueError, match="not a multiple of local_batch_size=4"):
        sigmoid_loss(img, img, 1.0, 0.0, "local", 4)
