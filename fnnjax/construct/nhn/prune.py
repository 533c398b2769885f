"""DNP kernel pruning (NHN section 2.2): after training, every ``k x k`` kernel slice of the 3x3 and
5x5 convs (one per input-output channel pair) whose spatial standard deviation is under a
threshold is "practically flat" and is pruned, through the per-kernel masks of the substrate
(``masks/<unit>/kernel_mask``, ``[cin / groups, cout]``; :mod:`fnnjax.arch.build`).

The paper removes "nearly 85% of the kernels based on standard deviation thresholds" without
saying how the thresholds are set. Two readings, both here: a global quantile (one threshold over
all prunable kernels that prunes the fraction ``ratio`` of them: large layers with flat kernels
lose more) and a per-layer quantile (every layer loses ``ratio`` of its kernels); or given
thresholds (one value, or one per layer). The standard deviation is the population one (ddof 0)
over the ``k x k`` positions. Kernels already masked stay masked, count as pruned and rank
below every other (so ``ratio`` is the total share pruned). Kernels
with one input channel per filter (``[k, k, 1, c]``: depthwise convs, or a conv reading a
one-channel image) are not pruned by default: there one kernel slice is a whole filter, not a
connection (``depthwise=True`` includes them).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from fnnjax.checks import check_number
from fnnjax.construct.nhn.smooth import smoothable_kernels

__all__ = ["PruneResult", "dnp", "kernel_std", "prunable_kernels"]


def kernel_std(kernel) -> np.ndarray:
    """``[cin, cout]``: the standard deviation of each ``[kh, kw]`` slice of ``kernel``."""
    k = np.asarray(kernel, np.float64)
    if k.ndim != 4:
        raise ValueError(f"kernel: expected [kh, kw, cin, cout], got shape {k.shape}")
    return k.reshape(-1, *k.shape[2:]).std(axis=0)


def prunable_kernels(params: Mapping[str, Any], sizes: Sequence[int] = (3, 5),
                     depthwise: bool = False) -> dict[str, np.ndarray]:  # fmt: skip
    """``{unit path: kernel}`` of the kernels DNP ranks. The unit path is the kernel's path
    without its ``conv/kernel`` tail, the path of the unit's ``kernel_mask`` in ``"masks"``."""
    flat = traverse_util.flatten_dict(dict(params))
    return {"/".join(path[:-2]): np.asarray(flat[path])
            for path in smoothable_kernels(params, sizes, depthwise)
            if len(path) >= 2 and path[-2] == "conv"}  # only fnnjax.arch conv units have a mask


@dataclasses.dataclass(frozen=True)
class PruneResult:
    """What :func:`dnp` pruned.

    Attributes:
        masks: the ``"masks"`` collection with the pruned kernels' entries at 0.
        thresholds: ``{unit: threshold}`` used for each layer.
        layers: ``{unit: {"kernels", "pruned", "ratio", "params", "params_pruned"}}``.
        total: the same summed over the layers, plus ``"params_ratio_all"``: the pruned
            parameters over every parameter of the model (1x1 convs, BN, head included).
    """

    masks: dict[str, Any]
    thresholds: dict[str, float]
    layers: dict[str, dict[str, float]]
    total: dict[str, float]


def dnp(params: Mapping[str, Any], masks: Mapping[str, Any], *, ratio: float | None = None,
        threshold: float | Mapping[str, float] | None = None, per_layer: bool = False,
        sizes: Sequence[int] = (3, 5), depthwise: bool = False,
        exclude: Sequence[str] = ()) -> PruneResult:  # fmt: skip
    """Prunes the flat kernels (module docstring): exactly one of ``ratio`` (a quantile: global,
    or per layer with ``per_layer=True``) and ``threshold`` (a std value, or ``{unit: value}``).
    ``exclude``: unit paths (``"stem0"``) left out of the ranking and never pruned.

    A kernel is pruned when its standard deviation is strictly below its layer's threshold (a
    quantile threshold is the smallest std that prunes at least ``ratio`` of the kernels ranked,
    so ties at it are pruned together). Pure: returns new masks, ``params`` untouched.
    """
    if (ratio is None) == (threshold is None):
        raise ValueError("dnp: give exactly one of ratio (a fraction to prune) and threshold "
                         "(a standard deviation, or one per layer)")  # fmt: skip
    if ratio is not None:
        check_number("ratio", ratio, at_least=0.0, at_most=1.0)
    every = prunable_kernels(params, sizes, depthwise)
    unknown = sorted(set(exclude) - set(every))
    if unknown:
        raise ValueError(f"exclude: {unknown} are no prunable units (they are "
                         f"{sorted(every)[:6]}{', ...' if len(every) > 6 else ''})")  # fmt: skip
    kernels = {u: k for u, k in every.items() if u not in set(exclude)}
    if not kernels:
        hint = ""
        if not depthwise and set(prunable_kernels(params, sizes, True)) - set(exclude):
            hint = ("; its only such kernels are depthwise (a MobileNet's, separable convs'): "
                    "pass depthwise=True to prune them")  # fmt: skip
        raise ValueError(f"params: no {'/'.join(map(str, sizes))} conv kernels to prune{hint}")
    flat_masks = {"/".join(k[:-1]): v for k, v in traverse_util.flatten_dict(dict(masks)).items()
                  if k[-1] == "kernel_mask"}  # fmt: skip
    missing = sorted(set(kernels) - set(flat_masks))
    if missing:
        raise ValueError(f"masks: no kernel_mask for {missing[:3]}; build the model with "
                         "use_masks=True and pass its 'masks' collection")  # fmt: skip
    kept = {u: np.asarray(flat_masks[u]) != 0 for u in kernels}  # already pruned: stays pruned
    # Already pruned kernels rank first (std -inf), so a ratio is the total share pruned.
    stds = {u: np.where(kept[u], kernel_std(k), -np.inf) for u, k in kernels.items()}

    def quantile_threshold(values: np.ndarray) -> float:
        if values.size == 0 or ratio == 0:
            return -np.inf
        order = np.sort(values)
        n = int(np.ceil(ratio * values.size - 1e-9))  # 0.07 * 100 is 7.000000000000001
        return float(np.nextafter(order[n - 1], np.inf)) if n else -np.inf

    if threshold is not None:
        if isinstance(threshold, Mapping):
            unknown, missing = sorted(set(threshold) - set(kernels)), sorted(set(kernels) - set(threshold))
            if unknown or missing:
                raise ValueError(f"threshold: expected one value per prunable layer "
                                 f"{sorted(kernels)}; missing {missing}, unknown {unknown}")  # fmt: skip
            thresholds = {u: float(threshold[u]) for u in kernels}
        else:
            thresholds = dict.fromkeys(kernels, float(threshold))
    elif per_layer:
        thresholds = {u: quantile_threshold(stds[u].ravel()) for u in kernels}
    else:
        t = quantile_threshold(np.concatenate([s.ravel() for s in stds.values()]))
        thresholds = dict.fromkeys(kernels, t)

    new_masks = traverse_util.flatten_dict(dict(masks))
    layers, total = {}, {"kernels": 0, "pruned": 0, "params": 0, "params_pruned": 0}
    for u, kernel in kernels.items():
        keep = kept[u] & (stds[u] >= thresholds[u])
        old = flat_masks[u]
        new_masks[(*u.split("/"), "kernel_mask")] = jnp.asarray(keep, jnp.asarray(old).dtype)
        area = kernel.shape[0] * kernel.shape[1]
        row = {"kernels": int(keep.size), "pruned": int((~keep).sum()),
               "params": int(kernel.size), "params_pruned": int((~keep).sum()) * area}  # fmt: skip
        layers[u] = {**row, "ratio": row["pruned"] / row["kernels"]}
        for key in total:
            total[key] += row[key]
    every = sum(int(np.asarray(v).size) for v in traverse_util.flatten_dict(dict(params)).values())
    summary = {**total, "ratio": total["pruned"] / total["kernels"],
               "params_ratio_all": total["params_pruned"] / every}  # fmt: skip
    return PruneResult(traverse_util.unflatten_dict(new_masks), thresholds, layers, summary)
