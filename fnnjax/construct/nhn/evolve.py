"""Location-direction search (NHN section 2.3, Algorithm 1) as pure ``init / ask / tell`` over
explicit states, evosax's shape. Training and scoring live in the driver
(:func:`fnnjax.construct.nhn.search.lds`); these functions only decide what to try next.

Location search
    A population of ``K`` gene codes (:mod:`~fnnjax.construct.nhn.genes`). Each cycle every
    individual is trained and scored; then (:func:`location_ask` of the next cycle) the
    population is sorted by fitness, ranks 1-10 stay, ranks 11-15 are children of the best 4 by
    crossover of the pairs (1,2), (1,3), (1,4), (2,3), (2,4), and ranks 16-20 are 5 fresh random
    individuals (the paper's text, "we simply re-generate 5 new models instead of performing
    mutation") or mutants of ranks 1-5 (Algorithm 1's Mutate), ``fresh="mutate"``. The survivors
    are scored again each cycle (the shared weights keep training). Ties keep the earlier rank.

Direction search
    At the chosen locations, a *direction* is, for every add-on edge, which channels of its input
    each add-on neuron reads: a ``[cin, neurons]`` 0/1 connection mask with density ``density``
    (0.1, the paper's sparsity) among the *eligible* channels, each neuron reading at least one.
    Eligible channels come from the DNP standard-deviation thresholds ("keeping neurons with high
    sensitivities is recommended ... the standard deviation thresholds are used"): a channel is
    eligible when its producing filter kept at least one kernel through DNP
    (:func:`eligible_channels`); channels of units DNP does not prune (1x1 merges, poolings,
    reductions) are all eligible. Each cycle samples ``K - 1`` fresh directions beside the best so
    far (re-scored with the current weights) and keeps the best: Algorithm 1's single-individual
    ``P_d`` made a (1 + (K-1)) search.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from fnnjax.checks import check_choice, check_int, check_number
from fnnjax.construct.nhn.genes import GeneSpace, mutate, random_genes, recombine

__all__ = [
    "DirectionConfig",
    "DirectionState",
    "LocationConfig",
    "LocationState",
    "direction_ask",
    "direction_init",
    "direction_tell",
    "eligible_channels",
    "location_ask",
    "location_init",
    "location_tell",
    "random_directions",
]

FRESH = ("random", "mutate")


@dataclasses.dataclass(frozen=True)
class LocationConfig:
    """Location search settings (defaults: the paper).

    Attributes:
        population: ``K`` (20).
        keep: the ranks that survive a cycle unchanged (10).
        pairs: crossover parents by rank, 0-based (the paper's (1,2), (1,3), (1,4), (2,3), (2,4)).
        fresh: how the last ``population - keep - len(pairs)`` ranks are refilled: ``"random"``
            new individuals (the paper's text) or ``"mutate"``d copies of the best ranks
            (Algorithm 1).
        none_prob: probability of gene -1 when generating (0.8).
        mutation_rate: per-gene redraw probability of ``"mutate"``.
    """

    population: int = 20
    keep: int = 10
    pairs: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3))
    fresh: str = "random"
    none_prob: float = 0.8
    mutation_rate: float = 0.1

    def __post_init__(self):
        object.__setattr__(self, "pairs", tuple(tuple(int(i) for i in p) for p in self.pairs))
        n_fresh = self.population - self.keep - len(self.pairs)
        if self.keep < 1 or n_fresh < 0:
            raise ValueError(f"population: {self.population} must hold keep ({self.keep} >= 1) + "
                             f"{len(self.pairs)} children + the fresh ones")  # fmt: skip
        if any(len(p) != 2 or not (0 <= min(p) and max(p) < self.keep) for p in self.pairs):
            raise ValueError(f"pairs: expected rank pairs among the {self.keep} kept, got {self.pairs}")
        check_choice("fresh", self.fresh, FRESH)
        if self.fresh == "mutate" and n_fresh > self.keep:
            raise ValueError(f"fresh='mutate': {n_fresh} mutants need as many kept ranks "
                             f"(keep={self.keep})")  # fmt: skip
        for name in ("none_prob", "mutation_rate"):
            check_number(name, getattr(self, name), at_least=0.0, at_most=1.0)

    @property
    def n_fresh(self) -> int:
        return self.population - self.keep - len(self.pairs)


@struct.dataclass
class LocationState:
    """Attributes: ``population`` ``[K, genes]`` int32 (this cycle's individuals), ``fitness``
    ``[K]`` (their scores once told; -inf before), ``best_genes`` / ``best_fitness`` (the best of
    the last told cycle), ``cycle`` (cycles told)."""

    population: jax.Array
    fitness: jax.Array
    best_genes: jax.Array
    best_fitness: jax.Array
    cycle: jax.Array


def location_init(key: jax.Array, space: GeneSpace, config: LocationConfig = LocationConfig()) -> LocationState:
    """A random first population (``GenerateLoc``)."""
    pop = random_genes(key, space, config.population, none_prob=config.none_prob)
    return LocationState(population=pop, fitness=jnp.full((config.population,), -jnp.inf),
                         best_genes=pop[0], best_fitness=jnp.asarray(-jnp.inf),
                         cycle=jnp.zeros((), jnp.int32))  # fmt: skip


@functools.partial(jax.jit, static_argnums=(2, 3))
def _next_population(key: jax.Array, state: LocationState, space: GeneSpace,
                     config: LocationConfig) -> jax.Array:  # fmt: skip
    ranked = state.population[jnp.argsort(-state.fitness, stable=True)]
    k_cross, k_fresh = jax.random.split(key)
    a = ranked[jnp.asarray([p[0] for p in config.pairs], jnp.int32)]
    b = ranked[jnp.asarray([p[1] for p in config.pairs], jnp.int32)]
    children = recombine(k_cross, a, b)
    if config.fresh == "random":
        fresh = random_genes(k_fresh, space, config.n_fresh, none_prob=config.none_prob)
    else:
        fresh = mutate(k_fresh, ranked[: config.n_fresh], space, rate=config.mutation_rate,
                       none_prob=config.none_prob)  # fmt: skip
    return jnp.concatenate([ranked[: config.keep], children, fresh]).astype(jnp.int32)


def location_ask(key: jax.Array, state: LocationState, space: GeneSpace,
                 config: LocationConfig = LocationConfig()) -> tuple[jax.Array, LocationState]:  # fmt: skip
    """This cycle's individuals: the first population, then the last one sorted and refilled."""
    if int(state.cycle) == 0:
        return state.population, state
    pop = _next_population(key, state, space, config)
    return pop, state.replace(population=pop, fitness=jnp.full_like(state.fitness, -jnp.inf))


def location_tell(population: jax.Array, fitness: jax.Array, state: LocationState) -> LocationState:
    """Records this cycle's fitness (higher is better: validation accuracy)."""
    fitness = jnp.asarray(fitness, jnp.float32)
    if fitness.shape != state.fitness.shape:
        raise ValueError(f"fitness: expected shape {state.fitness.shape}, got {fitness.shape}")
    if bool(jnp.any(jnp.isnan(fitness))):
        raise ValueError("fitness: NaN scores; the shared add-on weights diverged (lower the "
                         "learning rate)")  # fmt: skip
    best = jnp.argmax(fitness)  # the first of equals
    return state.replace(population=jnp.asarray(population, jnp.int32), fitness=fitness,
                         best_genes=population[best], best_fitness=fitness[best],
                         cycle=state.cycle + 1)  # fmt: skip


# ----------------------------------------------------------------------------------------------
# Directions
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DirectionConfig:
    """Direction search settings: ``population`` ``K`` (20) and the connection ``density``
    (0.1, the paper's sparsity)."""

    population: int = 20
    density: float = 0.1

    def __post_init__(self):
        check_int("population (the best and at least a new one)", self.population, 2)
        check_number("density", self.density, above=0.0, at_most=1.0)


@struct.dataclass
class DirectionState:
    """Attributes: ``population`` ``{edge: [K, cin, neurons]}`` float32 connection masks,
    ``fitness`` ``[K]``, ``best`` ``{edge: [cin, neurons]}``, ``best_fitness``, ``cycle``."""

    population: dict[str, jax.Array]
    fitness: jax.Array
    best: dict[str, jax.Array]
    best_fitness: jax.Array
    cycle: jax.Array


def random_directions(key: jax.Array, eligible: Mapping[str, Any], neurons: int, n: int, *,
                      density: float = 0.1) -> dict[str, jax.Array]:  # fmt: skip
    """``{edge: [n, cin, neurons]}`` float32 0/1 masks: each neuron reads each eligible channel
    with probability ``density``, and one random eligible channel when that picks none."""
    out = {}
    for e, (edge, ok) in enumerate(sorted(eligible.items())):
        ok = jnp.asarray(ok, bool)
        if not bool(ok.any()):
            raise ValueError(f"eligible[{edge!r}]: no eligible input channel")
        k_pick, k_one = jax.random.split(jax.random.fold_in(key, e))
        pick = jax.random.bernoulli(k_pick, density, (n, ok.shape[0], neurons)) & ok[None, :, None]
        # A neuron without input: one eligible channel, uniformly (Gumbel-max over the eligible).
        g = jax.random.gumbel(k_one, (n, neurons, ok.shape[0])) + jnp.where(ok, 0.0, -jnp.inf)
        one = jax.nn.one_hot(jnp.argmax(g, axis=-1), ok.shape[0], dtype=bool).transpose(0, 2, 1)
        empty = ~pick.any(axis=1, keepdims=True)
        out[edge] = jnp.where(empty, one, pick).astype(jnp.float32)
    return out


def direction_init(key: jax.Array, eligible: Mapping[str, Any], neurons: int,
                   config: DirectionConfig = DirectionConfig()) -> DirectionState:  # fmt: skip
    """``K`` random directions (``GenerateDir``)."""
    pop = random_directions(key, eligible, neurons, config.population, density=config.density)
    return DirectionState(population=pop, fitness=jnp.full((config.population,), -jnp.inf),
                          best={k: v[0] for k, v in pop.items()},
                          best_fitness=jnp.asarray(-jnp.inf), cycle=jnp.zeros((), jnp.int32))  # fmt: skip


def direction_ask(key: jax.Array, state: DirectionState, eligible: Mapping[str, Any], neurons: int,
                  config: DirectionConfig = DirectionConfig()) -> tuple[dict, DirectionState]:  # fmt: skip
    """This cycle's directions: the first population, then the best so far and ``K - 1`` new."""
    if int(state.cycle) == 0:
        return state.population, state
    new = random_directions(key, eligible, neurons, config.population - 1, density=config.density)
    pop = {k: jnp.concatenate([state.best[k][None], new[k]]) for k in new}
    return pop, state.replace(population=pop, fitness=jnp.full_like(state.fitness, -jnp.inf))


def direction_tell(population: Mapping[str, jax.Array], fitness: jax.Array,
                   state: DirectionState) -> DirectionState:  # fmt: skip
    """Keeps the best direction of this cycle (the previous best is re-scored in it)."""
    fitness = jnp.asarray(fitness, jnp.float32)
    if fitness.shape != state.fitness.shape:
        raise ValueError(f"fitness: expected shape {state.fitness.shape}, got {fitness.shape}")
    if bool(jnp.any(jnp.isnan(fitness))):
        raise ValueError("fitness: NaN scores; the shared add-on weights diverged")
    best = int(jnp.argmax(fitness))
    return state.replace(population=dict(population), fitness=fitness,
                         best={k: v[best] for k, v in population.items()},
                         best_fitness=fitness[best], cycle=state.cycle + 1)  # fmt: skip


def eligible_channels(spec: Any, variables: Mapping[str, Any],
                      edges: Mapping[str, tuple[int, int]]) -> dict[str, np.ndarray]:  # fmt: skip
    """``{edge: bool [cin]}``: the channels of each edge's input whose producing filter kept a
    kernel through DNP (module docstring). ``edges``: ``{edge path: (source flat index, cin)}``;
    ``spec`` / ``variables``: the pruned base network (its ``"masks"``). A source whose filters
    all lost every kernel has no eligible channel by this rule; there every channel is eligible
    (a direction must read something), as for sources DNP does not prune."""
    from fnnjax._trees import at_path  # noqa: PLC0415
    from fnnjax.arch.spec import Cell, Conv, branch_op_name, stage_starts  # noqa: PLC0415

    starts = stage_starts(spec)
    masks = variables.get("masks", {})

    def producer_columns(source: int) -> np.ndarray | None:
        if source < 0 or (source + 1 in starts and spec.stages[starts.index(source + 1)].reduce):
            return None  # the stem, or a segment input behind a factorized reduction
        i = max(k for k, s in enumerate(starts) if s <= source)
        j = source - starts[i]
        b, path = spec.stages[i].blocks[j], f"s{i}b{j}"
        if b.gated_merge is not None:
            return None  # a 1x1 merge DNP leaves whole
        if isinstance(b, Conv):
            units = [path]
        elif isinstance(b, Cell) and all(isinstance(br[-1], Conv) for br in b.branches):
            units = [f"{path}/{branch_op_name(k, len(br) - 1)}" for k, br in enumerate(b.branches)]
        else:
            return None
        cols = []
        for u in units:
            node = at_path(masks, f"{u}/kernel_mask")
            if node is None:
                return None
            cols.append(np.asarray(node).any(axis=0))
        return np.concatenate(cols)

    out = {}
    for edge, (source, cin) in edges.items():
        cols = producer_columns(source)
        if cols is not None and len(cols) != cin:
            raise ValueError(f"edges[{edge!r}]: {cin} input channels, but flat block {source} "
                             f"produces {len(cols)}")  # fmt: skip
        out[edge] = np.ones(cin, bool) if cols is None or not cols.any() else cols
    return out
