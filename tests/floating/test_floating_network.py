"""Sections 3.2-3.3 and 4.2: multi-layer floating networks and the FNN's recurrent data flow."""

from __future__ import annotations

import dataclasses

import floating_testlib as ref
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from fnnjax.errors import ConfigError, DataError
from fnnjax.floating import (
    FNNConfig,
    fnn_apply,
    fnn_train_apply,
    fold_params,
    folded_apply,
    input_dropout,
    multilayer_apply,
)
from fnnjax.floating.step import chunk_sources

R, N, S, D, K, BATCH = 20, 16, 3, 8, 3, 4
CFG = FNNConfig(num_inputs=R, num_outputs=S, num_hidden=N, dim=D, iterations=K, chunk_size=6)
apply = jax.jit(fnn_apply, static_argnums=2)  # compiled once per config: much faster than eager


def _params_and_x(seed, config=CFG, dtype=jnp.float32):
    c = config
    params = ref.random_fnn_params(seed, c.num_inputs, c.num_hidden, c.num_outputs, c.dim, dtype)
    return params, ref.random_inputs(seed, BATCH, c.num_inputs, dtype=dtype)


VARIANTS = [
    pytest.param(norm, path, every, id=f"{norm}-{path}-{'every' if every else 'first-only'}")
    for norm in ("l2", "softmax")
    for path in ("factored", "materialized")
    for every in (True, False)
]


@pytest.mark.parametrize("normalization,path,every", VARIANTS)
def test_fnn_follows_the_papers_procedure(normalization, path, every):
    config = dataclasses.replace(
        CFG, normalization=normalization, path=path, input_every_iteration=every
    )
    params, x = _params_and_x(0, config)
    got = apply(params, x, config)
    want = ref.fnn(params, x, iterations=K, normalization=normalization, input_every_iteration=every)
    assert got.shape == (BATCH, S)
    np.testing.assert_allclose(got, want, rtol=5e-4, atol=5e-5)


@pytest.mark.parametrize("normalization", ["l2", "softmax"])
def test_factored_and_materialized_fnn_agree(normalization):
    config = dataclasses.replace(CFG, normalization=normalization, chunk_size=7)
    params, x = _params_and_x(1, config)
    factored = apply(params, x, config)
    materialized = apply(params, x, dataclasses.replace(config, path="materialized"))
    np.testing.assert_allclose(factored, materialized, rtol=1e-4, atol=1e-5)


def test_section_4_2_variant_only_differs_after_the_first_iteration():
    params, x = _params_and_x(2)
    one = dataclasses.replace(CFG, iterations=1)
    np.testing.assert_array_equal(
        apply(params, x, one),
        apply(params, x, dataclasses.replace(one, input_every_iteration=False)),
    )
    two = dataclasses.replace(CFG, iterations=2)
    every = apply(params, x, two)
    first_only = apply(params, x, dataclasses.replace(two, input_every_iteration=False))
    assert float(jnp.max(jnp.abs(every - first_only))) > 1e-3


def test_section_4_2_variant_drops_input_neurons_from_later_normalizations():
    # Our reading of "passing the input only in the first iteration": iterations j > 1 are
    # Step(V, V, Y_{j-1}). Scaling the input embeddings by c and the input values by c leaves
    # iteration 1 unchanged (eq. 2: W(I, c O) = W(I, O) / c). Under our reading nothing else sees
    # the input neurons, so the output is unchanged; under the other reading (Y_0 = 0 but still
    # normalizing over [input | hidden]) and in the every-iteration FNN the later denominators move.
    c = 3.0
    params, x = _params_and_x(3)
    inp = params["input"]
    scaled = dict(params, input={"O": c * inp["O"], "a": c * inp["a"], "b": c * inp["b"]})
    first_only = dataclasses.replace(CFG, input_every_iteration=False)
    np.testing.assert_allclose(
        apply(scaled, x, first_only), apply(params, x, first_only), rtol=1e-4, atol=1e-5
    )
    assert float(jnp.max(jnp.abs(apply(scaled, x, CFG) - apply(params, x, CFG)))) > 1e-3


def test_jit_equals_no_jit():
    config = CFG
    params, x = _params_and_x(4, config)
    eager = fnn_apply(params, x, config)
    jitted = jax.jit(fnn_apply, static_argnames="config")(params, x, config=config)
    np.testing.assert_allclose(jitted, eager, rtol=1e-5, atol=1e-6)


def test_vmap_over_a_population_of_parameter_sets():
    members = [_params_and_x(seed)[0] for seed in (5, 6)]
    population = jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *members)
    x = ref.random_inputs(5, BATCH, R)
    batched = jax.jit(jax.vmap(lambda p: fnn_apply(p, x, CFG)))(population)
    for i in range(2):
        single = apply(jax.tree_util.tree_map(lambda a, i=i: a[i], population), x, CFG)
        np.testing.assert_allclose(batched[i], single, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("normalization,path,every", [VARIANTS[0], VARIANTS[6]])
def test_fnn_gradients_match_finite_differences(normalization, path, every):
    with jax.enable_x64(True):
        config = FNNConfig(num_inputs=6, num_outputs=2, num_hidden=5, dim=3, iterations=2,
                           normalization=normalization, path=path, input_every_iteration=every,
                           chunk_size=4)
        params, x = _params_and_x(6, config, jnp.float64)
        f = jax.jit(lambda p: apply(p, x, config))
        check_grads(f, (params,), order=1, modes=["rev"], atol=1e-5, rtol=1e-5)


def test_jitted_train_step_does_not_retrace():
    traces = []

    @jax.jit
    def train_step(params, key, x):
        traces.append(1)
        return jax.value_and_grad(lambda p: fnn_train_apply(key, p, x, CFG).sum())(params)

    params, x = _params_and_x(7)
    for i in range(3):
        _, grads = train_step(params, jax.random.key(i), x + i)
        params = jax.tree_util.tree_map(lambda p, g: p - 1e-3 * g, params, grads)
    assert len(traces) == 1


def test_input_dropout_is_keyed_and_scaled():
    x = jnp.ones((200, 50))
    a = input_dropout(jax.random.key(0), x, 0.1)
    np.testing.assert_array_equal(a, input_dropout(jax.random.key(0), x, 0.1))
    assert not np.array_equal(a, input_dropout(jax.random.key(1), x, 0.1))
    kept = a != 0
    assert 0.87 < float(kept.mean()) < 0.93
    np.testing.assert_allclose(a[kept], 1.0 / 0.9, rtol=1e-6)
    assert input_dropout(jax.random.key(0), x, 0.0) is x


def test_train_apply_drops_input_and_eval_apply_does_not():
    params, x = _params_and_x(8)
    train = fnn_train_apply(jax.random.key(0), params, x, CFG)
    assert float(jnp.max(jnp.abs(train - apply(params, x, CFG)))) > 1e-5
    no_dropout = dataclasses.replace(CFG, input_dropout=0.0)
    np.testing.assert_array_equal(
        fnn_train_apply(jax.random.key(0), params, x, no_dropout), fnn_apply(params, x, no_dropout)
    )


@pytest.mark.parametrize("normalization", ["l2", "softmax"])
@pytest.mark.parametrize("path", ["factored", "materialized"])
def test_multilayer_network_follows_section_3_2(normalization, path):
    params = ref.random_multilayer_params(9, R, (7, 5, 6), S, D)
    x = ref.random_inputs(9, BATCH, R)
    got = jax.jit(multilayer_apply, static_argnames=("normalization", "path", "chunk_size"))(
        params, x, normalization=normalization, path=path, chunk_size=4)
    want = ref.multilayer(params, x, normalization=normalization)
    np.testing.assert_allclose(got, want, rtol=5e-4, atol=5e-5)


def test_chunking_handles_sizes_that_do_not_divide():
    chunks = chunk_sources(jnp.ones((10, 3)), 4)
    assert chunks.O.shape == (3, 4, 3)
    assert int(chunks.mask.sum()) == 10


@pytest.mark.parametrize("path", ["factored", "materialized"])
def test_zero_embeddings_give_finite_outputs_and_gradients(path):
    # all-zero input embeddings: every hidden neuron's iteration-1 similarity row is zero
    config = dataclasses.replace(CFG, path=path)
    params, x = _params_and_x(10)
    params = dict(params, input=dict(params["input"], O=jnp.zeros_like(params["input"]["O"])))
    loss = jax.jit(jax.value_and_grad(lambda p: jnp.sum(fnn_apply(p, x, config) ** 2)))
    value, grads = loss(params)
    assert bool(jnp.isfinite(value))
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree_util.tree_leaves(grads))


@pytest.mark.parametrize("normalization,path", [("l2", "factored"), ("l2", "materialized"),
                                                ("softmax", "factored")])
def test_input_of_the_wrong_width_raises_one_data_error(normalization, path):
    config = dataclasses.replace(CFG, normalization=normalization, path=path)
    params, _ = _params_and_x(0, config)
    message = rf"x must have shape \[\.\.\., {R}\] \(config\.num_inputs = {R} .*got shape \(4, {R + 1}\)"
    for apply_fn in (fnn_apply, jax.jit(fnn_apply, static_argnums=2)):
        with pytest.raises(DataError, match=message):
            apply_fn(params, jnp.zeros((4, R + 1)), config)
    with pytest.raises(DataError, match=message):
        fnn_train_apply(jax.random.key(0), params, jnp.zeros((4, R + 1)), config)
    with pytest.raises(DataError, match="got shape \\(\\)"):
        fnn_apply(params, jnp.zeros(()), config)
    # any leading axes are batch axes, as before
    assert fnn_apply(params, jnp.zeros((2, 3, R)), config).shape == (2, 3, S)


def test_params_built_for_another_input_width_raise_a_config_error():
    params, x = _params_and_x(0)
    with pytest.raises(ConfigError, match=f"hold {R} input neurons but config.num_inputs is {R + 1}"):
        fnn_apply(params, jnp.zeros((4, R + 1)), dataclasses.replace(CFG, num_inputs=R + 1))
    with pytest.raises(DataError, match=rf"\[\.\.\., {R}\]"):
        folded_apply(fold_params(params, CFG), jnp.zeros((4, R - 1)), CFG)
