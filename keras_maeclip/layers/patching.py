"""Cutting images into patches and embedding them.

Patches are flattened in the order (patch row, patch column, channel), the
order MAE's ``patchify`` uses, so reconstruction targets and pixel predictions
line up with the reference implementation.
"""

import math

import keras
from keras import ops


def patchify(images, patch_size):
    """Split images into flattened, non-overlapping square patches.

    Args:
        images: tensor of shape `(batch, height, width, channels)`.
        patch_size: int. Side of each square patch; must divide height and
            width.

    Returns:
        Tensor of shape `(batch, num_patches, patch_size**2 * channels)`;
        patches are listed row by row, and each patch is flattened as
        (row inside the patch, column inside the patch, channel).

    Example:
    >>> x = keras.ops.ones((2, 32, 32, 3))
    >>> patchify(x, 8).shape
    (2, 16, 192)

    References: MAE `models_mae.py` (`patchify`).
    """
    _, height, width, channels = images.shape
    p = int(patch_size)
    if height is None or width is None or channels is None:
        raise ValueError(
            "patchify needs static height, width and channels; got images "
            f"of shape {images.shape}."
        )
    if height % p or width % p:
        raise ValueError(
            f"patchify: image size {height}x{width} is not divisible by "
            f"patch_size={p}; resize the images or pick another patch size."
        )
    gh, gw = height // p, width // p
    x = ops.reshape(images, (-1, gh, p, gw, p, channels))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    return ops.reshape(x, (-1, gh * gw, p * p * channels))


def unpatchify(patches, patch_size, grid_size, channels=3):
    """Reassemble images from patches produced by `patchify`.

    Args:
        patches: tensor of shape `(batch, grid_h * grid_w, p * p * channels)`.
        patch_size: int. Side `p` of each square patch.
        grid_size: int or `(grid_h, grid_w)`. Number of patches per column
            and per row.
        channels: int, defaults to `3`.

    Returns:
        Tensor of shape `(batch, grid_h * p, grid_w * p, channels)`.

    Example:
    >>> x = keras.random.uniform((2, 32, 32, 3))
    >>> y = unpatchify(patchify(x, 8), 8, grid_size=4)
    >>> bool(keras.ops.all(x == y))
    True

    References: MAE `models_mae.py` (`unpatchify`).
    """
    gh, gw = _pair(grid_size)
    p = int(patch_size)
    if patches.shape[1] is not None and patches.shape[1] != gh * gw:
        raise ValueError(
            f"unpatchify: got {patches.shape[1]} patches but grid_size="
            f"{(gh, gw)} needs {gh * gw}."
        )
    x = ops.reshape(patches, (-1, gh, gw, p, p, channels))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    return ops.reshape(x, (-1, gh * p, gw * p, channels))


def _pair(value):
    if isinstance(value, (tuple, list)):
        return int(value[0]), int(value[1])
    return int(value), int(value)


@keras.saving.register_keras_serializable(package="keras_maeclip")
class FlattenedKernelInitializer(keras.initializers.Initializer):
    """Initialises a convolution kernel as the matrix it flattens to.

    A `(p, p, channels, out)` kernel is drawn by `initializer` as a
    `(p·p·channels, out)` matrix and reshaped, so fan-in is `p·p·channels`
    and fan-out is `out`, as for the equivalent `Dense` layer on
    `patchify` (MAE's `xavier_uniform_` on the flattened `PatchEmbed`
    weight). Keras' own initialisers multiply both fans by the receptive
    field `p·p` instead, which for ViT-B/16 gives a glorot-uniform kernel
    about 11× smaller in standard deviation than MAE's.

    Args:
        initializer: the initializer of the flattened matrix, defaults to
            `"glorot_uniform"`.

    Example:
    >>> init = FlattenedKernelInitializer("glorot_uniform")
    >>> init((16, 16, 3, 768)).shape
    (16, 16, 3, 768)

    References: MAE `models_mae.py` (`initialize_weights`: the patch
    embedding initialised "like nn.Linear").
    """

    def __init__(self, initializer="glorot_uniform"):
        self.initializer = keras.initializers.get(initializer)

    def __call__(self, shape, dtype=None):
        shape = tuple(int(d) for d in shape)
        matrix = self.initializer((math.prod(shape[:-1]), shape[-1]), dtype=dtype)
        return ops.reshape(matrix, shape)

    def get_config(self):
        return {"initializer": keras.initializers.serialize(self.initializer)}


@keras.saving.register_keras_serializable(package="keras_maeclip")
class PatchEmbedding(keras.layers.Layer):
    """Linear projection of non-overlapping image patches.

    Equivalent to `Dense(hidden_dim)` applied to `patchify(images, p)`; it is
    computed as a stride-`p` convolution, whose kernel of shape
    `(p, p, channels, hidden_dim)` flattens in the same (row, column,
    channel) order.

    Args:
        patch_size: int. Side of each square patch.
        hidden_dim: int. Width of the patch embeddings.
        use_bias: bool, defaults to `True`.
        kernel_initializer: initializer of the projection as a
            `(p·p·channels, hidden_dim)` matrix (wrapped in
            `FlattenedKernelInitializer`, so fans are those of the
            equivalent Dense layer, as MAE initialises it), defaults to
            `"glorot_uniform"`.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call args:
        images: tensor `(batch, height, width, channels)`.

    Returns:
        Tensor `(batch, num_patches, hidden_dim)`, patches row by row.

    Example:
    >>> layer = PatchEmbedding(patch_size=8, hidden_dim=64)
    >>> layer(keras.ops.ones((2, 32, 32, 3))).shape
    (2, 16, 64)

    References: Dosovitskiy et al. 2021 (ViT) §3.1; MAE `PatchEmbed`.
    """

    def __init__(
        self,
        patch_size,
        hidden_dim,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.patch_size = int(patch_size)
        self.hidden_dim = int(hidden_dim)
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.projection = keras.layers.Conv2D(
            self.hidden_dim,
            kernel_size=self.patch_size,
            strides=self.patch_size,
            padding="valid",
            use_bias=use_bias,
            kernel_initializer=FlattenedKernelInitializer(self.kernel_initializer),
            data_format="channels_last",
            dtype=self.dtype_policy,
            name="projection",
        )

    def build(self, input_shape):
        self.projection.build(input_shape)
        self.built = True

    def call(self, images):
        x = self.projection(images)
        return ops.reshape(x, (-1, x.shape[1] * x.shape[2], self.hidden_dim))

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = input_shape
        n = (height // self.patch_size) * (width // self.patch_size)
        return (batch, n, self.hidden_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "patch_size": self.patch_size,
                "hidden_dim": self.hidden_dim,
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
            }
        )
        return config
