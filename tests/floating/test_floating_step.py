"""Eq. 1-5 of the FNN paper: normalizations, Step, and its factored (W-free) computation."""

from __future__ import annotations

import math

import floating_testlib as ref
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from fnnjax.floating import (
    connection_weights,
    l2_normalize_rows,
    normalize_rows,
)
from fnnjax.floating import factored_step as factored_step_eager
from fnnjax.floating import materialized_step as materialized_step_eager
from fnnjax.floating.step import chunk_sources, softmax_aggregate, softmax_lse

# jitted once per static configuration: far cheaper on CPU than op-by-op eager execution
_STATIC = ("normalization", "activation", "eps", "chunk_size")
materialized_step = jax.jit(materialized_step_eager, static_argnames=_STATIC[:3])
factored_step = jax.jit(factored_step_eager, static_argnames=_STATIC)

N, M, D, BATCH = 13, 17, 5, 3  # distinct sizes so an [N, M] intermediate is recognizable


def _random_step_inputs(seed, n=N, m=M, d=D, batch=BATCH, dtype=np.float32):
    rng = np.random.default_rng(seed)
    targets = {
        "I": jnp.asarray(rng.normal(size=(n, d)), dtype),
        "a": jnp.asarray(rng.normal(size=n), dtype),
        "b": jnp.asarray(0.1 * rng.normal(size=n), dtype),
    }
    return targets, jnp.asarray(rng.normal(size=(m, d)), dtype), jnp.asarray(rng.uniform(size=(batch, m)), dtype)


def test_eq2_divides_by_the_sum_of_squares_not_its_square_root():
    w = l2_normalize_rows(jnp.array([[3.0, 4.0]]), eps=0.0)
    np.testing.assert_allclose(w, [[3.0 / 25.0, 4.0 / 25.0]], rtol=1e-6)


def test_softmax_normalization_makes_convex_combinations():
    w = normalize_rows(jnp.array([[0.0, 1.0, -2.0]]), "softmax")
    np.testing.assert_allclose(w.sum(), 1.0, rtol=1e-6)
    assert bool(jnp.all(w > 0))


@pytest.mark.parametrize("normalization", ["l2", "softmax"])
@pytest.mark.parametrize("step", [materialized_step, factored_step], ids=["materialized", "factored"])
def test_step_matches_literal_equations(normalization, step):
    targets, source_O, y = _random_step_inputs(0)
    kwargs = {"chunk_size": 4} if step is factored_step else {}
    got = step(targets, source_O, y, normalization=normalization, **kwargs)
    want = ref.step(ref.to_numpy(targets), np.asarray(source_O, np.float64), np.asarray(y, np.float64),
                    normalization, 1e-12)
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)
    assert got.shape == (BATCH, N)


def test_weights_match_literal_equations():
    targets, source_O, _ = _random_step_inputs(1)
    for normalization in ("l2", "softmax"):
        got = connection_weights(targets["I"], source_O, normalization)
        want = ref.weights(np.asarray(targets["I"], np.float64), np.asarray(source_O, np.float64),
                           normalization, 1e-12)
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-6)


@pytest.mark.parametrize("chunk_size", [1, 4, 5, 16, 17, 100])  # divides M=17 or not, and > M
def test_softmax_streaming_equals_unchunked(chunk_size):
    targets, source_O, y = _random_step_inputs(2)
    sources = chunk_sources(source_O, chunk_size)
    lse = softmax_lse(targets["I"], sources)
    np.testing.assert_allclose(
        lse, jax.nn.logsumexp(targets["I"] @ source_O.T, axis=-1), rtol=1e-5, atol=1e-5
    )
    got = softmax_aggregate(targets["I"], sources, y, lse)
    want = y @ jax.nn.softmax(targets["I"] @ source_O.T, axis=-1).T
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_softmax_streaming_survives_large_logits():
    # Logits of +-400 overflow a naive exp in float32; the running log-sum-exp must not.
    targets, source_O, y = _random_step_inputs(3)
    source_O = 40.0 * source_O
    targets = dict(targets, I=10.0 * targets["I"])
    got = factored_step(targets, source_O, y, normalization="softmax", chunk_size=5)
    want = materialized_step(targets, source_O, y, normalization="softmax")
    assert bool(jnp.all(jnp.isfinite(got)))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_softmax_step_is_attention_with_queries_I_keys_O_values_Y():
    targets, source_O, y = _random_step_inputs(4)
    width = max(D, BATCH)  # dot_product_attention needs equal key and value widths: zero-pad
    q = jnp.pad(targets["I"], ((0, 0), (0, width - D)))[None, :, None, :]
    k = jnp.pad(source_O, ((0, 0), (0, width - D)))[None, :, None, :]
    v = jnp.pad(y.T, ((0, 0), (0, width - BATCH)))[None, :, None, :]
    attention = jax.nn.dot_product_attention(q, k, v, scale=1.0)[0, :, 0, :BATCH].T
    got = factored_step(
        targets, source_O, y, normalization="softmax", activation="identity", chunk_size=4
    )
    np.testing.assert_allclose(got, targets["a"] * attention + targets["b"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("normalization", ["l2", "softmax"])
def test_factored_step_never_forms_the_n_by_m_matrix(normalization):
    targets, source_O, y = _random_step_inputs(5)

    def f(targets, source_O, y):
        return factored_step(targets, source_O, y, normalization=normalization, chunk_size=4)

    def g(targets, source_O, y):
        return materialized_step(targets, source_O, y, normalization=normalization)

    # forward and backward: no intermediate as large as W (not even stacked per-chunk residuals)
    grad = jax.grad(lambda *a: f(*a).sum(), argnums=(0, 1, 2))
    sizes = {math.prod(s) for s in ref.intermediate_shapes(grad, targets, source_O, y)}
    assert max(sizes) < N * M
    assert (N, M) in ref.intermediate_shapes(g, targets, source_O, y)  # the check can see W


@pytest.mark.parametrize("step", [materialized_step, factored_step], ids=["materialized", "factored"])
def test_all_zero_similarity_rows_give_zero_weights_not_nan(step):
    targets, source_O, y = _random_step_inputs(6)
    targets = dict(targets, I=targets["I"].at[:4].set(0.0))  # 4 neurons with zero input embedding
    out = step(targets, source_O, y, normalization="l2")
    assert bool(jnp.all(jnp.isfinite(out)))
    # zero similarities -> zero weights -> F(0) = ReLU(b)
    np.testing.assert_allclose(out[:, :4], jnp.broadcast_to(jax.nn.relu(targets["b"][:4]), (BATCH, 4)))
    grads = jax.grad(lambda t: step(t, source_O, y, normalization="l2").sum())(targets)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree_util.tree_leaves(grads))
    # the epsilon is what makes this work: exact eq. 2 (eps=0) is 0/0 there
    assert not bool(jnp.all(jnp.isfinite(step(targets, source_O, y, normalization="l2", eps=0.0))))


@pytest.mark.parametrize("normalization", ["l2", "softmax"])
def test_factored_step_gradients_match_finite_differences(normalization):
    # the custom parts (Gram denominators, streamed log-sum-exp with remat) are in the factored
    # path; the FNN-level test checks the materialized one
    with jax.enable_x64(True):
        targets, source_O, y = _random_step_inputs(7, n=4, m=6, d=3, batch=2, dtype=jnp.float64)

        @jax.jit
        def f(targets, source_O, y):
            return factored_step(targets, source_O, y, normalization=normalization,
                                 activation="identity", chunk_size=4)

        check_grads(f, (targets, source_O, y), order=1, modes=["rev"], atol=1e-6, rtol=1e-6)
