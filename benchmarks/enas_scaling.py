"""ENAS's child training on 1, 2, 4 and 8 devices: steps per second, side by side in one process.

The step of :func:`fnnjax.construct.enas.search` (the execution path ``mode="auto"`` picks on this
backend: the sampled path on CPU, the jitted supernet elsewhere; Nesterov SGD with L2 and
clipping, :func:`fnnjax.construct.enas.child_optimizer`) with each batch split over a mesh of
``n`` devices (:func:`fnnjax.train.sharding.make_mesh`), the parameters replicated: the data
parallelism a search runs with on several devices or hosts. For each device count, the same
``--arcs`` random arcs in turn, each for ``--warmup`` untimed steps (compiling its ops) and then
``--repeats`` timed ones; the median over the arcs of their median step gives steps per second.

On a CPU the devices are simulated (``--devices 8`` asks XLA for 8 CPU devices before JAX starts),
so they share the machine's cores: the table then shows what splitting a step costs or gains
(collectives, more and smaller programs, more of the cores kept busy), not a real scaling. On a
machine with several GPUs the same command measures real scaling (``--devices`` is then the
number of GPUs to use at most).

Usage::

    python -m benchmarks.enas_scaling                       # paper's size: 12 layers x 36, 32x32x3
    python -m benchmarks.enas_scaling --quick               # 4 layers x 16, 16x16x3, for a smoke test
    python -m benchmarks.enas_scaling --devices 8 --json runs/bench/enas_scaling.json
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--width", type=int, default=36)
    parser.add_argument("--size", type=int, default=32, help="image side")
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--arcs", type=int, default=5, help="random arcs, timed in turn")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per arc")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per arc first")
    parser.add_argument("--devices", type=int, default=8, help="the largest device count")
    parser.add_argument("--counts", type=int, nargs="+", default=(1, 2, 4, 8, 16),
                        help="device counts to time (those up to --devices)")
    parser.add_argument("--quick", action="store_true", help="a small net, for a smoke test")
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args()
    if args.quick:
        args.layers, args.width, args.size, args.batch, args.arcs, args.repeats = 4, 16, 16, 32, 2, 2
    return args


def _stepper(engine, state, data, rng, batch):
    """``step(selection, gradient)``: one child step of ``selection`` on a fresh random batch
    (through ``gradient``, the sampled path's, or the jitted supernet's when None); the state
    is carried from call to call."""
    box = {"state": state}

    def step(selection, gradient):
        state = box["state"]
        state = state.replace(collections={**state.collections, "arch": selection})
        order = rng.permutation(len(data[0]))[None, :batch]
        if gradient is None:
            state, metrics = engine.train_steps(state, *data, order)
        else:
            state, metrics = engine.train_steps_with(state, *data, order, gradient)
        box["state"] = state
        return state.params, metrics

    return step


def main() -> None:
    args = _parse()
    import jax  # noqa: PLC0415  (after the device count is set)

    if jax.config.jax_platforms in (None, "", "cpu") and "JAX_NUM_CPU_DEVICES" not in os.environ:
        jax.config.update("jax_num_cpu_devices", args.devices)
    import numpy as np  # noqa: PLC0415

    from benchmarks.common import machine, median_seconds, write_json  # noqa: PLC0415
    from fnnjax.arch import SampledNet, build_model  # noqa: PLC0415
    from fnnjax.construct import enas  # noqa: PLC0415
    from fnnjax.train import Engine, make_mesh, replicate  # noqa: PLC0415

    config = enas.SearchConfig(layers=args.layers, filters=args.width, batch_size=args.batch)
    execution = enas.resolve_execution(config.mode, config.update_stats)
    space = enas.macro_space(args.layers, args.width,
                             input_shape=(args.size, args.size, args.channels), num_classes=10,
                             mode="all" if execution == "sampled" else execution)  # fmt: skip
    model = build_model(space)
    net = SampledNet(space) if execution == "sampled" else None
    rng = np.random.default_rng(0)
    n_train = args.batch * 4
    x = rng.standard_normal((n_train, args.size, args.size, args.channels)).astype(np.float32)
    y = rng.integers(0, 10, n_train).astype(np.int32)
    arcs = np.asarray(enas.random_arcs(jax.random.key(1), args.layers, args.arcs))
    counts = [n for n in args.counts if n <= min(args.devices, jax.device_count())]
    print(f"{machine()}; {args.layers} layers x {args.width}, {args.size}x{args.size}x"
          f"{args.channels}, batch {args.batch}, execution {execution}")  # fmt: skip
    rows = []
    for n in counts:
        mesh = make_mesh(n)
        engine = Engine(model, enas.child_optimizer(config, 4), mesh)
        state = engine.init(jax.random.key(0), space.input_shape)
        data = replicate((x, y), mesh)
        step = _stepper(engine, state, data, rng, args.batch)
        times = []
        for arc in arcs:
            selection = enas.host_selection(arc, args.layers)
            gradient = None if net is None else net.gradient(selection)
            times.append(median_seconds(functools.partial(step, selection, gradient),
                                        repeats=args.repeats, warmup=args.warmup))  # fmt: skip
        median = statistics.median(times)  # of the arcs' medians
        rows.append({"devices": n, "median_step_s": median, "steps_per_s": 1.0 / median})
        print(f"{n} device(s): median step {median * 1e3:,.1f} ms, {1.0 / median:.3f} steps/s "
              f"({rows[0]['median_step_s'] / median:.2f}x the first row's rate)")  # fmt: skip
    write_json(args.json, {"args": vars(args), "execution": execution, "rows": rows})


if __name__ == "__main__":
    main()
