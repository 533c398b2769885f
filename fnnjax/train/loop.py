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

The output folder of :func:`fit`::

    config.json      the run's description (model, dataset, config)
    metrics.jsonl    one line per epoch (train/validation/test loss and accuracy, time)
    checkpoints/     the newest ``keep_checkpoints`` states (orbax), each with its description
    best/            the state of the epoch with the best *validation* accuracy (only with a
                     validation split: choosing on test accuracy would leak the test set)
    damaged/         checkpoints found damaged on resume, moved aside (kept, never deleted)
    curves.png       loss and accuracy per epoch, redrawn when the run ends
    summary.json     final metrics, the best epoch and where its checkpoint is

With several processes (multi-host), process 0 writes these files; checkpoints are collective.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from tqdm.auto import tqdm

from fnnjax.errors import CheckpointError, ConfigError, TrainingDivergedError
from fnnjax.train import sharding
from fnnjax.train.checkpoint import Checkpoints
from fnnjax.train.config import TrainConfig, make_optimizer, make_schedule
from fnnjax.train.data import Augmentation, Dataset, augmentation_for, validate_dataset
from fnnjax.train.engine import (
    TrainState,
    evaluate,
    init_state,
    make_eval_step,
    make_train_step,
)
from fnnjax.train.objectives import Objective, get_objective
from fnnjax.train.rundir import (
    STATE_FORMAT,
    _best_of,
    _best_summary,
    _check_same_run,
    _check_shared_folder,
    _check_state_format,
    _check_writable,
    _identity,
    _read_best,
    _write_curves,
    append_jsonl,
    archive_previous_run,
    plot_history,
    truncate_jsonl,
)
from fnnjax.train.sharding import is_primary, sync_processes
from fnnjax.train.structure import (
    NewModel,
    abstract_state,
    adopt,
    initial_state,
    rebuild_model,
)

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
           "augmentation": _augmentation(data, config)}  # fmt: skip
    # The description as given, a spec's name included (unlike the resume check), so the digest
    # and with it the folder of an earlier `fnnjax train --spec` run stay what they were.
    text = json.dumps({**_identity(run), "model": description}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:6]


def _augmentation(data: Dataset, config: TrainConfig) -> dict[str, Any] | None:
    """The dataset-aware augmentation a run uses (part of its identity), or None."""
    policy = _policy(data, config)
    return None if policy is None else policy.describe()


def _policy(data: Dataset, config: TrainConfig) -> Augmentation | None:
    """The training-batch augmentation of a run: the dataset's crop/flip if ``augment``, plus
    Cutout if ``cutout``; None without either."""
    if not config.augment and not config.cutout:
        return None
    policy = augmentation_for(data) if config.augment else Augmentation()
    return dataclasses.replace(policy, cutout=config.cutout) if config.cutout else policy


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
        out_dir: folder for ``config.json``, ``metrics.jsonl``, ``checkpoints/``, ``best/``,
            ``curves.png`` and ``summary.json`` (see the module docstring); None trains in memory.
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
    if on_steps is not None and (isinstance(on_steps[0], bool) or not isinstance(on_steps[0], int)
                                 or on_steps[0] < 1):  # fmt: skip
        raise ConfigError(f"on_steps: expected (k >= 1, callback), got k = {on_steps[0]!r}")
    mesh = mesh or sharding.make_mesh(config.num_devices)
    if config.batch_size % mesh.size:
        raise ConfigError(
            f"batch_size {config.batch_size} must be a multiple of the number of devices "
            f"({mesh.size}); use e.g. {config.batch_size // mesh.size * mesh.size or mesh.size}"
        )
    objective = get_objective(objective)
    # lengths, dtypes, label range (or float targets), shapes, NaN/inf: one line each
    validate_dataset(data, targets=objective.targets)
    if len(data.train) < config.batch_size:
        raise ConfigError(
            f"batch_size {config.batch_size} is larger than the training split ({len(data.train)} "
            "examples)"
        )
    steps_per_epoch = len(data.train) // config.batch_size  # the remainder is dropped each epoch
    total_steps = steps_per_epoch * config.epochs
    run = {
        "model": description or {"class": type(model).__name__},
        "dataset": data.describe(),
        "config": config.to_dict(),
        "augmentation": _augmentation(data, config),
        **({} if objective.name == "classification" else {"objective": objective.name}),
    }
    primary = is_primary()

    current = run["model"]  # the description of the structure being trained now
    tx = make_optimizer(config, steps_per_epoch)
    schedule = make_schedule(config, steps_per_epoch)
    init_key, data_key, train_key = jax.random.split(jax.random.key(config.seed), 3)
    state = initial_state(init_key, model, data.input_shape, tx, initial_variables)
    state = state.replace(rng=jax.random.key_data(jax.random.fold_in(train_key, 0)))
    state = sharding.replicate(state, mesh)

    out = Path(out_dir).expanduser().resolve() if out_dir is not None else None
    checkpoints = best_checkpoints = None
    saved_best_steps: set[int] = set()
    history: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None  # {"epoch", "validation_accuracy", ...} of the best epoch
    if out is not None:
        _check_writable(out)
        _check_shared_folder(out)
        if not resume and primary:
            archive_previous_run(out)
        sync_processes("fnnjax-archive")
        checkpoints = Checkpoints(out / "checkpoints", max_to_keep=config.keep_checkpoints)
        restored = None
        if resume:
            rebuilt: dict[str, nn.Module] = {}

            def template(meta: dict[str, Any]) -> Any:
                saved = meta.get("model", run["model"])
                if saved == current:
                    return state
                key = json.dumps(saved, sort_keys=True)
                if key not in rebuilt:
                    rebuilt[key] = rebuild_model(rebuild, saved, out)
                return abstract_state(rebuilt[key], data.input_shape, tx, mesh)

            restored = checkpoints.restore_latest(
                template, check=lambda meta: _check_meta(meta, run, out)
            )
        if restored is not None:
            state, meta = restored
            saved = meta.get("model", run["model"])
            if saved != current:  # the run had changed its structure: go on in the new one
                model, current = rebuilt[json.dumps(saved, sort_keys=True)], saved
            if config.progress and primary:
                tqdm.write(f"resuming {out} from step {int(state.step)} (epoch {meta['epoch']})")
        if len(data.validation):
            best_checkpoints = Checkpoints(out / "best", max_to_keep=1)
            best = _read_best(best_checkpoints, lambda meta: _check_meta(meta, run, out))
            saved_best_steps = set(best_checkpoints.steps())
        if primary:
            truncate_jsonl(out / "metrics.jsonl", int(state.step) // steps_per_epoch)
            (out / "config.json").write_text(json.dumps(run, indent=2))
        sync_processes("fnnjax-history")
        if (out / "metrics.jsonl").exists():  # every process returns the whole history
            lines = (out / "metrics.jsonl").read_text().splitlines()
            history = [json.loads(ln) for ln in lines]
        if best is None and len(data.validation):  # best/ empty or damaged: judge the past too
            best = _best_of(history, objective.select, objective.maximize)
    writer = _tensorboard_writer(out) if config.tensorboard and out is not None and primary else None

    repl = sharding.replicated_sharding(mesh)
    x_train, y_train = jax.device_put((data.train.x, data.train.y), repl)
    policy = _policy(data, config)
    for text in policy.warnings if policy is not None else ():
        warnings.warn(f"--augment on {data.name!r}: {text}", stacklevel=2)
    augment = policy if policy is not None and not policy.is_identity else None
    train_step = make_train_step(model, tx, mesh, augment=augment, objective=objective)
    eval_step = make_eval_step(model, mesh, objective=objective)
    # One batch shape for the validation and the test split (one compile, not one per split).
    eval_size = min(config.eval_batch_size, max(len(data.validation), len(data.test), 1))
    start_step = int(state.step)
    first_epoch, offset = divmod(start_step, steps_per_epoch)
    bar = tqdm(total=total_steps, initial=start_step, disable=not (config.progress and primary),
               unit="step", dynamic_ncols=True)  # fmt: skip
    try:
        for epoch in range(first_epoch, config.epochs):
            order = jax.random.permutation(jax.random.fold_in(data_key, epoch), len(data.train))
            order = order[: steps_per_epoch * config.batch_size].reshape(steps_per_epoch, -1)
            started = time.perf_counter()
            metrics = []
            for i in range(offset, steps_per_epoch):
                state, step_metrics = train_step(state, x_train, y_train, order, i)
                metrics.append(step_metrics)
                if on_steps is not None and (epoch * steps_per_epoch + i + 1) % on_steps[0] == 0:
                    on_steps[1]({"epoch": epoch + 1, "step": int(state.step)}, state)
                if (i + 1) % config.log_every_steps == 0 or i + 1 == steps_per_epoch:
                    loss = float(step_metrics["loss"])
                    bar.update(i + 1 - bar.n + epoch * steps_per_epoch)
                    bar.set_postfix(epoch=epoch + 1, loss=f"{loss:.4f}", refresh=False)
            offset = 0
            train = jax.device_get(metrics)
            train_loss = float(np.mean([m["loss"] for m in train]))
            seconds = time.perf_counter() - started
            if not math.isfinite(train_loss):
                raise TrainingDivergedError(
                    f"the training loss became {train_loss} in epoch {epoch + 1}; lower "
                    "--lr or set --clip (the last good checkpoint is kept)"
                )
            record = {
                "epoch": epoch + 1,
                "step": int(state.step),
                "train_loss": train_loss,
                **{f"train_{k}": float(np.mean([m[k] for m in train]))
                   for k in train[0] if k != "loss"},  # fmt: skip
                "epoch_seconds": seconds,
                "examples_per_second": len(train) * config.batch_size / seconds,
                "learning_rate": float(schedule(int(state.step) - 1)),
            }
            for name, split in (("validation", data.validation), ("test", data.test)):
                if len(split):
                    values = evaluate(eval_step, state, split, batch_size=eval_size, mesh=mesh,
                                      fixed=True)  # fmt: skip
                    record.update({f"{name}_{k}": v for k, v in values.items()})
            history.append(record)
            # The best-known split's metric: test, else validation (a search withholds its test
            # split: no "nan" in the bar), else none.
            shown = next((f"{name}_{objective.select}" for name in ("test", "validation")
                          if f"{name}_{objective.select}" in record), None)  # fmt: skip
            bar.set_postfix(
                {"epoch": epoch + 1, "loss": f"{train_loss:.4f}",
                 **({shown: f"{record[shown]:.4f}"} if shown else {}),
                 "ex_per_s": f"{record['examples_per_second']:.0f}"}
            )  # fmt: skip
            if out is not None and primary:
                append_jsonl(out / "metrics.jsonl", record)
            if writer is not None:
                for key, value in record.items():
                    if key not in ("epoch", "step"):
                        writer.add_scalar(key, value, record["step"])
            meta = {"run": run, "epoch": epoch + 1, "step": int(state.step),
                    "steps_per_epoch": steps_per_epoch, "state_format": STATE_FORMAT,
                    "model": current}  # fmt: skip
            select = f"validation_{objective.select}"
            if len(data.validation) and (
                best is None or objective.better(record[select], best[select])
            ):
                best = {"epoch": epoch + 1, "step": int(state.step),
                        **{k: v for k, v in record.items() if k.startswith(("validation_", "test_"))}}  # fmt: skip
                # A resumed run that redoes an epoch finds its best checkpoint already written.
                if best_checkpoints is not None and best["step"] not in saved_best_steps:
                    best_checkpoints.save(best["step"], state, {**meta, "best": best})
            changed = False
            if on_epoch_end is not None:
                change = on_epoch_end(record, state)
                if change is not None:
                    changed = True
                    model, state, current = adopt(change, state, mesh, data.input_shape, tx)
                    meta["model"] = current
                    train_step = make_train_step(model, tx, mesh, augment=augment,
                                                 objective=objective)  # fmt: skip
                    eval_step = make_eval_step(model, mesh, objective=objective)
            if checkpoints is not None and (  # a new structure is always saved at once
                (epoch + 1) % config.checkpoint_every_epochs == 0 or epoch + 1 == config.epochs
                or changed
            ):
                checkpoints.save(int(state.step), state, meta)
    finally:
        bar.close()
        for manager in (checkpoints, best_checkpoints):
            if manager is not None:
                manager.close()
        if writer is not None:
            writer.close()
        if out is not None and primary and history:
            _write_curves(out, history, run)

    final = {
        name: evaluate(eval_step, state, split, batch_size=eval_size, mesh=mesh, fixed=True)
        for name, split in (("validation", data.validation), ("test", data.test))
        if len(split)
    }
    summary = {
        **run,
        "epochs_done": int(state.step) // steps_per_epoch,
        "steps": int(state.step),
        "num_params": int(sum(np.size(p) for p in jax.tree_util.tree_leaves(state.params))),
        "devices": [str(d) for d in mesh.devices.flat],
        **{f"final_{name}_{k}": v for name, values in final.items() for k, v in values.items()},
        **({"best_test_accuracy": max((h.get("test_accuracy", 0.0) for h in history), default=None)}
           if objective.name == "classification" else {}),  # fmt: skip
        **_best_summary(best, out, objective.select, objective.maximize),
    }
    if current != run["model"]:
        summary["final_model"] = current
    if out is not None and primary:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return FitResult(state=state, history=history, summary=summary, model=model,
                     description=current)  # fmt: skip



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
        mesh: devices to put the state on (default: one device).

    Returns:
        ``(model, state, meta)``.

    Raises:
        CheckpointError: no (readable) checkpoint in the folder, or one of another state layout.
    """
    out = Path(out_dir).expanduser().resolve()
    folder = out / ("best" if best else "checkpoints")
    if not folder.is_dir():
        raise CheckpointError(f"{folder} does not exist; expected a run folder written by fit")
    mesh = mesh or sharding.make_mesh(1)
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


def _check_meta(meta: dict[str, Any], run: dict[str, Any], out: Path) -> None:
    """A checkpoint's meta against this run: the state layout, then the run's identity."""
    _check_state_format(meta, out)
    _check_same_run(meta.get("run", {}), run, out)


def _tensorboard_writer(out: Path):
    try:
        from tensorboardX import SummaryWriter  # noqa: PLC0415
    except ImportError:
        raise ConfigError(
            "tensorboard=True needs tensorboardX: pip install -e '.[tensorboard]' in the fnnjax clone"
        ) from None
    return SummaryWriter(str(out / "tensorboard"))
