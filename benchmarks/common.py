"""Timing helpers shared by the benchmarks: median of repeated runs after warm-up."""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax


def median_seconds(run: Callable[[], Any], *, repeats: int, warmup: int = 2) -> float:
    """Median wall time of ``run()`` (its result is ``jax.block_until_ready``-ed) after warm-up."""
    for _ in range(warmup):
        jax.block_until_ready(run())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(run())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def machine() -> str:
    device = jax.devices()[0]
    return f"{device.device_kind} ({device.platform}) x{jax.device_count()}, {platform.processor() or platform.machine()}, jax {jax.__version__}"


def write_json(path: str | None, payload: dict[str, Any]) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps({"machine": machine(), **payload}, indent=2))
