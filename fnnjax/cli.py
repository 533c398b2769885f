"""The ``fnnjax`` command: a thin layer that parses arguments and calls library functions.

    fnnjax train                                   # dense baseline on the bundled digits set
    fnnjax train --model fnn-1024 --dataset fashion_mnist --epochs 100 --out runs/fnn1024
    fnnjax profile --model resnet50 --template quadratic --width 0.5   # params, FLOPs, memory, latency
    fnnjax models | fnnjax datasets

A user's mistake (unknown name, impossible value, missing dataset, unwritable folder, a misspelt
option) is printed as one ``fnnjax: error: ...`` line with exit status 2; ``--debug`` (before or
after the command name) shows the traceback instead. Warnings are one ``fnnjax: warning:`` line.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fnnjax.errors import FnnjaxError

EPILOG = """examples:
  fnnjax train                                     dense baseline on digits (~30 s on a laptop CPU)
  fnnjax train --model fnn-1024 --dataset fashion_mnist --epochs 100
  fnnjax train --model fnn -o num_hidden=2048 -o iterations=2 -o input_every_iteration=false
  fnnjax train --model dense --optimizer sgd --lr 0.1 --momentum 0.9 --nesterov --schedule cosine
  fnnjax spec --model vgg19 --template uniform --width 0.25 --input-shape 8 8 1 --write vgg.json
  fnnjax train --spec vgg.json --epochs 5                  any architecture from a spec file
  fnnjax capacity --task regression --quick --out runs/cap a network that grows and shrinks

The output folder (default runs/MODEL-DATASET-XXXXXX, where XXXXXX changes with any setting that
makes it a different run) holds config.json, metrics.jsonl, checkpoints/, best/ (with --validation),
curves.png and summary.json. Running the same command again resumes from its newest checkpoint
(--no-resume starts afresh). Datasets: digits (bundled), synthetic, fashion_mnist (apt-get install
dataset-fashion-mnist, or $FNNJAX_DATA_DIR), mnist/cifar10/cifar100 ($FNNJAX_DATA_DIR or tfds online).
"""


def _parse_option(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = {"true": True, "false": False, "none": None}.get(value.lower(), value)
    return key.strip().replace("-", "_"), parsed


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line (the usage block is what --help is for)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (`{self.prog} --help` lists the options)\n")


def _debug_flag() -> argparse.ArgumentParser:
    """``--debug``, accepted before and after the command name."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show full tracebacks on errors")  # fmt: skip
    return parent


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="fnnjax",
        description="Neural-network structure learning in JAX/Flax (FNN, EnvelopeNets, NHN, "
        "filter templates, dynamic capacity).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    debug = [_debug_flag()]

    train = commands.add_parser(
        "train", help="train a model on a dataset", epilog=EPILOG, parents=debug,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    what = train.add_argument_group("what to train")
    what.add_argument("--model", default="dense", help="model name (see `fnnjax models`); default dense")
    what.add_argument("--spec", type=Path, metavar="FILE.json",
                      help="train the architecture of a spec file (from `fnnjax spec --write` or a "
                      "search) instead of --model")
    what.add_argument("--masks", type=Path, metavar="FILE.npz",
                      help="with --spec: start from the kernel masks and selection arrays in FILE "
                      "(what a spec does not carry, written beside it: nhn_masks.npz, "
                      "pruned_masks.npz); they stay applied while training")  # fmt: skip
    what.add_argument("--dataset", default="digits", help="dataset name (see `fnnjax datasets`); default digits")
    what.add_argument("-o", "--option", action="append", type=_parse_option, default=[],
                      metavar="KEY=VALUE", help="model option, repeatable (e.g. -o iterations=2)")
    what.add_argument("--template", help="filter-redistribution template for zoo models "
                      "(uniform, reverse, quadratic, negative_quadratic)")
    what.add_argument("--width", type=_positive_float, help="width multiplier for zoo models")
    what.add_argument("--validation", type=float, default=0.0, metavar="FRACTION",
                      help="hold out this share of the training split for validation")
    what.add_argument("--limit-train", type=_positive_int, metavar="N",
                      help="use only the first N training examples (quick runs)")
    what.add_argument("--limit-test", type=_positive_int, metavar="N",
                      help="evaluate on only the first N test examples (quick runs)")

    how = train.add_argument_group("how to train")
    how.add_argument("--epochs", type=_positive_int, default=20, help="default 20")
    how.add_argument("--batch-size", type=_positive_int, default=128, help="global batch; default 128")
    how.add_argument("--optimizer", default="adam", help="adam (default), adamw or sgd")
    how.add_argument("--lr", type=float, default=1e-3, help="peak learning rate; default 1e-3")
    how.add_argument("--momentum", type=float, default=0.9, help="SGD momentum; default 0.9")
    how.add_argument("--nesterov", action="store_true", help="Nesterov momentum (SGD)")
    how.add_argument("--weight-decay", type=float, default=0.0, help="L2 (adamw: decoupled); default 0")
    how.add_argument("--schedule", default="constant",
                     help="constant (default), cosine, cosine_restarts (SGDR, ENAS's) or step")
    how.add_argument("--restart-epochs", type=int, default=10,
                     help="cosine_restarts: the first period in epochs; default 10")
    how.add_argument("--restart-mult", type=float, default=2.0,
                     help="cosine_restarts: each period this many times the last; default 2")
    how.add_argument("--min-lr", type=float, default=0.0,
                     help="cosine and cosine_restarts: the lowest rate; default 0 (ENAS's search: "
                     "0.0005, NHN: 0.001)")
    how.add_argument("--step-epochs", type=int, nargs="*", default=[], metavar="E",
                     help="epochs where the step schedule multiplies the rate by --step-factor")
    how.add_argument("--step-factor", type=float, default=0.1)
    how.add_argument("--warmup-epochs", type=float, default=0.0)
    how.add_argument("--clip", type=float, help="clip gradients to this global norm")
    how.add_argument("--augment", action="store_true",
                     help="random crop (padding ~1/8 of the image side) + horizontal flip where it "
                     "preserves the label (not for digits)")
    how.add_argument("--cutout", type=int, default=0, metavar="SIZE",
                     help="Cutout: zero a random SIZE x SIZE square of each training image "
                     "(16 on CIFAR); default 0, off")  # fmt: skip
    how.add_argument("--seed", type=int, default=0)

    run = train.add_argument_group("where and on what")
    run.add_argument("--out", type=Path,
                     help="output folder; default runs/MODEL-DATASET-XXXXXX (XXXXXX: a digest of "
                     "every setting that makes it a different run)")
    run.add_argument("--no-resume", action="store_true",
                     help="start afresh even if --out holds checkpoints")
    run.add_argument("--checkpoint-every", type=_positive_int, default=1, metavar="EPOCHS")
    run.add_argument("--devices", type=_positive_int, help="number of local devices (default all)")
    run.add_argument("--distributed", action="store_true",
                     help="call jax.distributed.initialize() first (multi-host runs; on TPU pods "
                     "and SLURM it finds the cluster itself)")
    run.add_argument("--coordinator", metavar="HOST:PORT",
                     help="with --distributed: the coordinator (process 0) address")
    run.add_argument("--num-processes", type=_positive_int, help="with --distributed")
    run.add_argument("--process-id", type=int, help="with --distributed: this process's index")
    run.add_argument("--tensorboard", action="store_true", help="also write TensorBoard logs")
    run.add_argument("--quiet", action="store_true", help="no progress bar")

    profile = commands.add_parser(
        "profile", help="parameters, FLOPs, memory and latency of a model (fnnjax.arch.profile)",
        parents=debug,
        description="Profiles one model: trainable parameters, analytic FLOPs per example, XLA's "
        "memory analysis of one compiled training step (or inference forward), and the median "
        "latency of the jitted inference forward on one batch, on this machine's first device. "
        "Progress goes to stderr with a time estimate; timing a large configuration takes "
        "minutes on a CPU (resnet50 quadratic: ~18 GFLOP per example), --no-latency skips it.",
        epilog="examples:\n  fnnjax profile --model resnet50 --template quadratic\n"
        "  fnnjax profile --model vgg19 --template uniform --width 0.5 --input-shape 28 28 1\n"
        "  fnnjax profile --model fnn-1024 --input-shape 28 28 1 --no-latency --json fnn.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    profile.add_argument("--model", required=True,
                         help="a zoo model (vgg16, vgg19, resnet50, inception, mobilenet) or any "
                         "name of `fnnjax models`")
    profile.add_argument("--template", default="base", help="filter template for zoo models: base "
                         "(default), reverse, uniform, quadratic, negative_quadratic")
    profile.add_argument("--width", type=_positive_float, default=1.0,
                         help="width multiplier for zoo models, applied after the template")
    profile.add_argument("--head", help="zoo head: linear, dense or fnn (default: the model's own)")
    profile.add_argument("--input-shape", type=_positive_int, nargs=3, default=[32, 32, 3],
                         metavar=("H", "W", "C"), help="one example's shape; default 32 32 3")
    profile.add_argument("--classes", type=_positive_int, default=10, help="default 10")
    profile.add_argument("--batch", type=_positive_int, default=64, help="default 64 (the paper's)")
    profile.add_argument("--repeats", type=_positive_int, default=10,
                         help="timed forward calls, median reported; default 10")
    profile.add_argument("--warmup", type=int, default=2, help="untimed forward calls; default 2")
    profile.add_argument("--memory", choices=("train", "inference", "none"), default="train",
                         help="memory of one training step (default) or of the inference forward")
    profile.add_argument("--no-latency", action="store_true", help="do not time the forward")
    profile.add_argument("--json", type=Path, metavar="PATH", help="also write the numbers as JSON")

    spec = commands.add_parser(
        "spec", help="write, validate and summarize architecture specs (JSON)", parents=debug,
        description="Prints a spec's notation, template-layer filters, parameters and FLOPs per "
        "example (from shape inference; nothing is compiled). The spec comes from FILE (checked "
        "field by field) or from a zoo model with a template and width. --write saves it as JSON "
        "for `fnnjax train --spec`.",
        epilog="examples:\n  fnnjax spec --model resnet50 --template uniform --write r50.json\n"
        "  fnnjax spec r50.json\n  fnnjax spec --model vgg16 --head fnn --input-shape 28 28 1 "
        "--write v.json", formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    spec.add_argument("file", nargs="?", type=Path, metavar="FILE.json", help="a spec to check")
    spec.add_argument("--model", help="a zoo model (vgg16, vgg19, resnet50, inception, mobilenet)")
    spec.add_argument("--template", default="base", help="filter template; default base")
    spec.add_argument("--width", type=_positive_float, default=1.0, help="width multiplier")
    spec.add_argument("--head", help="linear, dense or fnn (default: the model's own)")
    spec.add_argument("--input-shape", type=_positive_int, nargs=3, default=[32, 32, 3],
                      metavar=("H", "W", "C"), help="one example's shape; default 32 32 3")
    spec.add_argument("--classes", type=_positive_int, default=10, help="default 10")
    spec.add_argument("--write", type=Path, metavar="PATH", help="write the spec as JSON here")

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
    enas.add_argument("--layers", type=_positive_int, default=12, help="L; default 12")
    enas.add_argument("--filters", type=_positive_int, default=36, help="width C; default 36")
    enas.add_argument("--epochs", type=_positive_int, default=310, help="default 310")
    enas.add_argument("--batch-size", type=_positive_int, default=128, help="default 128")
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
    enas.add_argument("--head-pool", choices=("avg", "grouped"), default="avg",
                      help="the classifier's pooling: global average (ENAS, default) or NHN's "
                      "grouped convolution covering the feature map")  # fmt: skip
    enas.add_argument("--derive-arcs", type=_positive_int, default=100,
                      help="arcs sampled and scored to pick the best; default 100")  # fmt: skip
    enas.add_argument("--limit-train", type=_positive_int, help="use only this many examples")
    enas.add_argument("--seed", type=int, default=0, help="default 0")
    enas.add_argument("--no-resume", action="store_true", help="start afresh even if OUT holds "
                      "a search (its files are moved to OUT/previous-<time>/)")  # fmt: skip
    enas.add_argument("--quick", action="store_true",
                      help="tiny sizes (digits, 2 layers, 4 filters, 2 epochs): a smoke test")  # fmt: skip
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
    env.add_argument("--iterations", type=_positive_int, default=5, help="N; default 5")
    env.add_argument("--epochs-per-iteration", type=_positive_int, default=10, help="default 10")
    env.add_argument("--max-layers", help="per stage, the depth past which a stage is left "
                     "unchanged, comma-separated, or 'none'; default: the released code's "
                     "15,5,3,3 for an n-1-1-1 init with n = 10 (the paper's, giving 15-6-4-4), "
                     "none otherwise")  # fmt: skip
    env.add_argument("--max-prune", type=_positive_int, default=6, help="default 6")
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
    env.add_argument("--batch-size", type=_positive_int, default=50, help="default 50")
    env.add_argument("--lr", type=_positive_float, default=0.1, help="SGD rate; default 0.1")
    env.add_argument("--no-augment", action="store_true", help="no random crops / flips")
    env.add_argument("--final-epochs", type=int, default=0,
                     help="then train the constructed network this long; default 0")  # fmt: skip
    env.add_argument("--dataset", default="fashion_mnist",
                     help="dataset name (see `fnnjax datasets`); default fashion_mnist")  # fmt: skip
    env.add_argument("--validation", type=float, default=0.0,
                     help="share of the training split held out; default 0")  # fmt: skip
    env.add_argument("--limit-train", type=_positive_int, help="use only this many examples")
    env.add_argument("--devices", type=_positive_int, help="data-parallel devices; default all")
    env.add_argument("--seed", type=int, default=0, help="default 0")
    env.add_argument("--no-resume", action="store_true", help="start afresh even if OUT holds "
                     "a construction (its files are moved to OUT/previous-<time>/)")  # fmt: skip
    env.add_argument("--quick", action="store_true",
                     help="tiny sizes (digits, 6/2-1/2 with a 2-block cell, 2 iterations of 3 "
                     "epochs, batch 40): a smoke test")  # fmt: skip
    env.add_argument("--out", type=Path, required=True, help="output folder")

    from fnnjax import cli_capacity  # noqa: PLC0415

    cli_capacity.add_parser(commands, debug, _positive_int, _positive_float)
    from fnnjax import cli_nhn  # noqa: PLC0415

    cli_nhn.add_parser(commands, debug, _positive_int)
    commands.add_parser("models", help="list model names", parents=debug)
    commands.add_parser("datasets", help="list dataset names and where each is found", parents=debug)
    return parser


def _train(args: argparse.Namespace) -> int:
    import jax  # noqa: PLC0415  (keep `fnnjax --help` fast)

    from fnnjax import models, train  # noqa: PLC0415
    from fnnjax.errors import ConfigError  # noqa: PLC0415

    if args.distributed:
        jax.distributed.initialize(
            coordinator_address=args.coordinator, num_processes=args.num_processes,
            process_id=args.process_id,
        )
    options = dict(args.option)
    if args.template is not None:
        options["template"] = args.template
    if args.width is not None:
        options["width"] = args.width
    config = train.TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer,
        learning_rate=args.lr, momentum=args.momentum, nesterov=args.nesterov,
        weight_decay=args.weight_decay, schedule=args.schedule, step_epochs=tuple(args.step_epochs),
        step_factor=args.step_factor, warmup_epochs=args.warmup_epochs, grad_clip=args.clip,
        restart_epochs=args.restart_epochs, restart_mult=args.restart_mult,
        min_learning_rate=args.min_lr,
        augment=args.augment, cutout=args.cutout, seed=args.seed,
        checkpoint_every_epochs=args.checkpoint_every,
        num_devices=args.devices, progress=not args.quiet, tensorboard=args.tensorboard,
    )  # fmt: skip
    if args.spec is not None and (args.model != "dense" or options):
        raise ConfigError("--spec FILE replaces --model, -o, --template and --width; pass one or "
                          "the other (`fnnjax spec --model ... --write FILE` makes a spec)")  # fmt: skip
    masks = None
    if args.masks is not None:
        if args.spec is None:
            raise ConfigError("--masks FILE applies to --spec FILE (the spec the masks belong to); "
                              "pass both")  # fmt: skip
        masks = _read_masks(args.masks)
    data = train.load_dataset(args.dataset, validation_fraction=args.validation, seed=args.seed,
                              limit_train=args.limit_train, limit_test=args.limit_test)  # fmt: skip
    if args.spec is not None:
        spec = _read_spec(args.spec)
        if (tuple(spec.input_shape), spec.num_classes) != (tuple(data.input_shape), data.num_classes):
            raise ConfigError(
                f"--spec {args.spec}: the spec takes inputs {tuple(spec.input_shape)} with "
                f"{spec.num_classes} classes, but {args.dataset!r} has {tuple(data.input_shape)} "
                f"with {data.num_classes}; write a matching one with `fnnjax spec ... "
                f"--input-shape {' '.join(map(str, data.input_shape))} --classes {data.num_classes}`"
            )
        description = (models.describe_spec(spec, use_masks=True) if masks and "masks" in masks
                       else models.describe_spec(spec))  # fmt: skip
        name = spec.name or args.spec.stem
    else:
        description = {"name": args.model, "options": options, "num_classes": data.num_classes,
                       "input_shape": list(data.input_shape)}  # fmt: skip
        name = args.model
    model = models.model_from_description(description)
    digest = train.run_digest(description, data, config)
    if masks is not None:  # other masks, another run
        digest += "-m" + hashlib.sha256(args.masks.read_bytes()).hexdigest()[:8]
    out = args.out or Path("runs") / f"{name}-{args.dataset}-{digest}"
    try:
        result = train.fit(model, data, config, out_dir=out, resume=not args.no_resume,
                           description=description, rebuild=models.model_from_description,
                           initial_variables=masks)  # fmt: skip
    except ConfigError as error:
        if masks is None or not str(error).startswith("initial_variables"):
            raise
        raise ConfigError(f"--masks {args.masks}: {error} (masks written for another spec?)") from None
    summary = result.summary
    if summary.get("best_epoch") is not None:
        best = (f"best validation accuracy {summary['best_validation_accuracy']:.2%} at epoch "
                f"{summary['best_epoch']} (checkpoint in {out}/best/)")  # fmt: skip
    else:
        best = "no best checkpoint without --validation"
    if jax.process_index() == 0:
        print(
            f"{name} on {args.dataset}: test accuracy {summary['final_test_accuracy']:.2%} "
            f"after {summary['epochs_done']} epochs, {summary['num_params']:,} parameters; "
            f"{best}; results and curves.png in {out}/"
        )
    return 0


def _profile(args: argparse.Namespace) -> int:

    from fnnjax import arch, models  # noqa: PLC0415
    from fnnjax.construct import layer_filters, templates  # noqa: PLC0415
    from fnnjax.errors import ConfigError  # noqa: PLC0415

    if not args.width > 0 or args.width == float("inf"):
        raise ConfigError(f"--width: expected a positive number, got {args.width}")
    shape, zoo = tuple(args.input_shape), args.model in arch.MODEL_NAMES
    info: dict[str, Any] = {"model": args.model, "input_shape": list(shape), "classes": args.classes}
    if zoo:
        try:  # validate the name alone, so the message is about the template, not a spec
            templates.template_filters((1, 2, 3), args.template)
        except ValueError:
            raise ConfigError(f"unknown template {args.template!r}; expected one of: "
                              f"{', '.join(templates.TEMPLATE_NAMES)}") from None  # fmt: skip
        target = models.build_spec(args.model, args.classes, shape, args.template, args.width,
                                   head=args.head)  # fmt: skip
        filters = layer_filters(target)
        name = f"{args.model}-{args.template}" + (f"-x{args.width:g}" if args.width != 1.0 else "")
        info.update(template=args.template, width=args.width, head=target.head.kind,
                    layer_filters=list(filters), total_filters=sum(filters),
                    notation=arch.notation(target))  # fmt: skip
    else:
        if args.template != "base" or args.width != 1.0 or args.head is not None:
            raise ConfigError(f"--template, --width and --head apply to the zoo models "
                              f"({', '.join(arch.MODEL_NAMES)}), not to {args.model!r}")  # fmt: skip
        target = models.get_model(args.model, args.classes, shape)
        name = args.model
    def progress(message: str) -> None:
        print(f"fnnjax profile: {message}", file=sys.stderr, flush=True)

    result = arch.profile(target, shape, args.batch, name=name, repeats=args.repeats,
                          warmup=args.warmup, memory_mode=None if args.memory == "none" else args.memory,
                          latency=not args.no_latency, progress=progress)  # fmt: skip
    if zoo:
        print(f"{info['notation']}\n{len(filters)} template layers, F = {sum(filters)}: "
              f"{', '.join(map(str, filters))}")  # fmt: skip
    print(arch.profile_table([result]))
    details = [f"params {result.params:,}"]
    if result.flops is not None:
        details.append(f"FLOPs/example {result.flops:,} (valid taps {result.flops_valid:,})")
    if result.memory is not None:
        details.append(f"{result.memory_mode} memory: peak {result.memory['peak_bytes'] / 2**20:.1f} "
                       f"MB (activations {result.memory['activation_bytes'] / 2**20:.1f} MB)")
    if result.latency_s is not None:
        details.append(f"latency {1e3 * result.latency_s:.2f} ms/batch = "
                       f"{1e6 * result.latency_s / args.batch:.1f} us/example "
                       f"(median of {result.latency_repeats})")  # fmt: skip
    print("; ".join(details))
    if args.json is not None:
        record = {**info, "profile": dataclasses.asdict(result)}
        try:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(record, indent=2))
        except OSError as error:
            raise ConfigError(f"cannot write --json {args.json}: {error.strerror or error}") from None
        print(f"wrote {args.json}")
    return 0


def _read_masks(path: Path) -> dict[str, Any]:
    """The ``"masks"``/``"arch"`` trees in ``path`` (:func:`fnnjax.arch.save_variables`), or one
    ConfigError naming the file and what is wrong."""
    from fnnjax.arch import load_variables  # noqa: PLC0415
    from fnnjax.errors import ConfigError  # noqa: PLC0415

    if not path.is_file():
        raise ConfigError(f"--masks {path}: no such file")
    try:
        tree = load_variables(path)
    except ValueError as error:
        raise ConfigError(f"--masks {error}") from None
    other = sorted(set(tree) - {"masks", "arch"})
    if other:
        raise ConfigError(f"--masks {path}: holds {', '.join(map(repr, other))}; expected only "
                          "'masks' and 'arch' (kernel masks and selection arrays)")  # fmt: skip
    return tree


def _read_spec(path: Path):
    """The spec in ``path``, or one ConfigError naming the file and the offending field."""
    from fnnjax import arch  # noqa: PLC0415
    from fnnjax.errors import ConfigError  # noqa: PLC0415

    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"cannot read spec {path}: {error.strerror or error}") from None
    try:
        return arch.from_json(text)
    except ValueError as error:
        raise ConfigError(f"spec {path}: {error}") from None


def _spec(args: argparse.Namespace) -> int:
    from fnnjax import arch, models  # noqa: PLC0415
    from fnnjax.construct import layer_filters  # noqa: PLC0415
    from fnnjax.errors import ConfigError  # noqa: PLC0415

    if (args.file is None) == (args.model is None):
        raise ConfigError("give a spec FILE.json to check, or --model to make one (not both)")
    if args.file is not None:
        spec = _read_spec(args.file)
    else:
        if args.model not in arch.MODEL_NAMES:
            raise ConfigError(f"--model: expected a zoo model ({', '.join(arch.MODEL_NAMES)}), got "
                              f"{args.model!r}; other registered models are not specs")  # fmt: skip
        template = None if args.template == "base" else args.template
        try:
            spec = models.build_spec(args.model, args.classes, tuple(args.input_shape), template,
                                     args.width, head=args.head)  # fmt: skip
        except ValueError as error:
            raise ConfigError(f"{args.model}: {error}") from None
    counts = arch.analytic_counts(spec)
    filters = layer_filters(spec)
    print(arch.notation(spec))
    print(f"input {tuple(spec.input_shape)}, {spec.num_classes} classes; {len(filters)} template "
          f"layers, F = {sum(filters)}; {counts['params']:,} parameters; "
          f"{counts['flops'] / 1e6:,.1f} MFLOPs per example")  # fmt: skip
    if args.write is not None:
        try:
            args.write.parent.mkdir(parents=True, exist_ok=True)
            args.write.write_text(arch.to_json(spec, indent=1) + "\n")
        except OSError as error:
            raise ConfigError(f"cannot write --write {args.write}: {error.strerror or error}") from None
        print(f"wrote {args.write} (train it: fnnjax train --spec {args.write})")
    return 0


def _enas(args: argparse.Namespace) -> int:
    from fnnjax.construct import enas  # noqa: PLC0415
    from fnnjax.errors import ConfigError  # noqa: PLC0415
    from fnnjax.train import load_dataset  # noqa: PLC0415

    if not 0.0 < args.validation < 1.0:
        raise ConfigError(f"--validation: expected a share in (0, 1), got {args.validation}")
    if args.clip < 0:
        raise ConfigError(f"--clip: expected a norm >= 0 (0: no clipping), got {args.clip}")
    config = enas.SearchConfig(layers=args.layers, filters=args.filters, epochs=args.epochs,
                               batch_size=args.batch_size, random_search=args.random,
                               child_clip=args.clip or None, skips=args.skips,
                               update_stats=args.bn_update, head_pool=args.head_pool,
                               derive_arcs=args.derive_arcs)  # fmt: skip
    dataset, limit = args.dataset, args.limit_train
    if args.quick:
        dataset, limit = "digits", limit or 400
        config = dataclasses.replace(config, layers=2, filters=4, epochs=2, batch_size=64,
                                     controller_steps=2, arcs_per_step=4, reward_batch=32,
                                     derive_arcs=10, derive_batches=1)  # fmt: skip
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


def _envelope_config(args: argparse.Namespace):
    """``(ConstructionConfig, dataset, limit_train)`` of an ``envelopenet`` command line."""
    from fnnjax.construct import envelope as ev  # noqa: PLC0415
    from fnnjax.errors import ConfigError  # noqa: PLC0415

    if not 0.0 <= args.validation < 1.0:
        raise ConfigError(f"--validation: expected a share in [0, 1), got {args.validation}")
    if args.final_epochs < 0:
        raise ConfigError(f"--final-epochs: expected an integer >= 0, got {args.final_epochs}")
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


def _envelopenet(args: argparse.Namespace) -> int:
    from fnnjax.arch import analytic_counts  # noqa: PLC0415
    from fnnjax.construct import envelope as ev  # noqa: PLC0415
    from fnnjax.train import load_dataset  # noqa: PLC0415

    config, dataset, limit = _envelope_config(args)
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


def _capacity(args: argparse.Namespace) -> int:
    from fnnjax import cli_capacity  # noqa: PLC0415

    return cli_capacity.run(args)


def _nhn(args: argparse.Namespace) -> int:
    from fnnjax import cli_nhn  # noqa: PLC0415

    return cli_nhn.run(args)


def _list_models() -> int:
    from fnnjax import models  # noqa: PLC0415

    print("\n".join(models.available_models()))
    return 0


def _list_datasets() -> int:
    from fnnjax.train import data  # noqa: PLC0415

    for name in data.available_datasets():
        print(f"{name:14s} {data.describe_source(name)}")
    return 0


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Prints a library warning as one ``fnnjax: warning:`` line (no source line under it)."""
    print(f"fnnjax: warning: {message}", file=sys.stderr if file is None else file)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    handlers = {"train": _train, "profile": _profile, "spec": _spec, "enas": _enas,
                "envelopenet": _envelopenet, "capacity": _capacity, "nhn": _nhn,
                "models": lambda a: _list_models(),
                "datasets": lambda a: _list_datasets()}  # fmt: skip
    shown, warnings.showwarning = warnings.showwarning, _one_line_warning
    try:
        return handlers[args.command](args)
    except (FnnjaxError, ValueError, FileNotFoundError, PermissionError) as error:
        if args.debug:
            raise
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"fnnjax: error: {message}  (--debug shows the traceback)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fnnjax: interrupted; the newest checkpoint is kept, rerun the command to resume",
              file=sys.stderr)  # fmt: skip
        return 130
    finally:
        warnings.showwarning = shown


if __name__ == "__main__":
    sys.exit(main())
