"""The dynamic-capacity driver's probe batch: a fixed set of ``probe_size`` training examples
(chosen by the seed) on which the network's loss, outputs and unit saliencies are measured, in
inference mode (no dropout, BatchNorm's running statistics), each jitted once per network
structure (:mod:`~fnnjax.construct.capacity.driver`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

if TYPE_CHECKING:
    from fnnjax.construct.capacity.driver import DynamicConfig

__all__ = ["Probe"]


class Probe:
    """The probe batch's loss, outputs and unit saliencies (``config``'s measure), jitted once
    per network structure (the ``keep`` structures used last stay compiled: a refused change's
    network must not evict the current one, whose saliency the next consultation measures
    again)."""

    keep = 3

    def __init__(self, data: Any, objective: Any, config: DynamicConfig, seed: int) -> None:
        order = np.random.default_rng([seed, 11]).permutation(len(data.train))[: config.probe_size]
        self.x, self.y = np.asarray(data.train.x[order]), np.asarray(data.train.y[order])
        self.objective, self.config = objective, config
        self._cache: dict[str, tuple[Callable, Callable]] = {}

    def _fns(self, spec: Any) -> tuple[Callable, Callable]:
        from fnnjax.arch import build_model, init_variables, to_json  # noqa: PLC0415
        from fnnjax.construct.capacity import saliency as sal  # noqa: PLC0415

        key = to_json(spec)
        if key in self._cache:
            self._cache[key] = self._cache.pop(key)  # the most recently used last
        else:
            cfg, objective = self.config, self.objective
            gated = cfg.measured_by == "gate"
            model = build_model(spec, use_masks=gated)
            masks = None
            if gated:  # every mask is ones at init: shapes suffice
                shapes = init_variables(model, jax.random.key(0), spec.input_shape, abstract=True)
                masks = jax.tree_util.tree_map(lambda a: np.ones(a.shape, a.dtype), shapes["masks"])

            def forward(params, rest, x, y):
                if gated and "masks" not in rest:
                    rest = {**rest, "masks": masks}
                out = model.apply({**rest, "params": params}, x, train=False)
                return objective.loss(out, y).mean(), out

            def loss(params, rest, x, y):
                return forward(params, rest, x, y)[0]

            def saliency(params, rest, x, y, k):
                if gated:  # the same loss as a function of the units' output gates (all ones)
                    gates = sal.unit_gates(spec, masks)
                    f = lambda g: loss(params, {**rest, "masks": sal.with_gates(masks, g)}, x, y)  # noqa: E731
                    w = gates
                else:
                    f, w = (lambda p: loss(p, rest, x, y)), params
                if cfg.saliency == "magnitude":
                    per = sal.magnitude_saliency(w)
                elif cfg.saliency == "taylor":
                    per = sal.taylor_saliency(w, jax.grad(f)(w))
                else:
                    h = sal.hutchinson_diagonal(f, w, k, num_samples=cfg.hutchinson_samples,
                                                chunk=cfg.hutchinson_chunk)  # fmt: skip
                    per = sal.obd_saliency(w, h)
                return per if gated else sal.unit_saliency(spec, per)

            self._cache[key] = (jax.jit(forward), jax.jit(saliency))
            while len(self._cache) > self.keep:
                self._cache.pop(next(iter(self._cache)))
        return self._cache[key]

    def _forward(self, spec: Any, variables: dict[str, Any]) -> tuple[Any, Any]:
        rest = {k: v for k, v in variables.items() if k != "params"}
        return self._fns(spec)[0](variables["params"], rest, self.x, self.y)

    def loss(self, spec: Any, variables: dict[str, Any]) -> float:
        """The probe batch's mean loss (inference mode)."""
        return float(self._forward(spec, variables)[0])

    def outputs(self, spec: Any, variables: dict[str, Any]) -> np.ndarray:
        """The network's outputs on the probe batch (inference mode): ``[probe_size, outputs]``."""
        return np.asarray(self._forward(spec, variables)[1])

    def saliency(self, spec: Any, variables: dict[str, Any], key: jax.Array) -> dict[str, np.ndarray]:
        rest = {k: v for k, v in variables.items() if k != "params"}
        out = self._fns(spec)[1](variables["params"], rest, self.x, self.y, key)
        return {k: np.asarray(v, np.float64) for k, v in jax.device_get(out).items()}
