"""FNN paper, Table 2 (section 4.3): VGG-16 with a dense head vs VGG-16 with an FNN head.

Paper setting: VGG-16 adapted to CIFAR, everything after the last max-pool replaced by
Dropout 0.5 -> Dense 512 -> BatchNorm -> ReLU -> Dropout 0.5 -> Dense classes (``head="dense"`` in
the zoo), or by an FNN with 1024 floating neurons and 4 iterations (``head="fnn"``, embedding
dimension 256 and input dropout 0.1 as in section 4.1, since section 4.3 names neither); SGD with
momentum 0.9 and weight decay 5e-4; the maximum test accuracy is reported. The paper gives no
learning rate, schedule, epochs, batch size or augmentation: we default to the templates paper's
CIFAR recipe (templates_table1.py), which is also the usual one for this VGG-16 variant (network
slimming, Liu et al. 2017): 160 epochs, batch 64, lr 0.1 divided by 10 at 50% and 75% of the run,
pad-4 crop + flip. All of it is flags.

Here CIFAR needs tfds with a network (or the batches under ``$FNNJAX_DATA_DIR``), so the default
dataset is Fashion-MNIST (no paper number: the CIFAR-10 column is printed beside it as the closest
reference). ``--width m`` shrinks the convolutional body (the heads keep the paper's sizes) so a
CPU run is an honest, smaller version of the same comparison.

    python experiments/fnn_table2.py --dataset cifar10                   # honest size (GPU)
    python experiments/fnn_table2.py --width 0.25 --epochs 10 --seeds 0
    python experiments/fnn_table2.py --quick                             # seconds, for CI

Writes ``results.json`` and ``accuracy.png`` (test accuracy per epoch, mean and min-max over seeds)
under ``--out``; runs live in ``--out/runs/`` and resume when restarted.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.common import (
    Entry,
    fmt_pct,
    mean_std,
    plot_curves,
    quick_devices,
    run_grid,
    write_results,
)
from experiments.templates_table1 import (
    add_recipe_args,
    recipe_text,
    reference_dataset,
    train_config,
)
from fnnjax import get_model
from fnnjax.train import load_dataset

PAPER = {  # Table 2: maximum top-1 test accuracy (%)
    "vgg16+dense": {"cifar10": 92.98, "cifar100": 73.19},
    "vgg16+fnn": {"cifar10": 93.51, "cifar100": 73.33},
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="fashion_mnist", help="default fashion_mnist")
    parser.add_argument("--models", nargs="+", choices=list(PAPER), default=list(PAPER))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--width", type=float, default=1.0,
                        help="width multiplier of the VGG-16 body (heads keep their size)")
    parser.add_argument("--fnn-neurons", type=int, default=1024, help="default 1024 (paper)")
    parser.add_argument("--fnn-iterations", type=int, default=4, help="default 4 (paper)")
    parser.add_argument("--fnn-input-dropout", type=float, default=0.1,
                        help="dropout on the FNN head's input; default 0.1 (section 4.1)")
    add_recipe_args(parser)
    parser.add_argument("--out", type=Path, default=Path("experiments/out/fnn_table2"))
    parser.add_argument("--quick", action="store_true",
                        help="digits (full train, 256 test), width 0.05, 1 seed, 2 epochs at lr "
                        "0.02, one device (CI)")
    args = parser.parse_args(argv)
    if args.quick or os.environ.get("FNNJAX_TINY"):
        args.dataset, args.seeds, args.epochs, args.width, args.lr = "digits", [0], 2, 0.05, 0.02
        args.limit_test = 256
        quick_devices(args)
    return args


def model_options(name: str, args: argparse.Namespace) -> dict:
    """``get_model("vgg16", ...)`` options of a Table 2 row."""
    if name == "vgg16+dense":
        return {"width": args.width, "head": "dense"}
    return {"width": args.width, "head": "fnn",
            "head_options": {"num_hidden": args.fnn_neurons, "iterations": args.fnn_iterations,
                             "input_dropout": args.fnn_input_dropout}}  # fmt: skip


def main(argv=None) -> dict:
    args = parse_args(argv)
    data = load_dataset(args.dataset, limit_train=args.limit_train, limit_test=args.limit_test)
    config = train_config(args)

    def entry(name: str) -> Entry:
        options = model_options(name, args)
        return Entry(name, lambda: get_model("vgg16", data.num_classes, data.input_shape, **options),
                     {"name": "vgg16", "options": options})  # fmt: skip

    results = run_grid([entry(n) for n in args.models], args.seeds, data, config, args.out)

    ref = reference_dataset(args.dataset)
    print(f"\nFNN Table 2 on {args.dataset} ({len(data.train)} train / {len(data.test)} test), "
          f"VGG-16 width {args.width:g}, {len(args.seeds)} seed(s) {args.seeds}; "
          f"{recipe_text(config)} (mean ± std over seeds)")  # fmt: skip
    print(f"| model | params | final test acc % | max test acc % | paper max acc % ({ref}) |")
    print("|---|---:|---:|---:|---:|")
    rows = []
    for name, runs in results.items():
        final = [r["summary"]["final_test_accuracy"] for r in runs]
        best = [r["summary"]["best_test_accuracy"] for r in runs]
        params = runs[0]["summary"]["num_params"]
        print(f"| {name} | {params:,} | {fmt_pct(final)} | {fmt_pct(best)} | {PAPER[name][ref]} |")
        rows.append({"model": name, "options": model_options(name, args), "params": params,
                     "final_test_accuracy": final, "best_test_accuracy": best,
                     "paper_accuracy": PAPER[name][ref]})  # fmt: skip
    gap = None
    if set(results) == set(PAPER):
        ours = {r["model"]: mean_std(r["best_test_accuracy"])[0] for r in rows}
        gap = 100 * (ours["vgg16+fnn"] - ours["vgg16+dense"])
        paper_gap = PAPER["vgg16+fnn"][ref] - PAPER["vgg16+dense"][ref]
        print(f"FNN head minus dense head (max test accuracy): ours {gap:+.2f} points, "
              f"paper {paper_gap:+.2f} points ({ref})")  # fmt: skip

    png = args.out / "accuracy.png"
    plot_curves(results, png, f"{args.dataset}: VGG-16 x{args.width:g}, test accuracy")
    payload = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
               "dataset": data.describe(), "config": config.to_dict(), "reference": ref,
               "table": rows, "fnn_minus_dense_points": gap, "figure": str(png),
               "curves": {n: [r["history"] for r in runs] for n, runs in results.items()}}  # fmt: skip
    write_results(args.out, payload)
    print(f"wrote {args.out / 'results.json'} and {png}")
    return payload


if __name__ == "__main__":
    main()
