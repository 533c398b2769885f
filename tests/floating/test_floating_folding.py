"""Section 3.4: folding eq. 2's normalization into the input embeddings for inference."""

from __future__ import annotations

import dataclasses

import floating_testlib as ref
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnnjax.floating import FNNConfig, fnn_apply, fold_params, folded_apply
from fnnjax.models import param_count as tree_param_count

R, N, S, D, K = 19, 15, 3, 6, 3
CFG = FNNConfig(num_inputs=R, num_outputs=S, num_hidden=N, dim=D, iterations=K)


def _params_and_x(seed):
    return ref.random_fnn_params(seed, R, N, S, D), ref.random_inputs(seed, 4, R)


@pytest.mark.parametrize("every", [True, False], ids=["input-every-iteration", "input-first-only"])
def test_folded_inference_equals_training_mode(every):
    config = dataclasses.replace(CFG, input_every_iteration=every)
    params, x = _params_and_x(0)
    folded = jax.jit(fold_params, static_argnums=1)(params, config)
    got = jax.jit(folded_apply, static_argnums=2)(folded, x, config)
    training = jax.jit(fnn_apply, static_argnums=2)(
        params, x, dataclasses.replace(config, path="materialized")
    )
    np.testing.assert_allclose(got, training, rtol=1e-4, atol=1e-5)
    want = ref.fnn(params, x, iterations=K, input_every_iteration=every)
    np.testing.assert_allclose(got, want, rtol=5e-4, atol=5e-5)


def test_hidden_neurons_need_two_folds():
    # iteration 1 normalizes over the input neurons, later ones over [input | hidden]
    params, _ = _params_and_x(1)
    folded = fold_params(params, CFG)
    hidden = folded["hidden"]
    assert not np.allclose(hidden["I_first"], hidden["I_later"])
    s_first = params["hidden"]["I"] @ params["input"]["O"].T
    np.testing.assert_allclose(
        hidden["I_first"], params["hidden"]["I"] / jnp.sum(s_first**2, axis=1, keepdims=True),
        rtol=1e-5,
    )
    sources = jnp.concatenate([params["input"]["O"], params["hidden"]["O"]])
    s_later = params["hidden"]["I"] @ sources.T
    np.testing.assert_allclose(
        hidden["I_later"], params["hidden"]["I"] / jnp.sum(s_later**2, axis=1, keepdims=True),
        rtol=1e-5,
    )


def test_folded_inference_memory_is_linear_in_neurons():
    params, x = _params_and_x(2)
    folded = fold_params(params, CFG)
    assert tree_param_count(folded) == D * (R + 3 * N + S) + 2 * (R + N + S)
    shapes = ref.intermediate_shapes(lambda f, x: folded_apply(f, x, CFG), folded, x)
    assert all(len(s) < 2 or (s[-1] not in (R, N, R + N) or s[-2] not in (N, S)) for s in shapes)
    # the check can see W: the materialized path has the [N, R + N] matrix
    materialized = ref.intermediate_shapes(
        lambda p, x: fnn_apply(p, x, dataclasses.replace(CFG, path="materialized")), params, x
    )
    assert (N, R + N) in materialized


def test_softmax_cannot_be_folded():
    params, _ = _params_and_x(3)
    with pytest.raises(ValueError, match="softmax"):
        fold_params(params, dataclasses.replace(CFG, normalization="softmax"))


@pytest.mark.parametrize("every", [True, False], ids=["input-every-iteration", "input-first-only"])
def test_folds_stay_accurate_for_embeddings_nearly_orthogonal_to_their_sources(every):
    # d = 8: 3 input neurons and 12 hidden ones spanning 3 dims (rank-deficient, M > d: the QR
    # path) leave 2 dims orthogonal to [input | hidden]; every target's similarities are ~1e-4.
    d, config = 8, FNNConfig(num_inputs=3, num_outputs=2, num_hidden=12, dim=8,
                             input_every_iteration=every)
    o_in, o_hid = ref.low_rank_embeddings(0, 3, d), ref.low_rank_embeddings(1, 12, d, rank=3)
    o_in, o_hid = (np.asarray(np.float32(o), np.float64) for o in (o_in, o_hid))
    i_hid = ref.nearly_orthogonal_targets(2, 12, np.concatenate([o_in, o_hid]))
    i_out = ref.nearly_orthogonal_targets(3, 2, o_hid)
    i_hid, i_out = (np.asarray(np.float32(i), np.float64) for i in (i_hid, i_out))
    params = ref.random_fnn_params(4, 3, 12, 2, d)
    params["input"]["O"], params["hidden"]["O"] = jnp.float32(o_in), jnp.float32(o_hid)
    params["hidden"]["I"], params["output"]["I"] = jnp.float32(i_hid), jnp.float32(i_out)
    folded = jax.jit(fold_params, static_argnums=1)(params, config)

    def fold(I, *groups):  # noqa: E741
        return I / (sum(np.sum((I @ o.T) ** 2, axis=1) for o in groups) + config.eps)[:, None]

    later = (o_in, o_hid) if every else (o_hid,)
    for got, want in [
        (folded["hidden"]["I_first"], fold(i_hid, o_in)),
        (folded["hidden"]["I_later"], fold(i_hid, *later)),
        (folded["output"]["I"], fold(i_out, o_hid)),
    ]:
        error = np.linalg.norm(np.asarray(got, np.float64) - want, axis=1) / np.linalg.norm(want, axis=1)
        assert error.max() < 1e-2  # the former Gram form: 23, 56 and 0.34 here
