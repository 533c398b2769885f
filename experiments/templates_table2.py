"""Templates paper, Table 2: parameters, memory footprint and inference time (batch 64) of VGG-19,
ResNet-50, Inception and MobileNet with the base filter distribution and the four templates, all
with the same total number of filters F (section 4, CIFAR-10 shapes: 32x32x3 inputs, 10 classes).

Every number comes from :func:`fnnjax.arch.profile` on the zoo spec
``build_spec(model, 10, (32, 32, 3), template, width)``:

* params: trainable scalars (BN scale/bias included, running statistics not).
* GFLOPs: analytic, per example, 2 x multiply-accumulates of every conv and dense layer.
* memory: XLA's ``memory_analysis`` of one compiled training gradient step at batch 64
  (``memory_mode="train"``): ``activation`` is the scratch XLA allocates for intermediates,
  ``peak`` adds arguments (params, batch statistics, the batch) and outputs (the gradients). The
  paper's "Memory Footprint (GB/batch)" was read from a Titan X Pascal during PyTorch/TF-style
  training and includes framework overhead and cuDNN workspaces, so only ratios to the base model
  are comparable; the ``x base`` columns use ``peak``.
* latency: median wall time of the jitted inference forward on one batch of 64 (after ``--warmup``
  untimed calls), on whatever device runs the script (on this project's CPU machines, a shared
  2-core CPU: absolute times say little, ratios to base a little more). The paper gives
  "Inference Time (us)" from a Titan X Pascal GPU without saying per image or per batch. Per batch
  is physically impossible (VGG-19's 0.80 GFLOPs x 64 in 73.8 us would need ~690 TFLOP/s; the GPU
  peaks at ~11), while per image gives 10.8 TFLOP/s for VGG-19 and 4.0 for ResNet-50, so we read
  it as per image and print ours as ``batch time / 64``.

``--latency-max-gflop G`` skips the timing (not the rest) of configurations whose batch forward
exceeds G GFLOPs, so the full table fits a CPU time budget; skipped cells print ``skip``.

    python experiments/templates_table2.py                       # 4 models x 5 templates
    python experiments/templates_table2.py --repeats 3 --latency-max-gflop 250
    python experiments/templates_table2.py --models vgg19 --no-latency --width 0.5
    python experiments/templates_table2.py --quick                # seconds, for CI

Writes ``results.json`` and ``table2.png`` (params; memory and latency relative to each model's
base, ours as bars and the paper's as black markers) under ``--out``. Each configuration's profile
is cached in ``--out/profiles/`` with the settings that produced it, so a rerun with the same
settings reuses it (interrupted runs resume).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.common import save_figure, write_results
from fnnjax.arch import analytic_counts, profile
from fnnjax.construct import layer_filters
from fnnjax.construct.templates import TEMPLATE_NAMES
from fnnjax.models import build_spec

MODELS = ("vgg19", "resnet50", "inception", "mobilenet")
TEMPLATE_LABELS = {"base": "base", "reverse": "reverse-base", "uniform": "uniform",
                   "quadratic": "quadratic", "negative_quadratic": "neg-quadratic"}  # fmt: skip

# Table 2 (CIFAR-10): (params in millions, memory footprint in GB/batch, inference time in us).
PAPER = {
    "vgg19": {"base": (20.0, 1.7, 73.8), "reverse": (20.0, 10.7, 432.8),
              "uniform": (16.0, 5.2, 102.9), "quadratic": (15.8, 9.3, 366.6),
              "negative_quadratic": (20.0, 1.9, 95.2)},
    "resnet50": {"base": (23.5, 10.2, 645.4), "reverse": (23.1, 23.0, 1968.6),
                 "uniform": (12.9, 9.6, 1263.1), "quadratic": (19.0, 19.4, 1350.0),
                 "negative_quadratic": (33.0, 8.7, 1324.0)},
    "inception": {"base": (6.2, 5.7, 707.8), "reverse": (6.7, 10.8, 1422.7),
                  "uniform": (6.9, 7.0, 1093.9), "quadratic": (7.2, 8.0, 1187.5),
                  "negative_quadratic": (3.2, 3.7, 486.8)},
    "mobilenet": {"base": (3.2, 2.9, 74.5), "reverse": (2.2, 6.8, 488.2),
                  "uniform": (2.9, 3.3, 560.1), "quadratic": (3.2, 7.7, 492.0),
                  "negative_quadratic": (3.6, 2.0, 89.0)},
}  # fmt: skip


def profile_config(
    model: str,
    template: str,
    width: float,
    *,
    num_classes: int = 10,
    input_shape: tuple[int, ...] = (32, 32, 3),
    batch: int = 64,
    repeats: int = 3,
    warmup: int = 1,
    memory_mode: str | None = "train",
    latency: bool = True,
    latency_max_gflop: float | None = None,
    cache_dir: Path | None = None,
) -> dict[str, Any]:
    """Profiles ``build_spec(model, num_classes, input_shape, template, width)``; JSON-ready dict.

    With ``cache_dir``, the result is stored in (and read back from) one JSON file per
    configuration; a stored result is reused only if it was measured with the same settings.
    """
    spec = build_spec(model, num_classes, input_shape, template, width)
    counts = analytic_counts(spec)
    batch_gflop = counts["flops"] * batch / 1e9
    skip_latency = latency and latency_max_gflop is not None and batch_gflop > latency_max_gflop
    settings = {"model": model, "template": template, "width": width, "num_classes": num_classes,
                "input_shape": list(input_shape), "batch": batch, "memory_mode": memory_mode,
                "latency": latency and not skip_latency,
                "repeats": repeats if latency and not skip_latency else 0,
                "warmup": warmup if latency and not skip_latency else 0}  # fmt: skip
    cache = None
    if cache_dir is not None:
        cache = cache_dir / f"{model}-{template}-w{width:g}.json"
        if cache.exists():
            stored = json.loads(cache.read_text())
            if stored.get("settings") == settings:
                return stored["result"]
    p = profile(spec, batch=batch, repeats=max(repeats, 1), warmup=warmup,
                memory_mode=memory_mode, latency=settings["latency"])  # fmt: skip
    filters = layer_filters(spec)
    result = {
        **{k: v for k, v in dataclasses.asdict(p).items() if k != "name"},
        "model": model,
        "template": template,
        "width": width,
        "layer_filters": list(filters),
        "total_filters": sum(filters),
        "latency_skipped": (f"batch forward {batch_gflop:.0f} GFLOP > --latency-max-gflop "
                            f"{latency_max_gflop:g}") if skip_latency else None,
    }  # fmt: skip
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({"settings": settings, "result": result}, indent=1))
    return result


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", choices=MODELS, default=None,
                        help="default: all four (--quick: mobilenet)")
    parser.add_argument("--templates", nargs="+", choices=TEMPLATE_NAMES, default=list(TEMPLATE_NAMES))
    parser.add_argument("--width", type=float, default=1.0, help="width multiplier after the template")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--input-shape", type=int, nargs=3, default=[32, 32, 3], metavar=("H", "W", "C"))
    parser.add_argument("--batch", type=int, default=64, help="the paper's batch size (64)")
    parser.add_argument("--repeats", type=int, default=3, help="timed forward calls (median)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed forward calls first")
    parser.add_argument("--no-latency", action="store_true", help="skip timing")
    parser.add_argument("--latency-max-gflop", type=float, default=None, metavar="G",
                        help="time only configurations whose batch forward is at most G GFLOPs")
    parser.add_argument("--memory-mode", choices=("train", "inference"), default="train")
    parser.add_argument("--out", type=Path, default=Path("experiments/out/templates_table2"))
    parser.add_argument("--quick", action="store_true",
                        help="mobilenet at width 0.05, batch 8, 1 timed call (CI)")
    args = parser.parse_args(argv)
    if args.quick or os.environ.get("FNNJAX_TINY"):
        args.width, args.batch, args.repeats, args.warmup = 0.05, 8, 1, 0
        args.models = args.models or ["mobilenet"]
    args.models = args.models or list(MODELS)
    return args


def _ratio(x: float | None, base: float | None) -> float | None:
    return None if x is None or not base else x / base


def _f(x: float | None, fmt: str, missing: str = "-") -> str:
    return missing if x is None else format(x, fmt)


def main(argv=None) -> dict:
    args = parse_args(argv)
    rows = []
    for model in args.models:
        for template in args.templates:
            print(f"== profiling {model} / {template} (width {args.width:g}, batch {args.batch})",
                  flush=True)  # fmt: skip
            r = profile_config(
                model, template, args.width, num_classes=args.classes,
                input_shape=tuple(args.input_shape), batch=args.batch, repeats=args.repeats,
                warmup=args.warmup, memory_mode=args.memory_mode, latency=not args.no_latency,
                latency_max_gflop=args.latency_max_gflop, cache_dir=args.out / "profiles",
            )  # fmt: skip
            mem = r["memory"] or {}
            paper = PAPER[model][template]
            rows.append({
                "model": model, "template": template, "params": r["params"],
                "gflops_per_example": r["flops"] / 1e9, "total_filters": r["total_filters"],
                "layer_filters": r["layer_filters"],
                "activation_gb": mem.get("activation_bytes", 0) / 1e9 if mem else None,
                "peak_gb": mem.get("peak_bytes", 0) / 1e9 if mem else None,
                "latency_ms_per_batch": None if r["latency_s"] is None else 1e3 * r["latency_s"],
                "latency_us_per_image": (None if r["latency_s"] is None
                                         else 1e6 * r["latency_s"] / args.batch),
                "latency_repeats": r["latency_repeats"], "latency_skipped": r["latency_skipped"],
                "device": r["device"],
                "paper_params_m": paper[0], "paper_memory_gb": paper[1], "paper_latency_us": paper[2],
            })  # fmt: skip
    by_key = {(r["model"], r["template"]): r for r in rows}
    for r in rows:
        base = by_key.get((r["model"], "base"))
        paper_base = PAPER[r["model"]]["base"]
        r["memory_vs_base"] = _ratio(r["peak_gb"], base and base["peak_gb"])
        r["latency_vs_base"] = _ratio(r["latency_ms_per_batch"], base and base["latency_ms_per_batch"])
        r["paper_memory_vs_base"] = r["paper_memory_gb"] / paper_base[1]
        r["paper_latency_vs_base"] = r["paper_latency_us"] / paper_base[2]

    device = rows[0]["device"] if rows else "-"
    print(f"\nTable 2: {args.input_shape[0]}x{args.input_shape[1]}x{args.input_shape[2]} inputs, "
          f"{args.classes} classes, width {args.width:g}, batch {args.batch}, memory = "
          f"{args.memory_mode} step (XLA memory_analysis), latency = median of {args.repeats} "
          f"after {args.warmup} warm-up on {device}; paper: Titan X Pascal, CIFAR-10, width 1.0")
    print("| model | template | F | params M (ours / paper) | GFLOPs/ex | act GB | peak GB | "
          "paper GB | mem x base (ours / paper) | ms/batch | us/image (ours / paper) | "
          "latency x base (ours / paper) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        skip = "skip" if r["latency_skipped"] else "-"
        print(
            f"| {r['model']} | {TEMPLATE_LABELS[r['template']]} | {r['total_filters']} | "
            f"{r['params'] / 1e6:.2f} / {r['paper_params_m']} | {r['gflops_per_example']:.3f} | "
            f"{_f(r['activation_gb'], '.3f')} | {_f(r['peak_gb'], '.3f')} | "
            f"{r['paper_memory_gb']} | {_f(r['memory_vs_base'], '.2f')} / "
            f"{r['paper_memory_vs_base']:.2f} | {_f(r['latency_ms_per_batch'], '.1f', skip)} | "
            f"{_f(r['latency_us_per_image'], '.0f', skip)} / {r['paper_latency_us']} | "
            f"{_f(r['latency_vs_base'], '.2f', skip)} / {r['paper_latency_vs_base']:.2f} |"
        )
    skipped = [f"{r['model']}/{r['template']}" for r in rows if r["latency_skipped"]]
    if skipped:
        print(f"latency not measured (over --latency-max-gflop {args.latency_max_gflop:g}): "
              + ", ".join(skipped))  # fmt: skip

    png = args.out / "table2.png"
    _plot(rows, args.models, args.templates, png)
    payload = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
               "device": device, "table": rows, "figure": str(png)}  # fmt: skip
    write_results(args.out, payload)
    print(f"wrote {args.out / 'results.json'} and {png}")
    return payload


def _plot(rows: list[dict], models: list[str], templates: list[str], path: Path) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    panels = [("params (M)", lambda r: r["params"] / 1e6, lambda r: r["paper_params_m"]),
              ("memory / base model", lambda r: r["memory_vs_base"], lambda r: r["paper_memory_vs_base"]),
              ("latency / base model", lambda r: r["latency_vs_base"],
               lambda r: r["paper_latency_vs_base"])]  # fmt: skip
    by_key = {(r["model"], r["template"]): r for r in rows}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    width = 0.8 / max(len(templates), 1)
    for ax, (label, ours, paper) in zip(axes, panels, strict=True):
        for j, template in enumerate(templates):
            xs = [i + (j - (len(templates) - 1) / 2) * width for i in range(len(models))]
            vals = [ours(by_key[(m, template)]) for m in models]
            ax.bar(xs, [v if v is not None else 0.0 for v in vals], width,
                   label=TEMPLATE_LABELS[template])  # fmt: skip
            ax.scatter(xs, [paper(by_key[(m, template)]) for m in models], marker="_", s=120,
                       color="black", zorder=3, label="paper" if j == 0 else None)  # fmt: skip
        ax.set_xticks(range(len(models)), models)
        ax.set(title=label)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=7)
    save_figure(fig, path)


if __name__ == "__main__":
    main()
