"""The search substrate's costs, side by side in one process (median of --repeats after warm-up).

Three ratios of a jitted training step (forward, backward, Adam update, via
:class:`fnnjax.train.Engine`, one device):

* ``stats_overhead``: a conv net that accumulates per-filter featuremap statistics
  (``collect_stats=True``: the EnvelopeNets statistic and the running variance of every conv unit,
  summed inside the step) over the same net without them. Target <= 1.05.
* ``switch_over_all``: an ENAS-style supernet of choice blocks (conv3x3, sep3x3, conv5x5, sep5x5,
  avgpool, maxpool per layer) with one selection, ``mode="switch"`` (only the selected candidate
  runs, ``lax.switch``) over ``mode="all"`` (every candidate runs, the selected one is kept).
* ``remat_over_switch``: ``mode="switch_remat"`` (each candidate rematerialized, so the forward
  conditional carries no residuals of the branches not taken) over ``mode="switch"``.
* ``selected_over_standalone``: the supernet step (the fastest mode) with a selection sampled
  afresh every call, over the materialized spec of one selection compiled on its own. Target <= 1.3.

Usage::

    python -m benchmarks.substrate [--batch 128] [--width 36] [--layers 6] [--repeats 20]
        [--quick] [--out results.json]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.common import machine, median_seconds, write_json
from fnnjax.arch import Choice, Conv, Head, Spec, Stage, build_model
from fnnjax.arch.select import materialize, random_selections, selection_of
from fnnjax.construct.enas import layer_ops
from fnnjax.train import Engine


def supernet(width: int, layers: int, mode: str, shape: tuple[int, int, int]) -> Spec:
    blocks = tuple(Choice(candidates=layer_ops(width), mode=mode) for _ in range(layers))
    return Spec(input_shape=shape, num_classes=10, stem=(Conv(filters=width),),
                stages=(Stage(blocks=blocks),), head=Head(), name=f"supernet-{mode}")  # fmt: skip


def conv_net(width: int, layers: int, shape: tuple[int, int, int]) -> Spec:
    blocks = tuple(Conv(filters=width) for _ in range(layers))
    return Spec(input_shape=shape, num_classes=10, stem=(Conv(filters=width),),
                stages=(Stage(blocks=blocks),), head=Head())  # fmt: skip


class _Stepper:
    """Calls one engine's k-step scan on fresh data indices; the state is carried along."""

    def __init__(self, model, shape, batch, steps, arch=None, tx=None):
        self.engine = Engine(model, tx or optax.adam(1e-3))
        self.state = self.engine.init(jax.random.key(0), shape)
        rng = np.random.default_rng(0)
        self.x = jnp.asarray(rng.normal(size=(batch * steps, *shape)).astype(np.float32))
        self.y = jnp.asarray(rng.integers(0, 10, size=batch * steps).astype(np.int32))
        self.orders = jnp.arange(batch * steps).reshape(steps, batch)
        self.arch = arch  # None, or a function i -> selection (set before each call)
        self.i = 0

    def __call__(self):
        if self.arch is not None:
            self.state = self.state.replace(
                collections={**self.state.collections, "arch": self.arch(self.i)})
        self.state, metrics = self.engine.train_steps(self.state, self.x, self.y, self.orders)
        self.i += 1
        return metrics["loss"]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--width", type=int, default=36, help="channels (36 in ENAS/NHN)")
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--size", type=int, default=32, help="image side (CIFAR: 32)")
    parser.add_argument("--steps", type=int, default=4, help="train steps per timed call (a scan)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for CI")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.width, args.layers, args.size, args.steps, args.repeats = 8, 4, 1, 8, 1, 2
    shape = (args.size, args.size, 3)

    def timed(stepper, warmup=2):
        return median_seconds(stepper, repeats=args.repeats, warmup=warmup) / args.steps

    seconds = {
        "plain": timed(_Stepper(build_model(conv_net(args.width, args.layers, shape)), shape,
                                args.batch, args.steps)),
        "stats": timed(_Stepper(build_model(conv_net(args.width, args.layers, shape),
                                            collect_stats=True), shape, args.batch, args.steps)),
    }  # fmt: skip
    fixed = {}
    for mode in ("switch", "switch_remat", "all"):
        spec = supernet(args.width, args.layers, mode, shape)
        pick = selection_of(spec, {p: i % 6 for i, p in enumerate(selection_of(spec, {}))})
        fixed[mode] = pick
        seconds[f"choice_{mode}"] = timed(_Stepper(build_model(spec), shape, args.batch,
                                                   args.steps, arch=lambda i, pick=pick: pick))  # fmt: skip
    faster = min(("switch", "switch_remat", "all"), key=lambda m: seconds[f"choice_{m}"])
    spec = supernet(args.width, args.layers, faster, shape)
    population = random_selections(jax.random.key(1), spec, 64)
    sampled = [jax.tree_util.tree_map(lambda a, p=p: a[p], population) for p in range(64)]
    # Warm-up runs every arc of the population once: on a GPU the first execution of each
    # lax.switch branch costs 0.2-2 s (kernels loaded and command buffers recorded lazily), so a
    # short warm-up would time that one-off cost, not the step.
    seconds["sampled"] = timed(_Stepper(build_model(spec), shape, args.batch, args.steps,
                                        arch=lambda i: sampled[i % 64]), warmup=len(sampled))  # fmt: skip
    standalone = materialize(spec, fixed[faster])
    seconds["standalone"] = timed(_Stepper(build_model(standalone), shape, args.batch, args.steps))
    ratios = {
        "stats_overhead": seconds["stats"] / seconds["plain"],
        "switch_over_all": seconds["choice_switch"] / seconds["choice_all"],
        "remat_over_switch": seconds["choice_switch_remat"] / seconds["choice_switch"],
        "selected_over_standalone": seconds["sampled"] / seconds["standalone"],
    }
    table = "\n".join(
        [f"substrate step costs, batch {args.batch}, width {args.width}, {args.layers} layers, "
         f"{args.size}x{args.size} inputs ({machine()})",
         *(f"  {name:12s} {1e3 * t:9.3f} ms/step" for name, t in seconds.items()),
         f"  statistics overhead        {ratios['stats_overhead']:.3f}x  (target <= 1.05)",
         f"  choice: switch / all       {ratios['switch_over_all']:.3f}x  (fastest: {faster})",
         f"  choice: remat / switch     {ratios['remat_over_switch']:.3f}x",
         f"  sampled / standalone       {ratios['selected_over_standalone']:.3f}x  (target <= 1.3)"]
    )  # fmt: skip
    print(table)
    payload = {"config": vars(args), "seconds": seconds, "ratios": ratios, "faster_mode": faster,
               "table": table}  # fmt: skip
    write_json(args.out, payload)
    return payload


if __name__ == "__main__":
    main()
