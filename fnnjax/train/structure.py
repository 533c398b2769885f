"""Structure changes during :func:`fnnjax.train.fit`: what a callback returns, and the checks and
restore targets that let a run go on, checkpoint and resume in a new structure."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from fnnjax.errors import CheckpointError, ConfigError
from fnnjax.train import sharding
from fnnjax.train.engine import STATS, TrainState, init_state

__all__ = ["NewModel", "initial_state"]


@dataclasses.dataclass(frozen=True)
class NewModel:
    """What an ``on_epoch_end`` callback returns to change the network between epochs.

    Attributes:
        model: the new Flax module (same input shape and output convention).
        state: its train state: params, collections and an optimizer state of the run's
            optimizer, usually transplanted from the old state (``fnnjax.arch.transplant_params``
            and ``transplant_opt_state``); ``step`` and ``rng`` carried over unchanged.
        description: JSON-ready description of the new model (``{"spec": <spec JSON dict>}`` or
            ``{"name": ..., "options": ...}``), stored with every later checkpoint so that a
            resumed run rebuilds this structure (``fit``'s ``rebuild``).
    """

    model: nn.Module
    state: TrainState
    description: dict[str, Any]


def adopt(
    change: Any,
    old: TrainState,
    mesh: jax.sharding.Mesh,
    input_shape: tuple[int, ...],
    tx: optax.GradientTransformation,
) -> tuple[Any, TrainState, Any]:
    """Checks what a callback returned against its model and puts the new state on the mesh.

    The state must have the model's params, collections and ``tx``'s optimizer state, leaf for
    leaf (shapes and dtypes), so that nothing is silently dropped or checkpointed unusable.
    Accumulated statistics (``"stats"``), when the model sows them and the state has none, start
    at zero (``state.variables()`` leaves them out, so a transplanted state usually lacks them).
    """
    if not isinstance(change, NewModel):
        raise ConfigError(
            f"on_epoch_end returned {type(change).__name__}; expected None or a "
            "fnnjax.train.NewModel(model, state, description)"
        )
    try:
        json.dumps(change.description)
    except TypeError as error:
        raise ConfigError(f"NewModel.description must be JSON-ready: {error}") from None
    if int(change.state.step) != int(old.step):
        raise ConfigError(
            f"NewModel.state.step is {int(change.state.step)} but the run is at step "
            f"{int(old.step)}; carry step (and rng) over from the old state"
        )
    expected = jax.eval_shape(lambda k: init_state(k, change.model, input_shape, tx),
                              jax.random.key(0))  # fmt: skip
    state = change.state
    if STATS in expected.collections and STATS not in state.collections:
        zeros = jax.tree_util.tree_map(lambda a: np.zeros(a.shape, a.dtype),
                                       expected.collections[STATS])  # fmt: skip
        state = state.replace(collections={**state.collections, STATS: zeros})
    for name in ("params", "collections", "opt_state"):
        problem = _first_difference(getattr(expected, name), getattr(state, name))
        if problem:
            raise ConfigError(
                f"NewModel.state.{name} does not fit NewModel.model and the run's optimizer: "
                f"{problem} (build it from a fresh init_state(key, model, input_shape, tx) and "
                "transplant_params / transplant_opt_state)"
            )
    return change.model, sharding.replicate(state, mesh), change.description


def initial_state(key: jax.Array, model: nn.Module, input_shape: tuple[int, ...],
                  tx: optax.GradientTransformation,
                  variables: Mapping[str, Any] | None = None) -> TrainState:  # fmt: skip
    """:func:`~fnnjax.train.engine.init_state`, starting from ``variables`` where given (``fit``'s
    ``initial_variables``: params and any collections, checked against the model's shapes).

    When ``variables`` hold the params and every collection the model makes (its sown
    statistics aside, which start at zero), no init is compiled: the state is built from them and
    the model's shapes alone (an init's compile takes seconds per network on CPU). The result
    equals ``init_state`` followed by the replacement, bitwise.

    Raises:
        ConfigError: a collection the model does not have, or a leaf of another shape (the
            message names ``initial_variables[name]`` and the leaf).
    """
    if variables is None:
        return init_state(key, model, input_shape, tx)
    shapes = jax.eval_shape(lambda k: init_state(k, model, input_shape, tx), key)
    if "params" in variables and not set(shapes.collections) - {STATS} - set(variables):
        def zeros(tree):
            return jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), tree)

        typed = key if jax.dtypes.issubdtype(jnp.asarray(key).dtype, jax.dtypes.prng_key) else (
            jax.random.wrap_key_data(key))  # fmt: skip
        state = shapes.replace(step=jnp.zeros((), jnp.int32),
                               collections={**shapes.collections, **zeros(
                                   {k: v for k, v in shapes.collections.items() if k == STATS})},
                               rng=jax.random.key_data(jax.random.split(typed)[1]))  # fmt: skip
    else:  # collections only an init makes (e.g. BatchNorm's statistics, not given)
        state = init_state(key, model, input_shape, tx)
    return _start_from(state, variables, tx)


def _start_from(state: TrainState, variables: Mapping[str, Any], tx) -> TrainState:
    """``state`` with its params and collections replaced by ``variables`` (checked)."""
    params = variables.get("params", state.params)
    collections = dict(state.collections)
    for name, tree in variables.items():
        if name != "params":
            if name not in collections:
                raise ConfigError(f"initial_variables[{name!r}]: the model has no such collection "
                                  f"(it has {sorted(collections)})")  # fmt: skip
            collections[name] = tree
    for name, expected, got in [("params", state.params, params),
                                *((n, state.collections[n], collections[n]) for n in variables
                                  if n != "params")]:  # fmt: skip
        difference = _first_difference(expected, got)
        if difference is not None:
            raise ConfigError(f"initial_variables[{name!r}]: {difference}")
    # Copies: the train step donates the state's buffers, and the caller keeps its arrays.
    params = jax.tree_util.tree_map(jnp.array, params)
    collections = jax.tree_util.tree_map(jnp.array, collections)
    return state.replace(params=params, collections=collections, opt_state=tx.init(params))


def _first_difference(expected: Any, got: Any) -> str | None:
    """The first leaf where two pytrees differ in structure, shape or dtype, or None."""
    flat_e = dict(jax.tree_util.tree_flatten_with_path(expected)[0])
    flat_g = dict(jax.tree_util.tree_flatten_with_path(got)[0])
    for path in flat_e.keys() - flat_g.keys():
        return f"{jax.tree_util.keystr(path)} is missing"
    for path in flat_g.keys() - flat_e.keys():
        return f"{jax.tree_util.keystr(path)} is not the model's"
    for path, e in flat_e.items():
        g = flat_g[path]  # shape and dtype only: no device-to-host copy of the state
        shape, dtype = tuple(jnp.shape(g)), jnp.result_type(g)
        if shape != tuple(e.shape) or dtype != e.dtype:
            return (f"{jax.tree_util.keystr(path)} is {dtype}{list(shape)}, "
                    f"expected {e.dtype}{list(e.shape)}")  # fmt: skip
    return None


def rebuild_model(rebuild: Any, description: Any, out: Path) -> nn.Module:
    if rebuild is None:
        raise CheckpointError(
            f"the newest checkpoint in {out} holds a changed structure ({_short_json(description)}); "
            "pass rebuild=fnnjax.models.model_from_description (or your own rebuild function) to "
            "resume it"
        )
    return rebuild(description)


def _short_json(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 120 else text[:117] + "..."


def abstract_state(
    model: nn.Module, input_shape: tuple[int, ...], tx: optax.GradientTransformation,
    mesh: jax.sharding.Mesh,
) -> Any:
    """The train state of ``model`` as shapes and shardings only (a restore target, no compute)."""
    shapes = jax.eval_shape(lambda k: init_state(k, model, input_shape, tx), jax.random.key(0))
    repl = sharding.replicated_sharding(mesh)
    return jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=repl),
                                  shapes)  # fmt: skip
