"""The templates' view of a spec: one filter count per template layer (templates paper, sec. 3).

The filter-redistribution templates (:mod:`fnnjax.construct.templates`) act on one vector
``f_1..f_D`` of per-layer filter counts. :func:`layer_filters` reads it and
:func:`with_layer_filters` writes it back. One template layer is: every filter-producing stage
block (:class:`~fnnjax.arch.spec.Conv`, ``SepConv``, ``Cell``, ``Residual``), or a whole stage when
``Stage.tied`` is true (a ResNet stage: "filters per set of residual blocks, kept fixed inside
them", templates paper Fig. 1). Stem blocks and the head are not template layers. A block's count
is :func:`fnnjax.arch.spec.block_filters`. Setting a composite block's count scales all of its
convs proportionally (see :func:`set_block_filters`).

A *transition* (:func:`is_transition`: a concatenating cell that passes its input through beside
its convs, e.g. the EnvelopeNet widener, a max-pool beside a 3x3/s2 conv of the incoming width) is
not a template layer either: its output width is its input's plus its convs', so a template that
set its convs would not set its width. Its convs keep their ratio to its input width instead (the
widener's conv stays as wide as its input, so it still doubles the channels) whenever a template,
a width multiplier or the stem changes that input. Our reading: the templates paper's networks
have no such blocks.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from fnnjax.arch.spec import (
    Block,
    Cell,
    Conv,
    Residual,
    SepConv,
    Spec,
    block_filters,
    block_name,
    branch_op_name,
    filter_ops,
    is_filter_block,
    out_branches,
)
from fnnjax.checks import check_int

__all__ = [
    "apportion",
    "count_filters",
    "follow_inputs",
    "is_transition",
    "layer_filters",
    "scale_stem",
    "set_block_filters",
    "template_layer_paths",
    "with_layer_filters",
]


def is_transition(b: Block) -> bool:
    """Whether ``b`` is a transition (module docstring): a ``"concat"`` cell with conv branches and
    at least one branch that passes its input through (ending in a pool, or empty)."""
    return (isinstance(b, Cell) and b.merge == "concat" and bool(out_branches(b))
            and len(out_branches(b)) < len(b.branches))  # fmt: skip


def _template_block(b: Block) -> bool:
    return is_filter_block(b) and not is_transition(b)


def template_layer_paths(spec: Spec) -> list[str]:
    """Spec field paths of the template layers (``"stages[2]"`` for a tied stage)."""
    out = []
    for i, st in enumerate(spec.stages):
        if st.tied:
            if any(_template_block(b) for b in st.blocks):
                out.append(f"stages[{i}]")
            continue
        out.extend(
            f"stages[{i}].blocks[{j}]" for j, b in enumerate(st.blocks) if _template_block(b)
        )
    return out


def layer_filters(spec: Spec) -> tuple[int, ...]:
    """The per-layer filter vector ``f_1..f_D`` of the templates paper (section 3).

    A tied stage (ResNet) counts once; a Cell (Inception module) or Residual counts as one layer.
    """
    out = []
    for st in spec.stages:
        counts = [block_filters(b) for b in st.blocks if _template_block(b)]
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
    if not is_filter_block(b):
        raise TypeError(f"{type(b).__name__} has no filter count")
    n = int(n)
    check_int("filter count", n)
    if isinstance(b, Conv | SepConv):
        return dataclasses.replace(b, filters=n)
    if isinstance(b, Residual):
        idx = filter_ops(b.body)
        ratio = n / b.body[idx[0]].filters
        body = tuple(
            _scale_op(op, ratio, final=n if m == idx[0] else None) for m, op in enumerate(b.body)
        )
        return dataclasses.replace(b, body=body)
    assert isinstance(b, Cell)
    outs = out_branches(b)
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
    same count; transitions follow their inputs (:func:`follow_inputs`). Raises ``ValueError`` if
    the length is wrong or a count is not a positive int.
    """
    filters = tuple(filters)
    d = len(layer_filters(spec))
    if len(filters) != d:
        raise ValueError(f"filters: expected {d} layer counts, got {len(filters)}")
    for i, f in enumerate(filters):
        check_int(f"filters[{i}]", f)
    it = iter(int(f) for f in filters)
    stages = []
    for st in spec.stages:
        if st.tied and any(_template_block(b) for b in st.blocks):
            n = next(it)
            blocks = tuple(set_block_filters(b, n) if _template_block(b) else b for b in st.blocks)
        else:
            blocks = tuple(
                set_block_filters(b, next(it)) if _template_block(b) else b for b in st.blocks
            )
        stages.append(dataclasses.replace(st, blocks=blocks))
    return follow_inputs(spec, dataclasses.replace(spec, stages=tuple(stages)))


def scale_stem(spec: Spec, m: float) -> Spec:
    """Scales every filter op of the stem by ``m`` (round to nearest, at least 1)."""
    stem = tuple(
        set_block_filters(b, _round_scale(block_filters(b), m)) if is_filter_block(b) else b
        for b in spec.stem
    )
    return follow_inputs(spec, dataclasses.replace(spec, stem=stem))


def follow_inputs(old: Spec, new: Spec) -> Spec:
    """``new`` with each transition's convs (:func:`is_transition`) scaled by the ratio of its
    input width in ``new`` to that in ``old`` (round to nearest, at least 1; ``new`` is ``old``
    with filter counts changed). In order, so a transition reading another sees its new width."""
    spots = [(i, j) for i, st in enumerate(old.stages) for j, b in enumerate(st.blocks)
             if is_transition(b)]  # fmt: skip
    if not spots:
        return new
    from fnnjax.arch.shapes import infer_layers  # noqa: PLC0415 (shape inference: transitions only)

    cin_old = {u.path: u.cin for u in infer_layers(old)}
    for i, j in spots:
        b = new.stages[i].blocks[j]
        k = out_branches(b)[0]  # the branch's first conv reads the cell's input (or a pool's)
        m = next(n for n, op in enumerate(b.branches[k]) if isinstance(op, Conv | SepConv))
        prefix = f"{block_name(i, j)}/{branch_op_name(k, m)}"
        path = next((p for p in cin_old if p == prefix or p.startswith(prefix + "/")), None)
        if path is None:  # no parametrized unit to read the width from: left as it is
            continue
        ratio = {u.path: u.cin for u in infer_layers(new)}[path] / cin_old[path]
        if ratio == 1:
            continue
        branches = tuple(tuple(_scale_op(op, ratio) for op in br) if k in out_branches(b) else br
                         for k, br in enumerate(b.branches))  # fmt: skip
        blocks = list(new.stages[i].blocks)
        blocks[j] = dataclasses.replace(b, branches=branches)
        stages = list(new.stages)
        stages[i] = dataclasses.replace(stages[i], blocks=tuple(blocks))
        new = dataclasses.replace(new, stages=tuple(stages))
    return new



def count_filters(spec: Spec) -> int:
    """Sum of the template-layer filter counts (the paper's F)."""
    return sum(layer_filters(spec))
