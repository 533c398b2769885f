"""Every command shares its run flags, and a preset (``--quick``) never hides an explicit flag:
a flag given always wins over the command's preset, the rest come from the preset (the settings on
the library's configs), and a bad ``--out`` is one line. Drivers are replaced by stand-ins that
record what they were given: nothing trains here."""

from __future__ import annotations

import dataclasses
import re
from types import SimpleNamespace

import pytest

from fnnjax.cli import build_parser, common, main

COMMANDS = ("train", "enas", "envelopenet", "nhn", "capacity")
SHARED = ("--dataset", "--validation", "--limit-train", "--batch-size", "--epochs", "--seed",
          "--out", "--no-resume", "--devices", "--distributed", "--coordinator",
          "--num-processes", "--process-id")  # fmt: skip


def _help_lines(command: str) -> dict[str, str]:
    """Each shared flag's help as ``--help`` prints it (the flag's block of lines, joined)."""
    subparsers = build_parser()._subparsers._group_actions[0].choices
    text = subparsers[command].format_help()
    blocks = re.split(r"\n(?=  -)|\n\n", text)
    return {flag: " ".join(next(b for b in blocks if b.lstrip().startswith(flag + " ")
                                or b.strip() == flag or b.lstrip().startswith(flag + "\n")).split())
            for flag in SHARED}  # fmt: skip


def test_every_training_command_lists_the_shared_flags_identically():
    first = _help_lines("train")
    for command in COMMANDS[1:]:
        assert _help_lines(command) == first, command


def test_enas_quick_with_explicit_flags_keeps_them(tmp_path, monkeypatch, capsys):
    from fnnjax.construct import enas

    seen = []

    def no_search(data, config, *args, **kwargs):
        seen.append((data.name, config))
        raise KeyboardInterrupt

    monkeypatch.setattr(enas, "search", no_search)
    assert main(["enas", "--quick", "--dataset", "nosuch", "--layers", "3", "--out",
                 str(tmp_path)]) == 2  # fmt: skip
    assert "--dataset: unknown dataset 'nosuch'" in capsys.readouterr().err  # not a digits run
    assert main(["enas", "--quick", "--layers", "3", "--epochs", "2", "--out", str(tmp_path)]) == 130
    name, config = seen[-1]
    assert name == "digits" and (config.layers, config.epochs) == (3, 2)
    assert config == enas.SearchConfig.quick(layers=3, epochs=2)  # the rest: the preset's


def test_envelopenet_quick_with_explicit_flags_keeps_them(tmp_path):
    from fnnjax.cli.envelopenet import envelope_config
    from fnnjax.construct import envelope as ev

    def args(*argv):
        return build_parser().parse_args(["envelopenet", "--out", str(tmp_path), *argv])

    quick = args("--quick")
    assert envelope_config(quick) == ev.ConstructionConfig.quick()
    assert (quick.dataset, quick.limit_train) == ("digits", 400)
    mixed = args("--quick", "--iterations", "4", "--epochs", "1", "--dataset", "fashion_mnist")
    assert envelope_config(mixed) == ev.ConstructionConfig.quick(iterations=4, epochs_per_iteration=1)
    assert (mixed.dataset, mixed.limit_train) == ("fashion_mnist", 400)
    assert envelope_config(args("--epochs-per-iteration", "2")).epochs_per_iteration == 2


@pytest.mark.parametrize("command", ("train", "enas", "envelopenet", "nhn"))
def test_an_out_that_is_a_file_is_one_line(command, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    extra = {"nhn": ["--arc", "0", "--layers", "1"], "train": ["--limit-train", "100"]}.get(command, [])
    assert main([command, *extra, "--out", str(blocker / "sub")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--out {blocker / 'sub'}: {blocker} is a file" in err[0], err


@pytest.mark.parametrize("command", COMMANDS)
def test_cluster_flags_without_distributed_or_out_of_range_are_one_line(command, tmp_path, capsys):
    extra = {"nhn": ["--arc", "0", "--layers", "1"], "capacity": ["--task", "regression"]}
    base = [command, *extra.get(command, []), "--out", str(tmp_path / "run")]
    assert main([*base, "--coordinator", "127.0.0.1:1234"]) == 2
    assert main([*base, "--distributed", "--num-processes", "2", "--process-id", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2, err
    assert "--coordinator: it describes a multi-host run, which needs --distributed" in err[0]
    assert "--process-id: expected 0 to 1 (--num-processes 2), got 2" in err[1]
    assert not (tmp_path / "run").exists()  # refused before anything is written


class _Stop(Exception):
    pass


def _parse(module, argv):
    parser = common.Parser(prog="fnnjax")
    module.add_parser(parser.add_subparsers(dest="command"), [])
    return parser.parse_args(argv)


def test_nhn_quick_with_explicit_flags(tmp_path, monkeypatch):
    import fnnjax.train
    from fnnjax.cli import nhn as command
    from fnnjax.construct import nhn
    from fnnjax.errors import ConfigError

    seen = {}

    def load_dataset(name, **kwargs):
        seen["data"] = (name, kwargs)
        return SimpleNamespace(input_shape=(28, 28, 1))

    def run_nhn(data, arc, config, out, **kwargs):
        seen.update(arc=arc, config=config, out=out, **kwargs)
        raise _Stop

    monkeypatch.setattr(fnnjax.train, "load_dataset", load_dataset)
    monkeypatch.setattr(nhn, "run_nhn", run_nhn)
    argv = ["nhn", "--quick", "--arc", "2 0 0", "--layers", "2", "--dataset", "fashion_mnist",
            "--out", str(tmp_path / "o")]  # fmt: skip
    with pytest.raises(_Stop):
        command.run(_parse(command, argv))
    assert seen["config"] == dataclasses.replace(nhn.NhnConfig.quick(), layers=2)
    assert seen["data"] == ("fashion_mnist", {"validation_fraction": 0.1, "seed": 0,
                                              "limit_train": None})  # fmt: skip
    assert seen["progress"] is True and seen["resume"] is True
    assert seen["arc"].tolist() == [2, 0, 0]
    # Without --dataset the preset's digits; one --epochs for the three trainings, or each its own.
    quick = nhn.NhnConfig.quick()
    config = command.nhn_config(_parse(command, [*argv[:4], "--epochs", "3", "--population", "6",
                                                 "--out", "o"]))  # fmt: skip
    assert (config.base_epochs, config.prune_epochs, config.final_epochs) == (3, 3, 3)
    assert config.lds == dataclasses.replace(
        quick.lds, location=dataclasses.replace(quick.lds.location, population=6),
        direction=dataclasses.replace(quick.lds.direction, population=6))  # fmt: skip
    config = command.nhn_config(_parse(command, ["nhn", "--arc", "a", "--stage-epochs", "5", "6",
                                                 "7", "--keep-stem", "--out", "o"]))  # fmt: skip
    assert config == dataclasses.replace(nhn.NhnConfig(), base_epochs=5, prune_epochs=6,
                                         final_epochs=7, prune_stem=False)  # fmt: skip
    with pytest.raises(ConfigError, match=r"^--epochs 3 and --stage-epochs 5 6 7: give one"):
        command.nhn_config(_parse(command, ["nhn", "--arc", "a", "--epochs", "3", "--stage-epochs",
                                            "5", "6", "7", "--out", "o"]))  # fmt: skip
    with pytest.raises(ConfigError, match=r"^--population: expected >= 15 .*got 12$"):
        command.nhn_config(_parse(command, ["nhn", "--arc", "a", "--population", "12", "--out", "o"]))
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError) as caught:
        command.run(_parse(command, ["nhn", "--quick", "--arc", "0 0 1", "--out",
                                     str(tmp_path / "file")]))  # fmt: skip
    assert str(caught.value).startswith("--out ") and "\n" not in str(caught.value)


def test_nhn_search_takes_the_quick_search_with_explicit_flags(monkeypatch):
    from fnnjax.cli import nhn as command
    from fnnjax.construct.enas import SearchConfig

    data = SimpleNamespace(input_shape=(8, 8, 1))
    args = _parse(command, ["nhn", "--quick", "--search", "--search-filters", "8", "--out", "o"])
    config = command.nhn_config(args)
    assert command.search_config(args, config, data) == SearchConfig.quick(
        layers=3, filters=8, head_pool="grouped", skips="paper", cutout=4)  # fmt: skip
    args = _parse(command, ["nhn", "--search", "--stage-epochs", "5", "6", "7", "--out", "o"])
    search = command.search_config(args, command.nhn_config(args), data)
    assert search == SearchConfig(layers=12, epochs=5, head_pool="grouped", skips="paper", cutout=4)


def test_capacity_quick_with_explicit_flags(tmp_path, monkeypatch):
    from fnnjax.cli import capacity as command
    from fnnjax.construct import capacity
    from fnnjax.errors import ConfigError

    seen = {}

    def data_and_spec(args):
        seen["args"] = args
        return SimpleNamespace(name="sines"), "spec"

    def train_dynamic(spec, data, train, config, out, **kwargs):
        seen.update(train=train, config=config, out=out, **kwargs)
        raise _Stop

    monkeypatch.setattr(command, "_data_and_spec", data_and_spec)
    monkeypatch.setattr(capacity, "train_dynamic", train_dynamic)
    argv = ["capacity", "--task", "regression", "--quick", "--width", "5", "--tau", "0.2", "--out",
            str(tmp_path / "o")]  # fmt: skip
    with pytest.raises(_Stop):
        command.run(_parse(command, argv))
    quick = capacity.DynamicConfig.quick()
    assert seen["config"] == dataclasses.replace(
        quick, controller=dataclasses.replace(quick.controller, tau=0.2))  # fmt: skip
    args = seen["args"]
    assert (args.width, args.hidden, args.complexity, args.num_train, args.dim) == (5, 8, 3, 512, 1)
    train = seen["train"]
    assert (train.epochs, train.batch_size, train.learning_rate, train.seed) == (15, 64, 3e-3, 0)
    assert seen["objective"] == "regression" and seen["resume"] is True
    # The classification preset, and flags of the controller and of the run over it.
    argv = ["capacity", "--task", "classification", "--quick", "--samples", "16", "--epochs", "2",
            "--out", str(tmp_path / "c")]  # fmt: skip
    with pytest.raises(_Stop):
        command.run(_parse(command, argv))
    assert seen["config"] == dataclasses.replace(quick, hutchinson_samples=16, hutchinson_chunk=16)
    assert (seen["args"].dataset, seen["args"].width, seen["train"].epochs) == ("digits", 4, 2)
    assert seen["train"].learning_rate == 0.01
    # Without --quick: the library's defaults.
    args = _parse(command, ["capacity", "--task", "regression", "--out", "o"])
    assert command.dynamic_config(args) == capacity.DynamicConfig()
    with pytest.raises(ConfigError, match=r"^--tau: "):
        command.dynamic_config(_parse(command, [*argv[:4], "--tau", "2", "--out", "o"]))
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError) as caught:
        command.run(_parse(command, ["capacity", "--task", "regression", "--quick", "--out",
                                     str(tmp_path / "file")]))  # fmt: skip
    assert str(caught.value).startswith("--out ") and "\n" not in str(caught.value)


def test_library_messages_are_named_by_the_flag_that_sets_them():
    from fnnjax.cli.common import flag_names

    options = {"--dataset", "--batch-size", "--lr", "--out", "--no-resume"}
    assert flag_names("batch_size 40 is larger than the training split (5 examples)", options) \
        == "--batch-size: batch_size 40 is larger than the training split (5 examples)"
    assert flag_names("unknown dataset 'x'; expected one of: digits", options).startswith(
        "--dataset: unknown dataset 'x'")
    assert flag_names("learning_rate: expected a positive number, got 0", options) == \
        "--lr: expected a positive number, got 0"
    assert flag_names("x: pass --no-resume (resume=False) or another --out (out_dir=...)") == \
        "x: pass --no-resume or another --out"
    assert flag_names("initial_variables: wrong shapes", options) == \
        "initial_variables: wrong shapes"  # no such flag: left as it is

