"""Saliencies for growing and shrinking networks: Optimal Brain Damage's second-order saliency
with a Hutchinson estimate of the Hessian diagonal, and magnitude and first-order Taylor
baselines; summed per unit (filter, hidden unit) and per block.

* OBD (LeCun, Denker and Solla 1989): deleting parameter ``w_i`` changes the loss by about
  ``s_i = 1/2 * H_ii * w_i**2`` at a minimum (the diagonal approximation; OBS uses the full
  inverse Hessian, ``O(n^2)``, which the draft rules out for modern sizes).
* Hutchinson (1990): ``diag(H) = E_v[v * (H v)]`` for Rademacher ``v`` (entries +-1), with
  ``H v`` the forward-mode derivative (``jvp``) of the gradient: one Hessian-vector product per
  sample, no Hessian. Samples run in chunks (``vmap``) inside a ``scan``, all in ``jit``.
* Magnitude: ``|w_i|`` (the heuristic deletion the draft's section 2.1 describes; summed per
  unit it is the l1 filter norm of Li et al. 2016).
* First-order Taylor: ``|g_i * w_i|`` (the loss change of removing ``w_i`` to first order).

Two ways to score a *unit* (a filter, a hidden unit):

* **parameters** (:func:`unit_saliency`): the sum of its parameters' saliencies over everything
  but the output axis: the kernel's inputs and window, its bias and its BatchNorm's scale and
  shift. That is the l1 filter norm for magnitude, and OBD's diagonal sum over the unit's
  incoming parameters. (Its outgoing weights, in the consumers, are left out: they are shared
  with the consumer's own score.)
* **gate** (:func:`unit_gates`, :func:`with_gates`): every unit's output is multiplied by a gate
  ``m_u = 1`` (the ``filter_mask`` of a model built with ``use_masks=True``); deleting the unit
  is exactly ``m_u = 0``. OBD on the gate, ``1/2 * d2L/dm_u2`` (Hutchinson over the gates), is
  the second-order loss change of deleting the whole unit at once, its incoming and outgoing
  weights' interactions included (Mozer and Smolensky's 1989 skeletonization, with OBD's
  curvature); Taylor on the gate, ``|dL/dm_u|``, is Molchanov et al.'s 2017 unit criterion
  (the activation times its gradient, summed). The generic functions above apply unchanged to
  a tree of gates (``w = 1``).

A block's saliency is the sum of its units'.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from fnnjax._trees import at_path
from fnnjax.arch.shapes import infer_layers
from fnnjax.arch.spec import Spec
from fnnjax.checks import check_int

__all__ = [
    "block_saliency",
    "sum_per_block",
    "unit_gates",
    "with_gates",
    "hutchinson_diagonal",
    "magnitude_saliency",
    "obd_saliency",
    "taylor_saliency",
    "unit_saliency",
]


def _rademacher_like(key: jax.Array, tree: Any) -> Any:
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = jax.random.split(key, len(leaves))
    return jax.tree_util.tree_unflatten(
        treedef, [jax.random.rademacher(k, jnp.shape(x), jnp.result_type(x))
                  for k, x in zip(keys, leaves, strict=True)])  # fmt: skip


def hutchinson_diagonal(
    loss: Callable[[Any], jax.Array], params: Any, key: jax.Array, *, num_samples: int = 100,
    chunk: int = 10,
) -> Any:  # fmt: skip
    """Hutchinson's estimate of the diagonal of the Hessian of ``loss`` at ``params``.

    Args:
        loss: ``params -> scalar`` (close over the batch; it is differentiated twice).
        params: a pytree of float arrays.
        key: the samples' randomness.
        num_samples: Rademacher vectors averaged (a multiple of ``chunk``); the error falls as
            ``1 / sqrt(num_samples)`` (the variance of one sample of ``H_ii`` is
            ``sum_{j != i} H_ij**2``).
        chunk: vectors per ``vmap``ped batch (memory: ``chunk`` copies of ``params``).

    Returns:
        A pytree like ``params``: the estimated ``H_ii``.
    """
    check_int("chunk", chunk)
    if num_samples < 1 or num_samples % chunk:
        raise ValueError(f"num_samples: expected a positive multiple of chunk={chunk}, got "
                         f"{num_samples}")  # fmt: skip
    if not jax.dtypes.issubdtype(jnp.result_type(key), jax.dtypes.prng_key):
        key = jax.random.wrap_key_data(key)  # a legacy uint32 PRNGKey
    grad = jax.grad(loss)

    def one(k: jax.Array) -> Any:
        v = _rademacher_like(k, params)
        hv = jax.jvp(grad, (params,), (v,))[1]
        return jax.tree_util.tree_map(jnp.multiply, v, hv)

    def body(total: Any, keys: jax.Array) -> tuple[Any, None]:
        batch = jax.vmap(one)(keys)
        return jax.tree_util.tree_map(lambda t, b: t + b.sum(0), total, batch), None

    keys = jax.random.split(key, num_samples).reshape(num_samples // chunk, chunk)
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    total, _ = jax.lax.scan(body, zeros, keys)
    return jax.tree_util.tree_map(lambda t: t / num_samples, total)


def obd_saliency(params: Any, hessian_diagonal: Any) -> Any:
    """OBD's ``1/2 * H_ii * w_i**2`` per parameter."""
    return jax.tree_util.tree_map(lambda w, h: 0.5 * h * w * w, params, hessian_diagonal)


def magnitude_saliency(params: Any) -> Any:
    """``|w_i|`` per parameter."""
    return jax.tree_util.tree_map(jnp.abs, params)


def taylor_saliency(params: Any, grads: Any) -> Any:
    """First-order Taylor ``|g_i * w_i|`` per parameter."""
    return jax.tree_util.tree_map(lambda w, g: jnp.abs(w * g), params, grads)


def unit_saliency(spec: Spec, saliency: Mapping[str, Any]) -> dict[str, jax.Array]:
    """Per-unit sums of a per-parameter saliency tree (shaped like the spec's params).

    Returns:
        ``{unit path: [cout]}`` for every conv / dense unit of the spec (paths of
        :func:`fnnjax.arch.infer_layers`, e.g. ``"s0b1/body0"``, ``"head/fc0"``): each output
        unit's kernel, bias and BatchNorm scale and shift summed.
    """
    out = {}
    for info in infer_layers(spec):
        node = at_path(saliency, info.path)
        if node is None or info.op in ("norm", "fnn"):  # an FNN head has no per-unit weights
            continue
        total = jnp.zeros((info.cout,), jnp.float32)
        for leaf in jax.tree_util.tree_leaves(node):
            axes = tuple(range(leaf.ndim - 1))
            total = total + jnp.sum(leaf, axis=axes).astype(jnp.float32)
        out[info.path] = total
    return out


def unit_gates(spec: Spec, masks: Mapping[str, Any]) -> dict[str, jax.Array]:
    """``{unit path: [cout] gate}``: the ``filter_mask`` of every conv / dense unit in a
    ``"masks"`` collection (:func:`fnnjax.arch.build_model` with ``use_masks=True``)."""
    out = {}
    for info in infer_layers(spec):
        node = at_path(masks, info.path)
        if info.op != "norm" and isinstance(node, Mapping) and "filter_mask" in node:
            out[info.path] = node["filter_mask"]
    if not out:
        raise ValueError("masks: no unit filter masks found; build the model with use_masks=True")
    return out


def with_gates(masks: Mapping[str, Any], gates: Mapping[str, jax.Array]) -> dict[str, Any]:
    """``masks`` with the ``filter_mask`` of every unit in ``gates`` replaced (pure)."""

    def put(tree: Mapping[str, Any], parts: list[str], value: jax.Array) -> dict[str, Any]:
        new = dict(tree)
        new[parts[0]] = {**tree[parts[0]], "filter_mask": value} if len(parts) == 1 else \
            put(tree[parts[0]], parts[1:], value)
        return new

    out: dict[str, Any] = dict(masks)
    for path, value in gates.items():
        out = put(out, path.split("/"), value)
    return out


def block_saliency(spec: Spec, saliency: Mapping[str, Any]) -> dict[str, jax.Array]:
    """Per-block sums (stem ``stem{j}``, stage blocks ``s{i}b{j}``, the ``head``) of a
    per-parameter saliency tree: every unit whose path starts with the block's module name."""
    return sum_per_block(unit_saliency(spec, saliency))


def sum_per_block(units: Mapping[str, Any]) -> dict[str, Any]:
    """``{block: sum}`` of per-unit saliencies (``{unit path: [units]}``, from
    :func:`unit_saliency` or gates), a unit belonging to the block its path starts with."""
    out: dict[str, Any] = {}
    for path, values in units.items():
        block = path.split("/")[0]
        out[block] = out.get(block, 0.0) + jnp.sum(jnp.asarray(values, jnp.float32))
    return out
