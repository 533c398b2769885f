"""SmoothInit (NHN section 2.2, after the DNP method it cites): smooth every 3x3 and 5x5 conv
kernel spatially with a 3x3 Gaussian filter after initialization.

The paper gives neither the Gaussian's sigma nor how the kernel's border is treated, and no code
exists for it or for the DNP paper it follows. Our reading, each a parameter: the filter is the
normalized 3x3 Gaussian ``g[i, j] ∝ exp(-(i² + j²) / (2 sigma²))``, ``i, j ∈ {-1, 0, 1}``, sigma 1
by default; each ``k x k`` kernel slice (one per input-output channel pair) is convolved with it
with zero padding and keeps its size (the kernel is zero outside its support), so a smoothed
kernel is a low-pass version of the initial one: its spatial standard deviation shrinks, which is
what lets DNP later tell the textured kernels that training grows from the flat ones it leaves.
Depthwise kernels (``[k, k, 1, c]``) are smoothed like any other (``depthwise=False`` skips them);
the scale is not restored (``rescale=True`` restores each layer's initial standard deviation).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from fnnjax.checks import check_int, check_number
from fnnjax.errors import ConfigError

__all__ = ["gaussian_filter", "smooth_kernel", "smooth_init", "smoothable_kernels"]


def gaussian_filter(sigma: float = 1.0, size: int = 3) -> np.ndarray:
    """The normalized ``size x size`` Gaussian (float64, sums to 1)."""
    check_number("sigma", sigma, above=0)
    check_int("size", size)
    if size % 2 == 0:
        raise ConfigError(f"size: expected an odd positive int, got {size!r}")
    r = np.arange(size) - size // 2
    g = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2.0 * sigma**2))
    return g / g.sum()


def smooth_kernel(kernel: jax.Array, sigma: float = 1.0, size: int = 3) -> jax.Array:
    """Each ``[kh, kw]`` slice of a conv kernel ``[kh, kw, cin, cout]`` convolved with the
    Gaussian (zero padding, same size): a depthwise convolution over the kernel's channel pairs."""
    if kernel.ndim != 4:
        raise ValueError(f"kernel: expected [kh, kw, cin, cout], got shape {kernel.shape}")
    kh, kw, cin, cout = kernel.shape
    g = jnp.asarray(gaussian_filter(sigma, size), kernel.dtype)
    slices = kernel.reshape(1, kh, kw, cin * cout)  # NHWC: the channel pairs as channels
    p = size // 2
    out = jax.lax.conv_general_dilated(
        slices, jnp.broadcast_to(g[:, :, None, None], (size, size, 1, cin * cout)),
        window_strides=(1, 1), padding=((p, p), (p, p)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=cin * cout,
        precision=jax.lax.Precision.HIGHEST)  # fmt: skip
    return out.reshape(kh, kw, cin, cout)


def smoothable_kernels(params: Mapping[str, Any], sizes: Sequence[int] = (3, 5),
                       depthwise: bool = True) -> list[tuple[str, ...]]:  # fmt: skip
    """Paths of the conv kernels SmoothInit smooths: square ``k x k`` kernels with ``k`` in
    ``sizes`` (depthwise ``[k, k, 1, c]`` ones too unless ``depthwise=False``), outside the head
    (a grouped-conv head covering a 3x3 or 5x5 map keeps its average-pooling start)."""
    return [path for path, leaf in traverse_util.flatten_dict(dict(params)).items()
            if _smoothable(path, getattr(leaf, "shape", ()), sizes, depthwise)]  # fmt: skip


def _smoothable(path: tuple[str, ...], shape: tuple[int, ...], sizes: Sequence[int],
                depthwise: bool) -> bool:  # fmt: skip
    if path[-1] != "kernel" or len(shape) != 4 or shape[0] != shape[1] or shape[0] not in sizes:
        return False
    if path[0] == "head":  # a grouped-conv head's pooling kernel is not a conv layer's
        return False
    return depthwise or not (shape[2] == 1 and shape[3] > 1)


def smooth_init(params: Mapping[str, Any], sigma: float = 1.0, *, sizes: Sequence[int] = (3, 5),
                depthwise: bool = True, rescale: bool = False) -> dict[str, Any]:  # fmt: skip
    """``params`` with every kernel of :func:`smoothable_kernels` smoothed (pure; the rest is
    returned as it was). ``rescale``: multiply each smoothed kernel so that its overall standard
    deviation is the initial one (beyond the paper)."""
    flat = traverse_util.flatten_dict(dict(params))
    for path, kernel in flat.items():
        if not _smoothable(path, getattr(kernel, "shape", ()), sizes, depthwise):
            continue
        smoothed = smooth_kernel(kernel, sigma)
        if rescale:
            smoothed = smoothed * (jnp.std(kernel) / jnp.maximum(jnp.std(smoothed), 1e-12))
        flat[path] = smoothed
    return traverse_util.unflatten_dict(flat)
