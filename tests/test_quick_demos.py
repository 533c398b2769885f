"""Every ``--quick`` command visibly does what its paper does, in about a minute on 2 cores.

One run per test (a run shared through a fixture would run again in every xdist worker that
picks up one of its tests). EnvelopeNets' growth is checked where its quick run
already is (``tests/construct/test_construct_envelope.py``), NHN's pruning and LDS cycles in the
NHN quick run of ``tests/test_experiments.py``, dynamic capacity's growth and shrinking in
``tests/construct/test_construct_capacity.py``.
"""

import json

from fnnjax.cli import main


def test_enas_quick_lowers_the_controllers_entropy_and_derives_an_arc_above_chance(tmp_path):
    import contextlib
    import io

    enas_quick, printed = tmp_path / "enas-quick", io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["enas", "--quick", "--out", str(enas_quick)]) == 0
    assert f"fnnjax train --spec {enas_quick / 'best_spec.json'} --dataset digits" in printed.getvalue()
    records = [json.loads(line) for line in (enas_quick / "search.jsonl").read_text().splitlines()]
    first, last = records[0]["entropy"], records[-1]["entropy"]
    assert last <= 0.99 * first, (first, last)  # the policy concentrates: >= 1% lower
    top = json.loads((enas_quick / "top_arcs.json").read_text())
    assert top[0]["accuracy"] >= 0.3  # chance on digits: 0.1
    saved = json.loads((enas_quick / "best_arc.json").read_text())
    assert saved["arc"] == top[0]["arc"] and (enas_quick / "best_spec.json").exists()
