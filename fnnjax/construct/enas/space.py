"""ENAS's macro search space on the architecture IR: the supernet, arcs and their two exports
(see the package docstring, :mod:`fnnjax.construct.enas`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fnnjax.arch.select import materialize
from fnnjax.arch.spec import (
    Block,
    Cell,
    Choice,
    Conv,
    Head,
    Pool,
    SepConv,
    Spec,
    Stage,
)
from fnnjax.checks import check_choice, check_int

OPS = ("conv3x3", "sep3x3", "conv5x5", "sep5x5", "avgpool", "maxpool")


def arc_size(layers: int) -> int:
    """Integers in an arc of ``layers`` layers: ``L + L(L-1)/2``."""
    return layers + layers * (layers - 1) // 2


def pool_layers(layers: int) -> tuple[int, ...]:
    """Layers after which ENAS reduces (``L//3 - 1`` and ``2*(L//3) - 1``, the released code's
    ``pool_distance``; they differ from ``2L//3 - 1`` when ``L % 3 == 2``; none below 3 layers)."""
    d = layers // 3
    return (d - 1, 2 * d - 1) if d else ()


def stage_of_layers(layers: int) -> list[list[int]]:
    """The layers of each segment (stage) between reductions."""
    stages, current = [], []
    for k in range(layers):
        current.append(k)
        if k in pool_layers(layers):
            stages.append(current)
            current = []
    return [*stages, current] if current else stages


def layer_ops(width: int) -> tuple[tuple[Block, ...], ...]:
    """The six candidate op sequences of a layer of ``width`` channels, in :data:`OPS` order."""
    inp = Conv(filters=width, kernel=1)  # ENAS's inp_conv_1: 1x1 conv, BN, ReLU

    def pool(op: str) -> Pool:
        return Pool(op=op, window=3, stride=1, padding=1, count_include_pad=False)

    return (
        (inp, Conv(filters=width, kernel=3)),
        (inp, SepConv(filters=width, kernel=3, mid_norm_act=False)),
        (inp, Conv(filters=width, kernel=5)),
        (inp, SepConv(filters=width, kernel=5, mid_norm_act=False)),
        (inp, pool("avg")),
        (inp, pool("max")),
    )


SKIP_CONVENTIONS = ("paper", "released")


def _skips(k: int, convention: str = "paper") -> tuple[int, ...]:
    """Flat sources of layer ``k``'s skip bits: layers ``0 .. k-1`` (``"paper"``), or the stem
    (-1) and layers ``0 .. k-2`` (``"released"``: the released child's ``prev_layers``)."""
    check_choice("skips", convention, SKIP_CONVENTIONS)
    return tuple(range(k)) if convention == "paper" else tuple(range(-1, k - 1))


def macro_space(
    layers: int = 12,
    filters: int = 36,
    *,
    input_shape: Sequence[int] = (32, 32, 3),
    num_classes: int = 10,
    mode: str = "auto",
    skips: str = "paper",
    update_stats: str = "selected",
    head_pool: str = "avg",
) -> Spec:
    """The shared-weight supernet of ENAS's macro search space (module docstring).

    Args:
        layers: ``L`` (12 in NHN and ENAS).
        filters: the constant width ``C`` (36 in the paper's search).
        input_shape, num_classes: the data's.
        mode: the choice blocks' ``mode`` (``"auto"``: all candidates on CPU, ``lax.switch``
            elsewhere).
        skips: which outputs the skip bits read: ``"paper"`` or ``"released"`` (module
            docstring).
        update_stats: ``"selected"`` (only the sampled op's BatchNorm statistics update) or
            ``"all"`` (every op's, as the released child, which computes all six every step;
            :class:`~fnnjax.arch.Choice`).
        head_pool: the head's pooling, ``"avg"`` (ENAS) or ``"grouped"`` (NHN's grouped
            convolution; :class:`~fnnjax.arch.Head`).

    Raises:
        ValueError: fewer than 1 layer or 2 filters (a reduction splits the width in two halves).
    """
    _check_sizes(layers, filters)
    stages = []
    for i, ks in enumerate(stage_of_layers(layers)):
        blocks = tuple(
            Choice(candidates=layer_ops(filters), mode=mode, gated_skips=_skips(k, skips),
                   gated_merge="sum_bn" if k else None, update_stats=update_stats)
            for k in ks
        )  # fmt: skip
        stages.append(Stage(blocks=blocks, reduce=filters if i else None, name=f"segment{i}"))
    return Spec(
        input_shape=tuple(input_shape),
        num_classes=num_classes,
        stem=(Conv(filters=filters, kernel=3, act=None),),
        stages=tuple(stages),
        head=Head(pool=head_pool),
        name=f"enas_macro_{layers}x{filters}",
    )


def _check_sizes(layers: int, filters: int) -> None:
    check_int("layers", layers)
    check_int("filters", filters, 2)


def _layer_paths(layers: int) -> list[str]:
    return [f"s{i}b{j}" for i, ks in enumerate(stage_of_layers(layers)) for j in range(len(ks))]


def _offsets(layers: int) -> list[int]:
    """Where layer ``k``'s op index sits in an arc (its skip bits follow)."""
    return [k + k * (k - 1) // 2 for k in range(layers)]


def check_arc(arc: Any, layers: int) -> np.ndarray:
    """``arc`` as an int array, checked: length ``L + L(L-1)/2``, ops in 0-5, skip bits 0/1.

    Raises:
        ValueError: naming the first offending position.
    """
    a = np.asarray(arc)
    if a.ndim != 1 or a.size != arc_size(layers):
        raise ValueError(f"arc: expected {arc_size(layers)} integers for {layers} layers "
                         f"(L + L(L-1)/2), got shape {a.shape}")  # fmt: skip
    if not np.all(a == np.round(a)):
        raise ValueError(f"arc: expected integers, got {a.tolist()}")
    a = a.astype(np.int64)
    for k, off in enumerate(_offsets(layers)):
        if not 0 <= a[off] < len(OPS):
            raise ValueError(f"arc[{off}] (layer {k}'s op): expected 0..{len(OPS) - 1}, got {a[off]}")
        bits = a[off + 1 : off + 1 + k]
        if np.any((bits != 0) & (bits != 1)):
            bad = off + 1 + int(np.argmax((bits != 0) & (bits != 1)))
            raise ValueError(f"arc[{bad}] (a skip bit of layer {k}): expected 0 or 1, got {a[bad]}")
    return a


def arc_to_selection(arc: jax.Array, layers: int) -> dict[str, Any]:
    """The supernet's ``"arch"`` collection for ``arc`` (``[..., L + L(L-1)/2]`` ints).

    Pure ``jnp`` indexing with static positions, so it runs inside ``jit`` and on a batch of arcs
    (leading axes are kept: ``[P, size]`` gives leaves ``[P]`` and ``[P, k]``). Values are not
    checked here (a traced arc cannot be); :func:`check_arc` checks a concrete one.
    """
    arc = jnp.asarray(arc)
    out: dict[str, Any] = {}
    for k, (path, off) in enumerate(zip(_layer_paths(layers), _offsets(layers), strict=True)):
        out[path] = {"choice": arc[..., off].astype(jnp.int32)}
        if k:
            out[f"{path}_skip"] = {"gates": arc[..., off + 1 : off + 1 + k].astype(jnp.float32)}
    return out


def host_selection(arc: Any, layers: int) -> dict[str, Any]:
    """:func:`arc_to_selection` of one concrete arc, with numpy leaves (no device round trip: the
    sampled execution path reads a selection on the host)."""
    arc = np.asarray(arc)
    out: dict[str, Any] = {}
    for k, (path, off) in enumerate(zip(_layer_paths(layers), _offsets(layers), strict=True)):
        out[path] = {"choice": np.asarray(arc[off], np.int32)}
        if k:
            out[f"{path}_skip"] = {"gates": arc[off + 1 : off + 1 + k].astype(np.float32)}
    return out


def selection_to_arc(selection: dict[str, Any], layers: int) -> np.ndarray:
    """Inverse of :func:`arc_to_selection` for one selection (concrete values)."""
    parts = []
    for k, path in enumerate(_layer_paths(layers)):
        parts.append(np.asarray(selection[path]["choice"]).reshape(1))
        if k:
            parts.append(np.asarray(selection[f"{path}_skip"]["gates"]).reshape(k))
    return check_arc(np.concatenate(parts).astype(np.int64), layers)


def arc_to_string(arc: Any, layers: int) -> str:
    """The released code's text form: the integers separated by spaces (``best_arc.txt``)."""
    return " ".join(str(int(v)) for v in check_arc(arc, layers))


def arc_from_string(text: str, layers: int | None = None) -> np.ndarray:
    """Parses an arc written by the released code (spaces, commas or brackets between integers).

    ``layers`` defaults to the one whose arc size matches the number of integers.

    Raises:
        ValueError: not integers, or a count that is no arc size.
    """
    tokens = text.replace(",", " ").replace("[", " ").replace("]", " ").split()
    try:
        values = [int(t) for t in tokens]
    except ValueError:
        raise ValueError(f"arc: expected integers separated by spaces, got {text[:80]!r}") from None
    if layers is None:
        sizes = {arc_size(n): n for n in range(1, 64)}
        if len(values) not in sizes:
            raise ValueError(f"arc: {len(values)} integers is no arc size (L + L(L-1)/2: "
                             f"{', '.join(str(s) for s in list(sizes)[:8])}, ...)")  # fmt: skip
        layers = sizes[len(values)]
    return check_arc(np.asarray(values, np.int64), layers)


def random_arcs(key: jax.Array, layers: int, n: int, *, skip_prob: float = 0.5) -> jax.Array:
    """``n`` uniform arcs ``[n, L + L(L-1)/2]`` int32: ops uniform, each skip on w.p. ``skip_prob``
    (the random-search baseline's distribution)."""
    k_op, k_skip = jax.random.split(key)
    ops = jax.random.randint(k_op, (n, layers), 0, len(OPS), jnp.int32)
    bits = jax.random.bernoulli(k_skip, skip_prob, (n, arc_size(layers))).astype(jnp.int32)
    op_at = np.zeros(arc_size(layers), bool)
    op_at[_offsets(layers)] = True
    return jnp.where(op_at, jnp.zeros_like(bits).at[:, _offsets(layers)].set(ops), bits)


def search_spec(arc: Any, layers: int, filters: int = 36, **space: Any) -> Spec:
    """The search form of ``arc``: the supernet's sub-network as a plain spec."""
    spec = macro_space(layers, filters, **space)
    return materialize(spec, arc_to_selection(check_arc(arc, layers), layers))


def retrain_spec(
    arc: Any,
    layers: int,
    filters: int = 36,
    *,
    input_shape: Sequence[int] = (32, 32, 3),
    num_classes: int = 10,
    dropout: float = 0.0,
    skips: str = "paper",
    head_pool: str = "avg",
) -> Spec:
    """The retraining form of ``arc`` (ENAS's fixed-arc child; module docstring).

    Width ``filters`` in the first segment, doubled at each reduction; every layer after the
    first merges its selected skips by ``concat_conv``; ``dropout`` before the classifier (the
    paper retrains with it; NHN's search and re-training without); ``head_pool``: ``"avg"`` or
    NHN's ``"grouped"`` convolution.
    """
    _check_sizes(layers, filters)
    a = check_arc(arc, layers)
    stages, offsets = [], _offsets(layers)
    for i, ks in enumerate(stage_of_layers(layers)):
        width = filters * 2**i
        blocks = []
        for k in ks:
            op = layer_ops(width)[int(a[offsets[k]])]
            bits = a[offsets[k] + 1 : offsets[k] + 1 + k]
            chosen = tuple(s for s, on in zip(_skips(k, skips), bits, strict=True) if on)
            blocks.append(Cell(branches=(op,), gated_skips=chosen,
                               gated_merge="concat_conv" if k else None))  # fmt: skip
        stages.append(Stage(blocks=tuple(blocks), reduce=width if i else None,
                            name=f"segment{i}"))  # fmt: skip
    return Spec(
        input_shape=tuple(input_shape),
        num_classes=num_classes,
        stem=(Conv(filters=filters, kernel=3, act=None),),
        stages=tuple(stages),
        head=(Head(kind="dense", dropout=dropout, pool=head_pool) if dropout
              else Head(pool=head_pool)),  # fmt: skip
        name=f"enas_arc_{layers}x{filters}",
    )
