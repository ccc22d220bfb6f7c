"""keras_maeclip: CLIP, MAE, M3AE and MAE-CLIP pretraining in Keras 3.

Runs on the JAX, TensorFlow and PyTorch backends; set ``KERAS_BACKEND``
before importing. Subpackages: ``layers``, ``losses``, ``models``, ``data``,
``training``, ``evaluation``.
"""

__version__ = "0.1.0"


def _check_backend_installed():
    # Keras imports its backend's package on first import and fails with "No module
    # named 'jax'"; say which extra installs it instead (keras_maeclip.backend).
    import os
    import sys

    if "keras" in sys.modules:
        return
    from keras_maeclip import backend

    name = os.environ.get("KERAS_BACKEND", "").strip()
    if name and not backend.backend_installed(name):
        raise ImportError(backend.missing_backend_message(name))


_check_backend_installed()
del _check_backend_installed
