"""Training-step time of two Python environments side by side: a stack move, before and after.

Runs `benchmarks/train_step.py` (bench-small CLIP and MAE-CLIP, its
defaults: batch 64, float32, XLA on JAX and TensorFlow, eager PyTorch)
once per backend with each environment's Python, interleaved
A B A B: for each round, for each backend, every environment in turn, so
that both see the same machine state. Each call is its own train_step.py
run (one worker process per backend and model, as always); its JSON
results are pooled per environment by median of the round medians.

    python benchmarks/compare_stacks.py --envs=old:/work/venv-old/bin/python,new:.venv/bin/python

Prints each environment's versions (Python, keras, keras-hub, TensorFlow,
JAX, torch, NumPy), the machine, a table of median step times per
backend and model with the ratio of the second environment to the first,
and each environment's JAX and TensorFlow speed as a share of eager
PyTorch's (PyTorch's step time over theirs). Run it on a quiet machine.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile

from absl import app, flags

HERE = os.path.dirname(os.path.abspath(__file__))
FLAGS = flags.FLAGS
flags.DEFINE_list("envs", None, "name:python pairs, e.g. old:/venv-old/bin/python,new:.venv/bin/python (2 or more).")
flags.DEFINE_list("backends", ["jax", "tensorflow", "torch"], "Backends, in order.")
flags.DEFINE_list("models", ["clip", "maeclip"], "train_step.py models.")
flags.DEFINE_integer("rounds", 2, "Rounds (A B A B ...).", lower_bound=1)
flags.DEFINE_integer("steps", 10, "Timed steps per train_step.py row.", lower_bound=1)
flags.DEFINE_string("output_json", None, "Optional path: every call's results as JSON.")
flags.mark_flag_as_required("envs")

VERSIONS = ("keras", "keras-hub", "tensorflow", "jax", "jaxlib", "torch", "numpy")


def versions(python):
    code = ("import importlib.metadata as m, json, platform\n"
            f"out = {{'python': platform.python_version()}}\n"
            f"for d in {VERSIONS!r}:\n"
            "    try: out[d] = m.version(d)\n"
            "    except m.PackageNotFoundError: out[d] = None\n"
            "print(json.dumps(out))")  # fmt: skip
    return json.loads(subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout)


def one_call(python, backend, work):
    path = os.path.join(work, f"r{len(os.listdir(work))}.json")
    command = [python, os.path.join(HERE, "train_step.py"), f"--backends={backend}",
               f"--models={','.join(FLAGS.models)}", "--rounds=1", f"--steps={FLAGS.steps}", f"--output_json={path}"]
    done = subprocess.run(command, capture_output=True, text=True)
    if not os.path.exists(path):
        raise SystemExit(f"train_step.py failed with {python} on {backend}:\n{done.stderr[-2000:]}")
    with open(path) as f:
        return json.load(f)


def main(argv):
    del argv
    envs = [tuple(item.split(":", 1)) for item in FLAGS.envs]
    if len(envs) < 2 or any(len(e) != 2 for e in envs):
        raise app.UsageError("--envs needs two or more name:python pairs.")
    for name, python in envs:
        print(f"{name}: {python}: " + ", ".join(f"{k} {v}" for k, v in versions(python).items()))
    medians = {}  # (env, backend, model) -> [round medians]
    calls = []
    with tempfile.TemporaryDirectory() as work:
        for round_index in range(FLAGS.rounds):
            for backend in FLAGS.backends:
                for name, python in envs:
                    sys.stderr.write(f"[compare_stacks] round {round_index + 1}: {backend} with {name} ...\n")
                    out = one_call(python, backend, work)
                    calls.append({"env": name, "round": round_index, "backend": backend, **out})
                    for row in out["results"]:
                        if row.get("ok"):
                            medians.setdefault((name, backend, row["model"]), []).append(row["median_step_s"])
    machine = calls[0]["machine"]
    print(f"machine: {machine.get('cpu_model')}, {machine.get('cpu_count')} CPUs, {machine.get('platform')}")
    print(f"workload: train_step.py defaults (bench-small, batch 64, float32), {FLAGS.steps} timed steps, "
          f"{FLAGS.rounds} rounds interleaved by backend: " + " ".join(n for n, _ in envs) + " ...")
    first = envs[0][0]
    print()
    print("| backend | model | " + " | ".join(f"{n} median step (s)" for n, _ in envs)
          + " | " + " | ".join(f"{n} / {first}" for n, _ in envs[1:]) + " |")
    print("|---|---|" + "---|" * (2 * len(envs) - 1))
    pooled = {key: statistics.median(v) for key, v in medians.items()}
    for backend in FLAGS.backends:
        for model in FLAGS.models:
            cells = [pooled.get((n, backend, model)) for n, _ in envs]
            text = [f"{c:.3f}" if c else "failed" for c in cells]
            ratios = [f"{c / cells[0]:.2f}" if c and cells[0] else "-" for c in cells[1:]]
            print(f"| {backend} | {model} | " + " | ".join(text) + " | " + " | ".join(ratios) + " |")
    print()
    for name, _ in envs:
        parts = []
        for model in FLAGS.models:
            torch_time = pooled.get((name, "torch", model))
            for backend in ("jax", "tensorflow"):
                t = pooled.get((name, backend, model))
                if t and torch_time:
                    parts.append(f"{model} on {backend} {torch_time / t:.2f}")
        print(f"{name}: speed as a share of eager PyTorch's (torch step / this step): " + ", ".join(parts))
    print("round medians: " + json.dumps({"/".join(k): [round(x, 3) for x in v] for k, v in medians.items()}))
    if FLAGS.output_json:
        with open(FLAGS.output_json, "w") as f:
            json.dump({"envs": dict(envs), "calls": calls}, f, indent=1)


if __name__ == "__main__":
    app.run(main)
