"""Add-on locations as gene codes, and the add-on supernet they select from (NHN section 2.3).

Gene code (section 3, "Neuron hierarchy search")
    ``2L`` integers for a base network of ``L`` layers (its stage blocks; a stage is one of the
    paper's segments): genes ``0 .. L-1`` for 3x3 add-on neurons, ``L .. 2L-1`` for 5x5 ones
    (``kernels`` in general, one group of ``L`` per kernel). Gene ``j`` of a group names the
    input of the add-on neurons feeding layer ``j``, or is ``-1`` for none. The paper's value is
    "the input layer index"; here it is ``1 +`` the flat index of the input: ``0`` is the stem's
    output, ``s`` (the flat index of the segment's first layer) is the segment's input (its
    pooling layer, which the paper includes in the search space), ``s + 1 .. j`` the earlier
    layers ``s .. j - 1`` of the segment. So gene ``j`` lies in ``{-1} ∪ [start_j, j]``: an
    add-on never crosses a segment and always points forward (``a < b``), and ``-1`` never
    clashes with a layer (the IR's flat index ``-1`` is the stem, gene ``0``). One add-on
    location per layer and kernel size, the paper's restraint; ``(4!)^3 (4!)^3`` codes for 12
    layers in 3 segments of 4, as the paper counts.

Generation, crossover, mutation
    ``-1`` with probability ``none_prob`` (0.8), else uniform over the gene's valid inputs (the
    paper). Crossover is not specified; ours is uniform (each gene from either parent with
    probability 1/2), which keeps every gene valid because gene ranges are per position.
    Mutation (Algorithm 1's Mutate, an option; the paper's text regenerates instead) redraws each
    gene with probability ``rate`` from the generating distribution.

Supernet (:func:`addon_space`)
    The base spec with every possible location as an :class:`~fnnjax.arch.AddOn` edge (every
    kernel size, every valid input of every layer): the shared weights ``W_{l,d}`` of LDS. An
    individual is a selection (:func:`genes_to_selection`): the gate of each edge is 1 where the
    genes pick it; the edges' ``connections`` leaves carry the directions. Edges of a layer are
    ordered kernel-major, then by input.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fnnjax.arch.spec import AddOn, Spec, addon_name, stage_starts
from fnnjax.checks import check_int, check_number

__all__ = [
    "GeneSpace",
    "addon_space",
    "check_genes",
    "gene_locations",
    "gene_space",
    "genes_to_selection",
    "mutate",
    "population_arch",
    "random_genes",
    "recombine",
]


@dataclasses.dataclass(frozen=True)
class GeneSpace:
    """The valid gene values of a base network.

    Attributes:
        low: ``[L]`` the smallest valid input of each layer (``start_j``: its segment's input).
        kernels: the add-on kernel sizes, one gene group each.
        blocks: ``[L]`` each layer's block module path (``"s0b2"``).
    """

    low: tuple[int, ...]
    kernels: tuple[int, ...]
    blocks: tuple[str, ...]

    @property
    def layers(self) -> int:
        return len(self.low)

    @property
    def size(self) -> int:
        """Genes in a code: ``len(kernels) * L``."""
        return len(self.kernels) * self.layers

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """``(low, high)``, each ``[size]``: gene ``k * L + j`` lies in ``[low_j, j]`` or is -1."""
        low = np.tile(np.asarray(self.low), len(self.kernels))
        high = np.tile(np.arange(self.layers), len(self.kernels))
        return low, high

    def count(self, with_none: bool = True) -> int:
        """The number of distinct gene codes; ``with_none=False`` counts the codes whose every
        gene names an input, the paper's ``(4!)^3 (4!)^3`` for 12 layers in 3 segments of 4."""
        low, high = self.bounds()
        extra = 2 if with_none else 1
        return int(np.prod([h - lo + extra for lo, h in zip(low, high, strict=True)], dtype=object))


def gene_space(spec: Spec, kernels: Sequence[int] = (3, 5)) -> GeneSpace:
    """The gene space of ``spec``'s stage blocks (each stage a segment)."""
    kernels = tuple(int(k) for k in kernels)
    if not kernels or any(k not in (1, 3, 5, 7) for k in kernels) or len(set(kernels)) != len(kernels):
        raise ValueError(f"kernels: expected distinct sizes among 1, 3, 5, 7, got {kernels}")
    low, blocks = [], []
    for i, (st, start) in enumerate(zip(spec.stages, stage_starts(spec), strict=True)):
        for j in range(len(st.blocks)):
            low.append(start)
            blocks.append(f"s{i}b{j}")
    return GeneSpace(tuple(low), kernels, tuple(blocks))


def check_genes(genes: Any, space: GeneSpace) -> np.ndarray:
    """``genes`` as an int array ``[..., size]``, or ValueError naming the first invalid gene."""
    g = np.asarray(genes)
    if g.shape[-1:] != (space.size,) or not np.issubdtype(g.dtype, np.integer):
        raise ValueError(f"genes: expected integers of shape [..., {space.size}] "
                         f"({len(space.kernels)} x {space.layers} layers), got {g.dtype} {g.shape}")  # fmt: skip
    low, high = space.bounds()
    bad = (g != -1) & ((g < low) | (g > high))
    if bad.any():
        idx = np.argwhere(bad)[0]
        j = int(idx[-1])
        raise ValueError(f"genes[{', '.join(map(str, idx))}] = {int(g[tuple(idx)])}: gene {j} "
                         f"(layer {j % space.layers}, {space.kernels[j // space.layers]}x"
                         f"{space.kernels[j // space.layers]}) must be -1 or in "
                         f"[{low[j]}, {high[j]}] (its segment's input or an earlier layer of it)")  # fmt: skip
    return g.astype(np.int32)


def _draw(key: jax.Array, shape: tuple[int, ...], space: GeneSpace, none_prob: float) -> jax.Array:
    low, high = (jnp.asarray(b, jnp.int32) for b in space.bounds())
    k_none, k_val = jax.random.split(key)
    value = low + jnp.floor(jax.random.uniform(k_val, shape) * (high - low + 1)).astype(jnp.int32)
    value = jnp.minimum(value, high)  # uniform() < 1, but guard the float edge
    return jnp.where(jax.random.uniform(k_none, shape) < none_prob, -1, value)


def random_genes(key: jax.Array, space: GeneSpace, n: int, *, none_prob: float = 0.8) -> jax.Array:
    """``[n, size]`` int32 random gene codes (module docstring)."""
    check_number("none_prob", none_prob, at_least=0.0, at_most=1.0)
    return _draw(key, (n, space.size), space, none_prob)


def recombine(key: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
    """Uniform crossover: each gene from ``a`` or ``b`` with probability 1/2 (broadcasts)."""
    return jnp.where(jax.random.bernoulli(key, 0.5, jnp.broadcast_shapes(a.shape, b.shape)), a, b)


def mutate(key: jax.Array, genes: jax.Array, space: GeneSpace, *, rate: float = 0.1,
           none_prob: float = 0.8) -> jax.Array:  # fmt: skip
    """Each gene redrawn from the generating distribution with probability ``rate``."""
    k_which, k_new = jax.random.split(key)
    fresh = _draw(k_new, genes.shape, space, none_prob)
    return jnp.where(jax.random.bernoulli(k_which, rate, genes.shape), fresh, genes)


def addon_space(spec: Spec, neurons: int, kernels: Sequence[int] = (3, 5)) -> Spec:
    """``spec`` with every possible add-on location as an edge (module docstring), each of
    ``neurons`` units. ``spec``'s blocks must have no add-on edges yet."""
    space = gene_space(spec, kernels)
    check_int("neurons", neurons)
    stages, g = [], 0
    for st in spec.stages:
        blocks = []
        for b in st.blocks:
            if b.addons:
                raise ValueError(f"spec: {space.blocks[g]} already has add-on edges; give the "
                                 "base network without them")  # fmt: skip
            edges = tuple(AddOn(source=s - 1, neurons=neurons, kernel=k)
                          for k in space.kernels for s in range(space.low[g], g + 1))  # fmt: skip
            blocks.append(dataclasses.replace(b, addons=edges))
            g += 1
        stages.append(dataclasses.replace(st, blocks=tuple(blocks)))
    return spec.replace(stages=tuple(stages), name=f"{spec.name}+addons" if spec.name else "addons")


def _edge_paths(space: GeneSpace) -> list[list[list[str]]]:
    """``[layer][kernel group][input - low]`` -> the edge's module path in the supernet."""
    out = []
    for j, block in enumerate(space.blocks):
        i, jj = (int(t) for t in block[1:].split("b"))
        n = j - space.low[j] + 1
        out.append([[addon_name(i, jj, k * n + s) for s in range(n)]
                    for k in range(len(space.kernels))])  # fmt: skip
    return out


def genes_to_selection(genes: jax.Array, space: GeneSpace) -> dict[str, jax.Array]:
    """``{edge path: gate}`` (float32 scalars, or ``[P]`` for ``genes [P, size]``): 1 on the edges
    the genes pick. Pure ``jnp``; merge it into the supernet's ``"arch"`` collection."""
    genes = jnp.asarray(genes)
    out = {}
    for j, groups in enumerate(_edge_paths(space)):
        for k, paths in enumerate(groups):
            gene = genes[..., k * space.layers + j]
            for s, path in enumerate(paths):
                out[path] = (gene == space.low[j] + s).astype(jnp.float32)
    return out


def gene_locations(genes: Any, space: GeneSpace) -> list[dict[str, Any]]:
    """The locations one gene code picks: ``[{"source", "target", "kernel", "edge"}]``, with
    ``source`` the input's flat index (``start - 1``: the segment's input, -1 the stem) and
    ``target`` the layer's."""
    g = check_genes(genes, space)
    if g.ndim != 1:
        raise ValueError(f"genes: expected one code [{space.size}], got shape {g.shape}")
    paths = _edge_paths(space)
    out = []
    for k, kernel in enumerate(space.kernels):
        for j in range(space.layers):
            v = int(g[k * space.layers + j])
            if v >= 0:
                out.append({"source": v - 1, "target": j, "kernel": kernel,
                            "edge": paths[j][k][v - space.low[j]]})  # fmt: skip
    return out


def population_arch(arch: Mapping[str, Any], size: int,
                    updates: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, jax.Array]]:  # fmt: skip
    """A population of ``size`` selections: every leaf of ``arch`` (a model's ``"arch"``
    collection) repeated on a leading axis, then ``updates`` (``{module: {leaf: [size, ...]}}``,
    e.g. the gates of :func:`genes_to_selection`) put in."""
    out = {path: {name: jnp.broadcast_to(jnp.asarray(v), (size, *jnp.shape(v)))
                  for name, v in leaves.items()} for path, leaves in arch.items()}  # fmt: skip
    for path, leaves in updates.items():
        if path not in out:
            raise ValueError(f"arch: the supernet has no module {path!r}")
        for name, v in leaves.items():
            want = (size, *jnp.shape(arch[path][name]))
            if jnp.shape(v) != want:
                raise ValueError(f"updates[{path!r}][{name!r}]: expected shape {want}, "
                                 f"got {jnp.shape(v)}")  # fmt: skip
            out[path][name] = jnp.asarray(v, jnp.asarray(arch[path][name]).dtype)
    return out
