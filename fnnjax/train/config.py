"""What a training run is configured with: :class:`TrainConfig`, and the learning-rate schedule
and the optax optimizer it makes (:func:`make_schedule`, :func:`make_optimizer`,
:func:`cosine_restarts`). Kept apart from :mod:`fnnjax.train.loop` so the run folder
(:mod:`fnnjax.train.rundir`) reads the config's defaults without importing the loop."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax

from fnnjax.checks import check_choice, check_int, check_number
from fnnjax.errors import ConfigError

__all__ = ["OPTIMIZERS", "SCHEDULES", "TrainConfig", "cosine_restarts", "make_optimizer", "make_schedule"]


OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "cosine_restarts", "step")


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
        schedule: ``"constant"``, ``"cosine"`` (decay to ``min_learning_rate``, default 0, over
            the run), ``"cosine_restarts"``
            (SGDR, ENAS's: cosine from ``learning_rate`` to ``min_learning_rate`` over
            ``restart_epochs``, restarting with periods ``restart_mult`` times longer; the rate
            changes once per epoch, as the released ENAS code's) or ``"step"`` (multiply by
            ``step_factor`` at each epoch in ``step_epochs``).
        restart_epochs, restart_mult, min_learning_rate: ``"cosine_restarts"``'s first period,
            period factor and lowest rate (the lowest rate of ``"cosine"`` too) (ENAS and NHN: 10, 2, 0.0005 or 0.001; 310 epochs are
            periods of 10 + 20 + 40 + 80 + 160).
        warmup_epochs: linear warm-up from 0 before the schedule (may be fractional).
        step_epochs, step_factor: the ``"step"`` schedule's milestones and factor.
        grad_clip: clip gradients to this global norm (None: no clipping).
        cutout: Cutout's square side on each training batch (0: off; with or without
            ``augment``; :func:`~fnnjax.train.data.cutout`).
        augment: random crop + horizontal flip on each training batch, chosen per dataset by
            :func:`~fnnjax.train.augment.augmentation_for` (padding about 1/8 of the image side, so
            4 pixels on CIFAR's 32x32 and 1 on 8x8 digits; no flips for digit datasets).
        seed: the run's only source of randomness.
        eval_batch_size: batch size for evaluation.
        checkpoint_every_epochs: save every this many epochs (the final epoch is always saved).
        keep_checkpoints: how many recent checkpoints to keep.
        num_devices: devices for data parallelism (None: all of them; under
            ``jax.distributed``, every process's).
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
    restart_epochs: int = 10
    restart_mult: float = 2.0
    min_learning_rate: float = 0.0
    grad_clip: float | None = None
    augment: bool = False
    cutout: int = 0
    seed: int = 0
    eval_batch_size: int = 1000
    checkpoint_every_epochs: int = 1
    keep_checkpoints: int = 3
    num_devices: int | None = None
    log_every_steps: int = 20
    progress: bool = True
    tensorboard: bool = False

    def __post_init__(self) -> None:
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("schedule", self.schedule, SCHEDULES)
        for field in ("epochs", "batch_size", "restart_epochs", "eval_batch_size",
                      "checkpoint_every_epochs", "keep_checkpoints", "log_every_steps", "cutout"):
            value = getattr(self, field)
            check_int(field, value, 0 if field == "cutout" else 1)
            object.__setattr__(self, field, int(value))  # a NumPy int too, so config.json writes it
        check_number("learning_rate", self.learning_rate, above=0)
        check_number("momentum", self.momentum, at_least=0, below=1)
        check_number("weight_decay", self.weight_decay, at_least=0)
        check_number("warmup_epochs", self.warmup_epochs, at_least=0)
        check_number("grad_clip", self.grad_clip, above=0, none=True)
        check_number("restart_mult", self.restart_mult, at_least=1)
        if self.schedule == "step" and not self.step_epochs:
            raise ConfigError(f"step_epochs: expected at least one milestone epoch for "
                              f"schedule='step', got {self.step_epochs!r}")  # fmt: skip
        check_number("min_learning_rate", self.min_learning_rate, at_least=0)
        if self.min_learning_rate > self.learning_rate:
            raise ConfigError(f"min_learning_rate: expected a number in [0, learning_rate = "
                              f"{self.learning_rate}], got {self.min_learning_rate!r}")  # fmt: skip

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


def cosine_restarts(step: jax.Array, *, steps_per_epoch: int, lr_max: float, lr_min: float,
                    first: float, mult: float) -> jax.Array:  # fmt: skip
    """SGDR's rate at ``step`` (Loshchilov and Hutter 2017), epoch-granular as the released ENAS
    code: within a period of ``t`` epochs starting at epoch ``s``, ``lr_min + (lr_max - lr_min)
    (1 + cos(pi (epoch - s) / t)) / 2``; periods ``first``, ``first * mult``, ..."""
    epoch = (jnp.asarray(step) // steps_per_epoch).astype(jnp.float32)
    if mult == 1:
        k = jnp.floor(epoch / first)
        start, t_i = k * first, jnp.asarray(first, jnp.float32)
    else:  # period k starts at first (mult^k - 1) / (mult - 1); the log's rounding corrected
        def start_of(k):
            return first * (jnp.power(mult, k) - 1.0) / (mult - 1.0)

        k = jnp.floor(jnp.log1p(epoch * (mult - 1.0) / first) / jnp.log(float(mult)))
        k = jnp.where(start_of(k + 1) <= epoch, k + 1, k)
        k = jnp.where(start_of(k) > epoch, k - 1, k)
        start, t_i = start_of(k), first * jnp.power(mult, k)
    rate = (epoch - start) / t_i
    return lr_min + 0.5 * (lr_max - lr_min) * (1.0 + jnp.cos(jnp.pi * rate))


def make_schedule(config: TrainConfig, steps_per_epoch: int) -> optax.Schedule:
    """The learning-rate schedule (step -> rate) that ``config`` describes."""
    total = config.epochs * steps_per_epoch
    warmup = int(round(config.warmup_epochs * steps_per_epoch))
    lr = config.learning_rate
    if config.schedule == "constant":
        main: optax.Schedule = optax.constant_schedule(lr)
    elif config.schedule == "cosine":
        main = optax.cosine_decay_schedule(lr, decay_steps=max(total - warmup, 1),
                                           alpha=config.min_learning_rate / lr if lr else 0.0)  # fmt: skip
    elif config.schedule == "cosine_restarts":
        main = functools.partial(cosine_restarts, steps_per_epoch=steps_per_epoch, lr_max=lr,
                                 lr_min=config.min_learning_rate, first=config.restart_epochs,
                                 mult=config.restart_mult)  # fmt: skip
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
