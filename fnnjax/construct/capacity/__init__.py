"""Dynamic network capacity (an unfinished thesis draft, "Dynamic network capacity"):
residual networks that grow and shrink while they train. Built so far: the saliencies that
decide deletions and growth (:mod:`~fnnjax.construct.capacity.saliency`: Optimal Brain Damage
with a Hutchinson Hessian diagonal, magnitude and first-order Taylor baselines, per unit and
per block) and the capacity operations (:mod:`~fnnjax.construct.capacity.ops`: widen and narrow
a unit, remove a residual block; insertion is :func:`fnnjax.arch.insert_residual`) and the
capacity controller's policy (:mod:`~fnnjax.construct.capacity.controller`), the resumable
driver (:func:`~fnnjax.construct.capacity.train_dynamic`), the layer analysis
(:mod:`~fnnjax.construct.capacity.analysis`) and the draft's tasks and networks
(:mod:`~fnnjax.construct.capacity.tasks`). The method note is docs/dynamic-capacity.md.
"""

from fnnjax.construct.capacity.analysis import layer_report, plot_capacity, plot_layers, read_run
from fnnjax.construct.capacity.controller import CapacityConfig, Change, plan_changes, plateaued
from fnnjax.construct.capacity.driver import (
    SALIENCIES,
    DynamicConfig,
    apply_changes,
    apply_plan,
    train_dynamic,
)
from fnnjax.construct.capacity.ops import narrow, remove_block, unit_filters, widen
from fnnjax.construct.capacity.saliency import (
    block_saliency,
    hutchinson_diagonal,
    magnitude_saliency,
    obd_saliency,
    sum_per_block,
    taylor_saliency,
    unit_gates,
    unit_saliency,
    with_gates,
)
from fnnjax.construct.capacity.tasks import (
    as_vectors,
    residual_conv_spec,
    residual_mlp_spec,
    sines_dataset,
)

__all__ = [
    "SALIENCIES",
    "CapacityConfig",
    "Change",
    "DynamicConfig",
    "apply_changes",
    "apply_plan",
    "as_vectors",
    "block_saliency",
    "hutchinson_diagonal",
    "layer_report",
    "magnitude_saliency",
    "narrow",
    "obd_saliency",
    "plan_changes",
    "plateaued",
    "plot_capacity",
    "plot_layers",
    "read_run",
    "remove_block",
    "residual_conv_spec",
    "residual_mlp_spec",
    "sines_dataset",
    "sum_per_block",
    "taylor_saliency",
    "train_dynamic",
    "unit_filters",
    "unit_gates",
    "unit_saliency",
    "widen",
    "with_gates",
]
