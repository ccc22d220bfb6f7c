"""How `recipes/pretrain.py` fails: one line naming the flag and the fix, never a NaN preset.

Diverging on purpose: `--learning_rate=1e30` makes the second update's
weights so large that the next step's loss is not finite (every backend).
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECIPE = os.path.join(REPO, "recipes", "pretrain.py")
TINY_RUN = ["--steps=4", "--warmup_steps=1", "--steps_per_epoch=2", "--batch_size=8",
            "--train_examples=32", "--eval_examples=8", "--log_every_steps=0"]


def pretrain(*flags, timeout=600):
    command = [sys.executable, RECIPE, f"--backend={keras.config.backend()}", *flags]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def strict_json(path):
    def refuse(constant):
        raise AssertionError(f"{path} holds {constant}")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_flag_values_that_would_fail_later_are_refused_at_parsing():
    result = pretrain("--model=maeclip", "--image_mask_ratio=0", "--text_mask_ratio=1.5", "--steps=10",
                      "--warmup_steps=50", timeout=120)
    assert result.returncode != 0
    message = result.stderr.strip().splitlines()[-1]
    assert "--image_mask_ratio=0.0 must be in (0, 1)" in message and "--image_loss_weight=0" in message
    assert "--text_mask_ratio=1.5 must be in [0, 1]" in message
    assert "--steps=10 must exceed --warmup_steps=50 (the linear warm-up); lower --warmup_steps or raise --steps" in message


def test_a_diverged_run_never_saves_a_nonfinite_preset_and_its_backup_is_bound_to_its_flags(tmp_path):
    out = tmp_path / "run"
    # An earlier good run's outputs (stand-ins): a divergence must not overwrite them.
    (out / "preset").mkdir(parents=True)
    (out / "preset" / "config.json").write_text("{}")
    (out / "metrics.json").write_text('{"loss": 1.0}')

    # 1. No backup to fall back on: no preset, no metrics, a message, a failed exit.
    result = pretrain(*TINY_RUN, "--learning_rate=1e30", "--checkpoint_every_steps=0", f"--output_dir={out}")
    assert result.returncode != 0
    assert "Training diverged (non-finite loss or weights) before any finite backup: no preset written" in result.stderr
    assert (out / "preset" / "config.json").read_text() == "{}"
    assert (out / "metrics.json").read_text() == '{"loss": 1.0}'

    # 2. With backups: the preset is the last finite backup, metrics.json strict JSON.
    result = pretrain(*TINY_RUN, "--learning_rate=1e30", "--checkpoint_every_steps=1", f"--output_dir={out}")
    assert result.returncode != 0, result.stdout[-2000:]
    assert "the preset holds the last finite state (step 2 of 4)" in result.stderr, result.stderr[-3000:]
    metrics = strict_json(out / "metrics.json")
    assert metrics["diverged"] is True and metrics["preset_step"] == 2
    assert "loss" in metrics["nonfinite_metrics"] and metrics["loss"] is None
    from keras_maeclip.models import CLIP

    model = CLIP.from_preset(str(out / "preset"))
    assert int(keras.ops.convert_to_numpy(model.contrastive.steps_seen)) == 2
    assert all(np.isfinite(keras.ops.convert_to_numpy(v)).all() for v in model.weights)
    assert not (out / "run.lock").exists()

    # 3. The kept backup belongs to that run: other flags are refused, naming the fix...
    result = pretrain(*TINY_RUN, "--learning_rate=1e-3", "--checkpoint_every_steps=1", f"--output_dir={out}")
    assert result.returncode != 0
    message = result.stderr.strip().splitlines()[-1]
    assert "holds the backup of a run with other settings (" in message and "run.learning_rate: 1e+30 in the backup, 0.001 now" in message
    assert "--fresh" in message and "--output_dir" in message
    assert (out / "backup" / "training_metadata.json").exists()  # left as it was


def test_data_with_no_usable_record_names_the_flag_and_the_counts(tmp_path):
    manifest = tmp_path / "train.csv"
    manifest.write_text("filepath,title\n" + "".join(f"gone{i}.jpg,a red circle\n" for i in range(3)))
    result = pretrain(f"--data={manifest}", "--data_format=csv", "--csv_separator=,", *TINY_RUN,
                      f"--output_dir={tmp_path / 'run'}", timeout=300)
    assert result.returncode != 0
    message = result.stderr.strip().splitlines()[-1]
    assert f"--data={manifest} (--data_format=csv): none of the first 3 records is usable (missing_file: 3)" in message
    assert "--csv_separator" in message and "learn_vocabulary" not in result.stderr
