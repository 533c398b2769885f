"""EnvelopeNets as specs: the cell, the notation ``C/n1-n2-.../M`` and the layer view.

An EnvelopeNet's structure is its *layers*: for every stage, for every layer, the names of the
cell blocks present (``("1x1", "3x3", "3x3sep", ...)``, in the cell's order). :func:`envelope_spec`
builds the spec of a layer structure; :func:`envelope_layers` reads it back from any spec that
builder made (and refuses one it did not), so the construction algorithm can be a pure spec
transform.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

from fnnjax.arch.spec import Block, Cell, Conv, Head, Pool, SepConv, Spec, Stage, block_name
from fnnjax.checks import check_bool, check_choice, check_int, check_share

__all__ = [
    "CELL_OPS",
    "EnvelopeConfig",
    "Layers",
    "block_counts",
    "block_modules",
    "envelope_layers",
    "envelope_notation",
    "envelope_spec",
    "initial_layers",
    "layer_widths",
    "parse_notation",
]

CELL_OPS = ("1x1", "3x3", "3x3sep", "5x5", "5x5sep", "7x7sep")
"""The paper's EnvelopeCell (section 4.1): six conv blocks in parallel, in this order."""

ORDERS = ("paper", "released")
WIDTHS = ("layer", "block")
_OP_RE = re.compile(r"^([1-9])x\1(sep)?$")

Layers = tuple[tuple[tuple[str, ...], ...], ...]
"""Per stage, per layer, the names of the blocks present (a subset of the cell, in its order)."""


@dataclasses.dataclass(frozen=True)
class EnvelopeConfig:
    """How an EnvelopeNet is built from its layers (everything but the layers themselves).

    Attributes:
        channels: ``C``, the stem's width; stage ``s`` has width ``W = C * 2**s`` (each widener
            doubles it).
        cell: the EnvelopeCell's blocks, each ``"kxk"`` (conv) or ``"kxksep"`` (separable:
            depthwise kxk then pointwise 1x1, no BN or ReLU between them, as TensorFlow's
            ``separable_conv2d``); stride 1, SAME padding. ``M = len(cell)``.
        order: ``"paper"`` (section 4.1: "a convolution block, a Relu unit and a batch
            normalization", conv -> ReLU -> BN; the default) or ``"released"`` (the authors'
            code: conv -> BN -> ReLU). The stem and the wideners' convs follow the same order.
        width: ``"layer"`` (default, the released code: every block of a layer of stage ``s``
            gets ``int(W / blocks in the layer)`` channels, so pruning a block widens the
            survivors and the layer's width stays about ``W``) or ``"block"`` (every block keeps
            ``int(W / M)`` channels, so pruning narrows the layer).
        dense_skips: DenseNet-style skips (section 4.3, "for selected networks"): before every
            layer but a stage's first, a 1x1 conv to ``W`` channels reads the concatenation of
            the stage's input and every earlier layer's output. Within a stage every featuremap
            has the stage's size, so no pooling is needed; skips do not cross wideners.
        dropout: the classifier's dropout rate (global average pool -> dropout -> dense ->
            softmax; the paper gives no rate, 0.5 is ours; the released code uses 0.2 there and
            also drops 20% of every block's output inside the cell, which we do not).
        stem_stride: the stem conv's stride (1, the paper's CIFAR stem). 2 halves every
            featuremap, a quarter of the cost: our CPU-size runs use it (the paper's ImageNet
            stem downsamples too, with three parallel convs).

    A widener (between stages) is a 2x2/s2 max-pool and a 3x3/s2 conv of the incoming width in
    parallel, concatenated: half the size, twice the channels (on an odd size, a 3x3/s2 pool
    padded by 1, to match the conv's ``ceil(size / 2)``). The incoming width is the stage's last
    layer's actual width (``int(W / n) * n``, e.g. 126 for 128 channels over six blocks), so the
    next stage's input has twice that, about ``2W``. The stem is a 3x3 conv to ``C`` (the paper
    gives no kernel; the released code's is a 1x1 conv followed by local response normalization).
    """

    channels: int = 128
    cell: tuple[str, ...] = CELL_OPS
    order: str = "paper"
    width: str = "layer"
    dense_skips: bool = False
    dropout: float = 0.5
    stem_stride: int = 1

    def __post_init__(self) -> None:
        check_int("channels", self.channels)
        cell = tuple(self.cell)
        object.__setattr__(self, "cell", cell)
        if not cell:
            raise ValueError("cell: expected at least one block, got ()")
        for op in cell:
            if not isinstance(op, str) or not _OP_RE.match(op):
                raise ValueError(f"cell: expected blocks like '3x3' or '5x5sep', got {op!r}")
        if len(set(cell)) != len(cell):
            raise ValueError(f"cell: expected distinct blocks, got {cell!r}")
        check_choice("order", self.order, ORDERS)
        check_choice("width", self.width, WIDTHS)
        check_bool("dense_skips", self.dense_skips)
        check_share("dropout", self.dropout)
        check_choice("stem_stride", self.stem_stride, (1, 2))
        if self.channels < len(cell):
            raise ValueError(f"channels: expected at least M = {len(cell)} (one channel per "
                             f"block), got {self.channels}")  # fmt: skip

    @property
    def m(self) -> int:
        """``M``, the number of blocks in a full EnvelopeCell."""
        return len(self.cell)


def parse_notation(text: str) -> tuple[int, tuple[int, ...], int]:
    """``"128/10-1-1-1/6"`` -> ``(128, (10, 1, 1, 1), 6)``: C, layers per stage, M."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+(?:\s*-\s*\d+)*)\s*/\s*(\d+)\s*", str(text))
    if m is None:
        raise ValueError(f"notation: expected C/n1-n2-.../M such as 128/10-1-1-1/6, got {text!r}")
    c, stages, cells = int(m[1]), tuple(int(n) for n in m[2].split("-")), int(m[3])
    if c < 1 or cells < 1 or min(stages) < 1:
        raise ValueError(f"notation: expected positive C, layer counts and M, got {text!r}")
    return c, stages, cells


def initial_layers(stages: Sequence[int], config: EnvelopeConfig) -> Layers:
    """The EnvelopeNet ``C/n1-n2-.../M``: ``n_i`` full cells in stage ``i``."""
    return tuple(tuple(config.cell for _ in range(n)) for n in stages)


def _check_layers(layers: Layers, config: EnvelopeConfig) -> Layers:
    layers = tuple(tuple(tuple(layer) for layer in stage) for stage in layers)
    if not layers:
        raise ValueError("layers: expected at least one stage")
    for i, stage in enumerate(layers):
        if not stage:
            raise ValueError(f"layers[{i}]: expected at least one layer per stage")
        for j, layer in enumerate(stage):
            if not layer:
                raise ValueError(f"layers[{i}][{j}]: expected at least one block per layer")
            if any(op not in config.cell for op in layer) or len(set(layer)) != len(layer):
                raise ValueError(f"layers[{i}][{j}]: expected distinct blocks of the cell "
                                 f"{config.cell}, got {layer!r}")  # fmt: skip
            if list(layer) != sorted(layer, key=config.cell.index):
                raise ValueError(f"layers[{i}][{j}]: expected the cell's order {config.cell}, "
                                 f"got {layer!r}")  # fmt: skip
    return layers


def _block_op(op: str, filters: int, config: EnvelopeConfig) -> Block:
    k = int(op[0])
    first = config.order == "paper"
    if op.endswith("sep"):
        return SepConv(filters=filters, kernel=k, mid_norm_act=False, act_first=first)
    return Conv(filters=filters, kernel=k, act_first=first)


def _op_name(b: Block) -> str | None:
    if isinstance(b, SepConv) and b.stride == 1 and not b.mid_norm_act:
        return f"{b.kernel}x{b.kernel}sep"
    if type(b) is Conv and b.stride == 1 and b.groups == 1:
        return f"{b.kernel}x{b.kernel}"
    return None


def layer_widths(layers: Layers, config: EnvelopeConfig) -> list[list[int]]:
    """Channels per block of every layer (the same for each block of a layer)."""
    out = []
    for s, stage in enumerate(layers):
        w = config.channels * 2**s
        per = [max(w // (len(layer) if config.width == "layer" else config.m), 1) for layer in stage]
        out.append(per)
    return out


def envelope_spec(
    layers: Layers, config: EnvelopeConfig, input_shape: Sequence[int], num_classes: int
) -> Spec:
    """The spec of an EnvelopeNet with these layers.

    Stage ``i`` holds (for ``i > 0``) its widener, then one :class:`~fnnjax.arch.spec.Cell` per
    layer (single-op branches, concatenated), with a 1x1 conv before every layer but the first
    when ``config.dense_skips``. The head is global average pool -> dropout -> dense.
    """
    layers = _check_layers(layers, config)
    first = config.order == "paper"
    widths = layer_widths(layers, config)
    size = [-(-d // config.stem_stride) for d in input_shape[:2]]  # after the stem
    stages = []
    for s, stage in enumerate(layers):
        blocks: list[Block] = []
        if s > 0:
            prev = _layer_width(layers[s - 1][-1], widths[s - 1][-1])
            blocks.append(Cell(branches=((_widener_pool(size),),
                                         (Conv(filters=prev, kernel=3, stride=2, act_first=first),))))  # fmt: skip
            size = [-(-d // 2) for d in size]
        cells: list[int] = []  # block index of each layer's cell
        for j, layer in enumerate(stage):
            if config.dense_skips and j > 0:
                blocks.append(Conv(filters=config.channels * 2**s, kernel=1, act_first=first,
                                   skips=_dense_sources(s, cells), skip_merge="concat"))  # fmt: skip
            cells.append(len(blocks))
            blocks.append(Cell(branches=tuple((_block_op(op, widths[s][j], config),)
                                              for op in layer)))  # fmt: skip
        stages.append(Stage(blocks=tuple(blocks), name=f"stage{s}"))
    notation = envelope_notation_of(config.channels, layers, config.m)
    return Spec(
        input_shape=tuple(input_shape),
        num_classes=num_classes,
        stem=(Conv(filters=config.channels, kernel=3, stride=config.stem_stride, act_first=first),),
        stages=tuple(stages),
        head=Head(kind="dense", dropout=config.dropout),
        name=f"envelopenet {notation}",
    )


def _widener_pool(size: Sequence[int]) -> Pool:
    """The widener's max-pool: 2x2/s2 (the paper) on even sizes; on an odd size, where the
    widener's 3x3/s2 conv gives ``ceil(size / 2)``, a 3x3/s2 pool padded by 1, which gives the same
    (TensorFlow's ``SAME`` 2x2 pool pads one side instead)."""
    if all(d % 2 == 0 for d in size):
        return Pool(op="max", window=2, stride=2)
    return Pool(op="max", window=3, stride=2, padding=1)


def _dense_sources(s: int, cells: Sequence[int]) -> tuple[int, ...]:
    """Static concat skips of a dense transition: the stage's input (the stem's output, or the
    widener's, block 0) and every earlier cell but the last (the transition's own input)."""
    return (-1 if s == 0 else 0, *cells[:-1])


def _layer_width(layer: Sequence[str], per_block: int) -> int:
    return per_block * len(layer)


def envelope_notation_of(channels: int, layers: Layers, m: int) -> str:
    return f"{channels}/" + "-".join(str(len(stage)) for stage in layers) + f"/{m}"


def envelope_layers(spec: Spec, config: EnvelopeConfig) -> Layers:
    """The layers of an EnvelopeNet spec built by :func:`envelope_spec` with ``config``.

    Raises:
        ValueError: the spec is not such an EnvelopeNet (it is rebuilt from the layers read and
            compared).
    """
    layers = []
    for i, st in enumerate(spec.stages):
        stage = []
        for j, b in enumerate(st.blocks):
            if not isinstance(b, Cell) or (i > 0 and j == 0):
                continue  # wideners and dense transitions
            names = [_op_name(br[0]) if len(br) == 1 else None for br in b.branches]
            if None in names:
                raise ValueError(f"{block_name(i, j)}: expected an EnvelopeCell of single conv "
                                 "blocks (not an EnvelopeNet spec)")  # fmt: skip
            stage.append(tuple(names))
        layers.append(tuple(stage))
    try:
        rebuilt = envelope_spec(tuple(layers), config, spec.input_shape, spec.num_classes)
    except ValueError as e:
        raise ValueError(f"spec: not an EnvelopeNet of this configuration ({e})") from None
    if dataclasses.replace(rebuilt, name=spec.name) != spec:
        raise ValueError("spec: not an EnvelopeNet built with this EnvelopeConfig (channels, "
                         "cell, order, width, dense_skips, dropout and stem_stride must match)")  # fmt: skip
    return tuple(layers)


def envelope_notation(spec: Spec, config: EnvelopeConfig) -> str:
    """``C/n1-n2-.../M`` of an EnvelopeNet spec, e.g. ``128/15-6-4-4/6``."""
    return envelope_notation_of(config.channels, envelope_layers(spec, config), config.m)


def block_counts(layers: Layers) -> list[list[int]]:
    """Blocks per layer, per stage (Figure 4's width in blocks)."""
    return [[len(layer) for layer in stage] for stage in layers]


def block_modules(layers: Layers, config: EnvelopeConfig) -> dict[str, str]:
    """``{block key: statistics path}`` for every block: key ``"s{i}/l{j}/{op}"`` (stage, layer,
    op name), path the module whose output is the block's output (``s{i}b{n}/br{k}_0`` for a
    conv, ``.../pw`` for a separable conv)."""
    out = {}
    for i, stage in enumerate(layers):
        n = 1 if i > 0 else 0
        for j, layer in enumerate(stage):
            if config.dense_skips and j > 0:
                n += 1
            for k, op in enumerate(layer):
                path = f"{block_name(i, n)}/br{k}_0" + ("/pw" if op.endswith("sep") else "")
                out[block_key(i, j, op)] = path
            n += 1
    return out


def block_key(stage: int, layer: int, op: str) -> str:
    """The key of a block in statistics and construction records: ``"s{stage}/l{layer}/{op}"``."""
    return f"s{stage}/l{layer}/{op}"
