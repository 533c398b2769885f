"""Input checks shared by every model family (dense baseline, floating networks, spec networks)."""

from __future__ import annotations

from typing import Any

import numpy as np

from fnnjax.errors import DataError

__all__ = ["check_float_input"]


def check_float_input(x: Any, what: str) -> None:
    """Raises :class:`DataError` for integer inputs (e.g. raw uint8 pixels), at trace time.

    Raw pixels would otherwise fail deep inside Flax (a ``TypeError`` in dropout) or, worse, train
    on unnormalized values. ``what`` names the model in the message.
    """
    dtype = getattr(x, "dtype", None)
    if dtype is not None and not np.issubdtype(dtype, np.floating):
        raise DataError(
            f"{what} got inputs of dtype {dtype}; it needs normalized floating-point inputs: "
            "load them with fnnjax.train.load_dataset(), or use x.astype(np.float32) / 255"
        )
