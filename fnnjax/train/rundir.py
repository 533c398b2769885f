"""The run folder of :func:`~fnnjax.train.loop.fit`: what a run writes beside its checkpoints, and
how a later run decides whether the folder holds *its* run.

Layout (see :mod:`fnnjax.train.loop`): ``run.json``, ``config.json``, ``metrics.jsonl``,
``curves.png``, ``checkpoints/``, ``best/``, ``damaged/``, ``summary.json``, ``previous-<time>/``.
The folder itself (opening, archiving, atomic writes, provenance, the identity rule) is the
layer every driver shares, :mod:`fnnjax.train.runfolder`; this module holds what is ``fit``'s
own: which settings make a run (:func:`_check_same_run`), its digest's identity, its curves and
its best epoch.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fnnjax.errors import CheckpointError
from fnnjax.train import runfolder
from fnnjax.train.checkpoint import Checkpoints

__all__ = ["RUN_FILES", "plot_history"]

# Config fields that may change between a run and its resumption without changing its trajectory.
_RESUMABLE_FIELDS = frozenset(
    {"epochs", "eval_batch_size", "progress", "num_devices", "keep_checkpoints",
     "checkpoint_every_epochs", "log_every_steps", "tensorboard"}
)  # fmt: skip


_DIGESTED_FIELDS = frozenset(
    {"epochs", "batch_size", "optimizer", "learning_rate", "momentum", "nesterov", "weight_decay",
     "schedule", "warmup_epochs", "step_epochs", "step_factor", "grad_clip", "augment", "seed",
     "eval_batch_size", "checkpoint_every_epochs", "keep_checkpoints", "num_devices",
     "log_every_steps", "progress", "tensorboard"}
)  # fmt: skip
"""The TrainConfig fields that a run's digest (:func:`~fnnjax.train.loop.run_digest`) always
held. A field outside it (added later) enters the digest only while it differs from its
default, so that ``fnnjax train``'s default folder of a run saved before the field existed stays
the same. Nothing needs registering: the resume check ignores any field absent from a saved
record while at its default (:func:`~fnnjax.train.runfolder.run_differences`)."""


def _config_defaults() -> dict[str, Any]:
    """Every TrainConfig field's default (as :meth:`TrainConfig.to_dict` writes it)."""
    from fnnjax.train.config import TrainConfig  # noqa: PLC0415

    return TrainConfig().to_dict()


_EPOCH_FREE_SCHEDULES = ("constant", "cosine_restarts")
"""Schedules whose rates do not depend on the number of epochs, so more epochs extend a run
exactly (``"step"`` does not either, but its runs' identities, and so ``fnnjax train``'s default
folder names, already include the epochs: kept so that its runs keep resuming)."""


def _description(run: dict[str, Any]) -> dict[str, Any]:
    """A run as its resume check compares it: config first (the likeliest change), then the
    model (a spec's name left out: a label, which transforms change, e.g. ``vgg16 uniform
    x0.5``), the dataset (where its files were read from left out), the augmentation and the
    objective."""
    model = run.get("model")
    if isinstance(model, dict) and isinstance(model.get("spec"), dict):  # a name is a label
        model = {**model, "spec": {k: v for k, v in model["spec"].items() if k != "name"}}
    dataset = run.get("dataset")
    if isinstance(dataset, dict):  # where the files were read from does not change the run
        dataset = {k: v for k, v in dataset.items() if k != "source"}
    return {
        "config": dict(run.get("config") or {}),
        "model": model,
        "dataset": dataset,
        "augmentation": run.get("augmentation"),
        "objective": run.get("objective", "classification"),
    }


def _resumable(config: dict[str, Any]) -> frozenset[str]:
    """The config fields that may change between a run and its resumption without changing its
    trajectory: the epochs only when the schedule does not depend on them."""
    epoch_free = config.get("schedule") in _EPOCH_FREE_SCHEDULES
    return _RESUMABLE_FIELDS - (set() if epoch_free else {"epochs"})


def _identity(run: dict[str, Any]) -> dict[str, Any]:
    """What :func:`~fnnjax.train.loop.run_digest` hashes: the run's description without its
    resumable fields and without config fields added later while at their defaults."""
    described = _description(run)
    defaults = _config_defaults()
    cfg = {k: v for k, v in described["config"].items()
           if k in _DIGESTED_FIELDS or k not in defaults or v != defaults[k]}  # fmt: skip
    resumable = _resumable(cfg)
    return {**described, "config": {k: v for k, v in cfg.items() if k not in resumable}}


STATE_FORMAT = 2  # 2: TrainState.collections (every non-trainable collection); 1: batch_stats only


def _check_state_format(meta: dict[str, Any], directory: Path) -> None:
    """Raises :class:`CheckpointError` for a checkpoint of another train-state layout."""
    saved = meta.get("state_format", 1)
    if saved != STATE_FORMAT:
        raise CheckpointError(
            f"{directory} holds checkpoints of train-state format {saved} (written by an older "
            f"fnnjax); this version reads format {STATE_FORMAT}. Finish that run with the version "
            "that wrote it, or start afresh: --no-resume (resume=False) moves it into "
            "previous-<time>/, or pass another --out (out_dir=...)"
        )


def _check_same_run(saved: dict[str, Any], run: dict[str, Any], directory: Path | str,
                    what: str = "run") -> None:  # fmt: skip
    """Raises :class:`~fnnjax.train.runfolder.RunMismatchError` (a :class:`CheckpointError`)
    naming each setting in which the saved run differs from ``run``.

    Training settings come first (the likeliest change, e.g. ``optimizer: saved 'adam', now
    'sgd'``), named as the user sets them, then the model, the data and the augmentation. A
    config field the saved run lacks counts only when it is not at its default (it was added
    to fnnjax later); resumable fields never count (the epochs only for an epoch-free schedule).
    """
    old, new = _description(saved), _description(run)
    resumable = _resumable(old["config"]) & _resumable(new["config"])
    runfolder.check_same_run(
        directory, old, new, what=what, defaults={"config": _config_defaults()},
        ignore=tuple(f"config.{k}" for k in sorted(resumable)), strip=("config.",),
        hints={"config.epochs": f"the {new['config'].get('schedule')} schedule depends on the "
               f"number of epochs; {', '.join(_EPOCH_FREE_SCHEDULES)} runs can be extended"},
    )  # fmt: skip


RUN_FILES = ("checkpoints", "best", "damaged", "metrics.jsonl", "summary.json", "config.json",
             "curves.png", "tensorboard")  # fmt: skip
"""What a ``fit`` run folder holds (moved aside together on ``resume=False``; with ``run.json``:
:class:`~fnnjax.train.runfolder.RunFolder`)."""


def plot_history(
    history: list[dict[str, Any]], path: str | Path, *, title: str = "", metric: str | None = None
) -> Path | None:
    """Writes ``path`` (PNG): loss and a metric per epoch, train beside validation and test.

    Args:
        history: :attr:`FitResult.history` (or the lines of ``metrics.jsonl``).
        path: the PNG file to write.
        title: figure title (e.g. the model and dataset).
        metric: the second panel (default: ``"accuracy"`` when recorded, else the first metric
            recorded beside the loss, e.g. regression's ``"mae"``).

    Returns:
        ``path`` as a :class:`~pathlib.Path`, or None when drawing failed (a warning says why:
        :func:`~fnnjax.train.runfolder.save_figure`).
    """
    return runfolder.save_figure(path, _draw_history(history, metric), cols=2, size=(10, 3.8),
                                 title=title)  # fmt: skip


def _draw_history(history: list[dict[str, Any]], metric: str | None) -> Callable[[Any, Any], None]:
    """``draw(fig, axes)`` of :func:`plot_history`."""
    if metric is None:
        recorded = [k[len("train_"):] for h in history[:1] for k in h
                    if k.startswith("train_") and k != "train_loss"]  # fmt: skip
        metric = "accuracy" if "accuracy" in recorded or not recorded else recorded[0]

    def draw(fig: Any, axes: Any) -> None:
        from matplotlib.ticker import MaxNLocator  # noqa: PLC0415

        axes = list(axes.flat)  # save_figure's 1x2 grid
        epochs = [h["epoch"] for h in history]
        for ax, name in zip(axes, ("loss", metric), strict=True):
            for split, style in (("train", "-"), ("validation", "--"), ("test", ":")):
                key = f"{split}_{name}"
                points = [(e, h[key]) for e, h in zip(epochs, history, strict=True) if key in h]
                if points:
                    ax.plot(*zip(*points, strict=True), style, marker="o", markersize=3,
                            label=split)  # fmt: skip
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs, even for one
            ax.set_ylabel(name)
            ax.grid(alpha=0.3)
            ax.legend()
        losses = [h[k] for h in history for k in h if k.endswith("_loss")]
        if losses and min(losses) > 0 and max(losses) / min(losses) > 10:  # log only if it spans
            axes[0].set_yscale("log")

    return draw


def _best_of(history: list[dict[str, Any]], select: str, maximize: bool) -> dict[str, Any] | None:
    """The record of the epoch with the best ``validation_<select>`` (no checkpoint is known)."""
    key = f"validation_{select}"
    scored = [h for h in history if key in h]
    if not scored:
        return None
    record = (max if maximize else min)(scored, key=lambda h: h[key])
    return {"epoch": record["epoch"], "step": record["step"], "checkpoint": False,
            **{k: v for k, v in record.items() if k.startswith(("validation_", "test_"))}}  # fmt: skip


def _read_best(
    best_checkpoints: Checkpoints, check: Callable[[dict[str, Any]], None]
) -> dict[str, Any] | None:
    """The best epoch recorded in ``best/`` so far (None if empty or unreadable).

    ``check(meta)`` raises if the recorded best belongs to another run. A damaged best checkpoint is
    moved into ``damaged/`` and the next best epoch takes its place.
    """
    steps = best_checkpoints.steps()
    if not steps:
        return None
    try:
        meta = best_checkpoints.read_meta(steps[-1])
    except CheckpointError as error:
        moved = best_checkpoints.move_aside(steps[-1])
        warnings.warn(f"{error}; it was moved to {moved} and will be replaced", stacklevel=3)
        return None
    check(meta)
    return meta.get("best")


def _best_summary(
    best: dict[str, Any] | None, out: Path | None, select: str = "accuracy", maximize: bool = True
) -> dict[str, Any]:
    """The summary's best-epoch fields (chosen on the validation split only)."""
    if best is None:
        return {
            "best_epoch": None,
            "best_checkpoint": None,
            "best_note": "no validation split, so no best checkpoint was kept (choosing an epoch "
            "on the test split would leak it); pass --validation FRACTION "
            "(validation_fraction=...) to keep one",
        }
    return {
        "best_epoch": best["epoch"],
        **{f"best_{k}": v for k, v in best.items() if k.startswith("validation_")},
        **{f"{k}_at_best_epoch": v for k, v in best.items() if k.startswith("test_")},
        "best_checkpoint": str(out / "best" / str(best["step"]))
        if out is not None and best.get("checkpoint", True) else None,
        "best_note": f"the epoch with the {'highest' if maximize else 'lowest'} validation {select}"
        + ("; restore it with train.Checkpoints(OUT / 'best').restore_latest(template)"
           if out is not None and best.get("checkpoint", True)
           else ("" if out is None else "; its checkpoint was lost (best/ empty or damaged)")),
    }


def _write_curves(folder: runfolder.RunFolder, history: list[dict[str, Any]],
                  run: dict[str, Any]) -> None:  # fmt: skip
    """``curves.png`` for the run so far (process 0; a drawing failure only warns)."""
    folder.figure("curves.png", _draw_history(history, None), cols=2, size=(10, 3.8),
                  title=_run_title(run))  # fmt: skip


def _run_title(run: dict[str, Any]) -> str:
    """A fit run's title, ``"<model> on <dataset>"``: the description's ``name`` or ``class``,
    else its spec's name; a training of the NHN pipeline (``nhn_stage`` in its description) is
    ``"NHN <stage>: <spec name>"`` (e.g. ``"NHN base: enas_arc_12x36 on cifar10"``). Only the
    figure reads it: the description, and so the run's identity, is unchanged."""
    model = run.get("model")
    model = model if isinstance(model, dict) else {}
    spec = model.get("spec") if isinstance(model.get("spec"), dict) else {}
    spec_name = spec.get("name") or ""
    name = model.get("name") or model.get("class") or spec_name or "model"
    if model.get("nhn_stage"):
        shown = spec_name and spec_name.lower() != "nhn"  # the final network's spec is "nhn"
        name = f"NHN {model['nhn_stage']}" + (f": {spec_name}" if shown else "")
    dataset = run.get("dataset")
    where = dataset.get("name") if isinstance(dataset, dict) else None
    return f"{name} on {where}" if where else name
