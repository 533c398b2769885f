"""Spec -> Flax Linen model.

:func:`build_model` turns a :class:`~fnnjax.arch.spec.Spec` into a :class:`SpecNet` that follows
the fnnjax model convention (``model.apply(variables, x, train=..., rngs={"dropout": k},
mutable=[...])``, BatchNorm statistics in ``"batch_stats"``).

Module names mirror the spec (they are the ``path`` of :func:`fnnjax.arch.shapes.infer_layers`):
stem block ``j`` is ``stem{j}``, block ``j`` of stage ``i`` is ``s{i}b{j}``, op ``m`` of branch
``k`` of a cell is ``br{k}_{m}``, op ``m`` of a residual body is ``body{m}``, a projection shortcut
is ``shortcut``, a separable conv has ``dw`` and ``pw`` units, and the head is ``head`` (``fc{n}``,
``bn{n}``, ``out``; ``pool`` for a grouped-conv pooling). Search-space modules sit beside the
blocks: ``s{i}b{j}_skip`` a gated-skip merge (``bn``, or ``unit`` for ``concat_conv``), ``s{i}b{j}_addon{e}`` an add-on edge (``unit``),
``s{i}red{g}`` stage ``i``'s factorized reduction of flat source ``g`` (``p1``, ``p2``). Every conv unit holds ``conv`` (``kernel [k, k, cin/groups, cout]``, optional
``bias``) and ``bn`` (``scale``, ``bias``; running ``mean``/``var`` in ``"batch_stats"``).

Hooks, both off by default so that ordinary training traces exactly the plain network:

* ``collect_stats=True`` (or ``"output"``): every conv unit sows, into ``"intermediates"`` and
  only when that collection is mutable, per-filter featuremap statistics of its output (after BN,
  activation and mask), each ``[cout]`` float32: ``featuremap_msq`` = mean over batch and space of
  ``y**2`` (the EnvelopeNets squared l2-norm normalized by featuremap size, averaged over the
  batch) and ``featuremap_var`` = variance over batch and space. ``collect_stats="conv"`` sows the
  same statistics of the convolution's own output instead (before BN and activation: the
  ``||W x||^2`` of EnvelopeNets' section 4.2; a separable unit's is its pointwise conv's). Flax
  ``sow`` appends, so each is a tuple with one array per call. ``build_model(...,
  stats_at=paths)`` restricts the sowing to the units (or choice blocks) at those module paths
  (``"s0b1/br2_0/pw"``): the statistics a caller reads, and no reductions for the rest.
* ``use_masks=True``: every conv unit multiplies its output by a ``[cout]`` array
  ``masks/<path>/filter_mask`` and its kernel by a ``[cin / groups, cout]`` array
  ``masks/<path>/kernel_mask`` (which input channel each filter reads: kernel pruning; a
  depthwise conv's is ``[1, c]``); every op without filters (pooling, identity, dropout,
  padding; in cells, choice candidates, residual bodies or as a block) multiplies its output by a
  ``[c]`` ``filter_mask`` too, so any branch can be switched off (all zeros) or thinned. All are ones at init. Masks are ordinary
  array leaves: pass edited ones at apply time (``{"params": ..., "batch_stats": ...,
  "masks": ...}``) and ``jax.vmap`` over a population of them with shared params.
* Selection leaves (collection ``"arch"``, created whenever the spec has them, independent of the
  hooks): a :class:`~fnnjax.arch.spec.Choice` block's int32 ``choice``, a gated-skip merge's
  float ``gates`` and an add-on edge's float ``gate`` and ``connections``
  (:mod:`fnnjax.arch.select`).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from fnnjax._checks import check_float_input
from fnnjax.arch.cpu_ops import (
    conv_matmul_kernel_grad,
    depthwise_conv_by_shifts,
    max_pool_shifted_grad,
)
from fnnjax.arch.shapes import residual_projects, residual_stride
from fnnjax.arch.spec import (
    AddOn,
    Block,
    Cell,
    Choice,
    Conv,
    Dropout,
    Head,
    Identity,
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
from fnnjax.arch.stats import _stats_measure, _StatsAt, featuremap_stats
from fnnjax.arch.variables import host_init, init_variables

__all__ = ["SpecNet", "build_model", "featuremap_stats", "host_init", "init_variables"]

BN_MOMENTUM = 0.9  # PyTorch momentum 0.1
BN_EPSILON = 1e-5
_KERNEL_INIT = nn.initializers.variance_scaling(2.0, "fan_in", "normal")
def _activate(act: str | None, x: jax.Array) -> jax.Array:
    if act is None:
        return x
    if act == "relu":
        return nn.relu(x)
    if act == "relu6":
        return nn.relu6(x)
    raise ValueError(f"unknown activation {act!r}")


SHIFTS_MIN_ELEMENTS = 16385
"""From this input size (batch x height x width x channels) up, on CPU, depthwise units compute by
shifts, dense conv units take their kernel gradient as matmuls and max-pooling its gradient by
shifted comparisons (:mod:`fnnjax.arch.cpu_ops`); smaller inputs keep XLA's own operations, which
compile faster and cost little there. One threshold for all three: the replacements' compile
cost (``k*k`` slices and dots) is what a small featuremap does not win back."""


def _cpu_conv(depthwise: bool, x: jax.Array) -> Any:
    """The convolution a conv unit runs on ``x``: on the CPU backend, from
    :data:`SHIFTS_MIN_ELEMENTS` input elements up, depthwise ones by shifts
    (:func:`depthwise_conv_by_shifts`) and dense ones with their kernel gradient as matmuls
    (:func:`fnnjax.arch.cpu_ops.conv_matmul_kernel_grad`); XLA's own (None) otherwise."""
    if jax.default_backend() != "cpu" or x.size < SHIFTS_MIN_ELEMENTS:
        return None
    return depthwise_conv_by_shifts if depthwise else conv_matmul_kernel_grad


class ConvUnit(nn.Module):
    """conv -> BN -> act (or conv -> act -> BN), optional filter mask and statistics hooks."""

    filters: int
    kernel: int = 3
    stride: int = 1
    groups: int = 1
    depthwise: bool = False
    bias: bool = False
    norm: bool = True
    act: str | None = "relu"
    act_first: bool = False
    collect_stats: bool | str | _StatsAt = False
    use_masks: bool = False

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        train: bool,
        active: jax.Array | None = None,
        connections: jax.Array | None = None,
    ) -> jax.Array:
        """``active``: a traced bool; when False, a training call leaves the BN statistics as
        they were (a choice block's unselected candidate in ``"all"`` mode). ``connections``:
        a ``[cin / groups, cout]`` array multiplying the kernel (an add-on edge's arch leaf)."""
        cin = x.shape[-1]
        features = cin if self.depthwise else self.filters
        groups = cin if self.depthwise else self.groups
        p = (self.kernel - 1) // 2
        shape = (cin // groups, features)
        kernel_mask = connections
        if self.use_masks:  # [cin / groups, cout]: which input channel each filter reads
            mask = self.variable("masks", "kernel_mask", lambda: jnp.ones(shape, x.dtype)).value
            kernel_mask = mask if kernel_mask is None else kernel_mask * mask
        if kernel_mask is not None:
            kernel_mask = jnp.broadcast_to(kernel_mask.astype(x.dtype),
                                           (self.kernel, self.kernel, *shape))  # fmt: skip
        x = nn.Conv(
            features,
            (self.kernel, self.kernel),
            strides=(self.stride, self.stride),
            padding=((p, p), (p, p)),
            feature_group_count=groups,
            use_bias=self.bias,
            kernel_init=_KERNEL_INIT,
            mask=kernel_mask,
            conv_general_dilated=_cpu_conv(self.depthwise, x),
            name="conv",
        )(x)
        if _stats_measure(self) == "conv":
            for key, value in featuremap_stats(x).items():  # the filters' own output, ||W x||^2
                self.sow("intermediates", key, value)
        bn = (
            nn.BatchNorm(
                use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name="bn"
            )
            if self.norm
            else (lambda y: y)
        )
        gate = (active is not None and self.norm and train and not self.is_initializing()
                and self.is_mutable_collection("batch_stats"))  # fmt: skip
        old = dict(self.variables["batch_stats"]["bn"]) if gate else None
        if self.act_first:
            x = bn(_activate(self.act, x))
        else:
            x = _activate(self.act, bn(x))
        if old is not None:
            for name, value in old.items():
                bn.put_variable("batch_stats", name,
                                jnp.where(active, bn.get_variable("batch_stats", name), value))  # fmt: skip
        if self.use_masks:
            mask = self.variable("masks", "filter_mask", lambda: jnp.ones((features,), x.dtype))
            x = x * mask.value.astype(x.dtype)
        if _stats_measure(self) == "output":
            for key, value in featuremap_stats(x).items():
                self.sow("intermediates", key, value)
        return x


def _unit_kwargs(op: Conv, hooks: dict[str, bool]) -> dict[str, Any]:
    return dict(
        filters=op.filters,
        kernel=op.kernel,
        stride=op.stride,
        groups=op.groups,
        bias=op.bias,
        norm=op.norm,
        act=op.act,
        act_first=op.act_first,
        **hooks,
    )


class SepConvUnit(nn.Module):
    """Depthwise conv unit ``dw`` followed by pointwise conv unit ``pw``."""

    op: SepConv
    collect_stats: bool | str | _StatsAt = False
    use_masks: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool, active: jax.Array | None = None) -> jax.Array:
        op = self.op
        hooks = dict(collect_stats=self.collect_stats, use_masks=self.use_masks)
        x = ConvUnit(
            filters=x.shape[-1],
            kernel=op.kernel,
            stride=op.stride,
            depthwise=True,
            bias=op.bias,
            norm=op.norm and op.mid_norm_act,
            act=op.act if op.mid_norm_act else None,
            act_first=op.act_first,
            name="dw",
            **hooks,
        )(x, train, active)
        return ConvUnit(
            filters=op.filters,
            kernel=1,
            bias=op.bias,
            norm=op.norm,
            act=op.act,
            act_first=op.act_first,
            name="pw",
            **hooks,
        )(x, train, active)


class ChannelMask(nn.Module):
    """Multiplies a featuremap by the ``[c]`` array ``masks/<path>/filter_mask`` (ones at init):
    the filter mask of an op without filters (pooling, identity, dropout, padding), so every
    branch of a cell or candidate can be switched off or thinned like a conv's filters."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        mask = self.variable("masks", "filter_mask", lambda: jnp.ones((x.shape[-1],), x.dtype))
        return x * mask.value.astype(x.dtype)


def _apply_leaf(
    op: Block,
    x: jax.Array,
    name: str,
    train: bool,
    hooks: dict[str, bool],
    *,
    parent: nn.Module | None = None,
    active: jax.Array | None = None,
):
    """Applies a leaf op inside the caller's ``nn.compact`` scope (parameter modules get ``name``;
    ``parent``: the module to attach them to when called from a lifted transform's branch)."""
    where = {} if parent is None else {"parent": parent}
    if isinstance(op, Conv):
        return ConvUnit(name=name, **where, **_unit_kwargs(op, hooks))(x, train, active)
    if isinstance(op, SepConv):
        return SepConvUnit(op, name=name, **where, **hooks)(x, train, active)
    if isinstance(op, Pool | Identity | Dropout | Pad) and hooks.get("use_masks"):
        return ChannelMask(name=name, **where)(_apply_leaf(op, x, name, train, {}))
    if isinstance(op, Pool):
        pad = ((op.padding, op.padding), (op.padding, op.padding))
        win, strides = (op.window, op.window), (op.stride, op.stride)
        if op.op == "max":
            if jax.default_backend() == "cpu" and x.size >= SHIFTS_MIN_ELEMENTS:
                return max_pool_shifted_grad(x, win, strides, pad)  # XLA:CPU's gradient is slow
            return nn.max_pool(x, win, strides=strides, padding=pad)
        return nn.avg_pool(x, win, strides=strides, padding=pad,
                           count_include_pad=op.count_include_pad)  # fmt: skip
    if isinstance(op, Pad):
        a = op.amount
        return jnp.pad(x, ((0, 0), (a, a), (a, a), (0, 0)))
    if isinstance(op, Dropout):
        return nn.Dropout(op.rate, deterministic=not train, **where)(x)
    if isinstance(op, Identity):
        return x
    raise TypeError(f"not a leaf op: {type(op).__name__}")


class CellUnit(nn.Module):
    """Parallel branches, merged by channel concat or sum, then ``act``."""

    cell: Cell
    collect_stats: bool | str | _StatsAt = False
    use_masks: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        hooks = dict(collect_stats=self.collect_stats, use_masks=self.use_masks)
        outs = []
        for k, branch in enumerate(self.cell.branches):
            y = x
            for m, op in enumerate(branch):
                y = _apply_leaf(op, y, branch_op_name(k, m), train, hooks)
            outs.append(y)
        y = jnp.concatenate(outs, axis=-1) if self.cell.merge == "concat" else sum(outs)
        return _activate(self.cell.act, y)


def _choice_mode(choice: Choice) -> str:
    """``"switch"``, ``"switch_remat"`` or ``"all"``; ``"auto"`` is ``"all"`` on CPU, ``"switch"``
    elsewhere."""
    if choice.mode != "auto":
        return choice.mode
    if choice.update_stats == "all":  # every candidate's statistics: every candidate runs
        return "all"
    return "all" if jax.default_backend() == "cpu" else "switch"


class ChoiceUnit(nn.Module):
    """The selected candidate of a :class:`~fnnjax.arch.spec.Choice` (selector in ``"arch"``)."""

    choice: Choice
    collect_stats: bool | str | _StatsAt = False
    use_masks: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        # Statistics are sown for the block's output (the selected candidate), not per candidate
        # unit: the candidates of a switch must touch the same variables, and an unselected
        # candidate has no statistics of this batch.
        hooks = dict(collect_stats=False, use_masks=self.use_masks)
        candidates = self.choice.candidates
        selector = self.variable("arch", "choice", lambda: jnp.zeros((), jnp.int32)).value
        selector = jnp.clip(jnp.asarray(selector, jnp.int32), 0, len(candidates) - 1)

        def run(k: int, module: nn.Module, y: jax.Array, active=None) -> jax.Array:
            for m, op in enumerate(candidates[k]):
                y = _apply_leaf(op, y, choice_op_name(k, m), train, hooks, parent=module,
                                active=active)  # fmt: skip
            return y

        if self.is_initializing():  # create every candidate's variables
            y = [run(k, self, x) for k in range(len(candidates))][0]
        elif _choice_mode(self.choice) == "all":
            every = self.choice.update_stats == "all"
            outs = [run(k, self, x, active=None if every else selector == k)
                    for k in range(len(candidates))]  # fmt: skip
            y = jnp.select([selector == k for k in range(len(outs))], outs)
        else:
            branches = [lambda module, z, k=k: run(k, module, z) for k in range(len(candidates))]
            if _choice_mode(self.choice) == "switch_remat":  # forward residuals: the inputs only
                branches = [nn.remat(branch) for branch in branches]
            y = nn.switch(selector, branches, self, x)
        if _stats_measure(self) is not None:
            for key, value in featuremap_stats(y).items():
                self.sow("intermediates", key, value)
        return y


class FactorizedReduce(nn.Module):
    """ENAS's factorized reduction: halves height and width, maps to ``filters`` channels.

    Two 1x1 stride-2 conv units (conv -> BN, no activation): ``p1`` reads the even pixels, ``p2``
    the odd ones (the input shifted by one pixel, zero-padded at the bottom/right edge, ENAS's
    ``pad``-and-slice), with ``filters // 2`` and ``filters - filters // 2`` filters; their
    outputs are concatenated (BN per channel, so one BN over the concatenation is the same).
    """

    filters: int
    collect_stats: bool | str | _StatsAt = False
    use_masks: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        hooks = dict(collect_stats=self.collect_stats, use_masks=self.use_masks)
        half = self.filters // 2
        shifted = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))[:, 1:, 1:, :]
        p1 = ConvUnit(filters=half, kernel=1, stride=2, act=None, name="p1", **hooks)(x, train)
        p2 = ConvUnit(filters=self.filters - half, kernel=1, stride=2, act=None, name="p2",
                      **hooks)(shifted, train)  # fmt: skip
        return jnp.concatenate([p1, p2], axis=-1)


class GatedSkips(nn.Module):
    """The gated-skip merge of a stage block (``Block.gated_merge``; ``"arch"`` leaf ``gates``).

    ``"sum_bn"``: ``BN(y + sum_s gate_s * src_s)``; ``"concat_conv"``:
    ``BN(conv1x1(relu(concat(gate_s * src_s ..., y))))`` (a conv unit ``unit`` with its BN).
    Gates are float ``[n]`` (ones at init); 0/1 switch sources off/on, other values scale them.
    """

    merge: str
    n: int
    collect_stats: bool | str | _StatsAt = False
    use_masks: bool = False

    @nn.compact
    def __call__(self, y: jax.Array, sources: Sequence[jax.Array], train: bool) -> jax.Array:
        gates = []
        if self.n:
            g = self.variable("arch", "gates", lambda: jnp.ones((self.n,), jnp.float32)).value
            g = jnp.asarray(g, y.dtype)
            gates = [g[k] for k in range(self.n)]
        gated = [gate * src for gate, src in zip(gates, sources, strict=True)]
        if self.merge == "sum_bn":
            return nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM,
                                epsilon=BN_EPSILON, name="bn")(y + sum(gated))  # fmt: skip
        z = nn.relu(jnp.concatenate([*gated, y], axis=-1))
        return ConvUnit(filters=y.shape[-1], kernel=1, act=None, name="unit",
                        collect_stats=self.collect_stats, use_masks=self.use_masks)(z, train)  # fmt: skip


class AddOnUnit(nn.Module):
    """An add-on edge (:class:`~fnnjax.arch.spec.AddOn`): ``gate * unit(x; kernel * connections)``,
    ``unit`` a conv -> BN -> ReLU unit; ``gate`` and ``connections`` are ``"arch"`` leaves."""

    addon: AddOn
    collect_stats: bool | str | _StatsAt = False
    use_masks: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        a = self.addon
        gate = self.variable("arch", "gate", lambda: jnp.ones((), jnp.float32)).value
        connections = self.variable(
            "arch", "connections", lambda: jnp.ones((x.shape[-1], a.neurons), jnp.float32)
        ).value
        y = ConvUnit(filters=a.neurons, kernel=a.kernel, name="unit",
                     collect_stats=self.collect_stats, use_masks=self.use_masks)(
            x, train, connections=connections
        )  # fmt: skip
        return jnp.asarray(gate, y.dtype) * y


class ResidualUnit(nn.Module):
    """``act(body(x) + shortcut(x))`` with the ResNet projection rule (see ``Residual``)."""

    block: Residual
    collect_stats: bool | str | _StatsAt = False
    use_masks: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        hooks = dict(collect_stats=self.collect_stats, use_masks=self.use_masks)
        y = x
        for m, op in enumerate(self.block.body):
            y = _apply_leaf(op, y, body_op_name(m), train, hooks)
        if residual_projects(self.block, x.shape[1:], y.shape[1:]):
            s = residual_stride(self.block)
            x = ConvUnit(
                filters=y.shape[-1], kernel=1, stride=s, act=None, name="shortcut", **hooks
            )(x, train)
        return _activate(self.block.act, y + x)


def _apply_block(b: Block, x: jax.Array, name: str, train: bool, hooks: dict[str, bool]):
    if isinstance(b, Choice):
        return ChoiceUnit(b, name=name, **hooks)(x, train)
    if isinstance(b, Cell):
        return CellUnit(b, name=name, **hooks)(x, train)
    if isinstance(b, Residual):
        return ResidualUnit(b, name=name, **hooks)(x, train)
    return _apply_leaf(b, x, name, train, hooks)


class HeadUnit(nn.Module):
    """The classifier of :class:`~fnnjax.arch.spec.Head`."""

    head: Head
    num_classes: int

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        h = self.head
        if h.pool == "grouped":  # NHN: a depthwise conv covering the map, starting as avg pool
            hw = x.shape[1] * x.shape[2]
            x = nn.Conv(x.shape[-1], x.shape[1:3], padding="VALID", feature_group_count=x.shape[-1],
                        use_bias=False, kernel_init=nn.initializers.constant(1.0 / hw),
                        name="pool")(x).reshape((x.shape[0], -1))  # fmt: skip
        elif h.pool == "avg":
            x = jnp.mean(x, axis=(1, 2))
        else:
            x = x.reshape((x.shape[0], -1))
        if h.kind == "fnn":
            from fnnjax.floating.layer import fnn_custom  # noqa: PLC0415 (only FNN heads need it)

            fnn = fnn_custom(self.num_classes, input_shape=(x.shape[-1],), **h.fnn.options())
            return fnn(x, train=train)
        if h.kind == "dense":
            for n, width in enumerate(h.hidden):
                x = nn.Dropout(h.dropout, deterministic=not train)(x)
                x = nn.Dense(width, name=f"fc{n}")(x)
                x = nn.BatchNorm(
                    use_running_average=not train,
                    momentum=BN_MOMENTUM,
                    epsilon=BN_EPSILON,
                    name=f"bn{n}",
                )(x)
                x = nn.relu(x)
            x = nn.Dropout(h.dropout, deterministic=not train)(x)
        return nn.Dense(self.num_classes, name="out")(x)


class SpecNet(nn.Module):
    """The Flax model of a spec.

    Attributes:
        spec: the architecture.
        collect_stats: sow per-filter featuremap statistics into ``"intermediates"`` (False,
            True / ``"output"``, ``"conv"``: module docstring).
        use_masks: filter and kernel masks on every conv unit, filter masks on every op without
            filters (``"masks"`` collection; module docstring).
    """

    spec: Spec
    collect_stats: bool | str | _StatsAt = False
    use_masks: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        """x: [batch, height, width, channels] (or [batch, h*w*c]) float -> logits [batch, classes].

        Raises:
            DataError: integer inputs (raw pixels must be normalized first).
        """
        check_float_input(x, f"model {self.spec.name or 'SpecNet'}")
        spec = self.spec
        if x.ndim == 2:
            x = x.reshape((x.shape[0], *spec.input_shape))
        hooks = dict(collect_stats=self.collect_stats, use_masks=self.use_masks)
        for j, b in enumerate(spec.stem):
            x = _apply_block(b, x, stem_name(j), train, hooks)
        sources = {-1: x}  # flat block index -> its output, reduced as stages go (gated skips)
        g = 0
        for i, st in enumerate(spec.stages):
            if st.reduce is not None:
                for s in reduced_sources(spec, i):
                    sources[s] = FactorizedReduce(st.reduce, name=reduce_name(i, s), **hooks)(
                        sources[s], train
                    )
                x = sources[g - 1]
            stage_in, outs = x, []
            for j, b in enumerate(st.blocks):
                srcs = [stage_in if s == -1 else outs[s] for s in b.skips]
                if srcs and b.skip_merge == "concat":
                    x = jnp.concatenate([x, *srcs], axis=-1)
                if b.addons:
                    x = jnp.concatenate([x, *(
                        AddOnUnit(a, name=addon_name(i, j, e), **hooks)(sources[a.source], train)
                        for e, a in enumerate(b.addons))], axis=-1)  # fmt: skip
                x = _apply_block(b, x, block_name(i, j), train, hooks)
                if srcs and b.skip_merge == "add":
                    x = x + sum(srcs)
                if b.gated_merge is not None:
                    x = GatedSkips(b.gated_merge, len(b.gated_skips), name=skip_merge_name(i, j),
                                   **hooks)(x, [sources[s] for s in b.gated_skips], train)  # fmt: skip
                outs.append(x)
                sources[g] = x
                g += 1
        return HeadUnit(spec.head, spec.num_classes, name="head")(x, train)


def build_model(
    spec: Spec,
    *,
    collect_stats: bool | str = False,
    use_masks: bool = False,
    stats_at: Collection[str] | None = None,
) -> SpecNet:
    """Returns the Flax module of ``spec`` (see :class:`SpecNet` and the module docstring for the
    hooks; ``collect_stats``: False, True / ``"output"`` or ``"conv"``; ``stats_at``: None, every
    conv unit sows, or the module paths of the units that do, e.g. ``{"s0b1/br2_0/pw"}``: a unit
    elsewhere computes no statistics, a path naming no unit collects nothing)."""
    if not (isinstance(collect_stats, bool) or collect_stats in ("output", "conv")):
        raise ValueError(f"collect_stats: expected False, True, 'output' or 'conv', got "
                         f"{collect_stats!r}")  # fmt: skip
    if stats_at is not None:
        try:
            stats_at = stats_at if isinstance(stats_at, str) else tuple(stats_at)
        except TypeError:
            pass  # not iterable: refused below
        if not isinstance(stats_at, tuple) or not all(isinstance(p, str) for p in stats_at):
            raise ValueError(f"stats_at: expected a collection of module paths (strings), got "
                             f"{stats_at!r}")  # fmt: skip
        if not collect_stats:
            raise ValueError("stats_at: given, but collect_stats is off; pass collect_stats=True, "
                             "'output' or 'conv' too")  # fmt: skip
        collect_stats = _StatsAt("conv" if collect_stats == "conv" else "output",
                                 frozenset(stats_at))  # fmt: skip
    return SpecNet(spec, collect_stats=collect_stats, use_masks=use_masks)
