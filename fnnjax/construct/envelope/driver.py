"""EnvelopeNet construction: the featuremap statistic and the thin resumable driver."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fnnjax.checks import check_bool, check_choice, check_int, check_ints
from fnnjax.construct.envelope.figures import statistics_figure, widths_figure
from fnnjax.construct.envelope.net import (
    EnvelopeConfig,
    Layers,
    block_counts,
    block_modules,
    envelope_layers,
    envelope_notation_of,
    envelope_spec,
    initial_layers,
    layer_widths,
    parse_notation,
)
from fnnjax.construct.envelope.restructure import (
    RestructureConfig,
    Restructuring,
    inheritance_map,
    restructure_layers,
)
from fnnjax.train.runfolder import RunFolder, write_json
from fnnjax.train.sharding import is_primary, primary_only

__all__ = [
    "STATISTICS",
    "ConstructionConfig",
    "block_statistics",
    "construct",
    "inherited_variables",
    "restore_iteration",
    "statistics_model",
    "train_iteration",
]

STATISTICS = ("l2", "variance")
CONSTRUCTION_FILES = ("construction.json", "final_spec.json", "iterations", "final",
                      "statistics.png", "widths.png")  # fmt: skip


def block_statistics(
    stats: Mapping[str, Any], layers: Layers, envelope: EnvelopeConfig, *, batch_size: int,
    statistic: str = "l2",
) -> dict[str, float]:  # fmt: skip
    """Per-block featuremap statistics from the engine's accumulated ``stats``.

    Args:
        stats: :func:`fnnjax.train.read_stats` of a model built with ``collect_stats`` on
            (``"conv"`` or ``"output"``: where each unit measures, ConstructionConfig.measure;
            per conv unit, the means over the steps of ``featuremap_msq`` and
            ``featuremap_var``, each ``[channels]``).
        layers, envelope: the network the statistics come from.
        batch_size: the training batch size.
        statistic: ``"l2"``: the paper's squared l2 norm of the block's output normalized by the
            featuremap size, as the released code computes it: per batch, the sum over the
            examples of ``y**2`` averaged over height, width and channels, then averaged over
            the batches (``batch_size * mean_c(featuremap_msq)``). ``"variance"``: the paper's second
            statistic, the running featuremap variance: each step's variance over batch and
            space, averaged over the steps and the channels.

    Returns:
        ``{"s{i}/l{j}/{op}": value}`` for every block.
    """
    check_choice("statistic", statistic, STATISTICS)
    out = {}
    for key, path in block_modules(layers, envelope).items():
        node: Any = stats
        for part in path.split("/"):
            if not isinstance(node, Mapping) or part not in node:
                raise ValueError(f"stats: no statistics at {path!r} for block {key!r}; build the "
                                 "model with collect_stats=True (and, with stats_at, this "
                                 "path among them: statistics_model)")  # fmt: skip
            node = node[part]
        if statistic == "l2":
            out[key] = float(batch_size * np.mean(np.asarray(node["featuremap_msq"])))
        else:
            out[key] = float(np.mean(np.asarray(node["featuremap_var"])))
    return out


@dataclasses.dataclass(frozen=True)
class ConstructionConfig:
    """An EnvelopeNet construction (defaults: the paper's section 5 where it says).

    Attributes:
        stages: the initial layers per stage (the paper's A: ``(10, 1, 1, 1)``).
        envelope: the cell, widths, block order and classifier (:class:`EnvelopeConfig`; its
            ``channels`` is ``C``).
        restructure: pruning and depth limits (:class:`RestructureConfig`; no stage maxima by
            default: for the paper's ``10-1-1-1`` give :func:`default_max_layers`, the released
            code's, which the CLI and the experiment apply, or five iterations end at
            ``15-6-6-6`` instead of Table 1's ``15-6-4-4``).
        iterations: restructuring iterations ``N`` (5).
        epochs_per_iteration: training epochs that collect the statistics in each iteration
            (10; the network is trained from scratch every iteration: no weight inheritance).
        batch_size, learning_rate, momentum: SGD (50, 0.1, none; the paper's "exponentially
            decaying ... 0.1 per 350 epochs" is, in the released code, a staircase decay, so the
            rate is exactly 0.1 for the first 350 epochs: every iteration and the final training
            run at a constant 0.1).
        augment: random crops from a padded image (and flips where labels allow) during
            training; the paper used crops and brightness/contrast changes, the released code
            unpadded 28x28 crops of CIFAR's 32x32, flips, brightness, contrast and per-image
            standardization, with a central crop for evaluation.
        statistic: ``"l2"`` (default) or ``"variance"`` (:func:`block_statistics`). Our
            variance is each step's variance over the batch and the featuremap's positions,
            averaged over steps and channels; the released code keeps a running variance per
            (position, channel) over all examples and averages those.
        measure: where a block's featuremap is measured: ``"conv"``, its filters' own output
            before BN and activation (section 4.2's ``sum ||W_n X||^2``, the "featuremap of each
            filter"), or ``"output"``, the block's output as concatenated (the released code's,
            after its conv -> BN -> ReLU). ``None`` (default): ``"conv"`` in the paper's order and
            ``"output"`` in the released one. In the paper's order (conv -> ReLU -> BN) the
            block's output is BatchNorm's, whose squared norm in training is fixed by BN's scale
            and shift alone (``batch * mean(gamma^2 + beta^2)``, whatever the filters compute:
            every block starts at the same value), so measuring there ranks blocks by BN's
            drift, not by what their filters extract.
        final_epochs: train the constructed network this many epochs at the end (0: don't; the
            paper trains it for 100 and counts them in the construction time).
        statistics_every: also record the running statistics every this many training steps
            (``iterations/<k>/statistics.json``, Figure 2's curves; 0: once per epoch). It
            changes nothing but that record.
        stats_at: ``"blocks"`` (default): only the units whose output is a block's measurement
            compute statistics (:func:`block_modules`); ``"all"``: every conv unit does (the stem,
            the wideners, a separable block's depthwise half, the dense skips' 1x1 convs too), as
            constructions written before this option did. The statistics read are the same
            either way; a resumed construction keeps the setting it was started with (its
            checkpoints' layout).
        inherit: beyond the paper (which retrains every iteration from scratch): start each
            iteration from the previous one's trained weights, moved through the restructuring
            by :func:`fnnjax.arch.transplant_params` (:func:`inheritance_map`: surviving blocks
            keep theirs, the new cell starts fresh; optimizer state and statistics start anew).
    """

    stages: tuple[int, ...] = (10, 1, 1, 1)
    envelope: EnvelopeConfig = EnvelopeConfig()
    restructure: RestructureConfig = RestructureConfig()
    iterations: int = 5
    epochs_per_iteration: int = 10
    batch_size: int = 50
    learning_rate: float = 0.1
    momentum: float = 0.0
    augment: bool = True
    statistic: str = "l2"
    final_epochs: int = 0
    inherit: bool = False
    measure: str | None = None
    statistics_every: int = 0
    stats_at: str = "blocks"

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(self.stages))
        check_ints("stages", self.stages)
        check_int("statistics_every", self.statistics_every, 0)
        for name in ("iterations", "epochs_per_iteration", "batch_size"):
            check_int(name, getattr(self, name))
        check_int("final_epochs", self.final_epochs, 0)
        check_choice("stats_at", self.stats_at, ("blocks", "all"))
        check_choice("measure", self.measure, (None, "conv", "output"))
        check_bool("inherit", self.inherit)
        check_choice("statistic", self.statistic, STATISTICS)
        if self.restructure.max_layers is not None and len(self.restructure.max_layers) != len(self.stages):
            raise ValueError(f"max_layers: expected one value per stage ({len(self.stages)}), got "
                             f"{self.restructure.max_layers!r}")  # fmt: skip

    @classmethod
    def from_notation(cls, text: str, *, envelope: EnvelopeConfig | None = None,
                      **fields: Any) -> ConstructionConfig:  # fmt: skip
        """A config whose initial network is ``C/n1-n2-.../M`` (``M`` must be the cell's size;
        ``envelope`` gives the rest of the network, its ``channels`` replaced by ``C``)."""
        envelope = envelope or EnvelopeConfig()
        c, stages, m = parse_notation(text)
        if m != envelope.m:
            raise ValueError(f"notation {text!r}: M = {m}, but the cell has {envelope.m} blocks "
                             f"{envelope.cell}; give a cell of {m} blocks")  # fmt: skip
        return cls(stages=stages, envelope=dataclasses.replace(envelope, channels=c), **fields)

    @classmethod
    def quick(cls, **fields: Any) -> ConstructionConfig:
        """A construction that visibly grows in under half a minute on 2 CPU cores (``fnnjax
        envelopenet --quick``, on 400 digits): EnvelopeNet 6/2-1/2 with a cell of a 1x1 and a
        3x3 block, 2 iterations of 3 statistics epochs, batch 40 (it ends as 6/4-3/2); plus
        ``fields``."""
        return cls.from_notation("6/2-1/2", envelope=EnvelopeConfig(cell=("1x1", "3x3")),
                                 **{"iterations": 2, "epochs_per_iteration": 3, "batch_size": 40,
                                    **fields})  # fmt: skip

    @property
    def measured_at(self) -> str:
        """``measure``, resolved (``"conv"`` in the paper's order, ``"output"`` in the released)."""
        if self.measure is not None:
            return self.measure
        return "conv" if self.envelope.order == "paper" else "output"

    @property
    def notation(self) -> str:
        return envelope_notation_of(self.envelope.channels, initial_layers(self.stages, self.envelope),
                                    self.envelope.m)  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def construction_epochs(self, final_epochs: int | None = None) -> int:
        """The paper's construction time in epochs, ``N * f * t_train + t_train``: the statistics
        epochs of every iteration plus the final training (``final_epochs``, default the
        config's)."""
        final = self.final_epochs if final_epochs is None else final_epochs
        return self.iterations * self.epochs_per_iteration + final


def statistics_model(spec, config: ConstructionConfig):
    """The Flax model an iteration trains: ``spec`` collecting the featuremap statistics where
    ``config`` says (``measured_at``; at the blocks' units only, or everywhere: ``stats_at``)."""
    from fnnjax.arch import build_model  # noqa: PLC0415

    paths = None
    if config.stats_at == "blocks":
        paths = set(block_modules(envelope_layers(spec, config.envelope), config.envelope).values())
    return build_model(spec, collect_stats=config.measured_at, stats_at=paths)


def restore_iteration(out_dir: str | Path, iteration: int, config: ConstructionConfig | None = None):
    """The train state iteration ``iteration`` of the construction in ``out_dir`` ended with (its
    newest checkpoint, ``out_dir/iterations/<k>/``), restored with the statistics layout the
    construction was written with (``construction.json``'s ``stats_at``; ``config``'s when the
    folder has none).

    Raises:
        CheckpointError: no readable checkpoint there.
    """
    from fnnjax.arch import from_dict  # noqa: PLC0415
    from fnnjax.train import restore_run  # noqa: PLC0415

    out = Path(out_dir)
    config = config or ConstructionConfig()
    meta = out / "construction.json"
    if meta.exists():
        saved = json.loads(meta.read_text())["config"]
        config = dataclasses.replace(config, stats_at=saved.get("stats_at", "all"),
                                     measure=saved.get("measure", config.measure),
                                     envelope=_envelope_of(saved, config.envelope))  # fmt: skip
    _, state, _ = restore_run(out / "iterations" / str(iteration),
                              lambda d: statistics_model(from_dict(d), config))  # fmt: skip
    return state


def _envelope_of(saved: dict[str, Any], default: EnvelopeConfig) -> EnvelopeConfig:
    env = saved.get("envelope")
    if not env:
        return default
    fields = {f.name for f in dataclasses.fields(EnvelopeConfig)}
    return EnvelopeConfig(**{k: tuple(v) if isinstance(v, list) else v
                             for k, v in env.items() if k in fields})  # fmt: skip


def _train_config(config: ConstructionConfig, epochs: int, seed: int, progress: bool,
                  num_devices: int | None):  # fmt: skip
    from fnnjax.train import TrainConfig  # noqa: PLC0415

    return TrainConfig(epochs=epochs, batch_size=config.batch_size, optimizer="sgd",
                       learning_rate=config.learning_rate, momentum=config.momentum,
                       augment=config.augment, seed=seed, progress=progress,
                       keep_checkpoints=1, num_devices=num_devices)  # fmt: skip


RESUMABLE = ("iterations", "final_epochs", "statistics_every", "stats_at")
"""Config fields a construction may change when it resumes (they change no record)."""

_IDENTITY = ("config", "measured_at", "seed", "dataset")


def _open_construction(
    out_dir: str | Path | None, config: ConstructionConfig, now: dict[str, Any], *, resume: bool,
    log: Callable[[str], None] | None,
) -> tuple[RunFolder, ConstructionConfig, list[dict[str, Any]]]:  # fmt: skip
    """The run folder, checked to hold this construction (or none) and its start recorded; the
    config with the statistics layout the construction started with, and its saved records."""
    folder = RunFolder.open(out_dir, files=CONSTRUCTION_FILES, what="construction",
                            driver="envelopenet", resume=resume)  # fmt: skip
    saved = folder.read_json("construction.json")
    records: list[dict[str, Any]] = []
    if saved is not None:
        folder.check_same_run({k: saved.get(k) for k in _IDENTITY}, {k: now[k] for k in _IDENTITY},
                              defaults={"config": ConstructionConfig().to_dict()},
                              ignore=tuple(f"config.{k}" for k in RESUMABLE),
                              strip=("config.",))  # fmt: skip
        done = len(saved["records"])
        if done > config.iterations:  # more iterations extend a construction, fewer cannot
            folder.check_same_run({"iterations": done}, {"iterations": config.iterations},
                                  hints={"iterations": f"fewer than the {done} done would discard "
                                         f"records; pass --iterations {done} or more"})  # fmt: skip
        records = saved["records"]
        # the checkpoints' layout: keep where statistics were collected (older runs: "all")
        kept = saved["config"].get("stats_at", "all")
        if kept != config.stats_at and log is not None:
            log(f"{folder.path}: statistics collected at stats_at={kept!r} as when this "
                f"construction started (not {config.stats_at!r}): its checkpoints' layout")  # fmt: skip
        config = dataclasses.replace(config, stats_at=kept)
    folder.begin()
    return folder, config, records


def _iteration_record(k: int, layers: Layers, env: EnvelopeConfig, spec: Any,
                      stats: dict[str, float], done: Restructuring, result: Any,
                      seconds: float, inherited: bool) -> dict[str, Any]:  # fmt: skip
    """What ``construction.json`` records of iteration ``k`` (:func:`construct`)."""
    from fnnjax.arch import analytic_counts, to_dict  # noqa: PLC0415

    counts = analytic_counts(spec)
    return {
        "iteration": k,
        "notation": envelope_notation_of(env.channels, layers, env.m),
        "block_counts": block_counts(layers),
        "widths": layer_widths(layers, env),
        "params": counts["params"],
        "flops": counts["flops"],
        "spec": to_dict(spec),
        "statistics": stats,
        "pruned": list(done.pruned),
        "added": [None if a is None else {"stage": i, "layer": a}
                  for i, a in enumerate(done.added)],
        "next_layers": [[list(layer) for layer in stage] for stage in done.layers],
        "next_notation": envelope_notation_of(env.channels, done.layers, env.m),
        "validation_accuracy": result.summary.get("final_validation_accuracy"),
        "seconds": seconds,  # this process's part, after a resume
        "inherited": inherited,
    }  # fmt: skip


def _save(folder: RunFolder, now: dict[str, Any], config: ConstructionConfig,
          records: list[dict[str, Any]]) -> None:  # fmt: skip
    statistics = len(records) * config.epochs_per_iteration
    epochs = {"statistics": statistics, "final": config.final_epochs,
              "total": statistics + config.final_epochs}  # fmt: skip
    folder.write_json("construction.json",
                      {**now, "construction_epochs": epochs, "records": records})  # fmt: skip


def _write_results(folder: RunFolder, spec: Any, layers: Layers, env: EnvelopeConfig,
                   records: list[dict[str, Any]]) -> None:  # fmt: skip
    """``final_spec.json``, ``statistics.png`` (of the first iteration) and ``widths.png``."""
    from fnnjax.arch import to_json  # noqa: PLC0415

    folder.write_text("final_spec.json", to_json(spec))
    running = folder.read_json("iterations/0/statistics.json")
    if records and running is not None:
        folder.figure("statistics.png", **statistics_figure(records[0], running))
    folder.figure("widths.png", **widths_figure(layers, env))


def construct(
    data: Any,
    config: ConstructionConfig = ConstructionConfig(),
    out_dir: str | Path | None = None,
    *,
    seed: int = 0,
    resume: bool = True,
    progress: bool = False,
    log: Callable[[str], None] | None = print,
    num_devices: int | None = None,
) -> dict[str, Any]:
    """Constructs an EnvelopeNet (section 4.3): ``iterations`` times, train the current network
    from scratch for ``epochs_per_iteration`` epochs while the statistics accumulate, then
    restructure it; optionally train the result for ``final_epochs``.

    Each iteration trains through :func:`fnnjax.train.fit` in ``out_dir/iterations/<k>/``
    (checkpointed every epoch), so a killed construction resumes inside the iteration it was
    in. ``out_dir`` receives ``construction.json`` (the configuration and one record per
    iteration: ``notation``, ``block_counts``, ``spec``, per-block ``statistics``, ``pruned``,
    ``added``, parameters and FLOPs, the iteration's validation accuracy when ``data`` has a
    validation split; the construction never reads the test split), the running statistics of
    every epoch (``iterations/<k>/statistics.json``), ``final_spec.json`` (trainable with
    ``fnnjax train --spec``), ``statistics.png`` (Figure 2: the running statistic of the blocks
    of several layers in the first iteration), ``widths.png`` (blocks and channels per layer
    of the constructed network) and ``run.json`` (the folder's provenance). Seeds derive from
    ``seed`` and the iteration, so the same seed gives the same construction. ``num_devices``:
    data-parallel devices (default: all local ones; the batch size must be a multiple of their
    number).

    Returns:
        ``{"spec", "layers", "notation", "records", "final"}`` (``final``: the final training's
        summary, or None).

    Raises:
        RunMismatchError: ``out_dir`` holds a different construction (a ``ValueError``); the
            fields of :data:`RESUMABLE` may change.
        ValueError: it holds more iterations than ``config.iterations``.
    """
    from fnnjax.arch import build_model, to_dict  # noqa: PLC0415
    from fnnjax.train import fit  # noqa: PLC0415

    env = config.envelope
    now = {"config": config.to_dict(), "measured_at": config.measured_at, "seed": seed,
           "dataset": data.describe()}  # fmt: skip
    folder, config, records = _open_construction(out_dir, config, now, resume=resume, log=log)
    now["config"] = config.to_dict()
    say = primary_only(log) or (lambda _: None)
    _save(folder, now, config, records)  # at once: a resume checks it, even inside iteration 0

    layers = initial_layers(config.stages, env) if not records else _next_layers(records[-1])
    shape, classes = data.input_shape, data.num_classes
    previous = None  # (layers, restructuring, trained variables) of the last iteration run here
    for k in range(len(records), config.iterations):
        spec = envelope_spec(layers, env, shape, classes)
        initial = None
        if config.inherit and k > 0:
            initial = _inherited(previous, records[-1], spec, config, folder.path, k, seed)
        started = time.perf_counter()
        result, stats, _ = train_iteration(data, layers, config, seed=seed, iteration=k,
                                           run_dir=folder.sub(f"iterations/{k}"),
                                           initial_variables=initial, resume=resume,
                                           progress=progress, num_devices=num_devices)  # fmt: skip
        done = restructure_layers(layers, stats, env, config.restructure)
        seconds = time.perf_counter() - started
        records.append(_iteration_record(k, layers, env, spec, stats, done, result, seconds,
                                         initial is not None))  # fmt: skip
        _save(folder, now, config, records)
        say(f"iteration {k + 1}/{config.iterations}: {records[-1]['notation']} -> "
            f"{records[-1]['next_notation']}, pruned {len(done.pruned)} blocks")  # fmt: skip
        previous = (layers, done, result.state.variables()) if config.inherit else None
        layers = done.layers

    spec = envelope_spec(layers, env, shape, classes)
    _write_results(folder, spec, layers, env, records)
    final = None
    if config.final_epochs:
        result = fit(build_model(spec), data,
                     _train_config(config, config.final_epochs, seed * 1000 + config.iterations,
                                   progress, num_devices),
                     out_dir=folder.sub("final"), resume=resume,
                     description=to_dict(spec))  # fmt: skip
        final = result.summary
    return {"spec": spec, "layers": layers,
            "notation": envelope_notation_of(env.channels, layers, env.m),
            "records": records, "final": final}  # fmt: skip


def train_iteration(
    data: Any,
    layers: Layers,
    config: ConstructionConfig,
    *,
    seed: int = 0,
    iteration: int = 0,
    epochs: int | None = None,
    run_dir: str | Path | None = None,
    initial_variables: Mapping[str, Any] | None = None,
    resume: bool = True,
    progress: bool = False,
    num_devices: int | None = None,
) -> tuple[Any, dict[str, float], list[dict[str, Any]]]:
    """One construction iteration's training: the network of ``layers`` trained with
    statistics (``epochs``, default ``config.epochs_per_iteration``; SGD as ``config``; training
    seed ``seed * 1000 + iteration``, as :func:`construct` uses), never reading ``data``'s test
    split. ``run_dir`` (checkpointed every epoch; resumable) also receives ``statistics.json``:
    the running block statistics at the end of every epoch and every
    ``config.statistics_every`` steps. ``initial_variables``: start from these instead of a
    fresh initialization (:func:`inherited_variables`).

    Returns:
        ``(fit result, final block statistics, running statistics)``, the running ones a list of
        ``{"epoch", "step", "statistics"}`` (what ``statistics.json`` holds).
    """
    from fnnjax.arch import to_dict  # noqa: PLC0415
    from fnnjax.train import Split, fit, read_stats  # noqa: PLC0415

    env = config.envelope
    spec = envelope_spec(layers, env, data.input_shape, data.num_classes)
    run_dir = None if run_dir is None else Path(run_dir)
    # Construction never reads the test split (only the final training is tested).
    blind = dataclasses.replace(data, test=Split(data.test.x[:0], data.test.y[:0]))
    running: list[dict[str, Any]] = []
    if run_dir is not None and resume and (run_dir / "statistics.json").exists():
        running = json.loads((run_dir / "statistics.json").read_text())

    def current(state) -> dict[str, float]:
        return block_statistics(read_stats(state), layers, env, batch_size=config.batch_size,
                                statistic=config.statistic)  # fmt: skip

    def record_running(record, state) -> None:
        running[:] = [r for r in running if r["step"] < record["step"]]  # redone after a resume
        running.append({"epoch": record["epoch"], "step": record["step"],
                        "statistics": current(state)})  # fmt: skip
        if run_dir is not None and is_primary():
            write_json(run_dir / "statistics.json", running)

    def on_epoch_end(record, state) -> None:
        if not running or running[-1]["step"] != record["step"]:
            record_running(record, state)

    every = config.statistics_every
    result = fit(statistics_model(spec, config), blind,
                 _train_config(config, config.epochs_per_iteration if epochs is None else epochs,
                               seed * 1000 + iteration, progress, num_devices),
                 out_dir=run_dir, resume=resume, description=to_dict(spec),
                 on_epoch_end=on_epoch_end, initial_variables=initial_variables,
                 on_steps=(every, record_running) if every else None)  # fmt: skip
    return result, current(result.state), running


def inherited_variables(old_spec, old_variables: Mapping[str, Any], done: Restructuring,
                        spec, config: ConstructionConfig, key) -> dict[str, Any]:  # fmt: skip
    """Beyond the paper: the variables a restructured network starts from when it inherits
    (``config.inherit``): ``old_variables`` (the network ``old_spec`` trained) moved onto
    ``spec``, the network ``done`` describes, by :func:`fnnjax.arch.transplant_params` with
    :func:`inheritance_map` (surviving blocks keep their filters, the appended cell starts from
    a fresh initialization drawn with ``key``; batch statistics follow their filters)."""
    from fnnjax.arch import build_model, init_variables, transplant_params  # noqa: PLC0415

    old_layers = envelope_layers(old_spec, config.envelope)
    fresh = init_variables(build_model(spec), key, spec.input_shape)
    return transplant_params(old_spec, old_variables, spec, fresh,
                             kept=inheritance_map(old_layers, done, config.envelope))  # fmt: skip


def _inherited(previous, record: dict[str, Any], spec, config: ConstructionConfig,
               out: Path | None, k: int, seed: int) -> dict[str, Any]:  # fmt: skip
    """The variables iteration ``k`` starts from: iteration ``k - 1``'s trained ones (from
    memory, or from its folder after a resume) transplanted onto ``spec``."""
    import jax  # noqa: PLC0415

    from fnnjax.arch import from_dict  # noqa: PLC0415

    old_spec = from_dict(record["spec"])
    if previous is None:
        if out is None:
            raise ValueError("inherit: no earlier iteration to inherit from")
        state = restore_iteration(out, k - 1, config)
        done = restructure_layers(envelope_layers(old_spec, config.envelope),
                                  record["statistics"], config.envelope, config.restructure)  # fmt: skip
        variables = state.variables()
    else:
        _, done, variables = previous
    return inherited_variables(old_spec, variables, done, spec, config,
                               jax.random.key(seed * 1000 + k))


def _next_layers(record: dict[str, Any]) -> Layers:
    return tuple(tuple(tuple(layer) for layer in stage) for stage in record["next_layers"])
