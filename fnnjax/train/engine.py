"""The low-level engine: the train state, jitted train/eval steps, statistics, populations.

:func:`fnnjax.train.fit` is built on these pieces; search loops (EnvelopeNets, ENAS, NHN, dynamic
capacity) call them directly: train ``k`` steps from a state, evaluate a state, evaluate a whole
population of selections at once, read and reset statistics, swap in a new model.

Collections. A model's variables are ``"params"`` (trained) and any number of other collections,
all carried by :class:`TrainState` in ``collections``:

* ``"batch_stats"``: BatchNorm running statistics, updated by every train step;
* selection collections (``"masks"``, ``"arch"``, ...): array leaves that switch parts of a
  network on or off; read, never updated by training; a population is a leading axis on one;
* ``"stats"``: the running sums of whatever the model sows into ``"intermediates"`` during a
  training forward pass (e.g. per-filter featuremap statistics), accumulated *inside* the jitted
  step: ``{"sum": tree, "count": steps}``. :func:`read_stats` gives the mean over the steps since
  the last :func:`reset_stats`. A model that sows nothing has no ``"stats"`` and pays nothing.

Every function takes the :class:`~fnnjax.train.objectives.Objective` (loss and metrics) to use;
the default is classification.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from fnnjax.checks import is_int
from fnnjax.errors import ConfigError
from fnnjax.train import sharding
from fnnjax.train.dataset import Split
from fnnjax.train.evaluation import (  # the engine's evaluation helpers (one package)
    _accumulate,
    _check_not_empty,
    _means,
    _padded_batches,
    evaluate,
    make_eval_step,
    make_population_eval_step,
)
from fnnjax.train.objectives import Objective, classification

__all__ = [
    "STATS",
    "Engine",
    "TrainState",
    "evaluate",
    "init_state",
    "make_eval_step",
    "make_train_step",
    "read_stats",
    "reset_stats",
]

STATS = "stats"  # the collection of accumulated statistics in TrainState.collections
SOWN = "intermediates"  # the Flax collection models sow statistics into
TRAINED_COLLECTIONS = ("batch_stats", STATS)  # collections a train step updates (and donates)
_RUN_ONCE_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}
GradientFn = Callable[..., tuple[dict[str, jax.Array], Any, Any]]
"""``gradient(variables, x, y, drop_key, objective) -> (metrics, grads, batch_stats)``: one
training batch's means, its gradients as the full ``params`` tree, the new batch statistics."""


@struct.dataclass
class TrainState:
    """The whole mutable state of a run, as one pytree (checkpointed as is).

    Attributes:
        step: number of optimizer updates done (int32 scalar).
        params: the model's ``"params"`` collection.
        collections: every other collection by name (``"batch_stats"``, selection collections
            such as ``"masks"``, and ``"stats"``, the accumulated statistics; see the module
            docstring). Empty for a model without any.
        opt_state: the optax optimizer state.
        rng: raw uint32 key of the training-noise stream (dropout, augmentation).
    """

    step: jax.Array
    params: Any
    collections: dict[str, Any]
    opt_state: Any
    rng: jax.Array

    @property
    def batch_stats(self) -> Any:
        """The ``"batch_stats"`` collection (empty dict if the model has none)."""
        return self.collections.get("batch_stats", {})

    def variables(self) -> dict[str, Any]:
        """The Flax variables dict for ``model.apply`` (params and every model collection)."""
        return {"params": self.params, **{k: v for k, v in self.collections.items() if k != STATS}}


def _sum_sown(sown: Any) -> Any:
    """Flax ``sow`` keeps a tuple per call; sum each tuple to one float32 array."""

    def total(calls):
        calls = calls if isinstance(calls, tuple) else (calls,)
        out = jnp.asarray(calls[0], jnp.float32)
        for value in calls[1:]:
            out = out + jnp.asarray(value, jnp.float32)
        return out

    return jax.tree_util.tree_map(total, sown, is_leaf=lambda x: isinstance(x, tuple))


def _empty_stats(sown: Any) -> dict[str, Any]:
    zeros = jax.tree_util.tree_map(jnp.zeros_like, _sum_sown(sown))
    return {"sum": zeros, "count": jnp.zeros((), jnp.int32)}


def read_stats(state: TrainState) -> Any:
    """Mean of each accumulated statistic over the train steps since the last reset.

    Returns the tree the model sows (one float32 array per statistic), or None when the model
    sows nothing. Before any step the means are zeros.
    """
    stats = state.collections.get(STATS)
    if stats is None:
        return None
    count = jnp.maximum(stats["count"], 1).astype(jnp.float32)
    return jax.tree_util.tree_map(lambda s: s / count, stats["sum"])


def reset_stats(state: TrainState) -> TrainState:
    """``state`` with its accumulated statistics zeroed (unchanged if it has none)."""
    stats = state.collections.get(STATS)
    if stats is None:
        return state
    zeroed = jax.tree_util.tree_map(jnp.zeros_like, stats)
    return state.replace(collections={**state.collections, STATS: zeroed})


def init_state(
    key: jax.Array, model: nn.Module, input_shape: tuple[int, ...], tx: optax.GradientTransformation
) -> TrainState:
    """Initializes params, every other collection and the optimizer state for ``input_shape``.

    Raises:
        ConfigError: the model cannot take inputs of that shape (the message names both).
    """
    if not jax.dtypes.issubdtype(jnp.asarray(key).dtype, jax.dtypes.prng_key):
        key = jax.random.wrap_key_data(key)  # a legacy raw uint32 key
    init_key, rng = jax.random.split(key)
    params_key, dropout_key = jax.random.split(init_key)
    dummy = jnp.zeros((1, *input_shape), jnp.float32)
    try:
        # mutable=True: also what the model sows (Flax leaves "intermediates" out by default).
        init = jax.jit(lambda k, d: model.init({"params": k, "dropout": d}, dummy, train=False,
                                               mutable=True))  # fmt: skip
        traced = isinstance(params_key, jax.core.Tracer)  # under eval_shape/jit: nothing to compile
        if jax.default_backend() == "cpu" and not traced:
            # It runs once: without XLA's backend (LLVM) optimizations a deep model's threefry
            # draws compile several times faster on CPU (Inception: ~25 s -> ~7 s); the values
            # are deterministic and may differ from an optimized compile in the last bits.
            init = init.lower(params_key, dropout_key).compile(_RUN_ONCE_COMPILER_OPTIONS)
        variables = init(params_key, dropout_key)
    except Exception as error:
        raise ConfigError(
            f"model {type(model).__name__} cannot take inputs of shape {tuple(input_shape)}: "
            f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"
        ) from error
    variables = dict(variables)
    params = variables.pop("params")
    sown = variables.pop(SOWN, None)
    if STATS in variables:
        raise ConfigError(f"model {type(model).__name__} has a collection named {STATS!r}, "
                          "which the engine keeps for accumulated statistics; rename it")  # fmt: skip
    collections = dict(variables)
    if sown:
        collections[STATS] = _empty_stats(sown)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        collections=collections,
        opt_state=tx.init(params),
        rng=jax.random.key_data(rng),
    )


def _train_forward(
    model: nn.Module, objective: Objective, state: TrainState, params: Any, x, y, drop_key
):
    """Loss of one training batch and what it updates: (loss, (metrics, batch_stats, sown))."""
    mutable = ["batch_stats"] + ([SOWN] if STATS in state.collections else [])
    variables = {**state.variables(), "params": params}
    outputs, updates = model.apply(
        variables, x, train=True, rngs={"dropout": drop_key}, mutable=mutable
    )
    values = objective.evaluate(outputs, y)
    metrics = {k: v.mean() for k, v in values.items()}
    return metrics["loss"], (metrics, updates.get("batch_stats"), updates.get(SOWN))


def _apply_update(
    tx: optax.GradientTransformation, state: TrainState, grads, batch_stats, sown
) -> TrainState:
    params, opt_state, step = _gradient_update(tx, state.params, state.opt_state, state.step,
                                               grads)  # fmt: skip
    collections = dict(state.collections)
    if batch_stats is not None and "batch_stats" in collections:
        collections["batch_stats"] = batch_stats
    if STATS in collections:
        old = collections[STATS]
        collections[STATS] = {
            "sum": jax.tree_util.tree_map(jnp.add, old["sum"], _sum_sown(sown)),
            "count": old["count"] + 1,
        }
    return state.replace(step=step, params=params, collections=collections, opt_state=opt_state)


def _step_batch(augment, batch, rng, step, x_all, y_all, idx):
    """The batch ``x_all[idx]`` (augmented) and the dropout key of step ``step``: the step's key
    is the run's key with the step number folded in, split into augmentation and dropout keys."""
    x = jax.lax.with_sharding_constraint(x_all[idx], batch)
    y = jax.lax.with_sharding_constraint(y_all[idx], batch)
    step_key = jax.random.fold_in(jax.random.wrap_key_data(rng), step)
    noise_key, drop_key = jax.random.split(step_key)
    if augment is not None:
        x = augment(noise_key, x)
    return x, y, drop_key


def _gradient_update(tx: optax.GradientTransformation, params, opt_state, step, grads):
    """The optimizer applied to gradients computed elsewhere: ``(params, opt_state, step + 1)``."""
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, step + 1


def _step_body(model, tx, objective, augment, batch):
    """One optimizer step on ``x_all[idx]`` (shared by the one-step and k-step functions)."""

    def body(state: TrainState, x_all, y_all, idx):
        x, y, drop_key = _step_batch(augment, batch, state.rng, state.step, x_all, y_all, idx)
        grad_fn = jax.value_and_grad(
            lambda p: _train_forward(model, objective, state, p, x, y, drop_key), has_aux=True
        )
        (_, (metrics, batch_stats, sown)), grads = grad_fn(state.params)
        return _apply_update(tx, state, grads, batch_stats, sown), metrics

    return body


def make_train_step(
    model: nn.Module,
    tx: optax.GradientTransformation,
    mesh: jax.sharding.Mesh,
    *,
    augment: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
    objective: Objective | None = None,
) -> Callable[..., tuple[TrainState, dict[str, jax.Array]]]:
    """A jitted ``step(state, x_all, y_all, order, i) -> (state, metrics)``.

    The step trains on ``x_all[order[i]]``: ``x_all`` / ``y_all`` are the whole (replicated)
    training split, ``order`` is ``[steps_per_epoch, batch]`` indices; the gathered batch is
    sharded across ``mesh``'s data axis. ``state`` is donated, except its read-only collections
    (masks, ``"arch"``: arrays the caller may still hold). ``metrics`` holds the batch means of
    ``"loss"`` and of the objective's metrics (default: classification, ``"accuracy"``).
    """
    body = _step_body(model, tx, objective or classification(), augment,
                      sharding.batch_sharding(mesh))  # fmt: skip
    repl = sharding.replicated_sharding(mesh)

    def step(state: TrainState, x_all, y_all, order, i):
        return body(state, x_all, y_all, order[i])

    return _donating(step, repl)


def make_train_steps(
    model: nn.Module,
    tx: optax.GradientTransformation,
    mesh: jax.sharding.Mesh,
    *,
    augment: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
    objective: Objective | None = None,
) -> Callable[..., tuple[TrainState, dict[str, jax.Array]]]:
    """A jitted ``steps(state, x_all, y_all, orders) -> (state, metrics)``: one step per row.

    ``orders`` is ``[k, batch]`` indices; the ``k`` steps run in one ``lax.scan`` (one dispatch),
    bitwise the same as ``k`` calls of :func:`make_train_step`. ``metrics`` are ``[k]`` arrays.
    Meant for accelerators: on XLA:CPU a conv net's step inside the scan's loop ran 25x slower than
    the same step jitted alone (measured, see BENCHMARKS.md), so :meth:`Engine.train_steps` loops
    over single steps there.
    """
    body = _step_body(model, tx, objective or classification(), augment,
                      sharding.batch_sharding(mesh))  # fmt: skip
    repl = sharding.replicated_sharding(mesh)

    def steps(state: TrainState, x_all, y_all, orders):
        return jax.lax.scan(lambda s, idx: body(s, x_all, y_all, idx), state, orders)

    return _donating(steps, repl)


def _donating(fn: Callable[..., Any], repl: jax.sharding.NamedSharding) -> Callable[..., Any]:
    """``jit(fn)`` donating the state's buffers except its read-only collections.

    Selection collections (masks, ``"arch"``) are often arrays the caller still holds (a sampled
    architecture it will export); they go in as a separate, undonated argument and come back
    unchanged, so donation never deletes them under the caller.
    """

    def inner(state: TrainState, frozen: dict[str, Any], *args):
        new, metrics = fn(state.replace(collections={**state.collections, **frozen}), *args)
        kept = {k: v for k, v in new.collections.items() if k not in frozen}
        return new.replace(collections=kept), metrics

    jitted = jax.jit(inner, out_shardings=(repl, repl), donate_argnums=(0,))

    def call(state: TrainState, *args):
        frozen = {k: v for k, v in state.collections.items() if k not in TRAINED_COLLECTIONS}
        trained = {k: v for k, v in state.collections.items() if k in TRAINED_COLLECTIONS}
        new, metrics = jitted(state.replace(collections=trained), frozen, *args)
        return new.replace(collections={**new.collections, **frozen}), metrics

    call.jitted = jitted  # type: ignore[attr-defined]
    call._cache_size = jitted._cache_size  # type: ignore[attr-defined]  (compile counting)
    return call


class Engine:
    """The jitted steps of one model, for search loops that drive training themselves.

    Example::

        engine = Engine(model, tx, objective=regression())
        state = engine.init(jax.random.key(0), (8, 8, 1))
        state, metrics = engine.train_steps(state, x, y, orders)  # orders: [k, batch] indices
        scores = engine.evaluate_population(state, data.validation, "masks", population)

    Args:
        model: a Flax module following the :mod:`fnnjax.models` convention.
        tx: the optimizer.
        mesh: devices (default: one local device).
        objective: loss and metrics (default: classification).
        augment: ``augment(key, x) -> x`` applied to every training batch, or None.
        eval_batch_size: batch size of :meth:`evaluate` and :meth:`evaluate_population`.
    """

    def __init__(
        self,
        model: nn.Module,
        tx: optax.GradientTransformation,
        mesh: jax.sharding.Mesh | None = None,
        *,
        objective: Objective | None = None,
        augment: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
        eval_batch_size: int = 1000,
    ):
        self.model, self.tx = model, tx
        self.mesh = mesh or sharding.make_mesh(1)
        self.objective = objective or classification()
        self.eval_batch_size = eval_batch_size
        kw = {"augment": augment, "objective": self.objective}
        self.train_step = make_train_step(model, tx, self.mesh, **kw)
        self._train_steps = make_train_steps(model, tx, self.mesh, **kw)
        self.eval_step = make_eval_step(model, self.mesh, objective=self.objective)
        self._population_steps: dict[str, Callable[..., Any]] = {}
        batch, repl = sharding.batch_sharding(self.mesh), sharding.replicated_sharding(self.mesh)
        self._batch = jax.jit(lambda rng, step, x_all, y_all, orders, i: _step_batch(
            augment, batch, rng, step, x_all, y_all, orders[i]))  # fmt: skip
        self._update = jax.jit(functools.partial(_gradient_update, tx), donate_argnums=(0, 1),
                               out_shardings=repl)  # fmt: skip

    def init(self, key: jax.Array, input_shape: tuple[int, ...]) -> TrainState:
        """A fresh state (params, collections, optimizer state), replicated over the mesh."""
        return sharding.replicate(init_state(key, self.model, input_shape, self.tx), self.mesh)

    def _check_orders(self, orders: Any) -> jax.Array:
        orders = jnp.asarray(orders, jnp.int32)
        if orders.ndim != 2 or orders.shape[1] % self.mesh.size:
            raise ConfigError(
                f"orders: expected [steps, batch] indices with batch a multiple of "
                f"{self.mesh.size} devices, got shape {tuple(orders.shape)}"
            )
        return orders

    def train_steps(
        self, state: TrainState, x: Any, y: Any, orders: Any
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        """``k = len(orders)`` optimizer steps on ``x[orders[j]]`` in one jitted scan.

        ``x``, ``y``: the training arrays (put on the devices once by the caller for speed);
        ``orders``: ``[k, batch]`` int indices. Returns the new state (``state`` is donated) and
        ``[k]`` metrics. Statistics accumulate in ``state.collections["stats"]``. On CPU the steps
        are dispatched one by one (see :func:`make_train_steps`).
        """
        orders = self._check_orders(orders)
        # Once per call, not per step (a no-op for arrays already there).
        x, y = jax.device_put((x, y), sharding.replicated_sharding(self.mesh))
        if self.mesh.devices.flat[0].platform != "cpu":
            return self._train_steps(state, x, y, orders)
        # XLA:CPU runs convolutions inside a scan's while loop far slower (25x measured): on CPU
        # dispatch the jitted single step k times (the same results, bit for bit).
        metrics = []
        for i in range(orders.shape[0]):
            state, m = self.train_step(state, x, y, orders, i)
            metrics.append(m)
        return state, jax.tree_util.tree_map(lambda *v: jnp.stack(v), *metrics)

    def train_steps_with(
        self, state: TrainState, x: Any, y: Any, orders: Any, gradient: GradientFn
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        """``k = len(orders)`` optimizer steps whose gradients come from ``gradient``, a host-side
        function (e.g. :meth:`fnnjax.arch.SampledNet.value_and_grad`, which composes compiled
        pieces of a sampled architecture in Python).

        Each step is what :meth:`train_steps` does, in three parts: one jitted call gathers and
        augments the batch and derives the step's dropout key (the same keys as the jitted step),
        ``gradient(variables, x, y, drop_key, objective) -> (metrics, grads, batch_stats)``
        computes the batch means, the gradients as the full ``params`` tree and the new
        ``"batch_stats"``, and one jitted call applies the optimizer to every parameter. ``state``
        (params and optimizer state) is donated. Statistics collection is not supported.

        Raises:
            ConfigError: the state accumulates statistics (``"stats"``), or ``orders`` is not
                ``[k, batch]`` with a batch the devices divide.
        """
        if STATS in state.collections:
            raise ConfigError("train_steps_with: the model sows statistics, which a host-side "
                              "gradient function does not accumulate; use train_steps")  # fmt: skip
        orders = self._check_orders(orders)
        x, y = jax.device_put((x, y), sharding.replicated_sharding(self.mesh))
        metrics = []
        for i in range(orders.shape[0]):
            xb, yb, drop_key = self._batch(state.rng, state.step, x, y, orders, i)
            m, grads, batch_stats = gradient(state.variables(), xb, yb, drop_key, self.objective)
            params, opt_state, step = self._update(state.params, state.opt_state, state.step,
                                                   grads)  # fmt: skip
            collections = dict(state.collections)
            if "batch_stats" in collections:
                collections["batch_stats"] = batch_stats
            state = state.replace(step=step, params=params, opt_state=opt_state,
                                  collections=collections)  # fmt: skip
            metrics.append(m)
        return state, jax.tree_util.tree_map(lambda *v: jnp.stack(v), *metrics)

    def evaluate(self, state: TrainState, split: Split) -> dict[str, float]:
        """Mean loss and metrics on ``split``."""
        return evaluate(self.eval_step, state, split, batch_size=self.eval_batch_size,
                        mesh=self.mesh)  # fmt: skip

    def population_compiles(self) -> int:
        """How many times :meth:`evaluate_population` compiled (one per collection, BatchNorm
        mode and pattern of shared leaves; a new population of the same kind compiles nothing)."""
        return sum(step._cache_size() for step in self._population_steps.values())

    def evaluate_population(
        self, state: TrainState, split: Split, collection: str, population: Any, *,
        batch_norm: str = "running", chunk: int | None | str = "auto",
    ) -> dict[str, np.ndarray]:  # fmt: skip
        """Mean loss and metrics on ``split`` of every candidate: ``{name: [P]}``.

        ``population`` is ``state.collections[collection]`` with a leading axis ``P`` on every leaf
        (e.g. ``P`` mask sets or architecture selections); the candidates share params and batch
        statistics. The candidates are split across the engine's devices (the population is
        padded to a multiple of their number; the padding is dropped from the result).
        ``batch_norm="batch"``: each candidate normalizes with each evaluation batch's own
        statistics instead of the shared running ones (:func:`make_population_eval_step`).
        ``chunk``: candidates evaluated at once inside the one compiled call (None: all;
        ``"auto"``: one at a time on a single CPU device, where that is fastest, all elsewhere).

        Raises:
            ConfigError: ``state`` has no such collection, or the population's leaves do not
                match it (the message names the collection and the shapes).
        """
        _check_not_empty(split)
        if collection not in state.collections:
            raise ConfigError(f"collection: the state has no {collection!r} collection; it has "
                              f"{', '.join(sorted(state.collections)) or 'none'}")  # fmt: skip
        base = jax.tree_util.tree_structure(state.collections[collection])
        if jax.tree_util.tree_structure(population) != base:
            raise ConfigError(f"population: expected the tree of collection {collection!r} with a "
                              "leading candidate axis on every leaf")  # fmt: skip
        sizes = {np.shape(leaf)[0] if np.ndim(leaf) else None
                 for leaf in jax.tree_util.tree_leaves(population)}  # fmt: skip
        if None in sizes:
            raise ConfigError(f"population: every leaf of {collection!r} needs a leading candidate "
                              "axis [P, ...]; got a single selection (add the axis: x[None])")  # fmt: skip
        for leaf, ref in zip(jax.tree_util.tree_leaves(population),
                             jax.tree_util.tree_leaves(state.collections[collection]), strict=True):  # fmt: skip
            if tuple(np.shape(leaf)[1:]) != tuple(np.shape(ref)) or len(sizes) != 1:
                raise ConfigError(
                    f"population: every leaf of {collection!r} needs shape [P, *leaf shape] with "
                    f"one P; got {tuple(np.shape(leaf))} for a leaf of shape {tuple(np.shape(ref))}"
                )
        # Leaves every candidate shares go in once, unbatched (see make_population_eval_step).
        leaves, treedef = jax.tree_util.tree_flatten(population)
        leaves = [np.asarray(leaf) for leaf in leaves]
        shared = [bool(np.all(leaf == leaf[:1])) for leaf in leaves]
        if all(shared):
            shared[0] = False  # vmap needs one batched argument
        if chunk == "auto":
            one_cpu = self.mesh.size == 1 and self.mesh.devices.flat[0].platform == "cpu"
            chunk = 1 if one_cpu else None
        if chunk is not None and not (is_int(chunk) and chunk >= 1):
            raise ConfigError(f"chunk: expected a positive int, None or 'auto', got {chunk!r}")
        key = (collection, batch_norm, tuple(shared), chunk)
        if key not in self._population_steps:
            self._population_steps[key] = make_population_eval_step(
                self.model, self.mesh, collection, objective=self.objective,
                batch_norm=batch_norm, shared=tuple(shared), chunk=chunk)  # fmt: skip
        step = self._population_steps[key]
        size = sizes.pop()
        padded = -(-size // self.mesh.size) * self.mesh.size
        batch, repl = sharding.batch_sharding(self.mesh), sharding.replicated_sharding(self.mesh)
        leaves = [jax.device_put(leaf[0], repl) if s else jax.device_put(
                      np.concatenate([leaf] + [leaf[-1:]] * (padded - size)), batch)
                  for leaf, s in zip(leaves, shared, strict=True)]  # fmt: skip
        population = jax.tree_util.tree_unflatten(treedef, leaves)
        outputs = [
            step(state, population, *jax.device_put((x, y, m), repl))
            for x, y, m in _padded_batches(split, self.eval_batch_size, 1)
        ]
        return {k: v[:size] for k, v in _means(_accumulate(outputs)).items()}
