"""Tests for keras_maeclip.data.augment: crops, flips, eval resize, normalisation in tf.data.

Crop boxes are measured, not trusted: the test images encode each pixel's
column in red and its row in green, and the crop is resized UP (output side
larger than twice the crop), so the output's corner pixels are exactly the
crop's corner pixels and give back the box.
"""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_maeclip.data.augment import (
    CLIP_CROP_SCALE,
    CROP_RATIO,
    MAE_CROP_SCALE,
    augment_records,
    crop_box,
    eval_resize,
    normalize,
    random_flip,
    random_resized_crop,
)
from keras_maeclip.data.tfds import center_crop_resize
from keras_maeclip.models.preprocessor import IMAGENET_MEAN, IMAGENET_STD


def grid_image(height, width):
    """uint8 (H, W, 3): red = column index, green = row index, blue = 7."""
    rows, cols = np.mgrid[:height, :width]
    return np.stack([cols, rows, np.full_like(rows, 7)], axis=-1).astype(np.uint8)


def measured_box(output):
    """(top, left, height, width) of the crop behind an up-resized grid image."""
    left, top = int(output[0, 0, 0]), int(output[0, 0, 1])
    right, bottom = int(output[-1, -1, 0]), int(output[-1, -1, 1])
    return top, left, bottom - top + 1, right - left + 1


def seed(a, b=0):
    return tf.constant([a, b], tf.int64)


def records(images, captions=None):
    """An unbatched dataset of decode_records-like dicts with images of any size."""
    captions = captions or [f"caption {i}" for i in range(len(images))]

    def generate():
        for i, (image, caption) in enumerate(zip(images, captions)):
            yield {"image": image, "caption": caption, "key": f"k{i}", "label": np.int32(i)}

    return tf.data.Dataset.from_generator(generate, output_signature={
        "image": tf.TensorSpec((None, None, 3), tf.uint8),
        "caption": tf.TensorSpec((), tf.string),
        "key": tf.TensorSpec((), tf.string),
        "label": tf.TensorSpec((), tf.int32),
    })


def images_of(dataset):
    return [ex["image"] for ex in dataset.as_numpy_iterator()]


@pytest.mark.parametrize("shape", [(5, 7), (7, 5), (1, 1), (60, 20), (20, 60), (300, 200), (20, 300)])
def test_output_shape_and_dtype_for_any_input_size(shape):
    image = tf.constant(np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8))
    for out in (random_resized_crop(image, 16, seed=seed(1)), random_resized_crop(image, 16),
                eval_resize(image, 16)):
        assert out.shape == (16, 16, 3) and out.dtype == tf.uint8
    assert random_resized_crop(image[..., :1], 8, seed=seed(2)).shape == (8, 8, 1)


@pytest.mark.parametrize("scale", [CLIP_CROP_SCALE, MAE_CROP_SCALE])
@pytest.mark.parametrize("shape", [(50, 50), (40, 60), (60, 40)])
def test_crop_area_fraction_and_aspect_ratio_are_in_range(shape, scale):
    height, width = shape
    image = tf.constant(grid_image(height, width))
    fractions = []
    for s in range(25):
        out = random_resized_crop(image, 128, scale=scale, seed=seed(s, 11)).numpy()
        top, left, h, w = measured_box(out)
        assert 0 <= top and top + h <= height and 0 <= left and left + w <= width
        # The box from crop_box (same seed) is the one that was cut.
        begin, size = crop_box(tf.shape(image), scale, CROP_RATIO, seed(s, 11))
        assert (top, left, h, w) == (*begin.numpy()[:2], *size.numpy()[:2])
        fraction = h * w / (height * width)
        fractions.append(fraction)
        assert scale[0] - 1e-6 <= fraction <= scale[1] + 1e-6, (s, h, w)
        # Width / height in range, up to rounding the width by one pixel.
        assert CROP_RATIO[0] <= (w + 1) / h and (w - 1) / h <= CROP_RATIO[1], (s, h, w)
    # The crops really vary over the range (not always the whole image).
    assert min(fractions) < scale[0] + 0.5 * (scale[1] - scale[0]) < max(fractions)
    assert len(set(fractions)) > 5


def test_full_scale_square_crop_is_the_resized_image():
    image = grid_image(40, 40)
    image[..., 2] = np.random.default_rng(1).integers(0, 256, (40, 40))
    for size, s in ((24, 0), (64, 1)):
        out = random_resized_crop(tf.constant(image), size, scale=(1.0, 1.0), ratio=(1.0, 1.0), seed=seed(s))
        reference = np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))
        np.testing.assert_allclose(out.numpy().astype(int), reference.astype(int), atol=1)


def test_fallback_is_centred_box_with_clamped_ratio():
    # 20 x 200: no box of ratio <= 4/3 covers half the image, so every attempt fails.
    out = random_resized_crop(tf.constant(grid_image(20, 200)), 128, seed=seed(3)).numpy()
    width = round(20 * 4 / 3)
    assert measured_box(out) == (0, (200 - width) // 2, 20, width)


def test_same_seed_same_crops_different_seed_different_crops():
    images = [grid_image(40, 60), grid_image(50, 30), grid_image(33, 33)] * 3

    def pipeline(s):
        return augment_records(records(images), 24, seed=s, flip=True, scale=MAE_CROP_SCALE)

    def differ(xs, ys):
        return any(not np.array_equal(x, y) for x, y in zip(xs, ys))

    seeded = pipeline(5)
    first, second_epoch = images_of(seeded), images_of(seeded)
    rebuilt = pipeline(5)
    for a, b in zip(first, images_of(rebuilt)):
        np.testing.assert_array_equal(a, b)
    # A rebuilt pipeline also replays the later epochs.
    for a, b in zip(second_epoch, images_of(rebuilt)):
        np.testing.assert_array_equal(a, b)
    assert differ(first, images_of(pipeline(6)))
    # New crops each epoch, and for repeated images.
    assert differ(first, second_epoch)
    assert not np.array_equal(first[0], first[3])
    unseeded = pipeline(None)
    assert differ(images_of(unseeded), images_of(unseeded))


def test_random_flip_is_a_seeded_coin():
    image = tf.constant(grid_image(6, 9))
    flipped = []
    for s in range(16):
        out = random_flip(image, seed(s)).numpy()
        again = random_flip(image, seed(s)).numpy()
        np.testing.assert_array_equal(out, again)
        if np.array_equal(out, image.numpy()[:, ::-1]):
            flipped.append(s)
        else:
            np.testing.assert_array_equal(out, image.numpy())
    assert 2 <= len(flipped) <= 14
    np.testing.assert_array_equal(random_flip(image, seed(flipped[0])).numpy(), image.numpy()[:, ::-1])


def test_augment_records_flips_only_when_asked():
    image = grid_image(32, 32)
    full = dict(scale=(1.0, 1.0), ratio=(1.0, 1.0))
    resized = random_resized_crop(tf.constant(image), 32, seed=seed(0), **full).numpy()
    plain = images_of(augment_records(records([image] * 12), 32, seed=0, **full))
    assert all(np.array_equal(out, resized) for out in plain)
    flipped = images_of(augment_records(records([image] * 12), 32, seed=0, flip=True, **full))
    is_flipped = [np.array_equal(out, resized[:, ::-1]) for out in flipped]
    assert all(f or np.array_equal(out, resized) for f, out in zip(is_flipped, flipped))
    assert 1 <= sum(is_flipped) <= 11


def test_eval_resize_is_the_centre_square():
    wide = np.zeros((8, 24, 3), np.uint8)
    wide[:, 8:16] = 200
    assert (eval_resize(tf.constant(wide), 8).numpy() == 200).all()
    tall = np.transpose(wide, (1, 0, 2))
    assert (eval_resize(tf.constant(tall), 4).numpy() == 200).all()
    image = np.random.default_rng(2).integers(0, 256, (30, 45, 3), dtype=np.uint8)
    np.testing.assert_array_equal(eval_resize(tf.constant(image), 16).numpy(),
                                  center_crop_resize(16)(tf.constant(image)).numpy())


def test_normalize_matches_numpy():
    image = np.random.default_rng(3).integers(0, 256, (2, 5, 6, 3), dtype=np.uint8)
    expected = (image / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    out = normalize(tf.constant(image))
    assert out.dtype == tf.float32
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-6)
    custom = normalize(tf.constant(image), mean=(0.5, 0.5, 0.5), std=0.5).numpy()
    np.testing.assert_allclose(custom, image / 127.5 - 1.0, atol=1e-6)


def test_augment_records_end_to_end():
    images = [grid_image(40, 60), grid_image(25, 25), grid_image(5, 7), grid_image(90, 30)]
    source = records(images)
    train = augment_records(source, 16, seed=1)
    assert train.element_spec["image"].shape == (16, 16, 3)
    assert train.element_spec["image"].dtype == tf.uint8
    out = list(train.as_numpy_iterator())
    assert [sorted(ex) for ex in out] == [["caption", "image", "key", "label"]] * 4
    assert [ex["caption"] for ex in out] == [f"caption {i}".encode() for i in range(4)]
    assert [ex["key"] for ex in out] == [f"k{i}".encode() for i in range(4)]
    assert [ex["label"] for ex in out] == [0, 1, 2, 3]

    normalized = images_of(augment_records(source, 16, seed=1, normalize=True, mean=0.5, std=0.25))
    for ex, norm in zip(out, normalized):
        assert norm.dtype == np.float32
        np.testing.assert_allclose(norm, (ex["image"] / 255.0 - 0.5) / 0.25, atol=1e-6)

    evaluated = images_of(augment_records(source, 16, training=False))
    for image, ev in zip(images, evaluated):
        np.testing.assert_array_equal(ev, eval_resize(tf.constant(image), 16).numpy())


def test_bad_arguments_raise_clear_errors():
    image = tf.constant(grid_image(8, 8))
    with pytest.raises(ValueError, match="scale"):
        random_resized_crop(image, 8, scale=(0.5, 1.5))
    with pytest.raises(ValueError, match="ratio"):
        random_resized_crop(image, 8, ratio=(2.0, 1.0))
    with pytest.raises(ValueError, match="size"):
        random_resized_crop(image, 0)
    with pytest.raises(ValueError, match="uint8"):
        random_resized_crop(tf.cast(image, tf.float32), 8)
    with pytest.raises(ValueError, match="unbatched"):
        random_resized_crop(image[None], 8)
    with pytest.raises(ValueError, match="seed"):
        random_resized_crop(image, 8, seed=tf.constant([1, 2, 3]))
    with pytest.raises(ValueError, match="'image'"):
        augment_records(tf.data.Dataset.from_tensor_slices({"pixels": [1, 2]}), 8)
    with pytest.raises(ValueError, match="before .batch"):
        augment_records(records([grid_image(8, 8)]).batch(1), 8)
    with pytest.raises(ValueError, match="seed"):
        augment_records(records([grid_image(8, 8)]), 8, seed=-1)
    with pytest.raises(ValueError, match="std"):
        normalize(image, std=(0.0, 1.0, 1.0))
