"""The dynamic-capacity driver: train a residual network while the controller grows and shrinks it.

Our reading of the draft's section 4.1 ("Implementation", a heading only): training runs through
:func:`fnnjax.train.fit`; after every epoch the driver

1. takes the epoch's mean training loss (the controller's loss history: one evaluation per
   epoch) and, once ``cooldown`` epochs have passed since the last change (or the start), and
   unless it was the last epoch,
2. measures the units' saliency on a *probe batch* (``probe_size`` training examples fixed by the
   seed, the network in inference mode: no dropout, BatchNorm's running statistics): by default
   OBD on every unit's output gate, ``1/2 d2L/dm_u^2`` with a Hutchinson Hessian diagonal, the
   second-order loss change of deleting the unit (``unit_measure="gate"``); or OBD's
   ``1/2 H_ii w_i^2`` summed over each unit's parameters (``"parameters"``); or the Taylor /
   magnitude baselines (:mod:`~fnnjax.construct.capacity.saliency`); all in one jitted call,
3. asks the controller (:func:`~fnnjax.construct.capacity.plan_changes`) what to change
   (narrow, remove a block, widen, insert a block), and
4. applies each change with its surgery (:mod:`~fnnjax.construct.capacity.ops`,
   :func:`fnnjax.arch.insert_residual`), carrying parameters, BatchNorm statistics and the
   optimizer state over (kept entries keep their moments, new ones start at zero;
   :func:`fnnjax.arch.transplant_opt_state`), measuring the probe batch's loss and outputs just
   before and just after, and hands the new network back to ``fit`` (:class:`fnnjax.train.NewModel`), which
   checkpoints it at once with its spec. A deletion (narrowing, removal) that would take the
   probe loss more than ``max_shrink_loss`` above its value at the consultation's start (all the
   consultation's changes together, :func:`apply_plan`) is refused and recorded; a refusal cools
   down like a change.

No change follows the last epoch's evaluation: a network changed then would never be trained
and ``fit``'s final evaluation would measure it, not the network the last epoch evaluated. So
the returned network (``spec``, ``state``) is the last one trained and evaluated, and the
summary's ``final_*`` numbers are its evaluation, equal to the last epoch's.

The step, the schedule, the data order and the training noise go on unchanged through a change,
so a run killed after changes and resumed (it restarts from the newest checkpoint in its latest
structure, replaying the controller from ``capacity.jsonl``) ends with bitwise the same
parameters as one that was never stopped.

The run folder holds ``fit``'s files (``metrics.jsonl``, ``checkpoints/``, ``summary.json``, ...)
plus ``capacity_config.json``, ``capacity.jsonl`` (one record per change: ``step``, ``epoch``,
``op``, ``target``, ``value``, ``reason``, ``params_before``, ``params_after``, ``loss_before``,
``loss_after``, ``output_change``: the largest change of any output on the probe batch over the
largest output, measured (zero up to rounding for a growth), ``spec``: the network after it; a
narrowing or removal also has ``saliency_deleted``, the deleted units' summed saliency: with OBD
on gates, the second-order estimate of the loss increase, its first-order term left out as OBD
assumes a minimum), ``saliency.jsonl`` (per consultation: every unit's and every block's
saliency, the changes ``refused`` at execution with their reason, and the decisions the
controller ``declined``, among them every stage block whose kind the capacity operations cannot
resize (a Cell, a Choice: ``op`` ``"resize"``; also warned about once per run): the layer
analysis's data), ``final_spec.json``, ``capacity.png`` (parameters and loss against step),
``layers.png`` and ``layers.md`` (the layer report, :mod:`~fnnjax.construct.capacity.analysis`)
and ``run.json`` (the folder's provenance, :mod:`fnnjax.train.runfolder`). A later call on the
folder resumes only the same run (``capacity_config.json``; a setting its record lacks counts
only when it is not at its default).
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

from fnnjax.checks import check_choice, check_int, check_number
from fnnjax.construct.capacity.controller import CapacityConfig, Change, plan_changes
from fnnjax.construct.capacity.ops import narrow, remove_block, widen
from fnnjax.construct.capacity.probe import Probe as _Probe
from fnnjax.construct.capacity.saliency import sum_per_block
from fnnjax.train.jsonio import dumps
from fnnjax.train.runfolder import RunFolder
from fnnjax.train.sharding import primary_only

__all__ = ["SALIENCIES", "DynamicConfig", "apply_changes", "apply_plan", "train_dynamic"]

SALIENCIES = ("obd", "taylor", "magnitude")
WIDEN_METHODS = ("zero", "net2wider")
CAPACITY_FILES = ("capacity_config.json", "capacity.jsonl", "saliency.jsonl", "final_spec.json",
                  "capacity.png", "layers.png", "layers.md")  # fmt: skip


@dataclasses.dataclass(frozen=True)
class DynamicConfig:
    """How a dynamic-capacity run measures and changes its network (module docstring).

    Attributes:
        controller: the policy's thresholds (:class:`CapacityConfig`; an evaluation is an epoch).
        saliency: ``"obd"`` (default), ``"taylor"`` or ``"magnitude"``.
        unit_measure: ``"gate"`` (the saliency of each unit's output gate: deleting the unit,
            all its weights at once) or ``"parameters"`` (the sum of its incoming parameters'
            saliencies); None (default): ``"gate"`` for OBD and Taylor, ``"parameters"`` for
            magnitude (the l1 filter norm; a gate has no magnitude).
        hutchinson_samples, hutchinson_chunk: Rademacher vectors of the OBD estimate, and how
            many run at once (``vmap``; memory grows with it).
        probe_size: training examples of the fixed probe batch (saliency and the loss around
            every change).
        widen: ``"zero"`` (new units' outgoing weights zero) or ``"net2wider"`` (split existing
            units; the copies' optimizer moments start at zero like any new entry's).
        insert_hidden: hidden width of an inserted residual block (None: its input's width).
        max_shrink_loss: a deletion (narrowing, removal) that would take the probe loss more
            than this fraction above its value at the consultation's start is refused (undone
            and listed under ``refused`` in that consultation's ``saliency.jsonl`` record); the
            bound holds for all of a consultation's changes together (:func:`apply_plan`). The
            saliency is a second-order estimate at a point that is not a minimum, and deleting
            a ReLU unit is not a small perturbation, so a unit estimated useless can still
            matter. None: every planned deletion is applied.
    """

    controller: CapacityConfig = CapacityConfig()
    saliency: str = "obd"
    unit_measure: str | None = None
    hutchinson_samples: int = 128
    hutchinson_chunk: int = 32
    probe_size: int = 512
    widen: str = "zero"
    insert_hidden: int | None = None
    max_shrink_loss: float | None = 0.1

    def __post_init__(self) -> None:
        check_choice("saliency", self.saliency, SALIENCIES)
        check_choice("unit_measure", self.unit_measure, (None, "gate", "parameters"))
        if self.saliency == "magnitude" and self.unit_measure == "gate":
            raise ValueError("unit_measure: 'gate' has no magnitude saliency (a gate is 1); use "
                             "'parameters' (the l1 filter norm) or saliency='obd' / 'taylor'")  # fmt: skip
        check_choice("widen", self.widen, WIDEN_METHODS)
        for name in ("hutchinson_samples", "hutchinson_chunk", "probe_size"):
            check_int(name, getattr(self, name))
        if self.hutchinson_samples % self.hutchinson_chunk:
            raise ValueError(f"hutchinson_samples: expected a multiple of hutchinson_chunk="
                             f"{self.hutchinson_chunk}, got {self.hutchinson_samples}")  # fmt: skip
        if self.max_shrink_loss != math.inf:  # inf: never refuse
            check_number("max_shrink_loss", self.max_shrink_loss, at_least=0.0, none=True)
        check_int("insert_hidden", self.insert_hidden, none=True)

    @property
    def measured_by(self) -> str:
        """``unit_measure``, resolved."""
        if self.unit_measure is not None:
            return self.unit_measure
        return "parameters" if self.saliency == "magnitude" else "gate"

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def quick(cls, **changes: Any) -> DynamicConfig:
        """The same method at a demo size (``fnnjax capacity --quick``, either task): our
        reading of the draft's controller with a coarser plateau (3 epochs, under 5%), a
        shorter warm-up (3) and grace (4), a lower widening cap (16 units) and a smaller probe
        (256 examples, 32 Hutchinson vectors); plus ``changes``. Chosen so that the quick
        regression (3 sines, 512 examples, width 16, 15 epochs) and classification (all of
        digits through a 4-wide stream, 20 epochs) runs visibly delete units (OBD: units whose
        deletion barely moves the probe loss) and grow on a plateau (a widening, then past the
        cap an inserted block), within a minute on 2 CPU cores
        (tests/construct/test_construct_capacity.py checks the deletions and growths)."""
        controller = CapacityConfig(window=3, tau=0.05, grow_units=8, max_units=16, cooldown=3,
                                    warmup=3, grace=4)  # fmt: skip
        return cls(**{"controller": controller, "hutchinson_samples": 32, "hutchinson_chunk": 32,
                      "probe_size": 256, **changes})  # fmt: skip

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DynamicConfig:
        values = dict(values)
        controller = dict(values.pop("controller", {}))
        for where, known, given in (("", {f.name for f in dataclasses.fields(cls)}, values),
                                    ("controller.", {f.name for f in dataclasses.fields(CapacityConfig)},
                                     controller)):  # fmt: skip
            unknown = sorted(set(given) - known)
            if unknown:
                raise ValueError(f"{where}{unknown[0]}: no such DynamicConfig field (known: "
                                 f"{', '.join(sorted(known))})")  # fmt: skip
        return cls(controller=CapacityConfig(**controller), **values)


def _apply(change: Change, spec: Any, variables: dict[str, Any], config: DynamicConfig,
           key: jax.Array) -> tuple[Any, str]:  # fmt: skip
    """The :class:`~fnnjax.arch.grow.Grown` of one change and the method used."""
    from fnnjax.arch import insert_residual  # noqa: PLC0415

    if change.op == "narrow":
        return narrow(spec, variables, change.target, change.value), "delete"
    if change.op == "remove":
        return remove_block(spec, variables, *change.value), "delete"
    if change.op == "insert":  # a ReLU after the add like the task's blocks, where that is exact
        stage, position = change.value
        try:
            return insert_residual(spec, variables, stage, position, hidden=config.insert_hidden,
                                   act="relu", key=key), "identity, relu"  # fmt: skip
        except ValueError:
            return insert_residual(spec, variables, stage, position, hidden=config.insert_hidden,
                                   key=key), "identity"  # fmt: skip
    if change.op != "widen":
        raise ValueError(f"change.op: expected 'widen', 'narrow', 'insert' or 'remove', got "
                         f"{change.op!r}")  # fmt: skip
    return widen(spec, variables, change.target, change.value, method=config.widen,
                 key=key), config.widen


def apply_changes(
    changes: list[Change], spec: Any, variables: dict[str, Any], opt_state: Any, tx: Any, *,
    config: DynamicConfig = DynamicConfig(), key: jax.Array | None = None,
    loss: Callable[[Any, dict[str, Any]], float] | None = None,
    outputs: Callable[[Any, dict[str, Any]], Any] | None = None,
) -> tuple[dict[str, Any], Any, list[dict[str, Any]]]:  # fmt: skip
    """Applies ``changes`` in order (a pure transform of the network and its training state).

    Args:
        changes: from :func:`~fnnjax.construct.capacity.plan_changes`.
        spec, variables: the network and its variables (every collection).
        opt_state, tx: the optimizer state of ``variables["params"]`` and its optimizer; kept
            entries keep their moments, new ones start at zero.
        config: the widening method and an inserted block's hidden width.
        key: new weights' randomness (change ``n`` uses ``fold_in(key, n)``; default key(0)).
        loss: ``loss(spec, variables) -> float`` (e.g. on a fixed batch), measured just before
            and just after each change (None: not measured).
        outputs: ``outputs(spec, variables) -> [batch, outputs]`` (the network's outputs on a
            fixed batch, inference mode), measured just before and just after each change
            (None: not measured).

    Returns:
        ``(variables, opt_state, records)``: one record per change (``op``, ``target``, ``value``,
        ``method``, ``reason``, ``params_before``, ``params_after``, ``loss_before``,
        ``loss_after``, ``output_change``: the largest change of any output over the largest
        output before, measured (0 up to rounding for a growth: it keeps the function),
        ``spec``: the network after it, as a JSON dict).
    """
    from fnnjax.arch import analytic_counts, to_dict, transplant_opt_state  # noqa: PLC0415

    key = jax.random.key(0) if key is None else key
    records = []
    for n, change in enumerate(changes):
        before = loss(spec, variables) if loss is not None else None
        out_before = np.asarray(outputs(spec, variables)) if outputs is not None else None
        params_before = analytic_counts(spec)["params"]
        grown, method = _apply(change, spec, variables, config, jax.random.fold_in(key, n))
        opt_state = transplant_opt_state(tx, spec, variables["params"], opt_state, grown.spec,
                                         grown.variables["params"], kept=_first_copies(grown.kept))  # fmt: skip
        spec, variables = grown.spec, grown.variables
        value = list(change.value) if change.op == "narrow" else change.value
        records.append({"op": change.op, "target": change.target,
                        "value": json.loads(json.dumps(value)), "method": method,
                        "reason": change.reason, "params_before": params_before,
                        "params_after": analytic_counts(spec)["params"], "loss_before": before,
                        "loss_after": loss(spec, variables) if loss is not None else None,
                        "output_change": None if outputs is None else float(
                            np.abs(np.asarray(outputs(spec, variables)) - out_before).max()
                            / max(float(np.abs(out_before).max()), 1e-12)),
                        "spec": to_dict(spec)})  # fmt: skip
    return dict(variables), opt_state, records


def apply_plan(
    plan: list[Change], spec: Any, variables: dict[str, Any], opt_state: Any, tx: Any, *,
    config: DynamicConfig = DynamicConfig(), key: jax.Array | None = None,
    loss: Callable[[Any, dict[str, Any]], float] | None = None,
    outputs: Callable[[Any, dict[str, Any]], Any] | None = None,
    saliency: dict[str, Any] | None = None,
) -> tuple[Any, dict[str, Any], Any, list[dict[str, Any]], list[dict[str, Any]]]:  # fmt: skip
    """Applies one consultation's ``plan`` in order (:func:`apply_changes`), refusing (undoing)
    every change that fails a guard; the next change is applied to the network as it stands:

    * a deletion (narrowing, removal) after which the probe loss is more than
      ``config.max_shrink_loss`` above its value at the consultation's start (needs ``loss``):
      the bound is on all of the consultation's changes together, not on each (nine deletions
      that each raise the loss 4% raise it 42%);
    * a change that takes the network past ``config.controller.max_params``.

    Args:
        plan: from :func:`~fnnjax.construct.capacity.plan_changes`.
        spec, variables, opt_state, tx, config, loss, outputs: as for :func:`apply_changes`.
        key: change ``n`` of the plan uses ``fold_in(key, n)`` (default key(0)).
        saliency: the unit saliencies the plan was made from (adds ``saliency_deleted`` to the
            records of deletions).

    Returns:
        ``(spec, variables, opt_state, applied, refused)``: the network after the kept changes,
        their records (:func:`apply_changes`'s), and one ``{"op", "target", "value",
        "loss_before", "loss_after", "saliency_deleted", "reason"}`` per refused change.
    """
    key = jax.random.key(0) if key is None else key
    applied: list[dict[str, Any]] = []
    refused: list[dict[str, Any]] = []
    limit, budget = config.max_shrink_loss, config.controller.max_params
    start = None  # the probe loss before the consultation's first change
    for n, change in enumerate(plan):
        new_vars, new_opt, (rec,) = apply_changes(
            [change], spec, variables, opt_state, tx, config=config,
            key=jax.random.fold_in(key, n), loss=loss, outputs=outputs)  # fmt: skip
        if saliency is not None and rec["op"] == "narrow":  # OBD's estimate (module docstring)
            rec["saliency_deleted"] = float(np.delete(saliency[rec["target"]], rec["value"]).sum())
        elif saliency is not None and rec["op"] == "remove":
            rec["saliency_deleted"] = float(sum_per_block(saliency).get(rec["target"], 0.0))
        start = rec["loss_before"] if start is None else start
        why = None
        if rec["op"] in ("narrow", "remove") and limit is not None and loss is not None \
                and rec["loss_after"] > (1 + limit) * start:
            rise = rec["loss_after"] / start - 1 if start > 0 else float("inf")
            why = (f"the probe loss would rise {rec['loss_before']:.4g} -> {rec['loss_after']:.4g}, "
                   f"{rise:.1%} above {start:.4g} at the consultation's start (more than "
                   f"max_shrink_loss {limit:.0%} for all its changes together)")  # fmt: skip
        elif budget is not None and rec["params_after"] > max(budget, rec["params_before"]):
            why = (f"{rec['params_after']} parameters > max_params {budget} (a narrowing "
                   "it was priced with was refused)")  # fmt: skip
        if why is not None:
            refused.append({**{k: rec.get(k) for k in ("op", "target", "value", "loss_before",
                                                       "loss_after", "saliency_deleted")},
                            "reason": why})  # fmt: skip
            continue
        spec, variables, opt_state = _spec_of(rec), new_vars, new_opt
        applied.append(rec)
    return spec, variables, opt_state, applied, refused


def _grown_lately(changes: list[dict[str, Any]], epoch: int, grace: int) -> list[str]:
    """Units widened and blocks inserted in the last ``grace`` epochs (by the name they were given
    then; a later insertion or removal in the same stage may have shifted it, which only moves
    the protection for a few epochs)."""
    out = []
    for c in changes:
        if epoch - c["epoch"] < grace:
            if c["op"] == "widen":
                out.append(c["target"])
            elif c["op"] == "insert":
                out.append(f"s{c['value'][0]}b{c['value'][1]}")
    return out


def _first_copies(kept: dict[str, list[int]]) -> dict[str, list[int]]:
    """``kept`` with every repeated index but its first replaced by -1 (new): Net2Wider's copies
    are new units, whose optimizer moments start at zero."""
    out = {}
    for path, indices in kept.items():
        seen: set[int] = set()
        first = []
        for k in indices:
            first.append(-1 if k in seen else k)
            if k >= 0:
                seen.add(k)
        out[path] = first
    return out


def _open_folder(out_dir: str | Path | None, now: dict[str, Any], resume: bool,
                 training: dict[str, Any]) -> RunFolder:  # fmt: skip
    """The run folder, checked to hold this run (or none): the capacity settings (``now``: the
    run's identity) and the training (``training``: :func:`fnnjax.train.check_fit_folder`'s
    arguments), both before anything is written; then its start recorded and
    ``capacity_config.json`` written."""
    from fnnjax.train import check_fit_folder  # noqa: PLC0415
    from fnnjax.train.rundir import RUN_FILES  # noqa: PLC0415

    folder = RunFolder.open(out_dir, files=RUN_FILES + CAPACITY_FILES, what="dynamic-capacity run",
                            driver="capacity", resume=resume)  # fmt: skip
    folder.check_same_run(folder.read_json("capacity_config.json"), now,
                          defaults={"capacity": DynamicConfig().to_dict()},
                          strip=("capacity.",))  # fmt: skip
    check_fit_folder(folder, **training)
    folder.begin()
    folder.write_json("capacity_config.json", now)
    return folder


def _jsonl(records: list[dict[str, Any]]) -> str:
    return "".join(dumps(r) + "\n" for r in records)


class _Consultations:
    """The controller's side of a run: ``fit``'s ``on_epoch_end`` (module docstring), keeping
    the change and saliency records (``capacity.jsonl``, ``saliency.jsonl``) and the loss
    history the controller reads; a resumed run replays what the folder recorded (records past
    the restored checkpoint are dropped, as the epochs that wrote them are redone)."""

    def __init__(self, spec: Any, config: DynamicConfig, epochs: int, folder: RunFolder,
                 probe: _Probe, tx: Any, base_key: jax.Array,
                 say: Callable[[str], None]) -> None:  # fmt: skip
        self.spec, self.config, self.epochs, self.folder = spec, config, epochs, folder
        self.probe, self.tx, self.base_key, self.say = probe, tx, base_key, say
        self.changes = folder.read_jsonl("capacity.jsonl")
        self.saliencies = folder.read_jsonl("saliency.jsonl")
        self.losses: list[float] = []
        self.loaded = False
        self.warned = False  # the blocks it cannot resize are warned about once per run

    def __call__(self, record: dict[str, Any], state: Any) -> Any:
        step, epoch = int(record["step"]), int(record["epoch"])
        if not self.loaded:  # first call of this process: fit has truncated metrics.jsonl
            self.loaded = True
            saved = self.folder.read_jsonl("metrics.jsonl")
            self.losses = [r["train_loss"] for r in saved][: epoch - 1]
        # Records of this step or later were written by a run killed before its checkpoint.
        self.changes = [c for c in self.changes if c["step"] < step]
        self.saliencies = [s for s in self.saliencies if s["step"] < step]
        self.losses = self.losses[: epoch - 1] + [float(record["train_loss"])]
        last = max([c["epoch"] for c in self.changes]
                   + [s["epoch"] for s in self.saliencies if s["refused"]],
                   default=0)  # a refusal cools down like a change  # fmt: skip
        since, controller = epoch - last, self.config.controller
        new = None
        if since >= controller.cooldown and epoch >= controller.warmup \
                and epoch < self.epochs:  # no change after the last evaluation
            new = self._consult(state, step, epoch, since)
        self.folder.write_text("capacity.jsonl", _jsonl(self.changes))
        self.folder.write_text("saliency.jsonl", _jsonl(self.saliencies))
        return new

    def _consult(self, state: Any, step: int, epoch: int, since: int) -> Any:
        """Measures the saliency, asks the controller and applies its plan (the new model for
        ``fit``, or None)."""
        config, current = self.config, _current_spec(self.changes, self.spec)
        key = jax.random.fold_in(self.base_key, step)
        units = self.probe.saliency(current, state.variables(), key)
        refused: list[dict[str, Any]] = []
        declined: list[dict[str, Any]] = []
        blocks = {b: float(v) for b, v in sorted(sum_per_block(units).items())}
        self.saliencies.append({"step": step, "epoch": epoch, "refused": refused,
                                "declined": declined, "blocks": blocks,
                                "units": {u: v.tolist() for u, v in sorted(units.items())}})  # fmt: skip
        grown = _grown_lately(self.changes, epoch, config.controller.grace)
        plan = plan_changes(self.losses, units, current, config.controller, since_change=since,
                            insert_hidden=config.insert_hidden, declined=declined,
                            protected=grown)  # fmt: skip
        fixed = [d for d in declined if d["op"] == "resize"]
        if fixed and not self.warned:
            self.warned = True
            warnings.warn("dynamic capacity: cannot resize " + "; ".join(
                f"{d['target']} (a {d['kind']} block)" for d in fixed) + ": measured, never "
                "changed (recorded as declined in saliency.jsonl)", stacklevel=5)  # fmt: skip
        return self._changed(plan, current, state, step, epoch, units, refused) if plan else None

    def _changed(self, plan: list[Change], current: Any, state: Any, step: int, epoch: int,
                 units: dict[str, np.ndarray], refused: list[dict[str, Any]]) -> Any:  # fmt: skip
        from fnnjax.arch import build_model  # noqa: PLC0415
        from fnnjax.models import describe_spec  # noqa: PLC0415
        from fnnjax.train import NewModel  # noqa: PLC0415

        variables, opt_state = jax.device_get(state.variables()), jax.device_get(state.opt_state)
        current, variables, opt_state, applied, no = apply_plan(
            plan, current, variables, opt_state, self.tx, config=self.config,
            key=jax.random.fold_in(self.base_key, step), loss=self.probe.loss,
            outputs=self.probe.outputs, saliency=units)  # fmt: skip
        for rec in no:
            refused.append(rec)
            self.say(f"step {step} (epoch {epoch}): refused {rec['op']} {rec['target']}: "
                     f"{rec['reason']}")  # fmt: skip
        for rec in applied:
            self.changes.append({"step": step, "epoch": epoch, **rec})
            self.say(f"step {step} (epoch {epoch}): {rec['op']} {rec['target']} -> "
                     f"{_short(rec['value'])}; params {rec['params_before']} -> "
                     f"{rec['params_after']}; probe loss {rec['loss_before']:.6g} -> "
                     f"{rec['loss_after']:.6g} ({rec['reason']})")  # fmt: skip
        if not applied:
            return None
        params = variables.pop("params")
        new_state = state.replace(params=params, collections=variables, opt_state=opt_state)
        return NewModel(build_model(current), new_state, describe_spec(current))


def _check_data(spec: Any, data: Any) -> None:
    if tuple(spec.input_shape) != tuple(data.input_shape):
        raise ValueError(f"spec: its input shape {tuple(spec.input_shape)} is not the dataset's "
                         f"{tuple(data.input_shape)}")  # fmt: skip
    if spec.num_classes != data.num_classes:
        raise ValueError(f"spec: it has {spec.num_classes} outputs, the dataset "
                         f"{data.num_classes}")  # fmt: skip


def train_dynamic(
    spec: Any,
    data: Any,
    train_config: Any,
    config: DynamicConfig = DynamicConfig(),
    out_dir: str | Path | None = None,
    *,
    objective: str = "classification",
    resume: bool = True,
    log: Callable[[str], None] | None = print,
    mesh: Any = None,
) -> dict[str, Any]:
    """Trains ``spec`` on ``data`` for ``train_config.epochs`` epochs, growing and shrinking it
    (module docstring).

    Args:
        spec: the initial network (e.g. :func:`~fnnjax.construct.capacity.residual_mlp_spec`).
        data: a :class:`fnnjax.train.Dataset` of the spec's input shape.
        train_config: the :class:`fnnjax.train.TrainConfig` (optimizer, schedule, epochs, seed).
        config: the saliency and the controller.
        out_dir: the run folder (None: in memory, nothing written; no resume).
        objective: ``"classification"`` or ``"regression"``.
        resume: go on from ``out_dir``'s newest checkpoint (default); False moves an earlier
            run's files into ``out_dir/previous-<time>/`` first.
        log: called with one line per change (None: silent).
        mesh: the device mesh (default: ``train_config.num_devices`` devices, None: all of
            them, of all processes under ``jax.distributed``, where every process calls this
            with the same arguments and process 0 alone writes ``out_dir``).

    Returns:
        ``{"spec", "changes", "saliency", "history", "summary", "state", "params_initial",
        "params_final"}``: the final network, the change and saliency records, ``fit``'s history
        and summary, and the final train state. No change follows the last epoch's evaluation,
        so the final network is the last one trained, and the summary's ``final_*`` numbers
        are its evaluation (equal to the last epoch's).

    Raises:
        RunMismatchError: ``out_dir`` holds a different dynamic-capacity run (a ``ValueError``).

    Warns:
        UserWarning: once per run, naming the stage blocks it cannot resize (their units are
        measured, never changed; each consultation records them as declined).
    """
    from fnnjax.arch import analytic_counts, build_model, to_dict, to_json  # noqa: PLC0415
    from fnnjax.construct.capacity import analysis  # noqa: PLC0415
    from fnnjax.models import describe_spec, model_from_description  # noqa: PLC0415
    from fnnjax.train import fit, get_objective, make_optimizer  # noqa: PLC0415

    obj = get_objective(objective)
    _check_data(spec, data)
    now = {"capacity": config.to_dict(), "initial_spec": to_dict(spec), "objective": obj.name}
    folder = _open_folder(out_dir, now, resume, {"data": data, "config": train_config,
                                                 "description": describe_spec(spec),
                                                 "objective": obj})  # fmt: skip
    steps_per_epoch = max(1, len(data.train) // train_config.batch_size)
    tx = make_optimizer(train_config, steps_per_epoch)  # fit's optimizer: the states must agree
    consult = _Consultations(spec, config, train_config.epochs, folder,
                             _Probe(data, obj, config, train_config.seed), tx,
                             jax.random.fold_in(jax.random.key(train_config.seed), 0xCA9),
                             primary_only(log) or (lambda _: None))  # fmt: skip
    initial_params = analytic_counts(spec)["params"]
    result = fit(build_model(spec), data, train_config, out_dir=folder.path,
                 description=describe_spec(spec), on_epoch_end=consult, objective=obj,
                 rebuild=model_from_description, mesh=mesh)  # fmt: skip
    done = int(result.summary["steps"])  # a finished run resumed: nothing was redone
    changes = [c for c in consult.changes if c["step"] <= done]
    saliencies = [r for r in consult.saliencies if r["step"] <= done]
    final = _current_spec(changes, spec)
    if to_json(final) != to_json(_spec_of(result.description)):
        raise RuntimeError("the controller's record and the trained network disagree (a bug)")
    folder.write_text("final_spec.json", to_json(final))
    folder.figure("capacity.png",
                  **analysis.capacity_figure(result.history, changes, initial_params))  # fmt: skip
    folder.figure("layers.png", **analysis.layers_figure(saliencies, changes, spec))
    rows = analysis.layer_report(changes, saliencies, spec)
    folder.write_text("layers.md", analysis.report_markdown(rows))
    return {"spec": final, "changes": changes, "saliency": saliencies, "history": result.history,
            "summary": result.summary, "state": result.state, "params_initial": initial_params,
            "params_final": analytic_counts(final)["params"]}  # fmt: skip


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _spec_of(description: dict[str, Any]) -> Any:
    from fnnjax.arch import from_dict  # noqa: PLC0415

    return from_dict(description["spec"])


def _current_spec(changes: list[dict[str, Any]], initial: Any) -> Any:
    """The network after the last recorded change (or the initial one)."""
    return _spec_of(changes[-1]) if changes else initial
