"""keras_maeclip: CLIP, MAE, M3AE and MAE-CLIP pretraining in Keras 3.

Runs on the JAX, TensorFlow and PyTorch backends; set ``KERAS_BACKEND``
before importing. Subpackages: ``layers``, ``losses``, ``models``, ``data``,
``training``, ``evaluation``.
"""

__version__ = "0.1.0"
