"""Theorem 1 of the FNN paper as code: a multi-layer floating network is an FNN (section 3.3).

    *Every multi-layer floating neural network with l layers, total of N floating neurons, and
    embedding dimension d can be modeled by an FNN containing N + 1 floating neurons with embedding
    dimension l * d which iterates for l iterations.*

:func:`multilayer_to_fnn` is the proof's construction. With the block embedding
``E_j(x) = (0_{(j-1)d}, x, 0_{(l-j)d})`` (so ``E_i(x)^T E_j(y) = [i = j] x^T y``, eq. 6)::

    O_{i'_r} = E_1(O_{i_r})               I_{o'_s} = E_1(I_{o_s})
    O_{v'}   = E_{(j mod l)+1}(O_{v^j})   I_{v'}   = E_j(I_{v^j})     for v^j in layer j

plus a neuron ``v'_0`` with ``F = 0 * x`` (``a = b = 0``) and ``I = O = (epsilon, ..., epsilon)``.
Transformations are copied. Hidden neuron order: ``v'_0``, then layer 1, layer 2, ..., layer l.

Conditions the proof leaves implicit (checked by ``tests/floating/test_floating_theorem1.py``):

1. **Only l2 normalization.** The construction relies on "similarity 0 => weight 0", which eq. 2
   gives and softmax does not (``exp(0) = 1``); with softmax every block-orthogonal pair would be
   connected. The converted parameters are normalization-agnostic, but the equivalence holds for
   ``normalization="l2"`` only.
2. **Denominators agree.** A layer-j neuron (j >= 2) in iteration j reads ``[input | hidden]``;
   its ``I`` lives in block j, so its only non-zero similarities are with the layer-(j-1) neurons
   (whose ``O`` is in block j) — exactly its sources in the multi-layer network — plus ``v'_0``,
   which adds ``epsilon^2 (sum of I_v)^2`` to the denominator (a relative error
   ``O(epsilon^2)``; ``v'_0``'s value is 0, so it adds nothing to the numerator). Layer-1 neurons
   in iteration 1 read the input neurons only, as in the multi-layer network; output neurons read
   the hidden neurons, of which only layer l (block ``(l mod l) + 1 = 1``) and ``v'_0`` overlap.
3. **Spurious connections are harmless for the output at iteration l.** Layer-l neurons' ``O`` is
   in block 1, the same block as the layer-1 neurons' ``I``: from iteration 2 on, layer-1 neurons
   read (stale) layer-l values, and with ``input_every_iteration=True`` they also read the input
   again. Both only change layer-1 values at iterations >= 2. But the output at iteration l only
   depends on layer l at iteration l, which depends on layer l-1 at iteration l-1, ..., layer 1 at
   iteration 1 — the chain the theorem needs — because every ``Y_j`` is recomputed from ``Y_{j-1}``
   and ``Y_0`` only. So the construction works for both ``input_every_iteration`` settings.
4. **The 0/0 rule at iteration 1.** The proof adds ``v'_0`` "to eliminate the division by zero",
   but in iteration 1 the sources are the *input* neurons only, so ``v'_0`` is not a source there:
   a layer-j neuron (j >= 2) has all-zero similarities in iteration 1 and exact eq. 2 gives 0/0 =
   NaN, which then reaches the output through ``0 * NaN`` in the next iteration's weighted sums.
   The construction therefore needs 0/0 := 0, which our eps in eq. 2's denominator supplies
   (``eps > 0``; the values such neurons get before "their" iteration, e.g. ``ReLU(b)``, are finite
   and meet exactly-zero weights later). With ``eps > 0``, ``v'_0`` is not needed at all; it is
   kept (``epsilon`` small, default 1e-6) so the FNN has the theorem's ``N + 1`` neurons.
5. **Same eps, same output activation.** The FNN and the multi-layer network must use the same
   ``eps`` and output activation; the FNN is run with ``iterations = l`` and ``dim = l * d``.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from fnnjax.checks import check_int
from fnnjax.errors import ConfigError
from fnnjax.floating.neurons import FNNConfig

__all__ = ["block_embedding", "multilayer_to_fnn", "multilayer_to_fnn_config"]


def block_embedding(x: jnp.ndarray, j: int, num_blocks: int) -> jnp.ndarray:
    """``E_j`` of the proof (1-based ``j``): ``[n, d] -> [n, num_blocks * d]`` with ``x`` in block j."""
    check_int("j", j, 1, maximum=num_blocks)
    n, d = x.shape
    return jnp.concatenate(
        [jnp.zeros((n, (j - 1) * d), x.dtype), x, jnp.zeros((n, (num_blocks - j) * d), x.dtype)],
        axis=1,
    )


def multilayer_to_fnn(params_multilayer: dict[str, Any], *, epsilon: float = 1e-6) -> dict[str, Any]:
    """Converts a multi-layer floating network into an equivalent FNN (Theorem 1's construction).

    Args:
        params_multilayer: ``{"input": {"O","a","b"}, "layers": [{"I","O","a","b"}] * l,
            "output": {"I","a","b"}}`` (:func:`fnnjax.floating.init_multilayer_params`), all
            embeddings of width d.
        epsilon: the entries of ``v'_0``'s embeddings (the proof's "negligible" value; 0 is
            allowed, see condition 4 in the module docstring).

    Returns:
        FNN params with ``N + 1`` hidden neurons (``N = sum n_j``) and embedding width ``l * d``.
        Run it with :func:`multilayer_to_fnn_config` (``iterations=l``, ``dim=l * d``,
        ``num_hidden=N + 1``, ``normalization="l2"``) and the multi-layer network's ``eps`` and
        output activation.

    Example:
        >>> ml = init_multilayer_params(jax.random.key(0), 784, (64, 32), 10, 16)
        >>> fnn = multilayer_to_fnn(ml)
        >>> cfg = multilayer_to_fnn_config(ml)  # num_hidden=97, dim=32, iterations=2
        >>> # fnn_apply(fnn, x, cfg) == multilayer_apply(ml, x) up to rounding
    """
    layers = params_multilayer["layers"]
    num_layers = len(layers)
    if num_layers < 1:
        raise ConfigError("params_multilayer['layers'] must hold at least one layer")
    d = params_multilayer["input"]["O"].shape[1]
    dtype = params_multilayer["input"]["O"].dtype
    inp, out = params_multilayer["input"], params_multilayer["output"]

    hidden_I = [jnp.full((1, num_layers * d), epsilon, dtype)]
    hidden_O = [jnp.full((1, num_layers * d), epsilon, dtype)]
    hidden_a = [jnp.zeros((1,), dtype)]
    hidden_b = [jnp.zeros((1,), dtype)]
    for j, layer in enumerate(layers, start=1):
        if layer["I"].shape[1] != d or layer["O"].shape[1] != d:
            raise ConfigError(f"layer {j} has embedding width {layer['I'].shape[1]}, expected {d}")
        hidden_I.append(block_embedding(layer["I"], j, num_layers))
        hidden_O.append(block_embedding(layer["O"], (j % num_layers) + 1, num_layers))
        hidden_a.append(layer["a"])
        hidden_b.append(layer["b"])

    return {
        "input": {"O": block_embedding(inp["O"], 1, num_layers), "a": inp["a"], "b": inp["b"]},
        "hidden": {
            "I": jnp.concatenate(hidden_I, axis=0),
            "O": jnp.concatenate(hidden_O, axis=0),
            "a": jnp.concatenate(hidden_a, axis=0),
            "b": jnp.concatenate(hidden_b, axis=0),
        },
        "output": {"I": block_embedding(out["I"], 1, num_layers), "a": out["a"], "b": out["b"]},
    }


def multilayer_to_fnn_config(params_multilayer: dict[str, Any], **overrides: Any) -> FNNConfig:
    """The :class:`FNNConfig` under which :func:`multilayer_to_fnn`'s output reproduces the network.

    Args:
        params_multilayer: as for :func:`multilayer_to_fnn`.
        **overrides: other :class:`FNNConfig` fields (``eps``, ``output_activation``, ``path``,
            ``input_every_iteration``, ``input_dropout``, ...). ``normalization`` must stay
            ``"l2"`` for the equivalence (condition 1).

    Returns:
        ``FNNConfig(num_inputs=R, num_outputs=S, num_hidden=N + 1, dim=l * d, iterations=l,
        normalization="l2", **overrides)``.
    """
    layers = params_multilayer["layers"]
    d = params_multilayer["input"]["O"].shape[1]
    fields = {
        "num_inputs": params_multilayer["input"]["O"].shape[0],
        "num_outputs": params_multilayer["output"]["I"].shape[0],
        "num_hidden": sum(layer["I"].shape[0] for layer in layers) + 1,
        "dim": len(layers) * d,
        "iterations": len(layers),
        "normalization": "l2",
    }
    return FNNConfig(**{**fields, **overrides})
