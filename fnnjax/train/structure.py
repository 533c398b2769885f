"""Structure changes during :func:`fnnjax.train.fit`: what a callback returns, and the checks and
restore targets that let a run go on, checkpoint and resume in a new structure."""

from __future__ import annotations

import dataclasses
import json
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

__all__ = ["NewModel"]


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
