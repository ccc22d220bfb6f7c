"""Small models and data shared by the model and evaluation tests."""

import numpy as np

from keras_maeclip.models import CLIP

CAPTIONS = [
    "a red circle on the left",
    "a blue square at the top",
    "a green triangle in the center",
    "a yellow cross at the bottom right",
    "two shapes: a purple circle and an orange square",
    "a large red square",
    "a small blue circle",
    "a green cross on the right",
]
# Tower sizes small enough for a fast suite; the preset supplies the rest.
TINY = dict(
    image_size=16,
    image_encoder=dict(patch_size=4, hidden_dim=32, num_layers=1, num_heads=2),
    text_encoder=dict(hidden_dim=32, num_layers=1, num_heads=2),
    embedding_dim=16,
)


def make_clip(preprocessor, preset="clip_tiny_gap", **kwargs):
    return CLIP.from_preset(preset, preprocessor=preprocessor, **{**TINY, **kwargs})


def raw_batch(n=8, seed=0, size=16):
    rng = np.random.default_rng(seed)
    return {
        "images": rng.integers(0, 256, (n, size, size, 3)).astype("uint8"),
        "captions": np.array([CAPTIONS[i % len(CAPTIONS)] for i in range(n)]),
    }


def synthetic_batch(n=16, seed=0, size=16):
    """Raw `{"images", "captions"}` of `n` synthetic scenes (learnable pixels)."""
    from keras_maeclip.data import synthetic

    data = synthetic.synthetic_dataset(n, seed=seed, image_size=size).batch(n)
    batch = next(data.as_numpy_iterator())
    return {"images": batch["image"], "captions": batch["caption"]}
