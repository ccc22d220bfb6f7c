"""Named architecture presets, resolved by this library's own classes.

These are architectures, not checkpoints: the library ships no pretrained
weights, so a named preset builds a randomly initialised model. Trained
models are saved with `save_to_preset(dir)` and reloaded from that
directory (or an `hf://` / `kaggle://` handle) with `from_preset(dir)`.

The names live here only: `CLIP.presets`, `MAECLIP.presets`, ... list them
(`named_presets` below) and each class's `from_preset` builds them. Nothing
is put into keras-hub's global preset registry, so keras-hub's own lookups
(`keras_hub.models.Backbone.from_preset(name)`) never see names without a
checkpoint behind them.
"""

import copy
import os

from keras_maeclip.models.clip_backbone import ImageTextBackbone
from keras_maeclip.models.cross_modal_decoder import CrossModalDecoder
from keras_maeclip.models.m3ae_backbone import M3AEBackbone
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


# MAE: an image tower and an image-only decoder (MAE's 512 wide × 8 blocks).
MAE_PRESETS = {
    "mae_vit_b16": {
        "metadata": {
            "description": "Paper-size MAE: ViT-B/16 (224²) encoder, decoder 512 wide × 8 blocks.",
            "path": "mae",
            "params": None,
        },
        "config": {"image_encoder": dict(_VIT_B16), "decoder": dict(hidden_dim=512, num_layers=8, num_heads=16)},
    },
    "mae_tiny": {
        "metadata": {
            "description": "Tiny MAE for CPU runs: the tiny image tower, decoder 64 wide × 2 blocks.",
            "path": "mae",
            "params": None,
        },
        "config": {"image_encoder": dict(_VIT_TINY), "decoder": dict(hidden_dim=64, num_layers=2, num_heads=4)},
    },
}

# MAE-CLIP: a CLIP backbone preset plus a cross-modal decoder.
_DECODER_PAPER = dict(hidden_dim=512, num_layers=8, num_heads=16)
_DECODER_TINY = dict(hidden_dim=64, num_layers=2, num_heads=4)
_DECODER_BENCH = dict(hidden_dim=256, num_layers=4, num_heads=8)


def _maeclip_preset(clip_name, decoder, description):
    return {
        "metadata": {"description": description, "path": "maeclip", "params": None},
        "config": {**copy.deepcopy(CLIP_PRESETS[clip_name]["config"]), "decoder": dict(decoder)},
    }


MAECLIP_PRESETS = {}
for _pooling in ("gap", "max", "map"):
    MAECLIP_PRESETS[f"maeclip_vit_b16_{_pooling}"] = _maeclip_preset(
        f"clip_vit_b16_{_pooling}", _DECODER_PAPER,
        f"Paper-size MAE-CLIP: clip_vit_b16_{_pooling} towers plus a "
        "cross-modal decoder 512 wide × 8 blocks.",
    )
    MAECLIP_PRESETS[f"maeclip_tiny_{_pooling}"] = _maeclip_preset(
        f"clip_tiny_{_pooling}", _DECODER_TINY,
        f"Tiny MAE-CLIP for CPU runs: clip_tiny_{_pooling} towers plus a "
        "cross-modal decoder 64 wide × 2 blocks.",
    )
MAECLIP_PRESETS["maeclip_bench_small"] = _maeclip_preset(
    "clip_bench_small", _DECODER_BENCH,
    "The benchmark workload with a cross-modal decoder 256 wide × 4 blocks.",
)

# M3AE: one shared encoder over image patches and text tokens, plus a
# cross-modal decoder (M3AE's 512 wide × 8 blocks).
M3AE_PRESETS = {
    "m3ae_vit_b16": {
        "metadata": {
            "description": "Paper-size M3AE: a shared ViT-B/16-sized encoder (224², patch 16, "
            "768 × 12 layers × 12 heads) over image patches and 64 tokens of a 30522 "
            "vocabulary, cross-modal decoder 512 wide × 8 blocks.",
            "path": "m3ae",
            "params": None,
        },
        "config": {
            "encoder": dict(_VIT_B16, vocabulary_size=30522, sequence_length=64),
            "decoder": dict(_DECODER_PAPER),
        },
    },
    "m3ae_tiny": {
        "metadata": {
            "description": "Tiny M3AE for CPU runs: 32² images, patch 4, 1000-token "
            "vocabulary, 16 tokens, shared encoder 96 × 3 layers × 4 heads, decoder "
            "64 wide × 2 blocks.",
            "path": "m3ae",
            "params": None,
        },
        "config": {
            "encoder": dict(_VIT_TINY, vocabulary_size=1000, sequence_length=16),
            "decoder": dict(_DECODER_TINY),
        },
    },
}

# Overrides that users pass flat and that belong to one tower.
_IMAGE_KEYS = ("image_size", "patch_size")
_TEXT_KEYS = ("vocabulary_size", "sequence_length")


def list_presets():
    """Names of the built-in architecture presets."""
    return (
        sorted(CLIP_PRESETS) + sorted(MAECLIP_PRESETS) + sorted(MAE_PRESETS)
        + sorted(M3AE_PRESETS)
    )


def preset_sizes(name):
    """`(image_size, sequence_length)` of a named preset; `None` length for MAE.

    Example:
    >>> preset_sizes("m3ae_tiny")
    (32, 16)
    """
    for registry, image_key, text_key in (
        (CLIP_PRESETS, "image_encoder", "text_encoder"),
        (MAECLIP_PRESETS, "image_encoder", "text_encoder"),
        (M3AE_PRESETS, "encoder", "encoder"),
        (MAE_PRESETS, "image_encoder", None),
    ):
        if name in registry:
            config = registry[name]["config"]
            length = config[text_key]["sequence_length"] if text_key else None
            return config[image_key]["image_size"], length
    _unknown(name)


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
    if name in MAECLIP_PRESETS:
        raise ValueError(f"{name!r} is an MAE-CLIP preset; load it with MAECLIP.from_preset.")
    if name in M3AE_PRESETS:
        raise ValueError(f"{name!r} is an M3AE preset; load it with M3AE.from_preset.")
    if name not in CLIP_PRESETS:
        _unknown(name)
    return _apply_overrides(copy.deepcopy(CLIP_PRESETS[name]["config"]), overrides)


def _apply_overrides(config, overrides):
    """Route flat and per-tower overrides into a CLIP backbone config."""
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
    if name in M3AE_PRESETS:
        raise ValueError(f"{name!r} is an M3AE preset; load it with M3AE.from_preset.")
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
    """A randomly initialised `ImageTextBackbone` from a named preset."""
    config = preset_config(name, **overrides)
    return _clip_backbone_from_config(config, config.pop("dtype", None))


def _clip_backbone_from_config(config, dtype):
    return ImageTextBackbone(
        image_encoder=ViTEncoder(**config.pop("image_encoder"), dtype=dtype, name="image_encoder"),
        text_encoder=TextEncoder(**config.pop("text_encoder"), dtype=dtype, name="text_encoder"),
        dtype=dtype,
        **config,
    )


def build_maeclip_parts(name, **overrides):
    """A randomly initialised `(ImageTextBackbone, CrossModalDecoder)` of a named MAE-CLIP preset.

    Args:
        name: a name from `MAECLIP_PRESETS`.
        **overrides: as `preset_config` (tower sizes, pooling, `dtype`), plus
            `decoder={...}` for decoder arguments.
    """
    if name not in MAECLIP_PRESETS:
        if name in M3AE_PRESETS:
            raise ValueError(f"{name!r} is an M3AE preset; load it with M3AE.from_preset.")
        if name in CLIP_PRESETS or name in MAE_PRESETS:
            raise ValueError(
                f"{name!r} has no cross-modal decoder; use an maeclip_* preset "
                f"({', '.join(sorted(MAECLIP_PRESETS))})."
            )
        _unknown(name)
    config = copy.deepcopy(MAECLIP_PRESETS[name]["config"])
    decoder_config = config.pop("decoder")
    decoder_config.update(overrides.pop("decoder", {}))
    config = _apply_overrides(config, overrides)
    dtype = config.pop("dtype", None)
    backbone = _clip_backbone_from_config(config, dtype)
    image, text = backbone.image_encoder, backbone.text_encoder
    decoder = CrossModalDecoder(
        num_patches=image.num_patches, patch_size=image.patch_size,
        num_channels=image.num_channels, vocabulary_size=text.vocabulary_size,
        sequence_length=text.sequence_length, dtype=dtype, name="decoder", **decoder_config,
    )
    return backbone, decoder


# Overrides of an M3AE preset that users pass flat; all go to the shared encoder.
_M3AE_ENCODER_KEYS = _IMAGE_KEYS + _TEXT_KEYS


def _m3ae_config(name, overrides):
    """`(encoder_config, decoder_config, dtype)` of a named M3AE preset."""
    if name not in M3AE_PRESETS:
        if name in CLIP_PRESETS:
            raise ValueError(f"{name!r} is a CLIP preset; load it with CLIP.from_preset.")
        if name in MAE_PRESETS:
            raise ValueError(f"{name!r} is an MAE preset; load it with MAE.from_preset.")
        if name in MAECLIP_PRESETS:
            raise ValueError(f"{name!r} is an MAE-CLIP preset; load it with MAECLIP.from_preset.")
        _unknown(name)
    overrides = dict(overrides)
    config = copy.deepcopy(M3AE_PRESETS[name]["config"])
    encoder, decoder = config["encoder"], config["decoder"]
    encoder.update(overrides.pop("encoder", {}) or {})
    decoder.update(overrides.pop("decoder", {}) or {})
    for key in _M3AE_ENCODER_KEYS:
        if key in overrides:
            encoder[key] = overrides.pop(key)
    dtype = overrides.pop("dtype", None)
    if overrides:
        raise ValueError(
            f"Unknown overrides for {name!r}: {sorted(overrides)}. Use "
            f"{', '.join(_M3AE_ENCODER_KEYS)}, dtype, encoder={{...}} or decoder={{...}}."
        )
    return encoder, decoder, dtype


def build_m3ae_parts(name, **overrides):
    """A randomly initialised `(M3AEBackbone, CrossModalDecoder)` of a named M3AE preset.

    Args:
        name: a name from `M3AE_PRESETS`.
        **overrides: `image_size`, `patch_size`, `vocabulary_size`,
            `sequence_length`, `dtype`, or `encoder={...}` / `decoder={...}`
            for any argument of `M3AEBackbone` / `CrossModalDecoder`.

    Example:
    >>> backbone, decoder = build_m3ae_parts("m3ae_tiny", vocabulary_size=64)
    >>> backbone.vocabulary_size, decoder.vocabulary_size
    (64, 64)
    """
    encoder_config, decoder_config, dtype = _m3ae_config(name, overrides)
    backbone = M3AEBackbone(**encoder_config, dtype=dtype, name="m3ae_backbone")
    decoder = CrossModalDecoder(
        num_patches=backbone.num_patches, patch_size=backbone.patch_size,
        num_channels=backbone.num_channels, vocabulary_size=backbone.vocabulary_size,
        sequence_length=backbone.sequence_length, dtype=dtype, name="decoder",
        **decoder_config,
    )
    return backbone, decoder
