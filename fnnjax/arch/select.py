"""Selections: what a supernet switches on, and how to export one.

A selection is the ``"arch"`` collection of a spec's model: ``{path: {"choice": int32}}`` for
every :class:`~fnnjax.arch.spec.Choice` block (``path`` as in ``"s0b2"``) and
``{merge path: {"gates": float32 [n]}}`` for every block with gated skips (the merge module
``"s0b2_skip"``; ``gates[n]`` switches ``gated_skips[n]`` on with 1 and off with 0) and
``{edge path: {"gate": float32, "connections": float32 [cin, neurons]}}`` for every add-on edge
(module ``"s0b2_addon0"``). A population
is the same tree with a leading axis ``[P]`` on every leaf; :class:`fnnjax.train.Engine` evaluates
one with a single compile. :func:`materialize` turns a spec and one selection into a plain spec
that holds only what is selected, and :func:`materialize_variables` moves the selected weights
into it (the export path of every search; ``fnnjax train --spec`` then retrains the result).

A selected candidate of one op becomes that op as a stage block; a candidate of several ops
becomes a one-branch :class:`~fnnjax.arch.spec.Cell` (the ops in sequence). A block keeps the
gated skips whose gate is 1 (its merge stays, as ENAS keeps it with no skip on) and the add-on
edges whose gate is 1 (renumbered in order; the block's first convs lose the kernel rows of the
edges switched off); a stage's entry reduction keeps only the sources still read. The
materialized model's skip and edge gates are ones; an edge keeps its ``connections``, which are
arrays, not spec: they travel in the variables (a checkpoint's ``"arch"`` collection).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fnnjax.arch.shapes import block_shapes, entry_units, gated_source_shapes, infer_layers
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
from fnnjax.checks import check_number

__all__ = [
    "addon_blocks",
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


def addon_blocks(spec: Spec) -> dict[str, int]:
    """``{block path: number of add-on edges}`` of every block with add-on edges, in order."""
    return {path: len(b.addons) for path, _, b in iter_blocks(spec) if b.addons}


def _connection_shapes(spec: Spec) -> dict[str, tuple[int, int]]:
    """``{add-on module path: [cin_source, neurons]}`` (the shape of its ``connections``)."""
    return {u.path[: -len("/unit")]: (u.cin, u.cout) for u in infer_layers(spec)
            if "_addon" in u.path}  # fmt: skip


def selection_of(
    spec: Spec,
    choices: Mapping[str, int] | None = None,
    skips: Mapping[str, Sequence[int]] | None = None,
    addons: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, Any]:
    """The ``"arch"`` collection selecting ``choices[path]`` (default 0) in every choice block,
    switching on the gated skips ``skips[path]`` (0/1 per source, default all on) and the add-on
    edges ``addons[path]`` (0/1 per edge, default all on; their connections all on) of every
    block (``path``: the block's, e.g. ``"s1b2"``).

    Raises:
        ValueError: an unknown path, a candidate index out of range, or gates of the wrong length
            or not 0/1.
    """
    blocks, gated, edges = choice_blocks(spec), gated_blocks(spec), addon_blocks(spec)
    choices, skips, addons = dict(choices or {}), dict(skips or {}), dict(addons or {})
    _check_gate_args("addons", addons, edges, "add-on edges")
    _check_gate_args("skips", skips, gated, "gated skips")
    for path, k in choices.items():
        if path not in blocks:
            raise ValueError(f"choices: {path!r} is not a choice block; they are "
                             f"{', '.join(blocks) or 'none'}")  # fmt: skip
        if not 0 <= int(k) < blocks[path]:
            raise ValueError(f"choices[{path!r}]: expected 0..{blocks[path] - 1}, got {k}")
    out: dict[str, Any] = {
        path: {"choice": jnp.asarray(int(choices.get(path, 0)), jnp.int32)} for path in blocks
    }
    for path, n in gated.items():
        if n:
            out[_merge_path(path)] = {
                "gates": jnp.asarray(skips.get(path, np.ones(n)), jnp.float32).reshape(n)
            }
    shapes = _connection_shapes(spec)
    for path, n in edges.items():
        gates = np.asarray(addons.get(path, np.ones(n)), np.float32).reshape(n)
        for e in range(n):
            out[_addon_path(path, e)] = {
                "gate": jnp.asarray(gates[e]),
                "connections": jnp.ones(shapes[_addon_path(path, e)], jnp.float32),
            }
    return out


def _check_gate_args(arg: str, given: Mapping[str, Any], known: Mapping[str, int], what: str):
    """Checks ``selection_of``'s ``arg``: known block paths, 0/1 gates of the right length."""
    for path, gates in given.items():
        if path not in known:
            raise ValueError(f"{arg}: {path!r} has no {what}; blocks with them are "
                             f"{', '.join(known) or 'none'}")  # fmt: skip
        _check_gates(f"{arg}[{path!r}]", np.asarray(gates), known[path])


def _check_gates(what: str, gates: np.ndarray, n: int) -> None:
    if gates.shape != (n,):
        raise ValueError(f"{what}: expected {n} gates (one per gated source or edge), got shape "
                         f"{gates.shape}")  # fmt: skip
    if not np.all((gates == 0) | (gates == 1)):
        raise ValueError(f"{what}: expected gates of 0 or 1, got {gates.tolist()}")


def random_selections(
    key: jax.Array,
    spec: Spec,
    n: int,
    *,
    skip_prob: float = 0.5,
    addon_prob: float = 0.5,
    connection_prob: float = 1.0,
) -> dict[str, Any]:
    """A population of ``n`` random selections: uniform candidates (leaves ``[n]`` int32), each
    gated skip on with probability ``skip_prob`` (leaves ``[n, sources]`` float32), each add-on
    edge on with probability ``addon_prob`` (``gate`` ``[n]``) and each of its connections with
    probability ``connection_prob`` (``connections`` ``[n, cin, neurons]``; NHN's direction
    search keeps 0.1)."""
    for name, prob in (("skip_prob", skip_prob), ("addon_prob", addon_prob),
                       ("connection_prob", connection_prob)):  # fmt: skip
        check_number(name, prob, at_least=0.0, at_most=1.0)
    blocks, gated = choice_blocks(spec), {p: k for p, k in gated_blocks(spec).items() if k}
    shapes = _connection_shapes(spec)
    keys = iter(jax.random.split(key, len(blocks) + len(gated) + 2 * len(shapes) + 1))
    out: dict[str, Any] = {
        path: {"choice": jax.random.randint(next(keys), (n,), 0, size, jnp.int32)}
        for path, size in blocks.items()
    }
    for path, k in gated.items():
        on = jax.random.bernoulli(next(keys), skip_prob, (n, k))
        out[_merge_path(path)] = {"gates": on.astype(jnp.float32)}
    for path, shape in shapes.items():
        gate = jax.random.bernoulli(next(keys), addon_prob, (n,))
        connections = jax.random.bernoulli(next(keys), connection_prob, (n, *shape))
        out[path] = {"gate": gate.astype(jnp.float32),
                     "connections": connections.astype(jnp.float32)}  # fmt: skip
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


def _addon_path(path: str, e: int) -> str:
    return f"{path}_addon{e}"


def _addon_gates(selection: Mapping[str, Any], path: str, n: int) -> np.ndarray:
    """Which of block ``path``'s ``n`` add-on edges are on (all when the selection has none)."""
    on = np.ones(n, bool)
    for e in range(n):
        entry = selection.get(_addon_path(path, e))
        if entry is None or "gate" not in entry:
            continue
        gate = np.asarray(entry["gate"])
        what = f"selection[{_addon_path(path, e)!r}]['gate']"
        if gate.ndim:
            raise ValueError(f"{what}: expected one selection (a scalar), got shape {gate.shape}; "
                             "index a population first")  # fmt: skip
        if gate not in (0, 1):
            raise ValueError(f"{what}: expected 0 or 1, got {gate.item()}")
        on[e] = bool(gate)
    return on


_SKIP_FIELDS = tuple(f.name for f in dataclasses.fields(Block))


def _selected_block(b: Block, selection: Mapping[str, Any], path: str, n_cand: int) -> Block:
    if isinstance(b, Choice):
        ops = b.candidates[_chosen(selection, path, n_cand)]
        block = ops[0] if len(ops) == 1 else Cell(branches=(ops,))
        b = dataclasses.replace(block, **{name: getattr(b, name) for name in _SKIP_FIELDS})
    if b.gated_skips:
        on = _gates(selection, path, len(b.gated_skips))
        b = dataclasses.replace(b, gated_skips=tuple(s for s, k in zip(b.gated_skips, on, strict=True) if k))
    if b.addons:
        on = _addon_gates(selection, path, len(b.addons))
        b = dataclasses.replace(b, addons=tuple(a for a, k in zip(b.addons, on, strict=True) if k))
    return b


def materialize(spec: Spec, selection: Mapping[str, Any]) -> Spec:
    """``spec`` with every choice block replaced by its selected candidate and every gated skip
    and add-on edge that is switched off removed.

    Args:
        spec: a spec with choice blocks and/or gated skips.
        selection: one selection (the ``"arch"`` collection: scalar choices, ``[n]`` skip gates,
            scalar add-on gates); a block without gates in it keeps all its skips / edges.

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
    # Add-on edges: kept ones are renumbered; their entry units keep the rows of kept edges.
    new_blocks = {p: b for p, _, b in iter_blocks(new_spec)}
    renames: dict[str, str] = {}  # old add-on module -> new
    entry_rows: dict[str, tuple[list[str], np.ndarray]] = {}
    for path, b in by_path.items():
        if not b.addons:
            continue
        on = _addon_gates(selection, path, len(b.addons))
        kept = [e for e in range(len(b.addons)) if on[e]]
        renames.update({_addon_path(path, e): _addon_path(path, n) for n, e in enumerate(kept)})
        width = sum(a.neurons for a in b.addons)
        w0 = _input_width(spec, path) - width
        offsets = w0 + np.concatenate([[0], np.cumsum([a.neurons for a in b.addons])]).astype(int)
        keep = [np.arange(w0)] + [np.arange(offsets[e], offsets[e + 1]) for e in kept]
        entry_rows[path] = (entry_units(new_blocks[path], path), np.concatenate(keep))
    addon_modules = {_addon_path(p, e) for p, b in by_path.items() for e in range(len(b.addons))}
    out: dict[str, Any] = {}
    for collection, tree in variables.items():
        if collection == "arch":
            continue
        tree = {k: v for k, v in dict(tree).items() if k not in dropped}
        tree = {renames.get(k, k): v for k, v in tree.items()
                if k not in addon_modules or k in renames}  # fmt: skip
        for path, k in choices.items():
            _move_choice(tree, path, by_path[path].candidates[k], k)
        for merge, keep in rows.items():
            _slice_unit_inputs(tree, f"{merge}/unit", keep)
        for units, keep in entry_rows.values():
            for unit in units:
                _slice_unit_inputs(tree, unit, keep)
        out[collection] = tree
    arch = _materialized_arch(spec, new_spec, variables.get("arch", {}), selection, renames)
    if arch:
        out["arch"] = arch
    return out


def _materialized_arch(spec, new_spec, arch_in, selection, renames) -> dict[str, Any]:
    """The materialized model's ``"arch"`` collection: skip and edge gates ones, each kept edge's
    connections from the selection (else the supernet's variables, else all on)."""
    shapes = _connection_shapes(spec)
    out: dict[str, Any] = {}
    for path, n in gated_blocks(new_spec).items():
        if n:
            out[_merge_path(path)] = {"gates": jnp.ones((n,), jnp.float32)}
    for old, new in renames.items():
        connections = (selection.get(old) or {}).get("connections")
        if connections is None:
            connections = (arch_in.get(old) or {}).get("connections")
        if connections is None:
            connections = np.ones(shapes[old], np.float32)
        if np.shape(connections) != shapes[old]:
            raise ValueError(f"selection[{old!r}]['connections']: expected shape {shapes[old]} "
                             f"(one selection), got {np.shape(connections)}")  # fmt: skip
        out[new] = {"gate": jnp.ones((), jnp.float32),
                    "connections": jnp.asarray(connections, jnp.float32)}  # fmt: skip
    return out


def _input_width(spec: Spec, path: str) -> int:
    """Input channels of block ``path`` as its first unit sees them (add-ons included)."""
    b = next(b for p, _, b in iter_blocks(spec) if p == path)
    first = entry_units(b, path)[0]
    return next(u.cin for u in infer_layers(spec) if u.path == first)


def _slice_unit_inputs(tree: dict, unit: str, rows: np.ndarray) -> None:
    """Keeps input rows ``rows`` of conv unit ``unit``'s kernel (params) or kernel mask (masks)."""
    keys = unit.split("/")
    node = tree
    for k in keys:
        if not isinstance(node, Mapping) or k not in node:
            return
        node = node[k]
    new = dict(node)
    if "conv" in new:
        new["conv"] = {**new["conv"], "kernel": jnp.take(new["conv"]["kernel"], rows, axis=-2)}
    if "kernel_mask" in new:
        new["kernel_mask"] = jnp.take(new["kernel_mask"], rows, axis=-2)
    parents = [tree]
    for k in keys[:-1]:
        parents.append(parents[-1][k])
    for k, parent in zip(reversed(keys), reversed(parents), strict=True):
        new = {**parent, k: new}
    tree.clear()
    tree.update(new)

