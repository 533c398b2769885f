"""Construction algorithms as pure spec transforms (one paper per module)."""

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
    "template_filters",
    "template_values",
    "width_multiplier",
]
