"""Dynamic network capacity (the thesis draft ../shared/papers/dynamic-capacity-thesis-draft.md):
residual networks that grow and shrink while they train. Built so far: the saliencies that
decide deletions and growth (:mod:`~fnnjax.construct.capacity.saliency`: Optimal Brain Damage
with a Hutchinson Hessian diagonal, magnitude and first-order Taylor baselines, per unit and
per block). The capacity operations build on :mod:`fnnjax.arch.grow`.
"""

from fnnjax.construct.capacity.saliency import (
    block_saliency,
    hutchinson_diagonal,
    magnitude_saliency,
    obd_saliency,
    taylor_saliency,
    unit_saliency,
)

__all__ = [
    "block_saliency",
    "hutchinson_diagonal",
    "magnitude_saliency",
    "obd_saliency",
    "taylor_saliency",
    "unit_saliency",
]
