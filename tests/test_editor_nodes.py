"""What the editors write is what the nodes run: targets_json on the CPAB keypoint nodes."""
from __future__ import annotations

import json

import pytest
import torch

from comfyui_flipbook.nodes.cpab import FlipbookCPABFit, FlipbookCPABKeypointWarp
from comfyui_flipbook.pipelines.errors import FlipbookInputError
from comfyui_flipbook.pipelines.keypoints import skeleton_from_json, targets_from_json

SRC = skeleton_from_json("[[16, 16], [40, 20], [30, 44]]", "[[0, 1], [1, 2]]", (64, 64))


def test_targets_json_moves_only_the_given_keypoints():
    t = targets_from_json("[null, [44, 10]]", SRC)
    assert t.points.tolist() == [[16, 16], [44, 10], [30, 44]]
    assert t.edges.tolist() == SRC.edges.tolist() and t.root == SRC.root and t.canvas == SRC.canvas
    assert targets_from_json("  ", SRC) is None
    for bad, name in [("[[1, 2], [3, 4], [5, 6], [7, 8]]", "targets_json"), ("[[1]]", r"targets_json\[0\]"),
                      ("[[100, 2]]", "targets_json"), ("{", "targets_json"), ('{"a": 1}', "targets_json")]:
        with pytest.raises(FlipbookInputError, match=name):
            targets_from_json(bad, SRC)


def _fit_inputs():
    return dict(cells=2, zero_boundary=True, volume_preserving=False, optimizer="lm", iterations=4,
                prior_strength=0.01, fit_steps=8, warm_start=True)


def test_cpab_nodes_take_typed_targets():
    with torch.inference_mode():
        params, report = FlipbookCPABFit().fit(SRC, **_fit_inputs(), temporal_weight=0.0,
                                               targets_json=json.dumps([None, [44, 12], None]))
        same, _ = FlipbookCPABFit().fit(SRC, **_fit_inputs(), temporal_weight=0.0,
                                        target_keypoints=targets_from_json("[null, [44, 12]]", SRC))
        assert torch.equal(params.theta, same.theta)
        with pytest.raises(FlipbookInputError, match="target_keypoints / trajectory"):
            FlipbookCPABFit().fit(SRC, **_fit_inputs(), temporal_weight=0.0)
        img = torch.rand(1, 64, 64, 3)
        node = FlipbookCPABKeypointWarp()
        kw = dict(frames=3, **_fit_inputs(), flow_resolution=32, steps=10, interpolation="bilinear", padding="border")
        del kw["warm_start"]
        out = node.run(img, SRC, **kw, warm_start=True, targets_json="[null, [44, 12]]")
        assert out[0].shape == (3, 64, 64, 3)
        assert not torch.equal(out[0][0], out[0][2]), "the tween moves"


# --- animated previews in the node (nodes/_comfy.py with_animated_preview) ------------------------


class _FakeFolderPaths:
    def __init__(self, temp):
        self.temp = str(temp)

    def get_temp_directory(self):
        return self.temp

    def get_input_directory(self):
        import os

        return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets")


@pytest.fixture
def in_comfyui(tmp_path, monkeypatch):
    """As inside ComfyUI while node "7" runs: a temp folder, an executing node id."""
    from comfyui_flipbook.nodes import _comfy

    fake = _FakeFolderPaths(tmp_path / "temp")
    monkeypatch.setattr(_comfy, "_try_import", lambda name: fake if name == "folder_paths" else None)
    monkeypatch.setattr(_comfy, "executing_node_id", lambda: "7")
    return tmp_path / "temp"


def _shown(temp, ui):
    from PIL import Image

    (item,) = ui["images"]
    assert item["type"] == "temp" and item["subfolder"] == ""
    with Image.open(temp / item["filename"]) as im:
        return im.n_frames, im.size


def test_mesh_render_shows_its_animation_and_keeps_its_tensors(in_comfyui, monkeypatch):
    from comfyui_flipbook.nodes.clipart import FlipbookMeshRender
    from comfyui_flipbook.pipelines.flexiclip import animate_clipart
    from comfyui_flipbook.pipelines.flexiclip.pipeline import demo_inputs

    image, sk = demo_inputs()
    with torch.inference_mode():
        _, _, anim = animate_clipart(image, sk, n_frames=5)
        out = FlipbookMeshRender().render(anim, "white", 0.5)
    assert set(out) == {"ui", "result"} and out["ui"]["animated"] == (True,)
    assert _shown(in_comfyui, out["ui"]) == (5, (256, 256))
    frames, mask = out["result"]
    from comfyui_flipbook.nodes import _comfy

    monkeypatch.setattr(_comfy, "executing_node_id", lambda: None)      # the same call outside ComfyUI
    with torch.inference_mode():
        f2, m2 = FlipbookMeshRender().render(anim, "white", 0.5)
    assert torch.equal(frames, f2) and torch.equal(mask, m2), "the preview leaves the outputs bitwise alone"


def test_previews_are_bounded_and_absent_outside_comfyui(in_comfyui, monkeypatch):
    from comfyui_flipbook.nodes import _comfy

    big = torch.rand(_comfy.PREVIEW_MAX_FRAMES * 2 + 1, 40, 1200, 3)
    out = _comfy.with_animated_preview((big,), big)
    n, size = _shown(in_comfyui, out["ui"])
    assert n <= _comfy.PREVIEW_MAX_FRAMES and max(size) == _comfy.PREVIEW_MAX_SIDE
    one = _comfy.with_animated_preview((big[:1],), big[:1])
    assert one["ui"]["animated"] == (False,)
    assert _comfy.with_animated_preview((big,), None) == (big,)
    monkeypatch.setattr(_comfy, "executing_node_id", lambda: None)
    assert _comfy.with_animated_preview((big,), big) == (big,)


def test_cpab_and_load_frames_show_previews(in_comfyui):
    from comfyui_flipbook.nodes.cpab import FlipbookCPABRandomDeform
    from comfyui_flipbook.nodes.cpabmm import FlipbookLoadFrames

    with torch.inference_mode():
        out = FlipbookCPABRandomDeform().deform(torch.rand(1, 32, 32, 3), 4, "wiggle", 0.3, 0.1, 2, True, False, 16, 10,
                                                "bilinear", "border", 0)
        assert _shown(in_comfyui, out["ui"])[0] == 4 and len(out["result"]) == 4
        frames = FlipbookLoadFrames().load("cpabmm_driving.webp", 3, 1)
        assert _shown(in_comfyui, frames["ui"])[0] == 3 and frames["result"][1] == 3
