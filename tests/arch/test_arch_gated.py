"""Gated skips across stages (ENAS's search and fixed-arc merges), stage entry reductions, kernel
masks and the masks of pooling / identity ops: semantics, validation and export."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnnjax.arch import (
    AddOn,
    Cell,
    Choice,
    Conv,
    Identity,
    Pool,
    SepConv,
    Spec,
    Stage,
    build_model,
    from_json,
    infer_layers,
    notation,
    to_json,
)
from fnnjax.arch.build import BN_EPSILON, host_init, init_variables
from fnnjax.arch.select import (
    gated_blocks,
    materialize,
    materialize_variables,
    random_selections,
    selection_of,
)

C = 4
OPS = (
    (Conv(filters=C),),
    (SepConv(filters=C, mid_norm_act=False),),
    (Pool(op="avg", window=3, stride=1, padding=1),),
)


def search_space(merges, mode="auto", layers=2, stages=3):
    """ENAS-like: ``stages`` segments of ``layers`` choice blocks, every block after the first
    reading every earlier block (and the stem) through gated skips (merged by ``merges``, one
    name or a cycle of names), reductions between."""
    merges = (merges,) if isinstance(merges, str) else merges
    g, out = 0, []
    for i in range(stages):
        blocks = []
        for _ in range(layers):
            b = Choice(candidates=OPS, mode=mode)
            if g:
                merge = merges[(g - 1) % len(merges)]
                b = dataclasses.replace(b, gated_skips=tuple(range(-1, g)), gated_merge=merge)
            blocks.append(b)
            g += 1
        out.append(Stage(blocks=tuple(blocks), reduce=C if i else None))
    return Spec(input_shape=(8, 8, 2), num_classes=3, stem=(Conv(filters=C),), stages=tuple(out))


def _x(n=4, seed=1):
    return jax.random.normal(jax.random.key(seed), (n, 8, 8, 2))


def _both_modes(model):
    """One compiled function: the model's outputs in eval and in training mode."""

    def f(v, x):
        y_train, _ = model.apply(v, x, train=True, mutable=["batch_stats"])
        return model.apply(v, x), y_train

    return jax.jit(f)


def _bn(z, bn_params, stats):
    return (z - stats["mean"]) / jnp.sqrt(stats["var"] + BN_EPSILON) * bn_params["scale"] + (
        bn_params["bias"]
    )


@pytest.mark.parametrize("merge", ["sum_bn", "concat_conv"])
def test_gated_merges_compute_the_enas_formulas(merge, random_variables):
    spec = Spec(input_shape=(6, 6, 2), num_classes=3,
                stages=(Stage(blocks=(Conv(filters=C), Conv(filters=C),
                                      Conv(filters=C, gated_skips=(-1, 0), gated_merge=merge))),),
                stem=(Conv(filters=C),))  # fmt: skip
    model = build_model(spec)
    x = _x(seed=2)[:, :6, :6]
    v = random_variables(model, x)
    for gates in ([1.0, 1.0], [0.0, 1.0], [1.0, 0.0]):
        arch = {"s0b2_skip": {"gates": jnp.asarray(gates)}}
        _, st = model.apply({**v, "arch": arch}, x, capture_intermediates=True, mutable=True)
        out = {k: val["__call__"][0] for k, val in st["intermediates"].items()
               if isinstance(val, dict) and k != "head"}  # fmt: skip
        srcs = [gates[0] * out["stem0"], gates[1] * out["s0b0"]]
        y = out["s0b2"]
        p, s = v["params"]["s0b2_skip"], v["batch_stats"]["s0b2_skip"]
        if merge == "sum_bn":
            want = _bn(y + sum(srcs), p["bn"], s["bn"])
        else:
            z = jax.nn.relu(jnp.concatenate([*srcs, y], axis=-1))
            want = _bn(z @ p["unit"]["conv"]["kernel"][0, 0], p["unit"]["bn"], s["unit"]["bn"])
        np.testing.assert_allclose(out["s0b2_skip"], want, rtol=1e-5, atol=1e-5)


def test_a_stage_reduction_is_enas_factorized_reduction_and_is_shared_by_its_readers(
    random_variables,
):
    spec = search_space("sum_bn", layers=1, stages=2)
    reductions = [u.path for u in infer_layers(spec) if "red" in u.path]
    assert reductions == ["s1red_in/p1", "s1red_in/p2", "s1red0/p1", "s1red0/p2"]
    model = build_model(spec)
    v = random_variables(model, _x())
    _, st = jax.jit(lambda v, x: model.apply(v, x, capture_intermediates=True, mutable=True))(
        v, _x()
    )
    inter = st["intermediates"]
    src = inter["s0b0"]["__call__"][0]  # 8x8: the main path and block 1's gated source
    p, s = v["params"]["s1red0"], v["batch_stats"]["s1red0"]

    def half(name, z):
        return _bn(z @ p[name]["conv"]["kernel"][0, 0], p[name]["bn"], s[name]["bn"])

    want = jnp.concatenate([half("p1", src[:, ::2, ::2]), half("p2", src[:, 1::2, 1::2])], -1)
    np.testing.assert_allclose(inter["s1red0"]["__call__"][0], want, rtol=1e-5, atol=1e-5)
    assert inter["s1red0"]["__call__"][0].shape == (4, 4, 4, C)


def test_odd_sizes_reduce_like_enas_and_profile_counts_every_parameter():
    spec = dataclasses.replace(search_space("concat_conv"), input_shape=(7, 7, 2))
    units = infer_layers(spec)
    assert {u.path: u.out_hw for u in units}["s1red0/p1"] == (4, 4)
    assert {u.path: u.out_hw for u in units}["s2red3/p2"] == (2, 2)
    v = init_variables(build_model(spec), jax.random.key(0), spec.input_shape, abstract=True)
    n = sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(v["params"]))
    assert sum(u.params for u in units) == n
    # The stem's output (-1) is reduced at every stage entry because later blocks read it.
    assert {"s1red_in", "s2red_in"} <= {u.path.split("/")[0] for u in units}


def _check_export(spec, v, selection, supernet, x):
    """The materialized spec's variables have its model's tree and give the supernet's outputs
    (eval and train mode); returns that tree's shapes."""
    plain = materialize(spec, selection)
    pv = materialize_variables(spec, v, selection)
    pm = build_model(plain, use_masks=True)
    want = init_variables(pm, jax.random.key(0), plain.input_shape, abstract=True)
    assert jax.tree_util.tree_map(jnp.shape, pv) == jax.tree_util.tree_map(jnp.shape, want)
    for y1, y2 in zip(supernet({**v, "arch": selection}, x), _both_modes(pm)(pv, x), strict=True):
        np.testing.assert_allclose(y1, y2, rtol=1e-5, atol=1e-5)
    return want


def test_materialized_selections_compute_the_supernets_outputs(random_variables):
    # Block 2 reads the stem and block 0 reduced twice; blocks 1 and 2 merge differently.
    spec = search_space(("sum_bn", "concat_conv"), layers=1)
    model = build_model(spec, use_masks=True)
    x = _x()
    v = random_variables(model, x)
    pop = random_selections(jax.random.key(5), spec, 2, skip_prob=0.6)
    assert pop["s2b0_skip"]["gates"].shape == (2, 3)
    assert 0 < float(pop["s2b0_skip"]["gates"].mean()) < 1  # some on, some off
    supernet = _both_modes(model)
    for p in range(2):
        sel = jax.tree_util.tree_map(lambda a, p=p: a[p], pop)
        plain = materialize(spec, sel)
        assert not any(isinstance(b, Choice) for st in plain.stages for b in st.blocks)
        for path, n in gated_blocks(plain).items():
            assert n == int(sel[f"{path}_skip"]["gates"].sum())
        _check_export(spec, v, sel, supernet, x)


def test_selections_and_materialize_check_their_gates():
    spec = search_space("sum_bn", layers=1, stages=2)
    sel = selection_of(spec, {"s1b0": 2}, skips={"s1b0": [0, 1]})
    assert sel["s1b0_skip"]["gates"].tolist() == [0.0, 1.0]
    assert selection_of(spec)["s1b0_skip"]["gates"].tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match=r"skips\['s1b0'\]: expected 2 gates"):
        selection_of(spec, skips={"s1b0": [1]})
    with pytest.raises(ValueError, match="0 or 1"):
        selection_of(spec, skips={"s1b0": [1, 0.5]})
    with pytest.raises(ValueError, match="'s0b0' has no gated skips"):
        selection_of(spec, skips={"s0b0": [1]})
    soft = {**sel, "s1b0_skip": {"gates": jnp.asarray([0.5, 1.0])}}
    with pytest.raises(ValueError, match="0 or 1"):
        materialize(spec, soft)
    with pytest.raises(ValueError, match="skip_prob"):
        random_selections(jax.random.key(0), spec, 2, skip_prob=1.5)
    assert materialize(spec, sel).stages[1].blocks[0].gated_skips == (0,)


def test_gated_skips_are_validated_with_field_paths():
    def spec(blocks, reduce=None, stem=None):
        return Spec(input_shape=(8, 8, 2), num_classes=3, stem=stem or (Conv(filters=C),),
                    stages=(Stage(blocks=(Conv(filters=C),)),
                            Stage(blocks=tuple(blocks), reduce=reduce)))  # fmt: skip

    with pytest.raises(ValueError, match=r"blocks\[0\]\.gated_merge: expected 'sum_bn' or"):
        spec([Conv(filters=C, gated_skips=(0,))])
    with pytest.raises(ValueError, match=r"gated_skips: expected flat indices in \[-1, 0\]"):
        spec([Conv(filters=C, gated_skips=(1,), gated_merge="sum_bn")])
    with pytest.raises(ValueError, match="increasing order"):
        spec([Conv(filters=C), Conv(filters=C, gated_skips=(1, 0), gated_merge="sum_bn")])
    with pytest.raises(ValueError, match=r"gated_skips\[0\]: source 0 arrives with shape "
                                         r"\(8, 8, 4\).*'reduce'"):  # fmt: skip
        spec([Conv(filters=C, stride=2, gated_skips=(0,), gated_merge="sum_bn")])
    spec([Conv(filters=C, gated_skips=(0,), gated_merge="sum_bn")], reduce=C)  # reduced: fine
    with pytest.raises(ValueError, match=r"stages\[1\]\.reduce: expected a positive int"):
        spec([Conv(filters=C)], reduce=0)
    with pytest.raises(ValueError, match=r"stem\[0\]\.gated_merge: expected None"):
        spec([Conv(filters=C)], stem=(Conv(filters=C, gated_merge="sum_bn"),))
    inner = Cell(branches=((Conv(filters=C, gated_skips=(0,)),),))
    with pytest.raises(ValueError, match=r"branches\[0\]\[0\]\.gated_skips: expected \(\) "):
        spec([inner])


def test_json_and_notation_carry_gated_skips_and_reductions():
    spec = search_space("concat_conv", layers=1, stages=2)
    assert from_json(to_json(spec)) == spec
    assert '"gated_skips"' not in to_json(search_space("sum_bn", layers=1, stages=1))
    text = notation(spec)
    assert "| r4: " in text and "{gc-1,0}" in text


def test_kernel_masks_prune_single_kernels_and_pool_identity_masks_switch_branches(
    random_variables,
):
    cell = Cell(branches=((Conv(filters=C),), (Identity(),), (Pool(window=3, stride=1,
                                                                  padding=1),)), merge="add")  # fmt: skip
    spec = Spec(input_shape=(8, 8, 2), num_classes=3, stem=(Conv(filters=C),),
                stages=(Stage(blocks=(cell, Pool())),))  # fmt: skip
    model, plain = build_model(spec, use_masks=True), build_model(spec)
    x = _x()
    v = random_variables(model, x)
    masks = v["masks"]
    assert masks["s0b0"]["br0_0"]["kernel_mask"].shape == (C, C)
    assert set(masks["s0b0"]["br1_0"]) == set(masks["s0b1"]) == {"filter_mask"}
    plain_v = {k: v[k] for k in ("params", "batch_stats")}
    # Kernel (input 1 -> filter 2) of the cell's conv masked == that kernel zeroed.
    km = masks["s0b0"]["br0_0"]["kernel_mask"].at[1, 2].set(0.0)
    y_mask = model.apply({**v, "masks": _set(masks, ("s0b0", "br0_0", "kernel_mask"), km)}, x)
    kernel = v["params"]["s0b0"]["br0_0"]["conv"]["kernel"].at[:, :, 1, 2].set(0.0)
    y_zero = plain.apply(_set(plain_v, ("params", "s0b0", "br0_0", "conv", "kernel"), kernel), x)
    np.testing.assert_allclose(y_mask, y_zero, rtol=1e-5, atol=1e-6)
    assert not np.allclose(y_mask, plain.apply(plain_v, x), atol=1e-4)
    # Identity and pool branches off == a cell without them.
    off = _set(masks, ("s0b0", "br1_0", "filter_mask"), jnp.zeros(C))
    off = _set(off, ("s0b0", "br2_0", "filter_mask"), jnp.zeros(C))
    conv_only = dataclasses.replace(spec, stages=(Stage(blocks=(
        Cell(branches=(cell.branches[0],), merge="add"), Pool())),))  # fmt: skip
    np.testing.assert_allclose(model.apply({**v, "masks": off}, x),
                               build_model(conv_only).apply(plain_v, x), rtol=1e-5, atol=1e-6)  # fmt: skip


def _set(tree, keys, value):
    if not keys:
        return value
    return {**tree, keys[0]: _set(tree[keys[0]], keys[1:], value)}


def addon_net():
    """A segment of NHN-like layers (1x1 conv first) with add-on edges from earlier blocks."""
    layer = Choice(candidates=((Conv(filters=C, kernel=1), Conv(filters=C)),
                               (Conv(filters=C, kernel=1), Pool(window=3, stride=1, padding=1))))  # fmt: skip
    blocks = (
        layer,
        Conv(filters=C),
        dataclasses.replace(layer, addons=(AddOn(source=0, neurons=3),
                                           AddOn(source=-1, neurons=2, kernel=5))),
        Cell(branches=((Conv(filters=C, kernel=1),), (Conv(filters=2),)),
             addons=(AddOn(source=1, neurons=2), AddOn(source=0, neurons=1))),
    )  # fmt: skip
    return Spec(input_shape=(8, 8, 2), num_classes=3, stem=(Conv(filters=C),),
                stages=(Stage(blocks=blocks),))  # fmt: skip


def test_addon_edges_export_with_their_connections_and_drop_the_rows_of_edges_switched_off(
    random_variables,
):
    spec = addon_net()
    assert from_json(to_json(spec)) == spec
    assert "{a3k3@0,2k5@-1}-[4k1|2]{a2k3@1,1k3@0}" in notation(spec)
    units = {u.path: u for u in infer_layers(spec)}
    assert units["s0b2_addon1/unit"].kernel == 5 and units["s0b2/c0_0"].cin == C + 5
    model = build_model(spec, use_masks=True)
    x = _x()
    v = random_variables(model, x)
    assert v["arch"]["s0b3_addon0"]["connections"].shape == (C, 2)
    # A zero connection == a zero kernel slice of the add-on neuron.
    sel = selection_of(spec, addons={"s0b3": [1, 0]})
    conn = sel["s0b2_addon0"]["connections"].at[1, 2].set(0.0)
    apply = jax.jit(model.apply)
    y_conn = apply({**v, "arch": {**sel, "s0b2_addon0": {"gate": jnp.ones(()), "connections": conn}}},
                   x)  # fmt: skip
    kernel = v["params"]["s0b2_addon0"]["unit"]["conv"]["kernel"].at[:, :, 1, 2].set(0.0)
    v_zero = {**v, "params": _set(v["params"], ("s0b2_addon0", "unit", "conv", "kernel"), kernel)}
    np.testing.assert_allclose(y_conn, apply({**v_zero, "arch": sel}, x), rtol=1e-5,
                               atol=1e-6)  # fmt: skip
    pop = random_selections(jax.random.key(1), spec, 2, addon_prob=0.5, connection_prob=0.5)
    gates = np.stack([pop[f"s0b{j}_addon{e}"]["gate"] for j in (2, 3) for e in (0, 1)])
    assert 0 < gates.mean() < 1
    supernet = _both_modes(model)
    for p in range(2):
        one = jax.tree_util.tree_map(lambda a, p=p: a[p], pop)
        plain = materialize(spec, one)
        assert [len(b.addons) for b in plain.stages[0].blocks[2:]] == gates[:, p].reshape(2, 2).sum(1).tolist()
        want = _check_export(spec, v, one, supernet, x)
    # Without an "arch" collection in the variables, the export is still complete.
    weights = {k: v[k] for k in ("params", "batch_stats", "masks")}
    pv = materialize_variables(spec, weights, one)
    assert jax.tree_util.tree_map(jnp.shape, pv) == jax.tree_util.tree_map(jnp.shape, want)
    with pytest.raises(ValueError, match=r"\['connections'\]: expected shape \(4, 3\)"):
        materialize_variables(spec, weights, {**one, "s0b2_addon0": {
            "gate": jnp.ones(()), "connections": pop["s0b2_addon0"]["connections"]}})  # fmt: skip
    host = host_init(model, spec.input_shape)
    assert float(host["arch"]["s0b2_addon0"]["gate"]) == 1.0
    assert float(host["arch"]["s0b2_addon0"]["connections"].min()) == 1.0


def test_addon_edges_are_validated():
    base = addon_net()

    def with_block3(b):
        blocks = base.stages[0].blocks
        return base.replace(stages=(Stage(blocks=(*blocks[:3], b)),))

    with pytest.raises(ValueError, match=r"addons\[0\]\.source: expected a flat index in \[-1, 2\]"):
        with_block3(Conv(filters=C, addons=(AddOn(source=3, neurons=1),)))
    with pytest.raises(ValueError, match=r"stages\[1\]\.blocks\[0\]\.addons\[0\]\.source: "
                                         r"expected a flat index in \[1, 1\].*within a segment"):  # fmt: skip
        base.replace(stages=(Stage(blocks=base.stages[0].blocks[:2]), Stage(blocks=(
            Conv(filters=C, addons=(AddOn(source=0, neurons=1),)),), reduce=C)))  # fmt: skip
    with pytest.raises(ValueError, match=r"blocks\[3\]\.addons: the block's input must be read by "
                                         r"plain convs.*SepConv"):  # fmt: skip
        with_block3(SepConv(filters=C, addons=(AddOn(source=0, neurons=1),)))
    with pytest.raises(ValueError, match=r"addons\[0\]\.kernel: expected one of"):
        with_block3(Conv(filters=C, addons=(AddOn(source=0, neurons=1, kernel=4),)))
    with pytest.raises(ValueError, match=r"addons\[0\]\.source: block -1's output is 8x8, the "
                                         r"block's input 4x4"):  # fmt: skip
        base.replace(stages=(Stage(blocks=(Conv(filters=C, stride=2),
                                           Conv(filters=C, addons=(AddOn(source=-1, neurons=1),)))),))  # fmt: skip
    with pytest.raises(ValueError, match=r"addons\[0\]\.neurons"):
        from_json(to_json(base).replace('"neurons": 3', '"neurons": 0'))


def exported_child(c0=C, c1=C):
    """An exported (retraining-form) child: concat_conv merges, a reduction, an add-on edge."""
    blocks0 = (Conv(filters=c0),
               Conv(filters=c1, gated_skips=(-1, 0), gated_merge="concat_conv",
                    addons=(AddOn(source=0, neurons=2),)))  # fmt: skip
    blocks1 = (Conv(filters=C, gated_skips=(0, 1), gated_merge="concat_conv"),)
    return Spec(input_shape=(8, 8, 2), num_classes=3, stem=(Conv(filters=C),),
                stages=(Stage(blocks=blocks0), Stage(blocks=blocks1, reduce=C)))  # fmt: skip


def _dead(v, unit, k):
    """Filter ``k`` of conv unit ``unit`` outputs exactly 0 (BN scale and bias 0)."""
    bn = dict(_get(v["params"], unit)["bn"])
    bn = {"scale": bn["scale"].at[k].set(0.0), "bias": bn["bias"].at[k].set(0.0)}
    return {**v, "params": _set(v["params"], (*unit.split("/"), "bn"), bn)}


def _get(tree, path):
    for k in path.split("/"):
        tree = tree[k]
    return tree


def test_surgery_follows_channels_through_reductions_gated_merges_and_addon_edges(
    random_variables,
):
    from fnnjax.arch import transplant_params

    a, b = exported_child(), exported_child(c0=C - 1, c1=C - 1)
    x = _x()
    va = random_variables(build_model(a, use_masks=True), x)
    for unit in ("s0b0", "s0b1", "s0b1_skip/unit"):
        va = _dead(va, unit, 2)
    # Masks travel too: a kernel-mask entry of the last merge (reduced block 1's channel 1).
    km = va["masks"]["s1b0_skip"]["unit"]["kernel_mask"].at[5, 1].set(0.0)
    va = {**va, "masks": _set(va["masks"], ("s1b0_skip", "unit", "kernel_mask"), km)}
    kept = {"s0b0": [0, 1, 3], "s0b1": [0, 1, 3], "s0b1_skip/unit": [0, 1, 3]}
    vb = random_variables(build_model(b, use_masks=True), x, seed=1)
    vt = transplant_params(a, va, b, vb, kept=kept)
    ya = build_model(a, use_masks=True).apply(va, x)
    assert np.abs(np.asarray(ya)).max() > 1e-2
    np.testing.assert_allclose(build_model(b, use_masks=True).apply(vt, x), ya, rtol=2e-5,
                               atol=2e-5)  # fmt: skip
    # The add-on unit reads block 0 (pruned rows); block 1 reads [block 0, add-on]: A's rows
    # 0, 1, 3 then the add-on's 4, 5.
    k_a, k_t = va["params"]["s0b1"]["conv"]["kernel"], vt["params"]["s0b1"]["conv"]["kernel"]
    np.testing.assert_array_equal(k_t, k_a[:, :, [0, 1, 3, 4, 5]][..., [0, 1, 3]])
    assert vt["params"]["s0b1_addon0"]["unit"]["conv"]["kernel"].shape[2] == C - 1


def test_surgery_moves_the_masks_of_pooling_ops_with_their_channels(random_variables):
    from fnnjax.arch import transplant_params

    def net(c):
        return Spec(input_shape=(8, 8, 2), num_classes=3, stem=(Conv(filters=C),),
                    stages=(Stage(blocks=(Conv(filters=c), Pool())),))  # fmt: skip

    x = _x()
    va = random_variables(build_model(net(C), use_masks=True), x)
    va = {**va, "masks": _set(va["masks"], ("s0b1", "filter_mask"), jnp.asarray([1.0, 0, 1, 1]))}
    vb = random_variables(build_model(net(C), use_masks=True), x, seed=1)
    vt = transplant_params(net(C), va, net(C), vb, kept={"s0b0": [3, 2, 1, 0]})
    assert vt["masks"]["s0b1"]["filter_mask"].tolist() == [1.0, 1.0, 0.0, 1.0]
    np.testing.assert_allclose(build_model(net(C), use_masks=True).apply(vt, x),
                               build_model(net(C), use_masks=True).apply(va, x), rtol=2e-5,
                               atol=2e-5)  # fmt: skip


def test_surgery_refuses_choice_blocks_with_the_way_out():
    from fnnjax.arch import transplant_plan

    spec = search_space("sum_bn", layers=1, stages=2)
    with pytest.raises(ValueError, match=r"spec_a\.stages\[0\]\.blocks\[0\]: transplant_plan "
                                         r"does not follow a choice block.*materialize"):  # fmt: skip
        transplant_plan(spec, spec)
    one = materialize(spec, selection_of(spec))
    assert transplant_plan(one, one)  # the export plans
