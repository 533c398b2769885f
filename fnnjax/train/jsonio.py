"""JSON for run records: NumPy scalars and arrays written as the numbers and lists they hold.

Configs accept NumPy integers where they take ints (:mod:`fnnjax.checks`), so every record a
run writes (``config.json``, checkpoint descriptions, a driver's identity) goes through
:func:`json_default`; anything else that is not JSON raises ``TypeError`` as ``json`` does.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

__all__ = ["dumps", "json_default", "plain"]


def json_default(value: Any) -> Any:
    """``json.dumps``'s ``default``: NumPy scalars -> Python numbers, arrays -> lists."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def dumps(value: Any, **options: Any) -> str:
    return json.dumps(value, default=json_default, **options)


def plain(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists, NumPy numbers Python's)."""
    return json.loads(dumps(value))
