"""Shared harness for the paper-table experiments: a grid of (model, seed) runs, mean ± std, plots.

Each run trains with :func:`fnnjax.train.fit` into its own folder under the experiment's output
folder, so an interrupted experiment resumes where it stopped when started again, and finished
runs are not retrained.

Every training script takes ``--devices N`` (:func:`add_devices_arg`); ``--quick`` trains on one
device unless ``--devices`` says otherwise (:func:`quick_devices`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from fnnjax.train import Dataset, TrainConfig, fit  # noqa: E402


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def add_devices_arg(parser: Any) -> None:
    """Adds ``--devices N`` (data-parallel training devices, default all) to a parser or group."""
    parser.add_argument("--devices", type=_positive_int, default=None, metavar="N",
                        help="data-parallel devices (default: all local devices; --quick: 1)")  # fmt: skip


def quick_devices(args: argparse.Namespace) -> None:
    """``--quick`` trains on one device unless ``--devices`` was given.

    A quick run checks the script's plumbing, not sharding (the engine's own tests do that); on
    simulated CPU devices (the test suite has 8) SPMD partitioning only adds compile and run time.
    """
    if args.devices is None:
        args.devices = 1


@dataclasses.dataclass(frozen=True)
class Entry:
    """One row of a table: a name and how to build its model."""

    name: str
    build: Callable[[], nn.Module]
    description: dict[str, Any]


def run_grid(
    entries: Sequence[Entry],
    seeds: Sequence[int],
    data: Dataset,
    config: TrainConfig,
    out: Path,
) -> dict[str, list[dict[str, Any]]]:
    """Trains every entry with every seed; returns ``{name: [{"summary", "history"}, ...]}``."""
    results: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        for seed in seeds:
            run_dir = out / "runs" / f"{entry.name}-seed{seed}"
            print(f"== {entry.name}, seed {seed} -> {run_dir}", flush=True)
            result = fit(entry.build(), data, dataclasses.replace(config, seed=seed),
                         out_dir=run_dir, description=entry.description)  # fmt: skip
            results.setdefault(entry.name, []).append(
                {"seed": seed, "summary": result.summary, "history": result.history}
            )
    return results


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    values = list(values)
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def fmt_pct(values: Sequence[float]) -> str:
    mean, std = mean_std(values)
    return f"{100 * mean:.2f} ± {100 * std:.2f}" if len(values) > 1 else f"{100 * mean:.2f}"


def plot_curves(results: dict[str, list[dict[str, Any]]], path: Path, title: str,
                metric: str = "test_accuracy") -> None:  # fmt: skip
    """Mean (line) and min-max band over seeds of ``metric`` per epoch, one line per entry."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, runs in results.items():
        length = min(len(r["history"]) for r in runs)
        epochs = list(range(1, length + 1))
        per_epoch = [[r["history"][e][metric] for r in runs] for e in range(length)]
        ax.plot(epochs, [statistics.fmean(v) for v in per_epoch], label=name)
        if len(runs) > 1:
            ax.fill_between(epochs, [min(v) for v in per_epoch], [max(v) for v in per_epoch], alpha=0.2)
    ax.set(xlabel="epoch", ylabel=metric.replace("_", " "), title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)


def save_figure(fig, path: Path, dpi: int = 120) -> None:
    """Writes ``fig`` as PNG to ``path`` (creating its folder) and frees it."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def write_results(out: Path, payload: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(payload, indent=2))


def spearman(x, y) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN when either side is constant."""
    def ranks(v):
        v = np.asarray(v, np.float64)
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v), dtype=np.float64)
        for value in np.unique(v):  # ties share their mean rank
            r[v == value] = r[v == value].mean()
        return r

    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])
