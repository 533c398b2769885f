"""Analysis of learned input embeddings (FNN paper, section 4.2, figures 5 and 6).

Input neurons have only an *output* embedding ``O`` (section 3.1); the paper's figure 6 caption says
"input embeddings", meaning the input neurons' embeddings, i.e. ``params["input"]["O"]``.

Input neuron ``r`` reads feature ``r`` of the flattened input; the Flax :class:`~fnnjax.floating.FNN`
flattens ``[batch, H, W, C]`` images in row-major order, so neuron ``r`` is pixel
``(r // (W C), (r // C) % W)``, channel ``r % C``. For ``C > 1`` channels a pixel owns ``C`` input
neurons; we treat the pixel's embedding as the concatenation of its channels' embeddings
(``[C d]``), so figure 5's value is ``sqrt(sum_c ||O_{pixel, c}||^2)`` (the l2 norm of that
concatenation; for ``C = 1`` exactly the paper's per-neuron l2 norm) and figure 6 projects the
``[C d]`` vectors.

* :func:`input_embedding_norms` / :func:`plot_input_embedding_norms`: figure 5, a heat map of the
  norms on the pixel grid.
* :func:`project_inner_embeddings` / :func:`plot_embedding_projection`: figure 6, a 2-D projection
  of the inner box of pixels (the paper keeps the inner 20 x 20 of 28 x 28, i.e. drops a margin of
  4 = 28 // 7; we default to ``H // 7`` and ``W // 7``), with lines between 4-adjacent pixels. The
  paper uses UMAP; we use it when ``umap-learn`` is importable (``pip install -e '.[umap]'``) and
  otherwise fall back to scikit-learn's PCA (deterministic, fast; ``method="tsne"`` is available
  too). The method used is returned and written into the figure title.

Figures are drawn on a bare :class:`matplotlib.figure.Figure` (Agg canvas), so no pyplot state or
global backend is touched.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from fnnjax.checks import check_choice, is_int
from fnnjax.errors import ConfigError

__all__ = [
    "input_embedding_norms",
    "inner_box",
    "plot_embedding_projection",
    "plot_input_embedding_norms",
    "project_inner_embeddings",
]

_METHODS = ("auto", "umap", "pca", "tsne")


def _grid(params: dict[str, Any], image_shape: Sequence[int]) -> np.ndarray:
    """The input neurons' embeddings as ``[H, W, C, d]`` (float64)."""
    shape = tuple(image_shape)
    if len(shape) == 2:
        shape = shape + (1,)
    if len(shape) != 3 or any(not is_int(n) or n < 1 for n in shape):
        raise ConfigError(f"image_shape must be (H, W) or (H, W, C) of positive ints, got {image_shape!r}")
    O = np.asarray(params["input"]["O"], dtype=np.float64)  # noqa: E741
    if O.shape[0] != int(np.prod(shape)):
        raise ConfigError(
            f"image_shape {tuple(image_shape)} has {int(np.prod(shape))} pixels*channels but the "
            f"network has {O.shape[0]} input neurons"
        )
    return O.reshape(shape + (O.shape[1],))


def input_embedding_norms(params: dict[str, Any], image_shape: Sequence[int]) -> np.ndarray:
    """Figure 5's values: the l2 norm of each pixel's input-neuron embedding(s).

    Args:
        params: FNN params (``params["input"]["O"]``: ``[H W C, d]``).
        image_shape: ``(H, W)`` or ``(H, W, C)``.

    Returns:
        ``[H, W]`` float64, ``sqrt(sum_c sum_k O[pixel, c, k]^2)``.
    """
    grid = _grid(params, image_shape)
    return np.sqrt(np.sum(grid**2, axis=(2, 3)))


def inner_box(image_shape: Sequence[int], margin: int | None = None) -> tuple[slice, slice]:
    """Row and column slices of the inner box (default margin ``H // 7``, ``W // 7``: 20 x 20 of 28 x 28)."""
    h, w = int(image_shape[0]), int(image_shape[1])
    mh, mw = (h // 7, w // 7) if margin is None else (margin, margin)
    if mh < 0 or mw < 0 or 2 * mh >= h or 2 * mw >= w:
        raise ConfigError(f"margin must leave a non-empty box inside {h}x{w}, got {margin!r}")
    return slice(mh, h - mh), slice(mw, w - mw)


def _resolve_method(method: str) -> str:
    check_choice("method", method, _METHODS)
    has_umap = importlib.util.find_spec("umap") is not None
    if method == "auto":
        return "umap" if has_umap else "pca"
    if method == "umap" and not has_umap:
        raise ConfigError("method='umap' needs umap-learn (pip install -e '.[umap]' in the fnnjax clone)")
    return method


def project_inner_embeddings(
    params: dict[str, Any],
    image_shape: Sequence[int],
    *,
    margin: int | None = None,
    method: str = "auto",
    seed: int = 0,
) -> tuple[np.ndarray, str]:
    """Figure 6's points: a 2-D projection of the inner box's pixel embeddings.

    Args:
        params: FNN params.
        image_shape: ``(H, W)`` or ``(H, W, C)``.
        margin: pixels dropped on every side (default ``H // 7``).
        method: ``"auto"`` (UMAP if importable, else PCA), ``"umap"``, ``"pca"`` or ``"tsne"``.
        seed: ``random_state`` of UMAP / t-SNE.

    Returns:
        ``(coords, method)``: ``coords`` is ``[h, w, 2]`` for the ``h x w`` inner box; ``method``
        the projection actually used.
    """
    rows, cols = inner_box(image_shape, margin)
    grid = _grid(params, image_shape)[rows, cols]  # [h, w, C, d]
    h, w = grid.shape[:2]
    vectors = grid.reshape(h * w, -1)
    used = _resolve_method(method)
    if used == "umap":
        import umap  # type: ignore[import-not-found]

        coords = umap.UMAP(n_components=2, random_state=seed).fit_transform(vectors)
    elif used == "tsne":
        from sklearn.manifold import TSNE

        perplexity = min(30.0, max(1.0, (h * w - 1) / 3))
        coords = TSNE(2, perplexity=perplexity, random_state=seed, init="pca").fit_transform(vectors)
    else:
        from sklearn.decomposition import PCA

        coords = PCA(n_components=2).fit_transform(vectors)
    return np.asarray(coords, dtype=np.float64).reshape(h, w, 2), used


def _save(fig: Any, path: str | os.PathLike[str]) -> str:
    path = os.fspath(path)
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)
    return path


def plot_input_embedding_norms(
    params: dict[str, Any], image_shape: Sequence[int], path: str | os.PathLike[str]
) -> str:
    """Writes figure 5 (per-pixel embedding norm heat map) as a PNG and returns its path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    norms = input_embedding_norms(params, image_shape)
    fig = Figure(figsize=(4.5, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(norms, cmap="viridis", interpolation="nearest")
    fig.colorbar(image, ax=ax)
    ax.set_title("l2 norm of input neurons' embeddings")
    ax.set_xticks([])
    ax.set_yticks([])
    return _save(fig, path)


def plot_embedding_projection(
    params: dict[str, Any],
    image_shape: Sequence[int],
    path: str | os.PathLike[str],
    *,
    margin: int | None = None,
    method: str = "auto",
    seed: int = 0,
) -> str:
    """Writes figure 6 (2-D projection, adjacent pixels joined by lines) as a PNG; returns its path.

    Args: as :func:`project_inner_embeddings`, plus ``path`` of the PNG.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure

    coords, used = project_inner_embeddings(
        params, image_shape, margin=margin, method=method, seed=seed
    )
    h, w = coords.shape[:2]
    segments = [
        (coords[i, j], coords[i + di, j + dj])
        for i in range(h)
        for j in range(w)
        for di, dj in ((0, 1), (1, 0))
        if i + di < h and j + dj < w
    ]
    fig = Figure(figsize=(5, 5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.add_collection(LineCollection(segments, colors="0.6", linewidths=0.5))
    rows = np.repeat(np.arange(h), w)
    ax.scatter(coords[..., 0].ravel(), coords[..., 1].ravel(), c=rows, cmap="viridis", s=6)
    ax.autoscale()
    ax.set_title(f"input embeddings of the inner {h}x{w} pixels ({used.upper()})")
    ax.set_xticks([])
    ax.set_yticks([])
    return _save(fig, path)
