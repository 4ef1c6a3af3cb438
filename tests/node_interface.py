"""The public interface of every node, as saved workflows and API clients depend on it, and the rules
that tell a breaking change from an additive one (what the Comfy Registry's node-diff check guards).

A snapshot (tests/interface/nodes.json, written on purpose by scripts/node_interface.py) records per
node class: display name, category, inputs (section, type, default, min, max, combo options) in
order, and output types and names. :func:`diff` compares two snapshots; a change is *breaking* when
a workflow saved against the old interface would no longer load or would mean something else:

* a node class removed;
* an input removed or renamed, or moved from optional to required, or a new required input;
* an input's type changed; a widget's range narrowed; combo options removed;
* widget order changed (the UI format stores widget values by position);
* an output removed, retyped or moved.

Additions (new nodes, new optional inputs, new combo options, wider ranges, outputs appended) and
cosmetic changes (names shown, tooltips, defaults, categories) are not breaking. A breaking change
passes only with a migration in ``nodes/migrations.py`` that rewrites old workflows, and a line in
CHANGELOG.md naming the node (tests/test_node_interface.py).
"""
from __future__ import annotations

import json
import os
import pathlib
from dataclasses import dataclass

ROOT = pathlib.Path(__file__).resolve().parents[1]
SNAPSHOT = ROOT / "tests" / "interface" / "nodes.json"
WIDGETS = {"INT", "FLOAT", "STRING", "BOOLEAN"}
FILES = "<files>"          # a combo filled from a folder (models, input files): options vary per machine


def _input(section: str, decl) -> dict:
    typ = decl[0]
    opts = decl[1] if len(decl) > 1 and isinstance(decl[1], dict) else {}
    out: dict = {"section": section}
    if isinstance(typ, (list, tuple)):
        from comfyui_flipbook.nodes._comfy import FileList

        out["type"] = "COMBO"
        out["options"] = FILES if isinstance(typ, FileList) else list(typ)
    else:
        out["type"] = str(typ)
    for key in ("default", "min", "max"):
        if key in opts and not (out.get("options") == FILES and key == "default"):
            out[key] = opts[key]
    if opts.get("forceInput"):
        out["forceInput"] = True
    return out


def current_interface() -> dict:
    """The interface of the registered nodes, as JSON-ready data."""
    from comfyui_flipbook import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

    out = {}
    for name in sorted(NODE_CLASS_MAPPINGS):
        cls = NODE_CLASS_MAPPINGS[name]
        it = cls.INPUT_TYPES()
        inputs = {}
        for section in ("required", "optional"):
            for iname, decl in (it.get(section) or {}).items():
                inputs[iname] = _input(section, decl)
        out[name] = {
            "display_name": NODE_DISPLAY_NAME_MAPPINGS.get(name, name),
            "category": getattr(cls, "CATEGORY", ""),
            "inputs": inputs,
            "outputs": list(cls.RETURN_TYPES),
            "output_names": list(getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES),
        }
    return json.loads(json.dumps(out))          # tuples -> lists, as the snapshot file holds them


def load_snapshot(path: os.PathLike = SNAPSHOT) -> dict:
    return json.loads(pathlib.Path(path).read_text())


def write_snapshot(path: os.PathLike = SNAPSHOT) -> dict:
    data = current_interface()
    p = pathlib.Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(_format(data))
    return data


def _format(data: dict) -> str:
    """One line per input: a reviewer reads an interface change as a one-line diff."""
    d = json.dumps
    nodes = []
    for name, node in data.items():
        inputs = ",\n".join(f"   {d(k)}: {d(v)}" for k, v in node["inputs"].items())
        nodes.append(f" {d(name)}: {{\n  \"display_name\": {d(node['display_name'])}, \"category\": {d(node['category'])},\n"
                     f"  \"inputs\": {{\n{inputs}\n  }},\n"
                     f"  \"outputs\": {d(node['outputs'])}, \"output_names\": {d(node['output_names'])}\n }}")
    return "{\n" + ",\n".join(nodes) + "\n}\n"


@dataclass(frozen=True)
class Change:
    node: str
    input: str | None       # the input (or "output N") concerned; None for the node itself
    kind: str               # e.g. "node removed", "input removed", "range narrowed", "input added"
    breaking: bool
    detail: str = ""

    def __str__(self) -> str:
        where = self.node + (f".{self.input}" if self.input else "")
        return f"{'BREAKING' if self.breaking else 'ok'}: {where}: {self.kind}{' (' + self.detail + ')' if self.detail else ''}"


def _widget_order(node: dict) -> list[str]:
    return [n for n, i in node["inputs"].items()
            if (i["type"] in WIDGETS or i["type"] == "COMBO") and not i.get("forceInput")]


def diff(old: dict, new: dict, renames: dict[str, dict[str, str]] | None = None) -> list[Change]:
    """Every difference between two interfaces, each marked breaking or not. ``renames`` maps
    ``{node: {old input name: new name}}`` (the migrations' renames): such an input is compared
    under its new name and reported once as "input renamed"."""
    renames = renames or {}
    changes: list[Change] = []
    for name in sorted(set(old) | set(new)):
        if name not in new:
            changes.append(Change(name, None, "node removed", True))
            continue
        if name not in old:
            changes.append(Change(name, None, "node added", False))
            continue
        o, n = old[name], new[name]
        ren = renames.get(name, {})
        for key in ("display_name", "category"):
            if o[key] != n[key]:
                changes.append(Change(name, None, f"{key} changed", False, f"{o[key]!r} -> {n[key]!r}"))
        for iname, oi in o["inputs"].items():
            target = ren.get(iname, iname)
            ni = n["inputs"].get(target)
            if ni is None:
                changes.append(Change(name, iname, "input removed", True))
                continue
            if target != iname:
                changes.append(Change(name, iname, "input renamed", True, f"{iname} -> {target}"))
            changes += _input_changes(name, target, oi, ni)
        old_names = {ren.get(i, i) for i in o["inputs"]}
        for iname, ni in n["inputs"].items():
            if iname not in old_names:
                required = ni["section"] == "required"
                changes.append(Change(name, iname, "required input added" if required else "optional input added",
                                      required))
        ow = [ren.get(w, w) for w in _widget_order(o)]
        nw = _widget_order(n)
        if nw[:len(ow)] != ow:
            # the UI format stores widget values by position: old widgets must keep theirs
            changes.append(Change(name, None, "widget order changed", True, f"{ow} -> {nw}"))
        for i, t in enumerate(o["outputs"]):
            if i >= len(n["outputs"]):
                changes.append(Change(name, f"output {i}", "output removed", True, t))
            elif n["outputs"][i] != t:
                changes.append(Change(name, f"output {i}", "output type changed", True, f"{t} -> {n['outputs'][i]}"))
        for i in range(len(o["outputs"]), len(n["outputs"])):
            changes.append(Change(name, f"output {i}", "output added", False, n["outputs"][i]))
        for i, (a, b) in enumerate(zip(o["output_names"], n["output_names"])):
            if a != b:
                changes.append(Change(name, f"output {i}", "output name changed", False, f"{a} -> {b}"))
    return changes


def _input_changes(node: str, name: str, o: dict, n: dict) -> list[Change]:
    out = []
    if o["type"] != n["type"]:
        out.append(Change(node, name, "type changed", True, f"{o['type']} -> {n['type']}"))
        return out
    if o["section"] == "optional" and n["section"] == "required":
        out.append(Change(node, name, "optional input became required", True))
    elif o["section"] != n["section"]:
        out.append(Change(node, name, "required input became optional", False))
    if "min" in n and ("min" not in o or n["min"] > o["min"]):
        out.append(Change(node, name, "range narrowed", True, f"min {o.get('min')} -> {n['min']}"))
    elif o.get("min") != n.get("min"):
        out.append(Change(node, name, "range widened", False, f"min {o.get('min')} -> {n.get('min')}"))
    if "max" in n and ("max" not in o or n["max"] < o["max"]):
        out.append(Change(node, name, "range narrowed", True, f"max {o.get('max')} -> {n['max']}"))
    elif o.get("max") != n.get("max"):
        out.append(Change(node, name, "range widened", False, f"max {o.get('max')} -> {n.get('max')}"))
    if o["type"] == "COMBO":
        oo, no = o["options"], n["options"]
        if oo != FILES and no != FILES:
            gone = [v for v in oo if v not in no]
            if gone:
                out.append(Change(node, name, "combo options removed", True, f"{gone}"))
            added = [v for v in no if v not in oo]
            if added:
                out.append(Change(node, name, "combo options added", False, f"{added}"))
        elif oo != no:
            out.append(Change(node, name, "combo kind changed", oo != FILES, f"{oo} -> {no}"))
    if o.get("default") != n.get("default"):
        out.append(Change(node, name, "default changed", False, f"{o.get('default')!r} -> {n.get('default')!r}"))
    return out


def unmigrated(changes: list[Change], migrations) -> list[Change]:
    """Breaking changes that no migration covers. ``migrations`` is nodes/migrations.py's list."""
    left = []
    for c in changes:
        if c.breaking and not any(m.covers(c) for m in migrations):
            left.append(c)
    return left
