"""Small helpers on nested dicts of arrays (Flax variable trees)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax


def at_path(tree: Mapping[str, Any], path: str) -> Any:
    """The node at ``"a/b/c"`` in a nested mapping, or None where the path does not exist."""
    node: Any = tree
    for part in path.split("/"):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def in_order(tree: Any) -> Any:
    """``tree``, waited for (``jax.block_until_ready``) under ``jax.distributed`` or when its
    arrays span several devices; unchanged otherwise. Host code that issues many small programs
    with cross-device reductions (a sampled architecture's pieces, one accuracy per arc) waits
    for each before the next: the runtime may run two independent programs at once, and
    processes that reach their collectives (gloo on CPU) in different orders wait for each other
    forever (seen: a 2-process ENAS search hung in its first step); so did XLA:CPU's in-process
    collectives with 8 simulated devices on 2 cores. (Here, not in ``train.sharding``, which
    re-exports it: the IR in ``arch/`` uses it and does not import the trainer.)"""
    leaf = next((x for x in jax.tree_util.tree_leaves(tree) if isinstance(x, jax.Array)), None)
    spread = leaf is not None and len(leaf.sharding.device_set) > 1
    return jax.block_until_ready(tree) if spread or jax.distributed.is_initialized() else tree
