"""Write preset directories with the code of commit 1e6afde (before renames).

Run once with that commit's package on the path, e.g.
`PYTHONPATH=/path/to/old/checkout KERAS_BACKEND=jax python
tests/models/legacy_presets/make_legacy_presets.py`. It saves, under this
folder, a `CLIP` task (with its `CLIPPreprocessor`), an `MAECLIP` task and a
`ViTEncoder`, all tiny, plus `expected.npz`: their outputs on fixed inputs,
computed by the old code. `tests/models/test_legacy_presets.py` loads them
with today's code and compares.
"""

import os

import keras
import numpy as np

from keras_maeclip.models import (
    CLIP, MAECLIP, CLIPPreprocessor, ViTEncoder, caption_tokenizer, image_converter,
    learn_vocabulary,
)

HERE = os.path.dirname(os.path.abspath(__file__))
CAPTIONS = ["a red circle on the left", "a blue square at the top", "a green cross"]
SMALL = dict(
    image_size=16,
    image_encoder=dict(patch_size=4, hidden_dim=16, num_layers=1, num_heads=2),
    text_encoder=dict(hidden_dim=16, num_layers=1, num_heads=2),
    embedding_dim=8,
)


def inputs():
    rng = np.random.default_rng(0)
    return {
        "images": rng.normal(size=(2, 16, 16, 3)).astype("float32"),
        "token_ids": rng.integers(5, 40, (2, 8)).astype("int32"),
        "padding_mask": np.array([[1] * 8, [1] * 5 + [0] * 3], "int32"),
    }


def main():
    keras.utils.set_random_seed(7)
    vocabulary = learn_vocabulary(CAPTIONS, 40)
    pre = CLIPPreprocessor(caption_tokenizer(vocabulary), image_converter(16), sequence_length=8)
    clip = CLIP.from_preset("clip_tiny_gap", preprocessor=pre, **SMALL)
    clip.save_to_preset(os.path.join(HERE, "clip"))
    maeclip = MAECLIP.from_preset(
        "maeclip_tiny_max", vocabulary_size=len(vocabulary), sequence_length=8,
        decoder=dict(hidden_dim=16, num_layers=1, num_heads=2), **SMALL,
    )
    maeclip.save_to_preset(os.path.join(HERE, "maeclip"))
    vit = ViTEncoder(image_size=16, patch_size=4, hidden_dim=16, num_layers=1, num_heads=2)
    vit.save_to_preset(os.path.join(HERE, "vit"))
    x = inputs()
    clip_out = clip.backbone(x)
    maeclip_out = maeclip.backbone(x)
    np.savez(
        os.path.join(HERE, "expected.npz"),
        clip_image=keras.ops.convert_to_numpy(clip_out["image_embeddings"]),
        clip_text=keras.ops.convert_to_numpy(clip_out["text_embeddings"]),
        maeclip_image=keras.ops.convert_to_numpy(maeclip_out["image_embeddings"]),
        vit_tokens=keras.ops.convert_to_numpy(vit(x["images"])),
        **{f"input_{k}": v for k, v in x.items()},
    )


if __name__ == "__main__":
    main()
