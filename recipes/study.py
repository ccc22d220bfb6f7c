r"""The paper's comparison at small scale: variants × seeds × training-set sizes.

Trains every chosen variant (CLIP GAP/MAX/MAP; MAE-CLIP × pooling × masking
× contrastive view; M3AE; MAE) with `recipes/pretrain.py` for a fixed
number of steps on 2 k / 20 k / 200 k distinct examples (the paper's data
axis) and each seed, evaluates it with the suite (`recipes/evaluate.py`),
and writes `results.csv` (one row per run), `results.md` (mean ± std over
seeds) and PNG plots under `--output_dir`. Run it again to resume: finished
runs are kept, a killed run resumes from its backup. docs/study.md says
what it writes and what the default grid costs.

    python recipes/study.py --dry_run                     # the runs and their commands
    python recipes/study.py --variants='clip_*,maeclip_*_random_*' --seeds=0,1,2
    python recipes/study.py --variants=clip_max,maeclip_max_random_full \
        --sizes=2000,20000 --steps=1000 --parallel=2
    python recipes/study.py --data='/data/wds/*.tar' --data_format=webdataset
    python recipes/study.py --report_only                 # table and plots from results.csv
"""

import os
import sys

from absl import app, flags

from keras_maeclip import study

FLAGS = flags.FLAGS
RECIPES = os.path.dirname(os.path.abspath(__file__))
flags.DEFINE_list("variants", ["all"], "Variant names or shell patterns (clip_*, maeclip_max_*_full, all); --list_variants prints them.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds of each (variant, size).")
flags.DEFINE_list("sizes", ["2000", "20000", "200000"], "Distinct training examples (the data-size axis).")
flags.DEFINE_integer("steps", 2000, "Optimizer steps of every run (the same budget at every size).")
flags.DEFINE_integer("batch_size", 128, "Global batch size of every run.")
flags.DEFINE_integer("steps_per_epoch", 100, "Steps between log lines (the loss curves' resolution).")
flags.DEFINE_integer("eval_examples", 1000, "Held-out examples per evaluation.")
flags.DEFINE_list("evaluations", None, "Suite evaluations to report (default: all that apply to each variant).")
flags.DEFINE_string("data", "synthetic", "Training data of recipes/pretrain.py: 'synthetic' or files of --data_format.")
flags.DEFINE_string("data_format", "tfrecord", "Format of --data (recipes/pretrain.py --data_format).")
flags.DEFINE_integer("image_size", None, "Image size of every run (default: the presets', 32). 48 with --synthetic_sizes=large keeps the captioned object visible under 75 % masking (docs/study.md).")
flags.DEFINE_list("synthetic_sizes", None, "Object sizes of the synthetic scenes in training and evaluation (small,large; default both).")
flags.DEFINE_multi_string("pretrain_flag", [], "A further flag of every pretraining run, e.g. --pretrain_flag=--learning_rate=5e-4 (repeatable).")
flags.DEFINE_multi_string("evaluate_flag", [], "A further flag of every evaluation, e.g. --evaluate_flag=--linear_probe_epochs=10 (repeatable).")
flags.DEFINE_bool("reevaluate", False, "Run every evaluation with recipes/evaluate.py, also zero-shot and retrieval that pretraining already measured (for --evaluate_flag that change the data).")
flags.DEFINE_string("backend", None, "Keras backend of the runs (jax|tensorflow|torch); default KERAS_BACKEND, else torch on a CPU, jax with a GPU/TPU (keras_maeclip.backend.default_backend).")
flags.DEFINE_integer("parallel", 1, "Runs at once, each in its own processes.")
flags.DEFINE_list("metrics", None, "Metrics (names or patterns) of results.md and the plots (default: the headline ones present).")
flags.DEFINE_string("output_dir", "runs/study", "Where runs, results.csv, results.md and plots/ go.")
flags.DEFINE_bool("report_only", False, "Only rebuild results.md and the plots from <output_dir>/results.csv.")
flags.DEFINE_bool("dry_run", False, "Print the runs (and which are finished) without running them.")
flags.DEFINE_bool("list_variants", False, "Print every variant and its pretraining flags, then stop.")


def _config():
    return study.StudyConfig(
        output_dir=FLAGS.output_dir,
        variants=tuple(FLAGS.variants),
        seeds=tuple(int(s) for s in FLAGS.seeds),
        sizes=tuple(int(s) for s in FLAGS.sizes),
        steps=FLAGS.steps,
        batch_size=FLAGS.batch_size,
        steps_per_epoch=FLAGS.steps_per_epoch,
        eval_examples=FLAGS.eval_examples,
        evaluations=tuple(FLAGS.evaluations) if FLAGS.evaluations else None,
        data=FLAGS.data,
        data_format=FLAGS.data_format,
        pretrain_flags=tuple(FLAGS.pretrain_flag),
        evaluate_flags=tuple(FLAGS.evaluate_flag),
        image_size=FLAGS.image_size,
        synthetic_sizes=tuple(FLAGS.synthetic_sizes) if FLAGS.synthetic_sizes else None,
        reevaluate=FLAGS.reevaluate,
        backend=FLAGS.backend,
        parallel=FLAGS.parallel,
        pretrain_script=os.path.join(RECIPES, "pretrain.py"),
        evaluate_script=os.path.join(RECIPES, "evaluate.py"),
        python=sys.executable,
    )


def main(argv):
    del argv
    try:
        if FLAGS.list_variants:
            for variant in study.all_variants(study.defined_flags(os.path.join(RECIPES, "pretrain.py"))):
                print(f"{variant.name:<32} {' '.join(variant.flags)}")
            return
        if FLAGS.report_only:
            paths = study.report_from_csv(FLAGS.output_dir, metrics=FLAGS.metrics)
        elif FLAGS.dry_run:
            for line in study.describe(_config()):
                print(line)
            return
        else:
            paths = study.run_study(_config(), metrics=FLAGS.metrics)
    except (ValueError, FileNotFoundError) as error:
        raise app.UsageError(str(error)) from None
    except study.StudyError as error:
        sys.exit(f"study.py: {error}")
    print(f"Table: {paths['markdown']}; rows: {paths['csv']}; {len(paths['plots'])} plots in "
          f"{os.path.join(FLAGS.output_dir, 'plots')}")


if __name__ == "__main__":
    app.run(main)
