"""Section 4.2's analysis of learned input embeddings (figures 5 and 6)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from fnnjax.floating.analysis import (
    inner_box,
    input_embedding_norms,
    plot_embedding_projection,
    plot_input_embedding_norms,
    project_inner_embeddings,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _params(image_shape, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    return {"input": {"O": rng.normal(size=(int(np.prod(image_shape)), dim)) / np.sqrt(dim)}}


def test_figure5_norm_image_is_per_pixel_embedding_norm():
    params = _params((28, 28, 1))
    O = np.asarray(params["input"]["O"])  # noqa: E741
    norms = input_embedding_norms(params, (28, 28, 1))
    assert norms.shape == (28, 28)
    np.testing.assert_allclose(norms[3, 5], np.linalg.norm(O[3 * 28 + 5]), rtol=1e-6)
    np.testing.assert_allclose(norms, np.linalg.norm(O, axis=1).reshape(28, 28), rtol=1e-6)
    np.testing.assert_allclose(input_embedding_norms(params, (28, 28)), norms)


def test_figure5_combines_channels_of_a_pixel():
    params = _params((4, 5, 3))
    O = np.asarray(params["input"]["O"])  # noqa: E741
    norms = input_embedding_norms(params, (4, 5, 3))
    assert norms.shape == (4, 5)
    pixel = (2 * 5 + 1) * 3  # row 2, column 1: channels are the fastest axis (NHWC flattening)
    np.testing.assert_allclose(norms[2, 1], np.linalg.norm(O[pixel:pixel + 3]), rtol=1e-6)


def test_image_shape_must_match_the_input_neurons():
    with pytest.raises(ValueError, match="input neurons"):
        input_embedding_norms(_params((28, 28, 1)), (32, 32, 3))


def test_inner_box_is_the_papers_20_by_20_for_mnist():
    rows, cols = inner_box((28, 28))
    assert (rows.start, rows.stop, cols.start, cols.stop) == (4, 24, 4, 24)


def test_figure6_projects_the_inner_box():
    params = _params((28, 28, 1))
    coords, method = project_inner_embeddings(params, (28, 28, 1), method="pca")
    assert coords.shape == (20, 20, 2) and method == "pca"
    assert np.all(np.isfinite(coords))
    auto = project_inner_embeddings(params, (28, 28, 1))[1]
    assert auto == ("umap" if importlib.util.find_spec("umap") else "pca")


def test_figures_are_written_as_png(tmp_path):
    params = _params((12, 12, 3))
    norm_png = plot_input_embedding_norms(params, (12, 12, 3), tmp_path / "fig5.png")
    proj_png = plot_embedding_projection(params, (12, 12, 3), tmp_path / "sub" / "fig6.png",
                                         method="pca")
    for path in (norm_png, proj_png):
        data = open(path, "rb").read()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 2000
