"""``fnnjax enas``: ENAS's macro search (NHN step 1)."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from fnnjax.checks import nonnegative_int_arg, positive_int_arg
from fnnjax.cli.common import add_run_flags, config_from, require_validation, resolve, say

RUN_DEFAULTS = {"dataset": "fashion_mnist", "validation": 0.1, "limit_train": None, "seed": 0}
"""The run flags' defaults that are not search settings (those come from SearchConfig)."""

QUICK_RUN = {"dataset": "digits"}
"""``--quick``'s data: all of digits (the search settings: :meth:`SearchConfig.quick`)."""

FIELDS = {"layers": "layers", "filters": "filters", "epochs": "epochs",
          "batch_size": "batch_size", "skips": "skips", "bn_update": "update_stats",
          "execution": "mode", "controller_adam": "controller_adam", "cutout": "cutout",
          "head_pool": "head_pool", "derive_arcs": "derive_arcs", "random": "random_search"}  # fmt: skip
"""Flag (dest) -> SearchConfig field, for the flags that set one directly."""


def add_parser(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    from fnnjax.construct.enas.config import SearchConfig  # noqa: PLC0415

    enas = commands.add_parser(
        "enas", help="ENAS macro search (NHN step 1): search, derive, export the best arc",
        parents=parents, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Trains one shared-weight supernet of L layers and an LSTM controller by "
        "REINFORCE (Pham et al. 2018), then exports the best sampled arc. OUT gets best_arc.txt "
        "(the released code's format), best_arc.json, best_spec.json (the retraining form: "
        "`fnnjax train --spec OUT/best_spec.json`), search_spec.json, top_arcs.json, "
        "search.jsonl, arcs.jsonl and search.png. Rerunning the command resumes an interrupted "
        "search.",
        epilog="examples:\n  fnnjax enas --quick --out runs/enas-quick\n"
        "  fnnjax enas --dataset fashion_mnist --layers 6 --filters 16 --epochs 10 --out runs/enas\n"
        "  fnnjax enas --dataset cifar10 --layers 12 --filters 36 --epochs 310 --out runs/enas-c10"
        "   (paper scale; a GPU)",
    )  # fmt: skip
    enas.add_argument("--layers", type=positive_int_arg, help="L")
    enas.add_argument("--filters", type=positive_int_arg, help="width C")
    enas.add_argument("--random", action="store_const", const=True,
                      help="the random-search baseline: uniform arcs, no controller")  # fmt: skip
    enas.add_argument("--clip", type=float,
                      help="clip child gradients to this global norm (0: off; the released code "
                      "configures 5 but applies the unclipped gradient)")  # fmt: skip
    enas.add_argument("--skips", choices=("paper", "released"),
                      help="skip inputs from earlier layers (paper) or the released code's "
                      "prev_layers convention (stem first)")  # fmt: skip
    enas.add_argument("--bn-update", choices=("selected", "all"),
                      help="whose BatchNorm statistics a step updates: the sampled op's "
                      "(selected) or all six ops' (the released child; all six then run every "
                      "step)")  # fmt: skip
    enas.add_argument("--execution", choices=("auto", "sampled", "all", "switch", "switch_remat"),
                      help="how a sampled arc runs: sampled (only its ops, per-op compiled "
                      "programs composed in Python), or the jitted supernet computing all six "
                      "ops (all) or a conditional (switch, switch_remat); auto: sampled on CPU, "
                      "switch elsewhere (all with --bn-update all)")  # fmt: skip
    enas.add_argument("--preset", choices=("released", "paper"), default="released",
                      help="where the ENAS paper and its released script disagree (tanh constant, "
                      "temperature, entropy weight, controller lr, child l2 and minimum lr, the "
                      "skip penalty in the reward or the loss): the released script's values "
                      "(default) or the paper's")  # fmt: skip
    enas.add_argument("--controller-adam", choices=("tensorflow", "optax"),
                      help="the controller's Adam: TensorFlow's (eps added to the uncorrected "
                      "sqrt(v), as the released code) or optax's (eps added to the "
                      "bias-corrected sqrt(v_hat): far larger early steps with eps 1e-3)")  # fmt: skip
    enas.add_argument("--cutout", type=nonnegative_int_arg,
                      help="Cutout's square side on every child batch (0: off, as ENAS's released "
                      "search; NHN searches with it: 16 on CIFAR-10)")  # fmt: skip
    enas.add_argument("--head-pool", choices=("avg", "grouped"),
                      help="the classifier's pooling: global average (ENAS) or NHN's grouped "
                      "convolution covering the feature map")  # fmt: skip
    enas.add_argument("--derive-arcs", type=positive_int_arg,
                      help="arcs sampled and scored to pick the best")  # fmt: skip
    d = SearchConfig()
    add_run_flags(enas, {**RUN_DEFAULTS, "batch_size": d.batch_size, "epochs": d.epochs,
                         "layers": d.layers, "filters": d.filters, "clip": d.child_clip,
                         "skips": d.skips, "bn_update": d.update_stats, "execution": d.mode,
                         "controller_adam": d.controller_adam, "cutout": d.cutout,
                         "head_pool": d.head_pool, "derive_arcs": d.derive_arcs},
                  out_required=True, quick="a search that visibly learns in about a minute (digits, 2 layers of 16 "
                  "filters, 4 epochs of 20 controller steps; SearchConfig.quick)")  # fmt: skip


def search_config(args: argparse.Namespace) -> Any:
    """The :class:`SearchConfig` of a command line: the defaults (or the paper's values, or
    ``--quick``'s), then every flag given."""
    from fnnjax.construct.enas.config import QUICK_SEARCH, SearchConfig  # noqa: PLC0415
    from fnnjax.errors import ConfigError  # noqa: PLC0415

    quick = QUICK_SEARCH if args.quick else {}
    base = SearchConfig.paper(**quick) if args.preset == "paper" else SearchConfig(**quick)
    config = config_from(base, args, FIELDS)
    if args.clip is not None:
        if args.clip < 0:
            raise ConfigError(f"--clip: expected a norm >= 0 (0: no clipping), got {args.clip}")
        config = dataclasses.replace(config, child_clip=args.clip or None)
    if config.update_stats == "all" and config.mode not in ("auto", "all"):
        raise ConfigError(f"--execution: {config.mode} runs only the sampled op, but "
                          "--bn-update all updates every op's statistics, which needs all six "
                          "computed; use --execution auto or all")  # fmt: skip
    return config


def run(args: argparse.Namespace) -> int:
    from fnnjax.construct import enas  # noqa: PLC0415
    from fnnjax.train import load_dataset  # noqa: PLC0415

    resolve(args, RUN_DEFAULTS, QUICK_RUN)
    require_validation(args, "ENAS scores arcs")
    config = search_config(args)
    data = load_dataset(args.dataset, validation_fraction=args.validation, seed=args.seed,
                        limit_train=args.limit_train)  # fmt: skip
    result = enas.search(data, config, args.out, seed=args.seed, resume=not args.no_resume,
                         num_devices=args.devices)  # fmt: skip
    what = "random search" if config.random_search else "ENAS"
    say(f"{what} on {args.dataset}: best arc "
          f"{enas.arc_to_string(result['best_arc'], config.layers)} (shared-weight validation "
          f"accuracy {result['best_accuracy']:.2%}); retrain it: fnnjax train --spec "
          f"{args.out / 'best_spec.json'} --dataset {args.dataset}")  # fmt: skip
    return 0
