"""The architecture IR: frozen, hashable specs of convolutional networks.

A :class:`Spec` describes a network as ``stem -> stages -> head``::

    Spec(input_shape, num_classes, stem=(blocks...), stages=(Stage(blocks=(...)), ...), head=Head())

Every field that decides an array *shape* (filter counts, kernels, strides, number of blocks,
branches) lives here, in frozen dataclasses built from tuples, so specs hash and compare by value,
can be dict keys / ``jax.jit`` static arguments, and are registered as pytrees with no leaves
(``jax.tree_util.register_static``). Anything that only *selects* among existing weights (per-filter
masks, genes, active ops) is an array passed at apply time (see :mod:`fnnjax.arch.build`'s
``"masks"`` collection), never part of the spec.

The IR is split by concern: this module holds the dataclasses, their validation and the block
queries every other module shares; :mod:`fnnjax.arch.shapes` infers shapes (once per spec, cached);
:mod:`fnnjax.arch.serialize` reads and writes JSON; :mod:`fnnjax.arch.notation` prints the compact
notation. The filter-redistribution templates' view of a spec (one filter count per template layer)
lives with the templates, in :mod:`fnnjax.construct.layers`.

Blocks
    Leaf ops (usable as stage blocks and inside cells / residual bodies):
    :class:`Conv` (conv -> BN -> act, any kernel/stride/groups), :class:`Dense` (a dense layer on
    the channel axis: MLPs on ``(1, 1, d)`` inputs), :class:`SepConv` (depthwise kxk ->
    [BN -> act] -> pointwise 1x1 -> BN -> act, MobileNet v1 block), :class:`Pool` (max/avg),
    :class:`Identity`, :class:`Dropout`, :class:`Pad` (zero padding, used to adapt 28x28 stems).
    Composite blocks: :class:`Choice` (candidate op sequences, one selected by an array leaf of
    the ``"arch"`` collection: a search space), :class:`Cell` (parallel branches, each a sequence of leaf ops, merged by
    channel concat or sum: Inception modules, EnvelopeNet cells and wideners) and :class:`Residual`
    (a sequential body plus an identity / 1x1-projection shortcut: ResNet bottlenecks and basic
    blocks).

Skip connections
    Static skips: every stage block has ``skips`` (indices of *earlier blocks of the same stage*,
    ``-1`` = the stage's input) and ``skip_merge``: ``"add"`` sums their outputs onto the block's
    output (shapes must match), ``"concat"`` concatenates them to the block's input along
    channels (DenseNet / EnvelopeNet style, usually followed by a 1x1 conv that sets the width).
    Static skips never cross stage boundaries.

    Gated skips (ENAS macro search): ``gated_skips`` are *flat* indices of earlier stage blocks
    anywhere in the network (blocks numbered 0, 1, ... across all stages in order; ``-1`` = the
    stem's output), each switched on or off by a gate, the float ``[n]`` leaf
    ``arch/<block>_skip/gates`` (ones at init). Sources from earlier stages arrive through the
    factorized reductions of the stages in between (``Stage.reduce``), so they match the block's
    spatial size. ``gated_merge`` says how they join the block's output ``y`` (set, it applies
    even with no sources on, as ENAS does for every layer after the first):
    ``"sum_bn"`` is ``BN(y + sum_s gate_s * src_s)`` (ENAS's search child; the sources must have
    ``y``'s shape); ``"concat_conv"`` is ``BN(conv1x1(relu(concat(gate_s * src_s ..., y))))`` to
    ``y``'s width (ENAS's fixed-arc child, same order and ReLU as the released code). Static and
    gated skips may be combined; the static ones apply first.

Add-on edges (NHN)
    ``addons``: :class:`AddOn` edges into a stage block, each ``neurons`` new kxk conv units
    reading an earlier block's output (flat index, as for gated skips, of the same spatial size
    as the block's input), concatenated to the block's input after any static concat skips.
    The block's input must be read by plain (ungrouped) convs only (a Conv block, or cells /
    choices whose every branch starts with one), so switching an edge off removes exactly the
    kernel rows that read it.

Filter counts
    :func:`block_filters` is a block's filter count: ``filters`` for Conv/SepConv; the first
    filter op of the body for a Residual (the bottleneck width, output = expansion x width); for a
    Cell the summed widths of the branches that end with a filter op (concat) or their common width
    (add). A ``tied`` stage (a ResNet stage) must hold blocks of one count; the templates treat it
    as one layer.

Heads
    :class:`Head` is the classifier: ``"linear"``, ``"dense"`` (hidden Dense layers) or ``"fnn"``
    (a Farfalle network, configured by the typed :class:`FnnHead`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

import jax

from fnnjax.arch.blocks import (
    BLOCK_TYPES,
    CHOICE_MODES,
    LEAF_TYPES,
    AddOn,
    Block,
    Cell,
    Choice,
    Conv,
    Dense,
    Dropout,
    Identity,
    Pad,
    Pool,
    Residual,
    SepConv,
)
from fnnjax.checks import check_choice, check_number

__all__ = [
    "AddOn",
    "Block",
    "Cell",
    "Choice",
    "Conv",
    "Dense",
    "Dropout",
    "FnnHead",
    "Head",
    "Identity",
    "Pad",
    "Pool",
    "Residual",
    "SepConv",
    "Spec",
    "Stage",
    "block_filters",
    "is_filter_block",
    "iter_blocks",
    "validate",
]

ACTIVATIONS = ("relu", "relu6", None)
GATED_MERGES = (None, "sum_bn", "concat_conv")


def _static(cls):
    return jax.tree_util.register_static(cls)


@_static
@dataclasses.dataclass(frozen=True, kw_only=True)
class Stage:
    """A sequence of blocks; ``tied`` makes the whole stage one template layer (ResNet stages).

    ``reduce``: ``None``, or the width of a factorized reduction at the stage's entry (ENAS's
    pooling layers): the previous stage's output and every earlier output that a gated skip of
    this stage or a later one reads are each halved in height and width and mapped to ``reduce``
    channels by their own :func:`factorized reduction <fnnjax.arch.build.FactorizedReduce>`; the
    stage's first block reads the reduced previous output. Module ``s{i}red{g}`` reduces source
    ``g`` (``s{i}red_in`` the stem's output, or the network's input when there is no stem).
    """

    blocks: tuple[Block, ...]
    tied: bool = False
    name: str = ""
    reduce: int | None = None


HEAD_KINDS = ("linear", "dense", "fnn")
HEAD_POOLS = ("avg", "flatten", "grouped")
FNN_NORMALIZATIONS = ("l2", "softmax")
FNN_PATHS = ("factored", "materialized")
FNN_OUTPUT_ACTIVATIONS = ("identity", "relu")


@_static
@dataclasses.dataclass(frozen=True, kw_only=True)
class FnnHead:
    """The Farfalle network of an ``"fnn"`` head (FNN paper, section 3; :mod:`fnnjax.floating`).

    Attributes mirror :func:`fnnjax.floating.layer.fnn_custom`: ``num_hidden`` (N), ``dim`` (d),
    ``iterations`` (k), ``normalization`` (``"l2"`` or ``"softmax"``), ``input_every_iteration``
    (False is section 4.2's variant), ``input_dropout`` (rate on the head's input), ``path``
    (``"factored"`` or ``"materialized"``), ``chunk_size`` / ``output_activation`` / ``eps``
    (``None``: the floating package's default).
    """

    num_hidden: int = 1024
    dim: int = 256
    iterations: int = 4
    normalization: str = "l2"
    input_every_iteration: bool = True
    input_dropout: float = 0.1
    path: str = "factored"
    chunk_size: int | None = None
    output_activation: str | None = None
    eps: float | None = None

    def options(self) -> dict[str, Any]:
        """Keyword options of ``fnn_custom`` (fields left at ``None`` are left out)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) is not None}  # fmt: skip


@_static
@dataclasses.dataclass(frozen=True, kw_only=True)
class Head:
    """Classification head.

    Attributes:
        kind: ``"linear"`` (pool + Dense(num_classes)); ``"dense"`` (for each width in ``hidden``:
            Dropout(dropout) -> Dense -> BN -> ReLU; then Dropout(dropout) -> Dense(num_classes));
            ``"fnn"`` (pool + the Farfalle network ``fnn``, fed the pooled features).
        pool: ``"avg"`` (global average pool), ``"flatten"``, or ``"grouped"``: NHN's grouped
            convolution (section 2.2), a depthwise conv whose kernel covers the whole (square)
            feature map, VALID, groups = channels, no bias: one learned weighted sum per
            channel (module ``head/pool``, kernel ``[h, w, 1, c]``). Its kernel starts at
            ``1 / (h w)``, so it starts as average pooling (our choice; the paper gives no
            initialization).
        hidden: hidden Dense widths (``"dense"`` only).
        dropout: dropout rate (``"dense"`` only).
        fnn: the FNN's configuration (``"fnn"`` only; ``None`` there means ``FnnHead()``).
    """

    kind: str = "linear"
    pool: str = "avg"
    hidden: tuple[int, ...] = ()
    dropout: float = 0.0
    fnn: FnnHead | None = None

    def __post_init__(self):
        if self.kind == "fnn" and self.fnn is None:
            object.__setattr__(self, "fnn", FnnHead())


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
    check_choice(f"{path}.skip_merge", b.skip_merge, ("add", "concat"))
    _tuple(f"{path}.gated_skips", b.gated_skips)
    if b.gated_skips and not allow_skips:
        _fail(f"{path}.gated_skips", "() (gated skips are only allowed on stage blocks)",
              b.gated_skips)  # fmt: skip
    for i, s in enumerate(b.gated_skips):
        if not _is_int(s) or s < -1:
            _fail(f"{path}.gated_skips[{i}]", "an int >= -1", s)
    if list(b.gated_skips) != sorted(set(b.gated_skips)):
        _fail(f"{path}.gated_skips", "distinct indices in increasing order", b.gated_skips)
    check_choice(f"{path}.gated_merge", b.gated_merge, GATED_MERGES)
    if b.gated_merge is not None and not allow_skips:
        _fail(f"{path}.gated_merge", "None (gated skips are only allowed on stage blocks)",
              b.gated_merge)  # fmt: skip
    if b.gated_skips and b.gated_merge is None:
        _fail(f"{path}.gated_merge", "'sum_bn' or 'concat_conv' (the block has gated_skips)", None)
    _tuple(f"{path}.addons", b.addons)
    if b.addons and not allow_skips:
        _fail(f"{path}.addons", "() (add-on edges are only allowed on stage blocks)", b.addons)
    for e, a in enumerate(b.addons):
        if not isinstance(a, AddOn):
            _fail(f"{path}.addons[{e}]", "an AddOn", type(a).__name__)
        if not _is_int(a.source) or a.source < -1:
            _fail(f"{path}.addons[{e}].source", "an int >= -1", a.source)
        _pos_int(f"{path}.addons[{e}].neurons", a.neurons)
        check_choice(f"{path}.addons[{e}].kernel", a.kernel, (1, 3, 5, 7))
    if isinstance(b, Conv | SepConv):
        _pos_int(f"{path}.filters", b.filters)
        _pos_int(f"{path}.kernel", b.kernel)
        _pos_int(f"{path}.stride", b.stride)
        _bool(f"{path}.bias", b.bias)
        _bool(f"{path}.norm", b.norm)
        check_choice(f"{path}.act", b.act, ACTIVATIONS)
    if isinstance(b, Dense):
        for name in ("kernel", "stride", "groups"):
            if getattr(b, name) != 1:
                _fail(f"{path}.{name}", "1 (a Dense block has no kernel, stride or groups)",
                      getattr(b, name))  # fmt: skip
    if isinstance(b, Conv):
        _pos_int(f"{path}.groups", b.groups)
        _bool(f"{path}.act_first", b.act_first)
        if b.filters % b.groups:
            _fail(f"{path}.filters", f"a multiple of groups={b.groups}", b.filters)
    elif isinstance(b, SepConv):
        _bool(f"{path}.mid_norm_act", b.mid_norm_act)
        _bool(f"{path}.act_first", b.act_first)
    elif isinstance(b, Pool):
        check_choice(f"{path}.op", b.op, ("max", "avg"))
        _pos_int(f"{path}.window", b.window)
        _pos_int(f"{path}.stride", b.stride)
        _nonneg_int(f"{path}.padding", b.padding)
        _bool(f"{path}.count_include_pad", b.count_include_pad)
    elif isinstance(b, Dropout):
        _rate(f"{path}.rate", b.rate)
    elif isinstance(b, Pad):
        _nonneg_int(f"{path}.amount", b.amount)
    elif isinstance(b, Cell):
        _validate_sequences(f"{path}.branches", b.branches, "branch", empty_ok=True)
        check_choice(f"{path}.merge", b.merge, ("concat", "add"))
        check_choice(f"{path}.act", b.act, ACTIVATIONS)
    elif isinstance(b, Choice):
        _validate_sequences(f"{path}.candidates", b.candidates, "candidate", empty_ok=False)
        check_choice(f"{path}.mode", b.mode, CHOICE_MODES)
        check_choice(f"{path}.update_stats", b.update_stats, ("selected", "all"))
        if b.update_stats == "all" and b.mode.startswith("switch"):
            _fail(f"{path}.mode", "'all' or 'auto' with update_stats='all' (every candidate's "
                  "statistics need every candidate computed)", b.mode)  # fmt: skip
    elif isinstance(b, Residual):
        _tuple(f"{path}.body", b.body)
        if not any(isinstance(op, Conv | SepConv) for op in b.body):
            _fail(f"{path}.body", "at least one Conv or SepConv", b.body)
        for m, op in enumerate(b.body):
            _validate_block(op, f"{path}.body[{m}]", leaf_only=True, allow_skips=False)
        check_choice(f"{path}.shortcut", b.shortcut, ("auto", "identity", "projection"))
        check_choice(f"{path}.act", b.act, ACTIVATIONS)


def _validate_sequences(path: str, seqs: Any, what: str, *, empty_ok: bool) -> None:
    """A non-empty tuple of tuples of leaf ops (a cell's branches, a choice's candidates);
    ``empty_ok``: whether one sequence may hold no op (an identity branch)."""
    _tuple(path, seqs)
    if not seqs:
        _fail(path, f"at least one {what}", seqs)
    for k, seq in enumerate(seqs):
        _tuple(f"{path}[{k}]", seq)
        if not seq and not empty_ok:
            _fail(f"{path}[{k}]", "at least one op", seq)
        for m, op in enumerate(seq):
            _validate_block(op, f"{path}[{k}][{m}]", leaf_only=True, allow_skips=False)


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
    flat = 0  # flat index of the stage's first block
    for i, st in enumerate(spec.stages):
        if not isinstance(st, Stage):
            _fail(f"stages[{i}]", "a Stage", type(st).__name__)
        _tuple(f"stages[{i}].blocks", st.blocks)
        _bool(f"stages[{i}].tied", st.tied)
        if not isinstance(st.name, str):
            _fail(f"stages[{i}].name", "a str", st.name)
        if st.reduce is not None:
            _pos_int(f"stages[{i}].reduce", st.reduce)
        for j, b in enumerate(st.blocks):
            p = f"stages[{i}].blocks[{j}]"
            _validate_block(b, p, leaf_only=False, allow_skips=True)
            g = flat + j
            if b.gated_skips and b.gated_skips[-1] >= g:
                _fail(f"{p}.gated_skips", f"flat indices in [-1, {g - 1}] (earlier blocks)",
                      b.gated_skips)  # fmt: skip
            for e, a in enumerate(b.addons):
                if not flat - 1 <= a.source < g:
                    _fail(f"{p}.addons[{e}].source", f"a flat index in [{flat - 1}, {g - 1}] (an "
                          "earlier block of the stage, or its input: add-on edges stay within a "
                          "segment)", a.source)  # fmt: skip
            for s in b.skips:
                if not (j >= 1 and -1 <= s < j - 1):
                    _fail(f"{p}.skips", f"indices in [-1, {j - 2}] (earlier blocks)", b.skips)
            if len(set(b.skips)) != len(b.skips):
                _fail(f"{p}.skips", "distinct indices", b.skips)
        flat += len(st.blocks)
        if st.tied:
            widths = {block_filters(b) for b in st.blocks if is_filter_block(b)}
            if len(widths) > 1:
                _fail(f"stages[{i}]", "equal filter counts in a tied stage", sorted(widths))
    h = spec.head
    if not isinstance(h, Head):
        _fail("head", "a Head", type(h).__name__)
    check_choice("head.kind", h.kind, HEAD_KINDS)
    check_choice("head.pool", h.pool, HEAD_POOLS)
    _tuple("head.hidden", h.hidden)
    for i, w in enumerate(h.hidden):
        _pos_int(f"head.hidden[{i}]", w)
    _rate("head.dropout", h.dropout)
    if h.kind != "fnn" and h.fnn is not None:
        _fail("head.fnn", f"None for a {h.kind!r} head", h.fnn)
    if h.kind == "fnn":
        _validate_fnn_head(h.fnn)


def _validate_fnn_head(f: Any) -> None:
    if not isinstance(f, FnnHead):
        _fail("head.fnn", "an FnnHead", type(f).__name__)
    _pos_int("head.fnn.num_hidden", f.num_hidden)
    _pos_int("head.fnn.dim", f.dim)
    _pos_int("head.fnn.iterations", f.iterations)
    check_choice("head.fnn.normalization", f.normalization, FNN_NORMALIZATIONS)
    _bool("head.fnn.input_every_iteration", f.input_every_iteration)
    _rate("head.fnn.input_dropout", f.input_dropout)
    check_choice("head.fnn.path", f.path, FNN_PATHS)
    if f.chunk_size is not None:
        _pos_int("head.fnn.chunk_size", f.chunk_size)
    if f.output_activation is not None:
        check_choice("head.fnn.output_activation", f.output_activation, FNN_OUTPUT_ACTIVATIONS)
    if f.eps is not None:
        check_number("head.fnn.eps", f.eps, above=0)


def validate(spec: Spec) -> Spec:
    """Checks field types/values and shapes; raises ``ValueError`` naming the offending field.

    Returns the spec, so it can be chained. Shape checks include channel agreement at additions,
    divisibility by ``groups``, skip indices and spatial sizes that stay positive.
    """
    from fnnjax.arch.shapes import infer_layers  # noqa: PLC0415 (shapes imports this module)

    _validate_fields(spec)
    infer_layers(spec)
    return spec


# ----------------------------------------------------------------------------------------------

# ----------------------------------------------------------------------------------------------
# Block queries shared by shapes, templates, surgery and notation
# ----------------------------------------------------------------------------------------------


def filter_ops(ops: Sequence[Block]) -> list[int]:
    """Indices of the filter ops (Conv / SepConv) in a sequence of leaf ops."""
    return [m for m, op in enumerate(ops) if isinstance(op, Conv | SepConv)]


def is_filter_block(b: Block) -> bool:
    """Whether ``b`` has a filter count (:func:`block_filters`)."""
    if isinstance(b, Conv | SepConv | Residual):
        return True
    if isinstance(b, Cell):
        return any(br and isinstance(br[-1], Conv | SepConv) for br in b.branches)
    return False


def out_branches(c: Cell) -> list[int]:
    """Branches that end with a filter op (their width is part of the cell's filter count)."""
    return [k for k, br in enumerate(c.branches) if br and isinstance(br[-1], Conv | SepConv)]


def block_filters(b: Block) -> int:
    """The filter count of a block (module docstring, "Filter counts").

    Raises:
        TypeError: ``b`` has none (a Pool, Identity, Dropout, Pad or a cell without filter ops).
    """
    if isinstance(b, Conv | SepConv):
        return b.filters
    if isinstance(b, Residual):
        return b.body[filter_ops(b.body)[0]].filters
    if isinstance(b, Cell) and out_branches(b):
        widths = [b.branches[k][-1].filters for k in out_branches(b)]
        return widths[0] if b.merge == "add" else sum(widths)
    raise TypeError(f"{type(b).__name__} has no filter count")


def stem_name(j: int) -> str:
    """Module name of stem block ``j``."""
    return f"stem{j}"


def block_name(i: int, j: int) -> str:
    """Module name of block ``j`` of stage ``i``."""
    return f"s{i}b{j}"


def branch_op_name(k: int, m: int) -> str:
    """Module name of op ``m`` of branch ``k`` of a cell."""
    return f"br{k}_{m}"


def skip_merge_name(i: int, j: int) -> str:
    """Module name of the gated-skip merge of block ``j`` of stage ``i`` (holds the gates)."""
    return f"{block_name(i, j)}_skip"


def addon_name(i: int, j: int, e: int) -> str:
    """Module name of add-on edge ``e`` of block ``j`` of stage ``i`` (holds its arch leaves)."""
    return f"{block_name(i, j)}_addon{e}"


def reduce_name(i: int, g: int) -> str:
    """Module name of stage ``i``'s factorized reduction of flat source ``g`` (-1: the stem)."""
    return f"s{i}red{g}" if g >= 0 else f"s{i}red_in"


def stage_starts(spec: Spec) -> list[int]:
    """The flat index of every stage's first block (gated skips count blocks across stages)."""
    starts, n = [], 0
    for st in spec.stages:
        starts.append(n)
        n += len(st.blocks)
    return starts


def reduced_sources(spec: Spec, i: int) -> tuple[int, ...]:
    """Flat sources that stage ``i``'s entry reduction maps (``()`` without ``Stage.reduce``).

    The previous output (the main path; ``-1`` when no block precedes) and every earlier output
    that a gated skip of stage ``i`` or a later stage reads, in increasing order.
    """
    if spec.stages[i].reduce is None:
        return ()
    start = stage_starts(spec)[i]
    used = {start - 1}
    for st in spec.stages[i:]:
        used.update(s for b in st.blocks for s in b.gated_skips if s < start)
    return tuple(sorted(used))


def choice_op_name(k: int, m: int) -> str:
    """Module name of op ``m`` of candidate ``k`` of a choice block."""
    return f"c{k}_{m}"


def body_op_name(m: int) -> str:
    """Module name of op ``m`` of a residual body."""
    return f"body{m}"


def iter_blocks(spec: Spec) -> Iterator[tuple[str, str, Block]]:
    """Yields ``(module_path, field_path, block)`` for stem and stage blocks, in order."""
    for j, b in enumerate(spec.stem):
        yield stem_name(j), f"stem[{j}]", b
    for i, st in enumerate(spec.stages):
        for j, b in enumerate(st.blocks):
            yield block_name(i, j), f"stages[{i}].blocks[{j}]", b
