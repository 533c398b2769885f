"""The connection rule and ``Step`` of the FNN paper (section 3.2, eq. 1-5), two ways.

For targets ``v_1..v_N`` (input embeddings ``I``, ``[N, d]``) and sources ``u_1..u_M`` (output
embeddings ``O``, ``[M, d]``) carrying values ``Y`` (``[batch, M]``)::

    W = Ñ(I O^T)                      (eq. 1, 3: each row normalized by the function 𝒩)
    Step(V, U, Y) = F̃(Y W^T)          (eq. 4, 5; batched, so rows of Y are examples)

with ``N_l2(x)_i = x_i / (sum_j x_j^2 + eps)`` (eq. 2; note: the *sum of squares*, not its square
root; ``eps`` is ours, see :data:`~fnnjax.floating.neurons.L2_EPS`) or ``N = softmax``.

* :func:`materialized_step` builds the ``[N, M]`` matrix ``W`` exactly as the paper does; it is the
  reference.
* :func:`factored_step` never forms ``W``:

  - ``l2``: ``sum_j (I_v^T O_j)^2 = I_v^T (O^T O) I_v``, so every row's denominator comes from the
    ``[d, d]`` Gram matrix ``G = O^T O``, and ``Y W^T = ((Y O) I^T) / den``: cost
    ``O((N + M) d^2 + batch (N + M) d)``, memory ``O(d (N + M) + batch (N + M))``. Dividing ``I`` by
    ``den`` first is exactly section 3.4's inference folding (:mod:`fnnjax.floating.folding`).
    Two custom VJPs use the symmetry of ``G`` (:func:`gram`, :func:`symmetric_quadratic_forms`):
    they save a third of the ``[N, d] x [d, d]`` products autodiff would spend on the
    denominators' gradients. When there are few targets (e.g. 10 output neurons, ``N <= d``),
    :func:`folded_product` associates ``Y (O I^T)`` instead, which is cheaper and still small.
  - ``softmax``: this is dot-product attention with queries ``I``, keys ``O``, values ``Y^T`` and
    scale 1. We stream over the sources in chunks of ``chunk_size``: one ``lax.scan`` computes each
    target's log-sum-exp with a running ``logaddexp`` (it depends on parameters only, so a forward
    pass computes it once and reuses it in every iteration), a second accumulates
    ``exp(I O_c^T - lse) Y_c^T`` chunk by chunk. Memory is ``O(N * chunk)`` per chunk; the chunk
    body is rematerialized (``jax.checkpoint``) so the backward pass does not store the ``[N, M]``
    probabilities either. ``jax.nn.dot_product_attention`` computes the same thing (the tests
    check it) but needs the value width (``batch``) equal to the key width (``d``), i.e. padding,
    and its XLA implementation materializes the ``[N, M]`` logits on CPU, so it is not used here.

Floating-point notes: the Gram form can round a true 0 to a tiny negative number, so the quadratic
form is clamped at 0 before ``eps`` is added. Padded source slots of a last partial chunk get logit
``-inf`` (weight exactly 0), never ``0 * inf``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from fnnjax.errors import ConfigError
from fnnjax.floating.neurons import DEFAULT_CHUNK_SIZE, L2_EPS, NORMALIZATIONS, transform

__all__ = [
    "ChunkedSources",
    "chunk_sources",
    "connection_weights",
    "factored_aggregate",
    "factored_step",
    "folded_product",
    "gram",
    "iterate",
    "l2_denominators",
    "l2_fold",
    "l2_normalize_rows",
    "materialized_aggregate",
    "materialized_step",
    "normalize_rows",
    "similarity",
    "softmax_aggregate",
    "softmax_lse",
    "symmetric_quadratic_forms",
]


def _check_normalization(normalization: str) -> None:
    if normalization not in NORMALIZATIONS:
        raise ConfigError(
            f"normalization must be one of {', '.join(map(repr, NORMALIZATIONS))}, "
            f"got {normalization!r}"
        )


def similarity(I: jax.Array, O: jax.Array) -> jax.Array:  # noqa: E741
    """``I O^T``: ``[N, d] x [M, d] -> [N, M]``, entry ``(v, u) = I_v^T O_u`` (eq. 1)."""
    return I @ O.T


def l2_normalize_rows(s: jax.Array, eps: float = L2_EPS) -> jax.Array:
    """Eq. 2 on every row: ``s_vu / (sum_u s_vu^2 + eps)``. ``[..., M] -> [..., M]``."""
    return s / (jnp.sum(s * s, axis=-1, keepdims=True) + eps)


def normalize_rows(s: jax.Array, normalization: str = "l2", *, eps: float = L2_EPS) -> jax.Array:
    """Ñ of eq. 3: normalizes each row of ``s`` (``[..., M]``) by eq. 2 or by softmax."""
    _check_normalization(normalization)
    if normalization == "l2":
        return l2_normalize_rows(s, eps)
    return jax.nn.softmax(s, axis=-1)


def connection_weights(
    I: jax.Array,  # noqa: E741
    O: jax.Array,  # noqa: E741
    normalization: str = "l2",
    *,
    eps: float = L2_EPS,
) -> jax.Array:
    """The weight matrix ``W = Ñ(I O^T)`` (eq. 3): ``[N, d], [M, d] -> [N, M]``."""
    return normalize_rows(similarity(I, O), normalization, eps=eps)


def materialized_aggregate(
    I: jax.Array,  # noqa: E741
    O: jax.Array,  # noqa: E741
    y: jax.Array,
    normalization: str = "l2",
    *,
    eps: float = L2_EPS,
) -> jax.Array:
    """``Y W^T`` with ``W`` built explicitly. ``y: [..., M] -> [..., N]``."""
    return y @ connection_weights(I, O, normalization, eps=eps).T


def materialized_step(
    targets: dict[str, jax.Array],
    source_O: jax.Array,
    y: jax.Array,
    *,
    normalization: str = "l2",
    activation: str = "relu",
    eps: float = L2_EPS,
) -> jax.Array:
    """``Step(V, U, Y)`` of eq. 5, building ``W`` as the paper does (the reference path).

    Args:
        targets: the neurons ``V``: ``{"I": [N, d], "a": [N], "b": [N]}`` (other keys ignored).
        source_O: the sources' output embeddings ``[M, d]``.
        y: the sources' values ``[..., M]`` (``[batch, M]``).
        normalization: ``"l2"`` (eq. 2) or ``"softmax"``.
        activation: ``"relu"`` (the paper's F) or ``"identity"``.
        eps: l2 denominator epsilon.

    Returns:
        ``[..., N]`` new values of the targets.
    """
    z = materialized_aggregate(targets["I"], source_O, y, normalization, eps=eps)
    return transform(targets, z, activation)


def iterate(fn: Callable[[jax.Array], jax.Array], y: jax.Array, times: int) -> jax.Array:
    """``fn`` applied ``times`` (static) times in one ``lax.scan``: jit-, grad- and vmap-friendly,
    and the loop body is traced once whatever ``times`` is."""
    if times <= 0:
        return y
    y, _ = jax.lax.scan(lambda carry, _: (fn(carry), None), y, None, length=times)
    return y


# ----------------------------------------------------------------------------------------- l2
@jax.custom_vjp
def gram(O: jax.Array) -> jax.Array:  # noqa: E741
    """``O^T O``: ``[M, d] -> [d, d]``.

    Custom VJP: the cotangent is ``O (dG + dG^T)``, one ``[M, d] x [d, d]`` product where
    autodiff of ``O.T @ O`` spends two.
    """
    return O.T @ O


def _gram_fwd(O: jax.Array) -> tuple[jax.Array, jax.Array]:  # noqa: E741
    return O.T @ O, O


def _gram_bwd(O: jax.Array, dG: jax.Array) -> tuple[jax.Array]:  # noqa: E741
    return (O @ (dG + dG.T),)


gram.defvjp(_gram_fwd, _gram_bwd)


@jax.custom_vjp
def symmetric_quadratic_forms(I: jax.Array, G: jax.Array) -> jax.Array:  # noqa: E741
    """``I_v^T G I_v`` for every row ``v`` of ``I`` (``[N, d]``), for a *symmetric* ``G`` (``[d, d]``).

    Custom VJP using the symmetry: ``d/dI_v = 2 g_v (I G)_v`` reuses the forward product ``I G``
    (autodiff would spend a second ``[N, d] x [d, d]`` product), and ``dG = I^T diag(g) I``.
    """
    return jnp.sum((I @ G) * I, axis=-1)


def _quad_fwd(I: jax.Array, G: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:  # noqa: E741
    IG = I @ G
    return jnp.sum(IG * I, axis=-1), (I, IG)


def _quad_bwd(res: tuple[jax.Array, jax.Array], g: jax.Array) -> tuple[jax.Array, jax.Array]:
    I, IG = res  # noqa: E741
    return 2.0 * g[:, None] * IG, I.T @ (g[:, None] * I)


symmetric_quadratic_forms.defvjp(_quad_fwd, _quad_bwd)


def l2_denominators(I: jax.Array, G: jax.Array, eps: float = L2_EPS) -> jax.Array:  # noqa: E741
    """Eq. 2's denominators without ``W``: ``sum_u (I_v^T O_u)^2 + eps = I_v^T G I_v + eps``.

    Args:
        I: ``[N, d]`` target input embeddings.
        G: ``[d, d]`` Gram matrix ``O^T O`` of the sources (a sum of Gram matrices for a union of
            source groups); must be symmetric (the gradient assumes it).
        eps: added after clamping the quadratic form at 0 (rounding can make a true 0 negative).

    Returns:
        ``[N]``.
    """
    return jnp.maximum(symmetric_quadratic_forms(I, G), 0.0) + eps


def l2_fold(I: jax.Array, G: jax.Array, eps: float = L2_EPS) -> jax.Array:  # noqa: E741
    """``I_v / (I_v^T G I_v + eps)`` per row (section 3.4): ``(Y O) fold(I)^T = Y W^T``."""
    return I / l2_denominators(I, G, eps)[:, None]


def folded_product(y: jax.Array, O: jax.Array, I_folded: jax.Array) -> jax.Array:  # noqa: E741
    """``y O I_folded^T`` (``[..., M] -> [..., N]``) in the cheaper association.

    ``(y O) I^T`` costs ``B d (M + N)``; ``y (O I^T)`` costs ``M N (d + B)`` and forms an ``[M, N]``
    matrix, so it is used only when it is cheaper *and* ``N <= d`` (then ``O I^T`` is no larger than
    ``O``): e.g. the 10 output neurons reading 5000 hidden ones.
    """
    m, d = O.shape
    n = I_folded.shape[0]
    b = math.prod(y.shape[:-1])
    if n <= d and m * n * (d + b) < b * d * (m + n):
        return y @ (O @ I_folded.T)
    return (y @ O) @ I_folded.T


# ------------------------------------------------------------------------------------ softmax
class ChunkedSources(NamedTuple):
    """Source output embeddings cut into equal chunks for streaming (padding masked out).

    Attributes:
        O: ``[num_chunks, chunk, d]`` (zero rows where padded).
        mask: ``[num_chunks, chunk]`` bool, False on padding.
        size: M, the number of real sources (static).
    """

    O: jax.Array  # noqa: E741
    mask: jax.Array
    size: int


def chunk_sources(O: jax.Array, chunk_size: int = DEFAULT_CHUNK_SIZE) -> ChunkedSources:  # noqa: E741
    """Cuts ``O`` (``[M, d]``) into ``ceil(M / c)`` chunks of ``c = min(chunk_size, M)`` rows."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ConfigError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
    m, d = O.shape
    c = min(chunk_size, m)
    n = -(-m // c)
    pad = n * c - m
    O_pad = jnp.pad(O, ((0, pad), (0, 0)))
    mask = jnp.arange(n * c) < m
    return ChunkedSources(O_pad.reshape(n, c, d), mask.reshape(n, c), m)


def _masked_logits(I: jax.Array, O_c: jax.Array, m_c: jax.Array) -> jax.Array:  # noqa: E741
    return jnp.where(m_c[None, :], I @ O_c.T, -jnp.inf)


def softmax_lse(I: jax.Array, sources: ChunkedSources) -> jax.Array:  # noqa: E741
    """Each target's ``log sum_u exp(I_v^T O_u)``, streamed over chunks with a running logaddexp.

    Args:
        I: ``[N, d]``.
        sources: from :func:`chunk_sources`.

    Returns:
        ``[N]``. Memory ``O(N * chunk)``.
    """

    @jax.checkpoint
    def chunk_lse(O_c, m_c):
        return jax.nn.logsumexp(_masked_logits(I, O_c, m_c), axis=-1)

    def body(lse, xs):
        return jnp.logaddexp(lse, chunk_lse(*xs)), None

    init = jnp.full(I.shape[:1], -jnp.inf, dtype=I.dtype)
    lse, _ = jax.lax.scan(body, init, (sources.O, sources.mask))
    return lse


def softmax_aggregate(
    I: jax.Array,  # noqa: E741
    sources: ChunkedSources,
    y: jax.Array,
    lse: jax.Array,
) -> jax.Array:
    """``sum_u exp(I_v^T O_u - lse_v) y_u`` for every target ``v``, streamed over chunks.

    With ``lse`` from :func:`softmax_lse` over the same sources this is ``Y softmax(I O^T)^T``; with
    ``lse`` over a *superset* of sources it is this group's share of a softmax over the union.

    Args:
        I: ``[N, d]``.
        sources: ``M`` sources from :func:`chunk_sources`.
        y: ``[..., M]`` source values.
        lse: ``[N]`` per-target log normalizer.

    Returns:
        ``[..., N]``.
    """
    lead = y.shape[:-1]
    num_chunks, c, _ = sources.O.shape
    y2 = y.reshape((-1, sources.size))
    y2 = jnp.pad(y2, ((0, 0), (0, num_chunks * c - sources.size)))
    y_chunks = y2.reshape(y2.shape[0], num_chunks, c).transpose(1, 0, 2)  # [chunks, B, c]

    @jax.checkpoint
    def contribution(O_c, m_c, y_c):
        p = jnp.exp(_masked_logits(I, O_c, m_c) - lse[:, None])  # [N, c]; exactly 0 on padding
        return y_c @ p.T  # [B, N]

    def body(acc, xs):
        return acc + contribution(*xs), None

    init = jnp.zeros((y2.shape[0], I.shape[0]), dtype=jnp.result_type(y.dtype, I.dtype))
    out, _ = jax.lax.scan(body, init, (sources.O, sources.mask, y_chunks))
    return out.reshape(lead + (I.shape[0],))


# ------------------------------------------------------------------------------------- factored
def factored_aggregate(
    I: jax.Array,  # noqa: E741
    O: jax.Array,  # noqa: E741
    y: jax.Array,
    normalization: str = "l2",
    *,
    eps: float = L2_EPS,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> jax.Array:
    """``Y Ñ(I O^T)^T`` without forming the ``[N, M]`` matrix. ``y: [..., M] -> [..., N]``."""
    _check_normalization(normalization)
    if normalization == "l2":
        return folded_product(y, O, l2_fold(I, gram(O), eps))
    sources = chunk_sources(O, chunk_size)
    return softmax_aggregate(I, sources, y, softmax_lse(I, sources))


def factored_step(
    targets: dict[str, jax.Array],
    source_O: jax.Array,
    y: jax.Array,
    *,
    normalization: str = "l2",
    activation: str = "relu",
    eps: float = L2_EPS,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> jax.Array:
    """``Step(V, U, Y)`` of eq. 5 without the ``N x M`` matrix (same result as
    :func:`materialized_step` up to rounding).

    Args:
        targets: ``{"I": [N, d], "a": [N], "b": [N]}`` (other keys ignored).
        source_O: ``[M, d]``.
        y: ``[..., M]``.
        normalization: ``"l2"`` (Gram-matrix denominators) or ``"softmax"`` (streaming).
        activation: ``"relu"`` or ``"identity"``.
        eps: l2 denominator epsilon.
        chunk_size: sources per chunk (softmax only).

    Returns:
        ``[..., N]``.
    """
    z = factored_aggregate(
        targets["I"], source_O, y, normalization, eps=eps, chunk_size=chunk_size
    )
    return transform(targets, z, activation)
