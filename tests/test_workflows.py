"""Every shipped workflow fits the registered nodes: types exist, links type-check, widget values fit
their declared ranges, pictures they load ship in assets/, and each UI file's API twin is exactly what
the frontend would send for it."""
import json
import pathlib

import pytest

from workflow_format import check_api, check_ui, node_specs, ui_to_api

ROOT = pathlib.Path(__file__).resolve().parents[1]
UI_FILES = sorted((ROOT / "workflows").glob("*.json"))
API_FILES = sorted((ROOT / "workflows" / "api").glob("*.json"))
ASSETS = str(ROOT / "assets")


@pytest.fixture(scope="module")
def specs():
    return node_specs()


def test_there_are_workflows_with_twins():
    assert UI_FILES, "no workflows shipped"
    assert [p.name for p in UI_FILES] == [p.name for p in API_FILES], "every UI workflow needs an API twin"


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.name)
def test_ui_workflow(path, specs):
    ui = json.loads(path.read_text())
    assert check_ui(ui, specs, ASSETS) == []


@pytest.mark.parametrize("path", API_FILES, ids=lambda p: p.name)
def test_api_workflow(path, specs):
    api = json.loads(path.read_text())
    assert check_api(api, specs, ASSETS) == []
    assert any(n["class_type"].startswith("Save") for n in api.values()), "no output node"


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.name)
def test_api_twin_matches_ui(path, specs):
    ui = json.loads(path.read_text())
    api = json.loads((ROOT / "workflows" / "api" / path.name).read_text())
    for node in api.values():
        node.pop("_meta", None)                      # display titles: the frontend adds them, not needed
    assert ui_to_api(ui, specs) == api


def test_checker_catches_mistakes(specs):
    """The checks above can fail: a wrong type, an out-of-range value and a bad link are all reported."""
    api = json.loads(API_FILES[0].read_text())
    nid, node = next((k, v) for k, v in api.items() if v["class_type"] == "SaveAnimatedWEBP")
    bad = json.loads(json.dumps(api))
    bad[nid]["inputs"]["quality"] = 101
    bad[nid]["inputs"]["method"] = "fast"
    bad[nid]["inputs"]["images"] = [bad[nid]["inputs"]["images"][0], 7]
    bad["999"] = {"class_type": "NoSuchNode", "inputs": {}}
    errs = check_api(bad, specs, ASSETS)
    assert any("above max" in e for e in errs)
    assert any("not among" in e for e in errs)
    assert any("links to output 7" in e for e in errs)
    assert any("unknown node type" in e for e in errs)
    ui = json.loads(UI_FILES[0].read_text())
    ui["links"][0][5] = "LATENT"
    ui["nodes"][0]["widgets_values"] = ui["nodes"][0]["widgets_values"] + [1]
    errs = check_ui(ui, specs, ASSETS)
    assert any("declared LATENT" in e for e in errs)
    assert any("widget values" in e for e in errs)


EXTERNAL = sorted((ROOT / "workflows" / "external").glob("*.json"))


@pytest.mark.parametrize("path", EXTERNAL, ids=lambda p: p.name)
def test_external_pack_workflow(path):
    """workflows/external/ files use other packs' nodes (tests/workflow_format.py EXTERNAL_NODES): they
    fit those signatures and ours, their API twin is the frontend's, and their info names the pack."""
    specs = node_specs(external=True)
    ui = json.loads(path.read_text())
    api = json.loads((path.parent / "api" / path.name).read_text())
    assert check_ui(ui, specs, ASSETS) == [] and check_api(api, specs, ASSETS) == []
    for node in api.values():
        node.pop("_meta", None)
    assert ui_to_api(ui, specs) == api
    assert "NEEDS" in ui["extra"]["info"]

