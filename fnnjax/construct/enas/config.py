"""What an ENAS search is configured with (:class:`SearchConfig`, its quick and paper presets)
and which execution path runs a sampled arc (:func:`resolve_execution`)."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax

from fnnjax.checks import check_choice

__all__ = ["AUTO_EXECUTION", "EXECUTION_MODES", "QUICK_SEARCH", "SearchConfig", "resolve_execution"]


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """ENAS macro search settings. Defaults: the released macro search script
    (``scripts/cifar10_macro_search.sh`` and ``general_controller.py``); :meth:`paper` gives the
    paper's values where the two disagree. The conflicts (paper -> released default):

    =======================  ===============  ==========================================
    setting                  paper            released (default here)
    =======================  ===============  ==========================================
    ``tanh_constant``        2.5              1.5
    ``temperature``          5.0              None (off)
    ``entropy_weight``       0.1              1e-4
    ``controller_lr``        3.5e-4           1e-3
    ``child_l2``             1e-4             2.5e-4
    ``child_lr_min``         0.001            0.0005
    ``skip_penalty_in``      ``"reward"``     ``"loss"`` (a differentiable penalty)
    =======================  ===============  ==========================================

    Two more differences from the released code, kept in both presets: the entropy is the whole
    distribution's (the released code adds the sampled action's ``-log p``, whose expectation is
    the same entropy but noisier), and the skip penalty's KL is taken at the sampling
    probability ``sigmoid(2 * c tanh(q / T))`` (tanh constant ``c``, temperature ``T``); the
    released code takes it at ``sigmoid(logit)``
    of the tanh-squashed logit alone, so its penalty is minimal where ``sigmoid(2a) ~ 0.31``
    rather than 0.4: the released controller is pushed to sparser skips than its target says.

    Child: ``layers`` x ``filters``, Nesterov momentum ``child_momentum``, L2 ``child_l2`` (the
    loss gains ``l2 * sum(w^2)``, as released), cosine learning rate with warm restarts from
    ``child_lr_max`` to ``child_lr_min`` (first period ``lr_t0`` epochs, then ``lr_tmul`` times
    longer; 310 epochs is 4 restarts), clipping at ``child_clip`` (``None``: off) by global norm
    (``clip_mode="global"``) or per tensor (``"tensor"``, the released default mode; the
    released code computes clipped gradients and then applies the unclipped ones), a fresh arc
    every step, no dropout, ``augment``: the dataset's crop (+ flip where labels allow;
    :func:`fnnjax.train.augmentation_for`; the released search pads 4, crops and flips CIFAR),
    ``cutout``: Cutout's square side on every child batch (0: off, as in ENAS's released macro
    search; NHN section 2.1 searches with Cutout, and ``fnnjax nhn --search`` turns it on).
    Controller: ``controller_steps`` Adam steps (``controller_lr``, beta1 0, eps 1e-3) after each
    child epoch, in ``controller_adam``'s form: ``"tensorflow"`` (default; the released code's
    ``tf.train.AdamOptimizer``, eps added to the uncorrected ``sqrt(v)``) or ``"optax"`` (eps
    added to the bias-corrected ``sqrt(v_hat)``: with REINFORCE gradients far below eps its
    updates are about 29x TensorFlow's at step 1, 4.4x at the end of epoch 1, 2.1x at epoch 5
    and 1.25x at epoch 20; :func:`~fnnjax.construct.enas.controller.scale_by_tensorflow_adam`),
    each over ``arcs_per_step`` arcs scored on
    their own validation minibatch of ``reward_batch`` examples (inference-mode BatchNorm, as
    released). ``random_search``: the baseline (uniform arcs: every op and every skip bit
    equally likely, so skips are drawn with probability 0.5, denser than the 0.4 the
    controller's skip penalty aims at; no controller).
    Derivation: ``derive_arcs`` arcs scored on the same ``derive_batches`` validation
    minibatches (the paper: one); the best is exported. ``skips``: the skip convention
    (:func:`macro_space`). ``update_stats``: ``"selected"`` or ``"all"`` (every op's BatchNorm
    statistics follow each batch, as in the released child; all six ops then run every step).
    ``head_pool``: ``"avg"`` (ENAS) or ``"grouped"`` (NHN section 2.2's grouped-convolution head,
    in the supernet and both exports).
    ``mode``: how a sampled arc runs (:data:`EXECUTION_MODES`, :func:`resolve_execution`):
    ``"sampled"`` composes per-op compiled programs so only the arc's ops run
    (:class:`fnnjax.arch.SampledNet`; the same numbers as the supernet); ``"all"``, ``"switch"``
    and ``"switch_remat"`` jit the whole supernet with that choice-block mode
    (:class:`fnnjax.arch.Choice`); ``"auto"`` picks by a fixed table per backend (never by timing,
    so a seed gives the same search).
    """

    layers: int = 12
    filters: int = 36
    epochs: int = 310
    batch_size: int = 128
    child_lr_max: float = 0.05
    child_lr_min: float = 0.0005
    lr_t0: int = 10
    lr_tmul: int = 2
    child_momentum: float = 0.9
    child_l2: float = 2.5e-4
    child_clip: float | None = 5.0
    clip_mode: str = "global"
    lstm_size: int = 64
    tanh_constant: float = 1.5
    controller_lr: float = 1e-3
    controller_steps: int = 50
    arcs_per_step: int = 20
    reward_batch: int = 128
    entropy_weight: float = 1e-4
    skip_weight: float = 0.8
    skip_target: float = 0.4
    baseline_decay: float = 0.99
    derive_arcs: int = 100
    derive_batches: int = 4
    random_search: bool = False
    mode: str = "auto"
    augment: bool = True
    cutout: int = 0
    skips: str = "paper"
    update_stats: str = "selected"
    head_pool: str = "avg"
    controller_adam: str = "tensorflow"
    temperature: float | None = None
    skip_penalty_in: str = "loss"

    @classmethod
    def quick(cls, **changes: Any) -> SearchConfig:
        """A search that visibly learns in about a minute on 2 CPU cores (``fnnjax enas
        --quick``, on scikit-learn's digits): 2 layers of 16 filters, 4 epochs of batch 32, 20
        controller steps of 4 arcs per epoch (80 updates), rewards on 64 validation images, 10
        arcs derived; plus ``changes``. Three departures from the defaults make 80 updates
        enough to see: the controller's learning rate is 0.03 (1e-3 moves the logits by about
        0.08 in 80 Adam steps, so the entropy stays at its maximum to 5 digits), the child's
        peak learning rate 0.1, and no augmentation (digits' pad-1 crops slow the 16-filter
        child, so the arcs' rewards differ later). With these, seeds 0 and 1 lowered the
        entropy by 33% and 29% between the first and the last epoch and derived arcs at 50% and
        59% shared-weight validation accuracy (chance: 10%); at 1e-3 (40 updates, 8 filters) the
        entropy moved by under 0.01%."""
        return cls(**{**QUICK_SEARCH, **changes})

    @classmethod
    def paper(cls, **changes: Any) -> SearchConfig:
        """The paper's values where it and the released script disagree (class docstring),
        plus ``changes``."""
        paper = dict(tanh_constant=2.5, temperature=5.0, entropy_weight=0.1,
                     controller_lr=3.5e-4, child_l2=1e-4, child_lr_min=0.001,
                     skip_penalty_in="reward")  # fmt: skip
        return cls(**{**paper, **changes})


QUICK_SEARCH: dict[str, Any] = dict(
    layers=2, filters=16, epochs=4, batch_size=32, controller_steps=20, arcs_per_step=4,
    reward_batch=64, derive_arcs=10, derive_batches=1, controller_lr=0.03, child_lr_max=0.1,
    augment=False)
"""The settings :meth:`SearchConfig.quick` changes from the defaults."""

EXECUTION_MODES = ("auto", "sampled", "all", "switch", "switch_remat")

AUTO_EXECUTION = {"cpu": "sampled"}
"""What ``mode="auto"`` runs per backend (:func:`resolve_execution`). CPU: the sampled path (at
the paper's size a step costs 0.85x the arc compiled alone, median of 20 arcs, against 4.9x for
the supernet's ``all``, and rewards score 9.4x faster; BENCHMARKS.md). Other backends:
``"switch"``, the jitted supernet measured on an H100 (2.0x the standalone net); the sampled
path is not yet measured there (``python -m benchmarks.enas_step`` on the device:
BENCHMARKS.md)."""


def resolve_execution(mode: str, update_stats: str = "selected",
                      backend: str | None = None) -> str:  # fmt: skip
    """The execution path a search with ``mode`` runs on ``backend`` (default: JAX's): one of
    ``"sampled"``, ``"all"``, ``"switch"``, ``"switch_remat"``.

    ``"auto"`` follows :data:`AUTO_EXECUTION` (``"switch"`` on backends it does not list), except
    with ``update_stats="all"`` (every op's BatchNorm statistics follow each batch), which needs
    every op computed: the supernet's ``"all"``.

    Raises:
        ValueError: an unknown mode, or ``"sampled"``/``"switch*"`` with ``update_stats="all"``.
    """
    check_choice("mode", mode, EXECUTION_MODES)
    if update_stats == "all":
        if mode not in ("auto", "all"):
            raise ValueError(f"mode: {mode!r} runs only the sampled op, but update_stats='all' "
                             "updates every op's BatchNorm statistics, which needs all six "
                             "computed; use mode 'auto' or 'all'")  # fmt: skip
        return "all"
    if mode != "auto":
        return mode
    return AUTO_EXECUTION.get(backend or jax.default_backend(), "switch")
