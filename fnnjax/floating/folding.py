"""Inference folding of the l2 normalization into the input embeddings (FNN paper, section 3.4).

After training, "it is enough to replace ``I_v`` with ``I_v / sum_i (I_v^T O_{u_i})^2``": then
``W Y = (I_fold O^T) Y`` and a forward pass needs only ``O(d (N + M))`` memory and no normalization.
Because eq. 2's denominator depends on *which* sources a neuron reads, an FNN needs three folds:

* hidden neurons in iteration 1 read the input neurons only: ``I_first = I / (I G_in I + eps)``;
* hidden neurons in iterations ``j > 1`` read ``[input | hidden]``:
  ``I_later = I / (I (G_in + G_hidden) I + eps)`` (with ``input_every_iteration=False``, section
  4.2's variant, they read the hidden neurons only: ``I / (I G_hidden I + eps)``);
* output neurons read the hidden neurons: ``I_out / (I_out G_hidden I_out + eps)``,

where ``G = O^T O`` is a ``[d, d]`` Gram matrix, so folding itself never forms an ``N x M`` matrix
either. The folded pytree is::

    {"input":  {"O": [R, d], "a": [R], "b": [R]},
     "hidden": {"I_first": [N, d], "I_later": [N, d], "O": [N, d], "a": [N], "b": [N]},
     "output": {"I": [S, d], "a": [S], "b": [S]}}

The factored l2 training path of :func:`fnnjax.floating.fnn_apply` *is* ``folded_apply(fold_params(
params))`` (gradients flow through the fold); tests check it against the materialized path and a
NumPy reference. Softmax cannot be folded: its normalizer ``sum_u exp(I_v^T O_u)`` is not a rescaling
of ``I_v`` (``exp(s) / Z`` is not ``exp(s / c)``), so :func:`fold_params` rejects it.
"""

from __future__ import annotations

from typing import Any

import jax

from fnnjax.errors import ConfigError
from fnnjax.floating.neurons import FNNConfig, transform
from fnnjax.floating.step import folded_product, gram, iterate, l2_fold

__all__ = ["fold_params", "folded_apply"]


def fold_params(params: dict[str, Any], config: FNNConfig) -> dict[str, Any]:
    """Folds eq. 2's denominators into the input embeddings (section 3.4).

    Args:
        params: FNN parameters (:func:`fnnjax.floating.init_params` layout).
        config: the FNN's config; ``normalization`` must be ``"l2"``; ``input_every_iteration`` and
            ``eps`` decide the folds.

    Returns:
        The folded pytree (module docstring), ``O(d (N + M))`` scalars.

    Raises:
        ConfigError: ``config.normalization`` is not ``"l2"``.
    """
    if config.normalization != "l2":
        raise ConfigError(
            f"normalization must be 'l2' to fold (section 3.4), got {config.normalization!r}: a "
            "softmax normalizer is not a rescaling of I_v, so it cannot be folded into it"
        )
    inp, hid, out = params["input"], params["hidden"], params["output"]
    g_in, g_hid = gram(inp["O"]), gram(hid["O"])
    g_later = g_in + g_hid if config.input_every_iteration else g_hid
    return {
        "input": dict(inp),
        "hidden": {
            "I_first": l2_fold(hid["I"], g_in, config.eps),
            "I_later": l2_fold(hid["I"], g_later, config.eps),
            "O": hid["O"],
            "a": hid["a"],
            "b": hid["b"],
        },
        "output": {"I": l2_fold(out["I"], g_hid, config.eps), "a": out["a"], "b": out["b"]},
    }


def folded_apply(folded: dict[str, Any], x: jax.Array, config: FNNConfig) -> jax.Array:
    """FNN forward pass (section 3.3) with folded embeddings: no ``N x M`` matrix, no normalization.

    Per iteration the cost is two ``[batch, N] x [N, d]``-sized products. The input's contribution
    ``Y_0 O_in`` (``[batch, d]``) is computed once and reused in every iteration.

    Args:
        folded: from :func:`fold_params` with the same ``config``.
        x: ``[..., R]`` input (already dropped out, if training).
        config: ``iterations``, ``input_every_iteration``, ``output_activation`` are used.

    Returns:
        ``[..., S]`` logits.
    """
    inp, hid, out = folded["input"], folded["hidden"], folded["output"]
    y0 = transform(inp, x)
    p0 = y0 @ inp["O"]  # [..., d]: the input neurons' values "at their locations", once
    y = transform(hid, p0 @ hid["I_first"].T)

    def later(y: jax.Array) -> jax.Array:
        p = y @ hid["O"]
        if config.input_every_iteration:
            p = p + p0
        return transform(hid, p @ hid["I_later"].T)

    y = iterate(later, y, config.iterations - 1)
    return transform(out, folded_product(y, hid["O"], out["I"]), config.output_activation)
