"""Dynamic capacity: saliencies (OBD with a Hutchinson Hessian diagonal, baselines)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from fnnjax.arch import (
    Cell,
    Dense,
    Head,
    Residual,
    Spec,
    Stage,
    analytic_counts,
    build_model,
    from_dict,
    init_variables,
)
from fnnjax.construct import capacity

MLP = Spec(input_shape=(1, 1, 3), num_classes=3, stem=(Dense(filters=6),),
           stages=(Stage(blocks=(Residual(body=(Dense(filters=5), Dense(filters=6, act=None))),)),),
           head=Head())  # fmt: skip


def _loss_and_params():
    model = build_model(MLP)
    variables = init_variables(model, jax.random.key(0), MLP.input_shape)
    x = jax.random.normal(jax.random.key(1), (32, 1, 1, 3))
    y = jax.random.randint(jax.random.key(2), (32,), 0, 3)

    def loss(params):
        logits = model.apply({**variables, "params": params}, x, train=False)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    return loss, variables["params"]


def test_hutchinson_matches_the_exact_hessian_diagonal_within_ten_percent():
    loss, params = _loss_and_params()
    flat, unravel = ravel_pytree(params)
    assert flat.size <= 200
    exact = jax.jit(lambda f: jnp.diag(jax.hessian(lambda g: loss(unravel(g)))(f)))(flat)  # jit: 10x faster
    estimate = jax.jit(lambda p, k: capacity.hutchinson_diagonal(loss, p, k, num_samples=2000,
                                                                 chunk=100))(params, jax.random.key(3))  # fmt: skip
    est = ravel_pytree(estimate)[0]
    assert float(jnp.linalg.norm(est - exact) / jnp.linalg.norm(exact)) <= 0.1
    with pytest.raises(ValueError, match="num_samples: expected a positive multiple of chunk=10"):
        capacity.hutchinson_diagonal(loss, params, jax.random.key(0), num_samples=15)


def test_gate_saliency_is_obd_of_deleting_a_whole_unit():
    model = build_model(NET, use_masks=True)
    variables = init_variables(model, jax.random.key(0), NET.input_shape)
    y = jax.random.randint(jax.random.key(2), (16,), 0, 3)

    def loss_of(v):
        logits = model.apply(v, X, train=False)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    gates = capacity.unit_gates(NET, variables["masks"])
    assert set(gates) == {"stem0", "s0b0", "s0b1", "s0b2/body0", "s0b2/body1", "s0b3/body0",
                          "s0b3/body1"}  # fmt: skip

    def loss(g):
        return loss_of({**variables, "masks": capacity.with_gates(variables["masks"], g)})

    # A gate at 0 is the unit deleted: the loss of the narrowed network.
    closed = {**gates, "s0b2/body0": gates["s0b2/body0"].at[3].set(0.0)}
    small = capacity.narrow(NET, {k: v for k, v in variables.items() if k != "masks"},
                            "s0b2/body0", [0, 1, 2, 4])  # fmt: skip
    plain = build_model(small.spec).apply(small.variables, X, train=False)
    expected = optax.softmax_cross_entropy_with_integer_labels(plain, y).mean()
    np.testing.assert_allclose(float(loss(closed)), float(expected), rtol=1e-5)
    # OBD on the gates: 1/2 d2L/dm2, Hutchinson within 10% of the exact diagonal.
    flat, unravel = ravel_pytree(gates)
    exact = jax.jit(lambda f: jnp.diag(jax.hessian(lambda g: loss(unravel(g)))(f)))(flat)  # jit: 10x faster
    est = jax.jit(lambda k: capacity.hutchinson_diagonal(loss, gates, k, num_samples=2000,
                                                         chunk=200))(jax.random.key(4))  # fmt: skip
    est = ravel_pytree(est)[0]
    assert float(jnp.linalg.norm(est - exact) / jnp.linalg.norm(exact)) <= 0.1
    with pytest.raises(ValueError, match="chunk: expected a positive int, got 0"):
        capacity.hutchinson_diagonal(loss, gates, jax.random.key(0), chunk=0)
    legacy = capacity.hutchinson_diagonal(loss, gates, jax.random.PRNGKey(0), num_samples=10)
    assert set(legacy) == set(gates)  # a legacy uint32 key is accepted


def test_saliencies_sum_per_unit_and_block_over_what_deleting_the_unit_removes():
    loss, params = _loss_and_params()
    grads = jax.grad(loss)(params)
    ones = jax.tree_util.tree_map(jnp.ones_like, params)
    units = capacity.unit_saliency(MLP, ones)  # counts each unit's parameters
    assert set(units) == {"stem0", "s0b0/body0", "s0b0/body1", "head/out"}
    np.testing.assert_array_equal(units["s0b0/body0"], np.full(5, 6 + 1))  # 6 inputs + bias
    np.testing.assert_array_equal(units["head/out"], np.full(3, 6 + 1))
    blocks = capacity.block_saliency(MLP, ones)
    assert float(blocks["s0b0"]) == 5 * 7 + 6 * 6  # body1: 5 inputs + bias per unit
    w = params["s0b0"]["body0"]["conv"]["kernel"]
    taylor = capacity.taylor_saliency(params, grads)
    np.testing.assert_allclose(taylor["s0b0"]["body0"]["conv"]["kernel"],
                               jnp.abs(w * grads["s0b0"]["body0"]["conv"]["kernel"]))  # fmt: skip
    np.testing.assert_allclose(capacity.magnitude_saliency(params)["s0b0"]["body0"]["conv"]["kernel"],
                               jnp.abs(w))  # fmt: skip
    h = jax.tree_util.tree_map(lambda p: jnp.full_like(p, 2.0), params)
    np.testing.assert_allclose(capacity.obd_saliency(params, h)["s0b0"]["body0"]["conv"]["kernel"],
                               w * w)  # 1/2 * 2 * w^2  # fmt: skip


NET = Spec(input_shape=(1, 1, 3), num_classes=3, stem=(Dense(filters=6),),
           stages=(Stage(blocks=(Dense(filters=6), Dense(filters=6),
                                 Residual(body=(Dense(filters=5), Dense(filters=6, act=None))),
                                 Residual(body=(Dense(filters=4), Dense(filters=6, act=None))))),),
           head=Head())  # fmt: skip
X = jax.random.normal(jax.random.key(5), (16, 1, 1, 3))


def _outputs(spec, variables, train=False):
    model = build_model(spec)
    if not train:
        return model.apply(variables, X, train=False)
    return model.apply(variables, X, train=True, mutable=["batch_stats"])[0]


def _variables(spec):
    return init_variables(build_model(spec), jax.random.key(0), spec.input_shape)


@pytest.mark.parametrize("unit,method", [("s0b2/body0", "zero"), ("s0b0", "zero"),
                                         ("s0b0", "net2wider"), ("s0b2/body0", "net2wider")])  # fmt: skip
def test_widening_keeps_the_function_and_the_adam_moments(unit, method):
    from fnnjax.arch import transplant_opt_state

    variables = _variables(NET)
    grown = capacity.widen(NET, variables, unit, 9, method=method, key=jax.random.key(7))
    assert capacity.unit_filters(grown.spec, unit) == 9
    for train in (False, True):
        a, b = _outputs(NET, variables, train), _outputs(grown.spec, grown.variables, train)
        assert float(jnp.abs(a - b).max() / jnp.abs(a).max()) <= 1e-5
    tx = optax.adam(1e-2)
    state = tx.init(variables["params"])
    grads = jax.tree_util.tree_map(jnp.ones_like, variables["params"])
    _, state = tx.update(grads, state, variables["params"])
    # What apply_changes does: Net2Wider's copies are new units too (moments zero).
    kept = capacity.driver._first_copies(grown.kept)
    moved = transplant_opt_state(tx, NET, variables["params"], state, grown.spec,
                                 grown.variables["params"], kept=kept)  # fmt: skip
    mu_old, mu_new = state[0].mu, moved[0].mu
    np.testing.assert_array_equal(mu_new["head"]["out"]["kernel"],
                                  mu_old["head"]["out"]["kernel"])  # fmt: skip
    # the widened unit: the kept units' moments, then zeros
    node = mu_new["s0b2"]["body0"]["conv"] if unit == "s0b2/body0" else mu_new["s0b0"]["conv"]
    old = mu_old["s0b2"]["body0"]["conv"] if unit == "s0b2/body0" else mu_old["s0b0"]["conv"]
    np.testing.assert_array_equal(node["kernel"][..., :old["kernel"].shape[-1]], old["kernel"])
    assert float(jnp.abs(node["kernel"][..., old["kernel"].shape[-1]:]).max()) == 0.0


def test_narrowing_equals_zeroing_the_deleted_units_outgoing_weights():
    variables = _variables(NET)
    small = capacity.narrow(NET, variables, "s0b2/body0", [4, 0, 2])
    assert capacity.unit_filters(small.spec, "s0b2/body0") == 3
    zeroed = jax.tree_util.tree_map(lambda a: a, variables)
    kernel = zeroed["params"]["s0b2"]["body1"]["conv"]["kernel"]
    zeroed["params"]["s0b2"]["body1"]["conv"]["kernel"] = kernel.at[..., [1, 3], :].set(0.0)
    np.testing.assert_allclose(_outputs(small.spec, small.variables), _outputs(NET, zeroed),
                               rtol=1e-5, atol=1e-6)  # fmt: skip
    for unit in ("s0b2/body1", "s0b1"):  # each is added to a residual's identity shortcut
        with pytest.raises(ValueError, match="cannot resize it alone, its output is added"):
            capacity.narrow(NET, variables, unit, [0, 1])
    with pytest.raises(ValueError, match=r"keep: expected distinct unit indices in \[0, 5\)"):
        capacity.narrow(NET, variables, "s0b2/body0", [0, 0])
    with pytest.raises(ValueError, match="unit: expected 's{i}b{j}'"):
        capacity.widen(NET, variables, "s0b1/conv", 9)


def test_removing_a_residual_block_equals_zeroing_its_body():
    variables = _variables(NET)
    short = capacity.remove_block(NET, variables, 0, 2)
    assert len(short.spec.stages[0].blocks) == 3 and short.kept == {"s0": [0, 1, 3]}
    zeroed = jax.tree_util.tree_map(lambda a: a, variables)
    body = zeroed["params"]["s0b2"]["body1"]
    zeroed["params"]["s0b2"]["body1"] = jax.tree_util.tree_map(jnp.zeros_like, body)
    np.testing.assert_allclose(_outputs(short.spec, short.variables), _outputs(NET, zeroed),
                               rtol=1e-5, atol=1e-6)  # fmt: skip
    with pytest.raises(ValueError, match="only residual blocks can be removed"):
        capacity.remove_block(NET, variables, 0, 0)


def test_the_operations_work_on_conv_residual_networks_with_batchnorm():
    from fnnjax.arch import Conv

    spec = Spec(input_shape=(6, 6, 2), num_classes=3, stem=(Conv(filters=4),),
                stages=(Stage(blocks=(Residual(body=(Conv(filters=3), Conv(filters=4, act=None))),
                                      Residual(body=(Conv(filters=5), Conv(filters=4, act=None))))),),
                head=Head())  # fmt: skip
    variables = init_variables(build_model(spec), jax.random.key(0), spec.input_shape)
    x = jax.random.normal(jax.random.key(1), (8, 6, 6, 2))

    def run(s, v, train):
        model = build_model(s)
        if train:
            return model.apply(v, x, train=True, mutable=["batch_stats"])[0]
        return model.apply(v, x, train=False)

    wide = capacity.widen(spec, variables, "s0b0/body0", 7, key=jax.random.key(2))
    assert "batch_stats" in wide.variables
    for train in (False, True):  # exact in training mode too: new units' outgoing weights are 0
        a, b = run(spec, variables, train), run(wide.spec, wide.variables, train)
        assert float(jnp.abs(a - b).max() / jnp.abs(a).max()) <= 1e-5
    short = capacity.remove_block(spec, variables, 0, 1)
    zeroed = jax.tree_util.tree_map(lambda a: a, variables)
    bn = zeroed["params"]["s0b1"]["body1"]["bn"]
    zeroed["params"]["s0b1"]["body1"]["bn"] = jax.tree_util.tree_map(jnp.zeros_like, bn)
    np.testing.assert_allclose(run(short.spec, short.variables, False), run(spec, zeroed, False),
                               rtol=1e-5, atol=1e-6)  # fmt: skip
    small = capacity.narrow(spec, variables, "s0b1/body0", [1, 3])
    assert small.variables["params"]["s0b1"]["body1"]["conv"]["kernel"].shape == (3, 3, 2, 4)


def test_the_controller_shrinks_weak_units_grows_on_a_plateau_and_says_why():
    config = capacity.CapacityConfig(window=2, tau=0.05, grow_units=3, max_units=8,
                                     shrink_below=0.2, cooldown=1, warmup=0, remove_below=0.0)  # fmt: skip
    sal = {"s0b0": np.array([1.0, 1.0, 1.0, 1.0, 1.0, 0.01]), "s0b1": np.ones(6),
           "s0b2/body0": np.array([5.0, 5.0, 5.0, 5.0, 5.0]), "s0b2/body1": np.ones(6)}  # fmt: skip
    falling, flat = [1.0, 0.8, 0.6], [1.0, 0.99, 0.985]
    assert capacity.plan_changes(flat, sal, NET, config, since_change=0) == []  # cooling down
    warming = dataclasses.replace(config, warmup=4)  # fewer evaluations than the warm-up
    assert capacity.plan_changes(flat, sal, NET, warming, since_change=1) == []
    changes = capacity.plan_changes(falling, sal, NET, config, since_change=1)
    assert [(c.op, c.target, c.value) for c in changes] == [("narrow", "s0b0", (0, 1, 2, 3, 4))]
    assert "1 of 6 units below 0.2 x the unit's mean saliency" in changes[0].reason
    # s0b1 and s0b2/body1 feed identity shortcuts: neither shrinks nor grows.
    grow = capacity.plan_changes(flat, sal, NET, config, since_change=1)[-1]
    assert (grow.op, grow.target, grow.value) == ("widen", "s0b2/body0", 8)
    assert "loss improved 1.500% over 2 evaluations (< 5.0%)" in grow.reason
    capped = dataclasses.replace(config, max_units=7)
    grow = capacity.plan_changes(flat, sal, NET, capped, since_change=1)[-1]
    assert (grow.op, grow.value) == ("insert", (0, 3)) and "already at 5 >= the cap" in grow.reason
    tight = dataclasses.replace(config, max_params=analytic_counts(NET)["params"], shrink_below=0.0)
    assert capacity.plan_changes(flat, sal, NET, tight, since_change=1) == []
    floor = dataclasses.replace(config, min_params=analytic_counts(NET)["params"])
    assert [c.op for c in capacity.plan_changes(falling, sal, NET, floor, since_change=1)] == []
    assert capacity.plateaued([1.0], 2, 0.1) == (False, None)
    # The weakest residual block goes when far below its stage's mean (and nothing grows then).
    removing = dataclasses.replace(config, remove_below=0.5, shrink_below=0.0)
    weak = {**sal, "s0b3/body0": np.full(4, 0.1), "s0b3/body1": np.full(6, 0.1)}
    declined = []
    changes = capacity.plan_changes(flat, weak, NET, removing, since_change=1, declined=declined)
    assert [(c.op, c.target, c.value) for c in changes] == [("remove", "s0b3", (0, 3))]
    assert "block saliency 1 below 0.5 x its stage's mean" in changes[0].reason
    assert declined and "a block was removed now" in declined[0]["reason"]
    declined = []
    assert capacity.plan_changes(flat, sal, NET, tight, since_change=1, declined=declined) == []
    assert "parameters > max_params" in declined[0]["reason"]  # every blocked decision is said
    with pytest.raises(ValueError, match=r"saliency\['s0b0'\]: expected one value per unit \(6\)"):
        capacity.plan_changes(flat, {**sal, "s0b0": np.ones(3)}, NET, config, since_change=1)
    with pytest.raises(ValueError, match="saliency: 's9b0' is no unit of the spec"):
        capacity.plan_changes(flat, {"s9b0": np.ones(3)}, NET, config, since_change=1)
    declined = []
    reached = dataclasses.replace(config, loss_target=0.99)  # the plateau is at the target
    assert capacity.plan_changes(flat, sal, NET, reached, since_change=1, declined=declined) == [
        capacity.plan_changes(flat, sal, NET, config, since_change=1)[0]]  # the narrowing only
    assert "already at or below loss_target 0.99" in declined[0]["reason"]
    dyn = capacity.DynamicConfig(controller=config, saliency="taylor")
    assert capacity.DynamicConfig.from_dict(dyn.to_dict()) == dyn  # capacity_config.json's form
    with pytest.raises(ValueError, match="controller.windw: no such DynamicConfig field"):
        capacity.DynamicConfig.from_dict({"controller": {"windw": 3}})
    with pytest.raises(ValueError, match="max_params: expected a positive int or None"):
        capacity.CapacityConfig(max_params=-5)
    with pytest.raises(ValueError, match="tau: expected a number in"):
        capacity.CapacityConfig(tau=1.5)


def test_apply_changes_keeps_the_adam_moments_of_kept_parameters_and_records_each_change():
    variables = _variables(NET)
    tx = optax.adam(1e-2)
    params = variables["params"]
    state = tx.init(params)
    grads = jax.tree_util.tree_map(lambda p: jnp.full_like(p, 0.5), params)
    _, state = tx.update(grads, state, params)
    plan = [capacity.Change("narrow", "s0b2/body0", (0, 2, 4), "test"),
            capacity.Change("widen", "s0b3/body0", 6, "test"),
            capacity.Change("insert", "s0b3/body0", (0, 4), "test")]  # fmt: skip

    def loss(spec, v):
        return float(jnp.mean(_outputs(spec, v) ** 2))

    out, moved, records = capacity.apply_changes(plan, NET, variables, state, tx, loss=loss)
    assert [r["op"] for r in records] == ["narrow", "widen", "insert"]
    for r in records[1:]:  # growth keeps the function
        assert abs(r["loss_after"] - r["loss_before"]) <= 1e-5 * abs(r["loss_before"])
    assert records[0]["params_after"] == records[0]["params_before"] - 2 * (6 + 1) - 2 * 6
    mu, nu = moved[0].mu, moved[0].nu
    old_mu, old_nu = state[0].mu, state[0].nu
    np.testing.assert_array_equal(mu["s0b0"]["conv"]["kernel"], old_mu["s0b0"]["conv"]["kernel"])
    np.testing.assert_array_equal(mu["s0b2"]["body0"]["conv"]["kernel"],
                                  old_mu["s0b2"]["body0"]["conv"]["kernel"][..., [0, 2, 4]])  # fmt: skip
    np.testing.assert_array_equal(nu["s0b3"]["body0"]["conv"]["kernel"][..., :4],
                                  old_nu["s0b3"]["body0"]["conv"]["kernel"])  # fmt: skip
    assert float(jnp.abs(nu["s0b3"]["body0"]["conv"]["kernel"][..., 4:]).max()) == 0.0
    assert float(jnp.abs(mu["s0b4"]["body0"]["conv"]["kernel"]).max()) == 0.0  # the new block
    # Removing s0b2 shifts s0b3 and s0b4 down; their moments go with them.
    spec = capacity.driver._spec_of(records[-1])
    remove = [capacity.Change("remove", "s0b2", (0, 2), "test")]
    _, after, (rec,) = capacity.apply_changes(remove, spec, out, moved, tx, loss=loss)
    assert rec["params_after"] < rec["params_before"]
    for old_name, new_name in (("s0b3", "s0b2"), ("s0b4", "s0b3"), ("head", "head")):
        for u, v in zip(jax.tree_util.tree_leaves(moved[0].nu[old_name]),
                        jax.tree_util.tree_leaves(after[0].nu[new_name]), strict=True):  # fmt: skip
            np.testing.assert_array_equal(u, v)
    assert "s0b4" not in after[0].mu
    assert int(moved[0].count) == int(state[0].count)
    assert jax.tree_util.tree_structure(out["params"]) == jax.tree_util.tree_structure(mu)


def _cli(out, *extra):
    from fnnjax.cli import main

    return main(["capacity", "--task", "regression", "--quick", "--num-train", "256",
                 "--width", "6", "--hidden", "3", "--epochs", "7", "--tau", "0.99", "--window", "1",
                 "--grow-units", "2", "--max-units", "5", "--shrink-below", "0", "--seed", "3",
                 "--warmup", "2", "--cooldown", "1", "--samples", "16", "--probe-size", "64",
                 "--out", str(out), *extra])  # fmt: skip


class _Killed(Exception):
    pass


def _final_params(out):
    from fnnjax.models import model_from_description
    from fnnjax.train import restore_run

    return restore_run(out, model_from_description)[1].params


def test_a_dynamic_run_killed_after_changes_resumes_bitwise_in_its_latest_structure(
    tmp_path, monkeypatch, capsys
):
    assert _cli(tmp_path / "whole") == 0
    assert "dynamic capacity on sines1d-c3: parameters" in capsys.readouterr().out
    whole = capacity.read_run(tmp_path / "whole")
    ops = [c["op"] for c in whole["changes"]]
    assert {"widen", "insert"} <= set(ops), ops  # the run grows, past the cap by insertion
    for c in whole["changes"]:
        if c["op"] in ("widen", "insert"):  # growth keeps the probe loss
            assert abs(c["loss_after"] - c["loss_before"]) <= 1e-5 * abs(c["loss_before"])
        assert c["params_after"] == analytic_counts(from_dict(c["spec"]))["params"]
    for name in ("capacity.png", "layers.png", "layers.md", "final_spec.json", "saliency.jsonl"):
        assert (tmp_path / "whole" / name).stat().st_size > 0, name

    from fnnjax.construct.capacity import driver

    calls, real = [], driver.apply_changes

    def killed_at_the_third_change(*args, **kwargs):  # inside the epoch, before its checkpoint
        calls.append(1)
        if len(calls) == 3:
            raise _Killed
        return real(*args, **kwargs)

    monkeypatch.setattr(driver, "apply_changes", killed_at_the_third_change)
    with pytest.raises(_Killed):
        _cli(tmp_path / "killed")
    monkeypatch.setattr(driver, "apply_changes", real)
    assert 2 <= len(capacity.read_run(tmp_path / "killed")["changes"]) < len(ops)
    assert _cli(tmp_path / "killed") == 0
    resumed = capacity.read_run(tmp_path / "killed")
    assert [c["op"] for c in resumed["changes"]] == ops
    for u, v in zip(jax.tree_util.tree_leaves(_final_params(tmp_path / "whole")),
                    jax.tree_util.tree_leaves(_final_params(tmp_path / "killed")), strict=True):  # fmt: skip
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
    capsys.readouterr()
    assert _cli(tmp_path / "killed") == 0  # a finished run, run again: nothing redone
    assert capacity.read_run(tmp_path / "killed")["changes"] == resumed["changes"]
    rows = capacity.layer_report(resumed["changes"], resumed["saliency"], resumed["initial_spec"])
    body = next(r for r in rows if r["layer"] == "s0b0/body0")
    final = from_dict(resumed["changes"][-1]["spec"])
    assert body["initial"] == 3 and body["final"] == capacity.unit_filters(final, "s0b0/body0")
    assert body["added"] - body["removed"] == body["final"] - body["initial"]
    assert any(r["initial"] == 0 and r["final"] > 0 and "@" in r["layer"] for r in rows)  # inserted
    capsys.readouterr()
    assert _cli(tmp_path / "whole", "--shrink-below", "0.1") == 2  # another run in that folder
    assert "holds a different dynamic-capacity run (--shrink-below: saved 0.0, now 0.1); to " \
           "keep both, pass another --out; to start afresh here, pass --no-resume" in \
           capsys.readouterr().err  # the setting named by its flag


@pytest.mark.parametrize("argv,expected", [
    (["--tau", "2"], "--tau: expected a number in [0, 1), got 2.0"),
    (["--dataset", "mnist"], "--dataset: regression runs on the generated sines targets"),
    (["--samples", "48"], "--samples: expected a multiple of 32, or at most 32, got 48"),
    (["--saliency", "magnitude", "--unit-measure", "gate"], "--unit-measure: 'gate' has no magnitude"),
    (["--num-train", "20000"], "--num-train: sines1d-c4 has 14746 training examples after the"),
    (["--validation", "1"], "--validation: expected a share in [0, 1), got 1 "),
])  # fmt: skip
def test_capacity_mistakes_are_one_line_errors(argv, expected, tmp_path, capsys):
    from fnnjax.cli import main

    try:  # --validation is checked as the command line is read (argparse exits)
        code = main(["capacity", "--task", "regression", "--out", str(tmp_path), *argv])
    except SystemExit as exit:
        code = exit.code
    assert code == 2
    err = capsys.readouterr().err
    assert expected in err and len(err.strip().splitlines()) == 1


def test_an_fnn_head_counts_in_the_parameter_budget_but_is_no_unit_to_resize():
    from fnnjax.arch import FnnHead, host_init, infer_layers

    spec = NET.replace(head=Head(kind="fnn", fnn=FnnHead(num_hidden=4, dim=3, iterations=2)))
    params = host_init(build_model(spec), spec.input_shape)["params"]
    assert analytic_counts(spec)["params"] == ravel_pytree(params)[0].size
    ones = jax.tree_util.tree_map(jnp.ones_like, params)
    units = capacity.unit_saliency(spec, ones)
    assert set(units) == {u.path for u in infer_layers(spec) if u.op not in ("norm", "fnn")}
    assert "FNN_0" in params["head"] and "head/FNN_0" not in units


def test_the_shrink_guard_bounds_the_rise_of_a_whole_consultation_not_each_change():
    # Each deletion raises this probe loss 6%: every change alone passes a 10% guard, two
    # together (12.4%) do not. The second is refused; the growth after it is still applied.
    widths = {"s0b2/body0": 5, "s0b3/body0": 4}

    def loss(spec, variables):
        deleted = sum(n - capacity.unit_filters(spec, u) for u, n in widths.items())
        return 1.06 ** max(deleted, 0)

    variables = _variables(NET)
    tx = optax.adam(1e-2)
    plan = [capacity.Change("narrow", "s0b2/body0", (0, 1, 2, 3), "test"),
            capacity.Change("narrow", "s0b3/body0", (0, 1, 2), "test"),
            capacity.Change("widen", "s0b0", 8, "test")]  # fmt: skip
    config = capacity.DynamicConfig(max_shrink_loss=0.1)
    spec, _, _, applied, refused = capacity.apply_plan(plan, NET, variables, tx.init(variables["params"]),
                                                       tx, config=config, loss=loss)  # fmt: skip
    assert [(r["op"], r["target"]) for r in applied] == [("narrow", "s0b2/body0"), ("widen", "s0b0")]
    assert [(r["op"], r["target"]) for r in refused] == [("narrow", "s0b3/body0")]
    assert "12.4% above 1 at the consultation's start" in refused[0]["reason"]
    assert capacity.unit_filters(spec, "s0b3/body0") == 4 and capacity.unit_filters(spec, "s0b0") == 8
    assert loss(spec, None) <= 1.1  # the consultation's total rise is within the bound


CELL_NET = Spec(input_shape=(1, 1, 1), num_classes=1, stem=(Dense(filters=8),),
                stages=(Stage(blocks=(Cell(branches=((Dense(filters=4),), (Dense(filters=4),))),
                                      Residual(body=(Dense(filters=6), Dense(filters=8, act=None))),
                                      Residual(body=(Dense(filters=6), Dense(filters=8, act=None))))),),
                head=Head())  # fmt: skip


@pytest.fixture(scope="module")
def eager_run(tmp_path_factory):
    """A tiny in-memory-sized run of a controller that changes the network at every
    consultation (magnitude saliency: no Hutchinson compile), on a net with a Cell block."""
    import warnings

    from fnnjax.train import TrainConfig

    data = capacity.sines_dataset(2, num_train=256, num_validation=32, num_test=64, seed=1)
    controller = capacity.CapacityConfig(window=1, warmup=0, cooldown=0, tau=0.99, grow_units=2,
                                         max_units=16, shrink_below=0.5, remove_below=0.0, grace=0)  # fmt: skip
    config = capacity.DynamicConfig(controller=controller, saliency="magnitude", probe_size=64,
                                    max_shrink_loss=None)  # fmt: skip
    train = TrainConfig(epochs=3, batch_size=32, learning_rate=3e-3, progress=False)
    out = tmp_path_factory.mktemp("eager")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = capacity.train_dynamic(CELL_NET, data, train, config, out, objective="regression",
                                        log=None)  # fmt: skip
    return {"result": result, "data": data, "out": out, "warnings": [str(w.message) for w in caught],
            "epochs": train.epochs}  # fmt: skip


def test_no_change_follows_the_last_evaluation_so_the_summary_is_the_returned_network(eager_run):
    from fnnjax.train import get_objective

    result, data = eager_run["result"], eager_run["data"]
    assert result["changes"], "the eager controller changes the network"
    assert max(c["epoch"] for c in result["changes"]) < eager_run["epochs"]
    assert max(s["epoch"] for s in result["saliency"]) < eager_run["epochs"]
    summary, last = result["summary"], result["history"][-1]
    state = result["state"]
    out = build_model(result["spec"]).apply(jax.device_get(state.variables()), data.test.x,
                                            train=False)  # fmt: skip
    returned = float(get_objective("regression").loss(out, data.test.y).mean())
    np.testing.assert_allclose(summary["final_test_loss"], returned, rtol=1e-5)
    np.testing.assert_allclose(summary["final_test_loss"], last["test_loss"], rtol=1e-6)


def test_train_dynamic_writes_the_layer_report(eager_run):
    result, out = eager_run["result"], eager_run["out"]
    rows = capacity.layer_report(result["changes"], result["saliency"], CELL_NET)
    assert (out / "layers.md").read_text() == capacity.analysis.report_markdown(rows)
    assert "| s0b1/body0 |" in (out / "layers.md").read_text()


def test_blocks_it_cannot_resize_are_declined_with_the_reason_and_one_warning(eager_run):
    result = eager_run["result"]
    assert result["saliency"]
    for record in result["saliency"]:  # every consultation says it left the Cell alone
        cell = [d for d in record["declined"] if d["op"] == "resize"]
        assert [d["target"] for d in cell] == ["s0b0"], record["declined"]
        assert "s0b0 is a Cell block" in cell[0]["reason"] and "(br0_0, br1_0)" in cell[0]["reason"]
    said = [w for w in eager_run["warnings"] if "cannot resize" in w]
    assert len(said) == 1 and "s0b0 (a Cell block)" in said[0], eager_run["warnings"]


def test_blocks_with_a_resizable_unit_are_not_declined():
    """A residual with a projection shortcut and a SepConv block each have a unit the
    operations do not resize (the shortcut, the depthwise half) beside ones they do: no decline."""
    from fnnjax.arch import SepConv, host_init

    net = capacity.residual_conv_spec((8, 8, 1), 10, width=4, hidden=4, blocks=1, stages=2)
    first = dataclasses.replace(net.stages[0], blocks=(SepConv(filters=4), *net.stages[0].blocks))
    net = net.replace(stages=(first, *net.stages[1:]))
    params = host_init(build_model(net), net.input_shape)["params"]
    saliency = capacity.unit_saliency(net, jax.tree_util.tree_map(jnp.ones_like, params))
    assert {"s1b0/shortcut", "s0b0/dw"} <= set(saliency)  # measured
    declined = []
    capacity.plan_changes([1.0] * 10, saliency, net, capacity.CapacityConfig(warmup=0, cooldown=0),
                          since_change=10, declined=declined)  # fmt: skip
    assert not [d for d in declined if d["op"] == "resize"], declined


TASKS = ("regression", "classification")  # every task `fnnjax capacity --task` accepts


def _quick_run(task, out):
    """``fnnjax capacity --task T --quick`` into ``out``: what it printed and its time."""
    import contextlib
    import io
    import time

    from fnnjax.cli import main

    printed, started = io.StringIO(), time.perf_counter()
    with contextlib.redirect_stdout(printed):
        assert main(["capacity", "--task", task, "--quick", "--out", str(out)]) == 0
    return {"out": out, "stdout": printed.getvalue(), "seconds": time.perf_counter() - started}


def test_the_quick_choices_cover_every_task_the_command_accepts():
    from fnnjax.cli import build_parser

    parser = build_parser()
    capacity_parser = parser._subparsers._group_actions[0].choices["capacity"]
    task = next(a for a in capacity_parser._actions if a.dest == "task")
    assert tuple(task.choices) == TASKS


@pytest.mark.parametrize("task", TASKS)
def test_each_quick_run_deletes_grows_keeps_the_function_and_retrains(task, tmp_path, capsys):
    """One test per quick run (a run shared by several tests would run again in every xdist
    worker that picks one up): it deletes and grows, every growth keeps the function, its final
    numbers are the returned network's last evaluation, and the command it prints retrains the
    final spec on the same data."""
    import json
    import shlex

    from fnnjax.cli import main

    run = _quick_run(task, tmp_path / "quick")
    print(f"fnnjax capacity --task {task} --quick: {run['seconds']:.1f} s")
    out = run["out"]
    changes = capacity.read_run(out)["changes"]
    ops = [c["op"] for c in changes]
    assert {"narrow", "remove"} & set(ops) and {"widen", "insert"} & set(ops), ops
    for c in changes:
        if c["op"] in ("widen", "insert"):  # measured on the probe batch before and after
            assert abs(c["loss_after"] - c["loss_before"]) <= 1e-5 * abs(c["loss_before"]), c
            assert c["output_change"] <= 1e-5, c
    counts = f"({len(ops)} changes: " + ", ".join(
        f"{ops.count(o)} {o}" for o in ("widen", "insert", "narrow", "remove")) + ")"  # fmt: skip
    assert counts in run["stdout"]
    # No change after the last evaluation: the summary is the returned network's.
    summary = json.loads((out / "summary.json").read_text())
    history = capacity.read_run(out)["history"]
    assert max(c["epoch"] for c in changes) < summary["config"]["epochs"]
    metric = "accuracy" if task == "classification" else "loss"
    assert summary[f"final_test_{metric}"] == pytest.approx(history[-1][f"test_{metric}"], rel=1e-6)
    assert (out / "layers.md").stat().st_size > 0  # written by train_dynamic (the CLI does not)
    # The retraining command it prints, on the capacity run's data (same examples, same splits).
    line = next(ln for ln in run["stdout"].splitlines() if "fnnjax train --spec" in ln)
    argv = shlex.split(line.split("on the same data: ", 1)[1])
    assert argv[:2] == ["fnnjax", "train"]
    dataset = argv[argv.index("--dataset") + 1]
    assert dataset == ("sines1d-c3" if task == "regression" else "digits")
    capsys.readouterr()
    assert main([*argv[1:], "--epochs", "1", "--quiet", "--out", str(tmp_path / "retrained")]) == 0
    assert ("test loss (MSE)" if task == "regression" else "test accuracy") in capsys.readouterr().out
    saved = json.loads((out / "config.json").read_text())["dataset"]
    assert json.loads((tmp_path / "retrained" / "config.json").read_text())["dataset"] == saved


def test_layers_figure_legend_matches_the_lines_drawn(tmp_path):
    """The recorded run (tests/fixtures/runs/capacity) widened s0b0/body0 at step 8 and inserted a
    block (two layers of 6 units) at step 12, its last step: once drawn as lines of no length
    that hid each other, with three legend entries for one visible line."""
    from pathlib import Path  # noqa: PLC0415

    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt  # noqa: PLC0415

    from fnnjax.construct.capacity import analysis  # noqa: PLC0415

    run = capacity.read_run(Path(__file__).parents[1] / "fixtures" / "runs" / "capacity")
    args = (run["saliency"], run["changes"], run["initial_spec"])
    assert analysis.plot_layers(*args, tmp_path / "layers.png").stat().st_size > 5000
    figure = analysis.layers_figure(*args)
    fig, axes = plt.subplots(1, 2, figsize=figure["size"], squeeze=False)
    figure["draw"](fig, axes)
    left = axes[0, 0]
    lines = {ln.get_label(): ln for ln in left.get_lines() if not ln.get_label().startswith("_")}
    legend = left.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == list(lines) == [
        "s0b0/body0", "s0b1@12/body0, s0b1@12/body1"]  # fmt: skip
    for text, handle in zip(legend.get_texts(), legend.legend_handles, strict=True):
        line = lines[text.get_text()]
        assert (handle.get_color(), handle.get_linestyle(), handle.get_marker()) == (
            line.get_color(), line.get_linestyle(), line.get_marker())  # fmt: skip
        assert line.get_marker() == "o"  # a layer that came at the last step is still seen
    assert len({(ln.get_color(), ln.get_linestyle()) for ln in lines.values()}) == len(lines)
    assert list(lines["s0b1@12/body0, s0b1@12/body1"].get_xydata()[0]) == [12, 6]
    assert left.get_xlabel() == "step" and left.get_ylabel() == "units" and left.get_title()
    plt.close(fig)
    # More lines than colours: the dashes tell them apart.
    styles = [tuple(analysis._line_style(k).values()) for k in range(40)]
    assert len(set(styles)) == 40
