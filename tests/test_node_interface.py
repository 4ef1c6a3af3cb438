"""Saved workflows keep working: the node interface may grow, but a breaking change needs a migration
and a CHANGELOG line, and the previous release's shipped workflows still load (tests/node_interface.py)."""
import json
import pathlib

import pytest

from node_interface import SNAPSHOT, Change, current_interface, diff, load_snapshot, unmigrated
from workflow_format import check_api, node_specs, ui_to_api, widget_names

from comfyui_flipbook.nodes import migrations as M

ROOT = pathlib.Path(__file__).resolve().parents[1]
RELEASES = sorted((ROOT / "tests" / "interface").glob("release-*"))
ASSETS = str(ROOT / "assets")


@pytest.fixture(scope="module")
def now():
    return current_interface()


@pytest.fixture(scope="module")
def specs():
    return node_specs()


def test_no_breaking_change_without_a_migration(now):
    left = unmigrated(diff(load_snapshot(), now, M.renames()), M.MIGRATIONS)
    assert not left, ("breaking node-interface changes without a migration in nodes/migrations.py:\n  "
                      + "\n  ".join(map(str, left))
                      + "\n(add a Migration and a CHANGELOG line, then `python scripts/node_interface.py`)")


def test_every_migrated_change_is_in_the_changelog(now):
    changelog = (ROOT / "CHANGELOG.md").read_text()
    missing = [str(c) for c in diff(load_snapshot(), now, M.renames()) if c.breaking
               and (c.node not in changelog or (c.input and not c.input.startswith("output") and c.input not in changelog))]
    assert not missing, "CHANGELOG.md does not mention: " + "; ".join(missing)


def _edited(now, node, fn):
    new = json.loads(json.dumps(now))
    fn(new[node])
    return new


def test_the_guard_fails_on_breaking_edits_and_passes_additive_ones(now):
    node = "FlipbookBezierTrajectory"
    first_widget = next(n for n, i in now[node]["inputs"].items() if i["type"] in ("INT", "FLOAT"))
    breaking = {
        "input removed": lambda n: n["inputs"].pop(first_widget),
        "range narrowed": lambda n: n["inputs"][first_widget].update(max=n["inputs"][first_widget]["max"] - 1),
        "type changed": lambda n: n["inputs"][first_widget].update(type="STRING"),
        "output type changed": lambda n: n["outputs"].__setitem__(0, "IMAGE"),
        "required input added": lambda n: n["inputs"].__setitem__("new_one", {"section": "required", "type": "INT"}),
    }
    for kind, edit in breaking.items():
        left = unmigrated(diff(now, _edited(now, node, edit)), M.MIGRATIONS)
        assert any(c.kind == kind for c in left), (kind, left)
    removed = {k: v for k, v in now.items() if k != node}
    assert [c.kind for c in unmigrated(diff(now, removed), M.MIGRATIONS)] == ["node removed"]
    additive = {
        "optional input added": lambda n: n["inputs"].__setitem__("extra", {"section": "optional", "type": "MASK"}),
        "range widened": lambda n: n["inputs"][first_widget].update(max=n["inputs"][first_widget]["max"] + 1),
        "output added": lambda n: n["outputs"].append("IMAGE"),
        "default changed": lambda n: n["inputs"][first_widget].update(default=0),
    }
    for kind, edit in additive.items():
        changes = diff(now, _edited(now, node, edit))
        assert [c.kind for c in changes] == [kind] and not unmigrated(changes, M.MIGRATIONS), (kind, changes)
    assert not diff(now, {**now, "FlipbookNew": now[node]}) or all(not c.breaking for c in diff(now, {**now, "FlipbookNew": now[node]}))


def test_a_rename_with_a_migration_passes_and_rewrites_old_workflows(now):
    node = "FlipbookBezierTrajectory"
    old_name = next(n for n, i in now[node]["inputs"].items() if i["type"] == "INT")
    new = _edited(now, node, lambda n: n.__setitem__("inputs", {("renamed" if k == old_name else k): v
                                                                for k, v in n["inputs"].items()}))
    bare = unmigrated(diff(now, new), [])
    assert {c.kind for c in bare} >= {"input removed", "required input added"}
    mig = M.Migration(node=node, since="test", rename={old_name: "renamed"})
    changes = diff(now, new, {node: {old_name: "renamed"}})
    assert [c.kind for c in changes if c.breaking] == ["input renamed"]
    assert not unmigrated(changes, [mig])
    prompt = {"1": {"class_type": node, "inputs": {old_name: 7, "skeleton": ["2", 0]}}}
    assert M.migrate_api_prompt(prompt, [mig])["1"]["inputs"] == {"renamed": 7, "skeleton": ["2", 0]}
    assert prompt["1"]["inputs"] == {old_name: 7, "skeleton": ["2", 0]}, "the original prompt is not modified"
    ui = {"nodes": [{"id": 1, "type": node, "inputs": [{"name": old_name, "type": "INT", "widget": {"name": old_name},
                                                        "link": 3}], "widgets_values": []}], "links": []}
    out = M.migrate_ui_workflow(ui, lambda t: [], [mig])
    assert out["nodes"][0]["inputs"][0]["name"] == "renamed" == out["nodes"][0]["inputs"][0]["widget"]["name"]


def test_value_maps_clamps_defaults_and_output_retypes():
    mig = M.Migration(node="N", since="test", values={"mode": {"old": "new"}}, clamp={"n": (0, 10)},
                      defaults={"fresh": 1.5}, drop=("gone",), outputs={1: "NEW_TYPE"})
    got = mig.apply_inputs({"mode": "old", "n": 99, "gone": 1, "link": ["4", 0]})
    assert got == {"mode": "new", "n": 10, "link": ["4", 0], "fresh": 1.5}
    assert mig.apply_inputs({"mode": ["3", 0]})["mode"] == ["3", 0], "links are never mapped"
    assert mig.covers(Change("N", "output 1", "output type changed", True))
    assert not mig.covers(Change("N", "output 0", "output type changed", True))
    ui = {"nodes": [{"id": 1, "type": "N", "outputs": [{"type": "A", "links": []}, {"type": "OLD", "links": [5, 6]}],
                     "widgets_values": ["old", 99]},
                    {"id": 2, "type": "X", "inputs": [{"name": "a", "type": "OLD", "link": 5}]},
                    {"id": 3, "type": "Y", "inputs": [{"name": "b", "type": "NEW_TYPE", "link": 6}]}],
          "links": [[5, 1, 1, 2, 0, "OLD"], [6, 1, 1, 3, 0, "OLD"]]}
    out = M.migrate_ui_workflow(ui, lambda t: ["mode", "n"], [mig])
    assert out["nodes"][0]["widgets_values"] == ["new", 10]
    assert out["nodes"][0]["outputs"][1] == {"type": "NEW_TYPE", "links": [6]}
    assert out["nodes"][1]["inputs"][0]["link"] is None, "a link of the wrong type is dropped (it never ran)"
    assert out["links"] == [[6, 1, 1, 3, 0, "NEW_TYPE"]]


@pytest.mark.parametrize("release", RELEASES, ids=lambda p: p.name)
def test_previous_release_workflows_still_load(release, specs):
    """Each shipped workflow of an earlier release, migrated, type-checks against today's nodes, and its
    UI file converts (as today's frontend would) to the same prompt as its migrated API twin."""
    assert (release / "api").is_dir()
    files = sorted(release.glob("*.json"))
    assert files
    for path in files:
        old_api = json.loads((release / "api" / path.name).read_text())
        api = M.migrate_api_prompt(old_api)
        assert check_api(api, specs, ASSETS) == [], path.name
        ui = M.migrate_ui_workflow(json.loads(path.read_text()), lambda t: widget_names(specs[t]))
        from_ui = ui_to_api(ui, specs, fill_defaults=True)
        for node in api.values():
            node.pop("_meta", None)
        # widgets added since keep their defaults in the UI conversion; the API prompt leaves them out
        for nid, node in from_ui.items():
            spec = specs[node["class_type"]]
            allin = {**spec[0], **spec[1]}
            for name in list(node["inputs"]):
                if name not in api[nid]["inputs"] and "default" in allin[name][1]:
                    assert node["inputs"][name] == allin[name][1]["default"]
                    del node["inputs"][name]
        assert from_ui == api, path.name


def test_snapshot_file_is_the_one_the_script_writes():
    assert SNAPSHOT.is_file(), "run python scripts/node_interface.py"
    assert json.loads(SNAPSHOT.read_text()), "empty snapshot"


def test_frontend_twin_handles_what_the_migrations_use():
    """web/js/migrations.js applies renames and output retypes; value maps, clamps, defaults and drops
    are applied to API prompts only. A migration that needs them in the UI must extend the JS first."""
    for m in M.MIGRATIONS:
        assert not (m.values or m.clamp or m.drop), f"{m.node}: extend web/js/migrations.js for values/clamp/drop"
    table = M.frontend_table()
    assert table["FlipbookAnimateXSampler"]["rename"] == {"cfg": "guidance"}
    assert table["FlipbookDDIMInvert"]["outputs"] == {"1": "FLIPBOOK_INVERSION"}
    json.dumps(table)
