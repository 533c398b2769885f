"""The NHN pipeline (Algorithm 2; section 3): a macro arc's network with SmoothInit, trained; DNP
and clean-up; retrained; LDS; the network with its add-on neurons trained from scratch; the
ablation and the paper's score. One resumable driver: every stage writes its files into ``out``
and a killed pipeline, run again, resumes inside the stage it was in (a training at its last
epoch, LDS at its last cycle; DNP and clean-up are recomputed from the trained network, which is
deterministic).

Stages and files (``out/``):

==============  ==========================================================================
``base/``       the arc's retraining form (ENAS's fixed-arc child, grouped-conv head, no
                dropout; section 2.1), SmoothInit, trained (:func:`fnnjax.train.fit` run);
                ``base_spec.json``
``pruned/``     DNP (``prune_ratio`` of the 3x3/5x5 kernels: one global quantile, or per layer
                with ``prune_scope="layer"``; the stem's too unless ``prune_stem=False``) and clean-up,
                then trained further (``retrain="inherit"``, the paper's "three passes of
                training") or from scratch; ``pruned_spec.json``, ``pruned_masks.npz`` (its
                DNP kernel masks), ``prune.json`` (per-layer and total prune ratios, the
                clean-up's removals)
``lds/``        :func:`~fnnjax.construct.nhn.search.lds`: ``lds.jsonl``, ``genes.json``,
                ``directions.npz``, ``lds.png``
``final/``      the pruned network with the add-on neurons LDS found, trained from scratch
                (Nesterov 0.9, L2 ``final_l2``, clipping 5, Cutout, dropout; section 3);
                ``nhn_spec.json``, ``nhn_masks.npz`` (its DNP masks and add-on directions)
``results.json`` every stage's parameters (effective: pruned kernels and unread add-on
                connections not counted), validation and test accuracy, the ablation (the
                final network with its add-on edges switched off) and the score
                ``sqrt((e/2)^2 + (n/25)^2)`` (``e`` test error in %, ``n`` parameters in M)
==============  ==========================================================================

Departures from the paper's Algorithm 2, in one place (each a setting or documented, with a
test of the chosen behaviour):

* The arc's skip convention is a setting (``skips``): ``fnnjax enas`` arcs read layer ``j``
  (``"paper"``), arcs of the released ENAS code (NHN's) the stem first (``"released"``);
  ``fnnjax nhn --arc`` takes it from the search's ``best_arc.json`` or ``--skips``.
* SmoothInit: Algorithm 2 applies it before ENAS (to the layer hierarchy the search trains);
  here the arc comes from a finished search, so it is applied to the arc's network before its
  base training, the network DNP prunes (``fnnjax nhn --search`` runs ENAS without it).
* After DNP the pruned network goes on from its trained weights (``retrain="inherit"``):
  Algorithm 2 says "Train G from scratch", but section 3 re-trains "the pruned network for
  another 160 epochs" and counts "three passes of training ... during ENAS, after DNP, and after
  LDS" for the same weights, without warm restarts; ``retrain="scratch"`` is Algorithm 2's.
* DNP's thresholds (the paper: "based on standard deviation thresholds", "nearly 85% of input
  connections of all 3x3 and 5x5 convolution layers on average"): ``prune_scope`` (module
  :mod:`~fnnjax.construct.nhn.prune`) and ``prune_stem``.
* The direction search's eligible channels are those whose producing filters survived DNP
  (:func:`~fnnjax.construct.nhn.evolve.eligible_channels`); in the retraining form the 1x1
  merges are not pruned, so almost every source stays eligible.
* ENAS's search (``fnnjax nhn --search``) trains with Cutout, as section 2.1 says, and no
  dropout; the width, batch, L2 and dropout rate where NHN gives none are the released ENAS
  retraining script's (:class:`NhnConfig`).

The test split is read only by the trainings' final evaluations, never by a decision (DNP, LDS).
The DNP masks and the directions are arrays, not spec: the final network's ``"masks"`` and
``"arch"`` collections carry them (its checkpoints too) and ``nhn_masks.npz`` holds them beside
the spec (:func:`fnnjax.arch.save_variables`): ``fnnjax train --spec nhn_spec.json --masks
nhn_masks.npz`` retrains the found network, while ``nhn_spec.json`` alone would retrain the
architecture with every kernel and connection on.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fnnjax.checks import check_choice, check_int, check_share
from fnnjax.construct.nhn.search import LdsConfig
from fnnjax.train.sharding import data_mesh, primary_only

__all__ = ["NhnConfig", "addons_off", "effective_params", "nhn_score", "run_nhn", "stage_train_config",
           "with_addons"]

RETRAIN = ("inherit", "scratch")


@dataclasses.dataclass(frozen=True)
class NhnConfig:
    """Pipeline settings (defaults: the paper's CIFAR-10 values, section 3).

    NHN trains the ENAS network "with the same hyperparameters as in Pham et al.": where NHN
    gives none, the released ENAS macro retraining script's (``child_out_filters=96``, batch
    100, ``l2_reg=2e-4``, ``keep_prob=0.5``, cosine 0.05 -> 0.001 with T0 = 10, Tmul = 2).

    Attributes:
        layers, filters: the macro network (12 layers; width 96 in the first segment, doubled
            at each reduction, ENAS's retraining form: about NHN's "over 21 million parameters").
        batch_size, lr_max, lr_min, momentum: SGD with Nesterov momentum, cosine rates.
        base_epochs: the base training (310: cosine with 4 warm restarts, T0 = 10, Tmul = 2).
        base_l2: its L2 (2e-4).
        sigma: SmoothInit's Gaussian.
        prune_ratio: the share of 3x3/5x5 kernels DNP removes ("nearly 85%").
        prune_scope: how DNP's thresholds are set (the paper prunes "based on standard deviation
            thresholds" without saying how): ``"global"`` (default: one quantile over every
            prunable kernel, so layers lose different shares, 16-96% in REPRODUCTION.md's run,
            averaging to the ratio, the reading under which the paper's "nearly 85% ... on
            average" has something to average; BatchNorm makes kernel scales differ across
            layers, which is the case for the other reading) or ``"layer"`` (every layer
            loses ``prune_ratio`` of its kernels).
        prune_stem: whether DNP ranks the stem's 3x3 kernels (RGB inputs) too (default True: the
            stem is one of "all 3x3 and 5x5 convolution layers"; False leaves it whole).
        retrain: ``"inherit"`` (the pruned network goes on training from its weights) or
            ``"scratch"`` (Algorithm 2's "Train G from scratch"; the masks stay).
        prune_epochs: that training (160; cosine without restarts).
        lds: the search (:class:`~fnnjax.construct.nhn.search.LdsConfig`).
        final_epochs: the final training (260).
        final_l2, clip, dropout: its L2 (2e-4), gradient clipping (5.0; in every training, as
            ENAS's) and dropout before the classifier (final training only, section 2.1; the
            paper gives no rate: the ENAS retraining's 0.5).
        cutout: Cutout's square in every training (``None``: half the image side, 16 on
            CIFAR-10; the paper reports its base and pruned networks "with Cutout" too).
        augment: the dataset's crop/flip in every training.
        head_pool: ``"grouped"`` (section 2.2) or ``"avg"``.
        skips: the arc's skip convention (:data:`fnnjax.construct.enas.SKIP_CONVENTIONS`):
            ``"paper"`` (skip bit ``j`` reads layer ``j``: arcs of ``fnnjax enas``, its
            default) or ``"released"`` (the stem and layers ``0 .. k-2``: arcs found by the
            released ENAS code, as NHN's were); the arc's network is wired as it was searched.
    """

    layers: int = 12
    filters: int = 96
    batch_size: int = 100
    lr_max: float = 0.05
    lr_min: float = 0.001
    momentum: float = 0.9
    base_epochs: int = 310
    base_l2: float = 2e-4
    sigma: float = 1.0
    prune_ratio: float = 0.85
    prune_scope: str = "global"
    prune_stem: bool = True
    retrain: str = "inherit"
    prune_epochs: int = 160
    lds: LdsConfig = LdsConfig()
    final_epochs: int = 260
    final_l2: float = 2e-4
    clip: float = 5.0
    dropout: float = 0.5
    cutout: int | None = None
    augment: bool = True
    head_pool: str = "grouped"
    skips: str = "paper"

    def __post_init__(self):
        check_choice("prune_scope", self.prune_scope, ("global", "layer"))
        check_choice("skips", self.skips, ("paper", "released"))
        check_choice("retrain", self.retrain, RETRAIN)
        check_share("prune_ratio", self.prune_ratio)
        for name in ("layers", "filters", "batch_size", "base_epochs", "prune_epochs",
                     "final_epochs"):  # fmt: skip
            check_int(name, getattr(self, name))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def quick(cls, **changes: Any) -> NhnConfig:
        """Settings that show the method in about 85 s on 2 CPU cores (``fnnjax nhn
        --quick`` and the experiment's, on digits): 3 layers of 4 filters, 2 epochs per
        training, DNP of half the 3x3/5x5 kernels, LDS 2 + 1 cycles of 4 individuals, each scored
        on up to 144 validation images (all of digits' validation split: 40 tied the population's
        accuracies)."""
        from fnnjax.construct.nhn.evolve import DirectionConfig, LocationConfig  # noqa: PLC0415

        lds = LdsConfig(neurons=2, location=LocationConfig(population=4, keep=2, pairs=((0, 1),)),
                        direction=DirectionConfig(population=4), location_cycles=2,
                        direction_cycles=1, train_batches=2, batch_size=16, score_batch=144)  # fmt: skip
        return cls(**{"layers": 3, "filters": 4, "batch_size": 32, "base_epochs": 2,
                      "prune_epochs": 2, "final_epochs": 2, "prune_ratio": 0.5, "lds": lds,
                      **changes})  # fmt: skip


def nhn_score(error_percent: float, params_millions: float) -> float:
    """The paper's ``sqrt((e/2)^2 + (n/25)^2)`` (lower is better)."""
    return math.sqrt((error_percent / 2) ** 2 + (params_millions / 25) ** 2)


def effective_params(spec: Any, variables: Mapping[str, Any]) -> int:
    """Trainable parameters, without the kernel slices a ``kernel_mask`` or an add-on edge's
    ``connections`` switches off (they are zeros in any deployed network)."""
    from fnnjax._trees import at_path  # noqa: PLC0415
    from fnnjax.arch.shapes import infer_layers  # noqa: PLC0415

    total = sum(u.params for u in infer_layers(spec))

    def zeros(tree: Any, path: str, leaf: str) -> int:
        node = at_path(tree, f"{path}/{leaf}")
        return 0 if node is None else int((np.asarray(node) == 0).sum())

    for u in infer_layers(spec):
        area = u.kernel * u.kernel
        total -= area * zeros(variables.get("masks", {}), u.path, "kernel_mask")
        if u.path.endswith("/unit") and "_addon" in u.path:
            total -= area * zeros(variables.get("arch", {}), u.path[: -len("/unit")], "connections")
    return total


def addons_off(arch: Mapping[str, Any]) -> dict[str, Any]:
    """The ``"arch"`` collection with every add-on edge's gate at 0 (the paper's ablation "of
    added neurons"); the arc's own gated skips keep theirs (before issue #23 the ablation
    switched those off too)."""
    return {p: ({**v, "gate": jnp.zeros_like(v["gate"])} if "_addon" in p and "gate" in v else v)
            for p, v in arch.items()}  # fmt: skip


def with_addons(supernet: Any, space: Any, variables: Mapping[str, Any], genes: Any,
                directions: Mapping[str, Any], *, head: Any = None) -> tuple[Any, dict[str, Any]]:
    """The network the gene code picks from the LDS ``supernet`` (its add-on edges, each
    reading the channels ``directions[edge]`` says), as ``(spec, {"masks", "arch"})``: the DNP
    masks and the connections travel as arrays, to put into a fresh initialization. ``head``
    replaces the spec's head (e.g. with the final training's dropout). A collection the chosen
    network does not have is left out (no add-on kept on an arc without skips: no ``"arch"``)."""
    from fnnjax.arch import materialize  # noqa: PLC0415
    from fnnjax.arch.select import materialize_variables  # noqa: PLC0415
    from fnnjax.construct.nhn.genes import genes_to_selection  # noqa: PLC0415

    gates = genes_to_selection(jnp.asarray(genes), space)
    arch = {p: dict(v) for p, v in variables["arch"].items()}
    for p, g in gates.items():
        arch[p]["gate"] = g
        if p in directions:
            arch[p]["connections"] = jnp.asarray(directions[p])
    spec = materialize(supernet, arch)
    if head is not None:
        spec = spec.replace(head=head)
    moved = materialize_variables(supernet, {**variables, "arch": arch}, arch)
    return spec.replace(name="nhn"), {k: moved[k] for k in ("masks", "arch") if k in moved}


def stage_train_config(config: NhnConfig, stage: str, seed: int, data: Any, progress: bool = False,
                       num_devices: int | None = None):  # fmt: skip
    """The :class:`~fnnjax.train.TrainConfig` of a pipeline stage (``"base"``, ``"pruned"`` or
    ``"final"``; module docstring) on ``num_devices`` (None: all of them)."""
    from fnnjax.train import TrainConfig  # noqa: PLC0415

    cutout = config.cutout if config.cutout is not None else min(data.input_shape[:2]) // 2
    common = dict(batch_size=config.batch_size, optimizer="sgd", learning_rate=config.lr_max,
                  momentum=config.momentum, nesterov=True, min_learning_rate=config.lr_min,
                  augment=config.augment, seed=seed, progress=progress, cutout=cutout,
                  grad_clip=config.clip or None, num_devices=num_devices)  # fmt: skip
    if stage == "base":  # ENAS's schedule: cosine with warm restarts
        return TrainConfig(epochs=config.base_epochs, weight_decay=config.base_l2,
                           schedule="cosine_restarts", restart_epochs=10, restart_mult=2.0,
                           **common)  # fmt: skip
    if stage == "pruned":
        return TrainConfig(epochs=config.prune_epochs, weight_decay=config.final_l2,
                           schedule="cosine", **common)  # fmt: skip
    return TrainConfig(epochs=config.final_epochs, weight_decay=config.final_l2, schedule="cosine",
                       **common)  # fmt: skip


NHN_FILES = ("nhn.json", "base", "pruned", "lds", "final", "results.json", "base_spec.json",
             "pruned_spec.json", "prune.json", "nhn_spec.json", "pruned_masks.npz",
             "nhn_masks.npz")  # fmt: skip
"""What a pipeline folder holds (archived together on ``resume=False``)."""


def run_nhn(
    data: Any,
    arc: Any,
    config: NhnConfig = NhnConfig(),
    out_dir: str | Path | None = None,
    *,
    seed: int = 0,
    resume: bool = True,
    progress: bool = False,
    log: Callable[[str], None] | None = print,
    num_devices: int | None = None,
) -> dict[str, Any]:
    """Runs Algorithm 2 from the macro ``arc`` (an ENAS arc: integers, or its text form) and
    returns ``results.json``'s content plus the final ``spec`` and ``variables``, the
    ``base_spec``, the ``pruned_spec`` with its trained ``pruned_variables``, the LDS
    ``supernet`` and gene ``space``, the ``lds_variables`` and the final ``head`` (module
    docstring). Same seed, same result.

    Devices: every training, the LDS search and the evaluations are data-parallel over
    ``num_devices`` (default: all devices of all processes under ``jax.distributed``, where
    every process calls this with the same arguments and process 0 alone writes ``out_dir``); a
    device count that does not split the trainings' or LDS's batch is refused before anything
    runs.

    A folder whose pipeline finished (``results.json`` of this run) is not run again: the call
    says so and returns the same, read back from the folder (the trainings' checkpoints and
    LDS's last one).

    Raises:
        ValueError: no validation split (DNP and LDS never look at the test split), or an arc
            that does not fit ``config.layers``.
        RunMismatchError: ``out_dir`` holds another pipeline (a ``ValueError`` too).
    """
    from fnnjax.construct.enas import arc_from_string, arc_to_string, check_arc  # noqa: PLC0415

    if len(data.validation) == 0:
        raise ValueError("data.validation: NHN's decisions (LDS) use a validation split, and it is "
                         "empty; hold out a share of the training split (--validation, or "
                         "load_dataset's validation_fraction)")  # fmt: skip
    arc = arc_from_string(arc, config.layers) if isinstance(arc, str) else check_arc(arc, config.layers)
    if num_devices is not None or jax.process_count() > 1:  # before any training, not at LDS
        data_mesh((config.batch_size,), num_devices)
        data_mesh((config.lds.batch_size,), num_devices, flag="LDS's batch_size")
    meta = {"arc": arc_to_string(arc, config.layers), "config": config.to_dict(), "seed": seed,
            "dataset": data.describe()}  # fmt: skip
    run = _Pipeline(data, config, _open_pipeline(out_dir, meta, resume), resume, progress,
                    primary_only(log) or (lambda _: None), {"arc": meta["arc"]},
                    num_devices)  # fmt: skip
    if run.folder.exists("results.json"):
        return _finished(run)
    base, base_vars = _base_stage(run, arc, seed * 10)
    spec, pruned_vars = _prune_stage(run, base, base_vars, seed * 10 + 1)
    found, final, kept, head = _lds_stage(run, spec, pruned_vars, seed * 10 + 2)
    res = _final_stage(run, final, kept, found, seed * 10 + 3)
    _ablation(run, final, res)
    return {**run.results, "spec": final, "variables": res.state.variables(), "base_spec": base,
            "pruned_spec": spec, "pruned_variables": pruned_vars, "supernet": found["supernet"],
            "space": found["space"], "lds_variables": found["variables"], "head": head}  # fmt: skip


def _open_pipeline(out_dir: str | Path | None, meta: dict[str, Any], resume: bool) -> Any:
    """The pipeline's folder, refused if it holds another pipeline; ``nhn.json`` written."""
    from fnnjax.train.runfolder import RunFolder  # noqa: PLC0415

    folder = RunFolder.open(out_dir, files=NHN_FILES, what="NHN pipeline", driver="nhn",
                            resume=resume)  # fmt: skip
    folder.check_same_run(folder.read_json("nhn.json") if resume else None, meta,
                          defaults={"config": NhnConfig().to_dict()}, strip=("config.",))  # fmt: skip
    folder.begin()
    if not folder.exists("nhn.json"):
        folder.write_json("nhn.json", meta)
    return folder


@dataclasses.dataclass
class _Pipeline:
    """One pipeline run: its data, settings, folder and the results gathered so far."""

    data: Any
    config: NhnConfig
    folder: Any
    resume: bool
    progress: bool
    say: Callable[[str], None]
    results: dict[str, Any]
    num_devices: int | None = None

    def train(self, spec: Any, stage: str, initial: Any, stage_seed: int) -> Any:
        from fnnjax.arch import build_model, to_dict  # noqa: PLC0415
        from fnnjax.train import fit  # noqa: PLC0415

        self.say(f"== NHN {stage}: training (seed {stage_seed})")
        config = stage_train_config(self.config, stage, stage_seed, self.data, self.progress,
                                    self.num_devices)  # fmt: skip
        return fit(build_model(spec, use_masks=True), self.data, config,
                   out_dir=self.folder.sub(stage), resume=self.resume,
                   description={"nhn_stage": stage, "spec": to_dict(spec)},
                   initial_variables=initial)  # fmt: skip

    def fresh(self, spec: Any, key: Any) -> dict[str, Any]:
        """``model.init(key)``'s draws, in one compile (eagerly: one per draw)."""
        from fnnjax.arch import build_model, init_variables  # noqa: PLC0415

        return init_variables(build_model(spec, use_masks=True), {"params": key},
                              self.data.input_shape, batch=1)  # fmt: skip

    def record(self, stage: str, spec: Any, summary: Mapping[str, Any], variables: Any) -> None:
        params = jax.tree_util.tree_leaves(variables["params"])
        self.results[stage] = {"params": effective_params(spec, variables),
                               "params_dense": int(sum(x.size for x in params)),
                               "validation_accuracy": summary.get("final_validation_accuracy"),
                               "test_accuracy": summary.get("final_test_accuracy")}  # fmt: skip


def _base_stage(run: _Pipeline, arc: Any, stage_seed: int) -> tuple[Any, dict[str, Any]]:
    """1. The layer hierarchy: the arc's network, SmoothInit, trained (no dropout)."""
    from fnnjax.arch import to_json  # noqa: PLC0415
    from fnnjax.construct.enas import retrain_spec  # noqa: PLC0415
    from fnnjax.construct.nhn.smooth import smooth_init  # noqa: PLC0415

    config = run.config
    base = retrain_spec(arc, config.layers, config.filters, input_shape=run.data.input_shape,
                        num_classes=run.data.num_classes, head_pool=config.head_pool,
                        skips=config.skips)  # fmt: skip
    init = run.fresh(base, jax.random.key(stage_seed))
    init = {**init, "params": smooth_init(init["params"], config.sigma)}
    run.folder.write_text("base_spec.json", to_json(base, indent=1))
    res = run.train(base, "base", init, stage_seed)
    variables = res.state.variables()
    run.record("base", base, res.summary, variables)
    return base, variables


def _prune_stage(run: _Pipeline, base: Any, base_vars: dict[str, Any],
                 stage_seed: int) -> tuple[Any, dict[str, Any]]:  # fmt: skip
    """2. DNP and clean-up, then the pruned network trained again."""
    from fnnjax.arch import save_variables, to_json  # noqa: PLC0415
    from fnnjax.construct.nhn.cleanup import clean_up  # noqa: PLC0415
    from fnnjax.construct.nhn.prune import PruneResult, dnp, prunable_kernels  # noqa: PLC0415

    config = run.config
    kernels = prunable_kernels(base_vars["params"])
    excluded = () if config.prune_stem else tuple(u for u in kernels if u.startswith("stem"))
    if set(kernels) - set(excluded):
        pruned = dnp(base_vars["params"], base_vars["masks"], ratio=config.prune_ratio,
                     per_layer=config.prune_scope == "layer", exclude=excluded)  # fmt: skip
    else:  # an arc of separable convs and poolings only: DNP has nothing to prune
        run.say("== NHN DNP: the arc has no 3x3/5x5 conv kernels (separable convs and poolings "
                "only); nothing is pruned")  # fmt: skip
        pruned = PruneResult(base_vars["masks"], {}, {}, {"kernels": 0, "pruned": 0, "params": 0,
                             "params_pruned": 0, "ratio": 0.0, "params_ratio_all": 0.0})  # fmt: skip
    cleaned = clean_up(base, {**base_vars, "masks": pruned.masks})
    spec, masks = cleaned.spec, cleaned.variables["masks"]
    if config.retrain == "inherit":
        start = cleaned.variables
    else:
        start = {**run.fresh(spec, jax.random.key(stage_seed)), "masks": masks}
    run.folder.write_text("pruned_spec.json", to_json(spec, indent=1))
    run.folder.write_with("pruned_masks.npz", lambda path: save_variables(path, {"masks": masks}))
    run.folder.write_json("prune.json", {"ratio": config.prune_ratio, "total": pruned.total,
                                         "layers": pruned.layers, "removed": cleaned.removed,
                                         "folded": cleaned.folded,
                                         "kept_constant": cleaned.kept_constant,
                                         "params": cleaned.params})  # fmt: skip
    run.say(f"== NHN DNP: {pruned.total['ratio']:.1%} of the 3x3/5x5 kernels, "
            f"{pruned.total['params_ratio_all']:.1%} of all parameters; clean-up removed "
            f"{sum(map(len, cleaned.removed.values()))} neurons")  # fmt: skip
    res = run.train(spec, "pruned", start, stage_seed)
    variables = res.state.variables()
    run.record("pruned", spec, res.summary, variables)
    run.results["prune"] = {"kernels": pruned.total["ratio"],
                            "params_all": pruned.total["params_ratio_all"]}  # fmt: skip
    return spec, variables


def _lds_stage(run: _Pipeline, spec: Any, pruned_vars: dict[str, Any], stage_seed: int):
    """3. LDS on the pruned network; the network its genes pick, with the final head."""
    from fnnjax.construct.nhn.search import lds  # noqa: PLC0415

    config = run.config
    found = lds(run.data, spec, pruned_vars, config.lds, run.folder.sub("lds"), seed=stage_seed,
                resume=run.resume, log=run.say, num_devices=run.num_devices)  # fmt: skip
    head = _final_head(config)
    final, kept = with_addons(found["supernet"], found["space"], found["variables"],
                              found["genes"], found["directions"], head=head)  # fmt: skip
    return found, final, kept, head


def _final_stage(run: _Pipeline, final: Any, kept: dict[str, Any], found: Mapping[str, Any],
                 stage_seed: int) -> Any:  # fmt: skip
    """4. The neuron hierarchy trained from scratch (the DNP masks and the directions kept)."""
    from fnnjax.arch import save_variables, to_json  # noqa: PLC0415

    init = {**run.fresh(final, jax.random.key(stage_seed)), **kept}
    run.folder.write_text("nhn_spec.json", to_json(final, indent=1))
    run.folder.write_with("nhn_masks.npz", lambda path: save_variables(path, kept))
    res = run.train(final, "final", init, stage_seed)
    run.record("final", final, res.summary, res.state.variables())
    run.results["lds"] = {"genes": np.asarray(found["genes"]).tolist(),
                          "locations": found["locations"],
                          "addon_neurons": run.config.lds.neurons * len(found["locations"])}  # fmt: skip
    return res


def _ablation(run: _Pipeline, final: Any, res: Any) -> None:
    """5. The final network with every add-on edge off; the scores; ``results.json``."""
    from fnnjax.arch import build_model  # noqa: PLC0415
    from fnnjax.train import Engine, make_mesh, replicate  # noqa: PLC0415

    engine = Engine(build_model(final, use_masks=True), _noop_tx(),
                    make_mesh(run.num_devices))  # fmt: skip
    state = replicate(res.state, engine.mesh)  # the training's devices: nothing moves
    if "arch" in state.collections:  # a network with no add-on edge and no skip has none
        state = state.replace(collections={**state.collections,
                                           "arch": addons_off(state.collections["arch"])})  # fmt: skip
    ablated = engine.evaluate(state, run.data.test)
    results = run.results
    full = results["final"]["test_accuracy"]
    results["ablation"] = {"test_accuracy_without_addons": ablated["accuracy"],
                           "drop": None if full is None else full - ablated["accuracy"]}  # fmt: skip
    for stage in ("base", "pruned", "final"):
        acc = results[stage]["test_accuracy"]
        results[stage]["score"] = None if acc is None else nhn_score(
            100 * (1 - acc), results[stage]["params"] / 1e6)  # fmt: skip
    run.folder.write_json("results.json", results)
    run.say(f"== NHN: final test accuracy {'n/a' if full is None else f'{full:.2%}'}, without "
            f"add-ons {ablated['accuracy']:.2%}, {results['final']['params']:,} parameters")  # fmt: skip


def _finished(run: _Pipeline) -> dict[str, Any]:
    """A finished pipeline's results, read back: no training runs and no file is rewritten
    (LDS's search state comes from its last checkpoint)."""
    from fnnjax.arch import build_model, from_dict, from_json  # noqa: PLC0415
    from fnnjax.construct.nhn.search import lds  # noqa: PLC0415
    from fnnjax.train import restore_run  # noqa: PLC0415

    folder, config = run.folder, run.config
    run.say(f"the NHN pipeline in {folder.path} is finished (results.json); nothing to redo "
            "(--no-resume, resume=False: run it again)")  # fmt: skip

    def rebuild(description: Mapping[str, Any]) -> Any:
        return build_model(from_dict(description["spec"]), use_masks=True)

    variables = {stage: restore_run(folder.sub(stage), rebuild)[1].variables()
                 for stage in ("pruned", "final")}  # fmt: skip
    specs = {name: from_json((folder.path / f"{name}_spec.json").read_text())
             for name in ("base", "pruned", "nhn")}  # fmt: skip
    seed = folder.read_json("nhn.json")["seed"]
    found = lds(run.data, specs["pruned"], variables["pruned"], config.lds, folder.sub("lds"),
                seed=seed * 10 + 2, log=None, num_devices=run.num_devices)  # fmt: skip
    head = _final_head(config)
    return {**folder.read_json("results.json"), "spec": specs["nhn"],
            "variables": variables["final"], "base_spec": specs["base"],
            "pruned_spec": specs["pruned"], "pruned_variables": variables["pruned"],
            "supernet": found["supernet"], "space": found["space"],
            "lds_variables": found["variables"], "head": head}  # fmt: skip


def _final_head(config: NhnConfig) -> Any:
    """The final training's head: a dense layer after dropout when ``config.dropout``."""
    from fnnjax.arch import Head  # noqa: PLC0415

    if config.dropout:
        return Head(kind="dense", dropout=config.dropout, pool=config.head_pool)
    return Head(pool=config.head_pool)


def _noop_tx():
    import optax  # noqa: PLC0415

    return optax.sgd(0.0)
