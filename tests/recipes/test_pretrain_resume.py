"""`recipes/pretrain.py` killed with SIGKILL mid-run resumes with the same command.

The library-level resume (weights, optimizer state, random state, exact
final weights) is tested in `tests/training/test_fault_tolerance.py`; this
checks the recipe's wiring: backups every `--checkpoint_every_steps`, the
data skip, and a run that ends with exactly `--steps` steps.
"""

import json
import os
import signal
import subprocess
import sys
import time

import keras

from keras_maeclip.models import CLIP

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = 20


def test_recipe_resumes_after_sigkill(tmp_path):
    out = tmp_path / "run"
    metadata = out / "backup" / "training_metadata.json"
    command = [
        sys.executable, os.path.join(REPO, "recipes", "pretrain.py"),
        f"--backend={keras.config.backend()}", f"--steps={STEPS}", "--warmup_steps=1",
        "--steps_per_epoch=10", "--batch_size=8", "--train_examples=64", "--eval_examples=8",
        "--checkpoint_every_steps=5", "--log_every_steps=0", f"--output_dir={out}",
    ]
    first = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not metadata.exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    stdout, stderr = first.communicate()
    assert first.returncode == -signal.SIGKILL, (
        f"the run ended (rc {first.returncode}) before it could be killed after its first backup:\n"
        + stderr[-2000:]
    )
    saved = json.loads(metadata.read_text())["step"]
    assert saved % 5 == 0 and 5 <= saved < STEPS

    second = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"Resuming from the backup at step {saved}: skipping {saved} batches." in second.stdout
    # The counter of training steps is a model weight: the run, split in
    # two processes, trained exactly --steps steps.
    model = CLIP.from_preset(str(out / "preset"))
    assert int(keras.ops.convert_to_numpy(model.contrastive.steps_seen)) == STEPS
    # A completed run removes its backup, so the next run starts afresh.
    assert not (out / "backup" / "latest.weights.h5").exists()
