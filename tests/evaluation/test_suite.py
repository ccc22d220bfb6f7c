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
    lines = []
    results = suite.run_suite(model, ["zero_shot", "linear_probe", "segmentation"], config, log=lines.append)
    # Progress: a line as each evaluation starts and as it ends.
    assert lines[0::2] == ["zero_shot (1/3) ...", "linear_probe (2/3) ...", "segmentation (3/3) ..."]
    assert all(line.startswith(f"{name}: done in ") for line, name in
               zip(lines[1::2], ["zero_shot", "linear_probe", "segmentation"]))
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


def _state(model):
    import keras

    return [keras.ops.convert_to_numpy(v) for v in model.weights]


def _fresh_clip(preprocessor):
    import keras

    keras.utils.set_random_seed(7)
    return make_clip(preprocessor, preset="clip_tiny_max")


def test_results_do_not_depend_on_the_order_and_the_model_comes_back_pretrained(preprocessor, capsys):
    # A large VQA learning rate makes fine-tuning move the towers far, so
    # evaluations after it would see other weights if nothing restored them.
    # verbose=2: VQA's fit prints a line per epoch (the recipe's setting in a log).
    config = suite.SuiteConfig(examples=8, train_examples=8, vqa_epochs=1, vqa_learning_rate=0.05, verbose=2)
    model = _fresh_clip(preprocessor)
    pretrained = _state(model)
    first = suite.run_suite(model, ["vqa", "retrieval", "grounding"], config, log=None)
    assert "step - loss:" in capsys.readouterr().out
    last = suite.run_suite(_fresh_clip(preprocessor), ["retrieval", "grounding", "vqa"], config, log=None)
    metrics = sorted(k for k in first if not k.startswith("seconds/"))
    assert metrics == sorted(k for k in last if not k.startswith("seconds/"))
    for key in metrics:
        assert last[key] == pytest.approx(first[key], abs=1e-6), key
    for before, after in zip(pretrained, _state(model)):
        np.testing.assert_array_equal(after, before)
    assert model.backbone.image_encoder.trainable and model.backbone.text_encoder.trainable


def test_preserved_state_restores_weights_flags_and_seed_state(preprocessor):
    import keras

    from tests.models.test_mae_clip import make

    model = make(preprocessor, seed=3)
    before = [keras.ops.convert_to_numpy(v) for v in model.variables]
    image_encoder = model.backbone.image_encoder
    with pytest.raises(RuntimeError, match="inside"):
        with suite.preserved_state(model):
            model.backbone.trainable = False
            image_encoder.trainable = True  # a child differing from its parent
            for v in model.trainable_weights:
                v.assign(v + 1.0)
            model(preprocessor({"images": np.zeros((2, 16, 16, 3), "uint8"),
                                "captions": np.array(["a red circle", "a blue square"])}))
            raise RuntimeError("an error inside the block")
    after = [keras.ops.convert_to_numpy(v) for v in model.variables]
    for a, b, v in zip(before, after, model.variables):
        np.testing.assert_array_equal(b, a, err_msg=v.path)
    assert model.backbone.trainable and image_encoder.trainable
    assert all(layer.trainable for layer in suite._layer_tree(model))
