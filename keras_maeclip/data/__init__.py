from keras_maeclip.data import synthetic  # noqa: F401
