"""Farfalle Neural Networks: floating neurons whose connections are learned (the FNN paper).

Pure functions over explicit parameter pytrees, plus a thin Flax layer:

* :mod:`~fnnjax.floating.neurons` — floating neurons (section 3.1), :class:`FNNConfig`, Table-1
  presets and parameter counts, initialization, input dropout.
* :mod:`~fnnjax.floating.step` — eq. 1-5: normalizations, ``materialized_step`` (builds ``W``) and
  ``factored_step`` (Gram-matrix / QR l2 / streaming softmax, never forms ``W``).
* :mod:`~fnnjax.floating.network` — multi-layer floating networks (3.2), the FNN (3.3) and its
  per-example multiply-accumulates (:func:`forward_macs`).
* :mod:`~fnnjax.floating.theorem1` — Theorem 1's conversion of a multi-layer network to an FNN.
* :mod:`~fnnjax.floating.folding` — section 3.4's inference folding.
* :mod:`~fnnjax.floating.layer` — the Flax ``FNN`` module and registry factories.
* :mod:`~fnnjax.floating.analysis` — figures 5 and 6 (matplotlib / scikit-learn are imported
  only when a figure is drawn).

Example:
    >>> import jax, jax.numpy as jnp
    >>> from fnnjax.floating import FNNConfig, init_params, fnn_apply
    >>> cfg = FNNConfig(num_inputs=784, num_outputs=10, num_hidden=64, dim=16)
    >>> logits = fnn_apply(init_params(jax.random.key(0), cfg), jnp.zeros((2, 784)), cfg)
"""

from fnnjax.floating.analysis import (
    input_embedding_norms,
    plot_embedding_projection,
    plot_input_embedding_norms,
    project_inner_embeddings,
)
from fnnjax.floating.folding import fold_params, folded_apply
from fnnjax.floating.layer import FNN, fnn_1024, fnn_5000, fnn_custom
from fnnjax.floating.network import (
    fnn_apply,
    fnn_train_apply,
    forward_macs,
    init_multilayer_params,
    multilayer_apply,
)
from fnnjax.floating.neurons import (
    L2_EPS,
    PRESETS,
    FNNConfig,
    init_params,
    input_dropout,
    param_count,
    preset_config,
    transform,
)
from fnnjax.floating.step import (
    connection_weights,
    factored_step,
    l2_normalize_rows,
    materialized_step,
    normalize_rows,
)
from fnnjax.floating.theorem1 import multilayer_to_fnn, multilayer_to_fnn_config

__all__ = [
    "FNN",
    "L2_EPS",
    "PRESETS",
    "FNNConfig",
    "connection_weights",
    "factored_step",
    "fnn_1024",
    "fnn_5000",
    "fnn_apply",
    "fnn_custom",
    "fnn_train_apply",
    "fold_params",
    "folded_apply",
    "forward_macs",
    "init_multilayer_params",
    "init_params",
    "input_dropout",
    "input_embedding_norms",
    "l2_normalize_rows",
    "materialized_step",
    "multilayer_apply",
    "multilayer_to_fnn",
    "multilayer_to_fnn_config",
    "normalize_rows",
    "param_count",
    "plot_embedding_projection",
    "plot_input_embedding_norms",
    "preset_config",
    "project_inner_embeddings",
    "transform",
]
