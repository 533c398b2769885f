"""CIFAR-sized model zoo as specs: VGG-16/19, ResNet-50, Inception (GoogLeNet), MobileNet v1.

The architectures are the widely used CIFAR variants of kuangliu/pytorch-cifar, whose parameter
counts (10 classes) are the templates paper's base column: VGG-19 20.04M, ResNet-50 23.52M,
GoogLeNet 6.16M, MobileNet 3.22M (BN scale/bias counted, running statistics not).

* VGG: 3x3 conv (bias) -> BN -> ReLU, max-pool after each group, head = one Dense on the
  flattened 1x1x512 features (``vgg16`` defaults to the FNN paper's Table 2 head instead:
  Dropout 0.5 -> Dense 512 -> BN -> ReLU -> Dropout 0.5 -> Dense classes). All 16 (13) convs are
  template layers; VGG-19 has F = 5504 filters.
* ResNet-50: 3x3 stem conv (64), four *tied* stages of bottlenecks (3, 4, 6, 3 blocks; widths
  64..512, expansion 4, stride on the 3x3 conv, projection shortcut where shapes change), global
  average pool, Dense. Template layers = the 4 stages ("filters per set of residual blocks").
* Inception: 3x3 stem conv (192), nine Inception modules (the 5x5 branch is two 3x3 convs), max
  pools after modules 3b and 4e, global average pool, Dense. Each module is one template layer.
* MobileNet v1: 3x3 stem conv (32), thirteen depthwise-separable blocks (64 .. 1024), global
  average pool, Dense. Each separable block is one template layer.

Stems are never template layers. Inputs smaller than 32x32 with an even margin (28x28x1 MNIST /
Fashion-MNIST) are zero padded to 32x32 by a ``Pad`` stem block, so every network has exactly its
CIFAR shapes (only the first conv's input channels change); other sizes are used as they are.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from fnnjax.arch.spec import (
    Block,
    Cell,
    Conv,
    FnnHead,
    Head,
    Pad,
    Pool,
    Residual,
    SepConv,
    Spec,
    Stage,
)

__all__ = [
    "MODEL_NAMES",
    "bottleneck",
    "inception_module",
    "inception_spec",
    "mobilenet_spec",
    "resnet_spec",
    "vgg_spec",
    "with_head",
    "zoo_spec",
]

VGG_CFG = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"),
}  # fmt: skip

# (n1x1, n3x3red, n3x3, n5x5red, n5x5, pool_planes) per GoogLeNet module, kuangliu order.
INCEPTION_CFG = (
    ("a3", (64, 96, 128, 16, 32, 32)),
    ("b3", (128, 128, 192, 32, 96, 64)),
    "M",
    ("a4", (192, 96, 208, 16, 48, 64)),
    ("b4", (160, 112, 224, 24, 64, 64)),
    ("c4", (128, 128, 256, 24, 64, 64)),
    ("d4", (112, 144, 288, 32, 64, 64)),
    ("e4", (256, 160, 320, 32, 128, 128)),
    "M",
    ("a5", (256, 160, 320, 32, 128, 128)),
    ("b5", (384, 192, 384, 48, 128, 128)),
)

MOBILENET_CFG = (
    64,
    (128, 2),
    128,
    (256, 2),
    256,
    (512, 2),
    512,
    512,
    512,
    512,
    512,
    (1024, 2),
    1024,
)

_LINEAR = Head(kind="linear", pool="avg")
_FLATTEN_LINEAR = Head(kind="linear", pool="flatten")

MODEL_NAMES = ("vgg16", "vgg19", "resnet50", "inception", "mobilenet")


def _stem_pad(input_shape: Sequence[int]) -> tuple[Block, ...]:
    h, w = input_shape[0], input_shape[1]
    if h == w and h < 32 and (32 - h) % 2 == 0:
        return (Pad(amount=(32 - h) // 2),)
    return ()


def _head(
    kind: str | None, default: str, head_options: Mapping[str, Any] | None, pool: str
) -> Head:
    kind = kind or default
    if head_options and kind in ("linear", "dense"):
        raise ValueError(f"head_options: only an 'fnn' head takes options, this head is {kind!r}")
    if kind == "linear":
        return Head(kind="linear", pool=pool)
    if kind == "dense":
        return Head(kind="dense", pool=pool, hidden=(512,), dropout=0.5)
    if kind == "fnn":
        options = dict(head_options or {})
        names = {f.name for f in dataclasses.fields(FnnHead)}
        unknown = sorted(set(options) - names)
        if unknown:
            raise ValueError(
                f"head_options: {', '.join(unknown)} not options of an FNN head; expected some of "
                f"{', '.join(sorted(names))}"
            )
        return Head(kind="fnn", pool=pool, fnn=FnnHead(**options))
    if head_options:
        raise ValueError(f"head_options: only an 'fnn' head takes options, this head is {kind!r}")
    raise ValueError(f"head: expected one of 'linear', 'dense', 'fnn', got {kind!r}")


def with_head(spec: Spec, kind: str, head_options: Mapping[str, Any] | None = None) -> Spec:
    """``spec`` with another classifier after its own pooling (``spec.head.pool`` is kept): the
    zoo's heads, ``"linear"``, ``"dense"`` (one hidden layer of 512, dropout 0.5) or ``"fnn"`` (an
    FNN head with :class:`~fnnjax.arch.spec.FnnHead` fields ``head_options``), named ``"<spec's
    name> <kind> head"``.

    Raises:
        ValueError: an unknown kind or head option (the message names it).
    """
    head = _head(kind, kind, head_options, spec.head.pool)
    return spec.replace(head=head, name=f"{spec.name} {kind} head".strip())


def vgg_spec(
    cfg: Sequence[int | str],
    num_classes: int = 10,
    input_shape: Sequence[int] = (32, 32, 3),
    *,
    head: Head = _FLATTEN_LINEAR,
    name: str = "vgg",
) -> Spec:
    """VGG from a kuangliu-style config (ints = 3x3 convs, ``"M"`` = 2x2 max pool ending a stage)."""
    stages, blocks = [], []
    for item in cfg:
        if item == "M":
            blocks.append(Pool(op="max", window=2, stride=2))
            stages.append(Stage(blocks=tuple(blocks)))
            blocks = []
        else:
            blocks.append(Conv(filters=int(item), kernel=3, bias=True))
    if blocks:
        stages.append(Stage(blocks=tuple(blocks)))
    return Spec(
        name=name,
        input_shape=tuple(input_shape),
        num_classes=num_classes,
        stem=_stem_pad(input_shape),
        stages=tuple(stages),
        head=head,
    )


def bottleneck(planes: int, stride: int = 1, expansion: int = 4) -> Residual:
    """ResNet bottleneck: 1x1 planes -> 3x3 planes (stride) -> 1x1 expansion*planes, + shortcut."""
    return Residual(
        body=(
            Conv(filters=planes, kernel=1),
            Conv(filters=planes, kernel=3, stride=stride),
            Conv(filters=expansion * planes, kernel=1, act=None),
        )
    )


def resnet_spec(
    depths: Sequence[int] = (3, 4, 6, 3),
    widths: Sequence[int] = (64, 128, 256, 512),
    num_classes: int = 10,
    input_shape: Sequence[int] = (32, 32, 3),
    *,
    head: Head = _LINEAR,
    name: str = "resnet50",
) -> Spec:
    """CIFAR bottleneck ResNet (3x3 stride-1 stem, stage i > 0 starts with stride 2)."""
    stages = []
    for i, (n, w) in enumerate(zip(depths, widths, strict=True)):
        blocks = tuple(bottleneck(w, 2 if (i > 0 and j == 0) else 1) for j in range(n))
        stages.append(Stage(blocks=blocks, tied=True, name=f"layer{i + 1}"))
    stem = _stem_pad(input_shape) + (Conv(filters=64, kernel=3),)
    return Spec(
        name=name,
        input_shape=tuple(input_shape),
        num_classes=num_classes,
        stem=stem,
        stages=tuple(stages),
        head=head,
    )


def inception_module(n1: int, n3r: int, n3: int, n5r: int, n5: int, pool: int) -> Cell:
    """GoogLeNet module (kuangliu): 1x1 | 1x1>3x3 | 1x1>3x3>3x3 | maxpool3>1x1, concatenated."""
    return Cell(
        branches=(
            (Conv(filters=n1, kernel=1, bias=True),),
            (Conv(filters=n3r, kernel=1, bias=True), Conv(filters=n3, kernel=3, bias=True)),
            (
                Conv(filters=n5r, kernel=1, bias=True),
                Conv(filters=n5, kernel=3, bias=True),
                Conv(filters=n5, kernel=3, bias=True),
            ),
            (
                Pool(op="max", window=3, stride=1, padding=1),
                Conv(filters=pool, kernel=1, bias=True),
            ),
        )
    )


def inception_spec(
    num_classes: int = 10,
    input_shape: Sequence[int] = (32, 32, 3),
    *,
    head: Head = _LINEAR,
    name: str = "inception",
) -> Spec:
    """GoogLeNet for CIFAR (kuangliu)."""
    stages, blocks = [], []
    for item in INCEPTION_CFG:
        if item == "M":
            blocks.append(Pool(op="max", window=3, stride=2, padding=1))
            stages.append(Stage(blocks=tuple(blocks)))
            blocks = []
        else:
            blocks.append(inception_module(*item[1]))
    stages.append(Stage(blocks=tuple(blocks)))
    stem = _stem_pad(input_shape) + (Conv(filters=192, kernel=3, bias=True),)
    return Spec(
        name=name,
        input_shape=tuple(input_shape),
        num_classes=num_classes,
        stem=stem,
        stages=tuple(stages),
        head=head,
    )


def mobilenet_spec(
    num_classes: int = 10,
    input_shape: Sequence[int] = (32, 32, 3),
    *,
    head: Head = _LINEAR,
    name: str = "mobilenet",
) -> Spec:
    """MobileNet v1 for CIFAR (kuangliu): stride-1 stem, stages split at stride-2 blocks."""
    stages, blocks = [], []
    for item in MOBILENET_CFG:
        out, stride = (item, 1) if isinstance(item, int) else item
        if stride != 1 and blocks:
            stages.append(Stage(blocks=tuple(blocks)))
            blocks = []
        blocks.append(SepConv(filters=out, kernel=3, stride=stride))
    stages.append(Stage(blocks=tuple(blocks)))
    stem = _stem_pad(input_shape) + (Conv(filters=32, kernel=3),)
    return Spec(
        name=name,
        input_shape=tuple(input_shape),
        num_classes=num_classes,
        stem=stem,
        stages=tuple(stages),
        head=head,
    )


def _base_spec(
    name: str,
    num_classes: int,
    input_shape: Sequence[int],
    head: str | None,
    head_options: Mapping[str, Any] | None,
) -> Spec:
    if name in ("vgg16", "vgg19"):
        h = _head(head, "dense" if name == "vgg16" else "linear", head_options, "flatten")
        return vgg_spec(VGG_CFG[name], num_classes, input_shape, head=h, name=name)
    h = _head(head, "linear", head_options, "avg")
    if name == "resnet50":
        return resnet_spec(num_classes=num_classes, input_shape=input_shape, head=h)
    if name == "inception":
        return inception_spec(num_classes, input_shape, head=h)
    if name == "mobilenet":
        return mobilenet_spec(num_classes, input_shape, head=h)
    raise ValueError(f"name: expected one of {', '.join(MODEL_NAMES)}, got {name!r}")


def zoo_spec(
    name: str,
    num_classes: int = 10,
    input_shape: Sequence[int] = (32, 32, 3),
    *,
    head: str | None = None,
    head_options: Mapping[str, Any] | None = None,
) -> Spec:
    """The zoo spec ``name`` at its base filter counts.

    Templates and width multipliers act on it above this package (``fnnjax.models.build_spec``
    composes the three; :mod:`fnnjax.arch` never imports :mod:`fnnjax.construct`).

    Args:
        name: one of :data:`MODEL_NAMES`.
        num_classes: logits.
        input_shape: ``(h, w, c)``; 28x28 inputs are padded to 32x32 in the stem.
        head: ``"linear"``, ``"dense"`` or ``"fnn"`` (default: ``"dense"`` for vgg16, else linear).
        head_options: fields of the FNN head (:class:`~fnnjax.arch.spec.FnnHead`).

    Raises:
        ValueError: an unknown name, head or head option (the message names it).
    """
    return _base_spec(name, num_classes, tuple(input_shape), head, head_options)
