"""The `fnnjax` command: the README's main job, and one-line errors for a user's mistakes."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fnnjax import cli


def test_default_train_reaches_90_percent_on_digits(tmp_path, capsys):
    """`fnnjax train` with no dataset argument (3 of its 20 epochs, one device): the dense
    baseline on digits, > 90% test accuracy; the run folder has its figure and summary."""
    argv = ["train", "--quiet", "--epochs", "3", "--devices", "1", "--out", str(tmp_path)]
    assert cli.main(argv) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["dataset"]["name"] == "digits" and summary["model"]["name"] == "dense"
    assert summary["final_test_accuracy"] > 0.90
    printed = capsys.readouterr().out
    assert "test accuracy" in printed and "no best checkpoint without --validation" in printed
    assert {p.name for p in tmp_path.iterdir()} >= {
        "config.json", "metrics.jsonl", "checkpoints", "summary.json", "curves.png"}
    # Running the same command again resumes the finished run instead of training anew.
    assert cli.main(argv) == 0
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 3


def test_the_readme_train_examples_run_one_after_the_other(tmp_path, monkeypatch, capsys):
    """The README's first and second examples used to share runs/dense-digits, and the SGD run
    died restoring the Adam run's checkpoints. Default folders now differ when the runs differ."""
    monkeypatch.chdir(tmp_path)
    tiny = ["--epochs", "1", "--limit-train", "256", "--devices", "1", "--quiet"]
    assert cli.main(["train", *tiny]) == 0
    second = ["train", "--model", "dense", "--optimizer", "sgd", "--lr", "0.1", "--momentum", "0.9",
              "--nesterov", "--schedule", "cosine", "--augment", *tiny]  # fmt: skip
    assert cli.main(second) == 0
    folders = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert len(folders) == 2 and all(f.startswith("dense-digits-") for f in folders)
    assert cli.main(second) == 0  # the same command finds its own folder and resumes
    assert len(list((tmp_path / "runs").iterdir())) == 2
    # An explicit --out holding another run is refused with what differs and how to proceed.
    (adam,) = [f for f in folders
               if json.loads((tmp_path / "runs" / f / "config.json").read_text())["config"]["optimizer"] == "adam"]  # fmt: skip
    capsys.readouterr()
    assert cli.main([*second, "--out", str(tmp_path / "runs" / adam)]) == 2
    err = capsys.readouterr().err
    assert "optimizer: saved 'adam', now 'sgd'" in err and "--no-resume" in err
    assert len(err.strip().splitlines()) == 1


def test_no_readable_checkpoint_is_one_error_line_and_nothing_moves(tmp_path, capfd):
    argv = ["train", "--dataset", "synthetic", "--epochs", "1", "--devices", "1", "--quiet",
            "--out", str(tmp_path)]  # fmt: skip
    assert cli.main(argv) == 0
    (step,) = (tmp_path / "checkpoints").iterdir()
    (step / "meta" / "metadata").write_text("{junk")
    capfd.readouterr()
    assert cli.main(argv) == 2
    err = capfd.readouterr().err
    assert err.startswith("fnnjax: error: none of the checkpoints") and len(err.splitlines()) == 1
    assert step.exists() and not (tmp_path / "damaged").exists()


def test_a_damaged_newest_checkpoint_is_one_warning_line_and_the_run_finishes(tmp_path, capfd):
    argv = ["train", "--dataset", "synthetic", "--epochs", "2", "--devices", "1", "--quiet",
            "--out", str(tmp_path)]  # fmt: skip
    assert cli.main(argv) == 0
    newest = max((tmp_path / "checkpoints").iterdir(), key=lambda p: int(p.name))
    data_files = [p for p in (newest / "state").rglob("*")
                  if p.is_file() and p.parent.name == "d"]  # fmt: skip
    max(data_files, key=lambda p: p.stat().st_size).write_bytes(b"truncated")
    capfd.readouterr()
    assert cli.main(argv) == 0
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fnnjax: warning: checkpoint"), err
    assert f"checkpoints/{newest.name} is unreadable" in err[0] and "resuming from step" in err[0]
    assert len(list((tmp_path / "damaged").iterdir())) == 1


def test_a_damaged_checkpoint_prints_no_traceback_from_orbax_in_a_fresh_process(tmp_path):
    """#26: the tracebacks orbax's abandoned reads left behind (asyncio's reports of them, when
    collected during the resumed training or at exit) followed the warning line: 75-156 lines."""
    argv = ["train", "--dataset", "synthetic", "--epochs", "2", "--devices", "1", "--quiet",
            "--out", str(tmp_path)]  # fmt: skip
    assert cli.main(argv) == 0
    newest = max((tmp_path / "checkpoints").iterdir(), key=lambda p: int(p.name))
    (newest / "state" / "manifest.ocdbt").unlink()
    done = subprocess.run([sys.executable, "-m", "fnnjax", *argv], capture_output=True, text=True,
                          cwd=Path(cli.__file__).parents[1], timeout=300)  # fmt: skip
    err = done.stderr.strip().splitlines()
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert len(err) == 1 and err[0].startswith("fnnjax: warning: checkpoint"), err


def test_fewer_epochs_than_the_folder_trained_is_one_warning_and_epochs_are_counted_right(
        tmp_path, capsys):  # fmt: skip
    argv = ["train", "--dataset", "synthetic", "--devices", "1", "--quiet", "--out", str(tmp_path)]
    assert cli.main([*argv, "--epochs", "2"]) == 0
    assert " after 2 epochs, " in capsys.readouterr().out
    assert cli.main([*argv, "--epochs", "1"]) == 0
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"fnnjax: warning: {tmp_path} already trained 2 epochs")
    assert "Pass --epochs 2 or more" in err[0] and "--no-resume" in err[0]
    assert " after 2 epochs, " in captured.out
    assert cli.main([*argv, "--epochs", "1", "--no-resume"]) == 0
    assert " after 1 epoch, " in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["train", "--model", "resnet9000"], "unknown model 'resnet9000'; expected one of"),
        (["train", "--dataset", "imagenet"], "unknown dataset 'imagenet'; expected one of"),
        (["train", "--dataset", "sines3d-c2"], "unknown dataset 'sines3d-c2'; the generated regression"),
        (["train", "--optimizer", "rmsprop"], "optimizer: expected one of 'adam', 'adamw', 'sgd'"),
        (["train", "-o", "depth=3"], "model 'dense' does not accept option(s) depth"),
        (["train", "--devices", "99"], "--devices: expected 1 to 8"),
    ],
)
def test_mistakes_are_one_line_errors(argv, expected, capsys, tmp_path):
    assert cli.main([*argv, "--quiet", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fnnjax: error: ") and expected in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["train", "--epochs", "0"], "fnnjax train: error: argument --epochs: expected a positive int"),
        (["train", "--width", "-1"], "fnnjax train: error: argument --width: expected a positive number"),
        (["train", "--lr"], "fnnjax train: error: argument --lr: expected one argument"),
        (["train", "--bogus"], "fnnjax: error: unrecognized arguments: --bogus"),
        (["profile"], "fnnjax profile: error: the following arguments are required: --model"),
    ],
)
def test_argument_errors_are_one_line_not_a_usage_block(argv, expected, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith(expected) and len(err.strip().splitlines()) == 1
    assert "--help` lists the options" in err


def test_debug_is_accepted_after_the_command_and_shows_the_traceback(tmp_path):
    from fnnjax.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown dataset"):
        cli.main(["train", "--dataset", "imagenet", "--out", str(tmp_path), "--debug"])
    with pytest.raises(ConfigError, match="unknown dataset"):
        cli.main(["--debug", "train", "--dataset", "imagenet", "--out", str(tmp_path)])


def test_datasets_listing_survives_a_damaged_file(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "mnist"
    folder.mkdir()
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):  # fmt: skip
        (folder / f"{stem}.gz").write_bytes(b"\x1f\x8bnot really gzip")
    monkeypatch.setenv("FNNJAX_DATA_DIR", str(tmp_path))
    assert cli.main(["datasets"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("mnist "))
    assert "unusable" in line and "train-images-idx3-ubyte.gz" in line


def test_unwritable_out_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert cli.main(["train", "--quiet", "--epochs", "1", "--out", str(tmp_path / "file" / "run")]) == 2
    assert f"--out {tmp_path / 'file' / 'run'}: {tmp_path / 'file'} is a file, not a folder" in \
        capsys.readouterr().err


def test_module_entry_point_and_listings():
    out = subprocess.run([sys.executable, "-m", "fnnjax", "--help"], capture_output=True, text=True, check=True)
    assert "train" in out.stdout and "examples:" in out.stdout
    out = subprocess.run([sys.executable, "-m", "fnnjax", "models"], capture_output=True, text=True, check=True)
    assert "dense" in out.stdout.split()


def test_train_an_fnn_from_the_command_line(tmp_path, capsys):
    argv = ["train", "--model", "fnn-1024", "-o", "iterations=2", "-o", "input_every_iteration=false",
            "--epochs", "1", "--quiet", "--devices", "1", "--out", str(tmp_path)]
    assert cli.main(argv) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["model"] == {"name": "fnn-1024", "options": {"iterations": 2, "input_every_iteration": False},
                                "num_classes": 10, "input_shape": [8, 8, 1]}  # fmt: skip
    assert summary["num_params"] == 64 * 258 + 1024 * 514 + 10 * 258  # digits: 64 input neurons


def test_bad_fnn_option_is_a_one_line_error(tmp_path, capsys):
    assert cli.main(["train", "--model", "fnn", "-o", "normalization=cosine", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "normalization" in err and len(err.strip().splitlines()) == 1


def test_profile_reports_progress_with_a_time_estimate(capsys):
    """`fnnjax profile --model resnet50 --template quadratic` ran ~5 minutes without a word."""
    argv = ["profile", "--model", "dense", "--input-shape", "8", "8", "1", "--batch", "2",
            "--repeats", "2", "--warmup", "1"]  # fmt: skip
    assert cli.main(argv) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "fnnjax profile: compiling the forward pass (batch 2)"
    assert any("compiling one training step" in line for line in err)
    assert any(line.startswith("fnnjax profile: one forward call takes") and "to go" in line
               for line in err)  # fmt: skip
