"""``fnnjax envelopenet``: EnvelopeNet construction (train with statistics, prune, add cells)."""

from __future__ import annotations

import argparse
from typing import Any

from fnnjax.checks import nonnegative_int_arg, positive_float_arg, positive_int_arg
from fnnjax.cli.common import add_run_flags, resolve, say

RUN_DEFAULTS = {"dataset": "fashion_mnist", "validation": 0.0, "limit_train": None, "seed": 0}
QUICK_RUN = {"dataset": "digits", "limit_train": 400}
"""``--quick``'s data (the construction's settings: :meth:`ConstructionConfig.quick`)."""


def _settings(config: Any) -> dict[str, Any]:
    """The flags' values that ``config`` (a ConstructionConfig) stands for."""
    return {"init": config.notation, "cell": ",".join(config.envelope.cell),
            "iterations": config.iterations, "epochs": config.epochs_per_iteration,
            "batch_size": config.batch_size, "lr": config.learning_rate,
            "max_prune": config.restructure.max_prune, "statistic": config.statistic,
            "order": config.envelope.order, "width": config.envelope.width,
            "stem_stride": config.envelope.stem_stride, "final_epochs": config.final_epochs}  # fmt: skip


def add_parser(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    from fnnjax.construct.envelope.driver import ConstructionConfig  # noqa: PLC0415

    env = commands.add_parser(
        "envelopenet", help="EnvelopeNet construction: train with statistics, prune, add cells",
        parents=parents, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Constructs a network from an EnvelopeNet C/n1-n2-.../M (Kamath et al. "
        "2018): each iteration trains the current network from scratch while per-block "
        "featuremap statistics accumulate, prunes the weakest blocks of every stage and appends "
        "a cell at its tail. OUT gets construction.json (one record per iteration), "
        "final_spec.json (`fnnjax train --spec OUT/final_spec.json`), statistics.png and "
        "widths.png. Rerunning the command resumes an interrupted construction.",
        epilog="examples:\n  fnnjax envelopenet --quick --out runs/env-quick\n"
        "  fnnjax envelopenet --init 16/4-1-1/6 --epochs 2 --limit-train 10000 --out runs/env\n"
        "  fnnjax envelopenet --init 128/10-1-1-1/6 --dataset cifar10 "
        "--final-epochs 100 --out runs/env-c10   (paper scale; a GPU)",
    )  # fmt: skip
    env.add_argument("--init", help="the EnvelopeNet C/n1-n2-.../M")
    env.add_argument("--cell", help="the cell's blocks, comma-separated (M must match)")
    env.add_argument("--iterations", type=positive_int_arg, help="N")
    env.add_argument("--epochs-per-iteration", type=positive_int_arg, dest="epochs",
                     help="the same as --epochs: each iteration's statistics epochs")  # fmt: skip
    env.add_argument("--max-layers", help="per stage, the depth past which a stage is left "
                     "unchanged, comma-separated, or 'none'; default: the released code's "
                     "15,5,3,3 for an n-1-1-1 init with n = 10 (the paper's, giving 15-6-4-4), "
                     "none otherwise")  # fmt: skip
    env.add_argument("--max-prune", type=positive_int_arg, help="blocks pruned per iteration")
    env.add_argument("--statistic", choices=("l2", "variance"), help="the featuremap statistic")
    env.add_argument("--order", choices=("paper", "released"),
                     help="conv-ReLU-BN (paper) or conv-BN-ReLU (released code)")  # fmt: skip
    env.add_argument("--width", choices=("layer", "block"),
                     help="fixed layer width (layer) or fixed channels per block (block)")  # fmt: skip
    env.add_argument("--dense-skips", action="store_true", help="DenseNet-style skips")
    env.add_argument("--stem-stride", type=int, choices=(1, 2),
                     help="2 halves every featuremap (CPU-size runs); 1: the paper")  # fmt: skip
    env.add_argument("--worst-case", action="store_true", help="prune the highest statistics")
    env.add_argument("--inherit", action="store_true", help="beyond the paper: start each "
                     "iteration from the previous one's weights (surviving blocks keep theirs)")  # fmt: skip
    env.add_argument("--measure", choices=("conv", "output"), help="where a block is measured: "
                     "its filters' output (conv; default in the paper's order) or its output as "
                     "concatenated (output; default in the released order)")  # fmt: skip
    env.add_argument("--lr", type=positive_float_arg, help="SGD rate")
    env.add_argument("--no-augment", action="store_true", help="no random crops / flips")
    env.add_argument("--final-epochs", type=nonnegative_int_arg,
                     help="then train the constructed network this long")  # fmt: skip
    add_run_flags(env, {**RUN_DEFAULTS, **_settings(ConstructionConfig())}, out_required=True,
                  quick="tiny sizes (400 digits, 6/2-1/2 with a 2-block cell, 2 iterations of 3 "
                  "epochs, batch 40; ConstructionConfig.quick): a construction that grows, in about 20 s")  # fmt: skip


def _int_list(text: str | None, flag: str) -> tuple[int, ...] | None:
    from fnnjax.errors import ConfigError  # noqa: PLC0415

    if text is None or text.strip().lower() == "none":
        return None
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"{flag}: expected comma-separated integers such as 15,5,3,3, got "
                          f"{text!r}") from None  # fmt: skip


def envelope_config(args: argparse.Namespace) -> Any:
    """The ``ConstructionConfig`` of an ``envelopenet`` command line (the run flags resolved:
    explicit flags, then ``--quick``'s, then the defaults)."""
    from fnnjax.construct import envelope as ev  # noqa: PLC0415
    from fnnjax.errors import ConfigError  # noqa: PLC0415

    preset = ev.ConstructionConfig.quick() if args.quick else ev.ConstructionConfig()
    resolve(args, {**RUN_DEFAULTS, **_settings(preset)}, QUICK_RUN)
    cell = tuple(c.strip() for c in args.cell.split(","))
    try:
        envelope = ev.EnvelopeConfig(cell=cell, order=args.order, width=args.width,
                                     dense_skips=args.dense_skips, stem_stride=args.stem_stride)  # fmt: skip
        max_layers = _int_list(args.max_layers, "--max-layers")
        if args.max_layers is None:
            max_layers = ev.default_max_layers(ev.parse_notation(args.init)[1])
        restructure = ev.RestructureConfig(max_prune=args.max_prune, worst_case=args.worst_case,
                                           max_layers=max_layers)  # fmt: skip
        return ev.ConstructionConfig.from_notation(
            args.init, envelope=envelope, restructure=restructure, iterations=args.iterations,
            epochs_per_iteration=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
            augment=not args.no_augment, statistic=args.statistic, final_epochs=args.final_epochs,
            inherit=args.inherit, measure=args.measure)
    except ConfigError:
        raise
    except ValueError as e:
        raise ConfigError(f"--init/--cell/--max-layers: {e}") from None


def run(args: argparse.Namespace) -> int:
    from fnnjax.arch import analytic_counts  # noqa: PLC0415
    from fnnjax.construct import envelope as ev  # noqa: PLC0415
    from fnnjax.train import load_dataset  # noqa: PLC0415

    config = envelope_config(args)
    data = load_dataset(args.dataset, validation_fraction=args.validation, seed=args.seed,
                        limit_train=args.limit_train)  # fmt: skip
    result = ev.construct(data, config, args.out, seed=args.seed, resume=not args.no_resume,
                          progress=True, num_devices=args.devices)  # fmt: skip
    first = result["records"][0]
    ratio = analytic_counts(result["spec"])["params"] / first["params"]
    say(f"EnvelopeNet {first['notation']} -> {result['notation']} on {args.dataset} in "
          f"{config.iterations} x {config.epochs_per_iteration} statistics epochs + "
          f"{config.final_epochs} final = {config.construction_epochs()} epochs "
          f"(parameters x{ratio:.2f}; blocks per layer "
          f"{' | '.join('-'.join(map(str, s)) for s in ev.block_counts(result['layers']))})")  # fmt: skip
    if result["final"] is not None:
        say(f"final network: test accuracy {result['final'].get('final_test_accuracy', 0):.2%}")
    say(f"train it: fnnjax train --spec {args.out / 'final_spec.json'} --dataset {args.dataset} "
          f"--optimizer sgd --lr {config.learning_rate} --momentum 0 "
          f"--batch-size {config.batch_size} --augment --epochs 100")  # fmt: skip
    return 0
