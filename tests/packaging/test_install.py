"""Packaging: the package declares ranges and extras, and imports and trains without the extras.

The lock (requirements/) must satisfy the ranges pyproject.toml declares;
a fresh process with the optional packages made unimportable
(``sys.modules[name] = None``, which is what an uninstalled package looks
like to ``import`` and ``importlib.util.find_spec``) must import every
module of keras_maeclip and fit a tiny CLIP on this test's backend; a
missing extra must give one line naming it. The clean-venv install
(``pip install .[jax,test]`` without the lock) is CI's job, .ci/run.
"""

import os
import re
import subprocess
import sys
import tomllib

import keras
import pytest
from packaging.requirements import Requirement

from keras_maeclip import backend

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OPTIONAL = ("jax", "jaxlib", "torch", "tensorflow_data_validation", "tensorflow_datasets", "matplotlib")


def pyproject():
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]


def locked():
    pins = {}
    with open(os.path.join(REPO, "requirements", "constraints.txt")) as f:
        for line in f:
            if "==" in line and not line.startswith("#"):
                name, version = line.strip().split("==")
                pins[re.sub(r"[-_.]+", "-", name).lower()] = version.split("+")[0]
    return pins


def test_dependencies_are_ranges_with_extras():
    project = pyproject()
    for spec in project["dependencies"]:
        assert "==" not in spec and "<" not in spec, f"{spec}: the package declares ranges; pins go to requirements/"
    assert project["requires-python"] == ">=3.11,<3.14"
    assert set(project["optional-dependencies"]) == {"jax", "torch", "validate", "tfds", "plots", "test"}


def test_the_lock_satisfies_the_declared_ranges():
    pins = locked()
    project = pyproject()
    specs = list(project["dependencies"])
    for extra in ("jax", "torch", "tfds", "plots", "test"):
        specs += project["optional-dependencies"][extra]
    for spec in specs:
        requirement = Requirement(spec)
        name = re.sub(r"[-_.]+", "-", requirement.name).lower()
        assert name in pins, f"{name} is declared but not in requirements/constraints.txt"
        assert requirement.specifier.contains(pins[name]), f"lock {name}=={pins[name]} outside {spec}"


def run_python(code, env_backend, timeout=600):
    env = dict(os.environ, KERAS_BACKEND=env_backend, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def test_imports_and_fits_without_the_extras():
    name = keras.config.backend()
    blocked = [m for m in OPTIONAL if not m.startswith({"jax": "jax", "torch": "torch"}.get(name, "-"))]
    code = f"""
import sys
for module in {blocked!r}:
    sys.modules[module] = None
import importlib, pkgutil
import keras_maeclip
for info in pkgutil.walk_packages(keras_maeclip.__path__, "keras_maeclip."):
    importlib.import_module(info.name)
import numpy as np
from keras_maeclip.models import ImageTextPreprocessor, caption_tokenizer, image_converter, learn_vocabulary
from tests import tiny
vocabulary = learn_vocabulary(tiny.CAPTIONS, 200)
preprocessor = ImageTextPreprocessor(caption_tokenizer(vocabulary), image_converter(16), sequence_length=12)
model = tiny.make_clip(preprocessor)
batch = tiny.raw_batch(8)
history = model.fit(batch, epochs=1, batch_size=8, verbose=0)
assert np.isfinite(history.history["loss"][0])
for module in {blocked!r}:
    assert sys.modules[module] is None, module
from keras_maeclip.data import tfds
from keras_maeclip.study import report
for call in (tfds._tfds, report._pyplot):
    try:
        call()
    except ImportError as e:
        print("MESSAGE", e)
print("OK", keras_maeclip.__name__)
"""
    done = run_python(code, name)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "OK keras_maeclip" in done.stdout
    assert "MESSAGE Reading TFDS datasets needs tensorflow_datasets, which is not installed: " \
           "pip install keras-maeclip[tfds]" in done.stdout
    assert "MESSAGE The study's plots needs matplotlib, which is not installed: " \
           "pip install keras-maeclip[plots]" in done.stdout


@pytest.mark.parametrize("missing", ["jax", "torch"])
def test_a_missing_backend_is_one_line_naming_the_extra(missing):
    code = f"import sys; sys.modules[{missing!r}] = None\nimport keras_maeclip"
    done = run_python(code, missing, timeout=120)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last == (f"ImportError: KERAS_BACKEND={missing} needs {missing}, which is not installed: "
                    f"pip install keras-maeclip[{missing}], or pick another backend.")


def test_default_backend_takes_what_is_installed(monkeypatch, tmp_path):
    gpu = tmp_path / "nvidia0"
    gpu.write_text("")
    installed = {"jax", "torch"}
    monkeypatch.setattr(backend, "backend_installed", lambda name: name in installed)
    assert backend.default_backend(devices=()) == "torch"
    assert backend.default_backend(devices=(str(gpu),)) == "jax"
    installed = {"jax"}
    assert backend.default_backend(devices=()) == "jax"
    installed = {"torch"}
    assert backend.default_backend(devices=(str(gpu),)) == "torch"
    installed = set()
    assert backend.default_backend(devices=()) == "tensorflow"
