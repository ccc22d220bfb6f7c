"""Data parallelism on each backend's own engine equals one device.

One subprocess per backend (the engines need their devices set up before
the backend starts): JAX with 4 host devices (`keras.distribution`), TF with
2 logical CPU devices (`MirroredStrategy`), torch with 2 gloo processes
under `torchrun` (DDP). See `_replica_step_worker.py` for the cases.

Tolerances: losses to a relative 1e-5; weight changes of one SGD step
(lr · gradient, entries up to ~8) to rtol 1e-4 + atol 1e-5. Measured: at
most 2.2e-6 apart on every backend (float32 sums in another order).
"""

import os
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest

WORKER = os.path.join(os.path.dirname(__file__), "_replica_step_worker.py")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REPLICAS = {"jax": 4, "tensorflow": 2, "torch": 2}
CASES = ("global", "local", "schedule", "sigmoid", "sigmoid_local")
# CLIP's trainable variables; the sigmoid loss adds its bias.
NUM_WEIGHTS = {"sigmoid": 44, "sigmoid_local": 44}


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """`{rank: npz}` of the worker on the active backend."""
    backend = keras.config.backend()
    replicas = REPLICAS[backend]
    out = str(tmp_path_factory.mktemp("replicas"))
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    if backend == "jax":
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={replicas}"
        command = [sys.executable, WORKER, out, str(replicas)]
    elif backend == "tensorflow":
        command = [sys.executable, WORKER, out, str(replicas)]
    else:
        command = [
            sys.executable, "-m", "torch.distributed.run", "--nnodes=1",
            f"--nproc_per_node={replicas}", f"--master_port={_free_port()}",
            WORKER, out, str(replicas),
        ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    processes = replicas if backend == "torch" else 1
    return {rank: np.load(os.path.join(out, f"rank{rank}.npz")) for rank in range(processes)}


def _deltas(run, case, side):
    out, i = [], 0
    while f"{case}/{side}/delta/{i}" in run:
        out.append(run[f"{case}/{side}/delta/{i}"])
        i += 1
    return out


def _logged_loss(runs, case):
    # torch logs each process's own loss; the step's loss is their mean
    # (equal shares of the batch). JAX and TF log the global one.
    return float(np.mean([float(run[f"{case}/distributed/loss"]) for run in runs.values()]))


def test_engine_and_replica_count(runs):
    run = runs[0]
    backend = keras.config.backend()
    assert int(run["num_replicas"]) == REPLICAS[backend]
    engine = {"jax": "DataParallel", "tensorflow": "MirroredStrategy", "torch": "DistributedDataParallel"}
    assert engine[backend] in str(run["description"])


@pytest.mark.parametrize("case", CASES)
def test_step_equals_single_device(runs, case):
    """global ↔ one device on the global batch; local ↔ per-replica blocks."""
    reference = runs[0]
    assert _logged_loss(runs, case) == pytest.approx(
        float(reference[f"{case}/reference/loss"]), rel=1e-5
    )
    expected = _deltas(reference, case, "reference")
    for rank, run in runs.items():
        got = _deltas(run, case, "distributed")
        assert len(got) == len(expected) == NUM_WEIGHTS.get(case, 43)
        for i, (a, b) in enumerate(zip(got, expected)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=f"rank {rank}, weight {i}")


def test_cases_differ_so_the_comparison_can_fail(runs):
    run = runs[0]
    glob, local = _deltas(run, "global", "reference"), _deltas(run, "local", "reference")
    assert max(np.abs(a - b).max() for a, b in zip(glob, local)) > 0.1
    assert float(run["global/reference/loss"]) != pytest.approx(float(run["local/reference/loss"]), rel=1e-2)
    sigmoid, sigmoid_local = _deltas(run, "sigmoid", "reference"), _deltas(run, "sigmoid_local", "reference")
    assert max(np.abs(a - b).max() for a, b in zip(sigmoid, sigmoid_local)) > 1e-3
    assert float(run["sigmoid/reference/loss"]) != pytest.approx(float(run["global/reference/loss"]), rel=1e-2)


def test_masked_model_trains_in_step_on_every_replica(runs):
    losses = [float(run["maeclip/distributed/loss"]) for run in runs.values()]
    assert all(np.isfinite(losses))
    if len(runs) > 1:
        # DDP keeps the processes' weights identical.
        first, *others = runs.values()
        i = 0
        while f"maeclip/distributed/weight/{i}" in first:
            for other in others:
                np.testing.assert_array_equal(
                    first[f"maeclip/distributed/weight/{i}"], other[f"maeclip/distributed/weight/{i}"]
                )
            i += 1
        assert i > 40


@pytest.mark.skipif(keras.config.backend() != "jax", reason="ModelParallel is keras.distribution's (JAX); TF and torch refuse it (test_distribution.py)")
def test_model_parallel_shards_kernels_and_equals_single_device(runs):
    run = runs[0]
    assert "2 (batch) × 2 (model)" in str(run["model_parallel/description"])
    specs = [str(s) for s in run["model_parallel/shardings"]]
    query = [s for s in specs if "query/kernel" in s]
    mlp_in = [s for s in specs if "feedforward_intermediate_dense/kernel" in s]
    assert query and all(s.endswith(" (None, 'model', None)") for s in query)
    assert mlp_in and all(s.endswith(" (None, 'model')") for s in mlp_in)
    assert any(s.endswith("patch_embedding/projection/kernel (None, None, None, None)") for s in specs)
    assert float(run["model_parallel/distributed/loss"]) == pytest.approx(
        float(run["global/reference/loss"]), rel=1e-5
    )
    for a, b in zip(_deltas(run, "model_parallel", "distributed"), _deltas(run, "global", "reference")):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
