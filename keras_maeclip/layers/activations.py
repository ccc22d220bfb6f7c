"""Activations that Keras does not ship: QuickGELU (OpenAI CLIP's)."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_maeclip", name="quick_gelu")
def quick_gelu(x):
    """`x · sigmoid(1.702 x)`: the GELU approximation of OpenAI's CLIP towers.

    open_clip builds its `-quickgelu` models (and the OpenAI weights) with
    it; converting those towers needs it for parity.

    Example:
    >>> round(float(quick_gelu(keras.ops.convert_to_tensor(1.0))), 4)
    0.8458
    """
    return x * ops.sigmoid(1.702 * x)


# Names the towers accept for `activation=`.
ACTIVATIONS = {"gelu": "gelu", "quick_gelu": quick_gelu}
