"""What every ``fnnjax`` subcommand shares: the parser class, the run flags (declared once), how a
preset and explicit flags combine, and how library errors read on the command line.

**The run flags** (:func:`add_run_flags`): ``--dataset --validation --limit-train --batch-size
--epochs --seed --out --no-resume``, with the same help in every subcommand; their defaults are
the command's own (listed at the end of its ``--help``) and parse as None, so that a command can
tell a flag the user gave from one left out.

**Devices and hosts** (also in :func:`add_run_flags`): ``--devices`` and ``--distributed
--coordinator --num-processes --process-id``; :func:`start_distributed` (called by the dispatch
before a command runs) joins the cluster, and :func:`say` prints in process 0 only.

**Presets** (:func:`resolve`): a value comes from the flag when it is given, else from the preset
(``--quick``: the command's quick run, whose settings live on the library's configs, e.g.
``SearchConfig.quick()``), else from the command's default. Explicit flags always win.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fnnjax.checks import nonnegative_int_arg, positive_int_arg

FLAG_OF_FIELD = {"learning_rate": "--lr", "grad_clip": "--clip", "min_learning_rate": "--min-lr",
                 "validation_fraction": "--validation", "num_devices": "--devices",
                 "child_clip": "--clip", "update_stats": "--bn-update", "mode": "--execution",
                 "random_search": "--random", "checkpoint_every_epochs": "--checkpoint-every",
                 "hutchinson_samples": "--samples", "epochs_per_iteration": "--epochs"}  # fmt: skip
"""Library field names that a flag of another name sets (errors name the flag)."""


class Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line (the usage block is what --help is for)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (`{self.prog} --help` lists the options)\n")


def debug_flag() -> argparse.ArgumentParser:
    """``--debug``, accepted before and after the command name."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show full tracebacks on errors")  # fmt: skip
    return parent


def share_arg(text: str) -> float:
    """An argparse type: a share in ``[0, 1)`` (of the training split, of the kernels, ...)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a share in [0, 1), got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a share in [0, 1), got {text}")
    return value


def add_run_flags(parser: argparse.ArgumentParser, defaults: Mapping[str, Any], *,
                  out_required: bool = False, quick: str | None = None) -> None:  # fmt: skip
    """Adds the run flags (and ``--quick`` with help ``quick``, when the command has a quick
    run) in one group, and appends the command's ``defaults`` to its help. ``out_required``:
    the command has no default folder (the help line stays the same)."""
    group = parser.add_argument_group(
        "the run (the same flags in every command; this command's defaults are listed below)")
    group.add_argument("--dataset", metavar="NAME",
                       help="the dataset (`fnnjax datasets` lists them)")  # fmt: skip
    group.add_argument("--validation", type=share_arg, metavar="FRACTION",
                       help="share of the training split held out for validation (what a search "
                       "scores on and the best epoch is chosen on; never the test split)")  # fmt: skip
    group.add_argument("--limit-train", type=positive_int_arg, metavar="N",
                       help="use only the first N training examples")  # fmt: skip
    group.add_argument("--batch-size", type=positive_int_arg, metavar="N",
                       help="training examples per step")  # fmt: skip
    group.add_argument("--epochs", type=positive_int_arg, metavar="E",
                       help="epochs of training (of each training, where a command has several)")
    group.add_argument("--seed", type=int, metavar="S",
                       help="the run's seed: the same seed and flags give the same run")
    group.add_argument("--out", type=Path, metavar="DIR", required=out_required,
                       help="the run folder; running the same command again resumes it (README: "
                       "the run folder)")  # fmt: skip
    group.add_argument("--no-resume", action="store_true",
                       help="start afresh: an earlier run's files in DIR move to "
                       "DIR/previous-<time>/ (nothing is deleted)")  # fmt: skip
    if quick is not None:
        group.add_argument("--quick", action="store_true",
                           help=f"{quick}; flags given explicitly override it")
    hosts = parser.add_argument_group(
        "devices and hosts (README: searches on several hosts)")
    hosts.add_argument("--devices", type=positive_int_arg, metavar="N",
                       help="data-parallel devices (default: all; in one process, the most that "
                       "split the batch)")  # fmt: skip
    hosts.add_argument("--distributed", action="store_true",
                       help="join a multi-host run: call jax.distributed.initialize() first (on "
                       "TPU pods and SLURM it finds the cluster itself); every process runs the "
                       "same command with the same --out, process 0 writes it")  # fmt: skip
    hosts.add_argument("--coordinator", metavar="HOST:PORT",
                       help="with --distributed: process 0's address")
    hosts.add_argument("--num-processes", type=positive_int_arg, metavar="N",
                       help="with --distributed: how many processes")
    hosts.add_argument("--process-id", type=nonnegative_int_arg, metavar="I",
                       help="with --distributed: this process's index, 0 to N-1")
    shown = ", ".join(f"--{k.replace('_', '-')} {_shown(v)}" for k, v in defaults.items())
    parser.epilog = (parser.epilog or "").rstrip() + f"\n\ndefaults: {shown}"


def start_distributed(args: argparse.Namespace) -> None:
    """``jax.distributed.initialize`` with the command's ``--coordinator --num-processes
    --process-id`` when ``--distributed`` is given (before anything touches a device).

    Raises:
        ConfigError: one of those flags without ``--distributed``, or a process index not
            below the process count.
    """
    from fnnjax.errors import ConfigError  # noqa: PLC0415

    cluster = {f: getattr(args, f, None) for f in ("coordinator", "num_processes", "process_id")}
    if not getattr(args, "distributed", False):
        stray = [f"--{f.replace('_', '-')}" for f, v in cluster.items() if v is not None]
        if stray:
            raise ConfigError(f"{stray[0]}: it describes a multi-host run, which needs "
                              "--distributed (or leave it out)")  # fmt: skip
        return
    n, i = cluster["num_processes"], cluster["process_id"]
    if n is not None and i is not None and i >= n:
        raise ConfigError(f"--process-id: expected 0 to {n - 1} (--num-processes {n}), got {i}")
    import jax  # noqa: PLC0415

    jax.distributed.initialize(coordinator_address=cluster["coordinator"], num_processes=n,
                               process_id=i)  # fmt: skip


def say(*args: Any, **kwargs: Any) -> None:
    """``print`` in process 0 only (a multi-host run reports once)."""
    from fnnjax.train.sharding import is_primary  # noqa: PLC0415

    if is_primary():
        print(*args, **kwargs)


def _shown(value: Any) -> str:
    return "none" if value is None else str(value)


def given(args: argparse.Namespace, names: Any) -> dict[str, Any]:
    """The flags among ``names`` (dest names) the user gave: those not None."""
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def resolve(args: argparse.Namespace, defaults: Mapping[str, Any],
            preset: Mapping[str, Any] | None = None) -> None:  # fmt: skip
    """Fills every flag in ``defaults`` the user left out: from ``preset`` (with ``--quick``),
    else from ``defaults``; a flag given explicitly keeps its value. Checks ``--out``."""
    chosen = preset if getattr(args, "quick", False) and preset else {}
    for name, default in defaults.items():
        if getattr(args, name, None) is None:
            setattr(args, name, chosen.get(name, default))
    check_out(getattr(args, "out", None))


def require_validation(args: argparse.Namespace, why: str) -> None:
    """A command that decides on the validation split refuses ``--validation 0`` (``why``:
    what it scores there)."""
    from fnnjax.errors import ConfigError  # noqa: PLC0415

    if args.validation == 0:
        raise ConfigError(f"--validation: {why} on the validation split; expected a share in "
                          f"(0, 1), got {args.validation}")  # fmt: skip


def config_from(base: Any, args: argparse.Namespace, fields: Mapping[str, str]) -> Any:
    """``base`` (a frozen config: the defaults or a preset) with the fields whose flags the user
    gave (``fields``: flag dest -> config field). A value the config refuses is reported under
    its flag's name."""
    from fnnjax.errors import ConfigError  # noqa: PLC0415

    changes = {fields[name]: value for name, value in given(args, fields).items()}
    try:
        return dataclasses.replace(base, **changes)
    except ValueError as error:
        flags = {"--" + n.replace("_", "-") for n in fields}
        raise ConfigError(flag_names(str(error), flags, {f: n for n, f in fields.items()})) from None


def check_out(out: Path | None) -> None:
    """``--out`` must name a folder (or nothing yet): one line, not a traceback, for a file."""
    from fnnjax.errors import ConfigError  # noqa: PLC0415

    if out is None:
        return
    for path in (out, *out.parents):
        if path.exists():
            if not path.is_dir():
                raise ConfigError(f"--out {out}: {path} is a file, not a folder; name a folder "
                                  "(it is created if missing)")  # fmt: skip
            break


def flag_names(message: str, options: set[str] | None = None,
               fields: Mapping[str, str] | None = None) -> str:  # fmt: skip
    """A library message as a command-line user reads it: a leading ``field:`` named by the
    flag that sets it (when ``options``, the command's flags, has one; ``fields`` maps a
    config field to a flag dest where the names differ), and the library's own spellings of the
    ways out (``(resume=False)``, ``(out_dir=...)``) left out beside the flags saying the same."""
    head, sep, rest = message.partition(": ")
    if sep and options is not None and re.fullmatch(r"[a-z_]+", head):
        flag = "--" + (fields or {}).get(head, head).replace("_", "-")
        flag = FLAG_OF_FIELD.get(head, flag) if flag not in options else flag
        if flag in options:
            message = f"{flag}: {rest}"
    elif options is not None:  # "unknown dataset 'x'; ...", "batch_size 40 is larger than ..."
        named = re.match(r"unknown (dataset|model|template) |([a-z]+_[a-z_]+) ", message)
        flag = None if named is None else "--" + (named[1] or named[2]).replace("_", "-")
        if flag in options:
            message = f"{flag}: {message}"
    return re.sub(r" \((?:resume=False|out_dir=\.\.\.)\)", "", message)


def render_mismatch(error: Any, parser: argparse.ArgumentParser | None) -> str:
    """A :class:`~fnnjax.train.RunMismatchError` with each differing setting named by the flag
    that sets it (where the command has one) and the command-line ways out."""
    options = set() if parser is None else {o for a in parser._actions for o in a.option_strings}
    lines = []
    for path, old, new in error.differences:
        name = path.rsplit(".", 1)[-1]
        flag = FLAG_OF_FIELD.get(name, f"--{name.replace('_', '-')}")
        shown = flag if flag in options else path.removeprefix("config.")
        if path.startswith("dataset.") and flag not in options:  # what the data flags decide
            shown += " (set by --dataset, --limit-train and --validation)"
        hint = error.hints.get(path)
        lines.append(f"{shown}: saved {old!r}, now {new!r}" + (f" ({hint})" if hint else ""))
    more = f" (and {len(lines) - 8} more)" if len(lines) > 8 else ""
    return (f"{error.out} holds a different {error.what} ({'; '.join(lines[:8])}{more}); to keep "
            "both, pass another --out; to start afresh here, pass --no-resume, which moves the "
            "earlier run into previous-<time>/")  # fmt: skip


def parse_option(text: str) -> tuple[str, Any]:
    """``-o KEY=VALUE``: the value read as JSON, else true/false/none, else the text."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = {"true": True, "false": False, "none": None}.get(value.lower(), value)
    return key.strip().replace("-", "_"), parsed


def one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Prints a library warning as one ``fnnjax: warning:`` line (no source line under it)."""
    print(f"fnnjax: warning: {flag_names(str(message))}", file=sys.stderr if file is None else file)


def epochs_text(n: int) -> str:
    """``1 epoch``, ``3 epochs``."""
    return f"{n} epoch{'' if n == 1 else 's'}"
