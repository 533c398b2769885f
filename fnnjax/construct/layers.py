"""The templates' view of a spec: one filter count per template layer (templates paper, sec. 3).

The filter-redistribution templates (:mod:`fnnjax.construct.templates`) act on one vector
``f_1..f_D`` of per-layer filter counts. :func:`layer_filters` reads it and
:func:`with_layer_filters` writes it back. One template layer is: every filter-producing stage
block (:class:`~fnnjax.arch.spec.Conv`, ``SepConv``, ``Cell``, ``Residual``), or a whole stage when
``Stage.tied`` is true (a ResNet stage: "filters per set of residual blocks, kept fixed inside
them", templates paper Fig. 1). Stem blocks and the head are not template layers. A block's count
is :func:`fnnjax.arch.spec.block_filters`. Setting a composite block's count scales all of its
convs proportionally (see :func:`set_block_filters`).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Sequence

from fnnjax.arch.spec import (
    Block,
    Cell,
    Conv,
    Residual,
    SepConv,
    Spec,
    block_filters,
    filter_ops,
    is_filter_block,
    out_branches,
)

__all__ = [
    "apportion",
    "count_filters",
    "layer_filters",
    "scale_stem",
    "set_block_filters",
    "template_layer_paths",
    "with_layer_filters",
]


def template_layer_paths(spec: Spec) -> list[str]:
    """Spec field paths of the template layers (``"stages[2]"`` for a tied stage)."""
    out = []
    for i, st in enumerate(spec.stages):
        if st.tied:
            if any(is_filter_block(b) for b in st.blocks):
                out.append(f"stages[{i}]")
            continue
        out.extend(
            f"stages[{i}].blocks[{j}]" for j, b in enumerate(st.blocks) if is_filter_block(b)
        )
    return out


def layer_filters(spec: Spec) -> tuple[int, ...]:
    """The per-layer filter vector ``f_1..f_D`` of the templates paper (section 3).

    A tied stage (ResNet) counts once; a Cell (Inception module) or Residual counts as one layer.
    """
    out = []
    for st in spec.stages:
        counts = [block_filters(b) for b in st.blocks if is_filter_block(b)]
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
    if n < 1:
        raise ValueError(f"filter count must be positive, got {n}")
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
        if st.tied and any(is_filter_block(b) for b in st.blocks):
            n = next(it)
            blocks = tuple(set_block_filters(b, n) if is_filter_block(b) else b for b in st.blocks)
        else:
            blocks = tuple(
                set_block_filters(b, next(it)) if is_filter_block(b) else b for b in st.blocks
            )
        stages.append(dataclasses.replace(st, blocks=blocks))
    return dataclasses.replace(spec, stages=tuple(stages))


def scale_stem(spec: Spec, m: float) -> Spec:
    """Scales every filter op of the stem by ``m`` (round to nearest, at least 1)."""
    stem = tuple(
        set_block_filters(b, _round_scale(block_filters(b), m)) if is_filter_block(b) else b
        for b in spec.stem
    )
    return dataclasses.replace(spec, stem=stem)



def count_filters(spec: Spec) -> int:
    """Sum of the template-layer filter counts (the paper's F)."""
    return sum(layer_filters(spec))
