"""A training job for the fault-tolerance tests, run as a subprocess.

    python tests/training/_resume_worker.py --backup_dir=B --out_dir=O [--pause_at=K]

Trains a tiny CLIP on a deterministic, repeated synthetic stream with
`fault_tolerance_callbacks`, skipping `resumed_step(B)` batches first. It
writes into `O`:

* ``begin.npz``: the state right after `fit`'s restore (optimizer step,
  `steps_seen`, learning rate, weights, optimizer variables);
* ``state_<step>.npz``: the weights and optimizer variables after each backup;
* ``progress.txt``: the last step done;
* ``final.npz``: weights, optimizer variables, counters and the number of
  batches each epoch of this process ran.

With ``--pause_at=K`` the first process to reach step K writes
``O/paused`` and sleeps, for the parent to kill it there; a restart with
the same command finds ``paused`` and does not stop again.
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

BATCH = 8
EXAMPLES = 32


def training_data(skip):
    """A deterministic, shuffled, repeated stream of raw batches, `skip` batches in."""
    from keras_maeclip.data import synthetic

    data = synthetic.synthetic_dataset(EXAMPLES, seed=0, image_size=16)
    data = data.map(lambda e: {"images": e["image"], "captions": e["caption"]}).cache()
    data = data.shuffle(EXAMPLES, seed=0).repeat().batch(BATCH, drop_remainder=True)
    return data.skip(skip)


def to_np(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


class Probe(keras.callbacks.Callback):
    """Records the restored state, each backup's optimizer state and the progress."""

    def __init__(self, args, backup):
        super().__init__()
        self.args, self.backup = args, backup
        self.epoch_batches = {}

    def path(self, name):
        return os.path.join(self.args.out_dir, name)

    def state(self):
        """Model weights (trainable and not) and optimizer variables, by position."""
        model = self.model
        return {
            **{f"w_{i}": to_np(v) for i, v in enumerate(model.weights)},
            **{f"opt_{i}": to_np(v) for i, v in enumerate(model.optimizer.variables)},
        }

    def on_train_begin(self, logs=None):
        model = self.model
        np.savez(
            self.path("begin.npz"),
            iterations=to_np(model.optimizer.iterations),
            steps_seen=to_np(model.contrastive.steps_seen),
            learning_rate=to_np(model.optimizer.learning_rate),
            resumed_step=self.backup.resumed_step,
            **self.state(),
        )
        self.step = self.backup.resumed_step

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_batches[epoch] = 0

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        self.epoch_batches[max(self.epoch_batches)] += 1
        if self.step % self.args.save_every == 0:
            np.savez(self.path(f"state_{self.step}.npz"), **self.state())
        with open(self.path("progress.txt"), "w") as f:
            f.write(str(self.step))
        paused = self.path("paused")
        if self.step == self.args.pause_at and not os.path.exists(paused):
            with open(paused, "w") as f:
                f.write(str(self.step))
            time.sleep(600)  # the parent kills us here


def train(backup_dir, out_dir, pause_at=0, steps_per_epoch=8, epochs=5, save_every=5):
    """The job; `main` runs it from the command line, the tests also in-process."""
    from keras_maeclip.models import ImageTextPreprocessor, caption_tokenizer, image_converter, learn_vocabulary
    from keras_maeclip.training.fault_tolerance import fault_tolerance_callbacks, resumed_step
    from tests.tiny import CAPTIONS, make_clip

    args = argparse.Namespace(out_dir=str(out_dir), pause_at=pause_at, save_every=save_every)
    os.makedirs(args.out_dir, exist_ok=True)
    keras.utils.set_random_seed(0)
    preprocessor = ImageTextPreprocessor(
        caption_tokenizer(learn_vocabulary(CAPTIONS, 200)), image_converter(16), sequence_length=12
    )
    model = make_clip(preprocessor)
    model.compile(learning_rate=1e-3, weight_decay=0.1, warmup_steps=5, total_steps=steps_per_epoch * epochs)

    callbacks = fault_tolerance_callbacks(str(backup_dir), save_every)
    probe = Probe(args, callbacks[0])
    data = training_data(resumed_step(str(backup_dir)))
    model.fit(
        data, epochs=epochs, steps_per_epoch=steps_per_epoch, verbose=0,
        callbacks=callbacks + [probe],
    )
    finished = sorted(probe.epoch_batches)
    np.savez(
        probe.path("final.npz"),
        iterations=to_np(model.optimizer.iterations),
        steps_seen=to_np(model.contrastive.steps_seen),
        epochs=np.array(finished),
        epoch_batches=np.array([probe.epoch_batches[e] for e in finished]),
        **probe.state(),
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--backup_dir", required=True)
    parser.add_argument("--out_dir", required=True)
    parser.add_argument("--steps_per_epoch", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--save_every", type=int, default=5)
    parser.add_argument("--pause_at", type=int, default=0)
    train(**vars(parser.parse_args()))


if __name__ == "__main__":
    main()
