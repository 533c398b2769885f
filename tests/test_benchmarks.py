"""The benchmark scripts still run (at --quick size; their numbers live in BENCHMARKS.md)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(args, tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, *args, "--quick", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stderr[-3000:]}"
    return json.loads(out.read_text())


def test_train_step_benchmark_reports_the_data_share(tmp_path):
    result = _run(["-m", "benchmarks.train_step"], tmp_path)
    assert set(result) == {"machine", "batch", "params", "seconds", "data_share"}
    assert "(cpu)" in result["machine"] and result["batch"] == 128
    assert result["params"] == 6_578_010  # the FNN paper's dense baseline on 28x28x1
    seconds = result["seconds"]
    assert set(seconds) == {"engine", "compute", "host"}
    # A dense step of batch 128 takes milliseconds; every variant runs the same compiled step, so a
    # retrace/recompile per call or a lost device-resident split shows up as an outlier here.
    assert all(1e-4 < t < 5.0 for t in seconds.values()), seconds
    assert max(seconds.values()) / min(seconds.values()) < 10, seconds  # a recompile: ~40x
    assert result["data_share"] == (seconds["engine"] - seconds["compute"]) / seconds["engine"]


def test_fnn_step_benchmark_runs(tmp_path):
    result = _run(["benchmarks/fnn_step.py", "--skip-big"], tmp_path)
    assert {"factored", "materialized", "fnn_1024", "dense"} <= set(result)
    assert result["summary"]["factored_speedup"] > 0 and result["summary"]["fnn1024_over_dense"] > 0
    assert "factored (A) vs materialized (B)" in result["table"]


def test_substrate_benchmark_reports_its_three_ratios(tmp_path):
    from benchmarks import substrate

    result = substrate.main(["--quick"])
    seconds, ratios = result["seconds"], result["ratios"]
    assert set(seconds) == {"plain", "stats", "choice_switch", "choice_switch_remat", "choice_all",
                            "sampled", "standalone"}  # fmt: skip
    assert all(1e-5 < t < 5.0 for t in seconds.values()), seconds
    assert ratios["stats_overhead"] == seconds["stats"] / seconds["plain"]
    assert ratios["switch_over_all"] == seconds["choice_switch"] / seconds["choice_all"]
    assert ratios["remat_over_switch"] == seconds["choice_switch_remat"] / seconds["choice_switch"]
    assert ratios["selected_over_standalone"] == seconds["sampled"] / seconds["standalone"]
    # Sane ranges for this tiny size on a loaded machine: a recompile per call (selections are
    # data, never static) would make a ratio ~100x; compute differences stay within 10x.
    assert all(0.1 < r < 10 for r in ratios.values()), ratios
    assert result["faster_mode"] in ("switch", "switch_remat", "all")
    assert "sampled / standalone" in result["table"]


def test_choice_warmup_diagnostic_times_each_kind_of_selection():
    from benchmarks import choice_warmup

    result = choice_warmup.main(["--quick"])
    assert set(result) == {"fixed", "sampled", "fixed-again", "sampled-host", "two-arcs"}
    assert all(0 < r["median"] < 5e3 and len(r["first5"]) >= 2 for r in result.values()), result


def test_envelope_benchmark_reports_the_statistics_overhead():
    from benchmarks import envelope

    result = envelope.main(["--quick"])
    seconds = result["seconds"]
    assert set(seconds) == {"plain", "blocks", "all"}
    assert all(1e-5 < t < 5.0 for t in seconds.values())
    assert result["ratio"] == seconds["blocks"] / seconds["plain"]
    assert result["ratio_all"] == seconds["all"] / seconds["plain"]
    assert 0.1 < result["ratio"] < 10 and "every conv unit" in result["table"]


def test_depthwise_benchmark_times_both_ways():
    from benchmarks import depthwise

    result = depthwise.main(["--quick"])
    row = result["rows"][3]
    assert all(1e-6 < row[k] < 5.0 for k in ("grouped_conv", "shifts"))
    assert row["ratio"] == row["grouped_conv"] / row["shifts"] and "3x3" in result["table"]


def test_capacity_benchmark_times_a_consultation_and_a_change_against_an_epoch():
    from benchmarks import capacity

    result = capacity.main(["--quick"])
    assert set(result["consultation_seconds"]) == {"obd, gate (default)", "obd, parameters",
                                                   "taylor, gate", "magnitude"}  # fmt: skip
    assert all(1e-6 < t < 5.0 for t in result["consultation_seconds"].values())
    assert result["epoch_seconds"] == result["step_seconds"] * 10
    assert 0 < result["change_seconds"] < 120 and "re-jit" in result["table"]


def test_lds_population_benchmark_times_one_call_against_one_by_one():
    from benchmarks import lds_population

    result = lds_population.main(["--quick"])  # it asserts the two give the same scores
    seconds = result["seconds"]
    assert set(seconds) == {"population_call", "all_at_once", "sequential"}
    assert all(1e-6 < t < 10.0 for t in seconds.values())
    assert result["throughput_ratio"] == seconds["sequential"] / seconds["population_call"]
    assert result["supernet"]["edges"] == 6 and result["population"] == 4


def test_enas_step_benchmark_times_every_path_per_arc():
    from benchmarks import enas_step

    result = enas_step.main(["--quick"])
    rows, summary = result["rows"], result["summary"]
    assert len(rows) == 2 and all({"sampled", "standalone"} <= set(r) for r in rows)
    assert "supernet" in rows[0]
    ratios = [r["sampled"] / r["standalone"] for r in rows]
    assert summary["sampled_over_standalone_max"] == max(ratios)
    assert summary["compiles_after_warmup"] == 0  # a new arc compiles nothing
    # The PyTorch peer is optional: timed when installed, skipped otherwise.
    try:
        import torch  # noqa: F401
    except ImportError:
        assert "torch" not in rows[0] and "sampled_over_torch_median" not in summary
    else:
        assert summary["sampled_over_torch_max"] == max(r["sampled"] / r["torch"] for r in rows)


def test_conv_grad_benchmark_checks_and_times_both_gradients():
    from benchmarks import conv_grad

    seconds = conv_grad.main(["--quick"])["seconds"]
    for k in (1, 3, 5):
        assert {f"conv{k}x{k}_kernel_grad_xla", f"conv{k}x{k}_kernel_grad_matmul"} <= set(seconds)
    assert all(0 < t < 5.0 for t in seconds.values())
