"""Selections: which candidate every choice block of a supernet uses, and how to export one.

A selection is the ``"arch"`` collection of a spec's model: ``{path: {"choice": int32}}`` for
every :class:`~fnnjax.arch.spec.Choice` block (``path`` as in ``"s0b2"``). A population is the
same tree with a leading axis ``[P]`` on every leaf; :class:`fnnjax.train.Engine` evaluates one
with a single compile. :func:`materialize` turns a spec and one selection into a plain spec that
holds only what is selected, and :func:`materialize_variables` moves the selected weights into it
(the export path of every search; ``fnnjax train --spec`` then retrains the result).

A selected candidate of one op becomes that op as a stage block; a candidate of several ops
becomes a one-branch :class:`~fnnjax.arch.spec.Cell` (the ops in sequence).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fnnjax.arch.spec import (
    Block,
    Cell,
    Choice,
    Spec,
    branch_op_name,
    choice_op_name,
    iter_blocks,
)

__all__ = [
    "choice_blocks",
    "materialize",
    "materialize_variables",
    "random_selections",
    "selection_of",
]


def choice_blocks(spec: Spec) -> dict[str, int]:
    """``{module path: number of candidates}`` of every choice block, in order."""
    return {path: len(b.candidates) for path, _, b in iter_blocks(spec) if isinstance(b, Choice)}


def selection_of(spec: Spec, choices: Mapping[str, int]) -> dict[str, Any]:
    """The ``"arch"`` collection selecting ``choices[path]`` (default 0) in every choice block.

    Raises:
        ValueError: an unknown path or a candidate index out of range.
    """
    blocks = choice_blocks(spec)
    for path, k in choices.items():
        if path not in blocks:
            raise ValueError(f"choices: {path!r} is not a choice block; they are "
                             f"{', '.join(blocks) or 'none'}")  # fmt: skip
        if not 0 <= int(k) < blocks[path]:
            raise ValueError(f"choices[{path!r}]: expected 0..{blocks[path] - 1}, got {k}")
    return {path: {"choice": jnp.asarray(int(choices.get(path, 0)), jnp.int32)} for path in blocks}


def random_selections(key: jax.Array, spec: Spec, n: int) -> dict[str, Any]:
    """A population of ``n`` uniformly random selections (leaves ``[n]`` int32)."""
    blocks = choice_blocks(spec)
    keys = jax.random.split(key, max(len(blocks), 1))
    return {path: {"choice": jax.random.randint(k, (n,), 0, size, jnp.int32)}
            for k, (path, size) in zip(keys, blocks.items(), strict=False)}  # fmt: skip


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


def _selected_block(b: Choice, k: int) -> Block:
    ops = b.candidates[k]
    block = ops[0] if len(ops) == 1 else Cell(branches=(ops,))
    return dataclasses.replace(block, skips=b.skips, skip_merge=b.skip_merge)


def materialize(spec: Spec, selection: Mapping[str, Any]) -> Spec:
    """``spec`` with every choice block replaced by its selected candidate.

    Args:
        spec: a spec with choice blocks.
        selection: one selection (the ``"arch"`` collection, scalar leaves).

    Raises:
        ValueError: a missing choice, an index out of range, or a population instead of one.
    """
    blocks = choice_blocks(spec)
    stem = tuple(
        _selected_block(b, _chosen(selection, path, blocks[path])) if isinstance(b, Choice) else b
        for (path, _, b) in list(iter_blocks(spec))[: len(spec.stem)]
    )  # fmt: skip
    stages = []
    flat = list(iter_blocks(spec))[len(spec.stem) :]
    it = iter(flat)
    for st in spec.stages:
        new = []
        for _ in st.blocks:
            path, _, b = next(it)
            new.append(_selected_block(b, _chosen(selection, path, blocks[path]))
                       if isinstance(b, Choice) else b)  # fmt: skip
        stages.append(dataclasses.replace(st, blocks=tuple(new)))
    return dataclasses.replace(spec, stem=stem, stages=tuple(stages))


def materialize_variables(
    spec: Spec, variables: Mapping[str, Any], selection: Mapping[str, Any]
) -> dict[str, Any]:
    """The variables of :func:`materialize` ``(spec, selection)`` from the supernet's.

    Every collection (params, batch statistics, masks) moves with its unit; the ``"arch"``
    collection is dropped. The result applied to the materialized spec's model gives the
    supernet's outputs for that selection.
    """
    blocks = choice_blocks(spec)
    moves: dict[str, dict[str, str]] = {}  # choice path -> {new sub-name: old sub-name}
    for path, size in blocks.items():
        b = next(b for p, _, b in iter_blocks(spec) if p == path)
        k = _chosen(selection, path, size)
        ops = b.candidates[k]
        if len(ops) == 1:
            moves[path] = {"": choice_op_name(k, 0)}
        else:
            moves[path] = {branch_op_name(0, m): choice_op_name(k, m) for m in range(len(ops))}
    out = {}
    for collection, tree in variables.items():
        if collection == "arch":
            continue
        tree = dict(tree)
        for path, mapping in moves.items():
            if path not in tree:
                continue
            old = tree.pop(path)
            if "" in mapping:
                if mapping[""] in old:
                    tree[path] = old[mapping[""]]
            else:
                moved = {new: old[name] for new, name in mapping.items() if name in old}
                if moved:
                    tree[path] = moved
        out[collection] = tree
    return out
