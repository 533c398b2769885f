"""A compact notation for :class:`~fnnjax.arch.spec.Spec` (one line per network).

Blocks are joined by ``-`` inside a stage, stages by `` | ``; the stem (when present) comes first
and the head last, each separated by `` || ``. Tokens:
``64`` 3x3 stride-1 conv with 64 filters; suffixes ``k5`` kernel, ``s2`` stride, ``g4`` groups;
``S64`` depthwise-separable conv; ``M``/``A`` 2x2 stride-2 max/avg pool (``M3s1p1`` otherwise; a ``v`` suffix: an average over the valid pixels only);
``I`` identity; ``D0.5`` dropout; ``P2`` zero padding; ``[b1|b2|...]`` a concat cell whose
branches are ops joined by ``>`` (``[...]+`` sums them); ``R(64k1>64>256k1)`` a residual block;
``<S36k3|M3s1p1>`` a choice block (candidates joined by ``|``); ``fc64`` a :class:`~fnnjax.arch.spec.Dense` block (``fc64lin`` without activation, ``fc64r6``
with ReLU6, a ``bn`` suffix with BN); ``{+0,2}`` / ``{c-1}`` add / concat skips from blocks 0 and 2 / the stage input;
``{g+0,3}`` / ``{gc0,3}`` gated skips from flat blocks 0 and 3 merged by ``sum_bn`` /
``concat_conv`` (``{g+}``: the merge with no sources); ``r72:`` before a stage its entry
reduction to 72 channels; ``{a8k5@3,2k3@-1}`` add-on edges of 8 5x5 neurons from flat block 3
and of 2 3x3 neurons from the stem; ``*`` after a stage marks it tied; ``xN`` compresses N identical consecutive blocks. Heads: ``fc10`` (global
average pool + Dense), ``flat`` prefix for flatten, ``gconv`` for a grouped-conv pooling,
``D0.5-fc512-D0.5-fc10`` for dense heads,
``fnn10`` for FNN heads. E.g. VGG-19 is
``64x2-M | 128x2-M | 256x4-M | 512x4-M | 512x4-M || flat-fc10`` and a ResNet-50 stage is
``R(64k1>64>256k1)x3*``.

:func:`stage_notation` gives the EnvelopeNet summary ``C/n1-n2-.../M`` (C: channels entering the
first stage, n_i: non-pooling blocks of stage i, M: most parallel filter branches in a cell),
e.g. ``128/10-1-1-1/6``.
"""

from __future__ import annotations

from collections.abc import Sequence

from fnnjax.arch.shapes import block_shapes
from fnnjax.arch.spec import (
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
    Spec,
    out_branches,
)

__all__ = ["notation", "stage_notation"]


def _fmt_num(x: float) -> str:
    return f"{x:g}"


def _op_token(op: Block) -> str:
    if isinstance(op, Dense):
        act = {"relu": "", "relu6": "r6", None: "lin"}[op.act]
        return f"fc{op.filters}{act}" + ("bn" if op.norm else "")
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
        if not op.count_include_pad:
            t += "v"  # average over valid pixels only
        return t
    if isinstance(op, Identity):
        return "I"
    if isinstance(op, Dropout):
        return f"D{_fmt_num(op.rate)}"
    if isinstance(op, Pad):
        return f"P{op.amount}"
    if isinstance(op, Choice):
        t = "<" + "|".join(">".join(_op_token(o) for o in seq) for seq in op.candidates) + ">"
        t += "" if op.mode == "auto" else op.mode
        return t + ("" if op.update_stats == "selected" else "+bn")
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
    if b.gated_merge is not None:
        t += "{g" + ("+" if b.gated_merge == "sum_bn" else "c")
        t += ",".join(map(str, b.gated_skips)) + "}"
    if b.addons:
        t += "{a" + ",".join(f"{a.neurons}k{a.kernel}@{a.source}" for a in b.addons) + "}"
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
    pre = {"avg": "", "flatten": "flat-", "grouped": "gconv-"}[h.pool]
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
        " ".join(([] if st.reduce is None else [f"r{st.reduce}:"])
                 + [_join_runs([_block_token(b) for b in st.blocks])]).strip()
        + ("*" if st.tied else "")
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
                m = max(m, len(out_branches(b)))
    return f"{c}/" + "-".join(map(str, depths)) + f"/{m}"
