"""The blocks of a :class:`~fnnjax.arch.spec.Spec` (frozen, hashable dataclasses; their fields
and meaning are :mod:`fnnjax.arch.spec`'s module docstring, which re-exports them): leaf ops
(:class:`Conv`, :class:`SepConv`, :class:`Pool`, :class:`Identity`, :class:`Dropout`, :class:`Pad`,
:class:`Dense`), composites (:class:`Cell`, :class:`Residual`), a searchable :class:`Choice`, and an
add-on edge (:class:`AddOn`). Validation is the spec's (:func:`fnnjax.arch.spec.validate`)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax

__all__ = ["BLOCK_TYPES", "CHOICE_MODES", "LEAF_TYPES", "AddOn", "Block", "Cell", "Choice", "Conv", "Dense", "Dropout",
           "Identity", "Pad", "Pool", "Residual", "SepConv"]


def _static(cls):
    return jax.tree_util.register_static(cls)


# ----------------------------------------------------------------------------------------------
# Dataclasses
# ----------------------------------------------------------------------------------------------


@_static
@dataclasses.dataclass(frozen=True, kw_only=True)
class AddOn:
    """An add-on edge (NHN, section 2.3): ``neurons`` new conv units (``kernel`` x ``kernel``,
    conv -> BN -> ReLU; NHN uses 3 and 5) reading the output of flat block ``source``, their
    outputs concatenated to the input of the block that lists them. The source is an earlier
    block of the same stage or the stage's input (flat index ``start - 1``; ``-1`` is the stem's
    output): NHN keeps add-on neurons within a segment.

    Two ``"arch"`` leaves of module ``<block>_addon{e}`` select it: ``gate`` (a float scalar, 1
    at init) switches the edge on or off, ``connections`` (``[cin_source, neurons]``, ones at
    init) says which input channels each add-on neuron reads (NHN's direction search). Which of
    the block's filters read an add-on neuron is a row of the ``kernel_mask`` (masks) of each
    unit reading the block's input.
    """

    source: int
    neurons: int
    kernel: int = 3


@dataclasses.dataclass(frozen=True, kw_only=True)
class Block:
    """Base of every block. The skip fields only mean something on stage blocks (module
    docstring, "Skip connections")."""

    skips: tuple[int, ...] = ()
    skip_merge: str = "add"
    gated_skips: tuple[int, ...] = ()
    gated_merge: str | None = None
    addons: tuple[AddOn, ...] = ()
    kind: ClassVar[str] = "block"


@_static
@dataclasses.dataclass(frozen=True, kw_only=True)
class Conv(Block):
    """Convolution -> BatchNorm -> activation (``act_first``: conv -> act -> BN, EnvelopeNet order).

    Padding is symmetric ``(kernel - 1) // 2`` (PyTorch-style), so a stride-s conv maps H to
    ``floor((H + 2p - k) / s) + 1``.
    """

    filters: int
    kernel: int = 3
    stride: int = 1
    groups: int = 1
    bias: bool = False
    norm: bool = True
    act: str | None = "relu"
    act_first: bool = False
    kind: ClassVar[str] = "conv"


@_static
@dataclasses.dataclass(frozen=True, kw_only=True)
class SepConv(Block):
    """Depthwise ``kernel`` conv (stride) [-> BN -> act if ``mid_norm_act``] -> 1x1 conv -> BN -> act.

    With ``mid_norm_act=True`` this is the MobileNet v1 block; with False, the NASNet/ENAS
    separable conv. ``filters`` is the pointwise output width (the depthwise width is the input's).
    ``act_first``: each unit applies its activation before its BN (conv -> act -> BN, the
    EnvelopeNets paper's order), as :class:`Conv`'s.
    """

    filters: int
    kernel: int = 3
    stride: int = 1
    bias: bool = False
    norm: bool = True
    act: str | None = "relu"
    mid_norm_act: bool = True
    act_first: bool = False
    kind: ClassVar[str] = "sepconv"


@_static
@dataclasses.dataclass(frozen=True, kw_only=True)
class Pool(Block):
    """Max (``"max"``) or average (``"avg"``) pooling with symmetric zero/-inf padding.

    ``count_include_pad``: an average divides by the whole window (PyTorch's default, True) or
    by its valid pixels only (False: TensorFlow's ``SAME`` pooling, which ENAS uses).
    """

    op: str = "max"
    window: int = 2
    stride: int = 2
    padding: int = 0
    count_include_pad: bool = True
    kind: ClassVar[str] = "pool"


@_static
@dataclasses.dataclass(frozen=True, kw_only=True)
class Identity(Block):
    """Passes its input through (a skip branch of a cell, an ENAS "identity" op)."""

    kind: ClassVar[str] = "identity"


@_static
@dataclasses.dataclass(frozen=True, kw_only=True)
class Dropout(Block):
    """Dropout with the given rate (rng stream ``"dropout"``, active only when ``train``)."""

    rate: float = 0.5
    kind: ClassVar[str] = "dropout"


@_static
@dataclasses.dataclass(frozen=True, kw_only=True)
class Pad(Block):
    """Zero padding of ``amount`` pixels on every spatial side (28x28 -> 32x32 with 2)."""

    amount: int = 2
    kind: ClassVar[str] = "pad"


@_static
@dataclasses.dataclass(frozen=True, kw_only=True)
class Dense(Conv):
    """A dense layer on the channel axis: ``act(x @ W + b)`` (optionally with BN), ``filters`` units.

    On a ``(1, 1, d)`` input (a vector; ``SpecNet`` reshapes ``[batch, d]`` inputs to it) it is an
    MLP layer; on a larger featuremap it acts on every position alike. It is a :class:`Conv` with
    a 1x1 kernel and bias and no BN by default, stored as a ``[1, 1, cin, filters]`` kernel, so
    masks, statistics, surgery and the profiler treat it like any conv (its units are filters).
    Residual MLPs are :class:`Residual` blocks with a Dense body.
    """

    kernel: int = 1
    bias: bool = True
    norm: bool = False
    kind: ClassVar[str] = "dense"


LEAF_TYPES: tuple[type, ...] = (Conv, Dense, SepConv, Pool, Identity, Dropout, Pad)


@_static
@dataclasses.dataclass(frozen=True, kw_only=True)
class Cell(Block):
    """Parallel branches of leaf ops applied to one input, merged by ``"concat"`` or ``"add"``.

    Inception module: four branches ``(Conv k1,)``, ``(Conv k1, Conv k3)``, ... concatenated.
    EnvelopeNet cell: one single-op branch per conv type. Widener: ``((Pool,), (Conv s2,))``.
    ``act`` is applied after the merge.
    """

    branches: tuple[tuple[Block, ...], ...]
    merge: str = "concat"
    act: str | None = None
    kind: ClassVar[str] = "cell"


@_static
@dataclasses.dataclass(frozen=True, kw_only=True)
class Residual(Block):
    """``act(body(x) + shortcut(x))``; body is a sequence of leaf ops.

    ``shortcut``: ``"auto"`` (identity when stride 1 and widths match, else 1x1 conv + BN with the
    body's stride: the ResNet rule), ``"identity"`` or ``"projection"``.
    """

    body: tuple[Block, ...]
    shortcut: str = "auto"
    act: str | None = "relu"
    kind: ClassVar[str] = "residual"


CHOICE_MODES = ("auto", "switch", "switch_remat", "all")


@_static
@dataclasses.dataclass(frozen=True, kw_only=True)
class Choice(Block):
    """One of several candidate op sequences, chosen by an array leaf (a search space's layer).

    The spec holds every candidate (each a sequence of leaf ops; their outputs must have one
    shape); the selector is the int32 scalar ``arch/<path>/choice`` in the model's ``"arch"``
    collection, so a population of architectures is a batch axis over that collection with one
    set of weights (ENAS's shared-weight supernet). Only the selected candidate's batch
    statistics update in training.

    ``mode``: ``"switch"`` computes only the selected candidate (``lax.switch``; under ``vmap``
    JAX computes all and selects); ``"all"`` computes every candidate and keeps the selected one
    (BatchNorm updates of the others are discarded); ``"auto"`` (default) is ``"all"`` on CPU,
    where XLA runs convolutions inside a conditional's branches 4-5x slower than computing all six
    ENAS candidates (measured, BENCHMARKS.md), and ``"switch"`` on accelerators, where a
    conditional runs only its branch (H100: 3x faster than ``"all"``, but 2x a materialized net
    of the same selection; BENCHMARKS.md). ``"switch_remat"`` is ``"switch"`` with every
    candidate rematerialized (``jax.checkpoint``): JAX differentiates a ``lax.switch`` by making
    the forward conditional return the union of all branches' residuals (zeros for the branches
    not taken, activation-sized); rematerialized, the forward returns only the output and the
    backward recomputes the taken candidate. Same function and gradients; which is faster
    depends on the backend (not yet measured on a GPU). With
    ``collect_stats`` the block sows the statistics of its output (the selected candidate's),
    not those of every candidate unit. ``update_stats``: ``"selected"`` (default) updates only
    the selected candidate's BatchNorm running statistics in training; ``"all"`` updates every
    candidate's with the batch (ENAS's released child computes all six ops every step, so all
    their statistics follow the data); it needs every candidate computed, so ``"auto"`` then
    resolves to ``"all"`` and the ``switch`` modes are refused.
    :class:`fnnjax.arch.SampledNet` runs one concrete selection computing only its candidates
    (per-op compiled programs composed in Python: the sampled execution path, the CPU choice of
    ENAS's search). :func:`fnnjax.arch.materialize` turns a selection into a plain spec. Inside the model a
    selector out of range is clipped to the nearest candidate (jit cannot raise);
    :func:`fnnjax.arch.selection_of` and :func:`~fnnjax.arch.materialize` check ranges.
    """

    candidates: tuple[tuple[Block, ...], ...]
    mode: str = "auto"
    update_stats: str = "selected"
    kind: ClassVar[str] = "choice"


BLOCK_TYPES: tuple[type, ...] = LEAF_TYPES + (Cell, Residual, Choice)
