"""Every shipped API workflow, run in this process on the tiny test models, gives the outputs recorded
in tests/golden/ (fingerprints of every tensor each node returns and every saved image).

The goldens were recorded before the core redesign and pin behaviour across refactors: a change that
is meant to alter results re-records them on purpose (python tests/golden_record.py record NAME) and
says why in the commit. The tolerance (1e-4) absorbs summation-order noise between machines;
`python tests/golden_record.py compare` reports how many entries are bitwise equal.
"""
import json
import pathlib

import pytest

import golden_record
from workflow_run import compare

GOLDEN = pathlib.Path(__file__).resolve().parent / "golden"
NAMES = sorted(p.stem for p in (GOLDEN.parent.parent / "workflows" / "api").glob("*.json"))


def test_every_shipped_workflow_has_a_golden():
    assert NAMES and NAMES == sorted(p.stem for p in GOLDEN.glob("*.json"))


@pytest.mark.parametrize("name", NAMES)
def test_workflow_outputs_match_the_golden(name):
    golden = json.loads((GOLDEN / f"{name}.json").read_text())
    problems, summary = compare(golden, golden_record.current(name), atol=1e-4, rtol=1e-4)
    assert not problems, f"{name}: {summary}\n" + "\n".join(problems[:30])
    assert summary["bitwise"] + summary["close"] == len(golden)


def test_the_comparison_can_fail():
    golden = json.loads((GOLDEN / "cpabmm_motion_transfer.json").read_text())
    path, entry = next((k, v) for k, v in golden.items() if "sample" in v and v["sample"])
    moved = json.loads(json.dumps(golden))
    moved[path]["sample"][0] += 1e-2
    moved[path]["sha256"] = "0" * 64
    assert compare(golden, moved)[0] and compare(golden, {})[0]
    assert compare(golden, golden) == ([], {**compare(golden, golden)[1], "bitwise": len(golden)})
