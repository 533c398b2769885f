"""The architecture IR: frozen, hashable specs of convolutional networks.

A :class:`Spec` describes a network as ``stem -> stages -> head``::

    Spec(input_shape, num_classes, stem=(blocks...), stages=(Stage(blocks=(...)), ...), head=Head())

Every field that decides an array *shape* (filter counts, kernels, strides, number of blocks,
branches) lives here, in frozen dataclasses built from tuples, so specs hash and compare by value,
can be dict keys / ``jax.jit`` static arguments, and are registered as pytrees with no leaves
(``jax.tree_util.register_static``). Anything that only *selects* among existing weights (per-filter
masks, genes, active ops) is an array passed at apply time (see :mod:`fnnjax.arch.build`'s
``"masks"`` collection), never part of the spec.

Blocks
    Leaf ops (usable as stage blocks and inside cells / residual bodies):
    :class:`Conv` (conv -> BN -> act, any kernel/stride/groups), :class:`SepConv` (depthwise kxk ->
    [BN -> act] -> pointwise 1x1 -> BN -> act, MobileNet v1 block), :class:`Pool` (max/avg),
    :class:`Identity`, :class:`Dropout`, :class:`Pad` (zero padding, used to adapt 28x28 stems).
    Composite blocks: :class:`Cell` (parallel branches, each a sequence of leaf ops, merged by
    channel concat or sum: Inception modules, EnvelopeNet cells and wideners) and :class:`Residual`
    (a sequential body plus an identity / 1x1-projection shortcut: ResNet bottlenecks and basic
    blocks).

Skip connections
    Every stage block has ``skips`` (indices of *earlier blocks of the same stage*, ``-1`` = the
    stage's input) and ``skip_merge``: ``"add"`` sums their outputs onto the block's output (ENAS
    macro style, shapes must match), ``"concat"`` concatenates them to the block's input along
    channels (DenseNet / EnvelopeNet style, usually followed by a 1x1 conv that sets the width).
    Skips never cross stage boundaries.

Template layers
    The filter-redistribution templates (:mod:`fnnjax.construct.templates`) act on one vector
    ``f_1..f_D`` of per-layer filter counts. :func:`layer_filters` reads it and
    :func:`with_layer_filters` writes it back. One template layer is: every filter-producing stage
    block (:class:`Conv`, :class:`SepConv`, :class:`Cell`, :class:`Residual`), or a whole stage when
    ``Stage.tied`` is true (a ResNet stage: "filters per set of residual blocks, kept fixed inside
    them", templates paper Fig. 1). Stem blocks and the head are not template layers. A block's count
    is: ``filters`` for Conv/SepConv; the first filter op of the body for a Residual (the bottleneck
    width, output = expansion x width); for a Cell the summed widths of the branches that end with a
    filter op (concat) or their common width (add). Setting a composite block's count scales all of
    its convs proportionally (see :func:`with_layer_filters`).

Notation (:func:`notation`)
    Blocks are joined by ``-`` inside a stage, stages by `` | ``; the stem (when present) comes
    first and the head last, each separated by `` || ``. Tokens:
    ``64`` 3x3 stride-1 conv with 64 filters; suffixes ``k5`` kernel, ``s2`` stride, ``g4`` groups;
    ``S64`` depthwise-separable conv; ``M``/``A`` 2x2 stride-2 max/avg pool (``M3s1p1`` otherwise);
    ``I`` identity; ``D0.5`` dropout; ``P2`` zero padding; ``[b1|b2|...]`` a concat cell whose
    branches are ops joined by ``>`` (``[...]+`` sums them); ``R(64k1>64>256k1)`` a residual block;
    ``{+0,2}`` / ``{c-1}`` add / concat skips from blocks 0 and 2 / the stage input; ``*`` after a
    stage marks it tied; ``xN`` compresses N identical consecutive blocks. Heads: ``fc10`` (global
    average pool + Dense), ``flat`` prefix for flatten, ``D0.5-fc512-D0.5-fc10`` for dense heads,
    ``fnn10`` for FNN heads. E.g. VGG-19 is
    ``64x2-M | 128x2-M | 256x4-M | 512x4-M | 512x4-M || flat-fc10`` and a ResNet-50 stage is
    ``R(64k1>64>256k1)x3*``.
    :func:`stage_notation` gives the EnvelopeNet summary ``C/n1-n2-.../M`` (C: channels entering the
    first stage, n_i: non-pooling blocks of stage i, M: most parallel filter branches in a cell),
    e.g. ``128/10-1-1-1/6``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import jax

__all__ = [
    "Block",
    "Cell",
    "Conv",
    "Dropout",
    "Head",
    "Identity",
    "LayerInfo",
    "Pad",
    "Pool",
    "Residual",
    "SepConv",
    "Spec",
    "Stage",
    "count_filters",
    "from_json",
    "infer_layers",
    "layer_filters",
    "notation",
    "stage_notation",
    "template_layer_paths",
    "to_json",
    "validate",
    "with_layer_filters",
]

FORMAT = "fnnjax.arch.spec/1"
ACTIVATIONS = ("relu", "relu6", None)


def _static(cls):
    return jax.tree_util.register_static(cls)


# ----------------------------------------------------------------------------------------------
# Dataclasses
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class Block:
    """Base of every block. ``skips``/``skip_merge`` only mean something on stage blocks."""

    skips: tuple[int, ...] = ()
    skip_merge: str = "add"
    kind: ClassVar[str] = "block"


@_static
@dataclasses.dataclass(frozen=True, kw_only=True)
class Conv(Block):
    """Convolution -> BatchNorm -> activation (``act_first``: conv -> act -> BN, EnvelopeNet order).

    Padding is symmetric ``(kernel - 1) // 2`` (PyTorch-style), so a stride-s conv maps H to
    ``floor((H + 2p - k) / s) + 1``.
    """

    filters: int
    kernel: int = 3
    stride: int = 1
    groups: int = 1
    bias: bool = False
    norm: bool = True
    act: str | None = "relu"
    act_first: bool = False
    kind: ClassVar[str] = "conv"


@_static
@dataclasses.dataclass(frozen=True, kw_only=True)
class SepConv(Block):
    """Depthwise ``kernel`` conv (stride) [-> BN -> act if ``mid_norm_act``] -> 1x1 conv -> BN -> act.

    With ``mid_norm_act=True`` this is the MobileNet v1 block; with False, the NASNet/ENAS
    separable conv. ``filters`` is the pointwise output width (the depthwise width is the input's).
    """

    filters: int
    kernel: int = 3
    stride: int = 1
    bias: bool = False
    norm: bool = True
    act: str | None = "relu"
    mid_norm_act: bool = True
    kind: ClassVar[str] = "sepconv"


@_static
@dataclasses.dataclass(frozen=True, kw_only=True)
class Pool(Block):
    """Max (``"max"``) or average (``"avg"``) pooling with symmetric zero/-inf padding."""

    op: str = "max"
    window: int = 2
    stride: int = 2
    padding: int = 0
    kind: ClassVar[str] = "pool"


@_static
@dataclasses.dataclass(frozen=True, kw_only=True)
class Identity(Block):
    """Passes its input through (a skip branch of a cell, an ENAS "identity" op)."""

    kind: ClassVar[str] = "identity"


@_static
@dataclasses.dataclass(frozen=True, kw_only=True)
class Dropout(Block):
    """Dropout with the given rate (rng stream ``"dropout"``, active only when ``train``)."""

    rate: float = 0.5
    kind: ClassVar[str] = "dropout"


@_static
@dataclasses.dataclass(frozen=True, kw_only=True)
class Pad(Block):
    """Zero padding of ``amount`` pixels on every spatial side (28x28 -> 32x32 with 2)."""

    amount: int = 2
    kind: ClassVar[str] = "pad"


LEAF_TYPES: tuple[type, ...] = (Conv, SepConv, Pool, Identity, Dropout, Pad)


@_static
@dataclasses.dataclass(frozen=True, kw_only=True)
class Cell(Block):
    """Parallel branches of leaf ops applied to one input, merged by ``"concat"`` or ``"add"``.

    Inception module: four branches ``(Conv k1,)``, ``(Conv k1, Conv k3)``, ... concatenated.
    EnvelopeNet cell: one single-op branch per conv type. Widener: ``((Pool,), (Conv s2,))``.
    ``act`` is applied after the merge.
    """

    branches: tuple[tuple[Block, ...], ...]
    merge: str = "concat"
    act: str | None = None
    kind: ClassVar[str] = "cell"


@_static
@dataclasses.dataclass(frozen=True, kw_only=True)
class Residual(Block):
    """``act(body(x) + shortcut(x))``; body is a sequence of leaf ops.

    ``shortcut``: ``"auto"`` (identity when stride 1 and widths match, else 1x1 conv + BN with the
    body's stride: the ResNet rule), ``"identity"`` or ``"projection"``.
    """

    body: tuple[Block, ...]
    shortcut: str = "auto"
    act: str | None = "relu"
    kind: ClassVar[str] = "residual"


BLOCK_TYPES: tuple[type, ...] = LEAF_TYPES + (Cell, Residual)
_KIND_TO_TYPE = {cls.kind: cls for cls in BLOCK_TYPES}


@_static
@dataclasses.dataclass(frozen=True, kw_only=True)
class Stage:
    """A sequence of blocks; ``tied`` makes the whole stage one template layer (ResNet stages)."""

    blocks: tuple[Block, ...]
    tied: bool = False
    name: str = ""


HEAD_KINDS = ("linear", "dense", "fnn")


@_static
@dataclasses.dataclass(frozen=True, kw_only=True)
class Head:
    """Classification head.

    Attributes:
        kind: ``"linear"`` (pool + Dense(num_classes)); ``"dense"`` (for each width in ``hidden``:
            Dropout(dropout) -> Dense -> BN -> ReLU; then Dropout(dropout) -> Dense(num_classes));
            ``"fnn"`` (pool + ``fnnjax.floating.layer.fnn_custom(num_classes,
            input_shape=(features,), **options)``).
        pool: ``"avg"`` (global average pool) or ``"flatten"``.
        hidden: hidden Dense widths (``"dense"`` only).
        dropout: dropout rate (``"dense"`` only).
        options: ``(key, value)`` pairs passed to the FNN factory (sorted by key).
    """

    kind: str = "linear"
    pool: str = "avg"
    hidden: tuple[int, ...] = ()
    dropout: float = 0.0
    options: tuple[tuple[str, Any], ...] = ()


@_static
@dataclasses.dataclass(frozen=True, kw_only=True)
class Spec:
    """A whole network. Validated (with field-level messages) on construction.

    Attributes:
        input_shape: ``(height, width, channels)`` of one example.
        num_classes: number of logits.
        stem: blocks before the stages (not touched by templates).
        stages: the body; template layers live here.
        head: the classifier.
        name: free-form label (e.g. ``"vgg19"``).
    """

    input_shape: tuple[int, int, int]
    num_classes: int
    stages: tuple[Stage, ...]
    stem: tuple[Block, ...] = ()
    head: Head = Head()
    name: str = ""

    def __post_init__(self):
        validate(self)

    def replace(self, **changes: Any) -> Spec:
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)


# ----------------------------------------------------------------------------------------------
# Validation (field types and values) with field paths
# ----------------------------------------------------------------------------------------------


def _fail(path: str, expected: str, got: Any) -> None:
    raise ValueError(f"{path}: expected {expected}, got {got!r}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _pos_int(path: str, v: Any) -> None:
    if not _is_int(v) or v <= 0:
        _fail(path, "a positive int", v)


def _nonneg_int(path: str, v: Any) -> None:
    if not _is_int(v) or v < 0:
        _fail(path, "a non-negative int", v)


def _bool(path: str, v: Any) -> None:
    if not isinstance(v, bool):
        _fail(path, "a bool", v)


def _choice(path: str, v: Any, choices: Sequence[Any]) -> None:
    if v not in choices or isinstance(v, bool):
        _fail(path, "one of " + ", ".join(repr(c) for c in choices), v)


def _tuple(path: str, v: Any) -> None:
    if not isinstance(v, tuple):
        _fail(path, "a tuple", v)


def _rate(path: str, v: Any) -> None:
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0.0 <= v < 1.0:
        _fail(path, "a float in [0, 1)", v)


def _validate_block(b: Any, path: str, *, leaf_only: bool, allow_skips: bool) -> None:
    types = LEAF_TYPES if leaf_only else BLOCK_TYPES
    if not isinstance(b, types):
        _fail(path, "one of " + ", ".join(t.__name__ for t in types), type(b).__name__)
    _tuple(f"{path}.skips", b.skips)
    for i, s in enumerate(b.skips):
        if not _is_int(s) or s < -1:
            _fail(f"{path}.skips[{i}]", "an int >= -1", s)
    if b.skips and not allow_skips:
        _fail(f"{path}.skips", "() (skips are only allowed on stage blocks)", b.skips)
    _choice(f"{path}.skip_merge", b.skip_merge, ("add", "concat"))
    if isinstance(b, Conv | SepConv):
        _pos_int(f"{path}.filters", b.filters)
        _pos_int(f"{path}.kernel", b.kernel)
        _pos_int(f"{path}.stride", b.stride)
        _bool(f"{path}.bias", b.bias)
        _bool(f"{path}.norm", b.norm)
        _choice(f"{path}.act", b.act, ACTIVATIONS)
    if isinstance(b, Conv):
        _pos_int(f"{path}.groups", b.groups)
        _bool(f"{path}.act_first", b.act_first)
        if b.filters % b.groups:
            _fail(f"{path}.filters", f"a multiple of groups={b.groups}", b.filters)
    elif isinstance(b, SepConv):
        _bool(f"{path}.mid_norm_act", b.mid_norm_act)
    elif isinstance(b, Pool):
        _choice(f"{path}.op", b.op, ("max", "avg"))
        _pos_int(f"{path}.window", b.window)
        _pos_int(f"{path}.stride", b.stride)
        _nonneg_int(f"{path}.padding", b.padding)
    elif isinstance(b, Dropout):
        _rate(f"{path}.rate", b.rate)
    elif isinstance(b, Pad):
        _nonneg_int(f"{path}.amount", b.amount)
    elif isinstance(b, Cell):
        _tuple(f"{path}.branches", b.branches)
        if not b.branches:
            _fail(f"{path}.branches", "at least one branch", b.branches)
        for k, branch in enumerate(b.branches):
            _tuple(f"{path}.branches[{k}]", branch)
            for m, op in enumerate(branch):
                _validate_block(op, f"{path}.branches[{k}][{m}]", leaf_only=True, allow_skips=False)
        _choice(f"{path}.merge", b.merge, ("concat", "add"))
        _choice(f"{path}.act", b.act, ACTIVATIONS)
    elif isinstance(b, Residual):
        _tuple(f"{path}.body", b.body)
        if not any(isinstance(op, Conv | SepConv) for op in b.body):
            _fail(f"{path}.body", "at least one Conv or SepConv", b.body)
        for m, op in enumerate(b.body):
            _validate_block(op, f"{path}.body[{m}]", leaf_only=True, allow_skips=False)
        _choice(f"{path}.shortcut", b.shortcut, ("auto", "identity", "projection"))
        _choice(f"{path}.act", b.act, ACTIVATIONS)


def _validate_fields(spec: Spec) -> None:
    _tuple("input_shape", spec.input_shape)
    if len(spec.input_shape) != 3:
        _fail("input_shape", "(height, width, channels)", spec.input_shape)
    for i, d in enumerate(spec.input_shape):
        _pos_int(f"input_shape[{i}]", d)
    _pos_int("num_classes", spec.num_classes)
    if not isinstance(spec.name, str):
        _fail("name", "a str", spec.name)
    _tuple("stem", spec.stem)
    for j, b in enumerate(spec.stem):
        _validate_block(b, f"stem[{j}]", leaf_only=False, allow_skips=False)
    _tuple("stages", spec.stages)
    if not spec.stages:
        _fail("stages", "at least one stage", spec.stages)
    for i, st in enumerate(spec.stages):
        if not isinstance(st, Stage):
            _fail(f"stages[{i}]", "a Stage", type(st).__name__)
        _tuple(f"stages[{i}].blocks", st.blocks)
        _bool(f"stages[{i}].tied", st.tied)
        if not isinstance(st.name, str):
            _fail(f"stages[{i}].name", "a str", st.name)
        for j, b in enumerate(st.blocks):
            p = f"stages[{i}].blocks[{j}]"
            _validate_block(b, p, leaf_only=False, allow_skips=True)
            for s in b.skips:
                if not (j >= 1 and -1 <= s < j - 1):
                    _fail(f"{p}.skips", f"indices in [-1, {j - 2}] (earlier blocks)", b.skips)
            if len(set(b.skips)) != len(b.skips):
                _fail(f"{p}.skips", "distinct indices", b.skips)
        if st.tied:
            widths = {_block_layer_filters(b) for b in st.blocks if _is_layer_block(b)}
            if len(widths) > 1:
                _fail(f"stages[{i}]", "equal filter counts in a tied stage", sorted(widths))
    h = spec.head
    if not isinstance(h, Head):
        _fail("head", "a Head", type(h).__name__)
    _choice("head.kind", h.kind, HEAD_KINDS)
    _choice("head.pool", h.pool, ("avg", "flatten"))
    _tuple("head.hidden", h.hidden)
    for i, w in enumerate(h.hidden):
        _pos_int(f"head.hidden[{i}]", w)
    _rate("head.dropout", h.dropout)
    _tuple("head.options", h.options)
    for i, kv in enumerate(h.options):
        if not (isinstance(kv, tuple) and len(kv) == 2 and isinstance(kv[0], str)):
            _fail(f"head.options[{i}]", "a (str, value) pair", kv)
        try:
            hash(kv)
        except TypeError:
            _fail(f"head.options[{i}]", "a hashable value (tuples, not lists)", kv)


def validate(spec: Spec) -> Spec:
    """Checks field types/values and shapes; raises ``ValueError`` naming the offending field.

    Returns the spec, so it can be chained. Shape checks include channel agreement at additions,
    divisibility by ``groups``, skip indices and spatial sizes that stay positive.
    """
    _validate_fields(spec)
    infer_layers(spec)
    return spec


# ----------------------------------------------------------------------------------------------
# Shape inference: one record per parametrised unit (conv / dense), shared by builder docs,
# profiler and surgery.
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LayerInfo:
    """One parametrised unit.

    Attributes:
        path: module path, ``/``-joined Flax module names (``"s1b3/br0_0/dw"``); the params of a
            conv unit are ``params[...path...]["conv"]`` and ``["bn"]``.
        field: the spec field path of the op (``"stages[1].blocks[3].branches[0][0]"``).
        op: ``"conv"``, ``"dwconv"`` (depthwise), ``"dense"`` or ``"norm"`` (a dense head's BN).
        cin, cout: input / output channels (features for dense).
        kernel, stride, groups: conv geometry (1 for dense).
        in_hw, out_hw: spatial sizes (``(1, 1)`` for dense).
        bias, norm: whether the unit has a bias / a BatchNorm.
    """

    path: str
    field: str
    op: str
    cin: int
    cout: int
    kernel: int
    stride: int
    groups: int
    in_hw: tuple[int, int]
    out_hw: tuple[int, int]
    bias: bool
    norm: bool

    @property
    def params(self) -> int:
        """Trainable scalars: weights + bias + BN scale and bias (running stats excluded)."""
        w = self.kernel * self.kernel * (self.cin // self.groups) * self.cout
        return w + (self.cout if self.bias else 0) + (2 * self.cout if self.norm else 0)

    @property
    def macs(self) -> int:
        """Multiply-accumulates of the weights for one example."""
        w = self.kernel * self.kernel * (self.cin // self.groups) * self.cout
        return w * self.out_hw[0] * self.out_hw[1]

    @property
    def valid_macs(self) -> int:
        """Like :attr:`macs` but without the taps that fall on zero padding (what XLA counts)."""
        if self.op not in ("conv", "dwconv"):
            return self.macs
        p = (self.kernel - 1) // 2

        def taps(n_in: int, n_out: int) -> int:
            return sum(
                sum(1 for t in range(self.kernel) if 0 <= o * self.stride - p + t < n_in)
                for o in range(n_out)
            )

        th, tw = taps(self.in_hw[0], self.out_hw[0]), taps(self.in_hw[1], self.out_hw[1])
        return th * tw * (self.cin // self.groups) * self.cout


def stem_name(j: int) -> str:
    return f"stem{j}"


def block_name(i: int, j: int) -> str:
    return f"s{i}b{j}"


def branch_op_name(k: int, m: int) -> str:
    return f"br{k}_{m}"


def body_op_name(m: int) -> str:
    return f"body{m}"


def _conv_out(h: int, k: int, s: int, p: int) -> int:
    return (h + 2 * p - k) // s + 1


class _ShapeWalker:
    """Walks a spec, tracking ``(h, w, c)``; records units and block output shapes."""

    def __init__(self, spec: Spec):
        self.spec = spec
        self.layers: list[LayerInfo] = []
        self.blocks: dict[str, tuple[int, int, int]] = {}

    def _check_hw(self, field: str, h: int, w: int) -> None:
        if h <= 0 or w <= 0:
            raise ValueError(f"{field}: spatial size became {h}x{w}; input too small for this op")

    def leaf(self, op: Block, field: str, path: str, shape: tuple[int, int, int]):
        h, w, c = shape
        if isinstance(op, Conv):
            if c % op.groups:
                raise ValueError(
                    f"{field}.groups: input channels {c} not divisible by groups={op.groups}"
                )
            p = (op.kernel - 1) // 2
            ho, wo = _conv_out(h, op.kernel, op.stride, p), _conv_out(w, op.kernel, op.stride, p)
            self._check_hw(field, ho, wo)
            self.layers.append(
                LayerInfo(
                    path,
                    field,
                    "conv",
                    c,
                    op.filters,
                    op.kernel,
                    op.stride,
                    op.groups,
                    (h, w),
                    (ho, wo),
                    op.bias,
                    op.norm,
                )
            )
            return ho, wo, op.filters
        if isinstance(op, SepConv):
            p = (op.kernel - 1) // 2
            ho, wo = _conv_out(h, op.kernel, op.stride, p), _conv_out(w, op.kernel, op.stride, p)
            self._check_hw(field, ho, wo)
            self.layers.append(
                LayerInfo(
                    f"{path}/dw",
                    field,
                    "dwconv",
                    c,
                    c,
                    op.kernel,
                    op.stride,
                    c,
                    (h, w),
                    (ho, wo),
                    op.bias,
                    op.norm and op.mid_norm_act,
                )
            )
            self.layers.append(
                LayerInfo(
                    f"{path}/pw",
                    field,
                    "conv",
                    c,
                    op.filters,
                    1,
                    1,
                    1,
                    (ho, wo),
                    (ho, wo),
                    op.bias,
                    op.norm,
                )
            )
            return ho, wo, op.filters
        if isinstance(op, Pool):
            ho = _conv_out(h, op.window, op.stride, op.padding)
            wo = _conv_out(w, op.window, op.stride, op.padding)
            self._check_hw(field, ho, wo)
            return ho, wo, c
        if isinstance(op, Pad):
            return h + 2 * op.amount, w + 2 * op.amount, c
        return shape  # Identity, Dropout

    def block(self, b: Block, field: str, path: str, shape: tuple[int, int, int]):
        if isinstance(b, Cell):
            outs = []
            for k, branch in enumerate(b.branches):
                s = shape
                for m, op in enumerate(branch):
                    s = self.leaf(
                        op, f"{field}.branches[{k}][{m}]", f"{path}/{branch_op_name(k, m)}", s
                    )
                outs.append(s)
            if len({o[:2] for o in outs}) > 1:
                raise ValueError(f"{field}.branches: spatial sizes differ: {[o[:2] for o in outs]}")
            if b.merge == "add":
                if len({o[2] for o in outs}) > 1:
                    raise ValueError(
                        f"{field}.branches: add merge needs equal channel counts, got "
                        f"{tuple(o[2] for o in outs)}"
                    )
                out = outs[0]
            else:
                out = (*outs[0][:2], sum(o[2] for o in outs))
        elif isinstance(b, Residual):
            s = shape
            for m, op in enumerate(b.body):
                s = self.leaf(op, f"{field}.body[{m}]", f"{path}/{body_op_name(m)}", s)
            if residual_projects(b, shape, s):
                stride = residual_stride(b)
                ho, wo = _conv_out(shape[0], 1, stride, 0), _conv_out(shape[1], 1, stride, 0)
                if (ho, wo) != s[:2]:
                    raise ValueError(
                        f"{field}: shortcut output {ho}x{wo} does not match body output "
                        f"{s[0]}x{s[1]}"
                    )
                self.layers.append(
                    LayerInfo(
                        f"{path}/shortcut",
                        f"{field}.shortcut",
                        "conv",
                        shape[2],
                        s[2],
                        1,
                        stride,
                        1,
                        shape[:2],
                        (ho, wo),
                        False,
                        True,
                    )
                )
            elif s != shape:
                raise ValueError(
                    f"{field}.shortcut: identity shortcut needs equal shapes, got input {shape} "
                    f"and body output {s}"
                )
            out = s
        else:
            out = self.leaf(b, field, path, shape)
        self.blocks[path] = out
        return out

    def run(self) -> list[LayerInfo]:
        spec = self.spec
        shape = tuple(spec.input_shape)
        for j, b in enumerate(spec.stem):
            shape = self.block(b, f"stem[{j}]", stem_name(j), shape)
        for i, st in enumerate(spec.stages):
            stage_in = shape
            outs: list[tuple[int, int, int]] = []
            for j, b in enumerate(st.blocks):
                field = f"stages[{i}].blocks[{j}]"
                srcs = [stage_in if s == -1 else outs[s] for s in b.skips]
                if srcs and any(x[:2] != shape[:2] for x in srcs):
                    raise ValueError(f"{field}.skips: spatial sizes differ from the block input")
                if b.skip_merge == "concat" and srcs:
                    shape = (*shape[:2], shape[2] + sum(x[2] for x in srcs))
                shape = self.block(b, field, block_name(i, j), shape)
                if b.skip_merge == "add" and srcs:
                    if any(x != shape for x in srcs):
                        raise ValueError(
                            f"{field}.skips: add merge needs shape {shape}, got {[x for x in srcs]}"
                        )
                outs.append(shape)
        self.features_shape = shape
        h = spec.head
        feats = shape[2] if h.pool == "avg" else math.prod(shape)
        if h.kind == "dense":
            for n, width in enumerate(h.hidden):
                self.layers.append(
                    LayerInfo(
                        f"head/fc{n}",
                        f"head.hidden[{n}]",
                        "dense",
                        feats,
                        width,
                        1,
                        1,
                        1,
                        (1, 1),
                        (1, 1),
                        True,
                        False,
                    )
                )
                self.layers.append(  # BN after the hidden Dense: 2 params per unit, no weights
                    LayerInfo(
                        f"head/bn{n}",
                        f"head.hidden[{n}]",
                        "norm",
                        width,
                        width,
                        0,
                        1,
                        1,
                        (1, 1),
                        (1, 1),
                        False,
                        True,
                    )
                )
                feats = width
        if h.kind in ("linear", "dense"):
            self.layers.append(
                LayerInfo(
                    "head/out",
                    "head",
                    "dense",
                    feats,
                    spec.num_classes,
                    1,
                    1,
                    1,
                    (1, 1),
                    (1, 1),
                    True,
                    False,
                )
            )
        self.head_features = feats
        return self.layers


def residual_stride(b: Residual) -> int:
    """Product of the strides of the body's ops (the shortcut projection's stride)."""
    s = 1
    for op in b.body:
        if isinstance(op, Conv | SepConv | Pool):
            s *= op.stride
    return s


def residual_projects(b: Residual, in_shape: Sequence[int], body_out: Sequence[int]) -> bool:
    """Whether the shortcut is a 1x1 projection for this input shape (the ResNet "auto" rule)."""
    if b.shortcut == "projection":
        return True
    if b.shortcut == "identity":
        return False
    return tuple(in_shape) != tuple(body_out)


def infer_layers(spec: Spec) -> list[LayerInfo]:
    """Shape-infers ``spec``; one :class:`LayerInfo` per conv / dense / head-BN unit, in order.

    Raises:
        ValueError: a shape mismatch, naming the spec field.
    """
    return _ShapeWalker(spec).run()


def block_shapes(spec: Spec) -> dict[str, tuple[int, int, int]]:
    """Output ``(h, w, c)`` of every stem / stage block, by module path (``"s1b2"``)."""
    w = _ShapeWalker(spec)
    w.run()
    return w.blocks


def head_features(spec: Spec) -> tuple[tuple[int, int, int], int]:
    """``(shape entering the head, features entering the head's first Dense)``."""
    w = _ShapeWalker(spec)
    w.run()
    return w.features_shape, w.head_features


def count_filters(spec: Spec) -> int:
    """Sum of the template-layer filter counts (the paper's F)."""
    return sum(layer_filters(spec))


# ----------------------------------------------------------------------------------------------
# JSON
# ----------------------------------------------------------------------------------------------


def _block_to_dict(b: Block) -> dict[str, Any]:
    d: dict[str, Any] = {"kind": b.kind}
    for f in dataclasses.fields(b):
        v = getattr(b, f.name)
        if f.name == "branches":
            v = [[_block_to_dict(op) for op in br] for br in v]
        elif f.name == "body":
            v = [_block_to_dict(op) for op in v]
        elif isinstance(v, tuple):
            v = list(v)
        d[f.name] = v
    return d


def _to_tuple(v: Any) -> Any:
    if isinstance(v, list | tuple):
        return tuple(_to_tuple(x) for x in v)
    return v


def _block_from_dict(d: Any, path: str) -> Block:
    if not isinstance(d, Mapping):
        _fail(path, "an object", d)
    kind = d.get("kind")
    if kind not in _KIND_TO_TYPE:
        _fail(f"{path}.kind", "one of " + ", ".join(repr(k) for k in _KIND_TO_TYPE), kind)
    cls = _KIND_TO_TYPE[kind]
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, v in d.items():
        if key == "kind":
            continue
        if key not in names:
            _fail(f"{path}.{key}", f"no such field for kind {kind!r}", key)
        if key == "branches":
            if not isinstance(v, list | tuple):
                _fail(f"{path}.branches", "a list of lists", v)
            v = tuple(
                tuple(_block_from_dict(op, f"{path}.branches[{k}][{m}]") for m, op in enumerate(br))
                if isinstance(br, list | tuple)
                else _fail(f"{path}.branches[{k}]", "a list", br)
                for k, br in enumerate(v)
            )
        elif key == "body":
            if not isinstance(v, list | tuple):
                _fail(f"{path}.body", "a list", v)
            v = tuple(_block_from_dict(op, f"{path}.body[{m}]") for m, op in enumerate(v))
        else:
            v = _to_tuple(v)
        kwargs[key] = v
    missing = [
        f.name
        for f in dataclasses.fields(cls)
        if f.name not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        _fail(f"{path}.{missing[0]}", "a value (required field)", None)
    return cls(**kwargs)


def to_dict(spec: Spec) -> dict[str, Any]:
    """Plain JSON-able dict of ``spec`` (see :func:`to_json`)."""
    return {
        "format": FORMAT,
        "name": spec.name,
        "input_shape": list(spec.input_shape),
        "num_classes": spec.num_classes,
        "stem": [_block_to_dict(b) for b in spec.stem],
        "stages": [
            {"name": st.name, "tied": st.tied, "blocks": [_block_to_dict(b) for b in st.blocks]}
            for st in spec.stages
        ],
        "head": {
            "kind": spec.head.kind,
            "pool": spec.head.pool,
            "hidden": list(spec.head.hidden),
            "dropout": spec.head.dropout,
            "options": {k: v for k, v in spec.head.options},
        },
    }


def from_dict(d: Mapping[str, Any]) -> Spec:
    """Inverse of :func:`to_dict`; raises ``ValueError`` naming the offending field."""
    if not isinstance(d, Mapping):
        _fail("<root>", "an object", d)
    if d.get("format", FORMAT) != FORMAT:
        _fail("format", repr(FORMAT), d.get("format"))
    known = {"format", "name", "input_shape", "num_classes", "stem", "stages", "head"}
    for key in d:
        if key not in known:
            _fail(key, "no such field", key)
    for key in ("input_shape", "num_classes", "stages"):
        if key not in d:
            _fail(key, "a value (required field)", None)
    stem = d.get("stem", [])
    if not isinstance(stem, list | tuple):
        _fail("stem", "a list", stem)
    stages_in = d["stages"]
    if not isinstance(stages_in, list | tuple):
        _fail("stages", "a list", stages_in)
    stages = []
    for i, st in enumerate(stages_in):
        if not isinstance(st, Mapping):
            _fail(f"stages[{i}]", "an object", st)
        for key in st:
            if key not in ("name", "tied", "blocks"):
                _fail(f"stages[{i}].{key}", "no such field", key)
        blocks = st.get("blocks")
        if not isinstance(blocks, list | tuple):
            _fail(f"stages[{i}].blocks", "a list", blocks)
        stages.append(
            Stage(
                blocks=tuple(
                    _block_from_dict(b, f"stages[{i}].blocks[{j}]") for j, b in enumerate(blocks)
                ),
                tied=st.get("tied", False),
                name=st.get("name", ""),
            )
        )
    hd = d.get("head", {})
    if not isinstance(hd, Mapping):
        _fail("head", "an object", hd)
    for key in hd:
        if key not in ("kind", "pool", "hidden", "dropout", "options"):
            _fail(f"head.{key}", "no such field", key)
    options = hd.get("options", {})
    if not isinstance(options, Mapping):
        _fail("head.options", "an object", options)
    head = Head(
        kind=hd.get("kind", "linear"),
        pool=hd.get("pool", "avg"),
        hidden=_to_tuple(hd.get("hidden", ())),
        dropout=hd.get("dropout", 0.0),
        options=tuple(sorted((k, _to_tuple(v)) for k, v in options.items())),
    )
    return Spec(
        name=d.get("name", ""),
        input_shape=_to_tuple(d["input_shape"]),
        num_classes=d["num_classes"],
        stem=tuple(_block_from_dict(b, f"stem[{j}]") for j, b in enumerate(stem)),
        stages=tuple(stages),
        head=head,
    )


def to_json(spec: Spec, *, indent: int | None = None) -> str:
    """Serializes ``spec``; ``from_json(to_json(s)) == s``."""
    return json.dumps(to_dict(spec), indent=indent)


def from_json(text: str) -> Spec:
    """Parses and validates a spec written by :func:`to_json`.

    Raises:
        ValueError: malformed JSON or an invalid field, e.g.
            ``stages[1].blocks[3].filters: expected a positive int, got -2``.
    """
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"<root>: expected JSON, got a parse error: {e}") from None
    return from_dict(d)


# ----------------------------------------------------------------------------------------------
# Template layers
# ----------------------------------------------------------------------------------------------


def _filter_ops(ops: Sequence[Block]) -> list[int]:
    return [m for m, op in enumerate(ops) if isinstance(op, Conv | SepConv)]


def _is_layer_block(b: Block) -> bool:
    if isinstance(b, Conv | SepConv | Residual):
        return True
    if isinstance(b, Cell):
        return any(br and isinstance(br[-1], Conv | SepConv) for br in b.branches)
    return False


def _out_branches(c: Cell) -> list[int]:
    """Branches that end with a filter op (their width is part of the cell's layer count)."""
    return [k for k, br in enumerate(c.branches) if br and isinstance(br[-1], Conv | SepConv)]


def _block_layer_filters(b: Block) -> int:
    if isinstance(b, Conv | SepConv):
        return b.filters
    if isinstance(b, Residual):
        return b.body[_filter_ops(b.body)[0]].filters
    if isinstance(b, Cell):
        widths = [b.branches[k][-1].filters for k in _out_branches(b)]
        return widths[0] if b.merge == "add" else sum(widths)
    raise TypeError(f"{type(b).__name__} has no filter count")


def template_layer_paths(spec: Spec) -> list[str]:
    """Spec field paths of the template layers (``"stages[2]"`` for a tied stage)."""
    out = []
    for i, st in enumerate(spec.stages):
        if st.tied:
            if any(_is_layer_block(b) for b in st.blocks):
                out.append(f"stages[{i}]")
            continue
        out.extend(
            f"stages[{i}].blocks[{j}]" for j, b in enumerate(st.blocks) if _is_layer_block(b)
        )
    return out


def layer_filters(spec: Spec) -> tuple[int, ...]:
    """The per-layer filter vector ``f_1..f_D`` of the templates paper (section 3).

    A tied stage (ResNet) counts once; a Cell (Inception module) or Residual counts as one layer.
    """
    out = []
    for st in spec.stages:
        counts = [_block_layer_filters(b) for b in st.blocks if _is_layer_block(b)]
        if st.tied and counts:
            out.append(counts[0])
        else:
            out.extend(counts)
    return tuple(out)


def _round_scale(n: int, ratio: float) -> int:
    return max(1, int(round(n * ratio)))


def apportion(total: int, weights: Sequence[float]) -> tuple[int, ...]:
    """Splits ``total`` into positive ints proportional to ``weights`` (largest remainder).

    Exact (``sum == total``) whenever ``total >= len(weights)``; each part is at least 1.
    """
    weights = [float(w) for w in weights]
    s = sum(weights)
    raw = [total * w / s for w in weights]
    base = [max(1, math.floor(r)) for r in raw]
    left = total - sum(base)
    order = sorted(range(len(raw)), key=lambda i: (-(raw[i] - math.floor(raw[i])), i))
    i = 0
    while left > 0 and order:
        base[order[i % len(order)]] += 1
        left -= 1
        i += 1
    return tuple(base)


def _scale_op(op: Block, ratio: float, final: int | None = None) -> Block:
    if not isinstance(op, Conv | SepConv):
        return op
    n = final if final is not None else _round_scale(op.filters, ratio)
    if isinstance(op, Conv) and op.groups > 1:
        n = max(op.groups, n - n % op.groups)
    return dataclasses.replace(op, filters=n)


def set_block_filters(b: Block, n: int) -> Block:
    """``b`` with layer filter count ``n``; composite blocks scale all their convs proportionally.

    * Conv / SepConv: ``filters = n``.
    * Residual: the first filter op gets ``n``; every other filter op of the body is scaled by
      ``n / old`` (rounded to nearest, at least 1), so a bottleneck keeps its 4x expansion.
    * Cell (concat): ``n`` is split over the branches that end in a filter op in proportion to
      their current widths by largest remainder (so the widths sum to ``n`` exactly when
      ``n >= #branches``); the inner convs of a branch (e.g. Inception's 1x1 reductions) are scaled
      by that branch's ratio. Cell (add): every branch's last op gets ``n``, inner ops scale.
    """
    if not _is_layer_block(b):
        raise TypeError(f"{type(b).__name__} has no filter count")
    n = int(n)
    if n < 1:
        raise ValueError(f"filter count must be positive, got {n}")
    if isinstance(b, Conv | SepConv):
        return dataclasses.replace(b, filters=n)
    if isinstance(b, Residual):
        idx = _filter_ops(b.body)
        ratio = n / b.body[idx[0]].filters
        body = tuple(
            _scale_op(op, ratio, final=n if m == idx[0] else None) for m, op in enumerate(b.body)
        )
        return dataclasses.replace(b, body=body)
    assert isinstance(b, Cell)
    outs = _out_branches(b)
    old = [b.branches[k][-1].filters for k in outs]
    new = [n] * len(outs) if b.merge == "add" else list(apportion(n, old))
    branches = list(b.branches)
    for k, o, w in zip(outs, old, new, strict=True):
        br = b.branches[k]
        ratio = w / o
        branches[k] = tuple(
            _scale_op(op, ratio, final=w if m == len(br) - 1 else None) for m, op in enumerate(br)
        )
    return dataclasses.replace(b, branches=tuple(branches))


def with_layer_filters(spec: Spec, filters: Sequence[int]) -> Spec:
    """Returns ``spec`` with template-layer counts ``filters`` (inverse of :func:`layer_filters`).

    Composite blocks are rescaled by :func:`set_block_filters`; every block of a tied stage gets the
    same count. Raises ``ValueError`` if the length is wrong or a count is not a positive int.
    """
    filters = tuple(filters)
    d = len(layer_filters(spec))
    if len(filters) != d:
        raise ValueError(f"filters: expected {d} layer counts, got {len(filters)}")
    for i, f in enumerate(filters):
        if isinstance(f, bool) or not isinstance(f, numbers.Integral) or f < 1:
            raise ValueError(f"filters[{i}]: expected a positive int, got {f!r}")
    it = iter(int(f) for f in filters)
    stages = []
    for st in spec.stages:
        if st.tied and any(_is_layer_block(b) for b in st.blocks):
            n = next(it)
            blocks = tuple(set_block_filters(b, n) if _is_layer_block(b) else b for b in st.blocks)
        else:
            blocks = tuple(
                set_block_filters(b, next(it)) if _is_layer_block(b) else b for b in st.blocks
            )
        stages.append(dataclasses.replace(st, blocks=blocks))
    return dataclasses.replace(spec, stages=tuple(stages))


def scale_stem(spec: Spec, m: float) -> Spec:
    """Scales every filter op of the stem by ``m`` (round to nearest, at least 1)."""
    stem = tuple(
        set_block_filters(b, _round_scale(_block_layer_filters(b), m)) if _is_layer_block(b) else b
        for b in spec.stem
    )
    return dataclasses.replace(spec, stem=stem)


# ----------------------------------------------------------------------------------------------
# Notation
# ----------------------------------------------------------------------------------------------


def _fmt_num(x: float) -> str:
    return f"{x:g}"


def _op_token(op: Block) -> str:
    if isinstance(op, Conv | SepConv):
        t = ("S" if isinstance(op, SepConv) else "") + str(op.filters)
        if op.kernel != 3:
            t += f"k{op.kernel}"
        if op.stride != 1:
            t += f"s{op.stride}"
        if isinstance(op, Conv) and op.groups != 1:
            t += f"g{op.groups}"
        return t
    if isinstance(op, Pool):
        t = "M" if op.op == "max" else "A"
        if (op.window, op.stride, op.padding) != (2, 2, 0):
            t += f"{op.window}s{op.stride}" + (f"p{op.padding}" if op.padding else "")
        return t
    if isinstance(op, Identity):
        return "I"
    if isinstance(op, Dropout):
        return f"D{_fmt_num(op.rate)}"
    if isinstance(op, Pad):
        return f"P{op.amount}"
    if isinstance(op, Cell):
        t = "[" + "|".join(">".join(_op_token(o) for o in br) for br in op.branches) + "]"
        return t + ("+" if op.merge == "add" else "")
    if isinstance(op, Residual):
        t = "R(" + ">".join(_op_token(o) for o in op.body) + ")"
        return t + ("" if op.shortcut == "auto" else f"/{op.shortcut}")
    raise TypeError(type(op).__name__)


def _block_token(b: Block) -> str:
    t = _op_token(b)
    if b.skips:
        t += "{" + ("+" if b.skip_merge == "add" else "c") + ",".join(map(str, b.skips)) + "}"
    return t


def _join_runs(tokens: Sequence[str]) -> str:
    out: list[str] = []
    i = 0
    while i < len(tokens):
        j = i
        while j < len(tokens) and tokens[j] == tokens[i]:
            j += 1
        n = j - i
        out.append(tokens[i] if n == 1 else f"{tokens[i]}x{n}")
        i = j
    return "-".join(out)


def _head_token(spec: Spec) -> str:
    h = spec.head
    pre = "flat-" if h.pool == "flatten" else ""
    if h.kind == "linear":
        return f"{pre}fc{spec.num_classes}"
    if h.kind == "fnn":
        return f"{pre}fnn{spec.num_classes}"
    parts = []
    for w in h.hidden:
        if h.dropout:
            parts.append(f"D{_fmt_num(h.dropout)}")
        parts.append(f"fc{w}")
    if h.dropout:
        parts.append(f"D{_fmt_num(h.dropout)}")
    parts.append(f"fc{spec.num_classes}")
    return pre + "-".join(parts)


def notation(spec: Spec) -> str:
    """Compact human-readable notation (grammar in the module docstring).

    >>> notation(vgg19_spec)  # doctest: +SKIP
    '64x2-M | 128x2-M | 256x4-M | 512x4-M | 512x4-M || flat-fc10'
    """
    stages = " | ".join(
        _join_runs([_block_token(b) for b in st.blocks]) + ("*" if st.tied else "")
        for st in spec.stages
    )
    parts = ([_join_runs([_block_token(b) for b in spec.stem])] if spec.stem else []) + [
        stages,
        _head_token(spec),
    ]
    return " || ".join(parts)


def stage_notation(spec: Spec) -> str:
    """EnvelopeNet-style summary ``C/n1-n2-.../M`` (see module docstring), e.g. ``128/10-1-1-1/6``."""
    c = spec.input_shape[2]
    if spec.stem:
        c = list(block_shapes(spec).values())[len(spec.stem) - 1][2]
    depths = [sum(1 for b in st.blocks if not isinstance(b, Pool)) for st in spec.stages]
    m = 1
    for st in spec.stages:
        for b in st.blocks:
            if isinstance(b, Cell):
                m = max(m, len(_out_branches(b)))
    return f"{c}/" + "-".join(map(str, depths)) + f"/{m}"


def iter_blocks(spec: Spec) -> Iterator[tuple[str, str, Block]]:
    """Yields ``(module_path, field_path, block)`` for stem and stage blocks, in order."""
    for j, b in enumerate(spec.stem):
        yield stem_name(j), f"stem[{j}]", b
    for i, st in enumerate(spec.stages):
        for j, b in enumerate(st.blocks):
            yield block_name(i, j), f"stages[{i}].blocks[{j}]", b
