"""ENAS macro search (Pham et al. 2018, "Efficient Neural Architecture Search via Parameter
Sharing", section 2.3; NHN section 2.1) as pure functions on the architecture IR.

Search space
    ``L`` layers of one width ``C``; layer ``k`` picks one of six ops (:data:`OPS`, indices 0-5:
    conv3x3, sep3x3, conv5x5, sep5x5, avgpool, maxpool) and makes ``k`` skip decisions, bit ``j``
    reading the output of layer ``j`` (the paper: "up to k-1 previous indices" for its 1-based
    layer k; the controller's attention anchor ``j`` is layer ``j``). The released child instead
    reads ``prev_layers[j]``, a list that starts with the stem's output: the stem and layers
    ``0 .. k-2``, one off from its own controller's anchors. ``skips="released"`` builds that
    reading (to retrain arcs the released code found as it connected them); the default,
    ``"paper"``, is the consistent one. After layers ``L//3 - 1`` and ``2L//3 - 1`` every
    earlier output is halved by a factorized reduction (channel-preserving during the search,
    doubling the width when retraining).

    An *arc* is ``L + L(L-1)/2`` integers: for each layer its op, then its skip bits (the released
    code's ``sample_arc`` and ``best_arc.txt`` order).

Supernet (:func:`macro_space`)
    A :class:`~fnnjax.arch.spec.Spec` with one :class:`~fnnjax.arch.spec.Choice` per layer
    (candidates ``1x1 conv-BN-ReLU`` then the op: ``kxk conv-BN-ReLU``, a separable ``kxk``
    depthwise + pointwise then BN-ReLU, or a 3x3 stride-1 pooling; one set of weights per layer
    per op), ``sum_bn`` gated skips (``BN(y + sum of the skips on)``, ENAS's search child), the
    reductions as :attr:`~fnnjax.arch.spec.Stage.reduce`, a 3x3 conv + BN stem (no ReLU, as
    released) and a global-average-pool + dense head (dropout off during the search, NHN 2.1).
    An arc is a selection of that supernet (:func:`arc_to_selection`, pure ``jnp``: it vmaps over
    a batch of arcs), so a step with a new arc never recompiles.

Two exports of an arc
    *search form* (:func:`search_spec`): the supernet's sub-network for the arc as a plain spec
    (:func:`fnnjax.arch.materialize`; its weights by :func:`fnnjax.arch.materialize_variables`).
    *retraining form* (:func:`retrain_spec`): ENAS's fixed-arc child: the selected skips
    concatenated with the layer's output, then ReLU, 1x1 conv, BN (``concat_conv``), widths
    doubled at each reduction, width and dropout parameters. The released code builds the
    fixed-arc separable ops as plain convs and leaves the pooling ops undefined; those are bugs,
    and here both forms build the same six ops.

Average pooling divides by the valid pixels only (TensorFlow's ``SAME`` pooling, as released).
Differences kept on purpose: the dense classifier has a bias (the released one has none);
BatchNorm's epsilon is the library's 1e-5 (released: 1e-3); both forms order every unit conv ->
BN -> ReLU (the released fixed-arc child orders ReLU -> conv -> BN), so that a search-form
sub-network and its retraining form compute the same kind of layer; the minimum learning rate
is the issue's and ENAS's 0.0005 (NHN section 2.1 says 0.001).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from fnnjax.arch.select import materialize
from fnnjax.arch.spec import (
    Block,
    Cell,
    Choice,
    Conv,
    Head,
    Pool,
    SepConv,
    Spec,
    Stage,
)

__all__ = [
    "OPS",
    "SKIP_CONVENTIONS",
    "Controller",
    "arc_from_string",
    "arc_size",
    "arc_to_selection",
    "arc_to_string",
    "SearchConfig",
    "arc_accuracies",
    "check_arc",
    "child_optimizer",
    "cosine_restarts",
    "derive",
    "init_controller",
    "layer_ops",
    "macro_space",
    "moving_baselines",
    "pool_layers",
    "random_arcs",
    "reinforce_loss",
    "retrain_spec",
    "sample_arcs",
    "search",
    "search_spec",
    "selection_to_arc",
    "stage_of_layers",
]

OPS = ("conv3x3", "sep3x3", "conv5x5", "sep5x5", "avgpool", "maxpool")


def arc_size(layers: int) -> int:
    """Integers in an arc of ``layers`` layers: ``L + L(L-1)/2``."""
    return layers + layers * (layers - 1) // 2


def pool_layers(layers: int) -> tuple[int, ...]:
    """Layers after which ENAS reduces (``L//3 - 1`` and ``2L//3 - 1``; none below 3 layers)."""
    d = layers // 3
    return (d - 1, 2 * d - 1) if d else ()


def stage_of_layers(layers: int) -> list[list[int]]:
    """The layers of each segment (stage) between reductions."""
    stages, current = [], []
    for k in range(layers):
        current.append(k)
        if k in pool_layers(layers):
            stages.append(current)
            current = []
    return [*stages, current] if current else stages


def layer_ops(width: int) -> tuple[tuple[Block, ...], ...]:
    """The six candidate op sequences of a layer of ``width`` channels, in :data:`OPS` order."""
    inp = Conv(filters=width, kernel=1)  # ENAS's inp_conv_1: 1x1 conv, BN, ReLU

    def pool(op: str) -> Pool:
        return Pool(op=op, window=3, stride=1, padding=1, count_include_pad=False)

    return (
        (inp, Conv(filters=width, kernel=3)),
        (inp, SepConv(filters=width, kernel=3, mid_norm_act=False)),
        (inp, Conv(filters=width, kernel=5)),
        (inp, SepConv(filters=width, kernel=5, mid_norm_act=False)),
        (inp, pool("avg")),
        (inp, pool("max")),
    )


SKIP_CONVENTIONS = ("paper", "released")


def _skips(k: int, convention: str = "paper") -> tuple[int, ...]:
    """Flat sources of layer ``k``'s skip bits: layers ``0 .. k-1`` (``"paper"``), or the stem
    (-1) and layers ``0 .. k-2`` (``"released"``: the released child's ``prev_layers``)."""
    if convention not in SKIP_CONVENTIONS:
        raise ValueError(f"skips: expected one of {SKIP_CONVENTIONS}, got {convention!r}")
    return tuple(range(k)) if convention == "paper" else tuple(range(-1, k - 1))


def macro_space(
    layers: int = 12,
    filters: int = 36,
    *,
    input_shape: Sequence[int] = (32, 32, 3),
    num_classes: int = 10,
    mode: str = "auto",
    skips: str = "paper",
) -> Spec:
    """The shared-weight supernet of ENAS's macro search space (module docstring).

    Args:
        layers: ``L`` (12 in NHN and ENAS).
        filters: the constant width ``C`` (36 in the paper's search).
        input_shape, num_classes: the data's.
        mode: the choice blocks' ``mode`` (``"auto"``: all candidates on CPU, ``lax.switch``
            elsewhere).
        skips: which outputs the skip bits read: ``"paper"`` or ``"released"`` (module
            docstring).

    Raises:
        ValueError: fewer than 1 layer or 2 filters (a reduction splits the width in two halves).
    """
    _check_sizes(layers, filters)
    stages = []
    for i, ks in enumerate(stage_of_layers(layers)):
        blocks = tuple(
            Choice(candidates=layer_ops(filters), mode=mode, gated_skips=_skips(k, skips),
                   gated_merge="sum_bn" if k else None)
            for k in ks
        )  # fmt: skip
        stages.append(Stage(blocks=blocks, reduce=filters if i else None, name=f"segment{i}"))
    return Spec(
        input_shape=tuple(input_shape),
        num_classes=num_classes,
        stem=(Conv(filters=filters, kernel=3, act=None),),
        stages=tuple(stages),
        head=Head(),
        name=f"enas_macro_{layers}x{filters}",
    )


def _check_sizes(layers: int, filters: int) -> None:
    if isinstance(layers, bool) or not isinstance(layers, int) or layers < 1:
        raise ValueError(f"layers: expected a positive int, got {layers!r}")
    if isinstance(filters, bool) or not isinstance(filters, int) or filters < 2:
        raise ValueError(f"filters: expected an int >= 2, got {filters!r}")


def _layer_paths(layers: int) -> list[str]:
    return [f"s{i}b{j}" for i, ks in enumerate(stage_of_layers(layers)) for j in range(len(ks))]


def _offsets(layers: int) -> list[int]:
    """Where layer ``k``'s op index sits in an arc (its skip bits follow)."""
    return [k + k * (k - 1) // 2 for k in range(layers)]


def check_arc(arc: Any, layers: int) -> np.ndarray:
    """``arc`` as an int array, checked: length ``L + L(L-1)/2``, ops in 0-5, skip bits 0/1.

    Raises:
        ValueError: naming the first offending position.
    """
    a = np.asarray(arc)
    if a.ndim != 1 or a.size != arc_size(layers):
        raise ValueError(f"arc: expected {arc_size(layers)} integers for {layers} layers "
                         f"(L + L(L-1)/2), got shape {a.shape}")  # fmt: skip
    if not np.all(a == np.round(a)):
        raise ValueError(f"arc: expected integers, got {a.tolist()}")
    a = a.astype(np.int64)
    for k, off in enumerate(_offsets(layers)):
        if not 0 <= a[off] < len(OPS):
            raise ValueError(f"arc[{off}] (layer {k}'s op): expected 0..{len(OPS) - 1}, got {a[off]}")
        bits = a[off + 1 : off + 1 + k]
        if np.any((bits != 0) & (bits != 1)):
            bad = off + 1 + int(np.argmax((bits != 0) & (bits != 1)))
            raise ValueError(f"arc[{bad}] (a skip bit of layer {k}): expected 0 or 1, got {a[bad]}")
    return a


def arc_to_selection(arc: jax.Array, layers: int) -> dict[str, Any]:
    """The supernet's ``"arch"`` collection for ``arc`` (``[..., L + L(L-1)/2]`` ints).

    Pure ``jnp`` indexing with static positions, so it runs inside ``jit`` and on a batch of arcs
    (leading axes are kept: ``[P, size]`` gives leaves ``[P]`` and ``[P, k]``). Values are not
    checked here (a traced arc cannot be); :func:`check_arc` checks a concrete one.
    """
    arc = jnp.asarray(arc)
    out: dict[str, Any] = {}
    for k, (path, off) in enumerate(zip(_layer_paths(layers), _offsets(layers), strict=True)):
        out[path] = {"choice": arc[..., off].astype(jnp.int32)}
        if k:
            out[f"{path}_skip"] = {"gates": arc[..., off + 1 : off + 1 + k].astype(jnp.float32)}
    return out


def selection_to_arc(selection: dict[str, Any], layers: int) -> np.ndarray:
    """Inverse of :func:`arc_to_selection` for one selection (concrete values)."""
    parts = []
    for k, path in enumerate(_layer_paths(layers)):
        parts.append(np.asarray(selection[path]["choice"]).reshape(1))
        if k:
            parts.append(np.asarray(selection[f"{path}_skip"]["gates"]).reshape(k))
    return check_arc(np.concatenate(parts).astype(np.int64), layers)


def arc_to_string(arc: Any, layers: int) -> str:
    """The released code's text form: the integers separated by spaces (``best_arc.txt``)."""
    return " ".join(str(int(v)) for v in check_arc(arc, layers))


def arc_from_string(text: str, layers: int | None = None) -> np.ndarray:
    """Parses an arc written by the released code (spaces, commas or brackets between integers).

    ``layers`` defaults to the one whose arc size matches the number of integers.

    Raises:
        ValueError: not integers, or a count that is no arc size.
    """
    tokens = text.replace(",", " ").replace("[", " ").replace("]", " ").split()
    try:
        values = [int(t) for t in tokens]
    except ValueError:
        raise ValueError(f"arc: expected integers separated by spaces, got {text[:80]!r}") from None
    if layers is None:
        sizes = {arc_size(n): n for n in range(1, 64)}
        if len(values) not in sizes:
            raise ValueError(f"arc: {len(values)} integers is no arc size (L + L(L-1)/2: "
                             f"{', '.join(str(s) for s in list(sizes)[:8])}, ...)")  # fmt: skip
        layers = sizes[len(values)]
    return check_arc(np.asarray(values, np.int64), layers)


def random_arcs(key: jax.Array, layers: int, n: int, *, skip_prob: float = 0.5) -> jax.Array:
    """``n`` uniform arcs ``[n, L + L(L-1)/2]`` int32: ops uniform, each skip on w.p. ``skip_prob``
    (the random-search baseline's distribution)."""
    k_op, k_skip = jax.random.split(key)
    ops = jax.random.randint(k_op, (n, layers), 0, len(OPS), jnp.int32)
    bits = jax.random.bernoulli(k_skip, skip_prob, (n, arc_size(layers))).astype(jnp.int32)
    op_at = np.zeros(arc_size(layers), bool)
    op_at[_offsets(layers)] = True
    return jnp.where(op_at, jnp.zeros_like(bits).at[:, _offsets(layers)].set(ops), bits)


def search_spec(arc: Any, layers: int, filters: int = 36, **space: Any) -> Spec:
    """The search form of ``arc``: the supernet's sub-network as a plain spec."""
    spec = macro_space(layers, filters, **space)
    return materialize(spec, arc_to_selection(check_arc(arc, layers), layers))


def retrain_spec(
    arc: Any,
    layers: int,
    filters: int = 36,
    *,
    input_shape: Sequence[int] = (32, 32, 3),
    num_classes: int = 10,
    dropout: float = 0.0,
    skips: str = "paper",
) -> Spec:
    """The retraining form of ``arc`` (ENAS's fixed-arc child; module docstring).

    Width ``filters`` in the first segment, doubled at each reduction; every layer after the
    first merges its selected skips by ``concat_conv``; ``dropout`` before the classifier (the
    paper retrains with it; NHN's search and re-training without).
    """
    _check_sizes(layers, filters)
    a = check_arc(arc, layers)
    stages, offsets = [], _offsets(layers)
    for i, ks in enumerate(stage_of_layers(layers)):
        width = filters * 2**i
        blocks = []
        for k in ks:
            op = layer_ops(width)[int(a[offsets[k]])]
            bits = a[offsets[k] + 1 : offsets[k] + 1 + k]
            chosen = tuple(s for s, on in zip(_skips(k, skips), bits, strict=True) if on)
            blocks.append(Cell(branches=(op,), gated_skips=chosen,
                               gated_merge="concat_conv" if k else None))  # fmt: skip
        stages.append(Stage(blocks=tuple(blocks), reduce=width if i else None,
                            name=f"segment{i}"))  # fmt: skip
    return Spec(
        input_shape=tuple(input_shape),
        num_classes=num_classes,
        stem=(Conv(filters=filters, kernel=3, act=None),),
        stages=tuple(stages),
        head=Head(kind="dense", dropout=dropout) if dropout else Head(),
        name=f"enas_arc_{layers}x{filters}",
    )


# ----------------------------------------------------------------------------------------------
# The controller
# ----------------------------------------------------------------------------------------------


class Controller(nn.Module):
    """ENAS's macro controller: a one-layer LSTM (no biases, as released) that emits an arc.

    Per layer ``k`` it runs the LSTM on the current input, samples the op from
    ``tanh_constant * tanh(h @ w_soft)`` (6 logits), feeds the op's embedding back, runs the LSTM
    again, and samples each of the ``k`` skip decisions by attention over the anchors of the
    earlier steps: ``q_j = v . tanh(W1 anchor_j + W2 h)``, logits ``tanh_constant * tanh([-q_j,
    q_j])`` (so ``P(skip_j) = sigmoid(2 * 1.5 tanh(q_j))``, the released code's distribution). The
    next input is the mean of the chosen anchors (divided by ``1 + number chosen``), or the
    learned start embedding for layer 0. All weights start uniform in ``[-0.1, 0.1]``.

    ``__call__(key, arc=None)`` returns ``{"arc", "log_prob", "entropy", "skip_penalty",
    "skip_count", "log_probs"}``: ``arc`` sampled with ``key`` (or the given one, teacher-forced:
    its log-probability), ``log_prob`` the sum of every decision's log-probability
    (``log_probs``, one per arc integer), ``entropy`` the sum of the decisions' entropies (of
    their whole distributions; the released code uses ``-p log p`` of the sampled action only),
    ``skip_penalty`` the mean over layers of ``sum_j KL(Bernoulli(P(skip_j)) || Bernoulli(
    skip_target))`` (the released code evaluates it at ``sigmoid(logit)``, not at the sampling
    probability; here it is the sampling probability), ``skip_count`` the skips chosen.
    """

    layers: int
    lstm_size: int = 64
    num_ops: int = len(OPS)
    tanh_constant: float = 1.5
    skip_target: float = 0.4

    @nn.compact
    def __call__(self, key: jax.Array, arc: jax.Array | None = None) -> dict[str, jax.Array]:
        h_size = self.lstm_size
        init = nn.initializers.uniform(0.2)

        def param(name, shape):
            return self.param(name, lambda k, s: init(k, s) - 0.1, shape)

        w_lstm = param("w_lstm", (2 * h_size, 4 * h_size))
        g_emb, w_emb = param("g_emb", (1, h_size)), param("w_emb", (self.num_ops, h_size))
        w_soft = param("w_soft", (h_size, self.num_ops))
        w_attn_1, w_attn_2 = param("w_attn_1", (h_size, h_size)), param("w_attn_2", (h_size, h_size))
        v_attn = param("v_attn", (h_size, 1))

        def lstm(x, c, h):
            i, f, o, g = jnp.split(jnp.concatenate([x, h], axis=-1) @ w_lstm, 4, axis=-1)
            c = jax.nn.sigmoid(i) * jnp.tanh(g) + jax.nn.sigmoid(f) * c
            return c, jax.nn.sigmoid(o) * jnp.tanh(c)

        def decide(logits, key, given):
            """Samples (or takes ``given``) from categorical ``logits [..., n]``; returns the
            choice, its log-probability and the distribution's entropy."""
            choice = jax.random.categorical(key, logits) if given is None else given
            logp = jax.nn.log_softmax(logits)
            chosen = jnp.take_along_axis(logp, choice[..., None], axis=-1)[..., 0]
            entropy = -jnp.sum(jnp.exp(logp) * logp, axis=-1)
            return choice.astype(jnp.int32), chosen, entropy

        offsets = _offsets(self.layers)
        keys = jax.random.split(key, 2 * self.layers)
        c = h = jnp.zeros((1, h_size))
        x = g_emb
        anchors, anchors_w1 = [], []
        decisions, log_probs, entropies, penalties, skip_count = [], [], [], [], 0.0
        for k in range(self.layers):
            c, h = lstm(x, c, h)
            logits = self.tanh_constant * jnp.tanh(h[0] @ w_soft)
            given = None if arc is None else arc[offsets[k]]
            op, lp, ent = decide(logits, keys[2 * k], given)
            decisions.append(op[None])
            log_probs.append(lp[None])
            entropies.append(ent)
            c, h = lstm(w_emb[op][None], c, h)
            if k:
                query = jnp.tanh(jnp.concatenate(anchors_w1, axis=0) + h @ w_attn_2) @ v_attn
                logits = self.tanh_constant * jnp.tanh(jnp.concatenate([-query, query], axis=1))
                given = None if arc is None else arc[offsets[k] + 1 : offsets[k] + 1 + k]
                skip, lp, ent = decide(logits, keys[2 * k + 1], given)
                decisions.append(skip)
                log_probs.append(lp)
                entropies.append(jnp.sum(ent))
                p = jax.nn.softmax(logits)[:, 1]
                t = self.skip_target
                kl = p * jnp.log(p / t) + (1 - p) * jnp.log((1 - p) / (1 - t))
                penalties.append(jnp.sum(kl))
                skip = skip.astype(jnp.float32)
                skip_count = skip_count + jnp.sum(skip)
                x = (skip[None, :] @ jnp.concatenate(anchors, axis=0)) / (1.0 + jnp.sum(skip))
            else:
                x = g_emb
            anchors.append(h)
            anchors_w1.append(h @ w_attn_1)
        log_probs = jnp.concatenate(log_probs)
        return {
            "arc": jnp.concatenate(decisions),
            "log_prob": jnp.sum(log_probs),
            "log_probs": log_probs,
            "entropy": jax.lax.stop_gradient(sum(entropies)),
            "skip_penalty": jnp.mean(jnp.stack(penalties)) if penalties else jnp.zeros(()),
            "skip_count": jnp.asarray(skip_count, jnp.float32),
        }


@functools.partial(jax.jit, static_argnums=(0,))
def init_controller(controller: Controller, key: jax.Array) -> Any:
    """The controller's variables (``{"params": ...}``), compiled once per controller."""
    return controller.init(key, jax.random.key(0))


@functools.partial(jax.jit, static_argnums=(0, 3))
def sample_arcs(controller: Controller, params: Any, key: jax.Array, n: int) -> dict[str, jax.Array]:
    """``n`` arcs from the controller in one vmapped, jitted call (each output gains ``[n]``)."""
    return jax.vmap(lambda k: controller.apply(params, k))(jax.random.split(key, n))


def moving_baselines(baseline: jax.Array, rewards: jax.Array, decay: float) -> jax.Array:
    """The baseline each reward is compared with: updated *before* use, one reward at a time
    (``b <- b - (1 - decay) (b - R)``, as released); the last entry is the new baseline."""

    def step(b, r):
        b = b - (1.0 - decay) * (b - r)
        return b, b

    return jax.lax.scan(step, jnp.asarray(baseline, jnp.float32), rewards)[1]


def reinforce_loss(
    params: Any,
    controller: Controller,
    arcs: jax.Array,
    accuracies: jax.Array,
    baseline: jax.Array,
    *,
    entropy_weight: float = 1e-4,
    skip_weight: float = 0.8,
    baseline_decay: float = 0.99,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """REINFORCE with a moving-average baseline and ENAS's skip penalty, averaged over a batch.

    For arc ``t``: reward ``R_t = accuracy_t + entropy_weight * entropy_t``, baseline ``b_t``
    (:func:`moving_baselines`), loss ``-log p(arc_t) (R_t - b_t) + skip_weight * penalty_t``; the
    batch's loss is the mean (ENAS aggregates 20 arcs' gradients per controller step).

    Returns ``(loss, aux)``; ``aux["baseline"]`` is the baseline after the batch.
    """
    out = jax.vmap(lambda a: controller.apply(params, jax.random.key(0), a))(arcs)
    rewards = accuracies + entropy_weight * out["entropy"]
    baselines = moving_baselines(baseline, jax.lax.stop_gradient(rewards), baseline_decay)
    advantage = jax.lax.stop_gradient(rewards - baselines)
    loss = jnp.mean(-out["log_prob"] * advantage + skip_weight * out["skip_penalty"])
    aux = {"baseline": baselines[-1], "reward": jnp.mean(rewards),
           "entropy": jnp.mean(out["entropy"]), "skip_rate": _skip_rate(arcs, controller.layers)}  # fmt: skip
    return loss, aux


def _skip_rate(arcs: jax.Array, layers: int) -> jax.Array:
    """The fraction of skip decisions that are on."""
    n_skips = arc_size(layers) - layers
    if not n_skips:
        return jnp.zeros(())
    op_at = np.zeros(arc_size(layers), bool)
    op_at[_offsets(layers)] = True
    return jnp.sum(jnp.where(op_at, 0, arcs)) / (n_skips * arcs.shape[0])


# ----------------------------------------------------------------------------------------------
# The search (a thin resumable driver over the pure pieces above)
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """ENAS macro search settings (defaults: the paper and the released macro script).

    Child: ``layers`` x ``filters``, Nesterov momentum ``child_momentum``, L2 ``child_l2`` (the
    loss gains ``l2 * sum(w^2)``, as released), cosine learning rate with warm restarts from
    ``child_lr_max`` to ``child_lr_min`` (first period ``lr_t0`` epochs, then ``lr_tmul`` times
    longer; 310 epochs is 4 restarts), clipping at ``child_clip`` (``None``: off) by global norm
    (``clip_mode="global"``) or per tensor (``"tensor"``, the released default mode; the
    released code computes clipped gradients and then applies the unclipped ones), a fresh arc
    every step, no dropout, ``augment``: the dataset's crop (+ flip where labels allow;
    :func:`fnnjax.train.augmentation_for`; the released search pads 4, crops and flips CIFAR).
    Controller: ``controller_steps`` Adam steps (``controller_lr``, beta1 0, eps 1e-3) after each
    child epoch, each over ``arcs_per_step`` arcs scored on their own validation minibatch of
    ``reward_batch`` examples (inference-mode BatchNorm, as released). ``random_search``: the
    baseline (uniform arcs: every op and every skip bit equally likely; no controller).
    Derivation: ``derive_arcs`` arcs scored on the same ``derive_batches`` validation
    minibatches (the paper: one); the best is exported. ``skips``: the skip convention
    (:func:`macro_space`).
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
    skips: str = "paper"


def cosine_restarts(step: jax.Array, steps_per_epoch: int, config: SearchConfig) -> jax.Array:
    """ENAS's learning rate at ``step``: cosine within a period, epoch-granular (released)."""
    epoch = (step // steps_per_epoch).astype(jnp.float32)
    t_i, start = jnp.asarray(config.lr_t0, jnp.float32), jnp.asarray(0.0, jnp.float32)
    for _ in range(64):  # enough restarts for any run (floats: the periods grow geometrically)
        passed = epoch >= start + t_i
        start = jnp.where(passed, start + t_i, start)
        t_i = jnp.where(passed, t_i * config.lr_tmul, t_i)
    rate = (epoch - start) / t_i
    lo, hi = config.child_lr_min, config.child_lr_max
    return lo + 0.5 * (hi - lo) * (1.0 + jnp.cos(jnp.pi * rate))


def _clip_each_tensor(bound: float) -> optax.GradientTransformation:
    """Scales every gradient tensor whose l2 norm exceeds ``bound`` down to it (``tf.clip_by_norm``
    per variable, the released code's ``clip_mode="norm"``)."""

    def clip(updates, params=None):
        del params
        return jax.tree_util.tree_map(
            lambda g: g * jnp.minimum(1.0, bound / jnp.maximum(jnp.linalg.norm(g), 1e-12)), updates
        )

    return optax.stateless(clip)


def child_optimizer(config: SearchConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    """L2 (as a gradient ``2 * l2 * w``), optional clipping, Nesterov SGD on the cosine rate."""
    parts = [optax.add_decayed_weights(2.0 * config.child_l2)]
    if config.child_clip is not None:
        if config.clip_mode not in ("global", "tensor"):
            raise ValueError(f"clip_mode: expected 'global' or 'tensor', got {config.clip_mode!r}")
        parts.append(optax.clip_by_global_norm(config.child_clip) if config.clip_mode == "global"
                     else _clip_each_tensor(config.child_clip))  # fmt: skip
    schedule = functools.partial(cosine_restarts, steps_per_epoch=steps_per_epoch, config=config)
    parts.append(optax.sgd(schedule, momentum=config.child_momentum, nesterov=True))
    return optax.chain(*parts)


def arc_accuracies(model: nn.Module, variables: Any, arcs: jax.Array, x: jax.Array, y: jax.Array,
                   layers: int) -> jax.Array:  # fmt: skip
    """Accuracy of each arc ``[P, size]`` on its own batch ``x [P, B, ...]`` with the shared
    weights in inference mode (BatchNorm on the shared running statistics), as the released
    ``build_valid_rl`` scores rewards."""

    def one(arc, xb, yb):
        logits = model.apply({**variables, "arch": arc_to_selection(arc, layers)}, xb)
        return jnp.mean(jnp.argmax(logits, -1) == yb)

    return jax.vmap(one)(arcs, x, y)


_selection = jax.jit(arc_to_selection, static_argnums=1)
_learning_rate = jax.jit(cosine_restarts, static_argnums=(1, 2))


def _controller_step_fn(model: nn.Module, controller: Controller, tx, config: SearchConfig):
    """One jitted controller step: sample arcs, score them, REINFORCE, Adam."""

    def step(cparams, copt, baseline, variables, key, x, y):
        k_sample, _ = jax.random.split(key)
        arcs = sample_arcs(controller, cparams, k_sample, config.arcs_per_step)["arc"]
        acc = arc_accuracies(model, variables, arcs, x, y, config.layers)
        grads, aux = jax.grad(reinforce_loss, has_aux=True)(
            cparams, controller, arcs, acc, baseline, entropy_weight=config.entropy_weight,
            skip_weight=config.skip_weight, baseline_decay=config.baseline_decay)  # fmt: skip
        updates, copt = tx.update(grads, copt, cparams)
        aux = {**aux, "accuracy": jnp.mean(acc), "arcs": arcs, "accuracies": acc}
        return optax.apply_updates(cparams, updates), copt, aux["baseline"], aux

    return jax.jit(step)


def search(
    data: Any,
    config: SearchConfig = SearchConfig(),
    out_dir: str | None = None,
    *,
    seed: int = 0,
    resume: bool = True,
    log: Any = print,
) -> dict[str, Any]:
    """Runs ENAS's macro search on ``data`` (a :class:`fnnjax.train.Dataset` with a validation
    split; the test split is never read) and exports the result.

    Each epoch: one pass of child training (a fresh arc per step, sampled by the controller, or
    uniform with ``random_search``), then the controller's steps. The whole search state (shared
    weights and their optimizer, controller and its optimizer, baseline) is checkpointed after
    every epoch in ``out_dir/checkpoints``; keys and data orders derive from ``(seed, epoch)``,
    so a killed search resumed from its folder ends as an uninterrupted one. ``out_dir`` receives
    ``search.jsonl`` (per epoch: child loss and accuracy, controller reward, entropy, baseline,
    skip rate, validation accuracy of the sampled arcs), ``arcs.jsonl`` (every arc the controller
    sampled in its steps, with its reward accuracy), ``search.png``, and at the end
    ``best_arc.txt`` (released format), ``best_spec.json`` (retraining form),
    ``search_spec.json`` (search form) and ``top_arcs.json``.

    Returns:
        ``{"best_arc", "best_accuracy", "top", "history", "state"}``.

    Raises:
        ValueError: no validation split, or too few training examples for one batch.
    """
    from fnnjax.arch.serialize import to_json  # noqa: PLC0415
    from fnnjax.train.checkpoint import Checkpoints  # noqa: PLC0415
    from fnnjax.train.rundir import (  # noqa: PLC0415
        _truncate_jsonl,
        append_jsonl,
        archive_previous_run,
    )

    if len(data.validation) < config.reward_batch:
        raise ValueError(f"data.validation: ENAS scores arcs on validation batches of "
                         f"{config.reward_batch}; load the dataset with validation_fraction > 0 "
                         f"(it has {len(data.validation)} examples)")  # fmt: skip
    steps = len(data.train) // config.batch_size
    if steps < 1:
        raise ValueError(f"data.train: {len(data.train)} examples is less than one batch of "
                         f"{config.batch_size}")  # fmt: skip
    # Fields the compiled parts do not read are normalized, so that e.g. a random search after an
    # ENAS search (or a resumed one with more epochs) reuses the compiled steps.
    parts_key = dataclasses.replace(config, epochs=1, derive_arcs=1, derive_batches=1,
                                    random_search=False)  # fmt: skip
    model, engine, controller, ctx, controller_step, score = _search_parts(
        parts_key, tuple(data.input_shape), data.num_classes, steps,
        data.name if config.augment else None,
    )
    k_controller, k_child, k_epochs, k_derive = jax.random.split(jax.random.key(seed), 4)
    cparams = init_controller(controller, k_controller)
    state = {"child": engine.init(k_child, data.input_shape),
             "controller": cparams, "controller_opt": ctx.init(cparams),
             "baseline": jnp.zeros((), jnp.float32)}  # fmt: skip
    out = None if out_dir is None else Path(out_dir)
    history: list[dict[str, Any]] = []
    start = 0
    ckpt = None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        if not resume:
            archive_previous_run(out, SEARCH_FILES)
        ckpt = Checkpoints(out / "checkpoints", max_to_keep=2)
        check = functools.partial(_check_same_search, config=config, seed=seed, out=out)
        restored = ckpt.restore_latest(state, check=check) if resume else None
        if restored is not None:
            state, meta = restored
            start = int(meta["epoch"]) + 1
            _truncate_jsonl(out / "search.jsonl", start - 1)
            _truncate_jsonl(out / "arcs.jsonl", start - 1)
            history = [json.loads(ln) for ln in (out / "search.jsonl").read_text().splitlines()
                       if ln.strip()] if (out / "search.jsonl").exists() else []  # fmt: skip
            log(f"resuming the search after epoch {start - 1} from {out / 'checkpoints'}")
        else:
            for name in ("search.jsonl", "arcs.jsonl"):
                (out / name).unlink(missing_ok=True)
    x_train, y_train = jax.device_put(data.train.x), jax.device_put(data.train.y)
    x_val, y_val = np.asarray(data.validation.x), np.asarray(data.validation.y)
    for epoch in range(start, config.epochs):
        k_arcs, k_ctrl = jax.random.split(jax.random.fold_in(k_epochs, epoch))
        rng = np.random.default_rng([seed, epoch])
        order = rng.permutation(len(data.train))[: steps * config.batch_size]
        order = order.reshape(steps, config.batch_size)
        if config.random_search:
            arcs = random_arcs(k_arcs, config.layers, steps)
        else:
            arcs = sample_arcs(controller, state["controller"], k_arcs, steps)["arc"]
        child, losses, accs = state["child"], [], []
        for s in range(steps):
            child = child.replace(collections={**child.collections,
                                               "arch": _selection(arcs[s], config.layers)})  # fmt: skip
            child, metrics = engine.train_steps(child, x_train, y_train, order[s : s + 1])
            losses.append(metrics["loss"])
            accs.append(metrics["accuracy"])
        state = {**state, "child": child}
        record = {"epoch": epoch, "child_loss": float(np.mean(losses)),
                  "child_accuracy": float(np.mean(accs)),
                  "lr": float(_learning_rate(child.step - 1, steps, config))}  # fmt: skip
        if not config.random_search:
            variables = child.variables()
            cparams, copt, baseline = (state["controller"], state["controller_opt"],
                                       state["baseline"])  # fmt: skip
            auxes = []
            for t in range(config.controller_steps):
                idx = rng.integers(0, len(x_val), (config.arcs_per_step, config.reward_batch))
                cparams, copt, baseline, aux = controller_step(
                    cparams, copt, baseline, variables, jax.random.fold_in(k_ctrl, t),
                    x_val[idx], y_val[idx])  # fmt: skip
                auxes.append(aux)
            state = {**state, "controller": cparams, "controller_opt": copt, "baseline": baseline}
            sampled = [{"epoch": epoch, "step": t,
                        "arcs": [arc_to_string(a, config.layers) for a in np.asarray(aux["arcs"])],
                        "accuracy": np.asarray(aux["accuracies"]).round(6).tolist()}
                       for t, aux in enumerate(auxes)]  # fmt: skip
            scalars = [k for k in auxes[0] if k not in ("arcs", "accuracies")]
            mean = {k: float(np.mean([a[k] for a in auxes])) for k in scalars}
            record.update(reward=mean["reward"], entropy=mean["entropy"], skip_rate=mean["skip_rate"],
                          valid_accuracy=mean["accuracy"], baseline=float(baseline))  # fmt: skip
        history.append(record)
        log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in record.items()))  # fmt: skip
        if out is not None:
            for line in [] if config.random_search else sampled:
                append_jsonl(out / "arcs.jsonl", line)
            append_jsonl(out / "search.jsonl", record)
            ckpt.save(epoch, state, {"epoch": epoch, "config": dataclasses.asdict(config),
                                     "seed": seed})  # fmt: skip
    if ckpt is not None:
        ckpt.close()
    top = derive(model, controller, state, data, config, k_derive, score=score)
    best = np.asarray(top[0]["arc"])
    result = {"best_arc": best, "best_accuracy": top[0]["accuracy"], "top": top,
              "history": history, "state": state}  # fmt: skip
    if out is not None:
        (out / "best_arc.txt").write_text(arc_to_string(best, config.layers) + "\n")
        kw = {"input_shape": data.input_shape, "num_classes": data.num_classes}
        kw["skips"] = config.skips
        (out / "best_spec.json").write_text(
            to_json(retrain_spec(best, config.layers, config.filters, **kw), indent=1))
        (out / "search_spec.json").write_text(
            to_json(search_spec(best, config.layers, config.filters, **kw), indent=1))  # fmt: skip
        (out / "top_arcs.json").write_text(json.dumps(
            [{"arc": arc_to_string(t["arc"], config.layers), "accuracy": t["accuracy"]}
             for t in top], indent=1))  # fmt: skip
        if history:
            _plot_search(history, out / "search.png")
    return result


@functools.lru_cache(maxsize=8)
def _search_parts(config: SearchConfig, input_shape: tuple[int, ...], num_classes: int, steps: int,
                  augment: str | None):  # fmt: skip
    """The supernet, its engine, the controller, its optimizer and the jitted steps of a search,
    built once per setting in a process (a resumed or repeated search compiles nothing new)."""
    from fnnjax.arch.build import build_model  # noqa: PLC0415
    from fnnjax.train import Engine, augmentation_for  # noqa: PLC0415

    space = macro_space(config.layers, config.filters, input_shape=input_shape,
                        num_classes=num_classes, mode=config.mode, skips=config.skips)  # fmt: skip
    model = build_model(space)
    aug = None if augment is None else augmentation_for(augment, input_shape)
    engine = Engine(model, child_optimizer(config, steps), augment=aug)
    controller = Controller(config.layers, config.lstm_size, tanh_constant=config.tanh_constant,
                            skip_target=config.skip_target)  # fmt: skip
    ctx = optax.adam(config.controller_lr, b1=0.0, eps=1e-3)
    score = jax.jit(lambda v, a, x, y: arc_accuracies(model, v, a, x, y, config.layers))
    return model, engine, controller, ctx, _controller_step_fn(model, controller, ctx, config), score


SEARCH_FILES = ("checkpoints", "damaged", "search.jsonl", "arcs.jsonl", "search.png",
                "best_arc.txt", "best_spec.json", "search_spec.json", "top_arcs.json")  # fmt: skip


def _check_same_search(meta: dict[str, Any], *, config: SearchConfig, seed: int, out: Path) -> None:
    """Refuses to resume a folder holding another search (any setting but ``epochs`` differs)."""
    saved = dict(meta.get("config", {}), seed=meta.get("seed"))
    now = dict(dataclasses.asdict(config), seed=seed)
    diff = [f"{k}: {saved.get(k)!r} there, {now[k]!r} now" for k in now
            if k != "epochs" and saved.get(k) != now[k]]  # fmt: skip
    if diff:
        raise ValueError(f"{out} holds a different search ({'; '.join(diff[:3])}); pass another "
                         f"out folder, or resume=False (--no-resume) to start afresh (the old "
                         f"files are moved to {out}/previous-<time>/)")  # fmt: skip


def _plot_search(history: list[dict[str, Any]], path: Path) -> None:
    """The search's curves: child loss and accuracy; with a controller, its reward, baseline,
    sampled arcs' validation accuracy, entropy and skip rate."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    epochs = [h["epoch"] for h in history]
    controlled = "reward" in history[0]
    fig, axes = plt.subplots(1, 3 if controlled else 1, figsize=(12 if controlled else 4, 3.2),
                             squeeze=False)  # fmt: skip
    ax = axes[0, 0]
    ax.plot(epochs, [h["child_accuracy"] for h in history], "o-", label="child accuracy (train)")
    ax.plot(epochs, [h["child_loss"] for h in history], "o-", label="child loss")
    if controlled:
        ax.plot(epochs, [h["valid_accuracy"] for h in history], "o-",
                label="sampled arcs (validation)")  # fmt: skip
        for key in ("reward", "baseline"):
            axes[0, 1].plot(epochs, [h[key] for h in history], "o-", label=key)
        axes[0, 2].plot(epochs, [h["skip_rate"] for h in history], "o-", label="skip rate")
        twin = axes[0, 2].twinx()
        twin.plot(epochs, [h["entropy"] for h in history], "s--", color="gray", label="entropy")
        twin.set_ylabel("entropy")
    for a in axes[0]:
        a.set_xlabel("epoch")
        a.legend(fontsize=7)
        a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def derive(model, controller, state, data, config: SearchConfig, key, *, score=None
           ) -> list[dict[str, Any]]:  # fmt: skip
    """Scores ``config.derive_arcs`` arcs (sampled by the controller, or uniform for random
    search) on ``config.derive_batches`` validation minibatches each with the shared weights;
    returns them best first as ``[{"arc", "accuracy"}]`` (ties keep sampling order)."""
    k_arcs, k_data = jax.random.split(key)
    if config.random_search:
        arcs = random_arcs(k_arcs, config.layers, config.derive_arcs)
    else:
        arcs = sample_arcs(controller, state["controller"], k_arcs, config.derive_arcs)["arc"]
    variables = state["child"].variables()
    rng = np.random.default_rng(np.asarray(jax.random.key_data(k_data)).tolist())
    x_val, y_val = np.asarray(data.validation.x), np.asarray(data.validation.y)
    if score is None:
        score = jax.jit(lambda v, a, x, y: arc_accuracies(model, v, a, x, y, config.layers))
    total = np.zeros(config.derive_arcs)
    for _ in range(config.derive_batches):
        idx = rng.integers(0, len(x_val), config.reward_batch)
        xs = np.broadcast_to(x_val[idx], (config.derive_arcs, *x_val[idx].shape))
        ys = np.broadcast_to(y_val[idx], (config.derive_arcs, config.reward_batch))
        total += np.asarray(score(variables, arcs, xs, ys))
    acc = total / config.derive_batches
    order = np.argsort(-acc, kind="stable")
    return [{"arc": np.asarray(arcs[i]), "accuracy": float(acc[i])} for i in order]
