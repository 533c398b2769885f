"""The capacity controller: a pure policy from (loss history, unit saliencies, spec) to a list of
changes, each with the reason it was made.

The draft's section 3.1 ("Dynamic Network Capacity") is a heading only; this is our reading of
its ingredients (residual blocks inserted as the identity, OBD-style deletion by saliency,
network expansion), with every threshold in :class:`CapacityConfig`:

* **shrink**: in every resizable unit (:func:`~fnnjax.construct.capacity.ops.unit_filters`), the
  units whose saliency is below ``shrink_below`` times the unit's mean are deleted (at least one
  unit stays), unless that would take the network under ``min_params``; and the residual block
  (identity shortcut, not its stage's only block) with the lowest block saliency (the sum of its
  units') is removed when it is below ``remove_below`` times the mean over its stage's removable
  blocks (at most one per consultation; no growth in the same one, whose target it would shift);
* **grow** when the training loss has plateaued (its relative improvement over the last
  ``window`` evaluations is under ``tau``): widen the unit with the highest mean saliency by
  ``grow_units`` (the most useful layer per unit gets more), or, once that would pass
  ``max_units``, insert an identity residual block right after its block; never past
  ``max_params``; a unit narrowed in the same consultation is not grown (deleting and adding
  units of one layer at once is churn: the next consultation decides on the smaller layer);
* with ``loss_target`` set, a plateau at or below it does not grow the network (a plateau
  measures relative progress only: without a target, an easy task that has converged to a tiny
  loss grows too);
* units and blocks grown within the last ``grace`` evaluations are not deleted (they start at
  zero saliency: zero outgoing weights, an identity block);
* every decision a rule or the budget blocks is reported (``plan_changes(declined=...)``), and
  so is every stage block whose kind the operations cannot resize (a Cell, a Choice, a grouped
  conv, a residual body's separable conv: ``op`` ``"resize"``, its ``kind``, the reason): its
  units are measured, never changed (the stem, the head and the units that feed an identity
  shortcut keep their width by design, and are not reported);
* nothing in the first ``warmup`` evaluations (OBD's saliency assumes a trained network, at a
  minimum of the loss), nor within ``cooldown`` evaluations of the last change.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fnnjax.arch.grow import inserted_residual_spec
from fnnjax.arch.profile import analytic_counts
from fnnjax.arch.spec import Spec
from fnnjax.checks import check_int, check_number, check_share
from fnnjax.construct.capacity.ops import _locate, _with_filters, unit_filters
from fnnjax.construct.capacity.saliency import sum_per_block

__all__ = ["CapacityConfig", "Change", "plan_changes", "plateaued"]


@dataclasses.dataclass(frozen=True)
class CapacityConfig:
    """Thresholds of the capacity controller (module docstring)."""

    window: int = 5
    warmup: int = 5
    tau: float = 0.01
    grow_units: int = 8
    max_units: int = 64
    shrink_below: float = 0.05
    remove_below: float = 0.05
    min_params: int | None = None
    max_params: int | None = None
    cooldown: int = 3
    grace: int = 6
    loss_target: float | None = None

    def __post_init__(self) -> None:
        for name in ("window", "grow_units", "max_units"):
            check_int(name, getattr(self, name))
        for name in ("cooldown", "warmup", "grace"):
            check_int(name, getattr(self, name), 0)
        for name in ("min_params", "max_params"):
            check_int(name, getattr(self, name), none=True)
        for name in ("tau", "shrink_below", "remove_below"):
            check_share(name, getattr(self, name))
        check_number("loss_target", self.loss_target, above=0, none=True)
        lo, hi = self.min_params, self.max_params
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"min_params: expected at most max_params={hi}, got {lo}")


@dataclasses.dataclass(frozen=True)
class Change:
    """One capacity change: ``op`` ``"widen"`` (``value``: the new width), ``"narrow"``
    (``value``: the kept units) or ``"insert"`` (``value``: ``(stage, position)`` of the new
    residual block), on ``target`` (a unit path), with its ``reason``."""

    op: str
    target: str
    value: Any
    reason: str


def _resizable(spec: Spec, unit: str) -> bool:
    """Whether ``unit`` can change width alone (no identity shortcut adds its output)."""
    try:
        _with_filters(spec, unit, unit_filters(spec, unit) + 1)
    except ValueError:
        return False
    return True


def plateaued(losses: Sequence[float], window: int, tau: float) -> tuple[bool, float | None]:
    """``(plateau, relative improvement)`` over the last ``window`` evaluations: the loss fell by
    less than ``tau`` of its value ``window`` evaluations ago (or rose)."""
    if len(losses) <= window:
        return False, None
    before, now = float(losses[-window - 1]), float(losses[-1])
    gain = (before - now) / max(abs(before), 1e-12)
    return gain < tau, gain


def _check_saliency(saliency: Mapping[str, Any], spec: Spec) -> None:
    from fnnjax.arch import infer_layers  # noqa: PLC0415

    widths = {u.path: u.cout for u in infer_layers(spec) if u.op != "norm"}
    for unit, values in saliency.items():
        if unit not in widths:
            raise ValueError(f"saliency: {unit!r} is no unit of the spec (units: "
                             f"{', '.join(sorted(widths))})")  # fmt: skip
        if np.shape(values) != (widths[unit],):
            raise ValueError(f"saliency[{unit!r}]: expected one value per unit ({widths[unit]}), "
                             f"got shape {np.shape(values)} (measured on another network?)")  # fmt: skip


def _removable_blocks(spec: Spec) -> list[tuple[int, int]]:
    """Residual blocks with an identity shortcut in stages of more than one block."""
    from fnnjax.arch.grow import input_channels  # noqa: PLC0415
    from fnnjax.arch.shapes import block_shapes, residual_projects  # noqa: PLC0415
    from fnnjax.arch.spec import Residual  # noqa: PLC0415

    shapes = block_shapes(spec)
    out = []
    for i, stage in enumerate(spec.stages):
        for j, b in enumerate(stage.blocks):
            if isinstance(b, Residual) and len(stage.blocks) > 1 and not any(
                j in (o.skips or ()) for o in stage.blocks
            ) and not residual_projects(b, input_channels(spec, i, j), shapes[f"s{i}b{j}"]):
                out.append((i, j))
    return out


def plan_changes(
    losses: Sequence[float], saliency: Mapping[str, Any], spec: Spec, config: CapacityConfig, *,
    since_change: int, insert_hidden: int | None = None, declined: list[dict[str, Any]] | None = None,
    protected: Sequence[str] = (),
) -> list[Change]:  # fmt: skip
    """The changes to make now (module docstring), in the order to apply them: narrowings, at
    most one block removal, at most one growth.

    Args:
        losses: the training loss at every evaluation so far.
        saliency: ``{unit path: [units]}`` (:func:`~fnnjax.construct.capacity.unit_saliency`).
        spec: the current network.
        config: the thresholds.
        since_change: evaluations since the last change (or since the start).
        insert_hidden: the hidden width an inserted block would have (prices it for the budget).
        declined: if given, every decision the budget or a rule blocked is appended to it as
            ``{"op", "target", "reason"}``, and every stage block of a kind the operations
            cannot resize as ``{"op": "resize", "target": block, "kind", "reason"}``.
        protected: unit paths and block names (``"s0b2"``: all its units) grown within the last
            ``grace`` evaluations: not deleted yet (a new unit starts with zero outgoing weights
            and a new block as the identity, so their saliency is zero until they have trained).

    Raises:
        ValueError: a saliency for a unit the spec lacks, or of the wrong length.
    """
    _check_saliency(saliency, spec)
    notes = declined if declined is not None else []
    if since_change < config.cooldown or len(losses) < config.warmup:
        return []

    notes.extend(_fixed_blocks(saliency, spec))

    def params(s: Spec) -> int:
        return analytic_counts(s)["params"]

    units = sorted(u for u in saliency if _resizable(spec, u))
    changes: list[Change] = []
    shielded = set(protected)
    for unit in units:
        if config.shrink_below <= 0 or unit in shielded or unit.split("/")[0] in shielded:
            continue
        s = np.asarray(saliency[unit], np.float64)
        mean = float(s.mean())
        low = np.flatnonzero(s < config.shrink_below * mean)
        if low.size == 0 or mean <= 0:
            continue
        keep = [int(k) for k in np.flatnonzero(s >= config.shrink_below * mean)] or [int(s.argmax())]
        why = (f"{low.size} of {s.size} units below {config.shrink_below} x the unit's mean "
               f"saliency {mean:.3g}")  # fmt: skip
        after = params(_with_filters(spec, unit, len(keep)))
        if config.min_params is not None and after < config.min_params:
            notes.append({"op": "narrow", "target": unit,
                          "reason": f"{why}, but {after} parameters < min_params {config.min_params}"})  # fmt: skip
            continue
        changes.append(Change("narrow", unit, tuple(keep), why))
        spec = _with_filters(spec, unit, len(keep))
    removed = _plan_removal(saliency, spec, config, changes, notes, shielded)
    if removed is not None:
        changes.append(removed)
    flat, gain = plateaued(losses, config.window, config.tau)
    growable = [u for u in units if u not in {c.target for c in changes}]
    if flat and config.loss_target is not None and losses[-1] <= config.loss_target:
        notes.append({"op": "grow", "target": None,
                      "reason": f"loss plateaued at {losses[-1]:.3g}, already at or below "
                                f"loss_target {config.loss_target:.3g}"})  # fmt: skip
    elif flat and removed is not None:
        notes.append({"op": "grow", "target": None,
                      "reason": f"loss plateaued (improved {gain:.3%}), but a block was removed now"})  # fmt: skip
    elif flat and growable:
        best = max(growable, key=lambda u: float(np.mean(saliency[u])))
        n = unit_filters(spec, best)
        why = (f"loss improved {gain:.3%} over {config.window} evaluations (< {config.tau:.1%}); "
               f"{best} has the highest mean saliency")  # fmt: skip
        if n + config.grow_units <= config.max_units:
            grown = _with_filters(spec, best, n + config.grow_units)
            change = Change("widen", best, n + config.grow_units, why)
        else:
            i, j, _ = _locate(spec, best)
            grown = inserted_residual_spec(spec, i, j + 1, hidden=insert_hidden)
            change = Change("insert", best, (i, j + 1), why + f", already at {n} >= the cap")
        if config.max_params is None or params(grown) <= config.max_params:
            changes.append(change)
        else:
            notes.append({"op": change.op, "target": best, "reason": f"{why}, but {params(grown)} "
                          f"parameters > max_params {config.max_params}"})  # fmt: skip
    return changes


def _fixed_blocks(saliency: Mapping[str, Any], spec: Spec) -> list[dict[str, Any]]:
    """A ``"resize"`` decision declined for every stage block whose measured units are all of a
    kind the operations cannot resize (:func:`~fnnjax.construct.capacity.ops.unit_filters`'s
    refusal); a block with one resizable unit (a residual with a projection shortcut, a SepConv)
    is not declined."""
    import re  # noqa: PLC0415

    measured: dict[str, list[str]] = {}
    resizable: set[str] = set()  # blocks with a unit the operations resize (a residual body's
    for unit in sorted(saliency):  # convs beside its projection, a SepConv's pointwise half)
        m = re.match(r"^s(\d+)b(\d+)(/|$)", unit)
        if m is None:
            continue  # the stem and the head: fixed by design
        block = unit.split("/")[0]
        measured.setdefault(block, []).append(unit)
        try:
            _locate(spec, unit)
            resizable.add(block)
        except ValueError:
            pass
    fixed = {block: units for block, units in measured.items() if block not in resizable}
    out = []
    for block, units in fixed.items():
        i, j = (int(v) for v in re.findall(r"\d+", block))
        b = spec.stages[i].blocks[j]
        kind = type(b).__name__ + (" (grouped)" if getattr(b, "groups", 1) > 1 else "")
        names = ", ".join(u.partition("/")[2] or u for u in units)
        out.append({"op": "resize", "target": block, "kind": kind,
                    "reason": f"{block} is a {kind} block: the capacity operations resize only "
                              "Conv / Dense / SepConv stage blocks and the Conv / Dense ops of "
                              f"residual bodies; its units ({names}) are measured, never changed"})  # fmt: skip
    return out


def _plan_removal(saliency: Mapping[str, Any], spec: Spec, config: CapacityConfig,
                  changes: list[Change], notes: list[dict[str, Any]],
                  shielded: set[str]) -> Change | None:  # fmt: skip
    """The weakest removable residual block, if its saliency (the sum of its units') is below
    ``remove_below`` x the mean over its stage's removable blocks."""
    if config.remove_below <= 0:
        return None
    touched = {c.target.split("/")[0] for c in changes} | shielded
    blocks = _removable_blocks(spec)
    sums = sum_per_block(saliency)
    total = {b: float(sums.get(f"s{b[0]}b{b[1]}", 0.0)) for b in blocks}
    for stage in sorted({i for i, _ in blocks}):
        in_stage = {b: v for b, v in total.items() if b[0] == stage}
        if len(in_stage) < 2:
            continue
        mean = float(np.mean(list(in_stage.values())))
        (i, j), value = min(in_stage.items(), key=lambda kv: kv[1])
        if mean <= 0 or value >= config.remove_below * mean or f"s{i}b{j}" in touched:
            continue
        why = f"block saliency {value:.3g} below {config.remove_below} x its stage's mean {mean:.3g}"
        from fnnjax.construct.capacity.ops import _removed_spec  # noqa: PLC0415

        after = analytic_counts(_removed_spec(spec, i, j))["params"]
        if config.min_params is not None and after < config.min_params:
            notes.append({"op": "remove", "target": f"s{i}b{j}",
                          "reason": f"{why}, but {after} parameters < min_params {config.min_params}"})  # fmt: skip
            continue
        return Change("remove", f"s{i}b{j}", (i, j), why)
    return None
