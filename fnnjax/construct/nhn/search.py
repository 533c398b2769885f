"""The LDS driver (NHN section 2.3 and section 3, "Neuron hierarchy search"): shared add-on weights
trained and scored over a population, location cycles then direction cycles, resumable.

Weight sharing
    The base (pruned) network becomes the add-on supernet (:func:`~fnnjax.construct.nhn.genes.
    addon_space`): its variables are transplanted, the new rows of the entry convs that read
    add-on channels start at zero, so every individual starts as the base network. Only add-on
    weights train: the add-on units (conv, BatchNorm) and the entry-conv rows reading them; every
    other gradient is zeroed before the optimizer (existing weights stay fixed, the paper). The
    BatchNorm running statistics of the whole network follow the training batches (they are not
    weights; scoring uses them in inference mode).

One cycle
    ``K`` individuals (gene codes, or directions at the chosen locations); individual ``k``
    trains on its own ``M`` batches of ``batch_size`` (Algorithm 1's
    ``B_train^{(k-1)M+1 .. kM}``: a cycle of the paper's 20 x 25 x 100 is one pass over CIFAR-10's
    50,000 training images; here the cycle's batches are drawn from a fresh permutation, wrapping
    around when the split is smaller), one after another on the shared weights (the paper's
    sequential training; on accelerators each individual's ``M`` steps are one compiled scan).
    Then the whole population is scored in one compiled, vmapped call (split across devices) on
    ``N`` validation batches of ``score_batch`` (the paper: ``N = 1`` batch of 500, of the test
    set, which we do not use; every individual is scored on the same batches, where Algorithm 1
    gives each its own, so that the ranking compares individuals, not batches). Algorithm 1
    evaluates each individual right after its own training; scoring them together after the
    cycle is what lets one call score all, and BatchNorm is why it stays fair: with the shared
    running statistics (momentum 0.9: after ``M = 25`` steps 93% of them come from the last
    individual trained) every earlier individual would be scored under another's statistics, so
    by default (``score_bn="batch"``) each individual normalizes with the scoring batch's own
    statistics under its own selection. Fitness is the accuracy. The learning rate follows one
    cosine from ``lr_max`` to ``lr_min`` (0.05 to 0.001) over all cycles of both searches.

Choices where the paper is silent, and departures
    During the location search every add-on neuron reads every channel of its input (the paper
    searches directions only afterwards); the direction search then trains and scores sparse
    masks (about 10% of the channels), so the add-ons' output scale drops at the switch, which
    ``lds.png`` shows. The shared weights keep one Nesterov momentum buffer across individuals
    (an edge the next individual does not select still moves for a few steps by momentum; no
    weight decay by default, so nothing else moves it). Individuals train one after another
    (the paper), or simultaneously with ``train_mode="simultaneous"`` (each step averages every
    individual's gradient on its own batch: :class:`LdsConfig`). When the training split holds fewer than ``K * M * batch_size``
    examples (a 10% validation hold-out of CIFAR-10 leaves 45,000 of the paper's 50,000), a
    cycle's batches wrap around the permutation, so some individuals share examples.
    Eligible channels for directions: :mod:`~fnnjax.construct.nhn.evolve`; in ENAS's retraining
    form every layer after the first ends in a ``concat_conv`` merge that DNP leaves whole, so
    there every channel is eligible and the std threshold only narrows reads of the first layer
    (and of any layer without a merge).

Outputs (``out_dir``): ``lds.jsonl`` (per cycle: phase, best / mean / worst fitness, the best
genes or the edges' connection counts, the mean training loss), ``checkpoints/`` (the whole
search state every cycle: weights, optimizer state, the searches' states, the data position),
``supernet_spec.json`` (every possible location), ``genes.json`` (the chosen locations),
``directions.npz`` (the chosen connection masks) and ``lds.png``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fnnjax.checks import check_choice, check_int
from fnnjax.construct.nhn.evolve import (
    DirectionConfig,
    LocationConfig,
    direction_ask,
    direction_init,
    direction_tell,
    eligible_channels,
    location_ask,
    location_init,
    location_tell,
)
from fnnjax.construct.nhn.genes import (
    addon_space,
    gene_locations,
    gene_space,
    genes_to_selection,
    population_arch,
)
from fnnjax.train.runfolder import RunFolder
from fnnjax.train.sharding import data_mesh, fetch, primary_only

__all__ = ["LdsConfig", "lds", "trainable_mask"]

LDS_FILES = ("lds.jsonl", "checkpoints", "damaged", "supernet_spec.json", "genes.json", "directions.npz",
             "lds.png")  # fmt: skip


@dataclasses.dataclass(frozen=True)
class LdsConfig:
    """LDS settings (defaults: the paper's, section 3).

    Attributes:
        neurons: add-on neurons per location (the paper does not say; a parameter).
        kernels: add-on kernel sizes, one gene group each (3x3 and 5x5).
        location: the location search (:class:`~fnnjax.construct.nhn.evolve.LocationConfig`).
        direction: the direction search (:class:`~fnnjax.construct.nhn.evolve.DirectionConfig`).
        location_cycles, direction_cycles: ``T`` of each search (the paper: 300 and 300).
        train_batches: ``M`` batches per individual per cycle (25).
        batch_size: 100.
        score_batches: ``N`` validation batches per cycle (1).
        score_batch: 500.
        lr_max, lr_min: the cosine's ends (0.05, 0.001); SGD with Nesterov momentum ``momentum``.
        weight_decay: L2 on the add-on weights (the paper gives none for LDS; default 0, so an
            edge no individual selects is never moved by decay).
        augment: the dataset's crop/flip on the training batches.
        score_bn: how scoring normalizes: ``"batch"`` (default: every individual with the
            scoring batch's own statistics under its own selection) or ``"running"`` (the shared
            running statistics, which after a cycle are mostly those of the last individuals
            trained, so the ranking would favour them).
        train_mode: ``"sequential"`` (the paper: individual after individual, ``M`` steps each)
            or ``"simultaneous"``: ``M`` steps, each on ``K`` batches at once, individual ``k``
            reading its own batch ``m`` under its own selection, the update the mean of their
            gradients (BatchNorm running statistics: the mean of the individuals' updates). The
            same data per cycle in ``K`` times fewer, ``K`` times larger steps (one vmapped
            call each).
    """

    neurons: int = 8
    kernels: tuple[int, ...] = (3, 5)
    location: LocationConfig = LocationConfig()
    direction: DirectionConfig = DirectionConfig()
    location_cycles: int = 300
    direction_cycles: int = 300
    train_batches: int = 25
    batch_size: int = 100
    score_batches: int = 1
    score_batch: int = 500
    lr_max: float = 0.05
    lr_min: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 0.0
    augment: bool = True
    score_bn: str = "batch"
    train_mode: str = "sequential"

    def __post_init__(self):
        object.__setattr__(self, "kernels", tuple(int(k) for k in self.kernels))
        for name in ("neurons", "location_cycles", "train_batches", "batch_size", "score_batches",
                     "score_batch"):  # fmt: skip
            check_int(name, getattr(self, name))
        check_int("direction_cycles", self.direction_cycles, 0)
        check_choice("train_mode", self.train_mode, ("sequential", "simultaneous"))
        check_choice("score_bn", self.score_bn, ("batch", "running"))
        if not 0 <= self.lr_min <= self.lr_max:
            raise ValueError(f"lr_min, lr_max: expected 0 <= lr_min <= lr_max, got "
                             f"{self.lr_min}, {self.lr_max}")  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def cycles(self) -> int:
        return self.location_cycles + self.direction_cycles


def trainable_mask(base: Any, supernet: Any, params: Mapping[str, Any]) -> dict[str, Any]:
    """A params-shaped tree of 0/1: 1 on the add-on units and on the rows of each entry conv that
    read add-on channels (rows past the base network's input width of that unit)."""
    from fnnjax.arch.shapes import infer_layers  # noqa: PLC0415

    base_cin = {u.path: u.cin for u in infer_layers(base)}
    widened = {u.path: base_cin[u.path] for u in infer_layers(supernet)
               if u.path in base_cin and u.cin > base_cin[u.path]}  # fmt: skip

    def mask(path, leaf):
        keys = [str(getattr(k, "key", k)) for k in path]
        if any("_addon" in k for k in keys):
            return jnp.ones_like(leaf)
        unit = "/".join(keys[:-2])
        if keys[-2:] == ["conv", "kernel"] and unit in widened:
            return jnp.zeros_like(leaf).at[..., widened[unit]:, :].set(1)
        return jnp.zeros_like(leaf)

    return jax.tree_util.tree_map_with_path(mask, params)


def _masked(mask: Any) -> optax.GradientTransformation:
    """Multiplies the updates by a fixed 0/1 tree (frozen weights get exactly zero updates)."""

    def update(updates, state, params=None):
        return jax.tree_util.tree_map(lambda u, m: u * m.astype(u.dtype), updates, mask), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def _optimizer(config: LdsConfig, mask: Any) -> optax.GradientTransformation:
    per_cycle = config.train_batches * (1 if config.train_mode == "simultaneous"
                                        else config.location.population)  # fmt: skip
    steps = config.cycles * per_cycle
    schedule = optax.cosine_decay_schedule(config.lr_max, steps, alpha=config.lr_min / config.lr_max
                                           if config.lr_max else 0.0)  # fmt: skip
    return optax.chain(optax.add_decayed_weights(config.weight_decay), _masked(mask),
                       optax.sgd(schedule, momentum=config.momentum, nesterov=True))  # fmt: skip


def _joint_step(model: Any, tx: optax.GradientTransformation, objective: Any, augment: Any):
    """``step(state, archs [K, ...], x_all, y_all, idx [K, batch]) -> (state, losses [K])``: one
    update from the mean of the ``K`` individuals' gradients (``train_mode="simultaneous"``)."""

    def loss_fn(params, collections, archs, xs, ys, key):
        def one(arch, x, y, k):
            noise, drop = jax.random.split(k)
            x = x if augment is None else augment(noise, x)
            out, upd = model.apply({"params": params, **collections, "arch": arch}, x, train=True,
                                   mutable=["batch_stats"], rngs={"dropout": drop})  # fmt: skip
            return objective.evaluate(out, y)["loss"].mean(), upd["batch_stats"]

        keys = jax.random.split(key, xs.shape[0])
        losses, stats = jax.vmap(one)(archs, xs, ys, keys)
        return losses.mean(), (losses, jax.tree_util.tree_map(lambda s: s.mean(0), stats))

    @jax.jit
    def step(state, archs, x_all, y_all, idx):
        key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
        fixed = {k: v for k, v in state.collections.items() if k not in ("arch", "batch_stats", "stats")}
        collections = {**fixed, "batch_stats": state.collections["batch_stats"]}
        (_, (losses, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, collections, archs, x_all[idx], y_all[idx], key)  # fmt: skip
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                             opt_state=opt_state,
                             collections={**state.collections, "batch_stats": stats}), losses  # fmt: skip

    return step


def _cycle_orders(seed: int, cycle: int, n_train: int, k: int, config: LdsConfig) -> np.ndarray:
    """``[K, M, batch]`` training indices of one cycle (a fresh permutation, wrapped around)."""
    need = k * config.train_batches * config.batch_size
    rng = np.random.default_rng([seed, cycle])
    order = np.concatenate([rng.permutation(n_train) for _ in range(-(-need // n_train))])[:need]
    return order.reshape(k, config.train_batches, config.batch_size)


def _score_indices(cycle: int, n_val: int, config: LdsConfig) -> np.ndarray:
    size = config.score_batches * config.score_batch
    if n_val < size:
        return np.arange(n_val)
    start = (cycle * size) % n_val
    return (start + np.arange(size)) % n_val


def _edge_sources(supernet: Any) -> dict[str, tuple[int, int]]:
    """``{edge path: (source flat index, cin)}`` of every add-on edge."""
    from fnnjax.arch.shapes import infer_layers  # noqa: PLC0415
    from fnnjax.arch.spec import addon_name  # noqa: PLC0415

    cin = {u.path[: -len("/unit")]: u.cin for u in infer_layers(supernet) if "_addon" in u.path}
    return {addon_name(i, j, e): (a.source, cin[addon_name(i, j, e)])
            for i, st in enumerate(supernet.stages) for j, b in enumerate(st.blocks)
            for e, a in enumerate(b.addons)}  # fmt: skip


def lds(
    data: Any,
    spec: Any,
    variables: Mapping[str, Any],
    config: LdsConfig = LdsConfig(),
    out_dir: str | Path | None = None,
    *,
    seed: int = 0,
    resume: bool = True,
    log: Callable[[str], None] | None = print,
    num_devices: int | None = None,
) -> dict[str, Any]:
    """Runs LDS on the base network ``spec`` with trained ``variables`` (params, batch_stats and
    the DNP ``masks``) and returns ``{"genes", "locations", "directions", "supernet", "variables",
    "history"}``: the chosen gene code, its locations, ``{edge: [cin, neurons]}`` connection
    masks, the supernet spec and its trained variables (module docstring). The test split is
    never read. Same seed, same result. ``num_devices``: the training batches and the scored
    population are split across this many devices (default: all devices of all processes under
    ``jax.distributed``; in one process, the most that divide ``batch_size``:
    :func:`~fnnjax.train.sharding.data_mesh`). ``out_dir`` is a run folder
    (:class:`~fnnjax.train.runfolder.RunFolder`): a later call with the same settings, seed and
    data resumes after its last finished cycle.

    Raises:
        ValueError: no validation split, or a base network LDS cannot extend.
        RunMismatchError: ``out_dir`` holds another LDS search (a ``ValueError``).
    """
    if len(data.validation) == 0:
        raise ValueError("data.validation: LDS scores on a validation split, and it is empty; hold "
                         "out a share of the training split (--validation, or load_dataset's "
                         "validation_fraction)")  # fmt: skip
    num_devices = data_mesh((config.batch_size,), num_devices, flag="LDS's batch_size").size
    run, state = _setup(data, spec, variables, config, seed, num_devices)
    say = primary_only(log) or (lambda _: None)
    folder = RunFolder.open(out_dir, files=LDS_FILES, what="LDS search", driver="lds",
                            resume=resume)  # fmt: skip
    ckpt = folder.checkpoints(max_to_keep=2)
    now = {"config": config.to_dict(), "seed": seed, "dataset": data.describe()}
    try:  # an interrupted search still finishes writing its last checkpoint
        state, start, history = _restore(folder, ckpt, run, state, now, resume, say)
        fixed = run.fixed_locations(state) if "direction" in state else None
        for cycle in range(start, config.cycles):
            record, fixed = _cycle(run, state, cycle, fixed)
            history.append(record)
            say(f"LDS {record['phase']} cycle {cycle + 1}/{config.cycles}: best "
                f"{record['best']:.4f} mean {record['mean']:.4f} worst {record['worst']:.4f} "
                f"loss {record['train_loss']:.4f}")  # fmt: skip
            folder.append_jsonl("lds.jsonl", record)
            if ckpt is not None:
                genes = np.asarray(state["location"].best_genes).tolist()
                ckpt.save(cycle, _saved(state, run), {**now, "cycle": cycle,
                                                      "phase": record["phase"], "genes": genes})  # fmt: skip
    finally:
        if ckpt is not None:
            ckpt.close()
    finished = start >= config.cycles and folder.exists("genes.json")  # nothing new to write
    return _export(folder, run, state, history, write=not finished)


@dataclasses.dataclass
class _Lds:
    """What an LDS search holds fixed (:func:`_setup`): the settings, the base network and its
    host ``variables``, the gene space, the add-on supernet, the base network's ``"arch"``
    values, the engine (with its simultaneous step ``joint``), the data (training split on the
    devices, validation on the host) and the keys of the direction search and of the cycles."""

    config: LdsConfig
    seed: int
    spec: Any
    variables: Any
    space: Any
    supernet: Any
    base_arch: dict[str, Any]
    engine: Any
    joint: Any
    repl: Any
    edges: dict[str, tuple[int, int]]
    train: tuple[Any, Any]
    val: tuple[np.ndarray, np.ndarray]
    k_dir: jax.Array
    k_cycles: jax.Array

    def chosen_edges(self, genes: Any) -> dict[str, tuple[int, int]]:
        """``{edge: (source, cin)}`` of the locations ``genes`` keeps."""
        return {loc["edge"]: self.edges[loc["edge"]] for loc in gene_locations(genes, self.space)}

    def fixed_locations(self, state: dict[str, Any]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The location search's best genes and, at their locations, the channels the
        direction search may connect (:func:`~fnnjax.construct.nhn.evolve.eligible_channels`)."""
        genes = np.asarray(state["location"].best_genes)
        return genes, eligible_channels(self.spec, self.variables, self.chosen_edges(genes))


def _setup(data: Any, spec: Any, variables: Mapping[str, Any], config: LdsConfig, seed: int,
           num_devices: int) -> tuple[_Lds, dict[str, Any]]:  # fmt: skip
    """The search's fixed parts and its initial state ``{"child", "location"}``: the base
    network's variables transplanted into the add-on supernet, only add-on weights trainable."""
    from fnnjax.arch import build_model, init_variables, transplant_params  # noqa: PLC0415
    from fnnjax.train import (  # noqa: PLC0415
        Engine,
        augmentation_for,
        initial_state,
        make_mesh,
        replicate,
        replicated_sharding,
    )

    variables = jax.device_get(variables)  # wherever they were trained: to the host
    space = gene_space(spec, config.kernels)
    supernet = addon_space(spec, config.neurons, config.kernels)
    model = build_model(supernet, use_masks=True)
    # model.init(key)'s draws, in one compile (eagerly: one compile per draw)
    fresh = init_variables(model, {"params": jax.random.key(seed)}, data.input_shape, batch=1)
    base_vars = {k: v for k, v in variables.items() if k != "arch"}
    moved = transplant_params(spec, base_vars, supernet, fresh)
    base_arch = {path: dict(leaves) for path, leaves in moved["arch"].items()}
    for path in base_arch:  # the base network's own gated skips keep their values
        if "_addon" not in path and "arch" in variables and path in variables["arch"]:
            base_arch[path] = dict(variables["arch"][path])
    mask = trainable_mask(spec, supernet, moved["params"])
    aug = augmentation_for(data) if config.augment else None
    aug = None if aug is None or aug.is_identity else aug
    engine = Engine(model, _optimizer(config, mask), make_mesh(num_devices), augment=aug,
                    eval_batch_size=config.score_batches * config.score_batch)  # fmt: skip
    # The supernet's state from the transplanted variables (no second init compiled).
    child = replicate(initial_state(jax.random.key(seed + 1), model, data.input_shape, engine.tx,
                                    moved), engine.mesh)  # fmt: skip
    repl = replicated_sharding(engine.mesh)
    train = jax.device_put((data.train.x, data.train.y), repl)
    joint = _joint_step(model, engine.tx, engine.objective, aug)
    k_loc, k_dir, k_cycles = jax.random.split(jax.random.key(seed), 3)
    if config.direction.population != config.location.population:
        raise ValueError(f"config: the direction population ({config.direction.population}) must "
                         f"equal the location population ({config.location.population}): the "
                         "data per cycle is K x M batches")  # fmt: skip
    run = _Lds(config, seed, spec, variables, space, supernet, base_arch, engine, joint, repl,
               _edge_sources(supernet), train,
               (np.asarray(data.validation.x), np.asarray(data.validation.y)), k_dir, k_cycles)  # fmt: skip
    return run, {"child": child, "location": location_init(k_loc, space, config.location)}


def _restore(folder: RunFolder, ckpt: Any, run: _Lds, state: dict[str, Any], now: dict[str, Any],
             resume: bool, say: Callable[[str], None]
             ) -> tuple[dict[str, Any], int, list[dict[str, Any]]]:  # fmt: skip
    """The state, first cycle and history to go on from: the folder's latest checkpoint, if it
    holds this search (settings, seed and data; a setting added since counts only when not at
    its default), with ``lds.jsonl`` cut to it; else ``state`` afresh. Records this start in
    the folder (:meth:`RunFolder.begin`)."""

    def template(meta: dict[str, Any]) -> dict[str, Any]:
        if meta.get("phase") != "direction":
            return _saved({"child": state["child"], "location": state["location"]}, run)
        chosen = run.chosen_edges(np.asarray(meta["genes"], np.int32))
        eligible = eligible_channels(run.spec, run.variables, chosen)
        dstate = direction_init(run.k_dir, eligible, run.config.neurons, run.config.direction)
        return _saved({"child": state["child"], "location": state["location"],
                       "direction": dstate}, run)  # fmt: skip

    def check(meta: dict[str, Any]) -> None:
        folder.check_same_run({k: meta.get(k) for k in now}, now,
                              defaults={"config": LdsConfig().to_dict()}, strip=("config.",))  # fmt: skip

    restored = ckpt.restore_latest(template, check=check) if ckpt is not None and resume else None
    if restored is None:
        folder.remove("lds.jsonl")
        folder.begin()
        return state, 0, []
    state, meta = restored
    state = {k: v if k == "child" else jax.tree_util.tree_map(jnp.asarray, fetch(v))
             for k, v in state.items()}  # the searches' states back on this process's device  # fmt: skip
    cycle = int(meta["cycle"])
    history = folder.truncate_jsonl("lds.jsonl", cycle, key="cycle")
    say(f"resuming LDS after cycle {cycle} from {folder.file('checkpoints')}")
    folder.begin(resumed_after_cycle=cycle)
    return state, cycle + 1, history


def _saved(state: dict[str, Any], run: _Lds) -> dict[str, Any]:
    """``state`` as checkpointed: the location and direction searches' states (kept on one
    device of each process, where every process computes them alike) replicated over the
    search's devices, which under ``jax.distributed`` span every process (orbax saves no
    array local to a process)."""
    return {k: v if k == "child" else jax.device_put(v, run.repl) for k, v in state.items()}


def _cycle(run: _Lds, state: dict[str, Any], cycle: int, fixed: tuple | None
           ) -> tuple[dict[str, Any], tuple | None]:  # fmt: skip
    """One cycle on ``state`` (updated in place): the population asked of the location or the
    direction search, trained on the shared weights, scored, told; returns the cycle's record
    and the fixed locations of the direction search (``(genes, eligible)``, set by its first
    cycle)."""
    from fnnjax.train import Split  # noqa: PLC0415

    config, K = run.config, run.config.location.population
    key = jax.random.fold_in(run.k_cycles, cycle)
    phase = "location" if cycle < config.location_cycles else "direction"
    if phase == "location":
        pop, state["location"] = location_ask(key, state["location"], run.space, config.location)
        gates = genes_to_selection(pop, run.space)
        arch = population_arch(run.base_arch, K, {p: {"gate": g} for p, g in gates.items()})
    else:
        if "direction" not in state:  # the first direction cycle: fix the locations
            fixed = run.fixed_locations(state)
            state["direction"] = direction_init(run.k_dir, fixed[1], config.neurons,
                                                config.direction)  # fmt: skip
        genes, eligible = fixed
        pop, state["direction"] = direction_ask(key, state["direction"], eligible,
                                                config.neurons, config.direction)  # fmt: skip
        gates = genes_to_selection(jnp.broadcast_to(jnp.asarray(genes), (K, run.space.size)),
                                   run.space)  # fmt: skip
        arch = population_arch(run.base_arch, K, {
            p: {"gate": g, **({"connections": pop[p]} if p in pop else {})}
            for p, g in gates.items()})  # fmt: skip
    losses = _train_population(run, state, arch, cycle)
    x_val, y_val = run.val
    idx = _score_indices(cycle, len(x_val), config)
    scores = run.engine.evaluate_population(state["child"], Split(x_val[idx], y_val[idx]), "arch",
                                            arch, batch_norm=config.score_bn)  # fmt: skip
    fitness = np.asarray(scores["accuracy"], np.float32)
    if phase == "location":
        state["location"] = location_tell(pop, fitness, state["location"])
        best = {"best_genes": np.asarray(state["location"].best_genes).tolist()}
    else:
        state["direction"] = direction_tell(pop, fitness, state["direction"])
        best = {"best_connections": {e: int(np.asarray(v).sum())
                                     for e, v in state["direction"].best.items()}}  # fmt: skip
    record = {"cycle": cycle, "phase": phase, "best": float(fitness.max()),
              "mean": float(fitness.mean()), "worst": float(fitness.min()),
              "train_loss": float(np.mean(losses)), **best}  # fmt: skip
    return record, fixed


def _train_population(run: _Lds, state: dict[str, Any], arch: Any, cycle: int) -> list[Any]:
    """Trains the shared weights (``state["child"]``, in place) for the individuals of ``arch``:
    one after another, or simultaneously (``train_mode``); returns the losses."""
    config, K = run.config, run.config.location.population
    (x_train, y_train), repl = run.train, run.repl
    orders = _cycle_orders(run.seed, cycle, len(x_train), K, config)
    child, losses = state["child"], []
    if config.train_mode == "simultaneous":
        archs = jax.device_put(arch, repl)
        for m in range(config.train_batches):
            child, loss = run.joint(child, archs, x_train, y_train, orders[:, m])
            losses.append(np.asarray(loss))
    for k in range(K if config.train_mode == "sequential" else 0):
        one = jax.device_put(jax.tree_util.tree_map(lambda leaf, k=k: leaf[k], arch), repl)
        child = child.replace(collections={**child.collections, "arch": one})
        child, metrics = run.engine.train_steps(child, x_train, y_train, orders[k])
        losses.append(np.asarray(metrics["loss"]))
    state["child"] = child.replace(collections={**child.collections,
                                                "arch": jax.device_put(run.base_arch, repl)})  # fmt: skip
    return losses


def _export(folder: RunFolder, run: _Lds, state: dict[str, Any], history: list[dict[str, Any]],
            *, write: bool = True) -> dict[str, Any]:  # fmt: skip
    """The search's result (:func:`lds`), written into its folder unless ``write`` is False (a
    finished search, run again: its files are already the result): the supernet's spec, the
    chosen genes and their locations, the connection masks and the fitness curves."""
    from fnnjax.arch import to_json  # noqa: PLC0415

    config, space = run.config, run.space
    genes = np.asarray(state["location"].best_genes)
    if "direction" in state:
        directions = {k: np.asarray(v) for k, v in state["direction"].best.items()}
    else:  # no direction cycles: every add-on neuron reads every channel
        directions = {e: np.ones((cin, config.neurons), np.float32)
                      for e, (_, cin) in run.chosen_edges(genes).items()}  # fmt: skip
    locations = gene_locations(genes, space)
    if not write:
        return {"genes": genes, "locations": locations, "directions": directions,
                "supernet": run.supernet, "space": space,
                "variables": state["child"].variables(), "history": history}  # fmt: skip
    folder.write_text("supernet_spec.json", to_json(run.supernet, indent=1))
    folder.write_json("genes.json", {"genes": genes.tolist(), "kernels": list(space.kernels),
                                     "low": list(space.low), "locations": locations})  # fmt: skip
    arrays = {k.replace("/", "."): v for k, v in directions.items()}
    folder.write_with("directions.npz", lambda path: np.savez(path, **arrays))
    if history:
        folder.figure("lds.png", functools.partial(_draw, history), size=(6, 3.5))
    return {"genes": genes, "locations": locations, "directions": directions,
            "supernet": run.supernet, "space": space, "variables": state["child"].variables(),
            "history": history}  # fmt: skip


def _draw(history: list[dict[str, Any]], fig: Any, ax: Any) -> None:
    """LDS's fitness per cycle (best, mean, worst), the switch to directions marked."""
    del fig
    c = [r["cycle"] for r in history]
    for key, style in (("best", "-"), ("mean", "--"), ("worst", ":")):
        ax.plot(c, [r[key] for r in history], style, label=key)
    split = next((r["cycle"] for r in history if r["phase"] == "direction"), None)
    if split is not None:
        ax.axvline(split - 0.5, color="grey", lw=0.8)
        ax.text(split, ax.get_ylim()[0], " directions", va="bottom", fontsize=8)
    ax.set_xlabel("cycle")
    ax.set_ylabel("validation accuracy")
    ax.set_title("LDS fitness (locations, then directions)")
    ax.legend()
