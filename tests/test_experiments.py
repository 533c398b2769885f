"""One end-to-end smoke run per experiment script, at --quick size."""

import json

from experiments import fnn_table1


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
