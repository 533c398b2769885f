"""What a run minimizes and reports: a loss and per-example metrics, passed to the trainer.

An :class:`Objective` is a pair of pure functions of ``(outputs, targets)``, each per example, so
the engine can average them over a batch, sum them over padded evaluation batches (padding rows
masked out) and vmap them over a population. :func:`classification` (softmax cross-entropy,
accuracy; integer labels) is the default; :func:`regression` (mean squared error, mean absolute
error; float targets ``[n]`` or ``[n, outputs]``) serves the function-regression networks of the
dynamic-capacity draft. Any other objective is a new :class:`Objective` value.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from fnnjax.errors import ConfigError

__all__ = ["OBJECTIVES", "Objective", "classification", "get_objective", "regression"]

PerExample = Callable[[jax.Array, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class Objective:
    """A training objective.

    Attributes:
        name: what it is called in run descriptions and folders (``"classification"``).
        loss: ``loss(outputs, targets) -> [batch]`` float32, minimized (its batch mean).
        metrics: ``metrics(outputs, targets) -> {name: [batch]}``, reported beside ``"loss"``.
        select: the metric (or ``"loss"``) whose validation value chooses the best epoch.
        maximize: whether a larger ``select`` is better.
        targets: ``"labels"`` (integer class indices in ``[0, num_classes)``) or ``"values"``
            (float targets with the model's output shape, or ``[n]`` for one output).
    """

    name: str
    loss: PerExample
    metrics: Callable[[jax.Array, jax.Array], dict[str, jax.Array]]
    select: str
    maximize: bool
    targets: str

    def evaluate(self, outputs: jax.Array, targets: jax.Array) -> dict[str, jax.Array]:
        """``{"loss": [batch], **metrics}`` for one batch, all float32."""
        values = {"loss": self.loss(outputs, targets), **self.metrics(outputs, targets)}
        return {k: v.astype(jnp.float32) for k, v in values.items()}

    def better(self, new: float, old: float) -> bool:
        """Whether the ``select`` value ``new`` beats ``old``."""
        return new > old if self.maximize else new < old


def _cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


def _accuracy(logits: jax.Array, labels: jax.Array) -> dict[str, jax.Array]:
    return {"accuracy": (jnp.argmax(logits, -1) == labels).astype(jnp.float32)}


def _as_outputs(outputs: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array]:
    outputs = outputs.astype(jnp.float32)
    targets = targets.astype(jnp.float32)
    if targets.ndim == 1:
        targets = targets[:, None]
    return outputs.reshape(outputs.shape[0], -1), targets.reshape(targets.shape[0], -1)


def _squared_error(outputs: jax.Array, targets: jax.Array) -> jax.Array:
    outputs, targets = _as_outputs(outputs, targets)
    return jnp.mean(jnp.square(outputs - targets), axis=-1)


def _absolute_error(outputs: jax.Array, targets: jax.Array) -> dict[str, jax.Array]:
    outputs, targets = _as_outputs(outputs, targets)
    return {"mae": jnp.mean(jnp.abs(outputs - targets), axis=-1)}


def classification() -> Objective:
    """Softmax cross-entropy on integer labels; reports ``accuracy``; best = highest accuracy."""
    return Objective("classification", _cross_entropy, _accuracy, select="accuracy",
                     maximize=True, targets="labels")  # fmt: skip


def regression() -> Objective:
    """Mean squared error (over outputs) on float targets; reports ``mae``; best = lowest loss."""
    return Objective("regression", _squared_error, _absolute_error, select="loss",
                     maximize=False, targets="values")  # fmt: skip


OBJECTIVES: dict[str, Callable[[], Objective]] = {
    "classification": classification,
    "regression": regression,
}


def get_objective(objective: str | Objective | None) -> Objective:
    """An :class:`Objective` from itself, its name, or None (classification).

    Raises:
        ConfigError: an unknown name (the message lists the known ones).
    """
    if objective is None:
        return classification()
    if isinstance(objective, Objective):
        return objective
    if objective not in OBJECTIVES:
        raise ConfigError(
            f"objective: expected one of {', '.join(OBJECTIVES)} or an Objective, got {objective!r}"
        )
    return OBJECTIVES[objective]()
