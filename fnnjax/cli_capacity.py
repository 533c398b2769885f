"""``fnnjax capacity``: the dynamic-capacity command (kept apart from :mod:`fnnjax.cli` so that
module stays short; nothing here imports JAX until the command runs)."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any

from fnnjax.checks import positive_float_arg, positive_int_arg

QUICK = ("the demo: small sizes (3-sine regression on 512 examples, 15 epochs; or all the "
         "flattened digits through a 4-wide residual stream, 20 epochs), a plateau of under 5%% "
         "over 3 epochs, +8 units up to 16, then an inserted block; under a minute on 2 CPU "
         "cores, with at least one deletion and one function-preserving growth. Flags given "
         "explicitly still apply")


def add_parser(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
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
    cap.add_argument("--dataset", help="classification: a dataset name (see `fnnjax datasets`), "
                     "default fashion_mnist; regression: sines (--complexity, --dim) or a "
                     "generated task by name, e.g. sines1d-c3")  # fmt: skip
    cap.add_argument("--complexity", type=positive_int_arg, default=None,
                     help="regression: sines in the target (frequencies 1..C); default 4")  # fmt: skip
    cap.add_argument("--dim", type=int, choices=(1, 2), help="regression: input dims; default 1")
    cap.add_argument("--num-train", type=positive_int_arg, default=None,
                     help="regression: training examples; default 4096")  # fmt: skip
    cap.add_argument("--net", choices=("mlp", "conv"), default="mlp",
                     help="a residual MLP on flattened inputs (default) or a small ResNet "
                     "(classification only)")  # fmt: skip
    cap.add_argument("--width", type=positive_int_arg, default=None, help="residual stream; default 32")
    cap.add_argument("--hidden", type=positive_int_arg, default=None,
                     help="initial hidden units per residual block; default 8")  # fmt: skip
    cap.add_argument("--blocks", type=positive_int_arg, default=1, help="initial blocks; default 1")
    cap.add_argument("--epochs", type=positive_int_arg, default=None, help="default 100")
    cap.add_argument("--batch-size", type=positive_int_arg, default=None, help="default 64")
    cap.add_argument("--lr", type=positive_float_arg, default=None, help="Adam's rate; default 3e-3")
    cap.add_argument("--saliency", choices=("obd", "taylor", "magnitude"), default="obd",
                     help="default obd")  # fmt: skip
    cap.add_argument("--unit-measure", choices=("gate", "parameters"),
                     help="score a unit by its output gate (default for obd/taylor) or by the "
                     "sum over its parameters (default for magnitude)")  # fmt: skip
    cap.add_argument("--samples", type=positive_int_arg, default=None,
                     help="Hutchinson vectors (a multiple of 32, or below 32); default 128")  # fmt: skip
    cap.add_argument("--probe-size", type=positive_int_arg, default=None, help="default 512")
    cap.add_argument("--window", type=positive_int_arg, default=None, help="plateau window; default 5")
    cap.add_argument("--tau", type=float, default=None,
                     help="plateau: relative improvement under this; default 0.01")  # fmt: skip
    cap.add_argument("--grow-units", type=positive_int_arg, default=None, help="default 8")
    cap.add_argument("--max-units", type=positive_int_arg, default=None,
                     help="widening cap per layer (then a block is inserted); default 64")  # fmt: skip
    cap.add_argument("--shrink-below", type=float, default=None,
                     help="delete units below this fraction of their layer's mean; default 0.05")  # fmt: skip
    cap.add_argument("--remove-below", type=float, default=0.05,
                     help="remove the weakest residual block below this fraction of its stage's "
                     "mean block saliency (0: never); default 0.05")  # fmt: skip
    cap.add_argument("--grace", type=int, default=None,
                     help="epochs a new unit or block is safe from deletion; default 6")  # fmt: skip
    cap.add_argument("--cooldown", type=int, default=None, help="a change at most every N epochs; default 3")
    cap.add_argument("--warmup", type=int, default=None, help="epochs before the first; default 5")
    cap.add_argument("--loss-target", type=float,
                     help="no growth once the training loss is at or below this; default none")  # fmt: skip
    cap.add_argument("--min-params", type=positive_int_arg, help="parameter floor")
    cap.add_argument("--max-params", type=positive_int_arg, help="parameter budget")
    cap.add_argument("--max-shrink-loss", type=float, default=0.1,
                     help="refuse a deletion that would take the probe loss more than this "
                     "fraction above its value before the consultation (all of its changes "
                     "together; inf: never refuse); default 0.1")  # fmt: skip
    cap.add_argument("--widen", choices=("zero", "net2wider"), default="zero", help="default zero")
    cap.add_argument("--validation", type=float,
                     help="share of the training split held out (regression: of the task's "
                     "16384 generated training examples); default 0.1")  # fmt: skip
    cap.add_argument("--limit-train", type=positive_int_arg, help="use only this many examples")
    cap.add_argument("--seed", type=int, default=0, help="default 0")
    cap.add_argument("--no-resume", action="store_true", help="start afresh even if OUT holds "
                     "a run (its files are moved to OUT/previous-<time>/)")  # fmt: skip
    cap.add_argument("--quick", action="store_true", help=QUICK)
    cap.add_argument("--out", type=Path, required=True, help="output folder")


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
    if not 0.0 <= args.validation < 1.0:
        raise ConfigError(f"--validation: expected a share in [0, 1), got {args.validation}")
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


DEFAULTS = {"complexity": 4, "num_train": 4096, "width": 32, "hidden": 8, "epochs": 100,
            "batch_size": 64, "lr": 3e-3, "window": 5, "tau": 0.01, "grow_units": 8,
            "max_units": 64, "cooldown": 3, "warmup": 5, "grace": 6, "samples": 128,
            "probe_size": 512, "shrink_below": 0.05}  # fmt: skip
# --quick: the same method at a demo size (the controller of our reading of the draft, with a
# coarser plateau, a shorter warm-up and grace, a lower cap and a smaller probe), chosen so that
# each task visibly deletes units (OBD: units whose deletion barely moves the probe loss) and
# grows on a plateau (a widening, then past the cap an inserted block), within a minute on 2 CPU
# cores (tests/construct/test_construct_capacity.py checks the deletions and growths).
QUICK_CONTROLLER = {"window": 3, "tau": 0.05, "grow_units": 8, "max_units": 16, "cooldown": 3,
                    "warmup": 3, "grace": 4, "samples": 32, "probe_size": 256}  # fmt: skip
QUICK_VALUES = {
    "regression": {**QUICK_CONTROLLER, "complexity": 3, "num_train": 512, "width": 16,
                   "hidden": 8, "epochs": 15},
    # Every digit (1,298 after the hold-out) through a residual stream only 4 wide, at a higher
    # rate: the loss levels off within the run (a plateau of capacity, not of noise).
    "classification": {**QUICK_CONTROLLER, "width": 4, "hidden": 8, "epochs": 20, "batch_size": 32,
                       "lr": 0.01},
}  # fmt: skip


TASK_FLAGS = {"regression": ("complexity", "num_train", "dim"), "classification": ()}


def _resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Flags left out take ``--quick``'s value (with ``--quick``) or the default; given ones win.

    Raises:
        ConfigError: a flag of the other task (it would be silently ignored).
    """
    from fnnjax.errors import ConfigError  # noqa: PLC0415

    values = vars(args).copy()
    for task, names in TASK_FLAGS.items():
        given = [n for n in names if values.get(n) is not None]
        if task != args.task and given:
            raise ConfigError(f"--{given[0].replace('_', '-')}: a {task} flag; this run is "
                              f"--task {args.task}")  # fmt: skip
    values["dim"] = values.get("dim") or 1
    values["validation"] = 0.1 if values.get("validation") is None else values["validation"]
    for name, default in DEFAULTS.items():
        if values.get(name) is None:
            values[name] = QUICK_VALUES[args.task].get(name, default) if args.quick else default
    if args.quick and args.task == "classification":
        values["dataset"] = args.dataset or "digits"
    return argparse.Namespace(**values)


def run(args: argparse.Namespace) -> int:
    from fnnjax.construct import capacity as cp  # noqa: PLC0415
    from fnnjax.errors import ConfigError  # noqa: PLC0415
    from fnnjax.train import TrainConfig  # noqa: PLC0415

    args = _resolve(args)
    if args.samples > 32 and args.samples % 32:
        raise ConfigError(f"--samples: expected a multiple of 32, or at most 32, got {args.samples}")
    try:
        controller = cp.CapacityConfig(
            window=args.window, warmup=args.warmup, tau=args.tau, grow_units=args.grow_units,
            max_units=args.max_units, shrink_below=args.shrink_below, cooldown=args.cooldown,
            remove_below=args.remove_below, grace=args.grace, loss_target=args.loss_target,
            min_params=args.min_params, max_params=args.max_params)  # fmt: skip
        config = cp.DynamicConfig(controller=controller, saliency=args.saliency,
                                  unit_measure=args.unit_measure, hutchinson_samples=args.samples,
                                  hutchinson_chunk=min(32, args.samples),
                                  probe_size=args.probe_size, widen=args.widen,
                                  max_shrink_loss=args.max_shrink_loss)  # fmt: skip
    except ValueError as error:
        flag = str(error).split(":")[0].replace("_", "-").replace("hutchinson-samples", "samples")
        raise ConfigError(f"--{flag}: {str(error).split(': ', 1)[-1]}") from None
    data, spec = _data_and_spec(args)
    train = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
                        seed=args.seed)  # fmt: skip
    result = cp.train_dynamic(spec, data, train, config, args.out, objective=args.task,
                              resume=not args.no_resume)  # fmt: skip
    ops = [c["op"] for c in result["changes"]]
    counts = ", ".join(f"{ops.count(o)} {o}" for o in ("widen", "insert", "narrow", "remove")) or "none"
    metric = "accuracy" if args.task == "classification" else "loss"
    final = result["summary"].get(f"final_test_{metric}")
    shown = "n/a (no test split)" if final is None else f"{final:.4g}"
    print(f"dynamic capacity on {data.name}: parameters {result['params_initial']} -> "
          f"{result['params_final']} ({len(ops)} changes: {counts}); final test {metric} "
          f"{shown}; see {args.out / 'capacity.png'}, {args.out / 'layers.md'}")  # fmt: skip
    print(f"the final network: {args.out / 'final_spec.json'}; to train it from scratch on the "
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


__all__ = ["add_parser", "retrain_command", "run"]
