"""One run-folder protocol under every driver: folders users already have keep resuming, a
different run is refused the same way everywhere (``fnnjax.train.runfolder``)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "fixtures"))
import run_folders as fixtures  # noqa: E402

# Per driver: a setting its saved record may lack (written before the setting existed), at its
# default today.
LATER_FIELD = {"fit": "cutout", "enas": "update_stats", "envelope": "stats_at",
               "lds": "train_mode", "nhn": "head_pool", "capacity": "max_shrink_loss"}  # fmt: skip


def _drop(value: Any, key: str) -> Any:
    if isinstance(value, dict):
        return {k: _drop(v, key) for k, v in value.items() if k != key}
    if isinstance(value, list):
        return [_drop(v, key) for v in value]
    return value


def _copy_without(driver: str, tmp_path: Path) -> Path:
    """The fixture of ``driver`` copied to ``tmp_path``, every saved record without the later
    field (JSON files and checkpoint descriptions alike)."""
    out = tmp_path / driver
    shutil.copytree(fixtures.HERE / driver, out)
    dropped = 0
    for path in out.rglob("*"):
        if path.is_file() and (path.suffix == ".json" or path.parent.name == "meta"):
            try:
                value = json.loads(path.read_text())
            except (UnicodeDecodeError, json.JSONDecodeError):
                continue
            smaller = _drop(value, LATER_FIELD[driver])
            if smaller != value:
                path.write_text(json.dumps(smaller))
                dropped += 1
    assert dropped, f"{driver}: no saved record holds {LATER_FIELD[driver]}"
    return out


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


@pytest.mark.parametrize("driver", fixtures.DRIVERS)
def test_a_folder_of_an_earlier_version_resumes_although_its_record_lacks_a_later_setting(
    driver, tmp_path
):
    out = _copy_without(driver, tmp_path)
    if driver == "fit":  # 1 epoch saved; a constant schedule extends exactly
        result = fixtures.run_fit(out, epochs=2)
        assert [h["epoch"] for h in result.history] == [1, 2]
    elif driver == "enas":  # epoch 0 saved
        result = fixtures.run_enas(out, epochs=2)
        assert [r["epoch"] for r in _lines(out / "search.jsonl")] == [0, 1]
    elif driver == "envelope":  # one iteration saved, a second one added
        result = fixtures.run_envelope(out, iterations=2)
        assert len(result["records"]) == 2
    elif driver == "lds":  # stopped in cycle 2 of 2
        said: list[str] = []
        result = fixtures.run_lds(out, log=said.append)
        assert said[0].startswith("resuming LDS after cycle 0")
        assert [r["cycle"] for r in _lines(out / "lds.jsonl")] == [0, 1]
    elif driver == "nhn":  # finished: its results come back, nothing is trained or rewritten
        saved = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
        said: list[str] = []
        result = fixtures.run_nhn(out, log=said.append)
        assert said == [f"the NHN pipeline in {out} is finished (results.json); nothing to redo "
                        "(--no-resume, resume=False: run it again)"]  # fmt: skip
        assert result["final"] == json.loads((out / "results.json").read_text())["final"]
        assert result["supernet"] is not None and result["spec"].name == "nhn"
        assert {p: p.stat().st_mtime_ns for p in saved} == saved
    else:  # capacity, finished: nothing redone
        saved = _lines(out / "capacity.jsonl")
        assert fixtures.run_capacity(out) == 0
        assert _lines(out / "capacity.jsonl") == saved
    assert not list(out.glob("previous-*"))  # resumed, not moved aside
    # --no-resume moves everything the driver wrote: its list names every file in the folder.
    assert {p.name for p in out.iterdir()} <= {*_files(driver), "run.json"}
    assert json.loads((out / "run.json").read_text())["starts"]  # provenance recorded


def _files(driver: str) -> tuple[str, ...]:
    from fnnjax.construct.capacity.driver import CAPACITY_FILES
    from fnnjax.construct.enas.search import SEARCH_FILES
    from fnnjax.construct.envelope.driver import CONSTRUCTION_FILES
    from fnnjax.construct.nhn.pipeline import NHN_FILES
    from fnnjax.construct.nhn.search import LDS_FILES
    from fnnjax.train.rundir import RUN_FILES

    return {"fit": RUN_FILES, "enas": SEARCH_FILES, "envelope": CONSTRUCTION_FILES,
            "lds": LDS_FILES, "nhn": NHN_FILES, "capacity": RUN_FILES + CAPACITY_FILES}[driver]


# -- the layer itself ---------------------------------------------------------------------------


def test_a_setting_missing_from_the_saved_record_counts_only_when_it_is_not_at_its_default():
    from fnnjax.train.runfolder import run_differences

    defaults = {"config": {"lr": 0.1, "cutout": 0, "new": None}}
    saved = {"seed": 0, "config": {"lr": 0.1}}
    assert run_differences(saved, {"seed": 0, "config": {"lr": 0.1, "cutout": 0}},
                           defaults=defaults) == []  # fmt: skip
    assert run_differences(saved, {"seed": 0, "config": {"lr": 0.1, "cutout": 8}},
                           defaults=defaults) == [("config.cutout", None, 8)]  # fmt: skip
    # Without a known default, a new field is a difference; ignored paths never are.
    assert run_differences(saved, {"seed": 1, "config": {"lr": 0.1, "x": 1}}) == [
        ("seed", 0, 1), ("config.x", None, 1)]
    assert run_differences(saved, {"seed": 1, "config": {"lr": 0.2}}, ignore=("seed",)) == [
        ("config.lr", 0.1, 0.2)]
    assert run_differences({"o": None}, {"o": {}}) == []  # no options == empty options


def test_a_different_run_is_refused_naming_each_setting_and_the_ways_out(tmp_path):
    from fnnjax.errors import CheckpointError
    from fnnjax.train.runfolder import RunMismatchError, check_same_run

    with pytest.raises(RunMismatchError) as caught:
        check_same_run(tmp_path, {"seed": 0, "config": {"lr": 0.1}},
                       {"seed": 1, "config": {"lr": 0.2}}, what="search", strip=("config.",),
                       hints={"config.lr": "why"})  # fmt: skip
    assert str(caught.value) == (
        f"{tmp_path} holds a different search (seed: saved 0, now 1; lr: saved 0.1, now 0.2 "
        "(why)); to keep both, pass another --out (out_dir=...); to start afresh here, pass "
        "--no-resume (resume=False), which moves the earlier run into previous-<time>/")
    assert isinstance(caught.value, CheckpointError) and isinstance(caught.value, ValueError)


def test_a_folder_records_its_starts_archives_on_no_resume_and_refuses_a_newer_schema(tmp_path):
    from fnnjax.errors import ConfigError
    from fnnjax.train.runfolder import SCHEMA_VERSION, RunFolder

    folder = RunFolder.open(tmp_path / "run", files=("log.jsonl", "a.json"), driver="test")
    folder.begin()
    folder.write_json("a.json", {"x": 1})
    for epoch in (1, 2, 3):
        folder.append_jsonl("log.jsonl", {"epoch": epoch})
    with open(folder.file("log.jsonl"), "a") as f:
        f.write('{"epoch": 4, "cut sh')  # killed while appending
    assert [r["epoch"] for r in folder.truncate_jsonl("log.jsonl", 2)] == [1, 2]
    again = RunFolder.open(tmp_path / "run", files=folder.files, driver="test")
    again.begin(note="resumed")
    record = again.read_json("run.json")
    assert record["schema"] == SCHEMA_VERSION and record["driver"] == "test"
    RunFolder.open(tmp_path / "run", files=folder.files, driver="inner").begin()
    assert [s["driver"] for s in again.read_json("run.json")["starts"]] == ["test", "test", "inner"]
    assert again.read_json("run.json")["driver"] == "test"  # the folder's driver: the first
    assert len(record["starts"]) == 2 and record["starts"][1]["note"] == "resumed"
    start = record["starts"][0]
    assert {"time", "command", "packages", "git_commit", "devices"} <= set(start)
    assert start["packages"]["jax"] and start["devices"]["count"] >= 1
    RunFolder.open(tmp_path / "run", files=folder.files, driver="test", resume=False)
    (archive,) = (tmp_path / "run").glob("previous-*")
    assert sorted(p.name for p in archive.iterdir()) == ["a.json", "log.jsonl", "run.json"]
    assert not list((tmp_path / "run").glob("*.json*"))
    (tmp_path / "run" / "run.json").write_text(json.dumps({"schema": SCHEMA_VERSION + 1}))
    with pytest.raises(ConfigError, match="written by a newer fnnjax"):
        RunFolder.open(tmp_path / "run", files=(), driver="test")
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="--out .*file: expected a folder, but it is a file"):
        RunFolder.open(tmp_path / "file", files=())
    memory = RunFolder.open(None, files=("a",))
    memory.write_json("a", 1)
    memory.begin()
    assert memory.read_json("a") is None and memory.read_jsonl("a") == []


# Per driver: a setting changed from the fixture's, and how the message names it.
CHANGED = {"fit": ({"learning_rate": 0.1}, "learning_rate: saved 0.05, now 0.1"),
           "enas": ({"controller_steps": 3}, "controller_steps: saved 2, now 3"),
           "envelope": ({"batch_size": 20}, "batch_size: saved 40, now 20"),
           "lds": ({"score_batch": 20}, "score_batch: saved 40, now 20"),
           "nhn": ({"prune_ratio": 0.25}, "prune_ratio: saved 0.5, now 0.25"),
           "capacity": (("--tau", "0.5"), "tau: saved 0.99, now 0.5"),
           "capacity training": (("--lr", "0.01"), "learning_rate: saved 0.003, now 0.01")}  # fmt: skip
WHAT = {"fit": "run", "enas": "search", "envelope": "construction", "lds": "LDS search",
        "nhn": "NHN pipeline", "capacity": "dynamic-capacity run",
        "capacity training": "dynamic-capacity run"}  # fmt: skip


@pytest.mark.parametrize("driver", [*fixtures.DRIVERS, "capacity training"])
def test_every_driver_refuses_a_different_run_with_one_error_and_one_message_shape(
    driver, tmp_path
):
    import re

    from fnnjax.train import RunMismatchError

    out = tmp_path / driver.split()[0]
    shutil.copytree(fixtures.HERE / driver.split()[0], out)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    change, named = CHANGED[driver]
    with pytest.raises(RunMismatchError) as caught:
        if driver.startswith("capacity"):
            fixtures.run_capacity(out, *change, "--debug")
        else:
            getattr(fixtures, f"run_{driver}")(out, **change)
    message = str(caught.value)
    shape = (rf"{re.escape(str(out))} holds a different {WHAT[driver]} \((.+)\); to keep both, "
             r"pass another --out \(out_dir=\.\.\.\); to start afresh here, pass --no-resume "
             r"\(resume=False\), which moves the earlier run into previous-<time>/")  # fmt: skip
    match = re.fullmatch(shape, message)
    assert match, message
    assert named in match.group(1).split("; ") or any(
        p.endswith(named) for p in match.group(1).split("; ")), message
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before  # nothing written


def test_only_process_zero_writes_files(tmp_path, monkeypatch):
    from fnnjax.train import runfolder

    monkeypatch.setattr(runfolder, "is_primary", lambda: False)
    folder = runfolder.RunFolder.open(tmp_path / "run", files=("a",), driver="test")
    folder.begin()
    folder.write_json("a.json", 1)
    folder.write_text("b.txt", "x")
    folder.append_jsonl("c.jsonl", {"epoch": 1})
    folder.write_with("d.npz", lambda path: path.write_text("x"))
    folder.figure("e.png", lambda fig, ax: ax.plot([1, 2]))
    assert not (tmp_path / "run").exists()  # not even the folder: process 0 makes it
