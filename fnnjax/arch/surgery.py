"""Parameter surgery: move params, batch statistics, masks and optimizer state from spec A to B.

When a structure-learning algorithm turns spec A into spec B (pruning filters, widening a layer,
dropping a cell branch, appending a cell), training continues on B with as much of A's state as
shapes allow:

* Blocks are matched by position (stem block ``j``, stage ``i`` block ``j``, branch ``k`` op ``m``,
  body op ``m``) unless ``kept`` remaps them: ``kept["s{i}"]`` gives, for every block of B's stage
  ``i``, the index of A's block it continues (``-1``: new block), and ``kept[cell_path]`` does the
  same for the branches of a cell (EnvelopeNets removes whole conv blocks from cells).
* Every conv / dense unit of B keeps a list of *source filters* in its matched unit of A:
  ``kept[unit_path]`` (explicit indices, e.g. the filters a pruning algorithm retains, in B's
  order) or by default ``0..min(n_a, n_b) - 1`` followed by new filters. Input channels follow the
  producers: each tensor carries its channels' provenance (index into A's tensor at the same
  position, ``-1`` for new channels) through pooling, concatenation (with A's branch offsets),
  additions, depthwise convs (a depthwise filter follows its channel, so pruning a channel also
  removes the depthwise filter reading it) and flattening.
* A leaf of B (kernel, bias, BN scale/bias/mean/var, filter and kernel masks, optimizer moment) takes A's
  entry where both its filter and its input channel have a source. New filters keep B's fresh
  values; an *old* filter's weights on a *new* input channel are set to zero, so growing a layer
  initially leaves the function unchanged (new channels must learn to contribute). When *no*
  input channel of a unit has a known source (it reads a newly inserted block), its input
  channels are matched positionally instead. Units without a compatible counterpart (new block,
  different kernel size or op) stay fresh.
* Search-space features of an exported child follow the same rules: a stage's factorized
  reductions (``s{i}red{g}``) read their source's channels, a gated-skip merge's input is the
  concatenation (``concat_conv``) or sum (``sum_bn``) of its sources as they arrive, add-on edges
  read their source and widen the block's input; each is matched to A's when A has the same
  feature on the matched blocks. Choice blocks are refused (materialize a selection first).
* Pooling / identity ops' filter masks (``use_masks``) follow their channels like filters.
* Additions must combine channels with the same source: pruning the last conv of a residual body
  needs the same ``kept`` for the shortcut's input; disagreeing sources raise ``ValueError``.
  Projection shortcuts follow their body's last conv.

Unit paths are :attr:`~fnnjax.arch.spec.LayerInfo.path`: ``"s0b1"`` for a conv block,
``"s1b2/pw"`` for a separable block, ``"s1b0/br1_1"`` for a cell op, ``"s2b0/body2"`` for a
residual op, ``"head/fc0"`` for a hidden Dense. The same paths name the statistics a pruning
algorithm reads from ``"intermediates"``. Leaves outside planned units (an FNN head's internals)
are copied when A has the same path and shape.

Optimizer state (:func:`transplant_opt_state`) follows the params through optax's own
description of where a state holds params-shaped trees (``tx.init`` of a placeholder, the idea of
``optax.tree_utils.tree_map_params``): Adam ``mu``/``nu``, SGD momentum ``trace``, inside
``chain``, ``masked`` or ``inject_hyperparams``, are transplanted like params (new entries keep
B's fresh values, i.e. zeros), other leaves (step counts) are copied from A when their shapes
agree. The mapping runs in numpy on the host.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fnnjax.arch.plan import UnitMap, transplant_plan
from fnnjax.arch.spec import Spec


def _unit_of(keys: tuple[str, ...], plan: Mapping[str, UnitMap]) -> tuple[str | None, int]:
    """The planned unit owning a leaf, and how many leading keys name it."""
    for n in range(len(keys) - 1, 0, -1):
        p = "/".join(keys[:n])
        if p in plan:
            return p, n
    return None, 0


def _map_leaf(a_leaf, b_leaf, um: UnitMap, *, zero_new_inputs: bool):
    """One leaf of B from A's (host-side numpy: surgery is rare and this avoids op-by-op compiles)."""
    a_leaf, b_leaf = np.asarray(a_leaf), np.asarray(b_leaf)
    if um.out_src is None or a_leaf.ndim != b_leaf.ndim or b_leaf.shape[-1] != len(um.out_src):
        return b_leaf
    valid = um.out_src >= 0
    g = np.take(a_leaf, np.maximum(um.out_src, 0), axis=-1)
    mask = np.broadcast_to(valid, b_leaf.shape)
    zero = np.zeros(b_leaf.shape, bool)
    if b_leaf.ndim >= 2 and um.in_src is not None:  # conv [..., cin, cout] / dense [in, out]
        if len(um.in_src) != b_leaf.shape[-2]:
            return b_leaf
        g = np.take(g, np.maximum(um.in_src, 0), axis=-2)
        vin = np.broadcast_to((um.in_src >= 0)[:, None], b_leaf.shape)
        if zero_new_inputs:
            zero = mask & ~vin
        mask = mask & vin
    if g.shape != b_leaf.shape:  # e.g. a different kernel size
        return b_leaf
    fill = np.where(zero, np.zeros((), b_leaf.dtype), b_leaf)
    return np.where(mask, g.astype(b_leaf.dtype), fill)


def _path_keys(path) -> tuple[str, ...]:
    return tuple(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def _map_tree(tree_a, tree_b, plan, *, zero_new_inputs: bool):
    a_leaves = {_path_keys(p): v for p, v in jax.tree_util.tree_flatten_with_path(tree_a)[0]}
    b_flat, treedef = jax.tree_util.tree_flatten_with_path(tree_b)
    out = []
    for path, b_leaf in b_flat:
        keys = _path_keys(path)
        unit, n = _unit_of(keys, plan)
        if unit is None:  # not a planned unit (e.g. FNN head internals): copy if shapes agree
            a_leaf = a_leaves.get(keys)
            same = a_leaf is not None and jnp.shape(a_leaf) == jnp.shape(b_leaf)
            out.append(jnp.asarray(a_leaf, jnp.result_type(b_leaf)) if same else b_leaf)
            continue
        um = plan[unit]
        a_leaf = None if um.a_path is None else a_leaves.get(tuple(um.a_path.split("/")) + keys[n:])
        if a_leaf is None:
            out.append(b_leaf)
        else:
            new = _map_leaf(a_leaf, b_leaf, um, zero_new_inputs=zero_new_inputs)
            out.append(jnp.asarray(new, jnp.result_type(b_leaf)))
    return jax.tree_util.tree_unflatten(treedef, out)


def transplant_params(
    spec_a: Spec,
    variables_a: Mapping[str, Any],
    spec_b: Spec,
    variables_b: Mapping[str, Any],
    *,
    kept: Mapping[str, Sequence[int]] | None = None,
    replicate: bool = False,
) -> dict[str, Any]:
    """Fills B's freshly initialised variables from A's (all collections: params, batch_stats,
    masks, ...).

    Args:
        spec_a, variables_a: the old architecture and its variables.
        spec_b, variables_b: the new architecture and fresh variables (``model_b.init``).
        kept: unit path -> indices (into A's filters of that unit, in B's order, ``-1`` = new) of
            B's filters (default: the first ``min(n_a, n_b)``); cell path -> A's branch index per
            B branch; ``"s{i}"`` -> A's block index per block of B's stage ``i``.

    Returns:
        Variables with B's structure. If ``spec_b == spec_a`` and ``kept`` is None the result equals
        ``variables_a``.
    """
    plan = transplant_plan(spec_a, spec_b, kept, replicate=replicate)
    out = {}
    for col, tree_b in variables_b.items():
        if col not in variables_a:
            out[col] = tree_b
            continue
        out[col] = _map_tree(variables_a[col], tree_b, plan, zero_new_inputs=(col == "params"))
    return out


class _ParamsSlot:
    """Stands for the whole params tree in ``tx.init(_ParamsSlot())``: a pytree node without
    children, so every ``tree_map`` of an optax ``init`` passes it through unchanged and the result
    marks where the state holds a params-shaped tree (the idea of ``optax.tree_utils.
    tree_map_params``; the slot tree pairs them between two states of different params)."""


jax.tree_util.register_pytree_node(_ParamsSlot, lambda s: ((), None), lambda aux, c: _ParamsSlot())


def _leaf_keys(tree: Any) -> frozenset:
    """Key paths of a tree's leaves, a masked-out leaf (``optax.MaskedNode``) counting as one."""
    is_masked = lambda x: isinstance(x, optax.MaskedNode)  # noqa: E731
    flat = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_masked)[0]
    return frozenset(_path_keys(path) for path, _ in flat)


def _slots_by_keys(state: Any, params: Any) -> Any:
    """``state`` with a :class:`_ParamsSlot` wherever it holds a tree with the params' keys."""
    keys = _leaf_keys(params)

    def params_like(x: Any) -> bool:
        return isinstance(x, Mapping) and _leaf_keys(x) == keys

    return jax.tree_util.tree_map(lambda x: _ParamsSlot() if params_like(x) else x, state,
                                  is_leaf=params_like)  # fmt: skip


def transplant_opt_state(
    tx: optax.GradientTransformation,
    spec_a: Spec,
    params_a: Any,
    opt_state_a: Any,
    spec_b: Spec,
    params_b: Any,
    *,
    kept: Mapping[str, Sequence[int]] | None = None,
    replicate: bool = False,
) -> Any:
    """The optimizer state of B transplanted from A's (``opt_state_a = tx``'s state of ``params_a``).

    Where ``tx.init`` puts a params-shaped tree (Adam's ``mu``/``nu``, SGD's ``trace``, inside
    ``chain``, ``masked``, ``inject_hyperparams``, ...), it is mapped like params with
    :func:`transplant_params`' plan: kept slices kept, new entries zero (``tx.init(params_b)``'s
    fresh values); masked-out leaves (``optax.MaskedNode``) stay masked. Every other leaf (step
    counts, injected hyperparameters) is copied from A when its shape agrees, else B's fresh one.

    Args:
        tx: the optimizer both states belong to.
        spec_a, params_a, opt_state_a: the old architecture, its params and optimizer state.
        spec_b, params_b: the new architecture and its params.
        kept, replicate: as for :func:`transplant_params`.

    Raises:
        ValueError: ``opt_state_a`` is not a state of ``tx`` (the message says how it differs).
    """
    plan = transplant_plan(spec_a, spec_b, kept, replicate=replicate)
    fresh = tx.init(params_b)
    try:
        slots = tx.init(_ParamsSlot())
    except Exception:  # e.g. an optax.masked whose mask function reads the params' keys
        slots = _slots_by_keys(fresh, params_b)

    def is_slot(x: Any) -> bool:
        return isinstance(x, _ParamsSlot)

    def merge(slot: Any, a: Any, b: Any) -> Any:
        if is_slot(slot):
            return _map_tree(a, b, plan, zero_new_inputs=False)
        same = jnp.shape(a) == jnp.shape(b)
        return jnp.asarray(a, jnp.result_type(b)) if same else b

    try:
        return jax.tree_util.tree_map(merge, slots, opt_state_a, fresh, is_leaf=is_slot)
    except ValueError as error:
        raise ValueError(
            f"opt_state_a: not a state of this optimizer ({str(error).splitlines()[0][:200]}); "
            "pass the tx that made it"
        ) from None
