"""Convolutions whose kernel gradient XLA:CPU computes slowly, with that gradient as matmuls.

XLA:CPU differentiates a convolution with respect to its kernel by a convolution whose window is
the whole featuremap, which it runs far below its forward and input-gradient convolutions: on
ENAS's search size (batch 128, 32x32x36) the kernel gradient took 140 ms for a 1x1 conv, 481 ms
for a 3x3 and 972 ms for a 5x5, against 9 ms, 167 ms and 421 ms as the matmuls below, and 45 ms
for the 3x3's forward (BENCHMARKS.md, ``python -m benchmarks.conv_grad``). PyTorch's oneDNN
kernels do the whole 3x3 conv, BN and ReLU forward and backward in 115 ms, so this gradient
alone made fnnjax's CPU training steps several times slower than an eager port.

:func:`conv_matmul_kernel_grad` is ``lax.conv_general_dilated`` with a custom VJP: the input
gradient is XLA's own (a forward-style convolution, fast), and the kernel gradient of a ``k x k``
kernel is ``k*k`` matmuls, one per kernel offset, of the shifted (strided) input against the
output gradient, contracting over batch and space. Used by the conv units on the CPU backend
(dense convolutions, ``feature_group_count == 1``) on inputs of at least
:data:`~fnnjax.arch.build.SHIFTS_MIN_ELEMENTS` elements; the result equals XLA's gradient up to
float32 rounding (the sums run in another order).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

__all__ = [
    "conv_matmul_kernel_grad",
    "depthwise_conv_by_shifts",
    "max_pool_shifted_grad",
    "takes_matmul_kernel_grad",
]

_DIMENSIONS = ("NHWC", "HWIO", "NHWC")


def takes_matmul_kernel_grad(lhs: jax.Array, rhs: jax.Array, padding: Any, groups: int,
                             lhs_dilation=None, rhs_dilation=None, dimension_numbers=None
                             ) -> bool:  # fmt: skip
    """Whether :func:`conv_matmul_kernel_grad` handles this convolution (else: XLA's own): 2-D,
    NHWC / HWIO dimension numbers given explicitly (as Flax passes them; lax's default, None, is
    NCHW / OIHW), explicit padding, no dilation, no groups."""
    if lhs.ndim != 4 or rhs.ndim != 4 or groups != 1 or isinstance(padding, str):
        return False
    if any(d != 1 for d in (*(lhs_dilation or ()), *(rhs_dilation or ()))):
        return False
    if dimension_numbers is None:
        return False
    nhwc = jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, _DIMENSIONS)
    return jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) == nhwc


def conv_matmul_kernel_grad(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding: Any,
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers: Any = None,
    feature_group_count: int = 1,
    precision: Any = None,
) -> jax.Array:
    """``lax.conv_general_dilated`` (NHWC / HWIO, as Flax calls it) whose kernel gradient is
    computed by matmuls (module docstring); any convolution it does not handle
    (:func:`takes_matmul_kernel_grad`) goes to ``lax.conv_general_dilated`` unchanged."""
    if not takes_matmul_kernel_grad(lhs, rhs, padding, feature_group_count, lhs_dilation,
                                    rhs_dilation, dimension_numbers):  # fmt: skip
        return jax.lax.conv_general_dilated(
            lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
            rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
            feature_group_count=feature_group_count, precision=precision)  # fmt: skip
    pads = tuple(tuple(int(v) for v in p) for p in padding)
    return _conv(lhs, rhs, tuple(int(s) for s in window_strides), pads, precision)


def _plain(lhs, rhs, strides, pads, precision):
    return jax.lax.conv_general_dilated(lhs, rhs, strides, pads, dimension_numbers=_DIMENSIONS,
                                        precision=precision)  # fmt: skip


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv(lhs, rhs, strides, pads, precision):
    return _plain(lhs, rhs, strides, pads, precision)


def _conv_fwd(lhs, rhs, strides, pads, precision):
    return _plain(lhs, rhs, strides, pads, precision), (lhs, rhs)


def _conv_bwd(strides, pads, precision, residuals, g):
    lhs, rhs = residuals
    # The input gradient is XLA's (a forward-style convolution): the transpose of the conv as a
    # linear function of its input (no forward recomputed).
    transpose = jax.linear_transpose(lambda x: _plain(x, rhs, strides, pads, precision), lhs)
    (d_lhs,) = transpose(g)
    return d_lhs, kernel_grad(lhs, g, rhs.shape, strides, pads, precision)


_conv.defvjp(_conv_fwd, _conv_bwd)


def kernel_grad(lhs: jax.Array, g: jax.Array, kernel_shape: Sequence[int],
                strides: Sequence[int], pads: Sequence[Sequence[int]],
                precision: Any = None) -> jax.Array:  # fmt: skip
    """The gradient of a convolution's ``[kh, kw, cin, cout]`` kernel from its input ``lhs``
    ``[n, h, w, cin]`` and output gradient ``g`` ``[n, oh, ow, cout]``: for every kernel offset,
    the input window that offset reads (shifted, strided) contracted with ``g`` over batch and
    space."""
    kh, kw, _, _ = kernel_shape
    (pt, pb), (pl, pr) = pads
    x = jnp.pad(lhs, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    n, oh, ow, _ = g.shape
    sh, sw = strides
    accumulate = jnp.promote_types(jnp.result_type(lhs, g), jnp.float32)
    rows = []
    for i in range(kh):
        row = []
        for j in range(kw):
            window = jax.lax.slice(x, (0, i, j, 0), (n, i + (oh - 1) * sh + 1,
                                                     j + (ow - 1) * sw + 1, x.shape[3]),
                                   (1, sh, sw, 1))  # fmt: skip
            row.append(jax.lax.dot_general(window, g, (((0, 1, 2), (0, 1, 2)), ((), ())),
                                           precision=precision, preferred_element_type=accumulate))  # fmt: skip
        rows.append(jnp.stack(row))
    return jnp.stack(rows).astype(jnp.result_type(lhs, g))


def max_pool_shifted_grad(x: jax.Array, window: Sequence[int], strides: Sequence[int],
                          pads: Sequence[Sequence[int]]) -> jax.Array:  # fmt: skip
    """``flax.linen.max_pool`` (NHWC, explicit padding) whose gradient is computed by shifted
    comparisons instead of XLA's ``select_and_scatter``, which XLA:CPU runs slowly (a 3x3
    stride-1 max-pool's forward and backward on batch 128, 32x32x36: 233 ms against 40 ms
    shifted, and 80 ms for PyTorch's). The gradient of each output goes to the first maximum of
    its window in row-major order, as ``select_and_scatter`` breaks ties."""
    return _max_pool(x, tuple(int(w) for w in window), tuple(int(s) for s in strides),
                     tuple(tuple(int(v) for v in p) for p in pads))  # fmt: skip


def _reduce_max(x, window, strides, pads):
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, *window, 1), (1, *strides, 1),
                                 ((0, 0), *pads, (0, 0)))  # fmt: skip


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _max_pool(x, window, strides, pads):
    return _reduce_max(x, window, strides, pads)


def _max_pool_fwd(x, window, strides, pads):
    y = _reduce_max(x, window, strides, pads)
    return y, (x, y)


def _max_pool_bwd(window, strides, pads, residuals, g):
    x, y = residuals
    (pt, pb), (pl, pr) = pads
    xp = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=-jnp.inf)
    n, oh, ow, c = y.shape
    sh, sw = strides
    found = jnp.zeros(y.shape, bool)
    total = None
    zero = jnp.zeros((), g.dtype)
    for i in range(window[0]):
        for j in range(window[1]):
            seen = jax.lax.slice(xp, (0, i, j, 0), (n, i + (oh - 1) * sh + 1,
                                                    j + (ow - 1) * sw + 1, c), (1, sh, sw, 1))  # fmt: skip
            hit = (seen == y) & ~found
            found = found | hit
            part = jax.lax.pad(jnp.where(hit, g, zero), zero, (
                (0, 0, 0), (i, xp.shape[1] - i - (oh - 1) * sh - 1, sh - 1),
                (j, xp.shape[2] - j - (ow - 1) * sw - 1, sw - 1), (0, 0, 0)))  # fmt: skip
            total = part if total is None else total + part
    return (total[:, pt : pt + x.shape[1], pl : pl + x.shape[2], :],)


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


def depthwise_conv_by_shifts(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding: Any,
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers: Any = None,
    feature_group_count: int = 1,
    precision: Any = None,
) -> jax.Array:
    """``lax.conv_general_dilated`` (NHWC / HWIO, as Flax calls it) with a depthwise conv computed
    as a sum of ``k*k`` shifted, channel-scaled copies of the input.

    XLA:CPU runs grouped convolutions (``feature_group_count == channels``) far below its dense
    convolutions: a depthwise forward + backward on ``[50, 28, 28, 16]`` is 9x faster as shifts
    for 3x3 and 3x for 7x7 (BENCHMARKS.md, ``python -m benchmarks.depthwise``), and separable
    convs are in every EnvelopeNet cell and ENAS layer. Used for depthwise units on the CPU backend only
    (accelerators have fast depthwise kernels), on inputs of at least :data:`SHIFTS_MIN_ELEMENTS`
    elements: the ``k*k`` shifts compile slower (a 7x7's forward + backward: 2.3 s against
    0.1 s), which a short run on a small featuremap never wins back. Any other convolution goes to
    ``lax.conv_general_dilated`` unchanged. The result equals the convolution's up to float32
    rounding (the sum runs in another order).
    """
    c = lhs.shape[-1]
    pads = padding if not isinstance(padding, str) else None
    plain = (lhs.ndim != 4 or rhs.ndim != 4 or feature_group_count != c or rhs.shape[2:] != (1, c)
             or pads is None or any(d != 1 for d in (*(lhs_dilation or ()), *(rhs_dilation or ()))))  # fmt: skip
    if plain:
        return jax.lax.conv_general_dilated(
            lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
            rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
            feature_group_count=feature_group_count, precision=precision)  # fmt: skip
    (pt, pb), (pl, pr) = pads
    x = jnp.pad(lhs, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    kh, kw = rhs.shape[:2]
    sh, sw = window_strides
    oh, ow = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
    out = None
    for i in range(kh):
        for j in range(kw):
            patch = jax.lax.slice(x, (0, i, j, 0), (x.shape[0], i + (oh - 1) * sh + 1,
                                                    j + (ow - 1) * sw + 1, c), (1, sh, sw, 1))  # fmt: skip
            term = patch * rhs[i, j, 0].astype(patch.dtype)
            out = term if out is None else out + term
    return out
