"""Multi-layer floating networks (section 3.2) and Farfalle Neural Networks (section 3.3).

FNN data flow for input ``x`` (``[batch, R]``), hidden neurons ``V``, input neurons ``I``, output
neurons ``O`` and ``k`` iterations (figure 3)::

    Y_0 = F_in(x)                                    (input neurons, elementwise)
    Y_1 = Step(V, I, Y_0)
    Y_j = Step(V, [I | V], [Y_0, Y_{j-1}])           1 < j <= k
    out = Step(O, V, Y_k)                            (output activation: identity by default)

``input_every_iteration=False`` is section 4.2's variant ("we passed the input vector only in the
first iteration"). We read it as: in iterations ``j > 1`` the input neurons are *not sources at
all*, ``Y_j = Step(V, V, Y_{j-1})``, so they enter neither the weighted sum nor the normalization.
The alternative reading (feed ``Y_0 = 0`` but keep normalizing over ``[I | V]``) would let the
input neurons' embeddings keep shaping iterations ``j > 1`` through the denominators, which defeats
the purpose the paper gives for the variant (interpretable input embeddings, figures 5 and 6).

Normalizations depend only on parameters, so each forward pass computes them once (not once per
iteration): the materialized path builds ``W_first = Ñ(I_V O_I^T)``, ``W_later = Ñ(I_V [O_I |
O_V]^T)`` and ``W_out = Ñ(I_O O_V^T)`` up front; the factored l2 path folds the three sets of
denominators into the input embeddings (:mod:`fnnjax.floating.folding`); the factored softmax path
computes the three log-sum-exps once, and the input neurons' share of iterations ``j > 1`` (which
only depends on ``Y_0``) once. The ``k - 1`` later iterations run in one ``lax.scan``.

Randomness (input dropout) lives only in :func:`fnn_train_apply`, which takes ``key`` first;
:func:`fnn_apply` is deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from fnnjax.checks import check_choice, check_int, check_ints
from fnnjax.floating.folding import fold_params, folded_apply
from fnnjax.floating.neurons import (
    ACTIVATIONS,
    DEFAULT_CHUNK_SIZE,
    L2_EPS,
    PATHS,
    FNNConfig,
    check_fnn_input,
    init_hidden_neurons,
    init_input_neurons,
    init_output_neurons,
    input_dropout,
    transform,
)
from fnnjax.floating.step import (
    chunk_sources,
    connection_weights,
    factored_step,
    folded_product_forms_matrix,
    iterate,
    materialized_step,
    softmax_aggregate,
    softmax_lse,
)

__all__ = [
    "fnn_apply",
    "fnn_train_apply",
    "forward_macs",
    "init_multilayer_params",
    "multilayer_apply",
]


def _materialized_forward(params: dict[str, Any], x: jax.Array, config: FNNConfig) -> jax.Array:
    inp, hid, out = params["input"], params["hidden"], params["output"]
    norm, eps = config.normalization, config.eps
    w_first = connection_weights(hid["I"], inp["O"], norm, eps=eps)  # [N, R]
    later_sources = (
        jnp.concatenate([inp["O"], hid["O"]], axis=0) if config.input_every_iteration else hid["O"]
    )
    w_later = connection_weights(hid["I"], later_sources, norm, eps=eps)  # [N, R + N] or [N, N]
    w_out = connection_weights(out["I"], hid["O"], norm, eps=eps)  # [S, N]

    y0 = transform(inp, x)
    y = transform(hid, y0 @ w_first.T)

    def later(y: jax.Array) -> jax.Array:
        src = jnp.concatenate([y0, y], axis=-1) if config.input_every_iteration else y
        return transform(hid, src @ w_later.T)

    y = iterate(later, y, config.iterations - 1)
    return transform(out, y @ w_out.T, config.output_activation)


def _softmax_forward(params: dict[str, Any], x: jax.Array, config: FNNConfig) -> jax.Array:
    inp, hid, out = params["input"], params["hidden"], params["output"]
    src_in = chunk_sources(inp["O"], config.chunk_size)
    src_hid = chunk_sources(hid["O"], config.chunk_size)
    lse_first = softmax_lse(hid["I"], src_in)
    lse_hid = softmax_lse(hid["I"], src_hid)
    lse_later = jnp.logaddexp(lse_first, lse_hid) if config.input_every_iteration else lse_hid
    lse_out = softmax_lse(out["I"], src_hid)

    y0 = transform(inp, x)
    y = transform(hid, softmax_aggregate(hid["I"], src_in, y0, lse_first))
    if config.input_every_iteration and config.iterations > 1:  # the input's share of j > 1, once
        from_input = softmax_aggregate(hid["I"], src_in, y0, lse_later)

    def later(y: jax.Array) -> jax.Array:
        z = softmax_aggregate(hid["I"], src_hid, y, lse_later)
        if config.input_every_iteration:
            z = z + from_input
        return transform(hid, z)

    y = iterate(later, y, config.iterations - 1)
    z = softmax_aggregate(out["I"], src_hid, y, lse_out)
    return transform(out, z, config.output_activation)


def fnn_apply(params: dict[str, Any], x: jax.Array, config: FNNConfig) -> jax.Array:
    """An FNN's forward pass (section 3.3, figure 3), deterministic (no dropout).

    Args:
        params: ``{"input", "hidden", "output"}`` pytree (:func:`fnnjax.floating.init_params`).
        x: ``[batch, R]`` (any leading dims) input features.
        config: static hyper-parameters; ``config.path`` picks the factored (default) or the
            materialized computation, which agree up to float rounding.

    Returns:
        ``[batch, S]`` output values (logits with the default identity output activation).

    Raises:
        DataError: ``x``'s last axis is not ``config.num_inputs`` wide.
        ConfigError: ``params`` were built for another number of inputs.

    Example:
        >>> from fnnjax.floating import FNNConfig, init_params, fnn_apply
        >>> cfg = FNNConfig(num_inputs=784, num_outputs=10, num_hidden=64, dim=16)
        >>> params = init_params(jax.random.key(0), cfg)
        >>> fnn_apply(params, jnp.ones((2, 784)), cfg).shape
        (2, 10)
    """
    check_fnn_input(x, config, params["input"])
    if config.path == "materialized":
        return _materialized_forward(params, x, config)
    if config.normalization == "l2":
        return folded_apply(fold_params(params, config), x, config)
    return _softmax_forward(params, x, config)


def forward_macs(config: FNNConfig, batch: int = 1) -> int:
    """Multiply-accumulates per example of :func:`fnn_apply`'s products, for a batch of ``batch``.

    Counted from what each path multiplies (``R``, ``N``, ``S``, ``d``, ``k`` as in
    :class:`~fnnjax.floating.FNNConfig`; ``k - 1`` later iterations):

    * factored l2 (:func:`~fnnjax.floating.folding.folded_apply`): ``Y_0 O_in`` (``R d``), then
      ``p0 I_first^T`` (``N d``), then per later iteration ``Y O_V`` and ``p I_later^T``
      (``2 N d``, with or without ``input_every_iteration``: ``p0`` is reused), then the output
      step: ``(Y O_V) I_out^T`` (``(N + S) d``), or ``N S`` where
      :func:`~fnnjax.floating.step.folded_product_forms_matrix` says the batch is large enough
      to form ``O_V I_out^T`` once per call. Total ``R d + N d + 2 (k - 1) N d + out``.
    * materialized (both normalizations): ``Y_0 W_first^T`` (``N R``), per later iteration
      ``[Y_0 | Y] W_later^T`` (``N (R + N)``; ``N N`` without ``input_every_iteration``), and
      ``Y W_out^T`` (``S N``).
    * factored softmax: ``N R'`` for iteration 1, ``N R'`` once more for the input neurons'
      share of the later iterations (``input_every_iteration`` and ``k > 1``), ``N N'`` per later
      iteration and ``S N'`` for the outputs, where ``R'`` and ``N'`` are ``R`` and ``N`` rounded
      up to whole chunks of ``min(chunk_size, M)`` sources (``M`` the group's size): the
      streaming path multiplies a last partial chunk's padded slots too (by exact zeros), and
      that is work it does, so it is counted; a ``chunk_size`` that divides ``R`` and ``N`` (or
      is at least as large, as the default 1024 is for up to 1024 sources) has no padding.

    Work that depends on the parameters only is done once per call, whatever the batch, and is
    not per-example: the normalizations (similarities ``I O^T``, Gram matrices, folds,
    log-sum-exps, the softmax path's per-chunk probabilities) and ``O_V I_out^T`` where it is
    formed. It is left out, as are elementwise operations (``F``'s scale, shift and ReLU), the
    way conv counts leave out BatchNorm and activations. ``tests/arch/test_arch_counts.py``
    checks every path against the ``dot_general`` equations of the traced forward (the
    difference of two batch sizes, so parameter-only work cancels).

    Args:
        config: the FNN.
        batch: rows per call; only the factored l2 output step's association depends on it.

    Returns:
        Multiply-accumulates per example.

    Raises:
        ConfigError: ``batch`` is not a positive int.

    Example:
        >>> forward_macs(FNNConfig(num_inputs=784, num_outputs=10, num_hidden=1024, dim=256))
        2300416
    """
    check_int("batch", batch)
    r, n, s, d, k = (config.num_inputs, config.num_hidden, config.num_outputs, config.dim,
                     config.iterations)  # fmt: skip
    if config.path == "materialized":
        later = r + n if config.input_every_iteration else n
        return n * r + (k - 1) * n * later + s * n
    if config.normalization == "l2":
        out = n * s if folded_product_forms_matrix(n, s, d, batch) else (n + s) * d
        return r * d + n * d + 2 * (k - 1) * n * d + out

    def padded(m: int) -> int:  # chunk_sources' rows: ceil(m / c) chunks of c = min(chunk, m)
        c = min(config.chunk_size, m)
        return -(-m // c) * c

    r_pad, n_pad = padded(r), padded(n)
    first = n * r_pad * (2 if config.input_every_iteration and k > 1 else 1)
    return first + (k - 1) * n * n_pad + s * n_pad


def fnn_train_apply(
    key: jax.Array, params: dict[str, Any], x: jax.Array, config: FNNConfig
) -> jax.Array:
    """Training-mode forward pass: input dropout (rate ``config.input_dropout``) then
    :func:`fnn_apply`.

    Args:
        key: PRNG key for the dropout mask.
        params: FNN parameters.
        x: ``[batch, R]``.
        config: FNN config.

    Returns:
        ``[batch, S]``.
    """
    return fnn_apply(params, input_dropout(key, x, config.input_dropout), config)


# ------------------------------------------------------------------------- multi-layer (3.2)
def init_multilayer_params(
    key: jax.Array,
    num_inputs: int,
    layer_sizes: Sequence[int],
    num_outputs: int,
    dim: int,
    dtype: Any = jnp.float32,
) -> dict[str, Any]:
    """A multi-layer floating network (section 3.2): input neurons, ``l`` hidden layers, outputs.

    Args:
        key: PRNG key.
        num_inputs: R.
        layer_sizes: ``(n_1, ..., n_l)``, l >= 1.
        num_outputs: S.
        dim: d.
        dtype: parameter dtype.

    Returns:
        ``{"input": {"O","a","b"}, "layers": [{"I","O","a","b"}, ...], "output": {"I","a","b"}}``
        (same initialization scheme as the FNN).
    """
    check_ints("layer_sizes", layer_sizes)
    keys = jax.random.split(key, len(layer_sizes) + 2)
    return {
        "input": init_input_neurons(keys[0], num_inputs, dim, dtype),
        "layers": [
            init_hidden_neurons(k, n, dim, dtype) for k, n in zip(keys[1:-1], layer_sizes, strict=True)
        ],
        "output": init_output_neurons(keys[-1], num_outputs, dim, dtype),
    }


def multilayer_apply(
    params: dict[str, Any],
    x: jax.Array,
    *,
    normalization: str = "l2",
    path: str = "factored",
    eps: float = L2_EPS,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    output_activation: str = "identity",
) -> jax.Array:
    """Forward pass of a multi-layer floating network (section 3.2, eq. 3-4 layer by layer).

    Args:
        params: from :func:`init_multilayer_params`.
        x: ``[batch, R]``.
        normalization: ``"l2"`` or ``"softmax"``.
        path: ``"factored"`` or ``"materialized"``.
        eps: l2 denominator epsilon.
        chunk_size: softmax streaming chunk.
        output_activation: ``"identity"`` or ``"relu"``.

    Returns:
        ``[batch, S]``.
    """
    check_choice("path", path, PATHS)
    check_choice("output_activation", output_activation, ACTIVATIONS)
    if path == "materialized":

        def step(targets, source_O, y, activation="relu"):
            return materialized_step(
                targets, source_O, y, normalization=normalization, activation=activation, eps=eps
            )
    else:

        def step(targets, source_O, y, activation="relu"):
            return factored_step(
                targets,
                source_O,
                y,
                normalization=normalization,
                activation=activation,
                eps=eps,
                chunk_size=chunk_size,
            )

    y = transform(params["input"], x)
    source_O = params["input"]["O"]
    for layer in params["layers"]:
        y = step(layer, source_O, y)
        source_O = layer["O"]
    return step(params["output"], source_O, y, output_activation)
