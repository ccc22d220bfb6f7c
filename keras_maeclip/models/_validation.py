"""Config and input checks shared by the models; messages name the fix."""

from keras_maeclip.backend import concrete_values


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


class PresetConfigError(ValueError):
    """A saved config (task.json) that names the wrong kind of part."""


def check_ratio(name, value, fix, low=0.0, high=1.0, include_high=False):
    """A one-line error unless `low <= value < high` (`<= high` with `include_high`)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    inside = low <= number <= high if include_high else low <= number < high
    if not inside:
        interval = f"[{low:g}, {high:g}{']' if include_high else ')'}"
        raise ValueError(f"{name}={value!r} must be in {interval}; {fix}")


def check_image_mask_ratio(name, value, loss_weight=None, weight_name="image_loss_weight"):
    """Image masking ratios: in [0, 1), and above 0 unless its loss is off.

    With nothing masked the pixel loss is 0 on every step, so the decoder
    learns nothing while training looks fine.
    """
    check_ratio(name, value, "e.g. 0.75 (MAE's).")
    if float(value) == 0.0 and (loss_weight is None or float(loss_weight) != 0.0):
        off = "" if loss_weight is None else f", or set {weight_name}=0 to train without it"
        raise ValueError(
            f"{name}=0 masks no patch, so the image reconstruction loss is 0 at every step; use "
            f"a ratio in (0, 1), e.g. 0.75{off}."
        )


def check_logit_scale(init_logit_scale, max_logit_scale):
    """`init_logit_scale` (`None`: the loss's default, below any sane clamp) within the clamp."""
    if init_logit_scale is None:
        return
    if not float(init_logit_scale) <= float(max_logit_scale):
        raise ValueError(
            f"init_logit_scale={init_logit_scale} is above the clamp max_logit_scale="
            f"{max_logit_scale} (both are logs of the scale); the first update would clip it. "
            "Lower init_logit_scale (default ln(1/0.07) ≈ 2.659) or raise max_logit_scale."
        )


def check_tokenizer_fits(preprocessor, vocabulary_size, owner):
    """The tokenizer's ids must index the text tower's embedding table."""
    tokenizer = getattr(preprocessor, "tokenizer", None)
    if tokenizer is None or not hasattr(tokenizer, "vocabulary_size"):
        return
    try:
        size = int(tokenizer.vocabulary_size())
    except ValueError:
        return  # loading a preset: the vocabulary (an asset) is set after construction
    if size > int(vocabulary_size):
        raise ValueError(
            f"The preprocessor's tokenizer has {size} tokens but {owner}'s text tower has "
            f"vocabulary_size={vocabulary_size}: ids >= {vocabulary_size} would index past its "
            f"embedding table (loss: nan). Build the model with vocabulary_size={size} (from_preset "
            "sizes it from the preprocessor when you do not override it)."
        )


def check_token_ids(token_ids, vocabulary_size):
    """Ids outside `[0, vocabulary_size)`, checked when the values are at hand.

    Inside a traced step (`jit`, `tf.function`) the values are not known
    and nothing is checked here; `PretrainingTask.fit` checks arrays given
    directly, and a `CLIPPreprocessor` whose tokenizer fits the model
    (checked at construction) only produces valid ids.
    """
    values = concrete_values(token_ids)
    if values is None or values.size == 0:
        return
    low, high = int(values.min()), int(values.max())
    if low < 0 or high >= int(vocabulary_size):
        bad = high if high >= int(vocabulary_size) else low
        raise ValueError(
            f"token_ids hold id {bad}, outside the text tower's vocabulary [0, {vocabulary_size}); "
            "tokenize with the model's own tokenizer (model.preprocessor) or build the model "
            "with a vocabulary_size that covers your tokenizer."
        )


def check_part(owner, name, value, expected):
    """A constructor argument of the wrong class: one line naming both."""
    if value is not None and not isinstance(value, expected):
        names = expected.__name__ if isinstance(expected, type) else " or ".join(c.__name__ for c in expected)
        raise PresetConfigError(
            f"{owner}'s {name} must be a {names}; got a {type(value).__name__}. A saved preset "
            "whose task.json names another class is damaged or edited: save it again with "
            "save_to_preset()."
        )
