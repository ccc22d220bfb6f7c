"""A recipe's start: which backend it runs on, and what it prints before its own output."""

import io
import os
import subprocess
import sys

from keras_maeclip.backend import default_backend, fit_verbosity

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


def test_unset_backend_means_the_default_and_the_flag_or_the_environment_win():
    # `python recipes/study.py` without KERAS_BACKEND used to stop its runs
    # with KeyError: 'KERAS_BACKEND' in recipes/pretrain.py.
    expected = default_backend()
    for unset in ({}, {"KERAS_BACKEND": ""}):  # `make` exports an empty one
        result = _run("", **unset)
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.split() == [expected, expected]
    result = _run("", KERAS_BACKEND="torch")
    assert result.stdout.split() == ["torch", "torch"], result.stderr[-2000:]
    result = _run("torch", KERAS_BACKEND="jax")
    assert result.stdout.split() == ["torch", "torch"], result.stderr[-2000:]


STARTUP = """
from absl import app

def main(_):
    from keras_maeclip.backend import select_backend
    select_backend()
    import jax
    import keras
    import tensorflow as tf
    import keras_maeclip.models
    jax.devices()
    list(tf.data.Dataset.range(3).map(lambda x: x * 2).as_numpy_iterator())
    print("started on", keras.config.backend())

app.run(main)
"""


def test_start_up_prints_none_of_the_stacks_noise():
    # What every run printed before this: TF's CUDA factory and oneDNN
    # lines, JAX's rocm/tpu probes, google.api_core's Python-version warning.
    environment = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "TF_CPP_MIN_LOG_LEVEL")}
    result = subprocess.run([sys.executable, "-c", STARTUP], env=dict(environment, PYTHONPATH=REPO),
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == f"started on {default_backend()}"
    for noise in ("Unable to register", "Unable to initialize backend", "FutureWarning", "oneDNN"):
        assert noise not in result.stderr, result.stderr[-2000:]


def test_default_is_torch_on_a_cpu_and_jax_with_an_accelerator(tmp_path):
    # Eager PyTorch is the fastest backend on a CPU (docs/benchmarks.md).
    assert default_backend(devices=(str(tmp_path / "nvidia0"),)) == "torch"
    (tmp_path / "accel0").touch()
    assert default_backend(devices=(str(tmp_path / "nvidia0"), str(tmp_path / "accel0"))) == "jax"


class _Stream(io.StringIO):
    def __init__(self, tty):
        super().__init__()
        self.tty = tty

    def isatty(self):
        return self.tty


def test_fit_shows_the_live_bar_on_a_terminal_and_epoch_lines_in_a_log():
    assert fit_verbosity(True, _Stream(True)) == 1
    assert fit_verbosity(True, _Stream(False)) == 2
    assert fit_verbosity(True, object()) == 2  # no isatty: a log
    assert fit_verbosity(False, _Stream(True)) == 0  # not the chief: silent
