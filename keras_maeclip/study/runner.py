"""Running the study: one pretraining (+ evaluation) process per run.

A run is a (variant, training-set size, seed). Each is trained by
`recipes/pretrain.py` in its own process into
`<output_dir>/runs/<variant>/n<size>_s<seed>/`, then, for the evaluations
pretraining did not already report, evaluated by `recipes/evaluate.py`
into its `eval/` folder. `result.json` in the run folder marks it done.

Resuming: a run whose `result.json` holds the same run config is not
redone; one that was killed is started again with the same command, and
`pretrain.py` resumes from its step-level backup (a finished training or
evaluation is not redone either). A run folder left by a different config
trained with other flags (steps, sizes, ...) is moved aside to
`<folder>.stale-<time>`, never deleted; other evaluations or evaluation
flags only re-evaluate the trained run.

References:
    Weers et al., "Masked Autoencoding Does Not Help Natural Language
    Supervision at Scale", arXiv 2301.07836 (the data-scale comparison).
"""

import concurrent.futures
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import threading
import time

from keras_maeclip.study import grid

RESULT_FILE = "result.json"
CONFIG_FILE = "run_config.json"
TIMING_FILE = "timing.json"


@dataclasses.dataclass
class StudyConfig:
    """What the study runs.

    Attributes:
        output_dir: where runs, `results.csv`, `results.md` and plots go.
        variants: names or patterns (`grid.select_variants`).
        seeds: seeds of each (variant, size).
        sizes: distinct training examples (synthetic: `--train_examples`;
            `--data`: the first N records, `--max_train_records`).
        steps: optimizer steps of every run (a fixed budget across sizes).
        batch_size, steps_per_epoch, eval_examples: pretraining flags of
            every run (`eval_examples` is also the evaluation's `--examples`).
        evaluations: suite evaluations to report (`None`: all that apply
            to each variant); those a variant's model does not take are
            left out for it.
        data, data_format: `--data` / `--data_format` of pretraining.
        pretrain_flags, evaluate_flags: further flags passed to every run.
        image_size: `--image_size` of every run (`None`: the presets').
        synthetic_sizes: object sizes of the synthetic scenes, for
            pretraining and evaluation alike (`--synthetic_sizes`; `None`:
            both). `("large",)` at `image_size=48` is the setting where 75 %
            masking leaves the captioned object visible (docs/study.md).
        reevaluate: run every evaluation with `recipes/evaluate.py`, also
            those pretraining already reported (zero-shot and retrieval on
            held-out synthetic scenes with the same examples and seed);
            for `evaluate_flags` that change the evaluation data.
        backend: `--backend` of the runs (`None`: `KERAS_BACKEND`).
        parallel: runs at once (processes).
        pretrain_script, evaluate_script: the recipe scripts run.
        python: the interpreter running them.
    """

    output_dir: str = "runs/study"
    variants: tuple = ("all",)
    seeds: tuple = (0, 1, 2)
    sizes: tuple = (2000, 20000, 200000)
    steps: int = 2000
    batch_size: int = 128
    steps_per_epoch: int = 100
    eval_examples: int = 1000
    evaluations: tuple = None
    data: str = "synthetic"
    data_format: str = "tfrecord"
    pretrain_flags: tuple = ()
    evaluate_flags: tuple = ()
    image_size: int = None
    synthetic_sizes: tuple = None
    reevaluate: bool = False
    backend: str = None
    parallel: int = 1
    pretrain_script: str = "recipes/pretrain.py"
    evaluate_script: str = "recipes/evaluate.py"
    python: str = sys.executable


@dataclasses.dataclass
class Run:
    """One (variant, size, seed) of the study and its commands' settings."""

    variant: grid.Variant
    size: int
    seed: int
    directory: str
    config: dict

    @property
    def name(self):
        return f"{self.variant.name}/n{self.size}_s{self.seed}"


class StudyError(RuntimeError):
    """Some runs failed; the message names each and its log."""


def plan(config):
    """The runs of a study, in grid order (variant, size, seed).

    Args:
        config: a `StudyConfig`.

    Returns:
        A list of `Run`.

    Raises:
        ValueError: a bad variant pattern, size, seed or evaluation, or a
            data-size axis on `--data` with a pretraining script that
            cannot limit its records.

    Example:
    >>> runs = plan(StudyConfig(variants=("clip_*",), seeds=(0, 1), sizes=(2000,)))
    >>> [run.name for run in runs][:3]
    ['clip_gap/n2000_s0', 'clip_gap/n2000_s1', 'clip_max/n2000_s0']
    """
    flags_defined = grid.defined_flags(config.pretrain_script)
    variants = grid.select_variants(config.variants, flags_defined)
    sizes = [int(s) for s in config.sizes]
    seeds = [int(s) for s in config.seeds]
    if not sizes or min(sizes) < 1:
        raise ValueError(f"--sizes must be positive integers; got {list(config.sizes)}.")
    if not seeds:
        raise ValueError("--seeds is empty; give at least one seed.")
    if len(set(sizes)) != len(sizes) or len(set(seeds)) != len(seeds):
        raise ValueError(f"--sizes and --seeds must not repeat; got sizes {sizes}, seeds {seeds}.")
    if config.evaluations is not None:
        unknown = [e for e in config.evaluations if e not in grid.EVALUATIONS]
        if unknown:
            raise ValueError(f"--evaluations: unknown {unknown}; choose from {', '.join(grid.EVALUATIONS)}.")
    if config.data != "synthetic" and "max_train_records" not in flags_defined:
        raise ValueError(
            f"{config.pretrain_script} has no --max_train_records, so the data-size axis "
            "cannot be applied to --data; use a pretraining script that defines it."
        )
    runs = []
    for variant in variants:
        for size in sizes:
            for seed in seeds:
                directory = os.path.join(config.output_dir, "runs", variant.name, f"n{size}_s{seed}")
                runs.append(Run(variant, size, seed, directory, _run_config(config, variant, size, seed)))
    return runs


def _size_flags(config, size):
    flags = [f"--train_examples={size}"]
    if config.data != "synthetic":
        flags.append(f"--max_train_records={size}")
    return flags


def _run_config(config, variant, size, seed):
    """Everything that decides a run's results (what `result.json` must match)."""
    pretrain = [
        *variant.pretrain_flags(config.steps), f"--seed={seed}", *_size_flags(config, size),
        f"--steps={config.steps}",
        f"--batch_size={config.batch_size}", f"--steps_per_epoch={config.steps_per_epoch}",
        f"--eval_examples={config.eval_examples}", f"--data={config.data}",
    ]
    if config.data != "synthetic":
        pretrain.append(f"--data_format={config.data_format}")
    setting, evaluate = [], []
    if config.image_size:
        setting.append(f"--image_size={int(config.image_size)}")
    if config.synthetic_sizes:
        sizes = f"--synthetic_sizes={','.join(config.synthetic_sizes)}"
        setting.append(sizes)
        evaluate.append(sizes)
    pretrain += setting + list(config.pretrain_flags)
    wanted = variant.evaluations if config.evaluations is None else [
        e for e in variant.evaluations if e in config.evaluations
    ]
    return {
        "variant": variant.name,
        "model": variant.model,
        "size": size,
        "seed": seed,
        "steps": config.steps,
        "batch_size": config.batch_size,
        "steps_per_epoch": config.steps_per_epoch,
        "data": config.data,
        "pretrain_flags": pretrain,
        "evaluations": list(wanted),
        "evaluate_flags": evaluate + list(config.evaluate_flags),
        "reevaluate": bool(config.reevaluate),
    }


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _write_json(path, value):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


def finished_result(run):
    """The run's stored result if it is finished with this config, else `None`."""
    result = _read_json(os.path.join(run.directory, RESULT_FILE))
    if result and result.get("config") == run.config:
        return result
    return None


def _prepare_directory(run, log):
    """Moves aside a folder trained with other flags; records this run's config.

    Only the training flags decide: other evaluations of the same training
    re-evaluate it without retraining.
    """
    stored = _read_json(os.path.join(run.directory, CONFIG_FILE)) or {}
    trained_otherwise = stored.get("pretrain_flags") != run.config["pretrain_flags"]
    if os.path.isdir(run.directory) and trained_otherwise and os.listdir(run.directory):
        stale = f"{run.directory}.stale-{time.strftime('%Y%m%d-%H%M%S')}"
        shutil.move(run.directory, stale)
        log(f"{run.name}: its folder held another config; moved to {stale}")
    os.makedirs(run.directory, exist_ok=True)
    _write_json(os.path.join(run.directory, CONFIG_FILE), run.config)


def _evaluations_to_run(run, pretrain_metrics):
    """Requested evaluations whose metrics pretraining did not write."""
    if run.config["reevaluate"]:
        # E.g. evaluate_flags point the suite at other data: evaluate everything here.
        return list(run.config["evaluations"])
    return [e for e in run.config["evaluations"] if not any(k.startswith(e + "/") for k in pretrain_metrics)]


def _add_time(run, stage, seconds):
    """Adds a process's seconds to the run's `timing.json` (kept across attempts)."""
    path = os.path.join(run.directory, TIMING_FILE)
    timing = _read_json(path) or {}
    timing[stage] = timing.get(stage, 0.0) + seconds
    _write_json(path, timing)
    return timing


def _launch(command, log_path, env):
    """Runs one recipe process, its output in `log_path`; returns (ok, seconds)."""
    started = time.time()
    with open(log_path, "a", encoding="utf-8") as log_file:
        log_file.write(f"\n$ {' '.join(command)}\n")
        log_file.flush()
        process = subprocess.run(command, stdout=log_file, stderr=subprocess.STDOUT, env=env, check=False)
    return process.returncode == 0, time.time() - started


def _numbers(metrics):
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def execute(run, config, log=print):
    """Trains and evaluates one run (resuming what is done); returns its result.

    Args:
        run: a `Run` from `plan`.
        config: the `StudyConfig`.
        log: callable taking one progress line.

    Returns:
        The result dict written to `result.json`: `config`, `metrics`
        (pretraining's then the evaluation's, numbers only), `wall_s`
        (seconds of every process of the run, all attempts: `timing`).

    Raises:
        StudyError: a process failed (the message names its log).

    Example:
    >>> config = StudyConfig(variants=("mae",), seeds=(0,), sizes=(64,), steps=2, batch_size=8)
    >>> result = execute(plan(config)[0], config)  # doctest: +SKIP
    >>> result["metrics"]["eval/image_reconstruction_loss"]  # doctest: +SKIP
    0.93
    """
    _prepare_directory(run, log)
    env = dict(os.environ)
    backend = ["--backend=" + config.backend] if config.backend else []
    metrics_path = os.path.join(run.directory, "metrics.json")
    pretrain_metrics = _read_json(metrics_path)
    if pretrain_metrics is None:
        resumed = os.path.isdir(os.path.join(run.directory, "backup"))
        log(f"{run.name}: training{' (resuming from its backup)' if resumed else ''}")
        command = [config.python, config.pretrain_script, *run.config["pretrain_flags"], *backend,
                   f"--output_dir={run.directory}"]
        ok, seconds = _launch(command, os.path.join(run.directory, "pretrain.log"), env)
        _add_time(run, "pretrain_s", seconds)
        pretrain_metrics = _read_json(metrics_path) if ok else None
        if pretrain_metrics is None:
            raise StudyError(f"{run.name}: pretraining failed; see {os.path.join(run.directory, 'pretrain.log')}")
    metrics = _numbers(pretrain_metrics)
    evaluations = _evaluations_to_run(run, pretrain_metrics)
    if evaluations:
        eval_dir = os.path.join(run.directory, "eval")
        eval_path = os.path.join(eval_dir, "evaluation.json")
        evaluated = _read_json(eval_path)
        wanted = {"evaluations": evaluations, "flags": [f"--examples={config.eval_examples}", f"--seed={run.seed}",
                                                         *run.config["evaluate_flags"]]}
        if evaluated is None or evaluated.get("study_evaluations") != wanted:
            log(f"{run.name}: evaluating {','.join(evaluations)}")
            command = [config.python, config.evaluate_script, f"--preset={os.path.join(run.directory, 'preset')}",
                       f"--output_dir={eval_dir}", f"--evaluations={','.join(evaluations)}",
                       *wanted["flags"], *backend]
            if evaluated is not None:
                os.remove(eval_path)  # another evaluation's
            ok, seconds = _launch(command, os.path.join(run.directory, "evaluate.log"), env)
            _add_time(run, "evaluate_s", seconds)
            evaluated = _read_json(eval_path) if ok else None
            if evaluated is None:
                raise StudyError(f"{run.name}: evaluation failed; see {os.path.join(run.directory, 'evaluate.log')}")
            evaluated["study_evaluations"] = wanted
            _write_json(eval_path, evaluated)
        evaluation_metrics = _numbers(evaluated)
        # seconds/total of the evaluation would overwrite pretraining's.
        evaluation_metrics["seconds/evaluation"] = evaluation_metrics.pop("seconds/total", float("nan"))
        metrics.update(evaluation_metrics)
    timing = _read_json(os.path.join(run.directory, TIMING_FILE)) or {}
    result = {"config": run.config, "metrics": metrics, "wall_s": sum(timing.values()), "timing": timing,
              "run_dir": os.path.relpath(run.directory, config.output_dir)}
    _write_json(os.path.join(run.directory, RESULT_FILE), result)
    return result


def describe(config):
    """Lines naming each run, whether it is finished, and its pretraining flags."""
    runs = plan(config)
    lines = []
    for run in runs:
        state = "finished" if finished_result(run) else "to run"
        lines.append(f"{run.name:<44} {state:<9} {' '.join(run.config['pretrain_flags'])}")
    done = sum(1 for run in runs if finished_result(run))
    lines.append(f"{len(runs)} runs, {done} finished; output in {config.output_dir}")
    return lines


def progress_line(done, total, durations, parallel=1):
    """`"k/n runs done, about M min left"`: the mean run time so far, `parallel` at a time.

    Example:
    >>> progress_line(2, 6, [600.0, 660.0], parallel=2)
    '2/6 runs done, about 21 min left'
    """
    left = total - done
    if not left:
        return f"{done}/{total} runs done"
    seconds = sum(durations) / len(durations) * -(-left // max(1, parallel))
    return f"{done}/{total} runs done, about {seconds / 60:.0f} min left"


def run_study(config, log=print, metrics=None):
    """Runs every run of the study not yet finished, then writes the report.

    Args:
        config: a `StudyConfig`.
        log: callable taking one progress line (`None`: silent).
        metrics: table / plot metrics (`report.write_report`).

    Returns:
        The report's paths (`report.write_report`).

    Raises:
        ValueError: a bad config (`plan`).
        StudyError: some runs failed; the others' results and the report
            are written first.

    Example:
    >>> config = StudyConfig(variants=("clip_gap", "mae"), seeds=(0, 1), sizes=(64, 128), steps=2)
    >>> paths = run_study(config)  # doctest: +SKIP
    """
    from keras_maeclip.study import report

    log = log or (lambda line: None)
    runs = plan(config)
    todo = [run for run in runs if finished_result(run) is None]
    log(f"study: {len(runs)} runs, {len(runs) - len(todo)} already finished, {len(todo)} to run "
        f"({max(1, config.parallel)} at a time); output in {config.output_dir}")
    failures = []
    durations = []
    lock = threading.Lock()

    def one(run):
        started = time.time()
        result = execute(run, config, log)
        with lock:
            durations.append(time.time() - started)
            line = progress_line(len(durations), len(todo), durations, config.parallel)
        visible = result["metrics"].get("data/visible_object_share")
        seen = f" (masked view sees the captioned object in {visible:.1%} of pairs)" if visible is not None else ""
        log(f"{run.name}: done in {durations[-1]:.0f} s{seen}; {line}")

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, config.parallel)) as pool:
        futures = {pool.submit(one, run): run for run in todo}
        for future in concurrent.futures.as_completed(futures):
            error = future.exception()
            if error is not None:
                failures.append(str(error))
                log(f"FAILED {error}")
    results = [r for r in (finished_result(run) for run in runs) if r is not None]
    paths = report.write_report(report.rows_from_results(results), config.output_dir, metrics=metrics)
    if failures:
        raise StudyError(f"{len(failures)} of {len(runs)} runs failed:\n  " + "\n  ".join(failures))
    return paths
