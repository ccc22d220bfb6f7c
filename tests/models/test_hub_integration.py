"""keras-hub integration: named presets stay ours, presets upload and load by handle."""

import os
import pathlib
import shutil
import types

import keras
import keras_hub
import numpy as np
import pytest

import keras_maeclip
from keras_maeclip.models import (
    CLIP, M3AE, MAE, MAECLIP, ImageTextBackbone, list_presets,
)

LEGACY = os.path.join(os.path.dirname(__file__), "legacy_presets")


def test_named_presets_resolve_through_our_classes_only():
    # Raised TypeError ('NoneType' is not iterable) while the names sat in
    # keras-hub's global registry without a checkpoint handle.
    with pytest.raises(ValueError, match="Unknown preset identifier"):
        keras_hub.models.Backbone.from_preset("clip_tiny_gap")
    ours = set(list_presets())
    assert not ours & set(keras_hub.models.Backbone.presets)
    assert not ours & set(keras_hub.models.Task.presets)
    assert set(CLIP.presets) == {n for n in ours if n.startswith("clip_")}
    assert set(MAECLIP.presets) == {n for n in ours if n.startswith("maeclip_")}
    assert set(MAE.presets) == {n for n in ours if n.startswith("mae_")}
    assert set(M3AE.presets) == {n for n in ours if n.startswith("m3ae_")}
    assert set(ImageTextBackbone.presets) == set(CLIP.presets)
    assert CLIP.presets["clip_tiny_gap"]["metadata"]["description"]
    backbone = ImageTextBackbone.from_preset("clip_tiny_gap", vocabulary_size=64, image_size=16,
                                             image_encoder=dict(patch_size=4))
    assert type(backbone) is ImageTextBackbone


def test_only_the_listed_private_keras_hub_imports_remain():
    # docs/pretrained.md lists each one and why no public API does its job.
    root = pathlib.Path(keras_maeclip.__file__).parent
    users = sorted(str(p.relative_to(root)) for p in root.rglob("*.py")
                   if "keras_hub.src" in p.read_text())
    assert users == ["models/preprocessor.py"]


def _standins(monkeypatch, store):
    """Local stand-ins for the Hugging Face and Kaggle clients keras-hub calls."""
    import huggingface_hub
    import kagglehub
    from huggingface_hub.utils import EntryNotFoundError

    uploads = []

    def upload_folder(repo_id, folder_path, **kwargs):
        uploads.append(sorted(os.listdir(folder_path)))
        shutil.copytree(folder_path, store / "hf" / repo_id, dirs_exist_ok=True)

    def hf_hub_download(repo_id, filename, **kwargs):
        path = store / "hf" / repo_id / filename
        if not path.exists():
            raise EntryNotFoundError(f"{filename} not in {repo_id}")
        return str(path)

    def model_upload(handle, local_model_dir, **kwargs):
        uploads.append(sorted(os.listdir(local_model_dir)))
        shutil.copytree(local_model_dir, store / "kaggle" / handle, dirs_exist_ok=True)

    def model_download(handle, path=None, **kwargs):
        file = store / "kaggle" / handle / path
        if not file.exists():
            raise ValueError(f"'{path}' is not present in the model files")
        return str(file)

    monkeypatch.setattr(huggingface_hub, "create_repo",
                        lambda repo_id, **kw: types.SimpleNamespace(repo_id=repo_id))
    monkeypatch.setattr(huggingface_hub, "file_exists", lambda **kw: False)
    monkeypatch.setattr(huggingface_hub, "upload_folder", upload_folder)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    monkeypatch.setattr(kagglehub, "model_upload", model_upload)
    monkeypatch.setattr(kagglehub, "model_download", model_download)
    return uploads


def test_upload_preset_and_load_by_handle(tmp_path, monkeypatch):
    model = CLIP.from_preset(os.path.join(LEGACY, "clip"))
    preset = tmp_path / "preset"
    model.save_to_preset(str(preset))
    uploads = _standins(monkeypatch, tmp_path / "hub")
    keras_hub.upload_preset("hf://someone/tiny-clip", str(preset))
    keras_hub.upload_preset("kaggle://someone/tiny-clip/keras/tiny", str(preset))
    # keras-hub wrote a model card for the upload and removed it after.
    assert "README.md" in uploads[0] and "README.md" not in os.listdir(preset)
    card = (tmp_path / "hub" / "hf" / "someone/tiny-clip" / "README.md").read_text()
    assert "ImageText" in card
    x = np.load(os.path.join(LEGACY, "expected.npz"))
    inputs = {k: x[f"input_{k}"] for k in ("images", "token_ids", "padding_mask")}
    for handle in ("hf://someone/tiny-clip", "kaggle://someone/tiny-clip/keras/tiny"):
        loaded = CLIP.from_preset(handle)
        assert type(loaded) is CLIP and loaded.preprocessor is not None
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(loaded(inputs)["image_embeddings"]), x["clip_image"],
            atol=1e-5)


def test_upload_validation_names_a_missing_weights_file(tmp_path):
    model = CLIP.from_preset(os.path.join(LEGACY, "clip"))
    model.save_to_preset(str(tmp_path))
    os.remove(tmp_path / "model.weights.h5")
    with pytest.raises(FileNotFoundError, match="weights file is missing"):
        keras_hub.upload_preset("hf://someone/tiny-clip", str(tmp_path))
