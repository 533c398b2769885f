"""The parts of :func:`~fnnjax.train.loop.fit` (internal): one call's state, :class:`FitRun`, and
the steps a call goes through, in order:

* :func:`check_arguments`: the mesh, the objective, the data and the batch size;
* :func:`start`: the run's description, optimizer, schedule, key streams and initial state;
* :func:`open_folder`: the run folder (:class:`~fnnjax.train.runfolder.RunFolder`), resumed from
  its newest checkpoint of this run, its history and best epoch read back;
* :func:`compile_steps`: the data on the devices, the augmentation, the jitted steps;
* :func:`train`: every remaining epoch (:func:`train_epoch`, :func:`record_epoch`,
  :func:`keep_epoch`), then :func:`close` (checkpoints, tensorboard, ``curves.png``);
* :func:`summarize`: the final evaluation and ``summary.json``.
"""

from __future__ import annotations

import dataclasses
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

from fnnjax.checks import check_int
from fnnjax.errors import ConfigError, TrainingDivergedError
from fnnjax.train import sharding
from fnnjax.train.checkpoint import Checkpoints
from fnnjax.train.config import TrainConfig, make_optimizer, make_schedule
from fnnjax.train.data import Augmentation, Dataset, augmentation_for, validate_dataset
from fnnjax.train.engine import TrainState, evaluate, make_eval_step, make_train_step
from fnnjax.train.objectives import Objective, get_objective
from fnnjax.train.rundir import (
    RUN_FILES,
    STATE_FORMAT,
    _best_of,
    _best_summary,
    _check_same_run,
    _check_state_format,
    _read_best,
    _write_curves,
)
from fnnjax.train.runfolder import RunFolder
from fnnjax.train.sharding import is_primary
from fnnjax.train.structure import NewModel, abstract_state, adopt, initial_state, rebuild_model

OnEpochEnd = Callable[[dict[str, Any], TrainState], NewModel | None]
OnSteps = tuple[int, Callable[[dict[str, Any], TrainState], None]]


@dataclasses.dataclass
class FitRun:
    """One call of :func:`~fnnjax.train.loop.fit`: what it was given and what changes as it
    trains (the model and its description change when ``on_epoch_end`` changes the structure)."""

    data: Dataset
    config: TrainConfig
    objective: Objective
    mesh: jax.sharding.Mesh
    run: dict[str, Any]  # the run's description (config.json; part of every checkpoint)
    steps_per_epoch: int
    tx: Any
    schedule: Callable[[Any], Any]
    data_key: jax.Array
    model: nn.Module
    state: TrainState
    current: dict[str, Any]  # the description of the structure being trained now
    folder: RunFolder = dataclasses.field(default_factory=lambda: RunFolder(None))
    checkpoints: Checkpoints | None = None
    best_checkpoints: Checkpoints | None = None
    saved_best_steps: set[int] = dataclasses.field(default_factory=set)
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    best: dict[str, Any] | None = None  # {"epoch", "validation_accuracy", ...} of the best epoch
    writer: Any = None  # tensorboardX's SummaryWriter (process 0, tensorboard=True)
    augment: Augmentation | None = None
    train_step: Callable[..., Any] | None = None
    eval_step: Callable[..., Any] | None = None
    eval_size: int = 1
    x_train: Any = None
    y_train: Any = None


def check_arguments(
    data: Dataset,
    config: TrainConfig,
    mesh: jax.sharding.Mesh | None,
    objective: str | Objective | None,
    on_steps: OnSteps | None,
) -> tuple[jax.sharding.Mesh, Objective]:
    """The mesh and objective of a run, after checking what fit was given (one-line errors)."""
    if on_steps is not None:
        check_int("on_steps", on_steps[0])  # (k, callback): k
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
    return mesh, objective


def augmentation(data: Dataset, config: TrainConfig) -> dict[str, Any] | None:
    """The dataset-aware augmentation a run uses (part of its identity), or None."""
    chosen = policy(data, config)
    return None if chosen is None else chosen.describe()


def policy(data: Dataset, config: TrainConfig) -> Augmentation | None:
    """The training-batch augmentation of a run: the dataset's crop/flip if ``augment``, plus
    Cutout if ``cutout``; None without either."""
    if not config.augment and not config.cutout:
        return None
    chosen = augmentation_for(data) if config.augment else Augmentation()
    return dataclasses.replace(chosen, cutout=config.cutout) if config.cutout else chosen


def describe_run(data: Dataset, config: TrainConfig, description: dict[str, Any],
                 objective: Objective) -> dict[str, Any]:  # fmt: skip
    """What a fit run is (``config.json``; its checkpoints' ``run``): the model description,
    the data, the settings, the augmentation and the objective."""
    return {
        "model": description,
        "dataset": data.describe(),
        "config": config.to_dict(),
        "augmentation": augmentation(data, config),
        **({} if objective.name == "classification" else {"objective": objective.name}),
    }


def check_fit_folder(folder: RunFolder, data: Dataset, config: TrainConfig, *,
                     description: dict[str, Any], objective: Any = None) -> None:  # fmt: skip
    """Refuses (:class:`~fnnjax.train.runfolder.RunMismatchError`, naming ``folder.what``) a
    folder whose ``config.json`` holds another fit run: for a driver that trains with
    :func:`~fnnjax.train.fit` in its own folder and checks before it writes anything."""
    saved = folder.read_json("config.json")
    if saved is not None:
        now = describe_run(data, config, description, get_objective(objective))
        _check_same_run(saved, now, folder.path, what=folder.what)


def start(
    model: nn.Module,
    data: Dataset,
    config: TrainConfig,
    *,
    mesh: jax.sharding.Mesh,
    objective: Objective,
    description: dict[str, Any] | None,
    initial_variables: Mapping[str, Any] | None,
) -> FitRun:
    """The run's description, optimizer, schedule and key streams, and its initial state
    (replicated on ``mesh``)."""
    steps_per_epoch = len(data.train) // config.batch_size  # the remainder is dropped each epoch
    run = describe_run(data, config, description or {"class": type(model).__name__}, objective)
    tx = make_optimizer(config, steps_per_epoch)
    schedule = make_schedule(config, steps_per_epoch)
    init_key, data_key, train_key = jax.random.split(jax.random.key(config.seed), 3)
    state = initial_state(init_key, model, data.input_shape, tx, initial_variables)
    state = state.replace(rng=jax.random.key_data(jax.random.fold_in(train_key, 0)))
    state = sharding.replicate(state, mesh)
    return FitRun(data=data, config=config, objective=objective, mesh=mesh, run=run,
                  steps_per_epoch=steps_per_epoch, tx=tx, schedule=schedule, data_key=data_key,
                  model=model, state=state, current=run["model"])  # fmt: skip


def open_folder(
    r: FitRun,
    out_dir: str | Path | None,
    *,
    resume: bool,
    rebuild: Callable[[dict[str, Any]], nn.Module] | None,
) -> None:
    """Opens ``out_dir`` (nothing in memory): the newest checkpoint of this run restored when
    ``resume`` (its identity checked first), the best epoch so far, the history up to the
    restored epoch; ``run.json`` records the start, ``config.json`` the run."""
    r.folder = RunFolder.open(out_dir, files=RUN_FILES, what="run", driver="fit", resume=resume)
    out = r.folder.path
    if out is None:
        return

    def check(meta: dict[str, Any]) -> None:
        _check_meta(meta, r.run, out)

    r.checkpoints = r.folder.checkpoints("checkpoints", max_to_keep=r.config.keep_checkpoints)
    restored = _restore(r, check, rebuild) if resume else None
    if len(r.data.validation):
        r.best_checkpoints = r.folder.checkpoints("best", max_to_keep=1)
        r.best = _read_best(r.best_checkpoints, check)
        r.saved_best_steps = set(r.best_checkpoints.steps())
    r.folder.begin(**({} if restored is None else {"resumed_from_step": restored}))
    # every process returns the whole history
    r.history = r.folder.truncate_jsonl("metrics.jsonl", int(r.state.step) // r.steps_per_epoch)
    r.folder.write_json("config.json", r.run, indent=2)
    if r.best is None and len(r.data.validation):  # best/ empty or damaged: judge the past too
        r.best = _best_of(r.history, r.objective.select, r.objective.maximize)
    if r.config.tensorboard and is_primary():
        r.writer = _tensorboard_writer(out)


def _restore(
    r: FitRun,
    check: Callable[[dict[str, Any]], None],
    rebuild: Callable[[dict[str, Any]], nn.Module] | None,
) -> int | None:
    """Restores the newest readable checkpoint into ``r`` (a run that had changed its structure
    goes on in the new one); returns its step, or None when there is none."""
    rebuilt: dict[str, nn.Module] = {}
    fresh = r.state

    def template(meta: dict[str, Any]) -> Any:
        saved = meta.get("model", r.run["model"])
        if saved == r.current:
            return fresh
        key = json.dumps(saved, sort_keys=True)
        if key not in rebuilt:
            rebuilt[key] = rebuild_model(rebuild, saved, r.folder.path)
        return abstract_state(rebuilt[key], r.data.input_shape, r.tx, r.mesh)

    restored = r.checkpoints.restore_latest(template, check=check)
    if restored is None:
        return None
    r.state, meta = restored
    saved = meta.get("model", r.run["model"])
    if saved != r.current:  # the run had changed its structure: go on in the new one
        r.model, r.current = rebuilt[json.dumps(saved, sort_keys=True)], saved
    if r.config.progress and is_primary():
        tqdm.write(f"resuming {r.folder.path} from step {int(r.state.step)} "
                   f"(epoch {meta['epoch']})")  # fmt: skip
    return int(r.state.step)


def compile_steps(r: FitRun) -> None:
    """Puts the training split on the devices (once) and makes the jitted steps."""
    repl = sharding.replicated_sharding(r.mesh)
    r.x_train, r.y_train = jax.device_put((r.data.train.x, r.data.train.y), repl)
    chosen = policy(r.data, r.config)
    for text in chosen.warnings if chosen is not None else ():
        warnings.warn(f"--augment on {r.data.name!r}: {text}", stacklevel=3)
    r.augment = chosen if chosen is not None and not chosen.is_identity else None
    _make_steps(r)
    # One batch shape for the validation and the test split (one compile, not one per split).
    r.eval_size = min(r.config.eval_batch_size, max(len(r.data.validation), len(r.data.test), 1))


def _make_steps(r: FitRun) -> None:
    r.train_step = make_train_step(r.model, r.tx, r.mesh, augment=r.augment,
                                   objective=r.objective)  # fmt: skip
    r.eval_step = make_eval_step(r.model, r.mesh, objective=r.objective)


def train(r: FitRun, on_epoch_end: OnEpochEnd | None, on_steps: OnSteps | None) -> None:
    """Trains the remaining epochs (from the restored step), then :func:`close` (also when an
    epoch raises: the run's files stay consistent)."""
    start_step = int(r.state.step)
    first_epoch, offset = divmod(start_step, r.steps_per_epoch)
    total = r.steps_per_epoch * r.config.epochs
    if start_step > total:
        warnings.warn(_trained_beyond(r.folder.path, start_step, r.steps_per_epoch, r.config.epochs),
                      stacklevel=3)  # fmt: skip
    try:
        with r.folder.progress(total, initial=start_step, enabled=r.config.progress) as bar:
            for epoch in range(first_epoch, r.config.epochs):
                record = train_epoch(r, epoch, offset, bar, on_steps)
                offset = 0
                record_epoch(r, record, bar)
                keep_epoch(r, record, on_epoch_end)
    finally:
        close(r)


def epochs_text(count: int | float) -> str:
    """``"1 epoch"``, ``"3 epochs"``."""
    return f"{count:g} epoch" + ("" if count == 1 else "s")


def _trained_beyond(out: Path, step: int, steps_per_epoch: int, epochs: int) -> str:
    """The warning for a folder resumed at ``step``, past the ``epochs`` asked for (nothing left
    to train: the results are those of the folder's newest checkpoint)."""
    done = step // steps_per_epoch
    partial = "" if step % steps_per_epoch == 0 else f" and {step % steps_per_epoch} steps"
    return (
        f"{out} already trained {epochs_text(done)}{partial} (more than --epochs {epochs}, "
        f"epochs={epochs}): nothing trained; its final metrics are those of "
        f"{f'step {step}' if partial else f'epoch {done}'}. Pass --epochs {done + bool(partial)} or more "
        f"(epochs={done + bool(partial)}) to go on, or --no-resume (resume=False) to start afresh"
    )


def train_epoch(r: FitRun, epoch: int, offset: int, bar: Any, on_steps: OnSteps | None
                ) -> dict[str, Any]:  # fmt: skip
    """Trains ``epoch`` (0-based) from its step ``offset``; returns the epoch's record of
    training (loss and metrics, time, throughput, learning rate).

    Raises:
        TrainingDivergedError: the epoch's mean loss is NaN or infinite.
    """
    spe, config = r.steps_per_epoch, r.config
    order = jax.random.permutation(jax.random.fold_in(r.data_key, epoch), len(r.data.train))
    order = order[: spe * config.batch_size].reshape(spe, -1)
    started = time.perf_counter()
    metrics = []
    for i in range(offset, spe):
        r.state, step_metrics = r.train_step(r.state, r.x_train, r.y_train, order, i)
        metrics.append(step_metrics)
        if on_steps is not None and (epoch * spe + i + 1) % on_steps[0] == 0:
            on_steps[1]({"epoch": epoch + 1, "step": int(r.state.step)}, r.state)
        if (i + 1) % config.log_every_steps == 0 or i + 1 == spe:
            loss = float(step_metrics["loss"])
            bar.update(i + 1 - bar.n + epoch * spe)
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss:.4f}", refresh=False)
    train = jax.device_get(metrics)
    train_loss = float(np.mean([m["loss"] for m in train]))
    seconds = time.perf_counter() - started
    if not math.isfinite(train_loss):
        raise TrainingDivergedError(
            f"the training loss became {train_loss} in epoch {epoch + 1}; lower "
            "--lr or set --clip (the last good checkpoint is kept)"
        )
    return {
        "epoch": epoch + 1,
        "step": int(r.state.step),
        "train_loss": train_loss,
        **{f"train_{k}": float(np.mean([m[k] for m in train])) for k in train[0] if k != "loss"},
        "epoch_seconds": seconds,
        "examples_per_second": len(train) * config.batch_size / seconds,
        "learning_rate": float(r.schedule(int(r.state.step) - 1)),
    }


def record_epoch(r: FitRun, record: dict[str, Any], bar: Any) -> None:
    """Adds the validation and test metrics to ``record`` and records it: the history, the
    progress bar, ``metrics.jsonl`` and tensorboard."""
    for name, split in (("validation", r.data.validation), ("test", r.data.test)):
        if len(split):
            values = evaluate(r.eval_step, r.state, split, batch_size=r.eval_size, mesh=r.mesh,
                              fixed=True)  # fmt: skip
            record.update({f"{name}_{k}": v for k, v in values.items()})
    r.history.append(record)
    # The best-known split's metric: test, else validation (a search withholds its test split:
    # no "nan" in the bar), else none.
    select = r.objective.select
    shown = next((f"{name}_{select}" for name in ("test", "validation")
                  if f"{name}_{select}" in record), None)  # fmt: skip
    bar.set_postfix(
        {"epoch": record["epoch"], "loss": f"{record['train_loss']:.4f}",
         **({shown: f"{record[shown]:.4f}"} if shown else {}),
         "ex_per_s": f"{record['examples_per_second']:.0f}"}
    )  # fmt: skip
    r.folder.append_jsonl("metrics.jsonl", record)
    if r.writer is not None:
        for key, value in record.items():
            if key not in ("epoch", "step"):
                r.writer.add_scalar(key, value, record["step"])


def keep_epoch(r: FitRun, record: dict[str, Any], on_epoch_end: OnEpochEnd | None) -> None:
    """The best checkpoint (a better validation metric), ``on_epoch_end`` (which may change the
    structure) and the epoch's checkpoint (every ``checkpoint_every_epochs``, the last one, and
    a new structure at once)."""
    epoch, step = record["epoch"], int(r.state.step)
    meta = {"run": r.run, "epoch": epoch, "step": step, "steps_per_epoch": r.steps_per_epoch,
            "state_format": STATE_FORMAT, "model": r.current}  # fmt: skip
    select = f"validation_{r.objective.select}"
    if len(r.data.validation) and (
        r.best is None or r.objective.better(record[select], r.best[select])
    ):
        r.best = {"epoch": epoch, "step": step,
                  **{k: v for k, v in record.items() if k.startswith(("validation_", "test_"))}}  # fmt: skip
        # A resumed run that redoes an epoch finds its best checkpoint already written.
        if r.best_checkpoints is not None and step not in r.saved_best_steps:
            r.best_checkpoints.save(step, r.state, {**meta, "best": r.best})
    changed = False
    if on_epoch_end is not None:
        change = on_epoch_end(record, r.state)
        if change is not None:
            changed = True
            r.model, r.state, r.current = adopt(change, r.state, r.mesh, r.data.input_shape,
                                                r.tx)  # fmt: skip
            meta["model"] = r.current
            _make_steps(r)
    if r.checkpoints is not None and (
        epoch % r.config.checkpoint_every_epochs == 0 or epoch == r.config.epochs or changed
    ):
        r.checkpoints.save(int(r.state.step), r.state, meta)


def close(r: FitRun) -> None:
    """Closes the checkpoint managers (waiting for their saves) and tensorboard; draws
    ``curves.png`` for the epochs recorded so far."""
    for manager in (r.checkpoints, r.best_checkpoints):
        if manager is not None:
            manager.close()
    if r.writer is not None:
        r.writer.close()
    if r.history:
        _write_curves(r.folder, r.history, r.run)


def summarize(r: FitRun) -> dict[str, Any]:
    """The final evaluation and the run's summary (also written to ``summary.json``)."""
    final = {
        name: evaluate(r.eval_step, r.state, split, batch_size=r.eval_size, mesh=r.mesh,
                       fixed=True)  # fmt: skip
        for name, split in (("validation", r.data.validation), ("test", r.data.test))
        if len(split)
    }
    objective, history, step = r.objective, r.history, int(r.state.step)
    summary = {
        **r.run,
        "epochs_done": step // r.steps_per_epoch,
        "steps": step,
        "num_params": int(sum(np.size(p) for p in jax.tree_util.tree_leaves(r.state.params))),
        "devices": [str(d) for d in r.mesh.devices.flat],
        **{f"final_{name}_{k}": v for name, values in final.items() for k, v in values.items()},
        **({"best_test_accuracy": max((h.get("test_accuracy", 0.0) for h in history), default=None)}
           if objective.name == "classification" else {}),  # fmt: skip
        **_best_summary(r.best, r.folder.path, objective.select, objective.maximize),
    }
    if r.current != r.run["model"]:
        summary["final_model"] = r.current
    r.folder.write_json("summary.json", summary, indent=2)
    return summary


def _check_meta(meta: dict[str, Any], run: dict[str, Any], out: Path) -> None:
    """A checkpoint's meta against this run: the state layout, then the run's identity."""
    _check_state_format(meta, out)
    _check_same_run(meta.get("run", {}), run, out)


def _tensorboard_writer(out: Path) -> Any:
    try:
        from tensorboardX import SummaryWriter  # noqa: PLC0415
    except ImportError:
        raise ConfigError(
            "tensorboard=True needs tensorboardX: pip install -e '.[tensorboard]' in the fnnjax clone"
        ) from None
    return SummaryWriter(str(out / "tensorboard"))
