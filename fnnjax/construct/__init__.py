"""Construction algorithms as pure spec transforms (one paper per module).

:mod:`fnnjax.construct.templates` (filter redistribution templates),
:mod:`fnnjax.construct.enas` (ENAS's macro search space, arcs and controller),
:mod:`fnnjax.construct.envelope` (EnvelopeNets' cells, statistic, restructuring and
construction), :mod:`fnnjax.construct.nhn` (NHN's SmoothInit, DNP kernel pruning and add-on
neuron search) and :mod:`fnnjax.construct.capacity` (dynamic network capacity) are imported as
modules: ``from fnnjax.construct import capacity, enas, envelope, nhn``.
"""

from fnnjax.construct import capacity, enas, envelope, nhn
from fnnjax.construct.layers import (
    apportion,
    count_filters,
    layer_filters,
    scale_stem,
    set_block_filters,
    template_layer_paths,
    with_layer_filters,
)
from fnnjax.construct.templates import (
    TEMPLATE_NAMES,
    apply_template,
    template_filters,
    template_values,
    width_multiplier,
)

__all__ = [
    "TEMPLATE_NAMES",
    "capacity",
    "enas",
    "envelope",
    "nhn",
    "apply_template",
    "apportion",
    "count_filters",
    "layer_filters",
    "scale_stem",
    "set_block_filters",
    "template_filters",
    "template_layer_paths",
    "template_values",
    "width_multiplier",
    "with_layer_filters",
]
