"""Construction algorithms as pure spec transforms (one paper per module)."""

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
