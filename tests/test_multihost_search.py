"""Searches that span hosts, rehearsed with local processes (``jax.distributed`` on 127.0.0.1).

Two processes of two CPU devices each run ``fnnjax enas --quick``, ``fnnjax envelopenet
--quick`` and ``fnnjax capacity --quick`` into one shared ``--out`` and must give what one
process of four devices gives. The
one-process reference joins ``jax.distributed`` too (``--num-processes 1``), so that both runs sum
across devices with the same collectives (gloo's): XLA's in-process all-reduce adds the
devices' parts in another order, and a search's discrete choices (an argmax flipped by the last
bit of a BatchNorm mean) turn that rounding into another search. (A deviation from "1 process
with 4 devices" taken literally, which would compare two reduction orders.) ENAS's search (its
sampled path: one small program per op) then matches bit for bit. A fused training step
(``fit``, under EnvelopeNets) still rounds differently when its devices span two processes (each
layout is bitwise repeatable; its optimized HLO is the same in both, the same collectives sum a
plain array alike in both, and XLA's single-threaded CPU mode changes nothing, so it is in how
the step's 95 all-reduces run across processes, not yet pinned down): its losses
agree within 1e-5 relative after one epoch and drift apart over more epochs of SGD (6e-4 after
two), so the construction trains one epoch per iteration here (each iteration trains afresh) and
its decisions (which blocks are pruned, where cells go) must be the same. (NHN is not compared:
its pipeline of four trainings, DNP thresholds and LDS choices turns the same drift into another
network; its base training's first epoch matches bit for bit.) Every file outside the
checkpoints must be written by process 0 alone: each process records the files it opened for
writing (or renamed, removed, created) under ``--out`` with an audit hook.

The searches are the quick presets with fewer epochs (explicit flags override ``--quick``) to
keep the suite short; each run takes 20-40 s on two cores. The killed-and-resumed ENAS search
stands in for an uninterrupted two-process one: it must end as the one-process search.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

_AUDITED_MAIN = r"""
import atexit, json, os, sys
out, record = os.path.realpath(sys.argv[1]), sys.argv[2]
written = set()
WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
ONE_PATH = {"os.remove", "os.rmdir", "os.mkdir", "os.truncate", "shutil.rmtree"}
def hook(event, args):
    if event == "open":
        path, mode, flags = args
        if not isinstance(mode, str):
            mode = "w" if (flags or 0) & WRITE else "r"
        paths = [path] if any(c in mode for c in "wax+") else []
    elif event in ("os.rename", "os.replace", "shutil.move"):
        paths = list(args[:2])
    elif event in ONE_PATH:
        paths = [args[0]]
    else:
        return
    for path in paths:
        if isinstance(path, (str, bytes, os.PathLike)):
            path = os.path.realpath(os.fsdecode(path))
            if path.startswith(out + os.sep):
                written.add(os.path.relpath(path, out))
sys.addaudithook(hook)
atexit.register(lambda: open(record, "w").write(json.dumps(sorted(written))))
from fnnjax.cli import main
sys.exit(main(sys.argv[3:]))
"""

ENAS = ["enas", "--quick", "--epochs", "2"]
ENVELOPENET = ["envelopenet", "--quick", "--epochs-per-iteration", "1"]
CAPACITY = ["capacity", "--task", "classification", "--quick", "--epochs", "6"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args, out: Path, processes: int, devices: int, records: Path):
    """``processes`` audited `fnnjax ARGS --out OUT --distributed ...` processes of ``devices``
    CPU devices each; process i records what it wrote in ``records/i.json``."""
    port = _free_port()
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "",
           "JAX_NUM_CPU_DEVICES": str(devices)}  # fmt: skip
    records.mkdir(parents=True, exist_ok=True)
    return [
        subprocess.Popen(
            [sys.executable, "-c", _AUDITED_MAIN, str(out), str(records / f"{i}.json"), *args,
             "--out", str(out), "--distributed", "--coordinator", f"127.0.0.1:{port}",
             "--num-processes", str(processes), "--process-id", str(i)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        for i in range(processes)
    ]


def _finish(procs, timeout=400):
    """Waits for every process; returns their stdouts (each must succeed)."""
    try:
        outs = [proc.communicate(timeout=timeout) for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
    for proc, (_, err) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, err[-3000:]
    return [out for out, _ in outs]


def _run(args, out: Path, processes: int, devices: int, records: Path) -> list[str]:
    return _finish(_start(args, out, processes, devices, records))


def _written(records: Path, process: int) -> list[str]:
    return json.loads((records / f"{process}.json").read_text())


def _assert_only_process_0_writes(records: Path, processes: int, expected: set[str],
                                  checkpoints: tuple[str, ...] = ("checkpoints",)) -> None:  # fmt: skip
    """Process 0 wrote ``expected``; the others wrote only in the checkpoint folders (named in
    ``checkpoints``: orbax's share of each process)."""
    primary = set(_written(records, 0))
    assert expected <= primary, expected - primary
    for i in range(1, processes):
        outside = [p for p in _written(records, i) if not set(checkpoints) & set(Path(p).parts)]
        assert not outside, f"process {i} wrote {outside}"


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _assert_same_numbers(a, b, rtol=1e-5) -> None:
    """Records ``a`` and ``b`` (lists of dicts) agree: floats within ``rtol``, the rest equal
    (times and speeds aside)."""
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            if "second" in k or k == "time":  # wall-clock times and speeds differ, of course
                continue
            if isinstance(x[k], float):
                np.testing.assert_allclose(x[k], y[k], rtol=rtol, err_msg=k)
            else:
                assert x[k] == y[k], k


def test_enas_on_two_hosts_killed_and_resumed_is_the_search_of_one(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    _run(ENAS, one, 1, 4, tmp_path / "audit-one")
    # killed (SIGKILL, both processes) once the first epoch's checkpoint exists, then rerun
    procs = _start(ENAS, two, 2, 2, tmp_path / "audit-killed")
    deadline = time.monotonic() + 300
    while not (two / "checkpoints" / "0").is_dir() and time.monotonic() < deadline:
        assert all(p.poll() is None for p in procs), "the search ended before it was killed"
        time.sleep(0.1)
    for proc in procs:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (two / "best_arc.txt").exists()
    stdout = _run(ENAS, two, 2, 2, tmp_path / "audit-two")
    assert "resuming the search after epoch 0" in stdout[0]
    assert "4 devices in 2 processes" in stdout[0]
    assert "best arc" in stdout[0] and "best arc" not in stdout[1]  # one report
    _assert_only_process_0_writes(tmp_path / "audit-two", 2, {
        "search.jsonl", "arcs.jsonl", "best_arc.txt", "best_arc.json", "best_spec.json",
        "search_spec.json", "top_arcs.json", "search.png", "run.json"})  # fmt: skip
    for name in ("best_arc.txt", "best_arc.json", "top_arcs.json", "search.jsonl", "arcs.jsonl"):
        assert (two / name).read_text() == (one / name).read_text(), name  # bit for bit


def test_envelopenet_on_two_hosts_is_the_construction_of_one(tmp_path):
    two, one = tmp_path / "two", tmp_path / "one"
    stdout = _run(ENVELOPENET, two, 2, 2, tmp_path / "audit-two")
    assert "EnvelopeNet" in stdout[0] and "EnvelopeNet" not in stdout[1]  # one report
    _assert_only_process_0_writes(tmp_path / "audit-two", 2, {
        "construction.json", "final_spec.json", "run.json", "iterations/0/statistics.json",
        "iterations/0/metrics.jsonl", "iterations/1/summary.json"})  # fmt: skip
    _run(ENVELOPENET, one, 1, 4, tmp_path / "audit-one")
    a = json.loads((two / "construction.json").read_text())["records"]
    b = json.loads((one / "construction.json").read_text())["records"]
    assert [r["notation"] for r in a] == [r["notation"] for r in b]
    assert [r["next_notation"] for r in a] == [r["next_notation"] for r in b]
    assert (two / "final_spec.json").read_text() == (one / "final_spec.json").read_text()
    for k in range(len(a)):  # (module docstring: the fused step rounds differently)
        metrics = f"iterations/{k}/metrics.jsonl"
        _assert_same_numbers(_jsonl(two / metrics), _jsonl(one / metrics))


def test_capacity_on_two_hosts_makes_the_changes_of_one(tmp_path):
    # Both processes consult the controller on values they compute alike (the epoch's loss, the
    # probe batch's saliency) and change the network together; checkpoints/ and best/ save the
    # same step, each with its own orbax barriers.
    two, one = tmp_path / "two", tmp_path / "one"
    stdout = _run(CAPACITY, two, 2, 2, tmp_path / "audit-two")
    assert "dynamic capacity on digits" in stdout[0] and "dynamic capacity" not in stdout[1]
    _assert_only_process_0_writes(tmp_path / "audit-two", 2, {
        "capacity.jsonl", "saliency.jsonl", "capacity_config.json", "final_spec.json",
        "metrics.jsonl", "summary.json", "layers.md", "run.json"}, ("checkpoints", "best"))  # fmt: skip
    _run(CAPACITY, one, 1, 4, tmp_path / "audit-one")
    changes = _jsonl(two / "capacity.jsonl")
    assert changes, "no change to compare"
    _assert_same_numbers(changes, _jsonl(one / "capacity.jsonl"))
    _assert_same_numbers(_jsonl(two / "saliency.jsonl"), _jsonl(one / "saliency.jsonl"))
    _assert_same_numbers(_jsonl(two / "metrics.jsonl"), _jsonl(one / "metrics.jsonl"))
    assert (two / "final_spec.json").read_text() == (one / "final_spec.json").read_text()
