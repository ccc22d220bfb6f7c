"""The study's report: `results.csv`, `results.md` and PNG plots.

Everything here works from the rows of `results.csv` alone (plus each
run's `train_log.csv` for the loss curves, when present), so a report can
be rebuilt, or made from someone else's results, without training:

    write_report(read_csv("runs/study/results.csv"), "runs/study")

Aggregates are over seeds per (variant, size): the mean and the sample
standard deviation (`ddof=1`; undefined, shown as "–", for one seed).
Plots are drawn with matplotlib's Agg backend (no display needed).

References:
    Weers et al., arXiv 2301.07836 (the comparisons the table and plots
    are for).
"""

import csv
import fnmatch
import math
import os

import numpy as np

from keras_maeclip import extras
from keras_maeclip.study import grid

ID_COLUMNS = ("variant", "model", "size", "seed", "steps", "wall_s", "run_dir")
# Default table / plot metrics, in this order, those present in the results.
HEADLINE_METRICS = (
    "zero_shot/object/top1",
    "zero_shot/colour/top1",
    "zero_shot/shape/top1",
    "zero_shot/*/top1",
    "retrieval/image_to_text_R@1",
    "retrieval/text_to_image_R@1",
    "linear_probe/*/top1",
    "vqa/accuracy",
    "segmentation/*/mean_iou",
    "grounding/pointing_game",
    "grounding/grounding_iou",
    "eval/contrastive_loss",
    "eval/image_reconstruction_loss",
    "eval/text_reconstruction_loss",
)
LOSS_COLUMN = "loss"


def rows_from_results(results):
    """Flat rows (id columns then metrics) from the runs' `result.json` dicts."""
    rows = []
    for result in results:
        config = result["config"]
        row = {
            "variant": config["variant"], "model": config["model"], "size": int(config["size"]),
            "seed": int(config["seed"]), "steps": int(config["steps"]), "wall_s": float(result["wall_s"]),
            "run_dir": result.get("run_dir", ""),
        }
        row.update({k: float(v) for k, v in result["metrics"].items()})
        rows.append(row)
    return rows


def metric_columns(rows):
    """Every metric name of the rows, sorted."""
    return sorted({k for row in rows for k in row if k not in ID_COLUMNS})


def write_csv(rows, path):
    """One row per run: the id columns, then every metric (blank: not measured)."""
    columns = list(ID_COLUMNS) + metric_columns(rows)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        for row in sorted(rows, key=_row_order):
            writer.writerow({k: _csv_value(v) for k, v in row.items()})
    return path


def _csv_value(value):
    if isinstance(value, float) and math.isnan(value):
        return ""
    return repr(value) if isinstance(value, float) else value


def read_csv(path):
    """The rows of a `results.csv`: ids as str / int, metrics as float (NaN: blank)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = []
        for raw in csv.DictReader(f):
            row = {}
            for key, value in raw.items():
                if key in ("variant", "model", "run_dir"):
                    row[key] = value
                elif key in ("size", "seed", "steps"):
                    row[key] = int(value)
                else:
                    row[key] = float(value) if value != "" else float("nan")
            rows.append(row)
    return rows


_GRID_ORDER = {v.name: i for i, v in enumerate(grid.all_variants())}


def _variant_order(name):
    return (_GRID_ORDER.get(name, len(_GRID_ORDER)), name)


def _row_order(row):
    return (_variant_order(row["variant"]), row["size"], row["seed"])


def _variants_in_order(rows):
    """The rows' variants in the grid's order (unknown names last, by name)."""
    return sorted({row["variant"] for row in rows}, key=_variant_order)


def aggregate(rows, metrics):
    """Mean, sample std and count over seeds of each metric per (variant, size).

    Args:
        rows: result rows (`read_csv` / `rows_from_results`).
        metrics: metric names.

    Returns:
        `{(variant, size): {metric: (mean, std, n)}}`; runs without the
        metric (NaN) are left out of its `n`; a metric no run of the pair
        has is absent; `std` is NaN when `n == 1`.

    Example:
    >>> rows = [{"variant": "clip_gap", "size": 8, "seed": s, "m": float(s)} for s in (0, 1)]
    >>> aggregate(rows, ["m"])[("clip_gap", 8)]["m"]
    (0.5, 0.7071067811865476, 2)
    """
    groups = {}
    for row in rows:
        groups.setdefault((row["variant"], row["size"]), []).append(row)
    table = {}
    for key, group in groups.items():
        cell = {}
        for metric in metrics:
            values = np.array([r.get(metric, np.nan) for r in group], dtype=np.float64)
            values = values[~np.isnan(values)]
            if values.size:
                std = float(np.std(values, ddof=1)) if values.size > 1 else float("nan")
                cell[metric] = (float(np.mean(values)), std, int(values.size))
        table[key] = cell
    return table


def headline_metrics(rows, patterns=None):
    """The metrics of `patterns` (names or `fnmatch` patterns) present in the rows.

    Args:
        rows: result rows.
        patterns: names / patterns; `None` for `HEADLINE_METRICS`.

    Returns:
        A list of metric names, in pattern order, without repeats.
    """
    present = [m for m in metric_columns(rows) if any(not math.isnan(r.get(m, np.nan)) for r in rows)]
    chosen = []
    for pattern in patterns or HEADLINE_METRICS:
        for metric in fnmatch.filter(present, pattern):
            if metric not in chosen:
                chosen.append(metric)
    return chosen


def _cell(stats, digits=3):
    if stats is None:
        return "–"
    mean, std, n = stats
    spread = "–" if math.isnan(std) else f"{std:.{digits}f}"
    return f"{mean:.{digits}f} ± {spread} ({n})"


def markdown_table(rows, metrics):
    """`results.md`: per metric, a variant × size table of mean ± std (seeds)."""
    table = aggregate(rows, metrics)
    variants = _variants_in_order(rows)
    sizes = sorted({r["size"] for r in rows})
    steps = sorted({r["steps"] for r in rows})
    seeds = sorted({r["seed"] for r in rows})
    lines = [
        "# Study results",
        "",
        f"{len(rows)} runs: {len(variants)} variants × {len(sizes)} training-set sizes × seeds "
        f"{', '.join(map(str, seeds))}; {', '.join(map(str, steps))} steps each. Cells: mean ± sample "
        "std over seeds (number of seeds); columns: distinct training examples.",
        "",
    ]
    for metric in metrics:
        lines += [f"## {metric}", "", "| variant | " + " | ".join(f"n={s}" for s in sizes) + " |",
                  "|---|" + "---|" * len(sizes)]
        for variant in variants:
            cells = [_cell(table.get((variant, s), {}).get(metric)) for s in sizes]
            if all(c == "–" for c in cells):
                continue
            lines.append(f"| {variant} | " + " | ".join(cells) + " |")
        lines.append("")
    wall = sum(r["wall_s"] for r in rows if not math.isnan(r["wall_s"]))
    lines.append(f"Wall time of the runs' processes, summed: {wall:.0f} s.")
    return "\n".join(lines) + "\n"


def _pyplot():
    matplotlib = extras.require("matplotlib", "plots", "The study's plots")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _file_name(metric):
    return "".join(c if c.isalnum() or c in "-." else "_" for c in metric)


def plot_metric_vs_size(rows, metric, path):
    """One line per variant: the metric's mean against the training-set size, std error bars."""
    plt = _pyplot()
    table = aggregate(rows, [metric])
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for variant in _variants_in_order(rows):
        points = sorted((size, stats[metric]) for (v, size), stats in table.items() if v == variant and metric in stats)
        if not points:
            continue
        sizes = [p[0] for p in points]
        means = [p[1][0] for p in points]
        stds = [0.0 if math.isnan(p[1][1]) else p[1][1] for p in points]
        axes.errorbar(sizes, means, yerr=stds, marker="o", capsize=3, label=variant)
    all_sizes = sorted({r["size"] for r in rows})
    if len(all_sizes) > 1:
        axes.set_xscale("log")
        axes.set_xticks(all_sizes)
        axes.set_xticklabels([f"{s:,}" for s in all_sizes])
        axes.minorticks_off()
    chance = _chance(rows, metric)
    if chance is not None:
        axes.axhline(chance, color="grey", linestyle="--", linewidth=1, label="chance")
    axes.set_xlabel("distinct training examples")
    axes.set_ylabel(metric)
    axes.set_title(f"{metric} vs training-set size (mean ± std over seeds)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="best")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _chance(rows, metric):
    """The chance level stored beside a metric (`a/b/top1` -> `a/b/chance`), if any."""
    name = metric.rsplit("/", 1)[0] + "/chance"
    values = [r[name] for r in rows if name in r and not math.isnan(r[name])]
    return float(np.mean(values)) if values and name != metric else None


def plot_bars(rows, metric, path):
    """Grouped bars: per variant, one bar per training-set size, std error bars."""
    plt = _pyplot()
    table = aggregate(rows, [metric])
    variants = [v for v in _variants_in_order(rows) if any(k[0] == v and metric in c for k, c in table.items())]
    sizes = sorted({r["size"] for r in rows})
    width = 0.8 / max(1, len(sizes))
    figure, axes = plt.subplots(figsize=(max(6, 0.9 * len(variants) + 2), 4.5))
    x = np.arange(len(variants))
    for i, size in enumerate(sizes):
        stats = [table.get((v, size), {}).get(metric, (np.nan, np.nan, 0)) for v in variants]
        means = [s[0] for s in stats]
        stds = [0.0 if math.isnan(s[1]) else s[1] for s in stats]
        axes.bar(x + (i - (len(sizes) - 1) / 2) * width, means, width, yerr=stds, capsize=2, label=f"n={size}")
    chance = _chance(rows, metric)
    if chance is not None:
        axes.axhline(chance, color="grey", linestyle="--", linewidth=1, label="chance")
    axes.set_xticks(x)
    axes.set_xticklabels(variants, rotation=30, ha="right", fontsize=7)
    axes.set_ylabel(metric)
    axes.set_title(f"{metric} (mean ± std over seeds)")
    axes.grid(axis="y", alpha=0.3)
    axes.legend(fontsize=7, title="training examples", title_fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def read_loss_curve(path, column=LOSS_COLUMN):
    """`(epochs, losses)` of a Keras `CSVLogger` file; a resumed run's repeated epochs keep the last row."""
    by_epoch = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            try:
                by_epoch[int(row["epoch"])] = float(row[column])
            except (KeyError, TypeError, ValueError):
                continue
    epochs = sorted(by_epoch)
    return np.array(epochs, dtype=np.int64), np.array([by_epoch[e] for e in epochs], dtype=np.float64)


def plot_loss_curves(rows, output_dir, path, steps_per_epoch=None):
    """Training loss per variant (one panel each), a line per size (mean over seeds).

    Reads `<output_dir>/<run_dir>/train_log.csv` of each row; rows without
    one are skipped. Returns `path`, or `None` when no run has a log.
    """
    curves = {}
    for row in rows:
        log = os.path.join(output_dir, row.get("run_dir") or "", "train_log.csv")
        if not row.get("run_dir") or not os.path.isfile(log):
            continue
        epochs, losses = read_loss_curve(log)
        if epochs.size:
            curves.setdefault(row["variant"], {}).setdefault(row["size"], []).append((epochs, losses, row["steps"]))
    if not curves:
        return None
    plt = _pyplot()
    variants = [v for v in _variants_in_order(rows) if v in curves]
    columns = min(3, len(variants))
    lines = -(-len(variants) // columns)
    figure, grid_axes = plt.subplots(lines, columns, figsize=(4.2 * columns, 3.2 * lines), squeeze=False)
    for axes, variant in zip(grid_axes.flat, variants):
        for size in sorted(curves[variant]):
            runs = curves[variant][size]
            length = min(len(e) for e, _, _ in runs)
            losses = np.stack([l[:length] for _, l, _ in runs])
            epochs = runs[0][0][:length]
            steps = runs[0][2]
            total_epochs = max(int(epochs.max()) + 1, 1)
            per_epoch = steps_per_epoch or steps / total_epochs
            x = (epochs + 1) * per_epoch
            mean = losses.mean(axis=0)
            axes.plot(x, mean, label=f"n={size}")
            if len(runs) > 1:
                std = losses.std(axis=0, ddof=1)
                axes.fill_between(x, mean - std, mean + std, alpha=0.2)
        axes.set_title(variant, fontsize=9)
        axes.set_xlabel("step")
        axes.set_ylabel("training loss")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
    for axes in list(grid_axes.flat)[len(variants):]:
        axes.axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def write_report(rows, output_dir, metrics=None):
    """Writes `results.csv`, `results.md` and the plots under `output_dir`.

    Args:
        rows: result rows (`rows_from_results` / `read_csv`).
        output_dir: the study folder (run folders are found through
            each row's `run_dir`, relative to it).
        metrics: names / patterns for the table and plots (`None`:
            `HEADLINE_METRICS` present); `results.csv` always has all.

    Returns:
        dict: `"csv"`, `"markdown"` paths, `"plots"` (a list of PNG paths).

    Example:
    >>> rows = [{"variant": "clip_gap", "model": "clip", "size": n, "seed": s, "steps": 2,
    ...          "wall_s": 1.0, "run_dir": "", "eval/loss": 1.0 + s / n} for n in (8, 16) for s in (0, 1)]
    >>> sorted(write_report(rows, "/tmp/study_doc", metrics=["eval/loss"]))  # doctest: +SKIP
    ['csv', 'markdown', 'plots']
    """
    os.makedirs(output_dir, exist_ok=True)
    rows = sorted(rows, key=_row_order)
    paths = {"csv": write_csv(rows, os.path.join(output_dir, "results.csv")), "plots": []}
    chosen = headline_metrics(rows, metrics) if rows else []
    with open(os.path.join(output_dir, "results.md"), "w", encoding="utf-8") as f:
        f.write(markdown_table(rows, chosen) if rows else "# Study results\n\nNo finished runs yet.\n")
    paths["markdown"] = os.path.join(output_dir, "results.md")
    if not rows:
        return paths
    plots = os.path.join(output_dir, "plots")
    os.makedirs(plots, exist_ok=True)
    for name in os.listdir(plots):  # an earlier report's, maybe of other metrics
        if name.endswith(".png") and name.startswith(("vs_size_", "bars_", "loss_curves")):
            os.remove(os.path.join(plots, name))
    for metric in chosen:
        name = _file_name(metric)
        paths["plots"].append(plot_metric_vs_size(rows, metric, os.path.join(plots, f"vs_size_{name}.png")))
        paths["plots"].append(plot_bars(rows, metric, os.path.join(plots, f"bars_{name}.png")))
    curves = plot_loss_curves(rows, output_dir, os.path.join(plots, "loss_curves.png"))
    if curves:
        paths["plots"].append(curves)
    return paths


def report_from_csv(output_dir, metrics=None):
    """Rebuilds `results.md` and the plots from `<output_dir>/results.csv`."""
    path = os.path.join(output_dir, "results.csv")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No results.csv in {output_dir}; run the study there first (or pass its --output_dir).")
    return write_report(read_csv(path), output_dir, metrics=metrics)
