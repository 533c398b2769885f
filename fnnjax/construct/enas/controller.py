"""ENAS's LSTM controller and its REINFORCE update (see :mod:`fnnjax.construct.enas`)."""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from fnnjax.construct.enas.space import OPS, _offsets, arc_size


class Controller(nn.Module):
    """ENAS's macro controller: a one-layer LSTM (no biases, as released) that emits an arc.

    Per layer ``k`` it runs the LSTM on the current input, samples the op from
    ``tanh_constant * tanh(h @ w_soft)`` (6 logits), feeds the op's embedding back, runs the LSTM
    again, and samples each of the ``k`` skip decisions by attention over the anchors of the
    earlier steps: ``q_j = v . tanh(W1 anchor_j + W2 h)``, logits ``tanh_constant * tanh([-q_j,
    q_j])`` (so ``P(skip_j) = sigmoid(2 * c tanh(q_j))`` with ``c = tanh_constant``, the released
    code's distribution). The
    next input is the mean of the chosen anchors (divided by ``1 + number chosen``), or the
    learned start embedding for layer 0. All weights start uniform in ``[-0.1, 0.1]``.
    ``temperature`` (None: off, as the released macro script; the paper: 5.0) divides both kinds
    of logits before the tanh, as the released code does when it is set.

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
    temperature: float | None = None

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

        def cool(logits):  # the paper's temperature, before the tanh (as released)
            return logits if self.temperature is None else logits / self.temperature

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
            logits = self.tanh_constant * jnp.tanh(cool(h[0] @ w_soft))
            given = None if arc is None else arc[offsets[k]]
            op, lp, ent = decide(logits, keys[2 * k], given)
            decisions.append(op[None])
            log_probs.append(lp[None])
            entropies.append(ent)
            c, h = lstm(w_emb[op][None], c, h)
            if k:
                query = jnp.tanh(jnp.concatenate(anchors_w1, axis=0) + h @ w_attn_2) @ v_attn
                logits = self.tanh_constant * jnp.tanh(cool(jnp.concatenate([-query, query],
                                                                            axis=1)))  # fmt: skip
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
    skip_penalty_in: str = "loss",
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """REINFORCE with a moving-average baseline and ENAS's skip penalty, averaged over a batch.

    For arc ``t``: reward ``R_t = accuracy_t + entropy_weight * entropy_t``, baseline ``b_t``
    (:func:`moving_baselines`), loss ``-log p(arc_t) (R_t - b_t) + skip_weight * penalty_t``; the
    batch's loss is the mean (ENAS aggregates 20 arcs' gradients per controller step).
    ``skip_penalty_in="reward"`` (the paper's wording: the KL term is added to the reward) moves
    the penalty into the reward instead, ``R_t -= skip_weight * penalty_t``, where it reaches
    the controller only through REINFORCE's ``log p`` term; ``"loss"`` (default) is the released
    code's, a differentiable penalty on the skip probabilities.

    Returns ``(loss, aux)``; ``aux["baseline"]`` is the baseline after the batch.

    Raises:
        ValueError: an unknown ``skip_penalty_in``.
    """
    if skip_penalty_in not in ("loss", "reward"):
        raise ValueError(f"skip_penalty_in: expected 'loss' or 'reward', got {skip_penalty_in!r}")
    out = jax.vmap(lambda a: controller.apply(params, jax.random.key(0), a))(arcs)
    rewards = accuracies + entropy_weight * out["entropy"]
    penalty = skip_weight * out["skip_penalty"]
    if skip_penalty_in == "reward":
        rewards = rewards - jax.lax.stop_gradient(penalty)
        penalty = jnp.zeros_like(penalty)
    baselines = moving_baselines(baseline, jax.lax.stop_gradient(rewards), baseline_decay)
    advantage = jax.lax.stop_gradient(rewards - baselines)
    loss = jnp.mean(-out["log_prob"] * advantage + penalty)
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


ADAM_FORMS = ("tensorflow", "optax")


def scale_by_tensorflow_adam(b1: float = 0.9, b2: float = 0.999,
                             eps: float = 1e-8) -> optax.GradientTransformation:  # fmt: skip
    """Adam's direction as TensorFlow 1's ``tf.train.AdamOptimizer`` computes it (the released
    ENAS controller's optimizer): ``sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)``.

    optax's :func:`optax.scale_by_adam` divides by ``sqrt(v_hat) + eps`` with the
    bias-corrected ``v_hat = v / (1 - b2^t)``; TensorFlow adds ``eps`` to the uncorrected
    ``sqrt(v)``. The two agree when ``eps`` is negligible against ``sqrt(v)``; ENAS's controller
    has ``eps = 1e-3`` and REINFORCE gradients far below it, where optax's early steps are up
    to ``1 / sqrt(1 - b2)`` (about 32x with ``b2 = 0.999``) larger. The state is optax's
    :class:`optax.ScaleByAdamState`, so the two forms' states are interchangeable.
    """

    def init(params):
        zeros = optax.tree_utils.tree_zeros_like(params)
        return optax.ScaleByAdamState(count=jnp.zeros((), jnp.int32), mu=zeros,
                                      nu=optax.tree_utils.tree_zeros_like(params))  # fmt: skip

    def update(updates, state, params=None):
        del params
        mu = jax.tree_util.tree_map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, updates)
        nu = jax.tree_util.tree_map(lambda v, g: b2 * v + (1 - b2) * g * g, state.nu, updates)
        count = state.count + 1
        t = count.astype(jnp.float32)
        scale = jnp.sqrt(1 - b2**t) / (1 - b1**t)
        out = jax.tree_util.tree_map(lambda m, v: scale * m / (jnp.sqrt(v) + eps), mu, nu)
        return out, optax.ScaleByAdamState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformation(init, update)


def controller_adam(learning_rate: float, *, form: str = "tensorflow", b1: float = 0.0,
                    b2: float = 0.999, eps: float = 1e-3) -> optax.GradientTransformation:  # fmt: skip
    """The controller's Adam (released ENAS: beta1 0, eps 1e-3) in TensorFlow's ``form``
    (:func:`scale_by_tensorflow_adam`, default) or ``"optax"``'s (:func:`optax.adam`); both keep
    the same state tree."""
    if form not in ADAM_FORMS:
        raise ValueError(f"controller_adam: expected one of {ADAM_FORMS}, got {form!r}")
    if form == "optax":
        return optax.adam(learning_rate, b1=b1, b2=b2, eps=eps)
    return optax.chain(scale_by_tensorflow_adam(b1, b2, eps),
                       optax.scale_by_learning_rate(learning_rate))  # fmt: skip
