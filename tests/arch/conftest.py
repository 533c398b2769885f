"""Shared fixtures for the architecture tests.

``random_variables(model, x, seed)`` builds a model's variables without compiling its ``init``
(threefry-based init of a many-layer model takes ~10 s to compile on a shared CPU): the tree comes
from ``jax.eval_shape`` and the values from numpy. BN running statistics and scales are random, not
the (0, 1) of a fresh init, so slicing bugs cannot hide behind identical entries.
"""

import jax
import numpy as np
import pytest


def _fill(path, leaf, rng):
    name = str(getattr(path[-1], "key", path[-1]))
    shape, dtype = leaf.shape, leaf.dtype
    if name == "kernel":
        fan_in = int(np.prod(shape[:-1]))
        return (rng.normal(size=shape) * np.sqrt(2.0 / fan_in)).astype(dtype)
    if name == "scale":
        return (1.0 + 0.2 * rng.normal(size=shape)).astype(dtype)
    if name == "var":
        return rng.uniform(0.5, 1.5, size=shape).astype(dtype)
    if name in ("filter_mask", "kernel_mask", "gates", "gate", "connections"):
        return np.ones(shape, dtype)
    return (0.1 * rng.normal(size=shape)).astype(dtype)


def make_random_variables(model, x, seed=0):
    params_key, dropout_key = jax.random.split(jax.random.key(0))
    abstract = jax.eval_shape(
        lambda p, d: model.init({"params": p, "dropout": d}, x, train=False),
        params_key,
        dropout_key,
    )
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map_with_path(
        lambda p, a: jax.numpy.asarray(_fill(p, a, rng)), abstract
    )


@pytest.fixture
def random_variables():
    return make_random_variables
