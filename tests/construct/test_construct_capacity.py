"""Dynamic capacity: saliencies (OBD with a Hutchinson Hessian diagonal, baselines)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from fnnjax.arch import Dense, Head, Residual, Spec, Stage, build_model, init_variables
from fnnjax.construct import capacity

MLP = Spec(input_shape=(1, 1, 3), num_classes=3, stem=(Dense(filters=6),),
           stages=(Stage(blocks=(Residual(body=(Dense(filters=5), Dense(filters=6, act=None))),)),),
           head=Head())  # fmt: skip


def _loss_and_params():
    model = build_model(MLP)
    variables = init_variables(model, jax.random.key(0), MLP.input_shape)
    x = jax.random.normal(jax.random.key(1), (32, 1, 1, 3))
    y = jax.random.randint(jax.random.key(2), (32,), 0, 3)

    def loss(params):
        logits = model.apply({**variables, "params": params}, x, train=False)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    return loss, variables["params"]


def test_hutchinson_matches_the_exact_hessian_diagonal_within_ten_percent():
    loss, params = _loss_and_params()
    flat, unravel = ravel_pytree(params)
    assert flat.size <= 200
    exact = jnp.diag(jax.hessian(lambda f: loss(unravel(f)))(flat))
    estimate = jax.jit(lambda p, k: capacity.hutchinson_diagonal(loss, p, k, num_samples=2000,
                                                                 chunk=100))(params, jax.random.key(3))  # fmt: skip
    est = ravel_pytree(estimate)[0]
    assert float(jnp.linalg.norm(est - exact) / jnp.linalg.norm(exact)) <= 0.1
    with pytest.raises(ValueError, match="num_samples: expected a positive multiple of chunk=10"):
        capacity.hutchinson_diagonal(loss, params, jax.random.key(0), num_samples=15)


def test_saliencies_sum_per_unit_and_block_over_what_deleting_the_unit_removes():
    loss, params = _loss_and_params()
    grads = jax.grad(loss)(params)
    ones = jax.tree_util.tree_map(jnp.ones_like, params)
    units = capacity.unit_saliency(MLP, ones)  # counts each unit's parameters
    assert set(units) == {"stem0", "s0b0/body0", "s0b0/body1", "head/out"}
    np.testing.assert_array_equal(units["s0b0/body0"], np.full(5, 6 + 1))  # 6 inputs + bias
    np.testing.assert_array_equal(units["head/out"], np.full(3, 6 + 1))
    blocks = capacity.block_saliency(MLP, ones)
    assert float(blocks["s0b0"]) == 5 * 7 + 6 * 6  # body1: 5 inputs + bias per unit
    w = params["s0b0"]["body0"]["conv"]["kernel"]
    taylor = capacity.taylor_saliency(params, grads)
    np.testing.assert_allclose(taylor["s0b0"]["body0"]["conv"]["kernel"],
                               jnp.abs(w * grads["s0b0"]["body0"]["conv"]["kernel"]))  # fmt: skip
    np.testing.assert_allclose(capacity.magnitude_saliency(params)["s0b0"]["body0"]["conv"]["kernel"],
                               jnp.abs(w))  # fmt: skip
    h = jax.tree_util.tree_map(lambda p: jnp.full_like(p, 2.0), params)
    np.testing.assert_allclose(capacity.obd_saliency(params, h)["s0b0"]["body0"]["conv"]["kernel"],
                               w * w)  # 1/2 * 2 * w^2  # fmt: skip
