"""What dynamic capacity costs: a saliency consultation and a structure change, against an epoch.

The network is the Fashion-MNIST classifier of ``experiments/dynamic_capacity.py`` (a residual
MLP on flattened 28x28 images: a Dense(64) stem, 2 residual blocks of 16 hidden units, a linear
head), trained by Adam at batch 128; 60,000 / 128 = 468 steps make an epoch. Side by side in one
process, median of ``--repeats`` after warm-up:

* **step**: one jitted training step (:class:`fnnjax.train.Engine`, a scan of ``--steps``);
  the epoch is ``steps_per_epoch`` of them.
* **consultation**: the driver's saliency on its probe batch (512 examples), compiled: OBD on
  the units' gates with 128 Hutchinson vectors (the default), OBD summed over parameters,
  Taylor on gates, magnitude.
* **change** (re-jit included): widen a residual body by 8 units
  (:func:`fnnjax.construct.capacity.apply_changes`, the optimizer state moved, the probe loss
  measured before and after), then compile the new network's training step and saliency and run
  each once: what ``train_dynamic`` pays per change besides the checkpoint. Every repeat widens
  to a new width, so nothing comes from a compilation cache.

Usage::

    python -m benchmarks.capacity [--repeats 5] [--quick] [--out results.json]
"""

from __future__ import annotations

import argparse
import time

import jax
import optax

from benchmarks.common import machine, median_seconds, write_json
from benchmarks.substrate import _Stepper
from fnnjax.arch import analytic_counts, build_model, init_variables
from fnnjax.construct import capacity as cp
from fnnjax.construct.capacity.driver import _Probe
from fnnjax.train import Dataset, Split, get_objective


def _probe_data(shape, n: int, classes: int):
    import numpy as np  # noqa: PLC0415

    rng = np.random.default_rng(0)
    split = Split(rng.normal(size=(n, *shape)).astype(np.float32),
                  rng.integers(0, classes, size=n).astype(np.int32))  # fmt: skip
    return Dataset("random", split, split, split, classes, tuple(shape), (0.0,), (1.0,), "generated")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=16)
    parser.add_argument("--blocks", type=int, default=2)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps-per-epoch", type=int, default=468, help="60,000 / 128")
    parser.add_argument("--steps", type=int, default=20, help="train steps per timed call (a scan)")
    parser.add_argument("--probe", type=int, default=512)
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for CI")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    if args.quick:
        args.width, args.hidden, args.blocks, args.batch, args.steps = 8, 4, 1, 16, 2
        args.steps_per_epoch, args.probe, args.samples, args.repeats = 10, 32, 8, 1
    shape = (1, 1, 784)
    spec = cp.residual_mlp_spec(shape, 10, width=args.width, hidden=args.hidden, blocks=args.blocks)
    tx = optax.adam(1e-3)
    stepper = _Stepper(build_model(spec), shape, args.batch, args.steps, tx=tx)
    step = median_seconds(stepper, repeats=args.repeats) / args.steps
    epoch = step * args.steps_per_epoch
    data = _probe_data(shape, args.probe, 10)
    objective = get_objective("classification")
    variables = init_variables(build_model(spec), jax.random.key(0), shape)
    consult = {}
    for name, kwargs in (("obd, gate (default)", {}), ("obd, parameters", {"unit_measure": "parameters"}),
                         ("taylor, gate", {"saliency": "taylor"}),
                         ("magnitude", {"saliency": "magnitude"})):  # fmt: skip
        config = cp.DynamicConfig(hutchinson_samples=args.samples,
                                  hutchinson_chunk=min(32, args.samples), probe_size=args.probe,
                                  **kwargs)  # fmt: skip
        probe = _Probe(data, objective, config, 0)
        consult[name] = median_seconds(lambda p=probe: p.saliency(spec, variables, jax.random.key(1)),
                                       repeats=args.repeats)  # fmt: skip
    config = cp.DynamicConfig(hutchinson_samples=args.samples, hutchinson_chunk=min(32, args.samples),
                              probe_size=args.probe)  # fmt: skip
    probe = _Probe(data, objective, config, 0)
    probe.saliency(spec, variables, jax.random.key(1))  # the old network's functions, compiled
    opt_state = tx.init(variables["params"])
    changes = []
    warm = 0 if args.quick else 1
    for r in range(args.repeats + warm):  # the first is warm-up (imports, first traces)
        width = args.hidden + 8 * (r + 1)
        start = time.perf_counter()
        plan = [cp.Change("widen", "s0b0/body0", width, "benchmark")]
        new_vars, _, (rec,) = cp.apply_changes(plan, spec, variables, opt_state, tx, config=config,
                                               loss=probe.loss)  # fmt: skip
        new_spec = cp.driver._spec_of(rec)
        new = _Stepper(build_model(new_spec), shape, args.batch, args.steps, tx=tx)
        jax.block_until_ready(new())
        jax.block_until_ready(probe.saliency(new_spec, new_vars, jax.random.key(1)))
        changes.append(time.perf_counter() - start)
    timed = changes[warm:]
    change = sorted(timed)[len(timed) // 2]
    lines = [
        f"residual MLP 784-{args.width} x{args.blocks} blocks of {args.hidden} "
        f"({analytic_counts(spec)['params']:,} params), batch {args.batch}, probe {args.probe}, "
        f"{args.samples} Hutchinson vectors ({machine()}, {jax.default_backend()})",
        f"  train step          {1e3 * step:9.3f} ms; epoch of {args.steps_per_epoch} steps "
        f"{epoch:.3f} s",
    ]  # fmt: skip
    lines += [f"  consultation, {k:20s} {1e3 * v:9.1f} ms = {v / epoch:.3f} epochs" for k, v in consult.items()]
    lines.append(f"  change (widen by 8, re-jit of step and saliency) {change:.2f} s = "
                 f"{change / epoch:.2f} epochs")  # fmt: skip
    table = "\n".join(lines)
    print(table)
    payload = {"config": vars(args), "step_seconds": step, "epoch_seconds": epoch,
               "consultation_seconds": consult, "change_seconds": change, "table": table}  # fmt: skip
    write_json(args.out, payload)
    return payload


if __name__ == "__main__":
    main()
