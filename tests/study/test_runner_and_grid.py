"""The study's grid and its runner (resume, stale folders, failures) with stand-in recipes.

The stand-ins are tiny scripts taking the recipes' command lines and
writing the files they write, so the orchestration is tested in seconds;
tests/recipes/test_study.py runs the real recipes.
"""

import json
import os

import pytest

from keras_maeclip import study
from keras_maeclip.evaluation import suite
from keras_maeclip.study import grid

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PRETRAIN = os.path.join(REPO, "recipes", "pretrain.py")

# A stand-in for recipes/pretrain.py. Its flags, for grid.defined_flags:
# flags.DEFINE_string("model") flags.DEFINE_string("pooling") flags.DEFINE_integer("steps")
FAKE_PRETRAIN = r'''
import json, os, sys
args = dict(a[2:].split("=", 1) for a in sys.argv[1:])
out = args["output_dir"]
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, "calls.txt"), "a") as f:
    f.write(" ".join(sys.argv[1:]) + "\n")
resumed = os.path.isdir(os.path.join(out, "backup"))
if args.get("model") == "mae" and os.environ.get("FAKE_FAIL_MAE"):
    sys.exit("mae broke")
if os.environ.get("FAKE_KILL") and not resumed:
    os.makedirs(os.path.join(out, "backup"))
    sys.exit(137)
seed, size = int(args["seed"]), int(args["train_examples"])
with open(os.path.join(out, "train_log.csv"), "w") as f:
    f.write("epoch,loss\n0,3.0\n1,%f\n" % (2.0 - seed / 10))
os.makedirs(os.path.join(out, "preset"), exist_ok=True)
metrics = {"loss": 2.0 - seed / 10, "eval/loss": 1.0 / size + seed, "resumed": float(resumed)}
if args.get("model") == "clip":
    metrics["zero_shot/object/top1"] = 0.1 * seed
json.dump(metrics, open(os.path.join(out, "metrics.json"), "w"))
'''
FAKE_EVALUATE = r'''
import json, os, sys
args = dict(a[2:].split("=", 1) for a in sys.argv[1:])
out = args["output_dir"]
os.makedirs(out, exist_ok=True)
with open(os.path.join(os.path.dirname(out), "eval_calls.txt"), "a") as f:
    f.write(" ".join(sys.argv[1:]) + "\n")
metrics = {"seconds/total": 0.5, "model": "x"}
for name in args["evaluations"].split(","):
    metrics[name + "/score"] = float(args["seed"])
json.dump(metrics, open(os.path.join(out, "evaluation.json"), "w"))
'''


@pytest.fixture
def scripts(tmp_path):
    pretrain, evaluate = tmp_path / "fake_pretrain.py", tmp_path / "fake_evaluate.py"
    pretrain.write_text(FAKE_PRETRAIN)
    evaluate.write_text(FAKE_EVALUATE)
    return str(pretrain), str(evaluate)


def _config(tmp_path, scripts, **kwargs):
    options = dict(
        output_dir=str(tmp_path / "study"), variants=("clip_gap", "mae"), seeds=(0, 1), sizes=(8, 16),
        steps=2, evaluations=("zero_shot", "linear_probe"), pretrain_script=scripts[0],
        evaluate_script=scripts[1],
    )
    options.update(kwargs)
    return study.StudyConfig(**options)


def _calls(config):
    runs = study.plan(config)
    count = lambda run, name: (  # noqa: E731
        len(open(os.path.join(run.directory, name)).read().splitlines())
        if os.path.exists(os.path.join(run.directory, name)) else 0
    )
    return {run.name: (count(run, "calls.txt"), count(run, "eval_calls.txt")) for run in runs}


def test_every_variant_flag_is_a_pretrain_flag_and_directions_need_theirs():
    defined = grid.defined_flags(PRETRAIN)
    variants = grid.all_variants(defined)
    for variant in variants:
        for flag in variant.flags:
            assert flag[2:].split("=")[0] in defined, (variant.name, flag)
    names = [v.name for v in variants]
    with_direction = [v.name for v in grid.all_variants(defined | {"similarity_direction"})]
    # CLIP, FLIP (± unmasked tuning), MAE-CLIP pooling × masking × view ×
    # text view × unmasked tuning, M3AE, MAE.
    assert len(with_direction) == 3 + 3 * 2 + 3 * 3 * 2 * 2 * 2 + 2
    assert len(set(with_direction)) == len(with_direction)
    assert "maeclip_gap_similarity_masked" not in with_direction  # it would repeat the default direction
    without = [v.name for v in grid.all_variants(defined - {"similarity_direction"})]
    assert len(without) == 3 + 3 * 2 + 3 * 2 * 2 * 2 * 2 + 2 and "maeclip_map_similarity_full" in without
    # A pretraining script without the text view (older) gets the old grid.
    old = [v.name for v in grid.all_variants(defined - {"similarity_direction", "contrastive_text_view"})]
    assert len(old) == 3 + 3 * 2 * 2 + 2
    assert names == (with_direction if "similarity_direction" in defined else without)
    keep = grid.all_variants(defined | {"similarity_direction"})[with_direction.index("maeclip_max_keepsimilar_full")]
    assert keep.flags == ("--model=maeclip", "--pooling=max", "--masking=similarity",
                          "--similarity_direction=keep_similar", "--contrastive_view=full")


def test_attribution_controls_and_the_visible_setting_reach_the_commands(tmp_path, scripts):
    by_name = {v.name: v for v in grid.all_variants(grid.defined_flags(PRETRAIN))}
    assert by_name["flip_max"].flags == ("--model=clip", "--pooling=max", "--patch_dropout=0.75")
    assert by_name["maeclip_max_random_masked_wholetext"].flags[-1] == "--contrastive_text_view=full"
    config = _config(tmp_path, scripts, variants=("flip_max_ut", "maeclip_max_keepsimilar_full_ut"),
                     seeds=(0,), sizes=(8,), steps=600, image_size=48, synthetic_sizes=("large",),
                     pretrain_script=PRETRAIN)
    for run in study.plan(config):
        flags = run.config["pretrain_flags"]
        assert "--unmasked_tuning_steps=60" in flags  # 10 % of 600 steps
        assert "--image_size=48" in flags and "--synthetic_sizes=large" in flags
        assert run.config["evaluate_flags"] == ["--synthetic_sizes=large"]
    plain = study.plan(_config(tmp_path, scripts, variants=("flip_max",), seeds=(0,), sizes=(8,),
                               pretrain_script=PRETRAIN))[0]
    assert not any(f.startswith(("--unmasked", "--image_size", "--synthetic")) for f in plain.config["pretrain_flags"])


def test_evaluations_per_model_match_the_suite():
    assert grid.EVALUATIONS == suite.EVALUATIONS
    for model, kind in (("clip", "CLIP"), ("maeclip", "MAECLIP"), ("m3ae", "M3AE"), ("mae", "MAE")):
        expected = tuple(name for name in suite.EVALUATIONS if kind in suite._APPLIES[name])
        assert grid.evaluations_for(model) == expected, model


def test_select_variants_by_pattern_and_clear_errors():
    names = [v.name for v in grid.select_variants(["maeclip_*_random_full", "clip_max"], set())]
    assert names == ["clip_max", "maeclip_gap_random_full", "maeclip_max_random_full", "maeclip_map_random_full"]
    with pytest.raises(ValueError, match="'clip_avg' matches no variant"):
        grid.select_variants(["clip_avg"], set())
    with pytest.raises(ValueError, match="--similarity_direction"):
        grid.select_variants(["maeclip_max_keepsimilar_masked"], {"model"})
    with pytest.raises(ValueError, match="--contrastive_text_view"):
        grid.select_variants(["flip_max"], {"model"})


def test_plan_refuses_bad_axes(tmp_path, scripts):
    with pytest.raises(ValueError, match="--sizes must be positive"):
        study.plan(_config(tmp_path, scripts, sizes=(0,)))
    with pytest.raises(ValueError, match="must not repeat"):
        study.plan(_config(tmp_path, scripts, seeds=(1, 1)))
    with pytest.raises(ValueError, match="unknown \\['zeroshot'\\]"):
        study.plan(_config(tmp_path, scripts, evaluations=("zeroshot",)))
    with pytest.raises(ValueError, match="--max_train_records"):
        study.plan(_config(tmp_path, scripts, data="/data/*.tar"))


def test_study_runs_each_run_once_evaluates_what_pretraining_did_not_and_resumes(tmp_path, scripts):
    config = _config(tmp_path, scripts, parallel=2)
    paths = study.run_study(config, log=None)
    rows = study.read_csv(paths["csv"])
    assert len(rows) == 8
    assert {(r["variant"], r["size"], r["seed"]) for r in rows} == {
        (v, n, s) for v in ("clip_gap", "mae") for n in (8, 16) for s in (0, 1)
    }
    for row in rows:
        assert row["eval/loss"] == pytest.approx(1.0 / row["size"] + row["seed"])
        assert row["linear_probe/score"] == row["seed"]  # evaluated by evaluate.py
        if row["variant"] == "clip_gap":
            assert row["zero_shot/object/top1"] == pytest.approx(0.1 * row["seed"])  # pretraining's
    # CLIP's zero-shot came from pretraining: evaluate.py only ran the linear probe.
    clip_run = study.plan(config)[0]
    evaluated = open(os.path.join(clip_run.directory, "eval_calls.txt")).read()
    assert "--evaluations=linear_probe " in evaluated and "--examples=1000 --seed=0" in evaluated
    assert set(_calls(config).values()) == {(1, 1)}
    # Run again: every run is finished, nothing is launched; the report is rebuilt.
    study.run_study(config, log=None)
    assert set(_calls(config).values()) == {(1, 1)}
    assert "## zero_shot/object/top1" in open(paths["markdown"]).read()
    assert any(p.endswith("loss_curves.png") for p in paths["plots"])


def test_a_changed_config_is_rerun_and_its_old_folder_kept(tmp_path, scripts):
    config = _config(tmp_path, scripts, variants=("mae",), seeds=(0,), sizes=(8,))
    study.run_study(config, log=None)
    changed = _config(tmp_path, scripts, variants=("mae",), seeds=(0,), sizes=(8,), steps=3)
    lines = []
    study.run_study(changed, log=lines.append)
    run = study.plan(changed)[0]
    assert "--steps=3" in open(os.path.join(run.directory, "calls.txt")).read()
    stale = [d for d in os.listdir(os.path.dirname(run.directory)) if ".stale-" in d]
    assert len(stale) == 1 and any("moved to" in line for line in lines)
    assert study.read_csv(os.path.join(changed.output_dir, "results.csv"))[0]["steps"] == 3


def test_a_killed_run_is_relaunched_with_the_same_command_and_resumes(tmp_path, scripts, monkeypatch):
    config = _config(tmp_path, scripts, variants=("mae",), seeds=(0,), sizes=(8,))
    monkeypatch.setenv("FAKE_KILL", "1")
    with pytest.raises(study.StudyError, match="pretraining failed; see .*pretrain.log"):
        study.run_study(config, log=None)
    run = study.plan(config)[0]
    assert study.finished_result(run) is None
    study.run_study(config, log=None)
    calls = open(os.path.join(run.directory, "calls.txt")).read().splitlines()
    assert len(calls) == 2 and calls[0] == calls[1]
    assert study.finished_result(run)["metrics"]["resumed"] == 1.0


def test_a_failed_run_does_not_stop_the_others(tmp_path, scripts, monkeypatch):
    monkeypatch.setenv("FAKE_FAIL_MAE", "1")
    config = _config(tmp_path, scripts, seeds=(0,), sizes=(8,))
    with pytest.raises(study.StudyError, match="1 of 2 runs failed"):
        study.run_study(config, log=None)
    rows = study.read_csv(os.path.join(config.output_dir, "results.csv"))
    assert [r["variant"] for r in rows] == ["clip_gap"]
    log = open(os.path.join(study.plan(config)[1].directory, "pretrain.log")).read()
    assert "mae broke" in log


def test_file_data_limits_the_records_when_pretraining_can(tmp_path, scripts):
    pretrain = tmp_path / "fake_pretrain.py"
    pretrain.write_text(FAKE_PRETRAIN + '\n# flags.DEFINE_integer("max_train_records")\n')
    config = _config(tmp_path, scripts, data="/data/*.tar", data_format="webdataset")
    flags = study.plan(config)[0].config["pretrain_flags"]
    assert "--max_train_records=8" in flags and "--data_format=webdataset" in flags
    assert json.loads(json.dumps(flags)) == flags


def test_the_flags_the_study_passes_are_the_recipes_flags(tmp_path):
    """Every flag of the commands the study builds is defined by the real recipes."""
    config = study.StudyConfig(output_dir=str(tmp_path), variants=("all",), seeds=(0,), sizes=(8,),
                               pretrain_script=PRETRAIN)
    pretrain_flags = grid.defined_flags(PRETRAIN) | {"backend", "output_dir"}
    evaluate_flags = grid.defined_flags(os.path.join(REPO, "recipes", "evaluate.py"))
    for run in study.plan(config):
        for flag in run.config["pretrain_flags"]:
            assert flag[2:].split("=")[0] in pretrain_flags, (run.name, flag)
    # The evaluation command's own flags (runner.execute).
    for flag in ("preset", "output_dir", "evaluations", "examples", "seed", "backend"):
        assert flag in evaluate_flags, flag
    study_flags = grid.defined_flags(os.path.join(REPO, "recipes", "study.py"))
    assert {"variants", "seeds", "sizes", "steps", "parallel", "report_only", "dry_run"} <= study_flags


def test_other_evaluations_re_evaluate_without_retraining(tmp_path, scripts):
    config = _config(tmp_path, scripts, variants=("mae",), seeds=(0,), sizes=(8,))
    study.run_study(config, log=None)
    more = _config(tmp_path, scripts, variants=("mae",), seeds=(0,), sizes=(8,),
                   evaluations=("linear_probe", "reconstruction"), evaluate_flags=("--pictures=2",))
    study.run_study(more, log=None)
    run = study.plan(more)[0]
    assert _calls(more)[run.name] == (1, 2)  # trained once, evaluated twice
    last = open(os.path.join(run.directory, "eval_calls.txt")).read().splitlines()[-1]
    assert "--evaluations=linear_probe,reconstruction" in last and last.endswith("--pictures=2")
    result = study.finished_result(run)
    assert result["metrics"]["reconstruction/score"] == 0.0
    assert set(result["timing"]) == {"pretrain_s", "evaluate_s"}
    assert result["wall_s"] == pytest.approx(sum(result["timing"].values()))
    assert not [d for d in os.listdir(os.path.dirname(run.directory)) if ".stale-" in d]


def test_progress_line_counts_runs_and_estimates_the_time_left():
    from keras_maeclip.study.runner import progress_line

    # Mean 10 min a run; 3 left at 2 at a time: 2 more rounds, 20 min.
    assert progress_line(2, 5, [540.0, 660.0], parallel=2) == "2/5 runs done, about 20 min left"
    assert progress_line(1, 3, [60.0]) == "1/3 runs done, about 2 min left"
    assert progress_line(4, 4, [1.0] * 4, parallel=3) == "4/4 runs done"
