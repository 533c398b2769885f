"""A whole ``fnnjax enas`` epoch (child training + controller steps), timed end to end.

Runs :func:`fnnjax.construct.enas.search` for ``--epochs`` epochs on Fashion-MNIST (or
``--dataset``) and reports the wall time of each epoch from the search's own log lines (the first
includes compiling), the derivation after them, and the execution path that ran. Run it at two
commits to time a change (``PYTHONPATH=<other checkout>``; BENCHMARKS.md gives the commands).

Usage::

    python -m benchmarks.enas_epoch [--layers 6] [--filters 16] [--limit-train 5000]
        [--epochs 2] [--execution auto] [--out results.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time

from benchmarks.common import machine, write_json
from fnnjax.construct import enas
from fnnjax.train import load_dataset


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--filters", type=int, default=16)
    parser.add_argument("--limit-train", type=int, default=5000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--derive-arcs", type=int, default=20)
    parser.add_argument("--execution", default=None,
                        help="SearchConfig.mode (default: the config's own, auto)")  # fmt: skip
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    config = enas.SearchConfig(layers=args.layers, filters=args.filters, epochs=args.epochs,
                               derive_arcs=args.derive_arcs)  # fmt: skip
    if args.quick:
        args.dataset, args.limit_train = "digits", 400
        config = dataclasses.replace(config, layers=2, filters=4, epochs=1, batch_size=64,
                                     controller_steps=2, arcs_per_step=4, reward_batch=32,
                                     derive_arcs=4, derive_batches=1)  # fmt: skip
    if args.execution is not None:
        config = dataclasses.replace(config, mode=args.execution)
    data = load_dataset(args.dataset, validation_fraction=0.1, seed=0,
                        limit_train=args.limit_train)  # fmt: skip
    marks: list[float] = []
    start = time.perf_counter()

    def log(line: str) -> None:
        if line.startswith("epoch="):
            marks.append(time.perf_counter() - start)
        print(f"[{time.perf_counter() - start:7.1f}s] {line}", flush=True)

    with tempfile.TemporaryDirectory() as out:
        result = enas.search(data, config, out, log=log)
    total = time.perf_counter() - start
    epochs = [b - a for a, b in zip([0.0, *marks], marks, strict=False)]
    payload = {"config": {**vars(args), "mode": config.mode},
               "execution": result.get("execution", "all (before execution paths)"),
               "epoch_seconds": epochs, "derive_seconds": total - (marks[-1] if marks else 0.0),
               "total_seconds": total}  # fmt: skip
    print(f"ENAS epochs, {config.layers} layers x {config.filters}, {args.dataset} "
          f"{args.limit_train} ({machine()}): execution {payload['execution']}; epochs "
          + ", ".join(f"{t:.1f} s" for t in epochs) + f"; derivation {payload['derive_seconds']:.1f} s")
    write_json(args.out, payload)
    return payload


if __name__ == "__main__":
    main()
