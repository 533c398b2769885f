"""Layer-specific analysis (the draft's section 3.2, a heading only; our reading): for every layer
(unit path) of a dynamic-capacity run, how its saliency is distributed and how many units it
gained and lost over time, as a table (:func:`layer_report`) and plots (:func:`plot_layers`,
:func:`plot_capacity`). The input is what :func:`~fnnjax.construct.capacity.train_dynamic`
records (``capacity.jsonl``, ``saliency.jsonl``), so a finished run folder can be analysed
without training: :func:`read_run`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["layer_report", "plot_capacity", "plot_layers", "read_run", "report_markdown",
           "units_over_time"]  # fmt: skip


def read_run(out_dir: str | Path) -> dict[str, Any]:
    """``{"history", "changes", "saliency", "initial_spec"}`` of a run folder."""
    from fnnjax.arch import from_dict  # noqa: PLC0415

    out = Path(out_dir)
    if not (out / "capacity_config.json").exists():
        raise ValueError(f"out_dir: {out} holds no dynamic-capacity run (no capacity_config.json)")

    def lines(name: str) -> list[dict[str, Any]]:
        path = out / name
        return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []

    config = json.loads((out / "capacity_config.json").read_text())
    return {"history": lines("metrics.jsonl"), "changes": lines("capacity.jsonl"),
            "saliency": lines("saliency.jsonl"), "initial_spec": from_dict(config["initial_spec"])}  # fmt: skip


def units_over_time(changes: list[dict[str, Any]], initial_spec: Any) -> dict[str, list[tuple[int, int]]]:
    """``{unit path: [(step, units), ...]}``: every layer's width at step 0 and after every
    change (a layer that appears later starts at the step it was inserted; one deleted ends at
    0 units)."""
    from fnnjax.arch import from_dict, infer_layers  # noqa: PLC0415

    def widths(spec: Any) -> dict[str, int]:
        return {u.path: u.cout for u in infer_layers(spec) if u.op != "norm"}

    out: dict[str, list[tuple[int, int]]] = {p: [(0, n)] for p, n in widths(initial_spec).items()}
    for change in changes:
        now = widths(from_dict(change["spec"]))
        for path in set(out) | set(now):
            n = now.get(path, 0)
            series = out.setdefault(path, [])
            if not series or series[-1][1] != n:
                series.append((int(change["step"]), n))
    return out


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
    for change in changes:
        count[change["target"]] = count.get(change["target"], 0) + 1
    last = saliency[-1]["units"] if saliency else {}
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


def _pyplot():
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


_COLORS = {"widen": "tab:green", "insert": "tab:blue", "narrow": "tab:red"}


def plot_capacity(history: list[dict[str, Any]], changes: list[dict[str, Any]],
                  initial_params: int, path: str | Path) -> Path:  # fmt: skip
    """Writes ``path`` (PNG): parameters (top) and training / validation loss (bottom) against
    step, every change marked (green widen, blue insert, red narrow)."""
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True)
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
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_layers(saliency: list[dict[str, Any]], changes: list[dict[str, Any]], initial_spec: Any,
                path: str | Path) -> Path:  # fmt: skip
    """Writes ``path`` (PNG): every resized layer's units against step (left) and the saliency
    distribution of each layer at the last consultation (right, box plots, log scale)."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    series = units_over_time(changes, initial_spec)
    moved = [p for p, pts in series.items() if len(pts) > 1 or pts[0][0] > 0]
    last_step = max([c["step"] for c in changes] + [s["step"] for s in saliency] + [1])
    for p in moved or list(series)[:6]:
        pts = series[p]
        xs = [s for s, _ in pts] + [last_step]
        ys = [n for _, n in pts] + [pts[-1][1]]
        left.step(xs, ys, where="post", label=p)
    left.set_xlabel("step")
    left.set_ylabel("units")
    left.set_title("units per layer (layers that changed)" if moved else "units per layer")
    if moved or series:
        left.legend(fontsize=7)
    if saliency:
        units = saliency[-1]["units"]
        names = sorted(units)
        data = [np.maximum(np.asarray(units[n], np.float64), 1e-12) for n in names]
        try:
            right.boxplot(data, orientation="horizontal")
        except TypeError:  # matplotlib < 3.10
            right.boxplot(data, vert=False)
        right.set_yticks(range(1, len(names) + 1), names, fontsize=7)
        right.set_xscale("log")
        right.set_xlabel("unit saliency")
        right.set_title(f"saliency per unit at step {saliency[-1]['step']}")
    else:
        right.text(0.5, 0.5, "no saliency measured yet", ha="center", va="center")
        right.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
