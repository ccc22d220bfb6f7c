"""The README's main job, end to end, at a few steps (on the current backend)."""

import json
import os
import subprocess
import sys

import keras

from keras_maeclip.models import CLIP

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


def test_pretrain_recipe_rejects_a_bad_flag_value():
    cmd = [sys.executable, os.path.join(REPO, "recipes", "pretrain.py"), "--model=vit"]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "--model" in result.stderr or "model" in result.stderr
