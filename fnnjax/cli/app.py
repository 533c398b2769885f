"""The ``fnnjax`` parser and its dispatch: one line per user error, one per warning."""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from collections.abc import Sequence

from fnnjax.cli.common import (
    Parser,
    debug_flag,
    flag_names,
    one_line_warning,
    render_mismatch,
    start_distributed,
)
from fnnjax.errors import FnnjaxError

EPILOG = """examples:
  fnnjax train                                     dense baseline on digits (~20 s on 2 CPU cores)
  fnnjax train --model fnn-1024 --dataset fashion_mnist --epochs 100
  fnnjax enas --quick --out runs/enas              ENAS's search in about a minute
  fnnjax spec --model vgg19 --template uniform --width 0.25 --input-shape 8 8 1 --write vgg.json
  fnnjax train --spec vgg.json --epochs 5          any architecture from a spec file

commands:
  train        any model or spec on any dataset           enas         ENAS macro search
  envelopenet  EnvelopeNet construction                   nhn          the NHN pipeline
  capacity     a network that grows and shrinks           profile/spec what a model costs
Every training command shares --dataset --validation --limit-train --batch-size --epochs --seed
--out --no-resume; the paper commands have --quick, which explicit flags override.
"""

# subcommand -> (module, function that adds its parser(s), {command: function that runs it})
_COMMANDS = {
    "train": ("train", "add_parser", {"train": "run"}),
    "profile": ("inspect", "add_parsers", {"profile": "run_profile", "spec": "run_spec"}),
    "enas": ("enas", "add_parser", {"enas": "run"}),
    "envelopenet": ("envelopenet", "add_parser", {"envelopenet": "run"}),
    "nhn": ("nhn", "add_parser", {"nhn": "run"}),
    "capacity": ("capacity", "add_parser", {"capacity": "run"}),
}


def _module(name: str):
    return importlib.import_module(f"fnnjax.cli.{name}")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="fnnjax",
        description="Neural-network structure learning in JAX/Flax (FNN, EnvelopeNets, NHN, "
        "filter templates, dynamic capacity).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    parents = [debug_flag()]
    for module, add, _ in _COMMANDS.values():
        getattr(_module(module), add)(commands, parents)
    commands.add_parser("models", help="list model names", parents=parents)
    commands.add_parser("datasets", help="list dataset names and where each is found", parents=parents)
    return parser


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


def _handler(command: str):
    if command == "models":
        return lambda args: _list_models()
    if command == "datasets":
        return lambda args: _list_datasets()
    module, _, runs = next(v for v in _COMMANDS.values() if command in v[2])
    return getattr(_module(module), runs[command])


def _message(error: BaseException, parser: argparse.ArgumentParser | None) -> str:
    """One line for a user's mistake, in the command line's terms (flags, not fields)."""
    from fnnjax.train.runfolder import RunMismatchError  # noqa: PLC0415

    if isinstance(error, RunMismatchError) and error.differences:
        return render_mismatch(error, parser)
    text = str(error).strip()
    first = text.splitlines()[0] if text else type(error).__name__
    options = None if parser is None else {o for a in parser._actions for o in a.option_strings}
    return flag_names(first, options)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    subparser = parser._subparsers._group_actions[0].choices.get(args.command)  # type: ignore[union-attr]
    shown, warnings.showwarning = warnings.showwarning, one_line_warning
    try:
        start_distributed(args)
        return _handler(args.command)(args)
    except (FnnjaxError, ValueError, FileNotFoundError, PermissionError) as error:
        if args.debug:
            raise
        print(f"fnnjax: error: {_message(error, subparser)}  (--debug shows the traceback)",
              file=sys.stderr)  # fmt: skip
        return 2
    except KeyboardInterrupt:
        print("fnnjax: interrupted; the newest checkpoint is kept, rerun the command to resume",
              file=sys.stderr)  # fmt: skip
        return 130
    finally:
        warnings.showwarning = shown
