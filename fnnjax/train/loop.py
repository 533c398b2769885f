"""The training engine: explicit train state, jitted train/eval steps, and :func:`fit`.

The engine knows nothing about which paper produced a model: it takes any Flax Linen module that
follows the convention of :mod:`fnnjax.models` (``__call__(x, *, train)``, rng stream ``"dropout"``,
collection ``"batch_stats"``).

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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from tqdm.auto import tqdm

from fnnjax.errors import ConfigError, DataError, TrainingDivergedError
from fnnjax.train import sharding
from fnnjax.train.checkpoint import Checkpoints
from fnnjax.train.data import Dataset, Split, augmentation_for, validate_dataset
from fnnjax.train.rundir import (
    _best_of,
    _best_summary,
    _check_same_run,
    _check_shared_folder,
    _check_writable,
    _identity,
    _read_best,
    _truncate_jsonl,
    _write_curves,
    append_jsonl,
    archive_previous_run,
    plot_history,
)
from fnnjax.train.sharding import is_primary, sync_processes

__all__ = [
    "FitResult",
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
    "run_digest",
]

OPTIMIZERS = ("adam", "adamw", "sgd")
_RUN_ONCE_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}
SCHEDULES = ("constant", "cosine", "step")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run besides the model and the data.

    Attributes:
        epochs: passes over the training split.
        batch_size: global batch size (split across devices; must be a multiple of their number).
        optimizer: ``"adam"``, ``"adamw"`` (decoupled weight decay) or ``"sgd"``.
        learning_rate: peak learning rate.
        momentum: SGD momentum (``"sgd"`` only; 0 disables it).
        nesterov: Nesterov momentum (``"sgd"`` only).
        weight_decay: for ``"sgd"`` and ``"adam"`` an L2 term ``wd * w`` added to the gradient
            (PyTorch/Keras semantics, used by the papers); for ``"adamw"`` decoupled decay.
        schedule: ``"constant"``, ``"cosine"`` (decay to 0 over the run) or ``"step"``
            (multiply by ``step_factor`` at each epoch in ``step_epochs``).
        warmup_epochs: linear warm-up from 0 before the schedule (may be fractional).
        step_epochs, step_factor: the ``"step"`` schedule's milestones and factor.
        grad_clip: clip gradients to this global norm (None: no clipping).
        augment: random crop + horizontal flip on each training batch, chosen per dataset by
            :func:`~fnnjax.train.data.augmentation_for` (padding about 1/8 of the image side, so
            4 pixels on CIFAR's 32x32 and 1 on 8x8 digits; no flips for digit datasets).
        seed: the run's only source of randomness.
        eval_batch_size: batch size for evaluation.
        checkpoint_every_epochs: save every this many epochs (the final epoch is always saved).
        keep_checkpoints: how many recent checkpoints to keep.
        num_devices: devices for data parallelism (None: all local devices).
        log_every_steps: progress-bar refresh interval (each refresh syncs with the device).
        progress: show a tqdm progress bar.
        tensorboard: also write TensorBoard event files (needs ``tensorboardX``).
    """

    epochs: int = 20
    batch_size: int = 128
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup_epochs: float = 0.0
    step_epochs: tuple[int, ...] = ()
    step_factor: float = 0.1
    grad_clip: float | None = None
    augment: bool = False
    seed: int = 0
    eval_batch_size: int = 1000
    checkpoint_every_epochs: int = 1
    keep_checkpoints: int = 3
    num_devices: int | None = None
    log_every_steps: int = 20
    progress: bool = True
    tensorboard: bool = False

    def __post_init__(self) -> None:
        def need(ok: bool, field: str, expected: str) -> None:
            if not ok:
                raise ConfigError(f"{field}: expected {expected}, got {getattr(self, field)!r}")

        need(self.optimizer in OPTIMIZERS, "optimizer", f"one of {', '.join(OPTIMIZERS)}")
        need(self.schedule in SCHEDULES, "schedule", f"one of {', '.join(SCHEDULES)}")
        need(isinstance(self.epochs, int) and self.epochs >= 1, "epochs", "an integer >= 1")
        need(isinstance(self.batch_size, int) and self.batch_size >= 1, "batch_size", "an integer >= 1")
        need(math.isfinite(self.learning_rate) and self.learning_rate > 0, "learning_rate", "a positive number")
        need(0 <= self.momentum < 1, "momentum", "a number in [0, 1)")
        need(self.weight_decay >= 0, "weight_decay", "a number >= 0")
        need(self.warmup_epochs >= 0, "warmup_epochs", "a number >= 0")
        need(self.grad_clip is None or self.grad_clip > 0, "grad_clip", "a positive number or None")
        need(self.eval_batch_size >= 1, "eval_batch_size", "an integer >= 1")
        need(self.checkpoint_every_epochs >= 1, "checkpoint_every_epochs", "an integer >= 1")
        need(self.keep_checkpoints >= 1, "keep_checkpoints", "an integer >= 1")
        need(self.log_every_steps >= 1, "log_every_steps", "an integer >= 1")
        need(self.schedule != "step" or len(self.step_epochs) > 0, "step_epochs",
             "at least one milestone epoch for schedule='step'")

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "step_epochs": list(self.step_epochs)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown TrainConfig field(s): {', '.join(unknown)}")
        values = dict(values)
        if "step_epochs" in values:
            values["step_epochs"] = tuple(values["step_epochs"])
        return cls(**values)


@struct.dataclass
class TrainState:
    """The whole mutable state of a run, as one pytree (checkpointed as is).

    Attributes:
        step: number of optimizer updates done (int32 scalar).
        params: the model's ``"params"`` collection.
        batch_stats: the model's ``"batch_stats"`` collection (empty dict if it has none).
        opt_state: the optax optimizer state.
        rng: raw uint32 key of the training-noise stream (dropout, augmentation).
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jax.Array

    def variables(self) -> dict[str, Any]:
        """The Flax variables dict for ``model.apply``."""
        if self.batch_stats:
            return {"params": self.params, "batch_stats": self.batch_stats}
        return {"params": self.params}


def make_schedule(config: TrainConfig, steps_per_epoch: int) -> optax.Schedule:
    """The learning-rate schedule (step -> rate) that ``config`` describes."""
    total = config.epochs * steps_per_epoch
    warmup = int(round(config.warmup_epochs * steps_per_epoch))
    lr = config.learning_rate
    if config.schedule == "constant":
        main: optax.Schedule = optax.constant_schedule(lr)
    elif config.schedule == "cosine":
        main = optax.cosine_decay_schedule(lr, decay_steps=max(total - warmup, 1))
    else:
        main = optax.piecewise_constant_schedule(
            lr, {int(e * steps_per_epoch) - warmup: config.step_factor for e in config.step_epochs}
        )
    schedule = (
        optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])
        if warmup > 0
        else main
    )
    return schedule


def make_optimizer(config: TrainConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    """The optax optimizer (with schedule, clipping and weight decay) that ``config`` describes."""
    schedule = make_schedule(config, steps_per_epoch)
    parts = []
    if config.grad_clip is not None:
        parts.append(optax.clip_by_global_norm(config.grad_clip))
    if config.optimizer == "adamw":
        parts.append(optax.adamw(schedule, weight_decay=config.weight_decay))
    else:
        if config.weight_decay > 0:
            parts.append(optax.add_decayed_weights(config.weight_decay))
        if config.optimizer == "adam":
            parts.append(optax.adam(schedule))
        else:
            parts.append(
                optax.sgd(schedule, momentum=config.momentum or None, nesterov=config.nesterov)
            )
    return optax.chain(*parts)


def init_state(
    key: jax.Array, model: nn.Module, input_shape: tuple[int, ...], tx: optax.GradientTransformation
) -> TrainState:
    """Initializes params (and batch stats) for inputs of ``input_shape`` and the optimizer state.

    Raises:
        ConfigError: the model cannot take inputs of that shape (the message names both).
    """
    if not jax.dtypes.issubdtype(jnp.asarray(key).dtype, jax.dtypes.prng_key):
        key = jax.random.wrap_key_data(key)  # a legacy raw uint32 key
    init_key, rng = jax.random.split(key)
    params_key, dropout_key = jax.random.split(init_key)
    dummy = jnp.zeros((1, *input_shape), jnp.float32)
    try:
        init = jax.jit(lambda k, d: model.init({"params": k, "dropout": d}, dummy, train=False))
        traced = isinstance(params_key, jax.core.Tracer)  # under eval_shape/jit: nothing to compile
        if jax.default_backend() == "cpu" and not traced:
            # It runs once: without XLA's backend (LLVM) optimizations a deep model's threefry
            # draws compile several times faster on CPU (Inception: ~25 s -> ~7 s); the values
            # are deterministic and may differ from an optimized compile in the last bits.
            init = init.lower(params_key, dropout_key).compile(_RUN_ONCE_COMPILER_OPTIONS)
        variables = init(params_key, dropout_key)
    except Exception as error:
        raise ConfigError(
            f"model {type(model).__name__} cannot take inputs of shape {tuple(input_shape)}: "
            f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"
        ) from error
    params = variables["params"]
    batch_stats = variables.get("batch_stats", {})
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=batch_stats,
        opt_state=tx.init(params),
        rng=jax.random.key_data(rng),
    )


def _loss_and_accuracy(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    loss = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
    return loss, (jnp.argmax(logits, -1) == labels).astype(jnp.float32)


def make_train_step(
    model: nn.Module,
    tx: optax.GradientTransformation,
    mesh: jax.sharding.Mesh,
    *,
    augment: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
) -> Callable[..., tuple[TrainState, dict[str, jax.Array]]]:
    """A jitted ``step(state, x_all, y_all, order, i) -> (state, metrics)``.

    The step trains on ``x_all[order[i]]``: ``x_all`` / ``y_all`` are the whole (replicated)
    training split, ``order`` is ``[steps_per_epoch, batch]`` indices; the gathered batch is
    sharded across ``mesh``'s data axis. ``state`` is donated.
    """
    repl = sharding.replicated_sharding(mesh)
    batch = sharding.batch_sharding(mesh)

    def step(state: TrainState, x_all, y_all, order, i):
        idx = order[i]
        x = jax.lax.with_sharding_constraint(x_all[idx], batch)
        y = jax.lax.with_sharding_constraint(y_all[idx], batch)
        step_key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
        noise_key, drop_key = jax.random.split(step_key)
        if augment is not None:
            x = augment(noise_key, x)

        def loss_fn(params):
            variables = {**state.variables(), "params": params}
            logits, updates = model.apply(
                variables, x, train=True, rngs={"dropout": drop_key}, mutable=["batch_stats"]
            )
            loss, correct = _loss_and_accuracy(logits, y)
            return loss.mean(), (correct.mean(), updates.get("batch_stats", {}))

        (loss, (accuracy, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params
        )
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        new_state = state.replace(
            step=state.step + 1,
            params=optax.apply_updates(state.params, updates),
            batch_stats=batch_stats,
            opt_state=opt_state,
        )
        return new_state, {"loss": loss, "accuracy": accuracy}

    return jax.jit(step, out_shardings=(repl, repl), donate_argnums=(0,))


def make_eval_step(model: nn.Module, mesh: jax.sharding.Mesh) -> Callable[..., dict[str, jax.Array]]:
    """A jitted ``eval(state, x, y, mask) -> {"loss_sum", "correct", "count"}`` on one batch."""
    batch = sharding.batch_sharding(mesh)

    def evaluate_batch(state: TrainState, x, y, mask):
        x = jax.lax.with_sharding_constraint(x, batch)
        logits = model.apply(state.variables(), x, train=False)
        loss, correct = _loss_and_accuracy(logits, y)
        return {"loss_sum": (loss * mask).sum(), "correct": (correct * mask).sum(),
                "count": mask.sum()}

    return jax.jit(evaluate_batch, out_shardings=sharding.replicated_sharding(mesh))


def _padded_batches(split: Split, batch_size: int, multiple: int):
    """Fixed-shape batches covering ``split``, padded with masked-out rows (one compile)."""
    size = max(multiple, min(batch_size, len(split)))
    size = -(-size // multiple) * multiple
    for start in range(0, len(split), size):
        x, y = split.x[start : start + size], split.y[start : start + size]
        pad = size - len(x)
        mask = np.concatenate([np.ones(len(x), np.float32), np.zeros(pad, np.float32)])
        yield (np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)]),
               np.concatenate([y, np.zeros(pad, y.dtype)]), mask)  # fmt: skip


def evaluate(
    eval_step: Callable[..., dict[str, jax.Array]],
    state: TrainState,
    split: Split,
    *,
    batch_size: int,
    mesh: jax.sharding.Mesh,
    input_shape: tuple[int, ...] | None = None,
) -> dict[str, float]:
    """Mean loss and accuracy of ``state`` on ``split``.

    Raises:
        DataError: ``split`` holds examples of another shape than ``input_shape``.
    """
    if input_shape is not None and tuple(split.x.shape[1:]) != tuple(input_shape):
        raise DataError(
            f"evaluation data has examples of shape {tuple(split.x.shape[1:])} but the model was "
            f"initialized for {tuple(input_shape)}"
        )
    totals = {"loss_sum": 0.0, "correct": 0.0, "count": 0.0}
    batch = sharding.batch_sharding(mesh)
    outputs = [
        eval_step(state, *jax.device_put((x, y, m), batch))
        for x, y, m in _padded_batches(split, batch_size, mesh.size)
    ]
    for out in jax.device_get(outputs):
        for name in totals:
            totals[name] += float(out[name])
    count = max(totals["count"], 1.0)
    return {"loss": totals["loss_sum"] / count, "accuracy": totals["correct"] / count}


@dataclasses.dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        state: the final train state.
        history: one dict per epoch (train/validation/test loss and accuracy, time, throughput).
        summary: final metrics and run description (also written to ``summary.json``).
    """

    state: TrainState
    history: list[dict[str, Any]]
    summary: dict[str, Any]


def run_digest(description: dict[str, Any] | None, data: Dataset, config: TrainConfig) -> str:
    """Six hex digits that change whenever a checkpoint could not continue the run.

    ``fnnjax train`` appends it to its default output folder (``runs/MODEL-DATASET-DIGEST``), so
    that two different runs never share a folder while the same command always finds its own
    checkpoints. Where the data came from (a path) is left out: the same run on another machine
    gets the same name.
    """
    run = {"model": description, "dataset": data.describe(), "config": config.to_dict(),
           "augmentation": _augmentation(data, config)}  # fmt: skip
    text = json.dumps(_identity(run), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:6]


def _augmentation(data: Dataset, config: TrainConfig) -> dict[str, Any] | None:
    """The dataset-aware augmentation a run uses (part of its identity), or None."""
    return augmentation_for(data).describe() if config.augment else None


def fit(
    model: nn.Module,
    data: Dataset,
    config: TrainConfig,
    *,
    out_dir: str | Path | None = None,
    resume: bool = True,
    description: dict[str, Any] | None = None,
    mesh: jax.sharding.Mesh | None = None,
    on_epoch_end: Callable[[dict[str, Any], TrainState], None] | None = None,
) -> FitResult:
    """Trains ``model`` on ``data`` and evaluates it after every epoch.

    Args:
        model: a Flax module following the :mod:`fnnjax.models` convention.
        data: a :class:`~fnnjax.train.data.Dataset` (normalized arrays).
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
        on_epoch_end: called with each epoch's record and the state (e.g. for plots).

    Returns:
        A :class:`FitResult`. Its summary holds ``best_epoch``/``best_validation_accuracy`` (and
        the checkpoint ``best/``) when ``data`` has a validation split; ``best_test_accuracy`` is
        the highest test accuracy of any epoch, as the papers report it (an optimistic number).

    Raises:
        ConfigError, DataError: bad configuration or data (one-line messages).
        TrainingDivergedError: the loss became NaN/inf (the last good checkpoint is kept).
        CheckpointError: ``out_dir`` holds a different run, or no readable checkpoint.
    """
    mesh = mesh or sharding.make_mesh(config.num_devices)
    if config.batch_size % mesh.size:
        raise ConfigError(
            f"batch_size {config.batch_size} must be a multiple of the number of devices "
            f"({mesh.size}); use e.g. {config.batch_size // mesh.size * mesh.size or mesh.size}"
        )
    validate_dataset(data)  # lengths, dtypes, label range, shapes, NaN/inf: one line each
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
    }
    primary = is_primary()

    tx = make_optimizer(config, steps_per_epoch)
    schedule = make_schedule(config, steps_per_epoch)
    init_key, data_key, train_key = jax.random.split(jax.random.key(config.seed), 3)
    state = init_state(init_key, model, data.input_shape, tx)
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
            restored = checkpoints.restore_latest(
                state, check=lambda meta: _check_same_run(meta.get("run", {}), run, out)
            )
        if restored is not None:
            state, meta = restored
            if config.progress and primary:
                tqdm.write(f"resuming {out} from step {int(state.step)} (epoch {meta['epoch']})")
        if len(data.validation):
            best_checkpoints = Checkpoints(out / "best", max_to_keep=1)
            best = _read_best(best_checkpoints, lambda saved: _check_same_run(saved, run, out))
            saved_best_steps = set(best_checkpoints.steps())
        if primary:
            _truncate_jsonl(out / "metrics.jsonl", int(state.step) // steps_per_epoch)
            (out / "config.json").write_text(json.dumps(run, indent=2))
        sync_processes("fnnjax-history")
        if (out / "metrics.jsonl").exists():  # every process returns the whole history
            lines = (out / "metrics.jsonl").read_text().splitlines()
            history = [json.loads(ln) for ln in lines]
        if best is None and len(data.validation):  # best/ empty or damaged: judge the past too
            best = _best_of(history)
    writer = _tensorboard_writer(out) if config.tensorboard and out is not None and primary else None

    repl = sharding.replicated_sharding(mesh)
    x_train, y_train = jax.device_put((data.train.x, data.train.y), repl)
    policy = augmentation_for(data) if config.augment else None
    for text in policy.warnings if policy is not None else ():
        warnings.warn(f"--augment on {data.name!r}: {text}", stacklevel=2)
    train_step = make_train_step(
        model, tx, mesh, augment=policy if policy is not None and not policy.is_identity else None
    )
    eval_step = make_eval_step(model, mesh)
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
                "train_accuracy": float(np.mean([m["accuracy"] for m in train])),
                "epoch_seconds": seconds,
                "examples_per_second": len(train) * config.batch_size / seconds,
                "learning_rate": float(schedule(int(state.step) - 1)),
            }
            for name, split in (("validation", data.validation), ("test", data.test)):
                if len(split):
                    values = evaluate(eval_step, state, split, batch_size=config.eval_batch_size,
                                      mesh=mesh)  # fmt: skip
                    record.update({f"{name}_{k}": v for k, v in values.items()})
            history.append(record)
            bar.set_postfix(
                epoch=epoch + 1, loss=f"{train_loss:.4f}",
                test_acc=f"{record.get('test_accuracy', float('nan')):.4f}",
                ex_per_s=f"{record['examples_per_second']:.0f}",
            )  # fmt: skip
            if out is not None and primary:
                append_jsonl(out / "metrics.jsonl", record)
            if writer is not None:
                for key, value in record.items():
                    if key not in ("epoch", "step"):
                        writer.add_scalar(key, value, record["step"])
            if on_epoch_end is not None:
                on_epoch_end(record, state)
            meta = {"run": run, "epoch": epoch + 1, "step": int(state.step),
                    "steps_per_epoch": steps_per_epoch}  # fmt: skip
            if len(data.validation) and (
                best is None or record["validation_accuracy"] > best["validation_accuracy"]
            ):
                best = {"epoch": epoch + 1, "step": int(state.step),
                        **{k: v for k, v in record.items() if k.startswith(("validation_", "test_"))}}  # fmt: skip
                # A resumed run that redoes an epoch finds its best checkpoint already written.
                if best_checkpoints is not None and best["step"] not in saved_best_steps:
                    best_checkpoints.save(best["step"], state, {**meta, "best": best})
            if checkpoints is not None and (
                (epoch + 1) % config.checkpoint_every_epochs == 0 or epoch + 1 == config.epochs
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
        name: evaluate(eval_step, state, split, batch_size=config.eval_batch_size, mesh=mesh)
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
        "best_test_accuracy": max((h.get("test_accuracy", 0.0) for h in history), default=None),
        **_best_summary(best, out),
    }
    if out is not None and primary:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return FitResult(state=state, history=history, summary=summary)


def _tensorboard_writer(out: Path):
    try:
        from tensorboardX import SummaryWriter  # noqa: PLC0415
    except ImportError:
        raise ConfigError(
            "tensorboard=True needs tensorboardX: pip install -e '.[tensorboard]' in the fnnjax clone"
        ) from None
    return SummaryWriter(str(out / "tensorboard"))
