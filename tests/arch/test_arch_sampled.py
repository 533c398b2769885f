"""The sampled execution path (``fnnjax.arch.SampledNet``): a sampled arc trains exactly as in the
jitted supernet, computing only its own ops, and new arcs compile nothing."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnnjax.arch import Choice, Conv, Dropout, Head, SampledNet, Spec, Stage, build_model
from fnnjax.arch.build import SHIFTS_MIN_ELEMENTS
from fnnjax.construct import enas
from fnnjax.errors import ConfigError
from fnnjax.train import Engine, augmentation_for

L = 4  # reductions after layers 0 and 1: segments [0], [1], [2, 3]


def _arcs(n, seed, layers=L):
    """Seeded random arcs whose first has every skip on (the last layer reads layer 0 across
    both reductions) and whose layer 0 takes every op in turn (sep3x3, conv3x3, conv5x5,
    sep5x5, maxpool, avgpool: layer 0 is the one above the shift threshold below)."""
    arcs = np.array(enas.random_arcs(jax.random.key(seed), layers, n))
    arcs[:, 0] = [[1, 0, 2, 3, 5, 4][t % 6] for t in range(n)]
    arcs[0] = [v if i in [k + k * (k - 1) // 2 for k in range(layers)] else 1
               for i, v in enumerate(arcs[0])]  # fmt: skip
    return arcs


def _pair(space, tx, shape, augment):
    model = build_model(space)
    engines = [Engine(model, tx, augment=augment) for _ in range(2)]
    states = [e.init(jax.random.key(0), shape) for e in engines]
    return engines, states


def _max_diff(a, b):
    diffs = jax.tree_util.tree_map(lambda u, v: float(jnp.max(jnp.abs(u - v))), a, b)
    return max(jax.tree_util.tree_leaves(diffs))


CASES = {
    # A dense head with dropout: the head's dropout draws the supernet's random numbers.
    "paper-global-avg-dropout": dict(skips="paper", clip_mode="global", head_pool="avg", width=4,
                                     size=8, batch=16, dropout=0.5),
    # Stage 0's depthwise convs run as shifts and its dense convs take the matmul kernel
    # gradient (>= SHIFTS_MIN_ELEMENTS), stage 1's and 2's XLA's own.
    "released-tensor-grouped-above-the-shift-threshold": dict(
        skips="released", clip_mode="tensor", head_pool="grouped", width=12, size=12, batch=16),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_sampled_steps_equal_the_jitted_supernets(case):
    c = CASES[case]
    if case.endswith("above-the-shift-threshold"):
        assert c["batch"] * c["size"] ** 2 * c["width"] >= SHIFTS_MIN_ELEMENTS
        assert c["batch"] * (c["size"] // 2) ** 2 * c["width"] < SHIFTS_MIN_ELEMENTS
    shape = (c["size"], c["size"], 1)
    space = enas.macro_space(L, c["width"], input_shape=shape, num_classes=10, mode="all",
                             skips=c["skips"], head_pool=c["head_pool"])  # fmt: skip
    if c.get("dropout"):
        space = dataclasses.replace(space, head=Head(kind="dense", dropout=c["dropout"]))
    config = enas.SearchConfig(layers=L, filters=c["width"], clip_mode=c["clip_mode"],
                               child_clip=0.5)  # a bound the gradients exceed: clipping acts
    (jitted, composed), (s1, s2) = _pair(space, enas.child_optimizer(config, 4), shape,
                                         augmentation_for("fashion_mnist", shape))  # fmt: skip
    net = SampledNet(space)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4 * c["batch"], *shape)).astype(np.float32)
    y = rng.integers(0, 10, 4 * c["batch"]).astype(np.int32)
    for t, arc in enumerate(_arcs(6, seed=1)):
        sel = enas.host_selection(arc, L)
        s1 = s1.replace(collections={**s1.collections, "arch": sel})
        s2 = s2.replace(collections={**s2.collections, "arch": sel})
        order = np.arange(c["batch"])[None] + c["batch"] * (t % 4)
        s1, m1 = jitted.train_steps(s1, x, y, order)
        s2, m2 = composed.train_steps_with(s2, x, y, order, net.gradient(sel))
        np.testing.assert_allclose(m2["loss"], m1["loss"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(m2["accuracy"], m1["accuracy"])
    assert int(s1.step) == int(s2.step) == 6
    assert _max_diff(s1.params, s2.params) < 1e-5
    assert _max_diff(s1.collections["batch_stats"], s2.collections["batch_stats"]) < 1e-5
    assert _max_diff(s1.opt_state, s2.opt_state) < 1e-5
    # Unselected candidates kept their statistics but decayed (L2) and carried momentum.
    init = jitted.init(jax.random.key(0), shape)
    offsets = [k + k * (k - 1) // 2 for k in range(L)]
    used = {(k, int(a[off])) for a in _arcs(6, seed=1) for k, off in enumerate(offsets)}
    k, op = next((k, op) for k in range(1, L) for op in range(6) if (k, op) not in used)
    path = f"s{min(k, 2)}b{max(k - 2, 0)}"  # layers 0 | 1 | 2, 3
    bs0, bs1 = init.collections["batch_stats"][path], s2.collections["batch_stats"][path]
    assert _max_diff(bs0[f"c{op}_0"], bs1[f"c{op}_0"]) == 0.0
    assert _max_diff(init.params[path][f"c{op}_0"], s2.params[path][f"c{op}_0"]) > 0.0


def test_arcs_21_to_100_compile_nothing_and_score_as_in_the_supernet():
    events = []
    watching = [False]

    def listen(event, duration, **_):
        if watching[0] and event in ("/jax/core/compile/jaxpr_trace_duration",
                                     "/jax/core/compile/backend_compile_duration"):  # fmt: skip
            events.append(event)

    jax.monitoring.register_event_duration_secs_listener(listen)  # inert once the test ends
    shape, layers = (8, 8, 1), 6  # reductions after layers 1 and 3
    space = enas.macro_space(layers, 4, input_shape=shape, num_classes=10, mode="all")
    model = build_model(space)
    engine = Engine(model, enas.child_optimizer(enas.SearchConfig(layers=layers), 10),
                    augment=augmentation_for("digits", shape))  # fmt: skip
    state = engine.init(jax.random.key(0), shape)
    net = SampledNet(space)
    x = np.random.default_rng(0).normal(size=(64, *shape)).astype(np.float32)
    y = np.arange(64, dtype=np.int32) % 10
    arcs = np.asarray(enas.random_arcs(jax.random.key(3), layers, 100))
    for i, arc in enumerate(arcs):
        watching[0] = i >= 20
        sel = enas.host_selection(arc, layers)
        state, _ = engine.train_steps_with(state, x, y, np.arange(8)[None] + 8 * (i % 8),
                                           net.gradient(sel))  # fmt: skip
        jax.block_until_ready(net.apply(state.variables(), sel, x[:16]))  # scoring pieces too
    jax.block_until_ready(state.params)
    watching[0] = False
    assert events == [], f"{len(events)} compile events after arc 20"
    # Bounded by ops x shapes x positions: 6 ops x 3 stage shapes, merges per position, ...
    assert net.compiles() < 120
    # Rewards: each arc on its own batch, as the supernet scores them (inference mode).
    variables = state.variables()
    xs = np.stack([np.roll(x[:16], i, axis=0) for i in range(5)])
    ys = np.stack([np.roll(y[:16], i) for i in range(5)])
    ref = enas.arc_accuracies(model, variables, jnp.asarray(arcs[:5]), xs, ys, layers)
    np.testing.assert_allclose(enas.sampled_accuracies(net, variables, arcs[:5], xs, ys, layers),
                               ref)  # fmt: skip
    logits = model.apply({**variables, "arch": enas.arc_to_selection(arcs[0], layers)}, xs[0])
    np.testing.assert_allclose(net.apply(variables, enas.host_selection(arcs[0], layers), xs[0]),
                               logits, rtol=1e-5, atol=1e-5)  # fmt: skip
    # One shared batch: a repeated arc is scored once, with the same result.
    shared = enas.sampled_accuracies(net, variables, np.concatenate([arcs[:3], arcs[:2]]),
                                     x[:16], y[:16], layers)  # fmt: skip
    np.testing.assert_allclose(shared[3:], shared[:2])


def test_unsupported_specs_are_refused_in_one_line():
    base = enas.macro_space(3, 4, input_shape=(8, 8, 1), num_classes=10)
    every = enas.macro_space(3, 4, input_shape=(8, 8, 1), num_classes=10, update_stats="all")
    with pytest.raises(ValueError, match="update_stats='all' needs every candidate computed"):
        SampledNet(every)
    dropout = Spec(input_shape=(8, 8, 1), num_classes=10, stem=(Conv(filters=4),),
                   stages=(Stage(blocks=(Choice(candidates=((Conv(filters=4), Dropout(rate=0.1)),
                                                            (Conv(filters=4),))),)),),
                   head=Head())  # fmt: skip
    with pytest.raises(ValueError, match="holds dropout"):
        SampledNet(dropout)
    SampledNet(base)  # fine
    engine = Engine(build_model(base, collect_stats=True), enas.child_optimizer(
        enas.SearchConfig(layers=3), 1))  # fmt: skip
    state = engine.init(jax.random.key(0), (8, 8, 1))
    with pytest.raises(ConfigError, match="sows statistics"):
        engine.train_steps_with(state, np.zeros((8, 8, 8, 1), np.float32), np.zeros(8, np.int32),
                                np.arange(8)[None], lambda *a: None)  # fmt: skip


def test_auto_execution_follows_a_fixed_table():
    assert enas.resolve_execution("auto", backend="cpu") == "sampled"
    assert enas.resolve_execution("auto", backend="gpu") == "switch"
    assert enas.resolve_execution("auto", "all", backend="cpu") == "all"
    assert enas.resolve_execution("switch_remat", backend="cpu") == "switch_remat"
    with pytest.raises(ValueError, match="update_stats='all'"):
        enas.resolve_execution("sampled", "all")
    with pytest.raises(ValueError, match="mode: expected one of"):
        enas.resolve_execution("fast")
