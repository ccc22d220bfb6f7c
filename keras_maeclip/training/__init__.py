"""Training at scale: distribution engines, fault tolerance, precision, throughput."""

from keras_maeclip.training.distribution import (
    DistributionSetup,
    configure_distribution,
)
from keras_maeclip.training.fault_tolerance import (
    BackupError,
    StepBackupAndRestore,
    all_finite,
    backup_mismatch,
    fault_tolerance_callbacks,
    resumed_step,
    run_fingerprint,
)
from keras_maeclip.training.flops import (
    FlopCount,
    analytic_flops_per_sample,
    flop_count,
)
from keras_maeclip.training.grad_cache import grad_cache_micro_batches, use_grad_cache
from keras_maeclip.training.layer_decay import LayerDecayAdamW, layer_decay_scales
from keras_maeclip.training.locking import lock_tower, tower_of
from keras_maeclip.training.precision import mixed_precision, remat_scope
from keras_maeclip.training.throughput import THROUGHPUT_KEYS, Throughput, detect_num_devices

__all__ = [
    "BackupError",
    "DistributionSetup",
    "FlopCount",
    "LayerDecayAdamW",
    "StepBackupAndRestore",
    "THROUGHPUT_KEYS",
    "Throughput",
    "all_finite",
    "analytic_flops_per_sample",
    "backup_mismatch",
    "configure_distribution",
    "detect_num_devices",
    "fault_tolerance_callbacks",
    "flop_count",
    "grad_cache_micro_batches",
    "layer_decay_scales",
    "lock_tower",
    "tower_of",
    "mixed_precision",
    "remat_scope",
    "resumed_step",
    "run_fingerprint",
    "use_grad_cache",
]
