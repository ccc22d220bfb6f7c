"""Resume an interrupted `fit` exactly, and stop a diverging one on a good backup.

```python
backup = "/ckpt/run1/backup"
callbacks = fault_tolerance_callbacks(backup, save_every_steps=500)
data = make_training_data()            # deterministic, repeated, batched
data = data.skip(resumed_step(backup))  # where the killed run stopped
model.fit(data, epochs=epochs, steps_per_epoch=steps_per_epoch, callbacks=callbacks)
```

Running the same command again after a crash or preemption continues the
run: `fit` ends with the optimizer step count, weights and optimizer state
of an uninterrupted run (bit for bit on CPU in the tests).

What Keras' `BackupAndRestore` (3.15) does, and what is added here
-------------------------------------------------------------------
`keras.callbacks.BackupAndRestore` writes `model.save_weights()` to
``<backup_dir>/latest.weights.h5`` (the model's variables AND the
optimizer's: step counter, AdamW moments; the learning-rate schedule is a
function of the step counter, so it resumes too) and a JSON with the epoch.
Non-trainable model variables are included, so `ContrastiveLoss.steps_seen`
(the local -> global negatives counter) is restored. On restart it loads
both and re-runs fit from the START of the saved epoch. It falls short in
five ways, each handled by `StepBackupAndRestore`:

1. Mid-epoch saves (integer `save_freq`) resume at the start of the
   epoch, so the steps already done in that epoch are trained again
   (the run ends with more optimizer steps than asked for). Here the
   resumed epoch is cut short: it runs only its remaining steps, and
   later epochs are whole, so epoch boundaries (and per-epoch logs) stay
   where they were.
2. The epoch written by a mid-epoch save is only updated at epoch ends,
   so a save in the first epoch of a resumed run records epoch 0: a
   second interruption restarts from the beginning. Here the epoch is
   tracked at every epoch start.
3. Keras' random-number state (`keras.random.SeedGenerator`, e.g. MAE
   masking, dropout) is not part of `save_weights`, so after a restore
   the masks would repeat those of the first steps. Here the generators'
   states are saved in the metadata and restored.
4. A NaN / Inf loss: Keras would save the NaN weights at the next save
   step and, after `TerminateOnNaN` stops `fit`, delete the backup in
   `on_train_end`. Here no save happens once the logged loss (Keras'
   running mean, so NaN from the bad step to the end of the epoch) is not
   finite or a trainable variable is not finite, and the backup is kept
   after such a stop: it holds the last good state.
5. The two files are written in place, so a kill during a save can leave
   a torn file, and a kill between the two leaves weights and metadata of
   different steps. Here every backup is a pair: the weights go to their
   own file, ``step_<N>.weights.h5`` (written under a temporary name and
   renamed), then the metadata, which names that file, replaces
   ``training_metadata.json`` by a rename: that rename is the commit.
   Older weight files are deleted only after it. Whatever write a kill
   interrupts, the directory holds a committed pair (the new one or the
   one before) and a restart resumes from it (tested by failing at every
   write point). A metadata or weights file that cannot be read
   (disk damage) falls back to the previous pair with
   `double_checkpoint=True`, else stops with a one-line `ValueError`
   naming the file and the fix.

A backup also records the run's configuration (`run_fingerprint`): the
model's config (architecture and task settings, layer names left out), its
compile config (optimizer, learning-rate schedule), the tokenizer's
vocabulary and whatever the caller passes as `run_config` (e.g. the data
flags). A `fit` whose configuration differs refuses to resume, naming what
differs (`backup_mismatch` reports it before `fit`).

Data position
-------------
`fit` starts a new iterator over its dataset after a restart. With
`steps_per_epoch` and an infinite (`.repeat()`-ed) dataset, `fit` uses ONE
iterator for the whole run, so the run's batches are one stream and the
killed run had consumed exactly `resumed_step(backup_dir)` batches of it
at its last save. `dataset.skip(resumed_step(backup_dir))`, applied to the
batched dataset before `fit`, continues the stream where the saved state
left it. That is exact when the stream is a deterministic function of the
code and its seeds:

* The synthetic set (`keras_maeclip.data.synthetic`): example `i` is a
  function of `(seed, i)`; `shuffle(buffer, seed=s)` (reshuffled every
  repetition) and `Dataset.random(seed)` for augmentation seeds are
  deterministic in a new process. Exact.
* The file readers (`keras_maeclip.data.readers`) with `seed=...` and
  `deterministic=True` (the default): the file order, interleave and
  record shuffle are fixed, so skipping is exact. With
  `deterministic=False` or no seed, parallel reads deliver records in the
  order they finish, so the skipped batches are a different sample of the
  data: the position is approximate (the same number of records is
  skipped, not the same records).
* Cost: `skip(n)` runs the pipeline for the n skipped batches (files
  read, images decoded and augmented, then dropped): about the input
  pipeline's time for n batches (docs/benchmarks.md has its throughput).
  Skipping `n * batch_size` raw records before decoding is much cheaper
  but shifts the per-example augmentation seeds, so it is only
  approximately the same stream.

Requirements: `fit` gets `steps_per_epoch` (the callback raises
otherwise) and an infinite dataset (a finite one is re-iterated from its
start every epoch, which `skip` cannot follow; this is not detected when
its length is known); a restart uses the same `steps_per_epoch` (checked),
save interval and data pipeline. `fit` must also be the first to iterate
the dataset object in its process: TensorFlow draws the reshuffling seeds
of a seeded `shuffle` from one generator shared by all iterators of the
dataset, so an iterator opened before (`next(iter(data))` to look at a
batch, or Keras' look-ahead to build a model that is not built yet) changes
the order `fit` sees, by an amount that depends on how far it read. Build
the model before `fit` (keras-hub tasks with a preprocessor are built when
`fit` maps the preprocessor over the data).

Under gradient accumulation every count here (steps, `save_every_steps`,
`resumed_step`) is in `fit` steps, i.e. micro-batches; the accumulated
gradients are optimizer variables and are saved too.
"""

import glob
import hashlib
import json
import math
import os
import warnings

import keras
import numpy as np
from keras.src.utils import file_utils

__all__ = [
    "BackupError",
    "StepBackupAndRestore",
    "all_finite",
    "backup_mismatch",
    "fault_tolerance_callbacks",
    "resumed_step",
    "run_fingerprint",
]

_METADATA = "training_metadata.json"
_PREVIOUS = _METADATA + ".bkp"
_LEGACY_WEIGHTS = "latest.weights.h5"  # Keras' name, used before backups named their weights
_INCOMING = "incoming."
# Tests set this to a callable `hook(point)` called at each write point of
# a save (`point` names it); raising there simulates a crash at that point.
_write_point_hook = None


class BackupError(ValueError):
    """A backup that cannot be resumed; the message names the file and the fix."""


def _write_point(point):
    if _write_point_hook is not None:
        _write_point_hook(point)


def _check_steps(save_every_steps):
    is_int = isinstance(save_every_steps, (int, np.integer)) and not isinstance(save_every_steps, bool)
    if not is_int or save_every_steps < 1:
        raise ValueError(
            f"save_every_steps must be an integer >= 1 (fit steps between backups); "
            f"got {save_every_steps!r}."
        )
    return int(save_every_steps)


def _read_metadata(path):
    """The JSON at `path`, `None` when absent; `BackupError` when unreadable."""
    if not file_utils.exists(path):
        return None
    try:
        with file_utils.File(path, "r") as f:
            metadata = json.loads(f.read())
    except (ValueError, UnicodeDecodeError, OSError) as error:
        raise BackupError(
            f"{path} is damaged ({type(error).__name__}: {error})"
        ) from None
    if not isinstance(metadata, dict) or "epoch" not in metadata:
        raise BackupError(f"{path} is damaged (not a backup's metadata)")
    return metadata


def _fresh_hint(backup_dir):
    return f"delete {backup_dir} to start over"


def _committed(backup_dir):
    """`(metadata, path)` of the newest readable backup in `backup_dir`, or `(None, None)`.

    The latest metadata first, then the previous one (`double_checkpoint`).
    Raises `BackupError` when metadata exists but none is usable.
    """
    problems = []
    for name in (_METADATA, _PREVIOUS):
        path = file_utils.join(str(backup_dir), name)
        try:
            metadata = _read_metadata(path)
        except BackupError as error:
            problems.append(str(error))
            continue
        if metadata is None:
            continue
        if "step" not in metadata:
            raise BackupError(
                f"{backup_dir} holds a backup of keras.callbacks.BackupAndRestore (epoch only, no "
                "step count). Resume it with that callback, or delete the directory to start over."
            )
        weights = file_utils.join(str(backup_dir), metadata.get("weights", _LEGACY_WEIGHTS))
        if not file_utils.exists(weights):
            problems.append(f"{path} names {weights}, which is missing")
            continue
        return metadata, path
    if problems:
        raise BackupError(
            f"The backup in {backup_dir} cannot be resumed: {'; '.join(problems)}. "
            f"{_fresh_hint(backup_dir).capitalize()} (its last state is lost)."
        )
    return None, None


def resumed_step(backup_dir):
    """The number of `fit` steps (batches) the backup in `backup_dir` has trained.

    Call it BEFORE `fit`, to skip that many batches of the training data so
    the resumed run sees what the killed run would have seen next. `0` when
    there is no backup (a fresh start).

    Args:
        backup_dir: the `backup_dir` of `StepBackupAndRestore`.

    Returns:
        int.

    Example:
    >>> resumed_step("/nonexistent/backup")
    0
    """
    metadata, _ = _committed(backup_dir)
    return 0 if metadata is None else int(metadata["step"])


def _without_names(value):
    """A config without layer names (auto-numbered per process: `dense_3`)."""
    if isinstance(value, dict):
        return {k: _without_names(v) for k, v in value.items() if k != "name"}
    if isinstance(value, (list, tuple)):
        return [_without_names(v) for v in value]
    return value


def _flatten(value, prefix=""):
    if isinstance(value, dict):
        flat = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: value}


def run_fingerprint(model, run_config=None):
    """The configuration a backup is bound to, and its SHA-256.

    Args:
        model: a compiled Keras model.
        run_config: dict or `None`, JSON-serialisable settings of the run
            that the model does not hold (data, batch size, seeds).

    Returns:
        `(config, fingerprint)`: a flat dict of `"path.to.key": value` and a
        hex string.

    Example:
    >>> config, digest = run_fingerprint(keras.Sequential([]), {"lr": 0.1})
    >>> config["run.lr"], len(digest)
    (0.1, 64)
    """
    config = {"model": keras.saving.serialize_keras_object(model)}
    if "compile_config" not in config["model"]:
        try:
            config["compile"] = model.get_compile_config()
        except (NotImplementedError, AttributeError):
            pass
    tokenizer = getattr(getattr(model, "preprocessor", None), "tokenizer", None)
    if tokenizer is not None and hasattr(tokenizer, "get_vocabulary"):
        vocabulary = "\n".join(tokenizer.get_vocabulary())
        config["vocabulary_sha256"] = hashlib.sha256(vocabulary.encode("utf-8")).hexdigest()
    if run_config:
        config["run"] = dict(run_config)
    # JSON round trip: tuples become lists, odd objects strings, as stored.
    config = json.loads(json.dumps(_without_names(config), sort_keys=True, default=str))
    flat = _flatten(config)
    digest = hashlib.sha256(json.dumps(flat, sort_keys=True).encode("utf-8")).hexdigest()
    return flat, digest


def _differences(stored, current, limit=6):
    keys = sorted(set(stored) | set(current))
    missing = "(unset)"
    diffs = [
        f"{k}: {stored.get(k, missing)!r} in the backup, {current.get(k, missing)!r} now"
        for k in keys
        if stored.get(k, missing) != current.get(k, missing)
    ]
    if len(diffs) > limit:
        diffs = diffs[:limit] + [f"... {len(diffs) - limit} more"]
    return diffs


def backup_mismatch(backup_dir, model, run_config=None):
    """What differs between the backup in `backup_dir` and this run (`[]`: nothing).

    Call it before `fit` to explain a refusal in your own terms (the
    callback refuses the same mismatch with a generic message).

    Args:
        backup_dir: the `backup_dir` of `StepBackupAndRestore`.
        model: the compiled model about to be trained.
        run_config: as for `run_fingerprint`.

    Returns:
        list of str, one `"key: old in the backup, new now"` per difference;
        empty when there is no backup, it has no fingerprint, or it matches.

    Example:
    >>> backup_mismatch("/nonexistent/backup", keras.Sequential([]))
    []
    """
    metadata, _ = _committed(backup_dir)
    if metadata is None or "run_fingerprint" not in metadata:
        return []
    config, digest = run_fingerprint(model, run_config)
    if digest == metadata["run_fingerprint"]:
        return []
    return _differences(metadata.get("run_config", {}), config) or ["the fingerprint"]


def _seed_generators(model):
    """Every `keras.random.SeedGenerator` of the model, in a fixed order."""
    found, seen = [], set()
    for layer in model._flatten_layers(include_self=True, recursive=True):
        for generator in getattr(layer, "_seed_generators", ()):
            if id(generator) not in seen:
                seen.add(id(generator))
                found.append(generator)
    return found


def _all_finite(variables):
    """Whether every float variable is finite (checked on the device)."""
    for variable in variables:
        if "float" in str(variable.dtype) and not bool(keras.ops.all(keras.ops.isfinite(variable.value))):
            return False
    return True


def all_finite(model):
    """Whether every float variable of `model` (weights) is finite.

    Example:
    >>> all_finite(keras.Sequential([]))
    True
    """
    return _all_finite(model.weights)


def _rename(source, target):
    if file_utils.is_remote_path(source):
        file_utils.copy(source, target)
        file_utils.remove(source)
    else:
        os.replace(source, target)


def _write_atomically(path, write, point):
    """`write(p)` to a temporary `p` beside `path`, then move it to `path`."""
    if file_utils.is_remote_path(path):
        write(path)  # no atomic rename on object stores; the metadata is written last
        _write_point(point + ":written")
        return
    directory, name = os.path.split(path)
    temporary = os.path.join(directory, _INCOMING + name)
    write(temporary)
    _write_point(point + ":written")
    _rename(temporary, path)
    _write_point(point + ":renamed")


class StepBackupAndRestore(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` that resumes mid-epoch exactly and keeps the last finite state.

    Saves every `save_every_steps` `fit` steps (counted over the whole
    run, so the save points are the same with or without restarts) and, on
    restart, restores weights, optimizer state and random-generator state,
    then finishes the interrupted epoch with only its remaining steps. A
    step whose logged loss, or any trainable variable, is not finite is
    never saved, and the backup is not deleted after such a step. A kill
    at any point of a save leaves a backup that resumes; a backup written
    under another configuration (`run_fingerprint`) is refused. See the
    module docstring for what Keras' callback lacks and for the data
    position (`resumed_step`).

    Put it FIRST in `fit`'s callbacks: it cuts the resumed epoch short by
    setting `model.stop_training` and clears that flag in `on_epoch_end`,
    before later callbacks may set it for their own reasons.

    Args:
        backup_dir: str, a directory used by this run only.
        save_every_steps: int >= 1, `fit` steps (batches) between backups.
        double_checkpoint: bool, also keep the previous backup (`.bkp`)
            to fall back on when the latest cannot be read. Defaults to
            `False`.
        delete_checkpoint: bool, delete the backup when `fit` completes
            normally (never after a non-finite loss). Defaults to `True`.
        write: bool. `False` restores but never writes or deletes: for the
            processes of a multi-process run (torch DDP) other than the one
            that writes the shared backup. Defaults to `True`.
        run_config: dict or `None`, settings of the run beyond the model's
            and optimizer's config (data, batch size, seeds) that a resume
            must match. See `run_fingerprint`.

    Attributes:
        resumed_step: steps restored at the start of the last `fit` (0 for
            a fresh start).
        nonfinite_step: the step at which a non-finite loss or variable was
            first seen, else `None`.

    Example:
    >>> callback = StepBackupAndRestore("/tmp/backup", save_every_steps=100)
    >>> callback.save_every_steps
    100
    """

    def __init__(
        self,
        backup_dir,
        save_every_steps,
        double_checkpoint=False,
        delete_checkpoint=True,
        write=True,
        run_config=None,
    ):
        save_every_steps = _check_steps(save_every_steps)
        super().__init__(
            str(backup_dir),
            save_freq=save_every_steps,
            double_checkpoint=double_checkpoint,
            delete_checkpoint=delete_checkpoint,
        )
        self.save_every_steps = save_every_steps
        self.write = bool(write)
        self.run_config = None if run_config is None else dict(run_config)
        self.resumed_step = 0
        self.nonfinite_step = None
        self._fingerprint = None
        self._reset_counters()

    def _reset_counters(self):
        self._step = 0  # fit steps trained so far, restored ones included
        self._epoch = 0
        self._epoch_step = 0  # steps done in the current epoch
        self._last_batch = -1
        self._cutting_epoch = False

    def _steps_per_epoch(self):
        steps = (self.params or {}).get("steps")
        if not steps:
            raise ValueError(
                "StepBackupAndRestore needs fit(..., steps_per_epoch=N) with an infinite "
                "(.repeat()-ed) dataset, so that a run is one stream of batches that a "
                "restart can skip into; fit got no steps_per_epoch."
            )
        return int(steps)

    def _path(self, name):
        return file_utils.join(self.backup_dir, name)

    def on_train_begin(self, logs=None):
        self._steps_per_epoch()
        self._reset_counters()
        self.resumed_step = 0
        self.nonfinite_step = None
        self._fingerprint = run_fingerprint(self.model, self.run_config)
        skipped = resumed_step(self.backup_dir)  # what the caller read before fit
        self._load_model()
        if self.resumed_step != skipped:
            raise BackupError(
                f"The latest backup in {self.backup_dir} (step {skipped}) could not be read; the "
                f"previous one (step {self.resumed_step}) is now in its place, but the data was "
                "skipped for the latest. Run the same command again."
            )

    def _load_model(self):
        if not self.model.built:
            raise ValueError(
                "StepBackupAndRestore needs a built model: call it on a batch (or build it) "
                "before fit."
            )
        problems = []
        while True:
            metadata, path = _committed(self.backup_dir)
            if metadata is None:
                if not problems:
                    return
                break
            try:
                self._restore(metadata)
                return
            except BackupError:
                raise
            except Exception as error:  # noqa: BLE001 - h5py / Keras errors of a damaged file
                weights = metadata.get("weights", _LEGACY_WEIGHTS)
                problems.append(f"{self._path(weights)} ({type(error).__name__}: {error})")
                if not self.write:
                    break
                # Set the damaged pair aside, so the next restart does not pick it.
                _rename(path, path + ".damaged")
        raise BackupError(
            f"The backup in {self.backup_dir} cannot be resumed: {'; '.join(problems)} could "
            f"not be loaded. {_fresh_hint(self.backup_dir).capitalize()} (its last state is lost)."
        )

    def _restore(self, metadata):
        steps_per_epoch = self._steps_per_epoch()
        if metadata["steps_per_epoch"] != steps_per_epoch:
            raise BackupError(
                f"The backup in {self.backup_dir} was written with steps_per_epoch="
                f"{metadata['steps_per_epoch']}; this fit has steps_per_epoch={steps_per_epoch}. "
                f"Resume with the same steps_per_epoch (or {_fresh_hint(self.backup_dir)})."
            )
        stored = metadata.get("run_fingerprint")
        config, digest = self._fingerprint
        if stored is not None and stored != digest:
            diffs = _differences(metadata.get("run_config", {}), config) or ["the fingerprint"]
            raise BackupError(
                f"The backup in {self.backup_dir} belongs to a run with other settings "
                f"({'; '.join(diffs)}). Resume with the settings of that run, or start "
                f"fresh: {_fresh_hint(self.backup_dir)} or use another backup_dir."
            )
        model = self.model
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        model.load_weights(self._path(metadata.get("weights", _LEGACY_WEIGHTS)))
        iterations = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
        if iterations != metadata["optimizer_iterations"]:
            raise BackupError(
                f"The backup in {self.backup_dir} is inconsistent: its weights are at optimizer "
                f"step {iterations}, its metadata at {metadata['optimizer_iterations']}. "
                f"{_fresh_hint(self.backup_dir).capitalize()}."
            )
        generators = _seed_generators(model)
        states = metadata.get("seed_generator_states", [])
        if len(states) != len(generators):
            raise BackupError(
                f"The backup in {self.backup_dir} has {len(states)} random-generator states; "
                f"the model has {len(generators)}. Resume with the same model."
            )
        for generator, state in zip(generators, states):
            generator.state.assign(np.asarray(state, dtype=generator.state.dtype))
        model._initial_epoch = int(metadata["epoch"])
        self._step = self.resumed_step = int(metadata["step"])
        self._epoch, self._epoch_step = int(metadata["epoch"]), int(metadata["epoch_step"])

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._last_batch = -1

    def on_train_batch_end(self, batch, logs=None):
        done = batch - self._last_batch  # > 1 with steps_per_execution
        self._last_batch = batch
        previous = self._step
        self._step += done
        self._epoch_step += done
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self._mark_nonfinite("loss")
            return
        if self._step // self.save_every_steps > previous // self.save_every_steps:
            self._save_model()
        steps_per_epoch = self._steps_per_epoch()
        if self._epoch_step >= steps_per_epoch and batch + 1 < steps_per_epoch:
            # The resumed epoch has had all its steps: end it here.
            self._cutting_epoch = True
            self.model.stop_training = True

    def _mark_nonfinite(self, what):
        if self.nonfinite_step is None:
            self.nonfinite_step = self._step
            warnings.warn(
                f"Non-finite {what} at step {self._step}: no more backups are written; "
                f"{self.backup_dir} keeps the last finite state.",
                stacklevel=3,
            )

    def on_epoch_end(self, epoch, logs=None):
        self._epoch_step = 0
        if self._cutting_epoch:
            self._cutting_epoch = False
            if self.nonfinite_step is None:
                self.model.stop_training = False

    def _save_model(self):
        if self.nonfinite_step is not None or not self.write:
            return
        model = self.model  # syncs the JAX state
        if not _all_finite(model.trainable_variables):
            self._mark_nonfinite("weights")
            return
        steps_per_epoch = self._steps_per_epoch()
        epoch, epoch_step = self._epoch, self._epoch_step
        if epoch_step >= steps_per_epoch:
            epoch, epoch_step = epoch + 1, 0
        weights = f"step_{self._step}.weights.h5"
        config, digest = self._fingerprint
        metadata = {
            "epoch": epoch,
            "batch": epoch_step - 1,  # Keras' field: the epoch's last batch index
            "step": self._step,
            "epoch_step": epoch_step,
            "steps_per_epoch": steps_per_epoch,
            "weights": weights,
            "optimizer_iterations": int(keras.ops.convert_to_numpy(model.optimizer.iterations)),
            "seed_generator_states": [
                np.asarray(keras.ops.convert_to_numpy(g.state)).tolist() for g in _seed_generators(model)
            ],
            "run_fingerprint": digest,
            "run_config": config,
        }
        if not file_utils.exists(self.backup_dir):
            file_utils.makedirs(self.backup_dir)
        # 1. The weights, under their own name: the committed pair is untouched.
        _write_atomically(self._path(weights), lambda p: model.save_weights(p, overwrite=True), "weights")
        # 2. The previous metadata becomes the fallback pair (its weights are still there).
        latest = self._path(_METADATA)
        if self.double_checkpoint and file_utils.exists(latest):
            _write_atomically(self._path(_PREVIOUS), lambda p: file_utils.copy(latest, p), "previous")

        def write_metadata(path):
            with file_utils.File(path, "w") as f:
                f.write(json.dumps(metadata))

        # 3. The commit: the metadata naming the new weights replaces the old.
        _write_atomically(latest, write_metadata, "metadata")
        # 4. Weights no committed metadata names, and torn temporaries.
        self._remove_unreferenced()

    def _remove_unreferenced(self):
        if file_utils.is_remote_path(self.backup_dir):
            return
        keep = set()
        for name in (_METADATA, _PREVIOUS):
            try:
                metadata = _read_metadata(self._path(name))
            except BackupError:
                metadata = None
            if metadata is not None:
                keep.add(metadata.get("weights", _LEGACY_WEIGHTS))
        patterns = ("step_*.weights.h5", _LEGACY_WEIGHTS, _LEGACY_WEIGHTS + ".bkp", _INCOMING + "*")
        for pattern in patterns:
            for path in glob.glob(os.path.join(glob.escape(self.backup_dir), pattern)):
                if os.path.basename(path) not in keep:
                    os.remove(path)
                    _write_point("cleanup")

    def on_train_end(self, logs=None):
        # Keras leaves the restored epoch on the model; a later fit() would start there.
        self.model._initial_epoch = None
        if self.nonfinite_step is not None:
            print(
                f"Training stopped at a non-finite value (step {self.nonfinite_step}); the last "
                f"finite state is kept in {self.backup_dir} (step {self.last_saved_step()})."
            )
            return
        if self.write:
            super().on_train_end(logs)

    def last_saved_step(self):
        """The step of the committed backup, or `None` when there is none."""
        try:
            metadata, _ = _committed(self.backup_dir)
        except BackupError:
            return None
        return None if metadata is None else int(metadata["step"])

    def restore_last_finite(self):
        """Load the committed backup's weights and optimizer state into the model.

        After a non-finite stop, this puts the last finite state back (the
        model holds the NaN weights of the step that diverged).

        Returns:
            The restored step, or `None` when there is no backup to restore.
        """
        metadata, _ = _committed(self.backup_dir)
        if metadata is None:
            return None
        self.model.load_weights(self._path(metadata.get("weights", _LEGACY_WEIGHTS)))
        return int(metadata["step"])


def fault_tolerance_callbacks(
    backup_dir,
    save_every_steps,
    terminate_on_nan=True,
    raise_on_nan=False,
    double_checkpoint=False,
    delete_checkpoint=True,
    write=True,
    run_config=None,
):
    """Step-level backup / exact resume plus a NaN stop that keeps the last good backup.

    Args:
        backup_dir: str, a directory for this run's backup only.
        save_every_steps: int >= 1, `fit` steps between backups.
        terminate_on_nan: bool, add `keras.callbacks.TerminateOnNaN`.
            Defaults to `True`.
        raise_on_nan: bool, make `TerminateOnNaN` raise `RuntimeError`
            (the job fails) instead of ending `fit` normally. Either way the
            backup keeps the last finite state. Defaults to `False`.
        double_checkpoint, delete_checkpoint, write, run_config: see
            `StepBackupAndRestore`.

    Returns:
        A list of callbacks, `StepBackupAndRestore` first; pass it (plus
        your own callbacks after it) to `fit`, and skip
        `resumed_step(backup_dir)` batches of the data.

    Example:
    >>> [type(c).__name__ for c in fault_tolerance_callbacks("/tmp/b", 100)]
    ['StepBackupAndRestore', 'TerminateOnNaN']
    """
    callbacks = [
        StepBackupAndRestore(
            backup_dir,
            save_every_steps,
            double_checkpoint=double_checkpoint,
            delete_checkpoint=delete_checkpoint,
            write=write,
            run_config=run_config,
        )
    ]
    if terminate_on_nan:
        callbacks.append(keras.callbacks.TerminateOnNaN(raise_error=raise_on_nan))
    return callbacks
