"""End-to-end smoke runs of the templates-paper and FNN Table 2 experiment scripts, at --quick size.

Each asserts on what the script is for: the numbers it reports match the library's independent
analytic counts, the paper's columns sit beside ours, resources move the way the filter
distributions dictate, training learns (above chance), results and figures are written, and a
rerun resumes instead of recomputing.
"""

import json
from functools import partial

import jax
import jax.numpy as jnp
import pytest

from experiments import fnn_table2, templates_table1, templates_table2, templates_width
from fnnjax import get_model
from fnnjax.arch import analytic_counts
from fnnjax.arch.shapes import head_features
from fnnjax.construct import count_filters
from fnnjax.models import build_spec

TEMPLATES = ["base", "reverse", "uniform", "quadratic", "negative_quadratic"]


def test_templates_table2_quick_profiles_every_template_beside_the_paper(tmp_path, capsys):
    payload = templates_table2.main(["--quick", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    rows = payload["table"]
    assert [(r["model"], r["template"]) for r in rows] == [("mobilenet", t) for t in TEMPLATES]
    for r in rows:
        spec = build_spec("mobilenet", 10, (32, 32, 3), r["template"], 0.05)
        counts = analytic_counts(spec)
        assert r["params"] == counts["params"]
        assert r["gflops_per_example"] == pytest.approx(counts["flops"] / 1e9)
        assert r["total_filters"] == count_filters(spec)
        assert r["latency_ms_per_batch"] > 0 and r["latency_repeats"] == 1
        assert 0 < r["activation_gb"] <= r["peak_gb"]
    by_t = {r["template"]: r for r in rows}
    # The paper's columns are carried as printed (Table 2, MobileNet row).
    assert [by_t[t]["paper_params_m"] for t in TEMPLATES] == [3.2, 2.2, 2.9, 3.2, 3.6]
    assert by_t["quadratic"]["paper_latency_us"] == 492.0
    assert "| mobilenet | reverse-base |" in printed and "/ 488.2 |" in printed
    # Reverse moves MobileNet's 1024-filter layers to full resolution: several times the memory.
    assert by_t["base"]["memory_vs_base"] == 1.0
    assert by_t["reverse"]["memory_vs_base"] > 2.0 and by_t["quadratic"]["memory_vs_base"] > 2.0
    assert (tmp_path / "table2.png").stat().st_size > 1000
    stored = json.loads((tmp_path / "results.json").read_text())
    assert stored["table"] == rows
    # A rerun reads every profile back from --out/profiles instead of measuring again.
    again = templates_table2.main(["--quick", "--out", str(tmp_path)])
    assert [r["latency_ms_per_batch"] for r in again["table"]] == [r["latency_ms_per_batch"] for r in rows]
    assert len(list((tmp_path / "profiles").glob("*.json"))) == 5


def test_templates_table2_latency_budget_skips_only_the_timing(tmp_path, capsys):
    payload = templates_table2.main(["--quick", "--templates", "reverse", "--latency-max-gflop",
                                     "1e-6", "--out", str(tmp_path)])  # fmt: skip
    printed = capsys.readouterr().out
    (row,) = payload["table"]
    assert row["latency_ms_per_batch"] is None and "latency-max-gflop" in row["latency_skipped"]
    assert row["peak_gb"] > 0 and row["memory_vs_base"] is None  # no base in this run
    assert "| skip | skip / 488.2 |" in printed and "latency not measured" in printed


def test_templates_table1_quick_trains_each_template(tmp_path, capsys):
    payload = templates_table1.main(["--quick", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    (row,) = payload["table"]
    assert row["model"] == "vgg19" and list(row["templates"]) == ["base", "uniform"]
    t = row["templates"]
    for name, values in t.items():
        spec = build_spec("vgg19", 10, (8, 8, 1), name, 0.05)  # digits, padded to 32x32 in the stem
        assert values["params"] == analytic_counts(spec)["params"]
        assert values["total_filters"] == count_filters(spec)
        assert values["paper_accuracy"] == templates_table1.PAPER["cifar10"]["vgg19"][name]
        assert 0.0 <= values["final_test_accuracy"][0] <= 1.0
    # Same F before the width multiplier; its per-layer rounding moves F by less than 1 per layer.
    assert abs(t["uniform"]["total_filters"] - t["base"]["total_filters"]) < 16
    assert t["uniform"]["params"] < t["base"]["params"]  # as in the paper (16.0M vs 20.0M)
    assert "| vgg19 |" in printed and "[93.7]" in printed and "[94.57]" in printed
    assert "vgg19: templates above base: ours" in printed and "paper (cifar10) 1/1" in printed
    assert payload["dataset"]["num_train"] == 256 and payload["dataset"]["num_test"] == 128
    config = payload["config"]
    assert (config["optimizer"], config["batch_size"], config["augment"]) == ("sgd", 32, False)
    assert config["num_devices"] == 1  # --quick: one device (the suite simulates 8)
    assert (tmp_path / "table1.png").stat().st_size > 1000
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [
        "vgg19-base-seed0", "vgg19-uniform-seed0"]


def test_recipe_defaults_follow_the_paper(monkeypatch):
    monkeypatch.delenv("FNNJAX_TINY", raising=False)  # the test suite sets it (forces --quick)
    args = templates_table1.parse_args(["--models", "vgg19"])
    config = templates_table1.train_config(args)
    assert (config.epochs, config.batch_size, config.learning_rate) == (160, 64, 0.1)
    assert config.schedule == "step" and config.step_epochs == (80, 120)  # 0.1 / 0.01 / 0.001
    assert config.momentum == 0.9 and config.weight_decay == 5e-4 and config.augment
    short = templates_table1.train_config(templates_table1.parse_args(["--epochs", "10"]))
    assert short.step_epochs == (5, 8)
    digits = templates_table1.train_config(templates_table1.parse_args(["--dataset", "digits"]))
    assert not digits.augment  # no flips for digits


def test_templates_width_quick_curves_and_profile_only_mode(tmp_path, capsys, monkeypatch):
    """The trained path with a stand-in for training (the harness is exercised by the other
    smoke runs): entries build the right models, the cheapest template configuration reaching the
    base model's accuracy is found, and the figure is drawn; then --no-train on the same folder."""
    accuracy = {"vgg19-base-w0.1": 0.80, "vgg19-base-w0.05": 0.70,
                "vgg19-uniform-w0.1": 0.85, "vgg19-uniform-w0.05": 0.81}  # fmt: skip
    seen = {}

    def fake_run_grid(entries, seeds, data, config, out):
        assert (config.optimizer, config.learning_rate, config.epochs) == ("sgd", 0.02, 1)
        results = {}
        x = jnp.zeros((1, *data.input_shape))
        for e in entries:
            model = e.build()
            shapes = jax.eval_shape(partial(model.init, train=False), {"params": jax.random.key(0)}, x)
            seen[e.name] = sum(a.size for a in jax.tree_util.tree_leaves(shapes["params"]))
            summary = {"final_test_accuracy": accuracy[e.name], "best_test_accuracy": accuracy[e.name]}
            results[e.name] = [{"seed": s, "summary": summary, "history": []} for s in seeds]
        return results

    monkeypatch.setattr(templates_width, "run_grid", fake_run_grid)
    payload = templates_width.main(["--quick", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    rows = payload["rows"]
    assert [(r["template"], r["width"]) for r in rows] == [
        ("base", 0.1), ("base", 0.05), ("uniform", 0.1), ("uniform", 0.05)]
    for r in rows:
        spec = build_spec("vgg19", 10, (8, 8, 1), r["template"], r["width"])
        assert r["params"] == analytic_counts(spec)["params"] == seen[f"vgg19-{r['template']}-w{r['width']:g}"]
        assert r["latency_ms"] > 0
    for template in ("base", "uniform"):
        wide, narrow = (r for r in rows if r["template"] == template)
        assert wide["params"] > narrow["params"] and wide["peak_gb"] > narrow["peak_gb"]
    match = payload["matching_base"]["vgg19"]
    assert match["reference_width"] == 0.1 and match["reference_accuracy"] == 0.80  # no 1.0 in grid
    by = {(r["template"], r["width"]): r for r in rows}
    assert match["params_m"]["template"] == "uniform" and match["params_m"]["width"] == 0.05
    assert match["params_m"]["ratio"] == pytest.approx(
        by[("uniform", 0.05)]["params"] / by[("base", 0.1)]["params"])
    assert "| vgg19 | uniform | 0.05 |" in printed and "cheapest template reaching" in printed
    assert (tmp_path / "width_curves.png").stat().st_size > 1000

    # --no-train at the same shape reuses the cached profiles and plots resources vs multiplier.
    again = templates_width.main(["--quick", "--no-train", "--input-shape", "8", "8", "1",
                                  "--out", str(tmp_path)])  # fmt: skip
    assert [r["latency_ms"] for r in again["rows"]] == [r["latency_ms"] for r in rows]
    assert all(r["final_test_accuracy"] == [] for r in again["rows"]) and again["matching_base"] == {}
    assert len(list((tmp_path / "profiles").glob("*.json"))) == 4
    assert (tmp_path / "width_curves.png").stat().st_size > 1000

    # --no-latency drops the latency panel instead of failing on an all-empty log axis.
    untimed = templates_width.main(["--quick", "--no-train", "--no-latency", "--templates", "base",
                                    "--input-shape", "8", "8", "1",
                                    "--out", str(tmp_path / "untimed")])  # fmt: skip
    assert len(untimed["rows"]) == 2 and all(r["latency_ms"] is None for r in untimed["rows"])
    assert (tmp_path / "untimed" / "width_curves.png").stat().st_size > 1000


def test_fnn_table2_quick_dense_vs_fnn_head(tmp_path, capsys):
    payload = fnn_table2.main(["--quick", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    dense, fnn = payload["table"]
    assert dense["model"] == "vgg16+dense" and fnn["model"] == "vgg16+fnn"
    assert dense["options"]["head"] == "dense"
    assert fnn["options"]["head_options"] == {"num_hidden": 1024, "iterations": 4, "input_dropout": 0.1}
    spec = build_spec("vgg16", 10, (8, 8, 1), width=0.05, head="dense")
    assert dense["params"] == analytic_counts(spec)["params"]
    # FNN row = VGG-16 body + an FNN of 1024 neurons on the flattened features (counted apart).
    linear = build_spec("vgg16", 10, (8, 8, 1), width=0.05, head="linear")
    features = head_features(linear)[1]
    head = get_model("fnn", 10, (features,), num_hidden=1024, iterations=4, input_dropout=0.1)
    shapes = jax.eval_shape(partial(head.init, train=False), {"params": jax.random.key(0)},
                            jnp.zeros((1, features)))  # fmt: skip
    head_params = sum(a.size for a in jax.tree_util.tree_leaves(shapes["params"]))
    body_params = analytic_counts(linear)["params"] - (features * 10 + 10)
    assert fnn["params"] == body_params + head_params
    assert (dense["paper_accuracy"], fnn["paper_accuracy"]) == (92.98, 93.51)
    assert min(dense["best_test_accuracy"][0], fnn["best_test_accuracy"][0]) > 0.2  # chance 0.1
    assert "FNN head minus dense head" in printed and "paper +0.53 points" in printed
    assert payload["config"]["momentum"] == 0.9 and payload["config"]["weight_decay"] == 5e-4
    assert (tmp_path / "accuracy.png").stat().st_size > 1000
