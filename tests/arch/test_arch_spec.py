"""The architecture IR: value semantics, JSON round trip, field-level validation, notation."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fnnjax import models
from fnnjax.arch import zoo
from fnnjax.arch.notation import notation, stage_notation
from fnnjax.arch.serialize import from_json, to_json
from fnnjax.arch.shapes import infer_layers
from fnnjax.arch.spec import (
    AddOn,
    Cell,
    Conv,
    Dropout,
    FnnHead,
    Head,
    Identity,
    Pad,
    Pool,
    SepConv,
    Spec,
    Stage,
)
from fnnjax.construct.layers import (
    count_filters,
    layer_filters,
    template_layer_paths,
    with_layer_filters,
)


def small_spec(f=(4, 6, 5), head=None):
    return Spec(
        name="small",
        input_shape=(8, 8, 3),
        num_classes=3,
        stem=(Conv(filters=4),),
        stages=(
            Stage(blocks=(Conv(filters=f[0], bias=True), SepConv(filters=f[1]), Pool())),
            Stage(
                blocks=(
                    Cell(
                        branches=(
                            (Conv(filters=3, kernel=1),),
                            (Conv(filters=2, kernel=1), Conv(filters=f[2])),
                            (Pool(window=3, stride=1, padding=1), Conv(filters=2, kernel=1)),
                        )
                    ),
                    Conv(filters=7, kernel=1, skips=(-1,), skip_merge="concat"),
                    Dropout(rate=0.25),
                )
            ),
            Stage(blocks=(zoo.bottleneck(2), zoo.bottleneck(2, 2)), tied=True),
        ),
        head=head or Head(),
    )


@pytest.mark.parametrize("name", zoo.MODEL_NAMES)
def test_zoo_specs_round_trip_through_json(name):
    spec = models.build_spec(name, 10, (32, 32, 3))
    text = to_json(spec)
    back = from_json(text)
    assert back == spec and hash(back) == hash(spec)
    assert json.loads(text)["format"] == "fnnjax.arch.spec/2"


def test_round_trip_keeps_every_field_of_a_typed_fnn_head():
    spec = small_spec(head=Head(kind="fnn", pool="flatten", fnn=FnnHead(dim=8, iterations=2)))
    assert from_json(to_json(spec, indent=2)) == spec
    assert json.loads(to_json(spec))["head"]["fnn"]["dim"] == 8
    assert Head(kind="fnn").fnn == FnnHead() and Head().fnn is None


def test_version_1_files_with_untyped_fnn_options_still_read():
    d = json.loads(to_json(small_spec(head=Head(kind="fnn", fnn=FnnHead(dim=8, iterations=2)))))
    d["format"] = "fnnjax.arch.spec/1"
    d["head"]["options"] = {"dim": 8, "iterations": 2}
    del d["head"]["fnn"]
    assert from_json(json.dumps(d)).head.fnn == FnnHead(dim=8, iterations=2)
    d["head"]["options"] = {"dims": 8}
    with pytest.raises(ValueError, match=r"head.options.dims: expected a field of FnnHead"):
        from_json(json.dumps(d))


@pytest.mark.parametrize(
    ("head", "message"),
    [
        (Head(kind="fnn", fnn=FnnHead(num_hidden=0)), "head.fnn.num_hidden: expected a positive int"),
        (Head(kind="fnn", fnn=FnnHead(normalization="l1")), "head.fnn.normalization: expected one of"),
        (Head(kind="fnn", fnn=FnnHead(input_dropout=1.0)), "head.fnn.input_dropout: expected a float"),
        (Head(kind="fnn", fnn=FnnHead(eps=0.0)), "head.fnn.eps: expected a positive number"),
        (Head(kind="linear", fnn=FnnHead()), "head.fnn: expected None for a 'linear' head"),
    ],
)
def test_fnn_head_fields_are_validated_with_their_path(head, message):
    with pytest.raises(ValueError, match=message):
        small_spec(head=head)


def test_shape_inference_runs_once_per_spec():
    from fnnjax.arch import shapes

    spec = small_spec(f=(3, 5, 7))
    before = shapes._shapes.cache_info()
    first = infer_layers(spec)
    infer_layers(small_spec(f=(3, 5, 7)))  # an equal spec built again: a cache hit
    after = shapes._shapes.cache_info()
    assert after.hits - before.hits >= 2 and after.misses - before.misses <= 1
    first.clear()  # callers get their own list
    assert len(infer_layers(spec)) > 0


def test_specs_hash_and_compare_by_value():
    a, b = small_spec(), small_spec()
    assert a == b and hash(a) == hash(b) and a is not b
    assert {a: 1}[b] == 1
    c = small_spec(f=(4, 6, 6))
    assert c != a


def test_spec_is_a_static_pytree_usable_under_jit():
    spec = small_spec()
    assert jax.tree_util.tree_leaves({"spec": spec, "x": jnp.ones(2)}) != []
    assert len(jax.tree_util.tree_leaves(spec)) == 0

    @jax.jit
    def f(s, x):
        return x * sum(layer_filters(s))

    assert float(f(spec, jnp.float32(1.0))) == sum(layer_filters(spec))


def _broken(d, path, value):
    node = d
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return json.dumps(d)


def test_invalid_filter_count_names_the_field():
    d = json.loads(to_json(models.build_spec("vgg19")))
    text = _broken(d, ["stages", 1, "blocks", 1, "filters"], -2)
    with pytest.raises(
        ValueError, match=r"^stages\[1\]\.blocks\[1\]\.filters: expected a positive int, got -2$"
    ):
        from_json(text)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (
            ["stages", 0, "blocks", 0, "kernel"],
            0,
            r"stages\[0\]\.blocks\[0\]\.kernel: expected a positive int",
        ),
        (
            ["stages", 0, "blocks", 0, "kind"],
            "conv9",
            r"stages\[0\]\.blocks\[0\]\.kind: expected one of",
        ),
        (
            ["stages", 0, "blocks", 0, "colour"],
            3,
            r"stages\[0\]\.blocks\[0\]\.colour: expected no such field",
        ),
        (
            ["stages", 0, "blocks", 2, "op"],
            "min",
            r"stages\[0\]\.blocks\[2\]\.op: expected one of 'max', 'avg'",
        ),
        (
            ["stages", 1, "blocks", 0, "branches", 1, 1, "filters"],
            True,
            r"stages\[1\]\.blocks\[0\]\.branches\[1\]\[1\]\.filters: expected a positive int, got True",
        ),
        (
            ["stages", 2, "blocks", 0, "body", 0, "act"],
            "gelu",
            r"stages\[2\]\.blocks\[0\]\.body\[0\]\.act",
        ),
        (["head", "kind"], "svm", r"head\.kind: expected one of 'linear', 'dense', 'fnn'"),
        (["head", "dropout"], 1.5, r"head\.dropout: expected a float in \[0, 1\)"),
        (["num_classes"], 0, r"num_classes: expected a positive int"),
        (["input_shape"], [8, 8], r"input_shape: expected \(height, width, channels\)"),
    ],
)
def test_invalid_fields_fail_with_their_path(path, value, message):
    d = json.loads(to_json(small_spec()))
    with pytest.raises(ValueError, match=message):
        from_json(_broken(d, path, value))


def test_shape_errors_name_the_block():
    bad_add = Cell(branches=((Conv(filters=3),), (Conv(filters=4),)), merge="add")
    with pytest.raises(
        ValueError, match=r"stages\[0\]\.blocks\[1\]\.branches: add merge needs equal"
    ):
        Spec(
            input_shape=(8, 8, 3), num_classes=2, stages=(Stage(blocks=(Conv(filters=2), bad_add)),)
        )
    with pytest.raises(ValueError, match=r"stages\[0\]\.blocks\[0\]\.skips"):
        Spec(
            input_shape=(8, 8, 3),
            num_classes=2,
            stages=(Stage(blocks=(Conv(filters=2, skips=(-1,)),)),),
        )
    with pytest.raises(ValueError, match=r"stages\[0\]\.blocks\[3\]: spatial size became 0x0"):
        Spec(
            input_shape=(4, 4, 3),
            num_classes=2,
            stages=(Stage(blocks=(Pool(), Pool(), Conv(filters=2), Pool())),),
        )
    with pytest.raises(
        ValueError, match=r"stages\[0\]: expected equal filter counts in a tied stage"
    ):
        Spec(
            input_shape=(8, 8, 3),
            num_classes=2,
            stages=(Stage(blocks=(zoo.bottleneck(2), zoo.bottleneck(3)), tied=True),),
        )
    with pytest.raises(ValueError, match=r"stages\[0\]\.blocks\[0\]\.groups: input channels 3"):
        Spec(
            input_shape=(8, 8, 3),
            num_classes=2,
            stages=(Stage(blocks=(Conv(filters=4, groups=2),)),),
        )


def test_from_json_rejects_garbage_with_a_message():
    with pytest.raises(ValueError, match=r"<root>: expected JSON"):
        from_json("{not json")
    with pytest.raises(ValueError, match=r"stages: expected a value"):
        from_json('{"input_shape": [8, 8, 3], "num_classes": 2}')


def test_notation_of_the_zoo():
    assert notation(models.build_spec("vgg19")) == (
        "64x2-M | 128x2-M | 256x4-M | 512x4-M | 512x4-M || flat-fc10"
    )
    assert notation(models.build_spec("vgg16")) == (
        "64x2-M | 128x2-M | 256x3-M | 512x3-M | 512x3-M || flat-D0.5-fc512-D0.5-fc10"
    )
    assert notation(models.build_spec("vgg19", 10, (28, 28, 1))).startswith("P2 || 64x2-M")
    res = notation(models.build_spec("resnet50"))
    assert res.startswith("64 || R(64k1>64>256k1)x3* | R(128k1>128s2>512k1)-R(128k1>128>512k1)x3*")
    assert notation(models.build_spec("mobilenet")) == (
        "32 || S64 | S128s2-S128 | S256s2-S256 | S512s2-S512x5 | S1024s2-S1024 || fc10"
    )
    assert "[64k1|96k1>128|16k1>32>32|M3s1p1>32k1]" in notation(models.build_spec("inception"))
    assert stage_notation(models.build_spec("resnet50")) == "64/3-4-6-3/1"
    assert stage_notation(models.build_spec("inception")) == "192/2-5-2/4"


def test_notation_marks_skips_and_merges():
    text = notation(small_spec())
    assert "7k1{c-1}" in text and "D0.25" in text and text.endswith("|| fc3")
    env = Spec(
        input_shape=(8, 8, 3),
        num_classes=2,
        stem=(Conv(filters=8),),
        stages=(
            Stage(
                blocks=(
                    Cell(
                        branches=(
                            (Conv(filters=2),),
                            (SepConv(filters=2, kernel=5),),
                            (Identity(),),
                        ),
                        merge="concat",
                    ),
                )
                * 3
            ),
        ),
    )
    assert notation(env) == "8 || [2|S2k5|I]x3 || fc2"
    assert stage_notation(env) == "8/3/2"


def test_paper_vgg19_layer_vector_and_total():
    spec = models.build_spec("vgg19")
    f = layer_filters(spec)
    assert len(f) == 16 and sum(f) == 5504 == count_filters(spec)
    assert with_layer_filters(spec, f) == spec


def test_template_layers_of_blocks_stages_and_modules():
    spec = small_spec()
    assert layer_filters(spec) == (4, 6, 3 + 5 + 2, 7, 2)
    assert template_layer_paths(spec) == [
        "stages[0].blocks[0]",
        "stages[0].blocks[1]",
        "stages[1].blocks[0]",
        "stages[1].blocks[1]",
        "stages[2]",
    ]
    new = with_layer_filters(spec, (5, 3, 20, 2, 4))
    assert layer_filters(new) == (5, 3, 20, 2, 4)
    cell = new.stages[1].blocks[0]
    # 20 split over branch widths (3, 5, 2) in proportion: 6, 10, 4; inner 1x1 reduce 2 -> 4.
    assert [br[-1].filters for br in cell.branches] == [6, 10, 4]
    assert cell.branches[1][0].filters == 4
    # A tied bottleneck stage: every block gets width 4 and expansion 16.
    for b in new.stages[2].blocks:
        assert [op.filters for op in b.body] == [4, 4, 16]
    assert new.stem == spec.stem  # stems are never template layers


def test_with_layer_filters_rejects_bad_vectors():
    spec = small_spec()
    with pytest.raises(ValueError, match=r"filters: expected 5 layer counts, got 2"):
        with_layer_filters(spec, (1, 2))
    with pytest.raises(ValueError, match=r"filters\[1\]: expected a positive int, got 0"):
        with_layer_filters(spec, (1, 0, 3, 4, 5))


def test_layer_info_counts_match_hand_computation():
    spec = Spec(
        input_shape=(8, 8, 3),
        num_classes=2,
        stages=(Stage(blocks=(Conv(filters=4, bias=True), SepConv(filters=6, stride=2))),),
    )
    layers = infer_layers(spec)
    assert [u.path for u in layers] == ["s0b0", "s0b1/dw", "s0b1/pw", "head/out"]
    conv, dw, pw, out = layers
    assert conv.params == 3 * 3 * 3 * 4 + 4 + 2 * 4 and conv.macs == 9 * 3 * 4 * 64
    assert dw.params == 9 * 4 + 8 and dw.out_hw == (4, 4) and dw.macs == 9 * 4 * 16
    assert pw.params == 4 * 6 + 12 and pw.macs == 24 * 16
    assert out.params == 6 * 2 + 2


@st.composite
def tiny_specs(draw):
    n = draw(st.integers(1, 4))
    blocks = []
    for _ in range(n):
        k = draw(st.sampled_from(["conv", "sep", "cell", "res", "pool"]))
        f = draw(st.integers(1, 9))
        if k == "conv":
            blocks.append(
                Conv(
                    filters=f,
                    kernel=draw(st.sampled_from([1, 3, 5])),
                    bias=draw(st.booleans()),
                    act=draw(st.sampled_from(["relu", None])),
                )
            )
        elif k == "sep":
            blocks.append(SepConv(filters=f, mid_norm_act=draw(st.booleans())))
        elif k == "cell":
            blocks.append(
                Cell(
                    branches=((Conv(filters=f, kernel=1),), (Pool(window=3, stride=1, padding=1),))
                )
            )
        elif k == "res":
            blocks.append(zoo.bottleneck(f, draw(st.sampled_from([1, 2]))))
        else:
            blocks.append(Pool(op=draw(st.sampled_from(["max", "avg"]))))
    head = draw(
        st.sampled_from(
            [Head(), Head(kind="dense", hidden=(5,), dropout=0.5), Head(pool="flatten")]
        )
    )
    stages = [Stage(blocks=tuple(blocks))]
    if draw(st.booleans()):  # a reduced stage reading earlier blocks through the search leaves
        skips = tuple(draw(st.lists(st.sampled_from([n - 1, n]), unique=True).map(sorted)))
        addons = tuple(AddOn(source=draw(st.sampled_from([n - 1, n])),
                             neurons=draw(st.integers(1, 3)), kernel=draw(st.sampled_from([3, 5])))
                       for _ in range(draw(st.integers(0, 2))))  # fmt: skip
        merge = draw(st.sampled_from(["sum_bn", "concat_conv"]))
        stages.append(Stage(blocks=(Conv(filters=4), Conv(filters=4, gated_skips=skips,
                                                          gated_merge=merge, addons=addons)),
                            reduce=4))  # fmt: skip
    return Spec(
        input_shape=(16, 16, 2),  # room for four halvings after the pad
        num_classes=3,
        stem=(Pad(amount=1),),
        stages=tuple(stages),
        head=head,
    )


@settings(max_examples=40, deadline=None)
@given(tiny_specs())
def test_json_round_trip_is_identity_for_random_specs(spec):
    back = from_json(to_json(spec))
    assert back == spec and hash(back) == hash(spec)
    assert dataclasses.asdict(back) == dataclasses.asdict(spec)


def test_dense_blocks_make_mlps_with_their_own_notation_json_and_checks():
    from fnnjax.arch import Dense, Residual, build_model, init_variables

    mlp = Spec(input_shape=(1, 1, 3), num_classes=1, head=Head(pool="flatten"),
               stages=(Stage(blocks=(Dense(filters=16), Residual(
                   body=(Dense(filters=8, norm=True), Dense(filters=16, act=None)),
                   shortcut="identity"))),))  # fmt: skip
    assert notation(mlp) == "fc16-R(fc8bn>fc16lin)/identity || flat-fc1"
    assert from_json(to_json(mlp)) == mlp and from_json(to_json(mlp)).stages[0].blocks[0] != Conv(
        filters=16, kernel=1, bias=True, norm=False)  # a Dense is not a 1x1 Conv, even if alike
    layers = infer_layers(mlp)
    assert [u.op for u in layers[:3]] == ["dense", "dense", "dense"]
    assert layers[0].params == 3 * 16 + 16 and layers[1].params == 16 * 8 + 8 + 2 * 8
    model = build_model(mlp)
    v = init_variables(model, jax.random.key(0), (1, 1, 3))
    y = model.apply(v, jnp.ones((4, 3)))  # [batch, d] vectors are reshaped to (1, 1, d)
    assert y.shape == (4, 1)
    with pytest.raises(ValueError, match=r"stages\[0\].blocks\[0\].kernel: expected 1"):
        mlp.replace(stages=(Stage(blocks=(Dense(filters=4, kernel=3),)),))
