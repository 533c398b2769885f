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
