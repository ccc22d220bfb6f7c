"""Encoders, pretraining models, preprocessing and presets."""

from keras_maeclip.models.clip import CLIP
from keras_maeclip.models.clip_backbone import CLIPBackbone, ImageTextBackbone
from keras_maeclip.models.convert_mae import load_mae_weights, read_torch_state_dict, vit_encoder_from_mae
from keras_maeclip.models.convert_open_clip import image_tower_from_open_clip, load_open_clip_projection
from keras_maeclip.models.convert_timm import load_timm_weights, vit_encoder_from_timm
from keras_maeclip.models.cross_modal_decoder import CrossModalDecoder
from keras_maeclip.models.hub_towers import HubBertTower, HubViTTower
from keras_maeclip.models.m3ae import M3AE
from keras_maeclip.models.m3ae_backbone import M3AEBackbone
from keras_maeclip.models.mae import MAE
from keras_maeclip.models.mae_clip import MAECLIP
from keras_maeclip.models.preprocessor import (
    CLIPPreprocessor,
    ImageTextPreprocessor,
    image_converter,
)
from keras_maeclip.models.presets import list_presets, preset_config, preset_sizes
from keras_maeclip.models.pretraining_task import PretrainingTask, default_optimizer
from keras_maeclip.models.resolution import with_image_size
from keras_maeclip.models.text_encoder import TextEncoder
from keras_maeclip.models.preprocessor import (
    SPECIAL_TOKENS,
    caption_tokenizer,
    learn_vocabulary,
)
from keras_maeclip.models.vit_encoder import ViTEncoder

__all__ = [
    "CLIP",
    "CLIPBackbone",  # old name of ImageTextBackbone
    "CLIPPreprocessor",  # old name of ImageTextPreprocessor
    "ImageTextBackbone",
    "ImageTextPreprocessor",
    "CrossModalDecoder",
    "HubBertTower",
    "HubViTTower",
    "M3AE",
    "M3AEBackbone",
    "MAE",
    "MAECLIP",
    "PretrainingTask",
    "SPECIAL_TOKENS",
    "TextEncoder",
    "ViTEncoder",
    "caption_tokenizer",
    "default_optimizer",
    "image_converter",
    "image_tower_from_open_clip",
    "learn_vocabulary",
    "list_presets",
    "load_mae_weights",
    "load_open_clip_projection",
    "load_timm_weights",
    "preset_config",
    "preset_sizes",
    "read_torch_state_dict",
    "vit_encoder_from_mae",
    "vit_encoder_from_timm",
    "with_image_size",
]
