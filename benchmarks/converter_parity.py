"""Converted towers against the real libraries: open_clip and timm, randomly initialised.

The test suite checks the converters against NumPy forwards written from
open_clip's and timm's code (`tests/models/timm_reference.py`); this script
checks them against open_clip 3.3.0 and timm themselves, which the pinned
stack cannot hold. It needs the optional open_clip environment of
docs/benchmarks.md (`.venv-openclip`: torch 2.14.1, open_clip_torch 3.3.0,
timm 1.0.x).

1. `--dump` (run by `--open_clip_python`): builds each model with random
   weights (`open_clip.create_model(name, pretrained=None)`,
   `timm.create_model(name, pretrained=False)`), runs it on seeded random
   images and writes its state dict, the images and its output to
   `<work_dir>/<model>.npz`. Nothing is downloaded.
2. For each backend, in its own process: converts each state dict with this
   library, runs the tower on the same images, prints max |Δ| and the
   largest output magnitude.

Models (224², batch 2): open_clip `ViT-B-16` (image embedding,
`encode_image`, unnormalised; GELU) and `ViT-B-16-quickgelu`; timm
`vit_small_patch16_224` (`forward_features`: every token) and
`vit_base_patch16_clip_224` (`norm_pre`, LayerNorm 1e-5).

Usage:
    python benchmarks/converter_parity.py                  # jax, tensorflow, torch
    python benchmarks/converter_parity.py --backends=jax --models=vit_small_patch16_224
"""

import json
import os
import subprocess
import sys
import tempfile
import time

MODELS = {
    # name: (library, constructor name, converter options)
    "ViT-B-16": ("open_clip", "ViT-B-16", {"quick_gelu": False}),
    "ViT-B-16-quickgelu": ("open_clip", "ViT-B-16-quickgelu", {"quick_gelu": True}),
    "vit_small_patch16_224": ("timm", "vit_small_patch16_224", {}),
    "vit_base_patch16_clip_224": ("timm", "vit_base_patch16_clip_224", {"layer_norm_epsilon": 1e-5}),
}
_PREFIX = "PARITY_JSON: "


def dump(config):
    """In the open_clip environment (no absl, no Keras): random models, outputs, state dicts."""
    import numpy as np
    import torch

    for name in config["models"]:
        library, constructor, _ = MODELS[name]
        torch.manual_seed(config["seed"])
        if library == "open_clip":
            import open_clip

            model = open_clip.create_model(constructor, pretrained=None).eval()
            state = {f"visual.{k}": v for k, v in model.visual.state_dict().items()}
            run = model.encode_image
        else:
            import timm

            model = timm.create_model(constructor, pretrained=False).eval()
            state = model.state_dict()
            run = model.forward_features
        images = np.random.default_rng(config["seed"]).normal(size=(2, 224, 224, 3)).astype("float32")
        with torch.no_grad():
            out = run(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
        arrays = {f"state/{k}": v.detach().float().numpy() for k, v in state.items()}
        np.savez(os.path.join(config["work_dir"], f"{name}.npz"), images=images, output=out, **arrays)
        versions = {"torch": torch.__version__}
        for package in ("open_clip", "timm"):
            try:
                versions[package] = __import__(package).__version__
            except ImportError:
                pass
        print(_PREFIX + json.dumps({"model": name, "output_shape": list(out.shape), "versions": versions}))


if __name__ == "__main__" and sys.argv[1:2] == ["--dump"]:
    dump(json.loads(sys.argv[2]))
    sys.exit(0)

from absl import app, flags  # noqa: E402  (not in the open_clip environment)

from machine import machine_facts  # noqa: E402  (benchmarks/machine.py)

flags.DEFINE_list("backends", ["jax", "tensorflow", "torch"], "Backends to convert and run on.")
flags.DEFINE_list("models", list(MODELS), "Models to check.")
flags.DEFINE_string(
    "open_clip_python",
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".venv-openclip", "bin", "python"),
    "Python of the optional open_clip environment (with timm).",
)
flags.DEFINE_string("work_dir", None, "Where the .npz dumps go (default: a temporary folder).")
flags.DEFINE_integer("seed", 0, "Seed of the weights and images.")
flags.DEFINE_string("backend", None, "Internal: convert and compare on this backend.")
FLAGS = flags.FLAGS


def compare(work_dir, backend):
    """In our environment, one backend: convert, run, max |Δ| per model."""
    import keras
    import numpy as np

    from keras_maeclip.models import image_tower_from_open_clip, vit_encoder_from_timm

    assert keras.config.backend() == backend
    for name in FLAGS.models:
        library, _, options = MODELS[name]
        data = np.load(os.path.join(work_dir, f"{name}.npz"))
        state = {k[len("state/"):]: data[k] for k in data.files if k.startswith("state/")}
        started = time.perf_counter()
        if library == "open_clip":
            encoder, projection = image_tower_from_open_clip(state, **options)
            tokens = keras.ops.convert_to_numpy(encoder(data["images"]))
            ours = tokens[:, 0] @ projection  # token pooling, then proj
        else:
            encoder = vit_encoder_from_timm(state, **options)
            ours = keras.ops.convert_to_numpy(encoder(data["images"]))
        reference = data["output"]
        print(_PREFIX + json.dumps({
            "model": name, "backend": backend, "max_abs_diff": float(np.max(np.abs(ours - reference))),
            "max_abs_output": float(np.max(np.abs(reference))), "shape": list(ours.shape),
            "seconds": time.perf_counter() - started,
        }))


def _results(proc):
    rows = [json.loads(line[len(_PREFIX):]) for line in proc.stdout.splitlines() if line.startswith(_PREFIX)]
    if proc.returncode:
        sys.stderr.write(proc.stderr[-3000:])
    return rows


def main(argv):
    del argv
    unknown = [m for m in FLAGS.models if m not in MODELS]
    if unknown:
        raise app.UsageError(f"Unknown models {unknown}; choose from {list(MODELS)}.")
    work_dir = FLAGS.work_dir or tempfile.mkdtemp(prefix="converter_parity_")
    if FLAGS.backend:
        return compare(work_dir, FLAGS.backend)
    if not os.path.exists(FLAGS.open_clip_python):
        raise app.UsageError(
            f"--open_clip_python={FLAGS.open_clip_python} does not exist; create the optional "
            "environment (docs/benchmarks.md).")
    facts = machine_facts()
    print("# Converted towers against open_clip and timm (random weights, 224², batch 2)")
    print(f"date:     {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(f"cpu:      {facts['cpu_model']}; {facts['cpu_count']} CPUs; RAM {facts['mem_total_gib']} GiB")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in facts["versions"].items()))
    common = [f"--models={','.join(FLAGS.models)}", f"--work_dir={work_dir}", f"--seed={FLAGS.seed}"]
    script = os.path.abspath(__file__)
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    config = {"models": FLAGS.models, "work_dir": work_dir, "seed": FLAGS.seed}
    dumped = _results(subprocess.run([FLAGS.open_clip_python, script, "--dump", json.dumps(config)],
                                     capture_output=True, text=True, env=env))
    if dumped:
        print("reference: " + ", ".join(f"{k} {v}" for k, v in dumped[0]["versions"].items()))
    rows = []
    for backend in FLAGS.backends:
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
        rows += _results(subprocess.run([sys.executable, script, f"--backend={backend}", *common],
                                        capture_output=True, text=True, env=env))
    print()
    print("| model | backend | output | max abs output | max abs diff |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['backend']} | {tuple(r['shape'])} | {r['max_abs_output']:.3g} "
              f"| {r['max_abs_diff']:.2e} |")
    missing = len(FLAGS.models) * len(FLAGS.backends) - len(rows)
    if missing:
        print(f"{missing} model/backend pairs FAILED (see stderr).")
    return 1 if missing or not dumped else 0


if __name__ == "__main__":
    app.run(main)
