"""Per-call times of one supernet step under a fixed and under sampled selections.

Diagnoses the first-execution cost of ``lax.switch`` branches on an accelerator: one engine (one
compilation) of the ENAS supernet of :mod:`benchmarks.substrate` is called with the same selection
every step, then with 64 sampled selections in turn, then with host (numpy) selections and with
two alternating ones; each line prints the first five calls and the medians. On an H100 the first
call of each new branch combination took 0.2-2 s (kernels loaded and command buffers recorded
lazily) and the steady state equals the fixed selection's (BENCHMARKS.md).

Usage::

    python -m benchmarks.choice_warmup [--layers 12] [--steps 4]
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from benchmarks.common import machine
from benchmarks.substrate import _Stepper, supernet
from fnnjax.arch import build_model
from fnnjax.arch.select import random_selections, selection_of


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--width", type=int, default=36)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=4, help="train steps per call (a scan)")
    parser.add_argument("--mode", default="switch", choices=("switch", "switch_remat", "all"))
    parser.add_argument("--calls", type=int, default=160, help="calls with sampled selections")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for CI")
    args = parser.parse_args(argv)
    if args.quick:
        args.layers, args.width, args.batch, args.size, args.steps, args.calls = 1, 4, 8, 8, 1, 4
        args.mode = "all"
    shape = (args.size, args.size, 3)
    spec = supernet(args.width, args.layers, args.mode, shape)
    pick = selection_of(spec, {p: i % 6 for i, p in enumerate(selection_of(spec, {}))})
    population = random_selections(jax.random.key(1), spec, 64)
    sampled = [jax.tree_util.tree_map(lambda a, p=p: a[p], population) for p in range(64)]
    host = [jax.tree_util.tree_map(np.asarray, s) for s in sampled]
    stepper = _Stepper(build_model(spec), shape, args.batch, args.steps, arch=lambda i: pick)
    start = time.perf_counter()
    jax.block_until_ready(stepper())
    print(f"{args.layers} layers, mode {args.mode}, batch {args.batch}, width {args.width}, "
          f"{args.size}x{args.size} ({machine()}); compile + first call "
          f"{time.perf_counter() - start:.1f} s")  # fmt: skip
    results = {}
    runs = (("fixed", lambda i: pick, max(args.calls // 5, 2)),
            ("sampled", lambda i: sampled[i % 64], args.calls),
            ("fixed-again", lambda i: pick, max(args.calls // 5, 2)),
            ("sampled-host", lambda i: host[i % 64], args.calls),
            ("two-arcs", lambda i: sampled[i % 2], max(args.calls // 3, 2)))  # fmt: skip
    for name, arch, calls in runs:
        stepper.arch = arch
        times = []
        for _ in range(calls):
            start = time.perf_counter()
            jax.block_until_ready(stepper())
            times.append(time.perf_counter() - start)
        ms = np.asarray(times) / args.steps * 1e3
        results[name] = {"first5": ms[:5].tolist(), "median": float(np.median(ms)),
                         "last20_median": float(np.median(ms[-20:]))}  # fmt: skip
        print(f"  {name:13s} first5 {np.round(ms[:5], 2)} median {np.median(ms):.2f} "
              f"last-20 median {np.median(ms[-20:]):.2f} ms/step", flush=True)  # fmt: skip
    return results


if __name__ == "__main__":
    main()
