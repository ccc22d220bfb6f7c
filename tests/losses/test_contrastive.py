import math

import keras
import numpy as np
import pytest

from keras_maeclip.losses import ContrastiveLoss, MaxValue, contrastive_loss, l2_normalize
from tests.backend_grad import gradients


def unit(rows, dim, seed):
    x = np.random.default_rng(seed).normal(size=(rows, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype("float32")


def numpy_info_nce(img, txt, scale, block):
    """Reference: mean of the two cross-entropies, per block, averaged."""
    losses, i2t, t2i = [], [], []
    for start in range(0, len(img), block):
        logits = scale * img[start:start + block].astype(np.float64) @ txt[start:start + block].T.astype(np.float64)
        n = len(logits)
        lse_rows = np.log(np.exp(logits).sum(1))
        lse_cols = np.log(np.exp(logits).sum(0))
        diag = np.diag(logits)
        losses.append(0.5 * ((lse_rows - diag).mean() + (lse_cols - diag).mean()))
        i2t.append(logits.argmax(1) == np.arange(n))
        t2i.append(logits.argmax(0) == np.arange(n))
    return np.mean(losses), np.concatenate(i2t).mean(), np.concatenate(t2i).mean()


@pytest.mark.parametrize("negatives,block", [("global", 12), ("local", 4), ("local", 3), ("local", 12)])
def test_matches_numpy_reference(negatives, block):
    img, txt = unit(12, 6, 0), unit(12, 6, 1)
    # Make some pairs easy so accuracies are not trivially zero.
    txt[:6] = 0.2 * txt[:6] + img[:6]
    txt = txt / np.linalg.norm(txt, axis=1, keepdims=True)
    out = contrastive_loss(img, txt, 10.0, negatives=negatives, local_batch_size=block)
    loss, i2t, t2i = numpy_info_nce(img, txt, 10.0, block)
    assert float(out["loss"]) == pytest.approx(loss, rel=1e-5)
    assert float(out["image_to_text_accuracy"]) == pytest.approx(i2t)
    assert float(out["text_to_image_accuracy"]) == pytest.approx(t2i)


def test_local_with_full_block_equals_global_and_differs_otherwise():
    img, txt = unit(8, 4, 2), unit(8, 4, 3)
    glob = float(contrastive_loss(img, txt, 5.0)["loss"])
    assert float(contrastive_loss(img, txt, 5.0, "local", 8)["loss"]) == pytest.approx(glob, rel=1e-6)
    assert float(contrastive_loss(img, txt, 5.0, "local", 2)["loss"]) != pytest.approx(glob, rel=1e-3)


def test_bad_arguments():
    img = unit(6, 4, 0)
    with pytest.raises(ValueError, match="not a multiple of local_batch_size=4"):
        contrastive_loss(img, img, 1.0, "local", 4)
    with pytest.raises(ValueError, match="needs a positive local_batch_size"):
        contrastive_loss(img, img, 1.0, "local")
    with pytest.raises(ValueError, match="negatives='batch'"):
        ContrastiveLoss(negatives="batch")


def test_layer_gradients_are_finite_and_match_reference():
    layer = ContrastiveLoss(negatives="local", local_batch_size=4)
    layer.build()
    assert float(layer.log_logit_scale) == pytest.approx(math.log(1 / 0.07))
    emb = keras.Variable(np.random.default_rng(4).normal(size=(8, 5)).astype("float32"))
    txt = unit(8, 5, 5)

    def fn():
        return layer(l2_normalize(emb), txt)["loss"]

    value, (g_emb, g_scale) = gradients(fn, [emb, layer.log_logit_scale])
    assert np.isfinite(value) and np.all(np.isfinite(g_emb)) and np.isfinite(g_scale)
    # Finite differences on the temperature (an independent check).
    def loss_at(log_scale):
        e = keras.ops.convert_to_numpy(emb)
        e = e / np.linalg.norm(e, axis=1, keepdims=True)
        return numpy_info_nce(e, txt, math.exp(log_scale), 4)[0]
    s = math.log(1 / 0.07)
    numeric = (loss_at(s + 1e-4) - loss_at(s - 1e-4)) / 2e-4
    assert float(g_scale) == pytest.approx(numeric, rel=1e-3, abs=1e-5)


def test_gradients_finite_for_identical_and_opposite_embeddings():
    layer = ContrastiveLoss()
    layer.build()
    emb = keras.Variable(np.tile(unit(1, 4, 0), (4, 1)))  # all rows identical
    value, grads = gradients(lambda: layer(l2_normalize(emb), -l2_normalize(emb))["loss"], [emb])
    assert np.isfinite(value) and np.all(np.isfinite(grads[0]))


def test_constraint_clamps_the_temperature_after_an_update():
    layer = ContrastiveLoss()
    layer.build()
    assert isinstance(layer.log_logit_scale.constraint, MaxValue)
    optimizer = keras.optimizers.SGD(learning_rate=10.0)
    optimizer.apply([keras.ops.array(-1.0)], [layer.log_logit_scale])  # +10 step
    assert float(layer.log_logit_scale) == pytest.approx(math.log(100.0), rel=1e-6)
    assert float(layer(unit(2, 3, 0), unit(2, 3, 1))["logit_scale"]) == pytest.approx(100.0, rel=1e-5)


def test_config_round_trip():
    layer = ContrastiveLoss(negatives="local", local_batch_size=16, init_logit_scale=1.0)
    clone = ContrastiveLoss.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert MaxValue.from_config(MaxValue(2.0).get_config()).max_value == 2.0


def test_local_then_global_schedule_switches_at_step_n():
    layer = ContrastiveLoss(local_batch_size=4, local_steps=2)
    layer.build()
    img, txt = unit(8, 4, 6), unit(8, 4, 7)
    local = numpy_info_nce(img, txt, 1 / 0.07, 4)[0]
    glob = numpy_info_nce(img, txt, 1 / 0.07, 8)[0]
    assert float(layer(img, txt)["loss"]) == pytest.approx(local, rel=1e-5)  # eval: no step
    outs = [layer(img, txt, training=True) for _ in range(4)]
    losses = [float(o["loss"]) for o in outs]
    assert losses[:2] == pytest.approx([local, local], rel=1e-5)
    assert losses[2:] == pytest.approx([glob, glob], rel=1e-5)
    assert [float(o["uses_local_negatives"]) for o in outs] == [1.0, 1.0, 0.0, 0.0]
    assert int(keras.ops.convert_to_numpy(layer.steps_seen)) == 4


def test_schedule_needs_global_mode():
    with pytest.raises(ValueError, match="local_steps switches from local to global"):
        ContrastiveLoss(negatives="local", local_batch_size=4, local_steps=10)


def test_local_negatives_default_to_the_replicas_own_batch():
    # One device, no local_batch_size: a replica's batch is the whole batch,
    # so local negatives equal global ones.
    img, txt = unit(8, 6, seed=5), unit(8, 6, seed=6)
    local = ContrastiveLoss(negatives="local")(img, txt)
    glob = ContrastiveLoss()(img, txt)
    assert float(local["loss"]) == pytest.approx(float(glob["loss"]), rel=1e-6)
    assert float(local["uses_local_negatives"]) == 1.0
