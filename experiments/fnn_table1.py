"""FNN paper, Table 1 (and Figures 4-6): dense baseline vs FNN-1024 vs FNN-5000.

Paper setting (section 4.1): dense 2000-1500-1000-500 with ReLU and 0.1 input dropout; FNNs with
1024 / 5000 hidden floating neurons, 4 iterations, embedding dimension 256, 0.1 input dropout;
Adam; 100 epochs on MNIST, 200 on CIFAR-10. The paper does not give the batch size or learning
rate: we use 128 and Adam's default 1e-3 (flags).

Here MNIST/CIFAR-10 need tfds with a network, so the default dataset is Fashion-MNIST (same shapes
as MNIST, no paper number: the MNIST column is printed beside it as the closest reference).

    python experiments/fnn_table1.py                       # honest size: 3 seeds, 100 epochs
    python experiments/fnn_table1.py --epochs 10 --seeds 0 1 2
    python experiments/fnn_table1.py --quick               # seconds, for CI (one device)

Writes ``results.json``, ``accuracy.png`` (test accuracy per epoch, mean and min-max over seeds),
and the embedding figures of the first FNN-1024 run (``fig5_embedding_norms.png``,
``fig6_embedding_projection.png``) under ``--out``. Interrupted runs resume when restarted.
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
    add_devices_arg,
    fmt_pct,
    plot_curves,
    quick_devices,
    run_grid,
    write_results,
)
from fnnjax import get_model, param_count
from fnnjax.train import TrainConfig, load_dataset

PAPER = {  # Table 1: top-1 accuracy (%) and parameter counts
    "dense": {"mnist": (99.24, 6_578_010), "cifar10": (48.5, 11_154_010)},
    "fnn-1024": {"mnist": (99.29, 731_188), "cifar10": (61.13, 1_321_492)},
    "fnn-5000": {"mnist": (99.33, 2_774_852), "cifar10": (61.75, 3_365_156)},
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--models", nargs="+", default=list(PAPER), choices=list(PAPER))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="default: 100 (200 for cifar10)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--iterations", type=int, default=4)
    add_devices_arg(parser)
    parser.add_argument("--out", type=Path, default=Path("experiments/out/fnn_table1"))
    parser.add_argument("--quick", action="store_true",
                        help="digits, 1 seed, 2 epochs, one device (CI)")
    args = parser.parse_args(argv)
    if args.quick or os.environ.get("FNNJAX_TINY"):
        args.dataset, args.seeds, args.epochs = "digits", [0], 2
        quick_devices(args)
    if args.epochs is None:
        args.epochs = 200 if args.dataset in ("cifar10", "cifar100") else 100
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    data = load_dataset(args.dataset)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, optimizer="adam",
                         learning_rate=args.lr, num_devices=args.devices, progress=False)  # fmt: skip

    def entry(name: str) -> Entry:
        options = {} if name == "dense" else {"iterations": args.iterations}
        return Entry(
            name,
            lambda: get_model(name, data.num_classes, data.input_shape, **options),
            {"name": name, "options": options},
        )

    entries = [entry(name) for name in args.models]
    results = run_grid(entries, args.seeds, data, config, args.out)

    reference = "cifar10" if data.input_shape == (32, 32, 3) else "mnist"
    rows = []
    header = (f"| model | params (ours) | params (paper, {reference}) | final test acc % | "
              f"best test acc % | paper acc % ({reference}) |")  # fmt: skip
    print(f"\nTable 1 on {args.dataset}: {len(args.seeds)} seed(s) {args.seeds}, {args.epochs} epochs, "
          f"batch {args.batch_size}, Adam lr {args.lr} (mean ± std over seeds)")  # fmt: skip
    print(header)
    print("|---|---:|---:|---:|---:|---:|")
    for name, runs in results.items():
        params = runs[0]["summary"]["num_params"]
        paper_acc, paper_params = PAPER[name][reference]
        final = [r["summary"]["final_test_accuracy"] for r in runs]
        best = [r["summary"]["best_test_accuracy"] for r in runs]
        print(f"| {name} | {params:,} | {paper_params:,} | {fmt_pct(final)} | {fmt_pct(best)} | "
              f"{paper_acc} |")  # fmt: skip
        rows.append({"model": name, "params": params, "paper_params": paper_params,
                     "final_test_accuracy": final, "best_test_accuracy": best,
                     "paper_accuracy": paper_acc})  # fmt: skip
    if "dense" in results:
        dense_params = results["dense"][0]["summary"]["num_params"]
        for row in rows:
            row["params_vs_dense"] = row["params"] / dense_params
        print("params relative to dense: " + ", ".join(
            f"{r['model']} {r['params_vs_dense']:.1%}" for r in rows))  # fmt: skip

    plot_curves(results, args.out / "accuracy.png",
                f"{args.dataset}: test accuracy (mean, min-max over seeds)")  # fmt: skip
    figures = _embedding_figures(args, data, config) if "fnn-1024" in results else {}
    payload = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
               "dataset": data.describe(), "table": rows, "figures": figures,
               "curves": {n: [r["history"] for r in runs] for n, runs in results.items()}}  # fmt: skip
    write_results(args.out, payload)
    print(f"wrote {args.out / 'results.json'} and {args.out / 'accuracy.png'}")
    return payload


def _embedding_figures(args: argparse.Namespace, data, config: TrainConfig) -> dict[str, str]:
    """Figures 5 and 6 from the first FNN-1024 run's parameters."""
    import jax  # noqa: PLC0415

    from fnnjax.floating import analysis  # noqa: PLC0415
    from fnnjax.train import Checkpoints, loop  # noqa: PLC0415

    seed = args.seeds[0]
    model = get_model("fnn-1024", data.num_classes, data.input_shape, iterations=args.iterations)
    tx = loop.make_optimizer(config, len(data.train) // config.batch_size)
    template = jax.device_get(loop.init_state(jax.random.key(seed), model, data.input_shape, tx))
    run = args.out / "runs" / f"fnn-1024-seed{seed}"
    restored = Checkpoints(run / "checkpoints").restore_latest(template)
    assert restored is not None, "the FNN-1024 run has just written its checkpoints"
    params = restored[0].params
    norms = args.out / "fig5_embedding_norms.png"
    projection = args.out / "fig6_embedding_projection.png"
    analysis.plot_input_embedding_norms(params, data.input_shape, norms)
    analysis.plot_embedding_projection(params, data.input_shape, projection)
    print(f"parameter count check: {param_count(params):,}")
    return {"fig5": str(norms), "fig6": str(projection)}


if __name__ == "__main__":
    main()
