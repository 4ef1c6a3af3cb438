"""Saved workflows keep working: every breaking change to a node's interface comes with a migration here.

A :class:`Migration` says how a workflow saved against an older interface is rewritten for today's:
inputs renamed (``rename``), combo values replaced (``values``), values put back into a narrowed range
(``clamp``), inputs that became required filled with their old behaviour (``defaults``), and inputs
removed (``drop``). Two formats are migrated:

* API prompts (POST /prompt, ``comfy run``): :func:`migrate_api_prompt`, installed inside ComfyUI as
  an on-prompt handler, so a client that sends an old prompt gets today's meaning;
* UI workflows (drag and drop): widget values are stored by position, and a rename keeps the position,
  so only the names of widgets converted to sockets and mapped values change:
  :func:`migrate_ui_workflow` (the frontend twin is web/js/migrations.js).

tests/test_node_interface.py refuses a breaking interface change that no migration covers, checks
that CHANGELOG.md names it, and loads the previous release's shipped workflows through these.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field

from . import types

_log = logging.getLogger("comfyui_flipbook")


@dataclass(frozen=True)
class Migration:
    node: str                                   # node class name
    since: str                                  # the release that made the change
    rename: dict = field(default_factory=dict)   # old input name -> new name (same widget position)
    values: dict = field(default_factory=dict)   # input (new name) -> {old value: new value}
    clamp: dict = field(default_factory=dict)    # input (new name) -> (min, max) of today's range
    defaults: dict = field(default_factory=dict)  # input (new name) -> value an old prompt means
    drop: tuple = ()                             # inputs (old names) removed
    outputs: dict = field(default_factory=dict)  # output slot -> its new type (old links of the
    #                                              wrong type are dropped: they never worked)
    note: str = ""

    def covers(self, change) -> bool:
        """Whether this migration takes care of one breaking change of tests/node_interface.py."""
        if change.node != self.node:
            return False
        new_name = self.rename.get(change.input, change.input)
        if change.kind == "input renamed":
            return change.input in self.rename
        if change.kind == "input removed":
            return change.input in self.drop
        if change.kind in ("required input added", "optional input became required"):
            return change.input in self.defaults
        if change.kind == "combo options removed":
            return new_name in self.values
        if change.kind == "range narrowed":
            return new_name in self.clamp
        if change.kind == "output type changed":
            return int(change.input.split()[-1]) in self.outputs
        return False

    def map_value(self, name: str, v):
        """One widget value of the input called ``name`` (today's name), mapped and clamped."""
        table = self.values.get(name)
        if table is not None and _is_value(v) and _hashable(v) and v in table:
            v = table[v]
        if name in self.clamp and isinstance(v, (int, float)) and not isinstance(v, bool) and v == v:
            lo, hi = self.clamp[name]
            v = type(v)(min(max(v, lo), hi))
        return v

    def apply_inputs(self, inputs: dict) -> dict:
        """An API node's ``inputs`` dict, rewritten."""
        out = {}
        for name, value in inputs.items():
            if name in self.drop:
                continue
            new = self.rename.get(name, name)
            out[new] = self.map_value(new, value)
        for name, value in self.defaults.items():
            out.setdefault(name, value)
        return out


def _is_value(v) -> bool:
    """A literal, not a link ``[node_id, slot]``."""
    return not (isinstance(v, list) and len(v) == 2 and isinstance(v[0], str))


def _hashable(v) -> bool:
    try:
        hash(v)
    except TypeError:
        return False
    return True


# Every migration of the pack, oldest first. Add one with each breaking change (and a CHANGELOG line).
MIGRATIONS: list[Migration] = [
    # 0.2.0: one vocabulary (nodes/widgets.py) and one type name per kind of value (nodes/types.py)
    Migration("FlipbookCPABApply", "0.2.0", rename={"n_frames": "frames"}),
    Migration("FlipbookCPABRandomDeform", "0.2.0", rename={"n_frames": "frames"}),
    Migration("FlipbookAnimateXSampler", "0.2.0", rename={"cfg": "guidance"}),
    Migration("FlipbookAnimateXLoader", "0.2.0", rename={"weight_dtype": "dtype"}),
    Migration("FlipbookFlipSketchAlign", "0.2.0", rename={"iters": "iterations"}),
    Migration("FlipbookPoseFromKeypoints", "0.2.0", rename={"threshold": "min_confidence"}),
    Migration("FlipbookLoadPoseKeypoints", "0.2.0", rename={"threshold": "min_confidence", "frame_interval": "every_nth"}),
    Migration("FlipbookDDIMInvert", "0.2.0", outputs={1: types.INVERSION},
              note="the inversion's latents had the Bezier trajectory's type name; links of it into "
                   "trajectory inputs never ran and are dropped"),
]


def renames() -> dict[str, dict[str, str]]:
    """``{node: {old input: new input}}`` over all migrations (for the interface diff)."""
    out: dict[str, dict[str, str]] = {}
    for m in MIGRATIONS:
        out.setdefault(m.node, {}).update(m.rename)
    return out


def migrate_api_prompt(prompt: dict, migrations: list[Migration] | None = None) -> dict:
    """An API-format prompt ``{id: {"class_type", "inputs"}}`` with every migration applied (a copy)."""
    migrations = MIGRATIONS if migrations is None else migrations
    if not isinstance(prompt, dict):
        return prompt
    out = copy.deepcopy(prompt)
    for node in out.values():
        if not isinstance(node, dict) or not isinstance(node.get("inputs"), dict):
            continue
        for m in migrations:
            if node.get("class_type") == m.node:
                node["inputs"] = m.apply_inputs(node["inputs"])
    return out


def migrate_ui_workflow(workflow: dict, widget_names, migrations: list[Migration] | None = None) -> dict:
    """A UI-format workflow with socket names renamed and widget values mapped/clamped (a copy).

    ``widget_names(node_type)`` gives today's widget names in ``widgets_values`` order (with
    ``control_after_generate`` / ``upload`` entries), as the frontend lays them out."""
    migrations = MIGRATIONS if migrations is None else migrations
    out = copy.deepcopy(workflow)
    nodes = {n.get("id"): n for n in out.get("nodes", [])}
    dead: set = set()
    for node in out.get("nodes", []):
        for m in migrations:
            if m.node != node.get("type"):
                continue
            for slot, new_type in m.outputs.items():
                outs = node.get("outputs") or []
                if slot < len(outs):
                    outs[slot]["type"] = new_type
                    for lid in list(outs[slot].get("links") or []):
                        link = next((l for l in out.get("links", []) if l[0] == lid), None)
                        target = nodes.get(link[3]) if link else None
                        inputs = (target or {}).get("inputs") or []
                        slot_in = link[4] if link else -1
                        if link and 0 <= slot_in < len(inputs) and inputs[slot_in].get("type") not in (new_type, "*"):
                            dead.add(lid)
                            inputs[slot_in]["link"] = None
                        elif link:
                            link[5] = new_type
                    outs[slot]["links"] = [lid for lid in outs[slot].get("links") or [] if lid not in dead]
    if dead:
        out["links"] = [l for l in out.get("links", []) if l[0] not in dead]
    for node in out.get("nodes", []):
        mine = [m for m in migrations if m.node == node.get("type")]
        if not mine:
            continue
        for inp in node.get("inputs", []) or []:
            for m in mine:
                if inp.get("name") in m.rename:
                    inp["name"] = m.rename[inp["name"]]
                    if isinstance(inp.get("widget"), dict):
                        inp["widget"]["name"] = inp["name"]
        values = node.get("widgets_values")
        if isinstance(values, list):
            names = widget_names(node["type"])
            for i, name in enumerate(names[:len(values)]):
                for m in mine:
                    values[i] = m.map_value(name, values[i])
    return out


def frontend_table(migrations: list[Migration] | None = None) -> dict:
    """What web/js/migrations.js applies to a UI workflow before it is configured: socket renames and
    output retypes per node type (widget values are positional, so renames need nothing else)."""
    migrations = MIGRATIONS if migrations is None else migrations
    out: dict = {}
    for m in migrations:
        entry = out.setdefault(m.node, {"rename": {}, "outputs": {}})
        entry["rename"].update(m.rename)
        entry["outputs"].update({str(k): str(v) for k, v in m.outputs.items()})
    return out


def install_prompt_handler() -> bool:
    """Inside ComfyUI: rewrite every queued prompt with :func:`migrate_api_prompt` before validation,
    and serve :func:`frontend_table` at ``/flipbook/migrations`` for web/js/migrations.js."""
    try:
        from server import PromptServer
    except Exception:       # plain Python, tests
        return False
    server = getattr(PromptServer, "instance", None)
    if server is None or not hasattr(server, "add_on_prompt_handler"):
        return False

    def handler(json_data):
        try:
            if isinstance(json_data, dict) and isinstance(json_data.get("prompt"), dict):
                json_data["prompt"] = migrate_api_prompt(json_data["prompt"])
        except Exception:   # a migration must never block a prompt
            _log.exception("ComfyUI-Flipbook: could not migrate a prompt")
        return json_data

    server.add_on_prompt_handler(handler)
    try:
        from aiohttp import web

        @server.routes.get("/flipbook/migrations")
        async def migrations_table(request):
            return web.json_response(frontend_table())
    except Exception:        # an older server without routes: the prompt handler still works
        _log.exception("ComfyUI-Flipbook: could not add the /flipbook/migrations route")
    return True
