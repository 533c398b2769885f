"""`fnnjax profile` (the templates paper's profiler from the command line) and the zoo options of
`fnnjax train` (--template, --width)."""

import json

import pytest

from fnnjax import cli
from fnnjax.arch import analytic_counts
from fnnjax.construct import layer_filters
from fnnjax.models import build_spec


def test_profile_prints_the_table_and_writes_json(tmp_path, capsys):
    path = tmp_path / "sub" / "p.json"
    argv = ["profile", "--model", "mobilenet", "--template", "uniform", "--width", "0.05",
            "--batch", "4", "--repeats", "2", "--warmup", "0", "--json", str(path)]  # fmt: skip
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    spec = build_spec("mobilenet", 10, (32, 32, 3), "uniform", 0.05)
    counts = analytic_counts(spec)
    assert "| mobilenet-uniform-x0.05 |" in out and "latency (ms/batch)" in out
    assert f"F = {sum(layer_filters(spec))}" in out and f"params {counts['params']:,}" in out
    record = json.loads(path.read_text())
    p = record["profile"]
    assert p["params"] == counts["params"] and p["flops"] == counts["flops"] and p["batch"] == 4
    assert p["memory_mode"] == "train" and p["memory"]["peak_bytes"] >= p["memory"]["activation_bytes"] > 0
    assert p["latency_s"] > 0 and p["latency_repeats"] == 2
    assert record["layer_filters"] == list(layer_filters(spec)) and record["template"] == "uniform"


def test_profile_of_a_registry_model_without_latency(capsys):
    argv = ["profile", "--model", "dense", "--input-shape", "8", "8", "1", "--no-latency",
            "--memory", "inference", "--batch", "2"]  # fmt: skip
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    widths = [64, 2000, 1500, 1000, 500, 10]  # DenseBaseline on 8x8x1 inputs
    params = sum(a * b + b for a, b in zip(widths[:-1], widths[1:], strict=True))
    details = out.strip().splitlines()[-1]
    assert f"params {params:,}" in details and "inference memory" in details
    assert "latency" not in details
    row = next(line for line in out.splitlines() if line.startswith("| dense |"))
    assert row.split("|")[6].strip() == "-"  # the latency column


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--model", "resnet9000"], "unknown model 'resnet9000'; expected one of"),
        (["--model", "resnet50", "--template", "cubic"], "unknown template 'cubic'; expected one of: base"),
        (["--model", "dense", "--template", "uniform"], "apply to the zoo models"),
        (["--model", "vgg19", "--head", "gru"], "head: expected one of 'linear', 'dense', 'fnn'"),
    ],
)
def test_profile_mistakes_are_one_line_errors(argv, expected, capsys):
    assert cli.main(["profile", *argv, "--no-latency"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fnnjax: error: ") and expected in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--width", "-1"], "argument --width: expected a positive number, got -1"),
        (["--input-shape", "32", "32", "0"], "argument --input-shape: expected a positive int, got 0"),
    ],
)
def test_profile_argument_mistakes_exit_2_with_one_line(argv, expected, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["profile", "--model", "vgg19", *argv, "--no-latency"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fnnjax profile: error: ") and expected in err and len(err.splitlines()) == 1


def test_train_takes_template_and_width_for_zoo_models(tmp_path, capsys):
    argv = ["train", "--model", "mobilenet", "--template", "uniform", "--width", "0.05",
            "--dataset", "digits", "--epochs", "1", "--batch-size", "64", "--limit-train", "512",
            "--devices", "1", "--quiet", "--out", str(tmp_path)]  # fmt: skip
    assert cli.main(argv) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["model"] == {"name": "mobilenet", "options": {"template": "uniform", "width": 0.05},
                                "num_classes": 10, "input_shape": [8, 8, 1]}  # fmt: skip
    spec = build_spec("mobilenet", 10, (8, 8, 1), "uniform", 0.05)
    assert summary["num_params"] == analytic_counts(spec)["params"]
    assert summary["dataset"]["num_train"] == 512 and summary["epochs_done"] == 1
    assert len(summary["devices"]) == 1
    assert "mobilenet on digits: test accuracy" in capsys.readouterr().out
