"""Dynamic network capacity (the thesis draft ../shared/papers/dynamic-capacity-thesis-draft.md):
residual networks that grow and shrink while they train. Built so far: the saliencies that
decide deletions and growth (:mod:`~fnnjax.construct.capacity.saliency`: Optimal Brain Damage
with a Hutchinson Hessian diagonal, magnitude and first-order Taylor baselines, per unit and
per block) and the capacity operations (:mod:`~fnnjax.construct.capacity.ops`: widen and narrow
a unit, remove a residual block; insertion is :func:`fnnjax.arch.insert_residual`) and the
capacity controller's policy (:mod:`~fnnjax.construct.capacity.controller`). Still to come: the
resumable driver, the layer analysis and the experiments.
"""

from fnnjax.construct.capacity.controller import CapacityConfig, Change, plan_changes, plateaued
from fnnjax.construct.capacity.ops import narrow, remove_block, unit_filters, widen
from fnnjax.construct.capacity.saliency import (
    block_saliency,
    hutchinson_diagonal,
    magnitude_saliency,
    obd_saliency,
    taylor_saliency,
    unit_saliency,
)

__all__ = [
    "CapacityConfig",
    "Change",
    "block_saliency",
    "hutchinson_diagonal",
    "magnitude_saliency",
    "narrow",
    "obd_saliency",
    "plan_changes",
    "plateaued",
    "remove_block",
    "taylor_saliency",
    "unit_filters",
    "unit_saliency",
    "widen",
]
