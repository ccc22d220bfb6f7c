"""Large images are bounded in memory: 16-bit PNG converts without int64, and the default max_pixels."""

import io
import tracemalloc

import numpy as np
from PIL import Image

from keras_maeclip.data import decoding


def _encode(image):
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_sixteen_bit_png_converts_in_a_few_bytes_a_pixel():
    side = 1024
    values = np.random.default_rng(0).integers(0, 65536, (side, side), dtype=np.uint16)
    data = _encode(Image.fromarray(values))
    tracemalloc.start()
    try:
        pixels, caption, reason, _ = decoding.decode_record(data, b"a depth map")
        _, peak = tracemalloc.get_traced_memory()  # NumPy and Python allocations (PIL's own buffer not included)
    finally:
        tracemalloc.stop()
    assert reason is None and caption == "a depth map"
    np.testing.assert_array_equal(pixels, np.repeat((values >> 8).astype(np.uint8)[..., None], 3, axis=-1))
    # The result is 3 bytes a pixel and PIL's bytes 2 more; the int64 path peaked above 20.
    assert peak < 8 * side * side, peak


def test_thirty_two_bit_gray_is_clipped_then_scaled():
    values = np.array([[-5, 0, 255, 256], [65535, 65536, 2**31 - 1, 40000]], np.int32)
    pixels = decoding._to_rgb(Image.fromarray(values, mode="I"))
    expected = (np.clip(values, 0, 65535) >> 8).astype(np.uint8)
    np.testing.assert_array_equal(pixels, np.repeat(expected[..., None], 3, axis=-1))


def test_default_max_pixels_refuses_images_over_4096_squared_from_the_header():
    assert decoding.DEFAULT_MAX_PIXELS == 4096 * 4096
    big = _encode(Image.new("1", (4097, 4096)))  # 1-bit: cheap to write, 16.8 M pixels
    _, _, reason, detail = decoding.decode_record(big, b"a huge blank")
    assert reason == "image_too_large" and "4097x4096" in detail
    pixels, _, reason, _ = decoding.decode_record(big, b"a huge blank", max_pixels=4097 * 4096)
    assert reason is None and pixels.shape == (4096, 4097, 3)
