"""Selections: what a supernet switches on, and how to export one.

A selection is the ``"arch"`` collection of a spec's model: ``{path: {"choice": int32}}`` for
every :class:`~fnnjax.arch.spec.Choice` block (``path`` as in ``"s0b2"``) and
``{merge path: {"gates": float32 [n]}}`` for every block with gated skips (the merge module
``"s0b2_skip"``; ``gates[n]`` switches ``gated_skips[n]`` on with 1 and off with 0). A population
is the same tree with a leading axis ``[P]`` on every leaf; :class:`fnnjax.train.Engine` evaluates
one with a single compile. :func:`materialize` turns a spec and one selection into a plain spec
that holds only what is selected, and :func:`materialize_variables` moves the selected weights
into it (the export path of every search; ``fnnjax train --spec`` then retrains the result).

A selected candidate of one op becomes that op as a stage block; a candidate of several ops
becomes a one-branch :class:`~fnnjax.arch.spec.Cell` (the ops in sequence). A block keeps the
gated skips whose gate is 1 (its merge stays, as ENAS keeps it with no skip on); a stage's entry
reduction keeps only the sources still read. The materialized model still has ``gates`` leaves,
all ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fnnjax.arch.shapes import block_shapes, gated_source_shapes
from fnnjax.arch.spec import (
    Block,
    Cell,
    Choice,
    Spec,
    branch_op_name,
    choice_op_name,
    iter_blocks,
    reduce_name,
    reduced_sources,
)

__all__ = [
    "choice_blocks",
    "gated_blocks",
    "materialize",
    "materialize_variables",
    "random_selections",
    "selection_of",
]


def choice_blocks(spec: Spec) -> dict[str, int]:
    """``{module path: number of candidates}`` of every choice block, in order."""
    return {path: len(b.candidates) for path, _, b in iter_blocks(spec) if isinstance(b, Choice)}


def gated_blocks(spec: Spec) -> dict[str, int]:
    """``{block path: number of gated sources}`` of every block with a gated merge, in order."""
    return {path: len(b.gated_skips) for path, _, b in iter_blocks(spec)
            if b.gated_merge is not None}  # fmt: skip


def _merge_path(block_path: str) -> str:
    return f"{block_path}_skip"


def selection_of(
    spec: Spec,
    choices: Mapping[str, int] | None = None,
    skips: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, Any]:
    """The ``"arch"`` collection selecting ``choices[path]`` (default 0) in every choice block and
    switching on the gated skips ``skips[path]`` (0/1 per source, default all on) of every block
    with gated skips (``path``: the block's, e.g. ``"s1b2"``).

    Raises:
        ValueError: an unknown path, a candidate index out of range, or gates of the wrong length
            or not 0/1.
    """
    blocks, gated = choice_blocks(spec), gated_blocks(spec)
    choices, skips = dict(choices or {}), dict(skips or {})
    for path, k in choices.items():
        if path not in blocks:
            raise ValueError(f"choices: {path!r} is not a choice block; they are "
                             f"{', '.join(blocks) or 'none'}")  # fmt: skip
        if not 0 <= int(k) < blocks[path]:
            raise ValueError(f"choices[{path!r}]: expected 0..{blocks[path] - 1}, got {k}")
    out: dict[str, Any] = {
        path: {"choice": jnp.asarray(int(choices.get(path, 0)), jnp.int32)} for path in blocks
    }
    for path, gates in skips.items():
        if path not in gated:
            raise ValueError(f"skips: {path!r} has no gated skips; blocks with them are "
                             f"{', '.join(gated) or 'none'}")  # fmt: skip
        _check_gates(f"skips[{path!r}]", np.asarray(gates), gated[path])
    for path, n in gated.items():
        if n:
            out[_merge_path(path)] = {
                "gates": jnp.asarray(skips.get(path, np.ones(n)), jnp.float32).reshape(n)
            }
    return out


def _check_gates(what: str, gates: np.ndarray, n: int) -> None:
    if gates.shape != (n,):
        raise ValueError(f"{what}: expected {n} gates (one per gated source), got shape "
                         f"{gates.shape}")  # fmt: skip
    if not np.all((gates == 0) | (gates == 1)):
        raise ValueError(f"{what}: expected gates of 0 or 1, got {gates.tolist()}")


def random_selections(
    key: jax.Array, spec: Spec, n: int, *, skip_prob: float = 0.5
) -> dict[str, Any]:
    """A population of ``n`` random selections: uniform candidates (leaves ``[n]`` int32), each
    gated skip on with probability ``skip_prob`` (leaves ``[n, sources]`` float32)."""
    if not 0.0 <= skip_prob <= 1.0:
        raise ValueError(f"skip_prob: expected a probability in [0, 1], got {skip_prob}")
    blocks, gated = choice_blocks(spec), {p: k for p, k in gated_blocks(spec).items() if k}
    keys = iter(jax.random.split(key, max(len(blocks) + len(gated), 1)))
    out: dict[str, Any] = {
        path: {"choice": jax.random.randint(next(keys), (n,), 0, size, jnp.int32)}
        for path, size in blocks.items()
    }
    for path, k in gated.items():
        on = jax.random.bernoulli(next(keys), skip_prob, (n, k))
        out[_merge_path(path)] = {"gates": on.astype(jnp.float32)}
    return out


def _chosen(selection: Mapping[str, Any], path: str, size: int) -> int:
    try:
        value = np.asarray(selection[path]["choice"])
    except (KeyError, TypeError):
        raise ValueError(f"selection: no choice for block {path!r}") from None
    if value.ndim:
        raise ValueError(f"selection[{path!r}]: expected one selection (a scalar), got shape "
                         f"{value.shape}; index a population first")  # fmt: skip
    k = int(value)
    if not 0 <= k < size:
        raise ValueError(f"selection[{path!r}]: expected 0..{size - 1}, got {k}")
    return k


def _gates(selection: Mapping[str, Any], path: str, n: int) -> np.ndarray:
    """The 0/1 gates of block ``path``'s gated skips in ``selection`` (all on when absent)."""
    entry = selection.get(_merge_path(path)) if n else None
    if entry is None:
        return np.ones(n, bool)
    try:
        gates = np.asarray(entry["gates"])
    except (KeyError, TypeError):
        raise ValueError(f"selection[{_merge_path(path)!r}]: expected {{'gates': [...]}}") from None
    if gates.ndim > 1:
        raise ValueError(f"selection[{_merge_path(path)!r}]: expected one selection, got gates "
                         f"of shape {gates.shape}; index a population first")  # fmt: skip
    _check_gates(f"selection[{_merge_path(path)!r}]", gates, n)
    return gates.astype(bool)


def _selected_block(b: Block, selection: Mapping[str, Any], path: str, n_cand: int) -> Block:
    if isinstance(b, Choice):
        ops = b.candidates[_chosen(selection, path, n_cand)]
        block = ops[0] if len(ops) == 1 else Cell(branches=(ops,))
        block = dataclasses.replace(block, skips=b.skips, skip_merge=b.skip_merge,
                                    gated_skips=b.gated_skips, gated_merge=b.gated_merge)  # fmt: skip
        b = block
    if b.gated_skips:
        on = _gates(selection, path, len(b.gated_skips))
        b = dataclasses.replace(b, gated_skips=tuple(s for s, k in zip(b.gated_skips, on) if k))
    return b


def materialize(spec: Spec, selection: Mapping[str, Any]) -> Spec:
    """``spec`` with every choice block replaced by its selected candidate and every gated skip
    that is switched off removed.

    Args:
        spec: a spec with choice blocks and/or gated skips.
        selection: one selection (the ``"arch"`` collection, scalar choices and ``[n]`` gates);
            a block without gates in it keeps all its gated skips.

    Raises:
        ValueError: a missing choice, an index out of range, gates not 0/1, or a population
            instead of one selection.
    """
    blocks = choice_blocks(spec)
    it = iter(list(iter_blocks(spec)))

    def select(_: Block) -> Block:
        path, _, b = next(it)
        return _selected_block(b, selection, path, blocks.get(path, 0))

    stem = tuple(select(b) for b in spec.stem)
    stages = tuple(dataclasses.replace(st, blocks=tuple(select(b) for b in st.blocks))
                   for st in spec.stages)  # fmt: skip
    return dataclasses.replace(spec, stem=stem, stages=stages)


def _move_choice(tree: dict, path: str, ops: Sequence[Block], k: int) -> None:
    """Renames the selected candidate's units of choice block ``path`` to the plain block's."""
    if path not in tree:
        return
    old = tree.pop(path)
    if len(ops) == 1:
        if choice_op_name(k, 0) in old:
            tree[path] = old[choice_op_name(k, 0)]
        return
    moved = {branch_op_name(0, m): old[choice_op_name(k, m)]
             for m in range(len(ops)) if choice_op_name(k, m) in old}  # fmt: skip
    if moved:
        tree[path] = moved


def _slice_merge_inputs(tree: dict, merge: str, rows: np.ndarray) -> None:
    """Keeps input rows ``rows`` of a concat_conv merge's 1x1 kernel (and kernel mask)."""
    unit = tree.get(merge, {}).get("unit")
    if unit is None:
        return
    unit = dict(unit)
    if "conv" in unit:
        conv = dict(unit["conv"])
        conv["kernel"] = jnp.take(conv["kernel"], rows, axis=-2)
        unit["conv"] = conv
    if "kernel_mask" in unit:
        unit["kernel_mask"] = jnp.take(unit["kernel_mask"], rows, axis=-2)
    tree[merge] = {**tree[merge], "unit": unit}


def materialize_variables(
    spec: Spec, variables: Mapping[str, Any], selection: Mapping[str, Any]
) -> dict[str, Any]:
    """The variables of :func:`materialize` ``(spec, selection)`` from the supernet's.

    Every collection (params, batch statistics, masks) moves with its unit; a ``concat_conv``
    merge keeps the 1x1 kernel rows of the sources still on (and of the block's output); the
    reductions of sources no longer read are dropped; in ``"arch"`` the choices are dropped and
    the kept gates are ones. The result applied to the materialized spec's model gives the
    supernet's outputs for that selection.
    """
    new_spec = materialize(spec, selection)
    blocks = choice_blocks(spec)
    choices = {path: _chosen(selection, path, size) for path, size in blocks.items()}
    by_path = {p: b for p, _, b in iter_blocks(spec)}
    sources = gated_source_shapes(spec)
    rows: dict[str, np.ndarray] = {}  # merge path -> kept kernel rows (concat_conv)
    for path, b in by_path.items():
        if b.gated_merge == "concat_conv":
            on = _gates(selection, path, len(b.gated_skips))
            widths = [shape[2] for shape in sources[_merge_path(path)]]
            offsets = np.concatenate([[0], np.cumsum(widths)]).astype(int)
            keep = [np.arange(offsets[n], offsets[n + 1]) for n in range(len(widths)) if on[n]]
            keep.append(np.arange(offsets[-1], offsets[-1] + block_shapes(spec)[path][2]))
            rows[_merge_path(path)] = np.concatenate(keep)
    dropped = {reduce_name(i, g) for i in range(len(spec.stages))
               for g in set(reduced_sources(spec, i)) - set(reduced_sources(new_spec, i))}  # fmt: skip
    out = {}
    for collection, tree in variables.items():
        tree = {k: v for k, v in dict(tree).items() if k not in dropped}
        if collection == "arch":
            merges = {_merge_path(p) for p in gated_blocks(spec)}
            tree = {k: v for k, v in tree.items() if k not in blocks and k not in merges}
            for path, n in gated_blocks(new_spec).items():
                if n:
                    tree[_merge_path(path)] = {"gates": jnp.ones((n,), jnp.float32)}
            if tree:
                out[collection] = tree
            continue
        for path, k in choices.items():
            _move_choice(tree, path, by_path[path].candidates[k], k)
        for merge, keep in rows.items():
            _slice_merge_inputs(tree, merge, keep)
        out[collection] = tree
    return out

