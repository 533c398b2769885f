"""Multi-host training, rehearsed with two local processes (``jax.distributed`` on CPU, gloo).

The documented path (``fnnjax train --distributed --coordinator HOST:PORT --num-processes N
--process-id I``) used to fail on first contact: both processes wrote and unlinked one probe file,
and with separate folders one process waited 600 s at a barrier for the other.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np

from fnnjax import cli

TRAIN = ["train", "--dataset", "synthetic", "--model", "dense", "-o", "hidden=[32,16]",
         "--epochs", "2", "--batch-size", "64", "--quiet"]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(outs, timeout=240):
    """Starts one `fnnjax train --distributed` process per folder in ``outs``; returns (rc, err)."""
    port = _free_port()
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    env.pop("JAX_NUM_CPU_DEVICES", None)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "fnnjax", *TRAIN, "--distributed", "--coordinator",
             f"127.0.0.1:{port}", "--num-processes", str(len(outs)), "--process-id", str(i),
             "--out", str(out)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        for i, out in enumerate(outs)
    ]
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=timeout)
            results.append((proc.returncode, out, err))
    finally:
        for proc in procs:
            proc.kill()
    return results


def test_two_processes_share_one_folder_and_match_one_process(tmp_path):
    results = _launch([tmp_path / "two", tmp_path / "two"])
    for rc, _, err in results:
        assert rc == 0, err[-2000:]
    assert "test accuracy" in results[0][1] and "test accuracy" not in results[1][1]  # one report
    assert cli.main([*TRAIN, "--devices", "1", "--out", str(tmp_path / "one")]) == 0
    two = json.loads((tmp_path / "two" / "summary.json").read_text())
    one = json.loads((tmp_path / "one" / "summary.json").read_text())
    assert len(two["devices"]) == 2 and len(one["devices"]) == 1
    for key in ("final_test_loss", "final_test_accuracy", "steps", "num_params"):
        np.testing.assert_allclose(two[key], one[key], rtol=1e-5)
    lines = (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]  # written once, not per process
    assert (tmp_path / "two" / "curves.png").exists()
    assert sorted(p.name for p in (tmp_path / "two" / "checkpoints").iterdir()) == ["16", "8"]


def test_processes_given_different_folders_fail_at_once_instead_of_waiting(tmp_path):
    results = _launch([tmp_path / "a", tmp_path / "b"], timeout=120)
    for rc, _, err in results:
        assert rc == 2 and "every process of a multi-host run needs the same --out" in err
