"""The study's aggregation, table and plots, from result rows alone (no training)."""

import math
import os

import numpy as np
import pytest
from PIL import Image

from keras_maeclip.study import report


def _rows():
    rng = np.random.default_rng(0)
    rows = []
    for variant, model in (("mae", "mae"), ("clip_gap", "clip")):
        for size in (16, 8):
            for seed in (0, 1, 2):
                row = {"variant": variant, "model": model, "size": size, "seed": seed, "steps": 4,
                       "wall_s": 1.5, "run_dir": "", "eval/loss": float(rng.normal(2.0, 0.3))}
                if model == "clip":
                    row["zero_shot/object/top1"] = float(rng.uniform())
                    row["retrieval/image_to_text_R@1"] = float(rng.uniform())
                rows.append(row)
    return rows


def test_aggregate_is_numpy_mean_and_sample_std_over_seeds():
    rows = _rows()
    table = report.aggregate(rows, ["eval/loss", "zero_shot/object/top1"])
    for variant in ("mae", "clip_gap"):
        for size in (8, 16):
            values = [r["eval/loss"] for r in rows if r["variant"] == variant and r["size"] == size]
            mean, std, n = table[(variant, size)]["eval/loss"]
            np.testing.assert_allclose(mean, np.mean(values), rtol=1e-12)
            np.testing.assert_allclose(std, np.std(values, ddof=1), rtol=1e-12)
            assert n == 3
    assert "zero_shot/object/top1" not in table[("mae", 8)]  # MAE has no zero-shot
    assert table[("clip_gap", 8)]["zero_shot/object/top1"][2] == 3


def test_aggregate_leaves_out_missing_values_and_one_seed_has_no_std():
    rows = [
        {"variant": "v", "size": 1, "seed": 0, "m": 1.0},
        {"variant": "v", "size": 1, "seed": 1, "m": float("nan")},
        {"variant": "v", "size": 1, "seed": 2, "m": 3.0},
        {"variant": "v", "size": 2, "seed": 0, "m": 5.0},
    ]
    table = report.aggregate(rows, ["m"])
    assert table[("v", 1)]["m"] == (2.0, pytest.approx(np.std([1.0, 3.0], ddof=1)), 2)
    mean, std, n = table[("v", 2)]["m"]
    assert (mean, n) == (5.0, 1) and math.isnan(std)


def test_csv_round_trip_keeps_every_metric_and_blanks_missing_ones(tmp_path):
    rows = _rows()
    path = report.write_csv(rows, str(tmp_path / "results.csv"))
    back = report.read_csv(path)
    assert len(back) == len(rows)
    header = open(path).readline().strip().split(",")
    assert header[:7] == list(report.ID_COLUMNS)
    assert {"eval/loss", "zero_shot/object/top1", "retrieval/image_to_text_R@1"} <= set(header)
    by_key = {(r["variant"], r["size"], r["seed"]): r for r in rows}
    for row in back:
        original = by_key[(row["variant"], row["size"], row["seed"])]
        assert row["eval/loss"] == original["eval/loss"]  # repr keeps every digit
        if row["model"] == "mae":
            assert math.isnan(row["zero_shot/object/top1"])
    # Grid order: CLIP before MAE, sizes ascending.
    assert [(r["variant"], r["size"]) for r in back[:4]] == [("clip_gap", 8)] * 3 + [("clip_gap", 16)]


def test_markdown_table_cells_are_mean_std_and_seed_count():
    rows = _rows()
    text = report.markdown_table(rows, ["eval/loss", "zero_shot/object/top1"])
    values = [r["eval/loss"] for r in rows if r["variant"] == "clip_gap" and r["size"] == 8]
    cell = f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f} (3)"
    assert f"| clip_gap | {cell} |" in text
    assert "## zero_shot/object/top1" in text
    zero_shot = text.split("## zero_shot/object/top1")[1]
    assert "| mae |" not in zero_shot  # a variant without the metric gets no row
    assert "| variant | n=8 | n=16 |" in text
    assert text.index("| clip_gap |") < text.index("| mae |")


def test_headline_metrics_follow_the_patterns_and_skip_absent_ones():
    rows = _rows()
    # eval/loss is not a headline metric (the loss terms are).
    assert report.headline_metrics(rows) == ["zero_shot/object/top1", "retrieval/image_to_text_R@1"]
    assert report.headline_metrics(rows, ["eval/*", "retrieval/*"]) == ["eval/loss", "retrieval/image_to_text_R@1"]


def test_chance_is_the_stored_level_beside_a_metric():
    rows = [{"variant": "v", "size": 1, "seed": s, "zero_shot/object/top1": 0.5,
             "zero_shot/object/chance": 1 / 24} for s in (0, 1)]
    assert report._chance(rows, "zero_shot/object/top1") == pytest.approx(1 / 24)
    assert report._chance(rows, "eval/loss") is None


def test_loss_curve_keeps_the_last_row_of_a_repeated_epoch(tmp_path):
    log = tmp_path / "train_log.csv"
    log.write_text("epoch,loss\n0,3.0\n1,2.5\n1,2.4\n2,2.0\n")  # resumed during epoch 1
    epochs, losses = report.read_loss_curve(str(log))
    np.testing.assert_array_equal(epochs, [0, 1, 2])
    np.testing.assert_array_equal(losses, [3.0, 2.4, 2.0])


def test_write_report_writes_the_table_and_readable_plots(tmp_path):
    rows = _rows()
    for row in rows:
        run_dir = tmp_path / "runs" / row["variant"] / f"n{row['size']}_s{row['seed']}"
        run_dir.mkdir(parents=True)
        (run_dir / "train_log.csv").write_text("epoch,loss\n0,3.0\n1,2.0\n")
        row["run_dir"] = str(run_dir.relative_to(tmp_path))
    paths = report.write_report(rows, str(tmp_path), metrics=["eval/loss", "zero_shot/object/top1"])
    assert open(paths["markdown"]).read().startswith("# Study results")
    names = sorted(p.split("/")[-1] for p in paths["plots"])
    assert names == [
        "bars_eval_loss.png", "bars_zero_shot_object_top1.png", "loss_curves.png",
        "vs_size_eval_loss.png", "vs_size_zero_shot_object_top1.png",
    ]
    for path in paths["plots"]:
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) > 100
    # The report can be rebuilt from results.csv alone.
    rebuilt = report.report_from_csv(str(tmp_path), metrics=["eval/loss"])
    assert len(rebuilt["plots"]) == 3
    # The earlier report's plots of other metrics are gone.
    assert sorted(os.listdir(tmp_path / "plots")) == ["bars_eval_loss.png", "loss_curves.png", "vs_size_eval_loss.png"]
    assert report.read_csv(rebuilt["csv"])[0]["eval/loss"] == report.read_csv(paths["csv"])[0]["eval/loss"]


def test_report_from_csv_names_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="No results.csv"):
        report.report_from_csv(str(tmp_path))
