"""Image and text embedders exported with `model.export`, reloaded and compared.

Each backend writes its default format (TF SavedModel on JAX and TF, a
PyTorch ExportedProgram on torch). Reference: the Keras embedders' own
outputs on the same inputs; tolerance 1e-5 absolute on unit-norm embeddings
(the exported graph may fuse ops), at two batch sizes (the batch is left
free in the export).
"""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_maeclip.training.export import default_format, export_embedders
from tests.tiny import make_clip, raw_batch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_exported(path):
    """A NumPy-in, NumPy-out function for an exported embedder."""
    if path.endswith(".pt2"):
        import torch

        module = torch.export.load(path).module()

        def run(x):
            x = {k: torch.as_tensor(v) for k, v in x.items()} if isinstance(x, dict) else torch.as_tensor(x)
            return module(x).detach().cpu().numpy()

        return run
    import tensorflow as tf

    loaded = tf.saved_model.load(path)  # kept: its variables live as long as it does
    return lambda x: loaded.serve(tf.nest.map_structure(tf.constant, x)).numpy()


def test_exported_embedders_reproduce_the_keras_outputs(preprocessor, tmp_path):
    model = make_clip(preprocessor, preset="clip_tiny_map")
    inputs = {k: keras.ops.convert_to_numpy(v) for k, v in preprocessor(raw_batch(4, seed=2)).items()}
    text_inputs = {k: inputs[k].astype("int32") for k in ("token_ids", "padding_mask")}
    backbone = model.backbone
    expected_image = keras.ops.convert_to_numpy(backbone.image_embedder()(inputs["images"]))
    expected_text = keras.ops.convert_to_numpy(backbone.text_embedder()(text_inputs))
    paths = export_embedders(model, str(tmp_path))
    assert paths["image_embedder"].endswith(".pt2") == (default_format() == "torch")
    image, text = load_exported(paths["image_embedder"]), load_exported(paths["text_embedder"])
    for n in (4, 3):
        np.testing.assert_allclose(image(inputs["images"][:n]), expected_image[:n], atol=1e-5, rtol=0)
        got_text = text({k: v[:n] for k, v in text_inputs.items()})
        np.testing.assert_allclose(got_text, expected_text[:n], atol=1e-5, rtol=0)
    assert np.abs(expected_image).max() > 0.01


@pytest.mark.skipif(keras.config.backend() != "torch", reason="checks the refusal of tf_saved_model on torch; JAX and TF export it (test above)")
def test_saved_model_on_torch_names_the_alternatives(preprocessor, tmp_path):
    model = make_clip(preprocessor)
    with pytest.raises(ValueError, match="needs torch_xla.*format='torch'.*KERAS_BACKEND=tensorflow"):
        export_embedders(model, str(tmp_path), format="tf_saved_model")


def test_command_exports_a_saved_preset(preprocessor, tmp_path):
    model = make_clip(preprocessor)
    model.save_to_preset(str(tmp_path / "preset"))
    env = dict(os.environ, PYTHONPATH=REPO)
    result = subprocess.run(
        [sys.executable, "-m", "keras_maeclip.training.export", str(tmp_path / "preset"), str(tmp_path / "out")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("image_embedder", "text_embedder"):
        if default_format() == "torch":
            assert (tmp_path / "out" / f"{name}.pt2").is_file()
        else:
            assert (tmp_path / "out" / name / "saved_model.pb").is_file()
