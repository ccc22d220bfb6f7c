"""Settings that used to train to NaN, to a zero loss, or fail deep inside `fit`.

Each is refused when the model is built (or when `fit` gets the arrays),
with one line naming the setting and the fix.
"""

import json
import math

import numpy as np
import pytest

from keras_maeclip.models import CLIP, M3AE, MAE, MAECLIP, PretrainingTask
from tests.models.test_m3ae import make_m3ae
from tests.models.test_mae_clip import make as make_maeclip
from tests.tiny import make_clip


def test_a_tokenizer_bigger_than_the_text_tower_is_refused(preprocessor):
    size = preprocessor.tokenizer.vocabulary_size()
    with pytest.raises(ValueError, match=rf"tokenizer has {size} tokens but CLIP's text tower has "
                                         r"vocabulary_size=10.*Build the model with vocabulary_size"):
        make_clip(preprocessor, text_encoder=dict(hidden_dim=32, num_layers=1, num_heads=2, vocabulary_size=10))
    with pytest.raises(ValueError, match=rf"tokenizer has {size} tokens but M3AE's"):
        make_m3ae(preprocessor, encoder=dict(vocabulary_size=10))


def test_token_ids_beyond_the_vocabulary_are_refused_before_training():
    model = CLIP.from_preset("clip_tiny_gap", vocabulary_size=64)
    batch = {"images": np.zeros((2, 32, 32, 3), "float32"),
             "token_ids": np.full((2, 16), 64, "int32"), "padding_mask": np.ones((2, 16), "int32")}
    message = r"token_ids hold id 64, outside the text tower's vocabulary \[0, 64\); tokenize with"
    with pytest.raises(ValueError, match=message):
        model.fit(batch, epochs=1, verbose=0)  # JAX trained this to loss: nan
    with pytest.raises(ValueError, match=message):
        model(batch)
    batch["token_ids"][:] = 63
    model(batch)  # the last id is fine


def test_a_mask_ratio_that_masks_nothing_is_refused(preprocessor):
    with pytest.raises(ValueError, match=r"mask_ratio=0 masks no patch, so the image reconstruction loss is 0"):
        MAE.from_preset("mae_tiny", mask_ratio=0.0)
    with pytest.raises(ValueError, match=r"image_mask_ratio=0 masks no patch.*or set image_loss_weight=0"):
        make_m3ae(preprocessor, image_mask_ratio=0.0)
    # Without the pixel loss, masking nothing is a choice.
    assert make_m3ae(preprocessor, image_mask_ratio=0.0, image_loss_weight=0.0).image_mask_ratio == 0.0


@pytest.mark.parametrize("ratio", [1.5, -0.1])
def test_a_text_mask_ratio_outside_0_1_is_refused_when_built(preprocessor, ratio):
    with pytest.raises(ValueError, match=rf"text_mask_ratio={ratio} must be in \[0, 1\]; e.g. 0.15"):
        make_maeclip(preprocessor, text_mask_ratio=ratio)
    with pytest.raises(ValueError, match=rf"text_mask_ratio={ratio} must be in \[0, 1\]; e.g. 0.75"):
        make_m3ae(preprocessor, text_mask_ratio=ratio)


def test_an_initial_logit_scale_above_the_clamp_is_refused(preprocessor):
    with pytest.raises(ValueError, match=r"init_logit_scale=5.0 is above the clamp max_logit_scale=4.60.*Lower"):
        make_clip(preprocessor, init_logit_scale=5.0)
    assert make_clip(preprocessor, init_logit_scale=math.log(100.0)) is not None


def test_a_task_json_naming_the_wrong_layer_type_names_the_file(tmp_path):
    preset = tmp_path / "mae"
    MAE.from_preset("mae_tiny").save_to_preset(str(preset))
    saved = json.loads((preset / "task.json").read_text())
    dense = {"module": "keras.layers", "class_name": "Dense", "registered_name": None, "config": {"units": 3}}
    for part, message in (
        ("decoder", r"MAE's decoder must be a CrossModalDecoder; got a Dense"),
        ("backbone", r"MAE's backbone must be a ViTEncoder; got a Dense"),
    ):
        edited = json.loads(json.dumps(saved))
        edited["config"][part] = dense
        (preset / "task.json").write_text(json.dumps(edited))
        for loader in (MAE, PretrainingTask):
            with pytest.raises(ValueError, match=rf"{preset}/task.json: {message}.*save_to_preset"):
                loader.from_preset(str(preset))
    edited = json.loads(json.dumps(saved))
    edited["config"]["decoder"]["registered_name"] = "keras_maeclip>Nope"
    (preset / "task.json").write_text(json.dumps(edited))
    with pytest.raises(ValueError, match=r"task.json: MAE's decoder names 'keras_maeclip>Nope', which cannot"):
        MAE.from_preset(str(preset))


def test_a_wrong_part_passed_in_python_is_named(preprocessor):
    clip = make_clip(preprocessor)
    with pytest.raises(ValueError, match="MAECLIP's decoder must be a CrossModalDecoder; got a \w*Backbone"):
        MAECLIP(clip.backbone, clip.backbone)
