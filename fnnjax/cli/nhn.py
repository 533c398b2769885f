"""``fnnjax nhn``: the Neuron Hierarchical Networks pipeline (nothing here imports JAX until the
command runs)."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from fnnjax.checks import positive_int_arg
from fnnjax.cli.common import (
    add_run_flags,
    config_from,
    flag_names,
    require_validation,
    resolve,
    say,
    share_arg,
)

RUN_DEFAULTS = {"dataset": "fashion_mnist", "validation": 0.1, "limit_train": None, "seed": 0}
"""The run flags' defaults that are not pipeline settings (those come from NhnConfig)."""

QUICK_RUN = {"dataset": "digits"}
"""``--quick``'s data: all of digits (compiles, not examples, take a quick run's time; the
pipeline's settings: :meth:`NhnConfig.quick`)."""

FIELDS = {"layers": "layers", "filters": "filters", "batch_size": "batch_size",
          "prune_ratio": "prune_ratio", "prune_scope": "prune_scope", "retrain": "retrain"}  # fmt: skip
"""Flag (dest) -> NhnConfig field, for the flags that set one directly."""

QUICK = ("tiny sizes that show the method in about 85 s on 2 cores (digits, 3 layers of 4 filters, 2 "
         "epochs per training, DNP of half the kernels, LDS 2 + 1 cycles of 4 individuals; "
         "NhnConfig.quick; with --search, ENAS's quick search: SearchConfig.quick)")  # fmt: skip


def add_parser(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    from fnnjax.construct.enas.config import SearchConfig  # noqa: PLC0415
    from fnnjax.construct.nhn import NhnConfig  # noqa: PLC0415

    nhn = commands.add_parser(
        "nhn", help="Neuron Hierarchical Networks: SmoothInit, DNP pruning, add-on neuron search",
        parents=parents, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Algorithm 2 of Neuron Hierarchical Networks (Wang et al. 2018): the macro "
        "arc's network (grouped-conv head, SmoothInit, no dropout) is trained; DNP prunes its "
        "flattest 3x3/5x5 kernels and the neurons left without connections; the pruned network "
        "trains again; the location-direction search (LDS) finds add-on neurons with shared "
        "weights; the result trains from scratch with Cutout and dropout. The arc comes from "
        "--arc FILE (a best_arc.txt of `fnnjax enas`, or any arc string) or from an ENAS search "
        "run first (--search, into OUT/enas). OUT gets base_spec.json, pruned_spec.json, "
        "pruned_masks.npz, prune.json, nhn_spec.json, nhn_masks.npz (retrain with `fnnjax "
        "train --spec OUT/nhn_spec.json --masks OUT/nhn_masks.npz`), lds/ (lds.jsonl, genes.json, directions.npz, lds.png), each "
        "training's run folder and results.json (accuracies, parameters, the ablation without "
        "add-ons and the paper's score). Rerunning the command resumes where it stopped.",
        epilog="examples:\n  fnnjax nhn --quick --arc '0 0 0 2 0 0' --out runs/nhn-quick\n"
        "  fnnjax nhn --quick --search --out runs/nhn-quick-search   (ENAS's quick search first)\n"
        "  fnnjax nhn --arc runs/enas/best_arc.txt --dataset fashion_mnist --layers 6 "
        "--filters 16 --stage-epochs 10 5 10 --lds-cycles 20 10 --out runs/nhn\n"
        "  fnnjax nhn --arc runs/enas-c10/best_arc.txt --dataset cifar10 --out runs/nhn-c10"
        "   (paper scale: 310 + 160 + 260 epochs, 300 + 300 LDS cycles; a GPU)",
    )  # fmt: skip
    source = nhn.add_mutually_exclusive_group(required=True)
    source.add_argument("--arc", type=Path, help="the macro arc: the best_arc.json of `fnnjax "
                        "enas` (it records the skip convention), its best_arc.txt (read with the "
                        "best_arc.json beside it), any file holding an arc string in the "
                        "released format, or that string itself (give --skips when a skip is "
                        "on)")  # fmt: skip
    source.add_argument("--search", action="store_true",
                        help="run an ENAS macro search first (same sizes, into OUT/enas)")  # fmt: skip
    nhn.add_argument("--skips", choices=("paper", "released"), default=None,
                     help="the arc's skip convention: paper (skip bit j reads layer j; fnnjax "
                     "enas's default) or released (the stem, then layers 0..k-2: arcs found by "
                     "the released ENAS code, as NHN's); default: what --arc's best_arc.json "
                     "records, paper with --search")  # fmt: skip
    nhn.add_argument("--layers", type=positive_int_arg, help="L")
    nhn.add_argument("--filters", type=positive_int_arg,
                     help="first segment's width (doubled at each reduction; ENAS's retraining "
                     "width)")  # fmt: skip
    nhn.add_argument("--search-filters", type=positive_int_arg,
                     help="--search: the supernet's width (ENAS: 36)")  # fmt: skip
    nhn.add_argument("--stage-epochs", type=positive_int_arg, nargs=3,
                     metavar=("BASE", "PRUNED", "FINAL"),
                     help="epochs of the base, pruned and final trainings, each its own (--epochs "
                     "E: E for all three)")  # fmt: skip
    nhn.add_argument("--prune-ratio", type=share_arg,
                     help="share of the 3x3/5x5 kernels DNP removes")  # fmt: skip
    nhn.add_argument("--prune-scope", choices=("global", "layer"),
                     help="DNP's std threshold: one quantile over all kernels (global) or one per "
                     "layer (each loses --prune-ratio of its kernels)")  # fmt: skip
    nhn.add_argument("--keep-stem", action="store_const", const=True,
                     help="DNP leaves the stem's 3x3 kernels (RGB inputs) whole")  # fmt: skip
    nhn.add_argument("--retrain", choices=("inherit", "scratch"),
                     help="the pruned network goes on from its weights (inherit) or restarts")  # fmt: skip
    nhn.add_argument("--neurons", type=positive_int_arg, metavar="N", help="add-on neurons per location")
    nhn.add_argument("--lds-cycles", type=int, nargs=2, metavar=("LOC", "DIR"),
                     help="location and direction search cycles")  # fmt: skip
    nhn.add_argument("--population", type=positive_int_arg, metavar="K",
                     help="individuals of the location and direction searches")
    nhn.add_argument("--fresh", choices=("random", "mutate"),
                     help="ranks 16-20: new random individuals (the paper's text) or mutants of "
                     "ranks 1-5 (Algorithm 1)")  # fmt: skip
    d = NhnConfig()
    add_run_flags(nhn, {**RUN_DEFAULTS, "batch_size": d.batch_size,
                        "stage_epochs": f"{d.base_epochs} {d.prune_epochs} {d.final_epochs}",
                        "layers": d.layers, "filters": d.filters,
                        "search_filters": SearchConfig().filters, "prune_ratio": d.prune_ratio,
                        "prune_scope": d.prune_scope, "retrain": d.retrain,
                        "neurons": d.lds.neurons,
                        "lds_cycles": f"{d.lds.location_cycles} {d.lds.direction_cycles}",
                        "population": d.lds.location.population, "fresh": d.lds.location.fresh},
                  out_required=True, quick=QUICK)  # fmt: skip


def nhn_config(args: argparse.Namespace) -> Any:
    """The :class:`NhnConfig` of a command line: the defaults (or ``--quick``'s,
    :meth:`NhnConfig.quick`), then every flag given.

    Raises:
        ConfigError: naming the flag.
    """
    from fnnjax.construct import nhn  # noqa: PLC0415
    from fnnjax.errors import ConfigError  # noqa: PLC0415

    base = nhn.NhnConfig.quick() if args.quick else nhn.NhnConfig()
    if args.epochs is not None and args.stage_epochs is not None:
        raise ConfigError(f"--epochs {args.epochs} and --stage-epochs "
                          f"{' '.join(map(str, args.stage_epochs))}: give one (--epochs E: E for "
                          "each training; --stage-epochs BASE PRUNED FINAL: each its own)")  # fmt: skip
    stages = args.stage_epochs or ([args.epochs] * 3 if args.epochs is not None else None)
    if stages is not None:
        base = dataclasses.replace(base, base_epochs=stages[0], prune_epochs=stages[1],
                                   final_epochs=stages[2])  # fmt: skip
    if args.keep_stem:
        base = dataclasses.replace(base, prune_stem=False)
    if args.lds_cycles is not None:
        loc, dirs = args.lds_cycles
        if loc < 1 or dirs < 0:
            raise ConfigError(f"--lds-cycles: expected LOC >= 1 and DIR >= 0, got {loc} {dirs}")
    location = base.lds.location
    if args.population is not None:
        least = location.keep + len(location.pairs)
        if args.population < least:
            raise ConfigError(f"--population: expected >= {least} (ranks 1-{location.keep} stay, "
                              f"{location.keep + 1}-{least} are the children of the best, the "
                              f"rest are new), got {args.population}")  # fmt: skip
    try:
        location = config_from(location, args, {"population": "population", "fresh": "fresh"})
        direction = config_from(base.lds.direction, args, {"population": "population"})
        lds = dataclasses.replace(base.lds, location=location, direction=direction)
        if args.neurons is not None:
            lds = dataclasses.replace(lds, neurons=args.neurons)
        if args.lds_cycles is not None:
            lds = dataclasses.replace(lds, location_cycles=args.lds_cycles[0],
                                      direction_cycles=args.lds_cycles[1])  # fmt: skip
        base = dataclasses.replace(base, lds=lds)
    except ValueError as error:
        message = str(error)
        if message.startswith("fresh='mutate': "):  # LocationConfig's spelling
            message = (f"--fresh mutate: {message.split(': ', 1)[1]} at --population "
                       f"{args.population or location.population}")  # fmt: skip
        raise ConfigError(flag_names(message, {"--lds-cycles", "--neurons", "--population"},
                                     {"location_cycles": "lds_cycles",
                                      "direction_cycles": "lds_cycles"})) from None  # fmt: skip
    return config_from(base, args, FIELDS)


def search_config(args: argparse.Namespace, config: Any, data: Any) -> Any:
    """``--search``'s :class:`SearchConfig`: ENAS's own settings (its search width, batch 128;
    with ``--quick``, :meth:`SearchConfig.quick`) at the pipeline's depth, head, skip convention
    and base epochs (``--quick``: the quick search's, unless epochs are given), with Cutout."""
    from fnnjax.construct import enas  # noqa: PLC0415

    # No SmoothInit here: SmoothInit is applied to the network DNP later prunes, which trains
    # from its own initialization. NHN section 2.1 searches with Cutout (the pipeline's side:
    # half the image's).
    cut = config.cutout if config.cutout is not None else min(data.input_shape[:2]) // 2
    changes = dict(layers=config.layers, head_pool=config.head_pool, skips=config.skips, cutout=cut)
    if not args.quick or args.epochs is not None or args.stage_epochs is not None:
        changes["epochs"] = config.base_epochs
    if args.search_filters is not None:
        changes["filters"] = args.search_filters
    return enas.SearchConfig.quick(**changes) if args.quick else enas.SearchConfig(**changes)


def read_arc(path: Path, layers: int, skips: str | None) -> tuple[Any, str]:
    """The arc in ``path`` and its skip convention: the one ``fnnjax enas`` recorded in its
    ``best_arc.json`` (``path`` itself, or beside a ``best_arc.txt`` holding the same arc), else
    ``skips``; an arc with a skip on and no convention recorded or given is refused (the two
    conventions wire it differently); an arc without skips is the same in both.

    Raises:
        ConfigError: naming ``--arc`` or ``--skips``.
    """
    from fnnjax.construct import enas  # noqa: PLC0415
    from fnnjax.errors import ConfigError  # noqa: PLC0415

    if not path.is_file():
        try:  # the arc itself, in any form arc_from_string reads
            enas.arc_from_string(str(path), layers)
        except ValueError as error:
            raise ConfigError(f"--arc: {path} is neither a file nor an arc of --layers {layers} "
                              f"({error}); give the best_arc.json or best_arc.txt of `fnnjax "
                              "enas`, any file holding an arc string, or the arc itself (e.g. "
                              "--arc '0 0 0 2 0 0' for 3 layers)") from None  # fmt: skip
        text, recorded, where = str(path), None, path
    else:
        text, recorded, where = path.read_text(), None, path
    if path.suffix == ".json":
        try:
            saved = json.loads(text)
            text, recorded = saved["arc"], saved.get("skips")
            if not isinstance(text, str):
                raise TypeError("arc")
        except (ValueError, KeyError, TypeError):
            raise ConfigError(f"--arc {path}: expected the best_arc.json of `fnnjax enas` (an "
                              "object with 'arc' and 'skips')") from None  # fmt: skip
    try:
        arc = enas.arc_from_string(text, layers)
    except ValueError as error:
        raise ConfigError(f"--arc {path}: {error} (is --layers {layers} the arc's?)") from None
    beside = path.with_name("best_arc.json")
    if recorded is None and path.is_file() and path.suffix != ".json" and beside.is_file():
        try:
            saved = json.loads(beside.read_text())
            if enas.arc_from_string(saved["arc"], layers).tolist() == arc.tolist():
                recorded, where = saved.get("skips"), beside
        except (ValueError, KeyError, TypeError):
            pass  # not ours, or another arc: nothing recorded for this one
    if recorded is not None and skips is not None and recorded != skips:
        raise ConfigError(f"--skips: {skips}, but {where} records the arc's convention as "
                          f"{recorded}; drop --skips (or pass --skips {recorded})")  # fmt: skip
    convention = skips or recorded
    if convention is None:
        has_skips = any(v for k, off in enumerate(k + k * (k - 1) // 2 for k in range(layers))
                        for v in arc[off + 1 : off + 1 + k])  # fmt: skip
        if has_skips:
            raise ConfigError(f"--skips: the skip convention of the arc in {path} is not recorded "
                              "(no best_arc.json beside it); pass --skips released for an arc "
                              "found by the released ENAS code, or --skips paper for one of "
                              "`fnnjax enas` (its default)")  # fmt: skip
        convention = "paper"  # no skip on: both conventions wire it alike
    return arc, convention


def run(args: argparse.Namespace) -> int:
    from fnnjax.construct import enas, nhn  # noqa: PLC0415
    from fnnjax.train import load_dataset  # noqa: PLC0415

    resolve(args, RUN_DEFAULTS, QUICK_RUN)
    require_validation(args, "NHN's LDS scores add-ons")
    config = nhn_config(args)
    arc, skips = None, args.skips or "paper"
    if not args.search:  # checked before any data is loaded
        arc, skips = read_arc(args.arc, config.layers, args.skips)
    config = dataclasses.replace(config, skips=skips)
    data = load_dataset(args.dataset, validation_fraction=args.validation, seed=args.seed,
                        limit_train=args.limit_train)  # fmt: skip
    if args.search:
        found = enas.search(data, search_config(args, config, data), args.out / "enas",
                            seed=args.seed, resume=not args.no_resume,
                            num_devices=args.devices)  # fmt: skip
        arc = found["best_arc"]
    out = nhn.run_nhn(data, arc, config, args.out, seed=args.seed, resume=not args.no_resume,
                      progress=True, num_devices=args.devices)  # fmt: skip
    final, abl = out["final"], out["ablation"]
    acc = final["test_accuracy"]
    say(f"NHN on {args.dataset}: test accuracy {acc:.2%} with {final['params']:,} parameters "
          f"(score {final['score']:.3f}); without the add-on neurons "
          f"{abl['test_accuracy_without_addons']:.2%}; results in {args.out / 'results.json'}")  # fmt: skip
    say(f"retrain the found network: fnnjax train --spec {args.out / 'nhn_spec.json'} --masks "
          f"{args.out / 'nhn_masks.npz'} --dataset {args.dataset}")  # fmt: skip
    return 0


__all__ = ["add_parser", "nhn_config", "read_arc", "run", "search_config"]
