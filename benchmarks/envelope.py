"""What EnvelopeNets' statistics cost: an EnvelopeNet train step with and without them.

One jitted training step (forward, backward, SGD, via :class:`fnnjax.train.Engine`, one device)
of the EnvelopeNet ``--init`` (default ``32/4-1-1/6``; the paper's is ``128/10-1-1-1/6``), with
``collect_stats=--measure`` (every conv unit's per-filter mean of ``y**2`` and variance, at its
conv's output by default, summed into the train state inside the step: what
:func:`fnnjax.construct.envelope.construct` trains with) over the same step without. Target: <= 1.05. Median of ``--repeats`` after warm-up, side by side
in one process.

Usage::

    python -m benchmarks.envelope [--init 32/4-1-1/6] [--batch 50] [--size 32] [--repeats 20]
        [--quick] [--out results.json]
"""

from __future__ import annotations

import argparse

import jax
import optax

from benchmarks.common import machine, median_seconds, write_json
from benchmarks.substrate import _Stepper
from fnnjax.arch import analytic_counts, build_model
from fnnjax.construct import envelope as ev


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--init", default="32/4-1-1/6", help="the EnvelopeNet C/n1-n2-.../M")
    parser.add_argument("--cell", default=",".join(ev.CELL_OPS), help="the cell's blocks")
    parser.add_argument("--measure", choices=("conv", "output"), default="conv",
                        help="where the units measure (construction's default in the paper's "
                        "order: conv)")  # fmt: skip
    parser.add_argument("--batch", type=int, default=50, help="the paper's CIFAR batch: 50")
    parser.add_argument("--size", type=int, default=32, help="image side (CIFAR: 32)")
    parser.add_argument("--steps", type=int, default=2, help="train steps per timed call")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for CI")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    if args.quick:
        args.init, args.cell, args.batch, args.size, args.steps, args.repeats = (
            "4/1-1/2", "1x1,3x3", 8, 8, 1, 2)  # fmt: skip
    channels, stages, _ = ev.parse_notation(args.init)
    env = ev.EnvelopeConfig(channels=channels, cell=tuple(args.cell.split(",")))
    shape = (args.size, args.size, 3)
    spec = ev.envelope_spec(ev.initial_layers(stages, env), env, shape, 10)
    seconds = {}
    for name, stats in (("plain", False), ("stats", args.measure)):
        stepper = _Stepper(build_model(spec, collect_stats=stats), shape, args.batch, args.steps,
                           tx=optax.sgd(0.1))  # fmt: skip
        seconds[name] = median_seconds(stepper, repeats=args.repeats) / args.steps
    ratio = seconds["stats"] / seconds["plain"]
    table = "\n".join([
        f"EnvelopeNet {args.init} ({analytic_counts(spec)['params']:,} params), batch {args.batch}, "
        f"{args.size}x{args.size}x3 inputs ({machine()}, {jax.default_backend()})",
        f"  without statistics  {1e3 * seconds['plain']:9.3f} ms/step",
        f"  with statistics     {1e3 * seconds['stats']:9.3f} ms/step",
        f"  statistics overhead {ratio:.3f}x  (target <= 1.05)",
    ])  # fmt: skip
    print(table)
    payload = {"config": vars(args), "seconds": seconds, "ratio": ratio, "table": table}
    write_json(args.out, payload)
    return payload


if __name__ == "__main__":
    main()
