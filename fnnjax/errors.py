"""Errors that describe a user's mistake (bad argument, missing file) rather than a bug.

The CLI prints these as one line; library users can catch them by type. Each subclasses the
built-in exception a Python user would expect (``ValueError``, ``FileNotFoundError``, ...), so
``except ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "ConfigError", "DataError", "DatasetNotFoundError", "FnnjaxError", "TrainingDivergedError"]


class FnnjaxError(Exception):
    """Base class of fnnjax's user-facing errors."""


class ConfigError(FnnjaxError, ValueError):
    """An argument or option has an unknown name or an impossible value."""


class DataError(FnnjaxError, ValueError):
    """The data itself is unusable (NaN/inf values, wrong shape, labels out of range)."""


class DatasetNotFoundError(FnnjaxError, FileNotFoundError):
    """A dataset could not be found in any of the places fnnjax looks."""


class CheckpointError(FnnjaxError, RuntimeError):
    """No checkpoint in a folder can be restored, or it belongs to a different run."""


class TrainingDivergedError(FnnjaxError, FloatingPointError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""
