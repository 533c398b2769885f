"""ENAS macro search: the search space on the substrate, arcs and their two exports, the controller
and REINFORCE."""

import dataclasses
import itertools
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fnnjax.arch import block_shapes, build_model, from_json, infer_layers, notation, to_json
from fnnjax.arch.build import init_variables
from fnnjax.arch.select import materialize_variables
from fnnjax.construct import enas
from fnnjax.train import Engine

L, C = 4, 4  # reductions after layers 0 and 1 (L // 3 = 1): segments [0], [1], [2, 3]
SHAPE = (8, 8, 1)


def test_arcs_have_the_released_layout_and_text_form():
    assert enas.arc_size(12) == 78 and enas.pool_layers(12) == (3, 7)
    assert enas.stage_of_layers(12) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    assert enas.stage_of_layers(L) == [[0], [1], [2, 3]]
    # layer 0: op 1; layer 1: op 4, skip [l0]; layer 2: op 0, skips [l0, l1]; layer 3: ...
    arc = np.array([1, 4, 1, 0, 0, 1, 5, 1, 0, 1])
    assert enas.arc_to_string(arc, L) == "1 4 1 0 0 1 5 1 0 1"
    np.testing.assert_array_equal(enas.arc_from_string("[1, 4, 1, 0, 0, 1, 5, 1, 0, 1]"), arc)
    sel = enas.arc_to_selection(arc, L)
    assert int(sel["s2b1"]["choice"]) == 5 and sel["s2b1_skip"]["gates"].tolist() == [1, 0, 1]
    np.testing.assert_array_equal(enas.selection_to_arc(sel, L), arc)
    with pytest.raises(ValueError, match=r"arc\[2\] \(a skip bit of layer 1\): expected 0 or 1"):
        enas.check_arc([1, 4, 2, 0, 0, 1, 5, 1, 0, 1], L)
    with pytest.raises(ValueError, match=r"arc\[6\] \(layer 3's op\): expected 0..5, got 6"):
        enas.check_arc([1, 4, 1, 0, 0, 1, 6, 1, 0, 1], L)
    with pytest.raises(ValueError, match="expected 10 integers for 4 layers"):
        enas.check_arc([1, 4], L)
    with pytest.raises(ValueError, match="11 integers is no arc size"):
        enas.arc_from_string(" ".join(["0"] * 11))
    arcs = np.asarray(enas.random_arcs(jax.random.key(0), 12, 50, skip_prob=0.4))
    for a in arcs:
        enas.check_arc(a, 12)
    assert set(arcs[:, 0]) == set(range(6))


def test_the_supernet_computes_each_arcs_search_form_and_a_hundred_arcs_compile_once():
    spec = enas.macro_space(L, C, input_shape=SHAPE, num_classes=3)
    assert spec.stages[1].reduce == C and spec.stages[2].blocks[1].gated_skips == (0, 1, 2)
    released = enas.macro_space(L, C, input_shape=SHAPE, num_classes=3, skips="released")
    assert released.stages[2].blocks[1].gated_skips == (-1, 0, 1)  # prev_layers: stem first
    with pytest.raises(ValueError, match="skips: expected one of"):
        enas.macro_space(L, C, skips="other")
    model = build_model(spec)
    v = init_variables(model, jax.random.key(0), SHAPE)
    x = jax.random.normal(jax.random.key(1), (4, *SHAPE))

    @jax.jit
    def forward(v, arc, x):
        return model.apply({**v, "arch": enas.arc_to_selection(arc, L)}, x)

    arcs = enas.random_arcs(jax.random.key(2), L, 100)
    outs = [forward(v, arcs[p], x) for p in range(100)]
    assert forward._cache_size() == 1  # 100 arcs, one compilation
    assert len({round(float(o[0, 0]), 5) for o in outs}) > 20
    for p in (0, 1):
        arc = np.asarray(arcs[p])
        plain = enas.search_spec(arc, L, C, input_shape=SHAPE, num_classes=3)
        pv = materialize_variables(spec, v, enas.arc_to_selection(arc, L))
        n = sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(pv["params"]))
        assert sum(u.params for u in infer_layers(plain)) == n  # the selected sub-network's count
        np.testing.assert_allclose(build_model(plain).apply(pv, x), outs[p], rtol=1e-5, atol=1e-5)


def test_the_retraining_form_doubles_widths_concatenates_skips_and_trains():
    arc = np.array([1, 4, 1, 0, 0, 1, 5, 1, 0, 1])
    spec = enas.retrain_spec(arc, L, C, input_shape=SHAPE, num_classes=3, dropout=0.2)
    assert from_json(to_json(spec)) == spec
    shapes = block_shapes(spec)
    assert [shapes[p][2] for p in ("s0b0", "s1b0", "s2b1")] == [C, 2 * C, 4 * C]
    assert spec.stages[2].blocks[1].gated_skips == (0, 2)  # bits [1, 0, 1] over layers 0, 1, 2
    assert "{gc0,2}" in notation(spec) and spec.head.dropout == 0.2
    data_x = np.random.default_rng(0).normal(size=(16, *SHAPE)).astype(np.float32)
    data_y = np.arange(16, dtype=np.int32) % 3
    engine = Engine(build_model(spec), optax.sgd(0.05))
    state = engine.init(jax.random.key(0), SHAPE)
    state, metrics = engine.train_steps(state, data_x, data_y, np.arange(16).reshape(2, 8))
    assert np.all(np.isfinite(np.asarray(metrics["loss"])))


def test_an_arcs_log_probability_is_the_sum_of_its_decisions_and_all_arcs_sum_to_one():
    ctrl = enas.Controller(layers=2, lstm_size=16)
    params = enas.init_controller(ctrl, jax.random.key(0))
    out = enas.sample_arcs(ctrl, params, jax.random.key(2), 8)
    assert out["arc"].shape == (8, 3) and out["log_probs"].shape == (8, 3)
    np.testing.assert_allclose(out["log_prob"], out["log_probs"].sum(1), rtol=1e-6)
    forced = jax.jit(jax.vmap(lambda a: ctrl.apply(params, jax.random.key(9), a)))(out["arc"])
    np.testing.assert_allclose(forced["log_prob"], out["log_prob"], rtol=1e-6)
    every = jnp.asarray([(a, b, s) for a, b, s in itertools.product(range(6), range(6), (0, 1))])
    log_p = jax.jit(jax.vmap(lambda a: ctrl.apply(params, jax.random.key(0), a)["log_prob"]))
    probs = jnp.exp(log_p(every))
    assert float(probs.sum()) == pytest.approx(1.0, abs=1e-5)  # a distribution over the 72 arcs
    assert float(out["entropy"][0]) > 0 and float(out["skip_penalty"][0]) >= 0


def test_reinforce_concentrates_on_the_arc_a_synthetic_reward_prefers():
    ctrl = enas.Controller(layers=3, lstm_size=32)
    params = enas.init_controller(ctrl, jax.random.key(0))
    target = jnp.asarray([4, 1, 0, 2, 0, 0])
    tx = optax.adam(0.02, b1=0.0, eps=1e-3)

    @jax.jit
    def step(params, opt, key, baseline):
        arcs = enas.sample_arcs(ctrl, params, key, 20)["arc"]
        reward = jnp.mean(arcs == target, axis=1).astype(jnp.float32)
        grads, aux = jax.grad(enas.reinforce_loss, has_aux=True)(
            params, ctrl, arcs, reward, baseline, skip_weight=0.0, baseline_decay=0.9
        )
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt, aux["baseline"]

    opt, baseline = tx.init(params), jnp.zeros(())
    for i in range(120):
        params, opt, baseline = step(params, opt, jax.random.key(100 + i), baseline)
    arcs = np.asarray(enas.sample_arcs(ctrl, params, jax.random.key(7), 200)["arc"])
    hits = float(np.all(arcs == np.asarray(target), axis=1).mean())
    assert hits > 0.2, hits  # uniform sampling would hit it 1 time in 1,728
    assert float(baseline) > 0.7


def test_the_controllers_adam_is_tensorflows_update_over_100_steps():
    """TF1's AdamOptimizer, as documented: lr_t = lr sqrt(1 - b2^t) / (1 - b1^t),
    theta -= lr_t m_t / (sqrt(v_t) + eps); float64 reference, gradients far below eps as
    REINFORCE's are, then larger ones."""
    rng = np.random.default_rng(0)
    grads = rng.normal(size=(100, 5)) * np.where(np.arange(100)[:, None] < 50, 1e-5, 1e-1)
    lr, b1, b2, eps = 1e-3, 0.0, 0.999, 1e-3
    tx = enas.controller_adam(lr)  # TensorFlow's form, the default
    theta = {"w": jnp.zeros(5, jnp.float32)}
    state = tx.init(theta)
    ref, m, v = np.zeros(5), np.zeros(5), np.zeros(5)
    first = None
    for t, g in enumerate(grads, start=1):
        updates, state = tx.update({"w": jnp.asarray(g, jnp.float32)}, state, theta)
        theta = optax.apply_updates(theta, updates)
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        step = lr * np.sqrt(1 - b2**t) / (1 - b1**t) * m / (np.sqrt(v) + eps)
        ref = ref - step
        np.testing.assert_allclose(-np.asarray(updates["w"]), step, rtol=0, atol=1e-7)
        np.testing.assert_allclose(-np.asarray(updates["w"]), step, rtol=1e-4, atol=1e-12)
        np.testing.assert_allclose(theta["w"], ref, rtol=1e-5, atol=1e-7)  # float32 sums
        if t == 1:
            first = step
    # optax's form adds eps to the bias-corrected sqrt(v_hat): ~1/sqrt(1 - b2) larger at step 1.
    optax_form = enas.controller_adam(lr, form="optax")
    up, _ = optax_form.update({"w": jnp.asarray(grads[0], jnp.float32)},
                              optax_form.init(theta), theta)  # fmt: skip
    assert np.all(np.abs(np.asarray(up["w"]) / first) > 25)
    with pytest.raises(ValueError, match="controller_adam: expected one of"):
        enas.controller_adam(lr, form="torch")


def test_the_paper_preset_temperature_and_the_skip_penalty_in_the_reward():
    paper = enas.SearchConfig.paper(layers=3)
    assert (paper.tanh_constant, paper.temperature, paper.entropy_weight, paper.controller_lr,
            paper.child_l2, paper.child_lr_min, paper.skip_penalty_in, paper.layers) == (
        2.5, 5.0, 0.1, 3.5e-4, 1e-4, 0.001, "reward", 3)  # fmt: skip
    released = enas.SearchConfig()
    assert (released.tanh_constant, released.temperature, released.skip_penalty_in) == (
        1.5, None, "loss")
    # The temperature divides the logits before the tanh: a flatter distribution at the start.
    hot, cool = (enas.Controller(layers=3, lstm_size=8, tanh_constant=2.5, temperature=t)
                 for t in (None, 5.0))  # fmt: skip
    params = enas.init_controller(hot, jax.random.key(0))
    params = jax.tree_util.tree_map(lambda p: p * 20, params)  # sharp logits
    h_hot = float(hot.apply(params, jax.random.key(1))["entropy"])
    h_cool = float(cool.apply(params, jax.random.key(1))["entropy"])
    assert h_cool > h_hot
    # Before the tanh (as released), not after it: logits far beyond T still saturate at +-c,
    # so a huge scale gives the same distribution with or without T (after the tanh, T would
    # cap them at c / T, a near-uniform distribution).
    huge = jax.tree_util.tree_map(lambda p: p * 1e4, params)
    arc = hot.apply(huge, jax.random.key(1))["arc"]
    np.testing.assert_allclose(cool.apply(huge, jax.random.key(1), arc)["log_prob"],
                               hot.apply(huge, jax.random.key(1), arc)["log_prob"], rtol=1e-3)
    # The skip penalty in the reward: R = acc + w_e H - w_s KL, no penalty term in the loss.
    arcs = enas.sample_arcs(hot, params, jax.random.key(2), 4)["arc"]
    acc = jnp.asarray([0.5, 0.6, 0.7, 0.8])
    out = jax.vmap(lambda a: hot.apply(params, jax.random.key(0), a))(arcs)
    kw = dict(entropy_weight=0.1, skip_weight=0.8, baseline_decay=0.9)
    _, in_loss = enas.reinforce_loss(params, hot, arcs, acc, jnp.zeros(()), **kw)
    loss, in_reward = enas.reinforce_loss(params, hot, arcs, acc, jnp.zeros(()),
                                          skip_penalty_in="reward", **kw)  # fmt: skip
    np.testing.assert_allclose(in_loss["reward"], jnp.mean(acc + 0.1 * out["entropy"]), rtol=1e-6)
    np.testing.assert_allclose(in_reward["reward"], jnp.mean(
        acc + 0.1 * out["entropy"] - 0.8 * out["skip_penalty"]), rtol=1e-6)  # fmt: skip
    baselines = enas.moving_baselines(jnp.zeros(()), acc + 0.1 * out["entropy"]
                                      - 0.8 * out["skip_penalty"], 0.9)  # fmt: skip
    expected = jnp.mean(-out["log_prob"] * (acc + 0.1 * out["entropy"]
                                            - 0.8 * out["skip_penalty"] - baselines))  # fmt: skip
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    with pytest.raises(ValueError, match="skip_penalty_in: expected"):
        enas.reinforce_loss(params, hot, arcs, acc, jnp.zeros(()), skip_penalty_in="both")


def test_fnnjax_enas_preset_paper_reaches_the_search(tmp_path, monkeypatch):
    from fnnjax.cli import main

    seen = []

    def no_search(data, config, *args, **kwargs):
        seen.append(config)
        raise KeyboardInterrupt

    monkeypatch.setattr(enas, "search", no_search)
    argv = ["enas", "--quick", "--out", str(tmp_path), "--controller-adam", "optax"]
    assert main([*argv, "--preset", "paper", "--cutout", "2"]) == 130
    assert seen[-1] == enas.SearchConfig.paper(**enas.QUICK_SEARCH, controller_adam="optax", cutout=2)
    assert main(argv) == 130 and seen[-1].tanh_constant == 1.5


def test_a_search_saved_before_the_controllers_adam_setting_resumes_only_with_optax(tmp_path):
    from fnnjax.construct.enas.search import _refuse_another_search
    from fnnjax.train.runfolder import RunFolder, RunMismatchError

    folder = RunFolder(tmp_path, what="search")
    config = enas.SearchConfig(layers=2)
    saved = dataclasses.asdict(config)
    del saved["controller_adam"]  # a folder written before the setting existed
    meta = {"config": saved, "seed": 0}
    now = {"config": dataclasses.asdict(config), "seed": 0}
    with pytest.raises(RunMismatchError,
                       match="controller_adam: saved 'optax', now 'tensorflow'"):  # fmt: skip
        _refuse_another_search(folder, meta, now=now)
    optax_now = dataclasses.asdict(dataclasses.replace(config, controller_adam="optax"))
    _refuse_another_search(folder, meta, now={**now, "config": optax_now})


def test_the_search_trains_with_cutout_when_asked():
    from fnnjax.construct.enas.search import child_augmentation

    plain = child_augmentation(enas.SearchConfig(), "cifar10", (32, 32, 3))
    assert plain.padding == 4 and plain.flip and plain.cutout == 0  # ENAS: no Cutout
    cut = child_augmentation(enas.SearchConfig(cutout=16), "cifar10", (32, 32, 3))
    assert cut.cutout == 16 and cut.padding == 4
    only = child_augmentation(enas.SearchConfig(augment=False, cutout=4), "digits", (8, 8, 1))
    assert only.cutout == 4 and only.padding == 0 and not only.flip
    assert child_augmentation(enas.SearchConfig(augment=False), "digits", (8, 8, 1)) is None
    images = jnp.ones((2, 8, 8, 1))
    assert float(only(jax.random.key(0), images).min()) == 0.0  # a square zeroed


def test_the_baseline_moves_before_each_reward_is_used():
    b = enas.moving_baselines(jnp.asarray(0.0), jnp.asarray([1.0, 1.0, 0.0]), 0.5)
    np.testing.assert_allclose(b, [0.5, 0.75, 0.375])


def test_cosine_restarts_follow_the_released_schedule():
    config = enas.SearchConfig()
    lr = [float(enas.cosine_restarts(jnp.asarray(e * 3), 3, config)) for e in (0, 9, 10, 29, 30, 310)]
    assert lr[0] == lr[2] == lr[4] == lr[5] == pytest.approx(0.05)  # restarts at 10, 30, 70, 150, 310
    assert lr[1] < 0.002 and lr[3] < 0.001


def test_child_gradients_clip_by_global_norm_or_per_tensor():
    grads = {"a": jnp.full((4,), 3.0), "b": jnp.full((1,), 0.5)}  # norms 6 and 0.5
    params = jax.tree_util.tree_map(jnp.zeros_like, grads)

    def first_update(mode):
        config = enas.SearchConfig(child_clip=1.0, clip_mode=mode, child_l2=0.0)
        tx = enas.child_optimizer(config, steps_per_epoch=1)
        updates, _ = tx.update(grads, tx.init(params), params)
        return {k: float(jnp.linalg.norm(v)) / 0.05 for k, v in updates.items()}  # lr 0.05

    per_tensor = first_update("tensor")  # a: 6 -> 1, b: 0.5 stays (Nesterov: x (1 + 0.9))
    assert per_tensor["a"] == pytest.approx(1.9, rel=1e-4)
    assert per_tensor["b"] == pytest.approx(0.95, rel=1e-4)
    total = first_update("global")  # both scaled by 1 / sqrt(36.25)
    assert total["b"] == pytest.approx(0.95 / np.sqrt(36.25), rel=1e-4)
    with pytest.raises(ValueError, match="clip_mode: expected one of 'global', 'tensor'"):
        enas.child_optimizer(enas.SearchConfig(clip_mode="layer"), 1)


def test_a_killed_search_resumes_to_the_same_result_as_the_run_uninterrupted(tmp_path):
    from fnnjax.train import load_dataset

    data = load_dataset("digits", validation_fraction=0.1, limit_train=400)
    config = enas.SearchConfig(layers=2, filters=4, epochs=2, batch_size=64, controller_steps=2,
                               arcs_per_step=4, reward_batch=32, derive_arcs=10, derive_batches=1)  # fmt: skip
    enas.search(data, config, tmp_path / "whole", log=lambda _: None)
    # The same search killed after epoch 0 and resumed.
    first = enas.search(data, dataclasses.replace(config, epochs=1), tmp_path / "cut",
                        log=lambda _: None)  # fmt: skip
    assert len(first["history"]) == 1
    lines = []
    resumed = enas.search(data, config, tmp_path / "cut", log=lines.append)
    assert any("resuming the search after epoch 0" in ln for ln in lines)
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    for name in ("best_arc.txt", "search.jsonl", "arcs.jsonl", "top_arcs.json", "best_spec.json"):
        assert (cut / name).read_text() == (whole / name).read_text(), name  # bitwise the same
    records = [json.loads(ln) for ln in (cut / "search.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1]
    assert {"reward", "entropy", "baseline", "skip_rate", "valid_accuracy"} <= set(records[0])
    assert from_json((cut / "best_spec.json").read_text()) == enas.retrain_spec(
        resumed["best_arc"], 2, 4, input_shape=data.input_shape, num_classes=10)
    top = json.loads((cut / "top_arcs.json").read_text())  # distinct arcs, how often sampled
    assert sum(t["count"] for t in top) == 10 and len({t["arc"] for t in top}) == len(top)
    assert [t["accuracy"] for t in top] == sorted((t["accuracy"] for t in top), reverse=True)
    assert (cut / "search.png").exists()
    with pytest.raises(ValueError, match="hold out at least 32"):
        enas.search(load_dataset("digits", limit_train=200), config)
    # A folder holding another search is refused; --no-resume moves its files aside.
    with pytest.raises(ValueError, match=r"holds a different search \(seed: saved 0, now 1\); "
                       r"to keep both, pass another --out"):  # fmt: skip
        enas.search(data, config, cut, seed=1, log=lambda _: None)
    enas.search(data, dataclasses.replace(config, epochs=1), cut, seed=1, resume=False,
                log=lambda _: None)  # fmt: skip
    archived = list(cut.glob("previous-*"))
    assert len(archived) == 1 and (archived[0] / "arcs.jsonl").read_text() == (
        whole / "arcs.jsonl").read_text()
    assert len((cut / "search.jsonl").read_text().splitlines()) == 1



def test_the_sampled_path_searches_as_the_jitted_supernet(tmp_path):
    from fnnjax.train import load_dataset

    data = load_dataset("digits", validation_fraction=0.1, limit_train=300)
    config = enas.SearchConfig(layers=2, filters=4, epochs=1, batch_size=64, controller_steps=2,
                               arcs_per_step=4, reward_batch=32, derive_arcs=6, derive_batches=2)  # fmt: skip
    runs = {mode: enas.search(data, dataclasses.replace(config, mode=mode), tmp_path / mode,
                              log=lambda _: None)
            for mode in ("sampled", "all")}  # fmt: skip
    sampled, jitted = runs["sampled"], runs["all"]
    assert sampled["execution"] == "sampled" and jitted["execution"] == "all"
    for key in ("child_loss", "child_accuracy", "reward", "entropy", "valid_accuracy"):
        np.testing.assert_allclose(sampled["history"][0][key], jitted["history"][0][key],
                                   rtol=1e-5, err_msg=key)  # fmt: skip
    assert [enas.arc_to_string(t["arc"], 2) for t in sampled["top"]] == [
        enas.arc_to_string(t["arc"], 2) for t in jitted["top"]]
    np.testing.assert_allclose([t["accuracy"] for t in sampled["top"]],
                               [t["accuracy"] for t in jitted["top"]])  # fmt: skip
    record = json.loads((tmp_path / "sampled" / "search.jsonl").read_text().splitlines()[0])
    assert record["execution"] == "sampled"  # the resolved path is recorded with the run
    assert enas.resolve_execution("auto", backend="cpu") == "sampled"


def test_a_folder_of_a_search_on_other_data_is_refused():
    from pathlib import Path

    from fnnjax.construct.enas.search import _refuse_another_search
    from fnnjax.train.runfolder import RunFolder, RunMismatchError

    folder = RunFolder(Path("x"), what="search")
    config = dataclasses.asdict(enas.SearchConfig(layers=2, filters=4))
    meta = {"config": config, "seed": 0, "dataset": {"name": "digits"}}
    _refuse_another_search(folder, meta, now={"config": config, "seed": 0,
                                              "dataset": {"name": "digits"}})  # fmt: skip
    with pytest.raises(RunMismatchError, match=r"x holds a different search \(dataset.name: "
                       r"saved 'digits', now 'fashion_mnist'\)"):  # fmt: skip
        _refuse_another_search(folder, meta, now={"config": config, "seed": 0,
                                                  "dataset": {"name": "fashion_mnist"}})  # fmt: skip
    # More epochs, or another execution path, resume the same search.
    longer = {**config, "epochs": 99, "mode": "sampled"}
    _refuse_another_search(folder, meta, now={"config": longer, "seed": 0,
                                              "dataset": {"name": "digits"}})  # fmt: skip
    del meta["dataset"]  # a checkpoint written before the dataset was recorded: data not compared
    _refuse_another_search(folder, meta, now={"config": config, "seed": 0,
                                              "dataset": {"name": "x"}})  # fmt: skip
    meta["config"] = {k: v for k, v in config.items() if k != "update_stats"}
    # written before the setting existed: resumes at its default, refused otherwise
    _refuse_another_search(folder, meta, now={"config": config, "seed": 0})
    with pytest.raises(RunMismatchError, match="update_stats: saved None, now 'all'"):
        _refuse_another_search(folder, meta, now={"config": {**config, "update_stats": "all"},
                                                  "seed": 0})  # fmt: skip


def test_enas_flag_mistakes_are_one_line_errors(tmp_path, capsys):
    from fnnjax.cli import main

    assert main(["enas", "--clip", "-1", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--clip: expected a norm >= 0 (0: no clipping), got -1.0" in err
    assert len(err.strip().splitlines()) == 1


def _drawn(figure):
    """``figure`` (a ``*_figure`` dict) drawn on a fresh matplotlib figure: ``(fig, axes)``."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, axes = plt.subplots(figure.get("rows", 1), figure.get("cols", 1), figsize=figure["size"],
                             squeeze=False)  # fmt: skip
    figure["draw"](fig, axes if axes.size > 1 else axes[0, 0])
    fig.canvas.draw()
    return fig, [a for a in axes.reshape(-1) if a.axison]


def test_search_figure_gives_every_quantity_its_own_readable_axes(tmp_path):
    from fnnjax.construct.enas.search import search_figure  # noqa: PLC0415
    from fnnjax.train.runfolder import save_figure  # noqa: PLC0415

    # Entropy and skip rate move in the 4th decimal: an offset formatter would print "+4.277".
    history = [{"epoch": e, "execution": "sampled", "child_loss": 2.3 - 0.1 * e,
                "child_accuracy": 0.1 + 0.05 * e, "lr": 0.05 - 0.001 * e, "reward": 0.141 + 1e-4 * e,
                "entropy": 4.2766 + 1e-4 * e, "skip_rate": 0.625 + 1e-4 * e,
                "valid_accuracy": 0.14 + 0.04 * e, "baseline": 0.01 * e} for e in range(6)]  # fmt: skip
    assert save_figure(tmp_path / "search.png", **search_figure(history)).stat().st_size > 5000
    fig, axes = _drawn(search_figure(history))
    plotted = {}
    for ax in axes:
        assert ax.get_title() and ax.get_xlabel() == "epoch" and ax.get_ylabel()
        for axis in (ax.xaxis, ax.yaxis):
            assert not axis.get_major_formatter().get_useOffset()
            assert axis.get_offset_text().get_text() == ""
        assert ax.get_lines() and all(list(ln.get_xdata()) == list(range(6)) for ln in ax.get_lines())
        plotted[ax.get_title()] = {ln.get_label() for ln in ax.get_lines()}
    assert plotted["controller entropy"] == {"entropy"}  # alone on their axes
    assert plotted["skip rate"] == {"skip rate"}
    assert plotted["accuracy"] == {"child (train)", "sampled arcs (validation)"}
    assert len(fig.axes) == 6  # no twin axes
    # Random search has no controller: its panels are left out.
    plain = [{k: h[k] for k in ("epoch", "child_loss", "child_accuracy", "lr")} for h in history]
    _, axes = _drawn(search_figure(plain))
    assert [a.get_title() for a in axes] == ["child loss", "accuracy", "child learning rate"]
