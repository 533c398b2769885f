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
from fnnjax.floating.step import (
    chunk_sources,
    gram_form_is_accurate,
    l2_fold,
    l2_sources,
    softmax_aggregate,
    softmax_lse,
    squared_similarity_norms,
)

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


# --------------------------------------------- l2 denominators: adversarial accuracy, gradients
# Targets nearly orthogonal to their sources: similarities ~1e-4 |I| |O|. Eq. 2's denominators are
# then ~1e-8 |I|^2 |O|^2, which float32 resolves from the similarities (the materialized path) but
# not from the Gram matrix O^T O, whose rounding error is ~6e-8 |I|^2 |O|^2 (the squared condition).
ADVERSARIAL = {
    "3-sources-in-32-dims": (3, 32, None),  # few sources: M < d
    "200-sources-spanning-4-of-32-dims": (200, 32, 4),  # rank-deficient O, M > d (QR path)
}
ACCURATE = 1e-2  # the float32 materialized path gets ~3e-4 on these cases


def _nearly_orthogonal_case(case, seed=0, num_targets=16):
    m, d, rank = ADVERSARIAL[case]
    O = jnp.asarray(ref.low_rank_embeddings(seed, m, d, rank), jnp.float32)  # noqa: E741
    I = jnp.asarray(ref.nearly_orthogonal_targets(seed + 1, num_targets, O), jnp.float32)  # noqa: E741
    return I, O


def _max_relative_row_error(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.max(np.linalg.norm(got - want, axis=1) / np.linalg.norm(want, axis=1)))


def _gram_form_weights(I, O, eps=1e-12):  # noqa: E741
    """Eq. 2 with the denominators I_v^T (O^T O) I_v: the factored path's former formula."""
    den = jnp.sum((I @ (O.T @ O)) * I, axis=-1) + eps
    return (I @ O.T) / den[:, None]


@pytest.mark.parametrize("case", ADVERSARIAL)
def test_factored_l2_stays_accurate_for_targets_nearly_orthogonal_to_their_sources(case):
    I, O = _nearly_orthogonal_case(case)  # noqa: E741
    want = ref.weights(np.asarray(I, np.float64), np.asarray(O, np.float64), "l2", 1e-12)
    targets = {"I": I, "a": jnp.ones(I.shape[0]), "b": jnp.zeros(I.shape[0])}
    # with Y = identity, Y W^T is W^T: the weights exactly as the factored path applies them
    got = factored_step(targets, O, jnp.eye(O.shape[0]), normalization="l2", activation="identity").T
    assert _max_relative_row_error(connection_weights(I, O), want) < ACCURATE  # float32 can do it
    assert _max_relative_row_error(got, want) < ACCURATE
    # the bound has teeth: the Gram form of the same denominators is far off (0.6 and 38 here)
    assert _max_relative_row_error(_gram_form_weights(I, O), want) > ACCURATE


def _l2_fold_loss(factored):
    """sum(C * fold(I)) over a union of source groups, factored or by autodiff of I O^T."""

    def loss(I, groups, C):  # noqa: E741
        if factored:
            folded = l2_fold(I, [l2_sources(o) for o in groups])
        else:
            den = sum(jnp.sum(jnp.square(I @ o.T), axis=-1) for o in groups) + 1e-12
            folded = I / den[:, None]
        return jnp.sum(C * folded)

    return loss


GRADIENT_CASES = {  # source groups as (M, rank), d, targets nearly orthogonal to the sources?
    "more-sources-than-dims": (((17, None),), 5, False),
    "fewer-sources-than-dims": (((3, None),), 8, False),
    "rank-deficient-sources": (((20, 2),), 8, False),
    "union-of-two-groups": (((3, None), (20, 2)), 8, False),
    # these take the QR form (the Gram form is used only where it is accurate)
    "nearly-orthogonal-rank-deficient": (((20, 2),), 8, True),
    "nearly-orthogonal-union": (((3, None), (20, 2)), 8, True),
}


def _gradient_case(case, dtype, seed=0):
    groups, d, nearly_orthogonal = GRADIENT_CASES[case]
    rng = np.random.default_rng(seed)
    Os = [ref.low_rank_embeddings(seed + i, m, d, r) for i, (m, r) in enumerate(groups)]
    if nearly_orthogonal:
        I = ref.nearly_orthogonal_targets(seed, 6, np.concatenate(Os), similarity=1e-3)  # noqa: E741
        assert not gram_form_is_accurate(I, Os[-1].T @ Os[-1], np.sum((I @ Os[-1].T) ** 2, -1))
    else:
        I = rng.normal(size=(6, d)) / np.sqrt(d)  # noqa: E741
    return (jnp.asarray(I, dtype), [jnp.asarray(o, dtype) for o in Os],
            jnp.asarray(rng.normal(size=(6, d)), dtype))


@pytest.mark.parametrize("case", GRADIENT_CASES)
def test_l2_denominator_gradients_equal_autodiff_of_the_similarities(case):
    # float64, so any difference is the formula, not rounding; QR is never differentiated
    with jax.enable_x64(True):
        I, Os, C = _gradient_case(case, jnp.float64)  # noqa: E741
        got = jax.jit(jax.grad(_l2_fold_loss(True), argnums=(0, 1)))(I, Os, C)
        want = jax.grad(_l2_fold_loss(False), argnums=(0, 1))(I, Os, C)
        for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want), strict=True):
            # rounding is relative to the summands (~1e8 in the nearly orthogonal cases), not to
            # each entry, which cancellation can make 1e4 times smaller: atol scales with them
            np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-12 * max(1.0, np.abs(w).max()))
        if GRADIENT_CASES[case][2]:
            return  # ~1e6-sized folds with ~1e12 curvature: finite differences say nothing here
        # and against finite differences (the denominators are polynomials in O even where QR is not
        # differentiable: rank-deficient or wide O)
        check_grads(lambda i, os: _l2_fold_loss(True)(i, os, C), (I, Os), order=1, modes=["rev"],
                    atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("case", ADVERSARIAL)
def test_l2_denominator_gradients_stay_accurate_in_float32_for_nearly_orthogonal_targets(case):
    I, O = _nearly_orthogonal_case(case, num_targets=8)  # noqa: E741
    C = jnp.asarray(np.random.default_rng(3).normal(size=I.shape), jnp.float32)
    grad = jax.grad(_l2_fold_loss(True), argnums=(0, 1))
    got = jax.jit(grad)(I, [O], C)
    eager = grad(I, [O], C)
    with jax.enable_x64(True):
        f64 = lambda a: jnp.asarray(np.asarray(a, np.float64))  # noqa: E731
        want = jax.grad(_l2_fold_loss(False), argnums=(0, 1))(f64(I), [f64(O)], f64(C))
    for g, e, w in zip(*map(jax.tree_util.tree_leaves, (got, eager, want)), strict=True):
        w = np.asarray(w)
        for a in (g, e):  # jit and eager: both ~1e-4 here, like the materialized path's gradient
            assert np.linalg.norm(np.asarray(a, np.float64) - w) < ACCURATE * np.linalg.norm(w)


@pytest.mark.parametrize("case", ADVERSARIAL)
def test_gram_form_is_used_only_where_it_is_accurate(case):
    # from similarities of 0.1 |I| |O| (the Gram form is accurate and used) down to 1e-4 (the QR
    # form): every denominator stays about as accurate as the materialized path's
    m, d, rank = ADVERSARIAL[case]
    O = jnp.asarray(ref.low_rank_embeddings(0, m, d, rank), jnp.float32)  # noqa: E741
    sources = l2_sources(O)
    norms = jax.jit(squared_similarity_norms)
    chosen = []
    for similarity in (1e-1, 1e-2, 1e-3, 1e-4):
        I = jnp.asarray(ref.nearly_orthogonal_targets(1, 32, O, similarity), jnp.float32)  # noqa: E741
        want = np.sum((np.asarray(I, np.float64) @ np.asarray(O, np.float64).T) ** 2, axis=1)
        got = np.asarray(norms(I, sources), np.float64)
        assert np.max(np.abs(got - want) / want) < 2e-3  # materialized: up to ~6e-4 here
        chosen.append(bool(gram_form_is_accurate(I, sources.G, jnp.sum((I @ sources.G) * I, -1))))
    assert chosen == [True, False, False, False]
