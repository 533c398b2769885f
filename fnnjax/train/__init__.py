"""The training engine: data, train state, jitted steps, data parallelism and checkpoints."""

from fnnjax.train.checkpoint import Checkpoints, fingerprint
from fnnjax.train.data import (
    Dataset,
    Split,
    available_datasets,
    load,
    load_dataset,
    random_crop_flip,
)
from fnnjax.train.loop import (
    FitResult,
    TrainConfig,
    TrainState,
    evaluate,
    fit,
    init_state,
    make_eval_step,
    make_optimizer,
    make_schedule,
    make_train_step,
)
from fnnjax.train.sharding import batch_sharding, make_mesh, replicate, replicated_sharding

__all__ = [
    "Checkpoints",
    "Dataset",
    "FitResult",
    "Split",
    "TrainConfig",
    "TrainState",
    "available_datasets",
    "batch_sharding",
    "evaluate",
    "fingerprint",
    "fit",
    "init_state",
    "load",
    "load_dataset",
    "make_eval_step",
    "make_mesh",
    "make_optimizer",
    "make_schedule",
    "make_train_step",
    "random_crop_flip",
    "replicate",
    "replicated_sharding",
]
