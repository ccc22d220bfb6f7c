"""`configure_distribution` in one process: resolution of "auto" and clear refusals."""

import keras
import pytest

from keras_maeclip.training.distribution import configure_distribution

BACKEND = keras.config.backend()


def test_none_and_auto_on_one_device():
    for kind in ("none", "auto"):
        setup = configure_distribution(kind)
        assert setup.kind == "none"
        assert setup.num_replicas == 1 and setup.is_chief
        assert setup.process_batch_size(12) == 12
        with setup.scope():
            pass
    if BACKEND == "jax":
        assert keras.distribution.distribution() is None


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="Unknown distribution 'pipeline'"):
        configure_distribution("pipeline")


@pytest.mark.skipif(BACKEND == "jax", reason="JAX runs model_parallel (test_data_parallel.py); only TF and torch refuse it")
def test_model_parallel_is_refused_with_the_alternative():
    with pytest.raises(ValueError, match=f"not available on the {BACKEND} backend.*JAX backend"):
        configure_distribution("model_parallel")


@pytest.mark.skipif(BACKEND != "jax", reason="the device-mesh size check exists only on JAX, the backend with model_parallel")
def test_model_parallel_size_must_divide_the_devices():
    with pytest.raises(ValueError, match="model_parallel_size=2 must divide the 1 devices"):
        configure_distribution("model_parallel", model_parallel_size=2)
    keras.distribution.set_distribution(None)


@pytest.mark.skipif(BACKEND != "torch", reason="only torch needs torchrun to start its processes")
def test_torch_data_parallel_needs_torchrun(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(ValueError, match="torchrun --nproc_per_node=N"):
        configure_distribution("data_parallel")


def test_batch_must_split_over_replicas():
    setup = configure_distribution("none")
    setup.num_replicas = 4
    with pytest.raises(ValueError, match="Global batch size 10 does not split over 4 replicas"):
        setup.process_batch_size(10)
