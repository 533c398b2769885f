"""Architecture IR (specs), Flax builder, parameter surgery, model zoo and profiler.

The IR is split by concern: :mod:`~fnnjax.arch.spec` (dataclasses, validation, block queries),
:mod:`~fnnjax.arch.shapes` (shape inference, cached per spec), :mod:`~fnnjax.arch.serialize`
(JSON), :mod:`~fnnjax.arch.notation` (one-line notation). This package imports nothing from
:mod:`fnnjax.construct`; templates and width multipliers are applied above it
(:func:`fnnjax.models.build_spec`).
"""

from fnnjax.arch.build import SpecNet, build_model, featuremap_stats, host_init, init_variables
from fnnjax.arch.grow import Grown, insert_residual, net2wider
from fnnjax.arch.notation import notation, stage_notation
from fnnjax.arch.profile import Profile, analytic_counts, profile, profile_table
from fnnjax.arch.sampled import SampledNet, sampled_support
from fnnjax.arch.select import (
    addon_blocks,
    choice_blocks,
    gated_blocks,
    materialize,
    materialize_variables,
    random_selections,
    selection_of,
)
from fnnjax.arch.serialize import (
    from_dict,
    from_json,
    load_variables,
    save_variables,
    to_dict,
    to_json,
)
from fnnjax.arch.shapes import LayerInfo, block_shapes, head_features, infer_layers
from fnnjax.arch.spec import (
    AddOn,
    Block,
    Cell,
    Choice,
    Conv,
    Dense,
    Dropout,
    FnnHead,
    Head,
    Identity,
    Pad,
    Pool,
    Residual,
    SepConv,
    Spec,
    Stage,
    block_filters,
    is_filter_block,
    iter_blocks,
    validate,
)
from fnnjax.arch.surgery import transplant_opt_state, transplant_params, transplant_plan
from fnnjax.arch.zoo import MODEL_NAMES, with_head, zoo_spec

__all__ = [
    "MODEL_NAMES",
    "AddOn",
    "Block",
    "Cell",
    "Choice",
    "Conv",
    "Dense",
    "Dropout",
    "FnnHead",
    "Grown",
    "Head",
    "Identity",
    "LayerInfo",
    "Pad",
    "Pool",
    "Profile",
    "Residual",
    "SampledNet",
    "SepConv",
    "Spec",
    "SpecNet",
    "Stage",
    "analytic_counts",
    "block_filters",
    "block_shapes",
    "build_model",
    "addon_blocks",
    "choice_blocks",
    "gated_blocks",
    "featuremap_stats",
    "from_dict",
    "from_json",
    "head_features",
    "host_init",
    "infer_layers",
    "insert_residual",
    "init_variables",
    "is_filter_block",
    "iter_blocks",
    "load_variables",
    "materialize",
    "materialize_variables",
    "net2wider",
    "notation",
    "profile",
    "profile_table",
    "random_selections",
    "sampled_support",
    "save_variables",
    "selection_of",
    "stage_notation",
    "to_dict",
    "to_json",
    "transplant_opt_state",
    "transplant_params",
    "transplant_plan",
    "validate",
    "with_head",
    "zoo_spec",
]
