"""Templates paper, Figures 3-5: each template (and the base distribution) shrunk or grown by a
width multiplier (1.6, 1.3, 1.0, 0.8, 0.5, 0.25, 0.1, 0.05), then test accuracy against parameters
(Fig. 3), memory footprint (Fig. 4) and inference time (Fig. 5), batch 64.

For every model, template and multiplier the spec ``build_spec(model, classes, shape, template, m)``
is profiled (:func:`experiments.templates_table2.profile_config`: params, analytic FLOPs, memory of
one training step, inference latency; see templates_table2.py for the definitions and how they
relate to the paper's GPU measurements) and, unless ``--no-train``, trained with the templates
paper's recipe (templates_table1.py: SGD 0.1, x0.1 at 50% / 75% of 160 epochs, batch 64, momentum
0.9, weight decay 5e-4, augmentation). The default dataset is Fashion-MNIST (CIFAR needs tfds
online); models are profiled at the dataset's input shape when training, at ``--input-shape``
(default CIFAR's 32x32x3) with ``--no-train``.

Figure: one column per model, rows = params / memory / latency on a log x axis, one curve per
template; dashed lines cross at the base model with multiplier 1.0, as in the paper (if 1.0 is not
in ``--multipliers``, at the base model's multiplier closest to 1, named in the legend). With
``--no-train`` the rows plot params / memory / latency against the multiplier instead.

    python experiments/templates_width.py --no-train                      # resources only
    python experiments/templates_width.py --no-train --no-latency         # compile-only, minutes
    python experiments/templates_width.py --models vgg19 --epochs 10 --limit-train 10000
    python experiments/templates_width.py --quick                         # seconds, for CI

Writes ``results.json`` and ``width_curves.png`` under ``--out``; trained runs live in
``--out/runs/MODEL-TEMPLATE-wM-seedS`` and profiles in ``--out/profiles`` (both resume).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.common import Entry, mean_std, quick_devices, run_grid, save_figure, write_results
from experiments.templates_table1 import (
    MODELS,
    TEMPLATE_LABELS,
    add_recipe_args,
    recipe_text,
    train_config,
)
from experiments.templates_table2 import profile_config
from fnnjax import get_model
from fnnjax.construct.templates import TEMPLATE_NAMES
from fnnjax.train import load_dataset

MULTIPLIERS = (1.6, 1.3, 1.0, 0.8, 0.5, 0.25, 0.1, 0.05)
# What the paper reads off its figures (section 4.2), printed beside our numbers.
PAPER_CLAIMS = {
    "vgg19": "Fig. 3: templates reach the base accuracy with < 25% of the base parameters; "
             "Fig. 4: with > 50% less memory",
    "mobilenet": "Fig. 3: templates reach the base accuracy with < 25% of the base parameters; "
                 "Fig. 4: with > 50% less memory",
    "resnet50": "Fig. 3: small gains at equal parameters, tolerates more reduction; Fig. 4: only "
                "negative-quadratic helps memory (CIFAR-10)",
    "inception": "Fig. 3: similar accuracy at equal parameters for every template; Fig. 5: "
                 "negative-quadratic is faster (CIFAR-10)",
}  # fmt: skip
METRICS = (("params_m", "params (M)"), ("peak_gb", "memory, train step peak (GB)"),
           ("latency_ms", "latency (ms / batch)"))  # fmt: skip


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="fashion_mnist", help="default fashion_mnist")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=None,
                        help="default: all four (--quick: vgg19)")
    parser.add_argument("--templates", nargs="+", choices=TEMPLATE_NAMES, default=None,
                        help="default: all five (--quick: base uniform)")
    parser.add_argument("--multipliers", type=float, nargs="+", default=list(MULTIPLIERS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--no-train", action="store_true", help="profile only (no accuracy)")
    add_recipe_args(parser)
    prof = parser.add_argument_group("profiling (see templates_table2.py)")
    prof.add_argument("--classes", type=int, default=10, help="with --no-train; default 10")
    prof.add_argument("--input-shape", type=int, nargs=3, default=[32, 32, 3], metavar=("H", "W", "C"),
                      help="with --no-train; default 32 32 3")
    prof.add_argument("--batch", type=int, default=64, help="profiling batch; default 64")
    prof.add_argument("--repeats", type=int, default=3)
    prof.add_argument("--warmup", type=int, default=1)
    prof.add_argument("--no-latency", action="store_true")
    prof.add_argument("--latency-max-gflop", type=float, default=None, metavar="G",
                      help="time only configurations whose batch forward is at most G GFLOPs")
    parser.add_argument("--out", type=Path, default=Path("experiments/out/templates_width"))
    parser.add_argument("--quick", action="store_true",
                        help="digits (256 train, 128 test), vgg19, base + uniform, multipliers "
                        "0.1 0.05, 1 epoch of batch 32 at lr 0.02 on one device, profiles at batch 8 (CI)")
    args = parser.parse_args(argv)
    if args.quick or os.environ.get("FNNJAX_TINY"):
        args.dataset, args.seeds, args.epochs, args.multipliers = "digits", [0], 1, [0.1, 0.05]
        args.lr, args.limit_train, args.limit_test, args.batch_size = 0.02, 256, 128, 32
        quick_devices(args)
        args.batch, args.repeats, args.warmup = 8, 1, 0
        args.models = args.models or ["vgg19"]
        args.templates = args.templates or ["base", "uniform"]
    args.models = args.models or list(MODELS)
    args.templates = args.templates or list(TEMPLATE_NAMES)
    args.multipliers = sorted(set(args.multipliers), reverse=True)
    return args


def _reference(rows: list[dict], model: str) -> dict | None:
    """The base model at multiplier 1.0, else at the multiplier closest to 1."""
    base = [r for r in rows if r["model"] == model and r["template"] == "base"]
    return min(base, key=lambda r: (abs(r["width"] - 1.0), -r["width"])) if base else None


def main(argv=None) -> dict:
    args = parse_args(argv)
    data = None if args.no_train else load_dataset(args.dataset, limit_train=args.limit_train,
                                                   limit_test=args.limit_test)  # fmt: skip
    classes = args.classes if data is None else data.num_classes
    shape = tuple(args.input_shape) if data is None else tuple(data.input_shape)
    grid = [(m, t, w) for m in args.models for t in args.templates for w in args.multipliers]

    profiles = {}
    for model, template, width in grid:
        print(f"== profiling {model} / {template} x{width:g}", flush=True)
        profiles[(model, template, width)] = profile_config(
            model, template, width, num_classes=classes, input_shape=shape, batch=args.batch,
            repeats=args.repeats, warmup=args.warmup, memory_mode="train",
            latency=not args.no_latency, latency_max_gflop=args.latency_max_gflop,
            cache_dir=args.out / "profiles",
        )  # fmt: skip

    results: dict[str, list[dict[str, Any]]] = {}
    config = None
    if data is not None:
        config = train_config(args)

        def entry(model: str, template: str, width: float) -> Entry:
            options = {"template": template, "width": width}
            return Entry(f"{model}-{template}-w{width:g}",
                         lambda: get_model(model, classes, shape, **options),
                         {"name": model, "options": options})  # fmt: skip

        results = run_grid([entry(*g) for g in grid], args.seeds, data, config, args.out)

    rows = []
    for model, template, width in grid:
        p = profiles[(model, template, width)]
        runs = results.get(f"{model}-{template}-w{width:g}", [])
        rows.append({
            "model": model, "template": template, "width": width, "params": p["params"],
            "params_m": p["params"] / 1e6, "gflops_per_example": p["flops"] / 1e9,
            "total_filters": p["total_filters"],
            "peak_gb": None if p["memory"] is None else p["memory"]["peak_bytes"] / 1e9,
            "activation_gb": None if p["memory"] is None else p["memory"]["activation_bytes"] / 1e9,
            "latency_ms": None if p["latency_s"] is None else 1e3 * p["latency_s"],
            "latency_skipped": p["latency_skipped"], "device": p["device"],
            "final_test_accuracy": [r["summary"]["final_test_accuracy"] for r in runs],
            "best_test_accuracy": [r["summary"]["best_test_accuracy"] for r in runs],
        })  # fmt: skip

    what = "profile only" if data is None else (
        f"{args.dataset} ({len(data.train)} train / {len(data.test)} test), {len(args.seeds)} "
        f"seed(s) {args.seeds}; {recipe_text(config)}")  # fmt: skip
    print(f"\nFigures 3-5 as a table: {what}; profiles at {shape}, batch {args.batch}, on "
          f"{rows[0]['device']}")  # fmt: skip
    print("| model | template | width | F | params M | GFLOPs/ex | peak GB | latency ms/batch | "
          "final test acc % |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        lat = "skip" if r["latency_skipped"] else "-"
        lat = lat if r["latency_ms"] is None else f"{r['latency_ms']:.1f}"
        acc = "-"
        if r["final_test_accuracy"]:
            mean, std = mean_std(r["final_test_accuracy"])
            acc = f"{100 * mean:.2f}" + (f" ± {100 * std:.2f}" if len(r["final_test_accuracy"]) > 1 else "")
        peak = "-" if r["peak_gb"] is None else f"{r['peak_gb']:.3f}"
        print(f"| {r['model']} | {TEMPLATE_LABELS[r['template']]} | {r['width']:g} | "
              f"{r['total_filters']} | {r['params_m']:.3f} | {r['gflops_per_example']:.3f} | "
              f"{peak} | {lat} | {acc} |")  # fmt: skip

    summary = _matching_base(rows, args.models) if data is not None else {}
    for model, s in summary.items():
        print(f"{model}: {s['text']}\n    paper: {PAPER_CLAIMS[model]}")

    png = args.out / "width_curves.png"
    _plot(rows, args.models, args.templates, png, trained=data is not None)
    payload = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
               "dataset": None if data is None else data.describe(),
               "config": None if config is None else config.to_dict(), "rows": rows,
               "matching_base": summary, "figure": str(png)}  # fmt: skip
    write_results(args.out, payload)
    print(f"wrote {args.out / 'results.json'} and {png}")
    return payload


def _matching_base(rows: list[dict], models: list[str]) -> dict[str, dict]:
    """Per model and resource: the cheapest template configuration whose mean accuracy reaches
    the reference base model's, as a fraction of the reference's resource (the paper's reading of
    Figs. 3-5 along a horizontal line)."""
    out = {}
    for model in models:
        ref = _reference(rows, model)
        if ref is None or not ref["final_test_accuracy"]:
            continue
        target = mean_std(ref["final_test_accuracy"])[0]
        ok = [r for r in rows if r["model"] == model and r["template"] != "base"
              and mean_std(r["final_test_accuracy"])[0] >= target]  # fmt: skip
        entry: dict[str, Any] = {"reference_width": ref["width"], "reference_accuracy": target}
        parts = []
        for key, short in (("params_m", "params"), ("peak_gb", "memory"), ("latency_ms", "latency")):
            cands = [r for r in ok if r[key] is not None and ref[key]]
            best = min(cands, key=lambda r: r[key]) if cands else None
            entry[key] = None if best is None else {
                "template": best["template"], "width": best["width"], "ratio": best[key] / ref[key]}
            parts.append(f"{short} -" if best is None else f"{short} {best[key] / ref[key]:.0%} "
                         f"({TEMPLATE_LABELS[best['template']]} x{best['width']:g})")  # fmt: skip
        entry["text"] = (f"cheapest template reaching the base x{ref['width']:g} accuracy "
                         f"({100 * target:.2f}%), as a share of the base's resources: "
                         + "; ".join(parts))  # fmt: skip
        out[model] = entry
    return out


def _plot(rows: list[dict], models: list[str], templates: list[str], path: Path, *,
          trained: bool) -> None:  # fmt: skip
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from matplotlib.ticker import NullFormatter  # noqa: PLC0415

    # Only metrics that were measured (e.g. no latency row with --no-latency).
    metrics = [(k, lbl) for k, lbl in METRICS if any(r[k] is not None for r in rows)]
    fig, axes = plt.subplots(len(metrics), len(models), figsize=(4 * len(models), 3.2 * len(metrics)),
                             squeeze=False)  # fmt: skip
    for j, model in enumerate(models):
        ref = _reference(rows, model)
        for i, (key, label) in enumerate(metrics):
            ax = axes[i][j]
            for template in templates:
                pts = [r for r in rows if r["model"] == model and r["template"] == template
                       and r[key] is not None and (not trained or r["final_test_accuracy"])]  # fmt: skip
                if trained:
                    pts.sort(key=lambda r: r[key])
                    xs = [r[key] for r in pts]
                    ys = [100 * mean_std(r["final_test_accuracy"])[0] for r in pts]
                else:
                    pts.sort(key=lambda r: r["width"])
                    xs, ys = [r["width"] for r in pts], [r[key] for r in pts]
                ax.plot(xs, ys, marker="o", ms=3, label=TEMPLATE_LABELS[template])
            if ref is not None and ref[key] is not None:
                tag = f"base x{ref['width']:g}"
                if trained and ref["final_test_accuracy"]:
                    ax.axvline(ref[key], ls="--", color="gray", lw=1, label=tag)
                    ax.axhline(100 * mean_std(ref["final_test_accuracy"])[0], ls="--", color="gray",
                               lw=1)  # fmt: skip
                elif not trained:
                    ax.axvline(ref["width"], ls="--", color="gray", lw=1, label=tag)
                    ax.axhline(ref[key], ls="--", color="gray", lw=1)
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
            if trained:
                ax.set(xlabel=label, ylabel="test accuracy %" if j == 0 else None)
            else:
                ax.set_yscale("log")
                widths = sorted({r["width"] for r in rows})
                ax.set_xticks(widths, [f"{w:g}" for w in widths])
                ax.set(xlabel="width multiplier", ylabel=label if j == 0 else None)
            if i == 0:
                ax.set_title(model)
            ax.grid(alpha=0.3, which="both")
    axes[0][0].legend(fontsize=7)
    save_figure(fig, path, dpi=110)


if __name__ == "__main__":
    main()
