"""NHN's SmoothInit and DNP kernel pruning (section 2.2): the smoothing equals a float64 reference
convolution; DNP prunes exactly the kernels under its threshold, through the per-kernel masks."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.signal import convolve2d

from fnnjax.arch import Conv, Head, Spec, Stage, build_model
from fnnjax.arch.build import init_variables
from fnnjax.construct import nhn


def _reference_smooth(kernel, sigma):
    """float64, slice by slice: zero-padded 'same' 2-D convolution with the Gaussian."""
    r = np.arange(3) - 1
    g = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma**2))
    g /= g.sum()
    k = np.asarray(kernel, np.float64)
    out = np.empty_like(k)
    for i in range(k.shape[2]):
        for o in range(k.shape[3]):
            out[:, :, i, o] = convolve2d(k[:, :, i, o], g, mode="same", boundary="fill")
    return out


@pytest.mark.parametrize("size,sigma", [(3, 1.0), (5, 0.7)])
def test_smoothing_equals_a_float64_reference_convolution(size, sigma):
    kernel = np.random.default_rng(size).normal(size=(size, size, 3, 4))
    want = _reference_smooth(kernel, sigma)
    with jax.enable_x64(True):
        got = nhn.smooth_kernel(jnp.asarray(kernel, jnp.float64), sigma)
        assert got.dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12, atol=1e-14)
    got32 = nhn.smooth_kernel(jnp.asarray(kernel, jnp.float32), sigma)
    np.testing.assert_allclose(np.asarray(got32), want, rtol=1e-5, atol=1e-6)
    assert nhn.gaussian_filter(sigma).sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="sigma: expected a positive number"):
        nhn.gaussian_filter(0.0)


def _net():
    return Spec(input_shape=(8, 8, 2), num_classes=3, stem=(Conv(filters=4),),
                stages=(Stage(blocks=(Conv(filters=6, kernel=5), Conv(filters=6, kernel=1),
                                      Conv(filters=6, kernel=3, groups=6))),),
                head=Head())  # fmt: skip


def test_smooth_init_smooths_the_3x3_and_5x5_kernels_only():
    spec = _net()
    params = init_variables(build_model(spec), jax.random.key(0), spec.input_shape)["params"]
    smoothed = nhn.smooth_init(params, sigma=1.0)
    paths = {"/".join(p) for p in nhn.smoothable_kernels(params)}
    assert paths == {"stem0/conv/kernel", "s0b0/conv/kernel", "s0b2/conv/kernel"}
    for name in ("stem0", "s0b0", "s0b2"):
        before, after = params[name]["conv"]["kernel"], smoothed[name]["conv"]["kernel"]
        np.testing.assert_allclose(after, _reference_smooth(before, 1.0), rtol=1e-5, atol=1e-6)
        assert nhn.kernel_std(after).mean() < nhn.kernel_std(before).mean()  # flatter
    np.testing.assert_array_equal(
        smoothed["s0b1"]["conv"]["kernel"], params["s0b1"]["conv"]["kernel"]
    )
    assert set(nhn.prunable_kernels(params)) == {"stem0", "s0b0"}  # s0b2: one input per filter
    rescaled = nhn.smooth_init(params, rescale=True)
    assert float(jnp.std(rescaled["s0b0"]["conv"]["kernel"])) == pytest.approx(
        float(jnp.std(params["s0b0"]["conv"]["kernel"])), rel=1e-5
    )


def _made_up(spec):
    """Variables whose s0b0 kernel slices have known standard deviations: slice (i, o) is a
    centred checkerboard of amplitude (i * 6 + o) / 10: its std is that amplitude times
    sqrt(1 - 1/25^2)."""
    model = build_model(spec, use_masks=True)
    v = init_variables(model, jax.random.key(1), spec.input_shape)
    board = np.where(np.add.outer(np.arange(5), np.arange(5)) % 2 == 0, 1.0, -1.0)
    amp = (np.arange(4)[:, None] * 6 + np.arange(6)[None, :]) / 10.0  # [cin, cout]
    kernel = board[:, :, None, None] * amp[None, None]
    kernel = kernel - kernel.mean(axis=(0, 1))  # centre: std = amp * sqrt(1 - (1/25)^2)
    params = jax.tree_util.tree_map(lambda a: a, v["params"])
    params["s0b0"]["conv"]["kernel"] = jnp.asarray(kernel, jnp.float32)
    return model, {**v, "params": params}, amp * np.sqrt(1 - (1 / 25) ** 2)


def test_dnp_prunes_exactly_the_kernels_under_the_threshold_and_masks_equal_zeroed_kernels():
    spec = _net()
    model, v, std = _made_up(spec)
    np.testing.assert_allclose(
        nhn.kernel_std(v["params"]["s0b0"]["conv"]["kernel"]), std, rtol=1e-6
    )
    result = nhn.dnp(v["params"], v["masks"], threshold={"stem0": 0.0, "s0b0": 0.95})
    mask = np.asarray(result.masks["s0b0"]["kernel_mask"])
    np.testing.assert_array_equal(mask, (std >= 0.95).astype(np.float32))
    assert result.layers["s0b0"]["pruned"] == int((std < 0.95).sum()) == 10
    assert result.layers["stem0"]["pruned"] == 0
    assert result.total["params_pruned"] == 10 * 25
    assert 0 < result.total["params_ratio_all"] < result.total["pruned"] / result.total["kernels"]
    # The masked model computes what the model with those kernels zeroed computes.
    x = jax.random.normal(jax.random.key(2), (4, *spec.input_shape))
    masked = model.apply({**v, "masks": result.masks}, x)
    zeroed = jax.tree_util.tree_map(lambda a: a, v["params"])
    zeroed["s0b0"]["conv"]["kernel"] = v["params"]["s0b0"]["conv"]["kernel"] * mask
    np.testing.assert_allclose(
        masked, model.apply({**v, "params": zeroed}, x), rtol=1e-5, atol=1e-6
    )
    # Pruning again keeps what was pruned, whatever the new threshold.
    again = nhn.dnp(v["params"], result.masks, threshold={"stem0": 0.0, "s0b0": 0.0})
    np.testing.assert_array_equal(np.asarray(again.masks["s0b0"]["kernel_mask"]), mask)
    # ... and a ratio counts them: half of s0b0 in total, its 10 pruned plus the next 2 flattest
    half = nhn.dnp(v["params"], result.masks, ratio=0.5, per_layer=True)
    assert half.layers["s0b0"]["pruned"] == 12
    assert (
        nhn.dnp(v["params"], v["masks"], ratio=0.07, per_layer=True).layers["s0b0"]["pruned"] == 2
    )


def test_dnp_quantiles_prune_a_ratio_globally_or_per_layer():
    spec = _net()
    _, v, std = _made_up(spec)
    n_stem = 2 * 4  # stem: 2 input channels x 4 filters; s0b0: 4 x 6
    per_layer = nhn.dnp(v["params"], v["masks"], ratio=0.5, per_layer=True)
    assert per_layer.layers["stem0"]["pruned"] == n_stem // 2
    assert per_layer.layers["s0b0"]["pruned"] == 12
    pruned = np.asarray(per_layer.masks["s0b0"]["kernel_mask"]) == 0
    assert std[pruned].max() < std[~pruned].min()  # the flattest half
    glob = nhn.dnp(v["params"], v["masks"], ratio=0.5)
    assert glob.total["pruned"] == (n_stem + 24) // 2
    # one cut over both layers: every pruned kernel is flatter than every kept one, and the
    # layers lose different shares (the stem's random kernels sit among s0b0's 0.0-2.3)
    stds = {u: nhn.kernel_std(v["params"][u]["conv"]["kernel"]) for u in ("stem0", "s0b0")}
    cut = {u: np.asarray(glob.masks[u]["kernel_mask"]) == 0 for u in stds}
    pruned_max = max(stds[u][cut[u]].max() for u in stds if cut[u].any())
    kept_min = min(stds[u][~cut[u]].min() for u in stds if (~cut[u]).any())
    assert pruned_max < kept_min
    assert glob.layers["stem0"]["ratio"] != glob.layers["s0b0"]["ratio"]
    assert nhn.dnp(v["params"], v["masks"], ratio=1.0).total["ratio"] == 1.0
    assert nhn.dnp(v["params"], v["masks"], ratio=0.0).total["pruned"] == 0
    # The stem left out: not ranked, not pruned, its mask untouched.
    no_stem = nhn.dnp(v["params"], v["masks"], ratio=0.5, exclude=("stem0",))
    assert set(no_stem.layers) == {"s0b0"} and no_stem.layers["s0b0"]["pruned"] == 12
    np.testing.assert_array_equal(no_stem.masks["stem0"]["kernel_mask"], v["masks"]["stem0"]["kernel_mask"])
    with pytest.raises(ValueError, match="prune_scope: expected"):
        nhn.NhnConfig(prune_scope="unit")
    with pytest.raises(ValueError, match=r"exclude: \['stem'\] are no prunable units"):
        nhn.dnp(v["params"], v["masks"], ratio=0.5, exclude=("stem",))


def test_eligible_channels_are_those_whose_filter_kept_a_kernel_through_dnp():
    """Item 6's choice: a direction may read a channel whose producing filter survived DNP;
    a source DNP leaves whole (a 1x1 merge, the stem) keeps every channel eligible."""
    spec = Spec(input_shape=(8, 8, 2), num_classes=3, stem=(Conv(filters=4),),
                stages=(Stage(blocks=(Conv(filters=4, kernel=3), Conv(filters=4, kernel=3))),),
                head=Head())  # fmt: skip
    v = init_variables(build_model(spec, use_masks=True), jax.random.key(0), spec.input_shape)
    masks = jax.tree_util.tree_map(np.asarray, v["masks"])
    masks["s0b0"]["kernel_mask"] = masks["s0b0"]["kernel_mask"].copy()
    masks["s0b0"]["kernel_mask"][:, 1] = 0  # filter 1 of block 0 lost every kernel
    eligible = nhn.eligible_channels(spec, {**v, "masks": masks},
                                     {"e0": (0, 4), "stem": (-1, 4)})  # fmt: skip
    np.testing.assert_array_equal(eligible["e0"], [True, False, True, True])
    np.testing.assert_array_equal(eligible["stem"], [True] * 4)


def test_dnp_mistakes_are_one_clear_error():
    spec = _net()
    _, v, _ = _made_up(spec)
    with pytest.raises(ValueError, match="give exactly one of ratio"):
        nhn.dnp(v["params"], v["masks"])
    with pytest.raises(ValueError, match="give exactly one of ratio"):
        nhn.dnp(v["params"], v["masks"], ratio=0.5, threshold=0.1)
    with pytest.raises(ValueError, match=r"ratio: expected a number in \[0, 1\], got 85"):
        nhn.dnp(v["params"], v["masks"], ratio=85)
    with pytest.raises(ValueError, match="masks: no kernel_mask for"):
        nhn.dnp(v["params"], {}, ratio=0.5)
    with pytest.raises(
        ValueError, match=r"threshold: expected one value per prunable layer .*missing \['stem0'\]"
    ):
        nhn.dnp(v["params"], v["masks"], threshold={"s0b0": 0.1})
    # A MobileNet's 3x3 kernels are depthwise: the error says how to prune them.
    from fnnjax.arch import build_model, init_variables, zoo_spec
    from fnnjax.construct.templates import width_multiplier

    mobile = width_multiplier(zoo_spec("mobilenet", input_shape=(8, 8, 1)), 0.125)
    mv = init_variables(build_model(mobile, use_masks=True), jax.random.key(0), (8, 8, 1),
                        abstract=True)  # fmt: skip
    dense_ones = [u for u in nhn.prunable_kernels(mv["params"]) if u]
    with pytest.raises(ValueError, match="only such kernels are depthwise.*depthwise=True"):
        nhn.dnp(mv["params"], mv["masks"], ratio=0.5, exclude=dense_ones)
    assert nhn.dnp(jax.tree_util.tree_map(lambda a: np.ones(a.shape, a.dtype), mv["params"]),
                   jax.tree_util.tree_map(lambda a: np.ones(a.shape, a.dtype), mv["masks"]),
                   ratio=0.5, depthwise=True).total["kernels"] > 0  # fmt: skip


def test_grouped_conv_head_starts_as_average_pooling_and_follows_surgery():
    from fnnjax.arch import analytic_counts, from_json, notation, to_json, transplant_params

    def spec(pool, width=5):
        return Spec(input_shape=(8, 8, 3), num_classes=4, head=Head(pool=pool),
                    stages=(Stage(blocks=(Conv(filters=6, kernel=3), Conv(filters=width))),))  # fmt: skip

    grouped, avg = spec("grouped"), spec("avg")
    assert from_json(to_json(grouped)) == grouped and notation(grouped).endswith("|| gconv-fc4")
    x = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
    v = build_model(grouped).init(jax.random.key(0), x[:1])
    assert v["params"]["head"]["pool"]["kernel"].shape == (8, 8, 1, 5)  # VALID, groups = channels
    plain = {**v, "params": {**v["params"], "head": {"out": v["params"]["head"]["out"]}}}
    np.testing.assert_allclose(build_model(grouped).apply(v, x), build_model(avg).apply(plain, x),
                               rtol=1e-5, atol=1e-6)  # fmt: skip
    # The kernel is learned: each channel a weighted sum of its map (the paper's grouped conv).
    k = jax.random.normal(jax.random.key(2), (8, 8, 1, 5))
    v = {**v, "params": {**v["params"], "head": {**v["params"]["head"], "pool": {"kernel": k}}}}
    feats = build_model(grouped).apply(v, x, capture_intermediates=True, mutable=["intermediates"])
    pooled = feats[1]["intermediates"]["head"]["pool"]["__call__"][0]
    body = build_model(avg.replace(head=Head())).apply(plain, x, capture_intermediates=True,
                                                     mutable=["intermediates"])[1]  # fmt: skip
    y = body["intermediates"]["s0b1"]["__call__"][0]
    np.testing.assert_allclose(pooled.reshape(2, 5), jnp.einsum("bhwc,hwc->bc", y, k[:, :, 0]),
                               rtol=1e-4, atol=1e-5)  # fmt: skip
    assert analytic_counts(grouped)["params"] - analytic_counts(avg)["params"] == 8 * 8 * 5
    # Surgery: the pooling kernel follows the kept channels; a new grouped head starts as avg.
    small = spec("grouped", width=3)
    fresh = build_model(small).init(jax.random.key(3), x[:1])
    moved = transplant_params(grouped, v, small, fresh, kept={"s0b1": [4, 0, 2]})
    np.testing.assert_array_equal(moved["params"]["head"]["pool"]["kernel"], k[..., [4, 0, 2]])
    back = transplant_params(
        avg, plain, grouped, build_model(grouped).init(jax.random.key(4), x[:1])
    )
    np.testing.assert_allclose(back["params"]["head"]["pool"]["kernel"], 1 / 64)
    np.testing.assert_array_equal(
        back["params"]["head"]["out"]["kernel"], plain["params"]["head"]["out"]["kernel"]
    )
    with pytest.raises(ValueError, match="head.pool: 'grouped' needs a square feature map"):
        analytic_counts(Spec(input_shape=(8, 6, 3), num_classes=4, head=Head(pool="grouped"),
                             stages=(Stage(blocks=(Conv(filters=4),)),)))  # fmt: skip
    with pytest.raises(ValueError, match="head.pool"):
        Spec(input_shape=(8, 8, 3), num_classes=4, head=Head(pool="max"),
             stages=(Stage(blocks=(Conv(filters=4),)),))  # fmt: skip


def _perturbed(model, x, seed=0):
    """Variables with non-trivial BatchNorm statistics and positive BN shifts (so that input-less
    filters emit non-zero constants), every mask at one."""
    v = model.init(jax.random.key(seed), x)
    keys = iter(jax.random.split(jax.random.key(seed + 1), 1000))
    v = {**v, "params": jax.tree_util.tree_map_with_path(
        lambda p, a: a + 0.3 * jax.random.normal(next(keys), a.shape)
        + (1.0 if "bn" in str(p) and "bias" in str(p) else 0.0), v["params"])}  # fmt: skip
    v["batch_stats"] = jax.tree_util.tree_map(
        lambda a: jnp.abs(a + 0.3 * jax.random.normal(next(keys), a.shape)) + 0.5, v["batch_stats"]
    )
    v["masks"] = jax.tree_util.tree_map(lambda a: np.ones(a.shape, np.float32), v["masks"])
    return v


def test_cleanup_removes_outputless_neurons_and_folds_inputless_ones_exactly():
    from fnnjax.arch import Cell

    def pair(a, b):
        return Cell(branches=((Conv(filters=a, kernel=1), Conv(filters=b, kernel=3)),))

    spec = Spec(input_shape=(8, 8, 3), num_classes=4, head=Head(pool="grouped"),
                stages=(Stage(blocks=(pair(6, 5), Conv(filters=4, kernel=1), pair(6, 5))),))  # fmt: skip
    model = build_model(spec, use_masks=True)
    x = jax.random.normal(jax.random.key(1), (3, 8, 8, 3))
    v = _perturbed(model, x)
    v["masks"]["s0b0"]["br0_1"]["kernel_mask"][[1, 3], :] = 0  # 1x1 filters 1, 3: output-less
    v["masks"]["s0b0"]["br0_1"]["kernel_mask"][:, 2] = 0  # input-less, read by a 1x1 conv + BN
    v["masks"]["s0b2"]["br0_1"]["kernel_mask"][:, [0, 4]] = 0  # input-less, read by the head
    out = nhn.clean_up(spec, v)
    assert out.removed == {"s0b0/br0_0": [1, 3], "s0b0/br0_1": [2], "s0b2/br0_1": [0, 4]}
    assert out.folded == {"s0b0/br0_1": [2], "s0b2/br0_1": [0, 4]} and out.kept_constant == {}
    widths = [[op.filters for op in b.branches[0]] if hasattr(b, "branches") else b.filters
              for b in out.spec.stages[0].blocks]  # fmt: skip
    assert widths == [[4, 4], 4, [6, 3]] and out.params["after"] < out.params["before"]
    before = model.apply(v, x)
    assert np.abs(np.asarray(before)).max() > 0.1
    after = build_model(out.spec, use_masks=True).apply(out.variables, x)
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)
    # Dropping output-less neurons alone is exact in training mode too (batch statistics).
    exact = nhn.clean_up(spec, v, fold=False)
    assert exact.removed == {"s0b0/br0_0": [1, 3]}
    assert exact.kept_constant == {"s0b0/br0_1": [2], "s0b2/br0_1": [0, 4]}
    y0, _ = model.apply(v, x, train=True, mutable=["batch_stats"])
    y1, _ = build_model(exact.spec, use_masks=True).apply(exact.variables, x, train=True,
                                                         mutable=["batch_stats"])  # fmt: skip
    np.testing.assert_allclose(y1, y0, rtol=1e-5, atol=1e-5)


def test_cleanup_keeps_inputless_neurons_it_cannot_fold_exactly():
    from fnnjax.construct import enas

    # A 3x3 reader: its zero padding makes a constant map position-dependent, so it stays.
    spec = Spec(input_shape=(8, 8, 3), num_classes=4, stages=(Stage(blocks=(
        Conv(filters=5, kernel=3), Conv(filters=4, kernel=3))),))  # fmt: skip
    model = build_model(spec, use_masks=True)
    x = jax.random.normal(jax.random.key(1), (3, 8, 8, 3))
    v = _perturbed(model, x)
    v["masks"]["s0b0"]["kernel_mask"][:, 1] = 0
    out = nhn.clean_up(spec, v)
    assert out.removed == {} and out.kept_constant == {"s0b0": [1]} and out.spec == spec
    # ENAS's fixed-arc child: a layer's kxk output feeds its concat_conv merge, whose width
    # follows the layer's, so input-less filters there stay; output-less 1x1 filters go.
    arc = enas.arc_from_string("0 2 1 0 0 1", 3)
    spec = enas.retrain_spec(arc, 3, 6, input_shape=(8, 8, 3), num_classes=4)
    model = build_model(spec, use_masks=True)
    v = _perturbed(model, x)
    v["masks"]["s1b0"]["br0_1"]["kernel_mask"][:, 3] = 0  # layer 1 (after the merge-less layer 0)
    v["masks"]["s2b0"]["br0_1"]["kernel_mask"][[0, 5], :] = 0
    out = nhn.clean_up(spec, v)
    assert out.kept_constant == {"s1b0/br0_1": [3]}
    assert out.removed == {"s2b0/br0_0": [0, 5]}
    np.testing.assert_allclose(build_model(out.spec, use_masks=True).apply(out.variables, x),
                               model.apply(v, x), rtol=1e-5, atol=1e-5)  # fmt: skip
    with pytest.raises(ValueError, match="no 'masks' collection"):
        nhn.clean_up(spec, {"params": v["params"]})


def test_cleanup_folds_into_a_grouped_head_behind_a_two_branch_cell():
    from fnnjax.arch import Cell

    cell = Cell(branches=((Conv(filters=3, kernel=3),), (Conv(filters=4, kernel=3),)))
    spec = Spec(input_shape=(6, 6, 2), num_classes=3, head=Head(pool="grouped"),
                stages=(Stage(blocks=(cell,)),))  # fmt: skip
    model = build_model(spec, use_masks=True)
    x = jax.random.normal(jax.random.key(1), (3, 6, 6, 2))
    v = _perturbed(model, x)
    v["params"]["head"]["pool"]["kernel"] = jax.random.normal(jax.random.key(5), (6, 6, 1, 7))
    v["masks"]["s0b0"]["br1_0"]["kernel_mask"][:, 2] = 0  # channel 3 + 2 of the concat
    out = nhn.clean_up(spec, v)
    assert out.folded == {"s0b0/br1_0": [2]}
    np.testing.assert_allclose(build_model(out.spec, use_masks=True).apply(out.variables, x),
                               model.apply(v, x), rtol=1e-5, atol=1e-5)  # fmt: skip


def test_a_pipeline_saved_before_a_setting_existed_still_resumes_while_it_is_at_its_default():
    from fnnjax.construct.nhn.pipeline import NhnConfig
    from fnnjax.train.runfolder import run_differences

    defaults = {"config": NhnConfig().to_dict()}
    now = {"arc": "0", "config": NhnConfig(prune_ratio=0.5).to_dict()}
    saved = {"arc": "0", "config": NhnConfig(prune_ratio=0.5).to_dict()}
    del saved["config"]["lds"]["train_mode"], saved["config"]["head_pool"]  # added later
    assert run_differences(saved, now, defaults=defaults) == []
    changed = {"arc": "0", "config": NhnConfig(prune_ratio=0.5, head_pool="avg").to_dict()}
    assert run_differences(saved, changed, defaults=defaults) == [
        ("config.head_pool", None, "avg")]  # a new setting, not at its default


def test_fnnjax_nhn_wires_an_arc_by_its_recorded_or_given_skip_convention(tmp_path, monkeypatch,
                                                                          capsys):  # fmt: skip
    """An arc of the released code keeps the released child's wiring (skip bit j reads the stem,
    then layers 0..k-2); fnnjax enas's best_arc.json tells which convention an arc was searched
    in; an arc with skips and no convention is refused, one without skips needs none."""
    import json

    import fnnjax.train
    from fnnjax.cli import main
    from fnnjax.construct import enas

    trained = []

    def first_training_only(model, *args, **kwargs):
        trained.append(model.spec)
        raise KeyboardInterrupt  # stop after the base network is built

    monkeypatch.setattr(fnnjax.train, "fit", first_training_only)
    arc = "0 2 1 0 0 1"  # 3 layers; layer 1 skips to 0 (or the stem), layer 2 to 1 (or 0)
    txt = tmp_path / "best_arc.txt"
    txt.write_text(arc + "\n")

    def base_wiring(*flags):
        trained.clear()
        out = tmp_path / f"o{len(list(tmp_path.glob('o*')))}"  # a fresh folder per run
        code = main(["nhn", "--quick", "--arc", str(txt), *flags, "--out", str(out)])
        return code, ([b.gated_skips for st in trained[0].stages for b in st.blocks] if trained
                      else None)  # fmt: skip

    code, wiring = base_wiring("--skips", "released")
    assert code == 130 and wiring == [(), (-1,), (0,)]  # the released child's prev_layers
    released = enas.retrain_spec(enas.arc_from_string(arc), 3, 4, input_shape=(8, 8, 1),
                                 num_classes=10, skips="released", head_pool="grouped")  # fmt: skip
    assert [b.gated_skips for st in released.stages for b in st.blocks] == wiring
    assert base_wiring("--skips", "paper")[1] == [(), (0,), (1,)]
    # No convention recorded or given: refused in one line naming --skips.
    assert base_wiring()[0] == 2
    assert "--skips: the skip convention of the arc" in capsys.readouterr().err
    # fnnjax enas's best_arc.json beside the .txt (or given itself) records it.
    (tmp_path / "best_arc.json").write_text(json.dumps({"arc": arc, "skips": "released"}))
    assert base_wiring()[1] == [(), (-1,), (0,)]
    assert base_wiring("--skips", "paper")[0] == 2
    assert "records the arc's convention as released" in capsys.readouterr().err
    txt.write_text("0 2 0 0 0 0\n")  # no skip on: the same wiring either way, nothing to give
    assert base_wiring()[1] == [(), (), ()]


def test_fnnjax_nhn_search_runs_enas_with_cutout_and_the_skip_convention(tmp_path, monkeypatch):
    """NHN section 2.1 searches with Cutout; --skips reaches the search and the pipeline."""
    from fnnjax.cli import main
    from fnnjax.construct import enas

    seen = []

    def no_search(data, config, *args, **kwargs):
        seen.append(config)
        raise KeyboardInterrupt

    monkeypatch.setattr(enas, "search", no_search)
    code = main(["nhn", "--quick", "--search", "--skips", "released", "--out", str(tmp_path)])
    assert code == 130 and seen[0].cutout == 4 and seen[0].skips == "released"  # 8x8 digits


def test_fnnjax_nhn_passes_the_dnp_reading_to_dnp(tmp_path, monkeypatch):
    """--prune-scope layer and --keep-stem reach DNP (after a stand-in for the base training)."""
    from types import SimpleNamespace

    import fnnjax.train
    from fnnjax.cli import main
    from fnnjax.construct.nhn import prune

    def trained_as_given(model, data, config, *, initial_variables=None, **kwargs):
        return SimpleNamespace(state=SimpleNamespace(variables=lambda: initial_variables),
                               summary={})  # fmt: skip

    calls = []

    def dnp(params, masks, **kwargs):
        calls.append(kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(fnnjax.train, "fit", trained_as_given)
    monkeypatch.setattr(prune, "dnp", dnp)
    argv = ["nhn", "--quick", "--arc", str(tmp_path / "arc.txt"), "--out", str(tmp_path / "o")]
    (tmp_path / "arc.txt").write_text("0 2 0 0 0 0\n")  # conv3x3 layers: kernels to prune
    assert main([*argv, "--prune-scope", "layer", "--keep-stem"]) == 130
    # (digits' one-channel stem is never ranked, so there is no stem kernel to leave out here)
    assert calls[-1]["per_layer"] is True and calls[-1]["exclude"] == ()
    saved = json.loads((tmp_path / "o" / "nhn.json").read_text())["config"]
    assert (saved["prune_scope"], saved["prune_stem"]) == ("layer", False)
    assert main([*argv, "--no-resume"]) == 130
    assert calls[-1]["per_layer"] is False


def test_the_pipeline_smooths_the_base_init_and_retrains_the_pruned_net_from_its_weights(
        tmp_path, monkeypatch):  # fmt: skip
    """Algorithm 2 as chosen (pipeline docstring): SmoothInit on the arc's network before its
    base training; after DNP the pruned network goes on from the trained weights (section 3's
    "three passes of training"), not from a fresh draw."""
    from types import SimpleNamespace

    import fnnjax.train
    from fnnjax.cli import main

    seen = []

    def trained_as_given(model, data, config, *, initial_variables=None, **kwargs):
        seen.append(initial_variables)
        if len(seen) == 2:
            raise KeyboardInterrupt  # the pruned network's training: enough seen
        return SimpleNamespace(state=SimpleNamespace(variables=lambda: initial_variables),
                               summary={})  # fmt: skip

    monkeypatch.setattr(fnnjax.train, "fit", trained_as_given)
    (tmp_path / "arc.txt").write_text("0 2 0 0 0 0\n")  # conv3x3 layers
    assert main(["nhn", "--quick", "--arc", str(tmp_path / "arc.txt"), "--out",
                 str(tmp_path / "o")]) == 130  # fmt: skip
    base, pruned = seen
    kernel = np.asarray(base["params"]["s0b0"]["br0_1"]["conv"]["kernel"])
    # Smoothed once already: far flatter than a He-normal draw of the same scale would be.
    he = np.random.default_rng(0).normal(size=kernel.shape) * np.sqrt(2 / np.prod(kernel.shape[:3]))
    assert nhn.kernel_std(kernel).mean() < 0.6 * nhn.kernel_std(he).mean()
    # The pruned network's kernels are the base network's (clean-up may slice filters away),
    # not a fresh draw: every value is one of the trained kernel's.
    after = np.asarray(pruned["params"]["s0b0"]["br0_1"]["conv"]["kernel"])
    assert after.size and np.isin(after, kernel).all()


def test_fnnjax_nhn_takes_the_arc_itself_as_well_as_a_file(tmp_path):
    from fnnjax.cli.nhn import read_arc
    from fnnjax.errors import ConfigError

    arc, skips = read_arc(Path("0 0 0 2 0 0"), 3, None)
    assert arc.tolist() == [0, 0, 0, 2, 0, 0] and skips == "paper"  # no skip on: either wiring
    with pytest.raises(ConfigError, match="--skips: the skip convention"):
        read_arc(Path("0 2 1 0 0 1"), 3, None)
    assert read_arc(Path("0 2 1 0 0 1"), 3, "released")[1] == "released"
    with pytest.raises(ConfigError, match=r"--arc: .*arc.txt is neither a file nor an arc of "
                                          r"--layers 3 .*or the arc itself"):  # fmt: skip
        read_arc(tmp_path / "arc.txt", 3, None)
    with pytest.raises(ConfigError, match=r"--arc: 0 0 0 is neither a file nor an arc of --layers 3"):
        read_arc(Path("0 0 0"), 3, None)
    assert read_arc(Path("[0, 0, 0, 2, 0, 0]"), 3, None)[0].tolist() == [0, 0, 0, 2, 0, 0]


def test_nhn_refuses_a_device_count_that_does_not_split_lds_batch_before_training(tmp_path):
    import dataclasses

    from fnnjax.construct import nhn
    from fnnjax.errors import ConfigError
    from fnnjax.train import load_dataset

    data = load_dataset("digits", validation_fraction=0.1, limit_train=200)
    config = nhn.NhnConfig.quick()
    config = dataclasses.replace(config, batch_size=32,
                                 lds=dataclasses.replace(config.lds, batch_size=30))  # fmt: skip
    with pytest.raises(ConfigError, match=r"--devices: 4 devices do not split a batch of 30 "
                                          r"\(LDS's batch_size\)"):  # fmt: skip
        nhn.run_nhn(data, "0 0 1", dataclasses.replace(config, layers=2), tmp_path / "run",
                    num_devices=4, log=None)  # fmt: skip
    assert not (tmp_path / "run").exists()  # refused before the first training
