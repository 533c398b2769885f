"""Spec -> Flax model: shapes, modes, featuremap statistics hooks, masks, heads."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnnjax import models
from fnnjax.arch import zoo
from fnnjax.arch.build import build_model, init_variables
from fnnjax.arch.shapes import infer_layers
from fnnjax.arch.spec import Cell, Conv, FnnHead, Head, Pool, SepConv, Spec, Stage
from fnnjax.models import param_count


def tiny(head=None):
    return Spec(
        input_shape=(8, 8, 3),
        num_classes=4,
        stem=(Conv(filters=4),),
        stages=(
            Stage(blocks=(Conv(filters=5, bias=True), SepConv(filters=6, stride=2))),
            Stage(
                blocks=(
                    Cell(
                        branches=(
                            (Conv(filters=2, kernel=1),),
                            (Pool(window=3, stride=1, padding=1), Conv(filters=3, kernel=1)),
                        )
                    ),
                    zoo.bottleneck(2),
                    Conv(filters=3, skips=(0,), skip_merge="concat"),
                )
            ),
        ),
        head=head or Head(),
    )


def _x(batch=3, shape=(8, 8, 3), seed=0):
    return jax.random.normal(jax.random.key(seed), (batch, *shape))


def test_init_apply_shapes_and_param_count_match_the_spec():
    spec = tiny()
    model = build_model(spec)
    v = jax.eval_shape(model.init, jax.random.key(0), _x())
    assert set(v) == {"params", "batch_stats"}
    assert param_count(v["params"]) == sum(u.params for u in infer_layers(spec))
    y = jax.eval_shape(model.apply, v, _x())
    assert y.shape == (3, 4) and y.dtype == jnp.float32
    # every unit of the shape inference is a module path in params
    for u in infer_layers(spec):
        node = v["params"]
        for key in u.path.split("/"):
            node = node[key]
    assert v["params"]["s0b1"]["dw"]["conv"]["kernel"].shape == (3, 3, 1, 5)
    assert v["params"]["s1b1"]["shortcut"]["conv"]["kernel"].shape == (1, 1, 5, 8)


def test_train_mode_updates_batch_stats_and_uses_dropout(random_variables):
    spec = tiny(head=Head(kind="dense", hidden=(8,), dropout=0.5))
    model = build_model(spec)
    v = random_variables(model, _x())

    @jax.jit
    def train_apply(v, x, k):
        return model.apply(v, x, train=True, rngs={"dropout": k}, mutable=["batch_stats"])

    y1, upd = train_apply(v, _x(), jax.random.key(1))
    y2, _ = train_apply(v, _x(), jax.random.key(2))
    assert not np.allclose(y1, y2)  # dropout masks differ
    old = v["batch_stats"]["s0b0"]["bn"]["mean"]
    assert not np.allclose(upd["batch_stats"]["s0b0"]["bn"]["mean"], old)
    eval_apply = jax.jit(model.apply)
    np.testing.assert_array_equal(eval_apply(v, _x()), eval_apply(v, _x()))
    assert not np.allclose(eval_apply(v, _x()), y1)


def test_flat_input_is_reshaped(random_variables):
    spec = Spec(input_shape=(4, 4, 2), num_classes=3, stages=(Stage(blocks=(Conv(filters=2),)),))
    model = build_model(spec)
    x = _x(2, (4, 4, 2))
    v = random_variables(model, x)
    np.testing.assert_allclose(model.apply(v, x.reshape(2, -1)), model.apply(v, x), rtol=1e-6)


def _conv_ref(x, k, b, pad):
    """Slow float64 NHWC convolution, stride 1."""
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    kh, kw, _, co = k.shape
    n, h, w, _ = x.shape
    out = np.zeros((n, h - kh + 1, w - kw + 1, co))
    for i in range(kh):
        for j in range(kw):
            out += np.einsum(
                "nhwc,co->nhwo", x[:, i : i + out.shape[1], j : j + out.shape[2]], k[i, j]
            )
    return out + b


def test_featuremap_stats_are_sown_and_match_a_manual_computation(random_variables):
    spec = Spec(
        input_shape=(6, 6, 3), num_classes=2, stages=(Stage(blocks=(Conv(filters=4, bias=True),)),)
    )
    model = build_model(spec, collect_stats=True)
    x = _x(4, (6, 6, 3))
    v = random_variables(model, x)  # random BN scale/bias/mean/var
    bn = {k: np.asarray(a, np.float64) for k, a in v["params"]["s0b0"]["bn"].items()}
    stats = {k: np.asarray(a, np.float64) for k, a in v["batch_stats"]["s0b0"]["bn"].items()}
    _, inter = jax.jit(lambda v, x: model.apply(v, x, mutable=["intermediates"]))(v, x)
    got = inter["intermediates"]["s0b0"]
    conv = v["params"]["s0b0"]["conv"]
    z = _conv_ref(
        np.asarray(x, np.float64),
        np.asarray(conv["kernel"], np.float64),
        np.asarray(conv["bias"], np.float64),
        1,
    )
    z = (z - stats["mean"]) / np.sqrt(stats["var"] + 1e-5) * bn["scale"] + bn["bias"]
    y = np.maximum(z, 0)
    np.testing.assert_allclose(got["featuremap_msq"][0], (y**2).mean(axis=(0, 1, 2)), rtol=1e-4)
    np.testing.assert_allclose(
        got["featuremap_var"][0], y.var(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6
    )
    assert got["featuremap_msq"][0].shape == (4,)


def test_stats_hooks_cost_nothing_unless_requested(random_variables):
    spec = tiny()
    x = _x()
    plain, hooked = build_model(spec), build_model(spec, collect_stats=True)
    v = random_variables(plain, x)

    def jaxpr(model, mutable):
        return str(
            jax.make_jaxpr(lambda v, x: model.apply(v, x, train=True, mutable=mutable))(v, x)
        )

    assert jaxpr(plain, ["batch_stats"]) == jaxpr(hooked, ["batch_stats"])
    _, state = jax.eval_shape(
        lambda v, x: hooked.apply(v, x, train=True, mutable=["batch_stats", "intermediates"]), v, x
    )
    sown = state["intermediates"]
    assert set(sown["s1b0"]) == {"br0_0", "br1_1"}
    assert sown["s0b1"]["dw"]["featuremap_var"][0].shape == (5,)
    assert sown["s1b1"]["shortcut"]["featuremap_msq"][0].shape == (8,)
    _, state = jax.eval_shape(
        lambda v, x: plain.apply(v, x, train=True, mutable=["batch_stats", "intermediates"]), v, x
    )
    assert "intermediates" not in state or not state["intermediates"]


def test_masks_are_array_leaves_that_silence_filters_and_vmap_over_a_population(random_variables):
    spec = tiny()
    model = build_model(spec, use_masks=True)
    x = _x()
    v = random_variables(model, x)
    assert v["masks"]["s0b0"]["filter_mask"].shape == (5,)
    np.testing.assert_array_equal(v["masks"]["s0b0"]["filter_mask"], np.ones(5))
    # Masking filter 2 of s0b0 == giving it a zero BN scale and bias in the unmasked model.
    masks = jax.tree_util.tree_map(lambda m: m, v["masks"])
    masks["s0b0"]["filter_mask"] = masks["s0b0"]["filter_mask"].at[2].set(0.0)
    apply = jax.jit(model.apply)
    y_masked = apply({**v, "masks": masks}, x)
    p = jax.tree_util.tree_map(lambda a: a, v["params"])
    for k in ("scale", "bias"):
        p["s0b0"]["bn"][k] = p["s0b0"]["bn"][k].at[2].set(0.0)
    y_zero = jax.jit(build_model(spec).apply)({"params": p, "batch_stats": v["batch_stats"]}, x)
    np.testing.assert_allclose(y_masked, y_zero, rtol=1e-5, atol=1e-6)
    # A population of 3 mask sets in one vmapped call with shared params.
    pop = jax.tree_util.tree_map(lambda m: jnp.stack([m, m * 0.0, m]), v["masks"])
    ys = jax.jit(jax.vmap(lambda m: model.apply({**v, "masks": m}, x)))(pop)
    assert ys.shape == (3, 3, 4)
    np.testing.assert_allclose(ys[0], apply(v, x), rtol=1e-5, atol=1e-6)
    assert not np.allclose(ys[1], ys[0])


def test_init_variables_draws_params_and_dropout_from_independent_streams():
    class Draws(nn.Module):  # records one normal draw from each stream at init
        @nn.compact
        def __call__(self, x, *, train=False):
            w = self.param("w", nn.initializers.normal(1.0), (64,))
            d = self.variable("draws", "d", jax.random.normal, self.make_rng("dropout"), (64,))
            return x * w[0] * d.value[0]

    v = init_variables(Draws(), jax.random.key(0), (1,))
    w, d = np.asarray(v["params"]["w"]), np.asarray(v["draws"]["d"])
    assert abs(np.corrcoef(w, d)[0, 1]) < 0.5  # one shared key made them identical


def test_init_variables_equals_model_init_with_its_keys():
    spec = Spec(input_shape=(4, 4, 2), num_classes=3, stages=(Stage(blocks=(Conv(filters=5),)),),
                head=Head(kind="dense", hidden=(4,), dropout=0.5))  # fmt: skip
    model = build_model(spec)
    key = jax.random.key(3)
    params_key, dropout_key = jax.random.split(key)
    expected = jax.jit(lambda p, d: model.init({"params": p, "dropout": d}, jnp.zeros((2, 4, 4, 2)),
                                               train=False))(params_key, dropout_key)  # fmt: skip
    got = init_variables(model, key, spec.input_shape)  # compiled unoptimized: same values
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(expected)
    jax.tree.map(lambda g, e: np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6), got, expected)


def test_abstract_init_spends_no_compute():
    spec = models.build_spec("vgg19", 10, (28, 28, 1))
    v = init_variables(build_model(spec), jax.random.key(0), spec.input_shape, abstract=True)
    assert isinstance(v["params"]["s0b0"]["conv"]["kernel"], jax.ShapeDtypeStruct)
    assert v["params"]["s0b0"]["conv"]["kernel"].shape == (3, 3, 1, 64)


def test_fnn_head_builds_and_applies_in_train_mode(random_variables):
    spec = tiny(head=Head(kind="fnn", fnn=FnnHead(dim=4, iterations=2, num_hidden=16)))
    model = build_model(spec)
    v = random_variables(model, _x())
    y = jax.jit(
        lambda v, x, k: model.apply(v, x, train=True, rngs={"dropout": k}, mutable=["batch_stats"])[
            0
        ]
    )(v, _x(), jax.random.key(2))
    assert y.shape == (3, 4)
    assert np.all(np.isfinite(np.asarray(y)))


@pytest.mark.parametrize("kernel,stride", [(3, 1), (5, 2)])
def test_depthwise_convs_by_shifts_equal_the_convolution_and_its_gradients(kernel, stride):
    from fnnjax.arch.build import depthwise_conv_by_shifts

    x = jax.random.normal(jax.random.key(0), (2, 9, 8, 3))
    w = jax.random.normal(jax.random.key(1), (kernel, kernel, 1, 3))
    p = (kernel - 1) // 2
    dn = ("NHWC", "HWIO", "NHWC")

    def loss(conv, x, w):
        y = conv(x, w, (stride, stride), ((p, p), (p, p)), dimension_numbers=dn,
                 feature_group_count=3)  # fmt: skip
        return jnp.sum(jnp.sin(y)), y

    (_, want), want_g = jax.value_and_grad(lambda *a: loss(jax.lax.conv_general_dilated, *a),
                                           argnums=(0, 1), has_aux=True)(x, w)  # fmt: skip
    (_, got), got_g = jax.value_and_grad(lambda *a: loss(depthwise_conv_by_shifts, *a),
                                         argnums=(0, 1), has_aux=True)(x, w)  # fmt: skip
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    for g, h in zip(got_g, want_g, strict=True):
        np.testing.assert_allclose(g, h, rtol=1e-4, atol=1e-4)
    # Anything but a plain depthwise conv goes to the convolution unchanged.
    dense = jax.random.normal(jax.random.key(2), (3, 3, 3, 4))
    np.testing.assert_array_equal(
        depthwise_conv_by_shifts(x, dense, (1, 1), ((1, 1), (1, 1)), dimension_numbers=dn),
        jax.lax.conv_general_dilated(x, dense, (1, 1), ((1, 1), (1, 1)), dimension_numbers=dn))
