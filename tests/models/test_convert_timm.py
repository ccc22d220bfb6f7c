"""timm ViT checkpoints (learned positions) → `ViTEncoder`, against a NumPy timm forward.

Reference: `tests/models/timm_reference.py` (timm's forward written in
NumPy, float64). Resolution changes are checked against
`torch.nn.functional.interpolate(mode="bicubic")`, the resampling timm
itself uses. Tolerance: 1e-4 absolute and relative on float32 outputs of
order 1.
"""

import keras
import numpy as np
import pytest

from keras_maeclip.models import ViTEncoder, load_mae_weights, load_timm_weights, vit_encoder_from_timm
from keras_maeclip.models.convert_timm import read_torch_state_dict
from tests.models.timm_reference import gelu, numpy_open_clip_image, numpy_vit, quick_gelu, random_vit_state

WIDTH, HEADS, LAYERS, PATCH, SIZE, CHANNELS = 32, 2, 2, 4, 16, 3


def state(**kwargs):
    return random_vit_state(WIDTH, HEADS, LAYERS, PATCH, SIZE, CHANNELS, **kwargs)


def images(size=SIZE, n=2, seed=1):
    return np.random.default_rng(seed).normal(size=(n, size, size, CHANNELS)).astype("float32")


@pytest.mark.parametrize("variant", [
    dict(),  # timm's default: class token with a position
    dict(class_position=False),  # no_embed_class: the class token has no position
    dict(class_token=False),  # class_token=False (e.g. global-pool models' trunks)
    dict(pre_norm=True),  # CLIP-style timm ViTs: norm_pre, no patch bias, QuickGELU, epsilon 1e-5
])
def test_converted_vit_computes_timms_forward(variant):
    weights = state(**variant)
    clip_style = variant.get("pre_norm", False)
    if clip_style:
        del weights["patch_embed.proj.bias"]  # as in timm's vit_*_clip_* (bias-free patch conv)
    options = dict(activation="quick_gelu", layer_norm_epsilon=1e-5) if clip_style else {}
    encoder = vit_encoder_from_timm(weights, num_heads=HEADS, **options)
    assert encoder.position_embedding == "learned" and encoder.use_pre_norm == clip_style
    assert encoder.use_class_token == variant.get("class_token", True)
    x = images()
    ours = keras.ops.convert_to_numpy(encoder(x))
    reference = numpy_vit(weights, x, PATCH, HEADS, **(dict(act=quick_gelu, eps=1e-5) if clip_style else {}))
    np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-4)
    if clip_style:  # the options matter: exact GELU is measurably off
        plain = keras.ops.convert_to_numpy(vit_encoder_from_timm(weights, num_heads=HEADS)(x))
        assert np.abs(plain - reference).max() > 1e-2


def torch_resampled(table, new_grid, lead):
    import torch

    rows = table[0, lead:]
    grid = int(round(rows.shape[0] ** 0.5))
    t = torch.from_numpy(rows.reshape(1, grid, grid, -1)).permute(0, 3, 1, 2).double()
    t = torch.nn.functional.interpolate(t, size=(new_grid, new_grid), mode="bicubic", align_corners=False)
    resized = t.permute(0, 2, 3, 1).reshape(1, new_grid * new_grid, -1).numpy()
    return np.concatenate([table[:, :lead], resized], axis=1).astype("float32")


def test_checkpoint_file_at_another_resolution_and_through_a_preset(tmp_path):
    import torch

    weights = dict(state(seed=3), **{"head.weight": np.zeros((10, WIDTH), "float32"),
                                     "head.bias": np.zeros(10, "float32")})
    path = tmp_path / "vit_tiny_patch4.bin"
    torch.save({k: torch.from_numpy(v) for k, v in weights.items()}, path)  # a bare state dict
    read = read_torch_state_dict(str(path))
    # 24²: a 6×6 grid, the patch positions resampled as timm does, the class position kept.
    encoder = vit_encoder_from_timm(read, image_size=24, num_heads=HEADS)
    assert encoder.num_patches == 36
    expected_state = dict(weights, pos_embed=torch_resampled(weights["pos_embed"], 6, lead=1))
    x = images(24)
    expected = numpy_vit(expected_state, x, PATCH, HEADS)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(encoder(x)), expected, rtol=1e-4, atol=1e-4)
    # Saved with learned positions, loaded back at the native size and moved to 24² again.
    native = vit_encoder_from_timm(read, num_heads=HEADS)
    native.save_to_preset(str(tmp_path / "preset"))
    again = ViTEncoder.from_preset(str(tmp_path / "preset"), image_size=24)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(again(x)), expected, rtol=1e-4, atol=1e-4)


def test_the_head_is_reported_and_what_the_encoder_cannot_compute_is_refused():
    weights = dict(state(), **{"head.weight": np.zeros((10, WIDTH), "float32")})
    encoder = vit_encoder_from_timm(weights, num_heads=HEADS)
    report = load_timm_weights(encoder, weights)
    assert report["ignored"] == ["head.weight"] and "pos_embed" in report["loaded"]
    for extra in ("fc_norm.weight", "reg_token", "blocks.0.ls1.gamma"):
        with pytest.raises(ValueError, match=f"cannot compute.*{extra}"):
            load_timm_weights(encoder, dict(weights, **{extra: np.ones(WIDTH, "float32")}))
    with pytest.raises(ValueError, match="pass num_heads"):
        vit_encoder_from_timm(weights)  # width 32 is not one of timm's sizes
    fixed = ViTEncoder(image_size=SIZE, patch_size=PATCH, hidden_dim=WIDTH, num_layers=LAYERS,
                       num_heads=HEADS, use_class_token=True)
    with pytest.raises(ValueError, match="position_embedding='learned'"):
        load_timm_weights(fixed, weights)
    with pytest.raises(ValueError, match="vit_encoder_from_timm loads those"):
        load_mae_weights(fixed, weights)  # learned positions are not MAE's fixed table
    with pytest.raises(ValueError, match="grid is 6²"):
        load_timm_weights(ViTEncoder(image_size=24, patch_size=PATCH, hidden_dim=WIDTH, num_layers=LAYERS,
                                     num_heads=HEADS, use_class_token=True, position_embedding="learned"),
                          weights)


def test_learned_position_tower_trains_in_maeclip_and_changes_resolution(preprocessor, tmp_path):
    from keras_maeclip.models import MAECLIP
    from keras_maeclip.models.resolution import resample_positions
    from tests.tiny import TINY, raw_batch

    tower = dict(TINY["image_encoder"], position_embedding="learned", use_class_token=True)
    model = MAECLIP.from_preset("maeclip_tiny_gap", preprocessor=preprocessor,
                                **dict(TINY, image_encoder=tower), seed=0)
    encoder = model.backbone.image_encoder
    # Positions before masking: every kept token carries its own patch's row.
    x = preprocessor(raw_batch(2))["images"]
    tokens = keras.ops.convert_to_numpy(encoder.embed_patches(x) - encoder.patch_embedding(x))
    table = keras.ops.convert_to_numpy(encoder.position_encoding.weights[0])
    np.testing.assert_allclose(tokens, np.broadcast_to(table, tokens.shape), atol=1e-6)
    history = model.fit(raw_batch(8), epochs=1, batch_size=8, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    trained = keras.ops.convert_to_numpy(encoder.position_encoding.weights[0])
    assert np.abs(trained - table).max() > 0  # the table trains
    model.save_to_preset(str(tmp_path))
    bigger = MAECLIP.from_preset(str(tmp_path), image_size=24)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(bigger.backbone.image_encoder.position_encoding.weights[0]),
        resample_positions(trained, 6), atol=1e-6)
    assert bigger.decoder.num_patches == 36


# timm layout → open_clip's names, written here from open_clip's VisionTransformer
# (independent of the library's mapping, which goes the other way).
_TO_OPEN_CLIP = (("norm1.", "ln_1."), ("norm2.", "ln_2."), ("attn.qkv.weight", "attn.in_proj_weight"),
                 ("attn.qkv.bias", "attn.in_proj_bias"), ("attn.proj.", "attn.out_proj."),
                 ("mlp.fc1.", "mlp.c_fc."), ("mlp.fc2.", "mlp.c_proj."))


def random_open_clip_visual(seed=0, embed=24):
    """A random open_clip `VisionTransformer` state dict in open_clip's own names."""
    timm = state(seed=seed, pre_norm=True)
    visual = {"conv1.weight": timm.pop("patch_embed.proj.weight"),  # open_clip's conv has no bias
              "class_embedding": timm.pop("cls_token").reshape(-1),
              "positional_embedding": timm.pop("pos_embed")[0],
              "proj": np.random.default_rng(seed + 1).normal(size=(WIDTH, embed)).astype("float32")}
    del timm["patch_embed.proj.bias"]
    top = {"norm_pre.": "ln_pre.", "norm.": "ln_post."}
    for name, value in timm.items():
        if name.startswith("blocks."):
            _, i, rest = name.split(".", 2)
            rest = next((new + rest[len(old):] for old, new in _TO_OPEN_CLIP if rest.startswith(old)), rest)
            visual[f"transformer.resblocks.{i}.{rest}"] = value
        else:
            prefix = next(p for p in top if name.startswith(p))
            visual[top[prefix] + name[len(prefix):]] = value
    return visual


@pytest.mark.parametrize("quick", [True, False])
def test_open_clip_image_tower_gives_open_clips_image_embeddings(quick):
    from keras_maeclip.models import (ImageTextBackbone, TextEncoder, image_tower_from_open_clip,
                                      load_open_clip_projection)

    visual = random_open_clip_visual()
    # A whole CLIP state dict: the visual tower is taken, the text side left.
    whole = {f"visual.{k}": v for k, v in visual.items()}
    whole.update({"token_embedding.weight": np.zeros((10, 8), "float32"), "logit_scale": np.zeros((), "float32")})
    encoder, projection = image_tower_from_open_clip(whole, num_heads=HEADS, quick_gelu=quick)
    text = TextEncoder(vocabulary_size=10, sequence_length=4, hidden_dim=8, num_layers=1, num_heads=2)
    backbone = ImageTextBackbone(encoder, text, embedding_dim=projection.shape[1], image_pooling="first")
    load_open_clip_projection(backbone, projection)
    x = images()
    reference = numpy_open_clip_image(visual, x, PATCH, HEADS, act=quick_gelu if quick else gelu)
    reference /= np.linalg.norm(reference, axis=-1, keepdims=True)
    ours = keras.ops.convert_to_numpy(backbone.encode_images(x))
    np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-4)


def test_open_clip_parts_the_tower_cannot_compute_are_refused():
    from keras_maeclip.models import ImageTextBackbone, TextEncoder, image_tower_from_open_clip
    from keras_maeclip.models import load_open_clip_projection

    visual = random_open_clip_visual()
    for extra in ("attn_pool.query", "transformer.resblocks.0.ls_1.gamma"):
        with pytest.raises(ValueError, match=f"cannot compute.*{extra}"):
            image_tower_from_open_clip(dict(visual, **{extra: np.ones(WIDTH, "float32")}), num_heads=HEADS)
    with pytest.raises(ValueError, match="no visual.conv1.weight"):
        image_tower_from_open_clip({"token_embedding.weight": np.zeros((4, 4), "float32")})
    encoder, projection = image_tower_from_open_clip(visual, num_heads=HEADS)
    text = TextEncoder(vocabulary_size=10, sequence_length=4, hidden_dim=8, num_layers=1, num_heads=2)
    gap = ImageTextBackbone(encoder, text, embedding_dim=projection.shape[1], image_pooling="gap")
    with pytest.raises(ValueError, match="image_pooling='first'"):
        load_open_clip_projection(gap, projection)
