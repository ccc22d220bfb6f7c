import keras
import numpy as np
import pytest

from keras_maeclip.layers import ModalityEmbedding
from tests.backend_grad import gradients


def to_np(x):
    return keras.ops.convert_to_numpy(x)


def test_adds_the_row_of_each_modality():
    layer = ModalityEmbedding(num_modalities=2)
    image = to_np(layer(np.zeros((2, 16, 8), "float32"), modality=0))
    text = to_np(layer(np.ones((2, 5, 8), "float32"), modality=1))
    table = to_np(layer.embeddings)
    assert table.shape == (2, 8) and not np.allclose(table[0], table[1])
    np.testing.assert_allclose(image, np.broadcast_to(table[0], (2, 16, 8)), atol=1e-7)
    np.testing.assert_allclose(text, 1.0 + np.broadcast_to(table[1], (2, 5, 8)), atol=1e-7)


def test_each_row_gets_the_gradient_of_its_own_tokens():
    layer = ModalityEmbedding()
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2, 3, 4)).astype("float32")
    b = rng.normal(size=(2, 6, 4)).astype("float32")
    layer(a, modality=0)  # build
    weights = rng.normal(size=(2, 6, 4)).astype("float32")

    def loss():
        text = layer(b, modality=1) * keras.ops.convert_to_tensor(weights)
        return keras.ops.sum(layer(a, modality=0)) + keras.ops.sum(text)

    _, (grad,) = gradients(loss, [layer.embeddings])
    np.testing.assert_allclose(grad[0], np.full(4, 6.0), rtol=1e-6)  # 2 × 3 tokens
    np.testing.assert_allclose(grad[1], weights.sum((0, 1)), rtol=1e-5)


def test_errors_and_config():
    layer = ModalityEmbedding(num_modalities=3)
    with pytest.raises(ValueError, match=r"modality must be a Python int in \[0, 3\)"):
        layer(np.zeros((1, 2, 4), "float32"), modality=3)
    with pytest.raises(ValueError, match="num_modalities must be a positive integer"):
        ModalityEmbedding(num_modalities=0)
    clone = ModalityEmbedding.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
