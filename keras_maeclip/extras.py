"""Optional dependencies: importing one, or one line naming the extra that installs it.

`pip install keras-maeclip` brings what the models, losses, layers, data
pipeline and training need (Keras, keras-hub, TensorFlow for tf.data).
The rest comes with extras (pyproject.toml): ``[jax]`` and ``[torch]`` (a
Keras backend besides TensorFlow; `keras_maeclip.backend` checks those),
``[tfds]`` (real evaluation datasets), ``[plots]`` (the study's figures),
``[validate]`` (TFDV in-process; `keras_maeclip.data.tfdv_step`).
"""

import importlib

__all__ = ["require"]


def require(module, extra, purpose):
    """Imports `module`, or raises one-line `ImportError` naming the extra to install.

    Args:
        module: the module's import name, e.g. ``"tensorflow_datasets"``.
        extra: the keras-maeclip extra that installs it, e.g. ``"tfds"``.
        purpose: what needs it, for the message, e.g. ``"Reading TFDS datasets"``.

    Returns:
        The imported module.
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"{purpose} needs {module}, which is not installed: pip install keras-maeclip[{extra}]") from e
