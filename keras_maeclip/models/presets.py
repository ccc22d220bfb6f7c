"""Named architecture presets, registered with keras-hub's preset registry.

These are architectures, not checkpoints: the library ships no pretrained
weights, so a named preset builds a randomly initialised model. Trained
models are saved with `save_to_preset(dir)` and reloaded from that
directory with `from_preset(dir)`.
"""

import copy
import os

from keras_hub.src.utils.preset_utils import register_presets

from keras_maeclip.models.clip_backbone import CLIPBackbone
from keras_maeclip.models.cross_modal_decoder import CrossModalDecoder
from keras_maeclip.models.text_encoder import TextEncoder
from keras_maeclip.models.vit_encoder import ViTEncoder

# ViT-B/16 image tower at 224², as the paper's default image encoder.
_VIT_B16 = dict(image_size=224, patch_size=16, hidden_dim=768, num_layers=12, num_heads=12)
# BERT-base-like text tower (512 wide, 12 layers), BERT's WordPiece size.
_TEXT_BASE = dict(
    vocabulary_size=30522, sequence_length=64, hidden_dim=512, num_layers=12, num_heads=8
)
# Tiny towers that train on a 2-core CPU in minutes (synthetic set, 32²).
_VIT_TINY = dict(image_size=32, patch_size=4, hidden_dim=96, num_layers=3, num_heads=4)
_TEXT_TINY = dict(
    vocabulary_size=1000, sequence_length=16, hidden_dim=96, num_layers=2, num_heads=4
)
# The foundation benchmark's "bench-small" workload.
_VIT_BENCH = dict(image_size=128, patch_size=16, hidden_dim=384, num_layers=6, num_heads=6)
_TEXT_BENCH = dict(
    vocabulary_size=30522, sequence_length=32, hidden_dim=256, num_layers=6, num_heads=4
)


def _preset(description, image, text, embedding_dim, pooling):
    return {
        "metadata": {"description": description, "path": "clip", "params": None},
        "kaggle_handle": None,
        "config": {
            "image_encoder": dict(image),
            "text_encoder": dict(text),
            "embedding_dim": embedding_dim,
            "image_pooling": pooling,
            "text_pooling": pooling,
        },
    }


CLIP_PRESETS = {}
for _pooling in ("gap", "max", "map"):
    CLIP_PRESETS[f"clip_vit_b16_{_pooling}"] = _preset(
        f"Paper-size CLIP: ViT-B/16 (224²) and a 512-wide 12-layer text "
        f"tower, embed 512, {_pooling.upper()} pooling.",
        _VIT_B16, _TEXT_BASE, 512, _pooling,
    )
    CLIP_PRESETS[f"clip_tiny_{_pooling}"] = _preset(
        f"Tiny CLIP for CPU runs on the synthetic set: 32² images, patch 4, "
        f"96-wide towers (3 image, 2 text layers), embed 96, "
        f"{_pooling.upper()} pooling.",
        _VIT_TINY, _TEXT_TINY, 96, _pooling,
    )
CLIP_PRESETS["clip_bench_small"] = _preset(
    "The benchmark workload: 128² images, patch 16, vision 384×6×6, text "
    "30522 vocab × 32 tokens, 256×6×4, embed 256, GAP pooling.",
    _VIT_BENCH, _TEXT_BENCH, 256, "gap",
)

register_presets(CLIP_PRESETS, CLIPBackbone)

# MAE: an image tower and an image-only decoder (MAE's 512 wide × 8 blocks).
MAE_PRESETS = {
    "mae_vit_b16": {
        "metadata": {
            "description": "Paper-size MAE: ViT-B/16 (224²) encoder, decoder 512 wide × 8 blocks.",
            "path": "mae",
            "params": None,
        },
        "kaggle_handle": None,
        "config": {"image_encoder": dict(_VIT_B16), "decoder": dict(hidden_dim=512, num_layers=8, num_heads=16)},
    },
    "mae_tiny": {
        "metadata": {
            "description": "Tiny MAE for CPU runs: the tiny image tower, decoder 64 wide × 2 blocks.",
            "path": "mae",
            "params": None,
        },
        "kaggle_handle": None,
        "config": {"image_encoder": dict(_VIT_TINY), "decoder": dict(hidden_dim=64, num_layers=2, num_heads=4)},
    },
}
register_presets(MAE_PRESETS, ViTEncoder)

# Overrides that users pass flat and that belong to one tower.
_IMAGE_KEYS = ("image_size", "patch_size")
_TEXT_KEYS = ("vocabulary_size", "sequence_length")


def list_presets():
    """Names of the built-in architecture presets."""
    return sorted(CLIP_PRESETS) + sorted(MAE_PRESETS)


def is_directory_preset(preset):
    """True for a saved preset directory or a `scheme://` handle."""
    return isinstance(preset, (str, os.PathLike)) and (
        os.path.isdir(preset) or "://" in str(preset)
    )


def preset_config(name, **overrides):
    """The CLIP backbone config of a named preset, with overrides applied.

    Args:
        name: a preset name from `list_presets()`.
        **overrides: `embedding_dim`, `image_pooling`, `text_pooling`;
            `image_size`, `patch_size` (image tower); `vocabulary_size`,
            `sequence_length` (text tower); or `image_encoder={...}` /
            `text_encoder={...}` for any tower argument.

    Example:
    >>> preset_config("clip_tiny_max", vocabulary_size=64)["image_pooling"]
    'max'
    """
    if name in MAE_PRESETS:
        raise ValueError(f"{name!r} is an MAE preset; load it with MAE.from_preset.")
    if name not in CLIP_PRESETS:
        _unknown(name)
    config = copy.deepcopy(CLIP_PRESETS[name]["config"])
    config["image_encoder"].update(overrides.pop("image_encoder", {}))
    config["text_encoder"].update(overrides.pop("text_encoder", {}))
    for key in _IMAGE_KEYS:
        if key in overrides:
            config["image_encoder"][key] = overrides.pop(key)
    for key in _TEXT_KEYS:
        if key in overrides:
            config["text_encoder"][key] = overrides.pop(key)
    config.update(overrides)
    return config


def _unknown(name):
    raise ValueError(
        f"Unknown preset {name!r}. Available presets: "
        f"{', '.join(list_presets())}; or pass a directory written by "
        "save_to_preset()."
    )


def build_mae_parts(name, **overrides):
    """A randomly initialised `(ViTEncoder, CrossModalDecoder)` of a named MAE preset.

    Args:
        name: a name from `MAE_PRESETS`.
        **overrides: `image_size`, `patch_size`, `dtype`, or
            `image_encoder={...}` / `decoder={...}` for any argument.
    """
    if name in CLIP_PRESETS:
        raise ValueError(f"{name!r} is a CLIP preset; load it with CLIP.from_preset.")
    if name not in MAE_PRESETS:
        _unknown(name)
    config = copy.deepcopy(MAE_PRESETS[name]["config"])
    image = config["image_encoder"]
    image.update(overrides.pop("image_encoder", {}))
    config["decoder"].update(overrides.pop("decoder", {}))
    for key in _IMAGE_KEYS:
        if key in overrides:
            image[key] = overrides.pop(key)
    dtype = overrides.pop("dtype", None)
    if overrides:
        raise ValueError(f"Unknown overrides for {name!r}: {sorted(overrides)}.")
    encoder = ViTEncoder(**image, dtype=dtype, name="image_encoder")
    decoder = CrossModalDecoder(
        num_patches=encoder.num_patches, patch_size=encoder.patch_size,
        num_channels=encoder.num_channels, dtype=dtype, name="decoder", **config["decoder"],
    )
    return encoder, decoder


def build_clip_backbone(name, **overrides):
    """A randomly initialised `CLIPBackbone` from a named preset."""
    config = preset_config(name, **overrides)
    dtype = config.pop("dtype", None)
    return CLIPBackbone(
        image_encoder=ViTEncoder(**config.pop("image_encoder"), dtype=dtype, name="image_encoder"),
        text_encoder=TextEncoder(**config.pop("text_encoder"), dtype=dtype, name="text_encoder"),
        dtype=dtype,
        **config,
    )
