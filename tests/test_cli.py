"""The `fnnjax` command: the README's main job, and one-line errors for a user's mistakes."""

import json
import subprocess
import sys

import pytest

from fnnjax import cli


def test_default_train_reaches_90_percent_on_digits(tmp_path, capsys):
    """`fnnjax train` with no dataset argument: the dense baseline on digits, > 90% test accuracy."""
    assert cli.main(["train", "--quiet", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["dataset"]["name"] == "digits" and summary["model"]["name"] == "dense"
    assert summary["final_test_accuracy"] > 0.90
    assert "test accuracy" in capsys.readouterr().out
    assert {p.name for p in tmp_path.iterdir()} >= {"config.json", "metrics.jsonl", "checkpoints", "summary.json"}
    # Running the same command again resumes the finished run instead of training anew.
    assert cli.main(["train", "--quiet", "--out", str(tmp_path)]) == 0
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 20


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["train", "--model", "resnet9000"], "unknown model 'resnet9000'; expected one of"),
        (["train", "--dataset", "imagenet"], "unknown dataset 'imagenet'; expected one of"),
        (["train", "--optimizer", "rmsprop"], "optimizer: expected one of adam, adamw, sgd"),
        (["train", "-o", "depth=3"], "model 'dense' does not accept option(s) depth"),
        (["train", "--devices", "99"], "devices must be between 1 and 8"),
    ],
)
def test_mistakes_are_one_line_errors(argv, expected, capsys, tmp_path):
    assert cli.main([*argv, "--quiet", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fnnjax: error: ") and expected in err and len(err.splitlines()) == 1


def test_unwritable_out_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert cli.main(["train", "--quiet", "--epochs", "1", "--out", str(tmp_path / "file" / "run")]) == 2
    assert "not writable" in capsys.readouterr().err


def test_module_entry_point_and_listings():
    out = subprocess.run([sys.executable, "-m", "fnnjax", "--help"], capture_output=True, text=True, check=True)
    assert "train" in out.stdout and "examples:" in out.stdout
    out = subprocess.run([sys.executable, "-m", "fnnjax", "models"], capture_output=True, text=True, check=True)
    assert "dense" in out.stdout.split()


def test_train_an_fnn_from_the_command_line(tmp_path, capsys):
    argv = ["train", "--model", "fnn-1024", "-o", "iterations=2", "-o", "input_every_iteration=false",
            "--epochs", "1", "--quiet", "--out", str(tmp_path)]
    assert cli.main(argv) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["model"] == {"name": "fnn-1024", "options": {"iterations": 2, "input_every_iteration": False}}
    assert summary["num_params"] == 64 * 258 + 1024 * 514 + 10 * 258  # digits: 64 input neurons


def test_bad_fnn_option_is_a_one_line_error(tmp_path, capsys):
    assert cli.main(["train", "--model", "fnn", "-o", "normalization=cosine", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "normalization" in err and len(err.strip().splitlines()) == 1
