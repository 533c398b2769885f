"""Argument checks, one set for the library and the command line.

Each check raises :class:`~fnnjax.errors.ConfigError` (a ``ValueError``) in one line that names
the argument (``name``: a field such as ``"epochs"`` or a flag such as ``"--epochs"``), what was
expected and what was given: ``epochs: expected a positive int, got 0``. Booleans are never
accepted as numbers. The ``*_arg`` functions are ``argparse`` types (the parser adds the flag).

Architecture specs are checked by :mod:`fnnjax.arch.spec`'s own validation, which names a field
by its path in the spec (``stages[1].blocks[3].filters: expected a positive int, got -2``) and
refuses NumPy integers so that every spec writes as JSON; its choices use :func:`check_choice`.
"""

from __future__ import annotations

import argparse
import math
import numbers
from collections.abc import Iterable
from typing import Any

from fnnjax.errors import ConfigError

__all__ = [
    "check_bool",
    "check_choice",
    "check_int",
    "check_ints",
    "check_number",
    "check_share",
    "int_arg",
    "is_int",
    "nonnegative_int_arg",
    "positive_float_arg",
    "positive_int_arg",
]


def is_int(value: Any) -> bool:
    """An integer (Python or NumPy), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _int_range(minimum: int | None, maximum: int | None) -> str:
    if maximum is not None:
        return f"an int in [{minimum}, {maximum}]" if minimum is not None else f"an int <= {maximum}"
    return {None: "an int", 0: "a non-negative int", 1: "a positive int"}.get(
        minimum, f"an int >= {minimum}")


def check_int(name: str, value: Any, minimum: int | None = 1, *, maximum: int | None = None,
              none: bool = False) -> None:  # fmt: skip
    """``value`` is an int in ``[minimum, maximum]`` (or None when ``none``)."""
    if none and value is None:
        return
    if not is_int(value) or (minimum is not None and value < minimum) or (
            maximum is not None and value > maximum):  # fmt: skip
        what = _int_range(minimum, maximum) + (" or None" if none else "")
        raise ConfigError(f"{name}: expected {what}, got {value!r}")


def check_ints(name: str, values: Any, minimum: int | None = 1, *, empty: bool = False) -> None:
    """``values`` is a sequence of ints ``>= minimum`` (non-empty unless ``empty``)."""
    what = _int_range(minimum, None).removeprefix("a ").removeprefix("an ")
    ok = isinstance(values, Iterable) and not isinstance(values, str | bytes | dict)
    items = list(values) if ok else []
    if not ok or (not items and not empty) or any(
            not is_int(v) or (minimum is not None and v < minimum) for v in items):  # fmt: skip
        raise ConfigError(f"{name}: expected a {'' if empty else 'non-empty '}sequence of "
                          f"{what}s, got {values!r}")  # fmt: skip


def check_number(
    name: str,
    value: Any,
    *,
    above: float | None = None,
    at_least: float | None = None,
    below: float | None = None,
    at_most: float | None = None,
    none: bool = False,
) -> None:
    """``value`` is a finite real number within the given bounds (or None when ``none``).

    The message says ``a positive number`` for ``above=0``, ``a number in [0, 1)`` for
    ``at_least=0, below=1``, and so on.
    """
    if none and value is None:
        return
    low = "(" if above is not None else "[" if at_least is not None else None
    high = ")" if below is not None else "]" if at_most is not None else None
    lo, hi = (above if above is not None else at_least), (below if below is not None else at_most)
    ok = _is_number(value) and math.isfinite(value)
    ok = ok and (lo is None or (value > lo if low == "(" else value >= lo))
    ok = ok and (hi is None or (value < hi if high == ")" else value <= hi))
    if ok:
        return
    if low and high:
        what = f"a number in {low}{lo:g}, {hi:g}{high}"
    elif low:
        what = ("a positive number" if low == "(" and lo == 0 else
                "a non-negative number" if lo == 0 else
                f"a number {'>' if low == '(' else '>='} {lo:g}")  # fmt: skip
    elif high:
        what = f"a number {'<' if high == ')' else '<='} {hi:g}"
    else:
        what = "a finite number"
    raise ConfigError(f"{name}: expected {what}{' or None' if none else ''}, got {value!r}")


def check_share(name: str, value: Any) -> None:
    """A fraction of something that must keep a part: a number in ``[0, 1)``."""
    check_number(name, value, at_least=0.0, below=1.0)


def check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{name}: expected True or False, got {value!r}")


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> None:
    """``value`` is one of ``choices`` (a bool never stands for 0 or 1)."""
    choices = tuple(choices)
    if isinstance(value, bool) and not any(isinstance(c, bool) for c in choices) or (
            value not in choices):  # fmt: skip
        raise ConfigError(f"{name}: expected one of {', '.join(map(repr, choices))}, got {value!r}")


# -- argparse types ------------------------------------------------------------------------------


def int_arg(minimum: int | None = None):
    """An argparse type: an int ``>= minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {_int_range(minimum, None)}, got {text!r}") from None
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f"expected {_int_range(minimum, None)}, got {text}")
        return value

    parse.__name__ = "int" if minimum is None else f"int >= {minimum}"
    return parse


positive_int_arg = int_arg(1)
nonnegative_int_arg = int_arg(0)


def positive_float_arg(text: str) -> float:
    """An argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value
