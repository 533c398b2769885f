"""``fnnjax profile`` and ``fnnjax spec``: a model's parameters, FLOPs, memory and latency, and
architecture specs written, checked and transformed (nothing is trained)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from fnnjax.checks import check_number, positive_float_arg, positive_int_arg
from fnnjax.cli.train import read_spec


def add_parsers(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    profile = commands.add_parser(
        "profile", help="parameters, FLOPs, memory and latency of a model (fnnjax.arch.profile)",
        parents=parents,
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
        "spec", help="write, validate and summarize architecture specs (JSON)", parents=parents,
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



def run_profile(args: argparse.Namespace) -> int:

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


def run_spec(args: argparse.Namespace) -> int:
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
        spec = read_spec(args.file)
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


