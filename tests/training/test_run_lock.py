import os
import signal
import subprocess
import sys

import pytest

from keras_maeclip.training.run_lock import RunLock, RunLockedError

HOLD = """
import sys, time
sys.path.insert(0, {repo!r})
from keras_maeclip.training.run_lock import RunLock
RunLock({folder!r}).acquire()
print("held", flush=True)
time.sleep(600)
"""


def hold(folder):
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    process = subprocess.Popen([sys.executable, "-c", HOLD.format(repo=repo, folder=str(folder))],
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_second_run_is_refused_naming_the_holder_and_a_dead_holder_is_taken_over(tmp_path):
    holder = hold(tmp_path)
    try:
        with pytest.raises(RunLockedError, match=rf"{tmp_path} is in use by another run \(PID {holder.pid} on "
                                                 r".*Wait for it to end, or give this run another output folder"):
            RunLock(tmp_path).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (tmp_path / "run.lock").exists()  # left behind by the killed run
    with RunLock(tmp_path) as lock:
        assert lock.took_over.startswith(f"PID {holder.pid} on ")
        assert f'"pid": {os.getpid()}' in (tmp_path / "run.lock").read_text()
    assert not (tmp_path / "run.lock").exists()
    with RunLock(tmp_path) as lock:
        assert lock.took_over is None  # a clean release leaves nothing to take over


def test_the_recipe_refuses_a_folder_in_use(tmp_path):
    import keras

    holder = hold(tmp_path)
    try:
        repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        result = subprocess.run(
            [sys.executable, os.path.join(repo, "recipes", "pretrain.py"), f"--backend={keras.config.backend()}",
             f"--output_dir={tmp_path}"], cwd=repo, capture_output=True, text=True, timeout=300,
        )
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert result.returncode != 0
    assert f"--output_dir={tmp_path} is in use by another run (PID {holder.pid} on" in result.stderr
