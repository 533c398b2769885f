"""Floating neurons and the FNN's hyper-parameters (FNN paper, sections 3.1, 3.3 and 4.1).

A floating neuron ``v`` (section 3.1) has an input embedding ``I_v`` (its head), an output embedding
``O_v`` (its tail), both in ``R^d``, and a transformation ``F_v(x) = ReLU(a_v * x + b_v)``. Input
neurons have no input embedding, output neurons no output embedding. An FNN's parameters are one
pytree of plain arrays::

    {"input":  {"O": [R, d], "a": [R], "b": [R]},          # R input neurons  (i_1 ... i_R)
     "hidden": {"I": [N, d], "O": [N, d], "a": [N], "b": [N]},  # N hidden neurons (v_1 ... v_N)
     "output": {"I": [S, d], "a": [S], "b": [S]}}          # S output neurons (o_1 ... o_S)

so an FNN has ``R (d + 2) + N (2 d + 2) + S (d + 2)`` parameters, which reproduces Table 1 exactly
(d = 256, S = 10: FNN-1024 on MNIST has 784 * 258 + 1024 * 514 + 10 * 258 = 731,188).

Choices the paper leaves open (ours, documented):

* **Initialization.** Embedding entries are ``N(0, 1/d)`` so every embedding has norm about 1 and a
  similarity ``I_v^T O_u`` has variance about ``1/d``; ``a = 1`` and ``b = 0`` so every ``F_v`` starts
  as a plain ReLU. Eq. 2 is not scale invariant: a weight row has norm ``||w_v|| = 1 / ||s_v||``
  (``s_v`` the similarity row), so scaling all embeddings by ``c`` scales the weights by ``1/c^2``
  and the embedding scale sets the initial gain. Unit-norm embeddings give ``||s_v|| ~ sqrt(M / d)``
  and weight rows of norm ``~ sqrt(d / M)`` for ``M`` sources: neither exploding nor vanishing over
  a few iterations.
* **Output activation.** Output neurons apply ``a * z + b`` without the ReLU by default
  (``output_activation="identity"``): the classification head feeds softmax cross-entropy, which needs
  unbounded (also negative) logits; a ReLU would clip every negative logit to 0 and stop its
  gradient. ``output_activation="relu"`` gives the paper's literal ``F``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

from fnnjax._checks import check_float_input
from fnnjax.checks import check_bool, check_choice, check_int, check_number, check_share
from fnnjax.errors import ConfigError, DataError

__all__ = [
    "ACTIVATIONS",
    "DEFAULT_CHUNK_SIZE",
    "L2_EPS",
    "NORMALIZATIONS",
    "PATHS",
    "PRESETS",
    "FNNConfig",
    "check_fnn_input",
    "init_hidden_neurons",
    "init_input_neurons",
    "init_output_neurons",
    "init_params",
    "input_dropout",
    "param_count",
    "preset_config",
    "transform",
]

#: Added to eq. 2's denominator, ``x_i / (sum_j x_j^2 + L2_EPS)``, so an all-zero similarity row gives
#: weights 0 instead of 0/0. 1e-12 is the value ``tf.math.l2_normalize`` uses for the same sum of
#: squares; it is below float32 resolution for any denominator >= 1e-5, i.e. invisible except where
#: eq. 2 itself would divide by (almost) zero. It caps a weight row's norm at ``1 / (2 sqrt(eps))``.
L2_EPS = 1e-12

#: Sources per chunk in the streaming softmax path (memory ``O(N * chunk)`` per step).
DEFAULT_CHUNK_SIZE = 1024

#: ``"l2"`` is eq. 2 (what the paper trains with); ``"softmax"`` is the convex-combination variant
#: the paper mentions in section 3.2.
NORMALIZATIONS = ("l2", "softmax")
#: ``"factored"`` never forms the ``N x M`` weight matrix; ``"materialized"`` builds it (eq. 3).
PATHS = ("factored", "materialized")
#: Output neurons' activation: ``"identity"`` (default, logits ``a * z + b``) or ``"relu"`` (the
#: paper's ``F``).
ACTIVATIONS = ("identity", "relu")

#: Table 1's FNNs (section 4.1): 1024 or 5000 hidden neurons, d = 256, 4 iterations.
PRESETS: dict[str, dict[str, Any]] = {
    "fnn-1024": {"num_hidden": 1024, "dim": 256, "iterations": 4},
    "fnn-5000": {"num_hidden": 5000, "dim": 256, "iterations": 4},
}


@dataclasses.dataclass(frozen=True)
class FNNConfig:
    """Static (shape- and code-deciding) hyper-parameters of an FNN (section 3.3).

    Frozen and hashable, so it can be a ``jax.jit`` static argument. Every field is validated on
    construction; a bad value raises one :class:`fnnjax.errors.ConfigError` (a ``ValueError``)
    naming the field and what was expected.

    Attributes:
        num_inputs: R, number of input neurons (flattened input features).
        num_outputs: S, number of output neurons (classes).
        num_hidden: N, number of hidden floating neurons.
        dim: d, embedding dimension.
        iterations: k, number of recurrent iterations (k >= 1).
        normalization: ``"l2"`` (eq. 2) or ``"softmax"``.
        input_every_iteration: True (section 3.3): iterations j > 1 read ``[input | hidden]``.
            False (section 4.2's variant): the input is passed only in iteration 1 and iterations
            j > 1 compute ``Step(V, V, Y_{j-1})``, i.e. the input neurons are not sources at all
            there (neither in the weighted sum nor in the normalization).
        input_dropout: dropout rate on the input ``x`` before the input neurons (0.1 in the paper).
        path: ``"factored"`` (default) or ``"materialized"`` (reference, builds W).
        chunk_size: sources per chunk for the factored softmax path.
        output_activation: ``"identity"`` (default) or ``"relu"``.
        eps: the l2 denominator epsilon (see :data:`L2_EPS`); 0 gives eq. 2 exactly.
    """

    num_inputs: int
    num_outputs: int
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

    def __post_init__(self) -> None:
        for name in ("num_inputs", "num_outputs", "num_hidden", "dim", "iterations", "chunk_size"):
            check_int(name, getattr(self, name))
            object.__setattr__(self, name, int(getattr(self, name)))  # NumPy ints as well
        check_choice("normalization", self.normalization, NORMALIZATIONS)
        check_choice("path", self.path, PATHS)
        check_choice("output_activation", self.output_activation, ACTIVATIONS)
        check_bool("input_every_iteration", self.input_every_iteration)
        check_share("input_dropout", self.input_dropout)
        check_number("eps", self.eps, at_least=0.0)


def preset_config(name: str, num_inputs: int, num_outputs: int = 10, **overrides: Any) -> FNNConfig:
    """The named Table-1 FNN (``"fnn-1024"`` or ``"fnn-5000"``) for a given input/output size.

    Args:
        name: a key of :data:`PRESETS`.
        num_inputs: R, e.g. 784 (MNIST) or 3072 (CIFAR10).
        num_outputs: S, number of classes.
        **overrides: any other :class:`FNNConfig` field (``iterations``, ``normalization``,
            ``path``, ...). ``num_hidden`` and ``dim`` are what the preset fixes.

    Raises:
        ConfigError: unknown preset, an override that is not an FNNConfig field, or one the preset
            fixes, or a bad value.
    """
    check_choice("preset", name, PRESETS)
    fixed = set(PRESETS[name]) - {"iterations"}
    allowed = {f.name for f in dataclasses.fields(FNNConfig)} - {"num_inputs", "num_outputs"} - fixed
    for key in overrides:
        if key not in allowed:
            raise ConfigError(
                f"unknown option {key!r} for {name}; expected one of: {', '.join(sorted(allowed))}"
                + (f" ({key} is fixed by the preset; use fnn_custom)" if key in fixed else "")
            )
    return FNNConfig(num_inputs=num_inputs, num_outputs=num_outputs, **{**PRESETS[name], **overrides})


def param_count(config: FNNConfig) -> int:
    """Number of trainable scalars of an FNN, ``R (d + 2) + N (2 d + 2) + S (d + 2)`` (Table 1)."""
    d = config.dim
    return (
        config.num_inputs * (d + 2) + config.num_hidden * (2 * d + 2) + config.num_outputs * (d + 2)
    )


def _embedding(key: jax.Array, num: int, dim: int, dtype: Any) -> jax.Array:
    return jax.random.normal(key, (num, dim), dtype) / math.sqrt(dim)


def init_input_neurons(
    key: jax.Array, num: int, dim: int, dtype: Any = jnp.float32
) -> dict[str, jax.Array]:
    """Input neurons: ``{"O": [num, dim], "a": [num], "b": [num]}`` (O ~ N(0, 1/d), a=1, b=0)."""
    return {"O": _embedding(key, num, dim, dtype), "a": jnp.ones(num, dtype), "b": jnp.zeros(num, dtype)}


def init_hidden_neurons(
    key: jax.Array, num: int, dim: int, dtype: Any = jnp.float32
) -> dict[str, jax.Array]:
    """Hidden neurons: ``{"I": [num, dim], "O": [num, dim], "a": [num], "b": [num]}``."""
    k_i, k_o = jax.random.split(key)
    return {
        "I": _embedding(k_i, num, dim, dtype),
        "O": _embedding(k_o, num, dim, dtype),
        "a": jnp.ones(num, dtype),
        "b": jnp.zeros(num, dtype),
    }


def init_output_neurons(
    key: jax.Array, num: int, dim: int, dtype: Any = jnp.float32
) -> dict[str, jax.Array]:
    """Output neurons: ``{"I": [num, dim], "a": [num], "b": [num]}``."""
    return {"I": _embedding(key, num, dim, dtype), "a": jnp.ones(num, dtype), "b": jnp.zeros(num, dtype)}


def init_params(key: jax.Array, config: FNNConfig, dtype: Any = jnp.float32) -> dict[str, Any]:
    """Initial FNN parameters (see the module docstring for the pytree and the scheme).

    Args:
        key: PRNG key.
        config: sizes (``num_inputs``, ``num_hidden``, ``num_outputs``, ``dim``).
        dtype: parameter dtype.

    Returns:
        ``{"input": ..., "hidden": ..., "output": ...}`` with :func:`param_count` scalars.
    """
    k_in, k_hidden, k_out = jax.random.split(key, 3)
    d = config.dim
    return {
        "input": init_input_neurons(k_in, config.num_inputs, d, dtype),
        "hidden": init_hidden_neurons(k_hidden, config.num_hidden, d, dtype),
        "output": init_output_neurons(k_out, config.num_outputs, d, dtype),
    }


def transform(neurons: dict[str, jax.Array], z: jax.Array, activation: str = "relu") -> jax.Array:
    """Each neuron's own transformation ``F_v(z) = ReLU(a_v z + b_v)`` (section 3.1).

    Args:
        neurons: a dict with ``"a"`` and ``"b"``, both ``[n]``.
        z: ``[..., n]`` gathered values.
        activation: ``"relu"`` (the paper's F) or ``"identity"`` (``a z + b``, for logits).

    Returns:
        ``[..., n]``.
    """
    check_choice("activation", activation, ACTIVATIONS)
    y = neurons["a"] * z + neurons["b"]
    return jax.nn.relu(y) if activation == "relu" else y


def check_fnn_input(
    x: jax.Array, config: FNNConfig, input_neurons: dict[str, jax.Array] | None = None
) -> None:
    """Raises one clear error unless ``x`` (and the input neurons) fit ``config.num_inputs`` (R).

    ``x`` must be ``[..., R]``: the last axis holds the R features, any leading axes are batch
    axes (the Flax :class:`~fnnjax.floating.FNN` layer flattens ``[batch, ...]`` to ``[batch, R]``
    before calling in). Shapes are static, so under ``jit`` this runs once, at trace time.

    Args:
        x: the input features.
        config: the FNN's config.
        input_neurons: ``params["input"]`` (or a folded pytree's), to check it holds R neurons.

    Raises:
        DataError: ``x``'s last axis is not R wide.
        ConfigError: ``input_neurons`` holds another number of input neurons than R.
    """
    num_inputs = config.num_inputs
    shape = tuple(getattr(x, "shape", ()))
    check_float_input(x, "the FNN")
    if not shape or shape[-1] != num_inputs:
        raise DataError(
            f"x must have shape [..., {num_inputs}] (config.num_inputs = {num_inputs} features in "
            f"its last axis), got shape {shape}; flatten each example to {num_inputs} features"
        )
    if input_neurons is not None and input_neurons["O"].shape[0] != num_inputs:
        raise ConfigError(
            f"the params hold {input_neurons['O'].shape[0]} input neurons but config.num_inputs "
            f"is {num_inputs}; build them with init_params(key, config)"
        )


def input_dropout(key: jax.Array, x: jax.Array, rate: float) -> jax.Array:
    """Inverted dropout on the FNN input (section 4.1: rate 0.1), before the input neurons.

    Args:
        key: PRNG key.
        x: ``[..., R]`` input.
        rate: probability of zeroing an entry; kept entries are scaled by ``1 / (1 - rate)``.

    Returns:
        ``[..., R]``; ``x`` itself when ``rate == 0``.
    """
    if rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))
