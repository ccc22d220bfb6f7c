"""Which backend a recipe runs on when neither --backend nor KERAS_BACKEND says."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CHECK = """
import sys
from keras_maeclip.backend import select_backend
chosen = select_backend(sys.argv[1] or None)
import keras
print(chosen, keras.config.backend())
"""


def _run(name, **env):
    environment = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    environment.update(env, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-c", CHECK, name], env=environment, cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def test_unset_backend_means_jax_and_the_flag_or_the_environment_win():
    # `python recipes/study.py` without KERAS_BACKEND used to stop its runs
    # with KeyError: 'KERAS_BACKEND' in recipes/pretrain.py.
    result = _run("")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["jax", "jax"]
    result = _run("", KERAS_BACKEND="torch")
    assert result.stdout.split() == ["torch", "torch"], result.stderr[-2000:]
    result = _run("torch", KERAS_BACKEND="jax")
    assert result.stdout.split() == ["torch", "torch"], result.stderr[-2000:]
