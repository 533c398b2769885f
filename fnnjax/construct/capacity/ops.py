"""Capacity operations on residual networks: spec transforms plus the surgery that carries the
variables (every collection) over, each returning a :class:`fnnjax.arch.grow.Grown`
``(spec, variables, kept)``; move the optimizer state with :func:`fnnjax.arch.transplant_opt_state`
and the same ``kept`` (new entries start at zero, kept ones keep their moments).

Units are named by their unit path (:func:`fnnjax.arch.infer_layers`): a Conv / Dense / SepConv
stage block ``"s{i}b{j}"`` (a separable block's ``"s{i}b{j}/pw"``) or op ``m`` of a residual
body, ``"s{i}b{j}/body{m}"``.

* :func:`widen` (function-preserving): ``method="zero"`` gives the new units fresh incoming
  weights and *zero outgoing* weights (every consumer's weights on a new channel are zero), so
  the network computes exactly what it did, in training mode too; ``"net2wider"`` splits
  existing units (Chen et al.'s Net2Wider, :func:`fnnjax.arch.grow.split_units`: copies of
  random units, every consumer's weights from a copied unit shared among its copies), on any
  resizable unit, a residual body's hidden units included.
* :func:`narrow` deletes units (the kept ones keep their weights; consumers lose the deleted
  channels' rows): the network computes what the old one computed with the deleted units'
  outgoing weights set to zero.
* :func:`remove_block` deletes a residual block; the network computes what the old one computed
  with that block's body output set to zero (exact when its last unit already outputs zero).
* Insertion is :func:`fnnjax.arch.insert_residual` (the identity at insertion).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from fnnjax.arch.grow import Grown, fresh_variables, input_channels, split_units
from fnnjax.arch.shapes import block_shapes, residual_projects
from fnnjax.arch.spec import Conv, Residual, SepConv, Spec, Stage
from fnnjax.arch.surgery import transplant_params
from fnnjax.checks import check_choice, is_int

__all__ = ["narrow", "remove_block", "unit_filters", "widen"]

_UNIT = re.compile(r"^s(\d+)b(\d+)(?:/(pw|body(\d+)))?$")


def _locate(spec: Spec, unit: str) -> tuple[int, int, int | None]:
    """``(stage, block, body op or None)`` of a resizable unit path."""
    m = _UNIT.match(unit)
    if m is None:
        raise ValueError(f"unit: expected 's{{i}}b{{j}}', 's{{i}}b{{j}}/pw' or "
                         f"'s{{i}}b{{j}}/body{{m}}', got {unit!r}")  # fmt: skip
    i, j = int(m[1]), int(m[2])
    if i >= len(spec.stages) or j >= len(spec.stages[i].blocks):
        raise ValueError(f"unit {unit!r}: the spec has no block s{i}b{j}")
    b = spec.stages[i].blocks[j]
    body = None if m[4] is None else int(m[4])
    if body is None:
        if not isinstance(b, Conv | SepConv) or (m[3] == "pw") != isinstance(b, SepConv):
            raise ValueError(f"unit {unit!r}: expected a Conv / Dense block ('s{i}b{j}') or a "
                             f"separable block's 's{i}b{j}/pw', got a {type(b).__name__}")  # fmt: skip
        if isinstance(b, Conv) and b.groups > 1:
            raise ValueError(f"unit {unit!r}: a grouped conv cannot be resized")
    elif not isinstance(b, Residual) or body >= len(b.body) or not isinstance(b.body[body], Conv):
        raise ValueError(f"unit {unit!r}: expected a Conv / Dense op of a residual body")
    return i, j, body


def unit_filters(spec: Spec, unit: str) -> int:
    """The number of units (filters) of a resizable unit."""
    i, j, body = _locate(spec, unit)
    b = spec.stages[i].blocks[j]
    return b.filters if body is None else b.body[body].filters


def _with_filters(spec: Spec, unit: str, n: int) -> Spec:
    i, j, body = _locate(spec, unit)
    b = spec.stages[i].blocks[j]
    if body is None:
        new = dataclasses.replace(b, filters=n)
    else:
        ops = list(b.body)
        ops[body] = dataclasses.replace(ops[body], filters=n)
        new = dataclasses.replace(b, body=tuple(ops))
    blocks = list(spec.stages[i].blocks)
    blocks[j] = new
    stages = list(spec.stages)
    stages[i] = dataclasses.replace(spec.stages[i], blocks=tuple(blocks))
    try:
        new_spec = dataclasses.replace(spec, stages=tuple(stages))
    except ValueError as error:
        raise ValueError(f"unit {unit!r}: cannot resize it alone, its output is added to another "
                         f"of the old width ({error})") from None  # fmt: skip
    before, after = _projections(spec), _projections(new_spec)
    if before != after:
        changed = sorted(k for k in before if before[k] != after.get(k))
        raise ValueError(f"unit {unit!r}: cannot resize it alone, its output is added to another "
                         f"of the old width (residual {changed[0]}'s identity shortcut would "
                         "become a projection)")  # fmt: skip
    return new_spec


def _projections(spec: Spec) -> dict[str, bool]:
    """Whether each residual block's shortcut is a projection."""
    shapes = block_shapes(spec)
    return {f"s{i}b{j}": residual_projects(b, input_channels(spec, i, j), shapes[f"s{i}b{j}"])
            for i, st in enumerate(spec.stages) for j, b in enumerate(st.blocks)
            if isinstance(b, Residual)}  # fmt: skip


def _moved(spec: Spec, variables: Mapping[str, Any], new: Spec, kept: dict[str, list[int]],
           key: jax.Array | None, *, deletion: bool = False) -> Grown:  # fmt: skip
    if deletion:  # every variable of ``new`` comes from ``variables``: shapes suffice (no compile)
        from fnnjax.arch import build_model, init_variables  # noqa: PLC0415

        model = build_model(new, use_masks="masks" in variables)
        shapes = init_variables(model, jax.random.key(0), new.input_shape, abstract=True)
        fresh = {k: jax.tree_util.tree_map(lambda a: np.zeros(a.shape, a.dtype), v)
                 for k, v in shapes.items() if k in variables or k == "params"}  # fmt: skip
    else:
        fresh = fresh_variables(new, variables, key)
    return Grown(new, transplant_params(spec, variables, new, fresh, kept=kept), kept)


def widen(
    spec: Spec, variables: Mapping[str, Any], unit: str, width: int, *, method: str = "zero",
    key: jax.Array | None = None,
) -> Grown:  # fmt: skip
    """Widens ``unit`` to ``width`` units without changing the network's function (module
    docstring). ``key``: the new units' incoming weights (``"zero"``) or which units are split
    (``"net2wider"``)."""
    n = unit_filters(spec, unit)
    if not is_int(width) or width <= n:
        raise ValueError(f"width: expected an int above the current {n} units of {unit!r}, got "
                         f"{width!r}")  # fmt: skip
    check_choice("method", method, ("zero", "net2wider"))
    width = int(width)
    new = _with_filters(spec, unit, width)  # refuses a width an identity shortcut cannot add
    if method == "net2wider":
        return split_units(spec, variables, new, unit, n, width, key=key)
    return _moved(spec, variables, new, {unit: list(range(n)) + [-1] * (width - n)}, key)


def narrow(spec: Spec, variables: Mapping[str, Any], unit: str, keep: Sequence[int]) -> Grown:
    """Keeps only the units ``keep`` (indices, in the order they will have) of ``unit``."""
    n = unit_filters(spec, unit)
    keep = [int(k) for k in keep]
    if not keep or len(set(keep)) != len(keep) or not all(0 <= k < n for k in keep):
        raise ValueError(f"keep: expected distinct unit indices in [0, {n}), at least one, got "
                         f"{keep!r}")  # fmt: skip
    return _moved(spec, variables, _with_filters(spec, unit, len(keep)), {unit: keep}, None,
                  deletion=True)  # fmt: skip


def remove_block(spec: Spec, variables: Mapping[str, Any], stage: int, position: int) -> Grown:
    """Deletes the residual block ``position`` of ``stage`` (module docstring). Later blocks'
    static skip indices shift down by one.

    Raises:
        ValueError: not a residual block, one whose shortcut is a projection (its removal changes
            the width or size), the stage's only block, or a block another one skips from.
    """
    if not 0 <= stage < len(spec.stages) or not 0 <= position < len(spec.stages[stage].blocks):
        raise ValueError(f"stage, position: no block s{stage}b{position} in the spec")
    blocks = list(spec.stages[stage].blocks)
    b = blocks[position]
    if not isinstance(b, Residual):
        raise ValueError(f"s{stage}b{position}: only residual blocks can be removed (their removal "
                         f"leaves the identity), got a {type(b).__name__}")  # fmt: skip
    if residual_projects(b, input_channels(spec, stage, position),
                         block_shapes(spec)[f"s{stage}b{position}"]):  # fmt: skip
        raise ValueError(f"s{stage}b{position}: its shortcut is a projection (it changes the width "
                         "or size); only identity-shortcut blocks can be removed")  # fmt: skip
    if len(blocks) == 1:
        raise ValueError(f"s{stage}b{position}: the stage's only block cannot be removed")
    if any(position in (blk.skips or ()) for blk in blocks):
        raise ValueError(f"s{stage}b{position}: another block skips from it")
    new = _removed_spec(spec, stage, position)
    kept = {f"s{stage}": [k for k in range(len(blocks)) if k != position]}
    return _moved(spec, variables, new, kept, None, deletion=True)


def _removed_spec(spec: Spec, stage: int, position: int) -> Spec:
    """``spec`` without block ``position`` of ``stage`` (later skip indices shifted down)."""
    blocks = list(spec.stages[stage].blocks)
    shifted = [dataclasses.replace(blk, skips=tuple(s - 1 if s > position else s for s in blk.skips))
               if blk.skips else blk for blk in blocks[position + 1:]]  # fmt: skip
    new_blocks = blocks[:position] + shifted
    stages = list(spec.stages)
    stages[stage] = Stage(blocks=tuple(new_blocks), tied=spec.stages[stage].tied,
                          name=spec.stages[stage].name, reduce=spec.stages[stage].reduce)  # fmt: skip
    try:
        return dataclasses.replace(spec, stages=tuple(stages))
    except ValueError as error:
        raise ValueError(f"s{stage}b{position}: removing it changes the shapes ({error})") from None
