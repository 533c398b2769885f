"""A sampled architecture at its own network's cost: per-op compiled programs composed in Python.

A weight-sharing search (ENAS) trains a different sub-network of one supernet at every step. The
supernet compiled as one program either computes every candidate of a choice block
(``Choice.mode="all"``) or wraps them in conditionals whose backward carries every branch's
residuals (``"switch"``); an eager framework simply runs the sampled op. :class:`SampledNet` does
what the eager framework does, with compiled pieces:

* every *piece* of the network (a stem block, a stage's factorized reduction of one source, the
  selected candidate of a choice block or a plain block, a gated-skip merge, the head with the
  loss) is one jitted function that returns its output, its updated BatchNorm statistics and its
  VJP (``jax.vjp`` inside ``jit``: the VJP is a pytree of residuals that one jitted backward
  consumes);
* a forward pass is a Python walk over the pieces the selection uses; the backward walks the tape
  in reverse, summing each output's cotangents from all its readers, and skips a piece whose
  output no selected reader uses (a skip switched off: its contribution is exactly zero);
* the gradients come back as the *full* parameter tree (zeros for every candidate not taken), so
  the optimizer updates every weight in one jitted call, exactly as the supernet's step does
  (unselected weights still decay and carry momentum; a global clipping norm covers them).

Programs are keyed by the piece's spec (a candidate's ops and index, a block, a reduction's
width, a merge's number of sources, the head) and by input shapes, so their number is bounded by
ops x shapes x layer positions (a merge of ``n`` sources: one per position), never by the number
of distinct arcs. Piece-local module names (``block``, ``c{k}_{m}``, ``reduce``, ``merge``,
``head``) make equal layers in one stage share programs; parameters and statistics are read from
and written back to the supernet's own paths, so :class:`SampledNet` runs the supernet's
variables (its units are the supernet's: :class:`~fnnjax.arch.build.ConvUnit`,
:class:`~fnnjax.arch.build.SepConvUnit`, :class:`~fnnjax.arch.build.FactorizedReduce`,
:class:`~fnnjax.arch.build.GatedSkips`, :class:`~fnnjax.arch.build.HeadUnit`).

Semantics (tested against the jitted supernet step for step): the selected candidate's BatchNorm
statistics update, the others' do not (``Choice.update_stats="selected"``; ``"all"`` needs every
candidate computed: use the jitted supernet); every factorized reduction runs, as in the supernet
and the released ENAS child, so its statistics follow every batch; gated merges take every
source with its gate. The head runs under the name ``head``, so its dropout draws the same
random numbers as in the supernet; dropout elsewhere (a ``Dropout`` block) would draw others
and is refused.

Several processes (``jax.distributed``): the pieces run on the devices their inputs live on (a
batch split over a mesh: BatchNorm and the parameter gradients reduce across it), and each
piece is waited for before the next is issued (:func:`_in_order`): the runtime may otherwise run
two independent pieces at once, and processes that reach their cross-host reductions in
different orders wait for each other forever. Pieces split over several devices of one process
are waited for too: XLA:CPU's in-process collectives deadlocked when two such pieces were in
flight at once (8 simulated devices on 2 cores, the paper's size: 7 of 8 device threads waited
at one all-reduce while the eighth's work queued behind the other piece's).

Not supported (refused by :func:`sampled_support`, which names the reason): add-on edges, a
block's own ``skips`` (``concat``/``add``), dropout outside the head, choice blocks in the stem and
``Choice.update_stats="all"``; and (refused when the variables carry them) the ``use_masks`` and
``collect_stats`` hooks of :func:`~fnnjax.arch.build_model`: the pieces are built without them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fnnjax._checks import check_float_input
from fnnjax._trees import at_path
from fnnjax._trees import in_order as _in_order
from fnnjax.arch.build import (
    FactorizedReduce,
    GatedSkips,
    HeadUnit,
    _apply_block,
    _apply_leaf,
)
from fnnjax.arch.spec import (
    Block,
    Cell,
    Choice,
    Dropout,
    Residual,
    Spec,
    block_name,
    choice_op_name,
    reduce_name,
    reduced_sources,
    skip_merge_name,
    stem_name,
)

__all__ = ["SampledNet", "sampled_support"]

_NO_HOOKS = {"collect_stats": False, "use_masks": False}


class _Piece(nn.Module):
    """One piece of a spec's network under piece-local names (module docstring).

    ``kind`` and ``part``: ``"block"`` (a block, as ``block``), ``"candidate"`` (``(ops, k)``:
    candidate ``k``'s ops as ``c{k}_{m}``), ``"reduce"`` (the width, as ``reduce``), ``"merge"``
    (``(merge, n)``, as ``merge``: inputs ``y, *sources``) and ``"head"`` (``(head, classes)``,
    as ``head``).
    """

    kind: str
    part: Any

    @nn.compact
    def __call__(self, *xs: jax.Array, train: bool) -> jax.Array:
        if self.kind == "block":
            return _apply_block(self.part, xs[0], "block", train, _NO_HOOKS)
        if self.kind == "candidate":
            ops, k = self.part
            y = xs[0]
            for m, op in enumerate(ops):
                y = _apply_leaf(op, y, choice_op_name(k, m), train, _NO_HOOKS)
            return y
        if self.kind == "reduce":
            return FactorizedReduce(self.part, name="reduce")(xs[0], train)
        if self.kind == "merge":
            merge, n = self.part
            return GatedSkips(merge, n, name="merge")(xs[0], list(xs[1:]), train)
        if self.kind == "head":
            head, classes = self.part
            return HeadUnit(head, classes, name="head")(xs[0], train)
        raise ValueError(f"unknown piece kind {self.kind!r}")


def _has_dropout(b: Block) -> bool:
    if isinstance(b, Dropout):
        return True
    if isinstance(b, Cell):
        return any(_has_dropout(op) for branch in b.branches for op in branch)
    if isinstance(b, Residual):
        return any(_has_dropout(op) for op in b.body)
    if isinstance(b, Choice):
        return any(_has_dropout(op) for cand in b.candidates for op in cand)
    return False


def sampled_support(spec: Spec) -> str | None:
    """Why :class:`SampledNet` cannot run ``spec`` (one line), or None when it can."""
    for j, b in enumerate(spec.stem):
        if isinstance(b, Choice):
            return f"stem block {j} is a choice block (choices are composed in stages)"
        if _has_dropout(b):
            return f"stem block {j} holds dropout (only the head's draws the supernet's numbers)"
    for i, st in enumerate(spec.stages):
        for j, b in enumerate(st.blocks):
            where = f"block {block_name(i, j)}"
            if b.addons:
                return f"{where} has add-on edges"
            if b.skips:
                return f"{where} has {b.skip_merge} skips (only gated skips are composed)"
            if _has_dropout(b):
                return f"{where} holds dropout (only the head's draws the supernet's numbers)"
            if isinstance(b, Choice) and b.update_stats == "all":
                return (f"{where} updates every candidate's BatchNorm statistics "
                        "(update_stats='all' needs every candidate computed)")  # fmt: skip
    return None


def _put(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    """A copy of ``tree`` (copied along ``path`` only) with ``value`` at ``path``."""
    if not path:
        return value
    out = dict(tree)
    out[path[0]] = _put(tree.get(path[0], {}), path[1:], value)
    return out


class _Entry:
    """A recorded piece call: its VJP, its inputs' node ids (None: data, or a source whose
    gate is off, which gets no cotangent) and its output node id, and where its parameters live
    (``{local name: supernet path}``)."""

    __slots__ = ("inputs", "out", "paths", "vjp")

    def __init__(self, vjp, inputs, out, paths):
        self.vjp, self.inputs, self.out, self.paths = vjp, inputs, out, paths


class SampledNet:
    """Runs one selection of ``spec``'s choice blocks and gated skips on the supernet's variables
    computing only what the selection uses (module docstring).

    Example::

        net = SampledNet(space)                          # a spec with Choice blocks
        selection = enas.host_selection(arc, layers)     # concrete values, numpy
        metrics, grads, batch_stats = net.value_and_grad(variables, selection, x, y, key,
                                                         objective)
        logits = net.apply(variables, selection, x)      # inference mode

    ``variables`` are the supernet's (``build_model(spec)``): ``"params"``, ``"batch_stats"``.
    ``grads`` has the structure of ``variables["params"]`` (zeros where nothing was used).

    Raises:
        ValueError: ``spec`` holds something the composition does not support
            (:func:`sampled_support`).
    """

    def __init__(self, spec: Spec):
        reason = sampled_support(spec)
        if reason is not None:
            raise ValueError(f"spec: the sampled execution path cannot run it: {reason}; use the "
                             "jitted supernet (build_model) instead")  # fmt: skip
        self.spec = spec
        self._train: dict[Any, Callable[..., Any]] = {}
        self._infer: dict[Any, Callable[..., Any]] = {}
        self._heads: dict[Any, Callable[..., Any]] = {}
        self._backward = jax.jit(lambda vjp, g: vjp(g))
        self._zeros: tuple[Any, Any] | None = None

    # ----------------------------------------------------------------------------------------
    # compiled pieces

    def _train_fn(self, kind: str, part: Any, wrt_inputs: bool) -> Callable[..., Any]:
        key = (kind, part, wrt_inputs)
        if key not in self._train:
            piece = _Piece(kind, part)

            def forward(params, stats, extra, *xs):
                def f(p, *ins):
                    y, upd = piece.apply({"params": p, "batch_stats": stats, **extra}, *ins,
                                         train=True, mutable=["batch_stats"])  # fmt: skip
                    return y, upd.get("batch_stats", {})

                if wrt_inputs:
                    y, vjp, new = jax.vjp(f, params, *xs, has_aux=True)
                else:
                    y, vjp, new = jax.vjp(lambda p: f(p, *xs), params, has_aux=True)
                return y, new, vjp

            self._train[key] = jax.jit(forward)
        return self._train[key]

    def _infer_fn(self, kind: str, part: Any) -> Callable[..., Any]:
        key = (kind, part)
        if key not in self._infer:
            piece = _Piece(kind, part)
            self._infer[key] = jax.jit(
                lambda params, stats, extra, *xs: piece.apply(
                    {"params": params, "batch_stats": stats, **extra}, *xs, train=False))
        return self._infer[key]

    def _head_fn(self, objective: Any) -> Callable[..., Any]:
        if objective not in self._heads:
            piece = _Piece("head", (self.spec.head, self.spec.num_classes))

            def loss_and_grads(params, stats, x, y, drop_key):
                def f(p, x):
                    out, upd = piece.apply({"params": p, "batch_stats": stats}, x, train=True,
                                           rngs={"dropout": drop_key}, mutable=["batch_stats"])  # fmt: skip
                    metrics = {k: v.mean() for k, v in objective.evaluate(out, y).items()}
                    return metrics["loss"], (metrics, upd.get("batch_stats", {}))

                (_, (metrics, new)), (gp, gx) = jax.value_and_grad(
                    f, argnums=(0, 1), has_aux=True)(params, x)  # fmt: skip
                return metrics, new, gp, gx

            self._heads[objective] = jax.jit(loss_and_grads)
        return self._heads[objective]

    # ----------------------------------------------------------------------------------------
    # the walk over a selection

    def _pieces(self, selection: Mapping[str, Any]):
        """Yields the pieces of one forward pass, in order: ``(kind, part, paths, inputs, live,
        extra, output)`` with node ids for inputs and output (``"x"``: the data), ``live`` the
        inputs that get a cotangent (None for a source whose gate is 0), ``paths``
        ``{local: supernet path}`` and ``extra`` the piece's ``"arch"`` leaves."""
        spec = self.spec
        node = 0
        x = "x"
        for j, b in enumerate(spec.stem):
            node += 1
            yield "block", b, {"block": (stem_name(j),)}, (x,), (x,), {}, node
            x = node
        sources: dict[int, Any] = {-1: x}
        g = 0
        for i, st in enumerate(spec.stages):
            if st.reduce is not None:
                for s in reduced_sources(spec, i):
                    node += 1
                    src = (sources[s],)
                    yield "reduce", st.reduce, {"reduce": (reduce_name(i, s),)}, src, src, {}, node
                    sources[s] = node
                x = sources[g - 1]
            for j, b in enumerate(st.blocks):
                path = block_name(i, j)
                node += 1
                if isinstance(b, Choice):
                    k = int(np.clip(np.asarray(selection[path]["choice"]), 0,
                                    len(b.candidates) - 1))  # fmt: skip
                    paths = {choice_op_name(k, m): (path, choice_op_name(k, m))
                             for m in range(len(b.candidates[k]))}  # fmt: skip
                    yield "candidate", (b.candidates[k], k), paths, (x,), (x,), {}, node
                else:
                    yield "block", b, {"block": (path,)}, (x,), (x,), {}, node
                x = node
                if b.gated_merge is not None:
                    n = len(b.gated_skips)
                    merge = skip_merge_name(i, j)
                    gates = (np.asarray(selection[merge]["gates"], np.float32) if n
                             else np.ones((0,), np.float32))  # fmt: skip
                    node += 1
                    srcs = tuple(sources[s] for s in b.gated_skips)
                    extra = {"arch": {"merge": {"gates": gates}}} if n else {}
                    live = (x, *(s if gate != 0 else None
                                 for s, gate in zip(srcs, gates, strict=True)))  # fmt: skip
                    yield ("merge", (b.gated_merge, n), {"merge": (merge,)}, (x, *srcs), live,
                           extra, node)  # fmt: skip
                    x = node
                sources[g] = x
                g += 1

    @staticmethod
    def _local(tree: Mapping[str, Any], paths: Mapping[str, tuple[str, ...]]) -> dict[str, Any]:
        nodes = {local: at_path(tree, "/".join(path)) for local, path in paths.items()}
        # (a unit without this collection is left out: pooling has no batch statistics)
        return {local: node for local, node in nodes.items() if node is not None}

    def value_and_grad(
        self,
        variables: Mapping[str, Any],
        selection: Mapping[str, Any],
        x: jax.Array,
        y: jax.Array,
        drop_key: jax.Array,
        objective: Any,
    ) -> tuple[dict[str, jax.Array], Any, Any]:
        """One training forward and backward pass of ``selection``.

        Args:
            variables: the supernet's ``{"params", "batch_stats"}``.
            selection: its ``"arch"`` collection, concrete (host or device arrays; read on the
                host to choose the pieces).
            x: ``[batch, ...]`` inputs; y: targets.
            drop_key: the ``"dropout"`` key of the step (the head's dropout).
            objective: ``evaluate(outputs, targets) -> {"loss": [batch], ...}``
                (:class:`fnnjax.train.Objective`).

        Returns:
            ``(metrics, grads, batch_stats)``: batch means of ``"loss"`` and the objective's
            metrics; gradients of the mean loss as the full ``"params"`` tree; the
            ``"batch_stats"`` tree with the used units' statistics updated.
        """
        params, stats = variables["params"], variables.get("batch_stats", {})
        x = self._check_input(variables, x)
        values: dict[Any, Any] = {"x": x}
        tape: list[_Entry] = []
        new_stats, out = stats, "x"
        for kind, part, paths, inputs, live, extra, out in self._pieces(selection):
            from_data = all(i == "x" for i in inputs)
            fn = self._train_fn(kind, part, not from_data)
            y_out, bs, vjp = _in_order(fn(self._local(params, paths), self._local(stats, paths),
                                          extra, *(values[i] for i in inputs)))  # fmt: skip
            for local, path in paths.items():
                if local in bs:
                    new_stats = _put(new_stats, path, bs[local])
            values[out] = y_out
            tape.append(_Entry(vjp, None if from_data else live, out, paths))
        head_paths = {"head": ("head",)}
        metrics, bs, g_head, g_x = _in_order(self._head_fn(objective)(
            self._local(params, head_paths), self._local(stats, head_paths), values[out], y,
            drop_key))  # fmt: skip
        if "head" in bs:
            new_stats = _put(new_stats, ("head",), bs["head"])
        grads = self._zero_grads(params)
        grads = _put(grads, ("head",), g_head["head"])
        cotangents: dict[Any, Any] = {out: g_x}
        for entry in reversed(tape):
            g = cotangents.pop(entry.out, None)
            if g is None:
                continue  # no selected reader: the piece's gradients are zero
            g_params, *g_inputs = _in_order(self._backward(entry.vjp, g))
            for local, path in entry.paths.items():
                if local in g_params:  # (a pooling op has no parameters)
                    grads = _put(grads, path, g_params[local])
            for i, gi in zip(entry.inputs or (), g_inputs, strict=False):
                if i is None or i == "x":
                    continue
                cotangents[i] = gi if i not in cotangents else _in_order(cotangents[i] + gi)
        return metrics, grads, new_stats

    def gradient(self, selection: Mapping[str, Any]) -> Callable[..., Any]:
        """``gradient(variables, x, y, drop_key, objective)``: :meth:`value_and_grad` of
        ``selection``, the shape :meth:`fnnjax.train.Engine.train_steps_with` takes."""

        def gradient(variables, x, y, drop_key, objective):
            return self.value_and_grad(variables, selection, x, y, drop_key, objective)

        return gradient

    def apply(self, variables: Mapping[str, Any], selection: Mapping[str, Any],
              x: jax.Array) -> jax.Array:  # fmt: skip
        """Logits of ``selection`` in inference mode (running BatchNorm statistics)."""
        params, stats = variables["params"], variables.get("batch_stats", {})
        x = self._check_input(variables, x)
        values: dict[Any, Any] = {"x": x}
        out = "x"
        for kind, part, paths, inputs, _, extra, out in self._pieces(selection):
            values[out] = _in_order(self._infer_fn(kind, part)(
                self._local(params, paths), self._local(stats, paths), extra,
                *(values[i] for i in inputs)))  # fmt: skip
        head = {"head": ("head",)}
        return _in_order(self._infer_fn("head", (self.spec.head, self.spec.num_classes))(
            self._local(params, head), self._local(stats, head), {}, values[out]))

    def _check_input(self, variables: Mapping[str, Any], x: jax.Array) -> jax.Array:
        """``x`` as the supernet takes it (flat rows reshaped to the input shape); refuses
        integer pixels and variables of hooks the pieces do not build (masks, statistics)."""
        hooks = sorted(set(variables) & {"masks", "intermediates", "stats"})
        if hooks:
            raise ValueError(f"variables: the sampled execution path builds no masks or "
                             f"statistics hooks, but the variables hold {hooks}; build the model "
                             "without use_masks / collect_stats, or use the jitted supernet")  # fmt: skip
        check_float_input(x, f"model {self.spec.name or 'SampledNet'}")
        return x.reshape((x.shape[0], *self.spec.input_shape)) if x.ndim == 2 else x

    def _zero_grads(self, params: Any) -> Any:
        """A cached tree of zeros shaped and placed like ``params`` (never donated, shared by
        steps; made again for parameters of another structure or on other devices)."""
        leaves, structure = jax.tree_util.tree_flatten(params)
        key = (structure, tuple(getattr(leaf, "sharding", None) for leaf in leaves))
        if self._zeros is None or self._zeros[0] != key:
            self._zeros = (key, jax.tree_util.tree_map(jnp.zeros_like, params))
        return self._zeros[1]

    def compiles(self) -> int:
        """Programs compiled so far (each piece function counts once per input shape)."""
        fns = [*self._train.values(), *self._infer.values(), *self._heads.values(),
               self._backward]  # fmt: skip
        return sum(f._cache_size() for f in fns)
