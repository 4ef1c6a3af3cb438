"""Regression tests for the failures found by ordinary use (issue "every input a user can give")."""
import json
import os
import pathlib

import numpy as np
import pytest
import torch

from comfyui_flipbook import NODE_CLASS_MAPPINGS
from comfyui_flipbook.pipelines.errors import FlipbookInputError

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _node(name):
    obj = NODE_CLASS_MAPPINGS[name]()
    return getattr(obj, obj.FUNCTION)


def _disc(size=64, rgba=True):
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    inside = ((xx - size / 2) ** 2 + (yy - size / 2) ** 2 < (size / 3) ** 2).float()
    rgb = torch.ones(size, size, 3) * (1 - inside[..., None]) + torch.tensor([0.8, 0.2, 0.1]) * inside[..., None]
    return torch.cat([rgb, inside[..., None]], -1)[None] if rgba else rgb[None]


# --- Auto Keypoints: two keypoints no longer crash shortest_path ----------------------------------

@pytest.mark.parametrize("case", ["disc", "opaque", "max_keypoints_2", "min_branch_max"])
def test_auto_keypoints_with_two_keypoints(inference, case):
    image = _disc()
    kw = dict(max_keypoints=16, min_branch=0.08)
    if case == "opaque":
        image = torch.rand(1, 48, 40, 3)
    elif case == "max_keypoints_2":
        kw["max_keypoints"] = 2
        image = torch.ones(1, 64, 64, 4)
        image[0, 10:54, 28:36, 3] = 0                   # a cross: several branches pruned down to two
        image[0, 28:36, 10:54, 3] = 0
        image[..., 3] = 1 - image[..., 3]
    elif case == "min_branch_max":
        kw["min_branch"] = 0.5
    sk, = _node("FlipbookAutoKeypoints")(image=image, invert_mask=True, **kw)
    assert sk.points.shape[0] >= 2 and 0 <= sk.root < sk.points.shape[0]
    assert sk.points.shape[0] <= kw["max_keypoints"]


# --- Load Image's 64x64 all-zero MASK means "no alpha" ---------------------------------------------

def _no_alpha_picture():
    """The shipped character flattened on white, as Load Image gives a JPG: RGB and a 64x64 zero MASK."""
    from comfyui_flipbook.pipelines.io import load_rgba
    rgba = load_rgba(str(ROOT / "assets" / "flipbook_character.png"))
    rgb = rgba[..., :3] * rgba[..., 3:] + (1 - rgba[..., 3:])
    return rgb[None], torch.zeros(1, 64, 64), rgba[..., 3]


def test_the_no_mask_sentinel_becomes_the_pictures_own_silhouette(inference):
    from comfyui_flipbook.nodes.image import is_no_mask, resolve_mask, silhouette
    image, sentinel, alpha = _no_alpha_picture()
    assert is_no_mask(sentinel) and not is_no_mask(torch.zeros(1, 65, 64)) and not is_no_mask(torch.ones(1, 64, 64))
    sil = silhouette(sentinel, image, True)
    assert sil.shape == (1, *image.shape[1:3])
    agree = ((sil[0] > 0.5) == (alpha > 0.5)).float().mean()
    assert agree > 0.97, agree                                # the figure, not the whole canvas
    real = torch.rand(1, *image.shape[1:3])
    assert resolve_mask(real, image) is real                  # a real mask is kept as it is
    frames, = _node("FlipbookCompositeBackground")(frames=image, mask=sentinel, background="black", invert_mask=True)
    assert frames.shape == image.shape and frames[0, 0, 0].sum() == 0      # background is black, not white


@pytest.mark.parametrize("workflow", ["clipart_bezier", "cpab_keypoint_warp"])
def test_a_users_jpg_animates_in_the_shipped_workflow(workflow, tmp_path, monkeypatch):
    import workflow_run
    from PIL import Image
    image, _, _ = _no_alpha_picture()
    Image.fromarray((image[0].numpy() * 255 + 0.5).astype(np.uint8)).save(tmp_path / "mine.jpg", quality=92)
    monkeypatch.setattr(workflow_run, "ASSETS", tmp_path)
    prompt = json.loads((ROOT / "workflows" / "api" / f"{workflow}.json").read_text())
    for node in prompt.values():
        if node["class_type"] == "LoadImage":
            node["inputs"]["image"] = "mine.jpg"
        if node["class_type"] == "FlipbookBezierTrajectory":
            node["inputs"]["frames"] = 4
        if node["class_type"] == "FlipbookCPABKeypointWarp":
            node["inputs"].update(flow_resolution=32, steps=10, iterations=3)
    outputs, saved = workflow_run.run_api(prompt)
    frames = next(iter(saved.values()))
    frames = frames[0] if isinstance(frames, (list, tuple)) else frames
    assert frames.shape[0] == 4 and frames.shape[1:3] == image.shape[1:3]
    assert (frames[1:] - frames[:1]).abs().max() > 0.05       # it moves
    corner = frames[:, :8, :8]
    assert corner.min() > 0.9                                  # the white background stays white


# --- steps at the widget maximum --------------------------------------------------------------------

def test_steps_beyond_the_scheduler_are_refused_before_any_unet_call(inference, monkeypatch):
    from comfyui_flipbook.pipelines.diffusion.scheduler import make_scheduler
    cfg = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
               set_alpha_to_one=False, steps_offset=1)
    with pytest.raises(FlipbookInputError, match=r"^steps: expected at most \d+ for this model's scheduler"):
        make_scheduler(cfg, 1000)
    assert len(make_scheduler(cfg, 500).timesteps) == 500
    model, = _node("FlipbookTinyT2V")(seed=0, vae_downscale="8")
    calls = []
    monkeypatch.setattr(model.unet, "forward", lambda *a, **k: calls.append(1) or (_ for _ in ()).throw(AssertionError))
    img = torch.ones(1, 16, 16, 3)
    with pytest.raises(FlipbookInputError, match="^steps"):
        _node("FlipbookDDIMInvert")(model=model, image=img, steps=1000, guidance=1.0, repeat_frames=1, reduce="none",
                                    vae_range="-1_1", posterior="mean", size=0, seed=0)
    pos, = _node("FlipbookTextEncode")(model=model, text="a cat")
    ref = {"samples": torch.zeros(1, 4, 1, 2, 2)}
    with pytest.raises(FlipbookInputError, match="^steps"):
        _node("FlipbookFlipSketchSampler")(model=model, positive=pos, reference=ref, frames=2, steps=1000, guidance=1.0,
                                           seeds=1, seed=0, seed_chunk=0, frame_align=False)
    assert not calls


# --- model files listed by the folder (symlinks) are accepted, others refused -----------------------

def test_symlinked_models_are_accepted_and_unlisted_names_refused(tmp_path, monkeypatch):
    from comfyui_flipbook.nodes import _comfy
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "real.safetensors").write_bytes(b"x")
    folder = tmp_path / "models" / "cpabmm"
    folder.mkdir(parents=True)
    os.symlink(outside / "real.safetensors", folder / "linked.safetensors")
    (outside / "t2v").mkdir()
    (outside / "t2v" / "unet").mkdir()
    (tmp_path / "models" / "diffusers").mkdir()
    os.symlink(outside / "t2v", tmp_path / "models" / "diffusers" / "mine")
    monkeypatch.setenv("FLIPBOOK_MODELS_DIR", str(tmp_path / "models"))
    assert "linked.safetensors" in _comfy.list_models("cpabmm")
    assert os.path.samefile(_comfy.model_path("cpabmm", "linked.safetensors"), outside / "real.safetensors")
    assert os.path.samefile(_comfy.model_path("diffusers", "mine", is_dir=True), outside / "t2v")
    assert os.path.samefile(_comfy.model_path("diffusers", "mine/unet", is_dir=True), outside / "t2v" / "unet")
    for bad in ("../elsewhere/real.safetensors", str(outside / "real.safetensors"), "missing.safetensors", "", None):
        with pytest.raises(FlipbookInputError, match="cpabmm model"):
            _comfy.model_path("cpabmm", bad)


# --- seeds: the full 64 bits count --------------------------------------------------------------

def test_seeds_do_not_alias_modulo_2_32_and_small_seeds_keep_their_streams():
    from comfyui_flipbook.pipelines.diffusion.sampler import initial_noise
    from comfyui_flipbook.pipelines.seeds import generator
    a, b, c = (initial_noise((2, 3, 4, 4), s) for s in (7, 7 + 2 ** 32, 7 + 2 ** 40))
    assert not torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(b, c)
    assert torch.equal(torch.randn(5, generator=generator(7)), torch.randn(5, generator=torch.Generator().manual_seed(7)))
    assert torch.equal(initial_noise((2, 2), 2 ** 64 - 1, count=2)[1], initial_noise((2, 2), 0)[0])   # wraps at 2**64


# --- smaller ones ---------------------------------------------------------------------------------

def test_text_none_is_refused_not_encoded_as_the_word_none(inference):
    model, = _node("FlipbookTinyT2V")(seed=0, vae_downscale="8")
    with pytest.raises(FlipbookInputError, match="^text: expected a value, got None"):
        _node("FlipbookTextEncode")(model=model, text=None)


def test_frame_align_settings_are_validated():
    from comfyui_flipbook.pipelines.flipsketch.settings import FrameAlign
    for kw, name in ((dict(iters=-1), "iterations"), (dict(chunk=0), "chunk"), (dict(tau1=-2), "tau1"),
                     (dict(lr=float("nan")), "lr")):
        with pytest.raises(FlipbookInputError, match=f"^{name}"):
            FrameAlign(**kw)
    with pytest.raises(FlipbookInputError, match="^chunk"):
        _node("FlipbookFlipSketchAlign")(enabled=True, tau1=1, iterations=1, lr=1e-3, official_quirks=True, chunk=0)


def test_every_nth_zero_is_refused(tmp_path):
    from comfyui_flipbook.pipelines.io import load_frames
    with pytest.raises(FlipbookInputError, match="^every_nth"):
        load_frames(str(ROOT / "assets" / "cpabmm_driving.webp"), every_nth=0)
    with pytest.raises(FlipbookInputError, match="^every_nth"):
        _node("FlipbookLoadFrames")(file="cpabmm_driving.webp", max_frames=2, every_nth=0)


def test_bezier_frames_cycles_amplitude_are_checked_in_the_pipeline_too():
    from comfyui_flipbook.pipelines import bezier
    from comfyui_flipbook.pipelines.skeleton import Skeleton
    sk = Skeleton(torch.tensor([[10.0, 10.0], [20.0, 20.0]]), [(0, 1)], (40, 40))
    for kw, name in ((dict(n_frames=0), "frames"), (dict(cycles=0), "cycles"), (dict(amplitude=float("nan")), "amplitude")):
        with pytest.raises(FlipbookInputError, match=f"^{name}"):
            bezier.preset_trajectory(sk, "sway", **kw)


def test_load_pose_keypoints_lists_pose_files_only_and_names_the_wrong_kind(inference):
    cls = NODE_CLASS_MAPPINGS["FlipbookLoadPoseKeypoints"]
    files = cls.INPUT_TYPES()["required"]["file"][0]
    assert "animatex_dance_poses.json" in files and "flipbook_character.keypoints.json" not in files
    load = _node("FlipbookLoadPoseKeypoints")
    kw = dict(person=0, min_confidence=0.3, start_frame=0, every_nth=1, max_frames=0)
    with pytest.raises(FlipbookInputError, match="^file: .*wrong kind of file"):
        load(file="flipbook_character.keypoints.json", **kw)
    with pytest.raises(FlipbookInputError, match="^file: .*not text"):
        load(file="flipbook_character.png", **kw)


def test_the_metrics_box_is_not_sent_back_as_an_input():
    js = (ROOT / "web" / "js" / "flipbook.js").read_text()
    assert "widget.serialize = false" in js and "serialize: false" in js


def _demo(capsys, *args):
    from comfyui_flipbook.cli import main
    rc = main(["demo", *args])
    return rc, capsys.readouterr().err


def test_the_demo_gives_one_line_errors_before_computing(tmp_path, capsys):
    for args, word in ((["--out", str(tmp_path / "x.mp4")], "--out"), (["--image", str(tmp_path / "none.png"),
                        "--out", str(tmp_path / "x.webp")], "image"), (["--frames", "0"], "--frames"),
                       (["--amplitude", "nan"], "--amplitude")):
        rc, err = _demo(capsys, *args)
        assert rc == 2 and len(err.strip().splitlines()) == 1 and word in err, err
    assert not list(tmp_path.iterdir())


def test_the_demo_animates_an_rgb_picture(tmp_path, capsys):
    from PIL import Image
    rgb = (_disc(96, rgba=False)[0].numpy() * 255).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "disc.jpg")
    rc, err = _demo(capsys, "--image", str(tmp_path / "disc.jpg"), "--frames", "3", "--out", str(tmp_path / "d.webp"))
    assert rc == 0, err
    with Image.open(tmp_path / "d.webp") as im:
        assert im.n_frames == 3 and im.size == (96, 96)


def test_a_cpab_space_first_made_under_inference_mode_still_backpropagates():
    from comfyui_flipbook.pipelines.cpab.tessellation import tessellation
    from comfyui_flipbook.pipelines.cpab.transform import theta_to_affine
    with torch.inference_mode():
        tess = tessellation(7, 3, True, False)          # a node made it first (and the cache keeps it)
        tess.prior_precision(0.13)
    assert not tess.basis.is_inference() and not tess.prior_precision(0.13).is_inference()
    theta = torch.zeros(1, tess.dim, dtype=torch.float64, requires_grad=True)
    theta_to_affine(tess, theta).sum().backward()
    assert theta.grad is not None
