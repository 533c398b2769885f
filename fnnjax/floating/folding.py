"""Inference folding of the l2 normalization into the input embeddings (FNN paper, section 3.4).

After training, "it is enough to replace ``I_v`` with ``I_v / sum_i (I_v^T O_{u_i})^2``": then
``W Y = (I_fold O^T) Y`` and a forward pass needs only ``O(d (N + M))`` memory and no normalization.
Because eq. 2's denominator depends on *which* sources a neuron reads, an FNN needs three folds
(``ss_X(I) = sum_{u in X} (I^T O_u)^2 = I^T G_X I`` for a source group ``X`` with Gram matrix
``G_X = O_X^T O_X``, computed accurately by :func:`fnnjax.floating.step.squared_similarity_norms`):

* hidden neurons in iteration 1 read the input neurons only: ``I_first = I / (ss_in(I) + eps)``;
* hidden neurons in iterations ``j > 1`` read ``[input | hidden]``:
  ``I_later = I / (ss_in(I) + ss_hidden(I) + eps)`` (sums of squares over disjoint source groups
  add; with ``input_every_iteration=False``, section 4.2's variant, they read the hidden neurons
  only: ``I / (ss_hidden(I) + eps)``);
* output neurons read the hidden neurons: ``I_out / (ss_hidden(I_out) + eps)``,

where each group's ``[d, d]`` Gram matrix is computed once, so folding itself never forms an
``N x M`` matrix either. The folded pytree is::

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
from fnnjax.floating.neurons import FNNConfig, check_fnn_input, transform
from fnnjax.floating.step import folded_product, iterate, l2_sources, squared_similarity_norms

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
    eps = config.eps
    # one Gram matrix per source group, one sum of squares per (targets, group): each done once
    src_in, src_hid = l2_sources(inp["O"]), l2_sources(hid["O"])
    ss_first = squared_similarity_norms(hid["I"], src_in)
    ss_hid = squared_similarity_norms(hid["I"], src_hid)
    ss_later = ss_first + ss_hid if config.input_every_iteration else ss_hid
    ss_out = squared_similarity_norms(out["I"], src_hid)
    return {
        "input": dict(inp),
        "hidden": {
            "I_first": hid["I"] / (ss_first + eps)[:, None],
            "I_later": hid["I"] / (ss_later + eps)[:, None],
            "O": hid["O"],
            "a": hid["a"],
            "b": hid["b"],
        },
        "output": {"I": out["I"] / (ss_out + eps)[:, None], "a": out["a"], "b": out["b"]},
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

    Raises:
        DataError: ``x``'s last axis is not ``config.num_inputs`` wide.
    """
    check_fnn_input(x, config, folded["input"])
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
