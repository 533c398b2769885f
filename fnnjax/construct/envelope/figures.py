"""EnvelopeNet construction figures: Figure 2 (running statistics) and the widths per layer."""

from __future__ import annotations

from typing import Any

import numpy as np

from fnnjax.construct.envelope.net import (
    EnvelopeConfig,
    Layers,
    block_counts,
    envelope_notation_of,
    layer_widths,
)


def _figure_layers(counts: list[list[int]]) -> list[tuple[int, int]]:
    """Layers whose blocks Figure 2 shows: the first, middle and last of the first stage, and the
    first layer of every later stage."""
    first = sorted({0, len(counts[0]) // 2, len(counts[0]) - 1})
    return [(0, j) for j in first] + [(i, 0) for i in range(1, len(counts))]


def statistics_figure(record: dict[str, Any], running: list[dict[str, Any]]) -> dict[str, Any]:
    """Figure 2: the running statistic of every block of several layers against training steps
    (``running``: the first iteration's ``statistics.json``). ``draw`` and its layout, the
    keywords of :func:`~fnnjax.train.runfolder.save_figure` (and ``RunFolder.figure``)."""
    panels = _figure_layers(record["block_counts"])

    def draw(fig: Any, axes: Any) -> None:
        axes = np.asarray(axes).reshape(-1)
        steps = [r["step"] for r in running]
        for ax, (i, j) in zip(axes, panels, strict=True):
            prefix = f"s{i}/l{j}/"
            for key in record["statistics"]:
                if key.startswith(prefix):
                    ax.plot(steps, [r["statistics"][key] for r in running], "o-", ms=3,
                            label=key[len(prefix):])  # fmt: skip
            ax.set_title(f"stage {i}, layer {j}", fontsize=9)
            ax.set_xlabel("training step")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6)
        axes[0].set_ylabel("running featuremap statistic")
        fig.suptitle(f"{record['notation']}: featuremap statistics, iteration 1", fontsize=10)

    return {"draw": draw, "cols": len(panels), "size": (3.2 * len(panels), 3)}


def widths_figure(layers: Layers, env: EnvelopeConfig) -> dict[str, Any]:
    """Blocks and channels per layer (depth on the x axis, stages shaded); as
    :func:`statistics_figure`."""
    counts = [n for stage in block_counts(layers) for n in stage]
    widths = [w * n for stage_w, stage_n in zip(layer_widths(layers, env), block_counts(layers),
                                                 strict=True)
              for w, n in zip(stage_w, stage_n, strict=True)]  # fmt: skip

    def draw(fig: Any, ax: Any) -> None:
        depth = np.arange(1, len(counts) + 1)
        ax.bar(depth, counts, color="tab:blue", alpha=0.7, label="blocks")
        ax.set_xlabel("layer (depth)")
        ax.set_ylabel("blocks in the layer")
        twin = ax.twinx()
        twin.plot(depth, widths, "o-", color="tab:red", label="channels")
        twin.set_ylabel("channels")
        start = 0
        for i, stage in enumerate(layers):
            if i % 2:
                ax.axvspan(start + 0.5, start + len(stage) + 0.5, color="gray", alpha=0.1)
            start += len(stage)
        ax.set_title(envelope_notation_of(env.channels, layers, env.m), fontsize=10)

    return {"draw": draw, "size": (6, 3)}
