"""Per-channel featuremap statistics that a built model sows from inside jit
(``build_model(spec, collect_stats=...)``): what EnvelopeNets' restructuring reads."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["featuremap_stats"]


@dataclasses.dataclass(frozen=True)
class _StatsAt:
    """``collect_stats`` restricted to the modules at ``paths`` (``measure``: ``"conv"`` or
    ``"output"``): :func:`build_model`'s ``stats_at``."""

    measure: str
    paths: frozenset[str]


def _stats_measure(module: nn.Module) -> str | None:
    """Where ``module`` sows its statistics (``"conv"``, ``"output"``) or None, from its
    ``collect_stats`` hook and its path; None too when ``"intermediates"`` is not mutable."""
    hook = module.collect_stats
    if not hook or not module.is_mutable_collection("intermediates"):
        return None
    if isinstance(hook, _StatsAt):
        return hook.measure if "/".join(module.path) in hook.paths else None
    return "conv" if hook == "conv" else "output"


def featuremap_stats(y: jax.Array) -> dict[str, jax.Array]:
    """Per-channel statistics of a featuremap ``y: [batch, h, w, c]`` -> each ``[c]`` float32.

    ``featuremap_msq``: mean of ``y**2`` over batch and space; ``featuremap_var``: variance over
    batch and space, as ``E[y^2] - E[y]^2`` (clipped at 0; the single-pass form BatchNorm uses), so
    both come from one read of ``y`` and a training step pays little for them (BENCHMARKS.md).
    """
    yf = y.astype(jnp.float32)
    axes = tuple(range(yf.ndim - 1))
    msq = jnp.mean(yf * yf, axis=axes)
    mean = jnp.mean(yf, axis=axes)
    return {"featuremap_msq": msq, "featuremap_var": jnp.maximum(msq - mean * mean, 0.0)}
