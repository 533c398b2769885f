"""The run folder: one protocol under :func:`~fnnjax.train.fit` and every paper's driver.

A driver opens its folder with :meth:`RunFolder.open`, checks that the folder holds *its* run
with :meth:`RunFolder.check_same_run` (or lets :class:`~fnnjax.train.Checkpoints` do it through
the same function), records that it started with :meth:`RunFolder.begin`, and writes through the
folder: atomic JSON and text (:meth:`~RunFolder.write_json`, :meth:`~RunFolder.write_text`),
JSONL logs (:meth:`~RunFolder.append_jsonl`, truncated to the resumed step by
:meth:`~RunFolder.truncate_jsonl`), figures (:meth:`~RunFolder.figure`), checkpoints
(:meth:`~RunFolder.checkpoints`) and a progress bar (:meth:`~RunFolder.progress`).

The contract every folder follows (README, "The run folder"):

* **Identity.** A driver describes its run as JSON (settings, seed, data, model). A later call
  on the same folder resumes only if its description is the saved one, under one rule: a field
  the saved record lacks is ignored while it is at its default (a setting added to fnnjax after
  the folder was written); fields a driver declares resumable (e.g. the number of epochs of an
  epoch-free schedule) are ignored. A different run is refused with :class:`RunMismatchError`,
  whose message names every differing setting (``setting: saved X, now Y``) and the ways out:
  another ``--out``, or ``--no-resume``.
* **Archive.** ``--no-resume`` (``resume=False``) moves the files of the driver's list (and
  ``run.json``) into ``previous-<time>/``; nothing is deleted.
* **Provenance.** ``run.json`` holds the folder's schema version and one record per start: the
  time, the command line, the package versions, the git commit of fnnjax when it runs from a
  checkout, and the devices. A folder of a newer schema is refused.
* **Several processes.** Every process opens the folder (they must share it); checkpoints are
  saved collectively; every other file is written by process 0 alone.

A ``RunFolder`` with ``path=None`` is an in-memory run: writes do nothing, reads find nothing,
so a driver needs no ``if out is not None`` around them.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np

from fnnjax.errors import CheckpointError, ConfigError
from fnnjax.train.jsonio import dumps, plain
from fnnjax.train.sharding import is_primary, sync_processes

__all__ = [
    "RUN_RECORD",
    "SCHEMA_VERSION",
    "RunFolder",
    "RunMismatchError",
    "append_jsonl",
    "check_same_run",
    "provenance",
    "read_jsonl",
    "run_differences",
    "save_figure",
    "truncate_jsonl",
    "write_json",
    "write_text",
]

SCHEMA_VERSION = 1
"""Version of the folder layout. 1: ``run.json`` with provenance (folders without one are of
fnnjax before this layer, and resume as they are)."""

RUN_RECORD = "run.json"

_PACKAGES = ("fnnjax", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy")


class RunMismatchError(CheckpointError, ConfigError):
    """The folder holds a different run (a :class:`CheckpointError` and a ``ValueError``).

    Attributes:
        out: the folder.
        what: what it holds (``"search"``, ...).
        differences: ``(path, saved value, value now)`` per differing setting (the command line
            names each by its flag).
        hints: a sentence per path that explains its difference.
    """

    def __init__(self, message: str, *, out: Any = None, what: str = "run",
                 differences: list[tuple[str, Any, Any]] | None = None,
                 hints: Mapping[str, str] | None = None) -> None:  # fmt: skip
        super().__init__(message)
        self.out, self.what, self.differences = out, what, list(differences or [])
        self.hints = dict(hints or {})


# -- identity -----------------------------------------------------------------------------------


def run_differences(
    saved: Any,
    now: Any,
    *,
    defaults: Any = None,
    ignore: tuple[str, ...] = (),
    where: str = "",
) -> list[tuple[str, Any, Any]]:
    """``(path, saved value, value now)`` for every setting in which two descriptions differ.

    A key absent from ``saved`` is ignored while its value ``now`` equals its entry in
    ``defaults`` (a nested mapping of the same shape): the setting did not exist when the run
    was saved. ``ignore`` lists dotted paths (``"config.epochs"``) left out of the comparison.
    Paths follow ``now``'s key order, then keys only ``saved`` has. No options at all equals
    empty options (``None`` vs ``{}``).
    """
    if where in ignore:
        return []
    if isinstance(saved, dict) and now is None or saved is None and isinstance(now, dict):
        saved, now = saved or {}, now or {}
    if not (isinstance(saved, dict) and isinstance(now, dict)):
        return [] if saved == now else [(where, saved, now)]
    defaults = defaults if isinstance(defaults, dict) else {}
    found = []
    for key in [*now, *(k for k in saved if k not in now)]:
        path = f"{where}.{key}" if where else str(key)
        if key not in saved and key in defaults and now[key] == defaults[key]:
            continue  # added later, at its default
        found += run_differences(saved.get(key), now.get(key), defaults=defaults.get(key),
                                 ignore=ignore, where=path)  # fmt: skip
    return found


def check_same_run(
    out: str | Path,
    saved: Mapping[str, Any],
    now: Mapping[str, Any],
    *,
    what: str = "run",
    defaults: Mapping[str, Any] | None = None,
    ignore: tuple[str, ...] = (),
    strip: tuple[str, ...] = (),
    hints: Mapping[str, str] | None = None,
) -> None:
    """Raises :class:`RunMismatchError` if ``saved`` and ``now`` describe different runs.

    Args:
        out: the folder (named in the message).
        saved, now: the run descriptions (JSON-like; normalized through JSON first).
        what: what the folder holds, for the message (``"search"``, ``"LDS search"``, ...).
        defaults: the defaults of settings that may be missing from older records (same
            nesting as ``now``): see :func:`run_differences`.
        ignore: dotted paths that may change between a run and its resumption.
        strip: path prefixes left out of the message (``"config."``: settings are named as the
            user set them).
        hints: a sentence added after a differing path's line (e.g. why epochs matter).
    """
    found = run_differences(plain(saved), plain(now), defaults=plain(defaults),
                            ignore=ignore)  # fmt: skip
    if not found:
        return
    lines = []
    for path, old, new in found:
        shown = next((path[len(p):] for p in strip if path.startswith(p)), path)
        hint = (hints or {}).get(path)
        lines.append(f"{shown}: saved {old!r}, now {new!r}" + (f" ({hint})" if hint else ""))
    more = f" (and {len(lines) - 8} more)" if len(lines) > 8 else ""
    raise RunMismatchError(
        f"{out} holds a different {what} ({'; '.join(lines[:8])}{more}); to keep both, pass "
        "another --out (out_dir=...); to start afresh here, pass --no-resume (resume=False), "
        "which moves the earlier run into previous-<time>/",
        out=out, what=what, differences=found, hints=hints,
    )


# -- provenance ---------------------------------------------------------------------------------


@functools.cache
def _version(package: str) -> str | None:
    from importlib import metadata  # noqa: PLC0415

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


@functools.cache
def _git_commit() -> str | None:
    """The commit of the fnnjax checkout in use (None when installed from a wheel or no git);
    read once per process (a run's drivers start several nested runs)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        done = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=5, check=False)  # fmt: skip
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "fnnjax"],
                               capture_output=True, text=True, timeout=5, check=False)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    commit = done.stdout.strip()
    return (commit + ("+changes" if dirty.stdout.strip() else "")) if done.returncode == 0 else None


def provenance() -> dict[str, Any]:
    """Where a run comes from: time, command line, package versions, git commit, devices."""
    devices = jax.devices()
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv and sys.argv[0] else [],
        "python": platform.python_version(),
        "packages": {p: _version(p) for p in _PACKAGES},
        "git_commit": _git_commit(),
        "devices": {"platform": jax.default_backend(), "count": len(devices),
                    "kinds": sorted({d.device_kind for d in devices}),
                    "processes": jax.process_count()},  # fmt: skip
        "host": platform.node(),
    }


# -- files --------------------------------------------------------------------------------------


def write_text(path: str | Path, text: str) -> Path:
    """Writes ``text`` atomically: a killed run leaves the old file or the new one, never half."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def write_json(path: str | Path, value: Any, *, indent: int = 1) -> Path:
    """Writes ``value`` as JSON atomically (:func:`write_text`)."""
    return write_text(path, dumps(value, indent=indent))


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The records of a JSONL log (empty when there is none). A last line cut short by a kill
    is left out."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    for i, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i < len(lines) - 1:
                raise
    return records


def append_jsonl(path: str | Path, record: Mapping[str, Any]) -> None:
    """Appends one record as a line."""
    with open(path, "a") as f:
        f.write(dumps(record) + "\n")


def truncate_jsonl(path: str | Path, upto: int, key: str = "epoch") -> list[dict[str, Any]]:
    """Keeps the records whose ``key`` (epoch, cycle, ...) is at most ``upto`` (the resumed
    checkpoint's: later ones will be redone) and returns them."""
    path = Path(path)
    if not path.exists():
        return []
    records = read_jsonl(path)
    kept = [r for r in records if r.get(key, 0) <= upto]
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    if len(kept) < len(lines):  # something to drop (a later record or a line cut short)
        write_text(path, "".join(dumps(r) + "\n" for r in kept))
    return kept


def save_figure(
    path: str | Path,
    draw: Callable[[Any, Any], None],
    *,
    rows: int = 1,
    cols: int = 1,
    size: tuple[float, float] = (6.4, 4.0),
    title: str = "",
) -> Path | None:
    """Draws a PNG: ``draw(fig, axes)`` on a fresh figure (``axes``: one Axes, or an array for
    several), saved at 110 dpi. A failure only warns: a run is never lost to its figure.

    Returns:
        ``path``, or None when drawing failed.
    """
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt  # noqa: PLC0415

    path = Path(path)
    fig, axes = plt.subplots(rows, cols, figsize=size, squeeze=rows * cols == 1)
    try:
        draw(fig, axes)
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    except Exception as error:  # noqa: BLE001 (never lose a run to a figure)
        warnings.warn(f"could not draw {path}: {type(error).__name__}: {error}", stacklevel=2)
        return None
    finally:
        plt.close(fig)
    return path


# -- the folder ---------------------------------------------------------------------------------


def _check_writable(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir}: expected a folder, but it is a file; name a folder "
                          "(it is created if missing)")  # fmt: skip
    if not is_primary():  # it writes nothing here (its access is checked with the others')
        return
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".fnnjax-write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise ConfigError(
            f"--out {out_dir}: the folder is not writable ({error.strerror or error}); choose "
            "another --out"
        ) from None


def _check_shared_folder(out_dir: Path) -> None:
    """With several processes: all must name the same folder and see process 0's files.

    Every process takes the same decision (all raise or none), so a mistake fails at once
    everywhere instead of leaving one process waiting at a barrier for the others.
    """
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils  # noqa: PLC0415

    token = np.frombuffer(hashlib.sha256(str(out_dir).encode()).digest()[:8], np.uint32)
    tokens = np.asarray(multihost_utils.process_allgather(token)).reshape(jax.process_count(), -1)
    if not (tokens == tokens[0]).all():
        raise ConfigError(
            f"the processes were given different output folders (this one: {out_dir}); every "
            "process of a multi-host run needs the same --out, a folder they all share"
        )
    marker = out_dir / ".fnnjax-shared"
    if is_primary():
        marker.write_text(str(out_dir))
    sync_processes("fnnjax-shared-folder")
    visible = marker.exists() and os.access(out_dir, os.W_OK)  # each writes checkpoint shards
    seen = np.asarray(multihost_utils.process_allgather(np.int32(visible)))
    if not seen.all():
        raise ConfigError(
            f"processes {np.flatnonzero(seen == 0).tolist()} cannot see or write {marker}, which "
            "process 0 wrote: --out must be a folder on a filesystem shared by all processes "
            "(NFS, GCS, ...) that each may write"
        )


def archive_previous_run(out: Path, names: tuple[str, ...]) -> Path | None:
    """Moves ``names`` (those present in ``out``) into ``out/previous-<time>/``; returns it."""
    present = [n for n in dict.fromkeys((*names, RUN_RECORD)) if (out / n).exists()]
    if not present:
        return None
    stamp = time.strftime("previous-%Y%m%d-%H%M%S")
    archive, k = out / stamp, 1
    while archive.exists():  # two archives within a second
        archive, k = out / f"{stamp}-{k}", k + 1
    archive.mkdir()
    for name in present:
        (out / name).rename(archive / name)
    return archive


@dataclass
class RunFolder:
    """An opened run folder (:meth:`open`); ``path=None`` is an in-memory run.

    Attributes:
        path: the folder (absolute), or None.
        files: what a run of this driver writes here (archived together on ``--no-resume``).
        what: what the folder holds, for messages (``"search"``, ``"construction"``, ...).
        driver: the driver's name, recorded in ``run.json``.
    """

    path: Path | None
    files: tuple[str, ...] = ()
    what: str = "run"
    driver: str = ""

    @classmethod
    def open(
        cls,
        path: str | Path | None,
        *,
        files: tuple[str, ...],
        what: str = "run",
        driver: str = "",
        resume: bool = True,
    ) -> RunFolder:
        """Opens ``path`` (created if missing) for a run of ``driver``.

        Checks that it is a writable folder (and, with several processes, that all share it)
        and that no newer fnnjax wrote it; with ``resume=False`` moves an earlier run's ``files``
        into ``previous-<time>/``. Every process calls this.

        Raises:
            ConfigError: ``path`` is a file or not writable, the processes name different
                folders, or the folder's schema is newer than this fnnjax's.
        """
        if path is None:
            return cls(None, tuple(files), what, driver)
        out = Path(path).expanduser().resolve()
        _check_writable(out)
        _check_shared_folder(out)
        folder = cls(out, tuple(files), what, driver)
        record = folder.read_json(RUN_RECORD) or {}
        if resume and int(record.get("schema", 0)) > SCHEMA_VERSION:
            raise ConfigError(
                f"--out {out}: written by a newer fnnjax (folder schema {record['schema']}; this "
                f"version reads {SCHEMA_VERSION}); upgrade fnnjax, or pass another --out or "
                "--no-resume"
            )
        if not resume and is_primary():
            archive_previous_run(out, folder.files)
        sync_processes(f"fnnjax-open-{driver}")
        return folder

    # -- identity and provenance

    def check_same_run(self, saved: Mapping[str, Any] | None, now: Mapping[str, Any],
                       **options: Any) -> None:  # fmt: skip
        """:func:`check_same_run` for this folder (nothing to check when ``saved`` is None)."""
        if saved is not None and self.path is not None:
            check_same_run(self.path, saved, now, what=self.what, **options)

    def begin(self, **extra: Any) -> None:
        """Records this start in ``run.json`` (schema, driver, provenance; ``extra`` fields,
        e.g. ``resumed_from``). Call it once the folder is known to hold this run. A driver
        that runs another in the same folder (dynamic capacity's ``fit``) adds a start of its
        own, naming it; the folder's ``driver`` stays the first one's."""
        if self.path is None or not is_primary():
            return
        record = self.read_json(RUN_RECORD) or {}
        starts = [*record.get("starts", []), {"driver": self.driver, **provenance(), **extra}]
        self.write_json(RUN_RECORD, {"schema": SCHEMA_VERSION,  # the folder's driver: the first
                                     "driver": record.get("driver", self.driver),
                                     "starts": starts})  # fmt: skip

    # -- files

    def file(self, name: str) -> Path | None:
        """``path / name`` (None in memory)."""
        return None if self.path is None else self.path / name

    def exists(self, name: str) -> bool:
        return self.path is not None and (self.path / name).exists()

    def read_json(self, name: str) -> Any:
        """The JSON content of ``name``, or None when it does not exist."""
        if not self.exists(name):
            return None
        return json.loads((self.path / name).read_text())

    def read_jsonl(self, name: str) -> list[dict[str, Any]]:
        return [] if self.path is None else read_jsonl(self.path / name)

    def _writes(self) -> bool:
        return self.path is not None and is_primary()

    def write_text(self, name: str, text: str) -> None:
        """Atomic (process 0 only)."""
        if self._writes():
            write_text(self.path / name, text)

    def write_json(self, name: str, value: Any, *, indent: int = 1) -> None:
        """Atomic (process 0 only)."""
        if self._writes():
            write_json(self.path / name, value, indent=indent)

    def write_with(self, name: str, write: Callable[[Path], Any]) -> None:
        """``write(path)`` into a temporary file that then replaces ``name`` (atomic; process 0
        only), for files another library writes, e.g. ``np.savez`` or
        :func:`fnnjax.arch.save_variables`. The temporary name keeps ``name``'s suffix."""
        if self._writes():
            target = self.path / name
            tmp = target.with_name(f".tmp-{os.getpid()}-{target.name}")
            write(tmp)
            os.replace(tmp, target)

    def append_jsonl(self, name: str, record: Mapping[str, Any]) -> None:
        """Process 0 only."""
        if self._writes():
            append_jsonl(self.path / name, record)

    def truncate_jsonl(self, name: str, upto: int, key: str = "epoch") -> list[dict[str, Any]]:
        """Drops the records after ``upto`` (process 0 writes; every process reads) and returns
        the rest."""
        if self.path is None:
            return []
        if is_primary():
            truncate_jsonl(self.path / name, upto, key)
        sync_processes(f"fnnjax-truncate-{name}")
        return read_jsonl(self.path / name)

    def remove(self, *names: str) -> None:
        """Deletes files of a run that starts afresh here (process 0 only)."""
        if self._writes():
            for name in names:
                (self.path / name).unlink(missing_ok=True)

    def figure(self, name: str, draw: Callable[[Any, Any], None], **options: Any) -> Path | None:
        """:func:`save_figure` into the folder (process 0 only)."""
        return save_figure(self.path / name, draw, **options) if self._writes() else None

    def checkpoints(self, name: str = "checkpoints", **options: Any) -> Any:
        """A :class:`~fnnjax.train.Checkpoints` in ``name`` (None in memory); saves are
        collective."""
        from fnnjax.train.checkpoint import Checkpoints  # noqa: PLC0415

        return None if self.path is None else Checkpoints(self.path / name, **options)

    def sub(self, name: str) -> Path | None:
        """The path of a sub-folder that holds a nested run (e.g. a training of a pipeline)."""
        return None if self.path is None else self.path / name

    @contextlib.contextmanager
    def progress(self, total: int, *, initial: int = 0, enabled: bool = True,
                 unit: str = "step") -> Iterator[Any]:  # fmt: skip
        """A tqdm bar on process 0 (disabled elsewhere or when not ``enabled``), closed after."""
        from tqdm.auto import tqdm  # noqa: PLC0415

        bar = tqdm(total=total, initial=initial, disable=not (enabled and is_primary()),
                   unit=unit, dynamic_ncols=True)  # fmt: skip
        try:
            yield bar
        finally:
            bar.close()
