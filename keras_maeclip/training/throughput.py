"""A Keras callback that logs training throughput, ETA and achieved FLOP/s.

Keras ships no callback for samples/s, ETA or FLOP/s: `TensorBoard`'s
`write_steps_per_second` logs steps/s only, timed from a batch's begin to
its end (so not the data fetch of JAX's trainer, nor the work between
steps), and the progress bar's ETA is printed, not logged. `Throughput`
adds its numbers to the `logs` dict that Keras passes down the callback
list, so every logger placed after it (the progress bar, `CSVLogger`,
`TensorBoard`, `History`) records them like a metric.
"""

import collections
import math
import time

import keras
import numpy as np

from keras_maeclip.training.flops import analytic_flops_per_sample, supports

__all__ = ["THROUGHPUT_KEYS", "Throughput", "detect_num_devices"]

THROUGHPUT_KEYS = (
    "samples_per_s",
    "samples_per_s_per_device",
    "step_time_s",
    "eta_s",
    "tflops_per_s",
)


class Throughput(keras.callbacks.Callback):
    """Logs samples/s, per-device samples/s, step time, ETA and TFLOP/s.

    Place it *before* the loggers in `callbacks=[...]`: it writes its
    numbers into the logs dict that Keras hands to each callback in turn,
    so `CSVLogger`, `TensorBoard` and the progress bar (which Keras always
    puts last) record the keys that it added.

    What is timed: the clock is read in `on_train_batch_end`, after the
    step's logs have been converted to Python numbers — which waits for
    the step's computation to finish (Keras converts them before calling a
    callback that, like this one, overrides `on_train_batch_end`; the
    callback converts any value still a tensor). A step's time is the
    interval between two successive batch ends: it includes fetching the
    batch, the step itself and every callback's per-step work (logging,
    progress bar). The first step of an epoch is timed from
    `on_epoch_begin`, so the previous epoch's validation and end-of-epoch
    callbacks are not charged to it. With `steps_per_execution=k`, Keras
    calls the callback every `k` steps; the interval counts as `k` steps.
    Intervals containing any of the first `warmup_steps` steps of a
    `fit()` call (tracing and compilation) are left out of every rate.

    Keys added to the batch logs (from the `window` most recent timed
    steps; none until a step has been timed):

    - `samples_per_s`: `global_batch_size × steps / seconds`, summed over
      the window (a time-weighted mean, not a mean of per-step rates).
    - `samples_per_s_per_device`: `samples_per_s / num_devices`.
    - `step_time_s`: mean seconds per step over the window.
    - `eta_s`: seconds left in this `fit()` at that step time:
      `(total_steps − steps done) × step_time_s`. Only when the total is
      known.
    - `tflops_per_s`: achieved model TFLOP/s,
      `flops_per_sample × samples_per_s / 1e12`, from the analytic count
      (`analytic_flops_per_sample`: matmuls + attention, backward = 2×
      forward). Only when a FLOP count is known.

    Keys added to the epoch logs: the same, averaged over all timed steps
    of the epoch (`eta_s` from the epoch's mean step time); `NaN` when no
    step of the epoch was timed (e.g. a one-step first epoch), so that
    `CSVLogger`'s columns stay the same every epoch.

    The rates assume every step processes `global_batch_size` samples (a
    partial last batch is counted as full; batch with
    `drop_remainder=True` for exact figures).

    Args:
        global_batch_size: int. Samples per training step over all devices.
        num_devices: int or `None`. Devices the step runs on. `None`:
            `detect_num_devices(model)` at `on_train_begin`.
        flops_per_sample: float or `None`. Training FLOPs per sample.
            `None`: `analytic_flops_per_sample(model, global_batch_size)`
            for the library's models (CLIP, MAE-CLIP, M3AE, MAE); for other
            models `tflops_per_s` is left out.
        total_steps: int or `None`. Steps in the `fit()` call, for the ETA.
            `None`: `steps per epoch × epochs left` from Keras' `params`
            (no ETA when the dataset's length is unknown).
        warmup_steps: int ≥ 0. Steps at the start of each `fit()` excluded
            from the rates. Defaults to `1` (the compiling step).
        window: int ≥ 1. Timed steps in the moving window of the batch
            logs. Defaults to `20`.
        clock: zero-argument callable returning seconds. Defaults to
            `time.perf_counter`; injectable for tests.

    Attributes:
        num_devices, flops_per_sample: the values in use (resolved at
            `on_train_begin`).
        latest: dict, the keys added at the last batch end.

    Example:
    >>> model.fit(
    ...     data, epochs=10, steps_per_epoch=1000,
    ...     callbacks=[Throughput(global_batch_size=256),
    ...                keras.callbacks.CSVLogger("log.csv"),
    ...                keras.callbacks.TensorBoard("logs", update_freq=100)])
    """

    def __init__(
        self,
        global_batch_size,
        num_devices=None,
        flops_per_sample=None,
        total_steps=None,
        warmup_steps=1,
        window=20,
        clock=time.perf_counter,
    ):
        super().__init__()
        _check_int("global_batch_size", global_batch_size, 1, "the samples per step over all devices")
        if num_devices is not None:
            _check_int("num_devices", num_devices, 1, "or None to detect it")
        if total_steps is not None:
            _check_int("total_steps", total_steps, 1, "or None to take it from fit()")
        _check_int("warmup_steps", warmup_steps, 0, "0 to time every step")
        _check_int("window", window, 1, "the number of recent steps averaged")
        if flops_per_sample is not None and not (
            isinstance(flops_per_sample, (int, float))
            and not isinstance(flops_per_sample, bool)
            and math.isfinite(flops_per_sample)
            and flops_per_sample > 0
        ):
            raise ValueError(
                "flops_per_sample must be a positive number (training FLOPs per "
                f"sample) or None for the analytic count; got {flops_per_sample!r}."
            )
        if not callable(clock):
            raise ValueError(f"clock must be a callable returning seconds; got {clock!r}.")
        self.global_batch_size = global_batch_size
        self._num_devices_arg = num_devices
        self._flops_arg = flops_per_sample
        self._total_steps_arg = total_steps
        self.warmup_steps = warmup_steps
        self.window = window
        self.clock = clock
        self.num_devices = num_devices
        self.flops_per_sample = flops_per_sample
        self.latest = {}

    # --- Keras hooks ---

    def on_train_begin(self, logs=None):
        self.num_devices = self._num_devices_arg or detect_num_devices(self.model)
        self.flops_per_sample = self._flops_arg
        if self.flops_per_sample is None and self.model is not None and supports(self.model):
            self.flops_per_sample = analytic_flops_per_sample(self.model, self.global_batch_size)
        self.total_steps = self._total_steps_arg
        self._steps_done = 0
        self._first_epoch = None
        self._window = collections.deque(maxlen=self.window)
        self.latest = {}

    def on_epoch_begin(self, epoch, logs=None):
        if self._first_epoch is None:
            self._first_epoch = epoch
            if self.total_steps is None:
                params = self.params or {}
                steps, epochs = params.get("steps"), params.get("epochs")
                if steps and epochs:
                    self.total_steps = int(steps) * (int(epochs) - epoch)
        self._epoch_steps = 0
        self._epoch_seconds = 0.0
        self._last_batch = -1
        self._last_time = self.clock()

    def on_train_batch_end(self, batch, logs=None):
        _wait_for(logs)
        now = self.clock()
        steps = batch - self._last_batch if batch > self._last_batch else 1
        seconds = now - self._last_time
        self._last_time, self._last_batch = now, batch
        in_warmup = self._steps_done < self.warmup_steps
        self._steps_done += steps
        if in_warmup:
            return
        self._window.append((steps, seconds))
        self._epoch_steps += steps
        self._epoch_seconds += seconds
        window_steps = sum(s for s, _ in self._window)
        window_seconds = sum(t for _, t in self._window)
        self.latest = self._rates(window_steps, window_seconds)
        if logs is not None:
            logs.update(self.latest)

    def on_epoch_end(self, epoch, logs=None):
        values = self._rates(self._epoch_steps, self._epoch_seconds)
        if not values:
            values = {key: float("nan") for key in self._keys()}
        if logs is not None:
            logs.update(values)

    # --- Arithmetic ---

    def _keys(self):
        keys = list(THROUGHPUT_KEYS)
        if self.total_steps is None:
            keys.remove("eta_s")
        if self.flops_per_sample is None:
            keys.remove("tflops_per_s")
        return keys

    def _rates(self, steps, seconds):
        """The logged numbers for `steps` steps that took `seconds`."""
        if steps <= 0 or seconds <= 0:
            return {}
        step_time = seconds / steps
        samples_per_s = self.global_batch_size * steps / seconds
        out = {
            "samples_per_s": samples_per_s,
            "samples_per_s_per_device": samples_per_s / self.num_devices,
            "step_time_s": step_time,
        }
        if self.total_steps is not None:
            out["eta_s"] = max(self.total_steps - self._steps_done, 0) * step_time
        if self.flops_per_sample is not None:
            out["tflops_per_s"] = self.flops_per_sample * samples_per_s / 1e12
        return out


def _wait_for(logs):
    """Convert tensor log values to NumPy: blocks until the step has run."""
    for key, value in (logs or {}).items():
        if keras.ops.is_tensor(value):
            logs[key] = float(np.asarray(keras.ops.convert_to_numpy(value)))


def _check_int(name, value, minimum, hint):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int ≥ {minimum} ({hint}); got {value!r}.")


# --- Devices, per backend ---


def detect_num_devices(model=None):
    """Devices a Keras training step runs on, for the current backend.

    - JAX: the devices of the Keras distribution (`keras.distribution`)
      when one is set; without one Keras trains on a single device, so 1.
    - TensorFlow: `model.distribute_strategy.num_replicas_in_sync` (the
      strategy in scope when the model was built), else the current
      strategy's.
    - PyTorch: `torch.distributed`'s world size when it is initialised,
      else 1.

    Args:
        model: a Keras model or `None`.

    Returns:
        int ≥ 1.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        return _jax_num_devices()
    if backend == "tensorflow":
        return _tensorflow_num_replicas(model)
    if backend == "torch":
        return _torch_world_size()
    return 1


def _jax_num_devices():
    distribution = keras.distribution.distribution()
    if distribution is None:
        return 1
    return int(np.size(distribution.device_mesh.devices))


def _tensorflow_num_replicas(model):
    import tensorflow as tf

    strategy = getattr(model, "distribute_strategy", None) or tf.distribute.get_strategy()
    return int(strategy.num_replicas_in_sync)


def _torch_world_size():
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return int(dist.get_world_size())
    return 1
