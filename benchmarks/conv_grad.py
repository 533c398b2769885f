"""XLA:CPU's convolution kernel gradient and max-pool gradient against ``fnnjax.arch.cpu_ops``.

Side by side in one process, median of ``--repeats`` after warm-up, one jitted function each:

* for 1x1, 3x3 and 5x5 convolutions (stride 1, SAME): the forward, XLA's kernel gradient (a
  convolution over the whole featuremap), the matmul kernel gradient
  (:func:`fnnjax.arch.cpu_ops.kernel_grad`) and the input gradient;
* a 3x3 stride-1 max-pool's gradient: XLA's ``select_and_scatter`` against shifted comparisons
  (:func:`fnnjax.arch.cpu_ops.max_pool_shifted_grad`);
* with PyTorch installed (optional), the same conv (with BN and ReLU) and max-pool forward +
  backward in eager PyTorch, for scale.

Usage::

    python -m benchmarks.conv_grad                 # ENAS's search size: batch 128, 32x32x36
    python -m benchmarks.conv_grad --quick
"""

from __future__ import annotations

import argparse
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import machine, median_seconds, write_json
from fnnjax.arch.cpu_ops import kernel_grad, max_pool_shifted_grad

DIMS = ("NHWC", "HWIO", "NHWC")


def _torch_times(batch, size, width, repeats):
    try:
        import torch  # noqa: PLC0415
    except ImportError:
        return {}
    x = torch.randn(batch, width, size, size, requires_grad=True)
    out = {}
    for name, module in {
        "conv1x1": torch.nn.Conv2d(width, width, 1, bias=False),
        "conv3x3": torch.nn.Conv2d(width, width, 3, padding=1, bias=False),
        "conv5x5": torch.nn.Conv2d(width, width, 5, padding=2, bias=False),
        "maxpool": torch.nn.MaxPool2d(3, 1, 1),
    }.items():
        layers = [module] if name == "maxpool" else [module, torch.nn.BatchNorm2d(width),
                                                      torch.nn.ReLU()]  # fmt: skip
        net = torch.nn.Sequential(*layers)

        def run(net=net):
            y = net(x)
            (y * y).sum().backward()

        for _ in range(2):
            run()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        out[f"torch_{name}_fwd_bwd"] = float(np.median(times))
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--width", type=int, default=36)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.size, args.width, args.repeats = 4, 8, 4, 2
    rng = np.random.default_rng(0)
    shape = (args.batch, args.size, args.size, args.width)
    x = jnp.asarray(rng.normal(size=shape).astype(np.float32))
    g = jnp.asarray(rng.normal(size=shape).astype(np.float32))
    seconds = {}

    def timed(fn, *a):
        return median_seconds(lambda: fn(*a), repeats=args.repeats)

    for k in (1, 3, 5):
        w = jnp.asarray(rng.normal(size=(k, k, args.width, args.width)).astype(np.float32))
        p = (k - 1) // 2
        pads = ((p, p), (p, p))

        def conv(w, x, pads=pads):
            return jax.lax.conv_general_dilated(x, w, (1, 1), pads, dimension_numbers=DIMS)

        forward = jax.jit(conv)
        xla_kernel = jax.jit(lambda w, x, g: jax.vjp(lambda w: conv(w, x), w)[1](g)[0])
        matmul_kernel = jax.jit(lambda x, g, k=k, pads=pads: kernel_grad(
            x, g, (k, k, args.width, args.width), (1, 1), pads))  # fmt: skip
        input_grad = jax.jit(lambda w, x, g: jax.vjp(lambda x: conv(w, x), x)[1](g)[0])
        np.testing.assert_allclose(matmul_kernel(x, g), xla_kernel(w, x, g), rtol=1e-3,
                                   atol=1e-2 * args.batch)  # fmt: skip
        seconds[f"conv{k}x{k}_forward"] = timed(forward, w, x)
        seconds[f"conv{k}x{k}_kernel_grad_xla"] = timed(xla_kernel, w, x, g)
        seconds[f"conv{k}x{k}_kernel_grad_matmul"] = timed(matmul_kernel, x, g)
        seconds[f"conv{k}x{k}_input_grad"] = timed(input_grad, w, x, g)
    pads = ((1, 1), (1, 1))
    xla_pool = jax.jit(jax.grad(lambda x: jnp.sum(nn.max_pool(x, (3, 3), (1, 1), pads) ** 2)))
    shifted = jax.jit(jax.grad(lambda x: jnp.sum(max_pool_shifted_grad(x, (3, 3), (1, 1), pads)
                                                 ** 2)))  # fmt: skip
    np.testing.assert_array_equal(shifted(x), xla_pool(x))
    seconds["maxpool_fwd_bwd_xla"] = timed(xla_pool, x)
    seconds["maxpool_fwd_bwd_shifted"] = timed(shifted, x)
    seconds.update(_torch_times(args.batch, args.size, args.width, args.repeats))
    lines = [f"kernel and max-pool gradients, batch {args.batch}, {args.size}x{args.size}x"
             f"{args.width} ({machine()})"]  # fmt: skip
    lines += [f"  {name:34s} {1e3 * t:9.1f} ms" for name, t in seconds.items()]
    table = "\n".join(lines)
    print(table)
    payload = {"config": vars(args), "seconds": seconds, "table": table}
    write_json(args.out, payload)
    return payload


if __name__ == "__main__":
    main()
