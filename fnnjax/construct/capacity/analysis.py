"""Layer-specific analysis (the draft's section 3.2, a heading only; our reading): for every layer
(unit path) of a dynamic-capacity run, how its saliency is distributed and how many units it
gained and lost over time, as a table (:func:`layer_report`) and plots (:func:`plot_layers`,
:func:`plot_capacity`). The input is what :func:`~fnnjax.construct.capacity.train_dynamic`
records (``capacity.jsonl``, ``saliency.jsonl``), so a finished run folder can be analysed
without training: :func:`read_run`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from fnnjax.train.runfolder import read_jsonl, save_figure

__all__ = ["capacity_figure", "change_targets", "layer_report", "layers_figure", "plot_capacity",
           "plot_layers", "read_run", "report_markdown", "units_over_time"]  # fmt: skip


def read_run(out_dir: str | Path) -> dict[str, Any]:
    """``{"history", "changes", "saliency", "initial_spec"}`` of a run folder."""
    from fnnjax.arch import from_dict  # noqa: PLC0415

    out = Path(out_dir)
    if not (out / "capacity_config.json").exists():
        raise ValueError(f"out_dir: {out} holds no dynamic-capacity run (no capacity_config.json)")

    config = json.loads((out / "capacity_config.json").read_text())
    return {"history": read_jsonl(out / "metrics.jsonl"),
            "changes": read_jsonl(out / "capacity.jsonl"),
            "saliency": read_jsonl(out / "saliency.jsonl"),
            "initial_spec": from_dict(config["initial_spec"])}  # fmt: skip


def _relabel(labels: dict[str, str], change: dict[str, Any]) -> dict[str, str]:
    """``{current block name: stable label}`` after an insertion or removal, which shifts the
    later blocks of its stage by one (``"s0b2"`` becomes ``"s0b3"``; their label stays)."""
    if change["op"] not in ("insert", "remove"):
        return labels
    i, p = change["value"]
    step = +1 if change["op"] == "insert" else -1
    out = {}
    for name, label in labels.items():
        m = re.match(r"^s(\d+)b(\d+)$", name)
        if m and int(m[1]) == i and int(m[2]) >= p:
            if change["op"] == "remove" and int(m[2]) == p:
                continue  # the removed block: its label ends here
            name = f"s{i}b{int(m[2]) + step}"
        out[name] = label
    if change["op"] == "insert":
        out[f"s{i}b{p}"] = f"s{i}b{p}@{change['step']}"  # new: named where and when it came
    return out


def _label(path: str, labels: dict[str, str]) -> str:
    block, _, rest = path.partition("/")
    base = labels.get(block, block)
    return f"{base}/{rest}" if rest else base


def units_over_time(changes: list[dict[str, Any]], initial_spec: Any) -> dict[str, list[tuple[int, int]]]:
    """``{layer: [(step, units), ...]}``: every layer's width at step 0 and after every change.

    A layer keeps its initial name through insertions and removals that shift its block's index
    (``"s0b1/body0"`` stays ``"s0b1/body0"`` after a block is inserted before it); an inserted
    block's layers are named by where and when they came (``"s0b1@640/body0"``); a deleted layer
    ends at 0 units.
    """
    from fnnjax.arch import from_dict, infer_layers  # noqa: PLC0415

    def widths(spec: Any) -> dict[str, int]:
        return {u.path: u.cout for u in infer_layers(spec) if u.op not in ("norm", "fnn")}

    seq = _label_sequence(changes, initial_spec)
    out: dict[str, list[tuple[int, int]]] = {p: [(0, n)] for p, n in widths(initial_spec).items()}
    for k, change in enumerate(changes):
        now = {_label(p, seq[k + 1]): n for p, n in widths(from_dict(change["spec"])).items()}
        for path in set(out) | set(now):
            n = now.get(path, 0)
            series = out.setdefault(path, [])
            if not series or series[-1][1] != n:
                series.append((int(change["step"]), n))
    return out


def _label_sequence(changes: list[dict[str, Any]], initial_spec: Any) -> list[dict[str, str]]:
    """The block labels before each change, and after the last (``len(changes) + 1`` maps)."""
    labels = {f"s{i}b{j}": f"s{i}b{j}" for i, st in enumerate(initial_spec.stages)
              for j in range(len(st.blocks))}  # fmt: skip
    seq = [labels]
    for change in changes:
        seq.append(_relabel(seq[-1], change))
    return seq


def change_targets(changes: list[dict[str, Any]], initial_spec: Any) -> list[str]:
    """Each change's target under the stable layer names of :func:`units_over_time`."""
    seq = _label_sequence(changes, initial_spec)
    return [_label(c["target"], seq[k]) for k, c in enumerate(changes)]


def layer_report(changes: list[dict[str, Any]], saliency: list[dict[str, Any]],
                 initial_spec: Any) -> list[dict[str, Any]]:  # fmt: skip
    """One row per layer: initial and final units, units added and removed (by widening,
    narrowing and insertion), changes, and its saliency distribution at the last consultation
    (``n``, mean, quartiles, min, max; NaN where the layer was not measured)."""
    series = units_over_time(changes, initial_spec)
    added: dict[str, int] = {}
    removed: dict[str, int] = {}
    count: dict[str, int] = {}
    for path, points in series.items():
        steps = np.diff([0] + [n for _, n in points])
        added[path] = int(steps[1:][steps[1:] > 0].sum()) if len(points) > 1 else 0
        removed[path] = int(-steps[1:][steps[1:] < 0].sum()) if len(points) > 1 else 0
        if points[0][0] > 0:  # inserted: its first width counts as added
            added[path] += points[0][1]
    for target in change_targets(changes, initial_spec):
        count[target] = count.get(target, 0) + 1
    last: dict[str, Any] = {}
    if saliency:  # measured before the changes of its own step
        seq = _label_sequence(changes, initial_spec)
        before = sum(c["step"] < saliency[-1]["step"] for c in changes)
        last = {_label(u, seq[before]): v for u, v in saliency[-1]["units"].items()}
    rows = []
    for path, points in series.items():
        s = np.asarray(last.get(path, []), np.float64)
        stats = ({"n": int(s.size), "mean": float(s.mean()), "min": float(s.min()),
                  "q25": float(np.quantile(s, 0.25)), "median": float(np.median(s)),
                  "q75": float(np.quantile(s, 0.75)), "max": float(s.max())}
                 if s.size else {k: float("nan") for k in ("mean", "min", "q25", "median", "q75", "max")}
                 | {"n": 0})  # fmt: skip
        rows.append({"layer": path, "initial": points[0][1] if points[0][0] == 0 else 0,
                     "final": points[-1][1], "added": added[path], "removed": removed[path],
                     "changes": count.get(path, 0), "saliency": stats})  # fmt: skip
    return rows


def report_markdown(rows: list[dict[str, Any]]) -> str:
    """The :func:`layer_report` as a Markdown table."""
    head = ("| layer | initial | final | added | removed | changes as target | saliency mean | "
            "median | max |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")  # fmt: skip
    body = "".join(
        f"| {r['layer']} | {r['initial']} | {r['final']} | {r['added']} | {r['removed']} | "
        f"{r['changes']} | {r['saliency']['mean']:.3g} | {r['saliency']['median']:.3g} | "
        f"{r['saliency']['max']:.3g} |\n" for r in rows)  # fmt: skip
    return head + body


_COLORS = {"widen": "tab:green", "insert": "tab:blue", "narrow": "tab:red"}


def capacity_figure(history: list[dict[str, Any]], changes: list[dict[str, Any]],
                    initial_params: int) -> dict[str, Any]:  # fmt: skip
    """The figure of :func:`plot_capacity`: ``draw`` and its layout, the keywords of
    :func:`~fnnjax.train.runfolder.save_figure` (and ``RunFolder.figure``)."""

    def draw(fig: Any, axes: Any) -> None:
        top, bottom = axes[:, 0]
        top.sharex(bottom)
        top.tick_params(labelbottom=False)
        last = history[-1]["step"] if history else max((c["step"] for c in changes), default=1)
        steps, params = [0], [initial_params]
        for c in changes:
            steps += [c["step"], c["step"]]
            params += [params[-1], c["params_after"]]
        steps.append(last)
        params.append(params[-1])
        top.plot(steps, params, color="black")
        top.set_ylabel("parameters")
        for key, label in (("train_loss", "train"), ("validation_loss", "validation")):
            pts = [(h["step"], h[key]) for h in history if key in h]
            if pts:
                bottom.plot(*zip(*pts, strict=True), label=label)
        bottom.set_ylabel("loss")
        bottom.set_xlabel("step")
        if any(h.get("train_loss", 1) > 0 for h in history):
            bottom.set_yscale("log")
        for c in changes:
            for ax in (top, bottom):
                ax.axvline(c["step"], color=_COLORS.get(c["op"], "gray"), alpha=0.3, lw=1)
        bottom.legend()
        top.set_title(f"{len(changes)} changes; parameters {initial_params} -> {params[-1]}")

    return {"draw": draw, "rows": 2, "cols": 1, "size": (7, 5.5)}


def plot_capacity(history: list[dict[str, Any]], changes: list[dict[str, Any]],
                  initial_params: int, path: str | Path) -> Path | None:  # fmt: skip
    """Writes ``path`` (PNG): parameters (top) and training / validation loss (bottom) against
    step, every change marked (green widen, blue insert, red narrow). Returns None (with a
    warning) when drawing failed."""
    return save_figure(path, **capacity_figure(history, changes, initial_params))


def layers_figure(saliency: list[dict[str, Any]], changes: list[dict[str, Any]],
                  initial_spec: Any) -> dict[str, Any]:  # fmt: skip
    """The figure of :func:`plot_layers` (as :func:`capacity_figure`)."""

    series = units_over_time(changes, initial_spec)
    moved = [p for p, pts in series.items() if len(pts) > 1 or pts[0][0] > 0]
    shown = moved or list(series)[:6]
    last_step = max([c["step"] for c in changes] + [s["step"] for s in saliency] + [1])
    lines = _unit_lines({p: series[p] for p in shown})
    names = {}
    if saliency:  # measured before the changes of its own step: named as on the left
        seq = _label_sequence(changes, initial_spec)
        before = sum(c["step"] < saliency[-1]["step"] for c in changes)
        names = {u: _label(u, seq[before]) for u in saliency[-1]["units"]}

    def draw(fig: Any, axes: Any) -> None:
        from matplotlib.ticker import MaxNLocator  # noqa: PLC0415

        left, right = axes[0]
        for k, (label, pts) in enumerate(lines):
            xs = [s for s, _ in pts] + [last_step]
            ys = [n for _, n in pts] + [pts[-1][1]]
            left.plot(xs, ys, drawstyle="steps-post", marker="o", ms=4,
                      markevery=list(range(len(pts))), label=label, **_line_style(k))  # fmt: skip
        left.set_xlabel("step")
        left.set_ylabel("units")
        left.yaxis.set_major_locator(MaxNLocator(integer=True))
        left.set_title("units per layer (layers that changed)" if moved else
                       f"units per layer (none changed; the first {len(shown)})")  # fmt: skip
        if lines:
            left.legend(fontsize=7, ncol=1 if len(lines) <= 10 else 2)
        if saliency:
            _saliency_boxes(right, saliency[-1], names)
        else:
            right.text(0.5, 0.5, "no saliency measured yet", ha="center", va="center")
            right.set_axis_off()

    return {"draw": draw, "rows": 1, "cols": 2, "size": (11, 4.5)}


_LINESTYLES = ("-", "--", ":", "-.")


def _line_style(k: int) -> dict[str, Any]:
    """The ``k``-th line's colour and dash: the ten default colours, then again dashed, ... (no
    two of 40 lines alike)."""
    return {"color": f"C{k % 10}", "linestyle": _LINESTYLES[(k // 10) % len(_LINESTYLES)]}


def _unit_lines(
    series: dict[str, list[tuple[int, int]]],
) -> list[tuple[str, list[tuple[int, int]]]]:
    """``[(legend label, points)]``: layers of the same units over time share one line (drawn
    apart they would hide each other), labelled with all their names (the first three, then how
    many more)."""
    groups: dict[tuple[tuple[int, int], ...], list[str]] = {}
    for path, pts in series.items():
        groups.setdefault(tuple(pts), []).append(path)
    out = []
    for pts, paths in groups.items():
        paths = sorted(paths)
        label = ", ".join(paths[:3]) + (f" (+{len(paths) - 3} more)" if len(paths) > 3 else "")
        out.append((label, list(pts)))
    return out


def _saliency_boxes(ax: Any, record: dict[str, Any], names: dict[str, str] | None = None) -> None:
    units = record["units"]
    order = sorted(units, key=lambda u: (names or {}).get(u, u))
    data = [np.asarray(units[n], np.float64) for n in order]
    try:
        ax.boxplot(data, orientation="horizontal")
    except TypeError:  # matplotlib < 3.10
        ax.boxplot(data, vert=False)
    ax.set_yticks(range(1, len(order) + 1), [(names or {}).get(n, n) for n in order], fontsize=7)
    top = max((float(np.abs(d).max()) for d in data if d.size), default=1.0) or 1.0
    ax.set_xscale("symlog", linthresh=1e-3 * top)  # Hutchinson's estimates can be < 0
    ax.set_xlabel("unit saliency")
    ax.set_title(f"saliency per unit at step {record['step']}")


def plot_layers(saliency: list[dict[str, Any]], changes: list[dict[str, Any]], initial_spec: Any,
                path: str | Path) -> Path | None:  # fmt: skip
    """Writes ``path`` (PNG): every resized layer's units against step (left) and the saliency
    distribution of each layer at the last consultation (right, box plots, symmetric log scale:
    the estimates of near-zero saliencies can be negative). Returns None (with a warning) when
    drawing failed."""
    return save_figure(path, **layers_figure(saliency, changes, initial_spec))
