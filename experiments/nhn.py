"""Neuron Hierarchical Networks (Algorithm 2) at a CPU size, and the comparisons of its Table 1.

1. The pipeline (:func:`fnnjax.construct.nhn.run_nhn`) from a macro arc of our ENAS experiment
   (``experiments/out/enas``): SmoothInit + training, DNP + clean-up, retraining, LDS, the final
   network trained from scratch; its ablation (add-ons off) and the paper's score.
2. Four networks trained from scratch with the final recipe (Nesterov, L2 2e-4, clipping 5,
   Cutout, dropout) and every seed: the base net, the pruned net (DNP masks kept), the pruned net
   with the add-on neurons LDS found, and the pruned net with as many add-on locations drawn at
   random (random directions of the same density). Test accuracy mean +- std, effective
   parameters, score ``sqrt((e/2)^2 + (n/25)^2)``.

The default arc is the best arc of our random search (``experiments/out/enas/random``): the ENAS
arc of that CPU-sized search has one plain conv among its six layers, and DNP prunes plain 3x3
and 5x5 convs only (the paper chose ENAS's macro space over its micro one for this reason).

CIFAR-10 needs tfds with a network; the paper-scale command (a GPU):

    python experiments/nhn.py --dataset cifar10 --arc runs/enas-c10/best_arc.txt --layers 12 \\
        --filters 36 --epochs 310 160 260 --lds-cycles 300 300 --limit-train 0
    python experiments/nhn.py            # the CPU size REPRODUCTION.md records
    python experiments/nhn.py --quick    # a few minutes on 2 cores, for CI

Writes ``results.json`` and ``table1.md`` under ``--out``; the pipeline keeps its folder
(``pipeline/``) and every comparison run its own (``runs/``), so an interrupted experiment resumes.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import jax.numpy as jnp
import numpy as np

from experiments.common import add_devices_arg, fmt_pct, mean_std, quick_devices, write_results
from fnnjax.arch import build_model, to_dict
from fnnjax.construct import nhn
from fnnjax.train import fit, load_dataset

DEFAULT_ARC = Path("experiments/out/enas/random/best_arc.txt")
PAPER = {"ENAS macro": (21.3, 4.23), "NHN": (7.0, 3.72), "NHN + c/o": (7.0, 3.48)}


def random_addons(key, found: dict, count: int, neurons: int, density: float):
    """``(genes, directions)``: ``count`` add-on locations drawn uniformly among all (layer,
    kernel) slots, each with a uniform valid input, and random directions of ``density``."""
    space = found["space"]
    low, high = space.bounds()
    k_slot, k_in, k_dir = jax.random.split(key, 3)
    slots = np.asarray(jax.random.permutation(k_slot, space.size))[:count]
    genes = np.full(space.size, -1, np.int32)
    draws = np.asarray(jax.random.uniform(k_in, (count,)))
    for s, u in zip(slots, draws, strict=True):
        genes[s] = low[s] + min(int(u * (high[s] - low[s] + 1)), high[s] - low[s])
    edges = {}
    for loc in nhn.gene_locations(genes, space):
        cin = found["lds_variables"]["arch"][loc["edge"]]["connections"].shape[0]
        edges[loc["edge"]] = (loc["source"], cin)
    eligible = nhn.eligible_channels(found["pruned_spec"], found["pruned_variables"], edges)
    dirs = nhn.random_directions(k_dir, eligible, neurons, 1, density=density)
    return genes, {e: np.asarray(v[0]) for e, v in dirs.items()}


def main(argv=None, log=print) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--arc", type=Path, default=DEFAULT_ARC)
    p.add_argument("--skips", choices=("paper", "released"), default=None,
                   help="the arc's skip convention (default: its best_arc.json's, as fnnjax nhn)")
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--filters", type=int, default=16)
    p.add_argument("--epochs", type=int, nargs=3, default=[6, 3, 6], metavar=("BASE", "PRUNED", "FINAL"))
    p.add_argument("--prune-ratio", type=float, default=0.85)
    p.add_argument("--neurons", type=int, default=4, help="add-on neurons per location")
    p.add_argument("--lds-cycles", type=int, nargs=2, default=[20, 10], metavar=("LOC", "DIR"))
    p.add_argument("--train-batches", type=int, default=3, help="LDS: M batches per individual")
    p.add_argument("--score-batch", type=int, default=200,
                   help="LDS: validation images scoring each individual (paper: 500)")  # fmt: skip
    p.add_argument("--limit-train", type=int, default=5000, help="0: the whole training split")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--compare-epochs", type=int, default=None,
                   help="epochs of the four comparison trainings (default: the final training's)")  # fmt: skip
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", type=Path, default=Path("experiments/out/nhn"))
    add_devices_arg(p)
    args = p.parse_args(argv)
    lds = nhn.LdsConfig(neurons=args.neurons, location_cycles=args.lds_cycles[0],
                        direction_cycles=args.lds_cycles[1], train_batches=args.train_batches,
                        score_batch=args.score_batch)  # fmt: skip
    config = nhn.NhnConfig(layers=args.layers, filters=args.filters, batch_size=100, base_epochs=args.epochs[0],
                           prune_epochs=args.epochs[1], final_epochs=args.epochs[2],
                           prune_ratio=args.prune_ratio, lds=lds)  # fmt: skip
    arc_text = None
    if args.arc.is_file() and not args.quick:
        from fnnjax.cli.nhn import read_arc  # noqa: PLC0415
        from fnnjax.errors import ConfigError  # noqa: PLC0415

        try:  # the arc and its skip convention, read as `fnnjax nhn --arc` reads them
            arc, skips = read_arc(args.arc, args.layers, args.skips)
        except ConfigError as error:
            raise SystemExit(str(error)) from None
        arc_text = " ".join(str(int(a)) for a in arc)
        config = dataclasses.replace(config, skips=skips)
    if args.quick:
        quick_devices(args)
        args.dataset, args.limit_train, args.seeds = "digits", None, [0]  # as `fnnjax nhn --quick`
        config = nhn.NhnConfig.quick()  # the settings of `fnnjax nhn --quick`
        arc_text = "0 2 1 0 0 1"
    if arc_text is None:
        raise SystemExit(f"--arc: {args.arc} does not exist; run experiments/enas_search.py first "
                         "or give an arc file")  # fmt: skip
    data = load_dataset(args.dataset, validation_fraction=0.1, seed=0,
                        limit_train=args.limit_train or None)  # fmt: skip
    found = nhn.run_nhn(data, arc_text, config, args.out / "pipeline", seed=0, log=log)

    # The four networks of the comparison, all trained from scratch with the final recipe.
    count = len(found["lds"]["locations"])
    genes, dirs = random_addons(jax.random.key(1234), found, count, config.lds.neurons,
                                config.lds.direction.density)  # fmt: skip
    rand_spec, rand_kept = nhn.with_addons(found["supernet"], found["space"], found["lds_variables"],
                                           genes, dirs, head=found["head"])  # fmt: skip
    pruned_spec = found["pruned_spec"].replace(head=found["head"])
    nets = {
        "base": (found["base_spec"].replace(head=found["head"]), {}),
        "pruned": (pruned_spec, {"masks": found["pruned_variables"]["masks"]}),
        "pruned + LDS add-ons": (found["spec"], {k: found["variables"][k] for k in ("masks", "arch")}),
        "pruned + random add-ons": (rand_spec, rand_kept),
    }
    train_config = dataclasses.replace(
        nhn.stage_train_config(config, "final", 0, data), num_devices=args.devices,
        epochs=args.compare_epochs or config.final_epochs)  # fmt: skip
    rows = {}
    for name, (spec, kept) in nets.items():
        runs = []
        for seed in args.seeds:
            model = build_model(spec, use_masks=True)
            fresh = model.init(jax.random.key(seed), jnp.zeros((1, *data.input_shape)))
            run_dir = args.out / "runs" / f"{name.replace(' ', '').replace('+', '_')}-seed{seed}"
            print(f"== {name}, seed {seed} -> {run_dir}", flush=True)
            result = fit(model, data, dataclasses.replace(train_config, seed=seed), out_dir=run_dir,
                         description={"nhn_comparison": name, "spec": to_dict(spec)},
                         initial_variables={**fresh, **kept})  # fmt: skip
            runs.append(result.summary["final_test_accuracy"])
        params = nhn.effective_params(spec, {**fresh, **kept})
        err = 100 * (1 - mean_std(runs)[0])
        rows[name] = {"params": params, "test_accuracy": runs,
                      "score": nhn.nhn_score(err, params / 1e6)}  # fmt: skip
    header = (f"{args.dataset} ({args.limit_train or 'all'} training images), arc "
              f"{found['arc']}, {config.layers} layers x {config.filters}, epochs "
              f"{config.base_epochs}/{config.prune_epochs}/{config.final_epochs} (comparisons "
              f"{train_config.epochs}), LDS "
              f"{config.lds.location_cycles}+{config.lds.direction_cycles} cycles, seeds {args.seeds}")  # fmt: skip
    lines = [header, "", "| network | effective params | test acc % | score |", "|---|---:|---:|---:|"]
    for name, row in rows.items():
        lines.append(f"| {name} | {row['params']:,} | {fmt_pct(row['test_accuracy'])} | {row['score']:.3f} |")
    abl = found["ablation"]
    lines += ["", f"Pipeline (seed 0): final {100 * found['final']['test_accuracy']:.2f}%, with the "
              f"add-on edges off {100 * abl['test_accuracy_without_addons']:.2f}% (drop "
              f"{100 * abl['drop']:.2f} points); DNP pruned {100 * found['prune']['kernels']:.1f}% of "
              f"the 3x3/5x5 kernels, {100 * found['prune']['params_all']:.1f}% of all parameters; "
              f"LDS chose {count} locations: {found['lds']['locations']}",
              "", "Paper (CIFAR-10): " + "; ".join(f"{k} {n} M params, {e}% error"
                                               for k, (n, e) in PAPER.items())]  # fmt: skip
    table = "\n".join(lines)
    print("\n" + table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table1.md").write_text(table + "\n")
    payload = {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
               "nhn": config.to_dict(), "pipeline": {k: found[k] for k in
               ("arc", "base", "pruned", "final", "prune", "lds", "ablation")},
               "random_addons": {"genes": genes.tolist()}, "rows": rows}  # fmt: skip
    write_results(args.out, payload)
    return payload


if __name__ == "__main__":
    main()
