"""Function-preserving growth: identity residual insertion at every position, Net2Wider."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fnnjax.arch import Conv, Dense, Head, Pool, Residual, SepConv, Spec, Stage, build_model
from fnnjax.arch.build import init_variables
from fnnjax.arch.grow import insert_residual, net2wider
from fnnjax.arch.shapes import infer_layers
from fnnjax.arch.surgery import transplant_opt_state

CONV = Spec(input_shape=(8, 8, 3), num_classes=5, stem=(Conv(filters=6),),
            stages=(Stage(blocks=(Conv(filters=8), SepConv(filters=8),
                                  Conv(filters=8, act=None), Conv(filters=7, skips=(0,),
                                                                  skip_merge="concat"))),
                    Stage(blocks=(Pool(), Conv(filters=9)))))  # fmt: skip
MLP = Spec(input_shape=(1, 1, 3), num_classes=2,
           stages=(Stage(blocks=(Dense(filters=16), Dense(filters=16),
                                 Residual(body=(Dense(filters=8), Dense(filters=16, act=None)),
                                          shortcut="identity"))),),
           head=Head(pool="flatten"))  # fmt: skip


def _trained_like(spec, seed=0):
    """Variables with non-trivial BN statistics (as after training)."""
    model = build_model(spec)
    v = init_variables(model, jax.random.key(seed), spec.input_shape)
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(lambda a: np.asarray(a) + 0.1 * rng.standard_normal(a.shape)
                                  .astype(a.dtype) if a.dtype == np.float32 else a, v)  # fmt: skip


def _outputs(spec, v, seed=1):
    x = jax.random.normal(jax.random.key(seed), (6, *spec.input_shape))
    return np.asarray(build_model(spec).apply(v, x))  # eager: each grown spec would compile anew


@pytest.mark.parametrize("spec", [CONV, MLP], ids=["conv", "mlp"])
def test_an_inserted_residual_block_is_the_identity_at_every_position(spec):
    v = _trained_like(spec)
    before = _outputs(spec, v)
    for i, st in enumerate(spec.stages):
        for j in range(len(st.blocks) + 1):
            grown = insert_residual(spec, v, i, j, hidden=5)
            assert len(grown.spec.stages[i].blocks) == len(st.blocks) + 1
            np.testing.assert_allclose(_outputs(grown.spec, grown.variables), before, atol=1e-5,
                                       err_msg=f"stage {i} position {j}")  # fmt: skip
            new_params = sum(u.params for u in infer_layers(grown.spec))
            assert new_params > sum(u.params for u in infer_layers(spec))


def test_a_relu_after_the_add_is_allowed_only_where_the_input_is_non_negative():
    v = _trained_like(CONV)
    grown = insert_residual(CONV, v, 0, 1, act="relu")  # after Conv(8) with ReLU
    np.testing.assert_allclose(_outputs(grown.spec, grown.variables), _outputs(CONV, v), atol=1e-5)
    with pytest.raises(ValueError, match="output can be negative"):
        insert_residual(CONV, v, 0, 3, act="relu")  # after Conv(8, act=None)
    with pytest.raises(ValueError, match="position: expected 0..4"):
        insert_residual(CONV, v, 0, 5)


def test_skip_indices_after_the_insertion_point_shift():
    grown = insert_residual(CONV, _trained_like(CONV), 0, 0)
    assert grown.spec.stages[0].blocks[4].skips == (1,)  # was (0,): block 0 moved to 1
    assert grown.kept == {"s0": [-1, 0, 1, 2, 3]}


@pytest.mark.parametrize(("spec", "stage", "position", "width"),
                         [(CONV, 0, 0, 13), (CONV, 0, 1, 11), (CONV, 1, 1, 12), (MLP, 0, 0, 24)])  # fmt: skip
def test_net2wider_keeps_the_function_and_copies_units_with_their_statistics(
    spec, stage, position, width
):
    v = _trained_like(spec)
    grown = net2wider(spec, v, stage, position, width, key=jax.random.key(3))
    assert grown.spec.stages[stage].blocks[position].filters == width
    np.testing.assert_allclose(_outputs(grown.spec, grown.variables), _outputs(spec, v),
                               rtol=1e-4, atol=1e-5)  # fmt: skip
    unit = next(iter(grown.kept))
    src = np.asarray(grown.kept[unit])

    def at(tree, path):
        for key in path.split("/"):
            tree = tree[key]
        return tree

    np.testing.assert_array_equal(at(grown.variables["params"], unit)["conv"]["kernel"],
                                  np.asarray(at(v["params"], unit)["conv"]["kernel"])[..., src])  # fmt: skip
    if "bn" in at(grown.variables["params"], unit):  # the copies' running statistics are their sources'
        np.testing.assert_array_equal(at(grown.variables["batch_stats"], unit)["bn"]["mean"],
                                      np.asarray(at(v["batch_stats"], unit)["bn"]["mean"])[src])  # fmt: skip


def test_net2wider_noise_breaks_symmetry_and_the_optimizer_state_follows():
    v = _trained_like(MLP)
    exact = net2wider(MLP, v, 0, 0, 24, key=jax.random.key(3))
    noisy = net2wider(MLP, v, 0, 0, 24, key=jax.random.key(3), noise=0.01)
    k_exact = exact.variables["params"]["s0b0"]["conv"]["kernel"]
    k_noisy = noisy.variables["params"]["s0b0"]["conv"]["kernel"]
    np.testing.assert_array_equal(k_exact[..., :16], k_noisy[..., :16])
    assert not np.array_equal(k_exact[..., 16:], k_noisy[..., 16:])
    tx = optax.adam(1e-3)
    opt = jax.tree_util.tree_map(lambda a: a + 1.0, tx.init(jax.tree_util.tree_map(jnp.asarray, v["params"])))
    moved = transplant_opt_state(tx, MLP, v["params"], opt, exact.spec, exact.variables["params"],
                                 kept=exact.kept, replicate=True)  # fmt: skip
    assert moved[0].mu["s0b0"]["conv"]["kernel"].shape[-1] == 24


def test_net2wider_refuses_what_it_cannot_widen():
    v = _trained_like(CONV)
    with pytest.raises(ValueError, match="Net2Wider widens a Conv, Dense or SepConv block, got Pool"):
        net2wider(CONV, v, 1, 0, 4)
    with pytest.raises(ValueError, match="width: expected an int above the current 8 units"):
        net2wider(CONV, v, 0, 0, 8)
    with pytest.raises(ValueError, match=r"blocks\[1\]: cannot widen it alone, its output is added"):
        net2wider(MLP, _trained_like(MLP), 0, 1, 20)  # it feeds an identity shortcut


def test_a_relu_after_the_add_is_refused_after_a_block_with_added_skips():
    spec = Spec(input_shape=(8, 8, 3), num_classes=2, stem=(Conv(filters=4, act=None),),
                stages=(Stage(blocks=(Conv(filters=4), Conv(filters=4),
                                      Conv(filters=4, skips=(-1,), skip_merge="add"))),))  # fmt: skip
    with pytest.raises(ValueError, match="output can be negative"):
        insert_residual(spec, _trained_like(spec), 0, 3, act="relu")
