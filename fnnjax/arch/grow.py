"""Function-preserving growth: insert a residual block that starts as the identity, widen a layer
by Net2Wider. Each is a spec transform plus the surgery that carries the variables over, so the
grown network computes exactly what the old one did (in evaluation mode; in training mode too,
up to the batch statistics of the new units).

* :func:`insert_residual`: a :class:`~fnnjax.arch.spec.Residual` block whose body ends with a unit
  that outputs zero (its BN scale and shift zero, or its kernel and bias zero without BN) and
  whose add has no activation, so ``x + 0 = x`` (He et al.'s observation that a residual block
  outputting zero is the identity, which the dynamic-capacity draft builds on). With ``act="relu"``
  after the add it is still the identity when its input is non-negative, i.e. inserted after a
  block that ends with a ReLU; other positions are refused. Gradients reach the zeroed unit, so it
  starts learning at once (ReZero / "zero-init the last BN" practice).
* :func:`net2wider`: Chen et al. (2016) Net2WiderNet. A conv or Dense layer of ``n`` units gets
  ``width`` units: the first ``n`` are the old ones, each new one a copy of a random old unit
  (incoming weights, bias and BN parameters and running statistics); every consumer's incoming
  weights from a unit replicated ``r`` times are divided by ``r``, so the sum it computes is
  unchanged. ``noise`` adds a small perturbation to the copies' incoming weights to break symmetry
  (the paper's suggestion; 0 keeps the function exact).

Both return a :class:`Grown` ``(spec, variables, kept)``; move the optimizer state with
:func:`fnnjax.arch.transplant_opt_state` and the same ``kept`` (``replicate=True`` after
Net2Wider).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from fnnjax.arch.build import build_model, init_variables
from fnnjax.arch.shapes import block_shapes
from fnnjax.arch.spec import (
    Block,
    Cell,
    Conv,
    Dense,
    Residual,
    SepConv,
    Spec,
    block_name,
    body_op_name,
    stem_name,
)
from fnnjax.arch.surgery import transplant_params, transplant_plan

__all__ = ["Grown", "fresh_variables", "input_channels", "inserted_residual_spec", "insert_residual",
           "net2wider"]


@dataclasses.dataclass(frozen=True)
class Grown:
    """What a growth operation returns.

    Attributes:
        spec: the grown spec.
        variables: its variables (every collection), computing the old function.
        kept: the ``kept`` map used (pass it to ``transplant_opt_state``).
    """

    spec: Spec
    variables: dict[str, Any]
    kept: dict[str, list[int]]


def input_channels(spec: Spec, stage: int, position: int) -> tuple[int, int, int]:
    """Shape entering block ``position`` of stage ``stage``."""
    shapes = block_shapes(spec)
    if position > 0:
        return shapes[block_name(stage, position - 1)]
    for i in range(stage - 1, -1, -1):
        if spec.stages[i].blocks:
            return shapes[block_name(i, len(spec.stages[i].blocks) - 1)]
    if spec.stem:
        return shapes[stem_name(len(spec.stem) - 1)]
    return tuple(spec.input_shape)


def _producer(spec: Spec, stage: int, position: int) -> Block | None:
    if position > 0:
        return spec.stages[stage].blocks[position - 1]
    for i in range(stage - 1, -1, -1):
        if spec.stages[i].blocks:
            return spec.stages[i].blocks[-1]
    return spec.stem[-1] if spec.stem else None


def _ends_non_negative(b: Block | None) -> bool:
    """Whether ``b``'s output is >= 0 everywhere (it ends with a ReLU; no skips added after it)."""
    if b is not None and b.skips and b.skip_merge == "add":
        return False  # the skip sources are added after the block's own activation
    if isinstance(b, Conv | SepConv):
        return b.act in ("relu", "relu6") and not getattr(b, "act_first", False)
    if isinstance(b, Residual | Cell):
        return b.act in ("relu", "relu6")
    return False


def _check_index(spec: Spec, stage: int, position: int, *, insert: bool) -> None:
    if not 0 <= stage < len(spec.stages):
        raise ValueError(f"stage: expected 0..{len(spec.stages) - 1}, got {stage}")
    n = len(spec.stages[stage].blocks)
    top = n if insert else n - 1
    if not 0 <= position <= top:
        raise ValueError(f"position: expected 0..{top} in stage {stage}, got {position}")


def insert_residual(
    spec: Spec,
    variables: Mapping[str, Any],
    stage: int,
    position: int,
    *,
    hidden: int | None = None,
    kernel: int = 3,
    act: str | None = None,
    key: jax.Array | None = None,
) -> Grown:
    """Inserts an identity-at-insertion residual block before block ``position`` of ``stage``.

    The body is two units of the input's width ``c`` (hidden width ``hidden``, default ``c``):
    ``Dense(hidden) -> Dense(c, no activation)`` when the featuremap is 1x1 (an MLP), else
    ``Conv(hidden, kernel) -> Conv(c, kernel, no activation)`` with BN. Later blocks' skip indices
    in the stage shift by one.

    Args:
        spec, variables: the network and its variables (every collection).
        stage, position: where (``position == len(blocks)`` appends to the stage).
        hidden: the body's hidden width.
        kernel: the conv body's kernel size.
        act: activation after the add: None (exact identity anywhere) or ``"relu"`` (exact only
            after a block ending with a ReLU; elsewhere a ``ValueError``).
        key: init key of the new block's weights (default ``key(0)``).

    Raises:
        ValueError: a bad position, or ``act`` where the input can be negative.
    """
    spec_b, kept, body = _inserted(spec, stage, position, hidden=hidden, kernel=kernel, act=act)
    fresh = fresh_variables(spec_b, variables, key)
    out = transplant_params(spec, variables, spec_b, fresh, kept=kept)
    last = f"{block_name(stage, position)}/{body_op_name(len(body) - 1)}"
    params = jax.tree_util.tree_map(np.asarray, out["params"])
    unit = _subtree(params, last)
    zeroed = ("bn",) if body[-1].norm else ("conv",)
    for name in zeroed:
        unit[name] = {k: np.zeros_like(v) for k, v in unit[name].items()}
    return Grown(spec_b, {**out, "params": params}, kept)


def inserted_residual_spec(
    spec: Spec, stage: int, position: int, *, hidden: int | None = None, kernel: int = 3,
    act: str | None = None,
) -> Spec:  # fmt: skip
    """The spec :func:`insert_residual` makes (no variables: e.g. to price an insertion)."""
    return _inserted(spec, stage, position, hidden=hidden, kernel=kernel, act=act)[0]


def _inserted(spec: Spec, stage: int, position: int, *, hidden: int | None, kernel: int,
              act: str | None) -> tuple[Spec, dict[str, list[int]], tuple[Block, ...]]:  # fmt: skip
    _check_index(spec, stage, position, insert=True)
    h, w, c = input_channels(spec, stage, position)
    if act is not None and not _ends_non_negative(_producer(spec, stage, position)):
        raise ValueError(
            f"act={act!r}: stage {stage} position {position} follows a block whose output can be "
            "negative, so a ReLU after the add would not be the identity; use act=None"
        )
    width = hidden or c
    if (h, w) == (1, 1):
        body: tuple[Block, ...] = (Dense(filters=width), Dense(filters=c, act=None))
    else:
        body = (Conv(filters=width, kernel=kernel), Conv(filters=c, kernel=kernel, act=None))
    new = Residual(body=body, shortcut="identity", act=act)
    blocks = list(spec.stages[stage].blocks)
    shifted = [
        dataclasses.replace(b, skips=tuple(s + 1 if s >= position else s for s in b.skips))
        if j >= position and b.skips else b
        for j, b in enumerate(blocks)
    ]  # fmt: skip
    shifted.insert(position, new)
    stages = list(spec.stages)
    stages[stage] = dataclasses.replace(spec.stages[stage], blocks=tuple(shifted))
    spec_b = dataclasses.replace(spec, stages=tuple(stages))
    kept = {f"s{stage}": [j for j in range(position)] + [-1]
            + [j for j in range(position, len(blocks))]}  # fmt: skip
    return spec_b, kept, body


def net2wider(
    spec: Spec,
    variables: Mapping[str, Any],
    stage: int,
    position: int,
    width: int,
    *,
    key: jax.Array | None = None,
    noise: float = 0.0,
) -> Grown:
    """Widens the Conv / Dense / SepConv block ``position`` of ``stage`` to ``width`` units.

    Args:
        spec, variables: the network and its variables (every collection).
        stage, position: the block.
        width: the new number of units (more than now).
        key: which units are copied (uniform with replacement) and the noise (default ``key(0)``).
        noise: standard deviation of the noise added to the copies' incoming weights, relative to
            each weight's magnitude (0: exact).

    Raises:
        ValueError: not a Conv/Dense/SepConv block, a width that does not grow it, or a block whose
            units feed an addition (a residual sum cannot be divided among copies).
    """
    _check_index(spec, stage, position, insert=False)
    b = spec.stages[stage].blocks[position]
    if not isinstance(b, Conv | SepConv):
        raise ValueError(f"stages[{stage}].blocks[{position}]: Net2Wider widens a Conv, Dense or "
                         f"SepConv block, got {type(b).__name__}")  # fmt: skip
    n = b.filters
    if not (isinstance(width, int) and width > n):
        raise ValueError(f"width: expected an int above the current {n} units, got {width!r}")
    if isinstance(b, Conv) and b.groups > 1:
        raise ValueError(f"stages[{stage}].blocks[{position}]: grouped convs cannot be widened")
    unit = block_name(stage, position) + ("/pw" if isinstance(b, SepConv) else "")
    stages = list(spec.stages)
    blocks = list(spec.stages[stage].blocks)
    blocks[position] = dataclasses.replace(b, filters=width)
    stages[stage] = dataclasses.replace(spec.stages[stage], blocks=tuple(blocks))
    try:
        spec_b = dataclasses.replace(spec, stages=tuple(stages))
    except ValueError as error:
        raise ValueError(
            f"stages[{stage}].blocks[{position}]: cannot widen it alone, its output is added to "
            f"another of the old width ({error})"
        ) from None
    return split_units(spec, variables, spec_b, unit, n, width, key=key, noise=noise)


def split_units(
    spec: Spec, variables: Mapping[str, Any], spec_b: Spec, unit: str, n: int, width: int, *,
    key: jax.Array | None = None, noise: float = 0.0,
) -> Grown:  # fmt: skip
    """Net2Wider on any unit path (``spec_b``: ``spec`` with ``unit`` widened from ``n`` to
    ``width``): the new units copy random old ones (uniform with replacement, by ``key``) and
    every consumer's weights from a copied unit are shared equally among its copies, so the
    network computes the same function. :func:`net2wider` for stage blocks; the capacity
    operations use it for a residual body's units too."""
    key = jax.random.key(0) if key is None else key
    copy_key, noise_key = jax.random.split(key)
    sources = np.asarray(jax.random.randint(copy_key, (width - n,), 0, n))
    kept = {unit: list(range(n)) + [int(s) for s in sources]}
    plan = transplant_plan(spec, spec_b, kept, replicate=True)
    fresh = fresh_variables(spec_b, variables, None)
    out = transplant_params(spec, variables, spec_b, fresh, kept=kept, replicate=True)
    params = jax.tree_util.tree_map(np.asarray, out["params"])
    # Every consumer's inputs from a replicated unit are shared among its copies.
    for path, um in plan.items():
        if um.in_src is None or path == unit:
            continue
        src = np.asarray(um.in_src)
        counts = np.bincount(src[src >= 0], minlength=max(int(src.max()) + 1, 1))
        share = np.where(src >= 0, 1.0 / np.maximum(counts[np.maximum(src, 0)], 1), 1.0)
        if np.all(share == 1.0):
            continue
        for holder in _kernel_holders(_subtree(params, path)):
            leaf = holder["kernel"]
            if leaf.ndim >= 2 and leaf.shape[-2] == len(src):
                shape = (1,) * (leaf.ndim - 2) + (len(src), 1)
                holder["kernel"] = leaf * share.reshape(shape).astype(leaf.dtype)
    if noise:
        for holder in _kernel_holders(_subtree(params, unit)):
            leaf = holder["kernel"].copy()
            eps = np.asarray(jax.random.normal(noise_key, leaf.shape[:-1] + (width - n,)))
            leaf[..., n:] += noise * np.abs(leaf[..., n:]) * eps.astype(leaf.dtype)
            holder["kernel"] = leaf
    return Grown(spec_b, {**out, "params": params}, kept)


def fresh_variables(spec: Spec, like: Mapping[str, Any], key: jax.Array | None) -> dict[str, Any]:
    """Fresh variables of ``spec`` with the same collections as ``like`` (masks, statistics)."""
    model = build_model(spec, use_masks="masks" in like)
    key = jax.random.key(0) if key is None else key
    variables = init_variables(model, key, spec.input_shape)
    return {k: v for k, v in variables.items() if k in like or k == "params"}


def _subtree(tree: dict[str, Any], path: str) -> dict[str, Any]:
    for name in path.split("/"):
        tree = tree[name]
    return tree


def _kernel_holders(unit: dict[str, Any]) -> list[dict[str, Any]]:
    """The dicts holding a unit's weight matrix: ``unit`` itself (a Dense head layer) or its
    ``conv`` module (a conv unit)."""
    if "kernel" in unit:
        return [unit]
    return [leaves for leaves in unit.values() if isinstance(leaves, dict) and "kernel" in leaves]
