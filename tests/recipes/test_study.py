"""The study recipe end to end: 2 variants × 2 seeds × 2 sizes × 2 steps (current backend).

Real `recipes/pretrain.py` and `recipes/evaluate.py` processes on the tiny
presets with the smallest batch, step and evaluation counts; the
orchestration details are in tests/study with stand-in recipes.
"""

import io
import json
import os
import subprocess
import sys

import keras
import pytest
from PIL import Image

from keras_maeclip import study

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMOKE = [
    "--variants=clip_gap,mae", "--seeds=0,1", "--sizes=8,16", "--steps=2", "--batch_size=4",
    "--steps_per_epoch=1", "--eval_examples=8", "--evaluations=zero_shot,retrieval",
    "--pretrain_flag=--reconstructions=0", "--pretrain_flag=--vocabulary_size=100",
    "--pretrain_flag=--warmup_steps=1", "--pretrain_flag=--log_every_steps=0", "--parallel=2",
]


def _study(output_dir, *extra):
    cmd = [sys.executable, os.path.join(REPO, "recipes", "study.py"), f"--backend={keras.config.backend()}",
           f"--output_dir={output_dir}", *SMOKE, *extra]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1800)


@pytest.fixture(scope="module")
def smoke_study(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("study")
    result = _study(output_dir)
    return output_dir, result


def test_study_recipe_trains_evaluates_and_writes_the_table_and_plots(smoke_study):
    output_dir, result = smoke_study
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    rows = study.read_csv(str(output_dir / "results.csv"))
    assert sorted((r["variant"], r["size"], r["seed"]) for r in rows) == sorted(
        (v, n, s) for v in ("clip_gap", "mae") for n in (8, 16) for s in (0, 1)
    )
    for row in rows:
        assert row["steps"] == 2 and row["wall_s"] > 0
        assert row["eval/image_reconstruction_loss" if row["variant"] == "mae" else "eval/contrastive_loss"] > 0
        run_dir = output_dir / row["run_dir"]
        # Zero-shot and retrieval come from pretraining: no evaluate.py run.
        assert not (run_dir / "eval").exists()
        if row["variant"] == "clip_gap":
            assert 0.0 <= row["zero_shot/object/top1"] <= 1.0
            assert 0.0 <= row["retrieval/image_to_text_R@1"] <= 1.0
        assert (run_dir / "preset" / "config.json").exists()
        flags = json.loads((run_dir / "result.json").read_text())["config"]["pretrain_flags"]
        assert f"--train_examples={row['size']}" in flags and f"--seed={row['seed']}" in flags
    table = (output_dir / "results.md").read_text()
    assert "## zero_shot/object/top1" in table and "## eval/image_reconstruction_loss" in table
    assert "| clip_gap |" in table and "| mae |" in table and "(2) |" in table
    plots = sorted(os.listdir(output_dir / "plots"))
    assert "loss_curves.png" in plots
    assert "vs_size_zero_shot_object_top1.png" in plots and "bars_eval_image_reconstruction_loss.png" in plots
    for name in plots:
        with Image.open(output_dir / "plots" / name) as image:
            assert image.format == "PNG"


def test_study_recipe_does_not_redo_finished_runs_and_evaluates_more_without_retraining(smoke_study):
    output_dir, first = smoke_study
    assert first.returncode == 0, first.stderr[-3000:]
    logs = {p: p.stat().st_mtime_ns for p in output_dir.glob("runs/*/*/pretrain.log")}
    assert len(logs) == 8
    result = _study(output_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "8 already finished, 0 to run" in result.stdout
    assert {p: p.stat().st_mtime_ns for p in output_dir.glob("runs/*/*/pretrain.log")} == logs
    # A changed budget is a new config: --dry_run lists every run as to run again.
    dry = _study(output_dir, "--dry_run", "--steps=3")
    assert dry.returncode == 0 and "8 runs, 0 finished" in dry.stdout
    # One more evaluation of one run: recipes/evaluate.py runs, pretraining does not.
    more = _study(output_dir, "--variants=mae", "--seeds=0", "--sizes=8",
                  "--evaluations=linear_probe,reconstruction", "--evaluate_flag=--pictures=2",
                  "--evaluate_flag=--train_examples=8", "--evaluate_flag=--linear_probe_epochs=1")
    assert more.returncode == 0, more.stdout[-2000:] + more.stderr[-3000:]
    run_dir = output_dir / "runs" / "mae" / "n8_s0"
    assert (run_dir / "pretrain.log").stat().st_mtime_ns == logs[run_dir / "pretrain.log"]
    assert (run_dir / "eval" / "reconstructions.png").stat().st_size > 0
    [row] = study.read_csv(str(output_dir / "results.csv"))
    assert 0.0 <= row["linear_probe/object/top1"] <= 1.0 and row["eval/image_reconstruction_loss"] > 0


def _write_csv(folder, good, bad):
    from keras_maeclip.data import synthetic

    folder.mkdir()
    lines = ["filepath,title"]
    for i in range(good):
        example = synthetic.generate_example(i, image_size=32)
        buffer = io.BytesIO()
        Image.fromarray(example["image"]).save(buffer, format="PNG")
        (folder / f"{i}.png").write_bytes(buffer.getvalue())
        lines.append(f"{i}.png,{example['caption']}")
    lines += [f"missing{i}.png,a red circle" for i in range(bad)]  # after the first `good`
    (folder / "data.csv").write_text("\n".join(lines) + "\n")
    return folder / "data.csv"


def test_pretrain_max_train_records_reads_only_the_first_records(tmp_path):
    manifest = _write_csv(tmp_path / "data", good=20, bad=6)
    out = tmp_path / "run"
    cmd = [
        sys.executable, os.path.join(REPO, "recipes", "pretrain.py"), f"--backend={keras.config.backend()}",
        f"--data={manifest}", "--data_format=csv", "--csv_separator=,", "--max_train_records=6",
        "--train_examples=6", "--steps=3", "--warmup_steps=1", "--steps_per_epoch=3", "--batch_size=4",
        "--eval_examples=8", "--vocabulary_size=100", f"--output_dir={out}",
        # The held-out share comes from the 20 good records (by key hash); the
        # first 6 training records are good ones, the missing files come after.
        "--eval_fraction=0.3",
    ]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    # 12 samples from 6 records: the missing files after them are never read for training.
    assert not [k for k in metrics if k.startswith("data/skipped/")], metrics
    assert metrics["data/good_records"] >= 12
    refused = subprocess.run(cmd[:2] + ["--max_train_records=5"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0 and "for synthetic data use --train_examples" in refused.stderr


def test_study_recipe_runs_the_attribution_controls_in_the_visible_setting(tmp_path):
    # Issue 25 item 3: the FLIP control and MAE-CLIP's whole-caption view
    # with unmasked tuning, at 48² with large objects (item 2's setting).
    cmd = [sys.executable, os.path.join(REPO, "recipes", "study.py"), f"--backend={keras.config.backend()}",
           f"--output_dir={tmp_path}", "--variants=flip_gap_ut,maeclip_gap_random_masked_wholetext_ut",
           "--seeds=0", "--sizes=16", "--steps=3", "--batch_size=4", "--steps_per_epoch=1",
           "--eval_examples=8", "--evaluations=zero_shot", "--image_size=48", "--synthetic_sizes=large",
           "--pretrain_flag=--reconstructions=0", "--pretrain_flag=--vocabulary_size=100",
           "--pretrain_flag=--warmup_steps=1", "--pretrain_flag=--log_every_steps=0", "--parallel=2"]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    rows = {r["variant"]: r for r in study.read_csv(str(tmp_path / "results.csv"))}
    assert set(rows) == {"flip_gap_ut", "maeclip_gap_random_masked_wholetext_ut"}
    for name, row in rows.items():
        run_dir = tmp_path / row["run_dir"]
        flags = json.loads((run_dir / "result.json").read_text())["config"]["pretrain_flags"]
        assert "--unmasked_tuning_steps=1" in flags and "--image_size=48" in flags
        assert "--synthetic_sizes=large" in flags
        log = (run_dir / "pretrain.log").read_text()
        assert "Unmasked tuning: 1 steps on whole images and captions." in log
        # The exact share for 48² scenes of large objects, 4-pixel patches, 75 % masked.
        assert 0.95 < row["data/visible_object_share"] < 1.0
        assert f"{name}/n16_s0: done in" in result.stdout
    assert "--patch_dropout=0.75" in json.loads(
        (tmp_path / rows["flip_gap_ut"]["run_dir"] / "result.json").read_text())["config"]["pretrain_flags"]
    assert "masked view sees the captioned object in" in result.stdout
