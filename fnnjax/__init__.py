"""fnnjax: neural-network structure learning in JAX/Flax.

Public API (re-exports only; see each subpackage for details):

* :mod:`fnnjax.train` — data, :func:`fit`, :class:`TrainConfig`, checkpoints, multi-device.
* :mod:`fnnjax.models` — the model registry (:func:`get_model`) and the dense baseline.
* :mod:`fnnjax.floating` — Farfalle Neural Networks (floating neurons).
* :mod:`fnnjax.arch` — the architecture IR, builder, surgery, zoo and profiler.
* :mod:`fnnjax.construct` — the papers' algorithms as spec transforms (templates, ...).
"""

from fnnjax.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    DatasetNotFoundError,
    FnnjaxError,
    TrainingDivergedError,
)
from fnnjax.models import DenseBaseline, available_models, get_model, param_count, register_model
from fnnjax.train import Dataset, TrainConfig, TrainState, fit, load, load_dataset

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "Dataset",
    "DatasetNotFoundError",
    "DenseBaseline",
    "FnnjaxError",
    "TrainConfig",
    "TrainState",
    "TrainingDivergedError",
    "available_models",
    "fit",
    "get_model",
    "load",
    "load_dataset",
    "param_count",
    "register_model",
]
