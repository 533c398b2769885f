"""``fnnjax train``: any registered model or spec on any dataset (:func:`fnnjax.train.fit`)."""

from __future__ import annotations

import argparse
import hashlib
import re
from pathlib import Path
from typing import Any

from fnnjax.checks import positive_float_arg, positive_int_arg
from fnnjax.cli.common import add_run_flags, epochs_text, parse_option, resolve, say

EPILOG = """examples:
  fnnjax train                                     dense baseline on digits (~20 s on 2 CPU cores)
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


RUN_DEFAULTS = {"dataset": "digits", "validation": 0.0, "limit_train": None, "batch_size": 128,
                "epochs": 20, "seed": 0}  # fmt: skip
"""The run flags' defaults (``--out``'s: ``runs/MODEL-DATASET-XXXXXX``, XXXXXX a digest of every
setting that makes a different run)."""


def add_parser(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    train = commands.add_parser(
        "train", help="train a model on a dataset", epilog=EPILOG, parents=parents,
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
    what.add_argument("-o", "--option", action="append", type=parse_option, default=[],
                      metavar="KEY=VALUE", help="model option, repeatable (e.g. -o iterations=2)")
    what.add_argument("--template", help="filter-redistribution template for zoo models "
                      "(uniform, reverse, quadratic, negative_quadratic)")
    what.add_argument("--width", type=positive_float_arg, help="width multiplier for zoo models")
    what.add_argument("--limit-test", type=positive_int_arg, metavar="N",
                      help="evaluate on only the first N test examples (quick runs)")

    how = train.add_argument_group("how to train")
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

    run = train.add_argument_group("where and on what")
    run.add_argument("--checkpoint-every", type=positive_int_arg, default=1, metavar="EPOCHS")
    run.add_argument("--tensorboard", action="store_true", help="also write TensorBoard logs")
    run.add_argument("--quiet", action="store_true", help="no progress bar")

    add_run_flags(train, {**RUN_DEFAULTS, "out": "runs/MODEL-DATASET-XXXXXX"})


def run(args: argparse.Namespace) -> int:
    import numpy as np  # noqa: PLC0415

    from fnnjax import models, train  # noqa: PLC0415
    from fnnjax.errors import ConfigError  # noqa: PLC0415

    resolve(args, RUN_DEFAULTS)
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
        masks = read_masks(args.masks)
    data = train.load_dataset(args.dataset, validation_fraction=args.validation, seed=args.seed,
                              limit_train=args.limit_train, limit_test=args.limit_test)  # fmt: skip
    # Float targets (the generated sines<D>d-c<C> tasks) are regression: MSE, no accuracy.
    objective = "regression" if np.issubdtype(data.train.y.dtype, np.floating) else "classification"
    if args.spec is not None:
        spec = read_spec(args.spec)
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
    say(
        f"{name} on {args.dataset}: {final} "
        f"after {epochs_text(summary['epochs_done'])}, {summary['num_params']:,} parameters; "
        f"{best}; results and curves.png in {out}/"
    )
    return 0


def read_masks(path: Path) -> dict[str, Any]:
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


def read_spec(path: Path):
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


