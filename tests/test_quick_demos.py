"""Every ``--quick`` command visibly does what its paper does, in about a minute on 2 cores.

One run per command, shared by its tests. EnvelopeNets' growth is checked where its quick run
already is (``tests/construct/test_construct_envelope.py``), NHN's pruning and LDS cycles in the
NHN quick run of ``tests/test_experiments.py``, dynamic capacity's growth and shrinking in
``tests/construct/test_construct_capacity.py``.
"""

import json

import pytest

from fnnjax.cli import main


@pytest.fixture(scope="module")
def enas_quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("enas-quick")
    assert main(["enas", "--quick", "--out", str(out)]) == 0
    return out


def test_enas_quick_lowers_the_controllers_entropy_and_derives_an_arc_above_chance(enas_quick):
    records = [json.loads(line) for line in (enas_quick / "search.jsonl").read_text().splitlines()]
    first, last = records[0]["entropy"], records[-1]["entropy"]
    assert last <= 0.99 * first, (first, last)  # the policy concentrates: >= 1% lower
    top = json.loads((enas_quick / "top_arcs.json").read_text())
    assert top[0]["accuracy"] >= 0.3  # chance on digits: 0.1
    saved = json.loads((enas_quick / "best_arc.json").read_text())
    assert saved["arc"] == top[0]["arc"] and (enas_quick / "best_spec.json").exists()
