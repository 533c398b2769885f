"""``fnnjax enas`` and ``fnnjax envelopenet``: the searches' command lines (kept apart from
:mod:`fnnjax.cli` so that module stays short; nothing here imports JAX until a command runs)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from fnnjax.checks import nonnegative_int_arg, positive_float_arg, positive_int_arg


def add_parsers(commands: Any, debug: list[argparse.ArgumentParser]) -> None:
    """Adds the ``enas`` and ``envelopenet`` subcommands to ``commands``."""
    enas = commands.add_parser(
        "enas", help="ENAS macro search (NHN step 1): search, derive, export the best arc",
        parents=debug, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Trains one shared-weight supernet of L layers and an LSTM controller by "
        "REINFORCE (Pham et al. 2018), then exports the best sampled arc. OUT gets best_arc.txt "
        "(the released code's format), best_spec.json (the retraining form: `fnnjax train --spec "
        "OUT/best_spec.json`), search_spec.json, top_arcs.json, search.jsonl and search.png. "
        "Rerunning the command resumes an interrupted search.",
        epilog="examples:\n  fnnjax enas --quick --out runs/enas-quick\n"
        "  fnnjax enas --dataset fashion_mnist --layers 6 --filters 16 --epochs 10 --out runs/enas\n"
        "  fnnjax enas --dataset cifar10 --layers 12 --filters 36 --epochs 310 --out runs/enas-c10"
        "   (paper scale; a GPU)",
    )  # fmt: skip
    enas.add_argument("--dataset", default="fashion_mnist",
                      help="dataset name (see `fnnjax datasets`); default fashion_mnist")  # fmt: skip
    enas.add_argument("--layers", type=positive_int_arg, default=12, help="L; default 12")
    enas.add_argument("--filters", type=positive_int_arg, default=36, help="width C; default 36")
    enas.add_argument("--epochs", type=positive_int_arg, default=310, help="default 310")
    enas.add_argument("--batch-size", type=positive_int_arg, default=128, help="default 128")
    enas.add_argument("--validation", type=float, default=0.1,
                      help="share of the training split held out for rewards; default 0.1 "
                      "(45k/5k of CIFAR-10's 50k in the paper)")  # fmt: skip
    enas.add_argument("--random", action="store_true",
                      help="the random-search baseline: uniform arcs, no controller")  # fmt: skip
    enas.add_argument("--clip", type=float, default=5.0,
                      help="clip child gradients to this global norm (0: off; the released code "
                      "configures 5 but applies the unclipped gradient); default 5")  # fmt: skip
    enas.add_argument("--skips", choices=("paper", "released"), default="paper",
                      help="skip inputs from earlier layers (paper) or the released code's "
                      "prev_layers convention (stem first); default paper")  # fmt: skip
    enas.add_argument("--bn-update", choices=("selected", "all"), default="selected",
                      help="whose BatchNorm statistics a step updates: the sampled op's (default) "
                      "or all six ops' (the released child; all six then run every step)")  # fmt: skip
    enas.add_argument("--execution", choices=("auto", "sampled", "all", "switch", "switch_remat"),
                      default="auto",
                      help="how a sampled arc runs: sampled (only its ops, per-op compiled "
                      "programs composed in Python), or the jitted supernet computing all six "
                      "ops (all) or a conditional (switch, switch_remat); default auto: sampled "
                      "on CPU, switch elsewhere (all with --bn-update all)")  # fmt: skip
    enas.add_argument("--preset", choices=("released", "paper"), default="released",
                      help="where the ENAS paper and its released script disagree (tanh constant, "
                      "temperature, entropy weight, controller lr, child l2 and minimum lr, the "
                      "skip penalty in the reward or the loss): the released script's values "
                      "(default) or the paper's")  # fmt: skip
    enas.add_argument("--controller-adam", choices=("tensorflow", "optax"), default="tensorflow",
                      help="the controller's Adam: TensorFlow's (eps added to the uncorrected "
                      "sqrt(v), as the released code; default) or optax's (eps added to the "
                      "bias-corrected sqrt(v_hat): far larger early steps with eps 1e-3)")  # fmt: skip
    enas.add_argument("--cutout", type=nonnegative_int_arg, default=0,
                      help="Cutout's square side on every child batch (0: off, as ENAS's released "
                      "search; NHN searches with it: 16 on CIFAR-10); default 0")  # fmt: skip
    enas.add_argument("--head-pool", choices=("avg", "grouped"), default="avg",
                      help="the classifier's pooling: global average (ENAS, default) or NHN's "
                      "grouped convolution covering the feature map")  # fmt: skip
    enas.add_argument("--derive-arcs", type=positive_int_arg, default=100,
                      help="arcs sampled and scored to pick the best; default 100")  # fmt: skip
    enas.add_argument("--limit-train", type=positive_int_arg, help="use only this many examples")
    enas.add_argument("--seed", type=int, default=0, help="default 0")
    enas.add_argument("--no-resume", action="store_true", help="start afresh even if OUT holds "
                      "a search (its files are moved to OUT/previous-<time>/)")  # fmt: skip
    enas.add_argument("--quick", action="store_true",
                      help="a search that visibly learns in about a minute (digits, 2 layers of 16 "
                      "filters, 4 epochs of 20 controller steps; SearchConfig.quick)")  # fmt: skip
    enas.add_argument("--out", type=Path, required=True, help="output folder")

    env = commands.add_parser(
        "envelopenet", help="EnvelopeNet construction: train with statistics, prune, add cells",
        parents=debug, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Constructs a network from an EnvelopeNet C/n1-n2-.../M (Kamath et al. "
        "2018): each iteration trains the current network from scratch while per-block "
        "featuremap statistics accumulate, prunes the weakest blocks of every stage and appends "
        "a cell at its tail. OUT gets construction.json (one record per iteration), "
        "final_spec.json (`fnnjax train --spec OUT/final_spec.json`), statistics.png and "
        "widths.png. Rerunning the command resumes an interrupted construction.",
        epilog="examples:\n  fnnjax envelopenet --quick --out runs/env-quick\n"
        "  fnnjax envelopenet --init 16/4-1-1/6 --epochs-per-iteration 2 --limit-train 10000 "
        "--out runs/env\n"
        "  fnnjax envelopenet --init 128/10-1-1-1/6 --dataset cifar10 "
        "--final-epochs 100 --out runs/env-c10   (paper scale; a GPU)",
    )  # fmt: skip
    env.add_argument("--init", default="128/10-1-1-1/6",
                     help="the EnvelopeNet C/n1-n2-.../M; default 128/10-1-1-1/6")  # fmt: skip
    env.add_argument("--cell", help="the cell's blocks, comma-separated (default "
                     "1x1,3x3,3x3sep,5x5,5x5sep,7x7sep; M must match)")  # fmt: skip
    env.add_argument("--iterations", type=positive_int_arg, default=5, help="N; default 5")
    env.add_argument("--epochs-per-iteration", type=positive_int_arg, default=10, help="default 10")
    env.add_argument("--max-layers", help="per stage, the depth past which a stage is left "
                     "unchanged, comma-separated, or 'none'; default: the released code's "
                     "15,5,3,3 for an n-1-1-1 init with n = 10 (the paper's, giving 15-6-4-4), "
                     "none otherwise")  # fmt: skip
    env.add_argument("--max-prune", type=positive_int_arg, default=6, help="default 6")
    env.add_argument("--statistic", choices=("l2", "variance"), default="l2", help="default l2")
    env.add_argument("--order", choices=("paper", "released"), default="paper",
                     help="conv-ReLU-BN (paper, default) or conv-BN-ReLU (released code)")  # fmt: skip
    env.add_argument("--width", choices=("layer", "block"), default="layer",
                     help="fixed layer width (default) or fixed channels per block")  # fmt: skip
    env.add_argument("--dense-skips", action="store_true", help="DenseNet-style skips")
    env.add_argument("--stem-stride", type=int, choices=(1, 2), default=1,
                     help="2 halves every featuremap (CPU-size runs); default 1 (the paper)")  # fmt: skip
    env.add_argument("--worst-case", action="store_true", help="prune the highest statistics")
    env.add_argument("--inherit", action="store_true", help="beyond the paper: start each "
                     "iteration from the previous one's weights (surviving blocks keep theirs)")  # fmt: skip
    env.add_argument("--measure", choices=("conv", "output"), help="where a block is measured: "
                     "its filters' output (conv; default in the paper's order) or its output as "
                     "concatenated (output; default in the released order)")  # fmt: skip
    env.add_argument("--batch-size", type=positive_int_arg, default=50, help="default 50")
    env.add_argument("--lr", type=positive_float_arg, default=0.1, help="SGD rate; default 0.1")
    env.add_argument("--no-augment", action="store_true", help="no random crops / flips")
    env.add_argument("--final-epochs", type=nonnegative_int_arg, default=0,
                     help="then train the constructed network this long; default 0")  # fmt: skip
    env.add_argument("--dataset", default="fashion_mnist",
                     help="dataset name (see `fnnjax datasets`); default fashion_mnist")  # fmt: skip
    env.add_argument("--validation", type=float, default=0.0,
                     help="share of the training split held out; default 0")  # fmt: skip
    env.add_argument("--limit-train", type=positive_int_arg, help="use only this many examples")
    env.add_argument("--devices", type=positive_int_arg, help="data-parallel devices; default all")
    env.add_argument("--seed", type=int, default=0, help="default 0")
    env.add_argument("--no-resume", action="store_true", help="start afresh even if OUT holds "
                     "a construction (its files are moved to OUT/previous-<time>/)")  # fmt: skip
    env.add_argument("--quick", action="store_true",
                     help="tiny sizes (digits, 6/2-1/2 with a 2-block cell, 2 iterations of 3 "
                     "epochs, batch 40): a smoke test")  # fmt: skip
    env.add_argument("--out", type=Path, required=True, help="output folder")


def run_enas(args: argparse.Namespace) -> int:
    from fnnjax.construct import enas  # noqa: PLC0415
    from fnnjax.errors import ConfigError  # noqa: PLC0415
    from fnnjax.train import load_dataset  # noqa: PLC0415

    if not 0.0 < args.validation < 1.0:
        raise ConfigError(f"--validation: expected a share in (0, 1), got {args.validation}")
    if args.clip < 0:
        raise ConfigError(f"--clip: expected a norm >= 0 (0: no clipping), got {args.clip}")
    preset = enas.SearchConfig.paper if args.preset == "paper" else enas.SearchConfig
    config = preset(layers=args.layers, filters=args.filters, epochs=args.epochs,
                               batch_size=args.batch_size, random_search=args.random,
                               child_clip=args.clip or None, skips=args.skips,
                               update_stats=args.bn_update, head_pool=args.head_pool,
                               derive_arcs=args.derive_arcs, mode=args.execution,
                               controller_adam=args.controller_adam, cutout=args.cutout)  # fmt: skip
    if args.bn_update == "all" and args.execution not in ("auto", "all"):
        raise ConfigError(f"--execution: {args.execution} runs only the sampled op, but "
                          "--bn-update all updates every op's statistics, which needs all six "
                          "computed; use --execution auto or all")  # fmt: skip
    dataset, limit = args.dataset, args.limit_train
    if args.quick:
        dataset = "digits"  # all of it: the quick search must learn (SearchConfig.quick)
        config = dataclasses.replace(config, **enas.QUICK_SEARCH)
    data = load_dataset(dataset, validation_fraction=args.validation, seed=args.seed,
                        limit_train=limit)  # fmt: skip
    result = enas.search(data, config, args.out, seed=args.seed, resume=not args.no_resume)
    what = "random search" if args.random else "ENAS"
    print(f"{what} on {dataset}: best arc {enas.arc_to_string(result['best_arc'], config.layers)} "
          f"(shared-weight validation accuracy {result['best_accuracy']:.2%}); retrain it: "
          f"fnnjax train --spec {args.out / 'best_spec.json'} --dataset {dataset}")  # fmt: skip
    return 0


def _int_list(text: str | None, flag: str) -> tuple[int, ...] | None:
    if text is None or text.strip().lower() == "none":
        return None
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"{flag}: expected comma-separated integers such as 15,5,3,3, got "
                         f"{text!r}") from None  # fmt: skip


def envelope_config(args: argparse.Namespace):
    """``(ConstructionConfig, dataset, limit_train)`` of an ``envelopenet`` command line."""
    from fnnjax.construct import envelope as ev  # noqa: PLC0415
    from fnnjax.errors import ConfigError  # noqa: PLC0415

    if not 0.0 <= args.validation < 1.0:
        raise ConfigError(f"--validation: expected a share in [0, 1), got {args.validation}")
    init, dataset, limit = args.init, args.dataset, args.limit_train
    cell = ev.CELL_OPS if args.cell is None else tuple(c.strip() for c in args.cell.split(","))
    iterations, epochs, batch = args.iterations, args.epochs_per_iteration, args.batch_size
    if args.quick:
        init, cell, dataset, limit = "6/2-1/2", ("1x1", "3x3"), "digits", limit or 400
        iterations, epochs, batch = 2, 3, 40
    try:
        envelope = ev.EnvelopeConfig(cell=cell, order=args.order, width=args.width,
                                     dense_skips=args.dense_skips, stem_stride=args.stem_stride)  # fmt: skip
        max_layers = _int_list(args.max_layers, "--max-layers")
        if args.max_layers is None:
            max_layers = ev.default_max_layers(ev.parse_notation(init)[1])
        restructure = ev.RestructureConfig(max_prune=args.max_prune, worst_case=args.worst_case,
                                           max_layers=max_layers)  # fmt: skip
        config = ev.ConstructionConfig.from_notation(
            init, envelope=envelope, restructure=restructure, iterations=iterations,
            epochs_per_iteration=epochs, batch_size=batch, learning_rate=args.lr,
            augment=not args.no_augment, statistic=args.statistic, final_epochs=args.final_epochs,
            inherit=args.inherit, measure=args.measure)
    except ValueError as e:
        raise ConfigError(f"--init/--cell/--max-layers: {e}") from None
    return config, dataset, limit


def run_envelopenet(args: argparse.Namespace) -> int:
    from fnnjax.arch import analytic_counts  # noqa: PLC0415
    from fnnjax.construct import envelope as ev  # noqa: PLC0415
    from fnnjax.train import load_dataset  # noqa: PLC0415

    config, dataset, limit = envelope_config(args)
    data = load_dataset(dataset, validation_fraction=args.validation, seed=args.seed,
                        limit_train=limit)  # fmt: skip
    result = ev.construct(data, config, args.out, seed=args.seed, resume=not args.no_resume,
                          progress=True, num_devices=args.devices)  # fmt: skip
    first = result["records"][0]
    ratio = analytic_counts(result["spec"])["params"] / first["params"]
    print(f"EnvelopeNet {first['notation']} -> {result['notation']} on {dataset} in "
          f"{config.iterations} x {config.epochs_per_iteration} statistics epochs + "
          f"{config.final_epochs} final = {config.construction_epochs()} epochs "
          f"(parameters x{ratio:.2f}; blocks per layer "
          f"{' | '.join('-'.join(map(str, s)) for s in ev.block_counts(result['layers']))})")  # fmt: skip
    if result["final"] is not None:
        print(f"final network: test accuracy {result['final'].get('final_test_accuracy', 0):.2%}")
    print(f"train it: fnnjax train --spec {args.out / 'final_spec.json'} --dataset {dataset} "
          f"--optimizer sgd --lr {config.learning_rate} --momentum 0 "
          f"--batch-size {config.batch_size} --augment --epochs 100")  # fmt: skip
    return 0
