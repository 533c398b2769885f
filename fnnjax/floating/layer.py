"""Flax Linen wrapper of the FNN (sections 3.3, 4.1, 4.3) and its model-registry factories.

:class:`FNN` is a drop-in replacement for a stack of Dense layers after any feature extractor
(section 4.3 puts one after VGG16's last max-pool): it flattens ``[batch, ...]`` to
``[batch, features]``, applies input dropout from the ``"dropout"`` rng stream when ``train`` is
True, and calls the pure :func:`fnnjax.floating.fnn_apply`. Its parameters are exactly the pure
pytree, ``{"input": {"O","a","b"}, "hidden": {"I","O","a","b"}, "output": {"I","a","b"}}``, so
``fnnjax.models.param_count(variables["params"])`` reproduces Table 1 (e.g. 731,188 for FNN-1024 on
MNIST) and the pure functions (folding, analysis) apply to ``variables["params"]`` directly.

Factories (registered in :mod:`fnnjax.models` as ``"fnn-1024"``, ``"fnn-5000"`` and ``"fnn"``)
validate every option eagerly and raise one :class:`fnnjax.errors.ConfigError` (a ``ValueError``)
naming the bad argument.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from fnnjax._checks import check_float_input
from fnnjax.checks import check_int, check_ints
from fnnjax.errors import ConfigError, DataError
from fnnjax.floating.network import fnn_apply
from fnnjax.floating.neurons import (
    DEFAULT_CHUNK_SIZE,
    L2_EPS,
    PRESETS,
    FNNConfig,
    init_hidden_neurons,
    init_input_neurons,
    init_output_neurons,
)

__all__ = ["FNN", "fnn_1024", "fnn_5000", "fnn_custom"]


class FNN(nn.Module):
    """A Farfalle Neural Network layer: ``[batch, ...] -> [batch, num_classes]`` logits.

    Attributes mirror :class:`fnnjax.floating.FNNConfig`; ``num_inputs`` (R) is inferred from the
    flattened input when None, and checked against it otherwise.

    Example:
        >>> model = FNN(num_classes=10, num_hidden=1024)
        >>> variables = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
        >>> logits = model.apply(variables, x, train=True, rngs={"dropout": key})
    """

    num_classes: int = 10
    num_hidden: int = 1024
    dim: int = 256
    iterations: int = 4
    normalization: str = "l2"
    input_every_iteration: bool = True
    input_dropout: float = 0.1
    path: str = "factored"
    chunk_size: int = DEFAULT_CHUNK_SIZE
    output_activation: str = "identity"
    eps: float = L2_EPS
    num_inputs: int | None = None
    param_dtype: Any = jnp.float32

    def fnn_config(self, num_inputs: int | None = None) -> FNNConfig:
        """The pure-function config of this layer (``num_inputs`` overrides the attribute)."""
        return FNNConfig(
            num_inputs=num_inputs if num_inputs is not None else self.num_inputs,
            num_outputs=self.num_classes,
            num_hidden=self.num_hidden,
            dim=self.dim,
            iterations=self.iterations,
            normalization=self.normalization,
            input_every_iteration=self.input_every_iteration,
            input_dropout=self.input_dropout,
            path=self.path,
            chunk_size=self.chunk_size,
            output_activation=self.output_activation,
            eps=self.eps,
        )

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        """x: ``[batch, ...]`` (flattened to ``[batch, R]``) -> logits ``[batch, num_classes]``.

        Raises:
            ConfigError: ``num_inputs`` is set and differs from the flattened width.
            DataError: the flattened width differs from the one the params were initialized for.
        """
        shape = tuple(x.shape)
        check_float_input(x, "the FNN layer")
        x = x.reshape((x.shape[0], -1))
        num_inputs = x.shape[-1]
        if self.num_inputs is not None and self.num_inputs != num_inputs:
            raise ConfigError(
                f"num_inputs is {self.num_inputs} but the flattened input has {num_inputs} features"
            )
        if self.has_variable("params", "input"):  # applying: the input width is fixed by params
            built_for = self.get_variable("params", "input")["O"].shape[0]
            if built_for != num_inputs:
                raise DataError(
                    f"x of shape {shape} has {num_inputs} features per example after flattening, "
                    f"but this FNN's params were initialized for {built_for}"
                )
        config = self.fnn_config(num_inputs)
        x = nn.Dropout(config.input_dropout, deterministic=not train)(x)
        d, dtype = config.dim, self.param_dtype
        params = {
            "input": self.param("input", init_input_neurons, num_inputs, d, dtype),
            "hidden": self.param("hidden", init_hidden_neurons, config.num_hidden, d, dtype),
            "output": self.param("output", init_output_neurons, config.num_outputs, d, dtype),
        }
        return fnn_apply(params, x, config)


# Every FNNConfig field a user may set (R and S come from input_shape and num_classes).
_CUSTOM_FIELDS = tuple(
    f.name for f in dataclasses.fields(FNNConfig) if f.name not in ("num_inputs", "num_outputs")
)


def _num_inputs(input_shape: Sequence[int]) -> int:
    check_ints("input_shape", input_shape)  # one example's shape, e.g. (28, 28, 1)
    return math.prod(int(n) for n in input_shape)


def _build(num_classes: int, input_shape: Sequence[int], fields: dict[str, Any]) -> FNN:
    check_int("num_classes", num_classes)
    num_inputs = _num_inputs(input_shape)
    config = FNNConfig(num_inputs=num_inputs, num_outputs=num_classes, **fields)  # validates
    kwargs = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    kwargs.pop("num_outputs")
    return FNN(num_classes=num_classes, **kwargs)


def _options(
    where: str, options: dict[str, Any], allowed: Sequence[str], fixed: Sequence[str] = ()
) -> dict[str, Any]:
    for key in options:
        if key not in allowed:
            hint = f" ({key} is fixed by {where}; use the 'fnn' model / fnn_custom)" if key in fixed else ""
            raise ConfigError(
                f"unknown option {key!r} for {where}; expected one of: {', '.join(sorted(allowed))}{hint}"
            )
    return dict(options)


def _preset(name: str, num_classes: int, input_shape: Sequence[int], options: dict[str, Any]) -> FNN:
    fixed = [k for k in PRESETS[name] if k != "iterations"]
    allowed = [k for k in _CUSTOM_FIELDS if k not in fixed]
    fields = {**PRESETS[name], **_options(name, options, allowed, fixed)}
    return _build(num_classes, input_shape, fields)


def fnn_1024(num_classes: int, input_shape: Sequence[int], **options: Any) -> FNN:
    """Table 1's FNN-1024: 1024 hidden neurons, d = 256, 4 iterations (section 4.1).

    Args:
        num_classes: S.
        input_shape: one example's shape, e.g. ``(28, 28, 1)``; R is its product.
        **options: ``iterations``, ``normalization``, ``input_every_iteration``,
            ``input_dropout``, ``path``, ``chunk_size``, ``output_activation``, ``eps``.

    Raises:
        ConfigError: unknown option, an option the preset fixes (``num_hidden``, ``dim``) or a bad
            value.
    """
    return _preset("fnn-1024", num_classes, input_shape, options)


def fnn_5000(num_classes: int, input_shape: Sequence[int], **options: Any) -> FNN:
    """Table 1's FNN-5000: 5000 hidden neurons, d = 256, 4 iterations (section 4.1).

    Args and Raises as :func:`fnn_1024`.
    """
    return _preset("fnn-5000", num_classes, input_shape, options)


def fnn_custom(
    num_classes: int,
    input_shape: Sequence[int],
    num_hidden: int = 1024,
    dim: int = 256,
    iterations: int = 4,
    normalization: str = "l2",
    input_every_iteration: bool = True,
    input_dropout: float = 0.1,
    path: str = "factored",
    **options: Any,
) -> FNN:
    """Any FNN size (the registry's ``"fnn"``).

    Args:
        num_classes: S.
        input_shape: one example's shape; R is its product.
        num_hidden: N.
        dim: d.
        iterations: k.
        normalization: ``"l2"`` or ``"softmax"``.
        input_every_iteration: False is section 4.2's variant.
        input_dropout: rate on the input.
        path: ``"factored"`` or ``"materialized"``.
        **options: ``chunk_size``, ``output_activation``, ``eps``.

    Raises:
        ConfigError: unknown option or bad value (the message names the argument).
    """
    extra = _options("fnn", options, ("chunk_size", "output_activation", "eps"))
    fields = {
        "num_hidden": num_hidden,
        "dim": dim,
        "iterations": iterations,
        "normalization": normalization,
        "input_every_iteration": input_every_iteration,
        "input_dropout": input_dropout,
        "path": path,
        **extra,
    }
    return _build(num_classes, input_shape, fields)
