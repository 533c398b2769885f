"""Variables of a model without training it: :func:`init_variables` (``model.init`` in one
compile without XLA's backend optimizations: it runs once) and :func:`host_init` (values drawn by
numpy on the host, nothing compiled: benchmarks and profiling)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["UNOPTIMIZED", "host_init", "init_variables"]

# Compiler options for code that runs once (init) or never (compiled only for its memory and cost
# analyses, which are HLO-level): no XLA backend (LLVM) optimizations, a fraction of the compile.
UNOPTIMIZED = {"xla_backend_optimization_level": 0}


def _init_keys(key: jax.Array) -> dict[str, jax.Array]:
    """Independent ``"params"`` and ``"dropout"`` keys for ``model.init`` from one key."""
    params_key, dropout_key = jax.random.split(key)
    return {"params": params_key, "dropout": dropout_key}


def init_variables(
    model: nn.Module,
    key: jax.Array | Mapping[str, jax.Array],
    input_shape: Sequence[int],
    *,
    batch: int = 2,
    abstract: bool = False,
) -> dict[str, Any]:
    """``model.init`` on zeros ``[batch, *input_shape]`` (``abstract``: shapes only, no compute).

    ``key`` is split into independent ``"params"`` and ``"dropout"`` streams, or is a mapping of
    streams used as given (``{"params": key}`` draws what ``model.init(key, x)`` draws). The init is compiled
    without XLA's backend (LLVM) optimizations: it runs once, and a deep model's threefry draws
    then compile 3-6x faster on CPU (the zoo's Inception: ~50 s -> ~9 s). The values are
    deterministic; they may differ from a default-optimized compile in the last bits.
    """
    x = jnp.zeros((batch, *input_shape), jnp.float32)
    keys = dict(key) if isinstance(key, Mapping) else _init_keys(key)

    def init(keys):
        return model.init(keys, x, train=False)

    if abstract:
        return jax.eval_shape(init, keys)
    return jax.jit(init).lower(keys).compile(UNOPTIMIZED)(keys)


def host_init(
    model: nn.Module, input_shape: Sequence[int], *, seed: int = 0, batch: int = 1
) -> dict[str, Any]:
    """Variables with the structure of ``model.init`` whose values are drawn by numpy on the host.

    Nothing is compiled (``jax.eval_shape`` gives the structure), which matters on CPU where a
    many-layer threefry ``init`` takes seconds to compile. Values: ``kernel`` He-normal over its
    fan-in, BN ``scale``/``var`` 1, masks, gates and add-on connections 1, everything else 0. Meant for benchmarks and profiling,
    where only shapes and realistic magnitudes matter; train with :func:`init_variables`.
    """
    x = jax.ShapeDtypeStruct((batch, *input_shape), jnp.float32)
    abstract = jax.eval_shape(
        lambda keys, x: model.init(keys, x, train=False), _init_keys(jax.random.key(0)), x
    )
    return _host_values(abstract, seed=seed)


def _host_values(abstract: Any, *, seed: int = 0) -> Any:
    """:func:`host_init`'s numpy-drawn values for a tree of ``jax.ShapeDtypeStruct`` variables."""
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = str(getattr(path[-1], "key", path[-1]))
        if name == "kernel" and len(leaf.shape) >= 2:
            fan_in = int(np.prod(leaf.shape[:-1]))
            value = rng.standard_normal(leaf.shape, dtype=np.float32) * np.sqrt(2.0 / fan_in)
        elif name in ("scale", "var", "filter_mask", "kernel_mask", "gates", "gate", "connections"):
            value = np.ones(leaf.shape, np.float32)
        else:
            value = np.zeros(leaf.shape, np.float32)
        return jnp.asarray(value, leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, abstract)
