"""DNP clean-up (NHN section 3, "Network pruning": "we also clean up the network by removing all the
neurons with zero input or output connection after DNP"), a spec change through surgery.

A *neuron* is a filter of a conv unit; its connections are the entries of the per-kernel masks
(``masks/<unit>/kernel_mask``, ``[cin, cout]``) that DNP zeroes.

* **Output-less** filter: every unit reading its channel has that input row pruned (all zeros).
  Removing it (its kernel column, bias, BatchNorm entries and the readers' rows) leaves the
  network's function unchanged: exact, in training and inference mode.
* **Input-less** filter: its kernel column is pruned (all zeros), so it emits a constant, the
  activation of its BatchNorm shift (``act(gamma * (b - mean) / sqrt(var + eps) + beta)``, with
  the inference-mode running statistics, times its filter mask). It is removed only where the
  constant can be folded exactly into every reader: a 1x1 plain conv followed by BatchNorm (the
  constant's contribution moves into the running mean; in training mode the batch mean removes a
  constant anyway), a 1x1 conv with a bias and no BatchNorm (into the bias), or the classifier
  behind average or grouped-conv pooling (into the Dense bias). Where any reader is something
  else (a kxk conv, whose zero padding makes a constant map position-dependent; a pooling op; an
  addition; a factorized reduction; an add-on edge) or where removing the channel would change
  another width (a ``concat_conv`` merge's output width follows its block's), the filter is kept
  and reported.

Readers are followed through op sequences (cell branches, residual bodies), the next block's
entry units, ``concat_conv`` merges of later blocks of the same stage and the head. Anything this
module does not follow counts as reading every channel, so nothing is ever removed on a guess.
Choice blocks are refused (materialize a selection first). A unit keeps at least one filter.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from flax import traverse_util

from fnnjax._trees import at_path
from fnnjax.arch.build import BN_EPSILON
from fnnjax.arch.shapes import block_shapes, entry_units, infer_layers
from fnnjax.arch.spec import (
    Block,
    Cell,
    Choice,
    Conv,
    Spec,
    block_name,
    branch_op_name,
    iter_blocks,
    skip_merge_name,
    stage_starts,
    stem_name,
)

__all__ = ["Cleanup", "clean_up"]


@dataclasses.dataclass(frozen=True)
class _Reader:
    path: str  # the reading unit ("head/out" / "head/fc0" for the classifier)
    offset: int  # where the producer's channels start in the reader's input
    relu: bool = False  # the reader applies ReLU to its input first (a concat_conv merge)
    head: bool = False


@dataclasses.dataclass(frozen=True)
class Cleanup:
    """What :func:`clean_up` did.

    Attributes:
        spec: the cleaned spec.
        variables: its variables (every collection of the input, transplanted; folds applied).
        removed: ``{unit: [filters]}`` removed (indices into the unit's filters before clean-up;
            over several passes, indices of the pass they were removed in are mapped back).
        folded: the subset of ``removed`` that was input-less (its constant folded).
        kept_constant: ``{unit: [filters]}`` input-less filters kept (no exact fold).
        params: ``{"before", "after"}`` trainable parameter counts.
    """

    spec: Spec
    variables: dict[str, Any]
    removed: dict[str, list[int]]
    folded: dict[str, list[int]]
    kept_constant: dict[str, list[int]]
    params: dict[str, int]


# ----------------------------------------------------------------------------------------------
# Who reads a unit's output
# ----------------------------------------------------------------------------------------------


def _plain_conv(op: Any) -> bool:
    return isinstance(op, Conv) and op.groups == 1


def _block_entry_readers(b: Block, path: str) -> list[_Reader] | None:
    try:
        return [_Reader(p, 0) for p in entry_units(b, path)]
    except ValueError:
        return None


def _readers(spec: Spec) -> dict[str, list[_Reader] | None]:
    """``{conv unit: its readers}`` (``None``: something reads it that is not followed)."""
    slots = list(iter_blocks(spec))  # stem blocks then stage blocks, in order
    n_stem = len(spec.stem)
    out: dict[str, list[_Reader] | None] = {}
    for k, (path, _, b) in enumerate(slots):
        if isinstance(b, Choice):
            raise ValueError(f"spec: {path} is a choice block; clean up a materialized "
                             "selection (fnnjax.arch.materialize)")  # fmt: skip
        ends = _sequence_readers(b, path, out)  # [(unit, offset)] whose output is the block's
        if ends is None:
            continue
        # The flat index other blocks name this output by (-1: the stem's last block).
        g = k - n_stem if k >= n_stem else (-1 if k == n_stem - 1 else None)
        block_readers = _output_readers(spec, slots, k, g)
        for unit, offset in ends:
            out[unit] = (
                None
                if block_readers is None
                else [dataclasses.replace(r, offset=r.offset + offset) for r in block_readers]
            )
    return out


def _sequence_readers(b: Block, path: str, out: dict) -> list[tuple[str, int]] | None:
    """Records the readers inside ``b``'s op sequences; returns the units making up the block's
    output with their channel offsets, or None when the output is not a plain concat of convs."""
    if isinstance(b, Conv):
        return [(path, 0)]
    if not isinstance(b, Cell):
        return None  # residual bodies, separable and pooling ops: nothing removed around them
    ends, offset = [], 0
    for k, branch in enumerate(b.branches):
        for m, op in enumerate(branch):
            if not isinstance(op, Conv):
                continue
            unit = f"{path}/{branch_op_name(k, m)}"
            if m + 1 < len(branch):
                nxt = branch[m + 1]
                out[unit] = (
                    [_Reader(f"{path}/{branch_op_name(k, m + 1)}", 0)] if _plain_conv(nxt) else None
                )
        last = branch[-1]
        if not isinstance(last, Conv) or (b.merge != "concat" and len(b.branches) > 1):
            return None
        ends.append((f"{path}/{branch_op_name(k, len(branch) - 1)}", offset))
        offset += last.filters
    return ends if b.act is None else None  # an activation after the merge: not followed


def _output_readers(spec: Spec, slots, k: int, g: int | None) -> list[_Reader] | None:
    """Readers of slot ``k``'s block output (flat index ``g``), or None if anything else reads it."""
    _, _, b = slots[k]
    if b.gated_merge is not None or (b.skips and b.skip_merge == "add"):
        return None  # the block's output is a merge (its width follows the block's): not followed
    readers: list[_Reader] = []
    if g is not None:
        starts, shapes = stage_starts(spec), block_shapes(spec)
        home = max([i for i, s in enumerate(starts) if s <= g], default=-1)  # g's stage (-1: stem)
        for i, st in enumerate(spec.stages):
            reduced = any(spec.stages[m].reduce is not None for m in range(home + 1, i + 1))
            for j, later in enumerate(st.blocks):
                if starts[i] + j <= g:
                    continue
                static = {starts[i] + s if s >= 0 else starts[i] - 1 for s in later.skips}
                if g in static or any(a.source == g for a in later.addons):
                    return None
                if g in later.gated_skips:
                    if reduced or later.gated_merge != "concat_conv":
                        return None
                    before = later.gated_skips[: later.gated_skips.index(g)]
                    offset = sum(shapes[_flat_path(spec, s)][2] for s in before)
                    readers.append(_Reader(f"{skip_merge_name(i, j)}/unit", offset, relu=True))
    if k + 1 < len(slots):  # the main path: the next block (across a stage without reduction)
        nxt_path, _, nxt = slots[k + 1]
        first = re.fullmatch(r"s(\d+)b0", nxt_path)
        if first and spec.stages[int(first.group(1))].reduce is not None:
            return None  # a factorized reduction reads it
        entry = _block_entry_readers(nxt, nxt_path)
        return None if entry is None else readers + entry
    h = spec.head
    if h.pool not in ("avg", "grouped") or h.kind not in ("linear", "dense"):
        return None
    return readers + [_Reader("head/fc0" if h.kind == "dense" and h.hidden else "head/out", 0,
                              head=True)]  # fmt: skip


def _flat_path(spec: Spec, g: int) -> str:
    """The module path of flat block ``g`` (-1: the stem's last block)."""
    if g < 0:
        return stem_name(len(spec.stem) - 1)
    for i, s in enumerate(stage_starts(spec)):
        if 0 <= g - s < len(spec.stages[i].blocks):
            return block_name(i, g - s)
    raise IndexError(g)


# ----------------------------------------------------------------------------------------------
# The clean-up
# ----------------------------------------------------------------------------------------------


def _kernel_mask(variables: Mapping[str, Any], unit: str, shape: tuple[int, int]) -> np.ndarray:
    m = at_path(variables.get("masks", {}), f"{unit}/kernel_mask")
    return np.ones(shape, np.float32) if m is None else np.asarray(m, np.float32)


def _constants(variables: Mapping[str, Any], unit: str, op: Conv) -> np.ndarray:
    """``[cout]``: what each filter emits when its kernel reads nothing (inference mode)."""
    p = at_path(variables["params"], unit)
    bias = np.asarray(p["conv"]["bias"], np.float64) if "bias" in p["conv"] else 0.0
    cout = p["conv"]["kernel"].shape[-1]
    z = np.broadcast_to(np.asarray(bias, np.float64), (cout,)).copy()

    def act(v):
        return (
            np.maximum(v, 0.0) if op.act == "relu" else np.clip(v, 0, 6) if op.act == "relu6" else v
        )

    def bn(v):
        if not op.norm:
            return v
        s = at_path(variables.get("batch_stats", {}), f"{unit}/bn")
        scale, shift = (
            np.asarray(p["bn"]["scale"], np.float64),
            np.asarray(p["bn"]["bias"], np.float64),
        )
        return (
            scale * (v - np.asarray(s["mean"])) / np.sqrt(np.asarray(s["var"]) + BN_EPSILON) + shift
        )

    y = bn(act(z)) if op.act_first else act(bn(z))
    fmask = at_path(variables.get("masks", {}), f"{unit}/filter_mask")
    return y if fmask is None else y * np.asarray(fmask, np.float64)


def _foldable(r: _Reader, ops: Mapping[str, Any]) -> bool:
    if r.head:
        return True
    op = ops.get(r.path, (None, None))[1]
    return (isinstance(op, Conv) and op.kernel == 1 and op.groups == 1 and not op.act_first
            and (op.norm or op.bias))  # fmt: skip


def _unit_ops(spec: Spec) -> dict[str, tuple[str, Any]]:
    """``{unit path: (spec field, op)}`` of the conv units (merges' units are 1x1 BN convs)."""
    out = {}
    for u in infer_layers(spec):
        if u.op in ("conv", "dense"):
            op = _field(spec, u.field) if not u.path.endswith("_skip/unit") else Conv(
                filters=u.cout, kernel=1, act=None)  # fmt: skip
            out[u.path] = (u.field, op)
    return out


_TOKEN = re.compile(r"([a-z_]+)|\[(\d+)\]")


def _field(spec: Spec, field: str) -> Any:
    node: Any = spec
    for name, index in _TOKEN.findall(field):
        node = getattr(node, name) if name else node[int(index)]
    return node


def _with_field(obj: Any, tokens: list[tuple[str, str]], value: Any) -> Any:
    if not tokens:
        return value
    (name, index), rest = tokens[0], tokens[1:]
    if name:
        return dataclasses.replace(obj, **{name: _with_field(getattr(obj, name), rest, value)})
    i = int(index)
    return (*obj[:i], _with_field(obj[i], rest, value), *obj[i + 1 :])


def _fold(variables: dict[str, Any], reader: _Reader, values: np.ndarray, channels: np.ndarray,
          ops: Mapping[str, Any]) -> None:  # fmt: skip
    """Adds the constants ``values`` on input rows ``reader.offset + channels`` to the reader."""
    params = variables["params"]
    rows = reader.offset + channels
    v = np.maximum(values, 0.0) if reader.relu else values
    if reader.head:
        pool = at_path(params, "head/pool/kernel")
        if pool is not None:  # grouped conv: a constant map pools to constant * sum of its kernel
            v = v * np.asarray(pool, np.float64)[:, :, 0, :].sum(axis=(0, 1))[rows]
        unit = at_path(params, reader.path)
        unit["bias"] = unit["bias"] + (v @ np.asarray(unit["kernel"], np.float64)[rows]).astype(
            unit["bias"].dtype)  # fmt: skip
        return
    unit = at_path(params, reader.path)
    kernel = np.asarray(unit["conv"]["kernel"], np.float64)[0, 0]  # [cin, cout]
    mask = _kernel_mask(variables, reader.path, kernel.shape)
    delta = v @ (kernel * mask)[rows]
    if ops[reader.path][1].norm:
        stats = at_path(variables["batch_stats"], f"{reader.path}/bn")
        stats["mean"] = stats["mean"] - delta.astype(stats["mean"].dtype)
    else:
        unit["conv"]["bias"] = unit["conv"]["bias"] + delta.astype(unit["conv"]["bias"].dtype)


def _mutable(variables: Mapping[str, Any]) -> dict[str, Any]:
    return jax.tree_util.tree_map(np.asarray, traverse_util.unflatten_dict(
        traverse_util.flatten_dict(dict(variables))))  # fmt: skip


def _one_pass(spec: Spec, variables: dict[str, Any], fold: bool):
    readers, ops = _readers(spec), _unit_ops(spec)
    drops, folded, kept = {}, {}, {}
    for unit, (field, op) in ops.items():
        if unit not in readers or unit.startswith("head/"):
            continue
        kernel = np.asarray(at_path(variables["params"], unit)["conv"]["kernel"])
        cin, cout = kernel.shape[-2], kernel.shape[-1]
        inputless = ~_kernel_mask(variables, unit, (cin, cout)).any(axis=0)
        rs = readers[unit]
        outputless = np.zeros(cout, bool)
        if rs is not None and rs:
            outputless = np.ones(cout, bool)
            for r in rs:
                if r.head:
                    outputless[:] = False
                    break
                shape = tuple(
                    np.asarray(at_path(variables["params"], r.path)["conv"]["kernel"]).shape[-2:]
                )
                rows = _kernel_mask(variables, r.path, shape)[r.offset : r.offset + cout]
                outputless &= ~rows.any(axis=1)
        can_fold = fold and rs is not None and bool(rs) and all(_foldable(r, ops) for r in rs)
        to_fold = inputless & ~outputless & can_fold
        drop = outputless | to_fold
        if drop.all():  # a unit keeps one filter
            keep = int(np.argmax(~outputless)) if (~outputless).any() else 0
            drop[keep], to_fold[keep] = False, False
        if to_fold.any():
            values = _constants(variables, unit, op)
            for r in rs:
                _fold(variables, r, values[to_fold], np.flatnonzero(to_fold), ops)
        if drop.any():
            drops[unit] = (field, np.flatnonzero(~drop))
            folded[unit] = np.flatnonzero(to_fold).tolist()
        left = inputless & ~drop
        if left.any():
            kept[unit] = np.flatnonzero(left).tolist()
    return drops, folded, kept


def clean_up(spec: Spec, variables: Mapping[str, Any], *, fold: bool = True,
             max_passes: int = 4) -> Cleanup:  # fmt: skip
    """Removes the filters left without input or output connections (module docstring).

    Args:
        spec: a plain spec (no choice blocks), built with ``use_masks=True``.
        variables: its variables with the ``"masks"`` DNP returned (and params, batch_stats).
        fold: also remove input-less filters whose constant folds exactly (False: keep them all).
        max_passes: removing filters can leave others without connections; repeat until nothing
            changes or this many passes.

    Returns:
        A :class:`Cleanup`; its model computes the same function as the input's in inference
        mode (exactly, up to float rounding of the folds).
    """
    from fnnjax.arch import analytic_counts, build_model, init_variables, transplant_params  # noqa: PLC0415

    if "masks" not in variables:
        raise ValueError("variables: no 'masks' collection; build the model with use_masks=True "
                         "and pass the masks DNP returned")  # fmt: skip
    current, var = spec, _mutable(variables)
    removed: dict[str, list[int]] = {}
    folded: dict[str, list[int]] = {}
    kept: dict[str, list[int]] = {}
    origin: dict[str, np.ndarray] = {}  # unit -> its current filters' indices before clean-up
    for _ in range(max_passes):
        drops, fold_now, kept = _one_pass(current, var, fold)
        if not drops:
            break
        new = current
        for _unit, (field, keep) in drops.items():
            new = _with_field(new, _TOKEN.findall(field), dataclasses.replace(
                _field(new, field), filters=len(keep)))  # fmt: skip
        for unit, (_, keep) in drops.items():
            before = origin.get(unit, np.arange(_field(current, drops[unit][0]).filters))
            gone = np.setdiff1d(np.arange(len(before)), keep)
            removed.setdefault(unit, []).extend(before[gone].tolist())
            folded.setdefault(unit, []).extend(before[fold_now[unit]].tolist())
            origin[unit] = before[keep]
        fresh = init_variables(build_model(new, use_masks=True), {"params": jax.random.key(0)},
                               new.input_shape, batch=1)  # model.init's draws, one compile  # fmt: skip
        fresh = {k: v for k, v in fresh.items() if k in var}
        var = _mutable(transplant_params(current, var, new, fresh,
                                         kept={u: k for u, (_, k) in drops.items()}))  # fmt: skip
        current = new
    kept = {u: (origin[u][k] if u in origin else np.asarray(k)).tolist() for u, k in kept.items()}
    return Cleanup(spec=current, variables=jax.tree_util.tree_map(jax.numpy.asarray, var),
                   removed={u: sorted(v) for u, v in removed.items()},
                   folded={u: sorted(v) for u, v in folded.items() if v},
                   kept_constant=kept,
                   params={"before": analytic_counts(spec)["params"],
                           "after": analytic_counts(current)["params"]})  # fmt: skip
