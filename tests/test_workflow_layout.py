"""The shipped workflows are laid out cleanly: no two nodes overlap, before or after a run, and every
node is on screen at the frontend's default view of the file (its extra.ds scale, a 1600x1000 window
as tests/test_comfyui_integration.py uses).

A node's rectangle: its pos and size, plus the title bar above pos (~30 px), plus, for nodes that show
pictures (Load Image, Preview, Save), the room a picture takes after a run: the frontend draws it at
the node's width below the widgets and the node grows to fit (a square picture; portrait outputs are
given their aspect in TALL)."""
import itertools
import json
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
UI = sorted((ROOT / "workflows").glob("*.json")) + sorted((ROOT / "workflows" / "external").glob("*.json"))
TITLE = 30
WIDGET = 24                      # px per widget row
GAP = 10
IMAGE_NODES = {"LoadImage", "PreviewImage", "SaveAnimatedWEBP", "SaveImage", "SaveAnimatedPNG"}
TALL = {("animatex", "SaveAnimatedWEBP"): 1.5}    # Animate-X renders 512x768
WINDOW = (1600, 1000)
CHROME = (60, 80)                # the frontend's side bar and top menu, in screen px


def rects(path: pathlib.Path):
    wf = json.loads(path.read_text())
    out = []
    for n in wf["nodes"]:
        x, y = n["pos"]
        w, h = n["size"]
        bottom = y + h
        if n["type"] in IMAGE_NODES:
            aspect = TALL.get((path.stem, n["type"]), 1.0)
            widgets = len(n.get("widgets_values") or []) if isinstance(n.get("widgets_values"), list) else 2
            bottom = max(bottom, y + TITLE + WIDGET * widgets + w * aspect)
        out.append((n.get("title") or n["type"], n["id"], (x, y - TITLE, x + w, bottom), (x, y - TITLE, x + w, y + h)))
    return wf, out


def _overlap(a, b) -> bool:
    return a[0] < b[2] + GAP and b[0] < a[2] + GAP and a[1] < b[3] + GAP and b[1] < a[3] + GAP


@pytest.mark.parametrize("path", UI, ids=[p.stem for p in UI])
def test_no_two_nodes_overlap_before_or_after_a_run(path):
    _, nodes = rects(path)
    clashes = [f"{a[0]} (#{a[1]}) and {b[0]} (#{b[1]})" for a, b in itertools.combinations(nodes, 2) if _overlap(a[2], b[2])]
    assert not clashes, f"{path.name}: overlapping nodes: " + "; ".join(clashes)


@pytest.mark.parametrize("path", UI, ids=[p.stem for p in UI])
def test_every_node_is_on_screen_at_the_default_view(path):
    wf, nodes = rects(path)
    ds = wf["extra"]["ds"]
    scale, (ox, oy) = ds["scale"], ds["offset"]
    width = (WINDOW[0] - CHROME[0]) / scale
    height = (WINDOW[1] - CHROME[1]) / scale
    off = [f"{name} (#{i}) at {r}" for name, i, _, r in nodes
           if r[0] + ox < 0 or r[1] + oy < 0 or r[2] + ox > width or r[3] + oy > height]
    assert not off, f"{path.name}: off screen in a {WINDOW[0]}x{WINDOW[1]} window ({width:.0f}x{height:.0f} canvas px): {off}"


def test_the_layout_check_can_fail():
    assert _overlap((0, 0, 100, 100), (50, 50, 150, 150)) and not _overlap((0, 0, 100, 100), (200, 0, 300, 100))


@pytest.mark.parametrize("path", UI, ids=[p.stem for p in UI])
def test_load_image_nodes_are_big_enough_for_their_picture(path):
    wf = json.loads(path.read_text())
    small = [f"{n.get('title') or n['type']} (#{n['id']}) {n['size']}" for n in wf["nodes"] if n["type"] == "LoadImage"
             and n["size"][1] < WIDGET * 2 + 0.8 * n["size"][0]]
    assert not small, f"{path.name}: the picture spills out of " + "; ".join(small)
