"""Image and text embedders exported as TF SavedModels, reloaded and compared.

Reference: the Keras embedders' own outputs on the same inputs; tolerance
1e-5 absolute on unit-norm embeddings (the exported graph may fuse ops).
"""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_maeclip.training.export import export_embedders
from tests.tiny import make_clip, raw_batch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

pytestmark = pytest.mark.skipif(
    keras.config.backend() != "tensorflow",
    reason="tested on TensorFlow only: on JAX jax2tf does not yet export these "
    "embedders (open), on torch keras needs torch_xla (not pinned)",
)


def test_exported_embedders_reproduce_the_keras_outputs(preprocessor, tmp_path):
    model = make_clip(preprocessor, preset="clip_tiny_map")
    inputs = preprocessor(raw_batch(4, seed=2))
    backbone = model.backbone
    expected_image = keras.ops.convert_to_numpy(backbone.image_embedder()(inputs["images"]))
    expected_text = keras.ops.convert_to_numpy(
        backbone.text_embedder()({"token_ids": inputs["token_ids"], "padding_mask": inputs["padding_mask"]})
    )
    paths = export_embedders(model, str(tmp_path))
    image = tf.saved_model.load(paths["image_embedder"])
    text = tf.saved_model.load(paths["text_embedder"])
    got_image = image.serve(tf.constant(keras.ops.convert_to_numpy(inputs["images"]))).numpy()
    got_text = text.serve({
        "token_ids": tf.constant(keras.ops.convert_to_numpy(inputs["token_ids"]), tf.int32),
        "padding_mask": tf.constant(keras.ops.convert_to_numpy(inputs["padding_mask"]), tf.int32),
    }).numpy()
    np.testing.assert_allclose(got_image, expected_image, atol=1e-5, rtol=0)
    np.testing.assert_allclose(got_text, expected_text, atol=1e-5, rtol=0)
    assert np.abs(expected_image).max() > 0.01


def test_command_exports_a_saved_preset(preprocessor, tmp_path):
    model = make_clip(preprocessor)
    model.save_to_preset(str(tmp_path / "preset"))
    env = dict(os.environ, PYTHONPATH=REPO)
    result = subprocess.run(
        [sys.executable, "-m", "keras_maeclip.training.export", str(tmp_path / "preset"), str(tmp_path / "out")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "out" / "image_embedder" / "saved_model.pb").exists()
    assert (tmp_path / "out" / "text_embedder" / "saved_model.pb").exists()
