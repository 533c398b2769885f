"""ENAS macro search (Pham et al. 2018, "Efficient Neural Architecture Search via Parameter
Sharing", section 2.3; NHN section 2.1) as pure functions on the architecture IR.

Search space
    ``L`` layers of one width ``C``; layer ``k`` picks one of six ops (:data:`OPS`, indices 0-5:
    conv3x3, sep3x3, conv5x5, sep5x5, avgpool, maxpool) and makes ``k`` skip decisions, bit ``j``
    reading the output of layer ``j`` (the paper: "up to k-1 previous indices" for its 1-based
    layer k; the controller's attention anchor ``j`` is layer ``j``). The released child instead
    reads ``prev_layers[j]``, a list that starts with the stem's output: the stem and layers
    ``0 .. k-2``, one off from its own controller's anchors. ``skips="released"`` builds that
    reading (to retrain arcs the released code found as it connected them); the default,
    ``"paper"``, is the consistent one. After layers ``L//3 - 1`` and ``2*(L//3) - 1`` (the released ``pool_distance``) every
    earlier output is halved by a factorized reduction (channel-preserving during the search,
    doubling the width when retraining).

    An *arc* is ``L + L(L-1)/2`` integers: for each layer its op, then its skip bits (the released
    code's ``sample_arc`` and ``best_arc.txt`` order).

Supernet (:func:`macro_space`)
    A :class:`~fnnjax.arch.spec.Spec` with one :class:`~fnnjax.arch.spec.Choice` per layer
    (candidates ``1x1 conv-BN-ReLU`` then the op: ``kxk conv-BN-ReLU``, a separable ``kxk``
    depthwise + pointwise then BN-ReLU, or a 3x3 stride-1 pooling; one set of weights per layer
    per op), ``sum_bn`` gated skips (``BN(y + sum of the skips on)``, ENAS's search child), the
    reductions as :attr:`~fnnjax.arch.spec.Stage.reduce`, a 3x3 conv + BN stem (no ReLU, as
    released) and a global-average-pool + dense head (dropout off during the search, NHN 2.1).
    An arc is a selection of that supernet (:func:`arc_to_selection`, pure ``jnp``: it vmaps over
    a batch of arcs), so a step with a new arc never recompiles.

Execution (``SearchConfig.mode``, :func:`resolve_execution`)
    ``"sampled"`` (CPU's ``auto``): child steps, rewards and derivation run only the arc's own
    ops through :class:`fnnjax.arch.SampledNet` (per-op compiled programs composed in Python; the
    optimizer updates the whole supernet in one jitted call, so unselected ops still decay and
    carry momentum and a global clipping norm covers them, as in the jitted step). The same
    numbers as the jitted supernet (tested to 1e-5 over several steps) at about the cost of the
    arc's own network. ``"all"``, ``"switch"``, ``"switch_remat"``: the whole supernet jitted
    with that :class:`~fnnjax.arch.Choice` mode (accelerators' ``auto`` is ``"switch"``;
    ``update_stats="all"`` always runs ``"all"``). The controller's sampling and update stay
    jitted in every mode; with ``"sampled"`` the arcs are scored between them on the host with
    the same keys, so both give the same search up to float rounding (tested over an epoch; an
    accuracy reward can flip where two logits nearly tie, so long searches may part ways). A
    search resumes on another path than it started on (saying so: mode is no part of its
    identity).

Two exports of an arc
    *search form* (:func:`search_spec`): the supernet's sub-network for the arc as a plain spec
    (:func:`fnnjax.arch.materialize`; its weights by :func:`fnnjax.arch.materialize_variables`).
    *retraining form* (:func:`retrain_spec`): ENAS's fixed-arc child: the selected skips
    concatenated with the layer's output, then ReLU, 1x1 conv, BN (``concat_conv``), widths
    doubled at each reduction, width and dropout parameters. The released code builds the
    fixed-arc separable ops as plain convs and leaves the pooling ops undefined; those are bugs,
    and here both forms build the same six ops. Its search child has one more: each layer's six
    ``tf.case`` branches are ``lambda: y`` closures over one loop variable, so every branch
    returns the last op's output (max pooling) whatever the arc says; here the sampled op runs.
    Unlike the released child, whose six branches all run every step, only the selected
    candidate's BatchNorm running statistics update here by default (:class:`fnnjax.arch.Choice`),
    so an op the controller rarely samples is scored (inference-mode BN) with older statistics;
    ``SearchConfig(update_stats="all")`` (``fnnjax enas --bn-update all``) updates all six, as
    released, at the cost of computing all six every step.

Average pooling divides by the valid pixels only (TensorFlow's ``SAME`` pooling, as released).
Differences kept on purpose: the dense classifier has a bias (the released one has none);
BatchNorm's epsilon is the library's 1e-5 (released: 1e-3); both forms order every unit conv ->
BN -> ReLU (the released fixed-arc child orders ReLU -> conv -> BN), so that a search-form
sub-network and its retraining form compute the same kind of layer; the minimum learning rate
is the released script's 0.0005 (the paper's and NHN section 2.1's 0.001: ``SearchConfig.paper()``).
Where the ENAS paper and its released script disagree (tanh constant, temperature, entropy
weight, controller learning rate, child L2 and minimum rate, the skip penalty in the reward or
the loss) the defaults are the script's, and :meth:`SearchConfig.paper` (``fnnjax enas --preset
paper``) gives the paper's: the table is in :class:`SearchConfig`'s docstring, with the effect of
the two differences from the released code kept in both (the full-distribution entropy; the skip
KL at the sampling probability, whose released form aims at ~0.31 skips rather than 0.4). The
controller's Adam is TensorFlow's (:func:`scale_by_tensorflow_adam`).
"""

from fnnjax.construct.enas.config import (
    AUTO_EXECUTION,
    EXECUTION_MODES,
    QUICK_SEARCH,
    SearchConfig,
    resolve_execution,
)
from fnnjax.construct.enas.controller import (
    ADAM_FORMS,
    Controller,
    controller_adam,
    init_controller,
    moving_baselines,
    reinforce_loss,
    sample_arcs,
    scale_by_tensorflow_adam,
)
from fnnjax.construct.enas.search import (
    arc_accuracies,
    child_optimizer,
    cosine_restarts,
    derive,
    sampled_accuracies,
    search,
)
from fnnjax.construct.enas.space import (
    OPS,
    SKIP_CONVENTIONS,
    arc_from_string,
    arc_size,
    arc_to_selection,
    arc_to_string,
    check_arc,
    host_selection,
    layer_ops,
    macro_space,
    pool_layers,
    random_arcs,
    retrain_spec,
    search_spec,
    selection_to_arc,
    stage_of_layers,
)

__all__ = [
    "ADAM_FORMS",
    "AUTO_EXECUTION",
    "EXECUTION_MODES",
    "QUICK_SEARCH",
    "OPS",
    "SKIP_CONVENTIONS",
    "Controller",
    "SearchConfig",
    "arc_accuracies",
    "arc_from_string",
    "arc_size",
    "arc_to_selection",
    "arc_to_string",
    "check_arc",
    "child_optimizer",
    "controller_adam",
    "cosine_restarts",
    "derive",
    "host_selection",
    "init_controller",
    "layer_ops",
    "macro_space",
    "moving_baselines",
    "pool_layers",
    "random_arcs",
    "reinforce_loss",
    "resolve_execution",
    "retrain_spec",
    "sample_arcs",
    "sampled_accuracies",
    "scale_by_tensorflow_adam",
    "search",
    "search_spec",
    "selection_to_arc",
    "stage_of_layers",
]
