"""`recipes/pretrain.py --distribution=data_parallel` on each backend's engine.

JAX and TF split the CPU into 2 devices (`--cpu_devices=2`); torch starts 2
gloo processes with `torchrun`. The run uses the local→global negatives
schedule, so both phases run under the engine.
"""

import json
import os
import socket
import subprocess
import sys

import keras

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENGINE = {
    "jax": "keras.distribution.DataParallel over 2 devices",
    "tensorflow": "MirroredStrategy over 2 devices",
    "torch": "DistributedDataParallel, 2 processes (gloo)",
}


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_recipe_trains_data_parallel_with_the_negatives_schedule(tmp_path):
    backend = keras.config.backend()
    out = tmp_path / "run"
    recipe = os.path.join(REPO, "recipes", "pretrain.py")
    flags = [
        f"--backend={backend}", "--distribution=data_parallel", "--steps=4", "--warmup_steps=1",
        "--steps_per_epoch=2", "--batch_size=16", "--train_examples=64", "--eval_examples=40",
        "--local_negative_steps=2", f"--output_dir={out}",
    ]
    if backend == "torch":
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                   f"--master_port={_free_port()}", recipe, *flags]
    else:
        command = [sys.executable, recipe, "--cpu_devices=2", *flags]
    env = dict(os.environ, KERAS_BACKEND=backend)
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert f"distribution={ENGINE[backend]}" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    # Epoch 1 = the 2 local-negative steps, epoch 2 global.
    assert metrics["first_epoch/uses_local_negatives"] == 1.0
    assert metrics["uses_local_negatives"] == 0.0
    assert metrics["loss"] > 0 and metrics["eval/loss"] > 0
    assert (out / "preset" / "task.json").is_file()
    # Only the chief prints the summary (torch runs two processes).
    assert result.stdout.count("Zero-shot top-1 on 40 held-out") == 1
