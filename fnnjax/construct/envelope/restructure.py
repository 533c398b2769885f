"""EnvelopeNet restructuring (section 4.3) and its baselines, as pure functions of the layers.

One iteration, for every stage whose layer count is at most its maximum: sort the stage's blocks
by their featuremap statistic (ascending; the worst-case network: descending), prune greedily
while keeping at least one block in every layer until ``max(1, min(max_prune, floor(blocks *
prune_fraction)))`` blocks are pruned (fewer when the one-block rule stops it; none when every
layer holds one block), then append a full EnvelopeCell at the stage's tail. A stage past its
maximum is left unchanged: with the released code's maxima 15-5-3-3, five iterations take
10-1-1-1 to the paper's 15-6-4-4.

Ties are broken by position (earlier layer first, then the cell's order) in both directions, so
the worst case of statistics ``s`` is exactly the construction of ``-s``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import jax
import numpy as np

from fnnjax.arch.spec import Spec
from fnnjax.checks import check_bool, check_int, check_ints, check_number
from fnnjax.construct.envelope.net import (
    EnvelopeConfig,
    Layers,
    _check_layers,
    block_key,
    envelope_layers,
    envelope_spec,
)

__all__ = [
    "RELEASED_MAX_LAYERS",
    "default_max_layers",
    "RestructureConfig",
    "Restructuring",
    "inheritance_map",
    "random_equivalent",
    "random_equivalent_layers",
    "restructure",
    "restructure_layers",
]


RELEASED_MAX_LAYERS = (15, 5, 3, 3)
"""The released code's per-stage maxima for the paper's ``10-1-1-1`` init (-> ``15-6-4-4``)."""


def default_max_layers(stages: tuple[int, ...]) -> tuple[int, ...] | None:
    """The stage maxima ``fnnjax envelopenet`` and the experiment use unless told: the released
    code's :data:`RELEASED_MAX_LAYERS` for the paper's ``10-1-1-1`` (five iterations then give
    Table 1's ``15-6-4-4``; without them ``15-6-6-6``), none for any other init."""
    return RELEASED_MAX_LAYERS if tuple(stages) == (10, 1, 1, 1) else None


@dataclasses.dataclass(frozen=True)
class RestructureConfig:
    """Settings of one restructuring iteration (defaults: the paper's section 5).

    Attributes:
        max_prune: blocks pruned per stage and iteration at most (the paper: 6).
        prune_fraction: and at most this fraction of the stage's blocks (the paper: 1/3).
        max_layers: per stage, the layer count past which the stage is left unchanged (the
            released code's defaults for 10-1-1-1: ``(15, 5, 3, 3)``); ``None``: no limit.
        worst_case: prune the blocks with the *highest* statistic (the paper's worst-case
            network).
    """

    max_prune: int = 6
    prune_fraction: float = 1 / 3
    max_layers: tuple[int, ...] | None = None
    worst_case: bool = False

    def __post_init__(self) -> None:
        check_int("max_prune", self.max_prune)
        check_number("prune_fraction", self.prune_fraction, above=0.0, at_most=1.0)
        if self.max_layers is not None:
            object.__setattr__(self, "max_layers", tuple(self.max_layers))
            check_ints("max_layers", self.max_layers, empty=True)  # one per stage: checked later
        check_bool("worst_case", self.worst_case)


@dataclasses.dataclass(frozen=True)
class Restructuring:
    """What one iteration did.

    Attributes:
        layers: the new layers.
        pruned: keys (``"s{i}/l{j}/{op}"``, positions in the *old* network) of the pruned blocks,
            in pruning order.
        added: per stage, the index of the appended layer, or ``None`` (the stage was past its
            maximum and left unchanged).
        kept: per stage, for every new layer, the old layer it continues (``-1``: the new cell).
    """

    layers: Layers
    pruned: tuple[str, ...]
    added: tuple[int | None, ...]
    kept: tuple[tuple[int, ...], ...]


def _check_statistics(layers: Layers, statistics: Mapping[str, float]) -> None:
    for i, stage in enumerate(layers):
        for j, layer in enumerate(stage):
            for op in layer:
                key = block_key(i, j, op)
                if key not in statistics:
                    raise ValueError(f"statistics: no value for block {key!r} (expected one per "
                                     "block, keys 's{stage}/l{layer}/{op}')")  # fmt: skip
                if not math.isfinite(float(statistics[key])):
                    raise ValueError(f"statistics[{key!r}]: expected a finite number, got "
                                     f"{statistics[key]!r}")  # fmt: skip


def _prune_target(blocks: int, config: RestructureConfig) -> int:
    return max(1, min(config.max_prune, math.floor(blocks * config.prune_fraction + 1e-9)))


def restructure_layers(
    layers: Layers, statistics: Mapping[str, float], envelope: EnvelopeConfig,
    config: RestructureConfig = RestructureConfig(),
) -> Restructuring:  # fmt: skip
    """One restructuring iteration on the layer view (module docstring).

    Args:
        layers: the current layers.
        statistics: ``{block key: statistic}`` for every block (:func:`block_statistics`).
        envelope: the cell and widths (the appended cell is ``envelope.cell``).
        config: pruning and depth limits.
    """
    layers = _check_layers(layers, envelope)
    _check_statistics(layers, statistics)
    if config.max_layers is not None and len(config.max_layers) != len(layers):
        raise ValueError(f"max_layers: expected one value per stage ({len(layers)}), got "
                         f"{config.max_layers!r}")  # fmt: skip
    sign = -1.0 if config.worst_case else 1.0
    new_stages, pruned, added, kept = [], [], [], []
    for i, stage in enumerate(layers):
        limit = None if config.max_layers is None else config.max_layers[i]
        if limit is not None and len(stage) > limit:
            new_stages.append(stage)
            added.append(None)
            kept.append(tuple(range(len(stage))))
            continue
        blocks = [(sign * float(statistics[block_key(i, j, op)]), j, envelope.cell.index(op), op)
                  for j, layer in enumerate(stage) for op in layer]  # fmt: skip
        blocks.sort(key=lambda t: t[:3])
        remaining = [len(layer) for layer in stage]
        target = _prune_target(len(blocks), config)
        gone: set[tuple[int, str]] = set()
        for _, j, _, op in blocks:
            if len(gone) == target:
                break
            if remaining[j] > 1:
                remaining[j] -= 1
                gone.add((j, op))
                pruned.append(block_key(i, j, op))
        new_stage = tuple(tuple(op for op in layer if (j, op) not in gone)
                          for j, layer in enumerate(stage)) + (envelope.cell,)  # fmt: skip
        new_stages.append(new_stage)
        added.append(len(stage))
        kept.append(tuple(range(len(stage))) + (-1,))
    return Restructuring(layers=tuple(new_stages), pruned=tuple(pruned), added=tuple(added),
                         kept=tuple(kept))  # fmt: skip


def restructure(
    spec: Spec, statistics: Mapping[str, float], envelope: EnvelopeConfig,
    config: RestructureConfig = RestructureConfig(),
) -> Spec:  # fmt: skip
    """``(spec, statistics, config) -> spec``: one restructuring iteration of an EnvelopeNet spec
    (module docstring); :func:`restructure_layers` also says what was pruned and added."""
    done = restructure_layers(envelope_layers(spec, envelope), statistics, envelope, config)
    return envelope_spec(done.layers, envelope, spec.input_shape, spec.num_classes)


def random_equivalent_layers(key: jax.Array, layers: Layers, envelope: EnvelopeConfig) -> Layers:
    """A random network equivalent to ``layers`` (section 5): every stage keeps its layer count
    and its number of blocks; each layer gets one uniformly random block, the remaining blocks
    go to uniformly random free (layer, block) slots of the stage, so a layer never holds the
    same block twice (the released code draws a random layer and a random block with
    replacement, which can repeat a block in a layer). Keyed and reproducible."""
    layers = _check_layers(layers, envelope)
    m = envelope.m
    out = []
    for i, stage in enumerate(layers):
        k_first, k_rest = jax.random.split(jax.random.fold_in(key, i))
        n, total = len(stage), sum(len(layer) for layer in stage)
        chosen = np.zeros((n, m), bool)
        chosen[np.arange(n), np.asarray(jax.random.randint(k_first, (n,), 0, m))] = True
        free = np.flatnonzero(~chosen.ravel())
        order = np.asarray(jax.random.permutation(k_rest, free.size))
        chosen.ravel()[free[order[: total - n]]] = True
        out.append(tuple(tuple(op for c, op in zip(row, envelope.cell, strict=True) if c)
                         for row in chosen))  # fmt: skip
    return tuple(out)


def random_equivalent(key: jax.Array, spec: Spec, envelope: EnvelopeConfig) -> Spec:
    """:func:`random_equivalent_layers` of an EnvelopeNet spec, as a spec."""
    layers = random_equivalent_layers(key, envelope_layers(spec, envelope), envelope)
    return envelope_spec(layers, envelope, spec.input_shape, spec.num_classes)



def _block_indices(stage: Layers, i: int, envelope: EnvelopeConfig) -> tuple[list[int], list[int]]:
    """Per layer of one stage: the block index of its cell and of its dense transition (-1)."""
    cells, transitions, n = [], [], 1 if i > 0 else 0
    for j in range(len(stage)):
        if envelope.dense_skips and j > 0:
            transitions.append(n)
            n += 1
        else:
            transitions.append(-1)
        cells.append(n)
        n += 1
    return cells, transitions


def inheritance_map(old: Layers, done: Restructuring, envelope: EnvelopeConfig) -> dict[str, list[int]]:
    """The ``kept`` map of :func:`fnnjax.arch.transplant_params` from the network of ``old`` to
    the restructured one: every surviving block keeps its weights (its filters and, as the
    layer's input, the surviving channels it read), the widener and dense transitions follow
    their layers, the appended cell starts fresh. With ``width="layer"`` a survivor that widens
    keeps its old filters and gets new ones."""
    kept: dict[str, list[int]] = {}
    for i, (stage_old, stage_new) in enumerate(zip(old, done.layers, strict=True)):
        cells_old, trans_old = _block_indices(stage_old, i, envelope)
        cells_new, trans_new = _block_indices(stage_new, i, envelope)
        blocks = [0] if i > 0 else []
        for jn, jo in enumerate(done.kept[i]):
            if trans_new[jn] >= 0:
                blocks.append(trans_old[jo] if jo > 0 else -1)
            blocks.append(cells_old[jo] if jo >= 0 else -1)
            if jo >= 0:
                kept[f"s{i}b{cells_new[jn]}"] = [stage_old[jo].index(op) for op in stage_new[jn]]
        kept[f"s{i}"] = blocks
    return kept
