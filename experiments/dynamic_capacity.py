"""Dynamic network capacity: the thesis draft's experiments (sections 4.2, 4.3, 4.3.1), which the
draft leaves as headings; our reading of them.

1. **Function regression** (4.2): sum-of-sines targets of rising complexity ``C`` (``--complexities``,
   1-D and 2-D, :func:`fnnjax.construct.capacity.sines_dataset`), every ``(dim, C)`` with every
   ``--seeds`` seed, each starting from the same small residual MLP. The question: does the
   grown capacity track the target's complexity? Reported: the Spearman rank correlation between
   final size (parameters) and ``C`` across all runs of a dimension.
2. **A Fashion-MNIST classifier** (4.3; the draft says MNIST, which needs a network here): a
   residual MLP on flattened images, every ``--seeds`` seed (4.3.1: the distribution of final
   sizes and accuracies over the repeated runs).
3. **Baselines**: for every dynamic run, a fixed network of the initial size and one of the
   dynamic run's final architecture (trained from scratch), each for the same number of steps.

    python experiments/dynamic_capacity.py                       # the size REPRODUCTION.md records
    python experiments/dynamic_capacity.py --quick               # seconds, for CI

Writes ``results.json``, ``regression.md``, ``classification.md``, ``regression.png``
(final size against complexity) and ``classification.png`` under ``--out``; every run keeps its
own folder under ``--out/runs/``, so an interrupted experiment resumes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from experiments.common import mean_std, save_figure, spearman, write_results  # noqa: E402
from fnnjax.arch import build_model, from_json  # noqa: E402
from fnnjax.construct import capacity as cp  # noqa: E402
from fnnjax.models import describe_spec  # noqa: E402
from fnnjax.train import TrainConfig, fit, load_dataset  # noqa: E402

OPS = ("widen", "insert", "narrow", "remove")


def _fixed(spec, data, train: TrainConfig, out: Path | None, objective: str) -> dict:
    result = fit(build_model(spec), data, train, out_dir=out, description=describe_spec(spec),
                 objective=objective)  # fmt: skip
    return result.summary


def _runs(name: str, spec, data, train: TrainConfig, config, out: Path, objective: str, metric: str,
          *, keep_fixed: bool = True):  # fmt: skip
    """One dynamic run and its two fixed baselines (initial and final architecture; in memory
    unless ``keep_fixed``)."""
    print(f"== {name} -> {out}", flush=True)
    dyn = cp.train_dynamic(spec, data, train, config, out / "dynamic", objective=objective, log=None)
    final_spec = from_json((out / "dynamic" / "final_spec.json").read_text())
    where = (lambda k: out / k) if keep_fixed else (lambda k: None)  # noqa: E731
    initial = _fixed(spec, data, train, where("fixed-initial"), objective)
    final = _fixed(final_spec, data, train, where("fixed-final"), objective)
    ops = [c["op"] for c in dyn["changes"]]
    return {"params_initial": dyn["params_initial"], "params_final": dyn["params_final"],
            "params_mean_last_half": _mean_last_half(dyn), "refused": sum(
                len(s.get("refused", [])) for s in dyn["saliency"]),
            "changes": {o: ops.count(o) for o in OPS},
            "steps": dyn["summary"]["steps"],
            "dynamic": dyn["summary"][f"final_test_{metric}"],
            "fixed_initial": initial[f"final_test_{metric}"],
            "fixed_final": final[f"final_test_{metric}"],
            "growth_max_rel_loss_change": max(
                [abs(c["loss_after"] - c["loss_before"]) / max(abs(c["loss_before"]), 1e-12)
                 for c in dyn["changes"] if c["op"] in ("widen", "insert")], default=0.0)}  # fmt: skip


def _mean_last_half(dyn) -> float:
    """The network's size averaged over the second half of the steps (churn-robust)."""
    end = dyn["summary"]["steps"]
    start, size, total = end / 2, dyn["params_initial"], 0.0
    points = [(c["step"], c["params_after"]) for c in dyn["changes"]] + [(end, None)]
    t = 0
    for step, after in points:
        lo, hi = max(t, start), max(step, start)
        total += size * (hi - lo)
        t = step
        size = after if after is not None else size
    return total / max(end - start, 1)


def _ms(values, scale=1.0, digits=4) -> str:
    m, s = mean_std([scale * v for v in values])
    return f"{m:.{digits}g} ± {s:.2g}"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--complexities", type=int, nargs="+", default=[1, 3, 9])
    parser.add_argument("--dims", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4],
                        help="classification seeds (4.3.1's repeated runs)")
    parser.add_argument("--regression-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--regression-epochs", type=int, default=60)
    parser.add_argument("--num-train", type=int, default=4096)
    parser.add_argument("--classification-epochs", type=int, default=15)
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--limit-train", type=int, default=None)
    parser.add_argument("--skip-classification", action="store_true")
    parser.add_argument("--tau", type=float, default=None,
                        help="the regression controller's plateau threshold (default: 0.01)")
    parser.add_argument("--loss-target", type=float, default=None,
                        help="no growth once the training loss is at or below this (regression)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds): CI")
    parser.add_argument("--out", type=Path, default=Path("experiments/out/dynamic_capacity"))
    args = parser.parse_args(argv)
    # The controller's defaults (window 5, tau 1%, +8 units, cool-down 3, warm-up 5, ...) but a
    # cap of 32 units per layer (64 for the classifier), so that depth grows within the run.
    config = cp.DynamicConfig(controller=cp.CapacityConfig(
        max_units=32, tau=0.01 if args.tau is None else args.tau, loss_target=args.loss_target))
    cls_config = cp.DynamicConfig(controller=cp.CapacityConfig(max_units=64))
    reg_width, reg_hidden, cls_width, cls_hidden = 16, 4, 64, 16
    if args.quick:
        args.complexities, args.dims, args.seeds, args.regression_seeds = [1, 3], [1], [0], [0]
        args.regression_epochs, args.num_train, args.classification_epochs = 3, 256, 2
        args.dataset, args.limit_train = "digits", 300
        controller = cp.CapacityConfig(window=1, warmup=2, tau=0.5, grow_units=2, max_units=6,
                                       cooldown=1)  # fmt: skip
        config = cp.DynamicConfig(controller=controller, hutchinson_samples=8,
                                  hutchinson_chunk=8, probe_size=64)  # fmt: skip
        cls_config = config
        reg_width, reg_hidden, cls_width, cls_hidden = 6, 3, 8, 4
    out = args.out
    regression = []
    for dim in args.dims:
        for c in args.complexities:
            for seed in args.regression_seeds:
                data = cp.sines_dataset(c, dim=dim, num_train=args.num_train,
                                        num_validation=args.num_train // 8, seed=seed)  # fmt: skip
                spec = cp.residual_mlp_spec(data.input_shape, 1, width=reg_width, hidden=reg_hidden)
                train = TrainConfig(epochs=args.regression_epochs, batch_size=64,
                                    learning_rate=3e-3, seed=seed, progress=False, num_devices=1,
                                    checkpoint_every_epochs=10)  # a change is saved at once anyway  # fmt: skip
                row = _runs(f"regression {dim}-D C={c} seed {seed}", spec, data, train, config,
                            out / "runs" / f"sines{dim}d-c{c}-seed{seed}", "regression", "loss",
                            keep_fixed=not args.quick)  # fmt: skip
                regression.append({"dim": dim, "complexity": c, "seed": seed, **row})
    correlation = {f"{dim}-D {key}": spearman([r["complexity"] for r in regression if r["dim"] == dim],
                                              [r[key] for r in regression if r["dim"] == dim])
                   for dim in args.dims for key in ("params_final", "params_mean_last_half")}  # fmt: skip

    classification = []
    if not args.skip_classification:
        data = cp.as_vectors(load_dataset(args.dataset, validation_fraction=0.1, seed=0,
                                          limit_train=args.limit_train))  # fmt: skip
        for seed in args.seeds:
            spec = cp.residual_mlp_spec(data.input_shape, data.num_classes, width=cls_width,
                                        hidden=cls_hidden)  # fmt: skip
            train = TrainConfig(epochs=args.classification_epochs, batch_size=128,
                                learning_rate=1e-3, seed=seed, progress=False, num_devices=1)  # fmt: skip
            row = _runs(f"{args.dataset} seed {seed}", spec, data, train, cls_config,
                        out / "runs" / f"{args.dataset}-seed{seed}", "classification", "accuracy",
                        keep_fixed=not args.quick)  # fmt: skip
            classification.append({"seed": seed, **row})

    payload = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
               "config": config.to_dict(), "classification_config": cls_config.to_dict(),
               "regression": regression,
               "spearman_final_params_vs_complexity": correlation,
               "classification": classification}  # fmt: skip
    write_results(out, payload)
    (out / "regression.md").write_text(_regression_table(regression, correlation))
    if classification:
        (out / "classification.md").write_text(_classification_table(classification, args.dataset))
    _plot(regression, classification, out)
    print(_regression_table(regression, correlation))
    if classification:
        print(_classification_table(classification, args.dataset))
    return payload


def _regression_table(rows, correlation) -> str:
    lines = ["| dim | C | seeds | params initial | params final | mean over 2nd half | changes "
             "(widen/insert/narrow/remove) | test MSE dynamic | fixed initial | fixed final |",
             "|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|"]  # fmt: skip
    for dim in sorted({r["dim"] for r in rows}):
        for c in sorted({r["complexity"] for r in rows}):
            g = [r for r in rows if r["dim"] == dim and r["complexity"] == c]
            ch = [statistics.fmean(r["changes"][o] for r in g) for o in OPS]
            lines.append(f"| {dim} | {c} | {len(g)} | {g[0]['params_initial']} | "
                         f"{_ms([r['params_final'] for r in g])} | "
                         f"{_ms([r['params_mean_last_half'] for r in g])} | "
                         f"{' / '.join(f'{v:.1f}' for v in ch)} | {_ms([r['dynamic'] for r in g])} | "
                         f"{_ms([r['fixed_initial'] for r in g])} | {_ms([r['fixed_final'] for r in g])} |")  # fmt: skip
    lines.append("")
    for name, rho in correlation.items():
        dim, key = name.split(" ")
        runs = sum(f"{r['dim']}-D" == dim for r in rows)
        lines.append(f"Spearman({key}, C), {dim}, over {runs} runs: {rho:.3f}")
    return "\n".join(lines) + "\n"


def _classification_table(rows, dataset) -> str:
    head = ("| dataset | seed | params initial | params final | changes (widen/insert/narrow/remove) | "
            "test acc dynamic | fixed initial | fixed final |\n|---|---:|---:|---:|---|---:|---:|---:|\n")  # fmt: skip
    body = "".join(
        f"| {dataset} | {r['seed']} | {r['params_initial']} | {r['params_final']} | "
        f"{' / '.join(str(r['changes'][o]) for o in OPS)} | "
        f"{100 * r['dynamic']:.2f} | {100 * r['fixed_initial']:.2f} | {100 * r['fixed_final']:.2f} |\n"
        for r in rows)  # fmt: skip
    summary = (f"| {dataset} | mean ± std | {rows[0]['params_initial']} | "
               f"{_ms([r['params_final'] for r in rows])} | | {_ms([r['dynamic'] for r in rows], 100)} | "
               f"{_ms([r['fixed_initial'] for r in rows], 100)} | {_ms([r['fixed_final'] for r in rows], 100)} |\n")  # fmt: skip
    return head + body + summary


def _plot(regression, classification, out: Path) -> None:
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for dim in sorted({r["dim"] for r in regression}):
        g = [r for r in regression if r["dim"] == dim]
        jitter = (dim - 1.5) * 0.08
        ax.scatter([r["complexity"] * (1 + jitter) for r in g], [r["params_final"] for r in g],
                   label=f"{dim}-D", alpha=0.7)  # fmt: skip
    if regression:
        ax.axhline(regression[0]["params_initial"], color="gray", ls="--", lw=1, label="initial")
    ax.set(xscale="log", xlabel="target complexity C (sines)", ylabel="final parameters",
           title="grown capacity against complexity")  # fmt: skip
    ax.legend()
    save_figure(fig, out / "regression.png")
    if classification:
        fig, ax = plt.subplots(figsize=(5.5, 4))
        for key, label in (("dynamic", "dynamic"), ("fixed_initial", "fixed, initial size"),
                           ("fixed_final", "fixed, final architecture")):  # fmt: skip
            ax.scatter([r["params_final"] if key != "fixed_initial" else r["params_initial"]
                        for r in classification], [100 * r[key] for r in classification],
                       label=label, alpha=0.7)  # fmt: skip
        ax.set(xlabel="parameters (final)", ylabel="test accuracy (%)",
               title="repeated runs: size and accuracy")  # fmt: skip
        ax.legend()
        save_figure(fig, out / "classification.png")


if __name__ == "__main__":
    main()
