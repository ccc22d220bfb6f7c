"""Run as `python -m tests.models.cross_backend_worker OUT_DIR` under some
KERAS_BACKEND: builds the test CLIP, saves its weights, a preset and its
outputs on a fixed batch, for another backend to load and compare."""

import os
import sys

import keras
import numpy as np

from keras_maeclip.models import ImageTextPreprocessor, caption_tokenizer, image_converter, learn_vocabulary
from tests.tiny import CAPTIONS, make_clip, raw_batch


def main(out_dir):
    keras.utils.set_random_seed(7)
    preprocessor = ImageTextPreprocessor(
        caption_tokenizer(learn_vocabulary(CAPTIONS, 200)), image_converter(16), sequence_length=12
    )
    model = make_clip(preprocessor, preset="clip_tiny_map")
    inputs = preprocessor(raw_batch(4, seed=3))
    outputs = model(inputs)
    model.save_weights(os.path.join(out_dir, "model.weights.h5"))
    model.save_to_preset(os.path.join(out_dir, "preset"))
    np.savez(
        os.path.join(out_dir, "outputs.npz"),
        **{k: keras.ops.convert_to_numpy(v) for k, v in outputs.items()},
        backend=keras.config.backend(),
    )


if __name__ == "__main__":
    main(sys.argv[1])
