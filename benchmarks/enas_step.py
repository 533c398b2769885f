"""ENAS's child training step with a sampled arc: fnnjax's paths, the arc alone, a PyTorch peer.

For each of ``--arcs`` fresh arcs of the macro space (random ops and skips; the supernet of
:func:`fnnjax.construct.enas.macro_space`), timed side by side in this process, median of
``--repeats`` calls after warm-up, every call one training step (batch ``--batch``, Nesterov SGD
with L2 and global-norm clipping: :func:`fnnjax.construct.enas.child_optimizer`):

* ``sampled``: the sampled execution path (:class:`fnnjax.arch.SampledNet` through
  :meth:`fnnjax.train.Engine.train_steps_with`): only the arc's ops run, per-op programs
  composed in Python, the optimizer over the whole supernet in one jitted call;
* ``supernet``: the jitted whole-supernet step (``--supernet-mode``, default ``all``, the CPU
  choice before the sampled path), timed on the first few arcs only (its cost does not depend on
  the arc);
* ``standalone``: the arc's search form (:func:`fnnjax.construct.enas.search_spec`) compiled
  alone as one program, the same optimizer;
* ``torch``: an eager PyTorch port of the same space and step (only the sampled op runs; every
  factorized reduction runs, as in the supernet; same sizes, optimizer and clipping, and, as in
  fnnjax's step, every weight decays and carries momentum and the clipping norm covers all:
  unused weights get zero gradients; PyTorch's default initialization and thread count), when PyTorch is installed (an optional benchmark dependency: skipped otherwise).

Reports per-arc ratios ``sampled / standalone`` and ``sampled / torch`` (median and maximum).

Usage::

    python -m benchmarks.enas_step --layers 12 --width 36 --size 32 --channels 3   # paper's size
    python -m benchmarks.enas_step --layers 6 --width 16 --size 28 --channels 1
    python -m benchmarks.enas_step --quick
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import machine, median_seconds, write_json
from fnnjax.arch import SampledNet, build_model
from fnnjax.arch.spec import reduced_sources
from fnnjax.construct import enas
from fnnjax.train import Engine


def box_state(stepper):
    """The current variables of a stepper made by :func:`_fnnjax_stepper`."""
    return stepper.box["state"].variables()


def _fnnjax_stepper(engine, state, x, y, batch, gradient=None):
    """A closure doing one training step per call on a rotating batch; the state is carried."""
    box = {"state": state, "i": 0}
    steps = len(x) // batch

    def step(arch=None):
        state = box["state"]
        if arch is not None:
            state = state.replace(collections={**state.collections, "arch": arch})
        order = np.arange(batch)[None] + batch * (box["i"] % steps)
        box["i"] += 1
        if gradient is None:
            state, metrics = engine.train_steps(state, x, y, order)
        else:
            state, metrics = engine.train_steps_with(state, x, y, order,
                                                     lambda *a: gradient(arch, *a))  # fmt: skip
        box["state"] = state
        return state.params  # blocked on: the step's update is done

    step.box = box
    return step


def torch_peer(layers, width, shape, num_classes, skips, lr, momentum, l2, clip):
    """An eager PyTorch port of ENAS's macro supernet and its child step (None: no PyTorch)."""
    try:
        import torch  # noqa: PLC0415
        from torch import nn  # noqa: PLC0415
    except ImportError:
        return None

    space = enas.macro_space(layers, width, input_shape=shape, num_classes=num_classes,
                             skips=skips)  # fmt: skip
    starts = {i: reduced_sources(space, i) for i in range(len(space.stages))}

    def unit(cin, cout, k, act=True, stride=1, groups=1):
        mods = [nn.Conv2d(cin, cout, k, stride=stride, padding=(k - 1) // 2, groups=groups,
                          bias=False), nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1)]  # fmt: skip
        return nn.Sequential(*mods, *([nn.ReLU()] if act else []))

    class Sep(nn.Module):
        def __init__(self, c, k):
            super().__init__()
            self.dw = nn.Conv2d(c, c, k, padding=(k - 1) // 2, groups=c, bias=False)
            self.pw = unit(c, c, 1)

        def forward(self, x):
            return self.pw(self.dw(x))

    def candidates(c):
        return nn.ModuleList([
            nn.Sequential(unit(c, c, 1), unit(c, c, 3)),
            nn.Sequential(unit(c, c, 1), Sep(c, 3)),
            nn.Sequential(unit(c, c, 1), unit(c, c, 5)),
            nn.Sequential(unit(c, c, 1), Sep(c, 5)),
            nn.Sequential(unit(c, c, 1), nn.AvgPool2d(3, 1, 1, count_include_pad=False)),
            nn.Sequential(unit(c, c, 1), nn.MaxPool2d(3, 1, 1)),
        ])  # fmt: skip

    class Reduce(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.p1 = unit(c, c // 2, 1, act=False, stride=2)
            self.p2 = unit(c, c - c // 2, 1, act=False, stride=2)

        def forward(self, x):
            shifted = nn.functional.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:]
            return torch.cat([self.p1(x), self.p2(shifted)], 1)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = unit(shape[-1], width, 3, act=False)
            self.layers = nn.ModuleList([candidates(width) for _ in range(layers)])
            self.merges = nn.ModuleList([nn.BatchNorm2d(width) for _ in range(layers)])
            self.reduce = nn.ModuleDict({f"{i}_{s + 1}": Reduce(width)
                                         for i, srcs in starts.items() for s in srcs})  # fmt: skip
            self.fc = nn.Linear(width, num_classes)

        def forward(self, x, arc):
            x = self.stem(x)
            sources = {-1: x}
            k = 0
            for i, st in enumerate(space.stages):
                for s in starts.get(i, ()):
                    sources[s] = self.reduce[f"{i}_{s + 1}"](sources[s])
                if starts.get(i):
                    x = sources[k - 1]
                for b in st.blocks:
                    off = k + k * (k - 1) // 2
                    y = self.layers[k][int(arc[off])](x)
                    if k:
                        on = [s for s, bit in zip(b.gated_skips, arc[off + 1: off + 1 + k],
                                                  strict=True) if bit]  # fmt: skip
                        y = self.merges[k](y + sum((sources[s] for s in on), torch.zeros_like(y)))
                    sources[k] = x = y
                    k += 1
            return self.fc(x.mean((2, 3)))

    torch.manual_seed(0)
    net = Net()
    for p in net.parameters():  # every weight has a gradient (zeros where unused), so SGD decays
        p.grad = torch.zeros_like(p)  # and moves every one and clipping covers all, as fnnjax's
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum, nesterov=True,
                          weight_decay=2 * l2)  # fmt: skip
    loss_fn = nn.CrossEntropyLoss()

    def make(x, y, batch):
        xt = torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))
        yt = torch.from_numpy(y.astype(np.int64))
        box = {"i": 0}
        steps = len(xt) // batch

        def step(arc):
            j = box["i"] % steps
            box["i"] += 1
            opt.zero_grad(set_to_none=False)
            loss = loss_fn(net(xt[j * batch:(j + 1) * batch], arc), yt[j * batch:(j + 1) * batch])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
            opt.step()
            return loss.item()

        return step

    return make, torch.get_num_threads()


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--width", type=int, default=36)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--arcs", type=int, default=20)
    parser.add_argument("--warmup-arcs", type=int, default=30,
                        help="other arcs run once before timing (compiles every op and shape)")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per arc and path")
    parser.add_argument("--supernet-arcs", type=int, default=3,
                        help="arcs the whole-supernet step is timed on (its cost is the arc's)")
    parser.add_argument("--supernet-mode", default="all", choices=["all", "switch", "switch_remat"])
    parser.add_argument("--skips", default="paper", choices=list(enas.SKIP_CONVENTIONS))
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for CI")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    if args.quick:
        args.layers, args.width, args.size, args.channels, args.batch = 3, 4, 8, 1, 8
        args.arcs, args.repeats, args.supernet_arcs = 2, 2, 1
    shape = (args.size, args.size, args.channels)
    config = enas.SearchConfig(layers=args.layers, filters=args.width)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4 * args.batch, *shape)).astype(np.float32)
    y = rng.integers(0, 10, 4 * args.batch).astype(np.int32)
    xd, yd = jnp.asarray(x), jnp.asarray(y)
    arcs = np.asarray(enas.random_arcs(jax.random.key(1), args.layers, args.arcs))
    tx = enas.child_optimizer(config, 100)

    def space(mode):
        return enas.macro_space(args.layers, args.width, input_shape=shape, num_classes=10,
                                mode=mode, skips=args.skips)  # fmt: skip

    # The sampled path: one engine over the supernet, every arc on the same state.
    sup = space("all")
    engine = Engine(build_model(sup), tx)
    net = SampledNet(sup)
    sampled = _fnnjax_stepper(engine, engine.init(jax.random.key(0), shape), xd, yd, args.batch,
                              gradient=lambda arch, v, *a: net.value_and_grad(v, arch, *a))  # fmt: skip
    selections = [enas.host_selection(a, args.layers) for a in arcs]
    # Warm-up on other arcs (every op at every shape compiles once), so that the count of
    # compiles while the timed arcs run shows whether a new arc compiles anything.
    warmup = np.asarray(enas.random_arcs(jax.random.key(2), args.layers, args.warmup_arcs))
    for arc in warmup:
        jax.block_until_ready(sampled(enas.host_selection(arc, args.layers)))
    compiles_before = net.compiles()

    # The whole supernet, jitted.
    sup_engine = Engine(build_model(space(args.supernet_mode)), tx)
    supernet = _fnnjax_stepper(sup_engine, sup_engine.init(jax.random.key(0), shape), xd, yd,
                               args.batch)  # fmt: skip
    peer = None if args.no_torch else torch_peer(
        args.layers, args.width, shape, 10, args.skips, config.child_lr_max,
        config.child_momentum, config.child_l2, config.child_clip)  # fmt: skip
    torch_step = peer[0](x, y, args.batch) if peer else None

    rows = []
    for a, (arc, sel) in enumerate(zip(arcs, selections, strict=True)):
        row = {"arc": enas.arc_to_string(arc, args.layers)}
        row["sampled"] = median_seconds(lambda sel=sel: sampled(sel), repeats=args.repeats,
                                        warmup=1)  # fmt: skip
        alone = build_model(enas.search_spec(arc, args.layers, args.width, input_shape=shape,
                                             num_classes=10, skips=args.skips))  # fmt: skip
        alone_engine = Engine(alone, tx)
        standalone = _fnnjax_stepper(alone_engine, alone_engine.init(jax.random.key(0), shape),
                                     xd, yd, args.batch)  # fmt: skip
        row["standalone"] = median_seconds(standalone, repeats=args.repeats, warmup=2)
        if a < args.supernet_arcs:
            row["supernet"] = median_seconds(lambda sel=sel: supernet(sel), repeats=args.repeats,
                                             warmup=2 if a == 0 else 1)  # fmt: skip
        if torch_step is not None:
            row["torch"] = median_seconds(lambda arc=arc: torch_step(arc), repeats=args.repeats,
                                          warmup=1)  # fmt: skip
        rows.append(row)
        print(" ".join(f"{k}={v * 1e3:.1f}ms" if isinstance(v, float) else f"{k}={v}"
                       for k, v in row.items()), flush=True)  # fmt: skip
    compiles_timed = net.compiles() - compiles_before
    # Rewards: 20 arcs, each on its own batch, inference mode (one controller step's scoring):
    # the supernet vmapped over the arcs in one jitted call, against the arcs' own pieces.
    variables = box_state(sampled)
    n = min(20, len(arcs))
    xs = jnp.asarray(np.stack([np.roll(x[: args.batch], i, axis=0) for i in range(n)]))
    ys = jnp.asarray(np.stack([np.roll(y[: args.batch], i) for i in range(n)]))
    sup_score = jax.jit(lambda v, a, x, y: enas.arc_accuracies(build_model(space("all")), v, a, x,
                                                               y, args.layers))  # fmt: skip
    scoring = {
        "score_supernet": median_seconds(lambda: sup_score(variables, jnp.asarray(arcs[:n]), xs,
                                                           ys), repeats=args.repeats),  # fmt: skip
        "score_sampled": median_seconds(lambda: enas.sampled_accuracies(
            net, variables, arcs[:n], xs, ys, args.layers), repeats=args.repeats),  # fmt: skip
    }
    over_alone = [r["sampled"] / r["standalone"] for r in rows]
    summary = {
        "sampled_over_standalone_median": statistics.median(over_alone),
        "sampled_over_standalone_max": max(over_alone),
        "supernet_over_standalone_median": statistics.median(
            [r["supernet"] / r["standalone"] for r in rows if "supernet" in r]),
        "sampled_ms_median": 1e3 * statistics.median(r["sampled"] for r in rows),
        "standalone_ms_median": 1e3 * statistics.median(r["standalone"] for r in rows),
        "supernet_ms_median": 1e3 * statistics.median(r["supernet"] for r in rows
                                                      if "supernet" in r),  # fmt: skip
        "compiles_after_warmup": compiles_timed,
        f"score_{n}_arcs_supernet_ms": 1e3 * scoring["score_supernet"],
        f"score_{n}_arcs_sampled_ms": 1e3 * scoring["score_sampled"],
    }
    if torch_step is not None:
        over_torch = [r["sampled"] / r["torch"] for r in rows]
        summary.update(sampled_over_torch_median=statistics.median(over_torch),
                       sampled_over_torch_max=max(over_torch),
                       torch_ms_median=1e3 * statistics.median(r["torch"] for r in rows),
                       standalone_over_torch_median=statistics.median(
                           r["standalone"] / r["torch"] for r in rows))  # fmt: skip
    threads = (f"torch threads {peer[1]}; " if peer else "no torch; ") + \
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}"
    lines = [f"ENAS child step, {args.layers} layers x {args.width}, {shape}, batch {args.batch}, "
             f"{len(rows)} arcs, median of {args.repeats} ({machine()}; {threads})"]  # fmt: skip
    lines += [f"  {k:34s} {v:9.3f}" for k, v in summary.items()]
    table = "\n".join(lines)
    print(table)
    payload = {"config": vars(args), "rows": rows, "summary": summary, "table": table,
               "time": time.strftime("%Y-%m-%d %H:%M")}  # fmt: skip
    write_json(args.out, payload)
    return payload


if __name__ == "__main__":
    main()
