"""ENAS's search: a thin resumable driver over the space and the controller
(see :mod:`fnnjax.construct.enas`)."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from fnnjax.arch.sampled import SampledNet
from fnnjax.checks import check_choice
from fnnjax.construct.enas.config import SearchConfig, resolve_execution
from fnnjax.construct.enas.controller import (
    Controller,
    controller_adam,
    init_controller,
    reinforce_loss,
    sample_arcs,
)
from fnnjax.construct.enas.space import (
    arc_to_selection,
    arc_to_string,
    host_selection,
    macro_space,
    random_arcs,
    retrain_spec,
    search_spec,
)
from fnnjax.train.config import cosine_restarts as train_cosine_restarts
from fnnjax.train.runfolder import RunFolder
from fnnjax.train.sharding import data_mesh, in_order, primary_only, put_batch, replicate


def cosine_restarts(step: jax.Array, steps_per_epoch: int, config: SearchConfig) -> jax.Array:
    """ENAS's learning rate at ``step``: cosine within a period, epoch-granular (released); the
    schedule of ``fnnjax train --schedule cosine_restarts``
    (:func:`fnnjax.train.config.cosine_restarts`)."""
    return train_cosine_restarts(step, steps_per_epoch=steps_per_epoch, lr_max=config.child_lr_max,
                                 lr_min=config.child_lr_min, first=config.lr_t0,
                                 mult=config.lr_tmul)  # fmt: skip


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
        check_choice("clip_mode", config.clip_mode, ("global", "tensor"))
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


_learning_rate = jax.jit(cosine_restarts, static_argnums=(1, 2))
_accuracy = jax.jit(lambda logits, y: jnp.mean(jnp.argmax(logits, -1) == y))


def sampled_accuracies(net: SampledNet, variables: Any, arcs: Any, x: Any, y: Any,
                       layers: int, mesh: Any = None) -> jax.Array:  # fmt: skip
    """:func:`arc_accuracies` through the sampled execution path: each arc ``[P, size]`` scored on
    its own batch ``x [P, B, ...]`` (or every arc on one batch ``x [B, ...]``, when an arc
    repeated is scored once) with only its own ops computed, in inference mode. ``mesh``: each
    batch is split over its devices (:func:`~fnnjax.train.sharding.put_batch`)."""
    arcs = np.asarray(arcs)
    shared = np.ndim(x) == len(net.spec.input_shape) + 1
    if shared and mesh is not None:
        x, y = put_batch((x, y), mesh)  # once for every arc
    scores: dict[bytes, jax.Array] = {}
    out = []
    for p, arc in enumerate(arcs):
        if shared and arc.tobytes() in scores:
            out.append(scores[arc.tobytes()])
            continue
        xb, yb = (x, y) if shared else (x[p], y[p])
        if mesh is not None and not shared:
            xb, yb = put_batch((xb, yb), mesh)
        acc = in_order(_accuracy(net.apply(variables, host_selection(arc, layers), xb), yb))
        scores[arc.tobytes()] = acc
        out.append(acc)
    return jnp.stack(out)


def _reinforce_update(controller: Controller, tx, config: SearchConfig):
    """``update(cparams, copt, baseline, arcs, acc) -> (cparams, copt, baseline, aux)``: the
    REINFORCE loss of scored arcs and one Adam step (pure; jitted by the callers)."""

    def update(cparams, copt, baseline, arcs, acc):
        grads, aux = jax.grad(reinforce_loss, has_aux=True)(
            cparams, controller, arcs, acc, baseline, entropy_weight=config.entropy_weight,
            skip_weight=config.skip_weight, baseline_decay=config.baseline_decay,
            skip_penalty_in=config.skip_penalty_in)  # fmt: skip
        updates, copt = tx.update(grads, copt, cparams)
        aux = {**aux, "accuracy": jnp.mean(acc), "arcs": arcs, "accuracies": acc}
        return optax.apply_updates(cparams, updates), copt, aux["baseline"], aux

    return update


def _controller_step_fn(model: nn.Module, controller: Controller, tx, config: SearchConfig,
                        net: SampledNet | None = None, mesh: Any = None):  # fmt: skip
    """One controller step ``step(cparams, copt, baseline, variables, key, x, y)``: sample arcs,
    score them, REINFORCE, Adam. With the supernet, one jitted call; with the sampled path
    (``net``), the same keys split into a jitted sampling, the arcs scored one by one on the
    host's composition of their own ops, and a jitted update. ``mesh``: the reward batches
    ``x [P, B, ...]`` are split over its devices along ``B`` (the controller, a few kilobytes,
    runs replicated)."""
    update = _reinforce_update(controller, tx, config)

    def sample(cparams, key):
        k_sample, _ = jax.random.split(key)
        return sample_arcs(controller, cparams, k_sample, config.arcs_per_step)["arc"]

    if net is None:

        def step(cparams, copt, baseline, variables, key, x, y):
            arcs = sample(cparams, key)
            acc = arc_accuracies(model, variables, arcs, x, y, config.layers)
            return update(cparams, copt, baseline, arcs, acc)

        jitted = jax.jit(step)
        if mesh is None:
            return jitted
        return lambda *args: jitted(*args[:5], *put_batch(args[5:], mesh, axis=1))
    sample, update = jax.jit(sample), jax.jit(update)

    def composed(cparams, copt, baseline, variables, key, x, y):
        arcs = sample(cparams, key)
        acc = sampled_accuracies(net, variables, arcs, x, y, config.layers, mesh=mesh)
        return update(cparams, copt, baseline, arcs, acc)

    return composed


def search(
    data: Any,
    config: SearchConfig = SearchConfig(),  # noqa: B008 (frozen: one shared default is safe)
    out_dir: str | None = None,
    *,
    seed: int = 0,
    resume: bool = True,
    log: Any = print,
    num_devices: int | None = None,
) -> dict[str, Any]:
    """Runs ENAS's macro search on ``data`` (a :class:`fnnjax.train.Dataset` with a validation
    split; the test split is never read) and exports the result.

    Each epoch: one pass of child training (a fresh arc per step, sampled by the controller, or
    uniform with ``random_search``), then the controller's steps. The whole search state (shared
    weights and their optimizer, controller and its optimizer, baseline) is checkpointed after
    every epoch in ``out_dir/checkpoints``; keys and data orders derive from ``(seed, epoch)``,
    so a killed search resumed from its folder ends as an uninterrupted one. ``out_dir`` (a run
    folder, :class:`~fnnjax.train.runfolder.RunFolder`) receives ``search.jsonl`` (per epoch:
    child loss and accuracy, controller reward, entropy, baseline, skip rate, validation
    accuracy of the sampled arcs), ``arcs.jsonl`` (every arc the controller sampled in its
    steps, with its reward accuracy), ``search.png``, and at the end ``best_arc.txt`` (released
    format), ``best_arc.json`` (the arc with its layers, width, skip convention and head, which
    ``fnnjax nhn --arc`` reads), ``best_spec.json`` (retraining form), ``search_spec.json``
    (search form) and ``top_arcs.json``.

    Devices (:func:`~fnnjax.train.sharding.data_mesh`): ``num_devices`` (default: all devices of
    all processes under ``jax.distributed``; in one process, the most that divide
    ``batch_size``). Child training is data-parallel (each batch split over the devices,
    parameters replicated, BatchNorm over the whole batch), the reward and derivation batches
    are split likewise, and the controller runs replicated, so the same seed gives the same
    search on any number of devices or hosts up to the rounding of cross-device sums (which a
    search's discrete choices can amplify into other arcs: runs on one layout repeat bit for
    bit, and two processes of two devices match one process of four that uses the same
    collectives, ``tests/test_multihost_search.py``). Under
    ``jax.distributed`` every process calls :func:`search` with the same arguments; process 0
    alone writes ``out_dir`` (each writes its share of a checkpoint) and logs.

    Returns:
        ``{"best_arc", "best_accuracy", "top", "history", "state", "execution"}``
        (``execution``: the path that ran, :func:`resolve_execution`).

    Raises:
        ValueError: no validation split, or too few training examples for one batch.
        RunMismatchError: ``out_dir`` holds another search (a ``ValueError``).
    """
    steps = _steps_per_epoch(data, config)
    log = primary_only(log)
    mesh = data_mesh((config.batch_size,), num_devices)
    # Fields the compiled parts do not read are normalized, so that e.g. a random search after an
    # ENAS search (or a resumed one with more epochs) reuses the compiled steps.
    parts_key = dataclasses.replace(config, epochs=1, derive_arcs=1, derive_batches=1,
                                    random_search=False)  # fmt: skip
    parts = _search_parts(parts_key, tuple(data.input_shape), data.num_classes, steps,
                          data.name if config.augment else None, mesh)  # fmt: skip
    model, engine, controller, ctx, _, score, _, execution = parts
    log(f"execution: {execution} (mode {config.mode!r} on {jax.default_backend()}"
        f"{_devices_text(mesh)})")
    k_controller, k_child, k_epochs, k_derive = jax.random.split(jax.random.key(seed), 4)
    cparams = init_controller(controller, k_controller)
    state = {"child": engine.init(k_child, data.input_shape),
             **replicate({"controller": cparams, "controller_opt": ctx.init(cparams),
                          "baseline": jnp.zeros((), jnp.float32)}, mesh)}  # fmt: skip
    folder = RunFolder.open(out_dir, files=SEARCH_FILES, what="search", driver="enas",
                            resume=resume)  # fmt: skip
    ckpt = folder.checkpoints(max_to_keep=2)
    now = {"config": dataclasses.asdict(config), "seed": seed, "dataset": data.describe()}
    try:
        state, start, history = _restore_search(folder, ckpt, state, now, execution, resume, log,
                                                mesh.size)  # fmt: skip
        arrays = (*replicate((data.train.x, data.train.y), mesh),
                  np.asarray(data.validation.x), np.asarray(data.validation.y))  # fmt: skip
        for epoch in range(start, config.epochs):
            key = jax.random.fold_in(k_epochs, epoch)
            state, record, sampled = _search_epoch(parts, state, arrays, config, seed, epoch, key)
            history.append(record)
            log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                         for k, v in record.items()))  # fmt: skip
            for line in sampled:
                folder.append_jsonl("arcs.jsonl", line)
            folder.append_jsonl("search.jsonl", record)
            if ckpt is not None:
                ckpt.save(epoch, state, {"epoch": epoch, **now, "execution": execution,
                                         "devices": mesh.size})  # fmt: skip
    finally:
        if ckpt is not None:
            ckpt.close()
    top = derive(model, controller, state, data, config, k_derive, score=score)
    _export_search(folder, top, history, data, config)
    return {"best_arc": np.asarray(top[0]["arc"]), "best_accuracy": top[0]["accuracy"],
            "top": top, "history": history, "state": state, "execution": execution}  # fmt: skip


def _devices_text(mesh: Any) -> str:
    """``", 4 devices in 2 processes"`` (nothing on one device)."""
    if mesh.size == 1:
        return ""
    processes = jax.process_count()
    return f", {mesh.size} devices" + (f" in {processes} processes" if processes > 1 else "")


def _steps_per_epoch(data: Any, config: SearchConfig) -> int:
    """The child's steps per epoch, once ``data`` is known to suit a search."""
    if len(data.validation) < config.reward_batch:
        raise ValueError(f"data.validation: ENAS scores arcs on validation batches of "
                         f"{config.reward_batch}, but it has {len(data.validation)} examples; "
                         f"hold out at least {config.reward_batch} (a larger --validation share, "
                         "or load_dataset's validation_fraction)")  # fmt: skip
    steps = len(data.train) // config.batch_size
    if steps < 1:
        raise ValueError(f"data.train: {len(data.train)} examples is less than one batch of "
                         f"{config.batch_size}")  # fmt: skip
    return steps


def _restore_search(folder: RunFolder, ckpt: Any, state: dict[str, Any], now: dict[str, Any],
                    execution: str, resume: bool, log: Any, devices: int = 1
                    ) -> tuple[dict[str, Any], int, list[dict[str, Any]]]:  # fmt: skip
    """The search state, first epoch and history to go on from: the folder's latest checkpoint
    (if it holds this search, :func:`_refuse_another_search`) with the logs cut to it, or
    ``state`` afresh.
    Records this start in the folder (:meth:`RunFolder.begin`)."""
    check = functools.partial(_refuse_another_search, folder, now=now)
    restored = ckpt.restore_latest(state, check=check) if ckpt is not None and resume else None
    if restored is None:
        folder.remove("search.jsonl", "arcs.jsonl")
        folder.begin()
        return state, 0, []
    state, meta = restored
    epoch = int(meta["epoch"])
    saved_execution = meta.get("execution", "all (not recorded)")
    if saved_execution != execution:
        log(f"the search ran with execution {saved_execution!r} and resumes with {execution!r}: "
            "the same computation, rounded differently (it will not match an uninterrupted run "
            "bit for bit)")  # fmt: skip
    saved_devices = meta.get("devices", 1)
    if saved_devices != devices:
        log(f"the search ran on {saved_devices} device(s) and resumes on {devices}: the same "
            "computation, summed across devices in another order (it will not match an "
            "uninterrupted run bit for bit)")  # fmt: skip
    history = folder.truncate_jsonl("search.jsonl", epoch)
    folder.truncate_jsonl("arcs.jsonl", epoch)
    log(f"resuming the search after epoch {epoch} from {folder.file('checkpoints')}")
    folder.begin(resumed_after_epoch=epoch)
    return state, epoch + 1, history


def _search_epoch(parts: tuple, state: dict[str, Any], arrays: tuple, config: SearchConfig,
                  seed: int, epoch: int, key: jax.Array
                  ) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:  # fmt: skip
    """One epoch: a pass of child training, then (unless ``random_search``) the controller's
    steps; returns the new state, the epoch's record and the controller's sampled arcs."""
    _, engine, controller, _, controller_step, _, net, execution = parts
    x_train, y_train, x_val, y_val = arrays
    k_arcs, k_ctrl = jax.random.split(key)
    steps = len(x_train) // config.batch_size
    rng = np.random.default_rng([seed, epoch])  # the data order, then the reward batches
    order = rng.permutation(len(x_train))[: steps * config.batch_size]
    order = order.reshape(steps, config.batch_size)
    if config.random_search:
        arcs = random_arcs(k_arcs, config.layers, steps)
    else:
        arcs = sample_arcs(controller, state["controller"], k_arcs, steps)["arc"]
    child, losses, accs = state["child"], [], []
    arcs_host = np.asarray(arcs)
    for s in range(steps):
        selection = host_selection(arcs_host[s], config.layers)
        child = child.replace(collections={**child.collections, "arch": selection})
        if net is None:
            child, metrics = engine.train_steps(child, x_train, y_train, order[s : s + 1])
        else:
            child, metrics = engine.train_steps_with(child, x_train, y_train,
                                                     order[s : s + 1], net.gradient(selection))  # fmt: skip
        losses.append(metrics["loss"])
        accs.append(metrics["accuracy"])
    state = {**state, "child": child}
    record = {"epoch": epoch, "execution": execution, "child_loss": float(np.mean(losses)),
              "child_accuracy": float(np.mean(accs)),
              "lr": float(_learning_rate(child.step - 1, steps, config))}  # fmt: skip
    if config.random_search:
        return state, record, []
    state, scores, sampled = _controller_steps(controller_step, state, x_val, y_val, config,
                                               rng, k_ctrl, epoch)  # fmt: skip
    record.update(scores)
    return state, record, sampled


def _controller_steps(controller_step: Any, state: dict[str, Any], x_val: np.ndarray,
                      y_val: np.ndarray, config: SearchConfig, rng: np.random.Generator,
                      key: jax.Array, epoch: int
                      ) -> tuple[dict[str, Any], dict[str, float], list[dict[str, Any]]]:  # fmt: skip
    """The controller's steps of an epoch on the shared weights: the new state, the means of
    reward, entropy, skip rate, validation accuracy (and the last baseline), and one line per
    step of the arcs it sampled with their reward accuracies."""
    variables = state["child"].variables()
    cparams, copt, baseline = state["controller"], state["controller_opt"], state["baseline"]
    auxes = []
    for t in range(config.controller_steps):
        idx = rng.integers(0, len(x_val), (config.arcs_per_step, config.reward_batch))
        cparams, copt, baseline, aux = controller_step(
            cparams, copt, baseline, variables, jax.random.fold_in(key, t),
            x_val[idx], y_val[idx])  # fmt: skip
        auxes.append(aux)
    state = {**state, "controller": cparams, "controller_opt": copt, "baseline": baseline}
    sampled = [{"epoch": epoch, "step": t,
                "arcs": [arc_to_string(a, config.layers) for a in np.asarray(aux["arcs"])],
                "accuracy": np.asarray(aux["accuracies"]).round(6).tolist()}
               for t, aux in enumerate(auxes)]  # fmt: skip
    scalars = [k for k in auxes[0] if k not in ("arcs", "accuracies")]
    mean = {k: float(np.mean([a[k] for a in auxes])) for k in scalars}
    scores = {"reward": mean["reward"], "entropy": mean["entropy"],
              "skip_rate": mean["skip_rate"], "valid_accuracy": mean["accuracy"],
              "baseline": float(baseline)}  # fmt: skip
    return state, scores, sampled


def _export_search(folder: RunFolder, top: list[dict[str, Any]], history: list[dict[str, Any]],
                   data: Any, config: SearchConfig) -> None:  # fmt: skip
    """Writes the search's results into its folder (atomically): the best arc in the released
    format and as JSON, its retraining and search specs, the top arcs and the curves."""
    from fnnjax.arch.serialize import to_json  # noqa: PLC0415

    best = np.asarray(top[0]["arc"])
    folder.write_text("best_arc.txt", arc_to_string(best, config.layers) + "\n")
    folder.write_json("best_arc.json", {
        "arc": arc_to_string(best, config.layers), "layers": config.layers,
        "filters": config.filters, "skips": config.skips, "head_pool": config.head_pool})  # fmt: skip
    kw = {"input_shape": data.input_shape, "num_classes": data.num_classes}
    kw.update(skips=config.skips, head_pool=config.head_pool)
    folder.write_text("best_spec.json",
                      to_json(retrain_spec(best, config.layers, config.filters, **kw), indent=1))  # fmt: skip
    folder.write_text("search_spec.json",
                      to_json(search_spec(best, config.layers, config.filters, **kw), indent=1))  # fmt: skip
    folder.write_json("top_arcs.json", [
        {"arc": arc_to_string(t["arc"], config.layers), "accuracy": t["accuracy"],
         "count": t["count"]} for t in top])  # fmt: skip
    if history:
        folder.figure("search.png", **search_figure(history))


def child_augmentation(config: SearchConfig, dataset: str | None,
                       input_shape: tuple[int, ...]) -> Any:  # fmt: skip
    """The child batches' augmentation: the dataset's crop/flip when ``config.augment`` (and a
    ``dataset`` name is given), Cutout of ``config.cutout``; None when it changes nothing."""
    from fnnjax.train import Augmentation, augmentation_for  # noqa: PLC0415

    aug = augmentation_for(dataset, input_shape) if config.augment and dataset else Augmentation()
    aug = dataclasses.replace(aug, cutout=config.cutout) if config.cutout else aug
    return None if aug.is_identity else aug


@functools.lru_cache(maxsize=8)
def _search_parts(config: SearchConfig, input_shape: tuple[int, ...], num_classes: int, steps: int,
                  augment: str | None, mesh: Any):  # fmt: skip
    """The supernet, its engine, the controller, its optimizer and the jitted steps of a search
    on ``mesh``, built once per setting in a process (a resumed or repeated search compiles
    nothing new)."""
    from fnnjax.arch.build import build_model  # noqa: PLC0415
    from fnnjax.train import Engine  # noqa: PLC0415

    execution = resolve_execution(config.mode, config.update_stats)
    space = macro_space(config.layers, config.filters, input_shape=input_shape,
                        num_classes=num_classes, mode="all" if execution == "sampled" else execution,
                        skips=config.skips, update_stats=config.update_stats,
                        head_pool=config.head_pool)  # fmt: skip
    model = build_model(space)
    net = SampledNet(space) if execution == "sampled" else None
    aug = child_augmentation(config, augment, input_shape)
    engine = Engine(model, child_optimizer(config, steps), mesh, augment=aug)
    controller = Controller(config.layers, config.lstm_size, tanh_constant=config.tanh_constant,
                            skip_target=config.skip_target, temperature=config.temperature)  # fmt: skip
    ctx = controller_adam(config.controller_lr, form=config.controller_adam, b1=0.0, eps=1e-3)
    if net is None:
        jitted = jax.jit(lambda v, a, x, y: arc_accuracies(
            model, v, a, jnp.broadcast_to(x, (a.shape[0], *x.shape)),
            jnp.broadcast_to(y, (a.shape[0], *y.shape)), config.layers))  # fmt: skip

        def score(v, a, x, y):
            return jitted(v, a, *put_batch((x, y), mesh))
    else:
        score = functools.partial(sampled_accuracies, net, layers=config.layers, mesh=mesh)
    step = _controller_step_fn(model, controller, ctx, config, net, mesh)
    return model, engine, controller, ctx, step, score, net, execution


SEARCH_FILES = ("checkpoints", "damaged", "search.jsonl", "arcs.jsonl", "search.png",
                "best_arc.txt", "best_arc.json", "best_spec.json", "search_spec.json", "top_arcs.json")  # fmt: skip


_BEFORE_THE_SETTING = {"controller_adam": "optax"}
"""What a search saved before a setting existed ran with, where that is not today's default
(older searches used optax's Adam: they resume only with ``controller_adam="optax"``)."""

_RESUMABLE = ("config.epochs", "config.mode")
"""Settings a search may resume with changed: more ``epochs``; another ``mode``, which picks how
a sampled arc runs, not what it computes (every path gives the same numbers to float rounding;
:func:`search` says so when it resumes on another path)."""


def _refuse_another_search(folder: RunFolder, meta: dict[str, Any], *, now: dict[str, Any]
                           ) -> None:  # fmt: skip
    """Raises :class:`RunMismatchError` if the checkpoint ``meta`` is of another search than
    ``now`` (``{"config", "seed", "dataset"}``): any setting but :data:`_RESUMABLE`, the seed or
    the data (name, sizes, shape) differs.

    Settings added since the checkpoint count only when not at their default, except those of
    :data:`_BEFORE_THE_SETTING` (what the older search ran with). A checkpoint written before the
    dataset was recorded holds none: its data is not compared.
    """
    saved = {"config": {**_BEFORE_THE_SETTING, **meta.get("config", {})}, "seed": meta.get("seed")}
    now = dict(now)
    if "dataset" in meta:
        saved["dataset"] = meta["dataset"]
    else:  # written before the dataset was recorded
        now.pop("dataset", None)
    folder.check_same_run(saved, now, defaults={"config": dataclasses.asdict(SearchConfig())},
                          ignore=_RESUMABLE, strip=("config.",))  # fmt: skip


_SEARCH_PANELS = (
    ("child loss", "cross-entropy", (("child_loss", "child (train)"),)),
    (
        "accuracy",
        "accuracy",
        (("child_accuracy", "child (train)"), ("valid_accuracy", "sampled arcs (validation)")),
    ),
    ("controller reward", "reward", (("reward", "reward"), ("baseline", "baseline"))),
    ("controller entropy", "entropy (nats)", (("entropy", "entropy"),)),
    ("skip rate", "fraction of skips on", (("skip_rate", "skip rate"),)),
    ("child learning rate", "learning rate", (("lr", "learning rate"),)),
)
"""``search.png``'s panels: title, y label and the ``(record key, legend label)`` curves of each;
a panel none of whose keys the search recorded is left out (random search has no controller)."""


def search_figure(history: list[dict[str, Any]]) -> dict[str, Any]:
    """``search.png`` of a search's ``history`` (the lines of ``search.jsonl``): one panel per
    quantity of its own scale (child loss; child and sampled arcs' accuracy; the controller's
    reward and baseline, entropy and skip rate; the learning rate), the epoch on every x axis,
    plain tick labels (no offset or scientific notation). ``draw`` and its layout, the keywords of
    :func:`~fnnjax.train.runfolder.save_figure` (and ``RunFolder.figure``)."""
    recorded = set().union(*(h.keys() for h in history)) if history else set()
    panels = [p for p in _SEARCH_PANELS if any(key in recorded for key, _ in p[2])]
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)

    def draw(fig: Any, axes: Any) -> None:
        from matplotlib.ticker import MaxNLocator  # noqa: PLC0415

        axes = np.asarray(axes).reshape(-1)
        for ax, (title, ylabel, curves) in zip(axes, panels, strict=False):
            for key, label in curves:
                pts = [(h["epoch"], h[key]) for h in history if key in h]
                if pts:
                    ax.plot(*zip(*pts, strict=True), "o-", ms=3, label=label)
            ax.set_title(title, fontsize=10)
            ax.set_xlabel("epoch")
            ax.set_ylabel(ylabel)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.ticklabel_format(axis="both", style="plain", useOffset=False)
            ax.grid(alpha=0.3)
            if len(curves) > 1:
                ax.legend(fontsize=7)
        for ax in axes[len(panels) :]:
            ax.set_axis_off()
        fig.suptitle("ENAS search", fontsize=11)

    return {"draw": draw, "rows": rows, "cols": cols, "size": (4.2 * cols, 3.2 * rows + 0.4)}


def derive(model, controller, state, data, config: SearchConfig, key, *, score=None
           ) -> list[dict[str, Any]]:  # fmt: skip
    """Scores ``config.derive_arcs`` arcs (sampled by the controller, or uniform for random
    search) on ``config.derive_batches`` validation minibatches each with the shared weights
    (``score(variables, arcs [P, size], x [B, ...], y [B]) -> [P]`` accuracies; default: the
    jitted supernet);
    returns the distinct arcs best first as ``[{"arc", "accuracy", "count"}]`` (``count``: how
    often the arc was sampled, a trained controller repeats its favourites; an arc's copies
    score alike, as they see the same batches; ties keep sampling order)."""
    k_arcs, k_data = jax.random.split(key)
    if config.random_search:
        arcs = random_arcs(k_arcs, config.layers, config.derive_arcs)
    else:
        arcs = sample_arcs(controller, state["controller"], k_arcs, config.derive_arcs)["arc"]
    variables = state["child"].variables()
    rng = np.random.default_rng(np.asarray(jax.random.key_data(k_data)).tolist())
    x_val, y_val = np.asarray(data.validation.x), np.asarray(data.validation.y)
    if score is None:
        score = jax.jit(lambda v, a, x, y: arc_accuracies(
            model, v, a, jnp.broadcast_to(x, (a.shape[0], *x.shape)),
            jnp.broadcast_to(y, (a.shape[0], *y.shape)), config.layers))  # fmt: skip
    total = np.zeros(config.derive_arcs)
    for _ in range(config.derive_batches):
        idx = rng.integers(0, len(x_val), config.reward_batch)
        total += np.asarray(score(variables, arcs, x_val[idx], y_val[idx]))
    acc = total / config.derive_batches
    order = np.argsort(-acc, kind="stable")
    arcs = np.asarray(arcs)
    keys = [a.tobytes() for a in arcs]
    out: dict[bytes, dict[str, Any]] = {}
    for i in order:
        if keys[i] in out:
            out[keys[i]]["count"] += 1
        else:
            out[keys[i]] = {"arc": arcs[i], "accuracy": float(acc[i]), "count": 1}
    return list(out.values())
