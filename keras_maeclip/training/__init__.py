"""Training at scale: distribution engines, fault tolerance, precision, throughput."""

from keras_maeclip.training.distribution import (
    DistributionSetup,
    configure_distribution,
)

__all__ = [
    "DistributionSetup",
    "configure_distribution",
]
