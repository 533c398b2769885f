"""The capacity controller: a pure policy from (loss history, unit saliencies, spec) to a list of
changes, each with the reason it was made.

The draft's section 3.1 ("Dynamic Network Capacity") is a heading only; this is our reading of
its ingredients (residual blocks inserted as the identity, OBD-style deletion by saliency,
network expansion), with every threshold in :class:`CapacityConfig`:

* **shrink**: in every resizable unit (:func:`~fnnjax.construct.capacity.ops.unit_filters`), the
  units whose saliency is below ``shrink_below`` times the unit's mean are deleted (at least one
  unit stays), unless that would take the network under ``min_params``;
* **grow** when the training loss has plateaued (its relative improvement over the last
  ``window`` evaluations is under ``tau``): widen the unit with the highest mean saliency by
  ``grow_units`` (the most useful layer per unit gets more), or, once that would pass
  ``max_units``, insert an identity residual block right after its block; never past
  ``max_params``; a unit narrowed in the same consultation is not grown (deleting and adding
  units of one layer at once is churn: the next consultation decides on the smaller layer);
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
from fnnjax.construct.capacity.ops import _locate, _with_filters, unit_filters

__all__ = ["CapacityConfig", "Change", "plan_changes", "plateaued"]


@dataclasses.dataclass(frozen=True)
class CapacityConfig:
    """Thresholds of the capacity controller (module docstring)."""

    window: int = 5
    warmup: int = 5
    tau: float = 0.01
    grow_units: int = 8
    max_units: int = 256
    shrink_below: float = 0.05
    min_params: int | None = None
    max_params: int | None = None
    cooldown: int = 3

    def __post_init__(self) -> None:
        for name in ("window", "grow_units", "max_units"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected a positive int, got {v!r}")
        for name in ("cooldown", "warmup"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name}: expected an int >= 0, got {v!r}")
        for name in ("tau", "shrink_below"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v < 1:
                raise ValueError(f"{name}: expected a number in [0, 1), got {v!r}")
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


def plan_changes(
    losses: Sequence[float], saliency: Mapping[str, Any], spec: Spec, config: CapacityConfig, *,
    since_change: int,
) -> list[Change]:  # fmt: skip
    """The changes to make now (module docstring).

    Args:
        losses: the training loss at every evaluation so far.
        saliency: ``{unit path: [units]}`` (:func:`~fnnjax.construct.capacity.unit_saliency`).
        spec: the current network.
        config: the thresholds.
        since_change: evaluations since the last change (or since the start).
    """
    if since_change < config.cooldown or len(losses) < config.warmup:
        return []
    units = sorted(u for u in saliency if _resizable(spec, u))
    changes: list[Change] = []
    for unit in units:
        s = np.asarray(saliency[unit], np.float64)
        mean = float(s.mean())
        low = np.flatnonzero(s < config.shrink_below * mean)
        if low.size == 0 or mean <= 0:
            continue
        keep = [int(k) for k in np.flatnonzero(s >= config.shrink_below * mean)] or [int(s.argmax())]
        after = analytic_counts(_with_filters(spec, unit, len(keep)))["params"]
        if config.min_params is not None and after < config.min_params:
            continue
        changes.append(Change("narrow", unit, tuple(keep),
                              f"{low.size} of {s.size} units below {config.shrink_below} x the "
                              f"unit's mean saliency {mean:.3g}"))  # fmt: skip
        spec = _with_filters(spec, unit, len(keep))
    flat, gain = plateaued(losses, config.window, config.tau)
    growable = [u for u in units if u not in {c.target for c in changes}]
    if flat and growable:
        best = max(growable, key=lambda u: float(np.mean(saliency[u])))
        n = unit_filters(spec, best)
        why = (f"loss improved {gain:.3%} over {config.window} evaluations (< {config.tau:.1%}); "
               f"{best} has the highest mean saliency")  # fmt: skip
        if n + config.grow_units <= config.max_units:
            grown = _with_filters(spec, best, n + config.grow_units)
            change = Change("widen", best, n + config.grow_units, why)
        else:
            i, j, _ = _locate(spec, best)
            grown = inserted_residual_spec(spec, i, j + 1)
            change = Change("insert", best, (i, j + 1), why + f", already at {n} >= the cap")
        if config.max_params is None or analytic_counts(grown)["params"] <= config.max_params:
            changes.append(change)
    return changes
