"""Parameter surgery: move params, batch statistics, masks and optimizer state from spec A to B.

When a structure-learning algorithm turns spec A into spec B (pruning filters, widening a layer,
dropping a cell branch, appending a cell), training continues on B with as much of A's state as
shapes allow:

* Blocks are matched by position (stem block ``j``, stage ``i`` block ``j``, branch ``k`` op ``m``,
  body op ``m``) unless ``kept`` remaps them: ``kept["s{i}"]`` gives, for every block of B's stage
  ``i``, the index of A's block it continues (``-1``: new block), and ``kept[cell_path]`` does the
  same for the branches of a cell (EnvelopeNets removes whole conv blocks from cells).
* Every conv / dense unit of B keeps a list of *source filters* in its matched unit of A:
  ``kept[unit_path]`` (explicit indices, e.g. the filters a pruning algorithm retains, in B's
  order) or by default ``0..min(n_a, n_b) - 1`` followed by new filters. Input channels follow the
  producers: each tensor carries its channels' provenance (index into A's tensor at the same
  position, ``-1`` for new channels) through pooling, concatenation (with A's branch offsets),
  additions, depthwise convs (a depthwise filter follows its channel, so pruning a channel also
  removes the depthwise filter reading it) and flattening.
* A leaf of B (kernel, bias, BN scale/bias/mean/var, filter and kernel masks, optimizer moment) takes A's
  entry where both its filter and its input channel have a source. New filters keep B's fresh
  values; an *old* filter's weights on a *new* input channel are set to zero, so growing a layer
  initially leaves the function unchanged (new channels must learn to contribute). When *no*
  input channel of a unit has a known source (it reads a newly inserted block), its input
  channels are matched positionally instead. Units without a compatible counterpart (new block,
  different kernel size or op) stay fresh.
* Search-space features of an exported child follow the same rules: a stage's factorized
  reductions (``s{i}red{g}``) read their source's channels, a gated-skip merge's input is the
  concatenation (``concat_conv``) or sum (``sum_bn``) of its sources as they arrive, add-on edges
  read their source and widen the block's input; each is matched to A's when A has the same
  feature on the matched blocks. Choice blocks are refused (materialize a selection first).
* Pooling / identity ops' filter masks (``use_masks``) follow their channels like filters.
* Additions must combine channels with the same source: pruning the last conv of a residual body
  needs the same ``kept`` for the shortcut's input; disagreeing sources raise ``ValueError``.
  Projection shortcuts follow their body's last conv.

Unit paths are :attr:`~fnnjax.arch.spec.LayerInfo.path`: ``"s0b1"`` for a conv block,
``"s1b2/pw"`` for a separable block, ``"s1b0/br1_1"`` for a cell op, ``"s2b0/body2"`` for a
residual op, ``"head/fc0"`` for a hidden Dense. The same paths name the statistics a pruning
algorithm reads from ``"intermediates"``. Leaves outside planned units (an FNN head's internals)
are copied when A has the same path and shape.

Optimizer state (:func:`transplant_opt_state`) follows the params through optax's own
description of where a state holds params-shaped trees (``tx.init`` of a placeholder, the idea of
``optax.tree_utils.tree_map_params``): Adam ``mu``/``nu``, SGD momentum ``trace``, inside
``chain``, ``masked`` or ``inject_hyperparams``, are transplanted like params (new entries keep
B's fresh values, i.e. zeros), other leaves (step counts) are copied from A when their shapes
agree. The mapping runs in numpy on the host.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fnnjax.arch.shapes import LayerInfo, head_features, infer_layers
from fnnjax.arch.spec import (
    Block,
    Cell,
    Choice,
    Conv,
    Dropout,
    Identity,
    Pad,
    Pool,
    Residual,
    SepConv,
    Spec,
    Stage,
    addon_name,
    block_name,
    body_op_name,
    branch_op_name,
    iter_blocks,
    reduce_name,
    reduced_sources,
    skip_merge_name,
    stage_starts,
    stem_name,
)

__all__ = ["UnitMap", "transplant_opt_state", "transplant_params", "transplant_plan"]

_PASS = (Pool, Identity, Dropout, Pad)
_OTHER = object()  # "A has a different kind of block here"


@dataclasses.dataclass(frozen=True)
class UnitMap:
    """How one unit of B is filled from A.

    Attributes:
        out_src: ``[cout_b]`` int array, source filter in A (``-1``: new), or ``None`` = all fresh.
        in_src: ``[cin_b]`` int array, source input channel in A (``-1``: new); ``None`` when the
            kernel has no input-channel axis to remap (depthwise) or the unit is fresh.
        a_path: the matched unit's path in A (differs from B's when blocks/branches are remapped).
    """

    out_src: np.ndarray | None
    in_src: np.ndarray | None = None
    a_path: str | None = None


_FRESH = UnitMap(None, None, None)


def _new(n: int) -> np.ndarray:
    return np.full((n,), -1, dtype=np.int64)


def _default_src(n_a: int, n_b: int) -> np.ndarray:
    out = _new(n_b)
    k = min(n_a, n_b)
    out[:k] = np.arange(k)
    return out


def _check_plannable(name: str, spec: Spec) -> None:
    """Refuses choice blocks (a supernet's candidates have no single provenance)."""
    for _, field, b in iter_blocks(spec):
        if isinstance(b, Choice):
            raise ValueError(
                f"{name}.{field}: transplant_plan does not follow a choice block (a supernet's "
                f"candidates); export one selection with fnnjax.arch.materialize and "
                f"materialize_variables first, or edit the supernet through its selection leaves "
                f"and masks instead of its shape"
            )


class _Planner:
    def __init__(
        self,
        spec_a: Spec,
        spec_b: Spec,
        kept: Mapping[str, Sequence[int]] | None,
        replicate: bool = False,
    ):
        for name, spec in (("spec_a", spec_a), ("spec_b", spec_b)):
            _check_plannable(name, spec)
        self.replicate = replicate
        self.a, self.b = spec_a, spec_b
        self.kept = {k: np.asarray(v, dtype=np.int64).reshape(-1) for k, v in (kept or {}).items()}
        self.units_a: dict[str, LayerInfo] = {u.path: u for u in infer_layers(spec_a)}
        self.units_b: dict[str, LayerInfo] = {u.path: u for u in infer_layers(spec_b)}
        self.plan: dict[str, UnitMap] = {}
        self.used_kept: set[str] = set()

    # -- kept ----------------------------------------------------------------------------------
    def _index_map(self, key: str, n_b: int, n_a: int, what: str) -> np.ndarray | None:
        """``kept[key]`` validated as ``n_b`` distinct indices in ``[-1, n_a)``, or None."""
        if key not in self.kept:
            return None
        self.used_kept.add(key)
        src = self.kept[key]
        if src.shape != (n_b,):
            raise ValueError(f"kept[{key!r}]: expected {n_b} indices (B's {what}), got {src.size}")
        if np.any(src >= n_a) or np.any(src < -1):
            raise ValueError(f"kept[{key!r}]: indices must be in [-1, {n_a}), got {src}")
        valid = src[src >= 0]
        if len(np.unique(valid)) != len(valid) and not (self.replicate and what == "filters"):
            raise ValueError(f"kept[{key!r}]: indices must be distinct, got {src}")
        return src

    # -- units -------------------------------------------------------------------------------
    def unit(
        self,
        path: str,
        a_path: str | None,
        prov: np.ndarray,
        *,
        forced_out: np.ndarray | None = None,
    ) -> np.ndarray:
        """Plans unit ``path`` of B (matched to ``a_path`` of A); returns its output provenance."""
        ub = self.units_b[path]
        ua = self.units_a.get(a_path) if a_path is not None else None
        if ua is not None and len(prov) == ub.cin and np.all(prov < 0):
            prov = _default_src(ua.cin, ub.cin)  # nothing known about the input: positional
        compatible = (
            ua is not None
            and ua.op == ub.op
            and ua.kernel == ub.kernel
            and (ub.op == "dwconv" or ua.groups == ub.groups)
            and len(prov) == ub.cin
            and (prov.size == 0 or prov.max() < ua.cin)
        )
        if compatible and ub.op == "conv" and ub.groups > 1:
            # Grouped convs are copied only when nothing about them changes.
            same = (ua.cin, ua.cout) == (ub.cin, ub.cout) and np.array_equal(
                prov, np.arange(ub.cin)
            )
            if same and path not in self.kept:
                self.plan[path] = UnitMap(np.arange(ub.cout), None, a_path)
                return np.arange(ub.cout)
            compatible = False
        if not compatible:
            return self._fresh(path)
        if ub.op == "dwconv":
            self.plan[path] = UnitMap(prov.copy(), None, a_path)
            return prov.copy()
        out = forced_out
        if out is None:
            out = self._index_map(path, ub.cout, ua.cout, "filters")
        if out is None:
            out = _default_src(ua.cout, ub.cout)
        self.plan[path] = UnitMap(out, prov.copy(), a_path)
        return out

    def _fresh(self, path: str) -> np.ndarray:
        self.plan[path] = _FRESH
        return _new(self.units_b[path].cout)

    # -- ops and blocks -------------------------------------------------------------------------
    @staticmethod
    def _width_after(op: Any, w: int | None) -> int | None:
        if isinstance(op, Conv | SepConv):
            return op.filters
        return w if isinstance(op, _PASS) else None

    def leaf(
        self, op: Block, op_a: Any, path: str, a_path: str | None, prov: np.ndarray, a_w: int | None
    ):
        """``op_a``: A's op at this position, ``None`` if A has none, ``_OTHER`` if A's differs."""
        if isinstance(op, _PASS):  # its filter mask (use_masks) follows the channels
            if op_a is None or isinstance(op_a, _PASS):
                self.plan[path] = UnitMap(prov.copy(), None, a_path) if op_a else _FRESH
                return prov, a_w  # channels pass through unchanged
            self.plan[path] = _FRESH
            return _new(len(prov)), None
        if isinstance(op, Conv):
            p = self.unit(path, a_path, prov) if isinstance(op_a, Conv) else self._fresh(path)
        elif isinstance(op_a, SepConv):
            p = self.unit(f"{path}/dw", f"{a_path}/dw", prov)
            p = self.unit(f"{path}/pw", f"{a_path}/pw", p)
        else:
            self._fresh(f"{path}/dw")
            p = self._fresh(f"{path}/pw")
        return p, self._width_after(op_a, a_w)

    @staticmethod
    def _merge_add(field: str, provs: Sequence[np.ndarray]) -> np.ndarray:
        out = provs[0].copy()
        for p in provs[1:]:
            clash = (out >= 0) & (p >= 0) & (out != p)
            if np.any(clash):
                j = int(np.argmax(clash))
                raise ValueError(
                    f"{field}: an addition combines A's channels {int(out[j])} and {int(p[j])} at "
                    f"output channel {j}; give the added paths the same kept indices"
                )
            out = np.where(out >= 0, out, p)
        return out

    def _ops(self, ops_b, ops_a, path_b, path_a, prov, a_w):
        for m, op in enumerate(ops_b):
            op_a = ops_a[m] if ops_a is not None and m < len(ops_a) else None
            prov, a_w = self.leaf(op, op_a, path_b(m), path_a(m), prov, a_w)
        return prov, a_w

    def _cell(self, b: Cell, a: Cell | None, path: str, a_path: str | None, field: str, prov, a_w):
        n_a = len(a.branches) if a is not None else 0
        bmap = self._index_map(path, len(b.branches), n_a, "branches")
        if bmap is None:
            bmap = np.array([k if k < n_a else -1 for k in range(len(b.branches))])
        outs = []
        for k, br in enumerate(b.branches):
            ka = int(bmap[k])
            br_a = a.branches[ka] if ka >= 0 else None
            p, _ = self._ops(
                br,
                br_a,
                lambda m, k=k: f"{path}/{branch_op_name(k, m)}",
                lambda m, ka=ka: f"{a_path}/{branch_op_name(ka, m)}",
                prov,
                a_w,
            )
            outs.append(p if br_a is not None else _new(len(p)))
        a_widths = None
        if a is not None and a_w is not None:
            a_widths = []
            for br in a.branches:
                w = a_w
                for op in br:
                    w = self._width_after(op, w)
                a_widths.append(w)
        if b.merge == "add":
            same = a is not None and a.merge == "add"
            return (
                self._merge_add(field, outs) if same else _new(len(outs[0])),
                a_widths[0] if same and a_widths else None,
            )
        if a is None or a.merge != "concat" or a_widths is None or None in a_widths:
            return _new(sum(len(p) for p in outs)), None
        offsets = np.concatenate([[0], np.cumsum(a_widths)])
        parts = [np.where(p >= 0, p + offsets[int(bmap[k])], -1) for k, p in enumerate(outs)]
        return np.concatenate(parts), int(offsets[-1])

    def block(
        self, b: Block, a: Block | None, path: str, a_path: str | None, field: str, prov, a_w
    ):
        if isinstance(b, Cell):
            a_cell = a if isinstance(a, Cell) else None
            if a_cell is None and path in self.kept:
                raise ValueError(f"kept[{path!r}]: B's cell has no cell counterpart in A")
            return self._cell(b, a_cell, path, a_path, field, prov, a_w)
        if isinstance(b, Residual):
            a = a if isinstance(a, Residual) else None
            body_a = a.body if a is not None else None
            p, w = self._ops(
                b.body,
                body_a,
                lambda m: f"{path}/{body_op_name(m)}",
                lambda m: f"{a_path}/{body_op_name(m)}",
                prov,
                a_w,
            )
            if a is None:
                p = _new(len(p))
            sc_path, sc_a = f"{path}/shortcut", f"{a_path}/shortcut"
            b_proj, a_proj = sc_path in self.units_b, a is not None and sc_a in self.units_a
            if b_proj:  # a projection follows the body's last filters exactly
                sc = (
                    self.unit(sc_path, sc_a, prov, forced_out=p) if a_proj else self._fresh(sc_path)
                )
            else:
                sc = prov.copy() if (a is not None and not a_proj) else _new(len(prov))
            return self._merge_add(f"{field}.shortcut", [p, sc]), w
        return self.leaf(
            b, _OTHER if isinstance(a, Cell | Residual) else a, path, a_path, prov, a_w
        )

    # -- network ---------------------------------------------------------------------------------
    def run(self) -> dict[str, UnitMap]:
        a, b = self.a, self.b
        c_b, c_a = b.input_shape[2], a.input_shape[2]
        prov, a_w = _default_src(c_a, c_b), c_a
        for j, blk in enumerate(b.stem):
            blk_a = a.stem[j] if j < len(a.stem) else None
            prov, a_w = self.block(blk, blk_a, stem_name(j), stem_name(j), f"stem[{j}]", prov, a_w)
        # Gated skips and add-on edges read flat blocks: B's flat index -> (provenance, A's width)
        # of its output as it arrives (after stage reductions), and -> A's matched flat index.
        self.src: dict[int, tuple[np.ndarray, int | None]] = {-1: (prov, a_w)}
        self.b_to_a: dict[int, int | None] = {-1: -1}
        starts_a, g = stage_starts(a), 0
        for i, st in enumerate(b.stages):
            st_a = a.stages[i] if i < len(a.stages) else None
            n_a = len(st_a.blocks) if st_a is not None else 0
            smap = self._index_map(f"s{i}", len(st.blocks), n_a, "blocks")
            identity = smap is None
            if smap is None:
                smap = np.array([j if j < n_a else -1 for j in range(len(st.blocks))])
            if st.reduce is not None:
                self.reductions(i, st_a)
                prov, a_w = self.src[g - 1]
            stage_in = (prov, a_w)
            outs: list[tuple[np.ndarray, int | None]] = []
            for j, blk in enumerate(st.blocks):
                ja = int(smap[j])
                blk_a = st_a.blocks[ja] if ja >= 0 else None
                a_path = block_name(i, ja) if ja >= 0 else None
                field = f"stages[{i}].blocks[{j}]"
                srcs = [stage_in if s == -1 else outs[s] for s in blk.skips]
                same_skips = (
                    identity
                    and blk_a is not None
                    and (blk_a.skips, blk_a.skip_merge) == (blk.skips, blk.skip_merge)
                )
                if srcs and blk.skip_merge == "concat":
                    prov, a_w = self._concat([(prov, a_w), *srcs], same_skips)
                if blk.addons:
                    prov, a_w = self.addons(i, j, ja, blk, blk_a, prov, a_w)
                prov, a_w = self.block(blk, blk_a, block_name(i, j), a_path, field, prov, a_w)
                if srcs and blk.skip_merge == "add" and same_skips:
                    prov = self._merge_add(f"{field}.skips", [prov] + [p for p, _ in srcs])
                self.b_to_a[g] = starts_a[i] + ja if ja >= 0 and st_a is not None else None
                if blk.gated_merge is not None:
                    prov, a_w = self.gated(i, j, ja, blk, blk_a, field, prov, a_w)
                outs.append((prov, a_w))
                self.src[g] = (prov, a_w)
                g += 1
        self.head(prov)
        unknown = set(self.kept) - self.used_kept
        if unknown:
            raise ValueError(
                f"kept: no unit, cell or stage of B with a counterpart in A at {sorted(unknown)}; "
                f"unit paths look like {sorted(self.units_b)[:3]}, stages like 's0'"
            )
        return self.plan

    @staticmethod
    def _concat(parts, same: bool = True) -> tuple[np.ndarray, int | None]:
        """Provenance of a channel concatenation of ``parts`` ``(prov, A's width)``, A holding the
        matched tensors in the same order (``same=False``: A's differs, every channel is new).
        A part after one of unknown width in A has unknown channels too."""
        out, offset = [], 0
        for p, w in parts:
            known = same and offset is not None
            out.append(np.where(p >= 0, p + offset, -1) if known else _new(len(p)))
            offset = offset + w if known and w is not None else None
        return np.concatenate(out), offset

    def _a_source(self, s: int) -> int | None:
        return self.b_to_a.get(s)

    def reductions(self, i: int, st_a: Stage | None) -> None:
        """Plans stage ``i``'s factorized reductions (``p1``, ``p2`` of each source)."""
        a_sources = reduced_sources(self.a, i) if st_a is not None and st_a.reduce else ()
        for s in reduced_sources(self.b, i):
            prov, _ = self.src[s]
            sa = self._a_source(s)
            a_path = reduce_name(i, sa) if sa is not None and sa in a_sources else None
            path = reduce_name(i, s)
            p1 = self.unit(f"{path}/p1", a_path and f"{a_path}/p1", prov)
            p2 = self.unit(f"{path}/p2", a_path and f"{a_path}/p2", prov)
            if a_path is None:
                self.src[s] = (_new(len(p1) + len(p2)), None)
            else:
                half = self.units_a[f"{a_path}/p1"].cout
                self.src[s] = (np.concatenate([p1, np.where(p2 >= 0, p2 + half, -1)]), st_a.reduce)

    def addons(self, i, j, ja, blk, blk_a, prov, a_w) -> tuple[np.ndarray, int | None]:
        """Plans block ``(i, j)``'s add-on units; returns the provenance of its widened input."""
        edges_a = blk_a.addons if blk_a is not None else ()
        parts = [(prov, a_w)]
        for e, ad in enumerate(blk.addons):
            ad_a = edges_a[e] if e < len(edges_a) else None
            ok = (ad_a is not None and ad_a.kernel == ad.kernel
                  and self._a_source(ad.source) == ad_a.source)  # fmt: skip
            a_path = f"{addon_name(i, ja, e)}/unit" if ok else None
            out = self.unit(f"{addon_name(i, j, e)}/unit", a_path, self.src[ad.source][0])
            parts.append((out if ok else _new(len(out)), ad_a.neurons if ad_a is not None else None))
        return self._concat(parts)

    def gated(self, i, j, ja, blk, blk_a, field, prov, a_w) -> tuple[np.ndarray, int | None]:
        """Plans block ``(i, j)``'s gated-skip merge; returns its output provenance."""
        path = skip_merge_name(i, j)
        a_path = (skip_merge_name(i, ja) if blk_a is not None
                  and blk_a.gated_merge == blk.gated_merge else None)  # fmt: skip
        same = a_path is not None and [self._a_source(s) for s in blk.gated_skips] == list(
            blk_a.gated_skips
        )
        srcs = [self.src[s] for s in blk.gated_skips]
        if blk.gated_merge == "sum_bn":
            out = (self._merge_add(f"{field}.gated_skips", [prov] + [p for p, _ in srcs]) if same
                   else _new(len(prov)))  # fmt: skip
            self.plan[f"{path}/bn"] = UnitMap(out, None, f"{a_path}/bn") if a_path else _FRESH
            return out, a_w
        in_prov, _ = self._concat([*srcs, (prov, a_w)], same)
        out = self.unit(f"{path}/unit", a_path and f"{a_path}/unit", in_prov)
        return out, (self.units_a[f"{a_path}/unit"].cout if a_path else None)

    def head(self, prov: np.ndarray) -> None:
        ha, hb = self.a.head, self.b.head
        (fa, _), (fb, _) = head_features(self.a), head_features(self.b)
        if hb.pool == "flatten":
            h, w, cb = fb
            if ha.pool == "flatten" and fa[:2] == fb[:2]:
                pos = np.arange(h * w)[:, None]
                prov = np.where(prov[None, :] >= 0, pos * fa[2] + prov[None, :], -1).reshape(-1)
            else:
                prov = _new(h * w * cb)
        elif ha.pool == "flatten":
            prov = _new(len(prov))
        if hb.pool == "grouped":  # a depthwise kernel per channel: it follows its channel
            if ha.pool == "grouped" and fa[:2] == fb[:2]:
                prov = self.unit("head/pool", "head/pool", prov)
            else:  # fresh: average pooling again, on the same channels
                self._fresh("head/pool")
        same_kind = (ha.kind, len(ha.hidden)) == (hb.kind, len(hb.hidden))
        if hb.kind == "dense":
            for n in range(len(hb.hidden)):
                path = f"head/fc{n}"
                prov = self.unit(path, path, prov) if same_kind else self._fresh(path)
                um = self.plan[path]
                self.plan[f"head/bn{n}"] = UnitMap(
                    um.out_src, None, None if um.a_path is None else f"head/bn{n}"
                )
        if hb.kind in ("linear", "dense"):
            if same_kind:
                self.unit("head/out", "head/out", prov)
            else:
                self._fresh("head/out")


def transplant_plan(
    spec_a: Spec,
    spec_b: Spec,
    kept: Mapping[str, Sequence[int]] | None = None,
    *,
    replicate: bool = False,
) -> dict[str, UnitMap]:
    """The per-unit source map used by :func:`transplant_params` (see module docstring).

    ``replicate=True`` lets a unit's filter map name one of A's filters several times (copies, as
    Net2Wider makes them); otherwise repeated indices are refused as a likely mistake.

    Raises:
        ValueError: malformed ``kept`` (wrong length, out of range, duplicate, unknown path),
            additions whose operands would come from different channels of A, or a spec with
            search-space features (choice blocks, gated skips, add-on edges, stage reductions:
            export a selection with :func:`~fnnjax.arch.materialize` first).
    """
    return _Planner(spec_a, spec_b, kept, replicate).run()


def _unit_of(keys: tuple[str, ...], plan: Mapping[str, UnitMap]) -> tuple[str | None, int]:
    """The planned unit owning a leaf, and how many leading keys name it."""
    for n in range(len(keys) - 1, 0, -1):
        p = "/".join(keys[:n])
        if p in plan:
            return p, n
    return None, 0


def _map_leaf(a_leaf, b_leaf, um: UnitMap, *, zero_new_inputs: bool):
    """One leaf of B from A's (host-side numpy: surgery is rare and this avoids op-by-op compiles)."""
    a_leaf, b_leaf = np.asarray(a_leaf), np.asarray(b_leaf)
    if um.out_src is None or a_leaf.ndim != b_leaf.ndim or b_leaf.shape[-1] != len(um.out_src):
        return b_leaf
    valid = um.out_src >= 0
    g = np.take(a_leaf, np.maximum(um.out_src, 0), axis=-1)
    mask = np.broadcast_to(valid, b_leaf.shape)
    zero = np.zeros(b_leaf.shape, bool)
    if b_leaf.ndim >= 2 and um.in_src is not None:  # conv [..., cin, cout] / dense [in, out]
        if len(um.in_src) != b_leaf.shape[-2]:
            return b_leaf
        g = np.take(g, np.maximum(um.in_src, 0), axis=-2)
        vin = np.broadcast_to((um.in_src >= 0)[:, None], b_leaf.shape)
        if zero_new_inputs:
            zero = mask & ~vin
        mask = mask & vin
    if g.shape != b_leaf.shape:  # e.g. a different kernel size
        return b_leaf
    fill = np.where(zero, np.zeros((), b_leaf.dtype), b_leaf)
    return np.where(mask, g.astype(b_leaf.dtype), fill)


def _path_keys(path) -> tuple[str, ...]:
    return tuple(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def _map_tree(tree_a, tree_b, plan, *, zero_new_inputs: bool):
    a_leaves = {_path_keys(p): v for p, v in jax.tree_util.tree_flatten_with_path(tree_a)[0]}
    b_flat, treedef = jax.tree_util.tree_flatten_with_path(tree_b)
    out = []
    for path, b_leaf in b_flat:
        keys = _path_keys(path)
        unit, n = _unit_of(keys, plan)
        if unit is None:  # not a planned unit (e.g. FNN head internals): copy if shapes agree
            a_leaf = a_leaves.get(keys)
            same = a_leaf is not None and jnp.shape(a_leaf) == jnp.shape(b_leaf)
            out.append(jnp.asarray(a_leaf, jnp.result_type(b_leaf)) if same else b_leaf)
            continue
        um = plan[unit]
        a_leaf = None if um.a_path is None else a_leaves.get(tuple(um.a_path.split("/")) + keys[n:])
        if a_leaf is None:
            out.append(b_leaf)
        else:
            new = _map_leaf(a_leaf, b_leaf, um, zero_new_inputs=zero_new_inputs)
            out.append(jnp.asarray(new, jnp.result_type(b_leaf)))
    return jax.tree_util.tree_unflatten(treedef, out)


def transplant_params(
    spec_a: Spec,
    variables_a: Mapping[str, Any],
    spec_b: Spec,
    variables_b: Mapping[str, Any],
    *,
    kept: Mapping[str, Sequence[int]] | None = None,
    replicate: bool = False,
) -> dict[str, Any]:
    """Fills B's freshly initialised variables from A's (all collections: params, batch_stats,
    masks, ...).

    Args:
        spec_a, variables_a: the old architecture and its variables.
        spec_b, variables_b: the new architecture and fresh variables (``model_b.init``).
        kept: unit path -> indices (into A's filters of that unit, in B's order, ``-1`` = new) of
            B's filters (default: the first ``min(n_a, n_b)``); cell path -> A's branch index per
            B branch; ``"s{i}"`` -> A's block index per block of B's stage ``i``.

    Returns:
        Variables with B's structure. If ``spec_b == spec_a`` and ``kept`` is None the result equals
        ``variables_a``.
    """
    plan = transplant_plan(spec_a, spec_b, kept, replicate=replicate)
    out = {}
    for col, tree_b in variables_b.items():
        if col not in variables_a:
            out[col] = tree_b
            continue
        out[col] = _map_tree(variables_a[col], tree_b, plan, zero_new_inputs=(col == "params"))
    return out


class _ParamsSlot:
    """Stands for the whole params tree in ``tx.init(_ParamsSlot())``: a pytree node without
    children, so every ``tree_map`` of an optax ``init`` passes it through unchanged and the result
    marks where the state holds a params-shaped tree (the idea of ``optax.tree_utils.
    tree_map_params``; the slot tree pairs them between two states of different params)."""


jax.tree_util.register_pytree_node(_ParamsSlot, lambda s: ((), None), lambda aux, c: _ParamsSlot())


def _leaf_keys(tree: Any) -> frozenset:
    """Key paths of a tree's leaves, a masked-out leaf (``optax.MaskedNode``) counting as one."""
    is_masked = lambda x: isinstance(x, optax.MaskedNode)  # noqa: E731
    flat = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_masked)[0]
    return frozenset(_path_keys(path) for path, _ in flat)


def _slots_by_keys(state: Any, params: Any) -> Any:
    """``state`` with a :class:`_ParamsSlot` wherever it holds a tree with the params' keys."""
    keys = _leaf_keys(params)

    def params_like(x: Any) -> bool:
        return isinstance(x, Mapping) and _leaf_keys(x) == keys

    return jax.tree_util.tree_map(lambda x: _ParamsSlot() if params_like(x) else x, state,
                                  is_leaf=params_like)  # fmt: skip


def transplant_opt_state(
    tx: optax.GradientTransformation,
    spec_a: Spec,
    params_a: Any,
    opt_state_a: Any,
    spec_b: Spec,
    params_b: Any,
    *,
    kept: Mapping[str, Sequence[int]] | None = None,
    replicate: bool = False,
) -> Any:
    """The optimizer state of B transplanted from A's (``opt_state_a = tx``'s state of ``params_a``).

    Where ``tx.init`` puts a params-shaped tree (Adam's ``mu``/``nu``, SGD's ``trace``, inside
    ``chain``, ``masked``, ``inject_hyperparams``, ...), it is mapped like params with
    :func:`transplant_params`' plan: kept slices kept, new entries zero (``tx.init(params_b)``'s
    fresh values); masked-out leaves (``optax.MaskedNode``) stay masked. Every other leaf (step
    counts, injected hyperparameters) is copied from A when its shape agrees, else B's fresh one.

    Args:
        tx: the optimizer both states belong to.
        spec_a, params_a, opt_state_a: the old architecture, its params and optimizer state.
        spec_b, params_b: the new architecture and its params.
        kept, replicate: as for :func:`transplant_params`.

    Raises:
        ValueError: ``opt_state_a`` is not a state of ``tx`` (the message says how it differs).
    """
    plan = transplant_plan(spec_a, spec_b, kept, replicate=replicate)
    fresh = tx.init(params_b)
    try:
        slots = tx.init(_ParamsSlot())
    except Exception:  # e.g. an optax.masked whose mask function reads the params' keys
        slots = _slots_by_keys(fresh, params_b)

    def is_slot(x: Any) -> bool:
        return isinstance(x, _ParamsSlot)

    def merge(slot: Any, a: Any, b: Any) -> Any:
        if is_slot(slot):
            return _map_tree(a, b, plan, zero_new_inputs=False)
        same = jnp.shape(a) == jnp.shape(b)
        return jnp.asarray(a, jnp.result_type(b)) if same else b

    try:
        return jax.tree_util.tree_map(merge, slots, opt_state_a, fresh, is_leaf=is_slot)
    except ValueError as error:
        raise ValueError(
            f"opt_state_a: not a state of this optimizer ({str(error).splitlines()[0][:200]}); "
            "pass the tx that made it"
        ) from None
