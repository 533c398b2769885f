"""``fnnjax capacity``: the dynamic-capacity command (nothing here imports JAX until the command
runs)."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
from typing import Any

from fnnjax.checks import positive_float_arg, positive_int_arg
from fnnjax.cli.common import add_run_flags, config_from, given, resolve, say

RUN_DEFAULTS = {"dataset": None, "validation": 0.1, "limit_train": None, "batch_size": 64,
                "epochs": 100, "seed": 0, "complexity": 4, "dim": 1, "num_train": 4096,
                "net": "mlp", "width": 32, "hidden": 8, "blocks": 1, "lr": 3e-3}  # fmt: skip
"""The command's settings that are not :class:`DynamicConfig` fields: the data, the network and
the training (dataset None: fashion_mnist for classification, the sines of --complexity and
--dim for regression)."""

QUICK_RUN = {
    "regression": {"complexity": 3, "num_train": 512, "width": 16, "hidden": 8, "epochs": 15},
    # Every digit (1,298 after the hold-out) through a residual stream only 4 wide, at a higher
    # rate: the loss levels off within the run (a plateau of capacity, not of noise).
    "classification": {"dataset": "digits", "width": 4, "hidden": 8, "epochs": 20,
                       "batch_size": 32, "lr": 0.01},
}  # fmt: skip
"""``--quick``'s data, network and training per task (the controller and probe:
:meth:`DynamicConfig.quick`)."""

CONTROLLER_FIELDS = {name: name for name in (
    "window", "warmup", "tau", "grow_units", "max_units", "shrink_below", "remove_below",
    "cooldown", "grace", "loss_target", "min_params", "max_params")}  # fmt: skip
"""Flag (dest) -> CapacityConfig field."""

FIELDS = {"saliency": "saliency", "unit_measure": "unit_measure", "samples": "hutchinson_samples",
          "probe_size": "probe_size", "widen": "widen", "max_shrink_loss": "max_shrink_loss"}  # fmt: skip
"""Flag (dest) -> DynamicConfig field."""

TASK_FLAGS = {"regression": ("complexity", "num_train", "dim"), "classification": ()}

QUICK = ("the demo: small sizes (3-sine regression on 512 examples, 15 epochs; or all the "
         "flattened digits through a 4-wide residual stream, 20 epochs), a plateau of under 5%% "
         "over 3 epochs, +8 units up to 16, then an inserted block; under a minute on 2 CPU "
         "cores, with at least one deletion and one function-preserving growth "
         "(DynamicConfig.quick)")  # fmt: skip


def add_parser(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    from fnnjax.construct.capacity import DynamicConfig  # noqa: PLC0415

    cap = commands.add_parser(
        "capacity", help="dynamic capacity: a residual network that grows and shrinks as it trains",
        parents=parents, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Trains a residual network while a controller changes its size (our reading "
        "of the dynamic-capacity thesis draft, docs/dynamic-capacity.md): after every epoch the "
        "units' saliency (OBD with a Hutchinson Hessian diagonal, by default on each unit's output "
        "gate) is measured on a fixed probe batch; units far below their layer's mean are "
        "deleted; on a loss plateau the most salient layer is widened (function-preserving) or, "
        "past --max-units, an identity residual block is inserted after it. OUT gets "
        "capacity.jsonl (one record per change, with the probe loss before and after), "
        "saliency.jsonl, capacity.png, layers.png, layers.md, final_spec.json and fit's files. "
        "Rerunning the command resumes an interrupted run in its latest structure.",
        epilog="examples:\n  fnnjax capacity --task regression --quick --out runs/cap-quick\n"
        "  fnnjax capacity --task regression --complexity 8 --dim 2 --epochs 200 --out runs/cap-c8\n"
        "  fnnjax capacity --task classification --dataset fashion_mnist --epochs 30 "
        "--out runs/cap-fmnist",
    )  # fmt: skip
    cap.add_argument("--task", choices=("regression", "classification"), required=True)
    cap.add_argument("--complexity", type=positive_int_arg,
                     help="regression: sines in the target (frequencies 1..C)")  # fmt: skip
    cap.add_argument("--dim", type=int, choices=(1, 2), help="regression: input dims")
    cap.add_argument("--num-train", type=positive_int_arg, help="regression: training examples")
    cap.add_argument("--net", choices=("mlp", "conv"),
                     help="a residual MLP on flattened inputs or a small ResNet (classification "
                     "only)")  # fmt: skip
    cap.add_argument("--width", type=positive_int_arg, help="residual stream")
    cap.add_argument("--hidden", type=positive_int_arg, help="initial hidden units per residual block")
    cap.add_argument("--blocks", type=positive_int_arg, help="initial blocks")
    cap.add_argument("--lr", type=positive_float_arg, help="Adam's rate")
    cap.add_argument("--saliency", choices=("obd", "taylor", "magnitude"))
    cap.add_argument("--unit-measure", choices=("gate", "parameters"),
                     help="score a unit by its output gate (default for obd/taylor) or by the "
                     "sum over its parameters (default for magnitude)")  # fmt: skip
    cap.add_argument("--samples", type=positive_int_arg,
                     help="Hutchinson vectors (a multiple of 32, or below 32)")  # fmt: skip
    cap.add_argument("--probe-size", type=positive_int_arg, help="examples of the probe batch")
    cap.add_argument("--window", type=positive_int_arg, help="plateau window")
    cap.add_argument("--tau", type=float, help="plateau: relative improvement under this")
    cap.add_argument("--grow-units", type=positive_int_arg, help="units a widening adds")
    cap.add_argument("--max-units", type=positive_int_arg,
                     help="widening cap per layer (then a block is inserted)")  # fmt: skip
    cap.add_argument("--shrink-below", type=float,
                     help="delete units below this fraction of their layer's mean")  # fmt: skip
    cap.add_argument("--remove-below", type=float,
                     help="remove the weakest residual block below this fraction of its stage's "
                     "mean block saliency (0: never)")  # fmt: skip
    cap.add_argument("--grace", type=int, help="epochs a new unit or block is safe from deletion")
    cap.add_argument("--cooldown", type=int, help="a change at most every N epochs")
    cap.add_argument("--warmup", type=int, help="epochs before the first")
    cap.add_argument("--loss-target", type=float,
                     help="no growth once the training loss is at or below this")  # fmt: skip
    cap.add_argument("--min-params", type=positive_int_arg, help="parameter floor")
    cap.add_argument("--max-params", type=positive_int_arg, help="parameter budget")
    cap.add_argument("--max-shrink-loss", type=float,
                     help="refuse a deletion that would take the probe loss more than this "
                     "fraction above its value before the consultation (all of its changes "
                     "together; inf: never refuse)")  # fmt: skip
    cap.add_argument("--widen", choices=("zero", "net2wider"),
                     help="new units' outgoing weights zero, or split existing units")  # fmt: skip
    d = DynamicConfig()
    c = d.controller
    add_run_flags(cap, {**RUN_DEFAULTS, "dataset": "fashion_mnist (regression: sines)",
                        "saliency": d.saliency, "unit_measure": d.unit_measure,
                        "samples": d.hutchinson_samples, "probe_size": d.probe_size,
                        **{name: getattr(c, name) for name in CONTROLLER_FIELDS},
                        "max_shrink_loss": d.max_shrink_loss, "widen": d.widen},
                  out_required=True, quick=QUICK)  # fmt: skip
    cap.epilog += ("\nregression: --dataset is sines (with --complexity and --dim) or a generated "
                   "task by name, e.g. sines1d-c3; --validation is a share of the task's 16384 "
                   "generated training examples")  # fmt: skip


def check_task_flags(args: argparse.Namespace) -> None:
    """Refuses a flag of the other task (it would be silently ignored)."""
    from fnnjax.errors import ConfigError  # noqa: PLC0415

    for task, names in TASK_FLAGS.items():
        shown = list(given(args, names))
        if task != args.task and shown:
            raise ConfigError(f"--{shown[0].replace('_', '-')}: a {task} flag; this run is "
                              f"--task {args.task}")  # fmt: skip


def dynamic_config(args: argparse.Namespace) -> Any:
    """The :class:`DynamicConfig` of a command line: the defaults (or ``--quick``'s,
    :meth:`DynamicConfig.quick`), then every flag given.

    Raises:
        ConfigError: naming the flag.
    """
    from fnnjax.construct import capacity as cp  # noqa: PLC0415
    from fnnjax.errors import ConfigError  # noqa: PLC0415

    base = cp.DynamicConfig.quick() if args.quick else cp.DynamicConfig()
    if args.samples is not None:
        if args.samples > 32 and args.samples % 32:
            raise ConfigError(f"--samples: expected a multiple of 32, or at most 32, got {args.samples}")
        base = dataclasses.replace(base, hutchinson_chunk=min(32, args.samples),
                                   hutchinson_samples=args.samples)  # fmt: skip
    try:
        controller = config_from(base.controller, args, CONTROLLER_FIELDS)
        return config_from(dataclasses.replace(base, controller=controller), args, FIELDS)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def _data_and_spec(args: argparse.Namespace):
    from fnnjax.construct import capacity as cp  # noqa: PLC0415
    from fnnjax.errors import ConfigError  # noqa: PLC0415
    from fnnjax.train import load_dataset  # noqa: PLC0415

    limited = args.limit_train is not None
    if args.task == "regression":
        from fnnjax.train import tasks  # noqa: PLC0415

        if args.dataset not in (None, "sines") and not tasks.is_generated(args.dataset):
            raise ConfigError(f"--dataset: regression runs on the generated sines targets "
                              f"(sines, with --complexity and --dim, or a task named like "
                              f"sines1d-c3), got {args.dataset!r}")  # fmt: skip
        if args.net != "mlp":
            raise ConfigError("--net: regression uses the residual MLP (--net mlp)")
        # The named task fnnjax train loads too (fnnjax.train.tasks), so the final spec retrains.
        if args.dataset in (None, "sines"):
            args.dataset = f"sines{args.dim}d-c{args.complexity}"
        args.limit_train = args.limit_train or args.num_train
    args.dataset = args.dataset or "fashion_mnist"
    try:
        data = load_dataset(args.dataset, validation_fraction=args.validation,
                            seed=args.seed, limit_train=args.limit_train)  # fmt: skip
    except ConfigError as error:
        if not str(error).startswith("limit_train"):
            raise
        flag = "--num-train" if args.task == "regression" and not limited else "--limit-train"
        raise ConfigError(f"{flag}: {str(error).split(': ', 1)[1]}") from None
    if args.net == "conv":
        spec = cp.residual_conv_spec(data.input_shape, data.num_classes, width=args.width,
                                     hidden=args.hidden, blocks=args.blocks)  # fmt: skip
    else:
        data = cp.as_vectors(data)
        spec = cp.residual_mlp_spec(data.input_shape, data.num_classes, width=args.width,
                                    hidden=args.hidden, blocks=args.blocks)  # fmt: skip
    return data, spec


def run(args: argparse.Namespace) -> int:
    from fnnjax.construct import capacity as cp  # noqa: PLC0415
    from fnnjax.train import TrainConfig  # noqa: PLC0415

    check_task_flags(args)
    resolve(args, RUN_DEFAULTS, QUICK_RUN[args.task])
    config = dynamic_config(args)
    data, spec = _data_and_spec(args)
    train = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
                        seed=args.seed, num_devices=args.devices)  # fmt: skip
    result = cp.train_dynamic(spec, data, train, config, args.out, objective=args.task,
                              resume=not args.no_resume)  # fmt: skip
    ops = [c["op"] for c in result["changes"]]
    counts = ", ".join(f"{ops.count(o)} {o}" for o in ("widen", "insert", "narrow", "remove")) or "none"
    metric = "accuracy" if args.task == "classification" else "loss"
    final = result["summary"].get(f"final_test_{metric}")
    shown = ("n/a (no test split)" if final is None
             else f"{final:.2%}" if metric == "accuracy" else f"{final:.4g}")  # fmt: skip
    say(f"dynamic capacity on {data.name}: parameters {result['params_initial']} -> "
          f"{result['params_final']} ({len(ops)} changes: {counts}); final test {metric} "
          f"{shown}; see {args.out / 'capacity.png'}, {args.out / 'layers.md'}")  # fmt: skip
    say(f"the final network: {args.out / 'final_spec.json'}; to train it from scratch on the "
          f"same data: {retrain_command(args)}")  # fmt: skip
    return 0


def retrain_command(args: argparse.Namespace) -> str:
    """The ``fnnjax train`` command that trains the run's final spec from scratch on its data
    (the dataset, hold-out, seed, training examples and schedule of the run; a spec of flattened
    images is fed flattened images)."""
    limit = [] if args.limit_train is None else ["--limit-train", str(args.limit_train)]
    words = ["fnnjax", "train", "--spec", str(args.out / "final_spec.json"), "--dataset",
             args.dataset, "--validation", f"{args.validation:g}", "--seed", str(args.seed), *limit,
             "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--lr",
             f"{args.lr:g}", "--out", str(args.out / "retrained")]  # fmt: skip
    return " ".join(shlex.quote(w) for w in words)


__all__ = ["add_parser", "dynamic_config", "retrain_command", "run"]
