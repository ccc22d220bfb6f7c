"""The README's main job, end to end, at a few steps (on the current backend)."""

import json
import os
import subprocess
import sys

import keras

import pytest

from keras_maeclip.models import CLIP, M3AE, MAE, MAECLIP

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_pretrain_recipe_trains_evaluates_and_saves_a_preset(tmp_path):
    out = tmp_path / "run"
    cmd = [
        sys.executable, os.path.join(REPO, "recipes", "pretrain.py"),
        f"--backend={keras.config.backend()}", "--steps=4", "--warmup_steps=1",
        "--steps_per_epoch=2", "--batch_size=16", "--train_examples=64",
        "--eval_examples=40", f"--output_dir={out}",
    ]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Zero-shot top-1 on 40 held-out" in result.stdout
    assert "chance" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    for task, classes in (("object", 24), ("colour", 6), ("shape", 4)):
        assert 0.0 <= metrics[f"zero_shot/{task}/top1"] <= 1.0
        assert metrics[f"zero_shot/{task}/chance"] == 1.0 / classes
    assert 0.0 <= metrics["retrieval/image_to_text_R@1"] <= 1.0
    assert metrics["loss"] > 0
    model = CLIP.from_preset(str(out / "preset"))
    assert model.backbone.image_encoder.image_size == 32


@pytest.mark.parametrize(
    "model, flags, terms",
    [
        ("maeclip", ["--pooling=max", "--masking=similarity", "--contrastive_view=full",
                     "--local_negative_steps=1", "--text_mask_ratio=0.3", "--image_loss_weight=0.5"],
         ("contrastive_loss", "image_reconstruction_loss", "text_reconstruction_loss")),
        ("m3ae", ["--image_mask_ratio=0.5"], ("image_reconstruction_loss", "text_reconstruction_loss")),
        ("mae", ["--norm_pix_loss=false"], ("image_reconstruction_loss",)),
    ],
)
def test_pretrain_recipe_trains_each_masked_variant(tmp_path, model, flags, terms):
    out = tmp_path / model
    cmd = [
        sys.executable, os.path.join(REPO, "recipes", "pretrain.py"), f"--model={model}",
        f"--backend={keras.config.backend()}", "--steps=2", "--warmup_steps=1",
        "--steps_per_epoch=1", "--batch_size=8", "--train_examples=32",
        "--eval_examples=20", "--reconstructions=3", f"--output_dir={out}", *flags,
    ]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    for term in terms:
        assert metrics[term] > 0 and metrics[f"eval/{term}"] > 0
        assert f"first_epoch/{term}" in metrics
    assert ("zero_shot/object/top1" in metrics) == (model == "maeclip")
    assert (out / "reconstructions.png").stat().st_size > 0
    loaded = {"maeclip": MAECLIP, "m3ae": M3AE, "mae": MAE}[model].from_preset(str(out / "preset"))
    if model == "maeclip":
        assert (loaded.masking, loaded.contrastive_view, loaded.backbone.image_pooling) == ("similarity", "full", "max")
        assert (loaded.text_mask_ratio, loaded.image_loss_weight) == (0.3, 0.5)
        assert loaded.contrastive.local_steps == 1
    elif model == "m3ae":
        assert loaded.image_mask_ratio == 0.5
    else:
        assert loaded.norm_pix_loss is False


def test_pretrain_recipe_refuses_a_flag_the_model_does_not_take():
    cmd = [sys.executable, os.path.join(REPO, "recipes", "pretrain.py"), "--model=clip",
           "--masking=similarity"]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "--masking does not apply to --model=clip; it applies to maeclip" in result.stderr


def test_pretrain_recipe_rejects_a_bad_flag_value():
    cmd = [sys.executable, os.path.join(REPO, "recipes", "pretrain.py"), "--model=vit"]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "--model" in result.stderr or "model" in result.stderr
