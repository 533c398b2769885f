"""Shape inference for :class:`~fnnjax.arch.spec.Spec`: one record per parametrised unit.

The walk runs once per spec (specs are hashable; the result is cached), and is shared by the
builder's documentation, the profiler, surgery and validation: :func:`infer_layers` lists every
conv / dense / head-BN unit and an FNN head with its shapes, :func:`block_shapes` the output shape
of every stem and stage block, :func:`head_features` what enters the head.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence

from fnnjax.arch.spec import (
    Block,
    Cell,
    Choice,
    Conv,
    Dense,
    Pad,
    Pool,
    Residual,
    SepConv,
    Spec,
    addon_name,
    block_name,
    body_op_name,
    branch_op_name,
    choice_op_name,
    reduce_name,
    reduced_sources,
    skip_merge_name,
    stem_name,
)
from fnnjax.floating.network import forward_macs
from fnnjax.floating.neurons import FNNConfig, param_count

__all__ = [
    "FNN_HEAD_PATH",
    "LayerInfo",
    "block_shapes",
    "entry_units",
    "gated_source_shapes",
    "head_features",
    "infer_layers",
    "residual_projects",
    "residual_stride",
]


#: Module path of an ``"fnn"`` head's Farfalle network: Flax names the :class:`~fnnjax.floating.FNN`
#: that :class:`~fnnjax.arch.build.HeadUnit` creates ``FNN_0``; checkpoints hold its params there.
FNN_HEAD_PATH = "head/FNN_0"


@dataclasses.dataclass(frozen=True)
class LayerInfo:
    """One parametrised unit.

    Attributes:
        path: module path, ``/``-joined Flax module names (``"s1b3/br0_0/dw"``); the params of a
            conv unit are ``params[...path...]["conv"]`` and ``["bn"]``.
        field: the spec field path of the op (``"stages[1].blocks[3].branches[0][0]"``).
        op: ``"conv"``, ``"dwconv"`` (depthwise), ``"dense"``, ``"norm"`` (a BatchNorm on its
            own: a dense head's, or a ``sum_bn`` gated-skip merge's) or ``"fnn"`` (an ``"fnn"``
            head's whole Farfalle network, :data:`FNN_HEAD_PATH`, field ``"head.fnn"``: one
            record, since its parameters are neurons' embeddings, not per-output-unit weights;
            nothing resizes or plans it filter by filter).
        cin, cout: input / output channels (features for dense and fnn).
        kernel, stride, groups: conv geometry (1 for dense; kernel 0 for norm and fnn units,
            which have no weight matrix).
        in_hw, out_hw: spatial sizes (``(1, 1)`` for dense and fnn).
        bias, norm: whether the unit has a bias / a BatchNorm.
        padding: zero padding on each side (``None``: the library's ``(kernel - 1) // 2``; 0 for
            a grouped-conv head's VALID kernel).
        fnn: an fnn unit's :class:`~fnnjax.floating.FNNConfig` (``None`` for every other op);
            its :attr:`params` and :attr:`macs` come from the floating package's own counts.
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
    padding: int | None = None
    fnn: FNNConfig | None = None

    @property
    def params(self) -> int:
        """Trainable scalars: weights + bias + BN scale and bias (running stats excluded); an
        fnn unit's ``R (d + 2) + N (2 d + 2) + S (d + 2)``
        (:func:`fnnjax.floating.neurons.param_count`, the FNN paper's Table 1)."""
        if self.fnn is not None:
            return param_count(self.fnn)
        w = self.kernel * self.kernel * (self.cin // self.groups) * self.cout
        return w + (self.cout if self.bias else 0) + (2 * self.cout if self.norm else 0)

    @property
    def macs(self) -> int:
        """Multiply-accumulates of the weights for one example; an fnn unit's
        :func:`fnnjax.floating.forward_macs` for a batch of one (the products its forward path
        does per example; work on its parameters alone, once per call, is not per-example)."""
        if self.fnn is not None:
            return forward_macs(self.fnn)
        w = self.kernel * self.kernel * (self.cin // self.groups) * self.cout
        return w * self.out_hw[0] * self.out_hw[1]

    @property
    def valid_macs(self) -> int:
        """Like :attr:`macs` but without the taps that fall on zero padding (what XLA counts).

        An fnn unit's equal :attr:`macs`: XLA multiplies a softmax chunk's padded source slots
        too, and :attr:`macs` counts them already."""
        if self.op not in ("conv", "dwconv"):
            return self.macs
        p = (self.kernel - 1) // 2 if self.padding is None else self.padding

        def taps(n_in: int, n_out: int) -> int:
            return sum(
                sum(1 for t in range(self.kernel) if 0 <= o * self.stride - p + t < n_in)
                for o in range(n_out)
            )

        th, tw = taps(self.in_hw[0], self.out_hw[0]), taps(self.in_hw[1], self.out_hw[1])
        return th * tw * (self.cin // self.groups) * self.cout


def _conv_out(h: int, k: int, s: int, p: int) -> int:
    return (h + 2 * p - k) // s + 1


class _ShapeWalker:
    """Walks a spec, tracking ``(h, w, c)``; records units and block output shapes."""

    def __init__(self, spec: Spec):
        self.spec = spec
        self.layers: list[LayerInfo] = []
        self.blocks: dict[str, tuple[int, int, int]] = {}
        self.gated: dict[str, tuple[tuple[int, int, int], ...]] = {}

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
                    "dense" if isinstance(op, Dense) else "conv",
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
        if isinstance(b, Choice):
            outs = []
            for k, seq in enumerate(b.candidates):
                s = shape
                for m, op in enumerate(seq):
                    s = self.leaf(op, f"{field}.candidates[{k}][{m}]",
                                  f"{path}/{choice_op_name(k, m)}", s)  # fmt: skip
                outs.append(s)
            if len(set(outs)) > 1:
                raise ValueError(f"{field}.candidates: every candidate must give one output shape, "
                                 f"got {outs}")  # fmt: skip
            self.blocks[path] = outs[0]
            return outs[0]
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

    def _unit(self, path, field, op, cin, cout, kernel, stride, in_hw, out_hw, norm=True):
        self.layers.append(LayerInfo(path, field, op, cin, cout, kernel, stride, 1, in_hw, out_hw,
                                     False, norm))  # fmt: skip

    def reduce(self, field: str, path: str, shape: tuple[int, int, int], filters: int):
        """A factorized reduction: two 1x1 stride-2 convs (``p1``, ``p2``) to half the filters
        each (with their BN), outputs concatenated."""
        h, w, c = shape
        if filters < 2:
            raise ValueError(f"{field}: expected at least 2 filters (two halves), got {filters}")
        out_hw = ((h + 1) // 2, (w + 1) // 2)
        self._unit(f"{path}/p1", field, "conv", c, filters // 2, 1, 2, (h, w), out_hw)
        self._unit(f"{path}/p2", field, "conv", c, filters - filters // 2, 1, 2, (h, w), out_hw)
        return (*out_hw, filters)

    def addons(self, b: Block, field: str, i: int, j: int, shape, sources):
        """Records the add-on units of block ``(i, j)``; returns its widened input shape."""
        entry_units(b, block_name(i, j), field)  # the block's input is read by plain convs
        c = shape[2]
        for e, a in enumerate(b.addons):
            src = sources[a.source]
            if src[:2] != shape[:2]:
                raise ValueError(
                    f"{field}.addons[{e}].source: block {a.source}'s output is {src[0]}x{src[1]}, "
                    f"the block's input {shape[0]}x{shape[1]}; an add-on edge joins blocks of one "
                    f"spatial size"
                )
            self.layers.append(LayerInfo(f"{addon_name(i, j, e)}/unit", f"{field}.addons[{e}]",
                                         "conv", src[2], a.neurons, a.kernel, 1, 1, src[:2],
                                         src[:2], False, True))  # fmt: skip
            c += a.neurons
        return (*shape[:2], c)

    def gated_merge(self, b: Block, field: str, path: str, shape, sources) -> None:
        """Checks the gated sources against the block's output; records the merge's unit."""
        self.gated[path] = tuple(sources)
        for n, (s, src) in enumerate(zip(b.gated_skips, sources, strict=True)):
            ok = src == shape if b.gated_merge == "sum_bn" else src[:2] == shape[:2]
            if not ok:
                want = f"shape {shape}" if b.gated_merge == "sum_bn" else f"size {shape[:2]}"
                raise ValueError(
                    f"{field}.gated_skips[{n}]: source {s} arrives with shape {src}, the "
                    f"{b.gated_merge!r} merge needs {want}; give the stages in between a "
                    f"'reduce' to the block's width"
                )
        hw = shape[:2]
        if b.gated_merge == "sum_bn":
            self._unit(f"{path}/bn", f"{field}.gated_merge", "norm", shape[2], shape[2], 0, 1, hw,
                       hw)  # fmt: skip
        else:
            cin = shape[2] + sum(src[2] for src in sources)
            self._unit(f"{path}/unit", f"{field}.gated_merge", "conv", cin, shape[2], 1, 1, hw, hw)

    def run(self) -> list[LayerInfo]:
        spec = self.spec
        shape = tuple(spec.input_shape)
        for j, b in enumerate(spec.stem):
            shape = self.block(b, f"stem[{j}]", stem_name(j), shape)
        sources = {-1: shape}  # flat index -> current (reduced) output shape, for gated skips
        g = 0
        for i, st in enumerate(spec.stages):
            if st.reduce is not None:
                for s in reduced_sources(spec, i):
                    sources[s] = self.reduce(f"stages[{i}].reduce", reduce_name(i, s),
                                             sources[s], st.reduce)  # fmt: skip
                shape = sources[g - 1]
            stage_in = shape
            outs: list[tuple[int, int, int]] = []
            for j, b in enumerate(st.blocks):
                field = f"stages[{i}].blocks[{j}]"
                srcs = [stage_in if s == -1 else outs[s] for s in b.skips]
                if srcs and any(x[:2] != shape[:2] for x in srcs):
                    raise ValueError(f"{field}.skips: spatial sizes differ from the block input")
                if b.skip_merge == "concat" and srcs:
                    shape = (*shape[:2], shape[2] + sum(x[2] for x in srcs))
                if b.addons:
                    shape = self.addons(b, field, i, j, shape, sources)
                shape = self.block(b, field, block_name(i, j), shape)
                if b.skip_merge == "add" and srcs:
                    if any(x != shape for x in srcs):
                        raise ValueError(
                            f"{field}.skips: add merge needs shape {shape}, got {[x for x in srcs]}"
                        )
                if b.gated_merge is not None:
                    self.gated_merge(b, field, skip_merge_name(i, j), shape,
                                     [sources[s] for s in b.gated_skips])  # fmt: skip
                outs.append(shape)
                sources[g] = shape
                g += 1
        self.features_shape = shape
        h = spec.head
        feats = math.prod(shape) if h.pool == "flatten" else shape[2]
        if h.pool == "grouped":
            if shape[0] != shape[1]:
                raise ValueError(f"head.pool: 'grouped' needs a square feature map (its kernel "
                                 f"covers it), got {shape[0]}x{shape[1]}; use 'avg'")  # fmt: skip
            self.layers.append(LayerInfo("head/pool", "head.pool", "dwconv", feats, feats,
                                         shape[0], 1, feats, tuple(shape[:2]), (1, 1), False,
                                         False, padding=0))  # fmt: skip
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
        if h.kind == "fnn":
            config = FNNConfig(num_inputs=feats, num_outputs=spec.num_classes, **h.fnn.options())
            self.layers.append(LayerInfo(FNN_HEAD_PATH, "head.fnn", "fnn", feats, spec.num_classes,
                                         0, 1, 1, (1, 1), (1, 1), False, False,
                                         fnn=config))  # fmt: skip
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


def entry_units(b: Block, path: str, field: str = "block") -> list[str]:
    """Paths of the conv units that read block ``b``'s input (module ``path``).

    Raises:
        ValueError: some op reading the input is not a plain (ungrouped) conv; add-on edges need
            every reader to be one, so that an edge's channels are kernel rows.
    """
    if isinstance(b, Conv):
        firsts = [(path, b)]
    elif isinstance(b, Cell):
        firsts = [(f"{path}/{branch_op_name(k, 0)}", br[0]) for k, br in enumerate(b.branches)]
    elif isinstance(b, Choice):
        firsts = [(f"{path}/{choice_op_name(k, 0)}", c[0]) for k, c in enumerate(b.candidates)]
    else:
        firsts = [(path, b)]
    for p, op in firsts:
        if not isinstance(op, Conv) or op.groups != 1:
            raise ValueError(
                f"{field}.addons: the block's input must be read by plain convs only (a Conv "
                f"block, or cells / choices whose every branch starts with one); {p} is a "
                f"{type(op).__name__}" + (f" with groups={op.groups}" if isinstance(op, Conv) else "")
            )
    return [p for p, _ in firsts]


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


@dataclasses.dataclass(frozen=True)
class _Shapes:
    layers: tuple[LayerInfo, ...]
    blocks: tuple[tuple[str, tuple[int, int, int]], ...]
    features_shape: tuple[int, int, int]
    head_features: int
    gated: tuple[tuple[str, tuple[tuple[int, int, int], ...]], ...]


@functools.lru_cache(maxsize=512)
def _shapes(spec: Spec) -> _Shapes:
    w = _ShapeWalker(spec)
    w.run()
    return _Shapes(tuple(w.layers), tuple(w.blocks.items()), tuple(w.features_shape),
                   w.head_features, tuple(w.gated.items()))  # fmt: skip


def infer_layers(spec: Spec) -> list[LayerInfo]:
    """Shape-infers ``spec``; one :class:`LayerInfo` per conv / dense / head-BN unit and one for an
    FNN head (op ``"fnn"``), in order: their :attr:`~LayerInfo.params` sum to the model's.

    Computed once per spec (cached; a fresh list each call).

    Raises:
        ValueError: a shape mismatch, naming the spec field.
    """
    return list(_shapes(spec).layers)


def block_shapes(spec: Spec) -> dict[str, tuple[int, int, int]]:
    """Output ``(h, w, c)`` of every stem / stage block, by module path (``"s1b2"``)."""
    return dict(_shapes(spec).blocks)


def gated_source_shapes(spec: Spec) -> dict[str, tuple[tuple[int, int, int], ...]]:
    """``{merge path ("s1b2_skip"): shape of each gated source as it arrives}`` (after the
    reductions of the stages in between), for every block with a gated merge."""
    return dict(_shapes(spec).gated)


def head_features(spec: Spec) -> tuple[tuple[int, int, int], int]:
    """``(shape entering the head, features entering the head's first Dense)``."""
    s = _shapes(spec)
    return s.features_shape, s.head_features
