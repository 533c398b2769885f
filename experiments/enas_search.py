"""ENAS macro search (NHN section 2.1; Pham et al. 2018) against random search, then retraining.

1. ENAS: the shared-weight supernet and the LSTM controller (:func:`fnnjax.construct.enas.search`).
2. Random search on the same budget: uniform arcs for the shared weights, no controller, the same
   derivation (ENAS users report that random arcs retrain about as well; this measures it).
3. A hand-made net: every layer conv3x3, no skips (the plain CNN of the same space), its width
   chosen so that its retraining form has about the ENAS arc's parameters.
4. The three retraining forms are trained from scratch with every seed (Nesterov SGD, cosine,
   weight decay 5e-4 as the paper's child; dropout 0 as NHN before fine-tuning) and evaluated on
   the test split, which the searches never read.

CIFAR-10 needs tfds with a network, so the default is Fashion-MNIST at a CPU size; the paper-scale
command (a GPU, CIFAR-10 under tfds):

    python experiments/enas_search.py --dataset cifar10 --layers 12 --filters 36 --epochs 310 \\
        --retrain-epochs 310 --limit-train 0
    python experiments/enas_search.py --epochs 6 --controller-steps 10 --reward-batch 32
                                                            # the CPU size REPRODUCTION.md records
    python experiments/enas_search.py --quick               # seconds, for CI

Writes ``results.json`` (per entry: arc, parameters, test accuracy per seed) under ``--out``;
the searches keep their own folders (``enas/``, ``random/``: best_arc.txt, best_spec.json,
search.jsonl, ...) and every retraining run its own, so an interrupted experiment resumes.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.common import (
    Entry,
    add_devices_arg,
    fmt_pct,
    quick_devices,
    run_grid,
    write_results,
)
from fnnjax.arch import analytic_counts, build_model
from fnnjax.construct import enas
from fnnjax.models import describe_spec
from fnnjax.train import TrainConfig, load_dataset


def plain_arc(layers: int) -> list[int]:
    """Every layer conv3x3 (op 0), no skip: the hand-made baseline in the same space."""
    return [0] * enas.arc_size(layers)


def matched_width(arc, layers: int, target: int, **shape) -> int:
    """The width whose retraining form of ``arc`` has the parameter count closest to ``target``."""
    best, best_gap = 1, None
    for width in range(2, 257, 2):
        params = analytic_counts(enas.retrain_spec(arc, layers, width, **shape))["params"]
        gap = abs(params - target)
        if best_gap is None or gap < best_gap:
            best, best_gap = width, gap
        if params > target:
            break
    return best


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--filters", type=int, default=8, help="search width (retrained at the same)")
    p.add_argument("--epochs", type=int, default=4, help="search epochs")
    p.add_argument("--retrain-epochs", type=int, default=5)
    p.add_argument("--limit-train", type=int, default=6000, help="0: the whole training split")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--controller-steps", type=int, default=50, help="per epoch (paper: 50)")
    p.add_argument("--reward-batch", type=int, default=128,
                   help="validation examples per arc and controller step (released: 128)")  # fmt: skip
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", type=Path, default=Path("experiments/out/enas"))
    add_devices_arg(p)
    args = p.parse_args(argv)
    search_config = enas.SearchConfig(layers=args.layers, filters=args.filters,
                                      epochs=args.epochs, controller_steps=args.controller_steps,
                                      reward_batch=args.reward_batch)  # fmt: skip
    if args.quick:
        quick_devices(args)
        args.dataset, args.limit_train, args.seeds, args.retrain_epochs = "digits", 400, [0], 1
        search_config = dataclasses.replace(search_config, layers=2, filters=4, epochs=1,
                                            batch_size=64, controller_steps=2, arcs_per_step=4,
                                            reward_batch=32, derive_arcs=10, derive_batches=1)  # fmt: skip
    data = load_dataset(args.dataset, validation_fraction=0.1, seed=0,
                        limit_train=args.limit_train or None)  # fmt: skip
    layers, filters = search_config.layers, search_config.filters
    shape = {"input_shape": data.input_shape, "num_classes": data.num_classes}
    found = {}
    for name, random in (("enas", False), ("random", True)):
        config = dataclasses.replace(search_config, random_search=random)
        result = enas.search(data, config, args.out / name, seed=0)
        found[name] = [int(v) for v in result["best_arc"]]
    enas_params = analytic_counts(enas.retrain_spec(found["enas"], layers, filters, **shape))["params"]
    plain = plain_arc(layers)
    plain_width = matched_width(plain, layers, enas_params, **shape)
    specs = {
        "enas": enas.retrain_spec(found["enas"], layers, filters, **shape),
        "random": enas.retrain_spec(found["random"], layers, filters, **shape),
        "plain": enas.retrain_spec(plain, layers, plain_width, **shape),
    }
    entries = [Entry(name, lambda s=spec: build_model(s), describe_spec(spec))
               for name, spec in specs.items()]  # fmt: skip
    train_config = TrainConfig(epochs=args.retrain_epochs, batch_size=search_config.batch_size,
                               optimizer="sgd", learning_rate=0.05, momentum=0.9, nesterov=True,
                               weight_decay=5e-4, schedule="cosine", num_devices=args.devices,
                               progress=False)  # fmt: skip
    results = run_grid(entries, args.seeds, data, train_config, args.out / "retrain")
    rows = {}
    for name, spec in specs.items():
        accs = [r["summary"]["final_test_accuracy"] for r in results[name]]
        rows[name] = {"arc": enas.arc_to_string(found.get(name, plain), layers),
                      "width": plain_width if name == "plain" else filters,
                      "params": analytic_counts(spec)["params"], "test_accuracy": accs}  # fmt: skip
    print(f"\n{args.dataset}, {layers} layers, search width {filters}, {search_config.epochs} search "
          f"epochs, {args.retrain_epochs} retraining epochs, seeds {args.seeds}")  # fmt: skip
    for name, row in rows.items():
        print(f"  {name:7s} params {row['params']:>9,}  test accuracy {fmt_pct(row['test_accuracy'])}"
              f"  arc {row['arc']}")  # fmt: skip
    payload = {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
               "search": dataclasses.asdict(search_config), "rows": rows}  # fmt: skip
    write_results(args.out, payload)
    return payload


if __name__ == "__main__":
    main()
