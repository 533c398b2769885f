"""The run folder of :func:`~fnnjax.train.loop.fit`: what a run writes beside its checkpoints, and
how a later run decides whether the folder holds *its* run.

Layout (see :mod:`fnnjax.train.loop`): ``config.json``, ``metrics.jsonl``, ``curves.png``,
``checkpoints/``, ``best/``, ``damaged/``, ``summary.json``, ``previous-<time>/``. With several
processes, process 0 writes the files; :func:`_check_shared_folder` makes every process agree that
they share the folder before anything is written.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fnnjax.errors import CheckpointError
from fnnjax.train import runfolder
from fnnjax.train.checkpoint import Checkpoints
from fnnjax.train.runfolder import (  # noqa: F401 (the folder checks fit uses)
    _check_shared_folder,
    _check_writable,
    append_jsonl,
    truncate_jsonl,
)

__all__ = ["RUN_FILES", "append_jsonl", "archive_previous_run", "differences", "plot_history",
           "truncate_jsonl"]

# Config fields that may change between a run and its resumption without changing its trajectory.
_RESUMABLE_FIELDS = frozenset(
    {"epochs", "eval_batch_size", "progress", "num_devices", "keep_checkpoints",
     "checkpoint_every_epochs", "log_every_steps", "tensorboard"}
)  # fmt: skip


ADDED_CONFIG_FIELDS = ("restart_epochs", "restart_mult", "min_learning_rate", "cutout")
"""TrainConfig fields added after runs were saved: a field at its default is left out of a run's
identity, so runs saved before it existed still resume. Register every new field here."""


def added_config_defaults() -> dict[str, Any]:
    """The defaults of :data:`ADDED_CONFIG_FIELDS`, read from TrainConfig itself."""
    from fnnjax.train.config import TrainConfig  # noqa: PLC0415

    return {f.name: f.default for f in dataclasses.fields(TrainConfig)
            if f.name in ADDED_CONFIG_FIELDS}  # fmt: skip


_EPOCH_FREE_SCHEDULES = ("constant", "cosine_restarts")
"""Schedules whose rates do not depend on the number of epochs, so more epochs extend a run
exactly (``"step"`` does not either, but its runs' identities, and so ``fnnjax train``'s default
folder names, already include the epochs: kept so that its runs keep resuming)."""


def _identity(run: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint and the run resuming it must agree on (resumable fields left out,
    fields added later while at their defaults, and a spec's name: a label, which transforms
    change, e.g. ``vgg16 uniform x0.5``)."""
    defaults = added_config_defaults()
    cfg = {k: v for k, v in run["config"].items() if not (k in defaults and v == defaults[k])}
    # More (or fewer) epochs extend a run exactly only when the schedule does not depend on them.
    epoch_free = cfg.get("schedule") in _EPOCH_FREE_SCHEDULES
    resumable = _RESUMABLE_FIELDS - (set() if epoch_free else {"epochs"})
    model = run.get("model")
    if isinstance(model, dict) and isinstance(model.get("spec"), dict):  # a name is a label
        model = {**model, "spec": {k: v for k, v in model["spec"].items() if k != "name"}}
    dataset = run.get("dataset")
    if isinstance(dataset, dict):  # where the files were read from does not change the run
        dataset = {k: v for k, v in dataset.items() if k != "source"}
    return {
        "model": model,
        "dataset": dataset,
        "config": {k: v for k, v in cfg.items() if k not in resumable},
        "augmentation": run.get("augmentation"),
        "objective": run.get("objective", "classification"),
    }


def differences(saved: Any, now: Any, where: str) -> list[str]:
    """``where: saved X, now Y`` for every leaf where two JSON-like values differ."""
    if isinstance(saved, dict) and now is None or saved is None and isinstance(now, dict):
        saved, now = saved or {}, now or {}  # no options at all == empty options
    if isinstance(saved, dict) and isinstance(now, dict):
        found = []
        for key in sorted(set(saved) | set(now), key=str):
            found += differences(saved.get(key), now.get(key), f"{where}.{key}" if where else key)
        return found
    return [] if saved == now else [f"{where}: saved {saved!r}, now {now!r}"]


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


def _check_same_run(saved: dict[str, Any], run: dict[str, Any], directory: Path) -> None:
    """Raises :class:`CheckpointError` naming each setting in which the saved run differs.

    Training settings come first (the likeliest change, e.g. ``optimizer: saved 'adam', now
    'sgd'``), then the model, the data and the augmentation; values are the runs' own.
    """
    old, new = _identity(saved) if "config" in saved else saved, _identity(run)
    problems = []
    for section in ("config", "model", "dataset", "augmentation", "objective"):
        differing = differences(old.get(section), new.get(section), section)
        if section == "config":  # name the values themselves (the identity may leave epochs out)
            keys = [p.split(":")[0].removeprefix("config.") for p in differing]
            saved_cfg = {**added_config_defaults(), **saved.get("config", {})}  # older runs
            now_cfg = run["config"]
            differing = [f"{k}: saved {saved_cfg.get(k)!r}, now {now_cfg.get(k)!r}" for k in keys]
            differing = [p + (f" (the {now_cfg.get('schedule')} schedule depends on the number of "
                              f"epochs; {', '.join(_EPOCH_FREE_SCHEDULES)} runs can be extended)"
                              if p.startswith("epochs:") else "") for p in differing]  # fmt: skip
        problems += differing
    if problems:
        shown = "; ".join(problems[:8])
        more = f" (and {len(problems) - 8} more)" if len(problems) > 8 else ""
        raise CheckpointError(
            f"{directory} holds a checkpoint of a different run ({shown}{more}); to keep both, "
            "pass another --out (out_dir=...); to start afresh here, pass --no-resume "
            "(resume=False), which moves the earlier run into previous-<time>/"
        )


RUN_FILES = ("checkpoints", "best", "damaged", "metrics.jsonl", "summary.json", "config.json",
             "curves.png", "tensorboard")  # fmt: skip
"""What a ``fit`` run folder holds (moved aside together by :func:`archive_previous_run`)."""


def archive_previous_run(out: Path, names: tuple[str, ...] = RUN_FILES) -> None:
    """Moves an earlier run's files (``names`` in ``out``; default: ``fit``'s) into
    ``out/previous-<time>/`` so that starting afresh loses nothing."""
    runfolder.archive_previous_run(out, names)


def plot_history(
    history: list[dict[str, Any]], path: str | Path, *, title: str = "", metric: str | None = None
) -> Path:
    """Writes ``path`` (PNG): loss and a metric per epoch, train beside validation and test.

    Args:
        history: :attr:`FitResult.history` (or the lines of ``metrics.jsonl``).
        path: the PNG file to write.
        title: figure title (e.g. the model and dataset).
        metric: the second panel (default: ``"accuracy"`` when recorded, else the first metric
            recorded beside the loss, e.g. regression's ``"mae"``).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt  # noqa: PLC0415

    path = Path(path)
    if metric is None:
        recorded = [k[len("train_"):] for h in history[:1] for k in h
                    if k.startswith("train_") and k != "train_loss"]  # fmt: skip
        metric = "accuracy" if "accuracy" in recorded or not recorded else recorded[0]
    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, name in zip(axes, ("loss", metric), strict=True):
        for split, style in (("train", "-"), ("validation", "--"), ("test", ":")):
            key = f"{split}_{name}"
            points = [(e, h[key]) for e, h in zip(epochs, history, strict=True) if key in h]
            if points:
                ax.plot(*zip(*points, strict=True), style, marker="o", markersize=3, label=split)
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
    if all(h.get("train_loss", 1) > 0 for h in history):
        axes[0].set_yscale("log")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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


def _write_curves(out: Path, history: list[dict[str, Any]], run: dict[str, Any]) -> None:
    """``curves.png`` for the run so far; a plotting failure only warns (results are safe)."""
    name = run["model"].get("name") or run["model"].get("class") or "model"
    try:
        plot_history(history, out / "curves.png", title=f"{name} on {run['dataset']['name']}")
    except Exception as error:  # never lose a finished run to a figure
        warnings.warn(f"could not draw {out / 'curves.png'}: {error}", stacklevel=2)
