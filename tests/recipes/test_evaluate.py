"""The evaluation entry point on a tiny saved MAE-CLIP (every evaluation applies)."""

import json
import math
import os
import subprocess
import sys

import keras

from keras_maeclip.data import synthetic
from keras_maeclip.evaluation import suite
from keras_maeclip.models import ImageTextPreprocessor, caption_tokenizer, image_converter, learn_vocabulary
from tests.models.test_mae_clip import make

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_evaluate_recipe_runs_every_evaluation_and_writes_json_and_pictures(tmp_path):
    corpus = list(synthetic.captions(200, image_size=16)) + [
        "what colour is the circle?", "how many shapes are there?", "where is the red square?"
    ]
    preprocessor = ImageTextPreprocessor(
        caption_tokenizer(learn_vocabulary(corpus, 200)), image_converter(16), sequence_length=16
    )
    make(preprocessor).save_to_preset(str(tmp_path / "preset"))
    out = tmp_path / "eval"
    cmd = [
        sys.executable, os.path.join(REPO, "recipes", "evaluate.py"),
        f"--backend={keras.config.backend()}", f"--preset={tmp_path / 'preset'}",
        f"--output_dir={out}", "--examples=12", "--train_examples=12", "--linear_probe_epochs=2",
        "--vqa_epochs=1", "--pictures=2",
    ]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "evaluation.json").read_text())
    assert metrics["model"] == "MAECLIP"
    for name in suite.EVALUATIONS:
        assert f"seconds/{name}" in metrics, name
    in_unit_range = [
        "zero_shot/object/top1", "zero_shot/colour/top1", "zero_shot/shape/top1",
        "retrieval/image_to_text_R@1", "retrieval/text_to_image_R@5",
        "linear_probe/object/top1", "linear_probe/object/top5",
        "vqa/accuracy", "vqa/accuracy/colour", "vqa/accuracy/count", "vqa/accuracy/position",
        "vqa/majority_baseline", "segmentation/colour/mean_iou", "segmentation/shape/pixel_accuracy",
        "grounding/pointing_game", "grounding/grounding_iou", "grounding/pointing_game_chance",
    ]
    for key in in_unit_range:
        assert 0.0 <= metrics[key] <= 1.0 and not math.isnan(metrics[key]), key
    assert metrics["zero_shot/object/chance"] == 1 / 24
    assert metrics["linear_probe/object/chance"] == 1 / 24
    assert metrics["grounding/pairs"] >= 12  # every image has at least one object
    assert metrics["vqa/num_answers"] >= 1
    for picture in ("grounding.png", "reconstructions.png"):
        assert (out / picture).stat().st_size > 0
    assert "linear_probe/object/top1" in result.stdout  # the printed table


def test_evaluate_recipe_refuses_an_evaluation_the_model_does_not_take(tmp_path):
    preprocessor = ImageTextPreprocessor(
        caption_tokenizer(learn_vocabulary(list(synthetic.captions(50, image_size=16)), 100)),
        image_converter(16), sequence_length=16,
    )
    make(preprocessor).save_to_preset(str(tmp_path / "preset"))
    missing = tmp_path / "not_a_preset"
    cmd = [sys.executable, os.path.join(REPO, "recipes", "evaluate.py"), f"--preset={missing}"]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "not a saved preset directory" in result.stderr
    cmd = [
        sys.executable, os.path.join(REPO, "recipes", "evaluate.py"), f"--backend={keras.config.backend()}",
        f"--preset={tmp_path / 'preset'}", "--evaluations=vqa,nope",
    ]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "Unknown evaluation 'nope'" in result.stderr
