"""Writes colab/*.ipynb from the cell lists below (notebooks are generated so diffs stay readable).

Run ``python tools/make_notebooks.py`` after editing (``--check`` only compares); the test suite
checks that the committed notebooks are what this file generates and executes them with nbmake.
"""

import argparse
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]

# >>> Where Colab installs fnnjax from (it is not on PyPI): a pip requirement URL of the repository.
# Set it to the real repository and regenerate; until then the install cell asks the user for it.
FNNJAX_SOURCE = "git+https://github.com/<OWNER>/fnnjax.git"
UNSET_MARK = "<OWNER>"  # FNNJAX_SOURCE still holds the placeholder while it contains this
EXTRAS = "cuda12,tfds"  # GPU wheels and tfds (MNIST / CIFAR online) on Colab

# The first code cell of every notebook. A no-op outside Colab (the test suite runs it offline).
INSTALL_CELL = f"""# @title Install fnnjax (Colab only; elsewhere `pip install -e ".[dev]"` from a clone)
# fnnjax is not on PyPI: pip installs it from FNNJAX_SOURCE, a git URL of the repository (your
# fork's, a branch as ...fnnjax.git@BRANCH) or a folder holding a clone. Edit the field below or
# set the environment variable FNNJAX_SOURCE, which takes precedence.
import os
import subprocess
import sys

FNNJAX_SOURCE = "{FNNJAX_SOURCE}"  # @param {{type:"string"}}

if "google.colab" in sys.modules:
    source = os.environ.get("FNNJAX_SOURCE") or FNNJAX_SOURCE
    if "{UNSET_MARK}" in source:
        raise RuntimeError(
            "set FNNJAX_SOURCE to the fnnjax repository first, e.g. "
            "'git+https://github.com/YOU/fnnjax.git' (the field above or the environment variable)"
        )
    if os.path.isdir(source):
        requirement = source + "[{EXTRAS}]"
    else:
        requirement = "fnnjax[{EXTRAS}] @ " + source
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", requirement], check=True)"""

NOTEBOOKS = {}


NOTEBOOKS["00_quickstart.ipynb"] = [
    new_markdown_cell(
        "# fnnjax quickstart\n\nTrain the FNN paper's dense baseline (2000-1500-1000-500, ReLU, 0.1 "
        "input dropout) and plot its learning curve. On Colab, pick a GPU runtime and set "
        "`DATASET = \"mnist\"` (downloaded by tfds); locally the bundled `digits` set needs nothing."
    ),
    new_code_cell(INSTALL_CELL),
    new_code_cell(
        '''# parameters
import os

TINY = bool(os.environ.get("FNNJAX_TINY"))  # set by the test suite: a seconds-long run
DATASET = "digits"
MODEL = "dense"
EPOCHS = 2 if TINY else 20
BATCH_SIZE = 128''',
        metadata={"tags": ["parameters"]},
    ),
    new_code_cell(
        '''import jax
import matplotlib.pyplot as plt

import fnnjax
from fnnjax import train

print("devices:", jax.devices())
data = train.load_dataset(DATASET)
print(data.describe())
model = fnnjax.get_model(MODEL, data.num_classes, data.input_shape)
config = train.TrainConfig(epochs=EPOCHS, batch_size=BATCH_SIZE, optimizer="adam", learning_rate=1e-3)
result = train.fit(model, data, config)  # pass out_dir="runs/quickstart" to checkpoint and resume
print(f"test accuracy {result.summary['final_test_accuracy']:.2%} with {result.summary['num_params']:,} parameters")'''
    ),
    new_code_cell(
        '''epochs = [h["epoch"] for h in result.history]
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(epochs, [h["train_accuracy"] for h in result.history], label="train")
ax.plot(epochs, [h["test_accuracy"] for h in result.history], label="test")
ax.set(xlabel="epoch", ylabel="accuracy", title=f"{MODEL} on {DATASET}")
ax.legend()
plt.show()
assert result.history[-1]["test_accuracy"] > 0.5, "the baseline should learn digits quickly"'''
    ),
]

NOTEBOOKS["01_farfalle.ipynb"] = [
    new_markdown_cell(
        "# Farfalle Neural Networks\n\nFloating neurons carry an input embedding `I`, an output "
        "embedding `O` and a transform `F(x) = ReLU(a x + b)`; connection weights are "
        "`W = N(IᵀO)` with the l2 normalization of eq. 2. An FNN iterates N hidden neurons k times "
        "and replaces a dense stack with ~10% of its parameters. This notebook builds one, checks "
        "the factored Step against the materialized one, trains it beside the dense baseline, and "
        "draws the embedding figures (paper Figures 5 and 6)."
    ),
    new_code_cell(INSTALL_CELL),
    new_code_cell(
        '''# parameters
import os
import tempfile

TINY = bool(os.environ.get("FNNJAX_TINY"))  # set by the test suite: a seconds-long run
DATASET = "digits"  # "fashion_mnist" (local files) or "mnist" / "cifar10" (tfds, online)
EPOCHS = 2 if TINY else 30
NUM_HIDDEN = 256 if TINY else 1024
ITERATIONS = 4
FIGURES = tempfile.mkdtemp() if TINY else "."  # where fig5.png / fig6.png go''',
        metadata={"tags": ["parameters"]},
    ),
    new_code_cell(
        '''import dataclasses

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
from IPython.display import Image, display

import fnnjax
from fnnjax import floating, train

data = train.load_dataset(DATASET)
config = floating.FNNConfig(num_inputs=int(jnp.prod(jnp.array(data.input_shape))), num_outputs=data.num_classes,
                            num_hidden=NUM_HIDDEN, iterations=ITERATIONS)
params = floating.init_params(jax.random.key(0), config)
x = jnp.asarray(data.test.x[:16]).reshape(16, -1)
factored = floating.fnn_apply(params, x, config)
materialized = floating.fnn_apply(params, x, dataclasses.replace(config, path="materialized"))
print("parameters:", floating.param_count(config), "| max |factored - materialized|:",
      float(jnp.abs(factored - materialized).max()))
assert jnp.allclose(factored, materialized, rtol=1e-4, atol=1e-4)'''
    ),
    new_code_cell(
        '''runs = {}
for name, options in [("dense", {}), ("fnn", {"num_hidden": NUM_HIDDEN, "iterations": ITERATIONS})]:
    model = fnnjax.get_model(name, data.num_classes, data.input_shape, **options)
    runs[name] = train.fit(model, data, train.TrainConfig(epochs=EPOCHS, batch_size=128, progress=not TINY))
    s = runs[name].summary
    print(f"{name}: test accuracy {s['final_test_accuracy']:.2%}, {s['num_params']:,} parameters")

fig, ax = plt.subplots(figsize=(5, 3))
for name, result in runs.items():
    ax.plot([h["test_accuracy"] for h in result.history], label=f"{name} ({result.summary['num_params']:,} params)")
ax.set(xlabel="epoch", ylabel="test accuracy")
ax.legend()
plt.show()'''
    ),
    new_code_cell(
        '''# Figures 5 and 6: the norm of each input neuron's embedding on the pixel grid, and a 2-D
# projection of the inner pixels' embeddings with lines between neighbouring pixels.
fnn_params = runs["fnn"].state.params
norms = floating.analysis.plot_input_embedding_norms(fnn_params, data.input_shape, f"{FIGURES}/fig5.png")
projection = floating.analysis.plot_embedding_projection(fnn_params, data.input_shape, f"{FIGURES}/fig6.png")
display(Image(norms), Image(projection))

# Folding (section 3.4): fold each neuron's normalization into its input embedding once, then
# infer with O(d(N+M)) memory; the outputs equal training mode's.
folded = floating.fold_params(fnn_params, config)
difference = jnp.abs(floating.folded_apply(folded, x, config) - floating.fnn_apply(fnn_params, x, config)).max()
print("max |folded - training mode|:", float(difference))
assert difference < 1e-3'''
    ),
]


NOTEBOOKS["02_envelopenets.ipynb"] = [
    new_markdown_cell(
        "# EnvelopeNets: construct a network from featuremap statistics\n\nAn EnvelopeNet "
        "`C/n1-n2-.../M` stacks cells of `M` conv blocks in parallel (1x1, 3x3, 3x3 sep, 5x5, 5x5 sep, "
        "7x7 sep). Construction trains it for a few epochs while every block's squared l2 norm "
        "accumulates inside the jitted step, prunes the weakest blocks of each stage, appends a cell "
        "at the stage's tail and repeats (Kamath et al. 2018). This notebook walks through one "
        "construction and a short training of what it builds; the paper's Table 1 (with the worst "
        "case and ten random equivalents) and Figures 2-4 come from `experiments/envelopenets.py`. "
        "On Colab pick a GPU runtime and set "
        "`DATASET = \"cifar10\"`, `INIT = \"128/10-1-1-1/6\"`, `MAX_LAYERS = (15, 5, 3, 3)`, "
        "`STEM_STRIDE = 1`, `EPOCHS_PER_ITERATION = 10`, `ITERATIONS = 5`, `TRAIN_EPOCHS = 100` "
        "(the paper); locally the bundled `digits` set "
        "needs nothing and `fashion_mnist` comes from `apt-get install dataset-fashion-mnist`."
    ),
    new_code_cell(INSTALL_CELL),
    new_code_cell(
        '''# parameters
import os

TINY = bool(os.environ.get("FNNJAX_TINY"))  # set by the test suite: a seconds-long run
DATASET = "digits" if TINY else "fashion_mnist"
INIT = "6/2-1/2" if TINY else "16/4-1-1/6"
CELL = ("1x1", "3x3") if TINY else ("1x1", "3x3", "3x3sep", "5x5", "5x5sep", "7x7sep")
STEM_STRIDE = 1 if TINY else 2  # 2: a quarter of the cost on a CPU (the paper: 1)
MAX_LAYERS = None  # per stage; the paper's 10-1-1-1 used (15, 5, 3, 3)
ITERATIONS = 1 if TINY else 5
EPOCHS_PER_ITERATION = 1 if TINY else 2
TRAIN_EPOCHS = 1 if TINY else 10'''
    ),
    new_code_cell(
        '''import jax
import matplotlib.pyplot as plt

from fnnjax import arch, train
from fnnjax.construct import envelope as ev

data = train.load_dataset(DATASET, limit_train=200 if TINY else 10000)
print(data.describe())
config = ev.ConstructionConfig.from_notation(
    INIT, envelope=ev.EnvelopeConfig(cell=CELL, stem_stride=STEM_STRIDE), iterations=ITERATIONS,
    epochs_per_iteration=EPOCHS_PER_ITERATION,
    restructure=ev.RestructureConfig(max_layers=MAX_LAYERS))
envelope = ev.envelope_spec(ev.initial_layers(config.stages, config.envelope), config.envelope,
                            data.input_shape, data.num_classes)
print(config.notation, "=", arch.notation(envelope))
print(f"{arch.analytic_counts(envelope)['params']:,} parameters")'''
    ),
    new_code_cell(
        '''# Restructuring is a pure function of the layers and the statistics: here on made-up numbers.
layers = ev.initial_layers(config.stages, config.envelope)
made_up = {key: float(i) for i, key in enumerate(ev.block_modules(layers, config.envelope))}
step = ev.restructure_layers(layers, made_up, config.envelope, config.restructure)
print("pruned:", step.pruned)
print("blocks per layer:", ev.block_counts(layers), "->", ev.block_counts(step.layers))

# The real thing: train, collect the statistics inside the jitted step, restructure, repeat.
result = ev.construct(data, config, num_devices=1)  # give an out_dir to checkpoint and resume
for record in result["records"]:
    print(record["notation"], "->", record["next_notation"], "pruned", record["pruned"])
constructed = result["spec"]
print("constructed:", result["notation"], ev.block_counts(result["layers"]))'''
    ),
    new_code_cell(
        '''# Each block's statistic at the end of the first iteration (the mean over its steps): what
# restructuring ranks. Figure 2 proper, the running statistic against steps, is the experiment's
# (ConstructionConfig(statistics_every=k) records it).
stats = result["records"][0]["statistics"]
fig, ax = plt.subplots(figsize=(7, 3))
ax.bar(range(len(stats)), list(stats.values()))
ax.set_xticks(range(len(stats)), list(stats), rotation=90, fontsize=6)
ax.set(ylabel="squared l2 norm / featuremap size", title="featuremap statistics, iteration 1")
plt.tight_layout()
plt.show()

# Train the EnvelopeNet, the constructed network and one random equivalent from scratch.
random_net = ev.random_equivalent(jax.random.key(0), constructed, config.envelope)
train_config = train.TrainConfig(epochs=TRAIN_EPOCHS, batch_size=50, optimizer="sgd",
                                 learning_rate=0.1, momentum=0.0, augment=config.augment,
                                 num_devices=1, progress=False)  # as the construction trains
for name, spec in (("envelopenet", envelope), ("constructed", constructed), ("random", random_net)):
    run = train.fit(arch.build_model(spec), data, train_config)
    acc = run.history[-1]["test_accuracy"]
    print(f"{name:12s} {ev.envelope_notation(spec, config.envelope):10s} "
          f"{arch.analytic_counts(spec)['params']:>9,} params  test accuracy {acc:.2%}")
    assert 0.0 <= acc <= 1.0'''
    ),
]


NOTEBOOKS["03_enas.ipynb"] = [
    new_markdown_cell(
        "# ENAS macro search in JAX (NHN step 1)\n\nOne shared-weight supernet of `L` layers (each "
        "a choice among conv3x3, sep3x3, conv5x5, sep5x5, avgpool and maxpool, with gated skips from "
        "earlier layers), an LSTM controller trained by REINFORCE, and the export of the best arc "
        "as a spec that `fnnjax train --spec` retrains. On Colab pick a GPU runtime and set "
        "`DATASET = \"cifar10\"` (tfds downloads it), `LAYERS = 12`, `FILTERS = 36`; locally the "
        "bundled `digits` set needs nothing and `fashion_mnist` comes from "
        "`apt-get install dataset-fashion-mnist`."
    ),
    new_code_cell(INSTALL_CELL),
    new_code_cell(
        '''# parameters
import os

TINY = bool(os.environ.get("FNNJAX_TINY"))  # set by the test suite: a seconds-long run
DATASET = "digits" if TINY else "fashion_mnist"
LAYERS = 2 if TINY else 6
FILTERS = 4 if TINY else 16
EPOCHS = 1 if TINY else 10
RETRAIN_EPOCHS = 1 if TINY else 10'''
    ),
    new_code_cell(
        '''import dataclasses

import jax
import matplotlib.pyplot as plt

from fnnjax import arch, train
from fnnjax.construct import enas

data = train.load_dataset(DATASET, validation_fraction=0.1, limit_train=400 if TINY else None)
print(data.describe())
space = enas.macro_space(LAYERS, FILTERS, input_shape=data.input_shape, num_classes=data.num_classes)
print("supernet:", arch.notation(space))

# The controller samples arcs (the released code's L + L(L-1)/2 integers) with their log-probabilities.
controller = enas.Controller(LAYERS)
params = enas.init_controller(controller, jax.random.key(0))
untrained = enas.sample_arcs(controller, params, jax.random.key(1), 3)
for arc, logp in zip(untrained["arc"], untrained["log_prob"], strict=True):
    print(enas.arc_to_string(arc, LAYERS), f"log p = {float(logp):.2f}")'''
    ),
    new_code_cell(
        '''config = enas.SearchConfig(layers=LAYERS, filters=FILTERS, epochs=EPOCHS)
if TINY:
    config = dataclasses.replace(config, batch_size=64, controller_steps=2, arcs_per_step=4,
                                 reward_batch=32, derive_arcs=10, derive_batches=1)
result = enas.search(data, config)  # give an out_dir to checkpoint, resume and write best_arc.txt

history = result["history"]
fig, ax = plt.subplots(figsize=(5, 3))
epochs = [h["epoch"] for h in history]
ax.plot(epochs, [h["valid_accuracy"] for h in history], "o-", label="sampled arcs (validation)")
ax.plot(epochs, [h["child_accuracy"] for h in history], "o-", label="shared weights (train)")
ax.set(xlabel="epoch", ylabel="accuracy", title="ENAS search")
ax.legend()
plt.show()
print("best arc:", enas.arc_to_string(result["best_arc"], LAYERS),
      f"({result['best_accuracy']:.1%} with the shared weights)")'''
    ),
    new_code_cell(
        '''# Retrain the best arc from scratch in its retraining form (skips concatenated, then a 1x1
# conv; widths doubled at each reduction). The search never read the test split.
spec = enas.retrain_spec(result["best_arc"], LAYERS, FILTERS, input_shape=data.input_shape,
                         num_classes=data.num_classes)
print(arch.notation(spec))
print(f"{arch.analytic_counts(spec)['params']:,} parameters")
config = train.TrainConfig(epochs=RETRAIN_EPOCHS, optimizer="sgd", learning_rate=0.05, momentum=0.9,
                           nesterov=True, schedule="cosine", weight_decay=5e-4)
run = train.fit(arch.build_model(spec), data, config)
print(f"test accuracy {run.history[-1]['test_accuracy']:.2%}")
assert 0.0 <= run.history[-1]["test_accuracy"] <= 1.0'''
    ),
]


NOTEBOOKS["04_nhn.ipynb"] = [
    new_markdown_cell(
        "# Neuron Hierarchical Networks in JAX\n\nAlgorithm 2 of NHN (Wang et al. 2018) step by "
        "step: a macro arc's network with the grouped-convolution head and SmoothInit, trained; DNP "
        "prunes its flattest 3x3/5x5 kernels and the clean-up removes the neurons left without "
        "connections; the location-direction search (LDS) finds add-on neurons with shared "
        "weights, a whole population scored in one vmapped call; the result trains from scratch. "
        "`fnnjax nhn` runs the same pipeline resumably. On Colab pick a GPU runtime and set "
        "`DATASET = \"cifar10\"`, `LAYERS = 12`, `FILTERS = 36` and the paper's epochs; locally "
        "`fashion_mnist` comes from `apt-get install dataset-fashion-mnist`."
    ),
    new_code_cell(INSTALL_CELL),
    new_code_cell(
        """# parameters
import os

TINY = bool(os.environ.get("FNNJAX_TINY"))  # set by the test suite: a seconds-long run
DATASET = "digits" if TINY else "fashion_mnist"
ARC = "0 2 1 0 0 1" if TINY else "0 2 1 0 0 1 1 1 1 1 2 0 1 0 0 0 0 1 0 1 0"  # an ENAS arc
LAYERS = 3 if TINY else 6
FILTERS = 4 if TINY else 16
EPOCHS = 1 if TINY else 5
PRUNE_RATIO = 0.85
LDS_CYCLES = (2, 1) if TINY else (20, 10)"""
    ),
    new_code_cell(
        """import dataclasses

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from fnnjax import arch, train
from fnnjax.construct import enas, nhn

data = train.load_dataset(DATASET, validation_fraction=0.1, limit_train=400 if TINY else 6000)
spec = enas.retrain_spec(enas.arc_from_string(ARC, LAYERS), LAYERS, FILTERS, head_pool="grouped",
                         input_shape=data.input_shape, num_classes=data.num_classes)
print(arch.notation(spec))

# SmoothInit: every 3x3 / 5x5 kernel smoothed by a 3x3 Gaussian; their spatial std shrinks.
model = arch.build_model(spec, use_masks=True)
variables = model.init(jax.random.key(0), jnp.zeros((1, *data.input_shape)))
smoothed = nhn.smooth_init(variables["params"], sigma=1.0)
before = np.concatenate([nhn.kernel_std(k).ravel() for k in nhn.prunable_kernels(variables["params"]).values()])
after = np.concatenate([nhn.kernel_std(k).ravel() for k in nhn.prunable_kernels(smoothed).values()])
print(f"kernel std: {before.mean():.4f} at init, {after.mean():.4f} smoothed")

config = train.TrainConfig(epochs=EPOCHS, batch_size=32 if TINY else 128, optimizer="sgd",
                           learning_rate=0.05, momentum=0.9, nesterov=True, schedule="cosine",
                           min_learning_rate=0.001, weight_decay=2.5e-4)
run = train.fit(model, data, config, initial_variables={**variables, "params": smoothed})
trained = run.state.variables()
print(f"base network: test accuracy {run.summary['final_test_accuracy']:.2%}")"""
    ),
    new_code_cell(
        """# DNP: a global std quantile prunes PRUNE_RATIO of the 3x3/5x5 kernels through the masks;
# the clean-up then removes neurons without input (folding their constant where exact) or output.
pruned = nhn.dnp(trained["params"], trained["masks"], ratio=PRUNE_RATIO)
print(f"pruned {pruned.total['ratio']:.1%} of the kernels, {pruned.total['params_ratio_all']:.1%} "
      "of all parameters")
for unit, row in pruned.layers.items():
    print(f"  {unit:14s} {row['pruned']:>5}/{row['kernels']:<5} kernels ({row['ratio']:.0%})")
cleaned = nhn.clean_up(spec, {**trained, "masks": pruned.masks})
print("removed neurons:", {u: len(v) for u, v in cleaned.removed.items()}, "params", cleaned.params)
stds = np.concatenate([nhn.kernel_std(k).ravel() for k in nhn.prunable_kernels(trained["params"]).values()])
fig, ax = plt.subplots(figsize=(5, 3))
ax.hist(stds, bins=40)
ax.axvline(next(iter(pruned.thresholds.values())), color="red", label="threshold")
ax.set(xlabel="kernel standard deviation", ylabel="kernels", title="DNP")
ax.legend()
plt.show()"""
    ),
    new_code_cell(
        """# LDS on the pruned network (retrained first in the full pipeline; `nhn.run_nhn` does it all).
lds_config = nhn.LdsConfig(neurons=2 if TINY else 4, location_cycles=LDS_CYCLES[0],
                           direction_cycles=LDS_CYCLES[1], train_batches=2 if TINY else 3,
                           batch_size=16 if TINY else 100, score_batch=40 if TINY else 500)
if TINY:
    lds_config = dataclasses.replace(
        lds_config, location=nhn.LocationConfig(population=4, keep=2, pairs=((0, 1),)),
        direction=nhn.DirectionConfig(population=4))
found = nhn.lds(data, cleaned.spec, cleaned.variables, lds_config)
print("add-on locations:", [(x["source"], x["target"], x["kernel"]) for x in found["locations"]])
h = found["history"]
fig, ax = plt.subplots(figsize=(5, 3))
for key in ("best", "mean", "worst"):
    ax.plot([r["cycle"] for r in h], [r[key] for r in h], label=key)
ax.set(xlabel="cycle", ylabel="validation accuracy", title="LDS")
ax.legend()
plt.show()"""
    ),
    new_code_cell(
        """# The neuron hierarchy: the pruned network plus the add-on neurons found, trained from scratch
# (the DNP masks and the directions are arrays that travel with the variables).
final, kept = nhn.with_addons(found["supernet"], found["space"], found["variables"], found["genes"],
                              found["directions"])
print(arch.notation(final))
model = arch.build_model(final, use_masks=True)
init = {**model.init(jax.random.key(1), jnp.zeros((1, *data.input_shape))), **kept}
run = train.fit(model, data, dataclasses.replace(config, cutout=4 if TINY else 14, grad_clip=5.0),
                initial_variables=init)
acc = run.summary["final_test_accuracy"]
params = nhn.effective_params(final, run.state.variables())
print(f"NHN: test accuracy {acc:.2%}, {params:,} effective parameters, "
      f"score {nhn.nhn_score(100 * (1 - acc), params / 1e6):.3f}")
assert 0.0 <= acc <= 1.0"""
    ),
]


NOTEBOOKS["05_dynamic_capacity.ipynb"] = [
    new_markdown_cell(
        "# Dynamic network capacity: a residual network that grows and shrinks while it trains\n\n"
        "Our reading of the unfinished thesis draft (docs/dynamic-capacity.md): after every epoch the "
        "saliency of every unit is measured on a fixed probe batch (Optimal Brain Damage on each "
        "unit's output gate, the Hessian diagonal estimated by Hutchinson inside `jit`); units far "
        "below their layer's mean are deleted; when the loss plateaus, the most salient layer is "
        "widened (new units' outgoing weights zero: the function is unchanged) or, past a cap, an "
        "identity residual block is inserted. Optimizer moments move with the weights. Locally "
        "this needs nothing; on Colab a CPU runtime is enough for the regression part."
    ),
    new_code_cell(INSTALL_CELL),
    new_code_cell(
        '''# parameters
import os

TINY = bool(os.environ.get("FNNJAX_TINY"))  # set by the test suite: a seconds-long run
COMPLEXITY = 3 if TINY else 6  # sines in the target (frequencies 1..C)
EPOCHS = 3 if TINY else 80
NUM_TRAIN = 256 if TINY else 4096'''
    ),
    new_code_cell(
        '''import matplotlib.pyplot as plt
import numpy as np

from fnnjax import arch, train
from fnnjax.construct import capacity as cp

data = cp.sines_dataset(COMPLEXITY, num_train=NUM_TRAIN, num_validation=NUM_TRAIN // 8)
spec = cp.residual_mlp_spec(data.input_shape, 1, width=8 if TINY else 16, hidden=4)
print(arch.notation(spec), f"{arch.analytic_counts(spec)['params']} parameters")

# The controller is a pure function: made-up saliencies and a flat loss give its plan and reasons.
made_up = {"s0b0/body0": np.array([1.0, 1.0, 0.001, 1.0])}
for change in cp.plan_changes([1.0, 0.999, 0.998, 0.998, 0.997, 0.997], made_up, spec,
                              cp.CapacityConfig(warmup=0), since_change=5):
    print(change.op, change.target, change.value, "--", change.reason)'''
    ),
    new_code_cell(
        '''# The real thing: train while the controller changes the network (give an out_dir to
# checkpoint, resume and get capacity.jsonl, capacity.png and layers.png).
controller = (cp.CapacityConfig(window=1, warmup=2, tau=0.5, grow_units=2, max_units=6, cooldown=1)
              if TINY else cp.CapacityConfig())
config = cp.DynamicConfig(controller=controller, hutchinson_samples=16 if TINY else 128,
                          hutchinson_chunk=16 if TINY else 32, probe_size=64 if TINY else 512)
train_config = train.TrainConfig(epochs=EPOCHS, batch_size=64, learning_rate=3e-3, num_devices=1,
                                 progress=False)
result = cp.train_dynamic(spec, data, train_config, config, objective="regression")
print("parameters", result["params_initial"], "->", result["params_final"])
for c in result["changes"]:
    if c["op"] in ("widen", "insert"):  # growth keeps the function
        assert abs(c["loss_after"] - c["loss_before"]) <= 1e-5 * c["loss_before"]'''
    ),
    new_code_cell(
        '''# Layer-specific analysis: units gained and lost per layer, and the saliency distribution.
rows = cp.layer_report(result["changes"], result["saliency"], spec)
print(cp.analysis.report_markdown(rows))
series = cp.analysis.units_over_time(result["changes"], spec)
fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
for path, points in series.items():
    left.step([s for s, _ in points] + [result["history"][-1]["step"]],
              [n for _, n in points] + [points[-1][1]], where="post", label=path)
left.set(xlabel="step", ylabel="units", title="units per layer")
left.legend(fontsize=7)
x = np.linspace(-1, 1, 400, dtype=np.float32).reshape(-1, 1, 1, 1)
model = arch.build_model(result["spec"])
y = model.apply(result["state"].variables(), x, train=False)
right.plot(x[:, 0, 0, 0], y[:, 0], label="network")
right.scatter(data.test.x[:200, 0, 0, 0], data.test.y[:200], s=4, color="gray", label="target")
right.set(title=f"fit of the {COMPLEXITY}-sine target")
right.legend()
plt.tight_layout()
plt.show()'''
    ),
]


def render(name: str) -> str:
    """The text of ``colab/<name>``: stable cell ids, so regenerating changes nothing."""
    cells = [nbformat.from_dict(dict(cell)) for cell in NOTEBOOKS[name]]
    for i, cell in enumerate(cells):
        cell.id = f"{Path(name).stem}-{i}"
    notebook = new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.metadata["accelerator"] = "GPU"
    return nbformat.writes(notebook) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if a committed notebook differs")  # fmt: skip
    args = parser.parse_args(argv)
    stale = []
    for name in NOTEBOOKS:
        path = ROOT / "colab" / name
        text = render(name)
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
            print("wrote", path)
    if stale:
        print("out of date (run python tools/make_notebooks.py):", ", ".join(stale), file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
