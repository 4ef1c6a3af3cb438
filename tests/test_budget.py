"""The memory budget (pipelines/budget.py): nodes estimate what they will allocate and refuse above
$FLIPBOOK_MEMORY_BUDGET_GB before allocating."""
import os
import pathlib
import shutil

import pytest
import torch

from comfyui_flipbook import NODE_CLASS_MAPPINGS
from comfyui_flipbook.pipelines import budget
from comfyui_flipbook.pipelines.errors import FlipbookInputError

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _node(name):
    obj = NODE_CLASS_MAPPINGS[name]()
    return getattr(obj, obj.FUNCTION)


def test_the_budget_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(budget.ENV, raising=False)
    assert budget.budget_bytes() == 8 * budget.GIB
    monkeypatch.setenv(budget.ENV, "0.5")
    assert budget.budget_bytes() == budget.GIB // 2
    for bad in ("lots", "-1", "nan", "0"):
        monkeypatch.setenv(budget.ENV, bad)
        with pytest.raises(FlipbookInputError, match=budget.ENV):
            budget.budget_bytes()


def test_load_frames_is_capped_and_refuses_above_the_budget(monkeypatch):
    spec = NODE_CLASS_MAPPINGS["FlipbookLoadFrames"].INPUT_TYPES()["required"]["max_frames"][1]
    assert spec["default"] == 240                              # not "all" by default
    load = _node("FlipbookLoadFrames")
    frames, count = load(file="cpabmm_driving.webp", max_frames=5, every_nth=2)
    assert count == 5 and frames.shape == (5, 128, 128, 3)
    monkeypatch.setenv(budget.ENV, str(3 * 128 * 128 * 3 * 4 / budget.GIB))      # room for three frames
    assert load(file="cpabmm_driving.webp", max_frames=3, every_nth=1)[1] == 3
    with pytest.raises(FlipbookInputError, match=r"^max_frames: .*memory budget.* 12 frames of 128x128"):
        load(file="cpabmm_driving.webp", max_frames=0, every_nth=1)


def test_load_frames_reruns_when_the_file_is_replaced(tmp_path, monkeypatch):
    from comfyui_flipbook.nodes import _comfy
    target = tmp_path / "clip.webp"
    shutil.copyfile(ROOT / "assets" / "cpabmm_driving.webp", target)
    monkeypatch.setattr(_comfy, "input_image_path", lambda name: str(tmp_path / name))
    cls = NODE_CLASS_MAPPINGS["FlipbookLoadFrames"]
    before = cls.IS_CHANGED(file="clip.webp", max_frames=240, every_nth=1)
    shutil.copyfile(ROOT / "assets" / "flipbook_character.png", target)       # same name, other content
    os.utime(target, ns=(1, 1))
    assert cls.IS_CHANGED(file="clip.webp", max_frames=240, every_nth=1) != before
    assert cls.IS_CHANGED(file="gone.webp") != cls.IS_CHANGED(file="clip.webp")


def test_pose_render_refuses_huge_canvases_before_drawing(inference, monkeypatch):
    poses, _ = _node("FlipbookLoadPoseKeypoints")(file="animatex_dance_poses.json", person=0, min_confidence=0.3,
                                                   start_frame=0, every_nth=1, max_frames=0)
    monkeypatch.setenv(budget.ENV, "4")
    assert poses.frames * 8192 * 8192 * 3 * 4 > budget.budget_bytes()
    drawn = []
    monkeypatch.setattr("comfyui_flipbook.pipelines.pose.render_poses", lambda *a, **k: drawn.append(1))
    with pytest.raises(FlipbookInputError, match=r"^width / height: .*memory budget"):
        _node("FlipbookPoseRender")(poses=poses, width=8192, height=8192, colors="animatex", hands=True, feet=True,
                                    face=False)
    assert not drawn


def test_cpab_random_deform_at_the_frames_maximum_is_refused_without_allocating(inference):
    image = torch.rand(1, 512, 512, 3)
    with pytest.raises(FlipbookInputError, match=r"^frames: .*memory budget.*1024 warped frames of 512x512"):
        _node("FlipbookCPABRandomDeform")(image=image, frames=1024, mode="wiggle", strength=0.3, length_scale=0.1,
                                          cells=6, zero_boundary=True, volume_preserving=False, flow_resolution=128,
                                          steps=50, interpolation="bilinear", padding="border", seed=0)


def test_mesh_render_scale_and_video_decode_are_budgeted(inference, monkeypatch):
    class Anim:                      # only what the estimate reads: the node refuses before rendering
        n_frames = 24
        mesh = type("M", (), {"canvas": (512, 512)})()
    monkeypatch.setenv(budget.ENV, "0.25")
    with pytest.raises(FlipbookInputError, match=r"^scale: .*memory budget"):
        NODE_CLASS_MAPPINGS["FlipbookMeshRender"].render.__wrapped__(None, Anim(), "white", 4.0)
    model, = _node("FlipbookTinyT2V")(seed=0, vae_downscale="8")
    with pytest.raises(FlipbookInputError, match=r"^latent: .*memory budget"):
        _node("FlipbookVideoDecode")(model=model, latent={"samples": torch.zeros(1, 4, 64, 128, 128)}, chunk=8)
