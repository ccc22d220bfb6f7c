"""Backups that survive a crash at any write, refuse another run's settings, and name damage.

Crash injection: `fault_tolerance._write_point_hook` is called at every
write point of a save (temporary file written, renamed into place, the
previous pair kept, unreferenced files removed). Raising there is what a
kill at that point leaves on disk: the save code has no `finally` that
would tidy up. Each point is tried at the second save of a run; the same
command then resumes and must end with the step count and weights of an
uninterrupted run. A tiny Dense model with dropout (a random-generator
state to restore) keeps each scenario to a fraction of a second; the
library-level resume of the real models is in test_fault_tolerance.py.
"""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_maeclip.training import fault_tolerance
from keras_maeclip.training.fault_tolerance import (
    BackupError,
    StepBackupAndRestore,
    backup_mismatch,
    resumed_step,
)

STEPS_PER_EPOCH, EPOCHS, SAVE_EVERY = 3, 2, 2  # saves at steps 2, 4, 6
TOTAL = STEPS_PER_EPOCH * EPOCHS
POINTS = ("weights:written", "weights:renamed", "metadata:written", "metadata:renamed", "cleanup")
DOUBLE_POINTS = POINTS[:2] + ("previous:written", "previous:renamed") + POINTS[2:4]


class SimulatedKill(BaseException):
    """Not an `Exception`: nothing on the way out may catch it."""


def to_np(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def make_model(learning_rate=1e-2):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dropout(0.5, seed=1), keras.layers.Dense(1)]
    )
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="mse", run_eagerly=True)
    return model


def data(skip=0):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(24, 4)).astype("float32"), rng.normal(size=(24, 1)).astype("float32")
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(4).repeat().skip(skip)


def run(backup_dir, double_checkpoint=False, learning_rate=1e-2, run_config=None, extra=()):
    model = make_model(learning_rate)
    backup = StepBackupAndRestore(
        backup_dir, SAVE_EVERY, double_checkpoint=double_checkpoint, run_config=run_config
    )
    model.fit(
        data(resumed_step(backup_dir)), epochs=EPOCHS, steps_per_epoch=STEPS_PER_EPOCH,
        verbose=0, callbacks=[backup, *extra],
    )
    return model, backup


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    model, _ = run(tmp_path_factory.mktemp("reference") / "backup")
    return [to_np(v) for v in model.weights], int(to_np(model.optimizer.iterations))


def kill_at(point, occurrence):
    seen = {"n": 0}

    def hook(at):
        if at == point:
            seen["n"] += 1
            if seen["n"] == occurrence:
                raise SimulatedKill(point)

    return hook


CASES = [(p, False) for p in POINTS] + [(p, True) for p in DOUBLE_POINTS]


@pytest.mark.parametrize("point, double_checkpoint", CASES, ids=[f"{p}{'-double' if d else ''}" for p, d in CASES])
def test_a_kill_at_any_write_point_resumes_to_the_uninterrupted_run(tmp_path, monkeypatch, reference, point, double_checkpoint):
    backup_dir = tmp_path / "backup"
    # The first cleanup removes step 2's weights at the second save (the
    # first has nothing to remove); the previous pair is first kept then too.
    occurrence = 1 if point.startswith(("cleanup", "previous")) else 2
    monkeypatch.setattr(fault_tolerance, "_write_point_hook", kill_at(point, occurrence))
    with pytest.raises(SimulatedKill):
        run(backup_dir, double_checkpoint)
    monkeypatch.setattr(fault_tolerance, "_write_point_hook", None)
    # The committed pair: the new one once its metadata is renamed in, else the old.
    committed = 4 if point in ("metadata:renamed", "cleanup") else 2
    assert resumed_step(backup_dir) == committed

    model, backup = run(backup_dir, double_checkpoint)  # the same command again
    assert backup.resumed_step == committed
    weights, iterations = reference
    assert int(to_np(model.optimizer.iterations)) == iterations == TOTAL
    for got, want in zip(model.weights, weights):
        np.testing.assert_allclose(to_np(got), want, rtol=1e-6, atol=1e-7, err_msg=got.path)
    assert not backup_dir.exists()  # completed: deleted


def interrupted(backup_dir, double_checkpoint=False, **kwargs):
    """A run killed after its backup of step 4."""
    class Kill(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if int(to_np(self.model.optimizer.iterations)) == 5:
                raise SimulatedKill()

    with pytest.raises(SimulatedKill):
        run(backup_dir, double_checkpoint, extra=[Kill()], **kwargs)


def test_a_save_leaves_one_committed_pair_and_no_temporaries(tmp_path):
    interrupted(tmp_path / "b")
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["step_4.weights.h5", "training_metadata.json"]
    interrupted(tmp_path / "d", double_checkpoint=True)
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == [
        "step_2.weights.h5", "step_4.weights.h5", "training_metadata.json", "training_metadata.json.bkp"
    ]


def test_a_backup_of_other_settings_is_refused_naming_the_difference(tmp_path):
    interrupted(tmp_path / "b", run_config={"batch_size": 4})
    model = make_model(learning_rate=5e-2)
    assert any("learning_rate" in d for d in backup_mismatch(tmp_path / "b", model, {"batch_size": 4}))
    assert backup_mismatch(tmp_path / "b", make_model(), {"batch_size": 4}) == []
    assert backup_mismatch(tmp_path / "b", make_model(), {"batch_size": 8}) == [
        "run.batch_size: 4 in the backup, 8 now"
    ]
    with pytest.raises(BackupError, match=r"other settings \(model.compile_config.optimizer.config.learning_rate: "
                                          r"0.0099.* in the backup, 0.050.* now\).*start fresh: delete"):
        run(tmp_path / "b", learning_rate=5e-2, run_config={"batch_size": 4})
    with pytest.raises(BackupError, match="run.batch_size: 4 in the backup, 8 now"):
        run(tmp_path / "b", run_config={"batch_size": 8})
    # The refusals left the backup as it was: the right settings resume it.
    _, backup = run(tmp_path / "b", run_config={"batch_size": 4})
    assert backup.resumed_step == 4


def test_damaged_metadata_names_the_file_and_the_fix(tmp_path):
    interrupted(tmp_path / "b")
    (tmp_path / "b" / "training_metadata.json").write_text('{"epoch": 1, "st')
    with pytest.raises(BackupError, match=r"(?i)training_metadata.json is damaged \(JSONDecodeError.*delete .* to "
                                          "start over"):
        resumed_step(tmp_path / "b")
    with pytest.raises(BackupError, match="is damaged"):
        run(tmp_path / "b")


def test_damaged_weights_name_the_file_and_the_fix(tmp_path):
    interrupted(tmp_path / "b")
    (tmp_path / "b" / "step_4.weights.h5").write_bytes(b"not an h5 file")
    with pytest.raises(BackupError, match=r"step_4.weights.h5 \(.*\) could not be loaded. Delete .* to start over"):
        run(tmp_path / "b")


def test_damage_falls_back_to_the_previous_pair(tmp_path, reference):
    interrupted(tmp_path / "b", double_checkpoint=True)
    metadata = tmp_path / "b" / "training_metadata.json"
    metadata.write_text("garbage")
    assert resumed_step(tmp_path / "b") == 2  # the previous pair
    # Damaged weights: set aside, the restart asks for the same command again...
    interrupted(tmp_path / "c", double_checkpoint=True)
    (tmp_path / "c" / "step_4.weights.h5").write_bytes(b"not an h5 file")
    with pytest.raises(BackupError, match="Run the same command again"):
        run(tmp_path / "c", double_checkpoint=True)
    assert json.loads((tmp_path / "c" / "training_metadata.json.bkp").read_text())["step"] == 2
    # ... which resumes the previous pair and ends as the uninterrupted run.
    for folder in ("b", "c"):
        model, backup = run(tmp_path / folder, double_checkpoint=True)
        assert backup.resumed_step == 2
        for got, want in zip(model.weights, reference[0]):
            np.testing.assert_allclose(to_np(got), want, rtol=1e-6, atol=1e-7)


def test_a_backup_written_before_fingerprints_still_resumes(tmp_path):
    # Older backups: Keras' file names, no "weights" or fingerprint entries.
    interrupted(tmp_path / "b")
    folder = tmp_path / "b"
    metadata = json.loads((folder / "training_metadata.json").read_text())
    (folder / "step_4.weights.h5").rename(folder / "latest.weights.h5")
    for key in ("weights", "run_fingerprint", "run_config"):
        del metadata[key]
    (folder / "training_metadata.json").write_text(json.dumps(metadata))
    _, backup = run(folder)
    assert backup.resumed_step == 4
