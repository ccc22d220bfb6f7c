"""Train CLIP at several commits (or variants) and score what the training left.

The bisect harness of issue 25 item 0 ("CLIP itself got worse"). For each
commit and seed it checks the commit out into a git worktree, runs *that
commit's* `recipes/pretrain.py` with the same flags, and then scores every
saved preset with *this* checkout's evaluation code, so only training
differs between rows:

- `zero_shot/object`, `zero_shot/position`: prompt-ensembled zero-shot top-1
  on held-out single-object scenes (24 and 9 classes);
- `side`: a compositional probe that needs word order and position — for a
  single object in the left or right column, the caption "a <object> on
  the left." against "a <object> on the right." (chance 0.5);
- `object_side`: 48-way "a <object> on the <side>." (chance 1/48);
- `swap`: binding — for two objects, one in the left and one in the right
  column, "a <A> on the left and a <B> on the right." against the caption
  with the two swapped (same words, other order; chance 0.5);
- `pointing_game`: the best-matching patch for "the <colour> <shape>." lies
  on that object (held-out scenes of 1-3 objects);
- `grounding_side`: the best-matching patch lies in the object's half of
  the image (left / right of centre; chance 0.5 for a uniform peak);
- `retrieval/R@1` image→text on held-out scenes.

`--variants` trains this checkout with an extra recipe flag per variant
(for instance `conv_init=--patch_init=conv`), to test one change at a time.

    python benchmarks/clip_regression.py --commits=1e6afde,HEAD --seeds=0,1,2

Writes `<out>/results.csv` (one row per run) and prints mean ± std per
commit. Runs already in `<out>` are reused.
"""

import argparse
import csv
import os
import platform
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METRICS = ("zero_shot/object", "zero_shot/position", "side", "object_side", "swap", "pointing_game",
           "grounding_side", "retrieval/R@1")
SIDES = {"left": (0, 3, 6), "right": (2, 5, 8)}  # synthetic.POSITIONS cells per column


def _git(*args, cwd=ROOT):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()


def _worktree(commit, root):
    sha = _git("rev-parse", "--short=7", commit)
    path = os.path.join(root, "worktrees", sha)
    if not os.path.isdir(path):
        _git("worktree", "add", "--detach", path, sha)
    return sha, path


def train(code_dir, output_dir, seed, args, extra_flags=()):
    """Runs `code_dir`'s pretrain recipe unless `output_dir` holds a preset."""
    if os.path.exists(os.path.join(output_dir, "preset", "config.json")):
        return 0.0
    env = dict(os.environ, PYTHONPATH=code_dir, KERAS_BACKEND=args.backend)
    command = [
        sys.executable, os.path.join(code_dir, "recipes", "pretrain.py"),
        "--model=clip", f"--pooling={args.pooling}", f"--image_size={args.image_size}",
        f"--steps={args.steps}", f"--seed={seed}", f"--backend={args.backend}",
        f"--output_dir={output_dir}", "--checkpoint_every_steps=0", *extra_flags,
    ]
    start = time.time()
    log = os.path.join(os.path.dirname(output_dir), os.path.basename(output_dir) + ".log")
    os.makedirs(os.path.dirname(log), exist_ok=True)
    with open(log, "w") as handle:
        subprocess.run(command, cwd=code_dir, env=env, stdout=handle, stderr=subprocess.STDOUT,
                       check=True)
    return time.time() - start


def _side_scenes(n, seed, image_size):
    """Single-object scenes whose object sits in the left or right column."""
    from keras_maeclip.data import synthetic

    images, objects, sides, index = [], [], [], 0
    while len(images) < n:
        example = synthetic.generate_example(index, seed=seed, image_size=image_size,
                                             max_objects=1)
        index += 1
        for side, (name, cells) in enumerate(SIDES.items()):
            if int(example["position"]) in cells:
                images.append(example["image"])
                objects.append(int(example["object"]))
                sides.append(side)
    return np.stack(images), np.array(objects), np.array(sides)


def _swap_scenes(n, seed, image_size):
    """Two-object scenes with one object in the left and one in the right column."""
    from keras_maeclip.data import synthetic

    images, left, right, index = [], [], [], 0
    while len(images) < n:
        example = synthetic.generate_example(index, seed=seed, image_size=image_size,
                                             min_objects=2, max_objects=2)
        index += 1
        columns = [np.nonzero(m.any(axis=0))[0].mean() / image_size for m in example["masks"]]
        sides = ["left" if c < 1 / 3 else "right" if c > 2 / 3 else None for c in columns]
        if sorted(map(str, sides)) == ["left", "right"]:
            names = dict(zip(sides, example["object_names"]))
            images.append(example["image"])
            left.append(names["left"])
            right.append(names["right"])
    return np.stack(images), left, right


def score(preset_dir, image_size, examples=1000, seed=0):
    """The probes of the module docstring for one saved CLIP preset."""
    from keras_maeclip.data import synthetic
    from keras_maeclip.evaluation import grounding as gr
    from keras_maeclip.evaluation import suite
    from keras_maeclip.evaluation import zero_shot as zs
    from keras_maeclip.evaluation.dense import patch_embeddings
    from keras_maeclip.models import CLIP

    model = CLIP.from_preset(preset_dir)
    config = suite.SuiteConfig(examples=examples, seed=seed)
    results = suite.zero_shot(model, config)
    single = suite.held_out(config, "zero_shot", examples, image_size, max_objects=1)
    embeddings = zs.embed_images(model, single["image"])
    classifier = zs.zero_shot_classifier(model, synthetic.CLASS_NAMES["position"],
                                         synthetic.PROMPT_TEMPLATES["position"])
    results["zero_shot/position/top1"] = zs.zero_shot_accuracy(
        embeddings, single["position"], classifier, top_k=(1,))["top1"]

    images, objects, sides = _side_scenes(examples, seed + 20000, image_size)
    image_embeddings = zs.embed_images(model, images)
    names = synthetic.CLASS_NAMES["object"]
    prompts = [f"a {name} on the {side}." for name in names for side in SIDES]
    text = zs.embed_texts(model, prompts)
    text = text / np.linalg.norm(text, axis=-1, keepdims=True)
    image_embeddings = image_embeddings / np.linalg.norm(image_embeddings, axis=-1, keepdims=True)
    scores = (image_embeddings @ text.T).reshape(len(images), len(names), len(SIDES))
    own = scores[np.arange(len(images)), objects]  # (n, sides) for the true object
    results["side"] = float((own.argmax(-1) == sides).mean())
    results["object_side"] = float(
        (scores.reshape(len(images), -1).argmax(-1) == objects * len(SIDES) + sides).mean()
    )

    images, left, right = _swap_scenes(examples, seed + 30000, image_size)
    image_embeddings = zs.embed_images(model, images)
    image_embeddings /= np.linalg.norm(image_embeddings, axis=-1, keepdims=True)
    pairs = []
    for order in ((left, right), (right, left)):
        text = zs.embed_texts(model, [f"a {a} on the left and a {b} on the right."
                                      for a, b in zip(*order)])
        pairs.append((image_embeddings * (text / np.linalg.norm(text, axis=-1, keepdims=True))).sum(-1))
    results["swap"] = float((pairs[0] > pairs[1]).mean())

    scenes = suite.held_out(config, "grounding", examples, image_size)
    results.update({f"grounding/{k}": v for k, v in gr.grounding_score(model, scenes).items()})
    results["grounding_side"] = _grounding_side(model, scenes)
    results.update(suite.retrieval(model, config))
    return {
        "zero_shot/object": results["zero_shot/object/top1"],
        "zero_shot/position": results["zero_shot/position/top1"],
        "side": results["side"],
        "object_side": results["object_side"],
        "swap": results["swap"],
        "pointing_game": results["grounding/pointing_game"],
        "grounding_side": results["grounding_side"],
        "retrieval/R@1": results["retrieval/image_to_text_R@1"],
    }


def _grounding_side(model, scenes):
    """Share of named objects whose heatmap peak is in the object's half of the image."""
    from keras_maeclip.evaluation import grounding as gr
    from keras_maeclip.evaluation.dense import patch_embeddings
    from keras_maeclip.evaluation.zero_shot import embed_texts

    images, masks, names = gr.grounding_examples(scenes)
    pairs = [(i, k) for i, row in enumerate(names) for k, name in enumerate(row) if name]
    patches = patch_embeddings(model, images)
    texts = embed_texts(model, [f"the {names[i][k]}." for i, k in pairs])
    heat = gr.heatmaps_from_embeddings(patches[[i for i, _ in pairs]], texts)
    grid = heat.shape[-1]
    peak_x = heat.reshape(len(pairs), -1).argmax(-1) % grid
    hits, counted = 0, 0
    for (i, k), x in zip(pairs, peak_x):
        columns = np.nonzero(masks[i, k].any(axis=0))[0]
        centre = masks.shape[-1] / 2
        object_x = columns.mean()
        if abs(object_x - centre) < masks.shape[-1] / 6:
            continue  # the middle column has no side
        counted += 1
        hits += ((x + 0.5) / grid < 0.5) == (object_x < centre)
    return hits / max(counted, 1)


def _parse_variants(text):
    variants = {}
    for item in filter(None, (text or "").split(";")):
        name, _, flags = item.partition("=")
        variants[name.strip()] = tuple(flags.split())
    return variants


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commits", default="1e6afde,HEAD")
    parser.add_argument("--variants", default="",
                        help="'name=--flag=value --flag2;name2=...': runs of this checkout.")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument("--pooling", default="max")
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--out", default=os.path.join(ROOT, "runs", "clip_regression"))
    args = parser.parse_args()
    args.out = os.path.abspath(args.out)  # the recipes run inside their worktrees
    os.environ["KERAS_BACKEND"] = args.backend
    seeds = [int(s) for s in args.seeds.split(",")]
    runs = []  # (label, code_dir, flags)
    for commit in filter(None, args.commits.split(",")):
        sha, path = _worktree(commit, args.out)
        runs.append((f"{commit}:{sha}" if commit != sha else sha, path, ()))
    for name, flags in _parse_variants(args.variants).items():
        runs.append((name, ROOT, flags))

    import keras

    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"keras {keras.__version__}, backend {args.backend}; CLIP {args.pooling}, "
          f"{args.image_size}², {args.steps} steps, seeds {seeds}", flush=True)
    rows = []
    for label, code_dir, flags in runs:
        for seed in seeds:
            run_dir = os.path.join(args.out, label.replace(":", "_").replace("/", "_"), f"seed{seed}")
            seconds = train(code_dir, run_dir, seed, args, flags)
            row = {"run": label, "seed": seed, "train_s": round(seconds, 1)}
            row.update(score(os.path.join(run_dir, "preset"), args.image_size, args.examples))
            rows.append(row)
            print(", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                            for k, v in row.items()), flush=True)
            with open(os.path.join(args.out, "results.csv"), "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
    print("\n| run | " + " | ".join(METRICS) + " |")
    print("|---|" + "---|" * len(METRICS))
    for label, _, _ in runs:
        mine = [r for r in rows if r["run"] == label]
        cells = [f"{np.mean([r[m] for r in mine]):.3f} ± {np.std([r[m] for r in mine]):.3f}"
                 for m in METRICS]
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
