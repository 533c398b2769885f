"""Neuron Hierarchical Networks (Wang et al. 2018, "Neuron Hierarchical Networks"), the pieces of
Algorithm 2:

* :func:`smooth_init`: every 3x3 and 5x5 conv kernel smoothed by a 3x3 Gaussian after
  initialization (:mod:`~fnnjax.construct.nhn.smooth`).
* :func:`dnp`: prune the kernels whose spatial standard deviation is under a threshold, through
  the per-kernel masks (:mod:`~fnnjax.construct.nhn.prune`); :func:`clean_up`: remove the neurons
  left without input or output connections (:mod:`~fnnjax.construct.nhn.cleanup`).
* Add-on neurons: gene codes and the add-on supernet (:mod:`~fnnjax.construct.nhn.genes`), the
  location and direction searches as pure ``init / ask / tell``
  (:mod:`~fnnjax.construct.nhn.evolve`) and the LDS driver with shared weights, :func:`lds`
  (:mod:`~fnnjax.construct.nhn.search`).
* :func:`run_nhn`: the whole of Algorithm 2, resumable (:mod:`~fnnjax.construct.nhn.pipeline`);
  the command ``fnnjax nhn``.

The grouped-convolution head is :class:`fnnjax.arch.Head` ``(pool="grouped")``.
"""

from fnnjax.construct.nhn.cleanup import Cleanup, clean_up
from fnnjax.construct.nhn.evolve import (
    DirectionConfig,
    DirectionState,
    LocationConfig,
    LocationState,
    direction_ask,
    direction_init,
    direction_tell,
    eligible_channels,
    location_ask,
    location_init,
    location_tell,
    random_directions,
)
from fnnjax.construct.nhn.genes import (
    GeneSpace,
    addon_space,
    check_genes,
    gene_locations,
    gene_space,
    genes_to_selection,
    mutate,
    population_arch,
    random_genes,
    recombine,
)
from fnnjax.construct.nhn.pipeline import (
    NhnConfig,
    addons_off,
    effective_params,
    nhn_score,
    run_nhn,
    stage_train_config,
    with_addons,
)
from fnnjax.construct.nhn.prune import PruneResult, dnp, kernel_std, prunable_kernels
from fnnjax.construct.nhn.search import LdsConfig, lds, trainable_mask
from fnnjax.construct.nhn.smooth import (
    gaussian_filter,
    smooth_init,
    smooth_kernel,
    smoothable_kernels,
)

__all__ = [
    "Cleanup",
    "DirectionConfig",
    "DirectionState",
    "GeneSpace",
    "LdsConfig",
    "LocationConfig",
    "LocationState",
    "NhnConfig",
    "PruneResult",
    "addon_space",
    "check_genes",
    "clean_up",
    "direction_ask",
    "direction_init",
    "direction_tell",
    "dnp",
    "effective_params",
    "eligible_channels",
    "gaussian_filter",
    "gene_locations",
    "gene_space",
    "genes_to_selection",
    "kernel_std",
    "lds",
    "location_ask",
    "location_init",
    "location_tell",
    "mutate",
    "nhn_score",
    "population_arch",
    "prunable_kernels",
    "random_directions",
    "random_genes",
    "recombine",
    "run_nhn",
    "smooth_init",
    "smooth_kernel",
    "smoothable_kernels",
    "stage_train_config",
    "trainable_mask",
    "addons_off",
    "with_addons",
]
