"""Data parallelism with ``jax.jit`` + ``NamedSharding`` (DESIGN principle 6), not the legacy pmap.

One mesh axis, ``"data"``, spans the devices. Parameters, optimizer state and the (small) dataset are
*replicated*; each batch is *sharded* along its leading axis. The jitted train step is written
for one global batch; XLA's SPMD partitioner splits the work and inserts the gradient all-reduce, so
a run on 8 devices computes the same numbers as on 1 (up to the order of float additions).

Multi-host (several machines, e.g. a TPU pod slice or a GPU cluster): call
``jax.distributed.initialize()`` at the very start of every process (on TPU and SLURM it discovers
the coordinator itself; elsewhere pass ``coordinator_address``, ``num_processes`` and
``process_id``), then build the mesh over ``jax.devices()`` (all hosts' devices) — which is what
:func:`make_mesh` does — and give each process the same global batch indices. ``fnnjax train
--distributed`` does the initialize call for you.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from fnnjax._trees import in_order
from fnnjax.errors import ConfigError

__all__ = [
    "DATA_AXIS",
    "batch_sharding",
    "data_mesh",
    "fetch",
    "in_order",
    "is_primary",
    "make_mesh",
    "primary_only",
    "put_batch",
    "replicate",
    "replicated_sharding",
    "sync_processes",
]

DATA_AXIS = "data"


def make_mesh(num_devices: int | None = None, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D ``("data",)`` mesh over the first ``num_devices`` devices (default: all of them).

    Raises:
        ConfigError: ``num_devices`` is not in ``[1, len(jax.devices())]``.
    """
    devices = list(devices if devices is not None else jax.devices())
    if num_devices is None:
        num_devices = len(devices)
    if jax.process_count() > 1 and num_devices != len(devices):
        raise ConfigError(
            f"--devices: a run over {jax.process_count()} processes uses all {len(devices)} devices "
            f"of the cluster; got {num_devices} (leave --devices unset)"
        )
    if not 1 <= num_devices <= len(devices):
        raise ConfigError(
            f"--devices: expected 1 to {len(devices)} (the devices JAX sees: "
            f"{devices[0].platform} x{len(devices)}), got {num_devices}"
        )
    return Mesh(np.asarray(devices[:num_devices]), (DATA_AXIS,))


def data_mesh(batch_sizes: Sequence[int], num_devices: int | None = None, *,
              flag: str = "--batch-size") -> Mesh:  # fmt: skip
    """The mesh of a search or construction that splits batches of ``batch_sizes`` over devices.

    ``num_devices`` None: all devices of all processes, or, in a single process whose device
    count does not divide every batch, the most devices that do (the choice is a function of
    the batch sizes and the device count alone, so a rerun makes it again). With several
    processes every device takes part, so each batch must split over all of them.

    Raises:
        ConfigError: ``num_devices`` does not divide a batch size, or (several processes) the
            cluster's device count does not (the message names ``flag``).
    """
    count = len(jax.devices())
    sizes = [int(b) for b in batch_sizes]
    if num_devices is not None:
        make_mesh(num_devices)  # checks the count itself first (one line naming --devices)
        bad = [b for b in sizes if b % num_devices]
        if bad:
            raise ConfigError(f"--devices: {num_devices} devices do not split a batch of "
                              f"{bad[0]} ({flag}); expected a count that divides it")  # fmt: skip
        return make_mesh(num_devices)
    if jax.process_count() == 1:
        return make_mesh(max(n for n in range(1, count + 1) if all(b % n == 0 for b in sizes)))
    bad = [b for b in sizes if b % count]
    if bad:
        raise ConfigError(f"{flag}: a batch of {bad[0]} does not split over the {count} devices "
                          f"of {jax.process_count()} processes; expected a multiple of {count}")  # fmt: skip
    return make_mesh(count)


def put_batch(x: Any, mesh: Mesh, axis: int = 0) -> Any:
    """``x`` (a host array or a tree of them) on ``mesh``: axis ``axis`` split over the data axis
    where the devices divide it, whole on every device otherwise (the same values either way)."""

    def put(leaf: Any) -> jax.Array:
        if np.ndim(leaf) > axis and np.shape(leaf)[axis] % mesh.size == 0:
            spec = PartitionSpec(*([None] * axis), DATA_AXIS)
        else:
            spec = PartitionSpec()
        return jax.device_put(leaf, NamedSharding(mesh, spec))

    return jax.tree_util.tree_map(put, x)


def is_primary() -> bool:
    """True in the process that owns shared files (process 0; always True with one process)."""
    return jax.process_index() == 0


def primary_only(log: Any) -> Any:
    """``log`` in process 0; a function that prints nothing in the other processes (so a
    multi-host run reports once). None stays None."""
    if log is None or is_primary():
        return log
    return lambda *args, **kwargs: None


def sync_processes(name: str) -> None:
    """Barrier across all processes (a no-op with one process). ``name`` must be unique per call site."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils  # noqa: PLC0415

        multihost_utils.sync_global_devices(name)


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """The leading (batch) axis is split across the ``"data"`` axis."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Places every array of ``tree`` on all devices of ``mesh``."""
    return jax.device_put(tree, replicated_sharding(mesh))


def fetch(tree: Any) -> Any:
    """The host value of ``tree`` (``jax.device_get``), also of arrays split over devices of other
    processes, which ``multihost_utils.process_allgather`` gathers first (one leaf at a time, in
    the tree's order: the same in every process, each of which calls this with the same tree).
    A replicated array is read from this process's copy (no collective)."""
    from jax.experimental import multihost_utils  # noqa: PLC0415

    def get(leaf: Any) -> Any:
        if (isinstance(leaf, jax.Array) and not leaf.is_fully_addressable
                and not leaf.is_fully_replicated):  # fmt: skip
            return multihost_utils.process_allgather(leaf, tiled=True)
        return leaf

    return jax.device_get(jax.tree_util.tree_map(get, tree))
