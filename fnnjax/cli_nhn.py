"""``fnnjax nhn``: the Neuron Hierarchical Networks pipeline (kept apart from :mod:`fnnjax.cli` so
that module stays short; nothing here imports JAX until the command runs)."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from fnnjax.checks import positive_int_arg

QUICK = ("tiny sizes that show the method in about 75 s on 2 cores (digits, 3 layers of 4 filters, 2 "
         "epochs per training, DNP of half the kernels, LDS 2 + 1 cycles of 4 individuals; "
         "NhnConfig.quick)")  # fmt: skip


def add_parser(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
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
        "--filters 16 --epochs 10 --lds-cycles 20 10 --out runs/nhn\n"
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
    nhn.add_argument("--dataset", default="fashion_mnist",
                     help="dataset name (see `fnnjax datasets`); default fashion_mnist")  # fmt: skip
    nhn.add_argument("--layers", type=positive_int_arg, default=12, help="L; default 12")
    nhn.add_argument("--filters", type=positive_int_arg, default=96,
                     help="first segment's width (doubled at each reduction; ENAS's retraining "
                     "width); default 96")  # fmt: skip
    nhn.add_argument("--search-filters", type=positive_int_arg, default=36,
                     help="--search: the supernet's width (ENAS: 36); default 36")  # fmt: skip
    nhn.add_argument("--epochs", type=positive_int_arg, nargs="+", default=None, metavar="E",
                     help="epochs of the base, pruned and final trainings (one value for all); "
                     "default 310 160 260")  # fmt: skip
    nhn.add_argument("--prune-ratio", type=float, default=0.85,
                     help="share of the 3x3/5x5 kernels DNP removes; default 0.85")  # fmt: skip
    nhn.add_argument("--prune-scope", choices=("global", "layer"), default="global",
                     help="DNP's std threshold: one quantile over all kernels (global, default) or "
                     "one per layer (each loses --prune-ratio of its kernels)")  # fmt: skip
    nhn.add_argument("--keep-stem", action="store_true",
                     help="DNP leaves the stem's 3x3 kernels (RGB inputs) whole")  # fmt: skip
    nhn.add_argument("--retrain", choices=("inherit", "scratch"), default="inherit",
                     help="the pruned network goes on from its weights (default) or restarts")  # fmt: skip
    nhn.add_argument("--neurons", type=positive_int_arg, default=8,
                     help="add-on neurons per location; default 8")  # fmt: skip
    nhn.add_argument("--lds-cycles", type=int, nargs=2, default=(300, 300), metavar=("LOC", "DIR"),
                     help="location and direction search cycles; default 300 300")  # fmt: skip
    nhn.add_argument("--population", type=positive_int_arg, default=20, help="K; default 20")
    nhn.add_argument("--fresh", choices=("random", "mutate"), default="random",
                     help="ranks 16-20: new random individuals (the paper's text, default) or "
                     "mutants of ranks 1-5 (Algorithm 1)")  # fmt: skip
    nhn.add_argument("--batch-size", type=positive_int_arg, default=100, help="default 100")
    nhn.add_argument("--validation", type=float, default=0.1,
                     help="share of the training split held out for LDS; default 0.1")  # fmt: skip
    nhn.add_argument("--limit-train", type=positive_int_arg, help="use only this many examples")
    nhn.add_argument("--seed", type=int, default=0, help="default 0")
    nhn.add_argument("--no-resume", action="store_true",
                     help="start afresh (earlier files move to OUT/previous-<time>/)")  # fmt: skip
    nhn.add_argument("--quick", action="store_true", help=QUICK)
    nhn.add_argument("--out", type=Path, required=True, help="output folder")


def config_of(args: argparse.Namespace):
    """``(NhnConfig, dataset, limit_train)`` of an ``nhn`` command line."""
    from fnnjax.construct import nhn  # noqa: PLC0415
    from fnnjax.errors import ConfigError  # noqa: PLC0415

    if not 0.0 < args.validation < 1.0:
        raise ConfigError(f"--validation: expected a share in (0, 1), got {args.validation}")
    if not 0.0 <= args.prune_ratio < 1.0:
        raise ConfigError(f"--prune-ratio: expected a share in [0, 1), got {args.prune_ratio}")
    epochs = args.epochs or [310, 160, 260]
    if len(epochs) not in (1, 3):
        raise ConfigError(f"--epochs: expected one value or three (base pruned final), got {epochs}")
    base, pruned, final = epochs * 3 if len(epochs) == 1 else epochs
    loc, dirs = args.lds_cycles
    if loc < 1 or dirs < 0:
        raise ConfigError(f"--lds-cycles: expected LOC >= 1 and DIR >= 0, got {loc} {dirs}")
    k = args.population
    if k < 15:
        raise ConfigError(f"--population: expected >= 15 (ranks 1-10 stay, 11-15 are the "
                          f"children of the best 4, the rest are new), got {k}")  # fmt: skip
    lds = nhn.LdsConfig(neurons=args.neurons, location=nhn.LocationConfig(population=k, fresh=args.fresh),
                        direction=nhn.DirectionConfig(population=k), location_cycles=loc,
                        direction_cycles=dirs)  # fmt: skip
    config = nhn.NhnConfig(layers=args.layers, filters=args.filters, batch_size=args.batch_size,
                           base_epochs=base, prune_epochs=pruned, final_epochs=final,
                           prune_ratio=args.prune_ratio, retrain=args.retrain, lds=lds,
                           prune_scope=args.prune_scope, prune_stem=not args.keep_stem)  # fmt: skip
    dataset, limit = args.dataset, args.limit_train
    if args.quick:
        dataset = "digits"  # all of it: compiles, not examples, take a quick run's time
        config = dataclasses.replace(nhn.NhnConfig.quick(), prune_scope=args.prune_scope,
                                     prune_stem=not args.keep_stem)  # fmt: skip
    return config, dataset, limit


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

    config, dataset, limit = config_of(args)
    arc, skips = None, args.skips or "paper"
    if not args.search:  # checked before any data is loaded
        arc, skips = read_arc(args.arc, config.layers, args.skips)
    config = dataclasses.replace(config, skips=skips)
    data = load_dataset(dataset, validation_fraction=args.validation, seed=args.seed, limit_train=limit)
    if args.search:
        # ENAS's own settings (its search width, batch 128); no SmoothInit there: SmoothInit is
        # applied to the network DNP later prunes, which trains from its own initialization.
        # NHN section 2.1 searches with Cutout (the pipeline's side: half the image's).
        cut = config.cutout if config.cutout is not None else min(data.input_shape[:2]) // 2
        search = enas.SearchConfig(layers=config.layers, filters=args.search_filters,
                                   epochs=config.base_epochs, head_pool=config.head_pool,
                                   skips=config.skips, cutout=cut)  # fmt: skip
        if args.quick:  # ENAS's quick search (SearchConfig.quick) at the pipeline's depth
            search = dataclasses.replace(search, **{**enas.QUICK_SEARCH, "layers": config.layers})
        found = enas.search(data, search, args.out / "enas", seed=args.seed, resume=not args.no_resume)
        arc = found["best_arc"]
    out = nhn.run_nhn(data, arc, config, args.out, seed=args.seed, resume=not args.no_resume)
    final, abl = out["final"], out["ablation"]
    acc = final["test_accuracy"]
    print(f"NHN on {dataset}: test accuracy {acc:.2%} with {final['params']:,} parameters "
          f"(score {final['score']:.3f}); without the add-on neurons "
          f"{abl['test_accuracy_without_addons']:.2%}; results in {args.out / 'results.json'}")  # fmt: skip
    print(f"retrain the found network: fnnjax train --spec {args.out / 'nhn_spec.json'} --masks "
          f"{args.out / 'nhn_masks.npz'} --dataset {dataset}")  # fmt: skip
    return 0
