"""Train-step time of the FNN paper's dense baseline on Fashion-MNIST shapes, and the data share.

Three variants, side by side in one process (median of --repeats after warm-up):

* ``engine``: the step :func:`fnnjax.train.fit` runs — the batch is gathered on the device from the
  whole (60,000 x 28 x 28 x 1) training split with the epoch's permutation, inside the jitted step.
* ``compute``: the same jitted step handed a training "split" that is exactly one batch (the gather
  is then trivial), i.e. the model's forward + backward + Adam update alone.
* ``host``: the classic host pipeline — NumPy fancy-indexing of the batch and a host-to-device copy
  each step — followed by the compute step.

data share = (engine - compute) / engine. Usage::

    python benchmarks/train_step.py [--batch 128] [--repeats 30] [--out results.json]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import machine, median_seconds, write_json
from fnnjax.models import DenseBaseline
from fnnjax.train import TrainConfig, loop, make_mesh, replicate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--examples", type=int, default=60000)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for CI")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.quick:
        args.examples, args.repeats = 2048, 5

    mesh = make_mesh(1)
    model = DenseBaseline(num_classes=10)
    tx = loop.make_optimizer(TrainConfig(), args.examples // args.batch)
    rng = np.random.default_rng(0)
    x_all = rng.normal(size=(args.examples, 28, 28, 1)).astype(np.float32)
    y_all = rng.integers(0, 10, size=args.examples).astype(np.int32)
    state = replicate(loop.init_state(jax.random.key(0), model, (28, 28, 1), tx), mesh)
    step = loop.make_train_step(model, tx, mesh)

    x_dev, y_dev = replicate((x_all, y_all), mesh)
    order = jax.random.permutation(jax.random.key(1), args.examples)
    order = order[: args.examples // args.batch * args.batch].reshape(-1, args.batch)
    one_batch = jnp.arange(args.batch)[None]
    holder = {"state": state, "i": 0}

    def engine():
        holder["state"], m = step(holder["state"], x_dev, y_dev, order, holder["i"] % len(order))
        holder["i"] += 1
        return m["loss"]

    bx, by = replicate((x_all[: args.batch], y_all[: args.batch]), mesh)

    def compute():
        holder["state"], m = step(holder["state"], bx, by, one_batch, 0)
        return m["loss"]

    host_order = np.asarray(order)

    def host():
        idx = host_order[holder["i"] % len(host_order)]
        holder["i"] += 1
        hx, hy = replicate((x_all[idx], y_all[idx]), mesh)
        holder["state"], m = step(holder["state"], hx, hy, one_batch, 0)
        return m["loss"]

    times = {name: median_seconds(fn, repeats=args.repeats, warmup=3)
             for name, fn in (("engine", engine), ("compute", compute), ("host", host))}
    share = (times["engine"] - times["compute"]) / times["engine"]
    params = sum(x.size for x in jax.tree_util.tree_leaves(state.params))
    print(f"machine: {machine()}")
    print(f"dense baseline ({params:,} params), batch {args.batch}, {args.examples} examples on device")
    print("| variant | median step (ms) | examples/s |")
    print("|---|---:|---:|")
    for name, seconds in times.items():
        print(f"| {name} | {seconds * 1e3:.2f} | {args.batch / seconds:,.0f} |")
    print(f"data share of the engine's step: {share:.1%} (host pipeline costs "
          f"{(times['host'] - times['compute']) / times['host']:.1%} of its step)")
    write_json(args.out, {"batch": args.batch, "params": params, "seconds": times, "data_share": share})


if __name__ == "__main__":
    main()
