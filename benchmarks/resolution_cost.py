"""Zero-shot and retrieval of a trained preset loaded at other image sizes.

What it measures: a CLIP / MAE-CLIP preset (e.g. written by
`recipes/pretrain.py`) is loaded with `from_preset(dir, image_size=N)` for
each `--sizes` value, without any fine-tuning, and the suite's zero-shot and
retrieval evaluations run on held-out synthetic scenes drawn at that size
(the same scenes, rendered with more or fewer pixels). The first size should
be the one the preset was trained at; the other rows are the accuracy cost
of changing resolution with recomputed sin-cos positions alone.

Usage:
    KERAS_BACKEND=jax python benchmarks/resolution_cost.py \
        --preset=runs/clip_tiny_gap/preset --sizes=32,24,48,64 --examples=500
"""

from absl import app, flags

flags.DEFINE_string("preset", None, "Preset directory of a trained CLIP or MAE-CLIP.")
flags.DEFINE_list("sizes", ["32", "24", "48", "64"], "Image sizes to load the preset at.")
flags.DEFINE_integer("examples", 500, "Held-out synthetic scenes per evaluation.")
flags.DEFINE_integer("seed", 0, "The pretraining data seed (held-out scenes use seed + offsets).")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from keras_maeclip.evaluation.suite import SuiteConfig, run_suite
    from keras_maeclip.models import PretrainingTask

    config = SuiteConfig(examples=FLAGS.examples, seed=FLAGS.seed)
    rows = []
    for size in (int(s) for s in FLAGS.sizes):
        model = PretrainingTask.from_preset(FLAGS.preset, image_size=size)
        metrics = run_suite(model, ["zero_shot", "retrieval"], config, log=None)
        rows.append((size, {k: v for k, v in metrics.items() if not k.startswith("seconds/")}))
    keys = sorted(rows[0][1])
    print("| image size | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for size, metrics in rows:
        print(f"| {size} | " + " | ".join(f"{metrics[k]:.3f}" for k in keys) + " |")


if __name__ == "__main__":
    flags.mark_flag_as_required("preset")
    app.run(main)
