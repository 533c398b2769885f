"""Model registry and the FNN paper's dense baseline.

Every model in fnnjax is a Flax Linen module with one calling convention, which is all the training
engine (``fnnjax.train``) relies on:

    logits = model.apply(variables, x, train=train, rngs={"dropout": key}, mutable=[...])

* ``x``: ``[batch, height, width, channels]`` float32 images (or ``[batch, features]``); models that
  need a flat vector flatten it themselves.
* ``train``: keyword-only bool. Dropout draws from the ``"dropout"`` rng stream; BatchNorm keeps
  running statistics in the ``"batch_stats"`` collection and uses them when ``train`` is False.
* Statistics a search algorithm needs (featuremap norms, ...) are ``sow``-n into ``"intermediates"``.

The registry maps a CLI name (``"dense"``, ``"fnn-1024"``, ``"vgg19"``, ...) to a factory
``factory(num_classes, input_shape, **options) -> nn.Module``. Factories of other subpackages are
referenced by import path so that importing :mod:`fnnjax` stays cheap and the engine never imports
model code it does not use.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from fnnjax._checks import check_float_input
from fnnjax.errors import ConfigError

__all__ = [
    "DenseBaseline",
    "available_models",
    "check_float_input",
    "get_model",
    "param_count",
    "register_model",
]


class DenseBaseline(nn.Module):
    """The FNN paper's baseline (section 4.1): dense 2000-1500-1000-500, ReLU, 0.1 input dropout.

    Attributes:
        num_classes: number of output logits.
        hidden: widths of the hidden dense layers.
        input_dropout: dropout rate applied to the flattened input.
    """

    num_classes: int = 10
    hidden: Sequence[int] = (2000, 1500, 1000, 500)
    input_dropout: float = 0.1

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        """x: [batch, ...] float -> logits [batch, num_classes] (integer inputs: DataError)."""
        check_float_input(x, "DenseBaseline")
        x = x.reshape((x.shape[0], -1))
        x = nn.Dropout(self.input_dropout, deterministic=not train)(x)
        for width in self.hidden:
            x = nn.relu(nn.Dense(width)(x))
        return nn.Dense(self.num_classes)(x)


def _dense(num_classes: int, input_shape: Sequence[int], **options: Any) -> nn.Module:
    del input_shape  # the dense baseline flattens whatever it is given
    return DenseBaseline(num_classes=num_classes, **options)


# name -> factory, or "module:attribute" resolved on first use.
_REGISTRY: dict[str, Callable[..., nn.Module] | str] = {
    "dense": _dense,
    "fnn-1024": "fnnjax.floating.layer:fnn_1024",
    "fnn-5000": "fnnjax.floating.layer:fnn_5000",
    "fnn": "fnnjax.floating.layer:fnn_custom",
    "vgg16": "fnnjax.arch.zoo:vgg16",
    "vgg19": "fnnjax.arch.zoo:vgg19",
    "resnet50": "fnnjax.arch.zoo:resnet50",
    "inception": "fnnjax.arch.zoo:inception",
    "mobilenet": "fnnjax.arch.zoo:mobilenet",
}


def register_model(name: str, factory: Callable[..., nn.Module] | str) -> None:
    """Registers ``factory(num_classes, input_shape, **options) -> nn.Module`` under ``name``."""
    _REGISTRY[name] = factory


def available_models() -> list[str]:
    """Names accepted by :func:`get_model` and ``fnnjax train --model``."""
    return sorted(_REGISTRY)


def get_model(name: str, num_classes: int, input_shape: Sequence[int], **options: Any) -> nn.Module:
    """Builds the registered model ``name``.

    Args:
        name: a name from :func:`available_models`.
        num_classes: number of output classes.
        input_shape: shape of one example, e.g. ``(28, 28, 1)``.
        **options: model-specific keyword options (e.g. ``iterations=4`` for FNNs).

    Raises:
        ConfigError: unknown ``name`` (the message lists the known ones) or an option the model
            does not take.
    """
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"unknown model {name!r}; expected one of: {', '.join(available_models())}"
        ) from None
    if isinstance(factory, str):
        module_name, attr = factory.split(":")
        factory = getattr(importlib.import_module(module_name), attr)
    try:
        return factory(num_classes=num_classes, input_shape=tuple(input_shape), **options)
    except TypeError as error:
        if "unexpected keyword" not in str(error):
            raise
        raise ConfigError(
            f"model {name!r} does not accept option(s) {', '.join(sorted(options))}: {error}"
        ) from None


def param_count(tree: Any) -> int:
    """Total number of scalars in a pytree of arrays (e.g. ``variables["params"]``)."""
    return sum(math.prod(jnp.shape(leaf)) for leaf in jax.tree_util.tree_leaves(tree))
