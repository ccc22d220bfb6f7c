"""CLIP and MAE-CLIP with `loss="sigmoid"` (SigLIP / MAE-SigLIP) through `fit`."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_maeclip.models import CLIP, MAECLIP
from tests.losses.test_sigmoid import numpy_sigmoid_loss
from tests.models.test_mae_clip import SMALL
from tests.tiny import make_clip, raw_batch


def to_np(x):
    return keras.ops.convert_to_numpy(x)


def test_clip_sigmoid_loss_equals_numpy_and_trains_under_fit(preprocessor):
    model = make_clip(preprocessor, loss="sigmoid")
    assert float(model.contrastive.log_logit_scale) == pytest.approx(math.log(10.0))
    assert float(model.contrastive.logit_bias) == pytest.approx(-10.0)
    inputs = preprocessor(raw_batch(8))
    y_pred = model(inputs)
    img, txt = (to_np(y_pred[k]) for k in ("image_embeddings", "text_embeddings"))
    expected = numpy_sigmoid_loss(img, txt, 10.0, -10.0, block=8)[0]
    assert float(model.compute_loss(y_pred=y_pred, training=False)) == pytest.approx(expected, rel=1e-5)

    model.compile(learning_rate=3e-3, weight_decay=0.0)
    data = tf.data.Dataset.from_tensors(raw_batch(8)).repeat()
    history = model.fit(data, steps_per_epoch=8, epochs=2, verbose=0).history
    assert "logit_bias" in history and "logit_scale" in history
    assert history["loss"][-1] < history["loss"][0]
    # The bias is trained (and left out of weight decay as a scalar).
    assert float(model.contrastive.logit_bias) != pytest.approx(-10.0, abs=1e-4)


def test_clip_sigmoid_round_trips_through_a_preset(preprocessor, tmp_path):
    model = make_clip(preprocessor, loss="sigmoid", init_logit_bias=-4.0)
    model.contrastive.logit_bias.assign(-3.5)
    model.save_to_preset(str(tmp_path))
    restored = CLIP.from_preset(str(tmp_path))
    assert restored.contrastive.loss == "sigmoid"
    assert float(restored.contrastive.logit_bias) == pytest.approx(-3.5)
    assert restored.get_config() == model.get_config()
    assert CLIP.from_config(model.get_config()).contrastive.init_logit_bias == -4.0


def test_mae_siglip_contrastive_term_is_the_sigmoid_loss(preprocessor):
    model = MAECLIP.from_preset("maeclip_tiny_max", preprocessor=preprocessor, loss="sigmoid", seed=3, **SMALL)
    inputs = preprocessor(raw_batch(8))
    y_pred = model(inputs)
    img, txt = (to_np(y_pred[k]) for k in ("image_embeddings", "text_embeddings"))
    expected = numpy_sigmoid_loss(img, txt, 10.0, -10.0, block=8)[0]
    contrastive = model.contrastive(y_pred["image_embeddings"], y_pred["text_embeddings"])
    assert float(contrastive["loss"]) == pytest.approx(expected, rel=1e-5)
    model.compile(learning_rate=1e-3)
    data = tf.data.Dataset.from_tensors(raw_batch(8)).repeat()
    history = model.fit(data, steps_per_epoch=2, epochs=1, verbose=0).history
    assert {"logit_bias", "contrastive_loss", "image_reconstruction_loss"} <= set(history)
    assert np.isfinite(history["loss"][0])
    assert MAECLIP.from_config(model.get_config()).contrastive.loss == "sigmoid"
