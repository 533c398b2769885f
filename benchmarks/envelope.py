"""What EnvelopeNets' statistics cost: an EnvelopeNet train step with and without them.

One jitted training step (forward, backward, SGD, via :class:`fnnjax.train.Engine`, one device)
of the EnvelopeNet ``--init`` (default ``32/4-1-1/6``; the paper's is ``128/10-1-1-1/6``), with
the featuremap statistics (per filter, the mean of ``y**2`` and the variance, at the conv's
output by default (``--measure``), summed into the train state inside the step), over the same
step without. Two placements: at the blocks' units only (``stats_at="blocks"``, what
:func:`fnnjax.construct.envelope.construct` trains with; the target, <= 1.05) and at every conv
unit (``"all"``: also the stem, the wideners and the separable blocks' depthwise halves).
Median of ``--repeats`` after warm-up, side by side in one process.

Usage::

    python -m benchmarks.envelope [--init 32/4-1-1/6] [--batch 50] [--size 32] [--repeats 20]
        [--quick] [--out results.json]
"""

from __future__ import annotations

import argparse
import dataclasses

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
    config = ev.ConstructionConfig(stages=stages, envelope=env, measure=args.measure)
    models = {"plain": build_model(spec)}
    for at in ("blocks", "all"):
        models[at] = ev.statistics_model(spec, dataclasses.replace(config, stats_at=at))
    seconds = {}
    for name, model in models.items():
        stepper = _Stepper(model, shape, args.batch, args.steps, tx=optax.sgd(0.1))
        seconds[name] = median_seconds(stepper, repeats=args.repeats) / args.steps
    ratio = seconds["blocks"] / seconds["plain"]
    ratio_all = seconds["all"] / seconds["plain"]
    table = "\n".join([
        f"EnvelopeNet {args.init} ({analytic_counts(spec)['params']:,} params), batch {args.batch}, "
        f"{args.size}x{args.size}x3 inputs, statistics at the "
        f"{'convs' if args.measure == 'conv' else 'blocks'}' output "
        f"({machine()}, {jax.default_backend()})",
        f"  without statistics              {1e3 * seconds['plain']:9.3f} ms/step",
        f"  statistics at the blocks' units {1e3 * seconds['blocks']:9.3f} ms/step  "
        f"overhead {ratio:.3f}x (target <= 1.05)",
        f"  statistics at every conv unit   {1e3 * seconds['all']:9.3f} ms/step  "
        f"overhead {ratio_all:.3f}x",
    ])  # fmt: skip
    print(table)
    payload = {"config": vars(args), "seconds": seconds, "ratio": ratio, "ratio_all": ratio_all,
               "table": table}  # fmt: skip
    write_json(args.out, payload)
    return payload


if __name__ == "__main__":
    main()
