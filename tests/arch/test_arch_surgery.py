"""Parameter surgery: identity transplant, pruning dead filters, growth, optimizer state."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fnnjax.arch import zoo
from fnnjax.arch.build import build_model
from fnnjax.arch.spec import Cell, Conv, Head, Pool, SepConv, Spec, Stage
from fnnjax.arch.surgery import transplant_opt_state, transplant_params, transplant_plan

BASE = dict(c0=6, pw0=5, red=2, br1=4, pw1=4, body0=2, out=8, fc=6)


def make(dropout=0.0, **changes):
    w = {**BASE, **changes}
    out = w["out"]
    return Spec(
        input_shape=(8, 8, 3),
        num_classes=3,
        stem=(Conv(filters=4),),
        stages=(
            Stage(blocks=(Conv(filters=w["c0"], bias=True), SepConv(filters=w["pw0"]), Pool())),
            Stage(
                blocks=(
                    Cell(
                        branches=(
                            (Conv(filters=3, kernel=1),),
                            (Conv(filters=w["red"], kernel=1), Conv(filters=w["br1"])),
                            (Pool(window=3, stride=1, padding=1), Conv(filters=2, kernel=1)),
                        )
                    ),
                    SepConv(filters=w["pw1"]),
                )
            ),
            Stage(
                blocks=(
                    zoo.bottleneck(w["body0"], 2).__class__(
                        body=(
                            Conv(filters=w["body0"], kernel=1),
                            Conv(filters=2, stride=2),
                            Conv(filters=out, kernel=1, act=None),
                        )
                    ),
                    zoo.bottleneck(2).__class__(
                        body=(
                            Conv(filters=2, kernel=1),
                            Conv(filters=2),
                            Conv(filters=out, kernel=1, act=None),
                        )
                    ),
                )
            ),
        ),
        head=Head(kind="dense", pool="flatten", hidden=(w["fc"],), dropout=dropout),
    )


X = jax.random.normal(jax.random.key(7), (4, 8, 8, 3))


def _np(tree):
    return jax.tree_util.tree_map(np.asarray, tree)


def _get(tree, path):
    for k in path.split("/"):
        tree = tree[k]
    return tree


def _zero_filters(variables, path, idx):
    """Makes filters ``idx`` of unit ``path`` output exactly 0: zero kernel/bias, BN scale 0, bias 0."""
    v = jax.tree_util.tree_map(lambda a: a, variables)
    idx = np.asarray(idx, dtype=int)
    unit = _get(v["params"], path)
    for layer in ("conv", None):
        node = unit.get(layer, unit) if layer else unit
        if "kernel" in node:
            node["kernel"] = node["kernel"].at[..., idx].set(0.0)
            if "bias" in node:
                node["bias"] = node["bias"].at[..., idx].set(0.0)
    bn = unit["bn"] if "bn" in unit else _get(v["params"], path.replace("fc", "bn"))
    bn["scale"] = bn["scale"].at[idx].set(0.0)
    bn["bias"] = bn["bias"].at[idx].set(0.0)
    return v


def _apply(spec, v, train=False):
    model = build_model(spec)
    if train:
        return jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"])[0])(v, X)
    return jax.jit(model.apply)(v, X)


def test_identity_transplant_copies_everything(random_variables):
    a = make(dropout=0.5)
    va = random_variables(build_model(a), X, seed=0)
    vb = random_variables(build_model(a), X, seed=1)
    out = transplant_params(a, va, a, vb)
    jax.tree_util.tree_map(np.testing.assert_array_equal, out, va)
    np.testing.assert_array_equal(_apply(a, out), _apply(a, va))


KEPT = {
    "s0b0": [0, 2, 3, 5],
    "s0b1/pw": [0, 1, 3, 4],
    "s1b0/br1_0": [0],
    "s1b0/br1_1": [1, 2, 3],
    "s1b1/pw": [0, 1, 2],
    "s2b0/body0": [1],
    "s2b0/body2": [0, 1, 2, 3, 4, 6, 7],
    "s2b1/body2": [0, 1, 2, 3, 4, 6, 7],
    "head/fc0": [0, 1, 3, 4, 5],
}


@pytest.mark.parametrize("train", [False, True])
def test_pruning_dead_filters_leaves_the_output_unchanged(random_variables, train):
    a = make()
    va = random_variables(build_model(a), X, seed=0)
    for path, keep in KEPT.items():
        n = _get(va["params"], path)
        n = (n["conv"] if "conv" in n else n)["kernel"].shape[-1]
        va = _zero_filters(va, path, [i for i in range(n) if i not in keep])
    va = _zero_filters(va, "s2b0/shortcut", [5])  # the residual add must be dead on both sides
    # A depthwise filter follows its input channel, so it is pruned with it: with eval-mode BN a
    # zero input still gives (0 - mean) / std * scale + bias, so its BN must be dead as well.
    va = _zero_filters(va, "s0b1/dw", [1, 4])
    va = _zero_filters(va, "s1b1/dw", [3])
    b = make(c0=4, pw0=4, red=1, br1=3, pw1=3, body0=1, out=7, fc=5)
    vb = random_variables(build_model(b), X, seed=1)
    vt = transplant_params(a, va, b, vb, kept=KEPT)
    ya, yt = _apply(a, va, train), _apply(b, vt, train)
    assert np.abs(np.asarray(ya)).max() > 1e-2  # not trivially zero
    np.testing.assert_allclose(yt, ya, rtol=2e-5, atol=2e-5)
    # The kept slices really come from A (kernel, BN params and running stats).
    pa, pt = _np(va["params"]), _np(vt["params"])
    np.testing.assert_array_equal(
        pt["s0b0"]["conv"]["kernel"], pa["s0b0"]["conv"]["kernel"][..., [0, 2, 3, 5]]
    )
    np.testing.assert_array_equal(
        pt["s0b1"]["dw"]["conv"]["kernel"], pa["s0b1"]["dw"]["conv"]["kernel"][..., [0, 2, 3, 5]]
    )
    np.testing.assert_array_equal(
        vt["batch_stats"]["s0b1"]["pw"]["bn"]["var"],
        np.asarray(va["batch_stats"]["s0b1"]["pw"]["bn"]["var"])[[0, 1, 3, 4]],
    )
    np.testing.assert_array_equal(
        pt["s2b0"]["shortcut"]["conv"]["kernel"],
        pa["s2b0"]["shortcut"]["conv"]["kernel"][..., [0, 1, 2], :][..., KEPT["s2b0/body2"]],
    )


def test_growing_a_layer_keeps_the_function_and_fresh_new_filters(random_variables):
    a = make()
    b = make(c0=9, br1=6)
    va = random_variables(build_model(a), X, seed=0)
    vb = random_variables(build_model(b), X, seed=1)
    vt = transplant_params(a, va, b, vb)
    np.testing.assert_allclose(_apply(b, vt), _apply(a, va), rtol=2e-5, atol=2e-5)
    k_new = vt["params"]["s0b0"]["conv"]["kernel"]
    np.testing.assert_array_equal(k_new[..., 6:], vb["params"]["s0b0"]["conv"]["kernel"][..., 6:])
    # old filters of the consumer see the new channels through zero weights
    dw = vt["params"]["s0b1"]["dw"]["conv"]["kernel"]
    np.testing.assert_array_equal(
        dw[..., 6:], vb["params"]["s0b1"]["dw"]["conv"]["kernel"][..., 6:]
    )
    pw = vt["params"]["s0b1"]["pw"]["conv"]["kernel"]
    assert np.all(np.asarray(pw[..., 6:, :]) == 0.0)
    # concat offsets: branch 2's conv of the next block input is shifted by A's widths
    nxt = vt["params"]["s1b1"]["dw"]["conv"]["kernel"]  # cell output 3 + 6 + 2 channels
    old = va["params"]["s1b1"]["dw"]["conv"]["kernel"]  # 3 + 4 + 2
    np.testing.assert_array_equal(nxt[..., [0, 1, 2, 3, 4, 5, 6, 9, 10]], old)


def test_appended_block_is_fresh_and_the_rest_is_copied(random_variables):
    a = make()
    st = a.stages[1]
    b = a.replace(
        stages=(a.stages[0], st.__class__(blocks=st.blocks + (Conv(filters=4),)), a.stages[2])
    )
    va = random_variables(build_model(a), X, seed=0)
    vb = random_variables(build_model(b), X, seed=1)
    vt = transplant_params(a, va, b, vb)
    jax.tree_util.tree_map(
        np.testing.assert_array_equal, vt["params"]["s1b2"], vb["params"]["s1b2"]
    )
    jax.tree_util.tree_map(
        np.testing.assert_array_equal, vt["params"]["s0b1"], va["params"]["s0b1"]
    )
    # nothing is known about the new block's channels: its consumer is copied positionally
    np.testing.assert_array_equal(
        vt["params"]["s2b0"]["body0"]["conv"]["kernel"],
        va["params"]["s2b0"]["body0"]["conv"]["kernel"],
    )


@pytest.mark.parametrize(
    "tx",
    [
        optax.adam(1e-3),
        optax.sgd(0.1, momentum=0.9),
        optax.chain(optax.clip_by_global_norm(1.0), optax.add_decayed_weights(1e-4), optax.adam(1e-3)),
        optax.inject_hyperparams(optax.adam)(learning_rate=1e-3),
        optax.masked(optax.adam(1e-3), lambda p: jax.tree_util.tree_map(lambda _: True, p)),
    ],
    ids=["adam", "sgd-momentum", "chain", "inject_hyperparams", "masked-all"],
)
def test_optimizer_state_follows_the_params(random_variables, tx):
    a = make()
    b = make(c0=4, fc=8)
    va = random_variables(build_model(a), X, seed=0)
    vb = random_variables(build_model(b), X, seed=1)
    kept = {"s0b0": [5, 0, 2, 3]}
    oa = tx.init(va["params"])
    oa = jax.tree_util.tree_map(
        lambda x: x + jnp.arange(x.size, dtype=x.dtype).reshape(x.shape) + 1, oa
    )
    ob = tx.init(vb["params"])
    ot = transplant_opt_state(tx, a, va["params"], oa, b, vb["params"], kept=kept)
    assert jax.tree_util.tree_structure(ot) == jax.tree_util.tree_structure(ob)
    def params_like(state):  # the params-shaped trees in a state (moments, traces)
        nodes = jax.tree_util.tree_leaves(state, is_leaf=lambda x: isinstance(x, dict))
        return [x for x in nodes if isinstance(x, dict) and "s0b0" in x]

    moments, src = params_like(ot), params_like(oa)
    assert moments and len(moments) == len(src)
    for mt, ma in zip(moments, _np(src), strict=True):
        np.testing.assert_array_equal(
            mt["s0b0"]["conv"]["kernel"], ma["s0b0"]["conv"]["kernel"][..., [5, 0, 2, 3]]
        )
        np.testing.assert_array_equal(
            mt["s0b1"]["dw"]["conv"]["kernel"],
            ma["s0b1"]["dw"]["conv"]["kernel"][..., [5, 0, 2, 3]],
        )
        fc = np.asarray(mt["head"]["fc0"]["kernel"])
        np.testing.assert_array_equal(fc[:, :6], ma["head"]["fc0"]["kernel"])
        assert np.all(fc[:, 6:] == 0.0)  # new hidden units start with zero moments
    counts = [(x, y) for x, y in zip(jax.tree_util.tree_leaves(ot), jax.tree_util.tree_leaves(oa),
                                       strict=False) if np.ndim(x) == 0]  # fmt: skip
    assert all(int(x) == int(y) for x, y in counts)  # step counts (and hyperparams) carried over


def test_disagreeing_residual_sources_raise():
    a = make()
    b = make(out=7)
    with pytest.raises(
        ValueError, match=r"stages\[2\]\.blocks\[1\]\.shortcut: an addition combines"
    ):
        transplant_plan(
            a, b, kept={"s2b0/body2": [0, 1, 2, 3, 4, 5, 6], "s2b1/body2": [1, 2, 3, 4, 5, 6, 7]}
        )


def test_bad_kept_entries_raise_with_the_path():
    a, b = make(), make(c0=4)
    with pytest.raises(ValueError, match=r"kept\['s0b0'\]: expected 4 indices"):
        transplant_plan(a, b, kept={"s0b0": [0, 1]})
    with pytest.raises(ValueError, match=r"kept\['s0b0'\]: indices must be in \[-1, 6\)"):
        transplant_plan(a, b, kept={"s0b0": [0, 1, 2, 6]})
    with pytest.raises(ValueError, match=r"kept\['s0b0'\]: indices must be distinct"):
        transplant_plan(a, b, kept={"s0b0": [0, 1, 1, 2]})
    with pytest.raises(ValueError, match=r"kept: no unit, cell or stage of B .*'s9b9'"):
        transplant_plan(a, b, kept={"s9b9": [0]})


def test_cells_with_changed_kernels_start_fresh():
    a = make()
    cell = a.stages[1].blocks[0]
    new_cell = Cell(
        branches=(
            cell.branches[0],
            (cell.branches[1][0], Conv(filters=4, kernel=5)),
            cell.branches[2],
        )
    )
    b = a.replace(
        stages=(
            a.stages[0],
            a.stages[1].__class__(blocks=(new_cell, a.stages[1].blocks[1])),
            a.stages[2],
        )
    )
    plan = transplant_plan(a, b)
    assert plan["s1b0/br1_1"].out_src is None
    np.testing.assert_array_equal(plan["s1b0/br1_0"].out_src, [0, 1])
    np.testing.assert_array_equal(plan["s1b1/dw"].out_src, [0, 1, 2, -1, -1, -1, -1, 7, 8])


def test_removing_a_dead_cell_branch_with_a_branch_map(random_variables):
    """EnvelopeNets prunes whole conv blocks of a cell: ``kept[cell] = A's branch per B branch``."""

    def spec(branches):
        return Spec(
            input_shape=(8, 8, 3),
            num_classes=3,
            stem=(Conv(filters=4),),
            stages=(Stage(blocks=(Cell(branches=branches), Conv(filters=5, kernel=1))),),
        )

    full = ((Conv(filters=3),), (Conv(filters=2, kernel=1),), (SepConv(filters=4, kernel=5),))
    a, b = spec(full), spec((full[0], full[2]))
    va = random_variables(build_model(a), X, seed=0)
    va = _zero_filters(va, "s0b0/br1_0", [0, 1])
    vb = random_variables(build_model(b), X, seed=1)
    vt = transplant_params(a, va, b, vb, kept={"s0b0": [0, 2]})
    jax.tree_util.tree_map(
        np.testing.assert_array_equal, vt["params"]["s0b0"]["br1_0"], va["params"]["s0b0"]["br2_0"]
    )
    np.testing.assert_allclose(_apply(b, vt), _apply(a, va), rtol=2e-5, atol=2e-5)
    with pytest.raises(ValueError, match=r"kept\['s0b0'\]: expected 2 indices \(B's branches\)"):
        transplant_plan(a, b, kept={"s0b0": [0, 1, 2]})


def test_inserting_a_block_mid_stage_with_a_block_map(random_variables):
    def spec(n):
        return Spec(
            input_shape=(8, 8, 3),
            num_classes=3,
            stages=(Stage(blocks=tuple(Conv(filters=4) for _ in range(n))),),
        )

    a, b = spec(3), spec(4)
    va = random_variables(build_model(a), X, seed=0)
    vb = random_variables(build_model(b), X, seed=1)
    vt = transplant_params(a, va, b, vb, kept={"s0": [0, -1, 1, 2]})
    for jb, ja in ((0, 0), (2, 1), (3, 2)):
        jax.tree_util.tree_map(
            np.testing.assert_array_equal, vt["params"][f"s0b{jb}"], va["params"][f"s0b{ja}"]
        )
        jax.tree_util.tree_map(
            np.testing.assert_array_equal,
            vt["batch_stats"][f"s0b{jb}"],
            va["batch_stats"][f"s0b{ja}"],
        )
    jax.tree_util.tree_map(
        np.testing.assert_array_equal, vt["params"]["s0b1"], vb["params"]["s0b1"]
    )


def test_masked_adam_moments_survive_a_transplant(random_variables):
    """Only some params train (optax.masked): their moments move, the frozen ones stay masked."""
    a, b = make(), make(c0=4, fc=8)
    va = random_variables(build_model(a), X, seed=0)
    vb = random_variables(build_model(b), X, seed=1)

    def trainable(params):  # the first block and the head train; everything else is frozen
        return {k: jax.tree_util.tree_map(lambda _, k=k: k in ("s0b0", "head"), v)
                for k, v in params.items()}  # fmt: skip

    tx = optax.masked(optax.adam(1e-3), trainable)
    oa = tx.init(va["params"])
    oa = jax.tree_util.tree_map(lambda x: x + 1.0 if x.dtype == jnp.float32 else x + 3, oa)
    kept = {"s0b0": [5, 0, 2, 3]}
    ot = transplant_opt_state(tx, a, va["params"], oa, b, vb["params"], kept=kept)
    adam_t, adam_a = ot.inner_state[0], oa.inner_state[0]
    assert int(adam_t.count) == int(adam_a.count) == 3
    for moment_t, moment_a in ((adam_t.mu, adam_a.mu), (adam_t.nu, adam_a.nu)):
        np.testing.assert_array_equal(moment_t["s0b0"]["conv"]["kernel"],
                                      np.asarray(moment_a["s0b0"]["conv"]["kernel"])[..., [5, 0, 2, 3]])  # fmt: skip
        assert np.all(np.asarray(moment_t["s0b0"]["conv"]["kernel"]) == 1.0)  # not reset to 0
        assert isinstance(moment_t["s0b1"]["dw"]["conv"]["kernel"], optax.MaskedNode)
        fc = np.asarray(moment_t["head"]["fc0"]["kernel"])
        assert np.all(fc[:, :6] == 1.0) and np.all(fc[:, 6:] == 0.0)
    # The transplanted state is a valid state of tx for B's params: an update runs.
    grads = jax.tree_util.tree_map(jnp.ones_like, vb["params"])
    tx.update(grads, ot, vb["params"])
    with pytest.raises(ValueError, match="not a state of this optimizer"):
        transplant_opt_state(optax.sgd(0.1, momentum=0.9), a, va["params"], oa, b, vb["params"])
