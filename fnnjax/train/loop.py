""":func:`fit`: training with evaluation, checkpoints, resume and structure changes.

The engine knows nothing about which paper produced a model: it takes any Flax Linen module that
follows the convention of :mod:`fnnjax.models` (``__call__(x, *, train)``, rng stream ``"dropout"``,
BatchNorm statistics in ``"batch_stats"``; any other collection is carried along). The jitted
steps, the train state and the population evaluation live in :mod:`fnnjax.train.engine`; the loss
and metrics come from an :class:`~fnnjax.train.objectives.Objective`.

Determinism and exact resume: three independent key streams are split from ``key(seed)`` —
initialization, data order and training noise. Epoch ``e``'s batch order is
``permutation(fold_in(data_key, e))`` and step ``s``'s dropout/augmentation key is
``fold_in(state.rng, s)``, so the whole run is a function of the seed and the step counter alone,
and a run restored from a checkpoint at step ``s`` continues bit for bit (on CPU) as if it had
never stopped.

Input pipeline: the normalized dataset is put on the devices once; each step gathers its batch
with the epoch's permutation *inside* the jitted step, so no host work or host-to-device copy
happens per step (BENCHMARKS.md shows its share of step time).

The output folder of :func:`fit` (a :class:`~fnnjax.train.runfolder.RunFolder`, the protocol every
driver shares)::

    run.json         the folder's schema and one record per start (time, command line, package
                     versions, git commit, devices; ``resumed_from_step`` on a resume)
    config.json      the run's description (model, dataset, config)
    metrics.jsonl    one line per epoch (train/validation/test loss and accuracy, time)
    checkpoints/     the newest ``keep_checkpoints`` states (orbax), each with its description
    best/            the state of the epoch with the best *validation* accuracy (only with a
                     validation split: choosing on test accuracy would leak the test set)
    damaged/         checkpoints found damaged on resume, moved aside (kept, never deleted)
    curves.png       loss and accuracy per epoch, redrawn when the run ends
    summary.json     final metrics, the best epoch and where its checkpoint is
    tensorboard/     the epochs' metrics for TensorBoard (``tensorboard=True``)

A later call on the folder resumes only the same run
(:func:`~fnnjax.train.runfolder.check_same_run`: a config field its checkpoints lack counts only
when it is not at its default); ``resume=False`` moves these files into ``previous-<time>/``
first. JSON files are written atomically. With several
processes (multi-host), process 0 writes these files; checkpoints are collective.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax

from fnnjax.errors import CheckpointError
from fnnjax.train import fitrun, sharding
from fnnjax.train.checkpoint import Checkpoints
from fnnjax.train.config import TrainConfig, make_optimizer, make_schedule
from fnnjax.train.data import Dataset
from fnnjax.train.engine import (
    TrainState,
    evaluate,
    init_state,
    make_eval_step,
    make_train_step,
)
from fnnjax.train.objectives import Objective
from fnnjax.train.rundir import (
    _check_state_format,
    _identity,
    plot_history,
)
from fnnjax.train.structure import NewModel, abstract_state

__all__ = [
    "FitResult",
    "NewModel",
    "TrainConfig",
    "TrainState",
    "evaluate",
    "fit",
    "init_state",
    "make_eval_step",
    "make_optimizer",
    "make_schedule",
    "make_train_step",
    "plot_history",
    "restore_run",
    "run_digest",
]


@dataclasses.dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        state: the final train state.
        history: one dict per epoch (train/validation/test loss and accuracy, time, throughput).
        summary: final metrics and run description (also written to ``summary.json``).
        model, description: the final model and its description (they differ from the ones
            given to :func:`fit` when a callback changed the structure).
    """

    state: TrainState
    history: list[dict[str, Any]]
    summary: dict[str, Any]
    model: nn.Module | None = None
    description: dict[str, Any] | None = None


def run_digest(description: dict[str, Any] | None, data: Dataset, config: TrainConfig) -> str:
    """Six hex digits that change whenever a checkpoint could not continue the run.

    ``fnnjax train`` appends it to its default output folder (``runs/MODEL-DATASET-DIGEST``), so
    that two different runs never share a folder while the same command always finds its own
    checkpoints. Where the data came from (a path) is left out: the same run on another machine
    gets the same name.
    """
    run = {"model": description, "dataset": data.describe(), "config": config.to_dict(),
           "augmentation": fitrun.augmentation(data, config)}  # fmt: skip
    # The description as given, a spec's name included (unlike the resume check), so the digest
    # and with it the folder of an earlier `fnnjax train --spec` run stay what they were.
    text = json.dumps({**_identity(run), "model": description}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:6]


def fit(
    model: nn.Module,
    data: Dataset,
    config: TrainConfig,
    *,
    out_dir: str | Path | None = None,
    resume: bool = True,
    description: dict[str, Any] | None = None,
    mesh: jax.sharding.Mesh | None = None,
    on_epoch_end: Callable[[dict[str, Any], TrainState], NewModel | None] | None = None,
    objective: str | Objective | None = None,
    rebuild: Callable[[dict[str, Any]], nn.Module] | None = None,
    initial_variables: Mapping[str, Any] | None = None,
    on_steps: tuple[int, Callable[[dict[str, Any], TrainState], None]] | None = None,
) -> FitResult:
    """Trains ``model`` on ``data`` and evaluates it after every epoch.

    Args:
        model: a Flax module following the :mod:`fnnjax.models` convention.
        data: a :class:`~fnnjax.train.dataset.Dataset` (normalized arrays).
        config: the run's :class:`TrainConfig`.
        out_dir: folder for ``run.json``, ``config.json``, ``metrics.jsonl``, ``checkpoints/``,
            ``best/``, ``curves.png`` and ``summary.json`` (see the module docstring); None
            trains in memory.
        resume: continue from the newest checkpoint in ``out_dir`` if there is one (default).
            The saved run's description is compared with this one *before* any array is read; a
            damaged newest checkpoint is moved into ``out_dir/damaged/`` and the one before it
            used. False starts afresh; an earlier run's files are first moved into
            ``out_dir/previous-<time>/`` (nothing is deleted).
        description: JSON-ready description of the model (name and options, or an architecture
            spec), stored with every checkpoint so a resume can check it is the same run.
        mesh: device mesh (default: ``config.num_devices`` local devices on a ``"data"`` axis).
        on_epoch_end: called with each epoch's record and the state after the epoch was
            evaluated (and its best checkpoint saved). It may return a :class:`NewModel` to
            change the network: training goes on with it (steps are rebuilt; metrics, the
            schedule and the data order continue) and the epoch's checkpoint holds the new
            state and description.
        objective: the loss and metrics (:mod:`fnnjax.train.objectives`): ``"classification"``
            (default: cross-entropy, accuracy; integer labels) or ``"regression"`` (MSE, MAE;
            float targets), or any :class:`~fnnjax.train.objectives.Objective`. The best epoch is
            chosen on its ``select`` metric of the validation split.
        rebuild: ``rebuild(description) -> model`` for resuming a run whose structure changed
            (e.g. :func:`fnnjax.models.model_from_description`): the newest checkpoint's stored
            description is rebuilt and restored without a template. Not needed otherwise.
        initial_variables: variables to start from instead of the fresh initialization
            (``{"params": ..., "batch_stats": ..., ...}``, e.g. transplanted from an earlier
            structure by :func:`fnnjax.arch.transplant_params`); collections it leaves out keep
            their initial values. Shapes must be the model's. A resumed run starts from its
            checkpoint instead.
        on_steps: ``(k, callback)``: ``callback({"epoch", "step"}, state)`` after every ``k``-th
            training step (each call waits for the device), e.g. to record running statistics
            within epochs.

    Returns:
        A :class:`FitResult`. Its summary holds ``best_epoch``/``best_validation_accuracy`` (and
        the checkpoint ``best/``) when ``data`` has a validation split; ``best_test_accuracy`` is
        the highest test accuracy of any epoch, as the papers report it (an optimistic number).

    Raises:
        ConfigError, DataError: bad configuration or data (one-line messages).
        TrainingDivergedError: the loss became NaN/inf (the last good checkpoint is kept).
        CheckpointError: ``out_dir`` holds a different run, or no readable checkpoint.
    """
    mesh, objective = fitrun.check_arguments(data, config, mesh, objective, on_steps)
    run = fitrun.start(model, data, config, mesh=mesh, objective=objective,
                       description=description, initial_variables=initial_variables)  # fmt: skip
    fitrun.open_folder(run, out_dir, resume=resume, rebuild=rebuild)
    fitrun.compile_steps(run)
    fitrun.train(run, on_epoch_end, on_steps)
    summary = fitrun.summarize(run)
    return FitResult(state=run.state, history=run.history, summary=summary, model=run.model,
                     description=run.current)  # fmt: skip


def restore_run(
    out_dir: str | Path,
    rebuild: Callable[[dict[str, Any]], nn.Module],
    *,
    best: bool = False,
    mesh: jax.sharding.Mesh | None = None,
) -> tuple[nn.Module, TrainState, dict[str, Any]]:
    """The model and state of a run folder from its checkpoints alone (no template model).

    The newest checkpoint's meta holds the run (config, dataset shape) and the description of
    the structure it holds; ``rebuild(description)`` builds that model, whose state shapes are
    the restore target. Works for runs whose structure changed while they trained.

    Args:
        out_dir: a folder written by :func:`fit`.
        rebuild: ``description -> model``, e.g. :func:`fnnjax.models.model_from_description`.
        best: restore ``best/`` (the best validation epoch) instead of the newest checkpoint.
        mesh: devices to put the state on (default: one device; under ``jax.distributed``
            with several processes, all devices of all of them, as an array must span every
            process that restores it).

    Returns:
        ``(model, state, meta)``.

    Raises:
        CheckpointError: no (readable) checkpoint in the folder, or one of another state layout.
    """
    out = Path(out_dir).expanduser().resolve()
    folder = out / ("best" if best else "checkpoints")
    if not folder.is_dir():
        raise CheckpointError(f"{folder} does not exist; expected a run folder written by fit")
    mesh = mesh or sharding.make_mesh(1 if jax.process_count() == 1 else None)
    checkpoints = Checkpoints(folder)
    models: dict[str, nn.Module] = {}

    def template(meta: dict[str, Any]) -> Any:
        _check_state_format(meta, out)
        run, description = meta["run"], meta.get("model", meta["run"]["model"])
        key = json.dumps(description, sort_keys=True)
        models[key] = models.get(key) or rebuild(description)
        tx = make_optimizer(TrainConfig.from_dict(run["config"]), meta["steps_per_epoch"])
        return abstract_state(models[key], tuple(run["dataset"]["input_shape"]), tx, mesh)

    try:
        restored = checkpoints.restore_latest(template)
    finally:
        checkpoints.close()
    if restored is None:
        raise CheckpointError(f"{folder} holds no checkpoint")
    state, meta = restored
    description = meta.get("model", meta["run"]["model"])
    return models[json.dumps(description, sort_keys=True)], state, meta
