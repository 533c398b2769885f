"""EnvelopeNets beyond the paper: does weight inheritance let construction read its statistics
in fewer epochs?

The paper trains every iteration's network from scratch for ``f`` epochs before reading the
featuremap statistics that decide what is pruned. With ``--inherit``
(:func:`fnnjax.construct.envelope.inherited_variables`) an iteration starts from the previous
one's trained weights instead (surviving blocks keep theirs, the appended cell starts fresh).
This experiment measures whether that reaches the same restructuring decision sooner.

Per construction seed:

1. Iteration 0 (the EnvelopeNet ``--init``, ``--first-epochs`` of statistics, restructured) as
   :func:`fnnjax.construct.envelope.construct` does it; reused from the Table 1 experiment's run
   folder (``--reuse``) when that holds the same construction (its recorded CPU size).
2. Iteration 1's network (the restructured one) trained three times for ``--epochs`` with the
   running statistics recorded every ``--every`` steps: from scratch (the paper), inheriting
   iteration 0's weights (the same training seed: the same batches and augmentation), and, as
   the reference, from scratch with another training seed (another initialization and batch
   order): what the paper's procedure decides after all ``--epochs``, independent of both runs
   compared with it.
3. At every record, the decision the statistics would give (:func:`restructure_layers`: the set
   of pruned blocks) is compared with the reference's final decision (Jaccard index of the
   pruned sets) and with the run's own final decision (when it stops changing), and the
   statistics with the reference's final ones (Spearman rank correlation within each stage,
   averaged over stages). The scratch run's agreement with the reference measures how much two
   runs of the paper's procedure agree at all. Also reported: how many of each run's pruned
   blocks belong to the cell appended in iteration 0 (which starts fresh when inheriting while
   the other blocks start trained).

The claim tested: inheritance reaches the paper's decision (the reference's) in fewer steps than
training from scratch. Writes ``results.json``, ``table.md`` and ``agreement.png`` under ``--out``; the runs
resume from ``--out/runs/``::

    python experiments/envelopenets_inherit.py --epochs 4 --seeds 0 1 2 3 4   # REPRODUCTION.md's run
    python experiments/envelopenets_inherit.py --quick           # seconds, for CI
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from experiments.common import (  # noqa: E402
    add_devices_arg,
    mean_std,
    quick_devices,
    save_figure,
    spearman,
    write_results,
)
from fnnjax.arch import from_dict  # noqa: E402
from fnnjax.construct import envelope as ev  # noqa: E402
from fnnjax.train import load_dataset  # noqa: E402

VARIANTS = ("scratch", "inherit")  # compared with REFERENCE
REFERENCE = "reference"
REFERENCE_SEED = 1000  # the reference run trains with construction seed + this


def jaccard(a: set[str], b: set[str]) -> float:
    """``|a & b| / |a | b|`` (1 for two empty sets)."""
    return len(a & b) / len(a | b) if a | b else 1.0


def stage_spearman(stats: dict[str, float], reference: dict[str, float]) -> float:
    """The mean over stages of the rank correlation of one stage's block statistics (stages
    whose statistics are constant on either side, where it is undefined, left out; NaN if all)."""
    stages = sorted({key.split("/")[0] for key in reference})
    values = []
    for s in stages:
        keys = sorted(k for k in reference if k.startswith(s + "/"))
        values.append(spearman([stats[k] for k in keys], [reference[k] for k in keys]))
    values = [v for v in values if v == v]
    return statistics.fmean(values) if values else float("nan")


def _base(data, config: ev.ConstructionConfig, out: Path, reuse: Path | None, seed: int, devices):
    """Iteration 0 of the construction with ``seed``: copied from ``reuse`` (a construction
    folder of the Table 1 experiment) when that holds the same construction, else run here."""
    if reuse is not None and not (out / "construction.json").exists():
        saved = reuse / "construction.json"
        if saved.exists() and (reuse / "iterations" / "0" / "summary.json").exists():
            meta = json.loads(saved.read_text())
            ignore = ("iterations", "final_epochs", "statistics_every", "stats_at")
            mine = {k: v for k, v in config.to_dict().items() if k not in ignore}
            theirs = {k: v for k, v in meta["config"].items() if k not in ignore}
            differ = [k for k in mine if mine[k] != theirs.get(k)]
            differ += [k for k in ("seed", "dataset")
                       if meta.get(k) != {"seed": seed, "dataset": data.describe()}[k]]  # fmt: skip
            if not differ and meta.get("records"):
                tmp = out / "iterations" / "0.copying"
                shutil.rmtree(tmp, ignore_errors=True)
                shutil.copytree(reuse / "iterations" / "0", tmp)
                os.replace(tmp, out / "iterations" / "0")
                meta["records"] = meta["records"][:1]
                (out / "construction.json").write_text(json.dumps(meta, indent=1))  # last
                print(f"  iteration 0 reused from {reuse}", flush=True)
            else:
                print(f"  not reusing {reuse}: it differs in {', '.join(differ) or 'records'}",
                      flush=True)  # fmt: skip
    return ev.construct(data, dataclasses.replace(config, iterations=1), out, seed=seed,
                        num_devices=devices, log=lambda s: print("  " + s, flush=True))  # fmt: skip


def _decisions(running, layers, config: ev.ConstructionConfig) -> list[set[str]]:
    return [set(ev.restructure_layers(layers, r["statistics"], config.envelope,
                                      config.restructure).pruned)
            for r in running]  # fmt: skip


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--init", default="16/4-1-1/6", help="the EnvelopeNet C/n1-n2-.../M")
    p.add_argument("--stem-stride", type=int, default=2, choices=(1, 2))
    p.add_argument("--limit-train", type=int, default=5000, help="0: the whole training split")
    p.add_argument("--first-epochs", type=int, default=1, help="iteration 0's statistics epochs")
    p.add_argument("--epochs", type=int, default=4,
                   help="iteration 1's training, all three runs (the reference run's end is the "
                   "reference decision)")  # fmt: skip
    p.add_argument("--every", type=int, default=10, help="steps between statistics records")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4],
                   help="construction seeds")  # fmt: skip
    p.add_argument("--reuse", type=Path, default=Path("experiments/out/envelopenets/runs"),
                   help="the Table 1 experiment's runs (its construct-seed<s>/ iteration 0 is "
                   "reused when it is the same construction)")  # fmt: skip
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", type=Path, default=Path("experiments/out/envelopenets_inherit"))
    add_devices_arg(p)
    args = p.parse_args(argv)
    cell = ev.CELL_OPS
    if args.quick:
        quick_devices(args)
        args.dataset, args.limit_train, args.init, cell = "digits", 200, "6/2-1/2", ("1x1", "3x3")
        args.first_epochs, args.epochs, args.every, args.seeds = 1, 2, 2, [0]
    config = ev.ConstructionConfig.from_notation(
        args.init, envelope=ev.EnvelopeConfig(cell=cell, stem_stride=args.stem_stride),
        restructure=ev.RestructureConfig(max_layers=ev.default_max_layers(
            ev.parse_notation(args.init)[1])),
        iterations=1, epochs_per_iteration=args.first_epochs, augment=not args.no_augment)  # fmt: skip
    study = dataclasses.replace(config, epochs_per_iteration=args.epochs,
                                statistics_every=args.every)  # fmt: skip
    data = load_dataset(args.dataset, limit_train=args.limit_train or None)
    steps_per_epoch = len(data.train) // config.batch_size
    runs = args.out / "runs"

    per_seed = []
    for seed in args.seeds:
        print(f"== seed {seed}: iteration 0", flush=True)
        reuse = None if args.reuse is None else args.reuse / f"construct-seed{seed}"
        base = _base(data, config, runs / f"base-seed{seed}", reuse, seed, args.devices)
        record0 = base["records"][0]
        layers = base["layers"]
        spec = ev.envelope_spec(layers, config.envelope, data.input_shape, data.num_classes)
        added = {f"s{a['stage']}/l{a['layer']}/" for a in record0["added"] if a is not None}
        old_spec = from_dict(record0["spec"])
        state = ev.restore_iteration(runs / f"base-seed{seed}", 0, config)
        done = ev.restructure_layers(ev.envelope_layers(old_spec, config.envelope),
                                     record0["statistics"], config.envelope, config.restructure)  # fmt: skip
        if done.layers != layers:
            raise RuntimeError(f"seed {seed}: iteration 0's record does not restructure into its "
                               "next layers")  # fmt: skip
        runs_ = {}
        for variant in (*VARIANTS, REFERENCE):
            print(f"== seed {seed}: iteration 1 ({record0['next_notation']}), {variant}", flush=True)
            initial = None
            if variant == "inherit":
                initial = ev.inherited_variables(old_spec, state.variables(), done, spec, study,
                                                 jax.random.key(seed * 1000 + 1))  # fmt: skip
            result, _, running = ev.train_iteration(
                data, layers, study, seed=seed + (REFERENCE_SEED if variant == REFERENCE else 0),
                iteration=1, run_dir=runs / f"{variant}-seed{seed}", initial_variables=initial,
                num_devices=args.devices)  # fmt: skip
            runs_[variant] = {"running": running, "history": result.history}
        reference_stats = runs_[REFERENCE]["running"][-1]["statistics"]
        reference = _decisions([runs_[REFERENCE]["running"][-1]], layers, study)[0]
        row = {"seed": seed, "notation": record0["next_notation"], "pruned_count": len(reference),
               "reference_pruned": sorted(reference)}  # fmt: skip
        for variant, run in runs_.items():
            decisions = _decisions(run["running"], layers, study)
            row[variant] = {
                "steps": [r["step"] for r in run["running"]],
                "jaccard": [jaccard(d, reference) for d in decisions],
                "own_final_jaccard": [jaccard(d, decisions[-1]) for d in decisions],
                "spearman": [stage_spearman(r["statistics"], reference_stats) for r in run["running"]],
                "final_pruned": sorted(decisions[-1]),
                "pruned_from_added_cell": sum(any(k.startswith(a) for a in added)
                                              for k in decisions[-1]),  # fmt: skip
                "train_accuracy": [h.get("train_accuracy") for h in run["history"]],
            }  # fmt: skip
        row["scratch_vs_inherit_final"] = jaccard(set(row["scratch"]["final_pruned"]),
                                                  set(row["inherit"]["final_pruned"]))  # fmt: skip
        per_seed.append(row)

    marks = sorted({s for s in (args.every, steps_per_epoch // 4, steps_per_epoch // 2,
                                steps_per_epoch, 3 * steps_per_epoch // 2,
                                2 * steps_per_epoch, 3 * steps_per_epoch,
                                args.epochs * steps_per_epoch)
                    if args.every <= s <= args.epochs * steps_per_epoch
                    and s % args.every == 0})  # fmt: skip

    def values_at(variant: str, key: str, step: int) -> list[float]:
        return [row[variant][key][row[variant]["steps"].index(step)] for row in per_seed
                if step in row[variant]["steps"]]  # fmt: skip

    def at(variant: str, key: str, step: int) -> str:
        values = values_at(variant, key, step)
        return "{:.2f} ± {:.2f}".format(*mean_std(values)) if values else "n/a"

    # steps every run recorded (a rerun with another --every reuses the finished runs' records)
    marks = [m for m in marks if all(values_at(v, "jaccard", m) for v in VARIANTS)]

    lines = [
        f"{args.dataset} ({args.limit_train or 'all'} training images, {steps_per_epoch} steps "
        f"per epoch), {config.notation} with a stride-{args.stem_stride} stem; iteration 0: "
        f"{args.first_epochs} epoch(s) of statistics; iteration 1 trained {args.epochs} epochs "
        f"three ways; construction seeds {args.seeds}. Reference: the decision of an independent "
        f"scratch run (training seed + {REFERENCE_SEED}) after {args.epochs} epochs. Jaccard: of "
        f"the pruned sets; own: with the run's own final decision; rank corr.: of the "
        f"statistics with the reference's final ones. Mean ± std over seeds.",
        "",
        "| steps (epochs) | scratch: Jaccard, reference | inherit: Jaccard, reference | scratch: "
        "Jaccard, own | inherit: Jaccard, own | scratch: rank corr. | inherit: rank corr. |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for step in marks:
        cells = [at(v, key, step) for key in ("jaccard", "own_final_jaccard") for v in VARIANTS]
        cells += [at(v, "spearman", step) for v in VARIANTS]
        lines.append(f"| {step} ({step / steps_per_epoch:.2f}) | " + " | ".join(cells) + " |")
    lines += ["", "| seed | iteration 1 | pruned | from the appended cell: reference / scratch / "
              "inherit | final decisions, Jaccard: scratch-reference / inherit-reference / "
              "scratch-inherit |", "|---:|---|---:|---|---|"]  # fmt: skip
    for row in per_seed:
        lines.append(f"| {row['seed']} | {row['notation']} | {row['pruned_count']} | "
                     f"{row[REFERENCE]['pruned_from_added_cell']} / "
                     f"{row['scratch']['pruned_from_added_cell']} / "
                     f"{row['inherit']['pruned_from_added_cell']} | "
                     f"{row['scratch']['jaccard'][-1]:.2f} / {row['inherit']['jaccard'][-1]:.2f} / "
                     f"{row['scratch_vs_inherit_final']:.2f} |")  # fmt: skip
    table = "\n".join(lines)
    print("\n" + table)
    _plot(per_seed, steps_per_epoch, args.out / "agreement.png")
    (args.out / "table.md").write_text(table + "\n")
    payload = {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
               "construction": study.to_dict(), "steps_per_epoch": steps_per_epoch,
               "seeds": per_seed, "table": table}  # fmt: skip
    write_results(args.out, payload)
    return payload


def _plot(per_seed, steps_per_epoch: int, path: Path) -> None:
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key, label in ((axes[0], "jaccard", "pruned set: Jaccard with the reference"),
                           (axes[1], "spearman", "statistics: rank correlation with the reference")):  # fmt: skip
        for variant, color in zip(VARIANTS, ("tab:gray", "tab:blue"), strict=True):
            length = min(len(row[variant][key]) for row in per_seed)
            values = np.array([row[variant][key][:length] for row in per_seed])
            epochs = np.array(per_seed[0][variant]["steps"][:length]) / steps_per_epoch
            mean = values.mean(0)
            std = values.std(0, ddof=1) if len(values) > 1 else np.zeros(length)
            ax.plot(epochs, mean, "-", color=color, label=f"{variant} ({len(values)} seeds)")
            ax.fill_between(epochs, mean - std, mean + std, color=color, alpha=0.2)
        ax.set(xlabel="epochs of iteration 1", ylabel=label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("EnvelopeNet construction, iteration 1: from scratch vs inherited weights",
                 fontsize=10)  # fmt: skip
    save_figure(fig, path)


if __name__ == "__main__":
    main()
