"""Filter redistribution templates (Izquierdo-Cordova & Mayol-Cuevas, "Filter redistribution
templates for iteration-less convolutional model reduction", section 3) as pure spec transforms.

A network's template layers carry filter counts ``f_1..f_D`` with total ``F = sum f_l`` and minimum
``f_min`` (:func:`fnnjax.construct.layers.layer_filters`: a ResNet stage of bottlenecks, an Inception
module, a separable block or a plain conv each count as one layer; stems and the classifier are
fixed). A template computes new real-valued counts ``f'_l`` (``l = 1..D``):

* ``uniform``: ``f'_l = F / D``.
* ``reverse``: ``f'_l = f_{D - l + 1}``.
* ``quadratic``: ``f'_l = a l^2 + b l + c`` from the 3x3 system (``numpy.linalg.solve``)

  i)   ``(D^3/3 + D^2/2 + D/6) a + (D^2/2 + D/2) b + D c = F``  (sum of all layers is F),
  ii)  ``f'(D/2) = f_min``                                       (value at the middle layer),
  iii) ``(D^2 - 1) a + (D - 1) b = 0``                           (``f'_1 = f'_D``).

  Row ii is ``(D^2/4) a + (D/2) b + c = f_min``, the exact value of the parabola at ``l = D/2``.
  The paper prints ``(D^2/2) a`` there, which contradicts its own text and Fig. 2 (with it, VGG-19
  gets a *maximum* of 481 in the middle and 116 at the ends instead of a minimum of 64 in the middle
  and 811 at the ends); ``vertex="printed"`` reproduces the printed coefficient.
* ``negative_quadratic``: the same parabola with rows ii) ``a + b + c = f_min`` and
  iii) ``D^2 a + D b + c = f_min`` (both end layers get ``f_min``, the maximum is in the middle).

Rounding rule: the real-valued ``f'`` is clamped to at least 1 and rounded by largest remainder
(floor every count, then give +1 to the largest fractional parts; ties go to the outermost layers,
pairing ``l`` with ``D + 1 - l`` so symmetric templates stay symmetric when possible), so that
``sum f' == F`` exactly whenever no count had to be clamped (clamping only adds filters: a
quadratic whose vertex value ``f_min`` is tiny can dip below 1 in the middle). ``uniform`` gives
``F // D`` or ``F // D + 1`` per layer.

A layer's count is written back by :func:`fnnjax.construct.layers.with_layer_filters`: a bottleneck stage
sets its width (1x1 and 3x3 convs) and scales its 4x expansion conv with it; an Inception module's
count is its concatenated output width, split over its four branches in proportion to their current
widths (largest remainder, so the module outputs exactly the requested count) with the branch's
inner 1x1 reductions scaled by the branch's ratio (round to nearest, at least 1).

:func:`width_multiplier` then scales every template layer and the stem by ``m`` (round to nearest,
at least 1), as the paper does to compare templates under equal resources.

Parameters against the paper's Table 2 (millions, CIFAR-10; ours from
:func:`fnnjax.arch.shapes.infer_layers`, pinned in ``tests/construct/test_construct_templates.py``)::

    model       base         reverse      uniform      quadratic    neg-quadratic
    VGG-19      20.0 / 20.04 20.0 / 20.05 16.0 / 16.00 15.8 / 19.42 20.0 / 19.99
    ResNet-50   23.5 / 23.52 23.1 / 21.97 12.9 / 18.34 19.0 / 18.27 33.0 / 33.03
    Inception    6.2 /  6.17  6.7 /  7.51  6.9 /  6.20  7.2 /  7.62  3.2 /  7.00
    MobileNet    3.2 /  3.22  2.2 /  3.25  2.9 /  2.61  3.2 /  3.06  3.6 /  3.35

Eleven of twenty agree within 5%. The paper does not state its per-model layer vectors or code;
the misses are not explained by any single alternative reading we tried (counting stems as
layers, one layer per bottleneck instead of per stage, a module's count as its widest branch, the
printed vertex coefficient). Concretely: VGG-19 quadratic is fully determined by the three
equations (811 filters at both ends, 64 at layers 8-9: 19.4M; the printed coefficient gives
18.9M), so the paper's 15.8M, below its own uniform 16.0M, needs a different curve. A pure
reversal keeps every product ``c_l * c_{l+1}`` of consecutive widths, so it cannot cut MobileNet
(almost all pointwise ``c_{l-1} * c_l`` weights) from 3.2M to 2.2M (ours: +1%). Inception's
negative quadratic keeps F = 5488 (256, 521, 711, 825, 862, ..., 256 per module), which cannot
halve the model to 3.2M. ResNet-50 uniform (width 240, i.e. 960 output channels, in all four
stages) gives 18.3M, not 12.9M.

Example::

    spec = build_spec("vgg19", 10, (32, 32, 3))
    layer_filters(apply_template(spec, "uniform"))  # (344,) * 16
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fnnjax.arch.spec import Spec
from fnnjax.checks import check_choice, check_number
from fnnjax.construct.layers import layer_filters, scale_stem, with_layer_filters

__all__ = [
    "TEMPLATE_NAMES",
    "apply_template",
    "round_preserving_total",
    "template_filters",
    "template_values",
    "width_multiplier",
]

TEMPLATE_NAMES = ("base", "reverse", "uniform", "quadratic", "negative_quadratic")
_ALIASES = {
    "reverse_base": "reverse",
    "neg_quadratic": "negative_quadratic",
    "negquad": "negative_quadratic",
    "none": "base",
}


def _normalize(name: str) -> str:
    if not isinstance(name, str):
        raise ValueError(f"name: expected one of {', '.join(TEMPLATE_NAMES)}, got {name!r}")
    key = name.strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in TEMPLATE_NAMES:
        raise ValueError(f"name: expected one of {', '.join(TEMPLATE_NAMES)}, got {name!r}")
    return key


def _sum_row(d: int) -> list[float]:
    """Coefficients of (a, b, c) in ``sum_{l=1}^{D} (a l^2 + b l + c)``."""
    return [d**3 / 3 + d**2 / 2 + d / 6, d**2 / 2 + d / 2, float(d)]


def template_values(filters: Sequence[int], name: str, *, vertex: str = "exact") -> np.ndarray:
    """Real-valued new counts ``f'_1..f'_D`` (float64) of template ``name`` (before rounding).

    Args:
        filters: the base counts ``f_1..f_D`` (positive ints).
        name: one of :data:`TEMPLATE_NAMES` (``-``/``_`` and case are ignored).
        vertex: ``"exact"`` or ``"printed"`` coefficient of ``a`` in the quadratic template's row ii
            (see module docstring).

    Raises:
        ValueError: unknown name / vertex, empty or non-positive filters, or a quadratic template
            with fewer than 3 layers (its 3x3 system is singular).
    """
    key = _normalize(name)
    check_choice("vertex", vertex, ("exact", "printed"))
    f = np.asarray(filters, dtype=np.float64)
    if f.ndim != 1 or f.size == 0 or np.any(f < 1):
        raise ValueError(
            f"filters: expected a non-empty sequence of positive ints, got {filters!r}"
        )
    d = f.size
    total, fmin = float(f.sum()), float(f.min())
    if key == "base":
        return f.copy()
    if key == "reverse":
        return f[::-1].copy()
    if key == "uniform":
        return np.full(d, total / d)
    if d < 3:
        raise ValueError(f"filters: the {key} template needs at least 3 layers, got {d}")
    if key == "quadratic":
        a_coef = d**2 / 4 if vertex == "exact" else d**2 / 2
        rows = [_sum_row(d), [a_coef, d / 2, 1.0], [d**2 - 1.0, d - 1.0, 0.0]]
        rhs = [total, fmin, 0.0]
    else:
        rows = [_sum_row(d), [1.0, 1.0, 1.0], [float(d**2), float(d), 1.0]]
        rhs = [total, fmin, fmin]
    a, b, c = np.linalg.solve(np.asarray(rows), np.asarray(rhs))
    l = np.arange(1, d + 1, dtype=np.float64)  # noqa: E741 - the paper's layer index
    return a * l * l + b * l + c


def round_preserving_total(values: Sequence[float]) -> tuple[int, ...]:
    """Clamps to >= 1, then rounds by largest remainder keeping the clamped total.

    The result sums to ``round(sum(max(v, 1)))``, i.e. to ``F`` when nothing is clamped. Ties in
    the fractional parts go to the outermost layers first (layer ``l`` and ``D + 1 - l`` together),
    so mirror-symmetric templates stay symmetric whenever the leftover count allows it.
    """
    v = np.maximum(np.asarray(values, dtype=np.float64), 1.0)
    d = v.size
    target = int(round(float(v.sum())))
    base = np.floor(v + 1e-9).astype(np.int64)
    left = target - int(base.sum())
    if left > 0:
        frac = np.round(v - base, 9)
        order = sorted(range(d), key=lambda i: (-frac[i], min(i, d - 1 - i), i))
        for i in order[:left]:
            base[i] += 1
    return tuple(int(x) for x in base)


def template_filters(
    filters: Sequence[int], name: str, *, vertex: str = "exact"
) -> tuple[int, ...]:
    """Integer counts of template ``name`` (see :func:`template_values` and the rounding rule)."""
    return round_preserving_total(template_values(filters, name, vertex=vertex))


def apply_template(spec: Spec, name: str, *, vertex: str = "exact") -> Spec:
    """``spec`` with its template-layer filters redistributed by template ``name``, named
    ``"<spec's name> <template>"`` (``"base"`` leaves the name).

    Raises:
        ValueError: unknown ``name`` (message names the argument and lists the templates), or a
            spec without template layers.
    """
    filters = layer_filters(spec)
    if not filters:
        raise ValueError(f"spec {spec.name!r} has no template layers (stage blocks with filters: "
                         "Conv, SepConv, Cell or Residual; the stem, the head and transitions are "
                         "not templated), so there is nothing to redistribute")  # fmt: skip
    new = with_layer_filters(spec, template_filters(filters, name, vertex=vertex))
    label = _normalize(name)
    return new if label == "base" else new.replace(name=f"{spec.name} {label}".strip())


def width_multiplier(spec: Spec, m: float, *, include_stem: bool = True) -> Spec:
    """Scales every template layer (and the stem's convs) by ``m``: ``max(1, round(m * f))``;
    named ``"<spec's name> x<m>"`` (``m = 1`` leaves the name).

    Raises:
        ValueError: ``m`` is not a positive finite number.
    """
    check_number("width multiplier", m, above=0)
    m = float(m)
    new = tuple(max(1, int(round(m * f))) for f in layer_filters(spec))
    scaled = with_layer_filters(spec, new)
    scaled = scale_stem(scaled, m) if include_stem else scaled
    return scaled if m == 1.0 else scaled.replace(name=f"{spec.name} x{m:g}".strip())
