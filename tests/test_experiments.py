"""One end-to-end smoke run per experiment script, at --quick size; options shared by the scripts."""

import json
from pathlib import Path

import pytest

from experiments import (
    dynamic_capacity,
    enas_search,
    envelopenets,
    envelopenets_inherit,
    fnn_table1,
    fnn_table2,
    nhn,
    templates_table1,
    templates_width,
)

ROOT = Path(__file__).resolve().parents[1]


def test_fnn_table1_quick_writes_table_curves_and_figures(tmp_path, capsys):
    payload = fnn_table1.main(["--quick", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert "| fnn-1024 |" in printed and "params relative to dense" in printed
    assert [row["model"] for row in payload["table"]] == ["dense", "fnn-1024", "fnn-5000"]
    stored = json.loads((tmp_path / "results.json").read_text())
    assert stored["table"][1]["params_vs_dense"] < 0.2  # FNN-1024 has ~11% of the dense parameters
    for name in ("accuracy.png", "fig5_embedding_norms.png", "fig6_embedding_projection.png"):
        assert (tmp_path / name).stat().st_size > 1000
    assert all(row["final_test_accuracy"][0] > 0.3 for row in payload["table"])  # chance is 0.1
    summary = json.loads((tmp_path / "runs" / "fnn-1024-seed0" / "summary.json").read_text())
    assert len(summary["devices"]) == 1  # --quick: one device (the suite simulates 8)


def test_enas_quick_searches_both_ways_and_retrains_three_nets(tmp_path, capsys):
    payload = enas_search.main(["--quick", "--out", str(tmp_path)])
    rows = payload["rows"]
    assert set(rows) == {"enas", "random", "plain"}
    assert rows["plain"]["arc"] == "0 0 0"  # conv3x3 everywhere, no skip
    assert all(0.0 <= a <= 1.0 for row in rows.values() for a in row["test_accuracy"])
    assert abs(rows["plain"]["params"] - rows["enas"]["params"]) <= rows["enas"]["params"] // 2
    assert (tmp_path / "enas" / "best_arc.txt").exists() and (tmp_path / "results.json").exists()
    assert "random " in capsys.readouterr().out


@pytest.mark.parametrize("script", [fnn_table1, fnn_table2, templates_table1, templates_width],
                         ids=lambda m: m.__name__.rsplit(".", 1)[-1])  # fmt: skip
def test_quick_trains_on_one_device_unless_told_otherwise(script, monkeypatch):
    monkeypatch.delenv("FNNJAX_TINY", raising=False)
    assert script.parse_args(["--quick"]).devices == 1
    assert script.parse_args(["--quick", "--devices", "2"]).devices == 2
    assert script.parse_args([]).devices is None  # honest size: every local device
    with pytest.raises(SystemExit):
        script.parse_args(["--devices", "0"])


def test_scripts_use_typed_prng_keys():
    """New-style ``jax.random.key`` throughout (the engine's ``init_state`` takes typed keys)."""
    files = [*sorted((ROOT / "experiments").glob("*.py")), ROOT / "benchmarks" / "train_step.py"]
    legacy = [f.relative_to(ROOT).as_posix() for f in files if "PRNGKey" in f.read_text()]
    assert legacy == []


def test_envelopenets_quick_constructs_compares_and_draws_figures_2_to_4(tmp_path, capsys):
    payload = envelopenets.main(["--quick", "--out", str(tmp_path)])
    rows = payload["rows"]
    assert set(rows) == {"envelopenet", "constructed", "worst case", "random-1", "random-2"}
    assert rows["envelopenet"]["notation"] == "6/2-1/2"
    assert rows["constructed"]["notation"] == rows["worst case"]["notation"] == "6/3-2/2"
    assert rows["constructed"]["layers"] != rows["worst case"]["layers"]
    for name in ("random-1", "random-2"):  # each stage's depth and block count, random blocks
        assert rows[name]["notation"] == "6/3-2/2"
        assert [sum(s) for s in rows[name]["blocks_per_layer"]] == [
            sum(s) for s in rows["constructed"]["blocks_per_layer"]]
    assert rows["constructed"]["construction_epochs"] == 1 * 1 + 1
    assert len(payload["constructions"]) == 2 and payload["verdict"]["random_count"] == 2
    for name in ("table1.md", "fig2_statistics.png", "fig3_accuracy.png", "fig4_widths.png",
                 "construction-constructed.json", "construction-worst.json", "results.json"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert "| constructed | 6/3-2/2 |" in capsys.readouterr().out
    running = json.loads((tmp_path / "runs/figure2/iterations/0/statistics.json").read_text())
    assert [r["step"] for r in running] == [2, 4]  # a point every 2 of the epoch's 4 steps
    # The inheritance study, reusing that experiment's construction (seed 0) for iteration 0.
    study = envelopenets_inherit.main(["--quick", "--reuse", str(tmp_path / "runs"),
                                       "--out", str(tmp_path / "inherit")])  # fmt: skip
    assert "iteration 0 reused from" in capsys.readouterr().out
    (row,) = study["seeds"]
    assert row["notation"] == "6/3-2/2" and row["pruned_count"] == len(row["reference_pruned"]) > 0
    for variant in ("scratch", "inherit", "reference"):
        assert row[variant]["steps"] == [2, 4, 6, 8]  # every 2 steps over 2 epochs of 4 steps
        assert all(0 <= j <= 1 for j in row[variant]["jaccard"] + row[variant]["own_final_jaccard"])
    # the reference trains with another seed: scratch and reference are two different runs
    scratch = json.loads((tmp_path / "inherit/runs/scratch-seed0/config.json").read_text())
    reference = json.loads((tmp_path / "inherit/runs/reference-seed0/config.json").read_text())
    assert scratch["config"]["seed"] == 1 and reference["config"]["seed"] == 1000 * 1000 + 1
    assert row["reference"]["jaccard"][-1] == 1 and "| 8 (2.00) |" in study["table"]
    for name in ("table.md", "agreement.png", "results.json"):
        assert (tmp_path / "inherit" / name).stat().st_size > 0, name
    assert envelopenets_inherit.jaccard({"a", "b"}, {"b", "c"}) == pytest.approx(1 / 3)
    assert envelopenets_inherit.stage_spearman({"s0/a": 1, "s0/b": 2, "s0/c": 3, "s1/a": 1, "s1/b": 1},
                                               {"s0/a": 10, "s0/b": 30, "s0/c": 20, "s1/a": 1,
                                                "s1/b": 2}) == pytest.approx(0.5)  # s1: constant


def test_dynamic_capacity_quick_writes_tables_figures_and_the_spearman_correlation(tmp_path, capsys):
    payload = dynamic_capacity.main(["--quick", "--out", str(tmp_path)])
    assert [(r["dim"], r["complexity"]) for r in payload["regression"]] == [(1, 1), (1, 3)]
    for r in payload["regression"] + payload["classification"]:
        assert r["steps"] > 0 and r["growth_max_rel_loss_change"] <= 1e-5
        assert set(r["changes"]) == {"widen", "insert", "narrow", "remove"}
    assert set(payload["spearman_final_params_vs_complexity"]) == {"1-D params_final",
                                                                   "1-D params_mean_last_half"}
    for name in ("results.json", "regression.md", "classification.md", "regression.png",
                 "classification.png"):  # fmt: skip
        assert (tmp_path / name).stat().st_size > 0, name
    printed = capsys.readouterr().out
    assert "Spearman(params_final, C), 1-D, over 2 runs" in printed and "| digits | 0 |" in printed
    assert dynamic_capacity.spearman([1, 2, 3, 4], [10, 20, 20, 40]) > 0.9
    assert dynamic_capacity.spearman([1, 2, 3], [5, 5, 5]) != dynamic_capacity.spearman([1, 2, 3], [5, 5, 5])


def test_fnnjax_nhn_killed_inside_lds_is_resumed_there_by_the_experiment(tmp_path, capsys,
                                                                         monkeypatch):  # fmt: skip
    """Algorithm 2 end to end at a tiny size: ``fnnjax nhn --quick`` killed in the LDS stage; the
    experiment (the same pipeline: ``--quick`` and the same arc) resumes inside it, the trainings
    before it not redone, then adds its comparison; the files it leaves retrain the network."""
    from fnnjax.cli import main
    from fnnjax.construct.nhn import search

    pipe, arc = tmp_path / "pipeline", tmp_path / "arc.txt"
    arc.write_text("0 2 1 0 0 1\n")  # the experiment's --quick arc
    real, calls = search.location_tell, []

    def dying(*args, **kwargs):  # killed in the second location cycle
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(search, "location_tell", dying)
    assert main(["nhn", "--quick", "--arc", str(arc), "--skips", "paper", "--out",
                 str(pipe)]) == 130  # fmt: skip
    assert "rerun the command to resume" in capsys.readouterr().err
    monkeypatch.setattr(search, "location_tell", real)
    base_epochs = (pipe / "base" / "metrics.jsonl").read_text()
    assert not (pipe / "final").exists() and (pipe / "pruned_spec.json").exists()
    payload = nhn.main(["--quick", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert "resuming LDS after cycle 0" in printed and "| pruned + random add-ons |" in printed
    assert (pipe / "base" / "metrics.jsonl").read_text() == base_epochs  # not trained again
    for name in ("base_spec.json", "pruned_spec.json", "pruned_masks.npz", "prune.json",
                 "nhn_spec.json", "nhn_masks.npz", "results.json", "lds/lds.jsonl",
                 "lds/genes.json", "lds/directions.npz", "lds/lds.png"):  # fmt: skip
        assert (pipe / name).exists(), name
    rows, pipeline = payload["rows"], payload["pipeline"]
    assert pipeline["arc"] == "0 2 1 0 0 1"
    assert list(rows) == ["base", "pruned", "pruned + LDS add-ons", "pruned + random add-ons"]
    assert rows["pruned"]["params"] < rows["base"]["params"]
    # What the quick run shows (NHN's method): DNP prunes half the 3x3/5x5 kernels, and LDS
    # records each of its location and direction cycles, with distinct scores in the population.
    assert pipeline["prune"]["kernels"] == pytest.approx(0.5, abs=0.02)
    cycles = [json.loads(line) for line in (pipe / "lds" / "lds.jsonl").read_text().splitlines()]
    assert [c["phase"] for c in cycles] == ["location", "location", "direction"]
    assert [c["cycle"] for c in cycles] == [0, 1, 2]
    assert any(c["best"] > c["worst"] for c in cycles)
    n = len(pipeline["lds"]["locations"])
    assert sum(g >= 0 for g in payload["random_addons"]["genes"]) == n
    assert {"test_accuracy_without_addons", "drop"} <= set(pipeline["ablation"])
    assert (tmp_path / "table1.md").exists() and (tmp_path / "results.json").exists()
    # The command `fnnjax nhn` prints at its end retrains the found network with its DNP masks
    # and add-on directions applied.
    argv = ["train", "--spec", str(pipe / "nhn_spec.json"), "--masks", str(pipe / "nhn_masks.npz"),
            "--dataset", "digits", "--epochs", "1", "--limit-train", "64", "--batch-size", "32",
            "--quiet", "--out", str(tmp_path / "re")]  # fmt: skip
    assert main(argv) == 0
    config = json.loads((tmp_path / "re" / "config.json").read_text())
    assert config["model"]["use_masks"] is True
    with pytest.raises(SystemExit):
        main(["nhn", "--quick", "--out", str(pipe)])  # --arc or --search is required
    assert main(["nhn", "--quick", "--arc", str(tmp_path / "missing.txt"), "--out", str(pipe)]) == 2
    assert "--arc" in capsys.readouterr().err
