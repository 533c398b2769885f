"""ENAS macro search (Pham et al. 2018, "Efficient Neural Architecture Search via Parameter
Sharing", section 2.3; NHN section 2.1) as pure functions on the architecture IR.

Search space
    ``L`` layers of one width ``C``; layer ``k`` picks one of six ops (:data:`OPS`, indices 0-5:
    conv3x3, sep3x3, conv5x5, sep5x5, avgpool, maxpool) and may read every output *before its
    input* through a skip: the stem's and those of layers ``0 .. k-2`` (``k`` decisions; layer
    ``k - 1`` is already its input). This is the released code's indexing: its ``prev_layers``
    starts with the stem output, and skip bit ``i`` of layer ``k`` reads ``prev_layers[i]``.
    After layers ``L//3 - 1`` and ``2L//3 - 1`` every earlier output is halved by a factorized
    reduction (channel-preserving during the search, doubling the width when retraining).

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
The dense classifier has a bias (the released one has none).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

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
    "Controller",
    "arc_from_string",
    "arc_size",
    "arc_to_selection",
    "arc_to_string",
    "check_arc",
    "init_controller",
    "layer_ops",
    "macro_space",
    "moving_baselines",
    "pool_layers",
    "random_arcs",
    "reinforce_loss",
    "retrain_spec",
    "sample_arcs",
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


def _skips(k: int) -> tuple[int, ...]:
    """Flat sources of layer ``k``'s skips: the stem (-1) and layers ``0 .. k-2``."""
    return tuple(range(-1, k - 1))


def macro_space(
    layers: int = 12,
    filters: int = 36,
    *,
    input_shape: Sequence[int] = (32, 32, 3),
    num_classes: int = 10,
    mode: str = "auto",
) -> Spec:
    """The shared-weight supernet of ENAS's macro search space (module docstring).

    Args:
        layers: ``L`` (12 in NHN and ENAS).
        filters: the constant width ``C`` (36 in the paper's search).
        input_shape, num_classes: the data's.
        mode: the choice blocks' ``mode`` (``"auto"``: all candidates on CPU, ``lax.switch``
            elsewhere).

    Raises:
        ValueError: fewer than 1 layer or 2 filters (a reduction splits the width in two halves).
    """
    _check_sizes(layers, filters)
    stages = []
    for i, ks in enumerate(stage_of_layers(layers)):
        blocks = tuple(
            Choice(candidates=layer_ops(filters), mode=mode, gated_skips=_skips(k),
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
            skips = tuple(s for s, on in zip(_skips(k), bits, strict=True) if on)
            blocks.append(Cell(branches=(op,), gated_skips=skips,
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
