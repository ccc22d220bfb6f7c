"""The analytic FLOP count and the `Throughput` callback."""

import csv
import glob
import math
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_maeclip.layers.masking import num_kept, num_text_slots
from keras_maeclip.models import CLIP, M3AE, MAE, MAECLIP
from keras_maeclip.training.flops import analytic_flops_per_sample, flop_count, supports
from keras_maeclip.training.throughput import THROUGHPUT_KEYS, Throughput, detect_num_devices
from tests.tiny import TINY, make_clip, synthetic_batch

BACKEND = keras.backend.backend()
# MAE-CLIP / M3AE / MAE test sizes: the tiny towers and a one-block decoder.
DECODER = dict(hidden_dim=16, num_layers=1, num_heads=2)
ENCODER = dict(patch_size=4, hidden_dim=32, num_layers=1, num_heads=2)


def mm(m, k, n):
    """FLOPs of an (m, k) @ (k, n) matmul."""
    return 2 * m * k * n


def block(tokens, width, heads=2, mlp=None):
    """One pre-LN block, matmul by matmul (per sample)."""
    mlp = mlp or 4 * width
    head = width // heads
    return (
        3 * mm(tokens, width, width)  # q, k, v
        + heads * mm(tokens, head, tokens)  # q · kᵀ per head
        + heads * mm(tokens, tokens, head)  # softmax(·) · v per head
        + mm(tokens, width, width)  # attention output
        + mm(tokens, width, mlp)
        + mm(tokens, mlp, width)  # MLP
    )


# --------------------------------------------------------------------------
# FLOP count against a hand count.
# --------------------------------------------------------------------------


def test_tiny_clip_matches_a_hand_count(preprocessor):
    # tests/tiny.py: 16² images, patch 4 (16 patches of 4·4·3 = 48 values),
    # both towers 32 wide × 1 layer × 2 heads (MLP 128), 12 tokens, embed 16,
    # GAP pooling (no pooling matmuls), no class token.
    model = make_clip(preprocessor)
    batch = 8
    image = (
        mm(16, 48, 32)  # patch embedding
        + 3 * mm(16, 32, 32)  # q, k, v: (16, 32) @ (32, 32)
        + 2 * mm(16, 16, 16)  # q · kᵀ: 2 heads of (16, 16) @ (16, 16)
        + 2 * mm(16, 16, 16)  # p · v: 2 heads of (16, 16) @ (16, 16)
        + mm(16, 32, 32)  # attention output projection
        + mm(16, 32, 128) + mm(16, 128, 32)  # MLP
        + mm(1, 32, 16)  # image projection of the pooled token
    )
    text = (
        3 * mm(12, 32, 32)  # q, k, v: (12, 32) @ (32, 32)
        + 2 * mm(12, 16, 12)  # q · kᵀ: 2 heads of (12, 16) @ (16, 12)
        + 2 * mm(12, 12, 16)  # p · v: 2 heads of (12, 12) @ (12, 16)
        + mm(12, 32, 32)
        + mm(12, 32, 128) + mm(12, 128, 32)
        + mm(1, 32, 16)  # text projection
    )
    logits = mm(1, 16, batch)  # this sample's row of the (8, 8) logits
    forward = image + text + logits
    assert forward == 790_784  # the hand count, evaluated
    count = flop_count(model, batch)
    assert count.forward == forward
    assert count.no_grad == {}
    assert analytic_flops_per_sample(model, batch) == 3 * forward
    # The logits row grows with the batch, nothing else does.
    assert analytic_flops_per_sample(model, 64) - 3 * forward == 3 * mm(1, 16, 64 - batch)


def test_patch_dropout_counts_the_kept_patches(preprocessor):
    # FLIP: 16 patches, dropout 0.75 keeps 4 (the masking's own count); the
    # patch embedding still runs on all 16, the text side is unchanged.
    full = flop_count(make_clip(preprocessor), 8)
    flip = flop_count(make_clip(preprocessor, patch_dropout=0.75), 8)
    assert flip.grad["image_tower"] == block(4, 32)
    assert full.grad["image_tower"] == block(16, 32)
    assert flip.grad["patch_embedding"] == full.grad["patch_embedding"] == mm(16, 48, 32)
    assert flip.forward - full.forward == block(4, 32) - block(16, 32)


def test_map_pooling_and_class_token_are_counted(preprocessor):
    model = make_clip(
        preprocessor, preset="clip_tiny_map",
        image_encoder=dict(TINY["image_encoder"], use_class_token=True),
    )
    count = flop_count(model, 8)
    # MAP head over the 16 patch tokens (class token stripped): probe query
    # and output projections on 1 token, key/value projections on 16, the
    # scores and weighted sum, and the MLP on the pooled token.
    map16 = 2 * mm(1, 32, 32) + 2 * mm(16, 32, 32) + 2 * mm(1, 32, 16) + mm(1, 32, 128) + mm(1, 128, 32)
    map12 = 2 * mm(1, 32, 32) + 2 * mm(12, 32, 32) + 2 * mm(1, 32, 12) + mm(1, 32, 128) + mm(1, 128, 32)
    assert count.grad["image_pooling"] == map16
    assert count.grad["text_pooling"] == map12
    assert count.grad["image_tower"] == block(17, 32)  # 16 patches + class token


def make_maeclip(preprocessor, preset="maeclip_tiny_gap", **kwargs):
    return MAECLIP.from_preset(
        preset, preprocessor=preprocessor, seed=0,
        **{**TINY, "decoder": DECODER, **kwargs},
    )


@pytest.mark.parametrize("view", ["masked", "full"])
@pytest.mark.parametrize("masking", ["random", "similarity"])
def test_maeclip_counts_each_pass(preprocessor, view, masking):
    model = make_maeclip(preprocessor, contrastive_view=view, masking=masking)
    batch = 8
    kept = 4  # 16 patches, 75 % masked
    text = block(12, 32) + mm(1, 32, 16)
    grad = mm(16, 48, 32) + text + block(kept, 32) + mm(1, 32, 16) + mm(1, 16, batch)
    decoder = (
        mm(kept, 32, 16)  # kept image tokens → decoder width
        + mm(12, 32, 16)  # text tokens → decoder width
        + block(16 + 12, 16)  # one block over all patches + text tokens
        + mm(16, 16, 48)  # pixel head
        # token head at the masked slots only: ceil(0.15 * 12) = 2 of 12
        + mm(2, 16, model.decoder.vocabulary_size)
    )
    grad += decoder
    no_grad = 0
    if view == "full":
        grad += block(16, 32)  # second, differentiated pass over all patches
    if masking == "similarity":
        if view == "masked":
            no_grad += block(16, 32)  # the scoring pass, under stop-gradient
        no_grad += mm(16, 32, 16) + mm(16, 16, 1)  # project patches, score vs caption
    count = flop_count(model, batch)
    assert sum(count.grad.values()) == grad
    assert sum(count.no_grad.values()) == no_grad
    assert analytic_flops_per_sample(model, batch) == 3 * grad + no_grad


def test_maeclip_whole_caption_view_adds_one_text_tower_pass(preprocessor):
    masked = flop_count(make_maeclip(preprocessor), 8)
    whole = flop_count(make_maeclip(preprocessor, contrastive_text_view="full"), 8)
    assert sum(whole.grad.values()) - sum(masked.grad.values()) == block(12, 32)
    assert whole.no_grad == masked.no_grad


def test_m3ae_and_mae_match_a_hand_count():
    m3ae = M3AE.from_preset(
        "m3ae_tiny", vocabulary_size=100, sequence_length=12, image_size=16,
        encoder=ENCODER, decoder=DECODER, seed=0,
    )
    kept = 4
    forward = (
        mm(16, 48, 32)
        + block(kept + 12, 32)  # one shared block over kept patches + text
        + mm(kept, 32, 16) + mm(12, 32, 16)
        + block(16 + 12, 16)
        + mm(16, 16, 48) + mm(9, 16, 100)  # token head: ceil(0.75 * 12) = 9 slots
    )
    assert flop_count(m3ae).forward == forward
    assert analytic_flops_per_sample(m3ae) == 3 * forward

    mae = MAE.from_preset(
        "mae_tiny", image_size=16, image_encoder=dict(ENCODER, use_class_token=True),
        decoder=DECODER, mask_ratio=0.5, seed=0,
    )
    kept = 8
    forward = mm(16, 48, 32) + block(kept + 1, 32) + mm(kept, 32, 16) + block(16, 16) + mm(16, 16, 48)
    assert analytic_flops_per_sample(mae) == 3 * forward


def test_flop_count_rejects_bad_input(preprocessor):
    assert not supports(keras.Sequential([keras.layers.Dense(2)]))
    with pytest.raises(ValueError, match="flops_per_sample"):
        flop_count(keras.Sequential([keras.layers.Dense(2)]), 8)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        flop_count(make_clip(preprocessor), None)


# --------------------------------------------------------------------------
# JAX only: the count against what XLA runs.
# --------------------------------------------------------------------------

_TENSOR = re.compile(r"tensor<([0-9x]*?)x?[a-z]+[0-9]*>")


def _dims(text):
    return [int(d) for d in text.split("x") if d]


def stablehlo_matmul_flops(text):
    """2 · output size · contracted size, summed over dot_general and convolution ops."""
    total = 0
    for line in text.splitlines():
        if "stablehlo.dot_general" not in line and "stablehlo.convolution" not in line:
            continue
        types = [_dims(t) for t in _TENSOR.findall(line.rsplit(" : ", 1)[-1])]
        if "dot_general" in line:
            lhs, out = types[0], types[-1]
            dims = re.search(r"contracting_dims = \[([0-9, ]*)\] x", line).group(1)
            total += 2 * math.prod(out) * math.prod(lhs[int(i)] for i in dims.split(","))
        else:  # NHWC x HWIO: each output value is a kernel-sized dot product.
            kernel, out = types[1], types[-1]
            total += 2 * math.prod(out) * math.prod(kernel) // kernel[-1]
    return total


def _jax_lowerings(model, batch, contrastive):
    import jax

    trainable = [v.value for v in model.trainable_variables]
    frozen = [v.value for v in model.non_trainable_variables]

    def forward(trainable, frozen, x):
        out, _ = model.stateless_call(trainable, frozen, x, training=True)
        if contrastive:  # the loss's (batch, batch) logits
            out = dict(out, logits=keras.ops.matmul(
                out["image_embeddings"], keras.ops.transpose(out["text_embeddings"])))
        return out

    def loss(trainable, frozen, x):
        out = forward(trainable, frozen, x)
        return sum(keras.ops.sum(v) for v in out.values() if v.dtype == "float32")

    return (
        jax.jit(forward).lower(trainable, frozen, batch),
        jax.jit(jax.value_and_grad(loss)).lower(trainable, frozen, batch),
    )


def _one_hot_gather_flops(model, batch_size):
    """Matmuls the step runs that are not model FLOPs: gathers as one-hot products.

    `gather_tokens` and the decoder's unshuffle are written as `one_hot @
    tokens` (see `keras_maeclip.layers.masking.gather_tokens`), so XLA sees
    them as dot_generals; `flop_count` rightly leaves them out. Per sample:
    the kept patches `(kept, patches) @ (patches, width)`, the decoder's
    unshuffle `(patches, kept) @ (kept, decoder_width)` and, with text, the
    masked-token slots `(slots, length) @ (length, decoder_width)`.
    """
    if not isinstance(model, (MAECLIP, M3AE, MAE)):
        return 0
    encoder = model.backbone.image_encoder if isinstance(model, MAECLIP) else model.backbone
    patches, width = encoder.num_patches, encoder.hidden_dim
    ratio = model.mask_ratio if isinstance(model, MAE) else model.image_mask_ratio
    kept = num_kept(patches, ratio)
    flops = mm(kept, patches, width) + mm(patches, kept, model.decoder.hidden_dim)
    if not isinstance(model, MAE):
        length = model.preprocessor.sequence_length
        flops += mm(num_text_slots(length, model.text_mask_ratio), length, model.decoder.hidden_dim)
    return batch_size * flops


@pytest.mark.skipif(BACKEND != "jax", reason="compares with the program XLA compiles, which only the JAX backend exposes here")
def test_count_matches_the_compiled_program(preprocessor):
    batch_size = 4
    models = [
        (make_clip(preprocessor, preset="clip_tiny_map",
                   image_encoder=dict(TINY["image_encoder"], use_class_token=True)), True),
        # MAP pooling over the kept tokens, then over all of them.
        (make_maeclip(preprocessor, "maeclip_tiny_map", masking="similarity"), True),
        (make_maeclip(preprocessor, "maeclip_tiny_map", contrastive_view="full"), True),
        (M3AE.from_preset("m3ae_tiny", preprocessor=preprocessor, image_size=16,
                          encoder=ENCODER, decoder=DECODER, seed=0), True),
        (MAE.from_preset("mae_tiny", image_size=16, image_encoder=ENCODER, decoder=DECODER,
                         seed=0), False),
    ]
    inputs = preprocessor(synthetic_batch(batch_size))
    for model, text in models:
        contrastive = isinstance(model, CLIP)
        x = inputs if text else {"images": inputs["images"]}
        forward, train = _jax_lowerings(model, x, contrastive)
        count = flop_count(model, batch_size)
        name = type(model).__name__
        gathers = _one_hot_gather_flops(model, batch_size)
        # Exact: every matmul of the traced forward, from the StableHLO text.
        assert stablehlo_matmul_flops(forward.as_text()) == batch_size * count.forward + gathers, name
        # Exact: the gradient program runs each differentiated matmul 3 times
        # and the stop-gradient scoring pass once, except the patch
        # embedding's input gradient (no gradient w.r.t. pixels), which the
        # 3× convention counts. A one-hot gather's backward is one product
        # (the one-hot is a constant), so gathers count twice.
        patch = count.grad["patch_embedding"]
        expected = batch_size * (count.train - patch) + 2 * gathers
        assert stablehlo_matmul_flops(train.as_text()) == expected, name
        # XLA's own total also counts elementwise work (norms, GELU,
        # softmax), 30–45 % on top at these toy widths (a few % at 384).
        analysis = forward.compile().cost_analysis()
        if isinstance(analysis, (list, tuple)):
            analysis = analysis[0]
        ratio = analysis["flops"] / (batch_size * count.forward)
        assert 1.0 <= ratio <= 1.5, (name, ratio)


# --------------------------------------------------------------------------
# The callback.
# --------------------------------------------------------------------------


class FakeClock:
    """Returns scripted times: `step` seconds more at every call."""

    def __init__(self, step=0.5):
        self.now, self.step, self.calls = 100.0, step, 0

    def __call__(self):
        self.calls += 1
        self.now += self.step
        return self.now


def fit_tiny_clip(preprocessor, callbacks, steps=4, epochs=1, verbose=0, batch_size=4):
    model = make_clip(preprocessor)
    data = tf.data.Dataset.from_tensor_slices(synthetic_batch(batch_size)).batch(batch_size).repeat()
    model.fit(data, steps_per_epoch=steps, epochs=epochs, verbose=verbose, callbacks=callbacks,
              shuffle=False)
    return model


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def tensorboard_scalars(logdir):
    """`{tag: [values]}` from every event file under `logdir`."""
    tags = {}
    for path in glob.glob(f"{logdir}/**/events.out.tfevents.*", recursive=True):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                number = value.simple_value if value.HasField("simple_value") else float(
                    tf.make_ndarray(value.tensor))
                tags.setdefault(value.tag, []).append(number)
    return tags


def test_fit_logs_to_csv_tensorboard_and_the_progress_bar(preprocessor, tmp_path, capsys):
    csv_path, logdir = tmp_path / "log.csv", tmp_path / "tb"
    throughput = Throughput(global_batch_size=4)
    fit_tiny_clip(
        preprocessor,
        [throughput, keras.callbacks.CSVLogger(str(csv_path)),
         keras.callbacks.TensorBoard(str(logdir), update_freq=1)],
        steps=3, epochs=2, verbose=1,
    )
    rows = read_csv(csv_path)
    assert len(rows) == 2
    for row in rows:
        for key in THROUGHPUT_KEYS:
            value = float(row[key])
            assert math.isfinite(value) and value >= 0, (key, row[key])
        assert float(row["samples_per_s"]) > 0 and float(row["tflops_per_s"]) > 0
        # One device here: per-device equals the total.
        assert float(row["samples_per_s_per_device"]) == float(row["samples_per_s"])
        np.testing.assert_allclose(float(row["samples_per_s"]) * float(row["step_time_s"]), 4, rtol=1e-9)
    assert float(rows[-1]["eta_s"]) == 0.0  # nothing left after the last epoch
    assert throughput.num_devices == 1 == detect_num_devices()
    assert throughput.flops_per_sample == analytic_flops_per_sample(throughput.model, 4)

    scalars = tensorboard_scalars(logdir)
    for key in THROUGHPUT_KEYS:
        assert len(scalars[f"epoch_{key}"]) == 2, key
        # Batch scalars from the second step on: the first is warm-up.
        assert len(scalars[f"batch_{key}"]) == 5, key
        assert all(math.isfinite(v) for v in scalars[f"batch_{key}"])

    out = capsys.readouterr().out
    for key in THROUGHPUT_KEYS:
        assert f"{key}:" in out, key


def test_rates_are_exact_with_a_fake_clock(preprocessor, tmp_path, capsys):
    # Every clock read advances 0.5 s: one at each epoch start and one at
    # each batch end, so every timed step takes exactly 0.5 s.
    clock = FakeClock(0.5)
    throughput = Throughput(
        global_batch_size=4, num_devices=2, flops_per_sample=3e11, warmup_steps=2, clock=clock
    )
    csv_path = tmp_path / "log.csv"
    fit_tiny_clip(
        preprocessor, [throughput, keras.callbacks.CSVLogger(str(csv_path))],
        steps=3, epochs=2, verbose=2,
    )
    assert clock.calls == 2 * (1 + 3)
    rows = read_csv(csv_path)
    # Epoch 0: steps 0-1 are warm-up, step 2 is timed; epoch 1: all three.
    for row, remaining in zip(rows, (3, 0)):
        assert float(row["step_time_s"]) == 0.5
        assert float(row["samples_per_s"]) == 8.0  # 4 samples / 0.5 s
        assert float(row["samples_per_s_per_device"]) == 4.0  # 2 devices
        assert float(row["tflops_per_s"]) == 2.4  # 3e11 · 8 / 1e12
        assert float(row["eta_s"]) == remaining * 0.5
    assert throughput.latest == {
        "samples_per_s": 8.0, "samples_per_s_per_device": 4.0, "step_time_s": 0.5,
        "eta_s": 0.0, "tflops_per_s": 2.4,
    }
    out = capsys.readouterr().out  # verbose=2: one line per epoch
    assert "samples_per_s: 8.0000" in out and "eta_s: 1.5000" in out
    assert "tflops_per_s: 2.4000" in out


class ScriptedClock:
    def __init__(self, times):
        self.times = list(times)

    def __call__(self):
        return self.times.pop(0)


def drive(callback, batches_per_epoch, params):
    """Call the hooks as `fit` does; return (batch logs, epoch logs)."""
    callback.set_params(params)
    callback.on_train_begin()
    batch_logs, epoch_logs = [], []
    for epoch, batches in enumerate(batches_per_epoch):
        callback.on_epoch_begin(epoch)
        for batch in batches:
            logs = {"loss": 1.0}
            callback.on_train_batch_end(batch, logs)
            batch_logs.append(logs)
        logs = {"loss": 1.0}
        callback.on_epoch_end(epoch, logs)
        epoch_logs.append(logs)
    return batch_logs, epoch_logs


def test_window_warmup_eta_and_epoch_averages_by_hand():
    # Epoch 0 starts at t=0; batch ends at 10 (warm-up), 11, 13, 16; epoch 1
    # starts at 20 (after validation), batch ends at 21, 25.
    clock = ScriptedClock([0, 10, 11, 13, 16, 20, 21, 25])
    callback = Throughput(global_batch_size=32, num_devices=4, flops_per_sample=1e10,
                          window=2, clock=clock)
    batch_logs, epoch_logs = drive(callback, [[0, 1, 2, 3], [0, 1]], {"steps": 4, "epochs": 2})
    assert "samples_per_s" not in batch_logs[0]  # warm-up: nothing timed yet
    step_times = [None, 1.0, 1.5, 2.5, 2.0, 2.5]  # window of 2: (1), (1, 2), (2, 3), (3, 1), (1, 4)
    done = [1, 2, 3, 4, 5, 6]
    for logs, step_time, steps in zip(batch_logs[1:], step_times[1:], done[1:]):
        assert logs["step_time_s"] == step_time
        assert logs["samples_per_s"] == 32 / step_time
        assert logs["samples_per_s_per_device"] == 32 / step_time / 4
        assert logs["eta_s"] == (8 - steps) * step_time
        assert logs["tflops_per_s"] == pytest.approx(1e10 * 32 / step_time / 1e12, rel=1e-15)
    # Epoch 0: 3 timed steps in 6 s (10 → 16); epoch 1: 2 steps in 5 s (20 → 25).
    assert epoch_logs[0]["step_time_s"] == 2.0 and epoch_logs[0]["samples_per_s"] == 16.0
    assert epoch_logs[0]["eta_s"] == 4 * 2.0
    # The second epoch stopped after 2 of its 4 steps: 2 of the 8 remain.
    assert epoch_logs[1]["step_time_s"] == 2.5 and epoch_logs[1]["eta_s"] == 2 * 2.5
    assert epoch_logs[1]["samples_per_s"] == 32 * 2 / 5
    assert epoch_logs[1]["loss"] == 1.0  # other logs untouched


def test_steps_per_execution_and_unknown_totals():
    # steps_per_execution=3: Keras reports batch ends 2 and 5 (0-indexed).
    clock = ScriptedClock([0, 4, 10])
    callback = Throughput(global_batch_size=8, warmup_steps=3, clock=clock, num_devices=1)
    batch_logs, epoch_logs = drive(callback, [[2, 5]], {"steps": None, "epochs": 1})
    assert "samples_per_s" not in batch_logs[0]  # steps 0-2: warm-up
    assert batch_logs[1]["step_time_s"] == 2.0  # 3 steps in 6 s
    assert batch_logs[1]["samples_per_s"] == 4.0
    # No known total: no ETA; not one of our models and no count: no FLOP/s.
    assert "eta_s" not in batch_logs[1] and "tflops_per_s" not in batch_logs[1]
    assert set(THROUGHPUT_KEYS) - set(epoch_logs[0]) == {"eta_s", "tflops_per_s"}


def test_an_epoch_without_timed_steps_logs_nan():
    clock = ScriptedClock([0, 5, 6, 7, 8])
    callback = Throughput(global_batch_size=8, num_devices=1, clock=clock, total_steps=3)
    _, epoch_logs = drive(callback, [[0], [0, 1]], {"steps": 1, "epochs": 2})
    assert set(THROUGHPUT_KEYS) - {"tflops_per_s"} == set(epoch_logs[0]) - {"loss"}
    assert all(math.isnan(v) for k, v in epoch_logs[0].items() if k != "loss")
    assert epoch_logs[1]["step_time_s"] == 1.0  # timed from the epoch start (6 → 7 → 8)


def test_tensor_logs_are_materialised_before_the_clock_is_read():
    reads = []
    callback = Throughput(global_batch_size=8, num_devices=1, warmup_steps=0,
                          clock=lambda: reads.append(1) or float(len(reads)))
    callback.set_params({"steps": 2, "epochs": 1})
    callback.on_train_begin()
    callback.on_epoch_begin(0)
    logs = {"loss": keras.ops.convert_to_tensor(2.5)}
    callback.on_train_batch_end(0, logs)
    assert type(logs["loss"]) is float and logs["loss"] == 2.5
    assert logs["step_time_s"] == 1.0 and logs["eta_s"] == 1.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(global_batch_size=0), "global_batch_size must be an int ≥ 1"),
        (dict(global_batch_size=8, num_devices=0), "num_devices must be an int ≥ 1"),
        (dict(global_batch_size=8, warmup_steps=-1), "warmup_steps must be an int ≥ 0"),
        (dict(global_batch_size=8, window=0), "window must be an int ≥ 1"),
        (dict(global_batch_size=8, flops_per_sample=-1.0), "flops_per_sample must be a positive"),
        (dict(global_batch_size=8, clock=3.0), "clock must be a callable"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Throughput(**kwargs)
