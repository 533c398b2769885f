"""Profiler: params and FLOPs agree with analytic counts; memory and latency are measured."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
import pytest

from fnnjax.arch import zoo
from fnnjax.arch.build import build_model
from fnnjax.arch.profile import _cost_flops, _memory, analytic_counts, profile, profile_table
from fnnjax.arch.spec import Conv, Head, Pool, SepConv, Spec, Stage
from fnnjax.arch.variables import UNOPTIMIZED


def small():
    return Spec(
        name="small",
        input_shape=(8, 8, 3),
        num_classes=4,
        stem=(Conv(filters=8),),
        stages=(
            Stage(blocks=(Conv(filters=16, bias=True), SepConv(filters=12, stride=2), Pool())),
            Stage(blocks=(zoo.bottleneck(4),)),
        ),
        head=Head(),
    )


def test_analytic_counts_by_hand():
    spec = Spec(
        input_shape=(6, 6, 2), num_classes=3, stages=(Stage(blocks=(Conv(filters=4, kernel=3),)),)
    )
    c = analytic_counts(spec)
    assert c["params"] == 3 * 3 * 2 * 4 + 2 * 4 + 4 * 3 + 3
    assert c["macs"] == 3 * 3 * 2 * 4 * 36 + 4 * 3
    # valid taps per axis for a 3-tap kernel over 6 positions with padding 1: 6 * 3 - 2 = 16
    assert c["flops_valid"] == 2 * (16 * 16 * 2 * 4 + 4 * 3)


def test_profile_agrees_with_analytic_counts_and_xla():
    spec = small()
    p = profile(spec, batch=4, repeats=2, warmup=1)
    c = analytic_counts(spec)
    assert p.params == c["params"]
    assert p.flops == c["flops"] and p.flops_valid == c["flops_valid"]
    if p.flops_compiled is not None:
        # XLA counts conv/dense multiply-adds on valid taps plus a few elementwise ops per value.
        assert 1.0 <= p.flops_compiled / p.flops_valid < 1.3
    assert p.memory_mode == "train" and p.memory["activation_bytes"] > 0
    assert p.memory["peak_bytes"] >= p.memory["argument_bytes"]
    assert p.latency_s is not None and p.latency_s > 0 and p.latency_repeats == 2


def test_profile_of_a_plain_module_and_the_table():
    class Tiny(nn.Module):
        @nn.compact
        def __call__(self, x, *, train=False):
            return nn.Dense(5)(x.reshape((x.shape[0], -1)))

    p = profile(Tiny(), (4, 4, 1), batch=2, memory_mode="inference", latency=False)
    assert p.params == 16 * 5 + 5 and p.flops is None and p.latency_s is None
    if p.flops_compiled is not None:
        assert p.flops_compiled == pytest.approx(2 * 16 * 5, rel=0.2)
    table = profile_table([p])
    assert table.splitlines()[0].startswith("| model | params (M)")
    assert "| Tiny | 0.00 |" in table
    with pytest.raises(ValueError, match=r"memory_mode"):
        profile(small(), memory_mode="gpu")
    with pytest.raises(ValueError, match=r"input_shape: required"):
        profile(Tiny())


def test_unoptimized_compiles_leave_the_memory_and_cost_analyses_unchanged():
    """profile() compiles what it only analyses (the training gradient; the forward when nothing
    is timed) with UNOPTIMIZED, which must not change the numbers it reports."""
    spec = small()
    timed = profile(spec, batch=4, repeats=1, warmup=0, memory_mode="inference")
    untimed = profile(spec, batch=4, memory_mode="inference", latency=False)
    assert untimed.memory == timed.memory and untimed.flops_compiled == timed.flops_compiled

    model = build_model(spec)
    x, y = jnp.zeros((4, *spec.input_shape)), jnp.zeros((4,), jnp.int32)
    v = jax.eval_shape(lambda k: model.init(k, x, train=False), jax.random.key(0))

    def loss(params, batch_stats, x, y):
        logits, _ = model.apply({"params": params, "batch_stats": batch_stats}, x, train=True,
                                mutable=["batch_stats"])  # fmt: skip
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    lowered = jax.jit(jax.grad(loss)).lower(v["params"], v["batch_stats"], x, y)
    default, unoptimized = lowered.compile(), lowered.compile(UNOPTIMIZED)
    assert _memory(unoptimized) == _memory(default) and _memory(default)["activation_bytes"] > 0
    assert _cost_flops(unoptimized) == _cost_flops(default)
    trained = profile(spec, batch=4, latency=False)  # "train": the gradient, compiled UNOPTIMIZED
    assert trained.memory == _memory(default)
