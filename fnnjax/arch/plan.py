"""The plan of :func:`~fnnjax.arch.surgery.transplant_params`: for every unit of spec B, which
unit of spec A it continues and which of A's filters and input channels each of its own comes from
(:func:`transplant_plan`; the rules are :mod:`fnnjax.arch.surgery`'s module docstring)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

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

__all__ = ["UnitMap", "transplant_plan"]

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
