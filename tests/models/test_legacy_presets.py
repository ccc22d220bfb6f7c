"""Presets saved before the renames (commit 1e6afde) load with today's code.

The directories under `legacy_presets/` were written by
`legacy_presets/make_legacy_presets.py` running the old code; `expected.npz`
holds the outputs the old code computed. Loading must give the renamed
classes and the same outputs.
"""

import os

import keras
import keras_hub
import numpy as np
import pytest

from keras_maeclip.models import (
    CLIP, MAECLIP, ImageTextBackbone, ImageTextPreprocessor, PretrainingTask, ViTEncoder,
)

HERE = os.path.join(os.path.dirname(__file__), "legacy_presets")


def _expected():
    return np.load(os.path.join(HERE, "expected.npz"))


def _inputs(expected):
    return {k: expected[f"input_{k}"] for k in ("images", "token_ids", "padding_mask")}


def test_old_clip_preset_loads_as_renamed_classes_with_same_outputs():
    expected = _expected()
    model = CLIP.from_preset(os.path.join(HERE, "clip"))
    assert type(model.backbone) is ImageTextBackbone
    assert type(model.preprocessor) is ImageTextPreprocessor
    out = model.backbone(_inputs(expected))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out["image_embeddings"]),
                               expected["clip_image"], atol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out["text_embeddings"]),
                               expected["clip_text"], atol=1e-5)
    # The preprocessor still tokenizes with the saved vocabulary.
    batch = model.preprocessor({"captions": ["a red circle"]})
    assert batch["token_ids"].shape == (1, 8)


def test_old_maeclip_and_vit_presets_load():
    expected = _expected()
    model = PretrainingTask.from_preset(os.path.join(HERE, "maeclip"))
    assert type(model) is MAECLIP and type(model.backbone) is ImageTextBackbone
    out = model.backbone(_inputs(expected))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out["image_embeddings"]),
                               expected["maeclip_image"], atol=1e-5)
    vit = keras_hub.models.Backbone.from_preset(os.path.join(HERE, "vit"))
    assert type(vit) is ViTEncoder
    np.testing.assert_allclose(keras.ops.convert_to_numpy(vit(expected["input_images"])),
                               expected["vit_tokens"], atol=1e-5)


def test_old_names_are_aliases():
    from keras_maeclip.models import CLIPBackbone, CLIPPreprocessor

    assert CLIPBackbone is ImageTextBackbone and CLIPPreprocessor is ImageTextPreprocessor
    assert keras.saving.get_registered_name(ImageTextBackbone) == "keras_maeclip>ImageTextBackbone"


def test_keras_hub_clip_backbone_refuses_our_preset_naming_both_classes():
    with pytest.raises(ValueError, match="ImageTextBackbone.*CLIPBackbone"):
        keras_hub.models.CLIPBackbone.from_preset(os.path.join(HERE, "clip"))
