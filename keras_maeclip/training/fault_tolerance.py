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
   a torn file. Here each is written to a temporary name and moved into
   place (atomic on a local file system), and a restore checks that the
   weights' step counter matches the metadata.

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

import json
import math
import os
import warnings

import keras
import numpy as np
from keras.src.utils import file_utils

__all__ = ["StepBackupAndRestore", "fault_tolerance_callbacks", "resumed_step"]

_METADATA = "training_metadata.json"


def _check_steps(save_every_steps):
    is_int = isinstance(save_every_steps, (int, np.integer)) and not isinstance(save_every_steps, bool)
    if not is_int or save_every_steps < 1:
        raise ValueError(
            f"save_every_steps must be an integer >= 1 (fit steps between backups); "
            f"got {save_every_steps!r}."
        )
    return int(save_every_steps)


def _read_metadata(path):
    if not file_utils.exists(path):
        return None
    with file_utils.File(path, "r") as f:
        return json.loads(f.read())


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
    metadata = _read_metadata(file_utils.join(str(backup_dir), _METADATA))
    if metadata is None:
        return 0
    if "step" not in metadata:
        raise ValueError(
            f"{backup_dir} holds a backup of keras.callbacks.BackupAndRestore (epoch only, no "
            "step count). Resume it with that callback, or delete the directory to start over."
        )
    return int(metadata["step"])


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


def _write_atomically(path, write):
    """`write(p)` to a temporary `p` beside `path`, then move it to `path`."""
    if file_utils.is_remote_path(path):
        write(path)  # no atomic rename on object stores
        return
    directory, name = os.path.split(path)
    temporary = os.path.join(directory, "incoming." + name)
    write(temporary)
    os.replace(temporary, path)


class StepBackupAndRestore(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` that resumes mid-epoch exactly and keeps the last finite state.

    Saves every `save_every_steps` `fit` steps (counted over the whole
    run, so the save points are the same with or without restarts) and, on
    restart, restores weights, optimizer state and random-generator state,
    then finishes the interrupted epoch with only its remaining steps. A
    step whose logged loss, or any trainable variable, is not finite is
    never saved, and the backup is not deleted after such a step. See the
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
        self, backup_dir, save_every_steps, double_checkpoint=False, delete_checkpoint=True, write=True
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
        self.resumed_step = 0
        self.nonfinite_step = None
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

    def on_train_begin(self, logs=None):
        self._steps_per_epoch()
        self._reset_counters()
        self.resumed_step = 0
        self.nonfinite_step = None
        skipped = resumed_step(self.backup_dir)  # what the caller read before fit
        super().on_train_begin(logs)  # calls _load_model, falls back to .bkp
        if self.resumed_step != skipped:
            raise ValueError(
                f"The latest backup in {self.backup_dir} (step {skipped}) could not be read; the "
                f"previous one (step {self.resumed_step}) is now in its place, but the data was "
                "skipped for the latest. Run the same command again."
            )

    def _load_model(self):
        super()._load_model()  # weights, optimizer state, model._initial_epoch
        metadata = _read_metadata(self._training_metadata_path)
        if metadata is None:
            return
        if "step" not in metadata:
            raise ValueError(
                f"{self.backup_dir} holds a backup of keras.callbacks.BackupAndRestore "
                "(epoch only). Resume it with that callback or delete the directory."
            )
        steps_per_epoch = self._steps_per_epoch()
        if metadata["steps_per_epoch"] != steps_per_epoch:
            raise ValueError(
                f"The backup in {self.backup_dir} was written with steps_per_epoch="
                f"{metadata['steps_per_epoch']}; this fit has steps_per_epoch={steps_per_epoch}. "
                "Resume with the same steps_per_epoch (or delete the backup to start over)."
            )
        iterations = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        if iterations != metadata["optimizer_iterations"]:
            raise ValueError(
                f"The backup in {self.backup_dir} is inconsistent: its weights are at optimizer "
                f"step {iterations}, its metadata at {metadata['optimizer_iterations']} (the "
                "run was probably killed during a save). Delete the directory to start over."
            )
        self._step = self.resumed_step = int(metadata["step"])
        self._epoch, self._epoch_step = int(metadata["epoch"]), int(metadata["epoch_step"])
        generators = _seed_generators(self.model)
        states = metadata.get("seed_generator_states", [])
        if len(states) != len(generators):
            raise ValueError(
                f"The backup in {self.backup_dir} has {len(states)} random-generator states; "
                f"the model has {len(generators)}. Resume with the same model."
            )
        for generator, state in zip(generators, states):
            generator.state.assign(np.asarray(state, dtype=generator.state.dtype))

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
        metadata = {
            "epoch": epoch,
            "batch": epoch_step - 1,  # Keras' field: the epoch's last batch index
            "step": self._step,
            "epoch_step": epoch_step,
            "steps_per_epoch": steps_per_epoch,
            "optimizer_iterations": int(keras.ops.convert_to_numpy(model.optimizer.iterations)),
            "seed_generator_states": [
                np.asarray(keras.ops.convert_to_numpy(g.state)).tolist() for g in _seed_generators(model)
            ],
        }
        if not file_utils.exists(self.backup_dir):
            file_utils.makedirs(self.backup_dir)
        if self.double_checkpoint:
            for path, previous in (
                (self._weights_path, self._prev_weights_path),
                (self._training_metadata_path, self._prev_training_metadata_path),
            ):
                if file_utils.exists(path):
                    file_utils.copy(path, previous)
        _write_atomically(self._weights_path, lambda p: model.save_weights(p, overwrite=True))

        def write_metadata(path):
            with file_utils.File(path, "w") as f:
                f.write(json.dumps(metadata))

        _write_atomically(self._training_metadata_path, write_metadata)

    def on_train_end(self, logs=None):
        # Keras leaves the restored epoch on the model; a later fit() would start there.
        self.model._initial_epoch = None
        if self.nonfinite_step is not None:
            print(
                f"Training stopped at a non-finite value (step {self.nonfinite_step}); the last "
                f"finite state is kept in {self.backup_dir} (step {self._last_saved_step()})."
            )
            return
        if self.write:
            super().on_train_end(logs)

    def _last_saved_step(self):
        metadata = _read_metadata(self._training_metadata_path)
        return None if metadata is None else metadata.get("step")


def fault_tolerance_callbacks(
    backup_dir,
    save_every_steps,
    terminate_on_nan=True,
    raise_on_nan=False,
    double_checkpoint=False,
    delete_checkpoint=True,
    write=True,
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
        double_checkpoint, delete_checkpoint, write: see `StepBackupAndRestore`.

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
        )
    ]
    if terminate_on_nan:
        callbacks.append(keras.callbacks.TerminateOnNaN(raise_error=raise_on_nan))
    return callbacks
