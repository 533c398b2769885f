"""Choice blocks and selections: a population over the "arch" collection shares one set of
weights, evaluates with one compile, and materializes to plain specs that compute the same."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fnnjax.arch import (
    Choice,
    Conv,
    Head,
    Pool,
    Spec,
    Stage,
    build_model,
    from_json,
    notation,
    to_json,
)
from fnnjax.arch.build import init_variables
from fnnjax.arch.select import (
    choice_blocks,
    materialize,
    materialize_variables,
    random_selections,
    selection_of,
)
from fnnjax.construct.enas import layer_ops
from fnnjax.train import Engine, TrainState, load_dataset, read_stats

C = 6
ENAS_OPS = layer_ops(C)  # the six ENAS candidates, 1x1 conv first


def supernet(mode="auto"):
    return Spec(input_shape=(8, 8, 1), num_classes=4, stem=(Conv(filters=C),),
                stages=(Stage(blocks=(Choice(candidates=ENAS_OPS, mode=mode),
                                      Choice(candidates=((Pool(window=3, stride=1, padding=1),),
                                                         (Conv(filters=C),)), mode=mode,
                                             skips=(-1,)))),),
                head=Head())  # fmt: skip


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic", limit_test=128)


@pytest.fixture(scope="module")
def trained(data):
    """The auto-mode supernet trained on three selections: ``(spec, engine, state)``."""
    spec = supernet()
    return (spec, *_trained(spec, data))


def _trained(spec, data, steps=6):
    engine = Engine(build_model(spec), optax.adam(3e-3), eval_batch_size=64)
    state = engine.init(jax.random.key(0), data.input_shape)
    x, y = jnp.asarray(data.train.x), jnp.asarray(data.train.y)
    for s in range(3):  # train a few selections so every candidate's weights and BN move
        pick = selection_of(spec, {p: (s * 2 + i) % n for i, (p, n) in
                                   enumerate(choice_blocks(spec).items())})  # fmt: skip
        state = state.replace(collections={**state.collections, "arch": pick})
        state, _ = engine.train_steps(state, x, y, np.arange(steps * 32).reshape(steps, 32))
    return engine, state


def test_the_ir_holds_choice_blocks():
    spec = supernet()
    assert from_json(to_json(spec)) == spec
    assert notation(spec).startswith(f"{C} || <{C}k1>{C}|{C}k1>S{C}|")
    assert choice_blocks(spec) == {"s0b0": 6, "s0b1": 2}
    with pytest.raises(ValueError, match=r"candidates: every candidate must give one output shape"):
        Spec(input_shape=(8, 8, 1), num_classes=4,
             stages=(Stage(blocks=(Choice(candidates=((Conv(filters=3),), (Conv(filters=4),))),)),))  # fmt: skip
    with pytest.raises(ValueError, match=r"blocks\[0\].mode: expected one of 'auto', 'switch', 'switch_remat', 'all'"):
        Spec(input_shape=(8, 8, 1), num_classes=4,
             stages=(Stage(blocks=(Choice(candidates=ENAS_OPS, mode="some"),)),))  # fmt: skip


@pytest.mark.parametrize("mode", ["switch", "all"])
def test_only_the_selected_candidate_trains_and_updates_its_batch_statistics(data, mode):
    spec = supernet(mode)
    engine = Engine(build_model(spec), optax.adam(1e-2))
    state = engine.init(jax.random.key(0), data.input_shape)
    before = jax.device_get(state)
    pick = selection_of(spec, {"s0b0": 2, "s0b1": 1})
    state = state.replace(collections={**state.collections, "arch": pick})
    x, y = jnp.asarray(data.train.x), jnp.asarray(data.train.y)
    state, _ = engine.train_steps(state, x, y, np.arange(64).reshape(2, 32))
    after = jax.device_get(state)
    for k in range(6):
        changed_p = not np.array_equal(before.params["s0b0"][f"c{k}_0"]["conv"]["kernel"],
                                       after.params["s0b0"][f"c{k}_0"]["conv"]["kernel"])  # fmt: skip
        changed_s = not np.array_equal(before.batch_stats["s0b0"][f"c{k}_0"]["bn"]["mean"],
                                       after.batch_stats["s0b0"][f"c{k}_0"]["bn"]["mean"])  # fmt: skip
        assert changed_p == changed_s == (k == 2), k


def test_update_stats_all_moves_every_candidates_statistics_but_trains_the_selected_only(data):
    spec = supernet("all")
    every = dataclasses.replace(spec, stages=(Stage(blocks=tuple(
        dataclasses.replace(b, update_stats="all", mode="auto") for b in spec.stages[0].blocks)),))
    assert from_json(to_json(every)) == every and "+bn" in notation(every)
    assert '"update_stats"' not in to_json(spec)  # at its default: files read as before
    engine = Engine(build_model(every), optax.adam(1e-2))
    state = engine.init(jax.random.key(0), data.input_shape)
    before = jax.device_get(state)
    state = state.replace(collections={**state.collections,
                                       "arch": selection_of(every, {"s0b0": 2, "s0b1": 1})})  # fmt: skip
    x, y = jnp.asarray(data.train.x), jnp.asarray(data.train.y)
    after = jax.device_get(engine.train_steps(state, x, y, np.arange(64).reshape(2, 32))[0])
    for k in range(6):
        unit = f"c{k}_0"
        assert not np.array_equal(before.batch_stats["s0b0"][unit]["bn"]["mean"],
                                  after.batch_stats["s0b0"][unit]["bn"]["mean"]), k  # fmt: skip
        trained = not np.array_equal(before.params["s0b0"][unit]["conv"]["kernel"],
                                     after.params["s0b0"][unit]["conv"]["kernel"])  # fmt: skip
        assert trained == (k == 2), k
    with pytest.raises(ValueError, match=r"mode: expected 'all' or 'auto' with update_stats='all'"):
        dataclasses.replace(every, stages=(Stage(blocks=(Choice(candidates=ENAS_OPS, mode="switch",
                                                                update_stats="all"),)),))  # fmt: skip


def test_statistics_of_a_choice_block_are_those_of_its_selected_output(data):
    spec = supernet("switch")  # a switch's branches must touch the same variables
    engine = Engine(build_model(spec, collect_stats=True), optax.adam(1e-3))
    state = engine.init(jax.random.key(0), data.input_shape)
    assert set(state.collections["stats"]["sum"]) == {"stem0", "s0b0", "s0b1"}
    x, y = jnp.asarray(data.train.x), jnp.asarray(data.train.y)
    pick = selection_of(spec, {"s0b0": 5, "s0b1": 1})
    state = state.replace(collections={**state.collections, "arch": pick})
    state, _ = engine.train_steps(state, x, y, np.arange(32).reshape(1, 32))
    means = jax.device_get(read_stats(state))
    assert means["s0b0"]["featuremap_msq"].shape == (C,) and means["s0b0"]["featuremap_msq"].min() > 0


def test_switch_and_all_modes_compute_the_same_function(data):
    spec_s, spec_a = supernet("switch"), supernet("all")
    v = init_variables(build_model(spec_s), jax.random.key(1), spec_s.input_shape)
    x = jnp.asarray(data.test.x[:16])
    for s in range(4):
        pick = selection_of(spec_s, {"s0b0": 5 - s, "s0b1": s % 2})
        ys = build_model(spec_s).apply({**v, "arch": pick}, x)
        ya = build_model(spec_a).apply({**v, "arch": pick}, x)
        np.testing.assert_allclose(ys, ya, rtol=1e-5, atol=1e-6)


def _forward_cond_activations(jaxpr, batch):
    """Activation-sized outputs of each top-level forward conditional (one per choice block)."""
    return [sum(o.aval.ndim == 4 and o.aval.shape[0] == batch for o in e.outvars)
            for e in jaxpr.eqns if e.primitive.name == "cond"][:2]  # fmt: skip


def test_rematerialized_switch_gives_the_same_loss_gradients_and_statistics_with_fewer_residuals(
    data,
):
    spec_s, spec_r = supernet("switch"), supernet("switch_remat")
    assert notation(spec_r).count("switch_remat") == 2
    v = init_variables(build_model(spec_s), jax.random.key(1), spec_s.input_shape)
    x = jnp.asarray(data.test.x[:16])

    def loss(spec):
        def f(params, pick):
            y, upd = build_model(spec).apply({**v, "params": params, "arch": pick}, x, train=True,
                                             mutable=["batch_stats"])  # fmt: skip
            return jnp.sum(y**2), upd["batch_stats"]
        return jax.value_and_grad(f, has_aux=True)

    step_s, step_r = jax.jit(loss(spec_s)), jax.jit(loss(spec_r))  # a selection is data: one compile
    for s in (1, 3):
        pick = selection_of(spec_s, {"s0b0": s, "s0b1": s % 2})
        (ls, bs), gs = step_s(v["params"], pick)
        (lr, br), gr = step_r(v["params"], pick)
        assert float(ls) == pytest.approx(float(lr), rel=1e-6)
        for a, b in zip(jax.tree_util.tree_leaves((gs, bs)), jax.tree_util.tree_leaves((gr, br)),
                        strict=True):  # fmt: skip
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # The forward switch of the six ENAS candidates returns every branch's residuals (12
    # activations here); the rematerialized one its output and its input.
    plain = _forward_cond_activations(jax.make_jaxpr(loss(spec_s))(v["params"], pick).jaxpr, 16)
    remat = _forward_cond_activations(jax.make_jaxpr(loss(spec_r))(v["params"], pick).jaxpr, 16)
    assert plain[0] >= 6 and max(remat) <= 2, (plain, remat)


def test_a_hundred_selections_evaluate_with_one_compile_and_match_their_materialized_specs(
    data, trained
):
    spec, engine, state = trained
    population = random_selections(jax.random.key(7), spec, 100)
    scores = engine.evaluate_population(state, data.test, "arch", population)
    again = engine.evaluate_population(state, data.test, "arch",
                                       random_selections(jax.random.key(8), spec, 100))  # fmt: skip
    assert engine.population_compiles() == 1  # one compile for 200 candidates
    assert scores["loss"].shape == (100,) and len(set(np.round(scores["loss"], 6))) > 10
    assert not np.array_equal(scores["loss"], again["loss"])
    for p in np.random.default_rng(0).choice(100, 5, replace=False):
        pick = jax.tree_util.tree_map(lambda a, p=p: a[p], population)
        plain = materialize(spec, pick)
        assert not any(isinstance(b, Choice) for st in plain.stages for b in st.blocks)
        variables = materialize_variables(spec, state.variables(), pick)
        alone = Engine(build_model(plain), optax.adam(1e-3), eval_batch_size=64)
        own = TrainState(step=jnp.zeros((), jnp.int32), params=variables["params"],
                         collections={"batch_stats": variables["batch_stats"]}, opt_state=(),
                         rng=jnp.zeros((2,), jnp.uint32))  # evaluation needs only the variables
        result = alone.evaluate(own, data.test)
        assert result["loss"] == pytest.approx(scores["loss"][p], rel=1e-5, abs=1e-6)
        assert result["accuracy"] == pytest.approx(scores["accuracy"][p], abs=1e-6)


def test_materialize_and_transplant_give_the_supernets_outputs_in_training_mode_too(data, trained):
    spec, _, state = trained
    x = jnp.asarray(data.test.x[:32])
    pick = selection_of(spec, {"s0b0": 3, "s0b1": 0})
    variables = {**state.variables(), "arch": pick}
    plain = materialize(spec, pick)
    moved = materialize_variables(spec, variables, pick)
    assert "arch" not in moved
    np.testing.assert_allclose(build_model(plain).apply(moved, x),
                               build_model(spec).apply(variables, x), rtol=1e-5, atol=1e-6)  # fmt: skip
    y1, u1 = build_model(plain).apply(moved, x, train=True, mutable=["batch_stats"])
    y2, u2 = build_model(spec).apply(variables, x, train=True, mutable=["batch_stats"])
    np.testing.assert_allclose(y1, y2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(u1["batch_stats"]["s0b0"]["br0_0"]["bn"]["mean"],
                               u2["batch_stats"]["s0b0"]["c3_0"]["bn"]["mean"], rtol=1e-6)  # fmt: skip
    with pytest.raises(ValueError, match="expected one selection .* index a population first"):
        materialize(spec, random_selections(jax.random.key(0), spec, 3))
    with pytest.raises(ValueError, match=r"choices\['s0b1'\]: expected 0..1, got 2"):
        selection_of(spec, {"s0b1": 2})
