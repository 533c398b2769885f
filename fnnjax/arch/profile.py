"""Model profiler: parameters, FLOPs, activation memory and inference latency (templates paper
Table 2 and Figs. 3-5).

:func:`profile` measures one model:

* ``params``: trainable scalars (BN scale/bias included, running statistics excluded), from
  ``jax.eval_shape`` of ``init`` (no memory spent); for a spec it equals the analytic count.
* ``flops``: analytic, per example, ``2 x`` multiply-accumulates of every conv and dense layer
  (the usual convention; padding taps included) and of an FNN head's per-example products
  (:func:`fnnjax.floating.forward_macs` for a batch of one). ``flops_valid`` excludes taps that
  land on zero padding, which is what XLA's cost model counts for convolutions.
  ``flops_compiled`` is ``jax.jit(apply).lower(...).compile().cost_analysis()["flops"] / batch``
  (None where the backend gives no cost analysis); it also counts BN, ReLU, pooling and
  additions, so it is slightly above ``flops_valid``; with an FNN head also the head's work on
  its parameters alone (normalizations, folds: once per call, divided by the batch here), which
  can put it far above.
* ``memory``: from ``compiled.memory_analysis()`` of either the inference forward
  (``memory_mode="inference"``) or one training gradient computation (``"train"``: forward with
  batch statistics, softmax cross-entropy, ``jax.grad`` w.r.t. params; the closest analogue of the
  paper's "memory footprint per batch"). ``activation_bytes`` is ``temp_size_in_bytes``, the
  scratch XLA allocates for intermediate tensors (activations, saved residuals, gradients in
  flight); ``argument_bytes`` (params, batch stats, batch) and ``output_bytes`` are reported beside
  it. ``peak_bytes`` = argument + output + temp - alias. Executables that are only analysed, never
  run (the training gradient; the forward when latency is not measured) are compiled without
  XLA's backend optimizations (:data:`~fnnjax.arch.variables.UNOPTIMIZED`): that halves their compile
  time on CPU and leaves ``memory_analysis`` and ``cost_analysis`` unchanged (HLO-level; tested).
* ``latency_s``: median wall time of the jitted inference forward on a batch (after ``warmup``
  calls; each call ends with ``jax.block_until_ready``), ``repeats`` timings. Variables come from
  :func:`~fnnjax.arch.variables.host_init` (He-normal kernels, unit BN), so init is never compiled;
  the forward timed is compiled with default optimizations.

:func:`profile_table` prints a list of profiles as a markdown table.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from fnnjax.arch.build import build_model
from fnnjax.arch.shapes import infer_layers
from fnnjax.arch.spec import Spec
from fnnjax.arch.variables import UNOPTIMIZED, _host_values, _init_keys
from fnnjax.checks import check_choice, check_int

__all__ = ["Profile", "analytic_counts", "profile", "profile_table"]


@dataclasses.dataclass(frozen=True)
class Profile:
    """What :func:`profile` measured (see module docstring for the definitions)."""

    name: str
    batch: int
    params: int
    flops: int | None
    flops_valid: int | None
    flops_compiled: float | None
    memory_mode: str | None
    memory: dict[str, int] | None
    latency_s: float | None
    latency_repeats: int
    device: str

    @property
    def activation_bytes(self) -> int | None:
        return None if self.memory is None else self.memory["activation_bytes"]


def analytic_counts(spec: Spec) -> dict[str, int]:
    """``{"params", "flops", "flops_valid", "macs"}`` per example, from shape inference alone.

    Sums :func:`~fnnjax.arch.shapes.infer_layers`' units, an FNN head included (its parameters
    by the FNN paper's Table 1 formula, its products by :func:`fnnjax.floating.forward_macs`):
    ``params`` equals the model's trainable scalars (BatchNorm running statistics excluded).
    """
    layers = infer_layers(spec)
    macs = sum(u.macs for u in layers)
    return {
        "params": sum(u.params for u in layers),
        "macs": macs,
        "flops": 2 * macs,
        "flops_valid": 2 * sum(u.valid_macs for u in layers),
    }


def _cost_flops(compiled: Any) -> float | None:
    try:
        ca = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - backends without a cost model
        return None
    if isinstance(ca, list | tuple):
        ca = ca[0] if ca else None
    if not ca or "flops" not in ca:
        return None
    return float(ca["flops"])


def _memory(compiled: Any) -> dict[str, int] | None:
    try:
        ma = compiled.memory_analysis()
    except Exception:  # noqa: BLE001
        return None
    if ma is None:
        return None
    temp = int(ma.temp_size_in_bytes)
    arg = int(ma.argument_size_in_bytes)
    out = int(ma.output_size_in_bytes)
    alias = int(getattr(ma, "alias_size_in_bytes", 0))
    return {
        "activation_bytes": temp,
        "argument_bytes": arg,
        "output_bytes": out,
        "peak_bytes": arg + out + temp - alias,
    }


def profile(
    spec_or_model: Spec | nn.Module,
    input_shape: Sequence[int] | None = None,
    batch: int = 64,
    *,
    name: str | None = None,
    repeats: int = 10,
    warmup: int = 2,
    memory_mode: str | None = "train",
    latency: bool = True,
    key: jax.Array | None = None,
    progress: Callable[[str], None] | None = None,
) -> Profile:
    """Profiles a spec or any Flax model following the fnnjax convention.

    Args:
        spec_or_model: a :class:`~fnnjax.arch.spec.Spec` (analytic FLOPs available) or a module.
        input_shape: one example's shape; defaults to ``spec.input_shape``.
        batch: batch size of the compiled functions (the paper uses 64).
        name: label for tables (defaults to ``spec.name`` or the module class).
        repeats, warmup: timed and untimed forward calls for the latency median.
        memory_mode: ``"train"``, ``"inference"`` or ``None`` (skip).
        latency: whether to time the forward at all.
        key: PRNG key for init and inputs.
        progress: called with a one-line note before each slow stage (compiling the forward,
            compiling the training step, timing) and with a time estimate once the first forward
            call has been timed; ``fnnjax profile`` prints them, since a large configuration takes
            minutes on a CPU.
    """
    note = progress or (lambda message: None)
    started = time.perf_counter()

    def elapsed() -> str:
        return _duration(time.perf_counter() - started)

    check_choice("memory_mode", memory_mode, ("train", "inference", None))
    check_int("repeats", repeats)
    spec = spec_or_model if isinstance(spec_or_model, Spec) else None
    model = build_model(spec) if spec is not None else spec_or_model
    if input_shape is None:
        if spec is None:
            raise ValueError("input_shape: required when profiling a module")
        input_shape = spec.input_shape
    input_shape = tuple(input_shape)
    key = jax.random.key(0) if key is None else key
    k_init, k_x = jax.random.split(key)
    x = jax.random.normal(k_x, (batch, *input_shape), jnp.float32)

    def init(keys):
        return model.init(keys, x[:1], train=False)

    abstract = jax.eval_shape(init, _init_keys(k_init))
    params = sum(int(a.size) for a in jax.tree_util.tree_leaves(abstract.get("params", {})))
    counts = analytic_counts(spec) if spec is not None else None

    def forward(variables, x):
        return model.apply(variables, x, train=False)

    fwd = jax.jit(forward)
    note(f"compiling the forward pass (batch {batch})")
    compiled = fwd.lower(abstract, x).compile(None if latency else UNOPTIMIZED)
    flops_compiled = _cost_flops(compiled)
    if flops_compiled is not None:
        flops_compiled /= batch

    memory = None
    if memory_mode == "inference":
        memory = _memory(compiled)
    elif memory_mode == "train":
        y = jnp.zeros((batch,), jnp.int32)

        def loss(params, rest, x, y, k):
            logits, _ = model.apply(
                {"params": params, **rest},
                x,
                train=True,
                rngs={"dropout": k},
                mutable=["batch_stats"],
            )
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        rest = {c: v for c, v in abstract.items() if c != "params"}
        grad = jax.jit(jax.grad(loss))
        note(f"compiling one training step for its memory analysis ({elapsed()} so far)")
        memory = _memory(grad.lower(abstract["params"], rest, x, y, k_x).compile(UNOPTIMIZED))

    latency_s = None
    if latency:  # timing does not depend on the values: host_init's, filled without compiling
        variables = _host_values(abstract)
        note(f"timing the forward pass: {max(0, warmup)} warm-up + {repeats} timed calls "
             f"({elapsed()} so far)")  # fmt: skip
        for i in range(max(0, warmup)):
            t0 = time.perf_counter()
            jax.block_until_ready(compiled(variables, x))
            if i == 0:
                left = (time.perf_counter() - t0) * (max(0, warmup) - 1 + repeats)
                note(f"one forward call takes {_duration(time.perf_counter() - t0)}: about "
                     f"{_duration(left)} to go")  # fmt: skip
        times = []
        for i in range(repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(compiled(variables, x))
            times.append(time.perf_counter() - t0)
            if i == 0 and warmup <= 0:
                note(f"one forward call takes {_duration(times[0])}: about "
                     f"{_duration(times[0] * (repeats - 1))} to go")  # fmt: skip
        latency_s = statistics.median(times)

    dev = jax.devices()[0]
    return Profile(
        name=name or (spec.name if spec is not None and spec.name else type(model).__name__),
        batch=batch,
        params=params,
        flops=None if counts is None else counts["flops"],
        flops_valid=None if counts is None else counts["flops_valid"],
        flops_compiled=flops_compiled,
        memory_mode=memory_mode,
        memory=memory,
        latency_s=latency_s,
        latency_repeats=repeats if latency else 0,
        device=f"{dev.platform}:{getattr(dev, 'device_kind', '')}",
    )


def _duration(seconds: float) -> str:
    """``0.4 s``, ``12 s``, ``3 min 5 s``."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    return f"{int(seconds // 60)} min {int(seconds % 60)} s"


def _fmt(x: float | None, scale: float, digits: int = 2) -> str:
    return "-" if x is None else f"{x / scale:.{digits}f}"


def profile_table(profiles: Sequence[Profile]) -> str:
    """Markdown table: params (M), GFLOPs per example (analytic / XLA), memory (MB), latency."""
    lines = [
        "| model | params (M) | GFLOPs/example | XLA GFLOPs/example | activation memory (MB) "
        "| latency (ms/batch) | batch | device |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for p in profiles:
        mem = None if p.memory is None else p.memory["activation_bytes"]
        mem_s = _fmt(mem, 2**20, 1) + (f" ({p.memory_mode})" if mem is not None else "")
        lines.append(
            f"| {p.name} | {_fmt(p.params, 1e6)} | {_fmt(p.flops, 1e9, 3)} | "
            f"{_fmt(p.flops_compiled, 1e9, 3)} | {mem_s} | {_fmt(p.latency_s, 1e-3, 2)} | "
            f"{p.batch} | {p.device} |"
        )
    return "\n".join(lines)
