"""EnvelopeNets: the network, the statistic, restructuring, baselines and the resumable driver."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fnnjax.arch import (
    Conv,
    SepConv,
    analytic_counts,
    build_model,
    from_json,
    init_variables,
    notation,
    zoo_spec,
)
from fnnjax.construct import envelope as ev
from fnnjax.train import Engine, read_stats

ENV = ev.EnvelopeConfig(channels=12)


def test_the_papers_envelopenet_a_has_its_13m_parameters_and_notation():
    env = ev.EnvelopeConfig()
    spec = ev.envelope_spec(ev.initial_layers((10, 1, 1, 1), env), env, (32, 32, 3), 10)
    assert ev.envelope_notation(spec, env) == "128/10-1-1-1/6"
    assert 12.5e6 < analytic_counts(spec)["params"] < 13.5e6  # Table 1: 13M
    # 128 channels over six blocks: 21 each; the wideners double the width.
    assert notation(spec).startswith("128 || [21k1|21|S21|21k5|S21k5|S21k7]x10 | [M|126s2]-[42k1|")


def test_widths_follow_the_layer_or_the_block_and_the_order_the_paper_or_the_code():
    layers = (((("1x1", "3x3", "5x5sep")), ("3x3",)), (("1x1", "3x3"),))
    spec = ev.envelope_spec(layers, ENV, (16, 16, 1), 10)
    cells = [b for b in spec.stages[0].blocks]
    assert [br[0].filters for br in cells[0].branches] == [4, 4, 4]  # int(12 / 3)
    assert [br[0].filters for br in cells[1].branches] == [12]  # a lone block takes the layer
    assert [br[0].filters for br in spec.stages[1].blocks[1].branches] == [12, 12]  # W = 24
    widener = spec.stages[1].blocks[0]
    assert widener.branches[1][0].filters == 12 and widener.branches[1][0].stride == 2
    fixed = dataclasses.replace(ENV, width="block")
    spec_b = ev.envelope_spec(layers, fixed, (16, 16, 1), 10)
    assert [br[0].filters for br in spec_b.stages[0].blocks[1].branches] == [2]  # int(12 / 6)
    ops = [br[0] for br in cells[0].branches]
    assert isinstance(ops[2], SepConv) and ops[2].kernel == 5 and not ops[2].mid_norm_act
    assert all(op.act_first for op in ops) and spec.stem[0].act_first
    strided = dataclasses.replace(ENV, stem_stride=2)
    spec_s = ev.envelope_spec(layers, strided, (16, 16, 1), 10)
    assert spec_s.stem[0].stride == 2 and ev.envelope_layers(spec_s, strided) == layers
    released = ev.envelope_spec(layers, dataclasses.replace(ENV, order="released"), (16, 16, 1), 10)
    assert not any(br[0].act_first for br in released.stages[0].blocks[0].branches)
    # conv -> ReLU -> BN: the block's output is BatchNorm's, so it can be negative.
    small = ev.envelope_spec(((("1x1",),),), ENV, (4, 4, 1), 2)
    model = build_model(small)
    x = jax.random.normal(jax.random.key(1), (4, 4, 4, 1))
    variables = init_variables(model, jax.random.key(0), (4, 4, 1))
    _, inter = model.apply(variables, x, train=True, capture_intermediates=True,
                           rngs={"dropout": jax.random.key(2)},
                           mutable=["batch_stats", "intermediates"])  # fmt: skip
    out = inter["intermediates"]["s0b0"]["br0_0"]["__call__"][0]
    assert float(out.min()) < 0 and abs(float(out.mean())) < 1e-5  # batch-normalized last


def test_layers_read_back_from_the_spec_and_other_specs_are_refused():
    layers = ((("1x1", "3x3sep"), ("5x5", "7x7sep"), ev.CELL_OPS), (("3x3",),))
    for env in (ENV, dataclasses.replace(ENV, dense_skips=True)):
        spec = ev.envelope_spec(layers, env, (16, 16, 1), 10)
        assert ev.envelope_layers(spec, env) == layers
    with pytest.raises(ValueError, match="not an EnvelopeNet built with this EnvelopeConfig"):
        ev.envelope_layers(ev.envelope_spec(layers, ENV, (16, 16, 1), 10),
                           dataclasses.replace(ENV, channels=16))  # fmt: skip
    with pytest.raises(ValueError, match="not an EnvelopeNet"):
        ev.envelope_layers(zoo_spec("vgg16"), ENV)
    with pytest.raises(ValueError, match=r"layers\[0\]\[0\]: expected the cell's order"):
        ev.envelope_spec(((("3x3", "1x1"),),), ENV, (16, 16, 1), 10)
    with pytest.raises(ValueError, match="notation: expected C/n1-n2-.../M"):
        ev.parse_notation("128/10-1-1")
    assert ev.parse_notation(" 128/10-1-1-1/6") == (128, (10, 1, 1, 1), 6)
    with pytest.raises(ValueError, match="M = 4, but the cell has 6 blocks"):
        ev.ConstructionConfig.from_notation("16/2-1/4")


def test_dense_skips_concatenate_the_stages_earlier_outputs_before_a_1x1_conv():
    env = dataclasses.replace(ENV, dense_skips=True)
    spec = ev.envelope_spec(((ev.CELL_OPS,) * 3, (ev.CELL_OPS,) * 2), env, (16, 16, 1), 10)
    s0, s1 = spec.stages[0].blocks, spec.stages[1].blocks
    assert isinstance(s0[1], Conv) and s0[1].kernel == 1 and s0[1].skips == (-1,)
    assert s0[3].skips == (-1, 0) and s0[3].skip_merge == "concat" and s0[3].filters == 12
    assert s1[2].skips == (0,) and s1[2].filters == 24  # the widener's output is the stage input
    variables = init_variables(build_model(spec), jax.random.key(0), (16, 16, 1), abstract=True)
    assert variables["params"]["s0b3"]["conv"]["kernel"].shape == (1, 1, 3 * 12, 12)
    modules = ev.block_modules(((ev.CELL_OPS,) * 3, (ev.CELL_OPS,) * 2), env)
    assert modules["s0/l2/1x1"] == "s0b4/br0_0" and modules["s1/l1/7x7sep"] == "s1b3/br5_0/pw"
    for path in modules.values():  # every statistics path is a unit of the model
        node = variables["params"]
        for part in path.split("/"):
            node = node[part]
        assert "conv" in node


# -- restructuring on hand-made statistics -----------------------------------------------------


def _stats(layers, values):
    return {ev.block_key(i, j, op): values(i, j, op) for i, stage in enumerate(layers)
            for j, layer in enumerate(stage) for op in layer}  # fmt: skip


def test_pruning_takes_the_lowest_keeps_a_block_per_layer_and_appends_a_cell():
    layers = ((ev.CELL_OPS, ("3x3", "5x5")), )
    # Lowest: layer 1's two blocks, then layer 0's 7x7sep, 5x5sep, ...
    values = {"s0/l1/3x3": 0.1, "s0/l1/5x5": 0.2, "s0/l0/7x7sep": 0.3, "s0/l0/5x5sep": 0.4}
    stats = _stats(layers, lambda i, j, op: values.get(ev.block_key(i, j, op), 1.0 + j))
    done = ev.restructure_layers(layers, stats, ENV)
    # 8 blocks: a third is 2; layer 1's second block cannot go (one block per layer stays).
    assert done.pruned == ("s0/l1/3x3", "s0/l0/7x7sep")
    assert done.layers == ((("1x1", "3x3", "3x3sep", "5x5", "5x5sep"), ("5x5",), ev.CELL_OPS),)
    assert done.added == (2,) and done.kept == ((0, 1, -1),)


def test_ties_break_by_position_and_the_worst_case_is_the_inverse():
    layers = ((ev.CELL_OPS,) * 3,)
    flat = _stats(layers, lambda i, j, op: 1.0)
    done = ev.restructure_layers(layers, flat, ENV)
    assert done.pruned == ("s0/l0/1x1", "s0/l0/3x3", "s0/l0/3x3sep", "s0/l0/5x5", "s0/l0/5x5sep",
                           "s0/l1/1x1")  # 18 blocks: min(6, 6); layer 0 keeps its last block  # fmt: skip
    worst = dataclasses.replace(ev.RestructureConfig(), worst_case=True)
    rng = np.random.default_rng(0)
    for _ in range(5):
        s = _stats(layers, lambda *_: float(rng.integers(0, 4)))  # many ties
        assert ev.restructure_layers(layers, s, ENV, worst) == ev.restructure_layers(
            layers, {k: -v for k, v in s.items()}, ENV)
    top = ev.restructure_layers(layers, _stats(layers, lambda i, j, op: float(j)), ENV, worst)
    assert all(k.startswith("s0/l2/") for k in top.pruned[:5])  # the highest go first


def test_the_one_third_cap_the_six_cap_and_single_block_layers():
    one = ((ev.CELL_OPS,),)
    assert len(ev.restructure_layers(one, _stats(one, lambda *_: 1.0), ENV).pruned) == 2  # 6 / 3
    many = ((ev.CELL_OPS,) * 10,)
    assert len(ev.restructure_layers(many, _stats(many, lambda *_: 1.0), ENV).pruned) == 6
    single = ((("3x3",), ("1x1",)),)  # nothing can be pruned: only append
    done = ev.restructure_layers(single, _stats(single, lambda *_: 1.0), ENV)
    assert done.pruned == () and done.layers == ((("3x3",), ("1x1",), ev.CELL_OPS),)
    with pytest.raises(ValueError, match="statistics: no value for block 's0/l0/3x3'"):
        ev.restructure_layers(single, {}, ENV)
    with pytest.raises(ValueError, match=r"statistics\['s0/l0/3x3'\]: expected a finite number"):
        ev.restructure_layers(single, {"s0/l0/3x3": float("nan"), "s0/l1/1x1": 1.0}, ENV)


def test_five_iterations_with_the_released_maxima_turn_10_1_1_1_into_15_6_4_4():
    config = ev.RestructureConfig(max_layers=(15, 5, 3, 3))
    rng = np.random.default_rng(1)
    for _ in range(3):
        layers = ev.initial_layers((10, 1, 1, 1), ENV)
        for _ in range(5):
            stats = _stats(layers, lambda *_: float(rng.normal()))
            layers = ev.restructure_layers(layers, stats, ENV, config).layers
        assert [len(stage) for stage in layers] == [15, 6, 4, 4]
        assert all(len(layer) >= 1 for stage in layers for layer in stage)
    # A stage past its maximum is left unchanged (no pruning, no cell).
    deep = ((ev.CELL_OPS,) * 4, (ev.CELL_OPS,))
    done = ev.restructure_layers(deep, _stats(deep, lambda *_: 1.0), ENV,
                                 ev.RestructureConfig(max_layers=(3, 3)))  # fmt: skip
    assert done.layers[0] == deep[0] and done.added == (None, 1)
    assert all(k.startswith("s1/") for k in done.pruned)
    spec = ev.envelope_spec(deep, ENV, (16, 16, 1), 10)
    assert ev.restructure(spec, _stats(deep, lambda *_: 1.0), ENV) == ev.envelope_spec(
        ev.restructure_layers(deep, _stats(deep, lambda *_: 1.0), ENV).layers, ENV, (16, 16, 1), 10)


def test_random_equivalents_keep_each_stages_depth_and_blocks_and_are_keyed():
    layers = ((("1x1",), ("3x3", "5x5"), ev.CELL_OPS), (("3x3",), ("1x1", "5x5sep")))
    draws = [ev.random_equivalent_layers(jax.random.key(s), layers, ENV) for s in range(6)]
    for r in draws:
        assert [len(st) for st in r] == [3, 2]
        assert [sum(map(len, st)) for st in r] == [9, 3]
        assert all(len(layer) >= 1 for st in r for layer in st)
    assert draws[0] == ev.random_equivalent_layers(jax.random.key(0), layers, ENV)
    assert len(set(draws)) > 1
    spec = ev.envelope_spec(layers, ENV, (16, 16, 1), 10)
    assert ev.envelope_layers(ev.random_equivalent(jax.random.key(0), spec, ENV), ENV) == draws[0]


# -- the statistic ---------------------------------------------------------------------------


def test_the_statistic_is_the_released_codes_per_batch_sum_of_normalized_squared_norms():
    layers = ((("1x1", "3x3sep"), ("5x5",)), (("3x3",),))
    spec = ev.envelope_spec(layers, ENV, (8, 8, 1), 3)
    model = build_model(spec, collect_stats=True)
    engine = Engine(model, optax.sgd(0.0))  # a zero step: every batch sees the same weights
    state = engine.init(jax.random.key(0), (8, 8, 1))
    x = jax.random.normal(jax.random.key(1), (2 * 5, 8, 8, 1))
    y = jnp.zeros((10,), jnp.int32)
    orders = jnp.arange(10).reshape(2, 5)
    state, _ = engine.train_steps(state, x, y, orders)
    got = ev.block_statistics(read_stats(state), layers, ENV, batch_size=5)
    # The released code's formula, from the blocks' outputs themselves.
    variables = {"params": state.params, **engine_collections(state)}
    want = {}
    for b in range(2):
        _, inter = model.apply(variables, x[5 * b: 5 * b + 5], train=True,
                               capture_intermediates=True, mutable=["batch_stats", "intermediates"],
                               rngs={"dropout": jax.random.key(0)})  # fmt: skip
        inter = inter["intermediates"]
        for key, path in ev.block_modules(layers, ENV).items():
            node = inter
            for part in path.split("/"):
                node = node[part]
            out = np.asarray(node["__call__"][0], np.float64)
            per_batch = np.mean(np.sum(out**2, axis=0))  # sum over examples, mean over h, w, c
            want[key] = want.get(key, 0.0) + per_batch / 2
    assert set(got) == set(want) == {"s0/l0/1x1", "s0/l0/3x3sep", "s0/l1/5x5", "s1/l0/3x3"}
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-4)
    # In the paper's order the block's output is BatchNorm's: its statistic is BN's alone.
    assert np.ptp(list(got.values())) < 1e-3 * max(got.values())
    # "conv" measures the filters' own output, sum ||W x||^2, which differs from block to block.
    conv_model = build_model(spec, collect_stats="conv")
    conv_state = Engine(conv_model, optax.sgd(0.0)).init(jax.random.key(0), (8, 8, 1))
    conv_state, _ = Engine(conv_model, optax.sgd(0.0)).train_steps(conv_state, x, y, orders)
    conv = ev.block_statistics(read_stats(conv_state), layers, ENV, batch_size=5)
    per_batch = []
    for b in range(2):
        _, inter = model.apply(variables, x[5 * b: 5 * b + 5], train=True,
                               capture_intermediates=True, mutable=["batch_stats", "intermediates"],
                               rngs={"dropout": jax.random.key(0)})  # fmt: skip
        out = np.asarray(inter["intermediates"]["s0b0"]["br0_0"]["conv"]["__call__"][0], np.float64)
        per_batch.append(np.mean(np.sum(out**2, axis=0)))
    assert np.ptp(list(conv.values())) > 0.1 * max(conv.values())
    np.testing.assert_allclose(conv["s0/l0/1x1"], np.mean(per_batch), rtol=1e-4)
    with pytest.raises(ValueError, match="collect_stats: expected False, True, 'output' or 'conv'"):
        build_model(spec, collect_stats="pre")
    var = ev.block_statistics(read_stats(state), layers, ENV, batch_size=5, statistic="variance")
    assert all(0 <= var[k] for k in var) and var != got
    with pytest.raises(ValueError, match="build the model with collect_stats=True"):
        ev.block_statistics({}, layers, ENV, batch_size=5)
    # Collected at the blocks' units only (construction's default): the same values, and no
    # reductions anywhere else (the stem, a separable block's depthwise half).
    config = ev.ConstructionConfig(stages=(2, 1), envelope=ENV, measure="output")
    for stats_at, units in (("blocks", 4), ("all", 7)):  # + the stem, dw and the widener conv
        at_model = ev.statistics_model(spec, dataclasses.replace(config, stats_at=stats_at))
        at_state = Engine(at_model, optax.sgd(0.0)).init(jax.random.key(0), (8, 8, 1))
        at_state, _ = Engine(at_model, optax.sgd(0.0)).train_steps(at_state, x, y, orders)
        sown = read_stats(at_state)
        assert len(jax.tree_util.tree_leaves(sown)) == 2 * units, stats_at
        at = ev.block_statistics(sown, layers, ENV, batch_size=5)
        for key in want:
            np.testing.assert_allclose(at[key], got[key], rtol=1e-5)
    paths = ev.block_modules(layers, ENV).values()
    assert build_model(spec, collect_stats=True, stats_at=iter(paths)).collect_stats.paths == set(paths)
    with pytest.raises(ValueError, match="stats_at: given, but collect_stats is off"):
        build_model(spec, stats_at={"s0b0/br0_0"})
    with pytest.raises(ValueError, match="stats_at: expected a collection of module paths"):
        build_model(spec, collect_stats=True, stats_at="s0b0/br0_0")
    with pytest.raises(ValueError, match="stats_at: expected one of 'blocks', 'all', got 'stem'"):
        dataclasses.replace(config, stats_at="stem")


def engine_collections(state):
    return {k: v for k, v in state.collections.items() if k == "batch_stats"}


# -- the driver ------------------------------------------------------------------------------


def _quick():
    """The configuration of ``fnnjax envelopenet --quick``."""
    return ev.ConstructionConfig.from_notation(
        "6/2-1/2", envelope=ev.EnvelopeConfig(cell=("1x1", "3x3")), iterations=2,
        epochs_per_iteration=3, batch_size=40)  # fmt: skip


def test_construction_is_reproducible_and_a_killed_run_resumes_to_the_same_result(
    tmp_path, monkeypatch, capsys
):
    from fnnjax.cli import main
    from fnnjax.construct.envelope import driver
    from fnnjax.train import load_dataset

    assert main(["envelopenet", "--quick", "--devices", "1", "--out", str(tmp_path / "whole")]) == 0
    printed = capsys.readouterr().out
    assert "EnvelopeNet 6/2-1/2 -> 6/4-3/2 on digits in 2 x 3 statistics epochs + 0 final = 6 epochs (parameters x" in printed
    assert f"fnnjax train --spec {tmp_path / 'whole' / 'final_spec.json'}" in printed
    data = load_dataset("digits", limit_train=400)
    saved = json.loads((tmp_path / "whole/construction.json").read_text())
    assert [r["notation"] for r in saved["records"]] == ["6/2-1/2", "6/3-2/2"]
    # Killed at the end of epoch 2 of iteration 1 (its epoch-1 checkpoint written), then resumed.
    real, calls = driver.block_statistics, []

    def dying(*args, **kwargs):
        calls.append(1)
        if len(calls) == 6:  # iteration 0: 3 epochs + the final read; iteration 1: epoch 2
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(driver, "block_statistics", dying)
    with pytest.raises(KeyboardInterrupt):
        ev.construct(data, _quick(), tmp_path / "cut", log=None, num_devices=1)
    monkeypatch.setattr(driver, "block_statistics", real)
    cut = ev.construct(data, _quick(), tmp_path / "cut", log=None, num_devices=1)
    saved = [json.loads((tmp_path / d / "construction.json").read_text()) for d in ("whole", "cut")]
    for a, b in zip(saved[0]["records"], saved[1]["records"], strict=True):
        for key in ("notation", "statistics", "pruned", "added", "spec", "next_notation"):
            assert a[key] == b[key], key
    assert cut["notation"] == "6/4-3/2"
    record = saved[0]["records"][0]
    assert set(record["statistics"]) == {f"s{i}/l{j}/{op}" for i, n in ((0, 2), (1, 1))
                                         for j in range(n) for op in ("1x1", "3x3")}  # fmt: skip
    assert len(record["pruned"]) == 2 and record["added"] == [{"stage": 0, "layer": 2},
                                                               {"stage": 1, "layer": 1}]  # fmt: skip
    running = json.loads((tmp_path / "whole/iterations/0/statistics.json").read_text())
    assert [r["epoch"] for r in running] == [1, 2, 3]
    assert running[-1]["statistics"] == record["statistics"]
    final = from_json((tmp_path / "whole/final_spec.json").read_text())
    assert final == cut["spec"] and ev.envelope_notation(final, _quick().envelope) == "6/4-3/2"
    for name in ("statistics.png", "widths.png"):
        assert (tmp_path / "whole" / name).stat().st_size > 0
    # Another seed is refused in the same folder, and so are fewer iterations (they would drop
    # records); resume=False moves the old files aside.
    with pytest.raises(ValueError, match=r"holds a different construction \(seed: saved 0, now 1\)"):
        ev.construct(data, _quick(), tmp_path / "cut", seed=1, log=None, num_devices=1)
    with pytest.raises(ValueError, match=r"holds a different construction \(iterations: saved 2, now 1 \(fewer than the 2 done would discard records; pass --iterations 2 or more\)\)"):
        ev.construct(data, dataclasses.replace(_quick(), iterations=1), tmp_path / "cut", log=None)
    assert len(json.loads((tmp_path / "cut/construction.json").read_text())["records"]) == 2
    assert _quick().construction_epochs(100) == 2 * 3 + 100


def test_inheritance_keeps_the_surviving_blocks_weights_and_starts_the_new_cell_fresh(tmp_path):
    from fnnjax.arch import transplant_params
    from fnnjax.train import load_dataset

    env = dataclasses.replace(ENV, width="block", dense_skips=True)
    layers = ((("1x1", "3x3", "5x5sep"), ("3x3", "7x7sep")), (("1x1",),))
    stats = {"s0/l0/1x1": 0.0, "s0/l0/3x3": 5.0, "s0/l0/5x5sep": 1.0, "s0/l1/3x3": 3.0,
             "s0/l1/7x7sep": 4.0, "s1/l0/1x1": 1.0}  # fmt: skip
    done = ev.restructure_layers(layers, stats, env)
    assert done.layers[0][:2] == (("3x3", "5x5sep"), ("3x3", "7x7sep"))  # 1x1 of layer 0 pruned
    kept = ev.inheritance_map(layers, done, env)
    assert kept["s0"] == [0, 1, 2, -1, -1] and kept["s0b0"] == [1, 2] and kept["s0b2"] == [0, 1]
    assert kept["s1"] == [0, 1, -1, -1] and kept["s1b1"] == [0]
    old = ev.envelope_spec(layers, env, (8, 8, 1), 3)
    new = ev.envelope_spec(done.layers, env, (8, 8, 1), 3)
    va = init_variables(build_model(old), jax.random.key(0), (8, 8, 1))
    vb = init_variables(build_model(new), jax.random.key(1), (8, 8, 1))
    moved = transplant_params(old, va, new, vb, kept=kept)
    p_old, p_new, p_fresh = va["params"], moved["params"], vb["params"]
    np.testing.assert_array_equal(p_new["s0b0"]["br0_0"]["conv"]["kernel"],
                                  p_old["s0b0"]["br1_0"]["conv"]["kernel"])  # the 3x3 survivor  # fmt: skip
    np.testing.assert_array_equal(p_new["s0b4"]["br1_0"]["conv"]["kernel"],
                                  p_fresh["s0b4"]["br1_0"]["conv"]["kernel"])  # the new cell  # fmt: skip
    # The construction driver: an inheriting iteration resumed in a new call restores the last.
    # Its first iteration is written as constructions before ``stats_at`` were (statistics at
    # every unit, no ``stats_at`` in construction.json): the resume keeps that layout.
    data = load_dataset("digits", limit_train=120)
    config = dataclasses.replace(_quick(), inherit=True, epochs_per_iteration=1, iterations=1)
    ev.construct(data, dataclasses.replace(config, stats_at="all"), tmp_path, log=None,
                 num_devices=1)  # fmt: skip
    meta = json.loads((tmp_path / "construction.json").read_text())
    del meta["config"]["stats_at"]
    (tmp_path / "construction.json").write_text(json.dumps(meta))
    state = ev.restore_iteration(tmp_path, 0)
    assert "stem0" in read_stats(state)  # a unit construction does not read
    result = ev.construct(data, dataclasses.replace(config, iterations=2), tmp_path, log=None,
                          num_devices=1)  # fmt: skip
    assert [r["inherited"] for r in result["records"]] == [False, True]
    saved = json.loads((tmp_path / "construction.json").read_text())["config"]
    assert saved["stats_at"] == "all"


def test_the_cli_defaults_to_the_released_maxima_for_the_papers_init_only(capsys):
    from fnnjax.cli import build_parser, main
    from fnnjax.cli.envelopenet import envelope_config

    def config(*argv):
        return envelope_config(build_parser().parse_args(["envelopenet", "--out", "x", *argv]))

    assert config().restructure.max_layers == ev.RELEASED_MAX_LAYERS
    assert ev.default_max_layers((10, 1, 1, 1)) == ev.RELEASED_MAX_LAYERS  # what the CLI applies
    assert ev.default_max_layers((4, 1, 1)) is None and ev.default_max_layers((10, 1, 1)) is None
    assert config().notation == "128/10-1-1-1/6" and config().measured_at == "conv"
    assert config("--init", "16/4-1-1/6").restructure.max_layers is None
    assert config("--max-layers", "none").restructure.max_layers is None
    assert config("--order", "released").measured_at == "output"
    assert config("--max-layers", "9,5,3,3", "--inherit").inherit
    for argv, message in ((["--max-layers", "9,x"], "--max-layers: expected comma-separated"),
                          (["--init", "16/4-1/5"], "M = 5, but the cell has 6 blocks"),
                          (["--init", "16/4-1/6", "--max-layers", "9"],
                           "max_layers: expected one value per stage (2)")):  # fmt: skip
        assert main(["envelopenet", "--out", "x", *argv]) == 2
        assert message in capsys.readouterr().err


def test_widths_figure_says_what_its_shading_means(tmp_path):
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt  # noqa: PLC0415

    from fnnjax.construct.envelope.figures import widths_figure  # noqa: PLC0415
    from fnnjax.train.runfolder import save_figure  # noqa: PLC0415

    full = ev.initial_layers([2, 3, 1], ENV)
    layers = (full[0], (full[1][0][:2], *full[1][1:]), full[2])
    figure = widths_figure(layers, ENV)
    assert save_figure(tmp_path / "widths.png", **figure).stat().st_size > 5000
    fig, ax = plt.subplots(figsize=figure["size"])
    figure["draw"](fig, ax)
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts == ["blocks (left axis)", "channels of the layer (right axis)",
                     "shaded: stage 1 (stages alternate)"]  # fmt: skip
    assert [t.get_text() for t in ax.texts] == ["stage 0", "stage 1", "stage 2"]
    assert ax.get_xlabel() == "layer (depth)" and ax.get_ylabel() and ax.get_title()
    assert [round(b.get_height()) for b in ax.patches if b.get_width() < 1] == [6, 6, 2, 6, 6, 6]
    plt.close(fig)
    # One stage: nothing shaded, nothing to explain.
    fig, ax = plt.subplots()
    widths_figure(ev.initial_layers([2], ENV), ENV)["draw"](fig, ax)
    assert not any("shaded" in t.get_text() for t in ax.get_legend().get_texts())
    plt.close(fig)
