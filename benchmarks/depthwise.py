"""Depthwise convolution on the current backend: XLA's grouped convolution against shifts.

Forward + backward (``jax.value_and_grad`` of a sum of squares, jitted) of a depthwise ``k x k``
convolution of ``[batch, size, size, channels]``, computed by ``lax.conv_general_dilated`` with
``feature_group_count = channels`` and by :func:`fnnjax.arch.cpu_ops.depthwise_conv_by_shifts`
(the sum of ``k*k`` shifted, scaled copies; what fnnjax's depthwise units use on CPU). Median of
``--repeats`` after warm-up, side by side in one process.

Usage::

    python -m benchmarks.depthwise [--batch 50] [--size 28] [--channels 16] [--kernels 3 5 7]
        [--repeats 10] [--quick] [--out results.json]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

from benchmarks.common import machine, median_seconds, write_json
from fnnjax.arch.cpu_ops import depthwise_conv_by_shifts


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--kernels", type=int, nargs="+", default=[3, 5, 7])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for CI")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.size, args.channels, args.kernels, args.repeats = 2, 8, 4, [3], 2
    x = jax.random.normal(jax.random.key(0), (args.batch, args.size, args.size, args.channels))
    rows = {}
    for k in args.kernels:
        w = jax.random.normal(jax.random.key(1), (k, k, 1, args.channels))
        p = (k - 1) // 2
        seconds = {}
        for name, conv in (("grouped_conv", jax.lax.conv_general_dilated),
                           ("shifts", depthwise_conv_by_shifts)):  # fmt: skip

            def loss(x, w, conv=conv, p=p):
                y = conv(x, w, (1, 1), ((p, p), (p, p)), dimension_numbers=("NHWC", "HWIO", "NHWC"),
                         feature_group_count=args.channels)  # fmt: skip
                return jnp.sum(y * y)

            step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
            jax.block_until_ready(step(x, w))
            seconds[name] = median_seconds(lambda step=step, w=w: step(x, w), repeats=args.repeats)
        rows[k] = {**seconds, "ratio": seconds["grouped_conv"] / seconds["shifts"]}
    table = "\n".join(
        [f"depthwise conv forward + backward, [{args.batch}, {args.size}, {args.size}, "
         f"{args.channels}] ({machine()}, {jax.default_backend()})"]
        + [f"  {k}x{k}: grouped conv {1e3 * r['grouped_conv']:8.2f} ms, shifts "
           f"{1e3 * r['shifts']:8.2f} ms, grouped / shifts {r['ratio']:.2f}x" for k, r in rows.items()]
    )  # fmt: skip
    print(table)
    payload = {"config": vars(args), "rows": rows, "table": table}
    write_json(args.out, payload)
    return payload


if __name__ == "__main__":
    main()
