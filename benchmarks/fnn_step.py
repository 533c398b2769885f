"""Benchmark: FNN training steps (FNN paper, sections 3.2-3.4 and 4.1), measured side by side.

Three measurements of one full training step (forward, backward, Adam update, input dropout;
``jax.jit``, ``jax.value_and_grad``, optax Adam), each the median of ``--repeats`` runs after
``--warmup`` runs, every run ended by ``jax.block_until_ready``:

(a) factored vs materialized path of the same FNN (default N = 5000 hidden neurons, 784 inputs,
    d = 256, k = 4, batch 128). The materialized path builds the ``[N, R + N]`` weight matrix (eq. 3)
    as the paper does; the factored path gets the l2 denominators from ``d x d`` Gram matrices
    (the QR form only where the Gram form would be inaccurate, ``fnnjax.floating.step``).
    Target: factored >= 8x faster on CPU.
(b) FNN-1024 (Table 1) vs the paper's dense baseline (2000-1500-1000-500, ``fnnjax.models``).
    Target: FNN-1024 / dense <= 1.0x.
(c) one factored training step with N = 100,000 hidden neurons, run in a fresh subprocess so its
    peak RSS is its own. (The materialized path cannot: W alone would be ~40 GB in float32.)

Usage::

    python3 benchmarks/fnn_step.py                 # full size (minutes on CPU)
    python3 benchmarks/fnn_step.py --quick         # tiny sizes, seconds
    python3 benchmarks/fnn_step.py --out bench.json --repeats 7

Ratios are meaningful on any machine; absolute times only with the device named (printed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

# On a GPU, XLA preallocates 75% of the memory in the first process that uses it, so the
# subprocess of (c) would find only a quarter free and fail at N = 1,000,000 on an 80 GB H100.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

from fnnjax.floating import fnn_1024, fnn_custom
from fnnjax.models import DenseBaseline, param_count


def make_train_step(model: Any, x: jax.Array, labels: jax.Array, seed: int = 0):
    """Initial params/opt state and a jitted Adam train step for any Flax model (dropout rng)."""
    params = jax.jit(model.init)(jax.random.key(seed), x[:1])["params"]
    optimizer = optax.adam(1e-3)
    opt_state = optimizer.init(params)

    def loss_fn(params, key):
        logits = model.apply({"params": params}, x, train=True, rngs={"dropout": key})
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    def train_step(params, opt_state, key):
        loss, grads = jax.value_and_grad(loss_fn)(params, key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return jax.jit(train_step, donate_argnums=(0, 1)), params, opt_state


def time_train_step(model: Any, x: jax.Array, labels: jax.Array, repeats: int, warmup: int) -> dict:
    """Median wall time of one train step (after compilation and ``warmup`` runs)."""
    step, params, opt_state = make_train_step(model, x, labels)
    num_params = param_count(params)
    start = time.perf_counter()
    params, opt_state, loss = step(params, opt_state, jax.random.key(0))
    jax.block_until_ready((params, opt_state, loss))
    first = time.perf_counter() - start
    for i in range(warmup):
        params, opt_state, loss = step(params, opt_state, jax.random.key(1 + i))
        jax.block_until_ready((params, opt_state, loss))
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        params, opt_state, loss = step(params, opt_state, jax.random.key(100 + i))
        jax.block_until_ready((params, opt_state, loss))
        times.append(time.perf_counter() - start)
    if not bool(jnp.isfinite(loss)):
        raise FloatingPointError(f"non-finite loss {float(loss)} in the benchmark")
    return {
        "median_s": statistics.median(times),
        "times_s": times,
        "first_call_s": first,
        "num_params": num_params,
    }


def data(batch: int, inputs: int, classes: int) -> tuple[jax.Array, jax.Array]:
    kx, ky = jax.random.split(jax.random.key(42))
    return (
        jax.random.uniform(kx, (batch, inputs), jnp.float32),
        jax.random.randint(ky, (batch,), 0, classes),
    )


def big_step(args: argparse.Namespace) -> dict:
    """(c): one factored train step at ``--big-hidden`` neurons; peak RSS of this process."""
    x, labels = data(args.batch, args.inputs, args.classes)
    model = fnn_custom(args.classes, (args.inputs,), num_hidden=args.big_hidden, dim=args.dim,
                       iterations=args.iterations, path="factored")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    result = time_train_step(model, x, labels, args.big_repeats, 0)
    result["peak_rss_before_mb"] = before  # jax + data, before the model exists
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    result["materialized_w_gb"] = (
        args.big_hidden * (args.inputs + args.big_hidden) * 4 / 1e9
    )
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=5000, help="N for (a)")
    parser.add_argument("--inputs", type=int, default=784, help="R (flattened input features)")
    parser.add_argument("--dim", type=int, default=256, help="embedding dimension d")
    parser.add_argument("--iterations", type=int, default=4, help="k")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--big-hidden", type=int, default=100_000, help="N for (c)")
    parser.add_argument("--skip-big", action="store_true", help="skip (c)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per step (median)")
    parser.add_argument("--big-repeats", type=int, default=2, help="timed runs for (c)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs after compiling")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds)")
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("--big-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.hidden, args.dim, args.batch, args.big_hidden = 512, 32, 32, 4096
        args.repeats, args.warmup = 3, 1

    if args.big_only:  # the subprocess of (c)
        print(json.dumps(big_step(args)))
        return {}

    env = {
        "device": str(jax.devices()[0].device_kind),
        "platform": jax.default_backend(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "python": platform.python_version(),
        "load_average": os.getloadavg(),
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
    }
    x, labels = data(args.batch, args.inputs, args.classes)
    shape = (args.inputs,)
    sizes = dict(num_hidden=args.hidden, dim=args.dim, iterations=args.iterations)
    results: dict[str, Any] = {"env": env, "args": vars(args)}

    print(f"# FNN train-step benchmark on {env['platform']} ({env['device']}), "
          f"{env['cpu_count']} CPUs, jax {env['jax']}", flush=True)
    results["factored"] = time_train_step(
        fnn_custom(args.classes, shape, path="factored", **sizes), x, labels, args.repeats,
        args.warmup)
    results["materialized"] = time_train_step(
        fnn_custom(args.classes, shape, path="materialized", **sizes), x, labels, args.repeats,
        args.warmup)
    results["fnn_1024"] = time_train_step(
        fnn_1024(args.classes, shape, **({"iterations": args.iterations})), x, labels,
        args.repeats, args.warmup)
    results["dense"] = time_train_step(
        DenseBaseline(num_classes=args.classes), x, labels, args.repeats, args.warmup)

    if not args.skip_big:
        cmd = [sys.executable, os.path.abspath(__file__), "--big-only",
               "--big-hidden", str(args.big_hidden), "--inputs", str(args.inputs),
               "--dim", str(args.dim), "--iterations", str(args.iterations),
               "--batch", str(args.batch), "--classes", str(args.classes),
               "--big-repeats", str(args.big_repeats)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            results["big"] = {"error": proc.stderr[-2000:]}
        else:
            results["big"] = json.loads(proc.stdout.strip().splitlines()[-1])

    ms = lambda r: 1e3 * r["median_s"]  # noqa: E731
    speedup = results["materialized"]["median_s"] / results["factored"]["median_s"]
    ratio = results["fnn_1024"]["median_s"] / results["dense"]["median_s"]
    results["summary"] = {"factored_speedup": speedup, "fnn1024_over_dense": ratio}
    a = f"N={args.hidden}, R={args.inputs}, d={args.dim}, k={args.iterations}, batch={args.batch}"
    lines = [
        "",
        "| measurement | setting | A (ms) | B (ms) | ratio | target |",
        "|---|---|---:|---:|---:|---|",
        f"| (a) factored (A) vs materialized (B) | {a} | {ms(results['factored']):.1f} | "
        f"{ms(results['materialized']):.1f} | {speedup:.1f}x faster | >= 8x |",
        f"| (b) FNN-1024 (A) vs dense baseline (B) | R={args.inputs}, d=256, k={args.iterations}, "
        f"batch={args.batch}; {results['fnn_1024']['num_params']:,} vs "
        f"{results['dense']['num_params']:,} params | {ms(results['fnn_1024']):.1f} | "
        f"{ms(results['dense']):.1f} | {ratio:.2f}x | <= 1.0x |",
    ]
    big = results.get("big")
    if big and "error" not in big:
        lines.append(
            f"| (c) factored, N={args.big_hidden:,} (A) | R={args.inputs}, d={args.dim}, "
            f"k={args.iterations}, batch={args.batch}; {big['num_params']:,} params | {ms(big):.1f} | "
            f"- | peak RSS {big['peak_rss_mb']:.0f} MB ({big['peak_rss_before_mb']:.0f} MB before the model) | completes (materialized W would be "
            f"{big['materialized_w_gb']:.0f} GB) |"
        )
    elif big:
        lines.append(f"| (c) factored, N={args.big_hidden:,} | FAILED | - | - | - | see JSON |")
    table = "\n".join(lines)
    results["table"] = table
    print(table)
    print(f"\nmedian of {args.repeats} runs after {args.warmup} warm-up runs "
          f"((c): {args.big_repeats} runs); load average at start {env['load_average']}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2, default=str)
    return results


if __name__ == "__main__":
    main()
