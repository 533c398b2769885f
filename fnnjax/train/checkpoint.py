"""Checkpoints: orbax ``CheckpointManager`` with the train state and a JSON description beside it.

Each saved step holds two items:

* ``state``: the :class:`~fnnjax.train.loop.TrainState` pytree (params, batch stats, optimizer
  state, step, rng), written by orbax's ``StandardSave`` (atomic: a step directory appears only
  once it is complete; asynchronous: the train loop goes on while it is written).
* ``meta``: JSON with everything needed to rebuild the shapes and continue exactly — the model
  name/options or architecture spec, the training config, the dataset description, the data
  position (epoch, step, steps per epoch) and a SHA-256 fingerprint of every array of the state.

Restoring reads ``meta`` first, so a caller can check that the folder holds *its* run before any
array is touched (:meth:`Checkpoints.restore_latest`'s ``check``). The fingerprint is then
recomputed: a checkpoint whose bytes changed on disk, or that orbax cannot read (a truncated or
missing data file, a deleted manifest, junk metadata), is reported in one warning and the previous
one is tried. Once an earlier checkpoint restores, each damaged newer one is *moved aside* into
``damaged/`` next to the checkpoint folder (kept for inspection, never deleted) so that the run can
save that step again and finish. If no checkpoint can be read, :class:`CheckpointError` says so and
nothing is moved: a folder that is unreadable as a whole (e.g. written by an incompatible version)
is left exactly as it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from fnnjax.errors import CheckpointError
from fnnjax.train.jsonio import plain
from fnnjax.train.sharding import is_primary, sync_processes

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


def _from_orbax(obj: Any) -> bool:
    """Whether ``obj`` is a coroutine or generator defined in orbax or tensorstore."""
    code = next((getattr(obj, name) for name in ("cr_code", "gi_code", "ag_code")
                 if getattr(obj, name, None) is not None), None)  # fmt: skip
    filename = getattr(code, "co_filename", "")
    return "orbax" in filename or "tensorstore" in filename


def _drop_closed_event_loop_reports(unraisable: Any, previous: Callable[[Any], None]) -> None:
    """``sys.unraisablehook`` that drops only the late reports of an abandoned orbax read.

    After a read from a damaged checkpoint fails, tensorstore's pending callbacks reach an asyncio
    loop that orbax has already closed ("Event loop is closed", 20 six-line tracebacks for one
    missing manifest), and orbax's unfinished read coroutines are closed (``GeneratorExit``).
    They carry no information beyond the error already raised; everything else is passed on.
    """
    error = unraisable.exc_value
    if isinstance(error, RuntimeError) and str(error) == "Event loop is closed":
        return
    closed = isinstance(error, GeneratorExit) or isinstance(error.__cause__, GeneratorExit)
    if closed and _from_orbax(unraisable.object):  # an abandoned read coroutine
        return
    previous(unraisable)


def _filter_closed_event_loop_reports() -> None:
    if getattr(sys.unraisablehook, "_fnnjax", False):
        return
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        _drop_closed_event_loop_reports(unraisable, previous)

    hook._fnnjax = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


_TASK_REPORT = re.compile(r"coro=<(?P<name>\w+)\(\) (?:done|running), defined at (?P<file>[^>]*?):\d+>")


class _AbandonedOrbaxReads(logging.Filter):
    """Drops asyncio's reports of the read tasks an orbax restore leaves behind when it fails.

    When one array of a damaged checkpoint cannot be read, orbax raises that error and abandons
    the read tasks of the other arrays; each failed one is reported by asyncio when it is garbage
    collected ("Task exception was never retrieved", ~7 lines and the full TensorStore spec each:
    75-156 lines for one deleted manifest), at any later moment, e.g. in the middle of the resumed
    training or at exit, long after :func:`_quiet_orbax_errors` has restored the log levels.
    Only tasks of an orbax or tensorstore coroutine that reads (``*deserialize*``, ``*restore*``,
    ``*read*``) are dropped; every other asyncio report is passed on.
    """

    _fnnjax = True

    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.msg)
        if not text.startswith(("Task exception was never retrieved", "Task was destroyed but it is pending")):
            return True
        match = _TASK_REPORT.search(record.getMessage())
        if match is None:
            return True
        name, filename = match["name"].lower(), match["file"]
        from_orbax = "orbax" in filename or "tensorstore" in filename
        reads = any(word in name for word in ("deserialize", "restore", "read"))
        return not (from_orbax and reads)


def _filter_abandoned_orbax_reads() -> None:
    asyncio_log = logging.getLogger("asyncio")
    if not any(getattr(f, "_fnnjax", False) for f in asyncio_log.filters):
        asyncio_log.addFilter(_AbandonedOrbaxReads())


@contextlib.contextmanager
def _quiet_orbax_errors():
    """Silences the tracebacks orbax, tensorstore and asyncio log for an unreadable checkpoint.

    A damaged data file makes them log 100+ lines to stderr although the error is also raised,
    and :meth:`Checkpoints.restore_latest` already reports it in one warning line. It also arms
    :func:`_filter_closed_event_loop_reports` (before the read: under load, a late report can
    arrive while the failing read is still unwinding), and :class:`_AbandonedOrbaxReads` for the
    asyncio reports of the failed read's other tasks, which arrive after it (when collected).
    """
    _filter_closed_event_loop_reports()
    _filter_abandoned_orbax_reads()
    loggers = [logging.getLogger(name) for name in ("absl", "asyncio", "orbax", "jax")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _short(error: BaseException) -> str:
    """``Type: first line of the message`` cut to 160 characters (orbax messages can be pages)."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    text = text.split(" See full TensorStore details")[0]
    return f"{type(error).__name__}: {text[:160]}"


class Checkpoints:
    """Saves and restores train states in ``directory`` (made absolute, as orbax requires).

    Args:
        directory: folder of the step sub-folders (created if missing).
        max_to_keep: how many recent checkpoints to keep (older ones are deleted by orbax).
        asynchronous: write in a background thread; call :meth:`wait` before reading them.
    """

    def __init__(self, directory: str | Path, *, max_to_keep: int = 3, asynchronous: bool = True):
        self.directory = Path(directory).expanduser().resolve()
        with _quiet_orbax_errors():
            self._manager = self._make_manager(max_to_keep, asynchronous)

    def _make_manager(self, max_to_keep: int, asynchronous: bool) -> ocp.CheckpointManager:
        # Under jax.distributed, orbax names its barriers after the step alone: two managers that
        # save the same step at once (checkpoints/ and best/ of one epoch) would meet at one
        # barrier twice and fail ("already ongoing"). A prefix from the folder keeps them apart
        # (the same in every process, which share the folder's path).
        prefix = "fnnjax-" + hashlib.sha256(str(self.directory).encode()).hexdigest()[:16]
        return ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep,
                create=True,
                enable_async_checkpointing=asynchronous,
                multiprocessing_options=ocp.options.MultiprocessingOptions(
                    barrier_sync_key_prefix=prefix),
            ),
            item_names=("state", "meta"),
        )

    @property
    def damaged_directory(self) -> Path:
        """Where damaged checkpoints are moved: ``<directory>/../damaged/``."""
        return self.directory.parent / "damaged"

    def steps(self) -> list[int]:
        """Saved steps, oldest first (waits for pending asynchronous saves first: reloading the
        folder while one is in flight confuses orbax's bookkeeping of which steps to delete)."""
        self._manager.wait_until_finished()
        with _quiet_orbax_errors():  # junk step metadata is logged (twice) but is harmless
            self._manager.reload()
            return sorted(self._manager.all_steps())

    def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
        """Saves ``state`` and ``meta`` (plus the state's fingerprint) as checkpoint ``step``."""
        meta = {**meta, "fingerprint": fingerprint(state) if jax.process_count() == 1 else None}
        self._manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(plain(meta))),
            force=True,
        )

    def read_meta(self, step: int) -> dict[str, Any]:
        """The JSON ``meta`` of checkpoint ``step`` alone (no array is read).

        Raises:
            CheckpointError: the meta item is missing or unreadable.
        """
        try:
            with _quiet_orbax_errors():
                restored = self._manager.restore(
                    step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
                )
            meta = restored["meta"]
            if not isinstance(meta, dict):
                raise TypeError(f"expected a JSON object, found {type(meta).__name__}")
        except Exception as error:  # orbax raises many types for a damaged folder
            raise CheckpointError(
                f"checkpoint {self.directory / str(step)} is unreadable (its description: "
                f"{_short(error)})"
            ) from error
        return dict(meta)

    def restore(
        self, step: int, template: Any, meta: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Restores checkpoint ``step`` into the structure, shapes and shardings of ``template``.

        Args:
            step: the step to restore.
            template: a pytree of arrays (or ``jax.ShapeDtypeStruct``) like the saved state.
            meta: the step's meta if already read with :meth:`read_meta`.

        Raises:
            CheckpointError: unreadable, or its arrays do not match the stored fingerprint.
        """
        meta = self.read_meta(step) if meta is None else meta
        try:
            with _quiet_orbax_errors():
                restored = self._manager.restore(
                    step, args=ocp.args.Composite(state=ocp.args.StandardRestore(template))
                )
        except Exception as error:  # orbax raises many types for a damaged folder
            raise CheckpointError(
                f"checkpoint {self.directory / str(step)} is unreadable ({_short(error)})"
            ) from error
        state = restored["state"]
        expected = meta.get("fingerprint")
        if expected is not None and fingerprint(state) != expected:
            raise CheckpointError(
                f"checkpoint {self.directory / str(step)} is corrupted: its arrays do not match the "
                "fingerprint written with them"
            )
        return state, meta

    def restore_latest(
        self, template: Any, check: Callable[[dict[str, Any]], None] | None = None
    ) -> tuple[Any, dict[str, Any]] | None:
        """Restores the newest readable checkpoint, moving each newer damaged one aside.

        Args:
            template: the state's structure (see :meth:`restore`), or ``template(meta)`` giving
                it for a step from its meta (a run whose structure changed between steps).
            check: called with the newest readable ``meta`` before any array is read; it raises
                (e.g. :class:`CheckpointError` "a different run") to stop. Its error propagates.

        Returns:
            ``(state, meta)``, or None if the folder holds no checkpoint at all.

        Raises:
            CheckpointError: checkpoints exist but none can be restored (nothing is moved).
        """
        steps = self.steps()
        if not steps:
            return None
        problems: list[str] = []
        damaged: list[int] = []
        checked = False
        for step in reversed(steps):
            try:
                meta = self.read_meta(step)
            except CheckpointError as error:
                problems.append(str(error))
                damaged.append(step)
                continue
            if check is not None and not checked:
                check(meta)  # a different run is not damage: its error goes to the caller
                checked = True
            # The template's own errors (e.g. "pass rebuild=") are not damage: they propagate.
            target = template(meta) if callable(template) else template
            try:
                state, meta = self.restore(step, target, meta)
            except CheckpointError as error:
                problems.append(str(error))
                damaged.append(step)
                continue
            for bad, problem in zip(damaged, problems, strict=True):
                moved = self.move_aside(bad)
                warnings.warn(
                    f"{problem}; resuming from step {step} instead (the damaged checkpoint is "
                    f"kept in {moved})",
                    stacklevel=2,
                )
            return state, meta
        raise CheckpointError(
            f"none of the checkpoints in {self.directory} can be restored "
            f"({'; '.join(problems)}). Move the folder away or pass --no-resume (resume=False) "
            "to start afresh; nothing was changed"
        )

    def move_aside(self, step: int) -> Path:
        """Moves step ``step`` into :attr:`damaged_directory` (process 0 only) and returns where."""
        target = self.damaged_directory / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}"
        if is_primary():
            self.damaged_directory.mkdir(parents=True, exist_ok=True)
            shutil.move(str(self.directory / str(step)), str(target))
        sync_processes(f"fnnjax-move-aside-{step}")
        self._manager.reload()
        return target

    def wait(self) -> None:
        """Blocks until asynchronous saves are on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves and releases the manager."""
        self._manager.wait_until_finished()
        self._manager.close()
