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
import re
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fnnjax.checks import check_number, positive_float_arg, positive_int_arg
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
    what.add_argument("--model", default=None, help="model name (see `fnnjax models`); default dense")
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
    what.add_argument("--width", type=positive_float_arg, help="width multiplier for zoo models")
    what.add_argument("--validation", type=float, default=0.0, metavar="FRACTION",
                      help="hold out this share of the training split for validation")
    what.add_argument("--limit-train", type=positive_int_arg, metavar="N",
                      help="use only the first N training examples (quick runs)")
    what.add_argument("--limit-test", type=positive_int_arg, metavar="N",
                      help="evaluate on only the first N test examples (quick runs)")

    how = train.add_argument_group("how to train")
    how.add_argument("--epochs", type=positive_int_arg, default=20, help="default 20")
    how.add_argument("--batch-size", type=positive_int_arg, default=128, help="global batch; default 128")
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
    run.add_argument("--checkpoint-every", type=positive_int_arg, default=1, metavar="EPOCHS")
    run.add_argument("--devices", type=positive_int_arg, help="number of local devices (default all)")
    run.add_argument("--distributed", action="store_true",
                     help="call jax.distributed.initialize() first (multi-host runs; on TPU pods "
                     "and SLURM it finds the cluster itself)")
    run.add_argument("--coordinator", metavar="HOST:PORT",
                     help="with --distributed: the coordinator (process 0) address")
    run.add_argument("--num-processes", type=positive_int_arg, help="with --distributed")
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
    profile.add_argument("--width", type=positive_float_arg, default=1.0,
                         help="width multiplier for zoo models, applied after the template")
    profile.add_argument("--head", help="zoo head: linear, dense or fnn (default: the model's own)")
    profile.add_argument("--input-shape", type=positive_int_arg, nargs=3, default=[32, 32, 3],
                         metavar=("H", "W", "C"), help="one example's shape; default 32 32 3")
    profile.add_argument("--classes", type=positive_int_arg, default=10, help="default 10")
    profile.add_argument("--batch", type=positive_int_arg, default=64, help="default 64 (the paper's)")
    profile.add_argument("--repeats", type=positive_int_arg, default=10,
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
        "field by field) or from a zoo model; --template, --width and --head transform either "
        "(in that order; --head keeps the spec's pooling). --write saves the result as JSON for "
        "`fnnjax train --spec`.",
        epilog="examples:\n  fnnjax spec --model resnet50 --template uniform --write r50.json\n"
        "  fnnjax spec r50.json\n  fnnjax spec --model vgg16 --head fnn --input-shape 28 28 1 "
        "--write v.json\n  fnnjax spec runs/env/final_spec.json --template uniform --width 0.5 "
        "--head fnn --write env-u.json", formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    spec.add_argument("file", nargs="?", type=Path, metavar="FILE.json", help="a spec to check")
    spec.add_argument("--model", help="a zoo model (vgg16, vgg19, resnet50, inception, mobilenet)")
    spec.add_argument("--template", default="base", help="filter template; default base")
    spec.add_argument("--width", type=positive_float_arg, default=1.0, help="width multiplier")
    spec.add_argument("--head", help="linear, dense or fnn (default: the model's own)")
    spec.add_argument("--input-shape", type=positive_int_arg, nargs=3, default=None,
                      metavar=("H", "W", "C"), help="--model: one example's shape; default 32 32 3")
    spec.add_argument("--classes", type=positive_int_arg, default=None, help="--model: default 10")
    spec.add_argument("--write", type=Path, metavar="PATH", help="write the spec as JSON here")

    from fnnjax import cli_search  # noqa: PLC0415

    cli_search.add_parsers(commands, debug)
    from fnnjax import cli_capacity  # noqa: PLC0415

    cli_capacity.add_parser(commands, debug)
    from fnnjax import cli_nhn  # noqa: PLC0415

    cli_nhn.add_parser(commands, debug)
    commands.add_parser("models", help="list model names", parents=debug)
    commands.add_parser("datasets", help="list dataset names and where each is found", parents=debug)
    return parser


def _train(args: argparse.Namespace) -> int:
    import jax  # noqa: PLC0415  (keep `fnnjax --help` fast)
    import numpy as np  # noqa: PLC0415

    from fnnjax import models, train  # noqa: PLC0415
    from fnnjax.errors import ConfigError  # noqa: PLC0415

    if args.distributed:
        jax.distributed.initialize(
            coordinator_address=args.coordinator, num_processes=args.num_processes,
            process_id=args.process_id,
        )
    options = dict(args.option)
    if args.spec is None and args.model is None:
        args.model = "dense"
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
    if args.spec is not None and (args.model is not None or options):
        raise ConfigError("--spec FILE replaces --model, -o, --template and --width; pass one or "
                          "the other (`fnnjax spec FILE --template T --width W --write NEW` "
                          "transforms a spec; `fnnjax spec --model ... --write FILE` makes one)")  # fmt: skip
    masks = None
    if args.masks is not None:
        if args.spec is None:
            raise ConfigError("--masks FILE applies to --spec FILE (the spec the masks belong to); "
                              "pass both")  # fmt: skip
        masks = _read_masks(args.masks)
    data = train.load_dataset(args.dataset, validation_fraction=args.validation, seed=args.seed,
                              limit_train=args.limit_train, limit_test=args.limit_test)  # fmt: skip
    # Float targets (the generated sines<D>d-c<C> tasks) are regression: MSE, no accuracy.
    objective = "regression" if np.issubdtype(data.train.y.dtype, np.floating) else "classification"
    if args.spec is not None:
        spec = _read_spec(args.spec)
        size = int(np.prod(data.input_shape))
        if tuple(spec.input_shape) == (1, 1, size) != tuple(data.input_shape):
            from fnnjax.train.tasks import as_vectors  # noqa: PLC0415

            data = as_vectors(data)  # a spec of flattened images (a residual MLP)
        if (tuple(spec.input_shape), spec.num_classes) != (tuple(data.input_shape), data.num_classes):
            raise ConfigError(
                f"--spec {args.spec}: the spec takes inputs {tuple(spec.input_shape)} with "
                f"{spec.num_classes} classes, but {args.dataset!r} has {tuple(data.input_shape)} "
                f"with {data.num_classes}; pass the dataset the spec was made for (a search's "
                "spec: the one it searched on), or write a zoo model's spec for this one with "
                f"`fnnjax spec --model NAME --input-shape {' '.join(map(str, data.input_shape))} "
                f"--classes {data.num_classes} --write FILE`"
            )
        description = (models.describe_spec(spec, use_masks=True) if masks and "masks" in masks
                       else models.describe_spec(spec))  # fmt: skip
        if masks is not None:  # other masks, another run (its folder and its checkpoints' identity)
            description["masks_sha256"] = hashlib.sha256(args.masks.read_bytes()).hexdigest()
        name = spec.name or args.spec.stem
    else:
        description = {"name": args.model, "options": options, "num_classes": data.num_classes,
                       "input_shape": list(data.input_shape)}  # fmt: skip
        name = args.model
    model = models.model_from_description(description)
    digest = train.run_digest(description, data, config)
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "spec"  # one safe folder name
    out = args.out or Path("runs") / f"{slug}-{args.dataset}-{digest}"
    try:
        result = train.fit(model, data, config, out_dir=out, resume=not args.no_resume,
                           description=description, rebuild=models.model_from_description,
                           initial_variables=masks, objective=objective)  # fmt: skip
    except ConfigError as error:
        if masks is None or not str(error).startswith("initial_variables"):
            raise
        raise ConfigError(f"--masks {args.masks}: {error} (masks written for another spec?)") from None
    summary = result.summary
    if summary.get("best_epoch") is None:
        best = "no best checkpoint without --validation"
    elif objective == "regression":
        best = (f"best validation loss {summary['best_validation_loss']:.4g} at epoch "
                f"{summary['best_epoch']} (checkpoint in {out}/best/)")  # fmt: skip
    else:
        best = (f"best validation accuracy {summary['best_validation_accuracy']:.2%} at epoch "
                f"{summary['best_epoch']} (checkpoint in {out}/best/)")  # fmt: skip
    final = (f"test accuracy {summary['final_test_accuracy']:.2%}" if objective == "classification"
             else f"test loss (MSE) {summary['final_test_loss']:.4g}")  # fmt: skip
    if jax.process_index() == 0:
        print(
            f"{name} on {args.dataset}: {final} "
            f"after {summary['epochs_done']} epoch{'' if summary['epochs_done'] == 1 else 's'}, "
            f"{summary['num_params']:,} parameters; "
            f"{best}; results and curves.png in {out}/"
        )
    return 0


def _profile(args: argparse.Namespace) -> int:

    from fnnjax import arch, models  # noqa: PLC0415
    from fnnjax.construct import layer_filters, templates  # noqa: PLC0415
    from fnnjax.errors import ConfigError  # noqa: PLC0415

    check_number("--width", args.width, above=0)
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
    except ValueError as error:  # "PATH: expected ... (save_variables); what it holds instead"
        reason = str(error).split("; ", 1)[-1]
        raise ConfigError(f"--masks {path}: expected an .npz file of masks written by fnnjax "
                          f"beside the spec (nhn_masks.npz, pruned_masks.npz); {reason}") from None  # fmt: skip
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
    from fnnjax.construct import layer_filters, templates  # noqa: PLC0415
    from fnnjax.errors import ConfigError  # noqa: PLC0415

    if (args.file is None) == (args.model is None):
        raise ConfigError("give a spec FILE.json to check, or --model to make one (not both)")
    if args.file is not None:
        for flag, value in (("--input-shape", args.input_shape), ("--classes", args.classes)):
            if value is not None:
                raise ConfigError(f"{flag}: a spec FILE carries its own input shape and classes; "
                                  "drop the flag (or make the spec with --model)")  # fmt: skip
        spec = _read_spec(args.file)
        try:  # as --model: the template, then the width; the head swap keeps the spec's pooling
            if args.template not in ("base", None):
                spec = templates.apply_template(spec, args.template)
            if args.width != 1.0:
                spec = templates.width_multiplier(spec, args.width)
            if args.head is not None:
                spec = arch.with_head(spec, args.head)
        except ValueError as error:
            raise ConfigError(f"{args.file}: {error}") from None
    else:
        args.input_shape = args.input_shape or [32, 32, 3]
        args.classes = args.classes or 10
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
    from fnnjax import cli_search  # noqa: PLC0415

    return cli_search.run_enas(args)


def _envelopenet(args: argparse.Namespace) -> int:
    from fnnjax import cli_search  # noqa: PLC0415

    return cli_search.run_envelopenet(args)


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
    print("sines<D>d-c<C> generated regression: C sines on [-1, 1]^D, D 1 or 2 (e.g. sines1d-c3)")
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
