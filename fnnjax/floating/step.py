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

  - ``l2``: every row's denominator is ``sum_u (I_v^T O_u)^2 = ||O I_v||^2 = I_v^T G I_v`` with
    the ``[d, d]`` Gram matrix ``G = O^T O``, and ``Y W^T = ((Y O) I^T) / den``: cost ``O((N + M)
    d^2 + batch (N + M) d)``, memory ``O(d (N + M) + batch (N + M))``. ``G`` is computed once per
    forward pass per source group (:func:`l2_sources`); a target reading several groups (e.g.
    ``[input | hidden]``) adds the groups' sums. Dividing ``I`` by ``den`` first is exactly section
    3.4's inference folding (:mod:`fnnjax.floating.folding`). When there are few targets (e.g. 10
    output neurons, ``N <= d``), :func:`folded_product` associates ``Y (O I^T)`` instead, which is
    cheaper and still small.

    *Accuracy: the Gram form where it is accurate, the QR form elsewhere.* Rounding ``G`` and the
    quadratic form costs an absolute error of about ``eps ||G|| |I_v|^2``, a relative error of
    ``eps ||G|| |I_v|^2 / ||O I_v||^2``: the *squared* condition, where the materialized path's
    similarities ``I_v^T O_u`` cost ``eps |O| |I_v| / ||O I_v||``. With targets nearly orthogonal to
    their sources (few sources, ``M < d``, or ill-conditioned / rank-deficient ``O``) and
    similarities of ``1e-4 |I| |O|``, the Gram form is off by 0.3 to 9 in float32 where the
    materialized path stays below 1e-3. The QR form ``||R I_v||^2``, ``R`` the triangular factor of
    ``O``'s thin QR (``O`` itself when ``M <= d``), is a sum of squares of ``R I_v``, which
    Householder QR gets to an absolute error of about ``eps |O| |I_v|``: the materialized path's
    accuracy at the same ``O((N + M) d^2)`` cost. But LAPACK's QR inside XLA is slow on CPU (its
    BLAS threads oversubscribe the cores XLA's own threads use: 1.7x slower training steps on a
    2-core machine) and cuSOLVER's is slow on GPU (3x slower steps on an H100), while the Gram form
    is accurate wherever the form is not tiny: :func:`squared_similarity_norms` keeps it when every
    target's form is at least ``GRAM_FORM_MIN_RATIO ||G||_F |I_v|^2`` (relative error below about
    6e-5 there; random embeddings give ratios near ``1 / sqrt(d)``) and otherwise computes the QR form
    for the whole target set in a ``lax.cond`` branch (both branches run under ``vmap``). QR is
    never differentiated (its derivative is ill-conditioned for nearly rank-deficient ``O`` and
    undefined for wide ``O``): the custom VJP is ``dI_v = 2 g_v G I_v`` from the forward's
    ``G I_v`` (``I G``, or ``R^T (R I_v)``) and ``dG = I^T diag(g) I``, which :func:`gram`'s VJP
    sends to ``O`` as ``O (dG + dG^T)``, once per source group however many target sets read it.
  - ``softmax``: this is dot-product attention with queries ``I``, keys ``O``, values ``Y^T`` and
    scale 1. We stream over the sources in chunks of ``chunk_size``: one ``lax.scan`` computes each
    target's log-sum-exp with a running ``logaddexp`` (it depends on parameters only, so a forward
    pass computes it once and reuses it in every iteration), a second accumulates
    ``exp(I O_c^T - lse) Y_c^T`` chunk by chunk. Memory is ``O(N * chunk)`` per chunk; the chunk
    body is rematerialized (``jax.checkpoint``) so the backward pass does not store the ``[N, M]``
    probabilities either. ``jax.nn.dot_product_attention`` computes the same thing (the tests
    check it) but needs the value width (``batch``) equal to the key width (``d``), i.e. padding,
    and its XLA implementation materializes the ``[N, M]`` logits on CPU, so it is not used here.

Floating-point notes: padded source slots of a last partial chunk get logit ``-inf`` (weight exactly
0), never ``0 * inf``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from fnnjax.checks import check_choice, check_int
from fnnjax.errors import ConfigError
from fnnjax.floating.neurons import DEFAULT_CHUNK_SIZE, L2_EPS, NORMALIZATIONS, transform

__all__ = [
    "GRAM_FORM_MIN_RATIO",
    "ChunkedSources",
    "L2Sources",
    "chunk_sources",
    "connection_weights",
    "factored_aggregate",
    "factored_step",
    "folded_product",
    "folded_product_forms_matrix",
    "gram",
    "gram_form_is_accurate",
    "iterate",
    "l2_denominators",
    "l2_fold",
    "l2_normalize_rows",
    "l2_sources",
    "materialized_aggregate",
    "materialized_step",
    "normalize_rows",
    "similarity",
    "softmax_aggregate",
    "softmax_lse",
    "squared_similarity_norms",
]


def _check_normalization(normalization: str) -> None:
    check_choice("normalization", normalization, NORMALIZATIONS)


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
#: The Gram form ``I_v^T G I_v`` of a denominator is used only where it is at least this fraction of
#: ``||G||_F |I_v|^2`` (:func:`gram_form_is_accurate`); elsewhere the QR form is.
GRAM_FORM_MIN_RATIO = 2.0**-10


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


class L2Sources(NamedTuple):
    """A source group prepared for eq. 2's denominators (from :func:`l2_sources`).

    Attributes:
        O: ``[M, d]`` the sources' output embeddings, for the QR form only; no gradient flows
            through this field (the denominators depend on ``O`` only through ``G``).
        G: ``[d, d]`` their Gram matrix ``O^T O``; gradients reach ``O`` through it.
    """

    O: jax.Array  # noqa: E741
    G: jax.Array


def l2_sources(O: jax.Array) -> L2Sources:  # noqa: E741
    """Prepares a source group (``O``: ``[M, d]``) once per forward pass: its Gram matrix serves
    every target set and iteration that reads the group (:func:`squared_similarity_norms`)."""
    return L2Sources(jax.lax.stop_gradient(O), gram(O))


def gram_form_is_accurate(I: jax.Array, G: jax.Array, quadratic_forms: jax.Array) -> jax.Array:  # noqa: E741
    """Whether the Gram forms ``I_v^T G I_v`` (``[N]``) can all be trusted: a scalar bool.

    Rounding ``G`` and the form costs an absolute error of about ``eps ||G|| |I_v|^2``, so a form
    of at least ``GRAM_FORM_MIN_RATIO ||G||_F |I_v|^2`` (``||G||_F >= ||G||_2``) has a relative
    error of at most about ``eps / GRAM_FORM_MIN_RATIO``, 6e-5 in float32 (measured: below 5e-6;
    the ratio is tuned for float32 and merely cautious in float64). Random embeddings give ratios
    near ``1 / sqrt(d)``, targets nearly orthogonal to their sources ratios near 0 (or a negative
    form). Zero input embeddings (form 0) pass.

    Args:
        I: ``[N, d]`` target input embeddings.
        G: ``[d, d]`` the sources' Gram matrix.
        quadratic_forms: ``[N]``, the computed ``I_v^T G I_v``.
    """
    scale = jnp.sum(I * I, axis=-1) * jnp.sqrt(jnp.sum(G * G))
    return jnp.all(quadratic_forms >= GRAM_FORM_MIN_RATIO * scale)


def _gram_square_root(O: jax.Array) -> jax.Array:  # noqa: E741
    """``R`` with ``R^T R = O^T O``: ``O`` itself when ``M <= d``, else the triangular factor of the
    thin QR (``[d, d]``, geqrf only: ``Q`` is never formed). Never differentiated."""
    m, d = O.shape
    if m <= d:
        return O
    work = jnp.promote_types(O.dtype, jnp.float32)  # LAPACK/cuSOLVER have no half-precision QR
    return jnp.linalg.qr(O.astype(work), mode="r").astype(O.dtype)


def _squared_similarity_norms(I: jax.Array, sources: L2Sources) -> tuple[jax.Array, jax.Array]:  # noqa: E741
    """``(sum_u (I_v^T O_u)^2, G I_v)`` for every row ``v``: the Gram form where it is accurate,
    else the QR form ``||R I_v||^2`` (one ``lax.cond`` for all rows)."""
    IG = I @ sources.G
    quadratic_forms = jnp.sum(IG * I, axis=-1)

    def qr_form(_):
        R = _gram_square_root(sources.O)
        P = I @ R.T  # [N, min(M, d)]
        return jnp.sum(jnp.square(P), axis=-1), P @ R

    return jax.lax.cond(
        gram_form_is_accurate(I, sources.G, quadratic_forms),
        lambda _: (quadratic_forms, IG),
        qr_form,
        None,
    )


@jax.custom_vjp
def squared_similarity_norms(I: jax.Array, sources: L2Sources) -> jax.Array:  # noqa: E741
    """``sum_u (I_v^T O_u)^2`` for every row ``v`` of ``I`` (``[N, d]``) -> ``[N]``, accurately.

    The Gram form ``I_v^T G I_v`` (one ``[N, d] x [d, d]`` product) where
    :func:`gram_form_is_accurate`, else the QR form ``||R I_v||^2`` (module docstring).

    Custom VJP with the analytic gradients (``g`` the cotangent): ``dI_v = 2 g_v G I_v`` from the
    forward's ``G I_v`` (``I G``, or ``R^T (R I_v)`` in the QR form: no product is repeated) and
    ``dG = I^T diag(g) I``, which :func:`gram`'s VJP sends to ``O``. QR is never differentiated.
    """
    return _squared_similarity_norms(I, sources)[0]


def _ssn_fwd(I: jax.Array, sources: L2Sources):  # noqa: E741
    norms, GI = _squared_similarity_norms(I, sources)
    return norms, (I, GI, sources.O)


def _ssn_bwd(res, g: jax.Array) -> tuple[jax.Array, L2Sources]:
    I, GI, O = res  # noqa: E741
    dI = 2.0 * g[:, None] * GI
    dG = I.T @ (g[:, None] * I)
    return dI, L2Sources(jnp.zeros_like(O), dG)


squared_similarity_norms.defvjp(_ssn_fwd, _ssn_bwd)


def _as_sources(sources: L2Sources | Sequence[L2Sources]) -> tuple[L2Sources, ...]:
    groups = (sources,) if isinstance(sources, L2Sources) else tuple(sources)
    if not groups or not all(isinstance(s, L2Sources) for s in groups):
        raise ConfigError(
            "sources must be an L2Sources or a non-empty sequence of them (from l2_sources), "
            f"got {sources!r}"
        )
    return groups


def l2_denominators(
    I: jax.Array,  # noqa: E741
    sources: L2Sources | Sequence[L2Sources],
    eps: float = L2_EPS,
) -> jax.Array:
    """Eq. 2's denominators without ``W``: ``sum_u (I_v^T O_u)^2 + eps`` for every target ``v``.

    Args:
        I: ``[N, d]`` target input embeddings.
        sources: the sources' :func:`l2_sources`, or one per source group when the targets read
            the union of several groups (e.g. ``[input | hidden]``): the groups' sums add.
        eps: added to every denominator (:data:`~fnnjax.floating.neurons.L2_EPS`).

    Returns:
        ``[N]``.
    """
    groups = _as_sources(sources)
    total = squared_similarity_norms(I, groups[0])
    for group in groups[1:]:
        total = total + squared_similarity_norms(I, group)
    return total + eps


def l2_fold(
    I: jax.Array,  # noqa: E741
    sources: L2Sources | Sequence[L2Sources],
    eps: float = L2_EPS,
) -> jax.Array:
    """``I_v / (sum_u (I_v^T O_u)^2 + eps)`` per row (section 3.4): ``(Y O) fold(I)^T = Y W^T``.

    Args and shapes as :func:`l2_denominators`; returns ``[N, d]``.
    """
    return I / l2_denominators(I, sources, eps)[:, None]


def folded_product(y: jax.Array, O: jax.Array, I_folded: jax.Array) -> jax.Array:  # noqa: E741
    """``y O I_folded^T`` (``[..., M] -> [..., N]``) in the cheaper association.

    ``(y O) I^T`` costs ``B d (M + N)``; ``y (O I^T)`` costs ``M N (d + B)`` and forms an ``[M, N]``
    matrix, so it is used only when it is cheaper *and* ``N <= d`` (then ``O I^T`` is no larger than
    ``O``): e.g. the 10 output neurons reading 5000 hidden ones.
    """
    m, d = O.shape
    n = I_folded.shape[0]
    if folded_product_forms_matrix(m, n, d, math.prod(y.shape[:-1])):
        return y @ (O @ I_folded.T)
    return (y @ O) @ I_folded.T


def folded_product_forms_matrix(num_sources: int, num_targets: int, dim: int, batch: int) -> bool:
    """Whether :func:`folded_product` associates ``y (O I^T)`` (forming the ``[M, N]`` matrix
    once per call) rather than ``(y O) I^T``, for ``M`` sources, ``N`` targets, embedding
    dimension ``d`` and ``batch`` rows of ``y``: when ``N <= d`` and ``M N (d + B) < B d (M + N)``.

    The answer depends on the batch: a few rows keep ``(y O) I^T``, many rows amortize
    ``O I^T`` (e.g. 10 output neurons reading 1024 hidden ones with ``d = 256`` switch at 11 rows).
    """
    m, n, d, b = num_sources, num_targets, dim, batch
    return n <= d and m * n * (d + b) < b * d * (m + n)


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
    check_int("chunk_size", chunk_size)
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
        return folded_product(y, O, l2_fold(I, l2_sources(O), eps))
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
        normalization: ``"l2"`` (Gram-matrix / QR denominators) or ``"softmax"`` (streaming).
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
