"""NHN's location-direction search (section 2.3, Algorithm 1): gene codes stay valid under
generation, crossover and mutation; the population is scored in one call that equals scoring each
materialized individual; only add-on weights train; the same seed gives the same search, and a
killed search resumes at its last cycle."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fnnjax.arch import Cell, Conv, Head, Spec, Stage, build_model, materialize
from fnnjax.arch.select import materialize_variables
from fnnjax.construct import nhn
from fnnjax.construct.nhn import evolve as L
from fnnjax.train import Engine, load_dataset


def _base(stages=((2, 2), (1, 3)), width=4, shape=(8, 8, 1)):
    """A small segmented net: ENAS-like layers (1x1 then 3x3), a reduction between segments."""
    out = []
    for i, (a, b) in enumerate(stages):
        blocks = tuple(Cell(branches=((Conv(filters=width * (i + 1), kernel=1),
                                       Conv(filters=width * (i + 1), kernel=3)),)) for _ in range(a + b - 1))  # fmt: skip
        out.append(Stage(blocks=blocks, reduce=width * (i + 1) if i else None))
    return Spec(input_shape=shape, num_classes=10, stem=(Conv(filters=width, kernel=3, act=None),),
                stages=tuple(out), head=Head(pool="grouped"))  # fmt: skip


@st.composite
def spaces(draw):
    segs = draw(st.lists(st.integers(1, 5), min_size=1, max_size=4))
    low, g = [], 0
    for n in segs:
        low += [g] * n
        g += n
    kernels = tuple(draw(st.lists(st.sampled_from([1, 3, 5, 7]), min_size=1, max_size=3, unique=True)))
    return nhn.GeneSpace(tuple(low), kernels, tuple(f"s0b{j}" for j in range(len(low))))


def _valid(genes, space):
    low, high = space.bounds()
    g = np.asarray(genes)
    return np.all((g == -1) | ((g >= low) & (g <= high)))


@settings(max_examples=20, deadline=None)
@given(spaces(), st.integers(0, 2**31 - 1), st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_generated_recombined_and_mutated_gene_codes_stay_valid(space, seed, none_prob, rate):
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    pop = nhn.random_genes(k1, space, 6, none_prob=none_prob)
    assert pop.shape == (6, space.size) and pop.dtype == jnp.int32 and _valid(pop, space)
    children = nhn.recombine(k2, pop[:3], pop[3:])
    assert _valid(children, space)
    assert np.all((children == pop[:3]) | (children == pop[3:]))
    mutants = nhn.mutate(k3, pop, space, rate=rate, none_prob=none_prob)
    assert _valid(mutants, space)
    nhn.check_genes(mutants, space)
    # Every location a code picks lies inside its segment and points forward (a < b).
    starts = np.asarray(space.low)
    for loc in nhn.gene_locations(np.asarray(pop[0]), space):
        assert starts[loc["target"]] - 1 <= loc["source"] < loc["target"]


def test_gene_codes_follow_the_paper():
    spec = _base()
    space = nhn.gene_space(spec)
    assert space.low == (0, 0, 0, 3, 3, 3) and space.size == 12  # 2 segments of 3 layers
    # The paper: (4!)^3 (4!)^3 for 3 segments of 4 layers and two kernel sizes.
    paper = nhn.GeneSpace(tuple([0] * 4 + [4] * 4 + [8] * 4), (3, 5), ("",) * 12)
    assert paper.count(with_none=False) == 24**6 and paper.count() == 120**6
    genes = nhn.random_genes(jax.random.key(0), space, 20000)
    assert abs(float((genes == -1).mean()) - 0.8) < 0.01  # -1 with probability 0.8
    layer2 = np.asarray(genes[:, 2])
    counts = np.bincount(layer2[layer2 >= 0], minlength=3)
    assert counts.min() > 0.8 * counts.max()  # uniform over the stem and layers 0, 1
    locs = nhn.gene_locations(np.asarray([-1, 0, 2, -1, 3, 5, 0, -1, -1, 3, -1, -1]), space)
    assert [(x["source"], x["target"], x["kernel"]) for x in locs] == [
        (-1, 1, 3), (1, 2, 3), (2, 4, 3), (4, 5, 3), (-1, 0, 5), (2, 3, 5)]  # fmt: skip
    with pytest.raises(ValueError, match=r"genes\[3\] = 1: gene 3 \(layer 3, 3x3\) must be -1 or in \[3, 3\]"):
        nhn.check_genes(np.asarray([-1, -1, -1, 1] + [-1] * 8), space)
    with pytest.raises(ValueError, match="fresh: expected one of"):
        L.LocationConfig(fresh="clone")
    with pytest.raises(ValueError, match="pairs: expected rank pairs"):
        L.LocationConfig(pairs=((0, 12),))


def test_location_search_keeps_the_elite_and_refills_ranks_11_to_20():
    space = nhn.gene_space(_base())
    state = L.location_init(jax.random.key(0), space)
    first, state = L.location_ask(jax.random.key(1), state, space)
    fitness = jnp.asarray(np.random.default_rng(0).permutation(20), jnp.float32)
    state = L.location_tell(first, fitness, state)
    assert state.best_fitness == 19 and np.array_equal(state.best_genes, first[int(jnp.argmax(fitness))])
    nxt, state = L.location_ask(jax.random.key(2), state, space)
    assert _valid(nxt, space)
    ranked = np.asarray(first)[np.argsort(-np.asarray(fitness), kind="stable")]
    np.testing.assert_array_equal(nxt[:10], ranked[:10])
    for child, (a, b) in zip(np.asarray(nxt[10:15]), ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3)), strict=True):
        assert np.all((child == ranked[a]) | (child == ranked[b]))
    assert nxt.shape == (20, 12) and bool(jnp.all(state.fitness == -jnp.inf))
    again, _ = L.location_ask(jax.random.key(2), L.location_tell(first, fitness, L.location_init(
        jax.random.key(0), space)), space)  # fmt: skip
    np.testing.assert_array_equal(again, nxt)  # pure: same key, same population


def test_directions_are_sparse_among_eligible_channels_and_the_best_survives():
    eligible = {"e0": np.array([True] * 30 + [False] * 10), "e1": np.array([False, True, False])}
    d = L.random_directions(jax.random.key(0), eligible, 5, 400, density=0.1)
    assert d["e0"].shape == (400, 40, 5)
    assert not d["e0"][:, 30:].any() and not d["e1"][:, [0, 2]].any()
    assert bool((d["e0"].sum(axis=1) >= 1).all()) and bool((d["e1"][:, 1] == 1).all())
    assert abs(float(d["e0"][:, :30].mean()) - 0.1) < 0.02  # density (plus the forced ones)
    cfg = L.DirectionConfig(population=4)
    state = L.direction_init(jax.random.key(1), eligible, 5, cfg)
    pop, state = L.direction_ask(jax.random.key(2), state, eligible, 5, cfg)
    state = L.direction_tell(pop, jnp.asarray([0.1, 0.5, 0.2, 0.3]), state)
    np.testing.assert_array_equal(state.best["e0"], pop["e0"][1])
    pop2, _ = L.direction_ask(jax.random.key(3), state, eligible, 5, cfg)
    np.testing.assert_array_equal(pop2["e0"][0], pop["e0"][1])  # re-scored beside 3 new ones


def _supernet_state(neurons=2):
    spec = _base()
    supernet = nhn.addon_space(spec, neurons)
    model = build_model(supernet, use_masks=True)
    engine = Engine(model, __import__("optax").sgd(0.1), eval_batch_size=64)
    state = engine.init(jax.random.key(0), spec.input_shape)
    # Non-zero add-on rows and non-trivial statistics, so every edge matters.
    keys = iter(jax.random.split(jax.random.key(1), 500))
    params = jax.tree_util.tree_map(lambda a: a + 0.2 * jax.random.normal(next(keys), a.shape), state.params)
    return spec, supernet, engine, state.replace(params=params)


def test_a_population_of_20_is_scored_in_one_call_equal_to_each_materialized_individual():
    spec, supernet, engine, state = _supernet_state()
    space = nhn.gene_space(spec)
    genes = nhn.random_genes(jax.random.key(3), space, 20, none_prob=0.5)
    gates = nhn.genes_to_selection(genes, space)
    base_arch = state.collections["arch"]
    edges = {p: (0, base_arch[p]["connections"].shape[0]) for p in gates}
    dirs = L.random_directions(jax.random.key(4), {p: np.ones(c, bool) for p, (_, c) in edges.items()},
                               2, 20, density=0.5)  # fmt: skip
    pop = nhn.population_arch(base_arch, 20, {p: {"gate": g, "connections": dirs[p]} for p, g in gates.items()})
    data = load_dataset("digits", limit_train=64, limit_test=48)
    scores = engine.evaluate_population(state, data.test, "arch", pop)
    assert engine.population_compiles() == 1  # one compiled call for the 20
    # The location search's populations share their connections: those leaves go in unbatched.
    gates_only = nhn.population_arch(base_arch, 20, {p: {"gate": g} for p, g in gates.items()})
    shared = engine.evaluate_population(state, data.test, "arch", gates_only)
    x, y, ones = jnp.asarray(data.test.x), jnp.asarray(data.test.y), jnp.ones(48)
    for k in (0, 7):
        one = jax.tree_util.tree_map(lambda leaf, k=k: leaf[k], gates_only)
        sums = engine.eval_step(state.replace(collections={**state.collections, "arch": one}), x, y, ones)
        np.testing.assert_allclose(shared["loss"][k], sums["loss"] / 48, rtol=1e-5, atol=1e-6)
    variables = state.variables()
    batch_scores = engine.evaluate_population(state, data.test, "arch", pop, batch_norm="batch")
    for k in range(20):
        one = jax.tree_util.tree_map(lambda leaf, k=k: leaf[k], pop)
        net = materialize(supernet, one)
        n_edges = sum(len(b.addons) for st_ in net.stages for b in st_.blocks)
        assert n_edges == int((np.asarray(genes[k]) >= 0).sum())
        mv = materialize_variables(supernet, {**variables, "arch": one}, one)
        logits = build_model(net, use_masks=True).apply(mv, data.test.x)
        loss = -jax.nn.log_softmax(logits)[np.arange(48), data.test.y].mean()
        np.testing.assert_allclose(scores["loss"][k], loss, rtol=1e-5, atol=1e-5)
        if k < 3:  # LDS's default: each individual normalized by the batch's own statistics
            logits, _ = build_model(net, use_masks=True).apply(mv, data.test.x, train=True,
                                                               mutable=["batch_stats"])  # fmt: skip
            loss = -jax.nn.log_softmax(logits)[np.arange(48), data.test.y].mean()
            np.testing.assert_allclose(batch_scores["loss"][k], loss, rtol=1e-5, atol=1e-5)


def test_lds_trains_only_add_on_weights_and_is_reproducible_and_resumable(tmp_path):
    import dataclasses

    data = load_dataset("digits", validation_fraction=0.25, limit_train=240)
    spec = _base(stages=((1, 2), (1, 1)))
    v = build_model(spec, use_masks=True).init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
    cfg = nhn.LdsConfig(neurons=2, location=L.LocationConfig(population=4, keep=2, pairs=((0, 1),)),
                        direction=L.DirectionConfig(population=4), location_cycles=2,
                        direction_cycles=1, train_batches=2, batch_size=16, score_batch=40)  # fmt: skip
    quiet = {"log": None}
    a = nhn.lds(data, spec, v, cfg, tmp_path / "a", seed=3, **quiet)
    # Only add-on weights moved: the base network's own params are unchanged.
    supernet = a["supernet"]
    mask = nhn.trainable_mask(spec, supernet, a["variables"]["params"])
    assert any(bool(jnp.any(m == 1)) for m in jax.tree_util.tree_leaves(mask))
    for path, leaf in jax.tree_util.tree_flatten_with_path(v["params"])[0]:
        keys = [str(getattr(k, "key", k)) for k in path]
        node = a["variables"]["params"]
        for k in keys:
            node = node[k]
        if node.shape == leaf.shape:
            np.testing.assert_array_equal(node, leaf, err_msg="/".join(keys))
        else:  # a widened entry conv: its old rows are the base network's
            np.testing.assert_array_equal(node[..., : leaf.shape[-2], :], leaf)
    records = [json.loads(x) for x in (tmp_path / "a" / "lds.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in records] == ["location", "location", "direction"]
    assert all(r["worst"] <= r["mean"] <= r["best"] for r in records)
    assert (tmp_path / "a" / "genes.json").exists() and (tmp_path / "a" / "lds.png").exists()
    # Killed in its last cycle, the same search resumes after cycle 1 and ends as the
    # uninterrupted one did (same seed, same search).
    def killer(line):
        if "cycle 3/3" in line:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        nhn.lds(data, spec, v, cfg, tmp_path / "b", seed=3, log=killer)
    said = []
    c = nhn.lds(data, spec, v, cfg, tmp_path / "b", seed=3, log=said.append)
    assert said[0].startswith("resuming LDS after cycle 1")
    assert c["history"] == a["history"]
    for e in a["directions"]:
        np.testing.assert_array_equal(a["directions"][e], c["directions"][e])
    # Another search in the folder is refused, naming what differs (before any training).
    from fnnjax.train.runfolder import RunMismatchError

    other = dataclasses.replace(cfg, location=dataclasses.replace(cfg.location, none_prob=0.5))
    with pytest.raises(RunMismatchError, match=r"b holds a different LDS search \(location."
                       r"none_prob: saved 0.8, now 0.5; seed: saved 3, now 4\); to keep both"):  # fmt: skip
        nhn.lds(data, spec, v, other, tmp_path / "b", seed=4, log=None)
    # Training the individuals simultaneously: M steps per cycle, each from K batches at once.
    joint = dataclasses.replace(cfg, train_mode="simultaneous", location_cycles=1, direction_cycles=0)
    d = nhn.lds(data, spec, v, joint, seed=3, log=None)
    assert len(d["history"]) == 1 and np.isfinite(d["history"][0]["train_loss"])
    before = jax.tree_util.tree_leaves(v["params"]["s0b0"])
    after = jax.tree_util.tree_leaves(d["variables"]["params"]["s0b0"])
    assert all(np.array_equal(x, y[..., : x.shape[-2], :] if x.ndim == 4 and x.shape != y.shape else y)
               for x, y in zip(before, after, strict=True))  # frozen here too
    # The add-on rows of the entry convs start at zero; training moved some.
    moved = [np.abs(np.asarray(k)[..., m.sum(axis=(0, 1, 3)) > 0, :]).max()
             for k, m in zip(jax.tree_util.tree_leaves(d["variables"]["params"]),
                             jax.tree_util.tree_leaves(nhn.trainable_mask(spec, d["supernet"], d["variables"]["params"])),
                             strict=True)
             if np.ndim(k) == 4 and np.asarray(m).any() and not np.asarray(m).all()]  # fmt: skip
    assert moved and max(moved) > 0



def test_a_gene_code_keeping_no_add_on_gives_the_plain_network_without_an_arch_collection():
    """Regression: on a net without skips, a search that keeps no add-on left no ``"arch"``
    collection and ``with_addons`` raised ``KeyError: 'arch'`` after all of ``fnnjax nhn``'s
    training."""
    spec, supernet, _, state = _supernet_state()
    space = nhn.gene_space(spec)
    final, kept = nhn.with_addons(supernet, space, state.variables(), -jnp.ones(space.size, jnp.int32), {})
    assert not any(b.addons for st_ in final.stages for b in st_.blocks)
    assert set(kept) == {"masks"}
    model = build_model(final, use_masks=True)
    fresh = model.init(jax.random.key(0), jnp.zeros((1, *spec.input_shape)))
    x = jnp.ones((2, *spec.input_shape))
    assert np.isfinite(np.asarray(model.apply({**fresh, **kept}, x))).all()


def test_the_ablation_switches_off_the_add_on_edges_only_not_the_arcs_skips():
    """Regression: the final network's ablation set every gate to 0, the arc's own gated skips'
    too, so "without add-ons" also removed the arc's skip connections."""
    arch = {"s0b1_skip": {"gate": jnp.ones(2)}, "s0b1_addon0": {"gate": jnp.ones(()),
            "connections": jnp.ones(4)}, "s1b0/choice": {"choice": jnp.int32(2)}}  # fmt: skip
    off = nhn.addons_off(arch)
    np.testing.assert_array_equal(off["s0b1_skip"]["gate"], [1, 1])
    assert float(off["s0b1_addon0"]["gate"]) == 0.0
    np.testing.assert_array_equal(off["s0b1_addon0"]["connections"], np.ones(4))
    assert off["s1b0/choice"] == arch["s1b0/choice"]
