"""Analytic counts (:func:`fnnjax.arch.analytic_counts`, :func:`fnnjax.arch.infer_layers`) are the
model's: every unit's parameters equal the real ones at its module path (``jax.eval_shape`` of
``init``, the ``"params"`` collection; BN running statistics are no parameters), and its
multiply-accumulates equal an independent count of the traced forward pass.

The independent count (:func:`traced_macs`) reads ``jax.make_jaxpr`` of ``model.apply`` and sums
every ``dot_general`` and ``conv_general_dilated`` equation's multiply-accumulates from its shapes,
recursing into sub-jaxprs (jit, custom_vjp / custom_jvp calls, checkpoint, scan bodies times their
length, the costlier branch of a cond); convolutions count all taps (``macs``) and the taps that
land inside the input (``valid_macs``, from the equation's padding). Per example is the count at
batch 2 minus the count at batch 1, so work on the parameters alone (an FNN's normalizations and
folds, done once per call) cancels.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend import core as jex_core

from fnnjax._trees import at_path
from fnnjax.arch import (
    FnnHead,
    Head,
    addon_blocks,
    analytic_counts,
    build_model,
    infer_layers,
    materialize,
    selection_of,
    zoo,
)
from fnnjax.arch import build as build_module
from fnnjax.arch.grow import inserted_residual_spec
from fnnjax.arch.shapes import FNN_HEAD_PATH
from fnnjax.arch.spec import Conv, SepConv, Spec, Stage
from fnnjax.construct import enas, nhn
from fnnjax.construct import envelope as ev
from fnnjax.construct.capacity.ops import _removed_spec, _with_filters
from fnnjax.construct.capacity.tasks import residual_conv_spec
from fnnjax.construct.templates import TEMPLATE_NAMES, apply_template, width_multiplier
from fnnjax.floating import FNNConfig, fnn_apply, forward_macs, init_params, param_count

#: A small FNN head (its parameters and products are counted the same way at any size).
SMALL_FNN = FnnHead(num_hidden=24, dim=8, iterations=3)


# ------------------------------------------------------------------------ the independent count
def _conv_macs(eqn) -> tuple[int, int]:
    lhs, rhs = (v.aval.shape for v in eqn.invars[:2])
    out = eqn.outvars[0].aval.shape
    p = eqn.params
    assert p["batch_group_count"] == 1 and all(d == 1 for d in p["lhs_dilation"])
    lhs_spec, rhs_spec, out_spec = p["dimension_numbers"]
    per_tap = out[out_spec[0]] * out[out_spec[1]] * rhs[rhs_spec[1]]  # batch x cout x cin/groups
    taps = valid = 1
    for n, (li, ri, oi) in enumerate(zip(lhs_spec[2:], rhs_spec[2:], out_spec[2:], strict=True)):
        n_in, k, n_out = lhs[li], rhs[ri], out[oi]
        s, lo, dil = p["window_strides"][n], p["padding"][n][0], p["rhs_dilation"][n]
        taps *= k * n_out
        valid *= sum(1 for o in range(n_out) for t in range(k) if 0 <= o * s - lo + t * dil < n_in)
    return per_tap * taps, per_tap * valid


def _dot_macs(eqn) -> int:
    lhs, rhs = (v.aval.shape for v in eqn.invars[:2])
    (_, rc), (_, rb) = eqn.params["dimension_numbers"]
    return math.prod(lhs) * math.prod(d for i, d in enumerate(rhs) if i not in (*rc, *rb))


def _sub_jaxprs(value):
    if isinstance(value, jex_core.ClosedJaxpr):
        yield value.jaxpr
    elif isinstance(value, jex_core.Jaxpr):
        yield value
    elif isinstance(value, tuple | list):
        for v in value:
            yield from _sub_jaxprs(v)


def _jaxpr_macs(jaxpr) -> np.ndarray:
    """``[macs, valid_macs]`` of one jaxpr, sub-jaxprs included."""
    total = np.zeros(2, np.int64)
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            total += _dot_macs(eqn)
        elif name == "conv_general_dilated":
            total += _conv_macs(eqn)
        elif name == "while":
            raise NotImplementedError("a while loop has no static trip count")
        elif name == "cond":  # one branch runs: the costlier (here only parameter-only work)
            total += np.max([_jaxpr_macs(b.jaxpr) for b in eqn.params["branches"]], axis=0)
        else:
            inner = sum((_jaxpr_macs(j) for v in eqn.params.values() for j in _sub_jaxprs(v)),
                        np.zeros(2, np.int64))  # fmt: skip
            total += inner * (eqn.params["length"] if name == "scan" else 1)
    return total


def traced_macs(fn, *args) -> np.ndarray:
    """``[macs, valid_macs]`` of every product ``fn(*args)`` computes (module docstring)."""
    return _jaxpr_macs(jax.make_jaxpr(fn)(*args).jaxpr)


@pytest.fixture
def conv_primitives(monkeypatch):
    """On CPU, from ``SHIFTS_MIN_ELEMENTS`` input elements up, the builder computes depthwise
    convs by shifts (elementwise products, no conv primitive to count): raise the threshold so
    that every conv is one ``conv_general_dilated``."""
    monkeypatch.setattr(build_module, "SHIFTS_MIN_ELEMENTS", 2**62)


# ------------------------------------------------------------------------------------- helpers
def _abstract(spec: Spec):
    model = build_model(spec)
    x = jax.ShapeDtypeStruct((1, *spec.input_shape), jnp.float32)
    return model, jax.eval_shape(lambda k, x: model.init({"params": k, "dropout": k}, x,
                                                         train=False), jax.random.key(0), x)  # fmt: skip


def _size(tree) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(tree))


def check_params(spec: Spec):
    """Every unit's analytic parameters are the ones at its module path; they sum to all of them."""
    model, variables = _abstract(spec)
    params = variables["params"]
    for u in infer_layers(spec):
        node = at_path(params, u.path)
        assert node is not None, f"{spec.name}: no params at {u.path}"
        assert _size(node) == u.params, f"{spec.name}: {u.path} ({u.op})"
    assert analytic_counts(spec)["params"] == _size(params), spec.name
    return model, variables


def check_macs(spec: Spec, model=None, variables=None):
    """Analytic ``macs`` and ``flops_valid`` per example equal the traced forward's."""
    if model is None:
        model, variables = _abstract(spec)

    def forward(variables, x):
        return model.apply(variables, x, train=False)

    one, two = (traced_macs(forward, variables, jnp.zeros((b, *spec.input_shape), jnp.float32))
                for b in (1, 2))  # fmt: skip
    macs, valid = (two - one).tolist()
    counts = analytic_counts(spec)
    assert (counts["macs"], counts["flops_valid"]) == (macs, 2 * valid), spec.name
    return counts


def _with_head(spec: Spec, head: Head) -> Spec:
    return spec.replace(head=head, name=f"{spec.name}|{head.kind}")


def _tiny(head: Head, channels: int = 12) -> Spec:
    return Spec(name="tiny", input_shape=(6, 6, 3), num_classes=5,
                stem=(Conv(filters=8),),
                stages=(Stage(blocks=(SepConv(filters=channels, stride=2),)),),
                head=head)  # fmt: skip


# ------------------------------------------------------------------------------------- the FNN
def test_an_fnn_heads_parameters_are_table_1s_formula_at_its_module_path():
    fnn = FnnHead(num_hidden=7, dim=5, iterations=2)
    spec = _tiny(Head(kind="fnn", fnn=fnn))
    (unit,) = [u for u in infer_layers(spec) if u.op == "fnn"]
    assert (unit.path, unit.field, unit.cin, unit.cout) == (FNN_HEAD_PATH, "head.fnn", 12, 5)
    # R (d + 2) + N (2 d + 2) + S (d + 2) with R = 12 pooled features, N = 7, S = 5, d = 5
    assert unit.params == 12 * 7 + 7 * 12 + 5 * 7
    _, variables = check_params(spec)
    assert set(at_path(variables["params"], FNN_HEAD_PATH)) == {"input", "hidden", "output"}
    without = analytic_counts(_with_head(spec, Head()))["params"] - (12 * 5 + 5)
    assert analytic_counts(spec)["params"] == without + unit.params


FNN_PATHS = {
    "factored-l2": FnnHead(num_hidden=10, dim=6, iterations=3),
    "factored-l2-input-once": FnnHead(num_hidden=10, dim=6, iterations=2,
                                      input_every_iteration=False),
    "factored-l2-one-iteration": FnnHead(num_hidden=10, dim=6, iterations=1),
    "materialized-l2": FnnHead(num_hidden=10, dim=6, iterations=3, path="materialized"),
    "materialized-softmax-input-once": FnnHead(num_hidden=10, dim=6, iterations=2,
                                               normalization="softmax", path="materialized",
                                               input_every_iteration=False),
    # chunks of 4 pad 10 hidden neurons to 12 (the 12 input features divide evenly)
    "factored-softmax-padded": FnnHead(num_hidden=10, dim=6, iterations=3,
                                       normalization="softmax", chunk_size=4),
    "factored-softmax-one-iteration": FnnHead(num_hidden=10, dim=6, iterations=1,
                                              normalization="softmax"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(FNN_PATHS))
def test_an_fnn_heads_macs_are_what_its_forward_path_multiplies(name, conv_primitives):
    spec = _tiny(Head(kind="fnn", fnn=FNN_PATHS[name]))
    check_params(spec)
    counts = check_macs(spec)
    linear = analytic_counts(_with_head(spec, Head()))["macs"] - 12 * 5
    (unit,) = [u for u in infer_layers(spec) if u.op == "fnn"]
    assert counts["macs"] == linear + unit.macs and unit.valid_macs == unit.macs


def test_forward_macs_by_hand_on_every_path():
    base = {"num_inputs": 12, "num_outputs": 5, "num_hidden": 10, "dim": 6, "iterations": 3}
    r, s, n, d, k = 12, 5, 10, 6, 3
    assert forward_macs(FNNConfig(**base)) == r * d + n * d + 2 * (k - 1) * n * d + (n + s) * d
    mat = FNNConfig(**base, path="materialized")
    assert forward_macs(mat) == n * r + (k - 1) * n * (r + n) + s * n
    once = dataclasses.replace(mat, input_every_iteration=False)
    assert forward_macs(once) == n * r + (k - 1) * n * n + s * n
    soft = FNNConfig(**base, normalization="softmax", chunk_size=4)  # 12 -> 12, 10 -> 12
    assert forward_macs(soft) == 2 * n * 12 + (k - 1) * n * 12 + s * 12
    assert forward_macs(dataclasses.replace(soft, chunk_size=1024)) == 2 * n * r + (k - 1) * n * n + s * n
    with pytest.raises(ValueError, match="batch"):
        forward_macs(mat, batch=0)


def test_a_large_batch_forms_the_output_weights_once_and_forward_macs_follows():
    """The factored l2 output step associates ``y (O I^T)`` from 5 rows up here (64 hidden, 4
    outputs, d = 32): ``N S`` per example instead of ``(N + S) d``."""
    cfg = FNNConfig(num_inputs=20, num_outputs=4, num_hidden=64, dim=32, iterations=2)
    params = jax.eval_shape(lambda k: init_params(k, cfg), jax.random.key(0))

    def per_example(b):
        one, two = (traced_macs(lambda p, x: fnn_apply(p, x, cfg), params,
                                jnp.zeros((m, 20), jnp.float32)) for m in (b, 2 * b))  # fmt: skip
        return int((two - one)[0]) // b

    assert per_example(1) == forward_macs(cfg, batch=1) == 20 * 32 + 64 * 32 + 2 * 64 * 32 + 68 * 32
    assert per_example(16) == forward_macs(cfg, batch=16) == 20 * 32 + 64 * 32 + 2 * 64 * 32 + 64 * 4
    assert param_count(cfg) == _size(params)


# ------------------------------------------------------------------------------------- the zoo
HEAD_KINDS = ("linear", "dense", "fnn")


def _zoo_spec(i: int, h: int) -> Spec:
    """Zoo model ``i`` with head ``h`` and template ``(i + h) mod 5`` (a Latin square: every
    model meets every head, and every head every template, in 15 specs; the 75 combinations
    would take a minute of tracing); the dense-head specs at width x0.5 too."""
    name, template = zoo.MODEL_NAMES[i], TEMPLATE_NAMES[(i + h) % len(TEMPLATE_NAMES)]
    base = zoo.zoo_spec(name)
    head = {"linear": Head(kind="linear"), "dense": Head(kind="dense", hidden=(16,), dropout=0.5),
            "fnn": Head(kind="fnn", fnn=SMALL_FNN)}[HEAD_KINDS[h]]  # fmt: skip
    spec = apply_template(base, template)
    if HEAD_KINDS[h] == "dense":
        spec = width_multiplier(spec, 0.5)
    head = dataclasses.replace(head, pool=base.head.pool)
    return spec.replace(head=head, name=f"{name}/{template}/{head.kind}")


@pytest.mark.parametrize("h", range(len(HEAD_KINDS)), ids=HEAD_KINDS)
@pytest.mark.parametrize("i", range(len(zoo.MODEL_NAMES)), ids=zoo.MODEL_NAMES)
def test_every_zoo_model_head_and_template_counts_its_real_parameters(i, h, conv_primitives):
    spec = _zoo_spec(i, h)
    model, variables = check_params(spec)
    if HEAD_KINDS[h] == "fnn":  # the macs too, with the FNN head on every model
        check_macs(spec, model, variables)


def test_vgg16_at_a_quarter_width_with_an_fnn_head_counts_its_fnn():
    """The issue's case: the FNN head's 4,660 parameters were missing from the count."""
    spec = width_multiplier(zoo.zoo_spec("vgg16", head="fnn",
                                         head_options={"num_hidden": 64, "dim": 16}), 0.25)  # fmt: skip
    fnn = param_count(FNNConfig(num_inputs=128, num_outputs=10, num_hidden=64, dim=16))
    assert fnn == 128 * 18 + 64 * 34 + 10 * 18 == 4660
    check_params(spec)


# ---------------------------------------------------------------------- every paper's output
def _paper_specs() -> dict[str, Spec]:
    """Small outputs of each paper's transforms (the templates' are the zoo specs above)."""
    fnn = Head(kind="fnn", fnn=SMALL_FNN)
    env = ev.EnvelopeConfig(channels=12)
    envelope = ev.envelope_spec(ev.initial_layers((2, 1), env), env, (16, 16, 3), 10)
    arc = np.array([0, 1, 1, 3, 0, 1], np.int32)  # 3 layers: conv3x3; sep3x3 <- 0; sep5x5 <- 1
    child = enas.retrain_spec(arc, 3, 8, input_shape=(16, 16, 3))
    searched = enas.search_spec(arc, 3, 8, input_shape=(16, 16, 3))
    base = enas.retrain_spec(arc, 3, 8, input_shape=(16, 16, 3), head_pool="grouped")
    supernet = nhn.addon_space(base, 2)
    edges = {p: [1] + [0] * (n - 1) for p, n in addon_blocks(supernet).items()}
    addons = materialize(supernet, selection_of(supernet, addons=edges))
    task = residual_conv_spec((8, 8, 3), 4, width=8, hidden=8, blocks=2, stages=2)
    grown = inserted_residual_spec(_removed_spec(_with_filters(task, "s0b0/body0", 11), 1, 1),
                                   0, 1, hidden=5)  # fmt: skip
    specs = {
        "envelopenet": envelope,
        "enas-child": child,
        "enas-search-form": searched,
        "enas-child|fnn": _with_head(child, fnn),
        "nhn-supernet": supernet,
        "nhn-with-addons": addons,
        "nhn-with-addons|fnn": _with_head(addons, dataclasses.replace(fnn, pool="grouped")),
        "capacity-changed": grown,
        "capacity-changed|fnn": _with_head(grown, fnn),
    }
    return {k: v.replace(name=k) for k, v in specs.items()}


@pytest.mark.parametrize("name", list(_paper_specs()))
def test_every_papers_output_counts_its_real_parameters_and_macs(name, conv_primitives):
    spec = _paper_specs()[name]
    model, variables = check_params(spec)
    check_macs(spec, model, variables)


def test_the_enas_supernet_counts_every_candidate():
    """A search space's spec holds every candidate's weights (choice blocks and all)."""
    check_params(enas.macro_space(3, 8, input_shape=(16, 16, 3)))
