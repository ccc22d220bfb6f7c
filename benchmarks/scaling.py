"""Step time and peak memory of bench-small CLIP / MAE-CLIP against batch,
resolution and image mask ratio, with and without rematerialisation.

What it measures
----------------
Item 6 of issue 12. For each model (`clip_bench_small`,
`maeclip_bench_small`) and each `--remat_modes` value (`none`: plain;
`activations`: the model built inside
`keras_maeclip.training.remat_scope("activations")`, as
`recipes/pretrain.py --remat=activations` does), three one-factor sweeps
around a base point (batch 64, 128², image mask 0.75):

* batch ∈ `--batch_sizes` (32, 64, 128) at 128², mask 0.75;
* image size ∈ `--image_sizes` (64, 128, 224; patch 16: 16, 64, 196
  patches) at batch 64, mask 0.75 (`from_preset(image_size=...)`);
* image mask ratio ∈ `--mask_ratios` (0.5, 0.75, 0.9) at batch 64, 128²,
  MAE-CLIP only (CLIP masks nothing: its base point is drawn as a
  horizontal reference line in that panel).

Identical points (the base point is in all three sweeps) run once. Each
point is one worker subprocess of `benchmarks/train_step.py` (this script
imports it and calls its `run_backend`, so the measurement is exactly that
script's: a fixed seeded batch from memory, `fit` with `--warmup` untimed
+ `--steps` timed steps, median step time; see its docstring), one process
per point so that each point's peak memory is its own. The remat on / off
runs of a point run back to back (the machine is noisy).

Memory, per point (all resident set size, RSS, of the worker process):

* `max RSS`: the process' peak RSS: the framework (Keras, the backend,
  TensorFlow for tf.data), the model's weights, the batch, and everything
  `fit` added, including XLA's compiled program and the compiler's own
  peak on JAX / TensorFlow.
* `before fit`: the RSS just before `fit` (framework, weights, batch).
* `growth` = max RSS − before fit: what training added (compilation,
  optimizer state, activations, gradients).
* `timed growth` = peak RSS over the timed steps only − before fit (the
  worker resets the process' peak, `/proc/self/clear_refs`, at the end of
  the warm-up): training memory without the compiler's peak. On eager
  PyTorch the two growth figures agree up to noise; on JAX / TensorFlow
  `growth` includes compilation. `memory.png` plots `timed growth` (or
  `growth` where the reset was not possible).

Output: a header (machine, versions, load average, settings, the run list
with an ETA), one line per finished run, then the table (also
`OUTPUT_DIR/results.md`), the raw results (`OUTPUT_DIR/results.json`) and
two figures: `step_time.png` (median step time) and `memory.png` (RSS
growth), each 1 × 3 panels (batch, resolution, mask ratio) with lines for
CLIP / MAE-CLIP × remat none / activations. A failed point shows as FAILED
with its error; the sweep goes on.

How to run
----------
    python benchmarks/scaling.py                       # the full grid, torch (≈ 15 min idle, 2 cores)
    python benchmarks/scaling.py --dry_run             # list the runs, exit
    python benchmarks/scaling.py --backend=jax --output_dir=docs/scaling_jax
    python benchmarks/scaling.py --replot              # redraw the PNGs from results.json
    python benchmarks/scaling.py --steps=1 --warmup=1 --batch_sizes=4 --image_sizes=32,64 \\
        --mask_ratios=0.75 --base_batch_size=4 --base_image_size=32 --output_dir=/tmp/s  # smoke

train_step.py's own flags apply too (`--dtype`, `--jit`, `--threads`,
`--timeout`, `--seed`, ...); the ones this script sets per point
(`--batch_size`, `--image_size`, `--mask_ratio`, `--remat`, `--model`)
must not be given.
"""

import json
import os
import sys
import time

from absl import app
from absl import flags

import train_step  # benchmarks/: this script's folder is on sys.path; defines its flags
from machine import machine_facts

_MODELS = ("clip", "maeclip")
_REMAT_MODES = ("none", "activations")
_LABELS = {"clip": "CLIP", "maeclip": "MAE-CLIP"}
_PATCH = 16  # bench-small's patch size (for the ETA's cost model and the labels)

FLAGS = flags.FLAGS
# Reused from train_step.py with this script's defaults: --backend (there the
# worker's backend), --steps, --warmup, --models.
FLAGS.set_default("backend", "torch")
FLAGS.set_default("steps", 5)
FLAGS.set_default("warmup", 2)
flags.DEFINE_list("remat_modes", list(_REMAT_MODES), "Remat modes: none, activations.")
flags.DEFINE_list("batch_sizes", ["32", "64", "128"], "Batch sweep (at the base image size and mask).")
flags.DEFINE_list("image_sizes", ["64", "128", "224"], "Resolution sweep (at the base batch and mask).")
flags.DEFINE_list("mask_ratios", ["0.5", "0.75", "0.9"], "MAE-CLIP image mask sweep (base batch, size).")
flags.DEFINE_integer("base_batch_size", 64, "Batch of the resolution and mask sweeps.", lower_bound=1)
flags.DEFINE_integer("base_image_size", 128, "Image size of the batch and mask sweeps.", lower_bound=_PATCH)
flags.DEFINE_float("base_mask_ratio", 0.75, "MAE-CLIP mask of the batch and resolution sweeps.")
flags.DEFINE_string("output_dir", "docs/scaling", "Where results.json, results.md and the PNGs go.")
flags.DEFINE_bool("dry_run", False, "Print the runs and exit.")
flags.DEFINE_bool("replot", False, "Only redraw the PNGs from OUTPUT_DIR/results.json.")

# train_step flags that this script sets for every point.
_PER_POINT_FLAGS = ("batch_size", "image_size", "mask_ratio", "remat", "model", "backends",
                    "reference", "rounds", "worker")


# --------------------------------------------------------------------------
# The grid.
# --------------------------------------------------------------------------


def _point(model, remat, batch, size, mask):
    return {"model": model, "remat": remat, "batch_size": batch, "image_size": size,
            "mask_ratio": mask if model == "maeclip" else None}


def _key(p):
    return (p["model"], p["remat"], p["batch_size"], p["image_size"], p["mask_ratio"])


def build_grid(models, remat_modes, batch_sizes, image_sizes, mask_ratios,
               base_batch, base_size, base_mask):
    """The deduplicated runs, in run order: per model, per point, the remat modes back to back.

    Each point lists the sweeps it belongs to ("batch", "resolution", "mask")."""
    points = {}
    order = []

    def add(model, batch, size, mask, sweep):
        shape = _point(model, None, batch, size, mask)
        key = _key(shape)
        if key not in points:
            points[key] = dict(shape, sweeps=[])
            order.append(key)
        if sweep not in points[key]["sweeps"]:
            points[key]["sweeps"].append(sweep)

    for model in models:
        for b in batch_sizes:
            add(model, b, base_size, base_mask, "batch")
        for s in image_sizes:
            add(model, base_batch, s, base_mask, "resolution")
        if model == "maeclip":
            for m in mask_ratios:
                add(model, base_batch, base_size, m, "mask")
        # CLIP's base point: the mask panel's reference line.
        add(model, base_batch, base_size, base_mask, "base")
    runs = []
    for key in order:
        for remat in remat_modes:
            runs.append(dict(points[key], remat=remat))
    return runs


def _describe(p):
    mask = f"mask {p['mask_ratio']}" if p["mask_ratio"] is not None else "no mask"
    return (f"{_LABELS[p['model']]:8s} remat={p['remat']:11s} batch {p['batch_size']:4d} "
            f"{p['image_size']:4d}² {mask}")


# --------------------------------------------------------------------------
# ETA: a rough cost model (matmul FLOPs per sample of bench-small), scaled by
# the step times measured so far.
# --------------------------------------------------------------------------


def _layer_cost(tokens, width):
    return 24 * tokens * width**2 + 4 * tokens**2 * width  # QKV/out/MLP + attention


def cost_per_sample(p):
    patches = (p["image_size"] // _PATCH) ** 2
    text = 32
    cost = 2 * patches * _PATCH**2 * 3 * 384  # patch embedding
    if p["model"] == "maeclip":
        seen = max(1, patches - int(round(p["mask_ratio"] * patches)))
        cost += 6 * _layer_cost(seen, 384) + 6 * _layer_cost(text, 256)
        cost += 4 * _layer_cost(patches + text, 256) + 2 * 5 * 30522 * 256
    else:
        cost += 6 * _layer_cost(patches, 384) + 6 * _layer_cost(text, 256)
    return cost


class Eta:
    """Seconds left: per run, process overhead + (warmup + steps) × predicted step."""

    def __init__(self, steps_per_run):
        self.steps_per_run = steps_per_run
        base = _point("clip", "none", 64, 128, None)
        self.seconds_per_cost = [2.7 / (64 * cost_per_sample(base))]  # torch, idle, from docs
        self.overheads = [15.0]  # import + build + first step, torch
        self.measured = False

    def update(self, p, r):
        if not r.get("ok"):
            return
        if not self.measured:
            self.seconds_per_cost, self.overheads, self.measured = [], [], True
        self.seconds_per_cost.append(r["median_step_s"] / (p["batch_size"] * cost_per_sample(p)))
        self.overheads.append(max(0.0, r["wall_s"] - sum(r["step_times_s"])
                                  - sum(r.get("warmup_step_s", []))) + r["first_step_s"])

    def predict(self, p):
        spc = sorted(self.seconds_per_cost)[len(self.seconds_per_cost) // 2]
        overhead = sum(self.overheads) / len(self.overheads)
        # The first step is part of the overhead; the others at the median step time.
        return overhead + (self.steps_per_run - 1) * spc * p["batch_size"] * cost_per_sample(p)

    def left(self, runs):
        return sum(self.predict(p) for p in runs)


def _fmt_duration(s):
    s = int(round(s))
    return f"{s // 3600} h {s % 3600 // 60:02d} min" if s >= 3600 else f"{s // 60} min {s % 60:02d} s"


# --------------------------------------------------------------------------
# Table and figures.
# --------------------------------------------------------------------------

_HEADER = ["model", "remat", "batch", "image", "mask", "median step (s)", "samples/s",
           "max RSS (GiB)", "before fit (GiB)", "growth (GiB)", "timed growth (GiB)",
           "load avg"]


def _f(x, fmt):
    return "-" if x is None else format(x, fmt)


def _timed_growth(r):
    peak, before = r.get("peak_rss_timed_gib"), r.get("rss_before_fit_gib")
    if peak is not None and before is not None:
        return peak - before
    return None


def _row_cells(r):
    cells = [_LABELS.get(r["model"], r["model"]), r["remat"], str(r["batch_size"]),
             f"{r['image_size']}²", "-" if r.get("mask_ratio") is None else f"{r['mask_ratio']:g}"]
    if not r.get("ok"):
        return cells + ["FAILED: " + r.get("error", "?")[:200].replace("|", "/")] + [""] * (len(_HEADER) - len(cells) - 1)
    load = r.get("loadavg_start")
    return cells + [
        f"{r['median_step_s']:.3f}", f"{r['samples_per_s']:.1f}",
        _f(r.get("max_rss_gib"), ".2f"), _f(r.get("rss_before_fit_gib"), ".2f"),
        _f(r.get("rss_growth_gib"), ".2f"), _f(_timed_growth(r), ".2f"),
        f"{load[0]:.1f}" if load else "-",
    ]


def markdown_table(rows):
    lines = ["| " + " | ".join(_HEADER) + " |", "|" + "---|" * len(_HEADER)]
    lines += ["| " + " | ".join(_row_cells(r)) + " |" for r in rows]
    return "\n".join(lines)


def remat_table(rows):
    """Per point with both modes: step time and timed growth, activations over none."""
    by_key = {}
    for r in rows:
        if r.get("ok"):
            by_key[(r["model"], r["batch_size"], r["image_size"], r.get("mask_ratio"), r["remat"])] = r
    lines = ["| model | batch | image | mask | step activations / none | timed growth none → activations (GiB) |",
             "|---|---|---|---|---|---|"]
    n = 0
    for (model, b, s, m, remat), on in by_key.items():
        off = by_key.get((model, b, s, m, "none"))
        if remat != "activations" or off is None:
            continue
        g_off, g_on = _timed_growth(off), _timed_growth(on)
        growth = f"{g_off:.2f} → {g_on:.2f}" if g_off is not None and g_on is not None else "-"
        lines.append(f"| {_LABELS[model]} | {b} | {s}² | {'-' if m is None else f'{m:g}'} | "
                     f"{on['median_step_s'] / off['median_step_s']:.2f} | {growth} |")
        n += 1
    return "\n".join(lines) if n else ""


def _memory_value(r):
    g = _timed_growth(r)
    return g if g is not None else r.get("rss_growth_gib")


def plot(data, output_dir):
    """step_time.png and memory.png from a results.json dict; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in data["results"] if r.get("ok")]
    s = data["settings"]
    base_b, base_s, base_m = s["base_batch_size"], s["base_image_size"], s["base_mask_ratio"]
    facts = data["machine"]
    cpus = len(facts.get("sched_getaffinity") or []) or facts.get("cpu_count")
    machine = f"{facts.get('cpu_model', '?')}, {cpus} CPUs, {facts.get('mem_total_gib')} GiB"
    jit = rows[0]["jit_compile"] if rows else None
    backend = s["backend"] + (" (XLA)" if jit and s["backend"] != "torch" else
                              " (torch.compile)" if jit else " (eager)")
    colors = {"clip": "tab:blue", "maeclip": "tab:orange"}
    styles = {"none": ("-", "o"), "activations": ("--", "s")}
    panels = [
        ("batch", "batch_size", "batch size (samples)",
         f"vs batch ({base_s}², MAE-CLIP mask {base_m:g})",
         lambda r: r["image_size"] == base_s and r.get("mask_ratio") in (None, base_m)),
        ("resolution", "image_size", f"image size (pixels per side; patch {_PATCH})",
         f"vs resolution (batch {base_b}, MAE-CLIP mask {base_m:g})",
         lambda r: r["batch_size"] == base_b and r.get("mask_ratio") in (None, base_m)),
        ("mask", "mask_ratio", "MAE-CLIP image mask ratio",
         f"vs image mask ratio (batch {base_b}, {base_s}²)",
         lambda r: r["batch_size"] == base_b and r["image_size"] == base_s),
    ]
    figures = [
        ("step_time.png", lambda r: r["median_step_s"], "median train-step time (s)",
         "Train-step time"),
        ("memory.png", _memory_value,
         "RSS growth in training (GiB)\n(peak RSS over timed steps − RSS before fit)",
         "Training memory"),
    ]
    paths = []
    for filename, value, ylabel, what in figures:
        fig, axes = plt.subplots(1, 3, figsize=(16, 5.2))
        for ax, (sweep, xkey, xlabel, title, keep) in zip(axes, panels):
            for model in s["models"]:
                for remat in s["remat_modes"]:
                    pts = [r for r in rows if r["model"] == model and r["remat"] == remat
                           and keep(r) and value(r) is not None]
                    label = f"{_LABELS[model]}, remat {remat}"
                    ls, marker = styles.get(remat, (":", "^"))
                    if sweep == "mask" and model == "clip":
                        if pts:  # CLIP masks nothing: its base point as a reference line.
                            ax.axhline(value(pts[0]), color=colors[model], ls=ls, lw=1.2,
                                       alpha=0.8, label=f"{label} (no mask, reference)")
                        continue
                    pts.sort(key=lambda r: r[xkey])
                    if pts:
                        ax.plot([r[xkey] for r in pts], [value(r) for r in pts], ls=ls,
                                marker=marker, color=colors[model], label=label)
            xs = sorted({r[xkey] for r in rows if keep(r) and r[xkey] is not None})
            if xs:
                ax.set_xticks(xs)
                if sweep == "resolution":
                    ax.set_xticklabels([f"{x}²\n{(x // _PATCH) ** 2} patches" for x in xs])
                else:
                    ax.set_xticklabels([f"{x:g}" for x in xs])
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.set_title(title)
            ax.set_ylim(bottom=0)
            ax.grid(True, alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8, loc="best")
        fig.suptitle(
            f"{what}, bench-small CLIP / MAE-CLIP, {backend}, {s['dtype']}, median of "
            f"{s['steps']} timed step{'s' if s['steps'] > 1 else ''} after {s['warmup']} "
            f"warm-up; {machine}; "
            f"{data.get('date', '')}", fontsize=10)
        fig.tight_layout(rect=(0, 0, 1, 0.95))
        path = os.path.join(output_dir, filename)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


# --------------------------------------------------------------------------
# Main.
# --------------------------------------------------------------------------


def _settings():
    return {
        "backend": FLAGS.backend, "models": FLAGS.models, "remat_modes": FLAGS.remat_modes,
        "batch_sizes": [int(b) for b in FLAGS.batch_sizes],
        "image_sizes": [int(s) for s in FLAGS.image_sizes],
        "mask_ratios": [float(m) for m in FLAGS.mask_ratios],
        "base_batch_size": FLAGS.base_batch_size, "base_image_size": FLAGS.base_image_size,
        "base_mask_ratio": FLAGS.base_mask_ratio, "steps": FLAGS.steps, "warmup": FLAGS.warmup,
        "dtype": FLAGS.dtype, "jit": FLAGS.jit, "torch_compile": FLAGS.torch_compile,
        "threads": FLAGS.threads, "seed": FLAGS.seed, "preset": FLAGS.preset,
        "maeclip_preset": FLAGS.maeclip_preset,
    }


def _write(output_dir, data, rows):
    with open(os.path.join(output_dir, "results.json"), "w") as f:
        json.dump(data, f, indent=1)
    s = data["settings"]
    facts = data["machine"]
    remat = remat_table(rows)
    with open(os.path.join(output_dir, "results.md"), "w") as f:
        f.write(f"# Scaling and memory, {s['backend']} ({data['date']})\n\n")
        f.write(f"`{data['command']}`\n\n")
        f.write(f"Machine: {facts['cpu_model']}, affinity {facts['sched_getaffinity']}, "
                f"{facts['mem_total_gib']} GiB; load average at start {data['loadavg_start']}. "
                "Versions: " + ", ".join(f"{k} {v}" for k, v in facts["versions"].items())
                + ".\n\n")
        f.write(f"{s['dtype']}, {s['warmup']} warm-up + {s['steps']} timed steps, median. "
                "max RSS: process peak; before fit: RSS before `fit`; growth = max − before; "
                "timed growth = peak over the timed steps − before.\n\n")
        f.write(markdown_table(rows) + "\n")
        if remat:
            f.write("\nremat activations against none, same point:\n\n" + remat + "\n")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    output_dir = FLAGS.output_dir
    if FLAGS.replot:
        with open(os.path.join(output_dir, "results.json")) as f:
            data = json.load(f)
        for path in plot(data, output_dir):
            print(f"wrote {path}")
        return 0
    given = [name for name in _PER_POINT_FLAGS if FLAGS[name].present]
    if given:
        raise app.UsageError(
            f"--{', --'.join(given)}: set per point by this script (use --batch_sizes, "
            "--image_sizes, --mask_ratios, --remat_modes, --models, --backend).")
    bad = [m for m in FLAGS.models if m not in _MODELS]
    if bad:
        raise app.UsageError(f"--models: unknown {bad}; choose from {_MODELS}.")
    bad = [m for m in FLAGS.remat_modes if m not in _REMAT_MODES]
    if bad:
        raise app.UsageError(f"--remat_modes: unknown {bad}; choose from {_REMAT_MODES}.")
    settings = _settings()
    runs = build_grid(FLAGS.models, FLAGS.remat_modes, settings["batch_sizes"],
                      settings["image_sizes"], settings["mask_ratios"], FLAGS.base_batch_size,
                      FLAGS.base_image_size, FLAGS.base_mask_ratio)
    eta = Eta(FLAGS.warmup + FLAGS.steps)

    facts = machine_facts()
    date = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    command = "python " + " ".join(
        [os.path.relpath(os.path.abspath(sys.argv[0]))] + sys.argv[1:])
    print("# Scaling and memory: bench-small CLIP / MAE-CLIP (keras_maeclip, issue 12 item 6)")
    print(f"date:      {date}")
    print(f"command:   {command}")
    print(f"platform:  {facts['platform']}")
    print(f"cpu:       {facts['cpu_model']}; os.cpu_count()={facts['cpu_count']}; "
          f"sched_getaffinity={facts['sched_getaffinity']}; RAM {facts['mem_total_gib']} GiB")
    print(f"load avg:  {os.getloadavg()}")
    print(f"python:    {facts['python']}")
    print("versions:  " + ", ".join(f"{k} {v}" for k, v in facts["versions"].items()))
    print(f"settings:  backend {FLAGS.backend}, jit={FLAGS.jit}, dtype {FLAGS.dtype}, "
          f"warm-up {FLAGS.warmup} + timed {FLAGS.steps} steps, threads={FLAGS.threads or 'default'}, "
          f"seed {FLAGS.seed}; base point batch {FLAGS.base_batch_size}, "
          f"{FLAGS.base_image_size}², mask {FLAGS.base_mask_ratio}")
    print(f"memory:    max RSS = process peak RSS; growth = max − RSS before fit; timed growth = "
          f"peak RSS over the timed steps − RSS before fit")
    print(f"runs:      {len(runs)} (one subprocess each; remat modes of a point back to back)")
    for i, p in enumerate(runs, 1):
        sweeps = [w for w in p["sweeps"] if w != "base"] or ["base"]
        print(f"  {i:3d}. {_describe(p)}   [{', '.join(sweeps)}]")
    print(f"ETA:       ~{_fmt_duration(eta.left(runs))} (rough: cost model scaled from a "
          f"2.7 s torch CLIP step at batch 64, 128², until the first run is measured)")
    sys.stdout.flush()
    if FLAGS.dry_run:
        return 0

    os.makedirs(output_dir, exist_ok=True)
    data = {"date": date, "command": command, "machine": facts,
            "loadavg_start": os.getloadavg(), "settings": settings, "results": []}
    rows = data["results"]
    t0 = time.perf_counter()
    for i, p in enumerate(runs, 1):
        FLAGS.batch_size = p["batch_size"]
        FLAGS.image_size = p["image_size"]
        FLAGS.mask_ratio = p["mask_ratio"] if p["mask_ratio"] is not None else FLAGS.base_mask_ratio
        FLAGS.remat = p["remat"]
        r = train_step.run_backend(FLAGS.backend, p["model"])
        r.update({k: p[k] for k in ("model", "remat", "batch_size", "image_size", "mask_ratio",
                                     "sweeps")})
        r.setdefault("backend", FLAGS.backend)
        rows.append(r)
        eta.update(p, r)
        status = (f"median {r['median_step_s']:.3f} s, max RSS {_f(r.get('max_rss_gib'), '.2f')} "
                  f"GiB, timed growth {_f(_timed_growth(r), '.2f')} GiB" if r.get("ok")
                  else f"FAILED: {r.get('error', '?')}")
        left = eta.left(runs[i:])
        print(f"[{i}/{len(runs)}] {_describe(p)}: {status}; {r['wall_s']:.0f} s; "
              f"elapsed {_fmt_duration(time.perf_counter() - t0)}, ETA {_fmt_duration(left)} "
              f"(~{time.strftime('%H:%M', time.localtime(time.time() + left))}); "
              f"load {os.getloadavg()[0]:.1f}")
        sys.stdout.flush()
        _write(output_dir, data, rows)  # after every run: a partial sweep is kept

    data["loadavg_end"] = os.getloadavg()
    data["wall_s"] = time.perf_counter() - t0
    _write(output_dir, data, rows)
    print()
    print(markdown_table(rows))
    remat = remat_table(rows)
    if remat:
        print()
        print("remat activations against none, same point:")
        print(remat)
    print()
    for path in plot(data, output_dir):
        print(f"wrote {path}")
    print(f"wrote {os.path.join(output_dir, 'results.json')}, "
          f"{os.path.join(output_dir, 'results.md')}; total {_fmt_duration(data['wall_s'])}")
    failed = [r for r in rows if not r.get("ok")]
    for r in failed:
        print(f"FAILED: {_describe(r)}: {r.get('error', '?')}")
    return 1 if failed else 0


if __name__ == "__main__":
    app.run(main)
