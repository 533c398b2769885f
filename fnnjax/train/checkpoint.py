"""Checkpoints: orbax ``CheckpointManager`` with the train state and a JSON description beside it.

Each saved step holds two items:

* ``state``: the :class:`~fnnjax.train.loop.TrainState` pytree (params, batch stats, optimizer
  state, step, rng), written by orbax's ``StandardSave`` (atomic: a step directory appears only
  once it is complete; asynchronous: the train loop goes on while it is written).
* ``meta``: JSON with everything needed to rebuild the shapes and continue exactly — the model
  name/options or architecture spec, the training config, the dataset description, the data
  position (epoch, step, steps per epoch) and a SHA-256 fingerprint of every array of the state.

On restore the fingerprint is recomputed: a checkpoint whose bytes changed on disk, or that orbax
cannot read, is reported with a warning and the previous one is tried, so a resume is never
silently wrong. If no checkpoint can be read, :class:`CheckpointError` says so (nothing is deleted).
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from fnnjax.errors import CheckpointError

__all__ = ["CheckpointError", "Checkpoints", "fingerprint"]

log = logging.getLogger(__name__)


def fingerprint(tree: Any) -> str:
    """SHA-256 over the bytes, shapes and dtypes of every array leaf of ``tree`` (host copy)."""
    digest = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        array = np.asarray(jax.device_get(leaf))
        digest.update(f"{jax.tree_util.keystr(path)}:{array.dtype}:{array.shape};".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


class Checkpoints:
    """Saves and restores train states in ``directory`` (made absolute, as orbax requires).

    Args:
        directory: folder of the step sub-folders (created if missing).
        max_to_keep: how many recent checkpoints to keep (older ones are deleted by orbax).
        asynchronous: write in a background thread; call :meth:`wait` before reading them.
    """

    def __init__(self, directory: str | Path, *, max_to_keep: int = 3, asynchronous: bool = True):
        self.directory = Path(directory).expanduser().resolve()
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep,
                create=True,
                enable_async_checkpointing=asynchronous,
            ),
            item_names=("state", "meta"),
        )

    def steps(self) -> list[int]:
        """Saved steps, oldest first."""
        self._manager.reload()
        return sorted(self._manager.all_steps())

    def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
        """Saves ``state`` and ``meta`` (plus the state's fingerprint) as checkpoint ``step``."""
        meta = {**meta, "fingerprint": fingerprint(state) if jax.process_count() == 1 else None}
        self._manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
            force=True,
        )

    def restore(self, step: int, template: Any) -> tuple[Any, dict[str, Any]]:
        """Restores checkpoint ``step`` into the structure, shapes and shardings of ``template``.

        Raises:
            CheckpointError: unreadable, or its arrays do not match the stored fingerprint.
        """
        try:
            restored = self._manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(template), meta=ocp.args.JsonRestore()
                ),
            )
        except Exception as error:  # orbax raises many types for a damaged folder
            raise CheckpointError(
                f"checkpoint {self.directory / str(step)} is unreadable: "
                f"{type(error).__name__}: {str(error)[:200]}"
            ) from error
        state, meta = restored["state"], dict(restored["meta"])
        expected = meta.get("fingerprint")
        if expected is not None and fingerprint(state) != expected:
            raise CheckpointError(
                f"checkpoint {self.directory / str(step)} is corrupted: its arrays do not match the "
                "fingerprint written with them"
            )
        return state, meta

    def restore_latest(self, template: Any) -> tuple[Any, dict[str, Any]] | None:
        """Restores the newest readable checkpoint, warning about each newer one that is damaged.

        Returns:
            ``(state, meta)``, or None if the folder holds no checkpoint at all.

        Raises:
            CheckpointError: checkpoints exist but none can be restored.
        """
        steps = self.steps()
        if not steps:
            return None
        problems = []
        for step in reversed(steps):
            try:
                return self.restore(step, template)
            except CheckpointError as error:
                problems.append(str(error))
                warnings.warn(f"{error}; falling back to an earlier checkpoint", stacklevel=2)
        raise CheckpointError(
            f"none of the checkpoints in {self.directory} can be restored ({'; '.join(problems)}). "
            "Move the folder away or pass --no-resume with a new --out to start afresh."
        )

    def wait(self) -> None:
        """Blocks until asynchronous saves are on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves and releases the manager."""
        self._manager.wait_until_finished()
        self._manager.close()
