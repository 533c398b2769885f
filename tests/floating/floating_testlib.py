"""Test helpers: an independent, slow float64 NumPy reference of the FNN paper's equations, and a
jaxpr inspector.

The reference builds every weight literally, one target neuron and one source neuron at a time
(eq. 1-2), and shares no code with ``fnnjax.floating``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


# ------------------------------------------------------- random parameters (NumPy: no compiles)
def _neurons(rng, n, d, embeddings, dtype):
    out = {name: rng.normal(size=(n, d)) / np.sqrt(d) for name in embeddings}
    out["a"] = 1.0 + 0.3 * rng.normal(size=n)
    out["b"] = 0.3 * rng.normal(size=n)  # b != 0 so F's bias is exercised
    return {k: jnp.asarray(v, dtype) for k, v in out.items()}


def random_fnn_params(seed, num_inputs, num_hidden, num_outputs, dim, dtype=np.float32):
    """FNN params (init_params layout) with random embeddings and random a, b."""
    rng = np.random.default_rng(seed)
    return {
        "input": _neurons(rng, num_inputs, dim, "O", dtype),
        "hidden": _neurons(rng, num_hidden, dim, "IO", dtype),
        "output": _neurons(rng, num_outputs, dim, "I", dtype),
    }


def random_multilayer_params(seed, num_inputs, layer_sizes, num_outputs, dim, dtype=np.float32):
    """Multi-layer floating network params (init_multilayer_params layout)."""
    rng = np.random.default_rng(seed)
    return {
        "input": _neurons(rng, num_inputs, dim, "O", dtype),
        "layers": [_neurons(rng, n, dim, "IO", dtype) for n in layer_sizes],
        "output": _neurons(rng, num_outputs, dim, "I", dtype),
    }


def random_inputs(seed, *shape, dtype=np.float32):
    return jnp.asarray(np.random.default_rng(seed + 1000).uniform(size=shape), dtype)


def low_rank_embeddings(seed, num, dim, rank=None):
    """``[num, dim]`` float64 embeddings of norm about 1 spanning ``rank`` dims (all if None)."""
    rng = np.random.default_rng(seed)
    if rank is None:
        return rng.normal(size=(num, dim)) / np.sqrt(dim)
    return rng.normal(size=(num, rank)) @ rng.normal(size=(rank, dim)) / np.sqrt(rank * dim)


def nearly_orthogonal_targets(seed, num, sources, similarity=1e-4):
    """``[num, d]`` float64 unit input embeddings whose similarities with every row of ``sources``
    (``[M, d]``, any rank < d) are about ``similarity * |I_v| |O_u|``: each is a unit vector
    orthogonal to the sources' span plus ``similarity`` times a unit vector inside it.

    Eq. 2's denominators ``sum_u (I_v^T O_u)^2`` are then ``~similarity^2 |I_v|^2 |O|^2``: tiny next
    to ``|I_v|^2 |O|^2``, which is where computing them from ``O^T O`` cancels catastrophically.
    """
    rng = np.random.default_rng(seed)
    u, sv, _ = np.linalg.svd(np.asarray(sources, np.float64).T, full_matrices=True)
    rank = int(np.sum(sv > 1e-5 * sv[0]))  # float32-rounded sources: noise at ~1e-7
    assert rank < u.shape[0], "the sources span every dimension: nothing is orthogonal to them"
    span, complement = u[:, :rank], u[:, rank:]

    def unit_rows(basis):
        v = rng.normal(size=(num, basis.shape[1])) @ basis.T
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    return unit_rows(complement) + similarity * unit_rows(span)


def to_numpy(tree):
    if isinstance(tree, dict):
        return {k: to_numpy(v) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return [to_numpy(v) for v in tree]
    return np.asarray(tree, dtype=np.float64)


def weights(I, O, normalization, eps):  # noqa: E741
    """W[v, u] = N(I_v . O_1, ..., I_v . O_M)_u, eq. 1 with eq. 2 or softmax."""
    num_targets, num_sources = I.shape[0], O.shape[0]
    W = np.zeros((num_targets, num_sources))
    for v in range(num_targets):
        s = np.array([sum(I[v, k] * O[u, k] for k in range(I.shape[1])) for u in range(num_sources)])
        if normalization == "l2":
            W[v] = s / (np.sum(s**2) + eps)
        elif normalization == "softmax":
            e = np.exp(s - s.max())
            W[v] = e / e.sum()
        else:
            raise ValueError(normalization)
    return W


def step(targets, source_O, Y, normalization, eps, activation="relu"):
    """Step(V, U, Y) = F(W Y) (eq. 5); Y is [batch, M], rows are examples."""
    W = weights(targets["I"], source_O, normalization, eps)
    z = np.stack([W @ y for y in Y])
    out = targets["a"] * z + targets["b"]
    return np.maximum(out, 0.0) if activation == "relu" else out


def fnn(params, x, *, iterations, normalization="l2", input_every_iteration=True, eps=1e-12,
        output_activation="identity"):
    """Section 3.3's procedure, steps 1-4 (input_every_iteration=False: Y_j = Step(V, V, Y_{j-1}))."""
    p = to_numpy(params)
    x = np.asarray(x, dtype=np.float64)
    inp, hid, out = p["input"], p["hidden"], p["output"]
    y0 = np.maximum(inp["a"] * x + inp["b"], 0.0)
    y = step(hid, inp["O"], y0, normalization, eps)
    for _ in range(2, iterations + 1):
        if input_every_iteration:
            sources = np.concatenate([inp["O"], hid["O"]], axis=0)
            y = step(hid, sources, np.concatenate([y0, y], axis=1), normalization, eps)
        else:
            y = step(hid, hid["O"], y, normalization, eps)
    return step(out, hid["O"], y, normalization, eps, output_activation)


def multilayer(params, x, *, normalization="l2", eps=1e-12, output_activation="identity"):
    """Section 3.2: layer i+1 = Step(layer i+1, layer i, values of layer i)."""
    p = to_numpy(params)
    x = np.asarray(x, dtype=np.float64)
    y = np.maximum(p["input"]["a"] * x + p["input"]["b"], 0.0)
    source_O = p["input"]["O"]
    for layer in p["layers"]:
        y = step(layer, source_O, y, normalization, eps)
        source_O = layer["O"]
    return step(p["output"], source_O, y, normalization, eps, output_activation)


# ------------------------------------------------------------------ jaxpr inspection
def _jaxpr_shapes(jaxpr):
    """Shapes of every intermediate in a jaxpr, including inside scan/remat/cond bodies."""
    for eqn in jaxpr.eqns:
        for var in eqn.outvars:
            yield tuple(getattr(var.aval, "shape", ()))
        for param in eqn.params.values():
            for sub in param if isinstance(param, list | tuple) else (param,):
                if hasattr(sub, "eqns"):
                    yield from _jaxpr_shapes(sub)
                elif hasattr(getattr(sub, "jaxpr", None), "eqns"):
                    yield from _jaxpr_shapes(sub.jaxpr)


def intermediate_shapes(fn, *args):
    return set(_jaxpr_shapes(jax.make_jaxpr(fn)(*args).jaxpr))
