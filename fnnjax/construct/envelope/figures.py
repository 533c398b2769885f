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
    """Blocks and channels per layer (depth on the x axis; every stage named above its layers,
    every other stage shaded, the legend saying which); as :func:`statistics_figure`."""
    counts = [n for stage in block_counts(layers) for n in stage]
    widths = [w * n for stage_w, stage_n in zip(layer_widths(layers, env), block_counts(layers),
                                                 strict=True)
              for w, n in zip(stage_w, stage_n, strict=True)]  # fmt: skip

    def draw(fig: Any, ax: Any) -> None:
        from matplotlib.patches import Patch  # noqa: PLC0415
        from matplotlib.ticker import MaxNLocator  # noqa: PLC0415

        depth = np.arange(1, len(counts) + 1)
        bars = ax.bar(depth, counts, color="tab:blue", alpha=0.7, label="blocks (left axis)")
        ax.set_xlabel("layer (depth)")
        ax.set_ylabel("blocks in the layer", color="tab:blue")
        ax.set_ylim(0, max(counts) * 1.25)  # room for the stage names
        if len(counts) <= 30:
            ax.set_xticks(depth)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        twin = ax.twinx()
        (line,) = twin.plot(depth, widths, "o-", color="tab:red",
                            label="channels of the layer (right axis)")  # fmt: skip
        twin.set_ylabel("channels of the layer", color="tab:red")
        twin.set_ylim(0, max(widths) * 1.25)
        start, shaded = 0, []
        for i, stage in enumerate(layers):
            if i % 2:
                ax.axvspan(start + 0.5, start + len(stage) + 0.5, color="gray", alpha=0.15)
                shaded.append(str(i))
            ax.text(start + 0.5 + len(stage) / 2, 0.97, f"stage {i}", ha="center", va="top",
                    fontsize=8, color="dimgray", transform=ax.get_xaxis_transform())  # fmt: skip
            start += len(stage)
        handles = [bars, line]
        if shaded:
            handles.append(Patch(color="gray", alpha=0.15,
                                 label=f"shaded: stage {', '.join(shaded)} (stages alternate)"))  # fmt: skip
        ax.legend(handles=handles, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2),
                  ncol=len(handles), frameon=False)  # fmt: skip
        ax.set_title(f"{envelope_notation_of(env.channels, layers, env.m)}: blocks and channels per layer",
                     fontsize=10)  # fmt: skip

    return {"draw": draw, "size": (7, 3.8)}
