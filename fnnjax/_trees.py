"""Small helpers on nested dicts of arrays (Flax variable trees)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def at_path(tree: Mapping[str, Any], path: str) -> Any:
    """The node at ``"a/b/c"`` in a nested mapping, or None where the path does not exist."""
    node: Any = tree
    for part in path.split("/"):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node
