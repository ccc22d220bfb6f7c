"""The evaluation suite's dispatch, errors and local-data path."""

import numpy as np
import pytest

from keras_maeclip.data.tfds import DatasetNotFoundError
from keras_maeclip.evaluation import suite
from keras_maeclip.models import CLIP, MAE, MAECLIP
from keras_maeclip.models.pretraining_task import PretrainingTask
from tests.models.test_mae import SMALL as MAE_SMALL
from tests.tiny import make_clip


def test_applicable_follows_the_model_kind(preprocessor):
    clip = make_clip(preprocessor)
    mae = MAE.from_preset("mae_tiny", **MAE_SMALL)
    assert suite.applicable(clip) == ["zero_shot", "retrieval", "linear_probe", "vqa", "segmentation", "grounding"]
    assert suite.applicable(mae) == ["linear_probe", "reconstruction"]
    with pytest.raises(ValueError, match="does not take a MAE model.*linear_probe, reconstruction"):
        suite.check_evaluations(mae, ["zero_shot"])
    with pytest.raises(ValueError, match="Unknown evaluation 'segmentaton'"):
        suite.check_evaluations(clip, ["segmentaton"])


def test_base_class_loads_the_saved_task_class(preprocessor, tmp_path):
    # keras-hub alone would pick MAECLIP (the first subclass with a ImageTextBackbone).
    make_clip(preprocessor).save_to_preset(str(tmp_path))
    model = PretrainingTask.from_preset(str(tmp_path))
    assert type(model) is CLIP and not isinstance(model, MAECLIP)


def test_suite_on_synthetic_data_gives_metrics_in_range(preprocessor):
    model = make_clip(preprocessor)
    config = suite.SuiteConfig(examples=10, train_examples=10, linear_probe_epochs=1, segmentation_attributes=("colour",))
    results = suite.run_suite(model, ["zero_shot", "linear_probe", "segmentation"], config, log=None)
    assert results["zero_shot/colour/chance"] == pytest.approx(1 / 6)
    for key in ("zero_shot/shape/top1", "linear_probe/object/top1", "segmentation/colour/mean_iou"):
        assert 0.0 <= results[key] <= 1.0
    table = suite.format_table(results)
    assert "linear_probe/object/top1" in table and "seconds/" not in table


def test_local_dataset_that_is_absent_raises_the_named_error(preprocessor, tmp_path):
    model = make_clip(preprocessor)
    config = suite.SuiteConfig(examples=4, classification_dataset="cifar10", data_dir=str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match=r"cifar10.*" + str(tmp_path).replace("/", r"\/")):
        suite.zero_shot(model, config)
    config = suite.SuiteConfig(examples=4, vqa_dataset="clevr", data_dir=str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match="clevr"):
        suite.vqa(model, config)


def test_pointing_game_chance_is_the_mean_object_area(preprocessor):
    model = make_clip(preprocessor)
    config = suite.SuiteConfig(examples=6)
    results = suite.grounding(model, config)
    scenes = suite.held_out(config, "grounding", 6, 16)
    areas = [m.mean() for row in scenes["masks"] for m in row if m.any()]
    assert results["grounding/pointing_game_chance"] == pytest.approx(np.mean(areas))
    assert results["grounding/pairs"] == len(areas)
