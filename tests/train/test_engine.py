"""The low-level engine: every collection in the state, in-jit statistics, k-step scans,
populations, objectives (regression) and the checkpoint layout check."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fnnjax.arch import (
    Conv,
    Head,
    Pool,
    Spec,
    Stage,
    build_model,
    transplant_opt_state,
    transplant_params,
)
from fnnjax.errors import CheckpointError, ConfigError, DataError
from fnnjax.models import DenseBaseline, describe_spec, model_from_description
from fnnjax.train import (
    Checkpoints,
    Dataset,
    Engine,
    NewModel,
    Split,
    TrainConfig,
    fit,
    init_state,
    load_dataset,
    make_optimizer,
    read_stats,
    regression,
    reset_stats,
    restore_run,
)


def _masked_net(collect_stats=False):
    spec = Spec(input_shape=(8, 8, 1), num_classes=4, stem=(Conv(filters=4),),
                stages=(Stage(blocks=(Conv(filters=6), Pool(), Conv(filters=5))),),
                head=Head())  # fmt: skip
    return build_model(spec, use_masks=True, collect_stats=collect_stats)


@pytest.fixture(scope="module")
def synthetic():
    return load_dataset("synthetic", validation_fraction=0.125)


def test_a_model_with_masks_trains_through_fit_and_the_masks_reach_apply(synthetic):
    config = TrainConfig(epochs=3, batch_size=32, learning_rate=0.01, progress=False,
                         num_devices=1, seed=3)  # fmt: skip
    result = fit(_masked_net(), synthetic, config)
    masks = result.state.collections["masks"]
    assert set(result.state.collections) == {"batch_stats", "masks"}
    assert all(np.all(np.asarray(m) == 1) for m in jax.tree_util.tree_leaves(masks))  # not trained
    assert result.history[-1]["test_accuracy"] > 0.5, result.history  # chance is 0.25
    # The masks are used: silencing every filter of the last conv changes the predictions.
    model, variables = _masked_net(), result.state.variables()
    silenced = jax.tree_util.tree_map(jnp.zeros_like, variables["masks"]["s0b2"])
    off = {**variables, "masks": {**variables["masks"], "s0b2": silenced}}
    x = jnp.asarray(synthetic.test.x[:16])
    assert not np.allclose(model.apply(variables, x), model.apply(off, x))


class _SowsBatchMeans(nn.Module):
    """Sows the mean of each input channel: an independent check of the accumulation."""

    @nn.compact
    def __call__(self, x, *, train=False):
        if self.is_mutable_collection("intermediates"):
            self.sow("intermediates", "channel_mean", x.mean(axis=(0, 1, 2)))
        return nn.Dense(4)(x.reshape(x.shape[0], -1))


def test_statistics_accumulate_inside_jit_across_steps_and_reset(synthetic):
    engine = Engine(_SowsBatchMeans(), optax.sgd(0.01))
    state = engine.init(jax.random.key(0), synthetic.input_shape)
    orders = np.arange(6 * 32).reshape(6, 32)
    x, y = jnp.asarray(synthetic.train.x), jnp.asarray(synthetic.train.y)
    state, metrics = engine.train_steps(state, x, y, orders)
    assert metrics["loss"].shape == (6,) and int(state.collections["stats"]["count"]) == 6
    expected = np.mean([synthetic.train.x[o].mean(axis=(0, 1, 2)) for o in orders], axis=0)
    np.testing.assert_allclose(read_stats(state)["channel_mean"], expected, rtol=1e-5)
    state = reset_stats(state)
    assert int(state.collections["stats"]["count"]) == 0
    state, _ = engine.train_steps(state, x, y, orders[:2])
    expected = np.mean([synthetic.train.x[o].mean(axis=(0, 1, 2)) for o in orders[:2]], axis=0)
    np.testing.assert_allclose(read_stats(state)["channel_mean"], expected, rtol=1e-5)


def test_featuremap_statistics_of_a_spec_net_accumulate_only_in_training(synthetic):
    engine = Engine(_masked_net(collect_stats=True), optax.adam(1e-3))
    state = engine.init(jax.random.key(0), synthetic.input_shape)
    stats = state.collections["stats"]["sum"]
    assert set(stats) == {"stem0", "s0b0", "s0b2"} and stats["s0b0"]["featuremap_msq"].shape == (6,)
    x, y = jnp.asarray(synthetic.train.x), jnp.asarray(synthetic.train.y)
    state, _ = engine.train_steps(state, x, y, np.arange(64).reshape(2, 32))
    means = read_stats(state)
    assert float(means["s0b0"]["featuremap_msq"].min()) >= 0 and float(
        means["s0b0"]["featuremap_msq"].max()) > 0  # fmt: skip
    before = jax.device_get(state.collections["stats"])
    engine.evaluate(state, synthetic.test)  # evaluation sows nothing
    after = jax.device_get(state.collections["stats"])
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(np.array_equal, before, after))


def test_k_steps_in_one_scan_equal_k_single_steps_bitwise(synthetic):
    model = DenseBaseline(num_classes=4, hidden=(16,), input_dropout=0.1)
    engine = Engine(model, optax.adam(1e-3))
    x, y = jnp.asarray(synthetic.train.x), jnp.asarray(synthetic.train.y)
    orders = jnp.asarray(np.random.default_rng(0).permutation(256).reshape(4, 64))
    a = engine.init(jax.random.key(1), synthetic.input_shape)
    for i in range(4):
        a, _ = engine.train_step(a, x, y, orders, i)
    b, _ = engine.train_steps(engine.init(jax.random.key(1), synthetic.input_shape), x, y, orders)
    # The scan itself (what accelerators run; on CPU train_steps dispatches single steps).
    c, metrics = engine._train_steps(engine.init(jax.random.key(1), synthetic.input_shape), x, y,
                                     orders)  # fmt: skip
    assert metrics["loss"].shape == (4,)
    for u, v, w in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b),
                       jax.tree_util.tree_leaves(c), strict=True):  # fmt: skip
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
        np.testing.assert_array_equal(np.asarray(u), np.asarray(w))


def test_a_population_of_masks_is_evaluated_with_one_compile_and_matches_one_by_one(synthetic):
    engine = Engine(_masked_net(), optax.adam(1e-2), eval_batch_size=64)
    state = engine.init(jax.random.key(0), synthetic.input_shape)
    x, y = jnp.asarray(synthetic.train.x), jnp.asarray(synthetic.train.y)
    state, _ = engine.train_steps(state, x, y, np.arange(256).reshape(8, 32))
    masks = state.collections["masks"]
    rng = np.random.default_rng(0)

    def population(p):
        return jax.tree_util.tree_map(
            lambda m: (rng.random((p, *m.shape)) < 0.7).astype(np.float32), masks)  # fmt: skip

    held = jax.tree_util.tree_map(jnp.asarray, population(1))  # a selection the caller keeps
    one = jax.tree_util.tree_map(lambda m: m[0], held)
    trained, _ = engine.train_steps(state.replace(collections={**state.collections, "masks": one}),
                                    x, y, np.arange(64).reshape(2, 32))  # fmt: skip
    state = trained.replace(collections={**trained.collections, "masks": masks})
    assert float(jax.tree_util.tree_leaves(one)[0].sum()) >= 0  # not donated: still readable
    first, second = population(5), population(5)
    scores = engine.evaluate_population(state, synthetic.test, "masks", first)
    engine.evaluate_population(state, synthetic.test, "masks", second)
    assert engine.population_compiles() == 1  # one compile for both
    assert scores["loss"].shape == (5,) and scores["accuracy"].shape == (5,)
    for p in range(5):
        one = jax.tree_util.tree_map(lambda m, p=p: m[p], first)
        alone = engine.evaluate(state.replace(collections={**state.collections, "masks": one}),
                                synthetic.test)  # fmt: skip
        assert alone["accuracy"] == pytest.approx(scores["accuracy"][p], abs=1e-6)
        assert alone["loss"] == pytest.approx(scores["loss"][p], rel=1e-5)
    with pytest.raises(ConfigError, match="state has no 'arch' collection"):
        engine.evaluate_population(state, synthetic.test, "arch", first)
    with pytest.raises(ConfigError, match=r"needs shape \[P, \*leaf shape\]"):
        engine.evaluate_population(state, synthetic.test, "masks", masks)
    with pytest.raises(ConfigError, match=r"got a single selection"):
        engine.evaluate_population(state, synthetic.test, "masks",
                                   jax.tree_util.tree_map(lambda m: m.sum(), masks))  # fmt: skip


def _sine_data(n=512, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, size=(n + 128, 1)).astype(np.float32)
    y = (np.sin(2 * x[:, 0]) + 0.5 * x[:, 0]).astype(np.float32)
    split = lambda a, b: Split(x[a:b], y[a:b])  # noqa: E731
    return Dataset(name="sine", train=split(0, n - 64), validation=split(n - 64, n),
                   test=split(n, n + 128), num_classes=1, input_shape=(1,), mean=(0.0,),
                   std=(1.0,), source="generated")  # fmt: skip


def test_regression_trains_with_mse_on_float_targets_and_keeps_the_lowest_loss_epoch(tmp_path):
    data = _sine_data()
    model = DenseBaseline(num_classes=1, hidden=(64, 64), input_dropout=0.0)
    config = TrainConfig(epochs=12, batch_size=32, learning_rate=1e-2, schedule="cosine",
                         progress=False, num_devices=1)  # fmt: skip
    result = fit(model, data, config, objective="regression", out_dir=tmp_path)
    history = result.history
    assert {"train_loss", "train_mae", "validation_loss", "validation_mae", "test_mae"} <= set(
        history[-1])  # fmt: skip
    assert history[-1]["test_loss"] < 0.5 * history[0]["test_loss"]
    assert result.summary["final_test_loss"] < 0.1 * float(np.var(data.test.y))
    best = min(history, key=lambda h: h["validation_loss"])
    assert result.summary["best_epoch"] == best["epoch"]
    assert "lowest validation loss" in result.summary["best_note"]
    assert (tmp_path / "curves.png").stat().st_size > 1000
    # The objective is part of the run: resuming it under another one is refused by name.
    huber = dataclasses.replace(regression(), name="huber",
                                loss=lambda o, t: optax.huber_loss(o[:, 0], t))  # fmt: skip
    with pytest.raises(CheckpointError, match="objective: saved 'regression', now 'huber'"):
        fit(model, data, config, out_dir=tmp_path, objective=huber)
    with pytest.raises(DataError, match="or objective='regression' for float targets"):
        fit(model, data, config, out_dir=tmp_path)  # classification: the targets are floats
    # An explicit Objective value works the same as its name.
    again = fit(model, data, dataclasses.replace(config, epochs=1), objective=regression())
    assert "train_mae" in again.history[0]


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        (np.zeros((448,), np.int32), "regression needs floating-point targets"),
        (np.zeros((448, 2), np.float32), r"expected \[n, 1\] .* or \[n\]"),
        (np.full((448,), np.nan, np.float32), "contains NaN or infinite values"),
    ],
)
def test_bad_regression_targets_are_one_data_error(targets, message):
    data = _sine_data()
    data = Dataset(**{**data.__dict__, "train": Split(data.train.x, targets)})
    model = DenseBaseline(num_classes=1, hidden=(8,), input_dropout=0.0)
    config = TrainConfig(epochs=1, batch_size=64, progress=False, num_devices=1)
    with pytest.raises(DataError, match=message):
        fit(model, data, config, objective="regression")
    with pytest.raises(ConfigError, match="objective: expected one of classification, regression"):
        fit(model, data, config, objective="ranking")


def test_checkpoints_of_the_old_state_layout_are_refused_with_the_way_out(synthetic, tmp_path):
    model = DenseBaseline(num_classes=4, hidden=(8,), input_dropout=0.0)
    config = TrainConfig(epochs=1, batch_size=64, progress=False, num_devices=1)
    result = fit(model, synthetic, config, out_dir=tmp_path)
    manager = Checkpoints(tmp_path / "checkpoints")
    (step,) = manager.steps()
    meta = manager.read_meta(step)
    manager.close()
    old = Checkpoints(tmp_path / "old" / "checkpoints")
    old.save(step, result.state, {k: v for k, v in meta.items() if k != "state_format"})
    old.close()
    with pytest.raises(CheckpointError, match="train-state format 1 .* --no-resume"):
        fit(model, synthetic, config, out_dir=tmp_path / "old")


def _grow_spec(filters):
    return Spec(input_shape=(8, 8, 1), num_classes=4, stem=(Conv(filters=4),),
                stages=(Stage(blocks=(Conv(filters=filters), Pool(), Conv(filters=5))),),
                head=Head())  # fmt: skip


def _widen_after_epoch_1(config, data, stop_at=None):
    """A callback that widens the first stage conv from 4 to 7 filters after epoch 1."""
    spec_a, spec_b = _grow_spec(4), _grow_spec(7)
    tx = make_optimizer(config, len(data.train) // config.batch_size)

    def callback(record, state):
        if record["epoch"] == stop_at:
            raise _Stop
        if record["epoch"] != 1:
            return None
        model_b = build_model(spec_b)
        fresh = init_state(jax.random.key(5), model_b, data.input_shape, tx)
        variables = transplant_params(spec_a, state.variables(), spec_b, fresh.variables())
        opt_state = transplant_opt_state(tx, spec_a, state.params, state.opt_state, spec_b,
                                         variables["params"])  # fmt: skip
        new = state.replace(params=variables.pop("params"), collections=variables,
                            opt_state=opt_state)  # fmt: skip
        return NewModel(model_b, new, describe_spec(spec_b))

    return callback


class _Stop(Exception):
    pass


def test_a_run_killed_after_a_structure_change_resumes_in_the_new_structure_bitwise(
    synthetic, tmp_path
):
    config = TrainConfig(epochs=3, batch_size=64, learning_rate=3e-3, progress=False,
                         num_devices=1, seed=1)  # fmt: skip
    model_a, description = build_model(_grow_spec(4)), describe_spec(_grow_spec(4))
    whole = fit(model_a, synthetic, config, description=description,
                on_epoch_end=_widen_after_epoch_1(config, synthetic))  # fmt: skip
    assert whole.description == describe_spec(_grow_spec(7))
    assert whole.state.params["s0b0"]["conv"]["kernel"].shape[-1] == 7
    assert len(whole.history) == 3 and whole.summary["final_model"] == whole.description

    with pytest.raises(_Stop):  # killed in epoch 2, after the change was saved with epoch 1
        fit(model_a, synthetic, config, out_dir=tmp_path, description=description,
            on_epoch_end=_widen_after_epoch_1(config, synthetic, stop_at=2))  # fmt: skip
    with pytest.raises(CheckpointError, match="holds a changed structure .* pass rebuild="):
        fit(model_a, synthetic, config, out_dir=tmp_path, description=description)
    resumed = fit(model_a, synthetic, config, out_dir=tmp_path, description=description,
                  on_epoch_end=_widen_after_epoch_1(config, synthetic),
                  rebuild=model_from_description)  # fmt: skip
    for u, v in zip(jax.tree_util.tree_leaves(whole.state), jax.tree_util.tree_leaves(resumed.state),
                    strict=True):  # fmt: skip
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]

    # The folder alone gives the model and state back (no template model).
    model, state, meta = restore_run(tmp_path, model_from_description)
    assert meta["model"] == describe_spec(_grow_spec(7)) and model.spec == _grow_spec(7)
    for u, v in zip(jax.tree_util.tree_leaves(whole.state), jax.tree_util.tree_leaves(state),
                    strict=True):  # fmt: skip
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def test_a_callback_that_returns_something_else_is_one_clear_error(synthetic):
    config = TrainConfig(epochs=1, batch_size=64, progress=False, num_devices=1)
    model = DenseBaseline(num_classes=4, hidden=(8,), input_dropout=0.0)
    with pytest.raises(ConfigError, match="on_epoch_end returned dict; expected None or a"):
        fit(model, synthetic, config, on_epoch_end=lambda record, state: {"model": model})


def test_a_population_split_over_8_devices_scores_and_ranks_like_one_device(synthetic):
    from fnnjax.train import make_mesh

    one = Engine(_masked_net(), optax.adam(1e-2), eval_batch_size=64)
    state = one.init(jax.random.key(0), synthetic.input_shape)
    x, y = jnp.asarray(synthetic.train.x), jnp.asarray(synthetic.train.y)
    state, _ = one.train_steps(state, x, y, np.arange(128).reshape(4, 32))
    rng = np.random.default_rng(1)
    population = jax.tree_util.tree_map(  # 13 candidates: not a multiple of 8 (padded)
        lambda m: (rng.random((13, *m.shape)) < 0.6).astype(np.float32), state.collections["masks"])
    eight = Engine(_masked_net(), optax.adam(1e-2), mesh=make_mesh(8), eval_batch_size=64)
    state8 = jax.device_put(jax.device_get(state), jax.sharding.NamedSharding(eight.mesh, jax.sharding.PartitionSpec()))
    a = one.evaluate_population(state, synthetic.test, "masks", population)
    b = eight.evaluate_population(state8, synthetic.test, "masks", population)
    assert a["loss"].shape == b["loss"].shape == (13,)
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(a["accuracy"], b["accuracy"], atol=1e-6)
    assert list(np.argsort(a["loss"], kind="stable")) == list(np.argsort(b["loss"], kind="stable"))


def test_a_new_model_state_is_checked_against_its_model_and_missing_statistics_start_at_zero(
    synthetic,
):
    config = TrainConfig(epochs=2, batch_size=64, progress=False, num_devices=1)
    tx = make_optimizer(config, len(synthetic.train) // config.batch_size)
    seen = []

    def change(stale_opt_state):
        def callback(record, state):
            if record["epoch"] != 1:
                seen.append(state.collections.get("stats"))
                return None
            model_b = build_model(_grow_spec(7), collect_stats=True)
            fresh = init_state(jax.random.key(5), model_b, synthetic.input_shape, tx)
            variables = transplant_params(_grow_spec(4), state.variables(), _grow_spec(7),
                                          fresh.variables())  # fmt: skip
            opt = state.opt_state if stale_opt_state else fresh.opt_state
            new = state.replace(params=variables.pop("params"), collections=variables, opt_state=opt)
            return NewModel(model_b, new, describe_spec(_grow_spec(7), collect_stats=True))

        return callback

    fit(build_model(_grow_spec(4)), synthetic, config, on_epoch_end=change(False))
    assert seen and int(seen[0]["count"]) == len(synthetic.train) // 64  # stats accumulated
    with pytest.raises(ConfigError, match=r"NewModel.state.opt_state does not fit .*s0b0.*expected"):
        fit(build_model(_grow_spec(4)), synthetic, config, on_epoch_end=change(True))


def test_a_template_that_refuses_is_not_damage_and_moves_nothing(synthetic, tmp_path):
    model = DenseBaseline(num_classes=4, hidden=(8,), input_dropout=0.0)
    fit(model, synthetic, TrainConfig(epochs=2, batch_size=64, progress=False, num_devices=1),
        out_dir=tmp_path)  # fmt: skip
    manager = Checkpoints(tmp_path / "checkpoints")

    def refuse(meta):
        raise CheckpointError("pass rebuild=...")

    with pytest.raises(CheckpointError, match="pass rebuild"):
        manager.restore_latest(refuse)
    assert len(manager.steps()) == 2 and not (tmp_path / "damaged").exists()
    manager.close()
    empty = Engine(model, optax.adam(1e-3))
    with pytest.raises(DataError, match="the evaluation split is empty"):
        empty.evaluate(empty.init(jax.random.key(0), synthetic.input_shape), synthetic.validation.__class__(
            synthetic.test.x[:0], synthetic.test.y[:0]))  # fmt: skip
