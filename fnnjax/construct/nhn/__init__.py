"""Neuron Hierarchical Networks (Wang et al. 2018, ../shared/papers): SmoothInit and DNP kernel
pruning so far; the clean-up of neurons left without connections, the location-direction search
of add-on neurons and the pipeline are still to come (issue #12).

* :func:`smooth_init`: every 3x3 and 5x5 conv kernel smoothed by a 3x3 Gaussian after
  initialization (:mod:`~fnnjax.construct.nhn.smooth`).
* :func:`dnp`: prune the kernels whose spatial standard deviation is under a threshold, through
  the per-kernel masks (:mod:`~fnnjax.construct.nhn.prune`).
"""

from fnnjax.construct.nhn.cleanup import Cleanup, clean_up
from fnnjax.construct.nhn.prune import PruneResult, dnp, kernel_std, prunable_kernels
from fnnjax.construct.nhn.smooth import (
    gaussian_filter,
    smooth_init,
    smooth_kernel,
    smoothable_kernels,
)

__all__ = [
    "Cleanup",
    "PruneResult",
    "clean_up",
    "dnp",
    "gaussian_filter",
    "kernel_std",
    "prunable_kernels",
    "smooth_init",
    "smooth_kernel",
    "smoothable_kernels",
]
