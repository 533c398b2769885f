"""Every command shares its run flags, and a preset (``--quick``) never hides an explicit flag."""

from __future__ import annotations

import re

import pytest

from fnnjax.cli import build_parser, main

COMMANDS = ("train", "enas", "envelopenet", "nhn", "capacity")
SHARED = ("--dataset", "--validation", "--limit-train", "--batch-size", "--epochs", "--seed",
          "--out", "--no-resume")  # fmt: skip


def _help_lines(command: str) -> dict[str, str]:
    """Each shared flag's help as ``--help`` prints it (the flag's block of lines, joined)."""
    subparsers = build_parser()._subparsers._group_actions[0].choices
    text = subparsers[command].format_help()
    blocks = re.split(r"\n(?=  -)", text)
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
    assert "unknown dataset 'nosuch'" in capsys.readouterr().err  # not a digits run
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
