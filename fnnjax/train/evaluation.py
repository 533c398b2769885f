"""Evaluation of a train state: masked sums over fixed-shape padded batches (one compile per
shape), for one network (:func:`make_eval_step`, :func:`evaluate`) or a population of selections
over shared weights (:func:`make_population_eval_step`). Used by :class:`~fnnjax.train.Engine`
and :func:`~fnnjax.train.fit`."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import flax.linen as nn
import jax
import numpy as np

from fnnjax.errors import ConfigError, DataError
from fnnjax.train import sharding
from fnnjax.train.dataset import Split
from fnnjax.train.objectives import Objective, classification

if TYPE_CHECKING:
    from fnnjax.train.engine import TrainState

__all__ = ["BATCH_NORM_MODES", "evaluate", "make_eval_step", "make_population_eval_step"]


BATCH_NORM_MODES = ("running", "batch")


def _eval_sums(model: nn.Module, objective: Objective, variables, x, y, mask, batch_norm="running"):
    if batch_norm == "batch":  # training-mode forward: BatchNorm normalizes with x's own statistics
        outputs, _ = model.apply(variables, x, train=True, mutable=["batch_stats"],
                                 rngs={"dropout": jax.random.key(0)})  # fmt: skip
    else:
        outputs = model.apply(variables, x, train=False)
    values = objective.evaluate(outputs, y)
    return {**{k: (v * mask).sum() for k, v in values.items()}, "count": mask.sum()}


def make_eval_step(
    model: nn.Module, mesh: jax.sharding.Mesh, *, objective: Objective | None = None
) -> Callable[..., dict[str, jax.Array]]:
    """A jitted ``eval(state, x, y, mask) -> {"loss": sum, <metric>: sum, "count": n}``."""
    objective = objective or classification()
    batch = sharding.batch_sharding(mesh)

    def evaluate_batch(state: TrainState, x, y, mask):
        x = jax.lax.with_sharding_constraint(x, batch)
        return _eval_sums(model, objective, state.variables(), x, y, mask)

    return jax.jit(evaluate_batch, out_shardings=sharding.replicated_sharding(mesh))


def make_population_eval_step(
    model: nn.Module,
    mesh: jax.sharding.Mesh,
    collection: str,
    *,
    objective: Objective | None = None,
    batch_norm: str = "running",
    shared: tuple[bool, ...] | None = None,
    chunk: int | None = None,
) -> Callable[..., dict[str, jax.Array]]:
    """A jitted ``eval(state, population, x, y, mask) -> {name: [P] sums}`` over a population.

    ``population`` replaces ``state.collections[collection]`` and has a leading axis ``P`` on
    every leaf; the candidates share every other variable (params, batch statistics). The
    population axis is split across ``mesh``'s devices (each evaluates its share of candidates
    on the whole, replicated batch), so ``P`` must be a multiple of the number of devices. One
    compile serves any population of the same size. ``batch_norm``: ``"running"`` (inference
    mode: the shared running statistics) or ``"batch"`` (each candidate normalizes with the
    batch's own statistics under its own selection, nothing is updated; dropout, if the model
    has any, is then active). ``shared``: one flag per leaf of the population (in flattening
    order), True for a leaf given *without* the population axis because every candidate has
    the same value: it is not vmapped, so what depends only on shared leaves is computed once
    (a gate every candidate shares keeps the layers after it unbatched; a batched kernel mask
    turns a convolution into a per-candidate grouped one, several times slower on CPU).
    ``chunk``: None vmaps the whole population at once; an int evaluates it ``chunk`` candidates
    at a time inside the same compiled call (``jax.lax.map`` with ``batch_size``): the same
    results with ``chunk`` times smaller activations. On CPU, where the whole population's
    activations make the call memory-bound, one at a time was 1.5x faster than all at once and
    1.3x faster than one call per candidate (BENCHMARKS.md).
    """
    if batch_norm not in BATCH_NORM_MODES:
        raise ConfigError(f"batch_norm: expected one of {BATCH_NORM_MODES}, got {batch_norm!r}")
    objective = objective or classification()
    split = sharding.batch_sharding(mesh)

    def evaluate_batch(state: TrainState, population, x, y, mask):
        leaves, treedef = jax.tree_util.tree_flatten(population)
        flags = shared if shared is not None else (False,) * len(leaves)
        leaves = [leaf if s else jax.lax.with_sharding_constraint(leaf, split)
                  for leaf, s in zip(leaves, flags, strict=True)]  # fmt: skip
        base = state.variables()

        def one(varying):
            it = iter(varying)
            selection = jax.tree_util.tree_unflatten(
                treedef, [leaf if s else next(it) for leaf, s in zip(leaves, flags, strict=True)])
            return _eval_sums(model, objective, {**base, collection: selection}, x, y, mask,
                              batch_norm)  # fmt: skip

        varying = [leaf for leaf, s in zip(leaves, flags, strict=True) if not s]
        if chunk is None:
            return jax.vmap(one)(varying)
        return jax.lax.map(one, varying, batch_size=chunk)

    return jax.jit(evaluate_batch, out_shardings=split)


def _padded_batches(split: Split, batch_size: int, multiple: int,
                    fixed: bool = False) -> Iterator[tuple[Any, ...]]:  # fmt: skip
    """Fixed-shape batches covering ``split``, padded with masked-out rows (one compile);
    ``fixed``: of ``batch_size`` rows even when the split is smaller (one shape for splits of
    several sizes)."""
    size = max(multiple, batch_size if fixed else min(batch_size, len(split)))
    size = -(-size // multiple) * multiple
    for start in range(0, len(split), size):
        x, y = split.x[start : start + size], split.y[start : start + size]
        pad = size - len(x)
        mask = np.concatenate([np.ones(len(x), np.float32), np.zeros(pad, np.float32)])
        yield (np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)]),
               np.concatenate([y, np.zeros((pad, *y.shape[1:]), y.dtype)]), mask)  # fmt: skip


def _check_shape(split: Split, input_shape: tuple[int, ...] | None) -> None:
    if input_shape is not None and tuple(split.x.shape[1:]) != tuple(input_shape):
        raise DataError(
            f"evaluation data has examples of shape {tuple(split.x.shape[1:])} but the model was "
            f"initialized for {tuple(input_shape)}"
        )


def _check_not_empty(split: Split) -> None:
    if len(split) == 0:
        raise DataError("the evaluation split is empty (no validation split? load_dataset(..., "
                        "validation_fraction=0.1) holds one out)")  # fmt: skip


def _means(sums: Mapping[str, Any]) -> dict[str, Any]:
    count = np.maximum(np.asarray(sums["count"], np.float64), 1.0)
    return {k: np.asarray(v, np.float64) / count for k, v in sums.items() if k != "count"}


def _accumulate(outputs: list[Any]) -> dict[str, Any]:
    totals: dict[str, Any] = {}
    for out in sharding.fetch(outputs):  # a population's sums may span several processes
        for name, value in out.items():
            totals[name] = totals.get(name, 0.0) + np.asarray(value, np.float64)
    return totals


def evaluate(
    eval_step: Callable[..., dict[str, jax.Array]],
    state: TrainState,
    split: Split,
    *,
    batch_size: int,
    mesh: jax.sharding.Mesh,
    input_shape: tuple[int, ...] | None = None,
    fixed: bool = False,
) -> dict[str, float]:
    """Mean loss and metrics of ``state`` on ``split`` (``{"loss": ..., "accuracy": ...}``);
    ``fixed``: batches of ``batch_size`` rows even for a smaller split (:func:`_padded_batches`).

    Raises:
        DataError: ``split`` holds examples of another shape than ``input_shape``.
    """
    _check_shape(split, input_shape)
    _check_not_empty(split)
    batch = sharding.batch_sharding(mesh)
    outputs = [
        eval_step(state, *jax.device_put((x, y, m), batch))
        for x, y, m in _padded_batches(split, batch_size, mesh.size, fixed)
    ]
    return {k: float(v) for k, v in _means(_accumulate(outputs)).items()}
