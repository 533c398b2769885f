"""What scoring an LDS population in one call buys: a population of ``--population`` add-on
selections (NHN section 2.3; gene codes with their gates, every add-on edge of the supernet
computed) scored on one validation batch by one vmapped call over the shared weights
(:meth:`fnnjax.train.Engine.evaluate_population`, what :func:`fnnjax.construct.nhn.lds` does;
its ``chunk="auto"`` evaluates the candidates one at a time inside that call on a CPU, and all at
once, vmapped, elsewhere; the all-at-once time is reported too),
against the same population scored one individual after another through the same model's jitted
single-selection evaluation (no recompilation: the selection is an array argument). Target:
population throughput >= sequential (ratio >= 1). Median of ``--repeats`` after warm-up, side by
side in one process.

The supernet is the retraining form of an ENAS arc (``--arc``, ``--layers``, ``--filters``) with
every add-on location of ``--neurons`` neurons, on ``--size`` x ``--size`` x 1 images.

Usage::

    python -m benchmarks.lds_population [--population 20] [--batch 500] [--layers 6]
        [--filters 16] [--size 28] [--repeats 10] [--quick] [--out results.json]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.common import machine, median_seconds, write_json
from fnnjax.arch import analytic_counts, build_model
from fnnjax.construct import enas, nhn
from fnnjax.train import Engine, Split


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arc", default="0 2 1 0 0 1 1 1 1 1 2 0 1 0 0 0 0 1 0 1 0",
                        help="an ENAS arc (default: our CPU random search's best, 6 layers)")  # fmt: skip
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--filters", type=int, default=16)
    parser.add_argument("--neurons", type=int, default=4)
    parser.add_argument("--population", type=int, default=20, help="K (the paper's 20)")
    parser.add_argument("--batch", type=int, default=500, help="the paper's scoring batch: 500")
    parser.add_argument("--size", type=int, default=28, help="image side")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for CI")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.quick:
        args.arc, args.layers, args.filters, args.neurons = "0 2 1 0 0 1", 3, 4, 2
        args.population, args.batch, args.size, args.repeats = 4, 32, 8, 2
    shape = (args.size, args.size, 1)
    base = enas.retrain_spec(enas.arc_from_string(args.arc, args.layers), args.layers, args.filters,
                             input_shape=shape, num_classes=10, head_pool="grouped")  # fmt: skip
    supernet = nhn.addon_space(base, args.neurons)
    space = nhn.gene_space(base)
    engine = Engine(build_model(supernet, use_masks=True), optax.sgd(0.0),
                    eval_batch_size=args.batch)  # fmt: skip
    state = engine.init(jax.random.key(0), shape)
    genes = nhn.random_genes(jax.random.key(1), space, args.population)
    gates = nhn.genes_to_selection(genes, space)
    population = nhn.population_arch(state.collections["arch"], args.population,
                                     {p: {"gate": g} for p, g in gates.items()})  # fmt: skip
    rng = np.random.default_rng(0)
    split = Split(rng.normal(size=(args.batch, *shape)).astype(np.float32),
                  rng.integers(0, 10, args.batch).astype(np.int32))  # fmt: skip
    x, y, mask = (jnp.asarray(v) for v in (split.x, split.y, np.ones(args.batch, np.float32)))
    selections = [jax.tree_util.tree_map(lambda leaf, k=k: leaf[k], population)
                  for k in range(args.population)]  # fmt: skip

    def together(chunk="auto"):
        return engine.evaluate_population(state, split, "arch", population, chunk=chunk)["accuracy"]

    def one_by_one():
        outs = []
        for sel in selections:
            s = state.replace(collections={**state.collections, "arch": sel})
            outs.append(engine.eval_step(s, x, y, mask)["accuracy"])
        return outs

    # The two agree (the population's scores are each individual's).
    seq = np.asarray(jax.device_get(one_by_one())) / args.batch
    np.testing.assert_allclose(np.asarray(together()), seq, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(together(None)), seq, rtol=1e-5, atol=1e-6)
    t_pop = median_seconds(together, repeats=args.repeats)
    t_all = median_seconds(lambda: together(None), repeats=args.repeats)
    t_seq = median_seconds(one_by_one, repeats=args.repeats)
    counts = analytic_counts(supernet)
    result = {
        "supernet": {"layers": args.layers, "filters": args.filters, "neurons": args.neurons,
                     "edges": sum(len(b.addons) for st in supernet.stages for b in st.blocks),
                     "params": counts["params"], "image": list(shape)},
        "population": args.population, "batch": args.batch,
        "seconds": {"population_call": t_pop, "all_at_once": t_all, "sequential": t_seq},
        "throughput_ratio": t_seq / t_pop,
    }  # fmt: skip
    print(f"{machine()}\nLDS scoring, {args.population} individuals x {args.batch} images, "
          f"{result['supernet']['edges']} add-on edges: one call {1e3 * t_pop:.1f} ms (chunk "
          f"'auto'; all at once {1e3 * t_all:.1f} ms), one by one {1e3 * t_seq:.1f} ms -> "
          f"population throughput x{result['throughput_ratio']:.2f} (target >= 1)")  # fmt: skip
    write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
