"""Theorem 1: every multi-layer floating network is an FNN with N + 1 neurons, dim l*d, l iterations."""

from __future__ import annotations

import floating_testlib as ref
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnnjax.floating import FNNConfig, multilayer_to_fnn, multilayer_to_fnn_config
from fnnjax.floating import fnn_apply as fnn_apply_eager
from fnnjax.floating import multilayer_apply as multilayer_apply_eager
from fnnjax.floating.theorem1 import block_embedding

fnn_apply = jax.jit(fnn_apply_eager, static_argnums=2)
multilayer_apply = jax.jit(multilayer_apply_eager, static_argnames=("normalization", "path", "eps"))

R, S, D, BATCH = 10, 3, 4, 5
LAYERS = {1: (6,), 2: (6, 4), 3: (6, 4, 5)}


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def _network(seed, layer_sizes):
    params = ref.random_multilayer_params(seed, R, layer_sizes, S, D, np.float64)
    return params, ref.random_inputs(seed, BATCH, R, dtype=np.float64)


def _fnn_config(layer_sizes, **kwargs):
    num_layers = len(layer_sizes)
    config = FNNConfig(num_inputs=R, num_outputs=S, num_hidden=sum(layer_sizes) + 1,
                       dim=num_layers * D, iterations=num_layers, **kwargs)
    params, _ = _network(0, layer_sizes)
    assert multilayer_to_fnn_config(params, **kwargs) == config
    return config


@pytest.mark.parametrize(
    "num_layers,path,every",
    [
        pytest.param(num_layers, path, every, id=f"l={num_layers}-{path}-{'every' if every else 'first-only'}")
        for num_layers, path, every in [
            (1, "factored", True),
            (2, "factored", False),
            (2, "materialized", True),
            (3, "factored", True),
            (3, "factored", False),
            (3, "materialized", False),
        ]
    ],
)
def test_multilayer_floating_network_is_modeled_by_an_fnn(x64, num_layers, path, every):
    del x64
    layer_sizes = LAYERS[num_layers]
    params, x = _network(num_layers, layer_sizes)
    fnn_params = multilayer_to_fnn(params)
    config = _fnn_config(layer_sizes, path=path, input_every_iteration=every)
    got = fnn_apply(fnn_params, x, config)
    want = multilayer_apply(params, x, path=path)
    assert got.dtype == jnp.float64
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(want, ref.multilayer(params, x), rtol=1e-9, atol=1e-10)


def test_the_fnn_has_n_plus_1_neurons_of_dimension_l_times_d(x64):
    del x64
    params, _ = _network(0, LAYERS[3])
    fnn_params = multilayer_to_fnn(params, epsilon=1e-3)
    hidden = fnn_params["hidden"]
    assert hidden["I"].shape == hidden["O"].shape == (6 + 4 + 5 + 1, 3 * D)
    assert fnn_params["input"]["O"].shape == (R, 3 * D)
    assert fnn_params["output"]["I"].shape == (S, 3 * D)
    # v'_0: F = 0 * x and epsilon embeddings
    assert float(hidden["a"][0]) == 0.0 and float(hidden["b"][0]) == 0.0
    np.testing.assert_array_equal(hidden["I"][0], 1e-3)
    np.testing.assert_array_equal(hidden["O"][0], 1e-3)
    # a layer-2 neuron: I in block 2, O in block 3 (E_{(j mod l) + 1})
    v = 1 + 6
    np.testing.assert_array_equal(hidden["I"][v, D:2 * D], params["layers"][1]["I"][0])
    np.testing.assert_array_equal(hidden["O"][v, 2 * D:], params["layers"][1]["O"][0])
    assert float(jnp.abs(hidden["I"][v, :D]).sum() + jnp.abs(hidden["O"][v, :2 * D]).sum()) == 0.0
    # a layer-3 (last) neuron's O wraps around to block 1
    np.testing.assert_array_equal(hidden["O"][-1, :D], params["layers"][2]["O"][-1])


def test_block_embeddings_are_orthogonal_across_blocks():  # eq. 6
    x = jnp.arange(1.0, 5.0)[None]
    y = jnp.arange(2.0, 6.0)[None]
    for i in (1, 2, 3):
        for j in (1, 2, 3):
            dot = float((block_embedding(x, i, 3) @ block_embedding(y, j, 3).T)[0, 0])
            assert dot == (float((x @ y.T)[0, 0]) if i == j else 0.0)


def test_wrong_block_wiring_breaks_the_equivalence(x64):
    # control: the test above can fail. Putting O of layer j in block j (not (j mod l) + 1)
    # disconnects the chain.
    del x64
    params, x = _network(3, LAYERS[3])
    fnn_params = multilayer_to_fnn(params)
    hidden_O = fnn_params["hidden"]["O"]
    rewired = jnp.concatenate(
        [hidden_O[:1]]
        + [block_embedding(layer["O"], j, 3) for j, layer in enumerate(params["layers"], start=1)]
    )
    fnn_params["hidden"] = dict(fnn_params["hidden"], O=rewired)
    got = fnn_apply(fnn_params, x, _fnn_config(LAYERS[3]))
    assert float(jnp.max(jnp.abs(got - multilayer_apply(params, x)))) > 1e-3


def test_fewer_iterations_than_layers_do_not_reach_the_output(x64):
    del x64
    params, x = _network(4, LAYERS[3])
    config = _fnn_config(LAYERS[3])
    short = FNNConfig(**{**config.__dict__, "iterations": 2})
    got = fnn_apply(multilayer_to_fnn(params), x, short)
    assert float(jnp.max(jnp.abs(got - multilayer_apply(params, x)))) > 1e-3


def test_proof_needs_zero_over_zero_as_zero_in_the_first_iteration(x64):
    # v'_0 is not a source in iteration 1 (sources: input neurons only), so with exact eq. 2
    # (eps = 0) neurons of layers j >= 2 compute 0/0 there and the NaN reaches the output. Our
    # eps > 0 is the rule the construction needs; v'_0's epsilon then may even be 0.
    del x64
    params, x = _network(5, LAYERS[2])
    fnn_params = multilayer_to_fnn(params)
    exact = _fnn_config(LAYERS[2], eps=0.0)
    assert bool(jnp.all(jnp.isfinite(multilayer_apply(params, x, eps=0.0))))
    assert not bool(jnp.all(jnp.isfinite(fnn_apply(fnn_params, x, exact))))
    np.testing.assert_allclose(
        fnn_apply(multilayer_to_fnn(params, epsilon=0.0), x, _fnn_config(LAYERS[2])),
        multilayer_apply(params, x),
        rtol=1e-9,
        atol=1e-10,
    )


def test_equivalence_needs_l2_normalization(x64):
    # with softmax, zero similarity is not zero weight, so the block construction leaks
    del x64
    params, x = _network(6, LAYERS[2])
    got = fnn_apply(multilayer_to_fnn(params), x, _fnn_config(LAYERS[2], normalization="softmax"))
    want = multilayer_apply(params, x, normalization="softmax")
    assert float(jnp.max(jnp.abs(got - want))) > 1e-3
