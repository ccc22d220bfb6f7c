"""The recipe's SigLIP, FLIP and GradCache flags end to end (a few steps, current backend)."""

import json
import os
import subprocess
import sys

import keras

from keras_maeclip.models import CLIP

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(tmp_path, *flags):
    cmd = [
        sys.executable, os.path.join(REPO, "recipes", "pretrain.py"),
        f"--backend={keras.config.backend()}", "--warmup_steps=1", "--steps_per_epoch=1",
        "--batch_size=8", "--train_examples=32", "--eval_examples=16", "--checkpoint_every_steps=0",
        f"--output_dir={tmp_path}", *flags,
    ]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)


def test_siglip_with_patch_dropout_then_unmasked_tuning(tmp_path):
    # One run for several flags (each is tested against a reference in its own
    # unit tests): here they meet in the recipe.
    result = run(tmp_path, "--steps=3", "--loss=sigmoid", "--patch_dropout=0.5", "--unmasked_tuning_steps=1",
                 "--lock_text", "--lock_text_unlocked_blocks=1", "--grad_cache_micro_batches=2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "grad_cache_micro_batches=2" in result.stdout
    assert "Unmasked tuning: 1 steps on whole images and captions." in result.stdout
    assert "Locked the text tower:" in result.stdout
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert "logit_bias" in metrics and metrics["loss"] > 0
    model = CLIP.from_preset(str(tmp_path / "preset"))
    assert model.contrastive.loss == "sigmoid"
    # The preset records the training setting; unmasked tuning is a phase, not saved.
    assert model.patch_dropout == 0.5 and not model.unmasked_tuning
    # 2 masked + 1 unmasked updates (GradCache counts a step once, not per micro-batch).
    assert int(keras.ops.convert_to_numpy(model.contrastive.steps_seen)) == 3


def test_unmasked_tuning_needs_a_masked_run(tmp_path):
    result = run(tmp_path, "--steps=3", "--unmasked_tuning_steps=1")
    assert result.returncode != 0
    assert "--unmasked_tuning_steps ends a masked run: --model=maeclip, or --model=clip with --patch_dropout" in result.stderr


def test_maeclip_unmasked_tuning_and_whole_caption_view(tmp_path):
    from keras_maeclip.models import MAECLIP

    result = run(tmp_path, "--model=maeclip", "--steps=3", "--unmasked_tuning_steps=1",
                 "--contrastive_text_view=full", "--reconstructions=0")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Unmasked tuning: 1 steps on whole images and captions." in result.stdout
    model = MAECLIP.from_preset(str(tmp_path / "preset"))
    assert model.contrastive_text_view == "full"
    assert int(keras.ops.convert_to_numpy(model.contrastive.steps_seen)) == 3


def test_grad_cache_flag_errors(tmp_path):
    # Refused before the backend starts, each naming the fix.
    cases = [
        (["--grad_cache_micro_batches=3"], "--batch_size=8 must divide into --grad_cache_micro_batches=3"),
        (["--grad_cache_micro_batches=2", "--gradient_accumulation_steps=2"], "use one"),
        (["--grad_cache_micro_batches=2", "--model=mae"], "use --gradient_accumulation_steps"),
        (["--grad_cache_micro_batches=2", "--local_negative_steps=1"], "needs global negatives"),
    ]
    for flags, message in cases:
        result = run(tmp_path, "--steps=2", *flags)
        assert result.returncode != 0 and message in result.stderr, (flags, result.stderr[-2000:])
