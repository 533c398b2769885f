"""EnvelopeNets (Kamath, Singh and Dutta, "Neural Architecture Construction using EnvelopeNets",
sections 4.1-4.3 and 5) as pure functions on the architecture IR, plus a resumable driver.

Network (:mod:`~fnnjax.construct.envelope.net`)
    ``C/n1-n2-.../M``: a 3x3 conv stem to ``C`` channels, stages of ``n_i`` EnvelopeCells (``M``
    conv blocks in parallel, concatenated: 1x1, 3x3, 3x3 sep, 5x5, 5x5 sep, 7x7 sep by default)
    separated by wideners (2x2/s2 max-pool and 3x3/s2 conv in parallel: half the size, twice
    the channels), and global average pool -> dropout -> dense. A block is conv -> ReLU -> BN
    (the paper's text; ``order="released"`` for the code's conv -> BN -> ReLU). Widths: every
    block of a layer gets ``int(W / blocks in the layer)`` channels, ``W = C * 2**stage`` (the
    released code; ``width="block"`` keeps ``int(W / M)`` per block). Optional DenseNet-style
    skips (a 1x1 conv over the concatenation of the stage's earlier outputs before each layer).
    The structure is its *layers* (per stage, per layer, the blocks present); :func:`envelope_spec`
    and :func:`envelope_layers` convert between layers and specs.

Statistic (:func:`block_statistics`)
    The squared l2 norm of each block's output normalized by the featuremap size, summed over
    the iteration's training examples as the released code does (per batch: the sum over the
    examples of the mean over height, width and channels of ``y**2``; averaged over the
    batches); accumulated inside the jitted train step (the model's ``collect_stats`` hook and
    the engine's ``"stats"`` collection), at the blocks' own units only
    (:func:`statistics_model`). The running featuremap variance is offered too.

Restructuring (:mod:`~fnnjax.construct.envelope.restructure`)
    ``restructure(spec, statistics, envelope, config) -> spec``: per stage, prune the blocks with
    the lowest statistic (at most ``min(6, a third)`` of the stage's, at least one block kept in
    every layer), then append a full cell at the stage's tail; stages past their maximum depth
    are left alone. The worst-case network prunes the highest; random equivalents keep each
    stage's depth and block count with random blocks (:func:`random_equivalent`).

Construction (:func:`construct`)
    Train from scratch with statistics for ``epochs_per_iteration`` epochs, restructure, repeat
    ``iterations`` times (the paper: 10 epochs, 5 iterations, SGD lr 0.1, batch 50, no weight
    inheritance); resumable inside an iteration; records every iteration in
    ``construction.json``. Construction time is reported as the paper does,
    ``N * f * t_train + t_train`` in epochs (:meth:`ConstructionConfig.construction_epochs`).
    Its parts are public: :func:`train_iteration` (one iteration's training with statistics) and,
    beyond the paper, :func:`inherited_variables` (a restructured network starting from its
    predecessor's trained weights: ``ConstructionConfig.inherit``).

The paper's text says construction keeps the parameter count "approximately same", its Table 1
shows 13M -> 48M for 10-1-1-1 -> 15-6-4-4: the construction records carry the parameter count of
every iteration, so the ratio is measured, not assumed.
"""

from fnnjax.construct.envelope.driver import (
    STATISTICS,
    ConstructionConfig,
    block_statistics,
    construct,
    inherited_variables,
    restore_iteration,
    statistics_model,
    train_iteration,
)
from fnnjax.construct.envelope.net import (
    CELL_OPS,
    EnvelopeConfig,
    block_counts,
    block_key,
    block_modules,
    envelope_layers,
    envelope_notation,
    envelope_spec,
    initial_layers,
    layer_widths,
    parse_notation,
)
from fnnjax.construct.envelope.restructure import (
    RELEASED_MAX_LAYERS,
    RestructureConfig,
    Restructuring,
    default_max_layers,
    inheritance_map,
    random_equivalent,
    random_equivalent_layers,
    restructure,
    restructure_layers,
)

__all__ = [
    "CELL_OPS",
    "RELEASED_MAX_LAYERS",
    "STATISTICS",
    "ConstructionConfig",
    "EnvelopeConfig",
    "RestructureConfig",
    "Restructuring",
    "block_counts",
    "default_max_layers",
    "block_key",
    "block_modules",
    "block_statistics",
    "construct",
    "envelope_layers",
    "envelope_notation",
    "envelope_spec",
    "inheritance_map",
    "inherited_variables",
    "initial_layers",
    "layer_widths",
    "parse_notation",
    "random_equivalent",
    "random_equivalent_layers",
    "restructure",
    "restructure_layers",
    "restore_iteration",
    "statistics_model",
    "train_iteration",
]
