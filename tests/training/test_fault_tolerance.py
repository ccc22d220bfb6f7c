import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_maeclip.training.fault_tolerance import (
    StepBackupAndRestore,
    fault_tolerance_callbacks,
    resumed_step,
)
from tests.models.test_mae_clip import make as make_maeclip
from tests.tiny import make_clip, synthetic_batch
from tests.training._resume_worker import train

WORKER = Path(__file__).with_name("_resume_worker.py")
BATCH = 4
# In-process fits build a new model each: JAX and TensorFlow would trace and
# compile every one (seconds each); eager steps are faster for these few
# steps. The subprocess test trains compiled on every backend.
EAGER = keras.config.backend() != "torch"


def to_np(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def warmup_cosine(step, peak, warmup, total):
    """NumPy reference of `default_optimizer`'s schedule (linear warm-up from 0, cosine to 0)."""
    if step < warmup:
        return peak * step / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))


# --- a real kill: SIGKILL of a training process, then the same command ------


def launch(backup, out, pause_at=0):
    env = dict(os.environ, KERAS_BACKEND=keras.config.backend())
    command = [sys.executable, str(WORKER), f"--backup_dir={backup}", f"--out_dir={out}",
               f"--pause_at={pause_at}"]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(process):
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output[-4000:]


def test_killed_run_resumes_mid_epoch_and_ends_as_an_uninterrupted_run(tmp_path):
    # 5 epochs of 8 steps (40), a backup every 5 steps, SIGKILL at step 23:
    # mid-epoch 2, three steps after the backup of step 20.
    total, killed_at, saved_at = 40, 23, 20
    # The uninterrupted run, here (the worker's job, without its process start-up).
    train(tmp_path / "reference_backup", tmp_path / "reference")
    backup, out = tmp_path / "backup", tmp_path / "run"
    victim = launch(backup, out, pause_at=killed_at)
    deadline = time.time() + 300
    while not (out / "paused").exists():
        assert victim.poll() is None, victim.communicate()[0][-4000:]
        assert time.time() < deadline, "the worker never reached the kill step"
        time.sleep(0.2)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    assert (out / "progress.txt").read_text() == str(killed_at)
    assert resumed_step(backup) == saved_at  # the last backup, not the kill step

    finish(launch(backup, out, pause_at=killed_at))  # the same command again

    begin = np.load(out / "begin.npz")
    # Restored, not restarted: counters at the backup's step, the schedule
    # there (a NumPy reference; step 0 of the warm-up would be 0.0), and every
    # weight and optimizer variable (AdamW moments) as the killed process had
    # them right after that backup.
    assert int(begin["resumed_step"]) == int(begin["iterations"]) == int(begin["steps_seen"]) == saved_at
    np.testing.assert_allclose(
        float(begin["learning_rate"]), warmup_cosine(saved_at, 1e-3, 5, total), rtol=1e-5
    )
    at_backup = np.load(out / f"state_{saved_at}.npz")
    assert at_backup.files and set(at_backup.files) <= set(begin.files)
    for key in at_backup.files:
        np.testing.assert_array_equal(begin[key], at_backup[key], err_msg=key)

    final, expected = np.load(out / "final.npz"), np.load(tmp_path / "reference" / "final.npz")
    # Exactly `total` optimizer steps; the resumed epoch 2 ran only its last 4.
    assert int(final["iterations"]) == int(final["steps_seen"]) == int(expected["iterations"]) == total
    assert final["epochs"].tolist() == [2, 3, 4] and final["epoch_batches"].tolist() == [4, 8, 8]
    assert expected["epoch_batches"].tolist() == [8] * 5
    # Same data, state and schedule: the final weights and optimizer state of
    # the uninterrupted run (measured: bit-identical on CPU on every backend).
    keys = [k for k in expected.files if k.startswith(("w_", "opt_"))]
    assert len(keys) > 100
    for key in keys:
        np.testing.assert_allclose(final[key], expected[key], rtol=1e-6, atol=1e-7, err_msg=key)
    assert not (tmp_path / "reference_backup").exists()
    assert not backup.exists()  # a completed run deletes its backup


# --- in-process: a crash, random state, NaN --------------------------------


def raw_batches(num_batches, nan_batch=None, seed=0):
    """An unshuffled, repeated stream of raw batches; one of them NaN if asked."""
    raw = synthetic_batch(num_batches * BATCH, seed=seed)
    images = raw["images"].astype("float32")
    if nan_batch is not None:
        images[nan_batch * BATCH:(nan_batch + 1) * BATCH] = np.nan
    data = tf.data.Dataset.from_tensor_slices({"images": images, "captions": raw["captions"]})
    return data.batch(BATCH).repeat()


class Crash(keras.callbacks.Callback):
    def __init__(self, at_step):
        super().__init__()
        self.at_step, self.step = at_step, 0

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.step == self.at_step:
            raise KeyboardInterrupt("simulated crash")


class Begin(keras.callbacks.Callback):
    """Records the weights and step right after fit's restore."""

    def on_train_begin(self, logs=None):
        self.iterations = int(to_np(self.model.optimizer.iterations))
        self.weights = [to_np(v) for v in self.model.trainable_variables]


def test_crash_resume_restores_masking_random_state(preprocessor, tmp_path):
    # MAE-CLIP draws its image and text masks from a SeedGenerator, whose
    # state save_weights does not hold; without restoring it, the resumed
    # steps would use the masks of steps 1, 2, ... and the weights would differ.
    def run(backup, crash_at=None):
        keras.utils.set_random_seed(0)
        model = make_maeclip(preprocessor, seed=0)
        # Compiled on JAX: eager JAX is slower than one compilation for MAE-CLIP.
        model.compile(learning_rate=1e-3, warmup_steps=2, total_steps=8,
                      run_eagerly=keras.config.backend() == "tensorflow")
        callbacks = fault_tolerance_callbacks(backup, save_every_steps=3)
        if crash_at:
            callbacks.append(Crash(crash_at))
        data = raw_batches(8).skip(resumed_step(backup))
        model.fit(data, epochs=2, steps_per_epoch=4, verbose=0, callbacks=callbacks)
        return model, callbacks[0]

    expected, _ = run(tmp_path / "reference")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "backup", crash_at=5)  # epoch 1, after the backup of step 3
    assert resumed_step(tmp_path / "backup") == 3
    model, backup = run(tmp_path / "backup")
    assert backup.resumed_step == 3
    assert int(to_np(model.optimizer.iterations)) == int(to_np(model.contrastive.steps_seen)) == 8
    for got, want in zip(model.weights, expected.weights):
        np.testing.assert_allclose(to_np(got), to_np(want), rtol=1e-6, atol=1e-7, err_msg=got.path)


def test_nan_step_is_never_saved_and_the_backup_is_kept(preprocessor, tmp_path):
    backup_dir = tmp_path / "backup"

    def model_and_callbacks():
        keras.utils.set_random_seed(0)
        model = make_clip(preprocessor)
        model.compile(learning_rate=1e-3, run_eagerly=EAGER)
        begin = Begin()
        return model, fault_tolerance_callbacks(backup_dir, save_every_steps=2) + [begin]

    # Batch 4 (a save step) is all NaN: its loss is NaN, its update NaN.
    model, callbacks = model_and_callbacks()
    with pytest.warns(UserWarning, match="Non-finite loss at step 4"):
        model.fit(raw_batches(8, nan_batch=3), epochs=2, steps_per_epoch=4, verbose=0, callbacks=callbacks)
    backup = callbacks[0]
    assert backup.nonfinite_step == 4
    assert int(to_np(model.optimizer.iterations)) == 4  # TerminateOnNaN stopped fit there
    assert not all(np.isfinite(to_np(v)).all() for v in model.trainable_variables)
    # Keras' callback would have saved step 4's NaN weights, then deleted the directory.
    assert resumed_step(backup_dir) == 2

    # Reference: two clean steps on the same first batches.
    keras.utils.set_random_seed(0)
    reference = make_clip(preprocessor)
    reference.compile(learning_rate=1e-3, run_eagerly=EAGER)
    reference.fit(raw_batches(8), epochs=1, steps_per_epoch=2, verbose=0)

    # Restart on clean data: resumes from step 2 with finite weights, finishes.
    model, callbacks = model_and_callbacks()
    data = raw_batches(8, seed=1).skip(resumed_step(backup_dir))
    model.fit(data, epochs=2, steps_per_epoch=4, verbose=0, callbacks=callbacks)
    begin = callbacks[2]
    assert begin.iterations == 2
    for got, want in zip(begin.weights, reference.trainable_variables):
        np.testing.assert_allclose(got, to_np(want), rtol=1e-6, atol=1e-7)
    assert callbacks[0].nonfinite_step is None
    assert int(to_np(model.optimizer.iterations)) == 8
    assert all(np.isfinite(to_np(v)).all() for v in model.trainable_variables)
    assert not backup_dir.exists()


def test_raising_on_nan_also_keeps_the_last_finite_backup(preprocessor, tmp_path):
    keras.utils.set_random_seed(0)
    model = make_clip(preprocessor)
    model.compile(learning_rate=1e-3, run_eagerly=EAGER)
    callbacks = fault_tolerance_callbacks(tmp_path / "backup", 2, raise_on_nan=True)
    with pytest.raises(RuntimeError, match="NaN or Inf loss"), pytest.warns(UserWarning, match="step 3"):
        model.fit(raw_batches(4, nan_batch=2), epochs=1, steps_per_epoch=4, verbose=0, callbacks=callbacks)
    assert resumed_step(tmp_path / "backup") == 2


def test_nonfinite_weights_under_a_finite_loss_are_not_saved(preprocessor, tmp_path):
    # A NaN can reach the weights at a step whose (pre-update) loss is finite.
    class PoisonAfterStep(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 1:  # step 2, before the backup callback sees it
                variable = self.model.trainable_variables[0]
                variable.assign(np.full(variable.shape, np.nan, "float32"))

    keras.utils.set_random_seed(0)
    model = make_clip(preprocessor)
    model.compile(learning_rate=1e-3, run_eagerly=EAGER)
    backup = StepBackupAndRestore(tmp_path / "backup", save_every_steps=1)
    with pytest.warns(UserWarning, match="Non-finite weights at step 2"):
        model.fit(raw_batches(4), epochs=1, steps_per_epoch=3, verbose=0,
                  callbacks=[PoisonAfterStep(), backup])
    assert backup.nonfinite_step == 2
    assert resumed_step(tmp_path / "backup") == 1


# --- arguments and misuse --------------------------------------------------


def test_no_backup_means_step_zero(tmp_path):
    assert resumed_step(tmp_path / "nothing") == 0


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "100"])
def test_save_every_steps_must_be_a_positive_int(bad, tmp_path):
    with pytest.raises(ValueError, match="save_every_steps must be an integer >= 1"):
        StepBackupAndRestore(tmp_path, bad)


def test_fit_without_steps_per_epoch_is_refused(preprocessor, tmp_path):
    model = make_clip(preprocessor)
    # An epoch of unknown length: fit(steps_per_epoch=None) runs to the end of the data.
    data = tf.data.Dataset.from_tensor_slices(synthetic_batch(8)).batch(4).filter(lambda b: True)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        model.fit(data, epochs=1, verbose=0, callbacks=[StepBackupAndRestore(tmp_path / "b", 2)])


def test_a_plain_keras_backup_is_refused(preprocessor, tmp_path):
    model = make_clip(preprocessor)
    model.compile(learning_rate=1e-3, run_eagerly=EAGER)
    keras_backup = keras.callbacks.BackupAndRestore(tmp_path / "b", delete_checkpoint=False)
    model.fit(raw_batches(2), epochs=1, steps_per_epoch=2, verbose=0, callbacks=[keras_backup])
    with pytest.raises(ValueError, match="BackupAndRestore"):
        resumed_step(tmp_path / "b")
    with pytest.raises(ValueError, match="BackupAndRestore"):
        model.fit(raw_batches(2), epochs=1, steps_per_epoch=2, verbose=0,
                  callbacks=[StepBackupAndRestore(tmp_path / "b", 2)])


def test_a_different_steps_per_epoch_is_refused(preprocessor, tmp_path):
    model = make_clip(preprocessor)
    model.compile(learning_rate=1e-3, run_eagerly=EAGER)
    backup = StepBackupAndRestore(tmp_path / "b", 1, delete_checkpoint=False)
    model.fit(raw_batches(2), epochs=1, steps_per_epoch=2, verbose=0, callbacks=[backup])
    with pytest.raises(ValueError, match="steps_per_epoch=2"):
        model.fit(raw_batches(2), epochs=1, steps_per_epoch=3, verbose=0,
                  callbacks=[StepBackupAndRestore(tmp_path / "b", 1)])
