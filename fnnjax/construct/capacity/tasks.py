"""The draft's tasks (sections 4.2 and 4.3) and the networks they start from. The data live in
:mod:`fnnjax.train.tasks` (so the trainer loads them by name: ``sines1d-c3``); they are
re-exported here.

* :func:`sines_dataset`: function regression on ``[-1, 1]^dim`` (``dim`` 1 or 2) with a target of
  rising complexity ``c``: ``f(x) = sqrt(2 / c) * sum_{k=1..c} sin(pi * k * <u_k, x> + phi_k)``,
  a sum of ``c`` sines of frequencies ``1..c`` along keyed random unit directions ``u_k`` (in
  1-D, ``u_k = +-1``) with keyed phases. Each term has variance about 1/2, so ``f`` has variance
  about 1 at every ``c``: what grows with ``c`` is the number of oscillations a network must fit,
  not the target's scale. Complexity is the one knob the Spearman analysis varies.
* :func:`as_vectors`: an image dataset with every image flattened to a ``(1, 1, h*w*c)`` vector,
  the input of a residual MLP (the draft's MNIST classifier).
* :func:`residual_mlp_spec` and :func:`residual_conv_spec`: a stem, ``blocks`` residual blocks
  of ``width`` channels (body: ``hidden`` units, then back to ``width`` with no activation) and
  a linear head: the networks the capacity controller resizes (each body's hidden unit is
  resizable; the stem and the residual stream are not, their width is added to the shortcut).
"""

from __future__ import annotations

from fnnjax.checks import check_int
from fnnjax.train.tasks import as_vectors, sines_dataset

__all__ = ["as_vectors", "residual_conv_spec", "residual_mlp_spec", "sines_dataset"]


def residual_mlp_spec(input_shape, outputs: int, *, width: int = 32, hidden: int = 16,
                      blocks: int = 2):  # fmt: skip
    """``Dense(width, relu)`` stem, ``blocks`` x ``Residual(Dense(hidden, relu) ->
    Dense(width))`` (ReLU after the add), linear head to ``outputs``."""
    from fnnjax.arch import Dense, Head, Residual, Spec, Stage  # noqa: PLC0415

    for name, v in (("outputs", outputs), ("width", width), ("hidden", hidden)):
        check_int(name, v)
    check_int("blocks", blocks, 0)
    body = (Dense(filters=hidden), Dense(filters=width, act=None))
    return Spec(input_shape=tuple(input_shape), num_classes=outputs, stem=(Dense(filters=width),),
                stages=(Stage(blocks=tuple(Residual(body=body) for _ in range(blocks))),),
                head=Head())  # fmt: skip


def residual_conv_spec(input_shape, outputs: int, *, width: int = 16, hidden: int = 16,
                       blocks: int = 2, stages: int = 2):  # fmt: skip
    """A small ResNet: ``Conv(width)`` stem, then ``stages`` stages of ``blocks`` basic blocks
    (3x3 conv-BN-ReLU to ``hidden``, 3x3 conv-BN back to the stage width); every stage after the
    first starts with a strided block doubling the width (projection shortcut); global average
    pool and a linear head."""
    from fnnjax.arch import Conv, Head, Residual, Spec, Stage  # noqa: PLC0415

    for name, v in (("outputs", outputs), ("width", width), ("hidden", hidden),
                    ("blocks", blocks), ("stages", stages)):  # fmt: skip
        check_int(name, v)
    out_stages = []
    for i in range(stages):
        w, h = width * 2**i, hidden * 2**i
        blks = tuple(Residual(body=(Conv(filters=h, stride=2 if i and not j else 1),
                                    Conv(filters=w, act=None)))
                     for j in range(blocks))  # fmt: skip
        out_stages.append(Stage(blocks=blks))
    return Spec(input_shape=tuple(input_shape), num_classes=outputs, stem=(Conv(filters=width),),
                stages=tuple(out_stages), head=Head())  # fmt: skip
