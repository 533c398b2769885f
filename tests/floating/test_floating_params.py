"""Table 1 parameter counts, presets, initialization and the Flax layer / registry factories."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fnnjax.errors import DataError
from fnnjax.floating import (
    FNN,
    FNNConfig,
    fnn_1024,
    fnn_5000,
    fnn_apply,
    fnn_custom,
    init_params,
    param_count,
    preset_config,
)
from fnnjax.models import get_model
from fnnjax.models import param_count as tree_param_count

TABLE_1 = [  # (preset, input shape, paper's parameter count)
    ("fnn-1024", (28, 28, 1), 731_188),
    ("fnn-5000", (28, 28, 1), 2_774_852),
    ("fnn-1024", (32, 32, 3), 1_321_492),
    ("fnn-5000", (32, 32, 3), 3_365_156),
]
FACTORIES = {"fnn-1024": fnn_1024, "fnn-5000": fnn_5000}


@pytest.mark.parametrize("name,input_shape,expected", TABLE_1)
def test_parameter_counts_match_table_1(name, input_shape, expected):
    config = preset_config(name, math.prod(input_shape), 10)
    assert param_count(config) == expected
    shapes = jax.eval_shape(lambda k: init_params(k, config), jax.random.key(0))
    assert tree_param_count(shapes) == expected
    model = FACTORIES[name](10, input_shape)
    variables = jax.eval_shape(
        lambda k: model.init(k, jnp.zeros((1, *input_shape))), jax.random.key(0)
    )
    assert set(variables) == {"params"}
    assert tree_param_count(variables["params"]) == expected


def test_fnn_parameters_are_linear_in_neurons_not_quadratic():
    # section 3.2: O(d (M + N)) parameters, not O(M N)
    small = param_count(FNNConfig(num_inputs=100, num_outputs=10, num_hidden=1000, dim=16))
    large = param_count(FNNConfig(num_inputs=100, num_outputs=10, num_hidden=2000, dim=16))
    assert large - small == 1000 * (2 * 16 + 2)


def test_initialization_scheme():
    config = FNNConfig(num_inputs=300, num_outputs=10, num_hidden=400, dim=64)
    params = init_params(jax.random.key(0), config)
    for group, name in [("input", "O"), ("hidden", "I"), ("hidden", "O"), ("output", "I")]:
        norms = jnp.linalg.norm(params[group][name], axis=-1)
        assert abs(float(norms.mean()) - 1.0) < 0.05  # N(0, 1/d) entries: unit-norm embeddings
    assert not np.allclose(params["hidden"]["I"], params["hidden"]["O"])
    for group in ("input", "hidden", "output"):
        np.testing.assert_array_equal(params[group]["a"], 1.0)
        np.testing.assert_array_equal(params[group]["b"], 0.0)
    again = init_params(jax.random.key(0), config)
    np.testing.assert_array_equal(again["hidden"]["I"], params["hidden"]["I"])


def test_presets_pass_options_through():
    model = fnn_1024(10, (28, 28, 1), iterations=2, normalization="softmax", path="materialized",
                     input_every_iteration=False, input_dropout=0.2, chunk_size=64)
    assert (model.num_hidden, model.dim, model.iterations) == (1024, 256, 2)
    assert (model.normalization, model.path, model.input_every_iteration) == (
        "softmax", "materialized", False)
    assert (model.input_dropout, model.chunk_size, model.num_inputs) == (0.2, 64, 784)
    assert fnn_5000(100, (32, 32, 3)).num_hidden == 5000
    custom = fnn_custom(3, (7,), num_hidden=9, dim=4, iterations=1, output_activation="relu")
    assert (custom.num_hidden, custom.dim, custom.output_activation) == (9, 4, "relu")


def test_registry_builds_the_fnn_models():
    assert isinstance(get_model("fnn-1024", 10, (28, 28, 1)), FNN)
    assert get_model("fnn", 10, (8,), num_hidden=12, dim=4).num_hidden == 12


@pytest.mark.parametrize(
    "factory,kwargs,argument",
    [
        (fnn_1024, {"normalisation": "l2"}, "normalisation"),
        (fnn_1024, {"num_hidden": 10}, "num_hidden"),
        (fnn_5000, {"dim": 64}, "dim"),
        (fnn_1024, {"normalization": "l1"}, "normalization"),
        (fnn_1024, {"path": "fast"}, "path"),
        (fnn_1024, {"iterations": 0}, "iterations"),
        (fnn_1024, {"input_dropout": 1.0}, "input_dropout"),
        (fnn_1024, {"input_every_iteration": "yes"}, "input_every_iteration"),
        (fnn_custom, {"num_hidden": -1}, "num_hidden"),
        (fnn_custom, {"chunk_size": 0}, "chunk_size"),
        (fnn_custom, {"output_activation": "tanh"}, "output_activation"),
        (fnn_custom, {"eps": -1.0}, "eps"),
        (fnn_custom, {"lr": 0.1}, "lr"),
    ],
)
def test_bad_options_raise_one_clear_value_error(factory, kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        factory(10, (28, 28, 1), **kwargs)


@pytest.mark.parametrize("bad_shape", [(), (28, 0), "28x28", None])
def test_bad_input_shape_is_rejected(bad_shape):
    with pytest.raises(ValueError, match="input_shape"):
        fnn_1024(10, bad_shape)


def test_bad_num_classes_is_rejected():
    with pytest.raises(ValueError, match="num_classes"):
        fnn_custom(0, (4,))


def test_layer_is_a_thin_wrapper_of_the_pure_function():
    model = fnn_custom(3, (4, 5, 1), num_hidden=11, dim=6, iterations=2)
    x = jax.random.uniform(jax.random.key(0), (2, 4, 5, 1))
    variables = model.init(jax.random.key(1), x)
    logits = model.apply(variables, x)
    config = model.fnn_config(20)
    np.testing.assert_allclose(
        logits, fnn_apply(variables["params"], x.reshape(2, 20), config), rtol=1e-6, atol=1e-7
    )
    assert logits.shape == (2, 3)
    # [batch, features] input works too
    np.testing.assert_allclose(model.apply(variables, x.reshape(2, 20)), logits, rtol=1e-6)


def test_layer_dropout_uses_the_dropout_rng_stream_only_in_training():
    model = fnn_custom(3, (20,), num_hidden=11, dim=6, iterations=2, input_dropout=0.5)
    x = jax.random.uniform(jax.random.key(0), (2, 20))
    variables = model.init(jax.random.key(1), x)
    eval_logits = model.apply(variables, x, train=False)
    a = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(2)})
    b = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(2)})
    c = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(3)})
    np.testing.assert_array_equal(a, b)
    assert float(jnp.max(jnp.abs(a - c))) > 1e-6
    assert float(jnp.max(jnp.abs(a - eval_logits))) > 1e-6


def test_layer_rejects_a_mismatched_input_size():
    model = fnn_custom(3, (20,), num_hidden=11, dim=6)
    with pytest.raises(ValueError, match="num_inputs"):
        model.init(jax.random.key(0), jnp.zeros((1, 21)))


def test_layer_rejects_inputs_of_another_width_than_its_params():
    model = FNN(num_classes=3, num_hidden=8, dim=4)  # num_inputs inferred at init
    variables = model.init(jax.random.key(0), jnp.zeros((1, 5, 5)))
    assert model.apply(variables, jnp.zeros((2, 25))).shape == (2, 3)  # same width, any layout
    with pytest.raises(DataError, match=r"x of shape \(2, 4, 4\) has 16 features .* initialized for 25"):
        model.apply(variables, jnp.zeros((2, 4, 4)))


def test_layer_trains_under_jit_and_grad():
    model = fnn_custom(3, (12,), num_hidden=10, dim=4, iterations=3)
    x = jax.random.uniform(jax.random.key(0), (16, 12))
    labels = jnp.arange(16) % 3
    params = model.init(jax.random.key(1), x)["params"]
    optimizer = optax.adam(1e-2)

    @functools.partial(jax.jit, static_argnums=2)
    def loss(params, key=None, train=False):
        logits = model.apply({"params": params}, x, train=train, rngs={"dropout": key} if train else {})
        return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(16), labels])

    @jax.jit
    def train_step(params, opt_state, key):
        updates, opt_state = optimizer.update(jax.grad(loss)(params, key, True), opt_state)
        return optax.apply_updates(params, updates), opt_state

    start, opt_state = float(loss(params)), optimizer.init(params)
    for i in range(60):
        params, opt_state = train_step(params, opt_state, jax.random.key(i))
    assert float(loss(params)) < 0.8 * start


def test_raw_uint8_pixels_are_one_data_error_in_the_layer_and_the_function():
    from fnnjax.floating import FNNConfig, fnn_apply, init_params

    config = FNNConfig(num_inputs=16, num_outputs=3, num_hidden=8, dim=4, iterations=2)
    params = init_params(jax.random.key(0), config)
    with pytest.raises(DataError, match="dtype uint8"):
        fnn_apply(params, np.zeros((2, 16), np.uint8), config)
    layer = fnn_custom(3, (4, 4, 1), num_hidden=8, dim=4, iterations=2)
    variables = layer.init(jax.random.key(0), np.zeros((2, 4, 4, 1), np.float32))
    with pytest.raises(DataError, match="the FNN layer got inputs of dtype uint8"):
        layer.apply(variables, np.zeros((2, 4, 4, 1), np.uint8), train=True,
                    rngs={"dropout": jax.random.key(1)})
