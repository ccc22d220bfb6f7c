"""Config and input checks shared by the models; messages name the fix."""


def check_divisible(name, value, by_name, by):
    if int(by) <= 0 or int(value) % int(by):
        raise ValueError(
            f"{name}={value} must be divisible by {by_name}={by}; change one "
            "of them."
        )


def check_positive(**values):
    for name, value in values.items():
        if value is None or int(value) < 1:
            raise ValueError(f"{name} must be a positive integer; got {value!r}.")


def check_images(images, image_size, num_channels):
    """Raises a one-line error unless `images` is `(batch, S, S, C)`."""
    shape = tuple(images.shape)
    expected = (image_size, image_size, num_channels)
    if len(shape) != 4:
        raise ValueError(
            f"images must have rank 4 (batch, {image_size}, {image_size}, "
            f"{num_channels}); got shape {shape}. Batch single images with "
            "x[None] or run them through the preprocessor."
        )
    if shape[1:] != expected and None not in shape[1:]:
        raise ValueError(
            f"images must have shape (batch, {image_size}, {image_size}, "
            f"{num_channels}); got {shape}. Resize with the model's "
            "preprocessor (or pick a preset with this image size)."
        )
